"""The evaluation service: runs the eval stage as tasks; its model calls go to
the generation service."""

from __future__ import annotations

from character.controller.stage_tasks import StageJobs

from character_services.api.character.v1 import evaluation_pb2_grpc
from character_services.common.catalog import SERVICES
from character_services.common.remote_engine import remote_engines_for
from character_services.common.server import ServeOptions, Server, worker_server
from character_services.common.task_rpc import TaskServicer

INFO = SERVICES["evaluation"]


class EvaluationServicer(TaskServicer, evaluation_pb2_grpc.EvaluationServiceServicer):
    pass


def build(options: ServeOptions) -> Server:
    jobs = StageJobs(remote_engines_for(options.address("generation"), options.transport()), INFO.stages)
    return worker_server(INFO, options, EvaluationServicer(), jobs)
