"""playbooks/prebuild.yml then playbooks/upgrade.yml end to end on a
multi-architecture fleet that really upgrades (the lab's own CVO and MCO):
a multi-arch cluster (the -multi payload: x86_64 master and `worker` pool,
arm64 pool `worker-arm64`) and an aarch64 cluster (every node arm64), both
on 4.12.77, listing 4.16.30 (`4.16.30-multi`, `4.16.30-aarch64`: each
cluster's catalog is its own architecture's).

prebuild.yml builds the images of the update for every architecture the
clusters' pools run, once per build key across the fleet (B's x86_64 image
for the multi cluster's worker pool, B's arm64 image for its worker-arm64
pool and for the aarch64 cluster: the same arm64 kernel, DTK and RHCOS);
upgrade.yml then builds and pushes nothing, and upgrades both clusters with
one reboot per node, each pool onto B's image of its nodes' architecture.

Judged by the lab's ground truth: each node agent's boot records
(kmodlab.groundtruth: reboots, the release of the configuration and of the
OS it booted, its kernel, the modules loaded, the booted digest), the
registry (its access log's manifest pushes, each image's config
architecture read with skopeo) and the API servers' request logs. A lab
node refuses an image of another architecture before any reboot, so a pool
pinned to the wrong architecture's image fails the upgrade instead of
passing.

Fast-mode nodes (`node_mode="fast"`: the lab's rules, the arm64 .ko files
read on the host, no qemu) and quick lab operators: the boot itself is not
the point here, and tests/e2e/test_multiarch_fleet.py already boots both
architectures' images in qemu-system-x86_64 / qemu-system-aarch64; the
publish stage still boot-tests each new image in qemu (TCG) as in
production. The clusters start without our MachineConfig (site.yml on the
old release would be two more builds and rollouts; test_upgrade_fleet.py
upgrades clusters that carry it)."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import kubernetes
import pytest
import yaml

from kmodlab import groundtruth, releases
from kmodlab.apiserver import LAB_CONTROLLER_AGENTS, RequestLogClient
from kmodlab.pytest_plugin import arch_cluster, arch_release

from e2e.test_multiarch_fleet import image_config_arch
from e2e.test_site import manifest_pushes

TOP = Path(__file__).resolve().parents[2]
A, B = "4.12.77", "4.16.30"
ANN = "machineconfiguration.openshift.io/"
PAUSED_FOR = "kmod-layering.openshift.io/paused-for"

pytestmark = [pytest.mark.lab]


def playbook(name: str, inventory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    return subprocess.run(["ansible-playbook", "-i", str(inventory), str(TOP / "playbooks" / name), *args],
                          env=env, capture_output=True, text=True, timeout=1800, check=False)


def recap_changed(run: subprocess.CompletedProcess[str]) -> dict[str, int]:
    return {host: int(changed) for host, changed in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", run.stdout, re.M)}


def api(entry: dict[str, Any]) -> kubernetes.dynamic.DynamicClient:
    return kubernetes.dynamic.DynamicClient(kubernetes.config.new_client_from_config(config_file=entry["kubeconfig"]))


def get(entry: dict[str, Any], kind: str, name: str | None = None) -> Any:
    api_version = {"ClusterVersion": "config.openshift.io/v1", "Node": "v1"}.get(
        kind, "machineconfiguration.openshift.io/v1")
    resource = api(entry).resources.get(api_version=api_version, kind=kind)
    return (resource.get(name=name) if name else resource.get()).to_dict()


def writes(lab: Any, entry: dict[str, Any]) -> int:
    """Writes to the cluster's API by anything but the lab's controllers."""
    return sum(1 for r in RequestLogClient(entry["api_url"], entry["token"], lab.ca_file).records()
               if r.get("method") in ("POST", "PUT", "PATCH", "DELETE")
               and (r.get("query") or {}).get("dryRun") != "All"
               and not str(r.get("user_agent", "")).startswith(LAB_CONTROLLER_AGENTS))


def pool_nodes(entry: dict[str, Any], pool: str) -> list[str]:
    """The nodes of `pool` by the lab's labels (a worker-arm64 node also
    carries the worker role label, and belongs to worker-arm64 only)."""
    custom = [p for p in entry.get("pool_arch", {}) if p not in ("master", "worker")]
    names = []
    for node in get(entry, "Node")["items"]:
        labels = node["metadata"]["labels"]
        if pool == "worker" and any("node-role.kubernetes.io/" + p in labels for p in custom):
            continue
        if "node-role.kubernetes.io/" + pool in labels:
            names.append(node["metadata"]["name"])
    return sorted(names)


def our_image(entry: dict[str, Any], pool: str, repository: str) -> str:
    """The osImageURL of our MachineConfig for `pool`, read from the cluster."""
    ours = [m for m in get(entry, "MachineConfig")["items"]
            if (m["metadata"].get("labels") or {}).get(ANN + "role") == pool
            and (m.get("spec") or {}).get("osImageURL", "").startswith(repository + "@sha256:")]
    assert len(ours) == 1, (entry["name"], pool, [m["metadata"]["name"] for m in ours])
    return ours[0]["spec"]["osImageURL"]


@pytest.fixture(scope="module")
def fleet(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The two clusters on 4.12.77, fast nodes, their target releases
    published first (a lab cluster's update catalog is the releases of its
    architecture the lab has when it starts)."""
    work = tmp_path_factory.mktemp("upgrade-multiarch")
    repo_path = f"kmodtest/upgrade-multiarch-{uuid.uuid4().hex[:8]}"
    quick = {"node_mode": "fast", "operator_seconds": 0.5, "drain_seconds": 0.2}
    with arch_release(lab, f"{B}-multi"), arch_release(lab, f"{B}-aarch64"), \
            arch_cluster(lab, f"{A}-multi", workers=1, masters=1, arm64_workers=1, **quick) as multi, \
            arch_cluster(lab, f"{A}-aarch64", workers=1, masters=1, **quick) as arm:
        base = yaml.safe_load(Path(lab.inventory).read_text())["all"]["vars"]
        base.update(kmod_report_dir=str(work / "report"), kmod_rollout_progress_file=str(work / "rollout.log"),
                    kmod_upgrade_progress_file=str(work / "upgrade.log"),
                    kmod_image_repository=f"{lab.registry['host']}/{repo_path}")
        pools = {multi["name"]: ["worker", "worker-arm64"], arm["name"]: ["worker"]}
        hosts = {e["name"]: {"kmod_kubeconfig": e["kubeconfig"], "kmod_pools": pools[e["name"]]} for e in (multi, arm)}
        path = work / "inventory.yml"
        path.write_text(yaml.safe_dump({"all": {"vars": base, "children": {
            "lab_upgrade": {"hosts": hosts}, "canary": {"hosts": {multi["name"]: {}}}}}}))
        yield type("Fleet", (), {"multi": multi, "arm": arm, "inventory": path, "repo_path": repo_path,
                                 "repository": base["kmod_image_repository"]})


