"""The run spec's derived values and how its refusals read: who teaches and judges by
default, where a constitution file is found, and errors that name the spec and every problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from character.constitution import Constitution, resolve_constitution
from character.errors import InvalidInput
from character.pipeline.spec import RunSpec, load_spec, parse_spec


def test_the_teacher_defaults_to_the_student_and_the_judge_to_the_teacher() -> None:
    assert (RunSpec(constitution="sarcasm", model="m").teacher_model,
            RunSpec(constitution="sarcasm", model="m").judge_model) == ("m", "m")
    assert RunSpec(constitution="sarcasm", model="m", teacher="t").judge_model == "t"
    spec = RunSpec(constitution="sarcasm", model="m", teacher="t", judge="j")
    assert (spec.teacher_model, spec.judge_model) == ("t", "j")


def test_resolving_loads_the_constitution_once() -> None:
    spec = RunSpec(constitution="sarcasm")
    resolved = spec.resolved()
    assert isinstance(resolved.constitution, Constitution)
    assert resolved.constitution == resolve_constitution("sarcasm") == spec.persona
    assert resolved.resolved() is resolved
    assert spec.constitution == "sarcasm"  # the original is left as it was


def test_parse_spec_returns_the_resolved_spec() -> None:
    spec = parse_spec({"constitution": "sarcasm"})
    assert isinstance(spec.constitution, Constitution) and spec.constitution.name == "sarcasm"


def test_every_problem_is_listed_under_the_given_name() -> None:
    with pytest.raises(InvalidInput) as err:
        parse_spec({"constitution": "sarcasm", "seed": -1, "bogus": 1}, where="my-spec.yaml")
    assert err.value.where == "my-spec.yaml"
    problems = str(err.value).removeprefix("my-spec.yaml: ").split("; ")
    assert sorted(p.split(":")[0] for p in problems) == ["bogus", "seed"]
    with pytest.raises(InvalidInput, match=r"^run spec: seed: "):
        parse_spec({"constitution": "sarcasm", "seed": -1})
    with pytest.raises(InvalidInput) as err:
        parse_spec({"constitution": "sarcasm", "stages": {"nope": {}}})
    assert "Value error" not in str(err.value)
    assert "stages: unknown stage 'nope'; stages are: prompts, distill, dpo, introspect, sft, merge, eval" in str(
        err.value)


def test_a_bad_stage_setting_is_refused_under_the_spec_name() -> None:
    with pytest.raises(InvalidInput, match=r"stages\.dpo\.lr") as err:
        parse_spec({"constitution": "sarcasm", "stages": {"dpo": {"lr": "fast"}}}, where="run.yaml")
    assert err.value.where == "run.yaml"


def test_an_endpoint_student_is_refused_with_the_reason() -> None:
    with pytest.raises(InvalidInput, match="model 'big' is an HTTP endpoint, but the student is trained here: "
                                           "give a local model, and use endpoints for the teacher or the judge"):
        parse_spec({"constitution": "sarcasm", "model": "big", "endpoints": {"big": {"base_url": "http://x/v1"}}})


def test_a_relative_constitution_is_found_beside_the_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    persona = resolve_constitution("sarcasm").model_copy(update={"name": "beside"})
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "persona.yaml").write_text(yaml.safe_dump(persona.model_dump(mode="json")))
    (tmp_path / "specs" / "run.yaml").write_text("constitution: persona.yaml\n")
    monkeypatch.chdir(tmp_path)  # not where the persona is
    spec = load_spec(tmp_path / "specs" / "run.yaml")
    assert isinstance(spec.constitution, Constitution) and spec.constitution.name == "beside"
    # an absolute path is taken as it is; a bundled name is not a file beside the spec
    absolute = tmp_path / "specs" / "abs.yaml"
    absolute.write_text(f"constitution: {tmp_path / 'specs' / 'persona.yaml'}\n")
    assert load_spec(absolute).persona.name == "beside"
    named = tmp_path / "specs" / "named.yaml"
    named.write_text("constitution: sarcasm\n")
    assert load_spec(named).persona.name == "sarcasm"


def test_load_spec_names_the_file_in_its_errors(tmp_path: Path) -> None:
    spec = tmp_path / "run.yaml"
    spec.write_text("constitution: sarcasm\nseed: -3\n")
    with pytest.raises(InvalidInput, match="seed") as err:
        load_spec(spec)
    assert err.value.where == str(spec)


def test_the_default_store_is_a_folder_under_oct_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCT_HOME", str(tmp_path / "home"))
    assert RunSpec(constitution="sarcasm").store == str(tmp_path / "home" / "store")


def test_a_spec_file_may_hold_its_constitution_inline(tmp_path: Path) -> None:
    persona = resolve_constitution("sarcasm").model_copy(update={"name": "inline"})
    spec = tmp_path / "run.yaml"
    spec.write_text(yaml.safe_dump({"constitution": persona.model_dump(mode="json")}))
    assert load_spec(spec).persona == persona
