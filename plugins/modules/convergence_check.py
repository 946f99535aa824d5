#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: convergence_check
short_description: Tell in one read whether a cluster already runs the layered image a run would roll out
version_added: 0.2.0
description:
  - Reads the cluster's ClusterVersion, MachineConfigPools, Nodes, our
    MachineConfigs (label C(app.kubernetes.io/managed-by=ocp.kmod_layering))
    and the rendered MachineConfig each pool points at, and decides whether
    a full run (resolve, build, publish, rollout, verify) would change
    nothing on this cluster. It writes nothing to the cluster.
  - Converged means, for every pool of O(pools) - our MachineConfig
    O(name_prefix)-<pool> exists and was not rolled back; the release it
    records (C(kmod-layering.io/release-image)) is the cluster's desired
    release (C(status.desired.image); or O(release) when given) and the
    cluster is not being upgraded; the build key recomputed from its recorded
    kernel, Driver Toolkit and RHCOS images with this run's O(modules) and
    O(recipe_files) equals its recorded C(kmod-layering.io/build-key) (so the
    build role would pick the same image); its C(osImageURL) is an image of
    O(repository) pinned by digest; the pool is done on a rendered config with
    that image (the rule of M(ocp.kmod_layering.mco_rollout_wait)); and every
    node of the pool is C(Done) on it (the C(mco_state) verdict of
    M(ocp.kmod_layering.node_inspect)).
  - A MachineConfig written before these annotations existed is not
    converged; the full run adds them, once.
  - RV(report) is the verification report the verify role would write from
    the nodes' machine-config state; RV(rollout) has the shape of the
    rollout role's C(kmod_rollout) fact.
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - ocp.kmod_layering.attributes.cluster_group
requirements:
  - kubernetes >= 24.2.0
  - PyYAML >= 3.11
attributes:
  check_mode:
    support: full
    description: The module only reads (and writes O(report_file) outside check mode).
  diff_mode:
    support: none
    description: Nothing is changed, so there is no diff.
options:
  pools:
    description: The MachineConfigPools the run rolls out to (C(kmod_pools)).
    type: list
    elements: str
    default: [worker]
  name_prefix:
    description: Prefix of our MachineConfigs' names (C(kmod_machineconfig_name_prefix)).
    type: str
    default: 99-kmod-layering
  modules:
    description:
      - This run's module sources, as RV(ocp.kmod_layering.kmod_sources#module:modules)
        returns them (name, source, fingerprint and build settings).
    type: list
    elements: dict
    required: true
  recipe_files:
    description: The build recipe files (Containerfile template and helpers) of the build role.
    type: list
    elements: path
    required: true
  repository:
    description: The repository layered images are pushed to (C(kmod_image_repository)).
    type: str
    required: true
  release:
    description:
      - C(kmod_release) when set (a version or a release pullspec); else the
        ClusterVersion's desired release decides.
    type: str
  expected_modules:
    description:
      - The C(kmod_modules) entries (C(name), C(load_at_boot)), listed in
        RV(report) as expected and not inspected.
    type: list
    elements: dict
  cluster_name:
    description: Name of the cluster in messages and in RV(report) (the inventory host).
    type: str
  report_file:
    description:
      - When the cluster is converged and not in check mode, write RV(report)
        there as JSON (what the verify role writes for a cluster it verified).
    type: path
  request_timeout:
    description: Seconds to wait for each API response before retrying it.
    type: int
    default: 30
notes:
  - Transient API errors (429, 5xx, lost connections) are retried with
    backoff within O(request_timeout) times a few attempts; any other API
    error fails the module, naming the cluster.
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
"""

EXAMPLES = r"""
- name: Skip the clusters that already run the image
  ocp.kmod_layering.convergence_check:
    pools: [worker]
    modules: "{{ sources.modules }}"
    recipe_files: [roles/build/templates/Containerfile.j2, roles/build/files/check-vermagic.sh]
    repository: registry.example.com/infra/rhcos-kmods
    cluster_name: "{{ inventory_hostname }}"
  register: convergence

- name: Group the converged ones
  ansible.builtin.group_by:
    key: converged
  when: convergence.converged
