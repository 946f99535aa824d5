# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""A small read-only OCI / Docker registry (distribution API v2) client.

Only the standard library and ``ansible.module_utils.urls`` are used, so it
runs in any execution environment. This is a private module utility: its API
may change without notice.

Public API (keep it small):

``parse_pullspec(text) -> ImageReference``
    ``quay.io/ns/repo:tag``, ``…@sha256:…``, ``host:port/repo``, ``busybox``
    (Docker Hub defaults: ``docker.io/library/busybox:latest``).

``ImageReference``
    ``registry``, ``repository``, ``tag``, ``digest``; ``name`` (registry/repo),
    ``reference`` (digest if any, else tag), ``with_digest(d)``, ``str(ref)``.

``RegistryClient(auth_file=None, auth_config=None, credentials=None,
ca_path=None, validate_certs=True, cache_dir=None, timeout=60,
user_agent=None, plain_http=False)``
    ``get_manifest(ref, arch=None) -> Manifest`` (a manifest list / OCI index
    is resolved to the ``arch`` platform when ``arch`` is given; OpenShift
    names ``x86_64``/``aarch64`` are accepted), ``manifest_digest(ref)``
    (HEAD only), ``get_config(ref, manifest) -> dict``
    (``image_labels(config)``, ``check_platform(config, arch, ref)``),
    ``open_blob(ref, digest, size=None) -> BlobReader`` (file-like, sha256
    verified at EOF), ``read_blob(ref, digest) -> bytes``.
    ``bytes_fetched``: body bytes received from the network so far (manifests,
    configs, blobs; what the cache served is not counted).

``iter_tar_layer(fileobj)``
    Walks a gzip / uncompressed tar stream member by member, yielding
    ``(path, tarinfo, fileobj_or_None)``; stop iterating any time (early stop).

``find_in_layers(client, ref, manifest, match, ...)``
    Reads layers from the last back and returns the first hit of ``match``.

Pulling a whole image (what a node agent does)::

    client = RegistryClient(auth_file=path, ca_path=ca, cache_dir=cache)
    manifest = client.get_manifest(parse_pullspec(image), arch="x86_64")
    for layer in manifest.layers:
        with client.open_blob(manifest.ref, layer["digest"]) as blob:
            for path, tarinfo, fileobj in iter_tar_layer(blob):
                ...  # whiteouts (.wh.*) are the caller's business
            blob.finish()  # read to the end: digest verified, blob cached

Errors are ``RegistryError`` subclasses: ``InvalidReferenceError``,
``NotFoundError``, ``PlatformNotFoundError``, ``AuthenticationError``,
``RegistryTLSError``, ``DigestMismatchError``, ``RegistryConnectionError``.

Cache (``cache_dir``): content addressed, ``<cache_dir>/blobs/sha256/<hex>``,
holds manifests fetched by digest, configs, and blobs that were read to the
end and verified. A tag still costs one HEAD request; a rerun fetches no body.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import json
import os
import random
import re
import socket
import ssl
import tarfile
import tempfile
import time

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import urlencode
from ansible.module_utils.urls import Request, make_context

from ansible_collections.ocp.kmod_layering.plugins.module_utils._arch import GO_ARCHES

try:
    from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
except ImportError:  # pragma: no cover
    pass


DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                     "application/vnd.docker.distribution.manifest.v1+prettyjws")
INDEX_TYPES = (MT_DOCKER_LIST, MT_OCI_INDEX)
MANIFEST_TYPES = (MT_DOCKER_MANIFEST, MT_OCI_MANIFEST)
MANIFEST_ACCEPT = ", ".join((MT_OCI_INDEX, MT_DOCKER_LIST, MT_OCI_MANIFEST, MT_DOCKER_MANIFEST))

# Layer media types. rpm-ostree of several OpenShift 4.1x releases reads only
# gzip layers ("Unhandled layer type" for zstd and zstd:chunked).
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
GZIP_LAYER_TYPES = (MT_OCI_LAYER_GZIP, MT_DOCKER_LAYER_GZIP)
# Set by containers/image on zstd:chunked layers (their mediaType says only +zstd).
ZSTD_CHUNKED_ANNOTATION = "io.github.containers.zstd-chunked.manifest-checksum"

# OpenShift / uname architecture names -> OCI platform architecture (the
# one table is _arch.GO_ARCHES).
ARCH_ALIASES = dict(list(GO_ARCHES.items()) + [(go, go) for go in GO_ARCHES.values()])

_CHUNK = 64 * 1024
# Transient answers and errors are retried, for idempotent requests only
# (GET, HEAD), with exponential backoff and jitter: throttling, server-side
# hiccups, lost connections, timeouts. 4xx (auth, not found) never are.
RETRY_METHODS = ("GET", "HEAD")
RETRY_STATUS = (429, 500, 502, 503, 504)
DEFAULT_RETRIES = 4
_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_REGISTRY_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                          r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                          r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?$")


# --------------------------------------------------------------------------
# Errors


class RegistryError(Exception):
    """Base class of every error this module raises."""


class InvalidReferenceError(RegistryError, ValueError):
    """The text is not a valid image pullspec."""


