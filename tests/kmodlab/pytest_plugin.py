"""pytest fixtures for the embedded lab.

The test lab lives in its own state dir (<checkout>/.build/lab-test) and port
base (16000), so it never collides with a demo lab (.lab, 15000). It is
brought up at most once per session, lazily: `lab_registry` (registries only,
a second) or `lab` (also releases and clusters), and brought down when the
session ends, also on failure, Ctrl-C or SIGTERM. Concurrent sessions share
it; the last one to finish brings it down. KMODLAB_TEST_STATE and
KMODLAB_TEST_PORT_BASE give a session a lab of its own instead. Under
pytest-xdist each worker has its own (state dir suffixed -gwN, port base +
N * WORKER_PORT_STRIDE).

Options: --lab-releases, --lab-clusters, --lab-workers, --lab-masters,
--lab-infra, --lab-node-mode; --lab-keep leaves the lab running afterwards
(then `KMODLAB_STATE=.build/lab-test KMODLAB_PORT_BASE=16000 python -m kmodlab down`).

Background runs (`BackgroundRun`): a test module whose tests only judge the
outcome of one long command with a lab of its own (the benchmark harness,
molecule) declares it at module level; when any of its tests is selected,
the command starts in the background as the session's first lab test starts
(one background command at a time), while the other tests run, and the
module's fixture waits for it. The command, its lab and every assertion on
its outcome are the same as in the foreground; only the wall time overlaps
(much of the session's is waiting: qemu boots use one core of two, rollouts
wait on simulated drains and reboots). --no-background runs each in place.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import pytest

from . import cli, paths
from .state import LabState, release_id


def _xdist_worker() -> int | None:
    """This process's index among pytest-xdist's workers (gw0 -> 0), None outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else None


XDIST_WORKER = _xdist_worker()
# Ports a session's lab may use above its base: its own (registries, token
# server, API servers from +100) and those of the labs its tests start beside
# it (+10/+20 registry tests, +600 the bench harness, +8000 molecule). Worker
# N of an xdist run takes base + N * WORKER_PORT_STRIDE, so up to
# MAX_WORKERS workers stay clear of each other (and of molecule's +8000).
WORKER_PORT_STRIDE = 1000
MAX_WORKERS = 8
if XDIST_WORKER is not None and XDIST_WORKER >= MAX_WORKERS:
    raise pytest.UsageError(f"pytest-xdist worker gw{XDIST_WORKER}: at most {MAX_WORKERS} workers have lab ports "
                            f"of their own (kmodlab.pytest_plugin.WORKER_PORT_STRIDE); run with -n {MAX_WORKERS} "
                            "or fewer (KMOD_TEST_WORKERS)")

# Overridable, to give one session a lab of its own; under pytest-xdist each
# worker has its own (state dir suffixed -gwN, its own port range): a worker's
# tests change their lab's clusters, so workers never share one.
_STATE = Path(os.environ.get("KMODLAB_TEST_STATE") or paths.CHECKOUT / ".build" / "lab-test")
TEST_STATE = _STATE if XDIST_WORKER is None else _STATE.with_name(f"{_STATE.name}-gw{XDIST_WORKER}")
TEST_PORT_BASE = int(os.environ.get("KMODLAB_TEST_PORT_BASE") or 16000) + WORKER_PORT_STRIDE * (XDIST_WORKER or 0)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kmodlab", "embedded lab")
    group.addoption("--lab-releases", default=None, help="lab releases to publish (default: the lab's defaults)")
    group.addoption("--lab-clusters", type=int, default=2, help="lab clusters for the `lab` fixture (default 2)")
    group.addoption("--lab-workers", type=int, default=2, help="worker nodes per lab cluster (default 2)")
    group.addoption("--lab-masters", type=int, default=1, help="master nodes per lab cluster (default 1)")
    group.addoption("--lab-infra", type=int, default=0, help="infra nodes per lab cluster (default 0)")
    group.addoption(
        "--lab-node-mode",
        choices=("qemu", "fast"),
        default="qemu",
        help="qemu: nodes boot the image's kernel; fast: simulated boots (default qemu)",
    )
    group.addoption("--lab-keep", action="store_true", help="leave the test lab running at the end")
    group.addoption("--no-background", action="store_true",
                    help="run the modules' background commands (BackgroundRun) in place, when their tests need them")


