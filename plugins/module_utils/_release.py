# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""OpenShift release images: pullspecs, image-references, OS image tag choice.

Pure functions first (unit tested); ``resolve_release`` at the end uses a
``_registry.RegistryClient`` and reads only the release image's manifest,
config and last layer (where ``release-manifests/`` lives).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.ocp.kmod_layering.plugins.module_utils._arch import GO_ARCHES
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry import (
    RegistryError,
    check_platform,
    find_in_layers,
    image_labels,
    load_json_object,
    parse_pullspec,
)

try:
    from typing import Any, Dict, List, Optional, Tuple
except ImportError:  # pragma: no cover
    pass


DEFAULT_RELEASE_REGISTRY = "quay.io"
DEFAULT_RELEASE_REPOSITORY = "openshift-release-dev/ocp-release"
RELEASE_ARCHES = tuple(GO_ARCHES)  # the release names, x86_64 first
IMAGE_REFERENCES_PATH = "release-manifests/image-references"
RELEASE_METADATA_PATH = "release-manifests/release-metadata"

# OS image tags of the release payload, newest naming first.
OS_TAG_RHCOS = "rhel-coreos"
OS_TAG_RHCOS_8 = "rhel-coreos-8"
OS_TAG_RHCOS_10 = "rhel-coreos-10"
OS_TAG_MACHINE_OS_CONTENT = "machine-os-content"
OS_TAG_OKD = "stream-coreos"
OS_TAGS = (OS_TAG_RHCOS, OS_TAG_RHCOS_8, OS_TAG_OKD, OS_TAG_MACHINE_OS_CONTENT, OS_TAG_RHCOS_10)
DTK_TAG = "driver-toolkit"
DTK_TAG_10 = "driver-toolkit-10"
OS_STREAMS = ("default", "rhel-10")

# RHCOS image layering (a MachineConfig osImageURL naming a bootable
# container image built FROM the release's OS image) exists from 4.12 on.
LAYERING_MIN_VERSION = (4, 12)

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:[-+][0-9A-Za-z.+-]+)?$")


class ReleaseError(RegistryError):
    """A release image or its metadata is not what it must be."""


class LayeringUnsupportedError(ReleaseError):
    """A release whose nodes cannot boot a layered OS image (before 4.12)."""


def parse_version(version):
    # type: (str) -> Tuple[int, int, int]
    """``4.16.30`` / ``4.16.0-rc.1`` / ``4.15.0-0.okd-2024-03-10-010116`` -> (4, 16, 30)."""
    match = _VERSION_RE.match((version or "").strip())
    if not match:
        raise ReleaseError("invalid OpenShift version %r (expected X.Y.Z, e.g. 4.16.30)" % (version,))
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def is_okd(version):
    # type: (Optional[str]) -> bool
    return bool(version) and "okd" in version


def release_pullspec(version, arch="x86_64", registry=None, repository=None, multi=False):
    # type: (str, str, Optional[str], Optional[str], bool) -> str
    """``quay.io/openshift-release-dev/ocp-release:<version>-<arch|multi>``."""
    parse_version(version)
    if arch not in RELEASE_ARCHES:
        raise ReleaseError("invalid release architecture %r; one of: %s" % (arch, ", ".join(RELEASE_ARCHES)))
    registry = (registry or DEFAULT_RELEASE_REGISTRY).rstrip("/")
    repository = (repository or DEFAULT_RELEASE_REPOSITORY).strip("/")
    pullspec = "%s/%s:%s-%s" % (registry, repository, version, "multi" if multi else arch)
    parse_pullspec(pullspec)  # validates registry and repository
    return pullspec


def _load_json(data, what):
    return load_json_object(data, what, ReleaseError)


