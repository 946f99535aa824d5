"""A lab cluster end to end, observed only through its Kubernetes API: a
MachineConfig with a layered osImageURL rolls out over a paused-then-resumed
2-worker pool whose nodes really boot the image in qemu; debug pods show the
module loaded and the image booted; an unpullable image degrades a node with
the registry's words and recovers when the MachineConfig goes away.

Boots: 2 (one per worker). Own cluster (started and stopped here), so the
session's shared clusters are left as they were."""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Iterator

import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import dynamic

from kmodlab import apiserver, cluster, layered, mco, node, pytest_plugin, state

MC_API = "machineconfiguration.openshift.io/v1"
ANN = "machineconfiguration.openshift.io/"
WAIT = 900.0  # generous: TCG boots on a shared 2-core machine


# ---------------------------------------------------------------- the rules, no lab needed


def make_node(
    name: str,
    current: str,
    desired: str,
    state_: str = "Done",
    ready: bool = True,
    unschedulable: bool = False,
    reason: str = "",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "annotations": {
                ANN + "currentConfig": current,
                ANN + "desiredConfig": desired,
                ANN + "state": state_,
                ANN + "reason": reason,
            },
        },
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def make_pool(target: str, max_unavailable: Any = None, paused: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"configuration": {"name": target, "source": []}, "paused": paused}
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    return {
        "metadata": {"name": "worker", "generation": 3},
        "spec": spec,
        "status": {"configuration": {"name": "old"}, "conditions": []},
    }


def test_max_unavailable_int_percent_default() -> None:
    assert mco.parse_max_unavailable(None, 10) == 1
    assert mco.parse_max_unavailable(3, 10) == 3
    assert mco.parse_max_unavailable("25%", 10) == 2  # rounded down
    assert mco.parse_max_unavailable("5%", 3) == 1  # never below one


def test_node_walk_respects_capacity_pause_and_retargets_unavailable() -> None:
    nodes = [make_node(f"w{i}", "old", "old") for i in range(4)]
    assert mco.nodes_to_update(make_pool("new"), nodes) == ["w0"]
    assert mco.nodes_to_update(make_pool("new", "50%"), nodes) == ["w0", "w1"]
    assert mco.nodes_to_update(make_pool("new", paused=True), nodes) == []
    nodes[0] = make_node("w0", "old", "new", "Working", unschedulable=True)  # in progress: no capacity left
    assert mco.nodes_to_update(make_pool("new"), nodes) == []
    nodes[0] = make_node("w0", "old", "bad", "Degraded", unschedulable=True)  # stuck on a replaced config
    assert mco.nodes_to_update(make_pool("new"), nodes) == ["w0"]


def test_pool_status_counts_and_conditions() -> None:
    nodes = [
        make_node("w0", "new", "new"),
        make_node("w1", "old", "new", "Working", unschedulable=True),
        make_node("w2", "old", "new", "Degraded", unschedulable=True, reason="error pulling image: 404"),
    ]
    # A failing MCD on a node still schedulable and Ready is *available*
    # (LayeredNodeState.IsUnavailableForUpdate); cordoned, it is not.
    assert not mco.node_unavailable(make_node("w2", "old", "new", "Degraded"))
    status = mco.pool_status(make_pool("new"), nodes, None)
    assert (
        status["machineCount"],
        status["updatedMachineCount"],
        status["readyMachineCount"],
        status["unavailableMachineCount"],
        status["degradedMachineCount"],
    ) == (3, 1, 1, 2, 1)
    assert status["observedGeneration"] == 3
    assert status["configuration"]["name"] == "old"  # follows only when all are updated
    cond = {c["type"]: c for c in status["conditions"]}
    assert cond["Updated"]["status"] == "False"
    assert (cond["Updating"]["status"], cond["Updating"]["message"]) == (
        "True",
        "All nodes are updating to MachineConfig new",
    )
    assert cond["NodeDegraded"]["reason"] == "1 nodes are reporting degraded status on sync"
    assert cond["NodeDegraded"]["message"] == 'Node w2 is reporting: "error pulling image: 404"'
    assert (cond["Degraded"]["status"], cond["Degraded"]["message"]) == ("True", cond["NodeDegraded"]["message"])

    paused = mco.pool_status(
        make_pool("new", paused=True), nodes[:2], "Failed to render configuration for pool worker: x"
    )
    cond = {c["type"]: c for c in paused["conditions"]}
    assert (cond["Updating"]["status"], cond["Updating"]["message"]) == (
        "False",
        "Pool is paused; will not update to MachineConfig new",
    )
    assert cond["RenderDegraded"]["status"] == "True" and cond["Degraded"]["status"] == "True"

    done = mco.pool_status(make_pool("new"), [make_node("w0", "new", "new")], None)
    cond = {c["type"]: c for c in done["conditions"]}
    assert done["configuration"]["name"] == "new"
    assert (cond["Updated"]["status"], cond["Updated"]["message"]) == (
        "True",
        "All nodes are updated with MachineConfig new",
    )


