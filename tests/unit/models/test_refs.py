"""Model references: local folders, bundled names, hub names offline, unknown names."""

from __future__ import annotations

from pathlib import Path

import pytest
from character.errors import NotFound
from character.home import oct_home
from character.models.prepare import is_prepared, prepare_model
from character.models.refs import BUNDLED, bundled_path, resolve_model


def test_local_folder_with_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)) == tmp_path.resolve()
    assert resolve_model(tmp_path) == tmp_path.resolve()


def test_folder_without_config_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"no config\.json"):
        resolve_model(str(tmp_path))


def test_bundled_name_resolves_to_prepared_folder(tiny_model: Path) -> None:
    assert resolve_model("tiny") == tiny_model == bundled_path("tiny")
    assert is_prepared(tiny_model)
    assert tiny_model.parent == oct_home() / "models"


def test_oct_home_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCT_HOME", str(tmp_path))
    assert bundled_path("smollm2") == tmp_path / "models" / "smollm2"


@pytest.mark.parametrize("ref", ["no-such-model", "./missing/folder", "", "ftp://x/y"])
def test_unknown_reference_lists_bundled_names(ref: str) -> None:
    with pytest.raises(NotFound) as err:
        resolve_model(ref)
    for name in BUNDLED:
        assert name in str(err.value)
    assert "s3://" in str(err.value)


def test_hub_name_offline_is_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NotFound, match="HF_HUB_OFFLINE") as err:
        resolve_model("some-org/some-model")
    assert "smollm2" in str(err.value)


def test_hub_unreachable_is_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(NotFound, match="hub is unreachable") as err:
        resolve_model("some-org/some-model")
    assert "smollm2" in str(err.value)


def test_prepare_unknown_bundled_name() -> None:
    with pytest.raises(NotFound, match="smollm2"):
        prepare_model("gpt-5")
