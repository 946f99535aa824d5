"""The lab's PKI: one CA, a TLS server certificate for 127.0.0.1/localhost
(registries, token server, API servers), and the token server's signing key.

Certificates are reused across `up`s while they are valid, so a client that
trusted the CA once keeps trusting the lab.

Module signing (Secure Boot, `ensure_signing`): the fleet's module-signing
key + certificate, and an "other" one that no lab node trusts. What the
kernel's own `certs/default_x509.genkey` asks for (RSA, sha256,
`basicConstraints=CA:FALSE`, `keyUsage=digitalSignature`,
`extendedKeyUsage=codeSigning`, a subjectKeyIdentifier, which the kernel
puts into the key's description, crypto/asymmetric_keys/x509_public_key.c),
with a subject of one CN, so the key's description in /proc/keys is
`<CN>: <skid hex>`. Made once per state dir; the certificates beside
lab.json (`signing/<name>.crt`, `.der`), the keys in `pki-private/`.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import paths

SERVER_IPS = ("127.0.0.1",)
SERVER_NAMES = ("localhost",)
# Regenerate anything that would expire within this margin.
_MIN_REMAINING = datetime.timedelta(days=2)


@dataclasses.dataclass(frozen=True)
class LabPKI:
    ca_cert: Path
    ca_key: Path
    server_cert: Path  # leaf + CA chain
    server_key: Path
    token_cert: Path  # the token signing key's certificate (registry rootcertbundle)
    token_key: Path


def _pki_paths(layout: paths.StateLayout) -> LabPKI:
    return LabPKI(
        ca_cert=layout.ca_file,
        ca_key=layout.private / "ca.key",
        server_cert=layout.private / "server.crt",
        server_key=layout.private / "server.key",
        token_cert=layout.private / "token-signing.crt",
        token_key=layout.private / "token-signing.key",
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)


def _write_certs(path: Path, *certs: x509.Certificate) -> None:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: expected an EC private key")
    return key


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _still_valid(cert_path: Path, key_path: Path) -> bool:
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        cert = load_cert(cert_path)
        key = load_key(key_path)
    except ValueError:
        return False
    if cert.public_key() != key.public_key():
        return False
    return cert.not_valid_after_utc - _now() > _MIN_REMAINING


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _make_ca(pki: LabPKI) -> None:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kmodlab CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(pki.ca_key, key)
    _write_certs(pki.ca_cert, cert)


def _issue(
    pki: LabPKI,
    cert_path: Path,
    key_path: Path,
    common_name: str,
    *,
    server: bool,
) -> None:
    ca_key = load_key(pki.ca_key)
    ca_cert = load_cert(pki.ca_cert)
    key = _new_key()
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=server,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
        sans += [x509.DNSName(name) for name in SERVER_NAMES]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(key_path, key)
    # Servers send the chain; the CA is what clients trust.
    if server:
        _write_certs(cert_path, cert, ca_cert)
    else:
        _write_certs(cert_path, cert)


def ensure_pki(layout: paths.StateLayout) -> LabPKI:
    """Create what is missing or about to expire; reuse the rest."""
    pki = _pki_paths(layout)
    pki.ca_cert.parent.mkdir(parents=True, exist_ok=True)
    pki.ca_key.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(pki.ca_key.parent, 0o700)
    ca_renewed = False
    if not _still_valid(pki.ca_cert, pki.ca_key):
        _make_ca(pki)
        ca_renewed = True
    ca_cert = load_cert(pki.ca_cert)
    for cert_path, key_path, name, server in (
        (pki.server_cert, pki.server_key, "kmodlab server", True),
        (pki.token_cert, pki.token_key, "kmodlab token signer", False),
    ):
        if ca_renewed or not _still_valid(cert_path, key_path) or not _issued_by(load_cert(cert_path), ca_cert):
            _issue(pki, cert_path, key_path, name, server=server)
    return pki


def pki_for(layout: paths.StateLayout) -> LabPKI:
    """Paths of an existing PKI (no creation)."""
    return _pki_paths(layout)


# ---------------------------------------------------------------- module signing (Secure Boot)

SIGNING_SUBJECTS = {"fleet": "kmodlab fleet module signing", "other": "kmodlab other module signing"}


@dataclasses.dataclass(frozen=True)
class SigningCert:
    """One module-signing key and its certificate (PEM and DER)."""

    name: str
    key: Path
    cert: Path
    cert_der: Path

    def facts(self) -> dict[str, str]:
        """The paths under the product's variable names (lab.json `lab_signing`, the inventory's `lab_signing`)."""
        return {"kmod_signing_key_file": str(self.key), "kmod_signing_cert_file": str(self.cert),
                "cert_der_file": str(self.cert_der)}


def _signing_paths(layout: paths.StateLayout, name: str) -> SigningCert:
    return SigningCert(name=name, key=layout.private / f"signing-{name}.key",
                       cert=layout.root / "signing" / f"{name}.crt", cert_der=layout.root / "signing" / f"{name}.der")


def _make_signing_cert(paths_: SigningCert, common_name: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=36500))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    paths_.cert.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(paths_.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)
    _write_certs(paths_.cert, cert)
    paths_.cert_der.write_bytes(cert.public_bytes(serialization.Encoding.DER))


def _signing_intact(paths_: SigningCert) -> bool:
    if not (paths_.key.is_file() and paths_.cert.is_file() and paths_.cert_der.is_file()):
        return False
    try:
        cert = load_cert(paths_.cert)
        key = serialization.load_pem_private_key(paths_.key.read_bytes(), password=None)
    except ValueError:
        return False
    return cert.public_key() == key.public_key() and paths_.cert_der.read_bytes() == cert.public_bytes(
        serialization.Encoding.DER)


def ensure_signing(layout: paths.StateLayout) -> dict[str, SigningCert]:
    """The fleet's and the "other" module-signing key and certificate of
    this state dir, made if missing (never renewed: a node's enrolled MOK
    must keep matching)."""
    layout.private.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.private, 0o700)
    result = {}
    for name, subject in SIGNING_SUBJECTS.items():
        paths_ = _signing_paths(layout, name)
        if not _signing_intact(paths_):
            _make_signing_cert(paths_, subject)
        result[name] = paths_
    return result


def signing_for(layout: paths.StateLayout) -> dict[str, SigningCert]:
    """Paths of the module-signing keys and certificates (no creation)."""
    return {name: _signing_paths(layout, name) for name in SIGNING_SUBJECTS}