class NotFoundError(RegistryError):
    """Unknown repository, tag, manifest or blob."""


class PlatformNotFoundError(RegistryError):
    """The manifest list has no entry for the asked architecture."""

    def __init__(self, message, available=None):
        super(PlatformNotFoundError, self).__init__(message)
        self.available = list(available or [])


class AuthenticationError(RegistryError):
    """401 / 403 from the registry or its token server."""


class RegistryTLSError(RegistryError):
    """TLS handshake or certificate verification failed."""


class DigestMismatchError(RegistryError):
    """Content does not match its digest."""


class RegistryConnectionError(RegistryError):
    """The registry could not be reached, or answered something unexpected."""


# --------------------------------------------------------------------------
# Image references


class ImageReference(object):
    """A parsed image pullspec (``registry/repository[:tag][@digest]``)."""

    __slots__ = ("registry", "repository", "tag", "digest")

    def __init__(self, registry, repository, tag=None, digest=None):
        # type: (str, str, Optional[str], Optional[str]) -> None
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest

    @property
    def name(self):
        # type: () -> str
        """``registry/repository``, no tag nor digest."""
        return "%s/%s" % (self.registry, self.repository)

    @property
    def reference(self):
        # type: () -> str
        """What goes after ``/manifests/``: the digest if known, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest):
        # type: (str) -> ImageReference
        """The same repository pinned by ``digest`` (tag dropped)."""
        return ImageReference(self.registry, self.repository, None, digest)

    def __str__(self):
        text = self.name
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text

    def __repr__(self):
        return "ImageReference(%r)" % str(self)

    def __eq__(self, other):
        if not isinstance(other, ImageReference):
            return NotImplemented
        return (self.registry, self.repository, self.tag, self.digest) == (
            other.registry, other.repository, other.tag, other.digest)

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self):
        return hash((self.registry, self.repository, self.tag, self.digest))


def parse_pullspec(text):
    # type: (str) -> ImageReference
    """Parse an image pullspec the way container tools do.

    The first path component is a registry host when it contains ``.`` or
    ``:`` or is ``localhost``; otherwise the image is on Docker Hub
    (``docker.io``, single names get ``library/``). No tag and no digest
    means ``latest``. A ``docker://`` transport prefix is accepted.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidReferenceError("empty image pullspec")
    original = text
    text = text.strip()
    if text.startswith("docker://"):
        text = text[len("docker://"):]
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise InvalidReferenceError(
                "invalid digest %r in image pullspec %r (expected sha256:<64 hex>)" % (digest, original))
    tag = None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1:]
        if not _TAG_RE.match(tag):
            raise InvalidReferenceError("invalid tag %r in image pullspec %r" % (tag, original))
    parts = text.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"
                           or parts[0].startswith("[")):
        registry, path = parts[0], parts[1:]
        if not _REGISTRY_RE.match(registry):
            raise InvalidReferenceError("invalid registry host %r in image pullspec %r" % (registry, original))
    else:
        registry, path = DOCKER_HUB, parts
    if registry in ("index.docker.io", DOCKER_HUB_API):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and len(path) == 1:
        path = ["library"] + path
    if not path or not all(_PATH_COMPONENT_RE.match(p) for p in path):
        raise InvalidReferenceError(
            "invalid repository name %r in image pullspec %r (lowercase letters, digits, "
            "separators '.', '_', '-' and '/')" % ("/".join(path), original))
    if tag is None and digest is None:
        tag = "latest"
    return ImageReference(registry, "/".join(path), tag, digest)


def normalize_arch(arch):
    # type: (str) -> str
    """OpenShift / uname arch name -> OCI platform architecture."""
    return ARCH_ALIASES.get(arch, arch)


# --------------------------------------------------------------------------
# Pure helpers (unit tested)


def parse_www_authenticate(header):
    # type: (str) -> Tuple[str, Dict[str, str]]
    """``Bearer realm="…",service="…",scope="…"`` -> ``("bearer", {...})``."""
    header = (header or "").strip()
    if not header:
        return "", {}
    scheme, _sep, rest = header.partition(" ")
    params = {}
    for match in re.finditer(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))', rest):
        value = match.group(2)
        if value is None:
            value = match.group(3)
        else:
            value = re.sub(r"\\(.)", r"\1", value)
        params[match.group(1).lower()] = value
    return scheme.lower(), params


def choose_platform(manifests, arch, os_name="linux", variant=None):
    # type: (List[Dict[str, Any]], str, str, Optional[str]) -> Dict[str, Any]
    """Pick the descriptor of ``arch`` (OpenShift or OCI name) from an index.

    Raises PlatformNotFoundError listing the platforms present.
    """
    want = normalize_arch(arch)
    available = []
    for desc in manifests:
        platform = desc.get("platform") or {}
        p_arch = platform.get("architecture", "unknown")
        p_os = platform.get("os", "unknown")
        if p_arch == "unknown" or p_os == "unknown":
            continue  # attestation manifests and the like
        label = "%s/%s" % (p_os, p_arch)
        if platform.get("variant"):
            label += "/" + platform["variant"]
        available.append(label)
        if p_arch == want and p_os == os_name and (variant is None or platform.get("variant") == variant):
            return desc
    raise PlatformNotFoundError(
        "no %s/%s%s image in the manifest list; platforms present: %s"
        % (os_name, want, ("/" + variant) if variant else "",
           ", ".join(available) if available else "none"),
        available)


