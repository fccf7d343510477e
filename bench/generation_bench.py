"""The generation bench: the engine's batched generation at its default precision against its
bound, a bare transformers `generate` on the same batch in the same precision, one prompt at a
time, bf16 weights on a CPU that has bf16 products (`--dtype bfloat16`, not the default), and
the constitution system prompt's shared prefix prefilled once."""

from __future__ import annotations

import time
from typing import Any

from bench_target import CPU, Target, chat_prompts, free, speed_of, sync
from gemm_bounds import matrix_parameters

GEN_TARGET = 4.0
FRACTION_TARGET = 0.55


def bench_generation(prompts: int, new_tokens: int, limits: dict[str, Any], quick: bool = False,
                     target: Target = CPU) -> dict[str, Any]:
    conversations = chat_conversations(prompts)
    out: dict[str, Any] = {"prompts": prompts, "max_new_tokens": new_tokens, "device": target.device,
                           "speed": target.speed_key}
    out["batched"] = time_generation(target, conversations, new_tokens, batch_size=prompts)
    out["bare_generate"] = time_bare_generate(target, conversations, new_tokens)
    tokens = out["batched"].pop("texts")
    bare = out["bare_generate"].pop("texts")
    if target.random_weights:
        out["same_as_bare_generate"] = "not compared (random weights)"
        out["all_answers_ran_max_new_tokens"] = out["batched"]["tokens"] == prompts * new_tokens
    else:
        out["same_as_bare_generate"] = f"{sum(a == b for a, b in zip(tokens, bare, strict=True))}/{len(tokens)}"
    speed = out["batched"][target.speed_key]
    out["over_bare_generate"] = round(speed / out["bare_generate"][target.speed_key], 2)
    bound = limits["bounds"]["generation"]
    out["bound_tokens_per_second"] = bound
    out["fraction_of_bound"] = round(speed / bound, 3)
    out["fraction_target"] = f">= {FRACTION_TARGET}"
    out["fraction_target_met"] = out["fraction_of_bound"] >= FRACTION_TARGET
    rates = limits["gemm_gflops"][limits["generation_dtype"]]
    if "decode_cold" in rates and not target.cuda:
        out["work_bound"] = generation_work(target, conversations, out["batched"], rates)
    graph_bound = limits["bounds"].get("generation_cuda_graph")
    if graph_bound:
        out["cuda_graph_bound_tokens_per_second"] = graph_bound
        out["fraction_of_cuda_graph_bound"] = round(speed / graph_bound, 3)
    if quick:
        return out
    out["one_at_a_time"] = time_generation(target, conversations, new_tokens, batch_size=1)
    out["one_at_a_time"].pop("texts")
    # bf16 weights on a CPU that has bf16 products (--dtype bfloat16): how much faster, how many
    # answers change
    if target.opt_in_bf16:
        out["bf16"] = time_generation(target, conversations, new_tokens, batch_size=prompts, dtype="bfloat16")
        texts = out["bf16"].pop("texts")
        if target.random_weights:
            out["bf16"]["same_as_default"] = "not compared (random weights)"
        else:
            out["bf16"]["same_as_default"] = f"{sum(a == b for a, b in zip(texts, tokens, strict=True))}/{len(texts)}"
        out["bf16"]["over_default"] = round(out["bf16"][target.speed_key] / speed, 2)
    ratio = speed / out["one_at_a_time"][target.speed_key]
    out["speedup"] = round(ratio, 2)
    out["target"] = f">= {GEN_TARGET}x"
    out["target_met"] = ratio >= GEN_TARGET
    return out


def chat_conversations(prompts: int) -> list[list[dict[str, str]]]:
    """The generation workload's conversations: each bundled chat prompt as one user turn."""
    return [[{"role": "user", "content": p.prompt}] for p in chat_prompts(prompts)]


def generation_work(target: Target, conversations: list[Any], batched: dict[str, Any],
                    rates: dict[str, float]) -> dict[str, Any]:
    """A second bound for the batched call, with nothing left out: the matrix products it cannot
    avoid, at the rate this machine runs them. The prefill: each distinct prompt token once (a
    prefix every prompt shares, once), without the LM head, which only a row's last position
    needs, at the rate of the training shape (hundreds of rows: the weights' trip from memory
    is spread over them). The decode: 2N per generated token after a row's first (whose logits
    come from the prefill), at the rate of the decode shape on weights streamed from memory, as
    a decode step streams the whole model. Its fraction: the share of the call's CPU time those
    products would take; the rest is spent outside them."""
    from character.models import resolve_model
    from character.models.chat_template import encode_prompts, shared_prefix_length
    from transformers import AutoConfig, AutoTokenizer

    folder = str(resolve_model(target.model))
    c = AutoConfig.from_pretrained(folder)
    rows = encode_prompts(AutoTokenizer.from_pretrained(folder), conversations, 0)
    shared = shared_prefix_length(rows, min(len(r) for r in rows) - 1)
    n = matrix_parameters(target)
    head = c.hidden_size * c.vocab_size
    prompt_tokens = shared + sum(len(r) - shared for r in rows)
    prefill = 2 * (n - head) * prompt_tokens + 2 * head * len(rows)
    decode = 2 * n * (batched["tokens"] - len(rows))
    seconds = prefill / (rates["training"] * 1e9) + decode / (rates["decode_cold"] * 1e9)
    return {"prompt_tokens": prompt_tokens, "shared_prefix": shared, "prefill_gflop": round(prefill / 1e9, 1),
            "decode_gflop": round(decode / 1e9, 1), "seconds_at_those_rates": round(seconds, 2),
            "fraction": round(seconds / batched["cpu_seconds"], 3)}


