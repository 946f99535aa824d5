#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: layered_image_plan
short_description: Group clusters by the build key of their layered image
version_added: 0.1.0
description:
  - Computes, for every cluster, the B(build key) of the RHCOS layered image
    it needs, a sha256 over the kernel version, the Driver Toolkit and RHCOS
    image digests, every module's source fingerprint, source label, build
    command, modprobe options, firmware directory and load-at-boot flag, and
    the content of the build recipe (Containerfile template and helpers),
    and, for signed modules, the signing certificate's fingerprint and hash
    (a new key means a new image).
  - One key per cluster and architecture its pools need; the architecture
    is one of the key's inputs (for every architecture but x86_64, whose
    keys are those of before architectures were planned).
  - Groups the clusters by key, so each distinct image is built once for the
    whole fleet, and gives each a content-addressed tag
    (C(<kernel>-<first 32 hex of the key>)) in O(repository).
  - Pure computation on the controller; no registry and no cluster is
    contacted. Whether a tag already exists is for
    M(ocp.kmod_layering.registry_image_info) to tell.
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - ocp.kmod_layering.attributes.read_only
options:
  clusters:
    description:
      - Per cluster name, what the resolve role found (its C(kmod_resolved)), per architecture its pools
        need (C(arches), architecture => C(kernel_version), C(driver_toolkit_image) and C(rhcos_image), both
        images pinned by digest), or those three keys at the top level with C(arch) (default V(x86_64)).
        C(arch) (the first pool's) picks the cluster's entry in RV(clusters). Other keys are ignored.
    type: dict
    required: true
  modules:
    description:
      - The modules as returned by M(ocp.kmod_layering.kmod_sources) (RV(ocp.kmod_layering.kmod_sources#module:modules)),
        in build order.
    type: list
    elements: dict
    required: true
  recipe_files:
    description:
      - Files whose content makes the image (the Containerfile template and
        the helpers copied into the build context); a change of any of them
        changes every key.
    type: list
    elements: path
    required: true
  repository:
    description:
      - Repository the layered images are pushed to, C(registry/namespace/name), without tag or digest.
    type: str
    required: true
  signing:
    description:
      - Per cluster name, its signing facts
        (RV(ocp.kmod_layering.signing_certificate_info#module:signing)), or
        null for a cluster whose modules are not signed. A cluster not
        listed is unsigned.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: One build per distinct build key
  ocp.kmod_layering.layered_image_plan:
    clusters: "{{ dict(ansible_play_hosts | zip(ansible_play_hosts | map('extract', hostvars, 'kmod_resolved'))) }}"
    modules: "{{ sources.modules }}"
    recipe_files:
      - "{{ role_path }}/templates/Containerfile.j2"
      - "{{ role_path }}/files/check-vermagic.sh"
    repository: registry.example.com/infra/rhcos-kmods
  delegate_to: localhost
  run_once: true
  register: plan
"""

RETURN = r"""
builds:
  description: One entry per distinct build key, in the order of the first cluster needing it.
  returned: success
  type: list
  elements: dict
  contains:
    build_key:
      description: sha256 hex of all inputs.
      type: str
    tag:
      description: Content-addressed tag.
      type: str
      sample: 5.14.0-427.26.1.el9_4.x86_64-4f0c2e9b1d7a6c5e8f9a0b1c2d3e4f50
    image:
      description: C(repository:tag).
      type: str
    repository:
      description: The normalized O(repository).
      type: str
    kernel_version:
      description: Kernel the modules are built for.
      type: str
    arch:
      description: Architecture of the image (release naming).
      type: str
      sample: aarch64
    platform:
      description: C(linux/<goarch>), for C(podman build --platform) and the built image's config.
      type: str
      sample: linux/arm64
    driver_toolkit_image:
      description: Driver Toolkit image (build stage), pinned by digest.
      type: str
    rhcos_image:
      description: RHCOS image (base of the layered image), pinned by digest.
      type: str
    signing:
      description: The signing facts the image's modules are signed with (null when unsigned).
      type: dict
    clusters:
      description: Clusters that use this image.
      type: list
      elements: str
clusters:
  description: Build key of each cluster (of its C(arch), the first pool's architecture).
  returned: success
  type: dict
cluster_arches:
  description: Per cluster, architecture => build key, for every architecture its pools need.
  returned: success
  type: dict
  sample: {"multi-1": {"x86_64": "4f0c...", "aarch64": "9a1b..."}}
recipe_digest:
  description: Fingerprint of O(recipe_files).
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ocp.kmod_layering.plugins.module_utils._build import (
    BuildInputError,
    plan_builds,
    recipe_digest,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            clusters=dict(type="dict", required=True),
            modules=dict(type="list", elements="dict", required=True),
            recipe_files=dict(type="list", elements="path", required=True),
            repository=dict(type="str", required=True),
            signing=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        if not params["modules"]:
            raise BuildInputError("no modules: run ocp.kmod_layering.kmod_sources on kmod_modules first")
        for entry in params["modules"]:
            if not entry.get("name") or not entry.get("fingerprint"):
                raise BuildInputError("modules must come from ocp.kmod_layering.kmod_sources (each with name and "
                                      "fingerprint), got %r" % (entry,))
        recipe = recipe_digest(params["recipe_files"])
        clusters = dict((name, dict(resolved or {}, signing=params["signing"].get(name)))
                        for name, resolved in params["clusters"].items())
        plan = plan_builds(clusters, params["modules"], recipe, params["repository"])
    except (BuildInputError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, recipe_digest=recipe, **plan)


if __name__ == "__main__":
    main()
