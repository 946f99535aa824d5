# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Host inspection (_inspect) on outputs in the formats RHCOS nodes print:
`rpm-ostree status --json` of a node booted into a layered image,
/proc/modules, lsmod, `grep -H` of /sys/module parameter files; the debug pod
`oc debug node` makes; verdicts, reports and the table."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _inspect

LAYERED_DIGEST = "sha256:0c4e2b7a9d1f3e5a7c9b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a3c5b7d9f2e4a"
LAYERED = "registry.example.com/kmods/rhcos-kmods@" + LAYERED_DIGEST
BASE_DIGEST = "sha256:5b1a0d7e9c3f2a48b6d0e1f9c8a7b6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9"
BASE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@" + BASE_DIGEST
OTHER_DIGEST = "sha256:" + "e" * 64


def deployment(image, digest, booted, staged=False, checksum="a1" * 32, version="416.94.202406251923-0"):
    """One deployment as rpm-ostree prints it on RHCOS (keys of rpm-ostree 2024.x)."""
    return {
        "unlocked": "none",
        "requested-modules": [],
        "modules": [],
        "requested-packages": [],
        "base-remote-replacements": {},
        "base-removals": [],
        "pinned": False,
        "osname": "rhcos",
        "container-image-reference": "ostree-unverified-registry:" + image,
        "container-image-reference-digest": digest,
        "base-local-replacements": [],
        "regenerate-initramfs": False,
        "checksum": checksum,
        "requested-base-local-replacements": [],
        "requested-modules-enabled": [],
        "requested-local-packages": [],
        "id": "rhcos-%s.0" % checksum,
        "version": version,
        "requested-local-fileoverride-packages": [],
        "requested-base-removals": [],
        "staged": staged,
        "booted": booted,
        "serial": 0,
        "timestamp": 1719347059,
        "packages": [],
    }


def rpm_ostree_json(*deployments):
    return json.dumps({
        "deployments": list(deployments),
        "transaction": None,
        "cached-update": None,
        "update-driver": None,
    }, indent=2) + "\n"


# Booted into the layered image; the base image is the rollback deployment.
STATUS_LAYERED = rpm_ostree_json(deployment(LAYERED, LAYERED_DIGEST, True, checksum="b2" * 32),
                                 deployment(BASE, BASE_DIGEST, False))
# Still on the base image, the layered one staged for the next boot.
STATUS_STAGED = rpm_ostree_json(deployment(LAYERED, LAYERED_DIGEST, False, staged=True),
                                deployment(BASE, BASE_DIGEST, True))

PROC_MODULES = """\
kmodlab_dep 16384 0 - Live 0xffffffffc0a1e000 (OE)
kmodlab_core 16384 1 kmodlab_dep, Live 0xffffffffc0a14000 (OE)
nf_tables 327680 0 - Live 0xffffffffc0b0e000
nfnetlink 20480 1 nf_tables, Live 0xffffffffc0a0a000
xfs 2019328 2 - Live 0xffffffffc0c2f000
"""

LSMOD = """\
Module                  Size  Used by
kmodlab_dep            16384  0
kmodlab_core           16384  1 kmodlab_dep
nf_tables             327680  0
nfnetlink              20480  1 nf_tables
"""

MODULES = [
    {"name": "kmodlab_core", "source": {"path": "/src/kmodlab_core"}, "options": "greeting=hi level=2"},
    {"name": "kmodlab-dep", "source": {"git": "https://git.example.com/dep.git", "version": "v1"}},
]

PARAMS = """\
/sys/module/kmodlab_core/parameters/greeting:hi
/sys/module/kmodlab_core/parameters/level:2
"""


# ---------------------------------------------------------------- rpm-ostree


def test_booted_deployment_of_a_layered_node():
    booted = _inspect.booted_deployment(STATUS_LAYERED)
    assert booted["image"] == LAYERED
    assert booted["digest"] == LAYERED_DIGEST
    assert booted["image_reference"] == "ostree-unverified-registry:" + LAYERED
    assert booted["checksum"] == "b2" * 32
    assert booted["version"] == "416.94.202406251923-0"
    assert booted["staged"] is False


def test_booted_deployment_is_the_booted_one_not_the_staged_one():
    booted = _inspect.booted_deployment(json.loads(STATUS_STAGED))
    assert booted["digest"] == BASE_DIGEST
    assert booted["staged"] is True


