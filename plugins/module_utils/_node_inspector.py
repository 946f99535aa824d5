# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The I/O around ``_inspect``'s rules, for ``node_inspect`` and ``mco_node_state``.

- :func:`select_nodes`: the nodes of the pools asked for (``_mco.pool_nodes``),
  or of ``nodes`` / ``node_selector``.
- :class:`NodeInspector`: host commands on nodes through ``oc debug``-style
  pods, at most ``parallel`` at a time, followed with one watch
  (``_k8s_watch``), every pod deleted at the end; the verdict per node
  (``_inspect.node_verdict``) and the cluster's report.
- :func:`mco_state_result`: the verdict from the nodes' machine-config state
  alone (annotations and the rendered configs): reads only, no pod.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
import uuid

try:
    import queue
except ImportError:  # pragma: no cover - Python 2 is not supported anyway
    import Queue as queue  # noqa: N813

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _inspect, _mco, _secure_boot
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import ClusterError, Failed
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s_watch import ResourceWatcher

MAX_WATCH_SECONDS = 120
# Exit codes whose output still tells: grep 1 (nothing read) or 2 (a file
# missing), mokutil 255 (no EFI variables: a BIOS boot), modinfo 1 (a module
# not found, the others printed).
USABLE_EXIT_CODES = {"parameters": (1, 2), "sb_files": (1, 2), "sb_state": (255,), "modinfo": (1,)}
MAX_FAILURES = 6


def now_stamp():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Selection(object):
    """The nodes to inspect: ``nodes`` [(node name, pool or None)], and the
    pool and node objects read on the way (by name)."""

    def __init__(self, nodes, pools=None, node_objects=None, warnings=None):
        self.nodes = nodes
        self.pools = pools or {}
        self.node_objects = node_objects or {}
        self.warnings = warnings or []


def select_nodes(client, params):
    """The nodes of ``params``: ``nodes``, else ``node_selector``, else the
    members of ``pools`` (default ``worker``) by the MCO's rule."""
    if params.get("nodes"):
        return Selection([(name, None) for name in params["nodes"]])
    if params.get("node_selector"):
        items, _version = client.list("Node", label_selector=params["node_selector"])
        return Selection([(n["metadata"]["name"], None) for n in items])
    wanted = params.get("pools") or ["worker"]
    try:
        pools, _version = client.list("MachineConfigPool")
    except ClusterError as exc:
        if exc.status == 404:
            raise Failed("Cluster %s serves no MachineConfigPools (%s/v1): is it OpenShift? Use nodes or "
                         "node_selector." % (client.name, _mco.MCO_API_GROUP))
        raise
    by_name = dict((p["metadata"]["name"], p) for p in pools)
    unknown = [p for p in wanted if p not in by_name]
    if unknown:
        raise Failed("MachineConfigPool(s) %s not found on cluster %s (pools there: %s)." % (
            ", ".join(unknown), client.name, ", ".join(sorted(by_name)) or "none"))
    nodes, _version = client.list("Node")
    selected = []
    warnings = []
    for name in wanted:
        members = _mco.pool_nodes(by_name[name], pools, nodes)
        if not members:
            warnings.append("pool %s on cluster %s has no nodes" % (name, client.name))
        selected.extend((n["metadata"]["name"], name) for n in members)
    return Selection(selected, by_name, dict((n["metadata"]["name"], n) for n in nodes), warnings)


def expected_for(params, pool):
    """``(image, kernel)`` the nodes of ``pool`` must run: the pool's entry of
    ``expected_pool_images`` / ``expected_pool_kernels`` (a multi-architecture
    cluster's pools run different images), else ``expected_image`` /
    ``expected_kernel``."""
    images = params.get("expected_pool_images") or {}
    kernels = params.get("expected_pool_kernels") or {}
    return images.get(pool) or params.get("expected_image"), kernels.get(pool) or params.get("expected_kernel")


