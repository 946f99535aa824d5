"""The layered image build: the product's Containerfile template and vermagic
check, building the project's test modules against a lab release's DTK and
RHCOS stand-ins, read back from the lab registry as a node would pull it.
(The lab's builder itself, kmodlab.layered, is tested in
tests/lab/test_lab_layered.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

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
