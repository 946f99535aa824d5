# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Secure Boot and module signatures on a node: pure logic, no I/O.

What a node says (through the debug pods of ``_node_inspector``; the
commands and their outputs are the contract of issue J,
``/work/notes/secureboot-contract.md``):

- ``mokutil --sb-state`` (:func:`parse_sb_state`);
- one ``grep -H -s .`` over the kernel's files (:func:`state_files`,
  :func:`grep_command`, :func:`parse_grep`, :func:`parse_state_files`):
  ``/sys/kernel/security/lockdown`` (:func:`parse_lockdown`),
  ``/sys/module/module/parameters/sig_enforce``, ``/proc/sys/kernel/tainted``
  (:func:`unsigned_module_taint`), ``/proc/keys`` (:func:`parse_proc_keys`,
  :func:`trusted_keys`) and ``/sys/module/<m>/taint``;
- ``modinfo <m>...`` (:func:`modinfo_command`, :func:`parse_modinfo`).

What we make of it:

- the node's Secure Boot fact (:func:`secure_boot_fact`, the shape of the
  contract: ``state``, ``lockdown``, ``sig_enforce``, ``enforcing``,
  ``tainted``, ``unsigned_module_taint``, ``trusted_keys``, ``modules``);
- whether a node would load modules signed as the build's signing facts say
  (:func:`node_accepts`) and the gate of a pool before any write
  (:func:`pool_signature_gate`);
- what verify adds to a node's verdict (:func:`secure_boot_verdict`): the
  fact, the signer of each module, a warning for a kernel an unsigned
  module tainted on a node that does not enforce signatures, and the
  kernel's refusal named on a node that enforces them and misses a module.

Which keys the kernel trusts for modules: the RHEL kernel of RHCOS checks
module signatures against ``.builtin_trusted_keys`` and
``.secondary_trusted_keys`` (which holds ``.machine``, the MOKs), and -- a
RHEL patch -- ``.platform`` (the UEFI db). ``/proc/keys`` lists every key
the reader may view but does not say in which keyring it sits, so the gate
treats every asymmetric key a node lists as trusted. A certificate that is
listed but in a ring the kernel does not use for modules (``.blacklist``
holds hashes, not asymmetric keys; an ``.ima`` key would be one) passes the
gate and is caught by the boot test with Secure Boot
(``kmod_boot_test_secure_boot``), which loads the modules under a real
lockdown.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

try:
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401 (type comments)
except ImportError:  # pragma: no cover
    pass

CMD_SB_STATE = ["mokutil", "--sb-state"]
LOCKDOWN_FILE = "/sys/kernel/security/lockdown"
SIG_ENFORCE_FILE = "/sys/module/module/parameters/sig_enforce"
TAINTED_FILE = "/proc/sys/kernel/tainted"
KEYS_FILE = "/proc/keys"
MODULE_TAINT_FILE = "/sys/module/%s/taint"
# mokutil exits 255 on a node booted without UEFI (BIOS): nothing to enforce.
SB_STATE_UNSUPPORTED_RC = 255

STATE_ENABLED = "enabled"
STATE_DISABLED = "disabled"
STATE_UNSUPPORTED = "unsupported"
STATE_UNKNOWN = "unknown"

# Bits of /proc/sys/kernel/tainted (include/linux/panic.h, TAINT_*).
TAINT_OOT_MODULE = 12  # 'O': an out-of-tree module was loaded
TAINT_UNSIGNED_MODULE = 13  # 'E': an unsigned module was loaded (signatures not enforced)
# The letters the kernel prints for each bit (kernel/panic.c taint_flags).
TAINT_LETTERS = "PFSRMBUDAWCIOELKXTN"

LOCKDOWN_MODES = ("none", "integrity", "confidentiality")
# What modprobe prints when the kernel refuses a module's signature
# (kernel/module/signing.c module_sig_check): with sig_enforce, EKEYREJECTED;
# under lockdown alone, EPERM from security_locked_down(LOCKDOWN_MODULE_SIGNATURE).
ERROR_KEY_REJECTED = "Key was rejected by service"
ERROR_LOCKDOWN = "Operation not permitted"

