# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of _files: whole-file writes on the controller."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _files


def test_write_atomic_makes_the_directory_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "a" / "b" / "report.json"
    _files.write_atomic(str(path), u"{}\n")
    assert path.read_text() == "{}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(os.listdir(str(path.parent))) == ["report.json"]


def test_write_atomic_keeps_the_mode_of_an_existing_file(tmp_path):
    path = tmp_path / "summary.txt"
    path.write_text("old\n")
    path.chmod(0o600)
    _files.write_atomic(str(path), b"new\n", mode=0o644)
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_if_changed_writes_only_a_difference_and_never_in_check_mode(tmp_path):
    path = str(tmp_path / "summary.txt")
    changed, diff = _files.write_if_changed(path, u"one\n", check_mode=True)
    assert changed and diff["before"] == "" and diff["after"] == "one\n"
    assert not os.path.exists(path)
    assert _files.write_if_changed(path, u"one\n")[0] is True
    before = os.stat(path).st_mtime_ns
    assert _files.write_if_changed(path, u"one\n")[0] is False
    assert os.stat(path).st_mtime_ns == before
    changed, diff = _files.write_if_changed(path, u"two\n")
    assert changed and diff["before"] == "one\n" and open(path).read() == "two\n"


def test_write_if_changed_refuses_a_directory(tmp_path):
    with pytest.raises(ValueError, match="not a regular file"):
        _files.write_if_changed(str(tmp_path), u"x")


def test_write_atomic_into_a_directory_another_fork_makes_meanwhile(tmp_path, racing_mkdir):
    # The directory appears between a "does it exist?" and the creation.
    _files.write_atomic(str(tmp_path / "report" / "lab-a.json"), u"{}\n")
    assert (tmp_path / "report" / "lab-a.json").read_text() == "{}\n"
