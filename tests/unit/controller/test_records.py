from __future__ import annotations

import pytest
from character.controller.executor import StageState
from character.controller.runs import (
    TRANSITIONS,
    InvalidTransition,
    StageRecord,
    list_runs,
    load_run,
    save_run,
)
from character.errors import NotFound
from character.store.local import LocalStore

from tests.unit.controller.helpers import make_record

P, R, S, F, C = (StageState.PENDING, StageState.RUNNING, StageState.SUCCEEDED, StageState.FAILED,
                 StageState.CANCELLED)


def _at(state: StageState) -> StageRecord:
    stage = StageRecord(key="k")
    path = {P: [], R: [R], S: [R, S], F: [R, F], C: [C]}[state]
    for to in path:
        stage.transition(to)
    return stage


@pytest.mark.parametrize("start", list(StageState))
@pytest.mark.parametrize("to", list(StageState))
def test_only_listed_transitions_are_allowed(start: StageState, to: StageState) -> None:
    stage = _at(start)
    if to in TRANSITIONS[start]:
        stage.transition(to)
        assert stage.state is to
    else:
        with pytest.raises(InvalidTransition):
            stage.transition(to)
        assert stage.state is start


def test_succeeded_is_final_forever() -> None:
    assert TRANSITIONS[S] == frozenset()


def test_running_counts_attempts_and_stamps_times() -> None:
    stage = StageRecord(key="k")
    stage.transition(R)
    first_start = stage.started_at
    stage.handle = "h1"
    stage.transition(P, "retry")
    assert stage.handle is None and stage.attempts == 1
    stage.transition(R)
    assert stage.attempts == 2 and stage.started_at is not None and stage.started_at >= first_start
    stage.transition(S)
    assert stage.finished_at is not None and stage.finished_at >= stage.started_at


def test_run_state_is_derived_from_stages() -> None:
    record = make_record()
    record.refresh()
    assert record.state is P
    record.stages["a"].transition(R)
    record.refresh()
    assert record.state is R
    record.stages["a"].transition(S)
    record.refresh()
    assert record.state is R  # b and c still to go
    record.stages["b"].transition(R)
    record.stages["b"].transition(F, "boom")
    record.stages["c"].transition(C, "not run")
    record.refresh()
    assert record.state is F and "stage b failed: boom" in record.message
    for name in "abc":
        record.stages[name] = _at(S)
    record.refresh()
    assert record.state is S


def test_resume_reopens_unfinished_stages_with_a_fresh_retry_budget() -> None:
    record = make_record()
    record.stages["a"].transition(R)
    record.stages["a"].transition(S)
    for _ in range(3):
        record.stages["b"].transition(R)
        record.stages["b"].transition(P)
    record.stages["b"].transition(R)
    record.stages["b"].transition(F, "gave up")
    record.stages["c"].transition(C)
    record.cancel_requested = True
    record.resume()
    assert record.stages["a"].state is S and record.stages["a"].attempts == 1
    assert record.stages["b"].state is P and record.stages["b"].attempts == 4
    assert record.stages["b"].attempts_since_resume == 0
    assert record.stages["c"].state is P and not record.cancel_requested
    assert record.state is R


def test_records_round_trip_through_the_store(tmp_path) -> None:
    store = LocalStore(tmp_path)
    first, second = make_record("run-1"), make_record("run-2")
    second.created_at = second.created_at.replace(year=2026)
    first.stages["a"].transition(R)
    for record in (first, second):
        save_run(store, record)
    loaded = load_run(store, "run-1")
    assert loaded == first
    assert [r.run_id for r in list_runs(store)] == ["run-2", "run-1"]
    with pytest.raises(NotFound, match="run-3"):
        load_run(store, "run-3")


def test_stages_come_back_in_dag_order_whatever_the_stored_order(tmp_path) -> None:
    record = make_record(dag={"c": ("b",), "a": (), "b": ("a",)})
    assert list(record.stages) == ["a", "b", "c"]
    store = LocalStore(tmp_path)
    save_run(store, record)
    assert list(load_run(store, record.run_id).stages) == ["a", "b", "c"]
