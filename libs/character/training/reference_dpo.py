"""The reference's DPO objective on trl's DPOTrainer, with the reference model's log-probabilities
computed once per pair.

The objective (the reference trains with OpenRLHF's DPO trainer, `--beta 0.1 --nll_loss_coef 0.1
--kl_loss_coef 0.001`):
- DPO's sigmoid loss on the sequence log-ratios, `-log sigmoid(beta * ((pc - rc) - (pr - rr)))`;
- plus `nll_coef` x the NLL of the chosen answers' tokens (trl's "sft" term: the mean over all
  chosen answer tokens of the batch);
- plus `kl_coef` x a per-token KL penalty: for each sequence, chosen and rejected alike, the
  mean over its answer tokens of the squared per-token log-ratio `(log pi(y_t) - log ref(y_t))^2`,
  averaged over the sequences of the batch (`kl_penalty`).

The reference is the student with its LoRA adapter switched off. Its per-token log-probabilities
depend on nothing that training changes, so each sequence's are computed once (no gradient, in
the batch where the sequence first appears) and kept for every later epoch; a resumed run
recomputes them for the batches it trains, which gives the same values.

Imports torch and trl at module level: import it only inside a stage's `run`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from trl import DPOTrainer
from trl.trainer.utils import use_adapter

from character.training.batching import LengthBucketedTraining


def kl_penalty(policy: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The reference's per-token KL penalty: per sequence (row), the mean over its masked
    tokens of `(policy - reference)^2`, then the mean over the rows. Inputs: per-token
    log-probabilities and a 0/1 mask, all [rows, tokens]."""
    delta = (policy - reference) * mask
    per_row = (delta**2).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_row.mean()


class ReferenceDPOTrainer(LengthBucketedTraining, DPOTrainer):
    """trl's DPOTrainer with the objective of the module docstring, on length-bucketed
    micro-batches (`training.batching`). Extra arguments: `nll_coef` and `kl_coef` (0 turns
    either term off)."""

    def __init__(self, *args: Any, nll_coef: float, kl_coef: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.nll_coef = nll_coef
        self.kl_coef = kl_coef
        # one entry per sequence seen: its tokens -> the reference's log-probs of its answer tokens
        self._reference: dict[tuple[int, ...], torch.Tensor] = {}

    def _reference_log_probs(self, model_kwargs: dict[str, Any], labels: torch.Tensor,
                             mask: torch.Tensor) -> torch.Tensor:
        """The reference's per-token log-probs [rows, tokens - 1] (zero outside `mask`)."""
        ids, attention = model_kwargs["input_ids"], model_kwargs["attention_mask"].bool()
        keys = [tuple(row[keep].tolist()) for row, keep in zip(ids, attention, strict=True)]
        if any(key not in self._reference for key in keys):
            model: Any = self.model
            with torch.no_grad(), use_adapter(self.accelerator.unwrap_model(model), adapter_name=None):
                out = model(**model_kwargs, labels=labels, fused_lm_head=True).log_probs
            out = out[:, -mask.size(1):]
            for key, row, keep in zip(keys, out, mask.bool(), strict=True):
                self._reference.setdefault(key, row[keep].detach().clone())
        reference = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        for r, (key, keep) in enumerate(zip(keys, mask.bool(), strict=True)):
            reference[r, keep] = self._reference[key].to(reference.device)
        return reference

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        mode = "train" if model.training else "eval"
        completion = inputs["completion_mask"]
        model_kwargs = {k: v for k, v in inputs.items()
                        if k not in {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}}
        model_kwargs["use_cache"] = False
        labels = inputs["input_ids"].masked_fill(completion == 0, -100)
        mask = completion[:, 1:].float()  # the positions whose next token is an answer token
        policy = model(**model_kwargs, labels=labels, fused_lm_head=True).log_probs[:, -mask.size(1):] * mask
        reference = self._reference_log_probs(model_kwargs, labels, mask)

        chosen, rejected = policy.sum(-1).chunk(2)
        ref_chosen, ref_rejected = reference.sum(-1).chunk(2)
        chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
        loss = -F.logsigmoid(self.beta * (chosen_ratio - rejected_ratio)).mean()
        chosen_mask = mask.chunk(2)[0]
        nll = -(policy.chunk(2)[0].sum() / chosen_mask.sum().clamp(min=1))
        kl = kl_penalty(policy, reference, mask)
        if self.nll_coef:
            loss = loss + self.nll_coef * nll
        if self.kl_coef:
            loss = loss + self.kl_coef * kl

        if mode == "train":
            self._total_train_tokens += int(inputs["attention_mask"].sum())
        metrics = self._metrics[mode]
        metrics["num_tokens"] = [self._total_train_tokens]
        chosen_rewards, rejected_rewards = self.beta * chosen_ratio.detach(), self.beta * rejected_ratio.detach()
        metrics["rewards/chosen"].append(chosen_rewards.mean().item())
        metrics["rewards/rejected"].append(rejected_rewards.mean().item())
        metrics["rewards/accuracies"].append((chosen_rewards > rejected_rewards).float().mean().item())
        metrics["rewards/margins"].append((chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(chosen.detach().mean().item())
        metrics["logps/rejected"].append(rejected.detach().mean().item())
        metrics["nll"].append(nll.item())
        metrics["kl_penalty"].append(kl.item())
        return (loss, None) if return_outputs else loss
