"""Who gets in: the operator's token file (hashed tokens) and Kubernetes service-account tokens
checked with TokenReview against kmock's Kubernetes API emulator on 127.0.0.1 (a fake of
the API server: no real cluster runs in tests)."""

from __future__ import annotations

import getpass
import locale
import re
import stat
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


UNAUTHENTICATED_USER_TOKEN = "eyJ.not-authenticated-but-names-a-user"
NO_STATUS_TOKEN = "eyJ.answered-without-a-status"
VERDICTS: dict[str, dict[str, Any]] = {  # the emulator's TokenReview status per token (others: not authenticated)
    SA_TOKEN: {"status": {"authenticated": True, "user": {"username": SA_USER}}},
    UNAUTHENTICATED_USER_TOKEN: {"status": {"authenticated": False, "user": {"username": SA_USER}}},
    NO_STATUS_TOKEN: {},
}


@pytest.fixture
def kube_api() -> Iterator[tuple[client.ApiClient, Emulator]]:
    """A Kubernetes API client talking to the emulator, which reviews tokens by `VERDICTS`."""
    emulator = Emulator()
    emulator.start()

    def review(request: Any) -> dict[str, Any]:
        verdict = VERDICTS.get(request.data["spec"]["token"], {"status": {"authenticated": False}})
        return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": request.data["spec"],
                **verdict}

    def install() -> None:
        emulator.handler["post /apis/authentication.k8s.io/v1/tokenreviews"] << review

    emulator.call(install)
    config = client.Configuration()
    config.host = emulator.url
    with client.ApiClient(config) as api:
        yield api, emulator
    emulator.close()


@pytest.fixture
def reviewer(kube_api: tuple[client.ApiClient, Emulator]) -> tuple[Any, Emulator]:
    api, emulator = kube_api
    return kubernetes_token_reviewer(api), emulator


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


def test_a_malformed_token_file_names_the_file_and_field(tmp_path: Path) -> None:
    path = tokens_file(tmp_path, {"tokens": [{"name": "alice", "sha256": "plaintext-token"}]})
    with pytest.raises(InvalidInput, match=r"tokens\.0\.sha256") as err:
        load_tokens_file(path)
    assert err.value.where == str(path)


@pytest.mark.parametrize(("text", "line", "says"), [
    (None, None, "no such token file"),
    ("- alice\n", None, "a token file is a mapping of keys to values"),
    ("tokens: []\ntokens: []\n", 2, "duplicate key 'tokens' (at line 1 and line 2)"),
])
def test_an_unreadable_token_file_is_refused_naming_the_file_and_line(
        tmp_path: Path, text: str | None, line: int | None, says: str) -> None:
    path = tmp_path / "tokens.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(InvalidInput) as err:
        load_tokens_file(path)
    assert err.value.where == (str(path) if line is None else f"{path}:{line}")
    assert says in str(err.value)


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


@pytest.mark.attack("a Kubernetes token the API server did not authenticate, though its review names a user")
@pytest.mark.parametrize("token", [UNAUTHENTICATED_USER_TOKEN, NO_STATUS_TOKEN], ids=["not authenticated", "no status"])
def test_only_an_authenticated_review_names_a_user(tmp_path: Path, reviewer: Any, token: str) -> None:
    review, _ = reviewer
    assert review(token) is None
    auth = Authenticator.from_file(tokens_file(tmp_path, {"service_accounts": [
        {"subject": "system:serviceaccount:*"}]}), reviewer=review)
    with pytest.raises(Unauthenticated):
        auth.authenticate(token)


def test_the_controller_reviews_with_its_own_kubernetes_credentials_by_default(
        tmp_path: Path, kube_api: tuple[client.ApiClient, Emulator], monkeypatch: pytest.MonkeyPatch) -> None:
    api, emulator = kube_api
    monkeypatch.setattr("character.kube.default_api_client", lambda: api)
    auth = Authenticator.from_file(tokens_file(tmp_path, {"service_accounts": [
        {"subject": "system:serviceaccount:team-a:*"}]}))
    assert auth.authenticate(SA_TOKEN) == Identity(SA_USER)
    assert len(emulator.requests("post /apis/authentication.k8s.io/v1/tokenreviews")) == 1


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