def test_prebuild_then_upgrade_a_multiarch_and_an_aarch64_cluster_each_pool_onto_its_architectures_image(
        lab: Any, fleet: Any) -> None:
    multi, arm = fleet.multi, fleet.arm
    # (cluster, pool, architecture of its nodes)
    expected = [(multi, "worker", "x86_64"), (multi, "worker-arm64", "aarch64"), (arm, "worker", "aarch64")]
    image = rf"{re.escape(fleet.repository)}@sha256:[0-9a-f]{{64}}"

    # prebuild.yml: B's image of each architecture, built and pushed once
    # for the fleet, reported per cluster; nothing written to the clusters.
    writes_before = {e["name"]: writes(lab, e) for e in (multi, arm)}
    run = playbook("prebuild.yml", fleet.inventory)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    found = re.search(rf"Cluster {multi['name']} -> {re.escape(B)}: ready, x86_64 ({image}) \(built now\), "
                      rf"aarch64 ({image}) \(built now\)", run.stdout)
    assert found, run.stdout[-4000:]
    prebuilt = {"x86_64": found.group(1), "aarch64": found.group(2)}
    # The aarch64 cluster's image is the multi cluster's arm64 one (one key).
    assert re.search(rf"Cluster {arm['name']} -> {re.escape(B)}: ready, {re.escape(prebuilt['aarch64'])} "
                     r"\(built now\)", run.stdout), run.stdout[-4000:]
    assert manifest_pushes(lab, fleet.repo_path) == 2
    assert {arch: image_config_arch(lab, ref) for arch, ref in prebuilt.items()} == \
        {"x86_64": "amd64", "aarch64": "arm64"}
    assert {e["name"]: writes(lab, e) for e in (multi, arm)} == writes_before

    before = {e["name"]: groundtruth.reboots(groundtruth.read_boots(e)) for e in (multi, arm)}
    started = time.time()
    run = playbook("upgrade.yml", fleet.inventory, "-e", f"kmod_upgrade_to={B}")
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    for entry in (multi, arm):
        assert re.search(rf"{entry['name']}: upgraded {re.escape(A)} -> {re.escape(B)} in [0-9.]+s; ", run.stdout), \
            run.stdout[-3000:]
    # The upgrade found both images in the registry: nothing built, nothing pushed.
    assert manifest_pushes(lab, fleet.repo_path) == 2

    version = get(multi, "ClusterVersion", "version")
    assert version["status"]["desired"].get("architecture") == "Multi", version["status"]["desired"]
    for entry, pool, arch in expected:
        version = get(entry, "ClusterVersion", "version")
        assert (version["status"]["history"][0]["state"], version["status"]["history"][0]["version"]) == \
            ("Completed", B), version["status"]["history"][:2]
        # The pool pins B's image of its architecture, the prebuilt one.
        assert our_image(entry, pool, fleet.repository) == prebuilt[arch], (entry["name"], pool)
        kernel = releases.by_version(B, arch).kernel
        records = groundtruth.read_boots(entry)
        nodes = pool_nodes(entry, pool)
        assert nodes, (entry["name"], pool)
        for node in nodes:
            boot = groundtruth.last_boot(records, node)
            # One reboot, straight into B's configuration and B's OS of the
            # node's own architecture, with the modules, from our image.
            assert groundtruth.reboots(records)[node] - before[entry["name"]][node] == 1, (node, records[node])
            assert (boot["config_release"], boot["os_release"], boot["kernel"]) == (B, B, kernel), boot
            assert {"kmodlab_core", "kmodlab_dep"} <= set(boot["modules"]), boot
            assert boot["os_digest"] == prebuilt[arch].split("@", 1)[1], (node, boot)
        # Never B's config on A's OS (the clusters start without the
        # modules, so node-seconds without them before the upgrade's reboot
        # are expected; after it, the boot above has them).
        seconds = groundtruth.node_seconds({n: records[n] for n in nodes}, since=started)
        assert seconds["stale_os"] == 0, (entry["name"], pool, seconds)
        pool_object = get(entry, "MachineConfigPool", pool)
        assert not pool_object["spec"].get("paused")
        assert PAUSED_FOR not in (pool_object["metadata"].get("annotations") or {})
    # The control plane (not ours) rebooted once too, onto B.
    for entry in (multi, arm):
        records = groundtruth.read_boots(entry)
        for node in pool_nodes(entry, "master"):
            assert groundtruth.reboots(records)[node] - before[entry["name"]][node] == 1, (node, records[node])
            assert groundtruth.last_boot(records, node)["config_release"] == B

    # A rerun is converged: nothing changed, built, pushed or written.
    writes_before = {e["name"]: writes(lab, e) for e in (multi, arm)}
    rerun = playbook("upgrade.yml", fleet.inventory, "-e", f"kmod_upgrade_to={B}")
    assert rerun.returncode == 0, rerun.stdout[-6000:]
    assert set(recap_changed(rerun).values()) == {0}, rerun.stdout[-3000:]
    assert manifest_pushes(lab, fleet.repo_path) == 2
    assert {e["name"]: writes(lab, e) for e in (multi, arm)} == writes_before
