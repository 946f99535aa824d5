# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Host inspection of OpenShift nodes: pure logic, no I/O.

- the debug pod an ``oc debug node/<n> -- chroot /host <cmd>`` would run
  (:func:`debug_pod`, :func:`debug_namespace`) and how to read its outcome
  (:func:`pod_outcome`);
- parsers of what the commands print: ``rpm-ostree status --json``
  (:func:`booted_deployment`), ``/proc/modules`` or ``lsmod``
  (:func:`parse_modules`), ``/sys/module/<m>/parameters/<p>`` read with
  ``grep -H`` (:func:`parse_sys_parameters`), modprobe option strings
  (:func:`parse_modprobe_options`), ostree container image references
  (:func:`parse_ostree_image_reference`);
- the verdict of a node against what should run there (:func:`node_verdict`),
  a cluster's report (:func:`cluster_report`) and a fixed-width table of
  reports (:func:`table_lines`, :func:`table`).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import re
import shlex

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _secure_boot

DEFAULT_NAMESPACE = "openshift-kmod-layering-debug"
# `oc debug node` falls back to this when the cluster has no openshift/tools
# ImageStreamTag.
FALLBACK_IMAGE = "registry.redhat.io/rhel9/support-tools:latest"
CONTAINER_NAME = "container-00"
HOST_VOLUME = "host"
# What `oc debug node` sets (openshift/oc pkg/cli/debug/debug.go): the
# priority class of node debug pods (4.12+) and, from 4.15, the SCC the pod
# must be admitted under (without it SCC admission may pick another SCC the
# user can use that also admits the pod, with other defaults).
PRIORITY_CLASS = "openshift-user-critical"
ANNOTATION_REQUIRED_SCC = "openshift.io/required-scc"
REQUIRED_SCC = "privileged"
ANNOTATION_SOURCE_RESOURCE = "debug.openshift.io/source-resource"
ANNOTATION_SOURCE_CONTAINER = "debug.openshift.io/source-container"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_RUN = "kmod-layering.openshift.io/inspect-run"
LABEL_NODE = "kmod-layering.openshift.io/node"
ANNOTATION_COMMAND = "kmod-layering.openshift.io/command"
MANAGED_BY = "ocp.kmod_layering"
COMPONENT = "node-inspect"

NAMESPACE_LABELS = {
    "pod-security.kubernetes.io/enforce": "privileged",
    "pod-security.kubernetes.io/audit": "privileged",
    "pod-security.kubernetes.io/warn": "privileged",
    # Keep the cluster's label syncer from lowering the enforce level.
    "security.openshift.io/scc.podSecurityLabelSync": "false",
    LABEL_MANAGED_BY: MANAGED_BY,
}
NAMESPACE_ANNOTATIONS = {
    # A cluster-wide default node selector must not keep debug pods off nodes.
    "openshift.io/node-selector": "",
}

CMD_RPM_OSTREE = "rpm-ostree status --json"
CMD_PROC_MODULES = "cat /proc/modules"

VERDICT_PASS = "pass"
VERDICT_FAIL = "fail"
VERDICT_SKIPPED = "skipped"


def expected_modules_problem(entries):
    """Why ``expected_modules`` (``kmod_modules`` entries) cannot be checked,
    or None; ``load_at_boot`` is made a bool in place."""
    from ansible.module_utils.parsing.convert_bool import boolean

    for entry in entries or []:
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            return "each of expected_modules needs a name, got %r" % (entry,)
        if entry.get("options") is not None and not isinstance(entry["options"], str):
            return "expected_modules %s: options must be a string like 'a=1 b=2'" % entry["name"]
        if "load_at_boot" in entry:
            try:
                entry["load_at_boot"] = boolean(entry["load_at_boot"], strict=True)
            except TypeError:
                return "expected_modules %s: load_at_boot must be a boolean" % entry["name"]
    return None


# ---------------------------------------------------------------------------
# Debug pods


