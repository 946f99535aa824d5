"""aarch64 and multi-arch lab clusters (issue K), checked against upstream facts:

- the aarch64 release's images are arm64 (OCI config `architecture: arm64`,
  `os: linux`), its RHCOS stand-in's modules are built for aarch64 and the
  arm64 kernel ABI (kmod's own `modinfo`), its image-references name those
  arm64 components;
- the `-multi` release is an OCI image index with a linux/amd64 and a
  linux/arm64 entry (OCI image-spec image-index.md), each a release image of
  its architecture whose image-references pin manifest lists (indexes of
  both platforms) by the list's digest, and whose release-metadata says
  `release.openshift.io/architecture: multi` (what `oc adm release info`
  shows for a multi payload);
- a multi-arch cluster: x86_64 control plane and worker pool, an arm64 pool
  (kubelet labels `kubernetes.io/arch` / `beta.kubernetes.io/arch`,
  `status.nodeInfo.architecture` = GOARCH), ClusterVersion
  `status.desired.architecture: Multi`;
- its arm64 node pulls the arm64 entry of a manifest list and really boots
  it in qemu-system-aarch64 (TCG) with the module loaded, the way fast mode
  says too; an x86_64 image pinned into the arm64 pool is refused (Degraded,
  the node stays on its config).

Cost: the aarch64 images are built once (cache, ~10 min cold under
emulation, see the README), one layered arm64 build, one arm64 qemu boot."""

from __future__ import annotations

import gzip
import io
import json
import ssl
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from kubernetes import config as k8s_config
from kubernetes import dynamic

from kmodlab import fastboot, images, layered, nodeboot, pytest_plugin, releases, state

MC_API = "machineconfiguration.openshift.io/v1"
ANN = "machineconfiguration.openshift.io/"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ARM64_KERNEL = releases.by_version("4.16.30", "aarch64").kernel
WAIT = 900.0


def _split(pullspec: str) -> tuple[str, str, str]:
    return layered._split_ref(pullspec)  # noqa: SLF001 - the lab's own helper


def manifest(lab: state.LabState, pullspec: str) -> tuple[dict[str, Any], str]:
    host, repo, reference = _split(pullspec)
    body, ctype = layered.registry_request(
        lab, host, f"{repo}/manifests/{reference}",
        accept=", ".join((OCI_INDEX, "application/vnd.oci.image.manifest.v1+json")))
    return json.loads(body), ctype


def blob(lab: state.LabState, pullspec: str, digest: str) -> bytes:
    host, repo, _ref = _split(pullspec)
    return layered.registry_request(lab, host, f"{repo}/blobs/{digest}")[0]


def config_of(lab: state.LabState, pullspec: str) -> dict[str, Any]:
    data, _ctype = manifest(lab, pullspec)
    assert data.get("mediaType") != OCI_INDEX, f"{pullspec} is an index"
    return json.loads(blob(lab, pullspec, data["config"]["digest"]))


def last_layer_file(lab: state.LabState, pullspec: str, path: str) -> bytes:
    data, _ctype = manifest(lab, pullspec)
    raw = blob(lab, pullspec, data["layers"][-1]["digest"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)) as tar:
        found = images.read_tar_file(tar, path)
    assert found is not None, f"{pullspec}: no {path} in the last layer"
    return found


def image_references(lab: state.LabState, pullspec: str) -> dict[str, str]:
    stream = json.loads(last_layer_file(lab, pullspec, "release-manifests/image-references"))
    return {tag["name"]: tag["from"]["name"] for tag in stream["spec"]["tags"]}


def platforms(index: dict[str, Any]) -> dict[str, str]:
    """GOARCH -> manifest digest of an index's linux entries."""
    return {e["platform"]["architecture"]: e["digest"] for e in index["manifests"] if e["platform"]["os"] == "linux"}


def repo_at(pullspec: str, digest: str) -> str:
    host, repo, _ref = _split(pullspec)
    return f"{host}/{repo}@{digest}"


