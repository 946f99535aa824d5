# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a module's main() in-process, as Ansible would hand it its arguments."""

import contextlib
import io
import json

import pytest
from ansible.module_utils.common import warnings
from ansible.module_utils.testing import patch_module_args

try:
    from unittest import mock
except ImportError:  # pragma: no cover
    import mock


def run(module, args):
    """Run ``module.main()`` with ``args``; return (failed, result).

    The warnings and deprecations a module emits are process-wide in
    ansible-core; each run starts with none, so a result shows only its own.
    """
    stdout = io.StringIO()
    with contextlib.ExitStack() as stack:
        for name in ("_global_warnings", "_global_deprecations"):
            if isinstance(getattr(warnings, name, None), dict):
                stack.enter_context(mock.patch.dict(getattr(warnings, name), clear=True))
        stack.enter_context(patch_module_args(args))
        exited = stack.enter_context(pytest.raises(SystemExit))
        stack.enter_context(contextlib.redirect_stdout(stdout))
        module.main()
    result = json.loads(stdout.getvalue())
    return exited.value.code != 0, result