def debug_namespace(name):
    """The Namespace debug pods run in: privileged pod security, no node selector."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": dict(NAMESPACE_LABELS),
            "annotations": dict(NAMESPACE_ANNOTATIONS),
        },
    }


def namespace_patch(namespace):
    """Metadata patch that gives an existing namespace what debug pods need, or None."""
    meta = (namespace or {}).get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    want_labels = dict((k, v) for k, v in NAMESPACE_LABELS.items()
                       if k != LABEL_MANAGED_BY and labels.get(k) != v)
    want_annotations = dict((k, v) for k, v in NAMESPACE_ANNOTATIONS.items() if annotations.get(k) != v)
    if not want_labels and not want_annotations:
        return None
    patch = {"metadata": {}}
    if want_labels:
        patch["metadata"]["labels"] = want_labels
    if want_annotations:
        patch["metadata"]["annotations"] = want_annotations
    return patch


def command_argv(command):
    """argv of a command given as a string (shell words) or a list."""
    if isinstance(command, (list, tuple)):
        return [str(word) for word in command]
    return shlex.split(command)


def command_text(command):
    return " ".join(shlex.quote(word) for word in command_argv(command))


def _dns_label(text, limit):
    text = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return text[:limit].rstrip("-") or "node"


def pod_name(node, run_id, index):
    """``<node>-debug-<run>-<i>``: readable, unique per run, a valid DNS label."""
    suffix = "-debug-%s-%d" % (run_id, index)
    return _dns_label(node, 63 - len(suffix)) + suffix


def node_label_value(node):
    """A label value naming ``node`` (node names may be longer than 63)."""
    value = _dns_label(node, 63)
    if value != node:
        value = _dns_label(node, 52) + "-" + hashlib.sha256(node.encode("utf-8")).hexdigest()[:10]
    return value


def debug_pod(node, command, namespace, image, run_id, index):
    """The pod ``oc debug node/<node> -- chroot /host <command>`` creates."""
    argv = ["chroot", "/host"] + command_argv(command)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(node, run_id, index),
            "namespace": namespace,
            "labels": {
                LABEL_MANAGED_BY: MANAGED_BY,
                LABEL_COMPONENT: COMPONENT,
                LABEL_RUN: run_id,
                LABEL_NODE: node_label_value(node),
            },
            "annotations": {
                ANNOTATION_COMMAND: command_text(command),
                ANNOTATION_SOURCE_RESOURCE: "/v1, Resource=nodes/" + node,
                ANNOTATION_SOURCE_CONTAINER: CONTAINER_NAME,
                ANNOTATION_REQUIRED_SCC: REQUIRED_SCC,
            },
        },
        "spec": {
            "nodeName": node,
            "hostPID": True,
            "hostNetwork": True,
            "hostIPC": True,
            "restartPolicy": "Never",
            "priorityClassName": PRIORITY_CLASS,
            "terminationGracePeriodSeconds": 0,
            "enableServiceLinks": False,
            # No tolerations, as `oc debug node`: the pod is bound by
            # nodeName, so NoSchedule / PreferNoSchedule taints (a cordon,
            # the MCO's UpdateInProgress) never keep it off the node (the
            # kubelet admits against NoExecute taints only), and a NoExecute
            # taint (node not ready, out of service, or reserved by its
            # owner) refuses or evicts it like any pod instead of being
            # tolerated forever.
            "containers": [
                {
                    "name": CONTAINER_NAME,
                    "image": image,
                    "command": argv,
                    "env": [{"name": "TMOUT", "value": "900"}, {"name": "HOST", "value": "/host"}],
                    "securityContext": {"privileged": True, "runAsUser": 0},
                    "volumeMounts": [{"name": HOST_VOLUME, "mountPath": "/host"}],
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                }
            ],
            "volumes": [{"name": HOST_VOLUME, "hostPath": {"path": "/", "type": "Directory"}}],
        },
    }


def pod_finished(pod):
    return ((pod or {}).get("status") or {}).get("phase") in ("Succeeded", "Failed")


def pod_outcome(pod):
    """(phase, exit code or None, reason text) of a debug pod as last seen."""
    status = (pod or {}).get("status") or {}
    phase = status.get("phase") or "Pending"
    exit_code = None
    reasons = []
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if state.get("terminated"):
            term = state["terminated"]
            exit_code = term.get("exitCode")
            if term.get("reason") and term.get("reason") != "Completed":
                reasons.append("terminated: %s" % term["reason"])
        elif state.get("waiting"):
            wait = state["waiting"]
            reasons.append(("waiting: %s %s" % (wait.get("reason") or "", wait.get("message") or "")).strip())
    for cond in status.get("conditions") or []:
        if cond.get("status") == "False" and cond.get("reason"):
            reasons.append("%s=False: %s %s" % (cond.get("type"), cond.get("reason"), cond.get("message") or ""))
    if status.get("reason"):
        reasons.append(("%s %s" % (status["reason"], status.get("message") or "")).strip())
    if exit_code is None and phase == "Succeeded":
        exit_code = 0
    return phase, exit_code, "; ".join(r.strip() for r in reasons)


# ---------------------------------------------------------------------------
# rpm-ostree


_TRANSPORTS = ("registry:", "docker://", "oci:", "oci-archive:", "containers-storage:", "dir:", "docker-archive:")


def parse_ostree_image_reference(reference):
    """Split an ostree container image reference into its parts.

    ``ostree-unverified-registry:<image>``, ``ostree-unverified-image:<transport>:<image>``,
    ``ostree-remote-registry:<remote>:<image>``, ``ostree-remote-image:<remote>:<transport><image>``,
    ``ostree-image-signed:<transport><image>``; a bare image is taken as is.
    Returns ``{"signature", "remote", "transport", "image"}``.
    """
    ref = (reference or "").strip()
    signature = remote = None
    transport = "registry"
    rest = ref
    if ref.startswith("ostree-unverified-registry:"):
        signature, rest = "none", ref[len("ostree-unverified-registry:"):]
        return {"signature": signature, "remote": None, "transport": "registry", "image": rest}
    if ref.startswith("ostree-remote-registry:"):
        remote, rest = ref[len("ostree-remote-registry:"):].split(":", 1)
        return {"signature": "ostree-remote", "remote": remote, "transport": "registry", "image": rest}
    if ref.startswith("ostree-unverified-image:"):
        signature, rest = "none", ref[len("ostree-unverified-image:"):]
    elif ref.startswith("ostree-remote-image:"):
        signature = "ostree-remote"
        remote, rest = ref[len("ostree-remote-image:"):].split(":", 1)
    elif ref.startswith("ostree-image-signed:"):
        signature, rest = "container-policy", ref[len("ostree-image-signed:"):]
    for prefix in _TRANSPORTS:
        if rest.startswith(prefix):
            transport = prefix.rstrip(":/")
            if transport == "docker":
                transport = "registry"
            rest = rest[len(prefix):]
            break
    return {"signature": signature, "remote": remote, "transport": transport, "image": rest}


def image_digest(image):
    """The ``sha256:…`` of a digest-pinned pullspec, else None."""
    if image and "@" in image:
        digest = image.rsplit("@", 1)[1]
        if re.match(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}$", digest):
            return digest
    return None


def image_repository(image):
    """``host/repo`` of a pullspec (tag and digest dropped)."""
    if not image:
        return None
    name = image.rsplit("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return name


def booted_deployment(status):
    """The booted deployment of ``rpm-ostree status --json`` (text or parsed).

    Returns ``{"image", "image_reference", "digest", "checksum", "version",
    "staged"}`` where ``image`` is the pullspec without the ostree transport
    and ``staged`` tells a deployment waits for the next boot. Raises
    ValueError when the output is not rpm-ostree's JSON or nothing is booted.
    """
    if not isinstance(status, dict):
        try:
            status = json.loads(status)
        except (TypeError, ValueError) as exc:
            raise ValueError("not rpm-ostree status --json output: %s" % exc)
    if not isinstance(status, dict):
        raise ValueError("not rpm-ostree status --json output: %s" % type(status).__name__)
    deployments = status.get("deployments")
    if not isinstance(deployments, list):
        raise ValueError("rpm-ostree status has no deployments list")
    booted = [d for d in deployments if isinstance(d, dict) and d.get("booted")]
    if not booted:
        raise ValueError("rpm-ostree status shows no booted deployment")
    dep = booted[0]
    reference = dep.get("container-image-reference") or ""
    parsed = parse_ostree_image_reference(reference) if reference else None
    image = parsed["image"] if parsed else None
    digest = dep.get("container-image-reference-digest") or image_digest(image)
    return {
        "image": image,
        "image_reference": reference or None,
        "digest": digest,
        "checksum": dep.get("checksum"),
        "version": dep.get("version"),
        "staged": any(isinstance(d, dict) and d.get("staged") for d in deployments),
    }


# ---------------------------------------------------------------------------
# Kernel modules


def normalize_module(name):
    """The kernel's form of a module name (``-`` becomes ``_``)."""
    return (name or "").replace("-", "_")


