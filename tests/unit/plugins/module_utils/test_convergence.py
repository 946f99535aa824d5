# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""_convergence: when one read of a cluster proves a rerun would change
nothing, and every way it must say no (on the MCO-shaped fixtures of
test_mco, with our MachineConfig as the rollout role writes it)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import os

import yaml

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _build, _convergence, _machineconfig

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "mco")
FIXTURE_MC = "99-worker-kmod-layering"
OURS = "99-kmod-layering-worker"
REPO = "registry.example.com/kmods/rhcos-kmod"
IMAGE = REPO + "@sha256:0c4e2b7a9d1f3e5a7c9b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a3c5b7d9f2e4a"
RELEASE = "quay.io/openshift-release-dev/ocp-release@sha256:" + "1" * 64
DTK = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "2" * 64
RHCOS = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "3" * 64
KERNEL = "5.14.0-427.40.1.el9_4.x86_64"
MODULES = [{"name": "mydrv", "source": "path:/src/mydrv", "fingerprint": "sha256:" + "4" * 64,
            "build_command": "make", "load_at_boot": True, "options": "", "firmware_dir": ""}]
RECIPE = "sha256:" + "5" * 64


def cluster(**changes):
    """(cluster_version, pools, nodes, machineconfigs, rendered) of a cluster
    converged on IMAGE (the done.yaml fixture, with our MachineConfig)."""
    with open(os.path.join(FIXTURES, "done.yaml")) as f:
        items = yaml.safe_load(f)["items"]
    pools = [i for i in items if i["kind"] == "MachineConfigPool"]
    for pool in pools:
        for source in pool["spec"]["configuration"]["source"] + pool["status"]["configuration"]["source"]:
            if source["name"] == FIXTURE_MC:
                source["name"] = OURS
    nodes = [i for i in items if i["kind"] == "Node"]
    rendered = dict((i["metadata"]["name"], i) for i in items if i["kind"] == "MachineConfig")
    ours = _machineconfig.build_machineconfig(
        "worker", IMAGE, build_key=_build.build_key(KERNEL, DTK, RHCOS, MODULES, RECIPE), modules=["mydrv"],
        kernel_version=KERNEL, release="4.16.30", release_image=RELEASE, driver_toolkit_image=DTK, rhcos_image=RHCOS)
    cluster_version = {"status": {"desired": {"image": RELEASE, "version": "4.16.30"},
                                  "conditions": [{"type": "Progressing", "status": "False"}]}}
    state = {"cluster_version": cluster_version, "pools": pools, "nodes": nodes, "machineconfigs": [ours],
             "rendered": rendered}
    state.update(changes)
    return state


def wanted(**changes):
    result = {"pools": ["worker"], "name_prefix": None, "modules": MODULES, "recipe": RECIPE,
              "repository": REPO, "release": None, "expected_modules": [{"name": "mydrv"}]}
    result.update(changes)
    return result


def evaluate(state, want=None):
    return _convergence.evaluate(state["cluster_version"], state["pools"], state["nodes"],
                                 state["machineconfigs"], state["rendered"], want or wanted())


def ours(state):
    return state["machineconfigs"][0]


def test_converged_cluster_is_converged_with_a_passing_node_verdict_each():
    result = evaluate(cluster())
    assert result["reasons"] == []
    assert result["converged"] is True
    assert result["image"] == IMAGE
    assert result["machineconfigs"] == {"worker": OURS}
    assert [p["phase"] for p in result["pools"]] == ["done"]
    assert len(result["verdicts"]) == 3
    assert all(v["verdict"] == "pass" and v["method"] == "mco_state" for v in result["verdicts"])


def test_changed_module_sources_are_not_converged():
    changed = [dict(MODULES[0], fingerprint="sha256:" + "6" * 64)]
    result = evaluate(cluster(), wanted(modules=changed))
    assert not result["converged"]
    assert "the module sources, the build recipe or the signing certificate changed" in result["reasons"][0]


def test_changed_recipe_is_not_converged():
    result = evaluate(cluster(), wanted(recipe="sha256:" + "7" * 64))
    assert not result["converged"]


def test_upgraded_cluster_is_not_converged():
    state = cluster()
    state["cluster_version"]["status"]["desired"]["image"] = RELEASE.replace("1" * 64, "8" * 64)
    result = evaluate(state)
    assert not result["converged"]
    assert "the image was built for " + RELEASE in result["reasons"][0]


def test_upgrade_in_progress_is_not_converged():
    state = cluster()
    state["cluster_version"]["status"]["conditions"][0]["status"] = "True"
    result = evaluate(state)
    assert not result["converged"]
    assert any("being upgraded" in r for r in result["reasons"])


def test_kmod_release_compares_with_the_recorded_version():
    assert evaluate(cluster(), wanted(release="4.16.30"))["converged"]
    result = evaluate(cluster(), wanted(release="4.16.31"))
    assert not result["converged"] and "kmod_release is 4.16.31" in result["reasons"][0]


def test_machineconfig_without_recorded_inputs_is_not_converged():
    state = cluster()
    del ours(state)["metadata"]["annotations"][_machineconfig.ANNOTATION_DRIVER_TOOLKIT_IMAGE]
    result = evaluate(state)
    assert not result["converged"]
    assert "driver_toolkit_image" in result["reasons"][0]


