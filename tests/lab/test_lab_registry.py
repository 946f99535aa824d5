"""The lab's registries are real: TLS, Basic auth, the token (Bearer) flow
end to end with skopeo, and `down` leaves nothing behind.

Independent of the release images: a tiny OCI image is written here.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import gzip
import hashlib
import http.client
import io
import json
import os
import socket
import ssl
import subprocess
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from kmodlab import paths, pki, pytest_plugin, registry, tokenserver
from kmodlab.state import LabState

LAYER_FILE = "hello/kmodlab.txt"
LAYER_TEXT = b"lab registry test layer\n"


# --- helpers ------------------------------------------------------------------


def write_oci_image(root: Path, tag: str) -> str:
    """A one-layer OCI image layout; returns the manifest digest."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(LAYER_FILE)
        info.size = len(LAYER_TEXT)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(LAYER_TEXT))
    # Compressed, so skopeo pushes it as is (it would gzip a plain tar, and
    # the manifest digest would change).
    layer_digest, layer_size = blob(gzip.compress(buffer.getvalue(), mtime=0))
    diff_id = "sha256:" + hashlib.sha256(buffer.getvalue()).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_digest, config_size = blob(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}
        ],
    }
    manifest_digest, manifest_size = blob(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (root / "index.json").write_text(json.dumps(index))
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return manifest_digest


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120, check=False)


@dataclasses.dataclass
class Response:
    status: int
    headers: Any
    body: bytes


def get(url: str, *, ca_file: str | None, headers: dict[str, str] | None = None) -> Response:
    context = ssl.create_default_context(cafile=ca_file)
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return Response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.headers, error.read())


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def auth_file_credentials(auth_file: str, host: str) -> tuple[str, str]:
    entry = json.loads(Path(auth_file).read_text())["auths"][host]
    username, password = base64.b64decode(entry["auth"]).decode().split(":", 1)
    return username, password


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_for(lab: LabState, scope: str, credentials: tuple[str, str]) -> tuple[int, dict[str, Any]]:
    query = urllib.parse.urlencode({"service": registry.TOKEN_SERVICE, "scope": scope})
    url = f"https://{paths.HOST}:{paths.ports().token_server}/token?{query}"
    response = get(url, ca_file=lab.ca_file, headers=basic(*credentials))
    return response.status, (json.loads(response.body) if response.status == 200 else {})


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline}")
    return found


# --- pure functions -----------------------------------------------------------


def test_parse_scope_keeps_colons_in_names() -> None:
    assert tokenserver.parse_scope("repository:127.0.0.1:5000/ns/img:pull,push") == {
        "type": "repository",
        "name": "127.0.0.1:5000/ns/img",
        "actions": ["pull", "push"],
    }
    assert tokenserver.parse_scope("registry:catalog:*") == {"type": "registry", "name": "catalog", "actions": ["*"]}
    assert tokenserver.parse_scope("garbage") is None
    assert tokenserver.parse_scope("repository::pull") is None


def test_grant_only_to_known_users_and_known_actions() -> None:
    requested = [{"type": "repository", "name": "a/b", "actions": ["pull", "push", "fly"]}]
    assert tokenserver.grant(requested, authenticated=False) == []
    assert tokenserver.grant(requested, authenticated=True) == [
        {"type": "repository", "name": "a/b", "actions": ["pull", "push"]}
    ]


def test_password_hash_round_trip() -> None:
    record = tokenserver.hash_password("s3cret", iterations=1000)
    assert tokenserver.check_password(record, "s3cret")
    assert not tokenserver.check_password(record, "s3cret ")
    assert "s3cret" not in json.dumps(record)


def test_state_round_trip_keeps_unknown_keys(tmp_path: Path) -> None:
    state = LabState.load(tmp_path)
    assert state.releases == [] and state.registry.host == ""
    state.registry.host = "127.0.0.1:1"
    state.releases.append({"version": "4.12.77", "digest": "sha256:x"})
    state.extra["future_key"] = {"a": 1}
    state.save()
    assert (tmp_path / "lab.json").stat().st_mode & 0o777 == 0o600
    loaded = LabState.load(tmp_path)
    assert loaded.registry["host"] == "127.0.0.1:1"
    assert loaded.release("4.12.77")["digest"] == "sha256:x"
    assert json.loads((tmp_path / "lab.json").read_text())["future_key"] == {"a": 1}