# ---------------------------------------------------------------- images


@pytest.mark.lab
def test_aarch64_release_images_are_arm64(lab: state.LabState, lab_aarch64_release: dict[str, Any]) -> None:
    entry = lab_aarch64_release
    assert entry["id"] == "4.16.30-aarch64" and entry["arch"] == "aarch64" and entry["kernel"] == ARM64_KERNEL
    assert entry["pullspec"].endswith("/openshift-release-dev/ocp-release:4.16.30-aarch64")
    release_image = repo_at(entry["pullspec"], entry["digest"])
    for pullspec in (release_image, *entry["images"].values()):
        config = config_of(lab, pullspec)
        assert (config["architecture"], config["os"]) == ("arm64", "linux"), pullspec
    refs = image_references(lab, release_image)
    assert refs["driver-toolkit"] == entry["images"]["driver-toolkit"]
    assert refs["rhel-coreos"] == entry["images"]["rhel-coreos"]
    dtk_json = json.loads(last_layer_file(lab, entry["images"]["driver-toolkit"], "etc/driver-toolkit-release.json"))
    assert dtk_json["KERNEL_VERSION"] == ARM64_KERNEL
    assert config_of(lab, entry["images"]["driver-toolkit"])["config"]["Labels"]["kernel-version"] == ARM64_KERNEL
    meta = json.loads(last_layer_file(lab, entry["images"]["rhel-coreos"], "usr/share/openshift/base/meta.json"))
    assert meta["coreos-assembler.basearch"] == "aarch64"

    # A module of the RHCOS stand-in, read by kmod's modinfo: aarch64, the arm64 ABI.
    layout = images.cached_layouts([entry["id"]])[entry["id"]]["rhel-coreos"]
    assert layout.digest == entry["images"]["rhel-coreos"].split("@", 1)[1]
    prefix = f"usr/lib/modules/{ARM64_KERNEL}/kernel/"
    with tarfile.open(layout.path / "blobs" / "sha256" / layout.manifest["layers"][0]["digest"].split(":")[1]) as tar:
        member = next(m for m in tar if m.name.removeprefix("./").startswith(prefix) and m.name.endswith(".ko"))
        data = tar.extractfile(member).read()  # type: ignore[union-attr]
    with tempfile.NamedTemporaryFile(suffix=".ko") as ko:
        ko.write(data)
        ko.flush()
        vermagic = subprocess.run(["modinfo", "-F", "vermagic", ko.name], capture_output=True, text=True,
                                  check=True).stdout.strip()
    assert vermagic.startswith(ARM64_KERNEL + " ") and vermagic.split()[-1] == "aarch64", vermagic
    assert nodeboot.elf_arch(data) == "aarch64"
    # The image carries its own arm64 busybox (the node's initramfs uses it).
    busybox = b""
    for index in range(len(layout.manifest["layers"])):
        busybox = busybox or layout.read_layer_file(index, "usr/bin/busybox") or b""
    assert nodeboot.elf_arch(busybox) == "aarch64"


