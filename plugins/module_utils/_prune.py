# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Which local podman images this collection may remove.

Every run that builds records the images it made or pulled for its builds
(the layered images' tags, the Driver Toolkit and RHCOS images of their
FROM lines) in a state file on the controller. Only recorded images are
ever pruned: an image the user pulled or built otherwise is never touched.
A recorded image is pruned when the run does not keep it (the run keeps
the base images of the releases it builds for; layered images live on in
the registry once pushed, which is where clusters and rollbacks pull them).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _files

STATE_VERSION = 1


def load_state(path):
    """``{reference: {"kind": ...}}`` recorded so far ({} when none)."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (IOError, OSError):
        return {}
    except ValueError:
        return {}  # a torn or foreign file: start again rather than fail a run
    images = data.get("images") if isinstance(data, dict) else None
    return dict(images) if isinstance(images, dict) else {}


def save_state(path, images):
    _files.write_atomic(path, json.dumps({"version": STATE_VERSION, "images": images}, indent=2, sort_keys=True) + "\n")


def plan(recorded, used, keep):
    """``(state, remove)``: the recorded images with ``used`` ({reference:
    kind}) added, and the references to remove, sorted: recorded, not in
    ``keep``."""
    state = dict(recorded)
    for reference, kind in used.items():
        state[reference] = {"kind": kind}
    keep = set(keep)
    return state, sorted(r for r in state if r not in keep)
