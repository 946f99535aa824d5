"""The lab's own MCO rules (kmodlab.mco_rules, written from the MCO's Go
sources) against the product's (module_utils/_mco), on the same generated
objects: pools with node and MachineConfig selectors, MachineConfigs with
names, role labels, generated-by annotations and osImageURLs, nodes in one or
several pools with MCO annotations. No lab processes are needed.

Each test generates many cases from fixed seeds (reproducible: the failing
case's seed is in the message) and collects every disagreement. A
disagreement means one side is wrong: decide from the MCO source which (see
the docstrings of mco_rules), fix that side, and keep the case as a unit test
of the product (tests/unit/plugins/module_utils/test_mco.py) or a lab test
here.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _mco
from kmodlab import mco_rules

P = "machineconfiguration.openshift.io/"
ROLE = P + "role"
CASES = 400
SEEDS = range(5)

ROLES = ["master", "worker", "infra", "gpu", "arbiter"]
MC_NAMES = [
    "00-master", "00-worker", "01-worker-kubelet", "50-infra", "50-gpu-kmod", "99-worker-kmod", "99-infra-kmod",
    "99-gpu", "99-master-ssh", "99-worker-ssh", "zz-worker", "rendered-worker-1a2b", "A-upper", "99-worker-zz",
]
IMAGES = ["", "", "quay.io/a@sha256:" + "1" * 64, "quay.io/b@sha256:" + "2" * 64, "reg.local/c:tag"]
BASE = "quay.io/release-os@sha256:" + "0" * 64


# ---------------------------------------------------------------- generators


def gen_selector(rng: random.Random, keys: list[str], values: list[str], allow_empty: bool = True) -> dict[str, Any] | None:
    kind = rng.random()
    if allow_empty and kind < 0.05:
        return {}
    if allow_empty and kind < 0.08:
        return None
    selector: dict[str, Any] = {}
    if rng.random() < 0.7:
        selector["matchLabels"] = {rng.choice(keys): rng.choice(values)}
    if rng.random() < 0.4 or not selector:
        op = rng.choice(["In", "NotIn", "Exists", "DoesNotExist"] * 6 + ["Gt"])
        expr: dict[str, Any] = {"key": rng.choice(keys), "operator": op}
        if op in ("In", "NotIn", "Gt"):
            expr["values"] = rng.sample(values, rng.randint(0 if rng.random() < 0.05 else 1, 2))
        elif rng.random() < 0.03:
            expr["values"] = ["x"]  # Exists / DoesNotExist take no values: invalid
        selector["matchExpressions"] = [expr]
    return selector


def gen_pool(rng: random.Random, name: str) -> dict[str, Any]:
    if rng.random() < 0.6:  # the usual shapes
        mc_selector: dict[str, Any] | None = (
            {"matchExpressions": [{"key": ROLE, "operator": "In", "values": sorted({name, "worker"})}]}
            if name not in ("master", "worker")
            else {"matchLabels": {ROLE: name}}
        )
        node_selector: dict[str, Any] | None = {"matchLabels": {f"node-role.kubernetes.io/{name}": ""}}
    else:
        mc_selector = gen_selector(rng, [ROLE, "team"], ROLES + ["x"])
        node_selector = gen_selector(rng, [f"node-role.kubernetes.io/{r}" for r in ROLES] + ["zone"], ["", "a"])
    return {
        "apiVersion": P + "v1",
        "kind": "MachineConfigPool",
        "metadata": {"name": name, "generation": rng.randint(1, 4)},
        "spec": {"machineConfigSelector": mc_selector, "nodeSelector": node_selector, "paused": rng.random() < 0.1},
    }


def gen_mc(rng: random.Random, name: str) -> dict[str, Any]:
    labels: dict[str, str] = {}
    if rng.random() < 0.9:
        labels[ROLE] = rng.choice(ROLES)
    if rng.random() < 0.2:
        labels["team"] = rng.choice(ROLES + ["x"])
    meta: dict[str, Any] = {"name": name, "labels": labels}
    r = rng.random()
    if r < 0.25:
        meta["annotations"] = {P + "generated-by-controller-version": "abc123"}
    elif r < 0.3:
        meta["annotations"] = {P + "generated-by-controller-version": ""}
    if rng.random() < 0.1:
        meta["ownerReferences"] = [
            {"apiVersion": P + "v1", "kind": rng.choice(["KubeletConfig", "MachineConfigPool"]), "name": "x",
             "uid": "u", "controller": True}
        ]
    return {"apiVersion": P + "v1", "kind": "MachineConfig", "metadata": meta, "spec": {"osImageURL": rng.choice(IMAGES)}}


def gen_node(rng: random.Random, name: str, targets: list[str]) -> dict[str, Any]:
    labels = {f"node-role.kubernetes.io/{r}": "" for r in rng.sample(ROLES, rng.randint(0, 3))}
    if rng.random() < 0.3:
        labels["zone"] = rng.choice(["", "a"])
    if rng.random() < 0.05:
        labels["kubernetes.io/os"] = "windows"
    configs = targets + ["rendered-x-old", ""]
    ann: dict[str, str] = {}
    for key in ("currentConfig", "desiredConfig"):
        if rng.random() < 0.95:
            ann[P + key] = rng.choice(configs)
    if rng.random() < 0.95:
        ann[P + "state"] = rng.choice(["Done", "Done", "Working", "Degraded", "Rebooting", "Unreconcilable", ""])
    if rng.random() < 0.15:
        image = rng.choice(IMAGES)
        ann[P + "desiredImage"] = image
        ann[P + "currentImage"] = rng.choice([image, rng.choice(IMAGES)])
    if rng.random() < 0.3 and ann.get(P + "state") in ("Degraded", "Unreconcilable"):
        ann[P + "reason"] = "error pulling image"
    conditions = []
    if rng.random() < 0.95:
        conditions.append({"type": "Ready", "status": rng.choice(["True", "True", "True", "False", "Unknown"])})
    spec = {"unschedulable": True} if rng.random() < 0.15 else {}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels, "annotations": ann},
            "spec": spec, "status": {"conditions": conditions}}


def gen_cluster(rng: random.Random) -> dict[str, Any]:
    names = ["master", "worker"] + rng.sample(["infra", "gpu", "arbiter"], rng.randint(0, 2))
    pools = [gen_pool(rng, n) for n in names]
    mcs = [gen_mc(rng, n) for n in rng.sample(MC_NAMES, rng.randint(1, len(MC_NAMES)))]
    for pool in pools:
        pool["spec"]["configuration"] = {"name": f"rendered-{pool['metadata']['name']}-new", "source": []}
    targets = [p["spec"]["configuration"]["name"] for p in pools]
    nodes = [gen_node(rng, f"node-{i}", targets) for i in range(rng.randint(0, 7))]
    return {"pools": pools, "mcs": mcs, "nodes": nodes}


def each_case() -> list[tuple[int, int, dict[str, Any]]]:
    cases = []
    for seed in SEEDS:
        rng = random.Random(seed)
        cases += [(seed, i, gen_cluster(rng)) for i in range(CASES)]
    return cases


CLUSTERS = each_case()


def differences(check: Callable[[dict[str, Any]], list[str]]) -> list[str]:
    found = []
    for seed, index, cluster in CLUSTERS:
        found += [f"seed {seed} case {index}: {d}" for d in check(cluster)]
    return found


def assert_agree(found: list[str]) -> None:
    assert not found, f"{len(found)} disagreement(s), first ones:\n" + "\n".join(found[:15])


def _name(obj: dict[str, Any]) -> str:
    return obj["metadata"]["name"]


# ---------------------------------------------------------------- the comparisons


def test_generated_machine_configs_agree() -> None:
    """Which MachineConfigs cannot override osImageURL (MergeMachineConfigs:
    generated-by-controller-version annotation non-empty, nothing else)."""

    def check(cluster: dict[str, Any]) -> list[str]:
        return [
            f"{_name(mc)} {mc['metadata'].get('annotations')} owners={bool(mc['metadata'].get('ownerReferences'))}: "
            f"lab {mco_rules.is_generated(mc)} product {_mco.is_generated_machine_config(mc)}"
            for mc in cluster["mcs"]
            if mco_rules.is_generated(mc) != _mco.is_generated_machine_config(mc)
        ]

    assert_agree(differences(check))


def test_label_selectors_agree() -> None:
    """Node selectors of every pool over every node (LabelSelectorAsSelector)."""

    def check(cluster: dict[str, Any]) -> list[str]:
        found = []
        for pool in cluster["pools"]:
            for field in ("nodeSelector", "machineConfigSelector"):
                selector = pool["spec"][field]
                try:
                    compiled = mco_rules.Selector(selector)
                except mco_rules.SelectorError:
                    if _mco.selector_valid(selector):
                        found.append(f"{field} {selector}: invalid for the lab, valid for the product")
                    continue
                if not _mco.selector_valid(selector):
                    found.append(f"{field} {selector}: valid for the lab, invalid for the product")
                    continue
                objects = cluster["nodes"] if field == "nodeSelector" else cluster["mcs"]
                for obj in objects:
                    lab = compiled.matches(obj["metadata"]["labels"])
                    product = _mco.selector_matches(selector, obj["metadata"]["labels"])
                    if lab != product:
                        found.append(f"{field} {selector} on {obj['metadata']['labels']}: lab {lab} product {product}")
        return found

    assert_agree(differences(check))


def test_machine_configs_of_a_pool_agree() -> None:
    """Which MachineConfigs a pool renders from (render controller), in which
    order they merge (MergeMachineConfigs), and the osImageURL that wins."""

    def check(cluster: dict[str, Any]) -> list[str]:
        found = []
        for pool in cluster["pools"]:
            try:
                lab_selected = mco_rules.pool_machine_configs(pool, cluster["mcs"])
            except mco_rules.SelectorError:
                lab_selected = None  # the render controller gives up on the pool
            product_selected = _mco.pool_machine_configs(pool, cluster["mcs"])
            # None: the lab's MCO does not render the pool at all ("SelectingAll");
            # the product's answer for it is "selects nothing".
            lab_names = sorted(_name(m) for m in lab_selected or [])
            product_names = sorted(_name(m) for m in product_selected)
            where = f"pool {_name(pool)} selector {pool['spec']['machineConfigSelector']}"
            if lab_names != product_names:
                found.append(f"{where}: selects lab {lab_names} product {product_names}")
                continue
            if lab_selected is None:
                continue
            lab_order = [_name(m) for m in mco_rules.merge_order(lab_selected)]
            product_order = [_name(m) for m in _mco.merge_order(product_selected)]
            if lab_order != product_order:
                found.append(f"{where}: merge order lab {lab_order} product {product_order}")
            lab_url = mco_rules.os_image_url(mco_rules.merge_order(lab_selected), BASE)
            product_url = _mco.effective_os_image_url(product_selected, BASE)
            if lab_url != product_url:
                found.append(f"{where}: osImageURL lab {lab_url} product {product_url} from {lab_order}")
        return found

    assert_agree(differences(check))


def test_pool_members_agree() -> None:
    """Which nodes are a pool's (getNodesForPool / GetPoolsForNode)."""

    def check(cluster: dict[str, Any]) -> list[str]:
        found = []
        for pool in cluster["pools"]:
            lab = [_name(n) for n in mco_rules.nodes_for_pool(pool, cluster["pools"], cluster["nodes"])]
            product = [_name(n) for n in _mco.pool_nodes(pool, cluster["pools"], cluster["nodes"])]
            if lab != product:
                pools = {_name(p): p["spec"]["nodeSelector"] for p in cluster["pools"]}
                labels = {_name(n): n["metadata"]["labels"] for n in cluster["nodes"] if _name(n) in set(lab) ^ set(product)}
                found.append(f"pool {_name(pool)}: lab {lab} product {product}; pools {pools}; nodes {labels}")
        return found

    assert_agree(differences(check))


