"""The persona registry on a real local store: publish then get returns the record; a
republished tag moves while the old record stays readable; of two concurrent publishes of one
tag exactly one moves it and the other gets Conflict (and publishing again succeeds); an
unknown name lists the existing ones; names are bounded and located; an unfinished run is
refused; the evaluation's figures travel with the record; owners keep their names."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from character import stats
from character.controller.executor import StageState
from character.controller.runs import RunRecord, new_run, save_run
from character.errors import InvalidInput, NotFound
from character.pipeline.publish import PublishTarget
from character.pipeline.spec import parse_spec
from character.security.auth import Identity, PermissionDenied
from character.serving.registry import (
    MAX_REF,
    RECORD_ID_LENGTH,
    check_visible,
    get_persona,
    parse_ref,
    persona_names,
    persona_versions,
    publish,
    publish_as_specified,
    trained_personas,
    visible_personas,
)
from character.store import LocalStore
from character.store.base import Conflict
from character.store.digest import digest_of

from tests.unit.serving.helpers import evaluated, trained_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, torch_one_thread: None) -> tuple[Path, RunRecord, RunRecord]:
    """A store holding two finished runs (alice's and bob's) on the tiny model."""
    root = tmp_path_factory.mktemp("registry")
    store = LocalStore(root / "store")
    return root / "store", trained_run(store, root, seed=1, owner="alice"), trained_run(store, root, seed=2,
                                                                                         owner="alice")


@pytest.fixture
def store(runs: tuple[Path, RunRecord, RunRecord], tmp_path: Path) -> LocalStore:
    """A fresh copy of the module's store, so each test starts with no personas."""
    import shutil

    shutil.copytree(runs[0], tmp_path / "store")
    return LocalStore(tmp_path / "store")


def test_publish_then_get_returns_the_record(store: LocalStore, runs: tuple[Path, RunRecord, RunRecord]) -> None:
    run = runs[1]
    published = publish(store, run.run_id, "snark", owner="alice")
    assert get_persona(store, "snark") == published == get_persona(store, "snark:latest")
    merge, dpo, sft = (run.stages[s] for s in ("merge", "dpo", "sft"))
    assert published.model == merge.artifacts["model"]
    assert published.adapters == {"dpo": dpo.artifacts["adapter"], "sft": sft.artifacts["adapter"]}
    assert list(published.adapters) == ["dpo", "sft"]
    assert published.stage_keys == {name: stage.key for name, stage in run.stages.items()}
    assert (published.run_id, published.owner, published.base_model, published.persona) == \
        (run.run_id, "alice", "tiny", "sarcasm")


def test_republishing_moves_the_tag_and_the_old_record_stays_readable(
        store: LocalStore, runs: tuple[Path, RunRecord, RunRecord]) -> None:
    first = publish(store, runs[1].run_id, "snark", owner="alice")
    second = publish(store, runs[2].run_id, "snark", owner="alice")
    assert get_persona(store, "snark").run_id == runs[2].run_id
    assert second.record_id != first.record_id
    assert get_persona(store, f"snark@{first.record_id}") == first
    assert [p.record_id for p in persona_versions(store, "snark")] == [first.record_id, second.record_id]


def test_publishing_the_run_a_tag_names_again_changes_nothing(
        store: LocalStore, runs: tuple[Path, RunRecord, RunRecord]) -> None:
    first = publish(store, runs[1].run_id, "snark", owner="alice")
    assert publish(store, runs[1].run_id, "snark", owner="alice") == first
    assert len(persona_versions(store, "snark")) == 1


def test_tags_are_independent_and_listed(store: LocalStore, runs: tuple[Path, RunRecord, RunRecord]) -> None:
    publish(store, runs[1].run_id, "snark", tag="v1", owner="alice")
    publish(store, runs[2].run_id, "snark", tag="v2", owner="alice")
    publish(store, runs[2].run_id, "dry", owner="alice")
    listed = [(p.name, p.tag, p.run_id) for p in trained_personas(store)]
    assert listed == [("dry", "latest", runs[2].run_id), ("snark", "v1", runs[1].run_id),
                      ("snark", "v2", runs[2].run_id)]


