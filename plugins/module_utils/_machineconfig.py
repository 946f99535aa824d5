# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The MachineConfig that rolls a layered OS image out to a pool: pure functions.

Nothing here talks to a cluster. The rollout role reads the cluster's
MachineConfigPools and MachineConfigs and hands them in; ``render.yml``
renders without any.

- ``machineconfig_name(prefix, pool)``, ``build_machineconfig(...)``: our
  MachineConfig (fixed name ``<prefix>-<pool>``, role label, build key and
  modules recorded, ``spec.osImageURL`` pinned by digest);
- ``image_problem(image)``: why an image cannot be an ``osImageURL`` (tag only,
  no registry host, ...), or None;
- ``validate_machineconfig(mc)``: the structural checks that matter (kind,
  name, labels, pruned fields, types of the CRD schema) plus the CRD's
  openAPIV3Schema through ``jsonschema`` when it is importable;
- ``pool_problem(...)``, ``cluster_version_problem(...)``,
  ``effective_check(...)``, ``signature_check(...)``: the gates before a
  write (the pool exists, is not paused and not degraded; the cluster is not
  mid-upgrade; our osImageURL would be the one the pool renders, by the
  MCO's rule in ``_mco.effective_os_image_url``; the pool's nodes would
  load the modules' signatures, ``_secure_boot.pool_signature_gate``);
- ``history_of``, ``with_history``, ``rollback_plan``: the previous images
  our MachineConfig ran (annotation ``kmod-layering.io/history``) and what a
  rollback writes (the previous image, or no MachineConfig at all).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
import re

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _mco, _secure_boot
from ansible_collections.ocp.kmod_layering.plugins.module_utils._machineconfig_schema import (
    API_VERSION,
    CRD_NAME,
    KIND,
    MACHINECONFIG_SCHEMA,
)

# Imported on first use (``_jsonschema``): it costs a fifth of a second, and
# most modules that import this file never validate against the schema.
_NOT_IMPORTED = object()
jsonschema = _NOT_IMPORTED


def _jsonschema():
    """The jsonschema module, or None when it is not installed (structural
    checks only; see validate_machineconfig)."""
    global jsonschema  # pylint: disable=global-statement
    if jsonschema is _NOT_IMPORTED:
        try:
            import jsonschema as module  # pylint: disable=import-outside-toplevel
        except ImportError:
            module = None
        jsonschema = module
    return jsonschema


DEFAULT_NAME_PREFIX = "99-kmod-layering"
LABEL_PREFIX = "kmod-layering.io/"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "ocp.kmod_layering"
LABEL_BUILD_KEY = LABEL_PREFIX + "build-key"
LABEL_POOL = LABEL_PREFIX + "pool"
ANNOTATION_BUILD_KEY = LABEL_PREFIX + "build-key"
ANNOTATION_MODULES = LABEL_PREFIX + "modules"
ANNOTATION_KERNEL_VERSION = LABEL_PREFIX + "kernel-version"
ANNOTATION_RELEASE = LABEL_PREFIX + "release"
# The images the layered image was built from: with the build key they let a
# rerun tell, from the cluster alone, that it would build the same image.
ANNOTATION_RELEASE_IMAGE = LABEL_PREFIX + "release-image"
ANNOTATION_DRIVER_TOOLKIT_IMAGE = LABEL_PREFIX + "driver-toolkit-image"
ANNOTATION_RHCOS_IMAGE = LABEL_PREFIX + "rhcos-image"
# The sha256 fingerprint (lowercase hex of the DER) of the certificate the
# image's modules are signed with (issue J); absent when they are unsigned.
# A rerun with another certificate is not converged (``_convergence``).
ANNOTATION_SIGNING_CERT = LABEL_PREFIX + "signing-cert-sha256"
# JSON list, oldest first, of what our MachineConfig held before each change
# of its osImageURL (osImageURL and our annotations): rollback returns to the
# last entry; no entry means our MachineConfig did not exist before.
ANNOTATION_HISTORY = LABEL_PREFIX + "history"
# Set by a rollback on the MachineConfig it restored (the image it left): a
# second rollback changes nothing; the next rollout drops it.
ANNOTATION_ROLLED_BACK_FROM = LABEL_PREFIX + "rolled-back-from"
HISTORY_MAX = 5
_HISTORY_KEYS = {
    "build-key": ANNOTATION_BUILD_KEY,
    "modules": ANNOTATION_MODULES,
    "kernel-version": ANNOTATION_KERNEL_VERSION,
    "release": ANNOTATION_RELEASE,
    "release-image": ANNOTATION_RELEASE_IMAGE,
    "driver-toolkit-image": ANNOTATION_DRIVER_TOOLKIT_IMAGE,
    "rhcos-image": ANNOTATION_RHCOS_IMAGE,
    "signing-cert-sha256": ANNOTATION_SIGNING_CERT,
}

_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN_RE = re.compile(r"^%s(?:\.%s)*$" % (_DNS_LABEL, _DNS_LABEL))
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# distribution/reference: [host[:port]/]path[:tag]; path components lowercase.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(
    r"^(?P<host>[A-Za-z0-9](?:[-A-Za-z0-9.]*[A-Za-z0-9])?(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?)"
    r"/(?P<path>%s(?:/%s)*)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?$" % (_PATH_COMPONENT, _PATH_COMPONENT)
)
MAX_ANNOTATIONS_BYTES = 256 * 1024


