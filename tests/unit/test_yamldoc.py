"""The one reader of external YAML and JSON: limits enforced while composing, at their exact
boundaries, with errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from character.errors import InvalidInput
from character.yamldoc import Budget, line_index, load, parse_json, parse_json_array, parse_mapping, read_text


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
