"""`python -m kmodlab up|down|status`.

`up` brings up, in order: PKI, registries + token server + auth file,
release images (kmodlab.images), clusters (kmodlab.cluster). It is idempotent:
what already runs is reused, releases already published are kept. `down`
stops everything and removes the registry storage. lab.json is saved after
each step so `status` and `down` see a partly brought up lab too.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from . import paths, registry
from .releases import DEFAULT_RELEASES, RELEASES
from .state import LabState

EXIT_DOWN = 3


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """One `up`/`down` at a time per state dir."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".cli.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def parse_versions(text: str | None) -> list[str]:
    """`4.12.77,4.16.30` -> versions; `` / `none` -> no releases; None -> defaults."""
    if text is None:
        return [r.version for r in DEFAULT_RELEASES]
    if text.strip().lower() in ("", "none"):
        return []
    versions = [v.strip() for v in text.split(",") if v.strip()]
    known = {r.version for r in RELEASES}
    unknown = [v for v in versions if v not in known]
    if unknown:
        raise SystemExit(f"unknown lab release(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return versions


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
) -> LabState:
    """Bring the lab in `root` (default: the state dir) up; return its state."""
    root = Path(root) if root is not None else paths.state_dir()
    say = log or (lambda message: None)
    with _exclusive(root):
        state = LabState.load(root)

        started = time.monotonic()
        previous_host = state.registry.host
        registry.start_registries(state)
        if previous_host and previous_host != state.registry.host:
            # Another port base: published pullspecs name the old registry.
            state.releases = []
        state.save()
        say(f"registries up on {state.registry.host} (htpasswd), {state.registry.token_host} (token) "
            f"in {time.monotonic() - started:.1f}s")

        published = {r.get("version") for r in state.releases}
        missing = [v for v in releases if v not in published]
        if missing:
            started = time.monotonic()
            images = _lab_module("images")
            new = images.publish_releases(state, missing)
            state.releases = [r for r in state.releases if r.get("version") not in missing] + list(new)
            state.save()
            say(f"published release(s) {', '.join(missing)} in {time.monotonic() - started:.1f}s")

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
            versions = list(releases) or [r["version"] for r in state.releases]
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
            )
            state.save()
            say(f"started {wanted} cluster(s) in {time.monotonic() - started:.1f}s")
        return state


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
        lines.append(f"  {release.get('version')}  kernel {release.get('kernel')}  {release.get('pullspec')}")
    lines.append(f"clusters: {len(state.clusters)}")
    for cluster in state.clusters:
        alive = "running" if _cluster_alive(cluster) else "NOT running"
        lines.append(
            f"  {cluster.get('name')}  {cluster.get('api_url')}  release {cluster.get('release')}  "
            f"{cluster.get('node_mode')}  pools {cluster.get('pools')}  {alive}"
        )
    if state.inventory:
        lines.append(f"inventory: {state.inventory}")
    return is_up, "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kmodlab", description="The embedded ocp.kmod_layering lab.")
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="bring the lab up (idempotent)")
    up_parser.add_argument(
        "--releases",
        default=None,
        help="comma-separated lab release versions to publish; 'none' for none "
        f"(default: {','.join(r.version for r in DEFAULT_RELEASES)})",
    )
    up_parser.add_argument("--clusters", type=int, default=0, help="number of lab clusters (default 0)")
    up_parser.add_argument("--workers", type=int, default=2)
    up_parser.add_argument("--masters", type=int, default=1)
    up_parser.add_argument("--infra", type=int, default=0)
    up_parser.add_argument("--node-mode", choices=("qemu", "fast"), default="qemu")
    commands.add_parser("down", help="stop everything, remove registry storage")
    commands.add_parser("status", help="summary; exit 0 if up, 3 if down or degraded")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(message, flush=True)

    try:
        if args.command == "up":
            started = time.monotonic()
            state = up(
                releases=parse_versions(args.releases),
                clusters=args.clusters,
                workers=args.workers,
                masters=args.masters,
                infra=args.infra,
                node_mode=args.node_mode,
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
