# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The boot test gate (module ``image_boot_test``): pure parts.

- ``keep_for_boot_test(path)``: which files of an OS image the boot test
  writes to disk while the layers stream by (kernel and module trees,
  modules-load.d / modprobe.d, busybox, kmod and the shared libraries they
  can need); everything else is read past.
- ``cache_file(results_dir, digest, modules)``: where a passing verdict of
  an image (by manifest digest) and module list is kept.
- ``verdict(result, image)``: a ``_qemu_boot.BootResult`` dict -> ``(ok, msg)``.
- ``console_tail(text, lines)``: the end of the serial console, for the
  failure report.

The boot itself is ``_qemu_boot.boot`` (the lab's nodes boot their own way,
``tests/kmodlab/nodeboot.py``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import re

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _qemu_boot

CACHE_VERSION = 1
_MODULE_TREES = ("usr/lib/modules/", "lib/modules/")
_CONFIG_DIRS = tuple(d + "/" for d in _qemu_boot.MODULES_LOAD_DIRS + _qemu_boot.MODPROBE_DIRS)
_TOOLS = frozenset(_qemu_boot.BUSYBOX_CANDIDATES + _qemu_boot.KMOD_CANDIDATES)
_LIB_DIRS = frozenset(_qemu_boot.LIB_DIRS)
_SHARED_LIB_RE = re.compile(r"^(ld-|lib)[^/]*\.so(\.[0-9.]+)?$")


def keep_for_boot_test(path):
    """Whether the boot test needs file ``path`` (relative, as in a layer).

    Symlinks and directories are always applied (by ``_rootfs``); this
    decides regular files and hard links only.
    """
    if path.startswith(_MODULE_TREES) or path.startswith(_CONFIG_DIRS) or path in _TOOLS:
        return True
    directory, _sep, name = path.rpartition("/")
    return directory in _LIB_DIRS and bool(_SHARED_LIB_RE.match(name))


def module_names(modules):
    """Names from a list of names or ``kmod_modules`` entries (dicts with ``name``)."""
    names = []
    for item in modules or []:
        name = item.get("name") if isinstance(item, dict) else item
        if name and str(name) not in names:
            names.append(str(name))
    return names


def cache_file(results_dir, digest, modules):
    """``<results_dir>/<digest hex>-<key>.json``: one verdict per image
    (manifest digest) and set of modules."""
    key = hashlib.sha256(json.dumps({
        "version": CACHE_VERSION, "digest": digest,
        "modules": sorted(_qemu_boot.normalize_name(m) for m in modules)}, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(results_dir, "%s-%s.json" % (digest.split(":", 1)[-1], key))


def read_cached(path):
    """The cached verdict at ``path`` if it is a readable passing one, else None."""
    try:
        with open(path, "r") as stream:
            data = json.load(stream)
    except (IOError, OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("ok") is not True or data.get("version") != CACHE_VERSION:
        return None
    return data


def console_tail(text, lines=60):
    """The last ``lines`` lines of the console (carriage returns dropped)."""
    rows = (text or "").replace("\r", "").rstrip("\n").split("\n")
    return "\n".join(rows[-lines:]) if lines > 0 else ""


def verdict(result, image):
    """``(ok, message)`` of a boot result dict (``_qemu_boot.BootResult.to_dict()``
    plus ``requested``): a panic, a boot that did not finish, another kernel,
    or a module of the list that did not load, each named."""
    if result.get("ok"):
        return True, "%s: kernel %s booted and loaded %s in %.1fs" % (
            image, result.get("kernel"), ", ".join(result.get("requested") or []) or "no module",
            result.get("duration") or 0.0)
    failures = list(result.get("failures") or []) or ["the boot did not complete"]
    not_loaded = []
    for failure in failures:
        match = re.match(r"module (\S+) not loaded", failure)
        if match:
            not_loaded.append(match.group(1))
    if result.get("panic"):
        head = "the kernel panicked"
    elif result.get("timed_out"):
        head = "the boot did not finish in time"
    elif not_loaded:
        head = "module%s %s did not load" % ("s" if len(not_loaded) > 1 else "", ", ".join(not_loaded))
    else:
        head = "the boot test failed"
    return False, ("Boot test of %s: %s (%s). A node booting this image would fail the same way: nothing was "
                   "rolled out. See console_tail (the serial console's end) in this result."
                   % (image, head, "; ".join(failures)))