def _normalize_auth_key(key):
    # type: (str) -> str
    key = key.strip()
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    key = key.rstrip("/")
    for suffix in ("/v1", "/v2"):
        if key.endswith(suffix):
            key = key[:-len(suffix)]
    host, sep, rest = key.partition("/")
    if host in ("index.docker.io", DOCKER_HUB_API):
        host = DOCKER_HUB
    return host + sep + rest


def load_json_object(data, what, error=None):
    # type: (Any, str, Optional[type]) -> Dict[str, Any]
    """A JSON object from bytes, text or an already parsed dict; anything
    else raises ``error`` (default RegistryError) naming ``what``."""
    error = error or RegistryError
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise error("%s is not valid JSON: %s" % (what, exc))
    if not isinstance(data, dict):
        raise error("%s must be a JSON object" % what)
    return data


def parse_auth_config(data):
    # type: (Any) -> Dict[str, Tuple[str, str]]
    """Credentials from a dockerconfigjson / pull secret / legacy dockercfg.

    Accepts ``{"auths": {host: {"auth": b64(user:pass)}}}``, the legacy form
    without ``auths``, entries with ``username``/``password``, and a
    Kubernetes Secret (``data[".dockerconfigjson"]``). Returns
    ``{normalized key: (username, password)}``; keys may be ``host`` or
    ``host/namespace[/repo]``.
    """
    data = load_json_object(data, "registry auth config")
    secret_data = data.get("data")
    if isinstance(secret_data, dict) and (".dockerconfigjson" in secret_data or ".dockercfg" in secret_data):
        raw = secret_data.get(".dockerconfigjson") or secret_data.get(".dockercfg")
        try:
            return parse_auth_config(base64.b64decode(raw))
        except (TypeError, ValueError) as exc:
            raise RegistryError("pull secret data is not base64 JSON: %s" % exc)
    auths = data.get("auths") if isinstance(data.get("auths"), dict) else data
    result = {}
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            continue
        username = password = None
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(entry["auth"]).decode("utf-8")
            except (TypeError, ValueError):
                raise RegistryError("auth entry for %r is not base64 of user:password" % key)
            username, sep, password = decoded.partition(":")
            if not sep:
                raise RegistryError("auth entry for %r is not base64 of user:password" % key)
        elif entry.get("username") is not None:
            username, password = entry.get("username"), entry.get("password") or ""
        if username is not None:
            result[_normalize_auth_key(key)] = (username, password)
    return result


def lookup_credentials(auths, ref):
    # type: (Dict[str, Tuple[str, str]], ImageReference) -> Tuple[Optional[Tuple[str, str]], Optional[str]]
    """Most specific entry for ``ref`` (``host/ns/repo`` before ``host``)."""
    parts = ref.repository.split("/")
    candidates = ["%s/%s" % (ref.registry, "/".join(parts[:i])) for i in range(len(parts), 0, -1)]
    candidates.append(ref.registry)
    for key in candidates:
        if key in auths:
            return auths[key], key
    return None, None


def verify_digest(data, digest):
    # type: (bytes, str) -> bool
    algo, _sep, expected = digest.partition(":")
    if algo not in ("sha256", "sha512"):
        return True
    return hashlib.new(algo, data).hexdigest() == expected


def _error_detail(body):
    # type: (bytes) -> Tuple[List[str], str]
    """Registry error body -> (codes, message)."""
    try:
        doc = json.loads(body.decode("utf-8"))
        errors = doc.get("errors") or []
        codes = [e.get("code", "") for e in errors if isinstance(e, dict)]
        msgs = [e.get("message", "") for e in errors if isinstance(e, dict)]
        return codes, "; ".join(m for m in msgs if m)
    except (ValueError, AttributeError, UnicodeDecodeError):
        return [], ""


# --------------------------------------------------------------------------
# Manifests


class Manifest(object):
    """A fetched manifest (image manifest or manifest list / index).

    ``digest``: digest of this document (the platform image when resolved
    through an index); ``index_digest``: digest of the index it was resolved
    from, or None; ``pinned_digest``: what to pin a pullspec by (the index if
    any, else ``digest``); ``data``: parsed JSON; ``raw``: the bytes.
    """

    def __init__(self, ref, digest, media_type, raw, data, index_digest=None, platform=None):
        self.ref = ref
        self.digest = digest
        self.media_type = media_type
        self.raw = raw
        self.data = data
        self.index_digest = index_digest
        self.platform = platform

    @property
    def is_index(self):
        # type: () -> bool
        return self.media_type in INDEX_TYPES

    @property
    def pinned_digest(self):
        # type: () -> str
        return self.index_digest or self.digest

    @property
    def config(self):
        # type: () -> Dict[str, Any]
        return self.data.get("config") or {}

    @property
    def layers(self):
        # type: () -> List[Dict[str, Any]]
        return list(self.data.get("layers") or [])

    @property
    def size(self):
        # type: () -> int
        """Manifest + config + layers, as the registry stores them."""
        return len(self.raw) + int(self.config.get("size") or 0) + sum(int(l.get("size") or 0) for l in self.layers)


