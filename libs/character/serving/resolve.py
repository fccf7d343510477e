"""What a served model name stands for: a base model, or a trained persona on its base.

Names, for now: a bundled or registered base model ("smollm2", "tiny", the operator's
`PlatformConfig.models` names) is served as itself; a run id whose run has a merged model is
that run's trained persona (its DPO and SFT adapters stacked on the base, or the merged
weights where the adapters are gone). Who may use a persona follows the run's owner rules
(`security.auth.check_owner`). Published persona names (`NAME[:TAG]`) come in here too, as one
more branch of `resolve`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from character.controller.executor import StageState
from character.controller.runs import RunRecord, list_runs, load_run
from character.errors import InvalidInput, NotFound
from character.models.prepare import BUNDLED
from character.models.registry import registered_models
from character.security.auth import Identity, PermissionDenied, check_owner
from character.store.base import ArtifactRef, Store
from character.store.digest import digest_of

MAX_NAME = 200
"""Longest model name a request may give."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
ADAPTER_STAGES = ("dpo", "sft")
"""The stages whose adapters, stacked in this order, make a run's persona."""


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
    """The persona or base model `model` names; NotFound when it names none."""
    check_model_name(model)
    if model in base_names():
        return ServedPersona(name=model, base=model, shared=True)
    try:
        record = load_run(store, model)
    except (NotFound, InvalidInput):
        raise NotFound(f"The model `{model}` does not exist: neither a base model ({', '.join(base_names())}) "
                       "nor a run with a trained persona") from None
    persona = run_persona(record)
    if persona is None:
        raise NotFound(f"The model `{model}` does not exist: run {model} has no merged model yet")
    return persona


def run_persona(record: RunRecord) -> ServedPersona | None:
    """The run's trained persona, or None before its merge stage succeeded."""
    merge = record.stages.get("merge")
    if merge is None or merge.state is not StageState.SUCCEEDED or "model" not in merge.artifacts:
        return None
    adapters = tuple(record.stages[name].artifacts.get("adapter") for name in ADAPTER_STAGES
                     if name in record.stages)
    stacked = tuple(a for a in adapters if a is not None)
    base = str(record.spec.get("model", ""))
    if len(stacked) == len(ADAPTER_STAGES):
        return ServedPersona(name=record.run_id, base=base, adapters=stacked, owner=record.owner)
    return ServedPersona(name=record.run_id, base=base, merged=merge.artifacts["model"], owner=record.owner)


def check_access(caller: Identity, persona: ServedPersona) -> None:
    """PermissionDenied unless the caller may use the persona."""
    if not persona.shared:
        check_owner(caller, persona.owner, persona.name)


def available(store: Store, caller: Identity) -> list[ServedPersona]:
    """Every model the caller may use: the base models, then the trained personas it may see."""
    found = [ServedPersona(name=name, base=name, shared=True) for name in base_names()]
    for record in list_runs(store):
        persona = run_persona(record)
        if persona is None:
            continue
        try:
            check_access(caller, persona)
        except PermissionDenied:
            continue
        found.append(persona)
    return found


def check_model_name(model: str) -> None:
    """InvalidInput (naming `model`) for a name no persona can have: bounded, no paths."""
    if not isinstance(model, str) or not model or len(model) > MAX_NAME or not _NAME.fullmatch(model):
        raise InvalidInput(f"model must be a name of at most {MAX_NAME} letters, digits and ._:- "
                           "(a base model, a run id or NAME[:TAG])", where="model")