@pytest.mark.lab
def test_multi_release_is_an_index_whose_components_are_indexes(
    lab: state.LabState, lab_multi_release: dict[str, Any]
) -> None:
    entry = lab_multi_release
    assert entry["id"] == "4.16.30-multi" and entry["arch"] == "multi"
    assert entry["pullspec"].endswith("/openshift-release-dev/ocp-release:4.16.30-multi")
    index, ctype = manifest(lab, entry["pullspec"])
    assert ctype == OCI_INDEX and index["mediaType"] == OCI_INDEX
    assert layered.registry_digest(lab, entry["pullspec"]) == entry["digest"]
    by_arch = platforms(index)
    assert set(by_arch) == {"amd64", "arm64"}
    assert {p["goarch"]: p["digest"] for p in entry["platforms"].values()} == by_arch
    refs_seen = []
    for goarch, digest in by_arch.items():
        child = repo_at(entry["pullspec"], digest)
        assert config_of(lab, child)["architecture"] == goarch
        metadata = json.loads(last_layer_file(lab, child, "release-manifests/release-metadata"))
        assert metadata["version"] == "4.16.30"
        assert metadata["metadata"]["release.openshift.io/architecture"] == "multi"
        refs_seen.append(image_references(lab, child))
    assert refs_seen[0] == refs_seen[1], "every architecture's release image names the same lists"
    refs = refs_seen[0]
    assert refs["driver-toolkit"] == entry["images"]["driver-toolkit"]
    assert refs["rhel-coreos"] == entry["images"]["rhel-coreos"]
    for name, pullspec in refs.items():
        component, ctype = manifest(lab, pullspec)
        assert ctype == OCI_INDEX, f"{name} is not a manifest list"
        assert layered.registry_digest(lab, pullspec) == pullspec.split("@", 1)[1]  # pinned by the list's digest
        children = platforms(component)
        assert set(children) == {"amd64", "arm64"}, name
        for goarch, digest in children.items():
            assert config_of(lab, repo_at(pullspec, digest))["architecture"] == goarch, (name, goarch)
    # The per-architecture images in the entry are the lists' entries.
    for arch, part in entry["platforms"].items():
        goarch = releases.GOARCH[arch]
        for name in ("driver-toolkit", "rhel-coreos"):
            assert part["images"][name].split("@", 1)[1] == platforms(manifest(lab, refs[name])[0])[goarch]
    assert entry["platforms"]["aarch64"]["kernel"] == ARM64_KERNEL
    assert entry["platforms"]["x86_64"]["kernel"] == releases.by_version("4.16.30").kernel


# ---------------------------------------------------------------- the multi-arch cluster


class Api:
    def __init__(self, entry: dict[str, Any]) -> None:
        self.api_client = k8s_config.new_client_from_config(entry["kubeconfig"])
        self.client = dynamic.DynamicClient(self.api_client)
        self.mcs = self.client.resources.get(api_version=MC_API, kind="MachineConfig")
        self.pools = self.client.resources.get(api_version=MC_API, kind="MachineConfigPool")
        self.nodes = self.client.resources.get(api_version="v1", kind="Node")
        self.cv = self.client.resources.get(api_version="config.openshift.io/v1", kind="ClusterVersion")

    def node(self, name: str) -> dict[str, Any]:
        return self.nodes.get(name=name).to_dict()

    def pool(self, name: str) -> dict[str, Any]:
        return self.pools.get(name=name).to_dict()

    def apply_mc(self, name: str, role: str, image: str) -> None:
        self.mcs.create(body={"apiVersion": MC_API, "kind": "MachineConfig",
                              "metadata": {"name": name, "labels": {ANN + "role": role}},
                              "spec": {"osImageURL": image}})

    @staticmethod
    def wait(what: str, check: Callable[[], Any]) -> Any:
        return pytest_plugin.wait_until(what, check, WAIT)


@pytest.fixture(scope="module")
def multi(lab_multiarch_cluster: dict[str, Any]) -> Iterator[Api]:
    yield Api(lab_multiarch_cluster)


