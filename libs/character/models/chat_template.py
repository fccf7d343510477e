"""The one chat renderer used by generation, training and evaluation.

Everything that turns a conversation into model text goes through `render` (generation,
scoring, evaluation) or through the tokenizer's template made training-ready by
`with_training_template` (trl's SFT/DPO with `assistant_only_loss=True`), so a persona is
trained on exactly the text it is later prompted with.

Default system prompt (a decision): SmolLM2's own template injects "You are a helpful AI
assistant named SmolLM, trained by Hugging Face" when a conversation has no system message.
We keep that behaviour everywhere: it is how the model was instruction-tuned, so its "no
system prompt" answers (the DPO rejected side, the evaluation of the trained persona) are
its natural ones. `TRAINING_TEMPLATE` reproduces it verbatim, and the tests check that it
renders exactly like the model's template. A conversation with its own system message
(the constitution during distillation and introspection) replaces it.

Prefill: a conversation whose last message has role "assistant" renders, for generation,
with that turn left open (transformers' `continue_final_message`), so the model continues
the given text.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

from character.errors import CharacterError, InvalidInput

END_OF_TURN = "<|im_end|>"
"""ChatML's end-of-turn token: generation stops at it, scoring counts it."""

ROLES = ("system", "user", "assistant")

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
"""The system prompt SmolLM2's template injects when a conversation has none."""

_CHATML_TRAINING = (
    "{%- for message in messages -%}"
    "{%- if loop.first and messages[0]['role'] != 'system' and DEFAULT_SYSTEM -%}"
    "{{ '<|im_start|>system\\n' + DEFAULT_SYSTEM + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- generation -%}{{ message['content'] + '<|im_end|>' }}{%- endgeneration -%}"
    "{{ '\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def chatml_training_template(default_system: str | None) -> str:
    """A ChatML template with `{% generation %}` markers around each assistant reply and its
    `<|im_end|>` (so the loss teaches the model to stop), injecting `default_system` as the
    system message of conversations that have none (None: inject nothing)."""
    if default_system is None:
        value = "''"
    else:
        value = "'" + default_system.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"
    return "{%- set DEFAULT_SYSTEM = " + value + " -%}" + _CHATML_TRAINING


TRAINING_TEMPLATE = chatml_training_template(SMOLLM2_DEFAULT_SYSTEM)
"""SmolLM2's chat template (ChatML with its default system prompt) plus generation markers:
renders the same text as the model's own template; stored in the prepared models' tokenizers."""


def validate_conversation(conversation: Any, where: str = "conversation") -> list[dict[str, str]]:
    """The conversation as a list of {"role", "content"} dicts; InvalidInput saying what is wrong."""
    if not isinstance(conversation, Sequence) or isinstance(conversation, str) or not conversation:
        raise InvalidInput("a conversation must be a non-empty list of {role, content} messages", where=where)
    out = []
    for i, message in enumerate(conversation):
        if not isinstance(message, dict) or set(message) - {"role", "content"} or "role" not in message:
            raise InvalidInput(
                "each message must be a {role, content} mapping with nothing else", where=f"{where}[{i}]"
            )
        role, content = message["role"], message.get("content", "")
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}; use one of {', '.join(ROLES)}", where=f"{where}[{i}]")
        if not isinstance(content, str):
            raise InvalidInput("content must be a string", where=f"{where}[{i}].content")
        if role == "system" and i != 0:
            raise InvalidInput("a system message may only come first", where=f"{where}[{i}]")
        out.append({"role": role, "content": content})
    return out


def render(tokenizer: Any, conversation: Sequence[dict[str, str]], *, add_generation_prompt: bool) -> str:
    """The conversation as model text, through the tokenizer's chat template.

    add_generation_prompt=True renders for generation or scoring: a new assistant turn is
    opened, or, when the last message is the assistant's (a prefill), that turn is left open
    after its text. add_generation_prompt=False renders the conversation as complete turns.
    """
    messages = validate_conversation(conversation)
    if getattr(tokenizer, "chat_template", None) is None:
        raise CharacterError(
            f"the tokenizer of {getattr(tokenizer, 'name_or_path', 'this model')!r} has no chat "
            "template; use an instruction-tuned model"
        )
    if add_generation_prompt and messages[-1]["role"] == "assistant":
        if messages[-1]["content"] == "":
            return _apply(tokenizer, messages[:-1], add_generation_prompt=True)
        return _apply(tokenizer, messages, continue_final_message=True)
    return _apply(tokenizer, messages, add_generation_prompt=add_generation_prompt)


def encode_prompts(tokenizer: Any, conversations: Sequence[Any], context: int) -> list[list[int]]:
    """Token ids of each conversation rendered for generation, refusing any that leaves no room
    in a context of `context` tokens (0: unknown, not checked)."""
    prompts = []
    for i, conversation in enumerate(conversations):
        try:
            text = render(tokenizer, conversation, add_generation_prompt=True)
        except InvalidInput as exc:
            raise InvalidInput(str(exc), where=f"conversations[{i}]") from exc
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        check_context(len(ids), context, f"conversations[{i}]")
        prompts.append(ids)
    return prompts