def manifest_media_type(data, content_type=None):
    # type: (Dict[str, Any], Optional[str]) -> str
    media_type = data.get("mediaType") if isinstance(data, dict) else None
    if not media_type and content_type:
        media_type = content_type.split(";")[0].strip()
    if not media_type or media_type in ("application/json", "text/plain"):
        media_type = MT_OCI_INDEX if "manifests" in data else MT_OCI_MANIFEST
    return media_type


# --------------------------------------------------------------------------
# Blobs


class BlobReader(object):
    """File-like reader of a blob; sha256 verified when the end is reached.

    Closing before the end (an early stop) is fine: the bytes read are still
    counted in the client's ``bytes_fetched``; nothing is cached then.
    """

    def __init__(self, client, digest, fileobj, from_cache=False, cache_tmp=None, cache_path=None, label=""):
        self._client = client
        self.digest = digest
        self._fp = fileobj
        self.from_cache = from_cache
        self._hash = None if from_cache else hashlib.new(digest.split(":", 1)[0])
        self._cache_tmp = cache_tmp  # (fd, path) while writing into the cache
        self._cache_path = cache_path
        self._label = label
        self.bytes_read = 0
        self.complete = False
        self.closed = False

    def readable(self):
        return True

    def read(self, size=-1):
        # type: (int) -> bytes
        if self.closed:
            raise ValueError("read of a closed blob")
        if self.complete:
            return b""
        data = self._fp.read() if size is None or size < 0 else self._fp.read(size)
        if data:
            self.bytes_read += len(data)
            if not self.from_cache:
                self._client.bytes_fetched += len(data)
                self._hash.update(data)
                if self._cache_tmp:
                    os.write(self._cache_tmp[0], data)
            if size is None or size < 0:
                self._finish()
        else:
            self._finish()
        return data

    def _finish(self):
        self.complete = True
        if self.from_cache:
            return
        actual = "%s:%s" % (self.digest.split(":", 1)[0], self._hash.hexdigest())
        if actual != self.digest:
            self._discard()
            raise DigestMismatchError("blob %s of %s: content has digest %s" % (self.digest, self._label, actual))
        if self._cache_tmp:
            os.close(self._cache_tmp[0])
            os.rename(self._cache_tmp[1], self._cache_path)
            self._cache_tmp = None

    def finish(self):
        # type: () -> None
        """Read (and verify, and cache) whatever is left."""
        while not self.complete:
            self.read(_CHUNK)

    def _discard(self):
        if self._cache_tmp:
            os.close(self._cache_tmp[0])
            try:
                os.unlink(self._cache_tmp[1])
            except OSError:
                pass
            self._cache_tmp = None

    def close(self):
        if not self.closed:
            self._discard()
            try:
                self._fp.close()
            finally:
                self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def iter_tar_layer(fileobj):
    # type: (Any) -> Iterator[Tuple[str, tarfile.TarInfo, Any]]
    """Walk a tar stream (gzip, bzip2, xz or plain) member by member.

    Yields ``(path, tarinfo, fileobj)`` where ``path`` has no leading ``./``
    or ``/`` and ``fileobj`` reads a regular file's content (None for other
    members). Valid only until the next member: stream mode, no seeking.
    """
    try:
        archive = tarfile.open(fileobj=fileobj, mode="r|*")
    except tarfile.ReadError as exc:
        raise RegistryError("layer is not a (gzip/bzip2/xz) tar stream: %s" % exc)
    try:
        for member in archive:
            path = member.name
            while path.startswith("./"):
                path = path[2:]
            path = path.lstrip("/")
            yield path, member, archive.extractfile(member) if member.isreg() else None
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, RegistryError):
            raise
        raise RegistryError("corrupt layer tar stream: %s" % exc)
    finally:
        archive.close()


def backoff_delay(failures, base=0.5, ceiling=8.0, rand=random.random):
    # type: (int, float, float, Callable[[], float]) -> float
    """Seconds to wait after the ``failures``-th consecutive failure:
    exponential (``base * 2**(failures-1)``, capped at ``ceiling``) with
    jitter (between half and all of it), so many clients do not retry in
    step."""
    delay = min(ceiling, base * (2 ** max(0, failures - 1)))
    return delay * (0.5 + 0.5 * rand())


# --------------------------------------------------------------------------
# The client