def test_booted_deployment_falls_back_to_the_pinned_reference():
    dep = deployment(LAYERED, None, True)
    del dep["container-image-reference-digest"]
    assert _inspect.booted_deployment(rpm_ostree_json(dep))["digest"] == LAYERED_DIGEST


@pytest.mark.parametrize("text, message", [
    ("error: Unknown option --json\n", "not rpm-ostree status --json output"),
    ("[]", "not rpm-ostree status --json output"),
    ('{"transaction": null}', "no deployments"),
    (rpm_ostree_json(deployment(BASE, BASE_DIGEST, False)), "no booted deployment"),
])
def test_booted_deployment_refuses_what_is_not_a_status(text, message):
    with pytest.raises(ValueError, match=message):
        _inspect.booted_deployment(text)


@pytest.mark.parametrize("reference, image, transport, signature", [
    ("ostree-unverified-registry:" + LAYERED, LAYERED, "registry", "none"),
    ("ostree-unverified-image:docker://" + LAYERED, LAYERED, "registry", "none"),
    ("ostree-unverified-image:registry:" + LAYERED, LAYERED, "registry", "none"),
    ("ostree-remote-image:fedora:docker://" + LAYERED, LAYERED, "registry", "ostree-remote"),
    ("ostree-remote-registry:fedora:" + LAYERED, LAYERED, "registry", "ostree-remote"),
    ("ostree-image-signed:docker://" + LAYERED, LAYERED, "registry", "container-policy"),
    ("ostree-unverified-image:oci:/var/tmp/img", "/var/tmp/img", "oci", "none"),
    (LAYERED, LAYERED, "registry", None),
])
def test_ostree_image_reference_transports_are_stripped(reference, image, transport, signature):
    parsed = _inspect.parse_ostree_image_reference(reference)
    assert (parsed["image"], parsed["transport"], parsed["signature"]) == (image, transport, signature)


def test_image_digest_and_repository():
    assert _inspect.image_digest(LAYERED) == LAYERED_DIGEST
    assert _inspect.image_digest("registry.example.com:5000/kmods/rhcos:tag") is None
    assert _inspect.image_repository(LAYERED) == "registry.example.com/kmods/rhcos-kmods"
    assert _inspect.image_repository("registry.example.com:5000/kmods/rhcos:tag") == "registry.example.com:5000/kmods/rhcos"


# ---------------------------------------------------------------- modules


def test_proc_modules_are_parsed_with_deps_state_and_taint():
    modules = _inspect.parse_modules(PROC_MODULES)
    assert set(modules) == {"kmodlab_dep", "kmodlab_core", "nf_tables", "nfnetlink", "xfs"}
    assert modules["kmodlab_core"] == {"size": 16384, "refcount": 1, "deps": ["kmodlab_dep"], "state": "Live",
                                       "taint": "OE"}
    assert modules["xfs"]["deps"] == [] and modules["xfs"]["refcount"] == 2 and modules["xfs"]["taint"] == ""


def test_lsmod_is_parsed_like_proc_modules():
    modules = _inspect.parse_modules(LSMOD)
    assert set(modules) == {"kmodlab_dep", "kmodlab_core", "nf_tables", "nfnetlink"}
    assert modules["kmodlab_core"]["deps"] == ["kmodlab_dep"] and modules["kmodlab_core"]["refcount"] == 1
    assert _inspect.parse_modules(LSMOD.splitlines()[0] + "\n") == {}


def test_modprobe_options_and_parameter_command():
    assert _inspect.parse_modprobe_options('greeting="hello world" level=2 debug') == {
        "greeting": "hello world", "level": "2", "debug": "Y"}
    assert _inspect.parse_modprobe_options(None) == {}
    argv = _inspect.parameters_command(MODULES)
    assert argv == ["grep", "-H", "-s", ".", "/sys/module/kmodlab_core/parameters/greeting",
                    "/sys/module/kmodlab_core/parameters/level"]
    assert _inspect.parameters_command([{"name": "x"}]) is None


def test_sys_parameters_and_value_comparison():
    assert _inspect.parse_sys_parameters(PARAMS + "grep: /sys/module/x/parameters/y: No such file\n") == {
        "kmodlab_core": {"greeting": "hi", "level": "2"}}
    assert _inspect.parameter_matches("1", "Y") and _inspect.parameter_matches("off", "N")
    assert _inspect.parameter_matches("1", "1")
    assert not _inspect.parameter_matches("2", "1") and not _inspect.parameter_matches("1", "N")
    assert not _inspect.parameter_matches("hi", None)


