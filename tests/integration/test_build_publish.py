"""playbooks/build.yml (resolve -> build -> publish) over a lab fleet, with
real ansible-playbook, podman builds and pushes to the lab registry.

The fleet: every lab cluster (they run on at least two releases), plus a
"twin" inventory host for the first cluster (same release, so the same build
key). Expected values come from outside the roles: digests from `skopeo
inspect` of the registry, writes from the lab API servers' request logs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from kmodlab import images, releases
from kmodlab.apiserver import LAB_CONTROLLER_AGENTS, RequestLogClient
from kmodlab.layered import FIXTURE_KMODS
from kmodlab.state import LabState

pytestmark = pytest.mark.lab

CHECKOUT = Path(__file__).resolve().parents[2]
CORE_OPTIONS = "greeting=built level=5"
BROKEN_SOURCE = """// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
static int __init kmodlab_broken_init(void) { return kmodlab_no_such_symbol; }
module_init(kmodlab_broken_init);
MODULE_LICENSE("GPL");
"""

DUMP_PLAY = """
- name: Dump what the roles decided
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Write the facts of every cluster
      ansible.builtin.copy:
        content: "{{ facts | to_nice_json }}"
        dest: "{{ dump_file }}"
        mode: "0600"
      vars:
        facts: >-
          {{ dict(ansible_play_hosts | zip(ansible_play_hosts | map('extract', hostvars)
             | map('dict2items') | map('selectattr', 'key', 'in', ['kmod_build', 'kmod_image', 'kmod_publish'])
             | map('items2dict'))) }}
      delegate_to: localhost
      run_once: true
      check_mode: false
      changed_when: false  # the test's own bookkeeping, not the roles'
