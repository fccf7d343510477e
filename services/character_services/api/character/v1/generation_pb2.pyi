from character_services.api.character.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason

class GenerationServiceStartTaskRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.StageTask
    def __init__(self, task: _Optional[_Union[_common_pb2.StageTask, _Mapping]] = ...) -> None: ...

class GenerationServiceStartTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.TaskStatus
    def __init__(self, task: _Optional[_Union[_common_pb2.TaskStatus, _Mapping]] = ...) -> None: ...

class GenerationServiceWatchTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GenerationServiceWatchTaskResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _common_pb2.TaskEvent
    def __init__(self, event: _Optional[_Union[_common_pb2.TaskEvent, _Mapping]] = ...) -> None: ...

class GenerationServiceGetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GenerationServiceGetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.TaskStatus
    def __init__(self, task: _Optional[_Union[_common_pb2.TaskStatus, _Mapping]] = ...) -> None: ...

class GenerationServiceCancelTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GenerationServiceCancelTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.TaskStatus
    def __init__(self, task: _Optional[_Union[_common_pb2.TaskStatus, _Mapping]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("model", "conversations", "sampling", "adapter", "steering", "store_uri")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    STEERING_FIELD_NUMBER: _ClassVar[int]
    STORE_URI_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    conversations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Conversation]
    sampling: _common_pb2.SamplingParams
    adapter: _common_pb2.AdapterRef
    steering: _common_pb2.Steering
    store_uri: str
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., conversations: _Optional[_Iterable[_Union[_common_pb2.Conversation, _Mapping]]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., adapter: _Optional[_Union[_common_pb2.AdapterRef, _Mapping]] = ..., steering: _Optional[_Union[_common_pb2.Steering, _Mapping]] = ..., store_uri: _Optional[str] = ...) -> None: ...

class Generation(_message.Message):
    __slots__ = ("text", "finish_reason", "num_tokens")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    text: str
    finish_reason: FinishReason
    num_tokens: int
    def __init__(self, text: _Optional[str] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., num_tokens: _Optional[int] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("generations",)
    GENERATIONS_FIELD_NUMBER: _ClassVar[int]
    generations: _containers.RepeatedCompositeFieldContainer[Generation]
    def __init__(self, generations: _Optional[_Iterable[_Union[Generation, _Mapping]]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("model", "conversations", "continuations", "adapter", "store_uri")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    CONTINUATIONS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    STORE_URI_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    conversations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Conversation]
    continuations: _containers.RepeatedScalarFieldContainer[str]
    adapter: _common_pb2.AdapterRef
    store_uri: str
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., conversations: _Optional[_Iterable[_Union[_common_pb2.Conversation, _Mapping]]] = ..., continuations: _Optional[_Iterable[str]] = ..., adapter: _Optional[_Union[_common_pb2.AdapterRef, _Mapping]] = ..., store_uri: _Optional[str] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("logprobs",)
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, logprobs: _Optional[_Iterable[float]] = ...) -> None: ...
