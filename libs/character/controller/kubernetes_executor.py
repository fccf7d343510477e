"""The `kubernetes` executor: one batch/v1 Job per (run, stage, attempt), watched here.

Each Job runs `oct stage STAGE --run RUN_ID --store URI --key KEY` in the project's image
(built by `kubernetes_jobs.build_job` from the stage Job template and the executor's settings,
`KubernetesExecutorConfig`), and is never retried by Kubernetes itself (`backoffLimit: 0`):
the controller owns retries and counts attempts, so each attempt is its own Job with a
deterministic name (`oct-<run>-<stage>-a<attempt>`). Creating a Job that already exists (a
restarted controller re-starting a stage it had launched) adopts the existing Job instead of
failing. Polling reads the Job's conditions and, when it fails or waits, its pods' reasons.
Everything Kubernetes stays in these two modules; the rest of the library knows only the
`Executor` interface.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from character.controller.executor import Executor, StageJob, StageState, StageStatus
from character.controller.kubernetes_jobs import (
    CONTAINER_NAME,
    INVALID_INPUT_EXIT_CODE,
    JOB_NAME_LABEL,
    LEGACY_JOB_NAME_LABEL,
    RUN_ANNOTATION,
    RUN_LABEL,
    STAGE_LABEL,
    KubernetesExecutorConfig,
    build_job,
    default_job_template,
    label_value,
    load_config,
    load_job_template,
)
from character.errors import CharacterError
from character.kube import default_api_client

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

class KubernetesApiError(CharacterError):
    """The Kubernetes API refused or failed a request; the message says which and why."""


class KubernetesExecutor(Executor):
    """Runs each stage as a batch/v1 Job; the handle is the Job's name."""

    def __init__(self, config: KubernetesExecutorConfig, api_client: Any | None = None) -> None:
        from kubernetes import client

        self.config = config
        self.namespace = config.namespace
        self.job_template = load_job_template(config.job_template) if config.job_template else default_job_template()
        self.api_client = api_client if api_client is not None else default_api_client()
        self._batch = client.BatchV1Api(self.api_client)
        self._core = client.CoreV1Api(self.api_client)

    @classmethod
    def from_config_file(cls, path: str | Path, api_client: Any | None = None) -> KubernetesExecutor:
        """Build from the executor YAML the Helm chart mounts (see charts/character)."""
        return cls(load_config(path), api_client)

    def build_job(self, job: StageJob) -> dict[str, Any]:
        """The Job object (as the API's JSON) that runs one attempt of one stage."""
        return build_job(self.config, self.job_template, job)

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


# ---------------------------------------------------------------------- pods
_EXIT_CODE_2 = re.compile(rf"exit code {INVALID_INPUT_EXIT_CODE}\b")


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
