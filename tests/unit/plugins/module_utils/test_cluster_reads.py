# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the resolve stage reads from a cluster (cluster_release_info), on
the recorded objects of a multi-arch cluster (tests/unit/fixtures/arch/):
the release, missing pools, each pool's architecture, and the retry of the
reads on transient API errors."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest
import yaml

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _cluster_reads
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import ClusterError
from ansible_collections.ocp.kmod_layering.plugins.module_utils._runner import Failed

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "arch", "multi-arch-cluster.yaml")
RELEASE = "quay.io/openshift-release-dev/ocp-release@sha256:" + "ab" * 32
CLUSTER_VERSION = {"kind": "ClusterVersion", "metadata": {"name": "version"},
                   "status": {"desired": {"image": RELEASE, "version": "4.16.30", "architecture": "Multi"}}}


@pytest.fixture()
def cluster():
    with open(FIXTURE) as handle:
        return yaml.safe_load(handle)


def test_the_release_and_each_pools_architecture(cluster):
    result = _cluster_reads.summarize("c1", ["master", "worker-arm64"], "auto", CLUSTER_VERSION,
                                      cluster["pools"], cluster["nodes"])
    assert result["release_image"] == RELEASE
    assert result["pools"] == {"master": "x86_64", "worker-arm64": "aarch64"}
    assert result["arches"] == ["x86_64", "aarch64"]
    assert set(result["nodes"]["worker-arm64"].values()) == {"aarch64"}
    assert result["warnings"] == []


def test_only_what_was_read_is_summarized(cluster):
    # kmod_release set: the ClusterVersion is not read.
    result = _cluster_reads.summarize("c1", ["master"], "auto", None, cluster["pools"], cluster["nodes"])
    assert result["release_image"] is None and result["pools"] == {"master": "x86_64"}
    # kmod_check_pools false (prebuild): neither pools nor nodes.
    result = _cluster_reads.summarize("c1", ["worker"], "auto", CLUSTER_VERSION)
    assert result["release_image"] == RELEASE and result["pools"] is None and result["arches"] is None


@pytest.mark.parametrize("cluster_version", [{}, {"status": {}}, {"status": {"desired": {"version": "4.16.30"}}}])
def test_a_cluster_version_naming_no_release_fails_naming_the_cluster(cluster_version):
    with pytest.raises(Failed, match=r"Cluster c1: ClusterVersion 'version' has no status.desired.image.*kmod_release"):
        _cluster_reads.summarize("c1", ["worker"], "auto", cluster_version)


def test_a_missing_pool_fails_listing_the_pools_the_cluster_has(cluster):
    with pytest.raises(Failed) as failed:
        _cluster_reads.summarize("c1", ["worker", "gpu-workers"], "auto", None, cluster["pools"], cluster["nodes"])
    assert str(failed.value) == ("Cluster c1: kmod_pools names MachineConfigPool(s) gpu-workers that the cluster "
                                 "does not have (it has infra, master, worker, worker-arm64); fix kmod_pools for "
                                 "this cluster.")


def test_the_architecture_rules_fail_the_read(cluster):
    # kmod_arch contradicting the nodes of a pool.
    with pytest.raises(Failed, match=r"cluster c1: kmod_arch is x86_64 but the nodes of pool worker-arm64"):
        _cluster_reads.summarize("c1", ["master", "worker-arm64"], "x86_64", None, cluster["pools"], cluster["nodes"])
    # A pool whose nodes mix architectures (the recorded worker pool has an arm64 node).
    with pytest.raises(Failed, match=r"pool worker mixes architectures \(aarch64: ip-10-0-2-21"):
        _cluster_reads.summarize("c1", ["worker"], "auto", None, cluster["pools"], cluster["nodes"])


class ApiError(Exception):
    def __init__(self, status):
        super(ApiError, self).__init__("HTTP %s" % status)
        self.status = status


class RecordedCluster(object):
    """Answers reads from the recorded objects; the first `failures` requests
    fail with `status` (as ClusterClient does with no retries of its own)."""

    name = "https://api.c1.example.com:6443"

    def __init__(self, cluster, failures=0, status=503):
        self.objects = {"MachineConfigPool": cluster["pools"], "Node": cluster["nodes"]}
        self.failures = failures
        self.status = status
        self.requests = []

    def _fail_maybe(self, what):
        self.requests.append(what)
        if self.failures:
            self.failures -= 1
            raise ClusterError(self.name, "GET " + what, ApiError(self.status))

    def get(self, kind, name, missing_ok=False):
        self._fail_maybe(kind)
        return CLUSTER_VERSION

    def list(self, kind):
        self._fail_maybe(kind)
        return self.objects[kind], "1"


