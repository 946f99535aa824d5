"""Fault injection for the lab: a TLS reverse proxy, programmable per request.

Put a ``FaultProxy`` in front of the lab registry or a lab API server and
point the client (podman, skopeo, the product's registry client, a node
agent, kubernetes.core, our modules) at ``proxy.address`` instead. Every
request is forwarded unchanged (the ``Host`` header too, so the registry's
upload ``Location`` URLs name the proxy) unless a rule matches it:

``status``  answer HTTP ``status`` (default 503) without forwarding
``drop``    close the connection without an answer (connection reset)
``delay``   wait ``seconds``, then forward (a slow server; past the client's
            timeout, a timeout)
``cut``     forward, and close the connection ``seconds`` into the answer
            (a dropped watch / a download cut short)

A rule matches a method (``None``: any), a regular expression searched in
the path (with the query) and, optionally, one searched in the User-Agent,
``times`` times (``None``: for ever). ``down()``
closes the listening socket (connection refused) until ``up()``. The proxy
counts what it did: ``proxy.log`` is a list of ``(method, path, outcome)``.

    with FaultProxy("127.0.0.1:35000", cert, key, ca) as proxy:
        proxy.add("GET", r"/manifests/", "status", status=503, times=2)
        ...  # talk to proxy.address
        assert proxy.count(outcome="503") == 2
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
     "transfer-encoding", "upgrade", "content-length"}
)
ACTIONS = ("status", "drop", "delay", "cut")


@dataclass
class Rule:
    method: str | None
    path: str
    action: str
    status: int = 503
    seconds: float = 0.0
    times: int | None = None
    agent: str | None = None
    hits: int = 0
    _pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, not {self.action!r}")
        self._pattern = re.compile(self.path)

    def take(self, method: str, path: str, agent: str = "") -> bool:
        """Whether this rule applies to the request (and count it if so)."""
        if self.method is not None and self.method != method:
            return False
        if self.agent is not None and not re.search(self.agent, agent):
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        if not self._pattern.search(path):
            return False
        self.hits += 1
        return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._body()
        rule = proxy.match(self.command, self.path, self.headers.get("User-Agent", ""))
        if rule is not None and rule.action == "status":
            proxy.record(self.command, self.path, str(rule.status))
            payload = (b'{"errors":[{"code":"UNAVAILABLE","message":"kmodlab fault: injected HTTP %d"}],'
                       b'"kind":"Status","message":"kmodlab fault: injected HTTP %d","code":%d}'
                       % (rule.status, rule.status, rule.status))
            self.send_response(rule.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        if rule is not None and rule.action == "drop":
            proxy.record(self.command, self.path, "drop")
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if rule is not None and rule.action == "delay":
            proxy.record(self.command, self.path, f"delay {rule.seconds:g}s")
            if proxy.stopping.wait(rule.seconds):
                return
        cut_at = time.monotonic() + rule.seconds if rule is not None and rule.action == "cut" else None
        self._forward(body, cut_at)

    def _forward(self, body: bytes | None, cut_at: float | None) -> None:
        proxy = self.server.proxy
        upstream = http.client.HTTPSConnection(proxy.upstream_host, proxy.upstream_port,
                                               context=proxy.upstream_context, timeout=proxy.upstream_timeout)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
        except OSError as exc:
            proxy.record(self.command, self.path, f"upstream error {exc}")
            self.send_error(502, f"kmodlab fault proxy: upstream {exc}")
            return
        proxy.record(self.command, self.path, "cut" if cut_at is not None else str(response.status))
        self.send_response(response.status, response.reason)
        length = response.getheader("Content-Length")
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        chunked = length is None and self.command != "HEAD" and response.status not in (204, 304)
        if length is not None:
            self.send_header("Content-Length", length)
        elif chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while self.command != "HEAD":
                if cut_at is not None and time.monotonic() >= cut_at:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                data = response.read1(65536)
                if not data:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        finally:
            upstream.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy


class FaultProxy:
    """A TLS reverse proxy with injectable faults (see the module docstring)."""

    def __init__(self, upstream: str, certfile: str, keyfile: str, upstream_ca: str,
                 host: str = "127.0.0.1", port: int = 0, upstream_timeout: float = 300.0) -> None:
        self.upstream_host, _sep, port_text = upstream.rpartition(":")
        self.upstream_port = int(port_text)
        self.upstream_context = ssl.create_default_context(cafile=upstream_ca)
        self.upstream_timeout = upstream_timeout
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(certfile, keyfile)
        self.host = host
        self.port = port
        self.rules: list[Rule] = []
        self.log: list[tuple[str, str, str]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- rules
    def add(self, method: str | None, path: str, action: str, *, status: int = 503, seconds: float = 0.0,
            times: int | None = None, agent: str | None = None) -> Rule:
        rule = Rule(method, path, action, status=status, seconds=seconds, times=times, agent=agent)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.log.clear()

    def match(self, method: str, path: str, agent: str = "") -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.take(method, path, agent):
                    return rule
        return None

    def record(self, method: str, path: str, outcome: str) -> None:
        with self._lock:
            self.log.append((method, path, outcome))

    def count(self, method: str | None = None, path: str = "", outcome: str | None = None) -> int:
        with self._lock:
            return sum(1 for m, p, o in self.log
                       if (method is None or m == method) and re.search(path, p)
                       and (outcome is None or o == outcome))

    # -- lifecycle
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    def up(self) -> FaultProxy:
        server = _Server((self.host, self.port), _Handler, bind_and_activate=False)
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        server.socket = self._tls.wrap_socket(server.socket, server_side=True)
        server.proxy = self
        self.port = server.server_address[1]
        self.stopping.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        """Stop listening: new connections are refused (the server is down)."""
        if self._server is not None:
            self.stopping.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


# ---------------------------------------------------------------- cluster operator faults
#
# Not a proxy: a lab ClusterOperator annotated ``kmodlab.io/fault: degrade``
# reports Degraded=True (the lab CVO, kmodlab.cvo, then waits on it and
# reports Failing=True "Cluster operator <name> is degraded" after its
# degraded interval); removing the annotation heals it.

OPERATOR_FAULT_ANNOTATION = "kmodlab.io/fault"


def _cluster_operators(kubeconfig: str) -> Any:
    from kubernetes import config as k8s_config
    from kubernetes import dynamic

    client = dynamic.DynamicClient(k8s_config.new_client_from_config(kubeconfig))
    return client.resources.get(api_version="config.openshift.io/v1", kind="ClusterOperator")


def degrade_operator(kubeconfig: str, name: str) -> None:
    """Make lab cluster operator ``name`` degrade (now, or mid-upgrade if
    set before: the operator stops moving to the new version)."""
    _cluster_operators(kubeconfig).patch(
        name=name,
        body={"metadata": {"annotations": {OPERATOR_FAULT_ANNOTATION: "degrade"}}},
        content_type="application/merge-patch+json",
    )


def heal_operator(kubeconfig: str, name: str) -> None:
    """Undo ``degrade_operator``."""
    _cluster_operators(kubeconfig).patch(
        name=name,
        body={"metadata": {"annotations": {OPERATOR_FAULT_ANNOTATION: None}}},
        content_type="application/merge-patch+json",
    )