def test_a_changed_signing_certificate_is_not_converged():
    signed_a = {"cert_sha256": "a" * 64, "hash": "sha256"}
    signed_b = {"cert_sha256": "b" * 64, "hash": "sha256"}
    state = cluster()
    annotations = ours(state)["metadata"]["annotations"]
    annotations[_machineconfig.ANNOTATION_SIGNING_CERT] = "a" * 64
    annotations[_machineconfig.ANNOTATION_BUILD_KEY] = _build.build_key(KERNEL, DTK, RHCOS, MODULES, RECIPE, signed_a)
    assert evaluate(state, wanted(signing=signed_a))["converged"]
    result = evaluate(state, wanted(signing=signed_b))
    assert not result["converged"]
    assert result["reasons"] == ["pool worker: MachineConfig %s: the signing certificate changed (sha256 %s "
                                 "recorded, %s now)" % (OURS, "a" * 16, "b" * 16)]
    # The same certificate with another hash: another build key.
    assert "signing certificate changed (build key" in evaluate(
        state, wanted(signing=dict(signed_a, hash="sha512")))["reasons"][0]
    # Signed before, unsigned now: not converged either.
    assert "this run's signing facts name no certificate" in evaluate(state)["reasons"][0]
    # Unsigned before, signed now.
    assert "this run signs them" in evaluate(cluster(), wanted(signing=signed_b))["reasons"][0]


def test_missing_machineconfig_is_not_converged():
    result = evaluate(cluster(machineconfigs=[]))
    assert result["reasons"] == ["pool worker: MachineConfig %s does not exist" % OURS]


def test_rolled_back_machineconfig_is_not_converged():
    state = cluster()
    ours(state)["metadata"]["annotations"][_machineconfig.ANNOTATION_ROLLED_BACK_FROM] = IMAGE
    assert "rolled back" in evaluate(state)["reasons"][0]


def test_image_of_another_repository_is_not_converged():
    result = evaluate(cluster(), wanted(repository="registry.example.com/other/kmods"))
    assert not result["converged"]
    assert "not an image of registry.example.com/other/kmods" in result["reasons"][0]


def test_pool_still_rolling_out_is_not_converged():
    state = cluster()
    node = state["nodes"][0]
    node["metadata"]["annotations"]["machineconfiguration.openshift.io/state"] = "Working"
    result = evaluate(state)
    assert not result["converged"]
    assert result["reasons"][0].startswith("pool worker: progressing")


def test_pool_on_a_rendered_config_with_another_image_is_not_converged():
    state = cluster()
    ours(state)["spec"]["osImageURL"] = REPO + "@sha256:" + "9" * 64
    result = evaluate(state)
    assert not result["converged"]
    assert result["pools"][0]["phase"] != "done"


def test_missing_pool_is_not_converged():
    result = evaluate(cluster(), wanted(pools=["worker", "gpu"]))
    assert "MachineConfigPool gpu does not exist" in result["reasons"]


def test_recorded_inputs_round_trip_through_the_rollout_annotations():
    inputs = _convergence.recorded_inputs(ours(cluster()))
    assert inputs == {"build_key": _build.build_key(KERNEL, DTK, RHCOS, MODULES, RECIPE), "kernel_version": KERNEL,
                      "driver_toolkit_image": DTK, "rhcos_image": RHCOS, "release_image": RELEASE,
                      "release": "4.16.30"}


def test_history_and_rollback_keep_the_recorded_inputs():
    state = cluster()
    newer = _machineconfig.build_machineconfig("worker", REPO + "@sha256:" + "a" * 64, build_key="b" * 64)
    updated = _machineconfig.with_history(newer, ours(state))
    plan = _machineconfig.rollback_plan(updated, "worker")
    restored = _convergence.recorded_inputs(plan["machineconfig"])
    assert restored == _convergence.recorded_inputs(ours(state))


def test_the_cluster_objects_are_not_modified():
    state = cluster()
    before = copy.deepcopy(state)
    evaluate(state)
    assert state == before


def _arm64(state):
    """The done.yaml cluster with arm64 nodes, and our MachineConfig as the
    rollout role writes it for them (the key of the aarch64 build)."""
    for node in state["nodes"]:
        node["metadata"].setdefault("labels", {})["kubernetes.io/arch"] = "arm64"
        node.setdefault("status", {}).setdefault("nodeInfo", {})["architecture"] = "arm64"
    annotations = ours(state)["metadata"]["annotations"]
    annotations[_machineconfig.ANNOTATION_BUILD_KEY] = _build.build_key(KERNEL, DTK, RHCOS, MODULES, RECIPE,
                                                                        arch="aarch64")
    return state


def test_an_arm64_pool_is_converged_on_the_key_of_its_architecture():
    result = evaluate(_arm64(cluster()))
    assert result["reasons"] == [] and result["converged"]
    assert result["arches"] == {"worker": "aarch64"} and result["images"] == {"worker": IMAGE}


def test_an_x86_64_key_on_arm64_nodes_is_not_converged():
    # The image built for x86_64 pinned into an arm64 pool: the full run
    # builds the arm64 one.
    state = _arm64(cluster())
    ours(state)["metadata"]["annotations"][_machineconfig.ANNOTATION_BUILD_KEY] = _build.build_key(
        KERNEL, DTK, RHCOS, MODULES, RECIPE)
    result = evaluate(state)
    assert not result["converged"]
    assert "build key" in result["reasons"][0]


def test_build_key_problem_tries_every_architecture_when_the_nodes_do_not_tell():
    inputs = _convergence.recorded_inputs(ours(_arm64(cluster())))
    assert _convergence.build_key_problem(inputs, MODULES, RECIPE) is None
    assert _convergence.build_key_problem(inputs, MODULES, RECIPE, arch="aarch64") is None
    assert "changed" in _convergence.build_key_problem(inputs, MODULES, RECIPE, arch="x86_64")
