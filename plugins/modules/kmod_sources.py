#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: kmod_sources
short_description: Fetch and fingerprint the sources of out-of-tree kernel modules
version_added: 0.1.0
description:
  - Validates the C(kmod_modules) list and makes the sources of every module
    available as a local directory, once per run, for the build role to copy
    into the image build context.
  - A O(modules[].source.path) is used in place. A O(modules[].source.git)
    repository is mirrored into O(cache_dir) and the O(modules[].source.version)
    (branch, tag or commit) resolved to a commit, whose tree is exported to a
    directory named after the commit. An O(modules[].source.archive) (local file or
    C(http(s)) URL; tar, tar.gz, tar.bz2, tar.xz or zip) is copied into the
    cache, hashed and unpacked into a directory named after its sha256.
  - Every module gets a content fingerprint, a sha256 over the paths, exec
    bits and contents of its source directory (C(.git) skipped). The build
    key, and so the image tag, changes exactly when a source changes.
  - Fails, before anything is built, when a path or subdirectory does not
    exist, a git version is not in the repository, an archive cannot be read,
    or a O(modules[].firmware_dir) is missing, naming the module.
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
attributes:
  check_mode:
    support: full
    description:
      - Sources are fetched in check mode too (into the cache only), so that
        the build key of a check run is the real one.
  diff_mode:
    support: none
    description: Only the module's own cache is written.
options:
  modules:
    description:
      - The modules, in build order (a module whose symbols another one uses comes first).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Kernel module name; its sources must build C(<name>.ko).
        type: str
        required: true
      source:
        description: Where the sources are; exactly one of C(path), C(git), C(archive).
        type: dict
        required: true
        suboptions:
          path:
            description: Local directory (on the controller) holding the module's sources.
            type: path
          git:
            description: Git repository URL (anything C(git clone) accepts).
            type: str
          version:
            description: Branch, tag or commit of O(modules[].source.git); the remote's default branch (C(HEAD)) when not given.
            type: str
          archive:
            description: Local path or C(http(s)) URL of a tar or zip archive of the sources.
            type: str
          subdir:
            description: Directory inside the git tree or the unpacked archive that holds the module.
            type: str
      build_command:
        description: Shell command that builds the module in its source directory (default C(make -C <kernel build dir> M=$PWD modules)).
        type: str
      load_at_boot:
        description: Load the module at boot (C(/etc/modules-load.d)).
        type: bool
        default: true
      options:
        description: modprobe options written to C(/etc/modprobe.d/<name>.conf).
        type: str
      firmware_dir:
        description: Directory inside the sources whose contents go to C(/usr/lib/firmware).
        type: str
  cache_dir:
    description:
      - Cache of git mirrors, exported git trees, and archives; safe to share between runs.
    type: path
    required: true
  validate_certs:
    description: Verify TLS certificates when downloading archives over HTTPS.
    type: bool
    default: true
  timeout:
    description: Timeout of an archive download, in seconds.
    type: int
    default: 300
requirements:
  - git (for git sources)
notes:
  - Runs on the controller (C(delegate_to=localhost), C(run_once=true)); the
    fingerprints are the same for every cluster.
"""

EXAMPLES = r"""
- name: Fetch and fingerprint the module sources once
  ocp.kmod_layering.kmod_sources:
    modules:
      - name: mydrv_core
        source:
          git: https://git.example.com/drivers/mydrv.git
          version: v1.4.2
          subdir: core
        options: debug=0
      - name: mydrv_net
        source:
          path: /srv/src/mydrv_net
    cache_dir: ~/.cache/ocp.kmod_layering
  delegate_to: localhost
  run_once: true
  register: sources
"""

RETURN = r"""
modules:
  description:
    - The modules, in the given order, as entries of the Containerfile template's
      C(kmod_modules), plus where their sources are.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: Module name.
      type: str
    path:
      description: Local directory holding the module's sources (read only; copy it).
      type: str
    fingerprint:
      description: sha256 of the source tree's paths, exec bits and contents.
      type: str
      sample: sha256:0f1e...
    source:
      description:
        - Where the sources came from, recorded in an image label.
        - The fingerprint for a local path, C(git+<url>@<commit>[#<subdir>]),
          or C(archive+<location>@sha256:<archive digest>[#<subdir>]).
      type: str
    commit:
      description: Commit the git version resolved to.
      type: str
      returned: for git sources
    build_command:
      description: As given.
      type: str
      returned: when given
    load_at_boot:
      description: As given (default true).
      type: bool
    options:
      description: As given.
      type: str
      returned: when given
    firmware_dir:
      description: As given.
      type: str
      returned: when given
fetched:
  description: Names of the modules whose git or archive sources were downloaded in this run (not served by the cache).
  returned: success
  type: list
  elements: str
"""

import os
import shutil
import tarfile
import tempfile
import zipfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

from ansible_collections.ocp.kmod_layering.plugins.module_utils._build import (
    BuildInputError,
    file_digest,
    normalize_modules,
    template_module,
    tree_digest,
)

_HEX40 = "0123456789abcdef"


class SourceError(Exception):
    pass


def _hash_name(text):
    import hashlib
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class Fetcher(object):
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


def main():
    source_spec = dict(
        path=dict(type="path"),
        git=dict(type="str"),
        version=dict(type="str"),
        archive=dict(type="str"),
        subdir=dict(type="str"),
    )
    module = AnsibleModule(
        argument_spec=dict(
            modules=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                source=dict(type="dict", required=True, options=source_spec),
                build_command=dict(type="str"),
                load_at_boot=dict(type="bool", default=True),
                options=dict(type="str"),
                firmware_dir=dict(type="str"),
            )),
            cache_dir=dict(type="path", required=True),
            validate_certs=dict(type="bool", default=True),
            timeout=dict(type="int", default=300),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        modules = normalize_modules([_strip_none(m) for m in params["modules"]])
    except BuildInputError as exc:
        module.fail_json(msg="kmod_modules: %s" % exc)
    fetcher = Fetcher(module, params["cache_dir"], params["validate_certs"], params["timeout"])
    result = []
    try:
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
                path, label, commit = fetcher.from_git(entry["name"], source["git"], source["version"],
                                                       source["subdir"])
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
    except (SourceError, BuildInputError, OSError) as exc:
        module.fail_json(msg=str(exc), fetched=fetcher.fetched)
    module.exit_json(changed=False, modules=result, fetched=fetcher.fetched)


def _strip_none(value):
    if isinstance(value, dict):
        return dict((k, _strip_none(v)) for k, v in value.items() if v is not None)
    return value


if __name__ == "__main__":
    main()
