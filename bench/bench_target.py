"""What the bench runs on (`Target`), and what every bench measures with: the bundled chat
prompts, GPU synchronisation, freeing GPU memory, and a speed from tokens and seconds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A peer engine's generation (`peers_bench.py`): prompt token rows and the new tokens allowed
# -> each row's generated tokens, greedy.
Generate = Callable[[list[list[int]], int], list[list[int]]]


@dataclass(frozen=True)
class Target:
    """What the bench runs on: a model folder (or bundled name), a device, and whether the
    weights are random (answers then mean nothing and are not compared)."""

    model: str = "smollm2"
    device: str = "cpu"
    random_weights: bool = False

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def speed_key(self) -> str:
        """The speed the bounds are compared with: per CPU-second of this process on a CPU, per
        wall second (GPU synchronised) on a GPU."""
        return "tokens_per_second" if self.cuda else "tokens_per_cpu_second"

    @property
    def speed_unit(self) -> str:
        return "tok/s" if self.cuda else "tok/CPU-s"

    @property
    def engine_dtype(self) -> str:
        """The engine's default precision (`loading.resolve_dtype`): bf16 on a GPU, fp32 on a
        CPU. The generation bound is computed in it."""
        return "bf16" if self.cuda else "fp32"

    @property
    def opt_in_bf16(self) -> bool:
        """A CPU with native bf16 products, where the bench also measures `dtype="bfloat16"`."""
        return not self.cuda and cpu_has_native_bf16()

    @property
    def train_dtype(self) -> str:
        """Training's precision (`lora_trainer.pick_device`): bf16 on a GPU, fp32 on a CPU."""
        return "bf16" if self.cuda else "fp32"

    @property
    def torch_dtype(self) -> Any:
        """`engine_dtype` as a torch dtype."""
        import torch

        return torch.bfloat16 if self.engine_dtype == "bf16" else torch.float32


CPU = Target()


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 matrices natively (the avx512_bf16 or amx_bf16 flag in
    `cpuinfo`; False where there is none to read); elsewhere torch emulates bf16, slower than fp32."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def chat_prompts(n: int) -> list[Any]:
    """n bundled chat prompts (a fixed random subset); beyond the 245 bundled, they repeat."""
    from character.data import load_chat_prompts

    every = load_chat_prompts("bundled")
    if n <= len(every):
        return load_chat_prompts("bundled", limit=n)
    return [every[i % len(every)] for i in range(n)]


def sync(target: Target) -> None:
    if target.cuda:
        import torch

        torch.cuda.synchronize()


def free(target: Target) -> None:
    if target.cuda:
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()


def speed_of(tokens: int, seconds: float, cpu_seconds: float) -> dict[str, Any]:
    """Tokens per wall second and per CPU-second of this process: on one thread, the second is
    what the work cost whatever else the machine runs, and what the CPU bounds compare with (on
    a GPU, the wall second is)."""
    return {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_second": round(tokens / seconds, 1),
            "cpu_seconds": round(cpu_seconds, 2), "tokens_per_cpu_second": round(tokens / cpu_seconds, 1)}
