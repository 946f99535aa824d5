# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Secure Boot facts and the gate (_secure_boot) on outputs in the formats
the real programs print: mokutil --sb-state, `grep -H -s .` of the kernel's
lockdown, sig_enforce, tainted, /proc/keys and module taint files, kmod's
modinfo of several modules."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _inspect
from ansible_collections.ocp.kmod_layering.plugins.module_utils import _secure_boot as sb

FLEET_SKID = "9f2c41d07b3e5a6c8d1e2f3a4b5c6d7e8f901a2b"
FLEET_DESCRIPTION = "Fleet Module Signing: " + FLEET_SKID
SIGNING = {
    "cert_sha256": "3e" * 32,
    "subject": "Fleet Module Signing",
    "serial": "1A:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09:1A:2B:3C:4D",
    "skid": FLEET_SKID,
    "key_description": FLEET_DESCRIPTION,
    "hash": "sha256",
}
OTHER_SIGNING = dict(SIGNING, cert_sha256="7d" * 32, subject="Other Signing", skid="0123456789abcdef0123456789abcdef01234567",
                     key_description="Other Signing: 0123456789abcdef0123456789abcdef01234567")

# /proc/keys of a RHEL 9 kernel booted with Secure Boot and a MOK enrolled
# (uid/gid 0, the keyrings' own lines included).
PROC_KEYS = (
    "0392b8fb I------     1 perm 1f0b0000     0     0 keyring   .builtin_trusted_keys: 3",
    "0b4ddd26 I------     1 perm 1f030000     0     0 asymmetri Red Hat Enterprise Linux kernel signing key: "
    "4d38fd864ebe18c5f0b72e3852e2014c3a676fc8: X509.rsa 3a676fc8 []",
    "14d0b92e I------     1 perm 1f030000     0     0 asymmetri Red Hat Enterprise Linux Driver Update Program "
    "(key 3): bf57f3e87362bc7229d9f465321773dfd1f77a80: X509.rsa d1f77a80 []",
    "1d4a5b4d I------     1 perm 1f0f0000     0     0 keyring   .machine: 1",
    "2a7b3c91 I------     1 perm 1f010000     0     0 asymmetri " + FLEET_DESCRIPTION + ": X509.rsa 8f901a2b []",
    "31c2fa10 I------     1 perm 1f0b0000     0     0 keyring   .platform: 2",
    "35aa0e4c I------     1 perm 1f010000     0     0 asymmetri Microsoft Corporation UEFI CA 2011: "
    "13adbf4309bd82709c8cd54f316ed522988a1bd4: X509.rsa 988a1bd4 []",
    "3f81e1b2 I--Q---     2 perm 3f030000     0     0 keyring   _ses: 1",
    "27e33c05 I------     1 perm 1f030000     0     0 keyring   .blacklist: 12",
    "2b8a1c3d I------     1 perm 1f010000     0     0 blacklist bin:0d9cf2f9f5a8f2e05dfe4bd1a6b0d26fe0a53c09a3f8e0c3f2c4d6e1a5b7c9d0",
)


def grep_output(lockdown="none [integrity] confidentiality", sig_enforce="N", tainted="0", keys=PROC_KEYS,
                taints=None, params=None):
    """What `grep -H -s .` of the files prints (missing files print nothing)."""
    lines = []
    for path, value in sorted((params or {}).items()):
        lines.append("%s:%s" % (path, value))
    if lockdown is not None:
        lines.append("%s:%s" % (sb.LOCKDOWN_FILE, lockdown))
    if sig_enforce is not None:
        lines.append("%s:%s" % (sb.SIG_ENFORCE_FILE, sig_enforce))
    if tainted is not None:
        lines.append("%s:%s" % (sb.TAINTED_FILE, tainted))
    lines.extend("%s:%s" % (sb.KEYS_FILE, line) for line in keys or [])
    for module, taint in sorted((taints or {}).items()):
        if taint:  # an empty taint file prints nothing
            lines.append("/sys/module/%s/taint:%s" % (module, taint))
    return "\n".join(lines) + "\n"