_MODULE_SUFFIX_RE = re.compile(r"\.ko(?:\.(?:xz|zst|gz))?$")
_MODINFO_FIELD_RE = re.compile(r"^([A-Za-z0-9_.-]+):\s*(.*)$")
_MODINFO_NOT_FOUND_RE = re.compile(r"^modinfo: ERROR: Module (\S+) not found\.?\s*$")
# The description of an asymmetric key in /proc/keys (asymmetric_key_describe):
# "<description>: <subtype, e.g. X509.rsa> [<last 4 bytes of the key id>] [<flags>]".
_ASYMMETRIC_RE = re.compile(r"^(?P<description>.+): (?P<subtype>\S+)(?: (?P<kid>[0-9a-f]+))? \[[^\]]*\]$")
_KEY_DESCRIPTION_RE = re.compile(r"^(?P<name>.*): (?P<id>[0-9A-Fa-f]+)$")


def normalize_module(name):
    # type: (Optional[str]) -> str
    """The kernel's form of a module name (``-`` becomes ``_``)."""
    return (name or "").replace("-", "_")


# ---------------------------------------------------------------------------
# Commands


def state_files(module_names=None):
    # type: (Optional[List[str]]) -> List[str]
    """The files the one ``grep -H -s .`` reads: lockdown, sig_enforce,
    the taint mask, the keys, and the taint of each module."""
    files = [LOCKDOWN_FILE, SIG_ENFORCE_FILE, TAINTED_FILE, KEYS_FILE]
    for name in module_names or []:
        path = MODULE_TAINT_FILE % normalize_module(name)
        if path not in files:
            files.append(path)
    return files


def grep_command(module_names=None, extra_files=None):
    # type: (Optional[List[str]], Optional[List[str]]) -> List[str]
    """``grep -H -s . <files>``: the Secure Boot files and ``extra_files``
    (the module parameter files of verify), in one debug pod."""
    files = list(extra_files or [])
    files.extend(f for f in state_files(module_names) if f not in files)
    return ["grep", "-H", "-s", "."] + files


def modinfo_command(module_names):
    # type: (Optional[List[str]]) -> Optional[List[str]]
    """``modinfo <m1> <m2> ...`` for the modules of the running kernel, or None."""
    names = []
    for name in module_names or []:
        name = normalize_module(name)
        if name and name not in names:
            names.append(name)
    return ["modinfo"] + names if names else None


# ---------------------------------------------------------------------------
# Parsers


def parse_sb_state(text, rc=None):
    # type: (Optional[str], Optional[int]) -> str
    """``mokutil --sb-state`` → ``enabled``, ``disabled``, ``unsupported``
    (no EFI variables: a BIOS boot) or ``unknown``.

    ``SecureBoot enabled`` followed by ``SecureBoot validation is disabled in
    shim`` is ``disabled``: shim then tells the kernel (``MokSBStateRT``)
    that Secure Boot is off, and the kernel neither locks down nor enforces.
    """
    text = text or ""
    if "EFI variables are not supported" in text or (rc == SB_STATE_UNSUPPORTED_RC and not text.strip()):
        return STATE_UNSUPPORTED
    lines = [line.strip() for line in text.splitlines()]
    if "SecureBoot enabled" in lines:
        if any(line.startswith("SecureBoot validation is disabled") for line in lines):
            return STATE_DISABLED
        return STATE_ENABLED
    if "SecureBoot disabled" in lines:
        return STATE_DISABLED
    return STATE_UNKNOWN


def parse_grep(text):
    # type: (Optional[str]) -> Dict[str, List[str]]
    """``grep -H`` output → ``{file: [lines]}`` (the files name no ``:``)."""
    files = {}  # type: Dict[str, List[str]]
    for line in (text or "").splitlines():
        if not line.startswith("/") or ":" not in line:
            continue
        path, value = line.split(":", 1)
        files.setdefault(path, []).append(value)
    return files


def parse_lockdown(text):
    # type: (Optional[str]) -> Optional[str]
    """``[none] integrity confidentiality`` → ``none`` (the bracketed mode), else None."""
    match = re.search(r"\[([a-z]+)\]", text or "")
    if match and match.group(1) in LOCKDOWN_MODES:
        return match.group(1)
    return None


