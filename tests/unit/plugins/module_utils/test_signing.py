# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _signing: certificate facts (checked against the openssl
CLI's own reading of the certificate), key/certificate pairing, the module
signature trailer, modinfo parsing, and the build key's signing inputs."""

import struct
import subprocess

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _build
from ansible_collections.ocp.kmod_layering.plugins.module_utils import _signing as s

DTK = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "a" * 64
RHCOS = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "b" * 64
KVER = "5.14.0-427.26.1.el9_4.x86_64"
MODULES = [{"name": "mydrv", "source": "sha256:1", "fingerprint": "sha256:1", "load_at_boot": True}]


def _openssl(*args, **kwargs):
    return subprocess.run(["openssl"] + list(args), check=True, capture_output=True, **kwargs)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    work = tmp_path_factory.mktemp("keys")
    made = {}
    for name, extra in (("ca", ["-addext", "basicConstraints=critical,CA:TRUE"]),
                        ("self", ["-addext", "subjectKeyIdentifier=hash"])):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30",
                 "-subj", "/CN=fleet %s" % name, "-keyout", str(work / (name + ".key")),
                 "-out", str(work / (name + ".pem")), *extra)
        made[name] = work
    # A leaf issued by the CA: modinfo names the issuer as the signer.
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=fleet leaf", "-keyout", str(work / "leaf.key"),
             "-out", str(work / "leaf.csr"))
    _openssl("x509", "-req", "-in", str(work / "leaf.csr"), "-CA", str(work / "ca.pem"), "-CAkey",
             str(work / "ca.key"), "-set_serial", "0x00ab01", "-days", "30", "-out", str(work / "leaf.pem"))
    _openssl("x509", "-in", str(work / "self.pem"), "-outform", "DER", "-out", str(work / "self.der"))
    return work


def test_certificate_facts_agree_with_openssl(keys):
    pem = (keys / "self.pem").read_bytes()
    facts = s.certificate_facts(pem, "sha256")
    fingerprint = _openssl("x509", "-in", str(keys / "self.pem"), "-noout", "-fingerprint", "-sha256",
                           text=True).stdout.split("=", 1)[1].strip()
    assert facts["cert_sha256"] == fingerprint.replace(":", "").lower()
    text = _openssl("x509", "-in", str(keys / "self.pem"), "-noout", "-text", text=True).stdout
    skid = text.split("X509v3 Subject Key Identifier:", 1)[1].split()[0]
    assert facts["skid"] == skid.replace(":", "").lower()
    assert facts["key_description"] == "fleet self: " + facts["skid"]
    assert facts["subject"] == facts["signer"] == "fleet self"
    serial = _openssl("x509", "-in", str(keys / "self.pem"), "-noout", "-serial", text=True).stdout
    assert facts["serial"].replace(":", "") == serial.split("=", 1)[1].strip().lstrip("0") or \
        facts["serial"].replace(":", "") == serial.split("=", 1)[1].strip()
    # DER reads the same.
    assert s.certificate_facts((keys / "self.der").read_bytes(), "sha256")["cert_sha256"] == facts["cert_sha256"]


def test_the_signer_of_an_issued_certificate_is_its_issuer(keys):
    facts = s.certificate_facts((keys / "leaf.pem").read_bytes(), "sha512")
    assert facts["subject"] == "fleet leaf"
    assert facts["signer"] == "fleet ca"
    # libkmod prints the serial's bytes without a leading zero.
    assert facts["serial"] == "AB:01"
    assert facts["hash"] == "sha512"


def test_a_key_matches_only_its_certificate(keys):
    assert s.key_matches_certificate((keys / "self.key").read_bytes(), (keys / "self.pem").read_bytes())
    assert not s.key_matches_certificate((keys / "leaf.key").read_bytes(), (keys / "self.pem").read_bytes())


def test_bad_inputs_are_named_and_the_key_text_is_not_in_the_message(keys):
    with pytest.raises(s.SigningError, match="not a PEM or DER X.509 certificate"):
        s.certificate_facts(b"not a certificate", "sha256")
    with pytest.raises(s.SigningError, match="kmod_signing_hash"):
        s.certificate_facts((keys / "self.pem").read_bytes(), "md5")
    secret = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGtleSB0ZXh0\n-----END PRIVATE KEY-----\n"
    with pytest.raises(s.SigningError) as error:
        s.key_matches_certificate(secret, (keys / "self.pem").read_bytes())
    assert "c2VjcmV0" not in str(error.value)
    encrypted = _openssl("pkey", "-in", str(keys / "self.key"), "-aes256", "-passout", "pass:x").stdout
    with pytest.raises(s.SigningError, match="passphrase"):
        s.key_matches_certificate(encrypted, (keys / "self.pem").read_bytes())


def test_signing_mode():
    assert s.signing_mode("auto") == "auto"
    assert s.signing_mode(True) is True and s.signing_mode("false") is False
    with pytest.raises(s.SigningError, match="kmod_signing"):
        s.signing_mode("sometimes")


