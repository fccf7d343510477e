"""The persona server's request model and bounds (serving/api.py), without a server: every
field refused at its boundary names itself, every platform limit holds exactly at its value
and refuses one past it, naming the limit, and errors have OpenAI's shape."""

from __future__ import annotations

from typing import Any

import pytest
from character.platform import Limits
from character.serving.api import ApiError, ChatRequest, CompletionRequest, check_bounds, parse

HELLO = [{"role": "user", "content": "hello"}]


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": HELLO, **fields}


def _refusal(kind: Any, body: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(kind, body)
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(("fields", "param"), [
    ({"max_tokens": 0}, "max_tokens"),
    ({"temperature": -0.01}, "temperature"),
    ({"temperature": 2.01}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.01}, "top_p"),
    ({"seed": -1}, "seed"),
    ({"n": 2}, "n"),
    ({"n": 0}, "n"),
    ({"user": "u" * 257}, "user"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": "x", "name": "n" * 65}]}, "messages.0.name"),
    ({"messages": [{"role": "user", "content": ["image"]}]}, "messages.0.content"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"stream_options": {"include_usage": True, "more": 1}}, "stream_options.more"),
    ({"logit_bias": {}}, "logit_bias"),
])
def test_a_chat_field_out_of_range_is_refused_naming_it(fields: dict[str, Any], param: str) -> None:
    refused = _refusal(ChatRequest, _chat(**fields))
    assert refused.param == param
    assert refused.message.startswith(f"{param}: ")


@pytest.mark.parametrize("fields", [
    {"max_tokens": 1}, {"temperature": 0.0}, {"temperature": 2.0}, {"top_p": 1.0}, {"top_p": 1e-6},
    {"seed": 0}, {"n": 1}, {"user": "u" * 256},
    {"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a", "name": "n" * 64}]},
])
def test_a_chat_field_at_its_boundary_is_accepted(fields: dict[str, Any]) -> None:
    request = parse(ChatRequest, _chat(**fields))
    for name, value in fields.items():
        if name != "messages":
            assert getattr(request, name) == value


def test_a_completion_needs_a_prompt_and_takes_no_messages() -> None:
    assert _refusal(CompletionRequest, {"model": "tiny", "prompt": ""}).param == "prompt"
    assert _refusal(CompletionRequest, {"model": "tiny"}).param == "prompt"
    assert _refusal(CompletionRequest, {"model": "tiny", "prompt": "x", "messages": HELLO}).param == "messages"
    assert parse(CompletionRequest, {"model": "tiny", "prompt": "x"}).prompt_chars() == 1


@pytest.mark.parametrize("body", [[], "text", None, 3])
def test_a_body_that_is_not_an_object_is_refused_without_a_field(body: Any) -> None:
    refused = _refusal(ChatRequest, body)
    assert refused.param is None and refused.message == "the request body must be a JSON object"


def test_a_missing_model_is_named() -> None:
    refused = _refusal(ChatRequest, {"messages": HELLO})
    assert refused.param == "model" and refused.message == "model: Field required"


def test_max_completion_tokens_stands_for_max_tokens_and_must_agree_with_it() -> None:
    assert parse(ChatRequest, _chat(max_completion_tokens=7)).max_tokens == 7
    assert parse(ChatRequest, _chat(max_completion_tokens=7, max_tokens=7)).max_tokens == 7
    assert parse(ChatRequest, _chat(max_tokens=5)).max_tokens == 5
    refused = _refusal(ChatRequest, _chat(max_completion_tokens=7, max_tokens=8))
    assert refused.param == "max_completion_tokens"
    assert refused.message == "max_tokens and max_completion_tokens disagree; give one"


def test_sampling_carries_the_request_and_the_default_length() -> None:
    given = parse(ChatRequest, _chat(max_tokens=9, temperature=0.5, top_p=0.9, seed=3)).sampling(256)
    assert (given.max_new_tokens, given.temperature, given.top_p, given.seed, given.repetition_penalty) == (
        9, 0.5, 0.9, 3, 1.0)
    default = parse(ChatRequest, _chat()).sampling(256)
    assert (default.max_new_tokens, default.temperature, default.top_p, default.seed) == (256, 1.0, 1.0, None)


def test_the_prompt_length_counts_every_message() -> None:
    request = parse(ChatRequest, _chat(messages=[{"role": "system", "content": "abc"},
                                                 {"role": "user", "content": "de"}]))
    assert request.prompt_chars() == 5


LIMITS = Limits(max_messages=3, max_prompt_chars=10, max_new_tokens=20, max_seed=100)


def _bounded(kind: Any, body: dict[str, Any]) -> ApiError | None:
    try:
        check_bounds(parse(kind, body), LIMITS)
    except ApiError as err:
        assert err.status == 400
        return err
    return None


def _messages(count: int, chars: int = 1) -> list[dict[str, str]]:
    return [{"role": "user", "content": "x" * chars} for _ in range(count)]


@pytest.mark.parametrize(("inside", "outside", "param", "message"), [
    (_chat(messages=_messages(3)), _chat(messages=_messages(4)), "messages",
     "4 messages, more than 3 (limits.max_messages)"),
    (_chat(messages=_messages(2, 5)), _chat(messages=_messages(1, 11)), "messages",
     "the prompt is 11 characters, more than 10 (limits.max_prompt_chars)"),
    (_chat(max_tokens=20), _chat(max_tokens=21), "max_tokens", "max_tokens 21 is more than 20 (limits.max_new_tokens)"),
    (_chat(seed=100), _chat(seed=101), "seed", "seed 101 is more than 100 (limits.max_seed)"),
])
def test_every_limit_holds_at_its_value_and_refuses_one_past_it(inside: dict[str, Any], outside: dict[str, Any],
                                                                 param: str, message: str) -> None:
    assert _bounded(ChatRequest, inside) is None
    refused = _bounded(ChatRequest, outside)
    assert refused is not None and (refused.param, refused.message) == (param, message)


def test_a_completion_prompt_over_the_limit_names_the_prompt() -> None:
    assert _bounded(CompletionRequest, {"model": "tiny", "prompt": "x" * 10}) is None
    refused = _bounded(CompletionRequest, {"model": "tiny", "prompt": "x" * 11})
    assert refused is not None and refused.param == "prompt"
    assert refused.message == "the prompt is 11 characters, more than 10 (limits.max_prompt_chars)"


def test_a_completion_has_no_message_limit() -> None:
    assert _bounded(CompletionRequest, {"model": "tiny", "prompt": "x", "max_tokens": 20, "seed": 100}) is None


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (405, "invalid_request_error"), (429, "rate_limit_error"), (500, "server_error"),
    (418, "invalid_request_error"),
])
def test_errors_have_openais_shape(status: int, kind: str) -> None:
    error = ApiError(status, "what went wrong", "field")
    assert str(error) == "what went wrong"
    assert error.body() == {"error": {"message": "what went wrong", "type": kind, "param": "field", "code": status}}