class RegistryClient(object):
    """Read-only registry client (see the module docstring).

    ``credentials``: ``(username, password)`` used for every registry (wins
    over the auth file); ``auth_file``: path of a dockerconfigjson / pull
    secret; ``auth_config``: the same content as a dict or JSON text.
    """

    def __init__(self, auth_file=None, auth_config=None, credentials=None, ca_path=None,
                 validate_certs=True, cache_dir=None, timeout=60, user_agent=None, plain_http=False,
                 retries=DEFAULT_RETRIES, retry_base=0.5, retry_ceiling=8.0):
        self.validate_certs = validate_certs
        # Bounded retries of transient failures (see RETRY_STATUS); ``retry_log``
        # says what was retried (no secrets: method, URL, reason).
        self.retries = max(0, int(retries))
        self.retry_base = retry_base
        self.retry_ceiling = retry_ceiling
        self.retry_log = []  # type: List[str]
        self.ca_path = ca_path
        self.cache_dir = cache_dir
        self.timeout = timeout
        self.plain_http = plain_http
        self.user_agent = user_agent or "ocp.kmod_layering-registry-client"
        self.bytes_fetched = 0
        self.requests = 0
        self._auths = {}  # type: Dict[str, Tuple[str, str]]
        self._auth_source = "none"
        if auth_file:
            try:
                with open(auth_file, "rb") as handle:
                    self._auths = parse_auth_config(handle.read())
            except (IOError, OSError) as exc:
                raise RegistryError("cannot read registry auth file %s: %s" % (auth_file, exc))
            self._auth_source = "auth file %s" % auth_file
        if auth_config:
            self._auths.update(parse_auth_config(auth_config))
            self._auth_source = "pull secret content" + (" and " + self._auth_source if auth_file else "")
        self._credentials = tuple(credentials) if credentials and credentials[0] else None
        if ca_path and not os.path.exists(ca_path):
            raise RegistryError("ca_path %s does not exist" % ca_path)
        try:
            self._context = make_context(cafile=ca_path, validate_certs=validate_certs)
        except (ssl.SSLError, IOError, OSError) as exc:
            raise RegistryTLSError("cannot load CA certificates from %s: %s" % (ca_path, exc))
        self._request = Request(timeout=timeout, validate_certs=validate_certs, http_agent=self.user_agent,
                                follow_redirects="all", context=self._context)
        self._tokens = {}  # type: Dict[Tuple[str, str], Tuple[str, float]]
        self._challenges = {}  # type: Dict[str, Tuple[str, Dict[str, str]]]

    # ---- credentials -------------------------------------------------

    def credentials_for(self, ref):
        # type: (ImageReference) -> Tuple[Optional[Tuple[str, str]], str]
        """(``(user, password)`` or None, where they come from - no secret)."""
        if self._credentials:
            return self._credentials, "username/password given (user %r)" % self._credentials[0]
        creds, key = lookup_credentials(self._auths, ref)
        if creds:
            return creds, "%s, entry %r (user %r)" % (self._auth_source, key, creds[0])
        if self._auth_source != "none":
            return None, "none: %s has no entry for %s (anonymous)" % (self._auth_source, ref.registry)
        return None, "none (anonymous)"

    # ---- HTTP --------------------------------------------------------

    def _base(self, registry):
        # type: (str) -> str
        host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
        return "%s://%s" % ("http" if self.plain_http else "https", host)

    def _open(self, method, url, headers, label):
        try:
            self.requests += 1
            return self._request.open(method, url, headers=headers, unredirected_headers=["Authorization"])
        except HTTPError:
            raise
        except URLError as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (ssl.SSLError, ssl.CertificateError)):
                raise self._tls_error(url, reason)
            raise RegistryConnectionError("cannot reach %s (%s): %s" % (label, url, reason))
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise self._tls_error(url, exc)
        except (socket.timeout, socket.error, IOError) as exc:
            raise RegistryConnectionError("cannot reach %s (%s): %s" % (label, url, exc))
        except Exception as exc:  # ansible's SSLValidationError / ConnectionError
            if "ssl" in type(exc).__name__.lower() or "certificate" in str(exc).lower():
                raise self._tls_error(url, exc)
            raise RegistryConnectionError("cannot reach %s (%s): %s" % (label, url, exc))

    def _open_retrying(self, method, url, headers, label):
        """``_open``, retried on transient failures when ``method`` is idempotent.

        Gives up after ``self.retries`` retries with the last error, saying how
        many attempts were made."""
        failures = 0
        while True:
            try:
                return self._open(method, url, headers, label)
            except HTTPError as exc:
                if method not in RETRY_METHODS or exc.code not in RETRY_STATUS or failures >= self.retries:
                    if failures:
                        exc.kmod_attempts = failures + 1
                    raise
                reason = "HTTP %d" % exc.code
                try:
                    exc.close()
                except Exception:  # pylint: disable=broad-except
                    pass
            except RegistryConnectionError as exc:
                if method not in RETRY_METHODS or failures >= self.retries:
                    if failures:
                        raise RegistryConnectionError("%s (gave up after %d attempts)" % (exc, failures + 1))
                    raise
                reason = str(exc)
            failures += 1
            delay = backoff_delay(failures, self.retry_base, self.retry_ceiling)
            self.retry_log.append("%s %s: %s; retry %d/%d in %.1fs"
                                  % (method, url.split("?", 1)[0], reason, failures, self.retries, delay))
            time.sleep(delay)

    def _tls_error(self, url, reason):
        hint = ("give the registry's CA certificate with ca_path (kmod_registry_ca_file in the roles)"
                if self.ca_path is None
                else "check that ca_path %s is the CA that signed the registry's certificate" % self.ca_path)
        return RegistryTLSError(
            "TLS verification of %s failed: %s; %s, or set validate_certs: false to skip verification"
            % (url, reason, hint))

    def _auth_header(self, ref, scope):
        # type: (ImageReference, str) -> Optional[str]
        challenge = self._challenges.get(ref.registry)
        if not challenge:
            return None
        scheme, params = challenge
        if scheme == "bearer":
            return "Bearer " + self._token(ref, params, scope)
        if scheme == "basic":
            creds, _source = self.credentials_for(ref)
            if creds:
                return "Basic " + base64.b64encode(("%s:%s" % creds).encode("utf-8")).decode("ascii")
        return None

    def _token(self, ref, params, scope):
        # type: (ImageReference, Dict[str, str], str) -> str
        key = (ref.registry, scope)
        cached = self._tokens.get(key)
        if cached and cached[1] > time.time():
            return cached[0]
        realm = params.get("realm")
        if not realm:
            raise AuthenticationError("registry %s sent a Bearer challenge without realm" % ref.registry)
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        creds, source = self.credentials_for(ref)
        headers = {}
        if creds:
            headers["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % creds).encode("utf-8")).decode("ascii")
        try:
            response = self._open_retrying("GET", url, headers, "token server of %s" % ref.registry)
            body = response.read()
        except HTTPError as exc:
            if exc.code in (401, 403):
                raise AuthenticationError(
                    "authentication to registry %s failed: its token server %s refused the credentials "
                    "(HTTP %d); credentials tried: %s" % (ref.registry, realm, exc.code, source))
            raise RegistryConnectionError("token server %s of registry %s answered HTTP %d"
                                          % (realm, ref.registry, exc.code))
        try:
            doc = json.loads(body.decode("utf-8"))
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError, UnicodeDecodeError):
            token = None
        if not token:
            raise AuthenticationError("token server %s of registry %s returned no token" % (realm, ref.registry))
        try:
            lifetime = max(int(doc.get("expires_in") or 60), 10)
        except (TypeError, ValueError):
            lifetime = 60
        self._tokens[key] = (token, time.time() + lifetime - 5)
        return token

    def _call(self, method, ref, path, accept=None, what=None):
        """Authenticated request to ``/v2/<repo>/<path>``; returns the response."""
        url = "%s/v2/%s/%s" % (self._base(ref.registry), ref.repository, path)
        scope = "repository:%s:pull" % ref.repository
        what = what or str(ref)
        for attempt in range(2):
            headers = {}
            if accept:
                headers["Accept"] = accept
            auth = self._auth_header(ref, scope)
            if auth:
                headers["Authorization"] = auth
            try:
                return self._open_retrying(method, url, headers, "registry %s" % ref.registry)
            except HTTPError as exc:
                body = b""
                try:
                    body = exc.read() or b""
                except Exception:
                    pass
                if exc.code == 401 and attempt == 0:
                    scheme, params = parse_www_authenticate(exc.headers.get("WWW-Authenticate", ""))
                    if scheme in ("bearer", "basic"):
                        known = self._challenges.get(ref.registry)
                        self._challenges[ref.registry] = (scheme, params)
                        self._tokens.pop((ref.registry, scope), None)
                        creds, _src = self.credentials_for(ref)
                        # retry unless nothing would change (basic without creds)
                        if scheme == "bearer" or (creds and known != (scheme, params)):
                            continue
                self._raise_http(exc, body, ref, what)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_http(self, exc, body, ref, what):
        codes, message = _error_detail(body)
        detail = (" (%s)" % message) if message else ""
        if exc.code in (401, 403):
            _creds, source = self.credentials_for(ref)
            raise AuthenticationError(
                "authentication to registry %s failed for %s: HTTP %d%s; credentials tried: %s"
                % (ref.registry, ref.name, exc.code, detail, source))
        if exc.code == 404:
            if "NAME_UNKNOWN" in codes:
                raise NotFoundError("repository %s not found on registry %s%s" % (ref.repository, ref.registry, detail))
            if "BLOB_UNKNOWN" in codes or what.startswith("blob "):
                raise NotFoundError("%s not found on registry %s%s" % (what, ref.registry, detail))
            if ref.digest:
                missing = "no manifest %s in repository %s" % (ref.digest, ref.repository)
            else:
                missing = "no tag %r in repository %s (or no such repository)" % (ref.tag, ref.repository)
            raise NotFoundError("%s not found: registry %s has %s%s" % (what, ref.registry, missing, detail))
        attempts = getattr(exc, "kmod_attempts", 0)
        raise RegistryConnectionError("registry %s answered HTTP %d for %s%s%s" % (
            ref.registry, exc.code, what, detail, (" (gave up after %d attempts)" % attempts) if attempts else ""))

    # ---- cache -------------------------------------------------------

    def _cache_path(self, digest):
        # type: (str) -> Optional[str]
        if not self.cache_dir or not _DIGEST_RE.match(digest or ""):
            return None
        algo, hexpart = digest.split(":", 1)
        return os.path.join(self.cache_dir, "blobs", algo, hexpart)

    def _cache_get(self, digest):
        # type: (str) -> Optional[bytes]
        path = self._cache_path(digest)
        if path and os.path.exists(path):
            with open(path, "rb") as handle:
                data = handle.read()
            if verify_digest(data, digest):
                return data
        return None

    def _cache_put(self, digest, data):
        # type: (str, bytes) -> None
        path = self._cache_path(digest)
        if not path or os.path.exists(path):
            return
        fd, tmp = self._cache_tmp(path)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, path)

    @staticmethod
    def _cache_tmp(path):
        directory = os.path.dirname(path)
        # exist_ok: forks of one run (a host each) fill a new cache at once
        os.makedirs(directory, exist_ok=True)
        return tempfile.mkstemp(prefix=".tmp-", dir=directory)

    # ---- manifests ---------------------------------------------------

    def manifest_digest(self, ref):
        # type: (ImageReference) -> str
        """Registry digest of ``ref`` (HEAD; a list/index stays one)."""
        if isinstance(ref, str):
            ref = parse_pullspec(ref)
        return self._head_digest(ref) or self._fetch_manifest(ref)[0]

    def _head_digest(self, ref):
        # type: (ImageReference) -> Optional[str]
        response = self._call("HEAD", ref, "manifests/" + ref.reference, accept=MANIFEST_ACCEPT)
        response.close()
        return response.headers.get("Docker-Content-Digest")

    def _fetch_manifest(self, ref):
        """(digest, media_type, raw) from cache (by digest) or the registry."""
        if ref.digest:
            cached = self._cache_get(ref.digest)
            if cached is not None:
                return ref.digest, None, cached
        elif self.cache_dir:
            digest = self._head_digest(ref)
            cached = self._cache_get(digest) if digest else None
            if cached is not None:
                return digest, None, cached
        response = self._call("GET", ref, "manifests/" + ref.reference, accept=MANIFEST_ACCEPT)
        raw = response.read()
        response.close()
        self.bytes_fetched += len(raw)
        header_digest = response.headers.get("Docker-Content-Digest")
        computed = "sha256:" + hashlib.sha256(raw).hexdigest()
        if ref.digest:
            if not verify_digest(raw, ref.digest):
                raise DigestMismatchError("manifest of %s has digest %s, not the %s asked for"
                                          % (ref.name, computed, ref.digest))
            digest = ref.digest
        elif header_digest and header_digest.startswith("sha256:") and header_digest != computed:
            raise DigestMismatchError("registry %s says manifest %s has digest %s but its content has %s"
                                      % (ref.registry, ref, header_digest, computed))
        else:
            digest = header_digest or computed
        self._cache_put(digest, raw)
        return digest, response.headers.get("Content-Type"), raw

    def get_manifest(self, ref, arch=None, os_name="linux"):
        # type: (ImageReference, Optional[str], str) -> Manifest
        """The manifest of ``ref``; a list/index is resolved when ``arch`` is given."""
        if isinstance(ref, str):
            ref = parse_pullspec(ref)
        digest, content_type, raw = self._fetch_manifest(ref)
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryError("manifest of %s is not JSON: %s" % (ref, exc))
        media_type = manifest_media_type(data, content_type)
        if media_type in MT_DOCKER_SCHEMA1:
            raise RegistryError("%s has a Docker schema 1 manifest, which is not supported" % ref)
        manifest = Manifest(ref, digest, media_type, raw, data)
        if manifest.is_index and arch:
            try:
                desc = choose_platform(data.get("manifests") or [], arch, os_name)
            except PlatformNotFoundError as exc:
                raise PlatformNotFoundError("%s: %s" % (ref, exc), exc.available)
            child = self.get_manifest(ref.with_digest(desc["digest"]))
            if child.is_index:
                raise RegistryError("manifest list %s@%s nests another list" % (ref.name, digest))
            child.ref = ref
            child.index_digest = digest
            child.platform = desc.get("platform")
            return child
        if media_type not in INDEX_TYPES + MANIFEST_TYPES:
            raise RegistryError("%s has unsupported manifest media type %s" % (ref, media_type))
        return manifest

    # ---- blobs -------------------------------------------------------

    def open_blob(self, ref, digest, size=None):
        # type: (ImageReference, str, Optional[int]) -> BlobReader
        """Stream blob ``digest`` of ``ref``'s repository (cache first)."""
        del size  # reserved
        path = self._cache_path(digest)
        label = "%s@%s" % (ref.name, digest)
        if path and os.path.exists(path):
            return BlobReader(self, digest, open(path, "rb"), from_cache=True, label=label)
        response = self._call("GET", ref.with_digest(digest), "blobs/" + digest, what="blob " + label)
        tmp = self._cache_tmp(path) if path else None
        return BlobReader(self, digest, response, cache_tmp=tmp, cache_path=path, label=label)

    def read_blob(self, ref, digest):
        # type: (ImageReference, str) -> bytes
        with self.open_blob(ref, digest) as blob:
            return blob.read()

    def get_config(self, ref, manifest=None):
        # type: (ImageReference, Optional[Manifest]) -> Dict[str, Any]
        """The image config JSON (labels are in ``["config"]["Labels"]``)."""
        if manifest is None:
            manifest = self.get_manifest(ref)
        if manifest.is_index:
            raise RegistryError("%s is a manifest list: choose an architecture first" % ref)
        desc = manifest.config
        if not desc.get("digest"):
            raise RegistryError("manifest of %s has no config" % ref)
        raw = self.read_blob(manifest.ref, desc["digest"])
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryError("config of %s is not JSON: %s" % (ref, exc))


