# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_machineconfig_plan.plan, machineconfig_plan's run, on the pools and
MachineConfigs of a cluster as `oc get -o yaml` lists them
(tests/unit/fixtures/mco/): what a rollout and a rollback render, the gates
in their order with the fields a refusal returns, the warnings and the
deprecation a result (or a later failure) carries, up_to_date against ours
as the API server returns it, and dest with check mode and diff. Also
_runner.finish, which hands all that to exit_json / fail_json."""

from __future__ import annotations

import copy
import json
import os
from typing import Any
from unittest import mock

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _machineconfig, _machineconfig_plan
from ansible_collections.ocp.kmod_layering.plugins.module_utils._runner import Failed, finish
from ansible_collections.ocp.kmod_layering.plugins.modules import machineconfig_plan

from recorded_api import fixture_items

IMAGE = "registry.example.com/infra/rhcos-kmods@sha256:" + "4" * 64
OLD_IMAGE = "registry.example.com/infra/rhcos-kmods@sha256:" + "3" * 64
SKID = "9f2c41d07b3e5a6c8d1e2f3a4b5c6d7e8f901a2b"
SIGNING = {"cert_sha256": "ab" * 32, "subject": "Fleet Module Signing", "skid": SKID,
           "key_description": "Fleet Module Signing: " + SKID, "serial": "1A:2B", "hash": "sha256"}
HISTORY = _machineconfig.ANNOTATION_HISTORY

# The recorded cluster: pools master, worker and a custom infra pool (which
# selects the worker and infra MachineConfigs); MachineConfigs of the MCO
# (generated), of users (99-worker-kmod-a/b and 99-master-kmod set an
# osImageURL and sort after ours, 99-infra-kmod before ours), and a rendered
# one, which the rollout role leaves out.
POOLS = [o for o in fixture_items("pools_and_nodes.yaml") if o["kind"] == "MachineConfigPool"]
MACHINECONFIGS = [mc for mc in fixture_items("machineconfigs.yaml")
                  if not mc["metadata"]["name"].startswith("rendered-")]
NO_LATER_SETTERS = [mc for mc in MACHINECONFIGS if not mc["metadata"]["name"].startswith("99-worker-kmod-")]


def pools_of(name: str) -> list[dict[str, Any]]:
    return [o for o in fixture_items(name) if o["kind"] == "MachineConfigPool"]


def params(**options: Any) -> dict[str, Any]:
    """The options as machineconfig_plan's AnsibleModule hands them to plan
    (its argument spec: types, defaults, required_if)."""
    handed = {}
    args = dict({"pool": "worker", "os_image_url": IMAGE, "cluster": "east"}, **options)
    with patch_module_args({k: v for k, v in args.items() if v is not None}), \
            mock.patch.object(machineconfig_plan, "finish", lambda module, run: handed.update(module.params)):
        machineconfig_plan.main()
    return handed


def refused(**options: Any) -> Failed:
    with pytest.raises(Failed) as failed:
        _machineconfig_plan.plan(params(**options))
    return failed.value


def as_served(machineconfig: dict[str, Any]) -> dict[str, Any]:
    """``machineconfig`` as the API server returns it once applied: server fields added."""
    served = copy.deepcopy(machineconfig)
    served["metadata"].update(uid="5d7c1e0a-8f3b-4a62-9c1d-2e3f4a5b6c7d", resourceVersion="4471877", generation=1,
                              creationTimestamp="2026-11-23T22:51:09Z")
    served["spec"].update(config={"ignition": {"version": "3.2.0"}}, extensions=[], fips=False,
                          kernelArguments=[], kernelType="")
    return served


def secure_boot_node(name: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A node_inspect ``nodes`` entry of a node with Secure Boot on."""
    return {"name": name, "pool": "worker", "ok": True, "commands": [],
            "secure_boot": {"state": "enabled", "lockdown": "integrity", "sig_enforce": False, "enforcing": True,
                            "tainted": 0, "unsigned_module_taint": False, "trusted_keys": list(keys),
                            "modules": {}}}


# --- rollout and the gates, on the recorded cluster --------------------------------


