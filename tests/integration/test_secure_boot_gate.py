"""The Secure Boot gate of the rollout (issue J), on a lab cluster of its own:

- the probe: before the first write of a rollout, two debug pods per node
  (mokutil --sb-state, one grep of the kernel's files), every one deleted;
  a rerun that writes nothing probes nothing; kmod_secure_boot_gate: never
  probes nothing either; the signing certificate's fingerprint is recorded
  in our MachineConfig's annotations;
- the refusal (lab nodes started with Secure Boot, the lab's fleet
  certificate enrolled as a MOK; they answer the probe from what they
  booted): unsigned modules, and modules signed by a certificate the nodes do
  not trust, are refused before any write (the request log: 0 writes but
  the probe's debug pods), naming the pool, a node and the fix; with
  kmod_secure_boot_accept_untrusted the rollout goes through.

The signing facts of the lab's certificates are read by the product's own
``_signing`` (the build role's input, not the oracle: what the nodes trust
comes from the lab's /proc/keys)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _signing
from kmodlab import apiserver, cluster, layered, state
from kmodlab.apiserver import LAB_CONTROLLER_AGENTS

TOP = Path(__file__).resolve().parents[2]
MC_API = "machineconfiguration.openshift.io/v1"
OUR_MC = "99-kmod-layering-worker"
SIGNING_ANNOTATION = "kmod-layering.io/signing-cert-sha256"
DEBUG_NAMESPACE = "openshift-kmod-layering-debug"
LAB_AGENTS = LAB_CONTROLLER_AGENTS + ("Python-urllib/",)
GATE_TASK = "Check that the nodes of each pool would load the modules' signatures"
PROBE_TASK = "Read the Secure Boot state and trusted keys of the nodes of pools"


pytestmark = pytest.mark.lab

FLEET_SIGNING = {
    # What the build role's kmod_build.signing carries for the fleet key; the
    # lab PKI's certificates (lab.signing) replace it in the refusal tests.
    "cert_sha256": "5e" * 32, "subject": "kmodlab fleet module signing", "serial": "01:02",
    "skid": "00" * 20, "key_description": "kmodlab fleet module signing: " + "00" * 20, "hash": "sha256",
}


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


class Lab:
    def __init__(self, entry: dict[str, Any], lab: state.LabState, tmp: Path) -> None:
        self.entry = entry
        self.name = entry["name"]
        self.lab = lab
        self.tmp = tmp
        self.ca_file = str(lab.ca_file)
        self.log = apiserver.RequestLogClient(entry["api_url"], entry["token"], self.ca_file)

    def call(self, path: str) -> Any:
        request = urllib.request.Request(self.entry["api_url"] + path,
                                         headers={"Authorization": "Bearer " + self.entry["token"]})
        try:
            with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=self.ca_file),
                                        timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def machineconfig(self, name: str = OUR_MC) -> dict[str, Any] | None:
        return self.call(f"/apis/{MC_API}/machineconfigs/{name}")

    def workers(self) -> list[str]:
        nodes = self.call("/api/v1/nodes?labelSelector=node-role.kubernetes.io/worker")["items"]
        return [n["metadata"]["name"] for n in nodes]

    def product_writes(self) -> list[tuple[str, str]]:
        """Writes by the product (not the lab's controllers, not this test), dry runs excepted."""
        return [(r["method"], r["path"]) for r in self.log.records()
                if r["method"] in ("POST", "PUT", "PATCH", "DELETE")
                and not str(r.get("user_agent") or "").startswith(LAB_AGENTS)
                and (r.get("query") or {}).get("dryRun") != "All"]

    def writes_but_debug_pods(self) -> list[tuple[str, str]]:
        """The product's writes other than the probe's debug pods and their namespace."""
        return [(m, p) for m, p in self.product_writes()
                if not p.startswith(f"/api/v1/namespaces/{DEBUG_NAMESPACE}/pods")
                and p not in ("/api/v1/namespaces", f"/api/v1/namespaces/{DEBUG_NAMESPACE}")]

    def debug_pods(self, method: str) -> list[str]:
        return [p for m, p in self.product_writes()
                if m == method and p.startswith(f"/api/v1/namespaces/{DEBUG_NAMESPACE}/pods")]

    def inventory(self, filename: str, **extra: Any) -> Path:
        fleet = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "kmod_rollout_progress_file": str(self.tmp / "progress.log"),
            "kmod_rollout_timeout": 300,
            "kmod_modules": [{"name": "kmodlab_core", "source": {"path": str(layered.FIXTURE_KMODS / "kmodlab_core")}}],
        }
        fleet.update(extra)
        hosts = {self.name: {"kmod_kubeconfig": self.entry["kubeconfig"], "kmod_pools": ["worker"]}}
        path = self.tmp / filename
        path.write_text(yaml.safe_dump({"all": {"vars": fleet, "hosts": hosts}}))
        return path

    def rollout(self, image: str, **extra: Any) -> Run:
        env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
        inventory = self.inventory("rollout.yml", kmod_image=image, **extra)
        return Run(subprocess.run(["ansible-playbook", "-i", str(inventory), str(TOP / "playbooks" / "rollout.yml")],
                                  cwd=TOP, env=env, capture_output=True, text=True, timeout=900, check=False))


