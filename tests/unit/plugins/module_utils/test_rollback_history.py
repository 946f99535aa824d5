# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The pre-write gates (degraded pool, cluster upgrading), the history annotation
of our MachineConfig, rollback plans, and the removal target of _mco."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _machineconfig, _mco

V1 = "registry.example.com/infra/rhcos-kmods@sha256:" + "1" * 64
V2 = "registry.example.com/infra/rhcos-kmods@sha256:" + "2" * 64
V3 = "registry.example.com/infra/rhcos-kmods@sha256:" + "3" * 64
ROLE = _mco.ROLE_LABEL
OURS = "99-kmod-layering-worker"


def pool(name="worker", conditions=(), degraded=0, paused=False):
    return {"metadata": {"name": name},
            "spec": {"paused": paused, "machineConfigSelector": {"matchLabels": {ROLE: name}}},
            "status": {"degradedMachineCount": degraded,
                       "conditions": [{"type": t, "status": s, "message": m} for t, s, m in conditions]}}


def mc(image, **kwargs):
    return _machineconfig.build_machineconfig("worker", image, **kwargs)


# --- degraded pool -------------------------------------------------------------------


def test_a_healthy_pool_passes():
    ok = pool(conditions=[("Degraded", "False", ""), ("NodeDegraded", "False", ""), ("Updated", "True", "")])
    assert _machineconfig.pool_problem("worker", [ok], "c1") is None


def test_a_degraded_pool_is_refused_naming_cluster_pool_reason_and_what_to_do():
    bad = pool(conditions=[("Degraded", "True", 'Node w1 is reporting: "boom"'),
                           ("NodeDegraded", "True", 'Node w1 is reporting: "boom"')], degraded=1)
    msg = _machineconfig.pool_problem("worker", [bad], "c1")
    assert msg.startswith("MachineConfigPool worker on cluster c1 is degraded (Degraded=True: Node w1 is reporting")
    assert "degradedMachineCount=1" in msg and "playbooks/rollback.yml" in msg


def test_render_degraded_alone_and_a_degraded_count_alone_are_refused():
    assert "RenderDegraded=True: no config" in _machineconfig.pool_problem(
        "worker", [pool(conditions=[("RenderDegraded", "True", "no config")])], "c1")
    assert "degradedMachineCount=2" in _machineconfig.pool_problem("worker", [pool(degraded=2)], "c1")


def test_a_rollback_skips_the_degraded_gate_but_not_the_paused_one():
    bad = pool(conditions=[("Degraded", "True", "x")])
    assert _machineconfig.pool_problem("worker", [bad], "c1", check_degraded=False) is None
    paused = pool(conditions=[("Degraded", "True", "x")], paused=True)
    assert "is paused" in _machineconfig.pool_problem("worker", [paused], "c1", check_degraded=False)


# --- cluster upgrading ---------------------------------------------------------------


def cluster_version(progressing):
    return {"metadata": {"name": "version"},
            "status": {"desired": {"version": "4.14.9"},
                       "conditions": [{"type": "Available", "status": "True"},
                                      {"type": "Progressing", "status": progressing,
                                       "message": "Working towards 4.14.9: 106 of 860 done (12% complete)"}]}}


def test_an_upgrading_cluster_is_refused_unless_allowed():
    msg = _machineconfig.cluster_version_problem(cluster_version("True"), "c1")
    assert msg.startswith("Cluster c1 is being upgraded (ClusterVersion Progressing=True: Working towards 4.14.9")
    assert "desired version 4.14.9" in msg and "kmod_allow_upgrading_cluster: true" in msg
    assert _machineconfig.cluster_version_problem(cluster_version("True"), "c1", allow_upgrading=True) is None


def test_a_settled_cluster_or_no_clusterversion_passes():
    assert _machineconfig.cluster_version_problem(cluster_version("False"), "c1") is None
    assert _machineconfig.cluster_version_problem(None, "c1") is None
    assert _machineconfig.cluster_version_problem({}, "c1") is None


# --- history ---------------------------------------------------------------------------


def test_creating_ours_records_no_history():
    created = _machineconfig.with_history(mc(V1), None)
    assert _machineconfig.ANNOTATION_HISTORY not in created["metadata"].get("annotations", {})
    assert _machineconfig.history_of(created) == []