# ---------------------------------------------------------------- verdicts


def outputs(status=STATUS_LAYERED, modules=PROC_MODULES, params=PARAMS):
    return {"rpm_ostree": status, "modules": modules, "parameters": params}


def test_node_passes_with_image_modules_and_parameters():
    verdict = _inspect.node_verdict("worker-0", LAYERED, MODULES, outputs(), pool="worker")
    assert verdict["verdict"] == "pass", verdict["reasons"]
    assert verdict["image_ok"] is True
    assert verdict["booted_digest"] == verdict["expected_digest"] == LAYERED_DIGEST
    assert verdict["modules"]["kmodlab_dep"]["loaded"] is True  # "kmodlab-dep" as the kernel names it
    assert verdict["modules"]["kmodlab_core"]["parameters"]["level"] == {"expected": "2", "actual": "2", "ok": True}


def test_node_on_another_image_fails_naming_node_and_both_digests():
    verdict = _inspect.node_verdict("worker-1", LAYERED, MODULES, outputs(status=STATUS_STAGED))
    assert verdict["verdict"] == "fail" and verdict["image_ok"] is False
    (reason,) = verdict["reasons"]
    assert "worker-1" in reason and BASE_DIGEST in reason and LAYERED_DIGEST in reason


def test_missing_module_fails_naming_node_and_module():
    modules = MODULES + [{"name": "mydrv"}]
    verdict = _inspect.node_verdict("worker-2", LAYERED, modules, outputs())
    assert verdict["missing_modules"] == ["mydrv"]
    assert verdict["reasons"] == ["node worker-2: module mydrv is not loaded (not in /proc/modules)"]


def test_module_not_loading_at_boot_is_not_required():
    modules = MODULES + [{"name": "mydrv", "load_at_boot": False}]
    verdict = _inspect.node_verdict("worker-2", LAYERED, modules, outputs())
    assert verdict["verdict"] == "pass" and verdict["modules"]["mydrv"]["required"] is False


def test_module_still_loading_fails():
    text = PROC_MODULES.replace("kmodlab_dep 16384 0 - Live", "kmodlab_dep 16384 0 - Loading")
    verdict = _inspect.node_verdict("w", LAYERED, MODULES, outputs(modules=text))
    assert verdict["reasons"] == ["node w: module kmodlab_dep is Loading, not Live"]


def test_wrong_and_unset_parameters_fail():
    verdict = _inspect.node_verdict("w", LAYERED, MODULES,
                                    outputs(params="/sys/module/kmodlab_core/parameters/greeting:hello\n"))
    assert verdict["reasons"] == [
        "node w: module kmodlab_core parameter greeting is 'hello', expected 'hi'",
        "node w: module kmodlab_core parameter level is unset, expected '2'",
    ]
    unchecked = _inspect.node_verdict("w", LAYERED, MODULES, outputs(params=None), check_parameters=False)
    assert unchecked["verdict"] == "pass"


def test_failed_commands_fail_with_their_error():
    verdict = _inspect.node_verdict(
        "w", LAYERED, MODULES, {"parameters": PARAMS},
        {"rpm_ostree": "debug pod w-debug-1 did not finish within 300s (phase Pending: waiting: ImagePullBackOff)",
         "modules": "exit code 127"})
    assert verdict["reasons"] == [
        "node w: cannot read the booted image: debug pod w-debug-1 did not finish within 300s "
        "(phase Pending: waiting: ImagePullBackOff)",
        "node w: cannot read the loaded modules: exit code 127",
    ]


def test_cluster_report_table_and_stats():
    ok = _inspect.node_verdict("worker-0", LAYERED, MODULES, outputs(), pool="worker")
    bad = _inspect.node_verdict("worker-1", LAYERED, MODULES + [{"name": "mydrv"}], outputs(), pool="worker")
    report = _inspect.cluster_report("lab-a", [ok, bad], LAYERED, MODULES, pools=["worker"],
                                     generated_at="2026-01-01T00:00:00Z")
    assert report["verdict"] == "fail"
    assert report["counts"] == {"nodes": 2, "passed": 1, "failed": 1}
    assert report["reasons"] == ["node worker-1: module mydrv is not loaded (not in /proc/modules)"]
    assert report["expected_modules"] == ["kmodlab_core", "kmodlab_dep"]
    json.dumps(report)  # the JSON report file

    passing = _inspect.cluster_report("lab-b-with-a-long-name", [ok], LAYERED, MODULES, pools=["worker"])
    lines = _inspect.table([report, passing])
    header = lines[0]
    assert header.split()[:3] == ["CLUSTER", "POOL", "NODE"]
    rows = lines[2:]
    assert len(rows) == 3
    # Fixed widths: every column starts at the same offset on every row.
    verdict_at = header.index("VERDICT")
    assert [row[verdict_at:verdict_at + 4] for row in rows] == ["pass", "fail", "pass"]
    assert rows[1].endswith("module mydrv is not loaded (not in /proc/modules)")
    assert "lab-b-with-a-lo~" in rows[2]
    assert "2/2" in rows[0] and "2/3" in rows[1]


