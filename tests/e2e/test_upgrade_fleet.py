"""playbooks/upgrade.yml end to end on lab clusters that really upgrade (the
lab's own CVO and MCO, kmodlab.cvo): a 2-cluster fleet on release A with the
modules loaded upgrades to release B, one cluster's nodes booting the images
in qemu.

The ground truth is the lab's: each node agent's boot records
(kmodlab.groundtruth: what it booted, on which release's configuration,
which kernel, which modules loaded), the ClusterVersion and pools as the
lab's CVO and MCO left them, and the API servers' request logs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import kubernetes
import pytest
import yaml

from kmodlab import cluster, groundtruth, releases
from kmodlab.apiserver import LAB_CONTROLLER_AGENTS, RequestLogClient
from kmodlab.state import LabState

TOP = Path(__file__).resolve().parents[2]
KMODS = TOP / "tests" / "fixtures" / "kmods"
MODULES = {"kmodlab_core", "kmodlab_dep"}
PAUSED_FOR = "kmod-layering.openshift.io/paused-for"
# Writes by the lab's own controllers are the cluster reacting, not us.
LAB_CONTROLLERS = LAB_CONTROLLER_AGENTS

pytestmark = [pytest.mark.lab, pytest.mark.qemu]


def playbook(name: str, inventory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    return subprocess.run(["ansible-playbook", "-i", str(inventory), str(TOP / "playbooks" / name), *args],
                          env=env, capture_output=True, text=True, timeout=2400, check=False)


def recap_changed(run: subprocess.CompletedProcess[str]) -> dict[str, int]:
    return {host: int(changed) for host, changed in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", run.stdout, re.M)}


def client(entry: dict[str, Any]) -> kubernetes.dynamic.DynamicClient:
    return kubernetes.dynamic.DynamicClient(kubernetes.config.new_client_from_config(config_file=entry["kubeconfig"]))


def get(entry: dict[str, Any], kind: str, name: str | None = None) -> Any:
    api_version = {"ClusterVersion": "config.openshift.io/v1", "Node": "v1"}.get(
        kind, "machineconfiguration.openshift.io/v1")
    resource = client(entry).resources.get(api_version=api_version, kind=kind)
    return (resource.get(name=name) if name else resource.get()).to_dict()


def writes(lab: LabState, entry: dict[str, Any]) -> int:
    """Writes to the cluster's API by anything but the lab's controllers."""
    return sum(1 for r in RequestLogClient(entry["api_url"], entry["token"], lab.ca_file).records()
               if r.get("method") in ("POST", "PUT", "PATCH", "DELETE")
               and (r.get("query") or {}).get("dryRun") != "All"
               and not str(r.get("user_agent", "")).startswith(LAB_CONTROLLERS))


def pool_nodes(entry: dict[str, Any], role: str) -> list[str]:
    """The nodes of pool `role` (an infra node also carries the worker role
    label, and belongs to the infra pool only)."""
    def roles(node: dict[str, Any]) -> set[str]:
        return {k.rsplit("/", 1)[1] for k in node["metadata"]["labels"] if k.startswith("node-role.kubernetes.io/")}
    return sorted(n["metadata"]["name"] for n in get(entry, "Node")["items"]
                  if role in roles(n) and (role != "worker" or roles(n) == {"worker"}))


def inventory(lab: LabState, entries: list[dict[str, Any]], work: Path, pools: dict[str, list[str]],
              **overrides: Any) -> Path:
    base = yaml.safe_load(Path(lab.inventory).read_text())["all"]["vars"]
    base.update(kmod_report_dir=str(work / "report"), kmod_rollout_progress_file=str(work / "rollout.log"),
                kmod_upgrade_progress_file=str(work / "upgrade.log"))
    base.update(overrides)
    hosts = {e["name"]: {"kmod_kubeconfig": e["kubeconfig"], "kmod_pools": pools[e["name"]]} for e in entries}
    path = work / f"inventory-{uuid.uuid4().hex[:6]}.yml"
    path.write_text(yaml.safe_dump({"all": {"vars": base, "children": {
        "lab_upgrade": {"hosts": hosts}, "canary": {"hosts": {entries[0]["name"]: {}}}}}}))
    return path


@pytest.fixture(scope="module")
def a_and_b(lab: LabState) -> tuple[str, str]:
    versions = [r["version"] for r in lab.releases]
    assert len(versions) >= 2, "the upgrade needs two lab releases"
    return versions[0], versions[1]


@pytest.fixture(scope="module")
def fleet(lab: LabState, a_and_b: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Two clusters on release A: the canary with qemu nodes, the other with
    fast nodes and an infra pool; site.yml has loaded the modules on both."""
    a, _b = a_and_b
    work = tmp_path_factory.mktemp("upgrade")
    (canary,) = cluster.start_clusters(lab, 1, [a], workers=2, masters=1, node_mode="qemu")
    entries = [canary]
    try:
        (other,) = cluster.start_clusters(lab, 1, [a], workers=2, masters=1, infra=1, node_mode="fast")
        entries.append(other)
        pools = {canary["name"]: ["worker"], other["name"]: ["worker", "infra"]}
        path = inventory(lab, entries, work, pools)
        run = playbook("site.yml", path)
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        yield type("Fleet", (), {"entries": entries, "inventory": path, "work": work, "pools": pools})
    finally:
        for entry in entries:
            cluster.stop_cluster(lab, entry["name"])