@pytest.fixture
def client_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$OCT_HOME at tmp_path, and no token in the environment."""
    monkeypatch.setenv("OCT_HOME", str(tmp_path))
    monkeypatch.delenv("OCT_TOKEN", raising=False)
    monkeypatch.delenv("OCT_TOKEN_FILE", raising=False)
    return tmp_path


def test_oct_up_makes_one_local_admin_token_the_client_finds(client_env: Path) -> None:
    path = ensure_local_token()
    assert ensure_local_token() == path  # made once
    token = client_token()
    assert token and (client_env / "auth" / "token").stat().st_mode & 0o077 == 0
    assert Authenticator.from_file(path).authenticate(token).admin


TOKEN_SHAPE = re.compile(r"oct_[A-Za-z0-9_-]{43}")
"""What `oct up` issues: a prefix secret scanners can match, then 32 random bytes (URL-safe base64)."""


def test_oct_up_makes_private_token_files_where_the_server_and_client_look(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCT_HOME", str(tmp_path / "elsewhere"))
    home = tmp_path / "new" / "home"  # not there yet: made with its parents
    folder = home / "auth"
    path = ensure_local_token(home)
    assert path == folder / "tokens.yaml" and not (tmp_path / "elsewhere").exists()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [stat.S_IMODE(f.stat().st_mode) for f in (path, folder / "token")] == [0o600, 0o600]
    assert sorted(f.name for f in folder.iterdir()) == ["token", "tokens.yaml"]  # no temporary file left
    token = (folder / "token").read_text()
    assert TOKEN_SHAPE.fullmatch(token.removesuffix("\n")) and token.endswith("\n")
    assert token.strip() not in path.read_text()
    doc = yaml.safe_load(path.read_text())
    assert list(doc) == ["tokens", "service_accounts"]  # in the order the operator's file is documented
    assert list(doc["tokens"][0]) == ["name", "sha256", "roles"]
    assert doc["tokens"][0]["sha256"] == hash_token(token.strip()) and doc["tokens"][0]["roles"] == ["admin"]
    assert (folder / "token").read_text() != ensure_local_token(tmp_path / "other").with_name("token").read_text()


def test_oct_up_keeps_its_token_and_remakes_a_half_made_pair(client_env: Path) -> None:
    path = ensure_local_token()
    token_file = client_env / "auth" / "token"
    kept = token_file.read_text(), path.read_text()
    assert ensure_local_token() == path and (token_file.read_text(), path.read_text()) == kept
    for lost in (token_file, path):
        old = client_token()
        lost.unlink()
        assert ensure_local_token() == path
        new = client_token()
        assert new and new != old and Authenticator.from_file(path).authenticate(new).admin
        with pytest.raises(Unauthenticated):
            Authenticator.from_file(path).authenticate(old)


@pytest.mark.parametrize(("login", "name"), [
    ("bob", "bob"), ("Xavier", "Xavier"), ("jo smith", "jo-smith"), (".ann@corp", "ann@corp"),
    ("josé", "jos-"), ("---", "local"), (KeyError("no passwd entry"), "local"), (OSError("no login"), "local"),
])
def test_the_local_admin_is_the_login_user_made_a_valid_token_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, login: str | Exception, name: str) -> None:
    def getuser() -> str:
        if isinstance(login, Exception):
            raise login
        return login

    monkeypatch.setattr(getpass, "getuser", getuser)
    path = ensure_local_token(tmp_path)
    token = (tmp_path / "auth" / "token").read_text().strip()
    assert Authenticator.from_file(path).authenticate(token) == Identity(name, frozenset({"admin"}))


def test_the_client_sends_the_first_token_it_finds_and_none_without_one(client_env: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert client_token() is None
    ensure_local_token()
    assert client_token() == (client_env / "auth" / "token").read_text().strip()
    named = client_env / "sa-token"
    named.write_text(" eyJ.sa \n")
    monkeypatch.setenv("OCT_TOKEN_FILE", str(named))
    assert client_token() == "eyJ.sa"
    monkeypatch.setenv("OCT_TOKEN", "from-env")
    assert client_token() == "from-env"
    assert client_token("explicit") == "explicit"


def test_an_unreadable_token_file_is_refused_with_the_reason(client_env: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCT_TOKEN_FILE", str(client_env / "missing"))
    with pytest.raises(InvalidInput) as err:
        client_token()
    assert err.value.where == "$OCT_TOKEN_FILE"
    assert str(err.value) == "$OCT_TOKEN_FILE: cannot read the token file: No such file or directory"


@pytest.fixture
def ascii_locale() -> Iterator[None]:
    """The process's locale encoding made ASCII (the C locale, as under LANG=C), restored after."""
    saved = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    assert locale.getencoding() != "UTF-8"
    yield
    locale.setlocale(locale.LC_CTYPE, saved)


@pytest.mark.usefixtures("ascii_locale")
def test_token_files_are_read_as_utf8_whatever_the_locale(client_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (client_env / "auth").mkdir()
    (client_env / "auth" / "token").write_text("oct_tök\n", encoding="utf-8")
    assert client_token() == "oct_tök"
    named = client_env / "sa-token"
    named.write_text("eyJ.tök\n", encoding="utf-8")
    monkeypatch.setenv("OCT_TOKEN_FILE", str(named))
    assert client_token() == "eyJ.tök"


def test_a_pod_submits_with_its_service_account_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SA_TOKEN + "\n")
    monkeypatch.delenv("OCT_TOKEN", raising=False)
    monkeypatch.setenv("OCT_TOKEN_FILE", str(token_file))
    assert client_token() == SA_TOKEN
