"""`lab.json`: the lab's state, read by every part of the lab and by tests.

The schema is the one in README.md. `LabState.root` (the state dir) is not
stored in the file: it is where the file was loaded from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from . import paths


def release_id(entry: dict[str, Any]) -> str:
    """The id of a lab.json `releases` entry (entries before ids: the version, x86_64)."""
    return str(entry.get("id") or entry.get("version") or "")


@dataclasses.dataclass
class RegistryInfo:
    host: str = ""  # 127.0.0.1:<base+0>, htpasswd auth
    token_host: str = ""  # 127.0.0.1:<base+1>, token auth
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    auth_file: str = ""
    pids: list[int] = dataclasses.field(default_factory=list)

    # Mapping-style access too, so code written against the JSON shape
    # (state.registry["host"]) works unchanged.
    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default) if key in self.__dataclass_fields__ else default

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegistryInfo:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclasses.dataclass
class LabState:
    root: Path
    ca_file: str = ""
    registry: RegistryInfo = dataclasses.field(default_factory=RegistryInfo)
    releases: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    clusters: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    inventory: str = ""
    # `lab_signing` in lab.json: the module-signing keys and certificates
    # (kmodlab.pki.ensure_signing), {"fleet"|"other": {kmod_signing_key_file, kmod_signing_cert_file, cert_der_file}}.
    signing: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    # Top-level keys this version does not know, kept on a round trip.
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def layout(self) -> paths.StateLayout:
        return paths.layout(self.root)

    @property
    def path(self) -> Path:
        return self.layout.lab_json

    def release(self, version: str) -> dict[str, Any]:
        """A published release by its id (kmodlab.releases: `4.16.30` is the
        x86_64 one, `4.16.30-aarch64`, `4.16.30-multi`)."""
        for release in self.releases:
            if release_id(release) == version:
                return release
        raise KeyError(f"release {version!r} is not published in this lab")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        data.update(
            ca_file=self.ca_file,
            registry=self.registry.to_dict(),
            releases=self.releases,
            clusters=self.clusters,
            inventory=self.inventory,
        )
        if self.signing:
            data["lab_signing"] = self.signing
        return data

    @classmethod
    def from_dict(cls, root: Path, data: dict[str, Any]) -> LabState:
        known = {"ca_file", "registry", "releases", "clusters", "inventory", "lab_signing"}
        return cls(
            root=Path(root),
            ca_file=data.get("ca_file", ""),
            registry=RegistryInfo.from_dict(data.get("registry") or {}),
            releases=list(data.get("releases") or []),
            clusters=list(data.get("clusters") or []),
            inventory=data.get("inventory", ""),
            signing=dict(data.get("lab_signing") or {}),
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def load(cls, root: Path | None = None) -> LabState:
        """The state in `root` (default: the state dir); empty if none yet."""
        root = Path(root) if root is not None else paths.state_dir()
        try:
            text = paths.layout(root).lab_json.read_text()
        except FileNotFoundError:
            return cls(root=root)
        return cls.from_dict(root, json.loads(text))

    def save(self) -> None:
        """Write lab.json atomically (readers never see a half-written file).

        The file holds the registry password: it is created 0600.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".lab.json.")
        try:
            with os.fdopen(fd, "w") as stream:
                json.dump(self.to_dict(), stream, indent=2, sort_keys=False)
                stream.write("\n")
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


@contextlib.contextmanager
def locked(root: Path | None = None) -> Iterator[LabState]:
    """Load, let the caller change, and save the state under an exclusive lock.

    For processes that update lab.json concurrently (e.g. cluster processes).
    """
    root = Path(root) if root is not None else paths.state_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lab.json.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = LabState.load(root)
        yield state
        state.save()