def cluster_report(params, client, verdicts, warnings, method, skipped_reason=None):
    pools = [] if (params.get("nodes") or params.get("node_selector")) else (params.get("pools") or ["worker"])
    report = _inspect.cluster_report(
        params.get("cluster_name") or client.host, verdicts, params.get("expected_image"),
        params.get("expected_modules"), pools=pools, warnings=warnings, generated_at=now_stamp(),
        skipped_reason=skipped_reason)
    report["method"] = method
    if params.get("expected_pool_images"):
        report["expected_images"] = dict((pool, expected_for(params, pool)[0]) for pool in pools)
    report["api_url"] = client.host
    report["table"] = _inspect.table_lines(report)
    report["table_header"] = _inspect.table_header()
    return report


def mco_state_result(client, params):
    """Verdicts from the nodes' machine-config state: reads only."""
    started = time.monotonic()
    selection = select_nodes(client, params)
    rendered_images = {}
    verdicts = []
    for node, pool in selection.nodes:
        target = ((selection.pools[pool].get("spec") or {}).get("configuration") or {}).get("name")
        if target and target not in rendered_images:
            rendered = client.get("MachineConfig", target)
            rendered_images[target] = (rendered.get("spec") or {}).get("osImageURL")
        image, kernel = expected_for(params, pool)
        verdicts.append(_inspect.kernel_verdict(_inspect.mco_state_verdict(
            selection.node_objects[node], pool, target, rendered_images.get(target),
            image, params.get("expected_modules")),
            selection.node_objects[node], kernel))
    return dict(changed=False, cluster=client.host, namespace=params.get("namespace") or "", image="",
                nodes=[dict(name=v["node"], pool=v["pool"], commands=[], ok=None) for v in verdicts],
                pods_created=0, pods_left=[], elapsed_seconds=round(time.monotonic() - started, 1),
                report=cluster_report(params, client, verdicts, selection.warnings, "mco_state"),
                warnings=selection.warnings)


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


