# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The run of ``machineconfig_plan`` (private module utility): from the
module's options to its result, with the pure pieces of ``_machineconfig``.

:func:`plan` renders our MachineConfig for a pool (a rollout with its
history, or what a rollback writes), validates it, runs the gates before a
write in their order (pool, cluster upgrade, effectiveness, Secure Boot),
renders the YAML and writes ``dest`` when given. It returns the module's
result, with ``warnings`` and ``deprecations`` for the module to give, or
raises ``_runner.Failed`` with the message and the result fields of the
failure. It talks to no cluster; the only file it writes is ``dest``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.common.text.converters import to_native

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _files, _machineconfig
from ansible_collections.ocp.kmod_layering.plugins.module_utils._runner import Failed

try:
    import yaml
except ImportError:
    yaml = None

try:
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401 (type comments)
except ImportError:  # pragma: no cover
    pass

# Left unset, ``gates`` follows ``pools`` (the old machineconfig_manifest), deprecated.
IMPLICIT_GATES_DEPRECATION = {
    "msg": "Gates that switch on because pools is given: set gates: true (or false) explicitly.",
    "version": "2.0.0",
    "collection_name": "ocp.kmod_layering",
}


def to_yaml(machineconfig, cluster, pool):
    # type: (Dict[str, Any], str, str) -> str
    """The YAML of ``machineconfig`` that ``dest`` gets, under a comment naming the pool and cluster."""
    header = "# MachineConfig of ocp.kmod_layering for pool %s of cluster %s: rolls out the layered OS image.\n" % (
        pool, cluster)
    return header + yaml.safe_dump(machineconfig, default_flow_style=False, sort_keys=False)