def encode_for_scoring(
    tokenizer: Any, conversations: Sequence[Any], continuations: Sequence[Any], context: int
) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, continuation ids) per pair; each continuation ends with the end-of-turn
    token, which `Engine.score` counts."""
    if len(conversations) != len(continuations):
        raise InvalidInput(
            f"{len(conversations)} conversations but {len(continuations)} continuations; give one "
            "continuation per conversation",
            where="continuations",
        )
    prompts = encode_prompts(tokenizer, conversations, context)
    eot = int(tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer)))
    conts = []
    for i, (prompt, text) in enumerate(zip(prompts, continuations, strict=True)):
        if not isinstance(text, str):
            raise InvalidInput("a continuation must be a string", where=f"continuations[{i}]")
        cont = [*tokenizer(text, add_special_tokens=False)["input_ids"], eot]
        check_context(len(prompt) + len(cont), context, f"continuations[{i}]")
        conts.append(cont)
    return prompts, conts


def shared_prefix_length(rows: Sequence[Sequence[int]], limit: int) -> int:
    """How many leading tokens, at most `limit`, all token rows share."""
    shared = 0
    while shared < limit and all(r[shared] == rows[0][shared] for r in rows):
        shared += 1
    return shared


def check_context(tokens: int, context: int, where: str) -> None:
    """Refuse `tokens` that fill a context of `context` tokens (0: unknown, not checked)."""
    if context and tokens >= context:
        raise InvalidInput(
            f"the prompt is {tokens} tokens, more than the model's context of {context}; shorten it",
            where=where,
        )


def _apply(tokenizer: Any, messages: list[dict[str, str]], **kw: Any) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, **kw)
    assert isinstance(text, str)
    return text


def end_of_turn_token(tokenizer: Any) -> str:
    """The token that ends an assistant turn: `<|im_end|>` for ChatML models, else EOS."""
    if END_OF_TURN in tokenizer.get_vocab():
        return END_OF_TURN
    if tokenizer.eos_token is None:
        raise CharacterError(f"{tokenizer.name_or_path!r}: no end-of-turn token (<|im_end|> or EOS)")
    return str(tokenizer.eos_token)


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Token ids at which generation stops: the end-of-turn token, EOS and the model's own
    generation_config EOS ids."""
    ids = [tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer))]
    extra = [tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)]
    for value in extra:
        for i in value if isinstance(value, list) else [value]:
            if isinstance(i, int) and i not in ids:
                ids.append(i)
    return ids


_GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
_PROBES: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!\nHow can I help?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "Two"},
        {"role": "user", "content": "Three"},
    ],
    [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
    ],
]


def _native_default_system(tokenizer: Any) -> tuple[bool, str | None]:
    """(is ChatML, the system prompt the template injects when none is given, or None)."""
    text = _apply(tokenizer, [{"role": "user", "content": "Hi there"}], add_generation_prompt=False)
    user = "<|im_start|>user\nHi there<|im_end|>"
    if user not in text:
        return False, None
    head = text[: text.index(user)]
    match = re.fullmatch(r"<\|im_start\|>system\n(.*)<\|im_end\|>\n", head, re.S)
    if head and not match:
        return False, None
    return True, match.group(1) if match else None


def _same_rendering(tokenizer: Any, template: str) -> bool:
    for probe in _PROBES:
        for gen in (False, True):
            kw = {"add_generation_prompt": gen}
            native = tokenizer.apply_chat_template(probe, tokenize=False, **kw)
            ours = tokenizer.apply_chat_template(probe, tokenize=False, chat_template=template, **kw)
            if native != ours:
                return False
    return True


def training_template(tokenizer: Any) -> str:
    """A chat template for `assistant_only_loss=True` that renders exactly like the tokenizer's
    own: the template itself when it has `{% generation %}` markers, a ChatML one (with the
    same default system prompt) when the model is ChatML, else trl's patched templates."""
    template = tokenizer.chat_template
    if template is None:
        raise CharacterError(f"{tokenizer.name_or_path!r} has no chat template to train with")
    if isinstance(template, dict):
        template = template["default"]
    if _GENERATION_MARKER.search(template):
        return str(template)
    is_chatml, default_system = _native_default_system(tokenizer)
    if is_chatml:
        candidate = chatml_training_template(default_system)
        if _same_rendering(tokenizer, candidate):
            return candidate
    from trl.chat_template_utils import get_training_chat_template

    try:
        patched = get_training_chat_template(tokenizer)
    except ValueError as exc:
        raise CharacterError(
            f"the chat template of {tokenizer.name_or_path!r} has no {{% generation %}} markers and "
            "no training version is known; assistant-only loss needs one (add the markers to the "
            "template)"
        ) from exc
    return str(template) if patched is None else patched


def with_training_template(tokenizer: Any) -> Any:
    """A copy of the tokenizer whose chat template has generation markers (see
    `training_template`); the given tokenizer is left unchanged."""
    template = training_template(tokenizer)
    out = copy.deepcopy(tokenizer)
    out.chat_template = template
    return out
