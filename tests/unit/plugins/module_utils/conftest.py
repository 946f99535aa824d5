"""Fixtures shared by the module_utils unit tests."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

import pytest


@pytest.fixture
def serve_http():
    """``serve_http(handler_class)`` -> "127.0.0.1:<port>": an in-process
    HTTP server on a free port, shut down when the test ends."""
    running = []

    def start(handler_class):
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        running.append((server, thread))
        return "127.0.0.1:%d" % server.server_address[1]

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join()
