"""What a finished run is published as: a persona name and a tag (`PublishTarget`), and the
rules every persona name and tag follow (the registry, `character.serving.registry`, checks
names with the same rules, so a spec cannot ask for a name the registry would refuse)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, field_validator

from character.errors import InvalidInput

MAX_NAME = 64
"""Longest persona name or tag."""
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
"""Lower-case letters, digits, '.', '_' and '-', starting with a letter or digit: safe as a
store record segment and in an OpenAI `model` field, and never containing ':' or '@', which
separate a name from its tag or record id in a reference (`NAME:TAG`, `NAME@RECORD`)."""
DEFAULT_TAG = "latest"


def check_persona_name(value: str, what: str) -> str:
    """`value` when it is a valid persona name or tag; InvalidInput naming `what` otherwise."""
    if not isinstance(value, str) or len(value) > MAX_NAME or not NAME_PATTERN.fullmatch(value):
        shown = value[:80] + "..." if isinstance(value, str) and len(value) > 80 else value
        raise InvalidInput(
            f"invalid {what} {shown!r}: at most {MAX_NAME} lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            where=what,
        )
    return value


class PublishTarget(BaseModel):
    """`publish:` in a run spec: the name (and tag) the run is published under once it has
    succeeded, e.g. {name: sarcasm-demo, tag: latest}."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """The persona's name (`oct chat NAME`, `model: NAME` on the persona server)."""
    tag: str = DEFAULT_TAG
    """The tag moved to this run; earlier records under the tag stay readable by record id."""
    shared: bool = False
    """Visible to every authenticated caller of the platform, not only the run's owner."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _rule(value, "name")

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        return _rule(value, "tag")


def _rule(value: str, what: str) -> str:
    try:
        return check_persona_name(value, what)
    except InvalidInput as err:  # pydantic locates the field itself: keep only the reason
        raise ValueError(str(err).removeprefix(f"{what}: ")) from None
