"""Which precision a model is loaded in (models/loading.py): bf16 on a GPU, float32 on a CPU
unless asked (the proof runs in bf16 changed verdicts: docs/proof-runs.md, "Precision"), and an
explicit precision always wins."""

from __future__ import annotations

import pytest
import torch
from character.errors import InvalidInput
from character.models import loading

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_the_default_is_bf16_on_a_gpu_and_float32_on_a_cpu() -> None:
    assert loading.resolve_dtype(None, CPU) == loading.resolve_dtype("auto", CPU) == torch.float32
    assert loading.resolve_dtype("auto", CUDA) == torch.bfloat16


@pytest.mark.parametrize(("name", "dtype"), [("bfloat16", torch.bfloat16), ("bf16", torch.bfloat16),
                                             ("float32", torch.float32), ("torch.float16", torch.float16)])
def test_an_asked_precision_wins_on_either_device(name: str, dtype: torch.dtype) -> None:
    assert loading.resolve_dtype(name, CPU) == loading.resolve_dtype(name, CUDA) == dtype


def test_an_unknown_precision_is_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match="unknown dtype 'fp8'") as err:
        loading.resolve_dtype("fp8", CPU)
    assert err.value.where == "dtype"
