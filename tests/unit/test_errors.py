"""The one wording of validation errors: located, the first problems named, the rest counted."""

from __future__ import annotations

import pytest
from character.errors import SHOWN_PROBLEMS, from_validation
from pydantic import BaseModel, ValidationError, field_validator


class Config(BaseModel):
    lr: float
    epochs: int
    values: list[int] = []

    @field_validator("epochs")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("epochs must be at least 1")
        return value


def error_of(doc: dict[str, object]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Config.model_validate(doc)
    return caught.value


def test_each_problem_is_named_by_its_path_under_the_prefix() -> None:
    err = from_validation(error_of({"lr": "fast", "epochs": 0}), "run.yaml", prefix=("stages.dpo",))
    assert err.where == "run.yaml"
    assert str(err) == ("run.yaml: stages.dpo.lr: Input should be a valid number, unable to parse string as a number; "
                        "stages.dpo.epochs: epochs must be at least 1")


def test_without_a_location_the_message_is_the_problems_alone() -> None:
    err = from_validation(error_of({"lr": 1.0, "epochs": 1, "values": ["x"]}), None)
    assert err.where is None
    assert str(err) == "values.0: Input should be a valid integer, unable to parse string as an integer"


def test_many_problems_name_the_first_few_and_count_the_rest() -> None:
    err = from_validation(error_of({"lr": 1.0, "epochs": 1, "values": ["x"] * 10_000}), "spec_yaml")
    text = str(err)
    assert text.count("Input should be a valid integer") == SHOWN_PROBLEMS
    assert text.endswith(f"; and {10_000 - SHOWN_PROBLEMS} more problems")
    assert "values.4:" in text and "values.5:" not in text
    assert len(text) < 2048


def test_the_value_sent_is_not_repeated_in_the_refusal() -> None:
    secret = "s3cr3t" * 1000
    assert secret not in str(from_validation(error_of({"lr": secret, "epochs": 1}), "spec_yaml"))
