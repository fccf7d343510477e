"""The persona server through the official `openai` client, over TLS (the client trusts only
the test CA) with bearer tokens, on 127.0.0.1: the model list each caller may see, chat and
completions answering exactly as the project's engine on the run's merged model, streaming
that spells the same answer, OpenAI-style refusals (404, 403, 401, 400 naming the field, 429),
a run finished after the server started, personas published (or a tag moved) after it started
served by name under the registry's visibility rules, 8 concurrent requests, eviction, health
and metrics."""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from character.controller.runs import RunRecord
from character.models.engine import SamplingParams
from character.models.transformers_engine import TransformersEngine
from character.platform import Limits, PlatformConfig
from character.serving.registry import publish
from character.serving.server import PersonaServer, ServerOptions, build_server
from character.store import LocalStore

from tests.fixtures.security import Credentials
from tests.unit.serving.helpers import trained_run

MESSAGES = [{"role": "user", "content": "Tell me about the sea."}]
TOKENS = 8
GREEDY = SamplingParams(max_new_tokens=TOKENS, temperature=0.0, top_p=1.0, repetition_penalty=1.0)
LIMITS = Limits(max_personas_loaded=1, max_messages=4, max_new_tokens=64, max_request_bytes=4096,
                max_requests_per_caller=8)


def _server(store: LocalStore, credentials: Credentials, limits: Limits) -> PersonaServer:
    return build_server(store, ServerOptions(port=0, health_port=0), credentials.tls_dir, credentials.tokens_file,
                        PlatformConfig(limits=limits), device="cpu").start()


@pytest.fixture(scope="module")
def server(store: LocalStore, personas: tuple[RunRecord, RunRecord], credentials: Credentials
           ) -> Iterator[PersonaServer]:
    started = _server(store, credentials, LIMITS)
    yield started
    started.stop()


def client(server: PersonaServer, credentials: Credentials, user: str = "root", token: str | None = None
           ) -> openai.OpenAI:
    trust = ssl.create_default_context(cafile=str(credentials.tls_dir / "ca.crt"))
    return openai.OpenAI(base_url=server.base_url, api_key=token or credentials.tokens[user], max_retries=0,
                         http_client=openai.DefaultHttpxClient(verify=trust), timeout=120)


def chat(api: openai.OpenAI, model: str, messages: list[dict[str, str]] = MESSAGES) -> str:
    answer = api.chat.completions.create(model=model, messages=messages, temperature=0,  # type: ignore[arg-type]
                                         max_tokens=TOKENS)
    return answer.choices[0].message.content or ""


def merged_engine(store: LocalStore, run: RunRecord) -> TransformersEngine:
    return TransformersEngine(store.materialize("model", run.stages["merge"].artifacts["model"].key), device="cpu")


def test_each_caller_sees_the_bases_and_its_own_personas(
    server: PersonaServer, credentials: Credentials, personas: tuple[RunRecord, RunRecord]
) -> None:
    alices, bobs = (run.run_id for run in personas)
    seen = {user: {m.id for m in client(server, credentials, user).models.list()} for user in ("alice", "root")}
    assert {"tiny", "smollm2", alices} <= seen["alice"] and bobs not in seen["alice"]
    assert {"tiny", alices, bobs} <= seen["root"]


def test_chat_and_completions_answer_as_the_engine_on_the_merged_model(
    server: PersonaServer, credentials: Credentials, personas: tuple[RunRecord, RunRecord], store: LocalStore
) -> None:
    run = personas[0]
    engine = merged_engine(store, run)
    api = client(server, credentials, "alice")
    assert chat(api, run.run_id) == engine.generate([MESSAGES], GREEDY)[0].text
    prompt = "Once upon a time"
    done = api.completions.create(model=run.run_id, prompt=prompt, temperature=0, max_tokens=TOKENS)
    ids = engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    expected = engine.generate_ids(ids, GREEDY)
    assert done.choices[0].text == expected.text and done.choices[0].finish_reason == expected.finish_reason
    assert done.usage is not None and done.usage.prompt_tokens == len(ids)
    assert done.usage.completion_tokens == expected.num_tokens


