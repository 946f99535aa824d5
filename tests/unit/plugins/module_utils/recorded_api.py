"""A Kubernetes API that replays recorded responses, for the unit tests of
the cluster layer's I/O classes (``_mco_wait.RolloutWaiter``,
``_node_inspector.NodeInspector``).

It speaks real HTTP to the real ``kubernetes`` client (lists, watch streams
of newline-delimited events, pod create / log / delete), answers from
objects in the shape the API server and the MCO write them
(tests/unit/fixtures/mco/), and logs every request so a test can assert
what the code under test asked for. It has no rules of its own: a test says
what each request answers.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import types
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MCO = "/apis/machineconfiguration.openshift.io/v1"


def fixture_items(name: str) -> list[dict]:
    return yaml.safe_load((FIXTURES / "mco" / name).read_text())["items"]


class RecordedApi:
    """Answers by path. ``lists[path]``: the items of a list; ``objects[path]``:
    one object (absent: 404); ``watches[path]``: what the watches of a path
    stream (see ``stream``: whole connections as lists of events, single
    events as dicts, statuses as ints); a watch with nothing queued is held
    open until its timeoutSeconds or the end of the test. ``faults[(method, path)]``: statuses to answer
    first, one per request."""

    def __init__(self) -> None:
        self.lists: dict[str, list[dict]] = {}
        self.objects: dict[str, dict] = {}
        self.texts: dict[str, str] = {}
        self.watches: dict[str, queue.Queue] = {}
        self.faults: dict[tuple[str, str], list[int]] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self.created: list[dict] = []
        self.deleted: list[str] = []
        self.resource_version = 100
        self.lock = threading.Lock()
        self.closed = threading.Event()
        # Called with each created object: may queue watch events for it.
        self.on_create = None
        self.patches: list[tuple[str, dict]] = []
        self.on_patch = None

    def watch(self, path: str, *connections) -> None:
        """Queue watch answers for ``path``: lists (a connection), dicts
        (events on the open one), ints (a status for the next one)."""
        q = self.watches.setdefault(path, queue.Queue())
        for connection in connections:
            q.put(connection)

    def fault(self, method: str, path: str, *statuses: int) -> None:
        self.faults.setdefault((method, path), []).extend(statuses)

    def count(self, method: str, path: str, watch: bool | None = None) -> int:
        return sum(1 for m, p, q in self.requests if m == method and p == path
                   and (watch is None or ("watch" in q) == watch))

    def handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def reply(self, status: int, body: dict | str) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def status(self, code: int, message: str) -> None:
                self.reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                                  "message": message, "reason": {404: "NotFound", 410: "Expired"}.get(code, "")})

            def handle_any(self, method: str) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with api.lock:
                    api.requests.append((method, url.path, query))
                    faults = api.faults.get((method, url.path))
                    fault = faults.pop(0) if faults else None
                if fault:
                    return self.status(fault, "recorded fault %d" % fault)
                if method == "GET" and "watch" in query:
                    return self.stream(url.path, query)
                if method == "GET" and url.path in api.texts:
                    return self.reply(200, api.texts[url.path])
                if method == "GET" and url.path in api.lists:
                    return self.reply(200, {"kind": "List", "apiVersion": "v1", "items": api.lists[url.path],
                                            "metadata": {"resourceVersion": str(api.resource_version)}})
                if method == "GET":
                    if url.path in api.objects:
                        return self.reply(200, api.objects[url.path])
                    return self.status(404, "%s not found" % url.path)
                if method == "POST":
                    name = body["metadata"]["name"]
                    path = "%s/%s" % (url.path, name)
                    if path in api.objects:
                        return self.status(409, "%s already exists" % name)
                    api.objects[path] = body
                    api.created.append(body)
                    if api.on_create:
                        api.on_create(url.path, body)
                    return self.reply(201, body)
                if method == "PATCH":
                    api.patches.append((url.path, body))
                    api.objects[url.path] = merge_patch(api.objects.get(url.path, {}), body)
                    if api.on_patch:
                        api.on_patch(url.path, api.objects[url.path])
                    return self.reply(200, api.objects[url.path])
                if method == "DELETE":
                    api.deleted.append(url.path)
                    if api.objects.pop(url.path, None) is None:
                        return self.status(404, "%s not found" % url.path)
                    return self.reply(200, {"kind": "Status", "status": "Success"})
                return self.status(405, method)

            def stream(self, path: str, query: dict) -> None:
                # The queue of a path: an int answers a new connection with
                # that status; a list is one connection's events, then the
                # server ends it; a dict is one event on the open connection.
                feed = api.watches.setdefault(path, queue.Queue())
                deadline = time.monotonic() + float(query.get("timeoutSeconds", ["5"])[0])

                def next_item():
                    while not api.closed.is_set() and time.monotonic() < deadline:
                        try:
                            return feed.get(timeout=0.05)
                        except queue.Empty:
                            continue
                    return None

                item = next_item()
                if isinstance(item, int):
                    return self.status(item, "recorded watch answer %d" % item)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while item is not None:
                    if isinstance(item, int):
                        feed.put(item)  # for the next connection
                        break
                    for one in item if isinstance(item, list) else [item]:
                        line = (json.dumps(one) + "\n").encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                    if isinstance(item, list):
                        break
                    item = next_item()
                self.wfile.write(b"0\r\n\r\n")

            def do_GET(self):
                self.handle_any("GET")

            def do_POST(self):
                self.handle_any("POST")

            def do_PATCH(self):
                self.handle_any("PATCH")

            def do_DELETE(self):
                self.handle_any("DELETE")

        return Handler


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch (what the API server does with
    application/merge-patch+json): null deletes, objects merge, the rest replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def event(kind: str, obj: dict, version: int) -> dict:
    obj = json.loads(json.dumps(obj))
    obj["metadata"]["resourceVersion"] = str(version)
    return {"type": kind, "object": obj}


def cluster_client(address: str, **options):
    """The collection's ClusterClient on the real kubernetes client, pointed
    at ``address`` (no discovery: the cluster layer uses fixed paths)."""
    import kubernetes.client
    from kubernetes.dynamic import DynamicClient

    from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import ClusterClient

    configuration = kubernetes.client.Configuration(host="http://" + address)
    dynamic = DynamicClient(kubernetes.client.ApiClient(configuration), discoverer=lambda client, cache: None)
    return ClusterClient(types.SimpleNamespace(client=dynamic), name="lab-a", **options)


def wait_until(predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not met in %ss" % timeout)
        time.sleep(0.02)