def parse_proc_modules(text):
    """``/proc/modules`` → ``{name: {size, refcount, deps, state, taint}}``.

    Lines: ``name size refcount deps state address [taint]`` where deps is
    ``-`` or ``a,b,``.
    """
    modules = {}
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[1].isdigit():
            continue
        deps = [d for d in fields[3].split(",") if d and d != "-"]
        refcount = int(fields[2]) if fields[2].lstrip("-").isdigit() else None
        modules[fields[0]] = {
            "size": int(fields[1]),
            "refcount": refcount,
            "deps": deps,
            "state": fields[4],
            "taint": fields[6].strip("()") if len(fields) > 6 else "",
        }
    return modules


def parse_lsmod(text):
    """``lsmod`` → same shape as :func:`parse_proc_modules` (state ``Live``: lsmod omits it)."""
    modules = {}
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0] == "Module" or not fields[1].isdigit():
            continue
        users = [u for u in fields[3].split(",") if u] if len(fields) > 3 else []
        modules[fields[0]] = {
            "size": int(fields[1]),
            "refcount": int(fields[2]) if fields[2].lstrip("-").isdigit() else None,
            "deps": users,
            "state": "Live",
            "taint": "",
        }
    return modules


def parse_modules(text):
    """``/proc/modules`` or ``lsmod`` output, told apart by lsmod's header."""
    for line in (text or "").splitlines():
        if line.strip():
            if line.split()[0] == "Module":
                return parse_lsmod(text)
            break
    return parse_proc_modules(text)


