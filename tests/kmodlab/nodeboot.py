"""How a lab node boots: the lab's own path, not the product's boot test.

A lab node boots the layered image's own kernel under `qemu-system-x86_64
-accel tcg` (an arm64 kernel: `qemu-system-aarch64 -M virt -cpu cortex-a57`,
console ttyAMA0) with an initramfs made here from the image. Its `/init` (the
shell script `INIT` below, run by busybox) does what a real node's boot does
to load modules, written from the documentation of the programs involved:

- systemd-modules-load (modules-load.d(5), systemd-modules-load.service(8),
  systemd src/modules-load/modules-load.c): the module names of the kernel
  command line's `modules_load=` (comma separated) first, then the `*.conf`
  files of `/etc/modules-load.d`, `/run/modules-load.d`,
  `/usr/local/lib/modules-load.d`, `/usr/lib/modules-load.d` (and
  `/lib/modules-load.d` when it is another directory). A file name in an
  earlier directory overrides the same name in later ones; a file that is
  empty or a symlink to /dev/null masks it. All files are read in lexical
  order of their names, whatever their directory. One module name a line,
  whitespace around it stripped; empty lines and lines whose first
  character is `#` or `;` are ignored (there are no trailing comments).
- each name is loaded the way systemd-modules-load loads it: a libkmod
  lookup (names and aliases) and a probe with KMOD_PROBE_APPLY_BLACKLIST,
  i.e. `modprobe -b <name>` of the image's own kmod (modprobe(8): `-b`
  applies modprobe.d's blacklist to module names too). kmod resolves the
  dependencies from depmod's index of the image (`modules.dep.bin`), and
  applies the image's `modprobe.d` `options` (modprobe.d(5)). An image
  without kmod falls back to busybox's modprobe applet (`-b` too).
- then it reports what the kernel has loaded: `/proc/modules` and
  `/sys/module/<m>/parameters/*` of each loaded module, as `LABNODE` lines
  on the serial console, parsed here (`parse_console`).

What goes into the initramfs is no more than the boot needs: busybox, the
image's kmod and the shared libraries it links, depmod's binary indexes
(what kmod reads), the modules-load.d and modprobe.d files, and the modules
named in any modules-load.d file with their dependencies (modules.dep) and
soft dependencies (modprobe.d and modules.softdep `softdep` lines). The
names are collected from every file, masked or not (a superset: /init
applies the masking rules).

Only plumbing that is not under test is shared with the product: pulling and
unpacking layers (`_registry`, `_rootfs`, in node.py). Nothing here imports
the product's boot test.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import secureboot

MARK = "LABNODE"
# systemd's CONF_PATHS("modules-load.d"), highest priority first; /lib only
# on a split-/usr system (RHCOS is merged: /lib -> usr/lib).
MODULES_LOAD_DIRS = ("etc/modules-load.d", "run/modules-load.d", "usr/local/lib/modules-load.d",
                     "usr/lib/modules-load.d", "lib/modules-load.d")
# kmod's default configuration directories, highest priority first.
MODPROBE_DIRS = ("etc/modprobe.d", "run/modprobe.d", "usr/local/lib/modprobe.d", "usr/lib/modprobe.d",
                 "lib/modprobe.d")
MODULE_DIRS = ("usr/lib/modules", "lib/modules")
BUSYBOX = ("usr/bin/busybox", "bin/busybox", "usr/sbin/busybox", "sbin/busybox")
KMOD = ("usr/bin/kmod", "bin/kmod", "usr/sbin/kmod", "sbin/kmod")
HOST_BUSYBOX = "/bin/busybox"
# ELF e_machine (elf(5)) -> the architecture, its Debian multiarch library
# dirs first (the ELF interpreter path names its own dir).
EM_X86_64, EM_AARCH64 = 62, 183
ELF_ARCH = {EM_X86_64: "x86_64", EM_AARCH64: "aarch64"}
LIB_DIRS_BY_ARCH = {
    arch: (f"lib/{arch}-linux-gnu", f"usr/lib/{arch}-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib")
    for arch in ("x86_64", "aarch64")
}
LIB_DIRS = LIB_DIRS_BY_ARCH["x86_64"]
# How each architecture's kernel is started: qemu, its machine, the kernel's console.
QEMU_BY_ARCH = {
    "x86_64": ("qemu-system-x86_64", (), "ttyS0"),
    "aarch64": ("qemu-system-aarch64", ("-M", "virt", "-cpu", "cortex-a57"), "ttyAMA0"),
}
# depmod's index files kmod reads (libkmod opens the .bin forms; softdep and
# builtin.modinfo are read as text).
KMOD_INDEXES = ("modules.dep.bin", "modules.alias.bin", "modules.symbols.bin", "modules.builtin.bin",
                "modules.builtin.alias.bin", "modules.softdep", "modules.builtin.modinfo", "modules.devname")
BUSYBOX_INDEXES = ("modules.dep", "modules.alias", "modules.symbols", "modules.builtin")
PANIC = "Kernel panic - not syncing"

INIT = r"""#!/labnode/busybox sh
# kmodlab node boot: systemd-modules-load as a real node runs it, then a
# report of what the kernel loaded, on the serial console.
# LABNODE_ROOT (default /) and LABNODE_LIST_ONLY=1: print the load list only
# (how the lab's tests read the rules without booting).
R=${LABNODE_ROOT:-}
export LC_ALL=C
DIRS="/etc/modules-load.d /run/modules-load.d /usr/local/lib/modules-load.d /usr/lib/modules-load.d /lib/modules-load.d"

