"""Generate stops when its caller has gone: a client that cancelled (or whose deadline passed)
does not keep the engine busy with the rest of its batches."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.platform import Limits, PlatformConfig

from character_services.api.character.v1 import common_pb2, generation_pb2
from character_services.common.server import ServeOptions
from character_services.generation.server import CallerGone, GenerationServicer


class CallerLeavesAfter:
    """Stands in for the gRPC context of one call (a real call cannot leave at an exact batch):
    the caller is active for the first `polls` checks, then gone."""

    def __init__(self, polls: int):
        self.polls, self.checked = polls, 0

    def is_active(self) -> bool:
        self.checked += 1
        return self.checked <= self.polls


@pytest.mark.attack("a client gives up on a huge Generate; the engine keeps working for it")
def test_generate_stops_between_batches_once_the_caller_has_gone(tiny_model: Path, tmp_path: Path) -> None:
    servicer = GenerationServicer(ServeOptions(store=str(tmp_path), platform=PlatformConfig(limits=Limits())))
    user = common_pb2.Conversation(messages=[common_pb2.Message(role="user", content="hi")])
    request = generation_pb2.GenerateRequest(model=common_pb2.ModelRef(name="tiny"), conversations=[user] * 96,
                                             sampling=common_pb2.SamplingParams(max_new_tokens=4))
    context = CallerLeavesAfter(polls=1)  # there at the start, gone when the first batch of 32 is done
    with pytest.raises(CallerGone):
        servicer.Generate(request, context)  # type: ignore[arg-type]
    assert context.checked == 2  # stopped at the check after batch 1: batches 2 and 3 never ran
