"""The stage Jobs of the kubernetes executor, built: one batch/v1 Job per (run, stage, attempt).

A Job is the stage Job template (the pod's shape: security context, volumes for /tmp and
OCT_HOME, labels, ...) with what is specific to one launch set from the executor's settings
(`KubernetesExecutorConfig`) and the job: name, labels, command and arguments (`oct stage
STAGE --run RUN --store URI --key KEY`), image, resources, node placement, store credentials
(envFrom), limits. The built-in template is package data, `stage-job-template.yaml` next to
this module: a link to charts/character/files/stage-job-template.yaml, the one copy, which the
Helm chart puts into its ConfigMap as it is. Building is pure (no API calls): watching the Jobs
is `kubernetes_executor.py`'s.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from character.controller.executor import StageJob
from character.errors import InvalidInput
from character.yamldoc import parse_mapping, read_mapping

PART_OF_LABEL = "app.kubernetes.io/part-of"
RUN_LABEL = "character.dev/run"
STAGE_LABEL = "character.dev/stage"
ATTEMPT_LABEL = "character.dev/attempt"
RUN_ANNOTATION = "character.dev/run-id"
"""The exact run id (labels carry a DNS-safe form when the id is not a valid label value)."""
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_JOB_NAME_LABEL = "job-name"
CONTAINER_NAME = "stage"
"""The container in the template that runs the stage (else the first container)."""
DEFAULT_KEY = "default"
"""Key of the per-stage mappings that applies to stages without their own entry."""
INVALID_INPUT_EXIT_CODE = 2
"""`oct stage` exits 2 on invalid input: retrying cannot help."""

TEMPLATE_FILE = "stage-job-template.yaml"
"""The built-in template: package data of this package."""


class KubernetesExecutorConfig(BaseModel):
    """The kubernetes executor's settings (a YAML file: the chart renders it into a ConfigMap)."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(min_length=1)
    """Namespace the stage Jobs are created in (the controller's own, usually)."""
    image: str = Field(min_length=1)
    """Image that runs `oct stage` unless a stage has its own in `images`."""
    images: dict[str, str] = {}
    """Per-stage image overrides, e.g. the GPU image for distill/dpo/sft; key `default` for the rest."""
    service_account: str | None = None
    """ServiceAccount of stage pods (none needed: stages only talk to the store)."""
    resources: dict[str, dict[str, Any]] = {}
    """Per-stage container resources ({requests: {...}, limits: {...}}); key `default` for the rest."""
    node_selectors: dict[str, dict[str, str]] = {}
    """Per-stage nodeSelector; key `default` for the rest."""
    tolerations: dict[str, list[dict[str, Any]]] = {}
    """Per-stage tolerations; key `default` for the rest."""
    store_secret_name: str | None = None
    """Secret whose keys become env vars (OCT_S3_ACCESS_KEY, OCT_S3_SECRET_KEY, ...)."""
    store_config_map_name: str | None = None
    """ConfigMap whose keys become env vars (OCT_S3_ENDPOINT, OCT_S3_SECURE, ...)."""
    env: dict[str, str] = {}
    """Extra plain env vars for every stage container."""
    env_from_secrets: list[str] = []
    """Secrets whose keys become env vars of every stage container, after the store Secret
    (the endpoints' API keys)."""
    volumes: list[dict[str, Any]] = []
    """Pod volumes: one named like a template volume replaces it (oct-home -> a PVC, dshm -> another
    size), the others are added. The template stays the same for every install; these differ."""
    volume_mounts: list[dict[str, Any]] = []
    """Stage-container mounts: one at a template mount's mountPath replaces it, the others are added."""
    image_pull_policy: str | None = Field(None, pattern="^(Always|IfNotPresent|Never)$")
    """Overrides the template's imagePullPolicy when set."""
    backoff_limit: int = Field(0, ge=0)
    """Kubernetes-level retries of a stage pod; 0 because the controller owns retries."""
    ttl_seconds_after_finished: int | None = Field(86400, ge=0)
    """Finished Jobs are garbage-collected after this many seconds (None: kept)."""
    active_deadline_seconds: int | None = Field(None, ge=1)
    """A stage running longer than this is killed (reason DeadlineExceeded)."""
    job_template: str | None = None
    """Path of a stage Job template YAML (relative: to the settings file); None: the built-in one,
    `stage-job-template.yaml` (package data: charts/character/files/stage-job-template.yaml)."""


