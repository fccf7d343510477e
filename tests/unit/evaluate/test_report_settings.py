"""The report states the eval settings the stage recorded (never defaults of its own), reads
results.json of every layout version it knows, and shows a judge-based figure whose instrument
failed its calibration as "instrument not valid", not as a result."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import pytest
from character.errors import InvalidInput
from character.report import SCHEMA_VERSION, SECTIONS, write_report
from character.stages.evaluate.orchestrate import collect_evidence, summary

from tests.unit.evaluate.synthetic import results

OLD_LAYOUT = Path(__file__).parent / "fixtures" / "results_v0.json"
"""results.json as the eval stage wrote it before `schema_version` existed (the tiny model at
test_stage's minimal preset, written by that code)."""


def text(index: Path) -> str:
    """The page's visible text, whitespace collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", index.read_text())).split())


@pytest.mark.parametrize(
    ("setting", "value", "sentence"),
    [
        ("min_comparisons", 7, "fewer than 7 comparisons"),
        ("min_n", 33, "fewer than 33 units"),
        ("steering_layer_share", 0.5, "middle 50% of the decoder layers"),
        ("classifier", "finetune", "fine-tuned with a classification head"),
        ("judge_debias", False, "asked in one order (judge_debias off)"),
        ("bootstrap_samples", 77, "(77 resamples)"),
    ],
)
def test_the_report_states_the_setting_the_stage_recorded(
    tmp_path: Path, setting: str, value: object, sentence: str
) -> None:
    data = results()
    assert sentence not in text(write_report(data, tmp_path / "before"))
    data["config"][setting] = value
    assert sentence in text(write_report(data, tmp_path / "after"))


def test_results_without_a_setting_the_report_states_are_refused_by_name(tmp_path: Path) -> None:
    data = results()
    del data["config"]["steering_layer_share"]
    with pytest.raises(InvalidInput, match="steering_layer_share"):
        write_report(data, tmp_path)


def test_a_newer_layout_is_refused_with_its_version(tmp_path: Path) -> None:
    data = results()
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(InvalidInput, match=f"schema_version {SCHEMA_VERSION + 1}"):
        write_report(data, tmp_path)


def test_results_written_before_schema_version_still_render(tmp_path: Path) -> None:
    old = json.loads(OLD_LAYOUT.read_text())
    assert "schema_version" not in old
    index = write_report(old, tmp_path)
    html = index.read_text()
    assert re.findall(r"<h2[^>]*>(.*?)</h2>", html) == list(SECTIONS)
    assert html.count("Not run.") == 0
    assert f"coefficient {old['config']['steering_coefficient']}" in text(index)
    assert json.loads((index.parent / "results.json").read_text()) == old  # stored as it was


def test_a_figure_whose_instrument_is_not_valid_is_not_shown_as_a_result(tmp_path: Path) -> None:
    data = results(scale="proof")
    first, second = data["coherence"]["comparisons"]
    shown = text(write_report(data, tmp_path / "valid"))
    assert "instrument not valid" not in shown and "80.0%" in shown  # vs system prompt: 24 of 30
    # as calibration.mark_judged marks them: the comparison and its evidence
    invalid_judge = {"valid": False, "reason": "judge accuracy 0.52 on the calibration set"}
    first["validity"] = first["evidence"]["validity"] = invalid_judge
    second["validity"] = second["evidence"]["validity"] = {"valid": True, "reason": ""}
    data["preferences"]["validity"] = {"valid": False, "reason": "judge below chance"}
    data["evidence"] = collect_evidence(data)  # as the stage builds them, from the parts
    data["summary"] = summary(data["evidence"])
    index = write_report(data, tmp_path / "invalid")
    shown = text(index)
    assert "preferences_ratings.png" not in index.read_text()  # nor are the ratings plotted
    assert "instrument not valid: judge accuracy 0.52 on the calibration set" in shown
    assert "80.0%" not in shown  # the invalid win rate is not shown
    assert "55.0%" in shown  # the valid comparison still is
    assert "Trait ratings: instrument not valid: judge below chance" in shown
    invalid = data["evidence"]["coherence_vs_system_prompt"]
    assert invalid["sentence"] not in shown  # neither in the summary table nor in its sentences
    assert f"{invalid['figure']}: instrument not valid (judge accuracy 0.52 on the calibration set)." in shown
    assert data["evidence"]["coherence_vs_steering"]["sentence"] in shown
