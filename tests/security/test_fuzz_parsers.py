"""The parser fuzzer: generated YAML and JSON (anchors and aliases, deep and wide nesting,
duplicate keys, huge scalars, odd Unicode and control characters, YAML tags, type confusion)
and the classic attacks, fed to every reader of external input. Each input is accepted or
refused with the project's error (never another exception), within 1 s of CPU and 100 MB, and
a refusal stays short. `make fuzz` runs it at depth (FUZZ_EXAMPLES) and prints the tally."""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from character.constitution import load_constitution
from character.controller.submission import spec_from_submission
from character.data.chat_prompts import load_chat_prompts
from character.errors import InvalidInput
from character.pipeline.spec import load_spec
from character.platform import Limits, load_platform_config
from character.security.auth import load_tokens_file
from character.serving.api import ApiError, ChatRequest, parse
from character.serving.server import body_budget
from character.stages.evaluate.calibration import load_calibration_set
from character.yamldoc import parse_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.corpus import ATTACKS, JSON_ATTACKS
from tests.security.fuzzing import EXAMPLES, measure, within_budget

MAX_REFUSAL_CHARS = 4096
FOLDER = Path(tempfile.mkdtemp(prefix="oct-fuzz-"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---------------------------------------------------------------------- generated documents
ODD = st.characters(codec="utf-8", categories=("L", "M", "N", "P", "S", "Z", "C"), exclude_characters="\ud800")
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(ODD, max_size=40))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
    st.text(ODD, max_size=8), inner, max_size=5), max_leaves=30)
TRAIT = st.fixed_dictionaries({"trait": st.one_of(st.text(ODD, max_size=80), VALUES)},
                              optional={"questions": st.one_of(st.lists(st.text(ODD, max_size=40), max_size=4), VALUES),
                                        "clarification": VALUES})
CONSTITUTION = st.fixed_dictionaries({"name": st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True), VALUES),
                                      "description": st.one_of(st.text(ODD, max_size=40), VALUES),
                                      "traits": st.one_of(st.lists(TRAIT, max_size=4), VALUES)})
KNOBS = st.dictionaries(st.sampled_from(["lr", "epochs", "beta", "max_new_tokens", "batch_size", "seed", "x"]),
                        VALUES, max_size=4)
SPEC = st.fixed_dictionaries(
    {"constitution": st.one_of(st.just("sarcasm"), CONSTITUTION, VALUES)},
    optional={"seed": st.one_of(st.integers(), VALUES), "model": st.one_of(st.just("tiny"), VALUES),
              "scale": st.one_of(st.sampled_from(["demo", "proof", "full"]), VALUES),
              "stages": st.one_of(st.dictionaries(st.sampled_from(["prompts", "distill", "dpo", "sft", "eval", "x"]),
                                                  KNOBS, max_size=3), VALUES)})
TAGS = ["!!python/object:os.system ", "!!python/object/apply:os.system ", "!!binary ", "!!set ", "!!omap ",
        "!!timestamp ", "!!float ", "!!int ", "!!str ", "!!map ", "!!seq ", "!custom ", "!!merge "]


def _render(doc: Any, how: str) -> str:
    if how == "json":
        return json.dumps(doc)
    return yaml.safe_dump(doc, default_flow_style=how == "flow", allow_unicode=True, sort_keys=False)


