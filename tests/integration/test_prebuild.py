"""playbooks/prebuild.yml on a lab cluster that lists an update (the lab's
CVO fills availableUpdates): the image for the update is built, pushed and
boot-tested ahead of the upgrade under the build key the upgrade asks for;
a module that does not compile for it is reported for that cluster and
release without failing the run; nothing is written to the cluster. Ground
truth: the registry (skopeo) and the API server's request log."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from kmodlab import cluster, releases
from kmodlab.apiserver import LAB_CONTROLLER_AGENTS, RequestLogClient
from kmodlab.state import LabState

TOP = Path(__file__).resolve().parents[2]
KMODS = TOP / "tests" / "fixtures" / "kmods"
LAB_CONTROLLERS = LAB_CONTROLLER_AGENTS


def playbook(name: str, inventory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    return subprocess.run(["ansible-playbook", "-i", str(inventory), str(TOP / "playbooks" / name), *args],
                          env=env, capture_output=True, text=True, timeout=1800, check=False)


def writes(lab: LabState, entry: dict[str, Any]) -> int:
    return sum(1 for r in RequestLogClient(entry["api_url"], entry["token"], lab.ca_file).records()
               if r.get("method") in ("POST", "PUT", "PATCH", "DELETE")
               and not str(r.get("user_agent", "")).startswith(LAB_CONTROLLERS))


def tags(lab: LabState, repository: str) -> list[str]:
    proc = subprocess.run(["skopeo", "list-tags", "--authfile", lab.registry["auth_file"], "--cert-dir",
                           str(Path(lab.ca_file).parent), f"docker://{repository}"],
                          capture_output=True, text=True, check=False)
    return yaml.safe_load(proc.stdout)["Tags"] if proc.returncode == 0 else []


@pytest.fixture(scope="module")
def entry(lab: LabState) -> Iterator[dict[str, Any]]:
    (started,) = cluster.start_clusters(lab, 1, [lab.releases[0]["version"]], workers=1, masters=1, node_mode="fast")
    try:
        yield started
    finally:
        cluster.stop_cluster(lab, started["name"])


def inventory(lab: LabState, entry: dict[str, Any], work: Path, **overrides: Any) -> Path:
    fleet = yaml.safe_load(Path(lab.inventory).read_text())["all"]["vars"]
    fleet.update(kmod_image_repository=f"{lab.registry['host']}/kmodtest/prebuild-{uuid.uuid4().hex[:8]}",
                 kmod_report_dir=str(work / "report"))
    fleet.update(overrides)
    path = work / "inventory.yml"
    path.write_text(yaml.safe_dump({"all": {"vars": fleet, "hosts": {
        entry["name"]: {"kmod_kubeconfig": entry["kubeconfig"], "kmod_pools": ["worker"]}}}}))
    return path


def test_prebuild_builds_the_listed_update_once_and_the_upgrade_finds_it(
        lab: LabState, entry: dict[str, Any], tmp_path: Path) -> None:
    update = lab.releases[1]["version"]
    path = inventory(lab, entry, tmp_path)
    repository = yaml.safe_load(path.read_text())["all"]["vars"]["kmod_image_repository"]
    writes_before = writes(lab, entry)
    run = playbook("prebuild.yml", path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert re.search(rf"Cluster {entry['name']} -> {re.escape(update)}: ready, {re.escape(repository)}@sha256:[0-9a-f]{{64}} "
                     r"\(built now\)", run.stdout), run.stdout[-4000:]
    # One image, in the registry, under a content-addressed tag; the cluster untouched.
    assert len(tags(lab, repository)) == 1
    assert writes(lab, entry) == writes_before
    # The build the upgrade would make (same release, modules, recipe) finds it.
    image = next(r for r in lab.releases if r["version"] == update)
    build = playbook("build.yml", path, "-e", f"kmod_release={update}", "-e", f"kmod_release_registry={lab.registry['host']}")
    assert build.returncode == 0, build.stdout[-4000:]
    assert "(from the registry)" in build.stdout and "(built now)" not in build.stdout, build.stdout[-3000:]
    assert image  # the lab release the cluster lists


def test_a_module_that_does_not_build_for_an_update_is_reported_for_that_cluster_and_release(
        lab: LabState, entry: dict[str, Any], tmp_path: Path) -> None:
    update = lab.releases[1]["version"]
    kernel = releases.by_version(update).kernel
    module = tmp_path / "kmodlab_core"
    shutil.copytree(KMODS / "kmodlab_core", module)
    kbuild = module / "Kbuild"
    kbuild.write_text(f"ifeq ($(KERNELRELEASE),{kernel})\n$(error kmodlab_core uses an interface {kernel} removed)\n"
                      "endif\n" + kbuild.read_text())
    path = inventory(lab, entry, tmp_path, kmod_modules=[{"name": "kmodlab_core", "source": {"path": str(module)}}])
    run = playbook("prebuild.yml", path)
    # Reported, not raised: the run passes, the cluster and release are named with the compiler's words.
    assert run.returncode == 0, run.stdout[-6000:]
    assert re.search(rf"Cluster {entry['name']} -> {re.escape(update)}: FAILED: .*kmodlab_core uses an interface "
                     rf"{re.escape(kernel)} removed", run.stdout, re.S), run.stdout[-4000:]
