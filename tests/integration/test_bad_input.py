"""Bad input to playbooks/site.yml: each fails before the first write.

One lab fleet (two clusters on two releases, fast nodes) is shared by every
case. Each case runs the real site.yml with one bad input and asserts:

- the run fails (rc != 0) with a message that names the input (and the
  cluster, when the input is a cluster's) and says what to do;
- nothing was written: no POST/PUT/PATCH/DELETE by anything but the lab's
  own controllers in the request log of every lab cluster, no request that
  changes the registry (PUT/POST/PATCH/DELETE under /v2/) in the registry's
  access log, and no podman build started.

pytest tests/integration/test_bad_input.py --lab-clusters 2 --lab-node-mode fast
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from kmodlab.apiserver import LAB_CONTROLLER_AGENTS, RequestLogClient
from kmodlab.layered import FIXTURE_KMODS
from kmodlab.state import LabState

pytestmark = pytest.mark.lab

CHECKOUT = Path(__file__).resolve().parents[2]
# Writes by the lab's own controllers are the cluster reacting, not us.
LAB_CONTROLLERS = LAB_CONTROLLER_AGENTS
REGISTRY_WRITE = re.compile(r'"(PUT|POST|PATCH|DELETE) /v2/')
BUILD_TASK = "Build the images (compile"


@dataclass
class Work:
    """What a case may need besides the inventory: scratch files."""

    tmp: Path
    lab: LabState
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class Case:
    id: str
    # Mutates the inventory (all.vars, and hosts[<name>]) for this case.
    change: Callable[[dict[str, Any], dict[str, dict[str, Any]], Work], None]
    # Every pattern must be found (re.search) in the failure message.
    expect: list[str]
    extra_args: list[str] = field(default_factory=list)


def _module(name: str, **source: Any) -> dict[str, Any]:
    return {"name": name, "source": source or {"path": str(FIXTURE_KMODS / name)}}


def _set(key: str, value: Any) -> Callable[[dict[str, Any], dict[str, dict[str, Any]], Work], None]:
    def change(fleet_vars: dict[str, Any], hosts: dict[str, dict[str, Any]], work: Work) -> None:
        fleet_vars[key] = value
    return change


def _set_host(host: str, key: str, value: Callable[[Work], Any] | Any) -> Callable[..., None]:
    def change(fleet_vars: dict[str, Any], hosts: dict[str, dict[str, Any]], work: Work) -> None:
        hosts[host][key] = value(work) if callable(value) else value
    return change


def _modules(modules: Callable[[Work], list[dict[str, Any]]]) -> Callable[..., None]:
    def change(fleet_vars: dict[str, Any], hosts: dict[str, dict[str, Any]], work: Work) -> None:
        fleet_vars["kmod_modules"] = modules(work)
    return change


def _garbage_kubeconfig(work: Work) -> str:
    path = work.tmp / "garbage-kubeconfig"
    path.write_text("this is not: [a kubeconfig\n")
    return str(path)


def _auth_without_the_registry(work: Work) -> str:
    path = work.tmp / "auth-other-registry.json"
    path.write_text('{"auths": {"registry.example.com": {"auth": "dXNlcjpwYXNz"}}}\n')
    return str(path)


def _unknown_release(fleet_vars: dict[str, Any], hosts: dict[str, dict[str, Any]], work: Work) -> None:
    # A well-formed version the (lab's) release registry does not have.
    hosts["lab-b"]["kmod_release"] = "4.99.1"
    fleet_vars["kmod_release_registry"] = work.lab.registry["host"]


def _cache_dir_is_a_file(fleet_vars: dict[str, Any], hosts: dict[str, dict[str, Any]], work: Work) -> None:
    # The release lookup cannot cache what it reads: the module fails with
    # an OSError of its own, which a role that reports verdicts must not hide.
    path = work.tmp / "cache-is-a-file"
    path.write_text("")
    fleet_vars["kmod_cache_dir"] = str(path)


def _auth_case(fleet_vars: dict[str, Any], hosts: dict[str, dict[str, Any]], work: Work) -> None:
    fleet_vars["kmod_registry_auth_file"] = _auth_without_the_registry(work)


def _git_repo(work: Work) -> str:
    repo = work.tmp / "kmodlab_core.git"
    if not repo.exists():
        shutil.copytree(FIXTURE_KMODS / "kmodlab_core", repo)
        env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
                   GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
        for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "x"]):
            subprocess.run(argv, cwd=repo, env=env, check=True, capture_output=True)
    return f"file://{repo}"


CASES = [
    Case("unknown-release", _unknown_release,
         [r"Cluster lab-b: cannot resolve the release '4\.99\.1' \(kmod_release\)",
          r"no tag '4\.99\.1-x86_64'", r"Fix kmod_release"]),
    Case("cache-dir-is-a-file", _cache_dir_is_a_file,
         [r"Not a directory: '\S+/cache-is-a-file/"]),
    Case("malformed-release", _set_host("lab-b", "kmod_release", "four-dot-sixteen"),
         [r"Cluster lab-b: kmod_release 'four-dot-sixteen'", r"release version"]),
    Case("bad-arch", _set("kmod_arch", "sparc64"), [r"kmod_arch", r"sparc64", r"x86_64"]),
    Case("multi-arch-with-pullspec",
         _set_host("lab-a", "kmod_release", "quay.io/openshift-release-dev/ocp-release:4.16.30-multi"),
         [r"Cluster lab-a: kmod_multi_arch and the release pullspec kmod_release"],
         extra_args=["-e", "kmod_multi_arch=true"]),
    Case("unknown-pool", _set_host("lab-b", "kmod_pools", ["worker", "gpu-workers"]),
         [r"Cluster lab-b: kmod_pools names MachineConfigPool\(s\) gpu-workers", r"fix kmod_pools"]),
    Case("malformed-pool", _set_host("lab-a", "kmod_pools", ["Worker Pool"]),
         [r"Cluster lab-a: kmod_pools .*Worker Pool.* must list\s+MachineConfigPool names"]),
    Case("duplicate-pool", _set_host("lab-a", "kmod_pools", ["worker", "worker"]),
         [r"Cluster lab-a: kmod_pools .* each once"]),
    Case("missing-kubeconfig", _set_host("lab-b", "kmod_kubeconfig", "/nonexistent/kubeconfig"),
         [r"Cluster lab-b: kmod_kubeconfig /nonexistent/kubeconfig\s+does not exist", r"set kmod_kubeconfig"]),
    Case("invalid-kubeconfig", _set_host("lab-a", "kmod_kubeconfig", _garbage_kubeconfig),
         [r"Cluster lab-a: kmod_kubeconfig \S+garbage-kubeconfig\s+is not a kubeconfig"]),
    Case("api-key-without-url", _set_host("lab-a", "kmod_api_key", "sha256~not-a-real-token"),
         [r"Cluster lab-a: kmod_api_key is set without kmod_api_url"]),
    Case("missing-auth-file", _set("kmod_registry_auth_file", "/nonexistent/auth.json"),
         [r"kmod_registry_auth_file /nonexistent/auth.json\s+does not exist"]),
    Case("auth-file-without-registry-credentials", _auth_case,
         [r"kmod_registry_auth_file \S+auth-other-registry.json has no credentials for registry 127\.0\.0\.1",
          r"add an auths entry"]),
    Case("missing-ca-file", _set("kmod_registry_ca_file", "/nonexistent/ca.crt"),
         [r"kmod_registry_ca_file /nonexistent/ca.crt\s+does not exist"]),
    Case("repository-with-tag", _set("kmod_image_repository", "127.0.0.1:35000/kmods/rhcos:latest"),
         [r"kmod_image_repository '127.0.0.1:35000/kmods/rhcos:latest' must be\s+registry/repository with no tag"]),
    Case("no-modules", _set("kmod_modules", []), [r"kmod_modules"]),
    Case("source-path-missing",
         _modules(lambda w: [_module("kmodlab_core", path="/nonexistent/src/kmodlab_core")]),
         [r"module kmodlab_core: source path /nonexistent/src/kmodlab_core is not a directory"]),
    Case("git-ref-missing",
         _modules(lambda w: [_module("kmodlab_core", git=_git_repo(w), version="no-such-ref")]),
         [r"git version 'no-such-ref' is not a branch, tag or commit", r"main"]),
    Case("malformed-module-name", _modules(lambda w: [_module("kmodlab_core", path=str(FIXTURE_KMODS / "kmodlab_core"))
                                                      | {"name": "kmodlab core!"}]),
         [r"name 'kmodlab core!' is not a kernel module name"]),
    Case("source-path-and-git", _modules(lambda w: [_module("kmodlab_core", path=str(FIXTURE_KMODS / "kmodlab_core"),
                                                            git=_git_repo(w))]),
         [r"module kmodlab_core: source needs exactly one of path, git or archive \(got path, git\)"]),
    Case("module-listed-twice", _modules(lambda w: [_module("kmodlab_core"), _module("kmodlab_core")]),
         [r"module kmodlab_core is listed twice"]),
    Case("unknown-module-key", _modules(lambda w: [_module("kmodlab_core") | {"optoins": "level=1"}]),
         [r"optoins"]),
    Case("firmware-dir-outside", _modules(lambda w: [_module("kmodlab_core") | {"firmware_dir": "../../etc"}]),
         [r"firmware_dir '../../etc' must be a relative path inside"]),
    Case("bad-rollout-timeout", _set_host("lab-b", "kmod_rollout_timeout", "soon"),
         [r"Cluster lab-b: kmod_rollout_timeout \(soon\) must be a number of seconds"]),
]


class Fleet:
    """The lab's clusters as an inventory, and site.yml runs over it."""

    def __init__(self, lab: LabState, work: Path) -> None:
        self.lab = lab
        self.work = work
        base = yaml.safe_load(Path(lab.inventory).read_text())
        self.vars = base["all"]["vars"]
        self.vars["kmod_image_repository"] = f"{lab.registry['host']}/kmodtest/bad-input-{uuid.uuid4().hex[:8]}"
        self.vars["kmod_cache_dir"] = str(work / "cache")
        self.vars["kmod_rollout_progress_file"] = str(work / "progress.log")
        self.vars["kmod_report_dir"] = str(work / "report")
        self.hosts = base["all"]["children"]["lab_clusters"]["hosts"]
        self.canary = base["all"]["children"].get("canary", {"hosts": {}})

    def registry_writes(self) -> int:
        return sum(len(REGISTRY_WRITE.findall(p.read_text(errors="replace")))
                   for p in self.lab.layout.logs.glob("*registry*.log"))

    def api_writes(self) -> dict[str, list[str]]:
        writes = {}
        for cluster in self.lab.clusters:
            records = RequestLogClient(cluster["api_url"], cluster["token"], self.lab.ca_file).records()
            writes[cluster["name"]] = [
                f"{r.get('method')} {r.get('path')}" for r in records
                if r.get("method") in ("POST", "PUT", "PATCH", "DELETE")
                and not str(r.get("user_agent", "")).startswith(LAB_CONTROLLERS)
            ]
        return writes

    def reset_logs(self) -> None:
        for cluster in self.lab.clusters:
            RequestLogClient(cluster["api_url"], cluster["token"], self.lab.ca_file).reset()

    def run(self, case: Case) -> subprocess.CompletedProcess[str]:
        fleet_vars, hosts = copy.deepcopy(self.vars), copy.deepcopy(self.hosts)
        work = Work(self.work / case.id, self.lab)
        work.tmp.mkdir(parents=True, exist_ok=True)
        case.change(fleet_vars, hosts, work)
        inventory = {"all": {"vars": fleet_vars, "children": {"lab_clusters": {"hosts": hosts},
                                                              "canary": self.canary}}}
        path = work.tmp / "inventory.yml"
        path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                   ANSIBLE_PYTHON_INTERPRETER=sys.executable)
        proc = subprocess.run(
            ["ansible-playbook", "-i", str(path), str(CHECKOUT / "playbooks" / "site.yml"), *case.extra_args],
            env=env, cwd=CHECKOUT, capture_output=True, text=True, timeout=600, check=False)
        (work.tmp / "run.log").write_text(proc.stdout + proc.stderr)
        return proc


@pytest.fixture(scope="module")
def fleet(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    if len(lab.clusters) < 2:
        pytest.skip("needs two lab clusters (--lab-clusters 2)")
    return Fleet(lab, tmp_path_factory.mktemp("bad-input"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_before_any_write_naming_the_input(fleet: Fleet, case: Case) -> None:
    fleet.reset_logs()
    registry_before = fleet.registry_writes()
    run = fleet.run(case)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-4000:]
    failures = "\n".join(re.findall(r"^(?:fatal|failed): .*$|^ERROR! .*$", out, re.M)) or out
    # The message, wherever ansible put it (a task's msg, or an argument-spec error).
    for pattern in case.expect:
        assert re.search(pattern, out), f"{pattern!r} not in the failure:\n{failures[-4000:]}"
    assert fleet.api_writes() == {c["name"]: [] for c in fleet.lab.clusters}
    assert fleet.registry_writes() == registry_before
    assert BUILD_TASK not in out, "a podman build started"
    assert "PLAY [Roll out" not in out or "TASK [ocp.kmod_layering.rollout" not in out
