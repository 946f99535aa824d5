# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""_image_boot_test: what the boot test unpacks, its verdict cache, its verdict from
a real console transcript (parsed by _boot), and the module list merge."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _qemu_boot, _image_boot_test, _files

IMAGE = "registry.example.com/infra/rhcos-kmods@sha256:" + "a" * 64
KVER = "6.1.0-55-cloud-amd64"


@pytest.mark.parametrize("path, kept", [
    ("usr/lib/modules/%s/vmlinuz" % KVER, True),
    ("usr/lib/modules/%s/kernel/drivers/net/e1000.ko.xz" % KVER, True),
    ("usr/lib/modules/%s/extra/kmodlab_core.ko" % KVER, True),
    ("etc/modules-load.d/kmod-layering.conf", True),
    ("etc/modprobe.d/kmodlab_panic.conf", True),
    ("usr/lib/modprobe.d/dist.conf", True),
    ("usr/bin/kmod", True),
    ("usr/bin/busybox", True),
    ("usr/lib64/liblzma.so.5.2.5", True),
    ("usr/lib64/ld-linux-x86-64.so.2", True),
    ("usr/lib/x86_64-linux-gnu/libc.so.6", True),
    ("usr/lib64/libfoo.a", False),
    ("usr/lib64/python3.9/site.py", False),
    ("usr/bin/bash", False),
    ("usr/share/doc/kmod/README", False),
    ("etc/passwd", False),
    ("usr/lib/firmware/iwlwifi.ucode", False),
])
def test_keep_only_what_the_boot_needs(path, kept):
    assert _image_boot_test.keep_for_boot_test(path) is kept


def test_cache_file_is_per_digest_and_module_set(tmp_path):
    digest = "sha256:" + "b" * 64
    first = _image_boot_test.cache_file(str(tmp_path), digest, ["kmodlab_core", "kmodlab_dep"])
    assert first.startswith(str(tmp_path / ("b" * 64)))
    assert first == _image_boot_test.cache_file(str(tmp_path), digest, ["kmodlab-dep", "kmodlab_core"])
    assert first != _image_boot_test.cache_file(str(tmp_path), digest, ["kmodlab_core"])
    assert first != _image_boot_test.cache_file(str(tmp_path), "sha256:" + "c" * 64, ["kmodlab_core", "kmodlab_dep"])


def test_only_a_passing_verdict_is_read_back(tmp_path):
    path = str(tmp_path / "v.json")
    assert _image_boot_test.read_cached(path) is None
    _files.write_atomic(path, json.dumps({"ok": False, "version": _image_boot_test.CACHE_VERSION}))
    assert _image_boot_test.read_cached(path) is None
    _files.write_atomic(path, "{truncated")
    assert _image_boot_test.read_cached(path) is None
    _files.write_atomic(path, json.dumps({"ok": True, "version": _image_boot_test.CACHE_VERSION, "kernel": KVER}))
    assert _image_boot_test.read_cached(path)["kernel"] == KVER


def judged(console, requested):
    result = _qemu_boot.BootResult("qemu", KVER)
    result.requested = requested
    _qemu_boot.judge(result, _qemu_boot.parse_console(console))
    return result.to_dict()


PASS = """\
Linux version 6.1.0-55-cloud-amd64
KMOD_LAYERING:BEGIN
KMOD_LAYERING:KERNEL 6.1.0-55-cloud-amd64
KMOD_LAYERING:MODPROBE kmod
KMOD_LAYERING:LOAD kmodlab_core 0
KMOD_LAYERING:LOAD kmodlab_dep 0
KMOD_LAYERING:MOD kmodlab_dep 16384 0 - Live 0x0
KMOD_LAYERING:MOD kmodlab_core 16384 1 kmodlab_dep, Live 0x0
KMOD_LAYERING:END
"""

NOLOAD = """\
KMOD_LAYERING:BEGIN
KMOD_LAYERING:KERNEL 6.1.0-55-cloud-amd64
KMOD_LAYERING:MODPROBE kmod
KMOD_LAYERING:LOAD kmodlab_noload 1
KMOD_LAYERING:ERR kmodlab_noload modprobe: ERROR: could not insert 'kmodlab_noload': No such device
KMOD_LAYERING:END
"""

PANIC = """\
KMOD_LAYERING:BEGIN
KMOD_LAYERING:KERNEL 6.1.0-55-cloud-amd64
KMOD_LAYERING:MODPROBE kmod
[    3.101] Kernel panic - not syncing: kmodlab_panic: panic_on_load=1, panicking as asked
[    3.102] CPU: 0 PID: 61 Comm: modprobe Tainted: G           O       6.1.0-55-cloud-amd64 #1
[    3.103] ---[ end Kernel panic - not syncing: kmodlab_panic: panic_on_load=1, panicking as asked ]---
"""


def test_verdict_pass_names_kernel_and_modules():
    ok, msg = _image_boot_test.verdict(judged(PASS, ["kmodlab_core", "kmodlab_dep"]), IMAGE)
    assert ok and msg.startswith(IMAGE + ": kernel %s booted and loaded kmodlab_core, kmodlab_dep" % KVER)


def test_verdict_names_the_module_that_did_not_load():
    ok, msg = _image_boot_test.verdict(judged(NOLOAD, ["kmodlab_noload"]), IMAGE)
    assert not ok
    assert msg.startswith("Boot test of %s: module kmodlab_noload did not load (module kmodlab_noload not loaded "
                          "(modprobe exit 1): modprobe: ERROR: could not insert 'kmodlab_noload': No such device)"
                          % IMAGE)


def test_verdict_reports_a_panic_with_its_line():
    ok, msg = _image_boot_test.verdict(judged(PANIC, ["kmodlab_panic"]), IMAGE)
    assert not ok
    assert "the kernel panicked (kernel panic: Kernel panic - not syncing: kmodlab_panic: panic_on_load=1" in msg


def test_verdict_of_a_boot_that_never_finished():
    result = judged("KMOD_LAYERING:BEGIN\nKMOD_LAYERING:KERNEL %s\n" % KVER, ["kmodlab_core"])
    result["timed_out"] = True
    result["failures"].append("boot did not finish in time (no end marker from /init)")
    ok, msg = _image_boot_test.verdict(result, IMAGE)
    assert not ok and "the boot did not finish in time" in msg


def test_console_tail():
    text = "\r\n".join("line %d" % i for i in range(100)) + "\r\n"
    assert _image_boot_test.console_tail(text, 3) == "line 97\nline 98\nline 99"
    assert _image_boot_test.console_tail("", 3) == ""


def test_module_names_and_the_load_list_merge():
    assert _image_boot_test.module_names([{"name": "a"}, "b", {"name": "a"}]) == ["a", "b"]
    assert _qemu_boot.with_modules(["kmodlab_core"], ["kmodlab-core", "kmodlab_dep"]) == ["kmodlab_core", "kmodlab_dep"]
