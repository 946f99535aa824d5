# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the resolve stage reads from a cluster, in one module run: the
release it runs (ClusterVersion ``status.desired.image``), that every pool
to roll out to exists, and the architecture of each of those pools from its
nodes (``_arch.pool_architectures``).

One run instead of one per object: each module run loads the kubernetes
client (about a second of controller CPU per cluster and call).
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


def read(client, params, sleep=time.sleep):
    """Read what ``params`` ask for (``read_cluster_version``, ``read_pools``)
    and summarize it. A transient API error (``client`` has no retries of
    its own) retries the reads, ``retries`` times, ``retry_delay`` seconds
    apart, as ``until``/``retries`` on a task would."""
    attempt = 0
    while True:
        try:
            cluster_version = None
            if params["read_cluster_version"]:
                # None when absent: summarize says the release is unknown.
                cluster_version = client.get("ClusterVersion", "version", missing_ok=True) or {}
            pools = nodes = None
            if params["read_pools"]:
                pools = client.list("MachineConfigPool")[0]
                nodes = client.list("Node")[0]
            break
        except ClusterError as exc:
            attempt += 1
            if attempt > params["retries"] or not is_transient(exc.cause):
                raise
            sleep(params["retry_delay"])
    result = summarize(params["cluster_name"] or client.name, params["pool_names"], params["arch"],
                       cluster_version, pools, nodes)
    result["attempts"] = attempt + 1
    return result