def parse_modprobe_options(options):
    """``greeting=hi level=2 msg="a b"`` → ``{"greeting": "hi", "level": "2", "msg": "a b"}``.

    A bare ``flag`` (no ``=``) is a boolean set to true (``Y``).
    """
    params = {}
    if not options:
        return params
    for word in shlex.split(options):
        if "=" in word:
            key, value = word.split("=", 1)
        else:
            key, value = word, "Y"
        params[normalize_module(key)] = value
    return params


SYS_PARAM_RE = re.compile(r"^/sys/module/([^/]+)/parameters/([^/:]+):(.*)$")


def parameters_command(expected_modules):
    """argv reading the parameter files of the options of ``expected_modules``, or None.

    ``grep -H -s . <files>`` prints ``<file>:<value>`` for each file that
    exists (``-s``: missing files are not an error message).
    """
    files = []
    for module in expected_modules or []:
        name = normalize_module(module.get("name"))
        for param in sorted(parse_modprobe_options(module.get("options"))):
            files.append("/sys/module/%s/parameters/%s" % (name, param))
    if not files:
        return None
    return ["grep", "-H", "-s", "."] + files


def parse_sys_parameters(text):
    """``grep -H`` output of parameter files → ``{module: {param: value}}``."""
    params = {}
    for line in (text or "").splitlines():
        match = SYS_PARAM_RE.match(line.rstrip("\n"))
        if match:
            params.setdefault(match.group(1), {})[match.group(2)] = match.group(3)
    return params


_TRUE = ("1", "y", "Y", "on", "true", "yes")
_FALSE = ("0", "n", "N", "off", "false", "no")


def parameter_matches(expected, actual):
    """Whether a sysfs value shows the modprobe option (bools print ``Y``/``N``)."""
    if actual is None:
        return False
    expected, actual = str(expected), str(actual).strip()
    if expected == actual:
        return True
    if actual in ("Y", "N"):
        return (expected in _TRUE and actual == "Y") or (expected in _FALSE and actual == "N")
    return False


# ---------------------------------------------------------------------------
# Verdicts


def _short(digest):
    return digest or "none"


