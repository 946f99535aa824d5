"""Node agents of a lab cluster: the machine-config-daemon and kubelet of
each Node, through the Kubernetes API only.

Update (when `desiredConfig` != `currentConfig`): state Working -> ask the
MCO's drain controller (`desiredDrain` = drain-<config>, wait for
`lastAppliedDrain`) -> pull the rendered config's osImageURL with the
cluster's pull secret (`openshift-config/pull-secret`) through the
collection's RegistryClient (failure: state Degraded, reason = the registry's
error, node stays on its config) -> unpack the layers (`_rootfs`, cached by
manifest digest, shared by all nodes of the process) -> state Rebooting,
Ready=False -> boot (the lab's own `nodeboot`: qemu boots the image's kernel
and its /init loads modules as systemd-modules-load does; or `fastboot`,
fast mode's vermagic/CRC check) -> kernel did not come back: NotReady + Degraded;
else currentConfig = desired, Done, Ready, uncordon, and the node records
what it booted (image, digest, loaded modules). A module that the kernel
refuses does not fail the update (systemd-modules-load fails, the node
boots): `lsmod` shows it is missing, as on a real node.

Debug pods (`oc debug node/<n> -- chroot /host <cmd>`): a privileged pod
bound to the node with the host's / at /host running `rpm-ostree status
[--json]`, `lsmod`, `cat /proc/modules`, `uname -r`, `mokutil --sb-state`,
`grep -H -s . <files>` (module parameters and taint, lockdown,
sig_enforce, tainted, /proc/keys) or `modinfo <modules>` gets the output in
annotation `kmodlab.io/log` (the lab API serves it as the pod log) and phase
Succeeded; anything else fails as a shell would (exit 127), a pod without the
host mount as chroot does (125). A node never rebooted by the lab has no
module list yet: its `lsmod` shows the header only; its Secure Boot state
is its configuration's and its kernel's keys are read from its OS image
(kmodlab.fastboot.kernel_keyrings).

Architectures: each node has one (`kubernetes.io/arch`, amd64 or arm64).
It pulls its own platform's image from an image index / manifest list (the
lab's own choice, written from the OCI image-index spec: the entry whose
`platform` has its os and architecture, as containers/image chooses; none:
the pull fails); an image whose config names another architecture is
refused before any reboot: the node goes Degraded with the reason and stays
on its config (a real node would deploy a kernel it cannot boot).

Secure Boot nodes (`NodeFleet(secure_boot={node: SecureBootSetup})`) boot
through UEFI Secure Boot with the setup's MOKs (qemu: really, through
kmodlab.secureboot; fast: kmodlab.fastboot decides each module's
signature); a module the kernel refuses is missing, the node boots.
"""

from __future__ import annotations

import base64
import copy
import datetime
import fcntl
import hashlib
import json
import logging
import re
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _registry, _rootfs

from . import mco_rules

from . import fastboot, nodeboot, secureboot
from .mco import ANN_DESIRED_DRAIN, ANN_LAST_APPLIED_DRAIN, MC_API, Api, now

log = logging.getLogger("kmodlab.node")

ANN_LOG = "kmodlab.io/log"
ANN_BOOTED_IMAGE = "kmodlab.io/booted-image"
ANN_BOOTED_DIGEST = "kmodlab.io/booted-digest"
ANN_LOADED = "kmodlab.io/loaded-modules"
ANN_BOOT = "kmodlab.io/boot"  # JSON summary of the last boot test
ANN_REBOOTS = "kmodlab.io/reboots"  # reboots the node agent made (ground truth, kmodlab.groundtruth)
ANN_BOOTED_RELEASE = "kmodlab.io/booted-release"  # the release the booted OS image belongs to
SYS_PARAM = re.compile(r"^/sys/module/([^/]+)/parameters/([^/]+)$")
SYS_TAINT = re.compile(r"^/sys/module/([^/]+)/taint$")
LSMOD_HEADER = "Module                  Size  Used by"
# Files of an OS image the boot test never reads: not unpacked.
SKIPPED_PREFIXES = ("usr/share/", "usr/include/", "usr/src/", "var/", "usr/lib/firmware/", "usr/lib/locale/")
# One boot at a time per cluster process: the machine is shared.
BOOT_SLOTS = threading.Semaphore(1)


