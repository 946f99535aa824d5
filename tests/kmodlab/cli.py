"""`python -m kmodlab up|down|status|upgrade`.

`up` brings up, in order: PKI, registries + token server + auth file,
release images (kmodlab.images), clusters (kmodlab.cluster). It is idempotent:
what already runs is reused, releases already published are kept. `down`
stops everything and removes the registry storage. lab.json is saved after
each step so `status` and `down` see a partly brought up lab too.
`upgrade <cluster> [--to <version> | --to-image <pullspec>]` is the lab's
`oc adm upgrade` (kmodlab.cvo runs the upgrade); `status` shows each
cluster's version, upgrade progress and pools.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import json
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Sequence

from . import paths, pki, registry
from .releases import DEFAULT_RELEASES, all_ids
from .state import LabState, release_id

EXIT_DOWN = 3


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """One `up`/`down` at a time per state dir."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".cli.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def parse_versions(text: str | None) -> list[str]:
    """`4.12.77,4.16.30` -> release ids (`4.16.30-aarch64`, `4.16.30-multi`
    too); `` / `none` -> no releases; None -> defaults."""
    if text is None:
        return [r.version for r in DEFAULT_RELEASES]
    if text.strip().lower() in ("", "none"):
        return []
    versions = [v.strip() for v in text.split(",") if v.strip()]
    known = set(all_ids())
    unknown = [v for v in versions if v not in known]
    if unknown:
        raise SystemExit(f"unknown lab release(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return versions


def parse_secure_boot(text: str | None) -> bool | list[str]:
    """`--secure-boot`: absent -> no node; `workers` -> every worker; else node names."""
    if text is None:
        return False
    if text.strip().lower() in ("workers", "true", "all-workers"):
        return True
    return [n.strip() for n in text.split(",") if n.strip()]


def _lab_module(name: str) -> Any:
    """kmodlab.<name>, imported only when needed (heavy, written separately)."""
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__package__}.{name}":
            raise
        raise registry.LabError(f"kmodlab.{name} is not available in this checkout") from error


def _cluster_alive(cluster: dict[str, Any]) -> bool:
    pid = cluster.get("pid")
    if not pid:
        return False
    return not registry._reap(int(pid))  # noqa: SLF001 - same package


def up(
    root: Path | None = None,
    *,
    releases: Sequence[str] = (),
    clusters: int = 0,
    workers: int = 2,
    masters: int = 1,
    infra: int = 0,
    node_mode: str = "qemu",
    log: Any = None,
    cluster_releases: Sequence[str] = (),
    operator_seconds: float | None = None,
    secure_boot: bool | Sequence[str] = False,
    secure_boot_certs: Sequence[str] | None = None,
    arm64_workers: int = 0,
    arm64_in_worker: int = 0,
) -> LabState:
    """Bring the lab in `root` (default: the state dir) up; return its state.
    New clusters get `cluster_releases` round-robin (default: `releases`,
    else every published one); `operator_seconds`: how long each cluster
    operator takes in an upgrade (kmodlab.cvo); `secure_boot` /
    `secure_boot_certs`: their Secure Boot nodes and MOKs
    (cluster.start_clusters); `arm64_workers` / `arm64_in_worker`: the
    arm64 nodes of the new clusters on `-multi` releases."""
    releases = list(releases) + [v for v in cluster_releases if v not in releases]
    root = Path(root) if root is not None else paths.state_dir()
    say = log or (lambda message: None)
    with _exclusive(root):
        state = LabState.load(root)

        started = time.monotonic()
        previous_host = state.registry.host
        registry.start_registries(state)
        # The module-signing keys (Secure Boot): made once per state dir, named in lab.json.
        state.signing = {name: cert.facts() for name, cert in pki.ensure_signing(state.layout).items()}
        if previous_host and previous_host != state.registry.host:
            # Another port base: published pullspecs name the old registry.
            state.releases = []
        state.save()
        say(f"registries up on {state.registry.host} (htpasswd), {state.registry.token_host} (token) "
            f"in {time.monotonic() - started:.1f}s")

        _publish_missing(state, releases, say)

        alive = [c for c in state.clusters if _cluster_alive(c)]
        if len(alive) != len(state.clusters):
            for dead in state.clusters:
                if dead not in alive and dead.get("pid"):
                    # Its process group (qemu children) may have outlived it.
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(int(dead["pid"]), signal.SIGKILL)
            state.clusters = alive
            state.save()
        wanted = clusters - len(alive)
        if wanted > 0:
            if not state.releases:
                raise registry.LabError("clusters need at least one published release (--releases)")
            started = time.monotonic()
            cluster = _lab_module("cluster")
            versions = list(cluster_releases) or list(releases) or [r["version"] for r in state.releases]
            # Clusters get releases round-robin: continue where the running
            # ones left off, so adding clusters keeps the fleet mixed.
            shift = len(alive) % len(versions)
            versions = versions[shift:] + versions[:shift]
            cluster.start_clusters(
                state,
                count=wanted,
                releases=versions,
                workers=workers,
                masters=masters,
                infra=infra,
                node_mode=node_mode,
                secure_boot=secure_boot,
                secure_boot_certs=secure_boot_certs,
                arm64_workers=arm64_workers,
                arm64_in_worker=arm64_in_worker,
                **({"operator_seconds": operator_seconds} if operator_seconds is not None else {}),
            )
            state.save()
            say(f"started {wanted} cluster(s) in {time.monotonic() - started:.1f}s")
        return state


