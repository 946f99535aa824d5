# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The renamed modules still answer to their old names: a playbook on
localhost (no cluster, no registry) calls ocp.kmod_layering.pull_secret_check
and ocp.kmod_layering.machineconfig_manifest; meta/runtime.yml routes them
to registry_credentials_check and machineconfig_plan, which run and return
their results, and ansible-playbook prints the deprecation of each old name."""

import base64
import json
import os
import re
import subprocess
import sys

import yaml

IMAGE = "registry.example.com/infra/rhcos-kmods@sha256:" + "5" * 64
ROLE = "machineconfiguration.openshift.io/role"


def _pull_secret():
    auths = {"auths": {"registry.example.com": {"auth": base64.b64encode(b"u:p").decode()}}}
    return {"kind": "Secret", "data": {".dockerconfigjson": base64.b64encode(json.dumps(auths).encode()).decode()}}


def _playbook(out):
    pool = {"metadata": {"name": "worker"}, "spec": {"machineConfigSelector": {"matchLabels": {ROLE: "worker"}}}}
    return [{
        "name": "Old module names",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [
            {"name": "Credentials check by its old name",
             "ocp.kmod_layering.pull_secret_check": {"pull_secret": _pull_secret(), "image": IMAGE, "cluster": "east"},
             "register": "creds"},
            {"name": "MachineConfig plan by its old name, pools given, gates unset",
             "ocp.kmod_layering.machineconfig_manifest": {"pool": "worker", "os_image_url": IMAGE, "cluster": "east",
                                                          "pools": [pool]},
             "register": "plan"},
            {"name": "Keep the results",
             "ansible.builtin.copy": {"content": "{{ {'creds': creds, 'plan': plan} | to_json }}", "dest": str(out),
                                      "mode": "0600"}},
        ],
    }]


def test_old_names_run_the_renamed_modules_with_a_deprecation(tmp_path):
    out = tmp_path / "results.json"
    playbook = tmp_path / "old_names.yml"
    playbook.write_text(yaml.safe_dump(_playbook(out), sort_keys=False))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_DEPRECATION_WARNINGS="1",
               ANSIBLE_STDOUT_CALLBACK="default")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                           str(playbook)], env=env, capture_output=True, text=True, timeout=300, check=False)
    output = re.sub(r"\s+", " ", proc.stdout + proc.stderr)
    assert proc.returncode == 0, output[-4000:]
    results = json.loads(out.read_text())

    # What registry_credentials_check returns: the pull secret covers the registry.
    assert results["creds"]["covered"] is True and results["creds"]["entry"] == "registry.example.com"
    # What machineconfig_plan returns, the gates on (pools given, gates unset).
    plan = results["plan"]
    assert plan["name"] == "99-kmod-layering-worker" and plan["gates"] is True
    assert plan["machineconfig"]["spec"]["osImageURL"] == IMAGE

    # The routing deprecations of meta/runtime.yml, and the module's own of
    # gates left unset.
    assert re.search(r"pull_secret_check has been deprecated\. Use ocp\.kmod_layering\.registry_credentials_check",
                     output), output[-4000:]
    assert re.search(r"machineconfig_manifest has been deprecated\. Use ocp\.kmod_layering\.machineconfig_plan",
                     output), output[-4000:]
    assert "set gates: true (or false) explicitly" in output
