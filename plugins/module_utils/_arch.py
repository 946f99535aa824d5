# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Architectures: names, the architecture of each pool, emulation (private module utility).

Two spellings of one architecture meet in this collection: the release
names (``x86_64``, ``aarch64``, ``ppc64le``, ``s390x``: release pullspecs,
RPM kernels, ``kmod_arch``) and the Go names (``amd64``, ``arm64``,
``ppc64le``, ``s390x``: a node's ``kubernetes.io/arch`` label and
``status.nodeInfo.architecture``, an image config's ``architecture``, an
OCI platform, ``podman build --platform linux/<goarch>``). This is the one
mapping between them.

``release_arch(name)`` / ``go_arch(name)``
    Either spelling -> the release / Go name; ``ArchError`` on anything else.
``node_arch(node)``
    A Node's architecture (release name) from its label and nodeInfo; the
    two disagreeing is an error.
``pool_architectures(cluster, pool_names, pools, nodes, declared)``
    ``{pool: arch}`` for the targeted pools, cross-checked with
    ``kmod_arch`` (``declared``: ``auto`` or a release arch); raises
    ``ArchError`` (mixed pool, nodes disagreeing with ``kmod_arch``) naming
    the cluster, pool, nodes and the fix. Pools without nodes take
    ``declared`` (x86_64 under ``auto``) and a warning.
``binfmt_problem(arch, host_arch, binfmt_dir)``
    Why a ``podman build --platform`` for ``arch`` cannot run on this
    controller (no qemu-user-static handler registered), or None.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import platform

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _mco

# release name -> Go name (GOARCH)
GO_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}
RELEASE_NAMES = dict((go, rel) for rel, go in GO_ARCHES.items())
# What else spells an architecture (uname -m of a ppc64le host, i.e. what
# platform.machine() returns; qemu's binfmt handler names).
_ALIASES = {"x86-64": "x86_64", "ppc64el": "ppc64le"}
AUTO = "auto"
DEFAULT_ARCH = "x86_64"
ARCH_LABEL = "kubernetes.io/arch"
BINFMT_DIR = "/proc/sys/fs/binfmt_misc"


class ArchError(ValueError):
    """An architecture cannot be told or does not fit; the message names the fix."""


def release_arch(name):
    # type: (str) -> str
    """``amd64``/``x86_64`` (any spelling this module knows) -> ``x86_64``."""
    text = str(name or "").strip().lower()
    text = _ALIASES.get(text, text)
    if text in GO_ARCHES:
        return text
    if text in RELEASE_NAMES:
        return RELEASE_NAMES[text]
    raise ArchError("unknown architecture %r; one of: %s (or %s)"
                    % (name, ", ".join(GO_ARCHES), ", ".join(sorted(RELEASE_NAMES))))


def go_arch(name):
    # type: (str) -> str
    """``x86_64``/``amd64`` -> ``amd64`` (the OCI / Kubernetes / podman name)."""
    return GO_ARCHES[release_arch(name)]


def host_arch():
    # type: () -> str
    """The controller's architecture (release name)."""
    return release_arch(platform.machine())


def node_arch(node):
    # type: (dict) -> str
    """The architecture of a Node object (release name).

    From ``metadata.labels[kubernetes.io/arch]`` (set by the kubelet) and
    ``status.nodeInfo.architecture``; either alone is enough, both must agree.
    """
    meta = (node or {}).get("metadata") or {}
    name = meta.get("name") or "?"
    label = (meta.get("labels") or {}).get(ARCH_LABEL)
    info = (((node or {}).get("status") or {}).get("nodeInfo") or {}).get("architecture")
    found = {}
    for where, value in (("label %s" % ARCH_LABEL, label), ("status.nodeInfo.architecture", info)):
        if value:
            try:
                found[where] = release_arch(value)
            except ArchError as exc:
                raise ArchError("node %s: %s: %s" % (name, where, exc))
    if not found:
        raise ArchError("node %s has neither the label %s nor status.nodeInfo.architecture" % (name, ARCH_LABEL))
    if len(set(found.values())) > 1:
        raise ArchError("node %s: the label %s says %s but status.nodeInfo.architecture says %s"
                        % (name, ARCH_LABEL, label, info))
    return list(found.values())[0]


def check_declared(declared):
    # type: (str) -> str
    """``kmod_arch`` normalized: ``auto`` or a release arch name."""
    if declared in (None, "", AUTO):
        return AUTO
    try:
        return release_arch(declared)
    except ArchError as exc:
        raise ArchError("kmod_arch: %s (auto: from the nodes of the pools)" % exc)


