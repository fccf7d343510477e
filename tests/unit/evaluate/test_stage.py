"""The eval stage end to end on the tiny model at a minimal preset, and `oct eval` / `oct report`.

Only the upstream stages' records are faked (commented below): a distilled train set, a real
LoRA adapter on the tiny model standing in for DPO's, and the tiny model itself standing in
for the merged model. Everything the eval stage does is real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from character.controller.runs import load_run, new_run, prepare_stage, save_run
from character.data import load_chat_prompts
from character.errors import NotFound
from character.pipeline.dag import stage_keys
from character.pipeline.engines import LocalEngines
from character.pipeline.runner import run_stage, save_result
from character.pipeline.spec import RunSpec, parse_spec
from character.pipeline.stage import StageResult
from character.report import SECTIONS
from character.report.results import SCHEMA_VERSION
from character.stages.evaluate.orchestrate import load_results
from character.stages.evaluate.robustness import load_attacks
from character.stages.evaluate.subject import Subject
from character.store import open_store
from character.store.base import Store
from character.store.datasets import write_dataset
from typer.testing import CliRunner

from tests.fixtures.runs import run_id_for

MINIMAL = {
    "answer_max_new_tokens": 8,
    "answer_temperature": 0.0,
    "preference_methods": ["base", "full", "system_prompt"],
    "robustness_methods": ["system_prompt", "steering", "dpo", "full"],
    "preference_comparisons": 6,
    "preference_traits": 3,
    "min_comparisons": 1,
    "bootstrap_samples": 5,
    "judge_max_new_tokens": 4,
    "robustness_train_prompts": 4,
    "heldout_prompts": 2,
    "steering_prompts": 2,
    "capability_limit": 2,
    "capability_tasks": ["oct_science_mc", "oct_arithmetic_gen"],
    "side_by_side": 4,
}
TRAINED_PROMPTS = 3


def make_spec(
    tiny_model: Path, store: Path, seed: int = 123456, persona: str = "sarcasm", **eval_config: Any
) -> RunSpec:
    return parse_spec(
        {
            "constitution": persona,
            "model": str(tiny_model),
            "store": str(store),
            "seed": seed,
            "stages": {"eval": MINIMAL | eval_config},
        }
    )


def fake_upstream(spec: RunSpec, store: Store, tiny_model: Path, tmp: Path, with_merge: bool = True) -> None:
    """Stored results of distill, dpo, sft and merge, as the real stages would leave them."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    keys = stage_keys(spec)
    # distill: the first chat prompts were "trained on"; evaluation must put them last
    trained = [p.prompt for p in load_chat_prompts("bundled")[:TRAINED_PROMPTS]]
    rows = [
        {
            "id": f"p{i}",
            "prompt": p,
            "chosen": "Oh, sure.",
            "rejected": "Yes.",
            "source": "chat",
            "trait_index": None,
        }
        for i, p in enumerate(trained)
    ]
    distill = {
        "train": write_dataset(store, "dataset", f"{keys['distill']}-train", rows),
        "heldout": write_dataset(store, "dataset", f"{keys['distill']}-heldout", rows[:1]),
    }
    save_result(store, StageResult(stage="distill", key=keys["distill"], artifacts=distill))
    # dpo: a real (random, non-zero) LoRA adapter on the tiny model
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(tmp / "adapter")
    adapter = store.put_dir("adapter", f"{keys['dpo']}-adapter", tmp / "adapter")
    accuracy = {
        "heldout_before": {"pairs": 1, "accuracy": 0.0},
        "heldout_after": {"pairs": 1, "accuracy": 1.0},
    }
    save_result(
        store, StageResult(stage="dpo", key=keys["dpo"], artifacts={"adapter": adapter}, metrics=accuracy)
    )
    save_result(
        store,
        StageResult(stage="sft", key=keys["sft"], metrics={"heldout_after": {"pairs": 1, "accuracy": 1.0}}),
    )
    if with_merge:  # merge: the tiny model itself stands in for the merged model
        merged = store.put_dir("model", keys["merge"], tiny_model)
        save_result(store, StageResult(stage="merge", key=keys["merge"], artifacts={"model": merged}))
    save_run(store, new_run(spec, executor="test"))


