"""The rollout role and render.yml, run by real ansible-playbook against a lab cluster.

A layered image is built with the product's Containerfile (kmodlab.layered)
and pushed to the lab registry; playbooks/rollout.yml applies our
MachineConfig with kubernetes.core.k8s and waits with mco_rollout_wait while
the lab's MCO simulator walks the worker nodes. The lab API server's request
log (kmodlab.apiserver.RequestLogClient) shows what the product wrote: the
lab's own controllers (user agents machine-config-*) are told apart.

Fast node mode is enough (the image's boot is the e2e test's business):
pytest tests/integration/test_rollout.py --lab-clusters 1 --lab-node-mode fast

site.yml's fleet order (canary, then batches of kmod_serial) is checked
without any cluster: with --tags matching no task, only the wave grouping
and the announcements (tagged `always`) run, over an inventory of made-up
clusters. (Tests using the `lab` fixture are marked `lab` by the plugin.)
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kmodlab import apiserver, layered
from kmodlab.apiserver import LAB_CONTROLLER_AGENTS

CHECKOUT = Path(__file__).resolve().parents[2]
CRD = CHECKOUT / "tests" / "kmodlab" / "crds" / "0000_80_machine-config_01_machineconfigs.crd.yaml"
MC_API = "machineconfiguration.openshift.io/v1"
ROLE = "machineconfiguration.openshift.io/role"
OUR_MC = "99-kmod-layering-worker"
# The Secure Boot gate's debug pods run there (kmod_verify_namespace).
DEBUG_NAMESPACE = "openshift-kmod-layering-debug"
RECORD_TASK = "Record the rollout of cluster"


# --- helpers -------------------------------------------------------------------------


def api(cluster: dict[str, Any], ca_file: str, path: str, body: Any = None, method: str | None = None) -> Any:
    method = method or ("POST" if body is not None else "GET")
    content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
    request = urllib.request.Request(
        cluster["api_url"] + path, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": "Bearer " + cluster["token"], "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=ca_file), timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and method in ("GET", "DELETE"):
            return None
        raise


def crd_validator() -> jsonschema.Draft7Validator:
    """The CRD's own schema (read here, not the product's copy); nullable as JSON Schema."""
    crd = yaml.safe_load(CRD.read_text())
    schema = [v for v in crd["spec"]["versions"] if v["name"] == "v1"][0]["schema"]["openAPIV3Schema"]

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: convert(v) for k, v in node.items() if k != "nullable"}
            if node.get("nullable") and isinstance(node.get("type"), str):
                out["type"] = [node["type"], "null"]
            return out
        return [convert(v) for v in node] if isinstance(node, list) else node
    return jsonschema.Draft7Validator(convert(schema))


class Run:
    """One ansible-playbook run, with the json callback's document."""

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.rc = proc.returncode
        self.stderr = proc.stderr
        text = proc.stdout
        try:
            self.doc, _end = json.JSONDecoder().raw_decode(text[text.index("{"):])
        except ValueError as exc:
            raise AssertionError(f"no JSON from ansible-playbook ({exc}):\n{text}\n{proc.stderr}")

    def stats(self, host: str) -> dict[str, int]:
        return self.doc["stats"][host]

    @staticmethod
    def _name(task: dict[str, Any]) -> str:
        return str(task["task"]["name"]).split(" : ", 1)[-1]  # without "<role> : "

    def tasks(self, host: str, name: str) -> list[dict[str, Any]]:
        return [task["hosts"][host] for play in self.doc["plays"] for task in play["tasks"]
                if self._name(task).startswith(name) and host in task["hosts"]]

    def task_names(self, host: str) -> list[str]:
        return [self._name(task) for play in self.doc["plays"] for task in play["tasks"] if host in task["hosts"]]

    def failure(self, host: str) -> str:
        failed = [task["hosts"][host] for play in self.doc["plays"] for task in play["tasks"]
                  if task["hosts"].get(host, {}).get("failed")]
        assert failed, "expected a failed task"
        result = failed[0]
        if "results" in result:
            result = [r for r in result["results"] if r.get("failed")][0]
        return str(result["msg"])

    def rollout(self, host: str) -> dict[str, Any]:
        (record,) = self.tasks(host, RECORD_TASK)
        return record["ansible_facts"]["kmod_rollout"]