def pool_architectures(cluster, pool_names, pools, nodes, declared=AUTO):
    # type: (str, list, list, list, str) -> dict
    """The architecture of each pool of ``pool_names``.

    ``pools``: MachineConfigPool objects of the cluster, ``nodes``: its
    Node objects (membership as the MCO decides it, ``_mco.pool_nodes``).
    ``declared``: ``kmod_arch`` (``auto``, or an architecture every node of
    the pools must have). Returns ``{"pools": {pool: arch}, "arches":
    [distinct, in pool order], "nodes": {pool: {node: arch}}, "warnings":
    [...]}``. Raises ``ArchError`` for a pool whose nodes mix
    architectures, and for nodes that disagree with ``declared``.
    """
    declared = check_declared(declared)
    result = {"pools": {}, "arches": [], "nodes": {}, "warnings": []}
    for pool_name in pool_names:
        pool = [p for p in pools or [] if ((p or {}).get("metadata") or {}).get("name") == pool_name]
        members = _mco.pool_nodes(pool[0], pools, nodes) if pool else []
        by_node = {}
        for node in members:
            by_node[node["metadata"]["name"]] = node_arch(node)
        result["nodes"][pool_name] = by_node
        found = sorted(set(by_node.values()))
        if len(found) > 1:
            listing = "; ".join("%s: %s" % (arch, ", ".join(sorted(n for n, a in by_node.items() if a == arch)))
                                for arch in found)
            raise ArchError(
                "cluster %s: pool %s mixes architectures (%s). One MachineConfig pins one image, which "
                "runs on one architecture: put the nodes of each architecture in a pool of their own "
                "(a custom MachineConfigPool selecting kubernetes.io/arch) and list those pools in "
                "kmod_pools. Nothing was built or written." % (cluster, pool_name, listing))
        if not found:
            arch = DEFAULT_ARCH if declared == AUTO else declared
            result["warnings"].append(
                "cluster %s: pool %s has no nodes, so its architecture cannot be read from them; taking %s "
                "(%s). Set kmod_arch if its future nodes are of another architecture."
                % (cluster, pool_name, arch, "the default" if declared == AUTO else "kmod_arch"))
        else:
            arch = found[0]
            if declared != AUTO and arch != declared:
                raise ArchError(
                    "cluster %s: kmod_arch is %s but the nodes of pool %s are %s (%s). Set kmod_arch to %s "
                    "or auto for this cluster (auto reads each pool's architecture from its nodes), or fix "
                    "kmod_pools. Nothing was built or written."
                    % (cluster, declared, pool_name, arch, ", ".join(sorted(by_node)), arch))
        result["pools"][pool_name] = arch
        if arch not in result["arches"]:
            result["arches"].append(arch)
    return result


def binfmt_problem(arch, host=None, binfmt_dir=BINFMT_DIR):
    # type: (str, str, str) -> str
    """Why an emulated ``podman build --platform linux/<goarch of arch>``
    cannot run here, or None (same architecture as the controller, or the
    ``qemu-<arch>`` binfmt_misc handler registered and enabled)."""
    arch = release_arch(arch)
    host = release_arch(host) if host else host_arch()
    if arch == host:
        return None
    handler = os.path.join(binfmt_dir, "qemu-" + arch)
    how = ("install Debian's qemu-user-static (apt-get install qemu-user-static binfmt-support; as root, "
           "mount -t binfmt_misc binfmt_misc %s first if it is not mounted), or build on a %s host"
           % (binfmt_dir, arch))
    if not os.path.isdir(binfmt_dir) or not os.path.exists(os.path.join(binfmt_dir, "status")):
        return ("building a %s image on this %s controller needs user-mode emulation, but binfmt_misc is not "
                "mounted at %s: %s" % (arch, host, binfmt_dir, how))
    if not os.path.isfile(handler):
        return ("building a %s image on this %s controller needs user-mode emulation, but no binfmt_misc "
                "handler %s is registered: %s" % (arch, host, handler, how))
    try:
        with open(handler) as fileobj:
            text = fileobj.read()
    except (IOError, OSError) as exc:
        return "cannot read the binfmt_misc handler %s: %s" % (handler, exc)
    lines = text.splitlines()
    if not lines or lines[0].strip() != "enabled":
        return ("the binfmt_misc handler %s is registered but %s: enable it (echo 1 > %s) or reinstall "
                "qemu-user-static" % (handler, lines[0].strip() if lines else "empty", handler))
    flags = [line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")]
    if flags and "F" not in flags[0]:
        return ("the binfmt_misc handler %s lacks the F flag (flags: %s): the emulator must be opened at "
                "registration to run inside a build's chroot; reinstall Debian's qemu-user-static (it "
                "registers with F)" % (handler, flags[0]))
    return None
