# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boot test for an unpacked OS image: does its kernel come up and do the
modules it asks for (``/etc/modules-load.d``) load, with the options of
``/etc/modprobe.d``?

``boot()`` builds a newc initramfs from the image itself (its module tree
trimmed to the modules named in modules-load.d with their dependencies and
soft dependencies, the depmod indexes the chosen modprobe reads, its
modules-load.d / modprobe.d, its busybox and kmod when present) and boots
the image's own kernel under ``qemu-system-<arch> -accel tcg`` (``MACHINES``:
x86_64 on qemu's default PC machine, console ttyS0; aarch64 on ``-M virt
-cpu cortex-a57``, console ttyAMA0, its kernel an uncompressed ``Image`` or
a gzip'd one, both of which qemu's ``-kernel`` loads). ``/init``
loads the list with ``modprobe -b`` (dependencies, options and the
blacklist apply as with systemd-modules-load) and reports on the serial
console with ``KMOD_LAYERING:`` lines; the console is parsed into a
``BootResult``. /init also reports what the kernel enforces: EFI, the
firmware's ``SecureBoot`` variable, ``/sys/kernel/security/lockdown``,
``sig_enforce``, the key rings of ``/proc/keys`` and the kernel's own words
when it refuses a module (``Loading of unsigned module is rejected``).

With a ``_uefi_boot.SecureBootSetup`` (``boot(secure_boot=...)``) the
machine is q35 with OVMF's Secure Boot firmware and boots shim -> grub -> the
image's kernel from an ESP image instead of ``-kernel``/``-initrd``.

Limits: x86_64 and aarch64 kernels (TCG, no KVM: a boot takes seconds, not
milliseconds); Secure Boot on x86_64 only. Every program of the initramfs is
the image's own, checked to be of its architecture (the host's busybox is
used only for an image of the host's architecture that has none). Compressed modules (``.ko.xz``/``.ko.zst``) load in qemu only
when the modprobe used can decompress them (the image's kmod links liblzma and
libzstd; busybox's modprobe may not). ``install`` lines of modprobe.d are
copied but what they run is not added to the initramfs. KVM
(``accelerator`` kvm/auto) is used only when qemu can run a KVM machine here
(with SMM for Secure Boot), else TCG with a note.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fnmatch
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import time

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _arch, _uefi_boot

MARK = "KMOD_LAYERING:"
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
# systemd-modules-load reads these, earlier directories win for a file name.
MODULES_LOAD_DIRS = ("etc/modules-load.d", "run/modules-load.d", "usr/local/lib/modules-load.d",
                     "usr/lib/modules-load.d", "lib/modules-load.d")
MODPROBE_DIRS = ("etc/modprobe.d", "run/modprobe.d", "usr/local/lib/modprobe.d",
                 "usr/lib/modprobe.d", "lib/modprobe.d")
BUSYBOX_CANDIDATES = ("usr/bin/busybox", "bin/busybox", "usr/sbin/busybox", "sbin/busybox")
KMOD_CANDIDATES = ("usr/bin/kmod", "bin/kmod", "usr/sbin/kmod", "sbin/kmod")
HOST_BUSYBOX = "/bin/busybox"
# How qemu boots a kernel of each architecture (release names): the system
# emulator, its machine and CPU, the kernel's serial console, and the ELF
# e_machine of the programs the initramfs may run.
MACHINES = {
    "x86_64": {"qemu": "qemu-system-x86_64", "machine": [], "console": "ttyS0", "elf_machine": 62},
    "aarch64": {"qemu": "qemu-system-aarch64", "machine": ["-M", "virt", "-cpu", "cortex-a57"],
                "console": "ttyAMA0", "elf_machine": 183},
}
# depmod's indexes each modprobe reads: libkmod opens the binary forms (and
# modules.softdep, modules.builtin.modinfo as text); busybox the text forms.
KMOD_INDEXES = ("modules.dep.bin", "modules.alias.bin", "modules.symbols.bin", "modules.builtin.bin",
                "modules.builtin.alias.bin", "modules.softdep", "modules.builtin.modinfo")
BUSYBOX_INDEXES = ("modules.dep", "modules.alias", "modules.symbols", "modules.builtin", "modules.softdep")
# Debian's multiarch directories of each architecture the boot test boots, then RHEL's and the plain ones.
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu",
            "lib64", "usr/lib64", "lib", "usr/lib")

# Kernel and modprobe messages that mean "this module was refused".
REFUSAL_PATTERNS = (
    "Exec format error",
    "Invalid module format",
    "invalid module format",
    "disagrees about version of symbol",
    "version magic",
    "Unknown symbol",
    "Required key not available",
    "Key was rejected by service",
    "could not insert",
    "can't load module",
    "not found in directory",
    "Module {name} not found",
)
PANIC_PATTERNS = ("Kernel panic - not syncing", "end Kernel panic")
# modprobe/insmod's words (strerror) and the kernel's (kernel/module/signing.c,
# security/lockdown) when module signature enforcement refuses a module.
SIGNATURE_ERRORS = ("Key was rejected by service", "Required key not available")
SIGNATURE_KERNEL_RE = re.compile(r"(Loading of (.+) is rejected|Lockdown: .*(module|signature).* is restricted.*)")
SIGNATURE_REASONS = (("unsigned module", "unsigned"), ("unavailable key", "untrusted key"),
                     ("unsupported crypto", "unsupported crypto"))
# Modules /init loads quietly for its own report (not tested): efivarfs, to
# read the firmware's SecureBoot variable (a module in Debian's kernels).
SUPPORT_MODULES = ("efivarfs",)


class BootError(Exception):
    """The image cannot be boot-tested at all (no kernel, no busybox, no qemu)."""


