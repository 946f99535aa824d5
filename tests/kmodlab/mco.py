"""MCO simulator: the machine-config controller of a lab cluster.

It talks to the cluster only through the Kubernetes API (the `kubernetes`
client's DynamicClient and watches), as the real controller does: it reads
from watch-fed caches (`Cache`, client-go's informers) and calls the API only
to write (a 2-worker rollout: 12 PATCHes, no reads):

- template: the generated `00-<role>` MachineConfigs follow the
  ControllerConfig `machine-config-controller` (written by the lab's
  machine-config operator, `kmodlab.cvo`): its controller version and
  release (template_controller.go syncControllerConfig, lab content);
- render: per pool, merge the MachineConfigs its `spec.machineConfigSelector`
  selects into `rendered-<pool>-<md5 of the merged spec>` (generated-by and
  release-image-version annotations, ownerReference to the pool), osImageURL
  by the MCO's rule (the ControllerConfig's `spec.baseOSContainerImage`
  unless a non-generated MachineConfig, in merge order, sets one); set
  `spec.configuration`;
- node controller: walk the pool's nodes `maxUnavailable` at a time by
  setting their `desiredConfig`; nothing new while `spec.paused`;
- drain controller: the node agent asks with `desiredDrain`
  (`drain-<config>` / `uncordon-<config>`), the controller cordons
  (`spec.unschedulable`), "drains" (sleeps), and answers `lastAppliedDrain`;
- status: counts and conditions; `status.configuration` follows only once
  all nodes are updated.

Every rule (which MachineConfigs and nodes a pool has, merge order,
osImageURL, node updated/ready/unavailable/degraded, candidates, pool status)
is the lab's own, in `mco_rules` (written from the MCO's Go sources, each
function citing the one it follows); none comes from the product's `_mco`.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import threading
from typing import Any, Callable, Iterable

from kubernetes import client as k8s_client
from kubernetes import dynamic, watch
from kubernetes.dynamic.exceptions import ConflictError, NotFoundError

from . import mco_rules as rules

log = logging.getLogger("kmodlab.mco")

ANN_DESIRED_DRAIN = rules.ANN_DESIRED_DRAIN
ANN_LAST_APPLIED_DRAIN = rules.ANN_LAST_APPLIED_DRAIN
CONTROLLER_VERSION = "kmodlab-mco-0.1"  # before any ControllerConfig (old seeds)
CONTROLLER_CONFIG = "machine-config-controller"  # ctrlcommon.ControllerConfigName
ANN_GENERATED_BY_VERSION = rules.PREFIX + "generated-by-version"  # daemonconsts.GeneratedByVersionAnnotationKey
MC_API = "machineconfiguration.openshift.io/v1"
USER_AGENTS = {"mco": "machine-config-controller", "nodes": "machine-config-daemon"}


def controller_version(release_version: str) -> str:
    """The lab's MCO build of a release (the real one is version.Hash, the
    MCO's git commit): what generated MachineConfigs carry in
    generated-by-controller-version. One per lab release, so a rendering
    names the release it was made by."""
    return f"kmodlab-mco-{release_version}"


def release_of_controller_version(value: str) -> str | None:
    """The release a controller version belongs to (None: not a lab release's)."""
    prefix = "kmodlab-mco-"
    if value.startswith(prefix) and value != CONTROLLER_VERSION:
        return value[len(prefix):]
    return None


def template_machine_configs(role: str, release_version: str) -> list[dict[str, Any]]:
    """What the template controller generates per role (the lab's content):
    `00-<role>`, generated (controller-version annotation), with the
    release's version in a file, so a new release is new config content
    for every pool (even one whose osImageURL is overridden)."""
    return [
        {
            "apiVersion": MC_API,
            "kind": "MachineConfig",
            "metadata": {
                "name": f"00-{role}",
                "labels": {rules.ROLE_LABEL: role},
                "annotations": {rules.ANN_GENERATED_BY: controller_version(release_version)},
            },
            "spec": {
                "config": {
                    "ignition": {"version": "3.2.0"},
                    "storage": {
                        "files": [
                            {
                                "path": "/etc/kmodlab-role",
                                "mode": 420,
                                "overwrite": True,
                                "contents": {"source": "data:," + role},
                            },
                            {
                                "path": "/etc/kmodlab-release",
                                "mode": 420,
                                "overwrite": True,
                                "contents": {"source": "data:," + release_version},
                            },
                        ]
                    },
                },
                "extensions": [],
                "fips": False,
                "kernelArguments": [],
                "kernelType": "default",
                "osImageURL": "",
            },
        }
    ]


def controller_config(release: dict[str, Any], release_image: str) -> dict[str, Any]:
    """The ControllerConfig the machine-config operator writes for a release
    (operator/sync.go syncRenderConfig / syncMachineConfigController: the
    release's OS images, the release image, and the release-image-version
    and generated-by-version annotations)."""
    os_image = release["images"][release["os_tag"]]
    extensions = (release.get("images") or {}).get(release["os_tag"] + "-extensions", "")
    return {
        "apiVersion": MC_API,
        "kind": "ControllerConfig",
        "metadata": {
            "name": CONTROLLER_CONFIG,
            "annotations": {
                rules.ANN_RELEASE_IMAGE_VERSION: release["version"],
                ANN_GENERATED_BY_VERSION: controller_version(release["version"]),
            },
        },
        "spec": {
            "baseOSContainerImage": os_image,
            "baseOSExtensionsContainerImage": extensions,
            "osImageURL": "",
            "releaseImage": release_image,
        },
    }


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

    def replace_status(self, api_version: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT the whole object on its status subresource (a merge patch
        cannot write a JSON null, which some required status fields hold).
        Raises ConflictError when ``obj``'s resourceVersion is stale."""
        resource = self.resource(api_version, kind).subresources["status"]
        return resource.replace(body=obj, name=obj["metadata"]["name"]).to_dict()

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


# The rules themselves live in mco_rules (the lab's own, from the MCO's Go
# sources); these names are the simulator's API that lab tests use.


def parse_max_unavailable(value: Any, machine_count: int) -> int:
    """`spec.maxUnavailable` of a (non-arbiter) pool: mco_rules.max_unavailable."""
    return rules.max_unavailable({"spec": {"maxUnavailable": value}}, machine_count)


def merge_configs(machineconfigs: list[dict[str, Any]], default_os_image: str) -> dict[str, Any]:
    """The rendered spec of a pool from its MachineConfigs: mco_rules.merge."""
    return rules.merge(machineconfigs, default_os_image)


def render_error_of(machineconfigs: list[dict[str, Any]]) -> str | None:
    """What the render controller would refuse in the selected configs."""
    try:
        rules.merge(machineconfigs, "")
    except rules.RenderError as error:
        return str(error)
    return None


rendered_name = rules.rendered_name
node_ready = rules.kubelet_ready
node_unavailable = rules.node_unavailable
node_degraded = rules.node_degraded


def pool_status(pool: dict[str, Any], nodes: list[dict[str, Any]], render_error: str | None) -> dict[str, Any]:
    """The pool status the node controller would write: mco_rules.pool_status."""
    return rules.pool_status(pool, nodes, render_error, now())


def nodes_to_update(pool: dict[str, Any], nodes: list[dict[str, Any]]) -> list[str]:
    """Names of the nodes to point at the pool's target now: mco_rules.nodes_to_update."""
    return rules.nodes_to_update(pool, nodes)


class Controller:
    """A lab controller: watch caches (``self.caches``) that wake one
    reconcile thread (``reconcile()``), a slow resync, errors logged and
    retried. Subclasses set ``name`` and may change how long a pass waits."""

    name = "controller"
    caches: dict[str, Cache]
    stop_event: threading.Event
    dirty: threading.Event
    threads: list[threading.Thread]

    def reconcile(self) -> None:
        raise NotImplementedError

    def wait_seconds(self) -> float:
        """The longest sleep between passes when nothing changes."""
        return 30.0

    def settle_seconds(self) -> float:
        """A pause before each pass, so a burst of watch events makes one pass."""
        return 0.2

    def start(self) -> None:
        for cache in self.caches.values():
            thread = threading.Thread(
                target=cache.run, args=(self.stop_event,), daemon=True, name=f"{self.name}-watch-{cache.kind}"
            )
            thread.start()
            self.threads.append(thread)
        thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        self.dirty.set()

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            self.dirty.wait(self.wait_seconds())
            self.stop_event.wait(self.settle_seconds())
            self.dirty.clear()
            if self.stop_event.is_set():
                return
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - a controller logs and retries
                log.exception("%s reconcile failed", self.name)
                self.stop_event.wait(1.0)
                self.dirty.set()


class MCOSimulator(Controller):
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
                ("ControllerConfig", MC_API),
            )
        }

    # -- the loop (Controller)
    name = "mco"

    def wait_seconds(self) -> float:
        return self.resync_seconds

    def settle_seconds(self) -> float:
        # Let a burst of watch events (one node update is several) settle into one pass.
        return self.coalesce_seconds

    # -- one pass
    def release_os_image(self) -> str:
        """The base OS image of rendering (GetBaseImageContainer: the
        ControllerConfig's spec.baseOSContainerImage). Old seeds without a
        ControllerConfig: the ClusterVersion's desired release's."""
        cc = self.caches["ControllerConfig"].get(CONTROLLER_CONFIG)
        if cc is not None:
            image = ((cc.get("spec") or {}).get("baseOSContainerImage")) or ""
            if not image:
                raise RuntimeError("ControllerConfig has no spec.baseOSContainerImage")
            return image
        version = self.caches["ClusterVersion"].get("version") or {}
        image = (((version.get("status") or {}).get("desired")) or {}).get("image") or ""
        if image not in self.release_os_images:
            raise RuntimeError(f"no OS image known for release image {image!r}")
        return self.release_os_images[image]

    def controller_identity(self) -> tuple[str, str]:
        """(controller version, release version) of the running controller:
        the lab's machine-config-controller "is" the build of the release
        its ControllerConfig names (a real upgrade replaces the MCC pod)."""
        cc = self.caches["ControllerConfig"].get(CONTROLLER_CONFIG)
        annotations = ((cc or {}).get("metadata") or {}).get("annotations") or {}
        release = annotations.get(rules.ANN_RELEASE_IMAGE_VERSION) or ""
        return annotations.get(ANN_GENERATED_BY_VERSION) or CONTROLLER_VERSION, release

    def _sync_templates(self, machineconfigs: list[dict[str, Any]], pools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Template controller: regenerate `00-<role>` (master, worker,
        arbiter if present) when its controller version is not the running
        one (template_controller.go syncControllerConfig -> RunTemplates).
        ``pools`` is unused (kept for the call's shape)."""
        version, release = self.controller_identity()
        if not release:
            return machineconfigs
        by_name = {mc["metadata"]["name"]: mc for mc in machineconfigs}
        # The template controller renders the master and worker roles (and
        # arbiter where the cluster has one); custom pools build on worker's.
        roles = [r for r in (rules.POOL_MASTER, rules.POOL_WORKER, rules.POOL_ARBITER)
                 if r != rules.POOL_ARBITER or f"00-{r}" in by_name]
        for role in roles:
            for template in template_machine_configs(role, release):
                name = template["metadata"]["name"]
                held = by_name.get(name)
                if held is not None and (held["metadata"].get("annotations") or {}).get(rules.ANN_GENERATED_BY) == version:
                    continue
                if held is None:
                    try:
                        written = self.api.create(MC_API, "MachineConfig", template)
                    except ConflictError:  # created by an earlier pass, its watch event on its way
                        continue
                else:
                    written = self.api.patch(
                        MC_API,
                        "MachineConfig",
                        name,
                        {"metadata": {"annotations": template["metadata"]["annotations"]}, "spec": template["spec"]},
                    )
                log.info("template: %s now generated by %s", name, version)
                self.caches["MachineConfig"].store(written)
                by_name[name] = written
        return list(by_name.values())

    def reconcile(self) -> None:
        if not all(cache.synced.is_set() for cache in self.caches.values()):
            return  # the first lists are on their way; their arrival wakes us
        self.reconciles += 1
        machineconfigs = self.caches["MachineConfig"].items()
        pools = self.caches["MachineConfigPool"].items()
        nodes = self.caches["Node"].items()
        machineconfigs = self._sync_templates(machineconfigs, pools)
        existing = {mc["metadata"]["name"] for mc in machineconfigs}
        try:
            default_os_image = self.release_os_image()
            os_error = None
        except RuntimeError as error:
            default_os_image, os_error = "", str(error)
        identity = self.controller_identity()
        for pool in pools:
            self._reconcile_pool(pool, pools, nodes, machineconfigs, existing, default_os_image, os_error, identity)
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
        identity: tuple[str, str] = (CONTROLLER_VERSION, ""),
    ) -> None:
        name = pool["metadata"]["name"]
        rendered_mc, configuration, render_error = rules.render(
            pool, machineconfigs, default_os_image, identity[0], identity[1]
        )
        if os_error:
            rendered_mc, configuration = None, None
            render_error = f"Failed to render configuration for pool {name}: {os_error}"
        if rendered_mc is not None and configuration is not None:
            rendered = rendered_mc["metadata"]["name"]
            if rendered not in existing:
                self._create_rendered(MC_API, "MachineConfig", rendered_mc)
                existing.add(rendered)
                log.info("pool %s: rendered %s (osImageURL %s)", name, rendered, rendered_mc["spec"]["osImageURL"])
            if (pool.get("spec") or {}).get("configuration") != configuration:
                pool = self.api.patch(MC_API, "MachineConfigPool", name, {"spec": {"configuration": configuration}})
                self.caches["MachineConfigPool"].store(pool)
        elif render_error is None:
            return  # selects every MachineConfig: the MCO leaves such a pool alone ("SelectingAll")
        members = rules.nodes_for_pool(pool, pools, nodes)
        if not render_error:
            for node_name in nodes_to_update(pool, members):
                target = pool["spec"]["configuration"]["name"]
                log.info("pool %s: node %s -> %s", name, node_name, target)
                patched = self.api.patch(
                    "v1", "Node", node_name, {"metadata": {"annotations": {rules.ANN_DESIRED_CONFIG: target}}}
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