@st.composite
def mutated(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> str:
    """A rendered document with up to three hostile edits."""
    text = _render(draw(documents), draw(st.sampled_from(["yaml", "flow", "json"])))
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from(["anchor", "duplicate", "deep", "wide", "huge", "bytes", "tag", "splice"]))
        lines = text.splitlines() or [""]
        at = draw(st.integers(0, len(lines) - 1))
        if edit == "anchor":
            lines[at] = lines[at].replace(": ", ": &a ", 1)
            lines.append(draw(st.sampled_from(["z: *a", "<<: *a", "z: [*a, *a, *a]", "z: *b"])))
        elif edit == "duplicate":
            lines.insert(draw(st.integers(at, len(lines))), lines[at])
        elif edit == "deep":
            depth = draw(st.integers(1, 20_000))
            lines.append("d: " + "[" * depth + "]" * draw(st.sampled_from([depth, 0, depth // 2])))
        elif edit == "wide":
            lines.append("w: [" + ",".join(["1"] * draw(st.integers(1, 200_000))) + "]")
        elif edit == "huge":
            lines.append("h: " + draw(st.sampled_from(["x", "\\u00e9", "9", "'"])) * draw(st.integers(1, 500_000)))
        elif edit == "bytes":
            chars = draw(st.text(st.characters(codec="utf-8", exclude_characters="\ud800"), min_size=1, max_size=4))
            cut = draw(st.integers(0, len(lines[at])))
            lines[at] = lines[at][:cut] + chars + lines[at][cut:]
        elif edit == "tag":
            lines[at] = lines[at].replace(": ", ": " + draw(st.sampled_from(TAGS)), 1)
        else:
            lines[at:at] = draw(st.sampled_from(list(ATTACKS.values()))).splitlines()
        text = "\n".join(lines) + "\n"
    return text


def _file(text: str, suffix: str) -> Path:
    path = FOLDER / f"input{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


def _check(parser: str, parse: Callable[[], Any], text: str) -> None:
    outcome = measure(parser, parse, text)
    assert within_budget(outcome), f"{parser}: {outcome.cpu_s:.2f} s, {outcome.peak_bytes / 2**20:.0f} MB"
    if outcome.refused is not None:
        assert len(str(outcome.refused)) <= MAX_REFUSAL_CHARS, str(outcome.refused)[:300]


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """Stage modules are imported on a spec's first validation: a one-time cost, not the input's."""
    spec_from_submission("constitution: sarcasm\nmodel: tiny\n", str(FOLDER / "store"))


# ---------------------------------------------------------------------- the classic attacks
@pytest.mark.attack("parser bomb sent as a spec")
@pytest.mark.parametrize("name", list(ATTACKS))
def test_classic_attacks_are_refused_at_submit_within_budget(name: str) -> None:
    outcome = measure("spec (SubmitRun)", lambda: spec_from_submission(ATTACKS[name], str(FOLDER / "store")),
                      ATTACKS[name])
    assert outcome.refused is not None and within_budget(outcome), (outcome.cpu_s, outcome.peak_bytes)
    assert len(str(outcome.refused)) <= MAX_REFUSAL_CHARS


@pytest.mark.attack("parser bomb in a local spec file (oct run, oct submit)")
@pytest.mark.parametrize("name", list(ATTACKS))
def test_classic_attacks_in_spec_files_cost_no_more_than_the_budget(name: str) -> None:
    _check("spec file (oct run)", lambda: load_spec(_file(ATTACKS[name], ".yaml")), ATTACKS[name])


# ---------------------------------------------------------------------- generated
@pytest.mark.attack("fuzzed specs sent with SubmitRun")
@FUZZ
@given(mutated(SPEC))
def test_fuzzed_submissions(text: str) -> None:
    _check("spec (SubmitRun)", lambda: spec_from_submission(text, str(FOLDER / "store")), text)


@pytest.mark.attack("fuzzed spec files")
@FUZZ
@given(mutated(SPEC))
def test_fuzzed_spec_files(text: str) -> None:
    _check("spec file (oct run)", lambda: load_spec(_file(text, ".yaml")), text)


@pytest.mark.attack("fuzzed constitution files")
@FUZZ
@given(mutated(st.one_of(CONSTITUTION, st.lists(TRAIT, max_size=4))), st.sampled_from([".yaml", ".json", ".txt"]))
def test_fuzzed_constitution_files(text: str, suffix: str) -> None:
    _check(f"constitution {suffix}", lambda: load_constitution(_file(text, suffix)), text)


@pytest.mark.attack("fuzzed JSONL constitutions")
@FUZZ
@given(st.lists(mutated(TRAIT).map(lambda t: t.replace("\n", " ")), min_size=1, max_size=5))
def test_fuzzed_jsonl_constitutions(lines: list[str]) -> None:
    text = "\n".join(lines)
    _check("constitution .jsonl", lambda: load_constitution(_file(text, ".jsonl")), text)


@pytest.mark.attack("fuzzed platform configs and token files")
@FUZZ
@given(mutated(st.fixed_dictionaries({}, optional={"models": VALUES, "limits": st.dictionaries(
    st.sampled_from(["max_traits", "max_spec_depth", "max_spec_nodes", "rpc_timeout_s"]), VALUES), "tokens": st.lists(
    st.fixed_dictionaries({"name": VALUES, "sha256": VALUES, "roles": VALUES}), max_size=3)})))
def test_fuzzed_platform_configs_and_token_files(text: str) -> None:
    _check("platform config", lambda: load_platform_config(_file(text, ".yaml")), text)
    _check("token file", lambda: load_tokens_file(_file(text, ".yaml")), text)


CHAT_ROW = st.fixed_dictionaries({}, optional={
    "prompt": st.one_of(st.text(ODD, max_size=60), VALUES), "id": VALUES, "topic": VALUES,
    "messages": st.one_of(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "x"]),
                                                           "content": st.one_of(st.text(ODD, max_size=40), VALUES)}),
                                   max_size=3), VALUES)})
