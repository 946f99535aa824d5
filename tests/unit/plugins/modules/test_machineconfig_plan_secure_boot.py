# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""machineconfig_plan's Secure Boot gate, run in-process, on the nodes'
facts as node_inspect secure_boot=true returns them: refused (naming the
pool, a node and the fix) when a node that enforces signatures would refuse
the modules; passed with a warning when the risk is accepted or a node
cannot tell; the signing certificate's fingerprint in the annotations."""

import copy
import json

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _secure_boot
from ansible_collections.ocp.kmod_layering.plugins.modules import machineconfig_plan
from ansible_collections.ocp.kmod_layering.tests.unit.plugins.modules.runner import run

IMAGE = "registry.example.com/infra/rhcos-kmods@sha256:" + "4" * 64
OLD_IMAGE = "registry.example.com/infra/rhcos-kmods@sha256:" + "3" * 64
ROLE = "machineconfiguration.openshift.io/role"
SKID = "9f2c41d07b3e5a6c8d1e2f3a4b5c6d7e8f901a2b"
SIGNING = {"cert_sha256": "ab" * 32, "subject": "Fleet Module Signing", "serial": "1A:2B", "skid": SKID,
           "key_description": "Fleet Module Signing: " + SKID, "hash": "sha256"}
OTHER = dict(SIGNING, cert_sha256="cd" * 32, subject="Old Key", key_description="Old Key: " + "0" * 40)
KEYS = ["Red Hat Enterprise Linux kernel signing key: 4d38fd864ebe18c5f0b72e3852e2014c3a676fc8",
        "Fleet Module Signing: " + SKID]
ANNOTATION = "kmod-layering.io/signing-cert-sha256"


def _pool(name="worker"):
    return {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfigPool",
            "metadata": {"name": name},
            "spec": {"machineConfigSelector": {"matchLabels": {ROLE: name}}, "paused": False}}


def fact(state="enabled", lockdown="integrity", keys=tuple(KEYS)):
    return {"state": state, "lockdown": lockdown, "sig_enforce": False,
            "enforcing": state == "enabled" or lockdown not in (None, "none"), "tainted": 4096,
            "unsigned_module_taint": False, "trusted_keys": list(keys), "modules": {}}


def nodes(*facts, pool="worker"):
    return [{"name": "worker-%d" % i, "pool": pool, "secure_boot": f, "ok": True, "commands": []}
            for i, f in enumerate(facts)]


def _warnings(result):
    """The warnings of a result, as text (their shape differs between ansible-core releases)."""
    return [json.dumps(w, sort_keys=True) for w in result.get("warnings") or []]


def _plan(**args):
    return run(machineconfig_plan, dict({"pool": "worker", "os_image_url": IMAGE, "cluster": "east", "gates": True,
                                         "pools": [_pool()]}, **args))


def test_unsigned_modules_on_a_secure_boot_pool_are_refused_naming_pool_node_and_fix():
    failed, result = _plan(node_secure_boot=nodes(fact(), fact()))
    assert failed
    msg = result["msg"]
    assert msg.startswith("Cluster east, pool worker: node worker-0 (and 1 more of the pool's 2 nodes) would "
                          "refuse the modules: it enforces module signatures (Secure Boot enabled, lockdown "
                          "integrity) and the modules are not signed"), msg
    assert "kmod_signing_key_file" in msg and "mokutil --import" in msg
    assert "kmod_secure_boot_accept_untrusted: true" in msg
    assert result["secure_boot_gate"]["refusing"] == ["worker-0", "worker-1"]


def test_modules_signed_by_a_key_the_nodes_do_not_list_are_refused():
    failed, result = _plan(signing=OTHER, node_secure_boot=nodes(fact()))
    assert failed
    assert "does not trust the key that signed the modules, Old Key: 0000" in result["msg"]
    assert "sha256 " + "cd" * 32 in result["msg"] and "mokutil --import" in result["msg"]


def test_signed_by_a_trusted_key_passes_and_records_the_fingerprint():
    failed, result = _plan(signing=SIGNING, node_secure_boot=nodes(fact(), fact("disabled", "none")))
    assert not failed, result
    assert result["machineconfig"]["metadata"]["annotations"][ANNOTATION] == "ab" * 32
    assert result["secure_boot_gate"] == {"checked": True, "nodes": ["worker-0", "worker-1"],
                                          "enforcing": ["worker-0"], "refusing": [], "unknown": []}
    # Unsigned: no annotation; without Secure Boot nodes, the gate passes.
    failed, result = _plan(node_secure_boot=nodes(fact("disabled", "none")))
    assert not failed and ANNOTATION not in (result["machineconfig"]["metadata"].get("annotations") or {})


def test_accepting_the_risk_and_unreadable_nodes_warn():
    failed, result = _plan(node_secure_boot=nodes(fact()), accept_untrusted_signatures=True)
    assert not failed, result
    assert any("node worker-0 would refuse the modules" in w and "the risk is accepted" in w
               for w in _warnings(result))
    entries = nodes(fact("disabled", "none"))
    entries.append({"name": "worker-9", "pool": "worker", "ok": None, "commands": []})  # check mode: no fact
    failed, result = _plan(node_secure_boot=entries)
    assert not failed and result["secure_boot_gate"]["unknown"] == ["worker-9"]
    assert any("cannot tell whether node worker-9" in w for w in _warnings(result))


def test_nodes_of_other_pools_and_no_facts_at_all():
    # The infra pool's Secure Boot nodes do not stop the worker pool.
    failed, result = _plan(node_secure_boot=nodes(fact(), pool="infra"))
    assert not failed and result["secure_boot_gate"]["nodes"] == []
    # No node_secure_boot: the gate does not run.
    failed, result = _plan()
    assert not failed and result["secure_boot_gate"]["checked"] is False


def test_a_bad_fingerprint_is_refused_before_anything():
    failed, result = _plan(signing=dict(SIGNING, cert_sha256="AB:CD"))
    assert failed and "signing.cert_sha256 must be the certificate's sha256 fingerprint" in result["msg"]


def test_the_fingerprint_goes_into_the_history_and_back_with_a_rollback():
    failed, first = _plan(os_image_url=OLD_IMAGE, signing=OTHER, gates=False)
    assert not failed
    existing = copy.deepcopy(first["machineconfig"])
    failed, second = _plan(signing=SIGNING, gates=False, machineconfigs=[existing])
    assert not failed
    history = json.loads(second["machineconfig"]["metadata"]["annotations"]["kmod-layering.io/history"])
    assert history[-1]["signing-cert-sha256"] == "cd" * 32
    failed, back = run(machineconfig_plan, {"pool": "worker", "operation": "rollback", "cluster": "east",
                                            "machineconfigs": [second["machineconfig"]]})
    assert not failed, back
    assert back["machineconfig"]["metadata"]["annotations"][ANNOTATION] == "cd" * 32
    assert _secure_boot.ERROR_LOCKDOWN == "Operation not permitted"
