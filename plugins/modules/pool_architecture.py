#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pool_architecture
short_description: Tell the CPU architecture of each MachineConfigPool from its nodes
version_added: 0.1.0
description:
  - Reads the architecture of every node of each pool of O(pool_names) from
    the Node objects given (the label C(kubernetes.io/arch) and
    C(status.nodeInfo.architecture), which must agree), with pool membership
    as the Machine Config Operator decides it (a node in a custom pool is not
    in C(worker); C(master) wins).
  - Returns each pool's architecture in release naming (C(x86_64),
    C(aarch64), C(ppc64le), C(s390x)), the names release pullspecs and
    O(arch) use; the Go names the nodes report (C(amd64), C(arm64), ...)
    are mapped by one table.
  - Fails, naming the cluster, the pool and its nodes, when a pool's nodes
    mix architectures (one MachineConfig pins one image, which runs on one
    architecture), and when O(arch) is set and a pool's nodes are of
    another architecture.
  - A pool without nodes takes O(arch), or V(x86_64) when O(arch=auto), with
    a warning (its architecture cannot be read, and a pool scaled to zero is
    common, and failing would stop the fleet for a pool that runs nothing).
  - Pure computation on the controller over objects read before (for
    example with C(kubernetes.core.k8s_info)). No cluster is contacted.
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - ocp.kmod_layering.attributes.read_only
options:
  cluster:
    description: Name of the cluster, for messages (the inventory host).
    type: str
    required: true
  pool_names:
    description: The pools whose architecture is wanted (C(kmod_pools)).
    type: list
    elements: str
    required: true
  pools:
    description:
      - Every MachineConfigPool object of the cluster (their node selectors decide which pool a node is in).
    type: list
    elements: dict
    required: true
  nodes:
    description: Every Node object of the cluster.
    type: list
    elements: dict
    required: true
  arch:
    description:
      - C(kmod_arch). V(auto) takes each pool's architecture from its nodes.
      - An architecture (release or Go naming) is an assertion every node of the pools must satisfy, and the
        architecture of a pool without nodes.
    type: str
    default: auto
"""

EXAMPLES = r"""
- name: Read the pools and nodes
  kubernetes.core.k8s_info:
    api_version: v1
    kind: Node
  register: nodes

- name: The architecture of each pool to roll out to
  ocp.kmod_layering.pool_architecture:
    cluster: "{{ inventory_hostname }}"
    pool_names: [master, worker]
    pools: "{{ pools_info.resources }}"
    nodes: "{{ nodes.resources }}"
    arch: auto
  register: pool_arch
"""

RETURN = r"""
pools:
  description: Pool name => architecture (release naming).
  returned: success
  type: dict
  sample: {"master": "x86_64", "worker": "aarch64"}
arches:
  description: The distinct architectures of O(pool_names), in the order of their first pool.
  returned: success
  type: list
  elements: str
  sample: [x86_64, aarch64]
nodes:
  description: Pool name => node name => architecture.
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ocp.kmod_layering.plugins.module_utils._arch import ArchError, pool_architectures


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cluster=dict(type="str", required=True),
            pool_names=dict(type="list", elements="str", required=True),
            pools=dict(type="list", elements="dict", required=True),
            nodes=dict(type="list", elements="dict", required=True),
            arch=dict(type="str", default="auto"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = pool_architectures(params["cluster"], params["pool_names"], params["pools"], params["nodes"],
                                    params["arch"])
    except ArchError as exc:
        module.fail_json(msg=str(exc))
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