def parse_image_references(data):
    # type: (Any) -> Tuple[Optional[str], Dict[str, str]]
    """``release-manifests/image-references`` -> (release name, {tag: pullspec}).

    The file is an ``image.openshift.io/v1`` ImageStream; ``spec.tags[].name``
    maps to ``from.name`` (kind ``DockerImage``).
    """
    doc = _load_json(data, "image-references")
    if doc.get("kind") != "ImageStream":
        raise ReleaseError("image-references is a %r, not an ImageStream" % (doc.get("kind"),))
    api = doc.get("apiVersion", "")
    if api not in ("image.openshift.io/v1", "v1"):
        raise ReleaseError("image-references has apiVersion %r, not image.openshift.io/v1" % (api,))
    tags = {}
    for entry in (doc.get("spec") or {}).get("tags") or []:
        if not isinstance(entry, dict) or not entry.get("name"):
            continue
        source = entry.get("from") or {}
        if source.get("kind", "DockerImage") != "DockerImage" or not source.get("name"):
            continue
        tags[entry["name"]] = source["name"]
    return (doc.get("metadata") or {}).get("name"), tags


def parse_release_metadata(data):
    # type: (Any) -> Dict[str, Any]
    """``release-manifests/release-metadata`` (cincinnati-metadata-v0)."""
    doc = _load_json(data, "release-metadata")
    if doc.get("kind") != "cincinnati-metadata-v0":
        raise ReleaseError("release-metadata has kind %r, not cincinnati-metadata-v0" % (doc.get("kind"),))
    if not doc.get("version"):
        raise ReleaseError("release-metadata has no version")
    return doc


def expected_os_tag(version):
    # type: (Optional[str]) -> Optional[str]
    """The OS image tag a release of ``version`` names its RHCOS image by."""
    if not version:
        return None
    if is_okd(version):
        return OS_TAG_OKD
    major, minor, _patch = parse_version(version)
    if major != 4:
        return None
    if minor <= 11:
        return OS_TAG_MACHINE_OS_CONTENT
    if minor == 12:
        return OS_TAG_RHCOS_8
    return OS_TAG_RHCOS


def check_layering_supported(version, os_tag=None):
    # type: (Optional[str], Optional[str]) -> None
    """Refuse a release that cannot be layered: older than 4.12, or whose OS
    image is ``machine-os-content``.

    Before 4.12 a release payload carries only ``machine-os-content``: an
    ostree repository shipped in a container, not a bootable container image;
    the MCO of those releases does not boot a layered OS image. Raises
    LayeringUnsupportedError naming the release and the version layering
    needs.
    """
    minimum = "%d.%d" % LAYERING_MIN_VERSION
    who = "release %s" % version if version else "the release"
    if version:
        major, minor, _patch = parse_version(version)
        if (major, minor) < LAYERING_MIN_VERSION:
            raise LayeringUnsupportedError(
                "%s cannot be layered: RHCOS image layering (a MachineConfig osImageURL naming a custom OS "
                "image) is supported from OpenShift %s on, and a %d.%d payload carries only %s (an ostree "
                "repository in a container, not a bootable container image); upgrade the cluster to %s or "
                "later first" % (who, minimum, major, minor, OS_TAG_MACHINE_OS_CONTENT, minimum))
    if os_tag == OS_TAG_MACHINE_OS_CONTENT:
        raise LayeringUnsupportedError(
            "%s: %s is an ostree repository in a container, not a bootable container image, and cannot be "
            "the base of a layered OS image (RHCOS image layering is supported from OpenShift %s on, with "
            "the %s/%s images)" % (who, OS_TAG_MACHINE_OS_CONTENT, minimum, OS_TAG_RHCOS_8, OS_TAG_RHCOS))


