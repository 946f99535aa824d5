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
  - With O(secure_boot=true), the machine boots as a UEFI Secure Boot node
    does - OVMF's Secure Boot firmware with Microsoft's keys enrolled, the
    fleet's certificates (O(secure_boot_certificates)) enrolled as Machine
    Owner Keys in the machine's own copy of the variable store, then shim,
    grub and the image's own kernel - so the kernel is locked down and
    refuses a module whose signature it cannot verify, as the nodes would.
    The refusal is reported with the kernel's and modprobe's words
    (RV(secure_boot.refused)) and what to do.
  - With O(results_dir), a passing verdict is kept there by image digest,
    module list and Secure Boot settings (firmware, boot loader, the
    certificates' fingerprints); a rerun for the same digest and settings
    returns it (RV(cached)) and neither fetches nor boots. Failures are not
    kept.
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
      - Architecture of the image (release or Go naming); the image's config must say the same.
      - V(x86_64) boots under C(qemu-system-x86_64) (console C(ttyS0)); V(aarch64) under
        C(qemu-system-aarch64 -M virt -cpu cortex-a57) (console C(ttyAMA0); the kernel may be an
        uncompressed C(Image), as Debian's and RHCOS's arm64 C(vmlinuz) are), both TCG on the controller.
      - The initramfs runs the image's own busybox (and kmod), checked to be of this architecture; the
        controller's C(/bin/busybox) stands in only for an image of the controller's architecture without one.
      - Other architectures fail with a message saying so. O(secure_boot) is for V(x86_64) only (an
        aarch64 image with O(secure_boot=true) fails, saying to boot it without).
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
  accelerator:
    description:
      - How qemu runs the machine. V(tcg) emulates (works everywhere, no
        C(/dev/kvm) needed). V(kvm) and V(auto) use KVM (C(-cpu host)) when
        qemu can start a KVM machine here (for O(secure_boot), one with SMM,
        which the Secure Boot firmware needs and nested hypervisors often
        lack); otherwise the boot runs under TCG and RV(accelerator_note)
        says why. A KVM boot whose /init has not started within 30 s (or
        whose qemu exits first - a nested hypervisor missing a CPU feature)
        is booted again under TCG, and RV(accelerator_note) says so. Never a
        failure.
    type: str
    choices: [tcg, kvm, auto]
    default: tcg
  secure_boot:
    description:
      - Boot with UEFI Secure Boot enforced, through OVMF's Secure Boot
        firmware, shim and grub, instead of qemu's direct kernel boot; the
        kernel then refuses modules that are unsigned or signed with a key
        it does not trust (C(Loading of unsigned module is rejected),
        C(Key was rejected by service)).
      - Fails when the firmware did not enable Secure Boot in the machine
        (a variable store without Secure Boot keys).
      - Needs the firmware, a signed shim and grub (O(secure_boot_firmware),
        O(secure_boot_bootloader)), C(mkfs.fat) (dosfstools) and C(mtools)
        on the controller, and C(virt-fw-vars) (Python package
        virt-firmware) for O(secure_boot_certificates).
    type: bool
    default: false
  secure_boot_certificates:
    description:
      - Certificates (PEM, one or more C(CERTIFICATE) blocks, or DER) to
        enrol as Machine Owner Keys in the test machine's copy of the
        variable store, with C(virt-fw-vars --add-mok) - the fleet's
        module signing certificate, as the nodes have it enrolled. shim puts
        them in the kernel's C(.machine) key ring, which the kernel trusts
        for modules.
      - Their SHA-256 fingerprints are part of the verdict cache key.
      - Only with O(secure_boot).
    type: list
    elements: path
    default: []
  secure_boot_firmware:
    description:
      - OVMF's Secure Boot firmware. Unset, the first pair found of
        C(/usr/share/OVMF/OVMF_CODE_4M.secboot.fd) +
        C(/usr/share/OVMF/OVMF_VARS_4M.ms.fd) (Debian/Ubuntu, package
        C(ovmf)), C(/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd) +
        C(/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd) (Fedora, RHEL, CentOS
        Stream, package C(edk2-ovmf)), C(/usr/share/OVMF/OVMF_CODE.secboot.fd) +
        C(/usr/share/OVMF/OVMF_VARS.ms.fd).
      - Only with O(secure_boot).
    type: dict
    default: {}
    suboptions:
      code:
        description:
          - The firmware code (raw C(.fd), built with SMM and Secure Boot),
            mapped read-only. Given alone, the vars of its pair above.
        type: path
      vars:
        description:
          - The variable store template (raw C(.fd)) with Secure Boot keys
            enrolled and Secure Boot on (Microsoft's keys, which sign
            shim). Never written, each boot gets its own copy.
        type: path
  secure_boot_bootloader:
    description:
      - The signed shim and grub that start the image's kernel. The kernel
        must be signed by a key the shim trusts (its vendor certificate);
        RHCOS's kernel by Red Hat's, so RHCOS is booted with its own shim and
        grub (RHCOS carries them in C(/usr/lib/bootupd/updates/EFI/redhat/));
        a Debian-signed kernel with Debian's.
      - Only with O(secure_boot).
    type: dict
    default: {}
    suboptions:
      source:
        description:
          - V(auto) - the image's own signed shim and grub when the image
            carries both (C(/usr/lib/bootupd/updates/EFI/<vendor>/shimx64.efi)
            and C(grubx64.efi), C(/usr/lib/efi/shim/*/EFI/<vendor>/) and
            C(/usr/lib/efi/grub2/*/EFI/<vendor>/), C(/boot/efi/EFI/<vendor>/)),
            else the controller's.
          - V(image) - the image's, or fail.
          - V(controller) - the controller's (O(secure_boot_bootloader.shim)
            and O(secure_boot_bootloader.grub)).
        type: str
        choices: [auto, image, controller]
        default: auto
      shim:
        description:
          - The controller's signed shim. Unset, the first pair found of
            C(/usr/lib/shim/shimx64.efi.signed) +
            C(/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed) (Debian/Ubuntu,
            packages C(shim-signed), C(grub-efi-amd64-signed)), and
            C(/boot/efi/EFI/<vendor>/shimx64.efi) + C(grubx64.efi) for
            C(redhat), C(fedora), C(centos) (packages C(shim-x64),
            C(grub2-efi-x64)). Set both or neither.
        type: path
      grub:
        description:
          - The controller's signed grub (same vendor as the shim). Its
            C(grub.cfg) is written in grub's embedded prefix directory
            (C(/EFI/debian), C(/EFI/redhat)) and beside it.
        type: path
