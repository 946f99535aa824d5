#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: machineconfig_plan
short_description: Plan the MachineConfig of a pool (rollout or rollback), validate it, and run the pre-write gates
version_added: 0.1.0
description:
  - Renamed from C(ocp.kmod_layering.machineconfig_manifest) in 0.2.0; the
    old name still works (a redirect) and is deprecated.
  - Renders the MachineConfig of the collection for one MachineConfigPool
    (named C(<name_prefix>-<pool>), labelled
    C(machineconfiguration.openshift.io/role=<pool>), with
    C(spec.osImageURL) set to O(os_image_url)), and validates it against the
    MachineConfig CRD's openAPIV3Schema (a copy ships with the collection)
    plus structural checks (names, labels, fields the API server would drop,
    an image pinned by digest).
  - With O(gates=true), given the cluster's MachineConfigPools (O(pools))
    and MachineConfigs (O(machineconfigs)), as C(kubernetes.core.k8s_info)
    returns them, it also runs the gates that must pass before the MachineConfig is written
    to that cluster, failing with a message that names the cluster, the
    pool and what to do. The pool must exist, not be paused (unless
    O(allow_paused_pool)) and not be degraded (a C(Degraded),
    C(NodeDegraded) or C(RenderDegraded) condition, or degraded machines),
    must select the MachineConfig, and our C(osImageURL) must be the one
    the pool renders, by the Machine Config Operator's rule (the last
    non-generated MachineConfig by name that sets one wins); otherwise the
    MachineConfig that would win is named. With O(cluster_version), a
    cluster being upgraded (C(Progressing=True)) is refused too, unless
    O(allow_upgrading_cluster).
  - With O(node_secure_boot) (the nodes' Secure Boot facts, as
    M(ocp.kmod_layering.node_inspect) returns them with C(secure_boot=true)),
    the Secure Boot gate runs too, after the others; a pool with a node
    that enforces module signatures (Secure Boot, a kernel lockdown or
    C(module.sig_enforce)) is refused when the modules are unsigned
    (O(signing) null) or signed by a certificate whose key is not among the
    node's keys (C(/proc/keys)), naming the pool, a node and the fix (enrol
    the certificate as a MOK, sign with a key the nodes trust, or
    O(accept_untrusted_signatures)). Every asymmetric key a node lists
    counts as trusted (C(/proc/keys) does not say which key ring holds
    it); the image boot test with Secure Boot catches a key in a ring the
    kernel does not use for modules. A node whose state could not be read
    is a warning, not a refusal.
  - Keeps the history of our MachineConfig. When it already exists with
    another C(osImageURL), its image and annotations are appended to the
    JSON list in the annotation C(kmod-layering.io/history) (at most 5
    entries), so that a rollback can return to the previous image.
  - With O(operation=rollback), renders the MachineConfig a rollback
    writes instead, the last history entry of ours (RV(rollback.action=restore)),
    or nothing when ours has no history (RV(rollback.action=delete), it did
    not exist before, deleting it returns the pool to what the other
    MachineConfigs render), or nothing to do (RV(rollback.action=none)).
    The degraded and upgrade gates do not apply to a rollback (it is the way
    out of a failed rollout); the pool must still exist and not be paused.
  - Never talks to a cluster or a registry. It writes only O(dest), when
    given (the YAML manifest, for review, GitOps or C(openshift-install)
    manifests).
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
requirements:
  - PyYAML (to write O(dest))
  - jsonschema (optional) to validate against the CRD schema; without it
    only the structural checks run, and RV(schema_validated) is false
attributes:
  check_mode:
    support: full
    description: With O(dest), reports whether the file would change, without writing it.
  diff_mode:
    support: full
    description: With O(dest), shows the change of the file.
