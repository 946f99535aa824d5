"""The bench's row selection (--rows), the multi-architecture rows (8-10)
and the document's section kept across runs of some rows (pure parts of
tests/bench: metrics and run.table / run.report_markdown)."""

from __future__ import annotations

import pytest

from bench import metrics
from bench.run import DOC_BEGIN, DOC_END, command_line, parse_args, report_markdown, table

MACHINE = {"cores": 2, "cpu": "AMD EPYC", "ram_gib": 23.5, "kernel": "6.18", "os": "Debian 12", "python": "3.11",
           "ansible_core": "2.19", "ansible": "12", "kubernetes_client": "37", "forks": "10"}


def test_rows_are_numbers_ranges_and_scale_in_table_order() -> None:
    assert metrics.parse_rows(None) == list(metrics.ROWS)
    assert metrics.parse_rows("") == list(metrics.ROWS)
    assert metrics.parse_rows("all") == list(metrics.ROWS)
    assert metrics.parse_rows("8,6,7") == ["6", "7", "8"]
    assert metrics.parse_rows("1-3, scale,10") == ["1", "2", "3", "10", "scale"]
    assert metrics.parse_rows("SCALE") == ["scale"]
    for bad in ("11", "0", "3-1", "a-b", "x", ","):
        with pytest.raises(ValueError):
            metrics.parse_rows(bad)