def test_render_takes_last_user_os_image_and_hashes_the_spec() -> None:
    def mc(name: str, image: str = "", generated: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "labels": {ANN + "role": "worker"}}
        if generated:
            meta["annotations"] = {ANN + "generated-by-controller-version": "x"}
        return {"metadata": meta, "spec": {"osImageURL": image, "kernelArguments": ["a"] if image else []}}

    spec = mco.merge_configs(
        [mc("00-worker", "gen@sha256:1", True), mc("50-a", "a@sha256:2"), mc("90-b", "b@sha256:3")],
        "release-os@sha256:0",
    )
    assert spec["osImageURL"] == "b@sha256:3"
    # MergeMachineConfigs concatenates kernel arguments in merge order, duplicates kept.
    assert spec["kernelArguments"] == ["a", "a", "a"]
    assert (
        mco.merge_configs([mc("00-worker", "gen@sha256:1", True)], "release-os@sha256:0")["osImageURL"]
        == "release-os@sha256:0"
    )
    name = mco.rendered_name("worker", spec)
    assert name.startswith("rendered-worker-") and len(name) == len("rendered-worker-") + 32
    assert name != mco.rendered_name("worker", dict(spec, osImageURL="c@sha256:4"))


def test_render_refuses_an_unsupported_ignition_version() -> None:
    labels = {ANN + "role": "worker"}
    good = {"metadata": {"name": "00-worker", "labels": labels}, "spec": {"config": {"ignition": {"version": "3.2.0"}}}}
    bad = {"metadata": {"name": "50-bad", "labels": labels}, "spec": {"config": {"ignition": {"version": "9.9.9"}}}}
    assert mco.render_error_of([good]) is None
    assert mco.render_error_of([good, bad]) == (
        "parsing Ignition config failed for 50-bad: invalid version '9.9.9'. "
        "Supported spec versions: 2.2, 3.0, 3.1, 3.2, 3.3, 3.4"
    )


def test_debug_outputs_have_the_real_formats() -> None:
    lsmod = node.lsmod_output(
        ["kmodlab_dep 16384 0 - Live 0xffffffffc0450000", "kmodlab_core 16384 1 kmodlab_dep, Live 0xffffffffc044d000"]
    )
    assert lsmod.splitlines() == [
        "Module                  Size  Used by",
        "kmodlab_dep            16384  0",
        "kmodlab_core           16384  1 kmodlab_dep",
    ]
    status = json.loads(node.rpm_ostree_status([node.deployment("r/img@sha256:ab", "sha256:ab", "4.16.30", True, 1)]))
    deployment = status["deployments"][0]
    assert deployment["container-image-reference"] == "ostree-unverified-registry:r/img@sha256:ab"
    assert deployment["container-image-reference-digest"] == "sha256:ab"
    assert deployment["booted"] is True and len(deployment["checksum"]) == 64
    assert deployment["version"].startswith("416.94.")
    previous = node.deployment("r/old@sha256:cd", "sha256:cd", "4.16.30", False, 0)
    text = node.rpm_ostree_text([deployment, previous]).splitlines()
    assert text[:4] == [
        "State: idle",
        "Deployments:",
        "* ostree-unverified-registry:r/img@sha256:ab",
        "                   Digest: sha256:ab",
    ]
    assert "  ostree-unverified-registry:r/old@sha256:cd" in text


