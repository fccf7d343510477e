"""The Helm chart and the plain manifests, checked with a real helm and Kubernetes' schemas.

helm comes from scripts/install-helm.sh (.tools/bin/helm, out of a PyPI wheel); the
rendered manifests are validated with kubernetes-validate's strict schemas (unknown
fields are errors) for Kubernetes 1.35. No API server or CNI runs here: admission,
defaulting, RBAC and NetworkPolicy enforcement are not exercised, only what the chart
renders; the stage Jobs are those the real KubernetesExecutor builds from the chart's
executor ConfigMap, and the platform config and token file are read by the library's parsers.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import importlib.util
import ipaddress
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import openai
import pytest
import yaml
from character.cli.main import app
from character.controller.executor import StageJob
from character.controller.kubernetes_executor import KubernetesExecutor
from character.platform import load_platform_config
from character.security.auth import load_tokens_file
from character.serving.api import ChatRequest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client
from typer.testing import CliRunner

from tests.fixtures.network import free_service_port

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "character"
HELM = ROOT / ".tools" / "bin" / "helm"
VALUES = sorted((CHART / "ci").glob("values-*.yaml"))
VALUE_IDS = [p.stem for p in VALUES]
K8S_VERSION = "1.35"
RELEASE = NAMESPACE = "character"
STAGES = ("prompts", "distill", "dpo", "introspect", "sft", "merge", "eval")
SERVICES = {"controller": 50050, "generation": 50051, "introspection": 50052, "training": 50053,
            "evaluation": 50054}
WORKERS = ("generation", "introspection", "training", "evaluation")
JOB_TEMPLATE = CHART / "files" / "stage-job-template.yaml"


@pytest.fixture(scope="module")
def helm() -> Path:
    if not HELM.exists():  # a missing tool is a failure, never a skip
        pytest.fail(f"{HELM.relative_to(ROOT)} is missing: run scripts/install-helm.sh (`make test` does)")
    return HELM


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (kubectl and the API server do)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@cache
def _render(helm: Path, values: Path | None, sets: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values is not None:
        args += ["-f", str(values)]
    for value in sets:
        args += ["--set", value]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.load_all(result.stdout, Loader=_UniqueKeyLoader) if d]
    return tuple(docs)


def render(helm: Path, values: Path | None = None, *sets: str) -> list[dict[str, Any]]:
    """The chart's objects (deep copies: tests may not change the cache) for a values file and --set values."""
    return copy.deepcopy(list(_render(helm, values, sets)))


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def stage_jobs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The Jobs the controller would create from the executor ConfigMap, one per stage (none
    with the services executor)."""
    cm = by_kind(docs, "ConfigMap").get(f"{RELEASE}-executor")
    if cm is None:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, text in cm["data"].items():
            (Path(tmp) / key).write_text(text)
        executor = KubernetesExecutor.from_config_file(Path(tmp) / "executor.yaml", client.ApiClient())
    return {stage: executor.build_job(StageJob(run_id="run-0123456789ab", stage=stage,
                                               store_uri="s3://character/runs"))
            for stage in STAGES}


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template of a workload, plus those of the stage Jobs the controller would create."""
    specs = {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
             for d in docs if d["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet")}
    for job in stage_jobs(docs).values():
        specs[f"stage Job/{job['metadata']['name']}"] = job["spec"]["template"]["spec"]
    return specs


def validate(doc: dict[str, Any], where: str) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        path = ".".join(str(p) for p in err.path)
        pytest.fail(f"{where}: {doc['kind']}/{doc['metadata'].get('name')}: {path}: {err.message}")


# ---------------------------------------------------------------------- helm lint / template


@pytest.mark.parametrize("values", [None, *VALUES], ids=["defaults", *VALUE_IDS])
def test_helm_lint(helm: Path, values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


# The custom resources the chart renders, with the spec fields their CRDs define (cert-manager
# v1, prometheus-operator v1): kubernetes-validate has no schema for them.
CUSTOM_RESOURCE_FIELDS = {
    ("cert-manager.io/v1", "Certificate"): {
        "secretName", "commonName", "dnsNames", "ipAddresses", "uris", "emailAddresses", "duration",
        "renewBefore", "usages", "privateKey", "issuerRef", "isCA", "subject", "secretTemplate",
        "keystores", "revisionHistoryLimit", "encodeUsagesInRequest", "literalSubject", "otherNames",
        "additionalOutputFormats", "nameConstraints", "renewBeforePercentage", "signatureAlgorithm"},
    ("cert-manager.io/v1", "Issuer"): {"selfSigned", "ca", "acme", "vault", "venafi"},
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels", "podTargetLabels",
        "sampleLimit", "targetLimit", "labelLimit", "attachMetadata", "scrapeProtocols", "bodySizeLimit",
        "scrapeClass", "selectorMechanism", "fallbackScrapeProtocol", "labelNameLengthLimit",
        "labelValueLengthLimit", "keepDroppedTargets", "nativeHistogramBucketLimit",
        "nativeHistogramMinBucketFactor", "scrapeClassicHistograms", "convertClassicHistogramsToNHCB"},
}


@pytest.mark.parametrize("values", [None, *VALUES], ids=["defaults", *VALUE_IDS])
def test_rendered_manifests_are_valid_kubernetes_objects(helm: Path, values: Path | None) -> None:
    docs = render(helm, values)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "NetworkPolicy", "Secret"} <= kinds
    for doc in docs:
        custom = CUSTOM_RESOURCE_FIELDS.get((doc["apiVersion"], doc["kind"]))
        if custom is None:
            validate(doc, str(values))
        else:
            assert set(doc["spec"]) <= custom, f"{doc['kind']}/{doc['metadata']['name']}: {set(doc['spec']) - custom}"
    # So are the stage Jobs the controller makes from the executor ConfigMap.
    for stage, job in stage_jobs(docs).items():
        validate(job, f"{values} stage {stage}")


