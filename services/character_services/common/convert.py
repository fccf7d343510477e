"""Between the wire (character.v1 messages) and the library's types, in both directions.

Requests are checked here as they are converted: a bad field raises `InvalidInput` naming
the field, which the servers return as INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from character.controller.executor import StageJob, StageState
from character.controller.runs import RunRecord
from character.controller.scheduler import RunEvent
from character.controller.stage_tasks import TaskStatus
from character.errors import InvalidInput, from_validation
from character.models.engine import Conversation, Generation, SamplingParams, Steering
from character.progress import ProgressEvent
from character.serving.registry import TrainedPersona
from character.stats import Evidence
from character.store.base import ArtifactRef
from character.store.digest import canonical_json
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import ValidationError

from character_services.api.character.v1 import common_pb2, controller_pb2, generation_pb2

ROLES = ("system", "user", "assistant")

_STATE_TO_PB: dict[StageState, common_pb2.StageState] = {
    s: common_pb2.StageState.Value(f"STAGE_STATE_{s.name}") for s in StageState}
_STATE_FROM_PB = {int(v): k for k, v in _STATE_TO_PB.items()}
_RUN_STATE_TO_PB: dict[StageState, common_pb2.RunState] = {
    s: common_pb2.RunState.Value(f"RUN_STATE_{s.name}") for s in StageState}
_RUN_STATE_FROM_PB = {int(v): k for k, v in _RUN_STATE_TO_PB.items()}
_FINISH = {"stop": generation_pb2.FINISH_REASON_STOP, "length": generation_pb2.FINISH_REASON_LENGTH}


# ---------------------------------------------------------------------- small things
def timestamp(at: datetime | None) -> Timestamp | None:
    if at is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(at.astimezone(UTC))
    return ts


def from_timestamp(msg: Any, field: str) -> datetime | None:
    return getattr(msg, field).ToDatetime(tzinfo=UTC) if msg.HasField(field) else None


def stage_state(state: StageState) -> common_pb2.StageState:
    return _STATE_TO_PB[state]


def from_stage_state(value: int) -> StageState:
    return _STATE_FROM_PB[value]


def run_state(state: StageState) -> common_pb2.RunState:
    return _RUN_STATE_TO_PB[state]


def from_run_state(value: int) -> StageState:
    return _RUN_STATE_FROM_PB[value]


def progress(event: ProgressEvent) -> common_pb2.ProgressEvent:
    return common_pb2.ProgressEvent(task=event.task, done=event.done, total=event.total,
                                    message=event.message)


def from_progress(msg: common_pb2.ProgressEvent) -> ProgressEvent:
    return ProgressEvent(task=msg.task, done=msg.done, total=msg.total if msg.HasField("total") else None,
                         message=msg.message)


def artifact(ref: ArtifactRef) -> common_pb2.ArtifactRef:
    return common_pb2.ArtifactRef(kind=ref.kind, key=ref.key, content_digest=ref.content_digest)


# ---------------------------------------------------------------------- tasks
def stage_task(job: StageJob) -> common_pb2.StageTask:
    return common_pb2.StageTask(run_id=job.run_id, stage=job.stage, store_uri=job.store_uri,
                                attempt=job.attempt, key=job.key)


def from_stage_task(msg: common_pb2.StageTask) -> StageJob:
    """The job a StartTask asks for (the worker checks the stage is one of its own)."""
    missing = [f for f in ("run_id", "stage", "store_uri") if not getattr(msg, f)]
    if missing:
        raise InvalidInput(f"set {', '.join(missing)}", where="task")
    if msg.attempt < 0:
        raise InvalidInput(f"attempt must be >= 1, got {msg.attempt}", where="task.attempt")
    return StageJob(run_id=msg.run_id, stage=msg.stage, store_uri=msg.store_uri, attempt=msg.attempt or 1,
                    key=msg.key)


def task_status(status: TaskStatus) -> common_pb2.TaskStatus:
    return common_pb2.TaskStatus(
        task_id=status.task_id,
        spec=stage_task(status.job),
        state=stage_state(status.state),
        message=status.message,
        retryable=status.retryable,
        result_key=status.result_key,
        progress=progress(status.progress) if status.progress else None,
        created_at=timestamp(status.created_at),
        started_at=timestamp(status.started_at),
        finished_at=timestamp(status.finished_at),
    )


def from_task_status(msg: common_pb2.TaskStatus) -> TaskStatus:
    return TaskStatus(
        task_id=msg.task_id,
        job=from_stage_task(msg.spec),
        state=from_stage_state(msg.state),
        message=msg.message,
        retryable=msg.retryable,
        result_key=msg.result_key,
        progress=from_progress(msg.progress) if msg.HasField("progress") else None,
        created_at=from_timestamp(msg, "created_at") or datetime.now(UTC),
        started_at=from_timestamp(msg, "started_at"),
        finished_at=from_timestamp(msg, "finished_at"),
    )


def task_event(event: TaskStatus | ProgressEvent) -> common_pb2.TaskEvent:
    if isinstance(event, TaskStatus):
        return common_pb2.TaskEvent(status=task_status(event))
    return common_pb2.TaskEvent(progress=progress(event))


def from_task_event(msg: common_pb2.TaskEvent) -> TaskStatus | ProgressEvent:
    if msg.WhichOneof("event") == "status":
        return from_task_status(msg.status)
    return from_progress(msg.progress)


# ---------------------------------------------------------------------- generation
def conversations(convs: Sequence[Conversation]) -> list[common_pb2.Conversation]:
    return [common_pb2.Conversation(messages=[common_pb2.Message(role=m["role"], content=m["content"])
                                              for m in conv]) for conv in convs]


def from_conversations(msgs: Sequence[common_pb2.Conversation]) -> list[Conversation]:
    if not msgs:
        raise InvalidInput("send at least one conversation", where="conversations")
    out: list[Conversation] = []
    for i, conv in enumerate(msgs):
        if not conv.messages:
            raise InvalidInput("a conversation needs at least one message", where=f"conversations[{i}]")
        for j, m in enumerate(conv.messages):
            if m.role not in ROLES:
                raise InvalidInput(f"role must be one of {', '.join(ROLES)}, got {m.role!r}",
                                   where=f"conversations[{i}].messages[{j}].role")
        out.append([{"role": m.role, "content": m.content} for m in conv.messages])
    return out


def sampling(params: SamplingParams) -> common_pb2.SamplingParams:
    return common_pb2.SamplingParams(**params.model_dump(exclude_none=True))


def from_sampling(msg: common_pb2.SamplingParams) -> SamplingParams:
    values = {f.name: getattr(msg, f.name) for f in msg.DESCRIPTOR.fields if msg.HasField(f.name)}
    try:
        return SamplingParams.model_validate(values)
    except ValidationError as err:
        raise from_validation(err, "sampling") from None


def steering(value: Steering) -> common_pb2.Steering:
    return common_pb2.Steering(
        vectors={layer: common_pb2.SteeringVector(values=v) for layer, v in value.vectors.items()},
        coefficient=value.coefficient,
    )


def from_steering(msg: common_pb2.Steering) -> Steering:
    if not msg.vectors:
        raise InvalidInput("steering needs at least one layer's vector", where="steering.vectors")
    return Steering(vectors={layer: list(v.values) for layer, v in msg.vectors.items()},
                    coefficient=msg.coefficient)


def generation(gen: Generation) -> generation_pb2.Generation:
    return generation_pb2.Generation(text=gen.text, finish_reason=_FINISH[gen.finish_reason],
                                     num_tokens=gen.num_tokens)


def from_generation(msg: generation_pb2.Generation) -> Generation:
    length = msg.finish_reason == generation_pb2.FINISH_REASON_LENGTH
    return Generation(text=msg.text, finish_reason="length" if length else "stop", num_tokens=msg.num_tokens)


# ---------------------------------------------------------------------- runs
def run(record: RunRecord, with_spec: bool = True) -> controller_pb2.Run:
    import yaml

    spec = record.spec
    constitution = spec.get("constitution")
    persona = constitution.get("name", "") if isinstance(constitution, dict) else str(constitution or "")
    return controller_pb2.Run(
        run_id=record.run_id,
        state=run_state(record.state),
        spec_yaml=yaml.safe_dump(spec, sort_keys=False, allow_unicode=True) if with_spec else "",
        persona=persona,
        model=str(spec.get("model", "")),
        scale=str(spec.get("scale", "")),
        store_uri=str(spec.get("store", "")),
        stages=[
            controller_pb2.StageRun(
                stage=name,
                state=stage_state(stage.state),
                attempts=stage.attempts,
                message=stage.message,
                key=stage.key,
                artifacts={label: artifact(ref) for label, ref in stage.artifacts.items()},
                started_at=timestamp(stage.started_at),
                finished_at=timestamp(stage.finished_at),
                progress=progress(stage.progress) if stage.progress else None,
                config_json=canonical_json(stage.config.values) if stage.config is not None else "",
            )
            for name, stage in record.stages.items()
        ],
        message=record.message,
        created_at=timestamp(record.created_at),
        updated_at=timestamp(record.updated_at),
    )


def run_event(event: RunEvent) -> controller_pb2.RunEvent:
    msg = controller_pb2.RunEvent(run_id=event.run_id, stage=event.stage or "", message=event.message,
                                  attempt=event.attempt, time=timestamp(event.time))
    if event.progress is not None:
        msg.progress.CopyFrom(progress(event.progress))
    elif event.state is not None and event.stage:
        msg.stage_state = stage_state(event.state)
    elif event.state is not None:
        msg.run_state = run_state(event.state)
    return msg


# ---------------------------------------------------------------------- trained personas
def evaluation_figure(figure: Evidence) -> controller_pb2.EvaluationFigure:
    """The fields of a figure the API carries (its verdict in words among them)."""
    return controller_pb2.EvaluationFigure(
        figure=figure.figure, value=figure.value, n=figure.n, unit=figure.unit, ci_low=figure.ci_low,
        ci_high=figure.ci_high, test=figure.test, p_value=figure.p_value, verdict=figure.verdict(),
        distinguishable=figure.distinguishable,
    )


def trained_persona(persona: TrainedPersona) -> controller_pb2.TrainedPersona:
    return controller_pb2.TrainedPersona(
        name=persona.name,
        tag=persona.tag,
        record_id=persona.record_id,
        run_id=persona.run_id,
        owner=persona.owner,
        shared=persona.shared,
        persona=persona.persona,
        constitution_digest=persona.constitution_digest,
        base_model=persona.base_model,
        scale=persona.scale,
        model=artifact(persona.model) if persona.model is not None else None,
        adapters={stage: artifact(ref) for stage, ref in persona.adapters.items()},
        stage_keys=persona.stage_keys,
        figures={key: evaluation_figure(figure) for key, figure in persona.figures.items()},
        published_at=timestamp(persona.published_at),
    )
