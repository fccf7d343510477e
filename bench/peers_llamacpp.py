"""llama.cpp as a peer of the generation bench (`peers_bench.py`), through llama-cpp-python's
bindings of llama.cpp's C API. The HF model is converted once (cached in the work folder) by
llama.cpp's own convert_hf_to_gguf.py, taken from the pinned llama-cpp-python source release
(vendor/llama.cpp), into an F16 GGUF, which llama.cpp's quantizer (`llama_model_quantize`) turns
into Q4_0. Q4_0 rather than the K-quants: K-quants pack rows in blocks of 256 and most of
SmolLM2's matrices have rows of 576, so a Q4_K_M file would fall back to other types for them.

Generation is batched as the engine batches it: every prompt is a sequence of one context
(`n_seq_max` = the prompts, a KV cache each), the prompts are prefilled together in
`n_batch`-token pieces, then each `llama_decode` advances every unfinished sequence by one
token, the argmax of its logits (greedy). llama-cpp-python's `Llama` class generates one
sequence at a time, which at this model's size is several times slower per token, so it would
not be llama.cpp's best."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import tarfile
from pathlib import Path

import llama_cpp
import numpy as np
from bench_target import Generate

FTYPES = {"F16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16, "Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0}
N_BATCH = 512  # tokens per llama_decode: llama.cpp's default


def settings(variant: str) -> str:
    return (f"llama-cpp-python {llama_cpp.__version__} (llama.cpp C API), GGUF {variant} from "
            f"convert_hf_to_gguf.py{'' if variant == 'F16' else ' + llama_model_quantize'}, every prompt a "
            f"sequence of one batched context (n_batch {N_BATCH}, a KV cache per sequence), argmax")


def prepare(model: Path, work: Path, sdist: Path, variant: str, threads: int) -> Path:
    """The model as a GGUF of type `variant` (converted once, then kept)."""
    f16 = work / "smollm2-F16.gguf"
    if not f16.is_file():
        converter = _converter(sdist, work)
        command = [sys.executable, str(converter), str(model), "--outtype", "f16", "--outfile", str(f16)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            f16.unlink(missing_ok=True)
            raise RuntimeError(f"convert_hf_to_gguf.py failed: {done.stderr.strip()[-1000:]}")
    out = work / f"smollm2-{variant}.gguf"
    if not out.is_file():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.nthread = FTYPES[variant], threads
        if llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(), ctypes.byref(params)) != 0:
            out.unlink(missing_ok=True)
            raise RuntimeError(f"llama_model_quantize to {variant} failed")
    return out


def _converter(sdist: Path, work: Path) -> Path:
    """convert_hf_to_gguf.py and what it imports beside it (its `conversion` package and the
    gguf-py it puts first on its path: the PyPI gguf 0.19.0 of the runtime lock lacks the
    `LazyChunkedTensor` this converter uses), unpacked from the source release."""
    folder = work / "convert"
    script = folder / "convert_hf_to_gguf.py"
    if not script.is_file():
        with tarfile.open(sdist) as tar:
            prefix = f"{tar.getnames()[0].split('/')[0]}/vendor/llama.cpp/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                       and m.name[len(prefix):].split("/")[0] in ("convert_hf_to_gguf.py", "conversion", "gguf-py")]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(folder, members=members, filter="data")
    return script


def load(gguf: Path, stops: list[int], threads: int, sequences: int, length: int) -> Generate:
    """A generate over one context holding `sequences` sequences of up to `length` tokens."""
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), llama_cpp.llama_model_default_params())
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = sequences * length, N_BATCH, N_BATCH
    params.n_seq_max, params.kv_unified = sequences, False  # a cache per sequence: no attention across them
    params.n_threads = params.n_threads_batch = threads
    context = llama_cpp.llama_init_from_model(model, params)
    vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)

    def decode(tokens: list[tuple[int, int, int, bool]]) -> np.ndarray:
        """(token, position, sequence, wants logits) through the model; the logits wanted, in order."""
        for i, (token, position, sequence, wants) in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
            batch.seq_id[i][0], batch.logits[i] = sequence, wants
        batch.n_tokens = len(tokens)
        if llama_cpp.llama_decode(context, batch) != 0:
            raise RuntimeError("llama_decode failed")
        wanted = sum(t[3] for t in tokens)
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(context), shape=(wanted, vocab))

    def generate(rows: list[list[int]], new_tokens: int) -> list[list[int]]:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(context), True)
        prompt = [(t, k, s, k == len(row) - 1) for s, row in enumerate(rows) for k, t in enumerate(row)]
        first: list[int] = []
        for start in range(0, len(prompt), N_BATCH):
            first += decode(prompt[start:start + N_BATCH]).argmax(axis=1).tolist()
        out = [[t] for t in first]
        live = [s for s, t in enumerate(first) if t not in stops]
        while live and len(out[live[0]]) < new_tokens:  # every live row has as many tokens
            step = [(out[s][-1], len(rows[s]) + len(out[s]) - 1, s, True) for s in live]
            for s, token in zip(live, decode(step).argmax(axis=1).tolist(), strict=True):
                out[s].append(token)
            live = [s for s in live if out[s][-1] not in stops]
        return out

    return generate
