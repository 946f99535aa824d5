#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: registry_credentials_check
short_description: Check that a set of registry credentials (a cluster's pull secret, or the push auth file) covers an image's registry
version_added: 0.1.0
description:
  - Renamed from C(ocp.kmod_layering.pull_secret_check) in 0.2.0; the old
    name still works (a redirect) and is deprecated.
  - Checks that a pull secret (the cluster's global C(openshift-config/pull-secret),
    read beforehand with M(kubernetes.core.k8s_info)) has an C(auths) entry
    with credentials for the registry of O(image), matched the way
    container tools match them (C(host/namespace/repo), then shorter
    prefixes, then C(host)).
  - Fails, naming the O(cluster) and the registry, when it has none; the
    nodes could not pull the layered image and the rollout would degrade
    the pool.
  - With O(source), the same check on the credentials the layered image is
    pushed with (the controller's auth file, C(kmod_registry_auth_file));
    the message then names that file and how to add the entry.
  - Pure computation on the controller; nothing is contacted. The
    credentials themselves are not tried.
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - ocp.kmod_layering.attributes.read_only
options:
  pull_secret:
    description:
      - The pull secret, as a Secret object (with C(data[".dockerconfigjson"]),
        base64), or the dockerconfigjson content (dict or JSON text).
    type: raw
    required: true
  image:
    description: Image (or repository) the nodes will pull, C(registry/namespace/name[:tag|@digest]).
    type: str
    required: true
  cluster:
    description: Name of the cluster, for messages.
    type: str
    default: the cluster
  source:
    description:
      - Where O(pull_secret) comes from when it is not the cluster's pull secret, for
        messages, e.g. C(kmod_registry_auth_file /path/auth.json) (the credentials to push
        the layered image with). Unset, the cluster's C(openshift-config/pull-secret) is meant.
    type: str
"""

EXAMPLES = r"""
- name: Read the cluster's global pull secret
  kubernetes.core.k8s_info:
    api_version: v1
    kind: Secret
    namespace: openshift-config
    name: pull-secret
  register: pull_secret
  no_log: true

- name: Check it covers the registry the layered image is pushed to
  ocp.kmod_layering.registry_credentials_check:
    pull_secret: "{{ pull_secret.resources[0] }}"
    image: registry.example.com/infra/rhcos-kmods
    cluster: "{{ inventory_hostname }}"
"""

RETURN = r"""
covered:
  description: Whether the pull secret has credentials for the image's registry (always true on success).
  returned: always
  type: bool
registry:
  description: Registry host of O(image).
  returned: always
  type: str
  sample: registry.example.com
entry:
  description: The C(auths) key that matched.
  returned: success
  type: str
  sample: registry.example.com
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ocp.kmod_layering.plugins.module_utils._build import pull_secret_covers
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry import RegistryError, parse_pullspec


def main():
    module = AnsibleModule(
        argument_spec=dict(
            pull_secret=dict(type="raw", required=True, no_log=True),
            image=dict(type="str", required=True),
            cluster=dict(type="str", default="the cluster"),
            source=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    cluster = params["cluster"]
    try:
        ref = parse_pullspec(params["image"])
    except RegistryError as exc:
        module.fail_json(msg="image: %s" % exc, covered=False, registry="")
    result = dict(changed=False, covered=False, registry=ref.registry)
    source = params["source"]
    if source:
        # Push credentials (the controller's auth file), not the nodes' pull secret.
        try:
            covered, entry = pull_secret_covers(params["pull_secret"] or "{}", params["image"])
        except RegistryError as exc:
            module.fail_json(msg="Cluster %s: cannot read %s: %s; it must be a dockerconfigjson "
                                 "({\"auths\": {...}}, like podman's auth.json)" % (cluster, source, exc), **result)
        if not covered:
            module.fail_json(
                msg="Cluster %s: %s has no credentials for registry %s, so the layered image cannot be "
                    "pushed to %s; add an auths entry for %s to it (podman login --authfile ... %s) "
                    "and run again" % (cluster, source, ref.registry, ref.name, ref.registry, ref.registry),
                **result)
        result.update(covered=True, entry=entry)
        module.exit_json(**result)
    if not params["pull_secret"]:
        module.fail_json(msg="cluster %s: its pull secret (openshift-config/pull-secret) is empty or missing, so its "
                             "nodes cannot pull %s; add credentials for %s to it (oc set data secret/pull-secret "
                             "-n openshift-config --from-file=.dockerconfigjson=...)" % (cluster, ref.name, ref.registry),
                         **result)
    try:
        covered, entry = pull_secret_covers(params["pull_secret"], params["image"])
    except RegistryError as exc:
        module.fail_json(msg="cluster %s: cannot read its pull secret: %s" % (cluster, exc), **result)
    if not covered:
        module.fail_json(
            msg="cluster %s: its pull secret (openshift-config/pull-secret) has no credentials for registry %s, "
                "so its nodes could not pull the layered image %s; add an auths entry for %s to the cluster's "
                "pull secret (or push to a registry it already covers) and run again"
                % (cluster, ref.registry, ref.name, ref.registry),
            **result)
    result.update(covered=True, entry=entry)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
