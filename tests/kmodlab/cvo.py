"""The lab's cluster-version operator (CVO) and the cluster operators it
rolls: what makes a lab cluster upgrade.

Written from github.com/openshift/cluster-version-operator (read at commit
6e719331f) and, for the machine-config operator's part,
github.com/openshift/machine-config-operator (commit 7ff337a4); nothing
here comes from the product (``plugins/``). Each function names the Go
function it follows; "lab deviation" marks what the lab does differently on
purpose.

- ``status.availableUpdates``: the lab releases newer than the cluster's
  (the lab's update service: every newer lab release is an edge), each
  ``{version, image by digest}``; recomputed when an upgrade completes.
- ``spec.desiredUpdate`` (version and/or image, ``force``) is validated
  (lib/validation ValidateClusterVersion: a version without an image must
  be an available update, else ``Invalid=True`` and the update is ignored),
  resolved (updatepayload.go findUpdateFromConfig), "retrieved"
  (updatepayload.go RetrievePayload: only lab release images verify; an
  unknown image fails verification, forced it cannot be downloaded) and
  checked (precondition Rollback, Upgradeable; sync_worker.go syncPayload):
  a refusal is ``ReleaseAccepted=False`` with the step as reason and the
  CVO's message, ``status.desired`` unchanged.
- An accepted target becomes ``status.desired``, a new ``Partial``
  ``history[0]`` (status.go mergeOperatorHistory), ``Progressing=True``
  ("Working towards 4.16.30: 3 of 9 done (33% complete), waiting on
  network"), and the operators are moved one after the other
  (``OPERATORS``; the real CVO walks run levels, in parallel within one):
  each lab operator reports the new version ``operator_seconds`` after it
  was asked. ``machine-config`` first writes the ControllerConfig of the
  new release (OS image, controller version: the MCO simulator re-renders
  every pool) and reports the new version only once the pools labelled
  required-for-upgrade are on it (mco_rules.required_pools_error, from
  operator/sync.go syncRequiredMachineConfigPools): a paused worker pool
  does not hold the upgrade and does not roll.
- All operators on the new version: history ``Completed`` +
  completionTime, ``Progressing=False`` "Cluster version is 4.16.30",
  ``Available=True`` "Done applying 4.16.30".
- Fault: a ClusterOperator annotated ``kmodlab.io/fault: degrade`` (see
  ``faults.degrade_operator``) reports ``Degraded=True``; while the upgrade
  waits on it the CVO says "waiting up to 40 minutes on X", and after
  ``degraded_interval_seconds`` (the real CVO's 40 minutes, scaled)
  ``Failing=True`` reason ClusterOperatorDegraded "Cluster operator X is
  degraded". Removing the annotation heals it.

Lab deviations: no GiantHop precondition (4.12.77 -> 4.16.30 stands for a
supported hop; the lab's releases are stand-ins); no update service
(RetrievedUpdates=True always), no conditionalUpdates, no capabilities; the
operators' "run levels" are strictly sequential; availableUpdates follow the
completed version (the real CVO recomputes them as soon as its own new
version runs, early in the upgrade); verified is true for lab release
images (the lab's "keyring" is its release list), false for forced ones.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import time
from typing import Any, Iterable

from kubernetes.dynamic.exceptions import ConflictError, NotFoundError

from . import mco, mco_rules

log = logging.getLogger("kmodlab.cvo")

CV_API = "config.openshift.io/v1"
MC_API = mco.MC_API
# The operators the lab CVO rolls, in run-level order (0000_<level>_ of the
# real payload's manifests; the machine-config operator is run level 80).
OPERATORS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "openshift-apiserver",
    "network",
    "dns",
    "ingress",
    "machine-config",
)
MACHINE_CONFIG = "machine-config"
ANN_FAULT = "kmodlab.io/fault"  # on a ClusterOperator: "degrade"
FAULT_DEGRADE = "degrade"
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)


def now() -> str:
    return mco.now()


def semver(version: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a semantic version, None if it is not one
    (validation.go validSemVer; pre-releases compare as their release)."""
    match = SEMVER.match(version or "")
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def split_digest(pullspec: str) -> str:
    """sync_worker.go splitDigest: the digest of a by-digest pullspec, else ''."""
    parts = (pullspec or "").split("@")
    return parts[1] if len(parts) == 2 else ""


def equal_digest(a: str, b: str) -> bool:
    """sync_worker.go equalDigest."""
    if a == b:
        return True
    digest = split_digest(a)
    return digest != "" and digest == split_digest(b)


def digest_pullspec(pullspec: str, digest: str) -> str:
    """`host:port/repo:tag` + digest -> `host:port/repo@digest`."""
    name = pullspec.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: name.rindex(":")]
    return f"{name}@{digest}"