def build_job(config: KubernetesExecutorConfig, template: Mapping[str, Any], job: StageJob) -> dict[str, Any]:
    """The Job object (as the API's JSON) that runs one attempt of one stage: `template` with
    what is specific to this launch set from `config` and `job`."""
    name = job_name(job.run_id, job.stage, job.attempt)
    body = copy.deepcopy(dict(template))
    labels = {
        PART_OF_LABEL: "character",
        RUN_LABEL: label_value(job.run_id),
        STAGE_LABEL: label_value(job.stage),
        ATTEMPT_LABEL: str(job.attempt),
    }
    annotations = {RUN_ANNOTATION: job.run_id}

    meta = body.setdefault("metadata", {})
    meta["name"] = name
    meta["namespace"] = config.namespace
    meta.pop("generateName", None)
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}

    spec = body.setdefault("spec", {})
    spec["backoffLimit"] = config.backoff_limit
    if config.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = config.ttl_seconds_after_finished
    else:
        spec.pop("ttlSecondsAfterFinished", None)
    if config.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = config.active_deadline_seconds
    # Exit code 2 (invalid input) fails the Job at once with a condition that says so,
    # readable even after the pod is gone.
    spec["podFailurePolicy"] = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": [INVALID_INPUT_EXIT_CODE],
                },
            }
        ]
    }

    pod_template = spec.setdefault("template", {})
    pod_meta = pod_template.setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **labels}
    pod_meta["annotations"] = {**(pod_meta.get("annotations") or {}), **annotations}

    pod = pod_template.setdefault("spec", {})
    pod["restartPolicy"] = "Never"
    if config.service_account:
        pod["serviceAccountName"] = config.service_account
    node_selector = _per_stage(config.node_selectors, job.stage)
    if node_selector:
        pod["nodeSelector"] = {**(pod.get("nodeSelector") or {}), **node_selector}
    tolerations = _per_stage(config.tolerations, job.stage)
    if tolerations:
        pod["tolerations"] = [*(pod.get("tolerations") or []), *copy.deepcopy(tolerations)]

    container = _stage_container(pod)
    container["name"] = CONTAINER_NAME
    container["image"] = _per_stage(config.images, job.stage) or config.image
    if config.image_pull_policy:
        container["imagePullPolicy"] = config.image_pull_policy
    container["command"] = ["oct"]
    container["args"] = ["stage", job.stage, "--run", job.run_id, "--store", job.store_uri,
                         *(["--key", job.key] if job.key else [])]
    env_from = list(container.get("envFrom") or [])
    if config.store_config_map_name:
        ref = {"configMapRef": {"name": config.store_config_map_name}}
        if ref not in env_from:
            env_from.append(ref)
    if config.store_secret_name:
        ref = {"secretRef": {"name": config.store_secret_name}}
        if ref not in env_from:
            env_from.append(ref)
    for secret in config.env_from_secrets:
        ref = {"secretRef": {"name": secret}}
        if ref not in env_from:
            env_from.append(ref)
    if env_from:
        container["envFrom"] = env_from
    if config.env:
        env = [e for e in (container.get("env") or []) if e.get("name") not in config.env]
        env += [{"name": k, "value": v} for k, v in config.env.items()]
        container["env"] = env
    if config.volumes:
        pod["volumes"] = _replace_or_add(pod.get("volumes") or [], config.volumes, "name")
    if config.volume_mounts:
        container["volumeMounts"] = _replace_or_add(container.get("volumeMounts") or [], config.volume_mounts,
                                                    "mountPath")
    resources = _per_stage(config.resources, job.stage)
    if resources:
        container["resources"] = copy.deepcopy(resources)
    return body


def load_config(path: str | Path) -> KubernetesExecutorConfig:
    """The executor's settings file (the chart mounts it); a relative `job_template` is read
    next to it."""
    path = Path(path)
    try:
        config = KubernetesExecutorConfig.model_validate(read_mapping(path, "kubernetes executor settings"))
    except ValueError as err:
        raise InvalidInput(str(err), where=str(path)) from None
    if config.job_template and not Path(config.job_template).is_absolute():
        config = config.model_copy(update={"job_template": str(path.parent / config.job_template)})
    return config


def default_job_template() -> dict[str, Any]:
    """The built-in stage Job template."""
    text = resources.files(__package__).joinpath(TEMPLATE_FILE).read_text(encoding="utf-8")
    doc = parse_mapping(text, TEMPLATE_FILE, "stage Job template")
    _check_template(doc, where=TEMPLATE_FILE)
    return doc


def load_job_template(path: str | Path) -> dict[str, Any]:
    """Read a stage Job template (YAML) and check it has the shape the executor fills in."""
    doc = read_mapping(path, "stage Job template")
    _check_template(doc, where=str(path))
    return doc


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")


def _short_hash(text: str, n: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def job_name(run_id: str, stage: str, attempt: int) -> str:
    """`oct-<run>-<stage>-a<attempt>`: deterministic, DNS-safe, at most 63 characters.

    Run ids of the form `run-<hex>` appear as `<hex>`; any other id that is long or not
    DNS-safe as it stands is shortened and given a hash of the full id, so two runs never
    share a name.
    """
    if attempt < 1:
        raise InvalidInput(f"attempt must be >= 1, got {attempt}", where="StageJob.attempt")
    raw = run_id.removeprefix("run-") or run_id
    run = _slug(raw)
    if run != raw or not run or len(run) > 16:
        run = f"{run[:9].strip('-')}-{_short_hash(run_id)}".strip("-")
    stage_slug = _slug(stage)
    if stage_slug != stage or not stage_slug or len(stage_slug) > 20:
        stage_slug = f"{stage_slug[:13].strip('-')}-{_short_hash(stage)}".strip("-")
    name = f"oct-{run}-{stage_slug}-a{attempt}"
    assert len(name) <= 63 and _DNS_LABEL.match(name), name
    return name


def label_value(text: str) -> str:
    """`text` if it is a valid label value, else a valid stand-in with a hash of it."""
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:55].strip("-_.")
    return f"{cleaned}-{_short_hash(text)}" if cleaned else _short_hash(text)


def _check_template(doc: Mapping[str, Any], where: str) -> None:
    if doc.get("apiVersion") != "batch/v1" or doc.get("kind") != "Job":
        raise InvalidInput("a stage Job template is a batch/v1 Job", where=where)
    containers = (((doc.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")
    if not containers or not isinstance(containers, list):
        raise InvalidInput("spec.template.spec.containers must list the stage container", where=where)


def _stage_container(pod: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod["containers"]
    for container in containers:
        if container.get("name") == CONTAINER_NAME:
            return container
    return containers[0]


def _replace_or_add(items: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    """`items` with each of `new` in place of the item with the same `key`, or appended."""
    pending = {item[key]: copy.deepcopy(dict(item)) for item in new}
    merged = [pending.pop(item.get(key), item) for item in items]
    return [*merged, *pending.values()]


def _per_stage(mapping: Mapping[str, Any], stage: str) -> Any:
    if stage in mapping:
        return mapping[stage]
    return mapping.get(DEFAULT_KEY)
