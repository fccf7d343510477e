from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from character.controller.executor import StageState
from character.controller.runs import (
    TRANSITIONS,
    InvalidTransition,
    StageRecord,
    list_runs,
    load_run,
    new_run,
    prepare_stage,
    save_run,
    set_result,
)
from character.errors import InvalidInput, NotFound
from character.pipeline.catalog import STAGE_NAMES, stage_module
from character.pipeline.dag import run_id_from_keys, stage_keys
from character.pipeline.spec import parse_spec
from character.pipeline.stage import StageResult
from character.progress import ProgressEvent
from character.store.base import ArtifactRef, Conflict
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


T0 = datetime(2025, 3, 1, tzinfo=UTC)


def _t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_refused_transition_names_both_states() -> None:
    with pytest.raises(InvalidTransition, match=r"^stage cannot go from succeeded to running$"):
        _at(S).transition(R)


def test_each_transition_sets_the_message_and_the_times_it_stands_for() -> None:
    stage = StageRecord(key="k", next_attempt_at=_t(-1))
    stage.transition(R, "go", _t(1))
    assert (stage.state, stage.message, stage.attempts, stage.started_at, stage.finished_at, stage.next_attempt_at) \
        == (R, "go", 1, _t(1), None, None)
    stage.handle, stage.progress = "h1", ProgressEvent(task="x", done=1, total=2)
    stage.transition(F, "boom", _t(2))
    assert (stage.message, stage.finished_at, stage.handle, stage.progress) == ("boom", _t(2), None, None)
    stage.transition(P, "resumed", _t(3))
    assert (stage.message, stage.handle, stage.finished_at, stage.started_at) == ("resumed", None, _t(2), _t(1))
    stage.handle, stage.next_attempt_at = "h2", _t(4)
    stage.transition(R, "again", _t(5))
    assert (stage.attempts, stage.started_at, stage.finished_at, stage.handle, stage.next_attempt_at) == (
        2, _t(5), None, None, None)
    stage.handle = "h3"
    stage.transition(P, "retry", _t(6))
    assert stage.handle is None and stage.message == "retry"


def test_a_transition_without_a_time_is_stamped_now_in_utc() -> None:
    before = datetime.now(UTC)
    stage = StageRecord(key="k")
    stage.transition(R)
    stage.transition(C)
    assert before <= stage.started_at <= stage.finished_at <= datetime.now(UTC)
    assert stage.started_at.tzinfo is UTC and stage.message == ""


def test_a_retry_waiting_for_its_backoff_keeps_the_run_running() -> None:
    record = make_record()
    record.stages["a"].transition(R)
    record.stages["a"].transition(P, "retrying")
    record.refresh(_t(1))
    assert record.state is R and record.message == "" and record.updated_at == _t(1)


def test_the_run_message_follows_its_stages() -> None:
    record = make_record()
    record.cancel_requested = True
    record.refresh()
    assert (record.state, record.message) == (P, "cancelling")
    for name in "bc":
        record.stages[name].transition(R)
        record.stages[name].transition(F, f"{name} broke")
    record.stages["a"].transition(C, "cancelled by request")
    record.refresh()
    assert (record.state, record.message) == (F, "stage b failed: b broke")  # the first in DAG order
    record = make_record()
    for stage in record.stages.values():
        stage.transition(C)
    record.refresh()
    assert (record.state, record.message) == (C, "cancelled")
    record = make_record()
    record.message = "cancelling"
    for stage in record.stages.values():
        stage.transition(S)
    record.refresh()
    assert (record.state, record.message) == (S, "")
    before = datetime.now(UTC)
    record.refresh()
    assert before <= record.updated_at <= datetime.now(UTC)


def test_resume_marks_reopened_stages_and_clears_their_backoff() -> None:
    record = make_record()
    record.stages["a"].transition(R)
    record.stages["a"].transition(F, "boom")
    record.stages["b"].transition(C)
    record.stages["c"].next_attempt_at = _t(9)
    record.resume(_t(10))
    assert [s.message for s in record.stages.values()] == ["resumed", "resumed", ""]
    assert all(s.next_attempt_at is None for s in record.stages.values())
    assert record.stages["a"].retry_base == 1 and record.updated_at == _t(10)


