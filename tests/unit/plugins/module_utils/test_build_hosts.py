# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""kmod_build_hosts: validation of the mapping, the podman options that reach a
builder, and the verdict on a builder's `podman info` (recorded from a real
podman 4.3.1 service, tests/unit/fixtures/build_hosts/; the integration test
test_remote_builder asks a live one)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _build_hosts

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "build_hosts")
SSH = "ssh://builder@arm-builder.example.com/run/podman/podman.sock"


def info(name="podman-info-amd64.json"):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


class Podman(object):
    """What a podman client answers: one (rc, out, err) per builder URL or
    connection; records each argv it was given."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv):
        self.calls.append(argv)
        target = argv[argv.index("--url") + 1] if "--url" in argv else argv[argv.index("--connection") + 1]
        return self.answers[target]


def test_no_builders_is_an_empty_mapping():
    assert _build_hosts.parse({}) == {}
    assert _build_hosts.parse(None) == {}


def test_a_builder_by_url_or_connection_in_either_spelling_of_the_architecture():
    builders = _build_hosts.parse({"arm64": {"url": SSH, "identity": "/keys/arm"}, "s390x": {"connection": "z"}})
    assert sorted(builders) == ["aarch64", "s390x"]
    assert builders["aarch64"]["name"] == SSH
    assert builders["s390x"]["name"] == "z"
    assert _build_hosts.podman_args(builders["aarch64"]) == ["--url", SSH, "--identity", "/keys/arm"]
    assert _build_hosts.podman_args(builders["s390x"]) == ["--connection", "z"]


@pytest.mark.parametrize("value,message", [
    (["aarch64"], r"kmod_build_hosts must be a mapping of architecture to builder.*got a list"),
    ({"sparc64": {"url": SSH}}, r"kmod_build_hosts: unknown architecture 'sparc64'; one of: x86_64, aarch64"),
    ({"aarch64": {"url": SSH}, "arm64": {"connection": "a"}}, r"names aarch64 twice \(aarch64 and arm64\)"),
    ({"aarch64": SSH}, r"kmod_build_hosts.aarch64 must be a mapping with url .* or connection"),
    ({"aarch64": {}}, r"kmod_build_hosts.aarch64 needs exactly one of url .* or\s+connection"),
    ({"aarch64": {"identity": "/k"}}, r"kmod_build_hosts.aarch64 needs exactly one of url"),
    ({"aarch64": {"url": SSH, "connection": "a"}}, r"needs exactly one of url .*\(got both\)"),
    ({"aarch64": {"url": SSH, "identiy": "/k"}}, r"kmod_build_hosts.aarch64: unknown key\(s\) 'identiy' "
                                                 r"\(known: url, connection, identity\)"),
    ({"aarch64": {"url": "tcp://arm:8888"}}, r"tcp:// podman service, which is neither encrypted nor authenticated"),
    ({"aarch64": {"url": "https://arm/podman"}}, r"url 'https://arm/podman' is not a podman remote URL"),
    ({"aarch64": {"url": "ssh://builder:hunter2@arm/run/podman/podman.sock"}}, r"the url carries a password"),
    ({"aarch64": {"url": "ssh:///run/podman/podman.sock"}}, r"names no host"),
    ({"aarch64": {"connection": "arm", "identity": "/k"}}, r"identity \(an ssh key\) goes with an ssh:// url"),
    ({"aarch64": {"url": "unix:///run/podman/podman.sock", "identity": "/k"}}, r"goes with an ssh:// url"),
    ({"aarch64": {"url": 42}}, r"kmod_build_hosts.aarch64: url must be a string"),
])
def test_a_bad_mapping_is_refused_naming_the_entry_and_the_fix(value, message):
    with pytest.raises(_build_hosts.BuildHostError, match=message):
        _build_hosts.parse(value)


def test_the_password_of_a_refused_url_is_not_in_the_message():
    with pytest.raises(_build_hosts.BuildHostError) as exc:
        _build_hosts.parse({"aarch64": {"url": "ssh://builder:hunter2@arm/run/podman/podman.sock"}})
    assert "hunter2" not in str(exc.value)


def test_clusters_of_a_play_must_agree_on_the_builders():
    same = {"url": SSH}
    _build_hosts.same_everywhere({"a": {"aarch64": same}, "b": {"aarch64": dict(same)}})
    with pytest.raises(_build_hosts.BuildHostError,
                       match=r"kmod_build_hosts differs between the clusters of the play \(a, c; b\).*group_vars/all"):
        _build_hosts.same_everywhere({"a": {}, "b": {"aarch64": same}, "c": {}})


def test_a_builder_of_its_architecture_builds_it_and_the_others_stay_local_or_emulated():
    podman = Podman({"unix:///run/b.sock": (0, info(), "")})
    result = _build_hosts.check({"x86_64": {"url": "unix:///run/b.sock"}}, ["x86_64", "arm64", "s390x"], podman,
                                host_arch="x86_64", per_cluster={"a": {}, "b": {}})
    assert result["builders"]["x86_64"]["builder"] == "unix:///run/b.sock"
    assert result["builders"]["x86_64"]["remote"] is True
    assert result["builders"]["x86_64"]["podman_args"] == ["--url", "unix:///run/b.sock"]
    assert result["builders"]["x86_64"]["podman_version"] == json.loads(info())["version"]["Version"]
    assert result["builders"]["aarch64"] == {"builder": "emulated", "remote": False, "podman_args": []}
    assert result["remote"] == ["x86_64"] and result["emulated"] == ["aarch64", "s390x"]
    assert podman.calls == [["podman", "--url", "unix:///run/b.sock", "info", "--format", "json"]]


def test_only_the_builders_of_the_architectures_to_build_are_asked_but_all_are_validated():
    podman = Podman({})
    result = _build_hosts.check({"aarch64": {"connection": "arm"}}, ["x86_64"], podman, host_arch="x86_64")
    assert podman.calls == []
    assert result["builders"] == {"x86_64": {"builder": "local", "remote": False, "podman_args": []}}
    assert result["configured"] == ["aarch64"]
    with pytest.raises(_build_hosts.BuildHostError, match="unknown architecture"):
        _build_hosts.check({"arm": {"connection": "arm"}}, [], podman, host_arch="x86_64")


def test_a_builder_of_another_architecture_is_refused():
    podman = Podman({"arm": (0, info(), "")})
    with pytest.raises(_build_hosts.BuildHostError) as exc:
        _build_hosts.check({"aarch64": {"connection": "arm"}}, ["aarch64"], podman, host_arch="x86_64")
    text = str(exc.value)
    assert "The builder of aarch64, kmod_build_hosts.aarch64 (arm), is not a host of architecture aarch64" in text
    assert "host.arch amd64 (x86_64), so it would build x86_64 images" in text
    assert text.endswith("Nothing was built or pushed.")


def test_an_unreachable_builder_is_refused_with_podmans_reason_and_what_to_do():
    err = ("Cannot connect to Podman. Please verify your connection to the Linux system using `podman system "
           "connection list`, or try `podman machine init` and `podman machine start` to manage a new Linux VM\n"
           "Error: unable to connect to Podman socket: Get \"http://d/v4.3.1/libpod/_ping\": dial unix "
           "/run/none.sock: connect: no such file or directory\n")
    podman = Podman({"unix:///run/none.sock": (125, "", err), "arm": (124, "", "")})
    with pytest.raises(_build_hosts.BuildHostError) as exc:
        _build_hosts.check({"x86_64": {"url": "unix:///run/none.sock"}, "aarch64": {"connection": "arm"}},
                           ["x86_64", "aarch64"], podman, host_arch="x86_64")
    text = str(exc.value)
    # Both builders, each with its reason.
    assert ("The builder of x86_64, kmod_build_hosts.x86_64 (unix:///run/none.sock), cannot be reached: Error: "
            "unable to connect to Podman socket") in text
    assert "The builder of aarch64, kmod_build_hosts.aarch64 (arm), did not answer in time" in text
    assert "try `podman --url unix:///run/none.sock info`" in text
    assert "Or remove x86_64 from kmod_build_hosts to build on the controller" in text


def test_a_missing_identity_file_is_refused_before_podman_is_asked():
    podman = Podman({})
    with pytest.raises(_build_hosts.BuildHostError, match=r"its identity file /nonexistent/key does not exist"):
        _build_hosts.check({"aarch64": {"url": SSH, "identity": "/nonexistent/key"}}, ["aarch64"], podman,
                           host_arch="x86_64")
    assert podman.calls == []


def test_an_answer_that_is_not_podman_info_is_refused():
    podman = Podman({"arm": (0, "<html>not podman</html>", "")})
    with pytest.raises(_build_hosts.BuildHostError, match=r"no host architecture we know"):
        _build_hosts.check({"aarch64": {"connection": "arm"}}, ["aarch64"], podman, host_arch="x86_64")