"""

RETURN = r"""
converged:
  description: Whether a full run would change nothing on this cluster.
  returned: always
  type: bool
reasons:
  description: Why it is not converged, one sentence each (empty when converged).
  returned: always
  type: list
  elements: str
  sample: ["pool worker: MachineConfig 99-kmod-layering-worker: the module sources or the build recipe changed"]
image:
  description: The osImageURL our MachineConfigs set, when they agree; else null.
  returned: always
  type: str
build_keys:
  description: Pool name to the build key our MachineConfig records.
  returned: always
  type: dict
rollout:
  description: The cluster's rollout state, with the keys of the rollout role's C(kmod_rollout) fact.
  returned: always
  type: dict
  contains:
    cluster:
      description: The cluster.
      type: str
    image:
      description: The layered image (by digest).
      type: str
    machineconfigs:
      description: Pool name to our MachineConfig's name.
      type: dict
    changed:
      description: Always empty (nothing was changed).
      type: list
      elements: str
    waited:
      description: Always false (nothing was waited for).
      type: bool
    done:
      description: Whether every pool is done on the image.
      type: bool
    pools:
      description: Per pool, the evaluation of M(ocp.kmod_layering.mco_rollout_wait) (C(message) has the summary).
      type: list
      elements: dict
    converged:
      description: True when the rollout state comes from this check.
      type: bool
report:
  description:
    - The verification report of M(ocp.kmod_layering.node_inspect) with method
      C(mco_state), when converged (verdict C(pass)); else null.
  returned: always
  type: dict
requests:
  description: API requests made.
  returned: always
  type: int
"""

import copy
import json
import os
import tempfile
import time

from ansible.module_utils.common.text.converters import to_native

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.ocp.kmod_layering.plugins.module_utils import _build, _convergence, _inspect, _machineconfig
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import (
    CONNECT_TIMEOUT,
    RequestCounter,
    Urllib3HTTPError,
    call_with_retry,
    status_code,
)

try:
    from kubernetes.dynamic.exceptions import DynamicApiError
except ImportError:
    # AnsibleK8SModule reports the missing library.
    class DynamicApiError(Exception):  # pylint: disable=function-redefined
        status = None

USER_AGENT = "ocp.kmod_layering.convergence_check"
MCO_PATH = "/apis/machineconfiguration.openshift.io/v1"


class ClusterReader(object):
    """The reads of one check, each retried on transient errors.

    Plain GETs through the dynamic client kubernetes.core already made: the
    typed APIs (CoreV1Api) would import every core model, seconds of CPU per
    module run, which a fleet-wide converged check pays once per cluster.
    """

    def __init__(self, client, request_timeout):
        self.dynamic = client.client
        self.host = self.dynamic.client.configuration.host
        self.timeout = (CONNECT_TIMEOUT, request_timeout)
        self.deadline = time.monotonic() + 4 * request_timeout

    def _get(self, path, query=None):
        def get():
            return self.dynamic.request("GET", path, query_params=list(query or []), serialize=False,
                                        _request_timeout=self.timeout)
        return json.loads(call_with_retry(get, self.deadline).data)

    def _get_or_none(self, path):
        try:
            return self._get(path)
        except DynamicApiError as exc:
            if status_code(exc) == 404:
                return None
            raise

    def cluster_version(self):
        return self._get_or_none("/apis/config.openshift.io/v1/clusterversions/version")

    def pools(self):
        return self._get(MCO_PATH + "/machineconfigpools").get("items") or []

    def our_machineconfigs(self):
        selector = "%s=%s" % (_machineconfig.LABEL_MANAGED_BY, _machineconfig.MANAGED_BY)
        return self._get(MCO_PATH + "/machineconfigs", [("labelSelector", selector)]).get("items") or []

    def machineconfig(self, name):
        return self._get_or_none(MCO_PATH + "/machineconfigs/" + name)

    def nodes(self):
        return self._get("/api/v1/nodes").get("items") or []


def write_report(path, report):
    """Write ``report`` as JSON, atomically (a reader never sees half a file)."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory)
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=".report-")
    with os.fdopen(handle, "w") as out:
        out.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)