def check_platform(config, arch, ref, os_name="linux"):
    # type: (Dict[str, Any], Optional[str], Any, str) -> None
    """Fail when a single-platform image is not for ``arch`` (if it says)."""
    have_arch, have_os = (config or {}).get("architecture"), (config or {}).get("os")
    if arch and have_arch and (have_arch != normalize_arch(arch) or (have_os and have_os != os_name)):
        have = "%s/%s" % (have_os or "?", have_arch)
        raise PlatformNotFoundError("%s is a %s image, not %s/%s" % (ref, have, os_name, normalize_arch(arch)),
                                    [have])


def layer_compression(layer):
    # type: (Dict[str, Any]) -> str
    """What a layer descriptor's compression is: gzip, zstd, zstd:chunked, none or its media type."""
    media_type = (layer or {}).get("mediaType") or ""
    if media_type in GZIP_LAYER_TYPES:
        return "gzip"
    if media_type.endswith("+zstd") or media_type.endswith(".zstd"):
        annotations = (layer or {}).get("annotations") or {}
        return "zstd:chunked" if ZSTD_CHUNKED_ANNOTATION in annotations else "zstd"
    if media_type in ("application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar"):
        return "none"
    return media_type or "unknown"


def non_gzip_layers(manifest_data):
    # type: (Dict[str, Any]) -> List[Tuple[int, Dict[str, Any]]]
    """(index, descriptor) of every layer of an image manifest that is not gzip."""
    return [(index, layer) for index, layer in enumerate((manifest_data or {}).get("layers") or [])
            if (layer or {}).get("mediaType") not in GZIP_LAYER_TYPES]


