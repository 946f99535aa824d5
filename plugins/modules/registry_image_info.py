#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: registry_image_info
short_description: Whether a registry has an image, and its registry manifest digest and labels
version_added: 0.1.0
description:
  - Asks the registry (HTTP API v2, no pull) whether O(image) exists and
    which manifest digest the B(registry) serves for it (C(HEAD) of the
    manifest, C(Docker-Content-Digest)). This is the digest nodes pull by;
    the digest of a local podman image can differ.
  - A missing tag or repository is not an error (RV(exists) is V(false));
    authentication, TLS and connection failures are.
  - The build role uses it to skip builds whose content-addressed tag
    already exists, the publish role to pin pushed images by digest.
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - ocp.kmod_layering.attributes.registry_group
  - ocp.kmod_layering.attributes.read_only
  - ocp.kmod_layering.registry
options:
  image:
    description:
      - Image pullspec, C(registry/repository:tag) or C(registry/repository@sha256:...).
    type: str
    required: true
  labels:
    description:
      - Also read the image config and return its labels (one manifest and one config download).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Is the content-addressed tag already in the registry?
  ocp.kmod_layering.registry_image_info:
    image: registry.example.com/infra/rhcos-kmods:5.14.0-427.26.1.el9_4.x86_64-0123abcd
    auth_file: /run/secrets/pull-secret.json
  delegate_to: localhost
  register: layered

- name: Pin it by the registry's digest
  ansible.builtin.set_fact:
    pinned: "{{ layered.pullspec }}"
  when: layered.exists
"""

RETURN = r"""
exists:
  description: Whether the registry serves a manifest for O(image).
  returned: always
  type: bool
digest:
  description: Manifest digest the registry serves for O(image).
  returned: when RV(exists)
  type: str
  sample: sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b
pullspec:
  description: O(image) pinned by RV(digest), C(registry/repository@sha256:...).
  returned: when RV(exists)
  type: str
repository:
  description: C(registry/repository) of O(image).
  returned: always
  type: str
labels:
  description: Labels of the image config.
  returned: when RV(exists) and O(labels)
  type: dict
media_type:
  description: Media type of the manifest.
  returned: when RV(exists) and O(labels)
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry_args import (
    REGISTRY_REQUIRED_TOGETHER,
    registry_argument_spec,
    registry_client,
)
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry import (
    NotFoundError,
    RegistryError,
    image_labels,
    parse_pullspec,
)


def main():
    argument_spec = registry_argument_spec()
    argument_spec.update(
        image=dict(type="str", required=True),
        labels=dict(type="bool", default=False),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_together=REGISTRY_REQUIRED_TOGETHER,
        supports_check_mode=True,
    )
    params = module.params
    try:
        ref = parse_pullspec(params["image"])
    except RegistryError as exc:
        module.fail_json(msg="image: %s" % exc)
    result = dict(changed=False, exists=False, repository=ref.name)
    try:
        client = registry_client(params, user_agent="ocp.kmod_layering.registry_image_info")
        try:
            digest = client.manifest_digest(ref)
        except NotFoundError:
            module.exit_json(**result)
        result.update(exists=True, digest=digest, pullspec=str(ref.with_digest(digest)))
        if params["labels"]:
            manifest = client.get_manifest(ref.with_digest(digest))
            result["media_type"] = manifest.media_type
            result["labels"] = image_labels(client.get_config(manifest.ref, manifest)) if not manifest.is_index else {}
    except RegistryError as exc:
        module.fail_json(msg="%s: %s" % (params["image"], exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
