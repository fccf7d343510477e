"""The chat renderer: SmolLM2's template, prefill, and the training template's masks; which
training template other templates get (or why none); the token ids of prompts and scored
continuations, and the context check; stop tokens.

Rendering reads only a tokenizer's template, and masks and ids need only a tokenizer that
splits ChatML's special tokens: these tests use a small word-level tokenizer built in memory
in a blink (loading SmolLM2's takes a second or two, paid again by every mutant of a mutation
run). test_chat_template_smollm2.py checks SmolLM2's own tokenizer.

trl is imported at the top, not in a test: mutation runs fork each mutant's tests from a
process that has imported the test modules, and importing trl takes seconds."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from character.errors import CharacterError, InvalidInput
from character.models.chat_template import (
    END_OF_TURN,
    SMOLLM2_DEFAULT_SYSTEM,
    TRAINING_TEMPLATE,
    chatml_training_template,
    encode_for_scoring,
    encode_prompts,
    end_of_turn_token,
    render,
    shared_prefix_length,
    stop_token_ids,
    training_template,
    validate_conversation,
    with_training_template,
)
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
from transformers import GenerationConfig, PreTrainedTokenizerFast
from trl.chat_template_utils import (
    gemma_chat_template,
    gemma_training_chat_template,
    is_chat_template_stop_token_trained,
)

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

WORDS = ["[UNK]", "<s>", "</s>", "hello", "there", "system", "user", "assistant", "a", "b", "c", "d", "e"]
CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]


def word_tokenizer(
    template: str | dict[str, str] | None, *, eos: str | None = "</s>", bos: bool = False, chatml: bool = False
) -> Any:
    """A real (tokenizers-backed) word-level tokenizer built in memory, with the given chat
    template and EOS token; with `bos`, its encoder adds a BOS token to every text; with
    `chatml`, ChatML's <|im_start|> and <|im_end|> are special tokens of its vocabulary."""
    words = WORDS + (CHATML_TOKENS if chatml else [])
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    if chatml:
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in CHATML_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", bos_token="<s>", eos_token=eos, chat_template=template
    )


@pytest.fixture(scope="module")
def native() -> Any:
    """A ChatML tokenizer with SmolLM2's original template (no generation markers)."""
    return word_tokenizer(SMOLLM2_TEMPLATE, chatml=True)


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
    out = tok.apply_chat_template(
        CONVERSATIONS[2], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    masked = [t for t, m in zip(ids, mask, strict=True) if m]
    assert tok.convert_ids_to_tokens(masked) == ["b", "c", END_OF_TURN, "e", END_OF_TURN]
    assert is_chat_template_stop_token_trained(tok)


def test_shared_prefix_length() -> None:
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]], limit=9) == 2
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 4]], limit=3) == 3
    assert shared_prefix_length([[7], [8]], limit=0) == 0
    assert shared_prefix_length([[7, 8, 9]], limit=2) == 2  # one row shares all of itself


