"""The layered image build: the product's Containerfile template and vermagic
check, building the project's test modules against a lab release's DTK and
RHCOS stand-ins, read back from the lab registry as a node would pull it."""

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
from kmodlab.layered import BuildError, BuildResult, KmodSource, PulledImage
from kmodlab.state import LabState

CORE_OPTIONS = "greeting=layered level=7"


def _modinfo(ko: bytes, field: str, tmp_path: Path) -> str:
    path = tmp_path / "module.ko"
    path.write_bytes(ko)
    return subprocess.run(["modinfo", "-F", field, str(path)], check=True, capture_output=True, text=True).stdout.strip()


def _rhcos(release: dict[str, Any]) -> str:
    return str(release["images"][release["os_tag"]])


# ------------------------------------------------------------ no lab needed


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


# ------------------------------------------------------------ the lab


@pytest.fixture(scope="module")
def release(lab: LabState) -> dict[str, Any]:
    return lab.releases[0]


@pytest.fixture(scope="module")
def other_release(lab: LabState, release: dict[str, Any]) -> dict[str, Any]:
    others = [r for r in lab.releases if r["kernel"] != release["kernel"]]
    if not others:
        pytest.skip("needs two lab releases on different kernels")
    return others[0]


MODULES = (
    layered.fixture("kmodlab_core", options=CORE_OPTIONS, firmware_dir="firmware"),
    layered.fixture("kmodlab_dep"),
    layered.fixture("kmodlab_panic", load_at_boot=False, options="panic_on_load=0"),
)


@pytest.fixture(scope="module")
def built(lab: LabState, release: dict[str, Any]) -> tuple[BuildResult, PulledImage]:
    result = layered.build(lab, release["version"], MODULES)
    return result, layered.pull_image(lab, result.pullspec, base=_rhcos(release))


@pytest.mark.lab
def test_pushed_image_is_pinned_by_the_registry_digest(lab: LabState, built: tuple[BuildResult, PulledImage]) -> None:
    result, image = built
    repo, digest = result.pullspec.split("@")
    assert repo == f"{lab.registry['host']}/kmodlab/layered"
    assert digest == layered.registry_digest(lab, result.tag_ref)
    assert image.manifest["config"]["digest"].startswith("sha256:")
    # The RHCOS base's layers are all there, and the modules add to them.
    assert len(image.layer_sizes) > len(image.added_layer_sizes) > 0


@pytest.mark.lab
def test_modules_installed_for_the_release_kernel(
    release: dict[str, Any], built: tuple[BuildResult, PulledImage], tmp_path: Path
) -> None:
    image = built[1]
    kver = release["kernel"]
    for name in ("kmodlab_core", "kmodlab_dep", "kmodlab_panic"):
        ko = image.files[f"usr/lib/modules/{kver}/extra/{name}.ko"]
        assert _modinfo(ko, "vermagic", tmp_path).split()[0] == kver
        assert _modinfo(ko, "name", tmp_path) == name
    dep = image.files[f"usr/lib/modules/{kver}/extra/kmodlab_dep.ko"]
    assert _modinfo(dep, "depends", tmp_path) == "kmodlab_core"
    core = image.files[f"usr/lib/modules/{kver}/extra/kmodlab_core.ko"]
    assert "greeting" in _modinfo(core, "parm", tmp_path)


@pytest.mark.lab
def test_depmod_indexed_the_dependency(release: dict[str, Any], built: tuple[BuildResult, PulledImage]) -> None:
    image = built[1]
    modules_dep = image.files[f"usr/lib/modules/{release['kernel']}/modules.dep"].decode()
    lines = modules_dep.splitlines()
    assert "extra/kmodlab_dep.ko: extra/kmodlab_core.ko" in lines
    assert "extra/kmodlab_core.ko:" in lines
    # modprobe finds modules by name through modules.dep.bin / modules.alias too.
    assert f"usr/lib/modules/{release['kernel']}/modules.dep.bin" in image.files


@pytest.mark.lab
def test_boot_configuration(built: tuple[BuildResult, PulledImage]) -> None:
    image = built[1]
    assert image.files["etc/modules-load.d/kmodlab_core.conf"] == b"kmodlab_core\n"
    assert image.files["etc/modules-load.d/kmodlab_dep.conf"] == b"kmodlab_dep\n"
    assert "etc/modules-load.d/kmodlab_panic.conf" not in image.files
    assert image.files["etc/modprobe.d/kmodlab_core.conf"] == f"options kmodlab_core {CORE_OPTIONS}\n".encode()
    assert image.files["etc/modprobe.d/kmodlab_panic.conf"] == b"options kmodlab_panic panic_on_load=0\n"
    assert "etc/modprobe.d/kmodlab_dep.conf" not in image.files
    firmware = layered.FIXTURE_KMODS / "kmodlab_core" / "firmware" / "kmodlab" / "core.bin"
    assert image.files["usr/lib/firmware/kmodlab/core.bin"] == firmware.read_bytes()


@pytest.mark.lab
def test_labels_record_the_build(release: dict[str, Any], built: tuple[BuildResult, PulledImage]) -> None:
    result, image = built
    labels = image.labels
    assert labels["io.kmod-layering.build-key"] == result.build_key
    assert labels["io.kmod-layering.kernel-version"] == release["kernel"]
    assert labels["io.kmod-layering.modules"] == "kmodlab_core,kmodlab_dep,kmodlab_panic"
    assert labels["io.kmod-layering.dtk"] == release["images"]["driver-toolkit"]
    assert labels["io.kmod-layering.rhcos"] == _rhcos(release)
    for module in MODULES:
        assert module.path is not None
        assert labels[f"io.kmod-layering.source.{module.name}"] == layered.tree_digest(module.path)


