"""Authorization rules stated one by one: which identity may touch which run, how tokens are
compared, and how a TokenReview verdict is reused and refused."""

from __future__ import annotations

import hmac
from typing import Any

import pytest
from character.security import auth
from character.security.auth import (
    Authenticator,
    Identity,
    PermissionDenied,
    ServiceAccountRule,
    TokenEntry,
    TokensFile,
    Unauthenticated,
    check_owner,
    hash_token,
)


@pytest.mark.parametrize(("identity", "owner", "allowed"), [
    (Identity("alice"), "alice", True),
    (Identity("bob"), "alice", False),
    (Identity("alice"), "", False),  # runs from before owners existed are admin-only
    (Identity("", frozenset()), "", False),
    (Identity("root", frozenset({"admin"})), "alice", True),
    (Identity("root", frozenset({"admin"})), "", True),
])
def test_only_the_owner_or_an_admin_may_touch_a_run(identity: Identity, owner: str, allowed: bool) -> None:
    if allowed:
        check_owner(identity, owner, "r1")
        return
    with pytest.raises(PermissionDenied) as err:
        check_owner(identity, owner, "r1")
    assert "run r1 belongs to another user" in str(err.value) and "its owner or an admin" in str(err.value)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def compare(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", compare)
    return calls


def test_token_hashes_and_owners_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch)
    authn = Authenticator(TokensFile(tokens=[TokenEntry(name="alice", sha256=hash_token("t"), roles=["admin"])]))
    assert authn.authenticate("t") == Identity("alice", frozenset({"admin"}))
    assert calls == [(hash_token("t"), hash_token("t"))]
    check_owner(Identity("alice"), "alice", "r1")
    assert calls[-1] == ("alice", "alice")


def test_unknown_and_missing_tokens_are_refused_with_how_to_send_one() -> None:
    authn = Authenticator(TokensFile(tokens=[TokenEntry(name="alice", sha256=hash_token("t"))]))
    with pytest.raises(Unauthenticated) as err:
        authn.authenticate("other")
    assert str(err.value) == "unknown or expired token"
    for missing in (None, ""):
        with pytest.raises(Unauthenticated) as err:
            authn.authenticate(missing)
        assert str(err.value) == ("no credentials: send `authorization: Bearer <token>` (the `oct` client reads "
                                  "$OCT_TOKEN or $OCT_HOME/auth/token)")


def _reviewed(reviewer: Any) -> Authenticator:
    rule = ServiceAccountRule(subject="system:serviceaccount:team-a:*", roles=["admin"])
    return Authenticator(TokensFile(service_accounts=[rule]), reviewer)


def test_a_review_verdict_is_reused_within_the_cache_time_and_asked_again_after(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def reviewer(token: str) -> str:
        asked.append(token)
        return "system:serviceaccount:team-a:bot"

    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    authn = _reviewed(reviewer)
    who = Identity("system:serviceaccount:team-a:bot", frozenset({"admin"}))
    assert authn.authenticate("sa") == who
    now[0] += auth.REVIEW_CACHE_S - 0.01
    assert authn.authenticate("sa") == who and asked == ["sa"]
    now[0] += 0.01
    assert authn.authenticate("sa") == who and asked == ["sa", "sa"]


def test_each_token_has_its_own_review_verdict() -> None:
    users = {"sa-a": "system:serviceaccount:team-a:bot", "sa-x": None, "sa-b": "system:serviceaccount:team-b:bot"}
    authn = _reviewed(users.get)
    with pytest.raises(Unauthenticated):
        authn.authenticate("sa-x")  # a refusal is remembered for this token only
    assert authn.authenticate("sa-a").name == "system:serviceaccount:team-a:bot"
    with pytest.raises(Unauthenticated):
        authn.authenticate("sa-b")  # authentic, but no rule lets team-b in
    assert authn.authenticate("sa-a").name == "system:serviceaccount:team-a:bot"


def test_a_failing_review_lets_nobody_in_and_names_the_error() -> None:
    def reviewer(token: str) -> str:
        raise ConnectionError("down")

    with pytest.raises(Unauthenticated, match=r"cannot review the token.*\(ConnectionError\)"):
        _reviewed(reviewer).authenticate("sa")


def test_the_first_matching_service_account_rule_gives_the_roles() -> None:
    rules = [ServiceAccountRule(subject="system:serviceaccount:team-b:*"),
             ServiceAccountRule(subject="system:serviceaccount:team-a:*", roles=["admin"]),
             ServiceAccountRule(subject="system:serviceaccount:*")]
    authn = Authenticator(TokensFile(service_accounts=rules), lambda token: "system:serviceaccount:team-a:bot")
    assert authn.authenticate("sa").admin
