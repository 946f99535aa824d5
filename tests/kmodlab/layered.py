"""Layered images for the lab: RHCOS stand-in + the project's test modules.

Build keys, source fingerprints and content-addressed tags come from the
product (module_utils/_build.py), so the lab's tags are the build role's.
Builds with the product's own Containerfile template
(roles/build/templates/Containerfile.j2) and helper
(roles/build/files/check-vermagic.sh), rendered with Jinja2 the way Ansible's
template module renders it (StrictUndefined, trim_blocks, Ansible's `quote`
and `to_json` filters), then `podman build --isolation chroot` against the
lab release's DTK and RHCOS images, `podman push` to the lab registry, and the
registry's own manifest digest as the result.

Also reads a pushed image back from the registry (labels, and the files of
the layers added on top of the RHCOS base) so tests check what a node would
pull, not podman's local store.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Sequence

import jinja2
from ansible_collections.ocp.kmod_layering.plugins.module_utils import _build

from . import paths
from .releases import GOARCH
from .state import LabState

TEMPLATE = paths.CHECKOUT / "roles" / "build" / "templates" / "Containerfile.j2"
CHECK_VERMAGIC = paths.CHECKOUT / "roles" / "build" / "files" / "check-vermagic.sh"
FIXTURE_KMODS = paths.CHECKOUT / "tests" / "fixtures" / "kmods"

_MODULE_NAME = _build.MODULE_NAME_RE
_SKIP_DIRS = set(_build.SKIP_DIRS)
_MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


@dataclasses.dataclass(frozen=True)
class KmodSource:
    """One module of a layered image and where its sources come from.

    Exactly one of `path` (a local directory) or `git_url` (cloned into the
    build context, at `git_ref`, default the remote's HEAD). `subdir` picks a
    directory inside the source. The rest maps onto the template's
    `kmod_modules` entries.
    """

    name: str
    path: Path | None = None
    git_url: str | None = None
    git_ref: str | None = None
    subdir: str = ""
    build_command: str | None = None
    load_at_boot: bool = True
    options: str | None = None
    firmware_dir: str | None = None

    def __post_init__(self) -> None:
        if not _MODULE_NAME.match(self.name):
            raise ValueError(f"bad module name {self.name!r}")
        if (self.path is None) == (self.git_url is None):
            raise ValueError(f"module {self.name}: give exactly one of path or git_url")
        for rel in (self.subdir, self.firmware_dir or ""):
            if rel.startswith("/") or ".." in Path(rel).parts:
                raise ValueError(f"module {self.name}: {rel!r} must be a relative path inside the sources")


def fixture(name: str, **kwargs: Any) -> KmodSource:
    """A module of tests/fixtures/kmods (kmodlab_core, kmodlab_dep, kmodlab_panic)."""
    return KmodSource(name=name, path=FIXTURE_KMODS / name, **kwargs)


class BuildError(RuntimeError):
    """`podman build` failed; `output` is everything it printed."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


@dataclasses.dataclass
class BuildResult:
    pullspec: str  # repo@sha256:… as the registry serves it
    tag_ref: str  # repo:tag pushed
    build_key: str
    build_seconds: float
    context: Path


# ---------------------------------------------------------------- rendering


def _ansible_quote(value: Any) -> str:
    # ansible.builtin.quote: shlex.quote of the string form.
    return shlex.quote(str(value))


def _ansible_to_json(value: Any, **kwargs: Any) -> str:
    return json.dumps(value, **kwargs)


def template_environment() -> jinja2.Environment:
    """A Jinja2 environment with the template module's settings that matter here."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["quote"] = _ansible_quote
    env.filters["to_json"] = _ansible_to_json
    return env


def render_containerfile(variables: dict[str, Any]) -> str:
    return template_environment().get_template(TEMPLATE.name).render(**variables)


# ---------------------------------------------------------------- context


def tree_digest(root: Path) -> str:
    """sha256 over a source tree's paths, exec bits and contents (.git skipped):
    the product's fingerprint (module_utils._build.tree_digest)."""
    return str(_build.tree_digest(str(root)))


def _git(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    )
    return result.stdout.strip()


def _fetch_source(module: KmodSource, dest: Path, scratch: Path) -> str:
    """Put the module's sources at `dest`; return the source label's value."""
    if module.path is not None:
        origin = Path(module.path) / module.subdir
        if not origin.is_dir():
            raise FileNotFoundError(f"module {module.name}: no source directory {origin}")
        shutil.copytree(origin, dest, ignore=shutil.ignore_patterns(*_SKIP_DIRS))
        return tree_digest(dest)
    assert module.git_url is not None
    clone = scratch / f"git-{module.name}"
    _git("clone", "--quiet", module.git_url, str(clone))
    if module.git_ref:
        _git("checkout", "--quiet", "--detach", module.git_ref, cwd=clone)
    commit = _git("rev-parse", "HEAD", cwd=clone)
    origin = clone / module.subdir
    if not origin.is_dir():
        raise FileNotFoundError(f"module {module.name}: no directory {module.subdir!r} in {module.git_url}@{commit}")
    shutil.copytree(origin, dest, ignore=shutil.ignore_patterns(*_SKIP_DIRS))
    return f"git+{module.git_url}@{commit}" + (f"#{module.subdir}" if module.subdir else "")


def prepare_context(context: Path, modules: Sequence[KmodSource]) -> list[dict[str, Any]]:
    """Lay out the build context the template expects; return `kmod_modules`."""
    if not modules:
        raise ValueError("no modules to build")
    names = [m.name for m in modules]
    if len(set(names)) != len(names):
        raise ValueError(f"module names repeat: {names}")
    src = context / "src"
    src.mkdir(parents=True)
    shutil.copy2(CHECK_VERMAGIC, context / "check-vermagic.sh")
    kmod_modules: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kmodlab-git-") as scratch:
        for module in modules:
            source = _fetch_source(module, src / module.name, Path(scratch))
            entry: dict[str, Any] = {"name": module.name, "source": source, "load_at_boot": module.load_at_boot}
            if module.build_command is not None:
                entry["build_command"] = module.build_command
            if module.options:
                entry["options"] = module.options
            if module.firmware_dir:
                if not (src / module.name / module.firmware_dir).is_dir():
                    raise FileNotFoundError(f"module {module.name}: no firmware dir {module.firmware_dir}")
                entry["firmware_dir"] = module.firmware_dir
            kmod_modules.append(entry)
    return kmod_modules


def compute_build_key(kernel_version: str, dtk_image: str, rhcos_image: str, kmod_modules: list[dict[str, Any]], context: Path) -> str:
    """The product's build key (module_utils._build.build_key) of a context
    laid out by prepare_context: same inputs, same key, same tag."""
    entries = [
        _build.template_module(entry, tree_digest(context / "src" / entry["name"]), entry["source"]) for entry in kmod_modules
    ]
    recipe = _build.recipe_digest([str(TEMPLATE), str(CHECK_VERMAGIC)])
    return str(_build.build_key(kernel_version, dtk_image, rhcos_image, entries, recipe))


# ---------------------------------------------------------------- registry


def _auth_args(state: LabState) -> list[str]:
    return ["--authfile", str(state.registry["auth_file"]), "--cert-dir", str(Path(state.ca_file).parent)]


def registry_digest(state: LabState, ref: str) -> str:
    """The digest of the manifest the registry serves for `ref` (repo:tag)."""
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", *_auth_args(state), f"docker://{ref}"], check=True, capture_output=True
    ).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _split_ref(pullspec: str) -> tuple[str, str, str]:
    """host, repository, reference (tag or digest) of host/repo[:tag|@digest]."""
    host, rest = pullspec.split("/", 1)
    separator = "@" if "@" in rest else ":"
    repo, reference = rest.rsplit(separator, 1)
    return host, repo, reference


