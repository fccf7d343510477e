from character_services.api.character.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IntrospectionServiceStartTaskRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.StageTask
    def __init__(self, task: _Optional[_Union[_common_pb2.StageTask, _Mapping]] = ...) -> None: ...

class IntrospectionServiceStartTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.TaskStatus
    def __init__(self, task: _Optional[_Union[_common_pb2.TaskStatus, _Mapping]] = ...) -> None: ...

class IntrospectionServiceWatchTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class IntrospectionServiceWatchTaskResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _common_pb2.TaskEvent
    def __init__(self, event: _Optional[_Union[_common_pb2.TaskEvent, _Mapping]] = ...) -> None: ...

class IntrospectionServiceGetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class IntrospectionServiceGetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.TaskStatus
    def __init__(self, task: _Optional[_Union[_common_pb2.TaskStatus, _Mapping]] = ...) -> None: ...

class IntrospectionServiceCancelTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class IntrospectionServiceCancelTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.TaskStatus
    def __init__(self, task: _Optional[_Union[_common_pb2.TaskStatus, _Mapping]] = ...) -> None: ...
