"""Pure helpers of the fleet benchmark: the physical limit of a rollout,
ratios, verdicts, the result table, and parsers of what the lab records
(ansible-playbook's recap, profile_tasks' task list, the registry's access
log). No I/O here, so the unit tests pin them down exactly."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Iterable, Sequence


def physical_limit(nodes: int, max_unavailable: int, drain_seconds: float, reboot_seconds: float) -> float:
    """Shortest possible rollout of a pool: the nodes go in
    ceil(nodes / maxUnavailable) waves, each drains and reboots."""
    if nodes <= 0:
        return 0.0
    if max_unavailable <= 0:
        raise ValueError("maxUnavailable must be at least 1")
    return math.ceil(nodes / max_unavailable) * (drain_seconds + reboot_seconds)


def ratio(measured: float | None, baseline: float | None) -> float | None:
    """measured / baseline; None when either is unknown or the baseline is 0."""
    if measured is None or baseline is None or baseline == 0:
        return None
    return measured / baseline


@dataclasses.dataclass
class Row:
    """One line of the result table. `ok` is None for information only."""

    name: str
    measured: str
    target: str
    baseline: str = "-"
    ratio: float | None = None
    ok: bool | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        return "info" if self.ok is None else ("PASS" if self.ok else "FAIL")


HEADER = ("measure", "measured", "target", "baseline", "ratio", "result")


def format_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render_table(rows: Sequence[Row], markdown: bool = False) -> str:
    """The result table: aligned text for a terminal, or a Markdown table."""
    cells = [HEADER] + [(r.name, r.measured, r.target, r.baseline, format_ratio(r.ratio), r.verdict) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells[1:]]
        return "\n".join(lines) + "\n"
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    out = []
    for number, row in enumerate(cells):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if number == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n"


RECAP = re.compile(r"^(\S+)\s+:\s+(ok=.*)$", re.M)


def parse_recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP of ansible-playbook's default output: host -> counters."""
    hosts = {}
    for host, counts in RECAP.findall(stdout):
        hosts[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return hosts


PROFILE_LINE = re.compile(r"^(.+?) -+ (\d+\.\d+)s$")


def parse_profile(stdout: str) -> list[tuple[str, float]]:
    """(task, seconds) from profile_tasks' TASKS RECAP (one entry per task
    run; a task of a role run in several batches appears once per batch)."""
    if "TASKS RECAP" not in stdout:
        return []
    tail = stdout.rsplit("TASKS RECAP", 1)[1]
    tasks = []
    for line in tail.splitlines():
        match = PROFILE_LINE.match(line.strip())
        if match:
            tasks.append((match.group(1).strip(), float(match.group(2))))
    return tasks


def time_by_phase(tasks: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Seconds per role (`ns.coll.role : task` -> role), plays' own tasks as `play`."""
    phases: dict[str, float] = {}
    for name, seconds in tasks:
        role = name.split(" : ", 1)[0].rsplit(".", 1)[-1] if " : " in name else "play"
        phases[role] = phases.get(role, 0.0) + seconds
    return dict(sorted(phases.items(), key=lambda kv: -kv[1]))


ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) (?P<bytes>\d+|-) "[^"]*" "(?P<agent>[^"]*)"')


@dataclasses.dataclass(frozen=True)
class Access:
    method: str
    path: str
    status: int
    size: int
    agent: str

    @property
    def kind(self) -> str:
        """manifests / blobs / other (a /v2/<repo>/<kind>/<ref> path)."""
        parts = self.path.split("?", 1)[0].split("/")
        for kind in ("manifests", "blobs"):
            if kind in parts:
                return kind
        return "other"

    @property
    def digest(self) -> str:
        return self.path.split("?", 1)[0].rsplit("/", 1)[-1]


def parse_access_log(text: str) -> list[Access]:
    """The combined-format lines of a docker-registry log."""
    out = []
    for match in ACCESS.finditer(text):
        size = match.group("bytes")
        out.append(Access(match.group("method"), match.group("path"), int(match.group("status")),
                          0 if size == "-" else int(size), match.group("agent")))
    return out


def manifest_puts(accesses: Iterable[Access], repository: str) -> int:
    """Images pushed into `repository`: successful manifest PUTs."""
    prefix = f"/v2/{repository}/manifests/"
    return sum(1 for a in accesses if a.method == "PUT" and a.path.startswith(prefix) and a.status < 300)


def body_bytes(accesses: Iterable[Access], agent_prefix: str, kind: str | None = None) -> int:
    """Bytes the registry sent to clients whose User-Agent starts with
    `agent_prefix` (GETs only: HEADs have no body)."""
    return sum(a.size for a in accesses
               if a.method == "GET" and a.agent.startswith(agent_prefix) and (kind is None or a.kind == kind))


def mib(value: float) -> str:
    return f"{value / 1048576:.1f} MiB"
