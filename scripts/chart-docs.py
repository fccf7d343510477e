#!/usr/bin/env python3
"""Generate charts/character/README.md from README.in.md and the `# --` comments of values.yaml.

The helm-docs convention (helm-docs itself is a Go binary and no package registry here carries
it): a comment block that starts with `# --` right above a key documents that key; following
`#` lines continue it. Each documented key becomes a row (key, type, default, description) of
the table that replaces the `<!-- values -->` line of README.in.md. A documented mapping is one
row; its children are not listed separately.

  scripts/chart-docs.py           write the README
  scripts/chart-docs.py --check   exit 1 when the README differs from what would be written
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "character"
MARKER = "<!-- values -->"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")
_DOC_START = re.compile(r"^ *# -- ?(?P<text>.*)$")
_DOC_MORE = re.compile(r"^ *# ?(?P<text>.*)$")


@dataclass(frozen=True)
class Row:
    key: str
    value: Any
    description: str


class ValuesDocError(Exception):
    """values.yaml has a `# --` comment that documents nothing, or a key path it cannot resolve."""


def _lookup(values: Any, path: list[str]) -> tuple[bool, Any]:
    for part in path:
        if not isinstance(values, dict) or part not in values:
            return False, None
        values = values[part]
    return True, values


def documented(text: str, where: str = "values.yaml") -> list[Row]:
    """The documented keys of a values file, in file order."""
    values = yaml.safe_load(text) or {}
    rows: list[Row] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    doc: list[str] | None = None
    doc_line = 0
    covered: list[str] = []  # documented mappings: their children are not rows
    for number, line in enumerate(text.splitlines(), start=1):
        if (m := _DOC_START.match(line)) is not None:
            doc, doc_line = [m["text"].strip()], number
            continue
        if doc is not None and line.strip().startswith("#") and (m := _DOC_MORE.match(line)):
            doc.append(m["text"].strip())
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            if doc is not None and not line.strip():
                raise ValuesDocError(f"{where}:{doc_line}: a `# --` comment followed by a blank line documents nothing")
            continue
        m = _KEY.match(line)
        if m is None:  # a list item or a continuation: not a key of a mapping
            if doc is not None:
                raise ValuesDocError(f"{where}:{doc_line}: a `# --` comment must sit right above a key")
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [m["key"]]
        stack.append((indent, m["key"]))
        found, value = _lookup(values, path)
        if doc is not None:
            if not found:
                raise ValuesDocError(f"{where}:{doc_line}: cannot place `{'.'.join(path)}` in the values")
            key = ".".join(path)
            if not any(key.startswith(c + ".") for c in covered):
                rows.append(Row(key, value, " ".join(t for t in doc if t)))
                if isinstance(value, dict) and value:
                    covered.append(key)
            doc = None
    return rows


def _type(value: Any) -> str:
    kinds = ((bool, "bool"), (int, "int"), (float, "float"), (str, "string"), (list, "list"), (dict, "object"))
    for kind, name in kinds:
        if isinstance(value, kind):
            return name
    return "null"


def _cell(text: str) -> str:
    """Table-safe text: `<release>` outside code spans would be read as an HTML tag."""
    parts = text.replace("\n", " ").split("`")
    parts[::2] = [html.escape(p, quote=False) for p in parts[::2]]
    return "`".join(parts).replace("|", "\\|")


def table(rows: list[Row]) -> str:
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for row in rows:
        default = json.dumps(row.value, separators=(",", ":"), ensure_ascii=False)
        code = html.escape(default, quote=False).replace("|", "\\|")
        lines.append(f"| {row.key} | {_type(row.value)} | <code>{code}</code> | {_cell(row.description)} |")
    return "\n".join(lines) + "\n"


def render(chart: Path = CHART) -> str:
    try:
        template = (chart / "README.in.md").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValuesDocError(f"{chart / 'README.in.md'}: missing (the README's hand-written part)") from None
    if template.count(MARKER) != 1:
        raise ValuesDocError(f"{chart / 'README.in.md'}: needs the line {MARKER} exactly once")
    values = chart / "values.yaml"
    generated = table(documented(values.read_text(encoding="utf-8"), str(values)))
    header = "<!-- Generated by scripts/chart-docs.py from README.in.md and values.yaml: edit those. -->\n"
    return header + template.replace(MARKER + "\n", generated).replace(MARKER, generated)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the README is stale")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args()
    try:
        text = render(args.chart)
    except ValuesDocError as err:
        print(f"chart-docs: {err}", file=sys.stderr)
        return 2
    readme = args.chart / "README.md"
    if args.check:
        if not readme.exists() or readme.read_text(encoding="utf-8") != text:
            print(f"chart-docs: {readme} is stale: run scripts/chart-docs.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(text, encoding="utf-8")
    print(f"wrote {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
