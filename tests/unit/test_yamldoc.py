"""The one reader of external YAML and JSON: limits enforced while composing, at their exact
boundaries, with errors that name the line."""

from __future__ import annotations

import json
import locale
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from character.errors import InvalidInput
from character.yamldoc import (
    Budget,
    line_index,
    load,
    parse_json,
    parse_json_array,
    parse_mapping,
    read_mapping,
    read_text,
)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_duplicate_keys_are_refused_naming_both_lines() -> None:
    with pytest.raises(InvalidInput) as err:
        parse_mapping("constitution: sarcasm\nseed: 1\nmodel: tiny\n\nseed: 2\n", "spec.yaml")
    assert err.value.where == "spec.yaml:5"
    assert "duplicate key 'seed' (at line 2 and line 5)" in str(err.value)
    with pytest.raises(InvalidInput, match="duplicate key 'lr'"):
        parse_mapping("stages:\n  dpo:\n    lr: 5.0e-5\n    lr: 1\n", "spec.yaml")
    assert parse_mapping("a: {lr: 1}\nb: {lr: 2}\n", "spec.yaml") == {"a": {"lr": 1}, "b": {"lr": 2}}


def test_remote_documents_take_no_anchors_or_aliases() -> None:
    remote = Budget.remote(max_nodes=100, max_depth=8)
    for text, line in (("a: &x [1]\nb: 2\n", 1), ("a: 1\nb: &x 2\n", 2), ("a: 1\nb: *x\n", 2)):
        with pytest.raises(InvalidInput, match=r"YAML (anchors|aliases)") as err:
            parse_mapping(text, "spec_yaml", budget=remote)
        assert err.value.where == f"spec_yaml:{line}"


def test_local_aliases_count_as_what_they_expand_to() -> None:
    text = "a: &x [1, 2, 3]\nb: *x\nc: *x\n"  # the mapping, 3 keys, 3 x 4 values (10 if aliases were 1)
    assert parse_mapping(text, "f.yaml", budget=Budget(max_nodes=16)) == {"a": [1, 2, 3], "b": [1, 2, 3],
                                                                          "c": [1, 2, 3]}
    with pytest.raises(InvalidInput, match="more than 15 values"):
        parse_mapping(text, "f.yaml", budget=Budget(max_nodes=15))


def test_the_node_budget_is_exact_and_stops_at_the_line_passing_it() -> None:
    text = "a: 1\nb: 2\nc: 3\n"  # the mapping and six scalars
    assert parse_mapping(text, "f.yaml", budget=Budget(max_nodes=7)) == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(InvalidInput) as err:
        parse_mapping(text, "f.yaml", budget=Budget(max_nodes=6))
    assert err.value.where == "f.yaml:3"


def test_depth_is_exact_and_any_depth_is_a_located_error() -> None:
    # the mapping is level 1, the lists levels 2 to 16
    assert load(f"a: {nested(15)}", "f.yaml", Budget(max_depth=16))[0] == {"a": json.loads(nested(15))}
    with pytest.raises(InvalidInput, match="deeper than 16 levels") as err:
        load(f"a: {nested(16)}", "f.yaml", Budget(max_depth=16))
    assert err.value.where == "f.yaml:1"
    with pytest.raises(InvalidInput, match="deeper than 64 levels"):
        load(f"a: {nested(100_000)}", "f.yaml")


def test_caps_refuse_the_first_entry_past_them_by_line() -> None:
    budget = Budget(caps={("constitution", "traits"): 2}, cap_hint="limits.max_traits")
    two = "constitution:\n  traits:\n  - a\n  - b\n"
    assert parse_mapping(two, "s", budget=budget) == {"constitution": {"traits": ["a", "b"]}}
    with pytest.raises(InvalidInput) as err:
        parse_mapping(two + "  - c\n  - d\n", "s", budget=budget)
    assert err.value.where == "s:5"
    assert "more than 2 entries in constitution.traits: at most 2 are taken (limits.max_traits)" in str(err.value)
    assert parse_mapping("other:\n  traits: [a, b, c]\n", "s", budget=budget)  # only that path is capped


def test_explicit_tags_are_kept_and_unsafe_ones_refused() -> None:
    assert parse_mapping("s: !!set {a: null, b: null}\n", "f") == {"s": {"a", "b"}}
    for text in ("x: !!python/object/apply:os.system ['true']\n", "x: !!python/name:os.system {}\n",
                 "x: !!python/object:os.system x\n"):
        with pytest.raises(InvalidInput, match="could not determine a constructor") as err:
            parse_mapping(text, "f")
        assert err.value.where == "f:1"


