# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The boot test gate (module ``image_boot_test``).

- ``run(params, check_mode, warn)``: the whole module (the cached verdict,
  or fetch, boot and judge), ``(failed, result)``.
- ``keep_for_boot_test(path, secure_boot)``: which files of an OS image the
  boot test writes to disk while the layers stream by (kernel and module
  trees, modules-load.d / modprobe.d, busybox, kmod and the shared libraries
  they can need; with Secure Boot the image's signed shim and grub);
  everything else is read past.
- ``cache_file(results_dir, digest, modules, secure_boot)``: where a passing
  verdict of an image (by manifest digest), module list and Secure Boot
  settings (firmware, boot loader, certificate fingerprints) is kept.
- ``verdict(result, image)``: a ``_qemu_boot.BootResult`` dict -> ``(ok, msg)``.
- ``secure_boot_result(setup, security, refusals)``: the ``secure_boot``
  return value.
- ``console_tail(text, lines)``: the end of the serial console, for the
  failure report.

The boot itself is ``_qemu_boot.boot`` (the lab's nodes boot their own way,
``tests/kmodlab/nodeboot.py``); the Secure Boot parts are ``_uefi_boot``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import re
import shutil
import tempfile

from ansible.module_utils.common.text.converters import to_native

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _files, _qemu_boot, _rootfs, _uefi_boot
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry import RegistryError, check_platform, parse_pullspec
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry_args import registry_client

CACHE_VERSION = 1
_MODULE_TREES = ("usr/lib/modules/", "lib/modules/")
_CONFIG_DIRS = tuple(d + "/" for d in _qemu_boot.MODULES_LOAD_DIRS + _qemu_boot.MODPROBE_DIRS)
_TOOLS = frozenset(_qemu_boot.BUSYBOX_CANDIDATES + _qemu_boot.KMOD_CANDIDATES)
_LIB_DIRS = frozenset(_qemu_boot.LIB_DIRS)
_SHARED_LIB_RE = re.compile(r"^(ld-|lib)[^/]*\.so(\.[0-9.]+)?$")


def keep_for_boot_test(path, secure_boot=False):
    """Whether the boot test needs file ``path`` (relative, as in a layer).

    Symlinks and directories are always applied (by ``_rootfs``); this
    decides regular files and hard links only.
    """
    if path.startswith(_MODULE_TREES) or path.startswith(_CONFIG_DIRS) or path in _TOOLS:
        return True
    if secure_boot and _uefi_boot.keep_image_file(path):
        return True
    directory, _sep, name = path.rpartition("/")
    return directory in _LIB_DIRS and bool(_SHARED_LIB_RE.match(name))


def module_names(modules):
    """Names from a list of names or ``kmod_modules`` entries (dicts with ``name``)."""
    names = []
    for item in modules or []:
        name = item.get("name") if isinstance(item, dict) else item
        if name and str(name) not in names:
            names.append(str(name))
    return names


def cache_file(results_dir, digest, modules, secure_boot=None):
    """``<results_dir>/<digest hex>-<key>.json``: one verdict per image
    (manifest digest), set of modules and, for a Secure Boot test, its
    settings (``SecureBootSetup.cache_key()``: certificate fingerprints,
    firmware and boot loader), so that a verdict of a boot without Secure
    Boot (or with other certificates) is never served for it."""
    fields = {"version": CACHE_VERSION, "digest": digest,
              "modules": sorted(_qemu_boot.normalize_name(m) for m in modules)}
    if secure_boot is not None:
        fields["secure_boot"] = secure_boot
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(results_dir, "%s-%s.json" % (digest.split(":", 1)[-1], key))


def read_cached(path):
    """The cached verdict at ``path`` if it is a readable passing one, else None."""
    try:
        with open(path, "r") as stream:
            data = json.load(stream)
    except (IOError, OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("ok") is not True or data.get("version") != CACHE_VERSION:
        return None
    return data


def console_tail(text, lines=60):
    """The last ``lines`` lines of the console (carriage returns dropped)."""
    rows = (text or "").replace("\r", "").rstrip("\n").split("\n")
    return "\n".join(rows[-lines:]) if lines > 0 else ""


_FIXES = {
    "unsigned": "sign it with the fleet's key (kmod_signing_key_file, kmod_signing_cert_file) whose certificate "
                "the nodes have enrolled as a Machine Owner Key",
    "untrusted key": "sign it with the key whose certificate the nodes have enrolled, or enrol the certificate "
                     "it is signed with as a Machine Owner Key on the nodes (mokutil --import, see "
                     "docs/user-guide.md) and list it in secure_boot_certificates",
}
_WHAT = {"unsigned": "is unsigned", "untrusted key": "is signed with a key the kernel does not trust",
         "unsupported crypto": "is signed with an algorithm the kernel does not support"}


def _refusal_text(name, refusal):
    words = ["kernel: %s" % line for line in refusal.get("kernel") or []]
    words += ["modprobe: %s" % line.rsplit(": ", 1)[-1] for line in (refusal.get("modprobe") or [])[:1]]
    reason = refusal.get("reason")
    return "%s %s (%s): %s" % (
        name, _WHAT.get(reason, "has a signature the kernel refuses"), "; ".join(words),
        _FIXES.get(reason, "sign it with the key whose certificate the nodes have enrolled"))


def verdict(result, image):
    """``(ok, message)`` of a boot result dict (``_qemu_boot.BootResult.to_dict()``
    plus ``requested``): a panic, a boot that did not finish, another kernel,
    a module refused by Secure Boot (what the kernel said and what to do), or
    a module of the list that did not load, each named."""
    secure = " with Secure Boot" if (result.get("secure_boot") or {}).get("requested") else ""
    if result.get("ok"):
        return True, "%s: kernel %s booted%s and loaded %s in %.1fs" % (
            image, result.get("kernel"), secure, ", ".join(result.get("requested") or []) or "no module",
            result.get("duration") or 0.0)
    failures = list(result.get("failures") or []) or ["the boot did not complete"]
    not_loaded = []
    for failure in failures:
        match = re.match(r"module (\S+) not loaded", failure)
        if match:
            not_loaded.append(match.group(1))
    refusals = result.get("refusals") or ((result.get("secure_boot") or {}).get("refused")) or {}
    if result.get("panic"):
        head = "the kernel panicked"
    elif result.get("timed_out"):
        head = "the boot did not finish in time"
    elif refusals:
        enforced_by = "Secure Boot" if secure else "module signature enforcement"
        head = "%s refused module%s %s. %s" % (
            enforced_by, "s" if len(refusals) > 1 else "", ", ".join(sorted(refusals)),
            " ".join("Module %s." % _refusal_text(name, refusals[name]) for name in sorted(refusals)))
        enrolled = (result.get("secure_boot") or {}).get("certificates")
        if secure and not enrolled:
            head += " No certificate was enrolled in the test machine (secure_boot_certificates is empty)."
        head = head.rstrip(".")
    elif not_loaded:
        head = "module%s %s did not load" % ("s" if len(not_loaded) > 1 else "", ", ".join(not_loaded))
    else:
        head = "the boot test failed"
    return False, ("Boot test of %s%s: %s (%s). A node booting this image would fail the same way: nothing was "
                   "rolled out. See console_tail (the serial console's end) in this result."
                   % (image, secure, head, "; ".join(failures)))


def secure_boot_result(setup, security, refusals):
    """The ``secure_boot`` return value: what was asked (``requested``, the
    firmware, shim, grub and certificates used) and what the guest kernel
    enforced (``state``, ``lockdown``, ``sig_enforce``, ``enforcing``, its
    trusted keys and key rings), each certificate ``trusted`` when the
    guest's keys hold it, and the modules ``refused`` by signature."""
    security = dict(security or {})
    result = {"requested": setup is not None, "state": security.get("state"),
              "lockdown": security.get("lockdown"), "sig_enforce": security.get("sig_enforce"),
              "enforcing": security.get("enforcing"), "setup_mode": security.get("setup_mode"),
              "trusted_keys": security.get("trusted_keys") or [], "keyrings": security.get("keyrings") or {},
              "kernel_messages": security.get("kernel_messages") or [], "refused": dict(refusals or {}),
              "certificates": []}
    if setup is not None:
        result.update(setup.to_dict())
        for cert in result["certificates"]:
            description = cert.get("key_description")
            cert["trusted"] = (description in result["trusted_keys"]) if description and security else None
    return result


def fetch_rootfs(client, image, root, secure_boot=False, arch="x86_64"):
    """Manifest digest, layer count and files written of ``image`` (an
    ``arch`` image: its config must say so) unpacked into ``root``."""
    ref = parse_pullspec(image)
    manifest = client.get_manifest(ref, arch=arch)
    config = client.get_config(manifest.ref, manifest)
    check_platform(config, arch, ref)
    written = 0

    def keep(path):
        return keep_for_boot_test(path, secure_boot)

    for layer in manifest.layers:
        with client.open_blob(manifest.ref, layer["digest"]) as blob:
            written += _rootfs.apply_layer(blob, root, keep=keep)
    return manifest.digest, len(manifest.layers), written


# What a passing verdict keeps (and a cached one returns).
KEPT = ("ok", "kernel", "requested", "loaded", "params", "duration", "tools", "secure_boot", "accelerator",
        "accelerator_note")


def secure_boot_setup(params):
    """The ``SecureBootSetup`` of the module's parameters, None without
    ``secure_boot``. Raises ``_uefi_boot.SecureBootError``."""
    if not params.get("secure_boot"):
        return None
    firmware = params.get("secure_boot_firmware") or {}
    loader = params.get("secure_boot_bootloader") or {}
    return _uefi_boot.SecureBootSetup(
        certificates=params.get("secure_boot_certificates") or [],
        firmware_code=firmware.get("code"), firmware_vars=firmware.get("vars"),
        shim=loader.get("shim"), grub=loader.get("grub"), bootloader=loader.get("source") or "auto")


def run(params, check_mode=False, warn=None, boot=None):
    """The module ``image_boot_test``: ``(failed, result)`` for its
    parameters. ``boot`` replaces ``_qemu_boot.boot`` (tests)."""
    boot = boot or _qemu_boot.boot
    warn = warn or (lambda message: None)
    image = params["image"]
    result = dict(changed=False, ok=False, booted=False, cached=False, image=image, bytes_fetched=0)
    try:
        board = _qemu_boot.machine(params["arch"])
    except _qemu_boot.BootError as exc:
        result["msg"] = ("Boot test of %s: %s (qemu on the controller). Turn it off for this architecture "
                         "(kmod_boot_test: false)." % (image, exc))
        return True, result
    result["arch"] = board["arch"]
    if params.get("secure_boot") and board["arch"] != "x86_64":
        result["msg"] = ("Boot test of %s: the Secure Boot boot test boots x86_64 images only (OVMF, shim and grub "
                         "for x86_64), this image is %s; boot it without Secure Boot (kmod_boot_test_secure_boot: "
                         "auto or false: auto boots the signed modules of a %s image without Secure Boot)."
                         % (image, board["arch"], board["arch"]))
        return True, result
    if "@sha256:" not in image:
        result["msg"] = "image %s is not pinned by digest (repo@sha256:...)" % image
        return True, result
    try:
        setup = secure_boot_setup(params)
        secure_key = setup.cache_key() if setup is not None else None
    except (_uefi_boot.SecureBootError, IOError, OSError) as exc:
        result["msg"] = "Boot test of %s with Secure Boot: %s" % (image, to_native(exc))
        return True, result
    modules = module_names(params["modules"])
    digest = image.rsplit("@", 1)[1]
    results_dir = params.get("results_dir")
    cache_path = cache_file(results_dir, digest, modules, secure_key) if results_dir else None
    cached = read_cached(cache_path) if cache_path else None
    if cached is not None:
        result.update(dict((k, cached.get(k)) for k in KEPT), cached=True, digest=digest,
                      msg=verdict(cached, image)[1] + " (cached verdict)")
        return False, result
    if check_mode:
        result["msg"] = "check mode: %s not booted (no cached verdict)" % image
        return False, result

    workdir = tempfile.mkdtemp(prefix="kmod-boot-test-")
    client = None
    try:
        client = registry_client(params, user_agent="ocp.kmod_layering.image_boot_test")
        root = workdir + "/rootfs"
        result["digest"], result["layers"], result["files_unpacked"] = fetch_rootfs(
            client, image, root, secure_boot=setup is not None, arch=board["arch"])
        result["bytes_fetched"] = client.bytes_fetched
        booted = boot(root, timeout=params["boot_timeout"], memory_mb=params["memory_mb"], workdir=workdir,
                      modules=modules, secure_boot=setup, accelerator=params.get("accelerator") or "tcg",
                      arch=board["arch"])
    except (RegistryError, _rootfs.LayerError) as exc:
        result["bytes_fetched"] = client.bytes_fetched if client else 0
        result["msg"] = "Boot test of %s: cannot fetch the image: %s" % (image, to_native(exc))
        return True, result
    except _qemu_boot.BootError as exc:
        result["msg"] = "Boot test of %s: cannot boot the image: %s" % (image, to_native(exc))
        return True, result
    except (IOError, OSError) as exc:
        result["msg"] = "Boot test of %s: %s" % (image, to_native(exc))
        return True, result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary = booted.to_dict()
    summary["secure_boot"] = secure_boot_result(setup, summary.get("security"), summary.get("refusals"))
    ok, msg = verdict(summary, image)
    result.update(dict((k, summary.get(k)) for k in KEPT), booted=True, ok=ok, msg=msg,
                  failures=summary["failures"], panic=summary["panic"],
                  console_tail=console_tail(booted.console, params["console_lines"]))
    if results_dir:
        try:
            log_path = cache_path[:-len(".json")] + ".console.log"
            _files.write_atomic(log_path, booted.console)
            result["console_log"] = log_path
            if ok:
                record = dict((k, summary.get(k)) for k in KEPT)
                record.update(version=CACHE_VERSION, image=image, digest=digest)
                _files.write_atomic(cache_path, json.dumps(record, sort_keys=True))
        except (IOError, OSError) as exc:
            warn("Could not keep the boot test verdict in %s: %s" % (results_dir, to_native(exc)))
    return not ok, result