strip() {  # whitespace off both ends, no fork
  s=${1#"${1%%[![:space:]]*}"}
  printf '%s' "${s%"${s##*[![:space:]]}"}"
}

load_list() {
  for word in $CMDLINE; do
    case "$word" in
      modules_load=*) v=${word#modules_load=}; IFS=,; for m in $v; do [ -n "$m" ] && echo "$m"; done; unset IFS ;;
    esac
  done
  names=$(for d in $DIRS; do [ -d "$R$d" ] && ls -1a "$R$d"; done | grep '\.conf$' | sort -u)
  for f in $names; do
    for d in $DIRS; do
      p="$R$d/$f"
      [ -e "$p" ] || [ -L "$p" ] || continue
      # The first directory holding the name decides; /dev/null or empty masks.
      if [ "$(readlink "$p")" = /dev/null ] || [ ! -s "$p" ] || [ -d "$p" ]; then break; fi
      while IFS= read -r line || [ -n "$line" ]; do
        l=$(strip "$line")
        case "$l" in ''|'#'*|';'*) continue ;; esac
        echo "$l"
      done < "$p"
      break
    done
  done
}

if [ "$LABNODE_LIST_ONLY" = 1 ]; then
  CMDLINE=$LABNODE_CMDLINE
  load_list
  exit 0
fi

/labnode/busybox mkdir -p /proc /sys /dev /tmp /run /labnode/bin
/labnode/busybox --install -s /labnode/bin
export PATH=/labnode/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
dmesg -n 1
CMDLINE=$(cat /proc/cmdline)
echo "LABNODE begin"
echo "LABNODE kernel $(uname -r)"
echo "LABNODE modprobe @MODPROBE_TOOL@"
load_list > /tmp/load.list
if [ -d /sys/firmware/efi ]; then
  # UEFI: the firmware's SecureBoot variable (attributes u32, then one byte), as mokutil reads it.
  @MODPROBE@ efivarfs 2>/dev/null
  mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
  f=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
  if [ -f $f ]; then echo "LABNODE secureboot $(tail -c 1 $f | od -An -tu1 | tr -d ' ')"; else echo "LABNODE secureboot absent"; fi
  umount /sys/firmware/efi/efivars 2>/dev/null
  rmmod efivarfs 2>/dev/null
else
  echo "LABNODE secureboot noefi"
fi
while IFS= read -r mod; do
  echo "LABNODE want $mod"
  # A mark in the kernel's log: its words about a signature name no module.
  echo "labnode: modprobe $mod" > /dev/kmsg
  out=$(@MODPROBE@ -b "$mod" 2>&1)
  rc=$?
  echo "LABNODE load $rc $mod"
  printf '%s\n' "$out" | while IFS= read -r line; do [ -n "$line" ] && echo "LABNODE err $mod	$line"; done
done < /tmp/load.list
dmesg -r | grep '^<[0-4]>' | while IFS= read -r line; do echo "LABNODE dmesg $line"; done
dmesg -r | grep -E 'labnode: modprobe |Loading of .* is rejected|Lockdown: |module verification failed' \
  | while IFS= read -r line; do echo "LABNODE kmsg $line"; done
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
for f in /sys/kernel/security/lockdown /sys/module/module/parameters/sig_enforce /proc/sys/kernel/tainted; do
  [ -f $f ] && echo "LABNODE sec $f $(cat $f)"
done
while IFS= read -r line; do echo "LABNODE key $line"; done < /proc/keys
while IFS= read -r line; do echo "LABNODE proc $line"; done < /proc/modules
cut -d' ' -f1 /proc/modules | while read -r mod; do
  [ -f /sys/module/$mod/taint ] && echo "LABNODE taint $mod $(cat /sys/module/$mod/taint)"
  for p in /sys/module/$mod/parameters/*; do
    [ -f "$p" ] || continue
    v=$(cat "$p" 2>/dev/null) && echo "LABNODE param $mod ${p##*/} $v"
  done
