"""The lab's releases: stand-ins for OpenShift releases, each on its own real
Debian kernel ABI, so a module built for one is refused by the others.

A real OpenShift version is published once per architecture
(`ocp-release:<version>-x86_64`, `-aarch64`, ...) and once as a `-multi`
payload (a manifest list of per-architecture release images whose
image-references name manifest lists). The lab does the same: a release is
identified by its `release_id` -- the plain version for x86_64 (as before),
`<version>-aarch64` for the arm64 stand-in, `<version>-multi` for the multi
payload made of a version's x86_64 and aarch64 stand-ins. The aarch64
stand-in of a version runs the arm64 build of the same Debian kernel ABI as
its x86_64 stand-in (as RHCOS ships one kernel NVR per release, built per
architecture)."""

from __future__ import annotations

import dataclasses

ARCHES = ("x86_64", "aarch64")
# OpenShift's architecture names (release tags, rpm arch) -> GOARCH (OCI
# platform, kubernetes.io/arch, nodeInfo.architecture).
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}
# Debian's architecture of each (apt's `<pkg>:<arch>`, debootstrap --arch).
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
MULTI = "multi"


@dataclasses.dataclass(frozen=True)
class LabRelease:
    version: str  # OpenShift version it stands for
    kernel: str  # Debian kernel ABI (uname -r) of its RHCOS stand-in
    os_tag: str  # OS image tag name in image-references, per the real release
    extra_tags: tuple[str, ...] = ()  # other OS tags the real release carries
    metalayer: bool = False  # RHCOS stand-in ends in an io.openshift.metalayer layer
    arch: str = "x86_64"

    @property
    def release_id(self) -> str:
        return self.version if self.arch == "x86_64" else f"{self.version}-{self.arch}"

    @property
    def goarch(self) -> str:
        return GOARCH[self.arch]


@dataclasses.dataclass(frozen=True)
class MultiRelease:
    """A `-multi` payload: the listed per-architecture stand-ins of one version."""

    version: str
    arches: tuple[str, ...] = ARCHES
    arch: str = MULTI

    @property
    def release_id(self) -> str:
        return f"{self.version}-{MULTI}"

    @property
    def parts(self) -> tuple[LabRelease, ...]:
        return tuple(by_version(self.version, arch) for arch in self.arches)

    @property
    def os_tag(self) -> str:
        return self.parts[0].os_tag


RELEASES: tuple[LabRelease, ...] = (
    # 4.12 names the OS image rhel-coreos-8 (plus -extensions).
    LabRelease("4.12.77", "6.1.0-50-cloud-amd64", "rhel-coreos-8", ("rhel-coreos-8-extensions",)),
    # 4.13 onward: rhel-coreos.
    LabRelease("4.16.30", "6.1.0-55-cloud-amd64", "rhel-coreos", ("rhel-coreos-extensions",), metalayer=True),
    # A third release for mixed fleets (issue D); built only when asked for.
    LabRelease("4.18.12", "6.1.0-56-cloud-amd64", "rhel-coreos", ("rhel-coreos-extensions",)),
    # 4.16.30 for aarch64 (issue K): the same ABI's arm64 kernel, DTK and RHCOS
    # stand-ins built under emulation; built only when asked for.
    LabRelease("4.16.30", "6.1.0-55-cloud-arm64", "rhel-coreos", ("rhel-coreos-extensions",), metalayer=True,
               arch="aarch64"),
    # 4.12.77 for aarch64: a release for aarch64 and multi-arch clusters to
    # upgrade from (to 4.16.30-aarch64 / -multi); built only when asked for.
    LabRelease("4.12.77", "6.1.0-50-cloud-arm64", "rhel-coreos-8", ("rhel-coreos-8-extensions",), arch="aarch64"),
)
MULTI_RELEASES: tuple[MultiRelease, ...] = (MultiRelease("4.12.77"), MultiRelease("4.16.30"))

DEFAULT_RELEASES = RELEASES[:2]


def by_version(version: str, arch: str = "x86_64") -> LabRelease:
    for release in RELEASES:
        if release.version == version and release.arch == arch:
            return release
    raise KeyError(f"no lab release {version!r} for {arch}; lab releases: {', '.join(all_ids())}")


def by_id(release_id: str) -> LabRelease | MultiRelease:
    """A release by its id: `4.16.30` (x86_64), `4.16.30-aarch64`, `4.16.30-multi`."""
    for release in (*RELEASES, *MULTI_RELEASES):
        if release.release_id == release_id:
            return release
    raise KeyError(f"no lab release {release_id!r}; lab releases: {', '.join(all_ids())}")


def all_ids() -> list[str]:
    return [r.release_id for r in (*RELEASES, *MULTI_RELEASES)]
