# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Cluster upgrades, as plain functions over ClusterVersion, ClusterOperator
and MachineConfigPool objects (dicts as the API returns them).

What the cluster-version operator does with them (openshift/cluster-version-operator,
``pkg/cvo``; openshift/api ``config/v1`` types):

- ``spec.desiredUpdate`` (version and/or image) asks for an upgrade. The CVO
  accepts it (condition ``ReleaseAccepted``), moves ``status.desired`` to it,
  and adds a ``status.history`` entry (newest first) in state ``Partial``,
  which turns ``Completed`` when every manifest of the payload is applied and
  every ClusterOperator reports the payload's version (``status.versions``,
  entry ``operator``). ``Progressing`` is True meanwhile; ``Failing`` says
  what holds it (a degraded operator, for instance).
- ``status.availableUpdates`` lists the updates the update service
  recommends (version + image); ``conditionalUpdates`` (not read here) the
  ones with known risks.
- The machine-config operator reports the new version only when the pools
  labelled ``operator.machineconfiguration.openshift.io/required-for-upgrade``
  (the master pool) run the new rendering; a paused worker pool does not
  hold the upgrade and rolls when unpaused (the EUS practice).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.ocp.kmod_layering.plugins.module_utils._inspect import image_digest

REQUIRED_FOR_UPGRADE_LABEL = "operator.machineconfiguration.openshift.io/required-for-upgrade"
# On a pool this collection paused for an upgrade (value: why). A pool paused
# without it was paused by someone else and is left alone.
PAUSED_FOR_ANNOTATION = "kmod-layering.openshift.io/paused-for"

PHASE_COMPLETED = "completed"
PHASE_PROGRESSING = "progressing"
PHASE_NOT_STARTED = "not_started"
PHASE_REFUSED = "refused"
PHASE_ELSEWHERE = "upgrading_elsewhere"

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-(.+))?$")


class UpgradeError(Exception):
    """An upgrade that cannot be asked for (the message says why and what to do)."""


def version_key(version):
    """Sort key of an OpenShift version (``4.16.30``, ``4.17.0-rc.2``): a
    release sorts after its pre-releases. ``None`` for anything else."""
    match = _VERSION_RE.match(version or "")
    if not match:
        return None
    major, minor, patch, pre = match.groups()
    pre_key = (1,) if pre is None else (0,) + tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.-]", pre))
    return (int(major), int(minor), int(patch)) + pre_key


