"""The vLLM engine's serving path (`generate_ids`): how it batches, against a FAKE vLLM.

vLLM cannot run on a CPU machine, so `FakeVLLM` stands in for the few parts of its offline API
the engine calls (`LLM.generate` with per-request LoRA, `llm_engine.remove_lora`,
`SamplingParams`, `TokensPrompt`, `LoRARequest`), recording what it is sent. These tests check
the engine's own logic only: which requests go into one vLLM call, with which adapters, and
what each waiter gets back. That vLLM answers these calls correctly is checked on the real
engine in tests/contract/test_serving_engine_contract.py (on a GPU).
"""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from character.errors import CharacterError
from character.models import SamplingParams
from character.serving.pool import PersonaPool
from character.serving.resolve import ServedPersona
from character.store.base import ArtifactRef
from character.store.local import LocalStore

from tests.fixtures.models import make_random_adapter

GREEDY = SamplingParams(max_new_tokens=4, temperature=0.0)


@dataclass
class _Completion:
    token_ids: list[int]
    finish_reason: str


@dataclass
class _Output:
    outputs: list[_Completion]


@dataclass
class _LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


class FakeVLLM:
    """A FAKE of vLLM's offline LLM. Each answer is two tokens computed from the prompt and the
    request's LoRA id, then the stop token. The first call can be held, so that requests queue
    behind it."""

    def __init__(self, stop: int) -> None:
        self.stop = stop
        self.calls: list[list[tuple[list[int], int]]] = []  # per call: (prompt, lora id or 0)
        self.removed: list[int] = []
        self.hold_first = threading.Event()
        self.hold_first.set()
        self.fail_next = False
        self.llm_engine = types.SimpleNamespace(remove_lora=lambda lora_id: self.removed.append(lora_id) or True,
                                                model_config=types.SimpleNamespace(dtype="torch.bfloat16"))

    def __call__(self, **_engine_args: Any) -> FakeVLLM:  # vllm.LLM(...)
        return self

    @staticmethod
    def answer(prompt: list[int], lora_id: int) -> list[int]:
        return [100 + (sum(prompt) + 7 * lora_id) % 50, 100 + lora_id]

    def generate(self, requests: list[Any], params: list[Any], lora_request: Any = None,
                 use_tqdm: bool = False) -> list[_Output]:
        loras = lora_request if isinstance(lora_request, list) else [lora_request] * len(requests)
        sent = [(list(r["prompt_token_ids"]), lora.lora_int_id if lora else 0)
                for r, lora in zip(requests, loras, strict=True)]
        self.calls.append(sent)
        if len(self.calls) == 1:
            self.hold_first.wait(30)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("CUDA out of memory (fake)")
        return [_Output([_Completion([*self.answer(p, lora), self.stop], "stop")]) for p, lora in sent]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> Iterator[FakeVLLM]:
    from transformers import AutoTokenizer

    stop = AutoTokenizer.from_pretrained(str(tiny_model)).convert_tokens_to_ids("<|im_end|>")
    fake = FakeVLLM(stop)
    vllm = types.ModuleType("vllm")
    vllm.LLM = fake  # type: ignore[attr-defined]
    vllm.SamplingParams = lambda **kw: kw  # type: ignore[attr-defined]
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict  # type: ignore[attr-defined]
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = _LoRARequest  # type: ignore[attr-defined]
    for name, module in {"vllm": vllm, "vllm.inputs": inputs, "vllm.lora": lora, "vllm.lora.request": request}.items():
        monkeypatch.setitem(sys.modules, name, module)
    yield fake
    fake.hold_first.set()


