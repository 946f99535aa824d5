# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Machine Config Operator rules, as plain functions over API objects (dicts).

Everything here works on MachineConfig, MachineConfigPool and Node objects in
the shape the Kubernetes API returns them (``machineconfiguration.openshift.io/v1``
and ``v1`` Node dicts). Nothing here talks to a cluster. The lab's MCO
simulator does *not* use these: it has its own rules (tests/kmodlab/mco_rules.py),
and tests/lab/test_mco_rules_differential.py compares the two.

Public, stable API:

- ``effective_os_image_url(machineconfigs, default)``
- ``is_generated_machine_config(machineconfig)``
- ``selector_matches(selector, labels)``
- ``merge_order(machineconfigs)``, ``pool_machine_configs(pool, machineconfigs)``
- ``pool_nodes(pool, pools, nodes)``
- ``node_state(node, target_config)``, ``node_ready(node)``
- ``RolloutTarget``, ``evaluate_pool(pool, nodes, target, rendered_configs)``
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


MCO_PREFIX = "machineconfiguration.openshift.io/"
# Node annotations written by the machine-config-daemon / node controller.
ANNOTATION_CURRENT_CONFIG = MCO_PREFIX + "currentConfig"
ANNOTATION_DESIRED_CONFIG = MCO_PREFIX + "desiredConfig"
ANNOTATION_STATE = MCO_PREFIX + "state"
ANNOTATION_REASON = MCO_PREFIX + "reason"
ANNOTATION_CURRENT_IMAGE = MCO_PREFIX + "currentImage"
ANNOTATION_DESIRED_IMAGE = MCO_PREFIX + "desiredImage"
# Set on every MachineConfig the MCO generates itself (templates, kubelet/
# container-runtime configs, rendered configs).
ANNOTATION_GENERATED_BY = MCO_PREFIX + "generated-by-controller-version"
ROLE_LABEL = MCO_PREFIX + "role"
RENDERED_PREFIX = "rendered-"
MCO_API_GROUP = "machineconfiguration.openshift.io"

STATE_DONE = "Done"
STATE_WORKING = "Working"
STATE_DEGRADED = "Degraded"
STATE_UNRECONCILABLE = "Unreconcilable"
STATE_REBOOTING = "Rebooting"
FAILING_STATES = (STATE_DEGRADED, STATE_UNRECONCILABLE)

PHASE_PENDING = "pending"
PHASE_PROGRESSING = "progressing"
PHASE_DONE = "done"
PHASE_DEGRADED = "degraded"
PHASE_PAUSED = "paused"
PHASES = (PHASE_PENDING, PHASE_PROGRESSING, PHASE_DONE, PHASE_DEGRADED, PHASE_PAUSED)


def _meta(obj):
    return (obj or {}).get("metadata") or {}


def _name(obj):
    return _meta(obj).get("name") or ""


def _annotations(obj):
    return _meta(obj).get("annotations") or {}


def _labels(obj):
    return _meta(obj).get("labels") or {}


