"""Lab clusters: one background process per cluster running the lab API
server (HTTPS, lab CA, a random token), the MCO simulator and the node
agents.

    start_clusters(state, count=, releases=, workers=, masters=, infra=, node_mode=)
    stop_clusters(state)
    python -m kmodlab.cluster serve --config <cluster dir>/config.json

A cluster is seeded like a freshly installed OpenShift cluster: ClusterVersion
`version` (desired = the release image by digest), base MachineConfigs
(`00-<role>` generated, `99-<role>-ssh` user), pools master/worker (+infra)
with `maxUnavailable: 1`, nodes on the pools' initial rendered configs (Done,
Ready), and the lab's auth.json as `openshift-config/pull-secret`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Sequence

import yaml

from . import paths, pki
from .state import LabState

log = logging.getLogger("kmodlab.cluster")

MC_API = "machineconfiguration.openshift.io/v1"
ROLE_LABEL = "machineconfiguration.openshift.io/role"
GENERATED_BY = "machineconfiguration.openshift.io/generated-by-controller-version"
START_TIMEOUT = 120.0


class ClusterError(RuntimeError):
    pass


# ---------------------------------------------------------------- parent side


def cluster_name(index: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return "lab-" + (letters[index] if index < 26 else f"{index}")


def _digest_pullspec(pullspec: str, digest: str) -> str:
    """`host:port/repo:tag` + digest -> `host:port/repo@digest`."""
    name = pullspec.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: name.rindex(":")]
    return f"{name}@{digest}"


def _pids_file(layout: paths.StateLayout, name: str) -> Path:
    return layout.pids / f"cluster-{name}.pid"


def start_clusters(
    state: LabState,
    count: int,
    releases: Sequence[str],
    workers: int = 2,
    masters: int = 1,
    infra: int = 0,
    node_mode: str = "qemu",
    drain_seconds: float = 1.0,
    reboot_seconds: float = 0.0,
    max_unavailable: int | str = 1,
    operator_seconds: float = 2.0,
    degraded_interval_seconds: float = 10.0,
) -> list[dict[str, Any]]:
    """Start `count` more clusters (releases assigned round-robin), add them
    to `state.clusters`, write kubeconfigs and the inventory; returns the new
    cluster entries once every API answers with its nodes seeded.
    `drain_seconds` / `reboot_seconds` (fast mode) and the pools'
    `max_unavailable` set how long a rollout lasts (benchmarks);
    `operator_seconds` how long each cluster operator takes to move to a new
    release in an upgrade and `degraded_interval_seconds` how long the CVO
    waits on a degraded operator before Failing (the real 40 minutes), see
    `kmodlab.cvo`."""
    if node_mode not in ("qemu", "fast"):
        raise ClusterError(f"node_mode must be qemu or fast, not {node_mode!r}")
    if not releases:
        raise ClusterError("start_clusters needs at least one release")
    layout = state.layout
    pki_paths = pki.pki_for(layout)
    for needed in (pki_paths.server_cert, pki_paths.server_key, layout.ca_file):
        if not needed.exists():
            raise ClusterError(f"{needed} is missing: bring the registries (and PKI) up first")
    used = {c.get("name") for c in state.clusters}
    used_ports = {int(c["api_url"].rsplit(":", 1)[1]) for c in state.clusters if c.get("api_url")}
    ports = paths.ports()
    started: list[tuple[dict[str, Any], subprocess.Popen[bytes]]] = []
    index = 0
    try:
        for number in range(count):
            while cluster_name(index) in used or ports.apiserver(index) in used_ports:
                index += 1
            name, port = cluster_name(index), ports.apiserver(index)
            used.add(name)
            release = state.release(releases[number % len(releases)])
            directory = layout.clusters / name
            directory.mkdir(parents=True, exist_ok=True)
            token = secrets.token_urlsafe(32)
            config = {
                "name": name,
                "host": paths.HOST,
                "port": port,
                "token": token,
                "state_root": str(state.root),
                "ca_file": str(layout.ca_file),
                "cert_file": str(pki_paths.server_cert),
                "key_file": str(pki_paths.server_key),
                "auth_file": str(state.registry.auth_file or layout.auth_file),
                "kubeconfig": str(directory / "kubeconfig"),
                "release": release,
                # Every lab release, so a ClusterVersion moved to another one re-renders.
                "release_os_images": {
                    _digest_pullspec(r["pullspec"], r["digest"]): r["images"][r["os_tag"]]
                    for r in state.releases
                    if r.get("digest") and r.get("os_tag") in (r.get("images") or {})
                },
                "workers": workers,
                "masters": masters,
                "infra": infra,
                "node_mode": node_mode,
                "drain_seconds": drain_seconds,
                "reboot_seconds": reboot_seconds,
                "max_unavailable": max_unavailable,
                "stats_file": str(directory / "stats.json"),
                "boots_file": str(directory / "boots.json"),
                # The lab's update service and release catalog (kmodlab.cvo).
                "releases": [dict(r) for r in state.releases if r.get("digest")],
                "operator_seconds": operator_seconds,
                "degraded_interval_seconds": degraded_interval_seconds,
                "image_store": str(layout.clusters / "node-images"),
            }
            config_path = directory / "config.json"
            fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as stream:
                json.dump(config, stream, indent=2)
            layout.logs.mkdir(parents=True, exist_ok=True)
            layout.pids.mkdir(parents=True, exist_ok=True)
            log_path = layout.logs / f"cluster-{name}.log"
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(paths.CHECKOUT / ".build" / "collections"), str(paths.CHECKOUT / "tests")]
                + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
            )
            with open(log_path, "ab") as log_stream:
                process = subprocess.Popen(
                    [sys.executable, "-m", "kmodlab.cluster", "serve", "--config", str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_stream,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=str(paths.CHECKOUT),
                    start_new_session=True,
                )
            _pids_file(layout, name).write_text(f"{process.pid}\n")
            entry = {
                "name": name,
                "api_url": f"https://{paths.HOST}:{port}",
                "token": token,
                "kubeconfig": config["kubeconfig"],
                "release": release["version"],
                "node_mode": node_mode,
                "pools": {"master": masters, "worker": workers, **({"infra": infra} if infra else {})},
                "pid": process.pid,
                "log": str(log_path),
                "boots_file": config["boots_file"],
            }
            started.append((entry, process))
            state.clusters.append(entry)
        for entry, process in started:
            _wait_ready(entry, process, str(layout.ca_file), masters + workers + infra)
    except BaseException:
        for entry, _process in started:
            _stop_one(state, entry)
            if entry in state.clusters:
                state.clusters.remove(entry)
        raise
    write_inventory(state)
    return [entry for entry, _process in started]


def _wait_ready(entry: dict[str, Any], process: subprocess.Popen[bytes], ca_file: str, nodes: int) -> None:
    """Until the API answers with the seeded nodes (or the process died)."""
    context = ssl.create_default_context(cafile=ca_file)
    deadline = time.monotonic() + START_TIMEOUT
    last_error = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = Path(entry["log"]).read_text(errors="replace")[-3000:]
            raise ClusterError(f"cluster {entry['name']} exited with {process.returncode}:\n{tail}")
        request = urllib.request.Request(
            entry["api_url"] + "/api/v1/nodes", headers={"Authorization": f"Bearer {entry['token']}"}
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as response:
                if len(json.load(response).get("items") or []) == nodes:
                    return
                last_error = "nodes not seeded yet"
        except (OSError, ValueError) as error:
            last_error = str(error)
        time.sleep(0.2)
    raise ClusterError(f"cluster {entry['name']} API did not come up in {START_TIMEOUT:.0f}s: {last_error}")


def write_inventory(state: LabState) -> Path:
    """The Ansible inventory of the lab clusters (one host per cluster), in
    the collection's `kmod_*` vocabulary: clusters are reached by kubeconfig
    and their release is read from their ClusterVersion, as for a real fleet.
    The first cluster is the canary."""
    hosts = {}
    for cluster in state.clusters:
        pools = ["worker"] + (["infra"] if (cluster.get("pools") or {}).get("infra") else [])
        hosts[cluster["name"]] = {
            "kmod_kubeconfig": cluster["kubeconfig"],
            "kmod_pools": pools,
            # For tests and people; the playbooks read the ClusterVersion.
            "lab_release": cluster["release"],
        }
    registry = state.registry or {}
    kmods = paths.CHECKOUT / "tests" / "fixtures" / "kmods"
    fleet_vars = {
        "ansible_connection": "local",
        # Modules run on the controller: its Python has the kubernetes client.
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "kmod_registry_auth_file": registry.get("auth_file", ""),
        "kmod_registry_ca_file": state.ca_file or "",
        "kmod_image_repository": f"{registry.get('host', '')}/kmod-layering/rhcos-kmods",
        "kmod_cache_dir": str(state.layout.root / "cache"),
        "kmod_modules": [
            {
                "name": "kmodlab_core",
                "source": {"path": str(kmods / "kmodlab_core")},
                "options": "greeting=hello-from-kmod-layering level=3",
            },
            {"name": "kmodlab_dep", "source": {"path": str(kmods / "kmodlab_dep")}},
        ],
    }
    children: dict[str, Any] = {"lab_clusters": {"hosts": hosts}}
    if hosts:
        children["canary"] = {"hosts": {next(iter(hosts)): {}}}
    inventory = {"all": {"vars": fleet_vars, "children": children}}
    path = state.layout.inventory
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    state.inventory = str(path)
    return path


def _stop_one(state: LabState, cluster: dict[str, Any], timeout: float = 15.0) -> None:
    pid = cluster.get("pid")
    if pid:
        # The cluster leads its own process group: its qemu children go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(pid):
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if _group_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
    with contextlib.suppress(FileNotFoundError):
        _pids_file(state.layout, cluster["name"]).unlink()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still counts for killpg; reap it if it is our child.
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pgid, os.WNOHANG)[0] == pgid:
            return _group_alive(pgid)
    return True


def stop_cluster(state: LabState, name: str) -> None:
    """Stop one cluster and drop it from `state` and the inventory."""
    for cluster in list(state.clusters):
        if cluster.get("name") == name:
            _stop_one(state, cluster)
            state.clusters.remove(cluster)
    write_inventory(state)


def stop_clusters(state: LabState) -> None:
    """Stop every cluster of `state` (and their qemu children)."""
    for cluster in list(state.clusters):
        _stop_one(state, cluster)
    state.clusters = []
    with contextlib.suppress(FileNotFoundError):
        state.layout.inventory.unlink()
    # Unpacked OS images of the node agents: large, and useless without clusters.
    shutil.rmtree(state.layout.clusters / "node-images", ignore_errors=True)


# ---------------------------------------------------------------- seeding


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def base_machine_configs(role: str, release_version: str = "") -> list[dict[str, Any]]:
    """What the installer leaves per role: the generated template config
    (`00-<role>`, mco.template_machine_configs: the release's controller
    version) and the user's ssh key config (neither sets osImageURL)."""
    from . import mco

    if release_version:
        generated = mco.template_machine_configs(role, release_version)
    else:  # no release: the lab's first template (no release file)
        generated = mco.template_machine_configs(role, "")
        generated[0]["metadata"]["annotations"][GENERATED_BY] = mco.CONTROLLER_VERSION
        files = generated[0]["spec"]["config"]["storage"]["files"]
        files[:] = [f for f in files if f["path"] != "/etc/kmodlab-release"]
    return generated + [
        {
            "apiVersion": MC_API,
            "kind": "MachineConfig",
            "metadata": {"name": f"99-{role}-ssh", "labels": {ROLE_LABEL: role}},
            "spec": {
                "config": {
                    "ignition": {"version": "3.2.0"},
                    "passwd": {
                        "users": [{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAAAkmodlab lab@kmodlab"]}]
                    },
                }
            },
        },
    ]


REQUIRED_FOR_UPGRADE = "operator.machineconfiguration.openshift.io/required-for-upgrade"


def pool_object(
    name: str, role_selector: dict[str, Any], node_role: str, max_unavailable: int | str = 1
) -> dict[str, Any]:
    labels = {f"pools.operator.machineconfiguration.openshift.io/{name}": ""}
    if name == "master":
        # As the installer's master pool (bootstrap master.machineconfigpool.yaml).
        labels[REQUIRED_FOR_UPGRADE] = ""
    return {
        "apiVersion": MC_API,
        "kind": "MachineConfigPool",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "machineConfigSelector": role_selector,
            "nodeSelector": {"matchLabels": {f"node-role.kubernetes.io/{node_role}": ""}},
            "maxUnavailable": max_unavailable,
            "paused": False,
        },
    }


def node_object(name: str, roles: list[str], rendered: str, kernel: str, release: str) -> dict[str, Any]:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "node.openshift.io/os_id": "rhcos",
    }
    labels.update({f"node-role.kubernetes.io/{role}": "" for role in roles})
    major_minor = "".join(release.split(".")[:2])
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "machineconfiguration.openshift.io/currentConfig": rendered,
                "machineconfiguration.openshift.io/desiredConfig": rendered,
                "machineconfiguration.openshift.io/state": "Done",
                "machineconfiguration.openshift.io/reason": "",
                "machineconfiguration.openshift.io/lastAppliedDrain": f"uncordon-{rendered}",
                "machineconfiguration.openshift.io/desiredDrain": f"uncordon-{rendered}",
            },
        },
        "spec": {},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": _now(),
                    "lastTransitionTime": _now(),
                }
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "kernelVersion": kernel,
                "operatingSystem": "linux",
                "osImage": f"Red Hat Enterprise Linux CoreOS {major_minor}.94 (Plow)",
                "containerRuntimeVersion": "cri-o://1.29.0",
                "kubeletVersion": "v1.29.0",
                "kubeProxyVersion": "",
                "machineID": uuid.uuid4().hex,
                "systemUUID": str(uuid.uuid4()),
                "bootID": str(uuid.uuid4()),
            },
            "addresses": [{"type": "Hostname", "address": name}],
        },
    }