def image_labels(config):
    # type: (Dict[str, Any]) -> Dict[str, str]
    """Labels of an image config (``config.Labels``), never None."""
    return dict(((config or {}).get("config") or {}).get("Labels") or {})


def find_in_layers(client, manifest, match, max_layers=None, cache_key=None):
    # type: (RegistryClient, Manifest, Callable[[str, Any], Any], Optional[int], Optional[str]) -> Tuple[Any, Dict[str, Any]]
    """Scan the layers of ``manifest`` from the last back for ``match``.

    ``match(path, fileobj)`` is called for every member (``fileobj`` None for
    non-regular files) and returns a non-None value to stop. Reading stops as
    soon as it does (the rest of the layer is not downloaded). With a client
    ``cache_dir`` and a ``cache_key`` naming the matcher, the outcome per
    layer digest (JSON-serializable value, or "not there") is remembered, so
    a rerun reads no layer. Returns ``(value or None, info)`` with info
    ``{"layer_index": 1-based index or None, "layer_digest", "layers_read"
    (layers actually downloaded or read from the blob cache), "layer_count",
    "path"}``.
    """
    layers = manifest.layers
    info = {"layer_index": None, "layer_digest": None, "layers_read": 0,
            "layer_count": len(layers), "path": None}
    for count, idx in enumerate(reversed(range(len(layers)))):
        if max_layers is not None and count >= max_layers:
            break
        desc = layers[idx]
        result = _scan_layer(client, manifest, desc, match, cache_key, info)
        if result is not None:
            info["layer_index"] = idx + 1
            info["layer_digest"] = desc["digest"]
            info["path"] = result[1]
            return result[0], info
    return None, info


