"""The run spec: everything is refused before any work starts, with the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.errors import InvalidInput, NotFound
from character.pipeline.spec import load_spec, parse_spec


def refused(doc: dict, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_spec({"constitution": "sarcasm", **doc})


def test_unknown_and_impossible_values_name_the_key() -> None:
    refused({"bogus": 1}, r"bogus: Extra inputs are not permitted")
    refused({"scale": "huge"}, r"scale: Input should be 'demo', 'proof' or 'full'")
    refused({"stages": {"dpo": {"per_device_batch": 0}}}, r"stages\.dpo\.per_device_batch: .*or equal to 1")
    refused({"stages": {"dpo": {"global_batch": 3, "per_device_batch": 2}}}, r"must divide global_batch")
    refused({"stages": {"dpo": {"lr_typo": 1}}}, r"stages\.dpo.*lr_typo")
    refused({"stages": {"train": {}}}, r"unknown stage 'train'")
    with pytest.raises(NotFound, match=r"unknown persona 'no-such-persona'; known personas: goodness"):
        parse_spec({"constitution": "no-such-persona"})


def test_yaml_errors_name_the_file_and_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("constitution: sarcasm\nscale: [demo\n")
    with pytest.raises(InvalidInput) as err:
        load_spec(spec)
    assert f"{spec}:3" in str(err.value) or f"{spec}:2" in str(err.value)
    with pytest.raises(InvalidInput, match="no such run spec file"):
        load_spec(tmp_path / "missing.yaml")


def test_cli_overrides_win_over_the_file(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("constitution: sarcasm\nscale: full\nseed: 7\n")
    loaded = load_spec(spec, scale="demo", seed=None)
    assert (loaded.scale, loaded.seed) == ("demo", 7)


def test_endpoints_serve_teachers_and_judges_not_the_student() -> None:
    spec = parse_spec(
        {"constitution": "sarcasm", "judge": "big", "endpoints": {"big": {"base_url": "http://judge:8000/v1"}}}
    )
    assert spec.judge_model == "big" and spec.endpoints["big"].api_key_env == "OPENAI_API_KEY"
    refused({"model": "big", "endpoints": {"big": {"base_url": "http://x/v1"}}}, r"the student is trained here")
    refused({"endpoints": {"big": {"base_url": "judge:8000"}}}, r"endpoints\.big\.base_url: .*not an http\(s\) URL")
    refused({"endpoints": {"big": {"base_url": "http://x/v1", "api_key": "sk-123"}}}, r"api_key: Extra inputs")


@pytest.mark.parametrize("name", ["embedding", "channel"])
def test_a_judge_that_reads_replies_leaves_the_model_judge_to_the_teacher(name: str) -> None:
    from character.pipeline.spec import REPLY_JUDGES

    assert name in REPLY_JUDGES
    spec = parse_spec({"constitution": "sarcasm", "teacher": "tiny", "judge": name})
    assert spec.judge_model == name and spec.model_judge == "tiny"
    assert parse_spec({"constitution": "sarcasm", "judge": "tiny"}).model_judge == "tiny"
    with pytest.raises(InvalidInput, match=f"names the {name} judge"):
        parse_spec({"constitution": "sarcasm", "endpoints": {name: {"base_url": "http://x:1/v1"}}})
