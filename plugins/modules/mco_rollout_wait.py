#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mco_rollout_wait
short_description: Wait until MachineConfigPools have rolled out a MachineConfig or OS image
version_added: 0.1.0
description:
  - Waits until the Machine Config Operator has rendered a MachineConfig
    and/or a layered OS image (C(osImageURL)) into the rendered config of each
    pool in O(pools), and every node of the pool has been updated to it.
  - A pool is done when C(spec.configuration.name) is a rendered config that
    includes the target (O(machine_config) in its C(source), and/or
    O(os_image_url) as the rendered MachineConfig's C(spec.osImageURL)),
    C(status.observedGeneration) has caught up with C(metadata.generation),
    C(status.configuration.name) equals it, C(Updated=True), updated ==
    ready == C(machineCount), degraded == 0, and every node of the pool is
    C(Done) on it. C(Updated=True) about the B(old) rendered config, which a
    pool reports until the MCO has picked the change up, is never taken for
    done, so no pause is needed before calling this module.
  - Watch-based. It lists pools and nodes once, then watches both from the
    list's C(resourceVersion) and re-evaluates on every event. A watch that
    ends or drops is resumed from the last C(resourceVersion); on C(410 Gone)
    it lists again. There is no polling interval; the wait is bounded by
    O(timeout).
  - Before waiting, it lists the MachineConfigs and fails when the pool's
    C(machineConfigSelector) does not select O(machine_config) (a wrong role
    label), or when another (non-generated) MachineConfig that sorts after
    ours sets a different C(osImageURL); either way the pool would never
    render the target.
  - Progress (pool counts and every node state change) is appended, one
    timestamped line per change, to O(progress_file); follow a rollout with
    C(tail -f) on it. Each line names the cluster, so several clusters
    (forks) can share one file.
  - The module only reads; it always returns C(changed=false). Its requests
    carry the User-Agent C(ocp.kmod_layering.mco_rollout_wait), so they can
    be told apart in the API server's audit log.
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - ocp.kmod_layering.attributes.cluster_group
requirements:
  - kubernetes >= 24.2.0
  - PyYAML >= 3.11
attributes:
  check_mode:
    support: full
    description:
      - In check mode the pools are evaluated once and reported without
        waiting; a degraded or paused pool is reported, not failed.
  diff_mode:
    support: none
    description: Nothing is changed, so there is no diff.
options:
  pools:
    description:
      - Names of the MachineConfigPools to wait for.
    type: list
    elements: str
    default: [worker]
  machine_config:
    description:
      - Name of the MachineConfig whose rollout to wait for; the pool's
        rendered config must list it in C(spec.configuration.source).
      - Without O(os_image_url), its C(spec.osImageURL) (if it sets one) is
        read and becomes the image target too. This keeps a change of image
        in an existing MachineConfig from being taken as done on the old
        rendered config, which lists the same MachineConfig.
      - At least one of O(machine_config), O(os_image_url) and
        O(absent_machine_configs) is required.
    type: str
  absent_machine_configs:
    description:
      - Names of MachineConfigs the pool's rendered config must B(not) list
        in C(spec.configuration.source), to wait for the rollout of their
        deletion (the rollback and removal of ours). No image check is made
        for them; with O(os_image_url) the image must match too.
    type: list
    elements: str
    version_added: 0.2.0
  os_image_url:
    description:
      - The OS image (pinned by digest) the pool's rendered config must
        carry as C(spec.osImageURL).
    type: str
  timeout:
    description:
      - Seconds to wait at most, for all pools together.
    type: int
    default: 3600
  request_timeout:
    description:
      - Seconds one list or read of the API may take before it is given up
        and retried (with backoff, within O(timeout)); also the slack over a
        watch's C(timeoutSeconds) after which a silent watch connection is
        dropped and resumed. A stalled API connection therefore never holds
        the wait past O(timeout).
    type: int
    default: 30
  on_paused:
    description:
      - What to do about a pool whose C(spec.paused) holds the rollout.
      - V(fail) fails at once, telling to unpause the pool.
      - V(wait) waits (within O(timeout)) until someone unpauses it and the
        rollout finishes.
      - V(ignore) does not wait for that pool; it is returned with phase
        V(paused) and a warning.
    type: str
    choices: [fail, wait, ignore]
    default: fail
  on_degraded:
    description:
      - What to do when a node of a pool is C(Degraded) or C(Unreconcilable),
        or the pool reports C(NodeDegraded)/C(RenderDegraded).
      - V(fail) fails at once, naming the node(s) and the MCO's reason.
      - V(wait) keeps waiting (within O(timeout)) in case it recovers.
    type: str
    choices: [fail, wait]
    default: fail
  progress_file:
    description:
      - File to append progress lines to while waiting (created if missing,
        with its directory).
        One line per change of a pool's counts or a node's MCO state, each
        starting with a UTC timestamp and the cluster's API URL.
      - Without it, progress is only returned at the end, in RV(progress).
    type: path
notes:
  - Rollouts take minutes per node (drain, OS rebase, reboot); size
    O(timeout) for C(machineCount / maxUnavailable) batches.
  - A change of a MachineConfig that keeps the same C(osImageURL) (for
    example only a file) cannot be told from the old rendered config by
    name; the collection changes the image digest for every content change.
  - The watches use the API server's C(timeoutSeconds) and a client read
    timeout, so a silent connection is noticed and resumed.
seealso:
  - module: kubernetes.core.k8s
"""

EXAMPLES = r"""
- name: Wait for the worker pool to run our layered image
  ocp.kmod_layering.mco_rollout_wait:
    machine_config: 99-worker-kmod-layering
    os_image_url: "{{ kmod_image_ref }}"   # registry.example.com/kmods/rhcos@sha256:...
    pools: [worker]
    timeout: 7200
    progress_file: "{{ playbook_dir }}/rollout-progress.log"   # tail -f it
  delegate_to: localhost
  register: rollout

- name: Same, with credentials from module_defaults (AWX credential env K8S_AUTH_*)
  module_defaults:
    group/ocp.kmod_layering.cluster:
      host: "{{ api_url }}"
      api_key: "{{ api_token }}"
      ca_cert: "{{ api_ca_file }}"
  ocp.kmod_layering.mco_rollout_wait:
    machine_config: 99-worker-kmod-layering
    pools: [worker, infra]
    on_paused: wait
  delegate_to: localhost

- name: Report where a rollout stands, without waiting
  ocp.kmod_layering.mco_rollout_wait:
    kubeconfig: "{{ cluster_kubeconfig }}"
    machine_config: 99-worker-kmod-layering
  check_mode: true
  delegate_to: localhost
  register: rollout_state

- name: Show pool phases
  ansible.builtin.debug:
    msg: "{{ rollout_state.pools | map(attribute='phase') | list }}"
"""

RETURN = r"""
cluster:
  description: The API server URL the module talked to.
  returned: always
  type: str
  sample: https://api.lab-a.example.com:6443
target:
  description: What the pools were waited for.
  returned: always
  type: dict
  contains:
    machine_config:
      description: O(machine_config), or null.
      type: str
    absent_machine_configs:
      description: O(absent_machine_configs) (empty when not given).
      type: list
      elements: str
    os_image_url:
      description: O(os_image_url), or the one read from O(machine_config), or null.
      type: str
done:
  description: True when every pool (except ignored paused ones) is done.
  returned: always
  type: bool
elapsed_seconds:
  description: Seconds the module spent, listing and watching included.
  returned: always
  type: float
  sample: 184.2
api_requests:
  description:
    - Number of HTTP requests made to the API server (discovery, lists,
      gets and watch connections), a measure of the load the wait put on it.
  returned: always
  type: int
  sample: 9
progress:
  description: The progress lines written during the wait (also to O(progress_file)), without timestamps.
  returned: always
  type: list
  elements: str
pools:
  description: The state of each pool in O(pools), as last seen.
  returned: when the pools could be read
  type: list
  elements: dict
  contains:
    name:
      description: Pool name.
      type: str
    phase:
      description: One of V(pending) (the MCO has not picked the change up),
        V(progressing), V(done), V(degraded), V(paused).
      type: str
    done:
      description: Whether the pool is done.
      type: bool
    reason:
      description: Why the pool is not done (pending detail, degraded nodes and their reasons, ...).
      type: str
    rendered_config:
      description: The rendered config the pool converges to (C(spec.configuration.name)).
      type: str
      sample: rendered-worker-b81e4d2c9a7f60e3d5c4b3a29180f7e6
    status_config:
      description: The rendered config all nodes run (C(status.configuration.name)).
      type: str
    target_included:
      description: Whether the rendered config carries the target.
      type: bool
    paused:
      description: C(spec.paused).
      type: bool
    generation:
      description: C(metadata.generation).
      type: int
    observed_generation:
      description: C(status.observedGeneration).
      type: int
    machine_count:
      description: C(status.machineCount).
      type: int
    updated_machine_count:
      description: C(status.updatedMachineCount).
      type: int
    ready_machine_count:
      description: C(status.readyMachineCount).
      type: int
    unavailable_machine_count:
      description: C(status.unavailableMachineCount).
      type: int
    degraded_machine_count:
      description: C(status.degradedMachineCount).
      type: int
    conditions:
      description: Pool condition statuses by type.
      type: dict
      sample: {"Updated": "True", "Updating": "False", "Degraded": "False"}
    nodes:
      description: Each node of the pool, from the MCO's node annotations.
      type: list
      elements: dict
      contains:
        name:
          description: Node name.
          type: str
        state:
          description: C(machineconfiguration.openshift.io/state) (C(Done), C(Working), C(Degraded), ...).
          type: str
        reason:
          description: C(machineconfiguration.openshift.io/reason).
          type: str
        current_config:
          description: C(machineconfiguration.openshift.io/currentConfig).
          type: str
        desired_config:
          description: C(machineconfiguration.openshift.io/desiredConfig).
          type: str
        ready:
          description: The node's C(Ready) condition is True.
          type: bool
        unschedulable:
          description: The node is cordoned.
          type: bool
        updated:
          description: The node is C(Done) on the pool's rendered config.
          type: bool
        degraded:
          description: The node's state is C(Degraded) or C(Unreconcilable).
          type: bool
    degraded_nodes:
      description: The degraded nodes, with state and reason.
      type: list
      elements: dict
    message:
      description: A one-line human summary of the pool.
      type: str
    pickup_seconds:
      description: Seconds from the start of the wait until the pool's
        rendered config carried the target (0 if it already did); null if never.
      type: float
    done_seconds:
      description: Seconds from the start of the wait until the pool was done; null if never.
      type: float
"""

import time

from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import cluster_argument_spec, run_module
from ansible_collections.ocp.kmod_layering.plugins.module_utils._mco import RolloutTarget
from ansible_collections.ocp.kmod_layering.plugins.module_utils._mco_wait import RolloutWaiter

USER_AGENT = "ocp.kmod_layering.mco_rollout_wait"


def argument_spec():
    return cluster_argument_spec(
        pools=dict(type="list", elements="str", default=["worker"]),
        machine_config=dict(type="str"),
        os_image_url=dict(type="str"),
        absent_machine_configs=dict(type="list", elements="str"),
        timeout=dict(type="int", default=3600),
        request_timeout=dict(type="int", default=30),
        on_paused=dict(type="str", choices=["fail", "wait", "ignore"], default="fail"),
        on_degraded=dict(type="str", choices=["fail", "wait"], default="fail"),
        progress_file=dict(type="path"),
    )


def main():
    module = AnsibleK8SModule(
        argument_spec=argument_spec(),
        required_one_of=[["machine_config", "os_image_url", "absent_machine_configs"]],
        supports_check_mode=True,
    )
    params = module.params
    for name in ("timeout", "request_timeout"):
        if params[name] <= 0:
            module.fail_json(msg="%s must be a positive number of seconds" % name)
    if not params["pools"]:
        module.fail_json(msg="pools must name at least one MachineConfigPool")
    target = RolloutTarget(params["machine_config"], params["os_image_url"], params["absent_machine_configs"])
    run_module(module, USER_AGENT,
               lambda client, counter: RolloutWaiter(client, params, target, counter, module.check_mode).run(),
               request_timeout=params["request_timeout"], deadline=time.monotonic() + params["timeout"])


if __name__ == "__main__":
    main()
