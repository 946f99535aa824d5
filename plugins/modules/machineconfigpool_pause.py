#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: machineconfigpool_pause
short_description: Pause MachineConfigPools for an upgrade, and unpause only the ones it paused
version_added: 0.2.0
description:
  - O(paused=true) pauses each pool of O(pools) (C(spec.paused)) and marks it
    with the annotation C(kmod-layering.openshift.io/paused-for) (value
    O(reason)). A pool that is already paused without that annotation was
    paused by someone else; it is left as it is and reported as
    C(paused_by=user).
  - O(paused=false) unpauses only the pools carrying the annotation (and
    removes it), so a pause of the user's survives the upgrade. Since the
    mark is on the pool, a later run (after a failed one, or from another
    controller) still knows which pauses were this collection's.
  - Every pool is checked before the first write. A missing pool, or (when
    pausing) a pool labelled
    C(operator.machineconfiguration.openshift.io/required-for-upgrade) (the
    master pool, whose pause would hold the whole upgrade), fails the module and
    changes nothing.
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
    description: Reads the pools and reports what it would change; writes nothing.
  diff_mode:
    support: full
    description: Shows C(spec.paused) and the annotation of each pool it changes, before and after.
options:
  pools:
    description: The MachineConfigPools to pause or unpause.
    type: list
    elements: str
    required: true
  paused:
    description: V(true) to pause, V(false) to unpause the pools this module paused.
    type: bool
    required: true
  reason:
    description: Value of the annotation on the pools it pauses (what they are paused for).
    type: str
    default: upgrade
seealso:
  - module: ocp.kmod_layering.cluster_upgrade
"""

EXAMPLES = r"""
- name: Hold the worker pool while the control plane upgrades
  ocp.kmod_layering.machineconfigpool_pause:
    pools: [worker]
    paused: true
    reason: upgrade to 4.16.30
  register: paused

- name: Let it roll again (a pool the user paused stays paused)
  ocp.kmod_layering.machineconfigpool_pause:
    pools: [worker]
    paused: false
"""

RETURN = r"""
cluster:
  description: The cluster (O(cluster_name), else the API server URL).
  returned: always
  type: str
pools:
  description: One entry per pool of O(pools), in order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Pool name.
      type: str
    action:
      description: V(pause), V(unpause) or V(none) (what the module did, or would do in check mode).
      type: str
    paused:
      description: Whether the pool is paused afterwards.
      type: bool
    paused_by:
      description:
        - Who holds the pause afterwards. V(kmod_layering) (this module's
          annotation), V(user) (paused without it, left alone), or null.
      type: str
  sample: [{"name": "worker", "action": "pause", "paused": true, "paused_by": "kmod_layering"}]
user_paused:
  description: The pools paused by someone else (left paused).
  returned: always
  type: list
  elements: str
"""

import copy

from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import (
    Failed,
    cluster_module_spec,
    require_positive,
    run_module,
)
from ansible_collections.ocp.kmod_layering.plugins.module_utils._upgrade import (
    PAUSED_FOR_ANNOTATION,
    UpgradeError,
    pause_plan,
)

USER_AGENT = "ocp.kmod_layering.machineconfigpool_pause"


def argument_spec():
    return cluster_module_spec(
        pools=dict(type="list", elements="str", required=True),
        paused=dict(type="bool", required=True),
        reason=dict(type="str", default="upgrade"),
    )


def _pause_view(pool):
    return {"paused": bool((pool.get("spec") or {}).get("paused")),
            "annotation": ((pool.get("metadata") or {}).get("annotations") or {}).get(PAUSED_FOR_ANNOTATION)}


def set_paused(client, params, check_mode):
    pools, _version = client.list("MachineConfigPool")
    try:
        plan = pause_plan(pools, params["pools"], params["paused"], params["reason"])
    except UpgradeError as exc:
        raise Failed("Cluster %s: %s Nothing was changed." % (client.name, exc))
    by_name = dict((p["metadata"]["name"], p) for p in pools)
    entries, before, after = [], {}, {}
    for step in plan:
        pool = by_name[step["name"]]
        if step["patch"] is not None:
            before[step["name"]] = _pause_view(pool)
            if not check_mode:
                pool = client.merge_patch("MachineConfigPool", step["name"], step["patch"])
            else:
                pool = copy.deepcopy(pool)
                pool.setdefault("spec", {})["paused"] = step["patch"]["spec"]["paused"]
                annotations = pool.setdefault("metadata", {}).setdefault("annotations", {})
                annotations[PAUSED_FOR_ANNOTATION] = step["patch"]["metadata"]["annotations"][PAUSED_FOR_ANNOTATION]
            after[step["name"]] = _pause_view(pool)
        entries.append({"name": step["name"], "action": step["action"],
                        "paused": bool((pool.get("spec") or {}).get("paused")), "paused_by": step["paused_by"]})
    changed = any(e["action"] != "none" for e in entries)
    result = dict(changed=changed, cluster=client.name, pools=entries,
                  user_paused=[e["name"] for e in entries if e["paused_by"] == "user"])
    if params.get("_ansible_diff") and changed:
        result["diff"] = {"before": before, "after": after}
    return result


def main():
    module = AnsibleK8SModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    require_positive(module, "request_timeout")
    if not params["pools"]:
        module.fail_json(msg="pools must name at least one MachineConfigPool")
    params["_ansible_diff"] = module._diff
    run_module(module, USER_AGENT, lambda client, _counter: set_paused(client, params, module.check_mode),
               name=params["cluster_name"], request_timeout=params["request_timeout"])


if __name__ == "__main__":
    main()
