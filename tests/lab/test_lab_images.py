"""The lab's release images, read back from the lab REGISTRY (not the cache).

Checks what the product relies on: the release's last layer names the right
OS tag and the components by digest, those digests resolve, the DTK's last
layer holds driver-toolkit-release.json with the release's kernel, the RHCOS
stand-in carries that kernel's vmlinuz, releases differ in kernel, a second
publish is a pure cache hit, and the DTK really builds a module that the
RHCOS stand-in's kmod accepts.

Expected values come from kmodlab.releases and the OpenShift facts in
DESIGN.md, never from the images module.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import ssl
import subprocess
import sys
import tarfile
import threading
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from kmodlab import cli, images, releases
from kmodlab.state import LabState

MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


# --- a minimal registry reader (Basic auth, lab CA) ------------------------------


class RegistryReader:
    def __init__(self, lab: LabState) -> None:
        self.host = lab.registry["host"]
        auths = json.loads(Path(lab.registry["auth_file"]).read_text())["auths"]
        self.authorization = "Basic " + auths[self.host]["auth"]
        self.context = ssl.create_default_context(cafile=lab.ca_file)
        self._names: dict[str, list[str]] = {}  # layer digest -> member names

    def get(self, path: str, accept: str = "*/*") -> tuple[bytes, dict[str, str]]:
        request = urllib.request.Request(
            f"https://{self.host}/v2/{path}", headers={"Authorization": self.authorization, "Accept": accept}
        )
        with urllib.request.urlopen(request, context=self.context, timeout=60) as response:
            return response.read(), dict(response.headers.items())

    def manifest(self, reference: str) -> tuple[dict[str, Any], str]:
        """(manifest, digest) of `host/repo:tag` or `host/repo@sha256:…`; the digest
        is the registry's, checked against the bytes served."""
        repo, ref = split_reference(reference, self.host)
        body, headers = self.get(f"{repo}/manifests/{ref}", MANIFEST_ACCEPT)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        assert headers.get("Docker-Content-Digest") == digest
        return json.loads(body), digest

    def blob(self, reference: str, digest: str) -> bytes:
        repo, _reference = split_reference(reference, self.host)
        body, _headers = self.get(f"{repo}/blobs/{digest}")
        assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
        return body

    def config(self, reference: str) -> dict[str, Any]:
        manifest, _digest = self.manifest(reference)
        config: dict[str, Any] = json.loads(self.blob(reference, manifest["config"]["digest"]))
        return config

    def layer_file(self, reference: str, layer_index: int, path: str) -> bytes | None:
        manifest, _digest = self.manifest(reference)
        layer = self.blob(reference, manifest["layers"][layer_index]["digest"])
        with tarfile.open(fileobj=io.BytesIO(layer), mode="r:*") as tar:
            for member in tar:
                if member.name.removeprefix("./") == path and member.isfile():
                    stream = tar.extractfile(member)
                    return stream.read() if stream else None
        return None

    def layer_names(self, reference: str, layer_index: int) -> list[str]:
        manifest, _digest = self.manifest(reference)
        digest = manifest["layers"][layer_index]["digest"]
        if digest not in self._names:  # DTKs share their big base layer
            layer = self.blob(reference, digest)
            with tarfile.open(fileobj=io.BytesIO(layer), mode="r:*") as tar:
                self._names[digest] = [m.name.removeprefix("./") for m in tar]
        return self._names[digest]


def split_reference(reference: str, host: str) -> tuple[str, str]:
    assert reference.startswith(host + "/"), f"{reference} is not in the lab registry {host}"
    rest = reference[len(host) + 1 :]
    if "@" in rest:
        return tuple(rest.split("@", 1))  # type: ignore[return-value]
    repo, tag = rest.rsplit(":", 1)
    return repo, tag


def expected_os_tag(version: str) -> str:
    """DESIGN.md: 4.12 names the OS image rhel-coreos-8, 4.13 onward rhel-coreos."""
    minor = int(version.split(".")[1])
    return "rhel-coreos-8" if minor == 12 else "rhel-coreos"


@pytest.fixture(scope="module")
def reader(lab: LabState) -> RegistryReader:
    return RegistryReader(lab)


