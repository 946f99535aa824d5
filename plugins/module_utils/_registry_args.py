# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Shared argument spec of the modules that talk to image registries.

Documented by the ``ocp.kmod_layering.registry`` doc fragment.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.basic import env_fallback

from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry import RegistryClient, parse_auth_config

# Environment variables the options fall back to: what the AWX credential
# type of extensions/awx/credential_types injects (docs/awx.md).
ENV_AUTH_FILE = ["KMOD_REGISTRY_AUTH_FILE", "REGISTRY_AUTH_FILE"]
ENV_USERNAME = ["KMOD_REGISTRY_USERNAME"]
ENV_PASSWORD = ["KMOD_REGISTRY_PASSWORD"]
ENV_HOST = ["KMOD_REGISTRY_HOST"]
ENV_CA_FILE = ["KMOD_REGISTRY_CA_FILE"]


def registry_argument_spec():
    """Options every registry-reading module accepts (a fresh dict)."""
    return dict(
        auth_file=dict(type="path", fallback=(env_fallback, ENV_AUTH_FILE)),
        pull_secret=dict(type="raw", no_log=True),
        username=dict(type="str", fallback=(env_fallback, ENV_USERNAME)),
        password=dict(type="str", no_log=True, fallback=(env_fallback, ENV_PASSWORD)),
        credentials_registry=dict(type="str", fallback=(env_fallback, ENV_HOST)),
        ca_path=dict(type="path", fallback=(env_fallback, ENV_CA_FILE)),
        validate_certs=dict(type="bool", default=True),
        cache_dir=dict(type="path"),
        timeout=dict(type="int", default=60),
    )


REGISTRY_REQUIRED_TOGETHER = [["username", "password"]]


def registry_client(params, user_agent=None):
    """A ``RegistryClient`` from module params (see ``registry_argument_spec``)."""
    credentials = (params["username"], params["password"] or "") if params.get("username") else None
    auth_config = params.get("pull_secret") or None
    registry = params.get("credentials_registry")
    if credentials and registry:
        # Only for that registry: an entry over those of the pull secret and
        # the auth file; the other registries keep theirs.
        entries = {}
        if auth_config:
            entries = dict((key, {"username": user, "password": secret})
                           for key, (user, secret) in parse_auth_config(auth_config).items())
        entries[registry] = {"username": credentials[0], "password": credentials[1]}
        auth_config = {"auths": entries}
        credentials = None
    return RegistryClient(
        auth_file=params.get("auth_file") or None,
        auth_config=auth_config,
        credentials=credentials,
        ca_path=params.get("ca_path") or None,
        validate_certs=params.get("validate_certs", True),
        cache_dir=params.get("cache_dir"),
        timeout=params.get("timeout") or 60,
        user_agent=user_agent,
    )
