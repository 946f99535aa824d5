"""The RBAC example of roles/verify/README.md grants every request the
collection's cluster modules make.

The requests are not read from the code: the modules run against a lab
cluster and the lab API server's request log says what they asked for (verb,
API group, resource, subresource, namespace, name). Each must be allowed by
the README's ClusterRole (bound cluster-wide) or by a Role of the request's
namespace, evaluated as Kubernetes RBAC does; each pod created needs `use` of
the privileged SCC in its namespace (the pods are privileged, hostPID).
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from kmodlab.apiserver import RequestLogClient
from kmodlab.state import LabState

pytestmark = pytest.mark.lab

CHECKOUT = Path(__file__).resolve().parents[2]
README = CHECKOUT / "roles" / "verify" / "README.md"
COLLECTION_AGENT = "ocp.kmod_layering."
DEBUG_NAMESPACE = "openshift-kmod-layering-debug"  # node_inspect's default namespace


def readme_rbac() -> list[dict[str, Any]]:
    text = README.read_text()
    section = text.split("## RBAC and SCC for a non-admin token", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "no YAML example in the RBAC section of roles/verify/README.md"
    return [doc for doc in yaml.safe_load_all(block.group(1)) if doc]


def rules_for(docs: list[dict[str, Any]], namespace: str | None) -> list[dict[str, Any]]:
    """Rules that apply to a request in `namespace` (None: cluster-scoped)."""
    rules: list[dict[str, Any]] = []
    bound = {(d["roleRef"]["kind"], d["roleRef"]["name"], d["metadata"].get("namespace"))
             for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")}
    for doc in docs:
        if doc["kind"] == "ClusterRole" and any(
                kind == "ClusterRole" and name == doc["metadata"]["name"] for kind, name, _ns in bound):
            # bound by a ClusterRoleBinding: everywhere; by a RoleBinding: only there
            scopes = {ns for kind, name, ns in bound if kind == "ClusterRole" and name == doc["metadata"]["name"]}
            crb = any(d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] == doc["metadata"]["name"] for d in docs)
            if crb or namespace in scopes:
                rules += doc["rules"]
        elif doc["kind"] == "Role" and doc["metadata"]["namespace"] == namespace and \
                ("Role", doc["metadata"]["name"], namespace) in bound:
            rules += doc["rules"]
    return rules


def allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None) -> bool:
    for rule in rules:
        if not ({group, "*"} & set(rule.get("apiGroups") or [])):
            continue
        if not ({resource, "*"} & set(rule.get("resources") or [])):
            continue
        if not ({verb, "*"} & set(rule.get("verbs") or [])):
            continue
        names = rule.get("resourceNames") or []
        if names and name not in names:
            continue
        return True
    return False


def api_group(path: str) -> str:
    parts = path.strip("/").split("/")
    return "" if parts[0] == "api" else parts[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=f"{CHECKOUT / '.build' / 'collections'}:{CHECKOUT / 'tests'}",
        ANSIBLE_COLLECTIONS_PATH=str(CHECKOUT / ".build" / "collections"),
        ANSIBLE_CONFIG=str(CHECKOUT / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    return env


def adhoc(module: str, args: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [str(CHECKOUT / ".venv" / "bin" / "ansible"), "localhost", "-m", f"ocp.kmod_layering.{module}",
         "-a", json.dumps(args)],
        capture_output=True, text=True, env=_env(), cwd=CHECKOUT, timeout=600, check=False,
    )  # fmt: skip
    out, _end = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{"):])
    return dict(out["plays"][0]["tasks"][0]["hosts"]["localhost"])


def test_readme_rbac_grants_every_request_of_the_cluster_modules(lab: LabState, tmp_path: Path) -> None:
    cluster = lab.clusters[0]
    api = RequestLogClient(cluster["api_url"], cluster["token"], lab.ca_file)
    # Without the debug namespace, node_inspect creates it (create_namespace, the default).
    request = urllib.request.Request(f"{cluster['api_url']}/api/v1/namespaces/{DEBUG_NAMESPACE}", method="DELETE",
                                     headers={"Authorization": f"Bearer {cluster['token']}"})
    try:
        urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(lab.ca_file)), timeout=30).close()
    except urllib.error.HTTPError as exc:
        assert exc.code == 404, exc
    start = len(api.records())
    conn = {"kubeconfig": cluster["kubeconfig"], "cluster_name": cluster["name"]}
    image = lab.releases[0]["images"]["driver-toolkit"]  # any digest-pinned image: the verdict does not matter here
    modules = [{"name": "kmodlab_core", "options": "level=3"}]
    results = {
        # the verify role's two paths
        "node_inspect": adhoc("node_inspect", {**conn, "pools": ["worker"], "expected_image": image,
                                               "expected_modules": modules, "timeout": 240}),
        "mco_node_state": adhoc("mco_node_state", {**conn, "pools": ["worker"], "expected_image": image,
                                                   "expected_modules": modules}),
        # and the other cluster modules' reads
        # (a MachineConfig that does not exist: the pool is done at once)
        "mco_rollout_wait": adhoc("mco_rollout_wait", {"kubeconfig": cluster["kubeconfig"], "pools": ["worker"],
                                                       "absent_machine_configs": ["99-kmod-layering-rbac-test"],
                                                       "timeout": 120}),
        "convergence_check": adhoc("convergence_check", {
            **conn, "pools": ["worker"], "modules": [], "repository": f"{lab.registry['host']}/kmodtest/rbac",
            "recipe_files": [str(CHECKOUT / "roles" / "build" / "templates" / "Containerfile.j2")],
            "registry": {"auth_file": str(lab.registry["auth_file"]), "ca_path": str(lab.ca_file)}}),
    }
    assert results["node_inspect"]["pods_created"] > 0, results["node_inspect"]
    records = [r for r in api.records()[start:] if (r.get("user_agent") or "").startswith(COLLECTION_AGENT)]
    agents = {r["user_agent"].split()[0].split("/")[0] for r in records}
    assert {COLLECTION_AGENT + m for m in results} <= agents, (agents, {m: r.get("msg") for m, r in results.items()})

    docs = readme_rbac()
    denied, seen = [], set()
    for record in records:
        group = api_group(record["path"])
        resource = record["resource"] + ("/" + record["subresource"] if record["subresource"] else "")
        key = (record["user_agent"].split()[0], record["verb"], group, resource, record["namespace"])
        seen.add(key)
        if not allowed(rules_for(docs, record["namespace"]), group, resource, record["verb"], record["name"]):
            denied.append(key)
    assert ("ocp.kmod_layering.node_inspect", "create", "", "namespaces", None) in seen
    assert not denied, "requests the README's RBAC does not grant:\n" + "\n".join(map(str, sorted(set(denied))))
    # The debug pods are privileged: their namespace must grant `use` of the privileged SCC.
    pod_namespaces = {r["namespace"] for r in records if r["verb"] == "create" and r["resource"] == "pods"}
    assert pod_namespaces
    for namespace in pod_namespaces:
        assert allowed(rules_for(docs, namespace), "security.openshift.io", "securitycontextconstraints", "use",
                       "privileged"), namespace
    print("\nrequests seen:\n" + "\n".join(map(str, sorted(seen, key=str))))
