# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What a stage reads from a cluster, in one module run each:

- resolve (``cluster_release_info``): the release the cluster runs
  (ClusterVersion ``status.desired.image``), that every pool to roll out to
  exists, and the architecture of each of those pools from its nodes
  (``_arch.pool_architectures``);
- the rollout entry points (``rollout_state_info``): every
  MachineConfigPool, every MachineConfig without its Ignition config, and
  the ClusterVersion.

One run instead of one per object: each module run loads the kubernetes
client (about a second of controller CPU per cluster and call). The reads
are retried as a whole on transient API errors (``read_retrying``), as
``until``/``retries`` on a task would.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.ocp.kmod_layering.plugins.module_utils._arch import ArchError, pool_architectures
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import ClusterError, is_transient
from ansible_collections.ocp.kmod_layering.plugins.module_utils._runner import Failed


def desired_release_image(cluster, cluster_version):
    # type: (str, dict) -> str
    """The release pullspec a ClusterVersion names; Failed when it names none."""
    image = (((cluster_version or {}).get("status") or {}).get("desired") or {}).get("image")
    if not image:
        raise Failed("Cluster %s: ClusterVersion 'version' has no status.desired.image, so its release is "
                     "unknown. Set kmod_release for this cluster." % cluster)
    return image


def check_pools_exist(cluster, pool_names, pools):
    # type: (str, list, list) -> None
    """Failed unless every pool of ``pool_names`` is among ``pools`` (objects)."""
    have = sorted(((p or {}).get("metadata") or {}).get("name") or "" for p in pools or [])
    missing = [name for name in pool_names if name not in have]
    if missing:
        raise Failed("Cluster %s: kmod_pools names MachineConfigPool(s) %s that the cluster does not have "
                     "(it has %s); fix kmod_pools for this cluster." % (cluster, ", ".join(missing), ", ".join(have)))


def summarize(cluster, pool_names, declared_arch, cluster_version=None, pools=None, nodes=None):
    # type: (str, list, str, dict, list, list) -> dict
    """The result of the reads: ``release_image`` (None when the ClusterVersion
    was not read), and with ``pools`` and ``nodes`` read, ``pools`` (pool ->
    architecture), ``arches``, ``nodes`` (pool -> node -> architecture) and
    ``warnings``. Raises Failed for a cluster the run cannot go on with."""
    result = {"release_image": None, "pools": None, "arches": None, "nodes": None, "warnings": []}
    if cluster_version is not None:
        result["release_image"] = desired_release_image(cluster, cluster_version)
    if pools is not None:
        check_pools_exist(cluster, pool_names, pools)
        try:
            arches = pool_architectures(cluster, pool_names, pools, nodes or [], declared_arch)
        except ArchError as exc:
            raise Failed(str(exc))
        result.update(pools=arches["pools"], arches=arches["arches"], nodes=arches["nodes"],
                      warnings=arches["warnings"])
    return result


def read_retrying(reads, retries, retry_delay, sleep=time.sleep):
    """``reads()`` (requests through a ClusterClient with no retries of its
    own), retried as a whole after a transient API error, ``retries`` times,
    ``retry_delay`` seconds apart; any other error at once. Returns
    ``(what reads() returned, attempts)``."""
    attempt = 0
    while True:
        try:
            return reads(), attempt + 1
        except ClusterError as exc:
            attempt += 1
            if attempt > retries or not is_transient(exc.cause):
                raise
            sleep(retry_delay)


def read(client, params, sleep=time.sleep):
    """resolve's reads (``read_cluster_version``, ``read_pools``), summarized."""
    def reads():
        cluster_version = pools = nodes = None
        if params["read_cluster_version"]:
            # {} when absent: summarize says the release is unknown.
            cluster_version = client.get("ClusterVersion", "version", missing_ok=True) or {}
        if params["read_pools"]:
            pools = client.list("MachineConfigPool")[0]
            nodes = client.list("Node")[0]
        return cluster_version, pools, nodes
    (cluster_version, pools, nodes), attempts = read_retrying(reads, params["retries"], params["retry_delay"], sleep)
    result = summarize(params["cluster_name"] or client.name, params["pool_names"], params["arch"],
                       cluster_version, pools, nodes)
    result["attempts"] = attempts
    return result


# Left out of the MachineConfigs read for a rollout: the Ignition config
# (files and users, possibly secrets: out of the results and AWX's job
# events) and what only bloats them.
HIDDEN_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def without_config(machineconfig):
    # type: (dict) -> dict
    """A MachineConfig without ``spec.config``, ``metadata.managedFields`` and
    the last-applied annotation (its osImageURL, kernel settings, labels,
    annotations and owner references stay)."""
    slim = dict(machineconfig)
    slim["metadata"] = dict(slim.get("metadata") or {})
    slim["metadata"].pop("managedFields", None)
    annotations = slim["metadata"].get("annotations")
    if annotations:
        slim["metadata"]["annotations"] = dict((k, v) for k, v in annotations.items() if k not in HIDDEN_ANNOTATIONS)
    if isinstance(slim.get("spec"), dict):
        slim["spec"] = dict((k, v) for k, v in slim["spec"].items() if k != "config")
    return slim


def read_rollout_state(client, read_cluster_version, retries, retry_delay, sleep=time.sleep):
    """The pools, MachineConfigs (``without_config``) and, if asked, the
    ClusterVersion (None when absent or not read)."""
    def reads():
        pools = client.list("MachineConfigPool")[0]
        machineconfigs = [without_config(mc) for mc in client.list("MachineConfig")[0]]
        cluster_version = client.get("ClusterVersion", "version", missing_ok=True) if read_cluster_version else None
        return pools, machineconfigs, cluster_version
    (pools, machineconfigs, cluster_version), attempts = read_retrying(reads, retries, retry_delay, sleep)
    return {"pools": pools, "machineconfigs": machineconfigs, "cluster_version": cluster_version,
            "attempts": attempts}