def registry_request(state: LabState, host: str, path: str, *, method: str = "GET", accept: str | None = None,
                     body: bytes | None = None, content_type: str | None = None) -> tuple[bytes, str]:
    """One request to the lab registry's API (``/v2/<path>``): the body and
    Content-Type of the answer."""
    # The lab registry at registry["host"] takes Basic auth (htpasswd).
    credentials = f"{state.registry['username']}:{state.registry['password']}".encode()
    request = urllib.request.Request(f"https://{host}/v2/{path}", method=method, data=body)
    request.add_header("Authorization", "Basic " + base64.b64encode(credentials).decode())
    if accept:
        request.add_header("Accept", accept)
    if content_type:
        request.add_header("Content-Type", content_type)
    context = ssl.create_default_context(cafile=state.ca_file)
    with urllib.request.urlopen(request, context=context, timeout=60) as response:
        return bytes(response.read()), response.headers.get("Content-Type", "")


def manifest_request(state: LabState, pullspec: str, *, method: str = "GET",
                     body: tuple[bytes, str] | None = None) -> tuple[bytes, str]:
    """GET (manifest and media type), DELETE or PUT (``body``) the manifest
    of ``pullspec``."""
    host, repo, reference = _split_ref(pullspec)
    return registry_request(state, host, f"{repo}/manifests/{reference}", method=method, accept=_MANIFEST_TYPES,
                            body=body[0] if body else None, content_type=body[1] if body else None)


