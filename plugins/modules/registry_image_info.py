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
  require_gzip_layers:
    description:
      - Also read the manifest and fail unless every layer is gzip
        (C(application/vnd.oci.image.layer.v1.tar+gzip) or
        C(application/vnd.docker.image.rootfs.diff.tar.gzip)); for a
        manifest list, every image it lists. rpm-ostree of several OpenShift
        4.1x releases cannot read C(zstd) or C(zstd:chunked) layers
        (C(Unhandled layer type)), so a node would not rebase to such an
        image.
      - The failure names the image, the first layer that is not gzip and how
        to push it again. A missing image is not a failure (RV(exists) is
        V(false)).
      - The publish role sets it before an image is pinned for a MachineConfig.
    type: bool
    default: false
    version_added: 0.2.0
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
  returned: when RV(exists) and (O(labels) or O(require_gzip_layers))
  type: str
layers:
  description: The layers of the image manifest, as the registry serves it (none for a manifest list).
  returned: when RV(exists) and O(require_gzip_layers)
  type: list
  elements: dict
  contains:
    digest:
      description: Layer blob digest.
      type: str
    media_type:
      description: Layer media type.
      type: str
      sample: application/vnd.oci.image.layer.v1.tar+gzip
    compression:
      description: V(gzip), V(zstd), V(zstd:chunked), V(none), or the media type when unknown.
      type: str
    size:
      description: Compressed size in bytes.
      type: int
  version_added: 0.2.0
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
    layer_compression,
    non_gzip_layers,
    parse_pullspec,
)


def _platform(desc):
    platform = desc.get("platform") or {}
    return "/".join(str(v) for v in (platform.get("os"), platform.get("architecture")) if v) or "unknown platform"


def refuse_non_gzip(image, images):
    """The failure message for the first non-gzip layer of ``images``
    ([(label, manifest)]), or None when every layer is gzip."""
    for label, child in images:
        bad = non_gzip_layers(child.data)
        if not bad:
            continue
        index, layer = bad[0]
        total = len(child.layers)
        return (
            "%s (%s): layer %d of %d (%s) is %s (%s), not gzip%s. rpm-ostree of several OpenShift 4.1x "
            "releases cannot read zstd or zstd:chunked layers (\"Unhandled layer type\"): the nodes would not "
            "rebase to this image, so it is not pinned and no MachineConfig is written. Push the image again "
            "with gzip layers (podman push --compression-format gzip --force-compression, or skopeo copy "
            "--dest-compress-format gzip), over the same tag: the build and publish roles do not push an "
            "image the registry already has, so delete the tag or overwrite it first, then rerun."
            % (image, label, index + 1, total, layer.get("digest"), layer_compression(layer),
               layer.get("mediaType"), "" if len(bad) == 1 else " (%d layers are not gzip)" % len(bad)))
    return None


def main():
    argument_spec = registry_argument_spec()
    argument_spec.update(
        image=dict(type="str", required=True),
        labels=dict(type="bool", default=False),
        require_gzip_layers=dict(type="bool", default=False),
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
        if params["require_gzip_layers"]:
            manifest = client.get_manifest(ref.with_digest(digest))
            result["media_type"] = manifest.media_type
            if manifest.is_index:
                images = [("%s, %s" % (desc["digest"], _platform(desc)), client.get_manifest(ref.with_digest(desc["digest"])))
                          for desc in manifest.data.get("manifests") or [] if desc.get("digest")]
                result["layers"] = []
            else:
                images = [(digest, manifest)]
                result["layers"] = [dict(digest=layer.get("digest"), media_type=layer.get("mediaType"),
                                         compression=layer_compression(layer), size=layer.get("size"))
                                    for layer in manifest.layers]
            refusal = refuse_non_gzip(params["image"], images)
            if refusal:
                module.fail_json(msg=refusal, **result)
    except RegistryError as exc:
        module.fail_json(msg="%s: %s" % (params["image"], exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
