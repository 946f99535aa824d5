"""Fast-mode lab nodes: decide without booting whether the image's boot-time
modules would load (moved here from the product: only the lab uses it).

The load list and the modprobe.d options are the lab's own reading
(`nodeboot.load_list`, `nodeboot.ModprobeConf`); each module of the list and
its modules.dep dependencies must exist and pass the kernel loader's checks
(kernel/module/version.c, main.c): without CONFIG_MODVERSIONS the whole
`vermagic` (ELF `.modinfo`) must equal the kernel's; with it the release
part is skipped and the CRCs of the symbols the module imports (`__versions`,
`module_layout` first) must equal the kernel's, read from the `__versions`
of its in-tree modules (same build). It cannot foresee what a module does
once loaded (a panic in its init): qemu mode can.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import ssl
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from . import nodeboot, secureboot


def _sections(data: bytes) -> dict[str, bytes]:
    """Section name -> bytes of a 64-bit little-endian ELF (a .ko)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("not a 64-bit ELF file")
    shoff = struct.unpack_from("<Q", data, 40)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 58)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    if not headers:
        return {}
    names_at = headers[shstrndx][4]
    result = {}
    for header in headers:
        start = names_at + header[0]
        name = data[start:data.index(b"\0", start)].decode("ascii", "replace")
        result[name] = data[header[4]:header[4] + header[5]]
    return result


def parse_modinfo(data: bytes) -> list[tuple[str, str]]:
    """(key, value) pairs of a module's `.modinfo` (vermagic, depends, parmtype...)."""
    section = _sections(data).get(".modinfo")
    if section is None:
        raise ValueError("no .modinfo section")
    pairs = []
    for item in section.split(b"\0"):
        if b"=" in item:
            key, _sep, value = item.decode("utf-8", "replace").partition("=")
            pairs.append((key, value))
    return pairs


def parse_versions(data: bytes) -> dict[str, int]:
    """`__versions` (struct modversion_info: 8-byte CRC, 56-byte name) -> {symbol: crc}."""
    section = _sections(data).get("__versions") or b""
    versions = {}
    for offset in range(0, len(section) - 63, 64):
        crc = struct.unpack_from("<Q", section, offset)[0] & 0xFFFFFFFF
        name = section[offset + 8:offset + 64].split(b"\0", 1)[0].decode("ascii", "replace")
        if name:
            versions[name] = crc
    return versions


def read_module(path: str) -> bytes:
    data = Path(path).read_bytes()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        raise ValueError("zstd-compressed module (no zstd in the Python standard library)")
    return data


# include/linux/module_signature.h
MODULE_SIG_STRING = b"~Module signature appended~\n"
PKEY_ID_PKCS7 = 2
# struct module_signature { u8 algo, hash, id_type, signer_len, key_id_len; u8 __pad[3]; __be32 sig_len; }
MODULE_SIGNATURE = struct.Struct(">BBBBB3xI")


@dataclass(frozen=True)
class ModuleSignature:
    """A module's appended signature (kernel/module/signing.c, module_signature.c)."""

    content: bytes  # the module without the signature: what the PKCS#7 signs
    pkcs7: bytes  # DER PKCS#7 (id_type PKEY_ID_PKCS7; signer, hash, key id live inside it)
    id_type: int


def split_signature(data: bytes) -> tuple[bytes, ModuleSignature | None]:
    """(module without its signature, the signature or None): the kernel's
    module_sig_check reading -- the marker at the very end, before it the
    12-byte struct module_signature whose big-endian sig_len counts the
    PKCS#7 bytes before that."""
    if not data.endswith(MODULE_SIG_STRING):
        return data, None
    end = len(data) - len(MODULE_SIG_STRING)
    if end < MODULE_SIGNATURE.size:
        return data, None
    algo, hash_, id_type, signer_len, key_id_len, sig_len = MODULE_SIGNATURE.unpack_from(
        data, end - MODULE_SIGNATURE.size)
    start = end - MODULE_SIGNATURE.size - sig_len
    if start < 0 or (id_type == PKEY_ID_PKCS7 and (algo or hash_ or signer_len or key_id_len)):
        # mod_check_sig: a PKCS#7 signature keeps the other fields zero.
        return data, None
    return data[:start], ModuleSignature(content=data[:start], pkcs7=data[start:start + sig_len], id_type=id_type)


