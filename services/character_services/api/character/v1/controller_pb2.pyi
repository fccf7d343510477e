import datetime

from character_services.api.character.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StageRun(_message.Message):
    __slots__ = ("stage", "state", "attempts", "message", "key", "artifacts", "started_at", "finished_at", "progress", "config_json")
    class ArtifactsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.ArtifactRef
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ...) -> None: ...
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    stage: str
    state: _common_pb2.StageState
    attempts: int
    message: str
    key: str
    artifacts: _containers.MessageMap[str, _common_pb2.ArtifactRef]
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    progress: _common_pb2.ProgressEvent
    config_json: str
    def __init__(self, stage: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.StageState, str]] = ..., attempts: _Optional[int] = ..., message: _Optional[str] = ..., key: _Optional[str] = ..., artifacts: _Optional[_Mapping[str, _common_pb2.ArtifactRef]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., progress: _Optional[_Union[_common_pb2.ProgressEvent, _Mapping]] = ..., config_json: _Optional[str] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("run_id", "state", "spec_yaml", "persona", "model", "scale", "store_uri", "stages", "message", "created_at", "updated_at")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_YAML_FIELD_NUMBER: _ClassVar[int]
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    STORE_URI_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    state: _common_pb2.RunState
    spec_yaml: str
    persona: str
    model: str
    scale: str
    store_uri: str
    stages: _containers.RepeatedCompositeFieldContainer[StageRun]
    message: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, run_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.RunState, str]] = ..., spec_yaml: _Optional[str] = ..., persona: _Optional[str] = ..., model: _Optional[str] = ..., scale: _Optional[str] = ..., store_uri: _Optional[str] = ..., stages: _Optional[_Iterable[_Union[StageRun, _Mapping]]] = ..., message: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("run_id", "stage", "stage_state", "run_state", "progress", "message", "attempt", "time")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STAGE_STATE_FIELD_NUMBER: _ClassVar[int]
    RUN_STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    stage: str
    stage_state: _common_pb2.StageState
    run_state: _common_pb2.RunState
    progress: _common_pb2.ProgressEvent
    message: str
    attempt: int
    time: _timestamp_pb2.Timestamp
    def __init__(self, run_id: _Optional[str] = ..., stage: _Optional[str] = ..., stage_state: _Optional[_Union[_common_pb2.StageState, str]] = ..., run_state: _Optional[_Union[_common_pb2.RunState, str]] = ..., progress: _Optional[_Union[_common_pb2.ProgressEvent, _Mapping]] = ..., message: _Optional[str] = ..., attempt: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubmitRunRequest(_message.Message):
    __slots__ = ("spec_yaml",)
    SPEC_YAML_FIELD_NUMBER: _ClassVar[int]
    spec_yaml: str
    def __init__(self, spec_yaml: _Optional[str] = ...) -> None: ...

class SubmitRunResponse(_message.Message):
    __slots__ = ("run", "created")
    RUN_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    run: Run
    created: bool
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class WatchRunResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: RunEvent
    def __init__(self, event: _Optional[_Union[RunEvent, _Mapping]] = ...) -> None: ...

class CancelRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class CancelRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ...) -> None: ...

class EvaluationFigure(_message.Message):
    __slots__ = ("figure", "value", "n", "unit", "ci_low", "ci_high", "test", "p_value", "verdict", "distinguishable")
    FIGURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    DISTINGUISHABLE_FIELD_NUMBER: _ClassVar[int]
    figure: str
    value: float
    n: int
    unit: str
    ci_low: float
    ci_high: float
    test: str
    p_value: float
    verdict: str
    distinguishable: bool
    def __init__(self, figure: _Optional[str] = ..., value: _Optional[float] = ..., n: _Optional[int] = ..., unit: _Optional[str] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., test: _Optional[str] = ..., p_value: _Optional[float] = ..., verdict: _Optional[str] = ..., distinguishable: _Optional[bool] = ...) -> None: ...

class TrainedPersona(_message.Message):
    __slots__ = ("name", "tag", "record_id", "run_id", "owner", "shared", "persona", "constitution_digest", "base_model", "scale", "model", "adapters", "stage_keys", "figures", "published_at")
    class AdaptersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.ArtifactRef
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ...) -> None: ...
    class StageKeysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class FiguresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: EvaluationFigure
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[EvaluationFigure, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    CONSTITUTION_DIGEST_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    STAGE_KEYS_FIELD_NUMBER: _ClassVar[int]
    FIGURES_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    tag: str
    record_id: str
    run_id: str
    owner: str
    shared: bool
    persona: str
    constitution_digest: str
    base_model: str
    scale: str
    model: _common_pb2.ArtifactRef
    adapters: _containers.MessageMap[str, _common_pb2.ArtifactRef]
    stage_keys: _containers.ScalarMap[str, str]
    figures: _containers.MessageMap[str, EvaluationFigure]
    published_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., tag: _Optional[str] = ..., record_id: _Optional[str] = ..., run_id: _Optional[str] = ..., owner: _Optional[str] = ..., shared: _Optional[bool] = ..., persona: _Optional[str] = ..., constitution_digest: _Optional[str] = ..., base_model: _Optional[str] = ..., scale: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., adapters: _Optional[_Mapping[str, _common_pb2.ArtifactRef]] = ..., stage_keys: _Optional[_Mapping[str, str]] = ..., figures: _Optional[_Mapping[str, EvaluationFigure]] = ..., published_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PublishPersonaRequest(_message.Message):
    __slots__ = ("run_id", "name", "tag", "shared")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    name: str
    tag: str
    shared: bool
    def __init__(self, run_id: _Optional[str] = ..., name: _Optional[str] = ..., tag: _Optional[str] = ..., shared: _Optional[bool] = ...) -> None: ...

class PublishPersonaResponse(_message.Message):
    __slots__ = ("persona",)
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    persona: TrainedPersona
    def __init__(self, persona: _Optional[_Union[TrainedPersona, _Mapping]] = ...) -> None: ...

class ListTrainedPersonasRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTrainedPersonasResponse(_message.Message):
    __slots__ = ("personas",)
    PERSONAS_FIELD_NUMBER: _ClassVar[int]
    personas: _containers.RepeatedCompositeFieldContainer[TrainedPersona]
    def __init__(self, personas: _Optional[_Iterable[_Union[TrainedPersona, _Mapping]]] = ...) -> None: ...

class GetTrainedPersonaRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: str
    def __init__(self, ref: _Optional[str] = ...) -> None: ...

class GetTrainedPersonaResponse(_message.Message):
    __slots__ = ("persona",)
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    persona: TrainedPersona
    def __init__(self, persona: _Optional[_Union[TrainedPersona, _Mapping]] = ...) -> None: ...