@pytest.mark.lab
def test_same_inputs_same_tag_and_digest(lab: LabState, release: dict[str, Any], built: tuple[BuildResult, PulledImage]) -> None:
    """Rebuilding unchanged inputs hits podman's layer cache and lands on the
    same build key, tag and registry digest."""
    first = built[0]
    again = layered.build(lab, release["version"], MODULES)
    assert again.build_key == first.build_key
    assert again.tag_ref == first.tag_ref
    assert again.pullspec == first.pullspec
    # A different option is a different build.
    changed = layered.build(lab, release["version"], [layered.fixture("kmodlab_core", options="level=8")])
    assert changed.build_key != first.build_key


@pytest.mark.lab
def test_dtk_without_the_target_kernel_headers_fails_clearly(
    lab: LabState, release: dict[str, Any], other_release: dict[str, Any]
) -> None:
    with pytest.raises(BuildError) as failure:
        layered.build(lab, release["version"], ["kmodlab_core"], kernel_version_override=other_release["kernel"])
    assert (
        f"kmod-layering: module kmodlab_core: the DTK image has no kernel headers for {other_release['kernel']}"
        f" (it has: {release['kernel']}"
    ) in failure.value.output


@pytest.mark.lab
def test_module_built_for_another_kernel_fails_on_vermagic(
    lab: LabState, release: dict[str, Any], other_release: dict[str, Any]
) -> None:
    """The module's Makefile builds for the DTK's kernel while the target
    (RHCOS) kernel is another: the vermagic check stops the build."""
    module = layered.fixture("kmodlab_core", build_command=f"make KVER={release['kernel']}")
    with pytest.raises(BuildError) as failure:
        layered.build(lab, release["version"], [module], kernel_version_override=other_release["kernel"])
    assert (
        f"kmod-layering: vermagic mismatch: module kmodlab_core (/build/src/kmodlab_core/kmodlab_core.ko)"
        f" was built for kernel {release['kernel']}, but the target kernel is {other_release['kernel']}"
    ) in failure.value.output
    assert "vermagic mismatch" in str(failure.value)


@pytest.mark.lab
def test_compile_error_is_shown(lab: LabState, release: dict[str, Any], tmp_path: Path) -> None:
    source = tmp_path / "kmodlab_broken"
    source.mkdir()
    (source / "Kbuild").write_text("obj-m := kmodlab_broken.o\n")
    (source / "kmodlab_broken.c").write_text(
        "// SPDX-License-Identifier: GPL-2.0\n"
        "#include <linux/module.h>\n"
        "static int __init kmodlab_broken_init(void) { return kmodlab_no_such_symbol; }\n"
        "module_init(kmodlab_broken_init);\n"
        'MODULE_LICENSE("GPL");\n'
    )
    with pytest.raises(BuildError) as failure:
        layered.build(lab, release["version"], [KmodSource(name="kmodlab_broken", path=source)])
    assert "kmodlab_broken.c:3:" in failure.value.output
    assert "error: 'kmodlab_no_such_symbol' undeclared" in failure.value.output
    assert "kmodlab_no_such_symbol" in str(failure.value)


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


@pytest.mark.lab
def test_modules_from_a_git_repository(
    lab: LabState, release: dict[str, Any], git_served_modules: tuple[str, str, str], tmp_path: Path
) -> None:
    url, _first, head = git_served_modules
    modules = [
        KmodSource(name="kmodlab_core", git_url=url, subdir="kmodlab_core", options=CORE_OPTIONS),
        KmodSource(name="kmodlab_dep", git_url=url, subdir="kmodlab_dep"),
    ]
    result = layered.build(lab, release["version"], modules, tag="from-git")
    image = layered.pull_image(lab, result.pullspec, base=_rhcos(release))
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


# ------------------------------------------------------------ booting it


@pytest.mark.lab
@pytest.mark.qemu
def test_layered_image_boots_and_loads_the_modules(
    lab: LabState, release: dict[str, Any], built: tuple[BuildResult, PulledImage], tmp_path: Path
) -> None:
    """The image's own kernel, booted in qemu, loads kmodlab_core (pulled in
    by kmodlab_dep through modules.dep) with the modprobe.d options."""
    from ansible_collections.ocp.kmod_layering.plugins.module_utils import _qemu_boot

    result = built[0]
    rootfs = layered.pull_rootfs(lab, result.pullspec, tmp_path / "rootfs")
    boot = _qemu_boot.boot(str(rootfs), timeout=240)
    assert boot.ok, boot.failures
    assert boot.kernel == release["kernel"]
    assert {"kmodlab_core", "kmodlab_dep"} <= set(boot.loaded)
    assert "kmodlab_panic" not in boot.loaded
    assert boot.params["kmodlab_core"] == {"greeting": "layered", "level": "7"}


@pytest.mark.lab
@pytest.mark.qemu
def test_panic_module_panics_the_booted_kernel(lab: LabState, release: dict[str, Any], tmp_path: Path) -> None:
    """kmodlab_panic with panic_on_load=1 from modprobe.d: the node never comes up."""
    from ansible_collections.ocp.kmod_layering.plugins.module_utils import _qemu_boot

    module = layered.fixture("kmodlab_panic", options="panic_on_load=1")
    pullspec = layered.build_layered_image(lab, release["version"], [module], tag="panic")
    assert pullspec.startswith(f"{lab.registry['host']}/kmodlab/layered@sha256:")
    rootfs = layered.pull_rootfs(lab, pullspec, tmp_path / "rootfs")
    boot = _qemu_boot.boot(str(rootfs), timeout=240)
    assert boot.panic
    assert not boot.ok
    assert any("kmodlab_panic: panic_on_load=1" in failure for failure in boot.failures), boot.failures