def signature_verdict(data: bytes, trusted_certs: Iterable[bytes]) -> str:
    """What mod_verify_sig makes of a module against the kernel's trusted
    keys (DER certificates): `unsigned` (-ENODATA), `unavailable key`
    (-ENOKEY: no trusted key matches the signer), `bad` (-EKEYREJECTED,
    -EBADMSG...: fatal even without enforcement) or `ok`. The PKCS#7 is
    verified by openssl's CLI against each trusted certificate alone
    (`cms -verify -binary -inform DER -content <module> -certfile <cert>
    -nointern -noverify`: only that certificate can be the signer, its
    chain is not the question -- the kernel trusts the key itself)."""
    content, signature = split_signature(data)
    if signature is None:
        return "unsigned"
    if signature.id_type != PKEY_ID_PKCS7:
        return "bad"
    certs = list(trusted_certs)
    if not certs:
        return "unavailable key"
    with tempfile.TemporaryDirectory(prefix="kmodlab-sig-") as scratch:
        sig_path, content_path = Path(scratch) / "sig.p7", Path(scratch) / "module"
        sig_path.write_bytes(signature.pkcs7)
        content_path.write_bytes(content)
        for index, der in enumerate(certs):
            cert_path = Path(scratch) / f"cert-{index}.pem"
            cert_path.write_text(ssl.DER_cert_to_PEM_cert(der))
            done = subprocess.run(
                ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(sig_path), "-content",
                 str(content_path), "-certfile", str(cert_path), "-nointern", "-noverify",
                 "-out", os.devnull],
                capture_output=True, text=True, check=False, timeout=60)
            if done.returncode == 0:
                return "ok"
            if "digest failure" in done.stderr or "signature failure" in done.stderr:
                return "bad"  # the signer's key matched and the module does not: EKEYREJECTED
    return "unavailable key"


def vermagic_release(vermagic: str) -> str:
    return vermagic.split()[0] if vermagic.split() else ""


class Image:
    """An unpacked image's kernel, modules.dep and module files."""

    def __init__(self, rootfs: str) -> None:
        self.rootfs = rootfs
        self.kernel, self.moddir = nodeboot.find_kernel(rootfs)
        top = os.path.join(rootfs, self.moddir)

        def text(name: str) -> str:
            path = os.path.join(top, name)
            return Path(path).read_text(errors="replace") if os.path.isfile(path) else ""

        self.dep = nodeboot.read_modules_dep(text("modules.dep"))
        self.aliases = [(w[1], w[2].replace("-", "_")) for w in (line.split() for line in text("modules.alias").splitlines())
                        if len(w) == 3 and w[0] == "alias"]
        self.builtin = {nodeboot.module_name(p) for p in text("modules.builtin").split()}
        self.conf = nodeboot.ModprobeConf.read(rootfs)
        self._vermagic: str | None = None
        self._vermagic_read = False
        self._crcs: dict[str, int] = {}
        self._unread: list[str] | None = None

    def path(self, name: str) -> str:
        return os.path.join(self.rootfs, self.moddir, self.dep[name][0])

    def chain(self, name: str) -> list[str]:
        """Modules to load for `name` (a name or alias), dependencies first."""
        import fnmatch

        key = name.replace("-", "_")
        targets = [key] if key in self.dep else [
            m for pattern, m in self.conf.aliases + self.aliases if fnmatch.fnmatchcase(name, pattern) and m in self.dep]
        if not targets:
            raise KeyError(name)
        ordered: list[str] = []
        for target in targets:
            for dependency in reversed(self.dep[target][1]):  # the deepest dependency comes last in modules.dep
                if nodeboot.module_name(dependency) not in ordered:
                    ordered.append(nodeboot.module_name(dependency))
            if target not in ordered:
                ordered.append(target)
        return ordered

    def _in_tree(self) -> list[str]:
        return sorted(path for path, _deps in self.dep.values() if path.startswith("kernel/"))

    def kernel_vermagic(self) -> str | None:
        """The kernel's vermagic, as its in-tree modules carry it."""
        if not self._vermagic_read:
            self._vermagic_read = True
            for rel in self._in_tree()[:5]:
                try:
                    info = dict(parse_modinfo(read_module(os.path.join(self.rootfs, self.moddir, rel))))
                except (OSError, ValueError):
                    continue
                if info.get("vermagic"):
                    self._vermagic = info["vermagic"]
                    break
        return self._vermagic

    def kernel_crcs(self, symbols: list[str]) -> dict[str, int]:
        """The kernel build's CRCs of `symbols`, from in-tree modules' `__versions`."""
        if self._unread is None:
            self._unread = self._in_tree()
        wanted = set(symbols) - set(self._crcs)
        while wanted and self._unread:
            rel = self._unread.pop(0)
            try:
                versions = parse_versions(read_module(os.path.join(self.rootfs, self.moddir, rel)))
            except (OSError, ValueError):
                continue
            for symbol, crc in versions.items():
                self._crcs.setdefault(symbol, crc)
            wanted -= set(versions)
        return {s: self._crcs[s] for s in symbols if s in self._crcs}

    def refusal(self, name: str, data: bytes) -> str | None:
        """Why the kernel would refuse module `name`, in its words, or None."""
        vermagic = dict(parse_modinfo(data)).get("vermagic", "")
        versions = parse_versions(data)
        kernel_magic = self.kernel_vermagic()
        if kernel_magic is None:
            if vermagic_release(vermagic) != self.kernel:
                return f"{name}: version magic '{vermagic}' should be '{self.kernel}'"
            return None
        same = vermagic.split()[1:] == kernel_magic.split()[1:] if versions else vermagic.split() == kernel_magic.split()
        if not same:
            return f"{name}: version magic '{vermagic}' should be '{kernel_magic}'"
        crcs = self.kernel_crcs(list(versions))
        for symbol in ["module_layout"] + sorted(versions):
            if symbol in versions and symbol in crcs and crcs[symbol] != versions[symbol]:
                return f"{name}: disagrees about version of symbol {symbol}"
        return None

    def declared_options(self, name: str) -> dict[str, str]:
        """modprobe.d options of `name` that it declares (`parmtype`): the
        kernel ignores unknown parameters, so /sys/module shows only these."""
        options = dict(self.conf.options.get(name) or {})
        try:
            info = parse_modinfo(read_module(self.path(name)))
        except (OSError, ValueError, KeyError):
            return options
        declared = {value.split(":", 1)[0] for key, value in info if key == "parmtype"}
        return {k: v for k, v in options.items() if k in declared}