CALIBRATION_ROW = st.fixed_dictionaries({"message": st.one_of(st.text(ODD, max_size=40), VALUES),
                                         "reply": st.one_of(st.text(ODD, max_size=40), VALUES),
                                         "traits": st.one_of(st.just(["warm", "cold"]), VALUES),
                                         "expressed": st.one_of(st.just("warm"), VALUES)})


def _lines(rows: list[str]) -> str:
    return "\n".join(row.replace("\n", " ") for row in rows) + "\n"


@pytest.mark.attack("fuzzed chat prompt files")
@FUZZ
@given(st.lists(mutated(CHAT_ROW), min_size=1, max_size=4), st.sampled_from([".jsonl", ".json"]))
def test_fuzzed_chat_prompt_files(rows: list[str], suffix: str) -> None:
    text = _lines(rows) if suffix == ".jsonl" else "[" + ",\n".join(rows) + "]"
    _check(f"chat prompts {suffix}", functools.partial(_chat_prompts, text, suffix), text)


@pytest.mark.attack("fuzzed calibration sets")
@FUZZ
@given(st.lists(mutated(CALIBRATION_ROW), min_size=1, max_size=4))
def test_fuzzed_calibration_sets(rows: list[str]) -> None:
    text = _lines(rows)
    _check("calibration set", lambda: load_calibration_set(_file(text, ".jsonl")), text)


@pytest.mark.attack("parser bombs in chat prompt files and calibration sets")
@pytest.mark.parametrize("name", list(JSON_ATTACKS) + list(ATTACKS))
def test_classic_attacks_in_json_record_files_cost_no_more_than_the_budget(name: str) -> None:
    """A JSON attack as a record, a YAML one as a record's string (plain data there). The budget is
    per record: a file of many records costs in proportion to them, as any data set does."""
    record = JSON_ATTACKS[name] if name in JSON_ATTACKS else json.dumps({"prompt": ATTACKS[name]})
    for text, suffix in ((record, ".jsonl"), (f"[{record}]", ".json")):
        _check(f"chat prompts {suffix}", functools.partial(_chat_prompts, text, suffix), text)
    _check("calibration set", lambda: load_calibration_set(_file(record, ".jsonl")), record)


def _chat_prompts(text: str, suffix: str) -> Any:
    return load_chat_prompts(str(_file(text, suffix)))


CHAT_REQUEST = st.fixed_dictionaries({"model": st.one_of(st.just("tiny"), VALUES), "messages": st.one_of(
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "x"]),
                                    "content": st.one_of(st.text(ODD, max_size=40), VALUES)}), max_size=4), VALUES)},
    optional={"max_tokens": st.one_of(st.integers(), VALUES), "temperature": st.one_of(st.floats(), VALUES),
              "stream": VALUES, "stream_options": VALUES, "seed": VALUES})


def _request_body(text: str) -> Any:
    """The persona server's reading of a chat request body (`PersonaServer._body`, then the
    request model); its 400 counts as the refusal it is."""
    try:
        return parse(ChatRequest, parse_json(text, "body", body_budget(Limits())))
    except ApiError as err:
        raise InvalidInput(err.message, where=err.param) from None


@pytest.mark.attack("fuzzed persona server request bodies")
@FUZZ
@given(mutated(CHAT_REQUEST).filter(lambda text: text.lstrip().startswith("{")))
def test_fuzzed_persona_server_bodies(text: str) -> None:
    _check("persona server body", lambda: _request_body(text), text)


@pytest.mark.attack("JSON bombs sent to the persona server")
@pytest.mark.parametrize("name", list(JSON_ATTACKS))
def test_json_attacks_on_the_persona_server_body_cost_no_more_than_the_budget(name: str) -> None:
    outcome = measure("persona server body", lambda: _request_body(JSON_ATTACKS[name]), JSON_ATTACKS[name])
    assert outcome.refused is not None and within_budget(outcome), (outcome.cpu_s, outcome.peak_bytes)