LAB_FIXTURES = frozenset({"lab", "lab_registry", "registry_client_args", "lab_aarch64_release",
                          "lab_multi_release", "lab_aarch64_cluster", "lab_multiarch_cluster"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Whatever uses the lab is marked `lab`, so `-m "not lab"` really skips it.
    for item in items:
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)


# ------------------------------------------------------------------ background runs


@dataclasses.dataclass
class BackgroundRun:
    """One long command a test module's tests judge the outcome of.

    `command(workdir, environ)` returns (argv, env, cwd) for a fresh work
    directory and a copy of the session's environment (taken in the main
    thread: the lab fixtures change os.environ);
    `cleanup()` runs at the end of the session if the command was stopped
    before it finished (it must leave nothing behind, e.g. its lab's
    processes). `result()` (from the module's fixture) waits for the command
    (started in the background when the session's first lab test starts, or
    now if it was not) and returns its outcome."""

    name: str
    command: Callable[[Path, dict[str, str]], tuple[list[str], dict[str, str], Path]]
    timeout: float = 1800
    cleanup: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self.workdir: Path | None = None
        self.returncode: int | None = None
        self.seconds: float | None = None
        self.started_at: float | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self._interrupted = False

    def run(self, tmp: pytest.TempPathFactory, environ: dict[str, str]) -> None:
        """Run the command to its end (or timeout, or stop()); once."""
        with self._lock:
            if self.started_at is not None or self._stopped:
                return
            self.started_at = time.monotonic()
            self.workdir = tmp.mktemp(self.name)
            argv, env, cwd = self.command(self.workdir, environ)
            # Temporary files of its own (tests look for theirs, e.g.
            # podman's private auth file, in the session's TMPDIR).
            tmpdir = self.workdir / "tmp"
            tmpdir.mkdir()
            env = dict(env, TMPDIR=str(tmpdir))
            with open(self.workdir / "stdout", "wb") as out, open(self.workdir / "stderr", "wb") as err:
                self._process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                                 stderr=err, start_new_session=True)
        try:
            self.returncode = self._process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._interrupt()
            self.returncode = self._process.wait()
        finally:
            self.seconds = time.monotonic() - self.started_at
            self._done.set()

    def _interrupt(self) -> None:
        """SIGINT to the command's process group (Python's `finally` blocks
        run: a lab it started goes down), SIGKILL if it does not stop."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        self._interrupted = True
        for sig, wait in ((signal.SIGINT, 120), (signal.SIGKILL, 30)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        """End of session: stop it if it still runs; clean up after it unless it finished."""
        with self._lock:
            self._stopped = True
        self._interrupt()
        if self._interrupted and self.cleanup is not None:
            self.cleanup()

    def result(self, tmp: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
        self.run(tmp, dict(os.environ))  # in place if the background lane has not started it
        self._done.wait()
        assert self.workdir is not None and self.returncode is not None
        return subprocess.CompletedProcess(
            self._process.args if self._process is not None else [], self.returncode,
            (self.workdir / "stdout").read_text(errors="replace"), (self.workdir / "stderr").read_text(errors="replace"))


class _BackgroundLane:
    """The session's background runs, one after another, in test order."""

    def __init__(self, runs: list[BackgroundRun], tmp: pytest.TempPathFactory) -> None:
        self.runs = runs
        self.tmp = tmp
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None and self.runs:
            environ = dict(os.environ)
            self.thread = threading.Thread(target=self._work, args=(environ,), name="kmodlab-background", daemon=True)
            self.thread.start()

    def _work(self, environ: dict[str, str]) -> None:
        for run in self.runs:
            run.run(self.tmp, environ)

    def stop(self) -> None:
        for run in self.runs:
            run.stop()


_LANE_KEY = pytest.StashKey[_BackgroundLane]()


def pytest_collection_finish(session: pytest.Session) -> None:
    runs: list[BackgroundRun] = []
    for item in session.items:
        module = getattr(item, "module", None)
        for value in vars(module).values() if module is not None else ():
            if isinstance(value, BackgroundRun) and value not in runs:
                runs.append(value)
    # Under xdist every worker collects every module, and the workers are the
    # parallelism: each background command runs in place, on the worker its
    # module's tests are sent to.
    if runs and not session.config.getoption("--no-background") and XDIST_WORKER is None:
        session.config.stash[_LANE_KEY] = _BackgroundLane(runs, session.config._tmp_path_factory)  # noqa: SLF001


