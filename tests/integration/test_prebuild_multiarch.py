"""playbooks/prebuild.yml on a multi-arch lab cluster (issue K): a cluster on
4.12.77-multi (x86_64 master and pool worker, an arm64 node in pool
worker-arm64) that lists 4.16.30-multi gets one image per architecture of
its pools, each built once, pushed and boot-tested; its upgrade then finds
both in the registry (nothing built or pushed) and each pool pins its
architecture's image. A pool that mixes architectures stops the prebuild
before anything is pushed. Ground truth: the registry (skopeo, its access
log), the API server's request log and, after the upgrade, the lab's boot
records.

Its own file: its clusters come from kmodlab.pytest_plugin.arch_cluster
(lab.json on disk), which must not share a module with clusters started in
memory by cluster.start_clusters (test_prebuild.py's), whose names and
ports lab.json does not know."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import kubernetes
import pytest
import yaml

from kmodlab import groundtruth, releases
from kmodlab.pytest_plugin import arch_cluster, arch_release
from kmodlab.state import LabState

from integration.test_prebuild import inventory, playbook, tags, writes

pytestmark = [pytest.mark.lab]


MULTI_FROM, MULTI_TO = "4.12.77-multi", "4.16.30-multi"


@pytest.fixture(scope="module")
def multi_entry(lab: LabState) -> Iterator[dict[str, Any]]:
    """A multi-arch lab cluster on 4.12.77-multi (x86_64 master and pool
    worker, an arm64 node in pool worker-arm64) that lists 4.16.30-multi,
    published first (a lab cluster's catalog is what the lab has when it
    starts). Fast-mode nodes: no node boots in the prebuild, and the
    upgrade's reboots are judged by the lab's rules, not by qemu (the
    publish stage still boot-tests each image in qemu)."""
    with arch_release(lab, MULTI_TO), \
            arch_cluster(lab, MULTI_FROM, workers=1, masters=1, arm64_workers=1, node_mode="fast") as started:
        yield started


def multi_inventory(lab: LabState, entry: dict[str, Any], work: Path) -> Path:
    path = inventory(lab, entry, work, kmod_rollout_progress_file=str(work / "rollout.log"),
                     kmod_upgrade_progress_file=str(work / "upgrade.log"))
    data = yaml.safe_load(path.read_text())
    data["all"]["hosts"][entry["name"]]["kmod_pools"] = ["worker", "worker-arm64"]
    path.write_text(yaml.safe_dump(data))
    return path


def manifest_pushes(lab: LabState, repository: str) -> int:
    """Manifest PUTs into `repository` (host/path), from the registry's access log."""
    path = repository.split("/", 1)[1]
    pattern = re.compile(rf'"PUT /v2/{re.escape(path)}/manifests/')
    return sum(len(pattern.findall(p.read_text(errors="replace"))) for p in lab.layout.logs.glob("*registry*.log"))


def config_arch(lab: LabState, image: str) -> str:
    proc = subprocess.run(["skopeo", "inspect", "--config", "--authfile", lab.registry["auth_file"], "--cert-dir",
                           str(Path(lab.ca_file).parent), f"docker://{image}"],
                          capture_output=True, text=True, check=True)
    return yaml.safe_load(proc.stdout)["architecture"]


def test_prebuild_builds_each_architecture_of_a_multiarch_cluster_once_and_the_upgrade_finds_them(
        lab: LabState, multi_entry: dict[str, Any], tmp_path: Path) -> None:
    entry = multi_entry
    path = multi_inventory(lab, entry, tmp_path)
    repository = yaml.safe_load(path.read_text())["all"]["vars"]["kmod_image_repository"]
    writes_before = writes(lab, entry)
    run = playbook("prebuild.yml", path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    # One image per architecture of the cluster's pools, both built by this run.
    image = rf"{re.escape(repository)}@sha256:[0-9a-f]{{64}}"
    match = re.search(rf"Cluster {entry['name']} -> 4\.16\.30: ready, x86_64 ({image}) \(built now\), "
                      rf"aarch64 ({image}) \(built now\)", run.stdout)
    assert match, run.stdout[-4000:]
    prebuilt = {"x86_64": match.group(1), "aarch64": match.group(2)}
    # Built and pushed once each: two tags, two manifest pushes, each image
    # of its architecture (the registry's config, read with skopeo).
    assert len(tags(lab, repository)) == 2
    assert manifest_pushes(lab, repository) == 2
    assert {arch: config_arch(lab, ref) for arch, ref in prebuilt.items()} == {"x86_64": "amd64", "aarch64": "arm64"}
    # Nothing written to the cluster.
    assert writes(lab, entry) == writes_before

    # The upgrade finds both in the registry: nothing built, nothing pushed;
    # each pool pins its architecture's prebuilt image and runs it.
    run = playbook("upgrade.yml", path, "-e", "kmod_upgrade_to=4.16.30")
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert re.search(rf"{entry['name']}: upgraded 4\.12\.77 -> 4\.16\.30 in [0-9.]+s; ", run.stdout), run.stdout[-3000:]
    assert manifest_pushes(lab, repository) == 2
    assert len(tags(lab, repository)) == 2
    api = kubernetes.dynamic.DynamicClient(kubernetes.config.new_client_from_config(config_file=entry["kubeconfig"]))
    mcs = api.resources.get(api_version="machineconfiguration.openshift.io/v1", kind="MachineConfig").get().to_dict()
    pinned = {m["metadata"]["labels"]["machineconfiguration.openshift.io/role"]: m["spec"]["osImageURL"]
              for m in mcs["items"] if (m.get("spec") or {}).get("osImageURL", "").startswith(repository + "@")}
    assert pinned == {"worker": prebuilt["x86_64"], "worker-arm64": prebuilt["aarch64"]}
    records = groundtruth.read_boots(entry)
    for node, arch in (("worker-0", "x86_64"), ("worker-arm64-0", "aarch64")):
        boot = groundtruth.last_boot(records, node)
        assert boot["os_digest"] == prebuilt[arch].split("@", 1)[1], boot
        assert (boot["config_release"], boot["os_release"]) == ("4.16.30", "4.16.30"), boot
        assert boot["kernel"] == releases.by_version("4.16.30", arch).kernel


def test_a_pool_that_mixes_architectures_stops_the_prebuild_before_anything_is_pushed(
        lab: LabState, multi_entry: dict[str, Any], tmp_path: Path) -> None:
    """Bad input: a cluster whose worker pool has an x86_64 and an arm64
    node (one MachineConfig pins one image) fails prebuild.yml when the
    updates are read, naming the cluster, the pool and the fix; nothing is
    built or pushed, nothing written."""
    with arch_cluster(lab, MULTI_FROM, workers=1, masters=1, arm64_in_worker=1, node_mode="fast") as mixed:
        path = inventory(lab, mixed, tmp_path)
        repository = yaml.safe_load(path.read_text())["all"]["vars"]["kmod_image_repository"]
        writes_before = writes(lab, mixed)
        run = playbook("prebuild.yml", path)
        assert run.returncode != 0, run.stdout[-4000:]
        assert re.search(rf"cluster {mixed['name']}: pool worker mixes architectures \(.*\).*"
                         r"put the nodes of each architecture in a pool of their own", run.stdout, re.S), \
            run.stdout[-4000:]
        assert "Build the images for the releases of the fleet" not in run.stdout
        assert tags(lab, repository) == [] and manifest_pushes(lab, repository) == 0
        assert writes(lab, mixed) == writes_before
