"""Load a model and its tokenizer, with a process-wide cache.

`load_model(ref)` returns a shared (model, tokenizer) pair per (folder, device, dtype): treat
it as read-only (no training, no adapters injected, no lasting hooks). Code that changes the
model (training, an engine that loads PEFT adapters into it) asks for a private copy with
`shared=False`.

Defaults: device "cuda" when available, else "cpu"; dtype bfloat16 on CUDA, float32 on CPU.
bfloat16 on a CPU with native bf16 products (AVX512-BF16, AMX) decodes SmolLM2 ~1.5x faster,
but it is not the CPU default: the proof runs in bf16 changed verdicts that float32 gave
(docs/proof-runs.md, "Precision"). A run spec asks for it with `dtype: bfloat16`.
Tokenizers pad on the left (for generation) and always have a pad token.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from character.errors import InvalidInput
from character.models.chat_template import end_of_turn_token
from character.models.refs import resolve_model
from character.progress import Progress, silent

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}
_DEDICATED_PADS = ("<|endoftext|>", "<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>")

_cache: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_lock = threading.Lock()


def resolve_device(device: Any = None) -> Any:
    """A torch.device: the given one, or cuda when available, else cpu."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInput(f"unknown device {device!r}: use cpu, cuda or cuda:N", where="device") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device {device!r} asked for, but CUDA is not available here", where="device")
    return resolved


def resolve_dtype(dtype: Any, device: Any) -> Any:
    """A torch dtype: the given one (a torch.dtype or a name like "bf16"), or bfloat16 on CUDA
    and float32 elsewhere."""
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise InvalidInput(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16", where="dtype")
    return getattr(torch, name)


def load_tokenizer(path: str | Path) -> Any:
    """The model's tokenizer, padding on the left, with a pad token (a dedicated one when the
    vocabulary has one, else the end-of-turn token)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"
    if tok.pad_token is None:
        vocab = tok.get_vocab()
        pad = next((p for p in _DEDICATED_PADS if p in vocab), None)
        tok.pad_token = pad or end_of_turn_token(tok)
    return tok


def load_model(
    ref: str | Path,
    device: Any = None,
    dtype: Any = None,
    *,
    shared: bool = True,
    progress: Progress = silent,
) -> tuple[Any, Any]:
    """(model, tokenizer) for a model reference (see `refs.resolve_model`), in eval mode.

    shared=True returns the process-wide cached pair for (folder, device, dtype), which
    callers must not modify; shared=False loads a private copy."""
    path = resolve_model(ref, progress=progress)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    key = (str(path), str(dev), str(dt))
    if shared:
        with _lock:
            if key not in _cache:
                _cache[key] = _load(path, dev, dt)
            return _cache[key]
    return _load(path, dev, dt)


def _load(path: Path, device: Any, dtype: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    model.to(device)
    model.eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok

