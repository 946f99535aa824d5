# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Our MachineConfig (_machineconfig): name, labels, image pinning, CRD schema
validation (with and without jsonschema) and the gates before a write.

Run as a script, it rewrites plugins/module_utils/_machineconfig_schema.py
from the vendored CRD (after the CRD was updated).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
import os
import sys

import pytest
import yaml

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _machineconfig, _machineconfig_schema, _mco

CHECKOUT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
CRD = os.path.join(CHECKOUT, "tests", "kmodlab", "crds", "0000_80_machine-config_01_machineconfigs.crd.yaml")
SCHEMA_MODULE = os.path.join(CHECKOUT, "plugins", "module_utils", "_machineconfig_schema.py")

IMG = "registry.example.com/infra/rhcos-kmods@sha256:" + "0c4e2b7a9d1f3e5a7c9b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a3c5b7d9f2e4a"
OTHER_IMG = "registry.example.com/other/os@sha256:" + "1" * 64
ROLE = _mco.ROLE_LABEL


def crd_schema():
    with open(CRD) as stream:
        crd = yaml.safe_load(stream)
    return [v for v in crd["spec"]["versions"] if v["name"] == "v1"][0]["schema"]["openAPIV3Schema"]


def without_descriptions(obj):
    if isinstance(obj, dict):
        return dict((k, without_descriptions(v)) for k, v in obj.items() if k != "description")
    if isinstance(obj, list):
        return [without_descriptions(v) for v in obj]
    return obj


def mc(name, role="worker", image=None, generated=False):
    obj = {"apiVersion": _machineconfig_schema.API_VERSION, "kind": "MachineConfig",
           "metadata": {"name": name, "labels": {ROLE: role}}, "spec": {}}
    if image:
        obj["spec"]["osImageURL"] = image
    if generated:
        obj["metadata"]["annotations"] = {_mco.ANNOTATION_GENERATED_BY: "4.16.0"}
    return obj


def pool(name, roles=None, paused=False):
    roles = roles or [name]
    selector = ({"matchLabels": {ROLE: name}} if len(roles) == 1
                else {"matchExpressions": [{"key": ROLE, "operator": "In", "values": roles}]})
    return {"apiVersion": _machineconfig_schema.API_VERSION, "kind": "MachineConfigPool",
            "metadata": {"name": name}, "spec": {"machineConfigSelector": selector, "paused": paused}}


# --- the schema copy ------------------------------------------------------------------


def test_schema_copy_is_the_crds_schema():
    assert _machineconfig_schema.MACHINECONFIG_SCHEMA == without_descriptions(crd_schema())
    with open(CRD) as stream:
        assert yaml.safe_load(stream)["metadata"]["name"] == _machineconfig_schema.CRD_NAME


# --- names and images ------------------------------------------------------------------


def test_name_is_prefix_and_pool():
    assert _machineconfig.machineconfig_name(None, "worker") == "99-kmod-layering-worker"
    assert _machineconfig.machineconfig_name("50-acme", "infra") == "50-acme-infra"


@pytest.mark.parametrize("prefix, pool_name, fragment", [
    ("99-kmod-layering", "Worker", "fix kmod_pools"),
    ("99-kmod-layering", "", "fix kmod_pools"),
    ("99_KMOD", "worker", "kmod_machineconfig_name_prefix"),
    ("x" * 250, "worker", "at most 253"),
])
def test_bad_names_name_the_input(prefix, pool_name, fragment):
    with pytest.raises(_machineconfig.MachineConfigError, match=fragment):
        _machineconfig.machineconfig_name(prefix, pool_name)


@pytest.mark.parametrize("image", [
    IMG,
    "127.0.0.1:5000/kmodlab/layered@sha256:" + "a" * 64,
    "localhost/x@sha256:" + "a" * 64,
    "registry.example.com:8443/a/b/c:v1@sha256:" + "a" * 64,
    "[::1]:5000/a@sha256:" + "b" * 64,
])
def test_digest_pinned_images_pass(image):
    assert _machineconfig.image_problem(image) is None


@pytest.mark.parametrize("image, fragment", [
    ("registry.example.com/infra/rhcos-kmods:latest", "not pinned by digest"),
    ("registry.example.com/infra/rhcos-kmods", "not pinned by digest"),
    ("registry.example.com/a@sha256:abc", "64 lowercase hex"),
    ("registry.example.com/a@sha512:" + "a" * 128, "64 lowercase hex"),
    ("infra/rhcos-kmods@sha256:" + "a" * 64, "not a registry host"),
    ("rhcos@sha256:" + "a" * 64, "not a fully qualified image name"),
    ("registry.example.com/Infra/X@sha256:" + "a" * 64, "not a fully qualified image name"),
    (" registry.example.com/a@sha256:" + "a" * 64, "whitespace"),
    ("", "no image"),
    (None, "no image"),
])
def test_bad_images_are_refused(image, fragment):
    assert fragment in _machineconfig.image_problem(image)


