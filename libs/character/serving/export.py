"""A published persona out of the platform: `export_persona` writes it as

- "hf": a standard Hugging Face model folder: the merged model's safetensors weights and
  config, the tokenizer with its chat template, and a generation config that stops at the end
  of a turn, so `AutoModelForCausalLM.from_pretrained` + `generate` answer as the platform's
  engine does;
- "peft": one LoRA adapter for the base model, the DPO and SFT updates combined the way the
  run's merge stage combined them ("cat": each adapter's update times its weight, which for
  the default "fold" merge, both weights 1, is exactly the merged model), with the tokenizer.

Each folder carries a model card (`model_card.py`). Every artifact is checked against the
content digest the persona record holds before it is copied. GGUF is not offered: no
maintained converter is installed (see docs/personas.md).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from character.controller.runs import load_run
from character.errors import CharacterError, InvalidInput
from character.serving.model_card import ExportFormat, model_card
from character.serving.registry import ADAPTER_STAGES, TrainedPersona, get_persona
from character.store.base import ArtifactRef, Store

if TYPE_CHECKING:
    from character.stages.merge import Config as MergeConfig

FORMATS: tuple[str, ...] = get_args(ExportFormat)
ADAPTER_NAME = "persona"
"""The combined adapter's name inside the PEFT model while it is built."""


def export_persona(store: Store, ref: str, form: str, dest: Path) -> Path:
    """Write persona `ref` (NAME[:TAG] or NAME@RECORD) as `form` into the new folder `dest`
    (refused when it exists and is not empty; written beside it first, then renamed, so a
    failed export leaves nothing behind). Returns `dest`."""
    if form not in FORMATS:
        raise InvalidInput(f"unknown format {form!r}: {', '.join(FORMATS)} (gguf: see docs/personas.md)",
                           where="format")
    dest = Path(dest).expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidInput(f"{dest} exists and is not an empty folder; give a new folder", where="DIR")
    persona = get_persona(store, ref)
    record = load_run(store, persona.run_id)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}-", dir=dest.parent) as tmp:
        out = Path(tmp) / "export"
        if form == "hf":
            _write_hf(store, persona, out)
        else:
            _write_peft(store, persona, record.run_spec().stage_config("merge"), out)
        (out / "README.md").write_text(model_card(persona, record, form), encoding="utf-8")  # type: ignore[arg-type]
        if dest.exists():
            dest.rmdir()
        out.rename(dest)
    return dest


def verified(store: Store, ref: ArtifactRef) -> Path:
    """The artifact's local folder, when its content is still what the record names."""
    manifest = store.manifest(ref.kind, ref.key)
    if manifest.content_digest != ref.content_digest:
        raise CharacterError(f"artifact {ref.kind}/{ref.key} in {store.uri} holds content "
                             f"{manifest.content_digest[:12]}, not the {ref.content_digest[:12]} the persona "
                             "was published with; publish the run again")
    return store.materialize(ref.kind, ref.key)


def _write_hf(store: Store, persona: TrainedPersona, out: Path) -> None:
    from transformers import GenerationConfig

    from character.models.chat_template import stop_token_ids
    from character.models.loading import load_tokenizer

    if persona.model is None:
        raise CharacterError(f"persona {persona.ref} has no merged model to export as hf; use --format peft")
    shutil.copytree(verified(store, persona.model), out)
    for path in out.rglob("*"):  # the local store's files are read-only by convention: copies are ours
        path.chmod(0o755 if path.is_dir() else 0o644)
    tokenizer = load_tokenizer(out)
    generation = GenerationConfig.from_pretrained(out) if (out / "generation_config.json").is_file() \
        else GenerationConfig()
    generation.eos_token_id = stop_token_ids(tokenizer, generation)
    generation.pad_token_id = tokenizer.pad_token_id
    generation.save_pretrained(out)


def _write_peft(store: Store, persona: TrainedPersona, merge_config: MergeConfig, out: Path) -> None:
    from peft import PeftModel

    from character.models.loading import load_model

    missing = [stage for stage in ADAPTER_STAGES if stage not in persona.adapters]
    if missing:
        raise CharacterError(f"persona {persona.ref} has no {' or '.join(missing)} adapter to export as peft; "
                             "use --format hf")
    fold = merge_config.mode == "fold"
    weights = [1.0, 1.0] if fold else [merge_config.dpo_weight, merge_config.sft_weight]
    base, tokenizer = load_model(persona.base_model, shared=False)
    folders = [verified(store, persona.adapters[stage]) for stage in ADAPTER_STAGES]
    model = PeftModel.from_pretrained(base, folders[0], adapter_name=ADAPTER_STAGES[0])
    model.load_adapter(folders[1], adapter_name=ADAPTER_STAGES[1])
    model.add_weighted_adapter(list(ADAPTER_STAGES), weights, adapter_name=ADAPTER_NAME, combination_type="cat")
    with tempfile.TemporaryDirectory(prefix="oct-peft-") as scratch:
        model.save_pretrained(scratch, selected_adapters=[ADAPTER_NAME])
        shutil.copytree(Path(scratch) / ADAPTER_NAME, out)
    tokenizer.save_pretrained(out)
