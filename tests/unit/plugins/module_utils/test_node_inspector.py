"""_node_inspector over the cluster layer, against recorded API responses:
the debug pods of a verification (created, followed by one watch, logs
read, every pod deleted), and the read-only verdict from the nodes'
machine-config state. Real kubernetes client, real HTTP; the pods' outputs
are what rpm-ostree and /proc/modules print on a layered RHCOS node."""

from __future__ import annotations

import json

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _inspect
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import Failed
from ansible_collections.ocp.kmod_layering.plugins.module_utils._node_inspector import NodeInspector, mco_state_result

from recorded_api import MCO, RecordedApi, cluster_client, event, fixture_items

NAMESPACE = _inspect.DEFAULT_NAMESPACE
PODS = "/api/v1/namespaces/%s/pods" % NAMESPACE
TOOLS = "/apis/image.openshift.io/v1/namespaces/openshift/imagestreamtags/tools:latest"
TOOLS_IMAGE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "7" * 64
IMAGE = "registry.example.com/kmods/rhcos-kmod@sha256:0c4e2b7a9d1f3e5a7c9b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a3c5b7d9f2e4a"
BASE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:5b1a0d7e9c3f2a48b6d0e1f9c8a7b6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9"
MODULES = [{"name": "kmodlab_core"}, {"name": "kmodlab-dep"}]

PROC_MODULES = """\
kmodlab_dep 16384 0 - Live 0xffffffffc0a1e000 (OE)
kmodlab_core 16384 1 kmodlab_dep, Live 0xffffffffc0a14000 (OE)
xfs 2019328 2 - Live 0xffffffffc0c2f000
"""


def rpm_ostree_status(booted_image):
    """``rpm-ostree status --json`` of a node booted into ``booted_image``,
    the base image kept as the rollback deployment (keys of rpm-ostree 2024.x)."""
    def deployment(image, booted):
        digest = image.split("@", 1)[1]
        return {"osname": "rhcos", "booted": booted, "staged": False, "pinned": False,
                "container-image-reference": "ostree-unverified-registry:" + image,
                "container-image-reference-digest": digest, "checksum": digest[7:71], "serial": 0,
                "version": "416.94.202406251923-0", "timestamp": 1719347059}
    return json.dumps({"deployments": [deployment(booted_image, True), deployment(BASE, False)],
                       "transaction": None, "cached-update": None, "update-driver": None}, indent=2) + "\n"


def params(**overrides):
    values = dict(nodes=None, pools=["worker"], node_selector=None, commands=[], expected_image=IMAGE,
                  expected_modules=MODULES, check_parameters=True, namespace=NAMESPACE, create_namespace=True,
                  image="", parallel=20, timeout=20, cluster_name="lab-a")
    values.update(overrides)
    return values


