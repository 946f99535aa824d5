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
    run: str = ""  # the run that measured it (a label: its date), in a table of several runs

    @property
    def verdict(self) -> str:
        return "info" if self.ok is None else ("PASS" if self.ok else "FAIL")


HEADER = ("measure", "measured", "target", "baseline", "ratio", "result")
RUN_HEADER = "run"


def format_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render_table(rows: Sequence[Row], markdown: bool = False, run_column: bool = False) -> str:
    """The result table: aligned text for a terminal, or a Markdown table
    (with `run_column`, a last column naming each row's run). A row's note
    follows its measured value, in parentheses."""
    header = HEADER + ((RUN_HEADER,) if run_column else ())
    cells = [header] + [(r.name, f"{r.measured} ({r.note})" if r.note else r.measured, r.target, r.baseline,
                         format_ratio(r.ratio), r.verdict) + ((r.run,) if run_column else ()) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells[1:]]
        return "\n".join(lines) + "\n"
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
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


# ------------------------------------------------------------------ row selection (--rows)

# The measures of the table, in its order: numbered rows, then the scale series.
ROWS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "scale")


def parse_rows(text: str | None) -> list[str]:
    """`--rows`: `6,7,8`, ranges (`1-5`), `scale`, `all` (the default) ->
    row ids in table order. Unknown rows are an error, not ignored."""
    if text is None or not text.strip():
        return list(ROWS)
    chosen: set[str] = set()
    for token in (t.strip().lower() for t in text.split(",")):
        if not token:
            continue
        if token == "all":
            chosen.update(ROWS)
            continue
        if "-" in token:
            low, high = (part.strip() for part in token.split("-", 1))
            if not (low.isdigit() and high.isdigit()) or int(low) > int(high):
                raise ValueError(f"bad row range {token!r}")
            numbers = [str(n) for n in range(int(low), int(high) + 1)]
        else:
            numbers = [token]
        for number in numbers:
            if number not in ROWS:
                raise ValueError(f"unknown row {number!r}; the rows are {', '.join(ROWS)}")
            chosen.add(number)
    if not chosen:
        raise ValueError("no rows chosen")
    return [r for r in ROWS if r in chosen]


GROUP = re.compile(r"^(?:(\d+)\.|scale: (\d+) clusters)")


def row_group(name: str) -> str:
    """What a table row belongs to, the unit a run replaces: its number
    (`6. reboots ...` -> `6`), or one fleet size of the scale series
    (`scale: 24 clusters, ...` -> `scale: 24`); else the name itself."""
    match = GROUP.match(name)
    if not match:
        return name
    return match.group(1) if match.group(1) else f"scale: {match.group(2)}"


def group_order(group: str) -> tuple[int, int, str]:
    """Sort key of a row group: the numbered rows, then the scale series by size."""
    if group.isdigit():
        return (0, int(group), "")
    if group.startswith("scale: ") and group[7:].isdigit():
        return (1, int(group[7:]), "")
    return (2, 0, group)


# ------------------------------------------------------------------ the multi-architecture rows

GOARCH_TO_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}


def pool_build_keys(release: dict, pools: Sequence[str], pool_arch: dict) -> list[tuple[str, ...]]:
    """The build key each pool of a lab cluster needs, from the lab's own
    records (lab.json): (kernel, GOARCH, DTK digest, OS image digest) of the
    release's stand-ins for the architecture of the pool's nodes; a `-multi`
    release has them per architecture (`platforms`). The modules are the
    same for the whole fleet, so they add nothing to the count."""
    keys = []
    for pool in pools:
        for goarch in pool_arch.get(pool) or ["amd64"]:
            part = release["platforms"][GOARCH_TO_ARCH[goarch]] if release.get("arch") == "multi" else release
            digests = sorted(str(image).rsplit("@", 1)[-1] for image in (part.get("images") or {}).values())
            keys.append((part["kernel"], goarch, *digests))
    return keys


def task_seconds(tasks: Iterable[tuple[str, float]], prefix: str) -> float:
    """Seconds of the profile_tasks entries whose name starts with `prefix`
    (a task run in several batches appears once per batch)."""
    return sum(seconds for name, seconds in tasks if name.startswith(prefix))


def load_summary(samples: Sequence[float]) -> dict[str, float] | None:
    """min / median / max of the 1-minute load averages sampled during a run."""
    if not samples:
        return None
    ordered = sorted(samples)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {"min": ordered[0], "median": median, "max": ordered[-1], "samples": len(ordered)}


# ------------------------------------------------------------------ the generated section of docs/performance.md
#
# A run of some rows (--rows) rewrites only those rows: the other rows of the
# section stay, each with the run that measured it (the `run` column, and one
# line per run: its command, duration, machine and load). So the section is
# read back before it is written: its rows, its runs, its notes.


@dataclasses.dataclass
class Note:
    """A paragraph under the table about some row groups (where the time of
    the fleet run went), from one run."""

    groups: tuple[str, ...]
    run: str
    text: str


@dataclasses.dataclass
class Section:
    runs: dict[str, str]  # label (the run's UTC date) -> what ran, how long, the machine and its load; newest first
    rows: list[Row]
    notes: list[Note] = dataclasses.field(default_factory=list)