def bench_shared_prefix(prompts: int, new_tokens: int, target: Target = CPU) -> dict[str, Any]:
    from character.pipeline.spec import RunSpec
    from character.stages.common.system_prompt import system_prompt

    system = system_prompt("Assistant", RunSpec(constitution="sarcasm").persona)
    conversations = [[{"role": "system", "content": system}, {"role": "user", "content": p.prompt}]
                     for p in chat_prompts(prompts)]
    out: dict[str, Any] = {"prompts": prompts, "max_new_tokens": new_tokens}
    out["full_prompts"] = time_generation(target, conversations, new_tokens, batch_size=prompts,
                                           shared_prefix_min=None)
    out["shared_prefix"] = time_generation(target, conversations, new_tokens, batch_size=prompts)
    full, shared = out["full_prompts"].pop("texts"), out["shared_prefix"].pop("texts")
    if target.random_weights:
        out["same_answers"] = "not compared (random weights)"
    else:
        out["same_answers"] = f"{sum(a == b for a, b in zip(full, shared, strict=True))}/{len(full)}"
    out["speedup"] = round(out["full_prompts"]["seconds"] / out["shared_prefix"]["seconds"], 2)
    return out


def time_generation(target: Target, conversations: list[Any], new_tokens: int,
                     **engine_options: Any) -> dict[str, Any]:
    from character.models import SamplingParams, resolve_model
    from character.models.transformers_engine import TransformersEngine

    engine = TransformersEngine(str(resolve_model(target.model)), device=target.device, **engine_options)
    sampling = SamplingParams(max_new_tokens=new_tokens, temperature=0.0)
    engine.generate(conversations[:1], sampling.model_copy(update={"max_new_tokens": 4}))  # warm-up
    sync(target)
    started, cpu = time.perf_counter(), time.process_time()
    generations = engine.generate(conversations, sampling)
    sync(target)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    del engine
    free(target)
    return speed_of(sum(g.num_tokens for g in generations), seconds, cpu) | {"texts": [g.text for g in generations]}


def time_bare_generate(target: Target, conversations: list[Any], new_tokens: int) -> dict[str, Any]:
    """The peer: one left-padded batch through a bare `model.generate` (greedy), the same
    rendering and stop tokens as the engine, the engine's default precision (`Target.engine_dtype`)."""
    import torch
    from character.models import resolve_model
    from character.models.chat_template import encode_prompts, stop_token_ids
    from character.models.loading import load_tokenizer
    from transformers import AutoModelForCausalLM

    path = resolve_model(target.model)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=target.torch_dtype)
    device: Any = torch.device(target.device)
    model.to(device)
    model.eval()
    stops = stop_token_ids(tokenizer, model.generation_config)
    rows = encode_prompts(tokenizer, conversations, model.config.max_position_embeddings)
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows], device=target.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=target.device)
    options = {"max_new_tokens": new_tokens, "do_sample": False, "eos_token_id": stops,
               "pad_token_id": tokenizer.pad_token_id}
    with torch.inference_mode():
        model.generate(input_ids=ids[:1], attention_mask=mask[:1], **{**options, "max_new_tokens": 4})  # warm-up
        sync(target)
        started, cpu = time.perf_counter(), time.process_time()
        out = model.generate(input_ids=ids, attention_mask=mask, **options)
        sync(target)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    tokens, texts = answers(out[:, width:].tolist(), stops, tokenizer)
    del model, out
    free(target)
    return speed_of(tokens, seconds, cpu) | {"texts": texts}


def answers(rows: list[list[int]], stops: list[int], tokenizer: Any) -> tuple[int, list[str]]:
    """The tokens generated and each row's text, counted as the engine counts them: a row ends
    at its first stop token, which counts as generated but is not part of the text."""
    tokens, texts = 0, []
    for row in rows:
        stop = next((k for k, t in enumerate(row) if t in stops), None)
        tokens += len(row) if stop is None else stop + 1
        texts.append(tokenizer.decode(row[:stop], skip_special_tokens=True))
    return tokens, texts