class MachineConfigError(ValueError):
    """Bad input for our MachineConfig (the message says which and what to do)."""


# ---------------------------------------------------------------------------
# Names and images

def is_dns_subdomain(value):
    return bool(value) and len(value) <= 253 and bool(_DNS_SUBDOMAIN_RE.match(value))


def machineconfig_name(prefix, pool):
    """``<prefix>-<pool>``, checked to be a valid object name."""
    prefix = DEFAULT_NAME_PREFIX if prefix is None else prefix
    if not is_dns_subdomain(pool or ""):
        raise MachineConfigError(
            "pool name %r is not a valid MachineConfigPool name (lowercase letters, digits, '-' and '.'); "
            "fix kmod_pools." % (pool,))
    name = "%s-%s" % (prefix, pool) if prefix else pool
    if not is_dns_subdomain(name):
        raise MachineConfigError(
            "MachineConfig name %r (kmod_machineconfig_name_prefix %r + '-' + pool) is not a valid object name: "
            "use lowercase letters, digits, '-' and '.', at most 253 characters." % (name, prefix))
    return name


def image_problem(image):
    """Why ``image`` cannot be a MachineConfig osImageURL, or None.

    It must be a fully qualified pullspec (registry host first) pinned by
    digest, ``host[:port]/path[:tag]@sha256:<64 hex>``: every node pulls it on
    its own, and a tag could move between two nodes' pulls.
    """
    if not image or not isinstance(image, str):
        return "no image given"
    if image != image.strip() or any(c.isspace() for c in image):
        return "%r contains whitespace" % image
    if "@" not in image:
        return ("%s is not pinned by digest (no @sha256:...); a tag can move between two nodes' pulls. "
                "Use the repo@sha256:<digest> the publish step read from the registry." % image)
    name, digest = image.rsplit("@", 1)
    if not _DIGEST_RE.match(digest):
        return "%s: digest %r is not sha256:<64 lowercase hex digits>" % (image, digest)
    match = _NAME_RE.match(name)
    if not match:
        return ("%s: %r is not a fully qualified image name (registry host, then a lowercase repository path)"
                % (image, name))
    host = match.group("host")
    if "." not in host and ":" not in host and host != "localhost":
        return ("%s: %r is not a registry host (nodes resolve no short names); give the registry, "
                "e.g. registry.example.com/%s" % (image, host, name))
    return None


# ---------------------------------------------------------------------------
# The object

