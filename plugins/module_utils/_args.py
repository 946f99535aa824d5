# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Shared argument spec of the modules that talk to image registries.

Documented by the ``ocp.kmod_layering.registry`` doc fragment.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry import RegistryClient


def registry_argument_spec():
    """Options every registry-reading module accepts (a fresh dict)."""
    return dict(
        auth_file=dict(type="path"),
        pull_secret=dict(type="raw", no_log=True),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        ca_path=dict(type="path"),
        validate_certs=dict(type="bool", default=True),
        cache_dir=dict(type="path"),
        timeout=dict(type="int", default=60),
    )


REGISTRY_REQUIRED_TOGETHER = [["username", "password"]]


def registry_client(params, user_agent=None):
    """A ``RegistryClient`` from module params (see ``registry_argument_spec``)."""
    credentials = (params["username"], params["password"]) if params.get("username") else None
    return RegistryClient(
        auth_file=params.get("auth_file"),
        auth_config=params.get("pull_secret") or None,
        credentials=credentials,
        ca_path=params.get("ca_path"),
        validate_certs=params.get("validate_certs", True),
        cache_dir=params.get("cache_dir"),
        timeout=params.get("timeout") or 60,
        user_agent=user_agent,
    )
