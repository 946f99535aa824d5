"""Execution environment readiness: the example execution-environment.yml
renders a build context with ansible-builder (`create`: no image build, no
network), and the introspection that build runs collects the collection's
own Python and system dependencies, from the collection as built by
`ansible-galaxy collection build` (what an execution environment installs)."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

TOP = Path(__file__).resolve().parents[2]
EXAMPLE_EE = TOP / "extensions/awx/execution-environment.yml"
BIN = Path(sys.executable).parent
# Only in the lab/test profiles: never in an execution environment.
LAB_ONLY = {"docker-registry", "debootstrap", "skopeo", "make", "shellcheck", "apache2-utils"}


def _requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ee") / "context"
    subprocess.run(
        [str(BIN / "ansible-builder"), "create", "-f", str(EXAMPLE_EE), "-c", str(out)],
        check=True, capture_output=True, text=True, timeout=120,
    )
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collection as an execution environment gets it: built, then
    installed the way the builder's galaxy stage does."""
    work = tmp_path_factory.mktemp("collection")
    subprocess.run(["ansible-galaxy", "collection", "build", "--output-path", str(work), str(TOP)],
                   check=True, capture_output=True, text=True, timeout=300)
    artefact = next(work.glob("ocp-kmod_layering-*.tar.gz"))
    names = set(tarfile.open(artefact).getnames())
    assert {"meta/execution-environment.yml", "requirements.txt", "bindep.txt"} <= names
    collections = work / "collections"
    subprocess.run(["ansible-galaxy", "collection", "install", "--no-deps", "--force", "-p", str(collections), str(artefact)],
                   check=True, capture_output=True, text=True, timeout=300)
    return collections


def test_create_renders_a_containerfile_for_the_collection(context: Path) -> None:
    definition = yaml.safe_load(EXAMPLE_EE.read_text())
    assert definition["version"] == 3
    containerfile = (context / "Containerfile").read_text()
    assert f'ARG EE_BASE_IMAGE="{definition["images"]["base_image"]["name"]}"' in containerfile
    # ansible-core and ansible-runner (the engine of AWX jobs) are installed.
    assert re.search(r'ARG ANSIBLE_INSTALL_REFS=".*ansible-core.*ansible-runner', containerfile)
    # The galaxy stage installs the collections, the builder stage collects
    # their dependencies, the final stage installs them (bindep + pip).
    assert "ansible-galaxy collection install" in containerfile
    assert "introspect.py introspect" in containerfile
    assert "/output/scripts/install-from-bindep" in containerfile
    # podman in a container: vfs storage and chroot isolation.
    assert "ENV STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot" in containerfile

    galaxy = yaml.safe_load((context / "_build/requirements.yml").read_text())
    wanted = {c["name"]: c.get("version") for c in galaxy["collections"]}
    assert "ocp.kmod_layering" in wanted
    # Every dependency the collection declares is in the image too.
    declared = yaml.safe_load((TOP / "galaxy.yml").read_text())["dependencies"]
    for name, version in declared.items():
        assert wanted.get(name) == version, (name, wanted)


def test_introspection_collects_the_runtime_dependencies_only(context: Path, installed: Path,
                                                              tmp_path: Path) -> None:
    pip_out, bindep_out = tmp_path / "requirements.txt", tmp_path / "bindep.txt"
    # The very script the builder stage runs, from the rendered context.
    run = subprocess.run(
        [sys.executable, str(context / "_build/scripts/introspect.py"), "introspect", str(installed),
         f"--write-pip={pip_out}", f"--write-bindep={bindep_out}"],
        check=True, capture_output=True, text=True, timeout=120,
    )
    assert "ocp.kmod_layering" in run.stdout

    ours = " # from collection ocp.kmod_layering"
    collected_pip = [line.split("  #")[0] for line in pip_out.read_text().splitlines() if line.endswith(ours.strip())]
    # Everything in requirements.txt, but what ansible-builder provides itself (PyYAML).
    expected = [line for line in _requirement_lines(TOP / "requirements.txt") if not line.lower().startswith("pyyaml")]
    assert collected_pip == expected
    assert {Requirement(line).name for line in collected_pip} >= {"kubernetes", "jsonschema"}

    # bindep's default profile, as install-from-bindep evaluates it (here on
    # Debian, where the lab entries' platform matches: only the profile keeps
    # them out): the runtime packages and nothing of the lab.
    listed = subprocess.run([str(BIN / "bindep"), "-l", "newline", "-f", str(bindep_out)],
                            capture_output=True, text=True, timeout=60, check=False)
    runtime = set(listed.stdout.split())
    assert {"podman", "git", "qemu-system-x86", "busybox-static"} <= runtime
    assert not runtime & LAB_ONLY, runtime & LAB_ONLY


def test_bindep_profiles_still_serve_make_setup() -> None:
    """hack/setup.sh installs the runtime entries plus the lab and test profiles."""
    listed = subprocess.run([str(BIN / "bindep"), "-l", "newline", "-f", str(TOP / "bindep.txt"), "lab", "test"],
                            capture_output=True, text=True, timeout=60, check=False)
    packages = set(listed.stdout.split())
    assert {"podman", "git", "skopeo", "docker-registry", "qemu-system-x86", "debootstrap", "shellcheck"} <= packages


def test_requirements_are_satisfied_by_the_pinned_dev_environment() -> None:
    """The versions the tests run with are inside the ranges users get."""
    pins = {}
    for line in _requirement_lines(TOP / "tests/requirements.txt"):
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    for line in _requirement_lines(TOP / "requirements.txt"):
        requirement = Requirement(line)
        pinned = pins.get(requirement.name.lower())
        assert pinned is not None, f"{requirement.name} is not pinned in tests/requirements.txt"
        assert requirement.specifier.contains(pinned), (line, pinned)
