"""The vLLM engine: batched offline generation and scoring on GPUs (the GPU image only).

- Prompts are rendered and tokenized by `chat.encode_prompts` with the model's own transformers tokenizer,
  without extra special tokens, exactly as in the transformers engine, and handed to vLLM as
  token ids (vLLM never re-tokenizes them), so both engines see the same tokens, prefills
  included. Answers are decoded by the same tokenizer too.
- Sampling: temperature 0 is greedy. With a seed, every request gets its own seed derived from
  (seed, position in the call), so the same seed and inputs give the same outputs whatever
  else vLLM is running, and repeated conversations still get different samples.
- Generation stops at `<|im_end|>` (and EOS); an answer cut at max_new_tokens has
  finish_reason "length".
- LoRA adapters (PEFT folders) are served per request (vLLM's multi-LoRA); each adapter folder
  gets a stable integer id for the engine's lifetime. adapter=None uses the base model.
- Scoring: one request per pair with prompt logprobs (`prompt_logprobs=0`, one generated
  token that is ignored) over prompt tokens + continuation tokens + end-of-turn, summing the
  log-probabilities of the continuation's tokens and the end-of-turn token only. The
  continuation is tokenized on its own and appended to the prompt's tokens (as the
  transformers engine does), so the prompt tokens are a prefix of the scored sequence by
  construction; vLLM echoes the token ids it scored and a mismatch is an error. vLLM reports
  raw log-probabilities (before temperature or penalties), as `score` means.
- Steering is not supported: vLLM has no hooks into the residual stream (use the
  transformers engine).
- Calls are serialized by a lock (vLLM's offline `LLM` is not thread-safe).
- Serving (`generate_ids`, the persona server): requests from many threads are queued, and a
  batcher thread sends everything queued as one vLLM call, each request with its own adapter
  (a list of LoRARequests), so concurrent requests for different personas on one base share
  batches. Start the engine with `max_loras` (vLLM's adapters per batch, default 1) set to the
  personas loaded at once. An answer arrives whole: the offline engine does not stream.

vLLM is imported when an engine is constructed, so this module imports without it.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from character.errors import CharacterError, InvalidInput, NotFound
from character.models.chat_template import check_context, encode_for_scoring, encode_prompts, stop_token_ids
from character.models.engine import (
    AdapterRef,
    Conversation,
    Engine,
    Generation,
    SamplingParams,
    Steering,
    refuse_steering,
    request_seed,
)
from character.progress import Progress, ProgressEvent, silent


class VLLMEngine(Engine):
    """Generates and scores with vLLM's offline `LLM` (see the module docstring).

    `engine_args` go to `vllm.LLM` unchanged (e.g. enforce_eager=True for a fast start,
    enable_prefix_caching=False)."""

    def __init__(
        self,
        model_ref: str | Path,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        max_lora_rank: int = 64,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
        chunk_size: int = 1024,
        **engine_args: Any,
    ):
        try:
            import vllm
        except ImportError as exc:
            raise CharacterError(
                f"the vllm engine needs vLLM, which is not installed here ({exc}); it is in the GPU "
                "image only (the project's `vllm` extra). Use engine 'transformers' instead"
            ) from exc
        from character.models.loading import load_tokenizer
        from character.models.refs import resolve_model

        if not 0.0 < gpu_memory_utilization <= 1.0:
            raise InvalidInput(
                f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}",
                where="gpu_memory_utilization",
            )
        if chunk_size < 1:
            raise InvalidInput(f"chunk_size must be at least 1, got {chunk_size}", where="chunk_size")
        self.name = str(model_ref)
        self.max_lora_rank = max_lora_rank
        self.chunk_size = chunk_size
        path = resolve_model(model_ref)
        self.tokenizer = load_tokenizer(path)
        self._stop_ids = stop_token_ids(self.tokenizer, _generation_config(path))
        self._vllm = vllm
        self._llm = vllm.LLM(
            model=str(path),
            tokenizer=str(path),
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_lora=True,
            max_lora_rank=max_lora_rank,
            max_model_len=max_model_len,
            dtype=dtype,
            seed=seed,
            **engine_args,
        )
        self.precision = str(self._llm.llm_engine.model_config.dtype).removeprefix("torch.")
        self._max_len = max_model_len or _context_length(path)
        self._adapters: dict[str, Any] = {}
        self._next_lora_id = 1  # vLLM ids start at 1; never reused, vLLM caches adapters by id
        self._adapters_lock = threading.Lock()
        self._lock = threading.Lock()
        self._queued: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
        self._batcher: threading.Thread | None = None
        self._batcher_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VLLMEngine({self.name!r})"

    # --- generation ---------------------------------------------------------------------
    def generate(
        self,
        conversations: Sequence[Conversation],
        sampling: SamplingParams,
        adapter: AdapterRef | None = None,
        steering: Steering | None = None,
        progress: Progress = silent,
    ) -> list[Generation]:
        refuse_steering(steering, "vllm", "vLLM has no residual-stream hooks")
        prompts = encode_prompts(self.tokenizer, conversations, self._max_len)
        n = len(prompts)
        if n == 0:
            return []
        params = [self._sampling_params(sampling, i) for i in range(n)]
        results: list[Generation] = []
        task = "generate"
        progress(ProgressEvent(task, 0, n))
        with self._lock:
            lora = self._lora_request(adapter)
            for start in range(0, n, self.chunk_size):
                end = min(start + self.chunk_size, n)
                outputs = self._run(prompts[start:end], params[start:end], lora)
                results.extend(self._finish(out.outputs[0]) for out in outputs)
                progress(ProgressEvent(task, end, n))
        return results

    def _sampling_params(self, sampling: SamplingParams, index: int) -> Any:
        kw: dict[str, Any] = {
            "max_tokens": sampling.max_new_tokens,
            "stop_token_ids": self._stop_ids,
            "repetition_penalty": sampling.repetition_penalty,
        }
        if sampling.temperature > 0:
            kw |= {"temperature": sampling.temperature, "top_p": sampling.top_p}
            if sampling.seed is not None:
                kw["seed"] = request_seed(sampling.seed, index)
        else:
            kw["temperature"] = 0.0
        return self._vllm.SamplingParams(**kw)

    def _run(self, prompts: list[list[int]], params: Any, lora: Any) -> list[Any]:
        from vllm.inputs import TokensPrompt

        requests = [TokensPrompt(prompt_token_ids=ids) for ids in prompts]
        outputs: list[Any] = self._llm.generate(requests, params, lora_request=lora, use_tqdm=False)
        return outputs

    def _finish(self, completion: Any) -> Generation:
        """A Generation from vLLM's CompletionOutput, cut at the first stop token; the text is
        decoded by our tokenizer so it matches the transformers engine's."""
        row = list(completion.token_ids)
        stop = self._first_stop(row)
        reason: Literal["stop", "length"]
        if stop is not None:
            tokens, reason, count = row[:stop], "stop", stop + 1
        elif completion.finish_reason == "length":
            tokens, reason, count = row, "length", len(row)
        elif completion.finish_reason == "stop":  # the stop token was not echoed in token_ids
            tokens, reason, count = row, "stop", len(row) + 1
        else:
            raise CharacterError(f"vLLM ended a request with finish_reason {completion.finish_reason!r}")
        return Generation(text=self._text(tokens), finish_reason=reason, num_tokens=count)

    def _first_stop(self, row: list[int]) -> int | None:
        return next((k for k, t in enumerate(row) if t in self._stop_ids), None)

    def _text(self, tokens: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(tokens), skip_special_tokens=True))

    # --- serving ------------------------------------------------------------------------
    def generate_ids(
        self,
        prompt: list[int],
        sampling: SamplingParams,
        adapter: AdapterRef | None = None,
        on_step: Callable[[list[int]], None] | None = None,
    ) -> Generation:
        """One answer to a prompt given as token ids, batched with the other requests queued at
        the time (see the module docstring); `on_step` gets the whole answer's tokens once."""
        if not prompt:
            raise InvalidInput("the prompt is empty; give at least one token", where="prompt")
        check_context(len(prompt), self._max_len, "prompt")
        lora = self._lora_request(adapter)  # not under the engine's lock, which a running batch holds
        request = _Queued(list(prompt), self._sampling_params(sampling, 0), lora)
        self._queued.put(request)
        self._start_batcher()
        completion = request.answer.result()
        if on_step is not None:
            on_step(list(completion.token_ids))
        return self._finish(completion)

    def encode_chat(self, conversation: Conversation) -> list[int]:
        """The conversation's token ids as `generate` renders it (for `generate_ids`)."""
        return encode_prompts(self.tokenizer, [conversation], self._max_len)[0]

    def answer_text(self, tokens: Sequence[int]) -> str:
        """The text of an answer's tokens so far, up to its stop token."""
        row = list(tokens)
        stop = self._first_stop(row)
        return self._text(row if stop is None else row[:stop])

    def unload_adapter(self, adapter: AdapterRef) -> bool:
        """Drop a loaded adapter from vLLM (an LRU of personas evicting one); False when it was
        not loaded. A later call with it loads it again, under a new id."""
        key = str(Path(adapter).expanduser().resolve())
        with self._lock, self._adapters_lock:
            lora = self._adapters.pop(key, None)
            if lora is None:
                return False
            self._llm.llm_engine.remove_lora(lora.lora_int_id)
            return True

    def _start_batcher(self) -> None:
        with self._batcher_lock:
            if self._batcher is None:
                self._batcher = threading.Thread(target=self._batches, name="vllm-batcher", daemon=True)
                self._batcher.start()

    def _batches(self) -> None:
        while True:
            batch = [self._queued.get()]
            while True:  # everything that arrived while the last batch ran goes into this one
                try:
                    batch.append(self._queued.get_nowait())
                except queue.Empty:
                    break
            try:
                with self._lock:
                    outputs = self._run([r.prompt for r in batch], [r.params for r in batch],
                                        [r.lora for r in batch])
            except BaseException as err:  # every waiter of this batch gets the error
                for request in batch:
                    request.answer.set_exception(err)
                continue
            for request, output in zip(batch, outputs, strict=True):
                request.answer.set_result(output.outputs[0])

    # --- scoring ------------------------------------------------------------------------
    def score(
        self,
        conversations: Sequence[Conversation],
        continuations: Sequence[str],
        adapter: AdapterRef | None = None,
        progress: Progress = silent,
    ) -> list[float]:
        prompts, conts = encode_for_scoring(self.tokenizer, conversations, continuations, self._max_len)
        full = [prompt + cont for prompt, cont in zip(prompts, conts, strict=True)]
        sizes = [len(cont) for cont in conts]
        if not full:
            return []
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        # one vLLM call for all of them: it batches them itself, so only the end is reported
        progress(ProgressEvent("score", 0, len(full)))
        with self._lock:
            outputs = self._run(full, params, self._lora_request(adapter))
        progress(ProgressEvent("score", len(full), len(full)))
        return [_continuation_logprob(out, ids, k) for out, ids, k in zip(outputs, full, sizes, strict=True)]

    # --- adapters -----------------------------------------------------------------------
    def _lora_request(self, adapter: AdapterRef | None) -> Any:
        """vLLM's LoRARequest for the adapter folder (None for the base model), with an id that
        stays the same for that folder (vLLM caches adapters by id)."""
        if adapter is None:
            return None
        folder = Path(adapter).expanduser().resolve()
        key = str(folder)
        with self._adapters_lock:
            if key not in self._adapters:
                self._adapters[key] = self._new_lora_request(folder)
            return self._adapters[key]

    def _new_lora_request(self, folder: Path) -> Any:
        config_file = folder / "adapter_config.json"
        if not config_file.is_file():
            raise NotFound(f"no PEFT adapter at {folder} (adapter_config.json missing)")
        rank = int(json.loads(config_file.read_text()).get("r", 0))
        if rank > self.max_lora_rank:
            raise InvalidInput(
                f"the adapter at {folder} has LoRA rank {rank}, above this engine's max_lora_rank "
                f"{self.max_lora_rank}; start the engine with max_lora_rank={rank} or more",
                where="adapter",
            )
        from vllm.lora.request import LoRARequest

        lora_id, self._next_lora_id = self._next_lora_id, self._next_lora_id + 1
        return LoRARequest(f"adapter-{lora_id}", lora_id, str(folder))


@dataclass
class _Queued:
    """A serving request waiting for the batcher: its prompt, vLLM sampling and LoRA request."""

    prompt: list[int]
    params: Any
    lora: Any
    answer: Future[Any] = field(default_factory=Future)


def _continuation_logprob(output: Any, sent: list[int], size: int) -> float:
    """The summed log-probabilities of the last `size` prompt tokens of a scoring request."""
    if list(output.prompt_token_ids) != sent:
        raise CharacterError("vLLM scored other tokens than the ones sent; cannot score")
    entries = output.prompt_logprobs[-size:]
    return float(sum(entry[token].logprob for entry, token in zip(entries, sent[-size:], strict=True)))


def _generation_config(path: Path) -> Any:
    """The model's generation_config.json (its EOS ids), or None when it has none."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(str(path))
    except OSError:
        return None


def _context_length(path: Path) -> int:
    """max_position_embeddings from the model's config.json (0 when unknown)."""
    config = json.loads((path / "config.json").read_text())
    return int(config.get("max_position_embeddings") or 0)