def parse_sig_enforce(text):
    # type: (Optional[str]) -> Optional[bool]
    value = (text or "").strip()
    if value in ("Y", "1"):
        return True
    if value in ("N", "0"):
        return False
    return None


def parse_tainted(text):
    # type: (Optional[str]) -> Optional[int]
    value = (text or "").strip()
    return int(value) if value.isdigit() else None


def taint_letters(mask):
    # type: (Optional[int]) -> str
    """The kernel's letters of a taint mask (``12288`` → ``OE``)."""
    if not mask:
        return ""
    return "".join(letter for bit, letter in enumerate(TAINT_LETTERS) if mask & (1 << bit))


def unsigned_module_taint(mask):
    # type: (Optional[int]) -> bool
    """Bit 13, 'E': the kernel loaded a module it could not verify."""
    return bool(mask) and bool(mask & (1 << TAINT_UNSIGNED_MODULE))


def out_of_tree_taint(mask):
    # type: (Optional[int]) -> bool
    """Bit 12, 'O': an out-of-tree module was loaded."""
    return bool(mask) and bool(mask & (1 << TAINT_OOT_MODULE))


def parse_proc_keys(lines):
    # type: (Any) -> List[Dict[str, Any]]
    """``/proc/keys`` lines (text or a list) → ``[{serial, flags, type,
    description}]``; for asymmetric keys ``description`` is the key's own
    description (``<CN>: <skid>``) and ``subtype`` what follows
    (``X509.rsa``).

    A line: ``serial flags usage timeout perm uid gid type description``,
    the type cut to 9 characters (``asymmetri``).
    """
    if isinstance(lines, str):
        lines = lines.splitlines()
    keys = []
    for line in lines or []:
        fields = line.split(None, 8)
        if len(fields) < 9 or not re.match(r"^[0-9a-f]{8}$", fields[0]):
            continue
        key_type, rest = fields[7], fields[8].strip()
        key = {"serial": fields[0], "flags": fields[1], "type": key_type, "description": rest, "subtype": None}
        if "asymmetric".startswith(key_type) and len(key_type) >= 9:
            key["type"] = "asymmetric"
            match = _ASYMMETRIC_RE.match(rest)
            if match:
                key["description"] = match.group("description")
                key["subtype"] = match.group("subtype")
        keys.append(key)
    return keys


def trusted_keys(lines):
    # type: (Any) -> List[str]
    """The descriptions (``<CN>: <skid>``) of the asymmetric keys of ``/proc/keys``,
    sorted, each once. See the module's note on key rings."""
    return sorted(set(k["description"] for k in parse_proc_keys(lines) if k["type"] == "asymmetric"))


def parse_state_files(text):
    # type: (Optional[str]) -> Dict[str, Any]
    """The grep of :func:`state_files` → ``{lockdown, sig_enforce, tainted,
    trusted_keys, module_taints}``; a file not in the output gives None
    (``trusted_keys`` None: ``/proc/keys`` was not read; ``module_taints``
    has the modules whose taint file printed a line)."""
    files = parse_grep(text)

    def first(path):
        values = files.get(path)
        return values[0] if values else None

    taints = {}
    for path, values in files.items():
        match = re.match(r"^/sys/module/([^/]+)/taint$", path)
        if match:
            taints[match.group(1)] = (values[0] if values else "").strip()
    return {
        "lockdown": parse_lockdown(first(LOCKDOWN_FILE)),
        "sig_enforce": parse_sig_enforce(first(SIG_ENFORCE_FILE)),
        "tainted": parse_tainted(first(TAINTED_FILE)),
        "trusted_keys": trusted_keys(files[KEYS_FILE]) if KEYS_FILE in files else None,
        "module_taints": taints,
    }


def module_name_of(filename):
    # type: (Optional[str]) -> str
    """``/lib/modules/<kver>/extra/my-drv.ko.xz`` → ``my_drv``."""
    base = (filename or "").rsplit("/", 1)[-1]
    return normalize_module(_MODULE_SUFFIX_RE.sub("", base))


