"""The kubernetes executor against a Kubernetes API emulator, through the official client.

`kmock`'s KubernetesEmulator runs as a real HTTP server on 127.0.0.1 (in a thread with
its own event loop); the executor talks to it with the `kubernetes` client exactly as it
would talk to an API server: create/read/patch/delete/list Jobs and Pods, 404 and 409
errors as `Status` objects. The test drives what the cluster would do by patching the
Job's status (active, ready, conditions) and by creating Pods with the statuses a kubelet
would write, then checks what `poll` reports.

What the emulator cannot show (covered elsewhere or not at all):
- no watch semantics worth the name and no label selectors: a list returns every object
  of the namespace, so the executor's own filtering of pods by owner is what is tested,
  not the server's selector;
- no real scheduling, Job controller or kubelet: nothing creates pods, counts
  active/ready/failed, applies backoffLimit, activeDeadlineSeconds, podFailurePolicy or
  ttlSecondsAfterFinished, or garbage-collects pods after a Background delete;
- no server-side validation, defaulting, admission or RBAC: bodies are stored as sent
  (the Job bodies are validated here with kubernetes-validate's schemas instead, and
  the chart's Role is checked in test_chart.py), and there is no uid/resourceVersion.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kmock
import kubernetes_validate
import pytest
import yaml
from character.controller.executor import StageJob, StageState
from character.controller.kubernetes_executor import KubernetesApiError, KubernetesExecutor
from character.controller.kubernetes_jobs import (
    KubernetesExecutorConfig,
    default_job_template,
    job_name,
    label_value,
)
from kubernetes import client

ROOT = Path(__file__).resolve().parents[3]
NS = "character"
RUN = "run-0123456789ab"
STORE = "s3://character/runs"
K8S_VERSION = "1.35"


class Emulator:
    """kmock's Kubernetes emulator served on 127.0.0.1 from a background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self._error: BaseException | None = None
        self.handler: Any = None
        self.url = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as err:  # surfaced by start()
            self._error = err
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with kmock.KubernetesEmulator() as handler, kmock.Server(handler, host="127.0.0.1") as server:
            # Declared so that listing them works before any object exists.
            handler.resources["batch/v1/jobs"] = {}
            handler.resources["v1/pods"] = {}
            self.handler = handler
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError(f"kmock did not start: {self._error!r}")

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the emulator's loop (its DSL is not thread-safe) and return its result."""

        async def _call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(_call(), self.loop).result(10)

    def requests(self, method: str) -> list[Any]:
        return self.call(lambda: list(self.handler[method]))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emu = Emulator()
    emu.start()
    try:
        yield emu
    finally:
        emu.close()


@pytest.fixture
def api(emulator: Emulator) -> Iterator[client.ApiClient]:
    config = client.Configuration()
    config.host = emulator.url
    with client.ApiClient(config) as api_client:
        yield api_client


GPU_RESOURCES = {
    "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
    "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"},
}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.fixture
def executor(api: client.ApiClient) -> KubernetesExecutor:
    return KubernetesExecutor(KubernetesExecutorConfig(
        namespace=NS,
        image="oct-cpu:0.1.0",
        service_account="character-worker",
        images={"dpo": "oct-gpu:0.1.0"},
        resources={"dpo": GPU_RESOURCES},
        node_selectors={"dpo": {"nvidia.com/gpu.present": "true"}},
        tolerations={"dpo": [GPU_TOLERATION]},
        store_secret_name="character-s3",
        store_config_map_name="character-config",
        active_deadline_seconds=7200,
    ), api)


def stage_job(stage: str = "dpo", attempt: int = 1, run_id: str = RUN) -> StageJob:
    return StageJob(run_id=run_id, stage=stage, store_uri=STORE, attempt=attempt)


def patch_status(api: client.ApiClient, name: str, status: dict[str, Any]) -> None:
    """What the Job controller would write."""
    client.BatchV1Api(api).patch_namespaced_job_status(name, NS, {"status": status})


def condition(kind: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason or None, "message": message or None}