def test_a_result_marks_its_stage_succeeded_with_its_artifacts() -> None:
    ref = ArtifactRef(kind="dataset", key="d1", content_digest="c1")
    result = StageResult(stage="a", key="k", artifacts={"pairs": ref})
    ran, cached = _at(R), StageRecord(key="k")
    set_result(ran, result, cached=False, at=_t(1))
    set_result(cached, result, cached=True, at=_t(2))
    assert (ran.state, ran.cached, ran.message, ran.finished_at, ran.artifacts) == (S, False, "", _t(1), {"pairs": ref})
    assert (cached.state, cached.cached, cached.message, cached.finished_at) == (S, True, "cached", _t(2))
    result.artifacts.clear()
    assert ran.artifacts == {"pairs": ref}  # the stage keeps its own copy


def test_a_stale_copy_of_a_record_cannot_overwrite_a_newer_one(tmp_path) -> None:
    store = LocalStore(tmp_path)
    record = make_record()
    save_run(store, record)
    with pytest.raises(Conflict):
        save_run(store, make_record())  # a second "new" run under the same id
    first, second = load_run(store, "run-test"), load_run(store, "run-test")
    first.stages["a"].transition(R)
    save_run(store, first)
    save_run(store, first)  # its own version moved on with it
    second.stages["a"].transition(C)
    with pytest.raises(Conflict):
        save_run(store, second)
    assert load_run(store, "run-test").stages["a"].state is R


def test_an_unknown_run_names_the_store_and_where_to_look(tmp_path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(NotFound) as err:
        load_run(store, "nope")
    assert str(err.value) == f"no run 'nope' in store {store.uri}; `oct list` shows the runs there"


def test_runs_are_listed_from_their_own_records_only(tmp_path) -> None:
    store = LocalStore(tmp_path)
    store.put_record("other/run-x", {"run_id": "run-x"})
    save_run(store, make_record("run-1"))
    assert [r.run_id for r in list_runs(store)] == ["run-1"]
    saved = list_runs(store)[0]
    saved.stages["a"].transition(R)
    save_run(store, saved)  # a listed record carries its stored version
    assert load_run(store, "run-1").stages["a"].state is R


def _spec(tmp_path):
    return parse_spec({"constitution": "sarcasm", "model": "tiny", "store": str(tmp_path / "store")})


def test_a_new_run_holds_every_stage_pending_with_the_keys_of_its_spec(tmp_path) -> None:
    spec = _spec(tmp_path)
    keys = stage_keys(spec)
    record = new_run(spec, executor="services")
    assert record.run_id == run_id_from_keys(keys) and record.executor == "services"
    assert record.spec == spec.model_dump(mode="json") and record.run_spec() == spec
    assert list(record.stages) == list(STAGE_NAMES)
    for name, stage in record.stages.items():
        assert (stage.key, stage.inputs, stage.state, stage.attempts) == (
            keys[name], tuple(stage_module(name).INPUTS), P, 0)
    assert record.created_at == record.updated_at and record.created_at.tzinfo is UTC
    assert new_run(spec, executor="inline", run_id="mine").run_id == "mine"


def test_a_stored_spec_that_no_longer_parses_names_its_record() -> None:
    record = make_record()
    record.spec = {"constitution": "sarcasm", "scale": "huge"}
    with pytest.raises(InvalidInput, match=r"^runs/run-test: scale"):
        record.run_spec()


def test_preparing_a_stage_takes_its_key_and_inputs_from_the_record(tmp_path) -> None:
    spec = _spec(tmp_path)
    store = LocalStore(tmp_path / "store")
    record = new_run(spec, executor="inline")
    save_run(store, record)
    prepared = prepare_stage(store, record.run_id, "sft")  # no job key: the record's
    assert (prepared.run_id, prepared.stage, prepared.key) == (record.run_id, "sft", record.stages["sft"].key)
    assert dict(prepared.input_keys) == {u: record.stages[u].key for u in stage_module("sft").INPUTS}
    with pytest.raises(InvalidInput) as err:
        prepare_stage(store, record.run_id, "sft", "f" * 64)
    assert err.value.where == "job.key"
    assert str(err.value) == (f"job.key: stage 'sft' of run {record.run_id!r} has key {record.stages['sft'].key[:12]} "
                              "in its record, not ffffffffffff: the job was made for another version of the run")


def test_preparing_a_stage_the_run_lacks_lists_the_runs_stages(tmp_path) -> None:
    store = LocalStore(tmp_path)
    save_run(store, make_record())
    with pytest.raises(NotFound, match=r"^unknown stage 'nope'"):
        prepare_stage(store, "run-test", "nope")
    with pytest.raises(NotFound) as err:
        prepare_stage(store, "run-test", "prompts")
    assert str(err.value) == "run 'run-test' has no stage 'prompts'; its stages are: a, b, c"
