"""The lab's own Machine Config Operator rules: pure functions over API dicts.

Written from the MCO's Go sources (github.com/openshift/machine-config-operator,
read at commit 7ff337a4), *not* from the product: nothing here imports
``plugins/module_utils/_mco.py`` (or any other product module), so the lab's
MCO simulator is an independent oracle for the product's rules. Each function
names the Go function it follows. Where the lab departs from the MCO on
purpose, the docstring says so ("lab deviation").

Only non-layered pools are modelled (no MachineOSConfig / MachineOSBuild, no
MachineConfigNode objects, ImageModeStatusReporting off): that is how the
collection rolls images out (a MachineConfig with ``spec.osImageURL``).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Iterable

PREFIX = "machineconfiguration.openshift.io/"
# pkg/daemon/constants/constants.go
ANN_CURRENT_CONFIG = PREFIX + "currentConfig"
ANN_DESIRED_CONFIG = PREFIX + "desiredConfig"
ANN_CURRENT_IMAGE = PREFIX + "currentImage"
ANN_DESIRED_IMAGE = PREFIX + "desiredImage"
ANN_STATE = PREFIX + "state"
ANN_REASON = PREFIX + "reason"
ANN_DESIRED_DRAIN = PREFIX + "desiredDrain"
ANN_LAST_APPLIED_DRAIN = PREFIX + "lastAppliedDrain"
STATE_WORKING = "Working"
STATE_DONE = "Done"
STATE_DEGRADED = "Degraded"
STATE_REBOOTING = "Rebooting"
STATE_UNRECONCILABLE = "Unreconcilable"
# pkg/controller/common/constants.go
ANN_GENERATED_BY = PREFIX + "generated-by-controller-version"
ANN_RELEASE_IMAGE_VERSION = PREFIX + "release-image-version"
ANN_OS_IMAGE_URL_OVERRIDDEN = PREFIX + "os-image-url-overridden"
ROLE_LABEL = PREFIX + "role"
RENDERED_PREFIX = "rendered-"
POOL_MASTER = "master"
POOL_WORKER = "worker"
POOL_ARBITER = "arbiter"
KERNEL_DEFAULT = "default"
KERNEL_REALTIME = "realtime"
KERNEL_64K = "64k-pages"
# pkg/helpers/helpers.go OSLabel
OS_LABEL = "kubernetes.io/os"
ZONE_LABEL = "topology.kubernetes.io/zone"


class SelectorError(ValueError):
    """metav1.LabelSelectorAsSelector refused the selector ("invalid label selector")."""


class RenderError(ValueError):
    """What the render controller would put into RenderDegraded."""


class NodePoolError(ValueError):
    """helpers.GetPoolsForNode refused the node (it then belongs to no pool)."""


def _meta(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("metadata") or {}


def _name(obj: dict[str, Any] | None) -> str:
    return _meta(obj).get("name") or ""


def _labels(obj: dict[str, Any] | None) -> dict[str, str]:
    return _meta(obj).get("labels") or {}


def _annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    return _meta(obj).get("annotations") or {}


# ---------------------------------------------------------------- label selectors


class Selector:
    """A compiled metav1.LabelSelector, as k8s.io/apimachinery
    ``LabelSelectorAsSelector`` builds it: a nil selector selects nothing
    (``labels.Nothing()``), one with no requirements selects everything
    (``labels.Everything()``, whose ``Empty()`` is true); ``In``/``NotIn``
    need values, ``Exists``/``DoesNotExist`` must have none, any other
    operator is an error."""

    def __init__(self, selector: dict[str, Any] | None) -> None:
        self.nothing = selector is None
        self.requirements: list[tuple[str, str, list[str]]] = []
        if selector is None:
            return
        for key, value in sorted((selector.get("matchLabels") or {}).items()):
            self.requirements.append((key, "In", [value]))
        for expr in selector.get("matchExpressions") or []:
            op = expr.get("operator")
            values = list(expr.get("values") or [])
            if op in ("In", "NotIn"):
                if not values:
                    raise SelectorError(f"for 'in', 'notin' operators, values set can't be empty ({expr.get('key')})")
            elif op in ("Exists", "DoesNotExist"):
                if values:
                    raise SelectorError(f"values set must be empty for exists and does not exist ({expr.get('key')})")
            else:
                raise SelectorError(f"{op!r} is not a valid label selector operator")
            self.requirements.append((expr.get("key") or "", op, values))

    @property
    def empty(self) -> bool:
        """``selector.Empty()``: true only for the select-everything selector."""
        return not self.nothing and not self.requirements

    def matches(self, labels: dict[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        for key, op, values in self.requirements:
            present = key in labels
            if op == "In" and not (present and labels[key] in values):
                return False
            if op == "NotIn" and present and labels[key] in values:
                return False
            if op == "Exists" and not present:
                return False
            if op == "DoesNotExist" and present:
                return False
        return True


def is_select_everything(selector: dict[str, Any] | None) -> bool:
    """``reflect.DeepEqual(selector, &metav1.LabelSelector{})``: the render and
    node controllers refuse such a pool ("SelectingAll" event, no sync)."""
    return selector is not None and not selector.get("matchLabels") and not selector.get("matchExpressions")


# ---------------------------------------------------------------- render


def pool_machine_configs(pool: dict[str, Any], machineconfigs: Iterable[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The MachineConfigs the render controller merges for ``pool``, sorted by
    name (render_controller.go syncMachineConfigPool: ``mcLister.List(selector)``
    then ``sort.SliceStable`` by name). ``None`` when the pool selects
    everything: the controller then renders nothing at all ("SelectingAll").
    No name filter: a rendered config is left out only because it carries no
    labels (so no role selector matches it). Raises SelectorError."""
    spec = (pool or {}).get("spec") or {}
    if is_select_everything(spec.get("machineConfigSelector")):
        return None
    selector = Selector(spec.get("machineConfigSelector"))
    return sorted((mc for mc in machineconfigs if selector.matches(_labels(mc))), key=_name)