class BootResult:
    """Outcome of one boot test. ``ok`` means: the expected kernel came up,
    reached the end of /init, and every module of the load list is loaded."""

    def __init__(self, mode, expected_kernel):
        self.mode = mode
        self.expected_kernel = expected_kernel
        self.kernel = None  # uname -r reported by the booted kernel
        self.requested = []  # modules-load.d list, in load order
        self.loaded = []  # names from /proc/modules
        self.params = {}  # module -> {parameter: value}
        self.failures = []  # human-readable reasons, empty when ok
        self.console = ""
        self.duration = 0.0
        self.panic = False
        self.timed_out = False
        self.completed = False  # /init reached its end marker
        self.tools = {}  # tool -> where it came from (image path or host)
        self.security = None  # what the guest kernel enforces (security_report)
        self.refusals = {}  # module -> {reason, kernel, modprobe}: refused by signature enforcement
        self.secure_boot_expected = False  # booted through the Secure Boot firmware
        self.chain_failure = None  # firmware/shim/grub line where the boot stopped
        self.accelerator = "tcg"
        self.accelerator_note = None

    @property
    def ok(self):
        return self.completed and not self.failures

    def to_dict(self):
        return {
            "ok": self.ok, "mode": self.mode, "kernel": self.kernel,
            "expected_kernel": self.expected_kernel, "requested": list(self.requested),
            "loaded": list(self.loaded), "params": dict(self.params),
            "failures": list(self.failures), "duration": round(self.duration, 3),
            "panic": self.panic, "timed_out": self.timed_out, "tools": dict(self.tools),
            "security": self.security, "refusals": dict(self.refusals),
            "accelerator": self.accelerator, "accelerator_note": self.accelerator_note,
        }

    def __repr__(self):
        return "BootResult(%r)" % (self.to_dict(),)


# --------------------------------------------------------------------------
# Pure helpers: names, config files, modules.dep


def module_name(path):
    """Kernel module name of a file path (``kernel/net/foo-bar.ko.xz`` ->
    ``foo_bar``): the kernel treats ``-`` and ``_`` alike and shows ``_``."""
    base = os.path.basename(path)
    for suffix in sorted(MODULE_SUFFIXES, key=len, reverse=True):
        if base.endswith(suffix):
            base = base[:-len(suffix)]
            break
    return normalize_name(base)


def normalize_name(name):
    return name.replace("-", "_")


def parse_modules_load_conf(text):
    """Module names of one modules-load.d file (``#``/``;`` start comments)."""
    names = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        names.append(line)
    return names


def modules_load_list(conf_files):
    """systemd-modules-load order: ``conf_files`` maps directory (in priority
    order, earliest wins) to ``{file name: text}``; files are read sorted by
    name, a name in an earlier directory masks the same name in later ones.
    Duplicates are kept once, first occurrence."""
    chosen = {}
    for directory in conf_files:
        for fname, text in conf_files[directory].items():
            if fname.endswith(".conf") and fname not in chosen:
                chosen[fname] = text
    result = []
    seen = set()
    for fname in sorted(chosen):
        for name in parse_modules_load_conf(chosen[fname]):
            key = normalize_name(name)
            if key not in seen:
                seen.add(key)
                result.append(name)
    return result


def parse_modprobe_options(text):
    """``options <module> a=1 b=x`` lines of a modprobe.d file ->
    ``{module: {param: value}}`` (later lines override earlier ones)."""
    options = {}
    for raw in _join_continuations(text):
        words = raw.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] == "options":
            target = options.setdefault(normalize_name(words[1]), {})
            for word in words[2:]:
                key, _sep, value = word.partition("=")
                target[key] = value.strip('"')
    return options


def parse_blacklist(text):
    """Module names of the ``blacklist <module>`` lines of a modprobe.d file."""
    names = set()
    for raw in _join_continuations(text):
        words = raw.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] == "blacklist":
            names.add(normalize_name(words[1]))
    return names


def parse_softdeps(text):
    """``softdep <module> pre: a b post: c`` lines (modprobe.d, depmod's
    modules.softdep) -> ``{module: [a, b, c]}``."""
    softdeps = {}
    for raw in _join_continuations(text):
        words = raw.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] == "softdep":
            softdeps.setdefault(normalize_name(words[1]), []).extend(
                w for w in words[2:] if w not in ("pre:", "post:"))
    return softdeps


def _join_continuations(text):
    lines, current = [], ""
    for line in text.splitlines():
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse_modules_dep(text):
    """modules.dep -> ``{name: (path, [dependency paths])}``."""
    result = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, _sep, deps = line.partition(":")
        path = path.strip()
        result[module_name(path)] = (path, deps.split())
    return result


def parse_modules_alias(text):
    """modules.alias -> list of ``(pattern, module name)``."""
    aliases = []
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "alias":
            aliases.append((words[1], normalize_name(words[2])))
    return aliases


def resolve_module(name, dep_map, aliases=()):
    """Module name (or alias) -> module names to load, dependencies first.
    Raises KeyError when nothing in modules.dep matches, like modprobe's
    'Module X not found'."""
    key = normalize_name(name)
    targets = [key] if key in dep_map else []
    if not targets:
        targets = [mod for pattern, mod in aliases if fnmatch.fnmatchcase(name, pattern) and mod in dep_map]
    if not targets:
        raise KeyError(name)
    ordered = []
    for target in targets:
        path, deps = dep_map[target]
        # modules.dep lists the full closure, deepest dependency last.
        for dep in reversed(deps):
            dep_name = module_name(dep)
            if dep_name not in ordered:
                ordered.append(dep_name)
        if target not in ordered:
            ordered.append(target)
    return ordered


# --------------------------------------------------------------------------
# ELF: the .modinfo section of a module, and what a program needs to run


