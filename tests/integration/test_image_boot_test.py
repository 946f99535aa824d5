"""The boot test gate (ocp.kmod_layering.image_boot_test) on lab images built
with the product's Containerfile and pushed to the lab registry: the image's
own kernel boots in qemu (the product's _qemu_boot; lab nodes boot their own
way, kmodlab.nodeboot) and modprobes every module.

Three images, three boots in all (one each; the rerun is served from the
verdict cache): kmodlab_core + kmodlab_dep pass; kmodlab_panic with
panic_on_load=1 (modprobe.d) panics the kernel, and the panic is in the
console tail; kmodlab_noload (init returns -ENODEV) fails naming the module.

With Secure Boot (secure_boot: true: OVMF's Secure Boot firmware, shim, grub,
the image's Debian-signed kernel; about 9 s a boot under TCG), three more
boots of kmodlab_core + kmodlab_dep, a test certificate enrolled as a MOK:
signed with the enrolled key (loads, the kernel is locked down), unsigned
(the image that passed without Secure Boot: its cached verdict is not
reused, and the kernel refuses it) and signed with another key (refused).
The keys and certificates are made here with openssl; the modules are signed
in the DTK stage with the DTK's own scripts/sign-file (a build_command)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kmodlab import layered, state

TOP = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.lab, pytest.mark.qemu]

PLAY = """\
- name: Boot-test images
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Boot test
      ocp.kmod_layering.image_boot_test:
        image: "{{ item.image }}"
        modules: "{{ item.modules }}"
        auth_file: "{{ auth_file }}"
        ca_path: "{{ ca_path }}"
        results_dir: "{{ results_dir }}"
        boot_timeout: 240
        secure_boot: "{{ item.secure_boot | default(false) }}"
        secure_boot_certificates: "{{ item.certificates | default([]) }}"
        accelerator: "{{ item.accelerator | default('tcg') }}"
      loop: "{{ images }}"
      ignore_errors: true
"""


def boot_tests(tmp: Path, lab: state.LabState, images: list[dict[str, Any]], *args: str) -> list[dict[str, Any]]:
    play = tmp / "boot.yml"
    play.write_text(PLAY)
    extra = {"images": images, "auth_file": lab.registry["auth_file"], "ca_path": str(lab.ca_file),
             "results_dir": str(tmp / "boot-tests")}
    proc = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", str(play), "-e", json.dumps(extra), *args],
        cwd=TOP, capture_output=True, text=True, timeout=900, check=False,
        env=dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                 ANSIBLE_PYTHON_INTERPRETER=sys.executable))
    try:
        doc, _end = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{"):])
    except ValueError as exc:
        raise AssertionError(f"no JSON from ansible-playbook ({exc}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    (task,) = [t for play_ in doc["plays"] for t in play_["tasks"] if t["task"]["name"] == "Boot test"]
    return task["hosts"]["localhost"]["results"]


@pytest.fixture(scope="module")
def verdicts(lab: state.LabState, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    release = lab.releases[0]["version"]
    tmp = tmp_path_factory.mktemp("boot-test")
    images = [
        {"image": layered.build_layered_image(lab, release, ["kmodlab_core", "kmodlab_dep"]),
         "modules": ["kmodlab_core", "kmodlab_dep"]},
        {"image": layered.build_layered_image(
            lab, release, [layered.fixture("kmodlab_panic", options="panic_on_load=1")]),
         "modules": ["kmodlab_panic"]},
        {"image": layered.build_layered_image(lab, release, ["kmodlab_noload"]), "modules": ["kmodlab_noload"]},
    ]
    first = boot_tests(tmp, lab, images)
    # Again: the passing image from the cache; the failing ones are not kept,
    # so check mode (which never boots) shows what a rerun would not redo.
    again = boot_tests(tmp, lab, images, "--check")
    return {"tmp": tmp, "images": images, "first": first, "again": again, "kernel": lab.releases[0]["kernel"]}


def test_a_good_image_boots_and_loads_every_module(verdicts: dict[str, Any]) -> None:
    ok = verdicts["first"][0]
    assert ok["ok"] is True and ok.get("failed") is not True, ok.get("msg")
    assert ok["booted"] is True and ok["cached"] is False
    assert ok["kernel"] == verdicts["kernel"]
    assert {"kmodlab_core", "kmodlab_dep"} <= set(ok["loaded"])
    assert ok["digest"] == verdicts["images"][0]["image"].split("@")[1]
    assert ok["tools"]["modprobe"].startswith("image:")
    print(f"\nboot test: {ok['duration']:.1f}s in qemu, {ok['layers']} layers, {ok['files_unpacked']} files "
          f"unpacked, {ok['bytes_fetched']} bytes fetched")


def test_a_passing_verdict_is_cached_by_digest(verdicts: dict[str, Any]) -> None:
    cached = verdicts["again"][0]
    assert cached["ok"] is True and cached["cached"] is True and cached["booted"] is False
    assert cached["bytes_fetched"] == 0
    assert cached["msg"].endswith("(cached verdict)")
    for failing in verdicts["again"][1:]:
        assert failing["cached"] is False and failing["booted"] is False


def test_a_kernel_panic_stops_with_the_panic_in_the_console(verdicts: dict[str, Any]) -> None:
    panic = verdicts["first"][1]
    assert panic["failed"] is True and panic["ok"] is False and panic["panic"] is True
    image = verdicts["images"][1]["image"]
    assert panic["msg"].startswith(f"Boot test of {image}: the kernel panicked (kernel panic: Kernel panic - "
                                   "not syncing: kmodlab_panic: panic_on_load=1")
    assert "Kernel panic - not syncing: kmodlab_panic: panic_on_load=1, panicking as asked" in panic["console_tail"]
    assert Path(panic["console_log"]).read_text().count("Kernel panic") >= 1
    assert not Path(panic["console_log"].replace(".console.log", ".json")).exists()


def test_a_module_that_does_not_load_is_named(verdicts: dict[str, Any]) -> None:
    noload = verdicts["first"][2]
    assert noload["failed"] is True and noload["ok"] is False and noload["panic"] is False
    image = verdicts["images"][2]["image"]
    assert noload["msg"].startswith(f"Boot test of {image}: module kmodlab_noload did not load (module "
                                    "kmodlab_noload not loaded (modprobe exit 1): ")
    assert "No such device" in noload["msg"]
    assert "kmodlab_noload" not in noload["loaded"]
    assert "KMOD_LAYERING:LOAD kmodlab_noload 1" in noload["console_tail"]


# ---------------------------------------------------------------- Secure Boot

CERT_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
x509_extensions = ext
[dn]
CN = unused
[ext]
basicConstraints = critical,CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def signing_pair(directory: Path, name: str) -> dict[str, Path]:
    """A module signing key and its certificate (PEM, DER), as the fleet would have."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "x509.cnf").write_text(CERT_CONFIG)
    key, pem, der = directory / f"{name}.key", directory / f"{name}.pem", directory / f"{name}.der"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30",
                    "-config", str(directory / "x509.cnf"), "-subj", f"/CN=boot test {name}",
                    "-keyout", str(key), "-out", str(pem)], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-in", str(pem), "-outform", "DER", "-out", str(der)], check=True)
    return {"key": key, "pem": pem, "der": der}


