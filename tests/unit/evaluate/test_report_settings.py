"""The report states the eval settings the stage recorded (never defaults of its own), reads
results.json of every layout version it knows, refuses a malformed one by file and field, and
shows a judge-based figure whose instrument failed its calibration as "instrument not valid",
not as a result."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import pytest
from character.errors import InvalidInput
from character.report import SECTIONS, write_report
from character.report.results import SCHEMA_VERSION, EvaluationResults, parse_results, read_results
from character.stages.evaluate.calibration import mark_judged
from character.stages.evaluate.orchestrate import collect_evidence, load_results, summary
from character.stats import Validity

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
    setattr(data.config, setting, value)
    assert sentence in text(write_report(data, tmp_path / "after"))


def test_results_round_trip_through_results_json() -> None:
    for scale in ("demo", "proof"):
        data = results(scale)
        assert read_results(data.to_json()) == data
        assert json.loads(read_results(data.to_json()).to_json()) == json.loads(data.to_json())


def test_a_bad_stored_results_json_is_refused_naming_the_store_file_and_field(tmp_path: Path) -> None:
    from character.stages.evaluate.orchestrate import RECORD_PREFIX, RESULTS_FILE
    from character.store import open_store

    store = open_store(str(tmp_path / "store"))
    doc = json.loads(results().to_json())
    doc["seed"] = "123456 or so"
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / RESULTS_FILE).write_text(json.dumps(doc))
    store.put_dir("eval", "eval-key", folder)
    store.put_record(f"{RECORD_PREFIX}run-1", {"eval": "eval-key"})
    with pytest.raises(InvalidInput, match="seed: Input should be a valid integer") as err:
        load_results(store, "run-1")
    assert err.value.where == f"{store.uri} eval/eval-key/{RESULTS_FILE}"


def test_results_without_a_setting_the_report_states_are_refused_by_name() -> None:
    doc = json.loads(results().to_json())
    del doc["config"]["steering_layer_share"]
    with pytest.raises(InvalidInput, match=r"results\.json: config\.steering_layer_share: Field required"):
        parse_results(doc)


def test_a_field_of_the_wrong_type_is_refused_by_file_and_field() -> None:
    doc = json.loads(results().to_json())
    doc["robustness"]["methods"]["full"]["macro_f1"]["none"] = "high"
    doc["coherence"]["comparisons"][1]["evidence"]["n"] = [40]
    with pytest.raises(InvalidInput) as err:
        parse_results(doc, where="store/eval/k/results.json")
    assert err.value.where == "store/eval/k/results.json"
    assert "robustness.methods.full.macro_f1.none: Input should be a valid number" in str(err.value)
    assert "coherence.comparisons.1.evidence.n: Input should be a valid integer" in str(err.value)
    with pytest.raises(InvalidInput, match=r"results.json:1: bad JSON"):
        read_results('{"run": ')


def test_a_newer_layout_is_refused_with_its_version() -> None:
    doc = json.loads(results().to_json())
    doc["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(InvalidInput, match=f"schema_version {SCHEMA_VERSION + 1}"):
        parse_results(doc)


def test_results_written_before_schema_version_still_render(tmp_path: Path) -> None:
    old = json.loads(OLD_LAYOUT.read_text())
    assert "schema_version" not in old
    index = write_report(parse_results(old), tmp_path)
    html = index.read_text()
    assert re.findall(r"<h2[^>]*>(.*?)</h2>", html) == list(SECTIONS)
    assert html.count("Not run.") == 0
    assert f"coefficient {old['config']['steering_coefficient']}" in text(index)
    assert json.loads((index.parent / "results.json").read_text()) == old  # stored as it was


def test_a_figure_whose_instrument_is_not_valid_is_not_shown_as_a_result(tmp_path: Path) -> None:
    data = results(scale="proof")
    assert data.coherence and data.preferences
    first, second = data.coherence.comparisons
    shown = text(write_report(data, tmp_path / "valid"))
    assert "instrument not valid" not in shown and "80.0%" in shown  # vs system prompt: 24 of 30
    as_valid = first.evidence.sentence()
    # as calibration.mark_judged marks them: the comparison and its evidence
    invalid_judge = Validity(valid=False, reason="judge accuracy 0.52 on the calibration set")
    first.validity, first.evidence = invalid_judge, first.evidence.model_copy(update={"validity": invalid_judge})
    valid_judge = Validity(valid=True, reason="")
    second.validity, second.evidence = valid_judge, second.evidence.model_copy(update={"validity": valid_judge})
    data.preferences.validity = Validity(valid=False, reason="judge below chance")
    data.evidence = collect_evidence(data)  # as the stage builds them, from the parts
    data.summary = summary(data.evidence)
    index = write_report(data, tmp_path / "invalid")
    shown = text(index)
    assert "preferences_ratings.png" not in index.read_text()  # nor are the ratings plotted
    assert "instrument not valid: judge accuracy 0.52 on the calibration set" in shown
    assert "80.0%" not in shown  # the invalid win rate is not shown
    assert "55.0%" in shown  # the valid comparison still is
    assert "Trait ratings: instrument not valid: judge below chance" in shown
    invalid = data.evidence["coherence_vs_system_prompt"]
    assert as_valid not in shown  # neither in the summary table nor in its sentences
    assert f"{invalid.figure}: instrument not valid (judge accuracy 0.52 on the calibration set)." in shown
    assert data.evidence["coherence_vs_steering"].sentence() in shown
    stored = read_results((index.parent / "results.json").read_text())  # the mark survives results.json
    assert stored.evidence["coherence_vs_system_prompt"].sentence() == invalid.sentence()


def test_mark_judged_marks_every_figure_of_an_invalid_judge_in_the_one_wording(tmp_path: Path) -> None:
    data = results(scale="proof")
    doc = json.loads(data.to_json())
    doc["judge_calibration"] = {"judge": "smollm2", "set_digest": "d", "n": 24, "accuracy": 0.42, "ci_low": 0.22,
                                "ci_high": 0.63, "p_value": 0.54, "position_bias": 0.5, "valid": False,
                                "reason": "calibration accuracy 0.42 [0.22, 0.63], n = 24: not distinguishable"}
    judged = parse_results(doc)
    mark_judged(judged)
    judged.evidence = collect_evidence(judged)
    judged.summary = summary(judged.evidence)
    reason = doc["judge_calibration"]["reason"]
    marked = [e for k, e in judged.evidence.items() if k.startswith("coherence_vs_")]
    assert marked and all(e.sentence() == f"{e.figure}: instrument not valid ({reason})." for e in marked)
    assert judged.summary[-len(marked):] == [e.sentence() for e in marked]  # named last, never as a result
    unjudged = [e for k, e in judged.evidence.items() if not k.startswith("coherence_vs_")]
    assert all(e.validity is None and "instrument not valid" not in e.sentence() for e in unjudged)
    assert isinstance(EvaluationResults.model_validate_json(judged.to_json()), EvaluationResults)
    assert "instrument not valid" in text(write_report(judged, tmp_path))