class _Elf:
    def __init__(self, data):
        if data[:4] != b"\x7fELF":
            raise ValueError("not an ELF file")
        self.data = data
        self.is64 = data[4] == 2
        self.endian = "<" if data[5] == 1 else ">"
        if self.is64:
            fields = struct.unpack_from(self.endian + "HHIQQQIHHHHHH", data, 16)
        else:
            fields = struct.unpack_from(self.endian + "HHIIIIIHHHHHH", data, 16)
        (_type, self.machine, _version, _entry, self.phoff, self.shoff, _flags, _ehsize,
         self.phentsize, self.phnum, self.shentsize, self.shnum, self.shstrndx) = fields

    def sections(self):
        result = []
        fmt = self.endian + ("IIQQQQIIQQ" if self.is64 else "IIIIIIIIII")
        for index in range(self.shnum):
            values = struct.unpack_from(fmt, self.data, self.shoff + index * self.shentsize)
            result.append({"name": values[0], "type": values[1], "offset": values[4],
                           "size": values[5], "link": values[6]})
        if self.shnum and self.shstrndx < len(result):
            names = result[self.shstrndx]
            for section in result:
                start = names["offset"] + section["name"]
                end = self.data.index(b"\0", start)
                section["name"] = self.data[start:end].decode("ascii", "replace")
        return result

    def interpreter(self):
        fmt = self.endian + ("IIQQQQQQ" if self.is64 else "IIIIIIII")
        for index in range(self.phnum):
            values = struct.unpack_from(fmt, self.data, self.phoff + index * self.phentsize)
            p_type = values[0]
            offset, size = (values[2], values[5]) if self.is64 else (values[1], values[4])
            if p_type == 3:  # PT_INTERP
                return self.data[offset:offset + size].rstrip(b"\0").decode("ascii")
        return None

    def needed(self):
        sections = self.sections()
        dynamic = [s for s in sections if s["type"] == 6]  # SHT_DYNAMIC
        if not dynamic:
            return []
        dyn = dynamic[0]
        strtab = sections[dyn["link"]]
        fmt = self.endian + ("qQ" if self.is64 else "iI")
        step = struct.calcsize(fmt)
        result = []
        for pos in range(dyn["offset"], dyn["offset"] + dyn["size"], step):
            tag, value = struct.unpack_from(fmt, self.data, pos)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                start = strtab["offset"] + value
                result.append(self.data[start:self.data.index(b"\0", start)].decode("ascii"))
        return result


# --------------------------------------------------------------------------
# The image: kernel, module tree, config files


def _inside(rootfs, relpath, _depth=0):
    """Resolve ``relpath`` inside ``rootfs`` the way a chroot would: symlinks
    (absolute or relative) never lead outside ``rootfs``."""
    parts = [p for p in relpath.split("/") if p and p != "."]
    resolved = []
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(rootfs, *(resolved + [part]))
        if os.path.islink(candidate):
            if _depth > 40:
                raise BootError("too many symlinks resolving %s" % relpath)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            rest = "/".join(resolved + target.split("/") + parts)
            return _inside(rootfs, rest, _depth + 1)
        resolved.append(part)
    return "/".join(resolved)


def find_kernel(rootfs):
    """``(kernel release, vmlinuz relative path)`` of the image; RHCOS keeps
    the kernel at ``/usr/lib/modules/<kver>/vmlinuz``."""
    found = []
    for base in ("usr/lib/modules", "lib/modules"):
        real = _inside(rootfs, base)
        directory = os.path.join(rootfs, real)
        if not os.path.isdir(directory):
            continue
        for kver in sorted(os.listdir(directory)):
            if os.path.isfile(os.path.join(directory, kver, "vmlinuz")):
                entry = (kver, real + "/" + kver + "/vmlinuz")
                if entry not in found:
                    found.append(entry)
    if not found:
        raise BootError("no kernel in the image: no usr/lib/modules/<kver>/vmlinuz")
    if len(found) > 1:
        raise BootError("more than one kernel in the image: %s" % ", ".join(k for k, _p in found))
    return found[0]


def _read_text(path):
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _conf_files(rootfs, dirs):
    """``{directory: {file name: text}}`` of the ``*.conf`` files of ``dirs``;
    a symlink to /dev/null is an empty file, so it masks the same name of a
    later directory (modules-load.d(5), modprobe.d(5))."""
    result = {}
    for directory in dirs:
        real = os.path.join(rootfs, _inside(rootfs, directory))
        files = {}
        if os.path.isdir(real):
            for fname in sorted(os.listdir(real)):
                if not fname.endswith(".conf"):
                    continue
                entry = os.path.join(real, fname)
                if os.path.islink(entry) and os.readlink(entry) == "/dev/null":
                    files[fname] = ""
                    continue
                path = os.path.join(rootfs, _inside(rootfs, directory + "/" + fname))
                if os.path.isfile(path):
                    files[fname] = _read_text(path)
        result[directory] = files
    return result


class ImageModules:
    """What an image's module tree and config say about module loading."""

    def __init__(self, rootfs):
        self.rootfs = rootfs
        self.kernel, self.vmlinuz = find_kernel(rootfs)
        self.moddir = os.path.dirname(self.vmlinuz)
        self.load_conf = _conf_files(rootfs, MODULES_LOAD_DIRS)
        self.modprobe_conf = _conf_files(rootfs, MODPROBE_DIRS)
        self.requested = modules_load_list(self.load_conf)
        self.support = []  # loaded quietly by /init for its report (SUPPORT_MODULES), not tested
        self.options = {}
        for directory in reversed(MODPROBE_DIRS):
            for fname in sorted(self.modprobe_conf[directory]):
                for mod, params in parse_modprobe_options(self.modprobe_conf[directory][fname]).items():
                    self.options.setdefault(mod, {}).update(params)
        dep_path = os.path.join(rootfs, self.moddir, "modules.dep")
        self.dep_map = parse_modules_dep(_read_text(dep_path)) if os.path.isfile(dep_path) else {}
        alias_path = os.path.join(rootfs, self.moddir, "modules.alias")
        self.aliases = parse_modules_alias(_read_text(alias_path)) if os.path.isfile(alias_path) else []
        self.softdeps = {}
        self.blacklist = set()
        for directory in MODPROBE_DIRS:
            for fname in sorted(self.modprobe_conf[directory]):
                self.blacklist |= parse_blacklist(self.modprobe_conf[directory][fname])
        for directory in MODPROBE_DIRS:
            for fname in sorted(self.modprobe_conf[directory]):
                for mod, deps in parse_softdeps(self.modprobe_conf[directory][fname]).items():
                    self.softdeps.setdefault(mod, []).extend(deps)
        softdep_path = os.path.join(rootfs, self.moddir, "modules.softdep")
        if os.path.isfile(softdep_path):
            for mod, deps in parse_softdeps(_read_text(softdep_path)).items():
                self.softdeps.setdefault(mod, []).extend(deps)
        builtin_path = os.path.join(rootfs, self.moddir, "modules.builtin")
        self.builtin = set()
        if os.path.isfile(builtin_path):
            self.builtin = set(module_name(p) for p in _read_text(builtin_path).split())

    def initramfs_module_files(self, kmod=True):
        """Relative paths (under the module dir) the initramfs needs: the
        depmod index files the modprobe used reads (kmod: the binary
        indexes; busybox: the text ones), and the requested modules with
        their dependencies and soft dependencies - no other module."""
        root = os.path.join(self.rootfs, self.moddir)
        indexes = KMOD_INDEXES if kmod else BUSYBOX_INDEXES
        wanted = set(name for name in indexes if os.path.isfile(os.path.join(root, name)))
        pending, seen = list(self.requested) + list(getattr(self, "support", ())), set()
        while pending:
            name = pending.pop()
            if normalize_name(name) in seen:
                continue
            seen.add(normalize_name(name))
            try:
                chain = resolve_module(name, self.dep_map, self.aliases)
            except KeyError:
                continue  # reported by the boot itself: modprobe says "not found"
            for mod in chain:
                wanted.add(self.dep_map[mod][0])
                pending.extend(self.softdeps.get(mod, []))
        return sorted(wanted)


