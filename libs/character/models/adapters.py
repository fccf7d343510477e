"""Stacking LoRA adapters into one: a trained persona is a DPO adapter and an SFT adapter on
the same base (the merge stage folds both into the weights); served per request, it is one
adapter whose update is the sum of theirs.

LoRA's update of a weight is `scaling * B @ A`. Concatenating the adapters' A matrices along
the rank (rows) and their B matrices, each times its own scaling, along the rank (columns)
gives an adapter of rank r1 + r2 with scaling 1 whose update `B_cat @ A_cat` is exactly
`s1 * B1 @ A1 + s2 * B2 @ A2` (peft's `add_weighted_adapter(..., combination_type="cat")`
with weights 1, without loading a model). Adapters must adapt the same modules of the same
base, with plain LoRA (no rsLoRA, DoRA, per-module ranks or modules_to_save).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from character.errors import InvalidInput

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
_UNSUPPORTED = ("use_rslora", "use_dora", "rank_pattern", "alpha_pattern", "modules_to_save", "layers_to_transform")


def stack_adapters(folders: Sequence[Path], out: Path) -> Path:
    """`out`: one PEFT adapter folder computing the sum of the updates of `folders` (see the
    module docstring), written atomically (a folder that exists is taken as already made)."""
    if (out / CONFIG).is_file() and (out / WEIGHTS).is_file():
        return out
    import torch
    from safetensors.torch import load_file, save_file

    configs = [_config(folder) for folder in folders]
    modules = {_modules(c) for c in configs}
    if len(modules) != 1:
        raise InvalidInput(f"adapters {', '.join(map(str, folders))} adapt different modules; cannot stack them",
                           where="adapters")
    tensors = [load_file(str(folder / WEIGHTS)) for folder in folders]
    keys = set(tensors[0])
    if any(set(t) != keys for t in tensors):
        raise InvalidInput(f"adapters {', '.join(map(str, folders))} hold different LoRA weights; cannot stack them",
                           where="adapters")
    scalings = [c["lora_alpha"] / c["r"] for c in configs]
    stacked: dict[str, Any] = {}
    for key in sorted(keys):
        if ".lora_A." in key:
            stacked[key] = torch.cat([t[key] for t in tensors], dim=0).contiguous()
        elif ".lora_B." in key:
            stacked[key] = torch.cat([s * t[key] for s, t in zip(scalings, tensors, strict=True)], dim=1).contiguous()
        else:
            raise InvalidInput(f"{folders[0]}: weight {key!r} is not a LoRA A or B matrix; cannot stack",
                               where="adapters")
    rank = sum(int(c["r"]) for c in configs)
    config = {**configs[0], "r": rank, "lora_alpha": rank, "lora_dropout": 0.0}
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
        save_file(stacked, str(tmp / WEIGHTS))
        try:
            os.replace(tmp, out)
        except OSError:
            if not (out / WEIGHTS).is_file():  # not a concurrent stacking that won
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG
    if not path.is_file() or not (folder / WEIGHTS).is_file():
        raise InvalidInput(f"no PEFT adapter here ({CONFIG} and {WEIGHTS} expected)", where=str(folder))
    config: dict[str, Any] = json.loads(path.read_text())
    if config.get("peft_type") != "LORA":
        raise InvalidInput(f"peft_type is {config.get('peft_type')!r}; only LoRA adapters stack", where=str(path))
    used = [name for name in _UNSUPPORTED if config.get(name)]
    if used:
        raise InvalidInput(f"{', '.join(used)} set; only plain LoRA adapters stack", where=str(path))
    return config


def _modules(config: dict[str, Any]) -> str:
    targets = config.get("target_modules")
    return json.dumps(sorted(targets) if isinstance(targets, list) else targets)
