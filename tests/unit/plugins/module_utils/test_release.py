# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _release: pullspecs, image-references, OS image tag choice."""

import json

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _release as rel

ART = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:"


def _image_references(name, tags):
    return json.dumps({
        "kind": "ImageStream", "apiVersion": "image.openshift.io/v1",
        "metadata": {"name": name, "creationTimestamp": None},
        "spec": {"lookupPolicy": {"local": False}, "tags": [
            {"name": t, "annotations": {"io.openshift.build.commit.id": ""},
             "from": {"kind": "DockerImage", "name": ART + ("%02d" % i) * 32},
             "generation": None, "importPolicy": {}, "referencePolicy": {"type": ""}}
            for i, t in enumerate(tags)]},
        "status": {"dockerImageRepository": ""}})


def test_parse_image_references():
    name, tags = rel.parse_image_references(_image_references("4.16.30", ["driver-toolkit", "rhel-coreos"]))
    assert name == "4.16.30"
    assert tags == {"driver-toolkit": ART + "00" * 32, "rhel-coreos": ART + "01" * 32}


def test_parse_image_references_skips_non_docker_and_rejects_other_kinds():
    doc = json.loads(_image_references("4.16.30", ["a"]))
    doc["spec"]["tags"].append({"name": "b", "from": {"kind": "ImageStreamTag", "name": "x:y"}})
    assert list(rel.parse_image_references(doc)[1]) == ["a"]
    doc["kind"] = "ConfigMap"
    with pytest.raises(rel.ReleaseError, match="not an ImageStream"):
        rel.parse_image_references(doc)
    with pytest.raises(rel.ReleaseError, match="not valid JSON"):
        rel.parse_image_references(b"{")


def test_parse_release_metadata():
    meta = rel.parse_release_metadata(b'{"kind": "cincinnati-metadata-v0", "version": "4.16.30", '
                                      b'"previous": ["4.16.29"], "metadata": {"url": "x"}}')
    assert meta["version"] == "4.16.30" and meta["previous"] == ["4.16.29"]
    with pytest.raises(rel.ReleaseError, match="cincinnati-metadata-v0"):
        rel.parse_release_metadata({"kind": "other", "version": "1"})


@pytest.mark.parametrize("version, expected", [
    ("4.16.30", (4, 16, 30)), ("4.16.0-rc.1", (4, 16, 0)), ("4.15.0-0.okd-2024-03-10-010116", (4, 15, 0)),
])
def test_parse_version(version, expected):
    assert rel.parse_version(version) == expected


@pytest.mark.parametrize("version", ["4.16", "latest", "", "v4.16.1"])
def test_parse_version_invalid(version):
    with pytest.raises(rel.ReleaseError):
        rel.parse_version(version)


def test_release_pullspec():
    assert rel.release_pullspec("4.16.30") == "quay.io/openshift-release-dev/ocp-release:4.16.30-x86_64"
    assert rel.release_pullspec("4.16.30", "aarch64") == "quay.io/openshift-release-dev/ocp-release:4.16.30-aarch64"
    assert rel.release_pullspec("4.16.30", "s390x", multi=True) == \
        "quay.io/openshift-release-dev/ocp-release:4.16.30-multi"
    assert rel.release_pullspec("4.12.77", registry="mirror.example.com:5000", repository="ocp/release") == \
        "mirror.example.com:5000/ocp/release:4.12.77-x86_64"
    with pytest.raises(rel.ReleaseError, match="architecture"):
        rel.release_pullspec("4.16.30", "amd64")
    with pytest.raises(rel.ReleaseError, match="version"):
        rel.release_pullspec("4.16")


# Tag sets modelled on the real payloads (only the OS / DTK related tags).
TAGS_411 = ["driver-toolkit", "machine-os-content", "cli", "installer"]
TAGS_412 = ["driver-toolkit", "rhel-coreos-8", "rhel-coreos-8-extensions", "machine-os-content", "cli"]
TAGS_413 = ["driver-toolkit", "rhel-coreos", "rhel-coreos-extensions", "cli"]
TAGS_421 = ["driver-toolkit", "driver-toolkit-10", "rhel-coreos", "rhel-coreos-extensions", "rhel-coreos-10",
            "rhel-coreos-10-extensions", "cli"]
TAGS_OKD = ["driver-toolkit", "stream-coreos", "stream-coreos-extensions", "cli"]


@pytest.mark.parametrize("version, tags, stream, expected", [
    ("4.12.77", TAGS_412, "default", ("rhel-coreos-8", "driver-toolkit")),
    ("4.13.0", TAGS_413, "default", ("rhel-coreos", "driver-toolkit")),
    ("4.16.30", TAGS_413, "default", ("rhel-coreos", "driver-toolkit")),
    ("4.21.3", TAGS_421, "default", ("rhel-coreos", "driver-toolkit")),
    ("4.21.3", TAGS_421, "rhel-10", ("rhel-coreos-10", "driver-toolkit-10")),
    ("4.15.0-0.okd-2024-03-10-010116", TAGS_OKD, "default", ("stream-coreos", "driver-toolkit")),
    # the payload decides when the version does not say: unknown version, rhel-coreos present
    (None, TAGS_413, "default", ("rhel-coreos", "driver-toolkit")),
    # an OKD payload under a plain version still has only stream-coreos
    ("4.17.0", TAGS_OKD, "default", ("stream-coreos", "driver-toolkit")),
])
def test_choose_os_image_tag(version, tags, stream, expected):
    assert rel.choose_os_image_tag(version, tags, stream=stream) == expected