# --------------------------------------------------------------------------
# initramfs (newc cpio, written in Python)


class Initramfs:
    """An in-memory file tree written out as a newc cpio archive."""

    def __init__(self):
        self.entries = {}  # path -> ("dir",) | ("file", mode, bytes|src) | ("symlink", target)

    def add_dir(self, path):
        path = path.strip("/")
        parts = path.split("/")
        for index in range(1, len(parts) + 1):
            sub = "/".join(parts[:index])
            if sub and sub not in self.entries:
                self.entries[sub] = ("dir",)

    def add_file(self, path, source=None, data=None, mode=0o644):
        path = path.strip("/")
        self.add_dir(os.path.dirname(path))
        self.entries[path] = ("file", mode, data if data is not None else source)

    def add_symlink(self, path, target):
        path = path.strip("/")
        self.add_dir(os.path.dirname(path))
        self.entries[path] = ("symlink", target)

    def write(self, out):
        inode = 1
        for path in sorted(self.entries, key=lambda p: (p.count("/"), p)):
            entry = self.entries[path]
            if entry[0] == "dir":
                mode, data = stat.S_IFDIR | 0o755, b""
            elif entry[0] == "symlink":
                mode, data = stat.S_IFLNK | 0o777, entry[1].encode()
            else:
                mode = stat.S_IFREG | entry[1]
                data = entry[2]
                if not isinstance(data, bytes):
                    with open(data, "rb") as handle:
                        data = handle.read()
            _cpio_entry(out, path, mode, data, inode)
            inode += 1
        _cpio_entry(out, "TRAILER!!!", 0, b"", 0)


def _cpio_entry(out, name, mode, data, inode):
    name_bytes = name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(mode) else 1
    header = "070701" + "".join("%08X" % value for value in (
        inode, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name_bytes), 0))
    out.write(header.encode("ascii"))
    out.write(name_bytes)
    out.write(b"\0" * ((4 - (110 + len(name_bytes)) % 4) % 4))
    out.write(data)
    out.write(b"\0" * ((4 - len(data) % 4) % 4))


def _find_in_image(rootfs, candidates):
    for candidate in candidates:
        real = _inside(rootfs, candidate)
        if os.path.isfile(os.path.join(rootfs, real)):
            return real
    return None


def machine(arch):
    """The ``MACHINES`` entry of ``arch`` (release or Go name)."""
    try:
        name = _arch.release_arch(arch)
    except _arch.ArchError as exc:
        raise BootError(str(exc))
    if name not in MACHINES:
        raise BootError("the boot test boots %s images only, not %s" % (" and ".join(sorted(MACHINES)), arch))
    return dict(MACHINES[name], arch=name)


def _check_elf_machine(data, what, elf_machine):
    if elf_machine is None:
        return
    try:
        found = _Elf(data).machine
    except (ValueError, struct.error):
        raise BootError("%s is not an ELF program" % what)
    if found != elf_machine:
        names = dict((m["elf_machine"], a) for a, m in MACHINES.items())
        raise BootError("%s is a program for %s (ELF machine %d), not for the image's %s" % (
            what, names.get(found, "another architecture"), found, names.get(elf_machine, elf_machine)))


def _add_program(initramfs, rootfs, relpath, dest, elf_machine=None):
    """Copy a program from the image with what it needs to run there: its ELF
    interpreter and DT_NEEDED libraries, under the names the loader asks for,
    in their directories in the image (whose top-level symlinks are mirrored).
    With ``elf_machine``, the program must be of that architecture."""
    with open(os.path.join(rootfs, relpath), "rb") as handle:
        data = handle.read()
    _check_elf_machine(data, "/" + relpath, elf_machine)
    initramfs.add_file(dest, data=data, mode=0o755)
    pending = [data]
    done = set()
    while pending:
        elf = _Elf(pending.pop())
        interp = elf.interpreter()
        wanted = [interp.strip("/")] if interp else []
        wanted += [[libdir + "/" + name for libdir in LIB_DIRS] for name in elf.needed()]
        for choices in wanted:
            if not isinstance(choices, list):
                choices = [choices]
            key = os.path.basename(choices[0])
            if key in done:
                continue
            done.add(key)
            for choice in choices:
                real_dir = _inside(rootfs, os.path.dirname(choice))
                path = real_dir + "/" + key
                source = os.path.join(rootfs, _inside(rootfs, path))
                if os.path.isfile(source):
                    break
            else:
                raise BootError("/%s needs %s, which is not in the image" % (relpath, key))
            initramfs.add_file(path, source=source, mode=0o755)
            with open(source, "rb") as handle:
                pending.append(handle.read())


def _top_level_symlinks(rootfs):
    links = {}
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "usr/sbin", "usr/lib64"):
        path = os.path.join(rootfs, name)
        if os.path.islink(path):
            links[name] = os.readlink(path)
    return links


