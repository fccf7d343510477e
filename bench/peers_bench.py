"""The generation bench's peers (`make bench-peers`): the generation workload of `run_bench.py`
(32 bundled chat prompts x 64 new tokens, greedy, SmolLM2-135M-Instruct, the same rendered
prompt tokens and stop tokens) through this project's engine and through other engines:

    transformers       a bare `model.generate` on the same left-padded batch (fp32, the engine's
                       default precision on a CPU)
    ctranslate2-int8   CTranslate2, int8 weights and products (`peers_ctranslate2.py`)
    ctranslate2-fp32   CTranslate2, float32
    llama.cpp-F16      llama.cpp through llama-cpp-python, the model converted to an F16 GGUF
                       by llama.cpp's convert_hf_to_gguf.py (`peers_llamacpp.py`)
    llama.cpp-Q4_0     the same GGUF quantized to Q4_0 by llama.cpp's own quantizer

    python bench/peers_bench.py [--install] [--prompts 32] [--new-tokens 64] [--work out/peers]
                                [--out out/bench-peers.json]

Each engine runs in its own process (a warm-up call, then the timed call), so no engine's
threads, allocations or imports weigh on another's figure; the speed is tokens per CPU-second
of that process, the figure `run_bench.py` compares with its bounds. Every peer is printed as
the ratio of the project's engine's speed, measured in the same run, to the peer's (above 1:
the project's engine is faster), and the last line is exactly one `peers: NAME RATIOx, ...`.
Models are converted offline once, into --work. `--install` first installs, into this
interpreter's environment, the pins of requirements/peers.txt that are missing (with their
hashes, without dependencies: the runtime lock already has them); a peer whose packages cannot
be installed, or whose run fails, is printed with the reason, and the others still run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_target import CPU, Generate, speed_of
from generation_bench import answers, chat_conversations, time_bare_generate, time_generation

ROOT = Path(__file__).resolve().parents[1]
PEERS_LOCK = ROOT / "requirements" / "peers.txt"
ENGINE = "engine"
ENGINE_BF16 = "engine-bf16"
"""The project's engine with `dtype="bfloat16"` (opt-in, not the default: docs/proof-runs.md,
"Precision"), measured on a CPU with bf16 products; reported beside the peers, not one of them."""
CTRANSLATE2 = ("ctranslate2",)
# diskcache: llama-cpp-python's own dependency; sentencepiece: convert_hf_to_gguf.py imports it
# before it looks for a tokenizer.model (SmolLM2 has none: it then reads tokenizer.json)
LLAMA_CPP = ("llama-cpp-python", "diskcache", "sentencepiece")


@dataclass(frozen=True)
class Peer:
    backend: str
    variant: str
    packages: tuple[str, ...]  # requirements/peers.txt's pins it needs beyond the runtime lock


PEERS = {
    "transformers": Peer("transformers", "fp32", ()),
    "ctranslate2-int8": Peer("ctranslate2", "int8", CTRANSLATE2),
    "ctranslate2-fp32": Peer("ctranslate2", "float32", CTRANSLATE2),
    "llama.cpp-F16": Peer("llama.cpp", "F16", LLAMA_CPP),
    "llama.cpp-Q4_0": Peer("llama.cpp", "Q4_0", LLAMA_CPP),
}


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements(lock: str) -> dict[str, str]:
    """name -> its block in a pip-compile lock (the `name==version \\` line and its hash lines)."""
    blocks: dict[str, str] = {}
    name = None
    for line in lock.splitlines():
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if pin:
            name = normalised(pin.group(1))
            blocks[name] = ""
        elif not line.startswith("    --hash="):
            name = None
        if name is not None:
            blocks[name] += line + "\n"
    return blocks


def requirements_file(names: tuple[str, ...], folder: Path) -> Path:
    """A requirements file of `names`' blocks of requirements/peers.txt, pinned with hashes."""
    blocks = pinned_requirements(PEERS_LOCK.read_text())
    path = folder / "requirements.txt"
    path.write_text("".join(blocks[normalised(n)] for n in names))
    return path


