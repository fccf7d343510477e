"""Model names: base models by name, a run id to its trained persona (adapters stacked, or
the merged model where the adapters are gone), nothing else; who may use and see which."""

from __future__ import annotations

import pytest
from character.controller.executor import StageState
from character.controller.runs import RunRecord, load_run, save_run
from character.errors import InvalidInput, NotFound
from character.security.auth import Identity, PermissionDenied
from character.serving.resolve import available, check_access, resolve, run_persona
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
