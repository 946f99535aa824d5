# Copyright (c) ocp.kmod_layering contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the pure parts of _registry (no network)."""

import base64
import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

from ansible_collections.ocp.kmod_layering.plugins.module_utils import _registry as r

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text, registry, repository, tag, digest",
    [
        ("quay.io/ns/repo:tag", "quay.io", "ns/repo", "tag", None),
        ("quay.io/openshift-release-dev/ocp-release:4.16.30-x86_64", "quay.io",
         "openshift-release-dev/ocp-release", "4.16.30-x86_64", None),
        ("quay.io/ns/repo@" + DIGEST, "quay.io", "ns/repo", None, DIGEST),
        ("quay.io/ns/repo:v1@" + DIGEST, "quay.io", "ns/repo", "v1", DIGEST),
        ("127.0.0.1:15000/a/b/c", "127.0.0.1:15000", "a/b/c", "latest", None),
        ("host:5000/repo", "host:5000", "repo", "latest", None),
        ("localhost/img:1", "localhost", "img", "1", None),
        ("busybox", "docker.io", "library/busybox", "latest", None),
        ("user/img:2", "docker.io", "user/img", "2", None),
        ("index.docker.io/library/alpine", "docker.io", "library/alpine", "latest", None),
        ("docker://quay.io/x/y:z", "quay.io", "x/y", "z", None),
    ],
)
def test_parse_pullspec(text, registry, repository, tag, digest):
    ref = r.parse_pullspec(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


def test_reference_helpers():
    ref = r.parse_pullspec("quay.io/ns/repo:v1")
    assert ref.reference == "v1"
    pinned = ref.with_digest(DIGEST)
    assert str(pinned) == "quay.io/ns/repo@" + DIGEST
    assert pinned.reference == DIGEST
    assert r.parse_pullspec(str(pinned)) == pinned


@pytest.mark.parametrize("text", ["", "quay.io/Upper/repo", "quay.io/ns/repo@sha256:short",
                                  "quay.io/ns/repo:bad tag", "quay.io/ns//repo", "quay.io/ns/repo:"])
def test_parse_pullspec_invalid(text):
    with pytest.raises(r.InvalidReferenceError):
        r.parse_pullspec(text)


def test_www_authenticate_bearer():
    scheme, params = r.parse_www_authenticate(
        'Bearer realm="https://127.0.0.1:15002/token",service="kmodlab-registry",'
        'scope="repository:openshift-release-dev/ocp-release:pull",error="invalid_token"')
    assert scheme == "bearer"
    assert params == {"realm": "https://127.0.0.1:15002/token", "service": "kmodlab-registry",
                      "scope": "repository:openshift-release-dev/ocp-release:pull", "error": "invalid_token"}


def test_www_authenticate_basic_and_odd():
    assert r.parse_www_authenticate('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})
    assert r.parse_www_authenticate("") == ("", {})
    scheme, params = r.parse_www_authenticate('Bearer realm="a\\"b", service=plain')
    assert scheme == "bearer" and params == {"realm": 'a"b', "service": "plain"}


INDEX = [
    {"digest": "sha256:" + "1" * 64, "platform": {"architecture": "amd64", "os": "linux"}},
    {"digest": "sha256:" + "2" * 64, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
    {"digest": "sha256:" + "3" * 64, "platform": {"architecture": "unknown", "os": "unknown"}},
    {"digest": "sha256:" + "4" * 64, "platform": {"architecture": "s390x", "os": "linux"}},
]


@pytest.mark.parametrize("arch, index", [("x86_64", 0), ("amd64", 0), ("aarch64", 1), ("s390x", 3)])
def test_choose_platform(arch, index):
    assert r.choose_platform(INDEX, arch) is INDEX[index]


def test_choose_platform_missing_lists_present():
    with pytest.raises(r.PlatformNotFoundError) as err:
        r.choose_platform(INDEX, "ppc64le")
    assert "linux/ppc64le" in str(err.value)
    assert err.value.available == ["linux/amd64", "linux/arm64/v8", "linux/s390x"]
    assert "unknown" not in str(err.value)


def _b64(text):
    return base64.b64encode(text.encode()).decode()


def test_parse_auth_config_forms():
    dockerconfig = {"auths": {"quay.io": {"auth": _b64("u1:p:1")}, "https://index.docker.io/v1/": {"auth": _b64("hub:pw")},
                              "127.0.0.1:15000/private": {"username": "u2", "password": "p2"},
                              "empty.example.com": {"email": "x"}}}
    auths = r.parse_auth_config(json.dumps(dockerconfig))
    assert auths == {"quay.io": ("u1", "p:1"), "docker.io": ("hub", "pw"), "127.0.0.1:15000/private": ("u2", "p2")}
    legacy = {"quay.io": {"auth": _b64("a:b")}}
    assert r.parse_auth_config(legacy) == {"quay.io": ("a", "b")}
    secret = {"kind": "Secret", "data": {".dockerconfigjson": _b64(json.dumps(dockerconfig))}}
    assert r.parse_auth_config(secret)["quay.io"] == ("u1", "p:1")


def test_parse_auth_config_errors():
    with pytest.raises(r.RegistryError):
        r.parse_auth_config("{not json")
    with pytest.raises(r.RegistryError):
        r.parse_auth_config({"auths": {"quay.io": {"auth": _b64("nocolon")}}})


def test_lookup_credentials_most_specific():
    auths = {"127.0.0.1:15000": ("host", "x"), "127.0.0.1:15000/ns": ("ns", "y")}
    assert r.lookup_credentials(auths, r.parse_pullspec("127.0.0.1:15000/ns/repo")) == (("ns", "y"), "127.0.0.1:15000/ns")
    assert r.lookup_credentials(auths, r.parse_pullspec("127.0.0.1:15000/other/repo"))[1] == "127.0.0.1:15000"
    assert r.lookup_credentials(auths, r.parse_pullspec("quay.io/a/b")) == (None, None)


def test_credentials_source_names_file_not_secret(tmp_path):
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {"reg.example.com:5000": {"auth": _b64("bob:s3cr3t")}}}))
    client = r.RegistryClient(auth_file=str(path))
    creds, source = client.credentials_for(r.parse_pullspec("reg.example.com:5000/a/b"))
    assert creds == ("bob", "s3cr3t")
    assert str(path) in source and "bob" in source and "s3cr3t" not in source
    creds, source = client.credentials_for(r.parse_pullspec("quay.io/a/b"))
    assert creds is None and "no entry for quay.io" in source


