"""mco_rollout_wait, run by ansible-playbook against a lab Kubernetes API over HTTPS.

Two kinds of cluster:

- the lab's API server (kmodlab.apiserver.LabAPIServer) in this process,
  with pool and node status driven from a thread exactly as the MCO writes
  them, step by step: the pool first stays Updated=True on the OLD rendered
  config, then the MCO picks up the change, walks the nodes, and flips
  status.configuration. This pins down race-freedom and failure messages;
- a full lab cluster of this module's own (API server + MCO simulator +
  nodes in fast mode, started beside the `lab` fixture's: what other files
  left on those, such as the product's own MachineConfigs, must not decide
  these tests), where a MachineConfig is applied with kubernetes.core.k8s
  and the real simulator rolls it out.

The request log of the API server counts what the waiter asked for.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from kmodlab import apiserver, paths, pki
from kmodlab.pytest_plugin import arch_cluster


CHECKOUT = Path(__file__).resolve().parents[2]
FIXTURES = CHECKOUT / "tests" / "unit" / "fixtures" / "mco"
MC_API = "machineconfiguration.openshift.io/v1"
PREFIX = "machineconfiguration.openshift.io/"
KMOD_MC = "99-worker-kmod-layering"
KMOD_IMG = "registry.example.com/kmods/rhcos-kmod@sha256:0c4e2b7a9d1f3e5a7c9b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a3c5b7d9f2e4a"
OLD = "rendered-worker-3f2a9c1d7e5b48a6c0d9e8f7a6b5c4d3"
NEW = "rendered-worker-b81e4d2c9a7f60e3d5c4b3a29180f7e6"
TOKEN = "kmodlab-test-token-mco-rollout-wait"


# --- the cluster: LabAPIServer in this process ----------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> pki.LabPKI:
    return pki.ensure_pki(paths.StateLayout(tmp_path_factory.mktemp("pki")))


@pytest.fixture()
def cluster(tls: pki.LabPKI) -> Any:
    with apiserver.ServerThread(apiserver.LabAPIServer(), certfile=tls.server_cert, keyfile=tls.server_key,
                                token=TOKEN) as running:
        server = running.server
        # The cluster as it stands before the rollout: the pool on the old
        # rendered config, Updated=True, nodes Done (the MCO's own shapes).
        for obj in yaml.safe_load((FIXTURES / "pending_old_updated.yaml").read_text())["items"]:
            if obj["kind"] == "MachineConfig" and obj["metadata"]["name"] == NEW:
                continue  # rendered later, when the MCO picks our MachineConfig up
            server.seed(obj)
        server.seed({
            "apiVersion": MC_API, "kind": "MachineConfig",
            "metadata": {"name": KMOD_MC, "labels": {PREFIX + "role": "worker"}},
            "spec": {"osImageURL": KMOD_IMG},
        })
        yield running


class ScriptedMCO:
    """Writes pool/node status the way the machine-config controller and daemon do."""

    def __init__(self, server: apiserver.LabAPIServer) -> None:
        self.server = server
        self.items = yaml.safe_load((FIXTURES / "mid_rollout.yaml").read_text())["items"]
        self.steps = 0

    def pool(self) -> dict[str, Any]:
        return self.server.get_object(MC_API, "MachineConfigPool", "worker")

    def nodes(self) -> list[str]:
        return sorted(n["metadata"]["name"] for n in self.server.list_objects("v1", "Node"))

    def put_pool(self, change: Callable[[dict[str, Any]], None]) -> None:
        pool = self.pool()
        change(pool)
        self.server.seed(pool)
        self.steps += 1

    def put_node(self, name: str, annotations: dict[str, str], unschedulable: bool | None = None) -> None:
        node = self.server.get_object("v1", "Node", name)
        node["metadata"]["annotations"].update({PREFIX + k: v for k, v in annotations.items()})
        if unschedulable is not None:
            node["spec"]["unschedulable"] = unschedulable
        self.server.seed(node)
        self.steps += 1

    def set_conditions(self, pool: dict[str, Any], **statuses: str) -> None:
        for cond in pool["status"]["conditions"]:
            if cond["type"] in statuses:
                cond["status"] = statuses[cond["type"]]
                cond["message"] = ""

    def counts(self, pool: dict[str, Any], updated: int, ready: int, unavailable: int, degraded: int = 0) -> None:
        pool["status"].update(updatedMachineCount=updated, readyMachineCount=ready,
                              unavailableMachineCount=unavailable, degradedMachineCount=degraded)

    def old_status_churn(self) -> None:
        """Status writes while still on the OLD config, Updated=True (e.g. a cert expiry refresh)."""
        self.put_pool(lambda p: p["status"].update(certExpirys=[{
            "bundle": "KubeAPIServerServingCAData", "subject": "CN=admin-kubeconfig-signer,OU=openshift",
            "expiry": "2036-11-21T08:01:12Z"}]))

    def render(self) -> None:
        """Render the new config and point the pool at it (generation bumps; status lags)."""
        rendered = [i for i in self.items if i["kind"] == "MachineConfig" and i["metadata"]["name"] == NEW][0]
        self.server.seed(rendered)
        new_conf = [i for i in self.items if i["kind"] == "MachineConfigPool"][0]["spec"]["configuration"]
        self.put_pool(lambda p: p["spec"].update(configuration=copy.deepcopy(new_conf)))

    def observe(self) -> None:
        """The node controller recomputes status for the new generation."""
        def change(p: dict[str, Any]) -> None:
            p["status"]["observedGeneration"] = p["metadata"]["generation"]
            self.set_conditions(p, Updated="False", Updating="True")
            self.counts(p, 0, 0, 0)
        self.put_pool(change)

    def update_node(self, name: str, done_before: int, pause: float) -> None:
        self.put_node(name, {"desiredConfig": NEW, "state": "Working", "desiredDrain": "drain-" + NEW}, True)
        self.put_pool(lambda p: self.counts(p, done_before, done_before, 1))
        time.sleep(pause)
        self.put_node(name, {"lastAppliedDrain": "drain-" + NEW, "state": "Rebooting"})
        time.sleep(pause)
        self.put_node(name, {"currentConfig": NEW, "state": "Done", "desiredDrain": "uncordon-" + NEW,
                             "lastAppliedDrain": "uncordon-" + NEW}, False)
        self.put_pool(lambda p: self.counts(p, done_before + 1, done_before + 1, 0))

    def complete(self) -> None:
        new_conf = self.pool()["spec"]["configuration"]

        def change(p: dict[str, Any]) -> None:
            p["status"]["configuration"] = copy.deepcopy(new_conf)
            self.set_conditions(p, Updated="True", Updating="False")
        self.put_pool(change)

    def degrade(self, name: str, reason: str) -> None:
        self.put_node(name, {"desiredConfig": NEW, "state": "Degraded", "reason": reason}, True)

        def change(p: dict[str, Any]) -> None:
            self.counts(p, 0, 0, 1, degraded=1)
            self.set_conditions(p, NodeDegraded="True", Degraded="True")
        self.put_pool(change)

    def rollout(self, pause: float = 0.3, hold_old: int = 3) -> None:
        for _round in range(hold_old):
            time.sleep(pause)
            self.old_status_churn()
        self.render()
        time.sleep(pause)
        self.observe()
        for i, name in enumerate(self.nodes()):
            self.update_node(name, i, pause)
        time.sleep(pause)
        self.complete()


def wait_for_watches(server: apiserver.LabAPIServer, count: int = 2, timeout: float = 60.0) -> None:
    """Block the scripted MCO until the module is watching (a test-side sync, not an assertion)."""
    deadline = time.monotonic() + timeout
    while server.count_requests(verb="watch") < count:
        if time.monotonic() > deadline:
            raise AssertionError("the module never started watching")
        time.sleep(0.05)


def in_background(fn: Callable[[], None]) -> threading.Thread:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # surfaced by join_ok
            errors.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def join_ok(thread: threading.Thread) -> None:
    thread.join(60)
    assert not thread.is_alive()
    assert not thread.errors, thread.errors  # type: ignore[attr-defined]


# --- running the module -------------------------------------------------------------


def run_wait(tmp_path: Path, module_args: dict[str, Any], env: dict[str, str] | None = None,
             check_mode: bool = False) -> dict[str, Any]:
    """ansible-playbook with one mco_rollout_wait task; returns its registered result."""
    out = tmp_path / "result.json"
    playbook = [{
        "name": "Wait for a rollout",
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [
            {"name": "Wait", "ocp.kmod_layering.mco_rollout_wait": module_args, "register": "result",
             "ignore_errors": True, "check_mode": check_mode},
            {"name": "Keep the result", "ansible.builtin.copy": {"content": "{{ result | to_json }}", "dest": str(out)}},
        ],
    }]
    (tmp_path / "playbook.yml").write_text(yaml.safe_dump(playbook))
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(["ansible-playbook", str(tmp_path / "playbook.yml")],
                          cwd=CHECKOUT, env=full_env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


def auth(running: Any, tls: pki.LabPKI) -> dict[str, Any]:
    return {"host": running.url, "api_key": TOKEN, "ca_cert": str(tls.ca_cert)}


# --- tests against the lab API server -------------------------------------------------


def test_waits_through_old_updated_true_until_the_new_config_is_everywhere(cluster, tls, tmp_path):
    server = cluster.server
    mco = ScriptedMCO(server)
    progress = tmp_path / "progress.log"
    server.reset_requests()

    pause, hold_old = 1.5, 8
    # Lower bound of the rollout's length, from the scripted MCO's own pauses.
    scripted_seconds = pause * (hold_old + 1 + 2 * 3 + 1)

    def script() -> None:
        wait_for_watches(server)
        mco.rollout(pause=pause, hold_old=hold_old)
    driver = in_background(script)
    result = run_wait(tmp_path, dict(auth(cluster, tls), machine_config=KMOD_MC, timeout=120,
                                     progress_file=str(progress)))
    join_ok(driver)

    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False and result["done"] is True
    assert result["cluster"] == cluster.url
    # The image target was read from our MachineConfig.
    assert result["target"] == {"machine_config": KMOD_MC, "os_image_url": KMOD_IMG, "absent_machine_configs": []}
    (pool,) = result["pools"]
    # Had it believed the old Updated=True, these would name the old config.
    assert pool["phase"] == "done"
    assert pool["rendered_config"] == NEW and pool["status_config"] == NEW
    assert [n["current_config"] for n in pool["nodes"]] == [NEW] * 3
    assert all(n["state"] == "Done" and n["updated"] for n in pool["nodes"])
    assert (pool["machine_count"], pool["updated_machine_count"], pool["ready_machine_count"]) == (3, 3, 3)
    assert 0 < pool["pickup_seconds"] <= pool["done_seconds"]
    # The last write of the scripted MCO (status.configuration) is what made it done.
    assert server.get_object(MC_API, "MachineConfigPool", "worker")["status"]["configuration"]["name"] == NEW

    # Progress: one line per change, tail-able, naming the cluster and the nodes.
    lines = progress.read_text().splitlines()
    assert all(cluster.url in line for line in lines)
    assert any("pending" in line and "does not include MachineConfig " + KMOD_MC in line for line in lines)
    for name in mco.nodes():
        assert any(f"node {name}: state=Rebooting" in line for line in lines)
    assert lines[-1].endswith("rolled out to pool(s) worker")
    assert result["progress"][0].startswith("pool worker: pending")

    # Requests: what the module counted is what the server logged: lists,
    # one GET of the new rendered config, two watches, whatever the number
    # of status writes it followed; far fewer than a 5-second poller of
    # pools + nodes would have made over the same rollout.
    requests = server.count_requests()
    assert result["api_requests"] == requests
    assert all(r.user_agent.startswith("ocp.kmod_layering.mco_rollout_wait") for r in server.request_log())
    polls_every_5s = 2 * math.ceil(scripted_seconds / 5)
    print(f"\nrollout of {result['elapsed_seconds']}s with {mco.steps} status writes: {requests} API requests "
          f"({server.count_requests(verb='watch')} watches); a 5 s poller would have made {polls_every_5s}+")
    assert mco.steps > 20
    assert server.count_requests(verb="watch") == 2
    assert requests <= 8 < polls_every_5s
    assert server.count_writes() == 0


def test_already_done_returns_at_once_with_few_requests(cluster, tls, tmp_path):
    server = cluster.server
    mco = ScriptedMCO(server)
    mco.rollout(pause=0, hold_old=0)
    server.reset_requests()
    result = run_wait(tmp_path, dict(auth(cluster, tls), machine_config=KMOD_MC, os_image_url=KMOD_IMG, timeout=60))
    # At once: done on the first list, no watch opened (no timing asserted:
    # done_seconds is whatever the first list took on a loaded machine).
    assert result["done"] is True and result["pools"][0]["done_seconds"] <= result["elapsed_seconds"]
    assert server.count_requests(verb="watch") == 0
    assert result["api_requests"] == server.count_requests()


def test_paused_pool_fails_with_how_to_unpause(cluster, tls, tmp_path):
    server = cluster.server
    mco = ScriptedMCO(server)
    mco.render()
    mco.put_pool(lambda p: p["spec"].update(paused=True))
    mco.observe()
    result = run_wait(tmp_path, dict(auth(cluster, tls), machine_config=KMOD_MC, timeout=60))
    assert result["failed"] is True
    assert "MachineConfigPool worker on cluster %s is paused" % cluster.url in result["msg"]
    assert "Unpause it" in result["msg"] and "on_paused=wait" in result["msg"]
    assert result["pools"][0]["phase"] == "paused"
    assert server.count_requests(verb="watch") == 0  # failed on the first evaluation


def test_paused_pool_on_paused_wait_finishes_after_unpause(cluster, tls, tmp_path):
    server = cluster.server
    mco = ScriptedMCO(server)
    mco.render()
    mco.put_pool(lambda p: p["spec"].update(paused=True))
    mco.observe()

    def script() -> None:
        wait_for_watches(server)
        time.sleep(1.0)
        mco.put_pool(lambda p: p["spec"].update(paused=False))  # generation bumps
        mco.observe()
        for i, name in enumerate(mco.nodes()):
            mco.update_node(name, i, 0.1)
        mco.complete()
    driver = in_background(script)
    result = run_wait(tmp_path, dict(auth(cluster, tls), machine_config=KMOD_MC, timeout=120, on_paused="wait"))
    join_ok(driver)
    assert not result.get("failed"), result.get("msg")
    assert result["done"] is True
    assert result["pools"][0]["paused"] is False
    assert any(line.startswith("pool worker: paused") for line in result["progress"])


def test_paused_pool_on_paused_ignore_returns_with_warning(cluster, tls, tmp_path):
    mco = ScriptedMCO(cluster.server)
    mco.render()
    mco.put_pool(lambda p: p["spec"].update(paused=True))
    result = run_wait(tmp_path, dict(auth(cluster, tls), machine_config=KMOD_MC, timeout=30, on_paused="ignore"))
    assert not result.get("failed")
    assert result["pools"][0]["phase"] == "paused" and result["pools"][0]["done"] is False
    assert any("is paused; not waited for" in w for w in result.get("warnings", []))


def test_degraded_node_fails_fast_naming_node_and_reason(cluster, tls, tmp_path):
    server = cluster.server
    mco = ScriptedMCO(server)
    node = mco.nodes()[1]
    reason = ("failed to update OS to %s: error running rpm-ostree rebase: reading manifest: "
              "unauthorized: authentication required" % KMOD_IMG)

    def script() -> None:
        wait_for_watches(server)
        mco.render()
        mco.observe()
        mco.degrade(node, reason)
    driver = in_background(script)
    result = run_wait(tmp_path, dict(auth(cluster, tls), machine_config=KMOD_MC, timeout=300))
    join_ok(driver)
    assert result["failed"] is True
    assert result["msg"].startswith("MachineConfigPool worker on cluster %s is degraded" % cluster.url)
    assert "node %s is Degraded: %s" % (node, reason) in result["msg"]
    assert result["pools"][0]["degraded_nodes"] == [{"name": node, "state": "Degraded", "reason": reason}]


def test_on_degraded_wait_rides_out_a_node_that_recovers(cluster, tls, tmp_path):
    server = cluster.server
    mco = ScriptedMCO(server)
    nodes = mco.nodes()

    def script() -> None:
        wait_for_watches(server)
        mco.render()
        mco.observe()
        mco.degrade(nodes[0], "failed to drain node: timed out waiting for pod eviction")
        time.sleep(0.5)
        # The drain goes through on retry; the daemon clears the reason.
        mco.put_node(nodes[0], {"state": "Working", "reason": ""})
        mco.put_pool(lambda p: (mco.counts(p, 0, 0, 1), mco.set_conditions(p, NodeDegraded="False", Degraded="False")))
        for i, name in enumerate(nodes):
            mco.update_node(name, i, 0.1)
        mco.complete()
    driver = in_background(script)
    result = run_wait(tmp_path, dict(auth(cluster, tls), machine_config=KMOD_MC, timeout=120, on_degraded="wait"))
    join_ok(driver)
    assert not result.get("failed"), result.get("msg")
    assert result["done"] is True
    assert any("degraded" in line and "timed out waiting for pod eviction" in line for line in result["progress"])


def test_timeout_names_cluster_pool_and_waiting_nodes(cluster, tls, tmp_path):
    server = cluster.server
    mco = ScriptedMCO(server)
    mco.render()
    mco.observe()
    first = mco.nodes()[0]
    mco.put_node(first, {"desiredConfig": NEW, "state": "Working"}, True)
    result = run_wait(tmp_path, dict(auth(cluster, tls), machine_config=KMOD_MC, timeout=3))
    assert result["failed"] is True
    msg = result["msg"]
    assert msg.startswith("Timed out after 3s waiting on cluster %s for the rollout of MachineConfig %s"
                          % (cluster.url, KMOD_MC))
    assert "pool worker: progressing, 0/3 updated" in msg
    assert "%s (Working)" % first in msg
    assert result["pools"][0]["phase"] == "progressing"


def test_dropped_watch_and_410_gone_resume_by_relisting(cluster, tls, tmp_path):
    server = cluster.server
    mco = ScriptedMCO(server)

    def script() -> None:
        wait_for_watches(server)
        mco.render()
        mco.observe()
        # Connections drop; meanwhile the rollout goes on and the history the
        # module would resume from is compacted away.
        port = server.port
        cluster.call(server.stop())
        for i, name in enumerate(mco.nodes()):
            mco.update_node(name, i, 0)
        mco.complete()
        server.compact_watch_history()
        cluster.call(server.start("127.0.0.1", port, tls.server_cert, tls.server_key, TOKEN))
    driver = in_background(script)
    result = run_wait(tmp_path, dict(auth(cluster, tls), machine_config=KMOD_MC, timeout=120))
    join_ok(driver)
    assert not result.get("failed"), result.get("msg")
    assert result["done"] is True and result["pools"][0]["status_config"] == NEW
    # After the restart: resuming from the old resourceVersion (a second
    # watch) got 410 Gone, so pools and nodes were listed a second time. A
    # third watch follows only if that list did not already show the rollout
    # done, which is a race with the scripted MCO: not asserted.
    for resource in ("machineconfigpools", "nodes"):
        assert server.count_requests(verb="list", resource=resource) == 2
        assert server.count_requests(verb="watch", resource=resource) >= 2


def test_credentials_from_k8s_auth_env_and_check_mode(cluster, tls, tmp_path):
    env = {"K8S_AUTH_HOST": cluster.url, "K8S_AUTH_API_KEY": TOKEN, "K8S_AUTH_SSL_CA_CERT": str(tls.ca_cert)}
    result = run_wait(tmp_path, dict(machine_config=KMOD_MC), env=env, check_mode=True)
    assert not result.get("failed"), result.get("msg")
    assert result["done"] is False and result["pools"][0]["phase"] == "pending"
    assert "check mode" in result["msg"]
    assert cluster.server.count_requests(verb="watch") == 0


def test_other_machineconfig_overriding_the_image_fails_before_waiting(cluster, tls, tmp_path):
    other = "registry.example.com/other/rhcos@sha256:" + "4" * 64
    cluster.server.seed({"apiVersion": MC_API, "kind": "MachineConfig",
                         "metadata": {"name": "99-worker-zz-other-image", "labels": {PREFIX + "role": "worker"}},
                         "spec": {"osImageURL": other}})
    result = run_wait(tmp_path, dict(auth(cluster, tls), machine_config=KMOD_MC, timeout=60))
    assert result["failed"] is True
    assert "is 99-worker-zz-other-image, with %s" % other in result["msg"]
    assert "Pool worker on cluster %s would not render osImageURL %s" % (cluster.url, KMOD_IMG) in result["msg"]


def test_machineconfig_with_another_role_label_fails_before_waiting(cluster, tls, tmp_path):
    cluster.server.seed({"apiVersion": MC_API, "kind": "MachineConfig",
                         "metadata": {"name": "99-kmod-wrong-role", "labels": {PREFIX + "role": "wroker"}},
                         "spec": {"osImageURL": KMOD_IMG}})
    result = run_wait(tmp_path, dict(auth(cluster, tls), machine_config="99-kmod-wrong-role", timeout=60))
    assert result["failed"] is True
    assert ('MachineConfig 99-kmod-wrong-role (labels {"%srole": "wroker"}) is not selected by pool worker '
            'on cluster %s' % (PREFIX, cluster.url)) in result["msg"]
    assert cluster.server.count_requests(verb="watch") == 0


def test_missing_pool_and_missing_machineconfig(cluster, tls, tmp_path):
    result = run_wait(tmp_path, dict(auth(cluster, tls), machine_config=KMOD_MC, pools=["worker", "gpu"], timeout=30))
    assert result["failed"] is True
    assert "MachineConfigPool gpu not found on cluster %s (pools there: worker)" % cluster.url in result["msg"]
    result = run_wait(tmp_path, dict(auth(cluster, tls), machine_config="99-worker-nope", timeout=30))
    assert result["failed"] is True
    assert "MachineConfig 99-worker-nope not found on cluster %s" % cluster.url in result["msg"]


# --- a full lab cluster: the MCO simulator rolls a MachineConfig out -------------------

UA = "ocp.kmod_layering.mco_rollout_wait"
LAB_MC = "99-worker-kmod-rollout-wait-test"


def api_call(cluster: dict[str, Any], ca_file: str, path: str, body: dict[str, Any] | None = None,
             method: str | None = None) -> dict[str, Any]:
    import ssl
    import urllib.request
    method = method or ("POST" if body is not None else "GET")
    content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
    request = urllib.request.Request(
        cluster["api_url"] + path, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": "Bearer " + cluster["token"], "Content-Type": content_type})
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=ca_file), timeout=30) as response:
        return json.loads(response.read())


def run_tasks(tmp_path: Path, tasks: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """ansible-playbook with the given tasks; returns the registered results named in `names`."""
    out = tmp_path / "results.json"
    keep = {"name": "Keep the results", "ansible.builtin.copy": {
        "content": "{{ {%s} | to_json }}" % ", ".join("'%s': %s | default({})" % (n, n) for n in names),
        "dest": str(out)}}
    playbook = [{"name": "Lab rollout", "hosts": "localhost", "connection": "local", "gather_facts": False,
                 "tasks": tasks + [keep]}]
    (tmp_path / "playbook.yml").write_text(yaml.safe_dump(playbook))
    proc = subprocess.run(["ansible-playbook", str(tmp_path / "playbook.yml")], cwd=CHECKOUT,
                          capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


class LabWorkers:
    """The worker pool of this module's lab cluster, put back as found afterwards."""

    def __init__(self, lab: Any, cluster: dict[str, Any], tmp_path: Path) -> None:
        self.cluster = cluster
        self.ca_file = str(lab.ca_file)
        self.tmp_path = tmp_path
        others = [r for r in lab.releases if r["version"] != self.cluster["release"]]
        assert others, "the lab has a second release, whose OS image makes a real change"
        self.image = others[0]["images"][others[0]["os_tag"]]
        self.pool_before = self.get("/apis/%s/machineconfigpools/worker" % MC_API)
        self.rendered_before = self.pool_before["spec"]["configuration"]["name"]
        self.image_before = self.get("/apis/%s/machineconfigs/%s" % (MC_API, self.rendered_before))["spec"]["osImageURL"]
        assert self.image_before != self.image and "@sha256:" in self.image
        self.log = apiserver.RequestLogClient(self.cluster["api_url"], self.cluster["token"], self.ca_file)
        self.progress = tmp_path / "progress.log"
        self.wait = {"kubeconfig": self.cluster["kubeconfig"], "pools": ["worker"], "timeout": 900,
                     "progress_file": str(self.progress)}

    def get(self, path: str) -> dict[str, Any]:
        return api_call(self.cluster, self.ca_file, path)

    def machineconfig(self, image: str) -> dict[str, Any]:
        return {"apiVersion": MC_API, "kind": "MachineConfig",
                "metadata": {"name": LAB_MC, "labels": {PREFIX + "role": "worker"}}, "spec": {"osImageURL": image}}

    def apply(self, image: str) -> None:
        api_call(self.cluster, self.ca_file, "/apis/%s/machineconfigs" % MC_API, self.machineconfig(image))

    def set_paused(self, paused: bool) -> None:
        api_call(self.cluster, self.ca_file, "/apis/%s/machineconfigpools/worker" % MC_API,
                 {"spec": {"paused": paused}}, method="PATCH")

    def waiter_watches(self) -> int:
        return sum(1 for r in self.log.records(verb="watch") if r["user_agent"].startswith(UA))

    def when_watched(self, action: Callable[[], None]) -> threading.Thread:
        """Run `action` once the waiter (started next) is watching."""
        def run() -> None:
            deadline = time.monotonic() + 120
            while self.waiter_watches() < 2:
                assert time.monotonic() < deadline, "the waiter never started watching"
                time.sleep(0.2)
            action()
        return in_background(run)

    def booted(self, nodes: list[dict[str, Any]]) -> dict[str, str]:
        return dict((n["name"], self.get("/api/v1/nodes/" + n["name"])["metadata"]["annotations"]
                     .get("kmodlab.io/booted-image")) for n in nodes)

    def restore(self) -> None:
        """Unpause, remove our MachineConfig, and wait for the old image."""
        self.set_paused(False)
        back = run_tasks(self.tmp_path, [
            {"name": "Remove the MachineConfig", "kubernetes.core.k8s": {
                "kubeconfig": self.cluster["kubeconfig"], "state": "absent", "api_version": MC_API,
                "kind": "MachineConfig", "name": LAB_MC}},
            {"name": "Wait for the rollback", "ocp.kmod_layering.mco_rollout_wait": dict(
                self.wait, os_image_url=self.image_before), "register": "rollback"},
        ], ["rollback"])
        assert back["rollback"]["done"] is True, back["rollback"].get("msg")


