"""The lab's own MCO rules (kmodlab.mco_rules) on the cases the MCO's Go
sources spell out; the product has no counterpart for these (merging,
candidate selection, pool status), so they are checked against the source's
own statements, case by case (each test names the Go function)."""

from __future__ import annotations

from typing import Any

import pytest

from kmodlab import mco_rules as r

P = "machineconfiguration.openshift.io/"


def mc(name: str, role: str | None = "worker", generated: bool = False, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {P + "role": role} if role else {}}
    if generated:
        meta["annotations"] = {r.ANN_GENERATED_BY: "v1"}
    return {"metadata": meta, "spec": spec}


def node(name: str, current: str = "a", desired: str = "a", state: str = "Done", **kw: Any) -> dict[str, Any]:
    ann = {r.ANN_CURRENT_CONFIG: current, r.ANN_DESIRED_CONFIG: desired, r.ANN_STATE: state}
    ann.update(kw.pop("ann", {}))
    conditions = kw.pop("conditions", [{"type": "Ready", "status": "True"}])
    labels = kw.pop("labels", {})
    meta = {"name": name, "annotations": ann, "labels": labels}
    meta.update(kw.pop("meta", {}))
    return {"metadata": meta, "spec": kw, "status": {"conditions": conditions}}


def pool(target: str = "b", name: str = "worker", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": 2}, "spec": dict(configuration={"name": target}, **spec)}


# ---------------------------------------------------------------- MergeMachineConfigs


def test_custom_pool_configs_merge_after_worker_configs() -> None:
    ordered = r.merge_order([mc("99-infra"), mc("00-worker"), mc("50-infra", "infra"), mc("10-infra", "infra")])
    assert [m["metadata"]["name"] for m in ordered] == ["00-worker", "99-infra", "10-infra", "50-infra"]


def test_a_config_without_labels_cannot_be_merged() -> None:
    bare = {"metadata": {"name": "x"}, "spec": {}}
    with pytest.raises(r.RenderError, match="cannot find label in MachineConfig x"):
        r.merge_order([bare])


def test_merge_fips_kernel_type_kargs_extensions() -> None:
    spec = r.merge(
        [
            mc("00-worker", kernelArguments=["a"], extensions=["usbguard"]),
            mc("10-rt", kernelType="realtime", kernelArguments=["a", "b"]),
            mc("20-default", kernelType="default", fips=True),
        ],
        "base",
    )
    # A later "default" does not undo realtime; kargs and extensions concatenate.
    assert (spec["kernelType"], spec["fips"], spec["kernelArguments"], spec["extensions"]) == (
        "realtime", True, ["a", "a", "b"], ["usbguard"],
    )
    with pytest.raises(r.RenderError, match="kernel-devel extension is not supported with kernelType: 64k-pages"):
        r.merge([mc("00-worker", kernelType="64k-pages", extensions=["kernel-devel"])], "base")


def test_files_get_overwrite_true_unless_set() -> None:
    ign = {"ignition": {"version": "3.2.0"}, "storage": {"files": [{"path": "/a"}, {"path": "/b", "overwrite": False}]}}
    files = r.merge([mc("00-worker", config=ign)], "base")["config"]["storage"]["files"]
    assert [(f["path"], f["overwrite"]) for f in files] == [("/a", True), ("/b", False)]


def test_os_image_url_last_user_config_in_merge_order() -> None:
    configs = [
        mc("00-worker", generated=True, osImageURL="release"),
        mc("99-worker-kmod", osImageURL="kmod"),
        mc("50-infra-kmod", "infra", osImageURL="infra"),
        mc("zz-generated", generated=True, osImageURL="gen"),
    ]
    assert r.os_image_url(r.merge_order(configs), "base") == "infra"  # infra's own config merges last
    assert r.os_image_url(r.merge_order(configs[:2]), "base") == "kmod"
    assert r.os_image_url(r.merge_order([configs[0], configs[3]]), "base") == "base"


def test_render_annotates_overrides_and_refuses_select_everything() -> None:
    p = {"metadata": {"name": "worker", "uid": "u"}, "spec": {"machineConfigSelector": {"matchLabels": {P + "role": "worker"}}}}
    rendered, configuration, error = r.render(p, [mc("00-worker", generated=True), mc("99-k", osImageURL="k")], "base", "v")
    assert error is None and rendered and configuration
    assert rendered["metadata"]["annotations"][r.ANN_OS_IMAGE_URL_OVERRIDDEN] == "true"
    assert rendered["metadata"]["ownerReferences"][0]["controller"] is True
    assert [s["name"] for s in configuration["source"]] == ["00-worker", "99-k"]
    assert configuration["name"] == rendered["metadata"]["name"] and configuration["name"].startswith("rendered-worker-")
    everything = dict(p, spec={"machineConfigSelector": {}})
    assert r.render(everything, [mc("00-worker")], "base", "v") == (None, None, None)
    nothing = dict(p, spec={"machineConfigSelector": {"matchLabels": {P + "role": "gpu"}}})
    assert r.render(nothing, [mc("00-worker")], "base", "v")[2] == (
        "Failed to render configuration for pool worker: no MachineConfigs found matching selector"
    )


def test_invalid_selectors_are_errors() -> None:
    for bad in ({"key": "k", "operator": "In"}, {"key": "k", "operator": "Exists", "values": ["x"]},
                {"key": "k", "operator": "Gt", "values": ["1"]}):
        with pytest.raises(r.SelectorError):
            r.Selector({"matchExpressions": [bad]})


# ---------------------------------------------------------------- nodes and pools


def test_pools_for_node_primary_then_worker() -> None:
    pools = [
        {"metadata": {"name": n}, "spec": {"nodeSelector": {"matchLabels": {f"node-role.kubernetes.io/{n}": ""}}}}
        for n in ("master", "worker", "infra")
    ]

    def labels(*roles: str) -> dict[str, str]:
        return {f"node-role.kubernetes.io/{x}": "" for x in roles}

    def names(n: dict[str, Any]) -> list[str]:
        return [p["metadata"]["name"] for p in r.pools_for_node(n, pools)]

    assert names(node("n", labels=labels("worker", "infra"))) == ["infra", "worker"]
    assert names(node("n", labels=labels("master", "worker", "infra"))) == ["master", "worker"]
    assert names(node("n", labels=labels("master", "worker"))) == ["master"]
    assert names(node("n", labels=dict(labels("worker"), **{"kubernetes.io/os": "windows"}))) == []
    broken = pools + [{"metadata": {"name": "bad"}, "spec": {"nodeSelector": {"matchExpressions": [{"key": "x", "operator": "In"}]}}}]
    with pytest.raises(r.NodePoolError):
        r.pools_for_node(node("n", labels=labels("worker")), broken)


def test_node_predicates() -> None:
    assert r.node_done(node("n")) and r.node_updated(node("n", "b", "b"), pool("b"))
    assert not r.node_updated(node("n"), pool("b"))  # done, but on another config
    assert not r.node_done(node("n", state=""))
    # CheckNodeReady: a missing Ready condition is no objection; pressure is.
    assert r.node_schedulable_ready(node("n", conditions=[]))
    assert not r.node_schedulable_ready(node("n", conditions=[{"type": "DiskPressure", "status": "True"}]))
    assert not r.node_schedulable_ready(node("n", unschedulable=True))
    # IsUnavailableForUpdate: a failing MCD frees its slot; a working one holds it.
    assert not r.node_unavailable(node("n", "a", "b", "Degraded"))
    assert r.node_unavailable(node("n", "a", "b", "Working"))
    assert r.node_unavailable(node("n", "a", "b", "Done"))  # not started yet
    assert not r.node_failing(node("n", "a", "a", "Degraded"))  # failing needs current != desired
    assert r.node_degraded(node("n", "a", "a", "Unreconcilable"))


def test_max_unavailable() -> None:
    assert r.max_unavailable(pool(), 10) == 1
    assert r.max_unavailable(pool(maxUnavailable=3), 10) == 3
    assert r.max_unavailable(pool(maxUnavailable="25%"), 10) == 2
    assert r.max_unavailable(pool(maxUnavailable="5%"), 3) == 1
    assert r.max_unavailable(pool(maxUnavailable=0), 3) == 1
    assert r.max_unavailable(pool(name="arbiter", maxUnavailable=5), 10) == 1
    with pytest.raises(ValueError):
        r.max_unavailable(pool(maxUnavailable="2"), 3)


def test_candidates_by_zone_then_age_within_capacity() -> None:
    nodes = [
        node("n-old", meta={"creationTimestamp": "2024-01-01T00:00:00Z"}),
        node("n-new", meta={"creationTimestamp": "2025-01-01T00:00:00Z"}),
        node("z-b", labels={r.ZONE_LABEL: "b"}),
        node("z-a", labels={r.ZONE_LABEL: "a"}),
    ]
    assert r.nodes_to_update(pool(maxUnavailable=3), nodes) == ["z-a", "z-b", "n-old"]
    assert r.nodes_to_update(pool(paused=True), nodes) == []


def test_candidates_capacity_counts_unavailable_and_failing_nodes() -> None:
    ready = [node(f"w{i}") for i in range(3)]
    working = node("w9", "a", "b", "Working")
    assert r.nodes_to_update(pool(maxUnavailable=2), ready + [working]) == ["w0"]
    failing_on_target = node("w8", "a", "b", "Degraded")  # schedulable, failing on the target itself
    assert r.nodes_to_update(pool(maxUnavailable=2), ready + [failing_on_target]) == ["w0"]
    cordoned = node("w7", unschedulable=True)  # unavailable, and not Ready for candidacy
    assert r.nodes_to_update(pool(maxUnavailable=2), ready + [cordoned]) == ["w0"]


def test_lab_deviation_retargets_a_cordoned_node_failing_on_a_replaced_config() -> None:
    stuck = node("w0", "a", "bad", "Degraded", unschedulable=True)
    nodes = [stuck, node("w1")]
    assert r.nodes_to_update(pool(), nodes, retarget_failing=False) == []  # the MCO: capacity used up
    assert r.nodes_to_update(pool(), nodes) == ["w0"]


# ---------------------------------------------------------------- calculateStatus


def test_status_updated_needs_every_node_updated_ready_and_available() -> None:
    status = r.pool_status(pool(), [node("w0", "b", "b"), node("w1", "b", "b", unschedulable=True)], None)
    cond = {c["type"]: c for c in status["conditions"]}
    assert (status["updatedMachineCount"], status["readyMachineCount"], status["unavailableMachineCount"]) == (2, 1, 1)
    assert cond["Updated"]["status"] == "False"
    assert status["configuration"] == {}  # status.configuration follows only once all are updated
    done = r.pool_status(pool(), [node("w0", "b", "b")], None)
    assert done["configuration"] == {"name": "b"}
    assert {c["type"]: c["status"] for c in done["conditions"]} == {
        "Updated": "True", "Updating": "False", "NodeDegraded": "False", "RenderDegraded": "False", "Degraded": "False",
    }


def test_status_render_degraded_makes_degraded_without_a_message() -> None:
    status = r.pool_status(pool(), [node("w0", "b", "b")], "Failed to render configuration for pool worker: x")
    cond = {c["type"]: c for c in status["conditions"]}
    assert cond["RenderDegraded"]["status"] == "True" and cond["Degraded"]["status"] == "True"
    assert cond["Degraded"]["message"] == ""