def _registry_get(state: LabState, host: str, path: str, accept: str | None = None) -> bytes:
    return registry_request(state, host, path, accept=accept)[0]


@dataclasses.dataclass
class PulledImage:
    """What a node pulling the image would get, read over the registry API."""

    manifest: dict[str, Any]
    config: dict[str, Any]
    labels: dict[str, str]
    files: dict[str, bytes]  # path (no leading /) -> content, of the layers above the base
    layer_sizes: list[int]  # compressed size of every layer
    added_layer_sizes: list[int]  # compressed size of the layers above the base

    @property
    def size(self) -> int:
        return sum(self.layer_sizes)


def _manifest_and_config(state: LabState, pullspec: str) -> tuple[dict[str, Any], dict[str, Any]]:
    host, repo, reference = _split_ref(pullspec)
    manifest = json.loads(_registry_get(state, host, f"{repo}/manifests/{reference}", _MANIFEST_TYPES))
    config = json.loads(_registry_get(state, host, f"{repo}/blobs/{manifest['config']['digest']}"))
    return manifest, config


def pull_image(state: LabState, pullspec: str, base: str) -> PulledImage:
    """Read `pullspec` from the registry; files come from the layers it adds on `base`.

    Layers are matched on the config's diff_ids (uncompressed digests), so
    a push that recompressed the base's layers still counts them as base.
    """
    host, repo = _split_ref(pullspec)[:2]
    manifest, config = _manifest_and_config(state, pullspec)
    base_config = _manifest_and_config(state, base)[1]
    base_diff_ids = set(base_config["rootfs"]["diff_ids"])
    files: dict[str, bytes] = {}
    added_sizes: list[int] = []
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"]):
        if diff_id in base_diff_ids:
            continue
        added_sizes.append(int(layer["size"]))
        blob = _registry_get(state, host, f"{repo}/blobs/{layer['digest']}")
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            for member in tar:
                name = member.name
                while name.startswith("./"):
                    name = name[2:]
                name = name.lstrip("/")
                base_name = name.rsplit("/", 1)[-1]
                if base_name.startswith(".wh."):
                    files.pop(name.rsplit("/", 1)[0] + "/" + base_name[4:], None)
                    continue
                if member.isfile():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    files[name] = extracted.read()
    return PulledImage(
        manifest=manifest,
        config=config,
        labels=dict(config.get("config", {}).get("Labels") or {}),
        files=files,
        layer_sizes=[int(layer["size"]) for layer in manifest["layers"]],
        added_layer_sizes=added_sizes,
    )


def pull_rootfs(state: LabState, pullspec: str, dest: Path) -> Path:
    """Unpack every layer of `pullspec`, read from the registry, into `dest`
    (with the product's layer code, whiteouts applied), e.g. to boot it."""
    from ansible_collections.ocp.kmod_layering.plugins.module_utils import _rootfs

    host, repo = _split_ref(pullspec)[:2]
    manifest = _manifest_and_config(state, pullspec)[0]
    for layer in manifest["layers"]:  # bottom to top
        _rootfs.apply_layer(io.BytesIO(_registry_get(state, host, f"{repo}/blobs/{layer['digest']}")), str(dest))
    return dest


# ---------------------------------------------------------------- build


def _as_sources(modules: Iterable[KmodSource | str]) -> list[KmodSource]:
    return [fixture(m) if isinstance(m, str) else m for m in modules]


