"""Secure Boot end to end: site.yml on a lab cluster whose worker boots with
UEFI Secure Boot enforced in qemu (OVMF secboot -> shim -> grub -> the image's
own kernel, in lockdown), the lab's fleet certificate and a second
("rotation") certificate enrolled as MOKs.

The ground truth is the lab's: what the node agent booted (kmodlab.groundtruth:
lockdown, the modules the kernel loaded and those it refused, in its own
words), the API server's request log (writes), our MachineConfig as the API
serves it. Keys: the lab's fleet and "other" keys (kmodlab.pki), and an
untrusted one made here.

(The gate refusing such modules before any write is
tests/integration/test_secure_boot_gate.py's, on fast nodes.)

2. Signed with a key the node does not trust, the risk accepted: the node reboots into the image, the
   kernel refuses the modules ("Key was rejected by service"), and verify
   fails naming the kernel's refusal.
3. Signed with the fleet key: the image is boot-tested with Secure Boot, the
   node boots it in lockdown with the modules loaded; verify reports Secure
   Boot on and the signer of each module.
4. Key rotation to the second enrolled certificate: a new build key, a new
   image rolled out and loaded; the fleet-signed image is in the rollback
   history.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import kubernetes
import pytest
import yaml

from kmodlab import cluster, groundtruth
from kmodlab.apiserver import LAB_CONTROLLER_AGENTS, RequestLogClient
from kmodlab.state import LabState

TOP = Path(__file__).resolve().parents[2]
MODULES = {"kmodlab_core", "kmodlab_dep"}
HISTORY = "kmod-layering.io/history"
SIGNING_ANNOTATION = "kmod-layering.io/signing-cert-sha256"

pytestmark = [pytest.mark.lab, pytest.mark.qemu]


def playbook(name: str, inventory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    return subprocess.run(["ansible-playbook", "-i", str(inventory), str(TOP / "playbooks" / name), *args],
                          env=env, capture_output=True, text=True, timeout=1800, check=False)


def writes(lab: LabState, entry: dict[str, Any]) -> int:
    """Writes to the cluster's API by anything but the lab's controllers."""
    return sum(1 for r in RequestLogClient(entry["api_url"], entry["token"], lab.ca_file).records()
               if r.get("method") in ("POST", "PUT", "PATCH", "DELETE")
               and (r.get("query") or {}).get("dryRun") != "All"
               and not str(r.get("user_agent", "")).startswith(LAB_CONTROLLER_AGENTS))


def our_machineconfig(entry: dict[str, Any]) -> dict[str, Any]:
    client = kubernetes.dynamic.DynamicClient(kubernetes.config.new_client_from_config(config_file=entry["kubeconfig"]))
    resource = client.resources.get(api_version="machineconfiguration.openshift.io/v1", kind="MachineConfig")
    return dict(resource.get(name="99-kmod-layering-worker").to_dict())


def fingerprint(cert: str) -> str:
    out = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-fingerprint", "-sha256"], check=True,
                         capture_output=True, text=True).stdout
    return out.split("=", 1)[1].strip().replace(":", "").lower()


class Fleet:
    def __init__(self, lab: LabState, entry: dict[str, Any], work: Path) -> None:
        self.lab = lab
        self.entry = entry
        self.work = work

    def inventory(self, **overrides: Any) -> Path:
        base = yaml.safe_load(Path(self.lab.inventory).read_text())["all"]["vars"]
        base.update(kmod_report_dir=str(self.work / "report"),
                    kmod_rollout_progress_file=str(self.work / "rollout.log"),
                    kmod_image_repository=f"{self.lab.registry['host']}/kmodtest/secure-boot-{self.work.name}")
        base.update(overrides)
        host = {"kmod_kubeconfig": self.entry["kubeconfig"], "kmod_pools": ["worker"]}
        path = self.work / f"inventory-{uuid.uuid4().hex[:6]}.yml"
        path.write_text(yaml.safe_dump({"all": {"vars": base, "children": {
            "lab_secure_boot": {"hosts": {self.entry["name"]: host}}, "canary": {"hosts": {self.entry["name"]: {}}}}}}))
        return path

    def boots(self) -> list[dict[str, Any]]:
        return [b for b in groundtruth.read_boots(self.entry).get("worker-0", []) if not b.get("seeded")]


@pytest.fixture(scope="module")
def fleet(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("sb")
    (entry,) = cluster.start_clusters(lab, 1, [lab.releases[0]["version"]], workers=1, masters=1, node_mode="qemu",
                                      secure_boot=True, secure_boot_certs=["fleet", "other"])
    try:
        yield Fleet(lab, entry, work)
    finally:
        cluster.stop_cluster(lab, entry["name"])


@pytest.fixture(scope="module")
def untrusted(fleet: Fleet) -> dict[str, str]:
    key, cert = fleet.work / "untrusted.key", fleet.work / "untrusted.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30",
                    "-subj", "/CN=kmod-layering untrusted signing", "-keyout", str(key), "-out", str(cert),
                    "-addext", "extendedKeyUsage=codeSigning", "-addext", "subjectKeyIdentifier=hash"],
                   check=True, capture_output=True)
    return {"kmod_signing_key_file": str(key), "kmod_signing_cert_file": str(cert)}


def signing(lab: LabState, name: str) -> dict[str, str]:
    keys = lab.signing[name]
    return {"kmod_signing_key_file": keys["kmod_signing_key_file"],
            "kmod_signing_cert_file": keys["kmod_signing_cert_file"]}


def test_2_with_the_risk_accepted_the_node_boots_without_the_modules_and_verify_names_the_kernels_refusal(
        fleet: Fleet, untrusted: dict[str, str]) -> None:
    run = playbook("site.yml", fleet.inventory(kmod_boot_test=False, kmod_secure_boot_accept_untrusted=True,
                                               kmod_rollback_on_verify_failure=False, **untrusted))
    assert run.returncode != 0
    boots = fleet.boots()
    assert len(boots) == 1 and boots[0]["secure_boot"] and boots[0]["lockdown"] != "none"
    assert MODULES.isdisjoint(boots[0]["modules"])
    assert "Key was rejected by service" in json.dumps(boots[0]["refused"])
    # verify fails on that node, in the kernel's words.
    assert re.search(r"worker-0.*(Key was rejected by service|unavailable key)", run.stdout), run.stdout[-5000:]


def test_3_signed_with_the_fleet_key_the_modules_load_in_lockdown(lab: LabState, fleet: Fleet) -> None:
    run = playbook("site.yml", fleet.inventory(**signing(lab, "fleet")))
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    boot = fleet.boots()[-1]
    assert boot["secure_boot"] and boot["lockdown"] == "integrity"
    assert MODULES <= set(boot["modules"]) and not boot["refused"]
    annotations = our_machineconfig(fleet.entry)["metadata"]["annotations"]
    assert annotations[SIGNING_ANNOTATION] == fingerprint(lab.signing["fleet"]["kmod_signing_cert_file"])
    # The boot test booted the image with Secure Boot before the write; verify shows the signer.
    assert "(Secure Boot)" in run.stdout
    report = json.loads((fleet.work / "report" / f"{fleet.entry['name']}.json").read_text())
    node = next(n for n in report["nodes"] if n["node"] == "worker-0")
    assert node["secure_boot"]["state"] == "enabled"
    signers = {m: v.get("signer") for m, v in node["secure_boot"]["modules"].items()}
    assert signers == {m: "kmodlab fleet module signing" for m in MODULES}


def test_4_a_key_rotation_builds_and_rolls_out_a_new_image_and_keeps_the_old_one_in_the_history(
        lab: LabState, fleet: Fleet) -> None:
    old = our_machineconfig(fleet.entry)
    run = playbook("site.yml", fleet.inventory(kmod_boot_test=False, **signing(lab, "other")))
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    new = our_machineconfig(fleet.entry)
    assert new["spec"]["osImageURL"] != old["spec"]["osImageURL"]
    assert new["metadata"]["annotations"]["kmod-layering.io/build-key"] != \
        old["metadata"]["annotations"]["kmod-layering.io/build-key"]
    assert new["metadata"]["annotations"][SIGNING_ANNOTATION] == \
        fingerprint(lab.signing["other"]["kmod_signing_cert_file"])
    assert old["spec"]["osImageURL"] in new["metadata"]["annotations"][HISTORY]
    boot = fleet.boots()[-1]
    assert boot["os_image"] == new["spec"]["osImageURL"]
    assert MODULES <= set(boot["modules"]) and not boot["refused"]