def test_a_rollout_on_the_recorded_worker_pool_renders_ours_and_passes_the_gates():
    result = _machineconfig_plan.plan(params(gates=True, pools=POOLS, machineconfigs=NO_LATER_SETTERS,
                                             build_key="b" * 70, modules=[{"name": "mydrv"}, "other"],
                                             kernel_version="5.14.0-427.13.1.el9_4.x86_64"))
    mc = result["machineconfig"]
    assert result["name"] == mc["metadata"]["name"] == "99-kmod-layering-worker"
    assert mc["spec"] == {"osImageURL": IMAGE}
    assert mc["metadata"]["labels"]["machineconfiguration.openshift.io/role"] == "worker"
    assert mc["metadata"]["labels"][_machineconfig.LABEL_BUILD_KEY] == "b" * 63
    assert mc["metadata"]["annotations"][_machineconfig.ANNOTATION_MODULES] == "mydrv,other"
    assert (result["gates"], result["exists"], result["up_to_date"], result["changed"]) == (True, False, False, False)
    # The generated configs that set an osImageURL (00-worker, 99-worker-generated-registries,
    # 99-worker-zz-owned) are not ours to override: nothing to warn of.
    assert result["other_os_image_setters"] == [] and result["warnings"] == [] and result["deprecations"] == []
    assert result["history"] == [] and "rollback" not in result and "dest" not in result
    assert result["yaml"].startswith("# MachineConfig of ocp.kmod_layering for pool worker of cluster east")
    assert _machineconfig_plan.yaml.safe_load(result["yaml"]) == mc
    assert result["secure_boot_gate"] == {"checked": False, "nodes": [], "enforcing": [], "refusing": [], "unknown": []}


def test_later_user_machineconfigs_that_set_an_image_refuse_the_rollout_naming_the_winner():
    failure = refused(gates=True, pools=POOLS, machineconfigs=MACHINECONFIGS)
    assert failure.msg.startswith("MachineConfig 99-kmod-layering-worker would not be effective on pool worker of "
                                  "cluster east: 99-worker-kmod-b sorts after it")
    assert failure.result["other_os_image_setters"] == ["99-worker-kmod-a", "99-worker-kmod-b"]
    assert failure.result["name"] == "99-kmod-layering-worker"
    assert failure.result["machineconfig"]["spec"]["osImageURL"] == IMAGE
    assert failure.result["warnings"] == [] and failure.result["deprecations"] == []


def test_the_custom_pool_wins_over_the_worker_configs_and_warns_of_what_it_overrides():
    result = _machineconfig_plan.plan(params(pool="infra", gates=True, pools=POOLS, machineconfigs=MACHINECONFIGS))
    assert result["name"] == "99-kmod-layering-infra"
    assert result["other_os_image_setters"] == ["99-worker-kmod-a", "99-worker-kmod-b", "99-infra-kmod"]
    assert result["warnings"] == ["Cluster east, pool infra: MachineConfig 99-kmod-layering-infra overrides the "
                                  "osImageURL that 99-worker-kmod-a, 99-worker-kmod-b, 99-infra-kmod set."]


def test_one_overridden_setter_is_named_in_the_singular():
    result = _machineconfig_plan.plan(params(pool="infra", gates=True, pools=POOLS,
                                             machineconfigs=NO_LATER_SETTERS))
    assert result["warnings"] == ["Cluster east, pool infra: MachineConfig 99-kmod-layering-infra overrides the "
                                  "osImageURL that 99-infra-kmod sets."]


def test_the_pool_gates_on_recorded_degraded_and_paused_pools():
    failure = refused(gates=True, pools=pools_of("degraded_node.yaml"))
    assert failure.msg.startswith("MachineConfigPool worker on cluster east is degraded "
                                  "(Degraded=True: Node ip-10-0-162-90")
    assert "NodeDegraded=True" in failure.msg
    assert "degradedMachineCount=1" in failure.msg
    assert set(failure.result) == {"name", "machineconfig", "warnings", "deprecations"}
    failure = refused(gates=True, pools=pools_of("paused.yaml"))
    assert "is paused (spec.paused: true)" in failure.msg
    assert _machineconfig_plan.plan(params(gates=True, pools=pools_of("paused.yaml"), allow_paused_pool=True))["gates"]
    failure = refused(pool="storage", gates=True, pools=POOLS)
    assert failure.msg.startswith("MachineConfigPool storage not found on cluster east (pools there: infra, master, "
                                  "worker)")


