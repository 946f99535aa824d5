# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Pure logic of the layered image build and publish (private module utility).

``tree_digest(root)``
    Content fingerprint of a source tree (paths, exec bits, contents; ``.git``
    skipped).
``recipe_digest(paths)``
    Fingerprint of the build recipe files (Containerfile template, helpers).
``normalize_modules(modules)``
    Validates ``kmod_modules`` entries; raises ``BuildInputError`` naming the
    module and the fix.
``template_module(module, fingerprint, source)``
    One entry of the template's ``kmod_modules``.
``build_key(kernel_version, dtk_image, rhcos_image, modules, recipe, signing)``
    sha256 of everything that changes the image (the signing certificate and
    hash included: a new key means a new image).
``image_tag(build_key, kernel_version)``
    Content-addressed tag: same inputs, same tag.
``plan_builds(clusters, modules, recipe, repository)``
    Groups clusters by build key: one build per distinct key.
``pull_secret_covers(dockerconfig, image)``
    Whether a pull secret has credentials for an image's registry.

The lab (``tests/kmodlab/layered.py``) uses these same functions.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import re
import stat

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _arch
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry import (
    RegistryError,
    lookup_credentials,
    parse_auth_config,
    parse_pullspec,
)

# Bump when the meaning of the key's inputs changes (forces new tags).
BUILD_KEY_VERSION = 1
SKIP_DIRS = frozenset([".git"])
MODULE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_TAG_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.-]")
_DIGEST_PINNED_RE = re.compile(r"@sha256:[a-f0-9]{64}$")
MODULE_KEYS = frozenset(["name", "source", "build_command", "load_at_boot", "options", "firmware_dir"])
SOURCE_KINDS = ("path", "git", "archive")


class BuildInputError(ValueError):
    """An input of the build is wrong; the message names it and the fix."""


# --------------------------------------------------------------------------
# Fingerprints


