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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ocp.kmod_layering.plugins.module_utils._build import BuildInputError, normalize_modules
from ansible_collections.ocp.kmod_layering.plugins.module_utils._sources import (
    Fetcher,
    SourceError,
    fetch_modules,
    strip_none,
)


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
        modules = normalize_modules([strip_none(m) for m in params["modules"]])
    except BuildInputError as exc:
        module.fail_json(msg="kmod_modules: %s" % exc)
    fetcher = Fetcher(module, params["cache_dir"], params["validate_certs"], params["timeout"])
    try:
        result = fetch_modules(modules, fetcher)
    except (SourceError, BuildInputError, OSError) as exc:
        module.fail_json(msg=str(exc), fetched=fetcher.fetched)
    module.exit_json(changed=False, modules=result, fetched=fetcher.fetched)


if __name__ == "__main__":
    main()