def build_machineconfig(pool, os_image_url, name_prefix=None, build_key=None, modules=None,
                        kernel_version=None, release=None, release_image=None, driver_toolkit_image=None,
                        rhcos_image=None, signing_cert_sha256=None):
    """Our MachineConfig for ``pool`` (a dict, as the API takes it).

    ``signing_cert_sha256``: the fingerprint of the modules' signing
    certificate (``signing.cert_sha256`` of the build), or None (unsigned).

    Raises ``MachineConfigError`` on bad input (bad pool or prefix, image not
    pinned by digest).
    """
    name = machineconfig_name(name_prefix, pool)
    problem = image_problem(os_image_url)
    if problem:
        raise MachineConfigError("kmod_image: " + problem)
    labels = {
        _mco.ROLE_LABEL: pool,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_POOL: pool,
    }
    annotations = {}
    if build_key:
        annotations[ANNOTATION_BUILD_KEY] = str(build_key)
        short = re.sub(r"[^A-Za-z0-9_.-]", "", str(build_key))[:63].strip("-_.")
        if short:
            labels[LABEL_BUILD_KEY] = short
    if modules:
        names = [str(m.get("name") if isinstance(m, dict) else m) for m in modules]
        annotations[ANNOTATION_MODULES] = ",".join(names)
    if kernel_version:
        annotations[ANNOTATION_KERNEL_VERSION] = str(kernel_version)
    if release:
        annotations[ANNOTATION_RELEASE] = str(release)
    for annotation, value in ((ANNOTATION_RELEASE_IMAGE, release_image),
                              (ANNOTATION_DRIVER_TOOLKIT_IMAGE, driver_toolkit_image),
                              (ANNOTATION_RHCOS_IMAGE, rhcos_image),
                              (ANNOTATION_SIGNING_CERT, signing_cert_sha256)):
        if value:
            annotations[annotation] = str(value)
    metadata = {"name": name, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {"osImageURL": os_image_url},
    }


# ---------------------------------------------------------------------------
# Validation

def _check_label_key(key):
    prefix, _sep, name = key.rpartition("/")
    if prefix and not is_dns_subdomain(prefix):
        return "label key %r: prefix %r is not a DNS subdomain" % (key, prefix)
    if not name or len(name) > 63 or not _LABEL_NAME_RE.match(name):
        return "label key %r: name part must be 1-63 of [A-Za-z0-9-_.], alphanumeric at both ends" % key
    return None


def _structural_errors(value, schema, path):
    """Type and pruning checks for the subset of openAPIV3 the CRD uses.

    A field the schema does not declare (and no
    ``x-kubernetes-preserve-unknown-fields``) would be silently dropped
    (pruned) by the API server, and the object would never match what we
    applied; it is an error here.
    """
    errors = []
    if value is None:
        if not schema.get("nullable"):
            errors.append("%s: null is not allowed" % path)
        return errors
    expected = schema.get("type")
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    }
    if expected in checks and not checks[expected](value):
        return ["%s: must be of type %s, not %s" % (path, expected, type(value).__name__)]
    if expected == "object" and isinstance(value, dict):
        properties = schema.get("properties")
        if properties is not None:
            for key, item in value.items():
                if key in properties:
                    errors.extend(_structural_errors(item, properties[key], "%s.%s" % (path, key)))
                elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                    errors.append("%s.%s: unknown field (the API server would drop it); known: %s"
                                  % (path, key, ", ".join(sorted(properties))))
    if expected == "array" and isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors.extend(_structural_errors(item, schema["items"], "%s[%d]" % (path, index)))
    return errors


def to_json_schema(openapi):
    """The openAPIV3 schema as JSON Schema (``nullable`` -> a ``null`` type)."""
    if isinstance(openapi, list):
        return [to_json_schema(item) for item in openapi]
    if not isinstance(openapi, dict):
        return openapi
    result = dict((key, to_json_schema(value)) for key, value in openapi.items() if key != "nullable")
    if openapi.get("nullable") and isinstance(openapi.get("type"), str):
        result["type"] = [openapi["type"], "null"]
    return result


def jsonschema_available():
    return _jsonschema() is not None