def tree_digest(root):
    # type: (str) -> str
    """``sha256:<hex>`` over a tree's relative paths, exec bits and file contents.

    Directories named ``.git`` are skipped; symlinks count by their target
    text. Independent of where the tree lives and of timestamps.
    """
    root = str(root)
    if not os.path.isdir(root):
        raise BuildInputError("%s is not a directory" % root)
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for filename in sorted(filenames):
            path = os.path.join(dirpath, filename)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if os.path.islink(path):
                digest.update(("%s\0link\0" % rel).encode("utf-8"))
                digest.update(os.readlink(path).encode("utf-8"))
                continue
            executable = bool(os.stat(path).st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))
            digest.update(("%s\0%d\0" % (rel, int(executable))).encode("utf-8"))
            with open(path, "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
    return "sha256:" + digest.hexdigest()


def file_digest(path):
    # type: (str) -> str
    """``sha256:<hex>`` of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def recipe_digest(paths):
    # type: (list) -> str
    """Fingerprint of the recipe files (the Containerfile template and the
    helpers copied into the context), by base name and content."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=os.path.basename):
        digest.update(os.path.basename(path).encode("utf-8") + b"\0")
        digest.update(file_digest(path).encode("ascii") + b"\0")
    return "sha256:" + digest.hexdigest()


# --------------------------------------------------------------------------
# Module entries


def _relative_inside(value, what, name):
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise BuildInputError("module %s: %s must be a string, got %r" % (name, what, value))
    parts = value.replace("\\", "/").split("/")
    if value.startswith("/") or ".." in parts:
        raise BuildInputError("module %s: %s %r must be a relative path inside the module's sources"
                              % (name, what, value))
    return value.strip("/")


def normalize_modules(modules):
    # type: (list) -> list
    """Validate ``kmod_modules`` and return them normalized (fresh dicts).

    Each entry: ``name``, ``source`` (exactly one of ``path``, ``git`` (+
    ``version``, ``subdir``), ``archive`` (+ ``subdir``)), optional
    ``build_command``, ``load_at_boot`` (default true), ``options``,
    ``firmware_dir``.
    """
    if not isinstance(modules, list) or not modules:
        raise BuildInputError("kmod_modules is empty: list at least one module, e.g. "
                              "[{name: mydrv, source: {path: /src/mydrv}}]")
    result = []
    seen = set()
    for index, module in enumerate(modules):
        if not isinstance(module, dict):
            raise BuildInputError("kmod_modules[%d] must be a mapping with name and source, got %r" % (index, module))
        name = module.get("name")
        if not isinstance(name, str) or not MODULE_NAME_RE.match(name):
            raise BuildInputError("kmod_modules[%d]: name %r is not a kernel module name (letters, digits, _ and -)"
                                  % (index, name))
        if name in seen:
            raise BuildInputError("kmod_modules: module %s is listed twice" % name)
        seen.add(name)
        unknown = sorted(set(module) - MODULE_KEYS)
        if unknown:
            raise BuildInputError("module %s: unknown key(s) %s; known: %s"
                                  % (name, ", ".join(unknown), ", ".join(sorted(MODULE_KEYS))))
        source = module.get("source")
        if not isinstance(source, dict):
            raise BuildInputError("module %s: source must be a mapping with one of path, git or archive" % name)
        kinds = [k for k in SOURCE_KINDS if source.get(k)]
        if len(kinds) != 1:
            raise BuildInputError("module %s: source needs exactly one of path, git or archive (got %s)"
                                  % (name, ", ".join(kinds) or "none"))
        kind = kinds[0]
        allowed = {"path": {"path"}, "git": {"git", "version", "subdir"}, "archive": {"archive", "subdir"}}[kind]
        extra = sorted(k for k in source if k not in allowed and source.get(k) not in (None, ""))
        if extra:
            raise BuildInputError("module %s: source key(s) %s do not apply to a %s source"
                                  % (name, ", ".join(extra), kind))
        norm_source = {kind: str(source[kind])}
        if kind == "git":
            norm_source["version"] = str(source.get("version") or "HEAD")
        if kind in ("git", "archive"):
            norm_source["subdir"] = _relative_inside(source.get("subdir"), "source.subdir", name)
        entry = {"name": name, "source": norm_source}
        build_command = module.get("build_command")
        if build_command not in (None, ""):
            if not isinstance(build_command, str):
                raise BuildInputError("module %s: build_command must be a shell command string" % name)
            entry["build_command"] = build_command
        load_at_boot = module.get("load_at_boot", True)
        if not isinstance(load_at_boot, bool):
            raise BuildInputError("module %s: load_at_boot must be true or false, got %r" % (name, load_at_boot))
        entry["load_at_boot"] = load_at_boot
        options = module.get("options")
        if options not in (None, ""):
            if not isinstance(options, str) or "\n" in options:
                raise BuildInputError("module %s: options must be one line of modprobe options "
                                      "(\"param=value other=value\")" % name)
            entry["options"] = options
        firmware_dir = _relative_inside(module.get("firmware_dir"), "firmware_dir", name)
        if firmware_dir:
            entry["firmware_dir"] = firmware_dir
        result.append(entry)
    return result


def template_module(module, fingerprint, source):
    # type: (dict, str, str) -> dict
    """The Containerfile template's entry for a normalized module.

    Keys the template tests with ``is defined`` are left out when unset.
    """
    entry = {"name": module["name"], "source": source, "fingerprint": fingerprint,
             "load_at_boot": module.get("load_at_boot", True)}
    for key in ("build_command", "options", "firmware_dir"):
        if module.get(key):
            entry[key] = module[key]
    return entry


# --------------------------------------------------------------------------
# Build key, tag, plan


def _require_pinned(image, what, cluster):
    if not isinstance(image, str) or not _DIGEST_PINNED_RE.search(image):
        raise BuildInputError(
            "cluster %s: the %s image %r is not pinned by digest (repo@sha256:...); "
            "run the resolve role first so kmod_resolved has digest-pinned images" % (cluster, what, image))


def signing_key_inputs(signing):
    # type: (dict) -> dict
    """What of the signing facts changes the image: the certificate and the
    hash (None when unsigned). The private key is the certificate's."""
    if not signing:
        return None
    return {"cert_sha256": signing["cert_sha256"], "hash": signing["hash"]}


def build_key(kernel_version, dtk_image, rhcos_image, modules, recipe, signing=None, arch="x86_64"):
    # type: (str, str, str, list, str, dict, str) -> str
    """sha256 hex of every input of the layered image.

    ``modules``: template entries (see ``template_module``), in build order;
    their ``fingerprint`` (source content) and ``source`` label, build
    command, options, firmware dir and load flag all count. ``recipe``: the
    ``recipe_digest`` of the template and helpers. ``signing``: the signing
    facts (``_signing.certificate_facts``) or None for unsigned modules
    (whose keys stay what they were before signing existed). ``arch``: the
    release architecture the image is built for (``_arch.release_arch``);
    it enters the inputs for every architecture but x86_64, whose keys stay
    what they were before other architectures were built (a fleet that ran
    an earlier version is neither rebuilt nor rebooted).
    """
    inputs = {
        "v": BUILD_KEY_VERSION,
        "kernel_version": kernel_version,
        "dtk_image": dtk_image,
        "rhcos_image": rhcos_image,
        "recipe": recipe,
        "modules": [dict((k, m[k]) for k in sorted(m) if k != "path") for m in modules],
    }
    if signing:
        inputs["signing"] = signing_key_inputs(signing)
    arch = _arch.release_arch(arch or _arch.DEFAULT_ARCH)
    if arch != _arch.DEFAULT_ARCH:
        inputs["arch"] = arch
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def image_tag(key, kernel_version=None):
    # type: (str, str) -> str
    """Content-addressed tag: ``<kernel>-<first 32 hex of the key>`` (valid
    tag characters only, at most 128 characters)."""
    if not re.match(r"^[a-f0-9]{32,}$", key or ""):
        raise BuildInputError("build key %r is not a sha256 hex digest" % (key,))
    if not kernel_version:
        return key[:32]
    prefix = _TAG_UNSAFE_RE.sub("_", kernel_version).lstrip(".-")[:80]
    return "%s-%s" % (prefix, key[:32]) if prefix else key[:32]


def validate_repository(repository):
    # type: (str) -> str
    """``registry/namespace/name`` without tag or digest; returns it normalized."""
    text = (repository or "").strip()
    if not text:
        raise BuildInputError("kmod_image_repository is empty: set the repository to push layered images to, "
                              "e.g. registry.example.com/infra/rhcos-kmods")
    if "@" in text or ":" in text.rsplit("/", 1)[-1]:
        raise BuildInputError("kmod_image_repository %r must not carry a tag or digest: the tag is computed "
                              "from the build key" % text)
    try:
        ref = parse_pullspec(text)
    except RegistryError as exc:
        raise BuildInputError("kmod_image_repository %r is not an image repository: %s" % (text, exc))
    return ref.name


def resolved_arches(name, resolved):
    # type: (str, dict) -> dict
    """``{arch: per-arch resolved facts}`` of one cluster's ``kmod_resolved``:
    its ``arches`` mapping, or (facts of one architecture, as before
    architectures were per pool) the top level under its ``arch``."""
    if not isinstance(resolved, dict):
        raise BuildInputError("cluster %s has no resolved facts: run the resolve role first" % name)
    arches = resolved.get("arches")
    if not arches:
        arches = {resolved.get("arch") or _arch.DEFAULT_ARCH: resolved}
    result = {}
    for arch, facts in arches.items():
        try:
            result[_arch.release_arch(arch)] = facts
        except _arch.ArchError as exc:
            raise BuildInputError("cluster %s: %s" % (name, exc))
    return result


def plan_builds(clusters, modules, recipe, repository):
    # type: (dict, list, str, str) -> dict
    """Group clusters by build key: one build per distinct (kernel, DTK,
    RHCOS, architecture, sources, recipe, signing).

    ``clusters``: ``{name: kmod_resolved}`` (the resolve role's facts, with
    the cluster's ``signing`` facts or None): per architecture its pools
    need (``arches``: ``{arch: {kernel_version, driver_toolkit_image,
    rhcos_image}}``), or those keys at the top level with ``arch``.
    Returns ``{"builds": [...], "clusters": {name: build_key of its primary
    architecture}, "cluster_arches": {name: {arch: build_key}}}`` where each
    build is ``{build_key, tag, image (repo:tag), repository, arch,
    platform (linux/<goarch>), kernel_version, driver_toolkit_image,
    rhcos_image, signing, clusters: [names]}``, in the order of the first
    cluster (and architecture) that needs it. The primary architecture is
    ``kmod_resolved.arch`` (that of the first pool).
    """
    repository = validate_repository(repository)
    if not clusters:
        raise BuildInputError("no clusters to plan builds for")
    builds = {}
    order = []
    keys = {}
    arch_keys = {}
    for name, resolved in clusters.items():
        signing = (resolved or {}).get("signing") or None
        per_arch = resolved_arches(name, resolved)
        arch_keys[name] = {}
        for arch, facts in per_arch.items():
            if not isinstance(facts, dict) or not facts.get("kernel_version"):
                raise BuildInputError("cluster %s has no resolved kernel_version%s: run the resolve role first"
                                      % (name, "" if len(per_arch) == 1 else " for " + arch))
            dtk = facts.get("driver_toolkit_image")
            rhcos = facts.get("rhcos_image")
            _require_pinned(dtk, "Driver Toolkit", name)
            _require_pinned(rhcos, "RHCOS", name)
            key = build_key(facts["kernel_version"], dtk, rhcos, modules, recipe, signing, arch)
            arch_keys[name][arch] = key
            if key not in builds:
                tag = image_tag(key, facts["kernel_version"])
                builds[key] = {
                    "build_key": key,
                    "tag": tag,
                    "repository": repository,
                    "image": "%s:%s" % (repository, tag),
                    "arch": arch,
                    "platform": "linux/" + _arch.go_arch(arch),
                    "kernel_version": facts["kernel_version"],
                    "driver_toolkit_image": dtk,
                    "rhcos_image": rhcos,
                    "signing": signing,
                    "clusters": [],
                }
                order.append(key)
            if name not in builds[key]["clusters"]:
                builds[key]["clusters"].append(name)
        primary = (resolved or {}).get("arch")
        primary = _arch.release_arch(primary) if primary else None
        keys[name] = arch_keys[name].get(primary) or list(arch_keys[name].values())[0]
    return {"builds": [builds[k] for k in order], "clusters": keys, "cluster_arches": arch_keys}


# --------------------------------------------------------------------------
# Publish


def pull_secret_covers(dockerconfig, image):
    # type: (object, str) -> tuple
    """Whether ``dockerconfig`` (dockerconfigjson text/dict, or a Secret) has
    credentials for ``image``'s registry.

    Returns ``(covered, entry)``: ``entry`` is the auth key that matched
    (``host`` or ``host/namespace``), None when nothing does. Entries without
    credentials do not count. Raises ``RegistryError`` on unreadable input.
    """
    ref = parse_pullspec(image)
    auths = parse_auth_config(dockerconfig)
    creds, key = lookup_credentials(auths, ref)
    if not creds or not creds[0]:
        return False, None
    return True, key