INIT_SCRIPT = r"""#!/kmod-layering/busybox sh
# ocp.kmod_layering boot test: load the modules-load.d list like systemd-modules-load,
# report to the serial console, power off.
/kmod-layering/busybox mkdir -p /proc /sys /dev /tmp /run /kmod-layering/bin
/kmod-layering/busybox --install -s /kmod-layering/bin
export PATH=/kmod-layering/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# Kernel messages go into the report via dmesg instead of interleaving.
dmesg -n 1
M=KMOD_LAYERING:
echo "${M}BEGIN"
echo "${M}KERNEL $(uname -r)"
echo "${M}MODPROBE $MODPROBE_TOOL"
# What the kernel enforces: EFI and the firmware's SecureBoot variable,
# lockdown, sig_enforce, the key rings and keys it trusts.
mkdir -p /sys/kernel/security
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
if [ -d /sys/firmware/efi ]; then
  echo "${M}EFI yes"
  while read -r mod; do [ -n "$mod" ] && $MODPROBE_CMD -q "$mod" >/dev/null 2>&1; done < /kmod-layering/support.list
  mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
  for var in SecureBoot SetupMode; do
    f=/sys/firmware/efi/efivars/$var-$EFI_GLOBAL_GUID
    [ -r "$f" ] && echo "${M}EFIVAR $var $(od -An -tu1 "$f" | tr -s ' \n' '  ')"
  done
else
  echo "${M}EFI no"
fi
[ -r /sys/kernel/security/lockdown ] && echo "${M}LOCKDOWN $(cat /sys/kernel/security/lockdown)"
[ -r /sys/module/module/parameters/sig_enforce ] && echo "${M}SIGENFORCE $(cat /sys/module/module/parameters/sig_enforce)"
[ -r /proc/keys ] && grep -e ' asymmetri ' -e ' keyring   \.' /proc/keys | while read -r line; do echo "${M}KEY $line"; done
dmesg -r | grep -i -e 'secure boot' -e 'locked down' -e 'MokList' -e 'X.509 cert' | head -n 40 \
  | while read -r line; do echo "${M}SBLOG $line"; done
while read -r mod; do
  [ -n "$mod" ] || continue
  seen=$(dmesg | wc -l)
  out=$($MODPROBE_CMD -b "$mod" 2>&1)
  rc=$?
  echo "${M}LOAD $mod $rc"
  echo "$out" | while read -r line; do [ -n "$line" ] && echo "${M}ERR $mod $line"; done
  # The kernel's words about a refusal (module signing's have no module name).
  [ "$rc" = 0 ] || dmesg -r | tail -n +$((seen + 1)) | head -n 20 | while read -r line; do echo "${M}KMSG $mod $line"; done
done < /kmod-layering/load.list
dmesg -r | grep '^<[0-4]>' | while read -r line; do echo "${M}DMESG $line"; done
while read -r line; do echo "${M}MOD $line"; done < /proc/modules
for mod in $( (cut -d' ' -f1 /proc/modules; cat /kmod-layering/load.list) | sort -u); do
  for p in /sys/module/$mod/parameters/*; do
    [ -r "$p" ] || continue
    v=$(cat "$p" 2>/dev/null) && echo "${M}PARAM $mod ${p##*/} $v"
  done
done
echo "${M}END"
poweroff -f
"""


def build_initramfs(image, out_path, host_busybox=HOST_BUSYBOX, elf_machine=None):
    """Write the boot-test initramfs of ``image`` (an ``ImageModules``) to
    ``out_path``; returns ``{tool: source}`` (where busybox/modprobe came
    from). ``host_busybox``: a static busybox for an image without one (None:
    none, e.g. for an image of another architecture than the host's).
    ``elf_machine``: the ELF machine every program must be built for."""
    rootfs = image.rootfs
    initramfs = Initramfs()
    tools = {}
    for name, target in _top_level_symlinks(rootfs).items():
        initramfs.add_symlink(name, target)
    # Both /lib/modules (busybox, Debian kmod) and /usr/lib/modules must work.
    modules_parent = os.path.dirname(image.moddir)
    for alias in ("lib/modules", "usr/lib/modules"):
        if alias != modules_parent and _inside(rootfs, alias) != modules_parent:
            initramfs.add_symlink(alias, "/" + modules_parent)
    busybox = _find_in_image(rootfs, BUSYBOX_CANDIDATES)
    if busybox is not None:
        _add_program(initramfs, rootfs, busybox, "kmod-layering/busybox", elf_machine)
        tools["busybox"] = "image:/" + busybox
    elif host_busybox and os.path.isfile(host_busybox):
        with open(host_busybox, "rb") as handle:
            data = handle.read()
        if _Elf(data).interpreter():
            raise BootError("image has no busybox and host %s is not static" % host_busybox)
        _check_elf_machine(data, "the host's " + host_busybox, elf_machine)
        initramfs.add_file("kmod-layering/busybox", data=data, mode=0o755)
        tools["busybox"] = "host:" + host_busybox
    elif not host_busybox:
        raise BootError("no busybox in the image (/%s): an image of another architecture than the host's must "
                        "bring its own" % ", /".join(BUSYBOX_CANDIDATES))
    else:
        raise BootError("no busybox in the image and none on the host (%s)" % host_busybox)
    kmod = _find_in_image(rootfs, KMOD_CANDIDATES)
    if kmod is not None:
        _add_program(initramfs, rootfs, kmod, "kmod-layering/kmod", elf_machine)
        # kmod picks its command from argv[0].
        initramfs.add_symlink("kmod-layering/sbin/modprobe", "/kmod-layering/kmod")
        tools["modprobe"] = "image:/" + kmod
        modprobe_cmd, modprobe_tool = "/kmod-layering/sbin/modprobe", "kmod"
    else:
        tools["modprobe"] = tools["busybox"] + " (modprobe applet)"
        modprobe_cmd, modprobe_tool = "modprobe", "busybox"
    for rel in image.initramfs_module_files(kmod=kmod is not None):
        initramfs.add_file(image.moddir + "/" + rel, source=os.path.join(rootfs, image.moddir, rel))
    for dirs, files in ((MODULES_LOAD_DIRS, image.load_conf), (MODPROBE_DIRS, image.modprobe_conf)):
        for directory in dirs:
            for fname, text in files[directory].items():
                initramfs.add_file(directory + "/" + fname, data=text.encode())
    initramfs.add_file("kmod-layering/load.list", data=("\n".join(image.requested) + "\n").encode())
    initramfs.add_file("kmod-layering/support.list",
                       data="".join(name + "\n" for name in getattr(image, "support", ())).encode())
    script = (INIT_SCRIPT.replace("$MODPROBE_CMD", modprobe_cmd).replace("$MODPROBE_TOOL", modprobe_tool)
              .replace("$EFI_GLOBAL_GUID", _uefi_boot.EFI_GLOBAL_GUID))
    initramfs.add_file("init", data=script.encode(), mode=0o755)
    with open(out_path, "wb") as out:
        initramfs.write(out)
    return tools


