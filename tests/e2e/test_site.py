"""playbooks/site.yml end to end on a lab fleet: 2 clusters on 2 releases,
2 workers each, nodes that really boot the layered image in qemu.

Everything asserted comes from the lab's ground truth, not from what the
playbook says about itself: the nodes' boots (modules loaded, parameter
values, booted digest), the registry (manifests pushed, digests), and the API
servers' request logs (writes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from kmodlab import releases
from kmodlab.apiserver import CRD_DIR, LAB_CONTROLLER_AGENTS, RequestLogClient
from kmodlab.layered import manifest_request
from kmodlab.schema import StructuralSchema

TOP = Path(__file__).resolve().parents[2]
ANN = "machineconfiguration.openshift.io/"
KMOD_REPO = "kmod-layering/rhcos-kmods"
# Writes by the lab's own controllers are the cluster reacting, not us.
LAB_CONTROLLERS = LAB_CONTROLLER_AGENTS

pytestmark = [pytest.mark.lab, pytest.mark.qemu]


def site(lab: Any, *args: str, json_events: bool = False) -> subprocess.CompletedProcess[str]:
    """site.yml over the lab fleet; json_events: stdout is the ansible.posix.json
    record of every task result (see module_runs)."""
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    if json_events:
        env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    return subprocess.run(
        ["ansible-playbook", "-i", lab.inventory, str(TOP / "playbooks/site.yml"), *args],
        env=env, capture_output=True, text=True, timeout=1800, check=False,
    )


def module_runs(run: subprocess.CompletedProcess[str], action: str) -> int:
    """How many times the module `action` ran (results not skipped), from the
    json callback's record of the run (whatever the tasks are called)."""
    report = json_report(run)
    return sum(1 for play in report["plays"] for task in play["tasks"]
               for result in task["hosts"].values()
               if result.get("action") == action and not result.get("skipped"))


def json_report(run: subprocess.CompletedProcess[str]) -> Any:
    """The ansible.posix.json callback's record of a run (its stdout)."""
    return json.JSONDecoder().raw_decode(run.stdout[run.stdout.index("{"):])[0]


def failed_tasks(run: subprocess.CompletedProcess[str]) -> str:
    """What failed in a json-callback run (rescued failures too): each task,
    host and message, with stderr; the end of stdout when it is not json."""
    try:
        report = json_report(run)
    except ValueError:
        report = None
    if not isinstance(report, dict) or "plays" not in report:
        return run.stdout[-8000:] + run.stderr[-2000:]
    lines = []
    for play in report["plays"]:
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                for one in result.get("results") or [result]:
                    if isinstance(one, dict) and one.get("failed"):
                        stderr = str(one.get("stderr", ""))[-3000:]
                        lines.append("%s [%s]: %s\n%s" % (task["task"]["name"], host, one.get("msg", ""), stderr))
    return "\n".join(lines) + "\n" + run.stderr[-2000:]


def converged_play(lab: Any, extra_vars: dict[str, Any], extra_inventory: dict[str, Any] | None = None,
                   role: str = "ocp.kmod_layering.plan", tasks_from: str = "main") -> subprocess.CompletedProcess[str]:
    """Only site.yml's first play (the plan stage; or the verify role's
    deprecated `converged` entry point, which runs it)."""
    play = Path(lab.inventory).parent / "converged-only.yml"
    play.write_text(yaml.safe_dump([{
        "name": "Converged check", "hosts": "all", "connection": "local", "gather_facts": False,
        "tasks": [
            {"ansible.builtin.include_role": {"name": role, "tasks_from": tasks_from}},
            {"ansible.builtin.debug": {
                "msg": "{{ inventory_hostname }} converged={{ inventory_hostname in groups['kmod_converged'] | default([]) }}"}},
        ]}]))
    inventories = ["-i", lab.inventory]
    if extra_inventory:
        extra = Path(lab.inventory).parent / "converged-extra-inventory.yml"
        extra.write_text(yaml.safe_dump(extra_inventory))
        inventories += ["-i", str(extra)]
    return subprocess.run(
        ["ansible-playbook", *inventories, str(play), "-e", json.dumps(extra_vars)],
        env=dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1"),
        capture_output=True, text=True, timeout=600, check=False,
    )