@pytest.fixture(scope="module")
def own_cluster(lab: Any) -> Any:
    """A fresh lab cluster on the first cluster's release, for this module
    alone (fast mode: the waiter reads the same pool and node status either
    way; real boots are the e2e tests')."""
    with arch_cluster(lab, lab.clusters[0]["release_id"], node_mode="fast") as entry:
        yield entry


@pytest.fixture()
def lab_workers(lab: Any, own_cluster: dict[str, Any], tmp_path: Path) -> Any:
    workers = LabWorkers(lab, own_cluster, tmp_path)
    try:
        yield workers
    finally:
        workers.restore()


@pytest.mark.lab
def test_lab_cluster_rollout_with_the_mco_simulator(lab_workers):
    lw = lab_workers
    lw.log.reset()
    # The waiter is started first and sees the pool Updated=True on the old
    # config; only then is the MachineConfig applied.
    applier = lw.when_watched(lambda: lw.apply(lw.image))
    results = run_tasks(lw.tmp_path, [
        {"name": "Wait for the image's rollout", "ocp.kmod_layering.mco_rollout_wait": dict(
            lw.wait, os_image_url=lw.image), "register": "rollout"},
    ], ["rollout"])
    join_ok(applier)
    rollout = results["rollout"]
    records = lw.log.records()

    assert rollout["done"] is True and rollout["changed"] is False, rollout.get("msg")
    (pool,) = rollout["pools"]
    assert pool["rendered_config"] != lw.rendered_before
    assert pool["status_config"] == pool["rendered_config"]
    assert len(pool["nodes"]) == lw.cluster["pools"]["worker"]
    for node in pool["nodes"]:
        assert node["current_config"] == pool["rendered_config"] and node["state"] == "Done"
    # The nodes really moved to the image (as the lab's node agents record it).
    assert lw.booted(pool["nodes"]) == dict((n["name"], lw.image) for n in pool["nodes"])
    lines = lw.progress.read_text().splitlines()
    assert lines[0].endswith("(%s has osImageURL %s, not %s)" % (lw.rendered_before, lw.image_before, lw.image))
    assert any("state=Working" in line for line in lines)
    assert 0 < pool["pickup_seconds"] <= pool["done_seconds"]

    mine = [r for r in records if r["user_agent"].startswith(UA)]
    print(f"\nlab rollout of {len(pool['nodes'])} workers ({lw.cluster['node_mode']} mode) in "
          f"{pool['done_seconds']}s (picked up after {pool['pickup_seconds']}s): {rollout['api_requests']} API "
          f"requests by the waiter, {len(records)} by everyone (MCO simulator, node agents, ...)")
    assert rollout["api_requests"] == len(mine)
    assert sum(1 for r in mine if r["verb"] == "watch") >= 2
    assert rollout["api_requests"] <= 10