def test_the_upgrade_gate_runs_after_the_pool_gate_and_can_be_overridden():
    upgrading = {"apiVersion": "config.openshift.io/v1", "kind": "ClusterVersion", "metadata": {"name": "version"},
                 "status": {"desired": {"version": "4.16.30"},
                            "conditions": [{"type": "Progressing", "status": "True",
                                            "message": "Working towards 4.16.30: 512 of 873 done (58% complete)"}]}}
    failure = refused(gates=True, pools=POOLS, cluster_version=upgrading)
    assert failure.msg.startswith("Cluster east is being upgraded (ClusterVersion Progressing=True: Working towards "
                                  "4.16.30")
    assert "is paused" in refused(gates=True, pools=pools_of("paused.yaml"), cluster_version=upgrading).msg
    assert _machineconfig_plan.plan(params(gates=True, pools=POOLS, cluster_version=upgrading,
                                           allow_upgrading_cluster=True))["gates"] is True
    # A rollback is the way out: an upgrade under way does not stop it.
    rollback = _machineconfig_plan.plan(params(operation="rollback", gates=True, pools=POOLS,
                                               cluster_version=upgrading, machineconfigs=MACHINECONFIGS))
    assert rollback["rollback"]["action"] == "none"


def test_gates_off_look_at_nothing_and_gates_left_unset_follow_pools_with_a_deprecation():
    result = _machineconfig_plan.plan(params(gates=False, pools=pools_of("paused.yaml"), machineconfigs=MACHINECONFIGS))
    assert result["gates"] is False and result["other_os_image_setters"] == [] and result["deprecations"] == []
    assert _machineconfig_plan.plan(params())["deprecations"] == []
    result = _machineconfig_plan.plan(params(pools=POOLS))
    assert result["gates"] is True
    assert result["deprecations"] == [{"msg": "Gates that switch on because pools is given: set gates: true (or "
                                              "false) explicitly.", "version": "2.0.0",
                                       "collection_name": "ocp.kmod_layering"}]
    # A gate that refuses later still carries the deprecation.
    failure = refused(pools=pools_of("paused.yaml"))
    assert failure.result["deprecations"] == result["deprecations"]


def test_a_secure_boot_refusal_carries_the_warnings_of_the_gates_before_it():
    failure = refused(pool="infra", gates=True, pools=POOLS, machineconfigs=NO_LATER_SETTERS,
                      node_secure_boot=[dict(secure_boot_node("ip-10-0-150-77"), pool="infra")])
    assert failure.msg.startswith("Cluster east, pool infra: node ip-10-0-150-77 would refuse the modules")
    assert failure.result["secure_boot_gate"] == {"checked": True, "nodes": ["ip-10-0-150-77"],
                                                  "enforcing": ["ip-10-0-150-77"],
                                                  "refusing": ["ip-10-0-150-77"], "unknown": []}
    assert failure.result["warnings"] == ["Cluster east, pool infra: MachineConfig 99-kmod-layering-infra overrides "
                                          "the osImageURL that 99-infra-kmod sets."]
    # Signed by a key the node trusts: passed, and the fingerprint recorded.
    result = _machineconfig_plan.plan(params(gates=True, pools=POOLS, signing=SIGNING,
                                             node_secure_boot=[secure_boot_node("w0", ("Fleet Module Signing: "
                                                                                       + SKID,))]))
    assert result["secure_boot_gate"]["checked"] and result["secure_boot_gate"]["refusing"] == []
    assert result["machineconfig"]["metadata"]["annotations"][_machineconfig.ANNOTATION_SIGNING_CERT] == "ab" * 32


def test_what_is_refused_before_any_gate():
    failure = refused(operation="rollback", dest="/tmp/x.yaml", machineconfigs=[])
    assert failure.msg == "dest is not supported with operation=rollback"
    failure = refused(signing=dict(SIGNING, cert_sha256="AB:CD"), gates=True, pools=pools_of("paused.yaml"))
    assert failure.msg.startswith("Cluster east, pool worker: signing.cert_sha256 must be the certificate's sha256")
    assert failure.result == {}
    failure = refused(os_image_url="registry.example.com/infra/rhcos-kmods:latest", cluster=None)
    assert failure.msg.startswith("Cluster (cluster not named), pool worker: ")
    assert "digest" in failure.msg
    failure = refused(name_prefix="99_Kmod")
    assert failure.msg.startswith("Cluster east, pool worker: ")


