"""The serving bench: the persona server (`oct serve-personas`) under 1, 4 and 16 concurrent
clients over two personas, against the bare engine in the same run.

    python bench/serving_bench.py [--requests 16] [--new-tokens 32] [--clients 1,4,16] [--out FILE]

Two trained runs on SmolLM2 whose DPO and SFT adapters have random weights (the serving tests'
stand-in for trained ones: speed does not depend on the adapters' values) sit in a store in a
temporary folder. The server is the one `oct serve-personas` builds (TLS and a bearer token,
made in that folder), on 127.0.0.1, in this process; the clients are the official `openai`
client, streaming, greedy, the requests alternating between the two personas. Each level
sends the same `--requests` prompts (at least one a client) from that many concurrent clients.

Figures per level: time to first token (median and 90th percentile over the requests: from
sending the request to the first piece of text) and completion tokens per wall second over the
level. The bare engine, on the same prompts in the same run: the persona pool one request at a
time (the server's own generation path without HTTP, TLS and SSE), and every prompt as one
batch on the engine with one persona's adapter (what one shared batch would do). Wall seconds,
not CPU-seconds: the server and its clients share this process. Served answers are compared
with the pool's, request by request (greedy, so they must be the same).
"""

from __future__ import annotations

import argparse
import json
import ssl
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_tables import table
from bench_target import chat_prompts

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2"


@dataclass(frozen=True)
class Answer:
    """One streamed answer as a client saw it."""

    model: str
    text: str
    tokens: int
    first_token_s: float


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _trained_runs(store: Any, folder: Path) -> list[str]:
    sys.path.insert(0, str(ROOT))  # the serving tests' trained-run fixture, reused as is
    from tests.unit.serving.helpers import trained_run

    return [trained_run(store, folder, seed=seed, base=MODEL).run_id for seed in (1, 2)]


def _client(base_url: str, ca: Path, token: str) -> Any:
    import openai

    trust = ssl.create_default_context(cafile=str(ca))
    return openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=600,
                         http_client=openai.DefaultHttpxClient(verify=trust))


def _ask(api: Any, model: str, messages: list[dict[str, str]], new_tokens: int) -> Answer:
    sent = time.perf_counter()
    first, tokens = 0.0, 0
    pieces: list[str] = []
    stream = api.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=new_tokens,
                                         stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if not pieces:
                first = time.perf_counter() - sent
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return Answer(model, "".join(pieces), tokens, first)


def _level(api: Any, requests: list[tuple[str, list[dict[str, str]]]], clients: int, new_tokens: int
           ) -> tuple[dict[str, Any], list[Answer]]:
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda r: _ask(api, r[0], r[1], new_tokens), requests))
    wall = time.perf_counter() - start
    firsts = [a.first_token_s for a in answers]
    tokens = sum(a.tokens for a in answers)
    return {"clients": clients, "requests": len(answers), "tokens": tokens, "wall_seconds": round(wall, 2),
            "tokens_per_second": round(tokens / wall, 1),
            "first_token_median_s": round(statistics.median(firsts), 3),
            "first_token_p90_s": round(_percentile(firsts, 0.9), 3)}, answers


def _bare(server: Any, store: Any, requests: list[tuple[str, list[dict[str, str]]]], new_tokens: int
          ) -> tuple[dict[str, Any], list[str]]:
    from character.models.engine import SamplingParams
    from character.serving.resolve import resolve

    greedy = SamplingParams(max_new_tokens=new_tokens, temperature=0.0, top_p=1.0, repetition_penalty=1.0)
    personas = {model: resolve(store, model) for model, _ in requests}
    texts, tokens = [], 0
    start = time.perf_counter()
    for model, messages in requests:
        persona = personas[model]
        generation = server.pool.generate(persona, server.pool.encode_chat(persona, messages), greedy)
        texts.append(generation.text)
        tokens += generation.num_tokens
    one_wall = time.perf_counter() - start
    first = personas[requests[0][0]]
    loaded = server.pool.engine(first)
    start = time.perf_counter()
    batch = loaded.engine.generate([messages for _, messages in requests], greedy, adapter=loaded.adapter)
    batch_wall = time.perf_counter() - start
    batch_tokens = sum(g.num_tokens for g in batch)
    return {"one_at_a_time_tokens_per_second": round(tokens / one_wall, 1),
            "batched_tokens_per_second": round(batch_tokens / batch_wall, 1),
            "batch": len(requests)}, texts