def schema_errors(machineconfig, schema=None):
    """Errors of ``machineconfig`` against the CRD schema with ``jsonschema``
    (an empty list without it; see ``jsonschema_available``)."""
    module = _jsonschema()
    if module is None:
        return []
    validator_class = module.validators.validator_for({}, default=module.Draft7Validator)
    validator = validator_class(to_json_schema(schema or MACHINECONFIG_SCHEMA))
    return sorted(
        "%s: %s" % ("." + ".".join(str(p) for p in error.absolute_path) if error.absolute_path else "(object)",
                    error.message)
        for error in validator.iter_errors(machineconfig)
    )


def validate_machineconfig(machineconfig, pool=None):
    """Every problem of ``machineconfig`` as we would apply it (a list of strings).

    Structural checks (always): apiVersion/kind, name, labels and annotations
    syntax, the role label (= ``pool`` when given), ``spec.osImageURL``
    pinned by digest, field types and fields the API server would prune,
    per the CRD schema. Then the CRD openAPIV3Schema with ``jsonschema``
    when it is importable.
    """
    errors = []
    if not isinstance(machineconfig, dict):
        return ["the MachineConfig must be a mapping"]
    if machineconfig.get("apiVersion") != API_VERSION:
        errors.append("apiVersion must be %s" % API_VERSION)
    if machineconfig.get("kind") != KIND:
        errors.append("kind must be %s" % KIND)
    metadata = machineconfig.get("metadata")
    if not isinstance(metadata, dict):
        errors.append("metadata must be a mapping")
        metadata = {}
    name = metadata.get("name")
    if not is_dns_subdomain(name if isinstance(name, str) else ""):
        errors.append("metadata.name %r is not a valid object name (DNS subdomain)" % (name,))
    labels = metadata.get("labels") or {}
    if not isinstance(labels, dict):
        errors.append("metadata.labels must be a mapping")
        labels = {}
    for key, value in labels.items():
        problem = _check_label_key(str(key))
        if problem:
            errors.append("metadata.labels: " + problem)
        if not isinstance(value, str) or (value and (len(value) > 63 or not _LABEL_NAME_RE.match(value))):
            errors.append("metadata.labels[%s]: value %r must be at most 63 of [A-Za-z0-9-_.], "
                          "alphanumeric at both ends" % (key, value))
    role = labels.get(_mco.ROLE_LABEL)
    if not role:
        errors.append("metadata.labels[%s] is missing: no pool would select the MachineConfig" % _mco.ROLE_LABEL)
    elif pool is not None and role != pool:
        errors.append("metadata.labels[%s] is %r, not the pool %r" % (_mco.ROLE_LABEL, role, pool))
    annotations = metadata.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        errors.append("metadata.annotations must map keys to strings")
    else:
        size = sum(len(k) + len(v) for k, v in annotations.items())
        if size > MAX_ANNOTATIONS_BYTES:
            errors.append("metadata.annotations total %d bytes, over the API's 256 KiB" % size)
        for key in annotations:
            problem = _check_label_key(str(key))
            if problem:
                errors.append("metadata.annotations: " + problem.replace("label key", "annotation key"))
    spec = machineconfig.get("spec")
    if not isinstance(spec, dict):
        errors.append("spec must be a mapping")
    else:
        problem = image_problem(spec.get("osImageURL"))
        if problem:
            errors.append("spec.osImageURL: " + problem)
    errors.extend(_structural_errors(machineconfig, MACHINECONFIG_SCHEMA, ""))
    errors.extend("schema %s: %s" % (CRD_NAME, e) for e in schema_errors(machineconfig))
    return errors


# ---------------------------------------------------------------------------
# Gates before a write

def _name(obj):
    return ((obj or {}).get("metadata") or {}).get("name") or ""


def find_named(objects, name):
    """The first of ``objects`` (API objects, None for none) named ``name``, or None."""
    for obj in objects or []:
        if _name(obj) == name:
            return obj
    return None


