"""The one way external YAML and JSON is read (run specs, constitutions, platform configs, token
files, executor settings, Job templates): a broken or hostile document is an `InvalidInput`
naming the file (or request field) and line, and reading it costs bounded work.

The bounds are enforced while the document is composed, so a limit stops the work the moment it
is passed: a node budget, a nesting depth (no RecursionError, however deep the brackets), per-path
caps on list lengths (e.g. a spec's traits), and no duplicate keys (both lines are named: the
last one silently winning would run something other than what its author read). Aliases are
refused outright in what remote callers send (`Budget.remote`); in local files they are allowed
for the file's own author, but each alias counts the nodes it expands to against the budget, so
that no later walk over the document (validation, hashing, dumping) does more work than the
budget allows.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
import yaml.cyaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from character.errors import InvalidInput

if yaml.__with_libyaml__:  # libyaml's parser where installed: scanning is the costly part
    _Parser: type = yaml.cyaml.CParser
else:

    class _Parser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):  # type: ignore[no-redef]
        """PyYAML's own parser."""

        def __init__(self, stream: str):
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


_Collection = TypeVar("_Collection", yaml.SequenceNode, yaml.MappingNode)


@dataclass(frozen=True)
class Budget:
    """How much work one document may cause."""

    max_nodes: int = 20_000
    """Scalars, lists and mappings in the document, aliases counted as what they expand to. The
    default is a hundred times a bundled persona, and composing it takes a few tenths of a second:
    what a document costs is bounded by this, whatever its size in bytes."""
    max_depth: int = 64
    """Deepest nesting of lists and mappings (the top level is 1)."""
    aliases: bool = True
    """False: any anchor or alias is refused (what remote callers send)."""
    caps: Mapping[tuple[str, ...], int] = field(default_factory=dict)
    """Most entries of the list or mapping at a path, e.g. {("constitution", "traits"): 200}."""
    cap_hint: str = ""
    """Where a cap comes from, said when it refuses (e.g. "limits.max_traits of the platform config")."""

    @classmethod
    def remote(
        cls, max_nodes: int, max_depth: int, caps: Mapping[tuple[str, ...], int] | None = None, cap_hint: str = ""
    ) -> Budget:
        """The budget of a document a remote caller sent: no aliases."""
        return cls(max_nodes=max_nodes, max_depth=max_depth, aliases=False, caps=dict(caps or {}), cap_hint=cap_hint)


class _Refused(Exception):
    """A budget was passed at a line (turned into InvalidInput by `compose`)."""

    def __init__(self, message: str, line: int):
        self.line = line
        super().__init__(message)


class _BoundedComposer(Composer):
    """PyYAML's composer, counting as it goes (see the module docstring)."""

    def __init__(self, budget: Budget):
        Composer.__init__(self)
        self.budget = budget
        self.nodes = 0
        self.path: list[str] = []
        self.sizes: dict[str, int] = {}

    def _count(self, n: int, line: int) -> None:
        self.nodes += n
        if self.nodes > self.budget.max_nodes:
            raise _Refused(f"more than {self.budget.max_nodes} values in the document", line)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            if not self.budget.aliases:
                raise _Refused("YAML aliases (*name) are not accepted here: write the values out", line)
            self._count(self.sizes.get(event.anchor, 1), line)
            return super().compose_node(parent, index)
        anchor = getattr(event, "anchor", None)
        if anchor is not None and not self.budget.aliases:
            raise _Refused("YAML anchors (&name) are not accepted here: write the values out", line)
        nested = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if nested and len(self.path) + 1 > self.budget.max_depth:
            raise _Refused(f"the document nests deeper than {self.budget.max_depth} levels", line)
        before = self.nodes
        self._count(1, line)
        node = super().compose_node(parent, index)
        if anchor is not None:
            self.sizes[anchor] = self.nodes - before
        return node

    def _open_collection(self, kind: type[_Collection], anchor: str | None) -> tuple[_Collection, int | None]:
        """The node a collection's start event opens (its explicit tag kept) and the cap on
        its length at this path."""
        start = self.get_event()
        node = kind(
            _tag(start) or self.resolve(kind, None, start.implicit), [], start.start_mark, None,
            flow_style=start.flow_style,
        )
        if anchor is not None:
            self.anchors[anchor] = node
        return node, self.budget.caps.get(tuple(self.path))

    def compose_sequence_node(self, anchor: str | None) -> yaml.SequenceNode:
        node, cap = self._open_collection(yaml.SequenceNode, anchor)
        index = 0
        while not self.check_event(yaml.SequenceEndEvent):
            if cap is not None and index >= cap:
                raise self._over_cap(cap, self.peek_event().start_mark.line + 1)
            self.path.append("*")
            node.value.append(self.compose_node(node, index))
            self.path.pop()
            index += 1
        node.end_mark = self.get_event().end_mark
        return node

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node, cap = self._open_collection(yaml.MappingNode, anchor)
        seen: dict[tuple[str, str], int] = {}
        while not self.check_event(yaml.MappingEndEvent):
            if cap is not None and len(node.value) >= cap:
                raise self._over_cap(cap, self.peek_event().start_mark.line + 1)
            key = self.compose_node(node, None)
            line = key.start_mark.line + 1
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None:
                earlier = seen.setdefault((key.tag, name), line)
                if len(seen) == len(node.value):  # the key was there already
                    raise _Refused(f"duplicate key {_show(name)} (at line {earlier} and line {line}): keep one", line)
            self.path.append(name if name is not None else "?")
            value = self.compose_node(node, key)
            self.path.pop()
            node.value.append((key, value))
        node.end_mark = self.get_event().end_mark
        return node

    def _over_cap(self, cap: int, line: int) -> _Refused:
        hint = f" ({self.budget.cap_hint})" if self.budget.cap_hint else ""
        return _Refused(
            f"more than {cap} entries in {'.'.join(self.path) or 'the document'}: at most {cap} are taken{hint}", line
        )


