"""The persona registry: trained personas by name and tag, in the run's own store.

Layout (store records):

    personas/<name>/records/<record_id>   one published persona: immutable, written once
    personas/<name>/tags/<tag>            {"record_id", "moved_at"}: the tag's current record

A publish writes the persona record first (only if absent) and then moves the tag with
optimistic concurrency (`put_record(..., if_version=...)`, as run records do): of two
concurrent publishes of one tag exactly one moves it, the other gets `Conflict` and may
publish again. Moving a tag never deletes anything: the record it pointed at stays readable
as `NAME@RECORD_ID`. The tag record is written last, so a tag never names a missing record.

A persona belongs to the owner of its first record (the controller's authenticated caller; ""
for `oct` on your own machine, which, as for runs, only admins of a server see): another
owner cannot publish under that name. `shared` personas are visible to every caller.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from character.controller.executor import StageState
from character.controller.runs import RunRecord, load_run
from character.errors import InvalidInput, NotFound
from character.pipeline.publish import DEFAULT_TAG, PublishTarget, check_persona_name
from character.security.auth import Identity, PermissionDenied
from character.stats import Evidence
from character.store.base import ABSENT, ArtifactRef, Conflict, Store
from character.store.digest import digest_of

PREFIX = "personas/"
ADAPTER_STAGES = ("dpo", "sft")
"""The stages whose adapters, stacked in this order on the base, make the persona."""
RECORD_ID_LENGTH = 20
"""Hex digits of a record id (the digest of the record's content)."""
MAX_REF = 2 * 64 + 1 + RECORD_ID_LENGTH
"""Longest reference `get_persona` reads (name, separator, tag or record id)."""


class TrainedPersona(BaseModel):
    """One published persona: immutable once written (see the module docstring)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    tag: str
    """The tag it was published under (the tag may have moved on since)."""
    record_id: str
    """Its id under the name: `NAME@RECORD_ID` reads it whatever the tags say."""
    run_id: str
    """The run that trained it (`oct status RUN`, `oct report RUN`)."""
    owner: str
    """Who published it ("" from `oct` on your own machine)."""
    shared: bool
    """Visible to every authenticated caller, not only its owner and admins."""
    persona: str
    """The constitution's own name."""
    constitution_digest: str
    """sha256 of the constitution (traits and questions) the run trained on."""
    base_model: str
    """The student model the adapters sit on (a bundled name, folder, s3:// URI or hub name)."""
    scale: str
    """The run's scale preset (demo, proof, full)."""
    model: ArtifactRef | None
    """The merged model artifact (base + DPO + SFT folded into the weights)."""
    adapters: dict[str, ArtifactRef]
    """The DPO and SFT adapter artifacts, in stacking order; each carries its content digest."""
    stage_keys: dict[str, str]
    """Every stage's content address in the run."""
    figures: dict[str, Evidence]
    """The evaluation's headline figures with n, interval and verdict (empty without an eval)."""
    published_at: datetime

    @field_validator("figures", mode="before")
    @classmethod
    def _older_figures(cls, figures: Any) -> Any:
        """Records published before the figures were the evaluation's own `Evidence` kept only
        part of each; read them as that figure (what their verdict says restores the rest)."""
        if not isinstance(figures, dict):
            return figures
        return {k: _figure_of_old_record(f) if isinstance(f, dict) and "interval" not in f else f
                for k, f in figures.items()}

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"


def publish(store: Store, run_id: str, name: str, tag: str = DEFAULT_TAG, owner: str = "",
            shared: bool = False, admin: bool = False) -> TrainedPersona:
    """Publish run `run_id` as `name:tag` and return the record the tag now names.

    Only a finished run (its merge artifact stored) may be published. Publishing the run the
    tag already names, with the same sharing, returns that record unchanged. `owner` may not
    publish under a name another owner holds unless `admin`. Conflict when a concurrent
    publish moved the tag first (nothing is lost: publish again to move it)."""
    check_persona_name(name, "name")
    check_persona_name(tag, "tag")
    holder = name_owner(store, name)
    if holder is not None and holder != owner and not admin:
        raise PermissionDenied(f"persona {name!r} belongs to another user; choose another name or ask an admin")
    record = load_run(store, run_id)
    tag_key = _tag_key(name, tag)
    found = store.get_record_versioned(tag_key)
    if found is not None:
        current = _load(store, name, str(found[0].get("record_id", "")), where=tag_key)
        if current.run_id == run_id and current.shared == shared and current.owner == (holder or owner):
            return current
    persona = _persona_of(store, record, name, tag, holder if holder is not None else owner, shared)
    store.put_record(_record_key(name, persona.record_id), persona.model_dump(mode="json"), if_version=ABSENT)
    try:
        store.put_record(tag_key, {"record_id": persona.record_id, "moved_at": persona.published_at.isoformat()},
                         if_version=found[1] if found is not None else ABSENT)
    except Conflict:
        raise Conflict(f"tag {name}:{tag} was moved by another publish while this one ran; its record "
                       f"{name}@{persona.record_id} is kept: publish again to move the tag to it") from None
    return persona


def publish_as_specified(store: Store, record: RunRecord, target: PublishTarget | None = None) -> TrainedPersona | None:
    """Publish a succeeded run as `target` says (default: its spec's `publish:`), as the run's
    owner; None when neither names a persona. What `oct run` and the controller do when a run
    ends (`Controller(on_succeeded=...)`)."""
    target = target or record.run_spec().publish
    if target is None:
        return None
    return publish(store, record.run_id, target.name, target.tag, owner=record.owner, shared=target.shared)


def get_persona(store: Store, ref: str) -> TrainedPersona:
    """The persona `ref` names: "NAME", "NAME:TAG" (the tag's current record; tag default
    "latest") or "NAME@RECORD_ID" (one record, wherever the tags point). NotFound lists the
    names (or the name's tags) that exist."""
    name, tag, record_id = parse_ref(ref)
    if record_id is not None:
        return _load(store, name, record_id, where=ref)
    found = store.get_record(_tag_key(name, tag))
    if found is None:
        tags = persona_tags(store, name)
        if not tags:
            names = persona_names(store)
            listed = ", ".join(names) if names else "none yet: `oct personas publish RUN --name NAME`"
            raise NotFound(f"no trained persona {name!r} in store {store.uri}; published personas: {listed}")
        raise NotFound(f"persona {name!r} has no tag {tag!r}; its tags: {', '.join(tags)}")
    return _load(store, name, str(found.get("record_id", "")), where=_tag_key(name, tag))


def trained_personas(store: Store) -> list[TrainedPersona]:
    """Every tag's current persona, by name then tag."""
    return [get_persona(store, f"{name}:{tag}") for name in persona_names(store) for tag in persona_tags(store, name)]


def visible_personas(store: Store, caller: Identity) -> list[TrainedPersona]:
    """The tags' personas `caller` may see (see `may_see`)."""
    return [p for p in trained_personas(store) if may_see(caller, p)]


def may_see(caller: Identity, persona: TrainedPersona) -> bool:
    """Admins see every persona; others their own ones and the shared ones."""
    return caller.admin or persona.shared or (bool(persona.owner) and persona.owner == caller.name)


def check_visible(caller: Identity, persona: TrainedPersona) -> None:
    """PermissionDenied unless `caller` may see `persona`."""
    if not may_see(caller, persona):
        raise PermissionDenied(f"persona {persona.name} belongs to another user and is not shared")


def persona_versions(store: Store, name: str) -> list[TrainedPersona]:
    """Every record ever published under `name`, oldest first."""
    check_persona_name(name, "name")
    prefix = f"{PREFIX}{name}/records/"
    records = [_load(store, name, key.removeprefix(prefix), where=key) for key in store.list_records(prefix)]
    return sorted(records, key=lambda p: p.published_at)


def name_owner(store: Store, name: str) -> str | None:
    """The owner of the first record published under `name`; None when none was."""
    versions = persona_versions(store, name)
    return versions[0].owner if versions else None


def persona_names(store: Store) -> list[str]:
    """Names that have at least one tag."""
    return sorted({key.removeprefix(PREFIX).split("/")[0] for key in store.list_records(PREFIX)
                   if key.count("/") == 3 and key.split("/")[2] == "tags"})


def persona_tags(store: Store, name: str) -> list[str]:
    prefix = f"{PREFIX}{name}/tags/"
    return [key.removeprefix(prefix) for key in store.list_records(prefix)]


def parse_ref(ref: str) -> tuple[str, str, str | None]:
    """(name, tag, record id or None) of "NAME", "NAME:TAG" or "NAME@RECORD_ID"."""
    if not isinstance(ref, str) or not ref or len(ref) > MAX_REF:
        raise InvalidInput(f"give a persona as NAME, NAME:TAG or NAME@RECORD (at most {MAX_REF} characters)",
                           where="persona")
    if "@" in ref:
        name, _, record_id = ref.partition("@")
        if len(record_id) != RECORD_ID_LENGTH or any(c not in "0123456789abcdef" for c in record_id):
            raise InvalidInput(f"invalid record id {record_id[:40]!r}: {RECORD_ID_LENGTH} hex digits "
                               "(`oct personas trained` shows them)", where="persona")
        return check_persona_name(name, "persona name"), DEFAULT_TAG, record_id
    name, _, tag = ref.partition(":")
    return check_persona_name(name, "persona name"), check_persona_name(tag or DEFAULT_TAG, "tag"), None


# ----------------------------------------------------------------------------- internals
def _tag_key(name: str, tag: str) -> str:
    return f"{PREFIX}{name}/tags/{tag}"


def _record_key(name: str, record_id: str) -> str:
    return f"{PREFIX}{name}/records/{record_id}"


def _load(store: Store, name: str, record_id: str, where: str) -> TrainedPersona:
    doc = store.get_record(_record_key(name, record_id)) if record_id else None
    if doc is None:
        raise NotFound(f"no record {name}@{record_id} in store {store.uri} (named by {where}); "
                       f"`oct personas trained` lists the published personas")
    try:
        return TrainedPersona.model_validate(doc)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise InvalidInput(problems, where=f"{store.uri} record {_record_key(name, record_id)}") from None


def _persona_of(store: Store, record: RunRecord, name: str, tag: str, owner: str, shared: bool) -> TrainedPersona:
    """The persona record of a finished run (its id is the digest of everything else in it)."""
    merge = record.stages.get("merge")
    if merge is None or merge.state is not StageState.SUCCEEDED or "model" not in merge.artifacts:
        state = merge.state.value if merge is not None else "missing"
        raise InvalidInput(f"run {record.run_id} has not finished (its merge stage is {state}): only a run "
                           f"with a merged model can be published; `oct status {record.run_id}` shows where "
                           "it is", where="run")
    spec = record.run_spec()
    body: dict[str, Any] = {
        "name": name,
        "tag": tag,
        "run_id": record.run_id,
        "owner": owner,
        "shared": shared,
        "persona": spec.persona.name,
        "constitution_digest": digest_of(spec.persona.model_dump(mode="json")),
        "base_model": spec.model,
        "scale": spec.scale,
        "model": merge.artifacts["model"].model_dump(mode="json"),
        "adapters": {stage: record.stages[stage].artifacts["adapter"].model_dump(mode="json")
                     for stage in ADAPTER_STAGES if "adapter" in record.stages[stage].artifacts},
        "stage_keys": {stage: entry.key for stage, entry in record.stages.items()},
        "figures": _figures(store, record.run_id),
        "published_at": datetime.now(UTC).isoformat(),
    }
    return TrainedPersona.model_validate({**body, "record_id": digest_of(body)[:RECORD_ID_LENGTH]})


def _figures(store: Store, run_id: str) -> dict[str, Any]:
    """The headline figures of the run's latest evaluation; none when it has none yet."""
    from character.stages.evaluate.orchestrate import load_results

    try:
        results = load_results(store, run_id)
    except NotFound:
        return {}
    return {key: found.as_dict() for key, found in results.evidence.items()}


_UNDERPOWERED = re.compile(r"underpowered \(n = \d+ .* < (\d+)\)")
_AGAINST = re.compile(r"distinguishable from (.*) \(p [<=] [0-9.]+\)$")


def _figure_of_old_record(old: dict[str, Any]) -> dict[str, Any]:
    """An old record's figure (figure, value, n, unit, interval bounds, test, p_value, verdict,
    distinguishable) with the fields it lacked: the null and the minimum n from its verdict's
    words, the interval's method as not recorded."""
    verdict = str(old.get("verdict", ""))
    short = _UNDERPOWERED.match(verdict)
    against = _AGAINST.search(verdict)
    return {**old, "interval": "not recorded", "null": against.group(1) if against else "no effect",
            "min_n": int(short.group(1)) if short else 0, "underpowered": short is not None}
