"""kmodlab.nodeboot: the lab nodes' own boot.

The expected values below come from the documentation (modules-load.d(5),
modprobe.d(5), modprobe(8), modules.dep(5)), not from running the code under
test: the load list rules run in the node's own /init script (here in list
mode on the host's busybox), the initramfs is read back with cpio, and one
real boot of a lab layered image is compared with the product's boot test
on the same image (the two implementations must agree on what a node
loads)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kmodlab import layered, nodeboot
from kmodlab.state import LabState

KVER = "6.1.0-55-cloud-amd64"


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ------------------------------------------------------------ systemd-modules-load's rules


def test_load_list_lexical_order_across_directories_and_same_name_override(tmp_path: Path) -> None:
    """modules-load.d(5): files of all directories are sorted by file name
    and read in that order; a file in /etc replaces the same name in /run and
    /usr/lib, one in /run the one in /usr/lib."""
    write(tmp_path, "usr/lib/modules-load.d/10-vendor.conf", "vendor_a\n")
    write(tmp_path, "usr/lib/modules-load.d/20-both.conf", "overridden\n")
    write(tmp_path, "etc/modules-load.d/20-both.conf", "admin\n")
    write(tmp_path, "run/modules-load.d/05-run.conf", "runtime\n")
    write(tmp_path, "usr/lib/modules-load.d/05-run.conf", "shadowed_by_run\n")
    write(tmp_path, "usr/local/lib/modules-load.d/30-local.conf", "local\n")
    write(tmp_path, "etc/modules-load.d/99-last.conf", "last\n")
    assert nodeboot.load_list(str(tmp_path)) == ["runtime", "vendor_a", "admin", "local", "last"]


def test_load_list_masking_comments_and_whitespace(tmp_path: Path) -> None:
    """A /dev/null symlink (or an empty file) of the same name masks a vendor
    file; `#` and `;` start comment lines; whitespace around names is
    stripped; only *.conf files count; a '#' after a name is not a comment
    (the line is the name, as systemd reads it)."""
    write(tmp_path, "usr/lib/modules-load.d/masked.conf", "never\n")
    (tmp_path / "etc/modules-load.d").mkdir(parents=True)
    (tmp_path / "etc/modules-load.d/masked.conf").symlink_to("/dev/null")
    write(tmp_path, "usr/lib/modules-load.d/emptied.conf", "never_either\n")
    write(tmp_path, "etc/modules-load.d/emptied.conf", "")
    write(tmp_path, "etc/modules-load.d/a.conf", "# comment\n; also a comment\n\n   spaced  \n\tfoo-bar\nx # y\nlast")
    write(tmp_path, "etc/modules-load.d/a.conf.disabled", "not_read\n")
    write(tmp_path, "etc/modules-load.d/README", "not_read\n")
    assert nodeboot.load_list(str(tmp_path)) == ["spaced", "foo-bar", "x # y", "last"]


def test_load_list_kernel_command_line_first_and_lib_alias(tmp_path: Path) -> None:
    """systemd-modules-load.service(8): modules_load= (comma separated) on
    the kernel command line is loaded too, before the files; /lib being a
    symlink to /usr/lib reads the same file once."""
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    write(tmp_path, "usr/lib/modules-load.d/v.conf", "vendor\n")
    assert nodeboot.load_list(str(tmp_path), cmdline="quiet modules_load=one,two other=1") == ["one", "two", "vendor"]


# ------------------------------------------------------------ modprobe.d and modules.dep


def test_modprobe_conf_reading(tmp_path: Path) -> None:
    """modprobe.d(5): options accumulate per module ('-' = '_'), '\\' joins
    lines, '#' lines are comments; a file of /etc replaces the same name of
    /usr/lib; blacklist, alias, softdep are kept."""
    write(tmp_path, "usr/lib/modprobe.d/dist.conf", "options foo a=9\nblacklist replaced\n")
    write(tmp_path, "etc/modprobe.d/dist.conf", "options foo-x a=1 \\\n  b=\"two\"\n# options foo c=3\n")
    write(tmp_path, "etc/modprobe.d/z.conf", "options foo_x a=2\nblacklist bad-mod\nalias my-alias real_mod\n"
                                             "softdep top pre: before post: after\n")
    conf = nodeboot.ModprobeConf.read(str(tmp_path))
    assert conf.options == {"foo_x": {"a": "2", "b": "two"}}
    assert conf.blacklist == {"bad_mod"}
    assert conf.aliases == [("my-alias", "real_mod")]
    assert conf.softdeps == {"top": ["before", "after"]}


def test_module_closure_follows_modules_dep_aliases_and_softdeps() -> None:
    dep = nodeboot.read_modules_dep(
        "extra/top.ko: kernel/mid.ko.xz kernel/low-level.ko\nkernel/mid.ko.xz: kernel/low-level.ko\n"
        "kernel/low-level.ko:\nkernel/soft.ko:\nkernel/unrelated.ko:\nkernel/real_mod.ko:\nkernel/pci.ko:\n")
    conf = nodeboot.ModprobeConf()
    conf.add("alias my-alias real_mod\nsoftdep mid pre: soft\n")
    files = nodeboot.module_closure(["top", "my-alias", "pci:v00008086d00001234", "missing"], dep, conf,
                                    alias_text="alias pci:v00008086* pci\n")
    assert files == {"extra/top.ko", "kernel/mid.ko.xz", "kernel/low-level.ko", "kernel/soft.ko",
                     "kernel/real_mod.ko", "kernel/pci.ko"}


# ------------------------------------------------------------ the initramfs


def host_kmod_image(root: Path) -> Path:
    """A tiny image with the host's kmod (and its libraries) and a module tree."""
    moddir = root / "usr/lib/modules" / KVER
    for rel in ("extra/a.ko", "kernel/b.ko", "kernel/c.ko", "kernel/unused.ko", "extra/unused2.ko"):
        write(moddir, rel, rel)
    write(moddir, "vmlinuz", "kernel")
    write(moddir, "modules.dep", "extra/a.ko: kernel/b.ko\nkernel/b.ko:\nkernel/c.ko:\nkernel/unused.ko:\n"
                                 "extra/unused2.ko:\n")
    for index in ("modules.dep.bin", "modules.alias.bin", "modules.alias", "modules.symbols"):
        write(moddir, index, index)
    write(moddir, "modules.softdep", "softdep b post: c\n")
    write(root, "etc/modules-load.d/a.conf", "a\n")
    write(root, "etc/modprobe.d/a.conf", "options a x=1\n")
    (root / "usr/bin").mkdir(parents=True)
    kmod = shutil.which("kmod") or "/usr/bin/kmod"
    shutil.copy(kmod, root / "usr/bin/kmod")
    libs = subprocess.run(["ldd", kmod], capture_output=True, text=True, check=True).stdout
    for line in libs.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            real = os.path.realpath(path)
            dest = root / ("usr/lib/x86_64-linux-gnu" if "x86_64-linux-gnu" in path else "usr/lib64")
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(real, dest / os.path.basename(path))
    for top in ("lib", "lib64", "bin"):
        (root / top).symlink_to(f"usr/{top}")
    return root


