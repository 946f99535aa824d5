"""The lab's Kubernetes API server: kmock's ``KubernetesEmulator``, grown into a believable cluster.

It serves, over HTTPS with bearer-token auth, what ``kubernetes.core`` (``k8s``,
``k8s_info``) and the ``kubernetes`` Python client (incl. ``DynamicClient`` and
``watch``) expect from a real kube-apiserver:

- discovery (``/api``, ``/api/v1``, ``/apis``, ``/apis/{group}[/{version}]``,
  ``/version``) for core v1 ``namespaces``, ``nodes``, ``pods`` (+``pods/log``,
  ``pods/status``), ``secrets``, ``configmaps``, ``events`` and every CRD in
  ``tests/kmodlab/crds/`` (plus the CRDs themselves, read-only, under
  ``apiextensions.k8s.io/v1``);
- object metadata: global ``resourceVersion`` counter, ``uid``,
  ``creationTimestamp``, ``generation`` (bumped on spec changes only);
- GET / LIST (``XList`` kind, ``limit``/``continue``) / POST / PUT (409 on a
  stale ``resourceVersion``) / DELETE (finalizers, preconditions) /
  deletecollection; PATCH as JSON merge patch, JSON patch, strategic merge
  (core kinds only; 415 on custom resources, as a real server answers) and
  server-side apply (``application/apply-patch+yaml``, ``fieldManager``,
  ``force``; a leaf-path field-ownership model gives 409 conflicts);
- ``/status`` kept apart from the main resource for kinds that declare it;
- ``labelSelector`` (=, ==, !=, in, notin, exists, !exists) and
  ``fieldSelector`` (metadata.name, metadata.namespace; pods: spec.nodeName,
  status.phase; namespaces: status.phase);
- watch (``?watch=1``): ADDED/MODIFIED/DELETED, resume from a
  ``resourceVersion``, ERROR 410 "too old resource version" after compaction,
  ``timeoutSeconds``, BOOKMARK events when ``allowWatchBookmarks=true``;
- CRD ``openAPIV3Schema`` pruning + validation, including the CEL rules of
  the vendored CRDs (:mod:`kmodlab.schema`) → 422 ``Invalid`` Status with
  ``details.causes[].field``;
- ``GET /api/v1/namespaces/{ns}/pods/{name}/log`` returns the pod annotation
  ``kmodlab.io/log`` (400 "is waiting to start" while the pod is Pending).

Public API (used by ``kmodlab/cluster.py`` and the tests)::

    server = LabAPIServer()                    # CRDs loaded from tests/kmodlab/crds/
    await server.start('127.0.0.1', 15100, certfile, keyfile, token)
    server.url                                 # 'https://127.0.0.1:15100'
    server.seed({...})                         # in-process create-or-replace (keeps status)
    server.get_object('v1', 'Node', 'worker-0')            # deep copy or None
    server.list_objects('machineconfiguration.openshift.io/v1', 'MachineConfigPool')
    server.delete_object('v1', 'Pod', 'x', namespace='default')
    server.count_requests(verb='watch', resource='pods')   # request log (see RequestRecord)
    server.count_writes()                      # POST/PUT/PATCH/DELETE requests
    server.count_by_request()                  # {(method, path, verb): n}
    server.reset_requests()
    server.compact_watch_history()             # older resourceVersions now answer 410
    await server.stop()

    with ServerThread(LabAPIServer(), certfile=..., keyfile=..., token=...) as running:
        running.url                            # the server runs in its own thread + loop

    write_kubeconfig(path, server_url, ca_file, token, cluster_name)

The in-process methods are thread-safe (one lock around the store); watchers
are woken on the server's loop. Over HTTP (token required):
``GET /kmodlab/requests[?method=&verb=&path=&resource=&name=]`` returns
``{"total": n, "writes": n, "requests": [...]}``; ``DELETE /kmodlab/requests``
resets the log; ``POST /kmodlab/compact`` compacts the watch history.
:class:`RequestLogClient` reads them from another process.
``/healthz``, ``/readyz`` and ``/livez`` need no token; everything else
answers 401 without ``Authorization: Bearer <token>``.

Writers to know: node agents set a pod's log through the main resource
(annotation ``kmodlab.io/log``, metadata) and its phase through ``pods/status``.
``seed()`` bypasses the status rules (it stores status as given) but not the
schema. Kmock reactions (``server['get /version'] << 503``) take precedence
over the emulated API, for fault injection; ``clear_reactions()`` drops them.

Built on kmock: requests are recorded as kmock ``Request`` objects (so kmock's
DSL filters and reactions work) and objects live in kmock's ``objects`` array
with their history (``server.objects['v1/pods', 'default', 'x'].history``).
``__call__`` parses paths itself: kmock 0.8's parser raises on
``/api/v1/namespaces`` (cluster-scoped ``namespaces`` list).

Not done: CEL rules beyond the shapes the vendored CRDs use, defaulting, SSA
list merging (lists are atomic), managedFields in responses, ObjectMeta
validation beyond names, graceful pod deletion, namespace Terminating phase.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import copy
import dataclasses
import datetime
import hmac
import json
import os
import pathlib
import random
import re
import ssl
import string
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeAlias

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import apps as kmock_apps
from kmock._internal import rendering as kmock_rendering
from typing_extensions import override

from kmodlab.schema import StructuralSchema

JSON: TypeAlias = dict[str, Any]
Path: TypeAlias = tuple[str | int, ...]

CRD_DIR = pathlib.Path(__file__).resolve().parent / 'crds'
LOG_ANNOTATION = 'kmodlab.io/log'
DEFAULT_NAMESPACES = ('default', 'kube-system', 'kube-public', 'openshift-machine-config-operator')
SERVER_VERSION: JSON = {
    'major': '1', 'minor': '31', 'gitVersion': 'v1.31.6', 'gitCommit': 'kmodlab',
    'gitTreeState': 'clean', 'buildDate': '2026-01-01T00:00:00Z', 'goVersion': 'go1.22.12',
    'compiler': 'gc', 'platform': 'linux/amd64',
}
WRITE_METHODS = frozenset({'POST', 'PUT', 'PATCH', 'DELETE'})
OPEN_PATHS = frozenset({'/healthz', '/readyz', '/livez'})
ALL_VERBS = ('create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch')
APPLY_CONTENT_TYPE = 'application/apply-patch+yaml'
MERGE_CONTENT_TYPE = 'application/merge-patch+json'
JSON_PATCH_CONTENT_TYPE = 'application/json-patch+json'
STRATEGIC_CONTENT_TYPE = 'application/strategic-merge-patch+json'
DNS1123_SUBDOMAIN = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')
DNS1123_LABEL = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')
_MISSING: Any = object()


# --------------------------------------------------------------------------- resource types

@dataclasses.dataclass(frozen=True)
class ResourceType:
    """What discovery says about one resource, plus how the server treats its objects."""
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[str, ...] = ()  # 'status', 'log'
    schema: StructuralSchema | None = dataclasses.field(default=None, compare=False, repr=False)
    builtin: bool = True  # core kinds accept strategic merge patch; custom resources do not
    has_generation: bool = False
    extra_field_selectors: tuple[str, ...] = ()
    read_only: bool = False

    @property
    def api_version(self) -> str:
        return f'{self.group}/{self.version}' if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f'{self.kind}List'

    @property
    def group_resource(self) -> str:
        """``machineconfigs.machineconfiguration.openshift.io`` or ``pods``, as in server messages."""
        return f'{self.plural}.{self.group}' if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return 'status' in self.subresources

    @property
    def ref(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)

    @property
    def field_selectors(self) -> frozenset[str]:
        return frozenset({'metadata.name', 'metadata.namespace', *self.extra_field_selectors})


CORE_TYPES: tuple[ResourceType, ...] = (
    ResourceType('', 'v1', 'namespaces', 'Namespace', False, 'namespace', ('ns',),
                 verbs=('create', 'delete', 'get', 'list', 'patch', 'update', 'watch'),
                 subresources=('status',), extra_field_selectors=('status.phase',)),
    ResourceType('', 'v1', 'nodes', 'Node', False, 'node', ('no',), subresources=('status',)),
    ResourceType('', 'v1', 'pods', 'Pod', True, 'pod', ('po',), ('all',), subresources=('status', 'log'),
                 has_generation=True, extra_field_selectors=('spec.nodeName', 'status.phase')),
    ResourceType('', 'v1', 'secrets', 'Secret', True, 'secret'),
    ResourceType('', 'v1', 'configmaps', 'ConfigMap', True, 'configmap', ('cm',)),
    ResourceType('', 'v1', 'events', 'Event', True, 'event', ('ev',)),
)
CRD_TYPE = ResourceType('apiextensions.k8s.io', 'v1', 'customresourcedefinitions', 'CustomResourceDefinition',
                        False, 'customresourcedefinition', ('crd', 'crds'), read_only=True,
                        verbs=('get', 'list', 'watch'))


def resource_types_from_crd(crd: Mapping[str, Any]) -> list[ResourceType]:
    spec = crd['spec']
    names = spec['names']
    result = []
    for version in spec['versions']:
        if not version.get('served', True):
            continue
        schema = version.get('schema', {}).get('openAPIV3Schema')
        result.append(ResourceType(
            group=spec['group'], version=version['name'], plural=names['plural'], kind=names['kind'],
            namespaced=spec.get('scope') == 'Namespaced', singular=names.get('singular', names['kind'].lower()),
            short_names=tuple(names.get('shortNames', ())), categories=tuple(names.get('categories', ())),
            subresources=tuple(sorted(version.get('subresources') or {})),
            schema=StructuralSchema(schema) if schema else None, builtin=False, has_generation=True,
        ))
    return result


# --------------------------------------------------------------------------- errors

# User-Agent prefixes of the lab's own controllers (the MCO simulator, the
# node agents, the CVO and its cluster operators): their writes are the
# cluster reacting, not the product. Tests that count the product's writes
# leave these out.
LAB_CONTROLLER_AGENTS = ("machine-config-controller", "machine-config-daemon", "cluster-version-operator")


class APIStatusError(Exception):
    """A failure the server answers with a ``v1 Status`` body."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> JSON:
        body: JSON = {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                      'message': self.message, 'reason': self.reason, 'code': self.code}
        if self.details is not None:
            body['details'] = self.details
        return body