def modinfo_signed(name, signer="Fleet Module Signing", key=SIGNING["serial"], algo="sha256"):
    """kmod 28's modinfo of a signed out-of-tree module (RHEL 9)."""
    return (
        "filename:       /lib/modules/5.14.0-427.26.1.el9_4.x86_64/extra/%s.ko.xz\n"
        "description:    kmodlab test module\n"
        "license:        GPL\n"
        "rhelversion:    9.4\n"
        "srcversion:     3B1F0E6A9D2C4B7E8F1A2D3\n"
        "depends:        \n"
        "retpoline:      Y\n"
        "name:           %s\n"
        "vermagic:       5.14.0-427.26.1.el9_4.x86_64 SMP preempt mod_unload modversions \n"
        "sig_id:         PKCS#7\n"
        "signer:         %s\n"
        "sig_key:        %s\n"
        "sig_hashalgo:   %s\n"
        "signature:      30:65:02:31:00:B4:5C:0A:77:8E:19:2D:FF:31:6A:C2:9B:0E:44:51:\n"
        "\t\t6D:0C:8A:11:F3:29:77:AE:10:9E:32:4F:6B:88:D0:12:3A:45:67:89:\n"
        "\t\t02:30:1B:2C\n"
        "parm:           greeting:Greeting printed at load (charp)\n" % (name, name, signer, key, algo))


def modinfo_unsigned(name):
    return (
        "filename:       /lib/modules/5.14.0-427.26.1.el9_4.x86_64/extra/%s.ko\n"
        "license:        GPL\n"
        "depends:        kmodlab_core\n"
        "retpoline:      Y\n"
        "name:           %s\n"
        "vermagic:       5.14.0-427.26.1.el9_4.x86_64 SMP preempt mod_unload modversions \n" % (name, name))


# --- commands ------------------------------------------------------------------


def test_commands_are_the_contracts():
    assert sb.CMD_SB_STATE == ["mokutil", "--sb-state"]
    assert sb.grep_command(["kmodlab-core"]) == [
        "grep", "-H", "-s", ".", "/sys/kernel/security/lockdown", "/sys/module/module/parameters/sig_enforce",
        "/proc/sys/kernel/tainted", "/proc/keys", "/sys/module/kmodlab_core/taint"]
    # The parameter files of verify go first, in the same pod.
    argv = sb.grep_command(["a"], ["/sys/module/a/parameters/p"])
    assert argv[4] == "/sys/module/a/parameters/p" and argv[-1] == "/sys/module/a/taint"
    assert sb.modinfo_command(["kmodlab-core", "kmodlab_dep", "kmodlab_core"]) == [
        "modinfo", "kmodlab_core", "kmodlab_dep"]
    assert sb.modinfo_command([]) is None


# --- parsers -------------------------------------------------------------------


@pytest.mark.parametrize("text, rc, state", [
    ("SecureBoot enabled\n", 0, "enabled"),
    ("SecureBoot disabled\n", 0, "disabled"),
    ("SecureBoot disabled\nPlatform is in Setup Mode\n", 0, "disabled"),
    # shim's validation off: shim tells the kernel Secure Boot is off.
    ("SecureBoot enabled\nSecureBoot validation is disabled in shim\n", 0, "disabled"),
    ("EFI variables are not supported on this system\n", 255, "unsupported"),
    ("", 255, "unsupported"),
    ("kmodlab: unsupported debug command 'chroot /host mokutil --sb-state'\n", 127, "unknown"),
    ("sh: mokutil: command not found\n", 127, "unknown"),
])
def test_sb_state(text, rc, state):
    assert sb.parse_sb_state(text, rc) == state


