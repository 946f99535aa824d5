#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: local_image_prune
short_description: Remove the local podman images this collection made or pulled and no longer needs
version_added: 0.2.0
description:
  - Every release a fleet upgrades to adds a build (a layered image, and the
    Driver Toolkit and RHCOS images it was built from) to the controller's
    podman storage. This module keeps that storage bounded.
  - Records O(used) (the images of this run's builds) in O(state_file), then
    (O(prune)) removes every recorded image not in O(keep) with
    C(podman rmi). Only recorded images are ever removed; an image the user
    pulled or built otherwise is never touched. An image podman refuses to
    remove (a container uses it) stays recorded, with a warning.
  - The registry is not touched; the layered images stay there for the
    clusters and for rollbacks (registry-side retention is the registry's
    business, see the user guide).
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
attributes:
  check_mode:
    support: full
    description: Reports what it would remove; removes and records nothing.
  diff_mode:
    support: none
    description: RV(removed) lists what goes.
options:
  state_file:
    description: The file recording the images this collection made or pulled (JSON).
    type: path
    required: true
  used:
    description:
      - The images of this run's builds, as reference to kind (C(layered),
        C(driver-toolkit), C(rhcos)); recorded as this collection's.
    type: dict
    default: {}
  keep:
    description: References not to remove (the base images of the releases this run builds for).
    type: list
    elements: str
    default: []
  prune:
    description: Remove the recorded images not in O(keep). V(false) only records.
    type: bool
    default: true
  podman_path:
    description: The podman executable.
    type: str
    default: podman
seealso:
  - module: containers.podman.podman_image
"""

EXAMPLES = r"""
- name: Keep the controller's podman storage to what the fleet's releases need
  ocp.kmod_layering.local_image_prune:
    state_file: ~/.cache/ocp.kmod_layering/local-images.json
    used:
      registry.example.com/infra/rhcos-kmods:kmods-3f9a2c: layered
      quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:9a1f0c3b2d4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a: driver-toolkit
    keep:
      - quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:9a1f0c3b2d4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a
  register: pruned
"""

RETURN = r"""
removed:
  description: The images removed (would be, in check mode).
  returned: always
  type: list
  elements: dict
  contains:
    reference:
      description: The image reference.
      type: str
    kind:
      description: C(layered), C(driver-toolkit) or C(rhcos).
      type: str
    size:
      description: Its size in bytes, as podman reports it.
      type: int
bytes_freed:
  description: The sum of the removed images' sizes (layers shared with kept images are not freed).
  returned: always
  type: int
recorded:
  description: The references recorded after the run (kept or still present).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _prune


def image_size(module, podman, reference):
    """The image's size, or None when podman does not have it."""
    rc, out, _err = module.run_command([podman, "image", "inspect", "--format", "{{.Size}}", reference])
    if rc != 0:
        return None
    try:
        return int(out.strip().splitlines()[0])
    except (ValueError, IndexError):
        return 0


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state_file=dict(type="path", required=True),
            used=dict(type="dict", default={}),
            keep=dict(type="list", elements="str", default=[]),
            prune=dict(type="bool", default=True),
            podman_path=dict(type="str", default="podman"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    podman = module.get_bin_path(params["podman_path"], required=True)
    recorded = _prune.load_state(params["state_file"])
    state, candidates = _prune.plan(recorded, params["used"], params["keep"])
    removed, warnings = [], []
    for reference in candidates if params["prune"] else []:
        size = image_size(module, podman, reference)
        if size is None:
            state.pop(reference)  # gone already (removed by hand, or never pulled)
            continue
        if not module.check_mode:
            rc, _out, err = module.run_command([podman, "rmi", reference])
            if rc != 0:
                warnings.append("podman rmi %s failed, kept: %s" % (reference, err.strip()))
                continue
        state.pop(reference)
        removed.append({"reference": reference, "kind": recorded.get(reference, {}).get("kind")
                        or params["used"].get(reference), "size": size})
    if not module.check_mode and state != recorded:
        _prune.save_state(params["state_file"], state)
    for warning in warnings:
        module.warn(warning)
    module.exit_json(changed=bool(removed), removed=removed, bytes_freed=sum(r["size"] for r in removed),
                     recorded=sorted(state))


if __name__ == "__main__":
    main()