def test_build_refuses_a_tag_naming_kmod_image():
    with pytest.raises(_machineconfig.MachineConfigError, match=r"kmod_image: .*:v1 is not pinned by digest"):
        _machineconfig.build_machineconfig("worker", "registry.example.com/a/b:v1")


# --- the object --------------------------------------------------------------------------


def test_built_machineconfig_shape():
    key = "f" * 64
    obj = _machineconfig.build_machineconfig("infra", IMG, build_key=key, modules=[{"name": "a"}, "b"],
                                             kernel_version="5.14.0-427.el9.x86_64", release="4.16.30")
    assert obj["apiVersion"] == "machineconfiguration.openshift.io/v1"
    assert obj["kind"] == "MachineConfig"
    assert obj["metadata"]["name"] == "99-kmod-layering-infra"
    labels = obj["metadata"]["labels"]
    assert labels[ROLE] == "infra"
    assert labels["app.kubernetes.io/managed-by"] == "ocp.kmod_layering"
    assert labels["kmod-layering.io/build-key"] == key[:63]
    annotations = obj["metadata"]["annotations"]
    assert annotations["kmod-layering.io/build-key"] == key
    assert annotations["kmod-layering.io/modules"] == "a,b"
    assert annotations["kmod-layering.io/kernel-version"] == "5.14.0-427.el9.x86_64"
    assert annotations["kmod-layering.io/release"] == "4.16.30"
    assert obj["spec"] == {"osImageURL": IMG}
    assert _machineconfig.validate_machineconfig(obj, pool="infra") == []


def test_minimal_machineconfig_has_no_annotations():
    obj = _machineconfig.build_machineconfig("worker", IMG)
    assert "annotations" not in obj["metadata"]
    assert _machineconfig.validate_machineconfig(obj) == []


# --- validation ----------------------------------------------------------------------------


def good():
    return _machineconfig.build_machineconfig("worker", IMG, build_key="k")


@pytest.mark.parametrize("change, fragment", [
    (lambda o: o.update(kind="MachineConfigPool"), "kind must be MachineConfig"),
    (lambda o: o.update(apiVersion="v1"), "apiVersion must be"),
    (lambda o: o["metadata"].update(name="Bad_Name"), "metadata.name"),
    (lambda o: o["metadata"]["labels"].pop(ROLE), "no pool would select"),
    (lambda o: o["metadata"]["labels"].update({ROLE: "infra"}), "not the pool 'worker'"),
    (lambda o: o["metadata"]["labels"].update({"bad key!": "x"}), "label key"),
    (lambda o: o["metadata"]["labels"].update({"a": "x" * 64}), "at most 63"),
    (lambda o: o["spec"].update(osImageURL="registry.example.com/a:latest"), "spec.osImageURL"),
    (lambda o: o["spec"].update(osImageUrl=IMG), ".spec.osImageUrl: unknown field"),
    (lambda o: o["spec"].update(kernelArguments="nosmt"), ".spec.kernelArguments: must be of type array"),
    (lambda o: o["spec"].update(fips="yes"), ".spec.fips: must be of type boolean"),
    (lambda o: o.update(status={}), ".status: unknown field"),
])
def test_validation_catches(change, fragment):
    obj = good()
    change(obj)
    errors = _machineconfig.validate_machineconfig(obj, pool="worker")
    assert any(fragment in e for e in errors), errors


def test_structural_checks_allow_what_the_crd_allows():
    obj = good()
    obj["spec"].update(kernelArguments=None, extensions=["usbguard"], fips=False,
                       config={"ignition": {"version": "3.2.0"}, "anything": {"goes": 1}})
    assert _machineconfig.validate_machineconfig(obj) == []


def test_jsonschema_validation_uses_the_crd_schema():
    pytest.importorskip("jsonschema")
    assert _machineconfig.jsonschema_available()
    obj = good()
    obj["spec"]["osImageURL"] = 42
    errors = _machineconfig.schema_errors(obj)
    assert errors == [".spec.osImageURL: 42 is not of type 'string'"]
    # nullable: an openAPI extension jsonschema knows only through to_json_schema
    obj = good()
    obj["spec"]["kernelArguments"] = None
    assert _machineconfig.schema_errors(obj) == []


def test_without_jsonschema_the_structural_checks_still_run(monkeypatch):
    monkeypatch.setattr(_machineconfig, "jsonschema", None)
    assert not _machineconfig.jsonschema_available()
    obj = good()
    obj["spec"]["osImageURL"] = 42
    errors = _machineconfig.validate_machineconfig(obj)
    assert any(".spec.osImageURL: must be of type string" in e for e in errors), errors
    assert not any(e.startswith("schema ") for e in errors)


# --- gates ------------------------------------------------------------------------------------


def test_pool_missing_names_the_pools_there():
    problem = _machineconfig.pool_problem("gpu", [pool("worker"), pool("master")], "lab-a")
    assert problem.startswith("MachineConfigPool gpu not found on cluster lab-a (pools there: master, worker)")
    assert "kmod_pools" in problem


