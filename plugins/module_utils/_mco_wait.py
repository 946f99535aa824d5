# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The rollout waiter of ``mco_rollout_wait``: the I/O around ``_mco``'s rules.

One list of pools, nodes and MachineConfigs; then the pools and nodes are
watched (``_k8s_watch``) and every event is evaluated with
``_mco.evaluate_pool`` until the pools are done, one fails (degraded,
paused) or the timeout passes. Progress goes to the result and, line
buffered, to a progress file a user can ``tail -f``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import time

try:
    import queue
except ImportError:  # pragma: no cover - Python 2 is not supported anyway
    import Queue as queue  # noqa: N813

from ansible.module_utils.common.text.converters import to_native

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _mco
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import ClusterError, Failed
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s_watch import ResourceWatcher


def open_progress_file(path):
    """Line buffered, append: safe to ``tail -f`` and to share between forks."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, 0o755, exist_ok=True)  # another fork may make it first
    return open(path, "a", 1)


class ProgressLog(object):
    """The progress lines of a wait: kept (``lines``) for the module's
    result and, with ``path``, appended as they happen, timestamped and
    naming ``cluster`` (one file can follow a whole fleet)."""

    def __init__(self, path, cluster):
        self.lines = []
        self.cluster = cluster
        self.fd = None
        if path:
            try:
                self.fd = open_progress_file(path)
            except (IOError, OSError) as exc:
                raise Failed("Cannot open progress_file %s: %s" % (path, to_native(exc)))

    def log(self, line):
        self.lines.append(line)
        if self.fd:
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.fd.write("%s %s %s\n" % (stamp, self.cluster, line))

    def close(self):
        if self.fd:
            self.fd.close()
            self.fd = None


class RolloutWaiter(object):
    """Waits on ``client`` (a ``ClusterClient``) for ``target`` (an
    ``_mco.RolloutTarget``) to be rolled out to ``params["pools"]``.

    ``params``: pools, timeout, request_timeout, on_paused, on_degraded,
    progress_file. ``run()`` returns the module result or raises ``Failed``.
    """

    def __init__(self, client, params, target, counter=None, check_mode=False, watcher=ResourceWatcher):
        self.client = client
        self.params = params
        self.target = target
        self.cluster = client.name
        self.counter = counter
        self.check_mode = check_mode
        self.watcher = watcher
        self.started = time.monotonic()
        self.deadline = self.started + params["timeout"]
        self.progress = []
        self.warnings = []
        self._last_pool_lines = {}
        self._last_node_lines = {}
        self.pickup = {}
        self.done_at = {}
        self.pools = {}
        self.nodes = {}
        self.rendered = {}
        self.progress_log = ProgressLog(params.get("progress_file"), self.cluster)
        self.progress = self.progress_log.lines
        self.log = self.progress_log.log
        self.close = self.progress_log.close

    def result(self, evaluations, **extra):
        pools = []
        for name in self.params["pools"]:
            if name not in evaluations:
                continue
            entry = evaluations[name].as_dict()
            entry["pickup_seconds"] = self.pickup.get(name)
            entry["done_seconds"] = self.done_at.get(name)
            pools.append(entry)
        ignore_paused = self.params["on_paused"] == "ignore"
        out = dict(
            changed=False,
            cluster=self.cluster,
            target=dict(machine_config=self.target.machine_config, os_image_url=self.target.os_image_url,
                        absent_machine_configs=list(self.target.absent_machine_configs)),
            pools=pools,
            done=bool(pools) and all(p["done"] or (p["phase"] == _mco.PHASE_PAUSED and ignore_paused) for p in pools),
            elapsed_seconds=round(time.monotonic() - self.started, 1),
            api_requests=self.counter.count if self.counter else self.client.requests,
            progress=list(self.progress),
            warnings=list(self.warnings),
        )
        out.update(extra)
        return out

    def fail(self, msg, evaluations=None):
        self.close()
        # The warnings ride along: run_module gives them as the module's, a failure's too.
        raise Failed(msg, **self.result(evaluations or {}))

    # --- reads --------------------------------------------------------------

    def prepare_target(self):
        """One list of MachineConfigs: ours must exist, its osImageURL becomes a
        target, and no later MachineConfig may override the image."""
        machineconfigs, _version = self.client.list("MachineConfig")
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
                    mc = self.client.get("MachineConfig", name, missing_ok=True)
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
        store = self.pools if item[1] == "MachineConfigPool" else self.nodes
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
            pools, pool_version = self.client.list("MachineConfigPool")
        except ClusterError as exc:
            if exc.status != 404:
                raise
            self.fail("Cluster %s serves no MachineConfigPools (%s/v1): is it OpenShift?"
                      % (self.cluster, _mco.MCO_API_GROUP))
        nodes, node_version = self.client.list("Node")
        self.apply(("sync", "MachineConfigPool", pools))
        self.apply(("sync", "Node", nodes))
        for name in self.params["pools"]:
            if name not in self.pools:
                self.fail("MachineConfigPool %s not found on cluster %s (pools there: %s)." % (
                    name, self.cluster, ", ".join(sorted(self.pools)) or "none"))
        self.prepare_target()
        evaluations = self.evaluate()

        if self.check_mode:
            return self.result(evaluations, msg="check mode: evaluated once, not waited")
        decision = self.decide(evaluations)
        if decision is not None:
            return self.finish(decision, evaluations)

        events = queue.Queue()
        watchers = [
            self.watcher(self.client, kind, version, events, self.deadline,
                         read_timeout=self.params["request_timeout"]).start()
            for kind, version in (("MachineConfigPool", pool_version), ("Node", node_version))]
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
                if decision is not None and self.degraded_without_a_node(evaluations):
                    evaluations = self.reread_nodes()
                    decision = self.decide(evaluations)
                if decision is not None:
                    return self.finish(decision, evaluations)
        finally:
            for watcher in watchers:
                watcher.stop()

    def degraded_without_a_node(self, evaluations):
        """A degraded pool whose nodes, as watched so far, show no degraded node."""
        return any(
            evaluations[name].phase == _mco.PHASE_DEGRADED and not evaluations[name].degraded_nodes
            for name in self.params["pools"])

    def reread_nodes(self):
        """One fresh list of the nodes, then evaluate again.

        The pool and node watches are separate streams: the pool's Degraded,
        which the MCO writes after the node's state annotation, can arrive
        before that node's event. The fresh list names the node and the
        reason it reports instead of the pool's bare condition."""
        nodes, _version = self.client.list("Node")
        self.apply(("sync", "Node", nodes))
        return self.evaluate()

    def timeout_message(self, evaluations):
        parts = [evaluations[name].progress_line() for name in self.params["pools"] if not evaluations[name].done]
        return "Timed out after %ds waiting on cluster %s for the rollout of %s: %s" % (
            self.params["timeout"], self.cluster, self.target.describe(), "; ".join(parts))

    def finish(self, decision, evaluations):
        verdict, message = decision
        if self.params["on_paused"] == "ignore":
            for name in self.params["pools"]:
                if evaluations[name].phase == _mco.PHASE_PAUSED:
                    self.warnings.append("MachineConfigPool %s on cluster %s is paused; not waited for "
                                         "(on_paused=ignore)." % (name, self.cluster))
        if verdict == "fail":
            self.log("failed: " + message)
            self.fail(message, evaluations)
        self.log("done: %s rolled out to pool(s) %s" % (self.target.describe(), ", ".join(self.params["pools"])))
        self.close()
        return self.result(evaluations)
