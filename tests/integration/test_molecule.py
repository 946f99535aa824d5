"""The molecule scenario extensions/molecule/pipeline, run by real molecule.

`molecule test -s pipeline` brings up a lab of its own (2 clusters on 2
releases, 1 worker each, fast nodes; state <ephemeral dir>/lab, port base the
test lab's + 8000: 24000 by default), runs the roles resolve, build, publish,
rollout and verify through playbooks/site.yml (the boot test gate off: fast
nodes), runs them again (molecule's idempotence step: nothing may change),
checks the clusters from their API servers (verify.yml) and brings the lab
down. It does not use the session `lab` fixture.

The ephemeral directory is given to molecule (MOLECULE_EPHEMERAL_DIRECTORY), so
the test knows the lab's state path and checks that no lab process is left.
The run goes on in the background while the session's other tests run
(kmodlab.pytest_plugin.BackgroundRun); the test waits for it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from kmodlab import pytest_plugin

CHECKOUT = Path(__file__).resolve().parents[2]
VENV_BIN = CHECKOUT / ".venv" / "bin"
# The scenario's lab ports: 24000 next to the default test lab (16000), and
# as far from the test lab's of a session given KMODLAB_TEST_PORT_BASE.
PORT_BASE = pytest_plugin.TEST_PORT_BASE + 8000

pytestmark = pytest.mark.lab


def lab_processes(state: Path) -> str:
    found = subprocess.run(["pgrep", "-af", str(state)], capture_output=True, text=True, check=False)
    return found.stdout.strip()


def _molecule_env(ephemeral: Path, environ: dict[str, str]) -> dict[str, str]:
    return dict(
        environ,
        # What hack/env.sh sets up.
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=f"{CHECKOUT / '.build' / 'collections'}{os.pathsep}{CHECKOUT / 'tests'}",
        ANSIBLE_COLLECTIONS_PATH=str(CHECKOUT / ".build" / "collections"),
        MOLECULE_EPHEMERAL_DIRECTORY=str(ephemeral),
        KMODLAB_MOLECULE_PORT_BASE=str(PORT_BASE),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        NO_COLOR="1",
        PY_COLORS="0",
    )


def _molecule_command(work: Path, environ: dict[str, str]) -> tuple[list[str], dict[str, str], Path]:
    env = _molecule_env(work / "molecule-pipeline", environ)
    return [str(VENV_BIN / "molecule"), "test", "-s", "pipeline"], env, CHECKOUT


def _lab_down(work: Path) -> None:
    """Leave nothing behind, even when molecule's destroy did not run."""
    state = work / "molecule-pipeline" / "lab"
    if lab_processes(state):
        subprocess.run([str(VENV_BIN / "python"), "-m", "kmodlab", "down"],
                       env=dict(_molecule_env(work / "molecule-pipeline", dict(os.environ)), KMODLAB_STATE=str(state),
                                KMODLAB_PORT_BASE=str(PORT_BASE)),
                       capture_output=True, text=True, timeout=300, check=False)


# Its own lab, its own ports: `molecule test` runs in the background while the
# session's other tests run (kmodlab.pytest_plugin.BackgroundRun).
MOLECULE = pytest_plugin.BackgroundRun("molecule", _molecule_command, timeout=1800,
                                       cleanup=lambda: _lab_down(MOLECULE.workdir) if MOLECULE.workdir else None)


def test_molecule_pipeline_scenario(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = MOLECULE.result(tmp_path_factory)
    assert MOLECULE.workdir is not None
    state = MOLECULE.workdir / "molecule-pipeline" / "lab"
    left = lab_processes(state)
    if left:
        _lab_down(MOLECULE.workdir)
    output = re.sub(r"\x1b\[[0-9;]*m", "", run.stdout + run.stderr)
    assert run.returncode == 0, output[-8000:]
    assert re.search(r"pipeline (?:➜|>) idempotence: Executed: Successful", output), output[-8000:]
    assert re.search(r"pipeline (?:➜|>) verify: Executed: Successful", output), output[-8000:]
    # The roles ran on both lab clusters (the lab's inventory), in converge and again in idempotence.
    recaps = re.findall(r"^\W*(lab-[ab])\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0", output, re.M)
    assert {host for host, _changed in recaps} == {"lab-a", "lab-b"}, output[-8000:]
    assert not left, f"lab processes left after molecule test:\n{left}"
    assert not lab_processes(state)