@pytest.fixture(scope="module")
def published(lab: LabState) -> list[dict[str, Any]]:
    assert len(lab.releases) >= 2, "the lab publishes at least two releases"
    entries: list[dict[str, Any]] = lab.releases
    return entries


def image_references(reader: RegistryReader, release: dict[str, Any]) -> dict[str, str]:
    data = reader.layer_file(release["pullspec"], -1, "release-manifests/image-references")
    assert data is not None, "image-references is in the release image's last layer"
    stream = json.loads(data)
    assert stream["kind"] == "ImageStream" and stream["apiVersion"] == "image.openshift.io/v1"
    tags = {}
    for tag in stream["spec"]["tags"]:
        assert tag["from"]["kind"] == "DockerImage"
        tags[tag["name"]] = tag["from"]["name"]
    return tags


# --- pure functions (no lab) ---------------------------------------------------------------


def test_debian_paths_land_in_merged_usr() -> None:
    kver = "6.1.0-55-cloud-amd64"
    assert images.merged_usr_path("./boot/vmlinuz-6.1.0-55-cloud-amd64", kver) == f"usr/lib/modules/{kver}/vmlinuz"
    assert images.merged_usr_path("./lib/modules/6.1.0-55-cloud-amd64/kernel/fs/x.ko", kver) == (
        f"usr/lib/modules/{kver}/kernel/fs/x.ko"
    )
    assert images.merged_usr_path("./sbin/depmod", kver) == "usr/sbin/depmod"
    assert images.merged_usr_path("./lib64/ld-linux-x86-64.so.2", kver) == "usr/lib64/ld-linux-x86-64.so.2"
    assert images.merged_usr_path("./usr/bin/busybox", kver) == "usr/bin/busybox"
    assert images.merged_usr_path("./usr/share/doc/kmod/copyright", kver) is None
    # Another kernel's boot files are not this image's kernel.
    assert images.merged_usr_path("./boot/vmlinuz-6.1.0-50-cloud-amd64", kver) is None


def test_split_kernel_rejects_non_debian_versions() -> None:
    assert images.split_kernel("6.1.0-55-cloud-amd64") == ("6.1.0-55", "cloud-amd64")
    with pytest.raises(images.ImageError):
        images.split_kernel("5.14.0-284.25.1.el9_2.x86_64")


def test_cache_key_changes_with_any_input() -> None:
    base = {"suite": "bookworm", "packages": ["gcc", "make"], "kernel": "6.1.0-50-cloud-amd64", "recipe": "FROM x"}
    keys = {images.cache_key(base)}
    for name, value in (("suite", "trixie"), ("packages", ["gcc"]), ("kernel", "6.1.0-55-cloud-amd64"), ("recipe", "FROM y")):
        keys.add(images.cache_key({**base, name: value}))
    assert len(keys) == 5
    assert images.cache_key(dict(reversed(list(base.items())))) in keys


def test_release_image_layout_is_reproducible_and_ends_in_the_manifests(tmp_path: Path) -> None:
    files = [{"etc/base": b"base\n"}, {"release-manifests/image-references": b"{}\n"}]
    first = images.write_oci_layout(tmp_path / "a", files, labels={"k": "v"}, history=["a", "b"])
    second = images.write_oci_layout(tmp_path / "b", files, labels={"k": "v"}, history=["a", "b"])
    assert first.digest == second.digest
    assert first.read_layer_file(-1, "release-manifests/image-references") == b"{}\n"
    assert first.read_layer_file(0, "release-manifests/image-references") is None
    other = images.write_oci_layout(tmp_path / "c", files, labels={"k": "w"}, history=["a", "b"])
    assert other.digest != first.digest


def test_a_layout_written_meanwhile_by_another_process_is_kept(tmp_path: Path) -> None:
    """Two writers of one cache key (test workers, labs): the first complete
    layout stays in place (a reader may hold it open); the second's is dropped."""
    files = [{"etc/base": b"base\n"}]
    dest = tmp_path / "release-x"
    first = images.write_oci_layout(dest, files, labels={"k": "v"}, history=["a"])
    inode = (dest / "index.json").stat().st_ino
    again = images.write_oci_layout(dest, files, labels={"k": "v"}, history=["a"])
    assert again.digest == first.digest
    assert (dest / "index.json").stat().st_ino == inode  # not replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release-x"]  # no scratch dir left
    # A half-written one (no index.json: a killed run) is replaced.
    half = tmp_path / "release-y"
    (half / "blobs").mkdir(parents=True)
    assert images.write_oci_layout(half, files, labels={"k": "v"}, history=["a"]).digest == first.digest


