"""playbooks/prebuild.yml on multi-arch lab clusters (issue K), bad input: a
pool that mixes architectures stops the prebuild before anything is built
or pushed. (A multi-arch and an aarch64 cluster prebuilt for, then
upgraded: tests/e2e/test_upgrade_multiarch.py.) Ground truth: the registry
(skopeo, its access log) and the API server's request log.

Its own file: its clusters come from kmodlab.pytest_plugin.arch_cluster
(lab.json on disk), which must not share a module with clusters started in
memory by cluster.start_clusters (test_prebuild.py's), whose names and
ports lab.json does not know."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from kmodlab.pytest_plugin import arch_cluster, arch_release
from kmodlab.state import LabState

from integration.test_prebuild import inventory, playbook, tags, writes

pytestmark = [pytest.mark.lab]

MULTI_FROM, MULTI_TO = "4.12.77-multi", "4.16.30-multi"


@pytest.fixture(scope="module")
def multi_target(lab: LabState) -> Iterator[dict[str, Any]]:
    """4.16.30-multi published first, so that a cluster started on
    4.12.77-multi lists it (a lab cluster's catalog is what the lab has when
    it starts)."""
    with arch_release(lab, MULTI_TO) as entry:
        yield entry


def manifest_pushes(lab: LabState, repository: str) -> int:
    """Manifest PUTs into `repository` (host/path), from the registry's access log."""
    path = repository.split("/", 1)[1]
    pattern = re.compile(rf'"PUT /v2/{re.escape(path)}/manifests/')
    return sum(len(pattern.findall(p.read_text(errors="replace"))) for p in lab.layout.logs.glob("*registry*.log"))


def test_a_pool_that_mixes_architectures_stops_the_prebuild_before_anything_is_pushed(
        lab: LabState, multi_target: dict[str, Any], tmp_path: Path) -> None:
    """Bad input: a cluster whose worker pool has an x86_64 and an arm64
    node (one MachineConfig pins one image) fails prebuild.yml when the
    updates are read, naming the cluster, the pool and the fix; nothing is
    built or pushed, nothing written. A fast-mode cluster: nothing boots."""
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
