"""playbooks/verify.yml on a lab cluster: a layered image (kmodlab_core with
options + kmodlab_dep, built with the product's Containerfile) is rolled out
to the worker pool with a MachineConfig and mco_rollout_wait; then the verify
role, through host-inspection debug pods answered by the lab's node agents,
finds every worker on the image's digest with both modules Live, writes the
reports and leaves no debug pod behind. Another expected digest, or a module
the image lacks, fails the run naming the node and the digests or the module.
Check mode creates nothing.

Own cluster (fast node mode, started and stopped here): the session's shared
clusters are left as they were."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from kmodlab import apiserver, cluster, layered, state

TOP = Path(__file__).resolve().parents[2]
NAMESPACE = "openshift-kmod-layering-debug"
MANAGED = "app.kubernetes.io/managed-by=ocp.kmod_layering"
USER_AGENT = "ocp.kmod_layering.node_inspect"
OPTIONS = "greeting=hi level=2"
# The lab answers `cat /sys/module/...` parameter reads only if its node agent
# knows them; assert parameters when it does.

ROLLOUT = """\
- name: Roll the layered image out to the worker pool
  hosts: all
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  module_defaults:
    group/ocp.kmod_layering.cluster:
      kubeconfig: "{{ kmod_kubeconfig }}"
  tasks:
    - name: Apply the MachineConfig
      kubernetes.core.k8s:
        definition:
          apiVersion: machineconfiguration.openshift.io/v1
          kind: MachineConfig
          metadata:
            name: 99-worker-kmod-verify-test
            labels: {machineconfiguration.openshift.io/role: worker}
          spec:
            osImageURL: "{{ kmod_image }}"
    - name: Wait for the pool
      ocp.kmod_layering.mco_rollout_wait:
        machine_config: 99-worker-kmod-verify-test
        pools: [worker]
        timeout: 600
