"""The boot test gate (ocp.kmod_layering.image_boot_test) on lab images built
with the product's Containerfile and pushed to the lab registry: the image's
own kernel boots in qemu (the product's _qemu_boot; lab nodes boot their own
way, kmodlab.nodeboot) and modprobes every module.

Three images, three boots in all (one each; the rerun is served from the
verdict cache): kmodlab_core + kmodlab_dep pass; kmodlab_panic with
panic_on_load=1 (modprobe.d) panics the kernel, and the panic is in the
console tail; kmodlab_noload (init returns -ENODEV) fails naming the module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kmodlab import layered, state

TOP = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.lab, pytest.mark.qemu]

PLAY = """\
- name: Boot-test images
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Boot test
      ocp.kmod_layering.image_boot_test:
        image: "{{ item.image }}"
        modules: "{{ item.modules }}"
        auth_file: "{{ auth_file }}"
        ca_path: "{{ ca_path }}"
        results_dir: "{{ results_dir }}"
        boot_timeout: 240
      loop: "{{ images }}"
      ignore_errors: true
"""


def boot_tests(tmp: Path, lab: state.LabState, images: list[dict[str, Any]], *args: str) -> list[dict[str, Any]]:
    play = tmp / "boot.yml"
    play.write_text(PLAY)
    extra = {"images": images, "auth_file": lab.registry["auth_file"], "ca_path": str(lab.ca_file),
             "results_dir": str(tmp / "boot-tests")}
    proc = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", str(play), "-e", json.dumps(extra), *args],
        cwd=TOP, capture_output=True, text=True, timeout=900, check=False,
        env=dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                 ANSIBLE_PYTHON_INTERPRETER=sys.executable))
    try:
        doc, _end = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{"):])
    except ValueError as exc:
        raise AssertionError(f"no JSON from ansible-playbook ({exc}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    (task,) = [t for play_ in doc["plays"] for t in play_["tasks"] if t["task"]["name"] == "Boot test"]
    return task["hosts"]["localhost"]["results"]


@pytest.fixture(scope="module")
def verdicts(lab: state.LabState, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    release = lab.releases[0]["version"]
    tmp = tmp_path_factory.mktemp("boot-test")
    images = [
        {"image": layered.build_layered_image(lab, release, ["kmodlab_core", "kmodlab_dep"]),
         "modules": ["kmodlab_core", "kmodlab_dep"]},
        {"image": layered.build_layered_image(
            lab, release, [layered.fixture("kmodlab_panic", options="panic_on_load=1")]),
         "modules": ["kmodlab_panic"]},
        {"image": layered.build_layered_image(lab, release, ["kmodlab_noload"]), "modules": ["kmodlab_noload"]},
    ]
    first = boot_tests(tmp, lab, images)
    # Again: the passing image from the cache; the failing ones are not kept,
    # so check mode (which never boots) shows what a rerun would not redo.
    again = boot_tests(tmp, lab, images, "--check")
    return {"tmp": tmp, "images": images, "first": first, "again": again, "kernel": lab.releases[0]["kernel"]}


def test_a_good_image_boots_and_loads_every_module(verdicts: dict[str, Any]) -> None:
    ok = verdicts["first"][0]
    assert ok["ok"] is True and ok.get("failed") is not True, ok.get("msg")
    assert ok["booted"] is True and ok["cached"] is False
    assert ok["kernel"] == verdicts["kernel"]
    assert {"kmodlab_core", "kmodlab_dep"} <= set(ok["loaded"])
    assert ok["digest"] == verdicts["images"][0]["image"].split("@")[1]
    assert ok["tools"]["modprobe"].startswith("image:")
    print(f"\nboot test: {ok['duration']:.1f}s in qemu, {ok['layers']} layers, {ok['files_unpacked']} files "
          f"unpacked, {ok['bytes_fetched']} bytes fetched")


def test_a_passing_verdict_is_cached_by_digest(verdicts: dict[str, Any]) -> None:
    cached = verdicts["again"][0]
    assert cached["ok"] is True and cached["cached"] is True and cached["booted"] is False
    assert cached["bytes_fetched"] == 0
    assert cached["msg"].endswith("(cached verdict)")
    for failing in verdicts["again"][1:]:
        assert failing["cached"] is False and failing["booted"] is False


def test_a_kernel_panic_stops_with_the_panic_in_the_console(verdicts: dict[str, Any]) -> None:
    panic = verdicts["first"][1]
    assert panic["failed"] is True and panic["ok"] is False and panic["panic"] is True
    image = verdicts["images"][1]["image"]
    assert panic["msg"].startswith(f"Boot test of {image}: the kernel panicked (kernel panic: Kernel panic - "
                                   "not syncing: kmodlab_panic: panic_on_load=1")
    assert "Kernel panic - not syncing: kmodlab_panic: panic_on_load=1, panicking as asked" in panic["console_tail"]
    assert Path(panic["console_log"]).read_text().count("Kernel panic") >= 1
    assert not Path(panic["console_log"].replace(".console.log", ".json")).exists()


def test_a_module_that_does_not_load_is_named(verdicts: dict[str, Any]) -> None:
    noload = verdicts["first"][2]
    assert noload["failed"] is True and noload["ok"] is False and noload["panic"] is False
    image = verdicts["images"][2]["image"]
    assert noload["msg"].startswith(f"Boot test of {image}: module kmodlab_noload did not load (module "
                                    "kmodlab_noload not loaded (modprobe exit 1): ")
    assert "No such device" in noload["msg"]
    assert "kmodlab_noload" not in noload["loaded"]
    assert "KMOD_LAYERING:LOAD kmodlab_noload 1" in noload["console_tail"]