def _details(rt: ResourceType, name: str, *, kind: str | None = None) -> JSON:
    details: JSON = {'name': name, 'kind': kind or rt.plural}
    if rt.group:
        details['group'] = rt.group
    return details


def not_found(rt: ResourceType, name: str) -> APIStatusError:
    return APIStatusError(404, 'NotFound', f'{rt.group_resource} "{name}" not found', _details(rt, name))


def stale_conflict(rt: ResourceType, name: str) -> APIStatusError:
    return APIStatusError(
        409, 'Conflict',
        f'Operation cannot be fulfilled on {rt.group_resource} "{name}": the object has been modified; '
        'please apply your changes to the latest version and try again', _details(rt, name))


def invalid(rt: ResourceType, name: str, causes: list[JSON]) -> APIStatusError:
    parts = [f"{cause['field']}: {cause['message']}" for cause in causes]
    joined = parts[0] if len(parts) == 1 else '[' + ', '.join(parts) + ']'
    qualified = f'{rt.kind}.{rt.group}' if rt.group else rt.kind
    return APIStatusError(422, 'Invalid', f'{qualified} "{name}" is invalid: {joined}',
                          dict(_details(rt, name, kind=rt.kind), causes=causes))


def bad_request(message: str) -> APIStatusError:
    return APIStatusError(400, 'BadRequest', message)


def path_not_found() -> APIStatusError:
    return APIStatusError(404, 'NotFound', 'the server could not find the requested resource',
                          {'causes': [{'reason': 'UnexpectedServerResponse', 'message': '404 page not found'}]})


def method_not_allowed(method: str) -> APIStatusError:
    return APIStatusError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource',
                          {'causes': [{'reason': 'UnexpectedServerResponse', 'message': f'{method} not allowed'}]})


# --------------------------------------------------------------------------- request log

@dataclasses.dataclass
class RequestRecord:
    """One HTTP request as the request log keeps it (``verb`` is the Kubernetes verb, incl. ``watch``)."""
    method: str
    path: str
    query: dict[str, str]
    verb: str
    resource: str  # plural, '' for non-resource paths
    subresource: str
    namespace: str | None
    name: str | None
    user_agent: str
    status: int | None = None

    @property
    def is_write(self) -> bool:
        return self.method in WRITE_METHODS

    def matches(self, *, method: str | None = None, path: str | None = None, verb: str | None = None,
                resource: str | None = None, name: str | None = None, subresource: str | None = None) -> bool:
        return ((method is None or self.method == method.upper())
                and (path is None or self.path == path)
                and (verb is None or self.verb == verb)
                and (resource is None or self.resource == resource)
                and (name is None or self.name == name)
                and (subresource is None or self.subresource == subresource))


# --------------------------------------------------------------------------- paths & selectors

@dataclasses.dataclass(frozen=True)
class K8sPath:
    group: str
    version: str | None
    namespace: str | None
    plural: str | None
    name: str | None
    subresource: str | None


def parse_k8s_path(path: str) -> K8sPath | None:
    """Split ``/api(s)/…`` URLs. Unlike kmock 0.8's parser this handles ``/api/v1/namespaces[/x]``."""
    parts = [urllib.parse.unquote(part) for part in path.strip('/').split('/') if part]
    if parts[:1] == ['api']:
        group, rest = '', parts[1:]
    elif parts[:1] == ['apis'] and len(parts) >= 2:
        group, rest = parts[1], parts[2:]
    else:
        return None
    if not rest:
        return K8sPath(group, None, None, None, None, None)
    version, rest = rest[0], rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == 'namespaces':
        namespace, rest = rest[1], rest[2:]
    plural = rest[0] if rest else None
    name = rest[1] if len(rest) >= 2 else None
    subresource = '/'.join(rest[2:]) or None
    return K8sPath(group, version, namespace, plural, name, subresource)


_LABEL_SET_RE = re.compile(r'^\s*([A-Za-z0-9._/-]+)\s+(in|notin)\s*\(([^)]*)\)\s*$')
_LABEL_CMP_RE = re.compile(r'^\s*([A-Za-z0-9._/-]+)\s*(==|!=|=)\s*([A-Za-z0-9._-]*)\s*$')
_LABEL_EXISTS_RE = re.compile(r'^\s*(!?)\s*([A-Za-z0-9._/-]+)\s*$')

Requirement: TypeAlias = tuple[str, str, frozenset[str]]  # (key, operator, values)


def parse_label_selector(text: str) -> list[Requirement]:
    requirements: list[Requirement] = []
    depth, current, chunks = 0, '', []
    for char in text:
        depth += char == '('
        depth -= char == ')'
        if char == ',' and depth == 0:
            chunks.append(current)
            current = ''
        else:
            current += char
    chunks.append(current)
    for chunk in chunks:
        if not chunk.strip():
            continue
        if match := _LABEL_SET_RE.match(chunk):
            values = frozenset(v.strip() for v in match.group(3).split(',') if v.strip())
            requirements.append((match.group(1), match.group(2), values))
        elif match := _LABEL_CMP_RE.match(chunk):
            operator = '!=' if match.group(2) == '!=' else '='
            requirements.append((match.group(1), operator, frozenset({match.group(3)})))
        elif match := _LABEL_EXISTS_RE.match(chunk):
            requirements.append((match.group(2), '!exists' if match.group(1) else 'exists', frozenset()))
        else:
            raise bad_request(f'unable to parse requirement: found {chunk.strip()!r}, expected: identifier')
    return requirements


def labels_match(requirements: list[Requirement], labels: Mapping[str, str]) -> bool:
    for key, operator, values in requirements:
        present = key in labels
        value = labels.get(key)
        ok = {
            '=': present and value in values,
            'in': present and value in values,
            '!=': not present or value not in values,
            'notin': not present or value not in values,
            'exists': present,
            '!exists': not present,
        }[operator]
        if not ok:
            return False
    return True


def parse_field_selector(text: str, rt: ResourceType) -> list[tuple[str, bool, str]]:
    """``a=b,c!=d`` → [(field, equal?, value)]; unsupported fields are a 400 like a real server."""
    result = []
    for chunk in filter(None, (c.strip() for c in text.split(','))):
        match = re.match(r'^([^=!]+?)\s*(==|!=|=)\s*(.*)$', chunk)
        if not match:
            raise bad_request(f'invalid selector: {text!r}; can\'t understand {chunk!r}')
        field, operator, value = match.group(1).strip(), match.group(2), match.group(3).strip()
        if field not in rt.field_selectors:
            raise bad_request(f'field label not supported: {field}')
        result.append((field, operator != '!=', value))
    return result


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split('.'):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def fields_match(requirements: list[tuple[str, bool, str]], obj: JSON) -> bool:
    for field, equal, value in requirements:
        actual = _dig(obj, field)
        actual_text = '' if actual is None else str(actual)
        if (actual_text == value) != equal:
            return False
    return True


# --------------------------------------------------------------------------- patches & field ownership

def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == '':
        return []
    if not path.startswith('/'):
        raise bad_request(f'invalid JSON pointer {path!r}')
    return [p.replace('~1', '/').replace('~0', '~') for p in path[1:].split('/')]


def _pointer_parent(doc: Any, tokens: list[str]) -> Any:
    for token in tokens[:-1]:
        if isinstance(doc, list):
            doc = doc[int(token)]
        elif isinstance(doc, dict):
            doc = doc[token]
        else:
            raise KeyError(token)
    return doc


