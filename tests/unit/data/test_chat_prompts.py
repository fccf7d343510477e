"""Loading general chat prompts from the bundled set, local files, S3 and (refused offline) the hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from character.data import ChatPrompt, load_chat_prompts
from character.data.chat_prompts import prompt_of
from character.errors import InvalidInput, NotFound


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_bundled_prompts_have_unique_ids_and_text() -> None:
    prompts = load_chat_prompts("bundled")
    assert len(prompts) >= 100
    assert len({p.id for p in prompts}) == len(prompts)
    assert all(p.prompt.strip() == p.prompt and p.prompt for p in prompts)
    assert any(p.topic for p in prompts)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"prompt": " Why is the sky blue? "}, "Why is the sky blue?"),
        (
            {"instruction": "Translate to French.", "input": "Good morning"},
            "Translate to French.\nGood morning",
        ),
        ({"instruction": "Name a colour.", "input": ""}, "Name a colour."),
        ({"text": "Hello"}, "Hello"),
        ({"conversations": ["What is 2+2?", "4."]}, "What is 2+2?"),  # LIMA
        (
            {
                "conversation": [
                    {"role": "system", "content": "Be nice."},
                    {"role": "user", "content": "Hi!"},
                    {"role": "assistant", "content": "Hello."},
                ]
            },
            "Hi!",
        ),  # WildChat / OpenAI
        ({"conversations": [{"from": "human", "value": "Tell me a joke."}]}, "Tell me a joke."),  # ShareGPT
        ({"conversation": [{"input": "Plan a trip.", "output": "Sure."}]}, "Plan a trip."),  # Pure-Dove
        ({"messages": [{"role": "user", "text": "Yo"}]}, "Yo"),
    ],
)
def test_prompt_fields(row: dict[str, object], expected: str) -> None:
    assert prompt_of(row) == expected


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"question": "no known field"}, "no prompt field"),
        ({"prompt": "   "}, "empty"),
        ({"prompt": 3}, "expected a string"),
        ({"messages": [{"role": "assistant", "content": "only me"}]}, "no user turn"),
        ({"messages": "not a list"}, "not a list"),
        (["a", "list"], "expected an object"),
    ],
)
def test_unusable_rows_say_why(row: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        prompt_of(row)


def test_jsonl_bad_rows_are_reported_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"prompt": "ok"}\n\n{"prompt": ""}\n{not json\n{"prompt": "fine"}\n', encoding="utf-8")
    with pytest.raises(InvalidInput) as err:
        load_chat_prompts(str(path))
    message = str(err.value)
    assert "2 unusable" in message
    assert f"{path}:3: the prompt is empty" in message
    assert f"{path}:4: bad JSON" in message
    assert f"{path}:1" not in message


def test_ids_from_rows_or_file_stem(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "lima.jsonl", [{"prompt": "a", "id": "x1"}, {"prompt": "b"}])
    assert load_chat_prompts(str(path)) == [
        ChatPrompt(id="x1", prompt="a"),
        ChatPrompt(id="lima-2", prompt="b"),
    ]


def test_repeated_ids_are_errors(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "id": "same"}, {"prompt": "b", "id": "same"}])
    with pytest.raises(InvalidInput, match=r"p\.jsonl:2: id 'same' repeats"):
        load_chat_prompts(str(path))


def test_json_array_rows_located_by_line(tmp_path: Path) -> None:
    path = tmp_path / "set.json"
    path.write_text(
        '[\n  {"prompt": "first"},\n  {"prompt": "second"},\n  {"nothing": 1}\n]\n', encoding="utf-8"
    )
    with pytest.raises(InvalidInput, match=rf"{path}:4: no prompt field"):
        load_chat_prompts(str(path))
    path.write_text('[{"prompt": "first"}, {"prompt": "second"}]', encoding="utf-8")
    assert [p.prompt for p in load_chat_prompts(str(path))] == ["first", "second"]


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "lima.parquet"
    pq.write_table(pa.table({"conversations": [["Q one", "A"], ["Q two", "A"]], "source": ["s", "t"]}), path)
    assert [(p.id, p.prompt) for p in load_chat_prompts(str(path))] == [
        ("lima-1", "Q one"),
        ("lima-2", "Q two"),
    ]


def test_limit_is_a_seeded_subset_in_source_order() -> None:
    everything = load_chat_prompts("bundled")
    some = load_chat_prompts("bundled", limit=10, seed=1)
    assert len(some) == 10
    assert some == load_chat_prompts("bundled", limit=10, seed=1)
    assert some != load_chat_prompts("bundled", limit=10, seed=2)
    order = {p.id: i for i, p in enumerate(everything)}
    assert [order[p.id] for p in some] == sorted(order[p.id] for p in some)
    assert some != everything[:10]  # a random draw, not the head of the file


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such chat prompt file"):
        load_chat_prompts(str(tmp_path / "absent.jsonl"))
    (tmp_path / "prompts.csv").write_text("prompt\nhi\n")
    with pytest.raises(InvalidInput, match=r"unknown prompt file format '\.csv'"):
        load_chat_prompts(str(tmp_path / "prompts.csv"))


def test_hub_names_are_refused_offline_with_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NotFound) as err:
        load_chat_prompts("GAIR/lima")
    assert "HF_HUB_OFFLINE=1" in str(err.value)
    assert "pass its file" in str(err.value)


@pytest.mark.s3
def test_s3_source(s3_env: object, tmp_path: Path) -> None:
    from character.store import open_store
    from minio import Minio

    server = s3_env
    client = Minio(
        server.endpoint.split("://")[1],
        server.access_key,
        server.secret_key,  # type: ignore[attr-defined]
        secure=False,
    )
    client.make_bucket("oct-chat-src")
    local = _write_jsonl(
        tmp_path / "pd.jsonl", [{"conversation": [{"input": "Hi there", "output": "."}]}, {"x": 1}]
    )
    client.fput_object("oct-chat-src", "sets/pd.jsonl", str(local))
    with pytest.raises(InvalidInput, match=r"s3://oct-chat-src/sets/pd\.jsonl:2: no prompt field"):
        load_chat_prompts("s3://oct-chat-src/sets/pd.jsonl")
    _write_jsonl(local, [{"conversation": [{"input": "Hi there", "output": "."}]}])
    client.fput_object("oct-chat-src", "sets/pd.jsonl", str(local))
    # Through the run's store's connection, whatever its own bucket and prefix.
    store = open_store("s3://oct-other-bucket/runs")
    assert load_chat_prompts("s3://oct-chat-src/sets/pd.jsonl", store=store) == [
        ChatPrompt(id="pd-1", prompt="Hi there")
    ]
    with pytest.raises(NotFound, match="no object"):
        load_chat_prompts("s3://oct-chat-src/sets/absent.jsonl")