def seed(server: Any, config: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Seed a fresh cluster; returns the node agents' start info by node."""
    from . import cvo, mco

    release = config["release"]
    release_image = _digest_pullspec(release["pullspec"], release["digest"])
    os_image = release["images"][release["os_tag"]]
    os_digest = os_image.split("@", 1)[1] if "@" in os_image else ""
    server.seed(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "openshift-config"},
            "status": {"phase": "Active"},
        }
    )
    server.seed(
        {
            "apiVersion": "config.openshift.io/v1",
            "kind": "ClusterVersion",
            "metadata": {"name": "version"},
            "spec": {
                "clusterID": str(uuid.uuid4()),
                "channel": "stable-" + ".".join(release["version"].split(".")[:2]),
            },
            "status": {
                "desired": {"image": release_image, "version": release["version"]},
                "history": [
                    {
                        "state": "Completed",
                        "version": release["version"],
                        "image": release_image,
                        "startedTime": _now(),
                        "completionTime": _now(),
                        "verified": False,
                    }
                ],
                "observedGeneration": 1,
                "versionHash": base64.b32encode(os.urandom(5)).decode()[:8],
                "availableUpdates": None,
                "conditions": [
                    {
                        "type": "Available",
                        "status": "True",
                        "lastTransitionTime": _now(),
                        "message": f"Done applying {release['version']}",
                    },
                    {
                        "type": "Progressing",
                        "status": "False",
                        "lastTransitionTime": _now(),
                        "message": f"Cluster version is {release['version']}",
                    },
                ],
            },
        }
    )
    for operator in cvo.OPERATORS:
        server.seed(cvo.cluster_operator(operator, release["version"], _now()))
    server.seed(mco.controller_config(release, release_image))
    server.seed(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "pull-secret", "namespace": "openshift-config"},
            "data": {".dockerconfigjson": base64.b64encode(Path(config["auth_file"]).read_bytes()).decode()},
        }
    )
    pools = [
        ("master", {"matchLabels": {ROLE_LABEL: "master"}}, "master"),
        ("worker", {"matchLabels": {ROLE_LABEL: "worker"}}, "worker"),
    ]
    if config["infra"]:
        pools.append(
            (
                "infra",
                {"matchExpressions": [{"key": ROLE_LABEL, "operator": "In", "values": ["worker", "infra"]}]},
                "infra",
            )
        )
    machineconfigs = base_machine_configs("master", release["version"]) + base_machine_configs(
        "worker", release["version"]
    )
    for mc in machineconfigs:
        server.seed(mc)
    node_roles = (
        [(f"master-{i}", ["master"], "master") for i in range(config["masters"])]
        + [(f"worker-{i}", ["worker"], "worker") for i in range(config["workers"])]
        + [(f"infra-{i}", ["worker", "infra"], "infra") for i in range(config["infra"])]
    )
    agents: dict[str, dict[str, str]] = {}
    nodes = []
    pool_objects = []
    from . import mco_rules

    for name, selector, node_role in pools:
        pool = server.seed(pool_object(name, selector, node_role, config.get("max_unavailable", 1)))
        rendered_mc, configuration, error = mco_rules.render(
            pool, machineconfigs, os_image, mco.controller_version(release["version"]), release["version"]
        )
        if error or rendered_mc is None or configuration is None:
            raise ClusterError(f"seeding pool {name}: {error or 'nothing to render'}")
        rendered = rendered_mc["metadata"]["name"]
        server.seed(rendered_mc)
        pool["spec"]["configuration"] = configuration
        pool = server.seed(pool)
        pool_objects.append((pool, rendered))
    for node_name, roles, node_role in node_roles:
        rendered = next(r for p, r in pool_objects if p["metadata"]["name"] == node_role)
        nodes.append(server.seed(node_object(node_name, roles, rendered, release["kernel"], release["version"])))
        agents[node_name] = {"image": os_image, "digest": os_digest, "kernel": release["kernel"], "config": rendered}
    all_pools = [p for p, _r in pool_objects]
    for pool, _rendered in pool_objects:
        members = mco_rules.nodes_for_pool(pool, all_pools, nodes)
        pool["status"] = mco.pool_status(pool, members, None)
        server.seed(pool)
    return agents


