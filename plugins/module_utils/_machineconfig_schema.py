# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The MachineConfig CRD's v1 openAPIV3Schema, carried by the collection.

GENERATED from the CRD openshift/api ships as
0000_80_machine-config_01_machineconfigs.crd.yaml (vendored unchanged in
tests/kmodlab/crds/, Apache-2.0), so that validation needs no cluster and no
file outside the collection. Descriptions are left out (documentation only).

Do not edit by hand: tests/unit/plugins/module_utils/test_machineconfig.py
compares this copy with the CRD, and ``python
tests/unit/plugins/module_utils/test_machineconfig.py`` rewrites this file
from it (after a change of the vendored CRD).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.ocp.kmod_layering.plugins.module_utils._mco import MCO_API_GROUP  # noqa: E402

CRD_NAME = "machineconfigs." + MCO_API_GROUP
API_VERSION = MCO_API_GROUP + "/v1"
KIND = "MachineConfig"

MACHINECONFIG_SCHEMA = {
    "properties": {
        "apiVersion": {
            "type": "string"
        },
        "kind": {
            "type": "string"
        },
        "metadata": {
            "type": "object"
        },
        "spec": {
            "properties": {
                "baseOSExtensionsContainerImage": {
                    "type": "string"
                },
                "config": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True
                },
                "extensions": {
                    "items": {
                        "type": "string"
                    },
                    "type": "array",
                    "x-kubernetes-list-type": "atomic"
                },
                "fips": {
                    "type": "boolean"
                },
                "kernelArguments": {
                    "items": {
                        "type": "string"
                    },
                    "nullable": True,
                    "type": "array",
                    "x-kubernetes-list-type": "atomic"
                },
                "kernelType": {
                    "type": "string"
                },
                "osImageURL": {
                    "type": "string"
                }
            },
            "type": "object"
        }
    },
    "type": "object"
}
