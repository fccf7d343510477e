"""CTranslate2 as a peer of the generation bench (`peers_bench.py`): the HF model converted once
by CTranslate2's own converter into fp32 (`TransformersConverter`, cached in the work folder),
run with compute type `float32` or `int8` (the weights quantized to int8 as the model loads; the
matrix products in int8, the activations quantized row by row on the fly; the rest in fp32), the
whole batch in one `generate_batch` call, greedy."""

from __future__ import annotations

from pathlib import Path

import ctranslate2
from bench_target import Generate
from ctranslate2.converters import TransformersConverter


def settings(compute_type: str) -> str:
    return (f"ctranslate2 {ctranslate2.__version__}, converted to float32 by TransformersConverter, "
            f"compute_type={compute_type}, one generate_batch of every prompt, sampling_topk=1")


def prepare(model: Path, work: Path) -> Path:
    """The model in CTranslate2's format (converted once; int8 quantizes it as it loads)."""
    out = work / "ctranslate2-float32"
    if not (out / "model.bin").is_file():
        TransformersConverter(str(model)).convert(str(out), quantization="float32", force=True)
    return out


def load(converted: Path, compute_type: str, tokenizer: object, stops: list[int], threads: int) -> Generate:
    generator = ctranslate2.Generator(str(converted), device="cpu", compute_type=compute_type,
                                      inter_threads=1, intra_threads=threads)
    convert = tokenizer.convert_ids_to_tokens  # type: ignore[attr-defined]

    def generate(rows: list[list[int]], new_tokens: int) -> list[list[int]]:
        # the prompt is prefilled at once (include_prompt_in_result=False), and the stop token is
        # returned so that it is counted, as the engine counts it
        results = generator.generate_batch(
            [convert(r) for r in rows], max_length=new_tokens, sampling_topk=1, end_token=stops,
            return_end_token=True, include_prompt_in_result=False)
        return [r.sequences_ids[0] for r in results]

    return generate