done
echo "LABNODE end"
poweroff -f
"""


class NodeBootError(Exception):
    """The image cannot be booted at all (no kernel, no busybox, no qemu)."""


@dataclass
class NodeBoot:
    """What one boot of a lab node showed."""

    expected_kernel: str
    mode: str = "qemu"
    kernel: str | None = None
    requested: list[str] = field(default_factory=list)  # what /init asked for, in order
    loaded: list[str] = field(default_factory=list)  # /proc/modules names
    proc_modules: list[str] = field(default_factory=list)  # /proc/modules lines
    params: dict[str, dict[str, str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    console: str = ""
    duration: float = 0.0
    panic: bool = False
    timed_out: bool = False
    completed: bool = False
    tools: dict[str, str] = field(default_factory=dict)
    initramfs_bytes: int = 0
    # What the kernel says about module signatures (reported on every boot; Secure Boot nodes enforce them).
    secure_boot: str | None = None  # enabled | disabled | no-efi (the firmware's SecureBoot variable)
    lockdown: str | None = None  # /sys/kernel/security/lockdown, e.g. "none [integrity] confidentiality"
    sig_enforce: str | None = None  # /sys/module/module/parameters/sig_enforce: Y | N
    tainted: int | None = None  # /proc/sys/kernel/tainted
    keys: list[str] = field(default_factory=list)  # /proc/keys lines
    taint: dict[str, str] = field(default_factory=dict)  # /sys/module/<m>/taint of each loaded module
    refused: dict[str, list[str]] = field(default_factory=dict)  # module asked for, not loaded: modprobe's/kernel's words

    @property
    def ok(self) -> bool:
        return self.completed and not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "mode": self.mode, "kernel": self.kernel, "expected_kernel": self.expected_kernel,
            "requested": list(self.requested), "loaded": list(self.loaded), "params": dict(self.params),
            "failures": list(self.failures), "duration": round(self.duration, 3), "panic": self.panic,
            "timed_out": self.timed_out, "tools": dict(self.tools), "initramfs_bytes": self.initramfs_bytes,
            "secure_boot": self.secure_boot, "lockdown": self.lockdown, "sig_enforce": self.sig_enforce,
            "tainted": self.tainted, "keys": list(self.keys), "taint": dict(self.taint),
            "refused": {m: list(w) for m, w in self.refused.items()},
        }

    @property
    def lockdown_mode(self) -> str | None:
        """The bracketed word of the lockdown file (none | integrity | confidentiality)."""
        match = re.search(r"\[(\w+)\]", self.lockdown or "")
        return match.group(1) if match else None


# --------------------------------------------------------------- the image, read as a chroot would


def confined(rootfs: str, rel: str, depth: int = 0) -> str:
    """`rel` resolved inside `rootfs` (symlinks never leave it); relative result."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    done: list[str] = []
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        host = os.path.join(rootfs, *done, part)
        if os.path.islink(host):
            if depth > 40:
                raise NodeBootError(f"symlink loop resolving {rel}")
            target = os.readlink(host)
            base = [] if target.startswith("/") else done
            return confined(rootfs, "/".join(base + target.split("/") + parts), depth + 1)
        done.append(part)
    return "/".join(done)


def find_kernel(rootfs: str) -> tuple[str, str]:
    """(kernel release, module directory relative to rootfs): the one
    `<modules>/<kver>/vmlinuz` of the image."""
    found: dict[str, str] = {}
    for base in MODULE_DIRS:
        real = confined(rootfs, base)
        top = os.path.join(rootfs, real)
        if os.path.isdir(top):
            for kver in sorted(os.listdir(top)):
                if os.path.isfile(os.path.join(top, kver, "vmlinuz")):
                    found.setdefault(kver, f"{real}/{kver}")
    if len(found) != 1:
        raise NodeBootError(f"the image must hold one kernel (<modules>/<kver>/vmlinuz), found {sorted(found) or 'none'}")
    return next(iter(found.items()))


def conf_dirs(rootfs: str, dirs: Iterable[str]) -> list[tuple[str, str]]:
    """(directory as named, real directory) of each existing one, dropping a
    directory that is another's alias (`/lib -> usr/lib`)."""
    result, seen = [], set()
    for directory in dirs:
        real = confined(rootfs, directory)
        if real in seen or not os.path.isdir(os.path.join(rootfs, real)):
            continue
        seen.add(real)
        result.append((directory, real))
    return result


