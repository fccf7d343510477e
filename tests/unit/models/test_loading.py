"""Which precision a model is loaded in (models/loading.py): engines take bf16 where the CPU
multiplies bf16 natively, everything that must be exact (training, merging, exporting) keeps
float32 on a CPU, and an explicit precision always wins."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from character.errors import InvalidInput
from character.models import loading

FLAGS = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f {extra}\nbogomips\t: 4000\n"
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(("extra", "native"), [("avx512_bf16", True), ("amx_bf16 amx_tile", True),
                                               ("avx512bw avx512_vnni", False), ("", False)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path, extra: str, native: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(FLAGS.format(extra=extra))
    assert loading.cpu_has_native_bf16(cpuinfo) is native


def test_no_cpuinfo_means_no_native_bf16(tmp_path: Path) -> None:
    assert loading.cpu_has_native_bf16(tmp_path / "absent") is False
    (tmp_path / "flagless").write_text("processor\t: 0\n")
    assert loading.cpu_has_native_bf16(tmp_path / "flagless") is False


@pytest.mark.parametrize("native", [True, False])
def test_engines_default_to_bf16_only_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: native)
    expected = torch.bfloat16 if native else torch.float32
    assert loading.engine_dtype(None, CPU) == loading.engine_dtype("auto", CPU) == expected
    assert loading.engine_dtype("float32", CPU) == torch.float32  # one flag away, whatever the CPU
    assert loading.engine_dtype("bf16", CPU) == torch.bfloat16
    assert loading.engine_dtype("auto", CUDA) == torch.bfloat16
    assert loading.resolve_dtype("auto", CPU) == torch.float32  # exact work keeps float32


def test_an_unknown_precision_is_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match="unknown dtype 'fp8'") as err:
        loading.engine_dtype("fp8", CPU)
    assert err.value.where == "dtype"
