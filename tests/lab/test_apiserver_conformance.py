"""The lab's API server answers like a real kube-apiserver, over real HTTPS.

Clients are the real ones: the ``kubernetes`` Python client (typed API,
DynamicClient, watch) and kubernetes.core's ``k8s`` / ``k8s_info`` modules run
by ``ansible-playbook``. One server per module, in a thread, on a free port,
with a throwaway CA, a server certificate and a bearer token.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from kmodlab.apiserver import LabAPIServer, RequestLogClient, ServerThread, write_kubeconfig

TOKEN = 'conformance-token'
MC_API = 'machineconfiguration.openshift.io/v1'
PLAYBOOKS = Path(__file__).parent / 'playbooks'
REPO = Path(__file__).resolve().parents[2]


# --- fixtures ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


@pytest.fixture(scope='module')
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost."""
    root = tmp_path_factory.mktemp('pki')
    now = datetime.datetime.now(tz=datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'apiserver-test-ca')])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'kube-apiserver')]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName('localhost'),
                                                        x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TLSFiles(root / 'ca.crt', root / 'server.crt', root / 'server.key')
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(files.key_file, key)
    return files


@pytest.fixture(scope='module')
def api(tls: TLSFiles) -> Iterator[ServerThread]:
    server = LabAPIServer(bookmark_interval=0.2)
    with ServerThread(server, certfile=tls.cert_file, keyfile=tls.key_file, token=TOKEN) as running:
        yield running


@pytest.fixture(scope='module')
def server(api: ServerThread) -> LabAPIServer:
    return api.server


