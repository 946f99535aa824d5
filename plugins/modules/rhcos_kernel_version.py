#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: rhcos_kernel_version
short_description: Find the kernel version of an RHCOS image, cross-checked with its Driver Toolkit
version_added: 0.1.0
description:
  - Reads an RHCOS (OS) image over the registry API and finds its kernel
    version without pulling the image.
  - Reads the manifest and config, then layers from the B(last) back, and
    stops reading as soon as the kernel is found. A last "metalayer" with
    C(/usr/share/openshift/base/meta.json) (rpmdb package list) answers
    first; otherwise the path C(/usr/lib/modules/<kver>/vmlinuz) (or
    C(/lib/modules/...)) gives the version. The C(ostree.linux) label is
    never used (some images set it to C(true)).
  - With O(driver_toolkit_image), also reads the Driver Toolkit's
    C(/etc/driver-toolkit-release.json) from its last layer (cross-checked
    with its C(kernel-version) label) and fails when the two kernels
    differ, unless O(allow_kernel_mismatch).
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - ocp.kmod_layering.attributes.registry_group
  - ocp.kmod_layering.attributes.read_only
  - ocp.kmod_layering.registry
options:
  image:
    description:
      - Pullspec of the RHCOS image (tag or digest), for example the
        RV(ocp.kmod_layering.ocp_release_image#module:os_image) of a release.
    type: str
    required: true
  driver_toolkit_image:
    description:
      - Pullspec of the Driver Toolkit image of the same release, to
        cross-check its kernel against the RHCOS kernel.
    type: str
  arch:
    description:
      - Platform to read when an image is a manifest list (OpenShift naming).
    type: str
    default: x86_64
    choices: [x86_64, aarch64, ppc64le, s390x]
  allow_kernel_mismatch:
    description:
      - Do not fail when the Driver Toolkit kernel differs from the RHCOS
        kernel (RV(kernel_match) is then V(false)). A module built against
        the wrong kernel is refused by the nodes.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Kernel of the release's RHCOS, checked against its DTK
  ocp.kmod_layering.rhcos_kernel_version:
    image: "{{ release.os_image }}"
    driver_toolkit_image: "{{ release.driver_toolkit_image }}"
    auth_file: /run/secrets/pull-secret.json
    cache_dir: ~/.cache/ocp-kmod
  delegate_to: localhost
  register: kernel

- name: Show it
  ansible.builtin.debug:
    msg: "{{ kernel.kernel_version }} (from {{ kernel.source }})"
"""

RETURN = r"""
kernel_version:
  description: Kernel version (C(uname -r)) of the RHCOS image.
  returned: success
  type: str
  sample: 5.14.0-284.25.1.el9_2.x86_64
source:
  description:
    - Where the kernel version was found, C(layer <i>/<n> <path>) (layers
      counted from the first, 1-based) or C(metalayer meta.json (layer <i>/<n> <path>)).
  returned: success
  type: str
  sample: layer 3/4 usr/lib/modules/5.14.0-284.25.1.el9_2.x86_64/vmlinuz
image:
  description: The RHCOS image pinned by digest.
  returned: success
  type: str
image_digest:
  description: Registry digest of the RHCOS image.
  returned: success
  type: str
dtk_kernel_version:
  description: Kernel version of the Driver Toolkit, or null without O(driver_toolkit_image).
  returned: success
  type: str
  sample: 5.14.0-284.25.1.el9_2.x86_64
dtk_source:
  description: Where the Driver Toolkit kernel version was found.
  returned: when O(driver_toolkit_image) is given
  type: str
  sample: layer 5/5 etc/driver-toolkit-release.json
dtk_rt_kernel_version:
  description: RT kernel version of the Driver Toolkit, if it names one.
  returned: when O(driver_toolkit_image) is given
  type: str
driver_toolkit_image:
  description: The Driver Toolkit image pinned by digest.
  returned: when O(driver_toolkit_image) is given
  type: str
kernel_match:
  description: Whether the Driver Toolkit kernel equals the RHCOS kernel; null without O(driver_toolkit_image).
  returned: success
  type: bool
layers_read:
  description: Layers downloaded (or read from the blob cache) over both images.
  returned: success
  type: int
bytes_fetched:
  description: Bytes of image content received from registries; 0 when the cache served everything.
  returned: success
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry_args import (
    REGISTRY_REQUIRED_TOGETHER,
    registry_argument_spec,
    registry_client,
)
from ansible_collections.ocp.kmod_layering.plugins.module_utils._kernel import (
    dtk_kernel,
    kernels_match,
    rhcos_kernel,
)
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry import RegistryError


def main():
    argument_spec = registry_argument_spec()
    argument_spec.update(
        image=dict(type="str", required=True),
        driver_toolkit_image=dict(type="str"),
        arch=dict(type="str", default="x86_64", choices=["x86_64", "aarch64", "ppc64le", "s390x"]),
        allow_kernel_mismatch=dict(type="bool", default=False),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_together=REGISTRY_REQUIRED_TOGETHER,
        supports_check_mode=True,
    )
    params = module.params
    client = None
    result = dict(changed=False, dtk_kernel_version=None, kernel_match=None)
    try:
        client = registry_client(params, user_agent="ocp.kmod_layering.rhcos_kernel_version")
        rhcos = rhcos_kernel(client, params["image"], arch=params["arch"])
        result.update(kernel_version=rhcos["kernel_version"], source=rhcos["source"], image=rhcos["image"],
                      image_digest=rhcos["digest"], layers_read=rhcos["layers_read"])
        if params["driver_toolkit_image"]:
            dtk = dtk_kernel(client, params["driver_toolkit_image"], arch=params["arch"])
            result.update(dtk_kernel_version=dtk["kernel_version"], dtk_source=dtk["source"],
                          dtk_rt_kernel_version=dtk["rt_kernel_version"], driver_toolkit_image=dtk["image"],
                          layers_read=result["layers_read"] + dtk["layers_read"],
                          kernel_match=kernels_match(rhcos["kernel_version"], dtk["kernel_version"]))
    except RegistryError as exc:
        result["bytes_fetched"] = client.bytes_fetched if client else 0
        module.fail_json(msg=str(exc), **result)
    result["bytes_fetched"] = client.bytes_fetched
    if result["kernel_match"] is False and not params["allow_kernel_mismatch"]:
        module.fail_json(
            msg="kernel mismatch: the Driver Toolkit %s has kernel %s but the RHCOS image %s has kernel %s; "
                "a module built with this Driver Toolkit would not load on the nodes (set "
                "allow_kernel_mismatch to accept it)"
                % (result["driver_toolkit_image"], result["dtk_kernel_version"], result["image"],
                   result["kernel_version"]),
            **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