def playbook(name: str, inventory: Path, *args: str) -> Run:
    env = dict(os.environ)
    env.update(
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    proc = subprocess.run(["ansible-playbook", "-i", str(inventory), str(CHECKOUT / "playbooks" / name), *args],
                          cwd=CHECKOUT, env=env, capture_output=True, text=True, timeout=1800, check=False)
    return Run(proc)


class Cluster:
    """The first lab cluster, its request log, and an inventory for it."""

    def __init__(self, lab: Any, tmp: Path) -> None:
        self.lab = lab
        self.cluster = lab.clusters[0]
        self.name = self.cluster["name"]
        self.ca_file = str(lab.ca_file)
        self.tmp = tmp
        self.log = apiserver.RequestLogClient(self.cluster["api_url"], self.cluster["token"], self.ca_file)
        self.progress = tmp / "progress.log"
        release = lab.release(self.cluster["release"])
        others = [r for r in lab.releases if r["version"] != self.cluster["release"]]
        # An image that is not the layered one: the other release's OS image.
        self.other_image = (others or [release])[0]["images"][(others or [release])[0]["os_tag"]]

    def get(self, path: str) -> Any:
        return api(self.cluster, self.ca_file, path)

    def pool(self) -> dict[str, Any]:
        return self.get(f"/apis/{MC_API}/machineconfigpools/worker")

    def machineconfig(self, name: str) -> dict[str, Any] | None:
        return self.get(f"/apis/{MC_API}/machineconfigs/{name}")

    def set_paused(self, paused: bool) -> None:
        api(self.cluster, self.ca_file, f"/apis/{MC_API}/machineconfigpools/worker", {"spec": {"paused": paused}},
            method="PATCH")

    def create_machineconfig(self, name: str, image: str) -> None:
        api(self.cluster, self.ca_file, f"/apis/{MC_API}/machineconfigs", {
            "apiVersion": MC_API, "kind": "MachineConfig",
            "metadata": {"name": name, "labels": {ROLE: "worker"}}, "spec": {"osImageURL": image}})

    def delete_machineconfig(self, name: str) -> None:
        api(self.cluster, self.ca_file, f"/apis/{MC_API}/machineconfigs/{name}", method="DELETE")

    def inventory(self, image: str, filename: str = "inventory.yml", **extra: Any) -> Path:
        host = {
            "kmod_kubeconfig": self.cluster["kubeconfig"],
            "kmod_image": image,
            "kmod_pools": ["worker"],
            "kmod_rollout_progress_file": str(self.progress),
            "kmod_rollout_timeout": 900,
        }
        host.update(extra)
        path = self.tmp / filename
        path.write_text(yaml.safe_dump({"all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                     "kmod_modules": [{"name": "kmodlab_core", "source": {"path": str(layered.FIXTURE_KMODS)}}]},
            "hosts": {self.name: host}}}))
        return path

    def product_records(self) -> list[dict[str, Any]]:
        """Requests made by anything but the lab's own MCO simulator and node
        agents, and this test's own reads (urllib)."""
        return [r for r in self.log.records()
                if not r["user_agent"].startswith(LAB_CONTROLLER_AGENTS + ("Python-urllib/",))]

    def product_writes(self) -> list[dict[str, Any]]:
        return [r for r in self.product_records() if r["method"] in ("POST", "PUT", "PATCH", "DELETE")]

    def writes_but_debug_pods(self) -> list[dict[str, Any]]:
        """The product's writes other than the Secure Boot gate's debug pods
        (kmod_secure_boot_gate auto: before the first write) and their
        namespace, after checking every pod created was deleted."""
        debug = [r for r in self.product_writes() if r["path"].startswith(f"/api/v1/namespaces/{DEBUG_NAMESPACE}/")]
        created = [r for r in debug if r["method"] == "POST"]
        assert len(created) == len([r for r in debug if r["method"] == "DELETE"]), debug
        return [r for r in self.product_writes() if r not in debug
                and r["path"] not in ("/api/v1/namespaces", f"/api/v1/namespaces/{DEBUG_NAMESPACE}")]

    def booted(self, nodes: list[str]) -> dict[str, str]:
        """The image each node booted, as the lab's node agents record it."""
        return {name: self.get(f"/api/v1/nodes/{name}")["metadata"]["annotations"].get("kmodlab.io/booted-image")
                for name in nodes}

    def wait_for_image(self, image: str) -> None:
        """Until the worker pool runs `image` (mco_rollout_wait, through ansible)."""
        wait = self.tmp / "wait.yml"
        wait.write_text(yaml.safe_dump([{
            "name": "Wait for the pool", "hosts": "all", "connection": "local", "gather_facts": False,
            "tasks": [{"name": "Wait", "ocp.kmod_layering.mco_rollout_wait": {
                "kubeconfig": self.cluster["kubeconfig"], "pools": ["worker"], "os_image_url": image,
                "timeout": 900}}]}]))
        done = Run(subprocess.run(
            ["ansible-playbook", "-i", str(self.inventory(image, "wait-inventory.yml")), str(wait)], cwd=CHECKOUT,
            env=dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json"), capture_output=True, text=True,
            timeout=1800, check=False))
        assert done.rc == 0, done.doc