# ---------------------------------------------------------------- a real lab cluster


class Cluster:
    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        api_client = k8s_config.new_client_from_config(entry["kubeconfig"])
        self.client = dynamic.DynamicClient(api_client)
        self.core = k8s_client.CoreV1Api(api_client)
        self.mcs = self.client.resources.get(api_version=MC_API, kind="MachineConfig")
        self.pools = self.client.resources.get(api_version=MC_API, kind="MachineConfigPool")
        self.nodes = self.client.resources.get(api_version="v1", kind="Node")
        self.pods = self.client.resources.get(api_version="v1", kind="Pod")

    def pool(self, name: str = "worker") -> dict[str, Any]:
        return self.pools.get(name=name).to_dict()

    def workers(self) -> list[dict[str, Any]]:
        items = self.nodes.get(label_selector="node-role.kubernetes.io/worker").items
        return sorted((n.to_dict() for n in items), key=lambda n: n["metadata"]["name"])

    def apply_mc(self, name: str, image: str) -> None:
        self.mcs.create(
            body={
                "apiVersion": MC_API,
                "kind": "MachineConfig",
                "metadata": {"name": name, "labels": {ANN + "role": "worker"}},
                "spec": {"osImageURL": image},
            }
        )

    def wait(self, what: str, check: Callable[[], Any], observe: Callable[[], None] | None = None) -> Any:
        return pytest_plugin.wait_until(what, check, WAIT, observe=observe,
                                        describe=lambda: f"pool status: {json.dumps(self.pool()['status'])}")

    def debug(self, node: str, command: str) -> str:
        """`oc debug node/<node> -- chroot /host <command>`, then its log."""
        name = f"{node}-debug-{uuid.uuid4().hex[:5]}"
        self.pods.create(
            namespace="default",
            body={
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "nodeName": node,
                    "restartPolicy": "Never",
                    "hostPID": True,
                    "containers": [
                        {
                            "name": "container-00",
                            "image": "registry.redhat.io/rhel9/support-tools",
                            "command": ["chroot", "/host", *command.split()],
                            "securityContext": {"privileged": True, "runAsUser": 0},
                            "volumeMounts": [{"name": "host", "mountPath": "/host"}],
                        }
                    ],
                    "volumes": [{"name": "host", "hostPath": {"path": "/", "type": "Directory"}}],
                },
            },
        )
        self.wait(
            f"debug pod {name}",
            lambda: (self.pods.get(name=name, namespace="default").to_dict().get("status") or {}).get("phase")
            == "Succeeded",
        )
        return self.core.read_namespaced_pod_log(name=name, namespace="default")


def conditions(pool: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c.get("message") or "") for c in pool["status"].get("conditions") or []}


@pytest.fixture(scope="module")
def release(lab: state.LabState) -> dict[str, Any]:
    return [r for r in lab.releases if (r.get("arch") or "x86_64") == "x86_64"][-1]


@pytest.fixture(scope="module")
def lab_cluster(lab: state.LabState, release: dict[str, Any]) -> Iterator[Cluster]:
    with state.locked(lab.root) as current:
        entry = cluster.start_clusters(current, 1, [release["version"]], workers=2, masters=1, node_mode="qemu")[0]
    try:
        yield Cluster(entry)
    finally:
        with state.locked(lab.root) as current:
            cluster.stop_cluster(current, entry["name"])


@pytest.fixture(scope="module")
def layered_image(lab: state.LabState, release: dict[str, Any]) -> str:
    return layered.build_layered_image(lab, release["version"], [layered.fixture("kmodlab_core", options="level=7")])


