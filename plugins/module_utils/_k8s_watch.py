# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Watch-with-relist: the one way this collection follows objects on a
cluster (the rollout waiter's pools and nodes, the inspector's debug pods).

A :class:`ResourceWatcher` watches one kind from a list's resourceVersion in
a thread and feeds a queue. When the server ends a watch (timeoutSeconds) it
resumes from the last resourceVersion it saw; on 410 Gone (that version is
too old) it lists again and hands the whole list over; a dropped connection
or a read timeout is retried with backoff, boundedly; 401/403/404 end it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time

from ansible.module_utils.common.text.converters import to_native

from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import (
    API_ERRORS,
    CONNECT_TIMEOUT,
    CONNECTION_ERRORS,
    MAX_FAILURES,
    READ_TIMEOUT_MARGIN,
    ClusterError,
    WatchFailed,
    backoff,
    status_code,
)

try:
    from kubernetes import watch as k8s_watch
except ImportError:  # reported by the modules through kubernetes.core
    k8s_watch = None

# Longest single watch connection; the API server ends it, we resume from the
# last resourceVersion (the usual client-go range is 5-10 minutes).
MAX_WATCH_SECONDS = 300


class ResourceWatcher(object):
    """Watches ``kind`` (optionally in ``namespace``, by ``label_selector``)
    on ``client`` (a ``ClusterClient``) from ``resource_version``.

    Queue items: ``("event", tag, type, object)`` for ADDED / MODIFIED /
    DELETED; ``("sync", tag, items)`` after a relist (the whole current
    list); ``("error", tag, exception)`` when it gives up. ``tag`` defaults
    to ``kind``.
    """

    def __init__(self, client, kind, resource_version, events, deadline, namespace=None, label_selector=None,
                 tag=None, read_timeout=READ_TIMEOUT_MARGIN, max_watch_seconds=MAX_WATCH_SECONDS,
                 max_failures=MAX_FAILURES):
        self.client = client
        self.kind = kind
        self.tag = tag or kind
        self.namespace = namespace
        self.label_selector = label_selector
        self.resource_version = resource_version
        self.events = events
        self.deadline = deadline
        self.read_timeout = read_timeout
        self.max_watch_seconds = max_watch_seconds
        self.max_failures = max_failures
        self.stopped = threading.Event()
        self.watches = 0
        self.relists = 0
        self.thread = threading.Thread(target=self._run, name="watch-%s" % self.tag)
        self.thread.daemon = True  # a blocked read must not hold the module's exit

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopped.set()

    def _relist(self):
        items, resource_version = self.client.list(self.kind, namespace=self.namespace,
                                                   label_selector=self.label_selector)
        self.relists += 1
        self.resource_version = resource_version
        self.events.put(("sync", self.tag, items))

    def _stream(self, seconds):
        kwargs = dict(resource_version=self.resource_version, timeout_seconds=seconds, allow_watch_bookmarks=True,
                      serialize=False, _request_timeout=(CONNECT_TIMEOUT, seconds + self.read_timeout))
        if self.namespace:
            kwargs["namespace"] = self.namespace
        if self.label_selector:
            kwargs["label_selector"] = self.label_selector
        return k8s_watch.Watch().stream(self.client.resource(self.kind).get, **kwargs)

    def _run(self):
        failures = 0
        last_error = None
        while not self.stopped.is_set():
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return
            seconds = int(max(1, min(remaining + 1, self.max_watch_seconds)))
            opened = time.monotonic()
            received = 0
            try:
                self.watches += 1
                for event in self._stream(seconds):
                    if self.stopped.is_set():
                        return
                    if not event:
                        continue
                    failures = 0
                    received += 1
                    obj = event.get("raw_object") or {}
                    version = (obj.get("metadata") or {}).get("resourceVersion")
                    if version:
                        self.resource_version = version
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        self.events.put(("event", self.tag, event["type"], obj))
                # The server ended the watch (timeoutSeconds): resume. One
                # that ends at once, empty, is a failure (no hot loop).
                if not received and time.monotonic() - opened < 1:
                    failures += 1
                    last_error = WatchFailed("the server ended the watch at once")
            except API_ERRORS as exc:  # pylint: disable=catching-non-exception
                if status_code(exc) == 410:
                    # Our resourceVersion is too old: list again, then watch.
                    try:
                        self._relist()
                    except ClusterError as list_exc:
                        self.events.put(("error", self.tag, list_exc))
                        return
                    continue
                if status_code(exc) in (401, 403, 404):
                    self.events.put(("error", self.tag, ClusterError(
                        self.client.name, "watch %s" % self.client.path(self.kind, namespace=self.namespace), exc)))
                    return
                failures += 1
                last_error = exc
            except CONNECTION_ERRORS as exc:  # pylint: disable=catching-non-exception
                # Dropped connection or read timeout: resume from the last version.
                failures += 1
                last_error = exc
            if failures > self.max_failures:
                self.events.put(("error", self.tag, WatchFailed(
                    "Cluster %s: the watch of %s keeps failing: %s" % (
                        self.client.name, self.client.path(self.kind, namespace=self.namespace),
                        to_native(last_error)))))
                return
            if failures:
                # Back off on repeated failures (not a poll interval).
                self.stopped.wait(backoff(failures))
