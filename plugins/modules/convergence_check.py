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
    node of the pool is C(Done) on it (the verdict of
    M(ocp.kmod_layering.mco_node_state)); and, unless O(registry.check) is
    false, the registry still has the image, which new nodes pull (one HEAD
    request).
  - A MachineConfig written before these annotations existed is not
    converged; the full run adds them, once.
  - RV(report) is the verification report the verify role would write from
    the nodes' machine-config state; RV(rollout) has the shape of the
    rollout role's C(kmod_rollout) fact.
  - With O(clusters), one run checks a whole fleet, O(parallel) clusters at
    a time, and returns each cluster's verdict in RV(clusters). That is how
    the plan role runs it - once for the fleet rather than once per
    cluster, so a converged rerun pays the start of one module, not one per
    cluster. Without it, the module checks the one cluster of the top-level
    connection options.
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
  clusters:
    description:
      - The clusters to check, each with its C(name) and, where they differ
        from the top-level ones, its connection options (those of
        kubernetes.core - O(kubeconfig), O(context), O(host), O(api_key),
        O(ca_cert), O(validate_certs) and the others, with the same names and
        aliases) and its O(pools), O(name_prefix), O(release) and
        C(report_file).
      - Each cluster gets a client of its own; nothing of one cluster's
        kubeconfig carries over to another.
      - A cluster that cannot be read is not converged (RV(clusters) has its
        C(msg)); the others are still checked, and the module does not fail.
      - When set, O(cluster_name) and O(report_file) are not used, and the
        top-level connection options only fill in the entries; an empty list
        checks nothing.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the cluster (the inventory host), the key of RV(clusters).
        type: str
        required: true
      report_file:
        description: Where to write the cluster's RV(report) when it is converged (not in check mode).
        type: path
      pools:
        description: The cluster's O(pools).
        type: list
        elements: str
      name_prefix:
        description: The cluster's O(name_prefix).
        type: str
      release:
        description: The cluster's O(release).
        type: str
      signing:
        description: The cluster's O(signing).
        type: dict
      kubeconfig:
        description: As the top-level O(kubeconfig).
        type: raw
      context:
        description: As the top-level O(context).
        type: str
      host:
        description: As the top-level O(host).
        type: str
      api_key:
        description: As the top-level O(api_key).
        type: str
      username:
        description: As the top-level O(username).
        type: str
      password:
        description: As the top-level O(password).
        type: str
      validate_certs:
        description: As the top-level O(validate_certs).
        type: bool
        aliases: [verify_ssl]
      ca_cert:
        description: As the top-level O(ca_cert).
        type: path
        aliases: [ssl_ca_cert]
      client_cert:
        description: As the top-level O(client_cert).
        type: path
        aliases: [cert_file]
      client_key:
        description: As the top-level O(client_key).
        type: path
        aliases: [key_file]
      proxy:
        description: As the top-level O(proxy).
        type: str
      no_proxy:
        description: As the top-level O(no_proxy).
        type: str
      proxy_headers:
        description: As the top-level O(proxy_headers).
        type: dict
        suboptions:
          basic_auth:
            description: As the top-level O(proxy_headers.basic_auth).
            type: str
          proxy_basic_auth:
            description: As the top-level O(proxy_headers.proxy_basic_auth).
            type: str
          user_agent:
            description: As the top-level O(proxy_headers.user_agent).
            type: str
      persist_config:
        description: As the top-level O(persist_config).
        type: bool
      impersonate_user:
        description: As the top-level O(impersonate_user).
        type: str
      impersonate_groups:
        description: As the top-level O(impersonate_groups).
        type: list
        elements: str
  parallel:
    description: With O(clusters), how many clusters are read at the same time.
    type: int
    default: 8
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
  signing:
    description:
      - The signing facts of this run
        (RV(ocp.kmod_layering.signing_certificate_info#module:signing)), null
        for unsigned modules. The certificate and hash are part of the build
        key, so a cluster whose image was signed with another certificate (or
        not signed) is not converged.
    type: dict
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
  registry:
    description:
      - How to reach the registry of O(repository), to confirm the image is
        still there when everything else says converged. A missing image,
        or a registry that cannot be reached, makes the cluster not
        converged, with the reason.
      - The options mean what they mean in the modules of the
        C(ocp.kmod_layering.registry) action group (for example
        M(ocp.kmod_layering.registry_image_info)), with the same environment
        variables; they are nested here because O(validate_certs) is the
        Kubernetes API's.
    type: dict
    default: {}
    suboptions:
      check:
        description: Confirm the image is in the registry (one HEAD request).
        type: bool
        default: true
      auth_file:
        description:
          - Path of a registry auth file (C(dockerconfigjson) or a pull secret).
          - If not set, E(KMOD_REGISTRY_AUTH_FILE), else E(REGISTRY_AUTH_FILE).
        type: path
      pull_secret:
        description: Content of a pull secret, as a dict or JSON text.
        type: raw
      username:
        description:
          - Username for the registry; wins over O(registry.auth_file).
          - If not set, E(KMOD_REGISTRY_USERNAME).
        type: str
      password:
        description:
          - Password or token of O(registry.username).
          - If not set, E(KMOD_REGISTRY_PASSWORD).
        type: str
      credentials_registry:
        description:
          - Registry host that O(registry.username) is for.
          - If not set, E(KMOD_REGISTRY_HOST).
        type: str
      ca_path:
        description:
          - PEM file of the CA certificate(s) of the registry's TLS certificate.
          - If not set, E(KMOD_REGISTRY_CA_FILE).
        type: path
      validate_certs:
        description: Verify the registry's TLS certificate.
        type: bool
        default: true
      timeout:
        description: Timeout of the request, in seconds.
        type: int
        default: 60
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

# A whole fleet in one module run (what the verify role does).
- name: Check every cluster of the play
  ocp.kmod_layering.convergence_check:
    clusters:
      - name: cluster-a
        kubeconfig: /etc/kubeconfigs/cluster-a
        report_file: /var/lib/kmod-report/cluster-a.json
      - name: cluster-b
        host: https://api.cluster-b.example.com:6443
        api_key: "{{ cluster_b_token }}"
        pools: [worker, infra]
    modules: "{{ sources.modules }}"
    recipe_files: [roles/build/templates/Containerfile.j2, roles/build/files/check-vermagic.sh]
    repository: registry.example.com/infra/rhcos-kmods
    registry:
      auth_file: /run/secrets/registry-auth.json
  run_once: true
  register: fleet

- name: Say which clusters are converged
  ansible.builtin.debug:
    msg: "{{ fleet.converged_clusters }}"
  run_once: true
"""

RETURN = r"""
clusters:
  description:
    - With O(clusters), each cluster's verdict by name - C(converged),
      C(reasons), C(image), C(build_keys), C(rollout), C(report),
      C(registry_checked) and C(requests) (this cluster's API requests) as
      described for one cluster below.
    - A cluster that could not be read has only C(converged) (false),
      C(reasons) (empty), C(requests), C(msg) (why, naming the cluster) and
      C(status) (the HTTP status of the failed request, or null when there
      was none, such as a connection error or a bad kubeconfig).
  returned: when O(clusters) is set
  type: dict
  sample:
    cluster-b:
      converged: false
      reasons: []
      requests: 4
      status: 403
      msg: "Cluster cluster-b: Kubernetes API error 403 (GET /api/v1/nodes): ..."
converged_clusters:
  description: With O(clusters), the names of the converged clusters, sorted.
  returned: when O(clusters) is set
  type: list
  elements: str
converged:
  description: Whether a full run would change nothing on this cluster.
  returned: without O(clusters)
  type: bool
reasons:
  description: Why it is not converged, one sentence each (empty when converged).
  returned: without O(clusters)
  type: list
  elements: str
  sample: ["pool worker: MachineConfig 99-kmod-layering-worker: the module sources, the build recipe or the signing certificate changed"]
registry_checked:
  description: Whether the registry was asked for the image (only when everything else said converged).
  returned: without O(clusters)
  type: bool
image:
  description: The osImageURL our MachineConfig of the first pool of O(pools) sets, or null when it has none.
  returned: without O(clusters)
  type: str
images:
  description:
    - Pool name to the osImageURL our MachineConfig sets. Pools of different architectures (their nodes') run
      different images; two pools of one architecture running different images are not converged.
  returned: without O(clusters)
  type: dict
build_keys:
  description: Pool name to the build key our MachineConfig records.
  returned: without O(clusters)
  type: dict
rollout:
  description: The cluster's rollout state, with the keys of the rollout role's C(kmod_rollout) fact.
  returned: without O(clusters)
  type: dict
  contains:
    cluster:
      description: The cluster.
      type: str
    image:
      description: The layered image (by digest) of the first pool.
      type: str
    images:
      description: Pool name to the layered image (by digest) its MachineConfig pins.
      type: dict
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
      description: Whether every pool is done on the image (the same as RV(converged)).
      type: bool
    pools:
      description: Per pool, the evaluation of M(ocp.kmod_layering.mco_rollout_wait) (C(message) has the summary).
      type: list
      elements: dict
    elapsed_seconds:
      description: Always 0 (nothing was waited for).
      type: int
    progress_file:
      description: Always empty (no progress was written).
      type: str
    converged:
      description:
        - Always true - the rollout state comes from this check (whether the cluster is converged is
          RV(converged), or RV(rollout.done)). The rollout role's own C(kmod_rollout) has no such key.
      type: bool
report:
  description:
    - The verification report M(ocp.kmod_layering.mco_node_state) would give (method
      C(mco_state), the shape of M(ocp.kmod_layering.node_inspect)'s C(report)), when converged
      (verdict C(pass)); else null.
  returned: without O(clusters)
  type: dict
requests:
  description: API requests made.
  returned: always
  type: int
"""

import copy
import os
import socket

from ansible.module_utils.common.text.converters import to_native

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.ocp.kmod_layering.plugins.module_utils import _build, _convergence_reader, _machineconfig
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import RequestCounter
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry_args import (
    REGISTRY_REQUIRED_TOGETHER,
    registry_argument_spec,
)

USER_AGENT = "ocp.kmod_layering.convergence_check"


def cluster_options():
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        name=dict(type="str", required=True),
        pools=dict(type="list", elements="str"),
        name_prefix=dict(type="str"),
        release=dict(type="str"),
        signing=dict(type="dict"),
        report_file=dict(type="path"),
    )
    return spec


def argument_spec():
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        clusters=dict(type="list", elements="dict", options=cluster_options()),
        parallel=dict(type="int", default=8),
        pools=dict(type="list", elements="str", default=["worker"]),
        name_prefix=dict(type="str", default=_machineconfig.DEFAULT_NAME_PREFIX),
        modules=dict(type="list", elements="dict", required=True),
        recipe_files=dict(type="list", elements="path", required=True),
        repository=dict(type="str", required=True),
        release=dict(type="str"),
        signing=dict(type="dict"),
        expected_modules=dict(type="list", elements="dict"),
        cluster_name=dict(type="str"),
        report_file=dict(type="path"),
        request_timeout=dict(type="int", default=30),
        registry=dict(type="dict", default={}, apply_defaults=True, options=registry_options(),
                      required_together=REGISTRY_REQUIRED_TOGETHER),
    )
    return spec


def registry_options():
    options = registry_argument_spec()
    # Only a HEAD request: nothing to cache.
    del options["cache_dir"]
    options["check"] = dict(type="bool", default=True)
    return options


def validate(module):
    params = module.params
    if params["request_timeout"] <= 0:
        module.fail_json(msg="request_timeout must be a positive number of seconds")
    if params["parallel"] <= 0:
        module.fail_json(msg="parallel must be a positive number of clusters")
    names = [entry["name"] for entry in params["clusters"] or []]
    duplicates = sorted(set(n for n in names if names.count(n) > 1))
    if duplicates:
        module.fail_json(msg="clusters: each name once, found %s more than once" % ", ".join(duplicates))
    try:
        _build.validate_repository(params["repository"])
        for target in _convergence_reader.targets(params):
            for pool in target["pools"]:
                _machineconfig.machineconfig_name(target["name_prefix"], pool)
    except (_build.BuildInputError, _machineconfig.MachineConfigError) as exc:
        module.fail_json(msg="%s: %s" % (("Cluster %s" % params["cluster_name"]) if params["clusters"] is None
                                         and params["cluster_name"] else "convergence_check", to_native(exc)))
    for path in params["recipe_files"]:
        if not os.path.isfile(path):
            module.fail_json(msg="recipe_files: %s is not a file" % path)


def main():
    module = AnsibleK8SModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    validate(module)
    counter = RequestCounter(USER_AGENT).install()
    # Requests that take no timeout of their own (the client's discovery on a
    # first contact) must not hang on a silent cluster either.
    socket.setdefaulttimeout(params["request_timeout"])
    registry = _convergence_reader.RegistryCheck(params["registry"], USER_AGENT) if params["registry"]["check"] else None
    results = _convergence_reader.check_all(params, module.check_mode, registry)
    if params["clusters"] is not None:
        module.exit_json(changed=False, clusters=results, requests=counter.count,
                         converged_clusters=sorted(name for name, r in results.items() if r["converged"]))
    result = list(results.values())[0]
    if "msg" in result:
        module.fail_json(**result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
