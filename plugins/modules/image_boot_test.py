#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: image_boot_test
short_description: Boot a layered OS image's own kernel in qemu and load its kernel modules
version_added: 0.2.0
description:
  - The boot test gate. Before any MachineConfig rolls an image out, boot
    the image's kernel (C(/usr/lib/modules/<kver>/vmlinuz)) under
    C(qemu-system-x86_64 -accel tcg) with an initramfs made from the image
    itself (its module tree, C(modules-load.d), C(modprobe.d), its kmod or
    busybox), C(modprobe) every module of the image's C(modules-load.d) list
    and of O(modules), and fail when one does not load or the kernel
    panics, with the end of the serial console in RV(console_tail).
  - Fetches the image through the registry API (manifest, config, then
    every layer streamed once), writing to a temporary directory only what
    the boot needs (kernel and module trees, C(modules-load.d) and
    C(modprobe.d), C(busybox), C(kmod) and shared libraries); the directory
    is deleted afterwards.
  - Modules are loaded with C(modprobe -b), as systemd-modules-load loads
    them, so a module named in C(modules-load.d) but deny-listed by a
    C(blacklist) line of C(modprobe.d) is not loaded, and the test says so.
  - The initramfs holds no module but those named in C(modules-load.d) (and
    O(modules)) with their dependencies and soft dependencies.
  - With O(results_dir), a passing verdict is kept there by image digest and
    module list; a rerun for the same digest returns it (RV(cached)) and
    neither fetches nor boots. Failures are not kept.
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - ocp.kmod_layering.attributes.registry_group
  - ocp.kmod_layering.registry
attributes:
  check_mode:
    support: partial
    description: Can run in check mode.
    details: In check mode a cached verdict is returned; without one nothing is fetched or booted (RV(booted) is false).
  diff_mode:
    support: none
    description: Nothing is changed, so there is no diff.
options:
  image:
    description:
      - The layered OS image, pinned by digest (C(repo@sha256:...)), as the
        publish role pushed it.
    type: str
    required: true
  modules:
    description:
      - Kernel modules that must load (names, or C(kmod_modules) entries with
        a C(name)), loaded with C(modprobe) after the image's
        C(modules-load.d) list, so dependencies and C(modprobe.d) options
        apply.
    type: list
    elements: raw
    default: []
  arch:
    description:
      - Architecture of the image. Only V(x86_64) can be booted (qemu TCG on
        the controller); other values fail with a message saying so.
    type: str
    default: x86_64
  boot_timeout:
    description: Seconds the boot may take, from qemu's start to the end of the test.
    type: int
    default: 300
  memory_mb:
    description: Memory of the qemu machine, in MiB.
    type: int
    default: 1024
  results_dir:
    description:
      - Directory for passing verdicts (C(<digest>-<key>.json)) and the
        console log of each boot (C(<digest>-<key>.console.log), kept for
        failures too).
    type: path
  console_lines:
    description: Lines of the console's end returned in RV(console_tail).
    type: int
    default: 60