options:
  pool:
    description:
      - Name of the MachineConfigPool (C(worker), C(infra), ...). Becomes
        the MachineConfig's role label and the end of its name.
    type: str
    required: true
  os_image_url:
    description:
      - The layered OS image, fully qualified and pinned by digest
        (C(registry.example.com/infra/rhcos-kmods@sha256:<64 hex>)). A tag
        alone is refused, since every node pulls the image on its own and a
        tag can move between two pulls.
      - Required with O(operation=rollout); ignored by a rollback.
    type: str
  operation:
    description:
      - V(rollout) renders our MachineConfig with O(os_image_url).
      - V(rollback) renders what returns the pool to the previous image
        (see RV(rollback)); needs O(machineconfigs) (ours, as it is now).
    type: str
    choices: [rollout, rollback]
    default: rollout
  name_prefix:
    description:
      - The MachineConfig is named C(<name_prefix>-<pool>).
      - The Machine Config Operator takes the C(osImageURL) of the last
        non-generated MachineConfig by name that sets one; the gates fail
        when another MachineConfig would win.
    type: str
    default: 99-kmod-layering
  build_key:
    description:
      - Build key of the image, recorded in the annotation
        C(kmod-layering.io/build-key) (and its first 63 characters in the
        label of the same name).
    type: str
  modules:
    description:
      - The kernel modules in the image (names, or C(kmod_modules) entries
        with a C(name)), recorded in the annotation C(kmod-layering.io/modules).
    type: list
    elements: raw
  kernel_version:
    description: Kernel version the modules were built for, recorded in the annotation C(kmod-layering.io/kernel-version).
    type: str
  release:
    description: Release version of the cluster, recorded in the annotation C(kmod-layering.io/release).
    type: str
  release_image:
    description:
      - Release image (pullspec by digest) the layered image was built for, recorded in the annotation
        C(kmod-layering.io/release-image).
      - With O(driver_toolkit_image), O(rhcos_image), O(kernel_version) and O(build_key) it lets
        M(ocp.kmod_layering.convergence_check) tell from the cluster alone that a rerun would roll out
        the same image.
    type: str
    version_added: 0.2.0
  driver_toolkit_image:
    description: Driver Toolkit image (by digest) the modules were built in, recorded in the annotation C(kmod-layering.io/driver-toolkit-image).
    type: str
    version_added: 0.2.0
  rhcos_image:
    description: RHCOS image (by digest) the layered image is based on, recorded in the annotation C(kmod-layering.io/rhcos-image).
    type: str
    version_added: 0.2.0
  signing:
    description:
      - The signing facts of the build (C(kmod_build.signing)), null or empty when the modules are not
        signed. C(cert_sha256) (the certificate's sha256 fingerprint, 64 lowercase hex digits) is
        recorded in the annotation C(kmod-layering.io/signing-cert-sha256); C(key_description)
        (C(<subject CN>) colon C(<skid>) as the kernel describes the key, else C(subject) and C(skid)) is
        what the Secure Boot gate looks for in the nodes' keys. The other keys (C(subject), C(serial), C(hash)) are read by nothing here.
    type: dict
    version_added: 0.2.0
  node_secure_boot:
    description:
      - The nodes' Secure Boot facts for the Secure Boot gate (with O(gates)), the RV(ocp.kmod_layering.node_inspect#module:nodes)
        of M(ocp.kmod_layering.node_inspect) run with C(secure_boot=true) on the pools; each entry's
        C(name), C(pool) (entries of other pools are ignored, one without a pool counts) and
        C(secure_boot) are read. An entry without C(secure_boot) (check mode) cannot tell.
      - Unset, the Secure Boot gate does not run.
    type: list
    elements: dict
    version_added: 0.2.0
  accept_untrusted_signatures:
    description:
      - Let the Secure Boot gate pass (with a warning) a pool whose nodes would refuse the modules, the
        risk accepted (C(kmod_secure_boot_accept_untrusted)); those nodes boot without the modules.
    type: bool
    default: false
    version_added: 0.2.0
  cluster:
    description: Name of the cluster (inventory host), used in messages.
    type: str
  gates:
    description:
      - Run the pre-write gates against the cluster's state (O(pools), and with
        O(machineconfigs) the effectiveness gate, and with O(cluster_version)
        the upgrade gate). Needs O(pools).
      - V(false) only renders and validates, even when O(pools) is given.
      - Unset, the gates run when O(pools) is given (the behaviour of
        C(machineconfig_manifest)), with a deprecation warning; set it
        explicitly.
    type: bool
    version_added: 0.2.0
  pools:
    description:
      - The cluster's MachineConfigPools (the C(resources) of
        C(kubernetes.core.k8s_info)), for the gates (O(gates)); O(pool) must
        exist there and not be paused, and, with O(machineconfigs), the
        effectiveness gate runs.
    type: list
    elements: dict
  machineconfigs:
    description:
      - The cluster's MachineConfigs (rendered ones may be left out). Ours,
        if present, is compared with the rendered one (RV(exists), RV(up_to_date)).
    type: list
    elements: dict
  allow_paused_pool:
    description: Do not fail on a paused pool (the MachineConfig rolls out when the pool is unpaused).
    type: bool
    default: false
  cluster_version:
    description:
      - The cluster's ClusterVersion C(version) (a resource of
        C(kubernetes.core.k8s_info)). When its C(Progressing) condition is
        C(True) the cluster is mid-upgrade and the rollout is refused,
        unless O(allow_upgrading_cluster).
    type: dict
  allow_upgrading_cluster:
    description:
      - Write even while the cluster is upgrading. The image was built for
        the release the cluster is leaving, and pins the pool's nodes to it.
    type: bool
    default: false
  dest:
    description:
      - Write the MachineConfig as YAML to this file (parent directories are
        created). Without it nothing is written.
    type: path
  mode:
    description: Permissions of O(dest) when it is created.
    type: raw
    default: "0644"
