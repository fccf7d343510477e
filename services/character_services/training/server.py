"""The training service: runs the dpo, sft and merge stages as tasks (models load here)."""

from __future__ import annotations

from character.controller.stage_tasks import StageJobs
from character.pipeline.engines import LocalEngines
from character.pipeline.spec import RunSpec
from character.pipeline.stage import EngineProvider
from character.store.base import Store

from character_services.api.character.v1 import training_pb2_grpc
from character_services.common.catalog import SERVICES
from character_services.common.server import ServeOptions, Server, worker_server
from character_services.common.task_rpc import TaskServicer

INFO = SERVICES["training"]


class TrainingServicer(TaskServicer, training_pb2_grpc.TrainingServiceServicer):
    pass


def _engines(store: Store, spec: RunSpec) -> EngineProvider:
    # A fresh provider per task: a trained model is not kept after its stage.
    return LocalEngines.for_spec(store, spec)


def build(options: ServeOptions) -> Server:
    return worker_server(INFO, options, TrainingServicer(), StageJobs(_engines, INFO.stages))