def test_manifest_media_type_inference():
    assert r.manifest_media_type({"mediaType": r.MT_DOCKER_LIST, "manifests": []}) == r.MT_DOCKER_LIST
    assert r.manifest_media_type({"manifests": []}) == r.MT_OCI_INDEX
    assert r.manifest_media_type({"config": {}, "layers": []}) == r.MT_OCI_MANIFEST
    assert r.manifest_media_type({"config": {}}, r.MT_DOCKER_MANIFEST + "; charset=utf-8") == r.MT_DOCKER_MANIFEST


def _tar(members, compress=True):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            if data is None:
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw) if compress else raw


@pytest.mark.parametrize("compress", [True, False])
def test_iter_tar_layer(compress):
    blob = _tar([("./usr", None), ("./usr/lib/modules/6.1.0-1/vmlinuz", b"kernel"), ("/etc/x", b"y")], compress)
    seen = [(path, f.read() if f else None) for path, _m, f in r.iter_tar_layer(io.BytesIO(blob))]
    assert seen == [("usr", None), ("usr/lib/modules/6.1.0-1/vmlinuz", b"kernel"), ("etc/x", b"y")]


def test_iter_tar_layer_not_tar():
    with pytest.raises(r.RegistryError):
        list(r.iter_tar_layer(io.BytesIO(b"this is not a tar stream" * 100)))


class _Counter(object):
    bytes_fetched = 0