def pytest_runtest_setup(item: pytest.Item) -> None:
    lane = item.config.stash.get(_LANE_KEY, None)
    if lane is not None and item.get_closest_marker("lab") is not None:
        lane.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    lane = session.config.stash.get(_LANE_KEY, None)
    if lane is not None:
        lane.stop()


class _TestLab:
    """The session's lab: environment, lazy bring-up, guaranteed teardown.

    Several pytest sessions (engineers, CI jobs) may share the test lab: each
    holds a shared lock on it while it runs, and only the last one out, the
    one that gets the lock exclusively, brings it down.
    """

    def __init__(self, root: Path, port_base: int, keep: bool) -> None:
        self.root = root
        self.port_base = port_base
        self.keep = keep
        self.started = False
        self._saved_env: dict[str, str | None] = {}
        self._saved_sigterm: object = None
        self._lease: IO[str] | None = None

    def enter(self) -> None:
        # Through the environment, so everything the tests start (kmodlab
        # helpers, ansible-playbook, cluster processes) finds this lab.
        for name, value in (("KMODLAB_STATE", str(self.root)), ("KMODLAB_PORT_BASE", str(self.port_base))):
            self._saved_env[name] = os.environ.get(name)
            os.environ[name] = value
        # Blocks while another session is bringing the lab down.
        self.root.mkdir(parents=True, exist_ok=True)
        self._lease = open(self.root / ".sessions.lock", "w")  # noqa: SIM115 - held for the session
        fcntl.flock(self._lease, fcntl.LOCK_SH)
        # Belt and braces: if the interpreter exits without fixture teardown.
        atexit.register(self.exit)
        # SIGTERM (CI cancelling a job, `timeout`) would kill pytest without
        # any teardown; turn it into an interrupt like Ctrl-C.
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._saved_sigterm = signal.signal(signal.SIGTERM, _interrupt)

    def up(self, **kwargs: object) -> LabState:
        self.started = True
        return cli.up(self.root, **kwargs)  # type: ignore[arg-type]

    def _last_out(self) -> bool:
        """Give up the shared lease; True if no other session holds one."""
        if self._lease is None:
            return False
        fcntl.flock(self._lease, fcntl.LOCK_UN)
        try:
            fcntl.flock(self._lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def exit(self) -> None:
        atexit.unregister(self.exit)
        if self._saved_sigterm is not None:
            # Finish the teardown even if SIGTERM comes again.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if self._last_out() and self.started and not self.keep:
                cli.down(self.root)
        finally:
            self.started = False
            if self._lease is not None:
                self._lease.close()
                self._lease = None
            for name, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            self._saved_env.clear()
            if self._saved_sigterm is not None:
                signal.signal(signal.SIGTERM, self._saved_sigterm)  # type: ignore[arg-type]
                self._saved_sigterm = None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def _kmodlab_session(request: pytest.FixtureRequest) -> Iterator[_TestLab]:
    session_lab = _TestLab(TEST_STATE, TEST_PORT_BASE, bool(request.config.getoption("--lab-keep")))
    session_lab.enter()
    try:
        yield session_lab
    finally:
        session_lab.exit()


@pytest.fixture(scope="session")
def lab_registry(_kmodlab_session: _TestLab) -> LabState:
    """The test lab with its registries, token server and auth file (no
    releases, no clusters unless another fixture brought them up)."""
    return _kmodlab_session.up()


@pytest.fixture(scope="session")
def lab(_kmodlab_session: _TestLab, request: pytest.FixtureRequest) -> LabState:
    """The full test lab: registries, releases, clusters."""
    option = request.config.getoption
    return _kmodlab_session.up(
        releases=cli.parse_versions(option("--lab-releases")),
        clusters=option("--lab-clusters"),
        workers=option("--lab-workers"),
        masters=option("--lab-masters"),
        infra=option("--lab-infra"),
        node_mode=option("--lab-node-mode"),
    )


@pytest.fixture(scope="session")
def registry_client_args(lab_registry: LabState) -> dict[str, str]:
    """Arguments for a registry client talking to the lab: the pull secret
    and the CA to verify the registries' TLS with."""
    return {"auth_file": lab_registry.registry.auth_file, "ca_path": lab_registry.ca_file}


def wait_until(what: str, check: Callable[[], Any], timeout: float = 900.0, interval: float = 0.5,
               observe: Callable[[], None] | None = None, describe: Callable[[], str] | None = None) -> Any:
    """Poll `check` (after `observe`, if given) until it returns something
    true, and return that; on timeout fail with `what` and `describe()`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if observe is not None:
            observe()
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f"; {describe()}" if describe else ""))


# ------------------------------------------------------------------ architectures (issue K)

AARCH64_RELEASE = "4.16.30-aarch64"
MULTI_RELEASE = "4.16.30-multi"


def _refresh(state: LabState) -> None:
    """Bring a LabState the tests hold up to date with lab.json (in place)."""
    fresh = LabState.load(state.root)
    state.releases[:] = fresh.releases
    state.clusters[:] = fresh.clusters
    state.inventory = fresh.inventory


@contextlib.contextmanager
def arch_release(state: LabState, release: str) -> Iterator[dict[str, Any]]:
    """`release` (an id) published in the test lab while in the block; its
    lab.json entry is dropped afterwards (if it was not there before), so
    tests that walk `lab.releases` only see the default x86_64 ones."""
    had = any(release_id(r) == release for r in state.releases)
    cli.up(state.root, releases=[release])
    _refresh(state)
    try:
        yield state.release(release)
    finally:
        if not had:
            cli.remove_clusters(state.root, [], releases=[release])
            _refresh(state)


@contextlib.contextmanager
def arch_cluster(state: LabState, release: str, **options: Any) -> Iterator[dict[str, Any]]:
    """One more lab cluster on `release` while in the block (its lab.json
    entry, also in the inventory); stopped and forgotten afterwards, so
    other tests' fleets stay x86_64."""
    had = any(release_id(r) == release for r in state.releases)
    (entry,) = cli.add_clusters(state.root, release, 1, **options)
    _refresh(state)
    try:
        yield entry
    finally:
        cli.remove_clusters(state.root, [entry["name"]], releases=[] if had else [release])
        _refresh(state)


@pytest.fixture(scope="module")
def lab_aarch64_release(lab: LabState) -> Iterator[dict[str, Any]]:
    """The lab.json entry of the aarch64 release (4.16.30-aarch64: arm64 DTK
    and RHCOS stand-ins, release image config arm64), published for this module."""
    with arch_release(lab, AARCH64_RELEASE) as entry:
        yield entry


@pytest.fixture(scope="module")
def lab_multi_release(lab: LabState) -> Iterator[dict[str, Any]]:
    """The lab.json entry of the multi payload (4.16.30-multi: an OCI image
    index of the x86_64 and arm64 release images, components indexes too;
    `platforms` has each architecture's digests), published for this module."""
    with arch_release(lab, MULTI_RELEASE) as entry:
        yield entry


@pytest.fixture(scope="module")
def lab_aarch64_cluster(lab: LabState, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """One aarch64 lab cluster for this module: release 4.16.30-aarch64, one
    master and one worker, all arm64 (qemu-system-aarch64 nodes unless
    --lab-node-mode fast). Its entry as in lab.json `clusters` (`lab` is
    refreshed: lab.clusters and the inventory include it while it runs)."""
    with arch_cluster(lab, AARCH64_RELEASE, workers=1, masters=1,
                      node_mode=request.config.getoption("--lab-node-mode")) as entry:
        yield entry


@pytest.fixture(scope="module")
def lab_multiarch_cluster(lab: LabState, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """One multi-arch lab cluster for this module: release 4.16.30-multi, an
    x86_64 master, one x86_64 node in pool worker and one arm64 node in pool
    worker-arm64 (see kmodlab.cluster)."""
    with arch_cluster(lab, MULTI_RELEASE, workers=1, masters=1, arm64_workers=1,
                      node_mode=request.config.getoption("--lab-node-mode")) as entry:
        yield entry
