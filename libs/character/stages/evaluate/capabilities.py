"""General capabilities (docs/method.md section 6) through lm-evaluation-harness, run by the
project's own engines so the same code scores a model on a CPU, a GPU node or a hosted
server.

`EngineLM` registers an `Engine` as an lm-eval model: `loglikelihood` is `Engine.score` with
the task's context as the user's message and the continuation as the assistant's whole
reply (the end-of-turn token included: the model is asked to answer exactly this);
`generate_until` is greedy `Engine.generate`, cut at the task's stop strings. The chat
format is a deliberate difference from lm-eval's raw-text default: chat models are used,
and trained, in their chat template.

Tasks: our local tasks over the shipped JSONL files (YAML in
`character/data/capabilities/tasks/`), and, where a network or a datasets cache allows, the
reference benchmarks by name. Base and trained models answer the same items, so the delta is
reported with a paired standard error (per-item differences), tighter than combining the two
accuracies' errors as if independent.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lm_eval.api.model import LM

from character import stats
from character.errors import NotFound
from character.models.engine import AdapterRef, Engine, SamplingParams
from character.progress import Progress, ProgressEvent, silent
from character.report.results import CapabilityResults, TaskResult
from character.stages.evaluate import LOCAL_TASKS

if TYPE_CHECKING:
    from lm_eval.api.instance import Instance

    from character.stages.evaluate import Config
    from character.stages.evaluate.subject import Subject

REFERENCE_BENCHMARKS = {"arc_challenge": 25, "hellaswag": 10, "truthfulqa_mc2": 0, "winogrande": 5, "mmlu": 5}
"""The reference's benchmarks and their few-shot counts (TruthfulQA-MC as lm-eval's mc2)."""
METRICS = ("acc_norm", "acc", "exact_match")
"""The per-item metric reported, first found. Multiple choice: acc_norm (log-likelihood per
byte of the choice), since each choice is scored with its end-of-turn token and raw sums
favour short choices; generation: exact_match."""


def tasks_dir() -> Path:
    return Path(str(resources.files("character.data") / "capabilities" / "tasks"))


class EngineLM(LM):
    """An lm-eval model backed by a project `Engine` (optionally with a LoRA adapter)."""

    def __init__(
        self,
        engine: Engine,
        adapter: AdapterRef | None = None,
        progress: Progress = silent,
        task: str = "eval: capabilities",
    ):
        super().__init__()
        self.engine = engine
        self.adapter = adapter
        self.progress = progress
        self.task = task

    @staticmethod
    def _user(context: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": context.strip()}]

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """Log-probability of each continuation as the assistant's whole reply. is_greedy is
        always False: Engine.score does not report it (multiple-choice accuracy never uses it)."""
        self.progress(ProgressEvent(self.task, 0, len(requests), "scoring"))
        contexts = [self._user(r.args[0]) for r in requests]
        # lm-eval puts the word-boundary space in the continuation; a chat reply has none
        continuations = [r.args[1].lstrip() for r in requests]
        scores = self.engine.score(contexts, continuations, adapter=self.adapter)
        self.progress(ProgressEvent(self.task, len(requests), len(requests), "scoring"))
        return [(score, False) for score in scores]

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        raise NotImplementedError(
            "perplexity tasks (loglikelihood_rolling) are not supported: the engine scores chat replies, "
            "not raw documents; choose multiple-choice or generation tasks"
        )

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy answers, cut at the first of the request's `until` strings."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            groups[json.dumps(request.args[1], sort_keys=True, default=str)].append(i)
        out = [""] * len(requests)
        for key, indices in groups.items():
            kwargs = json.loads(key)
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            sampling = SamplingParams(
                max_new_tokens=int(kwargs.get("max_gen_toks", 256)),
                temperature=0.0,
                top_p=1.0,
                repetition_penalty=1.0,
                seed=None,
            )
            generations = self.engine.generate(
                [self._user(requests[i].args[0]) for i in indices],
                sampling,
                adapter=self.adapter,
                progress=self.progress,
            )
            for i, generation in zip(indices, generations, strict=True):
                out[i] = cut_at(generation.text, until)
        return out


def cut_at(text: str, stops: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    end = len(text)
    for stop in stops:
        if stop and (at := text.find(stop)) != -1:
            end = min(end, at)
    return text[:end]


@lru_cache(maxsize=2)
def _task_manager(include_defaults: bool) -> Any:
    """lm-eval's task index over our task folder; lm-eval's own (thousands of YAML files, slow
    to scan) only when a task outside ours is asked for."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir()), include_defaults=include_defaults)


