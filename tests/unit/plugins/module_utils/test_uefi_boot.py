"""_uefi_boot and the Secure Boot parts of _qemu_boot / _image_boot_test:
certificates, where the firmware / shim / grub are, the ESP layout and its
mtools commands, the vars preparation command, the accelerator choice, the
console's new markers, the refusal verdict and the cache key. (The real
Secure Boot boots are tests/integration/test_image_boot_test.py.)"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _image_boot_test, _qemu_boot, _uefi_boot

KVER = "6.1.0-55-cloud-amd64"
DEBIAN_GRUB = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"


def make_cert(cn: str) -> tuple[bytes, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(12345).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(ski, critical=False).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER), ski.digest.hex()


# ---------------------------------------------------------------- certificates


def test_pem_and_der_certificates_give_der_fingerprint_and_key_description(tmp_path: Path) -> None:
    first, first_skid = make_cert("fleet signing")
    second, _second_skid = make_cert("next fleet signing")
    pem = b"".join(b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
                   for der in (first, second))
    (tmp_path / "fleet.pem").write_bytes(b"# two certificates\n" + pem)
    (tmp_path / "fleet.der").write_bytes(first)
    certs = _uefi_boot.read_certificates(str(tmp_path / "fleet.pem"))
    assert [c.der for c in certs] == [first, second]
    (der,) = _uefi_boot.read_certificates(str(tmp_path / "fleet.der"))
    assert der.sha256 == hashlib.sha256(first).hexdigest() == certs[0].sha256
    assert der.subject == "fleet signing" and der.skid == first_skid
    assert der.key_description == "fleet signing: " + first_skid
    assert der.to_dict() == {"path": str(tmp_path / "fleet.der"), "sha256": der.sha256, "subject": "fleet signing",
                             "key_description": "fleet signing: " + first_skid}


def test_a_file_that_is_no_certificate_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
    with pytest.raises(_uefi_boot.SecureBootError, match="neither a PEM nor a DER certificate"):
        _uefi_boot.read_certificates(str(tmp_path / "key.pem"))
    with pytest.raises(_uefi_boot.SecureBootError, match="cannot read the certificate"):
        _uefi_boot.read_certificates(str(tmp_path / "missing.pem"))


# ---------------------------------------------------------------- where the parts are


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_firmware_pairs_code_with_its_vars(tmp_path: Path) -> None:
    pairs = ((str(tmp_path / "a/CODE.fd"), str(tmp_path / "a/VARS.fd")),
             (str(tmp_path / "b/CODE.secboot.fd"), str(tmp_path / "b/VARS.secboot.fd")))
    with pytest.raises(_uefi_boot.SecureBootError, match="no OVMF Secure Boot firmware.*edk2-ovmf"):
        _uefi_boot.firmware_pair(pairs=pairs)
    for path in pairs[1]:
        touch(Path(path))
    assert _uefi_boot.firmware_pair(pairs=pairs) == pairs[1]
    assert _uefi_boot.firmware_pair(code=pairs[1][0], pairs=pairs) == pairs[1]
    with pytest.raises(_uefi_boot.SecureBootError, match="set both code and vars"):
        _uefi_boot.firmware_pair(code=str(tmp_path / "other.fd"), pairs=pairs)
    with pytest.raises(_uefi_boot.SecureBootError, match="does not exist"):
        _uefi_boot.firmware_pair(code=pairs[0][0], variables=pairs[1][1], pairs=pairs)


def test_the_images_own_shim_and_grub_come_first_and_pair_by_vendor(tmp_path: Path) -> None:
    root = tmp_path / "rhcos"
    assert _uefi_boot.image_bootloader(str(root)) is None
    efi = root / "usr/lib/bootupd/updates/EFI"
    touch(efi / "BOOT/BOOTX64.EFI")
    touch(efi / "BOOT/fbx64.efi")
    touch(efi / "redhat/shimx64.efi")
    assert _uefi_boot.image_bootloader(str(root)) is None  # no grub beside it
    touch(efi / "redhat/grubx64.efi")
    assert _uefi_boot.image_bootloader(str(root)) == (
        "usr/lib/bootupd/updates/EFI/redhat/shimx64.efi", "usr/lib/bootupd/updates/EFI/redhat/grubx64.efi")
    newer = tmp_path / "fcos"
    touch(newer / "usr/lib/efi/shim/15.8-3/EFI/fedora/shimx64.efi")
    touch(newer / "usr/lib/efi/grub2/2.12-1/EFI/fedora/grubx64.efi")
    assert _uefi_boot.image_bootloader(str(newer)) == (
        "usr/lib/efi/shim/15.8-3/EFI/fedora/shimx64.efi", "usr/lib/efi/grub2/2.12-1/EFI/fedora/grubx64.efi")


@pytest.mark.parametrize("path, kept", [
    ("usr/lib/bootupd/updates/EFI/redhat/shimx64.efi", True),
    ("usr/lib/bootupd/updates/EFI/redhat/grubx64.efi", True),
    ("usr/lib/bootupd/updates/EFI/BOOT/BOOTX64.EFI", True),
    ("usr/lib/bootupd/updates/EFI/redhat/mmx64.efi", False),
    ("usr/lib/efi/shim/15.8-3/EFI/fedora/shimx64.efi", True),
    ("boot/efi/EFI/fedora/grubx64.efi", True),
    ("usr/share/doc/shim/shimx64.efi", False),
])
def test_the_boot_test_keeps_the_images_efi_binaries_only_for_secure_boot(path: str, kept: bool) -> None:
    assert _image_boot_test.keep_for_boot_test(path, secure_boot=True) is kept
    assert _image_boot_test.keep_for_boot_test(path) is False


def test_grub_prefix_is_grubs_embedded_one_else_its_vendor_directory() -> None:
    module = b"\x03\x00\x00\x00\x18\x00\x00\x00/EFI/redhat\x00\x00\x00\x00"
    assert _uefi_boot.grub_prefix("/x/grubx64.efi", data=b"MZ..." + module + b"...") == "/EFI/redhat"
    assert _uefi_boot.grub_prefix("/boot/efi/EFI/fedora/grubx64.efi", data=b"MZ") == "/EFI/fedora"
    assert _uefi_boot.grub_prefix("/srv/grubx64.efi", data=b"MZ") == "/EFI/BOOT"
    if os.path.isfile(DEBIAN_GRUB):
        assert _uefi_boot.grub_prefix(DEBIAN_GRUB) == "/EFI/debian"


# ---------------------------------------------------------------- ESP, vars, machine


def test_esp_layout_puts_grub_cfg_in_grubs_prefix_and_beside_it() -> None:
    layout = _uefi_boot.esp_layout("/s/shim", "/s/grub", "/EFI/debian", "/r/vmlinuz", "/w/initrd",
                                   "console=ttyS0 rdinit=/init")
    paths = [dest for dest, _src in layout]
    assert paths == ["EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grubx64.efi", "EFI/BOOT/grub.cfg", "EFI/debian/grub.cfg",
                     "kmod-layering/vmlinuz", "kmod-layering/initramfs.img"]
    assert dict(layout)["EFI/BOOT/BOOTX64.EFI"] == "/s/shim" and dict(layout)["kmod-layering/vmlinuz"] == "/r/vmlinuz"
    cfg = dict(layout)["EFI/debian/grub.cfg"].decode()
    assert "linux /kmod-layering/vmlinuz console=ttyS0 rdinit=/init\n" in cfg
    assert "initrd /kmod-layering/initramfs.img\nboot\n" in cfg
    # grub in EFI/BOOT itself: one grub.cfg
    assert [d for d, _s in _uefi_boot.esp_layout("a", "b", "/EFI/BOOT", "k", "i", "")].count("EFI/BOOT/grub.cfg") == 1


def test_esp_commands_make_a_fat_image_with_every_directory_then_copy() -> None:
    layout = _uefi_boot.esp_layout("/s/shim", "/s/grub", "/EFI/redhat", "/r/vmlinuz", "/w/initrd", "")
    staged = {"EFI/BOOT/grub.cfg": "/w/a.cfg", "EFI/redhat/grub.cfg": "/w/b.cfg"}
    commands = _uefi_boot.esp_commands("/w/esp.img", layout, staged, 65536)
    assert commands[0] == ["mkfs.fat", "-C", "-F", "32", "-n", "KMODESP", "/w/esp.img", "65536"]
    assert commands[1] == ["mmd", "-i", "/w/esp.img", "::/EFI", "::/EFI/BOOT", "::/EFI/redhat", "::/kmod-layering"]
    assert ["mcopy", "-i", "/w/esp.img", "-o", "/s/shim", "::/EFI/BOOT/BOOTX64.EFI"] in commands
    assert ["mcopy", "-i", "/w/esp.img", "-o", "/w/b.cfg", "::/EFI/redhat/grub.cfg"] in commands
    assert len(commands) == 2 + len(layout)
    assert _uefi_boot.esp_size_kib([10 << 20]) == 64 * 1024
    assert _uefi_boot.esp_size_kib([100 << 20]) == (110 << 20) // 1024 + 16 * 1024


def test_vars_command_enrols_each_certificate_as_a_mok_in_a_copy() -> None:
    assert _uefi_boot.vars_command("virt-fw-vars", "/usr/share/OVMF/VARS.fd", "/w/vars.fd", []) is None
    assert _uefi_boot.vars_command("/venv/bin/virt-fw-vars", "/usr/share/OVMF/VARS.fd", "/w/vars.fd",
                                   ["/w/mok-0.der", "/w/mok-1.der"]) == [
        "/venv/bin/virt-fw-vars", "-i", "/usr/share/OVMF/VARS.fd", "-o", "/w/vars.fd",
        "--add-mok", "605dab50-e046-4300-abb6-3dd810dd8b23", "/w/mok-0.der",
        "--add-mok", "605dab50-e046-4300-abb6-3dd810dd8b23", "/w/mok-1.der"]


def test_qemu_args_are_q35_with_smm_secure_pflash_and_the_esp() -> None:
    args = _uefi_boot.qemu_args("/fw/CODE.fd", "/w/vars.fd", "/w/esp.img")
    assert args[:4] == ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd" in args
    assert "if=pflash,format=raw,unit=1,file=/w/vars.fd" in args
    assert "if=none,id=esp,format=raw,file=/w/esp.img" in args
    command = _qemu_boot.qemu_command("qemu-system-x86_64", "kvm", 1024, args)
    assert command[:5] == ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host"] and command[-len(args):] == args


class FakeRun:
    def __init__(self, returncode: int = 0, stderr: bytes = b"") -> None:
        self.returncode, self.stderr, self.calls = returncode, stderr, []

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        self.calls.append(argv)
        return subprocess.CompletedProcess(argv, self.returncode, b"", self.stderr)


def test_kvm_without_smm_falls_back_to_tcg_and_says_why(tmp_path: Path) -> None:
    device = touch(tmp_path / "kvm")
    no_smm = FakeRun(1, b"qemu-system-x86_64: warning: host doesn't support requested feature\n"
                        b"qemu-system-x86_64: System Management Mode not supported by this hypervisor.\n")
    usable, reason = _uefi_boot.probe_kvm("qemu", True, runner=no_smm, kvm_device=str(device))
    assert usable is False and reason.startswith("KVM here has no SMM (System Management Mode)")
    assert no_smm.calls[0][:5] == ["qemu", "-accel", "kvm", "-machine", "q35,smm=on"]
    assert _uefi_boot.probe_kvm("qemu", False, runner=FakeRun(0), kvm_device=str(device)) == (True, None)
    assert _uefi_boot.probe_kvm("qemu", False, runner=FakeRun(0), kvm_device=str(tmp_path / "no")) == (
        False, "no %s on this host" % (tmp_path / "no"))
    asked = []
    assert _uefi_boot.choose_accelerator("tcg", True, asked.append) == ("tcg", None)
    assert asked == []
    assert _uefi_boot.choose_accelerator("auto", False, lambda smm: (True, None)) == ("kvm", None)
    accel, note = _uefi_boot.choose_accelerator("kvm", True, lambda smm: (False, "KVM here has no SMM"))
    assert accel == "tcg" and note == "KVM here has no SMM: booted under TCG instead of KVM"


def test_setup_writes_the_esp_and_the_vars_and_keys_the_cache_on_what_it_uses(tmp_path: Path) -> None:
    code, variables = touch(tmp_path / "fw/CODE.fd", b"code"), touch(tmp_path / "fw/VARS.fd", b"vars")
    shim, grub = touch(tmp_path / "c/shimx64.efi", b"shim"), touch(tmp_path / "c/grubx64.efi", b"grub")
    der, _skid = make_cert("fleet signing")
    touch(tmp_path / "fleet.der", der)
    setup = _uefi_boot.SecureBootSetup([str(tmp_path / "fleet.der")], str(code), str(variables), str(shim),
                                       str(grub), virt_fw_vars="/venv/bin/virt-fw-vars")
    run = FakeRun()
    work = tmp_path / "work"
    work.mkdir()
    kernel, initrd = str(touch(tmp_path / "r/vmlinuz")), str(touch(work / "initrd"))
    args = setup.prepare(str(work), str(tmp_path / "rootfs"), kernel, initrd, "rdinit=/init", runner=run)
    assert setup.shim_source == "controller:%s" % shim and setup.prefix == "/EFI/BOOT"
    assert run.calls[0][0] == "mkfs.fat" and run.calls[-1][:5] == [
        "/venv/bin/virt-fw-vars", "-i", str(variables), "-o", str(work / "vars.fd")]
    assert (work / "mok-0.der").read_bytes() == der
    assert "file=%s" % (work / "vars.fd") in " ".join(args)
    key = setup.cache_key()
    assert key["certificates"] == [hashlib.sha256(der).hexdigest()]
    # The image's own shim and grub win (auto) and say so.
    own = tmp_path / "rootfs/usr/lib/bootupd/updates/EFI/redhat"
    touch(own / "shimx64.efi")
    touch(own / "grubx64.efi", b"\x03\x00\x00\x00\x18\x00\x00\x00/EFI/redhat\x00")
    setup.prepare(str(work), str(tmp_path / "rootfs"), kernel, initrd, "", runner=FakeRun())
    assert setup.to_dict()["shim"] == "image:/usr/lib/bootupd/updates/EFI/redhat/shimx64.efi"
    assert setup.to_dict()["grub_prefix"] == "/EFI/redhat"
    plain = _uefi_boot.SecureBootSetup([], str(code), str(variables), str(shim), str(grub), bootloader="controller")
    plain.prepare(str(work), str(tmp_path / "rootfs"), kernel, initrd, "", runner=FakeRun())
    assert plain.shim_source.startswith("controller:") and (work / "vars.fd").read_bytes() == b"vars"
    assert plain.cache_key() != key


def test_the_verdict_cache_key_holds_the_secure_boot_settings(tmp_path: Path) -> None:
    digest = "sha256:" + "c" * 64
    plain = _image_boot_test.cache_file(str(tmp_path), digest, ["kmodlab_core"])
    fleet = {"certificates": ["a" * 64], "firmware": ["1", "2"], "bootloader": "auto"}
    secure = _image_boot_test.cache_file(str(tmp_path), digest, ["kmodlab_core"], fleet)
    other = _image_boot_test.cache_file(str(tmp_path), digest, ["kmodlab_core"], dict(fleet, certificates=["b" * 64]))
    assert len({plain, secure, other}) == 3
    assert secure == _image_boot_test.cache_file(str(tmp_path), digest, ["kmodlab_core"], dict(fleet))
    # Without Secure Boot the key is what it was: earlier verdicts still count.
    assert plain == _image_boot_test.cache_file(str(tmp_path), digest, ["kmodlab_core"], None)


# ---------------------------------------------------------------- the console


# /proc/keys' description of Debian's CA, long enough to need a name of its own here.
DEBIAN_CA_KEY = "Debian Secure Boot CA: 6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1: X509.rsa bb419ea1 []"

SB_CONSOLE = f"""\x1b[2J\x1b[01;01HBdsDxe: starting Boot0001 "UEFI Non-Block Boot Device" from PciRoot(0x0)/Pci(0x1,0x0)
Welcome to GRUB!
KMOD_LAYERING:GRUB loading the kernel
KMOD_LAYERING:BEGIN
KMOD_LAYERING:KERNEL {KVER}
KMOD_LAYERING:MODPROBE kmod
KMOD_LAYERING:EFI yes
KMOD_LAYERING:EFIVAR SecureBoot  6 0 0 0 1
KMOD_LAYERING:EFIVAR SetupMode  6 0 0 0 0
KMOD_LAYERING:LOCKDOWN none [integrity] confidentiality
KMOD_LAYERING:SIGENFORCE Y
KMOD_LAYERING:KEY 04b8c1ea I------     1 perm 1f010000     0     0 asymmetri {DEBIAN_CA_KEY}
KMOD_LAYERING:KEY 178573dd I------     2 perm 1f0b0000     0     0 keyring   .machine: 2
KMOD_LAYERING:KEY 174feb2c I------     1 perm 082f0000     0     0 keyring   .fs-verity: empty
KMOD_LAYERING:KEY 21774b1f I------     1 perm 1f010000     0     0 asymmetri fleet signing: a6e4308dacbaad242cee2debed456e45fd44da1a: X509.rsa fd44da1a []
KMOD_LAYERING:SBLOG <5>[    0.000000] Kernel is locked down from EFI Secure Boot; see man kernel_lockdown.7
KMOD_LAYERING:LOAD kmodlab_core 1
KMOD_LAYERING:ERR kmodlab_core modprobe: ERROR: could not insert 'kmodlab_core': Key was rejected by service
KMOD_LAYERING:KMSG kmodlab_core <5>[    1.920389] Loading of unsigned module is rejected
KMOD_LAYERING:KMSG kmodlab_core <6>[    1.920400] some chatter
KMOD_LAYERING:LOAD kmodlab_other 1
KMOD_LAYERING:ERR kmodlab_other modprobe: ERROR: could not insert 'kmodlab_other': Key was rejected by service
KMOD_LAYERING:KMSG kmodlab_other <5>[    1.930000] Loading of module with unavailable key is rejected
KMOD_LAYERING:LOAD loop 0
KMOD_LAYERING:MOD loop 32768 0 - Live 0xffffffffc0000000
KMOD_LAYERING:MOD efivarfs 24576 1 - Live 0xffffffffc0534000
KMOD_LAYERING:END
"""


def test_parse_console_reads_the_security_report() -> None:
    parsed = _qemu_boot.parse_console(SB_CONSOLE)
    assert parsed["grub"] is True and parsed["efi"] is True
    assert parsed["efivars"] == {"SecureBoot": 1, "SetupMode": 0}
    assert parsed["kmsg"]["kmodlab_core"] == [(5, "Loading of unsigned module is rejected"), (6, "some chatter")]
    report = _qemu_boot.security_report(parsed)
    assert report == {
        "state": "enabled", "lockdown": "integrity", "sig_enforce": True, "enforcing": True, "setup_mode": 0,
        "trusted_keys": ["Debian Secure Boot CA: 6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1",
                         "fleet signing: a6e4308dacbaad242cee2debed456e45fd44da1a"],
        "keyrings": {".machine": 2, ".fs-verity": None},
        "kernel_messages": ["Kernel is locked down from EFI Secure Boot; see man kernel_lockdown.7"]}
    direct = _qemu_boot.security_report(_qemu_boot.parse_console(
        "KMOD_LAYERING:BEGIN\nKMOD_LAYERING:EFI no\nKMOD_LAYERING:LOCKDOWN [none] integrity confidentiality\n"
        "KMOD_LAYERING:SIGENFORCE N\n"))
    assert (direct["state"], direct["lockdown"], direct["sig_enforce"], direct["enforcing"]) == (
        "unsupported", "none", False, False)


def judged(console: str, requested: list[str], secure_boot: bool = True) -> _qemu_boot.BootResult:
    result = _qemu_boot.BootResult("qemu", KVER)
    result.requested = requested
    result.secure_boot_expected = secure_boot
    _qemu_boot.judge(result, _qemu_boot.parse_console(console))
    return result


def test_judge_names_signature_refusals_in_the_kernels_words() -> None:
    result = judged(SB_CONSOLE, ["kmodlab_core", "kmodlab_other", "loop"])
    assert result.refusals == {
        "kmodlab_core": {"reason": "unsigned", "kernel": ["Loading of unsigned module is rejected"],
                         "modprobe": ["modprobe: ERROR: could not insert 'kmodlab_core': Key was rejected by service"]},
        "kmodlab_other": {"reason": "untrusted key", "kernel": ["Loading of module with unavailable key is rejected"],
                          "modprobe": ["modprobe: ERROR: could not insert 'kmodlab_other': Key was rejected by "
                                       "service"]}}
    assert result.failures[0] == ("module kmodlab_core not loaded (modprobe exit 1): modprobe: ERROR: could not "
                                  "insert 'kmodlab_core': Key was rejected by service; Loading of unsigned module "
                                  "is rejected")  # the info-level chatter is left out


def test_a_secure_boot_boot_without_secure_boot_fails() -> None:
    console = SB_CONSOLE.replace("SecureBoot  6 0 0 0 1", "SecureBoot  6 0 0 0 0")
    result = judged(console, ["loop"])
    assert result.failures == [
        "Secure Boot was asked for but the firmware booted without it (SecureBoot variable: 0, lockdown: integrity): "
        "the firmware's variable store (secure_boot_firmware.vars) must have Secure Boot keys enrolled and Secure "
        "Boot on (OVMF_VARS_4M.ms.fd, OVMF_VARS.secboot.fd)"]
    assert judged(console, ["loop"], secure_boot=False).failures == []


def test_a_boot_chain_error_stops_the_boot_before_the_kernel() -> None:
    stuck = ("BdsDxe: loading Boot0001 \"UEFI Non-Block Boot Device\"\r\nWelcome to GRUB!\r\n"
             "\x1b[0merror: bad shim signature.\r\nerror: you need to load the kernel first.\r\n")
    assert _qemu_boot.chain_failure(stuck) == "error: bad shim signature."
    assert _qemu_boot.chain_failure(SB_CONSOLE) is None
    assert _qemu_boot.chain_failure("BdsDxe: starting Boot0001\nWelcome to GRUB!\n") is None
    result = _qemu_boot.BootResult("qemu", KVER)
    result.chain_failure = "error: bad shim signature."
    _qemu_boot.judge(result, _qemu_boot.parse_console(stuck))
    assert result.failures == ["the boot stopped before the kernel started /init (firmware, shim or grub): "
                               "error: bad shim signature."]


def test_the_verdict_says_which_module_was_refused_and_what_to_do() -> None:
    image = "registry.example.com/kmods@sha256:" + "d" * 64
    result = judged(SB_CONSOLE, ["kmodlab_core", "kmodlab_other", "loop"]).to_dict()
    result["secure_boot"] = _image_boot_test.secure_boot_result(None, result["security"], result["refusals"])
    result["secure_boot"]["requested"] = True
    ok, msg = _image_boot_test.verdict(result, image)
    assert ok is False
    assert msg.startswith(
        f"Boot test of {image} with Secure Boot: Secure Boot refused modules kmodlab_core, kmodlab_other. "
        "Module kmodlab_core is unsigned (kernel: Loading of unsigned module is rejected; modprobe: Key was "
        "rejected by service): sign it with the fleet's key (kmod_signing_key_file, kmod_signing_cert_file) "
        "whose certificate the nodes have enrolled as a Machine Owner Key. Module kmodlab_other is signed with a "
        "key the kernel does not trust (kernel: Loading of module with unavailable key is rejected; modprobe: Key "
        "was rejected by service): sign it with the key whose certificate the nodes have enrolled, or enrol the "
        "certificate it is signed with as a Machine Owner Key on the nodes (mokutil --import, see "
        "docs/user-guide.md) and list it in secure_boot_certificates. No certificate was enrolled in the test "
        "machine (secure_boot_certificates is empty) (module kmodlab_core not loaded"), msg


def test_secure_boot_result_says_whether_each_certificate_is_trusted(tmp_path: Path) -> None:
    class Setup:
        def to_dict(self) -> dict[str, Any]:
            return {"firmware": {"code": "c", "vars": "v"}, "shim": "controller:s", "grub": "controller:g",
                    "grub_prefix": "/EFI/debian", "certificates": [
                        {"path": "a.pem", "sha256": "1", "subject": "fleet signing",
                         "key_description": "fleet signing: a6e4308dacbaad242cee2debed456e45fd44da1a"},
                        {"path": "b.pem", "sha256": "2", "subject": "old", "key_description": "old: 00"}]}

    security = _qemu_boot.security_report(_qemu_boot.parse_console(SB_CONSOLE))
    result = _image_boot_test.secure_boot_result(Setup(), security, {})
    assert result["requested"] is True and result["state"] == "enabled"
    assert [c["trusted"] for c in result["certificates"]] == [True, False]
    assert _image_boot_test.secure_boot_result(None, None, {})["requested"] is False


def test_the_init_script_reports_with_the_collections_markers() -> None:
    script = _qemu_boot.INIT_SCRIPT
    assert "M=KMOD_LAYERING:" in script and "KMODLAB" not in script
    for marker in ("EFI yes", "EFIVAR $var", "LOCKDOWN", "SIGENFORCE", "KEY $line", "SBLOG $line", "KMSG $mod"):
        assert "${M}" + marker in script


FAKE_QEMU = """#!/bin/sh
# A qemu whose KVM cannot run the guest; under TCG /init reports and powers off.
case " $* " in *" -accel kvm "*) echo "kvm.c: Assertion failed" >&2; exit 134;; esac
echo "KMOD_LAYERING:BEGIN"
echo "KMOD_LAYERING:KERNEL %s"
echo "KMOD_LAYERING:EFI no"
echo "KMOD_LAYERING:END"
""" % KVER


def test_a_kvm_boot_that_never_reaches_init_is_booted_again_under_tcg(tmp_path: Path) -> None:
    if not os.path.isfile(_qemu_boot.HOST_BUSYBOX):
        pytest.skip("no static busybox on this host")
    qemu = touch(tmp_path / "bin/qemu-fake", FAKE_QEMU.encode())
    qemu.chmod(0o755)
    moddir = tmp_path / "root/usr/lib/modules" / KVER
    touch(moddir / "vmlinuz")
    touch(moddir / "modules.dep", b"")
    result = _qemu_boot.boot(str(tmp_path / "root"), timeout=30, qemu=str(qemu), accelerator="kvm",
                             kvm_probe=lambda smm: (True, None))
    assert result.ok, result.failures
    assert result.accelerator == "tcg"
    assert result.accelerator_note.startswith("KVM did not bring the kernel to /init (qemu exited after ")
    assert result.accelerator_note.endswith("kvm.c: Assertion failed): booted under TCG instead of KVM")
    assert result.security["state"] == "unsupported"
