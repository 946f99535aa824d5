"""playbooks/site.yml over a mixed-architecture fleet: one aarch64 lab cluster
(every node arm64) and one multi-arch lab cluster (the -multi payload, an
x86_64 master and `worker` pool, an arm64 `worker-arm64` pool).

Judged by the lab's ground truth, not by what the playbook says: the nodes'
boots (qemu-system-aarch64 for the arm64 nodes, qemu-system-x86_64 for the
x86_64 ones; modules loaded, the kernel of their architecture, the booted
digest), the registry (manifest pushes, each image's config architecture)
and the API servers' request logs (writes). A node of one architecture
refuses an image of the other before any reboot (the lab's rule), so a pool
pinned to the wrong image fails the rollout instead of passing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import kubernetes
import pytest
import yaml

from kmodlab.groundtruth import read_boots, reboots
from kmodlab.pytest_plugin import arch_cluster

from e2e.test_site import KMOD_REPO, manifest_pushes, our_writes, recap, reset_request_logs

TOP = Path(__file__).resolve().parents[2]
ANN = "machineconfiguration.openshift.io/"
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}
MIXED_REPO = KMOD_REPO + "-mixed"

pytestmark = [pytest.mark.lab, pytest.mark.qemu]


@pytest.fixture(scope="module")
def mixed(lab: Any) -> Iterator[tuple[Any, dict[str, Any], dict[str, Any]]]:
    """The two clusters (nodes booting in qemu: the arm64 ones in
    qemu-system-aarch64), added to the lab for this module only."""
    with arch_cluster(lab, "4.16.30-aarch64", workers=1, masters=1, node_mode="qemu") as arm, \
            arch_cluster(lab, "4.16.30-multi", workers=1, masters=1, arm64_workers=1, node_mode="qemu") as multi:
        yield lab, arm, multi


def site(lab: Any, hosts: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """site.yml over `hosts`, pushing into a repository of this module's own:
    the multi cluster's x86_64 pool has the same build key as test_site's
    4.16.30 cluster, so a shared repository would hand that test our image."""
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    repository = f"kmod_image_repository={lab.registry['host']}/{MIXED_REPO}"
    return subprocess.run(
        ["ansible-playbook", "-i", lab.inventory, str(TOP / "playbooks/site.yml"), "--limit", ",".join(hosts),
         "-e", repository, *args], env=env, capture_output=True, text=True, timeout=1800, check=False)


def api(cluster: dict[str, Any]) -> kubernetes.dynamic.DynamicClient:
    return kubernetes.dynamic.DynamicClient(
        kubernetes.config.new_client_from_config(config_file=cluster["kubeconfig"]))


def pool_nodes(cluster: dict[str, Any], pool: str) -> list[dict[str, Any]]:
    """The nodes of `pool` by the lab's own labels (custom pools label their
    nodes node-role.kubernetes.io/<pool>; worker excludes custom-pool nodes)."""
    nodes = api(cluster).resources.get(api_version="v1", kind="Node").get().to_dict()["items"]
    custom = [p for p in cluster.get("pool_arch", {}) if p not in ("master", "worker")]
    result = []
    for node in nodes:
        labels = node["metadata"]["labels"]
        if pool == "worker" and any("node-role.kubernetes.io/" + p in labels for p in custom):
            continue
        if "node-role.kubernetes.io/" + pool in labels:
            result.append(node)
    return result


def image_config_arch(lab: Any, image: str) -> str:
    """The architecture the registry's image config names (skopeo, not the product's client)."""
    out = subprocess.run(["skopeo", "inspect", "--config", "--authfile", lab.registry["auth_file"],
                          "--cert-dir", str(Path(lab.ca_file).parent), "docker://" + image],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["architecture"]


def test_a_mixed_fleet_rolls_out_each_pools_architecture_and_a_rerun_is_converged(mixed: Any) -> None:
    lab, arm, multi = mixed
    hosts = [arm["name"], multi["name"]]
    inventory = yaml.safe_load(Path(lab.inventory).read_text())
    host_vars = inventory["all"]["children"]["lab_clusters"]["hosts"]
    modules = [m["name"] for m in inventory["all"]["vars"]["kmod_modules"] if m.get("load_at_boot", True)]
    assert host_vars[multi["name"]]["kmod_pools"] == ["worker", "worker-arm64"]
    # The inventory says nothing of architectures: they are read from the nodes.
    assert "kmod_arch" not in host_vars[arm["name"]] and "kmod_arch" not in host_vars[multi["name"]]

    pushes_before = manifest_pushes(lab, MIXED_REPO)
    run = site(lab, hosts)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-3000:]
    # Two distinct build keys across the fleet: (kernel, arch) x86_64 for the
    # multi cluster's worker pool, aarch64 for the aarch64 cluster's worker
    # and the multi cluster's worker-arm64 (the same arm64 kernel, DTK and
    # RHCOS digests: one build). Built and pushed once each.
    assert manifest_pushes(lab, MIXED_REPO) - pushes_before == 2

    images: dict[str, str] = {}
    expected = [(arm, "worker", "aarch64"), (multi, "worker", "x86_64"), (multi, "worker-arm64", "aarch64")]
    for cluster, pool, arch in expected:
        mcs = api(cluster).resources.get(api_version="machineconfiguration.openshift.io/v1", kind="MachineConfig")
        ours = [m for m in mcs.get().to_dict()["items"]
                if m["metadata"].get("labels", {}).get(ANN + "role") == pool
                and (m.get("spec") or {}).get("osImageURL", "").startswith(f"{lab.registry['host']}/{MIXED_REPO}@sha256:")]
        assert len(ours) == 1, (cluster["name"], pool, [m["metadata"]["name"] for m in ours])
        image = ours[0]["spec"]["osImageURL"]
        assert image_config_arch(lab, image) == GOARCH[arch], (cluster["name"], pool, image)
        images.setdefault(arch, image)
        assert images[arch] == image, "one image per architecture across the fleet"
        nodes = pool_nodes(cluster, pool)
        assert nodes, (cluster["name"], pool)
        for node in nodes:
            annotations = node["metadata"]["annotations"]
            assert node["metadata"]["labels"]["kubernetes.io/arch"] == GOARCH[arch]
            assert annotations[ANN + "state"] == "Done", (node["metadata"]["name"], annotations.get(ANN + "reason"))
            boot = json.loads(annotations["kmodlab.io/boot"])
            assert boot["mode"] == "qemu", boot
            assert boot["tools"]["qemu"].endswith("qemu-system-" + arch), boot["tools"]
            assert set(modules) <= set(boot["loaded"]), boot
            assert boot["kernel"].endswith("-arm64" if arch == "aarch64" else "-amd64"), boot["kernel"]
            assert annotations["kmodlab.io/booted-digest"] == image.split("@", 1)[1]
    assert len(images) == 2
    # The masters were not targeted: not rebooted.
    for cluster in (arm, multi):
        counts = reboots(read_boots(cluster))
        assert all(counts.get(n["metadata"]["name"], 0) == 0 for n in pool_nodes(cluster, "master")), counts

    # Converged: the rerun builds nothing, pushes nothing, writes nothing.
    reset_request_logs(lab)
    pushes = manifest_pushes(lab, MIXED_REPO)
    rerun = site(lab, hosts)
    assert rerun.returncode == 0, rerun.stdout[-8000:] + rerun.stderr[-3000:]
    assert {host: counts["changed"] for host, counts in recap(rerun).items()} == {host: 0 for host in hosts}
    assert manifest_pushes(lab, MIXED_REPO) == pushes
    writes = our_writes(lab)
    assert {h: writes[h] for h in hosts} == {h: 0 for h in hosts}
    for host in hosts:
        report = json.loads((TOP / "kmod-report" / f"{host}.json").read_text())
        assert report["verdict"] == "pass" and report["method"] == "mco_state", report