def test_upgrade_reboots_each_node_once_onto_the_new_kernel_with_its_modules(
        lab: LabState, fleet: Any, a_and_b: tuple[str, str]) -> None:
    a, b = a_and_b
    canary, other = fleet.entries
    # The user's own pause of the infra pool, before the upgrade.
    client(other).resources.get(api_version="machineconfiguration.openshift.io/v1", kind="MachineConfigPool").patch(
        name="infra", body={"spec": {"paused": True}}, content_type="application/merge-patch+json")
    before = {e["name"]: groundtruth.reboots(groundtruth.read_boots(e)) for e in fleet.entries}
    started = time.time()

    run = playbook("upgrade.yml", fleet.inventory, "-e", f"kmod_upgrade_to={b}")
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    # The report says where each cluster went.
    for entry in fleet.entries:
        assert re.search(rf"{entry['name']}: upgraded {re.escape(a)} -> {re.escape(b)} in [0-9.]+s; ", run.stdout), \
            run.stdout[-3000:]

    kernel_b = releases.by_version(b).kernel
    for entry in fleet.entries:
        version = get(entry, "ClusterVersion", "version")
        assert version["status"]["history"][0]["state"] == "Completed"
        assert version["status"]["history"][0]["version"] == b
        records = groundtruth.read_boots(entry)
        after = groundtruth.reboots(records)
        workers = pool_nodes(entry, "worker")
        for node in workers:
            boot = groundtruth.last_boot(records, node)
            # One reboot, straight into B's configuration and B's OS.
            assert after[node] - before[entry["name"]][node] == 1, (node, records[node])
            assert (boot["config_release"], boot["os_release"], boot["kernel"]) == (b, b, kernel_b), boot
            assert MODULES <= set(boot["modules"]), boot
        # Never the new release's config on the old OS, never a kernel without its modules.
        worker_records = {n: records[n] for n in workers}
        seconds = groundtruth.node_seconds(worker_records, expected_modules=MODULES, since=started)
        assert seconds["stale_os"] == 0 and seconds["missing_modules"] == 0, seconds
        # The pools this run paused are unpaused and unmarked.
        worker_pool = get(entry, "MachineConfigPool", "worker")
        assert not worker_pool["spec"].get("paused")
        assert PAUSED_FOR not in (worker_pool["metadata"].get("annotations") or {})

    # The user's paused pool stays paused, unmarked, its node not rebooted;
    # it already carries B's image, so unpausing it is one reboot onto B.
    infra = get(other, "MachineConfigPool", "infra")
    assert infra["spec"]["paused"] is True
    assert PAUSED_FOR not in (infra["metadata"].get("annotations") or {})
    (infra_node,) = pool_nodes(other, "infra")
    assert groundtruth.reboots(groundtruth.read_boots(other))[infra_node] == before[other["name"]][infra_node]
    rendered = get(other, "MachineConfig", infra["spec"]["configuration"]["name"])
    worker_rendered = get(other, "MachineConfig", get(other, "MachineConfigPool", "worker")["spec"]["configuration"]["name"])
    assert rendered["spec"]["osImageURL"] == worker_rendered["spec"]["osImageURL"]

    # The user unpauses it: its node reboots once, onto B with the modules.
    client(other).resources.get(api_version="machineconfiguration.openshift.io/v1", kind="MachineConfigPool").patch(
        name="infra", body={"spec": {"paused": False}}, content_type="application/merge-patch+json")
    deadline = time.monotonic() + 300
    while groundtruth.reboots(groundtruth.read_boots(other))[infra_node] == before[other["name"]][infra_node]:
        assert time.monotonic() < deadline, "the infra node never rebooted after the unpause"
        time.sleep(1)
    records = groundtruth.read_boots(other)
    boot = groundtruth.last_boot(records, infra_node)
    assert (boot["config_release"], boot["os_release"], boot["kernel"]) == (b, b, kernel_b), boot
    assert MODULES <= set(boot["modules"]) and groundtruth.reboots(records)[infra_node] == \
        before[other["name"]][infra_node] + 1

    while not any(c["type"] == "Updated" and c["status"] == "True"
                  for c in get(other, "MachineConfigPool", "infra")["status"].get("conditions") or []):
        assert time.monotonic() < deadline, "the infra pool never finished after the unpause"
        time.sleep(1)

    # A rerun is converged: nothing changed, nothing written.
    writes_before = {e["name"]: writes(lab, e) for e in fleet.entries}
    rerun = playbook("upgrade.yml", fleet.inventory, "-e", f"kmod_upgrade_to={b}")
    assert rerun.returncode == 0, rerun.stdout[-6000:]
    assert set(recap_changed(rerun).values()) == {0}, rerun.stdout[-3000:]
    assert {e["name"]: writes(lab, e) for e in fleet.entries} == writes_before


