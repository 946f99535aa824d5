"""Fixtures shared by the module_utils unit tests."""

from __future__ import annotations

import os
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


@pytest.fixture
def racing_mkdir(monkeypatch):
    """Every ``os.mkdir`` finds that another process (a fork of the same
    run) made the directory just before: the race of two hosts filling one
    new directory at once, made certain."""
    real_mkdir = os.mkdir

    def mkdir(path, mode=0o777, **kwargs):
        if not os.path.isdir(path):
            real_mkdir(path, mode)  # the other process
        real_mkdir(path, mode, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
