"""pytest fixtures for the embedded lab.

The test lab lives in its own state dir (<checkout>/.build/lab-test) and port
base (16000), so it never collides with a demo lab (.lab, 15000). It is
brought up at most once per session, lazily: `lab_registry` (registries only,
a second) or `lab` (also releases and clusters), and brought down when the
session ends, also on failure, Ctrl-C or SIGTERM. Concurrent sessions share
it; the last one to finish brings it down. KMODLAB_TEST_STATE and
KMODLAB_TEST_PORT_BASE give a session a lab of its own instead.

Options: --lab-releases, --lab-clusters, --lab-workers, --lab-masters,
--lab-infra, --lab-node-mode; --lab-keep leaves the lab running afterwards
(then `KMODLAB_STATE=.build/lab-test KMODLAB_PORT_BASE=16000 python -m kmodlab down`).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import signal
from pathlib import Path
from typing import IO, Iterator

import pytest

from . import cli, paths
from .state import LabState

# Overridable, to give one session a lab of its own.
TEST_STATE = Path(os.environ.get("KMODLAB_TEST_STATE") or paths.CHECKOUT / ".build" / "lab-test")
TEST_PORT_BASE = int(os.environ.get("KMODLAB_TEST_PORT_BASE") or 16000)


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


LAB_FIXTURES = frozenset({"lab", "lab_registry", "registry_client_args"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Whatever uses the lab is marked `lab`, so `-m "not lab"` really skips it.
    for item in items:
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)


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
