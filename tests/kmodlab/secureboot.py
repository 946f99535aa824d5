"""Lab nodes with UEFI Secure Boot: the firmware, the ESP and the MOKs.

A Secure Boot lab node boots through Debian's real chain, each piece
signed: OVMF's Secure Boot firmware (`OVMF_CODE_4M.secboot.fd`, needs
`-machine q35,smm=on` and the secure pflash, OVMF's README) with a copy of
`OVMF_VARS_4M.ms.fd` (Microsoft's keys enrolled, Secure Boot on) -> shim
(`shimx64.efi.signed`, signed by Microsoft, carries Debian's CA) -> grub
(`grubx64.efi.signed`, its prefix is /EFI/debian) -> the image's own
Debian-signed kernel, with the lab's node initramfs (nodeboot.py; shim's
lock verifies the kernel, not the initrd). The lab's certificates are
enrolled as Machine Owner Keys beforehand: `virt-fw-vars --add-mok
<shim's lock GUID> <cert.der>` writes shim's `MokList` variable (virt-firmware's
docs); shim 16 mirrors it to `MokListRT` with `MokListTrustedRT`, so the
kernel puts the MOKs into its `.machine` key ring, trusted for module
signatures (CONFIG_INTEGRITY_MACHINE_KEYRING,
security/integrity/platform_certs/load_uefi.c).

The ESP is a bare FAT file system (no partition table: OVMF reads it as a
removable medium) made with mkfs.vfat and mtools: `EFI/BOOT/BOOTX64.EFI` =
shim (the removable-media path of the UEFI spec), `EFI/BOOT/grubx64.efi`
(shim loads grub from its own directory), `EFI/debian/grub.cfg`, the kernel
and the initramfs.

Also what the kernel of such a node holds without booting it (fast mode,
debug pods of never-rebooted nodes): the key descriptions and /proc/keys
lines of its trusted keys, from the certificates themselves (the kernel's
x509_public_key.c / asymmetric_type.c / security/keys/proc.c formats) and
the CA that shim carries (shim's `.vendor_cert` section, shim's cert.S).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import paths

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_VARS_MS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
GRUB = Path("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
# shim's lock protocol GUID: the vendor GUID of MokList and friends (shim's include/guid.h SHIM_LOCK_GUID).
SHIM_LOCK_GUID = "605dab50-e046-4300-abb6-3dd810dd8b23"
# EFI_GLOBAL_VARIABLE (UEFI spec 3.3): SecureBoot, SetupMode, PK, KEK...
EFI_GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SECURE_BOOT_VAR = f"SecureBoot-{EFI_GLOBAL_GUID}"
# /sys/kernel/security/lockdown as security/lockdown/lockdown.c prints it.
LOCKDOWN_NONE = "[none] integrity confidentiality"
LOCKDOWN_INTEGRITY = "none [integrity] confidentiality"
# The node's initramfs also needs this module (a module in Debian's cloud kernel) to read EFI variables.
EFIVARFS = "efivarfs"


class SecureBootError(RuntimeError):
    """A Secure Boot node cannot be prepared (a missing package, a bad certificate)."""


@dataclasses.dataclass(frozen=True)
class SecureBootSetup:
    """How a Secure Boot lab node is set up: the certificates (PEM or DER
    files) enrolled as MOKs; none enrolled is a node that trusts only the
    distribution's keys."""

    enrolled_certs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "enrolled_certs", tuple(str(c) for c in self.enrolled_certs))

    def ders(self) -> list[bytes]:
        return [cert_der(Path(path)) for path in self.enrolled_certs]

    def to_dict(self) -> dict[str, list[str]]:
        return {"enrolled_certs": list(self.enrolled_certs)}


def cert_der(path: Path) -> bytes:
    """A certificate file (PEM or DER) as DER."""
    data = Path(path).read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    try:
        x509.load_der_x509_certificate(data)
    except ValueError as error:
        raise SecureBootError(f"{path}: not a PEM or DER certificate: {error}") from error
    return data