@pytest.mark.skipif(not shutil.which("kmod") or not os.path.isfile(nodeboot.HOST_BUSYBOX), reason="needs kmod, busybox")
def test_initramfs_holds_the_boot_modules_and_what_kmod_reads(tmp_path: Path) -> None:
    image = host_kmod_image(tmp_path / "img")
    out = tmp_path / "initrd.cpio"
    built = nodeboot.build_initramfs(str(image), str(out))
    assert built["kernel"] == KVER and built["tools"]["busybox"] == "host:/bin/busybox"
    assert built["tools"]["modprobe"] == "image:/usr/bin/kmod"
    listing = set(subprocess.run(["cpio", "-it", "--quiet"], input=out.read_bytes(), capture_output=True,
                                 check=True).stdout.decode().split())
    base = f"usr/lib/modules/{KVER}/"
    assert {base + "extra/a.ko", base + "kernel/b.ko", base + "kernel/c.ko",  # c: b's soft dependency
            base + "modules.dep.bin", base + "modules.alias.bin", base + "modules.softdep",
            "etc/modules-load.d/a.conf", "etc/modprobe.d/a.conf", "init", "labnode/busybox", "labnode/kmod",
            "labnode/sbin/modprobe", "usr/lib/x86_64-linux-gnu/libc.so.6"} <= listing
    assert not {base + "kernel/unused.ko", base + "extra/unused2.ko", base + "modules.dep", base + "modules.alias",
                base + "modules.symbols", base + "vmlinuz"} & listing
    assert built["bytes"] == out.stat().st_size


# ------------------------------------------------------------ the console


CONSOLE = """SeaBIOS
LABNODE begin
LABNODE kernel 6.1.0-55-cloud-amd64
LABNODE modprobe kmod
LABNODE want good
LABNODE load 0 good
LABNODE want bad-one
LABNODE load 1 bad-one
LABNODE err bad-one\tmodprobe: ERROR: could not insert 'bad_one': Exec format error
LABNODE want denied
LABNODE load 0 denied
LABNODE want ext4
LABNODE load 0 ext4
LABNODE dmesg <4>[    3.3] bad_one: disagrees about version of symbol module_layout
LABNODE proc good 16384 0 - Live 0xffffffffc044d000 (OE)
LABNODE proc tls 135168 1 good, Live 0xffffffffc0452000
LABNODE param good level 7
LABNODE param good name a b c
LABNODE end
"""


