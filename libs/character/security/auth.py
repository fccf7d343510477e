"""Who is calling: bearer tokens from the operator's token file, Kubernetes service-account
tokens (TokenReview), and what a caller may do with a run.

The token file (YAML; $OCT_AUTH_TOKENS, in the chart the Secret key `tokens.yaml` mounted at
/etc/oct/auth/tokens.yaml) stores only SHA-256 digests of the tokens:

    tokens:
      - name: alice                 # the identity runs are recorded under
        sha256: 9f86d08...          # `oct auth hash-token` / sha256sum of the token
        roles: [admin]              # optional; admin: read and cancel every run
    service_accounts:               # Kubernetes tokens accepted after a TokenReview
      - subject: "system:serviceaccount:team-a:*"   # glob over the reviewed user name
        roles: []

A run belongs to the identity that submitted it; only that identity or an admin may get,
watch or cancel it.
"""

from __future__ import annotations

import fnmatch
import getpass
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from character.errors import CharacterError, InvalidInput, from_validation
from character.home import oct_home
from character.yamldoc import read_mapping

TOKENS_ENV = "OCT_AUTH_TOKENS"
TOKEN_ENV = "OCT_TOKEN"
"""A client's bearer token (else $OCT_TOKEN_FILE, else $OCT_HOME/auth/token, which `oct up` writes)."""
TOKEN_FILE_ENV = "OCT_TOKEN_FILE"
"""A file holding the client's token, e.g. a pod's service-account token
(/var/run/secrets/kubernetes.io/serviceaccount/token), which the controller reviews."""
Role = Literal["admin"]
ADMIN: Role = "admin"
REVIEW_CACHE_S = 60.0
"""How long a TokenReview verdict is reused (a watch reconnecting must not flood the API server)."""


class Unauthenticated(CharacterError):
    """The caller did not prove who it is (no token, or one nobody issued)."""


class PermissionDenied(CharacterError):
    """The caller is known but may not do this."""


class QuotaExceeded(CharacterError):
    """The caller asked for more than the operator allows at once; retry when work has finished."""


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9@._:-]*$")
    """The identity: recorded as the owner of the runs this token submits."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Hex SHA-256 of the token (the token itself is never stored)."""
    roles: list[Role] = []
    """admin: get, watch and cancel every run."""


class ServiceAccountRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field(pattern=r"^system:serviceaccount:")
    """A glob over the reviewed user name, e.g. system:serviceaccount:team-a:* (a namespace)."""
    roles: list[Role] = []