def test_image_references_never_invent_an_os_tag() -> None:
    """Only the tags asked for: the OS tag of the release, never rhel-coreos-9."""
    for release in releases.RELEASES:
        components = {"driver-toolkit": "r/x@sha256:1", release.os_tag: "r/x@sha256:2"}
        components.update({tag: "r/x@sha256:3" for tag in release.extra_tags})
        stream = images.image_references(release, components)
        names = {tag["name"] for tag in stream["spec"]["tags"]}
        assert names == set(components)
        assert "rhel-coreos-9" not in names
        assert release.os_tag == expected_os_tag(release.version)


# --- against the lab registry ------------------------------------------------------------------


@pytest.mark.lab
def test_release_entries_follow_the_lab_json_schema(lab: LabState, published: list[dict[str, Any]]) -> None:
    host = lab.registry["host"]
    for release in published:
        lab_release = releases.by_version(release["version"])
        assert set(release) == {"id", "version", "arch", "pullspec", "digest", "os_tag", "kernel", "images"}
        assert release["id"] == lab_release.release_id == release["version"] and release["arch"] == "x86_64"
        assert release["pullspec"] == f"{host}/openshift-release-dev/ocp-release:{lab_release.version}-x86_64"
        assert release["kernel"] == lab_release.kernel
        assert release["os_tag"] == expected_os_tag(lab_release.version)
        assert set(release["images"]) == {"driver-toolkit", release["os_tag"]}
        for pullspec in release["images"].values():
            assert pullspec.startswith(f"{host}/openshift-release-dev/ocp-v4.0-art-dev@sha256:")


@pytest.mark.lab
def test_release_last_layer_names_the_right_os_tag(reader: RegistryReader, published: list[dict[str, Any]]) -> None:
    for release in published:
        _manifest, digest = reader.manifest(release["pullspec"])
        assert digest == release["digest"]
        tags = image_references(reader, release)
        os_tag = expected_os_tag(release["version"])
        assert os_tag in tags and f"{os_tag}-extensions" in tags
        assert "driver-toolkit" in tags
        assert "rhel-coreos-9" not in tags, "no release has a rhel-coreos-9 tag"
        other = "rhel-coreos" if os_tag == "rhel-coreos-8" else "rhel-coreos-8"
        assert other not in tags
        assert len(tags) > 3, "other components are named too, as in a real release"
        assert tags["driver-toolkit"] == release["images"]["driver-toolkit"]
        assert tags[os_tag] == release["images"][os_tag]
        metadata = json.loads(reader.layer_file(release["pullspec"], -1, "release-manifests/release-metadata") or b"{}")
        assert metadata["kind"] == "cincinnati-metadata-v0" and metadata["version"] == release["version"]
        # Only the last layer holds the manifests; the base layer does not.
        assert not any(n.startswith("release-manifests") for n in reader.layer_names(release["pullspec"], 0))


@pytest.mark.lab
def test_referenced_digests_resolve_in_the_registry(reader: RegistryReader, published: list[dict[str, Any]]) -> None:
    for release in published:
        for name, pullspec in image_references(reader, release).items():
            manifest, digest = reader.manifest(pullspec)
            assert pullspec.endswith("@" + digest), name
            assert manifest["layers"], name


@pytest.mark.lab
def test_dtk_last_layer_has_the_release_kernel(reader: RegistryReader, published: list[dict[str, Any]]) -> None:
    for release in published:
        kernel = releases.by_version(release["version"]).kernel
        dtk = image_references(reader, release)["driver-toolkit"]
        data = reader.layer_file(dtk, -1, "etc/driver-toolkit-release.json")
        assert data is not None, "driver-toolkit-release.json is in the DTK's last layer"
        content = json.loads(data)
        assert set(content) == {"KERNEL_VERSION", "RT_KERNEL_VERSION", "RHEL_VERSION"}
        assert content["KERNEL_VERSION"] == kernel
        labels = reader.config(dtk)["config"]["Labels"]
        assert labels["kernel-version"] == kernel
        assert "kernel-rt-version" in labels
        # The headers of that kernel (and only that kernel) are in the image.
        names = [n for i in range(len(reader.manifest(dtk)[0]["layers"])) for n in reader.layer_names(dtk, i)]
        assert f"usr/src/linux-headers-{kernel}/Makefile" in names
        # bookworm is merged-/usr: /lib/modules is usr/lib/modules in the layers.
        module_dirs = {n.split("/")[3] for n in names if n.startswith("usr/lib/modules/") and n.count("/") >= 3}
        assert module_dirs == {kernel}


