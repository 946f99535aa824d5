# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The cluster layer: every request this collection makes to a cluster's
Kubernetes API goes through here.

- :data:`RESOURCES` and :func:`resource`: the kinds we read and write, at
  fixed, well-known paths (no discovery round trips).
- :class:`ClusterClient`: get / list / create / patch / delete / text over
  kubernetes.core's dynamic client, each with a request timeout and bounded
  retries with backoff on transient errors; plain JSON dicts (no
  ``ResourceInstance`` wrapping of large objects); a request that fails for
  good raises :class:`ClusterError`, which names the cluster and the request.
- :class:`ResourceWatcher` (``_k8s_watch``): list + watch, resumed from the
  last resourceVersion, relisted on 410 Gone.
- :func:`run_module`: the entry of the one-cluster modules (client set-up,
  request naming, every API or connection error mapped to one
  ``fail_json``); convergence_check, which reads many clusters, makes a
  client per cluster (:func:`new_api_client`) and names each error with
  :func:`describe_error`.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
import threading
import time

from ansible.module_utils.common.text.converters import to_native

from ansible_collections.ocp.kmod_layering.plugins.module_utils._mco import MCO_API_GROUP
# Failed: the verdict the I/O classes raise (imported from here by them).
from ansible_collections.ocp.kmod_layering.plugins.module_utils._runner import Failed, exit_with, fail_with

try:
    import kubernetes.client as k8s_client
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic.exceptions import DynamicApiError
    from kubernetes.dynamic.resource import Resource
except ImportError:  # reported by the modules through kubernetes.core
    k8s_client = Resource = None

    class ApiException(Exception):  # pylint: disable=function-redefined
        status = None

    DynamicApiError = ApiException

try:
    from urllib3.exceptions import HTTPError as Urllib3HTTPError
except ImportError:
    class Urllib3HTTPError(Exception):  # pylint: disable=function-redefined
        pass

# The dynamic client raises DynamicApiError (NotFoundError, ConflictError, ...);
# a watch's ERROR event raises a plain ApiException: handlers take both.
API_ERRORS = (DynamicApiError, ApiException)
CONNECTION_ERRORS = (Urllib3HTTPError, OSError, ValueError)

# Worth retrying: throttling and server-side hiccups; connection errors too.
TRANSIENT_STATUS = (429, 500, 502, 503, 504)
CONNECT_TIMEOUT = 20
# Extra client read timeout over a watch's timeoutSeconds, so a server that
# ignores it, or a silently dead connection, is noticed.
READ_TIMEOUT_MARGIN = 30
MAX_FAILURES = 8
MERGE_PATCH = "application/merge-patch+json"

# kind -> (path prefix, group, plural, namespaced); version v1 for all.
RESOURCES = {
    "Node": ("api", "", "nodes", False),
    "Namespace": ("api", "", "namespaces", False),
    "Pod": ("api", "", "pods", True),
    "MachineConfigPool": ("apis", MCO_API_GROUP, "machineconfigpools", False),
    "MachineConfig": ("apis", MCO_API_GROUP, "machineconfigs", False),
    "ClusterVersion": ("apis", "config.openshift.io", "clusterversions", False),
    "ClusterOperator": ("apis", "config.openshift.io", "clusteroperators", False),
    "ImageStreamTag": ("apis", "image.openshift.io", "imagestreamtags", True),
}


def resource(kind, dynamic_client):
    """A dynamic-client ``Resource`` for ``kind`` at its fixed path."""
    prefix, group, plural, namespaced = RESOURCES[kind]
    return Resource(prefix=prefix, group=group, api_version="v1", kind=kind, name=plural,
                    namespaced=namespaced, client=dynamic_client)


def status_code(exc):
    """HTTP status of an ApiException / DynamicApiError / ClusterError, else None."""
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


def call_with_retry(fn, deadline, stopped=None, max_failures=MAX_FAILURES):
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