def test_changing_the_image_pushes_the_previous_state():
    v1 = mc(V1, build_key="k1", modules=["a", "b"], kernel_version="6.1.0-50", release="4.12.1")
    v2 = _machineconfig.with_history(mc(V2, build_key="k2"), v1)
    assert _machineconfig.history_of(v2) == [
        {"osImageURL": V1, "build-key": "k1", "modules": "a,b", "kernel-version": "6.1.0-50", "release": "4.12.1"}]
    assert _machineconfig.validate_machineconfig(v2, pool="worker") == []


def test_a_rerun_with_the_same_image_keeps_the_history_unchanged():
    v2 = _machineconfig.with_history(mc(V2), _machineconfig.with_history(mc(V1), None) and mc(V1))
    again = _machineconfig.with_history(mc(V2), v2)
    assert again == v2


def test_history_is_bounded():
    current = mc(V1)
    images = [V1, V2, V3] * 3
    for image in images[1:]:
        current = _machineconfig.with_history(mc(image), current)
    history = _machineconfig.history_of(current)
    assert len(history) == _machineconfig.HISTORY_MAX
    assert history[-1]["osImageURL"] == images[-2]


def test_an_unreadable_history_counts_as_none():
    broken = mc(V2)
    broken["metadata"]["annotations"] = {_machineconfig.ANNOTATION_HISTORY: "{not json"}
    assert _machineconfig.history_of(broken) == []
    tagged = mc(V2)
    tagged["metadata"]["annotations"] = {_machineconfig.ANNOTATION_HISTORY: json.dumps([{"osImageURL": "x:latest"}])}
    assert _machineconfig.history_of(tagged) == []


# --- rollback ----------------------------------------------------------------------------


def test_rollback_restores_the_previous_image_and_its_annotations():
    v1 = mc(V1, build_key="k1", modules=["a"])
    v2 = _machineconfig.with_history(mc(V2, build_key="k2", modules=["a", "b"]), v1)
    v3 = _machineconfig.with_history(mc(V3), v2)
    plan = _machineconfig.rollback_plan(v3, "worker")
    assert plan["action"] == "restore" and plan["os_image_url"] == V2 and plan["current"] == V3
    restored = plan["machineconfig"]
    assert restored["spec"] == {"osImageURL": V2}
    assert restored["metadata"]["annotations"][_machineconfig.ANNOTATION_MODULES] == "a,b"
    assert restored["metadata"]["labels"][_machineconfig.LABEL_BUILD_KEY] == "k2"
    assert restored["metadata"]["annotations"][_machineconfig.ANNOTATION_ROLLED_BACK_FROM] == V3
    assert _machineconfig.validate_machineconfig(restored, pool="worker") == []
    # Idempotent: rolling back the rolled-back MachineConfig changes nothing.
    again = _machineconfig.rollback_plan(restored, "worker")
    assert again["action"] == "none" and again["machineconfig"] is None
    assert again["reason"] == "already rolled back from %s to %s" % (V3, V2)
    # The next rollout drops the mark and records V2 again.
    v4 = _machineconfig.with_history(mc(V1), restored)
    assert _machineconfig.ANNOTATION_ROLLED_BACK_FROM not in v4["metadata"]["annotations"]
    assert [e["osImageURL"] for e in _machineconfig.history_of(v4)] == [V1, V2]
    plan = _machineconfig.rollback_plan(v4, "worker")
    assert plan["action"] == "restore" and plan["os_image_url"] == V2


def test_rollback_without_history_deletes_and_without_ours_does_nothing():
    plan = _machineconfig.rollback_plan(mc(V1), "worker")
    assert plan == {"action": "delete", "machineconfig": None, "os_image_url": None, "current": V1,
                    "reason": "no previous image of ours: delete our MachineConfig"}
    assert _machineconfig.rollback_plan(None, "worker")["action"] == "none"


# --- removal target ------------------------------------------------------------------------


def test_a_removal_target_is_pending_while_the_rendered_config_lists_ours():
    with_ours = {"metadata": {"name": "worker"}, "spec": {"configuration": {
        "name": "rendered-worker-1", "source": [{"name": "00-worker"}, {"name": OURS}]}}}
    target = _mco.RolloutTarget(absent_machine_configs=[OURS])
    ok, reason = _mco.rendered_config_status(with_ours, target)
    assert not ok and reason == "rendered-worker-1 still includes MachineConfig %s" % OURS
    without = {"metadata": {"name": "worker"}, "spec": {"configuration": {
        "name": "rendered-worker-0", "source": [{"name": "00-worker"}]}}}
    assert _mco.rendered_config_status(without, target) == (True, "")
    assert target.describe() == "no MachineConfig %s" % OURS
