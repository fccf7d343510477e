"""Evaluation tests run torch on one thread: the tiny model's operations are far too small to
gain from a second one, and on a busy 2-core machine OpenMP's spinning threads made them up
to 10x slower. The previous setting is restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