# kernel/panic.c taint_flags: the module taints, by bit; /sys/module/<m>/taint lists them in bit order.
TAINT_OOT_MODULE, TAINT_UNSIGNED_MODULE = 12, 13
MODULE_TAINT_LETTERS = ((TAINT_OOT_MODULE, "O"), (TAINT_UNSIGNED_MODULE, "E"))
KEY_REJECTED = "Key was rejected by service"  # strerror(EKEYREJECTED), what kmod's modprobe prints
# module_sig_check's words (kernel/module/signing.c): "Loading of %s is rejected".
SIG_REASONS = {"unsigned": "unsigned module", "unavailable key": "module with unavailable key"}


def builtin_key(image: Image) -> secureboot.TrustedKey | None:
    """The kernel's own signing key (its .builtin_trusted_keys): the
    certificate built into the kernel whose subject signed its in-tree
    modules (`modinfo` signer: Debian signs them with the build's key)."""
    tool = shutil.which("modinfo") or "/usr/sbin/modinfo"
    for rel in image._in_tree()[:5]:  # noqa: SLF001 - same module
        done = subprocess.run([tool, os.path.join(image.rootfs, image.moddir, rel)], capture_output=True,
                              text=True, check=False, timeout=30)
        fields = dict(line.split(":", 1) for line in done.stdout.splitlines() if ":" in line and line[0] != "\t")
        signer = fields.get("signer", "").strip()
        if signer:
            certs = secureboot.kernel_builtin_certs(os.path.join(image.rootfs, image.moddir, "vmlinuz"), signer)
            return secureboot.TrustedKey.from_der(certs[0]) if certs else None
    return None


def kernel_keyrings(image: Image, secure_boot: secureboot.SecureBootSetup | None) -> dict[str, list[Any]]:
    """The key rings a node's kernel verifies modules with, and their keys
    (certs/system_keyring.c, security/integrity/platform_certs/load_uefi.c):
    `.builtin_trusted_keys` (the build's key), `.machine` (shim's MokListRT:
    its vendor CA, then the enrolled MOKs; only under UEFI), `.platform`
    (the firmware's db), `.secondary_trusted_keys` (links the builtin and
    machine rings). The `.blacklist` (dbx hashes) and per-user rings are
    left out: they hold no key a module can be signed with."""
    builtin = builtin_key(image)
    machine = secureboot.keys_of(secureboot.shim_vendor_certs() + secure_boot.ders()) if secure_boot else []
    platform = secureboot.keys_of(secureboot.firmware_db_certs()) if secure_boot else []
    return {".builtin_trusted_keys": [builtin] if builtin else [], ".machine": machine, ".platform": platform,
            ".secondary_trusted_keys": [".builtin_trusted_keys", ".machine"]}


