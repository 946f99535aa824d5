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

import copy
import datetime
import json
import os
import threading
import time

try:
    import queue
except ImportError:  # pragma: no cover - Python 2 is not supported anyway
    import Queue as queue  # noqa: N813

from ansible.module_utils.common.text.converters import to_native

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.ocp.kmod_layering.plugins.module_utils import _mco
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT_MARGIN,
    RequestCounter,
    Urllib3HTTPError,
    backoff,
    call_with_retry,
    status_code,
)

try:
    from kubernetes import watch as k8s_watch
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic.exceptions import DynamicApiError
    from kubernetes.dynamic.resource import Resource
except ImportError:
    # AnsibleK8SModule reports the missing library.
    ApiException = DynamicApiError = Exception
    Resource = None

MCO_GROUP = "machineconfiguration.openshift.io"
USER_AGENT = "ocp.kmod_layering.mco_rollout_wait"
# Longest single watch connection; the API server ends it, we resume from the
# last resourceVersion (the usual client-go range is 5-10 minutes).
MAX_WATCH_SECONDS = 300
# Worth retrying at most this many times in a row.
MAX_FAILURES = 8


class WatchFailed(Exception):
    pass


class ResourceWatcher(object):
    """Watches one resource kind in a thread and feeds a queue.

    Queue items: ``("event", kind, type, object)``, ``("sync", kind, items)``
    after a relist, ``("error", kind, exception)`` when it gives up.
    """

    def __init__(self, kind, resource, resource_version, events, deadline, lister, read_timeout=READ_TIMEOUT_MARGIN):
        self.kind = kind
        self.resource = resource
        self.resource_version = resource_version
        self.events = events
        self.deadline = deadline
        self.lister = lister
        self.read_timeout = read_timeout
        self.stopped = threading.Event()
        self.watches = 0
        self.relists = 0
        self.thread = threading.Thread(target=self._run, name="watch-%s" % kind)
        self.thread.daemon = True  # a blocked read must not hold the module's exit

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopped.set()

    def _relist(self):
        items, resource_version = call_with_retry(self.lister, self.deadline, self.stopped)
        self.relists += 1
        self.resource_version = resource_version
        self.events.put(("sync", self.kind, items))

    def _run(self):
        failures = 0
        last_error = None
        while not self.stopped.is_set():
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return
            seconds = int(max(1, min(remaining + 1, MAX_WATCH_SECONDS)))
            watcher = k8s_watch.Watch()
            opened = time.monotonic()
            received = 0
            try:
                self.watches += 1
                stream = watcher.stream(
                    self.resource.get,
                    resource_version=self.resource_version,
                    timeout_seconds=seconds,
                    allow_watch_bookmarks=True,
                    serialize=False,
                    _request_timeout=(CONNECT_TIMEOUT, seconds + self.read_timeout),
                )
                for event in stream:
                    if self.stopped.is_set():
                        return
                    if not event:
                        continue
                    failures = 0
                    received += 1
                    obj = event.get("raw_object") or {}
                    version = (obj.get("metadata") or {}).get("resourceVersion")
                    if version:
                        self.resource_version = version
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        self.events.put(("event", self.kind, event["type"], obj))
                # The server ended the watch (timeoutSeconds): resume. One
                # that ends at once, empty, is a failure (no hot loop).
                if not received and time.monotonic() - opened < 1:
                    failures += 1
                    last_error = WatchFailed("the server ended the watch at once")
            except (ApiException, DynamicApiError) as exc:
                if status_code(exc) == 410:
                    # Our resourceVersion is too old: list again, then watch.
                    try:
                        self._relist()
                    except Exception as list_exc:  # pylint: disable=broad-except
                        self.events.put(("error", self.kind, list_exc))
                        return
                    continue
                if status_code(exc) in (401, 403, 404):
                    self.events.put(("error", self.kind, exc))
                    return
                failures += 1
                last_error = exc
            except (Urllib3HTTPError, OSError, ValueError) as exc:
                # Dropped connection or read timeout: resume from the last version.
                failures += 1
                last_error = exc
            if failures > MAX_FAILURES:
                self.events.put(("error", self.kind, WatchFailed(
                    "watch of %s keeps failing: %s" % (self.kind, to_native(last_error)))))
                return
            if failures:
                # Back off on repeated failures (not a poll interval).
                self.stopped.wait(backoff(failures))