def node_verdict(node, expected_image=None, expected_modules=None, outputs=None, errors=None,
                 check_parameters=True, pool=None):
    """Verdict of one node.

    ``outputs``: ``{"rpm_ostree": text, "modules": text, "parameters": text}``
    (each None when its command did not run or failed; say why in ``errors``:
    ``{"rpm_ostree": "…"}``). ``expected_modules``: ``kmod_modules`` entries
    (``name``, ``options``, ``load_at_boot`` default true); modules that do
    not load at boot are listed but not required.

    Returns a dict with ``node``, ``pool``, ``verdict`` (pass/fail),
    ``reasons`` (human sentences naming the node), ``booted_image``,
    ``booted_digest``, ``expected_digest``, ``image_ok``, ``modules``
    (``{name: {loaded, required, state, refcount, deps, parameters}}``),
    ``missing_modules``.
    """
    outputs = outputs or {}
    errors = errors or {}
    reasons = []
    expected_digest = image_digest(expected_image) if expected_image else None

    booted = None
    if outputs.get("rpm_ostree") is not None:
        try:
            booted = booted_deployment(outputs["rpm_ostree"])
        except ValueError as exc:
            reasons.append("node %s: cannot read the booted image: %s" % (node, exc))
    elif expected_image:
        reasons.append("node %s: cannot read the booted image: %s" % (node, errors.get("rpm_ostree") or "no output"))
    image_ok = None
    if expected_image and booted is not None:
        if expected_digest is None:
            image_ok = booted["image"] == expected_image
            if not image_ok:
                reasons.append("node %s booted image %s, expected %s" % (node, booted["image"], expected_image))
        else:
            image_ok = booted["digest"] == expected_digest
            if not image_ok:
                reasons.append("node %s booted image digest %s (%s), expected digest %s (%s)" % (
                    node, _short(booted["digest"]), booted["image"], expected_digest, expected_image))

    loaded = None
    if outputs.get("modules") is not None:
        loaded = parse_modules(outputs["modules"])
    elif expected_modules:
        reasons.append("node %s: cannot read the loaded modules: %s" % (node, errors.get("modules") or "no output"))
    params = None
    if outputs.get("parameters") is not None:
        params = parse_sys_parameters(outputs["parameters"])

    modules = {}
    missing = []
    for module in expected_modules or []:
        name = normalize_module(module.get("name"))
        required = module.get("load_at_boot", True) is not False
        info = (loaded or {}).get(name)
        entry = {
            "loaded": info is not None and info.get("state") == "Live" if loaded is not None else None,
            "required": required,
            "state": info.get("state") if info else None,
            "refcount": info.get("refcount") if info else None,
            "deps": info.get("deps") if info else [],
            "parameters": {},
        }
        if loaded is not None and required:
            if info is None:
                missing.append(name)
                reasons.append("node %s: module %s is not loaded (not in /proc/modules)" % (node, name))
            elif info.get("state") != "Live":
                reasons.append("node %s: module %s is %s, not Live" % (node, name, info.get("state")))
        wanted = parse_modprobe_options(module.get("options"))
        if wanted and check_parameters and required and info is not None:
            if params is None:
                reasons.append("node %s: cannot read the parameters of module %s: %s" % (
                    node, name, errors.get("parameters") or "no output"))
            for key, value in sorted(wanted.items()):
                actual = (params or {}).get(name, {}).get(key)
                ok = parameter_matches(value, actual)
                entry["parameters"][key] = {"expected": value, "actual": actual, "ok": ok}
                if params is not None and not ok:
                    reasons.append("node %s: module %s parameter %s is %s, expected %s" % (
                        node, name, key, "unset" if actual is None else repr(actual), repr(value)))
        modules[name] = entry

    return {
        "node": node,
        "pool": pool,
        "verdict": VERDICT_FAIL if reasons else VERDICT_PASS,
        "reasons": reasons,
        "booted_image": booted["image"] if booted else None,
        "booted_digest": booted["digest"] if booted else None,
        "booted_version": booted["version"] if booted else None,
        "staged_deployment": booted["staged"] if booted else None,
        "expected_image": expected_image,
        "expected_digest": expected_digest,
        "image_ok": image_ok,
        "modules": modules,
        "missing_modules": missing,
    }


