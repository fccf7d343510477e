"""The transformers engine: batched generation and scoring on CPU or GPU.

- Prompts are rendered and tokenized by `chat.encode_prompts` (no extra special tokens), sorted by
  length into batches of `batch_size`; results come back in input order.
- Generation runs its own decode loop over the model's forward pass (not `model.generate`), so
  that no work is spent outside the matrix products it needs:
  - rows of a batch that start with the same tokens (a long system prompt: the constitution for
    the teacher, introspection, a judge's instructions; SmolLM2's default system prompt) prefill
    that shared prefix once and copy its KV cache to every row;
  - the rest of each row is prefilled in groups of similar length, so padding is not computed;
    the groups' caches are joined into one, padded in the middle (prefix, padding, own tokens),
    each row's positions continuing its own tokens;
  - only the last position goes through the LM head, and greedy decoding takes the argmax of
    the model's logits as they are (no copy of the vocabulary's logits);
  - finished rows leave the batch (once enough have finished to pay for copying the cache).
  Greedy output is token-for-token that of `model.generate` on each prompt alone (tested).
- Sampling: temperature 0 is greedy; otherwise transformers' own logits processors (repetition
  penalty over the row's prompt and answer, temperature, top-p) and a multinomial draw. With a
  seed, the call runs under its own RNG state (the global torch RNG is restored afterwards), so
  the same seed, inputs and batch size give the same outputs.
- Scoring prefills each distinct prompt of a batch once, as generation prefills, and runs its
  continuations (a judge's options, a question's choices, a pair's two answers) on top of its
  cache.
- Generation stops at `<|im_end|>` (and EOS); an answer cut at max_new_tokens has
  finish_reason "length".
- `generate_ids` answers one prompt given as token ids, reporting each step (streaming);
  `unload_adapter` drops an adapter's weights (a bounded cache of adapters evicting it).
- LoRA adapters (PEFT folders) are loaded once per path and switched per call; with
  adapter=None the adapters are disabled, so the base model answers exactly as before.
  The engine loads its own private copy of the model (adapters are injected into it);
  outside a call the adapter layers are disabled, so `engine.model` is always the base.
- Steering: forward hooks on the decoder layers add `coefficient * vector` to each listed
  layer's output hidden states, at every position, only for the duration of the call.
- Calls are serialized by a lock (adapters and hooks are engine-wide state).
- Precision: `dtype` (default bf16 on a GPU, float32 on a CPU: `loading.resolve_dtype`);
  scores are summed from float32 log-softmaxes whatever the weights' precision.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from transformers.cache_utils import DynamicLayer

from character.errors import InvalidInput, NotFound
from character.models.chat_template import (
    check_context,
    encode_for_scoring,
    encode_prompts,
    shared_prefix_length,
    stop_token_ids,
)
from character.models.engine import AdapterRef, Conversation, Engine, Generation, SamplingParams, Steering
from character.models.loading import load_model
from character.progress import Progress, ProgressEvent, silent


class TransformersEngine(Engine):
    """Generates and scores with a transformers causal LM (see the module docstring).

    batch_size 32 by default: on a 2-core CPU, SmolLM2 decodes ~1.2x more tokens/s at 32 than
    at 16 (1.7x at 64, at the price of memory); GPUs want larger batches still.
    shared_prefix_min: the shortest shared prefix (tokens) prefilled once per batch; below it the
    extra forward pass and cache copies cost about what they save. 16 catches SmolLM2's default
    system prompt (~20 tokens of every plain chat). None turns prefix sharing off."""

    def __init__(
        self,
        model_ref: str | Path,
        device: Any = None,
        dtype: Any = None,
        batch_size: int = 32,
        shared_prefix_min: int | None = 16,
    ):
        import torch

        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, got {batch_size}", where="batch_size")
        if shared_prefix_min is not None and shared_prefix_min < 1:
            raise InvalidInput(
                f"shared_prefix_min must be at least 1 (or None), got {shared_prefix_min}", where="shared_prefix_min"
            )
        self.name = str(model_ref)
        self.batch_size = batch_size
        self.shared_prefix_min = shared_prefix_min
        self.model, self.tokenizer = load_model(model_ref, device, dtype, shared=False)
        self.device = self.model.device
        self.precision = str(self.model.dtype).removeprefix("torch.")
        self.tokenizer.padding_side = "left"
        self._stop_ids = stop_token_ids(self.tokenizer, self.model.generation_config)
        self._max_positions = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        self._peft: Any = None
        self._adapters: dict[str, str] = {}
        self._lock = threading.RLock()
        self._torch = torch

    def __repr__(self) -> str:
        return f"TransformersEngine({self.name!r}, device={str(self.device)!r}, precision={self.precision!r})"

    # --- generation ---------------------------------------------------------------------
    def generate(
        self,
        conversations: Sequence[Conversation],
        sampling: SamplingParams,
        adapter: AdapterRef | None = None,
        steering: Steering | None = None,
        progress: Progress = silent,
    ) -> list[Generation]:
        torch = self._torch
        prompts = encode_prompts(self.tokenizer, conversations, self._max_positions)
        n = len(prompts)
        if n == 0:
            return []
        order = sorted(range(n), key=lambda i: -len(prompts[i]))
        results: list[Generation | None] = [None] * n
        task = "generate"
        progress(ProgressEvent(task, 0, n))
        with (
            self._lock,
            self._adapter(adapter) as model,
            self._steering(steering),
            self._seeded(sampling.seed),
            torch.inference_mode(),
        ):
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                new = self._decode(model, [prompts[i] for i in idx], sampling)
                for i, row in zip(idx, new, strict=True):
                    results[i] = self._finish(row)
                progress(ProgressEvent(task, min(start + self.batch_size, n), n))
        return [r for r in results if r is not None]

    def generate_ids(
        self,
        prompt: list[int],
        sampling: SamplingParams,
        adapter: AdapterRef | None = None,
        on_step: Callable[[list[int]], None] | None = None,
    ) -> Generation:
        """One answer to a prompt given as token ids (a raw completion prompt, or a chat rendered
        by `encode_prompts`): the same decode as `generate` on a batch of one. `on_step` gets
        the answer's tokens so far after each step (streaming)."""
        if not prompt:
            raise InvalidInput("the prompt is empty; give at least one token", where="prompt")
        check_context(len(prompt), self._max_positions, "prompt")
        with self._lock, self._adapter(adapter) as model, self._seeded(sampling.seed), self._torch.inference_mode():
            row = self._decode(model, [prompt], sampling, None if on_step is None else lambda new: on_step(new[0]))[0]
        return self._finish(row)

    def encode_chat(self, conversation: Conversation) -> list[int]:
        """The conversation's token ids as `generate` renders it (for `generate_ids`)."""
        return encode_prompts(self.tokenizer, [conversation], self._max_positions)[0]

    def answer_text(self, tokens: Sequence[int]) -> str:
        """The text of an answer's tokens so far (`generate_ids`'s `on_step`), up to its stop token."""
        return self._finish(list(tokens)).text

    def unload_adapter(self, adapter: AdapterRef) -> bool:
        """Drop a loaded adapter's weights (an LRU of adapters evicting one); False when it was
        not loaded. A later call with it loads it again."""
        key = str(Path(adapter).expanduser().resolve())
        with self._lock:
            name = self._adapters.pop(key, None)
            if name is None:
                return False
            self._peft.delete_adapter(name)
            self._peft.base_model.disable_adapter_layers()
            return True

    def _decode(
        self,
        model: Any,
        rows: list[list[int]],
        sampling: SamplingParams,
        on_step: Callable[[list[list[int]]], None] | None = None,
    ) -> list[list[int]]:
        """The new tokens of each row, up to its first stop token (included) or max_new_tokens;
        `on_step` sees them after every step."""
        torch = self._torch
        cache, mask, logits = self._prefill(model, rows, max(len(r) for r in rows) + sampling.max_new_tokens)
        processors = self._processors(sampling)
        positions = torch.tensor([len(r) for r in rows], device=self.device)
        live = list(range(len(rows)))  # the rows still in the batch, in batch order
        done = [False] * len(rows)
        new: list[list[int]] = [[] for _ in rows]
        for step in range(sampling.max_new_tokens):
            tokens = self._pick(logits, processors, [rows[r] + new[r] for r in live])
            for r, token in zip(live, tokens.tolist(), strict=True):
                if not done[r]:
                    new[r].append(token)
                    done[r] = token in self._stop_ids
            if on_step is not None:
                on_step(new)
            finished = sum(done[r] for r in live)
            if finished == len(live) or step == sampling.max_new_tokens - 1:
                break
            # copying the cache costs about a decode step: drop finished rows in bunches
            if finished * 8 >= len(live):
                keep = torch.tensor([k for k, r in enumerate(live) if not done[r]], device=self.device)
                cache.batch_select_indices(keep)
                mask, tokens, positions = mask[keep], tokens[keep], positions[keep]
                live = [r for r in live if not done[r]]
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
            out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions[:, None] + step,
                        cache=cache, use_cache=True, logits_to_keep=1)
            cache, logits = out.cache, out.logits[:, -1]
        return new

    def _prefill(self, model: Any, rows: list[list[int]], capacity: int) -> tuple[Any, Any, Any]:
        """(the KV cache of all rows, its attention mask, each row's next-token logits).

        A prefix shared by all rows (at least `shared_prefix_min` tokens; every row keeps a token
        of its own) runs once. The rest runs in groups of rows of similar length, each padded
        on the left to its own longest row only; the groups' caches are then laid out as prefix,
        padding, own tokens in one cache as wide as the longest row, with room for `capacity`
        tokens in all."""
        from transformers import DynamicCache

        torch = self._torch
        shared = self._shared_length(rows, min(len(r) for r in rows) - 1)
        prefix = None
        if shared:
            ids = torch.tensor([rows[0][:shared]], dtype=torch.long, device=self.device)
            prefix = model(input_ids=ids, use_cache=True, logits_to_keep=1).cache
        own = [len(r) - shared for r in rows]
        width = shared + max(own)
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=self.device)
        mask[:, :shared] = 1
        layers: list[list[Any]] = []
        logits = None
        for group in _length_groups(own):
            ids, own_mask = self._left_pad([rows[i][shared:] for i in group])
            cache = None
            if prefix is not None:
                cache = DynamicCache(
                    ddp_cache_data=[(layer.keys, layer.values) for layer in prefix.layers], config=model.config)
                cache.batch_repeat_interleave(len(group))
            full_mask = torch.cat([own_mask.new_ones(len(group), shared), own_mask], dim=1)
            positions = shared + (own_mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=ids, attention_mask=full_mask, position_ids=positions, cache=cache, use_cache=True,
                        logits_to_keep=1)
            index = torch.tensor(group, device=self.device)
            lead = width - ids.shape[1]  # where this group's own tokens start in the joined cache
            mask[index, lead:] = own_mask
            if logits is None:
                logits = out.logits.new_empty(len(rows), out.logits.shape[-1])
                layers = [[layer.keys.new_zeros(len(rows), *layer.keys.shape[1:2], width, layer.keys.shape[-1]),
                           layer.values.new_zeros(len(rows), *layer.values.shape[1:2], width, layer.values.shape[-1])]
                          for layer in out.cache.layers]
            logits[index] = out.logits[:, -1]
            for (keys, values), layer in zip(layers, out.cache.layers, strict=True):
                keys[index, :, :shared] = layer.keys[:, :, :shared]
                keys[index, :, lead:] = layer.keys[:, :, shared:]
                values[index, :, :shared] = layer.values[:, :, :shared]
                values[index, :, lead:] = layer.values[:, :, shared:]
        joined = DynamicCache(config=model.config)
        joined.layers = [_GrowingLayer(k, v, capacity) for k, v in layers]
        return joined, mask, logits

    def _processors(self, sampling: SamplingParams) -> Any:
        """transformers' logits processors for `sampling` (None for plain greedy decoding)."""
        from transformers import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopPLogitsWarper,
        )

        processors = LogitsProcessorList()
        if sampling.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
        if sampling.temperature > 0:
            processors.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_p < 1.0:
                processors.append(TopPLogitsWarper(sampling.top_p))
        return processors or None, sampling.temperature > 0

    def _pick(self, logits: Any, processors: Any, histories: list[list[int]]) -> Any:
        """The next token of each row from its next-token logits."""
        torch = self._torch
        chain, sample = processors
        if chain is None:
            return logits.argmax(dim=-1)
        # a rectangular history for the processors: each row padded with its own first token,
        # which the repetition penalty already counts once
        width = max(len(h) for h in histories)
        history = torch.tensor([h + [h[0]] * (width - len(h)) for h in histories], device=self.device)
        scores = chain(history, logits.float())
        if not sample:
            return scores.argmax(dim=-1)
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)

    def _left_pad(self, rows: list[list[int]]) -> tuple[Any, Any]:
        torch = self._torch
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        return ids.to(self.device), mask.to(self.device)

    def _shared_length(self, rows: list[list[int]], shareable: int) -> int:
        """How many of their first `shareable` tokens the rows share, when that is worth a
        prefill of its own (at least `shared_prefix_min`); else 0."""
        shared = shared_prefix_length(rows, shareable)
        if len(rows) < 2 or self.shared_prefix_min is None or shared < self.shared_prefix_min:
            return 0
        return shared

    def _finish(self, row: list[int]) -> Generation:
        stop = next((k for k, t in enumerate(row) if t in self._stop_ids), None)
        reason: Literal["stop", "length"]
        if stop is None:  # ran to max_new_tokens (generation only ends early when all rows stop)
            tokens, reason, count = row, "length", len(row)
        else:
            tokens, reason, count = row[:stop], "stop", stop + 1
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Generation(text=text, finish_reason=reason, num_tokens=count)

    @contextlib.contextmanager
    def _seeded(self, seed: int | None) -> Iterator[None]:
        if seed is None:
            yield
            return
        torch = self._torch
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    # --- scoring ------------------------------------------------------------------------
    def score(
        self,
        conversations: Sequence[Conversation],
        continuations: Sequence[str],
        adapter: AdapterRef | None = None,
        progress: Progress = silent,
    ) -> list[float]:
        prompts, conts = encode_for_scoring(self.tokenizer, conversations, continuations, self._max_positions)
        n = len(prompts)
        # rows with the same prompt side by side, so that a batch runs each distinct prompt once
        order = sorted(range(n), key=lambda i: (-len(prompts[i]), prompts[i], -len(conts[i])))
        scores = [0.0] * n
        progress(ProgressEvent("score", 0, n))
        with self._lock, self._adapter(adapter) as model, self._torch.inference_mode():
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                for i, value in zip(idx, self._score_batch(model, [prompts[i] for i in idx],
                                                           [conts[i] for i in idx]), strict=True):
                    scores[i] = value
                progress(ProgressEvent("score", min(start + self.batch_size, n), n))
        return scores

    def _score_batch(self, model: Any, prompts: list[list[int]], conts: list[list[int]]) -> list[float]:
        """The log-probability of each continuation after its prompt. Each distinct prompt is
        prefilled once (as generation prefills); its continuations then run on top of its
        cache, padded on the right, where padding cannot reach the tokens before it."""
        torch = self._torch
        distinct = list(dict.fromkeys(map(tuple, prompts)))
        which = {prompt: k for k, prompt in enumerate(distinct)}
        rows = torch.tensor([which[tuple(p)] for p in prompts], device=self.device)
        width = max(len(c) for c in conts)
        cache, mask, logits = self._prefill(model, [list(p) for p in distinct], max(map(len, distinct)) + width)
        if len(distinct) < len(prompts):
            cache.batch_select_indices(rows)
            mask, logits = mask[rows], logits[rows]
        # logits[:, k] predicts continuation token k: the prompt's last position predicts the first
        logits = logits[:, None]
        if width > 1:
            tail = [c[:-1] + [self.tokenizer.pad_token_id] * (width - len(c)) for c in conts]
            own = torch.tensor([[1] * (len(c) - 1) + [0] * (width - len(c)) for c in conts], device=self.device)
            starts = torch.tensor([len(p) for p in prompts], device=self.device)
            out = model(
                input_ids=torch.tensor(tail, device=self.device), attention_mask=torch.cat([mask, own], dim=1),
                position_ids=starts[:, None] + torch.arange(width - 1, device=self.device), cache=cache,
                use_cache=True,
            )
            logits = torch.cat([logits, out.logits], dim=1)
        targets = torch.tensor([c + [0] * (width - len(c)) for c in conts], device=self.device)
        token_lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return [float(token_lp[r, : len(c)].sum()) for r, c in enumerate(conts)]

    # --- adapters -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _adapter(self, adapter: AdapterRef | None) -> Iterator[Any]:
        """The model to call: the base, or the base with one adapter active. Outside this
        context the adapter layers stay disabled, so `self.model` always acts as the base."""
        if adapter is None:
            yield self.model
            return
        name = self._load_adapter(Path(adapter))
        self._peft.set_adapter(name)
        self._peft.base_model.enable_adapter_layers()
        try:
            yield self._peft
        finally:
            self._peft.base_model.disable_adapter_layers()

    def _load_adapter(self, folder: Path) -> str:
        folder = folder.expanduser().resolve()
        key = str(folder)
        if key in self._adapters:
            return self._adapters[key]
        if not (folder / "adapter_config.json").is_file():
            raise NotFound(f"no PEFT adapter at {folder} (adapter_config.json missing)")
        name = "a" + hashlib.sha256(key.encode()).hexdigest()[:12]
        try:
            if self._peft is None:
                from peft import PeftModel

                self._peft = PeftModel.from_pretrained(self.model, key, adapter_name=name, is_trainable=False)
                self._peft.eval()
            else:
                self._peft.load_adapter(key, adapter_name=name, is_trainable=False)
            self._peft.base_model.disable_adapter_layers()
        except (RuntimeError, ValueError, KeyError) as exc:
            raise InvalidInput(
                f"cannot load the adapter at {folder} onto {self.name}: {exc}", where="adapter"
            ) from exc
        self._adapters[key] = name
        return name

    # --- steering -----------------------------------------------------------------------
    def decoder_layers(self) -> Any:
        """The model's decoder layers (`model.model.layers`), where steering hooks go."""
        inner = getattr(self.model, "model", None)
        layers = getattr(inner, "layers", None)
        if layers is None:
            raise InvalidInput(f"{self.name}: no decoder layers at model.model.layers; cannot steer")
        return layers

    @contextlib.contextmanager
    def _steering(self, steering: Steering | None) -> Iterator[None]:
        if steering is None or steering.coefficient == 0 or not steering.vectors:
            yield
            return
        torch = self._torch
        layers = self.decoder_layers()
        hidden = int(self.model.config.hidden_size)
        deltas = {}
        for layer, vector in steering.vectors.items():
            if not 0 <= layer < len(layers):
                raise InvalidInput(
                    f"layer {layer} does not exist; the model has layers 0..{len(layers) - 1}",
                    where="steering.vectors",
                )
            if len(vector) != hidden:
                raise InvalidInput(
                    f"the vector for layer {layer} has {len(vector)} values; the hidden size is {hidden}",
                    where="steering.vectors",
                )
            delta = torch.tensor(vector, dtype=torch.float32) * steering.coefficient
            deltas[layer] = delta.to(device=self.device, dtype=self.model.dtype)

        def hook_for(delta: Any) -> Any:
            def hook(_module: Any, _args: Any, output: Any) -> Any:
                if isinstance(output, tuple):
                    return (output[0] + delta, *output[1:])
                return output + delta

            return hook

        handles = []
        try:
            for layer, delta in deltas.items():
                handles.append(layers[layer].register_forward_hook(hook_for(delta)))
            yield
        finally:
            for handle in handles:
                handle.remove()


