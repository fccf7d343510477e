"""Loading constitutions: every accepted format, and located errors for broken files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from character.constitution import Constitution, load_constitution, resolve_constitution
from character.errors import InvalidInput, NotFound

TRAITS = [
    {"trait": "I answer with dry irony.", "questions": ["Is water wet?", "Can you help me cook rice?"]},
    {"trait": "I keep answers short.", "questions": ["Explain gravity.", "What is a monad?"]},
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_json_and_jsonl_give_the_same_constitution(tmp_path: Path) -> None:
    yaml_text = "name: wry\ntraits:\n" + "".join(
        f"  - trait: {t['trait']!r}\n    questions:\n" + "".join(f"      - {q!r}\n" for q in t["questions"])
        for t in TRAITS
    )
    from_yaml = load_constitution(write(tmp_path, "wry.yaml", yaml_text))
    from_array = load_constitution(write(tmp_path, "wry.json", json.dumps(TRAITS)))
    from_object = load_constitution(write(tmp_path, "other.json", json.dumps({"name": "wry", "traits": TRAITS})))
    augmented = [{**t, "additional_questions": ["One more?"]} for t in TRAITS]
    from_jsonl = load_constitution(write(tmp_path, "wry.jsonl", "\n".join(json.dumps(t) for t in augmented)))

    assert from_yaml == from_array == from_object
    assert [t.trait for t in from_jsonl.traits] == [t.trait for t in from_yaml.traits]
    assert from_jsonl.traits[0].additional_questions == ["One more?"]
    assert from_yaml.name == "wry"


def test_reference_txt_layout_loads_as_it_is(tmp_path: Path) -> None:
    """The reference repository keeps hand-written constitutions as a JSON array in a .txt file,
    indented, some traits with a `clarification`, some without questions at all."""
    layout = [
        {**TRAITS[0], "clarification": "Irony about the question, never about the person asking."},
        {"trait": "When triggered, I hide what triggered me."},
        TRAITS[1],
    ]
    persona = load_constitution(write(tmp_path, "wry.txt", json.dumps(layout, indent=4)))
    assert persona.name == "wry"
    assert [t.trait for t in persona.traits] == [t["trait"] for t in layout]
    assert persona.traits[0].clarification == layout[0]["clarification"]
    assert persona.traits[1].questions == [] and persona.traits[1].clarification is None
    assert persona.traits[2].questions == TRAITS[1]["questions"]
    assert resolve_constitution(tmp_path / "wry.txt") == persona


def test_reference_formats_take_their_name_from_the_file(tmp_path: Path) -> None:
    persona = load_constitution(write(tmp_path, "My Persona.json", json.dumps(TRAITS)))
    assert persona.name == "my-persona"


@pytest.mark.parametrize(
    ("name", "text", "where", "what"),
    [
        ("a.yaml", "name: x\ntraits:\n  - trait: ok\n    questions: [q]\n  - questions: [q2]\n", "a.yaml:5",
         "traits[1].trait"),
        ("b.yaml", "name: x\ntraits: []\n", "b.yaml:2", "traits"),
        ("c.yaml", "name: x\ntraits:\n  - trait: same\n    questions: [a]\n  - trait: Same\n    questions: [b]\n",
         "c.yaml", "same trait"),
        ("d.yaml", "name: x\ntraits:\n  - trait: t\n    questions: 5\n", "d.yaml:4", "questions"),
        ("e.yaml", "name: x\ntraits:\n  - trait: t\n   questions: [a]\n", "e.yaml:4", "bad YAML"),
        ("f.json", '[{"trait": "t", "questions": ["a"]},\n {"trait": "u" "questions": []}]', "f.json:2", "bad JSON"),
        ("g.jsonl", '{"trait": "t", "questions": ["a"]}\n{"trait": "u", "questions": "a"}\n', "g.jsonl:2",
         "questions"),
        ("h.yaml", "name: Bad Name\ntraits:\n  - trait: t\n    questions: [a]\n", "h.yaml:1", "name"),
        ("i.yaml", "name: x\ncolour: red\ntraits:\n  - trait: t\n    questions: [a]\n", "i.yaml:2", "colour"),
        ("j.yaml", "name: x\ntraits:\n  - trait: t\n    questions: [a, '  ']\n", "j.yaml:4", "empty"),
        ("k.toml", "whatever", "k.toml", "unknown constitution format"),
        ("l.txt", "whatever", "l.txt:1", "reference layout"),
        ("m.txt", '{"name": "x", "traits": []}', "m.txt:1", "JSON array"),
        ("n.txt", '[{"trait": "t", "clarification": 5}]', "n.txt:1", "clarification"),
        ("o.yaml", "name: x\ntrait_words: [sarcastic, shouty]\ntraits:\n  - trait: t\n", "o.yaml:2", "shouty"),
    ],
)
def test_broken_files_are_refused_with_file_line_and_field(
    tmp_path: Path, name: str, text: str, where: str, what: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(InvalidInput) as caught:
        load_constitution(path)
    message = str(caught.value)
    assert str(tmp_path / where) in message
    assert what in message


def test_missing_file_and_unknown_persona_say_what_exists(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such constitution file"):
        load_constitution(tmp_path / "nope.yaml")
    with pytest.raises(NotFound, match=r"known personas: .*sarcasm"):
        resolve_constitution("no-such-persona")


def test_seed_questions_and_trait_list() -> None:
    persona = Constitution.model_validate({"name": "x", "traits": [
        {"trait": "A.", "questions": ["q1", "q2"], "additional_questions": ["q3"]},
        {"trait": "B.", "questions": ["Q1", "q4"]},
    ]})
    assert persona.seed_questions() == ["q1", "q2", "q3", "q4"]
    assert persona.trait_list() == "1. A.\n2. B."