notes:
  - O(dest) is not supported with O(operation=rollback).
  - The C(kmod-layering.io/*) labels and annotations let C(oc get mc -l
    app.kubernetes.io/managed-by=ocp.kmod_layering) find what the collection wrote.
seealso:
  - module: kubernetes.core.k8s
  - module: ocp.kmod_layering.mco_rollout_wait
"""

EXAMPLES = r"""
- name: Render and check the MachineConfig against the cluster's pools and MachineConfigs
  ocp.kmod_layering.machineconfig_plan:
    pool: worker
    os_image_url: registry.example.com/infra/rhcos-kmods@sha256:0c4e2b7a9d1f3e5a7c9b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a3c5b7d9f2e4a
    build_key: "{{ kmod_build.build_key }}"
    modules: "{{ kmod_modules }}"
    cluster: "{{ inventory_hostname }}"
    gates: true
    pools: "{{ pools_info.resources }}"
    machineconfigs: "{{ machineconfigs_info.resources }}"
  register: manifest

- name: Apply it
  kubernetes.core.k8s:
    definition: "{{ manifest.machineconfig }}"
    apply: true

- name: What a rollback of the worker pool would write
  ocp.kmod_layering.machineconfig_plan:
    operation: rollback
    pool: worker
    cluster: "{{ inventory_hostname }}"
    gates: true
    pools: "{{ pools_info.resources }}"
    machineconfigs: "{{ machineconfigs_info.resources }}"
  register: rollback

- name: Write the manifest for openshift-install
  ocp.kmod_layering.machineconfig_plan:
    pool: worker
    os_image_url: "{{ kmod_image }}"
    dest: "{{ install_dir }}/openshift/99-kmod-layering-worker.yaml"
"""

RETURN = r"""
name:
  description: Name of the MachineConfig.
  returned: always
  type: str
  sample: 99-kmod-layering-worker
machineconfig:
  description:
    - The MachineConfig, as a dict ready for C(kubernetes.core.k8s) O(kubernetes.core.k8s#module:definition).
    - With O(operation=rollback), the MachineConfig to apply for RV(rollback.action=restore), else null.
  returned: always
  type: dict
  sample:
    apiVersion: machineconfiguration.openshift.io/v1
    kind: MachineConfig
    metadata:
      name: 99-kmod-layering-worker
      labels:
        machineconfiguration.openshift.io/role: worker
        app.kubernetes.io/managed-by: ocp.kmod_layering
        kmod-layering.io/pool: worker
    spec:
      osImageURL: registry.example.com/infra/rhcos-kmods@sha256:0c4e2b7a9d1f3e5a7c9b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a3c5b7d9f2e4a
yaml:
  description: The MachineConfig as YAML text (what O(dest) gets); empty when there is none to write.
  returned: always
  type: str
history:
  description:
    - The C(kmod-layering.io/history) entries of the MachineConfig rendered (oldest first), each with
      C(osImageURL) and the C(build-key), C(modules), C(kernel-version), C(release), C(release-image),
      C(driver-toolkit-image), C(rhcos-image), C(signing-cert-sha256) it had.
  returned: always
  type: list
  elements: dict
rollback:
  description: What a rollback does to the pool.
  returned: when O(operation=rollback)
  type: dict
  contains:
    action:
      description:
        - V(restore) (apply RV(machineconfig), the previous image), V(delete) (delete ours, which did not
          exist before), V(none) (nothing to do - no MachineConfig of ours on this pool, or ours is a
          rollback's result already, marked C(kmod-layering.io/rolled-back-from), so a rerun rolls back
          nothing further).
      type: str
    os_image_url:
      description: The image restored (V(restore)), else null.
      type: str
    current:
      description: The image our MachineConfig runs now, or null.
      type: str
    reason:
      description: The plan in words.
      type: str
      sample: back to registry.example.com/infra/rhcos-kmods@sha256:0c4e2b7a9d1f3e5a7c9b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a3c5b7d9f2e4a
schema_validated:
  description: Whether the CRD schema was checked with jsonschema (false when jsonschema is not installed).
  returned: always
  type: bool
gates:
  description: Whether the cluster gates ran (O(gates), or O(pools) given with O(gates) unset).
  returned: always
  type: bool
exists:
  description: Whether O(machineconfigs) holds a MachineConfig of that name already.
  returned: always
  type: bool
up_to_date:
  description: Whether that existing MachineConfig has our labels, annotations and spec already.
  returned: always
  type: bool
secure_boot_gate:
  description: What the Secure Boot gate found (O(node_secure_boot) given, gates on, a rollout).
  returned: always
  type: dict
  contains:
    checked:
      description: Whether it ran.
      type: bool
    nodes:
      description: The pool's nodes it looked at.
      type: list
      elements: str
    enforcing:
      description: Those that enforce module signatures.
      type: list
      elements: str
    refusing:
      description: Those that would refuse the modules (a refusal, unless O(accept_untrusted_signatures)).
      type: list
      elements: str
    unknown:
      description: Those whose state could not be read (a warning).
      type: list
      elements: str
  sample: {checked: true, nodes: [worker-0, worker-1], enforcing: [worker-0, worker-1], refusing: [], unknown: []}
other_os_image_setters:
  description:
    - Other non-generated MachineConfigs the pool selects that set an osImageURL
      too (ours overrides them; a warning is given). Empty without O(machineconfigs).
  returned: always
  type: list
  elements: str
dest:
  description: O(dest), when given.
  returned: when O(dest) is given
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _machineconfig
from ansible_collections.ocp.kmod_layering.plugins.module_utils._machineconfig_plan import plan
from ansible_collections.ocp.kmod_layering.plugins.module_utils._runner import finish


def main():
    module = AnsibleModule(
        argument_spec=dict(
            pool=dict(type="str", required=True),
            os_image_url=dict(type="str"),
            operation=dict(type="str", choices=["rollout", "rollback"], default="rollout"),
            name_prefix=dict(type="str", default=_machineconfig.DEFAULT_NAME_PREFIX),
            build_key=dict(type="str", no_log=False),
            modules=dict(type="list", elements="raw"),
            kernel_version=dict(type="str"),
            release=dict(type="str"),
            release_image=dict(type="str"),
            driver_toolkit_image=dict(type="str"),
            rhcos_image=dict(type="str"),
            signing=dict(type="dict"),
            node_secure_boot=dict(type="list", elements="dict"),
            accept_untrusted_signatures=dict(type="bool", default=False),
            cluster=dict(type="str"),
            gates=dict(type="bool"),
            pools=dict(type="list", elements="dict"),
            machineconfigs=dict(type="list", elements="dict"),
            allow_paused_pool=dict(type="bool", default=False),
            cluster_version=dict(type="dict"),
            allow_upgrading_cluster=dict(type="bool", default=False),
            dest=dict(type="path"),
            mode=dict(type="raw", default="0644"),
        ),
        required_if=[("operation", "rollout", ["os_image_url"]), ("operation", "rollback", ["machineconfigs"]),
                     ("gates", True, ["pools"])],
        supports_check_mode=True,
    )
    finish(module, lambda: plan(module.params, check_mode=module.check_mode, diff=module._diff))


if __name__ == "__main__":
    main()