"""


class Lab:
    def __init__(self, entry: dict[str, Any], lab: state.LabState, image: str, workdir: Path) -> None:
        self.entry = entry
        self.lab = lab
        self.image = image
        self.workdir = workdir
        api = k8s_client.ApiClient(k8s_config.new_client_from_config(entry["kubeconfig"]).configuration)
        self.core = k8s_client.CoreV1Api(api)
        self.requests = apiserver.RequestLogClient(entry["api_url"], entry["token"], lab.ca_file)

    def inventory(self, path: Path, report_dir: Path, modules: list[dict[str, Any]] | None = None) -> Path:
        kmods = layered.FIXTURE_KMODS
        host = {
            "kmod_kubeconfig": self.entry["kubeconfig"],
            "kmod_pools": ["worker"],
        }
        fleet = {
            "kmod_image_repository": f"{self.lab.registry['host']}/kmodlab/layered",
            "kmod_report_dir": str(report_dir),
            "kmod_verify_check_parameters": True,
            "kmod_modules": modules
            or [
                {"name": "kmodlab_core", "source": {"path": str(kmods / "kmodlab_core")}, "options": OPTIONS},
                {"name": "kmodlab_dep", "source": {"path": str(kmods / "kmodlab_dep")}},
            ],
        }
        path.write_text(yaml.safe_dump({"all": {"vars": fleet, "hosts": {self.entry["name"]: host}}}))
        return path

    def playbook(self, playbook: str | Path, inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ansible-playbook", "-i", str(inventory), str(playbook), *extra],
            env=dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1"),
            capture_output=True, text=True, timeout=900, cwd=self.workdir, check=False,
        )  # fmt: skip

    def debug_pods(self) -> list[str]:
        return [p.metadata.name for p in self.core.list_namespaced_pod(NAMESPACE, label_selector=MANAGED).items]

    def our_requests(self, **filters: str) -> list[dict[str, Any]]:
        return [r for r in self.requests.records(**filters) if USER_AGENT in (r.get("user_agent") or "")]

    def nodes_of_role(self, role: str) -> list[str]:
        return sorted(n.metadata.name for n in self.core.list_node(label_selector=f"node-role.kubernetes.io/{role}").items)


def recap(output: str, host: str) -> dict[str, int]:
    match = re.search(rf"^{re.escape(host)}\s+:\s+(.*)$", output, re.M)
    assert match, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


@pytest.fixture(scope="module")
def verify_lab(lab: state.LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    release = lab.releases[0]
    with state.locked(lab.root) as current:
        entry = cluster.start_clusters(current, 1, [release["version"]], workers=2, masters=1, node_mode="fast")[0]
    try:
        image = layered.build_layered_image(
            lab, release["version"], [layered.fixture("kmodlab_core", options=OPTIONS), "kmodlab_dep"]
        )
        workdir = tmp_path_factory.mktemp("verify")
        env = Lab(entry, lab, image, workdir)
        playbook = workdir / "rollout.yml"
        playbook.write_text(ROLLOUT)
        inventory = env.inventory(workdir / "rollout-inventory.yml", workdir / "unused")
        run = env.playbook(playbook, inventory, "-e", f"kmod_image={image}")
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        yield env
    finally:
        with state.locked(lab.root) as current:
            cluster.stop_cluster(current, entry["name"])


@pytest.mark.lab
def test_every_worker_verified_reports_written_and_no_debug_pod_left(verify_lab: Lab, tmp_path: Path) -> None:
    env = verify_lab
    name = env.entry["name"]
    digest = env.image.split("@", 1)[1]
    report_dir = tmp_path / "report"
    inventory = env.inventory(tmp_path / "inventory.yml", report_dir)
    env.requests.reset()

    run = env.playbook(TOP / "playbooks/verify.yml", inventory, "-e", f"kmod_image={env.image}")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]

    workers = env.nodes_of_role("worker")
    assert len(workers) == 2
    report = json.loads((report_dir / f"{name}.json").read_text())
    assert report["cluster"] == name and report["verdict"] == "pass", report["reasons"]
    assert report["counts"] == {"nodes": 2, "passed": 2, "failed": 0}
    assert report["expected_image"] == env.image and report["expected_digest"] == digest
    # The pool's nodes only (the master is not in the worker pool).
    assert sorted(n["node"] for n in report["nodes"]) == workers
    for verdict in report["nodes"]:
        assert verdict["pool"] == "worker" and verdict["verdict"] == "pass" and verdict["reasons"] == []
        assert verdict["booted_digest"] == digest and verdict["image_ok"] is True
        assert verdict["booted_image"] == env.image  # ostree-unverified-registry: stripped
        assert {m: (i["loaded"], i["state"]) for m, i in verdict["modules"].items()} == {
            "kmodlab_core": (True, "Live"),
            "kmodlab_dep": (True, "Live"),
        }
        assert verdict["modules"]["kmodlab_core"]["parameters"]["greeting"]["actual"] == "hi"
        # Secure Boot per node (kmod_verify_secure_boot): the fact, each module's signer.
        secure_boot = verdict["secure_boot"]
        assert set(secure_boot["modules"]) == {"kmodlab_core", "kmodlab_dep"}
        # Lab nodes in fast mode boot without Secure Boot; the image's modules are unsigned.
        assert secure_boot["state"] in ("disabled", "unsupported") and secure_boot["enforcing"] is False
        assert verdict["signatures_read"] and secure_boot["modules"]["kmodlab_core"]["signer"] is None
        # Their kernel let them in and tainted itself (E, as the lab's node
        # reports in /proc/sys/kernel/tainted): a warning, not a failure.
        assert any(w.startswith(f"node {verdict['node']}: the kernel is tainted by an unsigned module")
                   for w in report["warnings"]), report["warnings"]
    # The readable table: at the end of the run and in summary.txt.
    table = (report_dir / "summary.txt").read_text().splitlines()
    assert table[0].split()[:4] == ["CLUSTER", "POOL", "NODE", "VERDICT"]
    rows = sorted(line.split()[:4] for line in table[2:])
    assert rows == [[name, "worker", w, "pass"] for w in workers]
    assert all(row in run.stdout for row in table[2:])
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["totals"]["clusters_passed"] == 1 and int(summary["totals"]["nodes_passed"]) == 2

    # Debug pods: one per node and command, every one deleted; only pods written.
    assert env.debug_pods() == []
    # rpm-ostree, /proc/modules, mokutil --sb-state, one grep (the parameter
    # and Secure Boot files together), modinfo.
    commands = 5
    created = env.our_requests(verb="create", resource="pods")
    deleted = env.our_requests(verb="delete", resource="pods")
    assert len(created) == len(deleted) == commands * len(workers)
    writes = [r for r in env.our_requests() if r["method"] in ("POST", "PUT", "PATCH", "DELETE")]
    assert {(r["resource"]) for r in writes} <= {"pods", "namespaces"}
    namespace = env.core.read_namespace(NAMESPACE)
    assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert namespace.metadata.labels["security.openshift.io/scc.podSecurityLabelSync"] == "false"

    # Again: nothing changes (the namespace exists, reports are outputs).
    again = env.playbook(TOP / "playbooks/verify.yml", inventory, "-e", f"kmod_image={env.image}")
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap(again.stdout, name)["changed"] == 0
    assert env.debug_pods() == []


@pytest.mark.lab
def test_another_booted_digest_fails_naming_node_and_both_digests(verify_lab: Lab, tmp_path: Path) -> None:
    env = verify_lab
    booted = env.image.split("@", 1)[1]
    expected = "sha256:" + "e" * 64
    wanted = env.image.split("@", 1)[0] + "@" + expected
    report_dir = tmp_path / "report"
    run = env.playbook(TOP / "playbooks/verify.yml", env.inventory(tmp_path / "inv.yml", report_dir),
                       "-e", f"kmod_image={wanted}")
    assert run.returncode != 0
    out = run.stdout
    for worker in env.nodes_of_role("worker"):
        assert re.search(rf"node {worker} booted image digest {booted} \([^)]*\), expected digest {expected}", out), out[-3000:]
    report = json.loads((report_dir / f"{env.entry['name']}.json").read_text())
    assert report["verdict"] == "fail" and report["counts"]["failed"] == 2
    assert all(n["image_ok"] is False and n["booted_digest"] == booted for n in report["nodes"])
    assert "fail" in (report_dir / "summary.txt").read_text()
    assert env.debug_pods() == []


@pytest.mark.lab
def test_a_module_missing_from_the_nodes_fails_naming_node_and_module(verify_lab: Lab, tmp_path: Path) -> None:
    env = verify_lab
    modules = [{"name": "kmodlab_core"}, {"name": "kmodlab_dep"}, {"name": "kmodlab_absent"},
               {"name": "kmodlab_optional", "load_at_boot": False}]
    report_dir = tmp_path / "report"
    run = env.playbook(TOP / "playbooks/verify.yml", env.inventory(tmp_path / "inv.yml", report_dir, modules),
                       "-e", f"kmod_image={env.image}")
    assert run.returncode != 0
    for worker in env.nodes_of_role("worker"):
        assert f"node {worker}: module kmodlab_absent is not loaded" in run.stdout, run.stdout[-3000:]
    assert "kmodlab_optional is not loaded" not in run.stdout
    report = json.loads((report_dir / f"{env.entry['name']}.json").read_text())
    assert [n["missing_modules"] for n in report["nodes"]] == [["kmodlab_absent"], ["kmodlab_absent"]]
    assert all(n["image_ok"] for n in report["nodes"])
    assert env.debug_pods() == []


@pytest.mark.lab
def test_check_mode_creates_no_pod_and_writes_no_report(verify_lab: Lab, tmp_path: Path) -> None:
    env = verify_lab
    report_dir = tmp_path / "report"
    env.requests.reset()
    run = env.playbook(TOP / "playbooks/verify.yml", env.inventory(tmp_path / "inv.yml", report_dir), "--check",
                       "-e", f"kmod_image={env.image}")
    assert run.returncode == 0, run.stdout[-4000:]
    assert "skipped" in run.stdout
    assert not report_dir.exists()
    assert [r for r in env.our_requests() if r["method"] in ("POST", "PUT", "PATCH", "DELETE")] == []


INSPECT = """\
- name: Run host commands through debug pods
  hosts: all
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Inspect
      ocp.kmod_layering.node_inspect:
        kubeconfig: "{{ kmod_kubeconfig }}"
        nodes: "{{ inspect_nodes }}"
        commands: ["uname -r", "systemctl status kubelet"]
        timeout: 8
      register: inspected
    - name: Dump
      ansible.builtin.copy:
        content: "{{ inspected | to_json }}"
        dest: "{{ dump }}"
        mode: "0644"