def test_a_machineconfig_that_does_not_validate_is_returned_with_the_refusal():
    # Annotations over the API server's 256 KiB: the module names what does not validate.
    failure = refused(modules=["m%05d" % i for i in range(50000)], gates=True, pools=pools_of("paused.yaml"))
    assert failure.msg.startswith("Cluster east: MachineConfig 99-kmod-layering-worker does not validate: ")
    assert failure.result["machineconfig"]["metadata"]["name"] == "99-kmod-layering-worker"
    assert "warnings" not in failure.result  # refused before the gates (the paused pool is not looked at)


# --- ours as the cluster has it: up_to_date, history, rollback ---------------------


def test_a_rerun_against_ours_as_served_is_up_to_date_and_keeps_its_history():
    first = _machineconfig_plan.plan(params(os_image_url=OLD_IMAGE, build_key="k1", modules=["mydrv"]))
    served = as_served(first["machineconfig"])
    rerun = _machineconfig_plan.plan(params(os_image_url=OLD_IMAGE, build_key="k1", modules=["mydrv"],
                                            gates=True, pools=POOLS, machineconfigs=NO_LATER_SETTERS + [served]))
    assert (rerun["exists"], rerun["up_to_date"], rerun["history"]) == (True, True, [])
    # Another build key: not up to date.
    assert not _machineconfig_plan.plan(params(os_image_url=OLD_IMAGE, build_key="k2", modules=["mydrv"],
                                               machineconfigs=[served]))["up_to_date"]
    # A new image: the old one goes to the history, and ours is not up to date.
    update = _machineconfig_plan.plan(params(build_key="k2", machineconfigs=NO_LATER_SETTERS + [served],
                                             gates=True, pools=POOLS))
    assert (update["exists"], update["up_to_date"]) == (True, False)
    assert update["history"] == [{"osImageURL": OLD_IMAGE, "build-key": "k1", "modules": "mydrv"}]
    assert json.loads(update["machineconfig"]["metadata"]["annotations"][HISTORY]) == update["history"]


def test_rollbacks_restore_the_previous_image_delete_ours_or_do_nothing():
    first = as_served(_machineconfig_plan.plan(params(os_image_url=OLD_IMAGE, build_key="k1"))["machineconfig"])
    second = as_served(_machineconfig_plan.plan(params(build_key="k2", machineconfigs=[first]))["machineconfig"])
    degraded = pools_of("degraded_node.yaml")  # a rollback is the way out: the degraded gate does not apply

    back = _machineconfig_plan.plan(params(operation="rollback", os_image_url=None, gates=True, pools=degraded,
                                           machineconfigs=NO_LATER_SETTERS + [second]))
    assert back["rollback"] == {"action": "restore", "os_image_url": OLD_IMAGE, "current": IMAGE,
                                "reason": "back to " + OLD_IMAGE}
    restored = back["machineconfig"]
    assert restored["spec"] == {"osImageURL": OLD_IMAGE}
    assert restored["metadata"]["annotations"][_machineconfig.ANNOTATION_ROLLED_BACK_FROM] == IMAGE
    assert restored["metadata"]["annotations"][_machineconfig.ANNOTATION_BUILD_KEY] == "k1"
    assert back["exists"] is True and back["up_to_date"] is False and back["history"] == []
    assert _machineconfig_plan.yaml.safe_load(back["yaml"]) == restored
    # The effectiveness gate runs on what a rollback writes: the recorded later setters win over it.
    failure = refused(operation="rollback", gates=True, pools=degraded, machineconfigs=MACHINECONFIGS + [second])
    assert "would not be effective on pool worker" in failure.msg
    assert failure.result["machineconfig"]["spec"] == {"osImageURL": OLD_IMAGE}

    deleted = _machineconfig_plan.plan(params(operation="rollback", gates=True, pools=degraded,
                                              machineconfigs=[first]))
    assert deleted["rollback"]["action"] == "delete" and deleted["machineconfig"] is None
    assert (deleted["yaml"], deleted["history"], deleted["up_to_date"]) == ("", [], False)

    nothing = _machineconfig_plan.plan(params(operation="rollback", machineconfigs=MACHINECONFIGS))
    assert nothing["rollback"]["action"] == "none" and nothing["exists"] is False
    assert "is paused" in refused(operation="rollback", gates=True, pools=pools_of("paused.yaml"),
                                  machineconfigs=[second]).msg


# --- dest ---------------------------------------------------------------------------


