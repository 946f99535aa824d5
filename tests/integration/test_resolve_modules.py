"""ocp_release_image and rhcos_kernel_version, run by real `ansible` against
the lab registries (TLS with the lab CA, Basic auth and the token flow).

Expected values come from outside the modules: digests from `skopeo inspect`
of the registry, versions / kernels / OS tags from kmodlab/releases.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kmodlab import releases
from kmodlab.images import write_oci_layout

pytestmark = pytest.mark.lab

CHECKOUT = Path(__file__).resolve().parents[2]
RELEASE_REPO = "openshift-release-dev/ocp-release"
BYTES_REPORT: dict[str, dict[str, int]] = {}


# --- helpers ------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{CHECKOUT / '.venv' / 'bin'}:{env.get('PATH', '')}",
        PYTHONPATH=f"{CHECKOUT / '.build' / 'collections'}:{CHECKOUT / 'tests'}",
        ANSIBLE_COLLECTIONS_PATH=str(CHECKOUT / ".build" / "collections"),
        ANSIBLE_CONFIG=str(CHECKOUT / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    return env


def run_module(name: str, args: dict[str, Any], check: bool = False) -> dict[str, Any]:
    """Run ocp.kmod_layering.<name> on localhost with real ansible; the task result."""
    argv = [str(CHECKOUT / ".venv" / "bin" / "ansible"), "localhost", "-m", f"ocp.kmod_layering.{name}",
            "-a", json.dumps(args)]
    if check:
        argv.append("--check")
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(), cwd=CHECKOUT, timeout=600, check=False)
    try:
        # the json callback's document comes first; other callbacks (profile_tasks) may follow
        out, _end = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{"):])
        result = out["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError) as exc:  # ValueError: also no "{" at all
        raise AssertionError(f"no JSON result from ansible ({exc}):\n{proc.stdout}\n{proc.stderr}")
    result["_rc"] = proc.returncode
    return result


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert not result.get("failed"), result.get("msg")
    assert result["_rc"] == 0
    return result


def failed(result: dict[str, Any]) -> str:
    assert result.get("failed"), result
    assert result["_rc"] != 0
    return str(result["msg"])


def cert_dir(lab: Any) -> Path:
    """A --cert-dir for skopeo / podman holding the lab CA (under pytest's tmp dir)."""
    path = CERT_DIRS[0] / "certs"
    path.mkdir(exist_ok=True)
    (path / "ca.crt").write_bytes(Path(lab.ca_file).read_bytes())
    return path


def skopeo(lab: Any, *args: str) -> bytes:
    certs = str(cert_dir(lab))
    argv = ["skopeo", *args]
    for i, arg in enumerate(argv):
        if arg == "{auth}":
            argv[i : i + 1] = ["--authfile", lab.registry.auth_file, "--cert-dir", certs]
        elif arg == "{dest-auth}":
            argv[i : i + 1] = ["--dest-authfile", lab.registry.auth_file, "--dest-cert-dir", certs]
    return subprocess.run(argv, capture_output=True, check=True, timeout=300).stdout


def registry_digest(lab: Any, pullspec: str) -> tuple[str, dict[str, Any]]:
    """sha256 of the manifest bytes as skopeo reads them from the registry."""
    raw = skopeo(lab, "inspect", "--raw", "{auth}", f"docker://{pullspec}")
    return "sha256:" + hashlib.sha256(raw).hexdigest(), json.loads(raw)


def full_size(lab: Any, pullspec: str) -> int:
    """manifest + config + all layers, as stored in the registry."""
    raw = skopeo(lab, "inspect", "--raw", "{auth}", f"docker://{pullspec}")
    manifest = json.loads(raw)
    return len(raw) + manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])


def auth(lab: Any, **extra: Any) -> dict[str, Any]:
    args = {"auth_file": lab.registry.auth_file, "ca_path": lab.ca_file}
    args.update(extra)
    return args


def push_oci(lab: Any, tmp_path: Path, layers: list[dict[str, bytes]], repo_tag: str) -> str:
    layout = write_oci_layout(tmp_path / repo_tag.replace("/", "_").replace(":", "_"), layers,
                              labels={"io.openshift.release": "crafted"}, history=["h3 test"] * len(layers))
    skopeo(lab, "copy", "--quiet", "{dest-auth}", f"oci:{layout.path}:latest", f"docker://{lab.registry.host}/{repo_tag}")
    return layout.digest


