"""The report renders every section, with plots next to the HTML and relative links."""

from __future__ import annotations

import json
import re
from pathlib import Path

from character.report import SECTIONS, write_report

from tests.unit.evaluate.synthetic import results


def test_report_has_every_section_and_self_contained_plots(tmp_path: Path) -> None:
    data = results()
    index = write_report(data, tmp_path / "report")
    html = index.read_text()
    headings = re.findall(r"<h2[^>]*>(.*?)</h2>", html)
    assert headings == list(SECTIONS)
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == 7
    for src in images:
        assert "/" not in src and (index.parent / src).stat().st_size > 1000  # relative, real PNGs
        assert (index.parent / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((index.parent / "results.json").read_text()) == json.loads(json.dumps(data))
    assert "5.4%" in html  # the judge's parse-failure rate (46 / 846)
    assert "Demo scale" in html and "Bradley-Terry" in html


def test_parts_that_did_not_run_say_so(tmp_path: Path) -> None:
    data = results(scale="full")
    for part in ("preferences", "robustness", "coherence", "capabilities"):
        del data[part]
    data["headline"] = {}
    html = write_report(data, tmp_path).read_text()
    assert html.count("Not run.") == 4
    assert re.findall(r"<h2[^>]*>(.*?)</h2>", html) == list(SECTIONS)
    assert "Demo scale" not in html


def test_text_from_models_is_escaped(tmp_path: Path) -> None:
    data = results()
    data["preferences"]["models"]["base"]["examples"][0]["answer"] = "<script>alert(1)</script>"
    html = write_report(data, tmp_path).read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