@pytest.mark.lab
def test_lab_cluster_paused_pool(lab_workers):
    lw = lab_workers
    lw.set_paused(True)
    lw.apply(lw.image)
    failed = run_tasks(lw.tmp_path, [
        {"name": "Wait, failing on a paused pool", "ocp.kmod_layering.mco_rollout_wait": dict(
            lw.wait, machine_config=LAB_MC), "register": "paused", "ignore_errors": True},
    ], ["paused"])["paused"]
    print("\n" + failed["msg"])
    assert failed["failed"] is True
    assert ("MachineConfigPool worker on cluster %s is paused (spec.paused: true)" % lw.cluster["api_url"]
            in failed["msg"])
    assert "Unpause it" in failed["msg"]
    assert failed["pools"][0]["phase"] == "paused"

    lw.log.reset()
    unpauser = lw.when_watched(lambda: lw.set_paused(False))
    waited = run_tasks(lw.tmp_path, [
        {"name": "Wait through the pause", "ocp.kmod_layering.mco_rollout_wait": dict(
            lw.wait, machine_config=LAB_MC, on_paused="wait"), "register": "waited"},
    ], ["waited"])["waited"]
    join_ok(unpauser)
    assert waited["done"] is True, waited.get("msg")
    assert waited["progress"][0].startswith("pool worker: paused")
    assert lw.booted(waited["pools"][0]["nodes"]) == dict((n["name"], lw.image) for n in waited["pools"][0]["nodes"])


@pytest.mark.lab
def test_lab_cluster_degraded_node_fails_fast(lab_workers):
    lw = lab_workers
    # Pinned to a digest the registry does not have: the first node's pull fails.
    missing = lw.image.split("@")[0] + "@sha256:" + "0" * 64
    lw.apply(missing)
    result = run_tasks(lw.tmp_path, [
        {"name": "Wait for an image that cannot be pulled", "ocp.kmod_layering.mco_rollout_wait": dict(
            lw.wait, machine_config=LAB_MC), "register": "degraded", "ignore_errors": True},
    ], ["degraded"])["degraded"]
    print("\n" + result["msg"])
    assert result["failed"] is True
    assert result["msg"].startswith("MachineConfigPool worker on cluster %s is degraded" % lw.cluster["api_url"])
    (node,) = result["pools"][0]["degraded_nodes"]
    assert node["state"] == "Degraded" and node["reason"]
    assert "node %s is Degraded: %s" % (node["name"], node["reason"]) in result["msg"]
