"""Module signing in the build (playbooks/build.yml: resolve -> build -> publish)
with real podman builds, the lab DTK's own scripts/sign-file and the lab registry.

The oracle is outside the roles: the pushed image's layers are fetched with
skopeo and unpacked here, each .ko is read by the host's kmod `modinfo` and
its appended PKCS#7 verified with `openssl cms` by this file's own code; the
fingerprints come from `openssl x509`. The signing keys are made here.

- signed with key 1 (a file, at -vvv with a log file): every module carries
  the certificate's signer, serial and hash and verifies against it; the
  image's labels name the certificate; the key's bytes are in no layer of the
  pushed image, no file podman's storage or the build context got during the
  build, and no line of the output or the log.
- key 2 from the environment (the AWX credential's way): another build key
  (a new image), signed by key 2; the key's temporary file is gone.
- a key that is not the certificate's: refused before anything is built.
- module_signature_check on an unsigned image: fails naming the module.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from kmodlab.layered import FIXTURE_KMODS
from kmodlab.state import LabState

pytestmark = pytest.mark.lab

CHECKOUT = Path(__file__).resolve().parents[2]
MAGIC = b"~Module signature appended~\n"
DUMP_PLAY = """
- name: Dump what the roles decided
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Write the facts of every cluster
      ansible.builtin.copy:
        content: "{{ {'kmod_build': kmod_build, 'kmod_image': kmod_image} | to_nice_json }}"
        dest: "{{ dump_file }}"
        mode: "0600"
      delegate_to: localhost
      run_once: true
      changed_when: false  # the test's own bookkeeping