def parse_modinfo(text):
    # type: (Optional[str]) -> Dict[str, Dict[str, Any]]
    """kmod's ``modinfo`` output of several modules → ``{name: {found,
    filename, signer, sig_key, sig_hashalgo, sig_id}}``.

    Each module starts with ``filename:``; its ``name:`` field, else the
    file's name, names it. ``signer``, ``sig_key``, ``sig_hashalgo`` are
    only printed for signed modules (None here when absent or empty).
    Continuation lines (the ``signature`` bytes) start with whitespace and
    are skipped. A module modinfo cannot find (``modinfo: ERROR: Module x
    not found.``, on the log's stderr) is ``{found: False}``.
    """
    modules = {}  # type: Dict[str, Dict[str, Any]]
    current = None  # type: Optional[Dict[str, Any]]

    def close(entry):
        if entry is not None:
            name = normalize_module(entry.pop("_name", None)) or module_name_of(entry["filename"])
            modules[name] = entry

    for line in (text or "").splitlines():
        missing = _MODINFO_NOT_FOUND_RE.match(line.strip())
        if missing:
            close(current)
            current = None
            modules[normalize_module(missing.group(1))] = {
                "found": False, "filename": None, "signer": None, "sig_key": None, "sig_hashalgo": None,
                "sig_id": None}
            continue
        if not line or line[0].isspace():
            continue
        match = _MODINFO_FIELD_RE.match(line)
        if not match:
            continue
        key, value = match.group(1), match.group(2).strip()
        if key == "filename":
            close(current)
            current = {"found": True, "filename": value, "signer": None, "sig_key": None, "sig_hashalgo": None,
                       "sig_id": None}
            continue
        if current is None:
            continue
        if key == "name" and value:
            current["_name"] = value
        elif key in ("signer", "sig_key", "sig_hashalgo", "sig_id") and value:
            current[key] = value
    close(current)
    return modules


# ---------------------------------------------------------------------------
# The node's fact


def secure_boot_fact(sb_state=None, sb_state_rc=None, files=None, modinfo=None, module_names=None,
                     proc_modules=None):
    # type: (Optional[str], Optional[int], Optional[str], Optional[str], Optional[List[str]], Optional[Dict[str, Any]]) -> Dict[str, Any]
    """The Secure Boot fact of a node (the contract's shape).

    ``sb_state``: ``mokutil --sb-state``'s output (None: it did not run or
    failed) and ``sb_state_rc`` its exit code; ``files``: the grep of
    :func:`grep_command`; ``modinfo``: ``modinfo``'s output;
    ``module_names``: the modules to describe; ``proc_modules``: parsed
    ``/proc/modules`` (``_inspect.parse_modules``), the taint of a loaded
    module when its taint file was not read.

    ``enforcing`` is what the contract says: Secure Boot enabled, a lockdown
    other than ``none``, or ``sig_enforce``. ``trusted_keys`` is None when
    ``/proc/keys`` was not read.
    """
    state = parse_sb_state(sb_state, sb_state_rc) if sb_state is not None or sb_state_rc is not None \
        else STATE_UNKNOWN
    parsed = parse_state_files(files)
    lockdown = parsed["lockdown"]
    sig_enforce = parsed["sig_enforce"]
    tainted = parsed["tainted"]
    infos = parse_modinfo(modinfo) if modinfo is not None else {}
    modules = {}
    for name in module_names or []:
        name = normalize_module(name)
        info = infos.get(name) or {}
        taint = parsed["module_taints"].get(name)
        if taint is None and proc_modules and name in proc_modules:
            taint = proc_modules[name].get("taint") or ""
        modules[name] = {
            "signer": info.get("signer"),
            "sig_key": info.get("sig_key"),
            "sig_hashalgo": info.get("sig_hashalgo"),
            "taint": taint,
        }
    return {
        "state": state,
        "lockdown": lockdown,
        "sig_enforce": sig_enforce,
        "enforcing": bool(state == STATE_ENABLED or lockdown in ("integrity", "confidentiality") or sig_enforce),
        "tainted": tainted,
        "unsigned_module_taint": unsigned_module_taint(tainted),
        "trusted_keys": parsed["trusted_keys"],
        "modules": modules,
    }


