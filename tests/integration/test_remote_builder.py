"""Remote native builders (kmod_build_hosts), for real: a podman service of
its own (`podman --root <tmp> system service unix://<tmp>/podman.sock`,
separate storage, the registry CA in its own certs.d) is the builder of the
controller's architecture, x86_64 (no native aarch64 host exists here; the
product treats every architecture alike).

- playbooks/build.yml with `kmod_build_hosts: {x86_64: {url: unix://...}}`
  and a signing key: the build ran in the builder's storage (it pulled the
  DTK, keeps the intermediate stage, and has the very image - same image ID
  - the controller boot-tested and pushed); the gates ran (platform,
  signatures, boot test); the registry serves a linux/amd64 image whose
  modules are signed by the key; `kmod_build.builder` names the builder;
  the key is in no file the builder's storage, its temporary directory or
  the build context got, and in no output line.
- bad input to site.yml, each a clear error before any registry or cluster
  write and before any build: an unreachable socket, a builder of another
  architecture (the x86_64 service given as the aarch64 builder of an
  aarch64 lab cluster), an unknown architecture in kmod_build_hosts (the
  other shapes are unit-tested: tests/unit/.../test_build_hosts.py).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from integration.test_module_signing import files_newer_than, leaks, make_key, modinfo, modules_of, pushed_layers
from kmodlab.apiserver import LAB_CONTROLLER_AGENTS, RequestLogClient
from kmodlab.layered import FIXTURE_KMODS
from kmodlab.pytest_plugin import arch_cluster, wait_until
from kmodlab.state import LabState

pytestmark = pytest.mark.lab

CHECKOUT = Path(__file__).resolve().parents[2]
REGISTRY_WRITE = re.compile(r'"(PUT|POST|PATCH|DELETE) /v2/')
BUILD_TASK = "Build the images (compile"
REMOTE_BUILD_TASK = "TASK [ocp.kmod_layering.build : Build the images (compile, check vermagic, layer on RHCOS) on the remote builders]"
LOCAL_BUILD_TASK = "TASK [ocp.kmod_layering.build : Build the images (compile, check vermagic, layer on RHCOS)]"
DUMP_PLAY = """
- name: Dump what the roles decided
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Write the facts of the cluster
      ansible.builtin.copy:
        content: "{{ {'kmod_build': kmod_build, 'kmod_image': kmod_image} | to_nice_json }}"
        dest: "{{ dump_file }}"
        mode: "0600"
      delegate_to: localhost
      run_once: true
      changed_when: false  # the test's own bookkeeping