def test_rollout_rows_bring_the_fleet_they_need_and_mixed_is_checked(capsys: pytest.CaptureFixture) -> None:
    assert parse_args(["--rows", "6,7,8"]).rows == ["6", "7", "8"]
    # Rows 3 and 5 roll out the image of rows 1-2's fleet.
    assert parse_args(["--rows", "5"]).rows == ["1", "2", "5"]
    assert parse_args([]).rows == list(metrics.ROWS)
    assert parse_args([]).mixed == [4, 2, 2]
    assert parse_args(["--mixed", "1,0,1"]).mixed == [1, 0, 1]
    for bad in (["--rows", "12"], ["--mixed", "1,2"], ["--mixed", "0,0,0"], ["--mixed", "a,b,c"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
    capsys.readouterr()


def test_row_groups_are_what_a_run_replaces() -> None:
    assert metrics.row_group("6. reboots per node per upgrade (4.12.77, 4.16.30 -> 4.18.12)") == "6"
    assert metrics.row_group("10. image_boot_test, aarch64 image") == "10"
    assert metrics.row_group("scale: 24 clusters, peak controller PSS") == "scale: 24"
    assert metrics.row_group("something else") == "something else"
    groups = ["scale: 48", "10", "scale: 6", "2", "9", "1"]
    assert sorted(groups, key=metrics.group_order) == ["1", "2", "9", "10", "scale: 6", "scale: 48"]


X86 = {"id": "4.16.30", "arch": "x86_64", "kernel": "6.1.0-55-cloud-amd64",
       "images": {"driver-toolkit": "r/art@sha256:d1", "rhel-coreos": "r/art@sha256:o1"}}
ARM = {"id": "4.16.30-aarch64", "arch": "aarch64", "kernel": "6.1.0-55-cloud-arm64",
       "images": {"driver-toolkit": "r/art@sha256:d2", "rhel-coreos": "r/art@sha256:o2"}}
# A -multi payload: its per-architecture images (same digests, another repository).
MULTI = {"id": "4.16.30-multi", "arch": "multi", "kernel": "6.1.0-55-cloud-amd64", "platforms": {
    "x86_64": {"kernel": "6.1.0-55-cloud-amd64", "images": {"driver-toolkit": "r/comp@sha256:d1",
                                                            "rhel-coreos": "r/comp@sha256:o1"}},
    "aarch64": {"kernel": "6.1.0-55-cloud-arm64", "images": {"driver-toolkit": "r/comp@sha256:d2",
                                                             "rhel-coreos": "r/comp@sha256:o2"}}}}


def test_build_keys_of_each_pool_from_the_lab_records() -> None:
    x86 = metrics.pool_build_keys(X86, ["worker"], {"master": ["amd64"], "worker": ["amd64"]})
    arm = metrics.pool_build_keys(ARM, ["worker"], {"worker": ["arm64"]})
    multi = metrics.pool_build_keys(MULTI, ["worker", "worker-arm64"],
                                    {"master": ["amd64"], "worker": ["amd64"], "worker-arm64": ["arm64"]})
    assert x86 == [("6.1.0-55-cloud-amd64", "amd64", "sha256:d1", "sha256:o1")]
    assert arm == [("6.1.0-55-cloud-arm64", "arm64", "sha256:d2", "sha256:o2")]
    # The multi cluster's pools need the same two images as the single-architecture clusters.
    assert multi == x86 + arm
    assert len({*x86, *arm, *multi}) == 2 and len(x86 + arm + multi) == 4
    # A pool the lab has no architecture for is x86_64 (the lab's default).
    assert metrics.pool_build_keys(X86, ["infra"], {}) == x86


def test_task_seconds_and_load_summary() -> None:
    tasks = [("ocp.kmod_layering.build : Build the images (compile, check vermagic, layer on RHCOS)", 20.5),
             ("ocp.kmod_layering.build : Build the images (compile, check vermagic, layer on RHCOS)", 1.5),
             ("ocp.kmod_layering.build : Write the Containerfiles", 2.0)]
    assert metrics.task_seconds(tasks, "ocp.kmod_layering.build : Build the images") == 22.0
    assert metrics.task_seconds(tasks, "nothing") == 0
    assert metrics.load_summary([]) is None
    assert metrics.load_summary([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0, "samples": 3}
    assert metrics.load_summary([4.0, 1.0, 2.0, 3.0])["median"] == 2.5


def _results(**measured: object) -> dict:
    return {"options": {"fleet": 24, "scale": [6, 24], "note": ""}, "rows": ["8", "9", "10"], "duration": 600.0,
            "machine": {**MACHINE, "date": "2026-12-07 02:40 UTC", "load_before": [5.0, 5.0, 4.0],
                        "load_after": [6.0, 6.0, 5.0], "load_during": {"min": 4.0, "median": 6.0, "max": 9.0}},
            **measured}


MIXED = {"clusters": 12, "cluster_pools": 14, "distinct_keys": 3, "node_mode": "fast",
         "composition": ["x86_64 4.12.77 x4", "x86_64 4.16.30 x4", "aarch64 x2", "multi x2"],
         "builds": 3, "pushes": 3, "pinned_images": 3, "wall": 300.0, "build_seconds": 200.0}
ARCH = {"kernel": {"x86_64": "6.1.0-55-cloud-amd64", "aarch64": "6.1.0-55-cloud-arm64"},
        "build": {"x86_64": [{"build_seconds": 20.0}, {"build_seconds": 30.0}], "aarch64": [{"build_seconds": 250.0}]},
        "boot": {"x86_64": {"ok": True, "duration": 8.0, "task_seconds": 11.0},
                 "aarch64": {"ok": True, "duration": 40.0, "task_seconds": 44.0}}}


def test_multiarch_rows() -> None:
    rows = {r.name.split(" (")[0]: r for r in table(_results(mixed=MIXED, arch=ARCH))}
    builds = rows["8. builds, mixed-arch fleet"]
    assert builds.verdict == "PASS" and builds.ratio == pytest.approx(3 / 14)
    assert "one per cluster-pool" in builds.baseline and "fast nodes" in builds.name
    assert rows["8. pushes, mixed-arch fleet"].verdict == "PASS"
    assert rows["8. images pinned by the fleet's MachineConfigs"].verdict == "PASS"
    # The emulated build against the mean of the native builds before and after it.
    emulated = rows["9. build, aarch64 under qemu-user vs x86_64 native"]
    assert emulated.ratio == 10.0 and emulated.verdict == "info" and emulated.measured == "250 s"
    boot = rows["10. image_boot_test, aarch64 image"]
    assert boot.ratio == 5.0 and boot.verdict == "PASS" and boot.baseline.startswith("8.0 s (x86_64 image")

    more_builds = dict(MIXED, builds=4, pushes=3, pinned_images=4)
    rows = {r.name.split(" (")[0]: r for r in table(_results(mixed=more_builds))}
    assert rows["8. builds, mixed-arch fleet"].verdict == "FAIL"
    assert rows["8. images pinned by the fleet's MachineConfigs"].verdict == "FAIL"
    assert not any(name.startswith(("9.", "10.")) for name in rows)

    failed = dict(ARCH, boot={"x86_64": {"ok": True, "duration": 8.0}, "aarch64": {"ok": False, "duration": 300.0}})
    (row,) = [r for r in table(_results(arch=failed)) if r.name.startswith("10.")]
    assert row.verdict == "FAIL"
    (row,) = [r for r in table(_results(arch=dict(ARCH, boot={"x86_64": {"ok": True, "duration": 8.0},
                                                              "aarch64": {"ok": False}})))
              if r.name.startswith("10.")]
    assert row.verdict == "FAIL"


def test_notes_follow_the_measured_value_and_the_run_column_is_optional() -> None:
    rows = [metrics.Row("4. resolve bytes", "28.3 MiB", "<= 1.2x", "160 MiB", 0.62, True, note="1/9 layers read",
                        run="2026-12-07 02:40")]
    assert metrics.render_table(rows, markdown=True).splitlines()[2] == (
        "| 4. resolve bytes | 28.3 MiB (1/9 layers read) | <= 1.2x | 160 MiB | 0.62x | PASS |")
    with_run = metrics.render_table(rows, markdown=True, run_column=True).splitlines()
    assert with_run[0].endswith("| result | run |") and with_run[2].endswith("| PASS | 2026-12-07 02:40 |")
    assert metrics.render_table(rows).splitlines()[2].split()[-1] == "PASS"


# The section as the 2026-11-24 run wrote it (before runs of some rows).
OLD_SECTION = f"""{DOC_BEGIN}

Run: `python -m bench.run --doc docs/performance.md` on 2026-11-24 09:39 UTC, 24.4 min in all.

| measure | measured | target | baseline | ratio | result |
|---|---|---|---|---|---|
| 1. builds, first run (24 clusters, 3 releases) | 3 | = 3 (distinct keys) | 24 (one per cluster) | 0.12x | PASS |
| 2. rerun wall time (24 clusters) | 7.2 s | <= 1.5x baseline | 17.4 s (1 k8s_info/cluster) | 0.42x | PASS |
| 8. builds, old | 5 | = 3 | 14 | 0.36x | FAIL |
| scale: 6 clusters, first run | 130 s, 21.7 s/cluster | - | - | - | info |
| scale: 24 clusters, first run | 299 s, 12.4 s/cluster | - | - | - | info |
| odd \\| name | x | - | - | - | info |

Machine: 2 cores (AMD EPYC), forks 10. Load average before/after: 0.9 1.2 2.1 / 7.9 10.0 7.4 (the machine is shared).

Where the time goes, 24-cluster first run (profile_tasks, seconds of wall time per role): rollout 113 s (38%).

Raw numbers: `results.json` in the work directory of the run.

{DOC_END}
"""


def test_the_old_section_is_read_back() -> None:
    section = metrics.parse_section(OLD_SECTION)
    assert list(section.runs) == ["2026-11-24 09:39"]
    run = section.runs["2026-11-24 09:39"]
    assert run.startswith("`python -m bench.run --doc docs/performance.md`, 24.4 min in all. Machine: 2 cores")
    assert run.endswith("7.9 10.0 7.4 (the machine is shared).")
    names = [r.name for r in section.rows]
    assert names[0] == "1. builds, first run (24 clusters, 3 releases)" and names[-1] == "odd | name"
    first = section.rows[0]
    assert (first.measured, first.target, first.baseline, first.ratio, first.ok, first.run) == (
        "3", "= 3 (distinct keys)", "24 (one per cluster)", 0.12, True, "2026-11-24 09:39")
    assert section.rows[2].ok is False and section.rows[3].ratio is None and section.rows[3].ok is None
    (note,) = section.notes
    assert note.groups == ("1", "2") and note.run == "2026-11-24 09:39" and note.text.startswith("24-cluster first run")


def test_a_run_of_some_rows_keeps_the_others_with_their_run() -> None:
    results = _results(mixed=MIXED, arch=ARCH, options={"fleet": 24, "scale": [6, 24], "note": "3 others share it."})
    text = report_markdown(results, table(results), "python -m bench.run --rows 8,9,10", previous=OLD_SECTION)
    assert text.startswith(DOC_BEGIN) and text.endswith(DOC_END + "\n")
    section = metrics.parse_section(text)
    assert list(section.runs) == ["2026-12-07 02:40", "2026-11-24 09:39"]
    assert "(rows 8, 9, 10)" in section.runs["2026-12-07 02:40"]
    assert "median 6.0, max 9.0 (the machine is shared). 3 others share it." in section.runs["2026-12-07 02:40"]
    by_name = {r.name: r for r in section.rows}
    # Row 8 of this run replaces the old row 8; the others keep their old run.
    assert "8. builds, old" not in by_name
    assert by_name["1. builds, first run (24 clusters, 3 releases)"].run == "2026-11-24 09:39"
    assert by_name["scale: 24 clusters, first run"].run == "2026-11-24 09:39"
    assert {r.run for r in section.rows if r.name.startswith(("8.", "9.", "10."))} == {"2026-12-07 02:40"}
    groups = [metrics.row_group(r.name) for r in section.rows]
    assert groups == sorted(groups, key=metrics.group_order)
    assert "| result | run |" in text and "Where the time goes (run 2026-11-24 09:39), 24-cluster" in text
    # Written again from the same results: the same section.
    assert report_markdown(results, table(results), "python -m bench.run --rows 8,9,10", previous=text) == text


def test_a_run_that_replaces_every_row_leaves_one_run_and_no_run_column() -> None:
    results = _results(rows=list(metrics.ROWS),
                       scale=[{"clusters": 24, "wall": 240.0, "peak_pss": 1048576, "builds": 3, "pushes": 3,
                               "distinct_keys": 3, "phases": {"build": 3.0}},
                              {"clusters": 6, "wall": 60.0, "peak_pss": 1048576, "builds": 3, "pushes": 3,
                               "distinct_keys": 3, "phases": {}}],
                       mixed=dict(MIXED, builds=3))
    previous = OLD_SECTION.replace("| odd \\| name | x | - | - | - | info |\n", "")
    text = report_markdown(results, table(results), "python -m bench.run --doc docs/performance.md",
                           previous=previous)
    section = metrics.parse_section(text)
    assert "2. rerun wall time (24 clusters)" in {r.name for r in section.rows}  # not measured: kept
    results["rerun"] = {"clusters": 24, "rc": 0, "changed": 0, "builds": 0, "pushes": 0, "api_writes": 0,
                        "wall": 5.0, "baseline_wall": 10.0, "phases": {}}
    text = report_markdown(results, table(results), "python -m bench.run --doc docs/performance.md",
                           previous=previous)
    section = metrics.parse_section(text)
    assert list(section.runs) == ["2026-12-07 02:40"]
    assert "| run |" not in text and "(run " not in text
    assert section.notes[0].text.startswith("24-cluster first run") and section.notes[0].run == "2026-12-07 02:40"


def test_boot_summary_of_several_boots() -> None:
    verdicts = [{"ok": True, "duration": 4.0, "task_seconds": 10.0, "accelerator": "tcg", "kernel": "k", "loaded": ["a"]},
                {"ok": True, "duration": 6.0, "task_seconds": 12.0}]
    summary = metrics.boot_summary(verdicts)
    assert summary["ok"] and summary["duration"] == 5.0 and summary["durations"] == [4.0, 6.0]
    assert summary["task_seconds"] == 11.0 and summary["boots"] == 2 and summary["accelerator"] == "tcg"
    # One failed boot fails the image; a boot that never ran has no duration.
    failed = metrics.boot_summary([verdicts[0], {"ok": False}])
    assert not failed["ok"] and failed["duration"] == 4.0
    assert metrics.boot_summary([]) == {"ok": False, "duration": None, "durations": [], "task_seconds": None,
                                        "boots": 0, "accelerator": None, "kernel": None, "loaded": None}
    arch = dict(ARCH, boot={"x86_64": metrics.boot_summary([{"ok": True, "duration": 8.0}, {"ok": True, "duration": 10.0}]),
                            "aarch64": metrics.boot_summary(verdicts)})
    (row,) = [r for r in table(_results(arch=arch)) if r.name.startswith("10.")]
    assert row.measured == "5.0 s" and row.baseline.startswith("9.0 s") and row.ratio == pytest.approx(5 / 9)
    assert row.note == "qemu time, mean of aarch64 4.0 / 6.0 s; x86_64 8.0 / 10.0 s, alternating"


def test_command_line_leaves_the_note_to_the_run_line() -> None:
    assert command_line(["--rows", "8,9", "--note", "3 others' tests", "--doc", "docs/performance.md"]) == (
        "python -m bench.run --rows 8,9 --doc docs/performance.md")
    assert command_line(["--note=busy", "--extra-vars", '{"a": 1}']) == "python -m bench.run --extra-vars '{\"a\": 1}'"


def test_builds_are_counted_on_the_controller_and_on_remote_builders() -> None:
    from bench.run import builds_in
    out = "\n".join([
        "TASK [ocp.kmod_layering.build : Build the images (compile, check vermagic, layer on RHCOS)] ***",
        "changed: [localhost] => (item=reg/kmods:6.1.0-amd64-1)",
        "skipping: [localhost] => (item=reg/kmods:6.1.0-arm64-2)",
        "TASK [ocp.kmod_layering.build : Build the images (compile, check vermagic, layer on RHCOS) on the remote builders] ***",
        "skipping: [localhost] => (item=reg/kmods:6.1.0-amd64-1)",
        "changed: [localhost] => (item=reg/kmods:6.1.0-arm64-2)",
        "TASK [ocp.kmod_layering.build : Check the architecture of each built image] ***",
        "changed: [localhost] => (item=not a build)",
    ])
    assert builds_in(out) == 2
    assert builds_in("TASK [ocp.kmod_layering.resolve : Resolve] ***\nok: [a]") == 0