def _api_detail(exc):
    """The readable part of an API error: the Status ``message`` when the
    body is a Status object, else the body or reason as it came."""
    body = getattr(exc, "body", None) or getattr(exc, "reason", None) or ""
    body = to_native(body)
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    return message or body


def describe_error(cluster, exc, request=None):
    """One line for an error talking to ``cluster``: which request, what came back."""
    where = " (%s)" % request if request else ""
    status = status_code(exc)
    if isinstance(exc, ClusterError):
        return str(exc)
    if status is not None:
        return "Cluster %s: Kubernetes API error %s%s: %s" % (cluster, status, where, _api_detail(exc))
    return "Cluster %s: could not talk to the API: %s%s" % (cluster, to_native(exc), where)


class ClusterError(Exception):
    """A request to a cluster's API that failed for good (after retries)."""

    def __init__(self, cluster, request, cause):
        self.cluster = cluster
        self.request = request
        self.cause = cause
        self.status = status_code(cause)
        super(ClusterError, self).__init__(describe_error(cluster, cause, request))


class WatchFailed(Exception):
    """A watch that keeps failing (its message names the cluster and the path)."""


class ClusterClient(object):
    """The requests of one module run to one cluster.

    ``api_client`` is what kubernetes.core's ``get_api_client`` returns; its
    dynamic client is used with fixed paths (the typed APIs, CoreV1Api and
    friends, import every model: seconds of CPU per module run). Every call
    has ``request_timeout`` (a stalled connection is given up and retried)
    and is retried on transient errors until ``deadline`` (time.monotonic).
    """

    def __init__(self, api_client, name=None, request_timeout=30, deadline=None, max_failures=MAX_FAILURES,
                 stopped=None):
        self.dynamic = api_client.client
        self.host = self.dynamic.client.configuration.host
        self.name = name or self.host
        self.request_timeout = request_timeout
        self.deadline = deadline if deadline is not None else time.monotonic() + 4 * request_timeout
        self.max_failures = max_failures
        # Lets retries wait without a bare sleep, and a caller cut them short.
        self.stopped = stopped or threading.Event()
        self.requests = 0
        self._resources = {}

    def resource(self, kind):
        if kind not in self._resources:
            self._resources[kind] = resource(kind, self.dynamic)
        return self._resources[kind]

    def path(self, kind, name=None, namespace=None, subresource=None):
        path = self.resource(kind).path(name=name, namespace=namespace)
        return path + "/" + subresource if subresource else path

    def request(self, method, kind, name=None, namespace=None, subresource=None, query=None, body=None,
                content_type=None, missing_ok=False, conflict_ok=False, parse=True):
        """One request, retried; the JSON reply (``parse``) or its text.
        ``missing_ok``: None on 404; ``conflict_ok``: None on 409 (a retried
        create whose first attempt went through)."""
        path = self.path(kind, name, namespace, subresource)
        query = list(query or [])
        described = "%s %s%s" % (method, path, ("?" + "&".join("%s=%s" % q for q in query)) if query else "")
        kwargs = {"serialize": False, "_request_timeout": (CONNECT_TIMEOUT, self.request_timeout)}
        if body is not None:
            kwargs["body"] = body
        if content_type:
            kwargs["content_type"] = content_type

        def send():
            self.requests += 1
            # A fresh query list per attempt: request() appends to it.
            return self.dynamic.request(method, path, query_params=list(query), **kwargs)
        try:
            response = call_with_retry(send, self.deadline, self.stopped, self.max_failures)
        except API_ERRORS as exc:  # pylint: disable=catching-non-exception
            if (missing_ok and status_code(exc) == 404) or (conflict_ok and status_code(exc) == 409):
                return None
            raise ClusterError(self.name, described, exc)
        except CONNECTION_ERRORS as exc:  # pylint: disable=catching-non-exception
            raise ClusterError(self.name, described, exc)
        data = response.data
        if not parse:
            return to_native(data) if data else ""
        return json.loads(data) if data else {}

    def get(self, kind, name, namespace=None, missing_ok=False):
        return self.request("GET", kind, name=name, namespace=namespace, missing_ok=missing_ok)

    def list(self, kind, namespace=None, label_selector=None):
        """``(items, resourceVersion)`` of a list."""
        query = [("labelSelector", label_selector)] if label_selector else []
        listing = self.request("GET", kind, namespace=namespace, query=query)
        return listing.get("items") or [], (listing.get("metadata") or {}).get("resourceVersion")

    def create(self, kind, body, namespace=None, conflict_ok=False):
        return self.request("POST", kind, namespace=namespace, body=body, conflict_ok=conflict_ok)

    def merge_patch(self, kind, name, body, namespace=None):
        return self.request("PATCH", kind, name=name, namespace=namespace, body=body, content_type=MERGE_PATCH)

    def delete(self, kind, name, namespace=None, grace_period_seconds=None):
        """Deleted (or already gone): True."""
        query = [("gracePeriodSeconds", grace_period_seconds)] if grace_period_seconds is not None else []
        self.request("DELETE", kind, name=name, namespace=namespace, query=query, missing_ok=True)
        return True

    def text(self, kind, name, namespace, subresource, query=None):
        return self.request("GET", kind, name=name, namespace=namespace, subresource=subresource, query=query,
                            parse=False)


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


