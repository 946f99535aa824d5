"""Secure Boot lab nodes (kmodlab.secureboot, nodeboot, fastboot, node).

One lab layered image (kmodlab_core, kmodlab_dep, kmodlab_panic) whose
modules are signed in the release's DTK with the kernel's own
`scripts/sign-file` (reached through /lib/modules/<kver>/build, as the
product's build does; the keys enter as build secrets): kmodlab_core with
the lab's fleet key, kmodlab_dep with the "other" key, kmodlab_panic not at
all. Its nodes boot for real through OVMF -> shim -> grub -> the image's
Debian-signed kernel:

- fleet certificate enrolled as a MOK: the kernel is locked down,
  kmodlab_core loads (taint O only), kmodlab_dep and kmodlab_panic are
  refused with the kernel's words (unavailable key / unsigned);
- nothing enrolled: kmodlab_core is refused too;
- fast mode says the same of the same image, both ways, and without
  Secure Boot too (everything loads, tainted OE).

Then a fast-mode lab cluster with a Secure Boot worker rolls the image out:
the node boots, the refused modules are missing, boots.json says so, and
the debug pods answer the contract's commands (mokutil, grep of lockdown /
sig_enforce / tainted / /proc/keys / taint, modinfo).

Boots: 2 Secure Boot qemu boots (~9 s each under TCG) and 1 plain one (~3 s).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from kubernetes import config as k8s_config
from kubernetes import dynamic

from kmodlab import cluster, fastboot, groundtruth, layered, nodeboot, pki, secureboot, state
from kmodlab.state import LabState

pytestmark = pytest.mark.skipif(bool(secureboot.missing_parts()), reason=f"needs {secureboot.missing_parts()}")

MODULES = ("kmodlab_core", "kmodlab_dep", "kmodlab_panic")
SIGNED_WITH = {"kmodlab_core": "fleet", "kmodlab_dep": "other"}  # kmodlab_panic: unsigned
MC_API = "machineconfiguration.openshift.io/v1"
WAIT = 300.0


# ---------------------------------------------------------------- no lab needed


def test_split_signature_reads_the_kernel_trailer() -> None:
    """include/linux/module_signature.h: content, PKCS#7, the 12-byte
    struct (id_type 2 = PKCS#7, big-endian sig_len), the marker."""
    content, pkcs7 = b"\x7fELF module bytes", b"0\x82pkcs7-bytes"
    trailer = bytes([0, 0, 2, 0, 0, 0, 0, 0]) + len(pkcs7).to_bytes(4, "big") + fastboot.MODULE_SIG_STRING
    body, signature = fastboot.split_signature(content + pkcs7 + trailer)
    assert body == content and signature is not None and signature.pkcs7 == pkcs7
    assert fastboot.split_signature(content) == (content, None)
    assert fastboot.signature_verdict(content, []) == "unsigned"


def test_proc_keys_lines_have_the_kernel_format() -> None:
    key = secureboot.TrustedKey(cn="Debian Secure Boot CA", skid="6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1")
    lines = secureboot.proc_keys_lines({".machine": [key], ".platform": []})
    asym = next(line for line in lines if "asymmetri" in line)
    assert asym.endswith(" asymmetri Debian Secure Boot CA: 6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1: X509.rsa bb419ea1 []")
    assert asym.split()[1:4] == ["I------", "1", "perm"]
    assert any(line.endswith("keyring   .machine: 1") for line in lines)
    assert any(line.endswith("keyring   .platform: empty") for line in lines)


def test_shim_carries_debians_ca() -> None:
    keys = secureboot.keys_of(secureboot.shim_vendor_certs())
    assert [k.cn for k in keys] == ["Debian Secure Boot CA"]


def test_signing_pki_is_made_once(tmp_path: Path) -> None:
    from cryptography import x509

    from kmodlab import paths

    layout = paths.layout(tmp_path)
    first = pki.ensure_signing(layout)
    again = pki.ensure_signing(layout)
    assert {n: c.cert.read_bytes() for n, c in first.items()} == {n: c.cert.read_bytes() for n, c in again.items()}
    cert = x509.load_der_x509_certificate(first["fleet"].cert_der.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value[0].dotted_string == "1.3.6.1.5.5.7.3.3"
    assert first["fleet"].key.stat().st_mode & 0o077 == 0
    assert first["fleet"].facts()["kmod_signing_cert_file"] == str(first["fleet"].cert)


# ---------------------------------------------------------------- the image


def sign_in_dtk(lab: LabState, release: dict[str, Any], base_image: str, work: Path) -> str:
    """`base_image` with its modules re-signed in the release's DTK by its own
    sign-file (the keys as build secrets); pushed, returns repo@digest."""
    signing = pki.signing_for(lab.layout)
    kver = release["kernel"]
    context = work / "sign-context"
    context.mkdir(parents=True)
    for name in ("fleet", "other"):
        shutil.copy(signing[name].cert_der, context / f"{name}.der")
    steps = [f'"$SIGN" sha256 /run/secrets/{who} /sign/{who}.der /sign/extra/{module}.ko'
             for module, who in SIGNED_WITH.items()]
    (context / "Containerfile").write_text(
        f"FROM {base_image} AS modules\n"
        f"FROM {release['images']['driver-toolkit']} AS signer\n"
        "COPY *.der /sign/\n"
        f"COPY --from=modules /usr/lib/modules/{kver}/extra/ /sign/extra/\n"
        "RUN --mount=type=secret,id=fleet --mount=type=secret,id=other \\\n"
        f"    SIGN=/lib/modules/{kver}/build/scripts/sign-file && test -x \"$SIGN\" && "
        + " && ".join(steps) + "\n"
        f"FROM {base_image}\n"
        f"COPY --from=signer /sign/extra/ /usr/lib/modules/{kver}/extra/\n")
    tag = f"{lab.registry['host']}/kmodlab/secure-boot:{uuid.uuid4().hex[:12]}"
    auth = ["--authfile", str(lab.registry["auth_file"]), "--cert-dir", str(Path(lab.ca_file).parent)]
    secrets = [f"--secret=id={name},src={signing[name].key}" for name in ("fleet", "other")]
    build = subprocess.run(["podman", "build", "--isolation", "chroot", "--pull=missing", *auth, *secrets,
                            "-t", tag, str(context)], capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    push = subprocess.run(["podman", "push", "--quiet", *auth, tag, f"docker://{tag}"], capture_output=True,
                          text=True, check=False)
    assert push.returncode == 0, push.stderr
    return f"{tag.rsplit(':', 1)[0]}@{layered.registry_digest(lab, tag)}"


@pytest.fixture(scope="module")
def release(lab: LabState) -> dict[str, Any]:
    return [r for r in lab.releases if (r.get("arch") or "x86_64") == "x86_64"][-1]


@pytest.fixture(scope="module")
def signed_image(lab: LabState, release: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> str:
    base = layered.build_layered_image(lab, release["version"], list(MODULES))
    return sign_in_dtk(lab, release, base, tmp_path_factory.mktemp("sign"))


@pytest.fixture(scope="module")
def signed_rootfs(lab: LabState, signed_image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return layered.pull_rootfs(lab, signed_image, tmp_path_factory.mktemp("sb") / "rootfs")


def fleet_setup(lab: LabState) -> secureboot.SecureBootSetup:
    return secureboot.SecureBootSetup(enrolled_certs=(str(pki.signing_for(lab.layout)["fleet"].cert_der),))


@pytest.fixture(scope="module")
def qemu_boots(lab: LabState, signed_rootfs: Path) -> dict[str, nodeboot.NodeBoot]:
    """The same image booted three ways: Secure Boot with the fleet MOK,
    Secure Boot with none, no Secure Boot."""
    boots = {
        "fleet": nodeboot.boot(str(signed_rootfs), timeout=300, secure_boot=fleet_setup(lab)),
        "none": nodeboot.boot(str(signed_rootfs), timeout=300, secure_boot=secureboot.SecureBootSetup()),
        "off": nodeboot.boot(str(signed_rootfs), timeout=300),
    }
    for name, result in boots.items():
        print(f"\nqemu boot {name}: {result.duration:.1f}s, firmware {result.tools.get('firmware', 'none')}")
    return boots


def asymmetric_keys(lines: list[str]) -> set[str]:
    """The key descriptions of /proc/keys' asymmetric keys (serials are random)."""
    return {line.split(" asymmetri ", 1)[1] for line in lines if " asymmetri " in line}


def test_dtk_sign_file_signs_with_the_certificate(lab: LabState, signed_rootfs: Path, release: dict[str, Any]) -> None:
    """The modules the DTK's sign-file signed: kmod's modinfo names the
    signer and key (the certificate's CN and serial) and the hash."""
    from cryptography import x509

    extra = signed_rootfs / f"usr/lib/modules/{release['kernel']}/extra"
    certs = pki.signing_for(lab.layout)
    for module, who in SIGNED_WITH.items():
        out = subprocess.run(["modinfo", str(extra / f"{module}.ko")], capture_output=True, text=True, check=True).stdout
        fields = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in out.splitlines() if ":" in line}
        cert = x509.load_der_x509_certificate(certs[who].cert_der.read_bytes())
        serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8, "big")
        assert fields["signer"] == pki.SIGNING_SUBJECTS[who]
        assert fields["sig_key"] == ":".join(f"{b:02X}" for b in serial)
        assert fields["sig_hashalgo"] == "sha256"
    assert fastboot.split_signature((extra / "kmodlab_panic.ko").read_bytes())[1] is None


@pytest.mark.qemu
def test_secure_boot_node_loads_the_fleet_signed_module_only(qemu_boots: dict[str, nodeboot.NodeBoot]) -> None:
    node = qemu_boots["fleet"]
    assert node.completed and not node.panic, node.console[-3000:]
    assert node.secure_boot == "enabled" and node.lockdown == secureboot.LOCKDOWN_INTEGRITY
    assert node.sig_enforce == "Y"
    assert "kmodlab_core" in node.loaded and not {"kmodlab_dep", "kmodlab_panic"} & set(node.loaded)
    assert node.taint["kmodlab_core"] == "O" and node.tainted == 4096
    assert node.refused == {
        "kmodlab_dep": ["modprobe: ERROR: could not insert 'kmodlab_dep': Key was rejected by service",
                        "Loading of module with unavailable key is rejected"],
        "kmodlab_panic": ["modprobe: ERROR: could not insert 'kmodlab_panic': Key was rejected by service",
                          "Loading of unsigned module is rejected"],
    }
    keys = asymmetric_keys(node.keys)
    assert any(k.startswith("kmodlab fleet module signing: ") for k in keys), keys
    assert any(k.startswith("Debian Secure Boot CA: 6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1: ") for k in keys)
    assert any(line.endswith("keyring   .machine: 2") for line in node.keys)


@pytest.mark.qemu
def test_secure_boot_node_without_the_mok_refuses_the_fleet_signed_module(
    qemu_boots: dict[str, nodeboot.NodeBoot],
) -> None:
    node = qemu_boots["none"]
    assert node.completed and node.lockdown == secureboot.LOCKDOWN_INTEGRITY, node.console[-3000:]
    assert not {"kmodlab_core", "kmodlab_dep", "kmodlab_panic"} & set(node.loaded)
    assert node.refused["kmodlab_core"] == [
        "modprobe: ERROR: could not insert 'kmodlab_core': Key was rejected by service",
        "Loading of module with unavailable key is rejected"]
    assert not any("kmodlab fleet" in line for line in node.keys)
    assert any(line.endswith("keyring   .machine: 1") for line in node.keys)


@pytest.mark.qemu
def test_fast_mode_agrees_with_qemu(lab: LabState, signed_rootfs: Path,
                                    qemu_boots: dict[str, nodeboot.NodeBoot]) -> None:
    setups = {"fleet": fleet_setup(lab), "none": secureboot.SecureBootSetup(), "off": None}
    for name, setup in setups.items():
        fast, real = fastboot.evaluate(str(signed_rootfs), secure_boot=setup), qemu_boots[name]
        print(f"\nfast {name}: {fast.duration:.2f}s")
        assert set(fast.loaded) == set(real.loaded), name
        assert fast.refused == real.refused, name
        assert fast.taint == real.taint, name
        assert (fast.tainted, fast.lockdown, fast.sig_enforce, fast.secure_boot) == (
            real.tainted, real.lockdown, real.sig_enforce, real.secure_boot), name
        assert asymmetric_keys(fast.keys) == asymmetric_keys(real.keys), name
    assert qemu_boots["off"].taint["kmodlab_panic"] == "OE" and qemu_boots["off"].tainted == 4096 | 8192


# ---------------------------------------------------------------- a lab cluster with a Secure Boot worker


@pytest.fixture(scope="module")
def sb_cluster(lab: LabState, release: dict[str, Any]) -> Iterator[dict[str, Any]]:
    with state.locked(lab.root) as current:
        entry = cluster.start_clusters(current, 1, [release["version"]], workers=2, masters=1, node_mode="fast",
                                       secure_boot=["worker-0"])[0]
    try:
        yield entry
    finally:
        with state.locked(lab.root) as current:
            cluster.stop_cluster(current, entry["name"])


def debug(api: dynamic.DynamicClient, node: str, argv: list[str]) -> tuple[int, str]:
    """`oc debug node/<node> -- chroot /host <argv>`: (exit code, log)."""
    pods = api.resources.get(api_version="v1", kind="Pod")
    name = f"{node}-debug-{uuid.uuid4().hex[:5]}"
    pods.create(namespace="default", body={
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [{
            "name": "container-00", "image": "registry.redhat.io/rhel9/support-tools",
            "command": ["chroot", "/host", *argv], "securityContext": {"privileged": True},
            "volumeMounts": [{"name": "host", "mountPath": "/host"}]}],
            "volumes": [{"name": "host", "hostPath": {"path": "/"}}]}})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pod = pods.get(name=name, namespace="default").to_dict()
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if statuses and "terminated" in statuses[0].get("state", {}):
            return statuses[0]["state"]["terminated"]["exitCode"], pod["metadata"]["annotations"]["kmodlab.io/log"]
        time.sleep(0.3)
    raise AssertionError(f"debug pod {name} did not finish")


def test_secure_boot_worker_rolls_out_and_answers_debug_pods(
    lab: LabState, sb_cluster: dict[str, Any], signed_image: str, release: dict[str, Any]
) -> None:
    assert sb_cluster["secure_boot"]["nodes"] == ["worker-0"]
    api = dynamic.DynamicClient(k8s_config.new_client_from_config(sb_cluster["kubeconfig"]))
    # A node never rebooted by the lab answers from its configuration and its kernel.
    assert debug(api, "worker-0", ["mokutil", "--sb-state"]) == (0, "SecureBoot enabled\n")
    assert debug(api, "worker-1", ["mokutil", "--sb-state"]) == (0, "SecureBoot disabled\n")
    code, seeded = debug(api, "worker-0", ["grep", "-H", "-s", ".", "/sys/kernel/security/lockdown", "/proc/keys"])
    assert code == 0 and f"/sys/kernel/security/lockdown:{secureboot.LOCKDOWN_INTEGRITY}\n" in seeded
    assert "asymmetri kmodlab fleet module signing: " in seeded

    api.resources.get(api_version=MC_API, kind="MachineConfig").create(body={
        "apiVersion": MC_API, "kind": "MachineConfig",
        "metadata": {"name": "99-worker-kmod", "labels": {"machineconfiguration.openshift.io/role": "worker"}},
        "spec": {"osImageURL": signed_image}})
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        records = groundtruth.read_boots(sb_cluster)
        if all(groundtruth.reboots(records)[n] >= 1 and records[n][-1].get("down") is None
               for n in ("worker-0", "worker-1")):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the workers did not reboot into the signed image")
    last = {n: records[n][-1] for n in ("worker-0", "worker-1")}
    assert last["worker-0"]["secure_boot"] is True and last["worker-0"]["lockdown"] == "integrity"
    assert last["worker-0"]["modules"] == ["kmodlab_core"]
    assert set(groundtruth.refused(records)["worker-0"]) == {"kmodlab_dep", "kmodlab_panic"}
    assert last["worker-1"]["secure_boot"] is False and last["worker-1"]["lockdown"] == "none"
    assert set(last["worker-1"]["modules"]) == set(MODULES) and "worker-1" not in groundtruth.refused(records)
    assert groundtruth.secure_boot_nodes(records) == ["worker-0"]

    files = ["/sys/kernel/security/lockdown", "/sys/module/module/parameters/sig_enforce", "/proc/sys/kernel/tainted",
             "/proc/keys", "/sys/module/kmodlab_core/taint"]
    code, out = debug(api, "worker-0", ["grep", "-H", "-s", ".", *files])
    assert code == 0, [line for line in out.splitlines() if not line.startswith("/proc/keys:")]
    lines = out.splitlines()
    assert f"/sys/kernel/security/lockdown:{secureboot.LOCKDOWN_INTEGRITY}" in lines
    assert "/sys/module/module/parameters/sig_enforce:Y" in lines
    assert "/proc/sys/kernel/tainted:4096" in lines and "/sys/module/kmodlab_core/taint:O" in lines
    keys = [line.split(":", 1)[1] for line in lines if line.startswith("/proc/keys:")]
    assert any(" asymmetri kmodlab fleet module signing: " in k for k in keys)
    code, out = debug(api, "worker-0", ["grep", "-H", "-s", ".", "/sys/module/kmodlab_dep/taint"])
    assert (code, out) == (2, "")  # refused: no such module in /sys
    code, out = debug(api, "worker-1", ["grep", "-H", "-s", ".", "/proc/sys/kernel/tainted",
                                        "/sys/module/kmodlab_panic/taint"])
    assert (code, out.splitlines()) == (0, ["/proc/sys/kernel/tainted:12288", "/sys/module/kmodlab_panic/taint:OE"])

    code, out = debug(api, "worker-0", ["modinfo", "kmodlab_core", "kmodlab_panic"])
    assert code == 0, out
    blocks = out.split("filename:")[1:]
    assert blocks[0].split()[0] == f"/lib/modules/{release['kernel']}/extra/kmodlab_core.ko"
    assert "signer:         kmodlab fleet module signing" in blocks[0] and "sig_hashalgo:   sha256" in blocks[0]
    assert "signer:" not in blocks[1]
    code, out = debug(api, "worker-0", ["modinfo", "kmodlab_absent"])
    assert code == 1 and "kmodlab_absent not found" in out
    annotation = api.resources.get(api_version="v1", kind="Node").get(name="worker-0").to_dict()
    boot = json.loads(annotation["metadata"]["annotations"]["kmodlab.io/boot"])
    assert boot["secure_boot"] == "enabled" and set(boot["refused"]) == {"kmodlab_dep", "kmodlab_panic"}