MCO_STATE_ANNOTATION = "machineconfiguration.openshift.io/state"
MCO_CURRENT_CONFIG_ANNOTATION = "machineconfiguration.openshift.io/currentConfig"


def mco_state_verdict(node, pool, target_config, rendered_image, expected_image=None, expected_modules=None):
    """Verdict of one node from the Machine Config Operator's view, without
    running anything on it.

    The machine-config daemon sets a node's ``currentConfig`` to a rendered
    config only after the node booted that config's ``osImageURL``, so a node
    ``Done`` on ``target_config`` (the pool's rendered config, whose image is
    ``rendered_image``) runs that image. Loaded modules are not read this way:
    they are listed as not inspected. ``node`` is the Node object.
    """
    name = node["metadata"]["name"]
    annotations = node["metadata"].get("annotations") or {}
    state = annotations.get(MCO_STATE_ANNOTATION)
    current = annotations.get(MCO_CURRENT_CONFIG_ANNOTATION)
    expected_digest = image_digest(expected_image) if expected_image else None
    rendered_digest = image_digest(rendered_image) if rendered_image else None
    reasons = []
    if state != "Done":
        reasons.append("node %s: machine-config state is %s, not Done" % (name, state or "unknown"))
    if current != target_config:
        reasons.append("node %s runs rendered config %s, not the pool's %s" % (name, current, target_config))
    if expected_image and rendered_digest != expected_digest:
        reasons.append("node %s: the pool's rendered config %s carries image %s, expected %s" % (
            name, target_config, rendered_image, expected_image))
    modules = dict(
        (normalize_module(m.get("name")), {"loaded": None, "required": m.get("load_at_boot", True), "inspected": False})
        for m in expected_modules or [])
    return {
        "node": name,
        "pool": pool,
        "method": "mco_state",
        "verdict": VERDICT_FAIL if reasons else VERDICT_PASS,
        "reasons": reasons,
        "booted_image": rendered_image if not reasons else None,
        "booted_digest": rendered_digest if not reasons else None,
        "expected_digest": expected_digest,
        "image_ok": not reasons,
        "modules": modules,
        "missing_modules": [],
    }


def kernel_verdict(verdict, node_object, expected_kernel=None):
    """Adds the kernel the node runs (``status.nodeInfo.kernelVersion``, the
    kubelet's ``uname -r``) and its OS (``nodeInfo.osImage``) to ``verdict``
    as ``kernel`` and ``os_image``, and fails it when
    ``expected_kernel`` (the kernel the image was built for) differs: after
    an upgrade, a node on the old kernel did not boot the new base."""
    node_info = ((node_object or {}).get("status") or {}).get("nodeInfo") or {}
    kernel = node_info.get("kernelVersion")
    verdict["kernel"] = kernel
    # The OS the kubelet reports (RHCOS and its version, so which release's
    # OS the node runs: "Red Hat Enterprise Linux CoreOS 416.94..." is 4.16).
    verdict["os_image"] = node_info.get("osImage")
    verdict["expected_kernel"] = expected_kernel
    if expected_kernel and kernel != expected_kernel:
        verdict["reasons"].append("node %s runs kernel %s, expected %s (the kernel the image was built for)" % (
            verdict["node"], kernel or "unknown", expected_kernel))
        verdict["verdict"] = VERDICT_FAIL
    return verdict


def cluster_report(cluster, verdicts, expected_image=None, expected_modules=None, pools=None,
                   warnings=None, generated_at=None, skipped_reason=None):
    """A cluster's report: verdict, counts, every node's verdict.

    ``verdict`` is ``pass`` when every node passes (an empty pool passes,
    with a warning), ``fail`` otherwise, ``skipped`` with ``skipped_reason``.
    """
    verdicts = list(verdicts or [])
    failed = [v for v in verdicts if v["verdict"] != VERDICT_PASS]
    if skipped_reason:
        verdict = VERDICT_SKIPPED
    else:
        verdict = VERDICT_FAIL if failed else VERDICT_PASS
    return {
        "cluster": cluster,
        "verdict": verdict,
        "skipped_reason": skipped_reason,
        "generated_at": generated_at,
        "expected_image": expected_image,
        "expected_digest": image_digest(expected_image) if expected_image else None,
        "expected_modules": [normalize_module(m.get("name")) for m in expected_modules or []],
        "pools": list(pools or []),
        "counts": {
            "nodes": len(verdicts),
            "passed": len(verdicts) - len(failed),
            "failed": len(failed),
        },
        "reasons": [r for v in failed for r in v["reasons"]],
        # The report's own (a pool without nodes), then the nodes' (Secure Boot).
        "warnings": list(warnings or []) + [w for v in verdicts for w in v.get("warnings") or []],
        "nodes": verdicts,
    }