@pytest.mark.lab
def test_rhcos_carries_the_release_kernel(reader: RegistryReader, published: list[dict[str, Any]]) -> None:
    for release in published:
        lab_release = releases.by_version(release["version"])
        rhcos = image_references(reader, release)[expected_os_tag(release["version"])]
        layer_count = len(reader.manifest(rhcos)[0]["layers"])
        vmlinuz = None
        for index in range(layer_count):
            vmlinuz = vmlinuz or reader.layer_file(rhcos, index, f"usr/lib/modules/{lab_release.kernel}/vmlinuz")
        assert vmlinuz is not None
        assert vmlinuz[0x202:0x206] == b"HdrS", "a real x86 bzImage"
        labels = reader.config(rhcos)["config"]["Labels"]
        assert labels["ostree.bootable"] == "true"
        if lab_release.metalayer:
            assert labels["io.openshift.metalayer"] == "true"
            meta = json.loads(reader.layer_file(rhcos, -1, "usr/share/openshift/base/meta.json") or b"{}")
            kernels = [p for p in meta["rpmostree.rpmdb.pkglist"] if p[0] == "kernel"]
            assert len(kernels) == 1 and f"{kernels[0][2]}-{kernels[0][3]}" == lab_release.kernel
        else:
            assert "io.openshift.metalayer" not in labels


@pytest.mark.lab
def test_releases_have_different_kernels(reader: RegistryReader, published: list[dict[str, Any]]) -> None:
    kernels = set()
    for release in published:
        dtk = image_references(reader, release)["driver-toolkit"]
        kernels.add(json.loads(reader.layer_file(dtk, -1, "etc/driver-toolkit-release.json") or b"{}")["KERNEL_VERSION"])
    assert len(kernels) == len(published)


@pytest.mark.lab
def test_second_publish_is_a_cache_hit(lab: LabState, published: list[dict[str, Any]]) -> None:
    versions = [r["version"] for r in published]
    again = images.publish_releases(lab, versions)
    assert images.last_stats.builds == 0
    assert images.last_stats.debootstraps == 0 and images.last_stats.podman_builds == 0
    assert images.last_stats.copies > 0
    assert [r["digest"] for r in again] == [r["digest"] for r in published]
    assert [r["images"] for r in again] == [r["images"] for r in published]


