# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The client's HTTP side against a scripted in-process registry (plain HTTP):
the Bearer flow, token reuse per scope, Basic auth, redirects, error mapping."""

import base64
import hashlib
import json
from http.server import BaseHTTPRequestHandler

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _registry as r

USER, PASSWORD = "alice", "s3cret"
BLOB = b"layer bytes " * 1000
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": r.MT_DOCKER_MANIFEST,
                       "config": {"digest": BLOB_DIGEST, "size": len(BLOB)}, "layers": []}).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


class FakeRegistry(BaseHTTPRequestHandler):
    scheme = "bearer"  # or "basic"
    log = []  # (method, path, Authorization header)
    tokens_issued = []

    def log_message(self, *args):
        pass

    def _send(self, code, body=b"", headers=None):
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _basic_ok(self):
        expected = "Basic " + base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode()
        return self.headers.get("Authorization") == expected

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        auth = self.headers.get("Authorization")
        self.log.append((self.command, self.path, auth))
        host = "127.0.0.1:%d" % self.server.server_address[1]
        if self.path.startswith("/token"):
            if not self._basic_ok():
                return self._send(401, b'{"details": "bad credentials"}')
            token = "tok-%d" % len(self.tokens_issued)
            self.tokens_issued.append(self.path)
            return self._send(200, json.dumps({"token": token, "expires_in": 300}).encode())
        if self.path.startswith("/storage/"):
            return self._send(200, BLOB)
        if self.scheme == "bearer":
            authorized = auth is not None and auth.startswith("Bearer tok-")
            challenge = 'Bearer realm="http://%s/token",service="fake",scope="repository:ns/repo:pull"' % host
        else:
            authorized = self._basic_ok()
            challenge = 'Basic realm="fake"'
        if not authorized:
            return self._send(401, b'{"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}',
                              {"WWW-Authenticate": challenge})
        if self.path in ("/v2/ns/repo/manifests/v1", "/v2/ns/repo/manifests/" + MANIFEST_DIGEST):
            return self._send(200, MANIFEST, {"Content-Type": r.MT_DOCKER_MANIFEST,
                                              "Docker-Content-Digest": MANIFEST_DIGEST})
        if self.path == "/v2/ns/repo/manifests/lying":
            return self._send(200, MANIFEST, {"Content-Type": r.MT_DOCKER_MANIFEST,
                                              "Docker-Content-Digest": "sha256:" + "0" * 64})
        if self.path == "/v2/ns/repo/blobs/" + BLOB_DIGEST:
            return self._send(307, b"", {"Location": "http://%s/storage/blob" % host})
        if self.path == "/v2/ns/repo/blobs/sha256:" + "1" * 64:
            return self._send(200, BLOB)  # content that does not match its digest
        if self.path.startswith("/v2/ns/missing/"):
            return self._send(404, b'{"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]}')
        return self._send(404, b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}')


@pytest.fixture
def registry(serve_http):
    FakeRegistry.log = []
    FakeRegistry.tokens_issued = []
    FakeRegistry.scheme = "bearer"
    return serve_http(FakeRegistry)


def _client(**kwargs):
    kwargs.setdefault("credentials", (USER, PASSWORD))
    return r.RegistryClient(plain_http=True, timeout=10, **kwargs)


def test_bearer_flow_token_reused_per_scope(registry):
    client = _client()
    manifest = client.get_manifest(r.parse_pullspec(registry + "/ns/repo:v1"))
    assert manifest.digest == MANIFEST_DIGEST
    client.get_manifest(r.parse_pullspec(registry + "/ns/repo@" + MANIFEST_DIGEST))
    assert len(FakeRegistry.tokens_issued) == 1
    assert "scope=repository%3Ans%2Frepo%3Apull" in FakeRegistry.tokens_issued[0]
    assert "service=fake" in FakeRegistry.tokens_issued[0]
    # a second repository is a second scope: a new token
    with pytest.raises(r.NotFoundError):
        client.get_manifest(r.parse_pullspec(registry + "/ns/other:v1"))
    assert len(FakeRegistry.tokens_issued) == 2


def test_bearer_bad_credentials_names_registry_and_source(registry):
    client = _client(credentials=(USER, "wrong-password"))
    with pytest.raises(r.AuthenticationError) as err:
        client.get_manifest(r.parse_pullspec(registry + "/ns/repo:v1"))
    msg = str(err.value)
    assert registry in msg and "token server" in msg and "user 'alice'" in msg
    assert "wrong-password" not in msg


def test_anonymous_is_refused_with_a_clear_message(registry):
    FakeRegistry.scheme = "basic"
    client = r.RegistryClient(plain_http=True, timeout=10)
    with pytest.raises(r.AuthenticationError) as err:
        client.get_manifest(r.parse_pullspec(registry + "/ns/repo:v1"))
    assert "registry %s" % registry in str(err.value) and "anonymous" in str(err.value)


def test_basic_auth(registry):
    FakeRegistry.scheme = "basic"
    client = _client()
    assert client.get_manifest(r.parse_pullspec(registry + "/ns/repo:v1")).digest == MANIFEST_DIGEST
    assert FakeRegistry.tokens_issued == []
    # once the challenge is known, credentials go with the first request
    FakeRegistry.log[:] = []
    client.get_manifest(r.parse_pullspec(registry + "/ns/repo:v1"))
    assert [entry[2] is not None for entry in FakeRegistry.log] == [True]


def test_blob_redirect_drops_authorization_and_verifies(registry):
    client = _client()
    ref = r.parse_pullspec(registry + "/ns/repo:v1")
    assert client.read_blob(ref, BLOB_DIGEST) == BLOB
    storage = [entry for entry in FakeRegistry.log if entry[1].startswith("/storage/")]
    assert storage and all(entry[2] is None for entry in storage)
    assert client.bytes_fetched == len(BLOB)


def test_digest_checks(registry):
    client = _client()
    with pytest.raises(r.DigestMismatchError, match="says manifest"):
        client.get_manifest(r.parse_pullspec(registry + "/ns/repo:lying"))
    with pytest.raises(r.DigestMismatchError, match="content has digest " + BLOB_DIGEST):
        client.read_blob(r.parse_pullspec(registry + "/ns/repo:v1"), "sha256:" + "1" * 64)
    with pytest.raises(r.NotFoundError, match="blob .*sha256:2222.* not found on registry"):
        client.read_blob(r.parse_pullspec(registry + "/ns/repo:v1"), "sha256:" + "2" * 64)


def test_not_found_messages(registry):
    client = _client()
    with pytest.raises(r.NotFoundError, match="no tag 'v9' in repository ns/repo"):
        client.get_manifest(r.parse_pullspec(registry + "/ns/repo:v9"))
    with pytest.raises(r.NotFoundError, match="repository ns/missing not found on registry " + registry):
        client.get_manifest(r.parse_pullspec(registry + "/ns/missing:v1"))


def test_cache_serves_rerun_without_bodies(registry, tmp_path):
    ref = r.parse_pullspec(registry + "/ns/repo:v1")
    first = _client(cache_dir=str(tmp_path))
    first.get_manifest(ref)
    first.read_blob(ref, BLOB_DIGEST)
    assert first.bytes_fetched == len(MANIFEST) + len(BLOB)
    second = _client(cache_dir=str(tmp_path))
    second.get_manifest(ref)
    assert second.read_blob(ref, BLOB_DIGEST) == BLOB
    assert second.bytes_fetched == 0