def release_image(release: dict[str, Any]) -> str:
    """A lab release's image by digest (what ClusterVersion shows)."""
    return digest_pullspec(release["pullspec"], release["digest"])


def payload_architecture(release: dict[str, Any]) -> str:
    """The architecture the CVO reports for a payload (its "Payload loaded"
    message): "Multi" for a multi payload (release-metadata
    release.openshift.io/architecture: multi), else the cluster's GOARCH."""
    arch = release.get("arch") or "x86_64"
    return "Multi" if arch == "multi" else {"x86_64": "amd64", "aarch64": "arm64"}.get(arch, arch)


def desired_architecture(release: dict[str, Any]) -> str:
    """ClusterVersion status.desired.architecture (config/v1 ClusterVersionArchitecture):
    "Multi" for a multi payload; empty (omitted) for a single-architecture one."""
    return "Multi" if release.get("arch") == "multi" else ""


class Catalog:
    """The lab releases a cluster knows of (lab.json `releases`): the lab's
    update service and its signature store at once."""

    def __init__(self, releases: Iterable[dict[str, Any]]) -> None:
        self.releases = [r for r in releases if r.get("digest") and r.get("version")]

    def by_image(self, image: str) -> dict[str, Any] | None:
        return next((r for r in self.releases if equal_digest(release_image(r), image)), None)

    def by_version(self, version: str) -> dict[str, Any] | None:
        return next((r for r in self.releases if r["version"] == version), None)

    def newer_than(self, version: str) -> list[dict[str, Any]]:
        current = semver(version)
        if current is None:
            return []
        found = [r for r in self.releases if (semver(r["version"]) or (0, 0, 0)) > current]
        return sorted(found, key=lambda r: semver(r["version"]) or (0, 0, 0))


def channel_of(version: str) -> str:
    return "stable-" + ".".join(version.split(".")[:2])


def available_updates(catalog: Catalog, version: str) -> list[dict[str, Any]]:
    """The lab's availableUpdates from ``version`` (availableupdates.go
    calculateAvailableUpdatesStatus, the update service replaced by the
    lab's release list): every newer lab release, by digest."""
    return [
        {"version": r["version"], "image": release_image(r), "channels": [channel_of(r["version"])]}
        for r in catalog.newer_than(version)
    ]


# ---------------------------------------------------------------- conditions


def set_condition(conditions: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str, stamp: str) -> None:
    """resourcemerge.SetOperatorStatusCondition: replace by type, the
    transition time moves only when the status does."""
    for cond in conditions:
        if cond.get("type") == ctype:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = stamp
            cond.update(status=status, reason=reason, message=message)
            if not reason:
                cond.pop("reason", None)
            if not message:
                cond.pop("message", None)
            return
    cond = {"type": ctype, "status": status, "lastTransitionTime": stamp}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    conditions.append(cond)


def remove_condition(conditions: list[dict[str, Any]], ctype: str) -> None:
    conditions[:] = [c for c in conditions if c.get("type") != ctype]


def find_condition(conditions: Iterable[dict[str, Any]] | None, ctype: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == ctype), None)


# ---------------------------------------------------------------- desiredUpdate


def validate(cv: dict[str, Any]) -> list[tuple[str, str]]:
    """lib/validation ValidateClusterVersion, the desiredUpdate part:
    ``[(field, message)]``; the CVO then ignores desiredUpdate
    (ClearInvalidFields) and reports ``Invalid``."""
    update = (cv.get("spec") or {}).get("desiredUpdate")
    if update is None:
        return []
    version, image, arch = update.get("version") or "", update.get("image") or "", update.get("architecture") or ""
    if not arch and not version and not image:
        return [("spec.desiredUpdate", "Required value: must specify architecture, version, or image")]
    if version and semver(version) is None:
        return [("spec.desiredUpdate.version", f'Invalid value: "{version}": must be a semantic version (1.2.3[-...])')]
    if version and not image:
        count = sum(1 for u in (cv.get("status") or {}).get("availableUpdates") or [] if u.get("version") == version and u.get("image"))
        if count == 0 and any(h.get("version") == version and h.get("image") for h in (cv.get("status") or {}).get("history") or []):
            count = 1
        if count == 0:
            return [(
                "spec.desiredUpdate.version",
                f'Invalid value: "{version}": when image is empty the update must be an available update',
            )]
        if count > 1:
            return [(
                "spec.desiredUpdate.version",
                f'Invalid value: "{version}": there are multiple possible payloads for this version, specify the exact image',
            )]
    return []


def invalid_message(errors: list[tuple[str, str]]) -> str:
    """status.go updateClusterVersionStatus: the Invalid condition's message."""
    if len(errors) == 1:
        return f"The cluster version is invalid: {errors[0][0]}: {errors[0][1]}"
    return "The cluster version is invalid:\n" + "".join(f"* {f}: {m}\n" for f, m in errors)