def test_lockdown_sig_enforce_tainted():
    assert sb.parse_lockdown("[none] integrity confidentiality") == "none"
    assert sb.parse_lockdown("none [integrity] confidentiality") == "integrity"
    assert sb.parse_lockdown("none integrity [confidentiality]\n") == "confidentiality"
    assert sb.parse_lockdown("") is None and sb.parse_lockdown(None) is None
    assert (sb.parse_sig_enforce("Y"), sb.parse_sig_enforce("N\n"), sb.parse_sig_enforce("")) == (True, False, None)
    assert sb.parse_tainted("12288\n") == 12288 and sb.parse_tainted("x") is None
    # 4096 'O' out-of-tree, 8192 'E' unsigned.
    assert sb.taint_letters(12288) == "OE" and sb.taint_letters(4096) == "O" and sb.taint_letters(0) == ""
    assert sb.taint_letters(1 | 4096) == "PO"
    assert sb.unsigned_module_taint(12288) and not sb.unsigned_module_taint(4096)
    assert not sb.unsigned_module_taint(None)
    assert sb.out_of_tree_taint(4096) and not sb.out_of_tree_taint(8192)


def test_proc_keys():
    keys = sb.parse_proc_keys(PROC_KEYS)
    asymmetric = [k for k in keys if k["type"] == "asymmetric"]
    assert len(asymmetric) == 4 and all(k["subtype"] == "X509.rsa" for k in asymmetric)
    assert [k["description"] for k in keys if k["type"] == "keyring"][:2] == [".builtin_trusted_keys: 3", ".machine: 1"]
    assert sb.trusted_keys(PROC_KEYS) == sorted([
        FLEET_DESCRIPTION,
        "Microsoft Corporation UEFI CA 2011: 13adbf4309bd82709c8cd54f316ed522988a1bd4",
        "Red Hat Enterprise Linux Driver Update Program (key 3): bf57f3e87362bc7229d9f465321773dfd1f77a80",
        "Red Hat Enterprise Linux kernel signing key: 4d38fd864ebe18c5f0b72e3852e2014c3a676fc8",
    ])
    # The contract's Debian sample, as text.
    text = ("0b4ddd26 I------     1 perm 1f030000     0     0 asymmetri Debian Secure Boot CA: "
            "6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1: X509.rsa 00b55eb3 []\n"
            "1d4a5b4d I------     1 perm 1f0f0000     0     0 keyring   .machine: 2\n")
    assert sb.trusted_keys(text) == ["Debian Secure Boot CA: 6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1"]
    assert sb.trusted_keys("") == [] and sb.parse_proc_keys("garbage line\n") == []


def test_state_files_of_one_grep_with_module_parameters():
    text = grep_output(lockdown="none [integrity] confidentiality", sig_enforce="N", tainted="4096",
                       taints={"kmodlab_core": "O", "kmodlab_dep": ""},
                       params={"/sys/module/kmodlab_core/parameters/greeting": "hi"})
    parsed = sb.parse_state_files(text)
    assert parsed == {"lockdown": "integrity", "sig_enforce": False, "tainted": 4096,
                      "trusted_keys": sb.trusted_keys(PROC_KEYS), "module_taints": {"kmodlab_core": "O"}}
    # The same output still gives verify its parameters.
    assert _inspect.parse_sys_parameters(text)["kmodlab_core"] == {"greeting": "hi"}
    # Nothing read (the files missing, or grep never ran).
    assert sb.parse_state_files("") == {"lockdown": None, "sig_enforce": None, "tainted": None,
                                        "trusted_keys": None, "module_taints": {}}


