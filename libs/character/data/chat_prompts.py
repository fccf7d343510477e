"""General chat prompts: the user messages that are not about the persona (docs/method.md sections 2
and 6: LIMA for distillation, WildChat / Pure-Dove for evaluation).

`load_chat_prompts(source)` accepts:
- "bundled": the prompts shipped with the library (`character/data/chat_prompts.jsonl`);
- a local file: `.jsonl` (one JSON object a line), `.json` (an array of objects) or `.parquet`;
- an `s3://bucket/path/file.jsonl` URI (same formats; credentials as for the store);
- a hub data set name such as "GAIR/lima" or "allenai/WildChat-1M", optionally with a split
  ("GAIR/lima:test"; default "train"), loaded with `datasets` where a network is available.

Each row's prompt is taken from the first of these fields that is present:
- "prompt", "instruction" (with a non-empty "input" appended on a new line, as Alpaca-style
  sets split them) or "text": a string;
- "conversations", "conversation" or "messages": a list whose first user turn is taken. Turns
  may be plain strings (LIMA: alternating, the user first), `{"role"|"from": "user"|"human",
  "content"|"value"|"text": ...}` objects (OpenAI, ShareGPT, WildChat), or `{"input", "output"}`
  objects (Pure-Dove).
A row's "id" is kept when present; otherwise the id is `<file stem or set name>-<row number>`.
An optional "topic" string is kept. Rows without a usable prompt are errors naming file:line.

JSON rows are read as every external JSON document is (`character.yamldoc.parse_json`): duplicate
keys are refused naming both lines, and each row's nesting and number of values are bounded, so
one row costs bounded work; a file costs in proportion to its rows.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from character.errors import CharacterError, InvalidInput, NotFound
from character.yamldoc import parse_json, parse_json_array

if TYPE_CHECKING:
    from character.store.base import Store

BUNDLED = "bundled"
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
_TEXT_FIELDS = ("prompt", "instruction", "text")
_TURN_LIST_FIELDS = ("conversations", "conversation", "messages")
_USER_ROLES = ("user", "human")
_SHOWN_PROBLEMS = 5


class ChatPrompt(BaseModel):
    """One general chat prompt."""

    model_config = ConfigDict(frozen=True)

    id: str
    """Unique within its source."""
    prompt: str
    """The user message."""
    topic: str = ""
    """A free-form label where the source has one (the bundled set does)."""


Row = tuple[str, Any]
"""(where, raw row): where is "file:line" or "name: row N"; a raw row that could not be
decoded is an `InvalidInput` carrying the reason."""


# ----------------------------------------------------------------------------- one row
def _first_user_turn(turns: list[Any]) -> str:
    for turn in turns:
        if isinstance(turn, str):
            return turn  # LIMA-style: plain strings, the user speaks first
        if not isinstance(turn, dict):
            raise ValueError(f"a turn is a {type(turn).__name__}, expected a string or an object")
        if "input" in turn and "role" not in turn and "from" not in turn:
            return _string(turn["input"], "input")  # Pure-Dove-style {"input", "output"} pairs
        role = turn.get("role", turn.get("from"))
        if role in _USER_ROLES:
            for field in ("content", "value", "text"):
                if field in turn:
                    return _string(turn[field], field)
            raise ValueError("the user turn has no content, value or text field")
    raise ValueError("the conversation has no user turn")


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} is a {type(value).__name__}, expected a string")
    return value


def prompt_of(row: Any) -> str:
    """The user message of one raw row (see the module docstring); ValueError says why not."""
    if not isinstance(row, dict):
        raise ValueError(f"a row is a {type(row).__name__}, expected an object")
    text: str | None = None
    for field in _TEXT_FIELDS:
        if field in row:
            text = _string(row[field], field)
            extra = row.get("input") if field == "instruction" else None
            if isinstance(extra, str) and extra.strip():
                text = f"{text}\n{extra}"
            break
    else:
        for field in _TURN_LIST_FIELDS:
            if field in row:
                if not isinstance(row[field], list):
                    raise ValueError(f"field {field!r} is not a list")
                text = _first_user_turn(row[field])
                break
    if text is None:
        raise ValueError(f"no prompt field: expected one of {', '.join(_TEXT_FIELDS + _TURN_LIST_FIELDS)}")
    if not text.strip():
        raise ValueError("the prompt is empty")
    return text.strip()


# ----------------------------------------------------------------------------- raw rows
def _jsonl_rows(path: Path) -> list[Row]:
    """One object a line, each read within the same budget as every external JSON document."""
    rows: list[Row] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rows.append((where, parse_json(line, str(path), first_line=lineno)))
            except InvalidInput as err:  # kept with its row: only rows a limit picks are reported
                rows.append((where, InvalidInput(str(err).removeprefix(f"{where}: "))))
    return rows


def _json_rows(path: Path) -> list[Row]:
    """A JSON array of objects, each located by the line it starts on."""
    text = path.read_text(encoding="utf-8")
    return [(f"{path}:{line}", row) for line, row in parse_json_array(text, str(path))]


def _parquet_rows(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several unrelated types for unreadable files
        raise InvalidInput(f"not a readable Parquet file: {err}", where=str(path)) from None
    return [(f"{path}: row {i}", row) for i, row in enumerate(table.to_pylist(), start=1)]


_READERS: dict[str, Callable[[Path], list[Row]]] = {
    ".jsonl": _jsonl_rows,
    ".json": _json_rows,
    ".parquet": _parquet_rows,
}


def _file_rows(path: Path, shown_as: str | None = None) -> list[Row]:
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise InvalidInput(
            f"unknown prompt file format {suffix!r}: use {', '.join(FILE_SUFFIXES)}",
            where=shown_as or str(path),
        )
    try:
        rows = _READERS[suffix](path)
    except UnicodeDecodeError as err:
        raise InvalidInput(f"not UTF-8 text (byte {err.start})", where=shown_as or str(path)) from None
    if shown_as:
        rows = [(where.replace(str(path), shown_as, 1), row) for where, row in rows]
    return rows


def _s3_rows(uri: str, store: Store | None) -> list[Row]:
    """Download one object and read it like a local file. The object is fetched with the
    run's store's endpoint and credentials when that is an S3 store, else with the OCT_S3_*
    environment (as `open_store` reads it)."""
    import copy

    from character.store import open_store
    from character.store.s3 import S3Store

    bucket, _, name = uri.removeprefix("s3://").partition("/")
    if not bucket or not name or name.endswith("/"):
        raise InvalidInput(
            f"{uri!r} does not name a file: use s3://bucket/path/prompts.jsonl", where="chat_prompts"
        )
    if isinstance(store, S3Store):
        # Same server and client, rooted at the source's bucket instead of the store's prefix.
        source = copy.copy(store)
        source.bucket, source.prefix, source.uri = bucket, "", f"s3://{bucket}"
        source._bucket_ready = False
    else:
        opened = open_store(f"s3://{bucket}")
        assert isinstance(opened, S3Store)
        source = opened
    source.create_bucket = False  # reading must never create a bucket
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(name).name
        source._get_file(name, local)
        return _file_rows(local, shown_as=uri)


def _hub_rows(name: str) -> list[Row]:
    set_name, _, split = name.partition(":")
    split = split or "train"
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise NotFound(
            f"chat prompts {name!r}: not a local file, and hub downloads are off (HF_HUB_OFFLINE=1). "
            "Download the data set where a network is available and pass its file instead "
            f'(a {", ".join(FILE_SUFFIXES)} path or an s3:// URI), or use "bundled"'
        )
    import datasets

    try:
        data = datasets.load_dataset(set_name, split=split)
    except Exception as err:  # network, auth, unknown name and bad split all surface differently
        raise NotFound(
            f"chat prompts {name!r}: could not load the hub data set ({type(err).__name__}: {err}). "
            "Without a network, download it elsewhere and pass its file (a "
            f'{", ".join(FILE_SUFFIXES)} path or an s3:// URI), or use "bundled"'
        ) from None
    return [(f"{name}: row {i}", row) for i, row in enumerate(data, start=1)]


def _looks_like_path(source: str) -> bool:
    return (
        source.lower().endswith(FILE_SUFFIXES) or source.startswith((".", "/", "~")) or os.path.exists(source)
    )


def _raw_rows(source: str, store: Store | None) -> tuple[list[Row], str]:
    """The raw rows of a source and the stem used for ids of rows without one."""
    if source == BUNDLED:
        path = Path(str(resources.files("character.data") / "chat_prompts.jsonl"))
        return _file_rows(path), "chat"
    if source.startswith("s3://"):
        return _s3_rows(source, store), Path(source).stem
    if _looks_like_path(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise NotFound(f"no such chat prompt file: {path}")
        return _file_rows(path), path.stem
    return _hub_rows(source), source.partition(":")[0].rsplit("/", 1)[-1]


# ----------------------------------------------------------------------------- public
def load_chat_prompts(
    source: str, store: Store | None = None, limit: int | None = None, seed: int = 123456
) -> list[ChatPrompt]:
    """General chat prompts from `source` (see the module docstring), in source order.

    With `limit`, a random subset of that many rows (chosen with `seed`, so the same call
    always picks the same rows), still in source order. Unusable rows among those chosen
    raise `InvalidInput` listing each with its file:line.
    """
    if limit is not None and limit < 0:
        raise InvalidInput(f"limit must be >= 0, got {limit}", where="chat_prompts")
    try:
        rows, stem = _raw_rows(source, store)
    except CharacterError:
        raise
    except OSError as err:
        raise InvalidInput(f"cannot read chat prompts: {err}", where=source) from None
    if limit is not None and limit < len(rows):
        chosen = sorted(random.Random(seed).sample(range(len(rows)), limit))
        numbered = [(i, rows[i]) for i in chosen]
    else:
        numbered = list(enumerate(rows))
    prompts: list[ChatPrompt] = []
    problems: list[str] = []
    seen_ids: set[str] = set()
    for i, (where, row) in numbered:
        try:
            if isinstance(row, InvalidInput):
                raise ValueError(str(row))
            text = prompt_of(row)
            row_id = str(row.get("id", "")).strip() or f"{stem}-{i + 1}"
            if row_id in seen_ids:
                raise ValueError(f"id {row_id!r} repeats an earlier row's")
        except ValueError as err:
            problems.append(f"{where}: {err}")
            continue
        seen_ids.add(row_id)
        topic = row.get("topic")
        prompts.append(ChatPrompt(id=row_id, prompt=text, topic=topic if isinstance(topic, str) else ""))
    if problems:
        shown = "\n  ".join(problems[:_SHOWN_PROBLEMS])
        more = (
            f"\n  ... and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > _SHOWN_PROBLEMS else ""
        )
        raise InvalidInput(f"{len(problems)} unusable chat prompt rows:\n  {shown}{more}", where=source)
    if not prompts and limit != 0:
        raise InvalidInput("no chat prompts found", where=source)
    return prompts
