"""The operator's model registry: the names remote submitters may use for models beyond the
bundled ones, each standing for a reference (a folder in the pods, an s3:// URI, a hub name).
It is the `models:` mapping of the platform config ($OCT_PLATFORM_CONFIG; `character.platform`
documents the whole file), read here so that every place a model reference is resolved
(`refs.resolve_model`) knows the names."""

from __future__ import annotations

import os

from character.errors import InvalidInput

PLATFORM_CONFIG_ENV = "OCT_PLATFORM_CONFIG"


def check_names(names: dict[str, object]) -> None:
    """Registry names are plain names, so they cannot be confused with paths or URIs."""
    for name in names:
        if not name or "/" in name or ":" in name or name.startswith((".", "~")):
            raise ValueError(f"{name!r}: registry names are plain names (no '/', ':' or leading '.')")


def registered_models() -> dict[str, str]:
    """Name -> reference, from $OCT_PLATFORM_CONFIG (empty without one)."""
    from character.yamldoc import read_mapping

    path = os.environ.get(PLATFORM_CONFIG_ENV)
    if not path:
        return {}
    models = read_mapping(path, "platform config").get("models") or {}
    if not isinstance(models, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in models.items()):
        raise InvalidInput("models: a mapping of names to model references", where=path)
    try:
        check_names(models)
    except ValueError as err:
        raise InvalidInput(f"models: {err}", where=path) from None
    return models
