"""The evaluation service: runs the eval stage as tasks; its model calls go to
the generation service."""

from __future__ import annotations

from character.controller.tasks import StageJobs

from services.api.character.v1 import evaluation_pb2_grpc
from services.common.catalog import SERVICES
from services.common.remote_engine import remote_engines_for
from services.common.server import ServeOptions, Server, worker_server
from services.common.tasks import TaskServicer

INFO = SERVICES["evaluation"]


class EvaluationServicer(TaskServicer, evaluation_pb2_grpc.EvaluationServiceServicer):
    pass


def build(options: ServeOptions) -> Server:
    jobs = StageJobs(remote_engines_for(options.address("generation")), INFO.stages)
    return worker_server(INFO, options, EvaluationServicer(), jobs)