def condition(obj, kind):
    """The ``status.conditions`` entry of type ``kind`` (a dict, maybe empty)."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return {}


def is_true(obj, kind):
    return condition(obj, kind).get("status") == "True"


def history(cluster_version):
    return ((cluster_version or {}).get("status") or {}).get("history") or []


def current_version(cluster_version):
    """The version the cluster last completed (history, newest first), else
    the desired one (a cluster still installing)."""
    for entry in history(cluster_version):
        if entry.get("state") == "Completed":
            return entry.get("version") or ""
    return desired(cluster_version).get("version") or ""


def desired(cluster_version):
    return ((cluster_version or {}).get("status") or {}).get("desired") or {}


def available_updates(cluster_version):
    """``status.availableUpdates`` as [{version, image}], newest first."""
    updates = [
        {"version": u.get("version") or "", "image": u.get("image") or ""}
        for u in ((cluster_version or {}).get("status") or {}).get("availableUpdates") or []
    ]
    return sorted(updates, key=lambda u: version_key(u["version"]) or (0,), reverse=True)


def _same_image(a, b):
    """The same release image: equal, or pinned by the same digest (a mirror)."""
    return bool(a and b) and (a == b or (image_digest(a) is not None and image_digest(a) == image_digest(b)))


def choose_target(cluster_version, requested=None, cluster="the cluster"):
    """The release to upgrade to, as {version, image, source}.

    ``requested`` is a version (``4.16.30``) or a release image pullspec;
    without it, the newest of ``availableUpdates`` (source ``recommended``).
    A target the cluster already completed is returned with source
    ``current`` (nothing to start). None when nothing is requested and the
    cluster lists no update; the release it is upgrading to (source
    ``in_progress``) when nothing is requested and an upgrade is under way. Raises :class:`UpgradeError` for a target the
    cluster does not list as an update, or an older version.
    """
    current = current_version(cluster_version)
    running = desired(cluster_version)
    updates = available_updates(cluster_version)
    listed = ", ".join(u["version"] for u in updates) or "none"
    entries = history(cluster_version)
    upgrading = bool(entries) and entries[0].get("state") == "Partial" and running.get("version") != current
    if not requested:
        if upgrading:
            # Finish the upgrade under way (started by hand, or by a run that failed its wait).
            return {"version": running.get("version") or "", "image": running.get("image") or "",
                    "source": "in_progress"}
        if not updates:
            return None
        return dict(updates[0], source="recommended")
    if "/" in requested:
        if _same_image(requested, running.get("image")):
            return {"version": running.get("version") or "", "image": running.get("image"),
                    "source": "current" if running.get("version") == current else "in_progress"}
        for update in updates:
            if _same_image(requested, update["image"]):
                return dict(update, source="requested")
        raise UpgradeError(
            "Cluster %s: release image %s is not one of the updates the cluster lists (availableUpdates: %s). "
            "Name a listed version or image (oc adm upgrade shows them), or check the cluster's update channel."
            % (cluster, requested, listed))
    if version_key(requested) is None:
        raise UpgradeError("Cluster %s: %r is neither an OpenShift version (like 4.16.30) nor a release image pullspec."
                           % (cluster, requested))
    if requested == running.get("version"):
        return {"version": requested, "image": running.get("image") or "",
                "source": "current" if requested == current else "in_progress"}
    if current and version_key(current) and version_key(requested) < version_key(current):
        raise UpgradeError("Cluster %s runs %s: %s is older, and OpenShift does not downgrade."
                           % (cluster, current, requested))
    for update in updates:
        if update["version"] == requested:
            return dict(update, source="requested")
    raise UpgradeError(
        "Cluster %s (on %s): %s is not one of the updates the cluster lists (availableUpdates: %s). "
        "Upgrade through a listed version first, or check the cluster's update channel."
        % (cluster, current or "?", requested, listed))


def upgrade_phase(cluster_version, target):
    """Where the cluster is with ``target`` ({version, image}), and why:
    (phase, message). Phases: ``completed``, ``progressing`` (the CVO works
    towards it), ``not_started`` (desiredUpdate not set to it yet),
    ``refused`` (the CVO did not accept it: ReleaseAccepted False),
    ``upgrading_elsewhere`` (the CVO works towards another release)."""
    want = target.get("version")
    now = desired(cluster_version)
    spec_update = ((cluster_version or {}).get("spec") or {}).get("desiredUpdate") or {}
    asked = spec_update.get("version") == want or _same_image(spec_update.get("image"), target.get("image"))
    entries = history(cluster_version)
    newest = entries[0] if entries else {}
    if now.get("version") == want:
        if newest.get("version") == want and newest.get("state") == "Completed":
            return PHASE_COMPLETED, "Cluster version is %s" % want
        return PHASE_PROGRESSING, condition(cluster_version, "Progressing").get("message") or "Working towards %s" % want
    meta = (cluster_version or {}).get("metadata") or {}
    observed = ((cluster_version or {}).get("status") or {}).get("observedGeneration")
    if asked and meta.get("generation") is not None and observed is not None and observed < meta["generation"]:
        # The CVO has not read this desiredUpdate yet: its conditions are about an earlier one.
        return PHASE_NOT_STARTED, "the cluster-version operator has not acted on desiredUpdate %s yet" % want
    accepted = condition(cluster_version, "ReleaseAccepted")
    if asked and accepted.get("status") == "False":
        return PHASE_REFUSED, "%s: %s" % (accepted.get("reason") or "ReleaseNotAccepted", accepted.get("message") or "")
    if is_true(cluster_version, "Progressing") and newest.get("state") == "Partial":
        return PHASE_ELSEWHERE, "the cluster is upgrading to %s (%s)" % (
            now.get("version") or now.get("image") or "?", condition(cluster_version, "Progressing").get("message") or "")
    return PHASE_NOT_STARTED, "desiredUpdate is %s" % (spec_update.get("version") or spec_update.get("image") or "unset")


def operator_version(operator):
    for entry in (operator.get("status") or {}).get("versions") or []:
        if entry.get("name") == "operator":
            return entry.get("version") or ""
    return ""


def required_pools(pools):
    """The pools an upgrade waits for (label required-for-upgrade)."""
    return [p for p in pools if REQUIRED_FOR_UPGRADE_LABEL in ((p.get("metadata") or {}).get("labels") or {})]


def pool_updated(pool):
    """Whether a pool runs its rendered configuration on every machine."""
    status = pool.get("status") or {}
    rendered = ((pool.get("spec") or {}).get("configuration") or {}).get("name")
    return (is_true(pool, "Updated") and not is_true(pool, "Degraded")
            and (status.get("configuration") or {}).get("name") == rendered
            and status.get("updatedMachineCount") == status.get("machineCount"))


def holders(target_version, operators, pools):
    """What still holds an upgrade to ``target_version``, one phrase each,
    worst first: degraded or unavailable operators, operators not on the
    version yet, required pools not updated."""
    degraded, behind, waiting = [], [], []
    for op in sorted(operators, key=lambda o: o["metadata"]["name"]):
        name = op["metadata"]["name"]
        if is_true(op, "Degraded"):
            degraded.append("ClusterOperator %s is degraded: %s" % (name, condition(op, "Degraded").get("message") or "?"))
        elif condition(op, "Available").get("status") == "False":
            degraded.append("ClusterOperator %s is not available: %s" % (
                name, condition(op, "Available").get("message") or "?"))
        elif operator_version(op) != target_version:
            behind.append(name)
    if behind:
        behind = ["ClusterOperator(s) not on %s yet: %s" % (target_version, ", ".join(behind))]
    for pool in required_pools(pools):
        if not pool_updated(pool):
            status = pool.get("status") or {}
            waiting.append("MachineConfigPool %s (required for the upgrade): %s of %s machines updated%s" % (
                pool["metadata"]["name"], status.get("updatedMachineCount", "?"), status.get("machineCount", "?"),
                ", degraded" if is_true(pool, "Degraded") else ""))
    return degraded + behind + waiting


def progress_line(cluster_version, target, operators, pools):
    """One line for the progress file: the CVO's own words and what holds it."""
    phase, message = upgrade_phase(cluster_version, target)
    parts = ["upgrade to %s: %s (%s)" % (target.get("version"), phase, message)]
    if phase == PHASE_PROGRESSING:
        if is_true(cluster_version, "Failing"):
            parts.append("failing: %s" % condition(cluster_version, "Failing").get("message"))
        held = holders(target.get("version"), operators, pools)
        if held:
            parts.append("waiting on " + "; ".join(held))
    return "; ".join(parts)