def test_a_module_that_does_not_build_for_the_target_stops_the_upgrade_before_any_write(
        lab: LabState, a_and_b: tuple[str, str], tmp_path: Path) -> None:
    a, b = a_and_b
    kernel_b = releases.by_version(b).kernel
    # A module whose build refuses B's kernel (an API that kernel dropped).
    module = tmp_path / "kmodlab_core"
    shutil.copytree(KMODS / "kmodlab_core", module)
    kbuild = module / "Kbuild"
    kbuild.write_text(f"ifeq ($(KERNELRELEASE),{kernel_b})\n"
                      f"$(error kmodlab_core uses an interface {kernel_b} removed)\nendif\n" + kbuild.read_text())
    (entry,) = cluster.start_clusters(lab, 1, [a], workers=1, masters=1, node_mode="fast")
    try:
        path = inventory(lab, [entry], tmp_path, {entry["name"]: ["worker"]},
                         kmod_modules=[{"name": "kmodlab_core", "source": {"path": str(module)}}],
                         kmod_image_repository=f"{lab.registry['host']}/kmodtest/upgrade-{uuid.uuid4().hex[:8]}")
        writes_before = writes(lab, entry)
        run = playbook("upgrade.yml", path, "-e", f"kmod_upgrade_to={b}")
        assert run.returncode != 0
        assert f"kmodlab_core uses an interface {kernel_b} removed" in run.stdout, run.stdout[-6000:]
        assert "No cluster was changed" in run.stdout
        # Nothing written: no desiredUpdate, no pause, no MachineConfig.
        assert writes(lab, entry) == writes_before
        version = get(entry, "ClusterVersion", "version")
        assert "desiredUpdate" not in (version.get("spec") or {})
        assert version["status"]["history"][0]["version"] == a
        assert not get(entry, "MachineConfigPool", "worker")["spec"].get("paused")
    finally:
        cluster.stop_cluster(lab, entry["name"])
