#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: signing_certificate_info
short_description: Check the fleet's module-signing key and certificate and return the signing facts
version_added: 0.3.0
description:
  - Decides whether the modules are signed (O(mode)), checks that the private
    key is the certificate's, and returns the certificate's signing facts -
    its fingerprint (part of the build key, the image labels and our
    MachineConfig's annotations), the names C(modinfo) and the kernel give the
    key, and the hash.
  - Nodes booted with UEFI Secure Boot run a kernel in lockdown that refuses
    a module it cannot verify ("Key was rejected by service"); they accept
    the modules only when this certificate is one of their trusted keys (a
    Machine Owner Key enrolled with C(mokutil --import)). See the user guide.
  - The private key is read only to compare its public half with the
    certificate; it is never returned, written or logged (O(private_key_content)
    is C(no_log)).
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - ocp.kmod_layering.attributes.read_only
options:
  mode:
    description:
      - V(auto) signs when a key is given (O(private_key) or
        O(private_key_content)); V(true) requires one; V(false) never signs.
    type: str
    choices: [auto, "true", "false"]
    default: auto
  private_key:
    description: PEM file of the signing key (unencrypted) on the controller.
    type: path
  private_key_content:
    description:
      - The signing key's PEM text, e.g. from an AWX credential. Wins over
        O(private_key).
      - If not set, the environment variable E(KMOD_SIGNING_KEY) is used.
    type: str
  certificate:
    description: PEM or DER file of the signing key's X.509 certificate.
    type: path
  certificate_content:
    description:
      - The certificate's PEM text. Wins over O(certificate).
      - If not set, the environment variable E(KMOD_SIGNING_CERT) is used.
    type: str
  hash:
    description: The hash C(sign-file) signs with (C(modinfo -F sig_hashalgo)).
    type: str
    choices: [sha256, sha512]
    default: sha256
  cluster:
    description: The cluster these settings are for, named in messages.
    type: str
notes:
  - Needs the Python package C(cryptography) on the controller (ansible-core
    depends on it).
seealso:
  - module: ocp.kmod_layering.module_signature_check
  - name: Module signing (the kernel's documentation)
    description: How the kernel checks module signatures and which key rings it trusts.
    link: https://docs.kernel.org/admin-guide/module-signing.html
"""

EXAMPLES = r"""
- name: Read the fleet's signing certificate
  ocp.kmod_layering.signing_certificate_info:
    private_key: /etc/pki/kmod-layering/signing_key.pem
    certificate: /etc/pki/kmod-layering/signing_key.x509
  register: signing

- name: Show the fingerprint every node must trust
  ansible.builtin.debug:
    msg: "{{ signing.signing.cert_sha256 if signing.enabled else 'modules are not signed' }}"
"""

RETURN = r"""
enabled:
  description: Whether the modules are signed.
  returned: always
  type: bool
signing:
  description: The signing facts; null when O(mode) leaves the modules unsigned.
  returned: always
  type: dict
  contains:
    cert_sha256:
      description: Lowercase hex sha256 of the certificate's DER.
      type: str
    subject:
      description: The certificate subject's CN.
      type: str
    signer:
      description: The issuer's CN, what C(modinfo -F signer) prints for a signed module.
      type: str
    serial:
      description: The serial as C(modinfo -F sig_key) prints it (uppercase hex bytes joined by C(:)).
      type: str
    skid:
      description: The Subject Key Identifier, lowercase hex.
      type: str
    key_description:
      description: The key's name in the kernel's key rings (C(/proc/keys)), C(<subject CN>) colon C(<skid>).
      type: str
    hash:
      description: The signing hash.
      type: str
    not_after:
      description: The end of the certificate's validity (the kernel does not check it for modules).
      type: str
    certificate_pem:
      description: The certificate in PEM (public), for the build context and the boot test's MOK list.
      type: str
    private_key_file:
      description: O(private_key) when the key came from a file, else null (the key came from its content).
      type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _signing


def read_input(path, content, what, cluster):
    """Bytes of ``content``, else of the file ``path``; None when neither."""
    if content:
        return content.encode("utf-8")
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (IOError, OSError) as exc:
        raise _signing.SigningError("%s%s %s cannot be read: %s" % (cluster, what, path, to_native(exc.strerror or exc)))


def signing_facts(params):
    """``(enabled, facts)`` for the module's parameters; raises ``SigningError``."""
    cluster = "cluster %s: " % params["cluster"] if params.get("cluster") else ""
    mode = _signing.signing_mode(params["mode"])
    key = read_input(params["private_key"], params["private_key_content"], "kmod_signing_key_file", cluster)
    if mode is False or (mode == "auto" and key is None):
        return False, None
    if key is None:
        raise _signing.SigningError(
            "%skmod_signing is true but no signing key is given: set kmod_signing_key_file (a PEM file on the "
            "controller) or the KMOD_SIGNING_KEY environment variable (the AWX module-signing credential)" % cluster)
    cert = read_input(params["certificate"], params["certificate_content"], "kmod_signing_cert_file", cluster)
    if cert is None:
        raise _signing.SigningError(
            "%sa signing key is given but no certificate: set kmod_signing_cert_file or KMOD_SIGNING_CERT to the "
            "key's X.509 certificate (the one the nodes enroll as a Machine Owner Key)" % cluster)
    try:
        facts = _signing.certificate_facts(cert, params["hash"])
        matches = _signing.key_matches_certificate(key, cert)
    except _signing.SigningError as exc:
        raise _signing.SigningError(cluster + str(exc))
    if not matches:
        raise _signing.SigningError(
            "%sthe signing key is not the key of certificate %s (sha256 %s): give the certificate made from this "
            "key, or the key of this certificate" % (cluster, facts["subject"], facts["cert_sha256"][:16]))
    facts["certificate_pem"] = _signing.certificate_pem(cert).decode("ascii")
    facts["private_key_file"] = (os.path.abspath(params["private_key"])
                                 if params["private_key"] and not params["private_key_content"] else None)
    return True, facts


def main():
    module = AnsibleModule(
        argument_spec=dict(
            mode=dict(type="str", default="auto", choices=["auto", "true", "false"]),
            private_key=dict(type="path"),
            private_key_content=dict(type="str", no_log=True, fallback=(env_fallback, ["KMOD_SIGNING_KEY"])),
            certificate=dict(type="path"),
            certificate_content=dict(type="str", fallback=(env_fallback, ["KMOD_SIGNING_CERT"])),
            hash=dict(type="str", default="sha256", choices=list(_signing.HASH_ALGORITHMS)),
            cluster=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    try:
        enabled, facts = signing_facts(module.params)
    except _signing.SigningError as exc:
        module.fail_json(msg="%s. Nothing was built or changed." % str(exc).rstrip("."))
    module.exit_json(changed=False, enabled=enabled, signing=facts)


if __name__ == "__main__":
    main()