def module_name(path: str) -> str:
    base = os.path.basename(path)
    base = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base)
    return base.replace("-", "_")


def read_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """depmod's modules.dep (modules.dep(5)): `<path>: <dependency paths>`,
    paths relative to the module directory, the full closure on each line."""
    result = {}
    for line in text.splitlines():
        path, sep, deps = line.partition(":")
        if sep and path.strip():
            result[module_name(path.strip())] = (path.strip(), deps.split())
    return result


@dataclass
class ModprobeConf:
    """What modprobe.d(5) says, read the lab's way: `*.conf` of the kmod
    directories (a name in an earlier directory overrides later ones), read
    in lexical order of file names; `\\` continues a line, `#` starts a
    comment line; `-` and `_` in module names are the same."""

    options: dict[str, dict[str, str]] = field(default_factory=dict)
    blacklist: set[str] = field(default_factory=set)
    aliases: list[tuple[str, str]] = field(default_factory=list)
    softdeps: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, rootfs: str, dirs: Iterable[str] = MODPROBE_DIRS) -> ModprobeConf:
        chosen: dict[str, str] = {}
        for _named, real in conf_dirs(rootfs, dirs):
            for fname in os.listdir(os.path.join(rootfs, real)):
                if fname.endswith(".conf") and fname not in chosen:
                    chosen[fname] = os.path.join(rootfs, confined(rootfs, f"{real}/{fname}"))
        conf = cls()
        for fname in sorted(chosen):
            path = chosen[fname]
            if os.path.isfile(path):
                with open(path, encoding="utf-8", errors="replace") as handle:
                    conf.add(handle.read())
        return conf

    def add(self, text: str) -> None:
        logical, pending = [], ""
        for line in text.splitlines():
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            logical.append(pending + line)
            pending = ""
        logical.append(pending)
        for line in logical:
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            command, args = words[0], words[1:]
            if command == "options" and args:
                target = self.options.setdefault(args[0].replace("-", "_"), {})
                for word in args[1:]:
                    key, _sep, value = word.partition("=")
                    target[key] = value.strip('"')
            elif command == "blacklist" and args:
                self.blacklist.add(args[0].replace("-", "_"))
            elif command == "alias" and len(args) >= 2:
                self.aliases.append((args[0], args[1].replace("-", "_")))
            elif command == "softdep" and args:
                self.softdeps.setdefault(args[0].replace("-", "_"), []).extend(
                    w for w in args[1:] if w not in ("pre:", "post:"))


def load_names_superset(rootfs: str) -> list[str]:
    """Every module name in any modules-load.d file (masked or not)."""
    names: list[str] = []
    for _named, real in conf_dirs(rootfs, MODULES_LOAD_DIRS):
        for fname in sorted(os.listdir(os.path.join(rootfs, real))):
            path = os.path.join(rootfs, confined(rootfs, f"{real}/{fname}"))
            if not fname.endswith(".conf") or not os.path.isfile(path):
                continue
            with open(path, encoding="utf-8", errors="replace") as handle:
                for line in handle.read().splitlines():
                    line = line.strip()
                    if line and line[0] not in "#;" and line not in names:
                        names.append(line)
    return names


def module_closure(names: Iterable[str], dep: dict[str, tuple[str, list[str]]], conf: ModprobeConf,
                   alias_text: str = "", softdep_text: str = "") -> set[str]:
    """Module files (paths under the module directory) that loading `names`
    can touch: each name or alias, its modules.dep closure, soft
    dependencies (modprobe.d and modules.softdep) and theirs."""
    aliases = list(conf.aliases)
    for line in alias_text.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "alias":
            aliases.append((words[1], words[2].replace("-", "_")))
    softdeps = {k: list(v) for k, v in conf.softdeps.items()}
    extra = ModprobeConf()
    extra.add(softdep_text)
    for key, value in extra.softdeps.items():
        softdeps.setdefault(key, []).extend(value)
    files: set[str] = set()
    pending, seen = list(names), set()
    while pending:
        name = pending.pop()
        key = name.replace("-", "_")
        if key in seen:
            continue
        seen.add(key)
        targets = [key] if key in dep else [m for pattern, m in aliases if fnmatch.fnmatchcase(name, pattern)]
        for target in targets:
            if target not in dep:
                pending.append(target)  # an alias of an alias
                continue
            path, deps = dep[target]
            files.add(path)
            files.update(deps)
            pending.extend(softdeps.get(target, []))
            for dependency in deps:
                pending.extend(softdeps.get(module_name(dependency), []))
    return files