def fact_known(fact):
    # type: (Optional[Dict[str, Any]]) -> bool
    """Whether the fact tells if the node enforces signatures: mokutil
    answered, or the kernel's lockdown or sig_enforce was read."""
    if not fact:
        return False
    return fact.get("enforcing") is True or fact.get("state") not in (None, STATE_UNKNOWN) \
        or fact.get("lockdown") is not None or fact.get("sig_enforce") is not None


def why_enforcing(fact):
    # type: (Dict[str, Any]) -> str
    """``Secure Boot enabled, lockdown integrity`` (what makes the node enforce)."""
    parts = []
    if fact.get("state") == STATE_ENABLED:
        parts.append("Secure Boot enabled")
    if fact.get("lockdown") in ("integrity", "confidentiality"):
        parts.append("lockdown %s" % fact["lockdown"])
    if fact.get("sig_enforce"):
        parts.append("module.sig_enforce=Y")
    return ", ".join(parts) or "signatures enforced"


def summary(fact):
    # type: (Optional[Dict[str, Any]]) -> str
    """``Secure Boot on (lockdown integrity)``, ``Secure Boot off``, ... for tables."""
    if not fact or not fact_known(fact):
        return "Secure Boot unknown"
    state = fact.get("state")
    if state == STATE_ENABLED:
        text = "Secure Boot on"
    elif state == STATE_UNSUPPORTED:
        text = "no UEFI"
    elif state == STATE_DISABLED:
        text = "Secure Boot off"
    else:
        text = "Secure Boot unknown"
    if fact.get("enforcing") and state != STATE_ENABLED:
        text += ", signatures enforced (%s)" % why_enforcing(fact)
    elif fact.get("lockdown") and fact["lockdown"] != "none":
        text += " (lockdown %s)" % fact["lockdown"]
    return text


# ---------------------------------------------------------------------------
# Decisions


def signing_key_description(signing):
    # type: (Optional[Dict[str, Any]]) -> Optional[str]
    """The key description the build's certificate has in ``/proc/keys``
    (``key_description``, else ``<subject>: <skid>``), or None."""
    if not signing:
        return None
    if signing.get("key_description"):
        return str(signing["key_description"])
    if signing.get("subject") and signing.get("skid"):
        return "%s: %s" % (signing["subject"], str(signing["skid"]).lower())
    return None


def _key_id(description):
    # type: (str) -> Tuple[str, str]
    match = _KEY_DESCRIPTION_RE.match(description or "")
    if not match:
        return (description or "", "")
    return (match.group("name"), match.group("id").lower())


def key_trusted(description, keys):
    # type: (Optional[str], Optional[List[str]]) -> bool
    """Whether ``description`` (``<CN>: <skid>``) is among ``keys`` (the
    key id compared without regard to case)."""
    if not description:
        return False
    wanted = _key_id(description)
    return any(_key_id(key) == wanted for key in keys or [])


def node_accepts(signing, fact):
    # type: (Optional[Dict[str, Any]], Optional[Dict[str, Any]]) -> Tuple[Optional[bool], str]
    """Would the node load modules signed as ``signing`` says (None: unsigned)?

    Returns ``(ok, reason)``: ``ok`` True (it loads them), False (it refuses
    them: it enforces signatures and the modules are unsigned, or signed
    by a key it does not list), or None when the fact cannot tell (the
    debug pods could not read the state, or the node enforces and its keys
    could not be read). ``reason`` says why, without the node's name.
    """
    if not fact_known(fact):
        return None, "its Secure Boot state could not be read"
    if not fact.get("enforcing"):
        return True, "it does not enforce module signatures (%s)" % summary(fact)
    enforced = why_enforcing(fact)
    if not signing:
        return False, ("it enforces module signatures (%s) and the modules are not signed: the kernel refuses "
                       "them (modprobe: %s)" % (enforced, refusal_error(fact)))
    description = signing_key_description(signing)
    keys = fact.get("trusted_keys")
    if keys is None:
        return None, ("it enforces module signatures (%s) and its keys (/proc/keys) could not be read" % enforced)
    if key_trusted(description, keys):
        return True, "it trusts the signing key %s" % description
    return False, ("it enforces module signatures (%s) and does not trust the key that signed the modules, %s "
                   "(certificate sha256 %s): the kernel refuses them (modprobe: %s)" % (
                       enforced, description or "(no key description)", signing.get("cert_sha256") or "unknown",
                       refusal_error(fact)))