def _int(value):
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def condition(obj, cond_type):
    """The ``status.conditions[]`` entry of ``cond_type``, or None."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == cond_type:
            return cond
    return None


def condition_is_true(obj, cond_type):
    cond = condition(obj, cond_type)
    return bool(cond) and str(cond.get("status")) == "True"


# ---------------------------------------------------------------------------
# MachineConfigs and rendering

def is_generated_machine_config(machineconfig):
    """True if the MCO made this MachineConfig itself (never a user override).

    The MCO's MergeMachineConfigs (pkg/controller/common/helpers.go) skips,
    for osImageURL, exactly the configs whose
    ``generated-by-controller-version`` annotation is non-empty: every config
    the MCO writes (templates, kubelet / container-runtime configs, rendered
    configs) carries it. A name starting ``rendered-``, an empty annotation or
    a controller ownerReference alone do not make a config generated: the
    MCO would take such a config's osImageURL.
    """
    return bool(_annotations(machineconfig).get(ANNOTATION_GENERATED_BY))


def merge_order(machineconfigs):
    """MachineConfigs in the order the MCO merges them.

    By name, except that configs labelled for the ``worker`` role come before
    all others: a custom pool (which selects worker configs plus its own)
    lets its own configs win, as the MCO's MergeMachineConfigs does.
    """
    def key(mc):
        is_worker = _labels(mc).get(ROLE_LABEL) == "worker"
        return (0 if is_worker else 1, _name(mc))

    return sorted(machineconfigs or [], key=key)


def effective_os_image_url(machineconfigs, default):
    """The osImageURL a pool's rendered config gets from ``machineconfigs``.

    ``machineconfigs``: the MachineConfig dicts the pool selects (by its
    ``spec.machineConfigSelector``); others must be filtered out by the caller.
    ``default``: the release's OS image (ControllerConfig
    ``spec.baseOSContainerImage``), used when no user MachineConfig sets one.

    Rule: the ``spec.osImageURL`` of the last MachineConfig in merge order
    (see ``merge_order``) that sets a non-empty one, ignoring generated
    configs (``is_generated_machine_config``) -- those always carry the
    release default and must not mask a user override.
    """
    url = default
    for mc in merge_order(machineconfigs):
        if is_generated_machine_config(mc):
            continue
        candidate = ((mc or {}).get("spec") or {}).get("osImageURL")
        if candidate:
            url = candidate
    return url


def os_image_url_setters(machineconfigs):
    """Names of the non-generated MachineConfigs that set an osImageURL, in merge order."""
    return [
        _name(mc) for mc in merge_order(machineconfigs)
        if not is_generated_machine_config(mc) and ((mc or {}).get("spec") or {}).get("osImageURL")
    ]


def _match_expression(expr, labels):
    key = expr.get("key")
    operator = expr.get("operator")
    values = expr.get("values") or []
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    return False


def selector_matches(selector, labels):
    """Kubernetes LabelSelector (matchLabels + matchExpressions) semantics.

    A missing (None) selector matches nothing; an empty one matches everything.
    """
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        if not _match_expression(expr, labels):
            return False
    return True


def selector_valid(selector):
    """Whether metav1.LabelSelectorAsSelector accepts ``selector``: ``In`` /
    ``NotIn`` need values, ``Exists`` / ``DoesNotExist`` take none, and no
    other operator exists. The MCO's controllers skip a pool whose selector
    it refuses ("invalid label selector")."""
    for expr in (selector or {}).get("matchExpressions") or []:
        operator = expr.get("operator")
        if operator in ("In", "NotIn"):
            if not expr.get("values"):
                return False
        elif operator in ("Exists", "DoesNotExist"):
            if expr.get("values"):
                return False
        else:
            return False
    return True


def _selects_everything(selector):
    """``{}`` (no matchLabels, no matchExpressions): the MCO's controllers
    refuse such a selector ("SelectingAll") and it matches nothing there."""
    return selector is not None and not selector.get("matchLabels") and not selector.get("matchExpressions")


def pool_machine_configs(pool, machineconfigs):
    """The MachineConfigs ``pool`` selects via ``spec.machineConfigSelector``.

    An empty or invalid selector selects none: the render controller does
    not render a pool that selects every MachineConfig (render_controller.go
    syncMachineConfigPool, "SelectingAll") or whose selector it cannot parse.
    """
    selector = ((pool or {}).get("spec") or {}).get("machineConfigSelector")
    if _selects_everything(selector) or not selector_valid(selector):
        return []
    return [mc for mc in machineconfigs or [] if selector_matches(selector, _labels(mc))]


def _is_windows(node):
    return _labels(node).get("kubernetes.io/os") == "windows"


def pool_nodes(pool, pools, nodes):
    """The nodes the MCO manages as members of ``pool``.

    As pkg/helpers/helpers.go GetPoolsForNode / ListPools: a pool whose
    nodeSelector is empty matches no node; a node matching several pools
    belongs to one: ``master`` if it matches master (compact clusters label
    masters as workers too), else its one custom pool over ``worker``. A node
    matching two or more custom pools belongs to none (the MCO refuses it),
    and so does every node while any pool's nodeSelector is invalid (ListPools
    fails for all of them). Windows nodes are not MCO-managed.
    """
    name = _name(pool)
    result = []
    if not all(selector_valid(((p or {}).get("spec") or {}).get("nodeSelector")) for p in pools or []):
        return result
    for node in nodes or []:
        if _is_windows(node):
            continue
        labels = _labels(node)
        matching = []
        for p in pools or []:
            selector = ((p or {}).get("spec") or {}).get("nodeSelector")
            if not _selects_everything(selector) and selector_matches(selector, labels):
                matching.append(_name(p))
        if name not in matching:
            continue
        custom = [n for n in matching if n not in ("master", "worker")]
        if len(custom) > 1:
            continue
        if "master" in matching:
            primary = "master"
        else:
            primary = custom[0] if custom else "worker"
        if primary == name:
            result.append(node)
    return sorted(result, key=_name)


# ---------------------------------------------------------------------------
# Targets

class RolloutTarget(object):
    """What a rollout waits for: our MachineConfig, and/or its osImageURL.

    ``machine_config``: name of our MachineConfig; the pool's rendered config
    must list it in ``spec.configuration.source``.
    ``os_image_url``: the (digest-pinned) image; the rendered MachineConfig's
    ``spec.osImageURL`` must equal it.
    ``absent_machine_configs``: names the rendered config must *not* list in
    its sources (the rollout of their deletion).
    """

    def __init__(self, machine_config=None, os_image_url=None, absent_machine_configs=None):
        if not machine_config and not os_image_url and not absent_machine_configs:
            raise ValueError("a rollout target needs machine_config, os_image_url and/or absent_machine_configs")
        self.machine_config = machine_config or None
        self.os_image_url = os_image_url or None
        self.absent_machine_configs = list(absent_machine_configs or [])

    def describe(self):
        parts = []
        if self.machine_config:
            parts.append("MachineConfig %s" % self.machine_config)
        if self.os_image_url:
            parts.append("osImageURL %s" % self.os_image_url)
        if self.absent_machine_configs:
            parts.append("no MachineConfig %s" % ", ".join(self.absent_machine_configs))
        return " with ".join(parts)


def _as_target(target):
    if isinstance(target, RolloutTarget):
        return target
    if isinstance(target, dict):
        return RolloutTarget(target.get("machine_config"), target.get("os_image_url"),
                             target.get("absent_machine_configs"))
    raise TypeError("target must be a RolloutTarget or a dict")


def config_sources(configuration):
    """Names of the MachineConfigs a pool ``configuration`` was rendered from."""
    return [s.get("name") for s in (configuration or {}).get("source") or [] if s.get("name")]


def rendered_os_image_url(rendered_config):
    """``spec.osImageURL`` of a rendered MachineConfig dict (None if unknown)."""
    if not rendered_config:
        return None
    return (rendered_config.get("spec") or {}).get("osImageURL") or None


def rendered_config_status(pool, target, rendered_configs=None):
    """Whether the pool's *desired* rendered config carries ``target``.

    Returns ``(ok, reason)``: ``ok`` is True when ``spec.configuration`` names
    a rendered config that includes the target MachineConfig (by source)
    and/or whose osImageURL is the target image; otherwise ``reason`` says
    what is missing. ``rendered_configs`` maps rendered config names to the
    MachineConfig dicts read from the API (needed for ``os_image_url``).
    """
    target = _as_target(target)
    spec_conf = ((pool or {}).get("spec") or {}).get("configuration") or {}
    rendered = spec_conf.get("name")
    if not rendered:
        return False, "the pool has no rendered config yet"
    if target.machine_config and target.machine_config not in config_sources(spec_conf):
        return False, "%s does not include MachineConfig %s yet" % (rendered, target.machine_config)
    still = [name for name in target.absent_machine_configs if name in config_sources(spec_conf)]
    if still:
        return False, "%s still includes MachineConfig %s" % (rendered, ", ".join(still))
    if target.os_image_url:
        mc = (rendered_configs or {}).get(rendered)
        if mc is None:
            return False, "rendered config %s not read yet" % rendered
        url = rendered_os_image_url(mc)
        if url != target.os_image_url:
            return False, "%s has osImageURL %s, not %s" % (rendered, url or "(release default)", target.os_image_url)
    return True, ""


# ---------------------------------------------------------------------------
# Nodes

def node_ready(node):
    """The node's ``Ready`` condition is True."""
    for cond in ((node or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status")) == "True"
    return False


_node_ready = node_ready  # an older name, kept for callers outside the collection


def node_state(node, target_config):
    """Per-node rollout state from the MCO's node annotations.

    ``updated`` is the MCO's own "done" test for a node of a pool that is not
    on-cluster layered (pkg/controller/common/layered_node_state.go IsDone):
    current == desired == ``target_config``, state ``Done``, and no
    ``desiredImage`` / ``currentImage`` annotation (a node still carrying one
    is moving to or off an on-cluster-built image).
    """
    ann = _annotations(node)
    current = ann.get(ANNOTATION_CURRENT_CONFIG) or ""
    desired = ann.get(ANNOTATION_DESIRED_CONFIG) or ""
    state = ann.get(ANNOTATION_STATE) or ""
    reason = ann.get(ANNOTATION_REASON) or ""
    # isNodeImageDone + "no desiredImage": with neither image annotation the
    # image is done; with only currentImage it is not (desired is empty).
    image_done = ANNOTATION_DESIRED_IMAGE not in ann and ANNOTATION_CURRENT_IMAGE not in ann
    ready = node_ready(node)
    unschedulable = bool(((node or {}).get("spec") or {}).get("unschedulable"))
    updated = bool(
        target_config and current == desired == target_config and state == STATE_DONE and image_done
    )
    return {
        "name": _name(node),
        "current_config": current,
        "desired_config": desired,
        "state": state,
        "reason": reason,
        "ready": ready,
        "unschedulable": unschedulable,
        "updated": updated,
        "degraded": state in FAILING_STATES,
    }


def _node_activity(node, target_config):
    """What a not-yet-updated node is doing, in a word or two."""
    if node["desired_config"] != target_config and not node["degraded"]:
        return "queued"  # the MCO has not handed it the new config yet
    return node["state"] or "no state"


def node_progress_line(node):
    """One line for a node, as written to the progress log."""
    line = "node %s: state=%s current=%s desired=%s ready=%s%s" % (
        node["name"], node["state"] or "(none)", node["current_config"] or "(none)",
        node["desired_config"] or "(none)", node["ready"],
        " unschedulable" if node["unschedulable"] else "",
    )
    if node["reason"]:
        line += " reason=%s" % node["reason"]
    return line


# ---------------------------------------------------------------------------
# Pools

class PoolRollout(object):
    """The rollout state of one pool, as ``evaluate_pool`` sees it."""

    def __init__(self, **kwargs):
        self.name = kwargs.get("name", "")
        self.phase = kwargs.get("phase", PHASE_PENDING)
        self.reason = kwargs.get("reason", "")
        self.rendered_config = kwargs.get("rendered_config", "")
        self.status_config = kwargs.get("status_config", "")
        self.target_included = kwargs.get("target_included", False)
        self.paused = kwargs.get("paused", False)
        self.generation = kwargs.get("generation", 0)
        self.observed_generation = kwargs.get("observed_generation", 0)
        self.machine_count = kwargs.get("machine_count", 0)
        self.updated = kwargs.get("updated", 0)
        self.ready = kwargs.get("ready", 0)
        self.unavailable = kwargs.get("unavailable", 0)
        self.degraded = kwargs.get("degraded", 0)
        self.conditions = kwargs.get("conditions", {})
        self.nodes = kwargs.get("nodes", [])
        self.degraded_nodes = kwargs.get("degraded_nodes", [])

    @property
    def done(self):
        return self.phase == PHASE_DONE

    def progress_line(self):
        """A human summary: phase, counts, target and nodes still at work."""
        line = "pool %s: %s, %d/%d updated, %d ready, %d unavailable, %d degraded, target %s" % (
            self.name, self.phase, self.updated, self.machine_count, self.ready,
            self.unavailable, self.degraded, self.rendered_config or "(none)",
        )
        if self.reason:
            line += " (%s)" % self.reason
        busy = [n for n in self.nodes if not n["updated"]]
        if busy and self.phase != PHASE_PENDING:
            line += "; not yet updated: " + ", ".join(
                "%s (%s)" % (n["name"], _node_activity(n, self.rendered_config)) for n in busy
            )
        return line

    def as_dict(self):
        return {
            "name": self.name,
            "phase": self.phase,
            "done": self.done,
            "reason": self.reason,
            "rendered_config": self.rendered_config,
            "status_config": self.status_config,
            "target_included": self.target_included,
            "paused": self.paused,
            "generation": self.generation,
            "observed_generation": self.observed_generation,
            "machine_count": self.machine_count,
            "updated_machine_count": self.updated,
            "ready_machine_count": self.ready,
            "unavailable_machine_count": self.unavailable,
            "degraded_machine_count": self.degraded,
            "conditions": dict(self.conditions),
            "nodes": [dict(n) for n in self.nodes],
            "degraded_nodes": [dict(n) for n in self.degraded_nodes],
            "message": self.progress_line(),
        }


def _degraded_reasons(pool, nodes):
    """(degraded node entries, pool-level reason) for a pool."""
    degraded_nodes = [
        {"name": n["name"], "state": n["state"], "reason": n["reason"]}
        for n in nodes if n["degraded"]
    ]
    reasons = []
    for cond_type in ("RenderDegraded", "NodeDegraded", "Degraded"):
        cond = condition(pool, cond_type)
        if cond and str(cond.get("status")) == "True":
            text = cond.get("message") or cond.get("reason") or ""
            reasons.append("%s: %s" % (cond_type, text) if text else cond_type)
            if cond_type == "RenderDegraded":
                break  # Degraded then repeats it
            if cond_type == "NodeDegraded" and degraded_nodes:
                break  # the nodes say it better
    return degraded_nodes, "; ".join(reasons)


def evaluate_pool(pool, nodes, target, rendered_configs=None):
    """Evaluate one MachineConfigPool against a rollout target.

    ``pool``: the MachineConfigPool dict; ``nodes``: the Node dicts of this
    pool (see ``pool_nodes``), or None to judge by the pool status alone;
    ``target``: a ``RolloutTarget`` or a dict with
    ``machine_config`` / ``os_image_url``; ``rendered_configs``: rendered
    MachineConfig dicts by name (the pool's ``spec.configuration.name`` must
    be there when the target has an ``os_image_url``).

    Phases, first match wins:

    - ``done``: ``spec.configuration`` renders the target, the MCO observed
      the pool's generation, ``status.configuration.name`` equals it,
      ``Updated=True``, updated == ready == machineCount, degraded == 0, and
      every node of the pool is updated to it. ``Updated=True`` on the *old*
      rendered config is never done.
    - ``degraded``: a node is Degraded/Unreconcilable, degradedMachineCount
      > 0, or NodeDegraded/RenderDegraded/Degraded is True.
    - ``paused``: ``spec.paused`` holds the rollout.
    - ``pending``: the MCO has not picked the change up yet (rendered config
      without the target, or observedGeneration < generation).
    - ``progressing``: otherwise.

    Returns a ``PoolRollout``.
    """
    target = _as_target(target)
    spec = (pool or {}).get("spec") or {}
    status = (pool or {}).get("status") or {}
    rendered = (spec.get("configuration") or {}).get("name") or ""
    status_config = (status.get("configuration") or {}).get("name") or ""
    generation = _int(_meta(pool).get("generation"))
    observed = _int(status.get("observedGeneration"))

    node_states = [node_state(n, rendered) for n in nodes or []]
    included, pending_reason = rendered_config_status(pool, target, rendered_configs)

    result = PoolRollout(
        name=_name(pool),
        rendered_config=rendered,
        status_config=status_config,
        target_included=included,
        paused=bool(spec.get("paused")),
        generation=generation,
        observed_generation=observed,
        machine_count=_int(status.get("machineCount")),
        updated=_int(status.get("updatedMachineCount")),
        ready=_int(status.get("readyMachineCount")),
        unavailable=_int(status.get("unavailableMachineCount")),
        degraded=_int(status.get("degradedMachineCount")),
        conditions=dict(
            (c.get("type"), str(c.get("status")))
            for c in status.get("conditions") or [] if c.get("type")
        ),
        nodes=node_states,
    )

    generation_ok = observed >= generation
    counts_ok = result.updated == result.ready == result.machine_count and result.degraded == 0
    # nodes=None: the caller has no node list; judge by the pool status alone.
    nodes_ok = nodes is None or (
        len(node_states) == result.machine_count and all(n["updated"] for n in node_states)
    )
    if (
        included and generation_ok and status_config == rendered
        and condition_is_true(pool, "Updated") and counts_ok and nodes_ok
    ):
        result.phase = PHASE_DONE
        return result

    degraded_nodes, degraded_reason = _degraded_reasons(pool, node_states)
    if degraded_nodes or degraded_reason or result.degraded > 0:
        result.phase = PHASE_DEGRADED
        result.degraded_nodes = degraded_nodes
        result.reason = degraded_reason or "%d machine(s) degraded" % result.degraded
        if degraded_nodes:
            result.reason = "; ".join(
                "node %s is %s: %s" % (n["name"], n["state"], n["reason"] or "(no reason given)")
                for n in degraded_nodes
            )
        return result

    if result.paused:
        result.phase = PHASE_PAUSED
        result.reason = "spec.paused is true" + ("" if included else "; " + pending_reason)
        return result

    if not included:
        result.phase = PHASE_PENDING
        result.reason = pending_reason
        return result
    if not generation_ok:
        result.phase = PHASE_PENDING
        result.reason = "observedGeneration %d < generation %d" % (observed, generation)
        return result

    result.phase = PHASE_PROGRESSING
    if status_config != rendered:
        result.reason = "moving from %s" % (status_config or "(none)")
    elif nodes is not None and len(node_states) != result.machine_count:
        result.reason = "machineCount %d but %d node(s) in the pool" % (result.machine_count, len(node_states))
    return result
