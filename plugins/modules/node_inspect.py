#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: node_inspect
short_description: Run host commands on OpenShift nodes through debug pods, and verify layered images
version_added: 0.1.0
description:
  - Does what C(oc debug node/<node> -- chroot /host <command>) does, for many
    nodes at once and without the C(oc) binary. For every selected node and
    every command it creates a privileged pod bound to the node
    (C(spec.nodeName)) with C(hostPID), C(hostNetwork), C(hostIPC), the host's
    C(/) mounted at C(/host), C(restartPolicy=Never),
    C(priorityClassName=openshift-user-critical), the annotation
    C(openshift.io/required-scc=privileged) and no tolerations (a node with a
    C(NoExecute) taint refuses them, as it refuses C(oc debug node)), running
    C(chroot /host <command>).
  - The pods run in O(namespace), which is created when missing with the
    pod security labels privileged pods need on OpenShift
    (C(pod-security.kubernetes.io/enforce=privileged), and
    C(security.openshift.io/scc.podSecurityLabelSync=false) so the label
    syncer leaves them alone) and the annotation C(openshift.io/node-selector="")
    so a cluster-wide default node selector does not apply. An existing
    namespace missing those labels is patched.
  - At most O(parallel) pods exist at a time. The module watches them (one
    watch on the pods of this run, resumed from the last C(resourceVersion);
    no polling interval) until each is C(Succeeded) or C(Failed), reads its
    log, and deletes it. Every pod it created is deleted before it returns,
    also on failure or timeout.
  - Nodes are given by name (O(nodes)), or by MachineConfigPool (O(pools)),
    meaning the nodes the Machine Config Operator manages in that pool, from
    the pool's C(spec.nodeSelector), a node matching several pools counting
    for C(master) or its custom pool as the MCO does, or by O(node_selector).
  - With O(expected_image) and/or O(expected_modules) it also runs
    C(rpm-ostree status --json), C(cat /proc/modules) and (for modules with
    options, when O(check_parameters)) C(grep -H -s . /sys/module/<m>/parameters/<p>…),
    and returns a verdict per node and a report for the cluster in RV(report).
    A node passes when the booted deployment's C(container-image-reference-digest)
    equals the digest of O(expected_image), every module that loads at boot
    is C(Live) in C(/proc/modules), and its parameters show the values of
    its C(options). The module does not fail on a failed verdict; the caller
    decides (see the C(ocp.kmod_layering.verify) role).
  - With O(secure_boot) it also reads each node's Secure Boot state and the
    keys its kernel trusts, in two or three more pods per node,
    C(mokutil --sb-state); one C(grep -H -s .) of
    C(/sys/kernel/security/lockdown),
    C(/sys/module/module/parameters/sig_enforce), C(/proc/sys/kernel/tainted),
    C(/proc/keys) and C(/sys/module/<m>/taint) of O(expected_modules) (the
    parameter files of O(check_parameters) join the same grep); and, with
    O(expected_modules), C(modinfo <m>...) for each module's signer. Every
    node entry and verdict then carries C(secure_boot) (RV(nodes[].secure_boot)).
    A node that enforces signatures and misses a module fails naming the
    kernel's refusal when the node tells it (unsigned, or signed by a key it
    does not list); a node that does not enforce them whose kernel an
    unsigned module tainted (taint C(E)) is a warning in RV(report.warnings),
    not a failure; so is a node whose Secure Boot state cannot be read.
author:
  - ocp.kmod_layering contributors (@ocp-kmod-layering)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - ocp.kmod_layering.cluster.expected_kernel
  - ocp.kmod_layering.cluster.expected_per_pool
  - ocp.kmod_layering.attributes.cluster_group
requirements:
  - kubernetes >= 24.2.0
  - PyYAML >= 3.11
attributes:
  check_mode:
    support: partial
    description: Check mode selects the nodes without running any command.
    details:
      - In check mode no namespace or pod is created and no command runs; the
        nodes are selected and returned, and RV(report) has verdict V(skipped).
  diff_mode:
    support: none
    description: Debug pods are transient; there is no diff.