notes:
  - Needs C(qemu-system-x86_64) (x86_64 images) or C(qemu-system-aarch64)
    (aarch64 images; Debian C(qemu-system-arm)) on the host the module runs
    on, and, for an x86_64 image without C(busybox) (a real RHCOS) on an
    x86_64 host, a statically linked C(/bin/busybox) there (Debian
    C(busybox-static)) for the initramfs shell; an image of another
    architecture than the host's must bring its own busybox. C(modprobe) is
    the image's own C(kmod) when it has one.
  - x86_64 and aarch64, under TCG (no KVM needed; a lab image boots in about
    10 s, an aarch64 one in a few seconds more, a real RHCOS kernel takes
    longer). ppc64le and s390x images would need their qemu system
    emulator, console and machine type; the module refuses them (turn the
    gate off for them, C(kmod_boot_test=false)).
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
  - Without O(secure_boot), qemu boots the kernel directly (no firmware),
    so module signatures are not checked; a node with Secure Boot would
    refuse what this test loads. Turn O(secure_boot) on for such fleets.
  - A module that needs hardware the qemu machine lacks may fail to load
    here and load on a node (C(-ENODEV)); turn the gate off for it.
  - Secure Boot under TCG takes about 8-10 s a boot for a lab image (firmware,
    shim and grub add about 5 s to the direct boot). The firmware needs SMM;
    KVM on a host without SMM support (most nested virtualization) cannot
    run it, so the boot runs under TCG whatever O(accelerator) says, and
    RV(accelerator_note) says so.
  - The ESP is a FAT image with C(EFI/BOOT/BOOTX64.EFI) (shim),
    C(EFI/BOOT/grubx64.efi), C(grub.cfg) in grub's prefix directory, the
    image's kernel and the boot test's initramfs; the initramfs also loads
    C(efivarfs) when it is a module, to read the firmware's C(SecureBoot)
    variable.
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

- name: Boot-test it as a Secure Boot node would boot it, the fleet's certificate enrolled
  ocp.kmod_layering.image_boot_test:
    image: "{{ kmod_image }}"
    modules: "{{ kmod_modules }}"
    auth_file: "{{ kmod_registry_auth_file }}"
    results_dir: ~/.cache/ocp.kmod_layering/boot-tests
    secure_boot: true
    secure_boot_certificates:
      - "{{ kmod_signing_cert_file }}"
  delegate_to: localhost
  run_once: true
  register: boot_test_sb

- name: Fedora/RHEL controller, firmware and boot loader named
  ocp.kmod_layering.image_boot_test:
    image: "{{ kmod_image }}"
    secure_boot: true
    secure_boot_certificates: [/etc/pki/kmod/fleet-signing.der]
    secure_boot_firmware:
      code: /usr/share/edk2/ovmf/OVMF_CODE.secboot.fd
      vars: /usr/share/edk2/ovmf/OVMF_VARS.secboot.fd
    secure_boot_bootloader:
      source: image
    accelerator: auto
  delegate_to: localhost
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
arch:
  description: The architecture booted (release naming), from O(arch).
  returned: when O(arch) is one the boot test boots
  type: str
  sample: aarch64
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
accelerator:
  description: How qemu ran the machine, V(tcg) or V(kvm).
  returned: when booted or cached
  type: str