def release_files(version: str, tags: dict[str, str]) -> dict[str, bytes]:
    stream = {
        "kind": "ImageStream", "apiVersion": "image.openshift.io/v1", "metadata": {"name": version},
        "spec": {"tags": [{"name": n, "from": {"kind": "DockerImage", "name": p}} for n, p in tags.items()]},
    }
    meta = {"kind": "cincinnati-metadata-v0", "version": version, "previous": []}
    return {"release-manifests/image-references": json.dumps(stream).encode(),
            "release-manifests/release-metadata": json.dumps(meta).encode()}


CERT_DIRS: list[Path] = []


@pytest.fixture(scope="module")
def lab_releases(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    CERT_DIRS[:] = [tmp_path_factory.mktemp("h3-resolve")]
    assert len(lab.releases) >= 2, "the lab must publish at least two releases"
    return lab.releases


# --- releases: digests, components, kernels --------------------------------------------


def test_release_image_by_version_basic_auth(lab: Any, lab_releases: list[dict[str, Any]]) -> None:
    for release in lab_releases:
        expected = releases.by_version(release["version"])
        result = ok(run_module("ocp_release_image", auth(
            lab, version=release["version"], arch=expected.arch,
            release_registry=lab.registry.host, release_repository=RELEASE_REPO)))
        digest, _manifest = registry_digest(lab, release["pullspec"])
        assert result["digest"] == digest
        assert result["pullspec"] == f"{lab.registry.host}/{RELEASE_REPO}@{digest}"
        assert result["version"] == expected.version
        assert result["os_image_tag"] == expected.os_tag
        assert result["driver_toolkit_tag"] == "driver-toolkit"
        assert set(result["components"]) == {"driver-toolkit", expected.os_tag}
        for extra in expected.extra_tags:
            assert extra in result["available_tags"]
        for name, pullspec in result["components"].items():
            comp_digest = pullspec.partition("@")[2]
            assert comp_digest == registry_digest(lab, pullspec)[0]
            assert pullspec == release["images"][name]
        assert result["os_image"] == result["components"][expected.os_tag]
        assert result["layers_read"] == 1
        assert result["changed"] is False


def test_release_image_by_digest_over_token_auth(lab: Any, lab_releases: list[dict[str, Any]]) -> None:
    release = lab_releases[-1]
    digest = registry_digest(lab, release["pullspec"])[0]
    pullspec = f"{lab.registry.token_host}/{RELEASE_REPO}@{digest}"
    result = ok(run_module("ocp_release_image", auth(lab, pullspec=pullspec), check=True))
    assert result["digest"] == digest
    assert result["version"] == release["version"]
    assert result["pullspec"] == pullspec


def test_kernel_of_each_release(lab: Any, lab_releases: list[dict[str, Any]]) -> None:
    for release in lab_releases:
        expected = releases.by_version(release["version"])
        rhcos = release["images"][expected.os_tag]
        dtk = release["images"]["driver-toolkit"]
        result = ok(run_module("rhcos_kernel_version", auth(lab, image=rhcos, driver_toolkit_image=dtk)))
        assert result["kernel_version"] == expected.kernel
        assert result["dtk_kernel_version"] == expected.kernel
        assert result["kernel_match"] is True
        assert result["image_digest"] == registry_digest(lab, rhcos)[0]
        if expected.metalayer:
            assert result["source"].startswith("metalayer meta.json")
        else:
            assert f"usr/lib/modules/{expected.kernel}/vmlinuz" in result["source"]
        assert "etc/driver-toolkit-release.json" in result["dtk_source"]


def test_kernel_over_token_auth(lab: Any, lab_releases: list[dict[str, Any]]) -> None:
    release = lab_releases[0]
    expected = releases.by_version(release["version"])
    rhcos = release["images"][expected.os_tag].replace(lab.registry.host, lab.registry.token_host)
    result = ok(run_module("rhcos_kernel_version", auth(lab, image=rhcos)))
    assert result["kernel_version"] == expected.kernel


def test_cached_rerun_fetches_nothing_and_reads_less_than_images(
        lab: Any, lab_releases: list[dict[str, Any]], tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    for release in lab_releases:
        expected = releases.by_version(release["version"])
        runs = []
        for _attempt in range(2):
            rel = ok(run_module("ocp_release_image", auth(lab, pullspec=release["pullspec"], cache_dir=cache)))
            ker = ok(run_module("rhcos_kernel_version", auth(
                lab, image=rel["os_image"], driver_toolkit_image=rel["driver_toolkit_image"], cache_dir=cache)))
            assert ker["kernel_version"] == expected.kernel
            runs.append((rel, ker))
        (rel1, ker1), (rel2, ker2) = runs
        assert rel1["bytes_fetched"] > 0 and ker1["bytes_fetched"] > 0
        assert rel2["bytes_fetched"] == 0 and ker2["bytes_fetched"] == 0
        assert rel2["digest"] == rel1["digest"]
        assert (ker2["kernel_version"], ker2["source"]) == (ker1["kernel_version"], ker1["source"])
        # release: manifest + config + at most the last layer
        manifest = registry_digest(lab, release["pullspec"])[1]
        release_full = full_size(lab, release["pullspec"])
        assert rel1["bytes_fetched"] <= release_full - sum(l["size"] for l in manifest["layers"][:-1])
        images_full = full_size(lab, rel1["os_image"]) + full_size(lab, rel1["driver_toolkit_image"])
        assert ker1["bytes_fetched"] < images_full
        BYTES_REPORT[release["version"]] = {
            "release_bytes_fetched": rel1["bytes_fetched"], "release_image_size": release_full,
            "kernel_bytes_fetched": ker1["bytes_fetched"], "rhcos_plus_dtk_size": images_full,
            "kernel_layers_read": ker1["layers_read"]}
    print("\nbytes fetched vs image sizes:", json.dumps(BYTES_REPORT, indent=1))


# --- errors ---------------------------------------------------------------------------------------


def test_unknown_release_and_repository(lab: Any) -> None:
    msg = failed(run_module("ocp_release_image", auth(
        lab, version="4.99.1", release_registry=lab.registry.host, release_repository=RELEASE_REPO)))
    assert "4.99.1-x86_64" in msg and "not found" in msg
    msg = failed(run_module("rhcos_kernel_version", auth(lab, image=f"{lab.registry.host}/no/such-repo:1")))
    assert "no/such-repo" in msg and "not found" in msg


def test_wrong_credentials_name_the_registry(lab: Any, lab_releases: list[dict[str, Any]], tmp_path: Path) -> None:
    release = lab_releases[0]
    for host in (lab.registry.host, lab.registry.token_host):
        pullspec = release["pullspec"].replace(lab.registry.host, host)
        result = run_module("ocp_release_image", {
            "pullspec": pullspec, "ca_path": lab.ca_file, "username": lab.registry.username,
            "password": "Wr0ngPassw0rdValue"})
        msg = failed(result)
        assert f"registry {host}" in msg and "authentication" in msg
        assert "username/password given" in msg and lab.registry.username in msg
        assert "Wr0ngPassw0rdValue" not in json.dumps(result)
    # anonymous: the message says no credentials were found and where they were looked for
    empty = tmp_path / "empty-auth.json"
    empty.write_text('{"auths": {}}')
    msg = failed(run_module("ocp_release_image", {"pullspec": release["pullspec"], "ca_path": lab.ca_file,
                                                  "auth_file": str(empty)}))
    assert f"registry {lab.registry.host}" in msg and str(empty) in msg


def test_tls_failure_says_how_to_give_a_ca(lab: Any, lab_releases: list[dict[str, Any]]) -> None:
    msg = failed(run_module("ocp_release_image", {"pullspec": lab_releases[0]["pullspec"],
                                                  "auth_file": lab.registry.auth_file}))
    assert "TLS" in msg and "ca_path" in msg and "validate_certs" in msg


def test_manifest_list_arch(lab: Any, lab_releases: list[dict[str, Any]]) -> None:
    """A multi-arch release (a manifest list with amd64 only): x86_64 resolves, aarch64 fails."""
    release = lab_releases[0]
    version = release["version"]
    listname = f"h3-list-{os.getpid()}"
    mirror_repo = "h3test/ocp-release"  # a "mirror" repository, to exercise release_repository too
    dest = f"{lab.registry.host}/{mirror_repo}:{version}-multi"
    common = ["--authfile", lab.registry.auth_file, "--cert-dir", str(cert_dir(lab))]
    subprocess.run(["podman", "manifest", "create", listname], check=True, capture_output=True)
    try:
        subprocess.run(["podman", "manifest", "add", *common, listname, f"docker://{release['pullspec']}"],
                       check=True, capture_output=True)
        subprocess.run(["podman", "manifest", "push", "--all", *common, listname, f"docker://{dest}"],
                       check=True, capture_output=True)
    finally:
        subprocess.run(["podman", "manifest", "rm", listname], capture_output=True, check=False)
    list_digest, index = registry_digest(lab, dest)
    assert "manifests" in index
    release_digest = registry_digest(lab, release["pullspec"])[0]

    result = ok(run_module("ocp_release_image", auth(
        lab, version=version, multi_arch=True, arch="x86_64",
        release_registry=lab.registry.host, release_repository=mirror_repo)))
    assert result["digest"] == list_digest
    assert result["platform_digest"] == release_digest
    assert result["version"] == version

    msg = failed(run_module("ocp_release_image", auth(
        lab, version=version, multi_arch=True, arch="aarch64",
        release_registry=lab.registry.host, release_repository=mirror_repo)))
    assert "arm64" in msg and "platforms present: linux/amd64" in msg and f"{version}-multi" in msg


def test_release_without_usable_os_tag(lab: Any, lab_releases: list[dict[str, Any]], tmp_path: Path) -> None:
    images = lab_releases[0]["images"]
    tags = {"driver-toolkit": images["driver-toolkit"], "cli": images["driver-toolkit"],
            "rhel-coreos-9": images["driver-toolkit"]}
    push_oci(lab, tmp_path, [{"etc/base": b"x"}, release_files("4.16.99", tags)], "h3test/release:bad-os")
    msg = failed(run_module("ocp_release_image", auth(lab, pullspec=f"{lab.registry.host}/h3test/release:bad-os")))
    assert "4.16.99" in msg and "no usable OS image tag" in msg
    assert "cli, driver-toolkit, rhel-coreos-9" in msg


def test_not_a_release_image(lab: Any, lab_releases: list[dict[str, Any]]) -> None:
    release = lab_releases[0]
    dtk = release["images"]["driver-toolkit"]
    msg = failed(run_module("ocp_release_image", auth(lab, pullspec=dtk)))
    assert "not a release image" in msg and "release-manifests/image-references" in msg


def test_crafted_release_resolves_rhel10_stream(lab: Any, lab_releases: list[dict[str, Any]], tmp_path: Path) -> None:
    a, b = lab_releases[0]["images"], lab_releases[1]["images"]
    os_a = releases.by_version(lab_releases[0]["version"]).os_tag
    os_b = releases.by_version(lab_releases[1]["version"]).os_tag
    tags = {"driver-toolkit": a["driver-toolkit"], "rhel-coreos": a[os_a],
            "driver-toolkit-10": b["driver-toolkit"], "rhel-coreos-10": b[os_b]}
    push_oci(lab, tmp_path, [release_files("4.21.2", tags)], "h3test/release:4.21.2")
    pullspec = f"{lab.registry.host}/h3test/release:4.21.2"
    result = ok(run_module("ocp_release_image", auth(lab, pullspec=pullspec)))
    assert (result["os_image_tag"], result["os_image"]) == ("rhel-coreos", a[os_a])
    result = ok(run_module("ocp_release_image", auth(lab, pullspec=pullspec, os_stream="rhel-10")))
    assert (result["os_image_tag"], result["driver_toolkit_tag"]) == ("rhel-coreos-10", "driver-toolkit-10")
    assert result["driver_toolkit_image"] == b["driver-toolkit"]


def test_dtk_rhcos_kernel_mismatch(lab: Any, lab_releases: list[dict[str, Any]]) -> None:
    first, second = lab_releases[0], lab_releases[1]
    rhcos = first["images"][releases.by_version(first["version"]).os_tag]
    dtk = second["images"]["driver-toolkit"]
    kernel_a = releases.by_version(first["version"]).kernel
    kernel_b = releases.by_version(second["version"]).kernel
    assert kernel_a != kernel_b
    result = run_module("rhcos_kernel_version", auth(lab, image=rhcos, driver_toolkit_image=dtk))
    msg = failed(result)
    assert "mismatch" in msg and kernel_a in msg and kernel_b in msg
    assert rhcos.split("@")[1] in msg and dtk.split("@")[1] in msg
    allowed = ok(run_module("rhcos_kernel_version", auth(lab, image=rhcos, driver_toolkit_image=dtk,
                                                         allow_kernel_mismatch=True)))
    assert (allowed["kernel_version"], allowed["dtk_kernel_version"], allowed["kernel_match"]) == (
        kernel_a, kernel_b, False)


def test_image_mirrors_rewrite_components(lab: Any, lab_releases: list[dict[str, Any]]) -> None:
    """Components read from a mirror (the token-auth registry serves the same storage)."""
    release = lab_releases[-1]
    expected = releases.by_version(release["version"])
    art = "openshift-release-dev/ocp-v4.0-art-dev"
    mirrors = [{"source": f"{lab.registry.host}/{art}", "mirror": f"{lab.registry.token_host}/{art}"}]
    result = ok(run_module("ocp_release_image", auth(lab, pullspec=release["pullspec"], image_mirrors=mirrors)))
    for name, original in release["images"].items():
        assert result["source_components"][name] == original
        assert result["components"][name] == original.replace(lab.registry.host, lab.registry.token_host)
    kernel = ok(run_module("rhcos_kernel_version", auth(lab, image=result["os_image"],
                                                        driver_toolkit_image=result["driver_toolkit_image"])))
    assert kernel["kernel_version"] == expected.kernel
    assert kernel["image"].startswith(lab.registry.token_host)


# --- releases that cannot be layered (before 4.12) -------------------------------------------


def _push_411_release(lab: Any, tmp_path: Path, lab_releases: list[dict[str, Any]]) -> str:
    """A 4.11-style payload: machine-os-content (the only OS image tag before
    4.12) and driver-toolkit, both naming images the registry has."""
    images = lab_releases[0]["images"]
    os_tag = releases.by_version(lab_releases[0]["version"]).os_tag
    tags = {"driver-toolkit": images["driver-toolkit"], "machine-os-content": images[os_tag],
            "cli": images["driver-toolkit"]}
    push_oci(lab, tmp_path, [{"etc/base": b"x"}, release_files("4.11.59", tags)], "h3test/release:4.11.59-x86_64")
    return f"{lab.registry.host}/h3test/release:4.11.59-x86_64"


def test_release_411_is_refused_naming_the_release_and_the_minimum(
        lab: Any, lab_releases: list[dict[str, Any]], tmp_path: Path) -> None:
    pullspec = _push_411_release(lab, tmp_path, lab_releases)
    for args in ({"pullspec": pullspec},
                 {"version": "4.11.59", "release_registry": lab.registry.host, "release_repository": "h3test/release"},
                 {"pullspec": pullspec, "os_image_tag": "machine-os-content"}):
        result = run_module("ocp_release_image", auth(lab, **args))
        msg = failed(result)
        assert "release 4.11.59 cannot be layered" in msg, msg
        assert "from OpenShift 4.12 on" in msg and "machine-os-content" in msg
        assert result["layering_supported"] is False
        assert "os_image" not in result and "components" not in result


def test_release_411_stops_site_yml_before_any_build_or_cluster_write(
        lab: Any, lab_releases: list[dict[str, Any]], tmp_path: Path) -> None:
    from kmodlab.apiserver import RequestLogClient

    pullspec = _push_411_release(lab, tmp_path, lab_releases)
    cluster = lab.clusters[0]
    api = RequestLogClient(cluster["api_url"], cluster["token"], lab.ca_file)
    writes_before = api.writes()
    repository = f"{lab.registry.host}/h3test/never-pushed-{os.getpid()}"
    run = subprocess.run(
        [str(CHECKOUT / ".venv" / "bin" / "ansible-playbook"), "-i", str(lab.inventory), "--limit", cluster["name"],
         "-e", f"kmod_release={pullspec}", "-e", f"kmod_image_repository={repository}",
         "-e", f"kmod_cache_dir={tmp_path / 'cache'}", str(CHECKOUT / "playbooks" / "site.yml")],
        env=dict(_env(), ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_NOCOLOR="1"),
        capture_output=True, text=True, timeout=900, cwd=CHECKOUT, check=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert f"Cluster {cluster['name']}: cannot resolve the release" in out, out[-3000:]
    assert "release 4.11.59 cannot be layered" in out and "from OpenShift 4.12 on" in out
    # Stopped at resolve: no build ran, nothing reached the registry, nothing was written to the cluster.
    # (The plan play before it names the build recipe through the build role's
    # recipe tasks: look at what ran from the resolve play on, up to the recap
    # and the task-timing summary, which list every task of the run.)
    after_plan = out[out.index("PLAY [Resolve"):out.index("PLAY RECAP")]
    assert "ocp.kmod_layering.build :" not in after_plan and "ocp.kmod_layering.publish :" not in after_plan
    assert api.writes() == writes_before
    proc = subprocess.run(["skopeo", "list-tags", "--authfile", lab.registry.auth_file, "--cert-dir",
                           str(cert_dir(lab)), f"docker://{repository}"], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 or not json.loads(proc.stdout)["Tags"]
