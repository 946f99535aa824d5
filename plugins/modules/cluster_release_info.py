#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cluster_release_info
short_description: Read the release a cluster runs, check its pools exist and tell their architectures
version_added: 0.3.0
description:
  - What the resolve stage needs from a cluster, read in one module run
    (each module run loads the kubernetes client, about a second of
    controller CPU per cluster). It reads the ClusterVersion's
    C(status.desired.image) (O(read_cluster_version)) and the
    MachineConfigPools and Nodes (O(read_pools)).
  - Fails, naming the cluster, when the ClusterVersion names no release,
    when a pool of O(pool_names) does not exist (listing those the cluster
    has), when a pool's nodes mix architectures, and when O(arch) is set and
    a pool's nodes are of another architecture (the rules of
    M(ocp.kmod_layering.pool_architecture), with pool membership as the
    Machine Config Operator decides it).
  - A pool without nodes takes O(arch) (V(x86_64) for V(auto)), with a warning.
  - A transient API error (429, 5xx, a lost connection) retries the reads,
    O(retries) times, O(retry_delay) seconds apart; any other error fails at
    once, naming the cluster and the request.
  - Reads only, also in check mode.
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - ocp.kmod_layering.cluster
  - ocp.kmod_layering.attributes.cluster_group
  - ocp.kmod_layering.attributes.read_only
requirements:
  - kubernetes >= 24.2.0
options:
  read_cluster_version:
    description: Read the ClusterVersion C(version) and return its C(status.desired.image) as RV(release_image).
    type: bool
    default: true
  read_pools:
    description:
      - Read the MachineConfigPools and Nodes, check every pool of O(pool_names) exists and return each
        one's architecture (RV(pools), RV(arches), RV(nodes)).
    type: bool
    default: true
  pool_names:
    description: The pools to roll out to (C(kmod_pools)).
    type: list
    elements: str
    default: [worker]
  arch:
    description:
      - C(kmod_arch). V(auto) takes each pool's architecture from its nodes.
      - An architecture (release or Go naming) is an assertion every node of the pools must satisfy, and the
        architecture of a pool without nodes.
    type: str
    default: auto
  retries:
    description: How many times the reads are retried after a transient API error (C(kmod_api_retries)).
    type: int
    default: 3
  retry_delay:
    description: Seconds between those retries (C(kmod_api_retry_delay)).
    type: int
    default: 3
seealso:
  - module: ocp.kmod_layering.pool_architecture
  - module: ocp.kmod_layering.ocp_release_image
"""

EXAMPLES = r"""
- name: Read the release and the pools of the cluster
  ocp.kmod_layering.cluster_release_info:
    kubeconfig: /home/admin/fleet/cluster-a/kubeconfig
    cluster_name: cluster-a
    pool_names: [worker, worker-arm64]
  register: cluster

- name: Resolve the release the cluster runs, for each architecture its pools need
  ocp.kmod_layering.ocp_release_image:
    pullspec: "{{ cluster.release_image }}"
    arch: "{{ item }}"
  loop: "{{ cluster.arches }}"
"""

RETURN = r"""
release_image:
  description: The ClusterVersion's C(status.desired.image); null when O(read_cluster_version=false).
  returned: success
  type: str
  sample: quay.io/openshift-release-dev/ocp-release@sha256:0123abcd...
pools:
  description: Pool name => architecture (release naming); null when O(read_pools=false).
  returned: success
  type: dict
  sample: {"worker": "x86_64", "worker-arm64": "aarch64"}
arches:
  description: The distinct architectures of O(pool_names), in the order of their first pool; null when O(read_pools=false).
  returned: success
  type: list
  elements: str
  sample: [x86_64, aarch64]
nodes:
  description: Pool name => node name => architecture; null when O(read_pools=false).
  returned: success
  type: dict
attempts:
  description: How many times the reads were made (1 unless a transient error was retried).
  returned: success
  type: int
  sample: 1
"""

from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule

from ansible_collections.ocp.kmod_layering.plugins.module_utils._cluster_reads import read
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import (
    cluster_module_spec,
    require_positive,
    run_module,
)

USER_AGENT = "ocp.kmod_layering.cluster_release_info"


def main():
    module = AnsibleK8SModule(
        argument_spec=cluster_module_spec(
            read_cluster_version=dict(type="bool", default=True),
            read_pools=dict(type="bool", default=True),
            pool_names=dict(type="list", elements="str", default=["worker"]),
            arch=dict(type="str", default="auto"),
            retries=dict(type="int", default=3),
            retry_delay=dict(type="int", default=3),
        ),
        supports_check_mode=True,
    )
    params = module.params
    require_positive(module, "request_timeout")
    if params["retries"] < 0 or params["retry_delay"] < 0:
        module.fail_json(msg="retries and retry_delay must be 0 or more")
    # The client retries nothing itself: the reads are retried as a whole (read()).
    run_module(module, USER_AGENT, lambda client, _counter: read(client, params), name=params["cluster_name"],
               request_timeout=params["request_timeout"], max_failures=0)


if __name__ == "__main__":
    main()
