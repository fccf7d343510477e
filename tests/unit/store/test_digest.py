"""Digests are the artifact keys: they must be stable under reordering and formatting."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest
from character.errors import InvalidInput
from character.store.base import FileEntry
from character.store.digest import canonical_json, content_digest, digest_of, file_sha256
from pydantic import BaseModel


class Config(BaseModel):
    lr: float
    path: Path
    tags: list[str]


def test_digest_is_sha256_of_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": [1, 2], "c": "é"}) == '{"a":[1,2],"b":1,"c":"é"}'
    assert digest_of({"b": 1, "a": [1, 2]}) == hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()


def test_digest_ignores_key_order_and_sees_values() -> None:
    assert digest_of({"a": 1, "b": {"x": 1, "y": 2}}) == digest_of({"b": {"y": 2, "x": 1}, "a": 1})
    assert digest_of({"a": 1}) != digest_of({"a": 2})
    assert digest_of([1, 2]) != digest_of([2, 1])


def test_models_paths_and_sets() -> None:
    cfg = Config(lr=1e-4, path=Path("a/b.txt"), tags=["x"])
    assert digest_of(cfg) == digest_of({"lr": 1e-4, "path": "a/b.txt", "tags": ["x"]})
    assert digest_of({"p": PurePosixPath("x/y")}) == digest_of({"p": "x/y"})
    assert digest_of({"s": {3, 1, 2}}) == digest_of({"s": {2, 3, 1}})


@pytest.mark.parametrize("bad", [{"x": object()}, {"x": float("nan")}, {"x": b"bytes"}])
def test_undigestable_values_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInput):
        digest_of(bad)


def test_file_sha256_over_chunks(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 1 MiB: several chunks
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_content_digest_sorted_lines() -> None:
    files = {"b/x": FileEntry(sha256="22", size=1), "a": FileEntry(sha256="11", size=2)}
    expected = hashlib.sha256(b"a\t11\nb/x\t22\n").hexdigest()
    assert content_digest(files) == expected
    assert content_digest(dict(reversed(files.items()))) == expected
    # Sizes are implied by the hashes: only paths and hashes count.
    same = {"a": FileEntry(sha256="11", size=2)}
    assert content_digest(same) == content_digest({"a": FileEntry(sha256="11", size=3)})
    assert content_digest(same) != content_digest({"a": FileEntry(sha256="12", size=2)})


class Stamped(BaseModel):
    when: datetime
    tags: list[str]


def test_models_are_digested_in_their_json_form() -> None:
    """A config holding values JSON has no type for (a time) is digested as its JSON form."""
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    stamped = {"when": "2026-01-02T03:04:05Z", "tags": ["b", "a"]}
    assert digest_of(Stamped(when=at, tags=["b", "a"])) == digest_of(stamped)
    assert digest_of([Stamped(when=at, tags=[])]) == digest_of([{"when": "2026-01-02T03:04:05Z", "tags": []}])


def test_sets_of_mixed_elements_have_one_digest() -> None:
    """Elements that Python cannot order among themselves are ordered by their canonical form."""
    assert digest_of({1, "a", (2, "b")}) == digest_of({(2, "b"), "a", 1})
    assert canonical_json({"s": {2, "a"}}) == '{"s":["a",2]}'  # by canonical text: '"a"' < '2'


def test_refusals_name_the_type() -> None:
    with pytest.raises(InvalidInput, match=r"^value cannot be digested: cannot digest a complex$"):
        digest_of({"x": 1j})