# ---------------------------------------------------------------- child side


async def serve(config: dict[str, Any]) -> None:
    from . import apiserver, cvo, mco, node

    server = apiserver.LabAPIServer()
    await server.start(config["host"], config["port"], config["cert_file"], config["key_file"], config["token"])
    apiserver.write_kubeconfig(config["kubeconfig"], server.url, config["ca_file"], config["token"], config["name"])
    agents = seed(server, config)
    release = config["release"]
    release_image = _digest_pullspec(release["pullspec"], release["digest"])
    os_image = release["images"][release["os_tag"]]
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    def start_controllers() -> tuple[Any, Any, Any]:
        os_images = dict(config.get("release_os_images") or {}, **{release_image: os_image})
        controller = mco.MCOSimulator(
            config["kubeconfig"], os_images, drain_seconds=float(config.get("drain_seconds", 1.0))
        )
        fleet = node.NodeFleet(
            config["kubeconfig"],
            agents,
            release["version"],
            config["node_mode"],
            node.ImageStore(Path(config["image_store"]), config["ca_file"]),
            reboot_seconds=float(config.get("reboot_seconds", 0.0)),
            releases=config.get("releases") or [release],
            boots_file=config.get("boots_file"),
        )
        version_operator = cvo.ClusterVersionOperator(
            config["kubeconfig"],
            config.get("releases") or [release],
            release["version"],
            operator_seconds=float(config.get("operator_seconds", 2.0)),
            degraded_interval_seconds=float(config.get("degraded_interval_seconds", 10.0)),
        )
        controller.start()
        fleet.start()
        version_operator.start()
        return controller, fleet, version_operator

    # The clients are synchronous: they run in threads, the server on this loop.
    controller, fleet, version_operator = await asyncio.to_thread(start_controllers)
    log.info("cluster %s up at %s (%d nodes, %s mode)", config["name"], server.url, len(agents), config["node_mode"])

    def write_stats() -> None:
        stats = {
            "mco_requests": controller.api.requests + controller.watch_api.requests,
            "mco_requests_by_verb": dict(controller.api.by_verb),
            "mco_reconciles": controller.reconciles,
            "node_requests": fleet.api.requests + fleet.watch_api.requests,
            "boots": {name: agent.boots for name, agent in fleet.agents.items()},
            "cvo_requests": version_operator.api.requests + version_operator.watch_api.requests,
        }
        tmp = config["stats_file"] + ".tmp"
        Path(tmp).write_text(json.dumps(stats, indent=1))
        os.replace(tmp, config["stats_file"])

    while not stopping.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), 2.0)
        await asyncio.to_thread(write_stats)
    version_operator.stop()
    controller.stop()
    fleet.stop()
    await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kmodlab.cluster")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve", help="run one lab cluster (API server, MCO, nodes)")
    serve_parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")
    for noisy in ("kubernetes", "aiohttp.access", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = json.loads(Path(args.config).read_text())
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
