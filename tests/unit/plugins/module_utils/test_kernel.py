# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _kernel: layer listings, meta.json, driver-toolkit-release.json."""

import io
import json

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _kernel as k


@pytest.mark.parametrize("path, expected", [
    ("usr/lib/modules/5.14.0-284.25.1.el9_2.x86_64/vmlinuz", "5.14.0-284.25.1.el9_2.x86_64"),
    ("./usr/lib/modules/6.1.0-50-cloud-amd64/vmlinuz", "6.1.0-50-cloud-amd64"),
    ("/lib/modules/4.18.0-372.9.1.el8.x86_64/vmlinuz", "4.18.0-372.9.1.el8.x86_64"),
    ("usr/lib/modules/6.1.0-50-cloud-amd64/modules.dep", None),
    ("usr/lib/modules/6.1.0-50-cloud-amd64/kernel/vmlinuz", None),
    ("boot/vmlinuz-6.1.0-50-cloud-amd64", None),
    ("usr/lib/modules/true/vmlinuz", None),
])
def test_kernel_from_path(path, expected):
    assert k.kernel_from_path(path) == expected


@pytest.mark.parametrize("value, ok", [("5.14.0-284.25.1.el9_2.x86_64", True), ("6.1.0-50-cloud-amd64", True),
                                       ("true", False), ("", False), (None, False)])
def test_looks_like_kernel_version(value, ok):
    assert k.looks_like_kernel_version(value) is ok


def test_parse_dtk_release():
    doc = {"KERNEL_VERSION": "5.14.0-284.25.1.el9_2.x86_64", "RT_KERNEL_VERSION": "5.14.0-284.25.1.rt14.310.el9_2.x86_64",
           "RHEL_VERSION": "9.2"}
    assert k.parse_dtk_release(json.dumps(doc).encode()) == {
        "kernel_version": "5.14.0-284.25.1.el9_2.x86_64",
        "rt_kernel_version": "5.14.0-284.25.1.rt14.310.el9_2.x86_64", "rhel_version": "9.2"}
    with pytest.raises(k.KernelError, match="KERNEL_VERSION"):
        k.parse_dtk_release({"RHEL_VERSION": "9.2"})


def _meta(pkgs):
    return json.dumps({"buildid": "416.94.202401", "rpmostree.rpmdb.pkglist": pkgs, "ostree.linux": "true"})


def test_parse_meta_json_kernel_package():
    pkgs = [["bash", "0", "5.1.8", "6.el9_1", "x86_64"],
            ["kernel-core", "0", "5.14.0", "284.25.1.el9_2", "x86_64"],
            ["kernel", "0", "5.14.0", "284.25.1.el9_2", "x86_64"]]
    assert k.parse_meta_json(_meta(pkgs)) == "5.14.0-284.25.1.el9_2.x86_64"


def test_parse_meta_json_kernel_core_only_and_errors():
    assert k.parse_meta_json(_meta([["kernel-core", "0", "6.1.0", "55.el9", "aarch64"]])) == "6.1.0-55.el9.aarch64"
    with pytest.raises(k.KernelError, match="no kernel package"):
        k.parse_meta_json(_meta([["bash", "0", "5.1.8", "6.el9_1", "x86_64"]]))
    with pytest.raises(k.KernelError, match="package list"):
        k.parse_meta_json({"ostree.linux": "true"})


def test_rhcos_matcher_prefers_what_comes_first():
    match = k.rhcos_matcher()
    meta = _meta([["kernel", "0", "6.1.0", "55.el9", "x86_64"]]).encode()
    expected = {"kernel": "6.1.0-55.el9.x86_64", "kind": "meta.json"}
    assert match("usr/share/openshift/base/meta.json", io.BytesIO(meta)) == expected
    assert match("usr/lib/modules/6.1.0-1/vmlinuz", io.BytesIO(b"")) == {"kernel": "6.1.0-1", "kind": "vmlinuz"}
    assert match("usr/share/openshift/base", None) is None


def test_kernels_match():
    assert k.kernels_match("6.1.0-50-cloud-amd64", "6.1.0-50-cloud-amd64\n")
    assert not k.kernels_match("6.1.0-50-cloud-amd64", "6.1.0-55-cloud-amd64")
    assert not k.kernels_match(None, "6.1.0-55-cloud-amd64")


@pytest.mark.parametrize("version, release, arch, expected", [
    ("5.14.0", "284.25.1.el9_2", "x86_64", "5.14.0-284.25.1.el9_2.x86_64"),
    ("4.18.0", "372.9.1.el8", "ppc64le", "4.18.0-372.9.1.el8.ppc64le"),
    # a release that already names its arch flavour (Debian-built kernels) gets no second arch
    ("6.1.0", "55-cloud-amd64", "x86_64", "6.1.0-55-cloud-amd64"),
    ("6.1.0", "55-arm64", "aarch64", "6.1.0-55-arm64"),
])
def test_package_kernel_version(version, release, arch, expected):
    assert k.package_kernel_version(version, release, arch) == expected