def test_values_python_refuses_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="bad value"):
        parse_mapping("seed: !!int " + "9" * 5000 + "\n", "f")
    with pytest.raises(InvalidInput, match="bad value"):  # found by `make fuzz`: PyYAML raised AttributeError
        parse_mapping("constitution: !!timestamp sarcasm\n", "f")
    with pytest.raises(InvalidInput, match="control characters"):
        parse_mapping("a: 1\x00\n", "f")


def test_json_refuses_duplicate_keys_and_deep_or_large_documents() -> None:
    assert parse_json('{"a": [1, {"b": 2}]}', "f.json") == {"a": [1, {"b": 2}]}
    with pytest.raises(InvalidInput, match="duplicate key 'a'"):
        parse_json('{"a": 1, "b": 2, "a": 3}', "f.json")
    with pytest.raises(InvalidInput, match="deeper than 3 levels"):
        parse_json(nested(4), "f.json", Budget(max_depth=3))
    assert parse_json(nested(3), "f.json", Budget(max_depth=3)) == [[[]]]
    with pytest.raises(InvalidInput, match="deeper than"):
        parse_json(nested(100_000), "f.json")
    with pytest.raises(InvalidInput, match="more than 3 values"):
        parse_json("[1, 2, 3]", "f.json", Budget(max_nodes=3))
    with pytest.raises(InvalidInput) as err:
        parse_json('{\n"a": }', "f.json")
    assert err.value.where == "f.json:2"


def test_json_duplicate_keys_name_both_lines_offset_by_the_first_line() -> None:
    text = '{"a": 1,\n "b": {"a": 2, "c": "\\"a\\": 9"},\n "a": 3}'
    with pytest.raises(InvalidInput) as err:
        parse_json(text, "f.jsonl", first_line=10)
    assert str(err.value) == "f.jsonl:12: duplicate key 'a' (at line 10 and line 12): keep one"
    with pytest.raises(InvalidInput) as err:
        parse_json('{\n"a": }', "f.jsonl", first_line=5)
    assert err.value.where == "f.jsonl:6"


def test_json_constants_and_huge_integers_are_bad_values() -> None:
    for text in ('{"x": NaN}', "[Infinity]", "[" + "9" * 5000 + "]"):
        with pytest.raises(InvalidInput, match=r"f\.jsonl:3: bad value"):
            parse_json(text, "f.jsonl", first_line=3)


def test_a_json_array_gives_each_item_its_line_and_budget() -> None:
    text = '[\n {"a": [1, 2]},\n\n {"b": 2}\n]\n'
    assert parse_json_array(text, "f.json") == [(2, {"a": [1, 2]}), (4, {"b": 2})]
    assert len(parse_json_array(text, "f.json", Budget(max_nodes=4))) == 2  # 6 values in all: the budget is per item
    with pytest.raises(InvalidInput) as err:
        parse_json_array(text, "f.json", Budget(max_nodes=3))
    assert str(err.value) == "f.json:2: more than 3 values in the document"
    with pytest.raises(InvalidInput) as err:
        parse_json_array('[{"x": 1},\n {"x": 1, "x": 2}]', "f.json")
    assert str(err.value) == "f.json:2: duplicate key 'x' (at line 2 and line 2): keep one"
    for bad, says in [("{}", "expected an array"), ("[1 2]", "expected ','"), ("[1,]", "',' before ']'"),
                      ("[1] 2", "text after the array"), ("[1,", "Expecting value"), ("[" * 5000, "deeper than")]:
        with pytest.raises(InvalidInput, match=says):
            parse_json_array(bad, "f.json")


def test_line_index_locates_every_path() -> None:
    _, node = load("a:\n  b: 1\n  c: [x,\n    y]\n", "f")
    lines = line_index(node)
    assert (lines[("a", "b")], lines[("a", "c", 0)], lines[("a", "c", 1)]) == (2, 3, 4)


def test_unreadable_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such token file"):
        read_text(tmp_path / "missing.yaml", "token file")
    (tmp_path / "latin1.yaml").write_bytes(b"a: \xe9\n")
    with pytest.raises(InvalidInput, match=r"not UTF-8 text \(byte 3\)"):
        read_text(tmp_path / "latin1.yaml")


# --- every refusal read whole, with where it points -------------------------------------------
def _refusal(call: Any) -> tuple[str, str | None]:
    with pytest.raises(InvalidInput) as err:
        call()
    return str(err.value).removeprefix(f"{err.value.where}: "), err.value.where


def test_a_document_that_is_not_a_mapping_is_refused_naming_what_it_should_be() -> None:
    assert _refusal(lambda: parse_mapping("[1, 2]\n", "f.yaml", "spec")) == (
        "a spec is a mapping of keys to values", "f.yaml")
    assert parse_mapping("", "f.yaml") == {} and parse_mapping("null\n", "f.yaml") == {}


