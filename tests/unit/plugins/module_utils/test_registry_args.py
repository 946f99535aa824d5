# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shared registry argument spec and its wiring into RegistryClient."""

import base64

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _registry_args
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry import parse_pullspec


def _params(**kwargs):
    params = {name: spec.get("default") for name, spec in _registry_args.registry_argument_spec().items()}
    params.update(kwargs)
    return params


def test_secrets_are_no_log_and_tls_verified_by_default():
    spec = _registry_args.registry_argument_spec()
    assert spec["password"]["no_log"] is True and spec["pull_secret"]["no_log"] is True
    assert spec["validate_certs"]["default"] is True
    assert ["username", "password"] in _registry_args.REGISTRY_REQUIRED_TOGETHER


def test_username_wins_over_pull_secret():
    secret = {"auths": {"reg.example.com": {"auth": base64.b64encode(b"fromsecret:pw").decode()}}}
    ref = parse_pullspec("reg.example.com/a/b:1")
    client = _registry_args.registry_client(_params(pull_secret=secret))
    assert client.credentials_for(ref)[0] == ("fromsecret", "pw")
    client = _registry_args.registry_client(_params(pull_secret=secret, username="u", password="p"))
    assert client.credentials_for(ref)[0] == ("u", "p")
    assert client.validate_certs is True