def module_taint(info: list[tuple[str, str]], verdict: str) -> str:
    """/sys/module/<m>/taint of a loaded module: O without `intree=Y`
    (kernel/module/main.c check_modinfo), E when its signature was not
    verified (module_sig_check let it in unenforced)."""
    bits = set()
    if ("intree", "Y") not in info:
        bits.add(TAINT_OOT_MODULE)
    if verdict != "ok":
        bits.add(TAINT_UNSIGNED_MODULE)
    return "".join(letter for bit, letter in MODULE_TAINT_LETTERS if bit in bits)


def evaluate(rootfs: str, secure_boot: secureboot.SecureBootSetup | None = None) -> nodeboot.NodeBoot:
    """A fast-mode boot: what would load, without booting.

    `secure_boot`: the node boots with UEFI Secure Boot and these MOKs
    enrolled; the kernel is then locked down (Debian's lockdown patches:
    integrity, sig_enforce=Y) and module_sig_check refuses a module it
    cannot verify against `.machine` (shim's CA + the MOKs) or the kernel's
    own key: unsigned, or signed by a key it does not hold. Without Secure
    Boot such a module loads and taints the kernel (E)."""
    started = time.monotonic()
    image = Image(rootfs)
    result = nodeboot.NodeBoot(expected_kernel=image.kernel, mode="fast", kernel=image.kernel)
    result.requested = nodeboot.load_list(rootfs)
    trusted = (secureboot.shim_vendor_certs() + secure_boot.ders()) if secure_boot else []
    loaded: list[str] = []
    verdicts: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    for name in result.requested:
        key = name.replace("-", "_")
        if key in image.builtin:
            continue
        if key in image.conf.blacklist:  # systemd-modules-load: KMOD_PROBE_APPLY_BLACKLIST
            result.failures.append(f"module {name} not loaded: deny-listed (blacklist in modprobe.d)")
            continue
        try:
            chain = image.chain(name)
        except KeyError:
            result.failures.append(f"module {name} not loaded: Module {name} not found in directory "
                                   f"/lib/modules/{image.kernel}")
            continue
        refused = None
        for mod in chain:
            if mod in loaded:
                continue
            try:
                data = read_module(image.path(mod))
            except (OSError, ValueError) as exc:
                refused = f": {mod}: {exc} (Exec format error)"
                break
            in_tree = image.dep[mod][0].startswith("kernel/")
            # The kernel's own modules carry its build key's signature: not re-verified here.
            verdict = ("ok" if split_signature(data)[1] else "unsigned") if in_tree else signature_verdict(data, trusted)
            if verdict == "bad" or (secure_boot is not None and verdict != "ok"):
                # module_sig_check runs before any other check of the module.
                words = [f"modprobe: ERROR: could not insert '{key}': {KEY_REJECTED}"]
                if verdict in SIG_REASONS:
                    words.append(f"Loading of {SIG_REASONS[verdict]} is rejected")
                result.refused[name] = words
                refused = "(modprobe exit 1): " + "; ".join(words)
                break
            if not in_tree:  # in-tree: built with the kernel
                try:
                    refused = image.refusal(mod, data)
                except ValueError as exc:
                    refused = f"{mod}: {exc}"
                if refused:
                    refused = f": {refused} (Exec format error)"
                    result.refused[name] = [refused[2:]]
                    break
            loaded.append(mod)
            try:
                verdicts[mod] = (verdict, parse_modinfo(data))
            except ValueError:
                verdicts[mod] = (verdict, [])
            if mod in image.conf.options:
                result.params[mod] = image.declared_options(mod)
        if refused:
            result.failures.append(f"module {name} not loaded{refused}")
    result.loaded = loaded
    result.taint = {m: module_taint(verdicts[m][1], verdicts[m][0]) for m in loaded}
    result.proc_modules = [f"{m} 16384 0 - Live 0x0000000000000000" + (f" ({result.taint[m]})" if result.taint[m] else "")
                           for m in loaded]
    tainted = 0
    for taint in result.taint.values():
        tainted |= sum(1 << bit for bit, letter in MODULE_TAINT_LETTERS if letter in taint)
    result.tainted = tainted
    result.secure_boot = "enabled" if secure_boot else "no-efi"
    result.lockdown = secureboot.LOCKDOWN_INTEGRITY if secure_boot else secureboot.LOCKDOWN_NONE
    result.sig_enforce = "Y" if secure_boot else "N"
    result.keys = secureboot.proc_keys_lines(kernel_keyrings(image, secure_boot))
    result.completed = True
    result.tools = {"evaluation": "kmodlab.fastboot"}
    result.duration = time.monotonic() - started
    return result
