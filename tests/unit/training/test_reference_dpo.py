"""The reference's DPO objective: the per-token KL penalty against hand-computed values, the
whole loss against an independent computation on the tiny model, and the reference's
log-probabilities computed once per sequence however many epochs run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from character.stages import dpo
from character.store import LocalStore
from character.training import reference_dpo
from character.training.reference_dpo import kl_penalty

from tests.unit.training.helpers import context, distill_result, pair_rows

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SMALL = {"lr": 5e-3, "global_batch": 2, "per_device_batch": 2, "max_length": 96, "lora_rank": 4,
         "lora_alpha": 8, "save_steps": 100}


def test_kl_penalty_by_hand() -> None:
    policy = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.1, 0.0]])
    reference = torch.tensor([[-1.5, -1.0, -9.0], [-0.3, -0.6, -5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    # row 0: (0.5^2 + 1^2) / 2 = 0.625 (the masked -0.5 vs -9 does not count);
    # row 1: (0 + 0.5^2 + 5^2) / 3 = 8.41667; the mean of the rows: 4.520833
    assert float(kl_penalty(policy, reference, mask)) == pytest.approx(4.520833, abs=1e-5)
    assert float(kl_penalty(policy, policy, mask)) == 0.0


def _trainer(tiny_model: Path, tmp_path: Path, pairs: int, **overrides: Any) -> Any:
    store = LocalStore(tmp_path / "store")
    config = dpo.Config.for_scale("demo", {**SMALL, **overrides})
    rows = pair_rows(pairs)
    ctx = context(store, tiny_model, "dpo", {"distill": distill_result(store, rows, [])}, tmp_path / "work", config)
    return dpo.build_trainer(ctx, config, rows)


def _per_token(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Log-probs of each next token from a plain forward pass, masked to the answers' tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    token = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return token * batch["completion_mask"][:, 1:]


def test_loss_is_sigmoid_plus_nll_plus_kl(tiny_model: Path, tmp_path: Path) -> None:
    trainer = _trainer(tiny_model, tmp_path, 2, kl_coef=1.0, nll_coef=0.1, beta=0.1)
    with torch.no_grad():  # a trained-looking adapter: the policy differs from the reference
        generator = torch.Generator().manual_seed(0)
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    loss = float(trainer.compute_loss(trainer.model, batch).detach())

    with torch.no_grad():
        policy = _per_token(trainer.model, batch)
        with trainer.model.disable_adapter():
            reference = _per_token(trainer.model, batch)
    mask = batch["completion_mask"][:, 1:].float()
    chosen, rejected = (policy.sum(-1) - reference.sum(-1)).chunk(2)
    sigmoid = -F.logsigmoid(0.1 * (chosen - rejected)).mean()
    nll = -policy.chunk(2)[0].sum() / mask.chunk(2)[0].sum()
    per_row = ((policy - reference) ** 2 * mask).sum(-1) / mask.sum(-1)
    expected = float(sigmoid + 0.1 * nll + 1.0 * per_row.mean())
    assert per_row.mean() > 1e-3  # the KL term is a visible part of the loss
    assert loss == pytest.approx(expected, abs=1e-4)


def test_reference_runs_once_per_sequence_across_epochs(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    use_adapter = reference_dpo.use_adapter

    @contextlib.contextmanager
    def counted(model: Any, adapter_name: str | None) -> Iterator[None]:
        calls.append(1)
        with use_adapter(model, adapter_name):
            yield

    monkeypatch.setattr(reference_dpo, "use_adapter", counted)
    trainer = _trainer(tiny_model, tmp_path, 4, epochs=3.0, max_steps=None)
    trainer.train()
    assert trainer.state.global_step == 6  # 3 epochs of 2 batches
    assert len(calls) == 2  # the reference ran for the first epoch's 2 batches only
    assert len(trainer._reference) == 8  # 4 pairs: 4 chosen + 4 rejected sequences
