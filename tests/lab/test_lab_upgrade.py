"""Lab clusters that upgrade (kmodlab.cvo + the MCO simulator + node agents),
observed through the Kubernetes API and the node agents' ground truth
(kmodlab.groundtruth), never through the product.

Three fast-mode clusters of our own on the oldest lab release (short
simulated operator steps): A upgrades with its worker pool paused (the
upgrade completes, the workers stay; unpaused, they roll once onto the new OS
and kernel); B has a degraded pool (a minor upgrade is refused), then a
degraded operator (Failing names it) and a MachineConfig pinning the old OS
image (the new release's config lands on the old OS: the stale window the
benchmark measures); C's master pool cannot update (the machine-config
operator degrades, Failing names it). One more, a 1-node qemu cluster, boots
the new release's kernel for real."""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterator

import pytest
from kubernetes import config as k8s_config
from kubernetes import dynamic

from kmodlab import cluster, cvo, faults, groundtruth, mco, pytest_plugin, state
from kmodlab.cvo import find_condition

MC_API = "machineconfiguration.openshift.io/v1"
CV_API = "config.openshift.io/v1"
ANN = "machineconfiguration.openshift.io/"
WAIT = 180.0
MERGE = "application/merge-patch+json"


class Lab:
    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        self.client = dynamic.DynamicClient(k8s_config.new_client_from_config(entry["kubeconfig"]))
        self.cvs = self.client.resources.get(api_version=CV_API, kind="ClusterVersion")
        self.cos = self.client.resources.get(api_version=CV_API, kind="ClusterOperator")
        self.pools = self.client.resources.get(api_version=MC_API, kind="MachineConfigPool")
        self.mcs = self.client.resources.get(api_version=MC_API, kind="MachineConfig")
        self.ccs = self.client.resources.get(api_version=MC_API, kind="ControllerConfig")
        self.nodes = self.client.resources.get(api_version="v1", kind="Node")

    def cv(self) -> dict[str, Any]:
        return self.cvs.get(name="version").to_dict()

    def cond(self, ctype: str, obj: dict[str, Any] | None = None) -> dict[str, Any]:
        obj = obj if obj is not None else self.cv()
        return find_condition((obj.get("status") or {}).get("conditions"), ctype) or {}

    def desire(self, update: dict[str, Any] | None) -> None:
        self.cvs.patch(name="version", body={"spec": {"desiredUpdate": update}}, content_type=MERGE)

    def pool(self, name: str) -> dict[str, Any]:
        return self.pools.get(name=name).to_dict()

    def node(self, name: str) -> dict[str, Any]:
        return self.nodes.get(name=name).to_dict()

    def boots(self) -> dict[str, list[dict[str, Any]]]:
        return groundtruth.read_boots(self.entry)

    def wait(self, what: str, check: Callable[[], Any], observe: Callable[[], None] | None = None) -> Any:
        return pytest_plugin.wait_until(what, check, WAIT, interval=0.1, observe=observe,
                                        describe=lambda: f"ClusterVersion status: {json.dumps(self.cv()['status'])}")


@pytest.fixture(scope="module")
def releases(lab: state.LabState) -> tuple[dict[str, Any], dict[str, Any]]:
    ordered = sorted(lab.releases, key=lambda r: cvo.semver(r["version"]) or (0, 0, 0))
    if len(ordered) < 2:
        pytest.skip("needs two lab releases")
    return ordered[0], ordered[1]


@pytest.fixture(scope="module")
def clusters(lab: state.LabState, releases: tuple[dict[str, Any], dict[str, Any]]) -> Iterator[list[Lab]]:
    old, _new = releases
    with state.locked(lab.root) as current:
        timing = {"drain_seconds": 0.1, "operator_seconds": 0.2, "degraded_interval_seconds": 1.0}
        entries = cluster.start_clusters(
            current, 2, [old["version"]], workers=2, masters=1, node_mode="fast", required_pool_seconds=60.0, **timing
        )
        # C: the machine-config operator gives up on its master pool after a second.
        entries += cluster.start_clusters(
            current, 1, [old["version"]], workers=2, masters=1, node_mode="fast", required_pool_seconds=1.0, **timing
        )
    try:
        yield [Lab(entry) for entry in entries]
    finally:
        with state.locked(lab.root) as current:
            for entry in entries:
                cluster.stop_cluster(current, entry["name"])


