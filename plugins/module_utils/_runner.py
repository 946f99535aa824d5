# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""How a module run ends (private module utility).

A module's logic returns its result dict, or raises :class:`Failed` (a
verdict that fails the module: ``msg`` and the result fields to return).
Either may carry ``warnings`` (texts) and ``deprecations`` (dicts of
``msg``, ``version``, ``collection_name``); they are given as the module's
own warnings and deprecations, so they reach the result as ansible-core
shapes them, a failure's included.

- :func:`finish`: the entry of the modules that talk to no cluster
  (``machineconfig_plan``): ``run()``, then one ``exit_json`` or
  ``fail_json``;
- :func:`exit_with`, :func:`fail_with`: the same ends for
  ``_k8s.run_module``, which maps the cluster errors around its ``run``.

It imports nothing heavy (no kubernetes client): a module that needs no
cluster pays nothing for the cluster layer.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:
    from typing import Any, Callable, Dict  # noqa: F401 (type comments)
except ImportError:  # pragma: no cover
    pass


class Failed(Exception):
    """A verdict that fails the module: ``msg`` and the result fields to return."""

    def __init__(self, msg, **result):
        super(Failed, self).__init__(msg)
        self.msg = msg
        self.result = result


def _notify(module, result):
    """Give the ``warnings`` and ``deprecations`` of ``result`` (taken out of it) as ``module``'s."""
    for warning in result.pop("warnings", None) or []:
        module.warn(warning)
    for deprecation in result.pop("deprecations", None) or []:
        module.deprecate(deprecation["msg"], version=deprecation.get("version"),
                         collection_name=deprecation.get("collection_name"))


def exit_with(module, result):
    # type: (Any, Dict[str, Any]) -> None
    """``exit_json`` with ``result`` (its warnings and deprecations given as the module's)."""
    result = dict(result)
    _notify(module, result)
    module.exit_json(**result)


def fail_with(module, failed):
    # type: (Any, Failed) -> None
    """``fail_json`` with the message and fields of ``failed``."""
    result = dict(failed.result)
    _notify(module, result)
    module.fail_json(msg=failed.msg, **result)


def finish(module, run):
    # type: (Any, Callable[[], Dict[str, Any]]) -> None
    """Run ``run()`` and end ``module`` with its result, or with the :class:`Failed` it raises."""
    try:
        result = run()
    except Failed as exc:
        fail_with(module, exc)
    else:
        exit_with(module, result)
