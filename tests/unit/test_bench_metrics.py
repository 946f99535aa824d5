"""The pure parts of the fleet benchmark (tests/bench/metrics.py, run.table)."""

from __future__ import annotations

import pytest

from bench import metrics
from bench.run import pool_done, table, write_doc, DOC_BEGIN, DOC_END


def test_physical_limit_is_waves_times_drain_plus_reboot() -> None:
    assert metrics.physical_limit(6, 2, 20, 40) == 180
    assert metrics.physical_limit(5, 2, 20, 40) == 180  # the last wave is partial, it still takes a whole wave
    assert metrics.physical_limit(3, 1, 1.5, 2.5) == 12
    assert metrics.physical_limit(2, 10, 5, 5) == 10
    assert metrics.physical_limit(0, 1, 5, 5) == 0
    with pytest.raises(ValueError):
        metrics.physical_limit(3, 0, 1, 1)


def test_ratio_and_its_unknowns() -> None:
    assert metrics.ratio(3, 24) == 0.125
    assert metrics.ratio(None, 2) is None
    assert metrics.ratio(2, None) is None
    assert metrics.ratio(2, 0) is None
    assert metrics.format_ratio(0.125) == "0.12x"
    assert metrics.format_ratio(None) == "-"


def test_table_renders_text_and_markdown() -> None:
    rows = [metrics.Row("builds", "3", "= 3", "24", 0.125, True),
            metrics.Row("rerun wall", "40.0 s", "<= 1.5x", "10.0 s", 4.0, False),
            metrics.Row("scale | 6", "60 s", "-", ok=None)]
    text = metrics.render_table(rows).splitlines()
    assert text[0].split() == ["measure", "measured", "target", "baseline", "ratio", "result"]
    assert set(text[1].replace(" ", "")) == {"-"}
    assert text[2].split()[-2:] == ["0.12x", "PASS"]
    assert text[3].split()[-2:] == ["4.00x", "FAIL"]
    assert text[4].split()[-1] == "info"
    # Columns line up: every "ratio" cell starts at the header's column.
    column = text[0].index("ratio")
    assert text[2][column:].startswith("0.12x") and text[3][column:].startswith("4.00x")
    markdown = metrics.render_table(rows, markdown=True).splitlines()
    assert markdown[0] == "| measure | measured | target | baseline | ratio | result |"
    assert markdown[1] == "|---|---|---|---|---|---|"
    assert markdown[4] == "| scale \\| 6 | 60 s | - | - | - | info |"


def test_recap_profile_and_phases() -> None:
    stdout = """
PLAY RECAP *********************************************************************
lab-a                      : ok=65   changed=10   unreachable=0    failed=0    skipped=4    rescued=0    ignored=0
lab-b                      : ok=37   changed=0    unreachable=0    failed=1    skipped=2    rescued=0    ignored=0

TASKS RECAP ********************************************************************
Tuesday 24 November 2026  02:47:49 +0000 (0:00:00.035)       0:02:55.307 ******
===============================================================================
ocp.kmod_layering.build : Build the images (compile, check vermagic, layer on RHCOS) -- 20.54s
ocp.kmod_layering.verify : Read booted image, loaded modules and parameters of every node of pools worker --- 6.26s
ocp.kmod_layering.build : Write the Containerfiles ---------------------- 2.47s
Put the canary cluster in the first wave, the others in the batches ----- 0.18s
"""
    assert metrics.parse_recap(stdout) == {
        "lab-a": {"ok": 65, "changed": 10, "unreachable": 0, "failed": 0, "skipped": 4, "rescued": 0, "ignored": 0},
        "lab-b": {"ok": 37, "changed": 0, "unreachable": 0, "failed": 1, "skipped": 2, "rescued": 0, "ignored": 0},
    }
    tasks = metrics.parse_profile(stdout)
    assert tasks[0] == ("ocp.kmod_layering.build : Build the images (compile, check vermagic, layer on RHCOS)", 20.54)
    assert len(tasks) == 4
    phases = metrics.time_by_phase(tasks)
    assert list(phases) == ["build", "verify", "play"]
    assert phases["build"] == pytest.approx(23.01)