def build(
    state: LabState,
    release_version: str,
    modules: Iterable[KmodSource | str],
    repository: str = "kmodlab/layered",
    tag: str | None = None,
    kernel_version_override: str | None = None,
    arch: str | None = None,
) -> BuildResult:
    """Build and push a layered image for a lab release; see build_layered_image."""
    release = state.release(release_version)
    arch = arch or ("x86_64" if release.get("arch") == "multi" else release.get("arch")) or "x86_64"
    # A multi payload: the architecture's own DTK and RHCOS (by their manifest digests).
    part = (release.get("platforms") or {}).get(arch, release) if release.get("arch") == "multi" else release
    kernel_version = kernel_version_override or part["kernel"]
    dtk_image = part["images"]["driver-toolkit"]
    rhcos_image = part["images"][release["os_tag"]]
    for base in (dtk_image, rhcos_image):
        if "@sha256:" not in base:
            raise ValueError(f"release {release_version}: base image {base} is not pinned by digest")
    sources = _as_sources(modules)

    work = state.root / "layered"
    work.mkdir(parents=True, exist_ok=True)
    context = Path(tempfile.mkdtemp(prefix="context-", dir=work))
    kmod_modules = prepare_context(context, sources)
    build_key = compute_build_key(kernel_version, dtk_image, rhcos_image, kmod_modules, context)
    containerfile = render_containerfile(
        {
            "dtk_image": dtk_image,
            "rhcos_image": rhcos_image,
            "kernel_version": kernel_version,
            "build_key": build_key,
            "kmod_modules": kmod_modules,
        }
    )
    (context / "Containerfile").write_text(containerfile)
    tag_ref = f"{state.registry['host']}/{repository}:{tag or _build.image_tag(build_key, kernel_version)}"

    started = time.monotonic()
    build_argv = [
        "podman", "build", "--isolation", "chroot", "--layers", "--pull=missing",
        # another architecture's build runs under qemu-user (hack/setup.sh registers it)
        *([] if arch == "x86_64" else ["--platform", f"linux/{GOARCH[arch]}"]),
        *_auth_args(state), "-f", str(context / "Containerfile"), "-t", tag_ref, str(context),
    ]  # fmt: skip
    for _attempt in range(3):
        result = subprocess.run(build_argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        # Another worker's `podman rmi` took a cached step away mid-build (it
        # removes dangling parents too): build again, as the product does.
        if result.returncode == 0 or not re.search(r"(image|layer) not known", result.stdout):
            break
    (context / "build.log").write_text(result.stdout)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-40:])
        raise BuildError(
            f"podman build of {tag_ref} failed (exit {result.returncode}); log {context / 'build.log'}:\n{tail}",
            result.stdout,
        )
    build_seconds = time.monotonic() - started
    push = subprocess.run(
        ["podman", "push", "--quiet", *_auth_args(state), tag_ref, f"docker://{tag_ref}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if push.returncode != 0:
        raise BuildError(f"podman push of {tag_ref} failed (exit {push.returncode}): {push.stderr.strip()}", push.stderr)
    repo = tag_ref.rsplit(":", 1)[0]
    pullspec = f"{repo}@{registry_digest(state, tag_ref)}"
    return BuildResult(pullspec=pullspec, tag_ref=tag_ref, build_key=build_key, build_seconds=build_seconds, context=context)


def build_layered_image(
    state: LabState,
    release_version: str,
    modules: Iterable[KmodSource | str],
    repository: str = "kmodlab/layered",
    tag: str | None = None,
    kernel_version_override: str | None = None,
    arch: str | None = None,
) -> str:
    """Build the release's RHCOS image + `modules`, push it; return repo@sha256:….

    `modules`: KmodSource entries, or names of tests/fixtures/kmods modules,
    in build order (kmodlab_core before kmodlab_dep). `tag` defaults to the
    build key, so the same inputs give the same tag.
    `kernel_version_override` targets another kernel than the release's with
    the release's DTK (to show a mismatch is refused). Raises BuildError with
    podman's output when the build fails. `arch`: for a `-multi` release,
    which architecture's image (default x86_64); other releases build for
    their own (an aarch64 one under emulation).
    """
    return build(state, release_version, modules, repository, tag, kernel_version_override, arch).pullspec
