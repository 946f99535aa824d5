# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""UEFI Secure Boot for the boot test (``image_boot_test`` with
``secure_boot: true``).

The machine boots the way a Secure Boot node does: OVMF's Secure Boot
firmware (``*_CODE*.secboot.fd``) with a copy of a variable store that has
Microsoft's keys enrolled and Secure Boot on (``*_VARS*.ms.fd`` /
``*.secboot.fd``), the fleet's certificates enrolled in that copy as Machine
Owner Keys (``virt-fw-vars --add-mok``: shim puts them in the kernel's
``.machine`` key ring), then shim -> grub -> the image's own kernel and the
boot test's initramfs from a FAT image (the ESP).

- ``Certificate``: a PEM or DER certificate, its DER, and its fingerprint,
  subject and key description as ``_signing`` reads them (those of
  ``kmod_build.signing``).
- ``firmware_pair``, ``controller_bootloader``, ``image_bootloader``:
  where the firmware, shim and grub are (defaults for Debian/Ubuntu and
  Fedora/RHEL controllers; the image's own signed shim and grub first).
- ``grub_prefix``: the directory grub reads its ``grub.cfg`` from.
- ``esp_layout``, ``esp_commands``: the ESP's files and the mtools commands
  that write them.
- ``vars_command``: the ``virt-fw-vars`` command that writes the VM's own
  copy of the variable store with the MOKs.
- ``qemu_args``: the machine, firmware and disk arguments.
- ``probe_kvm``, ``choose_accelerator``: KVM needs SMM for this firmware;
  without it (most nested hypervisors) the boot runs under TCG, and says so.
- ``SecureBootSetup``: all of it for one boot; ``prepare(workdir, ...)``
  writes the ESP and the vars.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _signing

# shim's vendor GUID, owner of the MokList entries.
SHIM_LOCK_GUID = "605dab50-e046-4300-abb6-3dd810dd8b23"
EFI_GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

# (code, vars) of OVMF's Secure Boot build, in the order they are looked for:
# Debian/Ubuntu package ovmf; Fedora/RHEL/CentOS edk2-ovmf (its
# OVMF_VARS.secboot.fd has Microsoft's keys enrolled and Secure Boot on).
FIRMWARE_PAIRS = (
    ("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd", "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd"),
    ("/usr/share/OVMF/OVMF_CODE.secboot.fd", "/usr/share/OVMF/OVMF_VARS.ms.fd"),
)
# (shim, grub) of the controller, same vendor each: Debian/Ubuntu
# shim-signed + grub-efi-amd64-signed; Fedora/RHEL/CentOS shim-x64 + grub2-efi-x64.
CONTROLLER_BOOTLOADERS = (
    ("/usr/lib/shim/shimx64.efi.signed", "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"),
    ("/boot/efi/EFI/redhat/shimx64.efi", "/boot/efi/EFI/redhat/grubx64.efi"),
    ("/boot/efi/EFI/fedora/shimx64.efi", "/boot/efi/EFI/fedora/grubx64.efi"),
    ("/boot/efi/EFI/centos/shimx64.efi", "/boot/efi/EFI/centos/grubx64.efi"),
)
# The image's own signed shim and grub (relative to its root), as (shim
# glob, grub pattern) where grub's ``{vendor}`` is the EFI vendor directory
# of the shim found: RHCOS (bootupd's payload, /usr/lib/bootupd/updates),
# newer bootupd layouts (/usr/lib/efi/<package>/<version>/EFI/<vendor>), a
# plain ESP under /boot/efi.
IMAGE_BOOTLOADERS = (
    ("usr/lib/bootupd/updates/EFI/*/shimx64.efi", "usr/lib/bootupd/updates/EFI/{vendor}/grubx64.efi"),
    ("usr/lib/efi/shim/*/EFI/*/shimx64.efi", "usr/lib/efi/grub2/*/EFI/{vendor}/grubx64.efi"),
    ("boot/efi/EFI/*/shimx64.efi", "boot/efi/EFI/{vendor}/grubx64.efi"),
)
IMAGE_EFI_PREFIXES = ("usr/lib/bootupd/updates/EFI/", "usr/lib/efi/", "boot/efi/EFI/")
IMAGE_EFI_NAMES = frozenset(("shimx64.efi", "grubx64.efi", "BOOTX64.EFI"))
VIRT_FW_VARS = "virt-fw-vars"
# Messages of the firmware, shim or grub that mean the boot stopped before
# the kernel (the machine would sit in a menu or prompt until the timeout).
CHAIN_FAILURE_PATTERNS = (
    "Verification failed:",
    "Security Violation",
    "Access Denied",
    "bad shim signature",
    "you need to load the kernel first",
    "No bootable option or device was found",
    "Failed to load image",
    "start_image() returned",
    "grub> ",
)
_PEM_RE = re.compile(br"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.S)
_SMM_MISSING = "System Management Mode not supported"


class SecureBootError(Exception):
    """The Secure Boot boot cannot be set up (a file or a tool is missing)."""


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------
# Certificates


class Certificate:
    """One X.509 certificate to enrol as a MOK: its DER and the signing facts
    ``_signing.certificate_facts`` gives it (the same fingerprint and key
    description as ``kmod_build.signing``)."""

    def __init__(self, path, der):
        self.path = path
        self.der = der
        try:
            facts = _signing.certificate_facts(der)
        except _signing.SigningError:
            facts = {"cert_sha256": hashlib.sha256(der).hexdigest(), "subject": None, "skid": None,
                     "key_description": None}
        self.sha256 = facts["cert_sha256"]
        self.subject = facts["subject"]
        self.skid = facts["skid"] or None
        self.key_description = facts["key_description"] if self.skid else None

    def to_dict(self):
        return {"path": self.path, "sha256": self.sha256, "subject": self.subject,
                "key_description": self.key_description}


def read_certificates(path):
    """The certificates of a PEM file (every ``CERTIFICATE`` block) or of a
    DER file, as ``Certificate`` objects."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except (IOError, OSError) as exc:
        raise SecureBootError("cannot read the certificate %s: %s" % (path, exc))
    blocks = _PEM_RE.findall(data)
    if blocks:
        try:
            ders = [base64.b64decode(b"".join(block.split())) for block in blocks]
        except (binascii.Error, TypeError, ValueError) as exc:
            raise SecureBootError("%s: a PEM certificate block is not base64: %s" % (path, exc))
    elif data[:1] == b"\x30":  # DER: an ASN.1 SEQUENCE
        ders = [data]
    else:
        raise SecureBootError("%s is neither a PEM nor a DER certificate" % path)
    return [Certificate(path, der) for der in ders]


# --------------------------------------------------------------------------
# Where the parts are


def _first_existing(pairs):
    for pair in pairs:
        if all(os.path.isfile(p) for p in pair):
            return pair
    return None


def firmware_pair(code=None, variables=None, pairs=FIRMWARE_PAIRS):
    """``(code, vars)``: the given files, else the first pair of ``pairs``
    that exists (a given code file takes the vars of its pair)."""
    if code is None and variables is None:
        found = _first_existing(pairs)
        if found is None:
            raise SecureBootError(
                "no OVMF Secure Boot firmware on the controller (looked for %s); install ovmf (Debian/Ubuntu) or "
                "edk2-ovmf (Fedora/RHEL), or set secure_boot_firmware.code and .vars"
                % ", ".join("%s + %s" % pair for pair in pairs))
        return found
    if code is None or variables is None:
        given = code or variables
        partner = [pair for pair in pairs if given in pair]
        if not partner:
            raise SecureBootError("secure_boot_firmware: set both code and vars (only %s is given)" % given)
        code, variables = partner[0]
    for path in (code, variables):
        if not os.path.isfile(path):
            raise SecureBootError("secure_boot_firmware: %s does not exist" % path)
    return code, variables


def controller_bootloader(shim=None, grub=None, pairs=CONTROLLER_BOOTLOADERS):
    """``(shim, grub)`` of the controller: the given files, else the first
    pair of ``pairs`` that exists; None when there is none."""
    if shim or grub:
        if not (shim and grub):
            raise SecureBootError("secure_boot_bootloader: set both shim and grub (only %s is given)" % (shim or grub))
        for path in (shim, grub):
            if not os.path.isfile(path):
                raise SecureBootError("secure_boot_bootloader: %s does not exist" % path)
        return shim, grub
    return _first_existing(pairs)


def image_bootloader(rootfs, patterns=IMAGE_BOOTLOADERS):
    """``(shim, grub)`` paths relative to ``rootfs`` of the image's own
    signed shim and grub (of the same EFI vendor directory), or None."""
    for shim_glob, grub_pattern in patterns:
        for shim in sorted(glob.glob(os.path.join(rootfs, shim_glob))):
            vendor = os.path.basename(os.path.dirname(shim))
            if vendor.upper() == "BOOT":
                continue
            grubs = sorted(glob.glob(os.path.join(rootfs, grub_pattern.format(vendor=glob.escape(vendor)))))
            if os.path.isfile(shim) and grubs and os.path.isfile(grubs[-1]):
                return os.path.relpath(shim, rootfs), os.path.relpath(grubs[-1], rootfs)
    return None


def keep_image_file(path):
    """Whether a layer file (relative path) is one of the image's EFI
    binaries the Secure Boot boot may use."""
    return path.startswith(IMAGE_EFI_PREFIXES) and os.path.basename(path) in IMAGE_EFI_NAMES


_GRUB_PREFIX_RE = re.compile(br"\x03\x00\x00\x00[\x00-\xff]\x00\x00\x00(/[\x21-\x7e]+)\x00")
_EFI_VENDOR_RE = re.compile(r"(?:^|/)EFI/([^/]+)/[^/]+$", re.I)


def grub_prefix(grub_path, data=None):
    """The directory of the ESP grub reads ``grub.cfg`` from, e.g.
    ``/EFI/debian``: grub's embedded prefix (its OBJ_TYPE_PREFIX module), else
    the EFI vendor directory grub sits in, else ``/EFI/BOOT``."""
    if data is None:
        with open(grub_path, "rb") as handle:
            data = handle.read()
    match = _GRUB_PREFIX_RE.search(data)
    if match:
        prefix = match.group(1).decode("ascii")
        if prefix.startswith("/EFI/"):
            return prefix.rstrip("/")
    match = _EFI_VENDOR_RE.search(grub_path)
    if match and match.group(1).upper() != "BOOT":
        return "/EFI/" + match.group(1)
    return "/EFI/BOOT"


# --------------------------------------------------------------------------
# The ESP, the vars, the machine

KERNEL_ON_ESP = "kmod-layering/vmlinuz"
INITRD_ON_ESP = "kmod-layering/initramfs.img"


def grub_cfg(cmdline):
    """grub.cfg: boot the image's kernel with the test's initramfs at once."""
    return ("set timeout=0\n"
            "echo 'KMOD_LAYERING:GRUB loading the kernel'\n"
            "linux /%s %s\n"
            "initrd /%s\n"
            "boot\n" % (KERNEL_ON_ESP, cmdline, INITRD_ON_ESP))


def esp_layout(shim, grub, prefix, kernel, initrd, cmdline):
    """``[(ESP path, source file path or bytes)]``: shim as the removable
    media boot loader (``EFI/BOOT/BOOTX64.EFI``), grub beside it (shim loads
    ``grubx64.efi`` from its own directory), grub.cfg in grub's prefix
    directory and beside grub, the kernel and the initramfs."""
    cfg = grub_cfg(cmdline).encode()
    layout = [("EFI/BOOT/BOOTX64.EFI", shim), ("EFI/BOOT/grubx64.efi", grub), ("EFI/BOOT/grub.cfg", cfg)]
    prefix_dir = prefix.strip("/")
    if prefix_dir.upper() != "EFI/BOOT":
        layout.append((prefix_dir + "/grub.cfg", cfg))
    layout += [(KERNEL_ON_ESP, kernel), (INITRD_ON_ESP, initrd)]
    return layout


def esp_size_kib(sizes):
    """FAT image size (KiB) for files of ``sizes`` bytes: room for the FAT
    and slack, at least 64 MiB (FAT32)."""
    total = sum(sizes)
    return max(64 * 1024, (total * 11 // 10) // 1024 + 16 * 1024)


def esp_commands(image, layout, staged, size_kib):
    """The commands writing the ESP ``image``: ``layout`` as from
    ``esp_layout``, ``staged`` maps an ESP path whose content is bytes to the
    file it was written to."""
    commands = [["mkfs.fat", "-C", "-F", "32", "-n", "KMODESP", image, str(size_kib)]]
    dirs = []
    for dest, _source in layout:
        parts = dest.split("/")[:-1]
        for index in range(1, len(parts) + 1):
            sub = "::/" + "/".join(parts[:index])
            if sub not in dirs:
                dirs.append(sub)
    commands.append(["mmd", "-i", image] + dirs)
    for dest, source in layout:
        path = staged[dest] if isinstance(source, bytes) else source
        commands.append(["mcopy", "-i", image, "-o", path, "::/" + dest])
    return commands


def find_virt_fw_vars():
    """``virt-fw-vars`` on PATH or beside the running Python (a venv)."""
    found = shutil.which(VIRT_FW_VARS)
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), VIRT_FW_VARS)
    return beside if os.path.isfile(beside) and os.access(beside, os.X_OK) else None


def vars_command(tool, source, dest, certificate_files):
    """The command writing ``dest``, the VM's copy of the variable store
    ``source`` with ``certificate_files`` (DER) enrolled as MOKs; None when
    there is nothing to enrol (a plain copy does)."""
    if not certificate_files:
        return None
    command = [tool, "-i", source, "-o", dest]
    for path in certificate_files:
        command += ["--add-mok", SHIM_LOCK_GUID, path]
    return command


def qemu_args(code, variables, esp):
    """Machine, firmware and ESP arguments of a Secure Boot boot: q35 with
    SMM (the firmware keeps its variables in SMM), secure pflash, the
    firmware read-only, the VM's own vars, the ESP as a virtio disk."""
    return ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
            "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=%s" % code,
            "-drive", "if=pflash,format=raw,unit=1,file=%s" % variables,
            "-drive", "if=none,id=esp,format=raw,file=%s" % esp,
            "-device", "virtio-blk-pci,drive=esp,bootindex=0"]


def probe_kvm(qemu, smm, runner=subprocess.run, kvm_device="/dev/kvm"):
    """``(usable, reason)``: whether qemu can run a KVM guest here (with
    SMM when ``smm``), asking qemu itself (a paused machine, quit at once)."""
    if not os.path.exists(kvm_device):
        return False, "no %s on this host" % kvm_device
    if not os.access(kvm_device, os.R_OK | os.W_OK):
        return False, "%s is not readable and writable by this user" % kvm_device
    machine = "q35,smm=on" if smm else "q35"
    try:
        proc = runner([qemu, "-accel", "kvm", "-machine", machine, "-nodefaults", "-display", "none",
                       "-monitor", "stdio", "-S"], input=b"quit\n", stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, "qemu could not start a KVM machine: %s" % exc
    errors = proc.stderr.decode("utf-8", "replace") if isinstance(proc.stderr, bytes) else (proc.stderr or "")
    if smm and _SMM_MISSING in errors:
        return False, ("KVM here has no SMM (System Management Mode), which the Secure Boot firmware needs "
                       "(nested virtualization usually lacks it)")
    if proc.returncode != 0:
        last = [line for line in errors.splitlines() if line.strip() and "warning:" not in line]
        return False, "qemu could not start a KVM machine: %s" % (last[-1] if last else "exit %d" % proc.returncode)
    return True, None


def choose_accelerator(requested, secure_boot, probe):
    """``(accelerator, note)``: ``requested`` is tcg, kvm or auto; ``probe``
    is ``probe_kvm`` bound to qemu (called with ``smm``) and only called
    when KVM is wanted. KVM that cannot run the machine falls back to TCG
    with a note saying why (never a failure)."""
    if requested == "tcg":
        return "tcg", None
    usable, reason = probe(secure_boot)
    if usable:
        return "kvm", None
    return "tcg", "%s: booted under TCG instead of KVM" % reason


class SecureBootSetup:
    """The Secure Boot parts of one boot test, resolved on the controller
    before anything is fetched (so that a missing part fails at once and
    the verdict cache key knows them).

    ``bootloader``: ``auto`` (the image's own shim and grub when it carries
    both, else the controller's), ``image`` (the image's or fail) or
    ``controller``."""

    def __init__(self, certificates=(), firmware_code=None, firmware_vars=None, shim=None, grub=None,
                 bootloader="auto", virt_fw_vars=None):
        self.firmware_code, self.firmware_vars = firmware_pair(firmware_code, firmware_vars)
        self.bootloader = bootloader
        self.controller = controller_bootloader(shim, grub) if bootloader != "image" else None
        if bootloader == "controller" and self.controller is None:
            raise SecureBootError(
                "no signed shim and grub on the controller (looked for %s); install shim-signed and "
                "grub-efi-amd64-signed (Debian/Ubuntu) or shim-x64 and grub2-efi-x64 (Fedora/RHEL), or set "
                "secure_boot_bootloader.shim and .grub" % ", ".join("%s + %s" % p for p in CONTROLLER_BOOTLOADERS))
        self.certificates = []
        for path in certificates or ():
            self.certificates.extend(read_certificates(path))
        self.virt_fw_vars = virt_fw_vars or find_virt_fw_vars()
        if self.certificates and not self.virt_fw_vars:
            raise SecureBootError("virt-fw-vars is needed to enrol secure_boot_certificates: install the Python "
                                  "package virt-firmware (pip) or python3-virt-firmware (Fedora/RHEL)")
        # Filled by prepare():
        self.shim = self.grub = self.prefix = None
        self.shim_source = self.grub_source = None
        self.esp = self.vars = None

    def cache_key(self):
        """What a cached verdict depends on besides the image and modules."""
        key = {"certificates": sorted(c.sha256 for c in self.certificates),
               "firmware": [sha256_file(self.firmware_code), sha256_file(self.firmware_vars)],
               "bootloader": self.bootloader}
        if self.controller is not None:
            key["controller_bootloader"] = [sha256_file(p) for p in self.controller]
        return key

    def choose_bootloader(self, rootfs):
        """Which shim and grub boot ``rootfs``'s kernel (fills ``shim``,
        ``grub``, their ``*_source`` and grub's ``prefix``)."""
        own = image_bootloader(rootfs) if self.bootloader != "controller" else None
        if own is not None:
            self.shim, self.grub = [os.path.join(rootfs, p) for p in own]
            self.shim_source, self.grub_source = ["image:/" + p for p in own]
        elif self.bootloader == "image":
            raise SecureBootError("the image carries no signed shim and grub (looked for /%s) and "
                                  "secure_boot_bootloader.source is image"
                                  % ", /".join(shim for shim, _grub in IMAGE_BOOTLOADERS))
        elif self.controller is None:
            raise SecureBootError(
                "the image carries no signed shim and grub and the controller has none either (looked for %s); "
                "install shim-signed and grub-efi-amd64-signed (Debian/Ubuntu) or shim-x64 and grub2-efi-x64 "
                "(Fedora/RHEL), or set secure_boot_bootloader.shim and .grub"
                % ", ".join("%s + %s" % p for p in CONTROLLER_BOOTLOADERS))
        else:
            self.shim, self.grub = self.controller
            self.shim_source, self.grub_source = "controller:" + self.shim, "controller:" + self.grub
        self.prefix = grub_prefix(self.grub)

    def prepare(self, workdir, rootfs, kernel, initrd, cmdline, runner=subprocess.run):
        """Write the ESP and the VM's vars in ``workdir``; returns qemu's
        machine/firmware/disk arguments."""
        self.choose_bootloader(rootfs)
        layout = esp_layout(self.shim, self.grub, self.prefix, kernel, initrd, cmdline)
        staged = {}
        sizes = []
        for dest, source in layout:
            if isinstance(source, bytes):
                staged[dest] = os.path.join(workdir, "esp-" + dest.replace("/", "_"))
                with open(staged[dest], "wb") as handle:
                    handle.write(source)
                sizes.append(len(source))
            else:
                sizes.append(os.path.getsize(source))
        self.esp = os.path.join(workdir, "esp.img")
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        for command in esp_commands(self.esp, layout, staged, esp_size_kib(sizes)):
            _run(command, runner, env=env, what="writing the ESP")
        self.vars = os.path.join(workdir, "vars.fd")
        cert_files = []
        for index, cert in enumerate(self.certificates):
            cert_files.append(os.path.join(workdir, "mok-%d.der" % index))
            with open(cert_files[-1], "wb") as handle:
                handle.write(cert.der)
        command = vars_command(self.virt_fw_vars, self.firmware_vars, self.vars, cert_files)
        if command is None:
            shutil.copyfile(self.firmware_vars, self.vars)
        else:
            _run(command, runner, what="enrolling the certificates as MOKs")
        return qemu_args(self.firmware_code, self.vars, self.esp)

    def to_dict(self):
        return {"firmware": {"code": self.firmware_code, "vars": self.firmware_vars},
                "shim": self.shim_source, "grub": self.grub_source, "grub_prefix": self.prefix,
                "certificates": [c.to_dict() for c in self.certificates]}


def _run(command, runner, env=None, what="running"):
    try:
        proc = runner(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, check=False)
    except OSError as exc:
        raise SecureBootError("%s: cannot run %s: %s (install mtools and dosfstools for the ESP)"
                              % (what, command[0], exc))
    if proc.returncode != 0:
        output = proc.stdout.decode("utf-8", "replace") if isinstance(proc.stdout, bytes) else (proc.stdout or "")
        raise SecureBootError("%s: %s exited %d: %s"
                              % (what, " ".join(command), proc.returncode, output.strip()[-1000:]))