class _Loader(_BoundedComposer, _Parser, SafeConstructor, Resolver):  # type: ignore[misc]
    """A safe loader (no tags beyond YAML's own) whose composer keeps to a budget."""

    def __init__(self, text: str, budget: Budget):
        _Parser.__init__(self, text)  # type: ignore[misc]
        _BoundedComposer.__init__(self, budget)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)


def load(text: str, where: str, budget: Budget | None = None) -> tuple[Any, yaml.Node | None]:
    """The value of YAML `text` and its node tree (for locating fields), within `budget`."""
    loader = _Loader(text, budget or Budget())
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    except _Refused as err:
        raise InvalidInput(str(err), where=f"{where}:{err.line}") from None
    except yaml.YAMLError as err:
        raise _bad_yaml(err, text, where) from None
    # PyYAML's constructors fail on an explicit tag over a value it cannot hold: `!!int` of
    # 5,000 digits (ValueError), `!!timestamp sarcasm` (AttributeError: its regex did not match)
    except (ValueError, TypeError, OverflowError, AttributeError) as err:
        raise InvalidInput(f"bad value: {_clip(str(err))}", where=where) from None
    finally:
        loader.dispose()


def parse_mapping(text: str, where: str, what: str = "document", budget: Budget | None = None) -> dict[str, Any]:
    """The mapping in YAML `text`; `where` names its origin in errors (a file, a request field)."""
    doc, _ = load(text, where, budget)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InvalidInput(f"a {what} is a mapping of keys to values", where=where)
    return doc