def refusal_error(fact):
    # type: (Dict[str, Any]) -> str
    """What modprobe prints when this node refuses a signature."""
    return ERROR_KEY_REJECTED if fact.get("sig_enforce") else ERROR_LOCKDOWN


def _fix(signing, unsigned):
    # type: (Optional[Dict[str, Any]], bool) -> str
    accept = ("or set kmod_secure_boot_accept_untrusted: true to roll out anyway, accepting that these nodes "
              "boot without the modules")
    enrol = ("enrol the certificate as a Machine Owner Key on each node of the pool (mokutil --import "
             "<certificate.der>, then confirm at the console on the next boot; see docs/user-guide.md, "
             "\"Secure Boot\")")
    if unsigned:
        return ("Sign the modules: set kmod_signing_key_file and kmod_signing_cert_file (or KMOD_SIGNING_KEY / "
                "KMOD_SIGNING_CERT) to the fleet's signing key and certificate, and %s; %s." % (enrol, accept))
    return ("Either %s, or sign with a key the nodes trust (kmod_signing_key_file, kmod_signing_cert_file); %s."
            % (enrol.replace("the certificate", "the certificate (sha256 %s)" % (
                (signing or {}).get("cert_sha256") or "unknown")), accept))


def pool_signature_gate(pool, signing, node_facts, accept_untrusted=False, cluster=None):
    # type: (str, Optional[Dict[str, Any]], Any, bool, Optional[str]) -> Tuple[List[str], List[str]]
    """The Secure Boot gate of ``pool`` before any write.

    ``signing``: the build's signing facts (None: unsigned); ``node_facts``:
    ``{node: fact}`` (or ``[(node, fact)]``) of the pool's nodes, each fact
    as :func:`secure_boot_fact` makes it (None: not read).

    Returns ``(problems, warnings)``. A problem names the cluster, the
    pool, a node that would refuse the modules (and how many more), why,
    and the fix; with ``accept_untrusted`` the problems are warnings
    instead (the risk accepted). Nodes whose state cannot be read are
    warnings: the gate cannot tell, the rollout goes on.
    """
    items = sorted(node_facts.items()) if isinstance(node_facts, dict) else list(node_facts or [])
    where = "Cluster %s, pool %s" % (cluster, pool) if cluster else "Pool %s" % pool
    refused = []
    unknown = []
    for node, fact in items:
        ok, reason = node_accepts(signing, fact)
        if ok is False:
            refused.append((node, reason))
        elif ok is None:
            unknown.append((node, reason))
    problems = []
    heads = []
    if refused:
        node, reason = refused[0]
        more = " (and %d more of the pool's %d nodes)" % (len(refused) - 1, len(items)) if len(refused) > 1 else ""
        heads.append("%s: node %s%s would refuse the modules: %s" % (where, node, more, reason))
        problems.append("%s. %s" % (heads[-1], _fix(signing, not signing)))
    warnings = []
    if unknown:
        node, reason = unknown[0]
        more = " (and %d more)" % (len(unknown) - 1) if len(unknown) > 1 else ""
        warnings.append("%s: cannot tell whether node %s%s accepts the modules' signatures: %s; the Secure Boot "
                        "gate lets the rollout through for it" % (where, node, more, reason))
    if accept_untrusted and problems:
        warnings = ["%s (kmod_secure_boot_accept_untrusted: the risk is accepted)" % h for h in heads] + warnings
        problems = []
    return problems, warnings


# ---------------------------------------------------------------------------
# Verify


