"""A stage runs the config recorded when its run was made: resolved once (presets + overrides),
stored with its digest and schema version, hashed into the key, and checked before it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from character.controller.inline_executor import run_in_process
from character.controller.runs import RUNS_PREFIX, load_run, new_run, prepare_stage, save_run
from character.errors import InvalidInput
from character.pipeline.engines import LocalEngines
from character.pipeline.runner import run_stage
from character.pipeline.spec import RunSpec, parse_spec
from character.pipeline.stage import StageContext, StageResult
from character.stages import dpo, prompts
from character.store import open_store
from character.store.base import Store
from character.store.digest import digest_of


def _spec(tmp_path: Path) -> RunSpec:
    return parse_spec(
        {
            "constitution": "sarcasm",
            "model": "tiny",
            "store": str(tmp_path / "store"),
            "stages": {"dpo": {"lr": 5.0e-5}},
        }
    )


def _saved(tmp_path: Path) -> tuple[RunSpec, Store, str]:
    spec = _spec(tmp_path)
    store = open_store(spec.store)
    record = new_run(spec, executor="inline")
    save_run(store, record)
    return spec, store, record.run_id


def _edit(store: Store, run_id: str, edit: Any) -> None:
    """Change the stored record as a hand (or old code) would, outside the record's model."""
    doc = store.get_record(RUNS_PREFIX + run_id)
    assert doc is not None
    edit(doc)
    store.put_record(RUNS_PREFIX + run_id, doc)


def test_a_record_holds_each_stages_config_with_its_digest_and_schema_version(tmp_path: Path) -> None:
    spec, store, run_id = _saved(tmp_path)
    record = load_run(store, run_id)
    for name, stage in record.stages.items():
        assert stage.config is not None
        assert stage.config.values == spec.stage_config(name).model_dump(mode="json")
        assert stage.config.digest == digest_of(stage.config.values)
        assert stage.config.schema_version == 1
    assert record.stages["dpo"].config is not None and record.stages["dpo"].config.values["lr"] == 5.0e-5


def test_the_key_of_a_stage_is_the_digest_of_its_recorded_config_input(tmp_path: Path) -> None:
    spec, store, run_id = _saved(tmp_path)
    stage = load_run(store, run_id).stages["dpo"]
    assert stage.config is not None
    distill_key = load_run(store, run_id).stages["distill"].key
    assert stage.key == digest_of(
        {
            "stage": "dpo",
            "config": stage.config.values,
            "uses": {"model": spec.model, "seed": spec.seed},
            "inputs": {"distill": distill_key},
        }
    )


def test_a_preset_edited_between_submit_and_run_does_not_change_what_the_stage_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store, run_id = _saved(tmp_path)
    recorded = load_run(store, run_id).stages["prompts"].config
    assert recorded is not None and recorded.values["target_per_trait"] == 8
    monkeypatch.setitem(prompts.Config.PRESETS["demo"], "target_per_trait", 3)
    monkeypatch.setitem(dpo.Config.PRESETS["demo"], "beta", 0.5)
    assert prompts.Config.for_scale("demo").target_per_trait == 3  # resolving again would differ
    received: list[Any] = []

    def capture(ctx: StageContext, config: Any) -> StageResult:
        received.append(config)
        return StageResult(stage="prompts", key=ctx.key)

    monkeypatch.setattr(prompts, "run", capture)
    prepared = prepare_stage(store, run_id, "prompts")
    run_stage(prepared, store, LocalEngines(store))
    assert [c.model_dump(mode="json") for c in received] == [recorded.values]
    # Another stage's config, as a stage reads it through the spec (introspect reads distill's),
    # is the recorded one too.
    recorded_dpo = load_run(store, run_id).stages["dpo"].config
    assert recorded_dpo is not None and recorded_dpo.values["beta"] != 0.5
    assert prepared.spec.stage_config("dpo").model_dump(mode="json") == recorded_dpo.values


def test_a_config_edited_without_its_digest_is_refused_naming_the_stage(tmp_path: Path) -> None:
    _, store, run_id = _saved(tmp_path)
    _edit(store, run_id, lambda doc: doc["stages"]["dpo"]["config"]["values"].update(lr=1.0))
    with pytest.raises(InvalidInput, match=r"recorded config of stage 'dpo' does not match its digest"):
        prepare_stage(store, run_id, "dpo")
    prepare_stage(store, run_id, "prompts")  # the other stages are intact


def test_a_config_edited_with_a_matching_digest_is_refused_by_its_key(tmp_path: Path) -> None:
    _, store, run_id = _saved(tmp_path)

    def edit(doc: dict[str, Any]) -> None:
        config = doc["stages"]["dpo"]["config"]
        config["values"]["lr"] = 1.0
        config["digest"] = digest_of(config["values"])

    _edit(store, run_id, edit)
    with pytest.raises(InvalidInput, match=r"config of stage 'dpo' .* is not the one its key \w{12} was computed"):
        prepare_stage(store, run_id, "dpo")