def choose_os_image_tag(version, available_tags, stream="default", prefer=None):
    # type: (Optional[str], Any, str, Optional[str]) -> Tuple[str, str]
    """Choose (OS image tag, driver toolkit tag) from what the release has.

    ``stream="rhel-10"`` selects ``rhel-coreos-10`` + ``driver-toolkit-10``
    (4.21+). ``prefer`` names a tag explicitly. There is no
    ``rhel-coreos-9`` tag. Raises ReleaseError listing the available tags,
    LayeringUnsupportedError for a release that cannot be layered (see
    ``check_layering_supported``).
    """
    check_layering_supported(version)
    available = sorted(available_tags)
    os_present = [t for t in available if t in OS_TAGS]
    described = "OS image tags present: %s" % (", ".join(os_present) or "none")
    who = "release %s" % version if version else "the release"
    if stream not in OS_STREAMS:
        raise ReleaseError("invalid OS stream %r; one of: %s" % (stream, ", ".join(OS_STREAMS)))
    if prefer:
        if prefer == "rhel-coreos-9":
            raise ReleaseError("there is no rhel-coreos-9 tag in OpenShift releases (RHEL 9 based releases use "
                               "rhel-coreos); %s" % described)
        if prefer.endswith("-extensions") or prefer.startswith("driver-toolkit"):
            raise ReleaseError("%r is not an OS image tag; %s" % (prefer, described))
        if prefer not in available:
            raise ReleaseError("%s has no %r image; %s" % (who, prefer, described))
        tag = prefer
    elif stream == "rhel-10":
        if OS_TAG_RHCOS_10 not in available:
            raise ReleaseError("%s has no %s image (the RHEL 10 stream exists from 4.21 on); %s"
                               % (who, OS_TAG_RHCOS_10, described))
        tag = OS_TAG_RHCOS_10
    else:
        expected = expected_os_tag(version)
        if expected and expected in available:
            tag = expected
        else:
            # newest naming first; rhel-coreos-10 only when asked for
            candidates = [t for t in (OS_TAG_RHCOS, OS_TAG_RHCOS_8, OS_TAG_OKD, OS_TAG_MACHINE_OS_CONTENT)
                          if t in available]
            if not candidates:
                raise ReleaseError("%s has no usable OS image tag (expected %s); %s; all tags: %s"
                                   % (who, expected or " or ".join(OS_TAGS[:4]), described,
                                      ", ".join(available) or "none"))
            tag = candidates[0]
    check_layering_supported(version, tag)
    dtk = DTK_TAG_10 if tag == OS_TAG_RHCOS_10 else DTK_TAG
    if dtk not in available:
        raise ReleaseError("%s has no %s image (needed with %s); tags: %s"
                           % (who, dtk, tag, ", ".join(available) or "none"))
    return tag, dtk


def apply_mirrors(pullspec, mirrors):
    # type: (str, Optional[List[Dict[str, Any]]]) -> str
    """Rewrite ``pullspec`` by the first matching mirror (like an IDMS).

    ``mirrors``: ``[{"source": "quay.io/openshift-release-dev/ocp-v4.0-art-dev",
    "mirror": "mirror.example.com/ocp/release"}]``; ``source`` matches the
    image's ``registry/repository`` exactly or as a path prefix. The digest
    (and tag) are kept.
    """
    ref = parse_pullspec(pullspec)
    for entry in mirrors or []:
        source = (entry.get("source") or "").rstrip("/")
        mirror = (entry.get("mirror") or "").rstrip("/")
        if not source or not mirror:
            raise ReleaseError("image mirror entries need both source and mirror (got %r)" % (entry,))
        if ref.name == source or ref.name.startswith(source + "/"):
            rewritten = mirror + ref.name[len(source):]
            if ref.tag and not ref.digest:
                rewritten += ":" + ref.tag
            if ref.digest:
                rewritten += "@" + ref.digest
            return str(parse_pullspec(rewritten))
    return str(ref)


def release_files_matcher(max_size=16 * 1024 * 1024):
    """Matcher for ``find_in_layers``: both release-manifests files, as text."""
    seen = {}

    def match(path, fileobj):
        if path in (IMAGE_REFERENCES_PATH, RELEASE_METADATA_PATH) and fileobj is not None:
            seen[path] = fileobj.read(max_size).decode("utf-8", "replace")
            if len(seen) == 2:
                return dict(seen)
        return None

    return match, seen