def _publish_missing(state: LabState, releases: Sequence[str], say: Any) -> None:
    published = {release_id(r) for r in state.releases}
    missing = [v for v in releases if v not in published]
    if missing:
        started = time.monotonic()
        images = _lab_module("images")
        new = images.publish_releases(state, missing)
        state.releases = [r for r in state.releases if release_id(r) not in missing] + list(new)
        state.save()
        say(f"published release(s) {', '.join(missing)} in {time.monotonic() - started:.1f}s")


def add_clusters(
    root: Path | None,
    release: str,
    count: int = 1,
    *,
    log: Any = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Publish `release` (an id, e.g. `4.16.30-aarch64`, `4.16.30-multi`) if
    needed and start `count` more clusters on it, whatever runs already
    (`options`: cluster.start_clusters' keywords, e.g. workers, node_mode,
    arm64_workers); the lab's registries must be up. Returns their entries."""
    root = Path(root) if root is not None else paths.state_dir()
    say = log or (lambda message: None)
    with _exclusive(root):
        state = LabState.load(root)
        if not state.registry.host:
            raise registry.LabError("the lab is not up: run `up` first")
        _publish_missing(state, [release], say)
        cluster = _lab_module("cluster")
        started = cluster.start_clusters(state, count=count, releases=[release], **options)
        state.save()
        return started


def remove_clusters(root: Path | None, names: Sequence[str], releases: Sequence[str] = ()) -> None:
    """Stop the named clusters and drop them from lab.json and the inventory;
    also forget the given releases (ids) in lab.json (their images stay in
    the registry, a later publish is a cheap copy)."""
    root = Path(root) if root is not None else paths.state_dir()
    with _exclusive(root):
        state = LabState.load(root)
        cluster = _lab_module("cluster")
        for name in names:
            cluster.stop_cluster(state, name)
        in_use = {c.get("release_id") or c.get("release") for c in state.clusters}
        state.releases = [r for r in state.releases if release_id(r) not in set(releases) - in_use]
        state.save()


def down(root: Path | None = None, *, log: Any = None) -> None:
    """Stop clusters, token server and registries; remove registry storage.

    Keeps the PKI and the credentials (clients keep trusting the lab).
    """
    root = Path(root) if root is not None else paths.state_dir()
    say = log or (lambda message: None)
    if not root.exists():
        return
    with _exclusive(root):
        state = LabState.load(root)
        errors: list[str] = []
        if state.clusters:
            try:
                _lab_module("cluster").stop_clusters(state)
            except Exception as error:  # noqa: BLE001 - keep going, registries must stop too
                errors.append(f"stopping clusters: {error!r}")
            else:
                state.clusters = []
        try:
            registry.stop_registries(state)
        except registry.LabError as error:
            errors.append(str(error))
        # The storage is gone: so are the releases.
        state.releases = []
        if state.inventory and not Path(state.inventory).exists():
            state.inventory = ""
        state.save()
        if errors:
            raise registry.LabError("; ".join(errors))
        say("lab down")


def status(root: Path | None = None) -> tuple[bool, str]:
    """(up?, human summary). Up means every registry process and every
    recorded cluster is running."""
    root = Path(root) if root is not None else paths.state_dir()
    state = LabState.load(root)
    running = registry.running_pids(state) if root.exists() else {}
    expected = ("registry", "token-registry", "tokenserver")
    registries_up = all(name in running for name in expected)
    dead_clusters = [c.get("name") for c in state.clusters if not _cluster_alive(c)]
    is_up = registries_up and not dead_clusters
    if is_up:
        verdict = "up"
    elif registries_up or running:
        verdict = "degraded: " + (
            f"cluster(s) {', '.join(map(str, dead_clusters))} not running" if registries_up else "registries partly down"
        ) + "; `up` repairs, `down` cleans up"
    else:
        verdict = "down"
    lines = [f"state dir: {root}", f"lab: {verdict}"]
    for name in expected:
        pid = running.get(name)
        lines.append(f"  {name:15} {'pid ' + str(pid) if pid else 'not running'}")
    if state.registry.host:
        lines.append(f"registry: {state.registry.host} (htpasswd), {state.registry.token_host} (token)")
        lines.append(f"  user {state.registry.username}, auth file {state.registry.auth_file}")
        lines.append(f"  CA {state.ca_file}")
    lines.append(f"releases: {len(state.releases)}")
    for release in state.releases:
        lines.append(f"  {release_id(release)}  kernel {release.get('kernel')}  {release.get('pullspec')}")
    lines.append(f"clusters: {len(state.clusters)}")
    for cluster in state.clusters:
        alive = "running" if _cluster_alive(cluster) else "NOT running"
        lines.append(
            f"  {cluster.get('name')}  {cluster.get('api_url')}  started on {cluster.get('release_id') or cluster.get('release')}  "
            f"{cluster.get('node_mode')}  pools {cluster.get('pools')}  {alive}"
        )
        secure = cluster.get("secure_boot") or {}
        if secure.get("nodes"):
            enrolled = [Path(c).stem for c in secure.get("enrolled_certs") or []]
            lines.append(f"    secure boot: {', '.join(secure['nodes'])} (MOKs enrolled: {', '.join(enrolled) or 'none'})")
        if alive == "running":
            lines.extend("    " + line for line in cluster_summary(cluster, state.ca_file))
    if state.inventory:
        lines.append(f"inventory: {state.inventory}")
    return is_up, "\n".join(lines)


# ---------------------------------------------------------------- clusters: version and upgrades


def _cluster_api(
    cluster: dict[str, Any], ca_file: str, method: str, path: str, body: Any = None, timeout: float = 5.0
) -> Any:
    """One JSON request to a lab cluster's API (its token, the lab CA)."""
    context = ssl.create_default_context(cafile=ca_file)
    headers = {"Authorization": f"Bearer {cluster['token']}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/merge-patch+json"
    request = urllib.request.Request(cluster["api_url"] + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, context=context, timeout=timeout) as response:
        return json.load(response)


CV_PATH = "/apis/config.openshift.io/v1/clusterversions/version"
POOLS_PATH = "/apis/machineconfiguration.openshift.io/v1/machineconfigpools"


def _condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), {})