def signed_sources(tmp: Path, kernel: str, pair: dict[str, Path], names: list[str]) -> list[layered.KmodSource]:
    """The fixture modules, built and then signed in the DTK stage with the
    DTK's scripts/sign-file (the key and certificate are in the builder
    stage's sources only, never in the layered image)."""
    sign = f"/lib/modules/{kernel}/build/scripts/sign-file"
    sources = []
    for name in names:
        src = tmp / pair["key"].stem / name
        shutil.copytree(layered.FIXTURE_KMODS / name, src)
        shutil.copy(pair["key"], src / "signing.key")
        shutil.copy(pair["der"], src / "signing.der")
        sources.append(layered.KmodSource(
            name=name, path=src,
            build_command=(f'make -C /lib/modules/{kernel}/build M="$PWD" modules '
                           f"&& for ko in *.ko; do {sign} sha256 signing.key signing.der \"$ko\" || exit 1; done"
                           )))
    return sources


@pytest.fixture(scope="module")
def secure_verdicts(lab: state.LabState, verdicts: dict[str, Any]) -> dict[str, Any]:
    release = lab.releases[0]["version"]
    tmp = verdicts["tmp"]
    fleet = signing_pair(tmp / "keys", "fleet")
    other = signing_pair(tmp / "keys", "other")
    names = ["kmodlab_core", "kmodlab_dep"]
    enrolled = [str(fleet["pem"])]
    images = [
        {"image": layered.build_layered_image(lab, release, signed_sources(tmp, verdicts["kernel"], fleet, names)),
         "modules": names, "secure_boot": True, "certificates": enrolled, "accelerator": "auto"},
        # The unsigned image whose verdict without Secure Boot is cached.
        dict(verdicts["images"][0], secure_boot=True, certificates=enrolled, accelerator="auto"),
        {"image": layered.build_layered_image(lab, release, signed_sources(tmp, verdicts["kernel"], other, names)),
         "modules": names, "secure_boot": True, "certificates": enrolled, "accelerator": "auto"},
    ]
    first = boot_tests(tmp, lab, images)
    again = boot_tests(tmp, lab, images, "--check")
    fingerprint = hashlib.sha256(fleet["der"].read_bytes()).hexdigest()
    return {"images": images, "first": first, "again": again, "fingerprint": fingerprint,
            "fleet": fleet, "kernel": verdicts["kernel"]}