def pause_plan(pools, names, paused, reason=""):
    """What pausing (``paused`` true) or unpausing ``names`` does to each
    pool: [{name, action, paused_by, patch}], where ``action`` is ``pause``,
    ``unpause`` or ``none``, ``paused_by`` is ``user``, ``kmod_layering`` or
    None afterwards, and ``patch`` the merge patch (or None).

    Pausing leaves a pool someone else paused as it is (paused_by user) and
    marks the ones it pauses; unpausing only unpauses those it marked, so a
    user's pause survives an upgrade. Raises :class:`UpgradeError` for a
    pool that is missing, or required for the upgrade (pausing it would hold
    the upgrade forever).
    """
    by_name = dict((p["metadata"]["name"], p) for p in pools)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise UpgradeError("MachineConfigPool(s) %s not found (pools: %s)." % (
            ", ".join(missing), ", ".join(sorted(by_name)) or "none"))
    plan = []
    for name in names:
        pool = by_name[name]
        meta = pool.get("metadata") or {}
        is_paused = bool((pool.get("spec") or {}).get("paused"))
        ours = PAUSED_FOR_ANNOTATION in (meta.get("annotations") or {})
        if paused and REQUIRED_FOR_UPGRADE_LABEL in (meta.get("labels") or {}):
            raise UpgradeError(
                "MachineConfigPool %s is required for the upgrade (label %s): pausing it would hold the upgrade "
                "until it is unpaused, and leaving it unpaused with our MachineConfig would reboot its nodes twice. "
                "Upgrade this cluster the documented way (docs/user-guide.md, upgrading pools we cannot pause)."
                % (name, REQUIRED_FOR_UPGRADE_LABEL))
        entry = {"name": name, "action": "none", "paused_by": None, "patch": None}
        if paused:
            if is_paused and not ours:
                entry["paused_by"] = "user"
            elif is_paused:
                entry["paused_by"] = "kmod_layering"
            else:
                entry.update(action="pause", paused_by="kmod_layering", patch={
                    "metadata": {"annotations": {PAUSED_FOR_ANNOTATION: reason or "upgrade"}},
                    "spec": {"paused": True}})
        elif ours:
            entry["action"] = "unpause"
            entry["patch"] = {"metadata": {"annotations": {PAUSED_FOR_ANNOTATION: None}}, "spec": {"paused": False}}
        elif is_paused:
            entry["paused_by"] = "user"
        plan.append(entry)
    return plan