def _start(lab: state.LabState, tmp: Path, **options: Any) -> Iterator[Lab]:
    release = lab.releases[0]
    with state.locked(lab.root) as current:
        entry = cluster.start_clusters(current, 1, [release["version"]], workers=2, masters=1, node_mode="fast",
                                       drain_seconds=0.2, **options)[0]
    try:
        env = Lab(entry, lab, tmp)
        env.v1 = layered.build_layered_image(lab, release["version"], ["kmodlab_core"])
        env.v2 = layered.build_layered_image(lab, release["version"], ["kmodlab_core", "kmodlab_dep"])
        yield env
    finally:
        with state.locked(lab.root) as current:
            cluster.stop_cluster(current, entry["name"])


@pytest.fixture(scope="module")
def env(lab: state.LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from _start(lab, tmp_path_factory.mktemp("sb-gate"))


# --- the probe (any lab) -----------------------------------------------------------------------


def test_the_first_write_is_probed_in_two_pods_per_node_and_the_fingerprint_recorded(env: Lab) -> None:
    env.log.reset()
    run = env.rollout(env.v1, kmod_build={"build_key": "b" * 64, "signing": FLEET_SIGNING})
    assert run.rc == 0, run.failure(env.name)
    (probe,) = run.results(env.name, PROBE_TASK)
    workers = env.workers()
    assert sorted(n["name"] for n in probe["nodes"]) == sorted(workers)
    assert all("secure_boot" in n for n in probe["nodes"])
    assert len(env.debug_pods("POST")) == len(env.debug_pods("DELETE")) == 2 * len(workers)
    (gate,) = run.results(env.name, GATE_TASK)
    (item,) = gate["results"]
    assert item["secure_boot_gate"]["checked"] is True
    assert sorted(item["secure_boot_gate"]["nodes"]) == sorted(workers)
    # Nodes without Secure Boot: nothing to refuse, nothing unknown.
    assert item["secure_boot_gate"]["unknown"] == [] and item["secure_boot_gate"]["refusing"] == []
    ours = env.machineconfig()
    assert ours["metadata"]["annotations"][SIGNING_ANNOTATION] == FLEET_SIGNING["cert_sha256"]
    assert ours["spec"]["osImageURL"] == env.v1


def test_a_rerun_that_writes_nothing_probes_nothing_and_never_probes_nothing(env: Lab) -> None:
    env.log.reset()
    run = env.rollout(env.v1, kmod_build={"build_key": "b" * 64, "signing": FLEET_SIGNING})
    assert run.rc == 0, run.failure(env.name)
    (probe,) = run.results(env.name, PROBE_TASK)
    assert probe.get("skipped") is True
    assert env.product_writes() == []

    env.log.reset()
    run = env.rollout(env.v2, kmod_secure_boot_gate="never")
    assert run.rc == 0, run.failure(env.name)
    assert run.results(env.name, PROBE_TASK)[0].get("skipped") is True
    assert env.debug_pods("POST") == []
    # Unsigned now: the fingerprint goes (and stays in the history entry of v1).
    ours = env.machineconfig()
    assert SIGNING_ANNOTATION not in ours["metadata"]["annotations"]
    history = json.loads(ours["metadata"]["annotations"]["kmod-layering.io/history"])
    assert history[-1]["signing-cert-sha256"] == FLEET_SIGNING["cert_sha256"]


# --- the refusal (Secure Boot nodes) -------------------------------------------------------------


@pytest.fixture(scope="module")
def sb_env(lab: state.LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from _start(lab, tmp_path_factory.mktemp("sb-gate-secure"), secure_boot=True)


def _fleet_signing(lab: state.LabState, which: str) -> dict[str, Any]:
    """The signing facts of the lab PKI's fleet (or other) certificate, as the build role makes them."""
    return _signing.certificate_facts(Path(lab.signing[which]["kmod_signing_cert_file"]).read_bytes())


@pytest.mark.parametrize("signing", ["unsigned", "other"])
def test_modules_the_nodes_would_refuse_are_stopped_before_any_write(
        sb_env: Lab, lab: state.LabState, signing: str) -> None:
    facts = None if signing == "unsigned" else _fleet_signing(lab, "other")
    before = sb_env.machineconfig()
    sb_env.log.reset()
    run = sb_env.rollout(sb_env.v2, kmod_build={"build_key": "c" * 64, "signing": facts})
    assert run.rc != 0
    msg = run.failure(sb_env.name)
    assert msg.startswith(f"Cluster {sb_env.name}, pool worker: node "), msg
    assert "would refuse the modules: it enforces module signatures (Secure Boot enabled" in msg
    assert "mokutil --import" in msg and "kmod_secure_boot_accept_untrusted: true" in msg
    if signing == "unsigned":
        assert "the modules are not signed" in msg and "kmod_signing_key_file" in msg
    else:
        assert "does not trust the key that signed the modules" in msg and facts["cert_sha256"] in msg
    # Nothing written but the probe's debug pods (each deleted).
    assert sb_env.writes_but_debug_pods() == []
    assert len(sb_env.debug_pods("POST")) == len(sb_env.debug_pods("DELETE")) > 0
    assert sb_env.machineconfig() == before


def test_the_fleet_key_passes_and_accepting_the_risk_lets_unsigned_modules_through(sb_env: Lab,
                                                                                   lab: state.LabState) -> None:
    run = sb_env.rollout(sb_env.v1, kmod_build={"build_key": "d" * 64, "signing": _fleet_signing(lab, "fleet")},
                         kmod_rollout_wait=False)
    assert run.rc == 0, run.failure(sb_env.name)
    (gate,) = run.results(sb_env.name, GATE_TASK)
    (item,) = gate["results"]
    assert item["secure_boot_gate"]["refusing"] == [] and item["secure_boot_gate"]["enforcing"]

    run = sb_env.rollout(sb_env.v2, kmod_secure_boot_accept_untrusted=True, kmod_rollout_wait=False)
    assert run.rc == 0, run.failure(sb_env.name)
    (gate,) = run.results(sb_env.name, GATE_TASK)
    # A loop item's warning: on the item's result or the task's, as ansible-core hands it on.
    warnings = json.dumps([gate.get("warnings"), gate["results"][0].get("warnings")])
    assert "the risk is accepted" in warnings
    assert sb_env.machineconfig()["spec"]["osImageURL"] == sb_env.v2