TABLE_COLUMNS = (("CLUSTER", 16), ("POOL", 10), ("NODE", 24), ("VERDICT", 7), ("BOOTED DIGEST", 19),
                 ("MODULES", 9), ("DETAIL", 0))


def _cell(text, width):
    text = "" if text is None else str(text)
    if not width:
        return text
    if len(text) > width:
        text = text[: width - 1] + "~"
    return text.ljust(width)


def _row(cells):
    return "  ".join(_cell(c, w) for c, (_h, w) in zip(cells, TABLE_COLUMNS)).rstrip()


def table_header():
    return [_row([h for h, _w in TABLE_COLUMNS]), _row(["-" * (w or 6) for _h, w in TABLE_COLUMNS])]


def table_lines(report):
    """The rows of one cluster's report in the fixed-width table (no header)."""
    lines = []
    if report.get("verdict") == VERDICT_SKIPPED:
        return [_row([report["cluster"], "", "", VERDICT_SKIPPED, "", "", report.get("skipped_reason") or ""])]
    if not report.get("nodes"):
        detail = "; ".join(report.get("warnings") or []) or "no nodes"
        return [_row([report["cluster"], ",".join(report.get("pools") or []), "-", report["verdict"], "", "", detail])]
    for node in report["nodes"]:
        required = [n for n, m in (node.get("modules") or {}).items() if m.get("required")]
        loaded = [n for n in required if node["modules"][n].get("loaded")]
        digest = node.get("booted_digest") or ""
        if digest.startswith("sha256:"):
            digest = digest[:19]
        modules_cell = "%d/%d" % (len(loaded), len(required))
        if node.get("method") == "mco_state":
            modules_cell = "-"  # not inspected
        if node["verdict"] == VERDICT_PASS and node.get("method") == "mco_state":
            detail = "Done on the image's rendered config (MCO state; modules not re-inspected)"
        elif node["verdict"] == VERDICT_PASS:
            detail = "image and modules ok"
        else:
            prefix = "node %s" % node["node"]
            detail = "; ".join(r.replace(prefix + ": ", "").replace(prefix + " ", "") for r in node["reasons"])
        if "secure_boot" in node:
            detail = "; ".join(part for part in (detail, _secure_boot.table_note(node)) if part)
        lines.append(_row([report["cluster"], node.get("pool") or "", node["node"], node["verdict"], digest,
                           modules_cell, detail]))
    return lines


def table(reports):
    """The fixed-width table of several clusters' reports, header first."""
    lines = table_header()
    for report in reports:
        lines.extend(table_lines(report))
    return lines


def fleet_summary(reports, clusters):
    """``(table, totals)`` of a fleet: the fixed-width table of every report,
    then a line for each cluster of ``clusters`` without a report (it failed
    or was left out before verify), and the fleet's totals."""
    reports = [r for r in reports or [] if r]
    verified = set(r.get("cluster") for r in reports)
    unverified = [c for c in clusters or [] if c not in verified]
    lines = table(reports)
    lines.extend("%s: not verified (failed before or during verify)" % c for c in unverified)

    def clusters_with(verdict):
        return len([r for r in reports if r.get("verdict") == verdict])

    def nodes(key):
        return sum(int((r.get("counts") or {}).get(key) or 0) for r in reports)

    totals = {
        "clusters": len(reports) + len(unverified),
        "clusters_passed": clusters_with(VERDICT_PASS),
        "clusters_failed": clusters_with(VERDICT_FAIL),
        "clusters_skipped": clusters_with(VERDICT_SKIPPED),
        "clusters_unverified": len(unverified),
        "nodes": nodes("nodes"),
        "nodes_passed": nodes("passed"),
        "nodes_failed": nodes("failed"),
    }
    return lines, totals
