"""local_image_prune on the machine's real podman storage: tiny images built
with `podman build --isolation chroot`, recorded as this collection's or
not, then pruned. The oracle is podman itself (`podman image exists`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from test_resolve_modules import ok, run_module  # the ansible runner of the module tests

NAME = f"localhost/kmod-layering-prune-test-{os.getpid()}"


def build(tmp_path: Path, tag: str) -> str:
    context = tmp_path / tag
    context.mkdir()
    (context / "payload").write_text(tag * 100)
    (context / "Containerfile").write_text("FROM scratch\nCOPY payload /payload\n")
    reference = f"{NAME}:{tag}"
    subprocess.run(["podman", "build", "--isolation", "chroot", "-q", "-t", reference, str(context)],
                   check=True, capture_output=True, text=True)
    return reference


def exists(reference: str) -> bool:
    return subprocess.run(["podman", "image", "exists", reference], check=False).returncode == 0


@pytest.fixture
def images(tmp_path: Path):
    made = {tag: build(tmp_path, tag) for tag in ("old-layered", "old-dtk", "current-dtk", "users-own")}
    yield made
    for reference in made.values():
        subprocess.run(["podman", "rmi", "--ignore", reference], capture_output=True, check=False)


def test_removes_recorded_images_not_kept_and_never_an_unrecorded_one(images, tmp_path: Path) -> None:
    state = tmp_path / "cache" / "local-images.json"
    # An earlier run recorded its layered image and both base images.
    first = ok(run_module("local_image_prune", {
        "state_file": str(state), "prune": False,
        "used": {images["old-layered"]: "layered", images["old-dtk"]: "driver-toolkit",
                 images["current-dtk"]: "driver-toolkit"}}))
    assert not first["changed"] and first["removed"] == []
    assert json.loads(state.read_text())["images"][images["old-dtk"]] == {"kind": "driver-toolkit"}

    # Check mode says what would go and removes nothing.
    keep = [images["current-dtk"]]
    checked = ok(run_module("local_image_prune", {"state_file": str(state), "keep": keep}, check=True))
    assert sorted(r["reference"] for r in checked["removed"]) == sorted([images["old-layered"], images["old-dtk"]])
    assert all(exists(reference) for reference in images.values())

    pruned = ok(run_module("local_image_prune", {"state_file": str(state), "keep": keep}))
    assert pruned["changed"]
    assert sorted(r["reference"] for r in pruned["removed"]) == sorted([images["old-layered"], images["old-dtk"]])
    assert pruned["bytes_freed"] == sum(r["size"] for r in pruned["removed"]) > 0
    assert not exists(images["old-layered"]) and not exists(images["old-dtk"])
    # Kept, and never recorded: both still there.
    assert exists(images["current-dtk"]) and exists(images["users-own"])
    assert pruned["recorded"] == [images["current-dtk"]]

    # Idempotent: nothing left to remove.
    again = ok(run_module("local_image_prune", {"state_file": str(state), "keep": keep}))
    assert not again["changed"] and again["removed"] == []


def test_an_image_removed_by_hand_is_forgotten_without_a_change(images, tmp_path: Path) -> None:
    state = tmp_path / "local-images.json"
    ok(run_module("local_image_prune",
                  {"state_file": str(state), "prune": False, "used": {images["old-dtk"]: "driver-toolkit"}}))
    subprocess.run(["podman", "rmi", images["old-dtk"]], check=True, capture_output=True)
    result = ok(run_module("local_image_prune", {"state_file": str(state)}))
    assert not result["changed"] and result["recorded"] == []
