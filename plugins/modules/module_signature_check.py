#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: module_signature_check
short_description: Check that every module of a built layered image is signed by the fleet's certificate
version_added: 0.3.0
description:
  - Before a layered image is pushed, copies the image's
    C(/usr/lib/modules/<kernel>/extra/) out of local podman storage
    (C(podman create), C(podman cp); nothing runs), then for each C(.ko)
    checks that C(modinfo)'s C(signer), C(sig_key) and C(sig_hashalgo) are the
    certificate's (issuer CN, serial, the signing hash), and that the appended
    PKCS#7 signature verifies against the certificate
    (C(openssl cms -verify) over the module's content).
  - Fails naming each module that is unsigned, signed by another key, or
    whose signature does not verify; the image is then not pushed.
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - ocp.kmod_layering.attributes.read_only
options:
  image:
    description: The local image (repository:tag) the build made.
    type: str
    required: true
  kernel_version:
    description: The image's kernel; the modules are under C(/usr/lib/modules/<kernel_version>/extra/).
    type: str
    required: true
  modules:
    description: The module names the image must carry (each must be there, signed).
    type: list
    elements: str
    default: []
  signing:
    description:
      - The signing facts of M(ocp.kmod_layering.signing_certificate_info)
        (its RV(ocp.kmod_layering.signing_certificate_info#module:signing)),
        with C(certificate_pem).
    type: dict
    required: true
  podman_path:
    description: The podman executable.
    type: str
    default: podman
notes:
  - Needs C(modinfo) (kmod) and C(openssl) on the controller.
seealso:
  - module: ocp.kmod_layering.signing_certificate_info
"""

EXAMPLES = r"""
- name: Check the modules of the image before pushing it
  ocp.kmod_layering.module_signature_check:
    image: registry.example.com/infra/rhcos-kmods:5.14.0-427.el9.x86_64-3f9a2c
    kernel_version: 5.14.0-427.el9.x86_64
    modules: [mydrv]
    signing: "{{ signing.signing }}"
"""

RETURN = r"""
modules:
  description: One entry per C(.ko) file of the image's C(extra/) directory.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The module's name.
      type: str
    file:
      description: Its path in the image.
      type: str
    signer:
      description: C(modinfo -F signer), empty when unsigned.
      type: str
    sig_key:
      description: C(modinfo -F sig_key).
      type: str
    sig_hashalgo:
      description: C(modinfo -F sig_hashalgo).
      type: str
    verified:
      description: Whether the signature verifies against the certificate.
      type: bool
    problems:
      description: What is wrong with this module (empty when nothing).
      type: list
      elements: str
"""

import os
import shutil
import tempfile
import uuid

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _signing

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def copy_out(module, podman, image, path, dest):
    """Copy ``path`` of ``image`` to ``dest`` without running the image."""
    name = "kmod-layering-sigcheck-%s" % uuid.uuid4().hex[:12]
    rc, _out, err = module.run_command([podman, "create", "--pull=never", "--name", name, image])
    if rc != 0:
        module.fail_json(msg="Cannot read the built image %s from podman's storage: %s" % (image, err.strip()))
    try:
        rc, _out, err = module.run_command([podman, "cp", "%s:%s" % (name, path), dest])
        if rc != 0:
            module.fail_json(msg="The image %s has no %s: %s" % (image, path, err.strip()))
    finally:
        module.run_command([podman, "rm", "--force", name])


def verify_signature(module, openssl, ko_path, cert_path, workdir):
    """(verified, detail): the appended PKCS#7 checked by ``openssl cms -verify``."""
    with open(ko_path, "rb") as handle:
        data = handle.read()
    try:
        parts = _signing.split_signature(data)
    except _signing.SigningError as exc:
        return False, str(exc)
    if parts is None:
        return False, "no signature appended"
    content_path = os.path.join(workdir, "content")
    signature_path = os.path.join(workdir, "signature.p7")
    with open(content_path, "wb") as handle:
        handle.write(parts[0])
    with open(signature_path, "wb") as handle:
        handle.write(parts[1])
    rc, _out, err = module.run_command([
        openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", signature_path, "-content", content_path,
        "-certfile", cert_path, "-nointern", "-noverify", "-out", os.devnull])
    return rc == 0, ("" if rc == 0 else "openssl cms -verify: %s" % (err.strip().splitlines() or ["failed"])[0])


def check_image(module, params):
    signing = params["signing"]
    for key in ("signer", "serial", "hash", "certificate_pem"):
        if not signing.get(key):
            module.fail_json(msg="signing has no %s: pass the signing facts of signing_certificate_info" % key)
    podman = module.get_bin_path(params["podman_path"], required=True)
    modinfo = module.get_bin_path("modinfo", required=True, opt_dirs=["/usr/sbin", "/sbin"])
    openssl = module.get_bin_path("openssl", required=True)
    workdir = tempfile.mkdtemp(prefix="kmod-layering-sigcheck-")
    try:
        extra = "/usr/lib/modules/%s/extra" % params["kernel_version"]
        copy_out(module, podman, params["image"], extra + "/.", os.path.join(workdir, "extra"))
        cert_path = os.path.join(workdir, "cert.pem")
        with open(cert_path, "w") as handle:
            handle.write(signing["certificate_pem"])
        files = []
        for dirpath, _dirs, names in os.walk(os.path.join(workdir, "extra")):
            files.extend(os.path.join(dirpath, n) for n in sorted(names) if n.endswith(MODULE_SUFFIXES))
        fields = {}
        if files:
            rc, out, err = module.run_command([modinfo] + files)
            if rc != 0:
                module.fail_json(msg="modinfo failed on the modules of %s: %s" % (params["image"], err.strip()))
            fields = _signing.parse_modinfo(out)
        results = []
        for path in sorted(files):
            name = _signing.module_file_name(path)
            info = fields.get(name, {})
            verified, detail = verify_signature(module, openssl, path, cert_path, workdir)
            problems = _signing.signature_problems(name, info, signing)
            if not verified and info.get("sig_key"):
                problems.append("module %s: its signature does not verify against certificate %s (%s)"
                                % (name, signing.get("subject"), detail))
            in_image = os.path.join(extra, os.path.relpath(path, os.path.join(workdir, "extra")))
            results.append(dict(name=name, file=in_image, signer=info.get("signer", ""), sig_key=info.get("sig_key", ""),
                                sig_hashalgo=info.get("sig_hashalgo", ""), verified=verified, problems=problems))
        return results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            image=dict(type="str", required=True),
            kernel_version=dict(type="str", required=True),
            modules=dict(type="list", elements="str", default=[]),
            signing=dict(type="dict", required=True),
            podman_path=dict(type="str", default="podman"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    results = check_image(module, params)
    found = set(r["name"] for r in results)
    problems = ["module %s is not in the image's extra/ directory" % name.replace("-", "_")
                for name in params["modules"] if name.replace("-", "_") not in found]
    for entry in results:
        problems.extend(entry["problems"])
    if problems:
        module.fail_json(msg="The layered image %s was not pushed: %s. Check kmod_signing_key_file / "
                             "kmod_signing_cert_file, and that no build_command strips or re-signs the modules "
                             "after the build signs them." % (params["image"], "; ".join(problems)),
                         modules=results)
    module.exit_json(changed=False, modules=results)


if __name__ == "__main__":
    main()