class RolloutWaiter(object):
    def __init__(self, module, client, target, counter):
        self.module = module
        self.client = client
        self.params = module.params
        self.target = target
        self.cluster = client.configuration.host
        self.counter = counter
        self.started = time.monotonic()
        self.deadline = self.started + self.params["timeout"]
        # Lists and reads: a stalled connection is given up and retried.
        self.request_timeout = (CONNECT_TIMEOUT, self.params["request_timeout"])
        self.progress = []
        self._last_pool_lines = {}
        self._last_node_lines = {}
        self.pickup = {}
        self.done_at = {}
        self.pools = {}
        self.nodes = {}
        self.rendered = {}
        self.stopped = threading.Event()  # never set: lets retries wait without a bare sleep
        self.progress_fd = None
        if self.params.get("progress_file"):
            try:
                directory = os.path.dirname(self.params["progress_file"])
                if directory and not os.path.isdir(directory):
                    try:
                        os.makedirs(directory, 0o755)
                    except OSError:
                        if not os.path.isdir(directory):  # else another fork made it first
                            raise
                # Line buffered, append: safe to tail -f and to share between forks.
                self.progress_fd = open(self.params["progress_file"], "a", 1)
            except (IOError, OSError) as exc:
                module.fail_json(msg="Cannot open progress_file %s: %s" % (self.params["progress_file"], to_native(exc)))

        # Fixed, well-known API paths: no discovery round trips.
        dynamic = client.client
        self.pool_api = Resource(prefix="apis", group=MCO_GROUP, api_version="v1", kind="MachineConfigPool",
                                 name="machineconfigpools", client=dynamic)
        self.node_api = Resource(prefix="api", group="", api_version="v1", kind="Node", name="nodes",
                                 client=dynamic)
        self.mc_api = Resource(prefix="apis", group=MCO_GROUP, api_version="v1", kind="MachineConfig",
                               name="machineconfigs", client=dynamic)

    # --- output -----------------------------------------------------------

    def log(self, line):
        self.progress.append(line)
        if self.progress_fd:
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.progress_fd.write("%s %s %s\n" % (stamp, self.cluster, line))

    def close(self):
        if self.progress_fd:
            self.progress_fd.close()
            self.progress_fd = None

    def result(self, evaluations, **extra):
        pools = []
        for name in self.params["pools"]:
            if name not in evaluations:
                continue
            entry = evaluations[name].as_dict()
            entry["pickup_seconds"] = self.pickup.get(name)
            entry["done_seconds"] = self.done_at.get(name)
            pools.append(entry)
        out = dict(
            changed=False,
            cluster=self.cluster,
            target=dict(machine_config=self.target.machine_config, os_image_url=self.target.os_image_url,
                        absent_machine_configs=list(self.target.absent_machine_configs)),
            pools=pools,
            done=bool(pools) and all(p["done"] or (p["phase"] == _mco.PHASE_PAUSED and self.params["on_paused"] == "ignore") for p in pools),
            elapsed_seconds=round(time.monotonic() - self.started, 1),
            api_requests=self.counter.count,
            progress=list(self.progress),
        )
        out.update(extra)
        return out

    def fail(self, msg, evaluations=None):
        self.close()
        self.module.fail_json(msg=msg, **self.result(evaluations or {}))

    # --- API --------------------------------------------------------------

    def list(self, resource):
        # Plain JSON: no ResourceInstance wrapping of (large) Node objects.
        listing = json.loads(resource.get(serialize=False, _request_timeout=self.request_timeout).data)
        items = listing.get("items") or []
        return items, (listing.get("metadata") or {}).get("resourceVersion")

    def get_machine_config(self, name):
        try:
            return json.loads(self.mc_api.get(name=name, serialize=False, _request_timeout=self.request_timeout).data)
        except DynamicApiError as exc:
            if status_code(exc) == 404:
                return None
            raise

    def prepare_target(self):
        """One list of MachineConfigs: ours must exist, its osImageURL becomes a
        target, and no later MachineConfig may override the image."""
        machineconfigs, _version = call_with_retry(lambda: self.list(self.mc_api), self.deadline, self.stopped)
        if self.target.machine_config:
            ours = [mc for mc in machineconfigs if mc["metadata"]["name"] == self.target.machine_config]
            if not ours:
                self.fail("MachineConfig %s not found on cluster %s: apply it before waiting for its rollout."
                          % (self.target.machine_config, self.cluster))
            for name in self.params["pools"]:
                selector = (self.pools[name].get("spec") or {}).get("machineConfigSelector")
                if not _mco.pool_machine_configs(self.pools[name], ours):
                    # A wrong role label: the pool would never render it.
                    self.fail("MachineConfig %s (labels %s) is not selected by pool %s on cluster %s "
                              "(machineConfigSelector %s): it will never roll out there." % (
                                  self.target.machine_config, json.dumps(ours[0]["metadata"].get("labels") or {}),
                                  name, self.cluster, json.dumps(selector, sort_keys=True)))
            image = (ours[0].get("spec") or {}).get("osImageURL")
            if image and not self.target.os_image_url:
                self.target.os_image_url = image
        if not self.target.os_image_url:
            return
        for name in self.params["pools"]:
            selected = _mco.pool_machine_configs(self.pools[name], machineconfigs)
            effective = _mco.effective_os_image_url(selected, None)
            if effective is not None and effective != self.target.os_image_url:
                setters = _mco.os_image_url_setters(selected)
                self.fail(
                    "Pool %s on cluster %s would not render osImageURL %s: the last MachineConfig (by name) "
                    "that sets an osImageURL for this pool is %s, with %s. MachineConfigs setting osImageURL, "
                    "in merge order: %s." % (
                        name, self.cluster, self.target.os_image_url, setters[-1], effective, ", ".join(setters)))

    def rendered_configs(self):
        """The rendered MachineConfigs the pools point at (read once each)."""
        if self.target.os_image_url:
            for pool_name in self.params["pools"]:
                configuration = ((self.pools.get(pool_name) or {}).get("spec") or {}).get("configuration") or {}
                name = configuration.get("name")
                if (self.target.machine_config
                        and self.target.machine_config not in _mco.config_sources(configuration)):
                    continue  # pending by its sources already; no need to read it
                if name and name not in self.rendered:
                    mc = call_with_retry(lambda: self.get_machine_config(name), self.deadline, self.stopped)
                    if mc is not None:
                        self.rendered[name] = mc
        return self.rendered

    # --- evaluation ---------------------------------------------------------

    def evaluate(self):
        rendered = self.rendered_configs()
        all_pools = list(self.pools.values())
        all_nodes = list(self.nodes.values())
        now = round(time.monotonic() - self.started, 1)
        evaluations = {}
        for name in self.params["pools"]:
            pool = self.pools.get(name)
            if pool is None:
                self.fail("MachineConfigPool %s not found on cluster %s (pools there: %s)." % (
                    name, self.cluster, ", ".join(sorted(self.pools)) or "none"))
            members = _mco.pool_nodes(pool, all_pools, all_nodes)
            evaluation = _mco.evaluate_pool(pool, members, self.target, rendered)
            evaluations[name] = evaluation
            if evaluation.target_included and evaluation.phase != _mco.PHASE_PENDING:
                self.pickup.setdefault(name, now)
            if evaluation.done:
                self.pickup.setdefault(name, now)
                self.done_at.setdefault(name, now)
            self.report(evaluation)
        return evaluations

    def report(self, evaluation):
        line = evaluation.progress_line()
        if self._last_pool_lines.get(evaluation.name) != line:
            self._last_pool_lines[evaluation.name] = line
            self.log(line)
        for node in evaluation.nodes:
            node_line = _mco.node_progress_line(node)
            key = (evaluation.name, node["name"])
            if self._last_node_lines.get(key) != node_line:
                self._last_node_lines[key] = node_line
                self.log("pool %s %s" % (evaluation.name, node_line))

    def decide(self, evaluations):
        """None to keep waiting, else ("ok"|"fail", message)."""
        waiting = []
        for name in self.params["pools"]:
            ev = evaluations[name]
            if ev.done:
                continue
            if ev.phase == _mco.PHASE_DEGRADED and self.params["on_degraded"] == "fail":
                return "fail", "MachineConfigPool %s on cluster %s is degraded: %s" % (name, self.cluster, ev.reason)
            if ev.phase == _mco.PHASE_PAUSED:
                if self.params["on_paused"] == "fail":
                    return "fail", (
                        "MachineConfigPool %s on cluster %s is paused (spec.paused: true); the rollout to %s will "
                        "not start. Unpause it (oc patch machineconfigpool %s --type merge -p "
                        "'{\"spec\":{\"paused\":false}}') or use on_paused=wait." % (
                            name, self.cluster, ev.rendered_config or "the new rendered config", name))
                if self.params["on_paused"] == "ignore":
                    continue
            waiting.append(name)
        if waiting:
            return None
        return "ok", ""

    # --- main -----------------------------------------------------------------

    def apply(self, item):
        kind = item[1]
        store = self.pools if kind == "pools" else self.nodes
        if item[0] == "event":
            _tag, _kind, event_type, obj = item
            name = (obj.get("metadata") or {}).get("name")
            if not name:
                return
            if event_type == "DELETED":
                store.pop(name, None)
            else:
                store[name] = obj
        elif item[0] == "sync":
            store.clear()
            for obj in item[2]:
                store[obj["metadata"]["name"]] = obj
        elif item[0] == "error":
            raise item[2]

    def run(self):
        try:
            pools, pool_version = call_with_retry(lambda: self.list(self.pool_api), self.deadline, self.stopped)
        except DynamicApiError as exc:
            if status_code(exc) != 404:
                raise
            self.fail("Cluster %s serves no MachineConfigPools (%s/v1): is it OpenShift?" % (self.cluster, MCO_GROUP))
        nodes, node_version = call_with_retry(lambda: self.list(self.node_api), self.deadline, self.stopped)
        self.apply(("sync", "pools", pools))
        self.apply(("sync", "nodes", nodes))
        for name in self.params["pools"]:
            if name not in self.pools:
                self.fail("MachineConfigPool %s not found on cluster %s (pools there: %s)." % (
                    name, self.cluster, ", ".join(sorted(self.pools)) or "none"))
        self.prepare_target()
        evaluations = self.evaluate()

        if self.module.check_mode:
            return self.result(evaluations, msg="check mode: evaluated once, not waited")
        decision = self.decide(evaluations)
        if decision is not None:
            return self.finish(decision, evaluations)

        events = queue.Queue()
        watchers = [
            ResourceWatcher("pools", self.pool_api, pool_version, events, self.deadline,
                            lambda: self.list(self.pool_api), self.params["request_timeout"]),
            ResourceWatcher("nodes", self.node_api, node_version, events, self.deadline,
                            lambda: self.list(self.node_api), self.params["request_timeout"]),
        ]
        for watcher in watchers:
            watcher.start()
        try:
            while True:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    return self.finish(("fail", self.timeout_message(evaluations)), evaluations)
                try:
                    item = events.get(timeout=remaining)
                except queue.Empty:
                    continue
                self.apply(item)
                evaluations = self.evaluate()
                # Take everything already queued before deciding, but evaluate
                # (and so log) after each event: a node that went Working ->
                # Done within one batch still shows both states in the progress.
                while True:
                    try:
                        self.apply(events.get_nowait())
                    except queue.Empty:
                        break
                    evaluations = self.evaluate()
                decision = self.decide(evaluations)
                if decision is not None:
                    return self.finish(decision, evaluations)
        finally:
            for watcher in watchers:
                watcher.stop()

    def timeout_message(self, evaluations):
        parts = []
        for name in self.params["pools"]:
            ev = evaluations[name]
            if not ev.done:
                parts.append(ev.progress_line())
        return "Timed out after %ds waiting on cluster %s for the rollout of %s: %s" % (
            self.params["timeout"], self.cluster, self.target.describe(), "; ".join(parts))

    def finish(self, decision, evaluations):
        verdict, message = decision
        if verdict == "fail":
            self.log("failed: " + message)
            self.fail(message, evaluations)
        for name in self.params["pools"]:
            ev = evaluations[name]
            if ev.phase == _mco.PHASE_PAUSED:
                self.module.warn("MachineConfigPool %s on cluster %s is paused; not waited for (on_paused=ignore)."
                                 % (name, self.cluster))
        self.log("done: %s rolled out to pool(s) %s" % (self.target.describe(), ", ".join(self.params["pools"])))
        self.close()
        return self.result(evaluations)