# --------------------------------------------------------------------------
# Console parsing


_LINE_RE = re.compile(r"KMOD_LAYERING:(BEGIN|END|KERNEL|MODPROBE|LOAD|ERR|DMESG|MOD|PARAM|EFI|EFIVAR|LOCKDOWN|"
                      r"SIGENFORCE|KEY|SBLOG|KMSG|GRUB)(?: (.*))?$")
_KMSG_PREFIX_RE = re.compile(r"^<(\d+)>(\[[^\]]*\] ?)?")
_KEY_TAIL_RE = re.compile(r": [A-Za-z0-9_.-]+ [0-9a-f]+ \[[^\]]*\]$")


def _kmsg(line):
    """``(level or None, text)`` of a ``dmesg -r`` line."""
    match = _KMSG_PREFIX_RE.match(line)
    if not match:
        return None, line
    return int(match.group(1)) & 7, line[match.end():]


def parse_console(text):
    """Serial console text -> dict: ``begun``, ``completed``, ``kernel``,
    ``loads`` ({name: rc}), ``errors`` ({name: [lines]}), ``dmesg`` (kernel
    warnings and errors), ``kmsg`` ({name: [(level, line)]}: the kernel's
    messages while a module failed to load), ``loaded`` (names in
    /proc/modules order), ``params`` ({module: {param: value}}), ``panic``
    (the panic line or None), and what the kernel enforces: ``efi``
    (bool or None), ``efivars`` ({SecureBoot: 1, ...}), ``lockdown`` and
    ``sig_enforce`` (the files' text or None), ``keys`` (/proc/keys lines),
    ``sblog`` (its Secure Boot / lockdown / certificate messages), ``grub``
    (grub ran)."""
    parsed = {"begun": False, "completed": False, "kernel": None, "modprobe": None,
              "loads": {}, "errors": {}, "dmesg": [], "kmsg": {}, "loaded": [], "params": {}, "panic": None,
              "efi": None, "efivars": {}, "lockdown": None, "sig_enforce": None, "keys": [], "sblog": [],
              "grub": False}
    for raw in text.replace("\r", "").split("\n"):
        for pattern in PANIC_PATTERNS:
            if pattern in raw and parsed["panic"] is None:
                parsed["panic"] = raw[raw.index(pattern):].strip()
        index = raw.find(MARK)
        if index < 0:
            continue
        match = _LINE_RE.match(raw[index:].rstrip())
        if not match:
            continue
        kind, rest = match.group(1), match.group(2) or ""
        if kind == "BEGIN":
            parsed["begun"] = True
        elif kind == "END":
            parsed["completed"] = True
        elif kind == "KERNEL":
            parsed["kernel"] = rest.strip()
        elif kind == "MODPROBE":
            parsed["modprobe"] = rest.strip()
        elif kind == "LOAD":
            name, _sep, code = rest.rpartition(" ")
            parsed["loads"][name] = int(code) if code.isdigit() else -1
        elif kind == "ERR":
            name, _sep, line = rest.partition(" ")
            parsed["errors"].setdefault(name, []).append(line)
        elif kind == "DMESG":
            parsed["dmesg"].append(_kmsg(rest)[1])
        elif kind == "KMSG":
            name, _sep, line = rest.partition(" ")
            parsed["kmsg"].setdefault(name, []).append(_kmsg(line))
        elif kind == "MOD":
            if rest.split():
                parsed["loaded"].append(rest.split()[0])
        elif kind == "PARAM":
            words = rest.split(" ", 2)
            if len(words) >= 2:
                parsed["params"].setdefault(words[0], {})[words[1]] = words[2] if len(words) > 2 else ""
        elif kind == "EFI":
            parsed["efi"] = rest.strip() == "yes"
        elif kind == "EFIVAR":
            # efivarfs: 4 bytes of attributes, then the value (one byte here)
            name, _sep, value = rest.strip().partition(" ")
            octets = value.split()
            parsed["efivars"][name] = int(octets[4]) if len(octets) > 4 and octets[4].isdigit() else None
        elif kind == "LOCKDOWN":
            parsed["lockdown"] = rest.strip()
        elif kind == "SIGENFORCE":
            parsed["sig_enforce"] = rest.strip()
        elif kind == "KEY":
            parsed["keys"].append(rest.strip())
        elif kind == "SBLOG":
            parsed["sblog"].append(_kmsg(rest)[1])
        elif kind == "GRUB":
            parsed["grub"] = True
    return parsed


def lockdown_mode(text):
    """The selected mode of /sys/kernel/security/lockdown
    (``none [integrity] confidentiality`` -> ``integrity``), or None."""
    match = re.search(r"\[([a-z]+)\]", text or "")
    return match.group(1) if match else None


def parse_proc_keys(lines):
    """``(trusted keys, key rings)`` of /proc/keys lines: the asymmetric
    keys' descriptions (``"<CN>: <skid>"``) and ``{".machine": 2, ...}``
    (the key rings' key counts)."""
    keys, rings = [], {}
    for line in lines:
        fields = line.split(None, 8)
        if len(fields) < 9:
            continue
        kind, description = fields[7], fields[8]
        if kind == "asymmetri":
            description = _KEY_TAIL_RE.sub("", description)
            if description not in keys:
                keys.append(description)
        elif kind == "keyring" and description.startswith("."):
            name, _sep, count = description.partition(": ")
            rings[name] = int(count.split()[0]) if count.split() and count.split()[0].isdigit() else None
    return keys, rings