@pytest.fixture(scope="module")
def rolled_out(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A layered image rolled out to the worker pool with playbooks/rollout.yml; put back afterwards."""
    c = Cluster(lab, tmp_path_factory.mktemp("rollout"))
    release = lab.release(c.cluster["release"])
    c.release_image = release["images"][release["os_tag"]]
    if c.machineconfig(OUR_MC) is not None:  # left by an earlier test of the session: start from the release
        c.set_paused(False)
        c.delete_machineconfig(OUR_MC)
        c.wait_for_image(c.release_image)
    c.image = layered.build_layered_image(lab, c.cluster["release"], ["kmodlab_core"])
    c.pool_before = c.pool()
    c.rendered_before = c.pool_before["spec"]["configuration"]["name"]
    c.image_before = c.machineconfig(c.rendered_before)["spec"]["osImageURL"]
    assert c.image_before != c.image
    c.log.reset()
    c.checked_first = playbook("rollout.yml", c.inventory(c.image), "--check", "--diff")
    c.checked_first_writes = c.product_writes()
    c.checked_first_exists = c.machineconfig(OUR_MC) is not None
    c.log.reset()
    c.first = playbook("rollout.yml", c.inventory(c.image))
    c.first_writes = c.product_writes()
    c.first_writes_but_debug_pods = c.writes_but_debug_pods()
    try:
        yield c
    finally:
        c.set_paused(False)
        for name in (OUR_MC, "zz-other"):
            c.delete_machineconfig(name)
        c.wait_for_image(c.image_before)


# --- tests -------------------------------------------------------------------------------


def test_rollout_puts_the_pool_on_a_new_rendered_config_with_the_image(rolled_out):
    c = rolled_out
    assert c.first.rc == 0, c.first.failure(c.name)
    rollout = c.first.rollout(c.name)
    assert rollout["done"] is True and rollout["waited"] is True
    assert rollout["machineconfigs"] == {"worker": OUR_MC}
    assert rollout["changed"] == [OUR_MC]
    (pool,) = rollout["pools"]
    assert pool["phase"] == "done"
    assert pool["rendered_config"] != c.rendered_before
    # What the API says, not just what the role recorded.
    api_pool = c.pool()
    assert api_pool["spec"]["configuration"]["name"] == pool["rendered_config"]
    assert api_pool["status"]["configuration"]["name"] == pool["rendered_config"]
    assert OUR_MC in [s["name"] for s in api_pool["spec"]["configuration"]["source"]]
    assert c.machineconfig(pool["rendered_config"])["spec"]["osImageURL"] == c.image
    nodes = [n["name"] for n in pool["nodes"]]
    assert len(nodes) == c.cluster["pools"]["worker"]
    assert c.booted(nodes) == {name: c.image for name in nodes}

    # The product wrote exactly one object: our MachineConfig (and, before
    # it, the Secure Boot gate's debug pods, each deleted).
    assert [(r["method"], r["path"]) for r in c.first_writes_but_debug_pods] == [
        ("POST", f"/apis/{MC_API}/machineconfigs")]
    assert len([r for r in c.first_writes if r["method"] == "POST" and "/pods" in r["path"]]) == 2 * len(nodes)


def test_the_machineconfig_in_the_api_validates_against_the_crd(rolled_out):
    c = rolled_out
    ours = c.machineconfig(OUR_MC)
    errors = [e.message for e in crd_validator().iter_errors(ours)]
    assert errors == []
    assert ours["metadata"]["labels"][ROLE] == "worker"
    assert ours["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ocp.kmod_layering"
    assert ours["metadata"]["annotations"]["kmod-layering.io/modules"] == "kmodlab_core"
    assert ours["spec"] == {"osImageURL": c.image}


def test_progress_is_in_the_file_named_before_the_wait(rolled_out):
    c = rolled_out
    names = c.first.task_names(c.name)
    told = names.index("Tell where the rollout's progress goes")
    assert told < names.index("Wait until every node of the pools runs the image")
    (tell,) = c.first.tasks(c.name, "Tell where the rollout's progress goes")
    assert f"tail -f {c.progress}" in tell["msg"]
    lines = c.progress.read_text().splitlines()
    (pool,) = c.first.rollout(c.name)["pools"]
    # Node by node: every node's last line is Done on the new rendered
    # config, and the nodes were seen at work on the way (the wait starts a
    # few seconds after the write, so the first node may already be past
    # Working then: Rebooting counts too).
    for node in [n["name"] for n in pool["nodes"]]:
        mine = [line for line in lines if f"node {node}: " in line]
        assert mine, node
        assert f"state=Done current={pool['rendered_config']} " in mine[-1], mine[-1]
    assert any(re.search(r"node \S+: state=(Working|Rebooting) ", line) for line in lines), lines
    assert lines[-1].endswith(f"done: osImageURL {c.image} rolled out to pool(s) worker")


def test_rerun_is_unchanged_with_no_api_writes(rolled_out):
    c = rolled_out
    c.log.reset()
    again = playbook("rollout.yml", c.inventory(c.image))
    assert again.rc == 0, again.failure(c.name)
    assert again.stats(c.name)["changed"] == 0
    assert c.product_writes() == []
    assert again.rollout(c.name)["done"] is True
    print(f"\nrerun: {len(c.product_records())} API requests by the product, 0 writes")

    # Check mode on an unchanged cluster: not even a dry-run write.
    c.log.reset()
    checked = playbook("rollout.yml", c.inventory(c.image), "--check", "--diff")
    assert checked.rc == 0 and checked.stats(c.name)["changed"] == 0
    assert c.product_writes() == []


def test_check_mode_shows_the_change_and_persists_nothing(rolled_out):
    c = rolled_out
    before = c.machineconfig(OUR_MC)
    pool_before = c.pool()
    c.log.reset()
    checked = playbook("rollout.yml", c.inventory(c.other_image), "--check", "--diff")
    assert checked.rc == 0, checked.failure(c.name)
    (apply,) = checked.tasks(c.name, "Apply the MachineConfig of each pool")
    (item,) = apply["results"]
    assert item["changed"] is True
    assert c.other_image in json.dumps(item["diff"]["after"]) and c.image in json.dumps(item["diff"]["before"])
    assert checked.rollout(c.name)["waited"] is False
    # Only server-side dry runs reached the API; nothing changed there.
    writes = c.product_writes()
    assert writes and all(r["query"].get("dryRun") == "All" for r in writes), writes
    assert not [r for r in c.product_records() if r["verb"] == "watch"]
    after = c.machineconfig(OUR_MC)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"]["osImageURL"] == c.image
    assert c.pool()["spec"]["configuration"]["name"] == pool_before["spec"]["configuration"]["name"]


def test_check_mode_before_the_first_rollout_shows_the_machineconfig_and_creates_nothing(rolled_out):
    c = rolled_out
    assert c.checked_first.rc == 0, c.checked_first.failure(c.name)
    (apply,) = c.checked_first.tasks(c.name, "Apply the MachineConfig of each pool")
    (item,) = apply["results"]
    assert item["changed"] is True and item["diff"]["before"] == {}
    assert item["diff"]["after"]["spec"] == {"osImageURL": c.image}
    assert c.checked_first.rollout(c.name)["changed"] == [OUR_MC]
    assert not c.checked_first_exists
    assert [(r["method"], r["query"].get("dryRun")) for r in c.checked_first_writes] == [("POST", "All")]


def test_a_missing_pool_fails_before_any_pool_is_written(rolled_out):
    c = rolled_out
    c.log.reset()
    run = playbook("rollout.yml", c.inventory(c.other_image, kmod_pools=["worker", "gpu"]))
    assert run.rc != 0
    assert run.failure(c.name).startswith(f"MachineConfigPool gpu not found on cluster {c.name} (pools there: ")
    assert c.product_writes() == []
    assert c.machineconfig(OUR_MC)["spec"]["osImageURL"] == c.image


def test_a_machineconfig_that_would_win_fails_before_any_write(rolled_out):
    c = rolled_out
    # Paused, so that the lab MCO does not roll zz-other out meanwhile; the
    # run allows the paused pool, so the effectiveness gate is what fails.
    c.set_paused(True)
    try:
        c.create_machineconfig("zz-other", c.other_image)
        before = c.machineconfig(OUR_MC)
        c.log.reset()
        run = playbook("rollout.yml", c.inventory(c.image, kmod_allow_paused_pool=True))
        assert run.rc != 0
        msg = run.failure(c.name)
        assert msg.startswith(f"MachineConfig {OUR_MC} would not be effective on pool worker of cluster {c.name}: "
                              "zz-other sorts after it")
        assert c.other_image in msg
        assert c.product_writes() == []
        assert c.machineconfig(OUR_MC)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    finally:
        c.delete_machineconfig("zz-other")
        c.set_paused(False)


def test_a_paused_pool_fails_before_any_write(rolled_out):
    c = rolled_out
    c.set_paused(True)
    try:
        before = c.machineconfig(OUR_MC)
        c.log.reset()
        run = playbook("rollout.yml", c.inventory(c.other_image))
        assert run.rc != 0
        msg = run.failure(c.name)
        assert msg.startswith(f"MachineConfigPool worker on cluster {c.name} is paused (spec.paused: true)")
        assert "kmod_allow_paused_pool" in msg
        assert c.product_writes() == []
        assert c.machineconfig(OUR_MC)["spec"]["osImageURL"] == before["spec"]["osImageURL"] == c.image
    finally:
        c.set_paused(False)


def test_render_writes_the_manifests_without_touching_the_cluster(rolled_out):
    c = rolled_out
    out = c.tmp / "manifests"
    c.log.reset()
    run = playbook("render.yml", c.inventory(c.image, "render.yml", kmod_render_dir=str(out)))
    assert run.rc == 0, run.failure(c.name)
    path = out / c.name / f"{OUR_MC}.yaml"
    rendered = yaml.safe_load(path.read_text())
    assert [e.message for e in crd_validator().iter_errors(rendered)] == []
    applied = c.machineconfig(OUR_MC)
    assert rendered["spec"] == applied["spec"]
    assert rendered["metadata"]["labels"] == applied["metadata"]["labels"]
    assert c.product_records() == []
    # Rerun: unchanged file.
    again = playbook("render.yml", c.inventory(c.image, "render.yml", kmod_render_dir=str(out)))
    assert again.rc == 0 and again.stats(c.name)["changed"] == 0

    tagged = c.image.split("@")[0] + ":latest"
    bad = playbook("render.yml", c.inventory(tagged, "render-bad.yml", kmod_render_dir=str(c.tmp / "bad")))
    assert bad.rc != 0
    assert f"kmod_image: {tagged} is not pinned by digest" in bad.failure(c.name)
    assert not (c.tmp / "bad").exists()


def test_allow_paused_pool_applies_and_does_not_wait(rolled_out):
    # Last of the lab tests: it leaves our MachineConfig on another image
    # (the fixture's teardown removes it and waits for the original image).
    c = rolled_out
    c.set_paused(True)
    try:
        c.log.reset()
        run = playbook("rollout.yml", c.inventory(c.other_image, kmod_allow_paused_pool=True))
        assert run.rc == 0, run.failure(c.name)
        rollout = run.rollout(c.name)
        assert rollout["changed"] == [OUR_MC]
        assert [p["phase"] for p in rollout["pools"]] == ["paused"]
        (wait,) = run.tasks(c.name, "Wait until every node of the pools runs the image")
        assert any("is paused; not waited for" in w for w in wait.get("warnings", [])), wait
        assert [(r["method"], r["query"].get("dryRun")) for r in c.writes_but_debug_pods()] == [("PATCH", None)]
        assert c.machineconfig(OUR_MC)["spec"]["osImageURL"] == c.other_image
        nodes = [n["name"] for n in rollout["pools"][0]["nodes"]]
        assert c.booted(nodes) == {name: c.image for name in nodes}  # held by the pause
    finally:
        c.set_paused(False)


# --- site.yml's fleet order, without clusters ------------------------------------------


def fleet(tmp_path: Path, hosts: list[str], canary: list[str], **fleet_vars: Any) -> Path:
    inventory = {"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "kmod_modules": [{"name": "kmodlab_core", "source": {"path": str(layered.FIXTURE_KMODS)}}],
                 "kmod_image_repository": "registry.example.com/infra/rhcos-kmods", **fleet_vars},
        "hosts": {h: {} for h in hosts},
        "children": {"canary": {"hosts": {h: {} for h in canary}}} if canary else {}}}
    path = tmp_path / "fleet.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def waves(run: Run) -> list[str]:
    """The announcements of site.yml's rollout plays, in order."""
    messages = []
    for play in run.doc["plays"]:
        for task in play["tasks"]:
            if Run._name(task) in ("Announce the canary", "Announce the batch"):
                messages.extend(str(result["msg"]) for result in task["hosts"].values() if "msg" in result)
    return messages


def site_order(tmp_path: Path, hosts: list[str], canary: list[str], *args: str, **fleet_vars: Any) -> list[str]:
    image = "registry.example.com/infra/rhcos-kmods@sha256:" + "a" * 64
    run = playbook("site.yml", fleet(tmp_path, hosts, canary, **fleet_vars), "--tags", "kmod-no-such-tag",
                   "-e", f"kmod_image={image}", *args)
    assert run.rc == 0, run.doc
    return waves(run)


HOSTS = ["c1", "c2", "c3", "c4", "c5"]


def test_site_rolls_out_to_the_canary_group_first_then_batches_of_kmod_serial(tmp_path):
    assert site_order(tmp_path, HOSTS, ["c3"], kmod_serial=2) == [
        "Canary: c3; then 4 other cluster(s) in batches, if the canary passes.",
        "Batch: c1, c2",
        "Batch: c4, c5",
    ]


def test_site_without_a_canary_group_takes_the_first_cluster(tmp_path):
    assert site_order(tmp_path, HOSTS, [], "-e", "kmod_serial=3") == [
        "Canary: c1; then 4 other cluster(s) in batches, if the canary passes.",
        "Batch: c2, c3, c4",
        "Batch: c5",
    ]


def test_site_canary_left_out_by_limit_falls_back_to_the_first_cluster_in_the_run(tmp_path):
    # default kmod_serial 25%: of 2 clusters, one per batch
    assert site_order(tmp_path, HOSTS, ["c3"], "--limit", "c5,c2,c4") == [
        "Canary: c2; then 2 other cluster(s) in batches, if the canary passes.",
        "Batch: c4",
        "Batch: c5",
    ]