@pytest.fixture(scope="module")
def adapters(tiny_model: Path, random_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return random_adapter, make_random_adapter(tiny_model, tmp_path_factory.mktemp("second-adapter"), seed=1)


def _engine(tiny_model: Path) -> Any:
    from character.models.vllm_engine import VLLMEngine

    return VLLMEngine(tiny_model, max_loras=2)


def test_requests_queued_behind_a_batch_go_together_each_with_its_own_adapter(
    fake: FakeVLLM, tiny_model: Path, adapters: tuple[Path, Path]
) -> None:
    engine = _engine(tiny_model)
    fake.hold_first.clear()
    asks = [([1, 2, 3 + i], (None, *adapters)[i % 3]) for i in range(6)]
    with ThreadPoolExecutor(len(asks) + 1) as pool:
        first = pool.submit(engine.generate_ids, [9, 9], GREEDY)
        _until(lambda: len(fake.calls) == 1)
        rest = [pool.submit(engine.generate_ids, prompt, GREEDY, adapter) for prompt, adapter in asks]
        _until(lambda: engine._queued.qsize() == len(asks))
        fake.hold_first.set()
        answers = [job.result(timeout=30) for job in rest]
        first.result(timeout=30)
    assert len(fake.calls) == 2, "the queued requests should have gone in one call"
    lora_of = {tuple(prompt): lora for prompt, lora in fake.calls[1]}
    assert sorted(lora_of) == sorted(tuple(p) for p, _ in asks)
    ids = {adapter: lora_of[tuple(prompt)] for prompt, adapter in asks}
    assert ids[None] == 0 and ids[adapters[0]] != ids[adapters[1]] and 0 not in (ids[adapters[0]], ids[adapters[1]])
    for (prompt, adapter), answer in zip(asks, answers, strict=True):
        expected = engine.tokenizer.decode(FakeVLLM.answer(prompt, ids[adapter]), skip_special_tokens=True)
        assert (answer.text, answer.finish_reason, answer.num_tokens) == (expected, "stop", 3)


def test_a_failed_batch_reaches_every_request_in_it_and_the_next_batch_runs(
    fake: FakeVLLM, tiny_model: Path
) -> None:
    engine = _engine(tiny_model)
    fake.hold_first.clear()
    fake.fail_next = True
    with ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(engine.generate_ids, [5, i], GREEDY) for i in range(3)]
        _until(lambda: len(fake.calls) == 1)
        fake.hold_first.set()
        errors = [job.exception(timeout=30) for job in jobs]
    failed = [e for e in errors if e is not None]
    assert failed and all("out of memory" in str(e) for e in failed)
    assert engine.generate_ids([5, 1], GREEDY).finish_reason == "stop"  # the batcher lives on


def test_an_unloaded_adapter_is_removed_from_vllm_and_never_reuses_an_id(
    fake: FakeVLLM, tiny_model: Path, adapters: tuple[Path, Path]
) -> None:
    engine = _engine(tiny_model)
    engine.generate_ids([1], GREEDY, adapters[0])
    engine.generate_ids([1], GREEDY, adapters[1])
    assert engine.unload_adapter(adapters[0]) is True and fake.removed == [1]
    assert engine.unload_adapter(adapters[0]) is False and fake.removed == [1]
    engine.generate_ids([1], GREEDY, adapters[0])
    assert [lora for call in fake.calls for _, lora in call] == [1, 2, 3]


def test_the_stream_gets_the_whole_answer_once(fake: FakeVLLM, tiny_model: Path) -> None:
    engine = _engine(tiny_model)
    steps: list[list[int]] = []
    answer = engine.generate_ids([4, 2], GREEDY, on_step=steps.append)
    assert len(steps) == 1 and engine.answer_text(steps[0]) == answer.text


def test_the_vllm_pool_refuses_a_merged_only_persona_with_what_to_do(fake: FakeVLLM, tmp_path: Path) -> None:
    merged = ArtifactRef(kind="model", key="k" * 16, content_digest="d" * 64)
    persona = ServedPersona(name="solo", base="tiny", merged=merged)
    pool = PersonaPool(LocalStore(tmp_path / "store"), 2, engine="vllm", cache_dir=tmp_path / "cache")
    with pytest.raises(CharacterError, match=r"merged weights only.*publish a run with adapters"):
        pool.engine(persona)


def _until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
