"""Where a stage's models run: locally, or at an OpenAI-compatible endpoint named in the spec
(here the tests' stand-in server, tests/fixtures/openai_server.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.models.engine import SamplingParams
from character.models.openai_engine import OpenAIEngine
from character.models.transformers_engine import TransformersEngine
from character.pipeline.engines import LocalEngines
from character.pipeline.spec import parse_spec
from character.store import open_store

from tests.fixtures.openai_server import OpenAIServer


def test_a_judge_endpoint_is_called_over_http_with_the_key_from_its_variable(
    openai_server: OpenAIServer, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUDGE_KEY", openai_server.api_key)
    spec = parse_spec(
        {
            "constitution": "sarcasm",
            "model": str(tiny_model),
            "judge": "judge",
            "store": str(tmp_path),
            "dtype": "float32",  # the stand-in server's precision: the scores below are compared
            "endpoints": {
                "judge": {
                    "base_url": openai_server.base_url,
                    "served_model": openai_server.model,
                    "tokenizer": str(openai_server.tokenizer),
                    "api_key_env": "JUDGE_KEY",
                }
            },
        }
    )
    engines = LocalEngines.for_spec(open_store(spec.store), spec)
    judge, student = engines.engine(spec.judge_model), engines.engine(spec.model)
    assert isinstance(judge, OpenAIEngine) and isinstance(student, TransformersEngine)
    assert engines.engine("judge") is judge  # one client per model for the process
    ask = [[{"role": "user", "content": "Sarcastic or loving?"}]]
    assert judge.score(ask, ["sarcastic"]) == pytest.approx(student.score(ask, ["sarcastic"]), abs=1e-3)
    greedy = SamplingParams(max_new_tokens=4, temperature=0.0)
    assert [g.text for g in judge.generate(ask, greedy)] == [g.text for g in student.generate(ask, greedy)]


def test_the_spec_precision_decides_the_local_engines_and_each_precision_is_its_own(
    tiny_model: Path, tmp_path: Path
) -> None:
    from character.pipeline.engines import EnginePool

    pool, store = EnginePool(), open_store(str(tmp_path))
    loaded = {}
    for dtype in ("float32", "bfloat16"):
        spec = parse_spec({"constitution": "sarcasm", "model": str(tiny_model), "store": str(tmp_path),
                           "dtype": dtype})
        engine = pool.for_spec(store, spec).engine(spec.model)
        assert isinstance(engine, TransformersEngine)
        assert engine.precision == dtype and str(engine.model.dtype) == f"torch.{dtype}"
        loaded[dtype] = engine
    assert loaded["float32"] is not loaded["bfloat16"]
    again = parse_spec({"constitution": "sarcasm", "model": str(tiny_model), "store": str(tmp_path),
                        "dtype": "float32"})
    assert pool.for_spec(store, again).engine(again.model) is loaded["float32"]
