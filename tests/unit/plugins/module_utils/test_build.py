# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _build: fingerprints, module validation, build keys, tags,
grouping clusters by build key, pull secret coverage."""

import base64
import json
import os

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _build as b
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry import RegistryError

DTK = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "a" * 64
RHCOS = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "b" * 64
KVER = "5.14.0-427.26.1.el9_4.x86_64"
REPO = "registry.example.com/infra/rhcos-kmods"


def _tree(root, files):
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


# ---------------------------------------------------------------- fingerprints


def test_tree_digest_is_content_and_path_based(tmp_path):
    one = _tree(tmp_path / "one", {"Kbuild": b"obj-m := m.o\n", "m.c": b"int x;\n"})
    two = _tree(tmp_path / "two", {"Kbuild": b"obj-m := m.o\n", "m.c": b"int x;\n"})
    assert b.tree_digest(str(one)) == b.tree_digest(str(two))
    assert b.tree_digest(str(one)).startswith("sha256:")
    (two / "m.c").write_bytes(b"int y;\n")
    assert b.tree_digest(str(one)) != b.tree_digest(str(two))


def test_tree_digest_counts_renames_exec_bits_and_skips_git(tmp_path):
    one = _tree(tmp_path / "one", {"a.c": b"x"})
    before = b.tree_digest(str(one))
    _tree(one, {".git/HEAD": b"ref: refs/heads/main\n"})
    assert b.tree_digest(str(one)) == before
    os.chmod(str(one / "a.c"), 0o755)
    assert b.tree_digest(str(one)) != before
    os.chmod(str(one / "a.c"), 0o644)
    os.rename(str(one / "a.c"), str(one / "b.c"))
    assert b.tree_digest(str(one)) != before


def test_tree_digest_of_a_missing_directory_fails(tmp_path):
    with pytest.raises(b.BuildInputError, match="not a directory"):
        b.tree_digest(str(tmp_path / "nope"))


def test_recipe_digest_changes_with_any_file(tmp_path):
    template = tmp_path / "Containerfile.j2"
    helper = tmp_path / "check-vermagic.sh"
    template.write_text("FROM x\n")
    helper.write_text("#!/bin/sh\n")
    first = b.recipe_digest([str(template), str(helper)])
    assert first == b.recipe_digest([str(helper), str(template)])  # order does not matter
    helper.write_text("#!/bin/sh\nexit 1\n")
    assert b.recipe_digest([str(template), str(helper)]) != first


# ---------------------------------------------------------------- modules


def test_normalize_modules_defaults_and_sources():
    modules = b.normalize_modules([
        {"name": "core", "source": {"path": "/src/core"}, "options": "greeting=hi level=2", "firmware_dir": "fw/"},
        {"name": "dep", "source": {"git": "https://git.example/k.git", "subdir": "dep"}, "load_at_boot": False},
        {"name": "arch", "source": {"archive": "https://example/k.tar.gz"}, "build_command": "make"},
    ])
    assert modules[0] == {"name": "core", "source": {"path": "/src/core"}, "load_at_boot": True,
                          "options": "greeting=hi level=2", "firmware_dir": "fw"}
    assert modules[1]["source"] == {"git": "https://git.example/k.git", "version": "HEAD", "subdir": "dep"}
    assert modules[1]["load_at_boot"] is False
    assert modules[2]["source"] == {"archive": "https://example/k.tar.gz", "subdir": ""}
    assert modules[2]["build_command"] == "make"


@pytest.mark.parametrize("modules, message", [
    ([], "kmod_modules is empty"),
    ([{"name": "bad name", "source": {"path": "/x"}}], "not a kernel module name"),
    ([{"name": "m", "source": {"path": "/x"}}, {"name": "m", "source": {"path": "/y"}}], "module m is listed twice"),
    ([{"name": "m", "source": {"path": "/x", "git": "u"}}], "exactly one of path, git or archive"),
    ([{"name": "m", "source": {}}], "exactly one of path, git or archive"),
    ([{"name": "m"}], "source must be a mapping"),
    ([{"name": "m", "source": {"path": "/x", "version": "v1"}}], "do not apply to a path source"),
    ([{"name": "m", "source": {"git": "u", "subdir": "../x"}}], "relative path inside"),
    ([{"name": "m", "source": {"path": "/x"}, "firmware_dir": "/lib/firmware"}], "relative path inside"),
    ([{"name": "m", "source": {"path": "/x"}, "options": "a=1\nb=2"}], "one line of modprobe options"),
    ([{"name": "m", "source": {"path": "/x"}, "load_at_boot": "yes"}], "load_at_boot must be true or false"),
    ([{"name": "m", "source": {"path": "/x"}, "option": "a=1"}], "unknown key"),
])
def test_normalize_modules_rejects_bad_input_naming_the_module(modules, message):
    with pytest.raises(b.BuildInputError, match=message):
        b.normalize_modules(modules)


def test_template_module_leaves_unset_keys_out():
    entry = b.template_module({"name": "m", "source": {"path": "/x"}, "load_at_boot": True}, "sha256:1", "sha256:1")
    assert entry == {"name": "m", "source": "sha256:1", "fingerprint": "sha256:1", "load_at_boot": True}
    entry = b.template_module({"name": "m", "load_at_boot": False, "options": "a=1", "build_command": "make",
                               "firmware_dir": "fw"}, "sha256:2", "git+u@c")
    assert entry["options"] == "a=1" and entry["build_command"] == "make" and entry["firmware_dir"] == "fw"


# ---------------------------------------------------------------- keys and tags


def _modules(**change):
    entry = {"name": "core", "source": "sha256:" + "1" * 64, "fingerprint": "sha256:" + "1" * 64,
             "load_at_boot": True, "options": "level=1"}
    entry.update(change)
    return [entry, {"name": "dep", "source": "sha256:" + "2" * 64, "fingerprint": "sha256:" + "2" * 64,
                    "load_at_boot": True}]


def test_build_key_is_stable_and_ignores_where_sources_live():
    key = b.build_key(KVER, DTK, RHCOS, _modules(), "sha256:r")
    assert key == b.build_key(KVER, DTK, RHCOS, _modules(path="/elsewhere"), "sha256:r")
    assert len(key) == 64 and int(key, 16) >= 0


@pytest.mark.parametrize("args", [
    ("5.14.0-427.27.1.el9_4.x86_64", DTK, RHCOS, _modules(), "sha256:r"),
    (KVER, DTK.replace("a" * 64, "c" * 64), RHCOS, _modules(), "sha256:r"),
    (KVER, DTK, RHCOS.replace("b" * 64, "c" * 64), _modules(), "sha256:r"),
    (KVER, DTK, RHCOS, _modules(fingerprint="sha256:" + "3" * 64), "sha256:r"),
    (KVER, DTK, RHCOS, _modules(source="git+u@c"), "sha256:r"),
    (KVER, DTK, RHCOS, _modules(options="level=2"), "sha256:r"),
    (KVER, DTK, RHCOS, _modules(load_at_boot=False), "sha256:r"),
    (KVER, DTK, RHCOS, _modules(build_command="make KVER=x"), "sha256:r"),
    (KVER, DTK, RHCOS, _modules(firmware_dir="fw"), "sha256:r"),
    (KVER, DTK, RHCOS, list(reversed(_modules())), "sha256:r"),
    (KVER, DTK, RHCOS, _modules(), "sha256:other-recipe"),
])
def test_every_input_changes_the_build_key(args):
    assert b.build_key(*args) != b.build_key(KVER, DTK, RHCOS, _modules(), "sha256:r")


def test_image_tag_is_content_addressed_and_valid():
    key = "0123456789abcdef" * 4
    assert b.image_tag(key, KVER) == KVER + "-" + key[:32]
    assert b.image_tag(key) == key[:32]
    tag = b.image_tag(key, "6.1.0+rt/odd kernel" + "x" * 200)
    assert len(tag) <= 128
    assert all(c.isalnum() or c in "_.-" for c in tag)
    with pytest.raises(b.BuildInputError):
        b.image_tag("not-a-key", KVER)


@pytest.mark.parametrize("repository, expected", [
    ("registry.example.com/infra/rhcos-kmods", "registry.example.com/infra/rhcos-kmods"),
    ("127.0.0.1:5000/kmods/layered", "127.0.0.1:5000/kmods/layered"),
    ("myorg/kmods", "docker.io/myorg/kmods"),
])
def test_validate_repository(repository, expected):
    assert b.validate_repository(repository) == expected


@pytest.mark.parametrize("repository, message", [
    ("", "kmod_image_repository is empty"),
    ("registry.example.com/infra/kmods:v1", "must not carry a tag or digest"),
    ("registry.example.com/infra/kmods@sha256:" + "a" * 64, "must not carry a tag or digest"),
    ("registry.example.com/Infra/Kmods", "not an image repository"),
])
def test_validate_repository_rejects(repository, message):
    with pytest.raises(b.BuildInputError, match=message):
        b.validate_repository(repository)


# ---------------------------------------------------------------- plan


def _resolved(kver=KVER, dtk=DTK, rhcos=RHCOS):
    return {"kernel_version": kver, "driver_toolkit_image": dtk, "rhcos_image": rhcos, "release_version": "4.16.30"}


def test_plan_groups_clusters_on_the_same_release_into_one_build():
    other = _resolved("5.14.0-284.25.1.el9_2.x86_64", DTK.replace("a" * 64, "d" * 64), RHCOS.replace("b" * 64, "e" * 64))
    plan = b.plan_builds({"east": _resolved(), "west": other, "north": _resolved()}, _modules(), "sha256:r", REPO)
    assert [build["clusters"] for build in plan["builds"]] == [["east", "north"], ["west"]]
    first, second = plan["builds"]
    assert plan["clusters"] == {"east": first["build_key"], "north": first["build_key"], "west": second["build_key"]}
    assert first["image"] == "%s:%s" % (REPO, first["tag"])
    assert first["tag"].startswith(KVER + "-") and first["tag"] != second["tag"]
    assert (first["kernel_version"], first["driver_toolkit_image"], first["rhcos_image"]) == (KVER, DTK, RHCOS)
    assert second["kernel_version"] == "5.14.0-284.25.1.el9_2.x86_64"


def test_plan_refuses_unpinned_images_and_unresolved_clusters():
    with pytest.raises(b.BuildInputError, match="cluster east: the RHCOS image .* is not pinned by digest"):
        b.plan_builds({"east": _resolved(rhcos="quay.io/x/y:4.16")}, _modules(), "sha256:r", REPO)
    with pytest.raises(b.BuildInputError, match="cluster east: the Driver Toolkit image"):
        b.plan_builds({"east": _resolved(dtk="quay.io/x/y:latest")}, _modules(), "sha256:r", REPO)
    with pytest.raises(b.BuildInputError, match="cluster west has no resolved kernel_version"):
        b.plan_builds({"west": {}}, _modules(), "sha256:r", REPO)
    with pytest.raises(b.BuildInputError, match="kmod_image_repository"):
        b.plan_builds({"east": _resolved()}, _modules(), "sha256:r", "")


def test_build_key_differs_by_architecture_and_keeps_x86_64_keys():
    x86 = b.build_key(KVER, DTK, RHCOS, _modules(), "sha256:r")
    # x86_64 (either spelling) is the key of before architectures existed.
    assert b.build_key(KVER, DTK, RHCOS, _modules(), "sha256:r", arch="x86_64") == x86
    assert b.build_key(KVER, DTK, RHCOS, _modules(), "sha256:r", arch="amd64") == x86
    arm = b.build_key(KVER, DTK, RHCOS, _modules(), "sha256:r", arch="aarch64")
    assert arm != x86
    assert b.build_key(KVER, DTK, RHCOS, _modules(), "sha256:r", arch="arm64") == arm
    assert b.build_key(KVER, DTK, RHCOS, _modules(), "sha256:r", arch="s390x") not in (x86, arm)


ARM_KVER = "5.14.0-427.26.1.el9_4.aarch64"
ARM_DTK = DTK.replace("a" * 64, "7" * 64)
ARM_RHCOS = RHCOS.replace("b" * 64, "8" * 64)


def _multi(pools):
    arches = {"x86_64": _resolved(), "aarch64": _resolved(ARM_KVER, ARM_DTK, ARM_RHCOS)}
    first = list(pools.values())[0]
    return dict(arches[first], arch=first, pool_arches=pools,
                arches=dict((a, dict(arches[a], arch=a)) for a in pools.values()))


def test_plan_builds_once_per_architecture_across_the_fleet():
    aarch64_only = _multi({"worker": "aarch64"})
    multi = _multi({"master": "x86_64", "worker": "aarch64"})
    plan = b.plan_builds({"x86": _resolved(), "arm": aarch64_only, "multi": multi}, _modules(), "sha256:r", REPO)
    assert [(build["arch"], build["platform"], build["clusters"]) for build in plan["builds"]] == [
        ("x86_64", "linux/amd64", ["x86", "multi"]), ("aarch64", "linux/arm64", ["arm", "multi"])]
    x86_key, arm_key = [build["build_key"] for build in plan["builds"]]
    assert plan["cluster_arches"] == {"x86": {"x86_64": x86_key}, "arm": {"aarch64": arm_key},
                                      "multi": {"x86_64": x86_key, "aarch64": arm_key}}
    # The primary architecture is the first pool's.
    assert plan["clusters"] == {"x86": x86_key, "arm": arm_key, "multi": x86_key}
    assert plan["builds"][1]["kernel_version"] == ARM_KVER and plan["builds"][1]["rhcos_image"] == ARM_RHCOS


def test_plan_same_images_on_another_architecture_is_another_build():
    # Not a real release (the DTK and RHCOS are per architecture), but the
    # key must not rely on that.
    plan = b.plan_builds({"a": dict(_resolved(), arch="x86_64"), "b": dict(_resolved(), arch="aarch64")},
                         _modules(), "sha256:r", REPO)
    assert len(plan["builds"]) == 2


def test_plan_refuses_an_unknown_architecture():
    with pytest.raises(b.BuildInputError, match="cluster a: unknown architecture 'arm'"):
        b.plan_builds({"a": dict(_resolved(), arch="arm")}, _modules(), "sha256:r", REPO)


# ---------------------------------------------------------------- pull secrets


def _auth(user, password):
    return base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


SECRET = {"auths": {
    "cloud.openshift.com": {"auth": _auth("u", "p")},
    "quay.io": {"auth": _auth("u", "p")},
    "registry.example.com:5000/infra": {"auth": _auth("infra", "p")},
    "https://mirror.example.com/v2/": {"auth": _auth("m", "p")},
    "empty.example.com": {"auth": ""},
}}


@pytest.mark.parametrize("image, entry", [
    ("quay.io/acme/kmods", "quay.io"),
    ("quay.io/acme/kmods:tag", "quay.io"),
    ("registry.example.com:5000/infra/rhcos-kmods@sha256:" + "a" * 64, "registry.example.com:5000/infra"),
    ("mirror.example.com/kmods/layered", "mirror.example.com"),
])
def test_pull_secret_covers(image, entry):
    assert b.pull_secret_covers(SECRET, image) == (True, entry)


@pytest.mark.parametrize("image", [
    "registry.example.com/infra/rhcos-kmods",  # other port
    "registry.example.com:5000/other/rhcos-kmods",  # other namespace
    "empty.example.com/kmods",  # entry without credentials
    "docker.io/acme/kmods",
])
def test_pull_secret_does_not_cover(image):
    assert b.pull_secret_covers(SECRET, image) == (False, None)


def test_pull_secret_covers_reads_a_secret_object_and_json_text():
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
              "data": {".dockerconfigjson": base64.b64encode(json.dumps(SECRET).encode()).decode()}}
    assert b.pull_secret_covers(secret, "quay.io/acme/kmods") == (True, "quay.io")
    assert b.pull_secret_covers(json.dumps(SECRET), "quay.io/acme/kmods") == (True, "quay.io")
    with pytest.raises(RegistryError):
        b.pull_secret_covers("{not json", "quay.io/acme/kmods")
