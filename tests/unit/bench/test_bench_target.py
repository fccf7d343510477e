"""The bench measures `dtype="bfloat16"` beside the default only where the CPU multiplies bf16
natively (bench/bench_target.py reads the flags)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))
import bench_target  # noqa: E402  (the bench's modules import each other by name)

FLAGS = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f {extra}\nbogomips\t: 4000\n"


@pytest.mark.parametrize(("extra", "native"), [("avx512_bf16", True), ("amx_bf16 amx_tile", True),
                                               ("avx512bw avx512_vnni", False), ("", False)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path, extra: str, native: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(FLAGS.format(extra=extra))
    assert bench_target.cpu_has_native_bf16(str(cpuinfo)) is native


def test_no_cpuinfo_means_no_native_bf16(tmp_path: Path) -> None:
    assert bench_target.cpu_has_native_bf16(str(tmp_path / "absent")) is False
    (tmp_path / "flagless").write_text("processor\t: 0\n")
    assert bench_target.cpu_has_native_bf16(str(tmp_path / "flagless")) is False


def test_the_default_precision_is_fp32_on_a_cpu_and_bf16_is_only_an_extra_figure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpu, gpu = bench_target.Target(), bench_target.Target(device="cuda")
    assert (cpu.engine_dtype, gpu.engine_dtype) == ("fp32", "bf16")
    monkeypatch.setattr(bench_target, "cpu_has_native_bf16", lambda: True)
    assert cpu.opt_in_bf16 and not gpu.opt_in_bf16
    monkeypatch.setattr(bench_target, "cpu_has_native_bf16", lambda: False)
    assert not cpu.opt_in_bf16
