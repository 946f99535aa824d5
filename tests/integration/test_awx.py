"""playbooks/site.yml as AWX / Ansible Automation Platform runs it, on a lab
fleet of 4 clusters (2 releases, fast nodes, started and stopped here).

- Every run goes through ansible-runner, the engine of AWX jobs: a private
  data dir, the artefacts AWX ingests (job events, the `playbook_on_stats`
  event with the set_stats data).
- Job slicing: AWX splits the inventory into slices, one job each (here:
  `--limit` slices run one after the other). The first slice builds and
  pushes one image per release; the second finds every tag in the registry
  and pushes nothing (the registry's access log says so), and its clusters
  run the very images of the first. A rerun of each slice changes nothing.
- Credentials as AWX injects them: a cluster reached only through the
  K8S_AUTH_* variables of the "OpenShift or Kubernetes API Bearer Token"
  credential, the registry only through the KMOD_REGISTRY_* variables of
  extensions/awx/credential_types/kmod_registry.yml; no credential in the
  inventory.

Ground truth comes from the lab: the registry's access log, the clusters'
MachineConfigs and nodes read from their API servers.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, Iterator

import ansible_runner
import kubernetes
import pytest
import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from kmodlab import cli, cluster, state
from kmodlab.state import LabState

pytestmark = pytest.mark.lab

TOP = Path(__file__).resolve().parents[2]
KMODS = TOP / "tests" / "fixtures" / "kmods"
SITE = TOP / "playbooks" / "site.yml"
CREDENTIAL_TYPE = TOP / "extensions" / "awx" / "credential_types" / "kmod_registry.yml"
ANN = "machineconfiguration.openshift.io/"
# podman's private auth file (ansible.builtin.tempfile on the controller).
AUTH_TMP = Path(os.environ.get("TMPDIR") or "/tmp") / "ansible.*.kmod-auth.json"
# Credentials a developer's shell may carry: a job has only what AWX injects.
AMBIENT = ("KUBECONFIG", "K8S_AUTH_KUBECONFIG", "K8S_AUTH_HOST", "K8S_AUTH_API_KEY", "K8S_AUTH_SSL_CA_CERT",
           "K8S_AUTH_VERIFY_SSL", "REGISTRY_AUTH_FILE", "KMOD_REGISTRY_AUTH_FILE", "KMOD_REGISTRY_HOST",
           "KMOD_REGISTRY_USERNAME", "KMOD_REGISTRY_PASSWORD", "KMOD_REGISTRY_CA_FILE")


class Fleet:
    def __init__(self, lab: LabState, clusters: list[dict[str, Any]], workdir: Path) -> None:
        self.lab = lab
        self.clusters = clusters
        self.names = [c["name"] for c in clusters]
        self.workdir = workdir
        self.repository = f"{lab.registry['host']}/kmod-awx/{uuid.uuid4().hex[:8]}"

    def inventory(self, name: str, hosts: list[str], *, credentials: bool = True,
                  repository: str | None = None) -> Path:
        """An inventory of `hosts` in the kmod_* vocabulary; without
        `credentials`, nothing in it reaches a cluster or a registry."""
        fleet_vars: dict[str, Any] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "kmod_image_repository": repository or self.repository,
            "kmod_cache_dir": str(self.lab.root / "cache"),
            "kmod_report_dir": str(self.workdir / f"report-{name}"),
            "kmod_rollout_progress_file": str(self.workdir / "rollout-progress.log"),
            # The boot test gate has tests of its own; it is not what is tested here.
            "kmod_boot_test": False,
            "kmod_verify_check_parameters": False,
            "kmod_modules": [
                {"name": "kmodlab_core", "source": {"path": str(KMODS / "kmodlab_core")}},
                {"name": "kmodlab_dep", "source": {"path": str(KMODS / "kmodlab_dep")}},
            ],
        }
        if credentials:
            fleet_vars["kmod_registry_auth_file"] = self.lab.registry["auth_file"]
            fleet_vars["kmod_registry_ca_file"] = self.lab.ca_file
        entries = {c["name"]: c for c in self.clusters}
        host_vars = {
            host: ({"kmod_kubeconfig": entries[host]["kubeconfig"]} if credentials else {}) | {"kmod_pools": ["worker"]}
            for host in hosts
        }
        path = self.workdir / f"inventory-{name}.yml"
        path.write_text(yaml.safe_dump({"all": {"vars": fleet_vars, "children": {
            "lab_clusters": {"hosts": host_vars}, "canary": {"hosts": {hosts[0]: {}}}}}}))
        return path

    def run(self, ident: str, inventory: Path, *, limit: str = "", env: dict[str, str] | None = None) -> Job:
        """site.yml as an AWX job: ansible-runner with a private data dir."""
        return self.run_together([(ident, inventory, limit, env)])[0]

    def run_together(self, jobs: list[tuple[str, Path, str, dict[str, str] | None]]) -> list[Job]:
        """Jobs at the same time, as AWX runs the slices of a sliced job."""
        private = self.workdir / "runner"
        private.mkdir(exist_ok=True)
        started = []
        saved = {name: os.environ.pop(name) for name in AMBIENT if name in os.environ}
        try:
            for ident, inventory, limit, env in jobs:
                envvars = {"ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", **(env or {})}
                thread, runner = ansible_runner.run_async(
                    private_data_dir=str(private), ident=ident, playbook=str(SITE), inventory=str(inventory),
                    limit=limit or None, envvars=envvars, quiet=True, timeout=900,
                )
                started.append((thread, runner, ident))
        finally:
            os.environ.update(saved)
        for thread, _runner, _ident in started:
            thread.join()
        return [Job(runner, private / "artifacts" / ident) for _thread, runner, ident in started]

    def registry_requests(self, method: str, repository: str | None = None) -> int:
        """Requests on the manifests of a repository (default: the fleet's),
        from the registry's access log."""
        path = (repository or self.repository).split("/", 1)[1]
        pattern = re.compile(rf'"{method} /v2/{re.escape(path)}/manifests/')
        logs = self.lab.layout.logs.glob("*registry*.log")
        return sum(len(pattern.findall(p.read_text(errors="replace"))) for p in logs)

    def machineconfig_image(self, name: str) -> str:
        entry = next(c for c in self.clusters if c["name"] == name)
        client = kubernetes.dynamic.DynamicClient(kubernetes.config.new_client_from_config(config_file=entry["kubeconfig"]))
        mcs = client.resources.get(api_version="machineconfiguration.openshift.io/v1", kind="MachineConfig")
        ours = mcs.get(name="99-kmod-layering-worker").to_dict()
        nodes = client.resources.get(api_version="v1", kind="Node").get().to_dict()["items"]
        workers = [n for n in nodes if "node-role.kubernetes.io/worker" in n["metadata"]["labels"]]
        image = ours["spec"]["osImageURL"]
        for node in workers:
            annotations = node["metadata"]["annotations"]
            assert annotations[ANN + "state"] == "Done", (name, node["metadata"]["name"])
            assert annotations["kmodlab.io/booted-digest"] == image.split("@", 1)[1], (name, node["metadata"]["name"])
        return image


class Job:
    """An ansible-runner job and the artefacts AWX would ingest from it."""

    def __init__(self, runner: Any, artifacts: Path) -> None:
        self.runner = runner
        self.artifacts = artifacts
        self.events = [json.loads(p.read_text()) for p in sorted(
            (artifacts / "job_events").glob("*.json"), key=lambda p: int(p.name.split("-", 1)[0]))]
        self.stdout = (artifacts / "stdout").read_text(errors="replace") if (artifacts / "stdout").exists() else ""

    def explain(self) -> str:
        return f"status={self.runner.status} rc={self.runner.rc}\n{self.stdout[-6000:]}"

    def succeeded(self) -> bool:
        return self.runner.status == "successful" and self.runner.rc == 0

    def artifact_data(self) -> dict[str, Any]:
        """The set_stats data, as AWX reads it from the playbook_on_stats event."""
        stats = [e for e in self.events if e.get("event") == "playbook_on_stats"]
        assert len(stats) == 1, self.explain()
        return stats[0]["event_data"].get("artifact_data") or {}

    def changed(self) -> dict[str, int]:
        return {host: count for host, count in (self.runner.stats or {}).get("changed", {}).items() if count}


@pytest.fixture(scope="module")
def fleet(lab_registry: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    lab = cli.up(lab_registry.root, releases=cli.parse_versions(None))
    versions = [r["version"] for r in lab.releases][:2]
    assert len(versions) == 2, "the lab publishes two releases"
    with state.locked(lab.root) as current:
        entries = cluster.start_clusters(current, 4, versions, workers=1, masters=1, node_mode="fast")
    try:
        yield Fleet(lab, entries, tmp_path_factory.mktemp("awx"))
    finally:
        with state.locked(lab.root) as current:
            for entry in entries:
                cluster.stop_cluster(current, entry["name"])


def test_job_slices_converge_on_their_own_and_share_the_builds(fleet: Fleet) -> None:
    """AWX job slicing with 2 slices of the 4-cluster fleet, each slice a job
    run by ansible-runner; slice 1's job artefacts are what AWX shows."""
    a1, b1, a2, b2 = fleet.names
    releases = {c["name"]: c["release"] for c in fleet.clusters}
    assert releases[a1] == releases[a2] != releases[b1] == releases[b2]
    inventory = fleet.inventory("fleet", fleet.names)
    # Slice 1 of 2 and slice 2 of 2, each with a cluster of either release.
    slices = [[a1, b1], [a2, b2]]

    pushes = fleet.registry_requests("PUT")
    first = fleet.run("slice1", inventory, limit=",".join(slices[0]))
    assert first.succeeded(), first.explain()
    assert fleet.registry_requests("PUT") - pushes == 2, "slice 1 pushes one image per release"
    assert_job_artefacts(fleet, first, slices[0])

    pushes, checks = fleet.registry_requests("PUT"), fleet.registry_requests("HEAD")
    second = fleet.run("slice2", inventory, limit=",".join(slices[1]))
    assert second.succeeded(), second.explain()
    assert fleet.registry_requests("PUT") == pushes, "slice 2 found every image in the registry"
    assert fleet.registry_requests("HEAD") > checks, "slice 2 asked the registry for its tags"
    assert set(second.artifact_data()["kmod_rollout_clusters"]) == set(slices[1])
    # Same release, same image: the second slice runs what the first built.
    images = {name: fleet.machineconfig_image(name) for name in fleet.names}
    assert images[a1] == images[a2] and images[b1] == images[b2] and images[a1] != images[b1]
    assert all(i.startswith(fleet.repository + "@sha256:") for i in images.values())

    # Both slices again, at the same time as AWX runs them: each converged on
    # its own, nothing changes, nothing is pushed.
    pushes = fleet.registry_requests("PUT")
    again = fleet.run_together([(f"slice{i}-again", inventory, ",".join(hosts), None)
                                for i, hosts in enumerate(slices, 1)])
    for job, hosts in zip(again, slices):
        assert job.succeeded(), job.explain()
        assert set(job.runner.stats["ok"]) == set(hosts)
        assert job.changed() == {}, job.changed()
    assert fleet.registry_requests("PUT") == pushes


def assert_job_artefacts(fleet: Fleet, job: Job, clusters: list[str]) -> None:
    """What AWX ingests from an ansible-runner job: rc and status files, the
    set_stats data on the playbook_on_stats event, per-cluster results."""
    assert (job.artifacts / "rc").read_text().strip() == "0"
    assert (job.artifacts / "status").read_text().strip() == "successful"

    data = job.artifact_data()
    rollout = data["kmod_rollout_clusters"]
    assert set(rollout) == set(clusters)
    for name in clusters:
        assert rollout[name]["done"] is True
        assert rollout[name]["image"] == fleet.machineconfig_image(name)
        assert rollout[name]["changed"], "the first run writes each cluster's MachineConfig"
    verified = data["kmod_verify_clusters"]
    assert {name: verified[name]["verdict"] for name in clusters} == dict.fromkeys(clusters, "pass")
    assert int(data["kmod_verify_totals"]["clusters"]) == len(clusters)

    # Per-cluster results: job events for each cluster, and the verify
    # role's report files.
    hosts_ok = {e["event_data"].get("host") for e in job.events if e.get("event") == "runner_on_ok"}
    assert set(clusters) <= hosts_ok
    assert job.runner.stats["failures"] == {} and set(job.runner.stats["ok"]) == set(clusters)
    report_dir = fleet.workdir / "report-fleet"
    for name in clusters:
        report = json.loads((report_dir / f"{name}.json").read_text())
        assert report["cluster"] == name and report["verdict"] == "pass", report
        assert report["expected_image"] == rollout[name]["image"]


def test_credentials_only_from_the_awx_injected_environment(fleet: Fleet) -> None:
    """One cluster job with the two AWX credentials and an inventory without
    any credential: K8S_AUTH_* reach the cluster, KMOD_REGISTRY_* the
    registry (resolve reads, podman builds and pushes)."""
    target = next(c for c in fleet.clusters if c["name"] == fleet.names[-1])
    # A repository of its own: the image is not there yet, so it is pushed.
    repository = f"{fleet.repository}-env"
    inventory = fleet.inventory("env", [target["name"]], credentials=False, repository=repository)
    hostvars = yaml.safe_load(inventory.read_text())["all"]
    assert not {k for k in hostvars["vars"] if k.startswith(("kmod_registry", "kmod_kube", "kmod_api"))}

    # What AWX injects: the OpenShift credential's variables, and those the
    # credential type's injectors declare (files as AWX writes them).
    cred_type = yaml.safe_load(CREDENTIAL_TYPE.read_text())
    ca_file = fleet.workdir / "injected-ca.pem"
    ca_file.write_text(Path(fleet.lab.ca_file).read_text())
    inputs = {"host": fleet.lab.registry["host"], "username": fleet.lab.registry["username"],
              "password": fleet.lab.registry["password"], "ca_cert": ca_file.read_text()}
    env = {
        "K8S_AUTH_HOST": target["api_url"],
        "K8S_AUTH_API_KEY": target["token"],
        "K8S_AUTH_VERIFY_SSL": "True",
        "K8S_AUTH_SSL_CA_CERT": fleet.lab.ca_file,
        **render_injectors(cred_type, inputs, {"ca_cert": str(ca_file)}),
    }
    assert set(env) >= {"KMOD_REGISTRY_HOST", "KMOD_REGISTRY_USERNAME", "KMOD_REGISTRY_PASSWORD", "KMOD_REGISTRY_CA_FILE"}

    auth_files = set(AUTH_TMP.parent.glob(AUTH_TMP.name))
    job = fleet.run("env-credentials", inventory, env=env)
    assert job.succeeded(), job.explain()
    assert fleet.registry_requests("PUT", repository) == 1, "the image was pushed with the injected credentials"
    assert fleet.machineconfig_image(target["name"]).startswith(repository + "@sha256:")
    data = job.artifact_data()
    assert data["kmod_verify_clusters"][target["name"]]["verdict"] == "pass"
    # The secret never reaches the job's output or events.
    assert fleet.lab.registry["password"] not in job.stdout
    assert not any(fleet.lab.registry["password"] in json.dumps(e) for e in job.events)
    # podman's private auth file was removed.
    assert set(AUTH_TMP.parent.glob(AUTH_TMP.name)) == auth_files


def render_injectors(cred_type: dict[str, Any], inputs: dict[str, str], files: dict[str, str]) -> dict[str, str]:
    """The environment AWX builds from a credential type's injectors: Jinja
    over the inputs, `tower.filename.<name>` for the files it wrote."""
    environment = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    context = dict(inputs, tower={"filename": files})
    rendered = {}
    for name, template in cred_type["injectors"].get("env", {}).items():
        rendered[name] = environment.from_string(template).render(**context)
    for name, template in cred_type["injectors"].get("file", {}).items():
        key = name.split(".", 1)[1]
        assert Path(files[key]).read_text() == environment.from_string(template).render(**context)
    return rendered
