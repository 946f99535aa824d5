#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: ocp_release_image
short_description: Resolve an OpenShift release image to its digest and component images
version_added: 0.1.0
description:
  - Reads an OpenShift release image over the registry API, like
    C(oc adm release info --image-for=...), without pulling it.
  - Only the release image's manifest, config and B(last layer) are read;
    that layer holds C(release-manifests/image-references) (an ImageStream
    mapping component tags to pullspecs) and C(release-manifests/release-metadata).
  - Chooses the OS image tag by what the release contains and its version
    (4.12 C(rhel-coreos-8), 4.13 on C(rhel-coreos), 4.21 on optionally C(rhel-coreos-10) with
    C(driver-toolkit-10), OKD C(stream-coreos)); there is no C(rhel-coreos-9).
  - Refuses (fails) a release that cannot be layered, naming it. RHCOS image
    layering exists from OpenShift 4.12 on. A 4.11 or older payload carries
    only C(machine-os-content), an ostree repository in a container, not a
    bootable container image; C(machine-os-content) is never chosen as the
    OS image (not even with O(os_image_tag)). The failure result has
    RV(layering_supported=false).
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - ocp.kmod_layering.attributes.registry_group
  - ocp.kmod_layering.attributes.read_only
  - ocp.kmod_layering.registry