# ----------------------------------------------------------------------------- other templates
PLAIN_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML that injects no default system prompt (Qwen2.5-style without one)."""


def _variant(template: str, old: str, new: str) -> str:
    assert old in template
    return template.replace(old, new)


def test_chatml_default_system_is_escaped_into_the_template(native: Any) -> None:
    system = "It's in C:\\new\nand a second line"  # a quote, a backslash before an n, a newline
    text = native.apply_chat_template(
        [{"role": "user", "content": "q"}], tokenize=False, chat_template=chatml_training_template(system)
    )
    assert text == f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nq<|im_end|>\n"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (PLAIN_CHATML, chatml_training_template(None)),
        (  # a default system prompt over two lines is read back whole
            _variant(SMOLLM2_TEMPLATE, SMOLLM2_DEFAULT_SYSTEM, "You are Qwen.\nBe brief."),
            chatml_training_template("You are Qwen.\nBe brief."),
        ),
        ({"default": SMOLLM2_TEMPLATE, "rag": "{{ 'unused' }}"}, TRAINING_TEMPLATE),  # named variants
    ],
)
def test_chatml_templates_get_a_chatml_training_template_with_their_default_system(
    template: Any, expected: str
) -> None:
    tokenizer = word_tokenizer(template)
    assert training_template(tokenizer) == expected
    for conversation in CONVERSATIONS:
        for gen in (False, True):
            ours = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=gen,
                                                 chat_template=expected)
            assert ours == tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=gen)


def test_a_template_trl_knows_gets_trls_training_version() -> None:
    assert training_template(word_tokenizer(gemma_chat_template)) == gemma_training_chat_template


NO_TRAINING_VERSION = (
    "the chat template of '' has no {% generation %} markers and no training version is known; assistant-only "
    "loss needs one (add the markers to the template)"
)


@pytest.mark.parametrize(
    "template",
    [
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}",  # not ChatML
        "<s>" + PLAIN_CHATML,  # ChatML after something that is not a system message
        # ChatML but for the generation prompt: a ChatML training template would render differently
        _variant(PLAIN_CHATML, "'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>\n'"),
        # ChatML but for complete conversations, which end on an extra token
        PLAIN_CHATML + "{% if not add_generation_prompt %}{{ '<|endoftext|>' }}{% endif %}",
    ],
)
def test_templates_without_a_known_training_version_are_refused(template: str) -> None:
    with pytest.raises(CharacterError) as err:
        training_template(word_tokenizer(template))
    assert str(err.value) == NO_TRAINING_VERSION


def test_a_tokenizer_without_template_cannot_train_or_render() -> None:
    with pytest.raises(CharacterError) as err:
        training_template(word_tokenizer(None))
    assert str(err.value) == "'' has no chat template to train with"
    conversation = [{"role": "user", "content": "hello"}]
    with pytest.raises(CharacterError) as err:
        render(word_tokenizer(None), conversation, add_generation_prompt=True)
    assert str(err.value) == "the tokenizer of '' has no chat template; use an instruction-tuned model"
    with pytest.raises(CharacterError) as err:  # anything else, without a template or a name_or_path
        render(SimpleNamespace(), conversation, add_generation_prompt=True)
    assert str(err.value) == "the tokenizer of 'this model' has no chat template; use an instruction-tuned model"


def test_training_copy_leaves_the_tokenizer_unchanged(native: Any) -> None:
    patched = with_training_template(native)
    patched.add_tokens(["<only-in-the-copy>"])
    assert "<only-in-the-copy>" not in native.get_vocab()
    assert native.chat_template == SMOLLM2_TEMPLATE


# ----------------------------------------------------------------------------- prefill
def test_prefill_after_several_turns(tok: Any) -> None:
    conv = [*CONVERSATIONS[1], {"role": "assistant", "content": "I am"}]
    assert render(tok, conv, add_generation_prompt=True) == render(tok, conv, add_generation_prompt=False).removesuffix(
        "<|im_end|>\n"
    )
    # the last message decides, not the second
    asked = [CONVERSATIONS[2][0], CONVERSATIONS[2][1], {"role": "user", "content": "and?"}]
    assert render(tok, asked, add_generation_prompt=True).endswith("and?<|im_end|>\n<|im_start|>assistant\n")


def test_empty_prefill_opens_the_turn_even_where_the_template_trims_content() -> None:
    trimming = word_tokenizer(_variant(PLAIN_CHATML, "message['content']", "(message['content'] | trim)"))
    conversation = [*CONVERSATIONS[1], {"role": "assistant", "content": ""}]
    assert render(trimming, conversation, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are Ada.<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


# ----------------------------------------------------------------------------- conversations
NOT_A_LIST = "conversation: a conversation must be a non-empty list of {role, content} messages"
NOT_A_MESSAGE = "conversation[0]: each message must be a {role, content} mapping with nothing else"
UNKNOWN_ROLE = "conversation[0]: unknown role 'robot'; use one of system, user, assistant"


@pytest.mark.parametrize(
    ("conversation", "message"),
    [
        ([], NOT_A_LIST),
        ("Hi", NOT_A_LIST),
        ({"role": "user", "content": "Hi"}, NOT_A_LIST),
        ([None], NOT_A_MESSAGE),
        ([{"content": "x"}], NOT_A_MESSAGE),
        ([{"role": "user", "content": "x", "name": "y"}], NOT_A_MESSAGE),
        ([{"role": "robot", "content": "x"}], UNKNOWN_ROLE),
        ([{"role": "user", "content": 3}], "conversation[0].content: content must be a string"),
        ([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}],
         "conversation[1]: a system message may only come first"),
    ],
)
def test_bad_conversations_are_refused_saying_where(conversation: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_conversation(conversation)
    assert str(err.value) == message


def test_a_message_without_content_is_empty() -> None:
    assert validate_conversation([{"role": "user"}], where="messages") == [{"role": "user", "content": ""}]
    with pytest.raises(InvalidInput, match=r"^messages\[0\]: unknown role"):
        validate_conversation([{"role": "bot"}], where="messages")


# ----------------------------------------------------------------------------- token ids


def test_prompts_are_the_rendered_text_without_added_special_tokens() -> None:
    tokenizer = word_tokenizer(PLAIN_CHATML, bos=True)
    conversations = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "hello there"}]]
    expected = [
        tokenizer(render(tokenizer, c, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
        for c in conversations
    ]
    assert encode_prompts(tokenizer, conversations, context=0) == expected
    assert expected[0][0] != tokenizer.bos_token_id
    prompts, continuations = encode_for_scoring(tokenizer, conversations, ["hello there", "there"], context=0)
    assert prompts == expected
    assert continuations == [[3, 4, 2], [4, 2]]  # the words, then EOS (this tokenizer's end of turn)


def test_prompt_context_is_checked_at_its_boundary(tok: Any) -> None:
    conversations = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Hi there"}]]
    (_, ids) = encode_prompts(tok, conversations, context=0)
    encode_prompts(tok, conversations, context=len(ids) + 1)
    with pytest.raises(InvalidInput) as err:
        encode_prompts(tok, conversations, context=len(ids))
    assert str(err.value) == (
        f"conversations[1]: the prompt is {len(ids)} tokens, more than the model's context of {len(ids)}; shorten it"
    )
    with pytest.raises(InvalidInput) as err:
        encode_prompts(tok, [conversations[0], [{"role": "robot", "content": "x"}]], context=0)
    assert str(err.value) == f"conversations[1]: {UNKNOWN_ROLE}"


def test_scoring_context_counts_prompt_and_continuation(tok: Any) -> None:
    conversations = [[{"role": "user", "content": "Hi"}]]
    (prompt,), (continuation,) = encode_for_scoring(tok, conversations, ["Hello there"], context=0)
    eot = tok.convert_tokens_to_ids(END_OF_TURN)
    assert continuation == [*tok("Hello there", add_special_tokens=False)["input_ids"], eot]
    total = len(prompt) + len(continuation)
    encode_for_scoring(tok, conversations, ["Hello there"], context=total + 1)
    with pytest.raises(InvalidInput) as err:
        encode_for_scoring(tok, conversations, ["Hello there"], context=total)
    assert str(err.value) == (
        f"continuations[0]: the prompt is {total} tokens, more than the model's context of {total}; shorten it"
    )


def test_scoring_checks_the_prompt_alone_first(tok: Any) -> None:
    conversations = [[{"role": "user", "content": "Hi"}]]
    (prompt,) = encode_prompts(tok, conversations, context=0)
    with pytest.raises(InvalidInput, match=r"^conversations\[0\]: the prompt is"):
        encode_for_scoring(tok, conversations, ["Hello there"], context=len(prompt))


def test_scoring_inputs_are_checked() -> None:
    tokenizer = word_tokenizer(PLAIN_CHATML)
    conversations = [[{"role": "user", "content": "hello"}]] * 2
    with pytest.raises(InvalidInput) as err:
        encode_for_scoring(tokenizer, conversations, ["there"], context=0)
    assert str(err.value) == (
        "continuations: 2 conversations but 1 continuations; give one continuation per conversation"
    )
    with pytest.raises(InvalidInput) as err:
        encode_for_scoring(tokenizer, conversations, ["there", 7], context=0)
    assert str(err.value) == "continuations[1]: a continuation must be a string"


# ----------------------------------------------------------------------------- stop tokens
def test_end_of_turn_is_im_end_else_eos() -> None:
    assert end_of_turn_token(word_tokenizer(PLAIN_CHATML)) == "</s>"
    with pytest.raises(CharacterError) as err:
        end_of_turn_token(word_tokenizer(PLAIN_CHATML, eos=None))
    assert str(err.value) == "'': no end-of-turn token (<|im_end|> or EOS)"


def test_stop_tokens_add_eos_and_the_generation_config_once_each(tok: Any) -> None:
    im_end, eos = tok.convert_tokens_to_ids(END_OF_TURN), tok.eos_token_id
    assert stop_token_ids(tok) == [im_end, eos]
    assert stop_token_ids(tok, GenerationConfig(eos_token_id=[im_end, 0, eos, 7])) == [im_end, eos, 0, 7]
    assert stop_token_ids(tok, GenerationConfig(eos_token_id=9)) == [im_end, eos, 9]
    assert stop_token_ids(word_tokenizer(PLAIN_CHATML), None) == [2]
