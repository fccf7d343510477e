"""Who gets in: the operator's token file (hashed tokens) and Kubernetes service-account tokens
checked with TokenReview against kmock's Kubernetes API emulator on 127.0.0.1 (a fake of
the API server: no real cluster runs in tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from character.errors import InvalidInput
from character.security.auth import (
    Authenticator,
    Identity,
    PermissionDenied,
    Unauthenticated,
    check_owner,
    client_token,
    ensure_local_token,
    hash_token,
    kubernetes_token_reviewer,
    load_tokens_file,
)
from kubernetes import client

from tests.integration.k8s.test_kubernetes_executor import Emulator

SA_TOKEN = "eyJhbGciOi.fake-service-account.token"
SA_USER = "system:serviceaccount:team-a:submitter"


def tokens_file(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def reviewer() -> Iterator[Any]:
    """A TokenReviewer talking to the emulator, which knows one service-account token."""
    emulator = Emulator()
    emulator.start()

    def review(request: Any) -> dict[str, Any]:
        ok = request.data["spec"]["token"] == SA_TOKEN
        return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": request.data["spec"],
                "status": {"authenticated": ok, **({"user": {"username": SA_USER}} if ok else {})}}

    def install() -> None:
        emulator.handler["post /apis/authentication.k8s.io/v1/tokenreviews"] << review

    emulator.call(install)
    config = client.Configuration()
    config.host = emulator.url
    with client.ApiClient(config) as api:
        yield kubernetes_token_reviewer(api), emulator
    emulator.close()


def test_file_tokens_are_known_by_hash_only(tmp_path: Path) -> None:
    path = tokens_file(tmp_path, {"tokens": [{"name": "alice", "sha256": hash_token("s3cret"), "roles": ["admin"]}]})
    assert "s3cret" not in path.read_text()
    auth = Authenticator.from_file(path)
    assert auth.authenticate("s3cret") == Identity("alice", frozenset({"admin"}))


@pytest.mark.attack("call the controller with no token, or a made-up one")
def test_missing_or_unknown_token_is_unauthenticated(tmp_path: Path) -> None:
    auth = Authenticator.from_file(tokens_file(tmp_path, {"tokens": [{"name": "alice", "sha256": hash_token("s")}]}))
    for token in (None, "", "guess", hash_token("s")):
        with pytest.raises(Unauthenticated):
            auth.authenticate(token)


def test_a_malformed_token_file_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"tokens\.0\.sha256"):
        load_tokens_file(tokens_file(tmp_path, {"tokens": [{"name": "alice", "sha256": "plaintext-token"}]}))


def test_service_account_token_is_reviewed_and_matched_by_namespace(tmp_path: Path, reviewer: Any) -> None:
    review, emulator = reviewer
    path = tokens_file(tmp_path, {"service_accounts": [{"subject": "system:serviceaccount:team-a:*"}]})
    auth = Authenticator.from_file(path, reviewer=review)
    assert auth.authenticate(SA_TOKEN) == Identity(SA_USER)
    auth.authenticate(SA_TOKEN)  # a second call within the cache time asks the API server once
    assert len(emulator.requests("post /apis/authentication.k8s.io/v1/tokenreviews")) == 1


@pytest.mark.attack("a forged Kubernetes token, or a real one from a namespace nobody allowed")
def test_rejected_or_foreign_service_accounts_stay_out(tmp_path: Path, reviewer: Any) -> None:
    review, _ = reviewer
    only_b = Authenticator.from_file(tokens_file(tmp_path, {"service_accounts": [
        {"subject": "system:serviceaccount:team-b:*"}]}), reviewer=review)
    with pytest.raises(Unauthenticated):
        only_b.authenticate(SA_TOKEN)  # authentic, but team-a is not allowed
    team_a = Authenticator.from_file(tokens_file(tmp_path, {"service_accounts": [
        {"subject": "system:serviceaccount:team-a:*"}]}), reviewer=review)
    with pytest.raises(Unauthenticated):
        team_a.authenticate("eyJforged.token.value")


def test_without_service_account_rules_no_token_review_is_made(tmp_path: Path, reviewer: Any) -> None:
    review, emulator = reviewer
    auth = Authenticator.from_file(tokens_file(tmp_path, {"tokens": []}), reviewer=review)
    with pytest.raises(Unauthenticated):
        auth.authenticate(SA_TOKEN)
    assert emulator.requests("post /apis/authentication.k8s.io/v1/tokenreviews") == []


@pytest.mark.attack("read or cancel another user's run")
def test_only_the_owner_or_an_admin_may_touch_a_run() -> None:
    check_owner(Identity("alice"), "alice", "run-1")
    check_owner(Identity("root", frozenset({"admin"})), "alice", "run-1")
    for intruder, owner in ((Identity("bob"), "alice"), (Identity(""), ""), (Identity("bob"), "")):
        with pytest.raises(PermissionDenied):
            check_owner(intruder, owner, "run-1")


def test_oct_up_makes_one_local_admin_token_the_client_finds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCT_HOME", str(tmp_path))
    monkeypatch.delenv("OCT_TOKEN", raising=False)
    path = ensure_local_token()
    assert ensure_local_token() == path  # made once
    token = client_token()
    assert token and (tmp_path / "auth" / "token").stat().st_mode & 0o077 == 0
    assert Authenticator.from_file(path).authenticate(token).admin


def test_a_pod_submits_with_its_service_account_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SA_TOKEN + "\n")
    monkeypatch.delenv("OCT_TOKEN", raising=False)
    monkeypatch.setenv("OCT_TOKEN_FILE", str(token_file))
    assert client_token() == SA_TOKEN
