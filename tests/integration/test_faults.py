"""Faults injected into the lab, and what the product does about each.

The fault layer is kmodlab.faults.FaultProxy: a TLS reverse proxy put in
front of the lab registry or a lab API server, answering 5xx, dropping
connections, stalling or cutting answers short, per method/path/user agent.
Clients (podman, the product's registry client, the lab's node agents,
kubernetes.core, our modules) are pointed at the proxy instead.

Expected: transient faults are retried (bounded, with backoff) and the run
succeeds; persistent ones fail clearly, naming cluster, pool, node and
reason, and the previous configuration stays on the nodes.

Fault -> test(s) -> outcome:

- registry 5xx / 429, transient, on reads -> unit test_registry_retry (in-process
  registry), test_registry_transient_faults_are_retried (lab registry behind the
  proxy) -> retried with backoff, succeeds, retries reported
- registry connection dropped, transient -> the same two -> retried, succeeds
- registry slow, past the client timeout -> test_registry_transient_faults_are_retried[slow]
  -> the timeout is retried, succeeds
- registry 5xx, persistent -> test_registry_persistent_faults_fail_bounded_and_clear[503]
  -> fails after 1+4 attempts naming the registry and HTTP 503
- registry down (connection refused) -> ...[down] -> fails after 1+4 attempts,
  "cannot reach registry"
- registry 4xx (auth) -> ...[403] -> one attempt, never retried
- registry 5xx / slow / down during the push (publish role, podman) ->
  test_push_retried_on_a_transient_5xx_and_fails_clearly_when_persistent ->
  transient: retried, pushed; slow: waited for, pushed; persistent 5xx or connection
  lost at every push: fails naming the image, no cluster written
- registry 5xx / dropped connection / slow answer during node pulls, transient ->
  test_node_pulls_and_api_reads_ride_out_transient_faults -> node agents retry, rollout done
- a node that cannot pull the image (registry broken for good) ->
  test_node_that_cannot_pull_fails_the_rollout_naming_cluster_pool_node_reason, and
  tests/lab/test_lab_cluster.py::test_unpullable_image_degrades_the_node_with_the_registry_error ->
  node Degraded with the registry error; the wait fails naming cluster, pool, node,
  reason; the previous rendered config and booted image stay on every node
- API 5xx and dropped connection on lists (mco_rollout_wait; a 503 on the rollout role's read) ->
  test_node_pulls_and_api_reads_ride_out_transient_faults -> retried
  (_k8s.call_with_retry), rollout done
- API connection that stalls (no answer) on a list -> test_stalled_api_list_is_given_up_and_retried_within_the_wait
  -> given up after request_timeout, retried, the wait finishes (never hangs)
- API watch connection dropped mid-stream -> the same test (the proxy cuts watches),
  and test_mco_rollout_wait::test_dropped_watch_and_410_gone_resume_by_relisting
  (server restart, 410 Gone) -> watch resumed / relisted, rollout done
- API 5xx on the resolve role's reads (kubernetes.core k8s_info) ->
  test_api_5xx_on_resolve_reads_is_retried_then_fails_clearly -> transient: retried,
  resolved; persistent: fails naming the cluster after 1+3 attempts
- degraded node -> test_mco_rollout_wait::test_degraded_node_fails_fast_naming_node_and_reason,
  test_mco_rollout_wait::test_lab_cluster_degraded_node_fails_fast -> fails fast
  naming node and reason
- rollout exceeds its timeout -> test_mco_rollout_wait::test_timeout_names_cluster_pool_and_waiting_nodes
  -> fails naming cluster, pool and the nodes still waiting
- module fails to load (init returns -ENODEV, node Done) ->
  test_module_that_fails_to_load_is_caught_by_verify (qemu boot 1) -> rollout done,
  verify fails naming cluster, node and module
- module panics the kernel (node never Ready) ->
  test_kernel_panic_fails_the_rollout_naming_node_and_reason (qemu boot 2) -> the
  wait fails naming pool, node and the panic; node NotReady and Degraded; previous
  config and image kept

pytest tests/integration/test_faults.py --lab-clusters 2 --lab-node-mode fast
(the qemu cases start a one-worker qemu cluster of their own: 2 boots).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _registry
from kmodlab import apiserver, cluster, layered, pki
from kmodlab.apiserver import LAB_CONTROLLER_AGENTS
from kmodlab.faults import FaultProxy
from kmodlab.state import LabState

pytestmark = pytest.mark.lab

CHECKOUT = Path(__file__).resolve().parents[2]
MC_API = "machineconfiguration.openshift.io/v1"
ANN = "machineconfiguration.openshift.io/"
OUR_MC = "99-kmod-layering-worker"
LAB_CONTROLLERS = LAB_CONTROLLER_AGENTS


# --- helpers ---------------------------------------------------------------------


def playbook(name: str, inventory: Path, *args: str, timeout: int = 900,
             env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               **(env_extra or {}))
    proc = subprocess.run(["ansible-playbook", "-i", str(inventory), str(CHECKOUT / "playbooks" / name), *args],
                          env=env, cwd=CHECKOUT, capture_output=True, text=True, timeout=timeout, check=False)
    (inventory.parent / f"{inventory.stem}-{name}.log").write_text(proc.stdout + proc.stderr)
    return proc


def build_inventory(path: Path, lab: LabState, auth_file: str, repository: str, cache_dir: Path,
                    module_dir: Path = layered.FIXTURE_KMODS / "kmodlab_core", **extra_vars: Any) -> Path:
    """An inventory for build.yml on the lab's first cluster: kmodlab_core
    (or `module_dir`) pushed to `repository`, no boot test."""
    first = lab.clusters[0]
    path.write_text(yaml.safe_dump({"all": {"vars": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "kmod_registry_auth_file": auth_file, "kmod_registry_ca_file": str(lab.ca_file),
        "kmod_image_repository": repository, "kmod_cache_dir": str(cache_dir),
        "kmod_check_pull_secret": False, "kmod_boot_test": False,
        "kmod_modules": [{"name": "kmodlab_core", "source": {"path": str(module_dir)}}],
        **extra_vars,
    }, "hosts": {first["name"]: {"kmod_kubeconfig": first["kubeconfig"]}}}}))
    return path


def rest(entry: dict[str, Any], ca_file: str, path: str, body: Any = None, method: str = "GET") -> Any:
    request = urllib.request.Request(
        entry["api_url"] + path, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": "Bearer " + entry["token"],
                 "Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json"})
    try:
        with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=ca_file), timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def swap_host(image: str, host: str) -> str:
    return host + "/" + image.split("/", 1)[1]


def auth_config(lab: LabState, *hosts: str) -> dict[str, Any]:
    token = base64.b64encode(f"{lab.registry['username']}:{lab.registry['password']}".encode()).decode()
    return {"auths": {h: {"auth": token} for h in (lab.registry["host"], *hosts)}}


class FaultCluster:
    """A lab cluster of our own, its pull secret covering the registry proxy,
    its API reachable directly or through an API proxy."""

    def __init__(self, lab: LabState, entry: dict[str, Any], work: Path, registry_proxy: FaultProxy) -> None:
        self.lab = lab
        self.entry = entry
        self.name = entry["name"]
        self.ca_file = str(lab.ca_file)
        self.work = work
        tls = pki.pki_for(lab.layout)
        self.api_proxy = FaultProxy(entry["api_url"].split("//", 1)[1], str(tls.server_cert), str(tls.server_key),
                                    self.ca_file).up()
        self.proxied_kubeconfig = str(apiserver.write_kubeconfig(
            work / f"{self.name}-proxied.kubeconfig", self.api_proxy.url, self.ca_file, entry["token"], self.name))
        self.log = apiserver.RequestLogClient(entry["api_url"], entry["token"], self.ca_file)
        secret = json.dumps(auth_config(lab, registry_proxy.address)).encode()
        rest(entry, self.ca_file, "/api/v1/namespaces/openshift-config/secrets/pull-secret",
             {"data": {".dockerconfigjson": base64.b64encode(secret).decode()}}, method="PATCH")
        release = lab.release(entry["release"])
        self.release_image = release["images"][release["os_tag"]]

    def get(self, path: str) -> Any:
        return rest(self.entry, self.ca_file, path)

    def workers(self) -> dict[str, dict[str, str]]:
        nodes = self.get("/api/v1/nodes?labelSelector=node-role.kubernetes.io/worker")["items"]
        return {n["metadata"]["name"]: n["metadata"]["annotations"] for n in nodes}

    def ready(self) -> dict[str, str]:
        nodes = self.get("/api/v1/nodes?labelSelector=node-role.kubernetes.io/worker")["items"]
        return {n["metadata"]["name"]: [c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"][0]
                for n in nodes}

    def pool(self) -> dict[str, Any]:
        return self.get(f"/apis/{MC_API}/machineconfigpools/worker")

    def inventory(self, image: str, filename: str, modules: list[dict[str, Any]] | None = None,
                  proxied_api: bool = False, **extra: Any) -> Path:
        host = {"kmod_kubeconfig": self.proxied_kubeconfig if proxied_api else self.entry["kubeconfig"],
                "kmod_image": image, "kmod_pools": ["worker"], "kmod_rollout_timeout": 600,
                "kmod_rollout_progress_file": str(self.work / "progress.log"),
                "kmod_report_dir": str(self.work / "report")}
        host.update(extra)
        path = self.work / filename
        path.write_text(yaml.safe_dump({"all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                     "kmod_modules": modules or []},
            "hosts": {self.name: host}}}))
        return path

    def reset(self) -> None:
        """Back to the release image: our MachineConfig removed, the pool rolled back."""
        rest(self.entry, self.ca_file, f"/apis/{MC_API}/machineconfigs/{OUR_MC}", method="DELETE")
        wait = self.work / "wait-release.yml"
        wait.write_text(yaml.safe_dump([{
            "name": "Wait", "hosts": "all", "connection": "local", "gather_facts": False,
            "tasks": [{"name": "Wait for the release image", "ocp.kmod_layering.mco_rollout_wait": {
                "kubeconfig": self.entry["kubeconfig"], "pools": ["worker"], "os_image_url": self.release_image,
                "timeout": 600}}]}]))
        env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable)
        done = subprocess.run(["ansible-playbook", "-i", str(self.inventory(self.release_image, "reset.yml")),
                               str(wait)], env=env, cwd=CHECKOUT, capture_output=True, text=True, timeout=900,
                              check=False)
        assert done.returncode == 0, done.stdout[-3000:]


# --- fixtures --------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry_proxy(lab: LabState) -> Iterator[FaultProxy]:
    tls = pki.pki_for(lab.layout)
    with FaultProxy(lab.registry["host"], str(tls.server_cert), str(tls.server_key), str(lab.ca_file)) as proxy:
        yield proxy


@pytest.fixture()
def proxy(registry_proxy: FaultProxy) -> Iterator[FaultProxy]:
    registry_proxy.clear()
    if registry_proxy._server is None:  # noqa: SLF001 - brought down by a test
        registry_proxy.up()
    yield registry_proxy
    registry_proxy.clear()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def auth_file(lab: LabState, registry_proxy: FaultProxy, work: Path) -> str:
    path = work / "auth.json"
    path.write_text(json.dumps(auth_config(lab, registry_proxy.address)))
    return str(path)


@pytest.fixture(scope="module")
def image(lab: LabState) -> str:
    """A layered image in the lab registry (kmodlab_core on the first release)."""
    return layered.build_layered_image(lab, lab.releases[0]["version"], ["kmodlab_core"])


@pytest.fixture(scope="module")
def fault_cluster(lab: LabState, registry_proxy: FaultProxy, work: Path) -> Iterator[FaultCluster]:
    (entry,) = cluster.start_clusters(lab, 1, [lab.releases[0]["version"]], workers=2, masters=1, node_mode="fast")
    try:
        fc = FaultCluster(lab, entry, work, registry_proxy)
        yield fc
        fc.api_proxy.down()
    finally:
        cluster.stop_cluster(lab, entry["name"])


# --- registry: the product's client ----------------------------------------------


def client(auth_file: str, lab: LabState, **kwargs: Any) -> _registry.RegistryClient:
    kwargs.setdefault("retry_base", 0.2)
    return _registry.RegistryClient(auth_file=auth_file, ca_path=str(lab.ca_file), **kwargs)


@pytest.mark.parametrize("fault", ["503x2", "502x1", "429x1", "dropx2", "slow"])
def test_registry_transient_faults_are_retried(proxy: FaultProxy, auth_file: str, lab: LabState, image: str,
                                               fault: str) -> None:
    if fault == "slow":
        proxy.add("GET", r"/manifests/", "delay", seconds=4, times=1)
        registry = client(auth_file, lab, timeout=1)
    else:
        kind, times = fault.split("x")
        if kind == "drop":
            proxy.add("GET", r"/manifests/", "drop", times=int(times))
        else:
            proxy.add("GET", r"/manifests/", "status", status=int(kind), times=int(times))
        registry = client(auth_file, lab)
    manifest = registry.get_manifest(_registry.parse_pullspec(swap_host(image, proxy.address)), arch="x86_64")
    assert manifest.digest == image.split("@", 1)[1]
    injected = 1 if fault == "slow" else int(fault.split("x")[1])
    assert sum(rule.hits for rule in proxy.rules) == injected
    assert len(registry.retry_log) == injected, registry.retry_log


@pytest.mark.parametrize("fault", ["503", "down", "403"])
def test_registry_persistent_faults_fail_bounded_and_clear(proxy: FaultProxy, auth_file: str, lab: LabState,
                                                           image: str, fault: str) -> None:
    ref = _registry.parse_pullspec(swap_host(image, proxy.address))
    registry = client(auth_file, lab, retry_base=0.05)
    if fault == "down":
        proxy.down()
    else:
        proxy.add("GET", r"/manifests/", "status", status=int(fault))
    with pytest.raises(_registry.RegistryError) as error:
        registry.get_manifest(ref, arch="x86_64")
    message = str(error.value)
    if fault == "503":
        assert f"registry {proxy.address} answered HTTP 503" in message
        assert "gave up after 5 attempts" in message
        assert proxy.count("GET", "/manifests/", "503") == 5
    elif fault == "down":
        assert f"cannot reach registry {proxy.address}" in message and "gave up after 5 attempts" in message
    else:
        assert isinstance(error.value, _registry.AuthenticationError)
        assert "HTTP 403" in message
        assert proxy.count("GET", "/manifests/", "403") == 1 and registry.retry_log == []


# --- registry: pushes (publish role, podman) ---------------------------------------


def test_push_retried_on_a_transient_5xx_and_fails_clearly_when_persistent(
        proxy: FaultProxy, auth_file: str, lab: LabState, work: Path) -> None:
    first = lab.clusters[0]
    repository = f"{proxy.address}/kmodtest/faults-{uuid.uuid4().hex[:8]}"

    def run(name: str, repo: str = repository) -> subprocess.CompletedProcess[str]:
        return playbook("build.yml", build_inventory(
            work / f"push-{name}.yml", lab, auth_file, repo, work / "cache",
            kmod_push_retries=1, kmod_push_retry_delay=1))

    writes_before = apiserver.RequestLogClient(first["api_url"], first["token"], lab.ca_file).writes()
    # Persistent: every manifest PUT answered 503.
    proxy.add("PUT", r"/manifests/", "status", status=503)
    failed = run("persistent")
    assert failed.returncode != 0
    assert repository in failed.stdout and "503" in failed.stdout + failed.stderr, failed.stdout[-3000:]
    assert proxy.count("PUT", "/manifests/", "503") >= 2  # tried, retried, gave up
    assert apiserver.RequestLogClient(first["api_url"], first["token"], lab.ca_file).writes() == writes_before
    # Transient, then slow (one run): the first manifest PUT answered 503,
    # the retried one 5 s late; the push is retried and waits for that answer.
    proxy.clear()
    proxy.add("PUT", r"/manifests/", "status", status=503, times=1)
    proxy.add("PUT", r"/manifests/", "delay", seconds=5, times=1)
    ok = run("transient")
    assert ok.returncode == 0, ok.stdout[-4000:]
    assert "FAILED - RETRYING" in ok.stdout, ok.stdout[-4000:]
    assert proxy.count("PUT", "/manifests/", "503") == 1
    assert proxy.count("PUT", "/manifests/", "delay 5s") == 1
    # The late PUT is the one that stored the manifest: no third try.
    assert proxy.count("PUT", "/manifests/", "201") == 1, proxy.log
    # Down at push time: every manifest PUT loses its connection; retried,
    # then a clear failure naming the image, and still no cluster write.
    proxy.clear()
    proxy.add("PUT", r"/manifests/", "drop")
    down = run("down", repository + "-down")
    assert down.returncode != 0
    assert repository + "-down" in down.stdout, down.stdout[-3000:]
    assert proxy.count("PUT", "/manifests/", "drop") >= 2  # tried, retried, gave up
    assert apiserver.RequestLogClient(first["api_url"], first["token"], lab.ca_file).writes() == writes_before
    proxy.clear()


# What podman 4.3 says when `podman rmi` of another run removes the cached
# step a --layers build is stepping through (reproduced on this machine:
# one build beside a concurrent rmi of the same chain).
CACHE_GONE = ('Error: identifier is not a container: preparing container for next step: creating build container: '
              'creating container: locating image with ID "1afb127af59b52c9a14977e296fa20a546e79f69f246c4da9a10383c1388adb9": '
              'image not known')
# ... and when the cached step goes while the build looks it up (seen in the
# suite: a prebuild beside another worker's prune).
LAYER_GONE = ('Error: checking if cached image exists from a previous build: getting top layer info: '
              'layer not known')


def test_a_build_whose_cache_a_concurrent_prune_removed_is_built_again(lab: LabState, work: Path) -> None:
    """The first two `podman build`s of the run fail as a concurrent prune
    makes them fail (either way podman says it); the role builds again
    (every other podman call, and the third build, is the real podman) and
    the image is pushed. A broken module is not retried: its failure is not
    this one."""
    real = subprocess.run(["sh", "-c", "command -v podman"], capture_output=True, text=True, check=True).stdout.strip()
    shim = work / "podman-shim"
    shim.mkdir()
    builds = work / "podman-builds.log"
    (shim / "podman").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = build ]; then\n'
        f'  echo build >> "{builds}"\n'
        f'  case "$(wc -l < "{builds}")" in 1) echo \'{CACHE_GONE}\' >&2; exit 125;;\n'
        f'    2) echo \'{LAYER_GONE}\' >&2; exit 125;; esac\n'
        "fi\n"
        f'exec {real} "$@"\n')
    (shim / "podman").chmod(0o755)
    first = lab.clusters[0]
    repository = f"{lab.registry['host']}/kmodtest/cache-gone-{uuid.uuid4().hex[:8]}"

    def run(name: str, module_dir: Path) -> subprocess.CompletedProcess[str]:
        inventory = build_inventory(work / f"cache-gone-{name}.yml", lab, lab.registry["auth_file"], repository,
                                    work / f"cache-{name}", module_dir)
        return playbook("build.yml", inventory, env_extra={"PATH": f"{shim}:{os.environ['PATH']}"})

    ok = run("once", layered.FIXTURE_KMODS / "kmodlab_core")
    assert ok.returncode == 0, ok.stdout[-4000:]
    retrying = "FAILED - RETRYING: [%s -> localhost]: Build the images" % first["name"]
    assert ok.stdout.count(retrying) == 2, ok.stdout[-4000:]
    assert builds.read_text().split() == ["build"] * 3
    pushed = subprocess.run(["skopeo", "list-tags", "--authfile", lab.registry["auth_file"], "--cert-dir",
                             str(Path(lab.ca_file).parent), f"docker://{repository}"],
                            capture_output=True, text=True, check=True)
    assert json.loads(pushed.stdout)["Tags"], pushed.stdout

    # A module that does not compile fails once, not retried.
    broken = work / "kmodlab_broken"
    shutil.copytree(layered.FIXTURE_KMODS / "kmodlab_core", broken)
    source = broken / "kmodlab_core.c"
    source.write_text(source.read_text() + "\nthis is not C;\n")
    builds.write_text("build\nbuild\n")  # the shim's failures are spent
    failed = run("broken", broken)
    assert failed.returncode != 0
    assert "FAILED - RETRYING" not in failed.stdout, failed.stdout[-4000:]
    assert builds.read_text().split() == ["build"] * 3


# --- nodes pulling through the registry, the waiter through the API ---------------


def test_node_that_cannot_pull_fails_the_rollout_naming_cluster_pool_node_reason(
        fault_cluster: FaultCluster, proxy: FaultProxy, image: str) -> None:
    fc = fault_cluster
    before = fc.workers()
    rendered_before = fc.pool()["status"]["configuration"]["name"]
    proxy.add("GET", r"/v2/.*/manifests/", "status", status=503)  # the registry is broken for good
    run = playbook("rollout.yml", fc.inventory(swap_host(image, proxy.address), "cannot-pull.yml"))
    out = run.stdout
    assert run.returncode != 0, out[-3000:]
    degraded = [n for n, ann in fc.workers().items() if ann.get(ANN + "state") == "Degraded"]
    assert len(degraded) == 1, fc.workers()  # maxUnavailable 1: the first node, then the rollout stops
    node = degraded[0]
    assert f"cluster {fc.name}" in out or f"[{fc.name}]" in out
    assert "pool worker" in out and node in out
    assert f"registry {proxy.address} answered HTTP 503" in out and "gave up after 5 attempts" in out
    # The node agent retried (bounded) before giving up.
    assert proxy.count("GET", "/manifests/", "503") == 5
    # The previous configuration is kept: every worker still on the old
    # rendered config and booted into the image it had.
    after = fc.workers()
    for name, annotations in after.items():
        assert annotations[ANN + "currentConfig"] == before[name][ANN + "currentConfig"] == rendered_before
        assert annotations.get("kmodlab.io/booted-digest") == before[name].get("kmodlab.io/booted-digest")
    proxy.clear()
    fc.reset()


def test_node_pulls_and_api_reads_ride_out_transient_faults(
        fault_cluster: FaultCluster, proxy: FaultProxy, image: str) -> None:
    fc = fault_cluster
    api = fc.api_proxy
    api.clear()
    # Registry: the first two blob downloads of the node agents fail.
    proxy.add("GET", r"/v2/.*/blobs/", "status", status=503, times=2)
    proxy.add("GET", r"/v2/.*/manifests/", "drop", times=1)
    # ... and one is slow (3 s late), which the pull waits for.
    proxy.add("GET", r"/v2/.*/blobs/", "delay", seconds=3, times=1)
    # API, for the waiter: 5xx and a lost connection on lists, every watch cut short.
    waiter = r"mco_rollout_wait"
    api.add("GET", r"/machineconfigpools(\?(?!.*watch=)|$)", "status", status=503, times=2, agent=waiter)
    api.add("GET", r"/api/v1/nodes(\?(?!.*watch=)|$)", "drop", times=1, agent=waiter)
    api.add("GET", r"watch=", "cut", seconds=3, times=4, agent=waiter)
    # And for the rollout role's own reads (rollout_state_info): one 503.
    api.add("GET", r"/machineconfigpools(\?(?!.*watch=)|$)", "status", status=503, times=1,
            agent=r"^(?!.*mco_rollout_wait)")
    proxied = swap_host(image, proxy.address)
    run = playbook("rollout.yml", fc.inventory(proxied, "transient.yml", proxied_api=True))
    assert run.returncode == 0, run.stdout[-5000:]
    assert {n: a.get("kmodlab.io/booted-image") for n, a in fc.workers().items()} == {
        n: proxied for n in fc.workers()}
    assert proxy.count("GET", "/blobs/", "503") == 2 and proxy.count("GET", "/manifests/", "drop") == 1
    assert proxy.count("GET", "/blobs/", "delay 3s") == 1
    assert api.count("GET", "machineconfigpools", "503") == 3
    assert api.count("GET", "/api/v1/nodes", "drop") == 1
    assert api.count("GET", "watch=", "cut") >= 1
    proxy.clear()
    api.clear()
    fc.reset()


def test_stalled_api_list_is_given_up_and_retried_within_the_wait(fault_cluster: FaultCluster) -> None:
    """An API connection that stalls (no answer, no reset) is given up after
    request_timeout and retried: the wait neither hangs nor fails."""
    fc = fault_cluster
    api = fc.api_proxy
    api.clear()
    api.add("GET", r"/machineconfigpools(\?(?!.*watch=)|$)", "delay", seconds=3600, times=1, agent="mco_rollout_wait")
    wait = fc.work / "wait-stalled.yml"
    wait.write_text(yaml.safe_dump([{
        "name": "Wait through a stalled list", "hosts": "all", "connection": "local", "gather_facts": False,
        "tasks": [{"name": "Wait", "ocp.kmod_layering.mco_rollout_wait": {
            "kubeconfig": fc.proxied_kubeconfig, "pools": ["worker"], "os_image_url": fc.release_image,
            "timeout": 120, "request_timeout": 2}, "register": "waited"},
            {"name": "Show", "ansible.builtin.debug": {"msg": "DONE={{ waited.done }}"}}]}]))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    run = subprocess.run(["ansible-playbook", "-i", str(fc.inventory(fc.release_image, "stalled.yml")), str(wait)],
                         env=env, cwd=CHECKOUT, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-5000:]
    assert "DONE=True" in run.stdout
    # The first list never got an answer (without request_timeout the wait
    # would hang there, past its own timeout); the retried list got the pools.
    assert api.count("GET", "machineconfigpools", "delay 3600s") == 1
    assert api.count("GET", r"machineconfigpools(\?(?!.*watch=)|$)", "200") >= 1
    api.clear()


def test_api_5xx_on_resolve_reads_is_retried_then_fails_clearly(fault_cluster: FaultCluster, lab: LabState) -> None:
    fc = fault_cluster
    api = fc.api_proxy
    api.clear()
    api.add("GET", r"/clusterversions", "status", status=503, times=2)
    inventory = fc.inventory(fc.release_image, "resolve.yml", proxied_api=True, kmod_api_retry_delay=1,
                             kmod_registry_auth_file=str(lab.registry["auth_file"]),
                             kmod_registry_ca_file=str(lab.ca_file))
    ok = playbook("resolve.yml", inventory)
    assert ok.returncode == 0, ok.stdout[-4000:]
    assert api.count("GET", "/clusterversions", "503") == 2
    api.clear()
    api.add("GET", r"/clusterversions", "status", status=503)
    failed = playbook("resolve.yml", inventory)
    assert failed.returncode != 0
    assert f"fatal: [{fc.name}]" in failed.stdout and "503" in failed.stdout, failed.stdout[-3000:]
    assert api.count("GET", "/clusterversions", "503") == 4  # 1 + kmod_api_retries (3)
    api.clear()


# --- nodes that boot (qemu): a module that does not load, a kernel panic ------------


@pytest.fixture(scope="module")
def qemu_cluster(lab: LabState, registry_proxy: FaultProxy, work: Path) -> Iterator[FaultCluster]:
    (entry,) = cluster.start_clusters(lab, 1, [lab.releases[0]["version"]], workers=1, masters=1, node_mode="qemu")
    try:
        (work / "qemu").mkdir()
        fc = FaultCluster(lab, entry, work / "qemu", registry_proxy)
        yield fc
        fc.api_proxy.down()
    finally:
        cluster.stop_cluster(lab, entry["name"])


@pytest.mark.qemu
def test_module_that_fails_to_load_is_caught_by_verify(qemu_cluster: FaultCluster, lab: LabState) -> None:
    fc = qemu_cluster
    image = layered.build_layered_image(lab, fc.entry["release"], ["kmodlab_core", "kmodlab_noload"])
    modules = [{"name": m, "source": {"path": str(layered.FIXTURE_KMODS / m)}} for m in ("kmodlab_core", "kmodlab_noload")]
    inventory = fc.inventory(image, "noload.yml", modules=modules)
    rolled = playbook("rollout.yml", inventory)
    assert rolled.returncode == 0, rolled.stdout[-4000:]  # the node boots and reports Done
    (node,) = fc.workers()
    assert fc.workers()[node][ANN + "state"] == "Done"
    verified = playbook("verify.yml", inventory, "-e", f"kmod_image={image}")
    assert verified.returncode != 0
    assert f"Cluster {fc.name} failed verification" in verified.stdout, verified.stdout[-4000:]
    assert f"node {node}: module kmodlab_noload is not loaded" in verified.stdout
    report = json.loads((fc.work / "report" / f"{fc.name}.json").read_text())
    assert [n["missing_modules"] for n in report["nodes"]] == [["kmodlab_noload"]]


@pytest.mark.qemu
def test_kernel_panic_fails_the_rollout_naming_node_and_reason(qemu_cluster: FaultCluster, lab: LabState) -> None:
    fc = qemu_cluster
    before = fc.workers()
    image = layered.build_layered_image(
        lab, fc.entry["release"], [layered.fixture("kmodlab_panic", options="panic_on_load=1")])
    run = playbook("rollout.yml", fc.inventory(image, "panic.yml", kmod_rollout_timeout=600))
    out = run.stdout
    assert run.returncode != 0
    (node,) = before
    assert node in out and "pool worker" in out, out[-4000:]
    assert "did not come back after reboot" in out and "panic" in out.lower()
    after = fc.workers()[node]
    assert after[ANN + "state"] == "Degraded"
    assert after[ANN + "currentConfig"] == before[node][ANN + "currentConfig"]
    assert after.get("kmodlab.io/booted-digest") == before[node].get("kmodlab.io/booted-digest")
    assert fc.ready()[node] == "False"