def os_image(release: dict[str, Any]) -> str:
    return release["images"][release["os_tag"]]


def newer(lab: state.LabState, version: str) -> list[dict[str, Any]]:
    found = [r for r in lab.releases if (cvo.semver(r["version"]) or (0,)) > (cvo.semver(version) or (0,))]
    return sorted(
        ({"version": r["version"], "image": cvo.release_image(r)} for r in found),
        key=lambda u: cvo.semver(u["version"]) or (0, 0, 0),
    )


def start_upgrade(target: Lab, release: dict[str, Any]) -> dict[str, Any]:
    """What the product does: desiredUpdate = {version, image} from availableUpdates."""
    update = next(u for u in target.cv()["status"]["availableUpdates"] if u["version"] == release["version"])
    target.desire({"version": update["version"], "image": update["image"]})
    return update


# ---------------------------------------------------------------- the rules, no lab needed


def catalog_release(version: str, digest: str) -> dict[str, Any]:
    return {
        "version": version,
        "pullspec": f"r.example/ocp-release:{version}-x86_64",
        "digest": "sha256:" + digest * 64,
        "os_tag": "rhel-coreos",
        "images": {"rhel-coreos": f"r.example/art@sha256:{'f' * 63}{digest}"},
        "kernel": f"6.1.0-{version}",
    }


CATALOG = cvo.Catalog([catalog_release("4.12.77", "a"), catalog_release("4.16.30", "b"), catalog_release("4.18.12", "c")])