def test_modinfo_of_several_modules():
    text = (modinfo_signed("kmodlab_core") + modinfo_unsigned("kmodlab_dep")
            + "modinfo: ERROR: Module nosuch not found.\n")
    infos = sb.parse_modinfo(text)
    assert set(infos) == {"kmodlab_core", "kmodlab_dep", "nosuch"}
    core = infos["kmodlab_core"]
    assert (core["found"], core["signer"], core["sig_key"], core["sig_hashalgo"], core["sig_id"]) == (
        True, "Fleet Module Signing", SIGNING["serial"], "sha256", "PKCS#7")
    assert core["filename"].endswith("/extra/kmodlab_core.ko.xz")
    dep = infos["kmodlab_dep"]
    assert dep["found"] and (dep["signer"], dep["sig_key"], dep["sig_hashalgo"]) == (None, None, None)
    assert infos["nosuch"]["found"] is False
    # No name: field (older modules): the file's name, in the kernel's form.
    old = "filename:       /lib/modules/5.14.0/extra/my-drv.ko.zst\nsigner:         X\n"
    assert sb.parse_modinfo(old) == {"my_drv": {"found": True, "filename": "/lib/modules/5.14.0/extra/my-drv.ko.zst",
                                                "signer": "X", "sig_key": None, "sig_hashalgo": None,
                                                "sig_id": None}}
    # kmod built without openssl prints the fields empty: unknown, not a signer.
    empty = "filename:       /x/a.ko\nname:           a\nsig_id:         PKCS#7\nsigner:         \nsig_key:        \n"
    assert sb.parse_modinfo(empty)["a"]["signer"] is None


# --- the fact ------------------------------------------------------------------


def secure_node(**kwargs):
    args = dict(sb_state="SecureBoot enabled\n", sb_state_rc=0,
                files=grep_output(tainted="4096", taints={"kmodlab_core": "O"}),
                modinfo=modinfo_signed("kmodlab_core"), module_names=["kmodlab_core"])
    args.update(kwargs)
    return sb.secure_boot_fact(**args)


def plain_node(**kwargs):
    args = dict(sb_state="SecureBoot disabled\n", sb_state_rc=0,
                files=grep_output(lockdown="[none] integrity confidentiality", tainted="12288",
                                  taints={"kmodlab_core": "OE"}),
                modinfo=modinfo_unsigned("kmodlab_core"), module_names=["kmodlab_core"])
    args.update(kwargs)
    return sb.secure_boot_fact(**args)


def test_fact_of_a_secure_boot_node():
    fact = secure_node()
    assert fact == {
        "state": "enabled", "lockdown": "integrity", "sig_enforce": False, "enforcing": True,
        "tainted": 4096, "unsigned_module_taint": False, "trusted_keys": sb.trusted_keys(PROC_KEYS),
        "modules": {"kmodlab_core": {"signer": "Fleet Module Signing", "sig_key": SIGNING["serial"],
                                     "sig_hashalgo": "sha256", "taint": "O"}},
    }
    assert sb.summary(fact) == "Secure Boot on (lockdown integrity)"


def test_fact_of_a_node_without_secure_boot_tainted_by_an_unsigned_module():
    fact = plain_node()
    assert (fact["state"], fact["lockdown"], fact["enforcing"], fact["unsigned_module_taint"]) == (
        "disabled", "none", False, True)
    assert fact["modules"]["kmodlab_core"] == {"signer": None, "sig_key": None, "sig_hashalgo": None, "taint": "OE"}
    assert sb.summary(fact) == "Secure Boot off"


def test_enforcing_without_secure_boot_and_unknown_states():
    # BIOS boot with module.sig_enforce=1 on the kernel command line.
    bios = sb.secure_boot_fact("EFI variables are not supported on this system\n", 255,
                               grep_output(lockdown="[none] integrity confidentiality", sig_enforce="Y"))
    assert bios["state"] == "unsupported" and bios["enforcing"] is True
    assert sb.summary(bios) == "no UEFI, signatures enforced (module.sig_enforce=Y)"
    # Nothing answered (the lab before Secure Boot, a node whose pods failed).
    nothing = sb.secure_boot_fact(None, None, None, None, ["kmodlab_core"])
    assert nothing["state"] == "unknown" and nothing["enforcing"] is False and nothing["trusted_keys"] is None
    assert not sb.fact_known(nothing) and sb.summary(nothing) == "Secure Boot unknown"
    assert nothing["modules"] == {"kmodlab_core": {"signer": None, "sig_key": None, "sig_hashalgo": None,
                                                   "taint": None}}
    # mokutil failed, but the kernel's lockdown tells.
    locked = sb.secure_boot_fact(None, None, grep_output())
    assert sb.fact_known(locked) and locked["enforcing"] is True
    # The taint of a loaded module from /proc/modules when its taint file was not read.
    proc = _inspect.parse_modules("kmodlab_core 16384 0 - Live 0xffffffffc0a00000 (OE)\n")
    assert sb.secure_boot_fact(None, None, "", None, ["kmodlab_core"], proc)["modules"]["kmodlab_core"]["taint"] == "OE"