def merge_order(machineconfigs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """common/helpers.go MergeMachineConfigs: configs labelled role=worker
    first, then all others, each group by name; a config with no labels at
    all is an error ("cannot find label in MachineConfig")."""
    workers, others = [], []
    for mc in machineconfigs:
        if _meta(mc).get("labels") is None:
            raise RenderError(f"cannot find label in MachineConfig {_name(mc)}")
        (workers if _labels(mc).get(ROLE_LABEL) == POOL_WORKER else others).append(mc)
    return sorted(workers, key=_name) + sorted(others, key=_name)


def is_generated(mc: dict[str, Any]) -> bool:
    """MergeMachineConfigs skips, for osImageURL and the extensions image, the
    configs whose generated-by-controller-version annotation is non-empty
    (``cfg.Annotations[...] != ""``) -- nothing else (not the name, not owners)."""
    return bool(_annotations(mc).get(ANN_GENERATED_BY))


def os_image_url(ordered: Iterable[dict[str, Any]], base_os_image: str) -> str:
    """MergeMachineConfigs: start from the release's base OS image
    (GetBaseImageContainer: ControllerConfig spec.baseOSContainerImage); every
    non-generated config, in merge order, with a non-empty spec.osImageURL
    replaces it -- so the last such one wins."""
    url = base_os_image
    for mc in ordered:
        if is_generated(mc):
            continue
        candidate = ((mc.get("spec") or {}).get("osImageURL")) or ""
        if candidate:
            url = candidate
    return url


SUPPORTED_IGNITION = ("2.2.0", "3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0")


def validate_machine_config(mc: dict[str, Any]) -> None:
    """The part of ValidateMachineConfig / IgnParseWrapper the lab checks:
    the Ignition spec version (the versions the lab accepts)."""
    version = (((mc.get("spec") or {}).get("config") or {}).get("ignition") or {}).get("version")
    if version is not None and version not in SUPPORTED_IGNITION:
        raise RenderError(
            f"parsing Ignition config failed for {_name(mc)}: invalid version {version!r}. "
            "Supported spec versions: 2.2, 3.0, 3.1, 3.2, 3.3, 3.4"
        )


def merge(machineconfigs: list[dict[str, Any]], base_os_image: str, base_extensions_image: str = "") -> dict[str, Any]:
    """The rendered ``spec`` (common/helpers.go MergeMachineConfigs).

    Ignition: the lab's stand-in for ign3.Merge -- files by path and units by
    name, a later config replacing the whole entry (the real merge is per
    field); files without ``overwrite`` get ``overwrite: true``. FIPS: any.
    kernelType: the last config in merge order that asks for realtime or
    64k-pages, else default. kernelArguments and extensions: concatenated in
    merge order, duplicates kept. kernel-devel with a non-default kernel is an
    error. osImageURL and baseOSExtensionsContainerImage: see ``os_image_url``.
    """
    ordered = merge_order(machineconfigs)
    for mc in ordered:
        validate_machine_config(mc)
    files: dict[str, Any] = {}
    units: dict[str, Any] = {}
    version = "3.2.0"  # lab: the last version set (the MCO converts all to its newest spec)
    for mc in ordered:
        ignition = (mc.get("spec") or {}).get("config")
        if not ignition:
            continue
        version = ((ignition.get("ignition") or {}).get("version")) or version
        for entry in ((ignition.get("storage") or {}).get("files")) or []:
            files[entry.get("path")] = dict(entry)
        for unit in ((ignition.get("systemd") or {}).get("units")) or []:
            units[unit.get("name")] = dict(unit)
    for entry in files.values():
        if entry.get("overwrite") is None:
            entry["overwrite"] = True
    config: dict[str, Any] = {"ignition": {"version": version}}
    if files:
        config["storage"] = {"files": [files[p] for p in sorted(files)]}
    if units:
        config["systemd"] = {"units": [units[n] for n in sorted(units)]}
    fips = any(bool((mc.get("spec") or {}).get("fips")) for mc in ordered)
    kernel_type = KERNEL_DEFAULT
    for mc in ordered:
        if (mc.get("spec") or {}).get("kernelType") in (KERNEL_REALTIME, KERNEL_64K):
            kernel_type = mc["spec"]["kernelType"]
    kargs = [a for mc in ordered for a in (mc.get("spec") or {}).get("kernelArguments") or []]
    extensions = [e for mc in ordered for e in (mc.get("spec") or {}).get("extensions") or []]
    if kernel_type != KERNEL_DEFAULT and "kernel-devel" in extensions:
        raise RenderError(f"installing kernel-devel extension is not supported with kernelType: {kernel_type}")
    extensions_image = base_extensions_image
    for mc in ordered:
        if not is_generated(mc) and (mc.get("spec") or {}).get("baseOSExtensionsContainerImage"):
            extensions_image = mc["spec"]["baseOSExtensionsContainerImage"]
    spec: dict[str, Any] = {
        "config": config,
        "extensions": extensions,
        "fips": fips,
        "kernelArguments": kargs,
        "kernelType": kernel_type,
        "osImageURL": os_image_url(ordered, base_os_image),
    }
    if extensions_image:
        spec["baseOSExtensionsContainerImage"] = extensions_image
    return spec


def rendered_name(pool_name: str, spec: dict[str, Any]) -> str:
    """render/hash.go getMachineConfigHashedName: ``rendered-<pool>-<md5>`` of
    the merged spec (the MCO hashes a salt and the YAML of the Go struct; the
    lab hashes canonical JSON -- same shape, same "new spec, new name")."""
    digest = hashlib.md5(json.dumps(spec, sort_keys=True).encode(), usedforsecurity=False).hexdigest()
    return f"{RENDERED_PREFIX}{pool_name}-{digest}"


def render(
    pool: dict[str, Any],
    machineconfigs: Iterable[dict[str, Any]],
    base_os_image: str,
    controller_version: str,
    release_version: str = "",
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str | None]:
    """One render pass for a pool (render_controller.go syncMachineConfigPool,
    generateRenderedMachineConfig, getMachineConfigRefs).

    Returns ``(rendered MachineConfig, spec.configuration, error)``: the
    rendered config carries the generated-by and release-image-version
    annotations (``release_version``: the ControllerConfig's
    release-image-version annotation, generateRenderedMachineConfig), the os-image-url-overridden one when osImageURL is not the
    base image, and a controller ownerReference to the pool;
    ``spec.configuration`` is its name and the sources by name. The error is
    the RenderDegraded message ("Failed to render configuration for pool
    <pool>: ..."). All three are None for a select-everything pool."""
    name = _name(pool)
    try:
        selected = pool_machine_configs(pool, machineconfigs)
        if selected is None:
            return None, None, None
        if not selected:
            raise RenderError("no MachineConfigs found matching selector")
        spec = merge(selected, base_os_image)
    except (RenderError, SelectorError) as error:
        return None, None, f"Failed to render configuration for pool {name}: {error}"
    rendered = rendered_name(name, spec)
    annotations = {ANN_GENERATED_BY: controller_version, ANN_RELEASE_IMAGE_VERSION: release_version}
    if spec["osImageURL"] != base_os_image:
        annotations[ANN_OS_IMAGE_URL_OVERRIDDEN] = "true"
    mc = {
        "apiVersion": "machineconfiguration.openshift.io/v1",
        "kind": "MachineConfig",
        "metadata": {
            "name": rendered,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "machineconfiguration.openshift.io/v1",
                    "kind": "MachineConfigPool",
                    "name": name,
                    "uid": _meta(pool).get("uid", ""),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }
    configuration = {
        "name": rendered,
        "source": [
            {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig", "name": _name(m)}
            for m in selected
        ],
    }
    return mc, configuration, None


# ---------------------------------------------------------------- which pool a node is in


def pools_for_node(node: dict[str, Any], pools: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """pkg/helpers/helpers.go GetPoolsForNode / ListPools: the pools a node is
    in, primary first; ``[]`` when none. Windows nodes are not managed; a pool
    whose nodeSelector is empty matches nothing; an invalid selector on *any*
    pool is an error for every node; a node in two or more custom pools is an
    error. One custom pool: it is primary unless master also matches (then
    master), and worker follows if it matches. Else master, else worker."""
    if _labels(node).get(OS_LABEL) == "windows":
        return []
    matching = []
    for pool in pools:
        try:
            selector = Selector(((pool.get("spec") or {}).get("nodeSelector")))
        except SelectorError as error:
            raise NodePoolError(f"invalid label selector: {error}") from error
        if selector.empty or not selector.matches(_labels(node)):
            continue
        matching.append(pool)
    master = next((p for p in matching if _name(p) == POOL_MASTER), None)
    worker = next((p for p in matching if _name(p) == POOL_WORKER), None)
    custom = [p for p in matching if _name(p) not in (POOL_MASTER, POOL_WORKER)]
    if len(custom) > 1:
        raise NodePoolError(f"node {_name(node)} belongs to {len(custom)} custom roles, cannot proceed with this Node")
    if custom:
        result = [master if master is not None else custom[0]]
        return result + ([worker] if worker is not None else [])
    if master is not None:
        return [master]
    return [worker] if worker is not None else []


def primary_pool_name(node: dict[str, Any], pools: Iterable[dict[str, Any]]) -> str | None:
    """GetPrimaryPoolForNode; None when the node is in no pool or is refused."""
    try:
        found = pools_for_node(node, pools)
    except NodePoolError:
        return None
    return _name(found[0]) if found else None


def nodes_for_pool(
    pool: dict[str, Any], pools: list[dict[str, Any]], nodes: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """node_controller.go getNodesForPool: the nodes matching the pool's
    nodeSelector whose primary pool is this pool (by name), sorted by name."""
    try:
        selector = Selector(((pool.get("spec") or {}).get("nodeSelector")))
    except SelectorError:
        return []
    name = _name(pool)
    return sorted(
        (n for n in nodes if selector.matches(_labels(n)) and primary_pool_name(n, pools) == name), key=_name
    )


# ---------------------------------------------------------------- node state (common/layered_node_state.go)


def node_schedulable_ready(node: dict[str, Any]) -> bool:
    """LayeredNodeState.CheckNodeReady / IsNodeReady: no Ready condition other
    than True, no DiskPressure or NetworkUnavailable other than False (a
    missing condition is fine), and not unschedulable."""
    for cond in ((node.get("status") or {}).get("conditions")) or []:
        kind, status = cond.get("type"), str(cond.get("status"))
        if kind == "Ready" and status != "True":
            return False
        if kind in ("DiskPressure", "NetworkUnavailable") and status != "False":
            return False
    return not (node.get("spec") or {}).get("unschedulable")


def kubelet_ready(node: dict[str, Any]) -> bool:
    """The node's own Ready condition is True (what a node agent posts)."""
    return any(
        c.get("type") == "Ready" and str(c.get("status")) == "True"
        for c in ((node.get("status") or {}).get("conditions")) or []
    )


def _node_image_done(ann: dict[str, str]) -> bool:
    """isNodeImageDone: done if neither image annotation exists; else both
    must be non-empty and equal."""
    if ANN_DESIRED_IMAGE not in ann and ANN_CURRENT_IMAGE not in ann:
        return True
    desired, current = ann.get(ANN_DESIRED_IMAGE) or "", ann.get(ANN_CURRENT_IMAGE) or ""
    return bool(desired) and bool(current) and desired == current


def node_done(node: dict[str, Any]) -> bool:
    """IsNodeDone: current and desired config non-empty and equal, the image
    done, and the MCD state Done."""
    ann = _meta(node).get("annotations")
    if ann is None:
        return False
    current, desired = ann.get(ANN_CURRENT_CONFIG) or "", ann.get(ANN_DESIRED_CONFIG) or ""
    return bool(current) and bool(desired) and current == desired and _node_image_done(ann) and ann.get(
        ANN_STATE
    ) == STATE_DONE


def node_updated(node: dict[str, Any], pool: dict[str, Any]) -> bool:
    """IsDone for a non-layered pool: done, desiredConfig is the pool's
    spec.configuration.name, and no desiredImage annotation."""
    target = (((pool.get("spec") or {}).get("configuration")) or {}).get("name") or ""
    ann = _annotations(node)
    return node_done(node) and ann.get(ANN_DESIRED_CONFIG, "") == target and ANN_DESIRED_IMAGE not in ann


def node_degraded(node: dict[str, Any]) -> bool:
    """GetMachinesByState: state Degraded or Unreconcilable."""
    return _annotations(node).get(ANN_STATE) in (STATE_DEGRADED, STATE_UNRECONCILABLE)


def node_failing(node: dict[str, Any]) -> bool:
    """IsNodeMCDFailing: current != desired and state Degraded/Unreconcilable."""
    ann = _annotations(node)
    return ann.get(ANN_CURRENT_CONFIG, "") != ann.get(ANN_DESIRED_CONFIG, "") and node_degraded(node)


def node_unavailable(node: dict[str, Any]) -> bool:
    """IsUnavailableForUpdate: not (schedulable and) ready; else not done and
    not failing (a working MCD, or one that has not started)."""
    if not node_schedulable_ready(node):
        return True
    if node_done(node):
        return False
    return not node_failing(node)


# ---------------------------------------------------------------- node controller


def max_unavailable(pool: dict[str, Any], node_count: int) -> int:
    """node_controller.go maxUnavailable: arbiter 1; spec.maxUnavailable
    (default 1) as intstr.GetScaledValueFromIntOrPercent rounding down; 0 -> 1.
    A string that is not a percentage is an error."""
    if _name(pool) == POOL_ARBITER:
        return 1
    value = (pool.get("spec") or {}).get("maxUnavailable")
    if value is None:
        value = 1
    if isinstance(value, str):
        if not value.endswith("%"):
            raise ValueError(f"invalid value for IntOrString: invalid type: string is not a percentage ({value!r})")
        scaled = math.floor(int(value[:-1]) * node_count / 100)
    else:
        scaled = int(value)
    return scaled if scaled != 0 else 1


def _candidate_sort_key(node: dict[str, Any]) -> tuple[int, str, str, str]:
    """sortNodeList: nodes with a zone label first, by zone, then oldest
    first; then the ones without. (The name breaks the lab's ties: its nodes
    are all created in the same second.)"""
    zone = _labels(node).get(ZONE_LABEL)
    created = _meta(node).get("creationTimestamp") or ""
    return (0 if zone is not None else 1, zone or "", created, _name(node))


def nodes_to_update(pool: dict[str, Any], nodes: list[dict[str, Any]], retarget_failing: bool = True) -> list[str]:
    """The nodes to point at the pool's target now, by name
    (node_controller.go getAllCandidateMachines + updateCandidateMachines).

    None while paused or with no target. capacity = maxUnavailable minus the
    unavailable nodes (none if that is <= 0). Candidates: nodes whose
    desiredConfig is not the target (or still carry a desiredImage
    annotation) and are schedulable-ready; nodes already on the target but
    failing count against the capacity. Then by zone / age, up to capacity.

    Lab deviation (``retarget_failing``): a node that failed on a config the
    pool no longer targets is re-pointed at once even if it is cordoned (the
    real controller leaves it to the admin, since a cordoned node is
    unavailable); the lab's recovery story (delete the bad MachineConfig, the
    node comes back) depends on it.
    """
    spec = pool.get("spec") or {}
    target = (spec.get("configuration") or {}).get("name")
    if not target or spec.get("paused"):
        return []

    def candidate(n: dict[str, Any]) -> bool:
        ann = _annotations(n)
        return ann.get(ANN_DESIRED_CONFIG, "") != target or ANN_DESIRED_IMAGE in ann

    freed = []
    if retarget_failing:
        freed = [n for n in nodes if candidate(n) and node_failing(n) and not node_schedulable_ready(n)]
    rest = [n for n in nodes if n not in freed]
    # The freed nodes are unavailable and count against the capacity as before.
    capacity = max_unavailable(pool, len(nodes)) - sum(1 for n in nodes if node_unavailable(n))
    chosen = sorted(_name(n) for n in freed)
    if capacity <= 0:
        return chosen
    failing_this_config = sum(1 for n in rest if not candidate(n) and node_failing(n))
    candidates = [n for n in rest if candidate(n) and node_schedulable_ready(n)]
    if failing_this_config >= capacity:
        return chosen
    capacity -= failing_this_config
    candidates.sort(key=_candidate_sort_key)
    return chosen + [_name(n) for n in candidates[:capacity]]


# ---------------------------------------------------------------- pool status (node/status.go calculateStatus)


def set_condition(conditions: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str, now: str) -> None:
    """apihelpers.SetMachineConfigPoolCondition: replace by type; the
    transition time changes only when the status does."""
    for cond in conditions:
        if cond.get("type") == ctype:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = now
            cond.update(status=status, reason=reason, message=message)
            return
    conditions.append({"type": ctype, "status": status, "reason": reason, "message": message, "lastTransitionTime": now})


def pool_status(
    pool: dict[str, Any], nodes: list[dict[str, Any]], render_error: str | None, now: str = ""
) -> dict[str, Any]:
    """The status the node controller writes for ``pool`` over its ``nodes``.

    Counts (GetMachinesByState): updated = ``node_updated``; ready = updated
    and schedulable-ready; unavailable = ``node_unavailable``; degraded =
    ``node_degraded``. Updated=True (and status.configuration takes
    spec.configuration) iff updated == ready == machineCount and none
    unavailable; else Updated=False and Updating True ("All nodes are
    updating to MachineConfig X") or, paused, False ("Pool is paused; will not
    update to ..."). NodeDegraded from the degraded count (reason "<n> nodes
    are reporting degraded status on sync", message the nodes' reasons);
    RenderDegraded is the render controller's (``render_error``); Degraded =
    NodeDegraded or RenderDegraded, with NodeDegraded's message.
    """
    spec = pool.get("spec") or {}
    old = pool.get("status") or {}
    target = (spec.get("configuration") or {}).get("name") or ""
    updated = [n for n in nodes if node_updated(n, pool)]
    ready = [n for n in updated if node_schedulable_ready(n)]
    unavailable = [n for n in nodes if node_unavailable(n)]
    degraded = [n for n in nodes if node_degraded(n)]
    status: dict[str, Any] = {
        "observedGeneration": _meta(pool).get("generation") or 1,
        "machineCount": len(nodes),
        "updatedMachineCount": len(updated),
        "readyMachineCount": len(ready),
        "unavailableMachineCount": len(unavailable),
        "degradedMachineCount": len(degraded),
        "configuration": json.loads(json.dumps(old.get("configuration") or {})),
    }
    conditions = json.loads(json.dumps(old.get("conditions") or []))
    line = f"MachineConfig {target}"
    if len(updated) == len(nodes) and len(ready) == len(nodes) and not unavailable:
        set_condition(conditions, "Updated", "True", "", f"All nodes are updated with {line}", now)
        set_condition(conditions, "Updating", "False", "", "", now)
        status["configuration"] = json.loads(json.dumps(spec.get("configuration") or {}))
    else:
        set_condition(conditions, "Updated", "False", "", "", now)
        if spec.get("paused"):
            set_condition(conditions, "Updating", "False", "", f"Pool is paused; will not update to {line}", now)
        else:
            set_condition(conditions, "Updating", "True", "", f"All nodes are updating to {line}", now)
    reasons = [
        f"Node {_name(n)} is reporting: {json.dumps(_annotations(n).get(ANN_REASON))}"
        for n in degraded
        if _annotations(n).get(ANN_REASON)
    ]
    node_message = ", ".join(reasons)
    if degraded:
        set_condition(
            conditions, "NodeDegraded", "True", f"{len(degraded)} nodes are reporting degraded status on sync",
            node_message, now,
        )
    else:
        set_condition(conditions, "NodeDegraded", "False", "", "", now)
    set_condition(conditions, "RenderDegraded", "True" if render_error else "False", "", render_error or "", now)
    if degraded or render_error:
        set_condition(conditions, "Degraded", "True", "", node_message if degraded else "", now)
    else:
        set_condition(conditions, "Degraded", "False", "", "", now)
    status["conditions"] = conditions
    return status


# ---------------------------------------------------------------- operator side (pkg/operator)

REQUIRED_FOR_UPGRADE_LABEL = "operator.machineconfiguration.openshift.io/required-for-upgrade"


def _condition_true(pool: dict[str, Any], ctype: str) -> bool:
    return any(
        c.get("type") == ctype and str(c.get("status")) == "True"
        for c in ((pool.get("status") or {}).get("conditions")) or []
    )


def _condition_message(pool: dict[str, Any], ctype: str) -> tuple[str, str]:
    for cond in ((pool.get("status") or {}).get("conditions")) or []:
        if cond.get("type") == ctype:
            return cond.get("reason") or "", cond.get("message") or ""
    return "", ""


def pool_status_summary(pool: dict[str, Any]) -> str:
    """operator/status.go machineConfigPoolStatus: one line on a pool, for
    the operator's messages (and its ClusterOperator status extension)."""
    status = pool.get("status") or {}
    if _condition_true(pool, "RenderDegraded"):
        reason, message = _condition_message(pool, "RenderDegraded")
        return f"pool is degraded because rendering fails with {json.dumps(reason)}: {json.dumps(message)}"
    if _condition_true(pool, "NodeDegraded"):
        reason, message = _condition_message(pool, "NodeDegraded")
        return f"pool is degraded because nodes fail with {json.dumps(reason)}: {json.dumps(message)}"
    if _condition_true(pool, "Updated"):
        return (
            f"all {status.get('machineCount', 0)} nodes are at latest configuration "
            f"{(status.get('configuration') or {}).get('name', '')}"
        )
    if _condition_true(pool, "Updating"):
        return (
            f"{status.get('updatedMachineCount', 0)} (ready {status.get('readyMachineCount', 0)}) out of "
            f"{status.get('machineCount', 0)} nodes are updating to latest configuration "
            f"{((pool.get('spec') or {}).get('configuration') or {}).get('name', '')}"
        )
    return "<unknown>"


def pool_configuration_error(
    pool: dict[str, Any],
    controller_version: str,
    release_version: str,
    os_image_url: str,
    machineconfigs: dict[str, dict[str, Any]],
) -> str | None:
    """operator/status.go isMachineConfigPoolConfigurationValid: why the
    pool's *status* configuration is not yet the operator's (None if it is).

    The rendered config (status.configuration.name) must carry this
    controller version; so must every source config that carries the
    annotation at all (generated fragments; user configs carry none); its
    osImageURL must be the release's unless the render marked it
    os-image-url-overridden; its release-image-version must be this
    release's. ``machineconfigs`` maps names to MachineConfigs."""
    name = _name(pool)
    summary = pool_status_summary(pool)
    spec_name = (((pool.get("spec") or {}).get("configuration")) or {}).get("name") or ""
    status_conf = ((pool.get("status") or {}).get("configuration")) or {}
    if not spec_name:
        return f"configuration spec for pool {name} is empty: {summary}"
    if not status_conf.get("name"):
        return f"configuration status for pool {name} is empty: {summary}"
    if not status_conf.get("source"):
        return f"list of MachineConfigs that were used to generate configuration for pool {name} is empty: {summary}"
    rendered_name_ = status_conf["name"]
    for mc_name in [rendered_name_] + [s.get("name") or "" for s in status_conf["source"]]:
        mc = machineconfigs.get(mc_name)
        if mc is None:
            return f'machineconfig.machineconfiguration.openshift.io "{mc_name}" not found'
        annotations = _annotations(mc)
        if ANN_GENERATED_BY not in annotations and mc_name == rendered_name_:
            return f"{mc_name} must be created by controller version {controller_version}: {summary}"
        if ANN_GENERATED_BY in annotations and annotations[ANN_GENERATED_BY] != controller_version:
            return (
                f"controller version mismatch for {mc_name} expected {controller_version} "
                f"has {annotations[ANN_GENERATED_BY]}: {summary}"
            )
    rendered = machineconfigs[rendered_name_]
    annotations = _annotations(rendered)
    url = ((rendered.get("spec") or {}).get("osImageURL")) or ""
    if url != os_image_url and ANN_OS_IMAGE_URL_OVERRIDDEN not in annotations:
        return f"osImageURL mismatch for {name} in {rendered_name_} expected: {os_image_url} got: {url}"
    if ANN_RELEASE_IMAGE_VERSION not in annotations:
        return f"unable to access annotation {ANN_RELEASE_IMAGE_VERSION} for {rendered_name_} expected: {release_version}"
    if annotations[ANN_RELEASE_IMAGE_VERSION] != release_version:
        return (
            f"release image version mismatch for {name} in {rendered_name_} expected: {release_version} "
            f"got: {annotations[ANN_RELEASE_IMAGE_VERSION]}"
        )
    return None


def required_pools_error(
    pools: Iterable[dict[str, Any]],
    controller_version: str,
    release_version: str,
    os_image_url: str,
    machineconfigs: dict[str, dict[str, Any]],
) -> str | None:
    """operator/sync.go syncRequiredMachineConfigPools, one poll: None when
    the operator may report its new version, else its lastErr. Any degraded
    pool (required or not) holds it; each pool labelled
    required-for-upgrade must have a valid configuration
    (``pool_configuration_error``), an observed generation and
    Updated=True; a required pool that is paused fails the sync at once
    (the error says so). Pools without the label (a paused worker pool)
    do not hold it."""
    for pool in sorted(pools, key=_name):
        status = pool.get("status") or {}
        if _condition_true(pool, "Degraded"):
            _reason, message = _condition_message(pool, "Degraded")
            return (
                f"MachineConfigPool {_name(pool)} is not ready, retrying. Status: (pool degraded: true "
                f"total: {status.get('machineCount', 0)}, ready {status.get('readyMachineCount', 0)}, "
                f"updated: {status.get('updatedMachineCount', 0)}, unavailable: "
                f"{status.get('unavailableMachineCount', 0)}, reason: {message})"
            )
        if REQUIRED_FOR_UPGRADE_LABEL not in _labels(pool):
            continue
        invalid = pool_configuration_error(pool, controller_version, release_version, os_image_url, machineconfigs)
        if invalid:
            return f"MachineConfigPool {_name(pool)} has not progressed to latest configuration: {invalid}, retrying"
        generation = _meta(pool).get("generation") or 1
        if generation <= (status.get("observedGeneration") or 0) and _condition_true(pool, "Updated"):
            continue
        if (pool.get("spec") or {}).get("paused"):
            if _condition_true(pool, "Updated"):
                return (
                    f"the required MachineConfigPool {_name(pool)} was paused with no pending updates; "
                    "no further syncing will occur until it is unpaused"
                )
            return f"required MachineConfigPool {_name(pool)} is paused and cannot sync until it is unpaused"
        return (
            f"required MachineConfigPool {_name(pool)} is not ready, retrying. Status: (total: "
            f"{status.get('machineCount', 0)}, ready {status.get('readyMachineCount', 0)}, updated: "
            f"{status.get('updatedMachineCount', 0)}, unavailable: {status.get('unavailableMachineCount', 0)}, "
            f"degraded: {status.get('degradedMachineCount', 0)})"
        )
    return None