"""


@pytest.mark.lab
def test_commands_failures_and_timeouts_are_reported_and_every_pod_deleted(verify_lab: Lab, tmp_path: Path) -> None:
    env = verify_lab
    worker = env.nodes_of_role("worker")[0]
    playbook = tmp_path / "inspect.yml"
    playbook.write_text(INSPECT)
    dump = tmp_path / "inspected.json"
    env.requests.reset()
    run = env.playbook(playbook, env.inventory(tmp_path / "inv.yml", tmp_path / "r"),
                       "-e", json.dumps({"inspect_nodes": [worker, "node-that-does-not-exist"], "dump": str(dump)}))
    assert run.returncode == 0, run.stdout[-4000:]
    result = json.loads(dump.read_text())
    nodes = {n["name"]: n for n in result["nodes"]}
    uname, unsupported = nodes[worker]["commands"]
    assert (uname["phase"], uname["rc"], uname["stdout"]) == ("Succeeded", 0, env.lab.release(env.entry["release"])["kernel"] + "\n")
    # The lab's node answers only a few commands, as a shell would (127).
    assert (unsupported["phase"], unsupported["rc"]) == ("Failed", 127) and unsupported["error"] == "exit code 127"
    assert nodes[worker]["ok"] is False
    # No kubelet runs the pods of a node that does not exist: they time out, named.
    for command in nodes["node-that-does-not-exist"]["commands"]:
        assert command["rc"] is None and command["phase"] == "Pending"
        assert re.match(r"debug pod node-that-does-not-exist-debug-\w+-\d did not finish within 8s \(phase Pending", command["error"])
    assert result["pods_created"] == 4 and result["pods_left"] == []
    assert env.debug_pods() == []
    assert len(env.our_requests(verb="delete", resource="pods")) == 4


@pytest.mark.lab
def test_a_parameter_other_than_the_options_fails_naming_node_module_and_values(verify_lab: Lab, tmp_path: Path) -> None:
    env = verify_lab
    modules = [{"name": "kmodlab_core", "options": "greeting=hello level=2"}, {"name": "kmodlab_dep"}]
    report_dir = tmp_path / "report"
    run = env.playbook(TOP / "playbooks/verify.yml", env.inventory(tmp_path / "inv.yml", report_dir, modules),
                       "-e", f"kmod_image={env.image}")
    assert run.returncode != 0
    for worker in env.nodes_of_role("worker"):
        assert f"node {worker}: module kmodlab_core parameter greeting is 'hi', expected 'hello'" in run.stdout
    report = json.loads((report_dir / f"{env.entry['name']}.json").read_text())
    assert all(n["modules"]["kmodlab_core"]["parameters"]["level"]["ok"] for n in report["nodes"])
    assert env.debug_pods() == []
