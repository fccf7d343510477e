"""The `proof` scale: sized to tell an effect from noise, and runnable end to end.

Its sizes are checked against the minimums the evidence needs; the whole pipeline then runs at
`proof` on the tiny model through `oct run`, with only the sizes shrunk (the preset itself
takes 33 to 90 minutes of SmolLM2 on a 2-core CPU), and its report carries evidence for every figure.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from character.constitution import load_persona
from character.pipeline.spec import load_spec
from character.stages import distill, dpo, prompts
from character.stages.evaluate import Config
from character.stages.evaluate.orchestrate import load_results
from character.store import open_store
from typer.testing import CliRunner

from tests.fixtures.runs import run_id_for


def test_proof_sizes_meet_the_minimums_the_evidence_needs() -> None:
    demo, proof = Config.for_scale("demo"), Config.for_scale("proof")
    assert proof.heldout_prompts >= 32 and proof.robustness_train_prompts >= 32  # per class
    assert proof.preference_comparisons >= 128 and proof.preference_traits is not None
    assert proof.capability_limit is not None and proof.capability_limit >= proof.min_n
    assert proof.judge_mode == demo.judge_mode == "choose"  # built on demo: a small model judges itself
    # every bundled persona's own words fit among the rated traits, with contrast traits beside them
    assert all(len(load_persona(p).trait_words) < proof.preference_traits for p in ("sarcasm", "loving"))
    d = distill.Config.for_scale("proof")
    assert ((d.constitution_prompts or 0) + (d.chat_prompts or 0)) * d.heldout_fraction >= 64
    assert prompts.Config.for_scale("proof").target_per_trait * 10 >= (d.constitution_prompts or 0)
    assert dpo.Config.for_scale("proof").max_steps > dpo.Config.for_scale("demo").max_steps
    # demo's figures sit below the minimum n, so the demo report marks them underpowered
    assert demo.heldout_prompts < demo.min_n and demo.preference_comparisons < demo.min_n


SHRUNK = {
    "prompts": {"target_per_trait": 6, "max_rounds": 1, "max_new_tokens": 16},
    "distill": {"constitution_prompts": 6, "chat_prompts": 6, "max_new_tokens": 8, "truncated": "keep",
                "quality_encoder": "minilm"},
    "dpo": {"max_steps": 2, "save_steps": 1},
    "introspect": {"reflection_samples": 1, "conversations": 1, "turns": 2, "max_new_tokens": 8,
                   "turn_max_new_tokens": 8, "truncated": "keep", "filters": []},
    "sft": {"max_steps": 1, "save_steps": 1},
    "eval": {"answer_max_new_tokens": 8, "preference_comparisons": 6, "preference_traits": 6,
             "robustness_train_prompts": 4, "heldout_prompts": 2, "steering_prompts": 2, "capability_limit": 2,
             "capability_tasks": ["oct_science_mc"], "bootstrap_samples": 5},
}


def test_the_proof_scale_runs_end_to_end_on_the_tiny_model(tiny_model: Path, tmp_path: Path) -> None:
    from character.cli.main import app

    spec_file = tmp_path / "proof.yaml"
    spec_file.write_text(yaml.safe_dump({
        "constitution": "sarcasm", "model": str(tiny_model), "scale": "proof",
        "store": str(tmp_path / "store"), "stages": SHRUNK,
    }))
    out = CliRunner().invoke(app, ["run", "--spec", str(spec_file)])
    assert out.exit_code == 0, out.output
    spec = load_spec(spec_file)
    results = load_results(open_store(spec.store), run_id_for(spec))
    assert results.scale == "proof"
    evidence = results.evidence
    held_out = evidence["training_dpo"]
    assert held_out.test == "McNemar exact test" and held_out.unit == "held-out pairs" and held_out.n >= 1
    assert {"own_traits_full", "robustness_full", "recognition_full", "coherence_vs_system_prompt",
            "distill_data_quality", "capabilities"} <= set(evidence)
    assert all(e.underpowered for e in evidence.values())  # shrunk sizes: nothing here is a result
    # the distill stage reported its data-quality figure (the run summary prints every metric)
    assert "data_quality=" in out.output and "distilled chosen vs rejected" in out.output
