"""The transformers engine on the tiny random model: batching, seeds, limits, adapters,
steering, scoring and shared-prefix prefill."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from character.errors import InvalidInput, NotFound
from character.models import get_engine
from character.models.engine import SamplingParams, Steering
from character.models.transformers_engine import TransformersEngine
from character.progress import ProgressEvent

pytestmark = pytest.mark.usefixtures("torch_one_thread")

GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0)
SAMPLED = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.95, seed=7)

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "Tell me about the sea."},
    ],
    [{"role": "user", "content": "Name three colours, please, with a long explanation of each one."}],
    [{"role": "user", "content": "Count."}, {"role": "assistant", "content": "One, two, the"}],
    [{"role": "user", "content": "What is the capital of France?"}],
]


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> TransformersEngine:
    # float32 whatever the default: the equalities below (a batch scores what one prompt alone
    # does) are exact there; in bf16 (`--dtype bfloat16`) another batch shape rounds otherwise
    return TransformersEngine(str(tiny_model), device="cpu", dtype="float32", batch_size=2)


def test_factory(tiny_model: Path) -> None:
    engine = get_engine("transformers", str(tiny_model), batch_size=4)
    assert isinstance(engine, TransformersEngine) and engine.batch_size == 4
    assert engine.name == str(tiny_model)
    with pytest.raises(InvalidInput, match="transformers"):
        get_engine("nope", str(tiny_model))


def test_batch_equals_one_by_one(engine: TransformersEngine) -> None:
    events: list[ProgressEvent] = []
    batched = engine.generate(CONVERSATIONS, GREEDY, progress=events.append)
    single = [engine.generate([c], GREEDY)[0] for c in CONVERSATIONS]
    assert batched == single
    assert len(batched) == len(CONVERSATIONS)
    assert events[-1].done == events[-1].total == len(CONVERSATIONS)
    assert len(events) == 1 + 3  # start + one per batch of 2


def test_max_new_tokens_gives_length(engine: TransformersEngine) -> None:
    out = engine.generate(CONVERSATIONS[:2], SamplingParams(max_new_tokens=3, temperature=0.0))
    for g in out:
        assert g.finish_reason == "length" and g.num_tokens == 3
        assert "<|im_end|>" not in g.text


def test_same_seed_same_outputs_and_seeds_differ(engine: TransformersEngine) -> None:
    state = torch.random.get_rng_state()
    first = engine.generate(CONVERSATIONS, SAMPLED)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert engine.generate(CONVERSATIONS, SAMPLED) == first
    other = engine.generate(CONVERSATIONS, SAMPLED.model_copy(update={"seed": 8}))
    assert [g.text for g in other] != [g.text for g in first]
    assert [g.text for g in first] != [g.text for g in engine.generate(CONVERSATIONS, GREEDY)]


def test_empty_input(engine: TransformersEngine) -> None:
    assert engine.generate([], GREEDY) == []
    assert engine.score([], []) == []


def test_bad_conversation_is_located(engine: TransformersEngine) -> None:
    with pytest.raises(InvalidInput, match=r"conversations\[1\]"):
        engine.generate([CONVERSATIONS[0], [{"role": "bot", "content": "x"}]], GREEDY)


def test_adapter_changes_outputs_and_none_restores_base(engine: TransformersEngine, random_adapter: Path) -> None:
    base = engine.generate(CONVERSATIONS, GREEDY)
    base_logits = _last_logits(engine, None)
    base_scores = engine.score(CONVERSATIONS[:2], ["Ahoy", "The sea"])
    tuned = engine.generate(CONVERSATIONS, GREEDY, adapter=random_adapter)
    assert [g.text for g in tuned] != [g.text for g in base]
    assert engine.generate(CONVERSATIONS, GREEDY) == base
    assert engine.score(CONVERSATIONS[:2], ["Ahoy", "The sea"]) == base_scores
    assert engine.score(CONVERSATIONS[:2], ["Ahoy", "The sea"], adapter=random_adapter) != base_scores
    assert torch.equal(_last_logits(engine, None), base_logits)  # engine.model acts as the base
    # loaded once, reused
    assert engine.generate(CONVERSATIONS, GREEDY, adapter=str(random_adapter)) == tuned
    assert len(engine._adapters) == 1


def test_missing_adapter(engine: TransformersEngine, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"adapter_config\.json"):
        engine.generate(CONVERSATIONS[:1], GREEDY, adapter=tmp_path)


def _last_logits(engine: TransformersEngine, steering: Steering | None) -> Any:
    """Next-token logits after the first conversation's prompt, under `steering`."""
    from character.models.chat_template import render

    text = render(engine.tokenizer, CONVERSATIONS[0], add_generation_prompt=True)
    ids = engine.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with engine._steering(steering), torch.no_grad():
        return engine.model(input_ids=ids).logits[0, -1]