def test_pki_is_reused_and_keys_are_private(tmp_path: Path) -> None:
    layout = paths.layout(tmp_path)
    first = pki.ensure_pki(layout)
    saved = {p: p.read_bytes() for p in (first.ca_cert, first.server_cert, first.token_cert)}
    again = pki.ensure_pki(layout)
    assert {p: p.read_bytes() for p in (again.ca_cert, again.server_cert, again.token_cert)} == saved
    for key in (first.ca_key, first.server_key, first.token_key):
        assert key.stat().st_mode & 0o077 == 0
    # A server certificate from another CA is replaced on the next run.
    other = pki.ensure_pki(paths.layout(tmp_path / "other"))
    first.server_cert.write_bytes(other.server_cert.read_bytes())
    first.server_key.write_bytes(other.server_key.read_bytes())
    pki.ensure_pki(layout)
    server = x509.load_pem_x509_certificate(first.server_cert.read_bytes())
    server.verify_directly_issued_by(x509.load_pem_x509_certificate(first.ca_cert.read_bytes()))
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


# --- TLS ------------------------------------------------------------------------


@pytest.mark.lab
def test_registries_require_tls_verified_by_the_lab_ca(lab_registry: LabState, tmp_path: Path) -> None:
    hosts = [lab_registry.registry.host, lab_registry.registry.token_host]
    for host in hosts:
        # With the lab CA: the registry answers (401: auth required).
        response = get(f"https://{host}/v2/", ca_file=lab_registry.ca_file)
        assert response.status == 401
        assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"

        # Plain HTTP never reaches the registry API.
        address, port = host.rsplit(":", 1)
        conn = http.client.HTTPConnection(address, int(port), timeout=5)
        conn.request("GET", "/v2/")
        plain = conn.getresponse()
        assert plain.status == 400 and plain.getheader("Docker-Distribution-Api-Version") is None
        conn.close()

        # The system trust store alone does not trust the lab.
        with pytest.raises(urllib.error.URLError) as raised:
            get(f"https://{host}/v2/", ca_file=None)
        assert isinstance(raised.value.reason, ssl.SSLCertVerificationError)

    # The certificate names localhost too.
    port = lab_registry.registry.host.rsplit(":", 1)[1]
    assert get(f"https://localhost:{port}/v2/", ca_file=lab_registry.ca_file).status == 401

    # The CA file's directory is a containers cert dir with the CA alone in it.
    assert sorted(p.name for p in Path(lab_registry.ca_file).parent.iterdir()) == ["ca.crt"]
    # skopeo without the lab CA refuses the registry.
    result = skopeo("inspect", "--authfile", lab_registry.registry.auth_file, f"docker://{hosts[0]}/none/such:x")
    assert result.returncode != 0 and "x509" in result.stderr


# --- Basic auth -------------------------------------------------------------------


@pytest.mark.lab
def test_basic_auth_with_the_auth_file(lab_registry: LabState, registry_client_args: dict[str, str]) -> None:
    host = lab_registry.registry.host
    ca_file = registry_client_args["ca_path"]
    username, password = auth_file_credentials(registry_client_args["auth_file"], host)
    assert (username, password) == (lab_registry.registry.username, lab_registry.registry.password)
    assert len(password) >= 20

    assert get(f"https://{host}/v2/", ca_file=ca_file, headers=basic(username, password)).status == 200

    wrong = get(f"https://{host}/v2/", ca_file=ca_file, headers=basic(username, password + "x"))
    assert wrong.status == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Basic ")

    assert get(f"https://{host}/v2/", ca_file=ca_file, headers=basic("nobody", password)).status == 401

    # The auth file covers the token registry as well.
    assert auth_file_credentials(registry_client_args["auth_file"], lab_registry.registry.token_host) == (
        username,
        password,
    )


# --- token flow ---------------------------------------------------------------------


