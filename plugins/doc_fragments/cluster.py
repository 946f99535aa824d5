# -*- coding: utf-8 -*-
# Copyright: contributors to ocp.kmod_layering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the collection's cluster modules (beside kubernetes.core's connection options)."""

from __future__ import annotations


class ModuleDocFragment:
    """C(ocp.kmod_layering.cluster): O(cluster_name) and O(request_timeout);
    C(ocp.kmod_layering.cluster.expected_kernel): the verification modules' O(expected_kernel);
    C(ocp.kmod_layering.cluster.expected_per_pool): their per-pool O(expected_pool_images) and
    O(expected_pool_kernels) (pools of different architectures)."""

    DOCUMENTATION = r"""
options:
  cluster_name:
    description:
      - Name of the cluster in messages and results (the inventory host name).
      - Without it, the API server URL is used.
    type: str
  request_timeout:
    description: Seconds each API request may take before it is given up and retried.
    type: int
    default: 30
"""

    EXPECTED_KERNEL = r"""
options:
  expected_kernel:
    description:
      - The kernel the nodes must run (C(uname -r)), the one the image was built
        for. A node whose C(status.nodeInfo.kernelVersion) differs fails
        (after an upgrade, a node on the old kernel did not boot the new base).
        Each node's verdict records C(kernel) and C(os_image) (C(nodeInfo.osImage)) either way.
    type: str
"""

    EXPECTED_PER_POOL = r"""
options:
  expected_pool_images:
    description:
      - Per pool name, the image its nodes must have booted, pinned by digest, in place of
        O(expected_image) (which is for the pools not listed). The pools of a multi-architecture
        cluster each run the image of their nodes' architecture (the publish role's C(kmod_pool_images)).
    type: dict
    default: {}
  expected_pool_kernels:
    description:
      - Per pool name, the kernel its nodes must run, in place of O(expected_kernel) (which is for the
        pools not listed). Each architecture has its own kernel.
    type: dict
    default: {}
"""
