"""trl's SFTTrainer drawing length-bucketed micro-batches (`training.batching`).

Imports trl at module level: import it only inside a stage's `run`.
"""

from __future__ import annotations

from trl import SFTTrainer

from character.training.batching import LengthBucketedTraining


class BucketedSFTTrainer(LengthBucketedTraining, SFTTrainer):
    """SFTTrainer whose micro-batches hold conversations of similar length."""
