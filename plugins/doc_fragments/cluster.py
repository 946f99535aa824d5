# -*- coding: utf-8 -*-
# Copyright: contributors to ocp.kmod_layering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the collection's cluster modules (beside kubernetes.core's connection options)."""

from __future__ import annotations


class ModuleDocFragment:
    """C(ocp.kmod_layering.cluster): O(cluster_name) and O(request_timeout)."""

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
