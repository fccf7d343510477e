"""Loading general chat prompts from the bundled set, local files, S3 and (refused offline) the hub."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from character.data import ChatPrompt, load_chat_prompts
from character.data.chat_prompts import prompt_of
from character.errors import InvalidInput, NotFound

from tests.fixtures.s3 import S3Server


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
        ({"question": "no known field"},
         "no prompt field: expected one of prompt, instruction, text, conversations, conversation, messages"),
        ({"prompt": "   "}, "the prompt is empty"),
        ({"prompt": 3}, "field 'prompt' is a int, expected a string"),
        ({"instruction": None}, "field 'instruction' is a NoneType, expected a string"),
        ({"messages": [{"role": "assistant", "content": "only me"}]}, "the conversation has no user turn"),
        ({"messages": [{"content": "whose?"}]}, "the conversation has no user turn"),
        ({"messages": [{"role": "user", "content": 5}]}, "field 'content' is a int, expected a string"),
        ({"messages": [{"role": "user", "name": "x"}]}, "the user turn has no content, value or text field"),
        ({"conversation": [{"input": ["Plan"], "output": "Sure."}]}, "field 'input' is a list, expected a string"),
        ({"messages": [3]}, "a turn is a int, expected a string or an object"),
        ({"messages": "not a list"}, "field 'messages' is not a list"),
        (["a", "list"], "a row is a list, expected an object"),
    ],
)
def test_unusable_rows_say_why(row: object, problem: str) -> None:
    with pytest.raises(ValueError) as err:
        prompt_of(row)
    assert str(err.value) == problem


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"prompt": "The question.", "input": "not part of it"}, "The question."),  # only instructions take an input
        ({"instruction": "Name a colour."}, "Name a colour."),
        ({"conversation": [{"role": "user", "input": "not this", "content": "This."}]}, "This."),
        ({"conversations": [{"from": "human", "input": "not this", "value": "This."}]}, "This."),
    ],
)
def test_which_field_is_the_prompt(row: dict[str, object], expected: str) -> None:
    assert prompt_of(row) == expected


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


def test_duplicate_keys_and_deep_rows_are_refused_naming_file_and_lines(tmp_path: Path) -> None:
    deep = '{"prompt": ' + "[" * 5000 + "]" * 5000 + "}"
    lines = ['{"prompt": "a"}', '{"prompt": "b", "id": "x",\t"prompt": "c"}', deep]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as err:
        load_chat_prompts(str(path))
    assert f"{path}:2: duplicate key 'prompt' (at line 2 and line 2)" in str(err.value)
    assert f"{path}:3: the document nests deeper than" in str(err.value)
    array = tmp_path / "p.json"
    array.write_text('[{"prompt": "a"},\n {"prompt": "b",\n  "prompt": "c"}]', encoding="utf-8")
    with pytest.raises(InvalidInput, match=rf"{array}:3: duplicate key 'prompt' \(at line 2 and line 3\)"):
        load_chat_prompts(str(array))


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
def test_s3_source(s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from character.store import open_store
    from minio import Minio

    client = Minio(s3_env.endpoint.split("://")[1], s3_env.access_key, s3_env.secret_key, secure=False)
    bucket = f"oct-chat-src-{uuid.uuid4().hex[:12]}"  # the server may outlive this test (CI, mutation runs)
    client.make_bucket(bucket)
    local = _write_jsonl(
        tmp_path / "pd.jsonl", [{"conversation": [{"input": "Hi there", "output": "."}]}, {"x": 1}]
    )
    client.fput_object(bucket, "sets/pd.jsonl", str(local))
    with pytest.raises(InvalidInput, match=rf"s3://{bucket}/sets/pd\.jsonl:2: no prompt field"):
        load_chat_prompts(f"s3://{bucket}/sets/pd.jsonl")
    _write_jsonl(local, [{"conversation": [{"input": "Hi there", "output": "."}]}])
    client.fput_object(bucket, "sets/pd.jsonl", str(local))
    # Through the run's store's connection, whatever its own bucket and prefix, and whatever
    # the environment says now.
    store = open_store("s3://oct-other-bucket/runs")
    monkeypatch.setenv("OCT_S3_SECRET_KEY", "not-the-secret")
    assert load_chat_prompts(f"s3://{bucket}/sets/pd.jsonl", store=store) == [
        ChatPrompt(id="pd-1", prompt="Hi there")
    ]
    with pytest.raises(NotFound, match="no object"):
        load_chat_prompts(f"s3://{bucket}/sets/absent.jsonl", store=store)


def test_problems_beyond_five_are_counted(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"prompt": ""}] * 6)
    with pytest.raises(InvalidInput) as err:
        load_chat_prompts(str(path))
    shown = "".join(f"\n  {path}:{line}: the prompt is empty" for line in range(1, 6))
    assert str(err.value) == f"{path}: 6 unusable chat prompt rows:{shown}\n  ... and 1 more"
    _write_jsonl(path, [{"prompt": ""}] * 5)
    with pytest.raises(InvalidInput) as err:
        load_chat_prompts(str(path))
    assert str(err.value) == f"{path}: 5 unusable chat prompt rows:{shown}"


def test_a_bad_json_line_is_reported_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n{not json\n', encoding="utf-8")
    with pytest.raises(InvalidInput) as err:
        load_chat_prompts(str(path))
    assert str(err.value) == (
        f"{path}: 1 unusable chat prompt rows:\n  {path}:2: bad JSON at column 2: Expecting property name "
        "enclosed in double quotes"
    )


def test_limits(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "topic": "letters"}, {"prompt": "b", "topic": 7}])
    assert load_chat_prompts(str(path), limit=0) == []  # asked for none: not an error
    assert load_chat_prompts(str(path), limit=2, seed=5) == [  # all of them: in source order
        ChatPrompt(id="p-1", prompt="a", topic="letters"),
        ChatPrompt(id="p-2", prompt="b"),  # a topic that is not a string is dropped
    ]
    with pytest.raises(InvalidInput) as err:
        load_chat_prompts(str(path), limit=-1)
    assert str(err.value) == "chat_prompts: limit must be >= 0, got -1"


def test_without_a_seed_the_subset_is_the_default_run_seeds() -> None:
    from character.pipeline.spec import RunSpec

    seed = RunSpec.model_fields["seed"].default
    assert load_chat_prompts("bundled", limit=10) == load_chat_prompts("bundled", limit=10, seed=seed)


def test_an_empty_source_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as err:
        load_chat_prompts(str(path))
    assert str(err.value) == f"{path}: no chat prompts found"


def test_an_unreadable_path_is_an_error_naming_it() -> None:
    source = "x" * 300 + ".jsonl"  # too long a file name for the file system
    with pytest.raises(InvalidInput) as err:
        load_chat_prompts(source)
    assert str(err.value).startswith(f"{source}: cannot read chat prompts: [Errno ")
    assert "File name too long" in str(err.value)