BAD_VALUES = {
    "replicas-not-an-integer": ("services:\n  generation:\n    replicas: two\n",
                                "at '/services/generation/replicas': got string, want integer"),
    "unknown-top-level-key": ("replica: 2\n", "additional properties 'replica' not allowed"),
    "unknown-service-key": ("services:\n  training:\n    gpu: 1\n",
                            "additional properties 'gpu' not allowed"),
    "unknown-service": ("services:\n  tokenizer:\n    enabled: true\n",
                        "additional properties 'tokenizer' not allowed"),
    "bad-image-flavour": ("services:\n  generation:\n    image: tpu\n", "value must be one of 'cpu', 'gpu'"),
    "port-out-of-range": ("services:\n  controller:\n    port: 80\n", "minimum: got 80, want 1,024"),
    "health-port-past-65535": ("services:\n  controller:\n    port: 64000\n", "maximum: got 64,000, want 63,535"),
    "two-controllers": ("services:\n  controller:\n    replicas: 2\n", "maximum: got 2, want 1"),
    "negative-gpus": ("services:\n  training:\n    gpus: -1\n", "at '/services/training/gpus'"),
    "unknown-stage": ("stageJobs:\n  resources:\n    dpoo: {}\n", "invalid propertyName 'dpoo'"),
    "bad-store-uri": ("store:\n  uri: /data/runs\n", "at '/store/uri'"),
    "external-s3-without-endpoint": ("minio:\n  enabled: false\n", "at '/externalS3"),
    "unknown-executor": ("controller:\n  executor: inline\n", "value must be one of 'kubernetes', 'services'"),
    "plaintext-token": ("controller:\n  auth:\n    tokens: [{name: alice, sha256: hunter2}]\n",
                        "at '/controller/auth/tokens/0/sha256'"),
    "unknown-s3-component": ("s3:\n  componentSecrets:\n    minio: x\n", "invalid propertyName 'minio'"),
    "unknown-serving-key": ("serving:\n  gpu: 1\n", "additional properties 'gpu' not allowed"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_fail_with_the_schema_message(helm: Path, tmp_path: Path, case: str) -> None:
    text, message = BAD_VALUES[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = run_helm(helm, "template", RELEASE, str(CHART), "-f", str(bad))
    assert result.returncode != 0, f"{case} rendered:\n{result.stdout[:500]}"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_external_s3_needs_credentials_for_every_component_it_runs(helm: Path, tmp_path: Path) -> None:
    external = "minio:\n  enabled: false\nexternalS3:\n  endpoint: s3.example.com\n"
    own = "s3:\n  componentSecrets: {controller: c, stages: s}\n"
    # The kubernetes executor runs the controller and stage Jobs: their two Secrets are enough.
    assert not by_kind(render(helm, _write(tmp_path / "ok.yaml", external + own)), "Secret").get(f"{RELEASE}-s3")
    # The workers of the services executor have none.
    services = "controller:\n  executor: services\n"
    for name, text in {"no-keys": external, "workers-without-keys": external + own + services}.items():
        result = run_helm(helm, "template", RELEASE, str(CHART), "-f", str(_write(tmp_path / f"{name}.yaml", text)))
        assert result.returncode != 0, name
        assert "set s3.existingSecret" in result.stderr, name


# ---------------------------------------------------------------------- the chart follows the executor


def _worker_names(docs: list[dict[str, Any]], kind: str) -> set[str]:
    return {n.removeprefix(f"{RELEASE}-") for n in by_kind(docs, kind)} & set(WORKERS)


def _gpu_requests(docs: list[dict[str, Any]]) -> set[str]:
    """Pods (Deployments and the stage Jobs the controller would create) that request a GPU."""
    return {name for name, spec in pod_specs(docs).items()
            for c in spec["containers"] if "nvidia.com/gpu" in c.get("resources", {}).get("requests", {})}


@pytest.mark.parametrize("values", [None, CHART / "ci" / "values-gpu.yaml", CHART / "ci" / "values-external-s3.yaml"],
                         ids=["defaults", "values-gpu", "values-external-s3"])
def test_kubernetes_executor_renders_no_workers(helm: Path, values: Path | None) -> None:
    docs = render(helm, values)
    assert not _worker_names(docs, "Deployment") and not _worker_names(docs, "Service")
    assert not _worker_names(docs, "NetworkPolicy") and not _worker_names(docs, "PodDisruptionBudget")
    config = by_kind(docs, "ConfigMap")[f"{RELEASE}-config"]["data"]
    assert not {f"OCT_{w.upper()}_ADDRESS" for w in WORKERS} & set(config)
    controller = by_kind(docs, "Deployment")[f"{RELEASE}-controller"]["spec"]["template"]["spec"]
    (container,) = controller["containers"]
    args = container["args"]
    assert args[args.index("--executor") + 1] == "kubernetes"
    config_path = Path(args[args.index("--executor-config") + 1])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    volume = next(v for v in controller["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == f"{RELEASE}-executor"
    assert config_path.name in by_kind(docs, "ConfigMap")[f"{RELEASE}-executor"]["data"]
    # GPUs, if any, are asked for by the stage Jobs only, never by a long-running pod.
    assert all(name.startswith("stage Job/") for name in _gpu_requests(docs))


@pytest.mark.parametrize("values", [CHART / "ci" / "values-full.yaml", CHART / "ci" / "values-cpu.yaml"],
                         ids=["values-full", "values-cpu"])
def test_services_executor_renders_the_workers(helm: Path, values: Path) -> None:
    docs = render(helm, values)
    assert _worker_names(docs, "Deployment") == _worker_names(docs, "Service") == set(WORKERS)
    config = by_kind(docs, "ConfigMap")[f"{RELEASE}-config"]["data"]
    for worker in WORKERS:
        assert config[f"OCT_{worker.upper()}_ADDRESS"] == f"{RELEASE}-{worker}:{SERVICES[worker]}"
    (container,) = by_kind(docs, "Deployment")[f"{RELEASE}-controller"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][container["args"].index("--executor") + 1] == "services"
    assert "--executor-config" not in container["args"]
    # Nothing of the kubernetes executor: no Job template, no right to create Jobs, no stage Jobs.
    assert f"{RELEASE}-executor" not in by_kind(docs, "ConfigMap")
    assert not by_kind(docs, "Role")
    assert not stage_jobs(docs)


def test_gpus_are_requested_only_where_the_executor_uses_them(helm: Path) -> None:
    gpu_jobs = _gpu_requests(render(helm, CHART / "ci" / "values-gpu.yaml"))
    assert gpu_jobs == {f"stage Job/oct-0123456789ab-{stage}-a1" for stage in STAGES}
    assert _gpu_requests(render(helm, CHART / "ci" / "values-full.yaml")) == {
        f"Deployment/{RELEASE}-generation", f"Deployment/{RELEASE}-training", f"Deployment/{RELEASE}-serving"}


def test_gpu_values_place_stage_jobs_on_gpu_nodes(helm: Path) -> None:
    jobs = stage_jobs(render(helm, CHART / "ci" / "values-gpu.yaml"))
    for stage, job in jobs.items():
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == "ghcr.io/open-character-training/oct-gpu:0.1.0", stage
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1", stage
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, stage
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert jobs["merge"]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"] == "16Gi"


def test_full_values_put_gpu_workers_on_gpu_nodes(helm: Path) -> None:
    deployments = by_kind(render(helm, CHART / "ci" / "values-full.yaml"), "Deployment")
    for svc in ("generation", "training"):
        dep = deployments[f"{RELEASE}-{svc}"]
        pod = dep["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"].endswith("oct-gpu:0.1.0")
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert dep["spec"]["strategy"]["type"] == "Recreate"
        assert any(v["name"] == "dshm" and v["emptyDir"]["medium"] == "Memory" for v in pod["volumes"])


@pytest.mark.parametrize("values", [None, CHART / "ci" / "values-gpu.yaml", CHART / "ci" / "values-external-s3.yaml"],
                         ids=["defaults", "values-gpu", "values-external-s3"])
def test_executor_configmap_holds_the_job_template_file_byte_for_byte(helm: Path, values: Path | None) -> None:
    data = by_kind(render(helm, values), "ConfigMap")[f"{RELEASE}-executor"]["data"]
    assert data["stage-job-template.yaml"] == JOB_TEMPLATE.read_text(encoding="utf-8")
    assert yaml.safe_load(data["executor.yaml"])["job_template"] == "stage-job-template.yaml"


def test_stage_jobs_get_the_install_settings_from_executor_yaml(helm: Path) -> None:
    """The template is the same for every install; what differs reaches the Job through executor.yaml."""
    jobs = stage_jobs(render(helm, CHART / "ci" / "values-external-s3.yaml"))
    for stage, job in jobs.items():
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        secrets = [r["secretRef"]["name"] for r in container["envFrom"] if "secretRef" in r]
        assert secrets == ["character-s3", "character-endpoint-keys"], stage
        assert {"configMapRef": {"name": f"{RELEASE}-config"}} in container["envFrom"]
        assert pod["serviceAccountName"] == f"{RELEASE}-worker"
        assert container["args"][:6] == ["stage", stage, "--run", "run-0123456789ab", "--store", "s3://character/runs"]


# ---------------------------------------------------------------------- security


def _service_pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name.removeprefix(f"{RELEASE}-"): d["spec"]["template"]["spec"]
            for name, d in by_kind(docs, "Deployment").items() if name.removeprefix(f"{RELEASE}-") in SERVICES}


def _env(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _mount(pod: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume mounted at `path` in `container`."""
    (mount,) = [m for m in container.get("volumeMounts", []) if m["mountPath"] == path]
    return next(v for v in pod["volumes"] if v["name"] == mount["name"])


@pytest.mark.parametrize("values", [None, *VALUES], ids=["defaults", *VALUE_IDS])
def test_every_service_pod_mounts_its_own_tls_secret(helm: Path, values: Path | None) -> None:
    docs = render(helm, values)
    pods = _service_pods(docs)
    assert "controller" in pods
    secrets = by_kind(docs, "Secret")
    certificates = {c["spec"]["secretName"]: c for c in by_kind(docs, "Certificate").values()}
    for svc, pod in pods.items():
        (container,) = pod["containers"]
        name = _mount(pod, container, "/etc/oct/tls")["secret"]["secretName"]
        assert name == f"{RELEASE}-{svc}-tls"
        assert _env(container)["OCT_TLS_DIR"] == "/etc/oct/tls"
        assert "--insecure" not in container["args"]
        if name in certificates:  # cert-manager
            spec = certificates[name]["spec"]
            assert spec["commonName"] == svc and f"{RELEASE}-{svc}" in spec["dnsNames"]
            assert {"server auth", "client auth"} <= set(spec["usages"])
        else:
            data = secrets[name]["data"]
            assert set(data) == {"tls.crt", "tls.key", "ca.crt"}
            _check_certificate(base64.b64decode(data["tls.crt"]), base64.b64decode(data["ca.crt"]), svc)


def _check_certificate(pem: bytes, ca_pem: bytes, svc: str) -> None:
    cert = x509.load_pem_x509_certificate(pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert.verify_directly_issued_by(ca)  # raises unless ca.crt signed it
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == svc
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{RELEASE}-{svc}.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)


def test_the_chart_certificates_work_with_the_real_servers(helm: Path, tmp_path: Path) -> None:
    """A worker started with the chart's generated Secret as its TLS folder: the kubelet's plaintext
    probe gets SERVING on port + 2000, the controller's certificate passes mutual TLS under the
    Service's DNS name, and a client without a certificate is refused."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    secrets = by_kind(render(helm, CHART / "ci" / "values-cpu.yaml"), "Secret")
    folders = {}
    for svc in ("introspection", "controller"):
        folder = folders[svc] = tmp_path / svc
        folder.mkdir()
        for key, value in secrets[f"{RELEASE}-{svc}-tls"]["data"].items():
            (folder / key).write_bytes(base64.b64decode(value))
    port = free_service_port()
    env = {**os.environ, "OCT_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "character.cli", "serve", "introspection", "--host", "127.0.0.1", "--port", str(port),
         "--store", str(tmp_path / "store"), "--tls-dir", str(folders["introspection"])],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        check = health_pb2.HealthCheckRequest()
        with grpc.insecure_channel(f"127.0.0.1:{port + 2000}") as probe:
            grpc.channel_ready_future(probe).result(timeout=60)
            assert health_pb2_grpc.HealthStub(probe).Check(check, timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING
        ca = (folders["controller"] / "ca.crt").read_bytes()
        name = [("grpc.ssl_target_name_override", f"{RELEASE}-introspection.{NAMESPACE}.svc")]
        controller = grpc.ssl_channel_credentials(ca, (folders["controller"] / "tls.key").read_bytes(),
                                                  (folders["controller"] / "tls.crt").read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", controller, options=name) as channel:
            assert health_pb2_grpc.HealthStub(channel).Check(check, timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING
        anonymous = grpc.ssl_channel_credentials(ca)
        with grpc.secure_channel(f"127.0.0.1:{port}", anonymous, options=name) as channel, \
                pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(channel).Check(check, timeout=10)
    finally:
        server.terminate()
        _, log = server.communicate(timeout=30)
    assert '"tls": "mutual"' in log, log[-2000:]


def test_plaintext_only_when_tls_is_off(helm: Path) -> None:
    docs = render(helm, None, "tls.enabled=false")
    for svc, pod in _service_pods(docs).items():
        (container,) = pod["containers"]
        assert "--insecure" in container["args"], svc
        assert "OCT_TLS_DIR" not in _env(container)
    assert not [n for n in by_kind(docs, "Secret") if n.endswith("-tls")]


@pytest.mark.parametrize("values", [None, *VALUES], ids=["defaults", *VALUE_IDS])
def test_probes_target_the_plaintext_health_port(helm: Path, values: Path | None) -> None:
    docs = render(helm, values)
    for svc, pod in _service_pods(docs).items():
        (container,) = pod["containers"]
        port = SERVICES[svc]
        assert container["args"][:4] == ["serve", svc, "--port", str(port)]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": port, "metrics": port + 1000, "health": port + 2000}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port + 2000}, f"{svc} {probe}"
        service = by_kind(docs, "Service")[f"{RELEASE}-{svc}"]
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"grpc": port, "metrics": port + 1000}


def _oct_containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every container running the project's image (not MinIO), stage Jobs included."""
    return {f"{name}/{c['name']}": c for name, spec in pod_specs(docs).items()
            for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] != "minio"}


@pytest.mark.parametrize("values", [None, *VALUES], ids=["defaults", *VALUE_IDS])
def test_hub_downloads_are_off_in_every_pod(helm: Path, values: Path | None) -> None:
    containers = _oct_containers(render(helm, values))
    assert len(containers) >= 3
    for name, container in containers.items():
        assert _env(container).get("HF_HUB_OFFLINE") == "1", name


def test_the_operator_env_reaches_services_and_stage_jobs(helm: Path, tmp_path: Path) -> None:
    values = _write(tmp_path / "values.yaml", 'env: {HF_HUB_OFFLINE: "0"}\n')
    containers = _oct_containers(render(helm, values))
    assert {name: _env(c)["HF_HUB_OFFLINE"] for name, c in containers.items()} == dict.fromkeys(containers, "0")


def _secret_refs(spec: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        names |= {r["secretRef"]["name"] for r in c.get("envFrom", []) if "secretRef" in r}
        names |= {e["valueFrom"]["secretKeyRef"]["name"]
                  for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    for v in spec.get("volumes", []):
        if "secret" in v:
            names.add(v["secret"]["secretName"])
        for source in v.get("projected", {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    return names


@pytest.mark.parametrize("values", [None, CHART / "ci" / "values-cpu.yaml", CHART / "ci" / "values-full.yaml"],
                         ids=["defaults", "values-cpu", "values-full"])
def test_only_minio_and_its_provisioning_job_see_the_root_credentials(helm: Path, values: Path | None) -> None:
    docs = render(helm, values)
    root = f"{RELEASE}-minio-root"
    (provision_name,) = [n for n in by_kind(docs, "Job") if n.startswith(f"{RELEASE}-minio-provision-")]
    assert set(by_kind(docs, "Secret")[root]["data"]) == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
    users = {}
    for name, spec in pod_specs(docs).items():
        refs = _secret_refs(spec)
        if name in (f"Deployment/{RELEASE}-minio", f"Job/{provision_name}"):
            assert root in refs, name
            continue
        assert root not in refs, name
        component = "stages" if name.startswith("stage Job/") else name.removeprefix(f"Deployment/{RELEASE}-")
        (own,) = [r for r in refs if r.startswith(f"{RELEASE}-s3-")]
        assert own == f"{RELEASE}-s3-{component}", name
        users[component] = base64.b64decode(by_kind(docs, "Secret")[own]["data"]["OCT_S3_ACCESS_KEY"]).decode()
    # One MinIO user per component, and the provisioning Job creates every one of them.
    assert len(set(users.values())) == len(users)
    provision = by_kind(docs, "Job")[provision_name]["spec"]["template"]["spec"]
    (users_volume,) = [v for v in provision["volumes"] if v["name"] == "s3-users"]
    provisioned = {s["secret"]["name"] for s in users_volume["projected"]["sources"]}
    assert {f"{RELEASE}-s3-{c}" for c in users} <= provisioned


def test_provisioning_job_is_an_ordinary_job_named_by_its_spec(helm: Path) -> None:
    """Not a Helm hook: `helm install --wait` waits for the controller, which waits for the bucket
    a post-install hook would make only afterwards. Jobs are immutable, so the name carries a hash
    of the spec (and of the user Secrets): an upgrade that changes either makes a new Job."""
    (job,) = [j for n, j in by_kind(render(helm), "Job").items() if "minio-provision" in n]
    assert not [k for k in job["metadata"].get("annotations", {}) if k.startswith("helm.sh/hook")]
    assert re.fullmatch(rf"{RELEASE}-minio-provision-[0-9a-f]{{8}}", job["metadata"]["name"])
    assert "checksum/s3-users" in job["spec"]["template"]["metadata"]["annotations"]


def _s3_setup() -> Any:
    spec = importlib.util.spec_from_file_location("s3_setup", CHART / "files" / "s3_setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_s3_setup_policy_is_limited_to_the_store() -> None:
    module = _s3_setup()
    for writes in (True, False):
        policy = module.store_policy("character", "runs", writes=writes)
        resources = {r for s in policy["Statement"] for r in s["Resource"]}
        assert resources == {"arn:aws:s3:::character", "arn:aws:s3:::character/runs/*"}
        actions = {a for s in policy["Statement"] for a in s["Action"]}
        assert not [a for a in actions if "*" in a or a.startswith("admin:") or "Policy" in a or "DeleteBucket" in a]


def test_the_persona_server_may_read_the_store_but_never_write_it() -> None:
    module = _s3_setup()
    read_only = module.store_policy("character", "runs", writes=False)
    actions = {a for s in read_only["Statement"] for a in s["Action"]}
    assert actions == {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject"}
    assert module.policy_for("serving") == module.READ_ONLY
    assert {module.policy_for(c) for c in ("controller", "generation", "introspection", "training", "evaluation",
                                           "stages")} == {module.READ_WRITE}
    writes = {a for s in module.store_policy("character", "runs")["Statement"] for a in s["Action"]}
    assert {"s3:PutObject", "s3:DeleteObject"} <= writes


class _RecordingAdmin:
    """Stands in for MinIO's admin API (the test S3 server has none): what is attached to whom."""

    def __init__(self, attached: set[str]):
        self.attached = set(attached)

    def user_info(self, access: str) -> str:
        return json.dumps({"policyName": ",".join(sorted(self.attached)), "status": "enabled"})

    def attach_policy(self, policies: list[str], user: str) -> None:
        self.attached |= set(policies)

    def detach_policy(self, policies: list[str], user: str) -> None:
        assert set(policies) <= self.attached, "MinIO refuses to detach what is not attached"
        self.attached -= set(policies)


@pytest.mark.parametrize("before", [set(), {"oct-store-readwrite"}, {"oct-store-readonly"},
                                    {"oct-store-readwrite", "oct-store-readonly"}, {"consoleAdmin-elsewhere"}])
def test_provisioning_leaves_the_serving_user_read_only_whatever_an_earlier_chart_attached(before: set[str]) -> None:
    module = _s3_setup()
    admin = _RecordingAdmin(before)
    module._attach_only(admin, "serving-key", module.policy_for("serving"))
    assert admin.attached & {module.READ_WRITE, module.READ_ONLY} == {module.READ_ONLY}
    assert admin.attached - {module.READ_WRITE, module.READ_ONLY} == before - {module.READ_WRITE, module.READ_ONLY}


def test_s3_setup_creates_the_bucket_with_the_components_keys(s3_server: Any, tmp_path: Path) -> None:
    """The controller's wait-for-store step against the real S3 server: creates, then finds, the bucket."""
    bucket = f"oct-chart-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "OCT_STORE_URI": f"s3://{bucket}/runs",
           "OCT_S3_ENDPOINT": s3_server.endpoint.split("://", 1)[1],
           "OCT_S3_SECURE": str(s3_server.endpoint.startswith("https")).lower(),
           "OCT_S3_ACCESS_KEY": s3_server.access_key, "OCT_S3_SECRET_KEY": s3_server.secret_key,
           "OCT_CREATE_BUCKET": "true"}
    script = [sys.executable, str(CHART / "files" / "s3_setup.py"), "wait-bucket"]
    first = subprocess.run(script, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"bucket {bucket} created" in first.stdout
    env["OCT_CREATE_BUCKET"] = "false"
    again = subprocess.run(script, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0 and f"bucket {bucket} ready" in again.stdout, again.stdout + again.stderr


def test_external_s3_components_use_their_own_secrets(helm: Path) -> None:
    docs = render(helm, CHART / "ci" / "values-external-s3.yaml", "s3.componentSecrets.stages=character-s3-stages")
    refs = {name: _secret_refs(spec) for name, spec in pod_specs(docs).items()}
    assert refs[f"Deployment/{RELEASE}-controller"] >= {"character-s3"}
    for name, names in refs.items():
        if name.startswith("stage Job/"):
            assert "character-s3-stages" in names and "character-s3" not in names, name
    assert not [d for d in docs if "minio" in d["metadata"]["name"]]
    config = by_kind(docs, "ConfigMap")[f"{RELEASE}-config"]["data"]
    assert config["OCT_S3_ENDPOINT"] == "s3.eu-west-1.amazonaws.com" and config["OCT_S3_SECURE"] == "true"


def test_minio_tls_serves_s3_over_tls_and_clients_trust_its_ca(helm: Path) -> None:
    docs = render(helm, CHART / "ci" / "values-full.yaml")
    assert by_kind(docs, "ConfigMap")[f"{RELEASE}-config"]["data"]["OCT_S3_SECURE"] == "true"
    minio = by_kind(docs, "Deployment")[f"{RELEASE}-minio"]["spec"]["template"]["spec"]
    (container,) = minio["containers"]
    certs = container["args"][container["args"].index("--certs-dir") + 1]
    assert _mount(minio, container, certs)["secret"]["secretName"] == f"{RELEASE}-minio-tls"
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    for name, c in _oct_containers(docs).items():
        assert _env(c)["OCT_S3_CA_FILE"] == "/etc/oct/s3-ca/ca.crt", name


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        present = expr["key"] in labels
        if expr["operator"] == "In" and not (present and labels[expr["key"]] in expr["values"]):
            return False
        if expr["operator"] == "NotIn" and present and labels[expr["key"]] in expr["values"]:
            return False
    return True


def _pod_labels(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    labels = {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["metadata"]["labels"]
              for d in docs if d["kind"] in ("Deployment", "Job")}
    for job in stage_jobs(docs).values():
        labels[f"stage Job/{job['metadata']['name']}"] = job["spec"]["template"]["metadata"]["labels"]
    return labels


METADATA = ipaddress.ip_address("169.254.169.254")


@pytest.mark.parametrize("values", [None, *VALUES], ids=["defaults", *VALUE_IDS])
def test_default_deny_covers_every_pod_and_no_rule_reaches_the_metadata_address(
        helm: Path, values: Path | None) -> None:
    docs = render(helm, values)
    policies = by_kind(docs, "NetworkPolicy")
    deny = policies[f"{RELEASE}-default-deny"]["spec"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny and "egress" not in deny
    for name, labels in _pod_labels(docs).items():
        assert _selects(deny["podSelector"], labels), f"{name} escapes the default-deny policy"
    for policy in policies.values():
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to"), f"{policy['metadata']['name']}: an egress rule without `to` allows everything"
            for peer in rule["to"]:
                block = peer.get("ipBlock")
                if block and METADATA in ipaddress.ip_network(block["cidr"]):
                    excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
                    assert any(METADATA in e for e in excepted), f"{policy['metadata']['name']}: {block}"


def test_network_flows_are_the_ones_the_platform_uses(helm: Path) -> None:
    docs = render(helm, CHART / "ci" / "values-full.yaml")
    policies = by_kind(docs, "NetworkPolicy")
    labels = _pod_labels(docs)

    def callers(target: str, port: int) -> set[str]:
        """Pods of the release a policy lets reach `target` on `port` (podSelector peers)."""
        spec = policies[f"{RELEASE}-{target}"]["spec"]
        allowed: set[str] = set()
        for rule in spec["ingress"]:
            if port not in {p["port"] for p in rule.get("ports", [])}:
                continue
            assert rule.get("from"), f"{target}:{port} is open to everyone"
            for peer in rule["from"]:
                if set(peer) == {"podSelector"}:
                    allowed |= {n for n, lab in labels.items() if _selects(peer["podSelector"], lab)}
        return allowed

    controller = f"Deployment/{RELEASE}-controller"
    for worker in ("introspection", "training", "evaluation"):
        assert callers(worker, SERVICES[worker]) == {controller}, worker
    assert callers("generation", SERVICES["generation"]) == {
        controller, f"Deployment/{RELEASE}-introspection", f"Deployment/{RELEASE}-evaluation"}
    assert callers("minio", 9000) == {n for n in labels if n != f"Deployment/{RELEASE}-minio"}
    # Metrics: only from the Prometheus namespace; health: from anywhere (the kubelet).
    rules = policies[f"{RELEASE}-controller"]["spec"]["ingress"]
    (metrics,) = [r for r in rules if r["ports"][0]["port"] == 51050]
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    (health,) = [r for r in rules if r["ports"][0]["port"] == 52050]
    assert "from" not in health


def test_an_ip_block_that_reaches_the_metadata_address_is_refused(helm: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("networkPolicy:\n  endpoints:\n    - to: [{ipBlock: {cidr: 169.254.0.0/16}}]\n")
    result = run_helm(helm, "template", RELEASE, str(CHART), "-f", str(bad))
    assert result.returncode != 0
    message = "networkPolicy.endpoints[0].to[0]: ipBlock 169.254.0.0/16 contains the cloud metadata address"
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("values", [None, *VALUES], ids=["defaults", *VALUE_IDS])
def test_every_deployment_has_a_disruption_budget(helm: Path, values: Path | None) -> None:
    docs = render(helm, values)
    budgets = by_kind(docs, "PodDisruptionBudget")
    for name, deployment in by_kind(docs, "Deployment").items():
        budget = budgets[name]["spec"]
        assert _selects(budget["selector"], deployment["spec"]["template"]["metadata"]["labels"]), name
        assert "maxUnavailable" in budget and budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_service_monitor_scrapes_the_metrics_ports_only_when_asked(helm: Path) -> None:
    assert not by_kind(render(helm), "ServiceMonitor")
    docs = render(helm, CHART / "ci" / "values-full.yaml")
    (monitor,) = by_kind(docs, "ServiceMonitor").values()
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    scraped = {n for n, svc in by_kind(docs, "Service").items()
               if _selects(monitor["spec"]["selector"], svc["metadata"]["labels"])}
    assert scraped == {f"{RELEASE}-{s}" for s in [*SERVICES, "serving"]}


@pytest.mark.parametrize("values", [None, *VALUES], ids=["defaults", *VALUE_IDS])
def test_controller_rights_are_least_privilege(helm: Path, values: Path | None) -> None:
    docs = render(helm, values)
    given = yaml.safe_load((values or CHART / "values.yaml").read_text())
    executor = given.get("controller", {}).get("executor", "kubernetes")
    serving = given.get("serving", {}).get("enabled", False)
    granted = {(group, resource, verb)
               for role in [*by_kind(docs, "Role").values(), *by_kind(docs, "ClusterRole").values()]
               for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}
    allowed = {("authentication.k8s.io", "tokenreviews", "create")}
    if executor == "kubernetes":
        allowed |= ({("batch", "jobs", v) for v in ("create", "get", "list", "watch", "delete")}
                    | {("", "pods", v) for v in ("get", "list")} | {("", "pods/log", "get")})
    assert granted == allowed
    (cluster_role,) = by_kind(docs, "ClusterRole").values()
    assert cluster_role["rules"] == [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
                                      "verbs": ["create"]}]
    def account(name: str) -> dict[str, str]:
        return {"kind": "ServiceAccount", "name": f"{RELEASE}-{name}", "namespace": NAMESPACE}

    for binding in by_kind(docs, "RoleBinding").values():
        assert binding["subjects"] == [account("controller")]
    # The persona server reviews tokens too, and has no other right.
    (cluster_binding,) = by_kind(docs, "ClusterRoleBinding").values()
    assert cluster_binding["subjects"] == [account("controller"), *([account("serving")] if serving else [])]
    # Only the controller's and the persona server's pods mount a token, under their bound ServiceAccounts.
    for name, spec in pod_specs(docs).items():
        if spec.get("serviceAccountName") == f"{RELEASE}-controller":
            assert name == f"Deployment/{RELEASE}-controller"
        elif spec.get("serviceAccountName") == f"{RELEASE}-serving":
            assert name == f"Deployment/{RELEASE}-serving" and serving
        else:
            assert spec.get("automountServiceAccountToken") is False, name


def test_no_token_review_no_cluster_role(helm: Path) -> None:
    docs = render(helm, None, "controller.auth.tokenReview=false")
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    tokens = yaml.safe_load(by_kind(docs, "Secret")[f"{RELEASE}-auth"]["stringData"]["tokens.yaml"])
    assert tokens["service_accounts"] == []


def test_plain_rbac_matches_the_chart(helm: Path) -> None:
    docs = render(helm)
    plain = [d for d in yaml.safe_load_all((ROOT / "k8s" / "rbac.yaml").read_text()) if d]
    for kind in ("Role", "ClusterRole"):
        (chart_role,) = by_kind(docs, kind).values()
        (plain_role,) = [d for d in plain if d["kind"] == kind]
        assert plain_role["rules"] == chart_role["rules"], kind
        assert plain_role["metadata"]["name"] == chart_role["metadata"]["name"], kind
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        (binding,) = [d for d in plain if d["kind"] == kind]
        assert binding["subjects"] == next(iter(by_kind(docs, kind).values()))["subjects"], kind
    accounts = {d["metadata"]["name"] for d in plain if d["kind"] == "ServiceAccount"}
    assert accounts == set(by_kind(docs, "ServiceAccount"))


@pytest.mark.parametrize("values", [None, *VALUES], ids=["defaults", *VALUE_IDS])
def test_every_pod_meets_the_restricted_pod_security_level(helm: Path, values: Path | None) -> None:
    specs = pod_specs(render(helm, values))
    assert len(specs) >= 3
    restricted_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                          "projected", "secret"}
    for name, spec in specs.items():
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 10001, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec), name
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= restricted_volumes, f"{name}: {volume}"
        mounts_tmp = True
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            where = f"{name}/{container['name']}"
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["runAsNonRoot"] is True and sc.get("runAsUser", 10001) == 10001, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert "privileged" not in sc, where
            assert not [p for p in container.get("ports", []) if "hostPort" in p], where
            mounts_tmp &= any(m["mountPath"] == "/tmp" for m in container.get("volumeMounts", []))
            assert "resources" in container and container["resources"].get("limits"), where
        assert mounts_tmp, f"{name}: a read-only root needs a writable /tmp"


def test_platform_config_is_rendered_and_mounted(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, CHART / "ci" / "values-full.yaml")
    text = by_kind(docs, "ConfigMap")[f"{RELEASE}-platform"]["data"]["platform.yaml"]
    (tmp_path / "platform.yaml").write_text(text)
    config = load_platform_config(tmp_path / "platform.yaml")  # the controller's own parser
    assert config.endpoints["judge"].api_key_env == "JUDGE_API_KEY"
    assert config.task_clients == ["controller"]
    for svc, pod in _service_pods(docs).items():
        (container,) = pod["containers"]
        assert _env(container)["OCT_PLATFORM_CONFIG"] == "/etc/oct/platform/platform.yaml"
        assert _mount(pod, container, "/etc/oct/platform")["configMap"]["name"] == f"{RELEASE}-platform", svc
    assert load_platform_config(_write(tmp_path / "default.yaml", by_kind(render(helm), "ConfigMap")[
        f"{RELEASE}-platform"]["data"]["platform.yaml"])).endpoints == {}


@pytest.mark.parametrize("values", [None, *VALUES], ids=["defaults", *VALUE_IDS])
def test_every_platform_config_loads(helm: Path, values: Path | None, tmp_path: Path) -> None:
    docs = render(helm, values)
    text = by_kind(docs, "ConfigMap")[f"{RELEASE}-platform"]["data"]["platform.yaml"]
    config = load_platform_config(_write(tmp_path / "platform.yaml", text))
    for endpoint in config.endpoints.values():  # its key reaches the pods that call it
        assert endpoint.api_key_env and yaml.safe_load((values or CHART / "values.yaml").read_text())["endpointSecret"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_controller_reads_the_token_file_the_chart_makes(helm: Path, tmp_path: Path) -> None:
    digest = "ab" * 32
    docs = render(helm, None, f"controller.auth.tokens[0].name=alice,controller.auth.tokens[0].sha256={digest},"
                              "controller.auth.tokens[0].roles[0]=admin")
    text = by_kind(docs, "Secret")[f"{RELEASE}-auth"]["stringData"]["tokens.yaml"]
    tokens = load_tokens_file(_write(tmp_path / "tokens.yaml", text))  # the controller's own parser
    assert [(t.name, t.sha256, t.roles) for t in tokens.tokens] == [("alice", digest, ["admin"])]
    assert [r.subject for r in tokens.service_accounts] == [f"system:serviceaccount:{NAMESPACE}:{RELEASE}-client"]
    pod = _service_pods(docs)["controller"]
    (container,) = pod["containers"]
    path = Path(_env(container)["OCT_AUTH_TOKENS"] or "")
    assert _mount(pod, container, str(path.parent))["secret"]["secretName"] == f"{RELEASE}-auth"
    # Workers authenticate by certificate: no token file there.
    for svc, worker in _service_pods(render(helm, CHART / "ci" / "values-full.yaml")).items():
        if svc != "controller":
            assert "OCT_AUTH_TOKENS" not in _env(worker["containers"][0]), svc


def test_notes_render(helm: Path) -> None:
    result = run_helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"{RELEASE}-controller:50050" in notes and "oct submit" in notes
    assert "kubernetes executor" in notes and f"{RELEASE}-generation" not in notes


# ---------------------------------------------------------------------- the chart's README


def test_chart_readme_is_generated_from_the_values_comments() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "chart-docs.py"), "--check"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = {line.split("|")[1].strip() for line in readme.splitlines() if line.startswith("| ")}
    for key in values:  # every top-level value is documented, itself or through its keys
        assert key in rows or any(r.startswith(f"{key}.") for r in rows), key
    for needed in ("helm install", "values-gpu.yaml", "externalS3.endpoint",
                   "pod-security.kubernetes.io/enforce=restricted"):
        assert needed in readme, needed


def test_chart_docs_refuses_a_comment_that_documents_nothing(tmp_path: Path) -> None:
    (tmp_path / "values.yaml").write_text("# -- orphan\n\nkey: 1\n")
    (tmp_path / "README.in.md").write_text("<!-- values -->\n")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "chart-docs.py"), "--chart", str(tmp_path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "values.yaml:1: a `# --` comment followed by a blank line" in result.stderr


# ---------------------------------------------------------------------- k8s/ manifests


@pytest.mark.parametrize("name", ["submit-run-job.yaml", "rbac.yaml", "examples/publish-persona-job.yaml",
                                  "examples/chat-persona-job.yaml"])
def test_plain_manifests_are_valid(name: str) -> None:
    for doc in yaml.load_all((ROOT / "k8s" / name).read_text(), Loader=_UniqueKeyLoader):
        if doc:
            validate(doc, name)


def test_no_copy_of_the_job_template_outside_the_chart() -> None:
    assert not (ROOT / "k8s" / "stage-job-template.yaml").exists()


def test_submit_job_runs_oct_submit_with_the_demo_spec(helm: Path) -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "k8s" / "submit-run-job.yaml").read_text()) if d]
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    job = next(d for d in docs if d["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert [*container["command"], *container["args"]] == [
        "oct", "submit", "/spec/run.yaml", "--controller", "character-controller:50050"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert _mount(pod, container, "/spec")["configMap"]["name"] == cm["metadata"]["name"]
    demo = yaml.safe_load((ROOT / "k8s" / "examples" / "run-spec-demo.yaml").read_text())
    assert yaml.safe_load(cm["data"]["run.yaml"]) == demo
    # Authenticated by its projected service-account token, where `oct` looks for a token.
    env = _env(container)
    token = _mount(pod, container, f"{env['OCT_HOME']}/auth")
    assert token["projected"]["sources"] == [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]
    chart = render(helm)
    assert pod["serviceAccountName"] in by_kind(chart, "ServiceAccount")
    tokens = yaml.safe_load(by_kind(chart, "Secret")[f"{RELEASE}-auth"]["stringData"]["tokens.yaml"])
    assert f"system:serviceaccount:{NAMESPACE}:{pod['serviceAccountName']}" in [
        r["subject"] for r in tokens["service_accounts"]]
    # Trusts the chart CA and sees nothing else of the controller's Secret (not its key).
    ca = _mount(pod, container, env["OCT_TLS_DIR"] or "")["secret"]
    assert ca == {"secretName": f"{RELEASE}-controller-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    # The NetworkPolicies let it reach the controller.
    clients = by_kind(chart, "NetworkPolicy")[f"{RELEASE}-controller"]["spec"]["ingress"][0]["from"]
    assert any(_selects(peer["podSelector"], job["spec"]["template"]["metadata"]["labels"]) for peer in clients)


@pytest.mark.parametrize("name", ["run-spec-demo.yaml", "run-spec-full.yaml"])
def test_example_run_specs_use_known_fields(name: str) -> None:
    from character.pipeline.spec import RunSpec

    doc = yaml.safe_load((ROOT / "k8s" / "examples" / name).read_text())
    spec = RunSpec.model_validate(doc)  # extra="forbid": unknown keys fail here
    assert spec.store == "s3://character/runs" and spec.seed == 123456
    assert spec.scale == name.removeprefix("run-spec-").removesuffix(".yaml")


# ---------------------------------------------------------------------- the persona server (serving)

SERVING_PORT = 8443
SERVING_VALUES = [p for p in VALUES if yaml.safe_load(p.read_text()).get("serving", {}).get("enabled")]


def _serving(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The serving pod spec and its one container."""
    pod = by_kind(docs, "Deployment")[f"{RELEASE}-serving"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def test_serving_is_off_by_default_and_refuses_plaintext(helm: Path) -> None:
    docs = render(helm)
    assert not [f"{d['kind']}/{d['metadata']['name']}" for d in docs if "serving" in d["metadata"]["name"]]
    result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                      "--set", "serving.enabled=true", "--set", "tls.enabled=false")
    assert result.returncode != 0 and "serving.enabled needs tls.enabled" in result.stderr


@pytest.mark.parametrize("settings", [["serving.engine=vllm"], ["serving.engine=vllm", "serving.image=gpu"],
                                      ["serving.engine=vllm", "serving.gpus=1"]])
def test_the_vllm_serving_engine_needs_the_gpu_image_and_a_gpu(helm: Path, settings: list[str]) -> None:
    sets = [arg for setting in ["serving.enabled=true", *settings] for arg in ("--set", setting)]
    result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *sets)
    assert result.returncode != 0
    assert "serving.engine=vllm needs serving.image=gpu and serving.gpus >= 1" in result.stderr


def test_every_ci_values_file_turns_serving_on() -> None:
    """So lint-deploy.sh checks the chart with the persona server for every values file."""
    assert {p.stem for p in SERVING_VALUES} == set(VALUE_IDS)


@pytest.mark.parametrize("values", SERVING_VALUES, ids=[p.stem for p in SERVING_VALUES])
def test_serving_pod_runs_serve_personas_with_its_certificate_tokens_and_store(helm: Path, values: Path) -> None:
    docs = render(helm, values)
    given = yaml.safe_load(values.read_text())["serving"]
    pod, container = _serving(docs)
    health = SERVING_PORT + 2000
    args = container["args"]
    assert args[:9] == ["serve-personas", "--host", "0.0.0.0", "--port", str(SERVING_PORT),
                        "--health-port", str(health), "--store", "s3://" + args[8].removeprefix("s3://")]
    assert args[8] == yaml.safe_load(values.read_text()).get("store", {}).get("uri", "s3://character/runs")
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"https": SERVING_PORT, "health": health}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    env = _env(container)
    # Its own certificate, the controller's token file, its own S3 identity, the platform limits.
    tls = _mount(pod, container, env["OCT_TLS_DIR"] or "")["secret"]["secretName"]
    assert tls == f"{RELEASE}-serving-tls"
    tokens = Path(env["OCT_AUTH_TOKENS"] or "")
    assert _mount(pod, container, str(tokens.parent))["secret"]["items"] == [{"key": tokens.name, "path": tokens.name}]
    controller_pod = by_kind(docs, "Deployment")[f"{RELEASE}-controller"]["spec"]["template"]["spec"]
    controller_auth = next(v for v in controller_pod["volumes"] if v["name"] == "auth")
    assert _mount(pod, container, str(tokens.parent)) == controller_auth
    platform = Path(env["OCT_PLATFORM_CONFIG"] or "")
    assert _mount(pod, container, str(platform.parent))["configMap"]["name"] == f"{RELEASE}-platform"
    s3 = {ref["secretRef"]["name"] for ref in container["envFrom"] if "secretRef" in ref}
    secrets = by_kind(docs, "Secret")
    if yaml.safe_load(values.read_text())["minio"]["enabled"]:
        assert s3 == {f"{RELEASE}-s3-serving"} and set(secrets[f"{RELEASE}-s3-serving"]["data"]) == {
            "OCT_S3_ACCESS_KEY", "OCT_S3_SECRET_KEY"}
    else:
        assert s3 == {yaml.safe_load(values.read_text())["s3"]["existingSecret"]}
    certificates = {c["spec"]["secretName"]: c["spec"] for c in by_kind(docs, "Certificate").values()}
    if tls in certificates:
        assert certificates[tls]["commonName"] == "serving"
        assert {f"{RELEASE}-serving.{NAMESPACE}.svc", "localhost"} <= set(certificates[tls]["dnsNames"])
    else:
        data = secrets[tls]["data"]
        _check_certificate(base64.b64decode(data["tls.crt"]), base64.b64decode(data["ca.crt"]), "serving")
    # GPUs and placement as the values say; the CPU engine is asked for where there is no GPU.
    resources = container["resources"]
    gpus = given["gpus"]
    assert resources["limits"].get("nvidia.com/gpu", 0) == gpus == resources["requests"].get("nvidia.com/gpu", 0)
    assert ("--device" in args) == (gpus == 0)
    engine = given.get("engine", "transformers")
    assert (args[args.index("--engine") + 1] if "--engine" in args else "transformers") == engine
    assert pod.get("nodeSelector", {}) == given.get("nodeSelector", {})
    image = container["image"].rsplit(":", 1)[0].rsplit("/", 1)[-1]
    assert image == f"oct-{given['image']}"
    deployment = by_kind(docs, "Deployment")[f"{RELEASE}-serving"]
    assert deployment["spec"]["replicas"] == given["replicas"]
    assert deployment["spec"]["strategy"]["type"] == ("Recreate" if gpus else "RollingUpdate")
    service = by_kind(docs, "Service")[f"{RELEASE}-serving"]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"https": SERVING_PORT, "metrics": health}


@pytest.mark.parametrize("review", [True, False], ids=["token-review", "no-token-review"])
def test_serving_network_policy_lets_clients_in_and_the_server_reach_only_the_store(
        helm: Path, review: bool) -> None:
    docs = render(helm, CHART / "ci" / "values-full.yaml", f"controller.auth.tokenReview={str(review).lower()}")
    policies = by_kind(docs, "NetworkPolicy")
    labels = _pod_labels(docs)[f"Deployment/{RELEASE}-serving"]
    spec = policies[f"{RELEASE}-serving"]["spec"]
    assert _selects(spec["podSelector"], labels) and set(spec["policyTypes"]) == {"Ingress", "Egress"}
    clients, health = spec["ingress"]
    assert clients["ports"] == [{"port": SERVING_PORT, "protocol": "TCP"}]
    assert clients["from"] == yaml.safe_load((CHART / "ci" / "values-full.yaml").read_text())[
        "networkPolicy"]["servingClients"]
    assert health == {"ports": [{"port": SERVING_PORT + 2000, "protocol": "TCP"}]}
    # Out: the store and DNS (their policies select it) and, to review tokens, the API server only.
    for shared in ("store", "dns"):
        assert _selects(policies[f"{RELEASE}-{shared}"]["spec"]["podSelector"], labels), shared
    minio_from = policies[f"{RELEASE}-minio"]["spec"]["ingress"][0]["from"]
    assert any(_selects(peer["podSelector"], labels) for peer in minio_from)
    api = [{"port": p, "protocol": "TCP"} for p in (443, 6443)]
    assert [rule["ports"] for rule in spec["egress"]] == ([api] if review else [])
    others = [name for name, policy in policies.items() if name not in {
        f"{RELEASE}-{n}" for n in ("serving", "store", "dns", "default-deny")}
        and policy["spec"].get("egress") and _selects(policy["spec"]["podSelector"], labels)]
    assert not others
    # In-cluster clients may reach it.
    client_rules = policies[f"{RELEASE}-clients"]["spec"]["egress"]
    assert any(rule["ports"] == [{"port": SERVING_PORT, "protocol": "TCP"}]
               and _selects(rule["to"][0]["podSelector"], labels) for rule in client_rules)


def test_the_chart_certificate_and_token_file_work_with_the_real_persona_server(helm: Path, tmp_path: Path) -> None:
    """`oct serve-personas` started with the chart's arguments, its generated certificate and token
    file: plaintext /healthz answers on port + 2000, the official openai client lists the models
    over TLS checked against the chart CA, and a wrong token gets 401."""
    token = "chart-test-token"
    digest = hashlib.sha256(token.encode()).hexdigest()
    docs = render(helm, CHART / "ci" / "values-cpu.yaml", "controller.auth.tokenReview=false",
                  "controller.auth.tokens[0].name=alice", f"controller.auth.tokens[0].sha256={digest}")
    secrets = by_kind(docs, "Secret")
    folder = tmp_path / "tls"
    folder.mkdir()
    for key, value in secrets[f"{RELEASE}-serving-tls"]["data"].items():
        (folder / key).write_bytes(base64.b64decode(value))
    tokens = _write(tmp_path / "tokens.yaml", secrets[f"{RELEASE}-auth"]["stringData"]["tokens.yaml"])
    _, container = _serving(docs)
    # The chart's command line, on this machine's loopback, free ports and a local store.
    port = free_service_port()
    command = list(container["args"])
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port)), ("--health-port", str(port + 2000)),
                        ("--store", str(tmp_path / "store"))):
        command[command.index(flag) + 1] = value
    env = {**os.environ, "OCT_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "OCT_TLS_DIR": str(folder), "OCT_AUTH_TOKENS": str(tokens)}
    env.pop("OCT_PLATFORM_CONFIG", None)
    server = subprocess.Popen([sys.executable, "-m", "character.cli", *command], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        start = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port + 2000}/healthz", timeout=2) as health:
                    if health.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert server.poll() is None, "the server exited"
            assert time.monotonic() - start < 120, "no /healthz within 120 s"
            time.sleep(0.5)
        trust = ssl.create_default_context(cafile=str(folder / "ca.crt"))
        with openai.DefaultHttpxClient(verify=trust) as http:
            url = f"https://127.0.0.1:{port}/v1"
            models = openai.OpenAI(base_url=url, api_key=token, http_client=http, max_retries=0).models.list()
            assert [m.id for m in models]  # the base models at least
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=url, api_key="wrong", http_client=http, max_retries=0).models.list()
    finally:
        server.terminate()
        _, log = server.communicate(timeout=30)
    assert "Traceback" not in log, log[-2000:]


def test_publish_job_runs_oct_personas_publish_with_the_store_identity(helm: Path, tmp_path: Path) -> None:
    (job,) = [d for d in yaml.safe_load_all((ROOT / "k8s" / "examples" / "publish-persona-job.yaml").read_text()) if d]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert container["command"] == ["oct"] and args[:3] == ["personas", "publish", "RUN_ID"]
    assert args[args.index("--store") + 1] == "s3://character/runs"
    # The real CLI takes these arguments: it gets to the store and finds no such run (not a usage error).
    local = [*args[:args.index("--store")], "--store", str(tmp_path / "store")]
    result = CliRunner().invoke(app, local)
    assert result.exit_code == 1 and "no run 'RUN_ID'" in f"{result.output}{result.exception}", result.output
    chart = render(helm, CHART / "ci" / "values-cpu.yaml")
    env_from = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert env_from == {f"{RELEASE}-config", f"{RELEASE}-s3-controller"} <= set(by_kind(chart, "ConfigMap")) | set(
        by_kind(chart, "Secret"))
    policies = by_kind(chart, "NetworkPolicy")
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert _selects(policies[f"{RELEASE}-store"]["spec"]["podSelector"], labels)
    minio_from = policies[f"{RELEASE}-minio"]["spec"]["ingress"][0]["from"]
    assert any(_selects(peer["podSelector"], labels) for peer in minio_from)


def test_chat_job_sends_a_request_the_server_accepts_to_the_chart_service(helm: Path) -> None:
    (job,) = [d for d in yaml.safe_load_all((ROOT / "k8s" / "examples" / "chat-persona-job.yaml").read_text()) if d]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    script = container["args"][0]
    body = re.search(r"-d '(\{.*?\})'", script, re.S)
    assert body, script
    request = ChatRequest.model_validate(yaml.safe_load(body.group(1)))  # extra="forbid"
    assert request.model == "sarcasm:v1"
    publish = (ROOT / "k8s" / "examples" / "publish-persona-job.yaml").read_text()
    assert '"--name", "sarcasm", "--tag", "v1", "--shared"' in publish
    chart = render(helm, CHART / "ci" / "values-cpu.yaml")
    service = by_kind(chart, "Service")[f"{RELEASE}-serving"]
    assert f"https://{service['metadata']['name']}:{SERVING_PORT}/v1" in script
    ca = _mount(pod, container, "/etc/oct/tls")["secret"]
    assert ca == {"secretName": f"{RELEASE}-serving-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    tokens = yaml.safe_load(by_kind(chart, "Secret")[f"{RELEASE}-auth"]["stringData"]["tokens.yaml"])
    assert f"system:serviceaccount:{NAMESPACE}:{pod['serviceAccountName']}" in [
        r["subject"] for r in tokens["service_accounts"]]
    clients = by_kind(chart, "NetworkPolicy")[f"{RELEASE}-serving"]["spec"]["ingress"][0]["from"]
    assert any(_selects(peer["podSelector"], job["spec"]["template"]["metadata"]["labels"]) for peer in clients)


def test_notes_name_the_persona_server_when_it_runs(helm: Path) -> None:
    result = run_helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                      "--set", "serving.enabled=true")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"https://{RELEASE}-serving:{SERVING_PORT}/v1" in notes and "publish-persona-job.yaml" in notes
    assert "Persona server" not in run_helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE,
                                            "--dry-run=client").stdout
