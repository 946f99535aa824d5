"""_qemu_boot: console parsing, modules-load.d / modprobe.d / modules.dep logic,
the initramfs, and one real qemu boot. (The lab's fast mode, which used to
live here, is tests/kmodlab/fastboot.py, tested in tests/lab.)"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _qemu_boot

KVER = "6.1.0-55-cloud-amd64"


def make_image(
    root: Path, modules: dict[str, bytes], dep: str, load: dict[str, str], modprobe: str = "", kver: str = KVER
) -> Path:
    moddir = root / "usr/lib/modules" / kver
    moddir.mkdir(parents=True)
    (moddir / "vmlinuz").write_bytes(b"kernel")
    for rel, data in modules.items():
        (moddir / rel).parent.mkdir(parents=True, exist_ok=True)
        (moddir / rel).write_bytes(data)
    (moddir / "modules.dep").write_text(dep)
    (moddir / "modules.alias").write_text("alias net-pf-99 dummy\n")
    (moddir / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    (root / "etc/modules-load.d").mkdir(parents=True)
    for name, text in load.items():
        (root / "etc/modules-load.d" / name).write_text(text)
    (root / "etc/modprobe.d").mkdir(parents=True)
    (root / "etc/modprobe.d/opts.conf").write_text(modprobe)
    (root / "lib").symlink_to("usr/lib")
    return root


CONSOLE = f"""SeaBIOS
[    3.1] dummy: disagrees about version of symbol module_layout
\x1b[2JKMOD_LAYERING:BEGIN
KMOD_LAYERING:KERNEL {KVER}
KMOD_LAYERING:MODPROBE kmod
KMOD_LAYERING:LOAD foo 1
KMOD_LAYERING:ERR foo modprobe: ERROR: could not insert 'foo': Exec format error
KMOD_LAYERING:LOAD bar-drv 0
KMOD_LAYERING:DMESG <4>[    3.354106] foo: disagrees about version of symbol module_layout
KMOD_LAYERING:MOD bar_drv 16384 0 - Live 0xffffffffc044d000
KMOD_LAYERING:MOD tls 135168 1 bar_drv, Live 0xffffffffc0452000
KMOD_LAYERING:PARAM bar_drv level 7
KMOD_LAYERING:PARAM bar_drv name a b c
KMOD_LAYERING:END
[    3.4] reboot: Power down
"""


def test_parse_console_reads_report() -> None:
    parsed = _qemu_boot.parse_console(CONSOLE)
    assert parsed["kernel"] == KVER
    assert parsed["completed"] and parsed["begun"]
    assert parsed["loads"] == {"foo": 1, "bar-drv": 0}
    assert parsed["loaded"] == ["bar_drv", "tls"]
    assert parsed["params"] == {"bar_drv": {"level": "7", "name": "a b c"}}
    assert parsed["dmesg"] == ["foo: disagrees about version of symbol module_layout"]
    assert parsed["panic"] is None


def test_judge_reports_refused_module_with_kernel_words() -> None:
    result = _qemu_boot.BootResult("qemu", KVER)
    result.requested = ["foo", "bar-drv"]
    _qemu_boot.judge(result, _qemu_boot.parse_console(CONSOLE))
    assert not result.ok
    assert len(result.failures) == 1
    assert "module foo not loaded (modprobe exit 1)" in result.failures[0]
    assert "Exec format error" in result.failures[0]
    assert "disagrees about version of symbol module_layout" in result.failures[0]


def test_judge_panic_timeout_and_wrong_kernel() -> None:
    panic = "[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n"
    result = _qemu_boot.BootResult("qemu", KVER)
    _qemu_boot.judge(result, _qemu_boot.parse_console(panic))
    assert result.panic and not result.ok
    assert result.failures[0].startswith("kernel panic: Kernel panic - not syncing: VFS")

    result = _qemu_boot.BootResult("qemu", KVER)
    result.timed_out = True
    _qemu_boot.judge(result, _qemu_boot.parse_console("KMOD_LAYERING:BEGIN\n"))
    assert not result.ok and "did not finish in time" in result.failures[0]

    result = _qemu_boot.BootResult("qemu", "6.1.0-50-cloud-amd64")
    _qemu_boot.judge(result, _qemu_boot.parse_console(CONSOLE))
    assert "booted kernel 6.1.0-55-cloud-amd64, image kernel is 6.1.0-50-cloud-amd64" in result.failures


def test_modules_load_order_masking_and_comments() -> None:
    files = {
        "etc/modules-load.d": {"b.conf": "# c\nfoo\n; x\n\nbar-drv\n", "z.conf": "zed\n"},
        "usr/lib/modules-load.d": {"b.conf": "masked\n", "a.conf": "first\nfoo\n", "skip.txt": "no\n"},
    }
    assert _qemu_boot.modules_load_list(files) == ["first", "foo", "bar-drv", "zed"]


def test_a_dev_null_symlink_in_etc_masks_the_vendor_file(tmp_path: Path) -> None:
    """modules-load.d(5): a symlink to /dev/null in /etc with a vendor file's
    name disables it (found by the lab node's own boot disagreeing)."""
    image = make_image(tmp_path, {}, "", {"a.conf": "kept\n"})
    (image / "usr/lib/modules-load.d").mkdir(parents=True)
    (image / "usr/lib/modules-load.d/vendor.conf").write_text("masked\n")
    (image / "etc/modules-load.d/vendor.conf").symlink_to("/dev/null")
    assert _qemu_boot.ImageModules(str(image)).requested == ["kept"]


def test_modprobe_options_and_modules_dep_resolution() -> None:
    opts = _qemu_boot.parse_modprobe_options('options my-mod a=1 b="x" # c\noptions my_mod a=2 \\\n c=3\nblacklist x\n')
    assert opts == {"my_mod": {"a": "2", "b": "x", "c": "3"}}
    dep = _qemu_boot.parse_modules_dep(
        "extra/top.ko: kernel/mid.ko.xz kernel/low-level.ko\n"
        "kernel/mid.ko.xz: kernel/low-level.ko\nkernel/low-level.ko:\n"
    )
    assert dep["low_level"] == ("kernel/low-level.ko", [])
    assert _qemu_boot.resolve_module("top", dep) == ["low_level", "mid", "top"]
    assert _qemu_boot.resolve_module("net-pf-99", {"dummy": ("d.ko", [])}, [("net-pf-*", "dummy")]) == ["dummy"]
    with pytest.raises(KeyError):
        _qemu_boot.resolve_module("nope", dep)


def test_initramfs_holds_only_what_is_needed(tmp_path: Path) -> None:
    image = make_image(
        tmp_path / "img",
        {"extra/good.ko": b"g", "kernel/dep.ko": b"d", "kernel/unrelated.ko": b"u", "updates/u.ko": b"x",
         "kernel/soft.ko": b"s"},
        "extra/good.ko: kernel/dep.ko\nkernel/dep.ko:\nkernel/unrelated.ko:\nupdates/u.ko:\nkernel/soft.ko:\n",
        {"x.conf": "good\n"},
        "options good level=3\nsoftdep dep pre: soft\n",
    )
    (image / "usr/lib/modules" / KVER / "modules.dep.bin").write_bytes(b"kmod's")
    out = tmp_path / "initrd.cpio"
    tools = _qemu_boot.build_initramfs(_qemu_boot.ImageModules(str(image)), str(out))
    assert tools["busybox"] == "host:/bin/busybox"
    listing = (
        subprocess.run(["cpio", "-it", "--quiet"], input=out.read_bytes(), capture_output=True, check=True)
        .stdout.decode()
        .split()
    )
    base = f"usr/lib/modules/{KVER}/"
    assert {
        base + "extra/good.ko",
        base + "kernel/dep.ko",
        base + "modules.dep",
        base + "kernel/soft.ko",  # a soft dependency of a dependency
        "etc/modules-load.d/x.conf",
        "etc/modprobe.d/opts.conf",
        "init",
        "kmod-layering/busybox",
        "kmod-layering/load.list",
        "lib",
    } <= set(listing)
    # Only what is loaded at boot: not a module of updates/ (or extra/) that
    # nothing loads, nor the binary indexes busybox's modprobe does not read.
    assert base + "kernel/unrelated.ko" not in listing
    assert base + "updates/u.ko" not in listing
    assert not [name for name in listing if name.endswith(".bin")]
    assert base + "vmlinuz" not in listing


def test_no_kernel_is_a_boot_error(tmp_path: Path) -> None:
    with pytest.raises(_qemu_boot.BootError, match="no kernel"):
        _qemu_boot.ImageModules(str(tmp_path))


def debian_kernel_rootfs(kver: str) -> Path:
    """A Debian kernel package unpacked as an RHCOS-like tree (cached)."""
    lab_cache = Path(os.environ.get("KMODLAB_CACHE") or Path.home() / ".cache/kmodlab")
    cache = lab_cache / "boot-test" / kver
    root = cache / "rootfs"
    moddir = root / "usr/lib/modules" / kver
    if not (moddir / "modules.dep").exists():
        shutil.rmtree(cache, ignore_errors=True)
        (cache / "deb").mkdir(parents=True)
        # The lab's image builds keep the Debian packages they used.
        deb = next((lab_cache / "debs").glob(f"linux-image-{kver}_*.deb"), None)
        if deb is None:
            subprocess.run(
                ["apt-get", "download", f"linux-image-{kver}"], cwd=cache / "deb", check=True, capture_output=True
            )
            deb = next((cache / "deb").glob("*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(cache / "x")], check=True)
        moddir.parent.mkdir(parents=True)
        shutil.move(str(cache / "x/lib/modules" / kver), str(moddir))
        shutil.move(str(cache / "x/boot" / f"vmlinuz-{kver}"), str(moddir / "vmlinuz"))
        subprocess.run(["depmod", "-b", str(root / "usr"), kver], check=True)
        (root / "lib").symlink_to("usr/lib")
        shutil.rmtree(cache / "x")
        shutil.rmtree(cache / "deb")
    return root


def foreign_module(kver: str, relpath: str, dest: Path) -> None:
    """One module file out of another kernel's Debian package."""
    lab_cache = Path(os.environ.get("KMODLAB_CACHE") or Path.home() / ".cache/kmodlab")
    deb = next((lab_cache / "debs").glob(f"linux-image-{kver}_*.deb"), None)
    if deb is None:
        subprocess.run(["apt-get", "download", f"linux-image-{kver}"], cwd=dest.parent, check=True, capture_output=True)
        deb = next(dest.parent.glob(f"linux-image-{kver}_*.deb"))
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        member = archive.extractfile(f"./lib/modules/{kver}/{relpath}")
        assert member is not None
        dest.write_bytes(member.read())


@pytest.mark.qemu
def test_real_boot_loads_modules_with_options_and_refuses_a_foreign_one(tmp_path: Path) -> None:
    """One boot: modules-load.d with a dependency (bonding -> tls), a
    modprobe.d option, a missing module, a deny-listed one, and dummy.ko
    taken from another kernel ABI (6.1.0-50) in extra/."""
    base = debian_kernel_rootfs(KVER)
    image = tmp_path / "img"
    shutil.copytree(base, image, symlinks=True, copy_function=os.link)
    moddir = image / "usr/lib/modules" / KVER
    (moddir / "kernel/drivers/net/dummy.ko").unlink()
    (moddir / "extra").mkdir()
    foreign_module("6.1.0-50-cloud-amd64", "kernel/drivers/net/dummy.ko", moddir / "extra/dummy.ko")
    for index in moddir.glob("modules.*"):  # depmod replaces them; keep the cached tree's own
        if index.name not in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
            index.unlink()
    subprocess.run(["depmod", "-b", str(image / "usr"), KVER], check=True)
    (image / "etc/modules-load.d").mkdir(parents=True)
    (image / "etc/modules-load.d/lab.conf").write_text("# lab\nbonding\nloop\nno-such-module\ndummy\nveth\n")
    (image / "etc/modprobe.d").mkdir(parents=True)
    # veth is named in modules-load.d and deny-listed: systemd-modules-load
    # (KMOD_PROBE_APPLY_BLACKLIST) does not load it, so neither may the test.
    (image / "etc/modprobe.d/lab.conf").write_text("options loop max_loop=5\nblacklist veth\n")
    result = _qemu_boot.boot(str(image), timeout=300)
    print("boot took %.1f s" % result.duration)
    assert result.completed, result.console
    assert result.kernel == KVER
    assert {"bonding", "tls", "loop"} <= set(result.loaded)  # tls: bonding's dependency
    assert "dummy" not in result.loaded and "veth" not in result.loaded
    assert result.params["loop"]["max_loop"] == "5"  # modprobe.d applied
    assert result.failures == [
        "module no-such-module not loaded (modprobe exit 1): modprobe: module no-such-module not found in modules.dep",
        "module dummy not loaded (modprobe exit 1): modprobe: can't load module dummy (extra/dummy.ko): "
        "invalid module format; dummy: disagrees about version of symbol module_layout",
        "module veth not loaded: deny-listed by a blacklist line of modprobe.d (systemd-modules-load skips it too)",
    ]
    assert not result.ok
    assert result.tools["busybox"] == "host:/bin/busybox"


# ---------------------------------------------------------------- architectures


def _captured_boot(monkeypatch, image: Path, arch: str, **kwargs) -> list:
    """The qemu argv ``boot`` runs for an ``arch`` image (qemu not started)."""
    commands = []

    def run_qemu(command, timeout, console_path, chain_console, result):
        commands.append(command)
        result.console, result.duration = "", 0.0

        class Done:
            returncode = 0
        return Done()

    monkeypatch.setattr(_qemu_boot, "_run_qemu", run_qemu)
    monkeypatch.setattr(_qemu_boot.shutil, "which", lambda name: "/usr/bin/" + name)
    _qemu_boot.boot(str(image), arch=arch, **kwargs)
    return commands[0]


def _image_with_busybox(root: Path, busybox: bytes) -> Path:
    image = make_image(root, {"extra/good.ko": b"g"}, "extra/good.ko:\n", {"x.conf": "good\n"})
    (image / "usr/bin").mkdir(parents=True)
    (image / "usr/bin/busybox").write_bytes(busybox)
    return image


def _elf(machine: int) -> bytes:
    """A minimal static ELF64 little-endian header for ``machine`` (no program headers)."""
    header = bytearray(64)
    header[:7] = b"\x7fELF\x02\x01\x01"
    header[16:18] = (2).to_bytes(2, "little")  # ET_EXEC
    header[18:20] = machine.to_bytes(2, "little")
    header[52:54] = (64).to_bytes(2, "little")  # e_ehsize
    return bytes(header)


def test_qemu_argv_per_architecture(tmp_path: Path, monkeypatch) -> None:
    x86 = _captured_boot(monkeypatch, _image_with_busybox(tmp_path / "x", _elf(62)), "x86_64")
    assert x86[0] == "qemu-system-x86_64" and "-M" not in x86
    assert x86[x86.index("-append") + 1].startswith("console=ttyS0 ")
    arm = _captured_boot(monkeypatch, _image_with_busybox(tmp_path / "a", _elf(183)), "aarch64")
    assert arm[0] == "qemu-system-aarch64"
    assert arm[arm.index("-M") + 1] == "virt" and arm[arm.index("-cpu") + 1] == "cortex-a57"
    assert arm[arm.index("-append") + 1].startswith("console=ttyAMA0 ")
    # The kernel goes to -kernel as the image has it (an uncompressed arm64 Image).
    assert arm[arm.index("-kernel") + 1] == str(tmp_path / "a/usr/lib/modules" / KVER / "vmlinuz")
    # Go names are the same architectures.
    assert _captured_boot(monkeypatch, _image_with_busybox(tmp_path / "g", _elf(183)), "arm64")[0] == \
        "qemu-system-aarch64"


def test_kvm_replaces_the_boards_cpu() -> None:
    board = _qemu_boot.machine("aarch64")["machine"]
    command = _qemu_boot.qemu_command("qemu-system-aarch64", "kvm", 1024, [], board)
    assert command.count("-cpu") == 1 and command[command.index("-cpu") + 1] == "host"
    assert command[command.index("-M") + 1] == "virt"


def test_an_arm64_image_never_boots_an_x86_64_busybox(tmp_path: Path, monkeypatch) -> None:
    # Its own busybox built for x86_64: refused, naming both.
    image = _image_with_busybox(tmp_path / "a", _elf(62))
    with pytest.raises(_qemu_boot.BootError, match=r"/usr/bin/busybox is a program for x86_64 .*not for the image's aarch64"):
        _captured_boot(monkeypatch, image, "aarch64")
    # None of its own: the host's (x86_64) is not taken in.
    bare = make_image(tmp_path / "b", {"extra/good.ko": b"g"}, "extra/good.ko:\n", {"x.conf": "good\n"})
    monkeypatch.setattr(_qemu_boot._arch, "host_arch", lambda: "x86_64")
    with pytest.raises(_qemu_boot.BootError, match="must bring its own"):
        _captured_boot(monkeypatch, bare, "aarch64")


def test_secure_boot_and_other_architectures_are_refused(tmp_path: Path, monkeypatch) -> None:
    image = _image_with_busybox(tmp_path / "a", _elf(183))
    with pytest.raises(_qemu_boot.BootError, match="Secure Boot boot test boots x86_64 images only"):
        _captured_boot(monkeypatch, image, "aarch64", secure_boot=object())
    with pytest.raises(_qemu_boot.BootError, match="boots aarch64 and x86_64 images only, not s390x"):
        _captured_boot(monkeypatch, image, "s390x")