# --------------------------------------------------------------- programs and the initramfs


def elf_arch(data: bytes) -> str:
    """The architecture of a 64-bit little-endian ELF (e_machine)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise NodeBootError("not a 64-bit little-endian ELF program")
    machine = struct.unpack_from("<H", data, 18)[0]
    if machine not in ELF_ARCH:
        raise NodeBootError(f"ELF machine {machine} is neither x86_64 ({EM_X86_64}) nor aarch64 ({EM_AARCH64})")
    return ELF_ARCH[machine]


def kernel_arch(path: str) -> str | None:
    """The architecture of a kernel image: arm64's `Image` header carries the
    magic "ARM\\x64" at offset 56 (Documentation/arch/arm64/booting.rst), x86's
    bzImage "HdrS" at 0x202 (Documentation/arch/x86/boot.rst)."""
    with open(path, "rb") as handle:
        head = handle.read(0x210)
    if head[56:60] == b"ARM\x64":
        return "aarch64"
    if head[0x202:0x206] == b"HdrS":
        return "x86_64"
    return None  # not a kernel this reads (e.g. compressed): booted as x86_64 was before


def _elf_needs(data: bytes) -> tuple[str | None, list[str]]:
    """(PT_INTERP, DT_NEEDED names) of an x86_64 or aarch64 ELF (little endian, 64-bit)."""
    elf_arch(data)
    phoff, shoff = struct.unpack_from("<QQ", data, 32)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 54)
    interp = None
    for index in range(phnum):
        p_type, _flags, offset, _va, _pa, filesz = struct.unpack_from("<IIQQQQ", data, phoff + index * phentsize)
        if p_type == 3:
            interp = data[offset:offset + filesz].rstrip(b"\0").decode()
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    needed = []
    for sec in sections:
        if sec[1] != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[sec[6]]
        for pos in range(sec[4], sec[4] + sec[5], 16):
            tag, value = struct.unpack_from("<qQ", data, pos)
            if tag == 0:
                break
            if tag == 1:
                start = strtab[4] + value
                needed.append(data[start:data.index(b"\0", start)].decode())
    return interp, needed


class Cpio:
    """A newc archive built in memory."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, bytes]] = {}

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for index in range(1, len(parts) + 1):
            self.entries.setdefault("/".join(parts[:index]), (stat.S_IFDIR | 0o755, b""))

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = (stat.S_IFREG | mode, data)

    def symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = (stat.S_IFLNK | 0o777, target.encode())

    def write(self, out: Any) -> int:
        size = 0
        items = sorted(self.entries.items(), key=lambda item: (item[0].count("/"), item[0]))
        for inode, (name, (mode, data)) in enumerate([*items, ("TRAILER!!!", (0, b""))], start=1):
            encoded = name.encode() + b"\0"
            fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
            header = ("070701" + "".join(f"{value:08X}" for value in fields)).encode() + encoded
            chunk = header + b"\0" * (-len(header) % 4) + data + b"\0" * (-len(data) % 4)
            out.write(chunk)
            size += len(chunk)
        return size


def _add_program(cpio: Cpio, rootfs: str, rel: str, dest: str, arch: str | None = None) -> None:
    """A program of the image and the libraries it loads (their image paths);
    `arch`: the kernel's, which the program must be built for."""
    with open(os.path.join(rootfs, rel), "rb") as handle:
        data = handle.read()
    program_arch = elf_arch(data)
    if arch and program_arch != arch:
        raise NodeBootError(f"/{rel} is a {program_arch} program, the image's kernel is {arch}")
    lib_dirs = LIB_DIRS_BY_ARCH[program_arch]
    cpio.file(dest, data, 0o755)
    pending, done = [data], set()
    while pending:
        interp, needed = _elf_needs(pending.pop())
        wanted = ([interp.lstrip("/")] if interp else []) + needed
        for lib in wanted:
            name = os.path.basename(lib)
            if name in done:
                continue
            done.add(name)
            candidates = [lib] if "/" in lib else [f"{d}/{lib}" for d in lib_dirs]
            for candidate in candidates:
                real_dir = confined(rootfs, os.path.dirname(candidate))
                source = os.path.join(rootfs, confined(rootfs, f"{real_dir}/{name}"))
                if os.path.isfile(source):
                    break
            else:
                raise NodeBootError(f"/{rel} needs {lib}, which is not in the image")
            with open(source, "rb") as handle:
                lib_data = handle.read()
            cpio.file(f"{real_dir}/{name}", lib_data, 0o755)
            pending.append(lib_data)


