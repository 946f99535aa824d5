#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: build_emulation_check
short_description: Check the controller can build images for other CPU architectures
version_added: 0.3.0
description:
  - For each architecture of O(arches) other than the controller's, checks
    that C(podman build --platform linux/<arch>) can run its C(RUN) steps, that is a
    qemu user-mode emulator registered with the kernel's C(binfmt_misc)
    (C(<binfmt_dir>/qemu-<arch>) present, C(enabled), with the C(F) flag so
    it works inside the build's chroot), as Debian's C(qemu-user-static)
    registers it.
  - Fails, naming each architecture and what to install, when one is
    missing; the build role runs it before anything is built or pushed.
  - Reads files only; nothing is changed.
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - ocp.kmod_layering.attributes.read_only
options:
  arches:
    description: Architectures to build for, release (V(aarch64)) or Go (V(arm64)) naming.
    type: list
    elements: str
    required: true
  binfmt_dir:
    description:
      - Where C(binfmt_misc) is mounted.
      - Tests point it at a directory of their own to check the failure without unregistering the host's handler.
    type: path
    default: /proc/sys/fs/binfmt_misc
  host_arch:
    description: The controller's architecture; default what the controller's Python reports (C(uname -m)).
    type: str
"""

EXAMPLES = r"""
- name: Check an aarch64 build can run on this controller
  ocp.kmod_layering.build_emulation_check:
    arches: [x86_64, aarch64]
"""

RETURN = r"""
host_arch:
  description: The controller's architecture (release naming).
  returned: always
  type: str
  sample: x86_64
emulated:
  description: The architectures of O(arches) built under emulation (release naming).
  returned: success
  type: list
  elements: str
  sample: [aarch64]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _arch


def main():
    module = AnsibleModule(
        argument_spec=dict(
            arches=dict(type="list", elements="str", required=True),
            binfmt_dir=dict(type="path", default=_arch.BINFMT_DIR),
            host_arch=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        host = _arch.release_arch(params["host_arch"]) if params["host_arch"] else _arch.host_arch()
        arches = sorted(set(_arch.release_arch(arch) for arch in params["arches"]))
    except _arch.ArchError as exc:
        module.fail_json(msg=str(exc))
    problems = [p for p in (_arch.binfmt_problem(arch, host, params["binfmt_dir"]) for arch in arches) if p]
    emulated = [arch for arch in arches if arch != host]
    if problems:
        module.fail_json(msg=" ".join(problems) + " Nothing was built or pushed.", host_arch=host,
                         emulated=emulated)
    module.exit_json(changed=False, host_arch=host, emulated=emulated)


if __name__ == "__main__":
    main()
