"""The lab's registries: Debian `docker-registry` (CNCF distribution 2.8).

- base+0: TLS + htpasswd (bcrypt) Basic auth.
- base+1: TLS + token (Bearer) auth, same storage; tokens from the token
  server on base+2 (kmodlab.tokenserver).

Each runs as a background process in its own process group, logging to
<state>/logs/, its pid in <state>/pids/. A process is only ever taken for
ours (reused or stopped) if its command line names this state dir's config
file, so two labs (demo and tests) never touch each other's processes.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from . import paths, pki, tokenserver
from .state import LabState

USERNAME = "kmodlab"
TOKEN_SERVICE = "kmodlab-registry"
TOKEN_ISSUER = "kmodlab-token-issuer"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
REGISTRY_BINARY = "docker-registry"

# Popen objects of the processes this Python process started, kept so they are
# reaped (no zombies, no "still running" warnings) when stopped from here.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class LabError(RuntimeError):
    """The lab could not be brought to the requested state."""


# --- processes --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Service:
    name: str  # pid file / log file stem
    port: int
    marker: str  # an argument (its config file) that makes the process ours


def _argv_of(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode("utf-8", "replace").split("\0")


def _reap(pid: int) -> bool:
    """True if `pid` has exited (reaping it if it is our child)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)
            return True
        return False
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # Field 3 (after the parenthesised command) is the state; Z = zombie.
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def process_is_ours(pid: int | None, marker: str) -> bool:
    """`pid` runs and has `marker` as one of its arguments (exactly: a lab
    in /x/lab must not claim the processes of a lab in /y/x/lab)."""
    return pid is not None and pid > 0 and not _reap(pid) and marker in _argv_of(pid)


def find_processes(markers: list[str]) -> list[tuple[int, str]]:
    """Running processes that have one of `markers` as an argument."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        argv = _argv_of(int(entry.name))
        for marker in markers:
            if marker in argv and not _reap(int(entry.name)):
                found.append((int(entry.name), marker))
                break
    return found


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def spawn(argv: list[str], *, log_file: Path, pid_file: Path, env: dict[str, str] | None = None) -> int:
    """Start a background process in its own process group; record its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
    _CHILDREN[child.pid] = child
    pid_file.write_text(f"{child.pid}\n")
    return child.pid