def json_patch(target: JSON, operations: Any) -> JSON:
    """RFC 6902 (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise bad_request('json patch must be a list of operations')
    doc = copy.deepcopy(target)

    def get(tokens: list[str]) -> Any:
        if not tokens:
            return doc
        parent = _pointer_parent(doc, tokens)
        return parent[int(tokens[-1])] if isinstance(parent, list) else parent[tokens[-1]]

    def remove(tokens: list[str]) -> Any:
        parent = _pointer_parent(doc, tokens)
        return parent.pop(int(tokens[-1])) if isinstance(parent, list) else parent.pop(tokens[-1])

    def add(tokens: list[str], value: Any) -> None:
        parent = _pointer_parent(doc, tokens)
        if isinstance(parent, list):
            parent.insert(len(parent) if tokens[-1] == '-' else int(tokens[-1]), value)
        else:
            parent[tokens[-1]] = value

    for op in operations:
        try:
            kind, tokens = op['op'], _pointer(op['path'])
            if not tokens:
                raise bad_request('json patch on the document root is not supported')
            if kind == 'add':
                add(tokens, copy.deepcopy(op['value']))
            elif kind == 'remove':
                remove(tokens)
            elif kind == 'replace':
                get(tokens)  # must exist
                remove(tokens)
                add(tokens, copy.deepcopy(op['value']))
            elif kind in ('move', 'copy'):
                source = _pointer(op['from'])
                value = remove(source) if kind == 'move' else copy.deepcopy(get(source))
                add(tokens, value)
            elif kind == 'test':
                if get(tokens) != op['value']:
                    raise APIStatusError(422, 'Invalid', f'the server rejected our request due to an error in our '
                                         f'request: testing value {op["path"]} failed')
            else:
                raise bad_request(f'unknown json patch operation {kind!r}')
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise APIStatusError(422, 'Invalid', f'the server rejected our request due to an error in our request: '
                                 f'jsonpatch {op.get("op")} operation does not apply: doc is missing path: '
                                 f'"{op.get("path")}": {exc}') from None
    return doc


_STRATEGIC_LIST_KEYS = {'containers': 'name', 'initContainers': 'name', 'volumes': 'name', 'env': 'name',
                        'volumeMounts': 'mountPath', 'conditions': 'type', 'ports': 'containerPort',
                        'tolerations': 'key', 'taints': 'key'}


def strategic_merge_patch(target: Any, patch: Any, field: str = '') -> Any:
    """A simplified strategic merge for core kinds: merge patch, but known lists merge by their key."""
    if isinstance(patch, list) and isinstance(target, list) and field in _STRATEGIC_LIST_KEYS:
        key = _STRATEGIC_LIST_KEYS[field]
        result = copy.deepcopy(target)
        for item in patch:
            if isinstance(item, dict) and key in item:
                for index, existing in enumerate(result):
                    if isinstance(existing, dict) and existing.get(key) == item[key]:
                        result[index] = strategic_merge_patch(existing, item)
                        break
                else:
                    result.append(copy.deepcopy(item))
            else:
                return copy.deepcopy(patch)
        return result
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith('$'):
            continue  # patch directives are not interpreted
        if value is None:
            result.pop(key, None)
        else:
            result[key] = strategic_merge_patch(result.get(key), value, key)
    return result


_OWNED_METADATA = ('labels', 'annotations', 'finalizers', 'ownerReferences')


def leaf_values(obj: JSON) -> dict[Path, Any]:
    """Field-ownership leaves: every scalar, list (atomic) or empty map, by path."""
    leaves: dict[Path, Any] = {}

    def walk(value: Any, path: Path) -> None:
        if isinstance(value, dict) and value:
            for key, sub in value.items():
                walk(sub, (*path, key))
        else:
            leaves[path] = value

    for key, value in obj.items():
        if key in ('apiVersion', 'kind'):
            continue
        if key == 'metadata':
            for meta_key in _OWNED_METADATA:
                if meta_key in (value or {}):
                    walk(value[meta_key], ('metadata', meta_key))
        else:
            walk(value, (key,))
    return leaves


def _overlaps(a: Path, b: Path) -> bool:
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


def _delete_path(obj: JSON, path: Path) -> None:
    parents: list[tuple[JSON, str | int]] = []
    node: Any = obj
    for key in path[:-1]:
        if not isinstance(node, dict) or key not in node:
            return
        parents.append((node, key))
        node = node[key]
    if isinstance(node, dict):
        node.pop(path[-1], None)
    # Drop maps the removal left empty, as the server does for fields nobody owns any more.
    for parent, key in reversed(parents):
        if parent[key] == {}:
            del parent[key]
        else:
            break


def _deep_merge(base: Any, overlay: Any) -> Any:
    if isinstance(base, dict) and isinstance(overlay, dict):
        result = copy.deepcopy(base)
        for key, value in overlay.items():
            result[key] = _deep_merge(base.get(key), value)
        return result
    return copy.deepcopy(overlay)


def _manager_from_user_agent(user_agent: str) -> str:
    return (user_agent.split('/', 1)[0] or 'unknown')[:128]


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ('1', 'true', 'yes')


def _comparable(obj: JSON) -> JSON:
    """The object without the fields every write changes anyway."""
    result = copy.deepcopy(obj)
    result.get('metadata', {}).pop('resourceVersion', None)
    return result


def _spec_part(obj: JSON) -> JSON:
    """Everything whose change bumps ``generation``: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ('metadata', 'status', 'apiVersion', 'kind')}


# --------------------------------------------------------------------------- the server

@dataclasses.dataclass(frozen=True)
class WatchEvent:
    rv: int
    resource: ResourceType
    type: str
    obj: JSON
    old: JSON | None


ObjectKey: TypeAlias = tuple[ResourceType, str | None, str]


