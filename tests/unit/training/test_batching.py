"""Length-bucketed training batches: every example once per epoch, micro-batches of similar
length in random order, the order a function of (seed, epoch) alone, and both trainers'
data loaders padding no more than the buckets need."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from character.stages import dpo, sft
from character.store import LocalStore
from character.training.batching import LengthBucketedSampler, length_bucketed_order, padded_lengths
from character.training.lora_trainer import pick_device

from tests.unit.training.helpers import context, distill_result, pair_rows, sft_inputs, sft_rows

pytestmark = pytest.mark.usefixtures("torch_one_thread")

_RNG = random.Random(3)
LENGTHS = [_RNG.randint(5, 400) for _ in range(103)]


def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[k : k + size] for k in range(0, len(order), size)]


def _padded(lengths: list[int], order: list[int], size: int) -> int:
    """Tokens a data loader pads `order` to, in batches of `size`."""
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in _batches(order, size))


def test_every_example_once_in_buckets_of_neighbouring_lengths() -> None:
    order = length_bucketed_order(LENGTHS, 4, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(len(LENGTHS)))
    batches = _batches(order, 4)
    # the buckets are consecutive runs of the lengths sorted: no bucket straddles another
    runs = sorted(([LENGTHS[i] for i in batch] for batch in batches), key=max, reverse=True)
    flat = [length for run in runs for length in sorted(run, reverse=True)]
    assert flat == sorted(LENGTHS, reverse=True)
    assert len(batches[-1]) == len(LENGTHS) % 4  # the short batch comes last


def test_buckets_pad_less_than_a_random_order() -> None:
    bucketed = _padded(LENGTHS, length_bucketed_order(LENGTHS, 4, torch.Generator().manual_seed(0)), 4)
    shuffled = [_padded(LENGTHS, random.Random(seed).sample(range(len(LENGTHS)), len(LENGTHS)), 4)
                for seed in range(20)]
    assert bucketed < min(shuffled)
    assert bucketed - sum(LENGTHS) < 0.1 * (min(shuffled) - sum(LENGTHS))


def test_batches_come_in_random_order_not_longest_first() -> None:
    firsts = {max(LENGTHS[i] for i in length_bucketed_order(LENGTHS, 4, torch.Generator().manual_seed(s))[:4])
              for s in range(10)}
    assert len(firsts) > 5


def test_the_order_is_a_function_of_seed_and_epoch() -> None:
    sampler = LengthBucketedSampler(LENGTHS, 4, seed=11)
    first = list(sampler)
    assert list(sampler) == first  # the same epoch again
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first  # a new epoch reshuffles
    resumed = LengthBucketedSampler(LENGTHS, 4, seed=11)  # a fresh process resuming at epoch 1
    resumed.set_epoch(1)
    assert list(resumed) == second
    assert list(LengthBucketedSampler(LENGTHS, 4, seed=12)) != first


def test_a_pair_costs_its_prompt_and_its_longer_answer() -> None:
    from datasets import Dataset

    pairs = Dataset.from_dict(
        {"prompt_ids": [[1, 2], [3]], "chosen_ids": [[4], [5, 6, 7]], "rejected_ids": [[8, 9, 9], [1]]})
    assert padded_lengths(pairs) == [5, 4]
    assert padded_lengths(Dataset.from_dict({"input_ids": [[1, 2, 3], [4]]})) == [3, 1]


def _varied(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Rows whose lengths vary a lot, in an order where neighbours differ most."""
    for i, row in enumerate(rows):
        if key == "messages":
            row["messages"][2]["content"] += " and so on" * (3 * i)
        else:
            row["chosen"] += " Indeed." * (3 * i)
            row["rejected"] += " Whatever." * (3 * i)
    return rows[::2] + rows[1::2]


def _loader_padding(trainer: Any) -> tuple[int, int]:
    """(tokens the trainer's data loader pads its batches to, the fewest any order of
    micro-batches could), over one epoch."""
    size = trainer.args.per_device_train_batch_size
    lengths = padded_lengths(trainer.train_dataset)
    best = _padded(lengths, sorted(range(len(lengths)), key=lambda i: -lengths[i]), size)
    seen = 0
    for batch in trainer.get_train_dataloader():
        rows = batch["input_ids"].shape[0] // (2 if "completion_mask" in batch else 1)
        seen += rows * batch["input_ids"].shape[1]
    return seen, best


def test_the_dpo_trainer_draws_length_bucketed_batches(tiny_model: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    config = dpo.Config.for_scale("demo", {"global_batch": 4, "per_device_batch": 2, "max_length": 512,
                                           "lora_rank": 4, "lora_alpha": 8})
    rows = _varied(pair_rows(12), "pairs")
    ctx = context(store, tiny_model, "dpo", {"distill": distill_result(store, rows, [])}, tmp_path / "work", config)
    seen, best = _loader_padding(dpo.build_trainer(ctx, config, rows))
    assert seen == best


def test_the_sft_trainer_draws_length_bucketed_batches(tiny_model: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    rows = _varied(sft_rows(12), "messages")
    config = sft.Config.for_scale("demo", {"global_batch": 4, "per_device_batch": 2, "max_length": 512,
                                           "lora_rank": 4, "lora_alpha": 8})
    ctx = context(store, tiny_model, "sft", sft_inputs(store, tiny_model, tmp_path, rows), tmp_path / "work", config)
    device = pick_device()
    model, tokenizer = sft.dpo_merged_model(ctx, device)
    seen, best = _loader_padding(sft.build_trainer(ctx, config, rows, model, tokenizer, device))
    assert seen == best
