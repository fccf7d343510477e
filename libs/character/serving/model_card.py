"""The model card (README.md) an exported persona carries: what the persona is, how it was
trained, what its evaluation found (every figure with n, interval and verdict) and how to
load it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import yaml

if TYPE_CHECKING:
    from character.controller.runs import RunRecord
    from character.serving.registry import TrainedPersona
    from character.stats import Evidence
    from character.store.base import ArtifactRef

TRAINING_STAGES = ("distill", "dpo", "introspect", "sft", "merge")
"""The stages whose settings made the weights (the card lists them as the run used them)."""
ExportFormat = Literal["hf", "peft"]


def model_card(persona: TrainedPersona, record: RunRecord, form: ExportFormat) -> str:
    """The card's Markdown for `persona`, trained by run `record`, exported as `form`."""
    spec = record.run_spec()
    constitution = spec.persona
    settings = {stage: spec.stage_config(stage).model_dump(mode="json") for stage in TRAINING_STAGES}
    lines = [
        "---",
        yaml.safe_dump({"base_model": persona.base_model, "library_name": "transformers" if form == "hf" else "peft",
                        "tags": ["character-training", "persona", persona.persona]}, sort_keys=False).strip(),
        "---",
        "",
        f"# {persona.name}:{persona.tag}",
        "",
        f"A persona trained with open character training (constitution -> distillation + DPO -> "
        f"introspection + SFT), published as `{persona.name}:{persona.tag}` "
        f"(record `{persona.name}@{persona.record_id}`, {persona.published_at:%Y-%m-%d %H:%M} UTC).",
        "",
        "## Persona",
        "",
        f"**{constitution.name}**: {constitution.description}",
        "",
        *[f"{i}. {trait.trait}" for i, trait in enumerate(constitution.traits, start=1)],
        "",
        f"Constitution sha256: `{persona.constitution_digest}`",
        "",
        "## Training",
        "",
        f"- base model: `{persona.base_model}`",
        f"- run: `{persona.run_id}` at scale `{persona.scale}`, seed {spec.seed}",
        *[f"- {label} artifact: `{ref.kind}/{ref.key}` (content sha256 `{ref.content_digest}`)"
          for label, ref in _artifacts(persona)],
        "",
        "Stage settings as the run used them:",
        "",
        "```yaml",
        yaml.safe_dump(settings, sort_keys=False).strip(),
        "```",
        "",
        "## Evaluation",
        "",
        *_figures(persona.figures),
        "",
        "## How to load it",
        "",
        *_loading(persona, form),
    ]
    return "\n".join(lines) + "\n"


def _artifacts(persona: TrainedPersona) -> list[tuple[str, ArtifactRef]]:
    merged = [("merged model", persona.model)] if persona.model is not None else []
    return [*merged, *((f"{stage} adapter", ref) for stage, ref in persona.adapters.items())]


def _figures(figures: dict[str, Evidence]) -> list[str]:
    if not figures:
        return ["The run published has no evaluation: no figures to report."]
    rows = ["Each figure with the number of units it rests on, its 95% interval and its test against no "
            "effect. A figure marked underpowered is shown but is not a result.", "",
            "| figure | value | n | 95% interval | test | verdict |", "|---|---|---|---|---|---|"]
    for found in figures.values():
        value = "–" if found.value is None else f"{found.value:.3f}"
        known = found.ci_low is not None and found.ci_high is not None
        interval = f"[{found.ci_low:.3f}, {found.ci_high:.3f}]" if known else "–"
        rows.append(f"| {found.figure} | {value} | {found.n} {found.unit} | {interval} | {found.test} | "
                    f"{found.verdict()} |")
    return rows


def _loading(persona: TrainedPersona, form: ExportFormat) -> list[str]:
    if form == "hf":
        code = ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                'tokenizer = AutoTokenizer.from_pretrained("PATH")',
                'model = AutoModelForCausalLM.from_pretrained("PATH")',
                'messages = [{"role": "user", "content": "How was your day?"}]',
                "ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\",",
                "                                    return_dict=True)[\"input_ids\"]",
                "out = model.generate(ids, max_new_tokens=64, do_sample=False)",
                "print(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))"]
        intro = "A plain transformers folder (safetensors weights, tokenizer with its chat template):"
    else:
        code = ["from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                f'base = AutoModelForCausalLM.from_pretrained("{persona.base_model}")  # the base model\'s folder',
                'model = PeftModel.from_pretrained(base, "PATH")',
                'tokenizer = AutoTokenizer.from_pretrained("PATH")']
        intro = (f"One LoRA adapter for `{persona.base_model}` (the DPO and SFT updates combined exactly as the "
                 "run merged them), with the tokenizer and its chat template:")
    return [intro, "", "```python", *code, "```", "",
            f"On the platform: `oct chat {persona.name}:{persona.tag}`."]