def test_console_report_and_judgement() -> None:
    report = nodeboot.parse_console(CONSOLE)
    boot = nodeboot.NodeBoot(expected_kernel=KVER)
    nodeboot.judge(boot, report, blacklist={"denied"}, builtin={"ext4"})
    assert boot.completed and boot.kernel == KVER and not boot.panic
    assert boot.requested == ["good", "bad-one", "denied", "ext4"]
    assert boot.loaded == ["good", "tls"]
    assert boot.proc_modules[1] == "tls 135168 1 good, Live 0xffffffffc0452000"
    assert boot.params == {"good": {"level": "7", "name": "a b c"}}
    assert boot.failures == [
        "module bad-one not loaded (modprobe exit 1): modprobe: ERROR: could not insert 'bad_one': Exec format "
        "error; bad_one: disagrees about version of symbol module_layout",
        "module denied not loaded: deny-listed (blacklist in modprobe.d)",
    ]


def test_console_panic_and_unfinished_boot() -> None:
    boot = nodeboot.NodeBoot(expected_kernel=KVER)
    nodeboot.judge(boot, nodeboot.parse_console("LABNODE begin\n[ 1.0] Kernel panic - not syncing: boom\n"))
    assert boot.panic and not boot.completed
    assert boot.failures == ["kernel panic: Kernel panic - not syncing: boom"]
    other = nodeboot.NodeBoot(expected_kernel=KVER)
    nodeboot.judge(other, nodeboot.parse_console("LABNODE begin\nLABNODE kernel 6.1.0-50-cloud-amd64\nLABNODE end\n"))
    assert other.failures == [f"booted kernel 6.1.0-50-cloud-amd64, the image's is {KVER}"]


# ------------------------------------------------------------ a real boot, and agreement with the product


@pytest.mark.lab
@pytest.mark.qemu
def test_node_boot_and_product_boot_test_agree_on_a_lab_image(lab: LabState, tmp_path: Path) -> None:
    """A lab layered image (kmodlab_core + kmodlab_dep, the image's kmod),
    plus what an administrator might add: an /etc file overriding a vendor
    file of the same name, a masked vendor file, an in-tree module with a
    dependency (bonding -> tls), a modprobe.d option and a deny-listed
    module. The lab node and the product's boot test boot it each their own
    way; what they say is loaded, with which parameters, must be the same."""
    from ansible_collections.ocp.kmod_layering.plugins.module_utils import _qemu_boot

    image = layered.build_layered_image(lab, lab.releases[0]["version"], ["kmodlab_core", "kmodlab_dep"])
    root = layered.pull_rootfs(lab, image, tmp_path / "rootfs")
    write(root, "usr/lib/modules-load.d/50-vendor.conf", "veth\n")  # replaced by /etc's 50-vendor.conf
    write(root, "etc/modules-load.d/50-vendor.conf", "bonding\nloop\n")
    write(root, "usr/lib/modules-load.d/60-masked.conf", "dummy\n")
    (root / "etc/modules-load.d/60-masked.conf").symlink_to("/dev/null")
    write(root, "etc/modules-load.d/70-denied.conf", "vxlan\n")
    write(root, "etc/modprobe.d/lab.conf", "options loop max_loop=5\nblacklist vxlan\n")

    node = nodeboot.boot(str(root), timeout=300)
    print(f"\nlab node boot: {node.duration:.1f}s, initramfs {node.initramfs_bytes} bytes, tools {node.tools}")
    assert node.completed and not node.panic, node.console[-3000:]
    assert node.kernel == lab.releases[0]["kernel"] and node.tools["modprobe"] == "image:/usr/bin/kmod"
    # By file name across directories: 50-vendor, 70-denied, then the build's kmodlab_core.conf, kmodlab_dep.conf.
    assert node.requested == ["bonding", "loop", "vxlan", "kmodlab_core", "kmodlab_dep"], node.requested
    assert {"kmodlab_core", "kmodlab_dep", "bonding", "tls", "loop"} <= set(node.loaded)
    assert not {"veth", "dummy", "vxlan"} & set(node.loaded)
    assert node.params["loop"]["max_loop"] == "5"
    assert node.failures == ["module vxlan not loaded: deny-listed (blacklist in modprobe.d)"]

    product = _qemu_boot.boot(str(root), timeout=300)
    print(f"product boot test: {product.duration:.1f}s")
    assert product.completed, product.console[-3000:]
    assert set(product.loaded) == set(node.loaded)
    for module in node.loaded:
        assert product.params.get(module, {}) == node.params.get(module, {}), module
    assert [f.split(":")[0] for f in product.failures] == ["module vxlan not loaded"]