options:
  nodes:
    description:
      - Names of the nodes to inspect.
      - Mutually exclusive with O(pools) and O(node_selector).
    type: list
    elements: str
  pools:
    description:
      - Inspect the nodes of these MachineConfigPools.
      - Without O(nodes), O(pools) and O(node_selector), V([worker]) is used.
    type: list
    elements: str
  node_selector:
    description:
      - Inspect the nodes matching this label selector (C(node-role.kubernetes.io/worker=)).
    type: str
  commands:
    description:
      - Commands to run on each node, each as C(chroot /host <command>).
        A string is split into words like a shell would (no shell features;
        use V(sh -c '...') for those); a list is taken as the argv.
      - Their output is returned in RV(nodes[].commands).
    type: list
    elements: raw
    default: []
  expected_image:
    description:
      - The image the nodes must have booted, pinned by digest (C(repo@sha256:…)).
        Compared to the digest C(rpm-ostree status --json) reports for the
        booted deployment. A tag-only pullspec is compared as a whole.
    type: str
  expected_modules:
    description:
      - Kernel modules that must be loaded, as the collection's C(kmod_modules)
        entries. Only these keys are read (others, like C(source), are ignored),
        C(name) (required; C(-) and C(_) are the same to the kernel),
        C(options) (modprobe options such as C(greeting=hi level=2), whose
        values the module's parameters must show) and C(load_at_boot)
        (default true; modules that do not load at boot are reported, not required).
    type: list
    elements: dict
  secure_boot:
    description:
      - Also read each node's Secure Boot state, kernel lockdown, signature
        enforcement, taint and trusted keys, and (with O(expected_modules))
        the signer of each module (see the description).
      - Alone (without O(expected_image) and O(expected_modules)) it reads
        the Secure Boot state only, as the rollout role's gate does before
        any write; RV(report) is then returned too.
    type: bool
    default: false
    version_added: 0.2.0
  check_parameters:
    description:
      - Read C(/sys/module/<module>/parameters/<parameter>) for the options
        of O(expected_modules) and compare them (booleans show as C(Y)/C(N)).
    type: bool
    default: true
  namespace:
    description:
      - Namespace of the debug pods; created if missing.
    type: str
    default: openshift-kmod-layering-debug
  create_namespace:
    description:
      - Create O(namespace) if it does not exist (and add the labels it needs).
        When false, a missing namespace fails the module.
    type: bool
    default: true
  image:
    description:
      - Image of the debug pods. It needs C(chroot) only; the commands run
        from the host's root.
      - Empty uses the image C(oc debug node) uses, the C(openshift/tools:latest)
        ImageStreamTag of the cluster (the release's C(tools) image), or
        C(registry.redhat.io/rhel9/support-tools:latest) when the cluster has none.
    type: str
    default: ""
  parallel:
    description:
      - Most debug pods to run at once on the cluster.
    type: int
    default: 20
  timeout:
    description:
      - Seconds to wait at most, for all pods together. A pod not finished by
        then (for example stuck pulling its image) is reported with its
        C(Pending) reason and deleted.
    type: int
    default: 300
  cluster_name:
    description:
      - Name of the cluster in RV(report) (the inventory host name).
      - Without it, the API server URL is used.
    type: str
  method:
    description:
      - V(pods) runs the debug pods on every node and reads the booted image,
        loaded modules and parameters.
      - V(mco_state) is deprecated (it inspects no node); it runs
        M(ocp.kmod_layering.mco_node_state), which reads the nodes'
        machine-config state and creates nothing. Needs O(pools).
    type: str
    choices: [pods, mco_state]
    default: pods
notes:
  - The user needs the rights C(oc debug node) needs (create privileged pods,
    which on OpenShift means the C(privileged) SCC, and create namespaces
    unless O(namespace) exists); the verify role's README has a
    ready-to-apply ClusterRole, Roles and bindings.
  - Commands run as root in the host's namespaces; keep them read-only.
  - Each (node, command) is one pod, as with C(oc debug node); with O(parallel)
    pods at a time a fleet of nodes is covered in C(nodes*commands/parallel)
    rounds of pod start-ups.
  - Returns C(changed=true) only when it created or patched the namespace;
    the debug pods it creates are deleted before it returns.
seealso:
  - module: kubernetes.core.k8s_exec
  - module: ocp.kmod_layering.mco_rollout_wait
"""

EXAMPLES = r"""
- name: Read rpm-ostree status and the loaded modules of every worker
  ocp.kmod_layering.node_inspect:
    kubeconfig: "{{ kmod_kubeconfig }}"
    pools: [worker]
    commands:
      - rpm-ostree status --json
      - cat /proc/modules
  delegate_to: localhost
  register: inspected

- name: Verify the layered image booted and its modules are loaded
  ocp.kmod_layering.node_inspect:
    pools: [worker, infra]
    expected_image: "{{ kmod_image }}"          # registry.example.com/kmods/rhcos@sha256:...
    expected_modules: "{{ kmod_modules }}"      # [{name: mydrv, options: "debug=1"}]
    cluster_name: "{{ inventory_hostname }}"
  register: verified

- name: Fail when a node is off
  ansible.builtin.assert:
    that: verified.report.verdict == 'pass'
    fail_msg: "{{ verified.report.reasons }}"

- name: Secure Boot state, trusted keys and the signer of each module of every worker
  ocp.kmod_layering.node_inspect:
    pools: [worker]
    expected_image: "{{ kmod_image }}"
    expected_modules: "{{ kmod_modules }}"
    secure_boot: true
  register: verified
  # verified.nodes[0].secure_boot: {state: enabled, lockdown: integrity, enforcing: true, ...,
  #   modules: {mydrv: {signer: Fleet Module Signing, sig_hashalgo: sha256, ...}}}

- name: Kernel version of two nodes, with a mirrored debug image
  ocp.kmod_layering.node_inspect:
    nodes: [worker-0.example.com, worker-1.example.com]
    commands: ["uname -r"]
    image: mirror.example.com/rhel9/support-tools:latest
  register: kernels
"""

RETURN = r"""
cluster:
  description: The API server URL the module talked to.
  returned: always
  type: str
  sample: https://api.lab-a.example.com:6443
namespace:
  description: The namespace the debug pods ran in.
  returned: always
  type: str
image:
  description: The image the debug pods ran.
  returned: always
  type: str
  sample: registry.redhat.io/rhel9/support-tools:latest
elapsed_seconds:
  description: Seconds the module spent.
  returned: always
  type: float
pods_created:
  description: Number of debug pods created.
  returned: always
  type: int
pods_left:
  description: Debug pods that could not be deleted (normally empty), as C(namespace/name).
  returned: always
  type: list
  elements: str
nodes:
  description: Every selected node, with the outcome of each command.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Node name.
      type: str
    pool:
      description: The MachineConfigPool the node belongs to (with O(pools)), else null.
      type: str
    ok:
      description: Every command of the node succeeded (exit code 0); null in check mode.
      type: bool
    commands:
      description: One entry per command run on the node.
      type: list
      elements: dict
      contains:
        command:
          description: The command, as run after C(chroot /host).
          type: str
        key:
          description:
            - V(rpm_ostree), V(modules), V(parameters) for the verification commands; with O(secure_boot)
              V(sb_state) (mokutil), V(parameters) or, without parameter files, V(sb_files) (the grep of the
              kernel's files), V(modinfo); else V(command_<i>).
          type: str
        pod:
          description: Name of the debug pod (deleted since).
          type: str
        phase:
          description: The pod's last phase (V(Succeeded), V(Failed), or V(Pending)/V(Running) on timeout).
          type: str
        rc:
          description: The container's exit code, null when it did not finish.
          type: int
        stdout:
          description: The pod's log (the command's output).
          type: str
        stdout_lines:
          description: RV(nodes[].commands[].stdout) split in lines.
          type: list
          elements: str
        error:
          description: Why the command has no good output (timeout with the pod's waiting reason, exit code), else empty.
          type: str
        pod_reason:
          description: What the pod's status says beyond the phase (container waiting or terminated reason, failed conditions).
          type: str
    rpm_ostree:
      description: The booted deployment (with O(expected_image)).
      type: dict
      contains:
        image:
          description: The booted image pullspec, ostree transport stripped.
          type: str
        digest:
          description: C(container-image-reference-digest) of the booted deployment.
          type: str
    modules:
      description:
        - Parsed C(/proc/modules) (with O(expected_modules)), by module name.
        - Each has C(size), C(refcount), C(deps) (the modules using it), C(state) (C(Live), C(Loading), C(Unloading)) and C(taint).
      type: dict
    secure_boot:
      description:
        - The node's Secure Boot fact (with O(secure_boot)), also in RV(report.nodes[].secure_boot).
        - The rollout role's gate reads it (M(ocp.kmod_layering.machineconfig_plan) O(ocp.kmod_layering.machineconfig_plan#module:node_secure_boot)).
      returned: with O(secure_boot), not in check mode
      type: dict
      contains:
        state:
          description:
            - What C(mokutil --sb-state) says, V(enabled), V(disabled) (also when shim's validation is off),
              V(unsupported) (no EFI variables, a BIOS boot) or V(unknown) (it could not run).
          type: str
        lockdown:
          description: The kernel's lockdown mode, V(none), V(integrity), V(confidentiality), or null when not read.
          type: str
        sig_enforce:
          description: C(/sys/module/module/parameters/sig_enforce), or null when not read.
          type: bool
        enforcing:
          description: The kernel refuses modules it cannot verify (Secure Boot enabled, a lockdown, or sig_enforce).
          type: bool
        tainted:
          description: C(/proc/sys/kernel/tainted), the kernel's taint mask, or null.
          type: int
        unsigned_module_taint:
          description: Bit 13 (C(E)) of the mask, an unsigned module was loaded.
          type: bool
        trusted_keys:
          description:
            - "The descriptions (C(<CN>: <skid>)) of the asymmetric keys in C(/proc/keys), the keys the
              kernel may check module signatures against; null when C(/proc/keys) was not read."
          type: list
          elements: str
        modules:
          description:
            - Per module of O(expected_modules), C(signer), C(sig_key), C(sig_hashalgo) (from C(modinfo),
              null when unsigned or not read) and C(taint) (C(/sys/module/<m>/taint), e.g. C(OE)).
          type: dict
report:
  description:
    - The cluster's verification report, with O(expected_image), O(expected_modules) or O(secure_boot).
  returned: when O(expected_image), O(expected_modules) or O(secure_boot) is set
  type: dict
  contains:
    cluster:
      description: O(cluster_name), or the API server URL.
      type: str
    verdict:
      description: V(pass) (every node passed), V(fail), or V(skipped) (check mode with O(method=pods)).
      type: str
    method:
      description: O(method), how the nodes were verified.
      type: str
    expected_image:
      description: O(expected_image).
      type: str
    expected_digest:
      description: The digest of O(expected_image).
      type: str
    counts:
      description: C(nodes), C(passed), C(failed).
      type: dict
      sample: {"nodes": 3, "passed": 2, "failed": 1}
    reasons:
      description: Why nodes failed, one sentence each, naming the node (and digests or modules).
      type: list
      elements: str
      sample: ["node worker-1: module mydrv is not loaded (not in /proc/modules)"]
    warnings:
      description:
        - For example a pool without nodes; then every node's warnings (with O(secure_boot) an
          unsigned-module taint on a node without Secure Boot, a Secure Boot state that cannot be read).
      type: list
      elements: str
    nodes:
      description: One verdict per node.
      type: list
      elements: dict
      contains:
        node:
          description: Node name.
          type: str
        pool:
          description: Pool of the node.
          type: str
        verdict:
          description: V(pass) or V(fail).
          type: str
        reasons:
          description: Why the node failed.
          type: list
          elements: str
        booted_image:
          description: Booted image pullspec.
          type: str
        booted_digest:
          description: Booted image digest.
          type: str
        image_ok:
          description: Booted digest equals the expected one.
          type: bool
        modules:
          description: "Per expected module: C(loaded), C(required), C(state), C(refcount), C(deps), C(parameters)."
          type: dict
        missing_modules:
          description: Required modules not in C(/proc/modules).
          type: list
          elements: str
        secure_boot:
          description: The node's Secure Boot fact, as in RV(nodes[].secure_boot) (with O(secure_boot)).
          type: dict
        signatures_read:
          description: Whether C(modinfo) was read, so a module's null C(signer) means unsigned (with O(secure_boot)).
          type: bool
        warnings:
          description:
            - What is worth knowing but does not fail the node (with O(secure_boot)), for example a kernel
              tainted by an unsigned module on a node without Secure Boot; also in RV(report.warnings).
          type: list
          elements: str
    table:
      description:
        - The report as rows of a fixed-width table (fixed column widths, so
          rows of several clusters line up under one RV(report.table_header)).
      type: list
      elements: str
    table_header:
      description: The two header lines of the table.
      type: list
      elements: str
"""

import time

from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.ocp.kmod_layering.plugins.module_utils import _inspect
from ansible_collections.ocp.kmod_layering.plugins.module_utils._k8s import cluster_argument_spec, run_module
from ansible_collections.ocp.kmod_layering.plugins.module_utils._node_inspector import NodeInspector, mco_state_result

USER_AGENT = "ocp.kmod_layering.node_inspect"


def argument_spec():
    return cluster_argument_spec(
        nodes=dict(type="list", elements="str"),
        pools=dict(type="list", elements="str"),
        node_selector=dict(type="str"),
        commands=dict(type="list", elements="raw", default=[]),
        expected_image=dict(type="str"),
        expected_modules=dict(type="list", elements="dict"),
        expected_kernel=dict(type="str"),
        expected_pool_images=dict(type="dict", default={}),
        expected_pool_kernels=dict(type="dict", default={}),
        check_parameters=dict(type="bool", default=True),
        secure_boot=dict(type="bool", default=False),
        namespace=dict(type="str", default=_inspect.DEFAULT_NAMESPACE),
        create_namespace=dict(type="bool", default=True),
        image=dict(type="str", default=""),
        parallel=dict(type="int", default=20),
        timeout=dict(type="int", default=300),
        cluster_name=dict(type="str"),
        method=dict(type="str", default="pods", choices=["pods", "mco_state"]),
    )


def validate(module):
    params = module.params
    if params["method"] == "mco_state" and (params["nodes"] or params["node_selector"]):
        module.fail_json(msg="method=mco_state reads the pools' rendered configs: select nodes with pools, "
                             "not nodes or node_selector")
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout must be a positive number of seconds")
    if params["parallel"] <= 0:
        module.fail_json(msg="parallel must be at least 1")
    if not (params["commands"] or params["expected_image"] or params["expected_pool_images"]
            or params["expected_modules"] or params["secure_boot"]):
        module.fail_json(msg="nothing to run: give commands, expected_image, expected_modules or secure_boot")
    if params["method"] == "mco_state" and params["secure_boot"]:
        module.fail_json(msg="secure_boot needs debug pods on the nodes: method=pods")
    problem = _inspect.expected_modules_problem(params["expected_modules"])
    if problem:
        module.fail_json(msg=problem)
    for command in params["commands"]:
        if not isinstance(command, (list, str)) or not _inspect.command_argv(command):
            module.fail_json(msg="each of commands must be a non-empty string or list, got %r" % (command,))


def main():
    module = AnsibleK8SModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[["nodes", "pools", "node_selector"]],
        supports_check_mode=True,
    )
    validate(module)
    params = module.params
    if params["method"] == "mco_state":
        module.deprecate("node_inspect method=mco_state inspects no node: use ocp.kmod_layering.mco_node_state.",
                         version="2.0.0", collection_name="ocp.kmod_layering")

        def run(client, _counter):
            return mco_state_result(client, params)
    else:
        def run(client, _counter):
            return NodeInspector(client, params, module.check_mode).run()
    run_module(module, USER_AGENT, run, name=params["cluster_name"],
               deadline=time.monotonic() + params["timeout"], max_failures=6)


if __name__ == "__main__":
    main()