def _assert_enforced(result: dict[str, Any]) -> None:
    sb = result["secure_boot"]
    assert sb["requested"] is True
    assert sb["state"] == "enabled" and sb["lockdown"] == "integrity" and sb["sig_enforce"] is True
    assert sb["enforcing"] is True
    assert "Kernel is locked down from EFI Secure Boot; see man kernel_lockdown.7" in sb["kernel_messages"]
    assert sb["keyrings"][".machine"] == 2  # shim's vendor certificate (Debian's CA) + the enrolled MOK
    # The lab's image carries no shim or grub: the controller's (Debian's) boot its Debian-signed kernel.
    assert sb["shim"] == "controller:/usr/lib/shim/shimx64.efi.signed"
    assert sb["grub"] == "controller:/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
    assert sb["grub_prefix"] == "/EFI/debian"
    assert sb["firmware"]["code"].endswith(".secboot.fd")
    # KVM only when it can run the firmware (SMM); otherwise TCG, and the result says why.
    if result["accelerator"] == "tcg":
        assert "booted under TCG instead of KVM" in result["accelerator_note"]


def test_secure_boot_loads_modules_signed_with_the_enrolled_key(secure_verdicts: dict[str, Any]) -> None:
    ok = secure_verdicts["first"][0]
    assert ok["ok"] is True and ok.get("failed") is not True, ok.get("msg")
    assert ok["booted"] is True and ok["kernel"] == secure_verdicts["kernel"]
    assert {"kmodlab_core", "kmodlab_dep"} <= set(ok["loaded"])
    assert ok["msg"].endswith("booted with Secure Boot and loaded kmodlab_core, kmodlab_dep in %.1fs" % ok["duration"])
    _assert_enforced(ok)
    (cert,) = ok["secure_boot"]["certificates"]
    assert cert["sha256"] == secure_verdicts["fingerprint"] and cert["subject"] == "boot test fleet"
    assert cert["trusted"] is True and cert["key_description"] in ok["secure_boot"]["trusted_keys"]
    assert ok["secure_boot"]["refused"] == {}
    print(f"\nSecure Boot boot test: {ok['duration']:.1f}s in qemu ({ok['accelerator']}: "
          f"{ok['accelerator_note']})")


def test_secure_boot_refuses_an_unsigned_module(secure_verdicts: dict[str, Any]) -> None:
    refused = secure_verdicts["first"][1]
    # The same digest passed without Secure Boot (cached): that verdict is not this one.
    assert refused["booted"] is True and refused["cached"] is False
    assert refused["failed"] is True and refused["ok"] is False and refused["panic"] is False
    _assert_enforced(refused)
    core = refused["secure_boot"]["refused"]["kmodlab_core"]
    assert core["reason"] == "unsigned"
    assert core["kernel"] == ["Loading of unsigned module is rejected"]
    assert any(line.endswith("Key was rejected by service") for line in core["modprobe"])
    assert "kmodlab_core" not in refused["loaded"] and "kmodlab_dep" not in refused["loaded"]
    image = secure_verdicts["images"][1]["image"]
    assert refused["msg"].startswith(f"Boot test of {image} with Secure Boot: Secure Boot refused modules "
                                     "kmodlab_core, kmodlab_dep. Module kmodlab_core is unsigned (kernel: Loading "
                                     "of unsigned module is rejected; modprobe: Key was rejected by service): "
                                     "sign it with the fleet's key"), refused["msg"]


def test_secure_boot_refuses_a_module_signed_by_another_key(secure_verdicts: dict[str, Any]) -> None:
    refused = secure_verdicts["first"][2]
    assert refused["failed"] is True and refused["booted"] is True
    _assert_enforced(refused)
    core = refused["secure_boot"]["refused"]["kmodlab_core"]
    assert core["reason"] == "untrusted key"
    assert core["kernel"] == ["Loading of module with unavailable key is rejected"]
    assert any(line.endswith("Key was rejected by service") for line in core["modprobe"])
    assert "is signed with a key the kernel does not trust" in refused["msg"]
    assert "enrol the certificate it is signed with as a Machine Owner Key" in refused["msg"]


def test_a_secure_boot_verdict_is_cached_with_its_certificates(secure_verdicts: dict[str, Any]) -> None:
    cached, unsigned, other = secure_verdicts["again"]
    assert cached["ok"] is True and cached["cached"] is True and cached["booted"] is False
    assert cached["secure_boot"]["certificates"][0]["sha256"] == secure_verdicts["fingerprint"]
    assert cached["msg"].endswith("(cached verdict)") and "with Secure Boot" in cached["msg"]
    for failing in (unsigned, other):
        assert failing["cached"] is False and failing["booted"] is False
