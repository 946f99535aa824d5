#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cluster_upgrade
short_description: Start an OpenShift cluster upgrade and wait until the cluster version operator completes it
version_added: 0.2.0
description:
  - Sets C(spec.desiredUpdate) of the ClusterVersion C(version) to O(version)
    (and O(image)), as C(oc adm upgrade --to) does, then (O(wait)) follows the
    upgrade with watches on the ClusterVersion, the ClusterOperators and the
    MachineConfigPools until the newest C(status.history) entry is
    C(Completed) for that version.
  - The cluster version operator completes an upgrade when every
    ClusterOperator reports the new version; the machine-config operator
    does so once the pools labelled
    C(operator.machineconfiguration.openshift.io/required-for-upgrade) (the
    master pool) run the new rendering. Paused pools do not hold it; they
    roll when they are unpaused (M(ocp.kmod_layering.machineconfigpool_pause)).
  - Idempotent. A cluster already on O(version) is left alone
    (C(changed=false)); a cluster already upgrading to it is only waited for;
    a cluster upgrading to another release fails the module before anything
    is written.
  - Fails, naming what holds the upgrade (a degraded ClusterOperator, a
    required pool that is not updated), when the cluster version operator
    does not accept the release (C(ReleaseAccepted=False)), when it reports
    C(Failing=True) on its way to the release for O(failing_timeout) seconds
    in a row, or after
    O(timeout).
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - ocp.kmod_layering.cluster
  - ocp.kmod_layering.attributes.cluster_group
requirements:
  - kubernetes >= 24.2.0
attributes:
  check_mode:
    support: full
    description: Reads the cluster and says whether it would ask for the upgrade; writes nothing, waits for nothing.
  diff_mode:
    support: none
    description: The change is one field, C(spec.desiredUpdate); RV(from_version) and RV(to_version) say it.
options:
  version:
    description:
      - The OpenShift version to upgrade to (C(4.16.30)).
      - Choose it with M(ocp.kmod_layering.cluster_upgrade_target) (the
        newest of C(status.availableUpdates), or a release you name).
    type: str
    required: true
  image:
    description:
      - The release image of O(version), by digest, as C(status.availableUpdates)
        lists it. Without it the cluster version operator looks O(version) up
        in its available updates.
    type: str
  wait:
    description: Wait until the upgrade is C(Completed). Without it the module returns once the upgrade is asked for.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for the upgrade to complete.
    type: int
    default: 7200
  failing_timeout:
    description:
      - Seconds the cluster version operator may report C(Failing=True) in a
        row, while it works towards the target release, before the module
        gives up (it often clears on its own while operators roll). A
        C(Failing=True) from reconciling the old release, before the CVO takes
        the upgrade, does not count.
    type: int
    default: 900
  progress_file:
    description:
      - File the progress lines are appended to as they happen (line
        buffered; C(tail -f) it), one line per change of the upgrade's state.
    type: path
seealso:
  - module: ocp.kmod_layering.cluster_upgrade_target
  - module: ocp.kmod_layering.machineconfigpool_pause
  - module: ocp.kmod_layering.mco_rollout_wait
  - name: Updating a cluster using the CLI (OpenShift documentation)
    description: C(oc adm upgrade --to), which this module does through the API.
    link: https://docs.openshift.com/container-platform/latest/updating/updating_a_cluster/updating-cluster-cli.html
"""

EXAMPLES = r"""
- name: Upgrade the cluster to 4.16.30 and wait for the control plane
  ocp.kmod_layering.cluster_upgrade:
    version: 4.16.30
    image: quay.io/openshift-release-dev/ocp-release@sha256:2d9d1c0f3b8e5a7c6d4e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c
    cluster_name: "{{ inventory_hostname }}"
    progress_file: /var/tmp/upgrade-progress.log
  register: upgrade

- name: Say how long it took
  ansible.builtin.debug:
    msg: "{{ upgrade.from_version }} -> {{ upgrade.to_version }} in {{ upgrade.elapsed_seconds }}s"
"""

RETURN = r"""
cluster:
  description: The cluster (O(cluster_name), else the API server URL).
  returned: always
  type: str
from_version:
  description: The version the cluster had completed when the module started.
  returned: always
  type: str
  sample: 4.12.77
to_version:
  description: O(version).
  returned: always
  type: str
  sample: 4.16.30
image:
  description: O(image), or an empty string.
  returned: always
  type: str
phase:
  description:
    - Where the upgrade is when the module returns. V(completed); V(progressing)
      (O(wait=false), or check mode); V(not_started) (check mode, or the
      cluster version operator has not acted on the request yet);
      V(refused) and V(upgrading_elsewhere) come with a failure.
  returned: always
  type: str
  sample: completed
message:
  description: The cluster version operator's own words for the phase (its C(Progressing) condition).
  returned: always
  type: str
  sample: Cluster version is 4.16.30
done:
  description: Whether the upgrade to O(version) is C(Completed).
  returned: always
  type: bool
history:
  description: The newest five C(status.history) entries (state, version, image, startedTime, completionTime).
  returned: always
  type: list
  elements: dict
holders:
  description:
    - What still holds the upgrade, one phrase each (degraded or unavailable
      ClusterOperators, operators not on O(version) yet, required pools not
      updated). Empty once it is done.
  returned: always
  type: list
  elements: str
  sample: ["ClusterOperator(s) not on 4.16.30 yet: machine-config", "MachineConfigPool master (required for the upgrade): 1 of 3 machines updated"]
progress:
  description: The progress lines, as written to O(progress_file).
  returned: always
  type: list
  elements: str
elapsed_seconds:
  description: Seconds the module spent.
  returned: always
  type: float
api_requests:
  description: API requests the module made (watches count once per connection).
  returned: always
  type: int
"""

import time

from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import (
    cluster_module_spec,
    require_positive,
    run_module,
)
from ansible_collections.ocp.kmod_layering.plugins.module_utils._upgrade import version_key
from ansible_collections.ocp.kmod_layering.plugins.module_utils._upgrade_wait import UpgradeWaiter

USER_AGENT = "ocp.kmod_layering.cluster_upgrade"


def argument_spec():
    return cluster_module_spec(
        version=dict(type="str", required=True),
        image=dict(type="str"),
        wait=dict(type="bool", default=True),
        timeout=dict(type="int", default=7200),
        failing_timeout=dict(type="int", default=900),
        progress_file=dict(type="path"),
    )


def main():
    module = AnsibleK8SModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    require_positive(module, "timeout", "failing_timeout", "request_timeout")
    if version_key(params["version"]) is None:
        module.fail_json(msg="version %r is not an OpenShift version (like 4.16.30)" % params["version"])
    if params["image"] and "@sha256:" not in params["image"]:
        module.fail_json(msg="image %s must be pinned by digest (repo@sha256:...), as availableUpdates lists it"
                         % params["image"])
    target = {"version": params["version"], "image": params["image"] or ""}
    run_module(module, USER_AGENT,
               lambda client, counter: UpgradeWaiter(client, params, target, counter, module.check_mode).run(),
               name=params["cluster_name"], request_timeout=params["request_timeout"],
               deadline=time.monotonic() + params["timeout"])


if __name__ == "__main__":
    main()