def create_pod(api: client.ApiClient, name: str, job: str, status: dict[str, Any]) -> None:
    """What the Job controller and the kubelet would create and write."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"batch.kubernetes.io/job-name": job, "job-name": job},
        },
        "spec": {"restartPolicy": "Never", "containers": [{"name": "stage", "image": "oct-cpu:0.1.0"}]},
        "status": status,
    }
    client.CoreV1Api(api).create_namespaced_pod(NS, pod)


def terminated(exit_code: int, reason: str) -> dict[str, Any]:
    return {
        "phase": "Failed",
        "containerStatuses": [
            {
                "name": "stage",
                "image": "oct-cpu:0.1.0",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "reason": reason}},
            }
        ],
    }


# ---------------------------------------------------------------------- start


def test_start_creates_one_job_with_labels_command_env_and_placement(
    executor: KubernetesExecutor, api: client.ApiClient, emulator: Emulator
) -> None:
    handle = executor.start(stage_job("dpo"))
    assert handle == "oct-0123456789ab-dpo-a1"

    job = client.BatchV1Api(api).read_namespaced_job(handle, NS)
    assert job.metadata.labels["app.kubernetes.io/part-of"] == "character"
    assert job.metadata.labels["character.dev/run"] == RUN
    assert job.metadata.labels["character.dev/stage"] == "dpo"
    assert job.metadata.labels["character.dev/attempt"] == "1"
    assert job.spec.backoff_limit == 0
    assert job.spec.active_deadline_seconds == 7200
    assert job.spec.ttl_seconds_after_finished == 86400
    rule = job.spec.pod_failure_policy.rules[0]
    assert (rule.action, rule.on_exit_codes.operator, rule.on_exit_codes.values) == ("FailJob", "In", [2])

    pod = job.spec.template
    assert pod.metadata.labels["character.dev/run"] == RUN
    assert pod.metadata.labels["character.dev/stage"] == "dpo"
    assert pod.spec.restart_policy == "Never"
    assert pod.spec.service_account_name == "character-worker"
    assert pod.spec.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [t.to_dict() for t in pod.spec.tolerations] == [
        {**GPU_TOLERATION, "value": None, "toleration_seconds": None}
    ]
    (container,) = pod.spec.containers
    assert container.image == "oct-gpu:0.1.0"
    assert [*container.command, *container.args] == ["oct", "stage", "dpo", "--run", RUN, "--store", STORE]
    assert [(e.secret_ref and e.secret_ref.name, e.config_map_ref and e.config_map_ref.name)
            for e in container.env_from] == [(None, "character-config"), ("character-s3", None)]
    assert {e.name: e.value for e in container.env}["OCT_HOME"] == "/var/lib/oct"
    assert container.resources.to_dict()["limits"] == GPU_RESOURCES["limits"]
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.run_as_non_root is True
    assert container.security_context.allow_privilege_escalation is False
    assert pod.spec.security_context.run_as_user == 10001

    # What went over the wire is a valid batch/v1 Job (the emulator does not validate).
    (post,) = emulator.requests("post")
    assert post.url.path == f"/apis/batch/v1/namespaces/{NS}/jobs"
    kubernetes_validate.validate(post.data, K8S_VERSION, strict=True)


def test_stages_without_overrides_get_the_default_image_and_no_gpu(
    executor: KubernetesExecutor, api: client.ApiClient
) -> None:
    handle = executor.start(stage_job("prompts"))
    pod = client.BatchV1Api(api).read_namespaced_job(handle, NS).spec.template.spec
    assert pod.containers[0].image == "oct-cpu:0.1.0"
    assert pod.node_selector is None and pod.tolerations is None
    assert "nvidia.com/gpu" not in (pod.containers[0].resources.limits or {})


def test_each_attempt_is_its_own_job(executor: KubernetesExecutor, api: client.ApiClient) -> None:
    first = executor.start(stage_job("sft", attempt=1))
    second = executor.start(stage_job("sft", attempt=2))
    assert (first, second) == ("oct-0123456789ab-sft-a1", "oct-0123456789ab-sft-a2")
    names = {j.metadata.name for j in client.BatchV1Api(api).list_namespaced_job(NS).items}
    assert names == {first, second}


def test_duplicate_start_adopts_the_existing_job(
    executor: KubernetesExecutor, api: client.ApiClient, emulator: Emulator
) -> None:
    handle = executor.start(stage_job("dpo"))
    patch_status(api, handle, {"active": 1, "ready": 1})

    # A restarted controller starts the same attempt again: 409 Conflict -> adopted.
    restarted = KubernetesExecutor(KubernetesExecutorConfig(namespace=NS, image="oct-cpu:0.1.0"), api)
    again = restarted.start(stage_job("dpo"))
    assert again == handle
    assert len(emulator.requests("post")) == 2
    assert len(client.BatchV1Api(api).list_namespaced_job(NS).items) == 1
    assert executor.poll(handle).state is StageState.RUNNING  # the running Job was kept as is


def test_conflict_with_a_job_of_another_run_is_an_error(
    executor: KubernetesExecutor, api: client.ApiClient
) -> None:
    body = executor.build_job(stage_job("dpo"))
    body["metadata"]["labels"]["character.dev/run"] = "run-somebodyelse"
    body["metadata"]["annotations"]["character.dev/run-id"] = "run-somebodyelse"
    client.BatchV1Api(api).create_namespaced_job(NS, body)
    with pytest.raises(KubernetesApiError, match="belongs to run 'run-somebodyelse'"):
        executor.start(stage_job("dpo"))


def test_api_errors_say_what_failed(executor: KubernetesExecutor, emulator: Emulator) -> None:
    def forbid() -> None:
        emulator.handler[f"post /apis/batch/v1/namespaces/{NS}/jobs"] << kmock.KubernetesError(
            status=403, reason="Forbidden", message="jobs.batch is forbidden: cannot create"
        )

    emulator.call(forbid)
    expected = r"creating Job character/oct-0123456789ab-dpo-a1: 403 .*forbidden"
    with pytest.raises(KubernetesApiError, match=expected):
        executor.start(stage_job("dpo"))


# ---------------------------------------------------------------------- poll


def test_status_changes_map_to_stage_states(executor: KubernetesExecutor, api: client.ApiClient) -> None:
    handle = executor.start(stage_job("dpo"))
    assert executor.poll(handle).state is StageState.PENDING

    patch_status(api, handle, {"active": 1, "ready": 0})
    status = executor.poll(handle)
    assert status.state is StageState.RUNNING and "starting" in status.message

    patch_status(api, handle, {"active": 1, "ready": 1})
    assert executor.poll(handle).state is StageState.RUNNING

    patch_status(api, handle, {"active": 0, "ready": 0, "succeeded": 1,
                               "conditions": [condition("SuccessCriteriaMet"), condition("Complete")]})
    status = executor.poll(handle)
    assert status.state is StageState.SUCCEEDED and status.state.final


def test_failed_job_reports_the_kubernetes_reason(
    executor: KubernetesExecutor, api: client.ApiClient
) -> None:
    handle = executor.start(stage_job("dpo"))
    patch_status(api, handle, {"active": 0, "failed": 1, "conditions": [
        condition("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]})
    status = executor.poll(handle)
    assert status.state is StageState.FAILED
    assert "BackoffLimitExceeded: Job has reached the specified backoff limit" in status.message
    assert status.retryable


def test_deadline_exceeded_is_retryable(executor: KubernetesExecutor, api: client.ApiClient) -> None:
    handle = executor.start(stage_job("distill"))
    patch_status(api, handle, {"conditions": [
        condition("FailureTarget", "DeadlineExceeded", "Job was active longer than specified deadline")]})
    status = executor.poll(handle)
    assert status.state is StageState.FAILED and status.retryable
    assert "DeadlineExceeded" in status.message


def test_pod_reasons_are_included_and_other_jobs_pods_are_not(
    executor: KubernetesExecutor, api: client.ApiClient
) -> None:
    handle = executor.start(stage_job("sft"))
    create_pod(api, f"{handle}-x7k2p", handle, terminated(137, "OOMKilled"))
    create_pod(api, "oct-0123456789ab-dpo-a1-zzzzz", "oct-0123456789ab-dpo-a1", terminated(1, "Error"))
    create_pod(api, f"{handle}-evict", handle, {"phase": "Failed", "reason": "Evicted",
                                                 "message": "The node was low on resource: memory."})
    patch_status(api, handle, {"failed": 1, "conditions": [
        condition("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]})

    status = executor.poll(handle)
    assert status.state is StageState.FAILED and status.retryable
    assert f"pod {handle}-x7k2p: container stage OOMKilled (exit code 137)" in status.message
    assert "Evicted (The node was low on resource: memory.)" in status.message
    assert "zzzzz" not in status.message  # the emulator ignores label selectors; the executor does not


def test_exit_code_2_is_not_retryable(executor: KubernetesExecutor, api: client.ApiClient) -> None:
    # Through the pod failure policy's condition (readable after the pod is gone) ...
    handle = executor.start(stage_job("dpo"))
    message = (f"Container stage for pod {NS}/{handle}-abcde failed with exit code 2 "
               "matching FailJob rule at index 0")
    patch_status(api, handle, {"failed": 1, "conditions": [condition("Failed", "PodFailurePolicy", message)]})
    status = executor.poll(handle)
    assert status.state is StageState.FAILED and not status.retryable
    assert "PodFailurePolicy" in status.message and "not retried" in status.message

    # ... and through the pod's container status.
    handle = executor.start(stage_job("sft"))
    create_pod(api, f"{handle}-abcde", handle, terminated(2, "Error"))
    patch_status(api, handle, {"failed": 1, "conditions": [condition("Failed", "BackoffLimitExceeded")]})
    status = executor.poll(handle)
    assert status.state is StageState.FAILED and not status.retryable
    assert "exit code 2" in status.message

    # Other exit codes stay retryable.
    handle = executor.start(stage_job("merge"))
    create_pod(api, f"{handle}-abcde", handle, terminated(21, "Error"))
    patch_status(api, handle, {"failed": 1, "conditions": [condition(
        "Failed", "PodFailurePolicy", "Container stage for pod x failed with exit code 21 matching rule")]})
    assert executor.poll(handle).retryable


def test_waiting_pods_say_why_while_running(executor: KubernetesExecutor, api: client.ApiClient) -> None:
    handle = executor.start(stage_job("dpo"))
    create_pod(api, f"{handle}-pull", handle, {"phase": "Pending", "containerStatuses": [{
        "name": "stage", "image": "oct-gpu:0.1.0", "imageID": "", "ready": False, "restartCount": 0,
        "state": {"waiting": {"reason": "ImagePullBackOff",
                              "message": 'Back-off pulling image "oct-gpu:0.1.0"'}},
    }]})
    patch_status(api, handle, {"active": 1, "ready": 0})
    status = executor.poll(handle)
    assert status.state is StageState.RUNNING
    assert "ImagePullBackOff" in status.message


def test_a_missing_job_has_disappeared(executor: KubernetesExecutor) -> None:
    status = executor.poll("oct-0123456789ab-dpo-a9")
    assert status.state is StageState.FAILED
    assert "job disappeared" in status.message


# ---------------------------------------------------------------------- cancel


def test_cancel_deletes_the_job_in_the_background_and_is_idempotent(
    executor: KubernetesExecutor, api: client.ApiClient, emulator: Emulator
) -> None:
    handle = executor.start(stage_job("dpo"))
    executor.cancel(handle)
    assert client.BatchV1Api(api).list_namespaced_job(NS).items == []
    (delete,) = emulator.requests("delete")
    assert delete.url.path.endswith(f"/namespaces/{NS}/jobs/{handle}")
    assert delete.params.get("propagationPolicy") == "Background" or (
        (delete.data or {}).get("propagationPolicy") == "Background"
    )

    executor.cancel(handle)  # 404: fine
    assert "job disappeared" in executor.poll(handle).message


# ---------------------------------------------------------------------- names and template


@pytest.mark.parametrize(
    "run_id",
    [RUN, "run-" + "f" * 64, "My Run/2025_01_01 #7", "x", "RUN-ABC", "a" * 200, "run-"],
)
def test_job_names_are_dns_labels_and_distinct(run_id: str) -> None:
    names = {job_name(run_id, stage, attempt)
             for stage in ("prompts", "distill", "dpo", "introspect", "sft", "merge", "eval")
             for attempt in (1, 2, 123)}
    assert len(names) == 21
    for name in names:
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert job_name(run_id, "dpo", 1) == job_name(run_id, "dpo", 1)
    value = label_value(run_id)
    assert len(value) <= 63 and re.fullmatch(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?", value)


def test_runs_sharing_a_prefix_get_different_names() -> None:
    a, b = "run-" + "a" * 20 + "1", "run-" + "a" * 20 + "2"
    assert job_name(a, "dpo", 1) != job_name(b, "dpo", 1)
    assert job_name(RUN, "dpo", 1) == "oct-0123456789ab-dpo-a1"


def test_the_built_in_template_is_the_charts_file(api: client.ApiClient) -> None:
    """The library's template is package data linked to charts/character/files/stage-job-template.yaml,
    the one copy (the chart's ConfigMap holds it as it is): what the executor builds from it is
    that file filled in."""
    path = ROOT / "charts" / "character" / "files" / "stage-job-template.yaml"
    on_disk = yaml.safe_load(path.read_text())
    assert default_job_template() == on_disk
    config = KubernetesExecutorConfig(namespace=NS, image="oct-cpu:0.1.0", service_account="character-worker",
                                      store_secret_name="character-s3", store_config_map_name="character-config")
    built = KubernetesExecutor(config, api).build_job(stage_job("prompts"))
    from_file = KubernetesExecutor(config.model_copy(update={"job_template": str(path)}), api).build_job(
        stage_job("prompts"))
    assert built == from_file
    kubernetes_validate.validate(built, K8S_VERSION, strict=True)
    container = built["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["stage", "prompts", "--run", RUN, "--store", STORE]
    assert container["env"] == on_disk["spec"]["template"]["spec"]["containers"][0]["env"]


def test_the_job_carries_the_stage_key(executor: KubernetesExecutor) -> None:
    job = stage_job("dpo").model_copy(update={"key": "k" * 64})
    container = executor.build_job(job)["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--key", "k" * 64]


def test_from_config_file(tmp_path: Path, api: client.ApiClient) -> None:
    (tmp_path / "template.yaml").write_text((ROOT / "charts" / "character" / "files" / "stage-job-template.yaml")
                                            .read_text())
    (tmp_path / "executor.yaml").write_text(yaml.safe_dump({
        "namespace": NS, "image": "oct-cpu:0.1.0", "images": {"dpo": "oct-gpu:0.1.0"},
        "resources": {"default": {"requests": {"cpu": "2"}}}, "tolerations": {"dpo": [GPU_TOLERATION]},
        "store_secret_name": "s3", "ttl_seconds_after_finished": None, "job_template": "template.yaml",
    }))
    executor = KubernetesExecutor.from_config_file(tmp_path / "executor.yaml", api)
    body = executor.build_job(stage_job("dpo"))
    assert body["spec"]["template"]["spec"]["containers"][0]["image"] == "oct-gpu:0.1.0"
    assert body["spec"]["template"]["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "2"}}
    assert "ttlSecondsAfterFinished" not in body["spec"]
    kubernetes_validate.validate(body, K8S_VERSION, strict=True)

    (tmp_path / "bad.yaml").write_text("namespace: x\nimage: y\nbackof_limit: 1\n")
    with pytest.raises(Exception, match="backof_limit"):
        KubernetesExecutor.from_config_file(tmp_path / "bad.yaml", api)
    assert "backoff_limit" in KubernetesExecutorConfig.model_fields


def test_the_controller_drives_a_run_as_jobs(api: client.ApiClient, tmp_path: Path) -> None:
    """The same Controller as `oct run` and the services, with this executor: each stage whose
    inputs have succeeded becomes a Job carrying the key computed at submit; a complete Job
    whose result is in the store makes the stage succeed and starts the next one."""
    from character.controller.runs import load_run
    from character.controller.scheduler import Controller, ControllerConfig
    from character.pipeline.runner import save_result
    from character.pipeline.stage import StageResult
    from character.store import open_store

    from tests.unit.controller.helpers import make_record

    store = open_store(str(tmp_path / "store"))
    executor = KubernetesExecutor(KubernetesExecutorConfig(namespace=NS, image="oct-cpu:0.1.0"), api)
    controller = Controller(store, executor, ControllerConfig(), executor_name="kubernetes")
    record, _ = controller.submit_record(make_record(RUN, {"prompts": (), "distill": ("prompts",)}))
    batch = client.BatchV1Api(api)

    controller.step()
    (job,) = batch.list_namespaced_job(NS).items
    assert job.metadata.name == job_name(RUN, "prompts", 1)
    assert job.spec.template.spec.containers[0].args[-2:] == ["--key", record.stages["prompts"].key]

    # What the Job's `oct stage` leaves behind, then what the Job controller writes.
    save_result(store, StageResult(stage="prompts", key=record.stages["prompts"].key))
    patch_status(api, job.metadata.name, {"conditions": [condition("SuccessCriteriaMet"), condition("Complete")]})
    controller.step()
    stored = load_run(store, RUN)
    assert stored.stages["prompts"].state is StageState.SUCCEEDED
    assert stored.stages["distill"].state is StageState.RUNNING
    assert sorted(j.metadata.name for j in batch.list_namespaced_job(NS).items) == sorted(
        [job_name(RUN, "prompts", 1), job_name(RUN, "distill", 1)])
