"""The `kubernetes` executor: one batch/v1 Job per (run, stage, attempt).

Each Job runs `oct stage STAGE --run RUN_ID --store URI` in the project's image, with the
store credentials from a Secret (envFrom), and is never retried by Kubernetes itself
(`backoffLimit: 0`): the controller owns retries and counts attempts, so each attempt
is its own Job with a deterministic name (`oct-<run>-<stage>-a<attempt>`). Creating a
Job that already exists (a restarted controller re-starting a stage it had launched)
adopts the existing Job instead of failing.

The Job is built from a template: the pod's shape (security context, volumes for /tmp
and OCT_HOME, labels, image pull secrets, ...) comes from `DEFAULT_JOB_TEMPLATE` or a
template file (the Helm chart mounts one from a ConfigMap; `k8s/stage-job-template.yaml`
is the same template for plain-kubectl installs, and a test keeps the two identical).
The executor then sets what is specific to one stage launch: name, labels, command,
image, resources, node placement, store credentials, limits. Everything Kubernetes
stays in this module; the rest of the library knows only the `Executor` interface.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from character.controller.executor import Executor, StageJob, StageState, StageStatus
from character.errors import CharacterError, InvalidInput

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

# Container waiting reasons that mean the pod cannot start as configured.
_WAITING_PROBLEMS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "RunContainerError",
    }
)

DEFAULT_JOB_TEMPLATE: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {
        "labels": {
            PART_OF_LABEL: "character",
            "app.kubernetes.io/component": "stage",
            "app.kubernetes.io/managed-by": "character-controller",
        },
    },
    "spec": {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": 86400,
        "template": {
            "metadata": {
                "labels": {
                    PART_OF_LABEL: "character",
                    "app.kubernetes.io/component": "stage",
                },
            },
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 10001,
                    "runAsGroup": 10001,
                    "fsGroup": 10001,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": CONTAINER_NAME,
                        "image": "oct-cpu:0.1.0",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["oct"],
                        "env": [
                            {"name": "OCT_HOME", "value": "/var/lib/oct"},
                            {"name": "HOME", "value": "/tmp"},
                            {"name": "XDG_CACHE_HOME", "value": "/var/lib/oct/cache"},
                        ],
                        "resources": {
                            "requests": {"cpu": "1", "memory": "4Gi"},
                            "limits": {"memory": "16Gi"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True,
                            "runAsUser": 10001,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [
                            {"name": "tmp", "mountPath": "/tmp"},
                            {"name": "oct-home", "mountPath": "/var/lib/oct"},
                            {"name": "dshm", "mountPath": "/dev/shm"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "tmp", "emptyDir": {}},
                    {"name": "oct-home", "emptyDir": {"sizeLimit": "20Gi"}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
                ],
            },
        },
    },
}
"""The built-in stage Job template (kept identical to k8s/stage-job-template.yaml by a test)."""


class KubernetesApiError(CharacterError):
    """The Kubernetes API refused or failed a request; the message says which and why."""


class KubernetesExecutorConfig(BaseModel):
    """The executor's settings as a file (the chart renders it into a ConfigMap)."""

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
    image_pull_policy: str | None = Field(None, pattern="^(Always|IfNotPresent|Never)$")
    """Overrides the template's imagePullPolicy when set."""
    backoff_limit: int = Field(0, ge=0)
    """Kubernetes-level retries of a stage pod; 0 because the controller owns retries."""
    ttl_seconds_after_finished: int | None = Field(86400, ge=0)
    """Finished Jobs are garbage-collected after this many seconds (None: kept)."""
    active_deadline_seconds: int | None = Field(None, ge=1)
    """A stage running longer than this is killed (reason DeadlineExceeded)."""
    job_template: str | None = None
    """Path of a stage Job template YAML; None uses the built-in `DEFAULT_JOB_TEMPLATE`."""


