# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Module signing: the fleet's certificate, and the check of signed modules
(private module utility).

``signing_mode(value)``
    ``kmod_signing`` (auto / true / false) → ``"auto"``, ``True``, ``False``.
``certificate_facts(data, hash_algorithm)``
    The signing facts of a PEM or DER certificate: what the build key, the
    image labels, the gate and ``modinfo`` compare (see ``docs/architecture.md``).
``key_matches_certificate(key_pem, cert_data)``
    Whether a private key is the certificate's (raises ``SigningError`` on an
    unreadable or passphrase-protected key).
``split_signature(data)``
    A module file → (signed content, PKCS#7 DER) or None when unsigned: the
    layout ``scripts/sign-file`` appends (``include/linux/module_signature.h``).
``parse_modinfo(text)``
    ``modinfo`` output of one or more modules → ``{name: {field: value}}``.
``signature_problems(name, modinfo_fields, facts)``
    What in a module's ``modinfo`` contradicts the signing facts.

The private key is read here only to compare its public half with the
certificate; it is never returned, written or logged.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import hashlib
import re
import struct

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID
    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - ansible-core depends on cryptography
    HAS_CRYPTOGRAPHY = False

HASH_ALGORITHMS = ("sha256", "sha512")
# The marker scripts/sign-file appends after the signature and its
# struct module_signature (include/linux/module_signature.h).
SIGNATURE_MAGIC = b"~Module signature appended~\n"
# struct module_signature: u8 algo, hash, id_type, signer_len, key_id_len;
# u8 __pad[3]; __be32 sig_len.
_SIGNATURE_INFO = struct.Struct(">BBBBB3xI")
_PKEY_ID_PKCS7 = 2
_MODINFO_LINE = re.compile(r"^([A-Za-z0-9_.-]+):\s*(.*)$")
# modinfo's continuation lines (a long sig_key / signature) start with blanks.
_CONTINUATION = re.compile(r"^\s+(\S.*)$")


class SigningError(ValueError):
    """A signing input is wrong; the message names it and the fix."""


def signing_mode(value):
    """``kmod_signing`` → ``"auto"``, True or False."""
    if isinstance(value, bool):
        return value
    text = str(value if value is not None else "auto").strip().lower()
    if text == "auto":
        return "auto"
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise SigningError("kmod_signing is %r: use auto (sign when a key is given), true or false" % (value,))


def _require_cryptography():
    if not HAS_CRYPTOGRAPHY:  # pragma: no cover
        raise SigningError("the Python package cryptography is needed to read the signing certificate "
                           "(pip install cryptography on the controller or in the execution environment)")


def load_certificate(data):
    """A PEM or DER X.509 certificate (bytes) → cryptography certificate."""
    _require_cryptography()
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise SigningError("the signing certificate is not a PEM or DER X.509 certificate: %s" % exc)


def certificate_der(data):
    """The certificate's DER bytes (what sign-file and a MOK enrolment take)."""
    return load_certificate(data).public_bytes(serialization.Encoding.DER)


def certificate_pem(data):
    return load_certificate(data).public_bytes(serialization.Encoding.PEM)


def _common_name(name):
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return values[0].value if values else ""


def kernel_name(name):
    """A certificate name as the kernel names the key (x509_fabricate_name in
    crypto/asymmetric_keys/x509_cert_parser.c): ``O: CN``, or the CN alone
    when it starts with the O or shares its first 7 characters; the O or the
    email alone when there is no CN."""
    cn = _common_name(name)
    values = name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    org = values[0].value if values else ""
    if cn and org:
        if cn.startswith(org) or (len(cn) >= 7 and len(org) >= 7 and cn[:7] == org[:7]):
            return cn
        return "%s: %s" % (org, cn)
    if cn or org:
        return cn or org
    values = name.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
    return values[0].value if values else ""


def modinfo_hex(value):
    """An integer as kmod's modinfo prints a key id: uppercase hex bytes
    joined by ':', without leading zero bytes (libkmod's BN_bn2bin)."""
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return ":".join("%02X" % byte for byte in bytearray(raw))


def certificate_facts(data, hash_algorithm="sha256"):
    """The signing facts of a certificate, for a given signing hash.

    ``cert_sha256``: fingerprint of the DER; ``subject``: subject CN;
    ``signer``: issuer CN (``modinfo -F signer``); ``serial``: as
    ``modinfo -F sig_key`` prints it; ``skid``: Subject Key Identifier (lower
    hex); ``key_description``: the key's description in the kernel's key
    rings, ``<name>: <skid>`` (``kernel_name`` of the subject; the serial
    without a SKID: x509_key_preparse); ``hash``; ``not_after``.
    """
    if hash_algorithm not in HASH_ALGORITHMS:
        raise SigningError("kmod_signing_hash is %r: use one of %s" % (hash_algorithm, ", ".join(HASH_ALGORITHMS)))
    cert = load_certificate(data)
    der = cert.public_bytes(serialization.Encoding.DER)
    try:
        skid = binascii.hexlify(
            cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest).decode("ascii")
    except x509.ExtensionNotFound:
        skid = ""
    subject = _common_name(cert.subject)
    if not subject:
        raise SigningError("the signing certificate has no subject CN: the kernel and modinfo name the key by it; "
                           "make one with -subj '/CN=<fleet> module signing key'")
    serial_id = skid or ("%x" % cert.serial_number)
    not_after = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after
    return {
        "cert_sha256": hashlib.sha256(der).hexdigest(),
        "subject": subject,
        "signer": _common_name(cert.issuer),
        "serial": modinfo_hex(cert.serial_number),
        "skid": skid,
        "key_description": "%s: %s" % (kernel_name(cert.subject), serial_id),
        "hash": hash_algorithm,
        "not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def key_matches_certificate(key_pem, cert_data):
    """Whether the private key (PEM bytes) belongs to the certificate."""
    _require_cryptography()
    if isinstance(key_pem, str):
        key_pem = key_pem.encode("utf-8")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise SigningError("the signing key is protected by a passphrase: give an unencrypted key (kept in an "
                           "AWX credential or a file only the controller reads)")
    except ValueError:
        # Not the key's text in the message: this may be a secret.
        raise SigningError("the signing key is not a PEM private key (-----BEGIN PRIVATE KEY-----)")
    wanted = load_certificate(cert_data).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    have = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return have == wanted


def split_signature(data):
    """``(content, pkcs7_der)`` of a signed module file, None when unsigned.

    Raises ``SigningError`` on a trailer that does not add up, or a
    signature that is not PKCS#7 (the only kind sign-file writes).
    """
    if not data.endswith(SIGNATURE_MAGIC):
        return None
    end = len(data) - len(SIGNATURE_MAGIC)
    start = end - _SIGNATURE_INFO.size
    if start < 0:
        raise SigningError("the signature trailer is truncated")
    _algo, _hash, id_type, _signer_len, _key_id_len, sig_len = _SIGNATURE_INFO.unpack(data[start:end])
    if id_type != _PKEY_ID_PKCS7:
        raise SigningError("the signature is not PKCS#7 (id_type %d)" % id_type)
    if sig_len <= 0 or sig_len > start:
        raise SigningError("the signature length %d does not fit the file" % sig_len)
    return data[:start - sig_len], data[start - sig_len:start]


def module_file_name(path):
    """The kernel's name of a module file: base name without ``.ko[.xz|.zst|.gz]``, ``-`` as ``_``."""
    base = path.rsplit("/", 1)[-1]
    return re.sub(r"\.ko(\.[a-z]+)?$", "", base).replace("-", "_")


def parse_modinfo(text):
    """``modinfo`` of one or more modules → ``{name: {field: value}}``.

    Each module starts at its ``filename:`` line; the name is the file's
    base name without ``.ko`` (``-`` as ``_``, as the kernel names it).
    Fields given twice (``alias``, ``depends``) keep the first;
    continuation lines (a long key id) are joined.
    """
    modules = {}
    current = None
    field = None
    for line in (text or "").splitlines():
        match = _MODINFO_LINE.match(line)
        if match:
            field, value = match.group(1), match.group(2).strip()
            if field == "filename":
                current = modules.setdefault(module_file_name(value), {"filename": value})
                continue
            if current is not None and field not in current:
                current[field] = value
            continue
        match = _CONTINUATION.match(line)
        if match and current is not None and field in current:
            current[field] += match.group(1).strip()
    return modules


def signature_problems(name, fields, facts):
    """What in one module's ``modinfo`` fields contradicts ``facts`` (empty: none)."""
    if not fields.get("sig_key") and not fields.get("signer"):
        return ["module %s is not signed" % name]
    problems = []
    if fields.get("signer") != facts["signer"]:
        problems.append("module %s is signed by %r, not by %r" % (name, fields.get("signer"), facts["signer"]))
    if (fields.get("sig_key") or "").upper() != facts["serial"]:
        problems.append("module %s is signed with key %s, the certificate's serial is %s"
                        % (name, fields.get("sig_key"), facts["serial"]))
    if fields.get("sig_hashalgo") != facts["hash"]:
        problems.append("module %s is signed with hash %s, kmod_signing_hash is %s"
                        % (name, fields.get("sig_hashalgo"), facts["hash"]))
    return problems