def recap(run: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    hosts = {}
    for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", run.stdout, re.M):
        hosts[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return hosts


def manifest_pushes(lab: Any, repository: str = KMOD_REPO) -> int:
    """Manifest PUTs into our repository, from the registry's access log."""
    logs = lab.layout.logs
    pattern = re.compile(rf'"PUT /v2/{re.escape(repository)}/manifests/')
    return sum(len(pattern.findall(p.read_text(errors="replace"))) for p in logs.glob("*registry*.log"))


def our_writes(lab: Any) -> dict[str, int]:
    """Writes to each cluster's API by anything but the lab's controllers."""
    counts = {}
    for cluster in lab.clusters:
        log = RequestLogClient(cluster["api_url"], cluster["token"], lab.ca_file)
        records = log.records()
        counts[cluster["name"]] = sum(
            1 for r in records
            if r.get("method") in ("POST", "PUT", "PATCH", "DELETE")
            # A server-side dry run (check mode) stores nothing.
            and (r.get("query") or {}).get("dryRun") != "All"
            and not str(r.get("user_agent", "")).startswith(LAB_CONTROLLERS)
        )
    return counts


def our_user_agents(lab: Any) -> dict[str, set[str]]:
    """The product's modules that sent requests to each cluster (the first
    word of the User-Agent: ocp.kmod_layering.<module>, or kubernetes.core's)."""
    agents = {}
    for cluster in lab.clusters:
        records = RequestLogClient(cluster["api_url"], cluster["token"], lab.ca_file).records()
        agents[cluster["name"]] = {
            str(r.get("user_agent", "")).split(" ", 1)[0] for r in records
            if not str(r.get("user_agent", "")).startswith(LAB_CONTROLLERS)}
    return agents


def api(cluster: dict[str, Any]) -> kubernetes.dynamic.DynamicClient:
    return kubernetes.dynamic.DynamicClient(
        kubernetes.config.new_client_from_config(config_file=cluster["kubeconfig"]))


def reset_request_logs(lab: Any) -> None:
    for cluster in lab.clusters:
        RequestLogClient(cluster["api_url"], cluster["token"], lab.ca_file).reset()


@pytest.fixture(scope="module")
def fleet(lab: Any) -> Any:
    assert len(lab.clusters) == 2
    assert len({c["release"] for c in lab.clusters}) == 2, "the fleet spans two releases"
    return lab


def test_check_mode_writes_nothing_anywhere(fleet: Any) -> None:
    reset_request_logs(fleet)
    pushes = manifest_pushes(fleet)
    run = site(fleet, "--check", json_events=True)
    assert run.returncode == 0, failed_tasks(run)
    # The full path for both clusters (nothing rolled out yet), and the
    # module sources fetched once for the run (plan, resolve, build).
    assert module_runs(run, "ocp.kmod_layering.layered_image_plan") == 1
    assert module_runs(run, "ocp.kmod_layering.kmod_sources") == 1
    assert our_writes(fleet) == {c["name"]: 0 for c in fleet.clusters}
    assert manifest_pushes(fleet) == pushes


def test_site_loads_the_modules_on_every_worker_and_a_rerun_changes_nothing(fleet: Any) -> None:
    pushes_before = manifest_pushes(fleet)
    run = site(fleet, json_events=True)
    assert run.returncode == 0, failed_tasks(run)
    # The module sources are fetched once per run, by the plan stage, and
    # handed to resolve and build (which built: the plan ran).
    assert module_runs(run, "ocp.kmod_layering.layered_image_plan") == 1
    assert module_runs(run, "ocp.kmod_layering.kmod_sources") == 1

    # One build and one push per distinct build key: the two releases.
    assert manifest_pushes(fleet) - pushes_before == 2

    crd = yaml.safe_load((CRD_DIR / "0000_80_machine-config_01_machineconfigs.crd.yaml").read_text())
    mc_schema = StructuralSchema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    inventory = yaml.safe_load(Path(fleet.inventory).read_text())
    modules = inventory["all"]["vars"]["kmod_modules"]
    expected_params = dict(p.split("=", 1) for p in modules[0]["options"].split())
    booted_digests = set()
    node_boots: dict[str, list[dict[str, Any]]] = {}
    for cluster in fleet.clusters:
        client = api(cluster)
        nodes = client.resources.get(api_version="v1", kind="Node")
        workers = [n for n in nodes.get().to_dict()["items"]
                   if "node-role.kubernetes.io/worker" in n["metadata"]["labels"]]
        assert len(workers) == 2
        mcs = client.resources.get(api_version="machineconfiguration.openshift.io/v1", kind="MachineConfig")
        ours = [m for m in mcs.get().to_dict()["items"]
                if m["metadata"].get("labels", {}).get(ANN + "role") == "worker"
                and (m.get("spec") or {}).get("osImageURL", "").startswith(f"{fleet.registry['host']}/{KMOD_REPO}@sha256:")]
        assert len(ours) == 1, [m["metadata"]["name"] for m in ours]
        machineconfig = ours[0]
        assert mc_schema.validate(machineconfig) == []
        image = machineconfig["spec"]["osImageURL"]
        release = releases.by_version(cluster["release"])
        for node in workers:
            annotations = node["metadata"]["annotations"]
            boot = json.loads(annotations["kmodlab.io/boot"])
            assert annotations[ANN + "state"] == "Done"
            assert boot["mode"] == "qemu" and boot["kernel"] == release.kernel
            assert {"kmodlab_core", "kmodlab_dep"} <= set(boot["loaded"]), boot
            assert boot["params"]["kmodlab_core"] == expected_params, boot["params"]
            assert annotations["kmodlab.io/booted-digest"] == image.split("@", 1)[1]
            booted_digests.add(annotations["kmodlab.io/booted-digest"])
            node_boots.setdefault(annotations["kmodlab.io/booted-digest"], []).append(boot)
    assert len(booted_digests) == 2, "each release booted its own image"

    # The product's boot test (image_boot_test, its verdict kept by digest)
    # and the lab's nodes (kmodlab.nodeboot, their own initramfs and /init)
    # booted the same images each their own way: they must agree on what
    # loads and with which parameters.
    verdict_dir = Path(inventory["all"]["vars"]["kmod_cache_dir"]) / "boot-tests"
    for digest, boots in node_boots.items():
        verdicts = [json.loads(p.read_text()) for p in verdict_dir.glob(digest.split(":", 1)[1] + "-*.json")]
        assert verdicts, f"no boot test verdict for {digest} in {verdict_dir}"
        for verdict in verdicts:
            for boot in boots:
                assert set(verdict["loaded"]) == set(boot["loaded"]), (verdict, boot)
                assert {m: verdict["params"].get(m, {}) for m in boot["loaded"]} == {
                    m: boot["params"].get(m, {}) for m in boot["loaded"]}, (verdict, boot)

    # Converged: a rerun builds nothing, pushes nothing, writes nothing.
    reset_request_logs(fleet)
    pushes = manifest_pushes(fleet)
    rerun = site(fleet)
    assert rerun.returncode == 0, failed_tasks(rerun)
    assert {host: counts["changed"] for host, counts in recap(rerun).items()} == {
        host: 0 for host in recap(rerun)}
    assert manifest_pushes(fleet) == pushes
    assert our_writes(fleet) == {c["name"]: 0 for c in fleet.clusters}
    # ... and only reads once: every request of ours came from the one
    # convergence_check per cluster (no resolve, no rollout, no verify).
    assert our_user_agents(fleet) == {c["name"]: {"ocp.kmod_layering.convergence_check"} for c in fleet.clusters}
    for cluster in fleet.clusters:
        report = json.loads((TOP / "kmod-report" / f"{cluster['name']}.json").read_text())
        assert report["verdict"] == "pass" and report["method"] == "mco_state"
        assert report["counts"] == {"nodes": 2, "passed": 2, "failed": 0}

    # Changed module options: not converged any more, for either cluster,
    # and the run says why (site.yml's first play alone: the entry point).
    changed = [dict(modules[0], options=modules[0]["options"] + " extra=1")] + modules[1:]
    check = converged_play(fleet, {"kmod_modules": changed}, role="ocp.kmod_layering.verify", tasks_from="converged")
    assert check.returncode == 0, check.stdout[-8000:] + check.stderr[-2000:]
    for cluster in fleet.clusters:
        assert re.search(rf"Cluster {cluster['name']}: full run \(pool worker: MachineConfig \S+: "
                         r"the module sources, the build recipe or the signing certificate changed", check.stdout), check.stdout[-5000:]
        assert f"{cluster['name']} converged=False" in check.stdout
    assert our_writes(fleet) == {c["name"]: 0 for c in fleet.clusters}

    # The image gone from the registry (new nodes could not pull it): that
    # cluster takes the full path, which pushes it again; the other one is
    # still converged. The manifest is put back afterwards.
    gone, kept = fleet.clusters
    image = json.loads((TOP / "kmod-report" / f"{gone['name']}.json").read_text())["expected_image"]
    manifest = manifest_request(fleet, image)
    manifest_request(fleet, image, method="DELETE")
    try:
        check = converged_play(fleet, {})
        assert check.returncode == 0, check.stdout[-8000:] + check.stderr[-2000:]
        assert re.search(rf"Cluster {gone['name']}: full run \(the image {re.escape(image)} is no longer in the registry\)",
                         check.stdout), check.stdout[-5000:]
        assert f"{gone['name']} converged=False" in check.stdout
        assert f"{kept['name']} converged=True" in check.stdout
    finally:
        manifest_request(fleet, image, method="PUT", body=manifest)

    # One module run checks the whole fleet: a cluster that cannot be reached
    # takes the full path, with the reason, and the others are still checked.
    check = converged_play(fleet, {}, {"all": {"hosts": {"lab-gone": {
        "kmod_api_url": "https://127.0.0.1:1", "kmod_api_key": "not-a-real-token"}}}})
    assert check.returncode == 0, check.stdout[-8000:] + check.stderr[-2000:]
    assert re.search(r"Cluster lab-gone: full run \(Cluster lab-gone: could not talk to the API: .*\)", check.stdout), \
        check.stdout[-5000:]
    assert "lab-gone converged=False" in check.stdout
    for cluster in fleet.clusters:
        assert f"{cluster['name']} converged=True" in check.stdout