PARAMS = {"read_cluster_version": True, "read_pools": True, "pool_names": ["worker-arm64"], "arch": "auto",
          "retries": 3, "retry_delay": 2, "cluster_name": "c1"}


def test_transient_errors_retry_the_reads_retry_delay_apart(cluster):
    client = RecordedCluster(cluster, failures=2)
    slept = []
    result = _cluster_reads.read(client, PARAMS, sleep=slept.append)
    assert result["pools"] == {"worker-arm64": "aarch64"} and result["release_image"] == RELEASE
    assert result["attempts"] == 3 and slept == [2, 2]


def test_the_reads_give_up_after_retries_and_at_once_on_a_lasting_error(cluster):
    client = RecordedCluster(cluster, failures=99)
    slept = []
    with pytest.raises(ClusterError, match="503"):
        _cluster_reads.read(client, PARAMS, sleep=slept.append)
    assert len(client.requests) == 1 + PARAMS["retries"] and len(slept) == PARAMS["retries"]
    forbidden = RecordedCluster(cluster, failures=99, status=403)
    with pytest.raises(ClusterError, match="403"):
        _cluster_reads.read(forbidden, PARAMS, sleep=slept.append)
    assert len(forbidden.requests) == 1


def test_nothing_is_read_that_was_not_asked_for(cluster):
    client = RecordedCluster(cluster)
    _cluster_reads.read(client, dict(PARAMS, read_cluster_version=False), sleep=None)
    assert client.requests == ["MachineConfigPool", "Node"]
    client = RecordedCluster(cluster)
    _cluster_reads.read(client, dict(PARAMS, read_pools=False), sleep=None)
    assert client.requests == ["ClusterVersion"]


MACHINECONFIG = {
    "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
    "metadata": {"name": "99-worker-kmod-layering", "labels": {"machineconfiguration.openshift.io/role": "worker"},
                 "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}",
                                 "kmod-layering.openshift.io/build-key": "k1"},
                 "managedFields": [{"manager": "kubectl"}]},
    "spec": {
        "osImageURL": "registry.example.com/kmods/rhcos@sha256:" + "cd" * 32,
        "config": {"ignition": {"version": "3.2.0"},
                   "passwd": {"users": [{"name": "core", "passwordHash": "$6$secret"}]}},
    },
}


def test_a_rollout_reads_machineconfigs_without_their_ignition_config():
    slim = _cluster_reads.without_config(MACHINECONFIG)
    assert "config" not in slim["spec"] and "managedFields" not in slim["metadata"]
    assert slim["spec"]["osImageURL"] == MACHINECONFIG["spec"]["osImageURL"]
    assert slim["metadata"]["annotations"] == {"kmod-layering.openshift.io/build-key": "k1"}
    assert slim["metadata"]["labels"] == MACHINECONFIG["metadata"]["labels"]
    # The object read is left as it was.
    assert "passwordHash" in str(MACHINECONFIG["spec"]["config"])


class RolloutCluster(RecordedCluster):
    def __init__(self, cluster, failures=0, status=503):
        super(RolloutCluster, self).__init__(cluster, failures, status)
        self.objects["MachineConfig"] = [MACHINECONFIG]


def test_the_rollout_reads_retry_as_a_whole_and_read_the_cluster_version_only_if_asked(cluster):
    client = RolloutCluster(cluster, failures=1)
    slept = []
    state = _cluster_reads.read_rollout_state(client, False, 3, 1, sleep=slept.append)
    assert [p["metadata"]["name"] for p in state["pools"]] == ["master", "worker", "worker-arm64", "infra"]
    assert state["machineconfigs"][0]["metadata"]["name"] == "99-worker-kmod-layering"
    assert "config" not in state["machineconfigs"][0]["spec"]
    assert state["cluster_version"] is None and state["attempts"] == 2 and slept == [1]
    assert "ClusterVersion" not in client.requests
    asked = RolloutCluster(cluster)
    assert _cluster_reads.read_rollout_state(asked, True, 3, 1, sleep=None)["cluster_version"] == CLUSTER_VERSION
