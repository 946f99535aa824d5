"""_upgrade_wait.UpgradeWaiter over the cluster layer, against recorded API
responses served over HTTP to the real kubernetes client: the ClusterVersion,
ClusterOperators and pools as the CVO and the MCO write them; the test plays
the cluster-version operator by queuing the watch events an upgrade makes."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _upgrade
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import Failed
from ansible_collections.ocp.kmod_layering.plugins.module_utils._upgrade_wait import UpgradeWaiter

from recorded_api import MCO, RecordedApi, cluster_client, event

CONFIG = "/apis/config.openshift.io/v1"
CVS = CONFIG + "/clusterversions"
OPERATORS = CONFIG + "/clusteroperators"
POOLS = MCO + "/machineconfigpools"
A = "registry.example/ocp/release@sha256:" + "a" * 64
B = "registry.example/ocp/release@sha256:" + "b" * 64
TARGET = {"version": "4.16.30", "image": B}


def cluster_version() -> dict[str, Any]:
    return {"apiVersion": "config.openshift.io/v1", "kind": "ClusterVersion",
            "metadata": {"name": "version", "generation": 1, "resourceVersion": "100"},
            "spec": {"clusterID": "c0ffee"},
            "status": {"observedGeneration": 1, "desired": {"version": "4.12.77", "image": A},
                       "history": [{"state": "Completed", "version": "4.12.77", "image": A}],
                       "availableUpdates": [{"version": "4.16.30", "image": B}],
                       "conditions": [{"type": "Available", "status": "True"},
                                      {"type": "Progressing", "status": "False", "message": "Cluster version is 4.12.77"},
                                      {"type": "Failing", "status": "False"}]}}


def operator(name: str, version: str, degraded: bool = False) -> dict[str, Any]:
    return {"apiVersion": "config.openshift.io/v1", "kind": "ClusterOperator", "metadata": {"name": name},
            "status": {"versions": [{"name": "operator", "version": version}],
                       "conditions": [{"type": "Available", "status": "True"},
                                      {"type": "Degraded", "status": "True" if degraded else "False",
                                       "message": "%s: 1 of 3 replicas crash-looping" % name}]}}


def pool(name: str, updated: bool, paused: bool = False) -> dict[str, Any]:
    labels = {_upgrade.REQUIRED_FOR_UPGRADE_LABEL: ""} if name == "master" else {}
    return {"apiVersion": MCO[6:], "kind": "MachineConfigPool", "metadata": {"name": name, "labels": labels},
            "spec": {"paused": paused, "configuration": {"name": "rendered-%s-new" % name}},
            "status": {"machineCount": 3, "updatedMachineCount": 3 if updated else 0,
                       "configuration": {"name": "rendered-%s-%s" % (name, "new" if updated else "old")},
                       "conditions": [{"type": "Updated", "status": "True" if updated else "False"},
                                      {"type": "Degraded", "status": "False"}]}}


def progressing(cv: dict[str, Any], done: bool = False, failing: str | None = None) -> dict[str, Any]:
    """The ClusterVersion as the CVO writes it on its way to (or at) TARGET."""
    cv = copy.deepcopy(cv)
    status = cv["status"]
    status["observedGeneration"] = cv["metadata"]["generation"]
    status["desired"] = dict(TARGET)
    entry = {"state": "Completed" if done else "Partial", "version": "4.16.30", "image": B}
    status["history"] = [entry] + [h for h in status["history"] if h["version"] != "4.16.30"]
    status["conditions"] = [
        {"type": "Available", "status": "True"},
        {"type": "Progressing", "status": "False" if done else "True",
         "message": "Cluster version is 4.16.30" if done else "Working towards 4.16.30: 512 of 841 done (60% complete)"},
        {"type": "Failing", "status": "True" if failing else "False", "message": failing or ""}]
    return cv


@pytest.fixture
def api(serve_http):
    recorded = RecordedApi()
    recorded.lists[CVS] = [cluster_version()]
    recorded.objects[CVS + "/version"] = cluster_version()
    recorded.lists[OPERATORS] = [operator("kube-apiserver", "4.12.77"), operator("machine-config", "4.12.77")]
    recorded.lists[POOLS] = [pool("master", True), pool("worker", True, paused=True)]
    address = serve_http(recorded.handler())
    yield recorded, address
    recorded.closed.set()


def params(**overrides):
    values = dict(wait=True, timeout=20, failing_timeout=600, request_timeout=5, progress_file=None)
    values.update(overrides)
    return values


def waiter(address, check_mode=False, **overrides):
    return UpgradeWaiter(cluster_client(address, request_timeout=5), params(**overrides), dict(TARGET),
                         check_mode=check_mode)


def test_asks_for_the_upgrade_then_follows_it_by_watch_until_completed(api, tmp_path):
    recorded, address = api
    progress = tmp_path / "upgrade.log"

    def logged(text):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if progress.exists() and text in progress.read_text():
                return
            time.sleep(0.02)
        raise AssertionError("never logged: %s" % text)

    def cvo(cv):
        # The CVO's answer to desiredUpdate, one step after the waiter has
        # seen the last (watch streams of different kinds are not ordered):
        # Partial; the API server on the new version, the master pool
        # rolling; the master pool done and machine-config on the new
        # version; Completed. The paused worker pool never moves.
        recorded.watch(CVS, event("MODIFIED", progressing(cv), 200))
        logged("Working towards 4.16.30")
        recorded.watch(OPERATORS, event("MODIFIED", operator("kube-apiserver", "4.16.30"), 201))
        recorded.watch(POOLS, event("MODIFIED", pool("master", False), 202))
        logged("waiting on ClusterOperator(s) not on 4.16.30 yet: machine-config; MachineConfigPool master")
        recorded.watch(POOLS, event("MODIFIED", pool("master", True), 203))
        recorded.watch(OPERATORS, event("MODIFIED", operator("machine-config", "4.16.30"), 204))
        logged("512 of 841 done (60% complete))\n")  # a progressing line with nothing holding it
        recorded.watch(CVS, event("MODIFIED", progressing(cv, done=True), 205))
    recorded.on_patch = lambda path, cv: threading.Thread(target=cvo, args=(cv,), daemon=True).start()
    result = waiter(address, progress_file=str(progress)).run()
    assert result["done"] and result["changed"] and result["phase"] == "completed"
    assert (result["from_version"], result["to_version"]) == ("4.12.77", "4.16.30")
    (patch,) = recorded.patches
    assert patch == (CVS + "/version", {"spec": {"desiredUpdate": {"version": "4.16.30", "image": B, "force": False}}})
    assert result["history"][0]["state"] == "Completed" and result["holders"] == []
    assert progress.read_text().splitlines()[-1].endswith("done: cluster version is 4.16.30")
    # Followed by watching, not polling: one list of each kind.
    assert [recorded.count("GET", path, watch=False) for path in (CVS, OPERATORS, POOLS)] == [1, 1, 1]


def test_a_cluster_already_on_the_target_is_left_alone(api, tmp_path):
    recorded, address = api
    done = progressing(cluster_version(), done=True)
    recorded.lists[CVS] = [done]
    progress = tmp_path / "upgrade.log"
    result = waiter(address, progress_file=str(progress)).run()
    assert result["done"] and not result["changed"] and recorded.patches == []
    # A rerun that finds the upgrade done says so in the progress file too.
    assert progress.read_text().splitlines()[-1].endswith("done: cluster version is 4.16.30")


def test_a_cluster_upgrading_elsewhere_fails_before_any_write(api):
    recorded, address = api
    elsewhere = progressing(cluster_version())
    elsewhere["status"]["desired"] = {"version": "4.14.40", "image": A}
    elsewhere["status"]["history"][0].update(version="4.14.40")
    recorded.lists[CVS] = [elsewhere]
    with pytest.raises(Failed, match="Cluster lab-a: the cluster is upgrading to 4.14.40.*not to 4.16.30"):
        waiter(address).run()
    assert recorded.patches == []


def test_check_mode_says_it_would_ask_and_writes_nothing(api):
    recorded, address = api
    result = waiter(address, check_mode=True).run()
    assert result["changed"] and not result["done"] and "would set spec.desiredUpdate" in result["message"]
    assert recorded.patches == []


def test_a_release_the_cvo_refuses_fails_with_its_words(api):
    recorded, address = api

    def refuse(path, cv):
        cv = copy.deepcopy(cv)
        cv["metadata"]["generation"] = 2
        cv["status"]["observedGeneration"] = 2
        cv["status"]["conditions"].append({"type": "ReleaseAccepted", "status": "False", "reason": "RetrievePayload",
                                           "message": "The update cannot be verified: no trusted signature"})
        recorded.watch(CVS, event("MODIFIED", cv, 300))
    recorded.on_patch = refuse
    with pytest.raises(Failed, match="did not accept the upgrade to 4.16.30: RetrievePayload: The update cannot be"):
        waiter(address).run()


def test_a_failing_old_release_before_the_cvo_takes_the_upgrade_is_not_the_upgrade_failing(api):
    recorded, address = api

    def reconciling_then_upgrading(cv):
        # The CVO has read desiredUpdate but still reconciles the old
        # release, and an operator degraded meanwhile: Failing=True, not yet
        # Progressing towards the target (status.go "Error while reconciling").
        old = copy.deepcopy(cv)
        old["status"]["observedGeneration"] = old["metadata"]["generation"]
        old["status"]["conditions"] = [
            {"type": "Available", "status": "True"},
            {"type": "Progressing", "status": "False", "message": "Error while reconciling 4.12.77"},
            {"type": "Failing", "status": "True", "message": "Cluster operator network is degraded"}]
        recorded.watch(CVS, event("MODIFIED", old, 400))
        time.sleep(1.5)  # longer than failing_timeout
        old["metadata"]["resourceVersion"] = "401"
        recorded.watch(CVS, event("MODIFIED", old, 401))
        time.sleep(0.5)  # the waiter decides on 401 before the upgrade's events come
        recorded.watch(CVS, event("MODIFIED", progressing(cv), 402))
        recorded.watch(CVS, event("MODIFIED", progressing(cv, done=True), 403))
    recorded.on_patch = lambda path, cv: threading.Thread(target=reconciling_then_upgrading, args=(cv,),
                                                          daemon=True).start()
    result = waiter(address, failing_timeout=1).run()
    assert result["done"] and result["phase"] == "completed"


def test_failing_for_longer_than_failing_timeout_names_the_degraded_operator(api):
    recorded, address = api

    def stuck(path, cv):
        recorded.watch(OPERATORS, event("MODIFIED", operator("kube-apiserver", "4.12.77", degraded=True), 400))
        recorded.watch(CVS, event("MODIFIED", progressing(
            cv, failing="Cluster operator kube-apiserver is degraded"), 401))
    recorded.on_patch = stuck
    with pytest.raises(Failed) as failure:
        waiter(address, failing_timeout=1).run()
    message = failure.value.msg
    assert "has been failing for 1s: Cluster operator kube-apiserver is degraded" in message
    assert "ClusterOperator kube-apiserver is degraded: kube-apiserver: 1 of 3 replicas crash-looping" in message
    assert failure.value.result["phase"] == "progressing"
