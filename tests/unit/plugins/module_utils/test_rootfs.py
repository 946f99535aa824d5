"""_rootfs: layers applied in order, whiteouts, no escapes from the root."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _rootfs


def layer(*entries: tuple, compress: bool = True) -> io.BytesIO:
    """entries: ("file", name, data) | ("dir", name) | ("sym", name, target) | ("hard", name, target)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for entry in entries:
            info = tarfile.TarInfo(entry[1])
            if entry[0] == "file":
                info.size = len(entry[2])
                info.mode = 0o755 if len(entry) > 3 else 0o644
                archive.addfile(info, io.BytesIO(entry[2]))
                continue
            if entry[0] == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif entry[0] == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, entry[2]
            elif entry[0] == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, entry[2]
            elif entry[0] == "chr":
                info.type = tarfile.CHRTYPE
            archive.addfile(info)
    data = raw.getvalue()
    return io.BytesIO(gzip.compress(data) if compress else data)


def test_layers_apply_in_order_with_whiteouts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for stream in (
            layer(
                ("dir", "etc"),
                ("file", "etc/a", b"1"),
                ("file", "etc/b", b"2"),
                ("dir", "opt/x"),
                ("file", "opt/x/old", b"o"),
                ("file", "usr/bin/tool", b"t", "x"),
            ),
            layer(
                ("file", "etc/a", b"new"),
                ("file", "etc/.wh.b", b""),
                ("file", "opt/x/.wh..wh..opq", b""),
                ("file", "opt/x/fresh", b"f"),
                compress=False,
            ),
    ):
        _rootfs.apply_layer(stream, str(root))
    assert (root / "etc/a").read_bytes() == b"new"
    assert not (root / "etc/b").exists()
    assert not (root / "etc/.wh.b").exists()
    assert sorted(os.listdir(root / "opt/x")) == ["fresh"]  # opaque keeps this layer's entries
    assert os.access(root / "usr/bin/tool", os.X_OK)


def test_opaque_marker_before_new_entries_in_same_layer(tmp_path: Path) -> None:
    root = str(tmp_path)
    _rootfs.apply_layer(layer(("file", "d/old", b"1"), ("file", "d/sub/old2", b"2")), root)
    _rootfs.apply_layer(layer(("file", "d/.wh..wh..opq", b""), ("file", "d/sub/new", b"3")), root)
    assert sorted(os.listdir(tmp_path / "d")) == ["sub"]
    assert sorted(os.listdir(tmp_path / "d/sub")) == ["new"]  # lower-layer d/sub/old2 removed


def test_dotdot_and_absolute_names_stay_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    _rootfs.apply_layer(
        layer(("file", "../outside", b"x"), ("file", "/abs", b"y"), ("file", "a/../../../b", b"z")), str(root)
    )
    assert not outside.exists()
    assert (root / "outside").read_bytes() == b"x"
    assert (root / "abs").read_bytes() == b"y"
    assert (root / "b").read_bytes() == b"z"


def test_symlinked_directories_resolve_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    victim = tmp_path / "victim"
    victim.mkdir()
    _rootfs.apply_layer(
        layer(
            ("dir", "usr/lib"), ("sym", "lib", "/usr/lib"), ("sym", "escape", str(victim)), ("sym", "up", "../../..")
        ),
        str(root),
    )
    _rootfs.apply_layer(
        layer(("file", "lib/modules/x", b"m"), ("file", "escape/pwned", b"p"), ("file", "up/pwned2", b"q")), str(root)
    )
    assert (root / "usr/lib/modules/x").read_bytes() == b"m"  # followed lib -> /usr/lib in root
    assert os.listdir(victim) == []
    assert not (tmp_path / "pwned2").exists()
    assert (root / "pwned2").read_bytes() == b"q"  # "../../.." from root is root


def test_whiteout_through_symlink_does_not_touch_host(tmp_path: Path) -> None:
    root = tmp_path / "root"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("k")
    _rootfs.apply_layer(layer(("sym", "escape", str(victim))), str(root))
    _rootfs.apply_layer(layer(("file", "escape/.wh.keep", b""), ("file", "escape/.wh..wh..opq", b"")), str(root))
    assert (victim / "keep").read_text() == "k"


def test_hardlinks_symlinks_devices_and_keep_filter(tmp_path: Path) -> None:
    root = tmp_path
    count = _rootfs.apply_layer(
        layer(
            ("file", "bin/busybox", b"bb", "x"),
            ("hard", "bin/sh", "bin/busybox"),
            ("sym", "bin/ls", "busybox"),
            ("chr", "dev/null"),
            ("file", "usr/share/doc/big", b"d"),
        ),
        str(root),
        keep=lambda p: not p.startswith("usr/share/"),
    )
    assert os.stat(root / "bin/sh").st_ino == os.stat(root / "bin/busybox").st_ino
    assert os.readlink(root / "bin/ls") == "busybox"
    assert not (root / "dev/null").exists()
    assert not (root / "usr/share/doc/big").exists()
    assert count == 3


def test_file_replaces_directory_and_vice_versa(tmp_path: Path) -> None:
    _rootfs.apply_layer(layer(("file", "a/b", b"1"), ("file", "c", b"2")), str(tmp_path))
    _rootfs.apply_layer(layer(("file", "a", b"now a file"), ("file", "c/d", b"3")), str(tmp_path))
    assert (tmp_path / "a").read_bytes() == b"now a file"
    assert (tmp_path / "c/d").read_bytes() == b"3"


def test_zstd_without_library_is_a_clear_error(tmp_path: Path) -> None:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        with pytest.raises(_rootfs.LayerError, match="zstd"):
            _rootfs.apply_layer(io.BytesIO(_rootfs.ZSTD_MAGIC + b"\0" * 100), str(tmp_path))
    else:
        pytest.skip("zstandard installed")


def test_hardlink_to_a_filtered_file_is_skipped_not_an_error(tmp_path: Path) -> None:
    _rootfs.apply_layer(
        layer(("file", "usr/share/big", b"d"), ("hard", "usr/bin/alias", "usr/share/big")),
        str(tmp_path),
        keep=lambda p: not p.startswith("usr/share/"),
    )
    assert not (tmp_path / "usr/bin/alias").exists()
    with pytest.raises(_rootfs.LayerError, match="hard link"):
        _rootfs.apply_layer(layer(("hard", "x", "missing")), str(tmp_path))
