"""The collection as users get it: what `ansible-galaxy collection build`
ships, the collections it declares, the ansible-core it requires, and the
make targets the docs tell users to run."""

from __future__ import annotations

import re
import subprocess
import tarfile
from importlib.metadata import version
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet

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


# A task's module or a module_defaults group, by FQCN: `ns.coll.name:`.
TASK_FQCN = re.compile(r"^\s*(?:-\s+)?(?:group/)?([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*:", re.M)
OWN_OR_CORE = {"ocp.kmod_layering", "ansible.builtin", "ansible.legacy"}


def _collections_used() -> set[str]:
    used = set()
    for path in [*TOP.glob("roles/**/*.yml"), *TOP.glob("playbooks/*.yml")]:
        used |= {f"{ns}.{name}" for ns, name in TASK_FQCN.findall(path.read_text())}
    for path in TOP.glob("plugins/**/*.py"):
        used |= {f"{ns}.{name}" for ns, name in re.findall(r"ansible_collections\.(\w+)\.(\w+)", path.read_text())}
    return used - OWN_OR_CORE


def test_galaxy_declares_exactly_the_collections_the_content_uses() -> None:
    """What the roles, playbooks and plugins call from other collections is
    what `ansible-galaxy collection install` brings along: no more, no less."""
    galaxy = yaml.safe_load((TOP / "galaxy.yml").read_text())
    used = _collections_used()
    assert "kubernetes.core" in used  # the scan sees the cluster modules
    assert set(galaxy["dependencies"]) == used


def test_the_ansible_core_the_tests_run_is_one_the_collection_requires() -> None:
    runtime = yaml.safe_load((TOP / "meta/runtime.yml").read_text())
    running = version("ansible-core")
    assert SpecifierSet(runtime["requires_ansible"]).contains(running), (runtime["requires_ansible"], running)


def test_every_make_target_the_docs_name_exists() -> None:
    """`make <target>` in the README and docs/ is a target of the Makefile."""
    makefile = (TOP / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    named = set()
    for page in [TOP / "README.md", *TOP.glob("docs/*.md"), *TOP.glob("tests/*/README.md")]:
        # A command: in a code span, at the start of a (code block) line, or
        # after a prompt or another command; not the English verb in prose.
        command = r"(?:^[ \t]*|`|\$ |&& |; )make ([a-z][\w-]*)"
        named |= {(page.name, t) for t in re.findall(command, page.read_text(), re.M)}
    assert named, "no make command found: the check would prove nothing"
    missing = sorted(f"{page}: make {target}" for page, target in named if target not in targets)
    assert missing == []