def find_update(cv: dict[str, Any]) -> dict[str, Any] | None:
    """updatepayload.go findUpdateFromConfig: desiredUpdate, its image taken
    from availableUpdates (then history) when only a version is given."""
    update = (cv.get("spec") or {}).get("desiredUpdate")
    if not update:
        return None
    force = bool(update.get("force"))
    if update.get("image"):
        return {"version": update.get("version") or "", "image": update["image"], "force": force}
    status = cv.get("status") or {}
    for candidate in list(status.get("availableUpdates") or []) + list(status.get("history") or []):
        if candidate.get("version") == update.get("version") and candidate.get("image"):
            return {"version": update["version"], "image": candidate["image"], "force": force}
    return None


def version_string(version: str, image: str) -> str:
    """cvo.go versionString."""
    return version or image or "<unknown>"


class Refused(Exception):
    """A step of loading a payload failed: ReleaseAccepted=False (reason = step)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


def load_payload(
    catalog: Catalog, update: dict[str, Any], cv: dict[str, Any], current_image: str
) -> tuple[dict[str, Any], bool, str]:
    """sync_worker.go syncPayload for a new image: (release, verified,
    accepted risks) or raises Refused.

    RetrievePayload (updatepayload.go): the running payload's own image is
    local; a lab release image verifies (the lab's keyring is its release
    list); another image fails verification ("The update cannot be
    verified: ...") unless forced, and forced it cannot be downloaded (the
    lab has no payload for it). Then the version must match the release's
    (VerifyPayloadVersion), then the preconditions (Rollback; Upgradeable:
    ClusterVersion Upgradeable=False blocks a minor update), blocking unless
    forced (precondition.Summarize)."""
    version, image, force = update.get("version") or "", update["image"], update.get("force", False)
    status = cv.get("status") or {}
    release = catalog.by_image(image)
    verified = False
    risks: list[str] = []
    if not equal_digest(image, current_image):
        if release is None:
            failure = (
                f"The update cannot be verified: unable to verify {split_digest(image) or image} against keyrings: "
                "verifier-public-key-redhat"
            )
            if not force:
                raise Refused(
                    "RetrievePayload",
                    f"Retrieving payload failed version=\"{version}\" image=\"{image}\" failure={failure}",
                )
            raise Refused(
                "RetrievePayload",
                f"Retrieving payload failed version=\"{version}\" image=\"{image}\" failure=Unable to download and "
                f"prepare the update: fetching update payload: the lab has no release payload at {image}",
            )
        verified = True
    if release is None:
        release = catalog.by_image(current_image)
        if release is None:
            raise Refused("LoadPayload", f"Loading payload failed version=\"{version}\" image=\"{image}\" failure=unknown payload")
    if version and version != release["version"]:
        raise Refused(
            "VerifyPayloadVersion",
            f"Verifying payload failed version=\"{version}\" image=\"{image}\" failure=release image version "
            f"{release['version']} does not match the expected upstream version {version}",
        )
    version = release["version"]
    preconditions = []
    current = (status.get("desired") or {}).get("version") or ""
    target, now_at = semver(version), semver(current)
    if target is not None and now_at is not None:
        # clusterversion/rollback.go
        if target < now_at:
            previous = None
            for entry in status.get("history") or []:
                if entry.get("version") != current or entry.get("image") != (status.get("desired") or {}).get("image"):
                    previous = entry
                    break
            if previous is None or semver(previous.get("version") or "") is None:
                preconditions.append((
                    "ClusterVersionRollback", "LowDesiredVersion",
                    f"{version} is less than the current target {current}, and the cluster has no previous Semantic Version",
                    False,
                ))
            elif previous["version"] != version:
                preconditions.append((
                    "ClusterVersionRollback", "LowDesiredVersion",
                    f"{version} is less than the current target {current}, and the only supported rollback is to the "
                    f"cluster's previous version {previous['version']} ({previous.get('image', '')})",
                    False,
                ))
            elif semver(previous["version"])[:2] != now_at[:2]:  # type: ignore[index]
                preconditions.append((
                    "ClusterVersionRollback", "LowDesiredVersion",
                    f"{version} is less than the current target {current} and matches the cluster's previous version, "
                    "but rollbacks that change major or minor versions are not recommended",
                    False,
                ))
        # clusterversion/upgradeable.go
        upgradeable = find_condition(status.get("conditions"), "Upgradeable")
        if upgradeable is not None and upgradeable.get("status") == "False" and target[:2] != now_at[:2] and target > now_at:
            preconditions.append(
                ("ClusterVersionUpgradeable", upgradeable.get("reason") or "", upgradeable.get("message") or "", False)
            )
        # clusterversion/recommendedupdate.go (a warning only)
        if not any(u.get("version") == version for u in status.get("availableUpdates") or []) and target != now_at:
            retrieved = find_condition(status.get("conditions"), "RetrievedUpdates") or {}
            preconditions.append((
                "ClusterVersionRecommendedUpdate", "UnknownUpdate",
                f"{retrieved.get('type', 'RetrievedUpdates')}={retrieved.get('status', 'True')} "
                f"({retrieved.get('reason', '')}), so the update from {current} to {version} is probably neither "
                "recommended nor supported.",
                True,
            ))
    if preconditions:
        messages = [f'Precondition "{name}" failed because of "{reason}": {message}' for name, reason, message, _w in preconditions]
        text = messages[0] if len(messages) == 1 else "Multiple precondition checks failed:\n* " + "\n* ".join(messages)
        blocking = not all(warning for *_rest, warning in preconditions)
        if blocking and not force:
            raise Refused(
                "PreconditionChecks",
                f"Preconditions failed for payload loaded version=\"{version}\" image=\"{image}\": {text}",
            )
        risks.append(f"Forced through blocking failures: {text}" if blocking else text)
    return release, verified, "\n".join(risks)


# ---------------------------------------------------------------- history


def merge_history(
    status: dict[str, Any], desired: dict[str, Any], verified: bool, stamp: str, completed: bool, risks: str
) -> None:
    """status.go mergeOperatorHistory (and mergeEqualVersions): the same
    release merges into history[0] (Completed once done); another one
    closes history[0] (completionTime) and is prepended, Partial."""
    history = status.setdefault("history", [])
    if not desired.get("image"):
        return
    if not history:
        history.append({"version": desired["version"], "image": desired["image"], "state": "Partial",
                        "startedTime": stamp, "completionTime": None, "verified": False})
    last = history[0]
    if equal_digest(last.get("image") or "", desired["image"]) and last.get("version") in ("", desired.get("version")):
        if completed:
            last["state"] = "Completed"
            if not last.get("completionTime"):
                last["completionTime"] = stamp
        if risks:
            last["acceptedRisks"] = risks
    else:
        if not last.get("completionTime"):
            last["completionTime"] = stamp
        entry = {
            "version": desired["version"],
            "image": desired["image"],
            "state": "Completed" if completed else "Partial",
            "startedTime": stamp,
            "completionTime": stamp if completed else None,
            "verified": False,
        }
        if risks:
            entry["acceptedRisks"] = risks
        history.insert(0, entry)
    if verified:
        history[0]["verified"] = True
    del history[100:]  # MaxHistory
    status["desired"] = {k: v for k, v in desired.items()
                         if k in ("version", "image", "channels", "url", "architecture") and v}


# ---------------------------------------------------------------- operator health


def operator_version(co: dict[str, Any] | None) -> str:
    for item in ((co or {}).get("status") or {}).get("versions") or []:
        if item.get("name") == "operator":
            return item.get("version") or ""
    return ""


def operator_error(co: dict[str, Any] | None, name: str, version: str) -> tuple[str, str, str] | None:
    """internal/operatorstatus.go checkOperatorHealth: None when the
    operator is available, not degraded and on ``version``; else
    (effect, reason, message) with effect ``fail`` (not available),
    ``fail-after-interval`` (degraded) or ``none`` (still updating)."""
    conditions = ((co or {}).get("status") or {}).get("conditions") or []
    available = any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)
    degraded = not any(c.get("type") == "Degraded" and c.get("status") == "False" for c in conditions)
    if co is None or not available:
        return "fail", "ClusterOperatorNotAvailable", f"Cluster operator {name} is not available"
    if degraded:
        return "fail-after-interval", "ClusterOperatorDegraded", f"Cluster operator {name} is degraded"
    if operator_version(co) != version:
        return "none", "ClusterOperatorUpdating", f"Cluster operator {name} is updating versions"
    return None


def summary_for_reason(reason: str, name: str) -> str:
    """payload/task.go SummaryForReason, the reasons the lab produces."""
    return {
        "ClusterOperatorDegraded": f"the cluster operator {name} is degraded",
        "ClusterOperatorNotAvailable": f"the cluster operator {name} is not available",
        "ClusterOperatorUpdating": f"the cluster operator {name} is updating versions",
    }.get(reason, f"{name} has an unknown error: {reason}")


def cluster_operator(name: str, version: str, stamp: str) -> dict[str, Any]:
    """A healthy ClusterOperator on ``version`` (as seeded at install)."""
    return {
        "apiVersion": CV_API,
        "kind": "ClusterOperator",
        "metadata": {"name": name, "annotations": {"include.release.openshift.io/self-managed-high-availability": "true"}},
        "spec": {},
        "status": {
            "conditions": [
                {"type": "Available", "status": "True", "lastTransitionTime": stamp, "reason": "AsExpected",
                 "message": f"Cluster has deployed {version}" if name == MACHINE_CONFIG else "All is well"},
                {"type": "Progressing", "status": "False", "lastTransitionTime": stamp, "reason": "AsExpected",
                 "message": f"Cluster version is {version}"},
                {"type": "Degraded", "status": "False", "lastTransitionTime": stamp, "reason": "AsExpected"},
                {"type": "Upgradeable", "status": "True", "lastTransitionTime": stamp, "reason": "AsExpected"},
            ],
            "versions": [{"name": "operator", "version": version}],
            "relatedObjects": [{"group": "", "resource": "namespaces", "name": f"openshift-{name}"}],
            "extension": None,
        },
    }


# ---------------------------------------------------------------- the controller


class ClusterVersionOperator(mco.Controller):
    """The lab CVO plus the lab's cluster operators, one reconcile thread
    woken by watches (ClusterVersion, ClusterOperators, pools,
    MachineConfigs) and a tick while an upgrade runs."""

    def __init__(
        self,
        kubeconfig: str,
        releases: Iterable[dict[str, Any]],
        version: str,
        operators: Iterable[str] = OPERATORS,
        operator_seconds: float = 1.0,
        degraded_interval_seconds: float = 5.0,
        tick_seconds: float = 0.25,
        required_pool_seconds: float = 600.0,
    ) -> None:
        self.api = mco.Api(kubeconfig, "cluster-version-operator")
        self.watch_api = mco.Api(kubeconfig, "cluster-version-operator-watch")
        self.catalog = Catalog(releases)
        self.operators = tuple(operators)
        self.operator_seconds = operator_seconds
        self.degraded_interval_seconds = degraded_interval_seconds
        self.tick_seconds = tick_seconds
        # syncRequiredMachineConfigPools' timeout per required machine (the real 10 minutes, scaled)
        self.required_pool_seconds = required_pool_seconds
        self.pools_sync_started: dict[str, float] = {}  # target -> when the required pools sync began
        self.stop_event = threading.Event()
        self.dirty = threading.Event()
        self.threads: list[threading.Thread] = []
        self.reconciles = 0
        release = self.catalog.by_version(version)
        if release is None:
            raise ValueError(f"cluster release {version} is not in the lab catalog")
        self.payload = release  # the release being applied (or applied)
        self.verified = False
        self.risks = ""
        image = release_image(release)
        self.load_status: dict[str, Any] = {
            "step": "PayloadLoaded",
            "failure": False,
            "message": f'Payload loaded version="{version}" image="{image}" '
                       f'architecture="{payload_architecture(release)}"',
            "update": {"version": version, "image": image},
        }
        self.asked: dict[str, tuple[str, float]] = {}  # operator -> (version asked for, when)
        self.caches = {
            kind: mco.Cache(self.watch_api, api_version, kind, self.dirty.set)
            for kind, api_version in (
                ("ClusterVersion", CV_API),
                ("ClusterOperator", CV_API),
                ("MachineConfigPool", MC_API),
                ("MachineConfig", MC_API),
                ("ControllerConfig", MC_API),
            )
        }

    # -- the loop (mco.Controller)
    name = "cvo"

    def wait_seconds(self) -> float:
        # An upgrade under way moves on a clock, not only on events.
        return self.tick_seconds if self._busy() else 30.0

    def settle_seconds(self) -> float:
        return 0.05

    def _busy(self) -> bool:
        """Tick while an upgrade runs or an operator is faulted (steps are timed)."""
        cv = self.caches["ClusterVersion"].get("version") or {}
        history = (cv.get("status") or {}).get("history") or [{}]
        if history[0].get("state") != "Completed":
            return True
        return any(
            ((co.get("metadata") or {}).get("annotations") or {}).get(ANN_FAULT)
            for co in self.caches["ClusterOperator"].items()
        )

    # -- one pass
    def reconcile(self) -> None:
        if not all(cache.synced.is_set() for cache in self.caches.values()):
            return
        cv = self.caches["ClusterVersion"].get("version")
        if cv is None:
            return
        self.reconciles += 1
        stamp = now()
        status = copy.deepcopy(cv.get("status") or {})
        conditions = status.setdefault("conditions", [])
        errors = validate(cv)
        if errors:
            set_condition(conditions, "Invalid", "True", "InvalidClusterVersion", invalid_message(errors), stamp)
        else:
            remove_condition(conditions, "Invalid")
            self._load(cv)
        target = self.payload["version"]
        # The operators: the CVO asks each in turn (run levels), each answers.
        cos = {co["metadata"]["name"]: co for co in self.caches["ClusterOperator"].items()}
        done = 0
        failure: tuple[str, str, str, str] | None = None  # (effect, reason, message, operator)
        for name in self.operators:
            if self.asked.get(name, ("", 0.0))[0] != target:
                self.asked[name] = (target, time.monotonic())
                log.info("cvo: asking %s for %s", name, target)
            co = self._operate(name, cos.get(name), target)
            problem = operator_error(co, name, target)
            if problem is None:
                done += 1
                continue
            failure = (*problem, name)
            break
        total = len(self.operators)
        completed = failure is None
        history = status.get("history") or []
        reconciling = completed or (
            bool(history) and history[0].get("state") == "Completed" and equal_digest(history[0].get("image", ""), release_image(self.payload))
        )
        desired = {"version": target, "image": release_image(self.payload), "channels": [channel_of(target)],
                   "architecture": desired_architecture(self.payload)}
        merge_history(status, desired, self.verified, stamp, completed, self.risks)
        status["observedGeneration"] = (cv.get("metadata") or {}).get("generation") or 1
        if completed:
            # null when there are none, as the CVO writes it (nullable, required).
            status["availableUpdates"] = available_updates(self.catalog, target) or None
            set_condition(conditions, "Available", "True", "", f"Done applying {target}", stamp)
        self._release_accepted(conditions, stamp)
        self._progress(conditions, stamp, target, reconciling, done, total, failure, bool(errors))
        if not find_condition(conditions, "RetrievedUpdates"):
            set_condition(conditions, "RetrievedUpdates", "True", "", "", stamp)
        self._upgradeable(conditions, cos, stamp)
        if mco._comparable(status) != mco._comparable(cv.get("status") or {}):
            body = dict(cv, status=status)
            try:
                written = self.api.replace_status(CV_API, "ClusterVersion", body)
            except ConflictError:  # a newer version is on its way through the watch
                self.dirty.set()
                return
            self.caches["ClusterVersion"].store(written)

    def _load(self, cv: dict[str, Any]) -> None:
        """sync_worker.go syncPayload: load a new desired payload, or reset
        the load status when desiredUpdate points at the loaded one."""
        update = find_update(cv)
        if update is None:
            return
        current_image = release_image(self.payload)
        if equal_digest(update["image"], current_image):
            if self.load_status["update"] != {"version": update["version"], "image": update["image"], "force": update["force"]} or self.load_status["failure"]:
                self.load_status = {
                    "step": "PayloadLoaded", "failure": False,
                    "message": f'Payload loaded version="{update["version"]}" image="{update["image"]}"',
                    "update": {"version": update["version"], "image": update["image"], "force": update["force"]},
                }
            return
        key = {"version": update["version"], "image": update["image"], "force": update["force"]}
        # Retried on every pass, as the sync worker does: a precondition may clear.
        try:
            release, verified, risks = load_payload(self.catalog, update, cv, current_image)
        except Refused as refused:
            refusal = {"step": refused.step, "failure": True, "message": refused.message, "update": key}
            if refusal != self.load_status:
                log.info("cvo: refused %s: %s", key, refused.message)
            self.load_status = refusal
            return
        self.payload, self.verified, self.risks = release, verified, risks
        self.load_status = {
            "step": "PayloadLoaded", "failure": False,
            "message": f'Payload loaded version="{release["version"]}" image="{update["image"]}" '
                       f'architecture="{payload_architecture(release)}"',
            "update": key,
        }
        log.info("cvo: accepted %s (%s)", release["version"], update["image"])

    def _release_accepted(self, conditions: list[dict[str, Any]], stamp: str) -> None:
        """status.go setReleaseAcceptedCondition."""
        load = self.load_status
        state = "True" if load["step"] == "PayloadLoaded" else ("False" if load["failure"] else "Unknown")
        set_condition(conditions, "ReleaseAccepted", state, load["step"], load["message"], stamp)

    def _progress(
        self,
        conditions: list[dict[str, Any]],
        stamp: str,
        version: str,
        reconciling: bool,
        done: int,
        total: int,
        failure: tuple[str, str, str, str] | None,
        invalid: bool,
    ) -> None:
        """status.go updateClusterVersionStatus, Failing and Progressing
        (with convertErrorToProgressing: an operator still updating is
        progress, "waiting on X"; a degraded one is "waiting up to 40
        minutes on X" until the interval, then Failing)."""
        skip, progress_reason, progress_message = False, "", ""
        if failure is not None and not reconciling:
            effect, reason, _message, name = failure
            if effect == "none":
                skip, progress_reason, progress_message = True, reason, f"waiting on {name}"
            elif effect == "fail-after-interval":
                asked_at = self.asked.get(name, (version, time.monotonic()))[1]
                if time.monotonic() - asked_at < self.degraded_interval_seconds:
                    skip, progress_reason, progress_message = True, reason, f"waiting up to 40 minutes on {name}"
                else:
                    progress_reason, progress_message = reason, f"wait has exceeded 40 minutes for these operators: {name}"
        if failure is not None and not skip:
            _effect, reason, message, name = failure
            set_condition(conditions, "Failing", "True", reason, message, stamp)
            summary = progress_message or summary_for_reason(reason, name)
            if reconciling:
                set_condition(conditions, "Progressing", "False", reason, f"Error while reconciling {version}: {summary}", stamp)
            else:
                set_condition(conditions, "Progressing", "True", reason, f"Unable to apply {version}: {summary}", stamp)
            return
        set_condition(conditions, "Failing", "False", "", "", stamp)
        if reconciling:
            message = f"Stopped at {version}: the cluster version is invalid" if invalid else f"Cluster version is {version}"
            set_condition(conditions, "Progressing", "False", "", message, stamp)
            return
        fraction = done / total if total else 0.0
        if invalid:
            message = f"Reconciling {version}: the cluster version is invalid"
        elif fraction > 0 and skip:
            message = f"Working towards {version}: {done} of {total} done ({int(fraction * 100)}% complete), {progress_message}"
        elif fraction > 0:
            message = f"Working towards {version}: {done} of {total} done ({int(fraction * 100)}% complete)"
        elif skip:
            message = f"Working towards {version}: {progress_message}"
        else:
            message = f"Working towards {version}"
        set_condition(conditions, "Progressing", "True", progress_reason if skip else "", message, stamp)

    def _upgradeable(self, conditions: list[dict[str, Any]], cos: dict[str, dict[str, Any]], stamp: str) -> None:
        """cvo/upgradeable.go clusterOperatorsUpgradeable: Upgradeable=False
        when an operator says so (the machine-config operator does while a
        pool is degraded), else no Upgradeable condition."""
        blocked = []
        for name in sorted(cos):
            cond = find_condition((cos[name].get("status") or {}).get("conditions"), "Upgradeable")
            if cond is not None and cond.get("status") == "False":
                blocked.append((name, cond))
        if not blocked:
            remove_condition(conditions, "Upgradeable")
        elif len(blocked) == 1:
            name, cond = blocked[0]
            set_condition(
                conditions, "Upgradeable", "False", cond.get("reason") or "ClusterOperatorNotUpgradeable",
                f"Cluster operator {name} should not be upgraded between minor versions: {cond.get('message', '')}", stamp,
            )
        else:
            set_condition(
                conditions, "Upgradeable", "False", "ClusterOperatorsNotUpgradeable",
                "Multiple cluster operators should not be upgraded between minor versions:\n"
                + "\n".join(f"* Cluster operator {n} should not be upgraded between minor versions: {c.get('message', '')}" for n, c in blocked),
                stamp,
            )

    # -- the lab's cluster operators
    def _operate(self, name: str, co: dict[str, Any] | None, target: str) -> dict[str, Any] | None:
        """One lab operator, asked for ``target``: reports it after
        ``operator_seconds`` (machine-config: see ``_machine_config``);
        annotated ``kmodlab.io/fault: degrade``, reports Degraded=True and
        does not progress."""
        if co is None:
            return None
        stamp = now()
        status = copy.deepcopy(co.get("status") or {})
        conditions = status.setdefault("conditions", [])
        fault = ((co.get("metadata") or {}).get("annotations") or {}).get(ANN_FAULT) == FAULT_DEGRADE
        current = operator_version(co)
        asked_at = self.asked[name][1]
        extension = status.get("extension")
        sync_failed = None
        if current != target and not fault:
            ready, error = True, None
            if name == MACHINE_CONFIG:
                ready, error, extension = self._machine_config(target)
                sync_failed = self._required_pools_timed_out(target, error)
            if ready and time.monotonic() - asked_at >= self.operator_seconds:
                status["versions"] = [{"name": "operator", "version": target}]
                current = target
            elif error:
                log.debug("machine-config: %s", error)
        if fault:
            set_condition(conditions, "Degraded", "True", "KmodlabFault",
                          f"kmodlab fault: {name} degraded on purpose (annotation {ANN_FAULT})", stamp)
        elif sync_failed:
            # operator/status.go syncDegradedStatus, task "RequiredPools".
            set_condition(conditions, "Degraded", "True", "RequiredPoolsFailed", sync_failed, stamp)
        else:
            set_condition(conditions, "Degraded", "False", "AsExpected", "", stamp)
        if sync_failed:
            set_condition(conditions, "Progressing", "True", "", f"Unable to apply {target}", stamp)
        elif current != target:
            set_condition(conditions, "Progressing", "True", "", f"Working towards {target}", stamp)
        else:
            set_condition(conditions, "Progressing", "False", "AsExpected", f"Cluster version is {target}", stamp)
            if name == MACHINE_CONFIG:
                extension = self._machine_config_extension(None)
                self._machine_config_upgradeable(conditions, stamp)
        if name == MACHINE_CONFIG:
            status["extension"] = extension
        if mco._comparable(status) == mco._comparable(co.get("status") or {}):
            return co
        try:
            written = self.api.patch(CV_API, "ClusterOperator", name, {"status": status}, subresource="status")
        except (ConflictError, NotFoundError):
            return co
        self.caches["ClusterOperator"].store(written)
        return written

    def _machine_config(self, target: str) -> tuple[bool, str | None, dict[str, Any]]:
        """The machine-config operator's sync for ``target``
        (operator/sync.go syncAll): write the release's ControllerConfig
        (syncRenderConfig -> the controller re-renders every pool), then
        syncRequiredMachineConfigPools. (ready, lastErr, status extension)."""
        release = self.payload
        wanted = mco.controller_config(release, release_image(release))
        held = self.caches["ControllerConfig"].get(mco.CONTROLLER_CONFIG)
        if held is None or held.get("spec", {}).get("baseOSContainerImage") != wanted["spec"]["baseOSContainerImage"] or (
            (held.get("metadata") or {}).get("annotations") or {}
        ).get(mco_rules.ANN_RELEASE_IMAGE_VERSION) != target:
            if held is None:
                written = self.api.create(MC_API, "ControllerConfig", wanted)
            else:
                written = self.api.patch(
                    MC_API, "ControllerConfig", mco.CONTROLLER_CONFIG,
                    {"metadata": {"annotations": wanted["metadata"]["annotations"]}, "spec": wanted["spec"]},
                )
            self.caches["ControllerConfig"].store(written)
            log.info("machine-config operator: ControllerConfig for %s (%s)", target, wanted["spec"]["baseOSContainerImage"])
            return False, "ControllerConfig written", self._machine_config_extension("waiting for the controller")
        mcs = {mc["metadata"]["name"]: mc for mc in self.caches["MachineConfig"].items()}
        error = mco_rules.required_pools_error(
            self.caches["MachineConfigPool"].items(),
            mco.controller_version(target),
            target,
            wanted["spec"]["baseOSContainerImage"],
            mcs,
        )
        return error is None, error, self._machine_config_extension(error)

    def _required_pools_timed_out(self, target: str, error: str | None) -> str | None:
        """syncRequiredMachineConfigPools' timeout (10 minutes per required
        machine; the lab's ``required_pool_seconds``), from when the
        required pools sync for ``target`` began: the Degraded message
        ("Unable to apply <v>: during syncRequiredMachineConfigPools: [context
        deadline exceeded, <lastErr>]") once it has passed with the pools
        still not done, else None."""
        if error is None or error == "ControllerConfig written":
            return None
        started = self.pools_sync_started.setdefault(target, time.monotonic())
        required = sum(
            int((p.get("status") or {}).get("machineCount") or 0)
            for p in self.caches["MachineConfigPool"].items()
            if mco_rules.REQUIRED_FOR_UPGRADE_LABEL in ((p.get("metadata") or {}).get("labels") or {})
        )
        if time.monotonic() - started < max(required, 1) * self.required_pool_seconds:
            return None
        return (
            f"Unable to apply {target}: during syncRequiredMachineConfigPools: "
            f"[context deadline exceeded, {error}]"
        )

    def _machine_config_extension(self, error: str | None) -> dict[str, Any]:
        """The machine-config ClusterOperator's status.extension: one line
        per pool (machineConfigPoolStatus) and the last sync error."""
        extension: dict[str, Any] = {
            pool["metadata"]["name"]: mco_rules.pool_status_summary(pool)
            for pool in sorted(self.caches["MachineConfigPool"].items(), key=lambda p: p["metadata"]["name"])
        }
        if error:
            extension["lastSyncError"] = error
        return extension

    def _machine_config_upgradeable(self, conditions: list[dict[str, Any]], stamp: str) -> None:
        """operator/status.go syncUpgradeableStatus, the degraded-pool part:
        Upgradeable=False while a pool is degraded."""
        degraded = [
            p["metadata"]["name"]
            for p in self.caches["MachineConfigPool"].items()
            if (find_condition((p.get("status") or {}).get("conditions"), "Degraded") or {}).get("status") == "True"
        ]
        if degraded:
            set_condition(conditions, "Upgradeable", "False", "DegradedPool",
                          f"One or more machine config pools are degraded, please see `oc get mcp` for further details and "
                          f"resolve before upgrading: {', '.join(sorted(degraded))}", stamp)
        else:
            set_condition(conditions, "Upgradeable", "True", "AsExpected", "", stamp)