def test_files_are_read_as_utf8_and_refused_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "gone.yaml"
    assert _refusal(lambda: read_mapping(missing, "platform config")) == (
        "no such platform config file", str(missing))
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"a: \xff\n")
    assert _refusal(lambda: read_text(binary)) == ("not UTF-8 text (byte 3)", str(binary))
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    assert _refusal(lambda: read_mapping(listed, "platform config")) == (
        "a platform config is a mapping of keys to values", str(listed))
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\nb: 2\nc: 3\n")
    assert _refusal(lambda: read_mapping(big, budget=Budget(max_nodes=4))) == (
        "more than 4 values in the document", f"{big}:2")
    assert read_mapping(big) == {"a": 1, "b": 2, "c": 3}


@pytest.fixture
def ascii_locale() -> Iterator[None]:
    """The process's locale encoding made ASCII (the C locale), restored after."""
    saved = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    assert locale.getencoding() != "UTF-8"
    yield
    locale.setlocale(locale.LC_CTYPE, saved)


@pytest.mark.usefixtures("ascii_locale")
def test_files_are_utf8_whatever_the_locale(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: José\n", encoding="utf-8")
    assert read_mapping(path) == {"name": "José"}


@pytest.mark.parametrize(("text", "message", "line"), [
    ("a: 1\nb: \x07\n", "bad YAML: character #x0007: control characters are not allowed", 2),
    ("\n\nb: \x07\n", "bad YAML: character #x0007: control characters are not allowed", 3),
    ("a: [1, 2\n", "bad YAML: did not find expected ',' or ']'", 2),
    ("a: 1\n  b: 2\n", "bad YAML: mapping values are not allowed in this context", 2),
    ("? [1, 2]\n: 3\n", "bad YAML: found unhashable key", 1),
    ("x: 0\na: *x\n", "bad YAML: found undefined alias 'x'", 2),
])
def test_bad_yaml_is_refused_at_its_line(text: str, message: str, line: int) -> None:
    assert _refusal(lambda: parse_mapping(text, "f.yaml")) == (message, f"f.yaml:{line}")


def test_a_value_its_tag_cannot_hold_is_refused_for_the_document() -> None:
    assert _refusal(lambda: parse_mapping("a: !!int 12x\n", "f.yaml")) == (
        "bad value: invalid literal for int() with base 10: '12x'", "f.yaml")


def test_a_long_error_is_cut_to_200_characters() -> None:
    message, _ = _refusal(lambda: parse_mapping("a: !!int 12" + "x" * 300 + "\n", "f.yaml"))
    detail = message.removeprefix("bad value: ")
    assert len(detail) == 200 and detail.endswith("x...") and detail.startswith("invalid literal")
    at_limit, _ = _refusal(lambda: parse_mapping("a: !!int 1" + "x" * 157 + "\n", "f.yaml"))
    assert len(at_limit.removeprefix("bad value: ")) == 200 and not at_limit.endswith("...")


def test_the_non_specific_tag_is_the_default_one() -> None:
    assert parse_mapping("a: ! [1, 2]\nb: ! {c: 1}\n", "f.yaml") == {"a": [1, 2], "b": {"c": 1}}


def test_anchors_and_aliases_are_refused_for_remote_callers_with_what_to_do() -> None:
    remote = Budget.remote(max_nodes=100, max_depth=8)
    assert _refusal(lambda: parse_mapping("a: &x 1\n", "body", budget=remote)) == (
        "YAML anchors (&name) are not accepted here: write the values out", "body:1")
    assert _refusal(lambda: parse_mapping("a: 1\nb: *x\n", "body", budget=remote)) == (
        "YAML aliases (*name) are not accepted here: write the values out", "body:2")


def test_the_remote_budget_keeps_what_it_is_given() -> None:
    remote = Budget.remote(max_nodes=5, max_depth=3, caps={("a",): 1}, cap_hint="limits.x")
    assert remote == Budget(max_nodes=5, max_depth=3, aliases=False, caps={("a",): 1}, cap_hint="limits.x")
    assert Budget.remote(max_nodes=5, max_depth=3) == Budget(max_nodes=5, max_depth=3, aliases=False)


def test_an_alias_to_a_mapping_reads_the_mapping_and_counts_its_size() -> None:
    text = "a: &x {k: 1, j: 2}\nb: *x\n"  # the document 1, a 1, its mapping 5, b 1, the alias 5 again
    assert parse_mapping(text, "f.yaml", budget=Budget(max_nodes=13)) == {"a": {"k": 1, "j": 2},
                                                                          "b": {"k": 1, "j": 2}}
    assert _refusal(lambda: parse_mapping(text, "f.yaml", budget=Budget(max_nodes=12))) == (
        "more than 12 values in the document", "f.yaml:2")


def test_an_undefined_alias_counts_one_value() -> None:
    assert _refusal(lambda: parse_mapping("a: *x\n", "f.yaml", budget=Budget(max_nodes=3)))[0] == (
        "bad YAML: found undefined alias 'x'")
    assert _refusal(lambda: parse_mapping("a: *x\n", "f.yaml", budget=Budget(max_nodes=2))) == (
        "more than 2 values in the document", "f.yaml:1")


@pytest.mark.parametrize(("text", "caps", "hint", "message", "line"), [
    ("a: 1\nb: 2\nc: 3\n", {(): 2}, "", "more than 2 entries in the document: at most 2 are taken", 3),
    ("a:\n  x: 1\n  y: 2\n", {("a",): 1}, "limits.max_x",
     "more than 1 entries in a: at most 1 are taken (limits.max_x)", 3),
    ("a:\n- {q: [1, 2]}\n- {q: [1, 2, 3]}\n", {("a", "*", "q"): 2}, "",
     "more than 2 entries in a.*.q: at most 2 are taken", 3),
])
def test_a_cap_takes_exactly_its_entries_and_refuses_the_next_at_its_line(
    text: str, caps: dict[tuple[str, ...], int], hint: str, message: str, line: int
) -> None:
    over = Budget(caps=caps, cap_hint=hint)
    assert _refusal(lambda: load(text, "f.yaml", over)) == (message, f"f.yaml:{line}")
    (path, cap), = caps.items()
    assert load(text, "f.yaml", Budget(caps={path: cap + 1}))[0] is not None


def test_a_cap_under_a_key_that_is_not_a_scalar_names_it_by_a_question_mark() -> None:
    over = Budget(caps={("?",): 1})
    assert _refusal(lambda: load("? [k]\n: [1, 2]\n", "f.yaml", over)) == (
        "more than 1 entries in ?: at most 1 are taken", "f.yaml:2")


def test_a_long_duplicate_key_is_shown_cut() -> None:
    key = "k" * 100
    message, _ = _refusal(lambda: parse_mapping(f"{key}: 1\n{key}: 2\n", "f.yaml"))
    shown = repr(key)[:57] + "..."
    assert message == f"duplicate key {shown} (at line 1 and line 2): keep one"


def test_json_errors_name_the_line_where_it_is_known() -> None:
    assert _refusal(lambda: parse_json('{"a": NaN}', "body")) == ("bad value: NaN is not a JSON value", "body:1")
    message, where = _refusal(lambda: parse_json("1" * 5000, "body"))
    assert message.startswith("bad value: Exceeds the limit (4300 digits)") and where == "body:1"
    assert _refusal(lambda: parse_json("[[[1]]]", "body", Budget(max_depth=2))) == (
        "the document nests deeper than 2 levels", "body:1")
    assert _refusal(lambda: parse_json("[[\n[1]]]", "body", Budget(max_depth=2))) == (
        "the document nests deeper than 2 levels", "body")
    assert _refusal(lambda: parse_json('\n{"a": 1,\n "a": 2}', "body")) == (
        "duplicate key 'a' (at line 2 and line 3): keep one", "body:3")


@pytest.mark.parametrize(("text", "message", "line"), [
    ('\n\n{"a": 1}', "bad JSON: expected an array", 3),
    ("\n[1,\n]", "bad JSON: a ',' before ']'", 3),
    ("\n[1\n 2]", "bad JSON: expected ',' or ']' after an item", 3),
    ("[1\n]x", "bad JSON: text after the array", 2),
    ("[1]\nx", "bad JSON: text after the array", 1),
    ("[1]x", "bad JSON: text after the array", 1),
])
def test_a_bad_json_array_is_refused_at_its_line(text: str, message: str, line: int) -> None:
    assert _refusal(lambda: parse_json_array(text, "records.json")) == (message, f"records.json:{line}")


def test_json_array_items_carry_the_line_they_start_on() -> None:
    assert parse_json_array('\n[1,\n {"a": 2}]', "records.json") == [(2, 1), (3, {"a": 2})]


def test_lines_locate_every_path_and_an_alias_once() -> None:
    assert line_index(None) == {}
    _, node = load("a: &x {k: 1}\nb: *x\nc: 3\n", "f.yaml")
    assert line_index(node) == {(): 1, ("a",): 1, ("b",): 1, ("c",): 3, ("b", "k"): 1}
    _, node = load("a:\n  - 1\n  - x: 2\nb: 4\n", "f.yaml")
    assert line_index(node) == {(): 1, ("a",): 2, ("a", 0): 2, ("a", 1): 3, ("a", 1, "x"): 3, ("b",): 4}