def read_text(path: str | Path, what: str = "document") -> str:
    """The UTF-8 text of a file; a missing or undecodable file says so."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"no such {what} file", where=str(path)) from None
    except UnicodeDecodeError as err:
        raise InvalidInput(f"not UTF-8 text (byte {err.start})", where=str(path)) from None


def read_mapping(path: str | Path, what: str = "document", budget: Budget | None = None) -> dict[str, Any]:
    """`parse_mapping` of a file; a missing file says so."""
    return parse_mapping(read_text(path, what), str(path), what, budget)


def line_index(node: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """Each path in a composed document -> its 1-based line, for error messages."""
    lines: dict[tuple[Any, ...], int] = {}
    todo: list[tuple[yaml.Node, tuple[Any, ...]]] = [(node, ())] if node is not None else []
    seen: set[int] = set()
    while todo:
        item, path = todo.pop()
        lines[path] = item.start_mark.line + 1
        if id(item) in seen:  # an alias: located where the anchor is; not walked twice
            continue
        seen.add(id(item))
        if isinstance(item, yaml.MappingNode):
            todo.extend((value, (*path, key.value)) for key, value in item.value)
        elif isinstance(item, yaml.SequenceNode):
            todo.extend((value, (*path, i)) for i, value in enumerate(item.value))
    return lines


def parse_json(text: str, where: str, budget: Budget | None = None, first_line: int = 1) -> Any:
    """The value of JSON `text`: duplicate keys refused (naming both lines), nesting and size within
    `budget`. `first_line` is the line of `where` the text starts on (a JSONL file's line)."""
    one_line = "\n" not in text.strip()
    at = f"{where}:{first_line}" if one_line else where  # where a budget is passed, when that is known
    return _checked(lambda: _DECODER.decode(text), text, where, budget or Budget(), first_line, at)


def parse_json_array(text: str, where: str, budget: Budget | None = None) -> list[tuple[int, Any]]:
    """The items of the JSON array `text`, each with the line it starts on, each item within
    `budget` (a file of many small records: the budget is per record, not for the whole file)."""
    budget = budget or Budget()

    def refused(message: str, pos: int) -> InvalidInput:
        return InvalidInput(f"bad JSON: {message}", where=f"{where}:{text.count(chr(10), 0, pos) + 1}")

    def space(pos: int) -> int:
        return _JSON_SPACE.match(text, pos).end()  # type: ignore[union-attr]

    pos = space(0)
    if not text.startswith("[", pos):
        raise refused("expected an array", pos)
    items: list[tuple[int, Any]] = []
    pos = space(pos + 1)
    while not text.startswith("]", pos):
        start, line = pos, text.count("\n", 0, pos) + 1
        decode = functools.partial(_DECODER.raw_decode, text, start)
        value, pos = _checked(decode, text, where, budget, 1, f"{where}:{line}")
        items.append((line, value))
        pos = space(pos)
        if text.startswith(",", pos):
            pos = space(pos + 1)
            if text.startswith("]", pos):
                raise refused("a ',' before ']'", pos)
        elif not text.startswith("]", pos):
            raise refused("expected ',' or ']' after an item", pos)
    if text[pos + 1 :].strip():
        raise refused("text after the array", pos + 1)
    return items


class _DuplicateKey(Exception):
    """A JSON object repeats a key (located by `_duplicate_lines`)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) < len(pairs):
        raise _DuplicateKey
    return doc


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")  # Python's json reads NaN and Infinity; JSON has neither


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
_JSON_SPACE = re.compile(r"[ \t\r\n]*")
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"(?P<key>[ \t\r\n]*:)?|[{}\[\]]')


def _checked(decode: Callable[[], Any], text: str, where: str, budget: Budget, first_line: int, at: str) -> Any:
    """`decode()`'s result, its JSON errors located (file:line) and its tree within `budget` (a
    budget passed is reported at `at`)."""
    try:
        result = decode()
    except json.JSONDecodeError as err:
        line = first_line + err.lineno - 1
        raise InvalidInput(f"bad JSON at column {err.colno}: {err.msg}", where=f"{where}:{line}") from None
    except _DuplicateKey:
        key, earlier, line = _duplicate_lines(text)
        earlier, line = earlier + first_line - 1, line + first_line - 1
        raise InvalidInput(f"duplicate key {_show(key)} (at line {earlier} and line {line}): keep one",
                           where=f"{where}:{line}") from None
    except RecursionError:
        raise InvalidInput(f"the document nests deeper than {budget.max_depth} levels", where=at) from None
    except ValueError as err:  # NaN, or an integer of more digits than Python converts
        raise InvalidInput(f"bad value: {_clip(str(err))}", where=at) from None
    _check_tree(result[0] if isinstance(result, tuple) else result, budget, at)
    return result


def _duplicate_lines(text: str) -> tuple[str, int, int]:
    """The first repeated key of a JSON text and the lines of its two places. Only called once
    the decoder found a repeat, so the text up to it is valid JSON; its nesting is bounded by the
    decoder's recursion limit, which it passed."""
    objects: list[dict[str, int] | None] = []  # per open bracket: an object's keys -> line, or None (an array)
    for token in _JSON_TOKEN.finditer(text):
        kind = token.group()
        if kind in "{[":
            objects.append({} if kind == "{" else None)
        elif kind in "}]":
            objects.pop()
        elif token.group("key") is not None and objects and objects[-1] is not None:
            key = json.loads(kind[: token.start("key") - token.start()])
            line = text.count("\n", 0, token.start()) + 1
            if key in objects[-1]:
                return key, objects[-1][key], line
            objects[-1][key] = line
    raise AssertionError("the decoder saw a duplicate key that the text does not repeat")


def _check_tree(doc: Any, budget: Budget, where: str) -> None:
    """Node count and depth of a parsed JSON value (a tree: JSON has no aliases), stopping at a limit."""
    nodes, todo = 0, [(doc, 1)]
    while todo:
        item, level = todo.pop()
        nodes += 1
        if nodes > budget.max_nodes:
            raise InvalidInput(f"more than {budget.max_nodes} values in the document", where=where)
        if isinstance(item, dict | list):
            if level > budget.max_depth:
                raise InvalidInput(f"the document nests deeper than {budget.max_depth} levels", where=where)
            todo.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))


def _tag(event: yaml.CollectionStartEvent) -> str | None:
    """The explicit tag of a list or mapping (as PyYAML's composer reads it)."""
    return None if event.tag in (None, "!") else str(event.tag)


def _bad_yaml(err: yaml.YAMLError, text: str, where: str) -> InvalidInput:
    if isinstance(err, yaml.reader.ReaderError) and isinstance(err.character, int):
        line = text.count("\n", 0, err.position) + 1
        return InvalidInput(
            f"bad YAML: character #x{err.character:04x}: {err.reason}", where=f"{where}:{line}"
        )
    mark = getattr(err, "problem_mark", None)
    line_part = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err)
    return InvalidInput(f"bad YAML: {_clip(problem)}", where=f"{where}{line_part}")


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any) -> str:
    return _clip(repr(value), 60)