options:
  version:
    description:
      - Release version, for example V(4.16.30). The pullspec is
        C(<release_registry>/<release_repository>:<version>-<arch>)
        (or C(-multi) with O(multi_arch)).
      - Mutually exclusive with O(pullspec); one of them is required.
    type: str
  pullspec:
    description:
      - Full release image pullspec, by tag or by digest (for example the
        C(status.desired.image) of a cluster's ClusterVersion).
    type: str
  arch:
    description:
      - Architecture, in OpenShift naming. Chooses the release tag suffix
        with O(version), and the platform when the image is a manifest list.
    type: str
    default: x86_64
    choices: [x86_64, aarch64, ppc64le, s390x]
  multi_arch:
    description:
      - With O(version), use the multi-architecture release
        (C(<version>-multi), a manifest list); O(arch) picks the platform.
    type: bool
    default: false
  release_registry:
    description:
      - Registry of the release images, for mirrors. Only with O(version).
    type: str
    default: quay.io
  release_repository:
    description:
      - Repository of the release images, for mirrors. Only with O(version).
    type: str
    default: openshift-release-dev/ocp-release
  os_stream:
    description:
      - V(default) picks the release's usual OS image tag; V(rhel-10) picks
        C(rhel-coreos-10) and C(driver-toolkit-10) (releases 4.21 and later).
    type: str
    default: default
    choices: [default, rhel-10]
  os_image_tag:
    description:
      - Use this OS image tag instead of choosing one. It must be in the
        release's image-references.
    type: str
  image_mirrors:
    description:
      - Where to read the component images from instead of where the
        release names them, like an C(ImageDigestMirrorSet) (disconnected
        clusters, C(oc adm release mirror)). The first entry whose
        O(image_mirrors[].source) matches the component's
        C(registry/repository) (exactly or as a path prefix) rewrites it;
        the digest is kept.
      - RV(components), RV(os_image) and RV(driver_toolkit_image) are the
        rewritten pullspecs; RV(source_components) the original ones.
    type: list
    elements: dict
    default: []
    suboptions:
      source:
        description: Repository (C(registry/path)) as the release names it.
        type: str
        required: true
      mirror:
        description: Repository (C(registry/path)) to read from instead.
        type: str
        required: true
  components:
    description:
      - Component tags to return in RV(components). Default is the driver
        toolkit tag and the chosen OS image tag.
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Resolve a release by version
  ocp.kmod_layering.ocp_release_image:
    version: 4.16.30
    arch: x86_64
    auth_file: /run/secrets/pull-secret.json
  delegate_to: localhost
  register: release

- name: Resolve what a cluster runs, from a mirror, with a private CA
  ocp.kmod_layering.ocp_release_image:
    pullspec: "{{ clusterversion.status.desired.image }}"
    pull_secret: "{{ lookup('file', 'pull-secret.json') }}"
    ca_path: /etc/pki/mirror-ca.pem
    cache_dir: ~/.cache/ocp-kmod
    components: [driver-toolkit, rhel-coreos, rhel-coreos-extensions]
  delegate_to: localhost
  register: release

- name: Disconnected cluster, release and components mirrored to one repository
  ocp.kmod_layering.ocp_release_image:
    pullspec: mirror.example.com:8443/ocp/release@sha256:3e81d2a0...
    auth_file: /run/secrets/mirror-auth.json
    image_mirrors:
      - source: quay.io/openshift-release-dev/ocp-v4.0-art-dev
        mirror: mirror.example.com:8443/ocp/release
  delegate_to: localhost
  register: release

- name: Use the results
  ansible.builtin.debug:
    msg: "DTK {{ release.driver_toolkit_image }}, OS {{ release.os_image }}"
"""

RETURN = r"""
pullspec:
  description: The release image pinned by digest (the manifest list's digest for a multi-arch release).
  returned: success
  type: str
  sample: quay.io/openshift-release-dev/ocp-release@sha256:3e81d2a0...
digest:
  description: Registry digest of the release image (of the manifest list for a multi-arch release).
  returned: success
  type: str
  sample: sha256:3e81d2a0...
platform_digest:
  description: Digest of the O(arch) image manifest; equal to RV(digest) unless the release is a manifest list.
  returned: success
  type: str
version:
  description: Release version, from C(release-manifests/release-metadata).
  returned: success
  type: str
  sample: 4.16.30
arch:
  description: Architecture resolved (OpenShift naming).
  returned: success
  type: str
  sample: x86_64
os_image_tag:
  description: OS image tag chosen.
  returned: success
  type: str
  sample: rhel-coreos
driver_toolkit_tag:
  description: Driver toolkit tag matching RV(os_image_tag).
  returned: success
  type: str
  sample: driver-toolkit
os_image:
  description:
    - Pullspec of the OS (RHCOS) image, by digest.
    - For a multi-architecture release (RV(multi_arch)), the digest of the O(arch) image of the component's
      manifest list (what the nodes of that architecture run), not the list's.
  returned: success
  type: str
driver_toolkit_image:
  description:
    - Pullspec of the Driver Toolkit image, by digest.
    - For a multi-architecture release, the digest of its O(arch) image, as for RV(os_image).
  returned: success
  type: str
multi_arch:
  description: Whether the release image is a manifest list (a C(-multi) payload, whose components are lists too).
  returned: success
  type: bool
component_lists:
  description:
    - For a multi-architecture release, requested component tag => pullspec pinned by the digest of its manifest
      list (RV(components) pins the O(arch) image). Empty for a single-architecture release.
  returned: success
  type: dict
components:
  description: Requested component tag => pullspec pinned by digest.
  returned: success
  type: dict
  sample: {"driver-toolkit": "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:..."}
source_components:
  description: Requested component tag => pullspec as the release's image-references names it (before O(image_mirrors)).
  returned: success
  type: dict
available_tags:
  description: All tag names of the release's image-references.
  returned: success
  type: list
  elements: str
layers_read:
  description: Layers downloaded or read from the cache (0 or 1).
  returned: success
  type: int
layering_supported:
  description:
    - V(false) when the module fails because the release cannot be layered
      (older than 4.12, or its OS image is C(machine-os-content)).
  returned: failure, when the release cannot be layered
  type: bool
  sample: false
bytes_fetched:
  description: Bytes of image content (manifests, config, layer) received from registries; 0 when the cache served everything.
  returned: success
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry_args import (
    REGISTRY_REQUIRED_TOGETHER,
    registry_argument_spec,
    registry_client,
)
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry import RegistryError
from ansible_collections.ocp.kmod_layering.plugins.module_utils._release import (
    LayeringUnsupportedError,
    release_pullspec,
    resolve_release,
)


def main():
    argument_spec = registry_argument_spec()
    argument_spec.update(
        version=dict(type="str"),
        pullspec=dict(type="str"),
        arch=dict(type="str", default="x86_64", choices=["x86_64", "aarch64", "ppc64le", "s390x"]),
        multi_arch=dict(type="bool", default=False),
        release_registry=dict(type="str", default="quay.io"),
        release_repository=dict(type="str", default="openshift-release-dev/ocp-release"),
        os_stream=dict(type="str", default="default", choices=["default", "rhel-10"]),
        os_image_tag=dict(type="str"),
        components=dict(type="list", elements="str"),
        image_mirrors=dict(type="list", elements="dict", default=[], options=dict(
            source=dict(type="str", required=True),
            mirror=dict(type="str", required=True),
        )),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[["version", "pullspec"]],
        required_one_of=[["version", "pullspec"]],
        required_together=REGISTRY_REQUIRED_TOGETHER,
        supports_check_mode=True,
    )
    params = module.params
    client = None
    try:
        if params["version"]:
            pullspec = release_pullspec(params["version"], params["arch"], params["release_registry"],
                                        params["release_repository"], multi=params["multi_arch"])
        else:
            pullspec = params["pullspec"]
        client = registry_client(params, user_agent="ocp.kmod_layering.ocp_release_image")
        result = resolve_release(client, pullspec, arch=params["arch"], components=params["components"],
                                 stream=params["os_stream"], prefer=params["os_image_tag"],
                                 expected_version=params["version"], mirrors=params["image_mirrors"])
    except LayeringUnsupportedError as exc:
        module.fail_json(msg=str(exc), layering_supported=False, bytes_fetched=client.bytes_fetched if client else 0)
    except RegistryError as exc:
        module.fail_json(msg=str(exc), bytes_fetched=client.bytes_fetched if client else 0)
    result["bytes_fetched"] = client.bytes_fetched
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