@pytest.fixture(scope='module')
def kubeconfig(api: ServerThread, tls: TLSFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('kube') / 'kubeconfig'
    return write_kubeconfig(path, api.url, tls.ca_file, TOKEN, 'conformance')


@pytest.fixture(scope='module')
def kube(kubeconfig: Path) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(str(kubeconfig))
    yield client
    client.close()


@pytest.fixture(scope='module')
def dyn(kube: kubernetes.client.ApiClient) -> DynamicClient:
    return DynamicClient(kube)


def raw_request(api: ServerThread, tls: TLSFiles, path: str, *, token: str | None = TOKEN,
                method: str = 'GET') -> tuple[int, Any]:
    headers = {'Authorization': f'Bearer {token}'} if token else {}
    request = urllib.request.Request(api.url + path, method=method, headers=headers)
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def machineconfig(name: str, image: str = 'registry.lab/kmod@sha256:' + 'a' * 64, **spec: Any) -> dict[str, Any]:
    return {'apiVersion': MC_API, 'kind': 'MachineConfig',
            'metadata': {'name': name, 'labels': {'machineconfiguration.openshift.io/role': 'worker'}},
            'spec': {'osImageURL': image, **spec}}


def pool(name: str) -> dict[str, Any]:
    return {'apiVersion': MC_API, 'kind': 'MachineConfigPool', 'metadata': {'name': name},
            'spec': {'machineConfigSelector': {'matchLabels': {'machineconfiguration.openshift.io/role': name}},
                     'maxUnavailable': 1, 'paused': False}}


def api_error(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.value.body)
    return body


# --- auth, TLS, discovery ---------------------------------------------------------------------


def test_requests_without_a_valid_token_are_401(api: ServerThread, tls: TLSFiles) -> None:
    status, body = raw_request(api, tls, '/api/v1/namespaces', token=None)
    assert status == 401
    assert body['kind'] == 'Status' and body['reason'] == 'Unauthorized' and body['code'] == 401
    status, body = raw_request(api, tls, '/apis', token='wrong')
    assert status == 401
    assert raw_request(api, tls, '/healthz', token=None) == (200, 'ok')
    status, body = raw_request(api, tls, '/api/v1/namespaces')
    assert status == 200 and body['kind'] == 'NamespaceList'


def test_server_certificate_is_checked_against_the_ca(api: ServerThread) -> None:
    # Without the lab CA the server's certificate is untrusted: TLS is real.
    with pytest.raises(urllib.error.URLError, match='CERTIFICATE_VERIFY_FAILED'):
        urllib.request.urlopen(api.url + '/healthz', context=ssl.create_default_context(), timeout=30)


def test_discovery_of_core_and_openshift_resources(dyn: DynamicClient) -> None:
    pods = dyn.resources.get(api_version='v1', kind='Pod')
    assert pods.namespaced is True
    assert set(pods.subresources) == {'log', 'status'}
    assert pods.subresources['log'].verbs == ['get']
    assert dyn.resources.get(api_version='v1', kind='Namespace').namespaced is False
    assert dyn.resources.get(api_version='v1', kind='Node').namespaced is False
    for kind in ('Secret', 'ConfigMap', 'Event'):
        assert dyn.resources.get(api_version='v1', kind=kind).namespaced is True
    expected_status = {'MachineConfig': False, 'MachineConfigPool': True, 'MachineOSConfig': True,
                       'MachineOSBuild': True}
    for kind, has_status in expected_status.items():
        resource = dyn.resources.get(api_version=MC_API, kind=kind)
        assert resource.namespaced is False
        assert ('status' in resource.subresources) is has_status
        assert set(resource.verbs) >= {'create', 'get', 'list', 'patch', 'update', 'watch', 'delete'}
    cv = dyn.resources.get(api_version='config.openshift.io/v1', kind='ClusterVersion')
    assert cv.name == 'clusterversions' and cv.namespaced is False and 'status' in cv.subresources
    mcp = dyn.resources.get(api_version=MC_API, short_names=['mcp'])
    assert mcp.kind == 'MachineConfigPool'


# --- metadata, generation, status -------------------------------------------------------------


def test_metadata_and_generation_rules(dyn: DynamicClient) -> None:
    mcp = dyn.resources.get(api_version=MC_API, kind='MachineConfigPool')
    created = mcp.create(body=pool('gen-rules')).to_dict()
    meta = created['metadata']
    assert meta['uid'] and meta['creationTimestamp'].endswith('Z') and meta['generation'] == 1
    rv0 = int(meta['resourceVersion'])

    labelled = mcp.patch(name='gen-rules', body={'metadata': {'labels': {'a': 'b'}}},
                         content_type='application/merge-patch+json').to_dict()
    assert labelled['metadata']['generation'] == 1  # metadata-only change
    assert int(labelled['metadata']['resourceVersion']) > rv0

    status = mcp.status.patch(name='gen-rules', body={'status': {'machineCount': 3}},
                              content_type='application/merge-patch+json').to_dict()
    assert status['metadata']['generation'] == 1  # status-only change
    assert status['status']['machineCount'] == 3

    paused = mcp.patch(name='gen-rules', body={'spec': {'paused': True}},
                       content_type='application/merge-patch+json').to_dict()
    assert paused['metadata']['generation'] == 2  # spec change
    assert paused['metadata']['uid'] == meta['uid']

    same = mcp.patch(name='gen-rules', body={'spec': {'paused': True}},
                     content_type='application/merge-patch+json').to_dict()
    assert same['metadata']['resourceVersion'] == paused['metadata']['resourceVersion']  # no-op write

    listed = mcp.get()
    assert listed.kind == 'MachineConfigPoolList' and listed.apiVersion == MC_API
    assert int(listed.metadata.resourceVersion) >= int(paused['metadata']['resourceVersion'])


def test_status_subresource_is_kept_apart(dyn: DynamicClient) -> None:
    mcp = dyn.resources.get(api_version=MC_API, kind='MachineConfigPool')
    body = pool('status-apart') | {'status': {'machineCount': 7}}
    created = mcp.create(body=body).to_dict()
    assert 'status' not in created  # status is not settable on create

    status = mcp.status.patch(name='status-apart', content_type='application/merge-patch+json',
                              body={'spec': {'paused': True}, 'status': {'machineCount': 2},
                                    'metadata': {'labels': {'via': 'status'}}}).to_dict()
    assert status['status'] == {'machineCount': 2}
    assert status['spec']['paused'] is False  # /status ignores spec
    assert 'via' not in (status['metadata'].get('labels') or {})  # and metadata

    main = mcp.patch(name='status-apart', content_type='application/merge-patch+json',
                     body={'spec': {'paused': True}, 'status': {'machineCount': 99}}).to_dict()
    assert main['spec']['paused'] is True
    assert main['status'] == {'machineCount': 2}  # the main resource ignores status

    current = mcp.get(name='status-apart').to_dict()
    current['status'] = {'machineCount': 5}
    current['spec']['paused'] = False
    replaced = mcp.replace(body=current).to_dict()
    assert replaced['status'] == {'machineCount': 2} and replaced['spec']['paused'] is False


def test_stale_resource_version_is_409(dyn: DynamicClient) -> None:
    mc = dyn.resources.get(api_version=MC_API, kind='MachineConfig')
    first = mc.create(body=machineconfig('99-stale')).to_dict()
    updated = dict(first, spec=dict(first['spec'], kernelArguments=['a']))
    second = mc.replace(body=updated).to_dict()
    assert second['metadata']['generation'] == 2

    stale = dict(first, spec=dict(first['spec'], kernelArguments=['b']))  # carries the old resourceVersion
    with pytest.raises(ApiException) as exc:
        mc.replace(body=stale)
    assert exc.value.status == 409
    status = api_error(exc)
    assert status['reason'] == 'Conflict'
    assert 'the object has been modified' in status['message']
    assert mc.get(name='99-stale').spec.kernelArguments == ['a']

    with pytest.raises(ApiException) as exc:  # optimistic locking through a merge patch too
        mc.patch(name='99-stale', content_type='application/merge-patch+json',
                 body={'metadata': {'resourceVersion': first['metadata']['resourceVersion']},
                       'spec': {'fips': True}})
    assert exc.value.status == 409


def test_strategic_merge_patch_of_a_custom_resource_is_415(dyn: DynamicClient) -> None:
    mc = dyn.resources.get(api_version=MC_API, kind='MachineConfig')
    mc.create(body=machineconfig('99-smp'))
    with pytest.raises(ApiException) as exc:
        mc.patch(name='99-smp', body={'spec': {'fips': True}},
                 content_type='application/strategic-merge-patch+json')
    assert exc.value.status == 415
    assert api_error(exc)['reason'] == 'UnsupportedMediaType'
    assert mc.get(name='99-smp').spec.fips is None

    cm = dyn.resources.get(api_version='v1', kind='ConfigMap')  # core kinds accept it
    cm.create(namespace='default', body={'metadata': {'name': 'smp'}, 'data': {'a': '1'}})
    patched = cm.patch(name='smp', namespace='default', body={'data': {'b': '2'}},
                       content_type='application/strategic-merge-patch+json')
    assert dict(patched.data) == {'a': '1', 'b': '2'}


def test_json_patch(dyn: DynamicClient) -> None:
    mc = dyn.resources.get(api_version=MC_API, kind='MachineConfig')
    mc.create(body=machineconfig('99-jsonpatch', kernelArguments=['a']))
    patched = mc.patch(name='99-jsonpatch', content_type='application/json-patch+json', body=[
        {'op': 'test', 'path': '/spec/kernelArguments/0', 'value': 'a'},
        {'op': 'add', 'path': '/spec/kernelArguments/-', 'value': 'b'},
        {'op': 'replace', 'path': '/spec/osImageURL', 'value': 'registry.lab/x@sha256:' + 'd' * 64},
    ]).to_dict()
    assert patched['spec']['kernelArguments'] == ['a', 'b']
    assert patched['spec']['osImageURL'].endswith('d' * 64)
    with pytest.raises(ApiException) as exc:
        mc.patch(name='99-jsonpatch', content_type='application/json-patch+json',
                 body=[{'op': 'test', 'path': '/spec/kernelArguments/0', 'value': 'zzz'}])
    assert exc.value.status == 422


# --- schema validation ------------------------------------------------------------------------


def test_schema_invalid_machineconfig_is_422_with_field_path(dyn: DynamicClient) -> None:
    mc = dyn.resources.get(api_version=MC_API, kind='MachineConfig')
    with pytest.raises(ApiException) as exc:
        mc.create(body=machineconfig('99-invalid', image=5))  # type: ignore[arg-type]
    assert exc.value.status == 422
    status = api_error(exc)
    assert status['reason'] == 'Invalid'
    assert status['message'].startswith(
        'MachineConfig.machineconfiguration.openshift.io "99-invalid" is invalid: spec.osImageURL: ')
    assert status['details']['kind'] == 'MachineConfig'
    assert status['details']['group'] == 'machineconfiguration.openshift.io'
    assert [cause['field'] for cause in status['details']['causes']] == ['spec.osImageURL']
    assert 'must be of type string' in status['details']['causes'][0]['message']
    with pytest.raises(ApiException):
        mc.get(name='99-invalid')

    with pytest.raises(ApiException) as exc:  # several errors at once, like the server lists them
        mc.create(body=machineconfig('99-invalid', fips='yes', kernelArguments='nosmt'))
    fields = [cause['field'] for cause in api_error(exc)['details']['causes']]
    assert fields == ['spec.fips', 'spec.kernelArguments']


def test_unknown_fields_are_pruned_and_structural_extensions_understood(dyn: DynamicClient) -> None:
    mc = dyn.resources.get(api_version=MC_API, kind='MachineConfig')
    created = mc.create(body=machineconfig('99-prune', bogus={'x': 1}, kernelArguments=None,
                                           config={'ignition': {'version': '3.4.0'}, 'free': {'form': 1}})).to_dict()
    assert 'bogus' not in created['spec']  # pruned, no error
    assert created['spec']['config']['free'] == {'form': 1}  # x-kubernetes-preserve-unknown-fields
    assert created['spec']['kernelArguments'] is None  # nullable

    mcp = dyn.resources.get(api_version=MC_API, kind='MachineConfigPool')
    percent = mcp.create(body=pool('int-or-string') | {'spec': {'maxUnavailable': '50%'}}).to_dict()
    assert percent['spec']['maxUnavailable'] == '50%'  # x-kubernetes-int-or-string

    mosc = dyn.resources.get(api_version=MC_API, kind='MachineOSConfig')
    with pytest.raises(ApiException) as exc:
        mosc.create(body={'apiVersion': MC_API, 'kind': 'MachineOSConfig', 'metadata': {'name': 'worker'},
                          'spec': {'machineConfigPool': {'name': 'worker'}}})
    causes = api_error(exc)['details']['causes']
    assert {c['field'] for c in causes} == {'spec.imageBuilder', 'spec.renderedImagePushSecret',
                                            'spec.renderedImagePushSpec'}
    assert {c['message'] for c in causes} == {'Required value'}


def test_cel_rules_of_the_vendored_crds(dyn: DynamicClient) -> None:
    mosc = dyn.resources.get(api_version=MC_API, kind='MachineOSConfig')
    body = {'apiVersion': MC_API, 'kind': 'MachineOSConfig', 'metadata': {'name': 'infra'},
            'spec': {'machineConfigPool': {'name': 'worker'}, 'imageBuilder': {'imageBuilderType': 'Job'},
                     'renderedImagePushSecret': {'name': 'push-secret'},
                     'renderedImagePushSpec': 'registry.lab:5000/kmod/os:latest'}}
    with pytest.raises(ApiException) as exc:  # one MachineOSConfig per pool, named after it
        mosc.create(body=body)
    status = api_error(exc)
    assert status['message'] == ('MachineOSConfig.machineconfiguration.openshift.io "infra" is invalid: <nil>: '
                                 'Invalid value: "object": MachineOSConfig name must match the referenced '
                                 'MachineConfigPool name; can only have one MachineOSConfig per MachineConfigPool')
    body['metadata']['name'] = 'worker'
    body['spec']['renderedImagePushSpec'] = 'registry.lab:5000/kmod/os'  # no tag
    with pytest.raises(ApiException) as exc:
        mosc.create(body=body)
    assert [c['field'] for c in api_error(exc)['details']['causes']] == ['spec.renderedImagePushSpec']
    body['spec']['renderedImagePushSpec'] = 'registry.lab:5000/kmod/os:latest'
    mosc.create(body=body)

    mosc.status.patch(name='worker', body={'status': {'observedGeneration': 2}},
                      content_type='application/merge-patch+json')
    with pytest.raises(ApiException) as exc:  # a transition rule: self >= oldSelf
        mosc.status.patch(name='worker', body={'status': {'observedGeneration': 1}},
                          content_type='application/merge-patch+json')
    assert api_error(exc)['details']['causes'][0]['field'] == 'status.observedGeneration'


# --- selectors --------------------------------------------------------------------------------


def test_label_and_field_selectors(kube: kubernetes.client.ApiClient) -> None:
    v1 = kubernetes.client.CoreV1Api(kube)
    v1.create_namespace({'metadata': {'name': 'selectors'}})
    for name, node, labels in (('p1', 'node-a', {'app': 'kmod', 'tier': 'x'}),
                               ('p2', 'node-b', {'app': 'kmod'}),
                               ('p3', 'node-a', {'app': 'other'})):
        v1.create_namespaced_pod('selectors', {'metadata': {'name': name, 'labels': labels},
                                               'spec': {'nodeName': node, 'containers': [{'name': 'c', 'image': 'i'}]}})
    v1.patch_namespaced_pod_status('p3', 'selectors', {'status': {'phase': 'Running'}})

    def names(**kwargs: str) -> list[str]:
        return [p.metadata.name for p in v1.list_namespaced_pod('selectors', **kwargs).items]

    assert names(label_selector='app=kmod') == ['p1', 'p2']
    assert names(label_selector='app==kmod,tier') == ['p1']
    assert names(label_selector='app!=kmod') == ['p3']
    assert names(label_selector='app in (kmod, other),!tier') == ['p2', 'p3']
    assert names(label_selector='app notin (kmod)') == ['p3']
    assert names(label_selector='tier notin (y)') == ['p1', 'p2', 'p3']
    assert names(field_selector='spec.nodeName=node-a') == ['p1', 'p3']
    assert names(field_selector='spec.nodeName=node-a,status.phase=Pending') == ['p1']
    assert names(field_selector='status.phase!=Pending') == ['p3']
    assert names(field_selector='metadata.name=p2') == ['p2']
    everywhere = v1.list_pod_for_all_namespaces(field_selector='metadata.namespace=selectors')
    assert [p.metadata.name for p in everywhere.items] == ['p1', 'p2', 'p3']
    with pytest.raises(ApiException) as exc:
        v1.list_namespaced_pod('selectors', field_selector='spec.bogus=1')
    assert exc.value.status == 400

    v1.delete_collection_namespaced_pod('selectors', label_selector='app=other')
    assert names() == ['p1', 'p2']
    v1.create_namespaced_pod('selectors', {'metadata': {'name': 'p3', 'labels': {'app': 'other'}},
                                           'spec': {'nodeName': 'node-a', 'containers': [{'name': 'c', 'image': 'i'}]}})

    page = v1.list_namespaced_pod('selectors', limit=2)
    assert [p.metadata.name for p in page.items] == ['p1', 'p2'] and page.metadata._continue
    rest = v1.list_namespaced_pod('selectors', limit=2, _continue=page.metadata._continue)
    assert [p.metadata.name for p in rest.items] == ['p3'] and not rest.metadata._continue


# --- watch ------------------------------------------------------------------------------------


def test_watch_resumes_from_a_resource_version_and_410_after_compaction(
    dyn: DynamicClient, server: LabAPIServer
) -> None:
    mc = dyn.resources.get(api_version=MC_API, kind='MachineConfig')
    created = mc.create(body=machineconfig('99-watched')).to_dict()
    since = created['metadata']['resourceVersion']
    mc.patch(name='99-watched', body={'spec': {'fips': True}}, content_type='application/merge-patch+json')
    mc.create(body=machineconfig('99-other'))
    mc.delete(name='99-watched')

    watcher = kubernetes.watch.Watch()
    seen: list[tuple[str, str, bool | None]] = []
    for event in dyn.watch(mc, resource_version=since, timeout=30, watcher=watcher,
                           field_selector='metadata.name=99-watched'):
        seen.append((event['type'], event['object'].metadata.name, event['raw_object']['spec'].get('fips')))
        if len(seen) == 2:
            watcher.stop()
    assert seen == [('MODIFIED', '99-watched', True), ('DELETED', '99-watched', True)]

    unfiltered = kubernetes.watch.Watch()
    types = []
    for event in dyn.watch(mc, resource_version=since, timeout=30, watcher=unfiltered):
        types.append((event['type'], event['object'].metadata.name))
        if len(types) == 3:
            unfiltered.stop()
    assert types == [('MODIFIED', '99-watched'), ('ADDED', '99-other'), ('DELETED', '99-watched')]

    server.compact_watch_history()
    with pytest.raises(ApiException) as exc:
        for _event in dyn.watch(mc, resource_version=since, timeout=30):
            pass
    assert exc.value.status == 410
    assert 'too old resource version' in str(exc.value)


def test_watch_streams_live_events_bookmarks_and_ends_at_timeout(dyn: DynamicClient,
                                                                 kube: kubernetes.client.ApiClient) -> None:
    cm = dyn.resources.get(api_version='v1', kind='ConfigMap')
    cm.create(namespace='default', body={'metadata': {'name': 'live-0'}})

    def writer() -> None:
        cm.create(namespace='default', body={'metadata': {'name': 'live-1'}})

    events: list[tuple[str, str]] = []
    thread: threading.Thread | None = None
    v1 = kubernetes.client.CoreV1Api(kube)
    watch = kubernetes.watch.Watch()
    # Without a resourceVersion the watch starts with the current state, then goes live.
    for event in watch.stream(v1.list_namespaced_config_map, 'default', timeout_seconds=120,
                              allow_watch_bookmarks=True):
        events.append((event['type'], event['object'].metadata.name if event['type'] != 'BOOKMARK' else ''))
        if thread is None:
            thread = threading.Thread(target=writer)
            thread.start()
        if ('ADDED', 'live-1') in events and events[-1][0] == 'BOOKMARK':
            watch.stop()
    assert thread is not None
    thread.join()
    assert events.index(('ADDED', 'live-0')) < events.index(('ADDED', 'live-1'))
    resource_version = watch.resource_version  # the client tracks it from events and bookmarks
    assert int(resource_version) >= int(cm.get(namespace='default', name='live-1').metadata.resourceVersion)

    # From the current resourceVersion nothing new happens: the server ends the stream at timeoutSeconds.
    quiet = list(kubernetes.watch.Watch().stream(v1.list_namespaced_config_map, 'default', timeout_seconds=1,
                                                 resource_version=resource_version))
    assert [e['type'] for e in quiet] == []


def test_stop_ends_open_watches(tls: TLSFiles) -> None:
    server = LabAPIServer(namespaces=('default',))
    ended = threading.Event()
    with ServerThread(server, certfile=tls.cert_file, keyfile=tls.key_file, token=TOKEN) as running:
        config = kubernetes.client.Configuration(host=running.url, api_key={'authorization': f'Bearer {TOKEN}'})
        config.ssl_ca_cert = str(tls.ca_file)
        client = kubernetes.client.ApiClient(config)
        v1 = kubernetes.client.CoreV1Api(client)

        def watch_forever() -> None:
            try:
                for _event in kubernetes.watch.Watch().stream(v1.list_namespace, resource_version='0',
                                                              timeout_seconds=3600):
                    pass
            finally:
                ended.set()

        watcher = threading.Thread(target=watch_forever, daemon=True)
        watcher.start()
        for _attempt in range(1200):  # a guard against hanging, not a timing assertion
            if server.count_requests(verb='watch'):
                break
            time.sleep(0.05)
        assert server.count_requests(verb='watch') == 1
    watcher.join(timeout=60)
    client.close()
    assert ended.is_set()  # the server closed the stream on stop, the client saw its end


# --- deletion, pod logs, apply ----------------------------------------------------------------


def test_create_conflicts_and_missing_namespace(kube: kubernetes.client.ApiClient) -> None:
    v1 = kubernetes.client.CoreV1Api(kube)
    v1.create_namespaced_secret('default', {'metadata': {'name': 'once'}, 'stringData': {'k': 'v'}})
    assert v1.read_namespaced_secret('once', 'default').data == {'k': 'dg=='}
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_secret('default', {'metadata': {'name': 'once'}})
    assert exc.value.status == 409 and api_error(exc)['reason'] == 'AlreadyExists'
    assert api_error(exc)['message'] == 'secrets "once" already exists'
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_config_map('nowhere', {'metadata': {'name': 'x'}})
    assert exc.value.status == 404 and api_error(exc)['message'] == 'namespaces "nowhere" not found'
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_config_map('default', {'metadata': {'name': 'Not_A_Name'}})
    assert exc.value.status == 422 and api_error(exc)['details']['causes'][0]['field'] == 'metadata.name'
    generated = v1.create_namespaced_config_map('default', {'metadata': {'generateName': 'gen-'}})
    assert generated.metadata.name.startswith('gen-') and len(generated.metadata.name) == 9


def test_delete_waits_for_finalizers(dyn: DynamicClient, server: LabAPIServer) -> None:
    mc = dyn.resources.get(api_version=MC_API, kind='MachineConfig')
    body = machineconfig('99-finalized')
    body['metadata']['finalizers'] = ['kmodlab.io/hold']
    mc.create(body=body)
    marked = mc.delete(name='99-finalized').to_dict()
    assert marked['metadata']['deletionTimestamp']
    assert mc.get(name='99-finalized').metadata.deletionTimestamp
    mc.patch(name='99-finalized', body={'metadata': {'finalizers': None}},
             content_type='application/merge-patch+json')
    with pytest.raises(ApiException) as exc:
        mc.get(name='99-finalized')
    assert exc.value.status == 404
    assert api_error(exc)['message'] == 'machineconfigs.machineconfiguration.openshift.io "99-finalized" not found'
    assert server.get_object(MC_API, 'MachineConfig', '99-finalized') is None


def test_pod_log_endpoint(kube: kubernetes.client.ApiClient) -> None:
    v1 = kubernetes.client.CoreV1Api(kube)
    v1.create_namespaced_pod('default', {'metadata': {'name': 'debug-node'},
                                         'spec': {'nodeName': 'worker-0',
                                                  'containers': [{'name': 'container-00', 'image': 'x'}]}})
    with pytest.raises(ApiException) as exc:
        v1.read_namespaced_pod_log('debug-node', 'default')
    assert exc.value.status == 400
    assert json.loads(exc.value.body)['message'].startswith(
        'container "container-00" in pod "debug-node" is waiting to start')

    # What a node agent does: log text in the annotation (main resource), phase through /status.
    v1.patch_namespaced_pod('debug-node', 'default',
                            {'metadata': {'annotations': {'kmodlab.io/log': 'line 1\nkmod_hello 16384 0\n'}}})
    v1.patch_namespaced_pod_status('debug-node', 'default', {'status': {'phase': 'Succeeded'}})
    assert v1.read_namespaced_pod_log('debug-node', 'default') == 'line 1\nkmod_hello 16384 0\n'
    assert v1.read_namespaced_pod_log('debug-node', 'default', tail_lines=1) == 'kmod_hello 16384 0\n'
    with pytest.raises(ApiException) as exc:
        v1.read_namespaced_pod_log('missing', 'default')
    assert exc.value.status == 404


def test_server_side_apply_ownership(dyn: DynamicClient) -> None:
    mc = dyn.resources.get(api_version=MC_API, kind='MachineConfig')
    body = machineconfig('99-ssa', kernelArguments=['a'])
    created = mc.server_side_apply(body=body, field_manager='first')
    assert created.spec.kernelArguments == ['a']
    again = mc.server_side_apply(body=body, field_manager='first')
    assert again.metadata.resourceVersion == created.metadata.resourceVersion  # nothing changed

    shared = mc.server_side_apply(body=machineconfig('99-ssa'), field_manager='second')  # same value: no conflict
    assert shared.spec.osImageURL == body['spec']['osImageURL']
    other = machineconfig('99-ssa', image='registry.lab/kmod@sha256:' + 'e' * 64)
    with pytest.raises(ApiException) as exc:
        mc.server_side_apply(body=other, field_manager='second')
    assert exc.value.status == 409
    status = api_error(exc)
    assert status['reason'] == 'Conflict'
    assert status['details']['causes'][0]['field'] == '.spec.osImageURL'
    assert 'conflict with "first"' in status['message']

    forced = mc.server_side_apply(body=other, field_manager='second', force_conflicts=True)
    assert forced.spec.osImageURL.endswith('e' * 64)
    # Re-applying the old image as "first" conflicts now: "second" took that field over.
    with pytest.raises(ApiException) as exc:
        mc.server_side_apply(body=body, field_manager='first')
    assert 'conflict with "second"' in api_error(exc)['message']
    # "first" still owns kernelArguments (and the labels): dropping them from its config removes them.
    labels_only = {key: body[key] for key in ('apiVersion', 'kind', 'metadata')}
    dropped = mc.server_side_apply(body=labels_only, field_manager='first')
    assert dropped.spec.kernelArguments is None
    assert dropped.spec.osImageURL.endswith('e' * 64)
    assert dropped.metadata.labels['machineconfiguration.openshift.io/role'] == 'worker'


# --- request log ------------------------------------------------------------------------------


def test_request_log_counts_in_process_and_over_http(api: ServerThread, dyn: DynamicClient,
                                                     server: LabAPIServer, tls: TLSFiles) -> None:
    cm = dyn.resources.get(api_version='v1', kind='ConfigMap')
    server.reset_requests()
    cm.create(namespace='default', body={'metadata': {'name': 'counted-1'}})
    cm.get(namespace='default', name='counted-1')
    cm.get(namespace='default')
    assert server.count_requests() == 3
    assert server.count_writes() == 1
    assert server.count_requests(verb='create', resource='configmaps') == 1
    assert server.count_by_request()[('GET', '/api/v1/namespaces/default/configmaps/counted-1', 'get')] == 1

    remote = RequestLogClient(api.url, TOKEN, tls.ca_file)
    assert remote.count() == 3  # reading the log is not logged
    assert remote.writes() == 1
    assert remote.count(verb='list') == 1
    remote.reset()
    assert server.count_requests() == 0
    for _event in dyn.watch(cm, namespace='default', timeout=1):
        pass
    assert server.count_requests(verb='watch') == 1


def test_kmock_reactions_take_precedence_for_fault_injection(tls: TLSFiles) -> None:
    server = LabAPIServer(namespaces=('default',))
    with ServerThread(server, certfile=tls.cert_file, keyfile=tls.key_file, token=TOKEN) as running:
        server['get /api/v1/namespaces'] << 503
        assert raw_request(running, tls, '/api/v1/namespaces')[0] == 503
        assert raw_request(running, tls, '/api/v1/namespaces', token=None)[0] == 401  # auth still comes first
        assert raw_request(running, tls, '/api/v1/namespaces/default')[0] == 200
        server.clear_reactions()
        status, body = raw_request(running, tls, '/api/v1/namespaces')
        assert status == 200 and [ns['metadata']['name'] for ns in body['items']] == ['default']
        assert server.count_requests(path='/api/v1/namespaces') == 3


# --- kubernetes.core --------------------------------------------------------------------------


def test_kubernetes_core_modules(api: ServerThread, server: LabAPIServer, kubeconfig: Path, tls: TLSFiles,
                                 tmp_path: Path) -> None:
    """k8s create / idempotent rerun / merge patch / server-side apply / absent; k8s_info selectors + wait."""
    waiting = pool('worker-wait')
    waiting['status'] = {'conditions': [{'type': 'Updated', 'status': 'False',
                                         'lastTransitionTime': '2026-01-01T00:00:00Z'}]}
    server.seed(waiting)
    done = threading.Event()

    def report_updated_once_polled() -> None:
        # Flip the condition only after k8s_info has seen it False: the wait must really wait.
        while not done.is_set():
            if server.count_requests(verb='get', resource='machineconfigpools', name='worker-wait') >= 1:
                current = server.get_object(MC_API, 'MachineConfigPool', 'worker-wait')
                assert current is not None
                current['status']['conditions'][0]['status'] = 'True'
                server.seed(current)
                return
            done.wait(0.1)

    flipper = threading.Thread(target=report_updated_once_polled)
    flipper.start()
    env = dict(os.environ, K8S_AUTH_KUBECONFIG=str(kubeconfig), ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / 'ansible-tmp'))
    extra = {'api_url': api.url, 'token': TOKEN, 'ca_file': str(tls.ca_file), 'out_dir': str(tmp_path),
             'ansible_python_interpreter': sys.executable}
    try:
        result = subprocess.run(
            ['ansible-playbook', '-i', 'localhost,', str(PLAYBOOKS / 'apiserver_k8s_module.yml'),
             '-e', json.dumps(extra)], env=env, capture_output=True, text=True, timeout=600, check=False)
    finally:
        done.set()
        flipper.join()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]

    create_log = json.loads((tmp_path / 'create_log.json').read_text())
    verbs = [(r['method'], r['verb']) for r in create_log['requests']]
    assert ('POST', 'create') in verbs and create_log['writes'] == 1
    warm_log = json.loads((tmp_path / 'create_log_warm.json').read_text())
    assert warm_log['writes'] == 1 and warm_log['total'] <= create_log['total']
    for label, log in (('cold discovery cache', create_log), ('warm discovery cache', warm_log)):
        print(f"kubernetes.core k8s, one create, {label}: {log['total']} requests: "
              + ', '.join(f"{r['method']} {r['path']}" for r in log['requests']))

    waited = json.loads((tmp_path / 'waited.json').read_text())
    conditions = waited['resources'][0]['status']['conditions']
    assert {'type': 'Updated', 'status': 'True'}.items() <= conditions[0].items()
    assert server.count_requests(verb='get', resource='machineconfigpools', name='worker-wait') >= 2
    assert server.get_object(MC_API, 'MachineConfig', '99-worker-kmod-test') is None  # state: absent