def security_report(parsed):
    """What the booted kernel enforces, in the node verdict's terms
    (``state``: enabled | disabled | unsupported (no EFI) | unknown;
    ``lockdown``; ``sig_enforce``; ``enforcing``: Secure Boot on, lockdown
    other than none, or sig_enforce) plus ``trusted_keys``, ``keyrings``
    and the kernel's Secure Boot messages."""
    value = parsed["efivars"].get("SecureBoot")
    if value == 1:
        state = "enabled"
    elif value == 0:
        state = "disabled"
    elif parsed["efi"] is False:
        state = "unsupported"
    else:
        state = "unknown"
    lockdown = lockdown_mode(parsed["lockdown"])
    sig_enforce = None if parsed["sig_enforce"] is None else parsed["sig_enforce"].strip().upper().startswith("Y")
    keys, rings = parse_proc_keys(parsed["keys"])
    return {"state": state, "lockdown": lockdown, "sig_enforce": sig_enforce,
            "enforcing": state == "enabled" or lockdown not in (None, "none") or bool(sig_enforce),
            "setup_mode": parsed["efivars"].get("SetupMode"), "trusted_keys": keys, "keyrings": rings,
            "kernel_messages": list(parsed["sblog"])}


def signature_refusal(why):
    """``{reason, kernel, modprobe}`` when the lines ``why`` of a module
    that did not load say signature enforcement refused it, else None."""
    modprobe = [line for line in why if any(error in line for error in SIGNATURE_ERRORS)]
    kernel = [line for line in why if SIGNATURE_KERNEL_RE.search(line)]
    if not modprobe and not kernel:
        return None
    reason = "signature"
    for line in kernel:
        for words, name in SIGNATURE_REASONS:
            if words in line:
                reason = name
                break
        if reason != "signature":
            break
    return {"reason": reason, "kernel": [SIGNATURE_KERNEL_RE.search(line).group(1) for line in kernel],
            "modprobe": modprobe}


def judge(result, parsed):
    """Fill ``result`` from a parsed console: which requested modules did not
    load, and why (modprobe's and the kernel's own words); what the kernel
    enforces; a Secure Boot boot that was not one."""
    result.kernel = parsed["kernel"]
    result.loaded = parsed["loaded"]
    result.params = parsed["params"]
    result.completed = parsed["completed"]
    if parsed["begun"]:
        result.security = security_report(parsed)
    if parsed["panic"]:
        result.panic = True
        result.failures.append("kernel panic: %s" % parsed["panic"])
    if result.chain_failure and not parsed["begun"]:
        result.failures.append("the boot stopped before the kernel started /init (firmware, shim or grub): %s"
                               % result.chain_failure)
    elif result.timed_out:
        result.failures.append("boot did not finish in time (no end marker from /init)")
    elif not parsed["begun"] and not result.panic:
        result.failures.append("kernel did not start /init")
    if result.kernel and result.expected_kernel and result.kernel != result.expected_kernel:
        result.failures.append("booted kernel %s, image kernel is %s" % (result.kernel, result.expected_kernel))
    if result.secure_boot_expected and result.security and result.security["state"] != "enabled":
        result.failures.append(
            "Secure Boot was asked for but the firmware booted without it (SecureBoot variable: %s, lockdown: %s): "
            "the firmware's variable store (secure_boot_firmware.vars) must have Secure Boot keys enrolled and "
            "Secure Boot on (OVMF_VARS_4M.ms.fd, OVMF_VARS.secboot.fd)"
            % (parsed["efivars"].get("SecureBoot", "absent"), result.security["lockdown"]))
    loaded = set(parsed["loaded"])
    for name in result.requested:
        key = normalize_name(name)
        if key in loaded or key in getattr(result, "builtin", ()):
            continue
        if not parsed["completed"]:
            continue
        if key in getattr(result, "blacklist", ()):
            result.failures.append("module %s not loaded: deny-listed by a blacklist line of modprobe.d "
                                   "(systemd-modules-load skips it too)" % name)
            continue
        why = list(parsed["errors"].get(name, []))
        why += [line for level, line in parsed["kmsg"].get(name, []) if level is None or level <= 5]
        why += [line for line in parsed["dmesg"] if line.startswith(key + ":") or line.startswith(name + ":")]
        why = [line for index, line in enumerate(why) if line not in why[:index]]  # retries repeat them
        refusal = signature_refusal(why)
        if refusal is not None:
            result.refusals[name] = refusal
        rc = parsed["loads"].get(name)
        result.failures.append("module %s not loaded%s: %s" % (
            name, "" if rc is None else " (modprobe exit %d)" % rc, "; ".join(why) or "no error message"))


def _plain(line):
    """A console line without terminal escape sequences, stripped."""
    return re.sub(r"\x1b\[[0-9;?=]*[A-Za-z]", "", line).strip()


def chain_failure(console):
    """The firmware/shim/grub line of ``console`` that means the boot stopped
    before the kernel (``_uefi_boot.CHAIN_FAILURE_PATTERNS``), while /init
    has not begun; else None."""
    text = console.replace("\r", "")
    if MARK + "BEGIN" in text:
        return None
    for raw in text.split("\n"):
        line = _plain(raw)
        for pattern in _uefi_boot.CHAIN_FAILURE_PATTERNS:
            if pattern.strip() and pattern.strip() in line:
                return line
    return None


# --------------------------------------------------------------------------
# The two evaluations


def with_modules(requested, modules):
    """The modules-load.d list ``requested`` plus the names in ``modules``
    it lacks (``-``/``_`` alike), in that order."""
    result = list(requested)
    seen = set(normalize_name(name) for name in result)
    for name in modules or ():
        if normalize_name(name) not in seen:
            seen.add(normalize_name(name))
            result.append(name)
    return result


def qemu_command(qemu, accelerator, memory_mb, machine_args, board=()):
    """The qemu command line but the boot source (``machine_args``: the
    ``-kernel``/``-initrd``/``-append`` of a direct boot, or the firmware and
    ESP of a Secure Boot boot). ``board``: the machine and CPU of a
    ``MACHINES`` entry (its CPU gives way to ``-cpu host`` under KVM)."""
    command = [qemu, "-accel", accelerator]
    board = list(board)
    if accelerator == "kvm":
        if "-cpu" in board:
            index = board.index("-cpu")
            del board[index:index + 2]
        command += ["-cpu", "host"]
    command += board
    return command + ["-m", str(memory_mb), "-smp", "1", "-nographic", "-nodefaults", "-serial", "stdio",
                      "-no-reboot"] + list(machine_args)