@pytest.mark.lab
@pytest.mark.qemu
def test_seeded_cluster_follows_the_mco_shape(lab_cluster: Cluster, lab: state.LabState) -> None:
    pool = lab_cluster.pool()
    status = pool["status"]
    assert pool["spec"]["configuration"]["name"].startswith("rendered-worker-")
    assert status["configuration"]["name"] == pool["spec"]["configuration"]["name"]
    assert [s["name"] for s in status["configuration"]["source"]] == ["00-worker", "99-worker-ssh"]
    assert (
        status["machineCount"],
        status["updatedMachineCount"],
        status["readyMachineCount"],
        status["unavailableMachineCount"],
        status["degradedMachineCount"],
    ) == (2, 2, 2, 0, 0)
    assert conditions(pool)["Updated"] == (
        "True",
        f"All nodes are updated with MachineConfig {status['configuration']['name']}",
    )
    with open(lab.inventory) as stream:
        assert lab_cluster.entry["name"] in stream.read()


@pytest.mark.lab
@pytest.mark.qemu
def test_paused_pool_holds_then_rollout_boots_every_worker(
    lab_cluster: Cluster, layered_image: str, release: dict[str, Any], lab: state.LabState
) -> None:
    before = {n["metadata"]["name"]: n["metadata"]["annotations"][ANN + "currentConfig"] for n in lab_cluster.workers()}
    lab_cluster.pools.patch(name="worker", body={"spec": {"paused": True}}, content_type="application/merge-patch+json")
    lab_cluster.apply_mc("99-worker-kmod", layered_image)

    # The MCO renders and reports the pause in the same pass that would have moved nodes.
    def paused_on_new() -> str | None:
        pool = lab_cluster.pool()
        target = pool["spec"]["configuration"]["name"]
        message = conditions(pool).get("Updating", ("", ""))[1]
        return (
            target
            if "99-worker-kmod" in [s["name"] for s in pool["spec"]["configuration"]["source"]]
            and message == f"Pool is paused; will not update to MachineConfig {target}"
            else None
        )

    target = lab_cluster.wait("paused pool on the new rendered config", paused_on_new)
    rendered = lab_cluster.mcs.get(name=target).to_dict()
    assert rendered["spec"]["osImageURL"] == layered_image
    assert rendered["metadata"]["ownerReferences"][0]["kind"] == "MachineConfigPool"
    assert ANN + "generated-by-controller-version" in rendered["metadata"]["annotations"]
    assert {
        n["metadata"]["name"]: n["metadata"]["annotations"][ANN + "desiredConfig"] for n in lab_cluster.workers()
    } == before
    assert conditions(lab_cluster.pool())["Updated"][0] == "False"

    requests = apiserver.RequestLogClient(lab_cluster.entry["api_url"], lab_cluster.entry["token"], lab.ca_file)
    requests.reset()
    lab_cluster.pools.patch(
        name="worker", body={"spec": {"paused": False}}, content_type="application/merge-patch+json"
    )
    busy_max = 0

    def observe() -> None:
        nonlocal busy_max
        busy = [
            n
            for n in lab_cluster.workers()
            if n["metadata"]["annotations"][ANN + "desiredConfig"]
            != n["metadata"]["annotations"][ANN + "currentConfig"]
            or n["metadata"]["annotations"][ANN + "state"] != "Done"
        ]
        busy_max = max(busy_max, len(busy))

    def done() -> bool:
        pool = lab_cluster.pool()
        s = pool["status"]
        return (
            s["configuration"]["name"] == target
            and conditions(pool)["Updated"][0] == "True"
            and s["updatedMachineCount"] == s["readyMachineCount"] == s["machineCount"] == 2
            and s["degradedMachineCount"] == 0
        )

    lab_cluster.wait("the rollout", done, observe)
    assert busy_max == 1  # maxUnavailable: 1
    records = requests.records()
    for agent in ("machine-config-controller", "machine-config-daemon"):
        mine = [r for r in records if r["user_agent"].startswith(agent + "/")]
        verbs = sorted({r["verb"] for r in mine})
        print(
            f"{agent}: {len(mine)} API requests during the rollout "
            + ", ".join(f"{v} {sum(1 for r in mine if r['verb'] == v)}" for v in verbs)
        )
    digest = layered_image.split("@", 1)[1]
    for node in lab_cluster.workers():
        ann = node["metadata"]["annotations"]
        assert (ann[ANN + "currentConfig"], ann[ANN + "desiredConfig"], ann[ANN + "state"]) == (target, target, "Done")
        assert not node["spec"].get("unschedulable")
        boot = json.loads(ann["kmodlab.io/boot"])
        assert boot["mode"] == "qemu" and boot["kernel"] == release["kernel"]
        assert boot["params"]["kmodlab_core"]["level"] == "7"  # modprobe.d options reached the module
        print(f"{node['metadata']['name']}: booted {boot['kernel']} in {boot['duration']:.1f}s, tools {boot['tools']}")
        lsmod = lab_cluster.debug(node["metadata"]["name"], "lsmod")
        assert lsmod.startswith("Module                  Size  Used by\n")
        assert any(line.split()[0] == "kmodlab_core" for line in lsmod.splitlines()[1:])
        status = json.loads(lab_cluster.debug(node["metadata"]["name"], "rpm-ostree status --json"))
        booted = [d for d in status["deployments"] if d["booted"]]
        assert len(booted) == 1 and len(status["deployments"]) == 2
        assert booted[0]["container-image-reference"] == f"ostree-unverified-registry:{layered_image}"
        assert booted[0]["container-image-reference-digest"] == digest
        assert "kmodlab_core" in lab_cluster.debug(node["metadata"]["name"], "cat /proc/modules")
        assert lab_cluster.debug(node["metadata"]["name"], "uname -r") == release["kernel"] + "\n"


