"""The lab's layered image builder (kmodlab.layered), the stand-in for the
build role that the lab's own fixtures and several product tests build their
images with: it must render the product's Containerfile.j2 exactly as the
build role's ansible.builtin.template does, and lay out module sources from
local directories and git repositories the way the role does."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from kmodlab import layered
from kmodlab.layered import KmodSource
from kmodlab.state import LabState

CORE_OPTIONS = "greeting=layered level=7"


def _modinfo(ko: bytes, field: str, tmp_path: Path) -> str:
    path = tmp_path / "module.ko"
    path.write_bytes(ko)
    return subprocess.run(["modinfo", "-F", field, str(path)], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def release(lab: LabState) -> dict[str, Any]:
    return lab.releases[0]


# ------------------------------------------------------------ the template, no lab needed


def test_template_renders_as_ansible_template_module_does(tmp_path: Path) -> None:
    """The lab renders Containerfile.j2 itself; it must match what the build
    role's ansible.builtin.template writes from the same variables."""
    variables = {
        "dtk_image": "registry.example/ocp-v4.0-art-dev@sha256:" + "a" * 64,
        "rhcos_image": "registry.example/ocp-v4.0-art-dev@sha256:" + "b" * 64,
        "kernel_version": "6.1.0-50-cloud-amd64",
        "build_key": "c" * 64,
        "kmod_modules": [
            {"name": "kmodlab_core", "source": "sha256:" + "d" * 64, "options": "greeting=it's level=2", "firmware_dir": "fw"},
            {"name": "kmodlab_dep", "load_at_boot": True},
            {"name": "kmodlab_panic", "load_at_boot": False, "build_command": "make KVER=6.1.0-50-cloud-amd64"},
        ],
    }
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(variables))
    dest = tmp_path / "Containerfile.ansible"
    subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible")), "localhost", "-c", "local", "-m", "ansible.builtin.template",
            "-a", f"src={layered.TEMPLATE} dest={dest}", "-e", f"@{vars_file}",
        ],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    ours = layered.render_containerfile(variables)
    assert ours == dest.read_text()
    # And what it says: options shell-quoted, panic module not loaded at boot.
    assert "printf 'options %s %s\\n' kmodlab_core 'greeting=it'\"'\"'s level=2'" in ours
    assert "/etc/modules-load.d/kmodlab_dep.conf" in ours
    assert "/etc/modules-load.d/kmodlab_panic.conf" not in ours
    assert "COPY src/kmodlab_core/fw/ /usr/lib/firmware/" in ours


def test_template_refuses_missing_variables() -> None:
    with pytest.raises(Exception, match="kernel_version"):
        layered.render_containerfile({"dtk_image": "d", "rhcos_image": "r", "build_key": "k", "kmod_modules": [{"name": "m"}]})


# ------------------------------------------------------------ git sources


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def git_served_modules(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A git repository holding the fixture modules, with one commit on top
    that changes kmodlab_core, served by `git daemon` on 127.0.0.1.
    Yields (clone URL, first commit, HEAD commit)."""
    base = tmp_path / "git"
    repo = base / "kmods.git"
    work = tmp_path / "work"
    shutil.copytree(layered.FIXTURE_KMODS, work)

    def git(*args: str, cwd: Path = work) -> str:
        env_args = ["-c", "user.name=kmodlab", "-c", "user.email=kmodlab@example.invalid", "-c", "init.defaultBranch=main"]
        return subprocess.run(["git", *env_args, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "--quiet")
    git("add", ".")
    git("commit", "--quiet", "-m", "kmodlab modules")
    first = git("rev-parse", "HEAD")
    source = work / "kmodlab_core" / "kmodlab_core.c"
    source.write_text(source.read_text().replace('greeting = "hello"', 'greeting = "from-git"'))
    git("commit", "--quiet", "-am", "greet from git")
    head = git("rev-parse", "HEAD")
    base.mkdir()
    git("clone", "--quiet", "--bare", str(work), str(repo), cwd=tmp_path)

    port = _free_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--listen=127.0.0.1", f"--port={port}", f"--base-path={base}", "--export-all", "--reuseaddr", str(base)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"git://127.0.0.1:{port}/kmods.git"
        deadline = time.monotonic() + 30
        while subprocess.run(["git", "ls-remote", url], capture_output=True, check=False).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"git daemon on port {port} did not serve {url}")
            time.sleep(0.2)
        yield url, first, head
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def test_modules_from_a_git_repository(
    lab: LabState, release: dict[str, Any], git_served_modules: tuple[str, str, str], tmp_path: Path
) -> None:
    url, _first, head = git_served_modules
    modules = [
        KmodSource(name="kmodlab_core", git_url=url, subdir="kmodlab_core", options=CORE_OPTIONS),
        KmodSource(name="kmodlab_dep", git_url=url, subdir="kmodlab_dep"),
    ]
    result = layered.build(lab, release["version"], modules, tag="from-git")
    image = layered.pull_image(lab, result.pullspec, base=str(release["images"][release["os_tag"]]))
    kver = release["kernel"]
    assert image.labels["io.kmod-layering.source.kmodlab_core"] == f"git+{url}@{head}#kmodlab_core"
    assert image.labels["io.kmod-layering.source.kmodlab_dep"] == f"git+{url}@{head}#kmodlab_dep"
    core = image.files[f"usr/lib/modules/{kver}/extra/kmodlab_core.ko"]
    # Compiled from the repository's HEAD, not from the fixtures on disk.
    assert b"from-git" in core
    assert _modinfo(core, "vermagic", tmp_path).split()[0] == kver
    assert "extra/kmodlab_dep.ko: extra/kmodlab_core.ko" in image.files[f"usr/lib/modules/{kver}/modules.dep"].decode().splitlines()
    assert result.pullspec.endswith("@" + layered.registry_digest(lab, result.tag_ref))


def test_git_source_at_a_given_commit(git_served_modules: tuple[str, str, str], tmp_path: Path) -> None:
    """git_ref picks the commit: the context holds that commit's sources and
    the source label names it."""
    url, first, head = git_served_modules
    assert first != head
    context = tmp_path / "context"
    kmod_modules = layered.prepare_context(
        context, [KmodSource(name="kmodlab_core", git_url=url, git_ref=first, subdir="kmodlab_core")]
    )
    assert kmod_modules == [{"name": "kmodlab_core", "source": f"git+{url}@{first}#kmodlab_core", "load_at_boot": True}]
    source = (context / "src" / "kmodlab_core" / "kmodlab_core.c").read_text()
    assert 'greeting = "hello"' in source
    assert not (context / "src" / "kmodlab_core" / ".git").exists()
    assert (context / "check-vermagic.sh").read_bytes() == layered.CHECK_VERMAGIC.read_bytes()