def cluster_summary(cluster: dict[str, Any], ca_file: str) -> list[str]:
    """Lines on a running cluster: its version and upgrade (ClusterVersion),
    its pools (updated / machines, paused)."""
    try:
        cv = _cluster_api(cluster, ca_file, "GET", CV_PATH)
        pools = _cluster_api(cluster, ca_file, "GET", POOLS_PATH).get("items") or []
    except (OSError, ValueError) as error:
        return [f"(API not answering: {error})"]
    status = cv.get("status") or {}
    history = status.get("history") or [{}]
    current = next((h.get("version") for h in history if h.get("state") == "Completed"), "?")
    lines = [f"version {current}"]
    if history[0].get("state") == "Partial":
        lines[0] += f", upgrading to {history[0].get('version')} (since {history[0].get('startedTime')})"
    progressing, failing = _condition(cv, "Progressing"), _condition(cv, "Failing")
    lines.append(f"Progressing={progressing.get('status', '?')}: {progressing.get('message', '')}")
    if failing.get("status") == "True":
        lines.append(f"Failing: {failing.get('message', '')}")
    for ctype in ("ReleaseAccepted", "Invalid"):
        cond = _condition(cv, ctype)
        if (ctype == "Invalid" and cond.get("status") == "True") or (ctype == "ReleaseAccepted" and cond.get("status") == "False"):
            lines.append(f"{ctype}={cond.get('status')} ({cond.get('reason', '')}): {cond.get('message', '')}")
    updates = [u.get("version") for u in status.get("availableUpdates") or []]
    lines.append("available updates: " + (", ".join(updates) if updates else "none"))
    described = []
    for pool in sorted(pools, key=lambda p: p["metadata"]["name"]):
        pstatus = pool.get("status") or {}
        text = f"{pool['metadata']['name']} {pstatus.get('updatedMachineCount', 0)}/{pstatus.get('machineCount', 0)} updated"
        if (pool.get("spec") or {}).get("paused"):
            text += " (paused)"
        if _condition(pool, "Degraded").get("status") == "True":
            text += " DEGRADED"
        described.append(text)
    lines.append("pools: " + ", ".join(described))
    return lines


