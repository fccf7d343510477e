"""Length-bucketed batches for the LoRA trainers.

A batch is padded to its longest sequence, and on a CPU the padding costs as much as real
tokens. The trainers therefore draw micro-batches of sequences of similar length (sorted by
length, cut into batches) and put the batches in random order, so the optimizer steps still
see short and long sequences in no particular order. The last, short batch stays last, so
the data loader's batch boundaries stay on the buckets'.

The order is drawn from (seed, epoch) alone: a run resumed on another machine trains on the
batches the uninterrupted run would have.

Imports torch at module level: import it only inside a stage's `run`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler


def length_bucketed_order(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[int]:
    """Every index of `lengths` once, in batches of `batch_size` indices of similar length
    (ties broken at random), the full batches in random order, then the remainder."""
    shuffled = torch.randperm(len(lengths), generator=generator).tolist()
    by_length = sorted(shuffled, key=lambda i: -lengths[i])
    full = len(by_length) - len(by_length) % batch_size
    batches = [by_length[k : k + batch_size] for k in range(0, full, batch_size)]
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [i for b in order for i in batches[b]] + by_length[full:]


class LengthBucketedSampler(Sampler[int]):
    """`length_bucketed_order` for each epoch, seeded with `seed + epoch` (the trainer calls
    `set_epoch` before each epoch)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(length_bucketed_order(self.lengths, self.batch_size, generator))


def padded_lengths(dataset: Any) -> list[int]:
    """What each row costs once batched: an SFT row its tokens; a DPO pair its prompt plus its
    longer answer (the preference collator pads chosen and rejected answers to one width)."""
    if "input_ids" in dataset.column_names:
        return [len(ids) for ids in dataset["input_ids"]]
    return [
        len(prompt) + max(len(chosen), len(rejected))
        for prompt, chosen, rejected in zip(
            dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True
        )
    ]


class LengthBucketedTraining:
    """Mixin for a transformers Trainer: its training batches come from `LengthBucketedSampler`
    (buckets of one micro-batch each) instead of a plain random order."""

    args: Any
    train_dataset: Any

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler[int]:
        dataset = self.train_dataset if train_dataset is None else train_dataset
        batch = self.args.per_device_train_batch_size
        return LengthBucketedSampler(padded_lengths(dataset), batch, self.args.data_seed)
