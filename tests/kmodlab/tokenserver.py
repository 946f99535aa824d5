"""A Docker registry token server (the Bearer flow of the distribution spec).

The registry on base+1 answers 401 with
`WWW-Authenticate: Bearer realm="https://127.0.0.1:<base+2>/token",service=…,scope=…`;
clients then ask this server for a token:

    GET /token?service=<service>&scope=repository:<name>:pull,push   (Basic auth)
    -> {"token": JWT, "access_token": JWT, "expires_in": 300, "issued_at": …}

    POST /token  grant_type=password&username=…&password=…&service=…&scope=…
    -> {"access_token": JWT, "expires_in": …, "issued_at": …, "scope": …}

The JWT is ES256, signed with the lab's token signing key. Its header carries
both `x5c` (the signing certificate) and `kid` (the libtrust fingerprint of the
key); distribution 2.8 accepts either when the certificate is in its
`auth.token.rootcertbundle`.

Known users get every action they ask for; anonymous requests get a token with
no access (as public registries do), so the registry then refuses them;
wrong credentials get 401.

Run: python -m kmodlab.tokenserver --config <tokenserver.json>
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import hashlib
import hmac
import http.server
import json
import secrets
import ssl
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

DEFAULT_TTL = 300
PBKDF2_ITERATIONS = 100_000
# Actions a token may grant, per resource type.
GRANTABLE = {
    "repository": {"pull", "push", "delete", "*"},
    "registry": {"*"},
}


# --- pure helpers -----------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The key ID docker/libtrust derives from a key (distribution's `kid`):
    base32 of the first 240 bits of sha256(DER SubjectPublicKeyInfo), in 12
    colon-separated groups of 4."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def parse_scope(scope: str) -> dict[str, Any] | None:
    """`repository:ns/name:pull,push` -> access entry; None if malformed.

    Names may contain ':' (a port in a registry-qualified name), so the type is
    before the first colon and the actions after the last one."""
    first = scope.find(":")
    last = scope.rfind(":")
    if first <= 0 or last == first:
        return None
    rtype, name, actions = scope[:first], scope[first + 1 : last], scope[last + 1 :]
    if not name:
        return None
    return {"type": rtype, "name": name, "actions": [a for a in actions.split(",") if a]}


def grant(requested: list[dict[str, Any]], authenticated: bool) -> list[dict[str, Any]]:
    """What a token carries: known users get the grantable actions they asked for."""
    if not authenticated:
        return []
    access = []
    for entry in requested:
        base_type = entry["type"].split("(", 1)[0]
        allowed = GRANTABLE.get(base_type, set())
        actions = sorted({a for a in entry["actions"] if a in allowed})
        if actions:
            access.append({"type": entry["type"], "name": entry["name"], "actions": actions})
    return access


def hash_password(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> dict[str, Any]:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return {"salt": salt.hex(), "iterations": iterations, "pbkdf2_sha256": digest.hex()}


def check_password(record: dict[str, Any], password: str) -> bool:
    digest = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), bytes.fromhex(record["salt"]), int(record["iterations"])
    )
    return hmac.compare_digest(digest.hex(), record["pbkdf2_sha256"])


def sign_jwt(
    claims: dict[str, Any],
    key: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
) -> str:
    header = {
        "typ": "JWT",
        "alg": "ES256",
        "kid": libtrust_key_id(key.public_key()),
        "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")],
    }
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    der_signature = key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der_signature)
    # JWS ES256 signatures are r||s, 32 bytes each (not DER).
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def claims_for(
    *,
    issuer: str,
    service: str,
    subject: str,
    access: list[dict[str, Any]],
    now: datetime.datetime,
    ttl: int,
) -> dict[str, Any]:
    stamp = int(now.timestamp())
    return {
        "iss": issuer,
        "sub": subject,
        "aud": service,
        "exp": stamp + ttl,
        "nbf": stamp - 1,
        "iat": stamp,
        "jti": secrets.token_hex(16),
        "access": access,
    }


# --- server -----------------------------------------------------------------


class TokenIssuer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.issuer: str = config["issuer"]
        self.service: str = config["service"]
        self.ttl: int = int(config.get("ttl", DEFAULT_TTL))
        self.users: dict[str, dict[str, Any]] = config["users"]
        self.key = _load_ec_key(Path(config["signing_key"]))
        self.cert = x509.load_pem_x509_certificate(Path(config["signing_cert"]).read_bytes())

    def authenticate(self, username: str, password: str) -> bool:
        record = self.users.get(username)
        # Compare against a dummy record for unknown users so timing does not
        # reveal which user names exist.
        if record is None:
            check_password(_DUMMY_RECORD, password)
            return False
        return check_password(record, password)

    def issue(self, subject: str, scopes: list[str], authenticated: bool) -> tuple[str, dict[str, Any]]:
        requested = [entry for entry in (parse_scope(s) for s in scopes) if entry is not None]
        now = datetime.datetime.now(datetime.timezone.utc)
        claims = claims_for(
            issuer=self.issuer,
            service=self.service,
            subject=subject,
            access=grant(requested, authenticated),
            now=now,
            ttl=self.ttl,
        )
        return sign_jwt(claims, self.key, self.cert), claims


_DUMMY_RECORD = hash_password("", salt=b"\0" * 16)


def _load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SystemExit(f"{path}: the token signing key must be an EC P-256 key")
    return key


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


class TokenHandler(http.server.BaseHTTPRequestHandler):
    server_version = "kmodlab-tokenserver"
    issuer: TokenIssuer  # set on the subclass made by serve()

    def _send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _unauthorized(self) -> None:
        self._send_json(
            401,
            {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
            {"WWW-Authenticate": 'Basic realm="kmodlab token server"'},
        )

    def _respond(self, params: dict[str, list[str]], credentials: tuple[str, str] | None, oauth: bool) -> None:
        service = (params.get("service") or [""])[0]
        if service and service != self.issuer.service:
            self._send_json(400, {"error": "invalid_request", "error_description": f"unknown service {service!r}"})
            return
        if credentials is not None:
            if not self.issuer.authenticate(*credentials):
                self._unauthorized()
                return
            subject, authenticated = credentials[0], True
        else:
            subject, authenticated = "", False
        scopes = params.get("scope", [])
        if oauth:
            # OAuth2 form: one space-separated scope parameter.
            scopes = [s for value in scopes for s in value.split(" ") if s]
        token, claims = self.issuer.issue(subject, scopes, authenticated)
        issued_at = datetime.datetime.fromtimestamp(claims["iat"], datetime.timezone.utc)
        body: dict[str, Any] = {
            "access_token": token,
            "expires_in": self.issuer.ttl,
            "issued_at": issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if oauth:
            body["scope"] = " ".join(scopes)
        else:
            body["token"] = token
        self._send_json(200, body)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/healthz":
            self._send_json(200, {"status": "ok"})
            return
        if url.path != "/token":
            self._send_json(404, {"error": "not found"})
            return
        params = urllib.parse.parse_qs(url.query)
        header = self.headers.get("Authorization")
        credentials = _basic_credentials(header)
        if header and credentials is None:
            self._unauthorized()
            return
        self._respond(params, credentials, oauth=False)

    def do_POST(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            self._send_json(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        params = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        grant_type = (params.get("grant_type") or [""])[0]
        if grant_type != "password":
            self._send_json(400, {"error": "unsupported_grant_type"})
            return
        credentials = ((params.get("username") or [""])[0], (params.get("password") or [""])[0])
        self._respond(params, credentials, oauth=True)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Request lines only: no headers, so no credentials in the log.
        sys.stderr.write(f"{self.log_date_time_string()} {self.address_string()} {format % args}\n")
        sys.stderr.flush()


def serve(config: dict[str, Any]) -> None:
    issuer = TokenIssuer(config)
    handler = type("BoundTokenHandler", (TokenHandler,), {"issuer": issuer})
    host, port = config["listen"].rsplit(":", 1)
    server = http.server.ThreadingHTTPServer((host, int(port)), handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config["tls_cert"], config["tls_key"])
    # Handshake in the worker thread, so one stalled client cannot block accept().
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    sys.stderr.write(f"kmodlab token server on https://{config['listen']}/token\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kmodlab.tokenserver", description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument(
        "--config",
        required=True,
        type=Path,
        help="JSON: listen, tls_cert, tls_key, signing_cert, signing_key, issuer, service, ttl, "
        "users {name: {salt, iterations, pbkdf2_sha256}}",
    )
    args = parser.parse_args(argv)
    serve(json.loads(args.config.read_text()))


if __name__ == "__main__":
    main()
