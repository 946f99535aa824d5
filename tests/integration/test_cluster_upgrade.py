"""The upgrade modules against a lab cluster whose CVO and MCO behave like
OpenShift's (kmodlab.cvo): cluster_upgrade_target reads what the CVO lists,
machineconfigpool_pause leaves a user's pause alone and refuses the master
pool, cluster_upgrade follows an upgrade to its end and fails naming the
operator that holds it. Ground truth: the objects as the lab's controllers
wrote them, and the API server's request log."""

from __future__ import annotations

from typing import Any, Iterator

import kubernetes
import pytest

from kmodlab import cluster, faults
from kmodlab.apiserver import RequestLogClient
from kmodlab.state import LabState

from test_resolve_modules import failed, ok, run_module  # the ansible runner of the module tests

PAUSED_FOR = "kmod-layering.openshift.io/paused-for"
MCO = "machineconfiguration.openshift.io/v1"


@pytest.fixture(scope="module")
def entry(lab: LabState) -> Iterator[dict[str, Any]]:
    (started,) = cluster.start_clusters(lab, 1, [lab.releases[0]["version"]], workers=1, masters=1, infra=1,
                                        node_mode="fast", operator_seconds=0.2, degraded_interval_seconds=2)
    try:
        yield started
    finally:
        cluster.stop_cluster(lab, started["name"])


def resource(entry: dict[str, Any], kind: str) -> Any:
    api_version = MCO if kind == "MachineConfigPool" else "config.openshift.io/v1"
    dynamic = kubernetes.dynamic.DynamicClient(kubernetes.config.new_client_from_config(config_file=entry["kubeconfig"]))
    return dynamic.resources.get(api_version=api_version, kind=kind)


def pool(entry: dict[str, Any], name: str) -> dict[str, Any]:
    return resource(entry, "MachineConfigPool").get(name=name).to_dict()


def writes(lab: LabState, entry: dict[str, Any]) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in RequestLogClient(entry["api_url"], entry["token"], lab.ca_file).records()
            if r.get("method") in ("POST", "PUT", "PATCH", "DELETE")
            and str(r.get("user_agent", "")).startswith("ocp.kmod_layering")]


def test_the_target_is_what_the_cvo_lists(lab: LabState, entry: dict[str, Any]) -> None:
    a, b = lab.releases[0]["version"], lab.releases[1]["version"]
    listed = ok(run_module("cluster_upgrade_target", {"kubeconfig": entry["kubeconfig"], "cluster_name": entry["name"]}))
    assert listed["current_version"] == a and not listed["upgrading"]
    assert b in [u["version"] for u in listed["available_updates"]]
    assert listed["target"]["source"] == "recommended"
    assert listed["target"]["version"] == listed["available_updates"][0]["version"]
    assert "@sha256:" in listed["target"]["image"]
    chosen = ok(run_module("cluster_upgrade_target", {"kubeconfig": entry["kubeconfig"], "requested": b}))
    assert chosen["target"]["version"] == b and chosen["target"]["source"] == "requested"
    # The pools the upgrade would pause are checked before anything is built.
    msg = failed(run_module("cluster_upgrade_target", {"kubeconfig": entry["kubeconfig"], "requested": b,
                                                       "pools": ["worker", "master"], "cluster_name": entry["name"]}))
    assert msg.startswith(f"Cluster {entry['name']}: MachineConfigPool master is required for the upgrade"), msg
    msg = failed(run_module("cluster_upgrade_target", {"kubeconfig": entry["kubeconfig"], "requested": b,
                                                       "pools": ["gpu"], "cluster_name": entry["name"]}))
    assert "MachineConfigPool(s) gpu not found (pools: infra, master, worker)" in msg
    msg = failed(run_module("cluster_upgrade_target", {"kubeconfig": entry["kubeconfig"], "requested": "4.99.1",
                                                       "cluster_name": entry["name"]}))
    assert f"Cluster {entry['name']} (on {a}): 4.99.1 is not one of the updates the cluster lists" in msg