def _first(rootfs: str, candidates: Iterable[str]) -> str | None:
    for candidate in candidates:
        real = confined(rootfs, candidate)
        if os.path.isfile(os.path.join(rootfs, real)):
            return real
    return None


def build_initramfs(rootfs: str, out_path: str, host_busybox: str = HOST_BUSYBOX,
                    extra_modules: Iterable[str] = ()) -> dict[str, Any]:
    """Write the node's initramfs; returns {kernel, moddir, tools, modules, bytes}.
    `extra_modules`: what /init itself loads besides the load list (efivarfs
    on a UEFI node)."""
    kernel, moddir = find_kernel(rootfs)
    arch = kernel_arch(os.path.join(rootfs, moddir, "vmlinuz"))
    cpio = Cpio()
    for top in ("bin", "sbin", "lib", "lib64", "usr/sbin", "usr/lib64"):
        if os.path.islink(os.path.join(rootfs, top)):
            cpio.symlink(top, os.readlink(os.path.join(rootfs, top)))
    for alias in MODULE_DIRS:  # kmod reads /lib/modules/<kver>
        if confined(rootfs, alias) != os.path.dirname(moddir) and not os.path.islink(os.path.join(rootfs, alias)):
            cpio.symlink(alias, "/" + os.path.dirname(moddir))
    tools: dict[str, str] = {}
    busybox = _first(rootfs, BUSYBOX)
    if busybox:
        _add_program(cpio, rootfs, busybox, "labnode/busybox", arch)
        tools["busybox"] = "image:/" + busybox
    elif os.path.isfile(host_busybox):
        data = Path(host_busybox).read_bytes()
        if arch and elf_arch(data) != arch:
            raise NodeBootError(f"the image has no busybox and {host_busybox} is not built for its {arch} kernel")
        if _elf_needs(data)[0]:
            raise NodeBootError(f"the image has no busybox and {host_busybox} is not static")
        cpio.file("labnode/busybox", data, 0o755)
        tools["busybox"] = "host:" + host_busybox
    else:
        raise NodeBootError(f"no busybox in the image, none at {host_busybox}")
    kmod = _first(rootfs, KMOD)
    if kmod:
        _add_program(cpio, rootfs, kmod, "labnode/kmod", arch)
        cpio.symlink("labnode/sbin/modprobe", "/labnode/kmod")  # kmod acts on argv[0]
        tools["modprobe"] = "image:/" + kmod
        modprobe, modprobe_tool, indexes = "/labnode/sbin/modprobe", "kmod", KMOD_INDEXES
    else:
        tools["modprobe"] = "busybox modprobe applet"
        modprobe, modprobe_tool, indexes = "modprobe", "busybox", BUSYBOX_INDEXES + ("modules.softdep",)
    top = os.path.join(rootfs, moddir)

    def text(name: str) -> str:
        path = os.path.join(top, name)
        return Path(path).read_text(errors="replace") if os.path.isfile(path) else ""

    dep = read_modules_dep(text("modules.dep"))
    conf = ModprobeConf.read(rootfs)
    modules = module_closure(load_names_superset(rootfs) + list(extra_modules), dep, conf, text("modules.alias"),
                             text("modules.softdep"))
    for rel in sorted(modules) + [i for i in indexes if os.path.isfile(os.path.join(top, i))]:
        source = os.path.join(top, rel)
        if os.path.isfile(source):
            cpio.file(f"{moddir}/{rel}", Path(source).read_bytes())
    for dirs in (MODULES_LOAD_DIRS, MODPROBE_DIRS):
        for named, real in conf_dirs(rootfs, dirs):
            for fname in os.listdir(os.path.join(rootfs, real)):
                host = os.path.join(rootfs, real, fname)
                if os.path.islink(host) and os.readlink(host) == "/dev/null":
                    cpio.symlink(f"{real}/{fname}", "/dev/null")
                    continue
                path = os.path.join(rootfs, confined(rootfs, f"{real}/{fname}"))
                if fname.endswith(".conf") and os.path.isfile(path):
                    cpio.file(f"{real}/{fname}", Path(path).read_bytes())
            if named != real and not os.path.islink(os.path.join(rootfs, named.split("/")[0])):
                cpio.symlink(named, "/" + real)
    script = INIT.replace("@MODPROBE@", modprobe).replace("@MODPROBE_TOOL@", modprobe_tool)
    cpio.file("init", script.encode(), 0o755)
    with open(out_path, "wb") as out:
        size = cpio.write(out)
    return {"kernel": kernel, "moddir": moddir, "tools": tools, "modules": sorted(modules), "bytes": size,
            "blacklist": sorted(conf.blacklist), "arch": arch}


