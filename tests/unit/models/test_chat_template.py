"""The chat renderer: SmolLM2's template, prefill, and the training template's masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from character.errors import InvalidInput
from character.models.chat_template import (
    END_OF_TURN,
    SMOLLM2_DEFAULT_SYSTEM,
    TRAINING_TEMPLATE,
    chatml_training_template,
    render,
    shared_prefix_length,
    stop_token_ids,
    training_template,
    with_training_template,
)
from character.models.loading import load_tokenizer

# SmolLM2-135M-Instruct's own chat template, as shipped in its GGUF.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You are Ada."}, {"role": "user", "content": "Who are you?"}],
    [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b\n\nc "},
        {"role": "user", "content": 'd\'s "quoted" {{ not jinja }}'},
        {"role": "assistant", "content": "e"},
    ],
]


@pytest.fixture(scope="module")
def native(tiny_model: Path) -> Any:
    """The tiny model's tokenizer (SmolLM2's) with SmolLM2's original template (no generation
    markers), whatever template the cached prepared model happens to carry."""
    t = load_tokenizer(tiny_model)
    t.chat_template = SMOLLM2_TEMPLATE
    return t


@pytest.fixture(scope="module")
def tok(native: Any) -> Any:
    """The training template built now, by this library's code, from the original one: a
    prepared model cached before a template change cannot hide the change from these tests."""
    return with_training_template(native)


def test_render_generation_prompt(tok: Any) -> None:
    text = render(tok, [{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert text == (
        f"<|im_start|>system\n{SMOLLM2_DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_own_system_prompt_replaces_the_default(tok: Any) -> None:
    text = render(tok, CONVERSATIONS[1], add_generation_prompt=False)
    assert SMOLLM2_DEFAULT_SYSTEM not in text
    assert text.startswith("<|im_start|>system\nYou are Ada.<|im_end|>\n")


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("gen", [False, True])
def test_training_template_renders_like_smollm2(native: Any, tok: Any, conversation: Any, gen: bool) -> None:
    expected = native.apply_chat_template(conversation, tokenize=False, add_generation_prompt=gen)
    assert tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=gen) == expected
    if not (gen and conversation[-1]["role"] == "assistant"):  # that is a prefill for render()
        assert render(tok, conversation, add_generation_prompt=gen) == expected
        assert render(native, conversation, add_generation_prompt=gen) == expected


def test_round_trip_through_tokens(tok: Any) -> None:
    text = render(tok, CONVERSATIONS[2], add_generation_prompt=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert ids.count(tok.convert_tokens_to_ids(END_OF_TURN)) == 5


def test_prefill_is_left_open(tok: Any) -> None:
    conv = [{"role": "user", "content": "List three."}, {"role": "assistant", "content": "1. Apples\n2."}]
    text = render(tok, conv, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n1. Apples\n2.")
    # complete rendering closes the turn
    assert render(tok, conv, add_generation_prompt=False).endswith("1. Apples\n2.<|im_end|>\n")
    # an empty prefill is just an open assistant turn
    empty = render(tok, [*conv[:1], {"role": "assistant", "content": ""}], add_generation_prompt=True)
    assert empty == render(tok, conv[:1], add_generation_prompt=True)


def test_prefill_keeps_trailing_whitespace(tok: Any) -> None:
    conv = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "Sure, \n "}]
    assert render(tok, conv, add_generation_prompt=True).endswith("assistant\nSure, \n ")


@pytest.mark.parametrize(
    ("conversation", "match"),
    [
        ([], "non-empty"),
        ([{"role": "robot", "content": "x"}], "unknown role"),
        ([{"role": "user", "content": 3}], "string"),
        ([{"role": "user", "content": "x", "name": "y"}], "nothing else"),
        ([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}], "only come first"),
    ],
)
def test_bad_conversations(tok: Any, conversation: Any, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        render(tok, conversation, add_generation_prompt=True)


def test_stop_tokens(tok: Any) -> None:
    assert stop_token_ids(tok)[0] == tok.convert_tokens_to_ids(END_OF_TURN)


def test_training_template_has_generation_markers(native: Any, tok: Any) -> None:
    assert "{%- generation -%}" in TRAINING_TEMPLATE and "{%- endgeneration -%}" in TRAINING_TEMPLATE
    # a tokenizer that already has markers keeps its template; SmolLM2's gets ours
    assert training_template(tok) == TRAINING_TEMPLATE
    assert training_template(native) == TRAINING_TEMPLATE
    patched = with_training_template(native)
    assert patched.chat_template == TRAINING_TEMPLATE and native.chat_template == SMOLLM2_TEMPLATE


def test_chatml_without_default_system(native: Any) -> None:
    template = chatml_training_template(None)
    text = native.apply_chat_template(
        [{"role": "user", "content": "q"}], tokenize=False, chat_template=template
    )
    assert text == "<|im_start|>user\nq<|im_end|>\n"


def test_assistant_mask_covers_only_assistant_tokens(tok: Any) -> None:
    from trl.chat_template_utils import is_chat_template_stop_token_trained

    out = tok.apply_chat_template(
        CONVERSATIONS[2], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    masked = [t for t, m in zip(ids, mask, strict=True) if m]
    assert tok.decode(masked) == "b\n\nc <|im_end|>e<|im_end|>"
    assert is_chat_template_stop_token_trained(tok)


def test_shared_prefix_length() -> None:
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]], limit=9) == 2
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 4]], limit=3) == 3
    assert shared_prefix_length([[7], [8]], limit=0) == 0