@pytest.mark.lab
def test_a_warm_publish_does_not_wait_for_a_build_holding_the_cache_lock(
        lab: LabState, published: list[dict[str, Any]]) -> None:
    """Another process (a test worker building an emulated arm64 release)
    holds the cache's build lock: publishing cached releases goes on."""
    versions = [r["version"] for r in published]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(600)", str(images.cache_root() / ".lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        done: list[list[dict[str, Any]]] = []
        worker = threading.Thread(target=lambda: done.append(images.publish_releases(lab, versions)), daemon=True)
        worker.start()
        worker.join(timeout=300)
        assert done, "publishing cached releases waited for the cache lock"
        assert [r["digest"] for r in done[0]] == [r["digest"] for r in published]
        assert images.last_stats.podman_builds == 0
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.lab
def test_warm_publish_to_an_empty_registry_only_copies(
    lab: LabState, published: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second lab (fresh registry storage) gets the same component digests
    from the cache: copied, not rebuilt, digests preserved."""
    versions = [r["version"] for r in published]
    port_base = int(lab.registry["host"].rsplit(":", 1)[1]) + 60  # clear of the lab's ports
    root = tmp_path / "second-lab"
    monkeypatch.setenv("KMODLAB_STATE", str(root))
    monkeypatch.setenv("KMODLAB_PORT_BASE", str(port_base))
    try:
        second = cli.up(root, releases=versions)
        assert second.registry["host"] != lab.registry["host"]
        # Only the tiny release image is new (it names the new host); no
        # debootstrap, no podman build.
        stats = images.last_stats
        assert stats.debootstraps == 0 and stats.podman_builds == 0 and stats.copies > 0
        assert stats.release_writes <= len(versions)
        second_reader = RegistryReader(second)
        for new, old in zip(second.releases, published):
            assert new["version"] == old["version"]
            for name, pullspec in new["images"].items():
                digest = pullspec.split("@", 1)[1]
                assert digest == old["images"][name].split("@", 1)[1]
                assert second_reader.manifest(pullspec)[1] == digest
            # The release names the new registry, so its image differs.
            assert new["digest"] != old["digest"]
            assert all(ref.startswith(second.registry["host"] + "/") for ref in image_references(second_reader, new).values())
    finally:
        cli.down(root)


MODULE_SOURCE = """\
#include <linux/module.h>
#include <linux/init.h>
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kmodlab image test module");
static int __init kmodlab_probe_init(void) { return 0; }
static void __exit kmodlab_probe_exit(void) { }
module_init(kmodlab_probe_init);
module_exit(kmodlab_probe_exit);
"""

CONTAINERFILE = """\
FROM {dtk} AS builder
ARG KVER
COPY src /src
RUN make -C "/lib/modules/$KVER/build" M=/src modules
FROM {rhcos}
ARG KVER
COPY --from=builder /src/kmodlab_probe.ko /usr/lib/modules/${{KVER}}/extra/kmodlab_probe.ko
RUN depmod -a "$KVER" && modinfo -k "$KVER" kmodlab_probe > /usr/lib/modules/${{KVER}}/extra/modinfo.txt
"""


@pytest.mark.lab
def test_dtk_builds_a_module_the_rhcos_kmod_accepts(lab: LabState, published: list[dict[str, Any]], tmp_path: Path) -> None:
    """The real two-stage layering build against the published images."""
    release = published[-1]
    kernel = releases.by_version(release["version"]).kernel
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "kmodlab_probe.c").write_text(MODULE_SOURCE)
    (tmp_path / "src" / "Makefile").write_text("obj-m := kmodlab_probe.o\n")
    (tmp_path / "Containerfile").write_text(
        CONTAINERFILE.format(dtk=release["images"]["driver-toolkit"], rhcos=release["images"][release["os_tag"]])
    )
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    shutil.copy(lab.ca_file, cert_dir / "ca.crt")
    image = f"localhost/kmodlab-images-test:{uuid.uuid4().hex[:12]}"
    layout = tmp_path / "layered"
    build = [
        "nice", "-n", "10", "podman", "build", "--isolation", "chroot", "--layers=false",
        "--authfile", lab.registry["auth_file"], "--cert-dir", str(cert_dir),
        "--build-arg", f"KVER={kernel}", "-t", image, str(tmp_path),
    ]
    try:
        result = subprocess.run(build, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        subprocess.run(["skopeo", "copy", "--quiet", f"containers-storage:{image}", f"oci:{layout}:x"], check=True)
    finally:
        subprocess.run(
            ["podman", "rmi", "--ignore", image, *release["images"].values()],
            capture_output=True,
            check=False,
        )
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
    last = layout / "blobs" / "sha256" / manifest["layers"][-1]["digest"].split(":")[1]
    with tarfile.open(last, "r:*") as tar:
        files = {m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    modinfo = files[f"usr/lib/modules/{kernel}/extra/modinfo.txt"].decode()
    # kmod in the RHCOS stand-in found the module through depmod's index and
    # reads the vermagic the DTK compiled in: the release's kernel.
    vermagic = next(line.split(":", 1)[1].strip() for line in modinfo.splitlines() if line.startswith("vermagic:"))
    assert vermagic.split()[0] == kernel
    assert "extra/kmodlab_probe.ko:" in files[f"usr/lib/modules/{kernel}/modules.dep"].decode()
    # kmod's depmod (not busybox's) ran: only kmod writes the binary indexes.
    assert f"usr/lib/modules/{kernel}/modules.dep.bin" in files
