# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Plumbing shared by the modules that call the Kubernetes API through the
``kubernetes`` client that kubernetes.core's ``get_api_client`` sets up:
which errors are worth retrying, bounded retries with backoff, timeouts for
watches, and naming and counting this process's requests."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time

try:
    import kubernetes.client as k8s_client
except ImportError:  # reported by the modules through kubernetes.core
    k8s_client = None

try:
    from urllib3.exceptions import HTTPError as Urllib3HTTPError
except ImportError:
    class Urllib3HTTPError(Exception):  # pylint: disable=function-redefined
        pass

# Worth retrying: throttling and server-side hiccups; connection errors too.
TRANSIENT_STATUS = (429, 500, 502, 503, 504)
CONNECT_TIMEOUT = 20
# Extra client read timeout over a watch's timeoutSeconds, so a server that
# ignores it, or a silently dead connection, is noticed.
READ_TIMEOUT_MARGIN = 30


def status_code(exc):
    """HTTP status of an ApiException / DynamicApiError, else None."""
    return getattr(exc, "status", None)


def is_transient(exc):
    """Whether retrying ``exc`` may succeed: throttling, 5xx, lost connections."""
    status = status_code(exc)
    if status is not None:
        return status in TRANSIENT_STATUS
    return isinstance(exc, (Urllib3HTTPError, OSError))


def backoff(failures, ceiling=5.0):
    """Seconds to wait after the n-th consecutive failure (exponential, capped)."""
    return min(0.2 * (2 ** failures), ceiling)


def call_with_retry(fn, deadline, stopped=None, max_failures=8):
    """``fn()``, retried with backoff on transient errors, at most
    ``max_failures`` times and never past ``deadline`` (time.monotonic);
    ``stopped`` (an Event) cuts a wait short."""
    stopped = stopped or threading.Event()
    failures = 0
    while True:
        try:
            return fn()
        except Exception as exc:  # pylint: disable=broad-except
            failures += 1
            if not is_transient(exc) or failures > max_failures or time.monotonic() >= deadline:
                raise
            stopped.wait(min(backoff(failures), max(0.0, deadline - time.monotonic())))


class RequestCounter(object):
    """Names this process's API requests (User-Agent, so they stand out in
    the API server's audit log) and counts them.

    Installed on the kubernetes ApiClient class before the client is made,
    so discovery is counted too. A module process is short-lived and makes
    no other kubernetes calls, so the class-level wrap stays contained.
    """

    def __init__(self, user_agent):
        self.user_agent = user_agent
        self.count = 0
        self._lock = threading.Lock()

    def install(self):
        original = k8s_client.ApiClient.call_api
        counter = self

        def counting_call_api(api_client, method, url, header_params=None, *args, **kwargs):
            with counter._lock:
                counter.count += 1
            header_params = dict(header_params or {})
            header_params["User-Agent"] = counter.user_agent + " " + header_params.get("User-Agent", "")
            return original(api_client, method, url, header_params, *args, **kwargs)

        k8s_client.ApiClient.call_api = counting_call_api
        return self