def pool_degraded(pool):
    """Why the pool is degraded, or None: a true Degraded / NodeDegraded /
    RenderDegraded condition (its message) or degraded machines."""
    reasons = []
    for cond_type in ("Degraded", "NodeDegraded", "RenderDegraded"):
        cond = _mco.condition(pool, cond_type)
        if cond and str(cond.get("status")) == "True":
            text = (cond.get("message") or cond.get("reason") or "").strip()
            reasons.append("%s=True%s" % (cond_type, (": " + text) if text else ""))
    try:
        count = int(((pool or {}).get("status") or {}).get("degradedMachineCount") or 0)
    except (TypeError, ValueError):
        count = 0
    if count:
        reasons.append("degradedMachineCount=%d" % count)
    return "; ".join(reasons) or None


def pool_problem(pool_name, pools, cluster, allow_paused=False, check_degraded=True):
    """Why we must not write a MachineConfig for ``pool_name`` (or None).

    ``pools``: the cluster's MachineConfigPool dicts. ``check_degraded``:
    refuse a degraded pool (a rollback skips it: it is the way out).
    """
    pool = find_named(pools, pool_name)
    if pool is None:
        return ("MachineConfigPool %s not found on cluster %s (pools there: %s). Fix kmod_pools for this cluster."
                % (pool_name, cluster, ", ".join(sorted(_name(p) for p in pools or [])) or "none"))
    if ((pool.get("spec") or {}).get("paused")) and not allow_paused:
        return ("MachineConfigPool %s on cluster %s is paused (spec.paused: true): the new image would not roll out. "
                "Unpause it (oc patch machineconfigpool %s --type merge -p '{\"spec\":{\"paused\":false}}'), or set "
                "kmod_allow_paused_pool: true to apply the MachineConfig anyway and not wait for it."
                % (pool_name, cluster, pool_name))
    degraded = pool_degraded(pool) if check_degraded else None
    if degraded:
        return ("MachineConfigPool %s on cluster %s is degraded (%s): a new image would roll out on top of a failure "
                "and hide its cause. Find the cause (oc describe machineconfigpool %s; oc get nodes -o wide) and fix "
                "it; if our MachineConfig caused it, roll back with playbooks/rollback.yml. Then rerun."
                % (pool_name, cluster, degraded, pool_name))
    return None


def cluster_version_problem(cluster_version, cluster, allow_upgrading=False):
    """Why we must not write while the cluster upgrades (or None).

    ``cluster_version``: the ClusterVersion ``version`` dict (None or {}:
    nothing to check). Progressing=True means the CVO is rolling a release
    out: the MCO is updating the pools, and our image was built for the
    release the cluster is leaving.
    """
    cond = _mco.condition(cluster_version or {}, "Progressing")
    if not cond or str(cond.get("status")) != "True" or allow_upgrading:
        return None
    desired = (((cluster_version or {}).get("status") or {}).get("desired") or {}).get("version") or "?"
    text = (cond.get("message") or cond.get("reason") or "").strip()
    return ("Cluster %s is being upgraded (ClusterVersion Progressing=True%s; desired version %s): the MCO is "
            "updating the pools, and a layered image built for the release the cluster is leaving would pin the "
            "nodes to it. Wait until the upgrade is done (oc get clusterversion shows Progressing=False), then rerun "
            "(the resolve step builds for the new release); or set kmod_allow_upgrading_cluster: true to write anyway."
            % (cluster, (": " + text) if text else "", desired))