@attrs.define(kw_only=True)
class LabAPIServer(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with real-server semantics, served over HTTPS (see module docstring)."""

    crd_dir: pathlib.Path | None = CRD_DIR
    namespaces: tuple[str, ...] = DEFAULT_NAMESPACES
    event_window: int = 10000  # watch events kept for resuming; older resourceVersions answer 410
    history_depth: int = 20  # object versions kept in kmock's ``objects`` history
    bookmark_interval: float = 5.0
    max_watch_seconds: float = 1800.0
    request_log_limit: int = 200000

    _types: dict[tuple[str, str, str], ResourceType] = attrs.field(factory=dict, init=False)
    _types_by_kind: dict[tuple[str, str], ResourceType] = attrs.field(factory=dict, init=False)
    _owners: dict[tuple[str, str | None, str], dict[str, set[Path]]] = attrs.field(factory=dict, init=False)
    _store_lock: threading.RLock = attrs.field(factory=threading.RLock, init=False)
    _rv: int = attrs.field(default=1000, init=False)
    _events: list[WatchEvent] = attrs.field(factory=list, init=False)
    _compacted_rv: int = attrs.field(default=1000, init=False)
    _changed: asyncio.Event | None = attrs.field(default=None, init=False)
    _stopping: bool = attrs.field(default=False, init=False)
    _loop: asyncio.AbstractEventLoop | None = attrs.field(default=None, init=False)
    _loop_thread: int | None = attrs.field(default=None, init=False)
    _runner: aiohttp.web.ServerRunner | None = attrs.field(default=None, init=False)
    _tokens: frozenset[str] = attrs.field(factory=frozenset, init=False)
    _auth_required: bool = attrs.field(default=False, init=False)
    _scheme: str = attrs.field(default='http', init=False)
    _host: str = attrs.field(default='127.0.0.1', init=False)
    _port: int | None = attrs.field(default=None, init=False)
    _log: list[RequestRecord] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        # Deliberately not kmock's: its fallbacks keep objects as merged dicts; ours answer natively.
        for rt in CORE_TYPES:
            self.register(rt)
        self.register(CRD_TYPE)
        if self.crd_dir is not None:
            for path in sorted(self.crd_dir.glob('*.yaml')):
                for crd in yaml.safe_load_all(path.read_text()):
                    if crd and crd.get('kind') == 'CustomResourceDefinition':
                        self.register_crd(crd)
        for namespace in self.namespaces:
            self.seed({'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': namespace},
                       'status': {'phase': 'Active'}})

    # ----------------------------------------------------------------- registration & lifecycle

    def register(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt
        self._types_by_kind[(rt.api_version, rt.kind)] = rt
        self.resources[rt.ref] = kmock.ResourceInfo(
            namespaced=rt.namespaced, kind=rt.kind, singular=rt.singular, verbs=set(rt.verbs),
            shortnames=set(rt.short_names), categories=set(rt.categories), subresources=set(rt.subresources))

    def register_crd(self, crd: JSON) -> None:
        for rt in resource_types_from_crd(crd):
            self.register(rt)
        stored = copy.deepcopy(crd)
        stored['status'] = {'acceptedNames': crd['spec']['names'],
                            'storedVersions': [v['name'] for v in crd['spec']['versions'] if v.get('storage')],
                            'conditions': [{'type': 'Established', 'status': 'True', 'reason': 'InitialNamesAccepted',
                                            'lastTransitionTime': _now(),
                                            'message': 'the initial names have been accepted'}]}
        self.seed(stored)

    async def start(self, host: str = '127.0.0.1', port: int = 0, certfile: str | os.PathLike[str] | None = None,
                    keyfile: str | os.PathLike[str] | None = None, token: str | None = None,
                    extra_tokens: Iterable[str] = ()) -> None:
        """Listen on host:port (0 = any free port); TLS when certfile is given; token=None disables auth."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._changed = asyncio.Event()
        self._stopping = False
        self._tokens = frozenset(t for t in (token, *extra_tokens) if t)
        self._auth_required = bool(self._tokens)
        await self.__aenter__()  # kmock: the feeder task for live streams of user reactions
        ssl_context = None
        if certfile is not None:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
        self._scheme = 'https' if ssl_context else 'http'
        self._runner = aiohttp.web.ServerRunner(aiohttp.web.Server(self), handle_signals=False,
                                                shutdown_timeout=1.0)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        self._host = host
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self._stopping = True
        self._wake_watchers()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.active:
            await self.__aexit__(None, None, None)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError('the server is not started')
        return self._port

    @property
    def url(self) -> str:  # type: ignore[override]  # kmock's is a yarl.URL of its own test server
        return f'{self._scheme}://{self._host}:{self.port}'

    # ----------------------------------------------------------------- in-process API

    def resource_type(self, api_version: str, kind: str) -> ResourceType:
        try:
            return self._types_by_kind[(api_version, kind)]
        except KeyError:
            raise KeyError(f'no resource for {api_version} {kind}') from None

    def seed(self, obj: Mapping[str, Any]) -> JSON:
        """Create or replace an object in-process; status is stored as given; the schema still applies."""
        rt = self.resource_type(obj['apiVersion'], obj['kind'])
        new = copy.deepcopy(dict(obj))
        meta = new.setdefault('metadata', {})
        namespace = meta.get('namespace', 'default') if rt.namespaced else None
        with self._store_lock:
            old = self._get(rt, namespace, meta['name'])
            self._fill_metadata(rt, new, namespace, old)
            if rt.schema is not None:
                new = self._check_schema(rt, new, old)
            if old is not None and rt.has_generation and _spec_part(old) != _spec_part(new):
                new['metadata']['generation'] = old['metadata'].get('generation', 1) + 1
            return self._commit(rt, new, old)

    def get_object(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> JSON | None:
        rt = self.resource_type(api_version, kind)
        with self._store_lock:
            obj = self._get(rt, namespace if rt.namespaced else None, name)
            return copy.deepcopy(obj) if obj is not None else None

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[JSON]:
        rt = self.resource_type(api_version, kind)
        with self._store_lock:
            return [copy.deepcopy(obj) for obj in self._list(rt, namespace)]

    def delete_object(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        rt = self.resource_type(api_version, kind)
        with self._store_lock:
            obj = self._get(rt, namespace if rt.namespaced else None, name)
            if obj is None:
                return False
            self._remove(rt, obj)
            return True

    def compact_watch_history(self) -> int:
        """Forget all watch events: resuming from any older resourceVersion now answers 410 Gone."""
        with self._store_lock:
            self._events.clear()
            self._compacted_rv = self._rv
            return self._rv

    @property
    def resource_version(self) -> int:
        return self._rv

    # ----------------------------------------------------------------- request log API

    def request_log(self) -> list[RequestRecord]:
        return list(self._log)

    def count_requests(self, *, method: str | None = None, path: str | None = None, verb: str | None = None,
                       resource: str | None = None, name: str | None = None,
                       subresource: str | None = None) -> int:
        return sum(1 for r in list(self._log)
                   if r.matches(method=method, path=path, verb=verb, resource=resource, name=name,
                                subresource=subresource))

    def count_writes(self, *, resource: str | None = None) -> int:
        return sum(1 for r in list(self._log) if r.is_write and (resource is None or r.resource == resource))

    def count_by_request(self) -> dict[tuple[str, str, str], int]:
        """{(method, path, verb): n}."""
        counts: dict[tuple[str, str, str], int] = {}
        for r in list(self._log):
            counts[(r.method, r.path, r.verb)] = counts.get((r.method, r.path, r.verb), 0) + 1
        return counts

    def clear_reactions(self) -> None:
        """Drop kmock reactions added for fault injection (``server['get /version'] << 503``)."""
        self._payloads.clear()

    def reset_requests(self) -> None:
        self._log.clear()
        self._requests.clear()
        if self._errors:
            self._errors[-1].clear()

    # ----------------------------------------------------------------- HTTP entry

    @override
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw_request.read()
        path = raw_request.path
        k8s = parse_k8s_path(path)
        params = dict(raw_request.query)
        verb = self._verb(raw_request.method, k8s, params)
        record = RequestRecord(
            method=raw_request.method.upper(), path=path, query=params, verb=verb,
            resource=(k8s.plural or '') if k8s else '', subresource=(k8s.subresource or '') if k8s else '',
            namespace=k8s.namespace if k8s else None, name=k8s.name if k8s else None,
            user_agent=raw_request.headers.get('User-Agent', ''))
        if not path.startswith('/kmodlab/'):
            self._log.append(record)
            if len(self._log) > self.request_log_limit:
                del self._log[: len(self._log) // 2]
        request = kmock_rendering.Request(
            id=len(self._requests), raw_request=raw_request, url=raw_request.url, method=raw_request.method,
            params=params, headers=dict(raw_request.headers), cookies=dict(raw_request.cookies),
            body=body, text=body.decode('utf-8', 'replace'), data=self._json_or_none(body),
            action=self._kmock_action(raw_request.method, k8s, params),
            resource=kmock.resource(k8s.group, k8s.version, k8s.plural) if k8s and k8s.version else None,
            namespace=k8s.namespace if k8s else None, name=k8s.name if k8s else None,
            subresource=k8s.subresource if k8s else None)
        # kmock keeps every request for its DSL; bound it, the lab may run for hours.
        self._requests.append(request)
        if len(self._requests) > 1000:
            del self._requests[:500]
        try:
            response = await self._handle(request)
        except APIStatusError as exc:
            response = aiohttp.web.json_response(exc.status(), status=exc.code)
        except Exception as exc:  # a bug here: answer like a server would, keep the traceback for the tests
            if self._errors:
                self._errors[-1].append(exc)
            response = await self._render_error(exc)
        record.status = response.status
        return response

    @staticmethod
    def _json_or_none(body: bytes) -> Any:
        try:
            return json.loads(body) if body else None
        except ValueError:
            return None

    @staticmethod
    def _verb(method: str, k8s: K8sPath | None, params: Mapping[str, str]) -> str:
        method = method.upper()
        if k8s is None or k8s.plural is None:
            return method.lower()
        if method == 'GET':
            return 'watch' if _truthy(params.get('watch')) else 'get' if k8s.name else 'list'
        return {'POST': 'create', 'PUT': 'update', 'PATCH': 'patch',
                'DELETE': 'delete' if k8s.name else 'deletecollection'}.get(method, method.lower())

    @staticmethod
    def _kmock_action(method: str, k8s: K8sPath | None, params: Mapping[str, str]) -> kmock.action | None:
        if k8s is None or k8s.plural is None:
            return None
        verb = LabAPIServer._verb(method, k8s, params)
        return {'watch': kmock.action.WATCH, 'get': kmock.action.FETCH, 'list': kmock.action.LIST,
                'create': kmock.action.CREATE, 'patch': kmock.action.UPDATE, 'update': kmock.action.UPDATE,
                'delete': kmock.action.DELETE}.get(verb)

    @override
    async def _handle(self, request: kmock_rendering.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None
        path = raw.path
        if path not in OPEN_PATHS and not self._authorized(raw.headers.get('Authorization', '')):
            raise APIStatusError(401, 'Unauthorized', 'Unauthorized')
        if self._payloads:  # user-defined kmock reactions (fault injection) win over the emulation
            try:
                return await kmock_apps.RawHandler._handle(self, request)
            except NotImplementedError:
                pass
        return await self._dispatch(request, raw)

    def _authorized(self, header: str) -> bool:
        if not self._auth_required:
            return True
        scheme, _space, token = header.partition(' ')
        if scheme.lower() != 'bearer' or not token:
            return False
        return any(hmac.compare_digest(token.strip().encode(), t.encode()) for t in self._tokens)

    @override
    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, APIStatusError):
            return aiohttp.web.json_response(exc.status(), status=exc.code)
        return await super()._render_error(exc)

    async def _dispatch(self, request: kmock_rendering.Request,
                        raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        method = raw.method.upper()
        path = raw.path
        if path.startswith('/kmodlab/'):
            return self._serve_lab(method, path, dict(raw.query))
        if path in OPEN_PATHS:
            return aiohttp.web.Response(text='ok')
        if method == 'GET' and path == '/version':
            return aiohttp.web.json_response(SERVER_VERSION)
        if method == 'GET' and path in ('/', ''):
            return aiohttp.web.json_response({'paths': sorted(self._root_paths())})
        if method == 'GET' and path.rstrip('/') == '/apis':
            return aiohttp.web.json_response(self._discover_apis())
        k8s = parse_k8s_path(path)
        if k8s is None:
            raise path_not_found()
        if k8s.version is None:
            if method != 'GET':
                raise method_not_allowed(method)
            return aiohttp.web.json_response(self._discover_groups(k8s.group))
        if k8s.plural is None:
            if method != 'GET':
                raise method_not_allowed(method)
            return aiohttp.web.json_response(self._discover_resources(k8s.group, k8s.version))
        rt = self._types.get((k8s.group, k8s.version, k8s.plural))
        if rt is None:
            raise path_not_found()
        if k8s.namespace is not None and not rt.namespaced:
            raise path_not_found()
        if k8s.subresource is not None and k8s.subresource not in rt.subresources:
            raise path_not_found()
        params = dict(raw.query)
        verb = self._verb(method, k8s, params)
        if rt.read_only and verb not in ('get', 'list', 'watch'):
            raise method_not_allowed(method)
        namespace = k8s.namespace if rt.namespaced else None
        if k8s.subresource == 'log':
            if verb != 'get':
                raise method_not_allowed(method)
            return self._serve_log(rt, namespace, k8s.name or '', params)
        if verb == 'watch':
            return await self._serve_watch(rt, namespace, k8s.name, params, raw)
        if verb == 'list':
            return aiohttp.web.json_response(self._serve_list(rt, namespace, params))
        if verb == 'get':
            with self._store_lock:
                obj = self._get(rt, namespace, k8s.name or '')
            if obj is None:
                raise not_found(rt, k8s.name or '')
            return aiohttp.web.json_response(obj)
        body = request.body
        with self._store_lock:
            if verb == 'create':
                if k8s.subresource:
                    raise method_not_allowed(method)
                return aiohttp.web.json_response(self._create(rt, namespace, self._parse_body(body), params,
                                                              request), status=201)
            if verb == 'update':
                return aiohttp.web.json_response(self._update(rt, namespace, k8s.name or '', k8s.subresource,
                                                              self._parse_body(body), params, request))
            if verb == 'patch':
                content_type = raw.headers.get('Content-Type', '').split(';')[0].strip().lower()
                result, created = self._patch(rt, namespace, k8s.name or '', k8s.subresource, content_type, body,
                                              params, request)
                return aiohttp.web.json_response(result, status=201 if created else 200)
            if verb == 'delete':
                if k8s.subresource:
                    raise method_not_allowed(method)
                return aiohttp.web.json_response(self._delete(rt, namespace, k8s.name or '', body, params))
            if verb == 'deletecollection':
                if 'deletecollection' not in rt.verbs:
                    raise method_not_allowed(method)
                return aiohttp.web.json_response(self._delete_collection(rt, namespace, params))
        raise method_not_allowed(method)

    def _parse_body(self, body: bytes, *, yaml_ok: bool = False) -> JSON:
        try:
            data = yaml.safe_load(body) if yaml_ok else json.loads(body)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f'the body of the request could not be decoded: {exc}') from None
        if not isinstance(data, dict):
            raise bad_request('the body of the request must be an object')
        return data

    # ----------------------------------------------------------------- lab endpoints

    def _serve_lab(self, method: str, path: str, params: dict[str, str]) -> aiohttp.web.StreamResponse:
        if path == '/kmodlab/requests' and method == 'GET':
            records = [r for r in list(self._log) if r.matches(
                method=params.get('method'), path=params.get('path'), verb=params.get('verb'),
                resource=params.get('resource'), name=params.get('name'), subresource=params.get('subresource'))]
            return aiohttp.web.json_response({
                'total': len(records), 'writes': sum(r.is_write for r in records),
                'requests': [dataclasses.asdict(r) for r in records]})
        if path == '/kmodlab/requests' and method == 'DELETE':
            self.reset_requests()
            return aiohttp.web.json_response({'total': 0, 'writes': 0, 'requests': []})
        if path == '/kmodlab/compact' and method == 'POST':
            return aiohttp.web.json_response({'resourceVersion': str(self.compact_watch_history())})
        raise path_not_found()

    # ----------------------------------------------------------------- discovery

    def _root_paths(self) -> set[str]:
        paths = {'/api', '/api/v1', '/apis', '/version', '/healthz', '/readyz', '/livez'}
        for rt in self._types.values():
            if rt.group:
                paths |= {f'/apis/{rt.group}', f'/apis/{rt.group}/{rt.version}'}
        return paths

    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for rt in self._types.values():
            versions = groups.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        return groups

    def _api_group(self, group: str, versions: list[str]) -> JSON:
        entries = [{'groupVersion': f'{group}/{v}', 'version': v} for v in versions]
        return {'name': group, 'versions': entries, 'preferredVersion': entries[0]}

    def _discover_groups(self, group: str) -> JSON:
        groups = self._group_versions()
        if group == '':  # /api
            return {'kind': 'APIVersions', 'versions': ['v1'], 'serverAddressByClientCIDRs': [
                {'clientCIDR': '0.0.0.0/0', 'serverAddress': f'{self._host}:{self._port}'}]}
        if group not in groups:
            raise path_not_found()
        return {'kind': 'APIGroup', 'apiVersion': 'v1', **self._api_group(group, groups[group])}

    def _discover_apis(self) -> JSON:
        return {'kind': 'APIGroupList', 'apiVersion': 'v1', 'groups': [
            self._api_group(group, versions) for group, versions in sorted(self._group_versions().items()) if group]}

    def _discover_resources(self, group: str, version: str) -> JSON:
        types = [rt for rt in self._types.values() if rt.group == group and rt.version == version]
        if not types:
            raise path_not_found()
        resources: list[JSON] = []
        for rt in sorted(types, key=lambda t: t.plural):
            entry: JSON = {'name': rt.plural, 'singularName': rt.singular, 'namespaced': rt.namespaced,
                           'kind': rt.kind, 'verbs': list(rt.verbs)}
            if rt.short_names:
                entry['shortNames'] = list(rt.short_names)
            if rt.categories:
                entry['categories'] = list(rt.categories)
            resources.append(entry)
            for sub in rt.subresources:
                resources.append({'name': f'{rt.plural}/{sub}', 'singularName': '', 'namespaced': rt.namespaced,
                                  'kind': rt.kind, 'verbs': ['get'] if sub == 'log' else ['get', 'patch', 'update']})
        return {'kind': 'APIResourceList', 'apiVersion': 'v1',
                'groupVersion': f'{group}/{version}' if group else version, 'resources': resources}

    # ----------------------------------------------------------------- store (callers hold _store_lock)

    def _get(self, rt: ResourceType, namespace: str | None, name: str) -> JSON | None:
        key = (rt.ref, namespace, name)
        if key not in self._objects:
            return None
        obj = self._objects[key]
        return None if obj.deleted else obj.last.raw

    def _list(self, rt: ResourceType, namespace: str | None) -> list[JSON]:
        result = []
        for (ref, ns, _name), obj in self._objects.items():
            if ref == rt.ref and (namespace is None or ns == namespace) and not obj.deleted:
                result.append(obj.last.raw)
        result.sort(key=lambda o: (o['metadata'].get('namespace') or '', o['metadata']['name']))
        return result

    def _owner_key(self, rt: ResourceType, obj: JSON) -> tuple[str, str | None, str]:
        return (rt.api_version + '/' + rt.plural, obj['metadata'].get('namespace'), obj['metadata']['name'])

    def _commit(self, rt: ResourceType, new: JSON, old: JSON | None) -> JSON:
        """Store a new version under a fresh resourceVersion and tell the watchers."""
        self._rv += 1
        new['metadata']['resourceVersion'] = str(self._rv)
        key = (rt.ref, new['metadata'].get('namespace'), new['metadata']['name'])
        if key in self._objects and not self._objects[key].empty:
            self._objects[key].create(copy.deepcopy(new))
            history = self._objects[key].history
            if len(history) > self.history_depth:
                del history[: len(history) - self.history_depth]
        else:
            self._objects[key] = copy.deepcopy(new)
        self._record_event(WatchEvent(self._rv, rt, 'ADDED' if old is None else 'MODIFIED',
                                      copy.deepcopy(new), copy.deepcopy(old) if old is not None else None))
        return copy.deepcopy(new)

    def _remove(self, rt: ResourceType, obj: JSON) -> JSON:
        self._rv += 1
        gone = copy.deepcopy(obj)
        gone['metadata']['resourceVersion'] = str(self._rv)
        key = (rt.ref, obj['metadata'].get('namespace'), obj['metadata']['name'])
        self._objects[key].delete()
        self._owners.pop(self._owner_key(rt, obj), None)
        self._record_event(WatchEvent(self._rv, rt, 'DELETED', gone, copy.deepcopy(obj)))
        if rt.kind == 'Namespace' and not rt.group:  # no namespace controller: its content goes at once
            name = obj['metadata']['name']
            for (ref, ns, _name), stored in list(self._objects.items()):
                if ns == name and not stored.deleted:
                    inner = next(t for t in self._types.values() if t.ref == ref)
                    self._remove(inner, stored.last.raw)
        return gone

    def _record_event(self, event: WatchEvent) -> None:
        self._events.append(event)
        if len(self._events) > self.event_window:
            dropped = self._events[: len(self._events) - self.event_window // 2]
            del self._events[: len(dropped)]
            self._compacted_rv = dropped[-1].rv
        self._wake_watchers()

    def _wake_watchers(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._set_changed()
        else:
            loop.call_soon_threadsafe(self._set_changed)

    def _set_changed(self) -> None:
        previous, self._changed = self._changed, asyncio.Event()
        if previous is not None:
            previous.set()

    # ----------------------------------------------------------------- admission

    def _fill_metadata(self, rt: ResourceType, obj: JSON, namespace: str | None, old: JSON | None) -> None:
        """Server-owned metadata: identity on create, carried over on update."""
        obj['apiVersion'] = rt.api_version
        obj['kind'] = rt.kind
        meta = obj.setdefault('metadata', {})
        if not isinstance(meta, dict):
            raise bad_request('metadata must be an object')
        meta.pop('managedFields', None)
        if rt.namespaced:
            meta['namespace'] = namespace
        else:
            meta.pop('namespace', None)
        if old is None:
            meta['uid'] = str(uuid.uuid4())
            meta['creationTimestamp'] = _now()
            meta.pop('deletionTimestamp', None)
            meta.pop('resourceVersion', None)
            if rt.has_generation:
                meta['generation'] = 1
            else:
                meta.pop('generation', None)
        else:
            old_meta = old['metadata']
            for field in ('uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generation'):
                if field in old_meta:
                    meta[field] = old_meta[field]
                else:
                    meta.pop(field, None)

    def _validate_name(self, rt: ResourceType, name: Any) -> None:
        pattern, what = (DNS1123_LABEL, 'RFC 1123 label') if rt.kind == 'Namespace' else (
            DNS1123_SUBDOMAIN, 'RFC 1123 subdomain')
        if not isinstance(name, str) or not pattern.match(name) or len(name) > 253:
            example = 'my-name' if rt.kind == 'Namespace' else 'example.com'
            raise invalid(rt, str(name), [{
                'reason': 'FieldValueInvalid', 'field': 'metadata.name',
                'message': f'Invalid value: {json.dumps(name)}: a lowercase {what} must consist of lower case '
                           f"alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                           f"character (e.g. '{example}')"}])

    def _check_schema(self, rt: ResourceType, obj: JSON, old: JSON | None = None) -> JSON:
        assert rt.schema is not None
        pruned = rt.schema.prune(obj)
        causes = rt.schema.validate(pruned, old)
        if causes:
            raise invalid(rt, obj['metadata'].get('name', ''), causes)
        return pruned

    def _admit(self, rt: ResourceType, new: JSON, old: JSON | None, subresource: str | None,
               namespace: str | None) -> JSON:
        """Apply the write rules a real server applies before storing."""
        if not isinstance(new.get('metadata', {}), dict):
            raise bad_request('metadata must be an object')
        if old is not None and subresource == 'status':
            # Status writes change status only (metadata and spec stay as stored).
            result = copy.deepcopy(old)
            if 'status' in new:
                result['status'] = copy.deepcopy(new['status'])
            else:
                result.pop('status', None)
            new = result
        elif rt.has_status:
            if old is not None and 'status' in old:
                new['status'] = copy.deepcopy(old['status'])
            elif old is not None:
                new.pop('status', None)
        self._fill_metadata(rt, new, namespace, old)
        if old is None:
            self._validate_name(rt, new['metadata'].get('name'))
            if rt.has_status and not (rt.kind == 'Node' and not rt.group):  # nodes may set status on create
                new.pop('status', None)
            if rt.kind == 'Pod' and not rt.group:
                new['status'] = {'phase': 'Pending', 'qosClass': 'BestEffort'}
            if rt.kind == 'Namespace' and not rt.group:
                new['status'] = {'phase': 'Active'}
        if rt.kind == 'Secret' and not rt.group and isinstance(new.get('stringData'), dict):
            data = new.setdefault('data', {})
            for key, value in new.pop('stringData').items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        if rt.schema is not None:
            new = self._check_schema(rt, new, old)
        if old is not None and rt.has_generation and _spec_part(old) != _spec_part(new):
            new['metadata']['generation'] = old['metadata'].get('generation', 1) + 1
        return new

    def _require_namespace(self, rt: ResourceType, namespace: str | None) -> None:
        if rt.namespaced and self._get(self._types[('', 'v1', 'namespaces')], None, namespace or '') is None:
            ns_type = self._types[('', 'v1', 'namespaces')]
            raise not_found(ns_type, namespace or '')

    def _manager(self, params: Mapping[str, str], request: kmock_rendering.Request) -> str:
        return params.get('fieldManager') or _manager_from_user_agent(
            next((v for k, v in request.headers.items() if k.lower() == 'user-agent'), ''))

    def _track_update(self, rt: ResourceType, old: JSON | None, new: JSON, manager: str) -> None:
        """Update-type writes: the writer owns what it changed; others lose those fields."""
        owners = self._owners.setdefault(self._owner_key(rt, new), {})
        before = leaf_values(old) if old is not None else {}
        after = leaf_values(new)
        changed = {p for p, v in after.items() if before.get(p, _MISSING) != v}
        removed = set(before) - set(after)
        touched = changed | removed
        for other, paths in owners.items():
            if other != manager:
                owners[other] = {p for p in paths if not any(_overlaps(p, t) for t in touched)}
        owners.setdefault(manager, set()).update(changed)
        owners[manager] -= removed

    def _finish_write(self, rt: ResourceType, new: JSON, old: JSON | None, manager: str | None,
                      dry_run: bool, owners: dict[str, set[Path]] | None = None) -> JSON:
        if owners is not None and not dry_run:
            self._owners[self._owner_key(rt, new)] = owners
        if old is not None and _comparable(old) == _comparable(new):
            return copy.deepcopy(old)  # a no-op write changes nothing, not even resourceVersion
        if dry_run:
            result = copy.deepcopy(new)
            result['metadata'].setdefault('resourceVersion', old['metadata']['resourceVersion'] if old else '')
            return result
        if owners is None and manager is not None:
            self._track_update(rt, old, new, manager)
        meta = new['metadata']
        if old is not None and meta.get('deletionTimestamp') and not meta.get('finalizers'):
            self._commit(rt, new, old)
            stored = self._get(rt, meta.get('namespace'), meta['name'])
            assert stored is not None
            return self._remove(rt, stored)
        return self._commit(rt, new, old)

    # ----------------------------------------------------------------- verbs

    def _create(self, rt: ResourceType, namespace: str | None, body: JSON, params: Mapping[str, str],
                request: kmock_rendering.Request) -> JSON:
        self._check_type(rt, body)
        meta = body.setdefault('metadata', {})
        if rt.namespaced:
            body_ns = meta.get('namespace')
            if body_ns and namespace and body_ns != namespace:
                raise bad_request('the namespace of the provided object does not match the namespace sent '
                                  'on the request')
            namespace = namespace or body_ns
            self._require_namespace(rt, namespace)
        if not meta.get('name'):
            if meta.get('generateName'):
                suffix = ''.join(random.choices(string.ascii_lowercase + string.digits, k=5))
                meta['name'] = meta['generateName'] + suffix
            else:
                raise invalid(rt, '', [{'reason': 'FieldValueRequired', 'field': 'metadata.name',
                                        'message': 'Required value: name or generateName is required'}])
        name = meta['name']
        if self._get(rt, namespace, name) is not None:
            raise APIStatusError(409, 'AlreadyExists', f'{rt.group_resource} "{name}" already exists',
                                 _details(rt, name))
        new = self._admit(rt, copy.deepcopy(body), None, None, namespace)
        return self._finish_write(rt, new, None, self._manager(params, request), params.get('dryRun') == 'All')

    def _check_type(self, rt: ResourceType, body: JSON) -> None:
        api_version, kind = body.get('apiVersion'), body.get('kind')
        if api_version and api_version != rt.api_version:
            raise bad_request(f'the API version in the data ({api_version}) does not match the expected API '
                              f'version ({rt.api_version})')
        if kind and kind != rt.kind:
            raise bad_request(f'the kind in the data ({kind}) does not match the expected kind ({rt.kind})')

    def _existing(self, rt: ResourceType, namespace: str | None, name: str) -> JSON:
        old = self._get(rt, namespace, name)
        if old is None:
            raise not_found(rt, name)
        return old

    def _update(self, rt: ResourceType, namespace: str | None, name: str, subresource: str | None, body: JSON,
                params: Mapping[str, str], request: kmock_rendering.Request) -> JSON:
        self._check_type(rt, body)
        old = self._existing(rt, namespace, name)
        meta = body.setdefault('metadata', {})
        if meta.get('name', name) != name:
            raise bad_request(f'the name of the object ({meta.get("name")}) does not match the name on the URL '
                              f'({name})')
        meta['name'] = name
        current_rv = old['metadata']['resourceVersion']
        if meta.get('resourceVersion') not in (None, '') and meta['resourceVersion'] != current_rv:
            raise stale_conflict(rt, name)
        new = self._admit(rt, copy.deepcopy(body), old, subresource, namespace)
        return self._finish_write(rt, new, old, self._manager(params, request), params.get('dryRun') == 'All')

    def _patch(self, rt: ResourceType, namespace: str | None, name: str, subresource: str | None,
               content_type: str, body: bytes, params: Mapping[str, str],
               request: kmock_rendering.Request) -> tuple[JSON, bool]:
        dry_run = params.get('dryRun') == 'All'
        if content_type == APPLY_CONTENT_TYPE:
            return self._apply(rt, namespace, name, subresource, self._parse_body(body, yaml_ok=True), params)
        if content_type == STRATEGIC_CONTENT_TYPE and not rt.builtin or content_type not in (
                MERGE_CONTENT_TYPE, JSON_PATCH_CONTENT_TYPE, STRATEGIC_CONTENT_TYPE):
            accepted = [JSON_PATCH_CONTENT_TYPE, MERGE_CONTENT_TYPE, APPLY_CONTENT_TYPE]
            if rt.builtin:
                accepted.insert(2, STRATEGIC_CONTENT_TYPE)
            raise APIStatusError(415, 'UnsupportedMediaType',
                                 f'the body of the request was in an unknown format - accepted media types include: '
                                 f'{", ".join(accepted)}')
        old = self._existing(rt, namespace, name)
        try:
            patch = json.loads(body)
        except ValueError as exc:
            raise bad_request(f'the body of the request could not be decoded: {exc}') from None
        if content_type == JSON_PATCH_CONTENT_TYPE:
            new = json_patch(old, patch)
        elif not isinstance(patch, dict):
            raise bad_request('a merge patch must be a JSON object')
        elif content_type == MERGE_CONTENT_TYPE:
            new = json_merge_patch(old, patch)
        else:
            new = strategic_merge_patch(old, patch)
        if not isinstance(new.get('metadata'), dict):
            raise bad_request('metadata must be an object')
        new_rv = new['metadata'].get('resourceVersion')
        if new_rv not in (None, '') and new_rv != old['metadata']['resourceVersion']:
            raise stale_conflict(rt, name)
        if new['metadata'].get('name') != name:
            raise bad_request('metadata.name cannot be changed by a patch')
        new = self._admit(rt, new, old, subresource, namespace)
        return self._finish_write(rt, new, old, self._manager(params, request), dry_run), False

    def _apply(self, rt: ResourceType, namespace: str | None, name: str, subresource: str | None,
               config: JSON, params: Mapping[str, str]) -> tuple[JSON, bool]:
        """Server-side apply with a leaf-path ownership model (lists are atomic)."""
        manager = params.get('fieldManager')
        if not manager:
            raise bad_request('PATCH, fieldManager is required for apply requests')
        force = _truthy(params.get('force'))
        if not config.get('apiVersion') or not config.get('kind'):
            raise bad_request('invalid object type: apiVersion and kind must be set for apply')
        self._check_type(rt, config)
        meta = config.setdefault('metadata', {})
        if meta.get('name', name) != name:
            raise bad_request(f'the name of the object ({meta.get("name")}) does not match the name on the URL '
                              f'({name})')
        meta['name'] = name
        old = self._get(rt, namespace, name)
        if old is None and subresource == 'status':
            raise not_found(rt, name)
        if old is None and rt.namespaced:
            self._require_namespace(rt, namespace)
        if old is not None and meta.get('resourceVersion') not in (None, '') and \
                meta['resourceVersion'] != old['metadata']['resourceVersion']:
            raise stale_conflict(rt, name)
        # Only the part of the object this endpoint writes counts.
        if subresource == 'status':
            intent = {'status': config.get('status', {})}
        else:
            intent = {k: v for k, v in config.items() if not (k == 'status' and rt.has_status)}
        applied = leaf_values(intent)
        current = leaf_values(old) if old is not None else {}
        owner_key = (rt.api_version + '/' + rt.plural, namespace, name)
        owners = {m: set(p) for m, p in self._owners.get(owner_key, {}).items()}
        conflicts: list[tuple[str, Path]] = []
        for path, value in applied.items():
            if current.get(path, _MISSING) == value:
                continue  # same value: shared ownership, never a conflict
            for other, paths in owners.items():
                if other != manager and any(_overlaps(path, owned) for owned in paths):
                    conflicts.append((other, path))
        if conflicts and not force:
            causes = [{'reason': 'FieldManagerConflict', 'field': '.' + '.'.join(map(str, path)),
                       'message': f'conflict with "{other}" using {rt.api_version}'} for other, path in conflicts]
            summary = ', '.join(f'conflict with "{other}" using {rt.api_version}: .{".".join(map(str, path))}'
                                for other, path in conflicts)
            count = len(conflicts)
            raise APIStatusError(409, 'Conflict',
                                 f'Apply failed with {count} conflict{"s" if count > 1 else ""}: {summary}',
                                 {'causes': causes})
        for other in owners:
            if other != manager:
                owners[other] = {p for p in owners[other]
                                 if not any(_overlaps(p, path) and current.get(path, _MISSING) != value
                                            for path, value in applied.items())}
        merged = _deep_merge(old or {}, intent)
        merged.setdefault('metadata', {}).update({'name': name})
        for path in owners.get(manager, set()) - set(applied):
            if not any(path in paths for other, paths in owners.items() if other != manager):
                _delete_path(merged, path)
        owners[manager] = set(applied)
        owners = {m: p for m, p in owners.items() if p}
        new = self._admit(rt, merged, old, subresource, namespace)
        return self._finish_write(rt, new, old, manager, params.get('dryRun') == 'All', owners), old is None

    def _delete(self, rt: ResourceType, namespace: str | None, name: str, body: bytes,
                params: Mapping[str, str]) -> JSON:
        old = self._existing(rt, namespace, name)
        options = self._json_or_none(body) or {}
        preconditions = options.get('preconditions') or {} if isinstance(options, dict) else {}
        if preconditions.get('uid') and preconditions['uid'] != old['metadata']['uid']:
            raise APIStatusError(409, 'Conflict', f'Operation cannot be fulfilled on {rt.group_resource} "{name}": '
                                 f'Precondition failed: UID in precondition: {preconditions["uid"]}, UID in object '
                                 f'meta: {old["metadata"]["uid"]}', _details(rt, name))
        expected_rv = preconditions.get('resourceVersion')
        if expected_rv and expected_rv != old['metadata']['resourceVersion']:
            raise stale_conflict(rt, name)
        if params.get('dryRun') == 'All' or (isinstance(options, dict) and options.get('dryRun') == ['All']):
            return copy.deepcopy(old)
        if old['metadata'].get('finalizers'):
            if old['metadata'].get('deletionTimestamp'):
                return copy.deepcopy(old)
            new = copy.deepcopy(old)
            new['metadata']['deletionTimestamp'] = _now()
            new['metadata']['deletionGracePeriodSeconds'] = 0
            return self._commit(rt, new, old)
        return self._remove(rt, old)

    def _delete_collection(self, rt: ResourceType, namespace: str | None, params: Mapping[str, str]) -> JSON:
        listed = self._serve_list(rt, namespace, {k: v for k, v in params.items() if k != 'limit'})
        deleted = [self._delete(rt, item['metadata'].get('namespace'), item['metadata']['name'], b'', params)
                   for item in listed['items']]
        return {'kind': rt.list_kind, 'apiVersion': rt.api_version,
                'metadata': {'resourceVersion': str(self._rv)}, 'items': deleted}

    def _selection(self, rt: ResourceType, params: Mapping[str, str]) -> Callable[[JSON], bool]:
        labels = parse_label_selector(params.get('labelSelector', ''))
        fields = parse_field_selector(params.get('fieldSelector', ''), rt)

        def selected(obj: JSON) -> bool:
            return labels_match(labels, obj['metadata'].get('labels') or {}) and fields_match(fields, obj)
        return selected

    def _serve_list(self, rt: ResourceType, namespace: str | None, params: Mapping[str, str]) -> JSON:
        selected = self._selection(rt, params)
        with self._store_lock:
            items = [copy.deepcopy(o) for o in self._list(rt, namespace) if selected(o)]
            rv = self._rv
        meta: JSON = {'resourceVersion': str(rv)}
        start_after = None
        if params.get('continue'):
            try:
                token = json.loads(base64.urlsafe_b64decode(params['continue'].encode()))
                start_after, meta['resourceVersion'] = tuple(token['after']), token['rv']
            except (ValueError, KeyError, TypeError):
                raise APIStatusError(410, 'Expired', 'The provided continue parameter is too old to display a '
                                     'consistent list result. You can start a new list without the continue '
                                     'parameter.') from None
        if start_after is not None:
            items = [o for o in items if (o['metadata'].get('namespace') or '', o['metadata']['name']) > start_after]
        limit = int(params['limit']) if params.get('limit', '').isdigit() and int(params['limit']) > 0 else None
        if limit is not None and len(items) > limit:
            last = items[limit - 1]['metadata']
            token_data = {'after': [last.get('namespace') or '', last['name']], 'rv': meta['resourceVersion']}
            meta['continue'] = base64.urlsafe_b64encode(json.dumps(token_data).encode()).decode()
            meta['remainingItemCount'] = len(items) - limit
            items = items[:limit]
        return {'kind': rt.list_kind, 'apiVersion': rt.api_version, 'metadata': meta, 'items': items}

    def _serve_log(self, rt: ResourceType, namespace: str | None, name: str,
                   params: Mapping[str, str]) -> aiohttp.web.StreamResponse:
        with self._store_lock:
            pod = self._existing(rt, namespace, name)
        containers = [c.get('name') for c in (pod.get('spec') or {}).get('containers') or []]
        container = params.get('container')
        if container is None:
            if len(containers) > 1:
                raise bad_request(f'a container name must be specified for pod {name}, choose one of: '
                                  f'[{" ".join(containers)}]')
            container = containers[0] if containers else ''
        elif containers and container not in containers:
            raise bad_request(f'container {container} is not valid for pod {name}')
        phase = (pod.get('status') or {}).get('phase', 'Pending')
        if phase == 'Pending':
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating')
        text = ((pod['metadata'].get('annotations') or {}).get(LOG_ANNOTATION)) or ''
        if params.get('tailLines', '').isdigit():
            lines = text.splitlines(keepends=True)
            text = ''.join(lines[-int(params['tailLines']):]) if int(params['tailLines']) else ''
        if params.get('limitBytes', '').isdigit():
            text = text.encode()[: int(params['limitBytes'])].decode('utf-8', 'ignore')
        return aiohttp.web.Response(text=text, content_type='text/plain')

    # ----------------------------------------------------------------- watch

    def _watch_view(self, event: WatchEvent, rt: ResourceType, namespace: str | None, name: str | None,
                    selected: Callable[[JSON], bool]) -> tuple[str, JSON] | None:
        """What this watcher sees of one event (selector transitions become ADDED/DELETED)."""
        if event.resource != rt:
            return None
        meta = event.obj['metadata']
        if namespace is not None and meta.get('namespace') != namespace:
            return None
        if name is not None and meta['name'] != name:
            return None
        now = selected(event.obj) if event.type != 'DELETED' else False
        before = selected(event.old) if event.old is not None else False
        if event.type == 'DELETED':
            return ('DELETED', event.obj) if before else None
        if now and before:
            return ('MODIFIED', event.obj)
        if now:
            return ('ADDED', event.obj)
        if before:
            return ('DELETED', event.obj)
        return None

    async def _serve_watch(self, rt: ResourceType, namespace: str | None, name: str | None,
                           params: Mapping[str, str], raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        selected = self._selection(rt, params)
        if name is None:
            for field, equal, value in parse_field_selector(params.get('fieldSelector', ''), rt):
                if field == 'metadata.name' and equal:
                    name = value
        bookmarks = _truthy(params.get('allowWatchBookmarks'))
        send_initial = _truthy(params.get('sendInitialEvents'))
        try:
            timeout = float(params.get('timeoutSeconds') or self.max_watch_seconds)
        except ValueError:
            raise bad_request(f'invalid timeoutSeconds {params["timeoutSeconds"]!r}') from None
        rv_text = params.get('resourceVersion') or ''
        if rv_text and not rv_text.isdigit():
            raise bad_request(f'invalid resource version: {rv_text!r}')
        initial: list[JSON] = []
        gone: str | None = None
        with self._store_lock:
            if rv_text in ('', '0') or send_initial:
                cursor = self._rv
                initial = [copy.deepcopy(o) for o in self._list(rt, namespace)
                           if selected(o) and (name is None or o['metadata']['name'] == name)]
            else:
                cursor = int(rv_text)
                if cursor < self._compacted_rv:
                    gone = f'too old resource version: {cursor} ({self._compacted_rv})'
        response = aiohttp.web.StreamResponse(status=200, headers={'Content-Type': 'application/json',
                                                                   'Cache-Control': 'no-cache, private'})
        await response.prepare(raw)

        async def send(event_type: str, obj: JSON) -> None:
            await response.write(json.dumps({'type': event_type, 'object': obj}).encode() + b'\n')

        def bookmark(extra: JSON | None = None) -> JSON:
            meta: JSON = {'resourceVersion': str(cursor)}
            if extra:
                meta['annotations'] = extra
            return {'kind': rt.kind, 'apiVersion': rt.api_version, 'metadata': meta}

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            if gone is not None:
                await send('ERROR', APIStatusError(410, 'Expired', gone).status())
                return response
            for obj in initial:
                await send('ADDED', obj)
            if send_initial and bookmarks:
                await send('BOOKMARK', bookmark({'k8s.io/initial-events-end': 'true'}))
            next_bookmark = loop.time() + self.bookmark_interval
            while not self._stopping:
                wake = self._changed
                assert wake is not None
                with self._store_lock:
                    if cursor < self._compacted_rv:
                        gone = f'too old resource version: {cursor} ({self._compacted_rv})'
                        pending: list[WatchEvent] = []
                    else:
                        start = bisect.bisect_right(self._events, cursor, key=lambda e: e.rv)
                        pending = self._events[start:]
                if gone is not None:
                    await send('ERROR', APIStatusError(410, 'Expired', gone).status())
                    break
                for event in pending:
                    view = self._watch_view(event, rt, namespace, name, selected)
                    cursor = event.rv
                    if view is not None:
                        await send(*view)
                now = loop.time()
                if now >= deadline:
                    break
                if bookmarks and now >= next_bookmark:
                    await send('BOOKMARK', bookmark())
                    next_bookmark = now + self.bookmark_interval
                wait = deadline - now
                if bookmarks:
                    wait = min(wait, max(next_bookmark - now, 0.0))
                try:
                    await asyncio.wait_for(wake.wait(), timeout=wait)
                except TimeoutError:
                    pass
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            return response  # the client went away
        try:
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        return response


# --------------------------------------------------------------------------- helpers for other processes

class ServerThread:
    """Run a :class:`LabAPIServer` on its own event loop in a daemon thread (for sync tests and tools)."""

    def __init__(self, server: LabAPIServer, *, host: str = '127.0.0.1', port: int = 0,
                 certfile: str | os.PathLike[str] | None = None, keyfile: str | os.PathLike[str] | None = None,
                 token: str | None = None) -> None:
        self.server = server
        self._start_args = (host, port, certfile, keyfile, token)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name='kmodlab-apiserver', daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        try:
            self.call(self.server.start(*self._start_args))
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._loop.close()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def url(self) -> str:
        return self.server.url


class RequestLogClient:
    """Read the request log of a running lab API server over HTTPS (from another process)."""

    def __init__(self, server_url: str, token: str, ca_file: str | os.PathLike[str] | None = None) -> None:
        self.server_url = server_url.rstrip('/')
        self.token = token
        self._context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None

    def _call(self, method: str, path: str, query: Mapping[str, str | None] | None = None) -> JSON:
        clean = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.server_url + path + ('?' + urllib.parse.urlencode(clean) if clean else '')
        request = urllib.request.Request(url, method=method, headers={'Authorization': f'Bearer {self.token}'})
        with urllib.request.urlopen(request, context=self._context, timeout=30) as response:
            result: JSON = json.loads(response.read())
            return result

    def records(self, **filters: str | None) -> list[JSON]:
        return list(self._call('GET', '/kmodlab/requests', filters)['requests'])

    def count(self, **filters: str | None) -> int:
        return int(self._call('GET', '/kmodlab/requests', filters)['total'])

    def writes(self, **filters: str | None) -> int:
        return int(self._call('GET', '/kmodlab/requests', filters)['writes'])

    def reset(self) -> None:
        self._call('DELETE', '/kmodlab/requests')

    def compact(self) -> int:
        return int(self._call('POST', '/kmodlab/compact')['resourceVersion'])


def write_kubeconfig(path: str | os.PathLike[str], server_url: str, ca_file: str | os.PathLike[str] | None,
                     token: str, cluster_name: str, *, namespace: str = 'default',
                     user: str | None = None) -> pathlib.Path:
    """Write a real kubeconfig (CA embedded, so it stays valid wherever it is copied); mode 0600."""
    user = user or f'{cluster_name}-admin'
    cluster: JSON = {'server': server_url}
    if ca_file is not None:
        cluster['certificate-authority-data'] = base64.b64encode(pathlib.Path(ca_file).read_bytes()).decode()
    config = {
        'apiVersion': 'v1', 'kind': 'Config', 'preferences': {},
        'clusters': [{'name': cluster_name, 'cluster': cluster}],
        'users': [{'name': user, 'user': {'token': token}}],
        'contexts': [{'name': cluster_name,
                      'context': {'cluster': cluster_name, 'user': user, 'namespace': namespace}}],
        'current-context': cluster_name,
    }
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as stream:
        yaml.safe_dump(config, stream, sort_keys=False)
    return target