def bench_serving(requests: int, new_tokens: int, levels: list[int]) -> dict[str, Any]:
    from character.platform import Limits, PlatformConfig
    from character.security.auth import ensure_local_token, local_auth_dir
    from character.security.pki import ensure_local_pki
    from character.serving.server import ServerOptions, build_server
    from character.store import open_store

    with tempfile.TemporaryDirectory(prefix="oct-serving-bench-") as tmp:
        home = Path(tmp)
        store = open_store(str(home / "store"))
        print("making two trained runs with random adapters ...", flush=True)
        runs = _trained_runs(store, home / "adapters")
        tls, tokens_file = ensure_local_pki(home), ensure_local_token(home)
        token = (local_auth_dir(home) / "token").read_text().strip()
        limits = Limits(max_personas_loaded=len(runs), max_requests_per_caller=max(levels),
                        max_new_tokens=new_tokens)
        server = build_server(store, ServerOptions(port=0, health_port=0, workers=max(levels)), tls, tokens_file,
                              PlatformConfig(limits=limits), device="cpu").start()
        try:
            api = _client(server.base_url, tls / "ca.crt", token)
            for run in runs:  # load both adapters before anything is timed
                _ask(api, run, [{"role": "user", "content": "Hello."}], 4)
            figures: dict[str, Any] = {"model": MODEL, "personas": len(runs), "max_new_tokens": new_tokens,
                                       "levels": []}
            for clients in levels:
                prompts = chat_prompts(max(requests, clients))
                asked = [(runs[i % len(runs)], [{"role": "user", "content": p.prompt}]) for i, p in enumerate(prompts)]
                print(f"serving: {clients} concurrent clients, {len(asked)} requests ...", flush=True)
                level, answers = _level(api, asked, clients, new_tokens)
                bare, pool_texts = _bare(server, store, asked, new_tokens)
                level["same_as_engine"] = f"{sum(a.text == t for a, t in zip(answers, pool_texts, strict=True))}" \
                                          f"/{len(answers)}"
                level["bare_engine"] = bare
                level["over_one_at_a_time"] = round(level["tokens_per_second"]
                                                    / bare["one_at_a_time_tokens_per_second"], 2)
                level["over_batched"] = round(level["tokens_per_second"] / bare["batched_tokens_per_second"], 2)
                figures["levels"].append(level)
        finally:
            server.stop()
    return figures


def serving_table(figures: dict[str, Any]) -> str:
    rows = [("clients", "tok/s served", "first token (median / p90)", "engine one at a time", "engine batched",
             "served / one at a time", "served / batched", "same answers")]
    for level in figures["levels"]:
        bare = level["bare_engine"]
        rows.append((str(level["clients"]), f"{level['tokens_per_second']}",
                     f"{level['first_token_median_s']} s / {level['first_token_p90_s']} s",
                     f"{bare['one_at_a_time_tokens_per_second']}",
                     f"{bare['batched_tokens_per_second']} (x{bare['batch']})",
                     f"{level['over_one_at_a_time']}x", f"{level['over_batched']}x", level["same_as_engine"]))
    return table(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=16, help="requests per level (at least one a client)")
    parser.add_argument("--new-tokens", type=int, default=32, help="max_tokens of every request (greedy)")
    parser.add_argument("--clients", default="1,4,16", help="concurrent clients per level, comma-separated")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench-serving.json")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    if args.requests < 1 or args.new_tokens < 1 or min(levels) < 1:
        parser.error("--requests, --new-tokens and every --clients level must be at least 1")
    figures = bench_serving(args.requests, args.new_tokens, levels)
    print(serving_table(figures))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
