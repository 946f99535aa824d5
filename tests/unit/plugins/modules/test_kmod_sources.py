# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""kmod_sources, layered_image_plan and registry_credentials_check run in-process on
real inputs: local directories, a real git repository, real tar/zip archives."""

import base64
import hashlib
import io
import json
import subprocess
import tarfile
import zipfile

import pytest

from ansible_collections.ocp.kmod_layering.plugins.modules import kmod_sources, layered_image_plan, registry_credentials_check
from ansible_collections.ocp.kmod_layering.tests.unit.plugins.modules.runner import run


def _module_tree(root, greeting=b"hello"):
    (root / "fw").mkdir(parents=True)
    (root / "Kbuild").write_bytes(b"obj-m := m.o\n")
    (root / "m.c").write_bytes(b'static char *greeting = "' + greeting + b'";\n')
    (root / "fw" / "m.bin").write_bytes(b"\x00\x01")
    return root


def _git(cwd, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                           "-c", "init.defaultBranch=main", *args],
                          cwd=str(cwd), check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    work = tmp_path / "repo"
    _module_tree(work / "drivers" / "m")
    _git(work, "init", "--quiet")
    _git(work, "add", ".")
    _git(work, "commit", "--quiet", "-m", "one")
    first = _git(work, "rev-parse", "HEAD")
    _git(work, "tag", "v1")
    (work / "drivers" / "m" / "m.c").write_bytes(b'static char *greeting = "two";\n')
    _git(work, "commit", "--quiet", "-am", "two")
    return "file://%s" % work, first, _git(work, "rev-parse", "HEAD")


def test_local_path_is_fingerprinted_in_place(tmp_path):
    src = _module_tree(tmp_path / "m")
    failed, result = run(kmod_sources, {"modules": [{"name": "m", "source": {"path": str(src)}, "options": "a=1",
                                                     "firmware_dir": "fw"}],
                                        "cache_dir": str(tmp_path / "cache")})
    assert not failed, result
    assert result["changed"] is False
    (entry,) = result["modules"]
    assert entry["path"] == str(src)
    assert entry["fingerprint"] == entry["source"] and entry["fingerprint"].startswith("sha256:")
    assert (entry["options"], entry["firmware_dir"], entry["load_at_boot"]) == ("a=1", "fw", True)
    assert "build_command" not in entry

    def fingerprint(path):
        failed, result = run(kmod_sources, {"modules": [{"name": "m", "source": {"path": str(path)}}],
                                            "cache_dir": str(tmp_path / "cache")})
        assert not failed, result
        return result["modules"][0]["fingerprint"]

    # The same files elsewhere: the same fingerprint; one byte changed: another.
    assert fingerprint(_module_tree(tmp_path / "copy" / "m")) == entry["fingerprint"]
    assert fingerprint(_module_tree(tmp_path / "edited" / "m", greeting=b"hellO")) != entry["fingerprint"]


def test_git_version_resolves_to_a_commit_and_exports_it(tmp_path, repo):
    url, first, head = repo
    cache = str(tmp_path / "cache")
    modules = [{"name": "m", "source": {"git": url, "version": "v1", "subdir": "drivers/m"}},
               {"name": "n", "source": {"git": url, "subdir": "drivers/m"}}]
    failed, result = run(kmod_sources, {"modules": modules, "cache_dir": cache})
    assert not failed, result
    tagged, default = result["modules"]
    assert tagged["commit"] == first and default["commit"] == head
    assert tagged["source"] == "git+%s@%s#drivers/m" % (url, first)
    assert b'"hello"' in (tmp_path / "cache" / "trees" / ("git-" + first) / "drivers" / "m" / "m.c").read_bytes()
    assert tagged["fingerprint"] != default["fingerprint"]
    assert tagged["path"].endswith("git-%s/drivers/m" % first)
    # A commit already in the mirror needs no fetch.
    pinned = {"name": "m", "source": {"git": url, "version": first, "subdir": "drivers/m"}}
    failed, again = run(kmod_sources, {"modules": [pinned], "cache_dir": cache})
    assert not failed and again["fetched"] == []
    assert again["modules"][0]["fingerprint"] == tagged["fingerprint"]


def test_git_errors_name_the_module(tmp_path, repo):
    url = repo[0]
    failed, result = run(kmod_sources, {"modules": [{"name": "m", "source": {"git": url, "version": "v9"}}],
                                        "cache_dir": str(tmp_path / "cache")})
    assert failed
    assert "module m: git version 'v9' is not a branch, tag or commit of %s" % url in result["msg"]
    assert "v1" in result["msg"]
    failed, result = run(kmod_sources, {"modules": [{"name": "m", "source": {"git": url, "subdir": "nope"}}],
                                        "cache_dir": str(tmp_path / "cache")})
    assert failed and "module m: no directory 'nope' in %s" % url in result["msg"]
    failed, result = run(kmod_sources, {"modules": [{"name": "m", "source": {"git": str(tmp_path / "none")}}],
                                        "cache_dir": str(tmp_path / "cache")})
    assert failed and "module m: cannot clone git repository" in result["msg"]


def test_archives_tar_and_zip(tmp_path):
    src = _module_tree(tmp_path / "src" / "pkg")
    tarball = tmp_path / "m.tar.gz"
    with tarfile.open(str(tarball), "w:gz") as tar:
        tar.add(str(src), arcname="pkg")
    zipped = tmp_path / "m.zip"
    with zipfile.ZipFile(str(zipped), "w") as archive:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                archive.write(str(path), "pkg/" + str(path.relative_to(src)))
    failed, result = run(kmod_sources, {"modules": [
        {"name": "t", "source": {"archive": str(tarball), "subdir": "pkg"}},
        {"name": "z", "source": {"archive": str(zipped), "subdir": "pkg"}}], "cache_dir": str(tmp_path / "cache")})
    assert not failed, result
    t, z = result["modules"]
    assert t["source"] == "archive+%s@sha256:%s#pkg" % (tarball, hashlib.sha256(tarball.read_bytes()).hexdigest())
    # Same files, same fingerprint, whatever the packaging (zip drops exec bits:
    # none here), and the same as the unpacked directory given as a path.
    failed, unpacked = run(kmod_sources, {"modules": [{"name": "p", "source": {"path": str(src)}}],
                                          "cache_dir": str(tmp_path / "cache")})
    assert not failed, unpacked
    assert t["fingerprint"] == z["fingerprint"] == unpacked["modules"][0]["fingerprint"]


def test_archive_escaping_its_directory_is_refused(tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(str(evil), "w") as tar:
        info = tarfile.TarInfo("../outside.c")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    failed, result = run(kmod_sources, {"modules": [{"name": "m", "source": {"archive": str(evil)}}],
                                        "cache_dir": str(tmp_path / "cache")})
    assert failed and "module m: archive member '../outside.c' points outside the archive" in result["msg"]
    assert not (tmp_path / "cache" / "outside.c").exists()


def test_missing_inputs_fail_before_anything_is_built(tmp_path):
    src = _module_tree(tmp_path / "m")
    cases = [
        ([{"name": "m", "source": {"path": str(tmp_path / "none")}}], "module m: source path"),
        ([{"name": "m", "source": {"path": str(src)}, "firmware_dir": "firmware"}],
         "module m: firmware_dir 'firmware' is not a directory"),
        ([{"name": "m", "source": {"archive": str(tmp_path / "none.tgz")}}], "module m: archive"),
        ([{"name": "m", "source": {"path": str(src), "git": "x"}}], "kmod_modules: module m: source needs exactly one"),
    ]
    for modules, message in cases:
        failed, result = run(kmod_sources, {"modules": modules, "cache_dir": str(tmp_path / "cache")})
        assert failed and message in result["msg"], result


# ---------------------------------------------------------------- plan


def _plan(clusters, modules, recipe_files, repository="r.example/k/layered"):
    return run(layered_image_plan, {"clusters": clusters, "modules": modules, "recipe_files": recipe_files,
                                    "repository": repository})


def test_layered_image_plan_module(tmp_path):
    """One build per distinct set of inputs: the same inputs, derived afresh,
    give the same key and tag; any one input changed gives another."""
    recipe = tmp_path / "Containerfile.j2"
    recipe.write_text("FROM x\n")
    resolved = {"kernel_version": "6.1.0-50-cloud-amd64",
                "driver_toolkit_image": "r.example/a/dtk@sha256:" + "a" * 64,
                "rhcos_image": "r.example/a/os@sha256:" + "b" * 64}
    modules = [{"name": "m", "source": "sha256:" + "1" * 64, "fingerprint": "sha256:" + "1" * 64, "load_at_boot": True,
                "path": "/x"}]
    failed, result = _plan({"a": resolved, "b": dict(resolved)}, modules, [str(recipe)])
    assert not failed, result
    assert result["changed"] is False
    (build,) = result["builds"]
    assert build["clusters"] == ["a", "b"]
    assert result["clusters"] == {"a": build["build_key"], "b": build["build_key"]}
    assert build["image"] == "r.example/k/layered:" + build["tag"]
    assert build["tag"].startswith("6.1.0-50-cloud-amd64-")

    # The same inputs from elsewhere: a copy of the recipe in another
    # directory, the module sources at another path, another cluster name.
    copy_dir = tmp_path / "elsewhere"
    copy_dir.mkdir()
    (copy_dir / "Containerfile.j2").write_text("FROM x\n")
    failed, again = _plan({"c": dict(resolved)}, [dict(modules[0], path="/y")], [str(copy_dir / "Containerfile.j2")])
    assert not failed, again
    assert (again["builds"][0]["build_key"], again["builds"][0]["tag"]) == (build["build_key"], build["tag"])

    # One input changed at a time: another key each time, none seen before.
    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / "Containerfile.j2").write_text("FROM x\nRUN true\n")
    changes = {
        "kernel": ({"a": dict(resolved, kernel_version="6.1.0-51-cloud-amd64")}, modules, [str(recipe)]),
        "dtk": ({"a": dict(resolved, driver_toolkit_image="r.example/a/dtk@sha256:" + "c" * 64)}, modules, [str(recipe)]),
        "rhcos": ({"a": dict(resolved, rhcos_image="r.example/a/os@sha256:" + "d" * 64)}, modules, [str(recipe)]),
        "sources": ({"a": resolved}, [dict(modules[0], fingerprint="sha256:" + "2" * 64)], [str(recipe)]),
        "options": ({"a": resolved}, [dict(modules[0], options="level=2")], [str(recipe)]),
        "recipe": ({"a": resolved}, modules, [str(edited / "Containerfile.j2")]),
    }
    keys = {build["build_key"]}
    for what, args in changes.items():
        failed, changed = _plan(*args)
        assert not failed, (what, changed)
        (other,) = changed["builds"]
        assert other["build_key"] not in keys, what
        keys.add(other["build_key"])

    # Two clusters on different kernels: two builds, each cluster on its own.
    newer = dict(resolved, kernel_version="6.1.0-51-cloud-amd64", rhcos_image="r.example/a/os@sha256:" + "d" * 64)
    failed, two = _plan({"a": resolved, "b": newer}, modules, [str(recipe)])
    assert not failed, two
    assert [b["clusters"] for b in two["builds"]] == [["a"], ["b"]]
    assert two["clusters"]["a"] == build["build_key"] != two["clusters"]["b"]

    failed, result = _plan({"a": resolved}, [{"name": "m"}], [str(recipe)])
    assert failed and "must come from ocp.kmod_layering.kmod_sources" in result["msg"]


# ---------------------------------------------------------------- pull secret


def test_registry_credentials_check_module():
    auth = base64.b64encode(b"u:p").decode()
    secret = {"kind": "Secret", "data": {".dockerconfigjson": base64.b64encode(
        json.dumps({"auths": {"registry.example.com": {"auth": auth}}}).encode()).decode()}}
    failed, result = run(registry_credentials_check,
                         {"pull_secret": secret, "image": "registry.example.com/infra/kmods", "cluster": "east"})
    assert not failed and result["covered"] and result["entry"] == "registry.example.com"
    failed, result = run(registry_credentials_check,
                         {"pull_secret": secret, "image": "other.example.com/infra/kmods", "cluster": "east"})
    assert failed and not result["covered"]
    assert "cluster east: its pull secret (openshift-config/pull-secret) has no credentials for registry " \
           "other.example.com" in result["msg"]
    failed, result = run(registry_credentials_check,
                         {"pull_secret": {}, "image": "other.example.com/x", "cluster": "west"})
    assert failed and "cluster west: its pull secret (openshift-config/pull-secret) is empty or missing" in result["msg"]
    assert auth not in json.dumps(result)