class _GrowingLayer(DynamicLayer):
    """A decode cache layer with room reserved for every token to come: a new token's keys and
    values are written in place, where transformers' DynamicLayer concatenates (copying the
    whole cache at every step: 18% of a SmolLM2 decode's CPU time)."""

    def __init__(self, keys: Any, values: Any, capacity: int):
        super().__init__()
        self.lazy_initialization(keys, values)
        shape = (*keys.shape[:2], max(capacity, keys.shape[2]), keys.shape[3])
        self._keys, self._values = keys.new_empty(shape), values.new_empty(shape)
        self._length = keys.shape[2]
        self._keys[:, :, : self._length] = keys
        self._values[:, :, : self._length] = values
        self._views()

    def _views(self) -> None:
        self.keys, self.values = self._keys[:, :, : self._length], self._values[:, :, : self._length]

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        end = self._length + key_states.shape[2]
        self._keys[:, :, self._length : end] = key_states
        self._values[:, :, self._length : end] = value_states
        self._length = end
        self._views()
        return self.keys, self.values

    def batch_select_indices(self, indices: Any) -> None:
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._views()


def _length_groups(lengths: Sequence[int], waste: float = 0.125) -> list[list[int]]:
    """Indices of `lengths` in groups, longest first, such that padding every row of a group to
    its longest adds at most `waste` of the group's tokens (and at most 4 tokens per row, when
    that is more)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups:
            group = groups[-1]
            longest = lengths[group[0]]
            padding = sum(longest - lengths[j] for j in group) + longest - lengths[i]
            if longest - lengths[i] <= 4 or padding <= waste * longest * (len(group) + 1):
                group.append(i)
                continue
        groups.append([i])
    return groups