def is_subset(wanted, actual):
    # type: (Any, Any) -> bool
    """Every key/value of ``wanted`` is in ``actual`` (recursively for dicts)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(k in actual and is_subset(v, actual[k]) for k, v in wanted.items())
    return wanted == actual


def render(params, existing):
    # type: (Dict[str, Any], Optional[Dict[str, Any]]) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]
    """``(machineconfig, rollback)``: ours for a rollout (with the history of
    ``existing``, ours as the cluster has it), or for a rollback what
    ``_machineconfig.rollback_plan`` writes (None but for ``restore``) and
    the plan without it. MachineConfigError on a bad name or image."""
    if params["operation"] == "rollback":
        rollback = _machineconfig.rollback_plan(existing, params["pool"], name_prefix=params["name_prefix"])
        return rollback.pop("machineconfig"), rollback
    built = _machineconfig.build_machineconfig(
        params["pool"], params["os_image_url"], name_prefix=params["name_prefix"], build_key=params["build_key"],
        modules=params["modules"], kernel_version=params["kernel_version"], release=params["release"],
        release_image=params["release_image"], driver_toolkit_image=params["driver_toolkit_image"],
        rhcos_image=params["rhcos_image"], signing_cert_sha256=(params["signing"] or {}).get("cert_sha256"))
    return _machineconfig.with_history(built, existing), None


def gates_on(params):
    # type: (Dict[str, Any]) -> Tuple[bool, List[Dict[str, str]]]
    """Whether the gates run, and the deprecations that says: ``gates``, or
    left unset, whether ``pools`` is given (deprecated)."""
    if params["gates"] is not None:
        return params["gates"], []
    implicit = params["pools"] is not None
    return implicit, [dict(IMPLICIT_GATES_DEPRECATION)] if implicit else []


def unchecked_secure_boot_gate():
    # type: () -> Dict[str, Any]
    """RV(secure_boot_gate) of a run without the Secure Boot gate."""
    return {"checked": False, "nodes": [], "enforcing": [], "refusing": [], "unknown": []}


def run_gates(params, cluster, name, machineconfig, warnings):
    # type: (Dict[str, Any], str, str, Optional[Dict[str, Any]], List[str]) -> Tuple[List[str], Dict[str, Any]]
    """The gates before a write, in order, for ``machineconfig`` (named
    ``name``, None when a rollback writes none): ``(other_os_image_setters,
    secure_boot_gate)``. Their warnings are appended to ``warnings``; a gate
    that refuses raises Failed with the fields the module returns."""
    pool_name = params["pool"]
    rollback = params["operation"] == "rollback"
    others = []  # type: List[str]
    secure_boot = unchecked_secure_boot_gate()
    problem = _machineconfig.pool_problem(pool_name, params["pools"], cluster, params["allow_paused_pool"],
                                          check_degraded=not rollback)
    if not problem and not rollback:
        problem = _machineconfig.cluster_version_problem(params["cluster_version"], cluster,
                                                         params["allow_upgrading_cluster"])
    if problem:
        raise Failed(problem, name=name, machineconfig=machineconfig)
    if params["machineconfigs"] is not None and machineconfig:
        pool = _machineconfig.find_named(params["pools"], pool_name)  # there: the pool gate passed
        problem, others = _machineconfig.effective_check(pool, params["machineconfigs"], machineconfig, cluster)
        if problem:
            raise Failed(problem, name=name, machineconfig=machineconfig, other_os_image_setters=others)
        if others:
            warnings.append("Cluster %s, pool %s: MachineConfig %s overrides the osImageURL that %s set%s."
                            % (cluster, pool_name, name, ", ".join(others), "" if len(others) > 1 else "s"))
    if params["node_secure_boot"] is not None and not rollback:
        problem, gate_warnings, secure_boot = _machineconfig.signature_check(
            pool_name, params["signing"], params["node_secure_boot"], cluster, params["accept_untrusted_signatures"])
        secure_boot["checked"] = True
        if problem:
            raise Failed(problem, name=name, machineconfig=machineconfig, secure_boot_gate=secure_boot)
        warnings.extend(gate_warnings)
    return others, secure_boot


def write_dest(path, content, mode, check_mode=False):
    # type: (str, str, Any, bool) -> Tuple[bool, Dict[str, str]]
    """Write ``content`` to ``path`` if it differs (``mode``: octal text or
    a number, for a new file); ``(changed, diff)``, Failed when it cannot."""
    try:
        return _files.write_if_changed(path, content, int(mode, 8) if isinstance(mode, str) else int(mode),
                                       check_mode=check_mode)
    except (IOError, OSError, ValueError) as exc:
        raise Failed("Cannot write dest %s: %s" % (path, to_native(exc)))


def plan(params, check_mode=False, diff=False):
    # type: (Dict[str, Any], bool, bool) -> Dict[str, Any]
    """machineconfig_plan's result for its options ``params``, with the
    ``warnings`` and ``deprecations`` to give; Failed, with the message and
    the result fields, when it must stop (a failure after the deprecation
    or a warning carries them too, as the module gave them before). In
    ``check_mode`` ``dest`` is not written; with ``diff`` the result has the
    ``diff`` of ``dest``."""
    cluster = params["cluster"] or "(cluster not named)"
    pool_name = params["pool"]
    if params["operation"] == "rollback" and params["dest"]:
        raise Failed("dest is not supported with operation=rollback")
    problem = _machineconfig.signing_problem(params["signing"])
    if problem:
        raise Failed("Cluster %s, pool %s: %s" % (cluster, pool_name, problem))
    try:
        name = _machineconfig.machineconfig_name(params["name_prefix"], pool_name)
        existing = _machineconfig.find_named(params["machineconfigs"], name)
        machineconfig, rollback = render(params, existing)
    except _machineconfig.MachineConfigError as exc:
        raise Failed("Cluster %s, pool %s: %s" % (cluster, pool_name, to_native(exc)))
    errors = _machineconfig.validate_machineconfig(machineconfig, pool=pool_name) if machineconfig else []
    if errors:
        raise Failed("Cluster %s: MachineConfig %s does not validate: %s" % (cluster, name, "; ".join(errors)),
                     machineconfig=machineconfig)

    gates, deprecations = gates_on(params)
    warnings = []  # type: List[str]
    try:
        others, secure_boot = run_gates(params, cluster, name, machineconfig, warnings) if gates else (
            [], unchecked_secure_boot_gate())
        if yaml is None:
            raise Failed("PyYAML is required to render the MachineConfig as YAML")
        text = to_yaml(machineconfig, cluster, pool_name) if machineconfig else ""
        result = dict(
            changed=False,
            name=name,
            machineconfig=machineconfig,
            yaml=text,
            schema_validated=_machineconfig.jsonschema_available(),
            gates=gates,
            exists=existing is not None,
            up_to_date=existing is not None and bool(machineconfig) and is_subset(
                _machineconfig.comparable(machineconfig), existing),
            other_os_image_setters=others,
            secure_boot_gate=secure_boot,
            history=_machineconfig.history_of(machineconfig),
            warnings=warnings,
            deprecations=deprecations,
        )
        if rollback is not None:
            result["rollback"] = rollback
        if params["dest"]:
            changed, file_diff = write_dest(params["dest"], text, params["mode"], check_mode)
            result.update(changed=changed, dest=params["dest"])
            if diff:
                result["diff"] = file_diff
    except Failed as exc:
        exc.result.update(warnings=warnings, deprecations=deprecations)
        raise
    return result
