"""The persona server's engine contract (`serving.pool.ServingEngine`), on every serving engine
that can run here, on the tiny model: "transformers" everywhere, "vllm" where vLLM imports and
CUDA is available (the GPU image; bf16 in batch-invariant mode, as in test_engine_contract).

The serving path (`encode_chat` + `generate_ids`) must answer as the batch path (`generate`)
does, with and without an adapter, whatever other requests run at the same time (on vLLM they
share batches), and an unloaded adapter must answer the same once loaded again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from character.models import SamplingParams, get_engine
from character.serving.pool import ServingEngine

from tests.contract.test_engine_contract import CONVERSATIONS, VLLM_ARGS, _vllm_unavailable
from tests.fixtures.models import make_random_adapter

GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0)


@pytest.fixture(scope="module", params=["transformers", "vllm"])
def engine(request: pytest.FixtureRequest, tiny_model: Path) -> Iterator[Any]:
    """An Engine that is also a ServingEngine."""
    if request.param == "vllm":
        reason = _vllm_unavailable()
        if reason:
            pytest.skip(reason)
        os.environ.setdefault("VLLM_BATCH_INVARIANT", "1")
        yield get_engine("vllm", str(tiny_model), max_loras=2, **VLLM_ARGS)
    else:
        yield get_engine("transformers", str(tiny_model), device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def adapters(tiny_model: Path, random_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return random_adapter, make_random_adapter(tiny_model, tmp_path_factory.mktemp("second-adapter"), seed=1)


def _served(engine: ServingEngine, conversation: list[dict[str, str]], adapter: Path | None) -> str:
    return engine.generate_ids(engine.encode_chat(conversation), GREEDY, adapter=adapter).text


def test_the_serving_path_answers_as_generate(engine: Any, adapters: tuple[Path, Path]) -> None:
    for adapter in (None, *adapters):
        expected = [g.text for g in engine.generate(CONVERSATIONS, GREEDY, adapter=adapter)]
        assert [_served(engine, c, adapter) for c in CONVERSATIONS] == expected
    assert _served(engine, CONVERSATIONS[2], adapters[0]) != _served(engine, CONVERSATIONS[2], None)


def test_concurrent_requests_for_different_personas_answer_as_alone(
    engine: ServingEngine, adapters: tuple[Path, Path]
) -> None:
    asks = [(c, (None, *adapters)[i % 3]) for i, c in enumerate(CONVERSATIONS * 2)]
    alone = [_served(engine, c, a) for c, a in asks]
    with ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(lambda ask: _served(engine, *ask), asks))
    assert together == alone
    assert len(set(alone)) > 3


def test_an_unloaded_adapter_answers_the_same_when_loaded_again(
    engine: ServingEngine, adapters: tuple[Path, Path]
) -> None:
    before = _served(engine, CONVERSATIONS[3], adapters[1])
    assert engine.unload_adapter(adapters[1]) is True
    assert engine.unload_adapter(adapters[1]) is False
    assert _served(engine, CONVERSATIONS[3], adapters[1]) == before