"""


class Builder:
    """A podman service with storage of its own, as a remote builder is."""

    def __init__(self, work: Path, registry_host: str, ca_file: str) -> None:
        self.work = work
        # podman takes a runroot of at most 50 characters: it (and the
        # socket) in a short directory of its own; the storage in `work`.
        self.short = Path(tempfile.mkdtemp(prefix="kmod-builder-"))
        self.root, self.runroot, self.tmp = work / "root", self.short / "runroot", work / "tmp"
        self.home = work / "home"
        self.url = f"unix://{self.short / 'podman.sock'}"
        for path in (self.root, self.runroot, self.tmp):
            path.mkdir(parents=True)
        # The builder trusts the registry with its own certificates (a
        # remote build takes no --cert-dir): certs.d under its $HOME.
        certs = self.home / ".config" / "containers" / "certs.d" / registry_host
        certs.mkdir(parents=True)
        shutil.copy(ca_file, certs / "ca.crt")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINER_")}
        env.update(HOME=str(self.home), TMPDIR=str(self.tmp))
        self.log = (work / "service.log").open("w")
        self.proc = subprocess.Popen(
            ["podman", "--root", str(self.root), "--runroot", str(self.runroot), "system", "service", "--time=0",
             self.url], stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_until("the builder's podman service", lambda: self.proc.poll() is None and self.podman("info").returncode == 0,
                   timeout=60, describe=lambda: (work / "service.log").read_text()[-3000:]
                   + self.podman("info").stderr[-2000:])

    def podman(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", "--url", self.url, *args], capture_output=True, text=True, timeout=120,
                              check=False)

    def images(self) -> list[dict[str, Any]]:
        return json.loads(self.podman("images", "--all", "--format", "json").stdout or "[]")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self.log.close()
        # podman's overlay driver bind-mounts its layer directory: unmount
        # whatever is mounted under the builder's directory, then remove it.
        for mountpoint in sorted(self.mounts(), key=len, reverse=True):
            subprocess.run(["umount", "-l", mountpoint], check=False, capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.short, ignore_errors=True)

    def mounts(self) -> list[str]:
        with open("/proc/self/mountinfo") as handle:
            points = [line.split()[4] for line in handle]
        return [p for p in points for top in (str(self.work), str(self.short)) if p == top or p.startswith(top + "/")]


class Runs:
    """playbook runs over one lab cluster, with the lab inventory's vars."""

    def __init__(self, lab: LabState, work: Path) -> None:
        self.lab, self.work = lab, work
        self.repository = f"{lab.registry['host']}/kmodtest/remote-{uuid.uuid4().hex[:8]}"
        self.wrapper = work / "build_and_dump.yml"
        self.wrapper.write_text(yaml.safe_dump([{"import_playbook": str(CHECKOUT / "playbooks" / "build.yml")}])
                                + DUMP_PLAY)

    def run(self, name: str, host: str, fleet_vars: dict[str, Any], playbook: str | None = None,
            extra: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        base = yaml.safe_load(Path(self.lab.inventory).read_text())
        hosts = base["all"]["children"]["lab_clusters"]["hosts"]
        fleet = dict(copy.deepcopy(base["all"]["vars"]), kmod_image_repository=self.repository,
                     kmod_cache_dir=str(self.work / "cache"), kmod_report_dir=str(self.work / "report"),
                     **fleet_vars)
        inventory = {"all": {"vars": fleet, "children": {"lab_clusters": {"hosts": {host: hosts[host]}}}}}
        path = self.work / f"{name}-inventory.yml"
        path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        dump = self.work / f"{name}-facts.json"
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_PYTHON_INTERPRETER=sys.executable,
                   ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks")
        argv = ["ansible-playbook", "-i", str(path), playbook or str(self.wrapper), "-e", f"dump_file={dump}", *extra]
        proc = subprocess.run(argv, env=env, cwd=CHECKOUT, capture_output=True, text=True, timeout=1200, check=False)
        (self.work / f"{name}.log").write_text(proc.stdout + proc.stderr)
        return proc, (json.loads(dump.read_text()) if dump.exists() else {})

    def registry_writes(self) -> int:
        return sum(len(REGISTRY_WRITE.findall(p.read_text(errors="replace")))
                   for p in self.lab.layout.logs.glob("*registry*.log"))

    def api_writes(self) -> dict[str, list[str]]:
        writes = {}
        for cluster in self.lab.clusters:
            records = RequestLogClient(cluster["api_url"], cluster["token"], self.lab.ca_file).records()
            writes[cluster["name"]] = [f"{r.get('method')} {r.get('path')}" for r in records
                                       if r.get("method") in ("POST", "PUT", "PATCH", "DELETE")
                                       and not str(r.get("user_agent", "")).startswith(LAB_CONTROLLER_AGENTS)]
        return writes

    def reset_logs(self) -> None:
        for cluster in self.lab.clusters:
            RequestLogClient(cluster["api_url"], cluster["token"], self.lab.ca_file).reset()


def modules(level: int | None = None) -> list[dict[str, Any]]:
    core: dict[str, Any] = {"name": "kmodlab_core", "source": {"path": str(FIXTURE_KMODS / "kmodlab_core")}}
    if level is not None:
        core["options"] = f"level={level}"  # a build key no image has: the run must build
    return [core, {"name": "kmodlab_dep", "source": {"path": str(FIXTURE_KMODS / "kmodlab_dep")}}]


def skopeo_json(lab: LabState, *args: str) -> dict[str, Any]:
    """What the registry serves (skopeo, not the product's client)."""
    out = subprocess.run(["skopeo", "inspect", "--authfile", str(lab.registry["auth_file"]),
                          "--cert-dir", str(Path(lab.ca_file).parent), *args],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def builder(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Builder]:
    service = Builder(tmp_path_factory.mktemp("remote-builder"), lab.registry["host"], str(lab.ca_file))
    try:
        yield service
    finally:
        service.stop()
        assert service.mounts() == [], "the builder's storage is still mounted"


@pytest.fixture(scope="module")
def runs(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(lab, tmp_path_factory.mktemp("remote-runs"))


@pytest.fixture(scope="module")
def remote_build(lab: LabState, builder: Builder, runs: Runs) -> dict[str, Any]:
    key = make_key(runs.work, "remote")
    marker = runs.work / "marker"
    marker.write_text("")
    time.sleep(1.1)  # find -newer compares whole seconds on some filesystems
    registry_before = runs.registry_writes()
    started = time.monotonic()
    proc, facts = runs.run("build", lab.clusters[0]["name"], {
        "kmod_modules": modules(),
        "kmod_build_hosts": {"x86_64": {"url": builder.url}},
        "kmod_signing_key_file": str(key["key"]), "kmod_signing_cert_file": str(key["cert"]),
        "kmod_boot_test": True,
    }, extra=("-vvv",))
    seconds = time.monotonic() - started
    written = list(files_newer_than(marker, [builder.root, builder.tmp, runs.work / "cache"]))
    print(f"\nbuild.yml on a remote builder (build, save/load, gates, boot test, push): {seconds:.0f}s")
    return {"proc": proc, "out": proc.stdout + proc.stderr, "facts": facts, "key": key, "written": written,
            "registry_writes": runs.registry_writes() - registry_before}


def test_the_image_is_built_by_the_builder_gated_and_pushed(
        lab: LabState, builder: Builder, remote_build: dict[str, Any]) -> None:
    proc, out, facts = remote_build["proc"], remote_build["out"], remote_build["facts"]
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    build = facts["kmod_build"]
    # The fact names the builder of the image, per architecture too.
    assert build["built"] is True and build["builder"] == builder.url
    assert build["arches"]["x86_64"]["builder"] == builder.url
    # The remote build task built it; the controller's own build task had nothing to build.
    assert REMOTE_BUILD_TASK in out
    local = out.split(LOCAL_BUILD_TASK, 1)[1].split("TASK [", 1)[0]
    assert "skipping" in local and build["image"] not in local, local
    # The builder's storage: it pulled the Driver Toolkit and the RHCOS
    # image (empty before), keeps the build stage, and holds the image the
    # registry serves - its image ID is the pushed config's digest: built there.
    labels = skopeo_json(lab, f"docker://{facts['kmod_image']}")["Labels"]
    assert builder.podman("image", "exists", labels["io.kmod-layering.dtk"]).returncode == 0
    assert builder.podman("image", "exists", labels["io.kmod-layering.rhcos"]).returncode == 0
    remote_id = builder.podman("image", "inspect", "--format", "{{.Id}}", build["image"]).stdout.strip()
    manifest = json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", "--authfile", str(lab.registry["auth_file"]), "--cert-dir",
         str(Path(lab.ca_file).parent), f"docker://{facts['kmod_image']}"],
        capture_output=True, text=True, check=True, timeout=120).stdout)
    assert remote_id and manifest["config"]["digest"] == f"sha256:{remote_id}"
    assert any(not image.get("Names") for image in builder.images()), "no intermediate stage in the builder"
    # The gates of the controller ran on it: platform, signatures, boot test.
    for task in ("Check the architecture of each built image", "Check the signatures of the modules of each signed image"):
        section = out.split(f"TASK [ocp.kmod_layering.build : {task}]", 1)[1].split("TASK [", 1)[0]
        assert re.search(rf"^ok: \[[^\]]+\] => \(item={re.escape(build['image'])}", section, re.M), section[-2000:]
    # The registry serves a linux/amd64 image whose modules are signed by the key.
    config = skopeo_json(lab, "--config", f"docker://{facts['kmod_image']}")
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert labels["io.kmod-layering.build-key"] == build["build_key"]
    assert remote_build["registry_writes"] > 0


