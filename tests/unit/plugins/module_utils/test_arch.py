# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Architecture names, the architecture of each pool read from its Node
objects (tests/unit/fixtures/arch/, in the shape the kubelet and the MCO
write them), and the binfmt_misc check of emulated builds."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import os

import pytest
import yaml

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _arch

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "arch", "multi-arch-cluster.yaml")


@pytest.fixture()
def cluster():
    with open(FIXTURE) as handle:
        return yaml.safe_load(handle)


@pytest.mark.parametrize("name,release,go", [
    ("amd64", "x86_64", "amd64"), ("x86_64", "x86_64", "amd64"), ("X86_64", "x86_64", "amd64"),
    ("arm64", "aarch64", "arm64"), ("aarch64", "aarch64", "arm64"),
    ("ppc64le", "ppc64le", "ppc64le"), ("s390x", "s390x", "s390x"),
])
def test_the_one_mapping(name, release, go):
    assert _arch.release_arch(name) == release
    assert _arch.go_arch(name) == go


@pytest.mark.parametrize("name", ["", None, "arm", "i386", "riscv64", "multi"])
def test_unknown_architectures_are_refused(name):
    with pytest.raises(_arch.ArchError, match="unknown architecture"):
        _arch.release_arch(name)


def test_node_arch_from_label_and_node_info(cluster):
    arches = dict((n["metadata"]["name"], _arch.node_arch(n)) for n in cluster["nodes"])
    assert arches["ip-10-0-1-10.ec2.internal"] == "x86_64"
    assert arches["ip-10-0-3-30.ec2.internal"] == "aarch64"


def test_node_arch_from_either_source_alone(cluster):
    node = copy.deepcopy(cluster["nodes"][3])
    del node["metadata"]["labels"]["kubernetes.io/arch"]
    assert _arch.node_arch(node) == "aarch64"
    node = copy.deepcopy(cluster["nodes"][3])
    del node["status"]["nodeInfo"]["architecture"]
    assert _arch.node_arch(node) == "aarch64"


def test_node_arch_disagreeing_sources(cluster):
    node = copy.deepcopy(cluster["nodes"][0])
    node["status"]["nodeInfo"]["architecture"] = "arm64"
    with pytest.raises(_arch.ArchError, match="ip-10-0-1-10.ec2.internal: the label kubernetes.io/arch says amd64"):
        _arch.node_arch(node)


def test_node_without_architecture(cluster):
    node = copy.deepcopy(cluster["nodes"][0])
    del node["metadata"]["labels"]["kubernetes.io/arch"]
    del node["status"]["nodeInfo"]["architecture"]
    with pytest.raises(_arch.ArchError, match="neither the label"):
        _arch.node_arch(node)


def test_pools_of_a_multi_arch_cluster(cluster):
    # worker-arm64 nodes also carry the worker label: the MCO puts them in
    # the custom pool only, which leaves one arm64 node in worker (below).
    result = _arch.pool_architectures("prod-1", ["master", "worker-arm64"], cluster["pools"], cluster["nodes"])
    assert result["pools"] == {"master": "x86_64", "worker-arm64": "aarch64"}
    assert result["arches"] == ["x86_64", "aarch64"]
    assert sorted(result["nodes"]["worker-arm64"]) == ["ip-10-0-3-30.ec2.internal", "ip-10-0-3-31.ec2.internal"]
    assert result["warnings"] == []


def test_a_pool_mixing_architectures_is_an_error_naming_nodes(cluster):
    with pytest.raises(_arch.ArchError) as exc:
        _arch.pool_architectures("prod-1", ["master", "worker"], cluster["pools"], cluster["nodes"])
    msg = str(exc.value)
    assert "cluster prod-1: pool worker mixes architectures" in msg
    assert "aarch64: ip-10-0-2-21.ec2.internal; x86_64: ip-10-0-2-20.ec2.internal" in msg
    assert "kubernetes.io/arch" in msg and "Nothing was built or written" in msg


def test_declared_arch_is_an_assertion(cluster):
    result = _arch.pool_architectures("prod-1", ["worker-arm64"], cluster["pools"], cluster["nodes"], "aarch64")
    assert result["pools"] == {"worker-arm64": "aarch64"}
    # Go spelling accepted too.
    assert _arch.pool_architectures("prod-1", ["master"], cluster["pools"], cluster["nodes"],
                                    "amd64")["pools"] == {"master": "x86_64"}
    with pytest.raises(_arch.ArchError) as exc:
        _arch.pool_architectures("prod-1", ["master", "worker-arm64"], cluster["pools"], cluster["nodes"],
                                 "x86_64")
    msg = str(exc.value)
    assert "cluster prod-1: kmod_arch is x86_64 but the nodes of pool worker-arm64 are aarch64" in msg
    assert "ip-10-0-3-30.ec2.internal, ip-10-0-3-31.ec2.internal" in msg
    assert "Set kmod_arch to aarch64 or auto" in msg


def test_a_pool_without_nodes_takes_kmod_arch_or_x86_64_with_a_warning(cluster):
    result = _arch.pool_architectures("prod-1", ["infra"], cluster["pools"], cluster["nodes"])
    assert result["pools"] == {"infra": "x86_64"}
    assert "pool infra has no nodes" in result["warnings"][0] and "the default" in result["warnings"][0]
    result = _arch.pool_architectures("prod-1", ["infra"], cluster["pools"], cluster["nodes"], "aarch64")
    assert result["pools"] == {"infra": "aarch64"}
    assert "kmod_arch" in result["warnings"][0]


def test_bad_kmod_arch(cluster):
    with pytest.raises(_arch.ArchError, match="kmod_arch: unknown architecture 'arm'"):
        _arch.pool_architectures("prod-1", ["master"], cluster["pools"], cluster["nodes"], "arm")


def _binfmt(tmp_path, name=None, text=None):
    (tmp_path / "status").write_text("enabled\n")
    if name:
        (tmp_path / name).write_text(text)
    return str(tmp_path)


HANDLER = ("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n"
           "magic 7f454c460201010000000000000000000200b700\n")


def test_binfmt_native_build_needs_nothing(tmp_path):
    assert _arch.binfmt_problem("x86_64", "x86_64", str(tmp_path / "absent")) is None


def test_binfmt_registered_handler(tmp_path):
    assert _arch.binfmt_problem("aarch64", "x86_64", _binfmt(tmp_path, "qemu-aarch64", HANDLER)) is None


def test_binfmt_not_mounted(tmp_path):
    problem = _arch.binfmt_problem("aarch64", "x86_64", str(tmp_path / "absent"))
    assert "binfmt_misc is not mounted" in problem and "qemu-user-static" in problem


def test_binfmt_handler_missing(tmp_path):
    problem = _arch.binfmt_problem("aarch64", "x86_64", _binfmt(tmp_path))
    assert "no binfmt_misc handler %s/qemu-aarch64 is registered" % tmp_path in problem
    assert "apt-get install qemu-user-static" in problem


def test_binfmt_handler_disabled_or_without_f(tmp_path):
    problem = _arch.binfmt_problem("aarch64", "x86_64",
                                   _binfmt(tmp_path, "qemu-aarch64", HANDLER.replace("enabled", "disabled")))
    assert "registered but disabled" in problem
    problem = _arch.binfmt_problem("aarch64", "x86_64",
                                   _binfmt(tmp_path, "qemu-aarch64", HANDLER.replace("flags: PF", "flags: P")))
    assert "lacks the F flag" in problem
