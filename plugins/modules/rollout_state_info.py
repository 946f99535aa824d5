#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: rollout_state_info
short_description: Read the MachineConfigPools, MachineConfigs and ClusterVersion a rollout decides on
version_added: 0.3.0
description:
  - What the rollout entry points (apply, rollback, remove, the upgrade's
    gates) read from a cluster before they write, in one module run (each
    module run loads the kubernetes client, about a second of controller CPU
    per cluster). It reads every MachineConfigPool, every MachineConfig, and
    with O(read_cluster_version) the ClusterVersion C(version).
  - The MachineConfigs come without C(spec.config) (their Ignition config;
    files and users, possibly secrets, stay out of the results and of AWX's
    job events), C(metadata.managedFields) and the
    C(kubectl.kubernetes.io/last-applied-configuration) annotation; their
    C(osImageURL), kernel settings, labels, annotations and owner references
    stay.
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
    description: Also read the ClusterVersion C(version) (a cluster mid-upgrade is refused by the rollout's gates).
    type: bool
    default: false
  retries:
    description: How many times the reads are retried after a transient API error (C(kmod_api_retries)).
    type: int
    default: 3
  retry_delay:
    description: Seconds between those retries (C(kmod_api_retry_delay)).
    type: int
    default: 3
seealso:
  - module: ocp.kmod_layering.machineconfig_plan
"""

EXAMPLES = r"""
- name: Read what the rollout decides on
  ocp.kmod_layering.rollout_state_info:
    kubeconfig: /home/admin/fleet/cluster-a/kubeconfig
    cluster_name: cluster-a
    read_cluster_version: true
  register: state

- name: Check the MachineConfig of the worker pool before anything is written
  ocp.kmod_layering.machineconfig_plan:
    pool: worker
    os_image_url: registry.example.com/kmods/rhcos@sha256:0123abcd...
    gates: true
    pools: "{{ state.pools }}"
    machineconfigs: "{{ state.machineconfigs | rejectattr('metadata.name', 'match', 'rendered-') | list }}"
    cluster_version: "{{ state.cluster_version | default(omit, true) }}"
"""

RETURN = r"""
pools:
  description: Every MachineConfigPool of the cluster, as the API returns it.
  returned: success
  type: list
  elements: dict
machineconfigs:
  description: Every MachineConfig (rendered ones included), without C(spec.config), C(metadata.managedFields) and the last-applied annotation.
  returned: success
  type: list
  elements: dict
cluster_version:
  description: The ClusterVersion C(version); null when not read or absent.
  returned: success
  type: dict
attempts:
  description: How many times the reads were made (1 unless a transient error was retried).
  returned: success
  type: int
  sample: 1
"""

from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule

from ansible_collections.ocp.kmod_layering.plugins.module_utils._cluster_reads import read_rollout_state
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import (
    cluster_module_spec,
    require_positive,
    run_module,
)

USER_AGENT = "ocp.kmod_layering.rollout_state_info"


def main():
    module = AnsibleK8SModule(
        argument_spec=cluster_module_spec(
            read_cluster_version=dict(type="bool", default=False),
            retries=dict(type="int", default=3),
            retry_delay=dict(type="int", default=3),
        ),
        supports_check_mode=True,
    )
    params = module.params
    require_positive(module, "request_timeout")
    if params["retries"] < 0 or params["retry_delay"] < 0:
        module.fail_json(msg="retries and retry_delay must be 0 or more")
    # The client retries nothing itself: the reads are retried as a whole.
    run_module(module, USER_AGENT,
               lambda client, _counter: read_rollout_state(client, params["read_cluster_version"], params["retries"],
                                                           params["retry_delay"]),
               name=params["cluster_name"], request_timeout=params["request_timeout"], max_failures=0)


if __name__ == "__main__":
    main()
