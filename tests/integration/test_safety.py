"""Reliability and safety, on a lab cluster of its own (fast node mode):

- the gates before any MachineConfig is written: a degraded pool and a
  cluster mid-upgrade (ClusterVersion Progressing=True) stop the rollout with
  a message naming the cluster, the pool and what to do, and the API request
  log shows 0 writes by the product, for every pool of the run;
- rollback: v1 -> v2 -> playbooks/rollback.yml -> the pool runs v1 again
  (the lab's ground truth: the digest each node booted and its modules);
  idempotent, check mode shows the change and persists nothing;
- remove: playbooks/remove.yml deletes our MachineConfig, the nodes boot the
  release's own image without our modules; a rerun writes nothing;
- site.yml's canary auto-rollback (kmod_rollback_on_verify_failure): a canary
  whose verification fails is rolled back to the image it ran, and the run
  fails saying so.

The tests run in file order and share the cluster (module fixture)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from kmodlab import apiserver, cluster, faults, layered, state
from kmodlab.apiserver import LAB_CONTROLLER_AGENTS

TOP = Path(__file__).resolve().parents[2]
MC_API = "machineconfiguration.openshift.io/v1"
OUR_MC = "99-kmod-layering-worker"
HISTORY = "kmod-layering.io/history"
BOOTED_IMAGE = "kmodlab.io/booted-image"
BOOTED_DIGEST = "kmodlab.io/booted-digest"
LOADED = "kmodlab.io/loaded-modules"
LAB_AGENTS = LAB_CONTROLLER_AGENTS + ("Python-urllib/",)

pytestmark = pytest.mark.lab


class Run:
    """One ansible-playbook run, read through the json callback."""

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.rc = proc.returncode
        text = proc.stdout
        try:
            self.doc, _end = json.JSONDecoder().raw_decode(text[text.index("{"):])
        except ValueError as exc:
            raise AssertionError(f"no JSON from ansible-playbook ({exc}):\n{text[-3000:]}\n{proc.stderr[-3000:]}")

    def results(self, host: str, name: str) -> list[dict[str, Any]]:
        return [task["hosts"][host] for play in self.doc["plays"] for task in play["tasks"]
                if str(task["task"]["name"]).split(" : ", 1)[-1].startswith(name) and host in task["hosts"]]

    def failure(self, host: str) -> str:
        """The message of the last failed task (a rescued one comes before the rescue's)."""
        messages = []
        for play in self.doc["plays"]:
            for task in play["tasks"]:
                result = task["hosts"].get(host) or {}
                if result.get("failed") and not result.get("ignore_errors"):
                    if "results" in result:
                        result = [r for r in result["results"] if r.get("failed")][0]
                    messages.append(str(result["msg"]))
        assert messages, "no failed task"
        return messages[-1]

    def changed(self, host: str) -> int:
        return int(self.doc["stats"][host]["changed"])


class Lab:
    def __init__(self, entry: dict[str, Any], lab: state.LabState, tmp: Path) -> None:
        self.entry = entry
        self.name = entry["name"]
        self.lab = lab
        self.tmp = tmp
        self.ca_file = str(lab.ca_file)
        self.log = apiserver.RequestLogClient(entry["api_url"], entry["token"], self.ca_file)
        self.release = lab.release(entry["release"])
        self.base_image = self.release["images"][self.release["os_tag"]]

    # -- API (the test's own reads and writes carry the urllib user agent)
    def call(self, path: str, body: Any = None, method: str | None = None) -> Any:
        method = method or ("POST" if body is not None else "GET")
        request = urllib.request.Request(
            self.entry["api_url"] + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": "Bearer " + self.entry["token"],
                     "Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json"})
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            with urllib.request.urlopen(request, context=context, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and method in ("GET", "DELETE"):
                return None
            raise

    def pool(self, name: str = "worker") -> dict[str, Any]:
        return self.call(f"/apis/{MC_API}/machineconfigpools/{name}")

    def machineconfig(self, name: str) -> dict[str, Any] | None:
        return self.call(f"/apis/{MC_API}/machineconfigs/{name}")

    def workers(self) -> list[dict[str, Any]]:
        nodes = self.call("/api/v1/nodes?labelSelector=node-role.kubernetes.io/worker")["items"]
        assert nodes
        return nodes

    def booted(self) -> set[tuple[str, str, str]]:
        """(image, digest, loaded modules) each worker booted, as the lab's node agents record it."""
        return {(n["metadata"]["annotations"].get(BOOTED_IMAGE), n["metadata"]["annotations"].get(BOOTED_DIGEST),
                 n["metadata"]["annotations"].get(LOADED)) for n in self.workers()}

    def rendered_image(self) -> str:
        return self.machineconfig(self.pool()["spec"]["configuration"]["name"])["spec"]["osImageURL"]

    def product_writes(self) -> list[tuple[str, str]]:
        """Writes by the product (not the lab's controllers, not this test), dry runs excepted."""
        return [(r["method"], r["path"]) for r in self.log.records()
                if r["method"] in ("POST", "PUT", "PATCH", "DELETE")
                and not str(r.get("user_agent") or "").startswith(LAB_AGENTS)
                and (r.get("query") or {}).get("dryRun") != "All"]

    def wait_pool(self, predicate: Any, what: str, timeout: float = 120) -> dict[str, Any]:
        """Until the worker pool satisfies `predicate` (the lab's MCO reacts asynchronously)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pool = self.pool()
            if predicate(pool):
                return pool
            time.sleep(0.5)
        raise AssertionError(f"pool never {what}: {json.dumps(pool['status'])}")

    # -- playbooks
    def inventory(self, filename: str, canary: bool = False, **extra: Any) -> Path:
        fleet = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "kmod_rollout_progress_file": str(self.tmp / "progress.log"),
            "kmod_rollout_timeout": 300,
            "kmod_modules": [{"name": "kmodlab_core", "source": {"path": str(layered.FIXTURE_KMODS / "kmodlab_core")}}],
        }
        fleet.update(extra)
        hosts = {self.name: {"kmod_kubeconfig": self.entry["kubeconfig"], "kmod_pools": ["worker"]}}
        doc: dict[str, Any] = {"all": {"vars": fleet, "hosts": hosts}}
        if canary:
            doc["all"]["children"] = {"canary": {"hosts": {self.name: {}}}}
        path = self.tmp / filename
        path.write_text(yaml.safe_dump(doc))
        return path

    def playbook(self, name: str, inventory: Path, *args: str) -> Run:
        env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
        return Run(subprocess.run(["ansible-playbook", "-i", str(inventory), str(TOP / "playbooks" / name), *args],
                                  cwd=TOP, env=env, capture_output=True, text=True, timeout=900, check=False))

    def rollout(self, image: str, *args: str, **extra: Any) -> Run:
        return self.playbook("rollout.yml", self.inventory("rollout.yml", kmod_image=image, **extra), *args)


@pytest.fixture(scope="module")
def env(lab: state.LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    release = lab.releases[0]
    with state.locked(lab.root) as current:
        entry = cluster.start_clusters(current, 1, [release["version"]], workers=1, masters=1, node_mode="fast",
                                       drain_seconds=0.2)[0]
    try:
        env = Lab(entry, lab, tmp_path_factory.mktemp("safety"))
        env.v1 = layered.build_layered_image(lab, release["version"], ["kmodlab_core"])
        env.v2 = layered.build_layered_image(lab, release["version"], ["kmodlab_core", "kmodlab_dep"])
        yield env
    finally:
        with state.locked(lab.root) as current:
            cluster.stop_cluster(current, entry["name"])


def digest(image: str) -> str:
    return image.split("@", 1)[1]


# --- gates ----------------------------------------------------------------------------------


def test_a_degraded_pool_stops_the_rollout_of_every_pool_before_any_write(env: Lab) -> None:
    # A MachineConfig the render controller refuses: the worker pool goes
    # RenderDegraded / Degraded, as on a real cluster.
    env.call(f"/apis/{MC_API}/machineconfigs", {
        "apiVersion": MC_API, "kind": "MachineConfig",
        "metadata": {"name": "50-broken", "labels": {"machineconfiguration.openshift.io/role": "worker"}},
        "spec": {"config": {"ignition": {"version": "9.9.9"}}}})
    try:
        env.wait_pool(lambda p: any(c["type"] == "Degraded" and c["status"] == "True"
                                    for c in p["status"].get("conditions") or []), "degraded")
        env.log.reset()
        # master first: its gates pass, and still nothing is written for it.
        run = env.rollout(env.v1, kmod_pools=["master", "worker"])
        assert run.rc != 0
        msg = run.failure(env.name)
        assert msg.startswith(f"MachineConfigPool worker on cluster {env.name} is degraded (Degraded=True")
        assert "50-broken" in msg and "playbooks/rollback.yml" in msg
        assert env.product_writes() == []
        assert env.machineconfig("99-kmod-layering-master") is None and env.machineconfig(OUR_MC) is None
    finally:
        env.call(f"/apis/{MC_API}/machineconfigs/50-broken", method="DELETE")
    env.wait_pool(lambda p: not any(c["type"] == "Degraded" and c["status"] == "True"
                                    for c in p["status"].get("conditions") or []), "recovered")


def _cluster_version(env: Lab) -> dict[str, Any]:
    return env.call("/apis/config.openshift.io/v1/clusterversions/version")


def _completed_on(env: Lab, version: str) -> bool:
    newest = _cluster_version(env)["status"]["history"][0]
    return newest["state"] == "Completed" and newest["version"] == version


def _until(what: str, check: Any, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_an_upgrading_cluster_stops_the_rollout_before_any_write(env: Lab) -> None:
    # A real upgrade, held mid-way by a degraded operator (the lab's CVO
    # then reports Progressing=True until it recovers).
    before = _cluster_version(env)
    current = before["status"]["desired"]
    (update, *_others) = before["status"]["availableUpdates"]
    faults.degrade_operator(env.entry["kubeconfig"], "network")
    try:
        env.call("/apis/config.openshift.io/v1/clusterversions/version",
                 {"spec": {"desiredUpdate": {"version": update["version"], "image": update["image"]}}}, method="PATCH")
        _until("the upgrade to start", lambda: any(
            c["type"] == "Progressing" and c["status"] == "True" for c in _cluster_version(env)["status"]["conditions"]))
        env.log.reset()
        run = env.rollout(env.v1)
        assert run.rc != 0
        msg = run.failure(env.name)
        assert msg.startswith(f"Cluster {env.name} is being upgraded (ClusterVersion Progressing=True: "
                              f"Working towards {update['version']}"), msg
        assert "kmod_allow_upgrading_cluster: true" in msg
        assert env.product_writes() == []
        assert env.machineconfig(OUR_MC) is None
    finally:
        # Back to where the cluster was (the held upgrade never reached the
        # machine-config operator, so no pool re-rendered): the rest of the
        # module runs on the same release.
        env.call("/apis/config.openshift.io/v1/clusterversions/version",
                 {"spec": {"desiredUpdate": {"version": current["version"], "image": current["image"], "force": True}}},
                 method="PATCH")
        faults.heal_operator(env.entry["kubeconfig"], "network")
        _until("the cluster to be back on its release", lambda: _completed_on(env, current["version"]))


# --- rollout history and rollback -------------------------------------------------------------


def test_v1_then_v2_records_v1_in_the_history(env: Lab) -> None:
    first = env.rollout(env.v1)
    assert first.rc == 0, first.failure(env.name)
    assert env.booted() == {(env.v1, digest(env.v1), "kmodlab_core")}
    assert HISTORY not in (env.machineconfig(OUR_MC)["metadata"].get("annotations") or {})

    second = env.rollout(env.v2, kmod_modules=[
        {"name": "kmodlab_core", "source": {"path": str(layered.FIXTURE_KMODS / "kmodlab_core")}},
        {"name": "kmodlab_dep", "source": {"path": str(layered.FIXTURE_KMODS / "kmodlab_dep")}}])
    assert second.rc == 0, second.failure(env.name)
    ours = env.machineconfig(OUR_MC)
    assert ours["spec"]["osImageURL"] == env.v2
    history = json.loads(ours["metadata"]["annotations"][HISTORY])
    assert history == [{"osImageURL": env.v1, "modules": "kmodlab_core"}]
    assert {(i, d) for i, d, _m in env.booted()} == {(env.v2, digest(env.v2))}


def test_rollback_check_mode_shows_v2_to_v1_and_persists_nothing(env: Lab) -> None:
    before = env.machineconfig(OUR_MC)
    env.log.reset()
    run = env.playbook("rollback.yml", env.inventory("rollback.yml"), "--check", "--diff")
    assert run.rc == 0, run.failure(env.name)
    (restore,) = run.results(env.name, "Put the previous image back in our MachineConfig")
    (item,) = restore["results"]
    assert item["changed"] is True
    assert item["diff"]["before"]["spec"] == {"osImageURL": env.v2}
    assert item["diff"]["after"]["spec"] == {"osImageURL": env.v1}
    assert env.product_writes() == []
    assert env.machineconfig(OUR_MC)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_rollback_returns_the_pool_to_v1_and_a_rerun_changes_nothing(env: Lab) -> None:
    env.log.reset()
    run = env.playbook("rollback.yml", env.inventory("rollback.yml"))
    assert run.rc == 0, run.failure(env.name)
    (record,) = run.results(env.name, "Record the rollback of cluster")
    rollback = record["ansible_facts"]["kmod_rollback"]
    assert rollback["pools"]["worker"]["action"] == "restore"
    assert rollback["pools"]["worker"]["os_image_url"] == env.v1 and rollback["done"] is True
    # Ground truth: the MachineConfig, the rendered config, what each node booted.
    ours = env.machineconfig(OUR_MC)
    assert ours["spec"]["osImageURL"] == env.v1
    assert HISTORY not in ours["metadata"]["annotations"]
    assert ours["metadata"]["annotations"]["kmod-layering.io/modules"] == "kmodlab_core"
    assert env.rendered_image() == env.v1
    assert env.booted() == {(env.v1, digest(env.v1), "kmodlab_core")}
    assert env.product_writes() == [("PATCH", f"/apis/{MC_API}/machineconfigs/{OUR_MC}")]

    env.log.reset()
    again = env.playbook("rollback.yml", env.inventory("rollback.yml"))
    assert again.rc == 0, again.failure(env.name)
    (record,) = again.results(env.name, "Record the rollback of cluster")
    assert record["ansible_facts"]["kmod_rollback"]["pools"]["worker"]["action"] == "none"
    assert again.changed(env.name) == 0 and env.product_writes() == []
    assert env.machineconfig(OUR_MC)["spec"]["osImageURL"] == env.v1


# --- canary auto-rollback ----------------------------------------------------------------------


def test_a_canary_failing_verification_is_rolled_back_and_the_run_fails(env: Lab) -> None:
    # A typo in the options: the kernel ignores an unknown parameter, the
    # module loads, and verify finds the parameter missing on every node.
    registry = env.lab.registry
    inventory = env.inventory(
        "site.yml", canary=True,
        kmod_registry_auth_file=registry["auth_file"], kmod_registry_ca_file=env.ca_file,
        kmod_image_repository=f"{registry['host']}/kmodlab-tests/safety-canary",
        kmod_cache_dir=str(env.tmp / "cache"), kmod_report_dir=str(env.tmp / "report"),
        # fast node mode: the image's boot is the boot test's own business
        kmod_boot_test=False,
        kmod_modules=[{"name": "kmodlab_core", "source": {"path": str(layered.FIXTURE_KMODS / "kmodlab_core")},
                       "options": "greeting=hi no_such_param=1"}])
    env.log.reset()
    run = env.playbook("site.yml", inventory)
    assert run.rc != 0
    msg = run.failure(env.name)
    assert msg.startswith(f'Canary {env.name} failed at "')
    assert "Fail when a node does not run the image and modules" in msg and "no_such_param" in msg
    assert f"Rolled back pool(s) worker (restore to {env.v1}) and waited until their nodes ran it." in msg
    # Ground truth: back on v1, the canary's new image in the history no more.
    ours = env.machineconfig(OUR_MC)
    assert ours["spec"]["osImageURL"] == env.v1
    assert env.rendered_image() == env.v1
    assert env.booted() == {(env.v1, digest(env.v1), "kmodlab_core")}
    # Written: our MachineConfig (rollout, then rollback) and the debug pods of verify.
    mc_writes = [w for w in env.product_writes() if "/machineconfigs" in w[1]]
    assert mc_writes == [("PATCH", f"/apis/{MC_API}/machineconfigs/{OUR_MC}")] * 2


# --- remove -------------------------------------------------------------------------------------


def test_remove_puts_the_nodes_back_on_the_release_image_and_a_rerun_writes_nothing(env: Lab) -> None:
    assert env.machineconfig(OUR_MC) is not None
    env.log.reset()
    checked = env.playbook("remove.yml", env.inventory("remove.yml"), "--check", "--diff")
    assert checked.rc == 0, checked.failure(env.name)
    assert checked.changed(env.name) > 0 and env.product_writes() == []
    assert env.machineconfig(OUR_MC) is not None

    run = env.playbook("remove.yml", env.inventory("remove.yml"))
    assert run.rc == 0, run.failure(env.name)
    (record,) = run.results(env.name, "Record the removal from cluster")
    assert record["ansible_facts"]["kmod_remove"]["removed"] == [OUR_MC]
    assert record["ansible_facts"]["kmod_remove"]["done"] is True
    assert env.machineconfig(OUR_MC) is None
    assert OUR_MC not in [s["name"] for s in env.pool()["status"]["configuration"]["source"]]
    assert env.rendered_image() == env.base_image
    ((image, booted_digest, loaded),) = env.booted()
    assert image == env.base_image and booted_digest == digest(env.base_image)
    assert "kmodlab" not in (loaded or "")
    assert ("DELETE", f"/apis/{MC_API}/machineconfigs/{OUR_MC}") in env.product_writes()
    assert env.call("/api/v1/namespaces/openshift-kmod-layering-debug") is None

    env.log.reset()
    again = env.playbook("remove.yml", env.inventory("remove.yml"))
    assert again.rc == 0, again.failure(env.name)
    assert again.changed(env.name) == 0 and env.product_writes() == []