@pytest.mark.lab
@pytest.mark.qemu
def test_unpullable_image_degrades_the_node_with_the_registry_error(lab_cluster: Cluster, lab: state.LabState) -> None:
    good = lab_cluster.pool()["status"]["configuration"]["name"]
    missing = f"{lab.registry.host}/kmodlab/does-not-exist@sha256:{'0' * 64}"
    lab_cluster.apply_mc("99-worker-zz-missing", missing)

    def node_degraded() -> dict[str, Any] | None:
        pool = lab_cluster.pool()
        return pool if pool["status"]["degradedMachineCount"] == 1 else None

    pool = lab_cluster.wait("a degraded node", node_degraded)
    workers = {n["metadata"]["name"]: n for n in lab_cluster.workers()}
    bad = workers["worker-0"]["metadata"]["annotations"]
    assert bad[ANN + "state"] == "Degraded"
    assert bad[ANN + "currentConfig"] == good  # stays on its config
    assert "does-not-exist" in bad[ANN + "reason"] and "error pulling image" in bad[ANN + "reason"]
    # maxUnavailable 1: the other worker is left alone.
    assert workers["worker-1"]["metadata"]["annotations"][ANN + "desiredConfig"] == good
    cond = conditions(pool)
    assert cond["NodeDegraded"] == ("True", f"Node worker-0 is reporting: {json.dumps(bad[ANN + 'reason'])}")
    assert cond["Degraded"][0] == "True" and cond["Updated"][0] == "False"
    reason = next(c["reason"] for c in pool["status"]["conditions"] if c["type"] == "NodeDegraded")
    assert reason == "1 nodes are reporting degraded status on sync"

    lab_cluster.mcs.delete(name="99-worker-zz-missing")

    def recovered() -> bool:
        pool = lab_cluster.pool()
        s = pool["status"]
        return (
            pool["spec"]["configuration"]["name"] == good
            and conditions(pool)["Updated"][0] == "True"
            and s["degradedMachineCount"] == 0
            and conditions(pool)["Degraded"][0] == "False"
        )

    lab_cluster.wait("recovery after removing the bad MachineConfig", recovered)