def missing_parts() -> list[str]:
    """What this machine lacks to boot a Secure Boot node (empty: nothing)."""
    missing = [str(p) for p in (OVMF_CODE, OVMF_VARS_MS, SHIM, GRUB) if not p.is_file()]
    missing += [tool for tool in ("mkfs.vfat", "mcopy", "mmd") if not _which(tool)]
    if not _virt_fw_vars():
        missing.append("virt-fw-vars (PyPI virt-firmware)")
    return missing


def _which(tool: str) -> str | None:
    return shutil.which(tool) or next((f"{d}/{tool}" for d in ("/usr/sbin", "/sbin") if os.path.isfile(f"{d}/{tool}")),
                                      None)


def _virt_fw_vars() -> str | None:
    beside = Path(sys.executable).parent / "virt-fw-vars"
    return str(beside) if beside.is_file() else shutil.which("virt-fw-vars")


# --------------------------------------------------------------- firmware variables


def prepared_vars(setup: SecureBootSetup, cache: Path | None = None) -> Path:
    """OVMF_VARS_4M.ms.fd with `setup`'s MOKs enrolled, cached by the set
    of certificates (and the template): read-only, copy it per node."""
    ders = setup.ders()
    digest = hashlib.sha256(OVMF_VARS_MS.read_bytes())
    for der in sorted(ders):
        digest.update(hashlib.sha256(der).digest())
    cache = cache or paths.cache_dir() / "secureboot"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"vars-{digest.hexdigest()[:16]}.fd"
    if target.is_file():
        return target
    tool = _virt_fw_vars()
    if tool is None:
        raise SecureBootError("virt-fw-vars (PyPI virt-firmware) is not installed")
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        work = Path(scratch) / "vars.fd"
        shutil.copyfile(OVMF_VARS_MS, work)
        argv = [tool, "--inplace", str(work)]
        for index, der in enumerate(sorted(ders)):
            der_path = Path(scratch) / f"mok-{index}.der"
            der_path.write_bytes(der)
            argv += ["--add-mok", SHIM_LOCK_GUID, str(der_path)]
        if ders:
            done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
            if done.returncode != 0:
                raise SecureBootError(f"virt-fw-vars failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        os.replace(work, target)  # atomic: concurrent nodes see a whole file or none
    return target


def node_vars(setup: SecureBootSetup, dest: Path) -> Path:
    """A writable per-node copy of the prepared variables (the firmware writes to it)."""
    shutil.copyfile(prepared_vars(setup), dest)
    return dest


# --------------------------------------------------------------- the ESP


def grub_cfg(cmdline: str) -> str:
    """What grub runs: no menu, the kernel and initramfs from the ESP's root."""
    return f"set timeout=0\nlinux /vmlinuz {cmdline}\ninitrd /initrd.img\nboot\n"


def make_esp(kernel: Path, initrd: Path, cmdline: str, out: Path) -> Path:
    """A FAT image holding shim, grub, grub.cfg, the kernel and the initramfs."""
    payload = sum(p.stat().st_size for p in (kernel, initrd, SHIM, GRUB))
    size_kb = ((payload * 5 // 4) // 1024 // 1024 + 4) * 1024
    out.unlink(missing_ok=True)
    run = {"env": dict(os.environ, MTOOLS_SKIP_CHECK="1"), "capture_output": True, "text": True, "timeout": 60}
    done = subprocess.run([_which("mkfs.vfat") or "mkfs.vfat", "-C", "-n", "KMODLAB", str(out), str(size_kb)],
                          check=False, **run)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise SecureBootError(f"mkfs.vfat failed: {done.stderr.strip()}")
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as cfg:
        cfg.write(grub_cfg(cmdline))
    try:
        steps = [["mmd", "-i", str(out), "::/EFI", "::/EFI/BOOT", "::/EFI/debian"]]
        for source, dest in ((SHIM, "/EFI/BOOT/BOOTX64.EFI"), (GRUB, "/EFI/BOOT/grubx64.efi"),
                             (Path(cfg.name), "/EFI/debian/grub.cfg"), (kernel, "/vmlinuz"), (initrd, "/initrd.img")):
            steps.append(["mcopy", "-i", str(out), str(source), "::" + dest])
        for argv in steps:
            done = subprocess.run(argv, check=False, **run)  # type: ignore[call-overload]
            if done.returncode != 0:
                raise SecureBootError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    finally:
        os.unlink(cfg.name)
    return out


def qemu_args(vars_file: Path, esp: Path) -> list[str]:
    """The machine and firmware of a Secure Boot node (TCG: the firmware
    needs SMM, which KVM lacks on these hosts)."""
    return ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_file}",
            "-drive", f"if=virtio,format=raw,file={esp}"]


# --------------------------------------------------------------- the kernel's keys


@dataclasses.dataclass(frozen=True)
class TrustedKey:
    """An X.509 key as the kernel holds it."""

    cn: str  # x509_fabricate_name: the subject's CN (the lab's and Debian's certificates have one)
    skid: str  # subjectKeyIdentifier, lowercase hex
    algo: str = "rsa"

    @property
    def description(self) -> str:
        """x509_key_preparse: `<subject>: <skid hex>`."""
        return f"{self.cn}: {self.skid}"

    @classmethod
    def from_der(cls, der: bytes) -> TrustedKey:
        cert = x509.load_der_x509_certificate(der)
        names = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
        orgs = cert.subject.get_attributes_for_oid(x509.oid.NameOID.ORGANIZATION_NAME)
        cn = str(names[0].value) if names else ""
        org = str(orgs[0].value) if orgs else ""
        # x509_fabricate_name (crypto/asymmetric_keys/x509_cert_parser.c): "O: CN", but the CN alone
        # when it starts with the O or shares its first 7 characters; whichever exists if not both.
        single = cn.startswith(org) or (len(cn) >= 7 and len(org) >= 7 and cn[:7] == org[:7])
        subject = f"{org}: {cn}" if org and cn and not single else (cn or org)
        try:
            skid = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
        except x509.ExtensionNotFound:
            skid = format(cert.serial_number, "x")
            skid = skid.rjust(len(skid) + len(skid) % 2, "0")
        return cls(cn=subject, skid=skid)


def shim_vendor_certs(shim: Path = SHIM) -> list[bytes]:
    """The CA certificates shim is built with (Debian's Secure Boot CA): its
    `.vendor_cert` PE section, `struct cert_table { u32
    vendor_authorized_size, vendor_deauthorized_size,
    vendor_authorized_offset, vendor_deauthorized_offset }` then the data
    (shim's cert.S); the authorized part is one DER certificate."""
    data = shim.read_bytes()
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe:pe + 4] != b"PE\0\0":
        raise SecureBootError(f"{shim}: not a PE image")
    sections, opt_size = struct.unpack_from("<H", data, pe + 6)[0], struct.unpack_from("<H", data, pe + 20)[0]
    symbols_at, symbols = struct.unpack_from("<II", data, pe + 12)
    strings_at = symbols_at + symbols * 18  # COFF: names longer than 8 bytes are "/<offset>" into the string table
    table = pe + 24 + opt_size
    for index in range(sections):
        name, _vsize, _vaddr, raw_size, raw_at = struct.unpack_from("<8sIIII", data, table + index * 40)
        name = name.rstrip(b"\0")
        if name.startswith(b"/") and name[1:].isdigit() and symbols_at:
            start = strings_at + int(name[1:])
            name = data[start:data.index(b"\0", start)]
        if name == b".vendor_cert":
            section = data[raw_at:raw_at + raw_size]
            size, _deny_size, offset, _deny_offset = struct.unpack_from("<IIII", section, 0)
            return [section[offset:offset + size]] if size else []
    return []