@pytest.mark.lab
def test_multiarch_cluster_has_the_shape_of_a_real_one(
    lab: state.LabState, lab_multiarch_cluster: dict[str, Any], multi: Api
) -> None:
    entry = lab_multiarch_cluster
    assert entry["arch"] == "multi" and entry["release_id"] == "4.16.30-multi"
    assert entry["pools"] == {"master": 1, "worker": 1, "worker-arm64": 1}
    assert entry["pool_arch"] == {"master": ["amd64"], "worker": ["amd64"], "worker-arm64": ["arm64"]}
    release = lab.release("4.16.30-multi")
    expected = {"master-0": ("amd64", release["platforms"]["x86_64"]["kernel"]),
                "worker-0": ("amd64", release["platforms"]["x86_64"]["kernel"]),
                "worker-arm64-0": ("arm64", ARM64_KERNEL)}
    for name, (goarch, kernel) in expected.items():
        node = multi.node(name)
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/arch"] == labels["beta.kubernetes.io/arch"] == goarch
        assert node["status"]["nodeInfo"]["architecture"] == goarch
        assert node["status"]["nodeInfo"]["kernelVersion"] == kernel
    assert "node-role.kubernetes.io/worker" in multi.node("worker-arm64-0")["metadata"]["labels"]
    pool = multi.pool("worker-arm64")
    assert pool["spec"]["nodeSelector"] == {"matchLabels": {"node-role.kubernetes.io/worker-arm64": ""}}
    assert pool["status"]["machineCount"] == 1 and multi.pool("worker")["status"]["machineCount"] == 1
    cv = multi.cv.get(name="version").to_dict()
    assert cv["status"]["desired"]["architecture"] == "Multi"
    assert cv["status"]["desired"]["image"].split("@", 1)[1] == release["digest"]
    inventory = Path(lab.inventory).read_text()
    assert "worker-arm64" in inventory and "lab_arch: multi" in inventory


def _push_index(lab: state.LabState, repository: str, parts: dict[str, str]) -> str:
    """An OCI index in `repository` of the given per-GOARCH images (copied
    there by digest first); returns it by digest."""
    host = lab.registry.host
    cert_dir = tempfile.mkdtemp(prefix="kmodlab-certs-")
    Path(cert_dir, "ca.crt").write_bytes(Path(lab.ca_file).read_bytes())
    entries = []
    for goarch, pullspec in parts.items():
        digest = pullspec.split("@", 1)[1]
        subprocess.run(["skopeo", "copy", "--quiet", "--preserve-digests", "--authfile", lab.registry.auth_file,
                        "--src-cert-dir", cert_dir, "--dest-cert-dir", cert_dir, f"docker://{pullspec}",
                        f"docker://{host}/{repository}:{goarch}-{digest[7:19]}"], check=True)
        raw = layered.manifest_request(lab, f"{host}/{repository}@{digest}")[0]
        entries.append({"mediaType": json.loads(raw)["mediaType"], "digest": digest, "size": len(raw),
                        "platform": {"architecture": goarch, "os": "linux"}})
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    layered.manifest_request(lab, f"{host}/{repository}:multi", method="PUT", body=(body, OCI_INDEX))
    return f"{host}/{repository}@{layered.registry_digest(lab, f'{host}/{repository}:multi')}"


