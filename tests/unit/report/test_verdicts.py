"""Verdicts side by side (report/verdicts.py, `oct compare`): every tested figure and every
judge calibration is found by its path, and a changed yes/no, a changed validity or a figure
only one document has is reported as not the same."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from character.cli.main import app
from character.report import verdicts
from typer.testing import CliRunner


def _figure(name: str, value: float, p: float) -> dict[str, Any]:
    return {"figure": name, "value": value, "n": 40, "ci_low": value - 0.1, "ci_high": value + 0.1,
            "p_value": p, "distinguishable": p < 0.05, "verdict": "..."}


def _calibration(judge: str, accuracy: float, valid: bool) -> dict[str, Any]:
    return {"judge": judge, "n": 36, "accuracy": accuracy, "ci_low": accuracy - 0.15,
            "ci_high": accuracy + 0.1, "p_value": 0.01, "valid": valid}


RESULTS: dict[str, Any] = {
    "training": {"evidence": {"dpo_correct": _figure("held-out gain", 0.24, 1e-6)},
                 "preference_accuracy": {"before": 0.37, "after_dpo": 0.61}},
    "robustness": {"methods": {"full": {"evidence": {"none": _figure("macro-F1", 0.7, 0.001)}},
                               "steering": {"evidence": {"none": _figure("macro-F1", 0.55, 0.3)}}}},
    "capabilities": {"tasks": [{"name": "mc", "evidence": _figure("mc accuracy", -0.1, 0.2)}]},
    "judge_calibration": _calibration("channel", 0.86, True),
    "judge_candidates": [_calibration("channel", 0.86, True), _calibration("smollm2", 0.42, False)],
    "coherence_judge_calibration": _calibration("smollm2", 0.42, False),
}
PATHS = {"training/evidence/dpo_correct", "robustness/methods/full/evidence/none",
         "robustness/methods/steering/evidence/none", "capabilities/tasks/0/evidence", "judge_calibration",
         "coherence_judge_calibration", "judge_candidates/channel", "judge_candidates/smollm2"}


def test_figures_are_every_tested_entry_and_calibration_by_path() -> None:
    found = verdicts.figures(RESULTS)
    assert set(found) == PATHS  # untested numbers (preference_accuracy) are not figures
    assert found["capabilities/tasks/0/evidence"]["figure"] == "mc accuracy"


def test_a_document_agrees_with_itself_and_moved_values_keep_their_verdicts() -> None:
    moved = copy.deepcopy(RESULTS)
    moved["training"]["evidence"]["dpo_correct"] |= {"value": 0.19, "p_value": 3e-4}
    rows = verdicts.compare(RESULTS, moved)
    assert {r.path for r in rows} == PATHS and all(r.same for r in rows)
    assert verdicts.summary(rows) == f"{len(PATHS)} of {len(PATHS)} verdicts the same"


def test_a_flipped_verdict_a_lost_validity_and_a_missing_figure_are_named() -> None:
    other = copy.deepcopy(RESULTS)
    other["robustness"]["methods"]["steering"]["evidence"]["none"] = _figure("macro-F1", 0.64, 0.02)
    other["judge_calibration"] = _calibration("channel", 0.66, False)
    del other["capabilities"]
    rows = {r.path: r for r in verdicts.compare(RESULTS, other)}
    changed = {"robustness/methods/steering/evidence/none", "judge_calibration", "capabilities/tasks/0/evidence"}
    assert {p for p, r in rows.items() if not r.same} == changed
    assert verdicts.cell(rows["capabilities/tasks/0/evidence"].b) == "absent"
    table = verdicts.markdown(list(rows.values()), "fp32", "bf16")
    assert table.count("**NO**") == 3
    assert "0.64 [0.54, 0.74], n = 40, p = 0.020: yes" in table
    assert "0.66 [0.51, 0.76], n = 36: not valid" in table


def test_compare_exits_1_on_a_changed_verdict_and_0_when_all_agree(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(RESULTS))
    b.write_text(json.dumps(RESULTS))
    same = CliRunner().invoke(app, ["compare", str(a), str(b)])
    assert same.exit_code == 0, same.output
    assert f"{len(PATHS)} of {len(PATHS)} verdicts the same" in same.output
    other = copy.deepcopy(RESULTS)
    other["training"]["evidence"]["dpo_correct"] = _figure("held-out gain", 0.05, 0.4)
    b.write_text(json.dumps(other))
    changed = CliRunner().invoke(app, ["compare", str(a), str(b), "--markdown"])
    assert changed.exit_code == 1
    assert "training/evidence/dpo_correct" in changed.output.splitlines()[-1]


def test_compare_names_the_file_and_line_of_a_broken_document(tmp_path: Path) -> None:
    from character.errors import InvalidInput

    good, bad = tmp_path / "a.json", tmp_path / "b.json"
    good.write_text(json.dumps(RESULTS))
    bad.write_text('{\n  "training": ,\n}')
    out = CliRunner().invoke(app, ["compare", str(good), str(bad)])
    assert isinstance(out.exception, InvalidInput)
    assert f"{bad}:2" in str(out.exception)
    bad.write_text("[1, 2]")
    out = CliRunner().invoke(app, ["compare", str(good), str(bad)])
    assert isinstance(out.exception, InvalidInput) and "a JSON object" in str(out.exception)