def test_blob_reader_verifies_and_caches(tmp_path):
    data = os.urandom(200000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    dest = tmp_path / "blob"
    fd_path = r.RegistryClient._cache_tmp(str(dest))
    counter = _Counter()
    blob = r.BlobReader(counter, digest, io.BytesIO(data), cache_tmp=fd_path, cache_path=str(dest))
    assert blob.read() == data
    blob.close()
    assert counter.bytes_fetched == len(data)
    assert dest.read_bytes() == data


def test_blob_reader_digest_mismatch(tmp_path):
    data = b"x" * 1000
    blob = r.BlobReader(_Counter(), DIGEST, io.BytesIO(data))
    with pytest.raises(r.DigestMismatchError) as err:
        while blob.read(100):
            pass
    assert DIGEST in str(err.value)


def test_blob_reader_early_stop_counts_and_does_not_cache(tmp_path):
    data = os.urandom(100000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    dest = tmp_path / "blob"
    counter = _Counter()
    blob = r.BlobReader(counter, digest, io.BytesIO(data), cache_tmp=r.RegistryClient._cache_tmp(str(dest)),
                        cache_path=str(dest))
    assert len(blob.read(4096)) == 4096
    blob.close()
    assert counter.bytes_fetched == 4096
    assert not dest.exists()
    assert os.listdir(str(tmp_path)) == []


def _put(cache, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = os.path.join(cache, "blobs", "sha256", digest.split(":")[1])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return digest


def _image_in_cache(cache, layers):
    """An OCI image whose manifest, config and layers only live in the cache."""
    config = json.dumps({"config": {"Labels": {"a": "b"}}}).encode()
    descs = []
    for blob in layers:
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": _put(cache, blob), "size": len(blob)})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": r.MT_OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": _put(cache, config), "size": len(config)},
                           "layers": descs}).encode()
    return _put(cache, manifest), descs


def test_find_in_layers_last_first_stops_early(tmp_path):
    cache = str(tmp_path)
    layers = [_tar([("usr/lib/modules/OLD/vmlinuz", b"")]), _tar([("usr/lib/modules/NEW/vmlinuz", b"")]),
              _tar([("etc/motd", b"hi")])]
    digest, descs = _image_in_cache(cache, layers)
    client = r.RegistryClient(cache_dir=cache)
    manifest = client.get_manifest(r.parse_pullspec("unreachable.invalid/x/y@" + digest))
    assert r.image_labels(client.get_config(manifest.ref, manifest)) == {"a": "b"}
    seen = []

    def match(path, _f):
        seen.append(path)
        return path.split("/")[3] if path.endswith("vmlinuz") else None

    value, info = r.find_in_layers(client, manifest, match)
    assert value == "NEW"
    assert info["layer_index"] == 2 and info["layers_read"] == 2 and info["layer_count"] == 3
    assert info["layer_digest"] == descs[1]["digest"]
    assert "usr/lib/modules/OLD/vmlinuz" not in seen
    assert client.bytes_fetched == 0 and client.requests == 0

    # scan outcomes are remembered per layer: the rerun reads no layer
    value, info = r.find_in_layers(client, manifest, match, cache_key="kernel")
    assert value == "NEW"
    value, info = r.find_in_layers(client, manifest, match, cache_key="kernel")
    assert (value, info["layers_read"], info["path"]) == ("NEW", 0, "usr/lib/modules/NEW/vmlinuz")


def test_find_in_layers_max_layers(tmp_path):
    cache = str(tmp_path)
    digest, _descs = _image_in_cache(cache, [_tar([("found", b"")]), _tar([("other", b"")])])
    client = r.RegistryClient(cache_dir=cache)
    manifest = client.get_manifest(r.parse_pullspec("unreachable.invalid/x/y@" + digest))
    value, info = r.find_in_layers(client, manifest, lambda p, f: p if p == "found" else None, max_layers=1)
    assert value is None and info["layers_read"] == 1


def test_corrupt_cache_entry_is_not_trusted(tmp_path):
    cache = str(tmp_path)
    digest = _put(cache, b'{"schemaVersion": 2}')
    path = os.path.join(cache, "blobs", "sha256", digest.split(":")[1])
    with open(path, "wb") as handle:
        handle.write(b"tampered")
    client = r.RegistryClient(cache_dir=cache, timeout=2)
    with pytest.raises(r.RegistryConnectionError):
        client.get_manifest(r.parse_pullspec("127.0.0.1:1/x/y@" + digest))


def test_check_platform():
    ref = r.parse_pullspec("quay.io/a/b:1")
    r.check_platform({"architecture": "amd64", "os": "linux"}, "x86_64", ref)
    r.check_platform({}, "x86_64", ref)  # configs that do not say are accepted
    with pytest.raises(r.PlatformNotFoundError, match="quay.io/a/b:1 is a linux/arm64 image, not linux/amd64"):
        r.check_platform({"architecture": "arm64", "os": "linux"}, "x86_64", ref)


# Layer media types as registries serve them (OCI image-spec media-types.md;
# Docker image manifest v2 schema 2; containers/image's zstd:chunked annotation).
LAYERS = [
    {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "1" * 64},
    {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": "sha256:" + "2" * 64},
    {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": "sha256:" + "3" * 64},
    {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": "sha256:" + "4" * 64,
     "annotations": {"io.github.containers.zstd-chunked.manifest-checksum": "sha256:" + "5" * 64}},
    {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + "6" * 64},
]


def test_layer_compression_and_the_layers_that_are_not_gzip():
    assert [r.layer_compression(layer) for layer in LAYERS] == ["gzip", "gzip", "zstd", "zstd:chunked", "none"]
    assert [index for index, _layer in r.non_gzip_layers({"layers": LAYERS})] == [2, 3, 4]
    assert r.non_gzip_layers({"layers": LAYERS[:2]}) == []


def test_a_cache_directory_another_fork_makes_meanwhile_is_used(tmp_path, racing_mkdir):
    # Two hosts of one run resolve into a new cache at once: the directory
    # appears between a "does it exist?" and the creation; unguarded, that
    # crashes the module (FileExistsError).
    cache = str(tmp_path)
    data = b'{"schemaVersion": 2}'
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client = r.RegistryClient(cache_dir=cache)
    client._cache_put(digest, data)
    assert client._cache_get(digest) == data