def test_choose_os_image_tag_never_rhel_coreos_10_by_default():
    tags = ["driver-toolkit-10", "rhel-coreos-10", "driver-toolkit"]
    with pytest.raises(rel.ReleaseError, match="no usable OS image tag") as err:
        rel.choose_os_image_tag("4.21.3", tags)
    assert "rhel-coreos-10" in str(err.value)


def test_choose_os_image_tag_no_usable_tag_lists_tags():
    with pytest.raises(rel.ReleaseError) as err:
        rel.choose_os_image_tag("4.16.30", ["driver-toolkit", "cli", "rhel-coreos-9"])
    msg = str(err.value)
    assert "4.16.30" in msg and "cli, driver-toolkit, rhel-coreos-9" in msg and "expected rhel-coreos" in msg


def test_choose_os_image_tag_rhel10_before_421():
    with pytest.raises(rel.ReleaseError, match="RHEL 10 stream exists from 4.21"):
        rel.choose_os_image_tag("4.16.30", TAGS_413, stream="rhel-10")


def test_choose_os_image_tag_prefer():
    with pytest.raises(rel.ReleaseError, match="'rhel-coreos-extensions' is not an OS image tag"):
        rel.choose_os_image_tag("4.16.30", TAGS_413, prefer="rhel-coreos-extensions")
    with pytest.raises(rel.ReleaseError, match="no rhel-coreos-9 tag"):
        rel.choose_os_image_tag("4.16.30", TAGS_413, prefer="rhel-coreos-9")
    with pytest.raises(rel.ReleaseError, match="has no 'rhel-coreos-8' image; OS image tags present: rhel-coreos"):
        rel.choose_os_image_tag("4.16.30", TAGS_413, prefer="rhel-coreos-8")


# Layering needs 4.12+ (DESIGN.md, "More facts"): a 4.11 or older payload has
# only machine-os-content, an ostree repository in a container.
@pytest.mark.parametrize("version", ["4.11.59", "4.10.3", "4.11.0-0.okd-2022-11-19-050030", "3.11.0"])
def test_release_before_412_is_refused_naming_it_and_the_minimum(version):
    with pytest.raises(rel.LayeringUnsupportedError) as err:
        rel.choose_os_image_tag(version, TAGS_411)
    msg = str(err.value)
    assert "release %s cannot be layered" % version in msg
    assert "from OpenShift 4.12 on" in msg and "machine-os-content" in msg
    # refused on the version alone, whatever tags the payload has
    with pytest.raises(rel.LayeringUnsupportedError):
        rel.choose_os_image_tag(version, TAGS_413)


def test_machine_os_content_is_never_a_layering_base():
    # a payload naming only machine-os-content, whatever its version says or when it says none
    for version in (None, "4.12.77", "4.16.30"):
        with pytest.raises(rel.LayeringUnsupportedError, match="not a bootable container image"):
            rel.choose_os_image_tag(version, ["driver-toolkit", "machine-os-content", "cli"])
    # 4.12 carries both; asking for machine-os-content by name is refused too
    with pytest.raises(rel.LayeringUnsupportedError, match="machine-os-content is an ostree repository"):
        rel.choose_os_image_tag("4.12.77", TAGS_412, prefer="machine-os-content")
    assert rel.choose_os_image_tag("4.12.0", TAGS_412) == ("rhel-coreos-8", "driver-toolkit")


def test_choose_os_image_tag_needs_driver_toolkit():
    with pytest.raises(rel.ReleaseError, match="no driver-toolkit-10 image"):
        rel.choose_os_image_tag("4.21.3", ["rhel-coreos-10", "driver-toolkit"], stream="rhel-10")


def test_expected_os_tag():
    assert rel.expected_os_tag("4.10.3") == "machine-os-content"
    assert rel.expected_os_tag("4.12.0") == "rhel-coreos-8"
    assert rel.expected_os_tag("4.20.1") == "rhel-coreos"
    assert rel.expected_os_tag("4.14.0-0.okd-2023-11-12-042703") == "stream-coreos"


MIRRORS = [{"source": "quay.io/openshift-release-dev/ocp-v4.0-art-dev", "mirror": "mirror.example.com:8443/ocp/release"},
           {"source": "quay.io/openshift-release-dev", "mirror": "mirror.example.com:8443/ocp4"}]


@pytest.mark.parametrize("pullspec, expected", [
    (ART + "ab" * 32, "mirror.example.com:8443/ocp/release@sha256:" + "ab" * 32),
    ("quay.io/openshift-release-dev/ocp-release:4.16.30-x86_64", "mirror.example.com:8443/ocp4/ocp-release:4.16.30-x86_64"),
    # a path prefix only matches at a '/' boundary
    ("quay.io/openshift-release-dev-other/x:1", "quay.io/openshift-release-dev-other/x:1"),
    ("registry.example.com/other/img@sha256:" + "cd" * 32, "registry.example.com/other/img@sha256:" + "cd" * 32),
])
def test_apply_mirrors(pullspec, expected):
    assert rel.apply_mirrors(pullspec, MIRRORS) == expected


def test_apply_mirrors_incomplete_entry():
    with pytest.raises(rel.ReleaseError, match="source and mirror"):
        rel.apply_mirrors(ART + "ab" * 32, [{"source": "quay.io"}])