def test_paused_pool_fails_unless_allowed():
    pools = [pool("worker", paused=True)]
    problem = _machineconfig.pool_problem("worker", pools, "lab-a")
    assert "is paused" in problem and "lab-a" in problem and "kmod_allow_paused_pool" in problem
    assert _machineconfig.pool_problem("worker", pools, "lab-a", allow_paused=True) is None
    assert _machineconfig.pool_problem("worker", [pool("worker")], "lab-a") is None


def existing_cluster():
    """What an installer leaves: generated templates, a user ssh config, rendered configs."""
    return [
        mc("00-worker", image=OTHER_IMG, generated=True),
        mc("99-worker-generated-registries", generated=True, image=OTHER_IMG),
        mc("99-worker-ssh"),
        mc("00-master", role="master", generated=True),
        dict(mc("rendered-worker-abc", image=OTHER_IMG), metadata={"name": "rendered-worker-abc"}),
    ]


def test_ours_wins_on_a_fresh_cluster():
    ours = _machineconfig.build_machineconfig("worker", IMG)
    assert _machineconfig.effective_check(pool("worker"), existing_cluster(), ours, "lab-a") == (None, [])


def test_a_later_machineconfig_with_another_image_is_named():
    ours = _machineconfig.build_machineconfig("worker", IMG)
    others = existing_cluster() + [mc("zz-other", image=OTHER_IMG)]
    problem, setters = _machineconfig.effective_check(pool("worker"), others, ours, "lab-a")
    assert problem.startswith("MachineConfig 99-kmod-layering-worker would not be effective on pool worker of "
                              "cluster lab-a: zz-other sorts after it")
    assert OTHER_IMG in problem and "99-kmod-layering-worker, zz-other" in problem
    assert "kmod_machineconfig_name_prefix" in problem
    assert setters == ["zz-other"]
    # the same verdict as the MCO's rule itself
    assert _mco.effective_os_image_url(others + [ours], None) == OTHER_IMG


def test_an_earlier_override_is_masked_and_reported():
    ours = _machineconfig.build_machineconfig("worker", IMG)
    problem, setters = _machineconfig.effective_check(
        pool("worker"), existing_cluster() + [mc("50-old-image", image=OTHER_IMG)], ours, "lab-a")
    assert problem is None and setters == ["50-old-image"]


def test_a_later_machineconfig_with_the_same_image_is_no_problem():
    ours = _machineconfig.build_machineconfig("worker", IMG)
    problem, setters = _machineconfig.effective_check(pool("worker"), [mc("zz-same", image=IMG)], ours, "c")
    assert problem is None and setters == ["zz-same"]


def test_our_old_version_is_replaced_not_counted():
    ours = _machineconfig.build_machineconfig("worker", IMG)
    old = copy.deepcopy(ours)
    old["spec"]["osImageURL"] = OTHER_IMG
    assert _machineconfig.effective_check(pool("worker"), [old], ours, "c") == (None, [])


def test_machineconfigs_of_other_pools_do_not_count():
    ours = _machineconfig.build_machineconfig("worker", IMG)
    assert _machineconfig.effective_check(pool("worker"), [mc("zz-master", role="master", image=OTHER_IMG)],
                                          ours, "c") == (None, [])


def test_custom_pool_own_config_wins_over_a_worker_one():
    # infra selects worker and infra configs; the MCO merges worker ones first.
    ours = _machineconfig.build_machineconfig("infra", IMG)
    problem, setters = _machineconfig.effective_check(
        pool("infra", ["worker", "infra"]), [mc("zz-worker-image", image=OTHER_IMG)], ours, "c")
    assert problem is None and setters == ["zz-worker-image"]


def test_pool_that_does_not_select_ours_fails():
    ours = _machineconfig.build_machineconfig("worker", IMG)
    odd = pool("worker")
    odd["spec"]["machineConfigSelector"] = {"matchLabels": {"team": "x"}}
    problem, _others = _machineconfig.effective_check(odd, [], ours, "lab-a")
    assert "does not select MachineConfig 99-kmod-layering-worker" in problem


def test_comparable_keeps_our_fields_only():
    applied = good()
    applied["metadata"].update(resourceVersion="7", uid="u", generation=1)
    applied["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    view = _machineconfig.comparable(applied)
    assert set(view["metadata"]) == {"name", "labels", "annotations"}
    assert _machineconfig.comparable(None) == {}


def regenerate():
    """Rewrite _machineconfig_schema.py's MACHINECONFIG_SCHEMA from the vendored CRD."""
    with open(SCHEMA_MODULE) as stream:
        text = stream.read()
    head = text[:text.index("MACHINECONFIG_SCHEMA = ")]
    body = json.dumps(without_descriptions(crd_schema()), indent=4, sort_keys=True)
    body = body.replace(": true", ": True").replace(": false", ": False")
    with open(SCHEMA_MODULE, "w") as stream:
        stream.write(head + "MACHINECONFIG_SCHEMA = " + body + "\n")


if __name__ == "__main__":
    regenerate()
    sys.exit(0)
