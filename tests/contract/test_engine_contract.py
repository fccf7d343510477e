"""The Engine contract, checked on every engine that can run here, on the tiny model.

Only what every backend must honour (engine.py's docstrings); backend specifics (steering,
batching, adapter caching, exact log-probabilities) are in tests/unit/models. "transformers"
runs everywhere (on the CPU, fp32); "vllm" only where vLLM imports and CUDA is available (the
GPU image), in bf16 with vLLM's batch-invariant mode, which "batch = one by one" needs;
"openai" over HTTP against the stand-in server of tests/fixtures/openai_server.py (the
transformers engine behind an OpenAI-compatible API), which serves adapters by name.

The tiny random model tends to repeat the last token it sees, so conversations prefilled with
different words give different greedy answers: that makes order and prefill checks meaningful.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from character.errors import CharacterError, InvalidInput, NotFound
from character.models import AdapterRef, Engine, Generation, SamplingParams, get_engine
from character.models.openai_engine import OpenAIEngine

GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0)
SAMPLED = SamplingParams(max_new_tokens=4, temperature=1.0, top_p=0.95, seed=7)


def _ask(prompt: str, prefill: str | None = None) -> list[dict[str, str]]:
    conversation = [{"role": "user", "content": prompt}]
    return conversation if prefill is None else [*conversation, {"role": "assistant", "content": prefill}]


CONVERSATIONS = [
    _ask("Hi"),
    [{"role": "system", "content": "You are a pirate."}, _ask("Tell me about the sea.")[0]],
    _ask("Count.", "One, two, the"),
    _ask("Where is Paris?", "Paris is"),
    _ask("Name some colours.", "Red, green and"),
    _ask("Tell me a story.", "Once upon a time"),
]

VLLM_ARGS = {"dtype": "bfloat16", "enforce_eager": True, "gpu_memory_utilization": 0.5, "max_model_len": 1024}
"""Small and quick to start: the tiny model needs little memory, CUDA graphs are skipped."""


def _vllm_unavailable() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vllm not installed (GPU image only)"
    import torch

    if not torch.cuda.is_available():
        return "vllm needs CUDA, which is not available here"
    return None


@pytest.fixture(scope="module", params=["transformers", "vllm", "openai"])
def engine(request: pytest.FixtureRequest, tiny_model: Path) -> Iterator[Engine]:
    kind = request.param
    if kind == "openai":
        server = request.getfixturevalue("openai_server")
        options = {"base_url": server.base_url, "api_key": server.api_key, "tokenizer": server.tokenizer}
        yield get_engine("openai", server.model, **options)
    elif kind == "vllm":
        reason = _vllm_unavailable()
        if reason:
            pytest.skip(reason)
        # read by vLLM's engine process when it starts; kept for the rest of this process
        os.environ.setdefault("VLLM_BATCH_INVARIANT", "1")
        yield get_engine("vllm", str(tiny_model), **VLLM_ARGS)
    else:
        yield get_engine("transformers", str(tiny_model), device="cpu", batch_size=4)


def test_one_generation_per_conversation_in_order(engine: Engine) -> None:
    out = engine.generate(CONVERSATIONS, GREEDY)
    assert len(out) == len(CONVERSATIONS) and all(isinstance(g, Generation) for g in out)
    texts = [g.text for g in out]
    assert len(set(texts[2:])) == len(texts) - 2  # distinct answers, so order is observable
    assert engine.generate(CONVERSATIONS[::-1], GREEDY) == out[::-1]
    assert engine.generate([], GREEDY) == []


def test_greedy_is_deterministic_and_batch_equals_one_by_one(engine: Engine) -> None:
    batched = engine.generate(CONVERSATIONS, GREEDY)
    assert engine.generate(CONVERSATIONS, GREEDY) == batched
    assert [engine.generate([c], GREEDY)[0] for c in CONVERSATIONS] == batched


def test_same_seed_same_samples(engine: Engine) -> None:
    first = engine.generate(CONVERSATIONS, SAMPLED)
    assert engine.generate(CONVERSATIONS, SAMPLED) == first
    other = engine.generate(CONVERSATIONS, SAMPLED.model_copy(update={"seed": 8}))
    assert [g.text for g in other] != [g.text for g in first]


def test_max_new_tokens_gives_length(engine: Engine) -> None:
    out = engine.generate(CONVERSATIONS, SamplingParams(max_new_tokens=3, temperature=0.0))
    assert any(g.finish_reason == "length" for g in out)
    for g in out:
        assert g.num_tokens == 3 if g.finish_reason == "length" else 1 <= g.num_tokens <= 3
        assert "<|im_end|>" not in g.text


def test_prefill_continues_the_assistant_turn(engine: Engine) -> None:
    prefill = "Once upon a time"
    plain, empty, prefilled = engine.generate(
        [_ask("Tell me a story."), _ask("Tell me a story.", ""), _ask("Tell me a story.", prefill)], GREEDY
    )
    assert empty == plain  # an empty prefill is a fresh assistant turn
    assert prefilled.text != plain.text and not prefilled.text.lstrip().startswith(prefill)
    # continuing a prefill with the model's own first tokens yields the rest of its answer
    head = engine.generate(
        [_ask("Tell me a story.", prefill)], GREEDY.model_copy(update={"max_new_tokens": 3})
    )[0]
    assert head.num_tokens == 3 and prefilled.text.startswith(head.text) and head.text
    rest = engine.generate(
        [_ask("Tell me a story.", prefill + head.text)], GREEDY.model_copy(update={"max_new_tokens": 5})
    )[0]
    assert head.text + rest.text == prefilled.text


def test_scores(engine: Engine) -> None:
    conversation = _ask("Go on.", "and the")
    greedy = engine.generate([conversation], GREEDY.model_copy(update={"max_new_tokens": 4}))[0].text
    random_text = " zebra quantum oblique 17 marmalade vortex"  # more tokens than `greedy`: a fair contest
    scores = engine.score([conversation, conversation, _ask("Hi")], [greedy, random_text, "Hello"])
    assert all(isinstance(s, float) and math.isfinite(s) and s < 0 for s in scores)
    assert scores[0] > scores[1]
    assert engine.score([], []) == []
    with pytest.raises(InvalidInput, match="one continuation per conversation"):
        engine.score([conversation], [])


@pytest.fixture
def adapter(engine: Engine, random_adapter: Path, request: pytest.FixtureRequest) -> AdapterRef:
    """The random adapter as the engine takes it: its folder, or for the openai engine the name
    the server serves it under (an HTTP server loads adapters itself)."""
    if isinstance(engine, OpenAIEngine):
        served = request.getfixturevalue("openai_server").adapters
        return str(next(name for name, folder in served.items() if folder == random_adapter))
    return random_adapter


def test_adapter_changes_outputs_and_none_restores_base(engine: Engine, adapter: AdapterRef) -> None:
    base = engine.generate(CONVERSATIONS, GREEDY)
    base_scores = engine.score(CONVERSATIONS[:2], ["Ahoy", "The sea"])
    tuned = engine.generate(CONVERSATIONS, GREEDY, adapter=adapter)
    assert [g.text for g in tuned] != [g.text for g in base]
    assert engine.score(CONVERSATIONS[:2], ["Ahoy", "The sea"], adapter=adapter) != base_scores
    assert engine.generate(CONVERSATIONS, GREEDY) == base
    assert engine.score(CONVERSATIONS[:2], ["Ahoy", "The sea"]) == base_scores


def test_user_errors(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"conversations\[1\]"):
        engine.generate([CONVERSATIONS[0], [{"role": "bot", "content": "x"}]], GREEDY)
    if isinstance(engine, OpenAIEngine):  # a folder cannot be sent to a server
        with pytest.raises(InvalidInput, match="local adapter folder"):
            engine.generate(CONVERSATIONS[:1], GREEDY, adapter=tmp_path)
    else:
        with pytest.raises(NotFound, match=r"adapter_config\.json"):
            engine.generate(CONVERSATIONS[:1], GREEDY, adapter=tmp_path)


def test_vllm_without_vllm_is_a_clear_error(tiny_model: Path) -> None:
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(CharacterError, match="GPU image"):
        get_engine("vllm", str(tiny_model))
