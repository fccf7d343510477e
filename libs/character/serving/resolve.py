"""What a served model name stands for: a base model, a trained run, or a published persona.

Names:

- a bundled or registered base model ("smollm2", "tiny", the operator's
  `PlatformConfig.models` names) is served as itself;
- a run id whose run has a merged model is that run's trained persona (its DPO and SFT
  adapters stacked on the base, or the merged weights where the adapters are gone); who may
  use it follows the run's owner rules (`security.auth.check_owner`);
- a published persona, `NAME`, `NAME:TAG` or `NAME@RECORD_ID` (`registry.get_persona`), is
  the run its record points to, served from the artifacts the record names, so the pool
  checks the weights against the digests the record holds; who may use it follows the
  registry's rules (`registry.check_visible`: its owner, everyone when shared, admins all).

Ambiguity: a reference with ':' or '@' is always a published persona (base model names and
run ids have neither). A bare name is a base model first, then a run id, then a persona name
(tag "latest"): publishing never changes what an existing base model or run id serves, and a
persona whose bare name is taken stays reachable as `NAME:latest`. `available` lists a bare
name only where it resolves to the persona.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from character.controller.executor import StageState
from character.controller.runs import RunRecord, list_runs, load_run
from character.errors import InvalidInput, NotFound
from character.models.prepare import BUNDLED
from character.models.registry import registered_models
from character.pipeline.publish import DEFAULT_TAG
from character.security.auth import Identity, PermissionDenied, check_owner
from character.serving.registry import (
    ADAPTER_STAGES,
    TrainedPersona,
    check_visible,
    get_persona,
    parse_ref,
    visible_personas,
)
from character.store.base import ArtifactRef, Store
from character.store.digest import digest_of

MAX_NAME = 200
"""Longest model name a request may give."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]*")


@dataclass(frozen=True)
class ServedPersona:
    """A model as the server serves it."""

    name: str
    """The name clients use (`model` in requests)."""
    base: str
    """The base model reference (bundled or registered name) the weights sit on."""
    adapters: tuple[ArtifactRef, ...] = ()
    """Adapter artifacts applied together on the base (empty: the base, or `merged`)."""
    merged: ArtifactRef | None = None
    """A merged model artifact, served on its own where no adapters are left."""
    owner: str = ""
    """Who may use it besides admins ("" for base models: everyone)."""
    shared: bool = False
    """Visible to every authenticated caller (base models; published shared personas)."""
    published: TrainedPersona | None = field(default=None, compare=False)
    """The registry record it was resolved from (None: a base model or a run id): the
    registry's visibility rules apply to it, not the run's owner rules."""

    @property
    def is_base(self) -> bool:
        return not self.adapters and self.merged is None

    @property
    def digest(self) -> str:
        """Identifies the weights served: equal digests answer alike."""
        return digest_of({"base": self.base, "adapters": [a.content_digest for a in self.adapters],
                          "merged": self.merged.content_digest if self.merged else None})


def base_names() -> list[str]:
    """Base models served by name: the bundled ones and the operator's registered ones."""
    return sorted({*BUNDLED, *registered_models()})


def resolve(store: Store, model: str) -> ServedPersona:
    """The model `model` names, in the order the module docstring gives; NotFound when it
    names none."""
    check_model_name(model)
    if ":" in model or "@" in model:
        return _published(store, model)
    if model in base_names():
        return base_model(model)
    try:
        record = load_run(store, model)
    except (NotFound, InvalidInput):
        return _published(store, model)
    persona = run_persona(record)
    if persona is None:
        raise NotFound(f"The model `{model}` does not exist: run {model} has no merged model yet")
    return persona


def base_model(name: str) -> ServedPersona:
    """The base model `name`, served as itself to everyone."""
    return ServedPersona(name=name, base=name, shared=True)


