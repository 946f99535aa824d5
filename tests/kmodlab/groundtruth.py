"""Ground truth of a lab cluster's nodes, for tests and benchmarks that must
not trust the product: what each node agent booted, boot by boot.

The node agents (`kmodlab.node`) write `<state>/clusters/<name>/boots.json`
(path in the lab.json cluster entry, `boots_file`) on every reboot:

    {"written": <epoch>, "nodes": {"worker-0": {"reboots": 1, "boots": [
        {"boot": 0, "seeded": true, "up": <epoch>, "down": <epoch|null>,
         "config": "rendered-worker-…", "config_release": "4.12.77",
         "os_image": "…@sha256:…", "os_digest": "sha256:…", "os_release": "4.12.77",
         "kernel": "6.1.0-50-cloud-amd64", "modules": []},
        {"boot": 1, ...}]}}}

Each boot also says `secure_boot` (the node booted with UEFI Secure
Boot enforced), `lockdown` (none | integrity | confidentiality, the
kernel's word) and `refused` ({module: modprobe's and the kernel's words}
for each module of the load list that is not loaded, e.g. "Loading of
unsigned module is rejected").

Boot 0 is the seeded state (not a reboot). `config_release` is the release
whose configuration the rendered config is (its release-image-version /
controller-version annotation); `os_release` the release the booted OS image
belongs to (a release's own OS image by digest, a layered one by its
kernel). A boot's interval runs from `up` to `down` (the next reboot starts;
null: still running). The same facts are on the Node as lab-only
annotations `kmodlab.io/reboots`, `kmodlab.io/booted-release`,
`kmodlab.io/boot`.

    records = read_boots(cluster_entry)            # {node: [boot, ...]}
    reboots(records)                               # {node: count}
    node_seconds(records, expected_modules={"kmodlab_core"}, since=t0)
      -> {"stale_os": s, "missing_modules": s, "total": s}
    refused(records)                               # {node: {module: words}} of each last boot
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable

from .cvo import semver


def read_boots(cluster: dict[str, Any] | str | Path) -> dict[str, list[dict[str, Any]]]:
    """The boot records by node of a cluster (its lab.json entry, or the
    path of its boots.json)."""
    if isinstance(cluster, dict):
        # Entries written before boots_file existed: the file sits beside the kubeconfig.
        path = Path(cluster.get("boots_file") or Path(cluster["kubeconfig"]).parent / "boots.json")
    else:
        path = Path(cluster)
    data = json.loads(path.read_text())
    return {name: node["boots"] for name, node in (data.get("nodes") or {}).items()}


def reboots(records: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Reboots per node (boots that were not the seeded state)."""
    return {name: sum(1 for boot in boots if not boot.get("seeded")) for name, boots in records.items()}


def last_boot(records: dict[str, list[dict[str, Any]]], node: str) -> dict[str, Any]:
    return records[node][-1]


def stale_os(boot: dict[str, Any]) -> bool:
    """The boot runs a newer release's configuration on an older release's
    OS image (what the documented two-reboot upgrade path does)."""
    config, os_ = semver(boot.get("config_release") or ""), semver(boot.get("os_release") or "")
    return config is not None and os_ is not None and config > os_


def missing_modules(boot: dict[str, Any], expected_modules: Iterable[str]) -> bool:
    """The boot's kernel runs without one of the expected modules loaded."""
    loaded = set(boot.get("modules") or [])
    return not set(expected_modules) <= loaded


def node_seconds(
    records: dict[str, list[dict[str, Any]]],
    expected_modules: Iterable[str] = (),
    since: float | None = None,
    until: float | None = None,
) -> dict[str, float]:
    """Node-seconds, summed over nodes, within [since, until] (default: all
    of the records, up to now): ``total`` up, ``stale_os`` running a newer
    release's config on an older release's OS image, ``missing_modules``
    on a kernel without all of ``expected_modules`` loaded (0 when none are
    expected). Reboots (down to up) count in none."""
    expected = list(expected_modules)
    end = time.time() if until is None else until
    totals = {"total": 0.0, "stale_os": 0.0, "missing_modules": 0.0}
    for boots in records.values():
        for boot in boots:
            start = max(boot["up"], since if since is not None else boot["up"])
            stop = min(boot["down"] if boot.get("down") is not None else end, end)
            seconds = max(0.0, stop - start)
            totals["total"] += seconds
            if stale_os(boot):
                totals["stale_os"] += seconds
            if expected and missing_modules(boot, expected):
                totals["missing_modules"] += seconds
    return totals


def refused(records: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, list[str]]]:
    """Per node, the modules its last boot's kernel (or modprobe) refused,
    with their words; a node whose last boot refused nothing is absent."""
    result = {}
    for name, boots in records.items():
        words = (boots[-1].get("refused") or {}) if boots else {}
        if words:
            result[name] = {module: list(lines) for module, lines in words.items()}
    return result


def secure_boot_nodes(records: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The nodes whose last boot was with Secure Boot enforced."""
    return sorted(name for name, boots in records.items() if boots and boots[-1].get("secure_boot"))
