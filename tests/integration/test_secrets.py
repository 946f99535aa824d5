"""No secret in the output of a whole run at -vvv; TLS verified by default.

site.yml runs end to end (resolve, build, push, rollout, verify; fast nodes)
on a lab cluster of its own (started and stopped here) at -vvv, with the Ansible log file on. None of the
secrets the run handles may appear in stdout, stderr, the log file, or any
file the run writes (kmod-report, rollout progress file): the registry
password, its base64 user:password form, the cluster's pull secret (base64
and decoded), the API bearer token.

Then the same inputs without the lab CA: the registry and the API refuse the
lab's certificates (validate_certs is on unless turned off), and the
registry's message says how to give a CA.

pytest tests/integration/test_secrets.py --lab-node-mode fast
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from kmodlab import apiserver, cluster
from kmodlab.state import LabState

pytestmark = pytest.mark.lab

CHECKOUT = Path(__file__).resolve().parents[2]


def run(playbook: str, inventory: Path, log: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOG_PATH=str(log),
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    return subprocess.run(["ansible-playbook", "-i", str(inventory), str(CHECKOUT / "playbooks" / playbook), *args],
                          env=env, cwd=CHECKOUT, capture_output=True, text=True, timeout=1500, check=False)


def pull_secret(entry: dict[str, Any], ca_file: str) -> str:
    request = urllib.request.Request(entry["api_url"] + "/api/v1/namespaces/openshift-config/secrets/pull-secret",
                                     headers={"Authorization": "Bearer " + entry["token"]})
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=ca_file), timeout=30) as resp:
        return str(json.loads(resp.read())["data"][".dockerconfigjson"])


def secrets_of(lab: LabState, entry: dict[str, Any]) -> dict[str, str]:
    registry = lab.registry
    basic = base64.b64encode(f"{registry['username']}:{registry['password']}".encode()).decode()
    encoded = pull_secret(entry, str(lab.ca_file))
    decoded = base64.b64decode(encoded).decode()
    found = {
        "registry password": registry["password"],
        "registry user:password base64": basic,
        "pull secret (base64)": encoded,
        "pull secret (decoded)": decoded,
        "pull secret (compact JSON)": json.dumps(json.loads(decoded), separators=(",", ":")),
        "API bearer token": entry["token"],
    }
    for auth in json.loads(decoded)["auths"].values():
        found[f"pull secret auth {auth['auth'][:4]}..."] = auth["auth"]
    return found


@pytest.fixture(scope="module")
def entry(lab: LabState) -> Any:
    (started,) = cluster.start_clusters(lab, 1, [lab.releases[0]["version"]], workers=2, masters=1, node_mode="fast")
    try:
        yield started
    finally:
        cluster.stop_cluster(lab, started["name"])


def inventory(lab: LabState, entry: dict[str, Any], work: Path, **overrides: Any) -> Path:
    base = yaml.safe_load(Path(lab.inventory).read_text())
    fleet = base["all"]["vars"]
    fleet.update(
        kmod_image_repository=f"{lab.registry['host']}/kmodtest/secrets-{uuid.uuid4().hex[:8]}",
        kmod_cache_dir=str(work / "cache"),
        kmod_report_dir=str(work / "report"),
        kmod_rollout_progress_file=str(work / "progress.log"),
        kmod_boot_test=False,  # fast nodes; the boot test gate has tests of its own
        kmod_verify_nodes="always",
    )
    fleet.update(overrides)
    host = {"kmod_kubeconfig": entry["kubeconfig"], "kmod_pools": ["worker"]}
    path = work / f"inventory-{uuid.uuid4().hex[:6]}.yml"
    path.write_text(yaml.safe_dump({"all": {"vars": fleet, "hosts": {entry["name"]: host}}}))
    return path


def test_a_whole_run_at_vvv_shows_no_secret(lab: LabState, entry: dict[str, Any], tmp_path: Path) -> None:
    secrets = secrets_of(lab, entry)
    log = tmp_path / "ansible.log"
    proc = run("site.yml", inventory(lab, entry, tmp_path), log, "-vvv")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    (tmp_path / "run.log").write_text(proc.stdout + proc.stderr)
    assert "module_args" in proc.stdout  # really -vvv: module invocations are shown
    # Secrets did go through module options, masked (no_log).
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in proc.stdout or "********" in proc.stdout
    written = {"stdout": proc.stdout, "stderr": proc.stderr, "ansible.log": log.read_text()}
    for path in [tmp_path / "progress.log", *(tmp_path / "report").glob("*")]:
        written[path.name] = path.read_text()
    assert "progress.log" in written and f"{entry['name']}.json" in written
    leaks = [f"{what} in {where}" for what, secret in secrets.items() for where, text in written.items()
             if secret in text]
    assert leaks == []


def test_tls_is_verified_unless_turned_off(lab: LabState, entry: dict[str, Any], tmp_path: Path) -> None:
    writes_before = apiserver.RequestLogClient(entry["api_url"], entry["token"], lab.ca_file).writes()
    # The registry: no CA given.
    proc = run("resolve.yml", inventory(lab, entry, tmp_path, kmod_registry_ca_file="", kmod_release=entry["release"],
                                        kmod_release_registry=lab.registry["host"]), tmp_path / "a.log")
    assert proc.returncode != 0
    assert "TLS verification of https://" + lab.registry["host"] in proc.stdout, proc.stdout[-3000:]
    assert "certificate verify failed" in proc.stdout
    assert "kmod_registry_ca_file" in proc.stdout  # says how to give the CA
    # The API: a kubeconfig without the CA.
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "no-ca.kubeconfig", entry["api_url"], None, entry["token"],
                                            entry["name"])
    proc = run("resolve.yml", inventory(lab, entry, tmp_path), tmp_path / "b.log",
               "-e", f"kmod_kubeconfig={kubeconfig}", "-e", "kmod_api_retries=0")
    assert proc.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in proc.stdout or "certificate verify failed" in proc.stdout, proc.stdout[-3000:]
    assert apiserver.RequestLogClient(entry["api_url"], entry["token"], lab.ca_file).writes() == writes_before