def test_the_boot_test_booted_the_remotely_built_image(runs: Runs, remote_build: dict[str, Any]) -> None:
    facts = remote_build["facts"]
    assert remote_build["proc"].returncode == 0
    digest = facts["kmod_image"].split("@sha256:", 1)[1]
    verdicts = [json.loads(p.read_text()) for p in (runs.work / "cache" / "boot-tests").glob(digest + "-*.json")]
    assert len(verdicts) == 1, list((runs.work / "cache" / "boot-tests").iterdir())
    assert verdicts[0]["ok"], verdicts[0]
    assert {"kmodlab_core", "kmodlab_dep"} <= set(verdicts[0]["loaded"]), verdicts[0]


def test_the_pushed_modules_are_signed_and_the_key_leaked_nowhere(lab: LabState, runs: Runs,
                                                                  remote_build: dict[str, Any]) -> None:
    facts, key = remote_build["facts"], remote_build["key"]
    assert remote_build["proc"].returncode == 0
    scan = runs.work / "scan"
    scan.mkdir()
    layers = pushed_layers(lab, facts["kmod_image"], scan / "dir")
    kos = modules_of(layers)
    assert sorted(kos) == ["kmodlab_core.ko", "kmodlab_dep.ko"]
    for name, data in kos.items():
        (scan / name).write_bytes(data)
        assert modinfo(scan / name, "signer") == key["cn"], name
    needles = [line.encode() for line in key["key_lines"]] + [key["key_der"][32:96]]
    assert [i for i, layer in enumerate(layers) for n in needles if n in layer] == []
    # Every file the builder's storage, its temporary directory (where the
    # service unpacks the context it is sent, the key's copy with it) and
    # the build context on the controller got during the run and kept.
    assert len(remote_build["written"]) > 10
    assert leaks(key, iter(remote_build["written"])) == []
    assert list((runs.work / "cache" / "contexts").glob("*/podman-build-secret*")) == []
    assert "module_args" in remote_build["out"]  # really -vvv
    assert [line for line in key["key_lines"] if line in remote_build["out"]] == []


