"""The chat renderer on SmolLM2's own tokenizer (the tiny model's): its ChatML text survives a
round trip through tokens, the training template's mask covers exactly the assistant's tokens,
and generation stops at <|im_end|>, its EOS. (test_chat_template.py covers the rest on a
small in-memory tokenizer.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from character.models.chat_template import END_OF_TURN, render, stop_token_ids, with_training_template
from character.models.loading import load_tokenizer
from trl.chat_template_utils import is_chat_template_stop_token_trained

from tests.unit.models.test_chat_template import CONVERSATIONS, SMOLLM2_TEMPLATE


@pytest.fixture(scope="module")
def tok(tiny_model: Path) -> Any:
    """The tiny model's tokenizer with SmolLM2's original template made training-ready now, by
    this library's code: a prepared model cached before a template change cannot hide it."""
    native = load_tokenizer(tiny_model)
    native.chat_template = SMOLLM2_TEMPLATE
    return with_training_template(native)


def test_round_trip_through_tokens(tok: Any) -> None:
    text = render(tok, CONVERSATIONS[2], add_generation_prompt=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert ids.count(tok.convert_tokens_to_ids(END_OF_TURN)) == 5


def test_assistant_mask_covers_only_assistant_tokens(tok: Any) -> None:
    out = tok.apply_chat_template(
        CONVERSATIONS[2], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    masked = [t for t, m in zip(ids, mask, strict=True) if m]
    assert tok.decode(masked) == "b\n\nc <|im_end|>e<|im_end|>"
    assert is_chat_template_stop_token_trained(tok)


def test_stop_tokens(tok: Any) -> None:
    assert stop_token_ids(tok) == [tok.convert_tokens_to_ids(END_OF_TURN)]  # SmolLM2's EOS is <|im_end|>