def argument_spec():
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
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
    return spec


def main():
    module = AnsibleK8SModule(
        argument_spec=argument_spec(),
        required_one_of=[["machine_config", "os_image_url", "absent_machine_configs"]],
        supports_check_mode=True,
    )
    if module.params["timeout"] <= 0:
        module.fail_json(msg="timeout must be a positive number of seconds")
    if module.params["request_timeout"] <= 0:
        module.fail_json(msg="request_timeout must be a positive number of seconds")
    if not module.params["pools"]:
        module.fail_json(msg="pools must name at least one MachineConfigPool")
    target = _mco.RolloutTarget(module.params["machine_config"], module.params["os_image_url"],
                                module.params["absent_machine_configs"])
    try:
        counter = RequestCounter(USER_AGENT).install()
        client = get_api_client(module=module)
        waiter = RolloutWaiter(module, client, target, counter)
        module.exit_json(**waiter.run())
    except CoreException as exc:
        module.fail_from_exception(exc)
    except (DynamicApiError, ApiException) as exc:
        body = getattr(exc, "body", None) or getattr(exc, "reason", None) or ""
        module.fail_json(msg="Kubernetes API error (%s): %s" % (status_code(exc), to_native(body)),
                         status=status_code(exc))
    except (WatchFailed, Urllib3HTTPError, OSError) as exc:
        module.fail_json(msg="Could not watch the cluster's API: %s" % to_native(exc))


if __name__ == "__main__":
    main()