def test_empty_pool_passes_with_a_warning_and_check_mode_skips():
    report = _inspect.cluster_report("c", [], LAYERED, MODULES, pools=["infra"], warnings=["pool infra has no nodes"])
    assert report["verdict"] == "pass" and report["counts"]["nodes"] == 0
    assert "pool infra has no nodes" in _inspect.table_lines(report)[0]
    skipped = _inspect.cluster_report("c", [], LAYERED, MODULES, skipped_reason="check mode")
    assert skipped["verdict"] == "skipped" and "skipped" in _inspect.table_lines(skipped)[0]


def test_fleet_summary_counts_every_verdict_and_names_the_unverified():
    ok = _inspect.node_verdict("worker-0", LAYERED, MODULES, outputs(), pool="worker")
    bad = _inspect.node_verdict("worker-1", LAYERED, MODULES + [{"name": "mydrv"}], outputs(), pool="worker")
    failing = _inspect.cluster_report("lab-a", [ok, bad], LAYERED, MODULES, pools=["worker"])
    passing = _inspect.cluster_report("lab-b", [ok], LAYERED, MODULES, pools=["worker"])
    skipped = _inspect.cluster_report("lab-c", [], LAYERED, MODULES, skipped_reason="check mode")
    lines, totals = _inspect.fleet_summary([failing, None, passing, skipped], ["lab-a", "lab-b", "lab-c", "lab-d"])
    assert totals == {"clusters": 4, "clusters_passed": 1, "clusters_failed": 1, "clusters_skipped": 1,
                      "clusters_unverified": 1, "nodes": 3, "nodes_passed": 2, "nodes_failed": 1}
    # The table (a header, a rule, a row per node of the reports given, in
    # their order; the skipped cluster one row), then the cluster without a report.
    header, rule = lines[:2]
    assert header.split()[:3] == ["CLUSTER", "POOL", "NODE"] and set(rule.replace(" ", "")) == {"-"}
    rows = lines[2:-1]
    verdict_at = header.index("VERDICT")
    assert [(row.split()[0], row[verdict_at:].split()[0]) for row in rows] == [
        ("lab-a", "pass"), ("lab-a", "fail"), ("lab-b", "pass"), ("lab-c", "skipped")]
    assert lines[-1] == "lab-d: not verified (failed before or during verify)"
    # No report at all: the header, then every cluster as not verified.
    lines, totals = _inspect.fleet_summary([], ["lab-a"])
    assert lines[0] == header and lines[2:] == ["lab-a: not verified (failed before or during verify)"]
    assert totals["clusters"] == 1 and totals["nodes"] == 0


# ---------------------------------------------------------------- debug pods