def test_steering(engine: TransformersEngine) -> None:
    hidden = engine.model.config.hidden_size
    gen = torch.Generator().manual_seed(0)
    vector = torch.randn(hidden, generator=gen).tolist()
    base = _last_logits(engine, None)
    assert torch.equal(_last_logits(engine, Steering({0: vector}, coefficient=0.0)), base)
    assert not torch.allclose(_last_logits(engine, Steering({0: vector}, coefficient=4.0)), base)
    assert torch.equal(_last_logits(engine, None), base)  # hooks removed

    zero = engine.generate(CONVERSATIONS, GREEDY, steering=Steering({1: vector}, coefficient=0.0))
    assert zero == engine.generate(CONVERSATIONS, GREEDY)


def test_steering_towards_end_of_turn_stops(engine: TransformersEngine) -> None:
    """A huge push along <|im_end|>'s (tied) embedding at the last layer makes the model end its
    turn at once: a "stop" with an empty text."""
    eot = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    direction = engine.model.get_input_embeddings().weight[eot].detach().tolist()
    last = engine.model.config.num_hidden_layers - 1
    out = engine.generate(CONVERSATIONS, GREEDY, steering=Steering({last: direction}, coefficient=1000.0))
    for g in out:
        assert (g.text, g.finish_reason, g.num_tokens) == ("", "stop", 1)


def test_steering_is_removed_after_errors(engine: TransformersEngine) -> None:
    vector = [1.0] * engine.model.config.hidden_size
    with pytest.raises(InvalidInput, match="layer 99"):
        engine.generate(CONVERSATIONS[:1], GREEDY, steering=Steering({0: vector, 99: vector}))
    with pytest.raises(InvalidInput, match="hidden size"):
        engine.generate(CONVERSATIONS[:1], GREEDY, steering=Steering({0: [1.0, 2.0]}))
    with pytest.raises(RuntimeError, match="boom"), engine._steering(Steering({0: vector})):
        raise RuntimeError("boom")
    assert all(not layer._forward_hooks for layer in engine.decoder_layers())