def test_pausing_leaves_the_users_pause_alone_and_refuses_the_master_pool(lab: LabState, entry: dict[str, Any]) -> None:
    resource(entry, "MachineConfigPool").patch(
        name="infra", body={"spec": {"paused": True}}, content_type="application/merge-patch+json")
    args = {"kubeconfig": entry["kubeconfig"], "cluster_name": entry["name"], "pools": ["worker", "infra"]}
    before = writes(lab, entry)
    checked = ok(run_module("machineconfigpool_pause", dict(args, paused=True), check=True))
    assert checked["changed"] and [p["action"] for p in checked["pools"]] == ["pause", "none"]
    assert writes(lab, entry) == before and not pool(entry, "worker")["spec"].get("paused")

    paused = ok(run_module("machineconfigpool_pause", dict(args, paused=True, reason="upgrade to test")))
    assert paused["user_paused"] == ["infra"]
    worker = pool(entry, "worker")
    assert worker["spec"]["paused"] is True and worker["metadata"]["annotations"][PAUSED_FOR] == "upgrade to test"
    assert PAUSED_FOR not in (pool(entry, "infra")["metadata"].get("annotations") or {})

    msg = failed(run_module("machineconfigpool_pause", dict(args, pools=["worker", "master"], paused=True)))
    assert "MachineConfigPool master is required for the upgrade" in msg and "Nothing was changed" in msg

    unpaused = ok(run_module("machineconfigpool_pause", dict(args, paused=False)))
    assert [p["action"] for p in unpaused["pools"]] == ["unpause", "none"]
    worker, infra = pool(entry, "worker"), pool(entry, "infra")
    assert not worker["spec"]["paused"] and PAUSED_FOR not in (worker["metadata"].get("annotations") or {})
    assert infra["spec"]["paused"] is True  # the user's pause survives
    # Exactly one write per pause and unpause of the worker pool, none for infra or master.
    assert writes(lab, entry)[len(before):] == [f"PATCH /apis/{MCO}/machineconfigpools/worker"] * 2
    resource(entry, "MachineConfigPool").patch(
        name="infra", body={"spec": {"paused": False}}, content_type="application/merge-patch+json")


def test_the_upgrade_fails_naming_the_degraded_operator_then_a_rerun_finishes_it(
        lab: LabState, entry: dict[str, Any], tmp_path: Any) -> None:
    b = lab.releases[1]["version"]
    listed = ok(run_module("cluster_upgrade_target", {"kubeconfig": entry["kubeconfig"], "requested": b}))
    args = {"kubeconfig": entry["kubeconfig"], "cluster_name": entry["name"], "version": b,
            "image": listed["target"]["image"], "timeout": 300, "failing_timeout": 3,
            "progress_file": str(tmp_path / "upgrade.log")}
    faults.degrade_operator(entry["kubeconfig"], "network")
    try:
        result = run_module("cluster_upgrade", args)
        msg = failed(result)
        assert f"Cluster {entry['name']}: the upgrade to {b} has been failing for 3s" in msg
        assert "Cluster operator network is degraded" in msg, msg
        assert result["changed"] and result["phase"] == "progressing"
    finally:
        faults.heal_operator(entry["kubeconfig"], "network")
    # The CVO goes on once the operator recovers; the rerun only waits.
    done = ok(run_module("cluster_upgrade", args))
    assert done["done"] and not done["changed"] and done["history"][0] == dict(
        done["history"][0], state="Completed", version=b)
    version = resource(entry, "ClusterVersion").get(name="version").to_dict()
    assert version["status"]["history"][0]["state"] == "Completed" and version["status"]["desired"]["version"] == b
    progress = (tmp_path / "upgrade.log").read_text()
    assert f"Working towards {b}" in progress and f"done: cluster version is {b}" in progress