"""


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[str], facts: dict[str, Any]) -> None:
        self.rc = proc.returncode
        self.out = proc.stdout + proc.stderr
        self.facts = facts

    def recap(self) -> dict[str, dict[str, int]]:
        result = {}
        for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", self.out, re.M):
            result[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
        return result

    def changed(self) -> int:
        return sum(counts["changed"] for counts in self.recap().values())


class Fleet:
    """An inventory over the lab clusters and a way to run build.yml on it."""

    def __init__(self, lab: LabState, work: Path, repository: str, auth_file: str | None = None) -> None:
        self.lab = lab
        self.work = work
        self.repository = repository
        self.auth_file = auth_file or str(lab.registry["auth_file"])
        self.cache = work / "cache"
        first = lab.clusters[0]
        self.twin = f"{first['name']}-twin"
        self.hosts = {c["name"]: c for c in lab.clusters}
        self.hosts[self.twin] = first
        self.wrapper = work / "build_and_dump.yml"
        self.wrapper.write_text(
            yaml.safe_dump([{"import_playbook": str(CHECKOUT / "playbooks" / "build.yml")}]) + DUMP_PLAY
        )

    def modules(self, broken: Path | None = None) -> list[dict[str, Any]]:
        modules: list[dict[str, Any]] = [
            {"name": "kmodlab_core", "source": {"path": str(FIXTURE_KMODS / "kmodlab_core")},
             "options": CORE_OPTIONS, "firmware_dir": "firmware"},
            {"name": "kmodlab_dep", "source": {"path": str(FIXTURE_KMODS / "kmodlab_dep")}},
        ]  # fmt: skip
        if broken is not None:
            modules.append({"name": "kmodlab_broken", "source": {"path": str(broken)}})
        return modules

    def run(self, *extra: str, modules: list[dict[str, Any]] | None = None, name: str = "run",
            env: dict[str, str] | None = None) -> Run:
        inventory = {
            "all": {
                "vars": {
                    "kmod_registry_auth_file": self.auth_file,
                    "kmod_registry_ca_file": str(self.lab.ca_file),
                    "kmod_image_repository": self.repository,
                    "kmod_cache_dir": str(self.cache),
                    "kmod_modules": modules if modules is not None else self.modules(),
                    # The boot test gate has tests of its own (test_image_boot_test, e2e):
                    # here, builds, pushes and digests.
                    "kmod_boot_test": False,
                },
                "children": {
                    "fleet": {
                        "hosts": {
                            host: {"ansible_connection": "local", "kmod_kubeconfig": cluster["kubeconfig"]}
                            for host, cluster in self.hosts.items()
                        }
                    }
                },
            }
        }
        inventory_file = self.work / f"{name}-inventory.yml"
        inventory_file.write_text(yaml.safe_dump(inventory, sort_keys=False))
        dump = self.work / f"{name}-facts.json"
        env_extra = env
        env = dict(os.environ)
        env.update(
            PATH=f"{CHECKOUT / '.venv' / 'bin'}:{env.get('PATH', '')}",
            PYTHONPATH=f"{CHECKOUT / '.build' / 'collections'}:{CHECKOUT / 'tests'}",
            ANSIBLE_COLLECTIONS_PATH=str(CHECKOUT / ".build" / "collections"),
            ANSIBLE_CONFIG=str(CHECKOUT / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        )
        env.update(env_extra or {})
        argv = [str(CHECKOUT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory_file), str(self.wrapper),
                "-e", f"dump_file={dump}", *extra]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=CHECKOUT, timeout=1200, check=False)
        facts = json.loads(dump.read_text()) if dump.exists() else {}
        (self.work / f"{name}.log").write_text(proc.stdout + proc.stderr)
        return Run(proc, facts)

    def api_writes(self) -> dict[str, int]:
        """Writes to each cluster by anything but the lab's own controllers
        (whose status writes, e.g. the CVO's after the lab starts, are the
        cluster's, and land whenever they do)."""
        return {
            c["name"]: sum(
                1 for r in RequestLogClient(c["api_url"], c["token"], self.lab.ca_file).records()
                if r.get("method") in ("POST", "PUT", "PATCH", "DELETE")
                and not str(r.get("user_agent", "")).startswith(LAB_CONTROLLER_AGENTS))
            for c in self.lab.clusters
        }

    def secret_reads(self) -> dict[str, int]:
        return {
            c["name"]: RequestLogClient(c["api_url"], c["token"], self.lab.ca_file).count(method="GET", resource="secrets")
            for c in self.lab.clusters
        }


def _cert_dir(lab: LabState) -> str:
    return str(Path(lab.ca_file).parent)  # holds only ca.crt (see the lab README)


def skopeo_digest(lab: LabState, ref: str) -> str | None:
    proc = subprocess.run(
        ["skopeo", "inspect", "--raw", "--authfile", str(lab.registry["auth_file"]), "--cert-dir", _cert_dir(lab),
         f"docker://{ref}"],
        capture_output=True, check=False, timeout=120,
    )  # fmt: skip
    if proc.returncode != 0:
        return None
    return "sha256:" + hashlib.sha256(proc.stdout).hexdigest()


def skopeo_labels(lab: LabState, ref: str) -> dict[str, str]:
    out = subprocess.run(
        ["skopeo", "inspect", "--authfile", str(lab.registry["auth_file"]), "--cert-dir", _cert_dir(lab),
         f"docker://{ref}"],
        capture_output=True, check=True, timeout=120, text=True,
    ).stdout  # fmt: skip
    return dict(json.loads(out).get("Labels") or {})


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def fleet(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    releases = {c["release"] for c in lab.clusters}
    if len(releases) < 2:
        pytest.skip("needs lab clusters on two releases (--lab-clusters 2 or more)")
    # A repository of our own: the registry has none of its tags yet.
    repository = f"{lab.registry['host']}/kmodtest/build-{uuid.uuid4().hex[:10]}"
    return Fleet(lab, tmp_path_factory.mktemp("build-publish"), repository)


@pytest.fixture(scope="module")
def runs(fleet: Fleet) -> Iterator[dict[str, Any]]:
    """--check, then a real run, then a rerun; the API writes of each."""
    results: dict[str, Any] = {}
    before = fleet.api_writes()
    reads_before = fleet.secret_reads()
    results["check"] = fleet.run("--check", name="check")
    results["check_writes"] = fleet.api_writes()
    results["after_check_registry"] = {
        f["kmod_build"]["image"]: skopeo_digest(fleet.lab, f["kmod_build"]["image"]) for f in results["check"].facts.values()
    }
    results["first"] = fleet.run(name="first")
    results["first_writes"] = fleet.api_writes()
    results["second"] = fleet.run(name="second")
    results["second_writes"] = fleet.api_writes()
    results["check_again"] = fleet.run("--check", name="check_again")
    results["before_writes"] = before
    results["secret_reads"] = {k: v - reads_before[k] for k, v in fleet.secret_reads().items()}
    yield results


# ------------------------------------------------------------------ tests


def test_check_mode_builds_and_pushes_nothing(fleet: Fleet, runs: dict[str, Any]) -> None:
    check: Run = runs["check"]
    assert check.rc == 0, check.out[-4000:]
    assert "Would build " in check.out and "Would push " in check.out
    # --check predicts the change (the build and the push), makes none.
    assert check.changed() == 2, check.recap()
    for facts in check.facts.values():
        assert facts["kmod_build"]["built"] is False
        assert facts["kmod_build"]["builds_in_play"] == 0
        assert facts["kmod_image"] == ""
        assert facts["kmod_build"]["needs_push"] is True
    # Nothing reached the registry, nothing was written to a cluster.
    assert runs["after_check_registry"] and set(runs["after_check_registry"].values()) == {None}
    assert runs["check_writes"] == runs["before_writes"]


def test_one_build_per_release_and_clusters_on_a_release_share_it(fleet: Fleet, runs: dict[str, Any]) -> None:
    first: Run = runs["first"]
    assert first.rc == 0, first.out[-4000:]
    facts = first.facts
    assert set(facts) == set(fleet.hosts)
    releases = {c["release"] for c in fleet.lab.clusters}
    keys = {f["kmod_build"]["build_key"] for f in facts.values()}
    assert len(keys) == len(releases)
    for f in facts.values():
        assert f["kmod_build"]["distinct_keys"] == len(releases)
        assert f["kmod_build"]["builds_in_play"] == len(releases)
        assert f["kmod_build"]["in_registry"] is False
    # The podman_image build task ran once per key, not once per cluster.
    assert len(re.findall(r"^changed: \[.*\] => \(item=\S+ for kernel ", first.out, re.M)) == len(releases)
    # Clusters on the same release share the build key and the pushed image.
    by_release: dict[str, set[str]] = {}
    for host, cluster in fleet.hosts.items():
        by_release.setdefault(cluster["release"], set()).add(facts[host]["kmod_image"])
    assert all(len(images) == 1 for images in by_release.values())
    assert len({next(iter(images)) for images in by_release.values()}) == len(releases)
    first_name = fleet.lab.clusters[0]["name"]
    assert facts[fleet.twin]["kmod_build"] == facts[first_name]["kmod_build"]
    assert set(facts[first_name]["kmod_build"]["clusters"]) >= {first_name, fleet.twin}


def test_kmod_image_is_pinned_by_the_registry_digest(fleet: Fleet, runs: dict[str, Any]) -> None:
    first: Run = runs["first"]
    assert first.rc == 0, first.out[-4000:]
    for host, f in first.facts.items():
        build = f["kmod_build"]
        assert build["image"] == f"{fleet.repository}:{build['tag']}"
        assert build["tag"].startswith(build["kernel_version"] + "-")
        repo, digest = f["kmod_image"].split("@")
        assert repo == fleet.repository
        assert digest == skopeo_digest(fleet.lab, build["image"]), host
        assert f["kmod_publish"]["digest"] == digest
        labels = skopeo_labels(fleet.lab, f["kmod_image"])
        assert labels["io.kmod-layering.build-key"] == build["build_key"]
        assert labels["io.kmod-layering.kernel-version"] == build["kernel_version"]
        assert labels["io.kmod-layering.modules"] == "kmodlab_core,kmodlab_dep"
        cluster = fleet.hosts[host]
        release = fleet.lab.release(cluster["release"])
        assert build["kernel_version"] == release["kernel"]
        assert labels["io.kmod-layering.dtk"] == release["images"]["driver-toolkit"]


def test_rerun_builds_nothing_pushes_nothing_changes_nothing(fleet: Fleet, runs: dict[str, Any]) -> None:
    first: Run = runs["first"]
    second: Run = runs["second"]
    assert second.rc == 0, second.out[-4000:]
    assert first.changed() > 0
    assert second.changed() == 0, second.recap()
    # And --check agrees: nothing to build, nothing to push.
    assert runs["check_again"].rc == 0 and runs["check_again"].changed() == 0, runs["check_again"].recap()
    assert "Nothing to build: the registry has every image" in runs["check_again"].out
    for host, f in second.facts.items():
        assert f["kmod_build"]["built"] is False
        assert f["kmod_build"]["in_registry"] is True
        assert f["kmod_build"]["builds_in_play"] == 0
        assert f["kmod_publish"]["pushed"] is False
        assert f["kmod_image"] == first.facts[host]["kmod_image"]
    assert not re.search(r"^(changed|ok): \[.*\] => \(item=\S+ for kernel ", second.out, re.M)
    # The registry still serves the first run's images.
    for f in first.facts.values():
        assert skopeo_digest(fleet.lab, f["kmod_build"]["image"]) == f["kmod_image"].split("@")[1]


def test_no_cluster_was_written_and_pull_secrets_were_read(runs: dict[str, Any]) -> None:
    assert runs["first_writes"] == runs["before_writes"]
    assert runs["second_writes"] == runs["before_writes"]
    # Each cluster's pull secret was read (check, first and second run; the twin reads the first cluster's too).
    assert all(reads >= 3 for reads in runs["secret_reads"].values()), runs["secret_reads"]


def test_broken_module_stops_the_run_at_build_before_any_cluster_write(
    fleet: Fleet, runs: dict[str, Any], tmp_path: Path
) -> None:
    broken = tmp_path / "kmodlab_broken"
    broken.mkdir()
    (broken / "Kbuild").write_text("obj-m := kmodlab_broken.o\n")
    (broken / "kmodlab_broken.c").write_text(BROKEN_SOURCE)
    before = fleet.api_writes()
    secret_reads = fleet.secret_reads()
    result = fleet.run(modules=fleet.modules(broken), name="broken")
    assert result.rc != 0
    kernels = {fleet.lab.release(c["release"])["kernel"] for c in fleet.lab.clusters}
    for kernel in kernels:
        assert f"failed at module kmodlab_broken for kernel {kernel}" in result.out
    assert "error: 'kmodlab_no_such_symbol' undeclared" in result.out
    assert "No cluster was changed." in result.out
    # The play stopped at the build: publish never ran (no pull secret read, no push) and nothing was written.
    assert "ocp.kmod_layering.publish" not in result.out
    assert fleet.secret_reads() == secret_reads
    assert fleet.api_writes() == before
    assert result.facts == {}


def test_pull_secret_not_covering_the_registry_fails_naming_cluster_and_registry(
    fleet: Fleet, runs: dict[str, Any], tmp_path: Path
) -> None:
    """Push to the same registry under another name (localhost:<port>): the
    controller's auth file has it, the clusters' pull secrets do not."""
    assert runs["first"].rc == 0
    host = fleet.lab.registry["host"]
    other = host.replace("127.0.0.1", "localhost")
    auths = json.loads(Path(fleet.lab.registry["auth_file"]).read_text())["auths"]
    auths[other] = auths[host]
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": auths}))
    other_fleet = Fleet(fleet.lab, tmp_path, fleet.repository.replace(host, other), auth_file=str(auth_file))
    before = fleet.api_writes()
    result = other_fleet.run(name="uncovered")
    assert result.rc != 0
    for cluster in fleet.lab.clusters:
        assert (
            f"cluster {cluster['name']}: its pull secret (openshift-config/pull-secret) has no credentials for "
            f"registry {other}"
        ) in result.out
    # Same storage, same content-addressed tags: nothing was built or pushed.
    assert not re.search(r"^changed: .*for kernel", result.out, re.M)
    assert "Push the images the registry does not have yet" not in result.out
    assert fleet.api_writes() == before
    # The credentials are not shown.
    password = base64.b64decode(auths[host]["auth"]).decode().split(":", 1)[1]
    assert password not in result.out


def _adhoc(module: str, args: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=f"{CHECKOUT / '.build' / 'collections'}:{CHECKOUT / 'tests'}",
        ANSIBLE_COLLECTIONS_PATH=str(CHECKOUT / ".build" / "collections"),
        ANSIBLE_CONFIG=str(CHECKOUT / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    proc = subprocess.run(
        [str(CHECKOUT / ".venv" / "bin" / "ansible"), "localhost", "-m", module, "-a", json.dumps(args)],
        capture_output=True, text=True, env=env, cwd=CHECKOUT, timeout=300, check=False,
    )  # fmt: skip
    out, _end = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{") :])
    return dict(out["plays"][0]["tasks"][0]["hosts"]["localhost"])


def test_registry_image_info_reads_the_registry(fleet: Fleet, runs: dict[str, Any]) -> None:
    f = next(iter(runs["first"].facts.values()))
    auth = {"auth_file": str(fleet.lab.registry["auth_file"]), "ca_path": str(fleet.lab.ca_file)}
    found = _adhoc("ocp.kmod_layering.registry_image_info", {"image": f["kmod_build"]["image"], "labels": True, **auth})
    assert found["exists"] is True and found["changed"] is False
    assert found["pullspec"] == f["kmod_image"]
    assert found["digest"] == skopeo_digest(fleet.lab, f["kmod_build"]["image"])
    assert found["labels"]["io.kmod-layering.build-key"] == f["kmod_build"]["build_key"]
    missing = _adhoc("ocp.kmod_layering.registry_image_info", {"image": f"{fleet.repository}:no-such-tag", **auth})
    assert missing["exists"] is False and not missing.get("failed")
    assert "digest" not in missing
    # Without credentials the registry refuses: an error, not "missing".
    refused = _adhoc("ocp.kmod_layering.registry_image_info",
                     {"image": f["kmod_build"]["image"], "ca_path": str(fleet.lab.ca_file)})  # fmt: skip
    assert refused.get("failed") and "authentication to registry" in refused["msg"]


def test_module_built_for_another_kernel_stops_the_run_before_any_cluster_write(
    fleet: Fleet, runs: dict[str, Any], tmp_path: Path
) -> None:
    """The case seen in the wild: a release whose Driver Toolkit was built for
    another kernel than its RHCOS. resolve refuses it unless the user allows
    the mismatch; even then a module compiled against the DTK's kernel must be
    refused by the vermagic check, before anything is pushed or written."""
    first, second = fleet.lab.releases[0], fleet.lab.releases[1]
    rhcos_release = releases.by_version(first["version"])
    rhcos_kernel, dtk_kernel = rhcos_release.kernel, releases.by_version(second["version"]).kernel
    assert rhcos_kernel != dtk_kernel
    components = {"driver-toolkit": second["images"]["driver-toolkit"],
                  rhcos_release.os_tag: first["images"][rhcos_release.os_tag]}  # fmt: skip
    layout = images.write_oci_layout(
        tmp_path / "mismatched-release",
        [{"release-manifests/image-references": json.dumps(images.image_references(rhcos_release, components)).encode(),
          "release-manifests/release-metadata": json.dumps(images.release_metadata(rhcos_release)).encode()}],
        labels={"io.openshift.release": rhcos_release.version}, history=["mismatched release"],
    )  # fmt: skip
    pullspec = f"{fleet.lab.registry['host']}/kmodlab-tests/ocp-release:mismatched"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-authfile", str(fleet.lab.registry["auth_file"]),
         "--dest-cert-dir", _cert_dir(fleet.lab), f"oci:{layout.path}:latest", f"docker://{pullspec}"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    modules = [{"name": "kmodlab_core", "source": {"path": str(FIXTURE_KMODS / "kmodlab_core")},
                # What a user might write to get past "no headers for the target kernel".
                "build_command": f'make -C /lib/modules/{dtk_kernel}/build M="$PWD" modules'}]  # fmt: skip
    before = fleet.api_writes()

    refused = fleet.run("-e", f"kmod_release={pullspec}", modules=modules, name="mismatch-refused")
    assert refused.rc != 0
    assert "mismatch" in refused.out and rhcos_kernel in refused.out and dtk_kernel in refused.out

    allowed = fleet.run("-e", f"kmod_release={pullspec}", "-e", "kmod_allow_kernel_mismatch=true",
                        modules=modules, name="mismatch-allowed")  # fmt: skip
    assert allowed.rc != 0
    assert ("vermagic mismatch: module kmodlab_core" in allowed.out
            and f"was built for kernel {dtk_kernel}" in allowed.out
            and f"the target kernel is {rhcos_kernel}" in allowed.out), allowed.out[-3000:]  # fmt: skip
    assert "No cluster was changed." in allowed.out
    assert "ocp.kmod_layering.publish" not in allowed.out
    assert fleet.api_writes() == before


# ------------------------------------------------------------------ layer compression

GZIP_LAYER_TYPES = {"application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip"}


def skopeo_layer_types(lab: LabState, ref: str) -> list[str]:
    """The layer media types of the manifest the registry serves (read by skopeo, not by the collection)."""
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--authfile", str(lab.registry["auth_file"]), "--cert-dir", _cert_dir(lab),
         f"docker://{ref}"],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return [layer["mediaType"] for layer in json.loads(raw)["layers"]]


def test_publish_pushes_gzip_layers_even_when_podman_defaults_to_zstd(lab: LabState, tmp_path: Path) -> None:
    """A podman whose containers.conf says zstd (recent Fedora-based execution
    environments) would push zstd layers, which rpm-ostree of several 4.1x
    releases cannot read: the publish role must push gzip."""
    conf = tmp_path / "containers-zstd.conf"
    conf.write_text('[engine]\ncompression_format = "zstd"\n')
    repository = f"{lab.registry['host']}/kmodtest/zstd-default-{uuid.uuid4().hex[:10]}"
    zstd_fleet = Fleet(lab, tmp_path, repository)
    # Unique module content: its layer has never been pushed anywhere, so podman compresses it afresh.
    module = tmp_path / "kmodlab_gz"
    module.mkdir()
    (module / "Kbuild").write_text("obj-m := kmodlab_gz.o\n")
    (module / "kmodlab_gz.c").write_text(
        '// SPDX-License-Identifier: GPL-2.0\n#include <linux/module.h>\n'
        'static int __init kmodlab_gz_init(void) { return 0; }\nmodule_init(kmodlab_gz_init);\n'
        'MODULE_LICENSE("GPL");\nMODULE_DESCRIPTION("%s");\n' % uuid.uuid4().hex)
    first = lab.clusters[0]["name"]
    result = zstd_fleet.run("--limit", first, modules=[{"name": "kmodlab_gz", "source": {"path": str(module)}}],
                            name="zstd-default", env={"CONTAINERS_CONF": str(conf)})
    assert result.rc == 0, result.out[-4000:]
    image = result.facts[first]["kmod_image"]
    assert image.startswith(repository + "@sha256:")
    types = skopeo_layer_types(lab, image)
    assert types and set(types) <= GZIP_LAYER_TYPES, types


def test_an_image_with_zstd_layers_is_refused_before_it_is_pinned(lab: LabState, tmp_path: Path) -> None:
    """registry_image_info require_gzip_layers (the publish role's gate) reads
    the manifest from the registry and refuses a zstd layer, naming the image
    and the layer; a gzip image of the same content passes."""
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "payload").write_text(uuid.uuid4().hex + "\n")
    (context / "Containerfile").write_text("FROM scratch\nCOPY payload /payload\n")
    repository = f"{lab.registry['host']}/kmodtest/compression-{uuid.uuid4().hex[:10]}"
    common = ["--authfile", str(lab.registry["auth_file"]), "--cert-dir", _cert_dir(lab)]
    subprocess.run(["podman", "build", "--isolation", "chroot", "-q", "-t", f"{repository}:zstd", str(context)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    try:
        subprocess.run(["podman", "push", "--compression-format", "zstd", *common, f"{repository}:zstd"],
                       check=True, capture_output=True, timeout=300)  # fmt: skip
    finally:
        subprocess.run(["podman", "rmi", "--ignore", f"{repository}:zstd"], capture_output=True, check=False)
    zstd_types = skopeo_layer_types(lab, f"{repository}:zstd")
    assert zstd_types == ["application/vnd.oci.image.layer.v1.tar+zstd"], zstd_types
    # A gzip image: the lab's own release component, written by the lab with gzip layers.
    gzip_image = lab.releases[0]["images"]["driver-toolkit"]
    assert set(skopeo_layer_types(lab, gzip_image)) <= GZIP_LAYER_TYPES
    auth = {"auth_file": str(lab.registry["auth_file"]), "ca_path": str(lab.ca_file)}

    refused = _adhoc("ocp.kmod_layering.registry_image_info",
                     {"image": f"{repository}:zstd", "require_gzip_layers": True, **auth})  # fmt: skip
    assert refused.get("failed"), refused
    msg = refused["msg"]
    digest = skopeo_digest(lab, f"{repository}:zstd")
    assert f"{repository}:zstd ({digest})" in msg
    assert "layer 1 of 1" in msg and "application/vnd.oci.image.layer.v1.tar+zstd" in msg and "not gzip" in msg
    assert "--compression-format gzip" in msg
    assert refused["layers"][0]["compression"] == "zstd"

    passed = _adhoc("ocp.kmod_layering.registry_image_info", {"image": gzip_image, "require_gzip_layers": True, **auth})
    assert not passed.get("failed"), passed.get("msg")
    assert passed["pullspec"] == gzip_image
    assert [layer["media_type"] for layer in passed["layers"]] == skopeo_layer_types(lab, gzip_image)