accelerator_note:
  description:
    - Why KVM was not used though O(accelerator) asked for it (no C(/dev/kvm),
      or KVM without SMM for O(secure_boot)); null otherwise.
  returned: when booted or cached
  type: str
  sample: >-
    KVM here has no SMM (System Management Mode), which the Secure Boot firmware needs
    (nested virtualization usually lacks it): booted under TCG instead of KVM
secure_boot:
  description:
    - What the booted kernel enforced, as its /init read it (the firmware's
      C(SecureBoot) variable through efivarfs, C(/sys/kernel/security/lockdown),
      C(/sys/module/module/parameters/sig_enforce), C(/proc/keys)), in the
      terms of the node verdict; with O(secure_boot), also the firmware,
      shim, grub and certificates used.
    - Without O(secure_boot) qemu boots the kernel directly, so RV(secure_boot.state)
      is V(unsupported) (no EFI).
  returned: when booted or cached
  type: dict
  contains:
    requested:
      description: O(secure_boot).
      type: bool
    state:
      description:
        - V(enabled) or V(disabled) (the firmware's C(SecureBoot) variable),
          V(unsupported) (not booted through EFI), V(unknown) (EFI, variable not readable).
      type: str
    lockdown:
      description: The kernel's lockdown mode, V(none), V(integrity) or V(confidentiality); null when not reported.
      type: str
    sig_enforce:
      description: The kernel's C(module.sig_enforce); null when not reported.
      type: bool
    enforcing:
      description: Whether the kernel refuses badly signed modules (Secure Boot on, lockdown other than none, or sig_enforce).
      type: bool
    setup_mode:
      description: The firmware's C(SetupMode) variable (0 when a platform key is enrolled); null when not read.
      type: int
    trusted_keys:
      description: 'The asymmetric keys the kernel holds (C(/proc/keys)), C(<subject CN>: <subject key id>).'
      type: list
      elements: str
      sample: ["Debian Secure Boot CA: 6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1", "fleet signing: a6e4308dacbaad242cee2debed456e45fd44da1a"]
    keyrings:
      description: The kernel's system key rings and how many keys each holds (C(.machine) holds the enrolled MOKs).
      type: dict
      sample: {".builtin_trusted_keys": 1, ".machine": 2, ".platform": 2}
    kernel_messages:
      description: The kernel's messages about Secure Boot, lockdown and the certificates it loaded.
      type: list
      elements: str
    refused:
      description:
        - Modules the kernel refused for their signature, by name - C(reason)
          (V(unsigned), V(untrusted key), V(unsupported crypto), V(signature)),
          C(kernel) (the kernel's words, e.g. C(Loading of unsigned module is rejected),
          C(Loading of module with unavailable key is rejected)) and C(modprobe)
          (modprobe's, e.g. C(... Key was rejected by service)).
      type: dict
      sample: {"kmodlab_core": {"reason": "unsigned", "kernel": ["Loading of unsigned module is rejected"],
               "modprobe": ["modprobe: ERROR: could not insert 'kmodlab_core': Key was rejected by service"]}}
    certificates:
      description:
        - O(secure_boot_certificates) as enrolled - C(path), C(sha256) (fingerprint of the DER), C(subject) (CN),
          C(key_description) (C(<CN>) colon C(<subject key id>), as the kernel names the key) and C(trusted)
          (whether the booted kernel holds the key; null when not known).
      type: list
      elements: dict
    firmware:
      description: The firmware used, C(code) and C(vars) (the template copied for the boot).
      type: dict
      returned: with O(secure_boot)
    shim:
      description: The shim used, C(image:<path>) (the image's own) or C(controller:<path>).
      type: str
      returned: with O(secure_boot)
    grub:
      description: The grub used, C(image:<path>) or C(controller:<path>).
      type: str
      returned: with O(secure_boot)
    grub_prefix:
      description: The ESP directory grub read its C(grub.cfg) from (its embedded prefix).
      type: str
      returned: with O(secure_boot)
      sample: /EFI/debian
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _image_boot_test
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry_args import (
    REGISTRY_REQUIRED_TOGETHER,
    registry_argument_spec,
)


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
        accelerator=dict(type="str", choices=["tcg", "kvm", "auto"], default="tcg"),
        secure_boot=dict(type="bool", default=False),
        secure_boot_certificates=dict(type="list", elements="path", default=[]),
        secure_boot_firmware=dict(type="dict", default={}, options=dict(
            code=dict(type="path"),
            vars=dict(type="path"),
        )),
        secure_boot_bootloader=dict(type="dict", default={}, options=dict(
            source=dict(type="str", choices=["auto", "image", "controller"], default="auto"),
            shim=dict(type="path"),
            grub=dict(type="path"),
        )),
    )
    module = AnsibleModule(argument_spec=argument_spec, required_together=REGISTRY_REQUIRED_TOGETHER,
                           supports_check_mode=True)
    failed, result = _image_boot_test.run(module.params, check_mode=module.check_mode, warn=module.warn)
    if failed:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