class KubernetesExecutor(Executor):
    """Runs each stage as a batch/v1 Job; the handle is the Job's name."""

    def __init__(
        self,
        namespace: str,
        image: str,
        api_client: Any | None = None,
        *,
        service_account: str | None = None,
        images: Mapping[str, str] | None = None,
        resources: Mapping[str, Mapping[str, Any]] | None = None,
        node_selectors: Mapping[str, Mapping[str, str]] | None = None,
        tolerations: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        store_secret_name: str | None = None,
        store_config_map_name: str | None = None,
        env: Mapping[str, str] | None = None,
        image_pull_policy: str | None = None,
        backoff_limit: int = 0,
        ttl_seconds_after_finished: int | None = 86400,
        active_deadline_seconds: int | None = None,
        job_template: Mapping[str, Any] | None = None,
    ) -> None:
        from kubernetes import client

        if api_client is None:
            api_client = _default_api_client()
        self.namespace = namespace
        self.image = image
        self.api_client = api_client
        self.service_account = service_account
        self.images = dict(images or {})
        self.resources = {k: dict(v) for k, v in (resources or {}).items()}
        self.node_selectors = {k: dict(v) for k, v in (node_selectors or {}).items()}
        self.tolerations = {k: [dict(t) for t in v] for k, v in (tolerations or {}).items()}
        self.store_secret_name = store_secret_name
        self.store_config_map_name = store_config_map_name
        self.env = dict(env or {})
        self.image_pull_policy = image_pull_policy
        self.backoff_limit = backoff_limit
        self.ttl_seconds_after_finished = ttl_seconds_after_finished
        self.active_deadline_seconds = active_deadline_seconds
        self.job_template = copy.deepcopy(dict(job_template or DEFAULT_JOB_TEMPLATE))
        _check_template(self.job_template, where="job template")
        self._batch = client.BatchV1Api(api_client)
        self._core = client.CoreV1Api(api_client)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(
        cls, config: KubernetesExecutorConfig, api_client: Any | None = None
    ) -> KubernetesExecutor:
        template = load_job_template(config.job_template) if config.job_template else None
        return cls(
            config.namespace,
            config.image,
            api_client,
            service_account=config.service_account,
            images=config.images,
            resources=config.resources,
            node_selectors=config.node_selectors,
            tolerations=config.tolerations,
            store_secret_name=config.store_secret_name,
            store_config_map_name=config.store_config_map_name,
            env=config.env,
            image_pull_policy=config.image_pull_policy,
            backoff_limit=config.backoff_limit,
            ttl_seconds_after_finished=config.ttl_seconds_after_finished,
            active_deadline_seconds=config.active_deadline_seconds,
            job_template=template,
        )

    @classmethod
    def from_config_file(cls, path: str | Path, api_client: Any | None = None) -> KubernetesExecutor:
        """Build from the executor YAML the Helm chart mounts (see charts/character)."""
        path = Path(path)
        doc = _read_yaml(path)
        try:
            config = KubernetesExecutorConfig.model_validate(doc)
        except ValueError as err:
            raise InvalidInput(str(err), where=str(path)) from None
        if config.job_template and not Path(config.job_template).is_absolute():
            config = config.model_copy(update={"job_template": str(path.parent / config.job_template)})
        return cls.from_config(config, api_client)

    # ------------------------------------------------------------------ Job objects
    def job_name(self, job: StageJob) -> str:
        return job_name(job.run_id, job.stage, job.attempt)

    def build_job(self, job: StageJob) -> dict[str, Any]:
        """The Job object (as the API's JSON) that runs one attempt of one stage."""
        name = self.job_name(job)
        body = copy.deepcopy(self.job_template)
        labels = {
            PART_OF_LABEL: "character",
            RUN_LABEL: label_value(job.run_id),
            STAGE_LABEL: label_value(job.stage),
            ATTEMPT_LABEL: str(job.attempt),
        }
        annotations = {RUN_ANNOTATION: job.run_id}

        meta = body.setdefault("metadata", {})
        meta["name"] = name
        meta["namespace"] = self.namespace
        meta.pop("generateName", None)
        meta["labels"] = {**(meta.get("labels") or {}), **labels}
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}

        spec = body.setdefault("spec", {})
        spec["backoffLimit"] = self.backoff_limit
        if self.ttl_seconds_after_finished is not None:
            spec["ttlSecondsAfterFinished"] = self.ttl_seconds_after_finished
        else:
            spec.pop("ttlSecondsAfterFinished", None)
        if self.active_deadline_seconds is not None:
            spec["activeDeadlineSeconds"] = self.active_deadline_seconds
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
        if self.service_account:
            pod["serviceAccountName"] = self.service_account
        node_selector = _per_stage(self.node_selectors, job.stage)
        if node_selector:
            pod["nodeSelector"] = {**(pod.get("nodeSelector") or {}), **node_selector}
        tolerations = _per_stage(self.tolerations, job.stage)
        if tolerations:
            pod["tolerations"] = [*(pod.get("tolerations") or []), *copy.deepcopy(tolerations)]

        container = _stage_container(pod)
        container["name"] = CONTAINER_NAME
        container["image"] = _per_stage(self.images, job.stage) or self.image
        if self.image_pull_policy:
            container["imagePullPolicy"] = self.image_pull_policy
        container["command"] = ["oct"]
        container["args"] = ["stage", job.stage, "--run", job.run_id, "--store", job.store_uri]
        env_from = list(container.get("envFrom") or [])
        if self.store_config_map_name:
            ref = {"configMapRef": {"name": self.store_config_map_name}}
            if ref not in env_from:
                env_from.append(ref)
        if self.store_secret_name:
            ref = {"secretRef": {"name": self.store_secret_name}}
            if ref not in env_from:
                env_from.append(ref)
        if env_from:
            container["envFrom"] = env_from
        if self.env:
            env = [e for e in (container.get("env") or []) if e.get("name") not in self.env]
            env += [{"name": k, "value": v} for k, v in self.env.items()]
            container["env"] = env
        resources = _per_stage(self.resources, job.stage)
        if resources:
            container["resources"] = copy.deepcopy(resources)
        return body

    # ------------------------------------------------------------------ Executor
    def start(self, job: StageJob) -> str:
        from kubernetes.client.exceptions import ApiException

        body = self.build_job(job)
        name = body["metadata"]["name"]
        try:
            self._batch.create_namespaced_job(self.namespace, body)  # type: ignore[arg-type]  # dicts are sent as-is
        except ApiException as err:
            if err.status != 409:
                raise _api_error(f"creating Job {self.namespace}/{name}", err) from None
            self._adopt(name, job)
        return name

    def _adopt(self, name: str, job: StageJob) -> None:
        """A Job of this name exists: take it over if it is this stage's attempt."""
        from kubernetes.client.exceptions import ApiException

        try:
            existing: Any = self._batch.read_namespaced_job(name, self.namespace)
        except ApiException as err:
            raise _api_error(f"reading existing Job {self.namespace}/{name}", err) from None
        labels = existing.metadata.labels or {}
        annotations = existing.metadata.annotations or {}
        run = annotations.get(RUN_ANNOTATION, labels.get(RUN_LABEL))
        same_run = run in (job.run_id, label_value(job.run_id))
        ours = same_run and labels.get(STAGE_LABEL) == label_value(job.stage)
        if not ours:
            raise KubernetesApiError(
                f"Job {self.namespace}/{name} already exists and belongs to run {run!r} stage "
                f"{labels.get(STAGE_LABEL)!r}, not run {job.run_id!r} stage {job.stage!r}; delete it "
                f"(kubectl -n {self.namespace} delete job {name}) and retry"
            )
        if existing.metadata.deletion_timestamp:
            raise KubernetesApiError(
                f"Job {self.namespace}/{name} is being deleted; start the next attempt instead"
            )

    def poll(self, handle: str) -> StageStatus:
        from kubernetes.client.exceptions import ApiException

        try:
            job: Any = self._batch.read_namespaced_job(handle, self.namespace)
        except ApiException as err:
            if err.status == 404:
                return StageStatus(state=StageState.FAILED, message=f"job disappeared: {handle}")
            raise _api_error(f"reading Job {self.namespace}/{handle}", err) from None

        if job.metadata.deletion_timestamp:
            return StageStatus(state=StageState.CANCELLED, message=f"Job {handle} is being deleted")
        status = job.status
        conditions = {c.type: c for c in (status.conditions or []) if c.status == "True"} if status else {}
        if "Complete" in conditions:
            return StageStatus(state=StageState.SUCCEEDED, message=f"Job {handle} complete")
        failed = conditions.get("Failed") or conditions.get("FailureTarget")
        if failed is not None:
            return self._failed(job, failed.reason or "Failed", failed.message or "")
        active = (status.active or 0) if status else 0
        if active:
            ready = (status.ready or 0) if status else 0
            message = f"Job {handle}: pod running"
            if not ready:
                problems, _ = self._pod_problems(job)
                message = f"Job {handle}: " + ("; ".join(problems) if problems else "pod starting")
            return StageStatus(state=StageState.RUNNING, message=message)
        return StageStatus(state=StageState.PENDING, message=f"Job {handle} created; waiting for its pod")

    def _failed(self, job: Any, reason: str, message: str) -> StageStatus:
        name = job.metadata.name
        text = f"{reason}: {message}" if message else reason
        problems, exit_codes = self._pod_problems(job)
        invalid_input = INVALID_INPUT_EXIT_CODE in exit_codes or (
            reason == "PodFailurePolicy" and _EXIT_CODE_2.search(message) is not None
        )
        if problems:
            text += "; " + "; ".join(problems)
        if invalid_input:
            text += " (invalid input: not retried)"
        return StageStatus(
            state=StageState.FAILED, message=f"Job {name} failed: {text}", retryable=not invalid_input
        )

    def _pod_problems(self, job: Any) -> tuple[list[str], set[int]]:
        """Pod-level reasons (OOMKilled, ImagePullBackOff, Evicted, ...) and the stage
        container's non-zero exit codes, best effort (pods may be gone or unlistable)."""
        from kubernetes.client.exceptions import ApiException

        name = job.metadata.name
        uid = job.metadata.uid
        try:
            pods: Any = self._core.list_namespaced_pod(
                self.namespace, label_selector=f"{JOB_NAME_LABEL}={name}"
            )
        except ApiException:
            return [], set()  # no permission to list pods, or the API hiccuped: the Job's reason stands
        problems: list[str] = []
        exit_codes: set[int] = set()
        for pod in pods.items:
            if not _pod_of_job(pod, name, uid):
                continue  # servers that ignore label selectors (and stray pods) are filtered here
            found, codes = _describe_pod(pod)
            problems += [f"pod {pod.metadata.name}: {p}" for p in found]
            exit_codes |= codes
        return problems, exit_codes

    def cancel(self, handle: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._batch.delete_namespaced_job(handle, self.namespace, propagation_policy="Background")
        except ApiException as err:
            if err.status == 404:
                return
            raise _api_error(f"deleting Job {self.namespace}/{handle}", err) from None


# ---------------------------------------------------------------------- naming
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_EXIT_CODE_2 = re.compile(rf"exit code {INVALID_INPUT_EXIT_CODE}\b")
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


# ---------------------------------------------------------------------- helpers
def load_job_template(path: str | Path) -> dict[str, Any]:
    """Read a stage Job template (YAML) and check it has the shape the executor fills in."""
    doc = _read_yaml(Path(path))
    _check_template(doc, where=str(path))
    return doc


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput("no such file", where=str(path)) from None
    except yaml.YAMLError as err:
        raise InvalidInput(f"bad YAML: {err}", where=str(path)) from None
    if not isinstance(doc, dict):
        raise InvalidInput("expected a mapping", where=str(path))
    return doc


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


def _per_stage(mapping: Mapping[str, Any], stage: str) -> Any:
    if stage in mapping:
        return mapping[stage]
    return mapping.get(DEFAULT_KEY)


def _pod_of_job(pod: Any, job_name: str, job_uid: str | None) -> bool:
    labels = pod.metadata.labels or {}
    if labels.get(JOB_NAME_LABEL) == job_name or labels.get(LEGACY_JOB_NAME_LABEL) == job_name:
        return True
    owners = pod.metadata.owner_references or []
    return any(o.kind == "Job" and (o.name == job_name or (job_uid and o.uid == job_uid)) for o in owners)


def _describe_pod(pod: Any) -> tuple[list[str], set[int]]:
    status = pod.status
    if status is None:
        return [], set()
    found: list[str] = []
    exit_codes: set[int] = set()
    if status.reason:  # Evicted, DeadlineExceeded, NodeLost, ...
        found.append(f"{status.reason}" + (f" ({status.message})" if status.message else ""))
    for cs in [*(status.init_container_statuses or []), *(status.container_statuses or [])]:
        state = cs.state
        if state is None:
            continue
        term, waiting = state.terminated, state.waiting
        if term is not None and (term.exit_code or term.reason not in (None, "Completed")):
            detail = f"container {cs.name} {term.reason or 'terminated'} (exit code {term.exit_code})"
            if term.message:
                detail += f": {term.message.strip()[:500]}"
            found.append(detail)
            if cs.name == CONTAINER_NAME and term.exit_code:
                exit_codes.add(term.exit_code)
        elif waiting is not None and waiting.reason in _WAITING_PROBLEMS:
            detail = f"container {cs.name} {waiting.reason}"
            if waiting.message:
                detail += f": {waiting.message.strip()[:500]}"
            found.append(detail)
    if not found and status.phase == "Pending":
        for cond in status.conditions or []:
            if cond.type == "PodScheduled" and cond.status == "False":
                found.append(f"unschedulable: {cond.message or cond.reason}")
    return found, exit_codes


def _api_error(doing: str, err: Any) -> KubernetesApiError:
    detail = err.reason or ""
    body = getattr(err, "body", None)
    if body:
        try:
            import json

            detail = json.loads(body).get("message") or detail
        except (ValueError, AttributeError):
            pass
    return KubernetesApiError(f"Kubernetes API error {doing}: {err.status} {detail}".strip())


def _default_api_client() -> Any:
    """In a pod: the ServiceAccount's credentials; elsewhere: the kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()