# --- decisions ------------------------------------------------------------------


def test_node_accepts():
    secure = secure_node()
    assert sb.node_accepts(SIGNING, secure) == (True, "it trusts the signing key " + FLEET_DESCRIPTION)
    ok, reason = sb.node_accepts(None, secure)
    assert ok is False and "Secure Boot enabled, lockdown integrity" in reason and "not signed" in reason
    assert "Operation not permitted" in reason
    ok, reason = sb.node_accepts(OTHER_SIGNING, secure)
    assert ok is False and "Other Signing: 0123456789abcdef" in reason and "7d7d7d" in reason
    # sig_enforce=Y: EKEYREJECTED.
    enforced = secure_node(files=grep_output(sig_enforce="Y"))
    assert "Key was rejected by service" in sb.node_accepts(None, enforced)[1]
    # A node that does not enforce loads anything.
    assert sb.node_accepts(None, plain_node())[0] is True
    assert sb.node_accepts(OTHER_SIGNING, plain_node())[0] is True
    # Cannot tell.
    assert sb.node_accepts(None, None) == (None, "its Secure Boot state could not be read")
    assert sb.node_accepts(SIGNING, secure_node(files=grep_output(keys=None)))[0] is None
    assert sb.node_accepts(None, secure_node(files=grep_output(keys=None)))[0] is False
    # Without key_description, subject + skid (the skid's case does not matter).
    bare = dict(SIGNING, key_description=None, skid=FLEET_SKID.upper())
    assert sb.node_accepts(bare, secure)[0] is True
    assert sb.signing_key_description({"subject": "X"}) is None


def test_pool_gate_refuses_naming_pool_node_and_fix():
    facts = {"worker-0": secure_node(), "worker-1": secure_node(), "worker-2": plain_node()}
    problems, warnings = sb.pool_signature_gate("worker", None, facts, cluster="lab-a")
    assert warnings == []
    (problem,) = problems
    assert problem.startswith("Cluster lab-a, pool worker: node worker-0 (and 1 more of the pool's 3 nodes) "
                              "would refuse the modules: it enforces module signatures")
    assert "kmod_signing_key_file" in problem and "mokutil --import" in problem
    assert "kmod_secure_boot_accept_untrusted: true" in problem and "docs/user-guide.md" in problem

    problems, _w = sb.pool_signature_gate("worker", OTHER_SIGNING, facts, cluster="lab-a")
    (problem,) = problems
    assert "does not trust the key that signed the modules, Other Signing" in problem
    assert "mokutil --import" in problem and "sha256 " + "7d" * 32 in problem
    assert "kmod_signing_key_file" in problem and "kmod_secure_boot_accept_untrusted: true" in problem

    assert sb.pool_signature_gate("worker", SIGNING, facts) == ([], [])
    # Nodes without Secure Boot: anything goes.
    assert sb.pool_signature_gate("worker", None, {"w": plain_node()}) == ([], [])
    assert sb.pool_signature_gate("worker", None, {}) == ([], [])


def test_pool_gate_accepting_the_risk_and_unknown_nodes_warn():
    facts = [("worker-0", secure_node()), ("worker-1", None)]
    problems, warnings = sb.pool_signature_gate("worker", None, facts, accept_untrusted=True, cluster="lab-a")
    assert problems == []
    assert warnings[0].startswith("Cluster lab-a, pool worker: node worker-0 would refuse the modules")
    assert warnings[0].endswith("(kmod_secure_boot_accept_untrusted: the risk is accepted)")
    assert warnings[1] == ("Cluster lab-a, pool worker: cannot tell whether node worker-1 accepts the modules' "
                           "signatures: its Secure Boot state could not be read; the Secure Boot gate lets the "
                           "rollout through for it")
    problems, warnings = sb.pool_signature_gate("worker", None, [("worker-1", None)])
    assert problems == [] and len(warnings) == 1


