# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Whether a cluster already runs what a run would roll out (private module
utility; pure functions).

A converged rerun should cost one read per cluster, not a resolve, a build
plan, a render and a verification. Our MachineConfig records every input of
its image (annotations written by the rollout role): the build key, and the
kernel, Driver Toolkit, RHCOS and release images it was built from. So from
the cluster's objects alone, plus the module sources and recipe of this run:

- the cluster still runs the release the image was built for
  (``ClusterVersion.status.desired.image``, or ``kmod_release``), and is not
  being upgraded;
- the build key recomputed from the recorded images with this run's sources
  and recipe equals the recorded one (so the build role would pick the same
  image), and the image is in this run's repository;
- the modules are signed with this run's signing certificate (the
  fingerprint recorded in ``kmod-layering.io/signing-cert-sha256``), or
  both unsigned;
- every pool renders our MachineConfig with that image and is done on it
  (``evaluate_pool``, the waiter's own rule);
- every node is Done on that rendered config (the verify role's
  ``mco_state`` verdict).

Anything else is "not converged", with the reasons, and the run takes the
full path for that cluster.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _arch, _build, _inspect, _machineconfig, _mco

# The inputs the rollout role records on our MachineConfig for this check.
RECORDED_INPUTS = (
    ("build_key", _machineconfig.ANNOTATION_BUILD_KEY),
    ("kernel_version", _machineconfig.ANNOTATION_KERNEL_VERSION),
    ("driver_toolkit_image", _machineconfig.ANNOTATION_DRIVER_TOOLKIT_IMAGE),
    ("rhcos_image", _machineconfig.ANNOTATION_RHCOS_IMAGE),
    ("release_image", _machineconfig.ANNOTATION_RELEASE_IMAGE),
)


def _object_name(obj):
    return ((obj or {}).get("metadata") or {}).get("name")


def recorded_inputs(machineconfig):
    """``{build_key, kernel_version, driver_toolkit_image, rhcos_image,
    release_image, release}`` from our MachineConfig's annotations (missing
    ones are None)."""
    annotations = ((machineconfig or {}).get("metadata") or {}).get("annotations") or {}
    inputs = dict((key, annotations.get(annotation) or None) for key, annotation in RECORDED_INPUTS)
    inputs["release"] = annotations.get(_machineconfig.ANNOTATION_RELEASE) or None
    return inputs


def desired_release_image(cluster_version):
    """``status.desired.image`` of the ClusterVersion, else None."""
    return (((cluster_version or {}).get("status") or {}).get("desired") or {}).get("image") or None


def release_matches(inputs, cluster_version, release=None):
    """None when the recorded release is the one this run resolves, else why not.

    ``release``: ``kmod_release`` (a version or a pullspec), else the
    cluster's ClusterVersion decides, as in the resolve role.
    """
    if release:
        if release in (inputs.get("release"), inputs.get("release_image")):
            return None
        return "kmod_release is %s, the image was built for %s" % (
            release, inputs.get("release") or inputs.get("release_image"))
    desired = desired_release_image(cluster_version)
    if not desired:
        return "the ClusterVersion names no desired release image"
    if desired != inputs.get("release_image"):
        return "the cluster's release is %s, the image was built for %s" % (desired, inputs.get("release_image"))
    return None


def pool_arch(members):
    """The one architecture of a pool's nodes (release name), else None (no
    nodes, nodes that do not say, or a pool mixing architectures)."""
    try:
        found = set(_arch.node_arch(node) for node in members or [])
    except _arch.ArchError:
        return None
    return found.pop() if len(found) == 1 else None


def build_key_problem(inputs, modules, recipe, signing=None, arch=None):
    """None when this run's sources, recipe and signing certificate give the
    recorded build key for the image of ``arch`` (the pool's nodes'; None:
    any architecture, for a pool whose nodes do not tell: the key of each is
    tried, the architecture being one of its inputs)."""
    missing = [key for key, _annotation in RECORDED_INPUTS if not inputs.get(key)]
    if missing:
        return "it does not record its build inputs (%s): written by an older version or by hand" % ", ".join(missing)
    keys = [_build.build_key(inputs["kernel_version"], inputs["driver_toolkit_image"], inputs["rhcos_image"],
                             modules, recipe, signing, candidate)
            for candidate in ([arch] if arch else list(_arch.GO_ARCHES))]
    key = inputs["build_key"] if inputs["build_key"] in keys else keys[0]
    if key != inputs["build_key"]:
        return "the module sources, the build recipe or the signing certificate changed (build key %s, recorded %s)" % (
            key[:12], inputs["build_key"][:12])
    return None


def signing_changed(machineconfig, wanted_cert):
    """None when our MachineConfig records the signing certificate this run
    signs with (``wanted_cert``: its sha256 fingerprint, None when unsigned),
    else why not. A new certificate means a new image (the nodes must trust
    it), even with the same sources."""
    annotations = ((machineconfig or {}).get("metadata") or {}).get("annotations") or {}
    recorded = annotations.get(_machineconfig.ANNOTATION_SIGNING_CERT) or None
    wanted_cert = wanted_cert or None
    if recorded == wanted_cert:
        return None
    if wanted_cert is None:
        return "its modules are signed (certificate sha256 %s) and this run's signing facts name no certificate" % (
            recorded[:16])
    if recorded is None:
        return "its modules are not signed, this run signs them (certificate sha256 %s)" % wanted_cert[:16]
    return "the signing certificate changed (sha256 %s recorded, %s now)" % (recorded[:16], wanted_cert[:16])


def evaluate(cluster_version, pools, nodes, machineconfigs, rendered_configs, wanted):
    """Whether the cluster runs what this run would roll out.

    ``pools``, ``nodes``: every MachineConfigPool and Node; ``machineconfigs``:
    our MachineConfigs (at least); ``rendered_configs``: rendered MachineConfigs
    by name (those the pools point at); ``wanted``: ``{pools, name_prefix,
    modules (kmod_sources template entries), recipe (recipe_digest),
    repository, release, signing (this run's signing facts, None when
    unsigned: part of the build key; its fingerprint is compared with our
    annotation first, ``signing_changed``, for the reason), expected_modules}``.

    Returns ``{converged, reasons, image (of the first pool), images {pool:
    image}, arches {pool: arch of its nodes or None}, machineconfigs {pool:
    name}, build_keys {pool: key}, pools [PoolRollout.as_dict()], verdicts
    [per node, mco_state], nodes_by_pool}``. Pools of different
    architectures run different images (each its nodes'); two pools of one
    architecture must run the same.
    """
    reasons = []
    by_name = dict((_object_name(mc), mc) for mc in machineconfigs or [])
    pools_by_name = dict((_object_name(p), p) for p in pools or [])
    repository = _build.validate_repository(wanted["repository"])
    if _mco.condition_is_true(cluster_version or {}, "Progressing"):
        reasons.append("the cluster is being upgraded (ClusterVersion Progressing=True)")

    names, keys, images, arches, evaluations, verdicts = {}, {}, {}, {}, [], []
    for pool_name in wanted["pools"]:
        name = _machineconfig.machineconfig_name(wanted.get("name_prefix"), pool_name)
        names[pool_name] = name
        pool = pools_by_name.get(pool_name)
        if pool is None:
            reasons.append("MachineConfigPool %s does not exist" % pool_name)
            continue
        ours = by_name.get(name)
        if ours is None:
            reasons.append("pool %s: MachineConfig %s does not exist" % (pool_name, name))
            continue
        annotations = (ours.get("metadata") or {}).get("annotations") or {}
        if annotations.get(_machineconfig.ANNOTATION_ROLLED_BACK_FROM):
            reasons.append("pool %s: MachineConfig %s was rolled back" % (pool_name, name))
            continue
        image = (ours.get("spec") or {}).get("osImageURL") or ""
        images[pool_name] = image
        members = _mco.pool_nodes(pool, pools, nodes)
        arches[pool_name] = pool_arch(members)
        inputs = recorded_inputs(ours)
        keys[pool_name] = inputs["build_key"]
        problem = (release_matches(inputs, cluster_version, wanted.get("release"))
                   or signing_changed(ours, (wanted.get("signing") or {}).get("cert_sha256"))
                   or build_key_problem(inputs, wanted["modules"], wanted["recipe"], wanted.get("signing"),
                                        arches[pool_name]))
        if problem:
            reasons.append("pool %s: MachineConfig %s: %s" % (pool_name, name, problem))
            continue
        if _machineconfig.image_problem(image) or _inspect.image_repository(image) != repository:
            reasons.append("pool %s: MachineConfig %s has osImageURL %s, not an image of %s pinned by digest" % (
                pool_name, name, image or "(none)", repository))
            continue
        evaluation = _mco.evaluate_pool(pool, members, _mco.RolloutTarget(name, image), rendered_configs)
        evaluations.append(evaluation.as_dict())
        if not evaluation.done:
            reasons.append(evaluation.progress_line())
            continue
        rendered_image = _mco.rendered_os_image_url(rendered_configs.get(evaluation.rendered_config))
        for node in members:
            verdict = _inspect.mco_state_verdict(node, pool_name, evaluation.rendered_config, rendered_image,
                                                 image, wanted.get("expected_modules"))
            verdicts.append(verdict)
            reasons.extend(verdict["reasons"])
    by_arch = {}
    for pool_name, image in images.items():
        by_arch.setdefault(arches.get(pool_name), set()).add(image)
    for arch, found in sorted(by_arch.items(), key=lambda item: str(item[0])):
        if len(found) > 1:
            # One run rolls one image out to every pool of an architecture.
            reasons.append("the %spools run different images: %s" % (
                (arch + " ") if arch else "", ", ".join(sorted(found))))
    first = [images[p] for p in wanted["pools"] if p in images]
    return {
        "converged": not reasons,
        "reasons": reasons,
        "image": first[0] if first else None,
        "images": images,
        "arches": arches,
        "machineconfigs": names,
        "build_keys": keys,
        "pools": evaluations,
        "verdicts": verdicts,
    }
