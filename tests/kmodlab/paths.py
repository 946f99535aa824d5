"""Where the lab keeps its state and cache, and which ports it listens on.

Everything is overridable from the environment so a test run (its own state
dir and port base) never collides with a demo lab on the same machine.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
DEFAULT_PORT_BASE = 15000
HOST = "127.0.0.1"


def state_dir() -> Path:
    return Path(os.environ.get("KMODLAB_STATE") or CHECKOUT / ".lab")


def cache_dir() -> Path:
    return Path(os.environ.get("KMODLAB_CACHE") or Path.home() / ".cache" / "kmodlab")


def port_base() -> int:
    value = os.environ.get("KMODLAB_PORT_BASE")
    return int(value) if value else DEFAULT_PORT_BASE


@dataclasses.dataclass(frozen=True)
class Ports:
    base: int

    @property
    def registry(self) -> int:
        """htpasswd (Basic) registry."""
        return self.base

    @property
    def token_registry(self) -> int:
        """Registry behind token (Bearer) auth, same storage."""
        return self.base + 1

    @property
    def token_server(self) -> int:
        return self.base + 2

    def apiserver(self, index: int) -> int:
        """API server of lab cluster `index` (0, 1, ...)."""
        return self.base + 100 + index


def ports() -> Ports:
    return Ports(port_base())


@dataclasses.dataclass(frozen=True)
class StateLayout:
    """File layout under a state dir."""

    root: Path

    @property
    def lab_json(self) -> Path:
        return self.root / "lab.json"

    @property
    def pki(self) -> Path:
        # Holds only ca.crt, so it doubles as a containers-style cert dir
        # (skopeo/podman --cert-dir): every *.crt there is a trusted CA.
        return self.root / "pki"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def private(self) -> Path:
        """Keys and server certs (kept out of the cert dir above)."""
        return self.root / "pki-private"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def registry_storage(self) -> Path:
        return self.registry / "storage"

    @property
    def auth_file(self) -> Path:
        return self.root / "auth.json"

    @property
    def clusters(self) -> Path:
        return self.root / "clusters"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.yml"


def layout(root: Path | None = None) -> StateLayout:
    return StateLayout(Path(root) if root is not None else state_dir())