def keep_for_boot(path: str) -> bool:
    return not path.startswith(SKIPPED_PREFIXES)


class ArchitectureMismatch(Exception):
    """The image's config names another architecture than the node's."""


def choose_platform(manifests: list[dict[str, Any]], arch: str, os_name: str = "linux") -> dict[str, Any]:
    """The image-index entry for a node of `arch` (GOARCH): its platform's
    os and architecture equal the node's; arm64's variant, if given, must be
    v8 (the only one arm64 nodes run). The first match wins, as in the spec."""
    for entry in manifests:
        plat = entry.get("platform") or {}
        if plat.get("os") != os_name or plat.get("architecture") != arch:
            continue
        if arch == "arm64" and plat.get("variant") not in (None, "", "v8"):
            continue
        return entry
    found = ", ".join(f"{(e.get('platform') or {}).get('os')}/{(e.get('platform') or {}).get('architecture')}"
                      for e in manifests) or "none"
    raise _registry.RegistryError(
        f'no image found in manifest list for architecture "{arch}", OS "{os_name}" (it has {found})')


class ImageStore:
    """Pulled and unpacked OS images, by manifest digest."""

    def __init__(self, root: Path, ca_file: str | None) -> None:
        self.root = root
        self.ca_file = ca_file
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def materialize(self, pullspec: str, auth_config: str | None, arch: str = "amd64") -> tuple[str, str]:
        """(rootfs dir, manifest digest) of `pullspec` for a node of `arch`
        (from an index: that platform's manifest and digest); raises
        `_registry.RegistryError` with the registry's words on failure,
        `ArchitectureMismatch` for another architecture's image."""
        client = _registry.RegistryClient(auth_config=auth_config, ca_path=self.ca_file)
        ref = _registry.parse_pullspec(pullspec)
        manifest = client.get_manifest(ref)
        if manifest.is_index:
            entry = choose_platform(manifest.data.get("manifests") or [], arch)
            manifest = client.get_manifest(ref.with_digest(entry["digest"]))
            if manifest.is_index:
                raise _registry.RegistryError(f"{pullspec}: the {arch} entry of the list is itself a list")
        config = client.get_config(manifest.ref, manifest)
        if (config.get("os") or "linux", config.get("architecture")) != ("linux", arch):
            raise ArchitectureMismatch(
                f"image {pullspec} is for {config.get('os')}/{config.get('architecture')}, "
                f"this node is linux/{arch}")
        digest = manifest.digest
        with self._guard:
            lock = self._locks.setdefault(digest, threading.Lock())
        target = self.root / digest.replace(":", "-")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Threads of this process, then other cluster processes sharing the store.
        with lock, open(f"{target}.lock", "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            done = target / ".complete"
            if not done.exists():
                shutil.rmtree(target, ignore_errors=True)
                rootfs = target / "rootfs"
                rootfs.mkdir(parents=True)
                for layer in manifest.layers:
                    with client.open_blob(manifest.ref, layer["digest"]) as blob:
                        _rootfs.apply_layer(blob, str(rootfs), keep=keep_for_boot)
                done.write_text(pullspec + "\n")
            return str(target / "rootfs"), digest


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def ostree_checksum(digest: str) -> str:
    """A stable stand-in for the ostree commit of an image."""
    return hashlib.sha256(("ostree:" + digest).encode()).hexdigest()


def rhcos_version(release: str, digest: str) -> str:
    """RHCOS-style `416.94.<build stamp>-0`, the stamp stable per image."""
    major, minor = (release.split(".") + ["0"])[:2]
    stamp = int(hashlib.sha256(digest.encode()).hexdigest()[:10], 16) % 10**12
    return f"{major}{minor}.94.{stamp:012d}-0"


def deployment(image: str, digest: str, release: str, booted: bool, timestamp: int) -> dict[str, Any]:
    """One `rpm-ostree status --json` deployment of a container-image host."""
    checksum = ostree_checksum(digest)
    return {
        "id": f"rhcos-{checksum}.0",
        "osname": "rhcos",
        "serial": 0,
        "checksum": checksum,
        "version": rhcos_version(release, digest),
        "timestamp": timestamp,
        "origin": f"ostree-unverified-registry:{image}",
        "container-image-reference": f"ostree-unverified-registry:{image}",
        "container-image-reference-digest": digest,
        "booted": booted,
        "staged": False,
        "pinned": False,
        "unlocked": "none",
        "requested-packages": [],
        "requested-local-packages": [],
        "requested-base-removals": [],
        "requested-base-local-replacements": [],
        "base-removals": [],
        "base-local-replacements": [],
        "layered-commit-meta": {},
        "regenerate-initramfs": False,
        "modules": [],
    }


def rpm_ostree_status(deployments: list[dict[str, Any]]) -> str:
    return (
        json.dumps(
            {
                "deployments": deployments,
                "transaction": None,
                "cached-update": None,
                "update-driver": None,
            },
            indent=2,
        )
        + "\n"
    )


def rpm_ostree_text(deployments: list[dict[str, Any]]) -> str:
    """`rpm-ostree status` (human form) for container-image deployments."""
    lines = ["State: idle", "Deployments:"]
    for index, item in enumerate(deployments):
        stamp = datetime.datetime.fromtimestamp(item["timestamp"], datetime.timezone.utc)
        if index:
            lines.append("")
        lines.append(("* " if item["booted"] else "  ") + item["container-image-reference"])
        lines.append(f"                   Digest: {item['container-image-reference-digest']}")
        lines.append(f"                  Version: {item['version']} ({stamp.strftime('%Y-%m-%dT%H:%M:%SZ')})")
    return "\n".join(lines) + "\n"


def lsmod_output(proc_modules: list[str]) -> str:
    """`lsmod` from /proc/modules lines (name size refcount users state addr)."""
    lines = [LSMOD_HEADER]
    for line in proc_modules:
        fields = line.split()
        if len(fields) < 3:
            continue
        users = fields[3].rstrip(",") if len(fields) > 3 and fields[3] != "-" else ""
        lines.append(f"{fields[0]:<19} {fields[1]:>8}  {fields[2]}{(' ' + users) if users else ''}")
    return "\n".join(lines) + "\n"


def debug_command_output(pod: dict[str, Any], agent: NodeAgent) -> tuple[int, str]:
    """(exit code, output) of a debug pod's command on `agent`'s node."""
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or [{}]
    container = containers[0]
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    text = " ".join(argv)
    host_mounts = {m.get("name") for m in container.get("volumeMounts") or [] if m.get("mountPath") == "/host"}
    host_volumes = {v.get("name") for v in spec.get("volumes") or [] if (v.get("hostPath") or {}).get("path") == "/"}
    if "chroot /host" not in text:
        return 127, f"kmodlab: unsupported debug command {text!r} (use chroot /host ...)\n"
    if not host_mounts & host_volumes:
        return 125, "chroot: cannot change root directory to '/host': No such file or directory\n"
    if not (container.get("securityContext") or {}).get("privileged"):
        return 1, "error: the debug pod must be privileged to read the host\n"
    if "rpm-ostree status" in text:
        if "--json" not in text:
            return 0, rpm_ostree_text(agent.deployments)
        return 0, agent.rpm_ostree_json()
    if "mokutil" in argv and "--sb-state" in argv:
        # mokutil's answer from the SecureBoot variable; lab nodes are UEFI nodes.
        return 0, f"SecureBoot {'enabled' if agent.security()['secure_boot'] == 'enabled' else 'disabled'}\n"
    if "grep" in argv:
        # `grep -H -s . <file> ...`: "<file>:<line>" for each non-empty line of each
        # file that exists; exit 2 if one is missing, else 1 if none matched (grep's codes).
        lines, missing = [], False
        for word in argv[argv.index("grep") + 1:]:
            if not word.startswith("/"):
                continue
            content = agent.host_file(word)
            if content is None:
                missing = True
                continue
            lines.extend(f"{word}:{line}\n" for line in content if line)
        return (2 if missing else 0 if lines else 1), "".join(lines)
    if "modinfo" in argv:
        return agent.modinfo(argv[argv.index("modinfo") + 1:])
    if "uname -r" in text:
        return 0, agent.kernel + "\n"
    if "lsmod" in text:
        return 0, lsmod_output(agent.proc_modules)
    if "/proc/modules" in text:
        return 0, "".join(line + "\n" for line in agent.proc_modules)
    return 127, f"kmodlab: unsupported debug command {text!r}\n"


class NodeAgent:
    """One Node's daemon: applies desired configs, answers debug pods."""

    def __init__(
        self, fleet: NodeFleet, name: str, image: str, digest: str, kernel: str, config: str | None = None,
        arch: str = "amd64",
    ) -> None:
        self.fleet = fleet
        self.name = name
        self.arch = arch  # GOARCH, as kubernetes.io/arch
        started = int(time.time())
        self.deployments = [deployment(image, digest, fleet.release, True, started)]
        # What this node ran, boot by boot (ground truth; kmodlab.groundtruth
        # reads it): the seeded state is boot 0, each reboot adds one.
        self.records: list[dict[str, Any]] = [
            {
                "boot": 0,
                "seeded": True,
                "up": time.time(),
                "up_time": now(),
                "down": None,
                "config": config,
                "config_release": fleet.release,
                "os_image": image,
                "os_digest": digest,
                "os_release": fleet.os_release(digest, kernel),
                "kernel": kernel,
                "modules": [],
            }
        ]
        self.kernel = kernel
        self.proc_modules: list[str] = []
        self.params: dict[str, dict[str, str]] = {}  # /sys/module/<m>/parameters/<p> of the last boot
        self.secure_boot: secureboot.SecureBootSetup | None = fleet.secure_boot.get(name)
        self.records[0].update(secure_boot=self.secure_boot is not None,
                               lockdown="integrity" if self.secure_boot else "none", refused={})
        self.rootfs: str | None = None  # the unpacked OS image of the last boot (None: seeded, not read yet)
        self.booted: nodeboot.NodeBoot | None = None  # what the last boot showed
        self.busy = False
        self.failed_for: str | None = None  # desired config whose update failed (no retry)
        self.applied: str | None = None  # config this agent last booted into
        self.lock = threading.Lock()
        self.boots: list[dict[str, Any]] = []

    def rpm_ostree_json(self) -> str:
        return rpm_ostree_status(self.deployments)

    # -- what the running kernel shows (debug pods)
    def _boot_facts(self) -> nodeboot.NodeBoot:
        """The last boot's report; for a seeded node, what fast mode makes of
        its OS image with its Secure Boot setup (its kernel's keys, lockdown)."""
        with self.lock:
            if self.booted is not None:
                return self.booted
        rootfs = self.os_rootfs()
        facts = fastboot.evaluate(rootfs, secure_boot=self.secure_boot) if rootfs else nodeboot.NodeBoot(
            expected_kernel=self.kernel, kernel=self.kernel)
        facts.loaded, facts.proc_modules, facts.taint, facts.params = [], [], {}, {}  # nothing loaded yet
        facts.tainted = 0
        with self.lock:
            if self.booted is None:
                self.booted = facts
            return self.booted

    def os_rootfs(self) -> str | None:
        """The unpacked OS image the node runs (pulled for a seeded node)."""
        if self.rootfs is None:
            deployment_ = self.deployments[0]
            image = deployment_["container-image-reference"].split(":", 1)[1]
            try:
                self.rootfs, _digest = self.fleet.images.materialize(image, self.fleet.pull_secret(), self.arch)
            except (_registry.RegistryError, _rootfs.LayerError, OSError, ArchitectureMismatch) as error:
                log.warning("node %s: cannot read its OS image %s: %s", self.name, image, error)
        return self.rootfs

    def security(self) -> dict[str, Any]:
        facts = self._boot_facts()
        return {"secure_boot": facts.secure_boot or ("enabled" if self.secure_boot else "disabled"),
                "lockdown": facts.lockdown or secureboot.LOCKDOWN_NONE, "sig_enforce": facts.sig_enforce or "N",
                "tainted": facts.tainted or 0, "keys": list(facts.keys), "taint": dict(facts.taint)}

    def host_file(self, path: str) -> list[str] | None:
        """The lines of a file of the node's /proc or /sys the debug pods read (None: no such file)."""
        if path == "/sys/module/module/parameters/sig_enforce":  # the kernel's own parameter, not a module's
            return [self.security()["sig_enforce"]]
        match = SYS_PARAM.match(path)
        if match:
            value = self.params.get(match.group(1), {}).get(match.group(2))
            return None if value is None else [value]
        facts = self.security()
        if path == "/sys/kernel/security/lockdown":
            return [facts["lockdown"]]
        if path == "/proc/sys/kernel/tainted":
            return [str(facts["tainted"])]
        if path == "/proc/keys":
            return facts["keys"]
        taint = SYS_TAINT.match(path)
        if taint and taint.group(1) in facts["taint"]:
            return [facts["taint"][taint.group(1)]]
        return None

    def modinfo(self, names: list[str]) -> tuple[int, str]:
        """kmod's own `modinfo` on the node's OS image (`-b <rootfs> -k <kernel>`),
        its paths shown as the node sees them."""
        rootfs = self.os_rootfs()
        if rootfs is None:
            return 1, "modinfo: ERROR: cannot read the node's OS image\n"
        tool = shutil.which("modinfo") or "/usr/sbin/modinfo"
        done = subprocess.run([tool, "-b", rootfs, "-k", self.kernel, *names], capture_output=True, text=True,
                              check=False, timeout=60)
        base = rootfs.rstrip("/")
        output = (done.stdout + done.stderr).replace(base + "/", "/")
        return done.returncode, output

    # -- API helpers
    def _annotate(self, **annotations: str | None) -> dict[str, Any]:
        patched = self.fleet.api.patch("v1", "Node", self.name, {"metadata": {"annotations": annotations}})
        self.fleet.remember(patched)
        return patched

    def _node(self) -> dict[str, Any]:
        """This Node as last seen (watch or own write), read from the API only
        if never seen."""
        return self.fleet.node(self.name) or self.fleet.api.get("v1", "Node", self.name) or {}

    def _set_ready(
        self, ready: bool, reason: str, message: str, kernel: str | None = None, release: str | None = None
    ) -> None:
        node = self._node()
        conditions = [dict(c) for c in ((node.get("status") or {}).get("conditions") or []) if c.get("type") != "Ready"]
        conditions.append(
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now(),
                "lastTransitionTime": now(),
            }
        )
        status: dict[str, Any] = {"conditions": conditions}
        if kernel:  # back from a reboot: the kubelet reports the new boot
            status["nodeInfo"] = dict(
                ((node.get("status") or {}).get("nodeInfo")) or {}, kernelVersion=kernel, bootID=str(uuid.uuid4())
            )
            if release:  # the OS of the booted image (RHCOS <major><minor>.94)
                major_minor = "".join(release.split(".")[:2])
                status["nodeInfo"]["osImage"] = f"Red Hat Enterprise Linux CoreOS {major_minor}.94 (Plow)"
        self.fleet.remember(self.fleet.api.patch("v1", "Node", self.name, {"status": status}, subresource="status"))

    def _wait_drain(self, wanted: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.fleet.stop_event.is_set():
            node = self._node()
            if ((node.get("metadata") or {}).get("annotations") or {}).get(ANN_LAST_APPLIED_DRAIN) == wanted:
                return True
            self.fleet.stop_event.wait(0.2)  # the Node watch updates what _node() returns
        return False

    # -- events
    def on_node(self, node: dict[str, Any]) -> None:
        ann = (node.get("metadata") or {}).get("annotations") or {}
        desired = ann.get(mco_rules.ANN_DESIRED_CONFIG)
        current = ann.get(mco_rules.ANN_CURRENT_CONFIG)
        state = ann.get(mco_rules.ANN_STATE)
        if desired and desired == current and state == mco_rules.STATE_DEGRADED and not self.busy:
            # Pointed back at the config it runs: nothing to apply, recover.
            self.failed_for = None
            if self.records and self.records[-1].get("down") is not None:
                # It went down for a boot that failed: it is back on what it ran before.
                back = dict(self.records[-1], boot=len(self.records), seeded=False, recovered=True)
                back.update(up=time.time(), up_time=now(), down=None)
                self.fleet.record(self, boot=back)
            if not mco_rules.kubelet_ready(node):
                self._set_ready(True, "KubeletReady", "kubelet is posting ready status")
            self._annotate(
                **{
                    mco_rules.ANN_STATE: mco_rules.STATE_DONE,
                    mco_rules.ANN_REASON: "",
                    ANN_DESIRED_DRAIN: f"uncordon-{desired}",
                }
            )
            return
        with self.lock:
            if not desired or desired == current or self.busy or desired == self.failed_for or desired == self.applied:
                return
            self.busy = True
        threading.Thread(target=self._update, args=(desired,), name=f"update-{self.name}", daemon=True).start()

    def _degrade(self, desired: str, reason: str) -> None:
        log.warning("node %s: degraded: %s", self.name, reason)
        self.failed_for = desired
        self._annotate(**{mco_rules.ANN_STATE: mco_rules.STATE_DEGRADED, mco_rules.ANN_REASON: reason})

    def _update(self, desired: str) -> None:
        try:
            self._apply(desired)
        except Exception as error:  # noqa: BLE001 - a daemon reports, never dies
            log.exception("node %s: update to %s failed", self.name, desired)
            try:
                self._degrade(desired, f"unexpected error: {error}")
            except Exception:  # noqa: BLE001
                pass
        finally:
            with self.lock:
                self.busy = False
            self.fleet.wake()

    def _apply(self, desired: str) -> None:
        api = self.fleet.api
        log.info("node %s: updating to %s", self.name, desired)
        self._annotate(**{mco_rules.ANN_STATE: mco_rules.STATE_WORKING, mco_rules.ANN_REASON: ""})
        rendered = api.get(MC_API, "MachineConfig", desired)
        if rendered is None:
            self._degrade(desired, f'machineconfig.machineconfiguration.openshift.io "{desired}" not found')
            return
        image = (rendered.get("spec") or {}).get("osImageURL") or ""
        self._annotate(**{ANN_DESIRED_DRAIN: f"drain-{desired}"})
        if not self._wait_drain(f"drain-{desired}", timeout=300):
            self._degrade(desired, f"failed to drain node {self.name}: timed out waiting for the drain controller")
            return
        try:
            auth = self.fleet.pull_secret()
            rootfs, digest = self.fleet.images.materialize(image, auth, self.arch)
        except ArchitectureMismatch as error:
            self._degrade(desired, f"failed to update OS to {image}: refusing to rebase: {error}")
            return
        except (_registry.RegistryError, _rootfs.LayerError, OSError) as error:
            self._degrade(desired, f"failed to update OS to {image}: error pulling image: {error}")
            return
        self._annotate(**{mco_rules.ANN_STATE: mco_rules.STATE_REBOOTING})
        self._set_ready(False, "KubeletNotReady", "node is rebooting")
        self.fleet.record(self, down=time.time())
        if self.fleet.node_mode == "fast" and self.fleet.reboot_seconds > 0:
            # Outside BOOT_SLOTS: nodes of a maxUnavailable > 1 batch reboot together.
            self.fleet.stop_event.wait(self.fleet.reboot_seconds)
        with BOOT_SLOTS:
            try:
                if self.fleet.node_mode == "qemu":
                    result = nodeboot.boot(rootfs, timeout=self.fleet.boot_timeout, secure_boot=self.secure_boot)
                else:
                    result = fastboot.evaluate(rootfs, secure_boot=self.secure_boot)
            except nodeboot.NodeBootError as error:
                self._degrade(desired, f"node {self.name} did not come back after reboot: {error}")
                return
        summary = result.to_dict()
        self.boots.append(dict(summary, image=image, digest=digest))
        log.info(
            "node %s: boot %s in %.1fs: %s", self.name, "ok" if result.ok else "with failures", result.duration, summary
        )
        if result.panic or result.timed_out or not result.completed or result.kernel != result.expected_kernel:
            # The node is gone: NotReady, Degraded, still on its old config.
            self._degrade(
                desired, f"node {self.name} did not come back after reboot into {image}: " + "; ".join(result.failures)
            )
            return
        previous = dict(self.deployments[0], booted=False)
        os_release = self.fleet.os_release(digest, result.kernel or "")
        self.deployments = [
            deployment(image, digest, os_release or self.fleet.release, True, int(time.time())), previous
        ]
        self.kernel = result.kernel or self.kernel
        record = {
            "boot": len(self.records),
            "seeded": False,
            "up": time.time(),
            "up_time": now(),
            "down": None,
            "config": desired,
            "config_release": config_release(rendered),
            "os_image": image,
            "os_digest": digest,
            "os_release": os_release,
            "kernel": self.kernel,
            "modules": list(result.loaded),
            "secure_boot": result.secure_boot == "enabled",
            "lockdown": result.lockdown_mode,
            "refused": {m: list(w) for m, w in result.refused.items()},
        }
        with self.lock:
            self.rootfs, self.booted = rootfs, result
        self.proc_modules = list(result.proc_modules)
        self.params = {m: dict(p) for m, p in (result.params or {}).items()}
        self.fleet.record(self, boot=record)
        self._set_ready(
            True, "KubeletReady", "kubelet is posting ready status", kernel=self.kernel, release=os_release or None
        )
        self._annotate(
            **{
                mco_rules.ANN_CURRENT_CONFIG: desired,
                mco_rules.ANN_STATE: mco_rules.STATE_DONE,
                mco_rules.ANN_REASON: "",
                ANN_DESIRED_DRAIN: f"uncordon-{desired}",
                ANN_BOOTED_IMAGE: image,
                ANN_BOOTED_DIGEST: digest,
                ANN_LOADED: ",".join(result.loaded),
                ANN_REBOOTS: str(len(self.records) - 1),
                ANN_BOOTED_RELEASE: os_release or "",
                ANN_BOOT: json.dumps(
                    {k: summary[k] for k in ("mode", "kernel", "loaded", "params", "failures", "duration", "tools",
                                             "secure_boot", "lockdown", "refused")}
                ),
            }
        )
        self.failed_for = None
        self.applied = desired
        log.info("node %s: done on %s", self.name, desired)


def config_release(rendered: dict[str, Any]) -> str | None:
    """The release whose configuration a rendered MachineConfig is: its
    release-image-version annotation, else the release of the controller
    version that generated it (None: not a lab release's)."""
    annotations = ((rendered.get("metadata") or {}).get("annotations")) or {}
    version = annotations.get(mco_rules.ANN_RELEASE_IMAGE_VERSION)
    if version:
        return version
    from .mco import release_of_controller_version

    return release_of_controller_version(annotations.get(mco_rules.ANN_GENERATED_BY) or "")


class NodeFleet:
    """All node agents of a cluster: one watch on Nodes, one on Pods."""

    def __init__(
        self,
        kubeconfig: str,
        nodes: dict[str, dict[str, str]],
        release: str,
        node_mode: str,
        image_store: ImageStore,
        boot_timeout: float = 300.0,
        reboot_seconds: float = 0.0,
        releases: list[dict[str, Any]] | None = None,
        boots_file: str | None = None,
        secure_boot: dict[str, secureboot.SecureBootSetup] | None = None,
    ) -> None:
        self.api = Api(kubeconfig, "nodes")
        self.watch_api = Api(kubeconfig, "nodes-watch")
        self.release = release
        self.node_mode = node_mode
        self.images = image_store
        self.boot_timeout = boot_timeout
        # Fast mode: how long a node stays down (Rebooting, NotReady), so a
        # rollout lasts as long as a real one would (benchmarks).
        self.reboot_seconds = reboot_seconds
        self.stop_event = threading.Event()
        # OS image digest / kernel -> lab release (what a node booted belongs to).
        self.releases_by_digest: dict[str, str] = {}
        self.releases_by_kernel: dict[str, str] = {}
        for item in releases or []:
            os_image = (item.get("images") or {}).get(item.get("os_tag") or "", "")
            if "@" in os_image:
                self.releases_by_digest[os_image.split("@", 1)[1]] = item["version"]
            if item.get("kernel"):
                self.releases_by_kernel[item["kernel"]] = item["version"]
            for part in (item.get("platforms") or {}).values():  # a multi payload's per-arch images
                part_image = (part.get("images") or {}).get(item.get("os_tag") or "", "")
                if "@" in part_image:
                    self.releases_by_digest[part_image.split("@", 1)[1]] = item["version"]
                if part.get("kernel"):
                    self.releases_by_kernel[part["kernel"]] = item["version"]
        self.boots_file = boots_file
        self.secure_boot = dict(secure_boot or {})  # node -> its Secure Boot setup (absent: no Secure Boot)
        self._records_lock = threading.Lock()
        self.agents = {
            name: NodeAgent(self, name, info["image"], info["digest"], info["kernel"], info.get("config"),
                            info.get("arch") or "amd64")
            for name, info in nodes.items()
        }
        self.write_records()
        self.handled_pods: set[str] = set()
        self.threads: list[threading.Thread] = []
        self._nodes: dict[str, dict[str, Any]] = {}  # latest Node objects by name
        self._nodes_lock = threading.Lock()

    def os_release(self, digest: str, kernel: str) -> str | None:
        """The lab release an OS image belongs to: a release's own OS image
        by digest, else (a layered image) the release whose kernel it boots."""
        return self.releases_by_digest.get(digest) or self.releases_by_kernel.get(kernel)

    def record(self, agent: NodeAgent, down: float | None = None, boot: dict[str, Any] | None = None) -> None:
        """Note that ``agent``'s node went down (a reboot starts) or came up
        from one (``boot``), and write the records file."""
        with self._records_lock:
            if down is not None and agent.records and agent.records[-1].get("down") is None:
                agent.records[-1]["down"] = down
            if boot is not None:
                agent.records.append(boot)
        self.write_records()

    def write_records(self) -> None:
        """`<cluster dir>/boots.json`: {"nodes": {node: {"reboots": n, "boots": [...]}}}."""
        if not self.boots_file:
            return
        with self._records_lock:
            data = {
                "written": time.time(),
                "nodes": {
                    name: {"reboots": len(agent.records) - 1, "boots": copy.deepcopy(agent.records)}
                    for name, agent in sorted(self.agents.items())
                },
            }
            tmp = f"{self.boots_file}.tmp"
            Path(tmp).write_text(json.dumps(data, indent=1))
            Path(tmp).replace(self.boots_file)

    def remember(self, node: dict[str, Any]) -> None:
        """Keep the newest version of a Node (watch events and own writes race)."""
        name = (node.get("metadata") or {}).get("name")
        if not name:
            return
        with self._nodes_lock:
            held = self._nodes.get(name)
            if held is None or _rv(node) >= _rv(held):
                self._nodes[name] = node

    def node(self, name: str) -> dict[str, Any] | None:
        with self._nodes_lock:
            return copy.deepcopy(self._nodes.get(name))

    def pull_secret(self) -> str | None:
        secret = self.api.get("v1", "Secret", "pull-secret", namespace="openshift-config")
        data = ((secret or {}).get("data") or {}).get(".dockerconfigjson")
        return base64.b64decode(data).decode() if data else None

    def start(self) -> None:
        for kind, handler in (("Node", self.on_node), ("Pod", self.on_pod)):
            thread = threading.Thread(
                target=self.watch_api.watch,
                args=("v1", kind, self.stop_event, lambda _type, obj, handler=handler: handler(obj)),
                name=f"nodes-watch-{kind}",
                daemon=True,
            )
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()

    def wake(self) -> None:
        """Re-check nodes after an update finished (desired may have moved on)."""
        for name in list(self.agents):
            node = self.node(name)
            if node is not None:
                self.agents[name].on_node(node)

    def on_node(self, node: dict[str, Any]) -> None:
        name = (node.get("metadata") or {}).get("name")
        agent = self.agents.get(name)
        if agent is not None:
            self.remember(node)
            agent.on_node(self.node(name) or node)

    def on_pod(self, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        agent = self.agents.get((pod.get("spec") or {}).get("nodeName"))
        uid = meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"
        if agent is None or uid in self.handled_pods:
            return
        if ((pod.get("status") or {}).get("phase")) in ("Succeeded", "Failed"):
            return
        self.handled_pods.add(uid)
        threading.Thread(target=self._run_pod, args=(pod, agent), daemon=True).start()

    def _run_pod(self, pod: dict[str, Any], agent: NodeAgent) -> None:
        meta = pod["metadata"]
        try:
            code, output = debug_command_output(pod, agent)
            self.api.patch(
                "v1",
                "Pod",
                meta["name"],
                {"metadata": {"annotations": {ANN_LOG: output}}},
                namespace=meta.get("namespace"),
            )
            container = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name", "container-00")
            finished = now()
            status = {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [
                    {
                        "name": container,
                        "ready": False,
                        "restartCount": 0,
                        "image": "",
                        "imageID": "",
                        "state": {
                            "terminated": {
                                "exitCode": code,
                                "reason": "Completed" if code == 0 else "Error",
                                "startedAt": finished,
                                "finishedAt": finished,
                            }
                        },
                    }
                ],
            }
            self.api.patch(
                "v1", "Pod", meta["name"], {"status": status}, namespace=meta.get("namespace"), subresource="status"
            )
            log.info("debug pod %s/%s on %s: exit %d", meta.get("namespace"), meta["name"], agent.name, code)
        except Exception:  # noqa: BLE001
            log.exception("debug pod %s failed", meta.get("name"))
            self.handled_pods.discard(meta.get("uid") or "")