# The pod `oc debug node/<node> -- <cmd>` creates, transcribed from openshift/oc
# pkg/cli/debug/debug.go (6b8e30c, 2026-04): approximatePodTemplateForObject's
# *corev1.Node case (the template), RunDebug (debug.openshift.io/source-*
# annotations; openshift.io/required-scc=privileged for a Node, added
# 2024-05 for 4.15+) and transformPodForDebug (restartPolicy Never). The
# template sets no tolerations, and nothing later adds any.
OC_DEBUG_NODE = "ip-10-0-1-23.ec2.internal"
OC_DEBUG_NODE_POD = {
    "metadata": {
        "annotations": {
            "debug.openshift.io/source-resource": "/v1, Resource=nodes/" + OC_DEBUG_NODE,
            "debug.openshift.io/source-container": "container-00",
            "openshift.io/required-scc": "privileged",
        },
    },
    "spec": {
        "nodeName": OC_DEBUG_NODE,
        "hostNetwork": True,
        "hostPID": True,
        "hostIPC": True,
        "volumes": [{"name": "host", "hostPath": {"path": "/", "type": "Directory"}}],
        "priorityClassName": "openshift-user-critical",
        "restartPolicy": "Never",
        "containers": [{
            "name": "container-00",
            "securityContext": {"privileged": True, "runAsUser": 0},
            "volumeMounts": [{"name": "host", "mountPath": "/host"}],
            "env": [{"name": "TMOUT", "value": "900"}, {"name": "HOST", "value": "/host"}],
        }],
    },
}
# The temporary namespace of getNamespace (4.12+, when the current one is not privileged).
OC_DEBUG_NAMESPACE_LABELS = {
    "pod-security.kubernetes.io/enforce": "privileged",
    "pod-security.kubernetes.io/audit": "privileged",
    "pod-security.kubernetes.io/warn": "privileged",
    "security.openshift.io/scc.podSecurityLabelSync": "false",
}
OC_DEBUG_NAMESPACE_ANNOTATIONS = {"openshift.io/node-selector": ""}


def _ours():
    return _inspect.debug_pod(OC_DEBUG_NODE, _inspect.CMD_RPM_OSTREE, "openshift-kmod-layering-debug",
                              "registry.example.com/tools:latest", "a1b2c3", 0)


@pytest.mark.parametrize("field", ["nodeName", "hostNetwork", "hostPID", "hostIPC", "volumes", "restartPolicy",
                                   "priorityClassName"])
def test_debug_pod_spec_field_is_what_oc_debug_node_sets(field):
    assert _ours()["spec"][field] == OC_DEBUG_NODE_POD["spec"][field]


@pytest.mark.parametrize("field", ["name", "securityContext", "volumeMounts", "env"])
def test_debug_pod_container_field_is_what_oc_debug_node_sets(field):
    (container,) = _ours()["spec"]["containers"]
    assert container[field] == OC_DEBUG_NODE_POD["spec"]["containers"][0][field]


@pytest.mark.parametrize("name", sorted(OC_DEBUG_NODE_POD["metadata"]["annotations"]))
def test_debug_pod_has_the_annotations_of_oc_debug_node(name):
    # openshift.io/required-scc: SCC admission (4.15+) admits the pod under
    # privileged only, not under another SCC the user may use that admits it too.
    assert _ours()["metadata"]["annotations"][name] == OC_DEBUG_NODE_POD["metadata"]["annotations"][name]


def test_debug_pod_tolerates_no_taint_like_oc_debug_node():
    # Bound by nodeName: the kubelet admits against NoExecute taints only
    # (kubernetes pkg/kubelet/lifecycle/predicate.go), so a cordon or the MCO's
    # UpdateInProgress:PreferNoSchedule never matter; a pod tolerating every
    # taint would also sit forever on a node tainted not-ready/unreachable or
    # out-of-service instead of getting the default 300 s toleration.
    assert "tolerations" not in OC_DEBUG_NODE_POD["spec"]
    assert not _ours()["spec"].get("tolerations")


def test_debug_namespace_has_the_labels_and_annotations_of_oc_debugs_namespace():
    ns = _inspect.debug_namespace("openshift-kmod-layering-debug")
    for name, value in OC_DEBUG_NAMESPACE_LABELS.items():
        assert ns["metadata"]["labels"][name] == value
    for name, value in OC_DEBUG_NAMESPACE_ANNOTATIONS.items():
        assert ns["metadata"]["annotations"][name] == value
    # like oc's openshift-debug-*: an openshift- namespace (the label syncer leaves it alone)
    assert ns["metadata"]["name"].startswith("openshift-")


def test_debug_pod_is_what_oc_debug_node_runs():
    pod = _inspect.debug_pod("ip-10-0-1-23.ec2.internal", _inspect.CMD_RPM_OSTREE,
                             "openshift-kmod-layering-debug", "registry.example.com/tools:latest", "a1b2c3", 0)
    spec = pod["spec"]
    assert spec["nodeName"] == "ip-10-0-1-23.ec2.internal"
    assert spec["hostPID"] and spec["hostNetwork"] and spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    assert container["command"] == ["chroot", "/host", "rpm-ostree", "status", "--json"]
    assert container["securityContext"]["privileged"] is True
    (mount,) = container["volumeMounts"]
    (volume,) = spec["volumes"]
    assert mount["mountPath"] == "/host" and volume["name"] == mount["name"] and volume["hostPath"]["path"] == "/"
    assert pod["metadata"]["name"] == "ip-10-0-1-23-ec2-internal-debug-a1b2c3-0"
    assert pod["metadata"]["labels"][_inspect.LABEL_RUN] == "a1b2c3"