def _find_cluster(state: LabState, name: str) -> dict[str, Any]:
    for cluster in state.clusters:
        if cluster.get("name") == name:
            return cluster
    raise registry.LabError(
        f"no lab cluster {name!r}; clusters: {', '.join(str(c.get('name')) for c in state.clusters) or 'none'}"
    )


def upgrade(
    name: str,
    to: str | None = None,
    to_image: str | None = None,
    force: bool = False,
    clear: bool = False,
    wait: bool = False,
    root: Path | None = None,
    say: Any = print,
    timeout: float = 3600.0,
) -> int:
    """`oc adm upgrade` for a lab cluster: without a target, show the
    version and the available updates; `to` (a version of
    availableUpdates) sets desiredUpdate {version, image} as `oc adm upgrade
    --to` does; `to_image` sets {image} (oc's --to-image
    --allow-explicit-upgrade); `clear` drops desiredUpdate (the cluster
    stays where it got); `wait` follows the upgrade until it completes or
    fails. Returns an exit code."""
    root = Path(root) if root is not None else paths.state_dir()
    state = LabState.load(root)
    cluster = _find_cluster(state, name)
    ca_file = state.ca_file
    cv = _cluster_api(cluster, ca_file, "GET", CV_PATH)
    status = cv.get("status") or {}
    updates = status.get("availableUpdates") or []
    if clear:
        _cluster_api(cluster, ca_file, "PATCH", CV_PATH, {"spec": {"desiredUpdate": None}})
        say(f"{name}: cleared the desired update")
        return 0
    if to is None and to_image is None:
        for line in cluster_summary(cluster, ca_file):
            say(f"{name}: {line}")
        if updates:
            say(f"\n{'VERSION':12}IMAGE")
            for update in updates:
                say(f"{update.get('version', ''):12}{update.get('image', '')}")
        return 0
    if to is not None:
        match = next((u for u in updates if u.get("version") == to), None)
        if match is None:
            say(
                f"error: The update {to} is not one of the available updates: "
                + (", ".join(u.get("version", "") for u in updates) or "none")
            )
            return 1
        desired = {"version": to, "image": match["image"], "force": force}
    else:
        desired = {"image": to_image, "force": force}
    generation = (cv.get("metadata") or {}).get("generation") or 0
    _cluster_api(cluster, ca_file, "PATCH", CV_PATH, {"spec": {"desiredUpdate": desired}})
    say(f"{name}: requested update to {to or to_image}")
    if not wait:
        return 0
    deadline = time.monotonic() + timeout
    last: list[str] = []
    while time.monotonic() < deadline:
        cv = _cluster_api(cluster, ca_file, "GET", CV_PATH)
        lines = cluster_summary(cluster, ca_file)
        if lines != last:
            for line in lines:
                say(f"{name}: {line}")
            last = lines
        status = cv.get("status") or {}
        if (status.get("observedGeneration") or 0) > generation:
            history = status.get("history") or [{}]
            accepted = _condition(cv, "ReleaseAccepted")
            if accepted.get("status") == "False" or _condition(cv, "Invalid").get("status") == "True":
                return 1
            if history[0].get("state") == "Completed" and history[0].get("image", "").split("@")[-1] == (
                desired["image"].split("@")[-1]
            ):
                return 0
        time.sleep(1.0)
    say(f"{name}: still upgrading after {timeout:.0f}s")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kmodlab", description="The embedded ocp.kmod_layering lab.")
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="bring the lab up (idempotent)")
    up_parser.add_argument(
        "--releases",
        default=None,
        help="comma-separated lab release ids to publish (x86_64: the version; also <version>-aarch64, "
        f"<version>-multi: {', '.join(all_ids())}); 'none' for none "
        f"(default: {','.join(r.version for r in DEFAULT_RELEASES)})",
    )
    up_parser.add_argument("--clusters", type=int, default=0, help="number of lab clusters (default 0)")
    up_parser.add_argument("--workers", type=int, default=2)
    up_parser.add_argument("--masters", type=int, default=1)
    up_parser.add_argument("--infra", type=int, default=0)
    up_parser.add_argument("--node-mode", choices=("qemu", "fast"), default="qemu")
    up_parser.add_argument(
        "--cluster-releases",
        default=None,
        help="comma-separated releases the new clusters start on, round-robin (published too); "
        "default: --releases (e.g. --releases 4.12.77,4.16.30 --cluster-releases 4.12.77 to upgrade later)",
    )
    up_parser.add_argument(
        "--operator-seconds", type=float, default=None,
        help="seconds each cluster operator takes to move to a new release in an upgrade (default 2)",
    )
    up_parser.add_argument(
        "--secure-boot", nargs="?", const="workers", default=None, metavar="NODES",
        help="new clusters' nodes boot with UEFI Secure Boot: 'workers' (the default when given alone) or "
        "comma-separated node names (worker-0,...)",
    )
    up_parser.add_argument(
        "--secure-boot-enroll", default="fleet", metavar="CERTS",
        help="certificates the Secure Boot nodes enrol as MOKs: comma-separated 'fleet', 'other' or "
        "certificate files; 'none' for none (default fleet)",
    )
    up_parser.add_argument(
        "--arm64-workers", type=int, default=0,
        help="new clusters on a -multi release: arm64 compute nodes in the custom pool worker-arm64 (default 0)",
    )
    up_parser.add_argument(
        "--arm64-in-worker", type=int, default=0,
        help="new clusters on a -multi release: arm64 nodes in the worker pool itself, which then mixes "
        "architectures (default 0)",
    )
    commands.add_parser("down", help="stop everything, remove registry storage")
    commands.add_parser("status", help="summary (clusters: version, upgrade, pools); exit 0 if up, 3 if down or degraded")
    upgrade_parser = commands.add_parser(
        "upgrade", help="oc adm upgrade for a lab cluster: show updates, or start one (--to / --to-image)"
    )
    upgrade_parser.add_argument("cluster", help="lab cluster name (lab-a, ...)")
    target = upgrade_parser.add_mutually_exclusive_group()
    target.add_argument("--to", default=None, help="a version from the cluster's availableUpdates")
    target.add_argument("--to-image", default=None, help="a release image pullspec (by digest)")
    target.add_argument("--clear", action="store_true", help="drop spec.desiredUpdate")
    upgrade_parser.add_argument("--force", action="store_true", help="desiredUpdate.force (skips blocking checks)")
    upgrade_parser.add_argument("--wait", action="store_true", help="follow the upgrade until done or failed")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(message, flush=True)

    try:
        if args.command == "upgrade":
            try:
                return upgrade(
                    args.cluster, to=args.to, to_image=args.to_image, force=args.force, clear=args.clear,
                    wait=args.wait, say=say,
                )
            except (OSError, ValueError) as error:
                raise registry.LabError(f"cluster {args.cluster}: {error}") from error
        if args.command == "up":
            started = time.monotonic()
            state = up(
                cluster_releases=parse_versions(args.cluster_releases) if args.cluster_releases else (),
                operator_seconds=args.operator_seconds,
                releases=parse_versions(args.releases),
                clusters=args.clusters,
                workers=args.workers,
                masters=args.masters,
                infra=args.infra,
                node_mode=args.node_mode,
                secure_boot=parse_secure_boot(args.secure_boot),
                secure_boot_certs=[] if args.secure_boot_enroll.strip().lower() == "none" else [
                    c.strip() for c in args.secure_boot_enroll.split(",") if c.strip()],
                arm64_workers=args.arm64_workers,
                arm64_in_worker=args.arm64_in_worker,
                log=say,
            )
            say(f"lab up in {time.monotonic() - started:.1f}s; state {state.path}")
            return 0
        if args.command == "down":
            started = time.monotonic()
            down(log=say)
            say(f"down in {time.monotonic() - started:.1f}s")
            return 0
        is_up, summary = status()
        try:
            print(summary, flush=True)
        except BrokenPipeError:  # `status | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0 if is_up else EXIT_DOWN
    except registry.LabError as error:
        print(f"kmodlab {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"kmodlab {args.command}: interrupted; run `python -m kmodlab down` to clean up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
