#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: fleet_summary
short_description: Write the verification table and totals of a fleet
version_added: 0.2.0
description:
  - Builds the fixed-width verification table of every cluster's report (as
    M(ocp.kmod_layering.node_inspect) and M(ocp.kmod_layering.convergence_check)
    return them) and the fleet's totals, and writes them to O(dest) as
    C(summary.txt) and C(summary.json).
  - A cluster of O(clusters) without a report gets a line of its own, "not
    verified", because it failed or was left out before its verification.
  - Runs on the controller; the verify role calls it once for the fleet.
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
attributes:
  check_mode:
    support: full
    description: Computes the table and totals and reports whether the files would change; writes nothing.
  diff_mode:
    support: full
    description: The diff is that of C(summary.txt).
options:
  reports:
    description: The clusters' reports (the verify role's C(kmod_verify) facts); null entries are ignored.
    type: list
    elements: raw
    required: true
  clusters:
    description: Every cluster of the run, in the order of the table's trailing "not verified" lines.
    type: list
    elements: str
    default: []
  dest:
    description: Directory of C(summary.txt) and C(summary.json); made when missing.
    type: path
    required: true
notes:
  - Each file is written whole (a temporary file, then a rename) and only
    when its content differs.
"""

EXAMPLES = r"""
- name: Write the fleet summary
  ocp.kmod_layering.fleet_summary:
    reports: "{{ ansible_play_hosts_all | map('extract', hostvars, 'kmod_verify') | list }}"
    clusters: "{{ ansible_play_hosts_all }}"
    dest: "{{ playbook_dir }}/../kmod-report"
  delegate_to: localhost
  run_once: true
  register: summary
"""

RETURN = r"""
table:
  description: The lines of C(summary.txt), header first.
  returned: always
  type: list
  elements: str
totals:
  description: The fleet's totals, as written to C(summary.json).
  returned: always
  type: dict
  contains:
    clusters:
      description: Clusters in the table (with a report or not verified).
      type: int
    clusters_passed:
      description: Clusters whose verdict is C(pass).
      type: int
    clusters_failed:
      description: Clusters whose verdict is C(fail).
      type: int
    clusters_skipped:
      description: Clusters whose verdict is C(skipped) (check mode).
      type: int
    clusters_unverified:
      description: Clusters of O(clusters) without a report.
      type: int
    nodes:
      description: Nodes verified.
      type: int
    nodes_passed:
      description: Nodes that passed.
      type: int
    nodes_failed:
      description: Nodes that failed.
      type: int
files:
  description: The paths of C(summary.txt) and C(summary.json).
  returned: always
  type: list
  elements: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _files, _inspect


def main():
    module = AnsibleModule(
        argument_spec=dict(
            reports=dict(type="list", elements="raw", required=True),
            clusters=dict(type="list", elements="str", default=[]),
            dest=dict(type="path", required=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    reports = [r for r in params["reports"] if r]
    for report in reports:
        if not isinstance(report, dict) or not report.get("cluster"):
            module.fail_json(msg="reports: every entry must be a cluster's report (a dict with 'cluster'), got %r"
                             % (report,))
    table, totals = _inspect.fleet_summary(reports, params["clusters"])
    text_path = os.path.join(params["dest"], "summary.txt")
    json_path = os.path.join(params["dest"], "summary.json")
    try:
        changed, diff = _files.write_if_changed(text_path, "\n".join(table) + "\n", check_mode=module.check_mode)
        changed_json, _diff = _files.write_if_changed(
            json_path, json.dumps({"totals": totals, "clusters": reports}, indent=2, sort_keys=True) + "\n",
            check_mode=module.check_mode)
    except (IOError, OSError, ValueError) as exc:
        module.fail_json(msg="dest %s: %s" % (params["dest"], to_native(exc)))
    result = dict(changed=changed or changed_json, table=table, totals=totals, files=[text_path, json_path])
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
