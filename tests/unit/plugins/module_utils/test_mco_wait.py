"""_mco_wait.RolloutWaiter over the cluster layer, against recorded API
responses (objects as the MCO writes them, tests/unit/fixtures/mco/),
served over HTTP to the real kubernetes client: lists, then watch streams."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _mco
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import ClusterError, Failed
from ansible_collections.ocp.kmod_layering.plugins.module_utils._mco_wait import RolloutWaiter

from recorded_api import MCO, RecordedApi, cluster_client, event, fixture_items

POOLS = MCO + "/machineconfigpools"
NODES = "/api/v1/nodes"
MCS = MCO + "/machineconfigs"
KMOD_MC = "99-worker-kmod-layering"


def split(name):
    items = fixture_items(name)
    return ([i for i in items if i["kind"] == "MachineConfigPool"], [i for i in items if i["kind"] == "Node"],
            [i for i in items if i["kind"] == "MachineConfig"])


def ours(image):
    return {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
            "metadata": {"name": KMOD_MC, "labels": {_mco.ROLE_LABEL: "worker"}},
            "spec": {"osImageURL": image}}


def params(**overrides):
    values = dict(pools=["worker"], timeout=20, request_timeout=5, on_paused="fail", on_degraded="fail",
                  progress_file=None)
    values.update(overrides)
    return values


@pytest.fixture
def api(serve_http):
    """The recorded cluster mid-rollout: one node Done, one Working, one
    still on the old config; ours and the rendered configs served."""
    recorded = RecordedApi()
    pools, nodes, rendered = split("mid_rollout.yaml")
    image = [mc for mc in rendered if mc["metadata"]["name"].startswith("rendered-worker-b81e")][0]["spec"]["osImageURL"]
    recorded.lists[POOLS] = pools
    recorded.lists[NODES] = nodes
    recorded.lists[MCS] = rendered + [ours(image)]
    for mc in rendered:
        recorded.objects["%s/%s" % (MCS, mc["metadata"]["name"])] = mc
    recorded.image = image
    address = serve_http(recorded.handler())
    yield recorded, address
    recorded.closed.set()


def done_events(version=200):
    """The watch events that take the recorded cluster from mid-rollout to done."""
    pools, nodes, _rendered = split("done.yaml")
    return ([event("MODIFIED", node, version + i) for i, node in enumerate(nodes)],
            [event("MODIFIED", pools[0], version + 10)])


def waiter(address, **overrides):
    client = cluster_client(address, request_timeout=5)
    target = _mco.RolloutTarget(KMOD_MC, None, None)
    return RolloutWaiter(client, params(**overrides), target)


def test_mid_rollout_followed_by_watch_to_done_with_every_node_state_in_the_progress(api, tmp_path):
    recorded, address = api
    node_events, pool_events = done_events()
    recorded.watch(NODES, node_events)
    recorded.watch(POOLS, pool_events)
    progress = tmp_path / "progress" / "rollout.log"
    wait = waiter(address, progress_file=str(progress))
    result = wait.run()
    assert result["done"] and result["pools"][0]["done"]
    assert result["target"]["os_image_url"] == recorded.image  # learnt from our MachineConfig
    working = [line for line in result["progress"] if "ip-10-0-162-90" in line]
    # The draining node is seen Working first, then Done on the new config.
    assert "Working" in working[0] and "Done" in working[-1]
    assert progress.read_text().count("lab-a") == len(result["progress"])
    # One list of each kind, the pools and nodes watched, the rendered config read once.
    assert recorded.count("GET", POOLS, watch=False) == 1 and recorded.count("GET", NODES, watch=False) == 1
    assert recorded.count("GET", POOLS, watch=True) >= 1 and recorded.count("GET", NODES, watch=True) >= 1
    rendered = result["pools"][0]["rendered_config"]
    assert recorded.count("GET", "%s/%s" % (MCS, rendered)) == 1


def test_a_degraded_node_fails_fast_naming_node_and_reason(api):
    recorded, address = api
    pools, nodes, _rendered = split("degraded_node.yaml")
    degraded = [n for n in nodes if n["metadata"]["annotations"][_mco.ANNOTATION_STATE] == "Degraded"][0]
    recorded.watch(NODES, [event("MODIFIED", degraded, 300)])
    recorded.watch(POOLS, [event("MODIFIED", pools[0], 301)])
    wait = waiter(address)
    with pytest.raises(Failed) as failed:
        wait.run()
    reason = degraded["metadata"]["annotations"][_mco.ANNOTATION_REASON]
    assert degraded["metadata"]["name"] in failed.value.msg and reason[:40] in failed.value.msg
    assert failed.value.result["done"] is False


def test_a_pool_degraded_before_its_node_event_arrives_is_named_by_a_fresh_node_read(api):
    """The pool and node watches are separate streams: the pool's Degraded
    can come first. The failure still names the node and its own reason
    (read fresh), not only the pool's condition."""
    recorded, address = api
    pools, nodes, _rendered = split("degraded_node.yaml")
    degraded = [n for n in nodes if n["metadata"]["annotations"][_mco.ANNOTATION_STATE] == "Degraded"][0]
    pool = copy.deepcopy(pools[0])
    for cond in pool["status"]["conditions"]:
        cond["message"] = ""  # the pool alone does not name the node
    recorded.watch(POOLS, [event("MODIFIED", pool, 301)])  # the node's event never comes on its watch
    wait = waiter(address)
    original = wait.evaluate

    def evaluate_then_degrade_the_node():
        evaluations = original()
        recorded.lists[NODES] = nodes  # the node was Degraded on the server before the pool
        return evaluations
    wait.evaluate = evaluate_then_degrade_the_node
    with pytest.raises(Failed) as failed:
        wait.run()
    reason = degraded["metadata"]["annotations"][_mco.ANNOTATION_REASON]
    assert "node %s is Degraded: %s" % (degraded["metadata"]["name"], reason) in failed.value.msg
    assert recorded.count("GET", NODES, watch=False) == 2