def _scan_layer(client, manifest, desc, match, cache_key, info):
    """(value, path) of the first hit in one layer, or None."""
    memo = None
    if client.cache_dir and cache_key and _DIGEST_RE.match(desc.get("digest", "")):
        memo = os.path.join(client.cache_dir, "scan", re.sub(r"[^A-Za-z0-9_.-]", "_", cache_key),
                            desc["digest"].replace(":", "-") + ".json")
        if os.path.exists(memo):
            try:
                with open(memo) as handle:
                    doc = json.load(handle)
                return (doc["value"], doc["path"]) if doc.get("found") else None
            except (ValueError, KeyError, IOError, OSError):
                pass
    media_type = desc.get("mediaType", "")
    if "zstd" in media_type:
        raise RegistryError("layer %s of %s is zstd compressed, which is not supported"
                            % (desc.get("digest"), manifest.ref))
    info["layers_read"] += 1
    found = None
    with client.open_blob(manifest.ref, desc["digest"]) as blob:
        for path, _member, fileobj in iter_tar_layer(blob):
            value = match(path, fileobj)
            if value is not None:
                found = (value, path)
                break
        if found is None:
            blob.finish()  # verify the digest, fill the blob cache
    if memo:
        doc = {"found": found is not None, "value": found[0] if found else None, "path": found[1] if found else None}
        try:
            fd, tmp = RegistryClient._cache_tmp(memo)
            os.write(fd, json.dumps(doc).encode("utf-8"))
            os.close(fd)
            os.rename(tmp, memo)
        except (TypeError, ValueError, IOError, OSError):
            pass
    return found
