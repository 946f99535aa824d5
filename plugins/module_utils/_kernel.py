# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Kernel version of RHCOS and Driver Toolkit images.

Pure functions first (unit tested); ``rhcos_kernel`` / ``dtk_kernel`` use a
``_registry.RegistryClient`` and read layers from the last back, stopping as
soon as the answer is found. The ``ostree.linux`` label is never trusted
(some images set it to ``true``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry import (
    RegistryError,
    check_platform,
    find_in_layers,
    image_labels,
    load_json_object,
    parse_pullspec,
)

try:
    from typing import Any, Dict, Optional
except ImportError:  # pragma: no cover
    pass


META_JSON_PATH = "usr/share/openshift/base/meta.json"
DTK_RELEASE_PATH = "etc/driver-toolkit-release.json"
METALAYER_LABEL = "io.openshift.metalayer"
DTK_KERNEL_LABEL = "kernel-version"
PKGLIST_KEY = "rpmostree.rpmdb.pkglist"
KERNEL_PACKAGES = ("kernel", "kernel-core")

_VMLINUZ_RE = re.compile(r"^(?:usr/)?lib/modules/([^/]+)/vmlinuz$")
_KVER_RE = re.compile(r"^[0-9]+\.[0-9]+[0-9A-Za-z._+~-]*$")


class KernelError(RegistryError):
    """Kernel version not found, or inconsistent."""


def looks_like_kernel_version(value):
    # type: (Any) -> bool
    """``5.14.0-284.25.1.el9_2.x86_64`` yes; ``true`` / ``""`` no."""
    return isinstance(value, str) and bool(_KVER_RE.match(value.strip()))


def kernel_from_path(path):
    # type: (str) -> Optional[str]
    """``usr/lib/modules/<kver>/vmlinuz`` (or ``lib/modules/…``) -> kver."""
    while path.startswith("./"):
        path = path[2:]
    path = path.lstrip("/")
    match = _VMLINUZ_RE.match(path)
    if match and looks_like_kernel_version(match.group(1)):
        return match.group(1)
    return None


def _load_json(data, what):
    return load_json_object(data, what, KernelError)


def parse_dtk_release(data):
    # type: (Any) -> Dict[str, Optional[str]]
    """``/etc/driver-toolkit-release.json`` -> kernel / rt kernel / RHEL version."""
    doc = _load_json(data, "driver-toolkit-release.json")
    kver = doc.get("KERNEL_VERSION")
    if not looks_like_kernel_version(kver):
        raise KernelError("driver-toolkit-release.json has no valid KERNEL_VERSION (got %r)" % (kver,))
    return {
        "kernel_version": kver.strip(),
        "rt_kernel_version": doc.get("RT_KERNEL_VERSION") or None,
        "rhel_version": doc.get("RHEL_VERSION") or None,
    }


# Other spellings of an RPM arch found at the end of kernel release strings.
_ARCH_SUFFIXES = {"x86_64": ("x86_64", "amd64"), "aarch64": ("aarch64", "arm64"),
                  "ppc64le": ("ppc64le", "ppc64el"), "s390x": ("s390x",)}


def package_kernel_version(version, release, arch):
    # type: (str, str, str) -> str
    """Kernel package V, R, A -> ``uname -r``.

    RPM kernels install to ``/usr/lib/modules/<V>-<R>.<A>``. When the release
    already ends with the architecture (kernels built with a flavour suffix,
    such as ``6.1.0``/``55-cloud-amd64``), it is not appended a second time.
    """
    kver = "%s-%s" % (version, release)
    if not arch or arch == "noarch" or release.endswith(_ARCH_SUFFIXES.get(arch, (arch,))):
        return kver
    return "%s.%s" % (kver, arch)


def parse_meta_json(data):
    # type: (Any) -> str
    """RHCOS ``meta.json`` rpmdb package list -> kernel ``version-release.arch``.

    Entries of ``rpmostree.rpmdb.pkglist`` are ``[name, epoch, version,
    release, arch]``; ``kernel`` wins over ``kernel-core``.
    """
    doc = _load_json(data, "meta.json")
    pkglist = doc.get(PKGLIST_KEY)
    if not isinstance(pkglist, list):
        raise KernelError("meta.json has no %s package list" % PKGLIST_KEY)
    found = {}
    for entry in pkglist:
        if isinstance(entry, (list, tuple)) and len(entry) >= 5 and entry[0] in KERNEL_PACKAGES:
            found.setdefault(entry[0], entry)
    for name in KERNEL_PACKAGES:
        if name in found:
            _name, _epoch, version, release, arch = found[name][:5]
            kver = package_kernel_version(version, release, arch)
            if not looks_like_kernel_version(kver):
                raise KernelError("meta.json lists kernel package %r with an invalid version" % (found[name],))
            return kver
    raise KernelError("meta.json package list has no kernel package (%s)" % ", ".join(KERNEL_PACKAGES))


def kernels_match(first, second):
    # type: (Optional[str], Optional[str]) -> bool
    return bool(first) and bool(second) and first.strip() == second.strip()


def rhcos_matcher():
    """``find_in_layers`` matcher: metalayer meta.json or the vmlinuz path."""

    def match(path, fileobj):
        if path == META_JSON_PATH and fileobj is not None:
            return {"kernel": parse_meta_json(fileobj.read()), "kind": "meta.json"}
        kver = kernel_from_path(path)
        if kver:
            return {"kernel": kver, "kind": "vmlinuz"}
        return None

    return match


def dtk_matcher():
    def match(path, fileobj):
        if path == DTK_RELEASE_PATH and fileobj is not None:
            return parse_dtk_release(fileobj.read())
        return None

    return match


def rhcos_kernel(client, image, arch="x86_64"):
    # type: (Any, str, str) -> Dict[str, Any]
    """Kernel version of an RHCOS (OS) image, reading layers from the last back."""
    ref = parse_pullspec(image)
    manifest = client.get_manifest(ref, arch=arch)
    config = client.get_config(ref, manifest)
    check_platform(config, arch, ref)
    labels = image_labels(config)
    found, info = find_in_layers(client, manifest, rhcos_matcher(), cache_key="rhcos-kernel")
    if not found:
        raise KernelError("no kernel found in %s: none of its %d layers has usr/lib/modules/<kver>/vmlinuz or %s"
                          % (image, info["layer_count"], META_JSON_PATH))
    where = "layer %s/%s %s" % (info["layer_index"], info["layer_count"], info["path"])
    if found["kind"] == "meta.json":
        source = "metalayer meta.json (%s)" % where
    else:
        source = where
    return {
        "kernel_version": found["kernel"],
        "source": source,
        "image": str(ref.with_digest(manifest.pinned_digest)),
        "digest": manifest.pinned_digest,
        "metalayer_label": labels.get(METALAYER_LABEL) == "true",
        "layers_read": info["layers_read"],
        "layer_count": info["layer_count"],
    }


def dtk_kernel(client, image, arch="x86_64"):
    # type: (Any, str, str) -> Dict[str, Any]
    """Kernel version of a Driver Toolkit image: last layer's
    ``/etc/driver-toolkit-release.json``, cross-checked with the
    ``kernel-version`` label."""
    ref = parse_pullspec(image)
    manifest = client.get_manifest(ref, arch=arch)
    config = client.get_config(ref, manifest)
    check_platform(config, arch, ref)
    labels = image_labels(config)
    label_kver = labels.get(DTK_KERNEL_LABEL)
    found, info = find_in_layers(client, manifest, dtk_matcher(), max_layers=1, cache_key="dtk-release")
    if found:
        kver = found["kernel_version"]
        source = "layer %s/%s %s" % (info["layer_index"], info["layer_count"], info["path"])
        if looks_like_kernel_version(label_kver) and not kernels_match(kver, label_kver):
            raise KernelError("driver toolkit %s is inconsistent: %s says kernel %s but its label %s is %s"
                              % (image, DTK_RELEASE_PATH, kver, DTK_KERNEL_LABEL, label_kver))
    elif looks_like_kernel_version(label_kver):
        kver, source = label_kver.strip(), "label %s" % DTK_KERNEL_LABEL
    else:
        raise KernelError("no kernel version in driver toolkit %s: its last layer has no %s and it has no "
                          "%s label" % (image, DTK_RELEASE_PATH, DTK_KERNEL_LABEL))
    return {
        "kernel_version": kver,
        "source": source,
        "image": str(ref.with_digest(manifest.pinned_digest)),
        "digest": manifest.pinned_digest,
        "label_kernel_version": label_kver,
        "rt_kernel_version": (found or {}).get("rt_kernel_version"),
        "layers_read": info["layers_read"],
    }
