#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cluster_upgrade_target
short_description: Read a cluster's version and choose the release it upgrades to, reading only
version_added: 0.2.0
description:
  - Reads the ClusterVersion C(version) and returns the version the cluster
    runs, the updates it lists (C(status.availableUpdates), newest first) and
    the release an upgrade would go to, RV(target).
  - With O(requested) (a version or a release image pullspec) the target is
    that release, which must be one of the listed updates (or the release the
    cluster already runs or is upgrading to); without it, the newest listed
    update (the cluster's recommended update). Older versions are refused
    (OpenShift does not downgrade).
  - Nothing is written; the playbooks resolve and build the target's image
    from this before anything changes on the cluster.
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
  requested:
    description:
      - The release to upgrade to, a version (C(4.16.30)) or a release image
        pullspec. Empty or omitted, the newest of C(status.availableUpdates).
    type: str
  pools:
    description:
      - The MachineConfigPools the upgrade will pause (those carrying our
        MachineConfig). When there is an upgrade to start or to finish, each
        must exist and must not be required for the upgrade (label
        C(operator.machineconfiguration.openshift.io/required-for-upgrade),
        the master pool), else the module fails, before anything is built
        or written.
    type: list
    elements: str
seealso:
  - module: ocp.kmod_layering.cluster_upgrade
"""

EXAMPLES = r"""
- name: Choose the release the cluster upgrades to (its recommended update)
  ocp.kmod_layering.cluster_upgrade_target:
    cluster_name: "{{ inventory_hostname }}"
  register: upgrade_target

- name: Stop when the cluster lists no update
  ansible.builtin.assert:
    that: upgrade_target.target is not none
    fail_msg: "{{ inventory_hostname }} runs {{ upgrade_target.current_version }} and lists no update"
"""

RETURN = r"""
cluster:
  description: The cluster (O(cluster_name), else the API server URL).
  returned: always
  type: str
current_version:
  description: The version the cluster last completed.
  returned: always
  type: str
  sample: 4.12.77
desired:
  description: C(status.desired) (C(version), C(image)), the release the cluster runs or moves to.
  returned: always
  type: dict
upgrading:
  description: Whether an upgrade is under way (C(Progressing=True) with a C(Partial) history entry).
  returned: always
  type: bool
available_updates:
  description: C(status.availableUpdates) as C(version) and C(image), newest first.
  returned: always
  type: list
  elements: dict
  sample: [{"version": "4.16.30", "image": "quay.io/openshift-release-dev/ocp-release@sha256:..."}]
target:
  description:
    - The release to upgrade to (C(version), C(image), and C(source)) or null
      when nothing is requested and the cluster lists no update.
    - C(source) is V(requested), V(recommended) (the newest listed update),
      V(current) (the cluster already runs it) or V(in_progress) (the cluster
      is upgrading to it).
  returned: always
  type: dict
  sample: {"version": "4.16.30", "image": "quay.io/openshift-release-dev/ocp-release@sha256:...", "source": "recommended"}
"""

from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.ocp.kmod_layering.plugins.module_utils import _upgrade
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import (
    Failed,
    cluster_module_spec,
    require_positive,
    run_module,
)

USER_AGENT = "ocp.kmod_layering.cluster_upgrade_target"


def argument_spec():
    return cluster_module_spec(
        requested=dict(type="str"),
        pools=dict(type="list", elements="str"),
    )


def choose(client, params):
    cluster_version = client.get("ClusterVersion", "version", missing_ok=True)
    if not cluster_version:
        raise Failed("Cluster %s has no ClusterVersion 'version': is it OpenShift?" % client.name)
    result = dict(
        changed=False,
        cluster=client.name,
        current_version=_upgrade.current_version(cluster_version),
        desired=dict((k, _upgrade.desired(cluster_version).get(k) or "") for k in ("version", "image")),
        upgrading=_upgrade.is_true(cluster_version, "Progressing")
        and (_upgrade.history(cluster_version) or [{}])[0].get("state") == "Partial",
        available_updates=_upgrade.available_updates(cluster_version),
    )
    try:
        result["target"] = _upgrade.choose_target(cluster_version, params["requested"], client.name)
        if params["pools"] and result["target"] and result["target"]["source"] != "current":
            pools, _version = client.list("MachineConfigPool")
            _upgrade.pause_plan(pools, params["pools"], True)
    except _upgrade.UpgradeError as exc:
        message = str(exc)
        if not message.startswith("Cluster "):
            message = "Cluster %s: %s" % (client.name, message)
        raise Failed(message, **result)
    return result


def main():
    module = AnsibleK8SModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    require_positive(module, "request_timeout")
    run_module(module, USER_AGENT, lambda client, _counter: choose(client, params),
               name=params["cluster_name"], request_timeout=params["request_timeout"])


if __name__ == "__main__":
    main()