def _manual_score(engine: TransformersEngine, conversation: Any, continuation: str) -> float:
    from character.models.chat_template import render

    tok = engine.tokenizer
    prompt = tok(render(tok, conversation, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    cont = [
        *tok(continuation, add_special_tokens=False)["input_ids"],
        tok.convert_tokens_to_ids("<|im_end|>"),
    ]
    ids = torch.tensor([prompt + cont])
    with torch.no_grad():
        logprobs = torch.log_softmax(engine.model(input_ids=ids).logits[0].float(), dim=-1)
    return sum(float(logprobs[len(prompt) - 1 + k, t]) for k, t in enumerate(cont))


def test_score_equals_manual_log_probs(engine: TransformersEngine) -> None:
    continuations = ["Hello there!", "Arr, the sea is wide.", "Red, green, blue.", " three, four", "Paris"]
    events: list[ProgressEvent] = []
    scores = engine.score(CONVERSATIONS, continuations, progress=events.append)
    # a long judge call shows its progress batch by batch (2 per batch here), not only at the end
    assert [(e.task, e.done, e.total) for e in events] == [("score", d, 5) for d in (0, 2, 4, 5)]
    for conversation, continuation, score in zip(CONVERSATIONS, continuations, scores, strict=True):
        assert score == pytest.approx(_manual_score(engine, conversation, continuation), abs=1e-3)
    assert all(s < 0 for s in scores)
    with pytest.raises(InvalidInput, match="one continuation per conversation"):
        engine.score(CONVERSATIONS, continuations[:2])


def test_greedy_continuation_scores_higher_than_random_text(engine: TransformersEngine) -> None:
    prefill = [{"role": "user", "content": "Go on."}, {"role": "assistant", "content": "and the"}]
    greedy = engine.generate([prefill], GREEDY)[0].text
    n = len(engine.tokenizer(greedy, add_special_tokens=False)["input_ids"])
    words = [" cat", " blue", " river", " seven", " table", " happy", " green", " stone", " lamp", " fish"]
    random_text = "".join(words[:n])  # as many tokens as the greedy text: sums are comparable
    assert len(engine.tokenizer(random_text, add_special_tokens=False)["input_ids"]) == n
    good, bad = engine.score([prefill, prefill], [greedy, random_text])
    assert good > bad


def test_score_runs_each_distinct_prompt_once(tiny_model: Path) -> None:
    """Options scored after the same prompt (a judge's, a multiple-choice question's): the
    prompt goes through the model once per batch, and every score is still the plain forward
    pass's."""
    engine = TransformersEngine(str(tiny_model), device="cpu", dtype="float32", batch_size=4, shared_prefix_min=None)
    question = CONVERSATIONS[2]
    conversations = [question, CONVERSATIONS[0], question, question]
    options = ["Red.", "Hello!", "Green, and a long reason why green is the best colour.", "Blue"]
    rows: list[int] = []
    hook = engine.model.register_forward_pre_hook(
        lambda _m, _a, kwargs: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        scores = engine.score(conversations, options)
    finally:
        hook.remove()
    assert sum(rows[:-1]) == 2  # prefill: the two distinct prompts
    assert rows[-1] == 4  # then every option on top of its prompt's cache
    for conversation, option, score in zip(conversations, options, scores, strict=True):
        assert score == pytest.approx(_manual_score(engine, conversation, option), abs=1e-3)


# --- a shared prefix (a long system prompt) prefilled once per batch ------------------------
LONG_SYSTEM = "You are a terse lighthouse keeper who answers in riddles. " * 12
SHARED = [
    [{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": question}]
    for question in ("Hi", "What is the capital of France, and why is it not Lyon?", "Count.", "Why?")
]


@pytest.fixture
def sharing(engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The shared prefix length of every batch the engine runs."""
    lengths: list[int] = []
    shared_length = engine._shared_length

    def spy(*args: Any) -> int:
        out = shared_length(*args)
        lengths.append(out)
        return out

    monkeypatch.setattr(engine, "_shared_length", spy)
    return lengths


@pytest.fixture(scope="module")
def unshared(tiny_model: Path) -> TransformersEngine:
    return TransformersEngine(str(tiny_model), device="cpu", dtype="float32", batch_size=2, shared_prefix_min=None)


def test_bad_shared_prefix_min(tiny_model: Path) -> None:
    with pytest.raises(InvalidInput, match="shared_prefix_min"):
        TransformersEngine(str(tiny_model), shared_prefix_min=0)


def test_shared_prefix_generates_what_full_prompts_do(
    engine: TransformersEngine, unshared: TransformersEngine, sharing: list[int], random_adapter: Path
) -> None:
    vector = torch.randn(engine.model.config.hidden_size, generator=torch.Generator().manual_seed(1)).tolist()
    calls = [
        {"sampling": SAMPLED},
        {"sampling": GREEDY},
        {"sampling": SAMPLED, "adapter": random_adapter},
        {"sampling": SAMPLED, "steering": Steering({1: vector}, coefficient=2.0)},
    ]
    shared = [engine.generate(SHARED, **call) for call in calls]
    assert sharing and min(sharing) >= engine.shared_prefix_min  # every batch shared
    assert [unshared.generate(SHARED, **call) for call in calls] == shared
    assert len({g.text for g in shared[0]}) > 1  # the rows did not collapse into one answer


def test_shared_prefix_scores_what_full_prompts_do(
    engine: TransformersEngine, unshared: TransformersEngine, sharing: list[int], random_adapter: Path
) -> None:
    # the same prompt twice: the prefix must stop before its last token, which scores the answer
    conversations = [*SHARED[:3], SHARED[0]]
    answers = ["Who asks?", "Paris. Lyon is not the capital.", "One, two.", "Waves."]
    shared = [engine.score(conversations, answers, adapter=a) for a in (None, random_adapter)]
    # the batch of two distinct prompts shared their prefix; the one holding SHARED[0] twice
    # ran that prompt once, whole
    assert max(sharing) >= engine.shared_prefix_min
    full = [unshared.score(conversations, answers, adapter=a) for a in (None, random_adapter)]
    for got, want in zip(shared, full, strict=True):
        assert got == pytest.approx(want, abs=1e-4)


# --- the decode loop gives what model.generate gives ------------------------------------------
def _generate_alone(engine: TransformersEngine, conversation: Any, sampling: SamplingParams) -> list[int]:
    """transformers' own `generate` on one prompt (no padding, no shared prefix, no batch)."""
    from character.models.chat_template import encode_prompts

    ids = torch.tensor(encode_prompts(engine.tokenizer, [conversation], 0))
    with torch.no_grad():
        out = engine.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=sampling.max_new_tokens,
            do_sample=False, repetition_penalty=sampling.repetition_penalty, eos_token_id=engine._stop_ids,
            pad_token_id=engine.tokenizer.pad_token_id,
        )
    return list(out[0, ids.shape[1] :].tolist())


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_is_model_generate_on_each_prompt_alone(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, penalty: float
) -> None:
    """Batches mixing lengths (prefilled in length groups), a shared prefix, and rows that stop
    at different steps (dropped from the batch): every answer is, token for token, what
    `model.generate` makes of its prompt alone."""
    engine = TransformersEngine(str(tiny_model), device="cpu", batch_size=4, shared_prefix_min=16)
    sampling = SamplingParams(max_new_tokens=12, temperature=0.0, repetition_penalty=penalty)
    conversations = CONVERSATIONS + SHARED
    # a stop token that some answers reach early and others never: rows leave the batch mid-way
    first = [_generate_alone(engine, c, sampling) for c in conversations]
    stop = first[0][2]
    monkeypatch.setattr(engine, "_stop_ids", [*engine._stop_ids, stop])
    alone = [_generate_alone(engine, c, sampling) for c in conversations]
    stopped = [len(row) < sampling.max_new_tokens for row in alone]
    assert any(stopped) and not all(stopped)
    sharing: list[int] = []
    shared_length = engine._shared_length
    monkeypatch.setattr(engine, "_shared_length", lambda *a: sharing.append(shared_length(*a)) or sharing[-1])
    batched = engine.generate(conversations, sampling)
    assert max(sharing) >= 16  # the batch of long system prompts shared its prefix
    assert batched == [engine._finish(row) for row in alone]