def stop_process(pid: int, marker: str, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process group of `pid` if it is ours, SIGKILL after `timeout`."""
    if not process_is_ours(pid, marker):
        _reap(pid)
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _reap(pid):
                return
            time.sleep(0.05)
    if not _reap(pid):
        raise LabError(f"process {pid} ({marker}) did not exit")


def log_tail(log_file: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- readiness --------------------------------------------------------------


def ca_context(ca_file: Path | str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    return context


def _http_status(url: str, context: ssl.SSLContext, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def wait_for_status(
    url: str,
    expected: int,
    context: ssl.SSLContext,
    *,
    pid: int,
    log_file: Path,
    timeout: float = READY_TIMEOUT,
) -> None:
    """Poll `url` until it answers `expected`; fail early if the process died."""
    deadline = time.monotonic() + timeout
    last: str = "no answer"
    delay = 0.02
    while time.monotonic() < deadline:
        if _reap(pid):
            raise LabError(f"{url}: process {pid} exited before it was ready; log:\n{log_tail(log_file)}")
        try:
            status = _http_status(url, context)
            if status == expected:
                return
            last = f"HTTP {status}"
        except (OSError, ssl.SSLError) as error:
            last = str(error)
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    raise LabError(f"{url} not ready after {timeout:.0f}s (last: {last}); log:\n{log_tail(log_file)}")


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((paths.HOST, port)) == 0


# --- configuration ----------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(text)


def write_htpasswd(path: Path, username: str, password: str) -> None:
    """bcrypt entry via htpasswd(1), password on stdin (not in argv)."""
    result = subprocess.run(
        ["htpasswd", "-niB", username],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.startswith(f"{username}:$2"):
        raise LabError(f"htpasswd failed: {result.stderr.strip()}")
    _write_private(path, result.stdout.strip() + "\n")


def registry_config(
    *,
    port: int,
    storage: Path,
    http_secret: str,
    tls: pki.LabPKI,
    auth: dict[str, Any],
) -> dict[str, Any]:
    """distribution 2.8 configuration (written as JSON, which is YAML)."""
    return {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        # No blob descriptor cache: two registries share the storage, and an
        # in-memory cache in one would not see deletes made through the other.
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "addr": f"{paths.HOST}:{port}",
            # Same secret on both: upload state is HMAC'd with it.
            "secret": http_secret,
            "tls": {"certificate": str(tls.server_cert), "key": str(tls.server_key)},
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "auth": auth,
    }


def auth_file_content(hosts: list[str], username: str, password: str) -> dict[str, Any]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return {"auths": {host: {"auth": token} for host in hosts}}


# --- the lab's registries -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RegistryLayout:
    root: Path
    ports: paths.Ports

    @property
    def config_dir(self) -> Path:
        return self.root / "registry"

    @property
    def htpasswd(self) -> Path:
        return self.config_dir / "htpasswd"

    @property
    def basic_config(self) -> Path:
        return self.config_dir / "config-basic.yml"

    @property
    def token_config(self) -> Path:
        return self.config_dir / "config-token.yml"

    @property
    def tokenserver_config(self) -> Path:
        return self.config_dir / "tokenserver.json"

    def services(self) -> list[Service]:
        return [
            Service("registry", self.ports.registry, str(self.basic_config)),
            Service("token-registry", self.ports.token_registry, str(self.token_config)),
            Service("tokenserver", self.ports.token_server, str(self.tokenserver_config)),
        ]


def _registry_layout(state: LabState) -> RegistryLayout:
    return RegistryLayout(state.root, paths.ports())


def _write_configs(state: LabState, reg: RegistryLayout, tls: pki.LabPKI) -> None:
    layout = state.layout
    reg.config_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(reg.config_dir, 0o700)
    layout.registry_storage.mkdir(parents=True, exist_ok=True)
    http_secret = secrets.token_hex(32)
    write_htpasswd(reg.htpasswd, state.registry.username, state.registry.password)
    basic = registry_config(
        port=reg.ports.registry,
        storage=layout.registry_storage,
        http_secret=http_secret,
        tls=tls,
        auth={"htpasswd": {"realm": "kmodlab", "path": str(reg.htpasswd)}},
    )
    token = registry_config(
        port=reg.ports.token_registry,
        storage=layout.registry_storage,
        http_secret=http_secret,
        tls=tls,
        auth={
            "token": {
                "realm": f"https://{paths.HOST}:{reg.ports.token_server}/token",
                "service": TOKEN_SERVICE,
                "issuer": TOKEN_ISSUER,
                "rootcertbundle": str(tls.token_cert),
            }
        },
    )
    server = {
        "listen": f"{paths.HOST}:{reg.ports.token_server}",
        "tls_cert": str(tls.server_cert),
        "tls_key": str(tls.server_key),
        "signing_cert": str(tls.token_cert),
        "signing_key": str(tls.token_key),
        "issuer": TOKEN_ISSUER,
        "service": TOKEN_SERVICE,
        "ttl": tokenserver.DEFAULT_TTL,
        "users": {state.registry.username: tokenserver.hash_password(state.registry.password)},
    }
    _write_private(reg.basic_config, json.dumps(basic, indent=2) + "\n")
    _write_private(reg.token_config, json.dumps(token, indent=2) + "\n")
    _write_private(reg.tokenserver_config, json.dumps(server, indent=2) + "\n")


def _configured_for(reg: RegistryLayout) -> bool:
    """Whether the written configuration listens on `reg`'s ports."""
    try:
        basic = json.loads(reg.basic_config.read_text())
        token = json.loads(reg.token_config.read_text())
        server = json.loads(reg.tokenserver_config.read_text())
    except (OSError, ValueError):
        return False
    return (basic["http"]["addr"], token["http"]["addr"], server["listen"]) == (
        f"{paths.HOST}:{reg.ports.registry}",
        f"{paths.HOST}:{reg.ports.token_registry}",
        f"{paths.HOST}:{reg.ports.token_server}",
    )


def _argv(service: Service, reg: RegistryLayout) -> tuple[list[str], dict[str, str] | None]:
    if service.name == "tokenserver":
        env = dict(os.environ)
        tests_dir = str(paths.CHECKOUT / "tests")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (tests_dir, env.get("PYTHONPATH", "")) if p)
        return [sys.executable, "-m", "kmodlab.tokenserver", "--config", str(reg.tokenserver_config)], env
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        raise LabError(f"{REGISTRY_BINARY} not found (Debian package docker-registry)")
    config = reg.basic_config if service.name == "registry" else reg.token_config
    return [binary, "serve", str(config)], None