@pytest.mark.lab
def test_token_registry_challenges_with_the_token_realm(lab_registry: LabState) -> None:
    response = get(f"https://{lab_registry.registry.token_host}/v2/", ca_file=lab_registry.ca_file)
    assert response.status == 401
    challenge = response.headers["WWW-Authenticate"]
    token_port = paths.ports().token_server
    assert challenge.startswith("Bearer ")
    assert f'realm="https://127.0.0.1:{token_port}/token"' in challenge
    assert f'service="{registry.TOKEN_SERVICE}"' in challenge

    # Basic credentials are not accepted by the token registry.
    creds = (lab_registry.registry.username, lab_registry.registry.password)
    url = f"https://{lab_registry.registry.token_host}/v2/"
    assert get(url, ca_file=lab_registry.ca_file, headers=basic(*creds)).status == 401


@pytest.mark.lab
def test_token_server_issues_signed_scoped_tokens(lab_registry: LabState) -> None:
    creds = (lab_registry.registry.username, lab_registry.registry.password)
    status, body = token_for(lab_registry, "repository:kmodlab/x:pull,push", creds)
    assert status == 200
    assert body["token"] == body["access_token"]
    assert body["expires_in"] > 0 and body["issued_at"].endswith("Z")

    header_b64, claims_b64, signature_b64 = body["token"].split(".")
    header = json.loads(b64url_decode(header_b64))
    claims = json.loads(b64url_decode(claims_b64))
    assert header["alg"] == "ES256"
    assert claims["iss"] == registry.TOKEN_ISSUER
    assert claims["aud"] == registry.TOKEN_SERVICE
    assert claims["sub"] == creds[0]
    assert claims["nbf"] <= claims["iat"] < claims["exp"]
    assert claims["jti"]
    assert claims["access"] == [{"type": "repository", "name": "kmodlab/x", "actions": ["pull", "push"]}]

    # Signed by the certificate the registry trusts (its rootcertbundle).
    signer = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    bundle = json.loads(Path(lab_registry.root, "registry", "config-token.yml").read_text())
    trusted = x509.load_pem_x509_certificate(Path(bundle["auth"]["token"]["rootcertbundle"]).read_bytes())
    assert signer == trusted
    raw = b64url_decode(signature_b64)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public_key = trusted.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public_key.verify(der, f"{header_b64}.{claims_b64}x".encode(), ec.ECDSA(hashes.SHA256()))

    # The OAuth2 form (POST, password grant) gives a token the registry takes.
    form = urllib.parse.urlencode(
        {
            "grant_type": "password",
            "username": creds[0],
            "password": creds[1],
            "service": registry.TOKEN_SERVICE,
            "scope": "repository:kmodlab/x:pull",
            "client_id": "kmodlab-test",
        }
    ).encode()
    context = ssl.create_default_context(cafile=lab_registry.ca_file)
    token_url = f"https://{paths.HOST}:{paths.ports().token_server}/token"
    with urllib.request.urlopen(urllib.request.Request(token_url, data=form), context=context, timeout=10) as response:
        oauth = json.loads(response.read())
    bearer = {"Authorization": f"Bearer {oauth['access_token']}"}
    assert get(f"https://{lab_registry.registry.token_host}/v2/", ca_file=lab_registry.ca_file, headers=bearer).status == 200
    wrong_form = form.replace(creds[1].encode(), b"wrong")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(token_url, data=wrong_form), context=context, timeout=10)
    assert refused.value.code == 401

    # Wrong password, unknown user: 401.
    assert token_for(lab_registry, "repository:kmodlab/x:pull", (creds[0], creds[1] + "x"))[0] == 401
    assert token_for(lab_registry, "repository:kmodlab/x:pull", ("nobody", creds[1]))[0] == 401