def test_a_stream_spells_the_answer(server: PersonaServer, credentials: Credentials,
                                    personas: tuple[RunRecord, RunRecord]) -> None:
    api = client(server, credentials, "alice")
    run = personas[0].run_id
    stream = api.chat.completions.create(model=run, messages=MESSAGES, temperature=0,  # type: ignore[call-overload]
                                         max_tokens=TOKENS, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == chat(api, run)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == TOKENS
    text = api.completions.create(model="tiny", prompt="Hello", temperature=0, max_tokens=TOKENS, stream=True)
    streamed = "".join(c.choices[0].text for c in text)
    plain = api.completions.create(model="tiny", prompt="Hello", temperature=0, max_tokens=TOKENS)
    assert streamed == plain.choices[0].text


def test_unknown_and_foreign_models_are_refused(server: PersonaServer, credentials: Credentials,
                                                personas: tuple[RunRecord, RunRecord]) -> None:
    api = client(server, credentials, "alice")
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        chat(api, "no-such-persona")
    with pytest.raises(openai.PermissionDeniedError, match="belongs to another user"):
        chat(api, personas[1].run_id)


def test_a_bad_token_gets_401(server: PersonaServer, credentials: Credentials) -> None:
    api = client(server, credentials, token="not-a-token")
    with pytest.raises(openai.AuthenticationError, match="unknown or expired token"):
        api.models.list()
    with pytest.raises(openai.AuthenticationError):
        chat(api, "tiny")


@pytest.mark.parametrize(("change", "param"), [
    ({"messages": MESSAGES * 5}, "messages"),
    ({"max_tokens": 65}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x" * 5000}]}, "body"),
    ({"temperature": -1}, "temperature"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
])
def test_an_oversized_or_malformed_request_gets_400_naming_the_field(
    server: PersonaServer, credentials: Credentials, change: dict[str, object], param: str
) -> None:
    api = client(server, credentials)
    request = {"model": "tiny", "messages": MESSAGES, "max_tokens": TOKENS, **change}
    with pytest.raises(openai.BadRequestError) as err:
        api.chat.completions.create(**request)  # type: ignore[call-overload]
    assert err.value.status_code == 400 and isinstance(err.value.body, dict)
    assert err.value.body.get("param") == param, err.value.body


def test_a_run_finished_after_the_server_started_is_served(
    server: PersonaServer, credentials: Credentials, store: LocalStore, tmp_path: Path
) -> None:
    api = client(server, credentials)
    run = trained_run(store, tmp_path, seed=3)
    assert run.run_id in {m.id for m in api.models.list()}
    assert chat(api, run.run_id) == merged_engine(store, run).generate([MESSAGES], GREEDY)[0].text
    assert chat(api, run.run_id) != chat(api, "tiny")


def test_a_persona_published_after_the_server_started_is_served_by_name(
    server: PersonaServer, credentials: Credentials, store: LocalStore, personas: tuple[RunRecord, RunRecord]
) -> None:
    api = client(server, credentials, "alice")
    run = personas[0]
    assert "alice-talks" not in {m.id for m in api.models.list()}
    publish(store, run.run_id, "alice-talks", owner="alice")
    assert {"alice-talks", "alice-talks:latest"} <= {m.id for m in api.models.list()}
    expected = merged_engine(store, run).generate([MESSAGES], GREEDY)[0].text
    assert chat(api, "alice-talks") == chat(api, "alice-talks:latest") == expected
    assert expected != chat(api, "tiny")


def test_anothers_unshared_persona_is_refused_and_not_listed_and_a_shared_one_served(
    server: PersonaServer, credentials: Credentials, store: LocalStore, personas: tuple[RunRecord, RunRecord]
) -> None:
    bobs = personas[1]
    publish(store, bobs.run_id, "bob-private", owner="bob")
    publish(store, bobs.run_id, "bob-public", owner="bob", shared=True)
    api = client(server, credentials, "alice")
    listed = {m.id for m in api.models.list()}
    assert "bob-private" not in listed and "bob-private:latest" not in listed and "bob-public" in listed
    with pytest.raises(openai.PermissionDeniedError, match="persona bob-private belongs to another user"):
        chat(api, "bob-private")
    assert chat(api, "bob-public") == merged_engine(store, bobs).generate([MESSAGES], GREEDY)[0].text


def test_republishing_the_tag_switches_what_the_name_serves(
    server: PersonaServer, credentials: Credentials, store: LocalStore, personas: tuple[RunRecord, RunRecord]
) -> None:
    api = client(server, credentials)
    answers = [merged_engine(store, run).generate([MESSAGES], GREEDY)[0].text for run in personas]
    assert answers[0] != answers[1]
    for run, answer in zip(personas, answers, strict=True):
        publish(store, run.run_id, "switching", "prod", owner="root")
        assert chat(api, "switching:prod") == answer


def test_concurrent_requests_answer_as_they_do_one_at_a_time(
    server: PersonaServer, credentials: Credentials, personas: tuple[RunRecord, RunRecord]
) -> None:
    api = client(server, credentials)
    models = [personas[0].run_id, personas[1].run_id, "tiny"]
    asks = [(models[i % 3], [{"role": "user", "content": f"Question number {i}?"}]) for i in range(8)]
    alone = [chat(api, model, messages) for model, messages in asks]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda ask: chat(api, *ask), asks))
    assert together == alone
    assert len(set(alone)) > 1


def test_generation_threads_do_not_hold_the_process_at_exit(server: PersonaServer, credentials: Credentials) -> None:
    import threading

    chat(client(server, credentials), "tiny")
    workers = [t for t in threading.enumerate() if t.name.startswith("persona-server_")]
    assert workers, "a request ran on no worker thread"
    assert all(t.daemon for t in workers)


def test_an_evicted_persona_answers_the_same_and_the_metrics_count_it(
    server: PersonaServer, credentials: Credentials, personas: tuple[RunRecord, RunRecord]
) -> None:
    api = client(server, credentials)
    first, second = (run.run_id for run in personas)
    before = chat(api, first)
    chat(api, second)  # one persona fits (max_personas_loaded=1): the first is evicted
    assert server.pool.loaded() == [second]
    assert chat(api, first) == before
    metrics = _get(f"http://127.0.0.1:{server.health_port}/metrics")
    assert _sample(metrics, "oct_serving_adapter_evictions_total") >= 2
    assert _sample(metrics, "oct_serving_adapter_loads_total") >= 3
    assert _sample(metrics, 'oct_serving_requests_total{endpoint="chat",status="200"}') >= 3
    assert _sample(metrics, "oct_serving_time_to_first_token_seconds_count") >= 3
    assert _sample(metrics, 'oct_serving_tokens_total{kind="completion"}') >= 3 * TOKENS
    assert _get(f"http://127.0.0.1:{server.health_port}/healthz") == "ok\n"


def test_a_caller_over_its_concurrent_requests_gets_429(store: LocalStore, credentials: Credentials) -> None:
    small = _server(store, credentials, Limits(max_requests_per_caller=1, max_new_tokens=4096))
    try:
        api = client(small, credentials, "bob")
        stream = api.completions.create(model="tiny", prompt="Count:", temperature=0, max_tokens=2000, stream=True)
        next(iter(stream))  # the first request is being answered
        with pytest.raises(openai.RateLimitError, match="requests in flight"):
            chat(api, "tiny")
        chat(client(small, credentials, "alice"), "tiny")  # other callers are not held up
        stream.close()
    finally:
        small.stop()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode())


def _sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics")


def test_the_command_prints_its_base_url_when_ready_and_serves_there(
    store: LocalStore, credentials: Credentials
) -> None:
    import re
    import subprocess
    import sys

    command = [sys.executable, "-m", "character.cli", "serve-personas", "--store", store.uri, "--port", "0",
               "--health-port", "0", "--tls-dir", str(credentials.tls_dir), "--tokens-file",
               str(credentials.tokens_file), "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"at (https://localhost:\d+/v1) ", line)
        assert found, (line, process.stderr.read() if process.poll() is not None and process.stderr else "")
        trust = ssl.create_default_context(cafile=str(credentials.tls_dir / "ca.crt"))
        api = openai.OpenAI(base_url=found.group(1), api_key=credentials.tokens["root"], max_retries=0,
                            http_client=openai.DefaultHttpxClient(verify=trust), timeout=60)
        assert "tiny" in {m.id for m in api.models.list()}
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0
