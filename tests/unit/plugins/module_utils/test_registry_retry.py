# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bounded retries with backoff of the registry client, against an
in-process registry (plain HTTP) that fails on purpose: transient answers
(5xx, 429) and dropped connections are retried for GET/HEAD, 4xx never."""

import hashlib
import json
import socket
from http.server import BaseHTTPRequestHandler

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _registry as r

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": r.MT_DOCKER_MANIFEST,
                       "config": {"digest": "sha256:" + "a" * 64, "size": 1}, "layers": []}).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


class Flaky(BaseHTTPRequestHandler):
    """Fails the first ``failures`` requests with ``fault`` (an HTTP status or "drop")."""

    failures = 0
    fault = 503
    log = []

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.log.append((self.command, self.path))
        if len(self.log) <= self.failures:
            if self.fault == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            body = b'{"errors": [{"code": "UNAVAILABLE", "message": "try later"}]}'
            self.send_response(self.fault)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", r.MT_DOCKER_MANIFEST)
        self.send_header("Docker-Content-Digest", MANIFEST_DIGEST)
        self.send_header("Content-Length", str(len(MANIFEST)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(MANIFEST)


@pytest.fixture
def flaky(serve_http):
    Flaky.log = []
    return serve_http(Flaky)


def _client(**kwargs):
    kwargs.setdefault("retries", 3)
    return r.RegistryClient(plain_http=True, timeout=5, retry_base=0.01, retry_ceiling=0.05, **kwargs)


def test_backoff_is_exponential_capped_and_jittered():
    low = [r.backoff_delay(n, base=0.5, ceiling=8.0, rand=lambda: 0.0) for n in range(1, 8)]
    high = [r.backoff_delay(n, base=0.5, ceiling=8.0, rand=lambda: 1.0) for n in range(1, 8)]
    assert high == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert low == [h / 2 for h in high]


@pytest.mark.parametrize("fault", [500, 502, 503, 504, 429, "drop"])
def test_transient_failures_are_retried_then_succeed(flaky, fault):
    Flaky.failures, Flaky.fault = 2, fault
    client = _client()
    manifest = client.get_manifest(r.parse_pullspec(flaky + "/ns/repo:v1"))
    assert manifest.digest == MANIFEST_DIGEST
    assert len(Flaky.log) == 3
    assert len(client.retry_log) == 2 and "retry 2/3" in client.retry_log[1]


def test_persistent_5xx_gives_up_after_the_bound_naming_registry_status_and_attempts(flaky):
    Flaky.failures, Flaky.fault = 100, 503
    client = _client()
    with pytest.raises(r.RegistryConnectionError) as err:
        client.manifest_digest(r.parse_pullspec(flaky + "/ns/repo:v1"))
    assert len(Flaky.log) == 4  # 1 + 3 retries
    assert "registry %s answered HTTP 503" % flaky in str(err.value)
    assert "gave up after 4 attempts" in str(err.value)


def test_persistent_drop_gives_up_after_the_bound(flaky):
    Flaky.failures, Flaky.fault = 100, "drop"
    client = _client(retries=2)
    with pytest.raises(r.RegistryConnectionError, match="gave up after 3 attempts"):
        client.manifest_digest(r.parse_pullspec(flaky + "/ns/repo:v1"))
    assert len(Flaky.log) == 3


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_errors_are_never_retried(flaky, status):
    Flaky.failures, Flaky.fault = 100, status
    client = _client()
    with pytest.raises(r.RegistryError):
        client.manifest_digest(r.parse_pullspec(flaky + "/ns/repo:v1"))
    assert len(Flaky.log) == 1 and client.retry_log == []


def test_retries_zero_fails_at_once(flaky):
    Flaky.failures, Flaky.fault = 1, 503
    client = _client(retries=0)
    with pytest.raises(r.RegistryConnectionError, match="HTTP 503"):
        client.manifest_digest(r.parse_pullspec(flaky + "/ns/repo:v1"))
    assert len(Flaky.log) == 1


def test_refused_connection_is_retried_and_bounded():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = _client(retries=2)
    with pytest.raises(r.RegistryConnectionError, match="cannot reach registry 127.0.0.1:%d.*gave up after 3 attempts" % port):
        client.manifest_digest(r.parse_pullspec("127.0.0.1:%d/ns/repo:v1" % port))
    assert len(client.retry_log) == 2
