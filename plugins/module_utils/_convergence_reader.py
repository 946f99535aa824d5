# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The reads of ``convergence_check``, around ``_convergence``'s rules.

- :func:`targets`: one dict per cluster of the run (its connection options
  and the settings that may differ between clusters).
- :class:`ClusterReader`: the five reads of one check (ClusterVersion,
  pools, our MachineConfigs, nodes, the pools' rendered configs) through
  the cluster layer (``_k8s.ClusterClient``).
- :class:`RegistryCheck`: whether the registry still has an image, asked
  once per image for the whole fleet.
- :func:`check` (one cluster) and :func:`check_all` (the fleet, in parallel;
  a cluster that cannot be read is not converged, with ``msg``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import threading
import time

from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.common.text.converters import to_native

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.ocp.kmod_layering.plugins.module_utils import _build, _convergence, _files, _inspect, _machineconfig
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import (
    API_ERRORS,
    CONNECTION_ERRORS,
    ClusterClient,
    ClusterError,
    describe_error,
    new_api_client,
    status_code,
)
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry import (
    NotFoundError,
    RegistryError,
    parse_pullspec,
)
from ansible_collections.ocp.kmod_layering.plugins.module_utils._registry_args import registry_client

# Per cluster: what may differ between clusters of one run (with the
# connection options of kubernetes.core; the top-level ones are defaults).
CLUSTER_OPTIONS = ("pools", "name_prefix", "release", "signing", "report_file")


class ClusterReader(object):
    """The reads of one check, each retried on transient errors."""

    def __init__(self, client):
        self.client = client
        self.host = client.host

    @property
    def requests(self):
        return self.client.requests

    def cluster_version(self):
        return self.client.get("ClusterVersion", "version", missing_ok=True)

    def pools(self):
        return self.client.list("MachineConfigPool")[0]

    def our_machineconfigs(self):
        selector = "%s=%s" % (_machineconfig.LABEL_MANAGED_BY, _machineconfig.MANAGED_BY)
        return self.client.list("MachineConfig", label_selector=selector)[0]

    def machineconfig(self, name):
        return self.client.get("MachineConfig", name, missing_ok=True)

    def nodes(self):
        return self.client.list("Node")[0]


class RegistryCheck(object):
    """Whether the registry still has an image, asked once per image for all
    the clusters of the run (they share a handful of images)."""

    def __init__(self, params, user_agent):
        self.params = params
        self.user_agent = user_agent
        self.lock = threading.Lock()
        self.answers = {}

    def reason(self, image):
        """None when the registry has ``image``, else why the cluster is not
        converged (a missing image is rebuilt and pushed by the full run; an
        unreachable registry is reported there, naming the input)."""
        with self.lock:
            if image not in self.answers:
                self.answers[image] = self._ask(image)
            return self.answers[image]

    def _ask(self, image):
        try:
            ref = parse_pullspec(image)
            client = registry_client(self.params, user_agent=self.user_agent)
            client.manifest_digest(ref)
        except NotFoundError:
            return "the image %s is no longer in the registry" % image
        except RegistryError as exc:
            return "the registry could not confirm the image %s: %s" % (image, to_native(exc))
        return None


def check(target, common, reader, registry, check_mode):
    """The verdict of one cluster: ``target`` has its name, pools, release,
    name prefix and report file; ``common`` the run's sources and recipe."""
    cluster = target["name"] or reader.host
    wanted = dict(common, pools=target["pools"], name_prefix=target["name_prefix"], release=target["release"],
                  signing=target["signing"])
    cluster_version = reader.cluster_version()
    pools = reader.pools()
    ours = reader.our_machineconfigs()
    nodes = reader.nodes()
    rendered = {}
    # Only the rendered configs that matter: those of pools that have ours.
    names = set((mc.get("metadata") or {}).get("name") for mc in ours)
    for pool in pools:
        configuration = ((pool.get("spec") or {}).get("configuration") or {})
        name = configuration.get("name")
        if (pool["metadata"]["name"] in wanted["pools"] and name and name not in rendered
                and names.intersection(s.get("name") for s in configuration.get("source") or [])):
            found = reader.machineconfig(name)
            if found is not None:
                rendered[name] = found
    result = _convergence.evaluate(cluster_version, pools, nodes, ours, rendered, wanted)
    registry_checked = bool(result["converged"] and registry is not None)
    if registry_checked:
        for image in sorted(set(result["images"].values())):
            reason = registry.reason(image)
            if reason:
                result.update(converged=False, reasons=[reason])
                break
    report = None
    if result["converged"]:
        report = _inspect.cluster_report(
            cluster, result["verdicts"], result["image"], wanted["expected_modules"], pools=wanted["pools"],
            generated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        report["method"] = "mco_state"
        if len(set(result["images"].values())) > 1:
            report["expected_images"] = result["images"]
        report["api_url"] = reader.host
        report["table"] = _inspect.table_lines(report)
        report["table_header"] = _inspect.table_header()
        if target["report_file"] and not check_mode:
            _files.write_atomic(target["report_file"], json.dumps(report, indent=2, sort_keys=True) + "\n")
    rollout = {
        "cluster": cluster,
        "image": result["image"] or "",
        "images": result["images"],
        "machineconfigs": result["machineconfigs"],
        "changed": [],
        "waited": False,
        "done": result["converged"],
        "pools": result["pools"],
        "elapsed_seconds": 0,
        "progress_file": "",
        "converged": True,
    }
    return dict(converged=result["converged"], reasons=result["reasons"], image=result["image"],
                images=result["images"],
                build_keys=result["build_keys"], rollout=rollout, report=report, registry_checked=registry_checked)


def targets(params):
    """One dict per cluster to check: its name, connection options and the
    settings that may differ between clusters; the top-level options fill in
    what an entry of ``clusters`` leaves unset. Without ``clusters``, the one
    cluster of the top-level options."""
    entries = params["clusters"]
    if entries is None:
        entries = [{"name": params["cluster_name"], "report_file": params["report_file"]}]
    found = []
    for entry in entries:
        target = dict((key, entry.get(key) if entry.get(key) is not None else params[key])
                      for key in tuple(AUTH_ARG_SPEC) + CLUSTER_OPTIONS)
        target["name"] = entry["name"]
        # One report file per cluster: the top-level one is for one cluster only.
        target["report_file"] = entry.get("report_file")
        found.append(target)
    return found


def check_all(params, check_mode, registry):
    """{cluster name: verdict}; a cluster that cannot be read is not
    converged, with ``msg`` (the others are still checked)."""
    common = {
        "modules": params["modules"],
        "recipe": _build.recipe_digest(params["recipe_files"]),
        "repository": params["repository"],
        "expected_modules": params["expected_modules"] or [],
    }
    results = {}
    # kubernetes.core sets up a client through the kubernetes library's
    # default Configuration, a process-wide global: one client at a time
    # (a first contact costs one discovery GET), the reads in parallel.
    client_lock = threading.Lock()

    def one(target):
        name = target["name"] or "(cluster not named)"
        client = None
        try:
            with client_lock:
                client = ClusterClient(new_api_client(**dict((key, target[key]) for key in AUTH_ARG_SPEC)),
                                       name=name, request_timeout=params["request_timeout"])
            verdict = check(target, common, ClusterReader(client), registry, check_mode)
        except CoreException as exc:
            verdict = dict(converged=False, reasons=[], msg="Cluster %s: %s" % (name, to_native(exc)), status=None)
        except API_ERRORS + CONNECTION_ERRORS + (ClusterError,) as exc:  # pylint: disable=catching-non-exception
            verdict = dict(converged=False, reasons=[], msg=describe_error(name, exc), status=status_code(exc))
        verdict["requests"] = client.requests if client else 0
        return name, verdict

    clusters = targets(params)
    with ThreadPoolExecutor(max_workers=max(1, min(params["parallel"], len(clusters)))) as pool:
        for name, verdict in pool.map(one, clusters):
            results[name] = verdict
    return results