def _signed(content, signature, id_type=2):
    # include/linux/module_signature.h: the signature, then struct
    # module_signature (sig_len big-endian in its last 4 bytes), then the magic.
    info = bytes([0, 0, id_type, 0, 0, 0, 0, 0]) + struct.pack(">I", len(signature))
    return content + signature + info + b"~Module signature appended~\n"


def test_split_signature():
    data = _signed(b"\x7fELF module body", b"0\x82pkcs7")
    assert s.split_signature(data) == (b"\x7fELF module body", b"0\x82pkcs7")
    assert s.split_signature(b"\x7fELF unsigned") is None
    with pytest.raises(s.SigningError, match="not PKCS#7"):
        s.split_signature(_signed(b"body", b"sig", id_type=1))
    with pytest.raises(s.SigningError, match="does not fit"):
        s.split_signature(b"x" + bytes([0, 0, 2, 0, 0, 0, 0, 0]) + struct.pack(">I", 999) + b"~Module signature appended~\n")


MODINFO = """filename:       /lib/modules/6.1.0-50-cloud-amd64/extra/kmodlab_core.ko
license:        GPL
depends:
retpoline:      Y
name:           kmodlab_core
vermagic:       6.1.0-50-cloud-amd64 SMP preempt mod_unload modversions
sig_id:         PKCS#7
signer:         fleet self
sig_key:        10:AD:EE:B7:D0:86:F8:77:AB:4E:FB:80:D6:C9:FF:10:
\t\t17:F3:22:26
sig_hashalgo:   sha256
signature:      3A:1B
filename:       /lib/modules/6.1.0-50-cloud-amd64/extra/my-dep.ko.xz
name:           my_dep
"""


def test_parse_modinfo_of_several_modules():
    found = s.parse_modinfo(MODINFO)
    assert sorted(found) == ["kmodlab_core", "my_dep"]
    assert found["kmodlab_core"]["signer"] == "fleet self"
    assert found["kmodlab_core"]["sig_key"] == "10:AD:EE:B7:D0:86:F8:77:AB:4E:FB:80:D6:C9:FF:10:17:F3:22:26"
    assert "signer" not in found["my_dep"]


def test_signature_problems():
    facts = {"signer": "fleet self", "serial": "10:AD", "hash": "sha256"}
    assert s.signature_problems("m", {"signer": "fleet self", "sig_key": "10:ad", "sig_hashalgo": "sha256"},
                                facts) == []
    assert s.signature_problems("m", {}, facts) == ["module m is not signed"]
    problems = s.signature_problems("m", {"signer": "other", "sig_key": "01", "sig_hashalgo": "sha512"}, facts)
    assert [p.split(" is ")[0] for p in problems] == ["module m"] * 3


def test_the_certificate_and_hash_change_the_build_key_and_unsigned_keys_stay():
    recipe = "sha256:r"
    unsigned = _build.build_key(KVER, DTK, RHCOS, MODULES, recipe)
    assert _build.build_key(KVER, DTK, RHCOS, MODULES, recipe, None) == unsigned
    one = {"cert_sha256": "1" * 64, "hash": "sha256", "subject": "a"}
    signed = _build.build_key(KVER, DTK, RHCOS, MODULES, recipe, one)
    assert signed != unsigned
    assert _build.build_key(KVER, DTK, RHCOS, MODULES, recipe, dict(one, subject="renamed")) == signed
    assert _build.build_key(KVER, DTK, RHCOS, MODULES, recipe, dict(one, hash="sha512")) != signed
    assert _build.build_key(KVER, DTK, RHCOS, MODULES, recipe, dict(one, cert_sha256="2" * 64)) != signed
    plan = _build.plan_builds(
        {"a": {"kernel_version": KVER, "driver_toolkit_image": DTK, "rhcos_image": RHCOS, "signing": one},
         "b": {"kernel_version": KVER, "driver_toolkit_image": DTK, "rhcos_image": RHCOS}},
        MODULES, recipe, "registry.example.com/infra/kmods")
    assert [b["signing"] for b in plan["builds"]] == [one, None]
    assert plan["clusters"]["a"] != plan["clusters"]["b"]


@pytest.mark.parametrize("subject, name", [
    ("/CN=fleet signing", "fleet signing"),
    ("/O=Example Corp/CN=fleet signing", "Example Corp: fleet signing"),
    ("/O=Example/CN=Example fleet signing", "Example fleet signing"),  # the CN starts with the O
    ("/O=Example Corp/CN=Example Secure Boot CA", "Example Secure Boot CA"),  # first 7 characters shared
    ("/O=Example Corp", "Example Corp"),
])
def test_the_key_is_named_as_the_kernel_names_it(tmp_path, subject, name):
    # crypto/asymmetric_keys/x509_cert_parser.c, x509_fabricate_name.
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", subject,
             "-keyout", str(tmp_path / "k"), "-out", str(tmp_path / "c"), "-addext", "subjectKeyIdentifier=hash")
    facts = s.certificate_facts((tmp_path / "c").read_bytes(), "sha256") if "CN=" in subject else None
    cert = s.load_certificate((tmp_path / "c").read_bytes())
    assert s.kernel_name(cert.subject) == name
    if facts:
        assert facts["key_description"] == "%s: %s" % (name, facts["skid"])
