#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: node_inspect
short_description: Run host commands on OpenShift nodes through debug pods, and verify layered images
version_added: 0.1.0
description:
  - Does what C(oc debug node/<node> -- chroot /host <command>) does, for many
    nodes at once and without the C(oc) binary. For every selected node and
    every command it creates a privileged pod bound to the node
    (C(spec.nodeName)) with C(hostPID), C(hostNetwork), C(hostIPC), the host's
    C(/) mounted at C(/host), C(restartPolicy=Never) and a toleration of every
    taint, running C(chroot /host <command>).
  - The pods run in O(namespace), which is created when missing with the
    pod security labels privileged pods need on OpenShift
    (C(pod-security.kubernetes.io/enforce=privileged), and
    C(security.openshift.io/scc.podSecurityLabelSync=false) so the label
    syncer leaves them alone) and the annotation C(openshift.io/node-selector="")
    so a cluster-wide default node selector does not apply. An existing
    namespace missing those labels is patched.
  - At most O(parallel) pods exist at a time. The module watches them (one
    watch on the pods of this run, resumed from the last C(resourceVersion);
    no polling interval) until each is C(Succeeded) or C(Failed), reads its
    log, and deletes it. Every pod it created is deleted before it returns,
    also on failure or timeout.
  - Nodes are given by name (O(nodes)), or by MachineConfigPool (O(pools)),
    meaning the nodes the Machine Config Operator manages in that pool, from
    the pool's C(spec.nodeSelector), a node matching several pools counting
    for C(master) or its custom pool as the MCO does, or by O(node_selector).
  - With O(expected_image) and/or O(expected_modules) it also runs
    C(rpm-ostree status --json), C(cat /proc/modules) and (for modules with
    options, when O(check_parameters)) C(grep -H -s . /sys/module/<m>/parameters/<p>…),
    and returns a verdict per node and a report for the cluster in RV(report).
    A node passes when the booted deployment's C(container-image-reference-digest)
    equals the digest of O(expected_image), every module that loads at boot
    is C(Live) in C(/proc/modules), and its parameters show the values of
    its C(options). The module does not fail on a failed verdict; the caller
    decides (see the C(ocp.kmod_layering.verify) role).
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
    support: partial
    description: Check mode selects the nodes without running any command.
    details:
      - In check mode no namespace or pod is created and no command runs; the
        nodes are selected and returned, and RV(report) has verdict V(skipped).
  diff_mode:
    support: none
    description: Debug pods are transient; there is no diff.