# --- verify ---------------------------------------------------------------------


def verdict_missing(node="worker-0"):
    return _inspect.node_verdict(node, expected_modules=[{"name": "kmodlab_core"}],
                                 outputs={"modules": "xfs 1 0 - Live 0x0\n"})


def test_a_secure_boot_node_missing_an_unsigned_module_fails_naming_the_refusal():
    fact = secure_node(modinfo=modinfo_unsigned("kmodlab_core"))
    verdict = sb.secure_boot_verdict(verdict_missing(), fact, sb.parse_modinfo(modinfo_unsigned("kmodlab_core")))
    assert verdict["verdict"] == "fail" and verdict["secure_boot"] is fact and verdict["warnings"] == []
    assert verdict["reasons"] == [
        "node worker-0: module kmodlab_core is not loaded (not in /proc/modules): the kernel refuses unsigned "
        "modules here (Secure Boot enabled, lockdown integrity): modprobe kmodlab_core: Operation not permitted"]


def test_a_secure_boot_node_missing_a_module_signed_by_another_key():
    text = modinfo_signed("kmodlab_core", signer="Other Signing", key="AA:BB")
    fact = secure_node(modinfo=text)
    verdict = sb.secure_boot_verdict(verdict_missing(), fact, sb.parse_modinfo(text))
    assert verdict["reasons"][0].endswith(
        ": it is signed by Other Signing (key AA:BB), which none of the node's keys names (Secure Boot enabled, "
        "lockdown integrity): modprobe kmodlab_core: Operation not permitted")
    # Signed by a key the node lists: the refusal is not the signature's, nothing added.
    fact = secure_node()
    plain = verdict_missing()["reasons"]
    assert sb.secure_boot_verdict(verdict_missing(), fact, sb.parse_modinfo(modinfo_signed("kmodlab_core")))[
        "reasons"] == plain
    # Not in the image at all.
    missing = "modinfo: ERROR: Module kmodlab_core not found.\n"
    verdict = sb.secure_boot_verdict(verdict_missing(), secure_node(modinfo=missing), sb.parse_modinfo(missing))
    assert verdict["reasons"][0].endswith(": modinfo finds no module kmodlab_core for the running kernel "
                                          "(is it in the image?)")


def test_an_unsigned_module_taint_without_secure_boot_is_a_warning():
    passing = _inspect.node_verdict("worker-1", expected_modules=[{"name": "kmodlab_core"}],
                                    outputs={"modules": "kmodlab_core 16384 0 - Live 0xffffffffc0a00000 (OE)\n"})
    untouched = copy.deepcopy(passing)
    verdict = sb.secure_boot_verdict(passing, plain_node())
    assert verdict["verdict"] == "pass" and verdict["reasons"] == []
    assert verdict["warnings"] == [
        "node worker-1: the kernel is tainted by an unsigned module (taint OE, /proc/sys/kernel/tainted=12288): "
        "kmodlab_core; Secure Boot off does not enforce signatures, a node with Secure Boot would refuse it"]
    # A node that does not enforce and is not tainted: no warning; unknown: a warning.
    clean = plain_node(files=grep_output(lockdown="[none] integrity confidentiality", tainted="4096"))
    # check_taint=False: not looked at.
    assert sb.secure_boot_verdict(copy.deepcopy(untouched), plain_node(), check_taint=False)["warnings"] == []
    fresh = _inspect.node_verdict("worker-1")
    assert sb.secure_boot_verdict(fresh, clean)["warnings"] == []
    fresh = _inspect.node_verdict("worker-1")
    assert sb.secure_boot_verdict(fresh, sb.secure_boot_fact())["warnings"] == [
        "node worker-1: cannot read its Secure Boot state"]
    assert sb.signers_text(secure_node()) == "kmodlab_core: Fleet Module Signing"
    assert sb.signers_text(plain_node()) == "kmodlab_core: unsigned"
