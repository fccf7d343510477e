"""`oct chat`: the session shows the model the system prompt, the turns so far and the new
message, forgets the turns on reset, and puts the same conversation to the base model without
recording it; the command, a real process reading the user's lines from stdin on the
embedded store (no servers), prints the session's answers in order, and with `/compare base`
both answers side by side; `oct chat NAME` talks to a published persona, and a session opened
by name after its tag moved talks to the run the tag names now.

(The tiny random model's greedy answers hardly depend on the conversation, so what the model
sees is checked on the session's conversations, and the command against the session.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from character.controller.runs import RunRecord
from character.models.engine import SamplingParams
from character.serving.chat import ChatSession
from character.serving.pool import PersonaPool
from character.serving.registry import publish
from character.serving.resolve import base_model, resolve
from character.store import LocalStore

SAMPLING = SamplingParams(max_new_tokens=8, temperature=0.0, top_p=1.0, repetition_penalty=1.0)


@pytest.fixture()
def session(store: LocalStore, personas: tuple[RunRecord, RunRecord], tmp_path: Path) -> ChatSession:
    pool = PersonaPool(store, 2, device="cpu", cache_dir=tmp_path)
    return ChatSession(pool, resolve(store, personas[0].run_id), resolve(store, "tiny"), SAMPLING)


def test_the_session_keeps_the_turns_and_the_system_prompt(session: ChatSession) -> None:
    first = session.ask("Hello there")
    assert session.conversation("Next") == [{"role": "user", "content": "Hello there"},
                                            {"role": "assistant", "content": first},
                                            {"role": "user", "content": "Next"}]
    session.system = "You are a pirate."
    assert session.conversation("Next")[0] == {"role": "system", "content": "You are a pirate."}
    session.reset()
    assert session.conversation("Next") == [{"role": "system", "content": "You are a pirate."},
                                            {"role": "user", "content": "Next"}]


def test_the_base_answers_the_same_conversation_and_is_not_recorded(session: ChatSession) -> None:
    pool = session.pool
    base_answer = session.ask_base("Who are you?")
    conversation = [{"role": "user", "content": "Who are you?"}]
    assert base_answer == pool.generate(session.base, pool.encode_chat(session.base, conversation), SAMPLING).text
    assert session.turns == []
    assert session.ask("Who are you?") != base_answer  # the persona's own answer differs


def test_the_command_prints_the_sessions_answers(session: ChatSession, store: LocalStore) -> None:
    run = session.persona.name
    first = session.ask("Hello there")
    second = session.ask("Tell me more")
    session.reset()
    session.system = "You are a pirate."
    third = session.ask("Hello there")
    fourth = session.ask("Who are you?")

    out = subprocess.run(
        [sys.executable, "-m", "character.cli", "chat", run, "--store", store.uri, "--temperature", "0",
         "--max-tokens", str(SAMPLING.max_new_tokens)],
        input="".join(f"{line}\n" for line in ["Hello there", "Tell me more", "/reset", "/system You are a pirate.",
                                               "Hello there", "/compare base", "Who are you?", "/quit", "unread"]),
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    head, _, transcript = out.stdout.partition("\n")
    assert head.startswith(f"chatting with {run} (base tiny)")
    at = 0
    for piece in [first, second, "(conversation forgotten)", "(system prompt: You are a pirate.)", third,
                  "(comparing with the base model)"]:
        found = transcript.find(piece, at)
        assert found >= 0, f"{piece!r} not after position {at} in {transcript!r}"
        at = found + len(piece)
    table = transcript[at:]
    assert run in table and "base: tiny" in table and _squeezed(fourth) in _squeezed(table)


def test_a_session_by_name_talks_to_the_run_its_tag_names_now(
    store: LocalStore, personas: tuple[RunRecord, RunRecord], tmp_path: Path
) -> None:
    pool = PersonaPool(store, 2, device="cpu", cache_dir=tmp_path)

    def answer(model: str) -> str:
        return ChatSession(pool, resolve(store, model), base_model("tiny"), SAMPLING).ask("Who are you?")

    by_run = [answer(run.run_id) for run in personas]
    assert by_run[0] != by_run[1]
    for run, expected in zip(personas, by_run, strict=True):
        publish(store, run.run_id, "chat-moving", owner="alice")
        assert answer("chat-moving") == expected


def test_the_command_chats_with_a_published_persona_by_name(session: ChatSession, store: LocalStore) -> None:
    publish(store, session.persona.name, "chat-by-name", "v1", owner="alice")
    expected = session.ask("Hello there")
    out = subprocess.run(
        [sys.executable, "-m", "character.cli", "chat", "chat-by-name:v1", "--store", store.uri, "--temperature", "0",
         "--max-tokens", str(SAMPLING.max_new_tokens)],
        input="Hello there\n", capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    head, _, transcript = out.stdout.partition("\n")
    assert head.startswith("chatting with chat-by-name:v1 (base tiny)")
    assert transcript.strip() == expected.strip()


def _squeezed(text: str) -> str:
    """Text without whitespace or the table's borders (a column may wrap the answer)."""
    return "".join(c for c in text if not c.isspace() and c not in "│┃┌┐└┘├┤┬┴┼─━┏┓┗┛┡┩╇╈┳┻╋")
