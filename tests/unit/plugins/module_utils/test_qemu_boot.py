"""_qemu_boot: console parsing, modules-load.d / modprobe.d / modules.dep logic,
.modinfo reading, the initramfs, fast mode, and one real qemu boot."""

from __future__ import annotations

import io
import lzma
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _qemu_boot

KVER = "6.1.0-55-cloud-amd64"


def fake_module(vermagic: str, extra: tuple[str, ...] = (), versions: dict[str, int] | None = None) -> bytes:
    """A minimal ELF64 relocatable with a .modinfo (and optionally a
    __versions: 8-byte CRC + 56-byte name per entry) section."""
    modinfo = b"".join(f"{item}\0".encode() for item in (*extra, f"vermagic={vermagic}"))
    vers = b"".join(struct.pack("<Q", crc) + name.encode().ljust(56, b"\0") for name, crc in (versions or {}).items())
    shstrtab = b"\0.modinfo\0.shstrtab\0__versions\0"
    bodies = [(1, 1, modinfo), (10, 3, shstrtab)] + ([(20, 1, vers)] if versions else [])
    offset, data = 64, b""
    headers = b"\0" * 64
    for name_off, sh_type, body in bodies:
        headers += struct.pack("<IIQQQQIIQQ", name_off, sh_type, 0, 0, offset + len(data), len(body), 0, 0, 1, 0)
        data += body
    shoff = 64 + len(data)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    header = ident + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(bodies) + 1, 2)
    return header + data + headers


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
\x1b[2JKMODLAB:BEGIN
KMODLAB:KERNEL {KVER}
KMODLAB:MODPROBE kmod
KMODLAB:LOAD foo 1
KMODLAB:ERR foo modprobe: ERROR: could not insert 'foo': Exec format error
KMODLAB:LOAD bar-drv 0
KMODLAB:DMESG <4>[    3.354106] foo: disagrees about version of symbol module_layout
KMODLAB:MOD bar_drv 16384 0 - Live 0xffffffffc044d000
KMODLAB:MOD tls 135168 1 bar_drv, Live 0xffffffffc0452000
KMODLAB:PARAM bar_drv level 7
KMODLAB:PARAM bar_drv name a b c
KMODLAB:END
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
    _qemu_boot.judge(result, _qemu_boot.parse_console("KMODLAB:BEGIN\n"))
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


def test_parse_modinfo_and_vermagic() -> None:
    data = fake_module(f"{KVER} SMP preempt mod_unload modversions ", ("license=GPL", "parm=level:int"))
    info = _qemu_boot.parse_modinfo(data)
    assert ("license", "GPL") in info and ("parm", "level:int") in info
    assert _qemu_boot.vermagic_release(dict(info)["vermagic"]) == KVER
    with pytest.raises(ValueError):
        _qemu_boot.parse_modinfo(b"not elf")


def test_fast_mode_refuses_foreign_vermagic(tmp_path: Path) -> None:
    image = make_image(
        tmp_path,
        {
            "extra/good.ko": fake_module(f"{KVER} SMP", ("parmtype=level:int",)),
            "kernel/dep.ko.xz": lzma.compress(fake_module(f"{KVER} SMP")),
            "extra/bad.ko": fake_module("6.1.0-50-cloud-amd64 SMP"),
        },
        "extra/good.ko: kernel/dep.ko.xz\nkernel/dep.ko.xz:\nextra/bad.ko:\n",
        {"x.conf": "good\nbad\nmissing\next4\n"},
        "options good level=3 no_such_param=1\n",
    )
    result = _qemu_boot.evaluate_fast(str(image))
    assert result.kernel == KVER
    assert result.loaded == ["dep", "good"]
    # Only declared parameters show in /sys/module: the kernel ignores unknown ones.
    assert result.params == {"good": {"level": "3"}}
    assert not result.ok
    assert result.failures == [
        "module bad not loaded: bad: version magic '6.1.0-50-cloud-amd64 SMP' should be '%s SMP' (Exec format error)"
        % KVER,
        "module missing not loaded: Module missing not found in directory /lib/modules/%s" % KVER,
    ]


def test_fast_mode_with_modversions_compares_crcs_not_release(tmp_path: Path) -> None:
    """As the kernel: with modversions the release in vermagic is skipped and
    the symbol CRCs decide (module_layout first)."""
    magic = "{} SMP preempt mod_unload modversions "
    kernel_crcs = {"module_layout": 0x1111, "_printk": 0x2222}
    image = make_image(
        tmp_path,
        {
            "kernel/net/intree.ko": fake_module(magic.format(KVER), versions=kernel_crcs),
            "extra/same_abi.ko": fake_module(magic.format("6.1.0-50-cloud-amd64"), versions=kernel_crcs),
            "extra/other_abi.ko": fake_module(
                magic.format("6.1.0-50-cloud-amd64"), versions={"_printk": 0x9999, "module_layout": 0x3333}
            ),
            "extra/no_preempt.ko": fake_module(f"{KVER} SMP mod_unload modversions ", versions=kernel_crcs),
        },
        "kernel/net/intree.ko:\nextra/same_abi.ko:\nextra/other_abi.ko:\nextra/no_preempt.ko:\n",
        {"x.conf": "same_abi\nother_abi\nno_preempt\n"},
    )
    assert _qemu_boot.parse_versions(fake_module("x", versions=kernel_crcs)) == kernel_crcs
    result = _qemu_boot.evaluate_fast(str(image))
    assert result.loaded == ["same_abi"]
    assert result.failures == [
        "module other_abi not loaded: other_abi: disagrees about version of symbol module_layout (Exec format error)",
        "module no_preempt not loaded: no_preempt: version magic '%s SMP mod_unload modversions ' should be "
        "'%s SMP preempt mod_unload modversions ' (Exec format error)" % (KVER, KVER),
    ]


def test_initramfs_holds_only_what_is_needed(tmp_path: Path) -> None:
    image = make_image(
        tmp_path / "img",
        {"extra/good.ko": b"g", "kernel/dep.ko": b"d", "kernel/unrelated.ko": b"u", "updates/u.ko": b"x"},
        "extra/good.ko: kernel/dep.ko\nkernel/dep.ko:\nkernel/unrelated.ko:\nupdates/u.ko:\n",
        {"x.conf": "good\n"},
        "options good level=3\n",
    )
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
        base + "updates/u.ko",
        base + "modules.dep",
        "etc/modules-load.d/x.conf",
        "etc/modprobe.d/opts.conf",
        "init",
        "kmodlab/busybox",
        "kmodlab/load.list",
        "lib",
    } <= set(listing)
    assert base + "kernel/unrelated.ko" not in listing
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
    modprobe.d option, a missing module, and dummy.ko taken from another
    kernel ABI (6.1.0-50) in extra/; fast mode must say the same."""
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
    (image / "etc/modules-load.d/lab.conf").write_text("# lab\nbonding\nloop\nno-such-module\ndummy\n")
    (image / "etc/modprobe.d").mkdir(parents=True)
    (image / "etc/modprobe.d/lab.conf").write_text("options loop max_loop=5\n")
    result = _qemu_boot.boot(str(image), timeout=300)
    print("boot took %.1f s" % result.duration)
    assert result.completed, result.console
    assert result.kernel == KVER
    assert {"bonding", "tls", "loop"} <= set(result.loaded)  # tls: bonding's dependency
    assert "dummy" not in result.loaded
    assert result.params["loop"]["max_loop"] == "5"  # modprobe.d applied
    assert result.failures == [
        "module no-such-module not loaded (modprobe exit 1): modprobe: module no-such-module not found in modules.dep",
        "module dummy not loaded (modprobe exit 1): modprobe: can't load module dummy (extra/dummy.ko): "
        "invalid module format; dummy: disagrees about version of symbol module_layout",
    ]
    assert not result.ok
    assert result.tools["busybox"] == "host:/bin/busybox"

    fast = _qemu_boot.evaluate_fast(str(image))
    assert set(fast.loaded) == {"bonding", "tls", "loop"}
    assert [f.split(":")[0] for f in fast.failures] == ["module no-such-module not loaded", "module dummy not loaded"]
    assert "dummy: disagrees about version of symbol module_layout" in fast.failures[1]