def run_persona(record: RunRecord) -> ServedPersona | None:
    """The run's trained persona, or None before its merge stage succeeded."""
    merge = record.stages.get("merge")
    if merge is None or merge.state is not StageState.SUCCEEDED or "model" not in merge.artifacts:
        return None
    adapters = tuple(record.stages[name].artifacts.get("adapter") if name in record.stages else None
                     for name in ADAPTER_STAGES)
    return _served(record.run_id, str(record.spec.get("model", "")), adapters, merge.artifacts["model"],
                   owner=record.owner)


def published_persona(record: TrainedPersona, name: str) -> ServedPersona:
    """A published persona served under `name`: the weights its record names, on its base."""
    adapters = tuple(record.adapters.get(stage) for stage in ADAPTER_STAGES)
    if record.model is None and None in adapters:
        raise NotFound(f"The model `{name}` does not exist: persona record {record.name}@{record.record_id} "
                       "names neither a merged model nor both adapters")
    return _served(name, record.base_model, adapters, record.model, owner=record.owner, shared=record.shared,
                   published=record)


def check_access(caller: Identity, persona: ServedPersona) -> None:
    """PermissionDenied unless the caller may use the persona (the registry's rules for a
    published persona, the run's owner rules for a run id)."""
    if persona.published is not None:
        check_visible(caller, persona.published)
    elif not persona.shared:
        check_owner(caller, persona.owner, persona.name)


def available(store: Store, caller: Identity) -> list[ServedPersona]:
    """Every model the caller may use: the published personas it may see (NAME:TAG for each
    tag, and NAME for "latest" where the bare name resolves to it), then the runs' trained
    personas it may see, then the base models."""
    bases = base_names()
    runs = [persona for record in list_runs(store) if record.run_id not in bases
            and (persona := run_persona(record)) is not None]
    taken = {*bases, *(persona.name for persona in runs)}
    found: list[ServedPersona] = []
    for record in visible_personas(store, caller):
        found.append(published_persona(record, record.ref))
        if record.tag == DEFAULT_TAG and record.name not in taken:
            found.append(published_persona(record, record.name))
    for persona in runs:
        try:
            check_access(caller, persona)
        except PermissionDenied:
            continue
        found.append(persona)
    return [*found, *(base_model(name) for name in bases)]


def _published(store: Store, ref: str) -> ServedPersona:
    """The published persona `ref` names. The registry's own NotFound lists every name in the
    store, unshared ones too, so a caller is told only where to look."""
    try:
        parse_ref(ref)
    except InvalidInput as err:
        if ":" in ref or "@" in ref:  # a malformed reference; a bare name is simply unknown
            raise InvalidInput(str(err).removeprefix(f"{err.where}: "), where="model") from None
        raise _unknown(ref) from None
    try:
        record = get_persona(store, ref)
    except NotFound:
        raise _unknown(ref) from None
    return published_persona(record, ref)


def _unknown(model: str) -> NotFound:
    return NotFound(f"The model `{model}` does not exist: neither a base model ({', '.join(base_names())}), a "
                    "run with a trained persona, nor a published persona NAME[:TAG]; GET /v1/models or "
                    "`oct personas trained` lists what there is")


def _served(name: str, base: str, adapters: tuple[ArtifactRef | None, ...], merged: ArtifactRef | None,
            owner: str, shared: bool = False, published: TrainedPersona | None = None) -> ServedPersona:
    """Both adapters stacked on the base where both are there, else the merged model alone."""
    stacked = tuple(a for a in adapters if a is not None)
    if len(stacked) == len(ADAPTER_STAGES):
        return ServedPersona(name=name, base=base, adapters=stacked, owner=owner, shared=shared, published=published)
    return ServedPersona(name=name, base=base, merged=merged, owner=owner, shared=shared, published=published)


def check_model_name(model: str) -> None:
    """InvalidInput (naming `model`) for a name no persona can have: bounded, no paths."""
    if not isinstance(model, str) or not model or len(model) > MAX_NAME or not _NAME.fullmatch(model):
        raise InvalidInput(f"model must be a name of at most {MAX_NAME} letters, digits and ._:@- "
                           "(a base model, a run id, NAME[:TAG] or NAME@RECORD)", where="model")
