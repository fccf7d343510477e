"""A stage runs the config recorded when its run was made: resolved once (presets + overrides),
stored with its digest and schema version, hashed into the key, and checked before it runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from character.controller.runs import load_run, prepare_stage
from character.errors import InvalidInput
from character.pipeline.engines import LocalEngines
from character.pipeline.runner import run_stage
from character.pipeline.spec import parse_spec
from character.pipeline.stage import StageContext, StageResult
from character.stages import dpo, prompts
from character.store.digest import digest_of

from tests.unit.controller.recorded_runs import edit_record, saved_run, strip_configs


def _refusal(call: Callable[[], object]) -> InvalidInput:
    with pytest.raises(InvalidInput) as err:
        call()
    return err.value


def _says(refusal: InvalidInput, where: str, message: str) -> None:
    """The refusal locates the problem at `where` and tells the reader exactly `message`."""
    assert (refusal.where, str(refusal)) == (where, f"{where}: {message}")


def test_a_record_holds_each_stages_config_with_its_digest_and_schema_version(tmp_path: Path) -> None:
    spec, store, run_id = saved_run(tmp_path)
    record = load_run(store, run_id)
    for name, stage in record.stages.items():
        assert stage.config is not None
        assert stage.config.values == spec.stage_config(name).model_dump(mode="json")
        assert stage.config.digest == digest_of(stage.config.values)
        assert stage.config.schema_version == 1
    assert record.stages["dpo"].config is not None and record.stages["dpo"].config.values["lr"] == 5.0e-5


def test_the_key_of_a_stage_is_the_digest_of_its_recorded_config_input(tmp_path: Path) -> None:
    spec, store, run_id = saved_run(tmp_path)
    stage = load_run(store, run_id).stages["dpo"]
    assert stage.config is not None
    distill_key = load_run(store, run_id).stages["distill"].key
    assert stage.key == digest_of(
        {
            "stage": "dpo",
            "config": stage.config.values,
            "uses": {"model": spec.model, "seed": spec.seed, "dtype": spec.dtype},
            "inputs": {"distill": distill_key},
        }
    )


def test_a_preset_edited_between_submit_and_run_does_not_change_what_the_stage_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store, run_id = saved_run(tmp_path)
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
    _, store, run_id = saved_run(tmp_path)
    edit_record(store, run_id, lambda doc: doc["stages"]["dpo"]["config"]["values"].update(lr=1.0))
    digest = (load_run(store, run_id).stages["dpo"].config or pytest.fail("no dpo config")).digest
    _says(_refusal(lambda: prepare_stage(store, run_id, "dpo")), "stages.dpo.config",
          f"the recorded config of stage 'dpo' does not match its digest {digest[:12]}: the record was edited; "
          "resubmit the run spec")
    prepare_stage(store, run_id, "prompts")  # the other stages are intact


def test_a_config_edited_with_a_matching_digest_is_refused_by_its_key(tmp_path: Path) -> None:
    _, store, run_id = saved_run(tmp_path)

    def edit(doc: dict[str, Any]) -> None:
        config = doc["stages"]["dpo"]["config"]
        config["values"]["lr"] = 1.0
        config["digest"] = digest_of(config["values"])

    edit_record(store, run_id, edit)
    key = load_run(store, run_id).stages["dpo"].key
    _says(_refusal(lambda: prepare_stage(store, run_id, "dpo")), f"runs/{run_id}.stages.dpo",
          f"the recorded config of stage 'dpo' of run {run_id!r} is not the one its key {key[:12]} was computed "
          "from: the record was edited; resubmit the run spec")


def test_a_record_of_another_config_schema_version_is_refused_before_and_at_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store, run_id = saved_run(tmp_path)
    prepared = prepare_stage(store, run_id, "prompts")
    monkeypatch.setattr(prompts.Config, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(prompts, "run", lambda ctx, config: pytest.fail("ran a config of another schema"))
    expected = ("stage 'prompts' was recorded with config schema version 1, but this code's is 2: its presets "
                "mean something else now; resubmit the run spec to resolve it with this code")
    _says(_refusal(lambda: prepare_stage(store, run_id, "prompts")), "stages.prompts.config", expected)
    _says(_refusal(lambda: run_stage(prepared, store, LocalEngines(store))), "stages.prompts.config", expected)


def test_an_old_record_whose_presets_changed_since_is_refused_not_guessed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store, run_id = saved_run(tmp_path)
    edit_record(store, run_id, strip_configs)
    monkeypatch.setitem(dpo.Config.PRESETS["demo"], "beta", 0.5)
    record = load_run(store, run_id)
    assert record.stages["prompts"].config is not None  # its key is reproduced: migrated
    assert record.stages["dpo"].config is None  # the key was made from another preset
    _says(_refusal(lambda: prepare_stage(store, run_id, "dpo")), f"runs/{run_id}.stages.dpo",
          f"stage 'dpo' of run {run_id!r} was recorded by older code and its config cannot be reconstructed "
          "(this code's presets give another key): resubmit the run spec")


def test_a_record_written_before_configs_were_recorded_gets_back_the_configs_its_keys_came_from(
    tmp_path: Path,
) -> None:
    _, store, run_id = saved_run(tmp_path)
    recorded = {n: s.config for n, s in load_run(store, run_id).stages.items()}
    edit_record(store, run_id, strip_configs)
    assert {n: s.config for n, s in load_run(store, run_id).stages.items()} == recorded


def test_migrating_a_record_leaves_each_recorded_config_as_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the stages without a config are given one: a config recorded under another schema
    version stays as recorded (and refused), even where this code's presets give the same key."""
    _, store, run_id = saved_run(tmp_path)
    edit_record(store, run_id, lambda doc: strip_configs(doc, ("dpo",)))
    monkeypatch.setattr(prompts.Config, "SCHEMA_VERSION", 2)
    record = load_run(store, run_id)
    assert record.stages["dpo"].config is not None
    assert (record.stages["prompts"].config or pytest.fail("prompts lost its config")).schema_version == 1
    assert "schema version 1, but this code's is 2" in str(_refusal(lambda: prepare_stage(store, run_id, "prompts")))