class NodeInspector(object):
    """Host commands (and the verification commands of ``expected_image`` /
    ``expected_modules``) on the selected nodes through debug pods."""

    def __init__(self, client, params, check_mode=False, watcher=ResourceWatcher):
        self.client = client
        self.params = params
        self.check_mode = check_mode
        self.watcher = watcher
        self.cluster = client.name
        self.namespace = params["namespace"]
        self.started = time.monotonic()
        self.deadline = self.started + params["timeout"]
        self.run_id = uuid.uuid4().hex[:6]
        self.changed = False
        self.image = params["image"]
        self.jobs = []
        self.pods_created = 0
        self.pods_left = []

    # --- set-up -------------------------------------------------------------

    def resolve_image(self):
        """``image``, else the cluster's ``openshift/tools:latest``, else the
        image ``oc debug`` falls back to."""
        if self.image:
            return self.image
        try:
            tag = self.client.get("ImageStreamTag", "tools:latest", namespace="openshift", missing_ok=True)
        except ClusterError as exc:
            if exc.status != 403:
                raise
            tag = None
        reference = ((tag or {}).get("image") or {}).get("dockerImageReference")
        return reference or _inspect.FALLBACK_IMAGE

    def ensure_namespace(self):
        existing = self.client.get("Namespace", self.namespace, missing_ok=True)
        if existing is None:
            if not self.params["create_namespace"]:
                raise Failed("Namespace %s does not exist on cluster %s and create_namespace is false."
                             % (self.namespace, self.cluster))
            # 409: created meanwhile by a parallel run.
            self.client.create("Namespace", _inspect.debug_namespace(self.namespace), conflict_ok=True)
            self.changed = True
            return
        patch = _inspect.namespace_patch(existing)
        if patch and self.params["create_namespace"]:
            # Labels and annotations only: a JSON merge patch (maps merge).
            self.client.merge_patch("Namespace", self.namespace, patch)
            self.changed = True

    # --- pods ---------------------------------------------------------------

    def create(self, job):
        body = _inspect.debug_pod(job.node, job.command, self.namespace, self.image, self.run_id, job.index)
        job.pod_name = body["metadata"]["name"]
        try:
            # None: a retried create whose first attempt went through; the pod is ours.
            job.pod = self.client.create("Pod", body, namespace=self.namespace, conflict_ok=True)
            job.created = True
            self.pods_created += 1
        except ClusterError as exc:
            job.done = True
            job.error = "cannot create debug pod %s: %s" % (job.pod_name, exc)

    def finish(self, job, pod):
        job.pod = pod
        job.done = True
        try:
            job.stdout = self.client.text("Pod", job.pod_name, self.namespace, "log",
                                          query=[("container", _inspect.CONTAINER_NAME)])
        except ClusterError as exc:
            job.error = "cannot read the log of debug pod %s: %s" % (job.pod_name, exc.status)
        self.delete(job)

    def delete(self, job):
        if not job.created or job.deleted:
            return
        try:
            job.deleted = self.client.delete("Pod", job.pod_name, namespace=self.namespace, grace_period_seconds=0)
        except ClusterError:
            self.pods_left.append("%s/%s" % (self.namespace, job.pod_name))

    def run_jobs(self):
        by_pod = {}
        waiting = list(self.jobs)
        active = []

        def start_more():
            while waiting and len(active) < self.params["parallel"]:
                job = waiting.pop(0)
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

        selector = "%s=%s" % (_inspect.LABEL_RUN, self.run_id)
        _items, version = self.client.list("Pod", namespace=self.namespace, label_selector=selector)
        start_more()
        events = queue.Queue()
        watcher = self.watcher(self.client, "Pod", version, events, self.deadline, namespace=self.namespace,
                               label_selector=selector, max_watch_seconds=MAX_WATCH_SECONDS,
                               max_failures=MAX_FAILURES).start()
        try:
            while active or waiting:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = events.get(timeout=remaining)
                except queue.Empty:
                    continue
                if item[0] == "error":
                    raise item[2]
                if item[0] == "sync":
                    for pod in item[2]:
                        seen(pod)
                elif item[2] in ("ADDED", "MODIFIED"):
                    seen(item[3])
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
        secure_boot = bool(params.get("secure_boot"))
        verify = bool(params["expected_image"] or params.get("expected_pool_images") or params["expected_modules"]
                      or secure_boot)
        commands = []
        names = [_inspect.normalize_module(m.get("name")) for m in params["expected_modules"] or []]
        if params["expected_image"] or params.get("expected_pool_images") or params["expected_modules"]:
            commands.append(("rpm_ostree", _inspect.CMD_RPM_OSTREE))
            if params["expected_modules"]:
                commands.append(("modules", _inspect.CMD_PROC_MODULES))
        parameters = None
        if params["expected_modules"] and params["check_parameters"]:
            parameters = _inspect.parameters_command(params["expected_modules"])
        if secure_boot:
            # The kernel's Secure Boot files and the parameter files in one
            # grep: a debug pod per (node, command) is the cost that counts.
            commands.append(("sb_state", list(_secure_boot.CMD_SB_STATE)))
            commands.append(("parameters" if parameters else "sb_files",
                             _secure_boot.grep_command(names, parameters[4:] if parameters else None)))
            modinfo = _secure_boot.modinfo_command(names)
            if modinfo:
                commands.append(("modinfo", modinfo))
        elif parameters:
            commands.append(("parameters", parameters))
        for index, command in enumerate(params["commands"]):
            commands.append(("command_%d" % index, command))
        for node, _pool in selected:
            for index, (key, command) in enumerate(commands):
                self.jobs.append(Job(node, key, command, index))
        return verify

    def node_entry(self, node, pool, verify, node_objects):
        """The result entry of one node, and its verdict when verifying."""
        jobs = [j for j in self.jobs if j.node == node]
        entry = {"name": node, "pool": pool, "commands": [j.as_dict() for j in jobs]}
        entry["ok"] = None if self.check_mode else all(c["rc"] == 0 for c in entry["commands"])
        if not verify or self.check_mode:
            return entry, None
        outputs = {}
        errors = {}
        rcs = {}
        for job in jobs:
            result = job.as_dict()
            rcs[job.key] = result["rc"]
            usable = result["rc"] == 0 or result["rc"] in USABLE_EXIT_CODES.get(job.key, ())
            if usable and not job.error:
                outputs[job.key] = job.stdout
            else:
                errors[job.key] = result["error"] or "exit code %s" % result["rc"]
        image, kernel = expected_for(self.params, pool)
        verdict = _inspect.node_verdict(
            node, image, self.params["expected_modules"], outputs, errors,
            check_parameters=self.params["check_parameters"], pool=pool)
        node_object = node_objects.get(node)
        if node_object is None and kernel:
            node_object = self.client.get("Node", node, missing_ok=True)
        _inspect.kernel_verdict(verdict, node_object, kernel)
        if "rpm_ostree" in outputs:
            try:
                entry["rpm_ostree"] = _inspect.booted_deployment(outputs["rpm_ostree"])
            except ValueError:
                entry["rpm_ostree"] = None
        if "modules" in outputs:
            entry["modules"] = _inspect.parse_modules(outputs["modules"])
        if self.params.get("secure_boot"):
            files = outputs.get("sb_files", outputs.get("parameters"))
            fact = _secure_boot.secure_boot_fact(
                outputs.get("sb_state"), rcs.get("sb_state") if "sb_state" in outputs else None, files,
                outputs.get("modinfo"), [_inspect.normalize_module(m.get("name"))
                                         for m in self.params["expected_modules"] or []],
                entry.get("modules"))
            modinfo = _secure_boot.parse_modinfo(outputs["modinfo"]) if "modinfo" in outputs else None
            what = {"sb_state": "mokutil --sb-state", "sb_files": "grep of the kernel's files",
                    "parameters": "grep of the kernel's files"}
            unread = "; ".join("%s: %s" % (what[key], errors[key]) for key in ("sb_state", "sb_files", "parameters")
                               if key in errors)
            _secure_boot.secure_boot_verdict(verdict, fact, modinfo, why_unknown=unread or None)
            entry["secure_boot"] = fact
        return entry, verdict

    def run(self):
        selection = select_nodes(self.client, self.params)
        verify = self.plan(selection.nodes)
        if not self.check_mode and self.jobs:
            self.image = self.resolve_image()
            self.ensure_namespace()
            try:
                self.run_jobs()
            finally:
                self.cleanup()
        nodes = []
        verdicts = []
        for node, pool in selection.nodes:
            entry, verdict = self.node_entry(node, pool, verify, selection.node_objects)
            nodes.append(entry)
            if verdict is not None:
                verdicts.append(verdict)
        warnings = list(selection.warnings)
        # The nodes' own warnings (Secure Boot: an unsigned-module taint, a
        # state that cannot be read) are Ansible warnings too.
        warnings.extend(w for v in verdicts for w in v.get("warnings") or [])
        if self.pods_left:
            warnings.append("debug pods could not be deleted: %s" % ", ".join(self.pods_left))
        result = dict(
            changed=self.changed,
            cluster=self.client.host,
            namespace=self.namespace,
            image=self.image or "",
            nodes=nodes,
            pods_created=self.pods_created,
            pods_left=self.pods_left,
            elapsed_seconds=round(time.monotonic() - self.started, 1),
            warnings=warnings,
        )
        if verify:
            result["report"] = cluster_report(
                self.params, self.client, verdicts, selection.warnings, "pods",
                skipped_reason="check mode: no debug pods run" if self.check_mode else None)
        return result