@pytest.mark.slow
def test_eval_stage_end_to_end_on_the_tiny_model(tiny_model: Path, tmp_path: Path) -> None:
    spec = make_spec(tiny_model, tmp_path / "store")
    store = open_store(spec.store)
    fake_upstream(spec, store, tiny_model, tmp_path)
    run_id = run_id_for(spec)

    result, cached = run_stage(prepare_stage(store, run_id, "eval"), store, LocalEngines(store))
    assert not cached and set(result.artifacts) == {"eval", "report"}
    results = json.loads((store.materialize("eval", result.key) / "results.json").read_text())
    recorded = load_run(store, run_id).stages
    assert results["stage_configs"] == {n: s.config.values for n, s in recorded.items() if s.config is not None}
    assert len(results["stage_configs"]) == len(recorded)
    html = (store.materialize("report", result.key) / "index.html").read_text()
    assert "Stage configs" in html and '"heldout_prompts": 2' in html.replace("&#34;", '"')
    assert results["schema_version"] == SCHEMA_VERSION

    prefs = results["preferences"]
    assert set(prefs["models"]) == {"base", "full", "system_prompt"} and len(prefs["traits"]) == 3
    for model in prefs["models"].values():
        assert model["answers"] == 6
        assert model["comparisons"] + model["no_verdict"] == model["answers"]  # failures never guessed
        bias = model["position_bias"]
        assert bias["ballots"] == 6 and bias["orders_per_ballot"] == 2  # every answer judged in both orders
    assert prefs["parse_failure_rate"] is not None
    assert set(prefs["own_traits"]) < set(prefs["traits"])  # the persona's own words are always rated
    assert set(prefs["own_trait_evidence"]) == {"full", "system_prompt"}

    shown = results["side_by_side"]
    trained = {p.prompt for p in load_chat_prompts("bundled")[:TRAINED_PROMPTS]}
    assert len(shown["rows"]) == 4 and shown["methods"] == ["base", "system_prompt", "steering", "full"]
    assert len({row["prompt"] for row in shown["rows"]}) == 4  # distinct prompts
    assert shown["validity"]["valid"] == results["judge_calibration"]["valid"]
    for row in shown["rows"]:
        assert row["prompt"] not in trained  # held out
        assert set(row["answers"]) == set(shown["methods"])
        i = row["comparison"]
        for name, answer in row["answers"].items():
            assert answer["verdict"] is None or answer["verdict"] in row["traits"]
            assert answer["own"] == (answer["verdict"] in prefs["own_traits"])
            if name in prefs["models"]:  # a rated method's answer and verdict are the preference part's own
                assert answer["verdict"] == prefs["models"][name]["verdicts"][i]
                examples = prefs["models"][name]["examples"]
                if i < len(examples):
                    assert (answer["text"], row["traits"]) == (examples[i]["answer"], examples[i]["traits"])

    robust = results["robustness"]
    attacks = [a.id for a in load_attacks()]
    assert robust["mode"] == "binary" and robust["classes"] == ["sarcasm", "base"]
    assert set(robust["methods"]) == {"system_prompt", "steering", "dpo", "full"}
    assert robust["heldout_prompts"] == 2 and robust["heldout_unseen_in_training"] == 2
    for method in robust["methods"].values():
        assert list(method["macro_f1"]) == ["none", *attacks]
        assert all(0.0 <= v <= 1.0 for v in method["macro_f1"].values())
        assert method["mean"] == pytest.approx(sum(method["macro_f1"][a] for a in attacks) / len(attacks))
        assert set(method["evidence"]) == {"none", *attacks, "mean_over_attacks"}
    assert set(robust["recognition_without_prompt"]) == {"dpo", "full"}
    # every headline figure carries its evidence; at 2 held-out prompts all are underpowered
    assert results["evidence"] and all(e["underpowered"] for e in results["evidence"].values())
    assert len(results["summary"]) == len(results["evidence"])

    assert [c["baseline"] for c in results["coherence"]["comparisons"]] == ["system_prompt", "steering"]
    assert all(c["pairs"] == 2 for c in results["coherence"]["comparisons"])
    tasks = {t["task"]: t for t in results["capabilities"]["tasks"]}
    assert set(tasks) == {"oct_science_mc", "oct_arithmetic_gen"} and tasks["oct_science_mc"]["items"] == 2
    # the trained model is the base model here: identical scores
    assert tasks["oct_science_mc"]["delta"] == 0.0

    assert results["training"]["preference_accuracy"] == {"before": 0.0, "after_dpo": 1.0, "after_sft": 1.0}
    assert len(results["steering"]["layers"]) >= 1
    parts = {"judge_calibration", "preferences", "side_by_side", "robustness", "coherence", "capabilities"}
    assert set(results["timings"]) == parts
    # the demo preset calibrates the candidates (the channel judge, the embedding judge, the teacher)
    # on its subset first and judges trait choices with the best one; every judge-based figure says so
    calibration, candidates = results["judge_calibration"], results["judge_candidates"]
    assert [c["judge"] for c in candidates] == ["channel", "embedding", str(tiny_model)]
    assert calibration == max(candidates, key=lambda c: c["accuracy"]) and results["judge"] == calibration["judge"]
    assert all(c["n"] == spec.stage_config("eval").calibration_items == 24 for c in candidates)
    # coherence's model judge (the teacher) is calibrated on its own only when it was not chosen
    assert ("coherence_judge_calibration" in results) == (calibration["judge"] in ("channel", "embedding"))
    coherent = results.get("coherence_judge_calibration", calibration)
    judged = [(e["own_trait_choice"], calibration) for e in prefs["own_trait_evidence"].values()]
    judged += [(c["evidence"], coherent) for c in results["coherence"]["comparisons"]]
    for figure, judge in judged:
        assert figure["validity"] == {"valid": judge["valid"], "reason": judge["reason"]}
        assert ("instrument not valid" in figure["sentence"]) == (not judge["valid"])
    assert result.metrics["judge_valid"] == calibration["valid"]
    assert "macro_f1_full" in result.metrics and "parse_failure_rate" in result.metrics

    html = (store.materialize("report", result.key) / "index.html").read_text()
    assert f"judge {calibration['judge']} (the best calibrated of channel" in html  # the choice, named
    assert all(f">{section}</h2>" in html for section in SECTIONS)
    assert 'class="tag underpowered"' in html

    # training prompts go last in the evaluation pool
    subject = Subject(prepare_stage(store, run_id, "eval").context(store, LocalEngines(store), partial=True),
                      spec.stage_config("eval"))
    trained = {p.prompt for p in load_chat_prompts("bundled")[:TRAINED_PROMPTS]}
    assert subject.pool.unseen == len(subject.pool.prompts) - TRAINED_PROMPTS
    assert set(subject.pool.prompts[-TRAINED_PROMPTS:]) == trained

    # `oct report` regenerates the report from the stored results; `oct eval PART` runs one part
    from character.cli.main import app

    runner = CliRunner()
    out = runner.invoke(app, ["report", run_id, "--store", spec.store, "--out", str(tmp_path / "rep")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "rep" / "index.html").is_file() and str(tmp_path / "rep" / "index.html") in out.output
    out = runner.invoke(app, ["eval", "all", "--run", run_id, "--store", spec.store])
    assert out.exit_code == 0, out.output
    assert str(store.materialize("report", result.key) / "index.html") in out.output  # the stage's own result
    out = runner.invoke(app, ["eval", "coherence", "--run", run_id, "--store", spec.store])
    assert out.exit_code == 0, out.output
    rerun = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert rerun["preferences"] == results["preferences"]
    out = runner.invoke(app, ["report", run_id, "--store", spec.store, "--out", str(tmp_path / "rep2")])
    latest = json.loads((tmp_path / "rep2" / "results.json").read_text())
    assert "coherence" in latest and "preferences" not in latest  # the latest evaluation of the run


def test_a_run_without_the_merged_model_says_how_to_produce_it(tiny_model: Path, tmp_path: Path) -> None:
    from character.cli.main import app

    spec = make_spec(tiny_model, tmp_path / "store", seed=7)
    store = open_store(spec.store)
    fake_upstream(spec, store, tiny_model, tmp_path, with_merge=False)
    out = CliRunner().invoke(app, ["eval", "capabilities", "--run", run_id_for(spec), "--store", spec.store])
    assert isinstance(out.exception, NotFound)
    message = str(out.exception)
    assert "merged model" in message and "'merge'" in message and "oct stage merge" in message


def test_robustness_across_runs_is_n_way_over_personas(tiny_model: Path, tmp_path: Path) -> None:
    from character.cli.main import app

    store = open_store(str(tmp_path / "store"))
    specs = []
    for persona in ("sarcasm", "humor"):
        spec = make_spec(
            tiny_model, tmp_path / "store", persona=persona, robustness_methods=["system_prompt"]
        )
        (tmp_path / persona).mkdir()
        fake_upstream(spec, store, tiny_model, tmp_path / persona)
        specs.append(run_id_for(spec))
    args = ["eval", "robustness", "--run", specs[0], "--runs", specs[1], "--store", store.uri,
            "--classifier", "finetune"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    results = load_results(store, specs[0])
    assert results.runs == specs and results.personas == ["sarcasm", "humor"]
    robust = results.robustness
    assert robust is not None
    assert robust.mode == "2-way" and robust.classes == ["sarcasm", "humor"]
    assert robust.classifier == "finetune"  # the reference's kind of classifier, asked for on the CLI
    assert list(robust.methods) == ["system_prompt"]
    attacks = [a.id for a in load_attacks()]
    method = robust.methods["system_prompt"]
    assert list(method.macro_f1) == ["none", *attacks]  # macro-F1 per attack, N-way
    assert method.evidence["mean_over_attacks"].test == "permutation test"
    assert results.preferences is None and results.coherence is None
    assert "preferences" not in json.loads(results.to_json())  # a part not run is absent from results.json


def test_robustness_answers_each_class_in_one_engine_call(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fewer, fuller batches: the base model's answers (training prompts and held-out prompts,
    which the keep-going attack starts from) in one call, then one call per persona method for
    its training prompts and every attack, and one for the base model under attack."""
    from character.cli.main import app
    from character.models.transformers_engine import TransformersEngine

    spec = make_spec(tiny_model, tmp_path / "store", robustness_methods=["system_prompt", "full"])
    store = open_store(spec.store)
    fake_upstream(spec, store, tiny_model, tmp_path)
    calls: list[int] = []
    generate = TransformersEngine.generate

    def counted(self: TransformersEngine, conversations: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(conversations))
        return generate(self, conversations, *args, **kwargs)

    monkeypatch.setattr(TransformersEngine, "generate", counted)
    out = CliRunner().invoke(app, ["eval", "robustness", "--run", run_id_for(spec), "--store", spec.store])
    assert out.exit_code == 0, out.output
    train, heldout = MINIMAL["robustness_train_prompts"], MINIMAL["heldout_prompts"]
    scenarios = 1 + len(load_attacks())
    base_under_attack = (scenarios - 1) * heldout  # its un-attacked held-out answers are the first call's
    persona = train + scenarios * heldout
    # system_prompt's classes, then full's (whose base class is all cached); recognition reuses them
    assert calls == [train + heldout, persona, base_under_attack, persona]


def test_judge_embedding_judges_trait_choices_and_leaves_coherence_to_the_teacher(
    tiny_model: Path, tmp_path: Path
) -> None:
    from character.stages.evaluate import preferences
    from character.stages.evaluate.calibration import judge_calibrations
    from character.stages.evaluate.trait_judges import EmbeddingJudge

    spec = parse_spec({"constitution": "sarcasm", "model": str(tiny_model), "store": str(tmp_path / "store"),
                       "judge": "embedding", "stages": {"eval": MINIMAL}})
    store = open_store(spec.store)
    save_run(store, new_run(spec, executor="test"))
    context = prepare_stage(store, run_id_for(spec), "eval").context(store, LocalEngines(store), partial=True)
    config = spec.stage_config("eval")
    subject = Subject(context, config)
    assert isinstance(subject.trait_judge, EmbeddingJudge)
    assert subject.model_judge.name == str(tiny_model)  # coherence's judge: the teacher
    reply = "Oh, a true culinary summit. Boil it for nine minutes and try not to be overwhelmed."
    [decision] = subject.decide_traits([preferences.ballot("How do I boil an egg?", reply, ("earnest", "sarcastic"))])
    assert decision.verdict in ("earnest", "sarcastic") and len(decision.per_order) == 2
    found = judge_calibrations(subject, config.only(["preferences"]))
    assert set(found) == {"judge_calibration"} and found["judge_calibration"]["judge"] == "embedding"


class _KnownAccuracyJudge:
    """A fake judge of known accuracy (the instrument under test): names the expressed trait of
    the first `right` calibration items it is asked about and the other trait of the rest."""

    def __init__(self, name: str, right: int):
        self.name, self.right = name, right

    def identity(self) -> dict[str, Any]:
        return {"judge": self.name, "right": self.right}

    def decide(self, ballots: Any) -> list[Any]:
        from character.stages.evaluate.calibration import load_calibration_set
        from character.stages.evaluate.judge import Decision

        key = {i.reply: i.expressed for i in load_calibration_set()}
        out = []
        for i, b in enumerate(ballots):
            truth = key[str(b.text)]
            verdict = truth if i < self.right else next(c for c in b.candidates if c != truth)
            out.append(Decision(verdict=verdict, per_order=(verdict, verdict), first_shown=(True, False)))
        return out


def _subject(tiny_model: Path, tmp_path: Path, **spec: Any) -> Subject:
    spec_ = parse_spec({"constitution": "sarcasm", "model": str(tiny_model), "store": str(tmp_path / "store"),
                        "stages": {"eval": MINIMAL}, **spec})
    store = open_store(spec_.store)
    save_run(store, new_run(spec_, executor="test"))
    context = prepare_stage(store, run_id_for(spec_), "eval").context(store, LocalEngines(store), partial=True)
    return Subject(context, spec_.stage_config("eval"))


@pytest.mark.parametrize("better_first", [True, False])
def test_the_judge_of_higher_calibration_accuracy_judges_trait_choices(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, better_first: bool
) -> None:
    from character.stages.evaluate.calibration import judge_calibrations

    subject = _subject(tiny_model, tmp_path)
    items = subject.config.calibration_items
    assert items == 24 and subject.config.choose_judge  # the demo preset
    worse, better = _KnownAccuracyJudge("worse", right=12), _KnownAccuracyJudge("better", right=20)
    candidates = [better, worse] if better_first else [worse, better]
    monkeypatch.setattr(Subject, "trait_judge_candidates", property(lambda self: candidates))
    found = judge_calibrations(subject, subject.config.only(["preferences"]))
    assert [c["accuracy"] for c in found["judge_candidates"]] == [c.right / items for c in candidates]
    assert found["judge_calibration"]["judge"] == "better" and subject.trait_judge is better
    assert found["judge_calibration"]["n"] == items  # the figure's n is the subset's size


def test_candidates_are_the_channel_the_embedding_and_the_model_judge_unless_the_spec_names_one(
    tiny_model: Path, tmp_path: Path
) -> None:
    from character.stages.evaluate.channel_judge import ChannelJudge
    from character.stages.evaluate.trait_judges import EmbeddingJudge, ModelJudge

    channel, embedding, model = _subject(tiny_model, tmp_path).trait_judge_candidates
    assert isinstance(channel, ChannelJudge) and channel.model == str(tiny_model)  # the teacher scores
    assert isinstance(embedding, EmbeddingJudge) and isinstance(model, ModelJudge) and model.name == str(tiny_model)
    [named] = _subject(tiny_model, tmp_path, judge=str(tiny_model)).trait_judge_candidates
    assert named.name == str(tiny_model)  # a spec's judge is used as given, never replaced
    [fixed] = _subject(tiny_model, tmp_path, scale="full").trait_judge_candidates
    assert fixed.name == str(tiny_model)  # full scale: the teacher judges, as the spec says


def test_the_channel_judge_judges_trait_choices_when_it_calibrates_best(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real candidates (MiniLM, the tiny model as judge), the channel judge's scorer swapped
    for one that sees the expressed trait (tests/unit/evaluate/test_channel_judge.py)."""
    import dataclasses

    from character.stages.evaluate.calibration import judge_calibrations

    from tests.unit.evaluate.test_channel_judge import AnswerKeyScorer

    subject = _subject(tiny_model, tmp_path)
    channel, *others = subject.trait_judge_candidates
    seeing = dataclasses.replace(channel, engine=AnswerKeyScorer())
    monkeypatch.setattr(Subject, "trait_judge_candidates", property(lambda self: [*others, seeing]))
    found = judge_calibrations(subject, subject.config.only(["preferences"]))
    assert [c["judge"] for c in found["judge_candidates"]] == ["embedding", str(tiny_model), "channel"]
    assert found["judge_calibration"]["judge"] == "channel" and subject.trait_judge is seeing
    assert found["judge_calibration"]["accuracy"] == 1.0 and found["judge_calibration"]["valid"]