def resolve_release(client, pullspec, arch="x86_64", components=None, stream="default", prefer=None,
                    expected_version=None, mirrors=None):
    # type: (Any, str, str, Optional[List[str]], str, Optional[str], Optional[str], Optional[List[Dict[str, Any]]]) -> Dict[str, Any]
    """Read a release image: digest, version, OS tag, component pullspecs.

    Reads the manifest (a manifest list is resolved to ``arch``), the config
    and only the last layer. Components without a digest are resolved to
    one (HEAD). Component pullspecs are rewritten by ``mirrors`` (see
    ``apply_mirrors``); ``source_components`` keeps what the release names.
    When the release is a manifest list (a ``-multi`` payload), its
    components are pinned by the digest of their ``arch`` image
    (``component_lists`` keeps the lists' digests). Returns the module's
    result fields.
    """
    ref = parse_pullspec(pullspec)
    manifest = client.get_manifest(ref, arch=arch)
    config = client.get_config(ref, manifest)
    check_platform(config, arch, ref)
    labels = image_labels(config)
    match, seen = release_files_matcher()
    files, info = find_in_layers(client, manifest, match, max_layers=1, cache_key="release-files")
    files = files or seen
    if IMAGE_REFERENCES_PATH not in files:
        raise ReleaseError("%s is not a release image: its last layer has no %s" % (pullspec, IMAGE_REFERENCES_PATH))
    name, tags = parse_image_references(files[IMAGE_REFERENCES_PATH])
    if RELEASE_METADATA_PATH in files:
        version = parse_release_metadata(files[RELEASE_METADATA_PATH])["version"]
    else:
        version = labels.get("io.openshift.release") or name
    if expected_version and version != expected_version:
        raise ReleaseError("%s is release %s, not %s" % (pullspec, version, expected_version))
    os_tag, dtk_tag = choose_os_image_tag(version, tags, stream=stream, prefer=prefer)
    wanted = list(components) if components else [dtk_tag, os_tag]
    missing = [c for c in wanted if c not in tags]
    if missing:
        raise ReleaseError("release %s has no component %s; available: %s"
                           % (version, ", ".join(missing), ", ".join(sorted(tags))))
    resolved, sources, lists = {}, {}, {}
    multi = manifest.index_digest is not None
    for comp in wanted:
        sources[comp] = tags[comp]
        comp_ref = parse_pullspec(apply_mirrors(tags[comp], mirrors))
        if multi:
            # The components of a multi-architecture payload are manifest
            # lists too: pin each by the digest of ``arch``'s image, which
            # is what its nodes run (a component without that platform is
            # refused here, before anything is built).
            comp_manifest = client.get_manifest(comp_ref, arch=arch)
            if comp_manifest.index_digest:
                lists[comp] = str(comp_ref.with_digest(comp_manifest.index_digest))
            comp_ref = comp_ref.with_digest(comp_manifest.digest)
        elif not comp_ref.digest:
            comp_ref = comp_ref.with_digest(client.manifest_digest(comp_ref))
        resolved[comp] = str(comp_ref.with_digest(comp_ref.digest))
    return {
        "pullspec": str(ref.with_digest(manifest.pinned_digest)),
        "digest": manifest.pinned_digest,
        "platform_digest": manifest.digest,
        "version": version,
        "arch": arch,
        "os_image_tag": os_tag,
        "driver_toolkit_tag": dtk_tag,
        "os_image": resolved.get(os_tag) or apply_mirrors(tags[os_tag], mirrors),
        "driver_toolkit_image": resolved.get(dtk_tag) or apply_mirrors(tags[dtk_tag], mirrors),
        "components": resolved,
        "source_components": sources,
        "multi_arch": multi,
        "component_lists": lists,
        "available_tags": sorted(tags),
        "layers_read": info["layers_read"],
    }