def test_node_updated_and_degraded_agree() -> None:
    """Per node: updated to the pool's target (IsDone, non-layered) and
    degraded (GetMachinesByState)."""

    def check(cluster: dict[str, Any]) -> list[str]:
        found = []
        for pool in cluster["pools"]:
            target = pool["spec"]["configuration"]["name"]
            for node in cluster["nodes"]:
                state = _mco.node_state(node, target)
                lab = (mco_rules.node_updated(node, pool), mco_rules.node_degraded(node))
                product = (state["updated"], state["degraded"])
                if lab != product:
                    ann = {k[len(P):]: v for k, v in node["metadata"]["annotations"].items()}
                    found.append(f"target {target} node {ann}: (updated, degraded) lab {lab} product {product}")
        return found

    assert_agree(differences(check))


def test_product_calls_done_exactly_when_the_lab_mco_has_finished() -> None:
    """The product's evaluate_pool on the pool status the lab's MCO computes:
    done iff the lab's MCO says Updated=True on the target with every node
    updated; degraded whenever the lab's MCO counts a degraded node."""

    def check(cluster: dict[str, Any]) -> list[str]:
        found = []
        for pool in cluster["pools"]:
            members = mco_rules.nodes_for_pool(pool, cluster["pools"], cluster["nodes"])
            pool = dict(pool, status={"configuration": {"name": "rendered-x-old"}, "conditions": []})
            pool["status"] = mco_rules.pool_status(pool, members, None)
            conditions = {c["type"]: c["status"] for c in pool["status"]["conditions"]}
            lab_done = conditions["Updated"] == "True"
            target = _mco.RolloutTarget(os_image_url="quay.io/a@sha256:" + "1" * 64)
            rendered = {pool["spec"]["configuration"]["name"]: {"spec": {"osImageURL": target.os_image_url}}}
            result = _mco.evaluate_pool(pool, members, target, rendered)
            if result.done != lab_done:
                found.append(f"pool {_name(pool)}: lab MCO done {lab_done} product {result.phase} ({result.reason})")
            if pool["status"]["degradedMachineCount"] and result.phase != _mco.PHASE_DEGRADED:
                found.append(f"pool {_name(pool)}: lab MCO counts a degraded node, product says {result.phase}")
        return found

    assert_agree(differences(check))


@pytest.mark.parametrize("seed", SEEDS)
def test_generators_reach_the_interesting_cases(seed: int) -> None:
    """The generated cases are not all alike: each seed has nodes in several
    pools, overridden and default osImageURLs, updated and degraded nodes."""
    rng = random.Random(seed)
    clusters = [gen_cluster(rng) for _index in range(CASES)]
    multi = updated = degraded = overridden = 0
    for cluster in clusters:
        for node in cluster["nodes"]:
            try:
                multi += len(mco_rules.pools_for_node(node, cluster["pools"])) > 1
            except mco_rules.NodePoolError:
                multi += 1
            degraded += mco_rules.node_degraded(node)
        for pool in cluster["pools"]:
            updated += sum(mco_rules.node_updated(n, pool) for n in cluster["nodes"])
            try:
                selected = mco_rules.pool_machine_configs(pool, cluster["mcs"]) or []
            except mco_rules.SelectorError:
                continue
            overridden += mco_rules.os_image_url(mco_rules.merge_order(selected), BASE) != BASE
    assert min(multi, updated, degraded, overridden) > 20, (multi, updated, degraded, overridden)
