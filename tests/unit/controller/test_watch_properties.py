"""Watching a run: a watcher first gets the run as it stands (every stage's state, attempts and
message, then the run's own state), then its events; it stops when the run ends, when the caller
goes away, or when the controller stops, and leaves nothing registered behind."""

from __future__ import annotations

import pytest
from character.controller.executor import StageState
from character.controller.scheduler import Controller, ControllerConfig
from character.store.local import LocalStore

from tests.unit.controller.helpers import Caller, Clock, ScriptedExecutor, make_record

CONFIG = ControllerConfig(max_attempts=3, backoff_base_s=1, backoff_factor=2, backoff_max_s=4,
                          unreachable_timeout_s=30)


@pytest.fixture
def controller(tmp_path) -> Controller:
    store = LocalStore(tmp_path / "store")
    return Controller(store, ScriptedExecutor(store, {"b": ["fail", "ok"]}), CONFIG, clock=Clock())


def _finish(controller: Controller) -> None:
    for _ in range(40):
        controller.step()
        controller._clock.advance(5)  # type: ignore[attr-defined]
        if controller.get("run-test").state.final:
            return
    raise AssertionError(controller.get("run-test"))


def test_watching_a_finished_run_gives_its_snapshot_and_ends(controller: Controller) -> None:
    controller.submit_record(make_record())
    _finish(controller)
    caller = Caller()
    events = list(controller.watch("run-test", caller, tick=0.01))
    assert not caller.gave_up  # it ended by itself: the run had ended
    assert [(e.stage, e.state) for e in events] == [("a", StageState.SUCCEEDED), ("b", StageState.SUCCEEDED),
                                                     ("c", StageState.SUCCEEDED), (None, StageState.SUCCEEDED)]
    b = events[1]
    assert b.attempt == 2 and b.message == controller.get("run-test").stages["b"].message
    assert all(e.run_id == "run-test" for e in events)
    assert controller._watchers == {}  # type: ignore[attr-defined]


def test_a_watcher_whose_caller_went_away_stops(controller: Controller) -> None:
    controller.submit_record(make_record())
    events = list(controller.watch("run-test", alive=lambda: False, tick=0.01))
    assert [e.stage for e in events] == ["a", "b", "c", None]  # the snapshot, then nothing more
    assert events[-1].state is StageState.PENDING
    assert controller._watchers == {}  # type: ignore[attr-defined]


def test_two_watchers_each_get_every_event_and_unregister(controller: Controller) -> None:
    controller.submit_record(make_record())
    callers = Caller(), Caller()
    first = controller.watch("run-test", callers[0], tick=0.01)
    second = controller.watch("run-test", callers[1], tick=0.01)
    assert next(first).stage == "a" and next(second).stage == "a"
    assert len(controller._watchers["run-test"]) == 2  # type: ignore[attr-defined]
    _finish(controller)
    rest_first, rest_second = list(first), list(second)
    assert [(e.stage, e.state) for e in rest_first] == [(e.stage, e.state) for e in rest_second]
    assert rest_first[-1].stage is None and rest_first[-1].state is StageState.SUCCEEDED
    assert ("b", StageState.PENDING) in [(e.stage, e.state) for e in rest_first]  # the retry was seen
    assert controller._watchers == {}  # type: ignore[attr-defined]
    assert not any(c.gave_up for c in callers)