def test_a_failure_keeps_the_warning_of_a_paused_pool_it_did_not_wait_for(api):
    recorded, address = api
    pools, nodes, _rendered = split("degraded_node.yaml")
    infra = copy.deepcopy(split("mid_rollout.yaml")[0][0])  # a pool rolling out, not degraded
    infra["metadata"]["name"] = "infra"
    infra["spec"]["paused"] = True
    infra["spec"]["nodeSelector"] = {"matchLabels": {"node-role.kubernetes.io/infra": ""}}
    infra["spec"]["machineConfigSelector"] = {"matchExpressions": [
        {"key": _mco.ROLE_LABEL, "operator": "In", "values": ["worker", "infra"]}]}
    recorded.lists[POOLS] = [pools[0], infra]
    recorded.lists[NODES] = nodes
    wait = waiter(address, pools=["worker", "infra"], on_paused="ignore")
    with pytest.raises(Failed) as failed:
        wait.run()
    assert "MachineConfigPool worker on cluster lab-a is degraded" in failed.value.msg
    assert failed.value.result["warnings"] == [
        "MachineConfigPool infra on cluster lab-a is paused; not waited for (on_paused=ignore)."]


def test_410_gone_on_the_watch_is_answered_by_a_relist(api):
    recorded, address = api
    pools, nodes, _rendered = split("done.yaml")
    recorded.watch(NODES, 410)
    recorded.watch(POOLS, 410)

    # The relist after the 410 sees the rollout done.
    def relisted():
        recorded.lists[POOLS] = pools
        recorded.lists[NODES] = nodes
    wait = waiter(address)
    original = wait.evaluate

    def evaluate_then_swap():
        evaluations = original()
        relisted()
        return evaluations
    wait.evaluate = evaluate_then_swap
    result = wait.run()
    assert result["done"]
    assert recorded.count("GET", POOLS, watch=False) + recorded.count("GET", NODES, watch=False) >= 3


def test_transient_list_errors_are_retried_and_a_pool_missing_is_named(api):
    recorded, address = api
    recorded.fault("GET", NODES, 503, 503)
    recorded.watch(NODES, done_events()[0])
    recorded.watch(POOLS, done_events()[1])
    result = waiter(address).run()
    assert result["done"] and recorded.count("GET", NODES, watch=False) == 3

    wait = waiter(address, pools=["worker", "gpu"])
    with pytest.raises(Failed, match="MachineConfigPool gpu not found on cluster lab-a .pools there: worker"):
        wait.run()


def test_an_api_that_serves_no_pools_is_named_and_other_errors_name_the_request(api):
    recorded, address = api
    del recorded.lists[POOLS]
    with pytest.raises(Failed, match="Cluster lab-a serves no MachineConfigPools"):
        waiter(address).run()
    recorded.lists[POOLS] = split("mid_rollout.yaml")[0]
    recorded.fault("GET", NODES, 403)
    with pytest.raises(ClusterError) as error:
        waiter(address).run()
    assert error.value.status == 403
    assert str(error.value).startswith("Cluster lab-a: Kubernetes API error 403 (GET /api/v1/nodes)")


def test_another_machineconfig_that_overrides_the_image_fails_before_any_watch(api):
    recorded, address = api
    later = copy.deepcopy(ours("registry.example.com/other@sha256:" + "e" * 64))
    later["metadata"]["name"] = "99-zz-worker-override"
    recorded.lists[MCS] = recorded.lists[MCS] + [later]
    with pytest.raises(Failed, match="99-zz-worker-override"):
        waiter(address).run()
    assert recorded.count("GET", POOLS, watch=True) == 0


def test_check_mode_evaluates_once_and_watches_nothing(api):
    recorded, address = api
    client = cluster_client(address, request_timeout=5)
    result = RolloutWaiter(client, params(), _mco.RolloutTarget(KMOD_MC, None, None), check_mode=True).run()
    assert not result["done"] and result["msg"].startswith("check mode")
    assert recorded.count("GET", NODES, watch=True) == 0
