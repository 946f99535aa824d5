# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Files the modules write on the controller (private module utility).

Reports, manifests and caches are read by people and other tools while a run
goes on, so they are written whole: a temporary file next to the target, then
a rename.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import tempfile

from ansible.module_utils.common.text.converters import to_bytes, to_text


def write_atomic(path, content, mode=0o644):
    """Write ``content`` (text or bytes) to ``path``, making its directory.

    An existing file keeps its permissions; a new one gets ``mode``.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)  # another fork may make it at the same time
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=".%s-" % os.path.basename(path))
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(to_bytes(content))
        os.chmod(tmp, (os.stat(path).st_mode & 0o7777) if os.path.exists(path) else mode)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_text(path):
    """The text of ``path``, "" when it does not exist; ValueError when it is
    not a regular file."""
    if not os.path.exists(path):
        return ""
    if not os.path.isfile(path):
        raise ValueError("%s exists and is not a regular file" % path)
    with open(path, "rb") as stream:
        return to_text(stream.read(), errors="surrogate_or_replace")


def write_if_changed(path, content, mode=0o644, check_mode=False):
    """Write ``content`` to ``path`` when it differs (not in check mode).

    Returns ``(changed, diff)``, ``diff`` in the shape modules return.
    """
    before = read_text(path)
    content = to_text(content)
    changed = before != content
    if changed and not check_mode:
        write_atomic(path, content, mode)
    return changed, {"before": before, "after": content, "before_header": path, "after_header": path}