class RacingStore(LocalStore):
    """A real local store whose reads of one tag record wait until `readers` threads have read
    it, so concurrent publishes all see the same version before any of them writes."""

    def __init__(self, root: Path, key: str, readers: int):
        super().__init__(root)
        self._key, self._barrier = key, threading.Barrier(readers, timeout=30)

    def get_record_versioned(self, key: str) -> tuple[dict[str, Any], str] | None:
        found = super().get_record_versioned(key)
        if key == self._key and not self._barrier.broken:
            self._barrier.wait()
        return found


@pytest.mark.parametrize("existing", [False, True], ids=["new-tag", "moved-tag"])
def test_of_two_concurrent_publishes_of_one_tag_one_wins_and_the_other_gets_conflict(
        store: LocalStore, runs: tuple[Path, RunRecord, RunRecord], existing: bool) -> None:
    if existing:
        publish(store, runs[1].run_id, "snark", owner="alice", shared=True)
    racing = RacingStore(store.root, "personas/snark/tags/latest", readers=2)
    outcomes: dict[str, object] = {}

    def attempt(run: RunRecord) -> None:
        try:
            outcomes[run.run_id] = publish(racing, run.run_id, "snark", owner="alice")
        except Conflict as err:
            outcomes[run.run_id] = err

    threads = [threading.Thread(target=attempt, args=(run,)) for run in runs[1:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    conflicts = [run_id for run_id, out in outcomes.items() if isinstance(out, Conflict)]
    winners = [run_id for run_id, out in outcomes.items() if not isinstance(out, Conflict)]
    assert len(conflicts) == 1 and len(winners) == 1, outcomes
    assert get_persona(store, "snark").run_id == winners[0]
    loser = outcomes[conflicts[0]]
    assert "publish again" in str(loser)
    # Nothing the loser wrote is lost, and publishing again moves the tag to it.
    assert conflicts[0] in {p.run_id for p in persona_versions(store, "snark")}
    assert publish(store, conflicts[0], "snark", owner="alice").run_id == conflicts[0]
    assert get_persona(store, "snark").run_id == conflicts[0]


def test_an_unknown_name_lists_the_existing_ones(store: LocalStore,
                                                  runs: tuple[Path, RunRecord, RunRecord]) -> None:
    with pytest.raises(NotFound, match="none yet"):
        get_persona(store, "snark")
    publish(store, runs[1].run_id, "snark", owner="alice")
    publish(store, runs[1].run_id, "dry", owner="alice")
    with pytest.raises(NotFound, match="published personas: dry, snark"):
        get_persona(store, "wit")
    with pytest.raises(NotFound, match="no tag 'v9'; its tags: latest"):
        get_persona(store, "snark:v9")


@pytest.mark.parametrize(("name", "tag", "field"), [
    ("Snark", "latest", "name"), ("snark:v1", "latest", "name"), ("../x", "latest", "name"),
    ("x" * 65, "latest", "name"), ("snark", "v 1", "tag"), ("snark", "", "tag"),
])
def test_bad_names_and_tags_are_refused_naming_the_field(store: LocalStore, runs: tuple[Path, RunRecord, RunRecord],
                                                         name: str, tag: str, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        publish(store, runs[1].run_id, name, tag=tag)
    assert err.value.where == field
    assert trained_personas(store) == []


@pytest.mark.parametrize("ref", ["", "x" * 300, "snark@123", "snark@" + "g" * 20, "UP:latest", "snark:a/b"])
def test_bad_references_are_refused(store: LocalStore, ref: str) -> None:
    with pytest.raises(InvalidInput):
        get_persona(store, ref)


def test_an_unfinished_run_is_refused(store: LocalStore) -> None:
    spec = parse_spec({"constitution": "sarcasm", "model": "tiny", "store": store.uri})
    record = new_run(spec, "inline", run_id="run-unfinished")
    record.refresh()
    save_run(store, record)
    with pytest.raises(InvalidInput, match="merge stage is pending") as err:
        publish(store, "run-unfinished", "snark")
    assert err.value.where == "run"
    with pytest.raises(NotFound, match="no run 'run-nothing'"):
        publish(store, "run-nothing", "snark")
    assert trained_personas(store) == []


def test_the_evaluation_figures_travel_with_the_record(store: LocalStore,
                                                       runs: tuple[Path, RunRecord, RunRecord]) -> None:
    run = runs[1]
    figure = stats.evidence("held-out preference accuracy", 0.7, 40, "held-out pairs", (0.53, 0.83),
                            "Clopper-Pearson", "binomial test", "chance (0.5)", 0.01)
    evaluated(store, run.run_id, store.root.parent / "eval", {"dpo_heldout": figure})
    published = publish(store, run.run_id, "snark")
    assert published.figures == {"dpo_heldout": figure}  # the evaluation's own figure, every field
    assert get_persona(store, "snark").figures["dpo_heldout"].verdict() == figure.verdict()


def test_a_record_published_before_figures_were_evidence_still_reads(
        store: LocalStore, runs: tuple[Path, RunRecord, RunRecord]) -> None:
    """Records written when the registry kept only part of each figure: the figure reads back
    with the verdict it was published with."""
    figures = {
        "own": stats.evidence("share of own traits, full minus base", 0.12, 160, "comparisons", (0.04, 0.2),
                              "bootstrap", "McNemar exact test", "no change", 0.003),
        "small": stats.evidence("win rate", 0.6, 8, "decided pairs", (0.25, 0.9), "Clopper-Pearson",
                                "exact binomial test", "chance (0.5)", 0.7),
    }
    kept = ("figure", "value", "n", "unit", "ci_low", "ci_high", "test", "p_value", "verdict", "distinguishable")
    persona = publish(store, runs[2].run_id, "oldfig", owner="bob").model_dump(mode="json")
    persona["figures"] = {k: {f: e.as_dict()[f] for f in kept} for k, e in figures.items()}
    store.put_record(f"personas/oldfig/records/{persona['record_id']}", persona)
    found = get_persona(store, "oldfig").figures
    assert {k: e.verdict() for k, e in found.items()} == {k: e.verdict() for k, e in figures.items()}
    assert found["small"].underpowered and found["small"].min_n == 20 and not found["own"].underpowered
    # What the old records lacked: the interval's method as not recorded, the null from a
    # distinguishable verdict's words ("no effect" when it names none), no minimum n when not short.
    assert {k: (e.interval, e.null) for k, e in found.items()} == {"own": ("not recorded", "no change"),
                                                                  "small": ("not recorded", "no effect")}
    assert found["own"].min_n == 0


def test_a_name_belongs_to_its_first_owner(store: LocalStore, runs: tuple[Path, RunRecord, RunRecord]) -> None:
    publish(store, runs[1].run_id, "snark", owner="alice")
    with pytest.raises(PermissionDenied):
        publish(store, runs[2].run_id, "snark", owner="bob")
    assert get_persona(store, "snark").run_id == runs[1].run_id
    moved = publish(store, runs[2].run_id, "snark", owner="root", admin=True)
    assert moved.owner == "alice"  # an admin moves alice's tag; the persona stays hers


def test_callers_see_their_own_and_shared_personas(store: LocalStore,
                                                   runs: tuple[Path, RunRecord, RunRecord]) -> None:
    mine = publish(store, runs[1].run_id, "snark", owner="alice")
    publish(store, runs[2].run_id, "dry", owner="alice", shared=True)
    bob, alice, admin = Identity("bob"), Identity("alice"), Identity("root", frozenset({"admin"}))
    assert [p.name for p in visible_personas(store, bob)] == ["dry"]
    assert [p.name for p in visible_personas(store, alice)] == ["dry", "snark"]
    assert [p.name for p in visible_personas(store, admin)] == ["dry", "snark"]
    with pytest.raises(PermissionDenied):
        check_visible(bob, mine)
    local = publish(store, runs[1].run_id, "local")  # `oct` on one's own machine: owner ""
    assert [p.name for p in visible_personas(store, Identity(""))] == ["dry"]
    assert local.owner == ""



# ------------------------------------------------------------------ refusals read whole
def test_references_are_refused_with_the_whole_message_and_where() -> None:
    """Each malformed reference is refused where it is wrong: the reference as a whole (empty or
    over MAX_REF), its record id, its name or its tag."""
    shape = (f"persona: give a persona as NAME, NAME:TAG or NAME@RECORD (at most {MAX_REF} characters)")
    for ref in ("", "x" * (MAX_REF + 1)):
        with pytest.raises(InvalidInput) as err:
            parse_ref(ref)
        assert (str(err.value), err.value.where) == (shape, "persona")
    with pytest.raises(InvalidInput) as err:
        parse_ref("x" * MAX_REF)  # at the bound the length passes and the name is what is wrong
    assert err.value.where == "persona name"
    long_id = "0123456789" * 5
    for ref, shown in ((f"snark@{long_id}", long_id[:40]), ("snark@" + "X" * 20, "X" * 20),
                       ("snark@a@" + "0" * 18, "a@" + "0" * 18)):
        with pytest.raises(InvalidInput) as err:
            parse_ref(ref)
        assert str(err.value) == (f"persona: invalid record id {shown!r}: {RECORD_ID_LENGTH} hex digits "
                                  "(`oct personas trained` shows them)")
        assert err.value.where == "persona"
    for ref, where in (("Snark", "persona name"), ("Snark@" + "0" * 20, "persona name"),
                       ("snark:V1", "tag")):
        with pytest.raises(InvalidInput) as err:
            parse_ref(ref)
        assert err.value.where == where
        assert str(err.value).startswith(f"{where}: invalid {where} ")


def test_references_parse_into_name_tag_and_record() -> None:
    assert parse_ref("snark") == ("snark", "latest", None)
    assert parse_ref("snark:v1") == ("snark", "v1", None)
    assert parse_ref("snark@" + "0a" * 10) == ("snark", "latest", "0a" * 10)


def test_a_missing_record_is_named_with_where_it_was_named(store: LocalStore,
                                                           runs: tuple[Path, RunRecord, RunRecord]) -> None:
    missing = "0" * RECORD_ID_LENGTH
    with pytest.raises(NotFound) as err:
        get_persona(store, f"snark@{missing}")
    assert str(err.value) == (f"no record snark@{missing} in store {store.uri} (named by snark@{missing}); "
                              "`oct personas trained` lists the published personas")
    # A tag whose record id is absent: read, and refused by publish, naming the tag record.
    store.put_record("personas/snark/tags/latest", {"moved_at": "2026-01-01T00:00:00+00:00"})
    gap = (f"no record snark@ in store {store.uri} (named by personas/snark/tags/latest); "
           "`oct personas trained` lists the published personas")
    with pytest.raises(NotFound) as err:
        get_persona(store, "snark")
    assert str(err.value) == gap
    with pytest.raises(NotFound) as err:
        publish(store, runs[1].run_id, "snark")
    assert str(err.value) == gap


def test_a_malformed_record_is_refused_listing_every_problem_and_the_record(
        store: LocalStore, runs: tuple[Path, RunRecord, RunRecord]) -> None:
    persona = publish(store, runs[1].run_id, "snark", owner="alice").model_dump(mode="json")
    key = f"personas/snark/records/{persona['record_id']}"
    del persona["owner"]
    persona["adapters"] = {"dpo": 5}
    store.put_record(key, persona)
    with pytest.raises(InvalidInput) as err:
        get_persona(store, "snark")
    assert err.value.where == f"{store.uri} record {key}"
    assert str(err.value) == (f"{store.uri} record {key}: owner: Field required; adapters.dpo: Input should be "
                              "a valid dictionary or instance of ArtifactRef")


def test_unknown_names_and_tags_are_refused_listing_what_exists(
        store: LocalStore, runs: tuple[Path, RunRecord, RunRecord]) -> None:
    with pytest.raises(NotFound) as err:
        get_persona(store, "snark")
    assert str(err.value) == (f"no trained persona 'snark' in store {store.uri}; published personas: "
                              "none yet: `oct personas publish RUN --name NAME`")
    published = publish(store, runs[1].run_id, "snark", tag="v1", owner="alice")
    publish(store, runs[1].run_id, "snark", tag="v2", owner="alice")
    # A name with a record but no tag (a publish that lost its tag race) is not a published persona.
    store.put_record(f"personas/ghost/records/{published.record_id}", published.model_dump(mode="json"))
    assert persona_names(store) == ["snark"]
    with pytest.raises(NotFound) as err:
        get_persona(store, "ghost")
    assert str(err.value) == f"no trained persona 'ghost' in store {store.uri}; published personas: snark"
    with pytest.raises(NotFound) as err:
        get_persona(store, "snark")
    assert str(err.value) == "persona 'snark' has no tag 'latest'; its tags: v1, v2"


def test_another_owners_name_is_refused_whole(store: LocalStore, runs: tuple[Path, RunRecord, RunRecord]) -> None:
    publish(store, runs[1].run_id, "snark", owner="alice")
    with pytest.raises(PermissionDenied) as err:
        publish(store, runs[2].run_id, "snark", owner="bob")
    assert str(err.value) == "persona 'snark' belongs to another user; choose another name or ask an admin"
    with pytest.raises(InvalidInput) as bad:
        persona_versions(store, "Snark")
    assert bad.value.where == "name"


def test_an_admin_republishing_the_tags_run_changes_nothing(
        store: LocalStore, runs: tuple[Path, RunRecord, RunRecord]) -> None:
    first = publish(store, runs[1].run_id, "snark", owner="alice")
    assert publish(store, runs[1].run_id, "snark", owner="root", admin=True) == first
    assert len(persona_versions(store, "snark")) == 1


def test_the_tag_record_names_the_record_and_when_it_moved(
        store: LocalStore, runs: tuple[Path, RunRecord, RunRecord]) -> None:
    published = publish(store, runs[1].run_id, "snark", owner="alice")
    assert published.published_at.utcoffset() == timedelta(0)
    assert store.get_record("personas/snark/tags/latest") == {
        "record_id": published.record_id, "moved_at": published.published_at.isoformat()}
    spec = runs[1].run_spec()
    assert published.constitution_digest == digest_of(spec.persona.model_dump(mode="json"))


@pytest.mark.parametrize(("state", "artifacts", "shown"), [
    (StageState.SUCCEEDED, False, "succeeded"), (StageState.FAILED, True, "failed"), (None, False, "missing"),
])
def test_a_run_without_a_merged_model_is_refused_whole(
        store: LocalStore, runs: tuple[Path, RunRecord, RunRecord], state: StageState | None, artifacts: bool,
        shown: str) -> None:
    """Publishing needs a merge stage that succeeded and stored its model: any one missing is refused."""
    record = runs[1].model_copy(deep=True, update={"run_id": f"{runs[1].run_id}-{shown}"})
    if state is None:
        del record.stages["merge"]
    else:
        record.stages["merge"].state = state
        if not artifacts:
            record.stages["merge"].artifacts = {}
    store.put_record(record.record_key, record.model_dump(mode="json"))
    with pytest.raises(InvalidInput) as err:
        publish(store, record.run_id, "snark", owner="alice")
    assert str(err.value) == (f"run: run {record.run_id} has not finished (its merge stage is {shown}): only a run "
                              f"with a merged model can be published; `oct status {record.run_id}` shows where "
                              "it is")


def test_publish_as_specified_publishes_as_the_target_says_as_the_runs_owner(
        store: LocalStore, runs: tuple[Path, RunRecord, RunRecord]) -> None:
    run = runs[1]
    assert publish_as_specified(store, run) is None  # its spec names no persona
    published = publish_as_specified(store, run, PublishTarget(name="snark", tag="v1", shared=True))
    assert published is not None
    assert (published.name, published.tag, published.run_id, published.owner, published.shared) == \
        ("snark", "v1", run.run_id, "alice", True)
    assert get_persona(store, "snark:v1") == published
