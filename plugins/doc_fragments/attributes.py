# -*- coding: utf-8 -*-
# Copyright: contributors to ocp.kmod_layering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attribute blocks shared by the collection's modules."""

from __future__ import annotations


class ModuleDocFragment:
    """C(ocp.kmod_layering.attributes.read_only), C(.registry_group) and C(.cluster_group)."""

    # Base fragment: nothing; use one of the named fragments below.
    DOCUMENTATION = r"""
options: {}
"""

    # Modules that change nothing (they read or compute).
    READ_ONLY = r"""
options: {}
attributes:
  check_mode:
    support: full
    description: The module changes nothing; check mode runs it fully.
  diff_mode:
    support: none
    description: Nothing is changed, so there is no diff.
"""

    # Modules of the registry action group.
    REGISTRY_GROUP = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/ocp.kmod_layering.registry) in C(module_defaults) to set the registry options once.
    support: full
    membership:
      - ocp.kmod_layering.registry
"""

    # Modules of the cluster action group.
    CLUSTER_GROUP = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/ocp.kmod_layering.cluster) in C(module_defaults) to set the cluster options once.
    support: full
    membership:
      - ocp.kmod_layering.cluster
"""
