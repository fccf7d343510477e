"""Model names: base models by name, a run id to its trained persona (adapters stacked, or
the merged model where the adapters are gone), a published NAME[:TAG] to the weights its
record names (following its tag when it moves), nothing else; the documented order when a
bare name could mean two things; who may use and see which (run owner rules for run ids, the
registry's for published names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from character.controller.executor import StageState
from character.controller.runs import RunRecord, load_run, save_run
from character.errors import InvalidInput, NotFound
from character.models.registry import PLATFORM_CONFIG_ENV
from character.security.auth import Identity, PermissionDenied
from character.serving.registry import publish
from character.serving.resolve import (
    MAX_NAME,
    ServedPersona,
    available,
    base_names,
    check_access,
    check_model_name,
    published_persona,
    resolve,
    run_persona,
)
from character.store import LocalStore

ALICE, BOB, ROOT = Identity("alice", frozenset()), Identity("bob", frozenset()), Identity("root", frozenset({"admin"}))


def test_a_run_resolves_to_its_adapters_on_its_base(store: LocalStore, personas: tuple[RunRecord, RunRecord]) -> None:
    run = personas[0]
    persona = resolve(store, run.run_id)
    assert persona.base == "tiny" and persona.owner == "alice" and not persona.shared
    assert persona.adapters == (run.stages["dpo"].artifacts["adapter"], run.stages["sft"].artifacts["adapter"])
    assert persona.merged is None and not persona.is_base
    assert resolve(store, "tiny").is_base and resolve(store, "tiny").shared


def test_a_run_without_adapters_serves_its_merged_model(store: LocalStore,
                                                        personas: tuple[RunRecord, RunRecord]) -> None:
    record = load_run(store, personas[0].run_id)
    record.stages["sft"].artifacts = {}
    persona = run_persona(record)
    assert persona is not None and persona.adapters == ()
    assert persona.merged == record.stages["merge"].artifacts["model"]
    assert persona.digest != resolve(store, record.run_id).digest


def test_unknown_unfinished_and_malformed_names_are_refused(store: LocalStore,
                                                            personas: tuple[RunRecord, RunRecord]) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        resolve(store, "no-such-run")
    record = load_run(store, personas[1].run_id)
    record.run_id = record.run_id + "-unfinished"
    record.stages["merge"].state, record.stages["merge"].artifacts = StageState.PENDING, {}
    record._version = None
    save_run(store, record)
    with pytest.raises(NotFound, match="no merged model yet"):
        resolve(store, record.run_id)
    for bad in ("../runs/x", "/etc/passwd", "", "x" * 201, "a b"):
        with pytest.raises(InvalidInput) as err:
            resolve(store, bad)
        assert err.value.where == "model"


def test_callers_see_and_use_their_own_personas_and_admins_all(
    store: LocalStore, personas: tuple[RunRecord, RunRecord]
) -> None:
    alices, bobs = (run.run_id for run in personas)
    seen = {who.name: {p.name for p in available(store, who)} for who in (ALICE, BOB, ROOT)}
    assert alices in seen["alice"] and bobs not in seen["alice"]
    assert bobs in seen["bob"] and alices not in seen["bob"]
    assert {alices, bobs} <= seen["root"] and {"tiny", "smollm2"} <= seen["alice"] & seen["bob"]
    check_access(ALICE, resolve(store, alices))
    check_access(ROOT, resolve(store, bobs))
    check_access(BOB, resolve(store, "tiny"))
    with pytest.raises(PermissionDenied):
        check_access(ALICE, resolve(store, bobs))


def test_a_published_name_resolves_to_the_weights_its_record_names(
    store: LocalStore, personas: tuple[RunRecord, RunRecord]
) -> None:
    run = personas[0]
    record = publish(store, run.run_id, "named", "v1", owner="alice")
    publish(store, run.run_id, "named", owner="alice")  # "named" alone is its tag "latest"
    by_run, by_name, by_tag = (resolve(store, ref) for ref in (run.run_id, "named", "named:v1"))
    assert by_tag.name == "named:v1" and by_tag.base == "tiny" and by_tag.published == record
    assert by_tag.adapters == tuple(record.adapters[stage] for stage in ("dpo", "sft"))
    assert by_tag.digest == by_run.digest  # the run's weights, checked against the record's digests
    assert by_name.published is not None and by_name.published.run_id == run.run_id
    assert resolve(store, f"named@{record.record_id}").digest == by_run.digest


def test_moving_a_tag_moves_what_the_name_resolves_to(store: LocalStore, personas: tuple[RunRecord, RunRecord]) -> None:
    first, second = personas
    publish(store, first.run_id, "moving", owner="alice")
    before = resolve(store, "moving")
    publish(store, second.run_id, "moving", owner="alice")
    after = resolve(store, "moving")
    assert before.digest == resolve(store, first.run_id).digest
    assert after.digest == resolve(store, second.run_id).digest != before.digest


def test_published_personas_follow_the_registrys_visibility_rules(
    store: LocalStore, personas: tuple[RunRecord, RunRecord]
) -> None:
    alices, bobs = (run.run_id for run in personas)
    publish(store, bobs, "bobs-own", owner="bob")
    publish(store, bobs, "bobs-shared", owner="bob", shared=True)
    publish(store, alices, "alices-own", owner="alice")
    seen = {who.name: {p.name for p in available(store, who)} for who in (ALICE, BOB, ROOT)}
    assert {"bobs-shared", "bobs-shared:latest", "alices-own", "alices-own:latest"} <= seen["alice"]
    assert "bobs-own" not in seen["alice"] and "bobs-own:latest" not in seen["alice"]
    assert {"bobs-own", "bobs-shared", "alices-own"} <= seen["root"]
    check_access(ALICE, resolve(store, "bobs-shared"))  # shared: though bob's run is not alice's to use
    check_access(ROOT, resolve(store, "bobs-own"))
    with pytest.raises(PermissionDenied, match="persona bobs-own belongs to another user"):
        check_access(ALICE, resolve(store, "bobs-own:latest"))


def test_the_listing_puts_personas_then_runs_then_bases(store: LocalStore,
                                                        personas: tuple[RunRecord, RunRecord]) -> None:
    publish(store, personas[0].run_id, "ordered", "v2", owner="alice")
    kinds = ["persona" if p.published else "base" if p.is_base else "run" for p in available(store, ALICE)]
    assert kinds == sorted(kinds, key=["persona", "run", "base"].index) and {"persona", "run", "base"} == set(kinds)


def test_a_bare_name_is_a_base_model_then_a_run_id_then_a_persona(
    store: LocalStore, personas: tuple[RunRecord, RunRecord]
) -> None:
    alices, bobs = (run.run_id for run in personas)
    publish(store, alices, "tiny", owner="alice")  # a persona named like a base model
    publish(store, bobs, alices, owner="alice")  # and one named like a run id, pointing at another run
    assert resolve(store, "tiny").is_base and resolve(store, "tiny:latest").published is not None
    assert resolve(store, alices).published is None and resolve(store, alices).owner == "alice"
    assert resolve(store, f"{alices}:latest").digest == resolve(store, bobs).digest
    listed = [p.name for p in available(store, ALICE)]
    assert listed.count("tiny") == 1 and "tiny:latest" in listed  # the bare name lists the base only
    assert listed.count(alices) == 1 and f"{alices}:latest" in listed


def test_an_unknown_persona_is_not_found_without_naming_the_others(
    store: LocalStore, personas: tuple[RunRecord, RunRecord]
) -> None:
    publish(store, personas[1].run_id, "secret-name", owner="bob")
    for ref in ("no-such-persona", "no-such-persona:v9", "secret-name:v9", "Upper-Case"):
        with pytest.raises(NotFound, match="does not exist") as err:
            resolve(store, ref)
        assert "secret-name" not in str(err.value).replace(ref, "")
    for bad in ("name:Bad-Tag", "name@not-a-record", "a:b:c"):
        with pytest.raises(InvalidInput) as invalid:
            resolve(store, bad)
        assert invalid.value.where == "model"


def test_the_printed_chat_command_names_the_persona_not_the_base_its_name_shadows(
    store: LocalStore, personas: tuple[RunRecord, RunRecord]
) -> None:
    from io import StringIO

    from character.cli.personas import print_published
    from rich.console import Console

    for name, command in (("smollm2", "oct chat smollm2:latest"), ("plain-name", "oct chat plain-name")):
        out = StringIO()
        print_published(publish(store, personas[0].run_id, name, owner="alice"), Console(file=out, width=400))
        printed = out.getvalue()
        assert f"  {command}\n" in printed
        assert resolve(store, command.removeprefix("oct chat ")).published is not None


# ------------------------------------------------------------------ refusals read whole
def test_model_names_are_bounded_and_refused_whole(store: LocalStore) -> None:
    refusal = ("model: model must be a name of at most 200 letters, digits and ._:@- "
               "(a base model, a run id, NAME[:TAG] or NAME@RECORD)")
    for bad in ("x" * (MAX_NAME + 1), "a b", "", cast(Any, None), cast(Any, 5)):
        with pytest.raises(InvalidInput) as err:
            check_model_name(bad)
        assert (str(err.value), err.value.where) == (refusal, "model")
    check_model_name("x" * MAX_NAME)
    with pytest.raises(NotFound):  # at the bound the name is taken, and simply unknown
        resolve(store, "x" * MAX_NAME)


def test_an_unknown_model_is_refused_whole_naming_the_bases(store: LocalStore,
                                                            personas: tuple[RunRecord, RunRecord]) -> None:
    publish(store, personas[1].run_id, "whole", owner="bob")
    for ref in ("no-such-model", "Upper-Case", "whole:v9"):
        with pytest.raises(NotFound) as err:
            resolve(store, ref)
        assert str(err.value) == (
            f"The model `{ref}` does not exist: neither a base model ({', '.join(base_names())}), a run with a "
            "trained persona, nor a published persona NAME[:TAG]; GET /v1/models or `oct personas trained` "
            "lists what there is")
    with pytest.raises(InvalidInput) as invalid:
        resolve(store, "whole:Bad-Tag")
    assert str(invalid.value) == ("model: invalid tag 'Bad-Tag': at most 64 lower-case letters, digits, '.', '_' "
                                  "or '-', starting with a letter or digit")


def test_a_base_model_is_served_as_itself(store: LocalStore) -> None:
    assert resolve(store, "tiny") == ServedPersona(name="tiny", base="tiny", shared=True)


def test_another_owners_run_is_refused_naming_the_run(store: LocalStore,
                                                      personas: tuple[RunRecord, RunRecord]) -> None:
    bobs = personas[1].run_id
    with pytest.raises(PermissionDenied) as err:
        check_access(ALICE, resolve(store, bobs))
    assert str(err.value) == f"run {bobs} belongs to another user; ask its owner or an admin"


def test_a_published_record_serves_its_adapters_else_its_merged_model_else_nothing(
        store: LocalStore, personas: tuple[RunRecord, RunRecord]) -> None:
    record = publish(store, personas[1].run_id, "weights", owner="bob", shared=True)
    assert record.model is not None
    stacked = published_persona(record.model_copy(update={"model": None}), "weights")
    assert stacked == ServedPersona(name="weights", base="tiny", adapters=(record.adapters["dpo"],
                                    record.adapters["sft"]), owner="bob", shared=True)
    merged = published_persona(record.model_copy(update={"adapters": {"dpo": record.adapters["dpo"]}}), "w:x")
    assert merged == ServedPersona(name="w:x", base="tiny", merged=record.model, owner="bob", shared=True)
    assert merged.published is not None and merged.published.record_id == record.record_id
    with pytest.raises(NotFound) as err:
        published_persona(record.model_copy(update={"model": None, "adapters": {}}), "weights")
    assert str(err.value) == (f"The model `weights` does not exist: persona record weights@{record.record_id} "
                              "names neither a merged model nor both adapters")


def test_a_run_serves_only_a_succeeded_merge_with_its_model(store: LocalStore,
                                                            personas: tuple[RunRecord, RunRecord]) -> None:
    run = personas[0]
    for state, artifacts in ((StageState.SUCCEEDED, {}), (StageState.FAILED, run.stages["merge"].artifacts)):
        record = run.model_copy(deep=True)
        record.stages["merge"].state, record.stages["merge"].artifacts = state, artifacts
        assert run_persona(record) is None
    # A run whose spec lost its sft stage and model name: the merged model, on no named base.
    record = run.model_copy(deep=True)
    del record.stages["sft"]
    del record.spec["model"]
    assert run_persona(record) == ServedPersona(name=run.run_id, base="", merged=run.stages["merge"].artifacts["model"],
                                                owner="alice")


def test_a_reference_with_at_or_colon_is_a_persona_even_where_a_base_model_has_its_name(
        store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Registry names may hold '@', yet "NAME@..." always names a published persona record."""
    config = tmp_path / "platform.yaml"
    config.write_text("models:\n  house@v2: tiny\n")
    monkeypatch.setenv(PLATFORM_CONFIG_ENV, str(config))
    assert "house@v2" in base_names()
    with pytest.raises(InvalidInput) as err:
        resolve(store, "house@v2")
    assert err.value.where == "model" and "invalid record id 'v2'" in str(err.value)
