"""MCO simulator: the machine-config controller of a lab cluster.

It talks to the cluster only through the Kubernetes API (the `kubernetes`
client's DynamicClient and watches), as the real controller does: it reads
from watch-fed caches (`Cache`, client-go's informers) and calls the API only
to write (a 2-worker rollout: 12 PATCHes, no reads):

- render: per pool, merge the MachineConfigs its `spec.machineConfigSelector`
  selects into `rendered-<pool>-<md5 of the merged spec>` (generated-by
  annotation, ownerReference to the pool), osImageURL by the MCO's rule (last
  non-generated MachineConfig by name that sets one, else the release's OS
  image from ClusterVersion); set `spec.configuration` (name + sources);
- node controller: walk the pool's nodes `maxUnavailable` at a time by
  setting their `desiredConfig`; nothing new while `spec.paused`;
- drain controller: the node agent asks with `desiredDrain`
  (`drain-<config>` / `uncordon-<config>`), the controller cordons
  (`spec.unschedulable`), "drains" (sleeps), and answers `lastAppliedDrain`;
- status: counts and conditions with the MCO's rules (pkg/controller/node
  status.go): updated = current == desired == target and Done; ready =
  updated and Ready; unavailable = unschedulable, not Ready or mid-update;
  Updated / Updating (paused message) / NodeDegraded / RenderDegraded /
  Degraded; `status.configuration` follows only once all are updated.

Pool/node rules shared with the product come from `_mco`.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import logging
import math
import threading
from typing import Any, Callable, Iterable

from kubernetes import client as k8s_client
from kubernetes import dynamic, watch
from kubernetes.dynamic.exceptions import ConflictError, NotFoundError

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _mco

log = logging.getLogger("kmodlab.mco")

ANN_DESIRED_DRAIN = _mco.MCO_PREFIX + "desiredDrain"
ANN_LAST_APPLIED_DRAIN = _mco.MCO_PREFIX + "lastAppliedDrain"
CONTROLLER_VERSION = "kmodlab-mco-0.1"
MC_API = "machineconfiguration.openshift.io/v1"
USER_AGENTS = {"mco": "machine-config-controller", "nodes": "machine-config-daemon"}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Api:
    """The DynamicClient with request counting and the few calls the lab
    controllers make. Thread-safe enough for a controller per thread (each
    owner makes its own)."""

    def __init__(self, kubeconfig: str, name: str) -> None:
        configuration = k8s_client.Configuration()
        from kubernetes import config as k8s_config

        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        self.api_client = k8s_client.ApiClient(configuration)
        # As the real components identify themselves (the API request log tells them apart).
        self.api_client.user_agent = f"{USER_AGENTS.get(name.split('-')[0], name)}/kmodlab"
        self.name = name
        self.requests = 0
        self.by_verb: dict[str, int] = {}
        self._lock = threading.Lock()
        rest = self.api_client.rest_client
        original = rest.request

        def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.requests += 1
                self.by_verb[method] = self.by_verb.get(method, 0) + 1
            return original(method, url, *args, **kwargs)

        rest.request = counted  # type: ignore[method-assign]
        self.dyn = dynamic.DynamicClient(self.api_client)
        self._resources: dict[tuple[str, str], Any] = {}

    def resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        if key not in self._resources:
            self._resources[key] = self.dyn.resources.get(api_version=api_version, kind=kind)
        return self._resources[key]

    def list(self, api_version: str, kind: str, namespace: str | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        result = self.resource(api_version, kind).get(namespace=namespace, **kwargs)
        return [item.to_dict() if hasattr(item, "to_dict") else dict(item) for item in result.items or []]

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return self.resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None

    def create(self, api_version: str, kind: str, body: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        return self.resource(api_version, kind).create(body=body, namespace=namespace).to_dict()

    def patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        body: dict[str, Any],
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """JSON merge patch, on the object or its subresource (``status``)."""
        resource = self.resource(api_version, kind)
        if subresource:
            resource = resource.subresources[subresource]
        return resource.patch(
            body=body, name=name, namespace=namespace, content_type="application/merge-patch+json"
        ).to_dict()

    def watch(
        self,
        api_version: str,
        kind: str,
        stop: threading.Event,
        on_event: Callable[[str, dict[str, Any]], None],
        namespace: str | None = None,
        field_selector: str | None = None,
        poll: float = 1.0,
        on_list: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        """List, then watch from the list's resourceVersion, until `stop`:
        `on_list(items)` (or `on_event("ADDED", item)` per item) after each
        list, `on_event(type, object)` per watch event. The watch is restarted
        (re-listing) when the server ends it; on errors it retries after
        `poll` seconds."""
        resource = self.resource(api_version, kind)
        while not stop.is_set():
            try:
                listing = resource.get(namespace=namespace, field_selector=field_selector)
                items = [item.to_dict() for item in listing.items or []]
                if on_list is not None:
                    on_list(items)
                else:
                    for item in items:
                        on_event("ADDED", item)
                watcher = watch.Watch()
                for event in self.dyn.watch(
                    resource,
                    namespace=namespace,
                    field_selector=field_selector,
                    resource_version=listing.metadata.resourceVersion,
                    timeout=30,
                    watcher=watcher,
                ):
                    if stop.is_set():
                        watcher.stop()
                        break
                    obj = event.get("raw_object") or event["object"]
                    on_event(event.get("type") or "MODIFIED", obj if isinstance(obj, dict) else obj.to_dict())
            except Exception as error:  # noqa: BLE001 - a watch never dies, it retries
                if stop.is_set():
                    return
                log.debug("%s: watch %s failed (%s); retrying", self.name, kind, error)
                stop.wait(poll)


def _resource_version(obj: dict[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class Cache:
    """A watch-fed copy of one kind, what client-go calls an informer and its
    lister: controllers read from it and make API calls only to write."""

    def __init__(self, api: Api, api_version: str, kind: str, on_change: Callable[[], None]) -> None:
        self.api = api
        self.api_version = api_version
        self.kind = kind
        self.on_change = on_change
        self.synced = threading.Event()
        self._objects: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        self.api.watch(self.api_version, self.kind, stop, self._event, on_list=self._replace)

    def _replace(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._objects = {item["metadata"]["name"]: item for item in items}
        self.synced.set()
        self.on_change()

    def _event(self, event_type: str, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if not name or obj.get("kind") == "Status":
            return
        if event_type == "DELETED":
            with self._lock:
                self._objects.pop(name, None)
        else:
            self.store(obj)
        self.on_change()

    def store(self, obj: dict[str, Any]) -> None:
        """Keep `obj` unless the cache already holds a newer version (our own
        write may come back later through the watch, or before it)."""
        name = obj["metadata"]["name"]
        with self._lock:
            held = self._objects.get(name)
            if held is None or _resource_version(obj) >= _resource_version(held):
                self._objects[name] = obj

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._objects.values()))

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.get(name)
            return copy.deepcopy(obj) if obj is not None else None


def parse_max_unavailable(value: Any, machine_count: int) -> int:
    """`spec.maxUnavailable`: int or percent string (rounded down as
    intstr.GetScaledValueFromIntOrPercent), never below 1; default 1."""
    if value is None or value == "":
        return 1
    if isinstance(value, str) and value.endswith("%"):
        scaled = math.floor(int(value[:-1]) * machine_count / 100)
    else:
        scaled = int(value)
    return max(1, scaled)


def merge_configs(machineconfigs: list[dict[str, Any]], default_os_image: str) -> dict[str, Any]:
    """The rendered spec of a pool from its MachineConfigs (merge order of
    `_mco.merge_order`): ignition files by path and units by name, later
    wins; kernel arguments and extensions accumulate; fips ORs; kernelType
    last set; osImageURL by `_mco.effective_os_image_url`."""
    files: dict[str, Any] = {}
    units: dict[str, Any] = {}
    kargs: list[str] = []
    extensions: list[str] = []
    fips = False
    kernel_type = "default"
    version = "3.2.0"
    for mc in _mco.merge_order(machineconfigs):
        spec = mc.get("spec") or {}
        ignition = spec.get("config") or {}
        version = ((ignition.get("ignition") or {}).get("version")) or version
        for entry in ((ignition.get("storage") or {}).get("files")) or []:
            files[entry.get("path")] = entry
        for unit in ((ignition.get("systemd") or {}).get("units")) or []:
            units[unit.get("name")] = unit
        kargs += [a for a in spec.get("kernelArguments") or [] if a not in kargs]
        extensions += [e for e in spec.get("extensions") or [] if e not in extensions]
        fips = fips or bool(spec.get("fips"))
        kernel_type = spec.get("kernelType") or kernel_type
    config: dict[str, Any] = {"ignition": {"version": version}}
    if files:
        config["storage"] = {"files": [files[p] for p in sorted(files)]}
    if units:
        config["systemd"] = {"units": [units[n] for n in sorted(units)]}
    return {
        "config": config,
        "extensions": extensions,
        "fips": fips,
        "kernelArguments": kargs,
        "kernelType": kernel_type,
        "osImageURL": _mco.effective_os_image_url(machineconfigs, default_os_image),
    }


SUPPORTED_IGNITION = ("2.2.0", "3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0")


def render_error_of(machineconfigs: list[dict[str, Any]]) -> str | None:
    """What the render controller would refuse in the selected configs."""
    for mc in sorted(machineconfigs, key=lambda m: m["metadata"]["name"]):
        version = (((mc.get("spec") or {}).get("config") or {}).get("ignition") or {}).get("version")
        if version is not None and version not in SUPPORTED_IGNITION:
            return (
                f"parsing Ignition config failed for {mc['metadata']['name']}: invalid version {version!r}. "
                "Supported spec versions: 2.2, 3.0, 3.1, 3.2, 3.3, 3.4"
            )
    return None


def rendered_name(pool: str, spec: dict[str, Any]) -> str:
    digest = hashlib.md5(json.dumps(spec, sort_keys=True).encode(), usedforsecurity=False).hexdigest()
    return f"rendered-{pool}-{digest}"


def node_ready(node: dict[str, Any]) -> bool:
    return _mco._node_ready(node)  # noqa: SLF001 - the shared rule


def node_unavailable(node: dict[str, Any]) -> bool:
    """Unavailable for an update: unschedulable, not Ready, or mid-update
    (desired != current, or a state other than Done)."""
    ann = (node.get("metadata") or {}).get("annotations") or {}
    if (node.get("spec") or {}).get("unschedulable") or not node_ready(node):
        return True
    if ann.get(_mco.ANNOTATION_DESIRED_CONFIG) != ann.get(_mco.ANNOTATION_CURRENT_CONFIG):
        return True
    return ann.get(_mco.ANNOTATION_STATE) not in (None, "", _mco.STATE_DONE)


def node_degraded(node: dict[str, Any]) -> bool:
    ann = (node.get("metadata") or {}).get("annotations") or {}
    return bool(ann.get(_mco.ANNOTATION_DESIRED_CONFIG)) and ann.get(_mco.ANNOTATION_STATE) in _mco.FAILING_STATES


def _set_condition(
    conditions: list[dict[str, Any]], ctype: str, status: str, reason: str = "", message: str = ""
) -> None:
    for cond in conditions:
        if cond.get("type") == ctype:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = now()
            cond.update(status=status, reason=reason, message=message)
            return
    conditions.append(
        {"type": ctype, "status": status, "reason": reason, "message": message, "lastTransitionTime": now()}
    )


def pool_status(pool: dict[str, Any], nodes: list[dict[str, Any]], render_error: str | None) -> dict[str, Any]:
    """The pool status the node controller would write (see module doc)."""
    spec = pool.get("spec") or {}
    target = (spec.get("configuration") or {}).get("name") or ""
    old = pool.get("status") or {}
    updated = [n for n in nodes if _mco.node_state(n, target)["updated"]]
    ready = [n for n in updated if node_ready(n)]
    unavailable = [n for n in nodes if node_unavailable(n)]
    degraded = [n for n in nodes if node_degraded(n)]
    status: dict[str, Any] = {
        "observedGeneration": (pool.get("metadata") or {}).get("generation") or 1,
        "machineCount": len(nodes),
        "updatedMachineCount": len(updated),
        "readyMachineCount": len(ready),
        "unavailableMachineCount": len(unavailable),
        "degradedMachineCount": len(degraded),
        "configuration": copy.deepcopy(old.get("configuration") or {}),
    }
    conditions = copy.deepcopy(old.get("conditions") or [])
    line = f"MachineConfig {target}"
    if len(updated) == len(ready) == len(nodes) and not unavailable:
        _set_condition(conditions, "Updated", "True", "", f"All nodes are updated with {line}")
        _set_condition(conditions, "Updating", "False")
        status["configuration"] = copy.deepcopy(spec.get("configuration") or {})
    else:
        _set_condition(conditions, "Updated", "False")
        if spec.get("paused"):
            _set_condition(conditions, "Updating", "False", "", f"Pool is paused; will not update to {line}")
        else:
            _set_condition(conditions, "Updating", "True", "", f"All nodes are updating to {line}")
    reasons = []
    for node in degraded:
        reason = ((node.get("metadata") or {}).get("annotations") or {}).get(_mco.ANNOTATION_REASON)
        if reason:
            reasons.append(f"Node {node['metadata']['name']} is reporting: {json.dumps(reason)}")
    node_message = ", ".join(reasons)
    if degraded:
        _set_condition(
            conditions,
            "NodeDegraded",
            "True",
            f"{len(degraded)} nodes are reporting degraded status on sync",
            node_message,
        )
    else:
        _set_condition(conditions, "NodeDegraded", "False")
    if render_error:
        _set_condition(conditions, "RenderDegraded", "True", "", render_error)
    else:
        _set_condition(conditions, "RenderDegraded", "False")
    if degraded or render_error:
        _set_condition(conditions, "Degraded", "True", "", node_message if degraded else "")
    else:
        _set_condition(conditions, "Degraded", "False")
    status["conditions"] = conditions
    return status


def nodes_to_update(pool: dict[str, Any], nodes: list[dict[str, Any]]) -> list[str]:
    """Names of the nodes to point at the pool's target now: none while
    paused; nodes already unavailable (e.g. degraded on a config since
    replaced) are retargeted freely, others up to maxUnavailable minus the
    unavailable ones, by name (the real controller prefers zones/age; the lab
    has neither)."""
    spec = pool.get("spec") or {}
    target = (spec.get("configuration") or {}).get("name")
    if not target or spec.get("paused"):
        return []
    capacity = parse_max_unavailable(spec.get("maxUnavailable"), len(nodes))
    capacity -= sum(1 for n in nodes if node_unavailable(n))
    candidates = sorted(
        (
            n
            for n in nodes
            if ((n.get("metadata") or {}).get("annotations") or {}).get(_mco.ANNOTATION_DESIRED_CONFIG) != target
        ),
        key=lambda n: n["metadata"]["name"],
    )
    chosen = [n["metadata"]["name"] for n in candidates if node_unavailable(n)]
    chosen += [n["metadata"]["name"] for n in candidates if not node_unavailable(n)][: max(0, capacity)]
    return chosen


class MCOSimulator:
    """The controller: one reconcile thread woken by watches on
    MachineConfigs, MachineConfigPools and Nodes (plus a slow resync)."""

    def __init__(
        self,
        kubeconfig: str,
        release_os_images: dict[str, str],
        drain_seconds: float = 1.0,
        resync_seconds: float = 30.0,
        coalesce_seconds: float = 0.2,
    ) -> None:
        self.api = Api(kubeconfig, "mco")
        self.watch_api = Api(kubeconfig, "mco-watch")
        # release pullspec (ClusterVersion status.desired.image) -> OS image
        self.release_os_images = release_os_images
        self.drain_seconds = drain_seconds
        self.resync_seconds = resync_seconds
        self.coalesce_seconds = coalesce_seconds
        self.stop_event = threading.Event()
        self.dirty = threading.Event()
        self.threads: list[threading.Thread] = []
        self.reconciles = 0
        self._draining: set[str] = set()
        self.caches = {
            kind: Cache(self.watch_api, api_version, kind, self.dirty.set)
            for kind, api_version in (
                ("MachineConfig", MC_API),
                ("MachineConfigPool", MC_API),
                ("Node", "v1"),
                ("ClusterVersion", "config.openshift.io/v1"),
            )
        }

    # -- lifecycle
    def start(self) -> None:
        for cache in self.caches.values():
            thread = threading.Thread(
                target=cache.run, args=(self.stop_event,), daemon=True, name=f"mco-watch-{cache.kind}"
            )
            thread.start()
            self.threads.append(thread)
        thread = threading.Thread(target=self._loop, name="mco", daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        self.dirty.set()

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            self.dirty.wait(self.resync_seconds)
            # Let a burst of watch events (one node update is several) settle into one pass.
            self.stop_event.wait(self.coalesce_seconds)
            self.dirty.clear()
            if self.stop_event.is_set():
                return
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - a controller logs and retries
                log.exception("reconcile failed")
                self.stop_event.wait(1.0)
                self.dirty.set()

    # -- one pass
    def release_os_image(self) -> str:
        version = self.caches["ClusterVersion"].get("version") or {}
        image = (((version.get("status") or {}).get("desired")) or {}).get("image") or ""
        if image not in self.release_os_images:
            raise RuntimeError(f"no OS image known for release image {image!r}")
        return self.release_os_images[image]

    def reconcile(self) -> None:
        if not all(cache.synced.is_set() for cache in self.caches.values()):
            return  # the first lists are on their way; their arrival wakes us
        self.reconciles += 1
        machineconfigs = self.caches["MachineConfig"].items()
        pools = self.caches["MachineConfigPool"].items()
        nodes = self.caches["Node"].items()
        existing = {mc["metadata"]["name"] for mc in machineconfigs}
        try:
            default_os_image = self.release_os_image()
            os_error = None
        except RuntimeError as error:
            default_os_image, os_error = "", str(error)
        for pool in pools:
            self._reconcile_pool(pool, pools, nodes, machineconfigs, existing, default_os_image, os_error)
        self._drain(nodes)

    def _reconcile_pool(
        self,
        pool: dict[str, Any],
        pools: list[dict[str, Any]],
        nodes: list[dict[str, Any]],
        machineconfigs: list[dict[str, Any]],
        existing: set[str],
        default_os_image: str,
        os_error: str | None,
    ) -> None:
        name = pool["metadata"]["name"]
        selected = [
            mc
            for mc in _mco.pool_machine_configs(pool, machineconfigs)
            if not mc["metadata"]["name"].startswith(_mco.RENDERED_PREFIX)
        ]
        render_error = os_error
        if not render_error and not selected:
            render_error = f"no MachineConfigs found matching selector for pool {name}"
        render_error = render_error or render_error_of(selected)
        if render_error:
            render_error = f"Failed to render configuration for pool {name}: {render_error}"
        else:
            spec = merge_configs(selected, default_os_image)
            rendered = rendered_name(name, spec)
            if rendered not in existing:
                self._create_rendered(
                    MC_API,
                    "MachineConfig",
                    {
                        "apiVersion": MC_API,
                        "kind": "MachineConfig",
                        "metadata": {
                            "name": rendered,
                            "annotations": {
                                _mco.ANNOTATION_GENERATED_BY: CONTROLLER_VERSION,
                                _mco.MCO_PREFIX + "release-image-version": "",
                            },
                            "ownerReferences": [
                                {
                                    "apiVersion": MC_API,
                                    "kind": "MachineConfigPool",
                                    "name": name,
                                    "uid": pool["metadata"].get("uid", ""),
                                    "controller": True,
                                    "blockOwnerDeletion": True,
                                }
                            ],
                        },
                        "spec": spec,
                    },
                )
                existing.add(rendered)
                log.info("pool %s: rendered %s (osImageURL %s)", name, rendered, spec["osImageURL"])
            configuration = {
                "name": rendered,
                "source": [
                    {"apiVersion": MC_API, "kind": "MachineConfig", "name": mc["metadata"]["name"]}
                    for mc in sorted(selected, key=lambda m: m["metadata"]["name"])
                ],
            }
            if (pool.get("spec") or {}).get("configuration") != configuration:
                pool = self.api.patch(MC_API, "MachineConfigPool", name, {"spec": {"configuration": configuration}})
                self.caches["MachineConfigPool"].store(pool)
        members = _mco.pool_nodes(pool, pools, nodes)
        if not render_error:
            for node_name in nodes_to_update(pool, members):
                target = pool["spec"]["configuration"]["name"]
                log.info("pool %s: node %s -> %s", name, node_name, target)
                patched = self.api.patch(
                    "v1", "Node", node_name, {"metadata": {"annotations": {_mco.ANNOTATION_DESIRED_CONFIG: target}}}
                )
                self.caches["Node"].store(patched)
                members = [patched if n["metadata"]["name"] == node_name else n for n in members]
        status = pool_status(pool, members, render_error)
        if _comparable(status) != _comparable(pool.get("status") or {}):
            self.caches["MachineConfigPool"].store(
                self.api.patch(MC_API, "MachineConfigPool", name, {"status": status}, subresource="status")
            )

    def _create_rendered(self, api_version: str, kind: str, body: dict[str, Any]) -> None:
        try:
            created = self.api.create(api_version, kind, body)
        except ConflictError:  # made by an earlier pass whose watch event is still on its way
            return
        self.caches["MachineConfig"].store(created)

    # -- drain controller
    def _drain(self, nodes: Iterable[dict[str, Any]]) -> None:
        for node in nodes:
            name = node["metadata"]["name"]
            ann = node["metadata"].get("annotations") or {}
            wanted = ann.get(ANN_DESIRED_DRAIN)
            if not wanted or wanted == ann.get(ANN_LAST_APPLIED_DRAIN) or name in self._draining:
                continue
            self._draining.add(name)
            threading.Thread(target=self._drain_node, args=(name, wanted), daemon=True, name=f"drain-{name}").start()

    def _drain_node(self, name: str, wanted: str) -> None:
        try:
            if wanted.startswith("drain-"):
                self.caches["Node"].store(self.api.patch("v1", "Node", name, {"spec": {"unschedulable": True}}))
                # Evicting pods: simulated by time only.
                self.stop_event.wait(self.drain_seconds)
                body: dict[str, Any] = {}
            else:
                body = {"spec": {"unschedulable": None}}
            body.setdefault("metadata", {})["annotations"] = {ANN_LAST_APPLIED_DRAIN: wanted}
            self.caches["Node"].store(self.api.patch("v1", "Node", name, body))
        except Exception:  # noqa: BLE001
            log.exception("drain of %s failed", name)
        finally:
            self._draining.discard(name)
            self.dirty.set()


def _comparable(status: dict[str, Any]) -> Any:
    """A status without transition times, to skip no-op writes."""
    data = copy.deepcopy(status)
    for cond in data.get("conditions") or []:
        cond.pop("lastTransitionTime", None)
        for key in ("reason", "message"):
            cond.setdefault(key, "")
    return json.dumps(data, sort_keys=True)