@pytest.mark.lab
@pytest.mark.qemu
def test_arm64_node_refuses_x86_then_boots_its_platform_of_a_list_in_qemu(
    lab: state.LabState, lab_multiarch_cluster: dict[str, Any], multi: Api, tmp_path: Path
) -> None:
    release = lab.release("4.16.30-multi")
    node_name = "worker-arm64-0"
    good = multi.pool("worker-arm64")["status"]["configuration"]["name"]

    # An x86_64 image pinned into the arm64 pool: refused before any reboot.
    x86_os = release["platforms"]["x86_64"]["images"]["rhel-coreos"]
    multi.apply_mc("99-worker-arm64-x86", "worker-arm64", x86_os)

    def degraded() -> dict[str, Any] | None:
        node = multi.node(node_name)
        return node if node["metadata"]["annotations"].get(ANN + "state") == "Degraded" else None

    annotations = multi.wait("the arm64 node degraded", degraded)["metadata"]["annotations"]
    assert annotations[ANN + "currentConfig"] == good
    assert "refusing to rebase" in annotations[ANN + "reason"] and "linux/amd64" in annotations[ANN + "reason"]
    assert "linux/arm64" in annotations[ANN + "reason"]
    multi.wait("the arm64 pool degraded", lambda: multi.pool("worker-arm64")["status"]["degradedMachineCount"] == 1)
    multi.mcs.delete(name="99-worker-arm64-x86")
    multi.wait("recovery", lambda: multi.pool("worker-arm64")["status"]["degradedMachineCount"] == 0
               and multi.node(node_name)["metadata"]["annotations"].get(ANN + "state") == "Done")

    # An arm64 layered image (built under emulation against the multi payload's
    # arm64 DTK/RHCOS), behind a manifest list with an x86_64 entry.
    started = time.monotonic()
    arm_image = layered.build_layered_image(lab, "4.16.30-multi", [layered.fixture("kmodlab_core", options="level=5")],
                                            arch="aarch64")
    build_seconds = time.monotonic() - started
    listed = _push_index(lab, "kmodlab/layered-multi", {"amd64": x86_os, "arm64": arm_image})
    multi.apply_mc("99-worker-arm64-kmod", "worker-arm64", listed)

    def booted() -> dict[str, Any] | None:
        node = multi.node(node_name)
        ann = node["metadata"]["annotations"]
        if ann.get(ANN + "state") == "Degraded":
            raise AssertionError(f"{node_name} degraded: {ann.get(ANN + 'reason')}")
        return node if ann.get("kmodlab.io/booted-image") == listed and ann.get(ANN + "state") == "Done" else None

    node = multi.wait("the arm64 node booted the list", booted)
    ann = node["metadata"]["annotations"]
    boot = json.loads(ann["kmodlab.io/boot"])
    print(f"\narm64 layered build {build_seconds:.1f}s; arm64 qemu boot {boot['duration']:.1f}s; tools {boot['tools']}")
    assert ann["kmodlab.io/booted-digest"] == arm_image.split("@", 1)[1]  # the list's arm64 entry
    assert boot["mode"] == "qemu" and boot["tools"]["qemu"] == "qemu-system-aarch64"
    assert boot["kernel"] == ARM64_KERNEL and "kmodlab_core" in boot["loaded"]
    assert boot["params"]["kmodlab_core"]["level"] == "5"
    assert node["status"]["nodeInfo"]["kernelVersion"] == ARM64_KERNEL
    records = json.loads(Path(lab_multiarch_cluster["boots_file"]).read_text())["nodes"][node_name]["boots"]
    assert records[-1]["modules"] == boot["loaded"] and records[-1]["kernel"] == ARM64_KERNEL
    # The x86_64 worker is another pool: untouched.
    assert multi.node("worker-0")["metadata"]["annotations"].get("kmodlab.io/reboots") in (None, "0")

    # Fast mode decides the same from the same image (its modinfo works on arm64 .ko files).
    rootfs = layered.pull_rootfs(lab, arm_image, tmp_path / "rootfs")
    fast = fastboot.evaluate(str(rootfs))
    assert fast.kernel == ARM64_KERNEL and "kmodlab_core" in fast.loaded and fast.ok


@pytest.mark.lab
def test_aarch64_cluster_is_arm64_throughout(lab: state.LabState, lab_aarch64_cluster: dict[str, Any]) -> None:
    entry = lab_aarch64_cluster
    assert entry["arch"] == "aarch64" and entry["release_id"] == "4.16.30-aarch64"
    api = Api(entry)
    for name in ("master-0", "worker-0"):
        node = api.node(name)
        assert node["metadata"]["labels"]["kubernetes.io/arch"] == "arm64"
        assert node["status"]["nodeInfo"]["architecture"] == "arm64"
        assert node["status"]["nodeInfo"]["kernelVersion"] == ARM64_KERNEL
    cv = api.cv.get(name="version").to_dict()
    assert cv["status"]["desired"]["image"].split("@", 1)[1] == lab.release("4.16.30-aarch64")["digest"]
    assert "architecture" not in cv["status"]["desired"]  # single-architecture payload
    request = urllib.request.Request(entry["api_url"] + "/version", headers={"Authorization": f"Bearer {entry['token']}"})
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=lab.ca_file), timeout=10) as answer:
        assert json.load(answer)["platform"] == "linux/arm64"
    # The update service answers for the cluster's architecture: no other 4.16.30 to move to.
    assert [u["version"] for u in cv["status"].get("availableUpdates") or []] == []
