"""The lab's images: DTK and RHCOS stand-ins and release images.

Each lab release (kmodlab.releases) gets three images, built once and cached
as OCI layouts under the cache dir, then copied digest-for-digest into the lab
registry:

- driver-toolkit: Debian bookworm (debootstrap, minbase + gcc/make/kmod) with
  `linux-headers-<kver>` and `/etc/driver-toolkit-release.json` in its last
  layer, labels `kernel-version` / `kernel-rt-version` (as the real DTK).
- rhel-coreos[-8]: a small merged-/usr rootfs with the real Debian kernel at
  `/usr/lib/modules/<kver>/vmlinuz` and its modules, kmod and busybox; for a
  release with `metalayer=True` a last layer with
  `/usr/share/openshift/base/meta.json` (label `io.openshift.metalayer=true`).
- the release image: a base layer plus a last layer with
  `release-manifests/image-references` (an ImageStream naming the components
  by digest) and `release-manifests/release-metadata`.

The release image names its components by digest, so digests must not change
between cache and registry: images are cached as OCI layouts and published
with `skopeo copy --preserve-digests`, and the registry's digest is checked
after each push. The release image names the registry host, so its cache key
includes the host; it is tiny and written here directly (deterministic
tar/gzip), not built with podman.

A warm run (cache present) performs no debootstrap and no podman build: see
`last_stats`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from . import paths
from .releases import DEBIAN_ARCH, GOARCH, LabRelease, MultiRelease, by_id

if TYPE_CHECKING:
    from .state import LabState

RECIPES = Path(__file__).resolve().parent / "image_recipes"
# Bumped when the Python side of a recipe (rootfs assembly, layer writing)
# changes in a way that changes image content: it is part of every cache key.
RECIPE_REVISION = 1

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What building an out-of-tree module against Debian's headers needs; the
# headers' own dependencies that are not per-kernel (compiler meta package,
# libelf/libssl for the prebuilt kbuild tools) are in the shared base.
DTK_BASE_PACKAGES: tuple[str, ...] = (
    "gcc",
    "make",
    "kmod",
    "libc6-dev",
    "linux-compiler-gcc-12-x86",
    "libelf1",
    "libssl3",
    "xz-utils",
)
# The DTK base of another architecture: what its headers need instead of x86's compiler package.
DTK_BASE_ARCH_PACKAGES = {"aarch64": {"linux-compiler-gcc-12-x86": "gcc-12"}}  # arm64 headers depend on gcc-12 itself
# RHCOS stand-in userland: kmod (depmod/modprobe/modinfo) with its libraries,
# busybox-static for the usual tools and dash as /bin/sh (busybox's own shell
# prefers its applets, so `depmod` in a RUN step would not be kmod's). No
# compiler.
RHCOS_USERLAND_PACKAGES: tuple[str, ...] = (
    "busybox-static",
    "dash",
    "kmod",
    "libkmod2",
    "libc6",
    "liblzma5",
    "libssl3",
    "libzstd1",
)
# Trimmed from the RHCOS rootfs: documentation only.
_DROPPED_PREFIXES = (
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/locale/",
    "usr/share/lintian/",
    "usr/share/bug/",
)
# RHCOS is merged-/usr: these top-level dirs are symlinks into /usr.
_MERGED_DIRS = ("bin", "sbin", "lib", "lib64")

REPO_RELEASE = "openshift-release-dev/ocp-release"
REPO_COMPONENTS = "openshift-release-dev/ocp-v4.0-art-dev"
# Components of a real release that image-references also names; in the lab
# they all point at one small image that exists in the registry.
OTHER_COMPONENTS = ("cluster-version-operator", "machine-config-operator", "cli", "must-gather")
# RHEL of the RHCOS (and DTK) of each OpenShift minor.
RHEL_BY_MINOR = {"4.12": "8.6", "4.13": "9.2", "4.14": "9.2", "4.15": "9.2", "4.16": "9.4", "4.17": "9.4", "4.18": "9.4"}

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYOUT_TAG = "latest"
# Layer mtimes of the release image: fixed, so the same inputs give the same
# digests.
EPOCH = 1_700_000_000


class ImageError(RuntimeError):
    """An image could not be built, verified or published."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output  # the failed command's whole output, if any


@dataclasses.dataclass
class BuildStats:
    """What one `publish_releases` call did (the warm-run contract: builds == 0)."""

    debootstraps: int = 0
    podman_builds: int = 0
    release_writes: int = 0
    cache_hits: int = 0
    copies: int = 0
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def builds(self) -> int:
        return self.debootstraps + self.podman_builds + self.release_writes

    def timed(self, what: str, started: float) -> None:
        self.seconds[what] = self.seconds.get(what, 0.0) + time.monotonic() - started


last_stats = BuildStats()


# --- small helpers ------------------------------------------------------------


def _run(argv: list[str], *, cwd: Path | None = None, capture: bool = False) -> str:
    """Run a command at low CPU priority (the machine is shared); fail clearly."""
    proc = subprocess.run(
        ["nice", "-n", "10", *argv],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if capture else subprocess.STDOUT,
        check=False,
    )
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace") if capture else ""
        tail = "\n".join((out + err).splitlines()[-40:])
        raise ImageError(f"{shlex.join(argv)} failed (exit {proc.returncode}):\n{tail}", out + err)
    return out


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_key(inputs: dict[str, Any]) -> str:
    """Hash of every input of a build (canonical JSON)."""
    return sha256_hex(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode())


def _recipe(name: str) -> str:
    return (RECIPES / name).read_text()


def split_kernel(kver: str) -> tuple[str, str]:
    """'6.1.0-55-cloud-amd64' -> ('6.1.0-55', 'cloud-amd64'): Debian ABI and flavour."""
    match = re.fullmatch(r"(\d+\.\d+\.\d+-\d+)-([a-z0-9-]+)", kver)
    if not match:
        raise ImageError(f"not a Debian kernel version: {kver!r}")
    return match.group(1), match.group(2)