def test_registry_access_log_accounting() -> None:
    text = "\n".join([
        '127.0.0.1 - - [24/Nov/2026:02:45:02 +0000] "GET /v2/ocp/release/manifests/4.12 HTTP/1.1" 200 1000 "" "ocp.kmod_layering.ocp_release_image"',
        '127.0.0.1 - - [24/Nov/2026:02:45:02 +0000] "GET /v2/ocp/release/blobs/sha256:aa HTTP/1.1" 200 621 "" "ocp.kmod_layering.ocp_release_image"',
        '127.0.0.1 - - [24/Nov/2026:02:45:02 +0000] "HEAD /v2/ocp/release/manifests/4.12 HTTP/1.1" 200 1000 "" "ocp.kmod_layering.x"',
        '127.0.0.1 - - [24/Nov/2026:02:45:03 +0000] "GET /v2/ocp/art/blobs/sha256:bb HTTP/1.1" 200 5000 "" "skopeo/1.9"',
        'time="2026-11-24T02:44:36Z" level=info msg="response completed" http.request.method=GET',
        '127.0.0.1 - - [24/Nov/2026:02:46:00 +0000] "PUT /v2/kmod/bench-24/manifests/t1 HTTP/1.1" 201 0 "" "containers/5"',
        '127.0.0.1 - - [24/Nov/2026:02:46:00 +0000] "PUT /v2/kmod/bench-24/manifests/t2 HTTP/1.1" 400 0 "" "containers/5"',
        '127.0.0.1 - - [24/Nov/2026:02:46:00 +0000] "PUT /v2/kmod/bench-6/manifests/t1 HTTP/1.1" 201 - "" "containers/5"',
    ])
    accesses = metrics.parse_access_log(text)
    assert len(accesses) == 7
    assert [a.kind for a in accesses[:4]] == ["manifests", "blobs", "manifests", "blobs"]
    assert accesses[1].digest == "sha256:aa"
    assert metrics.body_bytes(accesses, "ocp.kmod_layering.") == 1621  # HEAD has no body
    assert metrics.body_bytes(accesses, "ocp.kmod_layering.", kind="blobs") == 621
    assert metrics.manifest_puts(accesses, "kmod/bench-24") == 1  # the refused PUT is no push
    assert metrics.manifest_puts(accesses, "kmod/bench-6") == 1


def _pool(sources: list[str], status_name: str, updated: int, count: int = 2, generation: int = 3) -> dict:
    return {"metadata": {"name": "worker", "generation": 3},
            "spec": {"configuration": {"name": "rendered-new", "source": [{"name": s} for s in sources]}},
            "status": {"configuration": {"name": status_name}, "observedGeneration": generation,
                       "machineCount": count, "updatedMachineCount": updated, "readyMachineCount": updated,
                       "degradedMachineCount": 0, "conditions": [{"type": "Updated", "status": "True"}]}}


def test_pool_done_is_the_new_config_everywhere() -> None:
    ours = "99-worker-kmod-bench-rollout"
    assert pool_done(_pool(["00-worker", ours], "rendered-new", 2))
    assert not pool_done(_pool(["00-worker"], "rendered-new", 2))  # not our MachineConfig
    assert not pool_done(_pool(["00-worker", ours], "rendered-old", 2))  # status still on the old config
    assert not pool_done(_pool(["00-worker", ours], "rendered-new", 1))  # a node still to go
    assert not pool_done(_pool(["00-worker", ours], "rendered-new", 2, generation=2))  # status not caught up


def test_table_from_results_and_doc_section(tmp_path) -> None:
    results = {
        "options": {"fleet": 24},
        "scale": [{"clusters": 24, "wall": 240.0, "peak_pss": 24 * 1048576 * 10, "builds": 3, "pushes": 3,
                   "distinct_keys": 3, "phases": {}}],
        "rerun": {"clusters": 24, "rc": 0, "changed": 0, "builds": 0, "pushes": 0, "api_writes": 0, "wall": 30.0,
                  "baseline_wall": 10.0},
        "rollout": {"limit": 180.0, "phase": 185.0, "workers": 6, "max_unavailable": 2, "drain": 20.0,
                    "reboot": 40.0, "waiter": {"lag": 0.4, "requests": 8},
                    "baseline": {"lag": 3.0, "requests": 40}},
        "resolve": {"release": "4.12.77", "fetched": 1100, "read_set": 1000, "full_images": 100000,
                    "layers_read": 1, "layers_total": 9, "cached_blob_bytes": 0},
    }
    rows = {r.name.split(" (")[0]: r for r in table(results)}
    assert rows["1. builds, first run"].verdict == "PASS" and rows["1. builds, first run"].ratio == 0.125
    assert rows["2. rerun: changed / builds / pushes / API writes"].verdict == "PASS"
    assert rows["2. rerun wall time"].verdict == "FAIL" and rows["2. rerun wall time"].ratio == 3.0
    assert rows["3. waiter returns after pool done"].verdict == "PASS"
    assert rows["3. waiter API requests"].ratio == 0.2 and rows["3. waiter API requests"].verdict == "PASS"
    assert rows["5. rollout phase"].verdict == "PASS"
    assert rows["4. resolve bytes"].ratio == pytest.approx(1.1) and rows["4. resolve bytes"].verdict == "PASS"
    assert rows["scale: 24 clusters, peak controller PSS"].measured == "240.0 MiB, 10.0 MiB/cluster"

    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nHand-written method.\n")
    write_doc(doc, DOC_BEGIN + "\nfirst\n" + DOC_END + "\n")
    write_doc(doc, DOC_BEGIN + "\nsecond\n" + DOC_END + "\n")
    text = doc.read_text()
    assert text.startswith("# Performance\n\nHand-written method.\n")
    assert "second" in text and "first" not in text and text.count(DOC_END) == 1