@pytest.fixture(scope="module")
def arm_cluster(lab: LabState) -> Iterator[dict[str, Any]]:
    with arch_cluster(lab, "4.16.30-aarch64", workers=1, masters=1, node_mode="fast") as entry:
        yield entry


CASES = {
    "unreachable-socket": (
        lambda b, w: {"x86_64": {"url": f"unix://{w / 'absent' / 'podman.sock'}"}},
        [r"The builder of x86_64, kmod_build_hosts\.x86_64 \(unix://\S+/absent/podman\.sock\), cannot be reached",
         r"no such file or directory", r"try `podman --url unix://\S+ info`", r"Nothing was built or pushed"]),
    "builder-of-another-arch": (
        lambda b, w: {"aarch64": {"url": b.url}},
        [r"The builder of aarch64, kmod_build_hosts\.aarch64 \(unix://\S+\), is not a host of architecture aarch64",
         r"host\.arch amd64 \(x86_64\), so it would build x86_64 images", r"Nothing was built or pushed"]),
    "unknown-arch": (
        lambda b, w: {"sparc64": {"url": b.url}},
        [r"kmod_build_hosts: unknown architecture 'sparc64'; one of: x86_64, aarch64"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_builders_fail_before_any_write(request: pytest.FixtureRequest, lab: LabState, builder: Builder,
                                            runs: Runs, case: str, tmp_path: Path) -> None:
    host = request.getfixturevalue("arm_cluster")["name"] if case == "builder-of-another-arch" \
        else lab.clusters[0]["name"]
    make, expect = CASES[case]
    images_before = len(builder.images())
    runs.reset_logs()
    registry_before = runs.registry_writes()
    proc, _facts = runs.run(case, host, {"kmod_build_hosts": make(builder, tmp_path),
                                         "kmod_modules": modules(level=uuid.uuid4().int % 100000)},
                            playbook=str(CHECKOUT / "playbooks" / "site.yml"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]
    for pattern in expect:
        assert re.search(pattern, out), f"{pattern!r} not in:\n{out[-5000:]}"
    assert runs.api_writes() == {c["name"]: [] for c in lab.clusters}
    assert runs.registry_writes() == registry_before
    assert BUILD_TASK not in out, "a podman build started"
    assert len(builder.images()) == images_before, "the builder built or pulled something"