def check(module, reader):
    params = module.params
    cluster = params["cluster_name"] or reader.host
    wanted = {
        "pools": params["pools"],
        "name_prefix": params["name_prefix"],
        "modules": params["modules"],
        "recipe": _build.recipe_digest(params["recipe_files"]),
        "repository": params["repository"],
        "release": params["release"],
        "expected_modules": params["expected_modules"] or [],
    }
    cluster_version = reader.cluster_version()
    pools = reader.pools()
    ours = reader.our_machineconfigs()
    nodes = reader.nodes()
    rendered = {}
    # Only the rendered configs that matter: those of pools that have ours.
    names = set((mc.get("metadata") or {}).get("name") for mc in ours)
    for pool in pools:
        configuration = ((pool.get("spec") or {}).get("configuration") or {})
        name = configuration.get("name")
        if (pool["metadata"]["name"] in params["pools"] and name and name not in rendered
                and names.intersection(s.get("name") for s in configuration.get("source") or [])):
            found = reader.machineconfig(name)
            if found is not None:
                rendered[name] = found
    result = _convergence.evaluate(cluster_version, pools, nodes, ours, rendered, wanted)
    report = None
    if result["converged"]:
        report = _inspect.cluster_report(
            cluster, result["verdicts"], result["image"], wanted["expected_modules"], pools=params["pools"],
            generated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        report["method"] = "mco_state"
        report["api_url"] = reader.host
        report["table"] = _inspect.table_lines(report)
        report["table_header"] = _inspect.table_header()
        if params["report_file"] and not module.check_mode:
            write_report(params["report_file"], report)
    rollout = {
        "cluster": cluster,
        "image": result["image"] or "",
        "machineconfigs": result["machineconfigs"],
        "changed": [],
        "waited": False,
        "done": result["converged"],
        "pools": result["pools"],
        "elapsed_seconds": 0,
        "progress_file": "",
        "converged": True,
    }
    return dict(changed=False, converged=result["converged"], reasons=result["reasons"], image=result["image"],
                build_keys=result["build_keys"], rollout=rollout, report=report)


def argument_spec():
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        pools=dict(type="list", elements="str", default=["worker"]),
        name_prefix=dict(type="str", default=_machineconfig.DEFAULT_NAME_PREFIX),
        modules=dict(type="list", elements="dict", required=True),
        recipe_files=dict(type="list", elements="path", required=True),
        repository=dict(type="str", required=True),
        release=dict(type="str"),
        expected_modules=dict(type="list", elements="dict"),
        cluster_name=dict(type="str"),
        report_file=dict(type="path"),
        request_timeout=dict(type="int", default=30),
    )
    return spec


def main():
    module = AnsibleK8SModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    cluster = params["cluster_name"] or "(cluster not named)"
    if params["request_timeout"] <= 0:
        module.fail_json(msg="request_timeout must be a positive number of seconds")
    try:
        _build.validate_repository(params["repository"])
        for pool in params["pools"]:
            _machineconfig.machineconfig_name(params["name_prefix"], pool)
    except (_build.BuildInputError, _machineconfig.MachineConfigError) as exc:
        module.fail_json(msg="Cluster %s: %s" % (cluster, to_native(exc)))
    for path in params["recipe_files"]:
        if not os.path.isfile(path):
            module.fail_json(msg="recipe_files: %s is not a file" % path)
    counter = RequestCounter(USER_AGENT)
    try:
        counter.install()
        client = get_api_client(module=module)
        result = check(module, ClusterReader(client, params["request_timeout"]))
    except CoreException as exc:
        module.fail_from_exception(exc)
    except DynamicApiError as exc:
        body = getattr(exc, "body", None) or getattr(exc, "reason", None) or ""
        module.fail_json(msg="Cluster %s: Kubernetes API error (%s): %s" % (cluster, status_code(exc), to_native(body)),
                         status=status_code(exc), requests=counter.count)
    except (Urllib3HTTPError, OSError, ValueError) as exc:
        module.fail_json(msg="Cluster %s: could not talk to the API: %s" % (cluster, to_native(exc)),
                         requests=counter.count)
    result["requests"] = counter.count
    module.exit_json(**result)


if __name__ == "__main__":
    main()
