# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  auth_file:
    description:
      - Path of a registry auth file, in the C(dockerconfigjson) format of
        C(podman login) / C(~/.docker/config.json) or an OpenShift pull secret
        (a JSON object with an C(auths) key); the legacy form without
        C(auths) and a Kubernetes Secret with C(data[".dockerconfigjson"]) are
        accepted too.
      - Entries are matched by registry host, or C(host/namespace) for a more
        specific entry.
      - If not set, the environment variable E(KMOD_REGISTRY_AUTH_FILE) is
        used, else E(REGISTRY_AUTH_FILE) (the one podman and skopeo read).
    type: path
  pull_secret:
    description:
      - Content of a pull secret (the same formats as O(auth_file)), as a
        dict or JSON text. Its entries are added to those of O(auth_file).
    type: raw
  username:
    description:
      - Username for every registry contacted, or only for
        O(credentials_registry) when that is set; wins over O(auth_file) and
        O(pull_secret) for those registries.
      - If not set, the environment variable E(KMOD_REGISTRY_USERNAME) is
        used (injected by the AWX credential type of this collection, see
        C(docs/awx.md)).
    type: str
  password:
    description:
      - Password or token of O(username).
      - If not set, the environment variable E(KMOD_REGISTRY_PASSWORD) is
        used.
    type: str
  credentials_registry:
    description:
      - Registry host (C(host) or C(host:port)) that O(username) and
        O(password) are for; the other registries keep the credentials of
        O(auth_file) and O(pull_secret). Unset, O(username) applies to every
        registry.
      - If not set, the environment variable E(KMOD_REGISTRY_HOST) is used.
    type: str
  ca_path:
    description:
      - PEM file of the CA certificate(s) that signed the registries' TLS
        certificates. Only these CAs are trusted when it is given.
      - If not set, the environment variable E(KMOD_REGISTRY_CA_FILE) is
        used.
    type: path
  validate_certs:
    description:
      - Verify the registries' TLS certificates. Set to V(false) only for
        throwaway test registries.
    type: bool
    default: true
  cache_dir:
    description:
      - Directory of a content-addressed cache (C(blobs/sha256/<hex>)) of
        manifests fetched by digest, image configs and fully read layers,
        plus the outcome of layer scans; a rerun then downloads no image
        content (a tag still costs one HEAD request).
      - Safe to share between runs and modules.
    type: path
  timeout:
    description:
      - Timeout of each HTTP request, in seconds.
    type: int
    default: 60
notes:
  - Registries are contacted over HTTPS from the host the module runs on
    (usually the controller, with C(delegate_to=localhost)).
  - Docker Registry HTTP API v2 Bearer token flow and Basic auth are
    supported; without credentials access is anonymous.
  - Credentials from the environment (E(KMOD_REGISTRY_HOST),
    E(KMOD_REGISTRY_USERNAME), E(KMOD_REGISTRY_PASSWORD),
    E(KMOD_REGISTRY_CA_FILE), E(KMOD_REGISTRY_AUTH_FILE)) are what the AWX
    credential type C(extensions/awx/credential_types/kmod_registry.yml)
    injects; an option given in the task wins over its variable.
"""
