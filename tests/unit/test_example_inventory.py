"""The documented real-fleet inventory is valid input for every role: each
cluster's variables pass the roles' own argument specs (what Ansible checks
at the start of each role)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

TOP = Path(__file__).resolve().parents[2]
ROLES = ["plan", "resolve", "build", "publish", "rollout", "verify"]
# Facts an earlier role of the pipeline sets, never inventory variables.
PIPELINE_FACTS = {"kmod_sources", "kmod_resolved", "kmod_build", "kmod_image", "kmod_rollout", "kmod_verify"}


def _hostvars() -> dict[str, dict]:
    listed = subprocess.run(
        ["ansible-inventory", "-i", str(TOP / "inventories/example"), "--list"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(listed.stdout)["_meta"]["hostvars"]


@pytest.mark.parametrize("role", ROLES)
def test_every_example_cluster_passes_the_role_argument_spec(role: str) -> None:
    spec = yaml.safe_load((TOP / "roles" / role / "meta/argument_specs.yml").read_text())
    options = {
        name: dict(option, required=False) if name in PIPELINE_FACTS else option
        for name, option in spec["argument_specs"]["main"]["options"].items()
    }
    validator = ArgumentSpecValidator(options)
    hostvars = _hostvars()
    assert hostvars, "the example inventory lists no cluster"
    for host, variables in hostvars.items():
        given = {k: v for k, v in variables.items() if k in options}
        result = validator.validate(given)
        assert result.error_messages == [], f"{role} / {host}"


def test_the_example_names_a_canary_and_reaches_every_cluster_one_way_at_most() -> None:
    hostvars = _hostvars()
    inventory = yaml.safe_load((TOP / "inventories/example/hosts.yml").read_text())
    assert inventory["all"]["children"]["canary"]["hosts"]
    for host, variables in hostvars.items():
        ways = [k for k in ("kmod_kubeconfig", "kmod_api_url") if k in variables]
        assert len(ways) <= 1, host