# --------------------------------------------------------------- the console, read the lab's way


def parse_console(text: str) -> dict[str, Any]:
    """`LABNODE <what> ...` lines -> what the boot showed."""
    report: dict[str, Any] = {"begun": False, "completed": False, "kernel": None, "modprobe": None,
                              "wanted": [], "rc": {}, "errors": {}, "dmesg": [], "proc": [], "params": {},
                              "panic": None, "secure_boot": None, "security": {}, "keys": [], "taint": {},
                              "kernel_words": {}}
    marked: str | None = None  # the module /init was loading when the kernel spoke (its kmsg mark)
    for raw in text.replace("\r", "").split("\n"):
        if PANIC in raw and report["panic"] is None:
            report["panic"] = raw[raw.index(PANIC):].strip()
        at = raw.find(MARK + " ")
        if at < 0:
            continue
        what, _sep, rest = raw[at + len(MARK) + 1:].partition(" ")
        if what == "begin":
            report["begun"] = True
        elif what == "end":
            report["completed"] = True
        elif what in ("kernel", "modprobe"):
            report[what] = rest.strip()
        elif what == "want":
            report["wanted"].append(rest)
        elif what == "load":
            code, _sep, name = rest.partition(" ")
            report["rc"][name] = int(code) if code.isdigit() else -1
        elif what == "err":
            name, _sep, line = rest.partition("\t")
            report["errors"].setdefault(name, []).append(line)
        elif what == "dmesg":
            report["dmesg"].append(re.sub(r"^<\d+>(\[[^\]]*\] ?)?", "", rest))
        elif what == "proc" and rest.split():
            report["proc"].append(rest)
        elif what == "secureboot":
            report["secure_boot"] = {"1": "enabled", "0": "disabled", "noefi": "no-efi"}.get(rest.strip(), "disabled")
        elif what == "kmsg":
            line = re.sub(r"^<\d+>(\[[^\]]*\] ?)?", "", rest)
            if line.startswith("labnode: modprobe "):
                marked = line[len("labnode: modprobe "):].strip()
            elif marked is not None:
                report["kernel_words"].setdefault(marked, []).append(line.strip())
        elif what == "sec":
            path, _sep, value = rest.partition(" ")
            report["security"][path] = value.strip()
        elif what == "key":
            report["keys"].append(rest)
        elif what == "taint":
            name, _sep, value = rest.partition(" ")
            report["taint"][name] = value.strip()
        elif what == "param":
            words = rest.split(" ", 2)
            if len(words) >= 2:
                report["params"].setdefault(words[0], {})[words[1]] = words[2] if len(words) > 2 else ""
    return report


def judge(boot: NodeBoot, report: dict[str, Any], blacklist: Iterable[str] = (), builtin: Iterable[str] = ()) -> None:
    """Fill `boot` from a parsed console. A module of the list that is not
    loaded is reported (with modprobe's and the kernel's words) but is no
    reason to fail the boot, as on a node; a deny-listed one is said so."""
    boot.kernel = report["kernel"]
    boot.requested = list(report["wanted"])
    boot.proc_modules = list(report["proc"])
    boot.loaded = [line.split()[0] for line in report["proc"]]
    boot.params = report["params"]
    boot.completed = report["completed"]
    boot.secure_boot = report["secure_boot"]
    security = report["security"]
    boot.lockdown = security.get("/sys/kernel/security/lockdown")
    boot.sig_enforce = security.get("/sys/module/module/parameters/sig_enforce")
    tainted = security.get("/proc/sys/kernel/tainted", "")
    boot.tainted = int(tainted) if tainted.isdigit() else None
    boot.keys = list(report["keys"])
    boot.taint = dict(report["taint"])
    if report["panic"]:
        boot.panic = True
        boot.failures.append(f"kernel panic: {report['panic']}")
    if boot.timed_out:
        boot.failures.append("the boot did not finish in time")
    elif not report["begun"] and not boot.panic:
        boot.failures.append("the kernel did not start /init")
    if boot.kernel and boot.kernel != boot.expected_kernel:
        boot.failures.append(f"booted kernel {boot.kernel}, the image's is {boot.expected_kernel}")
    if not report["completed"]:
        return
    loaded, denied, builtin = set(boot.loaded), set(blacklist), set(builtin)
    for name in boot.requested:
        key = name.replace("-", "_")
        if key in loaded or key in builtin:
            continue
        if key in denied:
            boot.failures.append(f"module {name} not loaded: deny-listed (blacklist in modprobe.d)")
            continue
        why = report["errors"].get(name, []) + [d for d in report["dmesg"] if d.startswith(key + ":")]
        why = list(dict.fromkeys(why + report["kernel_words"].get(name, [])))
        boot.refused[name] = why
        boot.failures.append(f"module {name} not loaded (modprobe exit {report['rc'].get(name)}): "
                             + ("; ".join(why) or "no error message"))


