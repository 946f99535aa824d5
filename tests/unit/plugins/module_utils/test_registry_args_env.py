# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry options fall back to the variables the AWX credential type
injects (KMOD_REGISTRY_*), and credentials scoped to one registry leave the
others' pull-secret entries alone."""

import base64

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _registry_args
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry import parse_pullspec

ENV = {
    "KMOD_REGISTRY_HOST": "registry.example.com:5000",
    "KMOD_REGISTRY_USERNAME": "robot",
    "KMOD_REGISTRY_PASSWORD": "s3cret",
    "KMOD_REGISTRY_CA_FILE": "/runner/env/ca.pem",
    "KMOD_REGISTRY_AUTH_FILE": "/runner/env/auth.json",
}


def _validated(params):
    result = ArgumentSpecValidator(_registry_args.registry_argument_spec()).validate(params)
    assert not result.error_messages, result.error_messages
    return result.validated_parameters


def test_every_registry_option_falls_back_to_its_variable(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    params = _validated({})
    assert (params["credentials_registry"], params["username"], params["password"]) == (
        "registry.example.com:5000", "robot", "s3cret")
    assert (params["ca_path"], params["auth_file"]) == ("/runner/env/ca.pem", "/runner/env/auth.json")
    # A task's own value wins over the variable.
    assert _validated({"username": "other", "password": "pw"})["username"] == "other"


def test_auth_file_falls_back_to_podmans_variable(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REGISTRY_AUTH_FILE", "/run/containers/0/auth.json")
    params = _validated({})
    assert params["auth_file"] == "/run/containers/0/auth.json"
    assert params["username"] is None and params["credentials_registry"] is None


def _params(**kwargs):
    params = {name: spec.get("default") for name, spec in _registry_args.registry_argument_spec().items()}
    params.update(kwargs)
    return params


@pytest.mark.parametrize("registry", ["registry.example.com:5000", "https://registry.example.com:5000/"])
def test_scoped_credentials_apply_to_their_registry_only(registry):
    secret = {"auths": {
        "quay.io": {"auth": base64.b64encode(b"quayuser:quaypw").decode()},
        "registry.example.com:5000": {"auth": base64.b64encode(b"old:oldpw").decode()},
    }}
    client = _registry_args.registry_client(_params(
        pull_secret=secret, username="robot", password="s3cret", credentials_registry=registry))
    ours = parse_pullspec("registry.example.com:5000/infra/rhcos-kmods:abc")
    release = parse_pullspec("quay.io/openshift-release-dev/ocp-release:4.16.30-x86_64")
    elsewhere = parse_pullspec("registry.other.com/a/b:1")
    assert client.credentials_for(ours)[0] == ("robot", "s3cret")
    assert client.credentials_for(release)[0] == ("quayuser", "quaypw")
    assert client.credentials_for(elsewhere)[0] is None


def test_unscoped_credentials_apply_to_every_registry():
    client = _registry_args.registry_client(_params(username="robot", password="s3cret"))
    assert client.credentials_for(parse_pullspec("quay.io/a/b:1"))[0] == ("robot", "s3cret")
    assert client.credentials_for(parse_pullspec("registry.other.com/a/b:1"))[0] == ("robot", "s3cret")
