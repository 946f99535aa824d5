"""The collection as users get it: what `ansible-galaxy collection build`
ships, and the promises the README makes about how to run things."""

from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path

import yaml

TOP = Path(__file__).resolve().parents[2]


def _build(tmp_path: Path) -> tarfile.TarFile:
    subprocess.run(
        ["ansible-galaxy", "collection", "build", "--output-path", str(tmp_path), str(TOP)],
        check=True, capture_output=True, text=True,
    )
    galaxy = yaml.safe_load((TOP / "galaxy.yml").read_text())
    artefact = tmp_path / f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"
    return tarfile.open(artefact)


def test_built_collection_ships_plugins_but_no_lab_or_tooling(tmp_path: Path) -> None:
    names = set(_build(tmp_path).getnames())
    assert "galaxy.yml" not in names and "MANIFEST.json" in names
    assert "meta/runtime.yml" in names and "README.md" in names
    shipped_modules = {n for n in names if n.startswith("plugins/modules/") and n.endswith(".py")}
    on_disk = {str(p.relative_to(TOP)) for p in (TOP / "plugins/modules").glob("*.py")}
    assert shipped_modules == on_disk
    leaked = sorted(
        n for n in names
        if n.startswith(("tests/kmodlab", "tests/lab/", "tests/integration", "tests/e2e", ".lab", ".venv", ".build", "hack/", ".ci"))
        or n in {"Makefile"}
    )
    assert leaked == [], f"lab/test tooling leaked into the collection artefact: {leaked[:10]}"


def test_galaxy_metadata_declares_dependencies_and_requires_ansible() -> None:
    galaxy = yaml.safe_load((TOP / "galaxy.yml").read_text())
    assert (galaxy["namespace"], galaxy["name"]) == ("ocp", "kmod_layering")
    assert {"kubernetes.core", "containers.podman"} <= set(galaxy["dependencies"])
    runtime = yaml.safe_load((TOP / "meta/runtime.yml").read_text())
    assert re.match(r">=\s*2\.\d+", runtime["requires_ansible"])


def test_readme_names_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (TOP / "README.md").read_text()
    section = readme.split("## Try it: two commands", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (TOP / ".ci/run").read_text()
    assert re.search(r"^exec make test\b", ci, re.M), "CI must run the README's test command"
