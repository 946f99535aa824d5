#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mco_node_state
short_description: Verify a layered image from the nodes' machine-config state, reading only
version_added: 0.2.0
description:
  - The read-only verification of a rollout; no pod, no namespace, nothing
    written. For each node of O(pools) (the nodes the Machine Config
    Operator manages in that pool, by the MCO's rule) it reads the node's
    machine-config annotations. A node passes when its state is C(Done) on
    its pool's rendered config (C(spec.configuration.name)) and that
    config's C(osImageURL) is O(expected_image). The machine-config daemon
    sets C(currentConfig) only after the node booted that image.
  - Loaded modules and their parameters are not read (that needs a debug
    pod on the node, M(ocp.kmod_layering.node_inspect)).
  - Replaces C(ocp.kmod_layering.node_inspect) with C(method=mco_state)
    (deprecated), whose result it returns.
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - ocp.kmod_layering.cluster
  - ocp.kmod_layering.cluster.expected_kernel
  - ocp.kmod_layering.cluster.expected_per_pool
  - ocp.kmod_layering.attributes.cluster_group
  - ocp.kmod_layering.attributes.read_only
requirements:
  - kubernetes >= 24.2.0
options:
  pools:
    description: The MachineConfigPools whose nodes are verified.
    type: list
    elements: str
    default: [worker]
  expected_image:
    description: The image the nodes must run, pinned by digest (C(repo@sha256:...)).
    type: str
  expected_modules:
    description:
      - The kernel modules of the image, as C(kmod_modules) entries (C(name),
        C(options), C(load_at_boot)); recorded in the report.
    type: list
    elements: dict
seealso:
  - module: ocp.kmod_layering.node_inspect
  - module: ocp.kmod_layering.convergence_check
"""

EXAMPLES = r"""
- name: Verify the worker pool from the MCO's node state
  ocp.kmod_layering.mco_node_state:
    pools: [worker]
    expected_image: registry.example.com/infra/rhcos-kmods@sha256:0c4e2b7a9d1f3e5a7c9b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a3c5b7d9f2e4a
    expected_modules: "{{ kmod_modules }}"
    cluster_name: "{{ inventory_hostname }}"
  register: state

- name: Fail unless every node runs the image
  ansible.builtin.assert:
    that: state.report.verdict == 'pass'
    fail_msg: "{{ state.report.reasons | join('; ') }}"
"""

RETURN = r"""
cluster:
  description: The API server URL the module talked to.
  returned: always
  type: str
  sample: https://api.lab-a.example.com:6443
elapsed_seconds:
  description: Seconds the module spent.
  returned: always
  type: float
nodes:
  description: Every node of O(pools).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Node name.
      type: str
    pool:
      description: The MachineConfigPool of the node.
      type: str
report:
  description:
    - The cluster's verification report, in the shape of M(ocp.kmod_layering.node_inspect)'s
      C(report) (the verify role writes either as C(<kmod_report_dir>/<cluster>.json)).
    - Per node, C(booted_image) is the C(osImageURL) of the rendered config the node is
      C(Done) on, and C(modules) what the image records (loaded modules are not read).
  returned: always
  type: dict
  contains:
    verdict:
      description: V(pass) (every node is Done on the image) or V(fail).
      type: str
    method:
      description: Always V(mco_state).
      type: str
    counts:
      description: C(nodes), C(passed), C(failed).
      type: dict
      sample: {"nodes": 3, "passed": 2, "failed": 1}
    reasons:
      description: Why nodes failed, one sentence each, naming the node.
      type: list
      elements: str
    nodes:
      description: One verdict per node (C(node), C(pool), C(verdict), C(reasons), C(booted_image), C(image_ok)).
      type: list
      elements: dict
    table:
      description: The report as rows of the fleet table.
      type: list
      elements: str
"""


from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.ocp.kmod_layering.plugins.module_utils._inspect import expected_modules_problem
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import (
    cluster_module_spec,
    require_positive,
    run_module,
)
from ansible_collections.ocp.kmod_layering.plugins.module_utils._node_inspector import mco_state_result

USER_AGENT = "ocp.kmod_layering.mco_node_state"


def argument_spec():
    return cluster_module_spec(
        pools=dict(type="list", elements="str", default=["worker"]),
        expected_image=dict(type="str"),
        expected_modules=dict(type="list", elements="dict"),
        expected_kernel=dict(type="str"),
        expected_pool_images=dict(type="dict", default={}),
        expected_pool_kernels=dict(type="dict", default={}),
    )


def main():
    module = AnsibleK8SModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    require_positive(module, "request_timeout")
    if not params["pools"]:
        module.fail_json(msg="pools must name at least one MachineConfigPool")
    problem = expected_modules_problem(params["expected_modules"])
    if problem:
        module.fail_json(msg=problem)

    def run(client, _counter):
        result = mco_state_result(client, params)
        for key in ("namespace", "image", "pods_created", "pods_left"):
            result.pop(key)
        for node in result["nodes"]:
            node.pop("commands")
            node.pop("ok")
        return result
    run_module(module, USER_AGENT, run, name=params["cluster_name"], request_timeout=params["request_timeout"])


if __name__ == "__main__":
    main()
