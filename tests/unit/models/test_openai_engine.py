"""The openai engine over real HTTP against the stand-in OpenAI-compatible server of
tests/fixtures/openai_server.py (a stand-in, not a real server: see its docstring), which
serves the TransformersEngine on the tiny model; so the openai engine must answer and score
exactly as a TransformersEngine on the same model does."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from character.errors import CharacterError, InvalidInput, NotFound
from character.models import SamplingParams, Steering, get_engine
from character.models.openai_engine import OpenAIEngine, ServerUnavailable
from character.models.transformers_engine import TransformersEngine
from character.progress import ProgressEvent
from openai.types import Completion

from tests.contract.test_engine_contract import CONVERSATIONS, GREEDY, _ask
from tests.fixtures.openai_server import OpenAIServer

STOP = _ask("Stop.", "Done.<|im_end|>")
"""The tiny model repeats the last token it sees: here the end of turn, so it stops at once."""
SAMPLED = SamplingParams(max_new_tokens=6, temperature=1.0, top_p=0.95, seed=7)


def _engine(server: OpenAIServer, **kw: object) -> OpenAIEngine:
    options = {"base_url": server.base_url, "api_key": server.api_key, "timeout_s": 30.0, "concurrency": 4}
    engine = get_engine("openai", server.model, **(options | {"tokenizer": server.tokenizer} | kw))
    assert isinstance(engine, OpenAIEngine)
    return engine


@pytest.fixture(scope="module")
def engine(openai_server: OpenAIServer) -> Iterator[OpenAIEngine]:
    engine = _engine(openai_server)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def reference(tiny_model: Path) -> TransformersEngine:
    """What the server serves, in this process: the answers and scores to match."""
    return TransformersEngine(tiny_model, device="cpu", dtype="float32", batch_size=8)


def test_generates_like_the_transformers_engine(engine: OpenAIEngine, reference: TransformersEngine) -> None:
    """Order, prefills, finish reasons and token counts are the contract suite's; here the
    answers must be the very ones of the engine the server runs."""
    conversations = [*CONVERSATIONS, STOP]
    out = engine.generate(conversations, GREEDY)
    assert out == reference.generate(conversations, GREEDY)
    assert out[-1].finish_reason == "stop" and out[-1].num_tokens == 1 and out[-1].text == ""
    assert {g.finish_reason for g in out[:-1]} == {"length"} and all(g.num_tokens == 8 for g in out[:-1])


def test_each_request_gets_its_own_seed(engine: OpenAIEngine) -> None:
    first, again = engine.generate([CONVERSATIONS[0], CONVERSATIONS[0]], SAMPLED)
    assert first.text != again.text
    assert engine.generate([CONVERSATIONS[0]], SAMPLED) == [first]


def test_chat_completions_without_a_tokenizer(openai_server: OpenAIServer, engine: OpenAIEngine) -> None:
    chat = _engine(openai_server, tokenizer=None)
    fresh = [CONVERSATIONS[0], CONVERSATIONS[1], _ask("Hi", "")]
    # the server renders with the model's template, as the engine does with a tokenizer
    assert chat.generate(fresh, GREEDY) == engine.generate(fresh, GREEDY)
    with pytest.raises(InvalidInput, match=r"conversations\[2\]: .*prefill.*tokenizer="):
        chat.generate(CONVERSATIONS, GREEDY)
    with pytest.raises(InvalidInput, match=r"tokenizer: .*tokenizer="):
        chat.score(CONVERSATIONS[:1], ["Hello"])
    chat.close()


def test_scores_match_the_transformers_engine(engine: OpenAIEngine, reference: TransformersEngine) -> None:
    conversation = _ask("Go on.", "and the")
    greedy = engine.generate([conversation], GREEDY.model_copy(update={"max_new_tokens": 4}))[0].text
    conversations = [conversation, conversation, CONVERSATIONS[1], _ask("Hi")]
    continuations = [greedy, " zebra quantum oblique 17 marmalade vortex", "Arr, the sea!", ""]
    events: list[ProgressEvent] = []
    scores = engine.score(conversations, continuations, progress=events.append)
    assert scores == pytest.approx(reference.score(conversations, continuations), abs=1e-3)
    assert (events[0].done, events[-1].done, events[-1].total) == (0, 4, 4)
    assert [e.done for e in events] == sorted(e.done for e in events)
    assert all(s < 0 for s in scores) and scores[0] > scores[1]
    assert engine.score([], []) == []
    with pytest.raises(InvalidInput, match="one continuation per conversation"):
        engine.score(conversations, continuations[:1])


def test_served_adapters_by_name(
    openai_server: OpenAIServer, engine: OpenAIEngine, reference: TransformersEngine, tmp_path: Path
) -> None:
    ((name, folder),) = openai_server.adapters.items()
    base = engine.generate(CONVERSATIONS, GREEDY)
    tuned = engine.generate(CONVERSATIONS, GREEDY, adapter=name)
    assert tuned == reference.generate(CONVERSATIONS, GREEDY, adapter=folder) and tuned != base
    pairs = (CONVERSATIONS[:2], ["Ahoy", "The sea"])
    assert engine.score(*pairs, adapter=name) == pytest.approx(reference.score(*pairs, adapter=folder), abs=1e-3)
    for local in (folder, str(tmp_path), "./adapters/sarcasm"):
        with pytest.raises(InvalidInput, match=r"adapter: .*local adapter folder.*--lora-modules NAME=PATH"):
            engine.generate(CONVERSATIONS[:1], GREEDY, adapter=local)
    with pytest.raises(NotFound, match=rf"{openai_server.base_url} has no model 'sarcasm'.*HTTP 404.*/models"):
        engine.generate(CONVERSATIONS[:1], GREEDY, adapter="sarcasm")


def test_refuses_what_a_server_cannot_do(engine: OpenAIEngine) -> None:
    with pytest.raises(InvalidInput, match=r"steering: .*cannot steer.*'transformers'"):
        engine.generate(CONVERSATIONS[:1], GREEDY, steering=Steering({0: [0.0] * 64}))
    with pytest.raises(InvalidInput, match=r"conversations\[1\]"):
        engine.generate([CONVERSATIONS[0], [{"role": "bot", "content": "x"}]], GREEDY)


def test_server_errors_are_clear(openai_server: OpenAIServer) -> None:
    with pytest.raises(InvalidInput, match=r"api_key: .*refused the API key for 'tiny' \(HTTP 401.*OPENAI_API_KEY"):
        _engine(openai_server, api_key="wrong").generate(CONVERSATIONS[:1], GREEDY)
    with socket.socket() as taken:  # bound, not listening: connections are refused
        taken.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{taken.getsockname()[1]}/v1"
        with pytest.raises(ServerUnavailable, match=rf"cannot reach .*{url} \(model 'tiny'.*start the server"):
            _engine(openai_server, base_url=url, max_retries=0).generate(CONVERSATIONS[:1], GREEDY)
    with pytest.raises(ServerUnavailable, match=r"did not answer .*'tiny' within 0\.001 s.*raise timeout_s"):
        _engine(openai_server, timeout_s=0.001, max_retries=0).generate(CONVERSATIONS[:1], GREEDY)
    with pytest.raises(NotFound, match=r"no model 'llama'"):
        get_engine("openai", "llama", base_url=openai_server.base_url, api_key=openai_server.api_key).generate(
            CONVERSATIONS[:1], GREEDY
        )
    with pytest.raises(InvalidInput, match=r"(?s)request: .*rejected a request for 'tiny' \(HTTP 400:.*max_new_tokens"):
        _engine(openai_server, extra_body={"max_tokens": 0}).generate(CONVERSATIONS[:1], GREEDY)


def test_a_server_without_prompt_logprobs_is_named(engine: OpenAIEngine) -> None:
    """A hosted API answers echo=True without the prompt's log-probabilities (the response is
    built here: the stand-in returns them, as vLLM and llama.cpp do)."""
    answer = Completion.model_validate(
        {
            "id": "x",
            "object": "text_completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "text": "hi", "finish_reason": "length", "logprobs": None}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
    )
    with pytest.raises(CharacterError, match=r"server at http://127\.0\.0\.1:\d+/v1 returned no log-prob.*vLLM"):
        engine._continuation_logprob("m", answer, 5, 2)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("model", " ", "model name"),
        ("base_url", "localhost:8000", "not an http"),
        ("timeout_s", 0, "positive"),
        ("concurrency", 0, "at least 1"),
        ("max_retries", -1, "0 or more"),
    ],
)
def test_options_are_checked_at_once(option: str, value: object, message: str) -> None:
    kw: dict[str, object] = {"model": "tiny", option: value}
    with pytest.raises(InvalidInput, match=rf"{option}: .*{message}"):
        OpenAIEngine(**kw)  # type: ignore[arg-type]