def run_tasks(
    lm: LM, tasks: Sequence[str], limit: int | None, num_fewshot: int | None = None, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Per task: {metric, accuracy, stderr, items, per_item: {doc_id: value}}."""
    from lm_eval import simple_evaluate

    manager = _task_manager(include_defaults=not set(tasks) <= set(LOCAL_TASKS))
    output = simple_evaluate(
        model=lm,
        tasks=list(tasks),
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=manager,
        log_samples=True,
        bootstrap_iters=0,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    assert output is not None
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        metrics = output["results"][task]
        metric = next(m for m in METRICS if any(k.startswith(f"{m},") for k in metrics))
        key = next(k for k in metrics if k.startswith(f"{metric},"))
        samples = output["samples"][task]
        per_item = {int(s["doc_id"]): float(s[metric]) for s in samples}
        accuracy = float(metrics[key])
        n = len(per_item)
        out[task] = {
            "metric": metric,
            "accuracy": accuracy,
            "items": n,
            "per_item": per_item,
            "stderr": math.sqrt(accuracy * (1 - accuracy) / (n - 1)) if n > 1 else None,
        }
    return out


def paired_delta(before: dict[int, float], after: dict[int, float]) -> tuple[float, float | None]:
    """Mean per-item difference (after - before) over shared items, and its standard error."""
    shared = sorted(set(before) & set(after))
    diffs = [after[i] - before[i] for i in shared]
    if not diffs:
        return 0.0, None
    mean = sum(diffs) / len(diffs)
    if len(diffs) < 2:
        return mean, None
    variance = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return mean, math.sqrt(variance / len(diffs))


def check_reference_benchmarks_reachable() -> None:
    """Fail before any work when the reference benchmarks cannot be downloaded."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise NotFound(
            "reference_benchmarks is on but hub downloads are off (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE=1); "
            "run where a network (or a filled datasets cache) is available, or set "
            "stages.eval.reference_benchmarks: false"
        )


def evaluate(subject: Subject, config: Config) -> CapabilityResults:
    """Base vs full-pipeline accuracy per task, with paired deltas."""
    ctx = subject.ctx
    runs: list[tuple[list[str], int | None, int | None]] = []
    if config.capability_tasks:
        runs.append((list(config.capability_tasks), config.capability_limit, None))
    if config.reference_benchmarks:
        runs += [([name], config.capability_limit, shots) for name, shots in REFERENCE_BENCHMARKS.items()]
    scores: dict[str, dict[str, Any]] = {}
    for name in ("base", "full"):
        method = subject.method(name)
        lm = EngineLM(method.engine, method.adapter, ctx.progress, task=f"eval: capabilities ({name})")
        scores[name] = {}
        for tasks, limit, shots in runs:
            scores[name] |= run_tasks(lm, tasks, limit, shots, seed=ctx.spec.seed)
    tasks_out = []
    pooled: tuple[list[bool], list[bool]] = ([], [])
    for task in scores["base"]:
        base, full = scores["base"][task], scores["full"][task]
        delta, stderr = paired_delta(base["per_item"], full["per_item"])
        shared = sorted(set(base["per_item"]) & set(full["per_item"]))
        before = [base["per_item"][i] >= 0.5 for i in shared]
        after = [full["per_item"][i] >= 0.5 for i in shared]
        pooled[0].extend(before)
        pooled[1].extend(after)
        tasks_out.append(
            TaskResult(
                task=task,
                metric=base["metric"],
                items=base["items"],
                base=base["accuracy"],
                base_stderr=base["stderr"],
                trained=full["accuracy"],
                trained_stderr=full["stderr"],
                delta=delta,
                delta_stderr=stderr,
                evidence=stats.paired_shares(
                    f"{task} accuracy, trained minus base", before, after, "items", config.min_n, ctx.spec.seed
                ),
            )
        )
    mean_delta = sum(t.delta for t in tasks_out) / len(tasks_out) if tasks_out else None
    return CapabilityResults(
        tasks=tasks_out,
        mean_delta=mean_delta,
        evidence=stats.paired_shares(
            "capability accuracy over all task items, trained minus base", *pooled, "items", config.min_n,
            ctx.spec.seed,
        ),
        scoring="chat format through the project's engine",
    )