@pytest.fixture
def api(serve_http):
    """The recorded cluster after a rollout (done.yaml); each created debug
    pod runs to completion on the watch, printing what its node would."""
    recorded = RecordedApi()
    items = fixture_items("done.yaml")
    recorded.lists[MCO + "/machineconfigpools"] = [i for i in items if i["kind"] == "MachineConfigPool"]
    recorded.lists["/api/v1/nodes"] = [i for i in items if i["kind"] == "Node"]
    for mc in (i for i in items if i["kind"] == "MachineConfig"):
        recorded.objects["%s/machineconfigs/%s" % (MCO, mc["metadata"]["name"])] = mc
    recorded.lists[PODS] = []
    recorded.objects[TOOLS] = {"kind": "ImageStreamTag", "image": {"dockerImageReference": TOOLS_IMAGE}}
    recorded.booted = {}  # node -> image it booted (default IMAGE)
    # command substring -> (exit code, output), or a function of the node giving them
    recorded.outputs = {}
    recorded.version = 500

    def run_pod(path, pod):
        if path != PODS:
            return
        command = " ".join(pod["spec"]["containers"][0]["command"])
        node = pod["spec"]["nodeName"]
        output = rpm_ostree_status(recorded.booted.get(node, IMAGE)) if "rpm-ostree" in command else PROC_MODULES
        exit_code = 0
        for needle, answer in recorded.outputs.items():
            if needle in command:
                exit_code, output = answer(node) if callable(answer) else answer
        recorded.texts["%s/%s/log" % (PODS, pod["metadata"]["name"])] = output
        finished = json.loads(json.dumps(pod))
        finished["status"] = {"phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": [
            {"name": _inspect.CONTAINER_NAME, "state": {"terminated": {
                "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}}}]}
        recorded.version += 1
        recorded.watch(PODS, event("ADDED", pod, recorded.version), event("MODIFIED", finished, recorded.version + 1))
        recorded.version += 1
    recorded.on_create = run_pod
    address = serve_http(recorded.handler())
    yield recorded, address
    recorded.closed.set()


def inspect(address, check_mode=False, **overrides):
    client = cluster_client(address, request_timeout=5)
    return NodeInspector(client, params(**overrides), check_mode=check_mode).run()


def test_every_node_of_the_pool_verified_through_debug_pods_and_every_pod_deleted(api):
    recorded, address = api
    result = inspect(address, parallel=2)
    report = result["report"]
    assert report["verdict"] == "pass" and report["counts"] == {"nodes": 3, "passed": 3, "failed": 0}
    # Two commands per node (rpm-ostree, /proc/modules): six pods, at most two at a time.
    pods = [c for c in recorded.created if c["kind"] == "Pod"]
    assert result["pods_created"] == len(pods) == 6
    assert sorted(p["metadata"]["name"] for p in pods) == sorted(
        path.rsplit("/", 1)[1] for path in recorded.deleted if path.startswith(PODS + "/"))
    assert not [path for path in recorded.objects if path.startswith(PODS + "/")]
    # The pods run the cluster's tools image, in the namespace created for them.
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {TOOLS_IMAGE}
    (namespace,) = [c for c in recorded.created if c["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert result["changed"] and not result["pods_left"]
    # Followed by watching, not by polling: one list of the run's pods.
    assert recorded.count("GET", PODS, watch=False) == 1


def test_a_node_booted_into_another_image_fails_naming_node_and_both_digests(api):
    recorded, address = api
    node = recorded.lists["/api/v1/nodes"][1]["metadata"]["name"]
    recorded.booted[node] = BASE
    report = inspect(address)["report"]
    assert report["verdict"] == "fail" and report["counts"]["failed"] == 1
    (reason,) = report["reasons"]
    assert node in reason and IMAGE.split("@")[1][7:19] in reason and BASE.split("@")[1][7:19] in reason


def test_a_pod_the_api_refuses_is_reported_and_the_others_still_run(api):
    recorded, address = api
    recorded.fault("POST", PODS, 403)
    result = inspect(address)
    errors = [c["error"] for n in result["nodes"] for c in n["commands"] if c["error"]]
    assert len(errors) == 1 and errors[0].startswith("cannot create debug pod")
    assert "Kubernetes API error 403 (POST %s)" % PODS in errors[0]
    assert result["pods_created"] == 5 and result["report"]["counts"]["failed"] == 1


def test_check_mode_selects_the_nodes_and_creates_nothing(api):
    recorded, address = api
    result = inspect(address, check_mode=True)
    assert len(result["nodes"]) == 3 and result["report"]["verdict"] == "skipped"
    assert recorded.created == [] and not [m for m, _p, _q in recorded.requests if m != "GET"]


def test_a_pool_that_does_not_exist_is_named_with_the_pools_there(api):
    _recorded, address = api
    with pytest.raises(Failed, match="MachineConfigPool.s. gpu not found on cluster lab-a .pools there: worker"):
        inspect(address, pools=["gpu"])


@pytest.mark.parametrize("fixture, verdict", [("done.yaml", "pass"), ("mid_rollout.yaml", "fail")])
def test_machine_config_state_verdict_reads_only(serve_http, fixture, verdict):
    recorded = RecordedApi()
    items = fixture_items(fixture)
    recorded.lists[MCO + "/machineconfigpools"] = [i for i in items if i["kind"] == "MachineConfigPool"]
    recorded.lists["/api/v1/nodes"] = [i for i in items if i["kind"] == "Node"]
    for mc in (i for i in items if i["kind"] == "MachineConfig"):
        recorded.objects["%s/machineconfigs/%s" % (MCO, mc["metadata"]["name"])] = mc
    client = cluster_client(serve_http(recorded.handler()), request_timeout=5)
    result = mco_state_result(client, params())
    report = result["report"]
    assert report["verdict"] == verdict and report["method"] == "mco_state"
    if verdict == "fail":
        working = [n["metadata"]["name"] for n in recorded.lists["/api/v1/nodes"]
                   if n["metadata"]["annotations"]["machineconfiguration.openshift.io/state"] == "Working"]
        assert any(working[0] in reason for reason in report["reasons"])
    assert {m for m, _p, _q in recorded.requests} == {"GET"} and result["pods_created"] == 0


def test_a_node_on_another_kernel_than_the_images_fails_both_ways(api, serve_http):
    """After an upgrade, a node that did not boot the new base still runs the
    old kernel: both verification paths fail it, naming both kernels."""
    recorded, address = api
    nodes = recorded.lists["/api/v1/nodes"]
    kernel = nodes[0]["status"]["nodeInfo"]["kernelVersion"]
    stale = json.loads(json.dumps(nodes[2]))
    stale["status"]["nodeInfo"]["kernelVersion"] = "5.14.0-284.73.1.el9_2.x86_64"
    recorded.lists["/api/v1/nodes"] = nodes[:2] + [stale]
    name = stale["metadata"]["name"]
    for result in (inspect(address, expected_kernel=kernel),
                   mco_state_result(cluster_client(address, request_timeout=5), params(expected_kernel=kernel))):
        report = result["report"]
        assert report["counts"] == {"nodes": 3, "passed": 2, "failed": 1}, report["reasons"]
        (reason,) = report["reasons"]
        assert name in reason and "5.14.0-284.73.1.el9_2.x86_64" in reason and kernel in reason
        assert [n["kernel"] for n in report["nodes"]] == [kernel, kernel, "5.14.0-284.73.1.el9_2.x86_64"]
    # Without expected_kernel the kernel is recorded, not judged.
    final = mco_state_result(cluster_client(address, request_timeout=5), params())["report"]
    assert final["verdict"] == "pass", final["reasons"]
    assert final["nodes"][2]["kernel"] == "5.14.0-284.73.1.el9_2.x86_64"
    assert final["nodes"][0]["os_image"] == nodes[0]["status"]["nodeInfo"]["osImage"]


# --- Secure Boot (issue J) -------------------------------------------------------

SB_KEYS = (
    "/proc/keys:0b4ddd26 I------     1 perm 1f030000     0     0 asymmetri Red Hat Enterprise Linux kernel signing "
    "key: 4d38fd864ebe18c5f0b72e3852e2014c3a676fc8: X509.rsa 3a676fc8 []\n"
    "/proc/keys:2a7b3c91 I------     1 perm 1f010000     0     0 asymmetri Fleet Module Signing: "
    "9f2c41d07b3e5a6c8d1e2f3a4b5c6d7e8f901a2b: X509.rsa 8f901a2b []\n")


def sb_files(lockdown, tainted, taint):
    return ("/sys/kernel/security/lockdown:%s\n/sys/module/module/parameters/sig_enforce:N\n"
            "/proc/sys/kernel/tainted:%s\n%s/sys/module/kmodlab_core/taint:%s\n"
            "/sys/module/kmodlab_dep/taint:%s\n" % (lockdown, tainted, SB_KEYS, taint, taint))


def modinfo(signer):
    out = ""
    for name in ("kmodlab_core", "kmodlab_dep"):
        out += "filename:       /lib/modules/5.14.0-427.26.1.el9_4.x86_64/extra/%s.ko.xz\nname:           %s\n" % (
            name, name)
        if signer:
            out += "sig_id:         PKCS#7\nsigner:         %s\nsig_key:        1A:2B\nsig_hashalgo:   sha256\n" % signer
    return out


def test_secure_boot_facts_of_every_node_in_three_more_pods_each_and_the_table_shows_them(api):
    recorded, address = api
    nodes = [n["metadata"]["name"] for n in recorded.lists["/api/v1/nodes"]]
    workers = [n for n in nodes if "master" not in n]
    secure = workers[0]
    recorded.outputs = {
        "mokutil": lambda node: (0, "SecureBoot enabled\n") if node == secure else (0, "SecureBoot disabled\n"),
        "/proc/keys": lambda node: (0, sb_files("none [integrity] confidentiality", 4096, "O")) if node == secure
        else (0, sb_files("[none] integrity confidentiality", 12288, "OE")),
        "modinfo": lambda node: (0, modinfo("Fleet Module Signing" if node == secure else None)),
    }
    result = inspect(address, secure_boot=True)
    report = result["report"]
    assert report["verdict"] == "pass", report["reasons"]
    # rpm-ostree, /proc/modules, mokutil, the one grep, modinfo: five pods per node.
    pods = [c for c in recorded.created if c["kind"] == "Pod"]
    assert len(pods) == 5 * len(result["nodes"])
    commands = {" ".join(p["spec"]["containers"][0]["command"]) for p in pods}
    assert "chroot /host mokutil --sb-state" in commands
    assert "chroot /host modinfo kmodlab_core kmodlab_dep" in commands
    assert ("chroot /host grep -H -s . /sys/kernel/security/lockdown /sys/module/module/parameters/sig_enforce "
            "/proc/sys/kernel/tainted /proc/keys /sys/module/kmodlab_core/taint /sys/module/kmodlab_dep/taint"
            in commands)
    by_node = dict((n["name"], n) for n in result["nodes"])
    fact = by_node[secure]["secure_boot"]
    assert (fact["state"], fact["lockdown"], fact["enforcing"], fact["unsigned_module_taint"]) == (
        "enabled", "integrity", True, False)
    assert "Fleet Module Signing: 9f2c41d07b3e5a6c8d1e2f3a4b5c6d7e8f901a2b" in fact["trusted_keys"]
    assert fact["modules"]["kmodlab_core"] == {"signer": "Fleet Module Signing", "sig_key": "1A:2B",
                                               "sig_hashalgo": "sha256", "taint": "O"}
    verdicts = dict((v["node"], v) for v in report["nodes"])
    assert verdicts[secure]["secure_boot"] == fact and verdicts[secure]["warnings"] == []
    # The nodes without Secure Boot, tainted by the unsigned modules: warnings, not failures.
    others = [n for n in by_node if n != secure]
    assert all(by_node[n]["secure_boot"]["state"] == "disabled" for n in others)
    assert len(report["warnings"]) == len(others)
    assert all("tainted by an unsigned module (taint OE" in w for w in report["warnings"])
    rows = dict((v["node"], line) for v, line in zip(report["nodes"], report["table"]))
    assert "Secure Boot on (lockdown integrity); signers: kmodlab_core: Fleet Module Signing" in rows[secure]
    row = rows[others[0]]
    assert "Secure Boot off; signers: kmodlab_core: unsigned; kmodlab_dep: unsigned; warning" in row


def test_a_secure_boot_node_that_refused_an_unsigned_module_fails_naming_the_refusal(api):
    recorded, address = api
    recorded.outputs = {
        "/proc/modules": (0, "xfs 2019328 2 - Live 0xffffffffc0c2f000\n"),
        "mokutil": (0, "SecureBoot enabled\n"),
        "/proc/keys": (2, sb_files("none [integrity] confidentiality", 0, "")),
        "modinfo": (0, modinfo(None)),
    }
    report = inspect(address, secure_boot=True)["report"]
    assert report["verdict"] == "fail"
    assert any(r.endswith("module kmodlab_core is not loaded (not in /proc/modules): the kernel refuses unsigned "
                          "modules here (Secure Boot enabled, lockdown integrity): modprobe kmodlab_core: "
                          "Operation not permitted") for r in report["reasons"])


def test_secure_boot_alone_probes_the_state_in_two_pods_and_an_unanswered_state_is_a_warning(api):
    recorded, address = api
    # A node whose tools cannot answer (the lab before it knew these commands).
    recorded.outputs = {"mokutil": (127, "sh: mokutil: not found\n"), "/proc/keys": (1, "")}
    result = inspect(address, secure_boot=True, expected_image=None, expected_modules=None)
    pods = [c for c in recorded.created if c["kind"] == "Pod"]
    assert len(pods) == 2 * len(result["nodes"])
    report = result["report"]
    assert report["verdict"] == "pass" and len(report["warnings"]) == len(result["nodes"])
    assert report["warnings"][0].endswith(
        "cannot read its Secure Boot state: mokutil --sb-state: exit code 127")
    assert all(n["secure_boot"]["state"] == "unknown" for n in result["nodes"])