def boot(rootfs: str, timeout: float = 300, memory_mb: int = 512, qemu: str | None = None,
         workdir: str | None = None, host_busybox: str = HOST_BUSYBOX, append: str = "",
         secure_boot: secureboot.SecureBootSetup | None = None) -> NodeBoot:
    """Boot a lab node from the unpacked image `rootfs`; never leaves qemu running.

    `secure_boot`: boot it through UEFI Secure Boot (kmodlab.secureboot:
    firmware -> shim -> grub -> the image's signed kernel) with that
    setup's certificates enrolled as MOKs; else the kernel is started
    directly (qemu -kernel, no firmware to speak of). `qemu`: default the
    one of the kernel's architecture (QEMU_BY_ARCH)."""
    kernel_path = os.path.join(rootfs, find_kernel(rootfs)[1], "vmlinuz")
    arch = kernel_arch(kernel_path) or "x86_64"
    default_qemu, machine, console = QEMU_BY_ARCH[arch]
    qemu = qemu or default_qemu
    if shutil.which(qemu) is None:
        raise NodeBootError(f"{qemu} not found")
    if secure_boot is not None and arch != "x86_64":
        raise NodeBootError(f"the lab's Secure Boot nodes are x86_64 (OVMF); this image's kernel is {arch}")
    if secure_boot is not None and secureboot.missing_parts():
        raise NodeBootError(f"Secure Boot nodes need {', '.join(secureboot.missing_parts())}")
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="kmodlab-node-")
    try:
        initrd = os.path.join(workdir, "node-initramfs.cpio")
        built = build_initramfs(rootfs, initrd, host_busybox=host_busybox,
                                extra_modules=(secureboot.EFIVARFS,) if secure_boot is not None else ())
        result = NodeBoot(expected_kernel=built["kernel"], tools=built["tools"], initramfs_bytes=built["bytes"])
        kernel = os.path.join(rootfs, built["moddir"], "vmlinuz")
        cmdline = f"console={console} panic=-1 quiet rdinit=/init {append}".strip()
        command = [qemu, *machine, "-accel", "tcg", "-m", str(memory_mb), "-smp", "1", "-nographic", "-nodefaults",
                   "-serial", "stdio", "-no-reboot"]
        result.tools["qemu"] = qemu
        if secure_boot is None:
            command += ["-kernel", kernel, "-initrd", initrd, "-append", cmdline]
        else:
            try:
                vars_file = secureboot.node_vars(secure_boot, Path(workdir) / "node-vars.fd")
                esp = secureboot.make_esp(Path(kernel), Path(initrd), cmdline, Path(workdir) / "node-esp.img")
            except (secureboot.SecureBootError, OSError) as error:
                raise NodeBootError(f"preparing the Secure Boot node: {error}") from error
            command += secureboot.qemu_args(vars_file, esp)
            result.tools["firmware"] = f"{secureboot.OVMF_CODE.name} + shim + grub (Secure Boot)"
        console_path = os.path.join(workdir, "node-console.log")
        started = time.monotonic()
        with open(console_path, "wb") as console:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                result.timed_out = True
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        result.duration = time.monotonic() - started
        result.console = Path(console_path).read_bytes().decode("utf-8", "replace")
        top = os.path.join(rootfs, built["moddir"])
        builtin_path = os.path.join(top, "modules.builtin")
        builtin = {module_name(p) for p in Path(builtin_path).read_text().split()} if os.path.isfile(builtin_path) else set()
        judge(result, parse_console(result.console), built["blacklist"], builtin)
        return result
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def load_list(rootfs: str, cmdline: str = "", busybox: str = HOST_BUSYBOX) -> list[str]:
    """The names /init would load, by running its own rules (LABNODE_LIST_ONLY)
    on the host against `rootfs` (symlinks in it must be relative)."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as script:
        script.write(INIT)
    try:
        env = {"LABNODE_ROOT": rootfs, "LABNODE_LIST_ONLY": "1", "LABNODE_CMDLINE": cmdline, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([busybox, "sh", script.name], env=env, capture_output=True, text=True, check=True,
                             timeout=60)
    finally:
        os.unlink(script.name)
    return [line for line in out.stdout.splitlines() if line]