def install(names: tuple[str, ...]) -> str | None:
    """Install the missing ones of `names` at requirements/peers.txt's pins; why not, or None."""
    pins = pinned_requirements(PEERS_LOCK.read_text())
    missing = tuple(n for n in names if _installed(n) != _version(pins[normalised(n)]))
    if not missing:
        return None
    print(f"installing {', '.join(missing)} (requirements/peers.txt) ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="oct-peers-") as tmp:
        command = [sys.executable, "-m", "pip", "install", "--require-hashes", "--no-deps",
                   "-r", str(requirements_file(missing, Path(tmp)))]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return None
    return f"could not install {', '.join(missing)}: {_tail(done.stderr)}"


def fetch_sdist(name: str, work: Path) -> Path:
    """The source release of `name` at its requirements/peers.txt pin (its hash checked)."""
    folder = work / "sdist"
    folder.mkdir(parents=True, exist_ok=True)
    version = _version(pinned_requirements(PEERS_LOCK.read_text())[normalised(name)])
    found = sorted(folder.glob(f"{name.replace('-', '_')}-{version}.tar.gz"))
    if found:
        return found[0]
    with tempfile.TemporaryDirectory(prefix="oct-peers-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                   "--require-hashes", "-r", str(requirements_file((name,), Path(tmp))), "-d", str(folder)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(folder.glob(f"{name.replace('-', '_')}-{version}.tar.gz"))
    if done.returncode != 0 or not found:
        raise RuntimeError(f"could not download {name}=={version}'s source release: {_tail(done.stderr)}")
    return found[0]


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The engine's tokens per CPU-second over each measured peer's."""
    return ratios_of(results, ENGINE)


def ratios_of(results: dict[str, dict[str, Any]], mine: str) -> dict[str, float]:
    """`mine`'s tokens per CPU-second over each measured peer's."""
    engine = results[mine]["tokens_per_cpu_second"]
    return {name: engine / r["tokens_per_cpu_second"] for name, r in results.items()
            if name not in (ENGINE, ENGINE_BF16) and "tokens_per_cpu_second" in r}


def peers_line(ratio: dict[str, float]) -> str:
    return "peers: " + ", ".join(f"{name} {value:.2f}x" for name, value in ratio.items())


def time_peer(generate: Generate, rows: list[list[int]], new_tokens: int, stops: list[int],
              tokenizer: Any) -> dict[str, Any]:
    """A peer's generate (prompt token rows -> generated token rows) timed as the engine is: a
    warm-up call, then the whole workload in one call; counted and decoded as the engine's."""
    generate(rows[:1], 4)
    started, cpu = time.perf_counter(), time.process_time()
    generated = generate(rows, new_tokens)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    tokens, texts = answers(generated, stops, tokenizer)
    return speed_of(tokens, seconds, cpu) | {"texts": texts}


def worker(name: str, prompts: int, new_tokens: int, work: Path) -> dict[str, Any]:
    """One engine's figure, in this process."""
    conversations = chat_conversations(prompts)
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    if name == ENGINE:
        return time_generation(CPU, conversations, new_tokens, batch_size=prompts) | {
            "settings": f"TransformersEngine, its defaults ({CPU.engine_dtype}, the batch in one call, a shared "
                        "prefix prefilled once)"}
    if name == ENGINE_BF16:
        return time_generation(CPU, conversations, new_tokens, batch_size=prompts, dtype="bfloat16") | {
            "settings": "TransformersEngine with dtype=\"bfloat16\" (--dtype bfloat16, opt-in), otherwise its "
                        "defaults"}
    if name == "transformers":
        return time_bare_generate(CPU, conversations, new_tokens) | {
            "settings": f"AutoModelForCausalLM.generate, {CPU.engine_dtype} (the engine's), one left-padded batch, "
                        "do_sample=False"}
    from character.models import resolve_model
    from character.models.chat_template import encode_prompts, stop_token_ids
    from character.models.loading import load_tokenizer
    from transformers import GenerationConfig

    peer, model = PEERS[name], resolve_model("smollm2")
    tokenizer = load_tokenizer(model)
    stops = stop_token_ids(tokenizer, GenerationConfig.from_pretrained(str(model)))
    rows = encode_prompts(tokenizer, conversations, 0)
    work.mkdir(parents=True, exist_ok=True)
    if peer.backend == "ctranslate2":
        import peers_ctranslate2

        generate = peers_ctranslate2.load(peers_ctranslate2.prepare(model, work), peer.variant, tokenizer, stops,
                                          threads)
        settings = peers_ctranslate2.settings(peer.variant)
    else:
        import peers_llamacpp

        gguf = peers_llamacpp.prepare(model, work, fetch_sdist("llama-cpp-python", work), peer.variant, threads)
        generate = peers_llamacpp.load(gguf, stops, threads, len(rows), max(len(r) for r in rows) + new_tokens)
        settings = peers_llamacpp.settings(peer.variant)
    return time_peer(generate, rows, new_tokens, stops, tokenizer) | {"settings": f"{settings}, {threads} thread(s)"}


def run_worker(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """`name`'s figure from a process of its own; {"unavailable": why} where it could not run."""
    command = [sys.executable, __file__, "--worker", name, "--prompts", str(args.prompts),
               "--new-tokens", str(args.new_tokens), "--work", str(args.work)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"unavailable": f"its process failed (exit {done.returncode}): {_tail(done.stderr)}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--install", action="store_true", help="install requirements/peers.txt's missing pins first")
    parser.add_argument("--prompts", type=int, default=32, help="prompts, generated for in one call")
    parser.add_argument("--new-tokens", type=int, default=64, help="new tokens per prompt (greedy)")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "peers", help="converted models (kept)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench-peers.json", help="where the JSON goes")
    parser.add_argument("--worker", choices=(ENGINE, ENGINE_BF16, *PEERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        try:
            print(json.dumps(worker(args.worker, args.prompts, args.new_tokens, args.work.resolve())))
        except ModuleNotFoundError as exc:
            print(json.dumps({"unavailable": f"{exc.name} is not installed (`make bench-peers` installs "
                                             "requirements/peers.txt)"}))
        return

    not_installed: dict[tuple[str, ...], str | None] = {}
    if args.install:
        for packages in dict.fromkeys(p.packages for p in PEERS.values() if p.packages):
            not_installed[packages] = install(packages)
    load_before = [round(x, 2) for x in os.getloadavg()]
    results: dict[str, dict[str, Any]] = {}
    for name in (ENGINE, *((ENGINE_BF16,) if CPU.opt_in_bf16 else ()), *PEERS):
        why = not_installed.get(PEERS[name].packages) if name in PEERS else None
        print(f"{name} ...", flush=True)
        results[name] = {"unavailable": why} if why else run_worker(name, args)
        if "unavailable" in results[name]:
            print(f"  not measured: {results[name]['unavailable']}", flush=True)
        if name == ENGINE and "unavailable" in results[name]:
            sys.exit("the project's engine could not run, so no peer can be compared with it")
    engine_texts = results[ENGINE].pop("texts")
    for r in results.values():
        if "texts" in r:
            texts = r.pop("texts")
            r["same_as_engine"] = f"{sum(a == b for a, b in zip(texts, engine_texts, strict=True))}/{len(texts)}"
    ratio = ratios(results)
    figures = {"prompts": args.prompts, "max_new_tokens": args.new_tokens, "cpus": os.cpu_count(),
               "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
               "engines": results, "engine_over_peer": {n: round(v, 2) for n, v in ratio.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(_table(results, ratio))
    print(f"load average before / after: {load_before} / {figures['load_average_after']}; JSON: {args.out}")
    if "tokens_per_cpu_second" in results.get(ENGINE_BF16, {}):
        opt_in = ratios_of(results, ENGINE_BF16)
        figures["engine_bf16_over_peer"] = {n: round(v, 2) for n, v in opt_in.items()}
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
        print("opt-in --dtype bfloat16 (not the default): " + ", ".join(f"{n} {v:.2f}x" for n, v in opt_in.items()))
    print(peers_line(ratio))


def _table(results: dict[str, dict[str, Any]], ratio: dict[str, float]) -> str:
    rows = [("engine", "tok/CPU-s", "engine / it", "answers = engine's", "settings")]
    for name, r in results.items():
        if "unavailable" in r:
            rows.append((name, "not measured", "", "", r["unavailable"]))
            continue
        mine = r["tokens_per_cpu_second"] / results[ENGINE]["tokens_per_cpu_second"]
        versus = "1.00x" if name == ENGINE else f"{ratio[name]:.2f}x" if name in ratio else f"(it: {mine:.2f}x)"
        rows.append((name, f"{r['tokens_per_cpu_second']}", versus,
                     r.get("same_as_engine", ""), r["settings"]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[4]]) for row in rows)


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _version(block: str) -> str:
    return block.split("==", 1)[1].split()[0]


def _tail(stderr: str) -> str:
    return " | ".join(stderr.strip().splitlines()[-3:]) or "no output"


if __name__ == "__main__":
    main()
