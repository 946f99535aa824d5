"""The fleet benchmark (make bench) at a tiny scale: its own lab, 2 clusters
on one release (so one build and one push serve both), a 20-second rollout.
Only what does not depend on time is asserted; the timings are the
benchmark's business, not a test's. The boot test gate is off (--extra-vars):
it has tests of its own, and the harness counts builds and pushes, not boots.
Rows 6-10 are left out (--rows): the upgrade, Secure Boot and
multi-architecture rows measure what their e2e tests prove (two --no-cache
builds, an emulated aarch64 build, aarch64 boots: minutes of CPU the suite's
budget has not got, for numbers no test here asserts); their parsing and
table are unit tests (tests/unit/test_bench_*.py).
The run goes on in the background while the session's other tests run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kmodlab import pytest_plugin

pytestmark = pytest.mark.lab

CHECKOUT = Path(__file__).resolve().parents[2]
# A lab of its own next to the test lab (ports clear of its clusters).
STATE = Path(str(pytest_plugin.TEST_STATE) + "-bench-harness")
PORT_BASE = pytest_plugin.TEST_PORT_BASE + 600


def _bench_command(work: Path, environ: dict[str, str]) -> tuple[list[str], dict[str, str], Path]:
    env = dict(environ)
    for name in ("KMODLAB_STATE", "KMODLAB_PORT_BASE"):
        env.pop(name, None)
    argv = [sys.executable, "-m", "bench.run", "--rows", "1-5,scale", "--scale", "2", "--fleet", "2",
            "--releases", "4.12.77",
            "--rollout-workers", "2", "--max-unavailable", "1", "--drain-seconds", "2", "--reboot-seconds", "8",
            "--extra-vars", json.dumps({"kmod_boot_test": False}),
            "--state", str(STATE), "--port-base", str(PORT_BASE), "--workdir", str(work)]  # fmt: skip
    return argv, env, CHECKOUT


def _bench_lab_down() -> None:
    env = dict(os.environ, KMODLAB_STATE=str(STATE), KMODLAB_PORT_BASE=str(PORT_BASE))
    subprocess.run([sys.executable, "-m", "kmodlab", "down"], cwd=CHECKOUT, env=env, capture_output=True,
                   timeout=300, check=False)


# Its own lab, its own ports: it runs in the background while the session's
# other tests run (kmodlab.pytest_plugin.BackgroundRun); `results` waits for it.
BENCH = pytest_plugin.BackgroundRun("bench-harness", _bench_command, timeout=1800, cleanup=_bench_lab_down)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    proc = BENCH.result(tmp_path_factory)
    work = BENCH.workdir
    assert work is not None
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    # The table is printed, one row per measure.
    assert "1. builds, first run" in proc.stdout and "3. waiter API requests" in proc.stdout
    return json.loads((work / "results.json").read_text())


def test_one_build_and_one_push_per_distinct_build_key(results: dict) -> None:
    (fleet,) = results["scale"]
    assert fleet["rc"] == 0 and fleet["clusters"] == 2
    # Both clusters run the same release: one build key, built and pushed once.
    assert fleet["distinct_keys"] == 1
    assert fleet["builds"] == fleet["pushes"] == 1


def test_converged_rerun_changes_builds_pushes_and_writes_nothing(results: dict) -> None:
    rerun = results["rerun"]
    assert rerun["rc"] == 0 and rerun["hosts"] == 2 and rerun["failed"] == 0
    assert (rerun["changed"], rerun["builds"], rerun["pushes"], rerun["api_writes"]) == (0, 0, 0, 0)
    assert rerun["baseline_rc"] == 0


def test_the_waiter_watches_while_the_baseline_polls_the_same_rollout(results: dict) -> None:
    rollout = results["rollout"]
    assert rollout["done_at"] is not None, "the pool never finished the rollout"
    waiter, baseline = rollout["waiter"], rollout["baseline"]
    assert waiter["rc"] == 0 and baseline["rc"] == 0
    assert waiter["returned_at"] is not None and baseline["returned_at"] is not None
    # How many requests polling makes depends on how long the rollout and
    # each k8s_info take (a loaded machine: fewer); a watch does not: a few
    # lists and watches, however long the rollout (the benchmark compares
    # the two on a 3-minute rollout).
    assert 0 < waiter["requests"] <= 10
    assert baseline["requests"] >= 2, "the baseline saw the rollout finished at its first look"


def test_resolve_reads_part_of_the_images_and_a_cached_rerun_no_blob(results: dict) -> None:
    resolve = results["resolve"]
    assert 0 < resolve["fetched"] < resolve["full_images"]
    assert resolve["layers_read"] < resolve["layers_total"]
    assert resolve["cached_blob_bytes"] == 0 and resolve["cached_module_bytes_fetched"] == 0


def test_rows_left_out_are_not_measured(results: dict) -> None:
    assert results["rows"] == ["1", "2", "3", "4", "5", "scale"]
    assert not {"upgrade", "secure_boot", "mixed", "arch"} & results.keys()
    during = results["machine"]["load_during"]
    assert during and during["samples"] >= 1 and during["min"] <= during["median"] <= during["max"]
