"""Exporting a published persona (tiny model, adapters and merged weights as the merge stage
makes them): the hf folder loads with plain transformers and gives the project's engine's
greedy answer; the peft adapter on the base computes what the merged model computes; the
model card carries the persona, the training settings and every figure with n, interval and
verdict; an artifact changed since publishing, a used folder and an unknown format are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from character import stats
from character.errors import CharacterError, InvalidInput
from character.models.engine import SamplingParams
from character.models.refs import resolve_model
from character.models.transformers_engine import TransformersEngine
from character.serving.export import export_persona
from character.serving.registry import publish
from character.store import LocalStore
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.unit.serving.helpers import evaluated, trained_run

CONVERSATIONS = [[{"role": "user", "content": "How was your day?"}],
                 [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]]
TOKENS = 12


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, torch_one_thread: None) -> LocalStore:
    """A store with one trained run, evaluated, published as snark:latest."""
    root = tmp_path_factory.mktemp("export")
    store = LocalStore(root / "store")
    run = trained_run(store, root, seed=3, owner="alice")
    figure = stats.evidence("held-out preference accuracy", 0.625, 16, "held-out pairs", (0.35, 0.85),
                            "Clopper-Pearson", "binomial test", "chance (0.5)", 0.45)
    evaluated(store, run.run_id, root / "eval", {"dpo_heldout": figure})
    publish(store, run.run_id, "snark", owner="alice")
    return store


def _hf_greedy(folder: Path) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    answers = []
    for conversation in CONVERSATIONS:
        ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"]
        out = model.generate(ids, max_new_tokens=TOKENS, do_sample=False)
        answers.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    return answers


def test_the_hf_folder_loads_with_transformers_and_answers_as_the_engine(store: LocalStore, tmp_path: Path) -> None:
    from character.serving.registry import get_persona

    persona = get_persona(store, "snark")
    assert persona.model is not None
    folder = export_persona(store, "snark:latest", "hf", tmp_path / "snark-hf")
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    engine = TransformersEngine(store.materialize("model", persona.model.key))
    expected = [g.text for g in engine.generate(CONVERSATIONS, SamplingParams(temperature=0.0, max_new_tokens=TOKENS))]
    assert _hf_greedy(folder) == expected
    assert all(expected), "the tiny persona answered nothing: the comparison would be empty"


def test_the_model_card_names_the_persona_training_and_figures(store: LocalStore, tmp_path: Path) -> None:
    card = (export_persona(store, "snark", "hf", tmp_path / "out") / "README.md").read_text()
    assert "base_model: tiny" in card and "# snark:latest" in card
    assert "**sarcasm**" in card and "lora_rank:" in card and "beta:" in card
    assert "| held-out preference accuracy | 0.625 | 16 held-out pairs | [0.350, 0.850] | binomial test |" in card
    assert "underpowered (n = 16 held-out pairs < 20): not a result" in card
    assert "AutoModelForCausalLM.from_pretrained" in card


def test_the_peft_adapter_on_the_base_computes_the_merged_model(store: LocalStore, tmp_path: Path) -> None:
    from character.serving.registry import get_persona
    from peft import PeftModel

    persona = get_persona(store, "snark")
    assert persona.model is not None
    folder = export_persona(store, "snark", "peft", tmp_path / "snark-peft")
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
    assert not (folder / "model.safetensors").exists()
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"), dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, folder).eval()
    merged = AutoModelForCausalLM.from_pretrained(store.materialize("model", persona.model.key)).eval()
    plain = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"), dtype=torch.float32).eval()
    ids = torch.tensor([[1, 42, 7, 1000, 5, 99, 3]])
    with torch.no_grad():
        got, want, untouched = adapted(input_ids=ids).logits, merged(input_ids=ids).logits, plain(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(untouched, want, atol=1e-2), "the adapters change nothing: the check is empty"
    assert "PeftModel.from_pretrained" in (folder / "README.md").read_text()


def test_an_artifact_changed_since_publishing_is_refused(store: LocalStore, tmp_path: Path) -> None:
    from character.serving.registry import get_persona

    persona = get_persona(store, "snark")
    assert persona.model is not None
    changed = store.root / "changed"
    changed.mkdir()
    (changed / "config.json").write_text("{}")
    other = store.put_dir("model", "other-model", changed)
    tampered = persona.model_copy(update={"model": persona.model.model_copy(update={"key": other.key})})
    from character.serving.export import verified

    assert tampered.model is not None
    with pytest.raises(CharacterError, match=r"not the \w+ the persona was published with"):
        verified(store, tampered.model)


def test_a_used_folder_and_an_unknown_format_are_refused(store: LocalStore, tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not an empty folder") as err:
        export_persona(store, "snark", "hf", used)
    assert err.value.where == "DIR"
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    with pytest.raises(InvalidInput, match="unknown format 'gguf'"):
        export_persona(store, "snark", "gguf", tmp_path / "new")
    assert not (tmp_path / "new").exists()