def test_a_record_of_another_config_schema_version_is_refused_before_and_at_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store, run_id = _saved(tmp_path)
    prepared = prepare_stage(store, run_id, "prompts")
    monkeypatch.setattr(prompts.Config, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(prompts, "run", lambda ctx, config: pytest.fail("ran a config of another schema"))
    expected = r"stage 'prompts' was recorded with config schema version 1, but this code's is 2"
    with pytest.raises(InvalidInput, match=expected):
        prepare_stage(store, run_id, "prompts")
    with pytest.raises(InvalidInput, match=expected):
        run_stage(prepared, store, LocalEngines(store))


def _strip_configs(doc: dict[str, Any]) -> None:
    for stage in doc["stages"].values():
        del stage["config"]


def test_a_record_written_before_configs_were_recorded_resumes_and_is_written_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, store, run_id = _saved(tmp_path)
    expected = {n: s.config for n, s in load_run(store, run_id).stages.items()}
    _edit(store, run_id, _strip_configs)
    assert all("config" not in s for s in (store.get_record(RUNS_PREFIX + run_id) or {})["stages"].values())
    assert {n: s.config for n, s in load_run(store, run_id).stages.items()} == expected
    received: list[Any] = []

    def capture(ctx: StageContext, config: Any) -> StageResult:
        received.append(config.model_dump(mode="json"))
        return StageResult(stage="prompts", key=ctx.key)

    monkeypatch.setattr(prompts, "run", capture)
    record = run_in_process(spec, store, until="prompts")
    assert record.run_id == run_id and record.stages["prompts"].state.value == "succeeded"
    assert received == [expected["prompts"].values]  # type: ignore[union-attr]
    stored = store.get_record(RUNS_PREFIX + run_id)
    assert stored is not None
    assert {n: s["config"] for n, s in stored["stages"].items()} == {
        n: c.model_dump(mode="json") for n, c in expected.items() if c is not None
    }


def test_an_old_record_whose_presets_changed_since_is_refused_not_guessed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store, run_id = _saved(tmp_path)
    _edit(store, run_id, _strip_configs)
    monkeypatch.setitem(dpo.Config.PRESETS["demo"], "beta", 0.5)
    record = load_run(store, run_id)
    assert record.stages["prompts"].config is not None  # its key is reproduced: migrated
    assert record.stages["dpo"].config is None  # the key was made from another preset
    with pytest.raises(InvalidInput, match=r"stage 'dpo' of run .* recorded by older code .* resubmit"):
        prepare_stage(store, run_id, "dpo")


@pytest.mark.parametrize("scale", ["demo", "proof", "full"])
def test_every_stages_recorded_config_rebuilds_to_itself(scale: str) -> None:
    spec = parse_spec(
        {"constitution": "sarcasm", "scale": scale, "stages": {"merge": {"mode": "weighted", "sft_weight": 0.5}}}
    )
    for name, resolved in spec.stage_configs().items():
        assert resolved.build(name).model_dump(mode="json") == resolved.values, name


def test_a_config_this_code_does_not_rebuild_as_recorded_is_refused(tmp_path: Path) -> None:
    _, store, run_id = _saved(tmp_path)
    # merge at mode "fold" refuses weights given explicitly: recorded as given, the config no
    # longer builds as it was resolved.
    _edit(store, run_id, lambda doc: doc["stages"]["merge"]["config"].update(given=["dpo_weight", "mode"]))
    with pytest.raises(InvalidInput, match=r"does not rebuild the recorded config of stage 'merge'"):
        prepare_stage(store, run_id, "merge")


def test_from_oct_run_to_the_stage_each_config_is_resolved_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from character.pipeline.catalog import STAGE_NAMES, stage_module
    from character.pipeline.stage import StageConfig

    resolved: list[type] = []
    for_scale = StageConfig.for_scale.__func__  # type: ignore[attr-defined]

    def counted(cls: type, *args: Any, **kwargs: Any) -> Any:
        resolved.append(cls)
        return for_scale(cls, *args, **kwargs)

    monkeypatch.setattr(StageConfig, "for_scale", classmethod(counted))
    received: list[Any] = []
    monkeypatch.setattr(
        prompts, "run", lambda ctx, config: received.append(config) or StageResult(stage="prompts", key=ctx.key)
    )
    spec = _spec(tmp_path)
    record = run_in_process(spec, open_store(spec.store), until="prompts")
    assert record.stages["prompts"].state.value == "succeeded" and len(received) == 1
    assert sorted(c.__module__ for c in resolved) == sorted(stage_module(n).Config.__module__ for n in STAGE_NAMES)


def test_a_stage_reading_another_stages_unrecovered_config_is_told_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store, run_id = _saved(tmp_path)
    _edit(store, run_id, _strip_configs)
    monkeypatch.setitem(dpo.Config.PRESETS["demo"], "beta", 0.5)
    spec = load_run(store, run_id).run_spec()  # prompts' config recovered, dpo's not
    assert spec.stage_config("prompts").target_per_trait == 8
    with pytest.raises(InvalidInput, match=r"holds no config for stage 'dpo'"):
        spec.stage_config("dpo")