def _ready_url(service: Service) -> tuple[str, int]:
    if service.name == "tokenserver":
        return f"https://{paths.HOST}:{service.port}/healthz", 200
    # Both registries require auth: 401 on /v2/ means "up and enforcing it".
    return f"https://{paths.HOST}:{service.port}/v2/", 401


def running_pids(state: LabState) -> dict[str, int]:
    """Services of this lab whose process is running: name -> pid."""
    reg = _registry_layout(state)
    found = {}
    strays = None
    for service in reg.services():
        pid = read_pid(state.layout.pids / f"{service.name}.pid")
        if pid is not None and process_is_ours(pid, service.marker):
            found[service.name] = pid
            continue
        # Pid file lost: adopt the process running this service's config.
        if strays is None:
            strays = {marker: stray for stray, marker in find_processes([s.marker for s in reg.services()])}
        if service.marker in strays:
            found[service.name] = strays[service.marker]
            with contextlib.suppress(OSError):
                state.layout.pids.mkdir(parents=True, exist_ok=True)
                (state.layout.pids / f"{service.name}.pid").write_text(f"{strays[service.marker]}\n")
    return found


def start_registries(state: LabState) -> LabState:
    """Bring up the PKI, both registries, the token server and the auth file.

    Idempotent: services already running for this state dir are reused (and
    checked to answer). Updates and returns `state` (not saved).
    """
    layout = state.layout
    reg = _registry_layout(state)
    tls = pki.ensure_pki(layout)
    state.ca_file = str(layout.ca_file)
    if not state.registry.password:
        state.registry.username = USERNAME
        state.registry.password = secrets.token_urlsafe(24)
    state.registry.host = f"{paths.HOST}:{reg.ports.registry}"
    state.registry.token_host = f"{paths.HOST}:{reg.ports.token_registry}"

    running = running_pids(state)
    if running and not _configured_for(reg):
        # Running with another port base: restart everything on the new one.
        for service in reg.services():
            if service.name in running:
                stop_process(running.pop(service.name), service.marker)
    if len(running) < len(reg.services()):
        # Something must start: stop the rest so every process reads the same
        # freshly written configuration (http secret, credentials).
        for service in reg.services():
            if service.name in running:
                stop_process(running.pop(service.name), service.marker)
        _write_configs(state, reg, tls)

    context = ca_context(layout.ca_file)
    pids = []
    for service in reg.services():
        log_file = layout.logs / f"{service.name}.log"
        pid = running.get(service.name)
        if pid is None:
            if port_in_use(service.port):
                raise LabError(
                    f"port {service.port} ({service.name}) is taken by another process; "
                    f"stop it or set KMODLAB_PORT_BASE (now {reg.ports.base})"
                )
            argv, env = _argv(service, reg)
            pid = spawn(argv, log_file=log_file, pid_file=layout.pids / f"{service.name}.pid", env=env)
        url, expected = _ready_url(service)
        wait_for_status(url, expected, context, pid=pid, log_file=log_file)
        pids.append(pid)
    state.registry.pids = pids

    auth = auth_file_content(
        [state.registry.host, state.registry.token_host], state.registry.username, state.registry.password
    )
    _write_private(layout.auth_file, json.dumps(auth, indent=2) + "\n")
    state.registry.auth_file = str(layout.auth_file)
    return state


def stop_registries(state: LabState, *, remove_storage: bool = True) -> None:
    """Stop the token server and both registries; remove the storage."""
    layout = state.layout
    reg = _registry_layout(state)
    errors = []
    # Token server first: nothing new can authenticate while registries stop.
    for service in reversed(reg.services()):
        pid_file = layout.pids / f"{service.name}.pid"
        pid = read_pid(pid_file)
        if pid is not None:
            try:
                stop_process(pid, service.marker)
            except LabError as error:
                errors.append(str(error))
                continue
        pid_file.unlink(missing_ok=True)
    # Strays (a lost pid file, an `up` killed between spawn and pid file):
    # any process running one of this lab's config files.
    for pid, marker in find_processes([s.marker for s in reg.services()]):
        stop_process(pid, marker)
    if errors:
        raise LabError("; ".join(errors))
    state.registry.pids = []
    if remove_storage:
        shutil.rmtree(layout.registry_storage, ignore_errors=True)
