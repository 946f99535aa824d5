# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Pool status rules (_mco) over MachineConfigPool / Node / MachineConfig
objects in the shape the MCO writes them (tests/unit/fixtures/mco/)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import os

import pytest
import yaml

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _mco

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "mco")

OLD = "rendered-worker-3f2a9c1d7e5b48a6c0d9e8f7a6b5c4d3"
NEW = "rendered-worker-b81e4d2c9a7f60e3d5c4b3a29180f7e6"
KMOD_MC = "99-worker-kmod-layering"
KMOD_IMG = "registry.example.com/kmods/rhcos-kmod@sha256:0c4e2b7a9d1f3e5a7c9b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a3c5b7d9f2e4a"
DEFAULT_IMG = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:5b1a0d7e9c3f2a48b6d0e1f9c8a7b6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9"

BY_MC = _mco.RolloutTarget(machine_config=KMOD_MC)
BY_IMAGE = _mco.RolloutTarget(os_image_url=KMOD_IMG)
BY_BOTH = _mco.RolloutTarget(machine_config=KMOD_MC, os_image_url=KMOD_IMG)
TARGETS = [BY_MC, BY_IMAGE, BY_BOTH]


def load(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return yaml.safe_load(f)["items"]


def scenario(name):
    """(pool, nodes, rendered configs by name) of a one-pool fixture."""
    items = load(name)
    pools = [i for i in items if i["kind"] == "MachineConfigPool"]
    nodes = [i for i in items if i["kind"] == "Node"]
    rendered = dict((i["metadata"]["name"], i) for i in items if i["kind"] == "MachineConfig")
    assert len(pools) == 1
    return pools[0], _mco.pool_nodes(pools[0], pools, nodes), rendered


def evaluate(name, target):
    pool, nodes, rendered = scenario(name)
    return _mco.evaluate_pool(pool, nodes, target, rendered)


# --- evaluate_pool -----------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS, ids=["mc", "image", "both"])
def test_done(target):
    result = evaluate("done.yaml", target)
    assert result.phase == _mco.PHASE_DONE
    assert result.done
    assert result.rendered_config == NEW
    assert (result.machine_count, result.updated, result.ready, result.degraded) == (3, 3, 3, 0)
    assert [n["updated"] for n in result.nodes] == [True, True, True]
    out = result.as_dict()
    assert out["done"] is True and out["updated_machine_count"] == 3
    assert "3/3 updated" in out["message"]


@pytest.mark.parametrize("target", TARGETS, ids=["mc", "image", "both"])
def test_old_rendered_config_updated_true_is_pending_not_done(target):
    # The race a fixed pause gets wrong: Updated=True, 3/3/3, but about the OLD config.
    pool, _nodes, _rendered = scenario("pending_old_updated.yaml")
    assert _mco.condition_is_true(pool, "Updated")
    result = evaluate("pending_old_updated.yaml", target)
    assert result.phase == _mco.PHASE_PENDING
    assert not result.done
    assert result.rendered_config == OLD
    assert not result.target_included


def test_pending_reason_names_what_is_missing():
    assert "does not include MachineConfig %s" % KMOD_MC in evaluate("pending_old_updated.yaml", BY_MC).reason
    reason = evaluate("pending_old_updated.yaml", BY_IMAGE).reason
    assert "has osImageURL %s, not %s" % (DEFAULT_IMG, KMOD_IMG) in reason


def test_image_target_needs_the_rendered_config():
    pool, nodes, _rendered = scenario("done.yaml")
    result = _mco.evaluate_pool(pool, nodes, BY_IMAGE, {})
    assert result.phase == _mco.PHASE_PENDING
    assert "not read yet" in result.reason


def test_image_target_other_image_is_pending():
    pool, nodes, rendered = scenario("done.yaml")
    other = _mco.RolloutTarget(os_image_url=KMOD_IMG.replace("@sha256:0c4e", "@sha256:ffff"))
    assert _mco.evaluate_pool(pool, nodes, other, rendered).phase == _mco.PHASE_PENDING


@pytest.mark.parametrize("target", TARGETS, ids=["mc", "image", "both"])
def test_mid_rollout_is_progressing_with_node_states(target):
    result = evaluate("mid_rollout.yaml", target)
    assert result.phase == _mco.PHASE_PROGRESSING
    assert result.target_included
    assert (result.updated, result.ready, result.unavailable) == (1, 1, 1)
    by_name = dict((n["name"], n) for n in result.nodes)
    draining = by_name["ip-10-0-162-90.eu-west-1.compute.internal"]
    assert draining["state"] == "Working"
    assert draining["unschedulable"] is True
    assert draining["current_config"] == OLD and draining["desired_config"] == NEW
    assert not draining["updated"]
    assert by_name["ip-10-0-131-27.eu-west-1.compute.internal"]["updated"]
    line = result.progress_line()
    assert "1/3 updated" in line and "ip-10-0-162-90.eu-west-1.compute.internal (Working)" in line


def test_degraded_node_named_with_reason():
    result = evaluate("degraded_node.yaml", BY_MC)
    assert result.phase == _mco.PHASE_DEGRADED
    assert [n["name"] for n in result.degraded_nodes] == ["ip-10-0-162-90.eu-west-1.compute.internal"]
    assert result.degraded_nodes[0]["state"] == "Degraded"
    assert "unauthorized: authentication required" in result.degraded_nodes[0]["reason"]
    assert "node ip-10-0-162-90.eu-west-1.compute.internal is Degraded: failed to update OS" in result.reason


def test_node_degraded_unreconcilable():
    result = evaluate("node_degraded_unreconcilable.yaml", BY_MC)
    assert result.phase == _mco.PHASE_DEGRADED
    assert result.degraded == 1
    assert result.degraded_nodes == [{
        "name": "ip-10-0-131-27.eu-west-1.compute.internal",
        "state": "Unreconcilable",
        "reason": result.nodes[0]["reason"],
    }]
    assert "ignition disks section contains changes" in result.reason


def test_node_degraded_condition_without_node_list():
    # Judged on the pool alone (nodes=None), the NodeDegraded condition still tells.
    pool, _nodes, rendered = scenario("node_degraded_unreconcilable.yaml")
    result = _mco.evaluate_pool(pool, None, BY_MC, rendered)
    assert result.phase == _mco.PHASE_DEGRADED
    assert result.degraded_nodes == []
    assert "NodeDegraded: Node ip-10-0-131-27.eu-west-1.compute.internal is reporting" in result.reason


def test_render_degraded_is_degraded_not_pending():
    result = evaluate("render_degraded.yaml", BY_MC)
    assert result.phase == _mco.PHASE_DEGRADED
    assert result.degraded_nodes == []
    assert result.reason.startswith("RenderDegraded: Failed to render configuration for pool worker")


def test_paused():
    result = evaluate("paused.yaml", BY_MC)
    assert result.phase == _mco.PHASE_PAUSED
    assert result.paused and result.target_included
    assert "spec.paused" in result.reason


def test_paused_but_already_done_is_done():
    pool, nodes, rendered = scenario("done.yaml")
    pool = copy.deepcopy(pool)
    pool["spec"]["paused"] = True
    assert _mco.evaluate_pool(pool, nodes, BY_MC, rendered).phase == _mco.PHASE_DONE


def test_paused_before_pickup_reports_both():
    pool, nodes, rendered = scenario("pending_old_updated.yaml")
    pool = copy.deepcopy(pool)
    pool["spec"]["paused"] = True
    result = _mco.evaluate_pool(pool, nodes, BY_MC, rendered)
    assert result.phase == _mco.PHASE_PAUSED
    assert "does not include MachineConfig" in result.reason


def test_observed_generation_lag_is_pending():
    result = evaluate("generation_lag.yaml", BY_MC)
    assert result.phase == _mco.PHASE_PENDING
    assert result.target_included
    assert "observedGeneration 3 < generation 4" in result.reason


def test_observed_generation_lag_blocks_done():
    result = evaluate("generation_lag_after_done.yaml", BY_BOTH)
    assert result.phase == _mco.PHASE_PENDING
    assert "observedGeneration 5 < generation 6" in result.reason


def test_machine_count_mismatch_with_new_node_is_not_done():
    result = evaluate("machinecount_mismatch.yaml", BY_MC)
    assert result.phase == _mco.PHASE_PROGRESSING
    assert len(result.nodes) == 4 and result.machine_count == 3
    assert "machineCount 3 but 4 node(s)" in result.reason


def test_counts_not_ready_is_not_done():
    result = evaluate("counts_not_ready.yaml", BY_MC)
    assert result.phase == _mco.PHASE_PROGRESSING
    assert not result.nodes[2]["ready"]


def test_updated_condition_required():
    pool, nodes, rendered = scenario("done.yaml")
    pool = copy.deepcopy(pool)
    for cond in pool["status"]["conditions"]:
        if cond["type"] == "Updated":
            cond["status"] = "False"
    assert _mco.evaluate_pool(pool, nodes, BY_MC, rendered).phase == _mco.PHASE_PROGRESSING


def test_node_not_done_blocks_done_even_if_pool_counts_say_so():
    # Pool and node events arrive on separate watches: a pool MODIFIED event
    # can be seen before the node's; done waits for both.
    pool, nodes, rendered = scenario("done.yaml")
    nodes = copy.deepcopy(nodes)
    nodes[1]["metadata"]["annotations"][_mco.ANNOTATION_STATE] = "Working"
    assert _mco.evaluate_pool(pool, nodes, BY_MC, rendered).phase == _mco.PHASE_PROGRESSING


def test_target_dict_and_validation():
    pool, nodes, rendered = scenario("done.yaml")
    assert _mco.evaluate_pool(pool, nodes, {"machine_config": KMOD_MC}, rendered).done
    with pytest.raises(ValueError):
        _mco.RolloutTarget()


# --- node selection ------------------------------------------------------------

def test_pool_nodes_assignment():
    items = load("pools_and_nodes.yaml")
    pools = dict((i["metadata"]["name"], i) for i in items if i["kind"] == "MachineConfigPool")
    nodes = [i for i in items if i["kind"] == "Node"]
    names = dict(
        (p, [n["metadata"]["name"] for n in _mco.pool_nodes(pools[p], list(pools.values()), nodes)])
        for p in pools
    )
    # masters carry the worker label too, but belong to master; infra wins over
    # worker; the Windows node belongs to no pool.
    assert names["master"] == ["ip-10-0-140-3.eu-west-1.compute.internal", "ip-10-0-171-8.eu-west-1.compute.internal"]
    assert names["infra"] == ["ip-10-0-150-77.eu-west-1.compute.internal"]
    assert names["worker"] == ["ip-10-0-131-27.eu-west-1.compute.internal", "ip-10-0-162-90.eu-west-1.compute.internal"]
    result = _mco.evaluate_pool(pools["worker"], [n for n in nodes if n["metadata"]["name"] in names["worker"]], BY_MC)
    assert result.done


def test_selector_matches():
    labels = {"machineconfiguration.openshift.io/role": "infra", "tier": "a"}
    assert _mco.selector_matches({}, labels)
    assert not _mco.selector_matches(None, labels)
    assert _mco.selector_matches({"matchLabels": {"tier": "a"}}, labels)
    assert not _mco.selector_matches({"matchLabels": {"tier": "b"}}, labels)
    expr = {"key": "machineconfiguration.openshift.io/role", "operator": "In", "values": ["worker", "infra"]}
    assert _mco.selector_matches({"matchExpressions": [expr]}, labels)
    assert not _mco.selector_matches({"matchExpressions": [dict(expr, operator="NotIn")]}, labels)
    assert _mco.selector_matches({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, labels)
    assert not _mco.selector_matches({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, labels)


# --- effective_os_image_url --------------------------------------------------

IMG_A = "registry.example.com/kmods/rhcos-kmod@sha256:" + "1" * 64
IMG_B = "registry.example.com/kmods/rhcos-kmod@sha256:" + "2" * 64
IMG_INFRA = "registry.example.com/kmods/rhcos-infra@sha256:" + "3" * 64


def machineconfigs(*roles):
    return [mc for mc in load("machineconfigs.yaml")
            if mc["metadata"].get("labels", {}).get(_mco.ROLE_LABEL) in roles or mc["metadata"]["name"].startswith("rendered-")]


def test_last_by_name_wins():
    # 99-worker-kmod-b sorts after 99-worker-kmod-a; the list is not in name order.
    assert _mco.effective_os_image_url(machineconfigs("worker"), DEFAULT_IMG) == IMG_B


def test_generated_configs_ignored():
    # 99-worker-generated-registries, 99-worker-zz-owned (also controller-owned)
    # and rendered-* carry the generated-by annotation: they sort after ours
    # but never win.
    mcs = machineconfigs("worker")
    names = [m["metadata"]["name"] for m in mcs]
    assert "99-worker-zz-owned" in names and "99-worker-generated-registries" in names
    assert _mco.os_image_url_setters(mcs) == ["99-worker-kmod-a", "99-worker-kmod-b"]
    only_generated = [m for m in mcs if _mco.is_generated_machine_config(m)]
    assert _mco.effective_os_image_url(only_generated, DEFAULT_IMG) == DEFAULT_IMG


def _mc(name, image, annotations=None, owners=None, role="worker"):
    meta = {"name": name, "labels": {_mco.ROLE_LABEL: role}}
    if annotations is not None:
        meta["annotations"] = annotations
    if owners is not None:
        meta["ownerReferences"] = owners
    return {"metadata": meta, "spec": {"osImageURL": image}}


@pytest.mark.parametrize("override", [
    _mc("rendered-worker-0a1b", IMG_B),  # a rendered-looking name, no annotation
    _mc("99-worker-zz", IMG_B, annotations={_mco.ANNOTATION_GENERATED_BY: ""}),  # empty annotation
    _mc("99-worker-zz", IMG_B, owners=[{"apiVersion": "machineconfiguration.openshift.io/v1",
                                        "kind": "KubeletConfig", "name": "k", "uid": "u", "controller": True}]),
], ids=["rendered-name", "empty-annotation", "controller-owned"])
def test_only_a_non_empty_generated_by_annotation_makes_a_config_generated(override):
    # Found by the lab's differential test: MergeMachineConfigs
    # (pkg/controller/common/helpers.go) skips a config for osImageURL only
    # when cfg.Annotations[generated-by-controller-version] != "". These
    # configs are not skipped by the MCO, so their osImageURL wins.
    mcs = [_mc("00-worker", DEFAULT_IMG, annotations={_mco.ANNOTATION_GENERATED_BY: "v"}), _mc("50-worker-kmod", IMG_A),
           override]
    assert not _mco.is_generated_machine_config(override)
    assert _mco.effective_os_image_url(mcs, DEFAULT_IMG) == IMG_B
    assert _mco.os_image_url_setters(mcs)[-1] == override["metadata"]["name"]


def test_an_empty_machine_config_selector_selects_nothing():
    # render_controller.go syncMachineConfigPool: a pool whose
    # machineConfigSelector is {} is refused ("SelectingAll"), never rendered.
    pool = {"metadata": {"name": "infra"}, "spec": {"machineConfigSelector": {}}}
    assert _mco.pool_machine_configs(pool, [_mc("50-worker-kmod", IMG_A)]) == []


def _node(name, *roles):
    return {"metadata": {"name": name, "labels": dict(("node-role.kubernetes.io/" + r, "") for r in roles)}}


def _pool(name, selector):
    return {"metadata": {"name": name}, "spec": {"nodeSelector": selector}}


def test_an_empty_node_selector_matches_no_node():
    # pkg/helpers/helpers.go ListPools: "If a pool with a nil or empty
    # selector creeps in, it should match nothing, not everything."
    pools = [_pool("worker", {"matchLabels": {"node-role.kubernetes.io/worker": ""}}), _pool("infra", {})]
    nodes = [_node("w0", "worker")]
    assert _mco.pool_nodes(pools[1], pools, nodes) == []
    assert [n["metadata"]["name"] for n in _mco.pool_nodes(pools[0], pools, nodes)] == ["w0"]


def test_a_node_in_two_custom_pools_belongs_to_none():
    # pkg/helpers/helpers.go GetPoolsForNode: "node %s belongs to %d custom
    # roles, cannot proceed with this Node" -- not even to master or worker.
    pools = [_pool(n, {"matchLabels": {"node-role.kubernetes.io/" + n: ""}}) for n in ("master", "worker", "infra", "gpu")]
    nodes = [_node("n0", "worker", "infra", "gpu"), _node("n1", "master", "infra", "gpu"), _node("n2", "worker", "infra")]
    members = dict((p["metadata"]["name"], [n["metadata"]["name"] for n in _mco.pool_nodes(p, pools, nodes)]) for p in pools)
    assert members == {"master": [], "worker": [], "infra": ["n2"], "gpu": []}


@pytest.mark.parametrize("images", [
    {"desiredImage": "", "currentImage": ""},
    {"desiredImage": IMG_A, "currentImage": IMG_A},
    {"currentImage": IMG_A},
], ids=["empty", "equal", "current-only"])
def test_a_node_with_image_annotations_is_not_updated_in_a_non_layered_pool(images):
    # layered_node_state.go IsDone (non-layered pool): done only with no
    # desiredImage annotation, and isNodeImageDone needs both image
    # annotations absent or both non-empty and equal.
    ann = {_mco.ANNOTATION_CURRENT_CONFIG: NEW, _mco.ANNOTATION_DESIRED_CONFIG: NEW, _mco.ANNOTATION_STATE: "Done"}
    node = {"metadata": {"name": "w0", "annotations": dict(ann)}}
    assert _mco.node_state(node, NEW)["updated"]
    node["metadata"]["annotations"].update((_mco.MCO_PREFIX + k, v) for k, v in images.items())
    assert not _mco.node_state(node, NEW)["updated"]


def test_default_when_nothing_sets_one():
    mcs = [m for m in machineconfigs("worker") if m["metadata"]["name"] != "99-worker-kmod-a"
           and m["metadata"]["name"] != "99-worker-kmod-b"]
    assert _mco.effective_os_image_url(mcs, DEFAULT_IMG) == DEFAULT_IMG
    assert _mco.effective_os_image_url([], None) is None


def test_removing_the_last_falls_back_to_the_previous():
    mcs = [m for m in machineconfigs("worker") if m["metadata"]["name"] != "99-worker-kmod-b"]
    assert _mco.effective_os_image_url(mcs, DEFAULT_IMG) == IMG_A


def test_custom_pool_configs_win_over_worker_configs():
    # "99-infra-kmod" < "99-worker-kmod-b" by name, but a custom pool's own
    # configs merge after the worker configs it also selects.
    items = load("pools_and_nodes.yaml")
    infra = [i for i in items if i["metadata"]["name"] == "infra"][0]
    selected = _mco.pool_machine_configs(infra, load("machineconfigs.yaml"))
    assert "00-master" not in [m["metadata"]["name"] for m in selected]
    assert _mco.effective_os_image_url(selected, DEFAULT_IMG) == IMG_INFRA


@pytest.mark.parametrize("expr", [
    {"key": "node-role.kubernetes.io/gpu", "operator": "In", "values": []},
    {"key": "node-role.kubernetes.io/gpu", "operator": "Exists", "values": ["x"]},
    {"key": "node-role.kubernetes.io/gpu", "operator": "Gt", "values": ["1"]},
], ids=["in-without-values", "exists-with-values", "unknown-operator"])
def test_an_invalid_selector_on_any_pool_leaves_every_node_poolless(expr):
    # pkg/helpers/helpers.go ListPools returns "invalid label selector" for
    # every node when one pool's nodeSelector does not parse
    # (metav1.LabelSelectorAsSelector), so no node is in any pool; the
    # render controller does not render a pool whose machineConfigSelector
    # does not parse.
    pools = [_pool("worker", {"matchLabels": {"node-role.kubernetes.io/worker": ""}}), _pool("gpu", {"matchExpressions": [expr]})]
    assert not _mco.selector_valid({"matchExpressions": [expr]})
    assert _mco.pool_nodes(pools[0], pools, [_node("w0", "worker")]) == []
    assert _mco.pool_nodes(pools[0], pools[:1], [_node("w0", "worker")]) != []
    broken = {"metadata": {"name": "gpu"}, "spec": {"machineConfigSelector": {"matchExpressions": [expr]}}}
    assert _mco.pool_machine_configs(broken, [_mc("50-gpu", IMG_A, role="gpu")]) == []