notes:
  - Needs C(qemu-system-x86_64) on the host the module runs on, and, for an
    image without C(busybox) (a real RHCOS), a statically linked
    C(/bin/busybox) there (Debian C(busybox-static)) for the initramfs
    shell; C(modprobe) is the image's own C(kmod) when it has one.
  - x86_64 only, under TCG (no KVM needed; a lab image boots in about 10 s,
    a real RHCOS kernel takes longer). aarch64, ppc64le and s390x images
    would need their qemu system emulator, console and machine type; the
    module refuses them (turn the gate off for them, C(kmod_boot_test=false)).
  - Compressed modules. Real RHCOS ships C(.ko.xz) modules (the layered
    image's own modules are C(.ko)). The image's kmod (RHEL's links liblzma
    and libzstd) loads C(.ko.xz) and C(.ko.zst), directly or through the
    kernel's own decompression; busybox's C(modprobe) (used only when the
    image has no kmod) may not. The initramfs carries the requested modules
    and their dependencies compressed as they are.
  - What is fetched. Every layer of the image is downloaded once (the files
    needed are spread over the base layers), for a real RHCOS about 1-2 GB
    compressed. Only the kernel, the module tree of that kernel, the
    module configuration directories, busybox/kmod and shared libraries
    are written to disk (a few hundred MB for RHCOS); the registry options'
    O(cache_dir) would also keep every layer blob, so leave it unset for
    big images.
  - Secure Boot and module signature enforcement are not modelled; a
    module that needs hardware the qemu machine lacks may fail to load
    here and load on a node (C(-ENODEV)); turn the gate off for it.
seealso:
  - module: ocp.kmod_layering.registry_image_info
"""

EXAMPLES = r"""
- name: Boot-test the layered image before any MachineConfig is written
  ocp.kmod_layering.image_boot_test:
    image: "{{ kmod_image }}"
    modules: "{{ kmod_modules }}"
    auth_file: "{{ kmod_registry_auth_file }}"
    results_dir: ~/.cache/ocp.kmod_layering/boot-tests
  delegate_to: localhost
  run_once: true
  register: boot_test

- name: Show it
  ansible.builtin.debug:
    msg: "{{ boot_test.msg }}"
"""

RETURN = r"""
ok:
  description: Whether the kernel booted and every module loaded.
  returned: always
  type: bool
msg:
  description: The verdict in words (the failure, naming the module or the panic).
  returned: always
  type: str
booted:
  description: Whether this run booted the image (false when cached or in check mode).
  returned: always
  type: bool
cached:
  description: Whether the verdict came from O(results_dir).
  returned: always
  type: bool
image:
  description: O(image).
  returned: always
  type: str
digest:
  description: Manifest digest of the image.
  returned: when the image was read or cached
  type: str
kernel:
  description: The kernel release that booted (C(uname -r) in the guest).
  returned: when booted or cached
  type: str
requested:
  description: Modules modprobed, in order (the image's C(modules-load.d) list, then O(modules)).
  returned: when booted or cached
  type: list
  elements: str
loaded:
  description: Modules in C(/proc/modules) at the end of the test.
  returned: when booted or cached
  type: list
  elements: str
failures:
  description: Each reason the test failed (module not loaded with modprobe's and the kernel's words, panic, timeout).
  returned: when booted
  type: list
  elements: str
panic:
  description: Whether the kernel panicked.
  returned: when booted
  type: bool
duration:
  description: Seconds qemu ran.
  returned: when booted or cached
  type: float
console_tail:
  description: The last O(console_lines) lines of the serial console.
  returned: when booted
  type: str
console_log:
  description: Path of the whole console log, with O(results_dir).
  returned: when booted with O(results_dir)
  type: str
layers:
  description: Layers of the image streamed.
  returned: when booted
  type: int
files_unpacked:
  description: Files written to the temporary root (what the boot needs).
  returned: when booted
  type: int
bytes_fetched:
  description: Bytes received from the registry.
  returned: always
  type: int
tools:
  description: Where busybox and modprobe came from (C(image:/usr/bin/kmod), C(host:/bin/busybox)).
  returned: when booted
  type: dict
"""

import json
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _qemu_boot, _image_boot_test, _files, _rootfs
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry_args import (
    REGISTRY_REQUIRED_TOGETHER,
    registry_argument_spec,
    registry_client,
)
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry import RegistryError, parse_pullspec

KEPT = ("ok", "kernel", "requested", "loaded", "params", "duration", "tools")


def fetch_rootfs(client, image, root):
    """Manifest digest, layer count and files written of ``image`` unpacked into ``root``."""
    ref = parse_pullspec(image)
    manifest = client.get_manifest(ref, arch="amd64")
    config = client.get_config(manifest.ref, manifest)
    arch = config.get("architecture")
    if arch and arch != "amd64":
        raise RegistryError("%s is a %s image; the boot test boots x86_64 (amd64) images only" % (image, arch))
    written = 0
    for layer in manifest.layers:
        with client.open_blob(manifest.ref, layer["digest"]) as blob:
            written += _rootfs.apply_layer(blob, root, keep=_image_boot_test.keep_for_boot_test)
    return manifest.digest, len(manifest.layers), written


def main():
    argument_spec = registry_argument_spec()
    argument_spec.update(
        image=dict(type="str", required=True),
        modules=dict(type="list", elements="raw", default=[]),
        arch=dict(type="str", default="x86_64"),
        boot_timeout=dict(type="int", default=300),
        memory_mb=dict(type="int", default=1024),
        results_dir=dict(type="path"),
        console_lines=dict(type="int", default=60),
    )
    module = AnsibleModule(argument_spec=argument_spec, required_together=REGISTRY_REQUIRED_TOGETHER,
                           supports_check_mode=True)
    params = module.params
    image = params["image"]
    result = dict(changed=False, ok=False, booted=False, cached=False, image=image, bytes_fetched=0)
    if params["arch"] not in ("x86_64", "amd64"):
        module.fail_json(msg="The boot test boots x86_64 images only (qemu TCG on the controller); %s is %s. "
                             "Turn it off for this architecture (kmod_boot_test: false)." % (image, params["arch"]),
                         **result)
    if "@sha256:" not in image:
        module.fail_json(msg="image %s is not pinned by digest (repo@sha256:...)" % image, **result)
    modules = _image_boot_test.module_names(params["modules"])
    digest = image.rsplit("@", 1)[1]
    cache_path = _image_boot_test.cache_file(params["results_dir"], digest, modules) if params["results_dir"] else None
    cached = _image_boot_test.read_cached(cache_path) if cache_path else None
    if cached is not None:
        result.update(dict((k, cached.get(k)) for k in KEPT), cached=True, digest=digest,
                      msg=_image_boot_test.verdict(cached, image)[1] + " (cached verdict)")
        module.exit_json(**result)
    if module.check_mode:
        result.update(msg="check mode: %s not booted (no cached verdict)" % image)
        module.exit_json(**result)

    workdir = tempfile.mkdtemp(prefix="kmod-boot-test-")
    client = None
    try:
        client = registry_client(params, user_agent="ocp.kmod_layering.image_boot_test")
        root = workdir + "/rootfs"
        result["digest"], result["layers"], result["files_unpacked"] = fetch_rootfs(client, image, root)
        result["bytes_fetched"] = client.bytes_fetched
        boot = _qemu_boot.boot(root, timeout=params["boot_timeout"], memory_mb=params["memory_mb"],
                               workdir=workdir, modules=modules)
    except (RegistryError, _rootfs.LayerError) as exc:
        result["bytes_fetched"] = client.bytes_fetched if client else 0
        module.fail_json(msg="Boot test of %s: cannot fetch the image: %s" % (image, to_native(exc)), **result)
    except _qemu_boot.BootError as exc:
        module.fail_json(msg="Boot test of %s: cannot boot the image: %s" % (image, to_native(exc)), **result)
    except (IOError, OSError) as exc:
        module.fail_json(msg="Boot test of %s: %s" % (image, to_native(exc)), **result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary = boot.to_dict()
    ok, msg = _image_boot_test.verdict(summary, image)
    result.update(dict((k, summary.get(k)) for k in KEPT), booted=True, ok=ok, msg=msg,
                  failures=summary["failures"], panic=summary["panic"],
                  console_tail=_image_boot_test.console_tail(boot.console, params["console_lines"]))
    if params["results_dir"]:
        try:
            log_path = cache_path[:-len(".json")] + ".console.log"
            _files.write_atomic(log_path, boot.console)
            result["console_log"] = log_path
            if ok:
                record = dict((k, summary.get(k)) for k in KEPT)
                record.update(version=_image_boot_test.CACHE_VERSION, image=image, digest=digest)
                _files.write_atomic(cache_path, json.dumps(record, sort_keys=True))
        except (IOError, OSError) as exc:
            module.warn("Could not keep the boot test verdict in %s: %s" % (params["results_dir"], to_native(exc)))
    if not ok:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
