# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Starting a cluster upgrade and following it to its end: the
ClusterVersion, the ClusterOperators and the MachineConfigPools, watched
(with relist) as the rollout waiter watches pools and nodes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import queue
import time

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _upgrade
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import ClusterError, Failed
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s_watch import ResourceWatcher
from ansible_collections.ocp.kmod_layering.plugins.module_utils._mco_wait import ProgressLog

WATCHED = ("ClusterVersion", "ClusterOperator", "MachineConfigPool")


class UpgradeWaiter(object):
    """Asks ``client``'s cluster to upgrade to ``target`` ({version, image})
    and, with ``params["wait"]``, waits until the upgrade is Completed.

    ``params``: wait, timeout, failing_timeout, request_timeout,
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
        self.objects = dict((kind, {}) for kind in WATCHED)
        self._last_line = None
        self.failing_since = None
        self.changed = False
        self.from_version = ""
        self.progress_log = ProgressLog(params.get("progress_file"), self.cluster)
        self.progress = self.progress_log.lines
        self.log = self.progress_log.log
        self.close = self.progress_log.close

    @property
    def cluster_version(self):
        return self.objects["ClusterVersion"].get("version") or {}

    def result(self, phase, message, **extra):
        cv = self.cluster_version
        out = dict(
            changed=self.changed,
            cluster=self.cluster,
            from_version=self.from_version,
            to_version=self.target["version"],
            image=self.target.get("image") or "",
            phase=phase,
            message=message,
            done=phase == _upgrade.PHASE_COMPLETED,
            history=[dict((k, e.get(k)) for k in ("state", "version", "image", "startedTime", "completionTime"))
                     for e in _upgrade.history(cv)[:5]],
            holders=_upgrade.holders(self.target["version"], list(self.objects["ClusterOperator"].values()),
                                     list(self.objects["MachineConfigPool"].values())) if cv else [],
            elapsed_seconds=round(time.monotonic() - self.started, 1),
            api_requests=self.counter.count if self.counter else self.client.requests,
            progress=list(self.progress),
        )
        out.update(extra)
        return out

    def fail(self, msg, phase, message):
        self.log("failed: " + msg)
        self.close()
        raise Failed(msg, **self.result(phase, message))

    # --- reads and the one write --------------------------------------------

    def list_kind(self, kind):
        try:
            items, version = self.client.list(kind)
        except ClusterError as exc:
            if exc.status == 404 and kind == "ClusterOperator":
                return None  # not served: nothing to wait for there, nothing to watch
            if exc.status == 404:
                self.fail("Cluster %s serves no %s: is it OpenShift?" % (self.cluster, kind), "unknown", "")
            raise
        store = self.objects[kind]
        store.clear()
        for obj in items:
            store[obj["metadata"]["name"]] = obj
        return version

    def apply(self, item):
        if item[0] == "error":
            raise item[2]
        store = self.objects[item[1]]
        if item[0] == "sync":
            store.clear()
            for obj in item[2]:
                store[obj["metadata"]["name"]] = obj
            return
        _tag, _kind, event_type, obj = item
        name = (obj.get("metadata") or {}).get("name")
        if name and event_type == "DELETED":
            store.pop(name, None)
        elif name:
            store[name] = obj

    def start(self):
        """Sets spec.desiredUpdate (not in check mode)."""
        desired_update = {"version": self.target["version"], "force": False}
        if self.target.get("image"):
            desired_update["image"] = self.target["image"]
        asked = (self.cluster_version.get("spec") or {}).get("desiredUpdate") or {}
        if asked.get("version") == desired_update["version"] and asked.get("image") == desired_update.get("image"):
            return  # asked for by an earlier run; the CVO has not acted on it yet
        self.changed = True
        if self.check_mode:
            return
        self.log("asking for the upgrade from %s to %s (spec.desiredUpdate)"
                 % (self.from_version, self.target["version"]))
        updated = self.client.merge_patch("ClusterVersion", "version", {"spec": {"desiredUpdate": desired_update}})
        self.objects["ClusterVersion"]["version"] = updated

    def evaluate(self):
        cv = self.cluster_version
        phase, message = _upgrade.upgrade_phase(cv, self.target)
        line = _upgrade.progress_line(cv, self.target, list(self.objects["ClusterOperator"].values()),
                                      list(self.objects["MachineConfigPool"].values()))
        if line != self._last_line:
            self._last_line = line
            self.log(line)
        # Only the upgrade's own Failing counts: before the CVO takes the
        # desiredUpdate it may still report one from reconciling the old
        # release (an operator that degraded meanwhile).
        if phase == _upgrade.PHASE_PROGRESSING and _upgrade.is_true(cv, "Failing"):
            if self.failing_since is None:
                self.failing_since = time.monotonic()
        else:
            self.failing_since = None
        return phase, message

    def decide(self, phase, message):
        """None to keep waiting, else the result (raises on a failure)."""
        version = self.target["version"]
        if phase == _upgrade.PHASE_COMPLETED:
            self.log("done: cluster version is %s" % version)
            self.close()
            return self.result(phase, message)
        if phase == _upgrade.PHASE_REFUSED:
            self.fail("Cluster %s did not accept the upgrade to %s: %s" % (self.cluster, version, message),
                      phase, message)
        if phase == _upgrade.PHASE_ELSEWHERE:
            self.fail("Cluster %s: %s, not to %s; wait for it to finish (oc adm upgrade) and run again."
                      % (self.cluster, message, version), phase, message)
        if self.failing_since is not None and \
                time.monotonic() - self.failing_since >= self.params["failing_timeout"]:
            held = self.result(phase, message)["holders"]
            self.fail("Cluster %s: the upgrade to %s has been failing for %ds: %s%s" % (
                self.cluster, version, self.params["failing_timeout"],
                _upgrade.condition(self.cluster_version, "Failing").get("message") or "?",
                (" (waiting on " + "; ".join(held) + ")") if held else ""), phase, message)
        return None

    def run(self):
        versions = dict((kind, self.list_kind(kind)) for kind in WATCHED)
        cv = self.cluster_version
        if not cv:
            self.fail("Cluster %s has no ClusterVersion 'version'." % self.cluster, "unknown", "")
        self.from_version = _upgrade.current_version(cv)
        phase, message = self.evaluate()
        if phase == _upgrade.PHASE_ELSEWHERE:
            self.decide(phase, message)
        if phase in (_upgrade.PHASE_NOT_STARTED, _upgrade.PHASE_REFUSED):
            self.start()
            if self.check_mode:
                self.close()
                return self.result(phase, "check mode: would set spec.desiredUpdate to %s" % self.target["version"])
            phase, message = self.evaluate()
        if phase == _upgrade.PHASE_COMPLETED:
            # Also when it completed before this run's first read (a rerun
            # after the operator that held it recovered): the progress file
            # says "done" whenever a run ends with the upgrade done.
            return self.decide(phase, message)
        if not self.params["wait"]:
            self.close()
            return self.result(phase, message)
        if self.check_mode:
            self.close()
            return self.result(phase, "check mode: the upgrade is under way; not waited")

        events = queue.Queue()
        watchers = [self.watcher(self.client, kind, version, events, self.deadline,
                                 read_timeout=self.params["request_timeout"]).start()
                    for kind, version in versions.items() if version is not None]
        try:
            while True:
                decision = self.decide(phase, message)
                if decision is not None:
                    return decision
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    held = self.result(phase, message)["holders"]
                    self.fail("Timed out after %ds waiting on cluster %s for the upgrade to %s: %s%s" % (
                        self.params["timeout"], self.cluster, self.target["version"], message,
                        ("; waiting on " + "; ".join(held)) if held else ""), phase, message)
                try:
                    # Wake at least every few seconds: a Failing condition times out without an event.
                    self.apply(events.get(timeout=min(remaining, 5.0)))
                except queue.Empty:
                    continue
                phase, message = self.evaluate()
                # Everything already queued before deciding, evaluated (and so
                # logged) after each event: every step shows in the progress.
                while True:
                    try:
                        self.apply(events.get_nowait())
                    except queue.Empty:
                        break
                    phase, message = self.evaluate()
        finally:
            for watcher in watchers:
                watcher.stop()