KERNEL_CMDLINE = "console=%s panic=-1 quiet rdinit=/init"
CHAIN_FAILURE_GRACE = 5.0  # seconds the boot may go on after a firmware/shim/grub error line
KVM_START_SECONDS = 30  # a KVM boot whose /init has not begun by then is retried under TCG


def boot(rootfs, timeout=180, memory_mb=512, qemu=None, workdir=None,
         host_busybox=HOST_BUSYBOX, extra_append="", modules=None, secure_boot=None, accelerator="tcg",
         kvm_probe=None, arch="x86_64"):
    """Boot the image's kernel with an initramfs made from the image; see the
    module docstring. ``modules``: names to modprobe too, after the image's
    modules-load.d list. ``secure_boot``: a ``_uefi_boot.SecureBootSetup``
    (shim -> grub -> kernel under OVMF's Secure Boot firmware).
    ``accelerator``: tcg, kvm or auto (KVM when qemu can run it here, with
    SMM for Secure Boot; else TCG, with ``accelerator_note`` saying why).
    ``arch``: the image's architecture (``MACHINES``; ``qemu`` defaults to
    its system emulator); the host's busybox is a fallback only for an image
    of the host's architecture. Never leaves qemu running."""
    board = machine(arch)
    qemu = qemu or board["qemu"]
    if secure_boot is not None and board["arch"] != "x86_64":
        raise BootError("the Secure Boot boot test boots x86_64 images only (OVMF, shim and grub for x86_64); "
                        "this image is %s" % board["arch"])
    if board["arch"] != _arch.host_arch():
        host_busybox = None
    image = ImageModules(rootfs)
    image.requested = with_modules(image.requested, modules)
    if secure_boot is not None:
        image.support = [name for name in SUPPORT_MODULES if name in image.dep_map]
    result = BootResult("qemu", image.kernel)
    result.requested = list(image.requested)
    result.builtin = image.builtin
    result.blacklist = image.blacklist
    result.secure_boot_expected = secure_boot is not None
    if shutil.which(qemu) is None:
        raise BootError("%s not found" % qemu)
    probe = kvm_probe or (lambda smm: _uefi_boot.probe_kvm(qemu, smm))
    result.accelerator, result.accelerator_note = _uefi_boot.choose_accelerator(
        accelerator, secure_boot is not None, probe)
    own_dir = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="kmod-boot-")
    try:
        initrd = os.path.join(workdir, "initramfs.cpio")
        result.tools = build_initramfs(image, initrd, host_busybox=host_busybox, elf_machine=board["elf_machine"])
        cmdline = (KERNEL_CMDLINE % board["console"] + " " + extra_append).strip()
        kernel = os.path.join(rootfs, image.vmlinuz)
        if secure_boot is None:
            machine_args = ["-kernel", kernel, "-initrd", initrd, "-append", cmdline]
        else:
            try:
                machine_args = secure_boot.prepare(workdir, rootfs, kernel, initrd, cmdline)
            except _uefi_boot.SecureBootError as exc:
                raise BootError("Secure Boot: %s" % exc)
        console_path = os.path.join(workdir, "console.log")
        chain_console = console_path if secure_boot is not None else None
        process = _run_qemu(qemu_command(qemu, result.accelerator, memory_mb, machine_args, board["machine"]),
                            timeout, console_path, chain_console, result)
        if result.accelerator == "kvm" and MARK + "BEGIN" not in result.console and not result.chain_failure:
            # KVM that starts but cannot run the kernel (a nested hypervisor
            # lacking a CPU feature): the same boot under TCG, said so.
            last = [_plain(line) for line in result.console.replace("\r", "").split("\n") if _plain(line)]
            result.accelerator, result.timed_out = "tcg", False
            result.accelerator_note = ("KVM did not bring the kernel to /init (%s after %.1fs: %s): booted "
                                       "under TCG instead of KVM" % (
                                           "qemu exited" if process.returncode is not None and process.returncode != -9
                                           else "stopped", result.duration,
                                           last[-1][-200:] if last else "no console output"))
            process = _run_qemu(qemu_command(qemu, "tcg", memory_mb, machine_args, board["machine"]), timeout,
                                console_path, chain_console, result)
        judge(result, parse_console(result.console))
        if process.returncode not in (0, None) and not result.timed_out and not result.failures:
            result.failures.append("qemu exited with %s" % process.returncode)
        return result
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def _run_qemu(command, timeout, console_path, chain_console, result):
    """Run qemu to its end or ``timeout``, the console into ``console_path``
    (and ``result.console``, ``result.duration``); under KVM, give up once
    /init has not begun in ``KVM_START_SECONDS``. Returns the process."""
    started = time.monotonic()
    begin_by = started + KVM_START_SECONDS if "kvm" in command[:3] else None
    with open(console_path, "wb") as console:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
        try:
            _wait(process, started + timeout, chain_console, result, begin_by=begin_by, console_path=console_path)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    result.duration = time.monotonic() - started
    with open(console_path, "rb") as console:
        result.console = console.read().decode("utf-8", "replace")
    return process


def _wait(process, deadline, chain_console, result, step=0.5, begin_by=None, console_path=None):
    """Wait for qemu until ``deadline`` (then ``result.timed_out``); with
    ``chain_console``, stop early once the firmware, shim or grub printed a
    line that means the boot went nowhere (``result.chain_failure``); with
    ``begin_by``, stop then if /init has not begun (``console_path``)."""
    stop_at = None
    while True:
        try:
            process.wait(timeout=step)
            return
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now >= deadline:
            result.timed_out = True
            return
        if begin_by is not None and now >= begin_by:
            with open(console_path, "rb") as handle:
                if (MARK + "BEGIN").encode() not in handle.read():
                    return
            begin_by = None
        if chain_console is None:
            continue
        if stop_at is not None and now >= stop_at:
            with open(chain_console, "rb") as handle:
                result.chain_failure = chain_failure(handle.read().decode("utf-8", "replace"))
            if result.chain_failure:
                return
            stop_at = None
        elif stop_at is None:
            with open(chain_console, "rb") as handle:
                if chain_failure(handle.read().decode("utf-8", "replace")):
                    stop_at = now + CHAIN_FAILURE_GRACE
