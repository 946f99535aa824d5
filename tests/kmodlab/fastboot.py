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
import struct
import time
from pathlib import Path

from . import nodeboot


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


def evaluate(rootfs: str) -> nodeboot.NodeBoot:
    """A fast-mode boot: what would load, without booting."""
    started = time.monotonic()
    image = Image(rootfs)
    result = nodeboot.NodeBoot(expected_kernel=image.kernel, mode="fast", kernel=image.kernel)
    result.requested = nodeboot.load_list(rootfs)
    loaded: list[str] = []
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
            if not image.dep[mod][0].startswith("kernel/"):  # in-tree: built with the kernel
                try:
                    refused = image.refusal(mod, read_module(image.path(mod)))
                except (OSError, ValueError) as exc:
                    refused = f"{mod}: {exc}"
                if refused:
                    refused += " (Exec format error)"
                    break
            loaded.append(mod)
            if mod in image.conf.options:
                result.params[mod] = image.declared_options(mod)
        if refused:
            result.failures.append(f"module {name} not loaded: {refused}")
    result.loaded = loaded
    result.proc_modules = [f"{m} 16384 0 - Live 0x0000000000000000" for m in loaded]
    result.completed = True
    result.tools = {"evaluation": "kmodlab.fastboot"}
    result.duration = time.monotonic() - started
    return result
