#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: build_host_check
short_description: Check the remote native builders of the architectures to build
version_added: 0.4.0
description:
  - Validates O(build_hosts) (the fleet's C(kmod_build_hosts)), a mapping of architecture to a podman remote
    service that builds that architecture's layered images natively, instead of under qemu user-mode
    emulation on the controller.
  - Each builder is C({url}) (a podman remote URL, C(ssh://user@host[:port]/run/podman/podman.sock), with an
    optional C(identity), the ssh key), or C({connection}) (the name of a C(podman system connection)).
    C(tcp://) URLs (neither encrypted nor authenticated) and URLs carrying a password are refused.
  - For each architecture of O(arches) that has a builder, asks it C(podman info) and checks that it answers
    and that its C(host.arch) is that architecture. Fails naming the architecture, the builder and what to do,
    before anything is built or pushed.
  - Returns who builds each architecture of O(arches) - C(local) (the controller's own architecture),
    C(emulated) (another architecture without a builder; see M(ocp.kmod_layering.build_emulation_check))
    or the builder's name (its C(connection), else its C(url)) - and the podman global options that reach it.
  - Changes nothing, here or on the builders.
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - ocp.kmod_layering.attributes.read_only
options:
  build_hosts:
    description:
      - Architecture (release V(aarch64) or Go V(arm64) naming) to builder, each a mapping with exactly one of
        C(url) or C(connection), and C(identity) (a path) with an C(ssh://) url.
      - Empty (the default) means no remote builder.
    type: raw
    default: {}
  arches:
    description:
      - The architectures this run builds for; only their builders are asked. The whole of O(build_hosts)
        is validated, also when O(arches) is empty.
    type: list
    elements: str
    default: []
  clusters:
    description:
      - Each cluster's own C(kmod_build_hosts) (cluster name to mapping); when given, the module fails
        unless they are all the same (a fleet setting, the builds run once per play).
    type: dict
  host_arch:
    description: The controller's architecture; default what the controller's Python reports (C(uname -m)).
    type: str
  podman:
    description: The podman client to run.
    type: str
    default: podman
  timeout:
    description: Seconds a builder has to answer C(podman info) (needs C(timeout) from coreutils; 0 waits forever).
    type: int
    default: 60
"""

EXAMPLES = r"""
- name: Check the builders of the architectures to build
  ocp.kmod_layering.build_host_check:
    build_hosts:
      aarch64:
        url: ssh://builder@arm-builder.example.com/run/podman/podman.sock
        identity: /home/awx/.ssh/arm-builder
    arches: [x86_64, aarch64]
  register: builders

- name: Build an aarch64 image on its builder
  ansible.builtin.command:
    argv: "{{ ['podman'] + builders.builders.aarch64.podman_args + ['build', '--platform', 'linux/arm64', '.'] }}"
"""

RETURN = r"""
builders:
  description:
    - Per architecture of O(arches) (release naming), who builds it.
    - C(builder) is C(local), C(emulated) or the builder's name; C(remote) whether it is a remote builder;
      C(podman_args) the podman global options that reach it (empty for C(local) and C(emulated)).
    - A remote builder also has C(url), C(connection), C(podman_version) and C(graph_root) (its image store),
      as its C(podman info) said.
  returned: success
  type: dict
  sample:
    x86_64: {builder: local, remote: false, podman_args: []}
    aarch64:
      builder: ssh://builder@arm-builder.example.com/run/podman/podman.sock
      remote: true
      podman_args: [--url, "ssh://builder@arm-builder.example.com/run/podman/podman.sock", --identity, /home/awx/.ssh/arm-builder]
      url: ssh://builder@arm-builder.example.com/run/podman/podman.sock
      connection: null
      podman_version: 4.9.4
      graph_root: /var/lib/containers/storage
configured:
  description: The architectures O(build_hosts) has a builder for (release naming).
  returned: success
  type: list
  elements: str
  sample: [aarch64]
remote:
  description: The architectures of O(arches) built by a remote builder.
  returned: success
  type: list
  elements: str
  sample: [aarch64]
emulated:
  description: The architectures of O(arches) with no builder and not the controller's (built under emulation).
  returned: success
  type: list
  elements: str
  sample: []
host_arch:
  description: The controller's architecture (release naming).
  returned: success
  type: str
  sample: x86_64
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _arch, _build_hosts


def main():
    module = AnsibleModule(
        argument_spec=dict(
            build_hosts=dict(type="raw", default={}),
            arches=dict(type="list", elements="str", default=[]),
            clusters=dict(type="dict"),
            host_arch=dict(type="str"),
            podman=dict(type="str", default="podman"),
            timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    params = module.params
    limit = module.get_bin_path("timeout") if params["timeout"] > 0 else None

    def run(argv):
        return module.run_command(([limit, str(params["timeout"])] if limit else []) + argv)

    try:
        result = _build_hosts.check(
            params["build_hosts"], params["arches"], run,
            host_arch=params["host_arch"] or _arch.host_arch(), podman=params["podman"],
            per_cluster=params["clusters"])
    except (_build_hosts.BuildHostError, _arch.ArchError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
