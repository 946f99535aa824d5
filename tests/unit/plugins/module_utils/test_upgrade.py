"""_upgrade: choosing an upgrade's target, reading where the CVO is with it,
what holds it, and which pools a pause touches. The objects are written the
way the cluster-version operator and the MCO fill them (openshift/api
config/v1 ClusterVersion, ClusterOperator; machineconfiguration/v1 pools)."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _upgrade

A = "registry.example/ocp/release@sha256:" + "a" * 64
B = "registry.example/ocp/release@sha256:" + "b" * 64
C = "registry.example/ocp/release@sha256:" + "c" * 64


def cv(version: str = "4.12.77", image: str = A, history: list[dict[str, Any]] | None = None,
       updates: list[tuple[str, str]] = (("4.16.30", B), ("4.18.12", C)), desired_update: dict | None = None,
       conditions: list[dict[str, Any]] | None = None, generation: int | None = None,
       observed: int | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": "version"},
        "spec": {"clusterID": "x"},
        "status": {
            "desired": {"version": version, "image": image},
            "history": history if history is not None else [
                {"state": "Completed", "version": version, "image": image}],
            "availableUpdates": [{"version": v, "image": i} for v, i in updates],
            "conditions": conditions or [{"type": "Progressing", "status": "False",
                                          "message": "Cluster version is %s" % version}],
        },
    }
    if desired_update is not None:
        obj["spec"]["desiredUpdate"] = desired_update
    if generation is not None:
        obj["metadata"]["generation"] = generation
    if observed is not None:
        obj["status"]["observedGeneration"] = observed
    return obj


def upgrading(to: str, image: str) -> dict[str, Any]:
    return cv(version=to, image=image, desired_update={"version": to, "image": image},
              history=[{"state": "Partial", "version": to, "image": image},
                       {"state": "Completed", "version": "4.12.77", "image": A}],
              conditions=[{"type": "Progressing", "status": "True", "message": "Working towards %s: 106 of 841 done" % to}])


def test_version_order_puts_a_release_after_its_candidates() -> None:
    versions = ["4.16.9", "4.16.10", "4.17.0-rc.2", "4.17.0", "4.17.0-ec.1", "4.9.59"]
    ordered = sorted(versions, key=_upgrade.version_key)
    assert ordered == ["4.9.59", "4.16.9", "4.16.10", "4.17.0-ec.1", "4.17.0-rc.2", "4.17.0"]
    assert _upgrade.version_key("latest") is None


def test_without_a_request_the_newest_listed_update_is_the_target() -> None:
    target = _upgrade.choose_target(cv(updates=[("4.16.30", B), ("4.18.12", C), ("4.14.1", A)]))
    assert target == {"version": "4.18.12", "image": C, "source": "recommended"}
    assert _upgrade.choose_target(cv(updates=[])) is None


def test_a_requested_version_or_image_must_be_listed() -> None:
    assert _upgrade.choose_target(cv(), "4.16.30")["image"] == B
    # By image: the same digest under another repository name (a mirror) matches.
    mirrored = "mirror.example/ocp4/release@sha256:" + "b" * 64
    assert _upgrade.choose_target(cv(), mirrored) == {"version": "4.16.30", "image": B, "source": "requested"}
    with pytest.raises(_upgrade.UpgradeError, match=r"4\.17\.3 is not one of the updates.*4\.18\.12, 4\.16\.30"):
        _upgrade.choose_target(cv(), "4.17.3", cluster="lab-a")
    with pytest.raises(_upgrade.UpgradeError, match="is not one of the updates"):
        _upgrade.choose_target(cv(), "mirror.example/ocp4/release@sha256:" + "d" * 64)


def test_older_versions_and_nonsense_are_refused() -> None:
    with pytest.raises(_upgrade.UpgradeError, match="older, and OpenShift does not downgrade"):
        _upgrade.choose_target(cv(version="4.16.30", image=B, updates=[]), "4.12.77")
    with pytest.raises(_upgrade.UpgradeError, match="neither an OpenShift version"):
        _upgrade.choose_target(cv(), "stable-4.16")


def test_the_release_the_cluster_runs_or_moves_to_is_a_target_with_nothing_to_start() -> None:
    assert _upgrade.choose_target(cv(), "4.12.77")["source"] == "current"
    assert _upgrade.choose_target(upgrading("4.16.30", B), "4.16.30")["source"] == "in_progress"
    assert _upgrade.choose_target(upgrading("4.16.30", B), B)["source"] == "in_progress"
    # Nothing requested mid-upgrade: finish that upgrade, not the newest listed one.
    assert _upgrade.choose_target(upgrading("4.16.30", B)) == {"version": "4.16.30", "image": B, "source": "in_progress"}


def test_phase_follows_desired_history_and_conditions() -> None:
    target = {"version": "4.16.30", "image": B}
    assert _upgrade.upgrade_phase(cv(), target)[0] == _upgrade.PHASE_NOT_STARTED
    phase, message = _upgrade.upgrade_phase(upgrading("4.16.30", B), target)
    assert phase == _upgrade.PHASE_PROGRESSING and "106 of 841" in message
    done = cv(version="4.16.30", image=B, history=[{"state": "Completed", "version": "4.16.30", "image": B},
                                                   {"state": "Completed", "version": "4.12.77", "image": A}])
    assert _upgrade.upgrade_phase(done, target)[0] == _upgrade.PHASE_COMPLETED
    assert _upgrade.current_version(upgrading("4.16.30", B)) == "4.12.77"
    # Another upgrade under way.
    assert _upgrade.upgrade_phase(upgrading("4.18.12", C), target)[0] == _upgrade.PHASE_ELSEWHERE


def test_a_release_the_cvo_did_not_accept_is_refused_only_once_it_read_the_request() -> None:
    target = {"version": "4.16.30", "image": B}
    refused = [{"type": "ReleaseAccepted", "status": "False", "reason": "RetrievePayload",
                "message": "Retrieving payload failed: signature verification failed"},
               {"type": "Progressing", "status": "False"}]
    seen = cv(desired_update={"version": "4.16.30", "image": B}, conditions=refused, generation=3, observed=3)
    phase, message = _upgrade.upgrade_phase(seen, target)
    assert phase == _upgrade.PHASE_REFUSED and "RetrievePayload" in message and "signature" in message
    # The condition is about an earlier request: generation 4 not observed yet.
    unseen = cv(desired_update={"version": "4.16.30", "image": B}, conditions=refused, generation=4, observed=3)
    assert _upgrade.upgrade_phase(unseen, target)[0] == _upgrade.PHASE_NOT_STARTED
    # A refusal of something else is not ours.
    other = cv(desired_update={"version": "4.18.12", "image": C}, conditions=refused, generation=3, observed=3)
    assert _upgrade.upgrade_phase(other, target)[0] == _upgrade.PHASE_NOT_STARTED


def operator(name: str, version: str, **conditions: str) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "status": {"versions": [{"name": "operator", "version": version}, {"name": name, "version": "x"}],
                       "conditions": [{"type": t, "status": s, "message": "%s is %s" % (name, t)}
                                      for t, s in conditions.items()]}}


def pool(name: str, updated: int, total: int, required: bool = False, paused: bool = False,
         annotations: dict | None = None) -> dict[str, Any]:
    labels = {_upgrade.REQUIRED_FOR_UPGRADE_LABEL: ""} if required else {}
    done = updated == total
    return {"metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
            "spec": {"paused": paused, "configuration": {"name": "rendered-%s-new" % name}},
            "status": {"machineCount": total, "updatedMachineCount": updated,
                       "configuration": {"name": "rendered-%s-%s" % (name, "new" if done else "old")},
                       "conditions": [{"type": "Updated", "status": "True" if done else "False"},
                                      {"type": "Degraded", "status": "False"}]}}


def test_holders_name_degraded_operators_first_then_laggards_then_required_pools() -> None:
    operators = [operator("network", "4.16.30", Available="True"),
                 operator("machine-config", "4.12.77", Available="True"),
                 operator("kube-apiserver", "4.12.77", Available="True", Degraded="True")]
    pools = [pool("master", 1, 3, required=True), pool("worker", 0, 2, paused=True)]
    held = _upgrade.holders("4.16.30", operators, pools)
    assert held[0].startswith("ClusterOperator kube-apiserver is degraded")
    assert held[1] == "ClusterOperator(s) not on 4.16.30 yet: machine-config"
    assert held[2].startswith("MachineConfigPool master (required for the upgrade): 1 of 3")
    # The paused worker pool does not hold the upgrade.
    assert not any("worker" in h for h in held)
    assert _upgrade.holders("4.16.30", [operator("network", "4.16.30")], [pool("master", 3, 3, required=True)]) == []


def test_pausing_marks_the_pools_it_pauses_and_leaves_a_users_pause_alone() -> None:
    pools = [pool("worker", 2, 2), pool("infra", 1, 1, paused=True), pool("master", 3, 3, required=True)]
    plan = _upgrade.pause_plan(pools, ["worker", "infra"], True, "upgrade to 4.16.30")
    assert plan[0]["action"] == "pause" and plan[0]["paused_by"] == "kmod_layering"
    assert plan[0]["patch"] == {"metadata": {"annotations": {_upgrade.PAUSED_FOR_ANNOTATION: "upgrade to 4.16.30"}},
                                "spec": {"paused": True}}
    assert plan[1] == {"name": "infra", "action": "none", "paused_by": "user", "patch": None}
    # Unpausing: only ours; the user's pause survives.
    pools = [pool("worker", 2, 2, paused=True, annotations={_upgrade.PAUSED_FOR_ANNOTATION: "upgrade"}),
             pool("infra", 1, 1, paused=True)]
    plan = _upgrade.pause_plan(pools, ["worker", "infra"], False)
    assert plan[0]["action"] == "unpause" and plan[0]["patch"]["spec"] == {"paused": False}
    assert plan[0]["patch"]["metadata"]["annotations"] == {_upgrade.PAUSED_FOR_ANNOTATION: None}
    assert plan[1]["action"] == "none" and plan[1]["paused_by"] == "user"
    # Pausing again what we paused changes nothing.
    assert _upgrade.pause_plan(pools, ["worker"], True)[0]["action"] == "none"


def test_a_required_or_missing_pool_is_refused_before_any_patch() -> None:
    pools = [pool("worker", 2, 2), pool("master", 3, 3, required=True)]
    with pytest.raises(_upgrade.UpgradeError, match="master is required for the upgrade"):
        _upgrade.pause_plan(pools, ["worker", "master"], True)
    with pytest.raises(_upgrade.UpgradeError, match=r"MachineConfigPool\(s\) gpu not found \(pools: master, worker\)"):
        _upgrade.pause_plan(pools, ["worker", "gpu"], True)
    # Unpausing the master pool is fine (it was never ours to pause: nothing to do).
    assert _upgrade.pause_plan(pools, ["master"], False)[0]["action"] == "none"
