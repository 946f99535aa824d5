"""kmodlab.fastboot (fast-mode nodes, moved from the product's _qemu_boot with
its tests): .modinfo and __versions reading, and the kernel loader's
vermagic / modversions checks on fake modules."""

from __future__ import annotations

import lzma
import struct
from pathlib import Path

import pytest

from kmodlab import fastboot

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


def test_parse_modinfo_and_vermagic() -> None:
    data = fake_module(f"{KVER} SMP preempt mod_unload modversions ", ("license=GPL", "parm=level:int"))
    info = fastboot.parse_modinfo(data)
    assert ("license", "GPL") in info and ("parm", "level:int") in info
    assert fastboot.vermagic_release(dict(info)["vermagic"]) == KVER
    with pytest.raises(ValueError):
        fastboot.parse_modinfo(b"not elf")


def test_fast_mode_refuses_foreign_vermagic(tmp_path: Path) -> None:
    image = make_image(
        tmp_path,
        {
            "extra/good.ko": fake_module(f"{KVER} SMP", ("parmtype=level:int",)),
            "kernel/dep.ko.xz": lzma.compress(fake_module(f"{KVER} SMP")),
            "extra/bad.ko": fake_module("6.1.0-50-cloud-amd64 SMP"),
            "extra/denied.ko": fake_module(f"{KVER} SMP"),
        },
        "extra/good.ko: kernel/dep.ko.xz\nkernel/dep.ko.xz:\nextra/bad.ko:\nextra/denied.ko:\n",
        {"x.conf": "good\nbad\nmissing\next4\ndenied\n"},
        "options good level=3 no_such_param=1\nblacklist denied\n",
    )
    result = fastboot.evaluate(str(image))
    assert result.kernel == KVER and result.mode == "fast"
    assert result.requested == ["good", "bad", "missing", "ext4", "denied"]
    assert result.loaded == ["dep", "good"]
    assert [line.split()[0] for line in result.proc_modules] == ["dep", "good"]
    # Only declared parameters show in /sys/module: the kernel ignores unknown ones.
    assert result.params == {"good": {"level": "3"}}
    assert not result.ok
    assert result.failures == [
        "module bad not loaded: bad: version magic '6.1.0-50-cloud-amd64 SMP' should be '%s SMP' (Exec format error)"
        % KVER,
        "module missing not loaded: Module missing not found in directory /lib/modules/%s" % KVER,
        "module denied not loaded: deny-listed (blacklist in modprobe.d)",
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
    assert fastboot.parse_versions(fake_module("x", versions=kernel_crcs)) == kernel_crcs
    result = fastboot.evaluate(str(image))
    assert result.loaded == ["same_abi"]
    assert result.failures == [
        "module other_abi not loaded: other_abi: disagrees about version of symbol module_layout (Exec format error)",
        "module no_preempt not loaded: no_preempt: version magic '%s SMP mod_unload modversions ' should be "
        "'%s SMP preempt mod_unload modversions ' (Exec format error)" % (KVER, KVER),
    ]


def test_aliases_resolve_through_modules_alias(tmp_path: Path) -> None:
    image = make_image(tmp_path, {"kernel/d.ko": fake_module(f"{KVER} SMP")}, "kernel/d.ko:\n", {"a.conf": "net-pf-99\n"})
    result = fastboot.evaluate(str(image))  # modules.alias: net-pf-99 -> dummy, which this image lacks
    assert result.loaded == []
    assert result.failures == [f"module net-pf-99 not loaded: Module net-pf-99 not found in directory /lib/modules/{KVER}"]
    image2 = make_image(tmp_path / "2", {"kernel/dummy.ko": fake_module(f"{KVER} SMP")}, "kernel/dummy.ko:\n",
                        {"a.conf": "net-pf-99\n"})
    assert fastboot.evaluate(str(image2)).loaded == ["dummy"]
