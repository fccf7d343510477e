"""The report renders every section, with plots next to the HTML and relative links."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

from character.report import SECTIONS, write_report
from character.report.results import read_results
from character.stats import Validity

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
    assert read_results((index.parent / "results.json").read_text()) == data
    assert "5.4%" in html  # the judge's parse-failure rate (46 / 846)
    assert "Demo scale" in html and "Bradley-Terry" in html


def test_parts_that_did_not_run_say_so(tmp_path: Path) -> None:
    data = results(scale="full")
    for part in ("preferences", "robustness", "coherence", "capabilities"):
        setattr(data, part, None)
    data.headline = {}
    html = write_report(data, tmp_path).read_text()
    assert html.count("Not run.") == 4
    assert re.findall(r"<h2[^>]*>(.*?)</h2>", html) == list(SECTIONS)
    assert "Demo scale" not in html


def test_text_from_models_is_escaped(tmp_path: Path) -> None:
    data = results()
    assert data.preferences
    data.preferences.models["base"].examples[0].answer = "<script>alert(1)</script>"
    html = write_report(data, tmp_path).read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_demo_figures_are_marked_underpowered_and_powered_ones_carry_their_verdict(tmp_path: Path) -> None:
    demo = results(scale="demo")  # 8 held-out units per figure
    assert demo.evidence and all(e.underpowered for e in demo.evidence.values())
    html = write_report(demo, tmp_path / "demo").read_text()
    rows = re.findall(r'<tr class="underpowered">', html)
    assert len(rows) >= len(demo.evidence)
    assert "underpowered (n = 8 &lt; 20)" in html
    assert all("underpowered" in line for line in demo.summary)

    proof = results(scale="proof")  # 40 held-out units per figure
    assert not any(e.underpowered for e in proof.evidence.values())
    html = write_report(proof, tmp_path / "proof").read_text()
    assert "Proof scale" in html
    held_out = proof.evidence["training_dpo"]
    assert held_out.test == "McNemar exact test" and held_out.n == 40
    assert held_out.distinguishable and "distinguishable from no change" in html
    assert held_out.sentence() in unescape(html)


def test_a_distill_data_quality_warning_is_in_the_reports_first_lines(tmp_path: Path) -> None:
    from character.stages.distill import INDISTINGUISHABLE

    data = results()
    assert "data-quality-warning" not in write_report(data, tmp_path / "none").read_text()
    data.training.data_quality_warning = f"{INDISTINGUISHABLE} (held-out classifier accuracy 0.53)"
    html = write_report(data, tmp_path / "warned").read_text()
    top = html[: html.index('<h2 id="summary">')]
    assert data.training.data_quality_warning in unescape(top)


def _side_by_side_section(html: str) -> str:
    return html.split('<h2 id="side-by-side">', 1)[1].split("<h2", 1)[0]


def test_the_side_by_side_section_shows_every_method_per_prompt_folded_and_escaped(tmp_path: Path) -> None:
    from tests.unit.evaluate.synthetic import LONG_ANSWER

    data = results()
    section = _side_by_side_section(write_report(data, tmp_path).read_text())
    shown = data.side_by_side
    assert shown
    headers = re.findall(r"<th>(.*?)</th>", section)
    assert headers == ["prompt (traits offered)", "base model", "system prompt", "activation steering", "full pipeline"]
    assert section.count("<tr><td>") == len(shown.rows)
    for row in shown.rows:
        assert row.prompt in section
    assert "<script>" not in section and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in section
    folded = re.findall(r"<details><summary>(.*?)</summary>(.*?)</details>", section, re.S)
    assert len(folded) == 1 and unescape(folded[0][1]) == LONG_ANSWER and len(folded[0][0]) < len(LONG_ANSWER)
    verdicts = [a.verdict for row in shown.rows for a in row.answers.values()]
    assert section.count("own: ") == sum(v in shown.own_traits for v in verdicts)
    assert section.count("contrast: ") == sum(v is not None and v not in shown.own_traits for v in verdicts)
    assert section.count("no verdict") == verdicts.count(None) == 1


def test_side_by_side_verdicts_of_an_invalid_judge_are_not_shown(tmp_path: Path) -> None:
    data = results()
    assert data.side_by_side
    data.side_by_side.validity = Validity(valid=False, reason="calibration accuracy 0.42: at chance")
    section = _side_by_side_section(write_report(data, tmp_path).read_text())
    assert "instrument not valid: calibration accuracy 0.42: at chance" in section
    assert "own: " not in section and "contrast: " not in section
    cells = sum(len(row.answers) for row in data.side_by_side.rows)
    assert section.count("judge not valid") == cells