def make_cv(version: str = "4.12.77", desired_update: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    release = CATALOG.by_version(version)
    assert release is not None
    image = cvo.release_image(release)
    base = {
        "desired": {"version": version, "image": image},
        "history": [{"version": version, "image": image, "state": "Completed", "startedTime": "t0",
                     "completionTime": "t0", "verified": False}],
        "availableUpdates": cvo.available_updates(CATALOG, version),
        "conditions": [],
    }
    base.update(status)
    return {"metadata": {"name": "version", "generation": 2}, "spec": {"desiredUpdate": desired_update}, "status": base}


def test_available_updates_are_the_newer_releases_by_digest() -> None:
    assert [u["version"] for u in cvo.available_updates(CATALOG, "4.12.77")] == ["4.16.30", "4.18.12"]
    assert cvo.available_updates(CATALOG, "4.16.30")[0]["image"] == "r.example/ocp-release@sha256:" + "c" * 64
    assert cvo.available_updates(CATALOG, "4.18.12") == []


def test_desired_update_validation_and_resolution() -> None:
    assert cvo.validate(make_cv(desired_update={"version": "4.16.30"})) == []
    assert cvo.find_update(make_cv(desired_update={"version": "4.16.30"})) == {
        "version": "4.16.30", "image": "r.example/ocp-release@sha256:" + "b" * 64, "force": False,
    }
    assert cvo.validate(make_cv(desired_update={"version": "4.99.1"})) == [(
        "spec.desiredUpdate.version",
        'Invalid value: "4.99.1": when image is empty the update must be an available update',
    )]
    assert cvo.validate(make_cv(desired_update={"version": "four"}))[0][1].endswith(
        "must be a semantic version (1.2.3[-...])"
    )
    assert cvo.validate(make_cv(desired_update={"force": True})) == [
        ("spec.desiredUpdate", "Required value: must specify architecture, version, or image")
    ]


def test_load_payload_refusals_and_forcing() -> None:
    cv = make_cv()
    current = cv["status"]["desired"]["image"]
    unknown = {"version": "", "image": "r.example/ocp-release@sha256:" + "9" * 64, "force": False}
    with pytest.raises(cvo.Refused) as refused:
        cvo.load_payload(CATALOG, unknown, cv, current)
    assert refused.value.step == "RetrievePayload" and "The update cannot be verified" in refused.value.message
    with pytest.raises(cvo.Refused) as refused:
        cvo.load_payload(CATALOG, dict(unknown, force=True), cv, current)
    assert "Unable to download and prepare the update" in refused.value.message
    newer = {"version": "4.16.30", "image": "r.example/ocp-release@sha256:" + "b" * 64, "force": False}
    release, verified, risks = cvo.load_payload(CATALOG, newer, cv, current)
    assert (release["version"], verified, risks) == ("4.16.30", True, "")
    # A minor update while Upgradeable=False: blocked, unless forced.
    blocked = make_cv(conditions=[{"type": "Upgradeable", "status": "False", "reason": "DegradedPool", "message": "m"}])
    with pytest.raises(cvo.Refused) as refused:
        cvo.load_payload(CATALOG, newer, blocked, current)
    assert refused.value.step == "PreconditionChecks"
    assert 'Precondition "ClusterVersionUpgradeable" failed because of "DegradedPool": m' in refused.value.message
    _release, _verified, risks = cvo.load_payload(CATALOG, dict(newer, force=True), blocked, current)
    assert risks.startswith("Forced through blocking failures: ")
    # Back to an older release than the previous one: a rollback the CVO refuses.
    on_new = make_cv("4.18.12")
    older = {"version": "", "image": "r.example/ocp-release@sha256:" + "a" * 64, "force": False}
    with pytest.raises(cvo.Refused) as refused:
        cvo.load_payload(CATALOG, older, on_new, on_new["status"]["desired"]["image"])
    assert '"LowDesiredVersion"' in refused.value.message


def test_history_merges_like_the_cvo() -> None:
    status = make_cv()["status"]
    target = {"version": "4.16.30", "image": "r.example/ocp-release@sha256:" + "b" * 64}
    cvo.merge_history(status, target, True, "t1", False, "")
    assert [(h["version"], h["state"], h["completionTime"]) for h in status["history"]] == [
        ("4.16.30", "Partial", None), ("4.12.77", "Completed", "t0"),
    ]
    assert status["history"][0]["verified"] is True and status["desired"] == target
    cvo.merge_history(status, target, True, "t2", True, "")
    assert (status["history"][0]["state"], status["history"][0]["completionTime"]) == ("Completed", "t2")
    assert len(status["history"]) == 2


def test_operator_health_and_required_pools() -> None:
    co = cvo.cluster_operator("network", "4.12.77", "t")
    assert cvo.operator_error(co, "network", "4.12.77") is None
    assert cvo.operator_error(co, "network", "4.16.30")[1] == "ClusterOperatorUpdating"
    for cond in co["status"]["conditions"]:
        if cond["type"] == "Degraded":
            cond["status"] = "True"
    assert cvo.operator_error(co, "network", "4.12.77")[2] == "Cluster operator network is degraded"

    def pool(name: str, rendered: str, paused: bool = False, updated: bool = True, required: bool = False) -> dict[str, Any]:
        labels = {mco_rules_label: ""} if required else {}
        return {
            "metadata": {"name": name, "labels": labels, "generation": 1},
            "spec": {"paused": paused, "configuration": {"name": rendered}},
            "status": {
                "observedGeneration": 1, "machineCount": 1, "configuration": {"name": rendered, "source": [{"name": "00-x"}]},
                "conditions": [{"type": "Updated", "status": "True" if updated else "False"},
                               {"type": "Degraded", "status": "False"}],
            },
        }

    mco_rules_label = "operator.machineconfiguration.openshift.io/required-for-upgrade"
    gen = {"machineconfiguration.openshift.io/generated-by-controller-version": mco.controller_version("4.16.30")}
    mcs = {
        "00-x": {"metadata": {"name": "00-x", "annotations": gen}},
        "new": {"metadata": {"name": "new", "annotations": dict(gen, **{
            "machineconfiguration.openshift.io/release-image-version": "4.16.30"})}, "spec": {"osImageURL": "os-new"}},
        "old": {"metadata": {"name": "old", "annotations": {
            "machineconfiguration.openshift.io/generated-by-controller-version": mco.controller_version("4.12.77"),
            "machineconfiguration.openshift.io/release-image-version": "4.12.77"}}, "spec": {"osImageURL": "os-old"}},
    }
    from kmodlab import mco_rules

    def check(*pools: dict[str, Any]) -> str | None:
        return mco_rules.required_pools_error(list(pools), mco.controller_version("4.16.30"), "4.16.30", "os-new", mcs)

    # A paused worker pool on the old rendering does not hold the upgrade; the master pool does.
    assert check(pool("master", "new", required=True), pool("worker", "old", paused=True, updated=False)) is None
    held = check(pool("master", "old", required=True), pool("worker", "old", paused=True))
    assert held is not None and held.startswith("MachineConfigPool master has not progressed to latest configuration: ")
    assert "controller version mismatch for old" in held
    degraded = pool("worker", "old")
    degraded["status"]["conditions"][1]["status"] = "True"
    assert check(pool("master", "new", required=True), degraded).startswith("MachineConfigPool worker is not ready")


def test_node_seconds_from_boot_records() -> None:
    records = {
        "w0": [
            {"seeded": True, "up": 0.0, "down": 10.0, "config_release": "4.12.77", "os_release": "4.12.77", "modules": ["m"]},
            {"seeded": False, "up": 12.0, "down": 20.0, "config_release": "4.16.30", "os_release": "4.12.77",
             "modules": ["m"]},
            {"seeded": False, "up": 25.0, "down": None, "config_release": "4.16.30", "os_release": "4.16.30",
             "modules": []},
        ]
    }
    assert groundtruth.reboots(records) == {"w0": 2}
    seconds = groundtruth.node_seconds(records, expected_modules=["m"], since=5.0, until=30.0)
    assert seconds == {"total": 5.0 + 8.0 + 5.0, "stale_os": 8.0, "missing_modules": 5.0}


@pytest.mark.lab
def test_available_updates_and_refused_targets(
    clusters: list[Lab], releases: tuple[dict[str, Any], dict[str, Any]], lab: state.LabState
) -> None:
    a = clusters[0]
    old, new = releases
    cv = a.wait("availableUpdates", lambda: c if (c := a.cv())["status"].get("availableUpdates") else None)
    assert [{"version": u["version"], "image": u["image"]} for u in cv["status"]["availableUpdates"]] == newer(
        lab, old["version"]
    )
    assert new["version"] in [u["version"] for u in cv["status"]["availableUpdates"]]
    assert all("@sha256:" in u["image"] for u in cv["status"]["availableUpdates"])
    assert cv["status"]["desired"]["image"] == cvo.release_image(old)
    assert [co["metadata"]["name"] for co in a.cos.get().to_dict()["items"]] and all(
        cvo.operator_version(co) == old["version"] for co in a.cos.get().to_dict()["items"]
    )

    # A version that is not an available update, without an image: invalid, ignored.
    a.desire({"version": "4.99.1"})
    invalid = a.wait("Invalid", lambda: a.cond("Invalid") or None)
    assert invalid["status"] == "True" and invalid["reason"] == "InvalidClusterVersion"
    assert invalid["message"] == (
        'The cluster version is invalid: spec.desiredUpdate.version: Invalid value: "4.99.1": '
        "when image is empty the update must be an available update"
    )
    assert a.cv()["status"]["desired"]["version"] == old["version"]

    # An image that is no lab release: it cannot be verified, refused (also forced: no payload).
    unknown = f"{lab.registry.host}/openshift-release-dev/ocp-release@sha256:{'1' * 64}"
    for force, words in ((False, "The update cannot be verified"), (True, "Unable to download and prepare the update")):
        a.desire({"image": unknown, "force": force, "version": None})

        def refused(words: str = words) -> dict[str, Any] | None:
            c = a.cond("ReleaseAccepted")
            return c if c.get("status") == "False" and words in c.get("message", "") else None

        accepted = a.wait(f"ReleaseAccepted=False ({words})", refused)
        assert accepted["reason"] == "RetrievePayload"
        assert f'image="{unknown}"' in accepted["message"]
        cv = a.cv()
        assert not a.cond("Invalid", cv)
        assert cv["status"]["desired"] == {"version": old["version"], "image": cvo.release_image(old),
                                           "channels": [cvo.channel_of(old["version"])]}
        assert len(cv["status"]["history"]) == 1 and cv["status"]["history"][0]["state"] == "Completed"

    # The image of one release with the version of another.
    a.desire({"version": "4.99.1", "image": cvo.release_image(new), "force": False})
    mismatch = a.wait(
        "VerifyPayloadVersion",
        lambda: c if (c := a.cond("ReleaseAccepted")).get("reason") == "VerifyPayloadVersion" else None,
    )
    assert mismatch["status"] == "False"
    assert f"release image version {new['version']} does not match the expected upstream version 4.99.1" in mismatch["message"]
    assert a.cv()["status"]["desired"]["version"] == old["version"]

    # Back to the running release: accepted, nothing to do.
    a.desire({"version": old["version"], "image": cvo.release_image(old), "force": False})
    a.wait("ReleaseAccepted=True", lambda: a.cond("ReleaseAccepted").get("status") == "True")
    assert a.cond("Progressing")["status"] == "False"
    assert a.cv()["status"]["observedGeneration"] == a.cv()["metadata"]["generation"]


@pytest.mark.lab
def test_upgrade_completes_while_the_paused_worker_pool_stays(
    clusters: list[Lab], releases: tuple[dict[str, Any], dict[str, Any]], lab: state.LabState
) -> None:
    a = clusters[0]
    old, new = releases
    before = a.pool("worker")
    assert before["status"]["conditions"] and "required-for-upgrade" not in json.dumps(before["metadata"].get("labels"))
    assert "operator.machineconfiguration.openshift.io/required-for-upgrade" in a.pool("master")["metadata"]["labels"]
    a.pools.patch(name="worker", body={"spec": {"paused": True}}, content_type=MERGE)
    old_worker_config = before["status"]["configuration"]["name"]
    update = start_upgrade(a, new)
    seen: list[tuple[str, str, str]] = []

    def observe() -> None:
        cv = a.cv()
        history = cv["status"].get("history") or [{}]
        seen.append((history[0].get("version", ""), history[0].get("state", ""), a.cond("Progressing", cv).get("message", "")))

    def completed() -> dict[str, Any] | None:
        cv = a.cv()
        return cv if cv["status"]["history"][0]["state"] == "Completed" and cv["status"]["history"][0]["version"] == new["version"] else None

    cv = a.wait("the upgrade to complete", completed, observe)
    partial = [s for s in seen if s[:2] == (new["version"], "Partial")]
    assert partial, seen
    assert all(s[2].startswith(f"Working towards {new['version']}") for s in partial)
    assert any("waiting on machine-config" in s[2] for s in partial)
    status = cv["status"]
    assert status["desired"]["version"] == new["version"] and status["desired"]["image"] == update["image"]
    first, second = status["history"][0], status["history"][1]
    assert (first["image"], first["verified"]) == (update["image"], True)
    assert first["completionTime"] and first["startedTime"]
    assert (second["version"], second["state"]) == (old["version"], "Completed") and second["completionTime"]
    assert a.cond("Progressing", cv)["status"] == "False"
    assert a.cond("Progressing", cv)["message"] == f"Cluster version is {new['version']}"
    assert a.cond("Available", cv)["message"] == f"Done applying {new['version']}"
    assert a.cond("Failing", cv)["status"] == "False"
    assert a.cond("ReleaseAccepted", cv)["status"] == "True"
    assert [{"version": u["version"], "image": u["image"]} for u in status.get("availableUpdates") or []] == newer(
        lab, new["version"]
    )
    assert all(cvo.operator_version(co) == new["version"] for co in a.cos.get().to_dict()["items"])

    # The MCO: the new release's OS image is the default, generated configs carry its controller version.
    cc = a.ccs.get(name="machine-config-controller").to_dict()
    assert cc["spec"]["baseOSContainerImage"] == os_image(new)
    assert a.mcs.get(name="00-worker").to_dict()["metadata"]["annotations"][ANN + "generated-by-controller-version"] == (
        mco.controller_version(new["version"])
    )
    master = a.pool("master")
    rendered = a.mcs.get(name=master["status"]["configuration"]["name"]).to_dict()
    assert rendered["spec"]["osImageURL"] == os_image(new)
    assert rendered["metadata"]["annotations"][ANN + "release-image-version"] == new["version"]
    records = a.boots()
    assert groundtruth.reboots(records)["master-0"] == 1
    boot = groundtruth.last_boot(records, "master-0")
    assert (boot["kernel"], boot["os_release"], boot["config_release"]) == (new["kernel"], new["version"], new["version"])
    assert a.node("master-0")["status"]["nodeInfo"]["kernelVersion"] == new["kernel"]

    # The paused worker pool: re-rendered for the new release, not rolled.
    worker = a.pool("worker")
    target = a.mcs.get(name=worker["spec"]["configuration"]["name"]).to_dict()
    assert target["spec"]["osImageURL"] == os_image(new)
    assert worker["status"]["configuration"]["name"] == old_worker_config
    updating = find_condition(worker["status"]["conditions"], "Updating")
    assert updating["message"] == f"Pool is paused; will not update to MachineConfig {worker['spec']['configuration']['name']}"
    for name in ("worker-0", "worker-1"):
        node = a.node(name)
        assert node["metadata"]["annotations"][ANN + "currentConfig"] == old_worker_config
        assert node["status"]["nodeInfo"]["kernelVersion"] == old["kernel"]
        assert groundtruth.reboots(records)[name] == 0


@pytest.mark.lab
def test_unpausing_rolls_each_worker_once_onto_the_new_release(
    clusters: list[Lab], releases: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    """The product's order: upgrade with the pool paused, then write its
    MachineConfig (osImageURL on the new base), then unpause: one reboot."""
    a = clusters[0]
    _old, new = releases
    since = time.time()
    a.mcs.create(body={
        "apiVersion": MC_API, "kind": "MachineConfig",
        "metadata": {"name": "99-worker-kmod", "labels": {ANN + "role": "worker"}},
        "spec": {
            "osImageURL": os_image(new),
            "config": {"ignition": {"version": "3.2.0"}, "storage": {"files": [
                {"path": "/etc/kmodlab-kmod", "mode": 420, "contents": {"source": "data:,kmod"}}]}},
        },
    })

    def rendered_with_ours() -> str | None:
        pool = a.pool("worker")
        sources = [m["name"] for m in pool["spec"]["configuration"]["source"]]
        return pool["spec"]["configuration"]["name"] if "99-worker-kmod" in sources else None

    target = a.wait("the paused pool to render our MachineConfig", rendered_with_ours)
    assert groundtruth.reboots(a.boots())["worker-0"] == 0
    a.pools.patch(name="worker", body={"spec": {"paused": False}}, content_type=MERGE)

    def rolled() -> bool:
        pool = a.pool("worker")
        return (
            pool["status"]["configuration"]["name"] == pool["spec"]["configuration"]["name"]
            and find_condition(pool["status"]["conditions"], "Updated")["status"] == "True"
        )

    a.wait("the worker rollout", rolled)
    records = a.boots()
    for name in ("worker-0", "worker-1"):
        assert groundtruth.reboots(records)[name] == 1
        boot = groundtruth.last_boot(records, name)
        assert (boot["kernel"], boot["os_release"], boot["config_release"]) == (new["kernel"], new["version"], new["version"])
        assert (boot["os_image"], boot["config"]) == (os_image(new), target)
        node = a.node(name)
        assert node["status"]["nodeInfo"]["kernelVersion"] == new["kernel"]
        assert node["metadata"]["annotations"]["kmodlab.io/reboots"] == "1"
    # Nobody ran the new release's config on the old OS image.
    assert groundtruth.node_seconds(records, since=since)["stale_os"] == 0.0
    assert groundtruth.reboots(records) == {"master-0": 1, "worker-0": 1, "worker-1": 1}


@pytest.mark.lab
def test_a_degraded_pool_blocks_a_minor_upgrade_until_it_recovers(
    clusters: list[Lab], releases: tuple[dict[str, Any], dict[str, Any]], lab: state.LabState
) -> None:
    """MCO: Upgradeable=False while a pool is degraded; CVO: the
    ClusterVersionUpgradeable precondition refuses a minor update."""
    b = clusters[1]
    old, new = releases
    b.mcs.create(body={
        "apiVersion": MC_API, "kind": "MachineConfig",
        "metadata": {"name": "99-worker-zz-missing", "labels": {ANN + "role": "worker"}},
        "spec": {"osImageURL": f"{lab.registry.host}/kmodlab/does-not-exist@sha256:{'0' * 64}"},
    })
    b.wait("a degraded worker pool", lambda: find_condition(b.pool("worker")["status"]["conditions"], "Degraded")["status"] == "True")
    upgradeable = b.wait("Upgradeable=False", lambda: c if (c := b.cond("Upgradeable")).get("status") == "False" else None)
    assert upgradeable["message"].startswith("Cluster operator machine-config should not be upgraded between minor versions: ")
    assert "worker" in upgradeable["message"]
    start_upgrade(b, new)
    refused = b.wait(
        "PreconditionChecks", lambda: c if (c := b.cond("ReleaseAccepted")).get("reason") == "PreconditionChecks" else None
    )
    assert refused["status"] == "False"
    assert 'Precondition "ClusterVersionUpgradeable" failed because of "DegradedPool"' in refused["message"]
    cv = b.cv()
    assert cv["status"]["desired"]["version"] == old["version"] and len(cv["status"]["history"]) == 1
    b.desire(None)
    b.mcs.delete(name="99-worker-zz-missing")
    b.wait("Upgradeable back", lambda: not b.cond("Upgradeable"))
    b.wait("the worker pool back", lambda: find_condition(b.pool("worker")["status"]["conditions"], "Updated")["status"] == "True")
    assert b.cv()["status"]["desired"]["version"] == old["version"]


@pytest.mark.lab
def test_degraded_operator_fails_the_upgrade_and_an_os_override_keeps_the_old_os(
    clusters: list[Lab], releases: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    b = clusters[1]
    old, new = releases
    # The documented path's first half: the worker pool's OS pinned by a MachineConfig.
    b.mcs.create(body={
        "apiVersion": MC_API, "kind": "MachineConfig",
        "metadata": {"name": "99-worker-pinned-os", "labels": {ANN + "role": "worker"}},
        "spec": {"osImageURL": os_image(old)},
    })
    faults.degrade_operator(b.entry["kubeconfig"], "network")
    start_upgrade(b, new)

    def failing() -> dict[str, Any] | None:
        # The upgrade's Failing, not the one the degraded operator may cause
        # first while the CVO still reconciles the old release.
        cv = b.cv()
        upgrading = cv["status"]["history"][0]["version"] == new["version"]
        return cv if upgrading and b.cond("Failing", cv).get("status") == "True" else None

    cv = b.wait("Failing=True during the upgrade", failing)
    failing_cond, progressing = b.cond("Failing", cv), b.cond("Progressing", cv)
    assert (failing_cond["reason"], failing_cond["message"]) == ("ClusterOperatorDegraded", "Cluster operator network is degraded")
    assert progressing["status"] == "True"
    assert progressing["message"] == f"Unable to apply {new['version']}: wait has exceeded 40 minutes for these operators: network"
    assert (cv["status"]["history"][0]["version"], cv["status"]["history"][0]["state"]) == (new["version"], "Partial")
    network = b.cos.get(name="network").to_dict()
    assert find_condition(network["status"]["conditions"], "Degraded")["status"] == "True"
    # Operators after it (machine-config) were not asked: rendering still on the old release.
    assert cvo.operator_version(b.cos.get(name="machine-config").to_dict()) == old["version"]
    assert b.ccs.get(name="machine-config-controller").to_dict()["spec"]["baseOSContainerImage"] == os_image(old)

    since = time.time()
    faults.heal_operator(b.entry["kubeconfig"], "network")

    def done() -> bool:
        cv = b.cv()
        workers = b.pool("worker")
        return (
            cv["status"]["history"][0]["state"] == "Completed"
            and find_condition(workers["status"]["conditions"], "Updated")["status"] == "True"
            and workers["status"]["configuration"]["name"] == workers["spec"]["configuration"]["name"]
        )

    b.wait("the upgrade and the worker rollout", done)
    assert b.cond("Failing")["status"] == "False"
    worker_pool = b.pool("worker")
    rendered = b.mcs.get(name=worker_pool["status"]["configuration"]["name"]).to_dict()
    # The MachineConfig's osImageURL still wins over the new release's.
    assert rendered["spec"]["osImageURL"] == os_image(old)
    assert rendered["metadata"]["annotations"][ANN + "os-image-url-overridden"] == "true"
    records = b.boots()
    for name in ("worker-0", "worker-1"):
        boot = groundtruth.last_boot(records, name)
        assert groundtruth.reboots(records)[name] == 1
        assert (boot["config_release"], boot["os_release"], boot["kernel"]) == (new["version"], old["version"], old["kernel"])
    seconds = groundtruth.node_seconds(records, since=since)
    assert seconds["stale_os"] > 0.0
    assert groundtruth.node_seconds(records, expected_modules=["kmodlab_core"], since=since)["missing_modules"] > 0.0


@pytest.mark.lab
def test_a_master_pool_that_cannot_update_degrades_machine_config(
    clusters: list[Lab], releases: tuple[dict[str, Any], dict[str, Any]], lab: state.LabState
) -> None:
    """A required pool that does not get there: the machine-config operator
    goes Degraded (RequiredPoolsFailed) after its timeout and the CVO fails
    naming it; forced past Upgradeable=False; fixed, the upgrade completes."""
    c = clusters[2]
    old, new = releases
    c.mcs.create(body={
        "apiVersion": MC_API, "kind": "MachineConfig",
        "metadata": {"name": "99-master-zz-missing", "labels": {ANN + "role": "master"}},
        "spec": {"osImageURL": f"{lab.registry.host}/kmodlab/does-not-exist@sha256:{'0' * 64}"},
    })
    c.wait("Upgradeable=False", lambda: c.cond("Upgradeable").get("status") == "False")
    update = next(u for u in c.cv()["status"]["availableUpdates"] if u["version"] == new["version"])
    c.desire({"version": new["version"], "image": update["image"], "force": True})

    def failing() -> dict[str, Any] | None:
        cv = c.cv()
        return cv if c.cond("Failing", cv).get("status") == "True" else None

    cv = c.wait("Failing=True", failing)
    assert c.cond("Failing", cv)["message"] == "Cluster operator machine-config is degraded"
    assert c.cond("Progressing", cv)["message"] == (
        f"Unable to apply {new['version']}: wait has exceeded 40 minutes for these operators: machine-config"
    )
    assert cv["status"]["history"][0]["acceptedRisks"].startswith(
        'Forced through blocking failures: Precondition "ClusterVersionUpgradeable" failed'
    )
    machine_config = c.cos.get(name="machine-config").to_dict()
    degraded = find_condition(machine_config["status"]["conditions"], "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RequiredPoolsFailed")
    assert degraded["message"].startswith(
        f"Unable to apply {new['version']}: during syncRequiredMachineConfigPools: [context deadline exceeded, "
        "MachineConfigPool master is not ready, retrying. Status: (pool degraded: true"
    )
    assert "does-not-exist" in degraded["message"]
    assert cvo.operator_version(machine_config) == old["version"]
    assert "master" in machine_config["status"]["extension"]

    c.mcs.delete(name="99-master-zz-missing")
    c.wait("the upgrade", lambda: c.cv()["status"]["history"][0]["state"] == "Completed")
    assert c.cond("Failing")["status"] == "False"
    assert find_condition(c.cos.get(name="machine-config").to_dict()["status"]["conditions"], "Degraded")["status"] == "False"
    records = c.boots()
    assert groundtruth.last_boot(records, "master-0")["kernel"] == new["kernel"]
    assert groundtruth.reboots(records)["master-0"] == 1  # the failed pulls never rebooted it


@pytest.mark.lab
@pytest.mark.qemu
def test_a_qemu_node_really_boots_the_new_release_kernel(
    lab: state.LabState, releases: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    """One real boot: the master of a 1-node qemu cluster upgrades and its
    kernel (the one qemu booted, `uname -r` of the boot report) is the new
    release's."""
    old, new = releases
    with state.locked(lab.root) as current:
        (entry,) = cluster.start_clusters(
            current, 1, [old["version"]], workers=0, masters=1, node_mode="qemu",
            drain_seconds=0.1, operator_seconds=0.1,
        )
    try:
        q = Lab(entry)
        q.wait("availableUpdates", lambda: q.cv()["status"].get("availableUpdates"))
        start_upgrade(q, new)
        q.wait("the upgrade", lambda: q.cv()["status"]["history"][0]["state"] == "Completed"
               and q.cv()["status"]["history"][0]["version"] == new["version"])
        records = q.boots()
        assert groundtruth.reboots(records) == {"master-0": 1}
        boot = groundtruth.last_boot(records, "master-0")
        assert (boot["kernel"], boot["os_release"]) == (new["kernel"], new["version"])
        report = json.loads(q.node("master-0")["metadata"]["annotations"]["kmodlab.io/boot"])
        assert (report["mode"], report["kernel"]) == ("qemu", new["kernel"])
    finally:
        with state.locked(lab.root) as current:
            cluster.stop_cluster(current, entry["name"])