def cluster_argument_spec(**options):
    """kubernetes.core's connection options (host, api_key, kubeconfig, ...)
    plus a cluster module's own ``options``."""
    from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC

    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(options)
    return spec


def cluster_module_spec(**options):
    """:func:`cluster_argument_spec` with the options of the doc fragment
    ``ocp.kmod_layering.cluster`` (``cluster_name``, ``request_timeout``)."""
    return cluster_argument_spec(cluster_name=dict(type="str"), request_timeout=dict(type="int", default=30),
                                 **options)


def require_positive(module, *names):
    """Fails ``module`` unless each of its options ``names`` (seconds) is > 0."""
    for name in names:
        if module.params[name] <= 0:
            module.fail_json(msg="%s must be a positive number of seconds" % name)


def new_api_client(**auth):
    """kubernetes.core's client for one cluster, from a clean default
    Configuration: kubernetes.core loads every kubeconfig into the kubernetes
    library's process-wide default, so without this a second cluster of one
    run would inherit the first one's CA, client certificate or token."""
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client

    k8s_client.Configuration.set_default(k8s_client.Configuration())
    return get_api_client(**auth)


def run_module(module, user_agent, run, name=None, **client_options):
    """Run ``run(client, counter)`` for a module of the cluster action group
    and exit with its result dict (``warnings`` given as module warnings,
    ``_runner.exit_with``).

    ``client`` is a :class:`ClusterClient` on the connection options of
    ``module`` (an ``AnsibleK8SModule``); ``run`` returns the result, or
    raises :class:`Failed` for a verdict that fails the module. Every API or
    connection error, wherever it comes from, ends in one ``fail_json``
    that names the cluster (``name``, else the API URL) and the request.
    """
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException

    cluster = name or module.params.get("host") or module.params.get("kubeconfig") or "(cluster)"
    try:
        counter = RequestCounter(user_agent).install()
        api_client = get_api_client(module=module)
        client = ClusterClient(api_client, name=name, **client_options)
        cluster = client.name
        result = run(client, counter)
    except Failed as exc:
        fail_with(module, exc)
    except ClusterError as exc:
        module.fail_json(msg=str(exc), status=exc.status)
    except WatchFailed as exc:
        module.fail_json(msg=to_native(exc))
    except CoreException as exc:
        module.fail_from_exception(exc)
    except API_ERRORS + CONNECTION_ERRORS as exc:  # pylint: disable=catching-non-exception
        module.fail_json(msg=describe_error(cluster, exc), status=status_code(exc))
    exit_with(module, result)