@pytest.mark.parametrize("scale", ["demo", "proof", "full"])
def test_every_stages_recorded_config_rebuilds_to_itself(scale: str) -> None:
    spec = parse_spec(
        {"constitution": "sarcasm", "scale": scale, "stages": {"merge": {"mode": "weighted", "sft_weight": 0.5}}}
    )
    for name, resolved in spec.stage_configs().items():
        assert resolved.build(name).model_dump(mode="json") == resolved.values, name


def test_a_config_this_code_does_not_rebuild_as_recorded_is_refused(tmp_path: Path) -> None:
    _, store, run_id = saved_run(tmp_path)
    # merge at mode "fold" refuses weights given explicitly: recorded as given, the config no
    # longer builds as it was resolved.
    edit_record(store, run_id, lambda doc: doc["stages"]["merge"]["config"].update(given=["dpo_weight", "mode"]))
    _says(_refusal(lambda: prepare_stage(store, run_id, "merge")), "stages.merge.config",
          "this code does not rebuild the recorded config of stage 'merge' (a field or default changed without "
          "a new SCHEMA_VERSION): resubmit the run spec")


def test_a_stage_reading_another_stages_unrecovered_config_is_told_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store, run_id = saved_run(tmp_path)
    edit_record(store, run_id, strip_configs)
    monkeypatch.setitem(dpo.Config.PRESETS["demo"], "beta", 0.5)
    spec = load_run(store, run_id).run_spec()  # prompts' config recovered, dpo's not
    assert spec.stage_config("prompts").target_per_trait == 8
    _says(_refusal(lambda: spec.stage_config("dpo")), "stages.dpo",
          "the run holds no config for stage 'dpo' (recorded by older code with other presets): resubmit the "
          "run spec")