def test_dest_in_check_mode_then_written_then_unchanged(tmp_path):
    dest = str(tmp_path / "openshift" / "99-kmod-layering-worker.yaml")
    checked = _machineconfig_plan.plan(params(dest=dest, mode="0600"), check_mode=True, diff=True)
    assert checked["changed"] is True and checked["dest"] == dest and not os.path.exists(dest)
    assert checked["diff"] == {"before": "", "after": checked["yaml"], "before_header": dest, "after_header": dest}
    written = _machineconfig_plan.plan(params(dest=dest, mode="0600"))
    assert written["changed"] is True and "diff" not in written
    with open(dest) as stream:
        assert stream.read() == written["yaml"]
    assert os.stat(dest).st_mode & 0o777 == 0o600
    again = _machineconfig_plan.plan(params(dest=dest, mode=0o644), diff=True)
    assert again["changed"] is False and again["diff"]["before"] == again["diff"]["after"]


def test_dest_that_cannot_be_written_fails_with_the_warnings_given_so_far(tmp_path):
    (tmp_path / "file").write_text("")
    failure = refused(pool="infra", gates=True, pools=POOLS, machineconfigs=NO_LATER_SETTERS,
                      dest=str(tmp_path / "file" / "mc.yaml"))
    assert failure.msg.startswith("Cannot write dest %s: " % (tmp_path / "file" / "mc.yaml"))
    assert failure.result["warnings"] == ["Cluster east, pool infra: MachineConfig 99-kmod-layering-infra overrides "
                                          "the osImageURL that 99-infra-kmod sets."]
    assert refused(dest=str(tmp_path / "mc.yaml"), mode="rw").msg.startswith("Cannot write dest")


# --- helpers ------------------------------------------------------------------------


def test_is_subset_is_recursive_on_dicts_and_exact_on_the_rest():
    assert _machineconfig_plan.is_subset({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}, "d": 3})
    assert not _machineconfig_plan.is_subset({"a": {"b": 1}}, {"a": {"b": 2}})
    assert not _machineconfig_plan.is_subset({"a": {"b": 1}}, {"a": "b"})
    assert not _machineconfig_plan.is_subset({"a": [1]}, {"a": [1, 2]})
    assert not _machineconfig_plan.is_subset({"x": None}, {})


def test_find_named_takes_the_first_of_that_name():
    assert _machineconfig.find_named(MACHINECONFIGS, "99-infra-kmod")["spec"]["osImageURL"].endswith("3" * 64)
    assert _machineconfig.find_named(MACHINECONFIGS, "99-kmod-layering-worker") is None
    assert _machineconfig.find_named(None, "worker") is None


class FakeModule:
    """What finish calls of an AnsibleModule; exit_json and fail_json end the run as they do."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def warn(self, warning):
        self.calls.append(("warn", warning))

    def deprecate(self, msg, version=None, collection_name=None):
        self.calls.append(("deprecate", msg, version, collection_name))

    def exit_json(self, **result):
        self.calls.append(("exit_json", result))
        raise SystemExit(0)

    def fail_json(self, msg, **result):
        self.calls.append(("fail_json", msg, result))
        raise SystemExit(1)


def test_finish_gives_the_warnings_and_deprecations_then_exits_or_fails():
    module = FakeModule()
    with pytest.raises(SystemExit):
        finish(module, lambda: _machineconfig_plan.plan(params(pool="infra", pools=POOLS,
                                                               machineconfigs=NO_LATER_SETTERS)))
    (warn, deprecate, (end, result)) = module.calls
    assert warn == ("warn", "Cluster east, pool infra: MachineConfig 99-kmod-layering-infra overrides the osImageURL "
                            "that 99-infra-kmod sets.")
    assert deprecate[0] == "deprecate" and deprecate[2:] == ("2.0.0", "ocp.kmod_layering")
    assert end == "exit_json" and "warnings" not in result and "deprecations" not in result
    assert result["name"] == "99-kmod-layering-infra"

    module = FakeModule()
    with pytest.raises(SystemExit):
        finish(module, lambda: _machineconfig_plan.plan(params(pools=pools_of("paused.yaml"))))
    (deprecate, (end, msg, result)) = module.calls
    assert deprecate[0] == "deprecate" and end == "fail_json" and "is paused" in msg
    assert set(result) == {"name", "machineconfig"}