def effective_check(pool, machineconfigs, desired, cluster):
    """Would ``desired`` (our MachineConfig) set the osImageURL ``pool`` renders?

    ``machineconfigs``: the cluster's MachineConfigs (ours, if it exists
    already, is replaced by ``desired``). Uses the MCO's rule
    (``_mco.effective_os_image_url``: last non-generated MachineConfig by
    name, in merge order, that sets one).

    Returns ``(problem, others)``: ``problem`` is None when our image wins,
    else a message naming the MachineConfig that would win; ``others`` are
    the names of the other MachineConfigs the pool selects that set an
    osImageURL (ours masks them, or they mask ours).
    """
    ours = _name(desired)
    image = ((desired or {}).get("spec") or {}).get("osImageURL")
    pool_name = _name(pool)
    candidates = [mc for mc in machineconfigs or [] if _name(mc) != ours] + [desired]
    selected = _mco.pool_machine_configs(pool, candidates)
    setters = _mco.os_image_url_setters(selected)
    others = [n for n in setters if n != ours]
    if ours not in [_name(mc) for mc in selected]:
        selector = ((pool or {}).get("spec") or {}).get("machineConfigSelector")
        return ("MachineConfigPool %s on cluster %s does not select MachineConfig %s (labels %s) with its "
                "machineConfigSelector %s; the image would never roll out. Check kmod_pools."
                % (pool_name, cluster, ours, ((desired.get("metadata") or {}).get("labels")), selector), others)
    effective = _mco.effective_os_image_url(selected, None)
    if effective != image:
        by_name = dict((_name(mc), mc) for mc in selected)
        winner = setters[-1]
        return ("MachineConfig %s would not be effective on pool %s of cluster %s: %s sorts after it (the MCO takes "
                "the osImageURL of the last non-generated MachineConfig by name) and sets osImageURL %s, so the pool "
                "would render that instead of %s. MachineConfigs setting osImageURL for this pool, in merge order: "
                "%s. Remove or rename %s, or set kmod_machineconfig_name_prefix so that ours sorts last."
                % (ours, pool_name, cluster, winner, ((by_name[winner].get("spec") or {}).get("osImageURL")),
                   image, ", ".join(setters), winner), others)
    return None, others


_SHA256_HEX_RE = re.compile(r"^[0-9a-f]{64}$")


def signing_problem(signing):
    """Why ``signing`` (the build's signing facts, None or {} when unsigned)
    is unusable, or None."""
    if not signing:
        return None
    if not isinstance(signing, dict):
        return "signing must be the build's signing facts (a dict) or null, got %r" % (signing,)
    if not _SHA256_HEX_RE.match(str(signing.get("cert_sha256") or "")):
        return ("signing.cert_sha256 must be the certificate's sha256 fingerprint, 64 lowercase hex digits, got %r"
                % (signing.get("cert_sha256"),))
    if not _secure_boot.signing_key_description(signing):
        return "signing needs key_description (or subject and skid): the key's description in the nodes' /proc/keys"
    return None


def signature_check(pool_name, signing, node_entries, cluster, accept_untrusted=False):
    """The Secure Boot gate of a pool: ``(problem, warnings, summary)``.

    ``node_entries``: ``node_inspect``'s ``nodes`` (``name``, ``pool``,
    ``secure_boot``) with ``secure_boot: true``; those of ``pool_name``
    count (an entry without ``pool`` counts for every pool). A node without
    a ``secure_boot`` fact (not probed, check mode) cannot tell. ``problem``
    is None or the message naming the cluster, the pool, a node and the
    fix; ``summary``: ``{nodes, enforcing, refusing, unknown}`` node names.
    """
    entries = [e for e in node_entries or [] if e.get("pool") in (None, pool_name)]
    facts = [(e.get("name") or "?", e.get("secure_boot")) for e in entries]
    problems, warnings = _secure_boot.pool_signature_gate(pool_name, signing or None, facts, accept_untrusted,
                                                          cluster=cluster)
    verdicts = [(name, _secure_boot.node_accepts(signing or None, fact)[0]) for name, fact in facts]
    summary = {
        "nodes": [name for name, _fact in facts],
        "enforcing": [name for name, fact in facts if (fact or {}).get("enforcing")],
        "refusing": [name for name, ok in verdicts if ok is False],
        "unknown": [name for name, ok in verdicts if ok is None],
    }
    return (problems[0] if problems else None), warnings, summary


def comparable(machineconfig):
    """The fields we own of a MachineConfig read from the API (for a readable diff)."""
    if not machineconfig:
        return {}
    metadata = machineconfig.get("metadata") or {}
    view = {
        "apiVersion": machineconfig.get("apiVersion"),
        "kind": machineconfig.get("kind"),
        "metadata": {"name": metadata.get("name")},
        "spec": copy.deepcopy(machineconfig.get("spec") or {}),
    }
    for key in ("labels", "annotations"):
        if metadata.get(key):
            view["metadata"][key] = dict(metadata[key])
    return view


# ---------------------------------------------------------------------------
# History and rollback

