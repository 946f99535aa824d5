# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""convergence_check's fleet mode: which options each cluster gets, and that
one cluster's kubeconfig never leaks into another cluster's client (real
kubernetes.core client setup, real kubeconfig files; no API is contacted)."""

import contextlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.ocp.kmod_layering.plugins.module_utils import _convergence_reader, _k8s
from ansible_collections.ocp.kmod_layering.plugins.modules import convergence_check

RECIPE_ARGS = {"modules": [], "repository": "registry.example.com/infra/rhcos-kmods"}


def params(**overrides):
    """The module's parameters as AnsibleModule would hand them over."""
    spec = convergence_check.argument_spec()
    values = dict((key, option.get("default")) for key, option in spec.items())
    values.update(recipe_files=[], **RECIPE_ARGS)
    values.update(overrides)
    if values.get("clusters"):
        entry_keys = convergence_check.cluster_options()
        values["clusters"] = [dict(dict.fromkeys(entry_keys), **entry) for entry in values["clusters"]]
    return values


def test_single_cluster_mode_uses_the_top_level_options():
    (target,) = _convergence_reader.targets(params(kubeconfig="/k/a", cluster_name="a", report_file="/r/a.json",
                                                   pools=["worker", "infra"]))
    assert target["name"] == "a" and target["kubeconfig"] == "/k/a"
    assert target["report_file"] == "/r/a.json" and target["pools"] == ["worker", "infra"]


def test_each_cluster_fills_in_what_it_leaves_unset_from_the_top_level():
    targets = _convergence_reader.targets(params(
        validate_certs=True, ca_cert="/ca/shared.pem", pools=["worker"], release="4.16.30", report_file="/r/top.json",
        clusters=[{"name": "a", "kubeconfig": "/k/a", "report_file": "/r/a.json"},
                  {"name": "b", "host": "https://api.b:6443", "api_key": "b-token", "ca_cert": "/ca/b.pem",
                   "pools": ["infra"], "release": "4.12.77"}]))
    a, b = targets
    assert (a["kubeconfig"], a["ca_cert"], a["validate_certs"], a["pools"], a["release"]) == (
        "/k/a", "/ca/shared.pem", True, ["worker"], "4.16.30")
    assert (b["host"], b["api_key"], b["ca_cert"], b["pools"], b["release"]) == (
        "https://api.b:6443", "b-token", "/ca/b.pem", ["infra"], "4.12.77")
    # The top-level report file is for one cluster: never shared.
    assert a["report_file"] == "/r/a.json" and b["report_file"] is None


def _kubeconfig(path, server, token):
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        # A throwaway cluster's kubeconfig: TLS verification off.
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return str(path)


DISCOVERY = {
    "/version": {"major": "1", "minor": "29", "gitVersion": "v1.29.0"},
    "/api": {"kind": "APIVersions", "versions": ["v1"]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": []},
}


class _DiscoveryOnly(BaseHTTPRequestHandler):
    """Enough of an API server for a client's first contact (discovery)."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = json.dumps(DISCOVERY.get(self.path, {})).encode()
        self.send_response(200 if self.path in DISCOVERY else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def api_servers():
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _DiscoveryOnly) for _i in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield ["http://127.0.0.1:%d" % server.server_address[1] for server in servers]
    for server in servers:
        server.shutdown()


def test_nothing_of_one_clusters_kubeconfig_reaches_the_next_clusters_client(tmp_path, api_servers):
    server_a, server_b = api_servers
    first = _k8s.new_api_client(**{**dict.fromkeys(AUTH_ARG_SPEC),
                                   "kubeconfig": _kubeconfig(tmp_path / "a", server_a, "token-of-a")})
    second = _k8s.new_api_client(**{**dict.fromkeys(AUTH_ARG_SPEC), "host": server_b, "api_key": "token-of-b"})
    first_config = first.client.client.configuration
    second_config = second.client.client.configuration
    assert first_config.host == server_a
    assert "token-of-a" in json.dumps(first_config.api_key)
    assert first_config.verify_ssl is False
    # Cluster b set only a host and a token: nothing of a's kubeconfig may
    # come along, above all not "skip TLS verification".
    assert second_config.host == server_b
    assert "token-of-a" not in json.dumps(second_config.api_key)
    assert "token-of-b" in json.dumps(second_config.api_key)
    assert second_config.verify_ssl is True


def test_duplicate_cluster_names_fail_before_any_read(tmp_path):
    recipe = tmp_path / "Containerfile.j2"
    recipe.write_text("FROM x\n")
    stdout = io.StringIO()
    args = dict(RECIPE_ARGS, recipe_files=[str(recipe)],
                clusters=[{"name": "a", "host": "https://127.0.0.1:1"}, {"name": "a", "host": "https://127.0.0.1:2"}])
    with patch_module_args(args), pytest.raises(SystemExit) as exited, contextlib.redirect_stdout(stdout):
        convergence_check.main()
    result = json.loads(stdout.getvalue())
    assert exited.value.code != 0
    assert result["msg"] == "clusters: each name once, found a more than once"


def test_an_empty_fleet_checks_nothing_rather_than_the_default_cluster(tmp_path):
    """clusters: [] (every cluster opted out) must not fall back to the
    top-level connection (the kubeconfig of whoever runs it)."""
    assert _convergence_reader.targets(params(clusters=[])) == []
    recipe = tmp_path / "Containerfile.j2"
    recipe.write_text("FROM x\n")
    stdout = io.StringIO()
    with patch_module_args(dict(RECIPE_ARGS, recipe_files=[str(recipe)], clusters=[])), \
            pytest.raises(SystemExit) as exited, contextlib.redirect_stdout(stdout):
        convergence_check.main()
    result = json.loads(stdout.getvalue())
    assert exited.value.code == 0
    assert result["clusters"] == {} and result["converged_clusters"] == [] and result["requests"] == 0