"""


def make_key(directory: Path, name: str) -> dict[str, Any]:
    """An RSA key and a self-signed code-signing certificate (the shape sign-file and a MOK take)."""
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
         "-subj", f"/CN=kmod-layering test {name}", "-keyout", str(key), "-out", str(cert),
         "-addext", "basicConstraints=critical,CA:FALSE", "-addext", "keyUsage=digitalSignature",
         "-addext", "extendedKeyUsage=codeSigning", "-addext", "subjectKeyIdentifier=hash"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    fingerprint = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
                                 check=True, capture_output=True, text=True).stdout
    serial = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-serial"],
                            check=True, capture_output=True, text=True).stdout
    text = key.read_text()
    body = [line for line in text.splitlines() if line and not line.startswith("-----")]
    return {"key": key, "cert": cert, "cn": f"kmod-layering test {name}",
            "sha256": fingerprint.split("=", 1)[1].strip().replace(":", "").lower(),
            "serial": serial.split("=", 1)[1].strip().upper(), "key_lines": body,
            "key_der": subprocess.run(["openssl", "pkey", "-in", str(key), "-outform", "DER"], check=True,
                                      capture_output=True).stdout}


class Builds:
    def __init__(self, lab: LabState, work: Path) -> None:
        self.lab = lab
        self.work = work
        self.repository = f"{lab.registry['host']}/kmodtest/signing-{uuid.uuid4().hex[:8]}"
        self.wrapper = work / "build_and_dump.yml"
        self.wrapper.write_text(yaml.safe_dump([{"import_playbook": str(CHECKOUT / "playbooks" / "build.yml")}])
                                + DUMP_PLAY)

    def run(self, name: str, fleet_vars: dict[str, Any], *extra: str,
            env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]:
        first = self.lab.clusters[0]
        inventory = {"all": {"vars": {
            "kmod_registry_auth_file": str(self.lab.registry["auth_file"]),
            "kmod_registry_ca_file": str(self.lab.ca_file),
            "kmod_image_repository": self.repository,
            "kmod_cache_dir": str(self.work / "cache"),
            "kmod_modules": [{"name": "kmodlab_core", "source": {"path": str(FIXTURE_KMODS / "kmodlab_core")}},
                             {"name": "kmodlab_dep", "source": {"path": str(FIXTURE_KMODS / "kmodlab_dep")}}],
            "kmod_boot_test": False,  # the Secure Boot boot test has tests of its own
            **fleet_vars,
        }, "hosts": {first["name"]: {"ansible_connection": "local", "kmod_kubeconfig": first["kubeconfig"]}}}}
        path = self.work / f"{name}-inventory.yml"
        path.write_text(yaml.safe_dump(inventory))
        dump, log = self.work / f"{name}-facts.json", self.work / f"{name}-ansible.log"
        environ = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_PYTHON_INTERPRETER=sys.executable,
                       ANSIBLE_LOG_PATH=str(log), **(env or {}))
        proc = subprocess.run(
            ["ansible-playbook", "-i", str(path), str(self.wrapper), "-e", f"dump_file={dump}", *extra],
            env=environ, cwd=CHECKOUT, capture_output=True, text=True, timeout=1500, check=False,
        )  # fmt: skip
        (self.work / f"{name}.out").write_text(proc.stdout + proc.stderr)
        facts = json.loads(dump.read_text()) if dump.exists() else {}
        return proc, facts, log


def skopeo(lab: LabState, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["skopeo", *args[:1], "--authfile", str(lab.registry["auth_file"]),
                           "--cert-dir", str(Path(lab.ca_file).parent), *args[1:]],
                          check=True, capture_output=True, timeout=300)


def pushed_layers(lab: LabState, image: str, dest: Path) -> list[bytes]:
    """Every layer of the pushed image, uncompressed."""
    subprocess.run(["skopeo", "copy", "--src-authfile", str(lab.registry["auth_file"]),
                    "--src-cert-dir", str(Path(lab.ca_file).parent), f"docker://{image}", f"dir:{dest}"],
                   check=True, capture_output=True, timeout=300)
    manifest = json.loads((dest / "manifest.json").read_text())
    layers = []
    for layer in manifest["layers"]:
        blob = (dest / layer["digest"].split(":", 1)[1]).read_bytes()
        layers.append(gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob)
    return layers


def modules_of(layers: list[bytes]) -> dict[str, bytes]:
    """The .ko files under usr/lib/modules/*/extra/ of the image (last layer wins)."""
    found: dict[str, bytes] = {}
    for layer in layers:
        with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
            for member in tar.getmembers():
                if member.isfile() and "/extra/" in member.name and member.name.endswith(".ko"):
                    found[Path(member.name).name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    return found


def modinfo(path: Path, field: str) -> str:
    tool = "/usr/sbin/modinfo" if os.path.exists("/usr/sbin/modinfo") else "/sbin/modinfo"
    return subprocess.run([tool, "-F", field, str(path)], check=True, capture_output=True, text=True).stdout.strip()


def verifies(data: bytes, cert: Path, work: Path) -> bool:
    """The module's appended PKCS#7 (include/linux/module_signature.h) checked by openssl."""
    assert data.endswith(MAGIC)
    sig_len = struct.unpack(">I", data[-len(MAGIC) - 4:-len(MAGIC)])[0]
    end = len(data) - len(MAGIC) - 12
    (work / "content").write_bytes(data[:end - sig_len])
    (work / "sig.p7").write_bytes(data[end - sig_len:end])
    return subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(work / "sig.p7"),
         "-content", str(work / "content"), "-certfile", str(cert), "-nointern", "-noverify", "-out", os.devnull],
        capture_output=True, check=False).returncode == 0  # fmt: skip


def labels(lab: LabState, image: str) -> dict[str, str]:
    return dict(json.loads(skopeo(lab, "inspect", f"docker://{image}").stdout).get("Labels") or {})


def files_newer_than(marker: Path, roots: list[Path]) -> Iterator[Path]:
    for root in roots:
        proc = subprocess.run(["find", str(root), "-xdev", "-type", "f", "-newer", str(marker), "-size", "-64M"],
                              capture_output=True, text=True, check=False)
        yield from (Path(p) for p in proc.stdout.splitlines())


def leaks(key: dict[str, Any], paths: Iterator[Path]) -> list[str]:
    found = []
    needles = [line.encode() for line in key["key_lines"][1:-1]] + [key["key_der"][32:96]]
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if any(needle in data for needle in needles):
            found.append(str(path))
    return found


@pytest.fixture(scope="module")
def signing(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("signing")
    builds = Builds(lab, work)
    keys = {name: make_key(work, name) for name in ("one", "two")}
    storage = Path(subprocess.run(["podman", "info", "--format", "{{.Store.GraphRoot}}"], check=True,
                                  capture_output=True, text=True).stdout.strip())
    marker = work / "marker"
    marker.write_text("")
    time.sleep(1.1)  # find -newer compares whole seconds on some filesystems
    started = time.monotonic()
    one = builds.run("one", {"kmod_signing_key_file": str(keys["one"]["key"]),
                             "kmod_signing_cert_file": str(keys["one"]["cert"])}, "-vvv")
    one_seconds = time.monotonic() - started
    cache_files = list(files_newer_than(marker, [storage, work / "cache"]))
    tmp_before = set(Path(tempfile.gettempdir()).glob("*.kmod-signing"))
    environment = {"KMOD_SIGNING_KEY": keys["two"]["key"].read_text(),
                   "KMOD_SIGNING_CERT": keys["two"]["cert"].read_text()}
    two = builds.run("two", {"kmod_signing": True}, env=environment)
    tmp_after = set(Path(tempfile.gettempdir()).glob("*.kmod-signing"))
    return {"builds": builds, "keys": keys, "one": one, "two": two, "cache_files": cache_files,
            "tmp_left": tmp_after - tmp_before, "work": work, "one_seconds": one_seconds}


def test_every_module_is_signed_with_the_fleet_key_and_verifies(lab: LabState, signing: dict[str, Any]) -> None:
    proc, facts, _log = signing["one"]
    assert proc.returncode == 0, proc.stdout[-5000:]
    key = signing["keys"]["one"]
    image = facts["kmod_image"]
    work = signing["work"] / "one-image"
    work.mkdir()
    kos = modules_of(pushed_layers(lab, image, work / "dir"))
    assert sorted(kos) == ["kmodlab_core.ko", "kmodlab_dep.ko"]
    for name, data in kos.items():
        path = work / name
        path.write_bytes(data)
        assert modinfo(path, "signer") == key["cn"], name
        # openssl prints the serial with a leading 00 when its top bit is set; kmod without.
        assert modinfo(path, "sig_key").replace(":", "").lstrip("0") == key["serial"].lstrip("0"), name
        assert modinfo(path, "sig_hashalgo") == "sha256", name
        assert verifies(data, key["cert"], work), name
        assert not verifies(data, signing["keys"]["two"]["cert"], work), name
    found = labels(lab, image)
    assert found["io.kmod-layering.signing-cert-sha256"] == key["sha256"]
    assert found["io.kmod-layering.signing-hash"] == "sha256"
    assert facts["kmod_build"]["signing"]["cert_sha256"] == key["sha256"]


def test_the_key_is_in_no_layer_no_cache_file_and_no_log(lab: LabState, signing: dict[str, Any]) -> None:
    proc, facts, log = signing["one"]
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert "module_args" in proc.stdout  # really -vvv
    key = signing["keys"]["one"]
    layers = pushed_layers(lab, facts["kmod_image"], signing["work"] / "one-scan")
    needles = [line.encode() for line in key["key_lines"]] + [key["key_der"][32:96]]
    assert [i for i, layer in enumerate(layers) for n in needles if n in layer] == []
    # Every file podman's storage or the build context got during the build.
    assert len(signing["cache_files"]) > 10  # the build did write layers there
    assert leaks(key, iter(signing["cache_files"])) == []
    for text in (proc.stdout, proc.stderr, log.read_text()):
        assert [line for line in key["key_lines"] if line in text] == []


def test_a_new_key_from_the_environment_is_a_new_image_signed_by_it(lab: LabState, signing: dict[str, Any]) -> None:
    (_p1, one, _l1), (proc, two, _l2) = signing["one"], signing["two"]
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert two["kmod_build"]["build_key"] != one["kmod_build"]["build_key"]
    assert two["kmod_build"]["built"] is True
    assert two["kmod_image"] != one["kmod_image"]
    work = signing["work"] / "two-image"
    work.mkdir()
    for name, data in modules_of(pushed_layers(lab, two["kmod_image"], work / "dir")).items():
        (work / name).write_bytes(data)
        assert modinfo(work / name, "signer") == signing["keys"]["two"]["cn"], name
        assert verifies(data, signing["keys"]["two"]["cert"], work), name
    assert labels(lab, two["kmod_image"])["io.kmod-layering.signing-cert-sha256"] == signing["keys"]["two"]["sha256"]
    assert signing["tmp_left"] == set()  # the key's temporary copy was removed


def test_a_key_that_is_not_the_certificates_is_refused_before_any_build(lab: LabState, signing: dict[str, Any]) -> None:
    keys = signing["keys"]
    proc, facts, _log = signing["builds"].run("mismatch", {"kmod_signing_key_file": str(keys["one"]["key"]),
                                                           "kmod_signing_cert_file": str(keys["two"]["cert"])})
    assert proc.returncode != 0
    assert "is not the key of certificate kmod-layering test two" in proc.stdout, proc.stdout[-3000:]
    assert lab.clusters[0]["name"] in proc.stdout
    assert "Build the images" not in proc.stdout and facts == {}


def check_signatures(image: str, kernel: str, signing_facts: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    args = {"image": image, "kernel_version": kernel, "modules": ["kmodlab_core", "kmodlab_dep"],
            "signing": signing_facts}
    return subprocess.run(["ansible", "localhost", "-m", "ocp.kmod_layering.module_signature_check",
                           "-a", json.dumps(args)], capture_output=True, text=True, check=False, cwd=CHECKOUT,
                          env=dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR="1"))


def test_signature_check_names_the_module_signed_by_another_key_or_unsigned(
    lab: LabState, signing: dict[str, Any]
) -> None:
    _proc, facts, _log = signing["one"]
    build, two = facts["kmod_build"], signing["keys"]["two"]
    # The publish role prunes the local copy after the push: take it back.
    image = f"localhost/kmodtest/signed-{uuid.uuid4().hex[:8]}:latest"
    subprocess.run(["podman", "pull", "--authfile", str(lab.registry["auth_file"]), "--cert-dir",
                    str(Path(lab.ca_file).parent), facts["kmod_image"]], check=True, capture_output=True, timeout=600)
    subprocess.run(["podman", "tag", facts["kmod_image"], image], check=True, capture_output=True)
    try:
        unsigned_check(lab, signing, facts, build, two, image)
    finally:
        subprocess.run(["podman", "rmi", "--ignore", image, facts["kmod_image"]], capture_output=True, check=False)


def unsigned_check(lab: LabState, signing: dict[str, Any], facts: dict[str, Any], build: dict[str, Any],
                   two: dict[str, Any], image: str) -> None:
    passes = check_signatures(image, build["kernel_version"], build["signing"])
    assert passes.returncode == 0, passes.stdout[-3000:]
    # The same image judged against certificate two.
    other = dict(build["signing"], certificate_pem=two["cert"].read_text(), signer=two["cn"])
    proc = check_signatures(image, build["kernel_version"], other)
    assert proc.returncode != 0
    assert f"module kmodlab_core is signed by '{two['cn'].replace('two', 'one')}', not by '{two['cn']}'" in proc.stdout
    assert "module kmodlab_dep" in proc.stdout and "does not verify against certificate" in proc.stdout
    # An image whose kmodlab_dep lost its signature (what a step after the
    # signing must not do): made here, from the signed module's own bytes.
    work = signing["work"] / "unsigned"
    work.mkdir()
    data = modules_of(pushed_layers(lab, facts["kmod_image"], work / "dir"))["kmodlab_dep.ko"]
    sig_len = struct.unpack(">I", data[-len(MAGIC) - 4:-len(MAGIC)])[0]
    (work / "kmodlab_dep.ko").write_bytes(data[:len(data) - len(MAGIC) - 12 - sig_len])
    (work / "Containerfile").write_text(
        f"FROM {image}\nCOPY kmodlab_dep.ko /usr/lib/modules/{build['kernel_version']}/extra/kmodlab_dep.ko\n")
    unsigned = f"localhost/kmodtest/unsigned-{uuid.uuid4().hex[:8]}:latest"
    subprocess.run(["podman", "build", "--isolation", "chroot", "--pull=never", "-t", unsigned, str(work)],
                   check=True, capture_output=True, timeout=600)
    try:
        proc = check_signatures(unsigned, build["kernel_version"], build["signing"])
    finally:
        subprocess.run(["podman", "rmi", "--ignore", unsigned], capture_output=True, check=False)
    assert proc.returncode != 0
    assert "module kmodlab_dep is not signed" in proc.stdout, proc.stdout[-3000:]
    assert "module kmodlab_core" not in proc.stdout.split("was not pushed:", 1)[1].split(". Check", 1)[0]
