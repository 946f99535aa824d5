"""playbooks/resolve.yml over the lab's generated inventory: every cluster's
release is read from its ClusterVersion (no kmod_release set), resolved over
the registry, and its kernel found — what `make demo` starts with."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from kmodlab import releases

TOP = Path(__file__).resolve().parents[2]


@pytest.mark.lab
def test_resolve_playbook_reads_each_clusters_release_and_kernel(lab, tmp_path: Path) -> None:
    assert len(lab.clusters) >= 2, "the lab fixture starts 2 clusters on 2 releases"
    run = subprocess.run(
        ["ansible-playbook", "-i", lab.inventory, "-e", f"dump_dir={tmp_path}",
         str(TOP / "tests/integration/playbooks/resolve_dump.yml")],
        env=dict(os.environ, ANSIBLE_FORCE_COLOR="0"), capture_output=True, text=True, timeout=600, check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]

    for cluster in lab.clusters:
        release = releases.by_version(cluster["release"])
        published = next(r for r in lab.releases if r["version"] == release.version)
        resolved = json.loads((tmp_path / f"{cluster['name']}.json").read_text())
        assert resolved["release_version"] == release.version
        assert resolved["release_image"].endswith("@" + published["digest"])
        assert resolved["os_image_tag"] == release.os_tag
        assert resolved["rhcos_image"] == published["images"][release.os_tag]
        assert resolved["driver_toolkit_image"] == published["images"]["driver-toolkit"]
        assert resolved["kernel_version"] == release.kernel
        assert resolved["driver_toolkit_kernel_version"] == release.kernel
