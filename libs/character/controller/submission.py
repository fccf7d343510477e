"""What the controller accepts as a run: a submitted spec, as YAML text, validated here.

The controller service's SubmitRun calls `spec_from_submission` before anything is stored.
It parses with the library's own `parse_spec` (the schema `oct run` uses: no second copy in
protobuf to drift from it); before that, `character.security.admission` holds the spec to
what the platform offers (no paths, foreign buckets or endpoint URLs; numbers within the
operator's limits), and a spec may not name another store than the controller's own.
"""

from __future__ import annotations

from pathlib import Path

from character.errors import InvalidInput, NotFound
from character.pipeline.spec import RunSpec, parse_spec
from character.platform import PlatformConfig
from character.security.admission import admit, check_knobs, load_spec_text


def spec_from_submission(text: str, store_uri: str, platform: PlatformConfig | None = None,
                         where: str = "spec_yaml") -> RunSpec:
    """The validated spec of a submission, its store set to the controller's `store_uri`;
    errors say what to fix and where (`where`: the request field)."""
    platform = platform or PlatformConfig()
    doc = load_spec_text(text, platform.limits, where=where)
    if doc.get("store") is not None:
        check_same_store(str(doc["store"]), store_uri)
    doc = admit(doc, platform, where=where)
    try:
        spec = parse_spec({**doc, "store": store_uri}, where=where)
    except NotFound as err:  # an unknown model or persona is a mistake in the request
        raise InvalidInput(str(err), where=where) from None
    check_knobs(spec.stages, platform.limits, where=where)
    return spec


def check_same_store(requested: str, controller_store: str) -> None:
    """A spec naming a store other than the controller's is refused: the controller keeps
    every run in its own store."""

    def norm(uri: str) -> str:
        return uri.rstrip("/") if "://" in uri else str(Path(uri).expanduser().resolve())

    if norm(requested) != norm(controller_store):
        raise InvalidInput(f"this controller keeps runs in {controller_store}, not {requested}; remove "
                           "`store` from the spec or set it to that", where="store")