def rhel_version(release: LabRelease) -> str:
    minor = ".".join(release.version.split(".")[:2])
    return RHEL_BY_MINOR.get(minor, "9.4")


def os_build_version(release: LabRelease) -> str:
    """RHCOS-style OS version, e.g. 416.94.202501010000-0."""
    major, minor = release.version.split(".")[:2]
    return f"{major}{minor}.{rhel_version(release).replace('.', '')}.202501010000-0"


def cache_root() -> Path:
    return paths.cache_dir()


@contextlib.contextmanager
def _cache_lock(root: Path) -> Iterator[None]:
    """One builder at a time per cache dir (several labs may share the cache)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- Debian packages ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DebFile:
    url: str
    filename: str
    size: int
    sha256: str


def dtk_base_packages(arch: str = "x86_64") -> list[str]:
    swap = DTK_BASE_ARCH_PACKAGES.get(arch, {})
    return [swap.get(name, name) for name in DTK_BASE_PACKAGES]


def deb_names(names: Iterable[str], arch: str) -> list[str]:
    """apt names for a foreign architecture's packages (`kmod:arm64`); the host's stay bare."""
    return list(names) if arch == "x86_64" else [f"{name}:{DEBIAN_ARCH[arch]}" for name in names]


def platform(arch: str) -> dict[str, str]:
    """The OCI platform of an OpenShift architecture name."""
    return {"architecture": GOARCH[arch], "os": "linux"}


def resolve_debs(names: Iterable[str]) -> list[DebFile]:
    """The .deb files apt would download for `names` (from the host's apt lists)."""
    out = _run(["apt-get", "download", "--print-uris", *names], capture=True)
    debs = []
    for line in out.splitlines():
        match = re.fullmatch(r"'(\S+)' (\S+) (\d+) SHA256:([0-9a-f]{64})", line.strip())
        if match:
            debs.append(DebFile(match.group(1), match.group(2), int(match.group(3)), match.group(4)))
    if len(debs) != len(set(names)):
        raise ImageError(f"apt resolved {[d.filename for d in debs]} for {sorted(names)}")
    return debs


def fetch_debs(names: Iterable[str], deb_dir: Path) -> list[Path]:
    """Download (once, into deb_dir) and verify the .debs for `names`."""
    deb_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for deb in resolve_debs(list(names)):
        target = deb_dir / deb.filename
        if not (target.exists() and sha256_hex(target.read_bytes()) == deb.sha256):
            with urllib.request.urlopen(deb.url, timeout=120) as response:  # noqa: S310 (apt URL)
                data = response.read()
            if sha256_hex(data) != deb.sha256:
                raise ImageError(f"{deb.url}: sha256 mismatch with apt's lists")
            tmp = target.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(target)
        files.append(target)
    return files


# --- OCI layouts --------------------------------------------------------------


def _json_object(data: bytes) -> dict[str, Any]:
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ImageError("expected a JSON object")
    return value


@dataclasses.dataclass(frozen=True)
class Layout:
    """A cached OCI image layout holding one image under tag LAYOUT_TAG."""

    path: Path

    def _blob(self, digest: str) -> Path:
        algo, hexdigest = digest.split(":", 1)
        return self.path / "blobs" / algo / hexdigest

    @property
    def manifest_descriptor(self) -> dict[str, Any]:
        index = json.loads((self.path / "index.json").read_text())
        descriptors: list[dict[str, Any]] = index["manifests"]
        for desc in descriptors:
            if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == LAYOUT_TAG:
                return desc
        raise ImageError(f"{self.path}: no {LAYOUT_TAG!r} in index.json")

    @property
    def digest(self) -> str:
        return str(self.manifest_descriptor["digest"])

    @property
    def manifest(self) -> dict[str, Any]:
        return _json_object(self._blob(self.digest).read_bytes())

    @property
    def config(self) -> dict[str, Any]:
        return _json_object(self._blob(self.manifest["config"]["digest"]).read_bytes())

    @property
    def is_index(self) -> bool:
        return self.manifest_descriptor.get("mediaType") == OCI_INDEX

    def blob(self, digest: str) -> bytes:
        return self._blob(digest).read_bytes()

    def layer_sizes(self) -> list[int]:
        return [int(layer["size"]) for layer in self.manifest["layers"]]

    @property
    def compressed_size(self) -> int:
        return sum(self.layer_sizes()) + int(self.manifest["config"]["size"])

    def read_layer_file(self, layer_index: int, path: str) -> bytes | None:
        """A regular file's content from one layer (None if the layer lacks it)."""
        layer = self.manifest["layers"][layer_index]
        with tarfile.open(self._blob(layer["digest"]), "r:*") as tar:
            return read_tar_file(tar, path)

    def exists(self) -> bool:
        return (self.path / "index.json").is_file()


def _scratch(dest: Path) -> Path:
    """A private directory to write `dest` in (this process and thread's own:
    labs and test workers share the cache, and publishing writes outside its lock)."""
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _install(tmp: Path, dest: Path) -> Layout:
    """Move a finished layout into place. Its name is the hash of its inputs,
    so a complete one already there (another process wrote it meanwhile) is
    the same image: keep that one, which others may be reading."""
    if dest.exists() and not Layout(dest).exists():
        shutil.rmtree(dest, ignore_errors=True)  # left half-written by a killed run
    try:
        tmp.rename(dest)
    except OSError:
        if not Layout(dest).exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return Layout(dest)


def write_index_layout(dest: Path, parts: dict[str, Layout]) -> Layout:
    """An OCI layout whose image is an image index (OCI image-spec
    image-index.md) of the per-architecture images `parts` (arch -> layout),
    each entry with its platform; deterministic, blobs hard-linked from the parts."""
    tmp = _scratch(dest)
    blobs = tmp / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    entries = []
    for arch, part in parts.items():
        if part.is_index:
            raise ImageError(f"{part.path}: an index cannot nest another index")
        for blob in (part.path / "blobs" / "sha256").iterdir():
            if not (blobs / blob.name).exists():
                os.link(blob, blobs / blob.name)
        desc = part.manifest_descriptor
        entries.append({"mediaType": OCI_MANIFEST, "digest": desc["digest"], "size": desc["size"],
                        "platform": platform(arch)})
    index_bytes = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries},
                             sort_keys=True).encode()
    digest = sha256_hex(index_bytes)
    (blobs / digest).write_bytes(index_bytes)
    top = {"schemaVersion": 2, "manifests": [{"mediaType": OCI_INDEX, "digest": f"sha256:{digest}",
                                              "size": len(index_bytes),
                                              "annotations": {"org.opencontainers.image.ref.name": LAYOUT_TAG}}]}
    (tmp / "index.json").write_text(json.dumps(top))
    (tmp / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return _install(tmp, dest)


def read_tar_file(tar: tarfile.TarFile, path: str) -> bytes | None:
    wanted = path.lstrip("/")
    for member in tar:
        if member.name.removeprefix("./") == wanted and member.isfile():
            stream = tar.extractfile(member)
            return stream.read() if stream else None
    return None


def _export_to_layout(image: str, dest: Path) -> Layout:
    """containers-storage image -> OCI layout at dest (atomically)."""
    tmp = _scratch(dest)
    _run(["skopeo", "copy", "--quiet", f"containers-storage:{image}", f"oci:{tmp}:{LAYOUT_TAG}"])
    return _install(tmp, dest)


def _remove_tree(path: Path) -> None:
    """rm -rf a chroot dir, unmounting first anything a failed debootstrap
    left mounted in it (its /proc, /sys), so rmtree never walks into them."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)


def _arch_what(what: str, arch: str) -> str:
    """A BuildStats.seconds key: x86_64's as before, other architectures' suffixed."""
    return what if arch == "x86_64" else f"{what}:{arch}"


def _key_of(layout: Layout) -> str:
    """The (short) cache key a layout directory is named by."""
    return layout.path.name.rsplit("-", 1)[1]


def _podman_rmi(*images: str) -> None:
    # Never --force: it also removes the containers using an image, and the
    # working container of another worker's `podman build` FROM it is one
    # (that build then fails "layer not known"). Without it podman keeps an
    # image in use and removes the rest.
    subprocess.run(["podman", "rmi", "--ignore", *images], capture_output=True, check=False)


# --- deterministic tar / OCI writing (release image) ----------------------------


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    """A reproducible tar: sorted, root-owned, fixed mtime, parent dirs included."""
    dirs = sorted({"/".join(name.split("/")[:i]) for name in files for i in range(1, name.count("/") + 1)})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            tar.addfile(info)
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, EPOCH
            tar.addfile(info, io.BytesIO(files[name]))
    return buf.getvalue()


def write_oci_layout(
    dest: Path, layers: list[dict[str, bytes]], *, labels: dict[str, str], history: list[str], arch: str = "x86_64"
) -> Layout:
    """Write an image made of the given file sets as an OCI layout (deterministic)."""
    tmp = _scratch(dest)
    (tmp / "blobs" / "sha256").mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = sha256_hex(data)
        (tmp / "blobs" / "sha256" / digest).write_bytes(data)
        return f"sha256:{digest}"

    layer_descs, diff_ids = [], []
    for files in layers:
        raw = _tar_bytes(files)
        diff_ids.append(f"sha256:{sha256_hex(raw)}")
        compressed = gzip.compress(raw, compresslevel=6, mtime=0)
        layer_descs.append({"mediaType": OCI_LAYER_GZIP, "digest": put(compressed), "size": len(compressed)})
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))
    config = {
        "created": created,
        "architecture": GOARCH[arch],
        "os": "linux",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": line} for line in history],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": put(config_bytes), "size": len(config_bytes)},
        "layers": layer_descs,
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": put(manifest_bytes),
                "size": len(manifest_bytes),
                "annotations": {"org.opencontainers.image.ref.name": LAYOUT_TAG},
            }
        ],
    }
    (tmp / "index.json").write_text(json.dumps(index))
    (tmp / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return _install(tmp, dest)


# --- release manifests ------------------------------------------------------------


def image_references(release: LabRelease, components: dict[str, str]) -> dict[str, Any]:
    """The release's image-references ImageStream (tag name -> pullspec by digest)."""
    tags = []
    for name in sorted(components):
        tags.append(
            {
                "name": name,
                "annotations": {
                    "io.openshift.build.source-location": "https://github.com/openshift/kmodlab-stand-in",
                },
                "from": {"kind": "DockerImage", "name": components[name]},
                "generation": None,
                "importPolicy": {},
                "referencePolicy": {"type": ""},
            }
        )
    minor = ".".join(release.version.split(".")[:2])
    return {
        "kind": "ImageStream",
        "apiVersion": "image.openshift.io/v1",
        "metadata": {
            "name": release.version,
            "creationTimestamp": None,
            "annotations": {"release.openshift.io/from-image-stream": f"ocp/{minor}-art-latest"},
        },
        "spec": {"lookupPolicy": {"local": False}, "tags": tags},
        "status": {"dockerImageRepository": ""},
    }


def release_metadata(release: LabRelease, multi: bool = False) -> dict[str, Any]:
    """release-manifests/release-metadata; a multi payload's says so in its
    metadata (`release.openshift.io/architecture: multi`, what `oc adm
    release info` shows and the CVO reads to report architecture Multi)."""
    metadata = {"url": f"https://access.redhat.com/errata/kmodlab-{release.version}"}
    if multi:
        metadata["release.openshift.io/architecture"] = "multi"
    return {
        "kind": "cincinnati-metadata-v0",
        "version": release.version,
        "previous": [],
        "metadata": metadata,
    }


def rhcos_meta_json(release: LabRelease, package_version: str) -> dict[str, Any]:
    """coreos-assembler meta.json with an rpmdb package list naming the kernel.

    Entries are [name, epoch, version, release, arch]. Debian kernels have no
    RHEL NVR: version/release are the two halves of the ABI (uname -r is
    f"{version}-{release}", no .arch suffix).
    """
    abi, flavour = split_kernel(release.kernel)
    base, abinum = abi.split("-")
    kernel_release = f"{abinum}-{flavour}"
    kernel_pkgs = [[name, "0", base, kernel_release, release.arch] for name in ("kernel", "kernel-core", "kernel-modules")]
    return {
        "buildid": os_build_version(release),
        "coreos-assembler.basearch": release.arch,
        "ostree-version": os_build_version(release),
        "rpmostree.rpmdb.pkglist": [
            ["bash", "0", "5.1.8", "9.el9", release.arch],
            *kernel_pkgs,
            ["kmod", "0", "28", "10.el9", release.arch],
        ],
        "kmodlab.debian-kernel-package": {"name": f"linux-image-{release.kernel}", "version": package_version},
    }


# --- RHCOS rootfs (assembled from .debs, merged /usr) ----------------------------------


def merged_usr_path(name: str, kver: str) -> str | None:
    """Where a path from a Debian package lands in the RHCOS stand-in (None: dropped)."""
    name = name.removeprefix("./").lstrip("/")
    if not name:
        return None
    top = name.split("/", 1)[0]
    if top in _MERGED_DIRS:
        name = "usr/" + name
    boot_map = {
        f"boot/vmlinuz-{kver}": f"usr/lib/modules/{kver}/vmlinuz",
        f"boot/config-{kver}": f"usr/lib/modules/{kver}/config",
        f"boot/System.map-{kver}": f"usr/lib/modules/{kver}/System.map",
    }
    if name in boot_map:
        return boot_map[name]
    if name == "boot" or name.startswith("boot/"):
        return None
    if any(name.startswith(prefix) or name + "/" == prefix for prefix in _DROPPED_PREFIXES):
        return None
    return name


def assemble_rhcos_rootfs(debs: list[Path], kver: str, dest: Path, os_release: str) -> None:
    """Write the RHCOS stand-in rootfs tar: the debs' files, merged into /usr."""
    seen: set[str] = set()
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as out:

        def add_dir(name: str, mode: int = 0o755) -> None:
            if name not in seen:
                seen.add(name)
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, EPOCH
                out.addfile(info)

        def add_symlink(name: str, target: str) -> None:
            seen.add(name)
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, EPOCH
            out.addfile(info)

        for name in ("usr", "usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/lib/modules", f"usr/lib/modules/{kver}"):
            add_dir(name)
        for top in _MERGED_DIRS:
            add_symlink(top, f"usr/{top}")
        for name in ("etc", "etc/modules-load.d", "etc/modprobe.d", "usr/lib/modules-load.d", "var", "root", "proc", "sys", "dev", "run", "boot", "sysroot"):
            add_dir(name)
        add_dir("tmp", 0o1777)
        add_dir("var/tmp", 0o1777)
        # The shell RUN steps use (Debian's dash package ships no /bin/sh).
        add_symlink("usr/bin/sh", "dash")

        for deb in debs:
            proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    target = merged_usr_path(member.name, kver)
                    if target is None or target in seen:
                        continue
                    if member.isdir():
                        add_dir(target, member.mode)
                        continue
                    seen.add(target)
                    member.name = target
                    member.uid = member.gid = 0
                    member.uname = member.gname = "root"
                    if member.islnk():
                        # Hard link targets move with the same mapping.
                        member.linkname = merged_usr_path(member.linkname, kver) or member.linkname
                        out.addfile(member)
                    elif member.isfile():
                        out.addfile(member, tar.extractfile(member))
                    else:
                        out.addfile(member)
            if proc.wait() != 0:
                raise ImageError(f"dpkg-deb --fsys-tarfile {deb} failed")

        files = {"etc/os-release": os_release.encode(), "usr/lib/os-release": os_release.encode()}
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, EPOCH
            out.addfile(info, io.BytesIO(data))


# --- the builds ------------------------------------------------------------------------


class Builder:
    """Builds (or finds in the cache) the images of lab releases. Hold the
    cache lock to build; finding cached layouts needs none."""

    def __init__(self, root: Path, stats: BuildStats) -> None:
        self.root = root
        self.stats = stats
        self.deb_dir = root / "debs"
        self.oci_dir = root / "oci"
        self.work_dir = root / "work"
        self.tag_suffix = f"{os.getpid()}"
        self._base_images: dict[str, str] = {}
        self._podman_images: list[str] = []

    # DTK --------------------------------------------------------------------------

    def dtk_base_key(self, arch: str = "x86_64") -> str:
        inputs: dict[str, Any] = {
            "what": "dtk-base",
            "suite": SUITE,
            "mirror": MIRROR,
            "packages": dtk_base_packages(arch),
            "recipe": _recipe("dtk-base.Containerfile"),
            "revision": RECIPE_REVISION,
        }
        if arch != "x86_64":  # (x86_64 keys stay what they were: caches are shared)
            inputs["arch"] = arch
        return cache_key(inputs)

    def dtk_base_rootfs(self, arch: str = "x86_64") -> Path:
        """The shared DTK base rootfs tar of an architecture (debootstrap, for
        another architecture under qemu-user emulation: the slow part, done once)."""
        key = self.dtk_base_key(arch)
        tar_path = self.root / "rootfs" / f"dtk-base-{key[:16]}.tar"
        if tar_path.exists():
            return tar_path
        started = time.monotonic()
        target = self.work_dir / f"debootstrap-{key[:16]}"
        _remove_tree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        debootstrap_cache = self.deb_dir / "debootstrap"
        debootstrap_cache.mkdir(parents=True, exist_ok=True)
        try:
            _run(
                [
                    "debootstrap",
                    *([] if arch == "x86_64" else [f"--arch={DEBIAN_ARCH[arch]}"]),
                    "--variant=minbase",
                    f"--include={','.join(dtk_base_packages(arch))}",
                    f"--cache-dir={debootstrap_cache}",
                    SUITE,
                    str(target),
                    MIRROR,
                ]
            )
        except ImageError:
            _remove_tree(target)
            raise
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale", "var/log"):
            for child in (target / junk).glob("*"):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                elif child.name != "lock" and child.name != "partial":
                    child.unlink()
        tar_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tar_path.with_suffix(".tmp")
        _run(
            [
                "tar", "--numeric-owner", "--xattrs", "--sort=name",
                "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*", "--exclude=./run/*", "--exclude=./tmp/*",
                "-C", str(target), "-cf", str(tmp), ".",
            ]
        )
        tmp.rename(tar_path)
        _remove_tree(target)
        self.stats.debootstraps += 1
        self.stats.timed(_arch_what("debootstrap", arch), started)
        return tar_path

    def dtk_base_image(self, arch: str = "x86_64") -> str:
        """The DTK base as a podman image (FROM scratch + ADD rootfs), for per-release builds."""
        if arch in self._base_images:
            return self._base_images[arch]
        rootfs = self.dtk_base_rootfs(arch)
        image = f"localhost/kmodlab-dtk-base:{self.dtk_base_key(arch)[:16]}-{self.tag_suffix}"
        context = self._context(f"dtk-base-{arch}")
        os.link(rootfs, context / "rootfs.tar")
        shutil.copy(RECIPES / "dtk-base.Containerfile", context / "Containerfile")
        self._podman_build(image, context, {}, {}, _arch_what("dtk-base", arch), arch=arch)
        self._base_images[arch] = image
        return image

    @staticmethod
    def dtk_packages(release: LabRelease) -> list[str]:
        abi, _flavour = split_kernel(release.kernel)
        # The common headers are Architecture: all (no qualifier); kbuild's tools run in the DTK.
        arch_specific = deb_names([f"linux-headers-{release.kernel}", "linux-kbuild-6.1"], release.arch)
        return [arch_specific[0], f"linux-headers-{abi}-common", arch_specific[1]]

    def dtk_layout(self, release: LabRelease) -> Layout:
        """Where the release's DTK is (or will be) cached: named by its inputs' hash."""
        key = cache_key(
            {
                "what": "driver-toolkit",
                "base": self.dtk_base_key(release.arch),
                "kernel": release.kernel,
                "packages": self.dtk_packages(release),
                "labels": self.dtk_labels(release),
                "release-json": self.dtk_release_json(release),
                "recipe": _recipe("dtk.Containerfile"),
                "revision": RECIPE_REVISION,
            }
        )
        return Layout(self.oci_dir / f"dtk-{release.kernel}-{key[:16]}")

    def dtk(self, release: LabRelease) -> Layout:
        packages = self.dtk_packages(release)
        labels = self.dtk_labels(release)
        release_json = self.dtk_release_json(release)
        layout = self.dtk_layout(release)
        if layout.exists():
            self.stats.cache_hits += 1
            return layout
        base = self.dtk_base_image(release.arch)
        context = self._context(f"dtk-{release.release_id}")
        (context / "debs").mkdir()
        for deb in fetch_debs(packages, self.deb_dir):
            os.link(deb, context / "debs" / deb.name)
        (context / "driver-toolkit-release.json").write_text(release_json)
        shutil.copy(RECIPES / "dtk.Containerfile", context / "Containerfile")
        image = f"localhost/kmodlab-dtk:{_key_of(layout)}-{self.tag_suffix}"
        self._podman_build(image, context, {"BASE_IMAGE": base, "KERNEL_VERSION": release.kernel}, labels,
                           _arch_what("dtk", release.arch), arch=release.arch)
        layout = self._export(image, layout.path, "dtk")
        self._check_dtk(layout, release)
        return layout

    @staticmethod
    def dtk_labels(release: LabRelease) -> dict[str, str]:
        return {
            "kernel-version": release.kernel,
            "kernel-rt-version": "",
            "name": "openshift/ose-driver-toolkit",
            "io.k8s.display-name": "Driver Toolkit (kmodlab stand-in)",
            "io.openshift.release.operator": "true",
            "version": f"v{release.version}",
        }

    @staticmethod
    def dtk_release_json(release: LabRelease) -> str:
        # The real DTK's keys; no OCP version key (the real file has none).
        return json.dumps(
            {"KERNEL_VERSION": release.kernel, "RT_KERNEL_VERSION": "", "RHEL_VERSION": rhel_version(release)}
        ) + "\n"

    @staticmethod
    def _check_arch(layout: Layout, release: LabRelease, what: str) -> None:
        config = layout.config
        if (config.get("architecture"), config.get("os")) != (release.goarch, "linux"):
            raise ImageError(f"{what} for {release.release_id}: config says {config.get('os')}/"
                             f"{config.get('architecture')}, not linux/{release.goarch}")

    @classmethod
    def _check_dtk(cls, layout: Layout, release: LabRelease) -> None:
        cls._check_arch(layout, release, "DTK")
        data = layout.read_layer_file(-1, "etc/driver-toolkit-release.json")
        if data is None or json.loads(data)["KERNEL_VERSION"] != release.kernel:
            raise ImageError(f"DTK for {release.version}: last layer lacks the right driver-toolkit-release.json")

    # RHCOS ---------------------------------------------------------------------------

    @staticmethod
    def rhcos_packages(release: LabRelease) -> list[str]:
        return deb_names([*RHCOS_USERLAND_PACKAGES, f"linux-image-{release.kernel}"], release.arch)

    def rhcos_layout(self, release: LabRelease) -> Layout:
        """Where the release's RHCOS stand-in is (or will be) cached."""
        recipes = {"rhcos.Containerfile": _recipe("rhcos.Containerfile")}
        if release.metalayer:
            recipes["metalayer.Containerfile"] = _recipe("metalayer.Containerfile")
        key = cache_key(
            {
                "what": "rhel-coreos",
                "suite": SUITE,
                "kernel": release.kernel,
                "packages": self.rhcos_packages(release),
                "labels": self.rhcos_labels(release),
                "metalayer": release.metalayer,
                "os-release": self.os_release(release),
                "recipes": recipes,
                "revision": RECIPE_REVISION,
            }
        )
        return Layout(self.oci_dir / f"rhcos-{release.kernel}-{key[:16]}")

    def rhcos(self, release: LabRelease) -> Layout:
        packages = self.rhcos_packages(release)
        labels = self.rhcos_labels(release)
        layout = self.rhcos_layout(release)
        if layout.exists():
            self.stats.cache_hits += 1
            return layout
        debs = fetch_debs(packages, self.deb_dir)
        context = self._context(f"rhcos-{release.release_id}")
        started = time.monotonic()
        assemble_rhcos_rootfs(debs, release.kernel, context / "rootfs.tar", self.os_release(release))
        self.stats.timed(_arch_what("rhcos-rootfs", release.arch), started)
        shutil.copy(RECIPES / "rhcos.Containerfile", context / "Containerfile")
        image = f"localhost/kmodlab-rhcos:{_key_of(layout)}-{self.tag_suffix}"
        # The metalayer's labels go on the last image only.
        os_labels = {k: v for k, v in labels.items() if k != "io.openshift.metalayer"}
        self._podman_build(image, context, {"KERNEL_VERSION": release.kernel}, os_labels,
                           _arch_what("rhcos", release.arch), arch=release.arch)
        if release.metalayer:
            kernel_deb = next(d for d in debs if d.name.startswith(f"linux-image-{release.kernel}_"))
            package_version = kernel_deb.name.split("_")[1]
            meta = self._context(f"rhcos-meta-{release.release_id}")
            (meta / "meta.json").write_text(json.dumps(rhcos_meta_json(release, package_version), indent=2) + "\n")
            shutil.copy(RECIPES / "metalayer.Containerfile", meta / "Containerfile")
            meta_image = f"localhost/kmodlab-rhcos:{_key_of(layout)}-meta-{self.tag_suffix}"
            self._podman_build(meta_image, meta, {"BASE_IMAGE": image}, labels,
                               _arch_what("rhcos-metalayer", release.arch), arch=release.arch)
            image = meta_image
        layout = self._export(image, layout.path, "rhcos")
        self._check_rhcos(layout, release)
        return layout

    @staticmethod
    def os_release(release: LabRelease) -> str:
        rhel = rhel_version(release)
        return (
            'NAME="Red Hat Enterprise Linux CoreOS"\n'
            f'VERSION="{os_build_version(release)}"\n'
            'ID="rhcos"\nID_LIKE="rhel fedora"\n'
            f'VERSION_ID="{release.version.rsplit(".", 1)[0]}"\n'
            f'RHEL_VERSION="{rhel}"\n'
            f'OPENSHIFT_VERSION="{release.version.rsplit(".", 1)[0]}"\n'
            'VARIANT="CoreOS (kmodlab stand-in on Debian)"\n'
        )

    @staticmethod
    def rhcos_labels(release: LabRelease) -> dict[str, str]:
        labels = {
            "ostree.bootable": "true",
            "io.openshift.build.version-display-names": "machine-os=Red Hat Enterprise Linux CoreOS",
            "io.openshift.build.versions": f"machine-os={os_build_version(release)}",
            "version": os_build_version(release),
            "name": "openshift/rhel-coreos",
        }
        if not release.metalayer:
            # Set on purpose: real images carry it inconsistently, resolvers must not trust it.
            labels["ostree.linux"] = "true"
        if release.metalayer:
            labels["io.openshift.metalayer"] = "true"
        return labels

    @classmethod
    def _check_rhcos(cls, layout: Layout, release: LabRelease) -> None:
        cls._check_arch(layout, release, "RHCOS")
        vmlinuz = f"usr/lib/modules/{release.kernel}/vmlinuz"
        found = any(layout.read_layer_file(i, vmlinuz) for i in range(len(layout.manifest["layers"])))
        if not found:
            raise ImageError(f"RHCOS for {release.version}: no /{vmlinuz}")
        if release.metalayer and layout.read_layer_file(-1, "usr/share/openshift/base/meta.json") is None:
            raise ImageError(f"RHCOS for {release.version}: last layer lacks meta.json")

    # release ----------------------------------------------------------------------------

    def component_base_layout(self, release: LabRelease) -> Layout:
        """Where the release's small base image is (or will be) cached."""
        files = self._release_base_files(release)
        inputs: dict[str, Any] = {"what": "release-base", "files": {k: v.decode() for k, v in files.items()},
                                  "revision": RECIPE_REVISION}
        if release.arch != "x86_64":
            inputs["arch"] = release.arch
        return Layout(self.oci_dir / f"release-base-{release.release_id}-{cache_key(inputs)[:16]}")

    def cached(self, release: LabRelease) -> bool:
        """Whether the release's DTK, RHCOS and base images are all in the cache."""
        return all(layout.exists() for layout in
                   (self.dtk_layout(release), self.rhcos_layout(release), self.component_base_layout(release)))

    def component_base(self, release: LabRelease) -> Layout:
        """The small image the release's base layer is made of; also stands in
        for the release's other components (it exists in the registry)."""
        files = self._release_base_files(release)
        layout = self.component_base_layout(release)
        if layout.exists():
            self.stats.cache_hits += 1
            return layout
        started = time.monotonic()
        layout = write_oci_layout(
            layout.path,
            [files],
            labels={"io.openshift.release.operator": "true", "version": f"v{release.version}"},
            history=["kmodlab: release base layer"],
            arch=release.arch,
        )
        self.stats.release_writes += 1
        self.stats.timed("release", started)
        return layout

    @staticmethod
    def _release_base_files(release: LabRelease) -> dict[str, bytes]:
        return {
            "etc/kmodlab-release-base": f"kmodlab stand-in for OpenShift {release.version} components\n".encode(),
            "usr/bin/cluster-version-operator": b"#!/bin/sh\necho 'kmodlab stand-in: no CVO here' >&2\nexit 1\n",
        }

    def release_image(self, release: LabRelease, components: dict[str, str], base: Layout,
                      multi: bool = False) -> Layout:
        """The release image for a set of component pullspecs (which name the
        registry host), its config of `release.arch`. `multi`: the image of
        that architecture in a `-multi` payload (its components are manifest
        lists, its release-metadata says architecture multi)."""
        refs = json.dumps(image_references(release, components), indent=2).encode() + b"\n"
        metadata = json.dumps(release_metadata(release, multi=multi), indent=2).encode() + b"\n"
        base_files = self._release_base_files(release)
        labels = {"io.openshift.release": release.version, "io.openshift.release.base-image-digest": base.digest}
        inputs: dict[str, Any] = {
            "what": "release",
            "image-references": refs.decode(),
            "release-metadata": metadata.decode(),
            "labels": labels,
            "revision": RECIPE_REVISION,
        }
        if release.arch != "x86_64":
            inputs["arch"] = release.arch
        key = cache_key(inputs)
        name = release.release_id + ("-multi" if multi else "")
        layout = Layout(self.oci_dir / f"release-{name}-{key[:16]}")
        if layout.exists():
            self.stats.cache_hits += 1
            return layout
        started = time.monotonic()
        layout = write_oci_layout(
            layout.path,
            [base_files, {"release-manifests/image-references": refs, "release-manifests/release-metadata": metadata}],
            labels=labels,
            history=["kmodlab: release base layer", "kmodlab: release-manifests"],
            arch=release.arch,
        )
        self.stats.release_writes += 1
        self.stats.timed("release", started)
        return layout

    def index_layout(self, name: str, parts: dict[str, Layout]) -> Layout:
        """The cached image index of per-architecture layouts (keyed by their digests)."""
        key = cache_key({"what": "index", "parts": {arch: p.digest for arch, p in parts.items()},
                         "revision": RECIPE_REVISION})
        layout = Layout(self.oci_dir / f"index-{name}-{key[:16]}")
        if layout.exists():
            self.stats.cache_hits += 1
            return layout
        started = time.monotonic()
        layout = write_index_layout(layout.path, parts)
        self.stats.release_writes += 1
        self.stats.timed("release", started)
        return layout

    # podman plumbing --------------------------------------------------------------------

    def _context(self, name: str) -> Path:
        context = self.work_dir / f"{name}-{self.tag_suffix}"
        shutil.rmtree(context, ignore_errors=True)
        context.mkdir(parents=True)
        return context

    def _podman_build(
        self, image: str, context: Path, build_args: dict[str, str], labels: dict[str, str], what: str,
        arch: str = "x86_64",
    ) -> None:
        started = time.monotonic()
        argv = ["podman", "build", "--isolation", "chroot", "--layers", "--pull=never", "-t", image]
        if arch != "x86_64":
            # Another architecture: its RUN steps run under qemu-user (binfmt_misc, hack/setup.sh).
            argv += ["--platform", f"linux/{GOARCH[arch]}"]
        for name, value in build_args.items():
            argv += ["--build-arg", f"{name}={value}"]
        for name, value in labels.items():
            argv += ["--label", f"{name}={value}"]
        self._podman_images.append(image)
        try:
            _run([*argv, "-f", str(context / "Containerfile"), str(context)])
        except ImageError as error:
            # A failed build leaves its intermediate images behind, untagged:
            # remove exactly those (by the ids the build printed, children first).
            _podman_rmi(*reversed(re.findall(r"^--> ([0-9a-f]{11,})$", error.output, re.MULTILINE)))
            raise
        self.stats.podman_builds += 1
        self.stats.timed(f"podman-build:{what}", started)

    def _export(self, image: str, dest: Path, what: str) -> Layout:
        started = time.monotonic()
        dest.parent.mkdir(parents=True, exist_ok=True)
        layout = _export_to_layout(image, dest)
        self.stats.timed(f"export:{what}", started)
        return layout

    def cleanup(self) -> None:
        """Remove this run's podman images and build contexts (the cache keeps the layouts)."""
        if self._podman_images:
            _podman_rmi(*reversed(self._podman_images))
        self._podman_images.clear()
        self._base_images.clear()
        for context in self.work_dir.glob(f"*-{self.tag_suffix}"):
            shutil.rmtree(context, ignore_errors=True)


# --- publishing --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Registry:
    host: str
    auth_file: str
    cert_dir: str

    def _auth(self) -> list[str]:
        return ["--authfile", self.auth_file, "--cert-dir", self.cert_dir]

    def push(self, layout: Layout, repo_tag: str) -> str:
        """Copy a layout to host/repo_tag keeping its digest; returns the registry's digest."""
        ref = f"docker://{self.host}/{repo_tag}"
        _run(
            [
                "skopeo", "copy", "--quiet", "--preserve-digests", *(["--all"] if layout.is_index else []),
                "--dest-authfile", self.auth_file, "--dest-cert-dir", self.cert_dir,
                f"oci:{layout.path}:{LAYOUT_TAG}", ref,
            ]
        )
        # The registry must serve, under the tag, exactly the manifest whose
        # digest the release image names.
        served = _run(["skopeo", "inspect", "--raw", *self._auth(), ref], capture=True).encode()
        if f"sha256:{sha256_hex(served)}" != layout.digest:
            raise ImageError(f"{ref}: registry digest sha256:{sha256_hex(served)} differs from the cached {layout.digest}")
        return layout.digest


def _registry_from_state(state: LabState, cert_dir: Path) -> Registry:
    # skopeo wants a cert dir: a private one holding just the lab CA.
    shutil.copy(state.ca_file, cert_dir / "ca.crt")
    return Registry(state.registry["host"], state.registry["auth_file"], str(cert_dir))


def publish_releases(state: LabState, versions: list[str]) -> list[dict[str, Any]]:
    """Build (or take from the cache) and publish the given lab releases
    (release ids: `4.16.30`, `4.16.30-aarch64`, `4.16.30-multi`, see
    kmodlab.releases) to the lab registry (reads only state.ca_file and
    state.registry).

    Returns one lab.json `releases` entry per id. `last_stats` tells what
    was built (0 builds on a warm cache).
    """
    global last_stats
    stats = BuildStats()
    last_stats = stats
    started_all = time.monotonic()
    wanted = [by_id(v) for v in versions]
    singles: list[LabRelease] = []
    for item in wanted:
        for part in (item.parts if isinstance(item, MultiRelease) else (item,)):
            if part not in singles:
                singles.append(part)
    root = cache_root()
    entries: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kmodlab-certs-") as cert_dir:
        registry = _registry_from_state(state, Path(cert_dir))
        builder = Builder(root, stats)
        # The lock only while something is built: a lab whose images are all
        # cached does not wait for another one building (minutes, for an
        # emulated arm64 release). Cached layouts never change once in place.
        with _cache_lock(root) if not all(builder.cached(r) for r in singles) else contextlib.nullcontext():
            try:
                built = {r: (builder.dtk(r), builder.rhcos(r), builder.component_base(r)) for r in singles}
            finally:
                builder.cleanup()
        # Publishing writes only release images and indexes, each into a
        # private directory renamed into place (_install): no lock needed.
        for item in wanted:
            if isinstance(item, MultiRelease):
                entries.append(_publish_multi(registry, builder, item, built, stats))
            else:
                entries.append(_publish_one(registry, builder, item, *built[item], stats))
    stats.timed("total", started_all)
    return entries


def _components(release: LabRelease, pushed: dict[str, str]) -> dict[str, str]:
    """image-references' tags -> pullspecs: the DTK and OS image, and the
    other tags (extensions and the rest) on the small base image."""
    components = {"driver-toolkit": pushed["driver-toolkit"], release.os_tag: pushed[release.os_tag]}
    for name in (*release.extra_tags, *OTHER_COMPONENTS):
        components[name] = pushed["base"]
    return components


def _release_entry(
    release: LabRelease | MultiRelease, pullspec: str, digest: str, kernel: str, pushed: dict[str, str],
    **extra: Any,
) -> dict[str, Any]:
    """A lab.json `releases` entry."""
    return {
        "id": release.release_id,
        "version": release.version,
        "arch": release.arch,
        "pullspec": pullspec,
        "digest": digest,
        "os_tag": release.os_tag,
        "kernel": kernel,
        "images": {"driver-toolkit": pushed["driver-toolkit"], release.os_tag: pushed[release.os_tag]},
        **extra,
    }


def _push_release(
    registry: Registry, layout: Layout, release: LabRelease | MultiRelease, stats: BuildStats, started: float
) -> tuple[str, str]:
    """Push a release image as `ocp-release:<version>-<arch>`: (pullspec by tag, digest)."""
    tag = f"{release.version}-{release.arch}"
    digest = registry.push(layout, f"{REPO_RELEASE}:{tag}")
    stats.copies += 1
    stats.timed("publish", started)
    return f"{registry.host}/{REPO_RELEASE}:{tag}", digest


def _publish_one(
    registry: Registry, builder: Builder, release: LabRelease, dtk: Layout, rhcos: Layout, base: Layout, stats: BuildStats
) -> dict[str, Any]:
    started = time.monotonic()
    components_repo = f"{registry.host}/{REPO_COMPONENTS}"
    pushed: dict[str, str] = {}
    for name, layout in (("driver-toolkit", dtk), (release.os_tag, rhcos), ("base", base)):
        digest = registry.push(layout, f"{REPO_COMPONENTS}:{release.release_id}-{name}")
        pushed[name] = f"{components_repo}@{digest}"
        stats.copies += 1
    release_layout = builder.release_image(release, _components(release, pushed), base)
    pullspec, digest = _push_release(registry, release_layout, release, stats, started)
    return _release_entry(release, pullspec, digest, release.kernel, pushed)


def _publish_multi(
    registry: Registry, builder: Builder, multi: MultiRelease,
    built: dict[LabRelease, tuple[Layout, Layout, Layout]], stats: BuildStats,
) -> dict[str, Any]:
    """A `-multi` payload: each component an image index of its
    per-architecture images, pinned by the index's digest in the
    image-references of every per-architecture release image; the release
    image itself an index of those (as `oc adm release new
    --keep-manifest-list` makes them)."""
    started = time.monotonic()
    components_repo = f"{registry.host}/{REPO_COMPONENTS}"
    parts = multi.parts
    first = parts[0]
    pushed: dict[str, str] = {}
    per_arch: dict[str, dict[str, str]] = {p.arch: {} for p in parts}
    for slot, name in enumerate(("driver-toolkit", first.os_tag, "base")):
        layouts = {p.arch: built[p][slot] for p in parts}
        index = builder.index_layout(f"{multi.release_id}-{name}", layouts)
        digest = registry.push(index, f"{REPO_COMPONENTS}:{multi.release_id}-{name}")
        pushed[name] = f"{components_repo}@{digest}"
        for arch, layout in layouts.items():
            per_arch[arch][name] = f"{components_repo}@{layout.digest}"
        stats.copies += 1
    releases = {p.arch: builder.release_image(p, _components(p, pushed), built[p][2], multi=True) for p in parts}
    index = builder.index_layout(f"release-{multi.release_id}", releases)
    pullspec, digest = _push_release(registry, index, multi, stats, started)
    # "kernel": the control plane's (x86_64); each architecture's in `platforms`.
    platforms = {
        p.arch: {
            "goarch": p.goarch,
            "digest": releases[p.arch].digest,
            "kernel": p.kernel,
            "images": {"driver-toolkit": per_arch[p.arch]["driver-toolkit"], p.os_tag: per_arch[p.arch][p.os_tag]},
        }
        for p in parts
    }
    return _release_entry(multi, pullspec, digest, first.kernel, pushed, platforms=platforms)


def cached_layouts(versions: Iterable[str]) -> dict[str, dict[str, Layout]]:
    """The cached DTK/RHCOS layouts of releases, where present (for sizes and
    tests); builds nothing."""
    builder = Builder(cache_root(), BuildStats())
    found: dict[str, dict[str, Layout]] = {}
    for version in versions:
        item = by_id(version)
        if isinstance(item, MultiRelease):
            continue
        release = item
        layouts = {"driver-toolkit": builder.dtk_layout(release), "rhel-coreos": builder.rhcos_layout(release)}
        found[version] = {what: layout for what, layout in layouts.items() if layout.exists()}
    return found
