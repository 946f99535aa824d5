# -*- coding: utf-8 -*-
# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply container image layers (tar, optionally gzip/zstd compressed) to a
directory, in order, the way a container runtime builds a rootfs:

- whiteouts: ``.wh.<name>`` deletes ``<name>`` from lower layers,
  ``.wh..wh..opq`` empties its directory of lower-layer content;
- no entry may land outside the directory: ``..`` and absolute names are
  confined, and symlinks met on the way (``lib -> /usr/lib``) are resolved
  inside the directory like a chroot would, never on the host;
- device nodes are skipped; ownership is not applied (modes are).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import os
import shutil
import tarfile

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class LayerError(Exception):
    """A layer cannot be applied (unknown compression, unsafe entry, ...)."""


class _Prefixed:
    """A read-only stream with already-read leading bytes put back."""

    def __init__(self, prefix, stream):
        self.prefix = prefix
        self.stream = stream

    def read(self, size=-1):
        if self.prefix:
            if size is None or size < 0:
                data, self.prefix = self.prefix + self.stream.read(), b""
                return data
            data, self.prefix = self.prefix[:size], self.prefix[size:]
            if len(data) < size:
                data += self.stream.read(size - len(data))
            return data
        return self.stream.read(size)


def decompressed(stream):
    """The uncompressed tar stream of a layer blob, sniffing the compression
    from its first bytes (media types are not always truthful)."""
    head = b""
    while len(head) < 4:
        chunk = stream.read(4 - len(head))
        if not chunk:
            break
        head += chunk
    raw = _Prefixed(head, stream)
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head.startswith(ZSTD_MAGIC):
        try:
            import zstandard  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise LayerError("zstd-compressed layer and the zstandard package is not installed")
        return zstandard.ZstdDecompressor().stream_reader(raw)
    return raw


def normalize(name):
    """Tar member name -> clean relative path ('' for the root); ``..`` can
    not climb above the root."""
    parts = []
    for part in name.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def secure_join(root, relpath, follow_last=False, _depth=0):
    """Host path of ``relpath`` inside ``root``, resolving symlinks met on the
    way relative to ``root`` (absolute targets mean ``root``)."""
    parts = normalize(relpath).split("/") if normalize(relpath) else []
    resolved = []
    for index, part in enumerate(parts):
        candidate = os.path.join(root, *(resolved + [part]))
        last = index == len(parts) - 1
        if os.path.islink(candidate) and (follow_last or not last):
            if _depth > 40:
                raise LayerError("too many levels of symlinks in %s" % relpath)
            target = os.readlink(candidate)
            base = "" if target.startswith("/") else "/".join(resolved)
            rest = "/".join([base, target] + parts[index + 1:])
            return secure_join(root, rest, follow_last, _depth + 1)
        resolved.append(part)
    return os.path.join(root, *resolved) if resolved else root


def _remove(path):
    if os.path.islink(path) or not os.path.isdir(path):
        if os.path.lexists(path):
            os.unlink(path)
    else:
        shutil.rmtree(path)


def _ensure_dir(root, relpath):
    """Create directory ``relpath`` inside root (following symlinks inside
    root, as a later layer writing through ``lib -> usr/lib`` expects)."""
    host = secure_join(root, relpath, follow_last=True)
    if os.path.lexists(host) and not os.path.isdir(host):
        os.unlink(host)
    # secure_join resolved every symlink: what remains are plain components.
    os.makedirs(host, exist_ok=True)
    return host


def apply_layer(stream, root, keep=None):
    """Apply one layer (a readable stream of the blob, any supported
    compression) on top of ``root``. ``keep(relpath) -> bool`` optionally
    limits which files are written (whiteouts always apply). Returns the
    number of entries written."""
    if not os.path.isdir(root):
        os.makedirs(root)
    written = 0
    added = set()  # (dir, name) this layer created: opaque markers spare them
    opaque = []
    with tarfile.open(fileobj=decompressed(stream), mode="r|") as archive:
        for member in archive:
            path = normalize(member.name)
            if not path:
                continue
            parent, base = os.path.dirname(path), os.path.basename(path)
            if base == OPAQUE_MARKER:
                opaque.append(parent)
                continue
            if base.startswith(WHITEOUT_PREFIX):
                victim = (parent + "/" if parent else "") + base[len(WHITEOUT_PREFIX):]
                host = secure_join(root, victim)
                if os.path.lexists(host):
                    _remove(host)
                continue
            if keep is not None and not member.isdir() and not member.issym() and not keep(path):
                continue
            if parent:
                _ensure_dir(root, parent)
            host = secure_join(root, path)
            if member.isdir():
                if os.path.lexists(host) and not os.path.isdir(host) or os.path.islink(host):
                    _remove(host)
                if not os.path.isdir(host):
                    os.mkdir(host)
                os.chmod(host, member.mode & 0o7777 | 0o700)
            elif member.isfile():
                if os.path.lexists(host):
                    _remove(host)
                source = archive.extractfile(member)
                with open(host, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                os.chmod(host, member.mode & 0o7777)
            elif member.issym():
                if os.path.lexists(host):
                    _remove(host)
                os.symlink(member.linkname, host)
            elif member.islnk():
                if keep is not None and not keep(normalize(member.linkname)):
                    continue  # its target was filtered out: so is the link
                target = secure_join(root, member.linkname)
                if not os.path.lexists(target):
                    raise LayerError("hard link %s to missing %s" % (path, member.linkname))
                if os.path.lexists(host):
                    _remove(host)
                os.link(target, host)
            else:
                continue  # devices and fifos: not needed for a rootfs we read
            # Remember (directory, child) pairs up the tree for opaque markers.
            parts = path.split("/")
            for index in range(len(parts)):
                added.add(("/".join(parts[:index]), parts[index]))
            written += 1
    for directory in opaque:
        host = secure_join(root, directory, follow_last=True)
        if not os.path.isdir(host):
            continue
        _prune_lower(host, directory, added)
    return written


def _prune_lower(host, relpath, added):
    """Opaque directory: everything below it that this layer did not write
    comes from lower layers and disappears."""
    for name in os.listdir(host):
        child = os.path.join(host, name)
        if (relpath, name) not in added:
            _remove(child)
        elif os.path.isdir(child) and not os.path.islink(child):
            _prune_lower(child, (relpath + "/" if relpath else "") + name, added)
