# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Remote native builders per architecture (private module utility).

``kmod_build_hosts`` maps an architecture to a podman remote service that
builds that architecture's images natively instead of under qemu user-mode
emulation on the controller::

    kmod_build_hosts:
      aarch64: {url: "ssh://builder@arm-builder.example.com/run/podman/podman.sock", identity: /path/key}
      s390x: {connection: s390x-builder}     # a `podman system connection`

``parse(build_hosts)``
    Validates the mapping (architecture keys in either spelling, exactly one
    of ``url`` / ``connection`` per builder, ``identity`` only with an ssh
    URL, ``ssh://`` or ``unix://`` URLs without a password) and returns
    ``{arch: builder}`` by release name; ``BuildHostError`` names the entry
    and the fix.
``same_everywhere(per_cluster)``
    ``kmod_build_hosts`` is a fleet setting (the builds run once per play):
    raises when clusters of the play set it differently.
``podman_args(builder)``
    The podman global options that reach the builder (``--url`` and
    ``--identity``, or ``--connection``).
``probe(arch, builder, run, podman)``
    Asks the builder ``podman info`` through ``run(argv) -> (rc, out, err)``
    and checks it answers and is of ``arch`` (its ``host.arch``).
``check(build_hosts, arches, run, host_arch, ...)``
    The whole check: parse, then probe the builder of each architecture of
    ``arches`` that has one; returns who builds each of ``arches``
    (``local``, ``emulated`` or the builder's name).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

try:
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover (Python 2)
    from urlparse import urlsplit

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _arch

KEYS = ("url", "connection", "identity")
SCHEMES = ("ssh", "unix")
VARIABLE = "kmod_build_hosts"
EXAMPLE = "{aarch64: {url: 'ssh://builder@arm-builder.example.com/run/podman/podman.sock', identity: /path/key}}"
# Who builds an architecture that has no builder.
LOCAL = "local"
EMULATED = "emulated"


class BuildHostError(ValueError):
    """``kmod_build_hosts`` is wrong, or a builder cannot build; the message names the fix."""


def _name(builder):
    return builder.get("connection") or builder["url"]


def _check_url(where, url):
    # type: (str, str) -> None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "tcp":
        raise BuildHostError(
            "%s: url %r is a tcp:// podman service, which is neither encrypted nor authenticated (the build "
            "context, the registry credentials and the signing key would cross the network in clear): use "
            "ssh://user@host/run/podman/podman.sock (or a `podman system connection` over ssh)." % (where, url))
    if scheme not in SCHEMES:
        raise BuildHostError(
            "%s: url %r is not a podman remote URL: use ssh://user@host[:port]/run/podman/podman.sock "
            "(or unix:///path/podman.sock for a service on the controller itself)." % (where, url))
    if parts.password is not None:
        raise BuildHostError(
            "%s: the url carries a password, which would show in the process list and the logs: remove it and "
            "give an ssh key (identity) or use a `podman system connection` (connection)." % where)
    if scheme == "ssh" and not parts.hostname:
        raise BuildHostError("%s: url %r names no host (ssh://user@host/run/podman/podman.sock)." % (where, url))
    if scheme == "unix" and not (parts.path or parts.netloc):
        raise BuildHostError("%s: url %r names no socket (unix:///run/podman/podman.sock)." % (where, url))


def parse(build_hosts):
    # type: (object) -> dict
    """``kmod_build_hosts`` -> ``{arch: {'arch', 'url', 'connection', 'identity', 'name'}}`` (release names)."""
    if build_hosts in (None, ""):
        return {}
    if not isinstance(build_hosts, dict):
        raise BuildHostError(
            "%s must be a mapping of architecture to builder, e.g. %s; got a %s."
            % (VARIABLE, EXAMPLE, type(build_hosts).__name__))
    builders = {}
    spelled = {}
    for key in sorted(build_hosts, key=str):
        try:
            arch = _arch.release_arch(key)
        except _arch.ArchError as exc:
            raise BuildHostError("%s: %s. Each key is the architecture the builder builds for." % (VARIABLE, exc))
        if arch in builders:
            raise BuildHostError("%s names %s twice (%s and %s): keep one." % (VARIABLE, arch, spelled[arch], key))
        where = "%s.%s" % (VARIABLE, key)
        value = build_hosts[key]
        if not isinstance(value, dict):
            raise BuildHostError(
                "%s must be a mapping with url (a podman remote URL) or connection (the name of a "
                "`podman system connection`), e.g. {url: 'ssh://builder@host/run/podman/podman.sock'}; got %r."
                % (where, value))
        unknown = sorted(set(value) - set(KEYS), key=str)
        if unknown:
            raise BuildHostError("%s: unknown key(s) %s (known: %s)."
                                 % (where, ", ".join(repr(k) for k in unknown), ", ".join(KEYS)))
        given = [k for k in ("url", "connection") if value.get(k) not in (None, "")]
        if len(given) != 1:
            raise BuildHostError(
                "%s needs exactly one of url (a podman remote URL, ssh://user@host/run/podman/podman.sock) or "
                "connection (the name of a `podman system connection`)%s."
                % (where, " (got both)" if len(given) == 2 else ""))
        for option in ("url", "connection", "identity"):
            if value.get(option) not in (None, "") and not isinstance(value[option], str):
                raise BuildHostError("%s: %s must be a string, got %r." % (where, option, value[option]))
        builder = {"arch": arch, "key": str(key), "url": value.get("url") or None,
                   "connection": value.get("connection") or None, "identity": value.get("identity") or None}
        if builder["url"]:
            _check_url(where, builder["url"])
        if builder["identity"]:
            if not builder["url"] or urlsplit(builder["url"]).scheme.lower() != "ssh":
                raise BuildHostError(
                    "%s: identity (an ssh key) goes with an ssh:// url; a `podman system connection` carries its "
                    "own identity." % where)
        builder["name"] = _name(builder)
        builders[arch] = builder
        spelled[arch] = str(key)
    return builders


def same_everywhere(per_cluster):
    # type: (dict) -> None
    """Raise when the clusters of a play set ``kmod_build_hosts`` differently."""
    seen = {}
    for cluster in sorted(per_cluster):
        text = json.dumps(per_cluster[cluster] or {}, sort_keys=True)
        seen.setdefault(text, []).append(cluster)
    if len(seen) > 1:
        groups = sorted(seen.values())
        raise BuildHostError(
            "%s differs between the clusters of the play (%s): it is a fleet setting (the images are built once "
            "per play, on the controller), set it once, e.g. in group_vars/all."
            % (VARIABLE, "; ".join(", ".join(group) for group in groups)))


def podman_args(builder):
    # type: (dict) -> list
    """podman's global options that reach the builder."""
    if builder.get("connection"):
        return ["--connection", builder["connection"]]
    args = ["--url", builder["url"]]
    if builder.get("identity"):
        args += ["--identity", builder["identity"]]
    return args


def _what(builder):
    return "%s.%s (%s)" % (VARIABLE, builder["key"], builder["name"])


def _first_error(text):
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")]
    return (errors or lines or ["no output"])[-1]


def probe(arch, builder, run, podman="podman", exists=os.path.exists):
    # type: (str, dict, object, str, object) -> dict
    """``podman info`` of the builder of ``arch``: ``{'arch', 'version', 'graph_root'}``, or BuildHostError."""
    what = _what(builder)
    if builder.get("identity") and not exists(builder["identity"]):
        raise BuildHostError(
            "The builder of %s, %s: its identity file %s does not exist. Fix identity (the ssh key podman logs "
            "in with) or remove %s from %s to build on the controller."
            % (arch, what, builder["identity"], arch, VARIABLE))
    rc, out, err = run([podman] + podman_args(builder) + ["info", "--format", "json"])
    if rc != 0:
        reason = "did not answer in time" if rc == 124 else "cannot be reached: %s" % _first_error(err or out)
        raise BuildHostError(
            "The builder of %s, %s, %s. Check that the host is up, that the podman service runs there "
            "(podman.socket, or `podman system service`) at that socket path, and that ssh logs in (user, "
            "identity, known_hosts); try `%s`. Or remove %s from %s to build on the controller (under "
            "emulation when it is not the controller's architecture)."
            % (arch, what, reason, " ".join([podman] + podman_args(builder) + ["info"]), arch, VARIABLE))
    try:
        info = json.loads(out)
        host = info["host"]
        remote = _arch.release_arch(host["arch"])
    except (ValueError, KeyError, TypeError, _arch.ArchError) as exc:
        raise BuildHostError("The builder of %s, %s, answered `podman info` with no host architecture we know "
                             "(%s): is it a podman service?" % (arch, what, exc))
    if remote != arch:
        raise BuildHostError(
            "The builder of %s, %s, is not a host of architecture %s: its `podman info` says host.arch %s (%s), "
            "so it would build %s images. Point %s.%s at the podman service of a host of architecture %s (or "
            "give this builder under %s)." % (arch, what, arch, host["arch"], remote, remote, VARIABLE,
                                              builder["key"], arch, remote))
    version = (info.get("version") or {}).get("Version") or ""
    store = info.get("store") or {}
    return {"arch": remote, "version": version, "graph_root": store.get("graphRoot") or ""}


def check(build_hosts, arches, run, host_arch, podman="podman", per_cluster=None, exists=os.path.exists):
    # type: (object, list, object, str, str, dict, object) -> dict
    """Validate ``kmod_build_hosts`` and probe the builders ``arches`` need.

    Returns ``{'builders': {arch: entry}, 'emulated': [...], 'remote': [...]}``
    where each entry of ``arches`` has ``builder`` (``local``, ``emulated`` or
    the builder's name), ``remote`` and, for a remote one, ``podman_args``,
    ``url``/``connection`` and what ``podman info`` said.
    """
    if per_cluster:
        same_everywhere(per_cluster)
    builders = parse(build_hosts)
    host = _arch.release_arch(host_arch)
    wanted = sorted(set(_arch.release_arch(arch) for arch in arches))
    result = {}
    problems = []
    for arch in wanted:
        builder = builders.get(arch)
        if builder is None:
            result[arch] = {"builder": LOCAL if arch == host else EMULATED, "remote": False, "podman_args": []}
            continue
        try:
            info = probe(arch, builder, run, podman=podman, exists=exists)
        except BuildHostError as exc:
            problems.append(str(exc))
            continue
        result[arch] = {"builder": builder["name"], "remote": True, "podman_args": podman_args(builder),
                        "url": builder["url"], "connection": builder["connection"], "podman_version": info["version"],
                        "graph_root": info["graph_root"]}
    if problems:
        raise BuildHostError(" ".join(problems) + " Nothing was built or pushed.")
    return {
        "builders": result,
        "configured": sorted(builders),
        "remote": sorted(arch for arch in result if result[arch]["remote"]),
        "emulated": sorted(arch for arch in result if result[arch]["builder"] == EMULATED),
        "host_arch": host,
    }