def test_pod_names_and_labels_stay_valid_for_long_node_names():
    node = "a-very-long-node-name-" * 5 + ".example.com"
    pod = _inspect.debug_pod(node, ["cat", "/proc/modules"], "ns", "img", "a1b2c3", 12)
    name = pod["metadata"]["name"]
    assert len(name) <= 63 and name.endswith("-debug-a1b2c3-12")
    label = pod["metadata"]["labels"][_inspect.LABEL_NODE]
    assert len(label) <= 63
    assert label != _inspect.node_label_value(node.replace("a-very", "b-very"))


def test_namespace_has_privileged_pod_security_and_is_patched_when_not():
    ns = _inspect.debug_namespace("openshift-kmod-layering-debug")
    labels = ns["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["security.openshift.io/scc.podSecurityLabelSync"] == "false"
    assert "openshift.io/run-level" not in labels
    assert _inspect.namespace_patch(ns) is None
    existing = copy.deepcopy(ns)
    existing["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "restricted"
    patch = _inspect.namespace_patch(existing)
    assert patch == {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}


def test_pod_outcome_reads_exit_code_and_waiting_reason():
    done = {"status": {"phase": "Failed", "containerStatuses": [
        {"name": "container-00", "state": {"terminated": {"exitCode": 127, "reason": "Error"}}}]}}
    assert _inspect.pod_outcome(done) == ("Failed", 127, "terminated: Error")
    assert _inspect.pod_finished(done)
    stuck = {"status": {"phase": "Pending", "containerStatuses": [
        {"name": "container-00", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling"}}}]}}
    phase, code, reason = _inspect.pod_outcome(stuck)
    assert (phase, code) == ("Pending", None) and "ImagePullBackOff" in reason
    assert not _inspect.pod_finished(stuck)
    assert _inspect.pod_outcome(None) == ("Pending", None, "")


# --- verdicts from the machine-config state (converged reruns) ---------------

def _mco_node(name, state, current):
    return {"metadata": {"name": name, "annotations": {
        "machineconfiguration.openshift.io/state": state,
        "machineconfiguration.openshift.io/currentConfig": current,
        "machineconfiguration.openshift.io/desiredConfig": current}}}


MCO_IMAGE = "registry.example.com/infra/rhcos-kmods@sha256:" + "a" * 64
MCO_MODULES = [{"name": "kmodlab_core"}, {"name": "kmodlab_dep", "load_at_boot": False}]


def test_mco_state_verdict_passes_a_node_done_on_the_rendered_config_of_the_image():
    verdict = _inspect.mco_state_verdict(
        _mco_node("worker-0", "Done", "rendered-worker-1"), "worker", "rendered-worker-1", MCO_IMAGE,
        MCO_IMAGE, MCO_MODULES)
    assert verdict["verdict"] == "pass" and verdict["reasons"] == []
    assert verdict["booted_digest"] == "sha256:" + "a" * 64
    # Modules are not read this way: listed as not inspected, never as loaded.
    assert verdict["modules"]["kmodlab_core"] == {"loaded": None, "required": True, "inspected": False}
    report = _inspect.cluster_report("c1", [verdict], MCO_IMAGE, MCO_MODULES, pools=["worker"])
    (row,) = _inspect.table_lines(report)
    assert "MCO state" in row and "1/1" not in row


def test_mco_state_verdict_fails_a_node_still_rolling_or_on_another_image():
    working = _inspect.mco_state_verdict(
        _mco_node("worker-1", "Working", "rendered-worker-0"), "worker", "rendered-worker-1", MCO_IMAGE, MCO_IMAGE)
    assert working["verdict"] == "fail"
    assert any("state is Working" in r for r in working["reasons"])
    assert any("rendered-worker-0" in r and "rendered-worker-1" in r for r in working["reasons"])
    other = "registry.example.com/infra/rhcos-kmods@sha256:" + "b" * 64
    wrong_image = _inspect.mco_state_verdict(
        _mco_node("worker-0", "Done", "rendered-worker-1"), "worker", "rendered-worker-1", other, MCO_IMAGE)
    assert wrong_image["verdict"] == "fail" and other in wrong_image["reasons"][0]