def history_of(machineconfig):
    """The history entries recorded on ``machineconfig`` (oldest first); an
    unreadable annotation counts as no history."""
    text = (((machineconfig or {}).get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_HISTORY)
    if not text:
        return []
    try:
        entries = json.loads(text)
    except ValueError:
        return []
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and image_problem(e.get("osImageURL")) is None]


def snapshot(machineconfig):
    """The history entry of ``machineconfig`` as it is: its osImageURL and our annotations."""
    annotations = ((machineconfig or {}).get("metadata") or {}).get("annotations") or {}
    entry = {"osImageURL": ((machineconfig or {}).get("spec") or {}).get("osImageURL")}
    for key, annotation in sorted(_HISTORY_KEYS.items()):
        if annotations.get(annotation):
            entry[key] = annotations[annotation]
    return entry


def with_history(desired, existing):
    """``desired`` (our MachineConfig, a new dict) with the history annotation.

    When ``existing`` (ours as read from the cluster, or None) runs another
    osImageURL, its state is pushed on its history; else its history is kept
    as it is (a rerun writes nothing). At most ``HISTORY_MAX`` entries.
    """
    result = copy.deepcopy(desired)
    history = history_of(existing)
    if existing is not None:
        current = ((existing.get("spec") or {}).get("osImageURL"))
        if current and current != (result.get("spec") or {}).get("osImageURL") and image_problem(current) is None:
            history = history + [snapshot(existing)]
    history = history[-HISTORY_MAX:]
    if history:
        result["metadata"].setdefault("annotations", {})[ANNOTATION_HISTORY] = json.dumps(
            history, sort_keys=True, separators=(",", ":"))
    return result


def rollback_plan(existing, pool, name_prefix=None):
    """What a rollback of ``pool`` writes, given our MachineConfig ``existing``
    (as read from the cluster, or None).

    Returns a dict: ``action`` is ``restore`` (apply ``machineconfig``: the
    last history entry, with the rest of the history, marked as rolled back
    from the current image), ``delete`` (ours has no history: it did not
    exist before, the pool returns to what the other MachineConfigs render)
    or ``none`` (we have no MachineConfig there, or it is a rollback's
    result already: rolling back is idempotent); ``os_image_url`` is the
    image restored (None otherwise), ``current`` the image ours runs now and
    ``reason`` the plan in words.
    """
    if existing is None:
        return {"action": "none", "machineconfig": None, "os_image_url": None, "current": None,
                "reason": "no MachineConfig of ours for this pool"}
    current = (existing.get("spec") or {}).get("osImageURL")
    left = ((existing.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_ROLLED_BACK_FROM)
    if left:
        return {"action": "none", "machineconfig": None, "os_image_url": None, "current": current,
                "reason": "already rolled back from %s to %s" % (left, current)}
    history = history_of(existing)
    if not history:
        return {"action": "delete", "machineconfig": None, "os_image_url": None, "current": current,
                "reason": "no previous image of ours: delete our MachineConfig"}
    entry = history[-1]
    modules = [m for m in (entry.get("modules") or "").split(",") if m]
    restored = build_machineconfig(pool, entry["osImageURL"], name_prefix=name_prefix,
                                   build_key=entry.get("build-key"), modules=modules,
                                   kernel_version=entry.get("kernel-version"), release=entry.get("release"),
                                   release_image=entry.get("release-image"),
                                   driver_toolkit_image=entry.get("driver-toolkit-image"),
                                   rhcos_image=entry.get("rhcos-image"),
                                   signing_cert_sha256=entry.get("signing-cert-sha256"))
    annotations = restored["metadata"].setdefault("annotations", {})
    if current:
        annotations[ANNOTATION_ROLLED_BACK_FROM] = current
    if history[:-1]:
        annotations[ANNOTATION_HISTORY] = json.dumps(history[:-1], sort_keys=True, separators=(",", ":"))
    return {"action": "restore", "machineconfig": restored, "os_image_url": entry["osImageURL"], "current": current,
            "reason": "back to %s" % entry["osImageURL"]}
