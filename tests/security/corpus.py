"""The classic attacks on a document parser, as the YAML text a remote caller would send (each
within the size limit): the seed corpus of the parser fuzzer and the hostile submissions of the
load test. Each is one kind of work an input can cause when nothing bounds it."""

from __future__ import annotations

import itertools


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """`a: &a [lol x9]`, `b: &b [*a x9]`, ...: 9^9 = 387 M nodes once expanded, in 9 lines."""
    names = "abcdefghijklmnopqrstuvwxyz"[:levels]
    lines = [f"{names[0]}: &{names[0]} [" + ", ".join(['"lol"'] * width) + "]"]
    pairs = itertools.pairwise(names)
    lines += [f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * width) + "]" for prev, cur in pairs]
    return "\n".join(lines) + "\nconstitution: sarcasm\n"


def billion_laughs() -> str:
    """The XML classic in YAML's merge keys: each level merges the one below ten times."""
    lines = ['l0: &l0 {lol: "lol"}']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\nconstitution: sarcasm\n"


def many_traits(count: int = 20_000) -> str:
    """An inline constitution of `count` traits (~850 KB at 20,000; the limit is 200)."""
    traits = "".join(f"  - trait: t{i} x\n    questions: [q{i}]\n" for i in range(count))
    return "constitution:\n  name: x\n  description: d\n  traits:\n" + traits


def deep_flow(depth: int = 5_000) -> str:
    """Flow nesting `[[[...]]]` `depth` levels deep (the parser recursed per level)."""
    return "constitution: " + "[" * depth + "]" * depth + "\n"


def deep_block(depth: int = 200) -> str:
    """Block mappings nested `depth` levels deep."""
    return "constitution:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, depth)) + "  " * depth + "x\n"


ATTACKS: dict[str, str] = {
    "alias bomb (9 lines, 9^9 nodes)": alias_bomb(),
    "billion laughs": billion_laughs(),
    "20,000 inline traits": many_traits(),
    "5,000-deep flow nesting": deep_flow(),
    "200-deep block nesting": deep_block(),
    "duplicate seed": "constitution: sarcasm\nseed: 1\nmodel: tiny\nseed: 2\n",
    "duplicate stage knob": "constitution: sarcasm\nstages: {dpo: {lr: 5.0e-5, lr: 1}}\n",
    "NUL byte": "constitution: sarcasm\nseed: 1\x00\n",
    "!!python/object tag": "constitution: !!python/object/apply:os.system ['true']\n",
    "NaN knob": "constitution: sarcasm\nstages: {dpo: {lr: .nan}}\n",
    "anchor on a scalar": "constitution: &c sarcasm\nmodel: tiny\n",
    "200,000 flow values": "constitution: sarcasm\nx: [" + ",".join(["1"] * 200_000) + "]\n",
    "a 1 MB scalar": "constitution: sarcasm\nx: " + "a" * 1_000_000 + "\n",
    "!!int of 5,000 digits": "constitution: sarcasm\nseed: !!int " + "9" * 5_000 + "\n",
}
"""Name -> spec text; every one must be refused with InvalidInput."""


JSON_ATTACKS: dict[str, str] = {
    "100,000-deep JSON nesting": '{"prompt": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "200,000 JSON values": '{"prompt": "a", "x": [' + ",".join(["1"] * 200_000) + "]}",
    "duplicate JSON key": '{"prompt": "a", "id": "x", "prompt": "b"}',
    "a 1 MB JSON string": '{"prompt": "' + "\\u00e9" * 170_000 + '"}',
    "JSON NaN and a 5,000-digit number": '{"prompt": "a", "x": [NaN, ' + "9" * 5_000 + "]}",
}
"""Name -> one JSON record (a chat prompt row), for the readers of JSON and JSONL files."""
