# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""machineconfig_plan's gates option, run in-process: gates: true needs the
pools, gates: false runs no gate even when pools are given, and left unset
the gates still switch on with the pools (the old machineconfig_manifest
behaviour), with a deprecation warning."""

import json

import pytest

from ansible_collections.ocp.kmod_layering.plugins.modules import machineconfig_plan
from ansible_collections.ocp.kmod_layering.tests.unit.plugins.modules.runner import run

IMAGE = "registry.example.com/infra/rhcos-kmods@sha256:" + "4" * 64
ROLE = "machineconfiguration.openshift.io/role"


def _pool(name="worker", paused=False):
    return {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfigPool",
            "metadata": {"name": name},
            "spec": {"machineConfigSelector": {"matchLabels": {ROLE: name}}, "paused": paused}}


def _plan(**args):
    return run(machineconfig_plan, dict({"pool": "worker", "os_image_url": IMAGE, "cluster": "east"}, **args))


def _deprecations(result):
    """The deprecations of a result, as text (their shape differs between
    ansible-core releases; the message, version and collection are in it)."""
    return [json.dumps(d, sort_keys=True) for d in result.get("deprecations") or []]


def test_gates_true_without_pools_fails_naming_the_missing_option():
    failed, result = _plan(gates=True)
    assert failed
    assert "gates" in result["msg"] and "pools" in result["msg"]
    assert "machineconfig" not in result


def test_a_paused_pool_is_refused_by_the_gates():
    failed, result = _plan(gates=True, pools=[_pool(paused=True)])
    assert failed
    assert "MachineConfigPool worker on cluster east is paused" in result["msg"]
    assert _deprecations(result) == []


def test_gates_false_runs_no_gate_even_with_pools_given():
    # The same paused pool the gates refuse, and a pool list without the pool
    # at all: with gates off, neither is looked at.
    for pools in ([_pool(paused=True)], [_pool("infra")]):
        failed, result = _plan(gates=False, pools=pools)
        assert not failed, result
        assert result["gates"] is False
        assert result["machineconfig"]["spec"]["osImageURL"] == IMAGE
        assert _deprecations(result) == []


def test_gates_unset_with_pools_runs_the_gates_and_warns_of_the_deprecation():
    failed, result = _plan(pools=[_pool(paused=True)])
    assert failed and "is paused" in result["msg"]
    failed, result = _plan(pools=[_pool()])
    assert not failed, result
    assert result["gates"] is True
    (deprecation,) = _deprecations(result)
    assert "set gates: true (or false) explicitly" in deprecation
    assert '"2.0.0"' in deprecation and "ocp.kmod_layering" in deprecation


@pytest.mark.parametrize("args", [{}, {"gates": False}], ids=["unset", "false"])
def test_no_pools_no_gates_no_warning(args):
    failed, result = _plan(**args)
    assert not failed, result
    assert result["gates"] is False
    assert _deprecations(result) == []
