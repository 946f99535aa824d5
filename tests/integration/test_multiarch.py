"""Architectures, for real: an arm64 layered image built with `podman build
--platform linux/arm64` (qemu user-mode emulation) against the lab's arm64
Driver Toolkit, and boot-tested in qemu-system-aarch64 with its modules
loaded; and the bad inputs of a mixed fleet, each refused before any write
(a pool mixing architectures, kmod_arch disagreeing with the nodes, a release
without the pools' architecture, a controller without the binfmt handler).

Nodes in fast mode: nothing here rolls out (the e2e test boots arm64 nodes).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from kmodlab.apiserver import LAB_CONTROLLER_AGENTS, RequestLogClient
from kmodlab.pytest_plugin import arch_cluster
from kmodlab.state import LabState

pytestmark = pytest.mark.lab

CHECKOUT = Path(__file__).resolve().parents[2]
REGISTRY_WRITE = re.compile(r'"(PUT|POST|PATCH|DELETE) /v2/')
BUILD_TASK = "Build the images (compile"


class Mixed:
    """An aarch64 cluster and a multi-arch cluster whose `worker` pool mixes
    an x86_64 and an arm64 node, and playbook runs over one of them."""

    def __init__(self, lab: LabState, work: Path, arm: dict[str, Any], multi: dict[str, Any]) -> None:
        self.lab, self.work, self.arm, self.multi = lab, work, arm, multi
        base = yaml.safe_load(Path(lab.inventory).read_text())
        self.vars = base["all"]["vars"]
        self.vars["kmod_image_repository"] = f"{lab.registry['host']}/kmodtest/multiarch-{uuid.uuid4().hex[:8]}"
        self.vars["kmod_cache_dir"] = str(work / "cache")
        self.vars["kmod_report_dir"] = str(work / "report")
        self.hosts = base["all"]["children"]["lab_clusters"]["hosts"]

    def run(self, name: str, host: str, playbook: str = "site.yml", host_vars: dict[str, Any] | None = None,
            fleet_vars: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        hosts = {host: dict(copy.deepcopy(self.hosts[host]), **(host_vars or {}))}
        inventory = {"all": {"vars": dict(copy.deepcopy(self.vars), **(fleet_vars or {})),
                             "children": {"lab_clusters": {"hosts": hosts}}}}
        path = self.work / f"{name}-inventory.yml"
        path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_PYTHON_INTERPRETER=sys.executable)
        proc = subprocess.run(["ansible-playbook", "-i", str(path), str(CHECKOUT / "playbooks" / playbook)],
                              env=env, cwd=CHECKOUT, capture_output=True, text=True, timeout=1200, check=False)
        (self.work / f"{name}.log").write_text(proc.stdout + proc.stderr)
        return proc

    def registry_writes(self) -> int:
        return sum(len(REGISTRY_WRITE.findall(p.read_text(errors="replace")))
                   for p in self.lab.layout.logs.glob("*registry*.log"))

    def api_writes(self) -> dict[str, list[str]]:
        writes = {}
        for cluster in (self.arm, self.multi):
            records = RequestLogClient(cluster["api_url"], cluster["token"], self.lab.ca_file).records()
            writes[cluster["name"]] = [f"{r.get('method')} {r.get('path')}" for r in records
                                       if r.get("method") in ("POST", "PUT", "PATCH", "DELETE")
                                       and not str(r.get("user_agent", "")).startswith(LAB_CONTROLLER_AGENTS)]
        return writes

    def reset_logs(self) -> None:
        for cluster in (self.arm, self.multi):
            RequestLogClient(cluster["api_url"], cluster["token"], self.lab.ca_file).reset()


@pytest.fixture(scope="module")
def mixed(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mixed]:
    with arch_cluster(lab, "4.16.30-aarch64", workers=1, masters=1, node_mode="fast") as arm, \
            arch_cluster(lab, "4.16.30-multi", workers=1, masters=1, arm64_workers=1, arm64_in_worker=1,
                         node_mode="fast") as multi:
        yield Mixed(lab, tmp_path_factory.mktemp("multiarch"), arm, multi)


def skopeo_config(lab: LabState, image: str) -> dict[str, Any]:
    """The image config as the registry serves it (skopeo, not the product's client)."""
    out = subprocess.run(["skopeo", "inspect", "--config", "--authfile", lab.registry["auth_file"],
                          "--cert-dir", str(Path(lab.ca_file).parent), "docker://" + image],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_an_arm64_image_is_built_under_emulation_and_boots_in_qemu_system_aarch64(mixed: Mixed) -> None:
    started = time.monotonic()
    run = mixed.run("build-arm64", mixed.arm["name"], "build.yml")
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-3000:]
    assert "(built now)" in run.stdout
    image = re.search(r"(\S+/kmodtest/multiarch-[0-9a-f]+@sha256:[0-9a-f]{64})", run.stdout).group(1)
    # The registry's config of the pushed image: arm64, by the build, not
    # by a label the product wrote.
    config = skopeo_config(mixed.lab, image)
    assert (config["os"], config["architecture"]) == ("linux", "arm64")
    # The boot test verdict (image_boot_test, kept by digest): the image's
    # own arm64 kernel booted under qemu-system-aarch64 and loaded every
    # module (a module built for another kernel or architecture does not).
    digest = image.split("@sha256:", 1)[1]
    verdicts = [json.loads(p.read_text()) for p in (mixed.work / "cache" / "boot-tests").glob(digest + "-*.json")]
    assert len(verdicts) == 1, list((mixed.work / "cache" / "boot-tests").iterdir())
    verdict = verdicts[0]
    # An arm64 kernel (Debian's -arm64 flavour) boots only under qemu-system-aarch64.
    assert verdict["ok"] and verdict["kernel"].endswith("-arm64"), verdict
    assert {"kmodlab_core", "kmodlab_dep"} <= set(verdict["loaded"]), verdict
    assert verdict["tools"]["busybox"].startswith("image:/"), verdict["tools"]
    print(f"\narm64 build + push + boot test: {elapsed:.0f}s (boot {verdict['duration']:.1f}s)")


@pytest.mark.parametrize("case", ["mixed-pool", "arch-disagrees", "release-lacks-arch", "no-binfmt-handler"])
def test_bad_architecture_input_fails_before_any_write(mixed: Mixed, case: str, tmp_path: Path) -> None:
    arm, multi = mixed.arm["name"], mixed.multi["name"]
    if case == "mixed-pool":
        host, host_vars, fleet_vars = multi, {}, {}
        expect = [rf"cluster {multi}: pool worker mixes architectures \(aarch64: worker-1; x86_64: worker-0\)",
                  r"a custom MachineConfigPool selecting kubernetes.io/arch"]
    elif case == "arch-disagrees":
        host, host_vars, fleet_vars = arm, {"kmod_arch": "x86_64"}, {}
        expect = [rf"cluster {arm}: kmod_arch is x86_64 but the nodes of pool worker are aarch64 \(worker-0\)",
                  r"Set kmod_arch to aarch64 or auto"]
    elif case == "release-lacks-arch":
        x86 = [r for r in mixed.lab.releases if r.get("arch", "x86_64") == "x86_64"][0]
        host, host_vars, fleet_vars = arm, {"kmod_release": x86["pullspec"]}, {}
        expect = [rf"Cluster {arm}: cannot resolve the release .* for aarch64 \(pool\(s\) worker\)",
                  r"is a linux/amd64 image, not linux/arm64", r"The release does not carry aarch64"]
    else:
        # A build is needed (options no image has), and the handler is not
        # registered in the directory the check reads (the host's stays).
        binfmt = tmp_path / "binfmt_misc"
        binfmt.mkdir()
        (binfmt / "status").write_text("enabled\n")
        modules = copy.deepcopy(mixed.vars["kmod_modules"])
        modules[0]["options"] = modules[0].get("options", "") + f" level={uuid.uuid4().int % 1000}"
        host, host_vars = arm, {}
        fleet_vars = {"kmod_build_binfmt_dir": str(binfmt), "kmod_modules": modules}
        expect = [rf"no binfmt_misc handler {re.escape(str(binfmt))}/qemu-aarch64 is registered",
                  r"install Debian's qemu-user-static", r"Nothing was built or pushed"]
    mixed.reset_logs()
    registry_before = mixed.registry_writes()
    run = mixed.run(case, host, host_vars=host_vars, fleet_vars=fleet_vars)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-4000:]
    for pattern in expect:
        assert re.search(pattern, out), f"{pattern!r} not in:\n{out[-5000:]}"
    assert mixed.api_writes() == {mixed.arm["name"]: [], mixed.multi["name"]: []}
    assert mixed.registry_writes() == registry_before
    assert BUILD_TASK not in out, "a podman build started"


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_a_multi_payload_pins_each_architectures_own_images(mixed: Mixed, arch: str) -> None:
    """ocp_release_image on the lab's -multi payload (an image index whose
    components are indexes): the DTK and RHCOS of `arch` by their per-arch
    manifest digests, as the lab published them (lab.json `platforms`)."""
    release = mixed.lab.release("4.16.30-multi")
    args = json.dumps({"pullspec": release["pullspec"], "arch": arch, "auth_file": mixed.lab.registry["auth_file"],
                       "ca_path": mixed.lab.ca_file, "cache_dir": str(mixed.work / "release-cache")})
    run = subprocess.run(["ansible", "localhost", "-m", "ocp.kmod_layering.ocp_release_image", "-a", args,
                          "-e", f"ansible_python_interpreter={sys.executable}"],
                         env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                                  ANSIBLE_STDOUT_CALLBACK="ansible.posix.json"),
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    report = json.JSONDecoder().raw_decode(run.stdout[run.stdout.index("{"):])[0]
    result = report["plays"][0]["tasks"][0]["hosts"]["localhost"]
    platform = release["platforms"][arch]
    assert result["multi_arch"] is True
    assert result["os_image"] == platform["images"]["rhel-coreos"]
    assert result["driver_toolkit_image"] == platform["images"]["driver-toolkit"]
    # The lists stay known, pinned by the digests the payload names.
    assert result["component_lists"]["rhel-coreos"] == release["images"]["rhel-coreos"]
    # The release itself is pinned by its index digest; the platform digest is arch's entry.
    assert result["platform_digest"] == platform["digest"]
