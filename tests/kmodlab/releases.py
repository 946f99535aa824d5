"""The lab's releases: stand-ins for OpenShift releases, each on its own real
Debian kernel ABI, so a module built for one is refused by the others."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LabRelease:
    version: str  # OpenShift version it stands for
    kernel: str  # Debian kernel ABI (uname -r) of its RHCOS stand-in
    os_tag: str  # OS image tag name in image-references, per the real release
    extra_tags: tuple[str, ...] = ()  # other OS tags the real release carries
    metalayer: bool = False  # RHCOS stand-in ends in an io.openshift.metalayer layer
    arch: str = "x86_64"


RELEASES: tuple[LabRelease, ...] = (
    # 4.12 names the OS image rhel-coreos-8 (plus -extensions).
    LabRelease("4.12.77", "6.1.0-50-cloud-amd64", "rhel-coreos-8", ("rhel-coreos-8-extensions",)),
    # 4.13 onward: rhel-coreos.
    LabRelease("4.16.30", "6.1.0-55-cloud-amd64", "rhel-coreos", ("rhel-coreos-extensions",), metalayer=True),
    # A third release for mixed fleets (issue D); built only when asked for.
    LabRelease("4.18.12", "6.1.0-56-cloud-amd64", "rhel-coreos", ("rhel-coreos-extensions",)),
)

DEFAULT_RELEASES = RELEASES[:2]


def by_version(version: str) -> LabRelease:
    for release in RELEASES:
        if release.version == version:
            return release
    raise KeyError(f"no lab release {version!r}; lab releases: {', '.join(r.version for r in RELEASES)}")