def proc_keys_serial(keyring: str, description: str) -> str:
    """A stable stand-in for a key's serial (the kernel's are random, 31-bit)."""
    return format(int(hashlib.sha256(f"{keyring}/{description}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF, "08x")


# Permissions the kernel gives its key rings and the keys it loads into them (certs/system_keyring.c,
# security/integrity/digsig.c: KEY_POS_ALL | KEY_USR_VIEW | ...), as /proc/keys prints them.
KEYRING_PERMS = {".secondary_trusted_keys": "1f0f0000"}
KEY_PERMS = {".builtin_trusted_keys": "1f030000"}


def proc_keys_lines(keyrings: dict[str, Sequence[TrustedKey | str]]) -> list[str]:
    """/proc/keys of the given key rings (their keys, or the names of the
    rings they link), in the kernel's format (security/keys/proc.c
    proc_keys_show: serial, flags, usage, expiry, perm, uid, gid, type,
    description); an asymmetric key described by asymmetric_key_describe
    (`<description>: X509.<algo> <last 4 bytes of its SKID> []`), a key
    ring by keyring_describe (`<name>: <entries>` or `empty`). Sorted by
    serial, as the kernel walks them."""
    lines = []
    for keyring, entries in keyrings.items():
        for key in entries:
            if isinstance(key, TrustedKey):
                lines.append(f"{proc_keys_serial(keyring, key.description)} I------     1 perm "
                             f"{KEY_PERMS.get(keyring, '1f010000')}     0     0 asymmetri "
                             f"{key.description}: X509.{key.algo} {key.skid[-8:]} []")
        lines.append(f"{proc_keys_serial('', keyring)} I------     1 perm {KEYRING_PERMS.get(keyring, '1f0b0000')}"
                     f"     0     0 keyring   {keyring}: {len(entries) if entries else 'empty'}")
    return sorted(lines)


# Compressed payloads of a bzImage (scripts/extract-vmlinux's list): magic, how to decompress from there.
_PAYLOADS = ((b"\x02\x21\x4c\x18", ["lz4", "-dc"]), (b"\xfd7zXZ\x00", ["xz", "-dc"]),
             (b"\x28\xb5\x2f\xfd", ["zstd", "-dc"]), (b"\x1f\x8b\x08", ["gzip", "-dc"]))


@functools.lru_cache(maxsize=8)
def kernel_builtin_certs(vmlinuz: str, signer: str) -> tuple[bytes, ...]:
    """The certificates built into a kernel (its `.builtin_trusted_keys`:
    certs/system_certificates.S `system_certificate_list`, DER one after
    the other) whose subject is `signer`: the vmlinux is unpacked from the
    bzImage as scripts/extract-vmlinux does, then each DER SEQUENCE just
    before the signer's name is tried as a certificate."""
    data = Path(vmlinuz).read_bytes()
    anchor = signer.encode()
    for magic, argv in _PAYLOADS:
        at = data.find(magic)
        if at < 0 or not shutil.which(argv[0]):
            continue
        done = subprocess.run(argv, input=data[at:], capture_output=True, check=False, timeout=120)
        vmlinux = done.stdout  # trailing bytes after the stream make the tool complain: the output is whole
        found: list[bytes] = []
        pos = vmlinux.find(anchor)
        while pos >= 0:
            for start in range(pos - 1, max(0, pos - 1024), -1):
                if vmlinux[start:start + 2] != b"\x30\x82":
                    continue
                length = 4 + int.from_bytes(vmlinux[start + 2:start + 4], "big")
                try:
                    cert = x509.load_der_x509_certificate(vmlinux[start:start + length])
                except ValueError:
                    continue
                der = cert.public_bytes(serialization.Encoding.DER)
                if der not in found and signer in cert.subject.rfc4514_string():
                    found.append(der)
                break
            pos = vmlinux.find(anchor, pos + 1)
        if found:
            return tuple(found)
    return ()


def firmware_db_certs(vars_file: Path = OVMF_VARS_MS) -> list[bytes]:
    """The X.509 certificates of the firmware's `db` (the kernel's
    `.platform` key ring), read with virt-firmware's EDK2 variable store."""
    from virt.firmware.varstore import edk2  # PyPI virt-firmware, in the lab's venv

    db = edk2.Edk2VarStore(str(vars_file)).get_varlist().get("db")
    if db is None or db.sigdb is None:
        return []
    certs = []
    for siglist in db.sigdb:
        if siglist.x509 is not None:
            certs.append(siglist.x509.public_bytes(serialization.Encoding.DER))
    return certs


def keys_of(ders: Iterable[bytes]) -> list[TrustedKey]:
    return [TrustedKey.from_der(der) for der in ders]
