# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The module sources of ``kmod_sources``: fetched into a cache (a local
path as it is, a git ref resolved to a commit and exported once per commit,
an archive unpacked once per content digest) and fingerprinted
(``_build.tree_digest``), so that a build key changes exactly when a
module's sources do.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import shutil
import tarfile
import tempfile
import zipfile

from ansible.module_utils.urls import open_url

from ansible_collections.ocp.kmod_layering.plugins.module_utils._build import (
    file_digest,
    template_module,
    tree_digest,
)

_HEX40 = "0123456789abcdef"


class SourceError(Exception):
    pass


def _hash_name(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class Fetcher(object):
    """Fetches sources into ``cache_dir``; ``module`` runs git (its
    ``get_bin_path`` and ``run_command``)."""

    def __init__(self, module, cache_dir, validate_certs, timeout):
        self.module = module
        self.cache_dir = cache_dir
        self.validate_certs = validate_certs
        self.timeout = timeout
        self.fetched = []
        self._git = None

    # ---- git ---------------------------------------------------------

    def git(self, args, cwd=None, what=""):
        if self._git is None:
            self._git = self.module.get_bin_path("git")
            if not self._git:
                raise SourceError("%sgit is not installed on the controller (needed for git sources)" % what)
        rc, out, err = self.module.run_command([self._git] + args, cwd=cwd,
                                               environ_update=dict(GIT_TERMINAL_PROMPT="0", LC_ALL="C"))
        return rc, (out or "").strip(), (err or "").strip()

    def _resolve(self, mirror, version):
        rc, out, _err = self.git(["rev-parse", "--verify", "--quiet", version + "^{commit}"], cwd=mirror)
        return out if rc == 0 and out else None

    def from_git(self, name, url, version, subdir):
        what = "module %s: " % name
        mirror = os.path.join(self.cache_dir, "git", _hash_name(url) + ".git")
        commit = None
        pinned = len(version) == 40 and all(c in _HEX40 for c in version.lower())
        if os.path.isdir(mirror) and pinned:
            commit = self._resolve(mirror, version)
        if commit is None:
            if not os.path.isdir(mirror):
                os.makedirs(os.path.dirname(mirror), exist_ok=True)
                tmp = tempfile.mkdtemp(prefix=".clone-", dir=os.path.dirname(mirror))
                rc, _out, err = self.git(["clone", "--quiet", "--mirror", url, tmp], what=what)
                if rc != 0:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise SourceError("%scannot clone git repository %s: %s" % (what, url, err))
                os.rename(tmp, mirror)
            else:
                rc, _out, err = self.git(["fetch", "--quiet", "--prune", "origin"], cwd=mirror, what=what)
                if rc != 0:
                    raise SourceError("%scannot fetch git repository %s: %s" % (what, url, err))
            self.fetched.append(name)
            commit = self._resolve(mirror, version)
        if commit is None:
            _rc, refs, _err = self.git(["for-each-ref", "--format=%(refname:short)", "refs/heads", "refs/tags"],
                                       cwd=mirror)
            known = refs.split()
            raise SourceError("%sgit version %r is not a branch, tag or commit of %s (branches and tags: %s)"
                              % (what, version, url, ", ".join(known[:20]) or "none"))
        tree = os.path.join(self.cache_dir, "trees", "git-" + commit)
        if not os.path.isdir(tree):
            tmp = tempfile.mkdtemp(prefix=".tree-", dir=self._ensure(os.path.join(self.cache_dir, "trees")))
            archive = os.path.join(tmp, ".export.tar")
            rc, _out, err = self.git(["archive", "--format=tar", "-o", archive, commit], cwd=mirror, what=what)
            if rc != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise SourceError("%scannot export commit %s of %s: %s" % (what, commit, url, err))
            with tarfile.open(archive) as tar:
                _safe_extract_tar(tar, tmp, what)
            os.remove(archive)
            _publish_dir(tmp, tree)
        path = os.path.join(tree, subdir) if subdir else tree
        if not os.path.isdir(path):
            raise SourceError("%sno directory %r in %s at commit %s" % (what, subdir, url, commit))
        label = "git+%s@%s%s" % (url, commit, ("#" + subdir) if subdir else "")
        return path, label, commit

    # ---- archives ----------------------------------------------------

    def from_archive(self, name, location, subdir):
        what = "module %s: " % name
        downloads = self._ensure(os.path.join(self.cache_dir, "archives"))
        if location.startswith(("http://", "https://")):
            fd, tmp = tempfile.mkstemp(prefix=".download-", dir=downloads)
            try:
                with os.fdopen(fd, "wb") as out:
                    response = open_url(location, validate_certs=self.validate_certs, timeout=self.timeout)
                    shutil.copyfileobj(response, out)
            except Exception as exc:
                os.remove(tmp)
                raise SourceError("%scannot download archive %s: %s" % (what, location, exc))
            self.fetched.append(name)
            local = tmp
        else:
            local = location
            if not os.path.isfile(local):
                raise SourceError("%sarchive %s does not exist on the controller" % (what, location))
            tmp = None
        digest = file_digest(local)
        tree = os.path.join(self.cache_dir, "trees", "archive-" + digest.split(":", 1)[1])
        try:
            if not os.path.isdir(tree):
                work = tempfile.mkdtemp(prefix=".tree-", dir=self._ensure(os.path.join(self.cache_dir, "trees")))
                try:
                    if zipfile.is_zipfile(local):
                        with zipfile.ZipFile(local) as archive:
                            for member in archive.namelist():
                                _check_member(member, what)
                            archive.extractall(work)
                    else:
                        with tarfile.open(local) as archive:
                            _safe_extract_tar(archive, work, what)
                except (tarfile.TarError, zipfile.BadZipfile, EOFError, OSError) as exc:
                    shutil.rmtree(work, ignore_errors=True)
                    raise SourceError("%scannot unpack archive %s (tar or zip expected): %s" % (what, location, exc))
                _publish_dir(work, tree)
        finally:
            if tmp and os.path.exists(tmp):
                os.remove(tmp)
        path = os.path.join(tree, subdir) if subdir else tree
        if not os.path.isdir(path):
            raise SourceError("%sno directory %r in archive %s" % (what, subdir, location))
        return path, "archive+%s@%s%s" % (location, digest, ("#" + subdir) if subdir else "")

    @staticmethod
    def _ensure(path):
        if not os.path.isdir(path):
            os.makedirs(path, exist_ok=True)
        return path


def _check_member(name, what):
    parts = name.replace("\\", "/").split("/")
    if name.startswith("/") or ".." in parts:
        raise SourceError("%sarchive member %r points outside the archive" % (what, name))


def _safe_extract_tar(tar, dest, what):
    members = []
    for member in tar.getmembers():
        _check_member(member.name, what)
        if member.islnk():
            _check_member(member.linkname, what)
        elif member.issym():
            _check_member(os.path.normpath(os.path.join(os.path.dirname(member.name), member.linkname)), what)
            if member.issym() and member.linkname.startswith("/"):
                raise SourceError("%sarchive member %r links outside the archive" % (what, member.name))
        if member.isdev():
            continue
        members.append(member)
    tar.extractall(dest, members=members)


def _publish_dir(tmp, final):
    try:
        os.rename(tmp, final)
    except OSError:
        # another run published the same content first
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_modules(modules, fetcher):
    """The ``kmod_sources`` result entry of each of ``modules`` (normalized
    ``kmod_modules`` entries): where its sources are, their fingerprint and
    label; raises ``SourceError`` naming the module."""
    result = []
    for entry in modules:
        source = entry["source"]
        commit = None
        if "path" in source:
            path = source["path"]
            if not os.path.isdir(path):
                raise SourceError("module %s: source path %s is not a directory on the controller"
                                  % (entry["name"], source["path"]))
            label = None
        elif "git" in source:
            path, label, commit = fetcher.from_git(entry["name"], source["git"], source["version"], source["subdir"])
        else:
            path, label = fetcher.from_archive(entry["name"], source["archive"], source["subdir"])
        fingerprint = tree_digest(path)
        item = template_module(entry, fingerprint, label or fingerprint)
        item["path"] = os.path.abspath(path)
        if commit:
            item["commit"] = commit
        if entry.get("firmware_dir") and not os.path.isdir(os.path.join(path, entry["firmware_dir"])):
            raise SourceError("module %s: firmware_dir %r is not a directory in its sources (%s)"
                              % (entry["name"], entry["firmware_dir"], item["source"]))
        result.append(item)
    return result


def strip_none(value):
    if isinstance(value, dict):
        return dict((k, strip_none(v)) for k, v in value.items() if v is not None)
    return value
