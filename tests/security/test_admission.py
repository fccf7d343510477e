"""Remote specs cannot reach beyond the platform: the library's admission of a submitted spec
(the gRPC path is in test_services.py; this checks the rules one by one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from character.errors import InvalidInput
from character.models.endpoint import Endpoint
from character.pipeline.spec import RunSpec, parse_spec
from character.platform import Limits, PlatformConfig, load_platform_config
from character.security.admission import admit, check_knobs, knob_cap, load_spec_text

PLATFORM = PlatformConfig(
    models={"big": "s3://platform/models/big"},
    endpoints={"judge-7b": Endpoint(base_url="http://vllm-judge:8000/v1", api_key_env="JUDGE_API_KEY")},
    chat_prompts={"wildchat": "s3://platform/data/wildchat.jsonl"},
)


def admitted(text: str, platform: PlatformConfig = PLATFORM) -> RunSpec:
    doc = admit(load_spec_text(text, platform.limits), platform)
    spec = parse_spec(doc)
    check_knobs(spec.stages, platform.limits)
    return spec


HOLES = [  # (short name, spec line, the field the refusal names)
    ("model /etc", "model: /etc", "spec_yaml.model"),
    ("teacher /etc", "teacher: /etc", "spec_yaml.teacher"),
    ("judge in a foreign bucket", "judge: s3://someone-elses-bucket/model", "spec_yaml.judge"),
    ("model from the hub", "model: org/hub-model", "spec_yaml.model"),
    ("chat_prompts /etc/passwd", "chat_prompts: /etc/passwd", "spec_yaml.chat_prompts"),
    ("seed 10**30", "seed: 1000000000000000000000000000000", "spec_yaml.seed"),
    ("endpoint sending OCT_S3_SECRET_KEY to 127.0.0.1",
     "endpoints: {x: {base_url: 'http://127.0.0.1:9/v1', api_key_env: OCT_S3_SECRET_KEY}}\nteacher: x",
     "spec_yaml.endpoints"),
    ("classifier_encoder /etc", "stages: {eval: {classifier_encoder: /etc}}",
     "spec_yaml.stages.eval.classifier_encoder"),
    ("dpo epochs 10**6", "stages: {dpo: {epochs: 1000000}}", "spec_yaml.stages.dpo.epochs"),
    ("max_new_tokens 10**8", "stages: {prompts: {max_new_tokens: 100000000}}",
     "spec_yaml.stages.prompts.max_new_tokens"),
]


@pytest.mark.attack("remote spec reaches beyond the platform")
@pytest.mark.parametrize(("line", "where"), [h[1:] for h in HOLES], ids=[h[0] for h in HOLES])
def test_specs_reaching_beyond_the_platform_are_refused(line: str, where: str) -> None:
    with pytest.raises(InvalidInput) as err:
        admitted(f"constitution: sarcasm\n{line}\n")
    assert err.value.where == where


@pytest.mark.attack("remote spec nests 100000 levels deep")
def test_deep_nesting_is_invalid_input_not_a_crash() -> None:
    with pytest.raises(InvalidInput, match="nests deeper"):
        load_spec_text("constitution: " + "[" * 100_000 + "]" * 100_000, Limits())
    with pytest.raises(InvalidInput, match="nests deeper"):
        load_spec_text("constitution:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 40)) + "  " * 40 + "x",
                       Limits())


def test_registry_names_bring_the_operators_declarations() -> None:
    spec = admitted("constitution: sarcasm\nmodel: tiny\nteacher: big\njudge: judge-7b\nchat_prompts: wildchat\n")
    assert spec.teacher == "big"  # resolved where it is loaded (test_registered_models_resolve_...)
    assert spec.judge == "judge-7b"
    assert spec.endpoints["judge-7b"].base_url == "http://vllm-judge:8000/v1"
    assert spec.endpoints["judge-7b"].api_key_env == "JUDGE_API_KEY"
    assert spec.chat_prompts == "s3://platform/data/wildchat.jsonl"


def test_ordinary_specs_pass_unchanged() -> None:
    text = "constitution: sarcasm\nmodel: smollm2\nseed: 7\nstages: {dpo: {lr: 1.0e-4}}\n"
    assert admitted(text) == parse_spec(load_spec_text(text, Limits()))


def test_operators_raise_a_knob_maximum() -> None:
    raised = PLATFORM.model_copy(update={"limits": Limits(knob_max={"dpo": {"epochs": 50}})})
    assert admitted("constitution: sarcasm\nstages: {dpo: {epochs: 40}}\n", raised).stages["dpo"]["epochs"] == 40


def test_every_numeric_knob_of_every_stage_has_a_finite_maximum() -> None:
    from character.pipeline.dag import STAGE_NAMES, stage_module

    for stage in STAGE_NAMES:
        config: Any = stage_module(stage).Config
        for field, info in config.model_fields.items():
            if info.annotation in (int, float, int | None, float | None):
                assert 0 < knob_cap(config, stage, field, Limits()) < float("inf"), (stage, field)


def test_registered_models_resolve_where_models_load(tiny_model: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from character.models.refs import resolve_model

    config = tmp_path / "platform.yaml"
    config.write_text(yaml.safe_dump({"models": {"team-model": str(tiny_model)}}))
    monkeypatch.setenv("OCT_PLATFORM_CONFIG", str(config))
    assert load_platform_config().models == {"team-model": str(tiny_model)}
    assert resolve_model("team-model") == tiny_model.resolve()