options:
  nodes:
    description:
      - Names of the nodes to inspect.
      - Mutually exclusive with O(pools) and O(node_selector).
    type: list
    elements: str
  pools:
    description:
      - Inspect the nodes of these MachineConfigPools.
      - Without O(nodes), O(pools) and O(node_selector), V([worker]) is used.
    type: list
    elements: str
  node_selector:
    description:
      - Inspect the nodes matching this label selector (C(node-role.kubernetes.io/worker=)).
    type: str
  commands:
    description:
      - Commands to run on each node, each as C(chroot /host <command>).
        A string is split into words like a shell would (no shell features;
        use V(sh -c '...') for those); a list is taken as the argv.
      - Their output is returned in RV(nodes[].commands).
    type: list
    elements: raw
    default: []
  expected_image:
    description:
      - The image the nodes must have booted, pinned by digest (C(repo@sha256:…)).
        Compared to the digest C(rpm-ostree status --json) reports for the
        booted deployment. A tag-only pullspec is compared as a whole.
    type: str
  expected_modules:
    description:
      - Kernel modules that must be loaded, as the collection's C(kmod_modules)
        entries. Only these keys are read (others, like C(source), are ignored),
        C(name) (required; C(-) and C(_) are the same to the kernel),
        C(options) (modprobe options such as C(greeting=hi level=2), whose
        values the module's parameters must show) and C(load_at_boot)
        (default true; modules that do not load at boot are reported, not required).
    type: list
    elements: dict
  check_parameters:
    description:
      - Read C(/sys/module/<module>/parameters/<parameter>) for the options
        of O(expected_modules) and compare them (booleans show as C(Y)/C(N)).
    type: bool
    default: true
  namespace:
    description:
      - Namespace of the debug pods; created if missing.
    type: str
    default: openshift-kmod-layering-debug
  create_namespace:
    description:
      - Create O(namespace) if it does not exist (and add the labels it needs).
        When false, a missing namespace fails the module.
    type: bool
    default: true
  image:
    description:
      - Image of the debug pods. It needs C(chroot) only; the commands run
        from the host's root.
      - Empty uses the image C(oc debug node) uses, the C(openshift/tools:latest)
        ImageStreamTag of the cluster (the release's C(tools) image), or
        C(registry.redhat.io/rhel9/support-tools:latest) when the cluster has none.
    type: str
    default: ""
  parallel:
    description:
      - Most debug pods to run at once on the cluster.
    type: int
    default: 20
  timeout:
    description:
      - Seconds to wait at most, for all pods together. A pod not finished by
        then (for example stuck pulling its image) is reported with its
        C(Pending) reason and deleted.
    type: int
    default: 300
  cluster_name:
    description:
      - Name of the cluster in RV(report) (the inventory host name).
      - Without it, the API server URL is used.
    type: str
  method:
    description:
      - V(pods) runs the debug pods on every node and reads the booted image,
        loaded modules and parameters.
      - V(mco_state) only reads and creates nothing. A node passes when its
        machine-config state is C(Done) on its pool's rendered config
        (C(spec.configuration.name)) and that config's C(osImageURL) is
        O(expected_image). The machine-config daemon sets C(currentConfig)
        only after the node booted that image. Loaded modules are not read.
        Needs O(pools).
    type: str
    choices: [pods, mco_state]
    default: pods
notes:
  - The user needs the rights C(oc debug node) needs (create privileged pods,
    which on OpenShift means the C(privileged) SCC, and create namespaces
    unless O(namespace) exists).
  - Commands run as root in the host's namespaces; keep them read-only.
  - Each (node, command) is one pod, as with C(oc debug node); with O(parallel)
    pods at a time a fleet of nodes is covered in C(nodes*commands/parallel)
    rounds of pod start-ups.
  - Returns C(changed=true) only when it created or patched the namespace;
    the debug pods it creates are deleted before it returns.
seealso:
  - module: kubernetes.core.k8s_exec
  - module: ocp.kmod_layering.mco_rollout_wait
"""

EXAMPLES = r"""
- name: Read rpm-ostree status and the loaded modules of every worker
  ocp.kmod_layering.node_inspect:
    kubeconfig: "{{ kmod_kubeconfig }}"
    pools: [worker]
    commands:
      - rpm-ostree status --json
      - cat /proc/modules
  delegate_to: localhost
  register: inspected

- name: Verify the layered image booted and its modules are loaded
  ocp.kmod_layering.node_inspect:
    pools: [worker, infra]
    expected_image: "{{ kmod_image }}"          # registry.example.com/kmods/rhcos@sha256:...
    expected_modules: "{{ kmod_modules }}"      # [{name: mydrv, options: "debug=1"}]
    cluster_name: "{{ inventory_hostname }}"
  register: verified

- name: Fail when a node is off
  ansible.builtin.assert:
    that: verified.report.verdict == 'pass'
    fail_msg: "{{ verified.report.reasons }}"

- name: Kernel version of two nodes, with a mirrored debug image
  ocp.kmod_layering.node_inspect:
    nodes: [worker-0.example.com, worker-1.example.com]
    commands: ["uname -r"]
    image: mirror.example.com/rhel9/support-tools:latest
  register: kernels
"""

RETURN = r"""
cluster:
  description: The API server URL the module talked to.
  returned: always
  type: str
  sample: https://api.lab-a.example.com:6443
namespace:
  description: The namespace the debug pods ran in.
  returned: always
  type: str
image:
  description: The image the debug pods ran.
  returned: always
  type: str
  sample: registry.redhat.io/rhel9/support-tools:latest
elapsed_seconds:
  description: Seconds the module spent.
  returned: always
  type: float
pods_created:
  description: Number of debug pods created.
  returned: always
  type: int
pods_left:
  description: Debug pods that could not be deleted (normally empty), as C(namespace/name).
  returned: always
  type: list
  elements: str
nodes:
  description: Every selected node, with the outcome of each command.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Node name.
      type: str
    pool:
      description: The MachineConfigPool the node belongs to (with O(pools)), else null.
      type: str
    ok:
      description: Every command of the node succeeded (exit code 0); null in check mode.
      type: bool
    commands:
      description: One entry per command run on the node.
      type: list
      elements: dict
      contains:
        command:
          description: The command, as run after C(chroot /host).
          type: str
        key:
          description: V(rpm_ostree), V(modules), V(parameters) for the verification commands, else V(command_<i>).
          type: str
        pod:
          description: Name of the debug pod (deleted since).
          type: str
        phase:
          description: The pod's last phase (V(Succeeded), V(Failed), or V(Pending)/V(Running) on timeout).
          type: str
        rc:
          description: The container's exit code, null when it did not finish.
          type: int
        stdout:
          description: The pod's log (the command's output).
          type: str
        stdout_lines:
          description: RV(nodes[].commands[].stdout) split in lines.
          type: list
          elements: str
        error:
          description: Why the command has no good output (timeout with the pod's waiting reason, exit code), else empty.
          type: str
        pod_reason:
          description: What the pod's status says beyond the phase (container waiting or terminated reason, failed conditions).
          type: str
    rpm_ostree:
      description: The booted deployment (with O(expected_image)).
      type: dict
      contains:
        image:
          description: The booted image pullspec, ostree transport stripped.
          type: str
        digest:
          description: C(container-image-reference-digest) of the booted deployment.
          type: str
    modules:
      description:
        - Parsed C(/proc/modules) (with O(expected_modules)), by module name.
        - Each has C(size), C(refcount), C(deps) (the modules using it), C(state) (C(Live), C(Loading), C(Unloading)) and C(taint).
      type: dict
report:
  description:
    - The cluster's verification report, with O(expected_image) or O(expected_modules).
  returned: when O(expected_image) or O(expected_modules) is set
  type: dict
  contains:
    cluster:
      description: O(cluster_name), or the API server URL.
      type: str
    verdict:
      description: V(pass) (every node passed), V(fail), or V(skipped) (check mode with O(method=pods)).
      type: str
    method:
      description: O(method), how the nodes were verified.
      type: str
    expected_image:
      description: O(expected_image).
      type: str
    expected_digest:
      description: The digest of O(expected_image).
      type: str
    counts:
      description: C(nodes), C(passed), C(failed).
      type: dict
      sample: {"nodes": 3, "passed": 2, "failed": 1}
    reasons:
      description: Why nodes failed, one sentence each, naming the node (and digests or modules).
      type: list
      elements: str
      sample: ["node worker-1: module mydrv is not loaded (not in /proc/modules)"]
    warnings:
      description: For example a pool without nodes.
      type: list
      elements: str
    nodes:
      description: One verdict per node.
      type: list
      elements: dict
      contains:
        node:
          description: Node name.
          type: str
        pool:
          description: Pool of the node.
          type: str
        verdict:
          description: V(pass) or V(fail).
          type: str
        reasons:
          description: Why the node failed.
          type: list
          elements: str
        booted_image:
          description: Booted image pullspec.
          type: str
        booted_digest:
          description: Booted image digest.
          type: str
        image_ok:
          description: Booted digest equals the expected one.
          type: bool
        modules:
          description: "Per expected module: C(loaded), C(required), C(state), C(refcount), C(deps), C(parameters)."
          type: dict
        missing_modules:
          description: Required modules not in C(/proc/modules).
          type: list
          elements: str
    table:
      description:
        - The report as rows of a fixed-width table (fixed column widths, so
          rows of several clusters line up under one RV(report.table_header)).
      type: list
      elements: str
    table_header:
      description: The two header lines of the table.
      type: list
      elements: str
"""

import copy
import json
import time
import uuid

from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.ocp.kmod_layering.plugins.module_utils import _inspect, _mco
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT_MARGIN,
    TRANSIENT_STATUS,
    RequestCounter,
    Urllib3HTTPError,
    call_with_retry,
    status_code as _status,
)

try:
    from kubernetes import watch as k8s_watch
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic.exceptions import DynamicApiError
    from kubernetes.dynamic.resource import Resource
except ImportError:
    # AnsibleK8SModule reports the missing library.
    class ApiException(Exception):  # pylint: disable=function-redefined
        status = None

    DynamicApiError = ApiException
    Resource = None

# The dynamic client raises DynamicApiError (NotFoundError, ConflictError, ...);
# a watch's ERROR event raises a plain ApiException: every handler takes both.
MERGE_PATCH = "application/merge-patch+json"

USER_AGENT = "ocp.kmod_layering.node_inspect"
MAX_WATCH_SECONDS = 120
MAX_FAILURES = 6


def _retry(fn, deadline):
    return call_with_retry(fn, deadline, max_failures=MAX_FAILURES)


class Job(object):
    """One (node, command) debug pod."""

    def __init__(self, node, key, command, index):
        self.node = node
        self.key = key
        self.command = command
        self.index = index
        self.pod_name = None
        self.pod = None
        self.created = False
        self.done = False
        self.deleted = False
        self.stdout = ""
        self.error = ""

    def as_dict(self):
        phase, rc, reason = _inspect.pod_outcome(self.pod)
        error = self.error
        if not error and rc not in (0, None):
            error = "exit code %s" % rc
        return {
            "command": _inspect.command_text(self.command),
            "key": self.key,
            "pod": self.pod_name,
            "phase": phase if self.created else None,
            "rc": rc,
            "stdout": self.stdout,
            "stdout_lines": self.stdout.splitlines(),
            "error": error,
            "pod_reason": reason,
        }


class Inspector(object):
    def __init__(self, module, client):
        self.module = module
        self.params = module.params
        self.client = client
        self.cluster = client.configuration.host
        # The dynamic client kubernetes.core made, with fixed, well-known API
        # paths (no discovery): the typed APIs (CoreV1Api, CustomObjectsApi)
        # would import their models, seconds of CPU per module run.
        self.dynamic = client.client
        self.node_api = self._resource("api", "", "Node", "nodes", False)
        self.namespace_api = self._resource("api", "", "Namespace", "namespaces", False)
        self.pod_api = self._resource("api", "", "Pod", "pods", True)
        self.pool_api = self._resource("apis", _mco.MCO_API_GROUP, "MachineConfigPool", "machineconfigpools", False)
        self.mc_api = self._resource("apis", _mco.MCO_API_GROUP, "MachineConfig", "machineconfigs", False)
        self.tag_api = self._resource("apis", "image.openshift.io", "ImageStreamTag", "imagestreamtags", True)
        self.namespace = self.params["namespace"]
        self.started = time.monotonic()
        self.deadline = self.started + self.params["timeout"]
        self.run_id = uuid.uuid4().hex[:6]
        self.changed = False
        self.warnings = []
        self.image = self.params["image"]
        self.jobs = []
        self.pods_created = 0
        self.pods_left = []
        self.pool_objects = {}
        self.node_objects = {}

    # --- API --------------------------------------------------------------

    def _resource(self, prefix, group, kind, name, namespaced):
        return Resource(prefix=prefix, group=group, api_version="v1", kind=kind, name=name,
                        namespaced=namespaced, client=self.dynamic)

    def _json(self, response):
        return json.loads(response.data)

    def list_nodes(self, label_selector=None):
        kwargs = {"serialize": False}
        if label_selector:
            kwargs["label_selector"] = label_selector
        return self._json(_retry(lambda: self.node_api.get(**kwargs), self.deadline)).get("items") or []

    def select_nodes(self):
        """[(node name, pool or None)]."""
        params = self.params
        if params["nodes"]:
            return [(name, None) for name in params["nodes"]]
        if params["node_selector"]:
            return [(n["metadata"]["name"], None) for n in self.list_nodes(params["node_selector"])]
        pools_wanted = params["pools"] or ["worker"]
        try:
            pools = self._json(_retry(lambda: self.pool_api.get(serialize=False),
                                      self.deadline)).get("items") or []
        except (DynamicApiError, ApiException) as exc:
            if _status(exc) == 404:
                self.module.fail_json(msg="Cluster %s serves no MachineConfigPools (%s/v1): is it OpenShift? "
                                          "Use nodes or node_selector." % (self.cluster, _mco.MCO_API_GROUP))
            raise
        by_name = dict((p["metadata"]["name"], p) for p in pools)
        unknown = [p for p in pools_wanted if p not in by_name]
        if unknown:
            self.module.fail_json(msg="MachineConfigPool(s) %s not found on cluster %s (pools there: %s)." % (
                ", ".join(unknown), self.cluster, ", ".join(sorted(by_name)) or "none"))
        nodes = self.list_nodes()
        self.pool_objects = by_name
        self.node_objects = dict((n["metadata"]["name"], n) for n in nodes)
        selected = []
        for name in pools_wanted:
            members = _mco.pool_nodes(by_name[name], pools, nodes)
            if not members:
                self.warnings.append("pool %s on cluster %s has no nodes" % (name, self.cluster))
            selected.extend((n["metadata"]["name"], name) for n in members)
        return selected

    def resolve_image(self):
        if self.image:
            return self.image
        try:
            tag = self._json(self.tag_api.get(name="tools:latest", namespace="openshift", serialize=False))
            reference = ((tag.get("image") or {}).get("dockerImageReference"))
            if reference:
                return reference
        except (DynamicApiError, ApiException) as exc:
            if _status(exc) not in (403, 404):
                raise
        return _inspect.FALLBACK_IMAGE

    def ensure_namespace(self):
        try:
            existing = self._json(self.namespace_api.get(name=self.namespace, serialize=False))
        except (DynamicApiError, ApiException) as exc:
            if _status(exc) != 404:
                raise
            existing = None
        if existing is None:
            if not self.params["create_namespace"]:
                self.module.fail_json(msg="Namespace %s does not exist on cluster %s and create_namespace is false."
                                          % (self.namespace, self.cluster))
            try:
                self.namespace_api.create(body=_inspect.debug_namespace(self.namespace), serialize=False)
                self.changed = True
            except (DynamicApiError, ApiException) as exc:
                if _status(exc) != 409:  # created meanwhile by a parallel run
                    raise
            return
        patch = _inspect.namespace_patch(existing)
        if patch and self.params["create_namespace"]:
            # Labels and annotations only: a JSON merge patch (maps merge).
            self.namespace_api.patch(name=self.namespace, body=patch, content_type=MERGE_PATCH, serialize=False)
            self.changed = True

    # --- pods ---------------------------------------------------------------

    def create(self, job):
        body = _inspect.debug_pod(job.node, job.command, self.namespace, self.image, self.run_id, job.index)
        job.pod_name = body["metadata"]["name"]
        try:
            created = _retry(lambda: self.pod_api.create(body=body, namespace=self.namespace, serialize=False),
                             self.deadline)
            job.pod = self._json(created)
            job.created = True
            self.pods_created += 1
        except (DynamicApiError, ApiException) as exc:
            if _status(exc) == 409:
                # A retried create whose first attempt went through: the pod is ours.
                job.created = True
                self.pods_created += 1
                return
            job.done = True
            detail = to_native(getattr(exc, "body", None) or getattr(exc, "reason", None) or exc)
            job.error = "cannot create debug pod %s: %s %s" % (job.pod_name, _status(exc), detail)

    def finish(self, job, pod):
        job.pod = pod
        job.done = True
        path = "%s/log" % self.pod_api.path(name=job.pod_name, namespace=self.namespace)
        try:
            # Text, not JSON. A fresh query list per attempt: request() appends to it.
            log = _retry(lambda: self.dynamic.request(
                "GET", path, query_params=[("container", _inspect.CONTAINER_NAME)], serialize=False),
                self.deadline).data
            job.stdout = to_native(log) if log else ""
        except (DynamicApiError, ApiException) as exc:
            job.error = "cannot read the log of debug pod %s: %s" % (job.pod_name, _status(exc))
        self.delete(job)

    def delete(self, job):
        if not job.created or job.deleted:
            return
        try:
            self.pod_api.delete(name=job.pod_name, namespace=self.namespace, grace_period_seconds=0,
                                serialize=False)
            job.deleted = True
        except (DynamicApiError, ApiException) as exc:
            if _status(exc) == 404:
                job.deleted = True
            else:
                self.pods_left.append("%s/%s" % (self.namespace, job.pod_name))
        except (Urllib3HTTPError, OSError):
            self.pods_left.append("%s/%s" % (self.namespace, job.pod_name))

    def list_pods(self):
        listing = self._json(_retry(lambda: self.pod_api.get(
            namespace=self.namespace, label_selector="%s=%s" % (_inspect.LABEL_RUN, self.run_id), serialize=False),
            self.deadline))
        return listing.get("items") or [], (listing.get("metadata") or {}).get("resourceVersion")

    def run_jobs(self):
        by_pod = {}
        queue = list(self.jobs)
        active = []

        def start_more():
            while queue and len(active) < self.params["parallel"]:
                job = queue.pop(0)
                self.create(job)
                if job.created:
                    by_pod[job.pod_name] = job
                    active.append(job)

        def seen(pod):
            job = by_pod.get(((pod or {}).get("metadata") or {}).get("name"))
            if job is None or job.done:
                return
            job.pod = pod
            if _inspect.pod_finished(pod):
                self.finish(job, pod)
                active.remove(job)

        _items, version = self.list_pods()
        start_more()
        failures = 0
        while active or queue:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                break
            seconds = int(max(1, min(remaining, MAX_WATCH_SECONDS)))
            watcher = k8s_watch.Watch()
            try:
                for event in watcher.stream(
                        self.pod_api.get, namespace=self.namespace,
                        label_selector="%s=%s" % (_inspect.LABEL_RUN, self.run_id),
                        resource_version=version, timeout_seconds=seconds, allow_watch_bookmarks=True,
                        serialize=False, _request_timeout=(CONNECT_TIMEOUT, seconds + READ_TIMEOUT_MARGIN)):
                    failures = 0
                    obj = event.get("raw_object") or {}
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        seen(obj)
                        start_more()
                    if not active and not queue:
                        break
                    if time.monotonic() >= self.deadline:
                        break
                else:
                    # The server ended the watch: catch up with a list, go on from there.
                    items, version = self.list_pods()
                    for pod in items:
                        seen(pod)
                    start_more()
            except (DynamicApiError, ApiException) as exc:
                if _status(exc) == 410 or _status(exc) in TRANSIENT_STATUS:
                    failures += 1
                    items, version = self.list_pods()
                    for pod in items:
                        seen(pod)
                    start_more()
                else:
                    raise
            except (Urllib3HTTPError, OSError, ValueError):
                failures += 1
                if failures > MAX_FAILURES:
                    raise
                items, version = self.list_pods()
                for pod in items:
                    seen(pod)
                start_more()
            finally:
                watcher.stop()
        for job in self.jobs:
            if not job.done:
                phase, _rc, reason = _inspect.pod_outcome(job.pod)
                if job.created:
                    job.error = "debug pod %s did not finish within %ds (phase %s%s)" % (
                        job.pod_name, self.params["timeout"], phase, (": " + reason) if reason else "")
                else:
                    job.error = "debug pod not started within %ds (more than parallel=%d pods queued)" % (
                        self.params["timeout"], self.params["parallel"])

    def cleanup(self):
        for job in self.jobs:
            self.delete(job)

    # --- main -----------------------------------------------------------------

    def plan(self, selected):
        params = self.params
        verify = bool(params["expected_image"] or params["expected_modules"])
        commands = []
        if verify:
            commands.append(("rpm_ostree", _inspect.CMD_RPM_OSTREE))
            if params["expected_modules"]:
                commands.append(("modules", _inspect.CMD_PROC_MODULES))
                if params["check_parameters"]:
                    argv = _inspect.parameters_command(params["expected_modules"])
                    if argv:
                        commands.append(("parameters", argv))
        for index, command in enumerate(params["commands"]):
            commands.append(("command_%d" % index, command))
        for node, _pool in selected:
            for index, (key, command) in enumerate(commands):
                self.jobs.append(Job(node, key, command, index))
        return verify

    def report(self, verdicts):
        params = self.params
        report = _inspect.cluster_report(
            params["cluster_name"] or self.cluster, verdicts, params["expected_image"],
            params["expected_modules"], pools=[] if (params["nodes"] or params["node_selector"])
            else (params["pools"] or ["worker"]), warnings=self.warnings,
            generated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            skipped_reason="check mode: no debug pods run"
            if self.module.check_mode and params["method"] == "pods" else None)
        report["method"] = params["method"]
        report["api_url"] = self.cluster
        report["table"] = _inspect.table_lines(report)
        report["table_header"] = _inspect.table_header()
        return report

    def run_mco_state(self, selected):
        """Verdicts from the nodes' machine-config state: reads only."""
        rendered_images = {}
        verdicts = []
        for node, pool in selected:
            pool_spec = self.pool_objects[pool].get("spec") or {}
            target = (pool_spec.get("configuration") or {}).get("name")
            if target and target not in rendered_images:
                rendered = self._json(_retry(lambda: self.mc_api.get(name=target, serialize=False), self.deadline))
                rendered_images[target] = (rendered.get("spec") or {}).get("osImageURL")
            verdicts.append(_inspect.mco_state_verdict(
                self.node_objects[node], pool, target, rendered_images.get(target),
                self.params["expected_image"], self.params["expected_modules"]))
        nodes = [dict(name=v["node"], pool=v["pool"], commands=[], ok=None) for v in verdicts]
        for warning in self.warnings:
            self.module.warn(warning)
        return dict(changed=False, cluster=self.cluster, namespace=self.namespace, image="", nodes=nodes,
                    pods_created=0, pods_left=[], elapsed_seconds=round(time.monotonic() - self.started, 1),
                    report=self.report(verdicts))

    def run(self):
        params = self.params
        selected = self.select_nodes()
        if params["method"] == "mco_state":
            return self.run_mco_state(selected)
        verify = self.plan(selected)
        if not self.module.check_mode and self.jobs:
            self.image = self.resolve_image()
            self.ensure_namespace()
            try:
                self.run_jobs()
            finally:
                self.cleanup()
        nodes = []
        verdicts = []
        for node, pool in selected:
            jobs = [j for j in self.jobs if j.node == node]
            entry = {
                "name": node,
                "pool": pool,
                "commands": [j.as_dict() for j in jobs],
            }
            entry["ok"] = None if self.module.check_mode else all(c["rc"] == 0 for c in entry["commands"])
            if verify and not self.module.check_mode:
                outputs = {}
                errors = {}
                for job in jobs:
                    result = job.as_dict()
                    # grep exits 1 (nothing read) or 2 (a file missing): the output still tells.
                    usable = result["rc"] == 0 or (job.key == "parameters" and result["rc"] in (1, 2))
                    if usable and not job.error:
                        outputs[job.key] = job.stdout
                    else:
                        errors[job.key] = result["error"] or "exit code %s" % result["rc"]
                verdict = _inspect.node_verdict(
                    node, params["expected_image"], params["expected_modules"], outputs, errors,
                    check_parameters=params["check_parameters"], pool=pool)
                verdicts.append(verdict)
                if "rpm_ostree" in outputs:
                    try:
                        entry["rpm_ostree"] = _inspect.booted_deployment(outputs["rpm_ostree"])
                    except ValueError:
                        entry["rpm_ostree"] = None
                if "modules" in outputs:
                    entry["modules"] = _inspect.parse_modules(outputs["modules"])
            nodes.append(entry)
        result = dict(
            changed=self.changed,
            cluster=self.cluster,
            namespace=self.namespace,
            image=self.image or "",
            nodes=nodes,
            pods_created=self.pods_created,
            pods_left=self.pods_left,
            elapsed_seconds=round(time.monotonic() - self.started, 1),
        )
        if verify:
            result["report"] = self.report(verdicts)
        for warning in self.warnings:
            self.module.warn(warning)
        if self.pods_left:
            self.module.warn("debug pods could not be deleted: %s" % ", ".join(self.pods_left))
        return result


def argument_spec():
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        nodes=dict(type="list", elements="str"),
        pools=dict(type="list", elements="str"),
        node_selector=dict(type="str"),
        commands=dict(type="list", elements="raw", default=[]),
        expected_image=dict(type="str"),
        expected_modules=dict(type="list", elements="dict"),
        check_parameters=dict(type="bool", default=True),
        namespace=dict(type="str", default=_inspect.DEFAULT_NAMESPACE),
        create_namespace=dict(type="bool", default=True),
        image=dict(type="str", default=""),
        parallel=dict(type="int", default=20),
        timeout=dict(type="int", default=300),
        cluster_name=dict(type="str"),
        method=dict(type="str", default="pods", choices=["pods", "mco_state"]),
    )
    return spec


def main():
    module = AnsibleK8SModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[["nodes", "pools", "node_selector"]],
        supports_check_mode=True,
    )
    params = module.params
    if params["method"] == "mco_state" and (params["nodes"] or params["node_selector"]):
        module.fail_json(msg="method=mco_state reads the pools' rendered configs: select nodes with pools, "
                             "not nodes or node_selector")
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout must be a positive number of seconds")
    if params["parallel"] <= 0:
        module.fail_json(msg="parallel must be at least 1")
    if not (params["commands"] or params["expected_image"] or params["expected_modules"]):
        module.fail_json(msg="nothing to run: give commands, expected_image or expected_modules")
    for entry in params["expected_modules"] or []:
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            module.fail_json(msg="each of expected_modules needs a name, got %r" % (entry,))
        if entry.get("options") is not None and not isinstance(entry["options"], str):
            module.fail_json(msg="expected_modules %s: options must be a string like 'a=1 b=2'" % entry["name"])
        if "load_at_boot" in entry:
            try:
                entry["load_at_boot"] = boolean(entry["load_at_boot"], strict=True)
            except TypeError:
                module.fail_json(msg="expected_modules %s: load_at_boot must be a boolean" % entry["name"])
    for command in params["commands"]:
        if not isinstance(command, (list, str)) or not _inspect.command_argv(command):
            module.fail_json(msg="each of commands must be a non-empty string or list, got %r" % (command,))
    try:
        RequestCounter(USER_AGENT).install()
        client = get_api_client(module=module)
        inspector = Inspector(module, client)
        module.exit_json(**inspector.run())
    except CoreException as exc:
        module.fail_from_exception(exc)
    except (DynamicApiError, ApiException) as exc:
        body = getattr(exc, "body", None) or getattr(exc, "reason", None) or ""
        module.fail_json(msg="Kubernetes API error (%s): %s" % (_status(exc), to_native(body)), status=_status(exc))
    except (Urllib3HTTPError, OSError, ValueError) as exc:
        module.fail_json(msg="Could not talk to the cluster's API: %s" % to_native(exc))


if __name__ == "__main__":
    main()