def module_refusal(name, fact, modinfo=None):
    # type: (str, Dict[str, Any], Optional[Dict[str, Dict[str, Any]]]) -> Optional[str]
    """Why the kernel of a node that enforces signatures refused ``name``,
    when the node's files tell: the module is unsigned, or signed by a
    signer none of the node's keys names. ``modinfo``: :func:`parse_modinfo`
    of the node (None: not read; the fact's ``modules`` then decide). None
    when nothing tells."""
    if not fact or not fact.get("enforcing"):
        return None
    name = normalize_module(name)
    if modinfo is not None:
        found = modinfo.get(name)
        if found is None or not found.get("found"):
            return "modinfo finds no module %s for the running kernel (is it in the image?)" % name
    elif name not in (fact.get("modules") or {}):
        return None
    info = (fact.get("modules") or {}).get(name) or {}
    error = refusal_error(fact)
    if not info.get("signer"):
        return "the kernel refuses unsigned modules here (%s): modprobe %s: %s" % (why_enforcing(fact), name, error)
    keys = fact.get("trusted_keys")
    if keys is not None and not any(_key_id(k)[0] == info["signer"] for k in keys):
        return ("it is signed by %s (key %s), which none of the node's keys names (%s): modprobe %s: %s" % (
            info["signer"], info.get("sig_key") or "unknown", why_enforcing(fact), name, error))
    return None


def secure_boot_verdict(verdict, fact, modinfo=None, check_taint=True, why_unknown=None):
    # type: (Dict[str, Any], Dict[str, Any], Optional[Dict[str, Dict[str, Any]]], bool, Optional[str]) -> Dict[str, Any]
    """Adds ``secure_boot`` (the fact) and ``warnings`` to a node's verdict
    (``_inspect.node_verdict``), in place, and returns it.

    - a node that enforces signatures and misses a module: its reason names
      the kernel's refusal when the fact tells it (:func:`module_refusal`);
    - a node that does not enforce signatures whose kernel an unsigned
      module tainted (bit 13, 'E'): a warning, not a failure;
    - a node whose Secure Boot state could not be read: a warning (saying
      ``why_unknown``, e.g. the commands' errors).
    """
    node = verdict["node"]
    verdict["secure_boot"] = fact
    # Whether the modules' signers are known (modinfo read): a signer None
    # then means unsigned.
    verdict["signatures_read"] = modinfo is not None
    warnings = verdict.setdefault("warnings", [])
    if not fact_known(fact):
        warnings.append("node %s: cannot read its Secure Boot state%s" % (
            node, (": " + why_unknown) if why_unknown else ""))
        return verdict
    for name in verdict.get("missing_modules") or []:
        refusal = module_refusal(name, fact, modinfo)
        if not refusal:
            continue
        prefix = "node %s: module %s is not loaded" % (node, name)
        verdict["reasons"] = [r + ": " + refusal if r.startswith(prefix) else r for r in verdict["reasons"]]
    if check_taint and not fact.get("enforcing") and fact.get("unsigned_module_taint"):
        unsigned = sorted(n for n, m in (fact.get("modules") or {}).items()
                          if not m.get("signer") and "E" in (m.get("taint") or ""))
        warnings.append(
            "node %s: the kernel is tainted by an unsigned module (taint %s, /proc/sys/kernel/tainted=%d)%s; %s "
            "does not enforce signatures, a node with Secure Boot would refuse %s" % (
                node, taint_letters(fact.get("tainted")) or "E", fact.get("tainted") or 0,
                (": " + ", ".join(unsigned)) if unsigned else "", summary(fact),
                "them" if len(unsigned) != 1 else "it"))
    return verdict


def signers_text(fact):
    # type: (Optional[Dict[str, Any]]) -> str
    """``mydrv: Fleet CA; other: unsigned`` for the table."""
    parts = []
    for name, info in sorted(((fact or {}).get("modules") or {}).items()):
        parts.append("%s: %s" % (name, info.get("signer") or "unsigned"))
    return "; ".join(parts)


def table_note(verdict):
    # type: (Dict[str, Any]) -> str
    """What the DETAIL column of verify's table adds for a node with a
    Secure Boot fact: ``Secure Boot on (lockdown integrity); signed:
    mydrv by Fleet CA`` and, for a warning, ``warning: unsigned-module taint``."""
    fact = verdict.get("secure_boot")
    if fact is None:
        return ""
    parts = [summary(fact)]
    if fact.get("modules"):
        parts.append("signers: " + (signers_text(fact) if verdict.get("signatures_read") else "unknown"))
    if not fact.get("enforcing") and fact.get("unsigned_module_taint"):
        parts.append("warning: kernel tainted by an unsigned module (E)")
    return "; ".join(parts)