class TokensFile(BaseModel):
    """The operator's token file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[TokenEntry] = []
    service_accounts: list[ServiceAccountRule] = []
    """Kubernetes service accounts allowed in; none: TokenReview is not used."""


@dataclass(frozen=True)
class Identity:
    name: str
    roles: frozenset[str] = frozenset()

    @property
    def admin(self) -> bool:
        return ADMIN in self.roles


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "oct_" + secrets.token_urlsafe(32)


def load_tokens_file(path: str | Path) -> TokensFile:
    doc = read_mapping(path, "token file")
    try:
        return TokensFile.model_validate(doc)
    except ValidationError as err:
        raise from_validation(err, str(path)) from None


TokenReviewer = Callable[[str], str | None]
"""Reviews a Kubernetes token: the authenticated user name, or None."""


def kubernetes_token_reviewer(api_client: Any = None) -> TokenReviewer:
    """A TokenReviewer over the Kubernetes API (in a pod: the ServiceAccount's credentials;
    elsewhere: the kubeconfig). The controller's ServiceAccount needs `create` on
    tokenreviews.authentication.k8s.io."""
    from kubernetes import client

    if api_client is None:
        from character.kube import default_api_client

        api_client = default_api_client()
    api = client.AuthenticationV1Api(api_client)

    def review(token: str) -> str | None:
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        status = api.create_token_review(body).status
        if status is None or not status.authenticated or status.user is None:
            return None
        return str(status.user.username)

    return review


class Authenticator:
    """Turns a bearer token into an `Identity`, or raises `Unauthenticated`."""

    def __init__(self, tokens: TokensFile, reviewer: TokenReviewer | None = None):
        self._by_hash = {entry.sha256: entry for entry in tokens.tokens}
        self._rules = tokens.service_accounts
        self._reviewer = reviewer if self._rules else None
        self._reviewed: dict[str, tuple[float, Identity | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | Path, reviewer: TokenReviewer | None = None) -> Authenticator:
        tokens = load_tokens_file(path)
        if tokens.service_accounts and reviewer is None:
            reviewer = kubernetes_token_reviewer()
        return cls(tokens, reviewer)

    def authenticate(self, token: str | None) -> Identity:
        if not token:
            raise Unauthenticated("no credentials: send `authorization: Bearer <token>` (the `oct` client "
                                  f"reads ${TOKEN_ENV} or $OCT_HOME/auth/token)")
        digest = hash_token(token)
        for known, entry in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return Identity(entry.name, frozenset(entry.roles))
        found = self._review(token, digest) if self._reviewer is not None else None
        if found is None:
            raise Unauthenticated("unknown or expired token")
        return found

    def _review(self, token: str, digest: str) -> Identity | None:
        with self._lock:
            cached = self._reviewed.get(digest)
        if cached is not None and time.monotonic() - cached[0] < REVIEW_CACHE_S:
            return cached[1]
        assert self._reviewer is not None
        try:
            user = self._reviewer(token)
        except Exception as err:  # the API server is down or refuses us: nobody gets in on its word
            raise Unauthenticated(f"cannot review the token with the Kubernetes API ({type(err).__name__})") from None
        identity = None
        if user is not None:
            for rule in self._rules:
                if fnmatch.fnmatchcase(user, rule.subject):
                    identity = Identity(user, frozenset(rule.roles))
                    break
        with self._lock:
            self._reviewed[digest] = (time.monotonic(), identity)
        return identity


def check_owner(identity: Identity, owner: str, run_id: str) -> None:
    """Only the run's owner or an admin may see or change it. Runs recorded before owners
    existed (owner "") are admin-only."""
    if identity.admin or (owner and hmac.compare_digest(owner, identity.name)):
        return
    raise PermissionDenied(f"run {run_id} belongs to another user; ask its owner or an admin")


# ---------------------------------------------------------------------- the embedded default
def local_auth_dir(home: Path | None = None) -> Path:
    return (home or oct_home()) / "auth"


def ensure_local_token(home: Path | None = None) -> Path:
    """`oct up`'s token file ($OCT_HOME/auth/tokens.yaml), made on first use with one admin token
    for the local user, saved (0600) in $OCT_HOME/auth/token where the `oct` client finds it."""
    folder = local_auth_dir(home)
    tokens_file, token_file = folder / "tokens.yaml", folder / "token"
    if tokens_file.is_file() and token_file.is_file():
        return tokens_file
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    token = new_token()
    name = _local_user()
    entry = TokenEntry(name=name, sha256=hash_token(token), roles=[ADMIN])
    _write_private(token_file, token + "\n")
    _write_private(tokens_file, yaml.safe_dump(TokensFile(tokens=[entry]).model_dump(mode="json"), sort_keys=False))
    return tokens_file


def client_token(explicit: str | None = None) -> str | None:
    """The token the `oct` client sends: `explicit`, $OCT_TOKEN, the file $OCT_TOKEN_FILE, or
    $OCT_HOME/auth/token."""
    if explicit:
        return explicit
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    named = os.environ.get(TOKEN_FILE_ENV)
    if named:
        try:
            return Path(named).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise InvalidInput(f"cannot read the token file: {err.strerror}", where=f"${TOKEN_FILE_ENV}") from None
    path = local_auth_dir() / "token"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def _local_user() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "local"
    # ASCII only: str.isalnum() is also true of letters such as "é", which a token name may not hold
    name = "".join(c if (c.isascii() and c.isalnum()) or c in "@._-" else "-" for c in user)
    return name.lstrip("-._@") or "local"


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