FLEET_GROUPS = ("1", "2")  # the groups the "where the time goes" notes are about
RUN_LINE = re.compile(r"^- \*\*(?P<label>.+?) UTC\*\*: (?P<text>.*)$")
OLD_RUN_LINE = re.compile(r"^Run: (?P<what>`.*`) on (?P<label>\d{4}-\d\d-\d\d \d\d:\d\d) UTC, (?P<rest>.*?)\.?$")
OLD_MACHINE_LINE = re.compile(r"^Machine: (?P<text>.*)$")
NOTE_LINE = re.compile(r"^Where the time goes(?: \(run (?P<run>[^)]+)\))?, (?P<text>.*)$")
CELL_SPLIT = re.compile(r"(?<!\\) \| ")
VERDICTS = {"PASS": True, "FAIL": False, "info": None}


def _parse_ratio(cell: str) -> float | None:
    if cell.endswith("x"):
        try:
            return float(cell[:-1])
        except ValueError:
            return None
    return None


def parse_section(text: str) -> Section:
    """Read a generated section back: the current format (a `- **<date>
    UTC**: ...` line per run, a `run` column when there are several), or the
    one before it (one `Run: ... on <date> UTC` line and a `Machine:` line,
    no `run` column)."""
    runs: dict[str, str] = {}
    rows: list[Row] = []
    notes: list[Note] = []
    old_label = None
    for line in text.splitlines():
        line = line.rstrip()
        match = RUN_LINE.match(line)
        if match:
            runs[match.group("label")] = match.group("text")
            continue
        match = OLD_RUN_LINE.match(line)
        if match:
            old_label = match.group("label")
            runs[old_label] = f"{match.group('what')}, {match.group('rest')}."
            continue
        match = OLD_MACHINE_LINE.match(line)
        if match and old_label:
            runs[old_label] += " Machine: " + match.group("text")
            continue
        match = NOTE_LINE.match(line)
        if match:
            notes.append(Note(FLEET_GROUPS, match.group("run") or "", match.group("text")))
            continue
        if line.startswith("| ") and line.endswith(" |") and not line.startswith("| " + HEADER[0] + " |"):
            cells = [c.replace("\\|", "|") for c in CELL_SPLIT.split(line[2:-2])]
            if len(cells) < len(HEADER):
                continue
            rows.append(Row(cells[0], cells[1], cells[2], cells[3], _parse_ratio(cells[4]),
                            VERDICTS.get(cells[5]), run=cells[6] if len(cells) > len(HEADER) else ""))
    default = next(iter(runs), "")
    for item in (*rows, *notes):
        item.run = item.run or default
    return Section(runs, rows, notes)


def merge_sections(new: Section, old: Section | None) -> Section:
    """`new` (this run's rows) over `old` (the section as it was): a row
    group this run measured replaces the old one; every other old row stays,
    with its own run; runs no row or note names any more are dropped."""
    if old is None:
        return new
    replaced = {row_group(r.name) for r in new.rows}
    kept = [r for r in old.rows if row_group(r.name) not in replaced]
    rows = sorted([*new.rows, *kept], key=lambda r: group_order(row_group(r.name)))
    notes = [*new.notes, *(n for n in old.notes if not set(n.groups) & replaced)]
    used = {r.run for r in rows} | {n.run for n in notes}
    runs = dict(new.runs)
    runs.update((label, text) for label, text in old.runs.items() if label in used and label not in runs)
    return Section(dict(sorted(runs.items(), reverse=True)), rows, notes)


def render_section(section: Section, begin: str, end: str) -> str:
    """The generated section, between the `begin` and `end` markers."""
    several = len(section.runs) > 1
    lines = [begin, ""]
    if several:
        lines += ["Rows come from several runs: the `run` column names the run that measured each row (a run of "
                  "some rows, `--rows`, keeps the other rows' last results). Ratios are within one run.", ""]
    lines += [render_table(section.rows, markdown=True, run_column=several), "Runs:", ""]
    lines += [f"- **{label} UTC**: {text}" for label, text in section.runs.items()]
    lines.append("")
    for note in section.notes:
        lines += [f"Where the time goes{f' (run {note.run})' if several else ''}, {note.text}", ""]
    lines += ["Raw numbers: `results.json` in the work directory of each run.", "", end]
    return "\n".join(lines) + "\n"


def boot_summary(verdicts: Sequence[dict]) -> dict:
    """One image's boot tests (image_boot_test results): ok when every one
    booted and loaded its modules; duration the mean of the qemu times."""
    durations = [float(v["duration"]) for v in verdicts if v.get("duration") is not None]
    tasks = [float(v["task_seconds"]) for v in verdicts if v.get("task_seconds") is not None]
    first = verdicts[0] if verdicts else {}
    return {"ok": bool(verdicts) and all(bool(v.get("ok")) for v in verdicts),
            "duration": sum(durations) / len(durations) if durations else None, "durations": durations,
            "task_seconds": sum(tasks) / len(tasks) if tasks else None, "boots": len(verdicts),
            "accelerator": first.get("accelerator"), "kernel": first.get("kernel"), "loaded": first.get("loaded")}