def _signed(header: dict[str, Any], claims: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    signing_input = tokenserver.b64url(json.dumps(header).encode()) + "." + tokenserver.b64url(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + tokenserver.b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


@pytest.mark.lab
def test_registry_accepts_kid_or_x5c_and_rejects_other_keys(lab_registry: LabState) -> None:
    """What distribution 2.8 checks, against the real binary."""
    config = json.loads(Path(lab_registry.root, "registry", "tokenserver.json").read_text())
    key = serialization.load_pem_private_key(Path(config["signing_key"]).read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(Path(config["signing_cert"]).read_bytes())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    claims = tokenserver.claims_for(
        issuer=registry.TOKEN_ISSUER,
        service=registry.TOKEN_SERVICE,
        subject="kmodlab",
        access=[],
        now=datetime.datetime.now(datetime.timezone.utc),
        ttl=60,
    )
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    kid = tokenserver.libtrust_key_id(key.public_key())
    url = f"https://{lab_registry.registry.token_host}/v2/"

    def status(token: str) -> int:
        return get(url, ca_file=lab_registry.ca_file, headers={"Authorization": f"Bearer {token}"}).status

    assert status(_signed({"typ": "JWT", "alg": "ES256", "kid": kid}, claims, key)) == 200
    assert status(_signed({"typ": "JWT", "alg": "ES256", "x5c": x5c}, claims, key)) == 200
    stranger = ec.generate_private_key(ec.SECP256R1())
    assert status(_signed({"typ": "JWT", "alg": "ES256", "kid": kid}, claims, stranger)) == 401
    assert status(_signed({"typ": "JWT", "alg": "ES256", "kid": kid}, dict(claims, iss="someone-else"), key)) == 401
    assert status(_signed({"typ": "JWT", "alg": "ES256", "kid": kid}, dict(claims, aud="other-service"), key)) == 401


@pytest.mark.lab
def test_pull_only_token_cannot_push(lab_registry: LabState) -> None:
    creds = (lab_registry.registry.username, lab_registry.registry.password)
    upload_url = f"https://{lab_registry.registry.token_host}/v2/kmodlab/readonly/blobs/uploads/"
    context = ssl.create_default_context(cafile=lab_registry.ca_file)

    def post(token: str) -> int:
        request = urllib.request.Request(upload_url, method="POST", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    pull_only = token_for(lab_registry, "repository:kmodlab/readonly:pull", creds)[1]
    push = token_for(lab_registry, "repository:kmodlab/readonly:pull,push", creds)[1]
    assert post(pull_only["token"]) == 401
    assert post(push["token"]) == 202


@pytest.mark.lab
def test_skopeo_copy_through_the_token_registry(lab_registry: LabState, tmp_path: Path) -> None:
    image_dir = tmp_path / "oci"
    digest = write_oci_image(image_dir, "v1")
    token_host, basic_host = lab_registry.registry.token_host, lab_registry.registry.host
    cert_dir = str(Path(lab_registry.ca_file).parent)
    auth_file = lab_registry.registry.auth_file
    reference = f"docker://{token_host}/kmodlab-test/small:v1"

    pushed = skopeo("copy", "--dest-authfile", auth_file, "--dest-cert-dir", cert_dir, f"oci:{image_dir}:v1", reference)
    assert pushed.returncode == 0, pushed.stderr

    # Same digest through both registries (shared storage).
    for host in (token_host, basic_host):
        inspected = skopeo(
            "inspect", "--raw", "--authfile", auth_file, "--cert-dir", cert_dir, f"docker://{host}/kmodlab-test/small:v1"
        )
        assert inspected.returncode == 0, inspected.stderr
        assert "sha256:" + hashlib.sha256(inspected.stdout.encode()).hexdigest() == digest

    # Pull it back by digest and read the layer.
    out_dir = tmp_path / "pulled"
    pulled = skopeo(
        "copy",
        "--src-authfile",
        auth_file,
        "--src-cert-dir",
        cert_dir,
        f"docker://{token_host}/kmodlab-test/small@{digest}",
        f"dir:{out_dir}",
    )
    assert pulled.returncode == 0, pulled.stderr
    manifest = json.loads((out_dir / "manifest.json").read_text())
    layer = out_dir / manifest["layers"][0]["digest"].split(":", 1)[1]
    with tarfile.open(layer, "r:gz") as tar:
        member = tar.extractfile(LAYER_FILE)
        assert member is not None and member.read() == LAYER_TEXT

    # Wrong credentials: the token server refuses them.
    wrong = skopeo("inspect", "--creds", "kmodlab:wrong", "--cert-dir", cert_dir, reference)
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr.lower()
    # No credentials: an anonymous token, which the registry refuses.
    anonymous = skopeo("inspect", "--no-creds", "--cert-dir", cert_dir, reference)
    assert anonymous.returncode != 0 and "denied" in anonymous.stderr.lower()


# --- up / down lifecycle (its own lab, through the real CLI) -------------------------


def _free_port_base(start: int) -> int:
    for base in range(start, start + 200, 10):
        if not any(registry.port_in_use(base + offset) for offset in range(3)):
            return base
    raise RuntimeError("no free port range")


@pytest.mark.lab
def test_cli_up_is_idempotent_and_down_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "lab"
    base = _free_port_base(pytest_plugin.TEST_PORT_BASE + 10)
    env = dict(os.environ, KMODLAB_STATE=str(root), KMODLAB_PORT_BASE=str(base))

    def kmodlab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kmodlab", *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    try:
        assert kmodlab("status").returncode == 3
        first = kmodlab("up", "--releases", "none")
        assert first.returncode == 0, first.stderr
        state = LabState.load(root)
        assert state.registry.host == f"127.0.0.1:{base}"
        assert state.registry.token_host == f"127.0.0.1:{base + 1}"
        pids = list(state.registry.pids)
        assert len(pids) == 3
        assert sorted(int(line.split(":", 1)[0]) for line in processes_mentioning(str(root))) == sorted(pids)
        assert kmodlab("status").returncode == 0

        ca_before = Path(state.ca_file).read_bytes()
        again = kmodlab("up", "--releases", "none")
        assert again.returncode == 0, again.stderr
        state = LabState.load(root)
        assert state.registry.pids == pids  # reused, not restarted
        assert Path(state.ca_file).read_bytes() == ca_before
        (root / "registry" / "storage" / "marker").write_text("x")
    finally:
        stopped = kmodlab("down")
    assert stopped.returncode == 0, stopped.stderr
    assert processes_mentioning(str(root)) == []
    for offset in range(3):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", base + offset)) != 0
    assert not (root / "registry" / "storage").exists()
    assert kmodlab("status").returncode == 3
    assert LabState.load(root).registry.pids == []


@pytest.mark.lab
def test_product_registry_client_works_with_the_lab_credentials(
    lab_registry: LabState, registry_client_args: dict[str, str], tmp_path: Path
) -> None:
    """The contract with the collection's registry client: the fixture's
    arguments are all it needs, on both auth schemes."""
    from ansible_collections.ocp.kmod_layering.plugins.module_utils import _registry

    digest = write_oci_image(tmp_path / "oci", "v2")
    reference = f"{lab_registry.registry.host}/kmodlab-test/client:v2"
    pushed = skopeo(
        "copy",
        "--dest-authfile",
        registry_client_args["auth_file"],
        "--dest-cert-dir",
        str(Path(registry_client_args["ca_path"]).parent),
        f"oci:{tmp_path / 'oci'}:v2",
        f"docker://{reference}",
    )
    assert pushed.returncode == 0, pushed.stderr

    client = _registry.RegistryClient(**registry_client_args)
    for host in (lab_registry.registry.host, lab_registry.registry.token_host):
        ref = _registry.parse_pullspec(f"{host}/kmodlab-test/client:v2")
        assert client.manifest_digest(ref) == digest
    with pytest.raises(_registry.RegistryTLSError):
        _registry.RegistryClient(auth_file=registry_client_args["auth_file"]).manifest_digest(
            _registry.parse_pullspec(reference)
        )


@pytest.mark.lab
def test_sessions_sharing_a_lab_last_one_out_brings_it_down(tmp_path: Path) -> None:
    from kmodlab.pytest_plugin import _TestLab

    root = tmp_path / "shared"
    base = _free_port_base(pytest_plugin.TEST_PORT_BASE + 20)
    first, second = _TestLab(root, base, keep=False), _TestLab(root, base, keep=False)
    try:
        first.enter()
        first.up()
        second.enter()
        pids = sorted(second.up().registry.pids)
        assert sorted(int(line.split(":", 1)[0]) for line in processes_mentioning(str(root))) == pids
        second.exit()  # another session still holds the lab
        assert sorted(int(line.split(":", 1)[0]) for line in processes_mentioning(str(root))) == pids
    finally:
        second.exit()
        first.exit()  # the last one out
    assert processes_mentioning(str(root)) == []
    assert not (root / "registry" / "storage").exists()
