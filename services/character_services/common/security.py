"""TLS, caller identity and per-caller limits for the gRPC services and their clients.

- Transport: every server listens with TLS from a cert-manager style folder (tls.crt, tls.key,
  ca.crt: `--tls-dir`, $OCT_TLS_DIR, or the local CA `oct up` makes under $OCT_HOME). Workers
  also require a client certificate signed by ca.crt (mutual TLS); the controller takes any
  TLS client and authenticates it by bearer token. Plaintext only with `--insecure`.
- Callers: the controller turns `authorization: Bearer <token>` into an `Identity` (the
  operator's token file or a Kubernetes TokenReview); workers know callers by certificate.
- Limits: open streams per caller are capped, so idle watchers cannot starve a service.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from character.errors import InvalidInput
from character.home import oct_home
from character.security.auth import Authenticator, Identity, PermissionDenied, QuotaExceeded, Unauthenticated
from character.security.pki import TLS_DIR_ENV, TlsMaterial, find_tls_dir

log = logging.getLogger("character_services.security")

ANONYMOUS = Identity("anonymous", frozenset({"admin"}))
SECRET_ENV = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)
INSECURE_ENV = "OCT_INSECURE"
"""Set to 1 for plaintext gRPC (what --insecure does), with a warning."""
TLS_SERVER_NAME_ENV = "OCT_TLS_SERVER_NAME"
"""Clients: the name the server's certificate must carry when it differs from the address's
host (e.g. reaching the controller through `kubectl port-forward` on localhost)."""
INSECURE_WARNING = ("plaintext gRPC (--insecure): anyone on the network can read and forge calls; "
                    "use it only on a machine nobody else can reach")


@dataclass(frozen=True)
class Transport:
    """How a process speaks gRPC: TLS material from `tls_dir`, or plaintext when `insecure`."""

    tls_dir: Path | None
    insecure: bool = False

    @classmethod
    def resolve(cls, tls_dir: str | Path | None = None, insecure: bool = False, client: bool = False) -> Transport:
        """`tls_dir` (a flag), else $OCT_TLS_DIR, else the local CA's folder; plaintext only when
        asked for (`insecure`, or $OCT_INSECURE=1), with a warning. No TLS material and not
        insecure: an error saying what to do. A `client` needs only ca.crt in the folder."""
        if insecure or os.environ.get(INSECURE_ENV) == "1":
            log.warning(INSECURE_WARNING)
            return cls(None, insecure=True)
        found = find_tls_dir(tls_dir)
        if found is None:
            what = "a folder holding the platform's ca.crt" if client else "tls.crt, tls.key, ca.crt"
            raise InvalidInput(f"no TLS certificates: set ${TLS_DIR_ENV} ({what}), start the services with "
                               "`oct up` (which makes a local CA), or use plaintext with --insecure / "
                               f"{INSECURE_ENV}=1", where="tls")
        return cls(found)

    # ------------------------------------------------------------------ servers
    def add_port(self, server: grpc.Server, address: str, require_client_cert: bool) -> int:
        if self.insecure:
            return server.add_insecure_port(address)
        assert self.tls_dir is not None
        tls = TlsMaterial.load(self.tls_dir)
        credentials = grpc.ssl_server_credentials([(tls.key, tls.cert)], root_certificates=tls.ca,
                                                  require_client_auth=require_client_cert)
        return server.add_secure_port(address, credentials)

    # ------------------------------------------------------------------ clients
    def channel(self, address: str, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
        """A channel to `address`: TLS checking the server against ca.crt, presenting tls.crt
        when the folder has one (what workers require), or plaintext when insecure."""
        options = list(options or [])
        if self.insecure:
            return grpc.insecure_channel(address, options=options)
        assert self.tls_dir is not None
        ca = self.tls_dir / "ca.crt"
        if not ca.is_file():
            raise InvalidInput("the TLS folder has no ca.crt to check servers against", where=str(self.tls_dir))
        cert, key = self.tls_dir / "tls.crt", self.tls_dir / "tls.key"
        has_pair = cert.is_file() and key.is_file()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca.read_bytes(),
            private_key=key.read_bytes() if has_pair else None,
            certificate_chain=cert.read_bytes() if has_pair else None,
        )
        if os.environ.get(TLS_SERVER_NAME_ENV):
            options.append(("grpc.ssl_target_name_override", os.environ[TLS_SERVER_NAME_ENV]))
        return grpc.secure_channel(address, credentials, options=options)


# ---------------------------------------------------------------------- callers
def bearer(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
            return value[len("bearer "):].strip()
    return None


def certificate_names(context: grpc.ServicerContext) -> list[str]:
    """The verified client certificate's common name and subject alternative names."""
    auth = context.auth_context() or {}
    names = [*auth.get("x509_common_name", []), *auth.get("x509_subject_alternative_name", [])]
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


class Guard:
    """Who may call what, checked before every RPC of one service (health and reflection aside).

    Controller: a bearer token the `Authenticator` accepts. Workers: mutual TLS already proved
    the caller holds a certificate the CA signed; the task RPCs (which start and stop work)
    may be limited further to the certificate names in `task_clients`."""

    TASK_METHODS = frozenset({"StartTask", "CancelTask"})

    def __init__(self, authenticator: Authenticator | None = None, task_clients: list[str] | None = None,
                 max_streams_per_caller: int = 16, anonymous: bool = False):
        """`anonymous`: a controller started --insecure without a token file, where every caller
        is an admin (a warning says so at start)."""
        self.authenticator = authenticator
        self.anonymous = anonymous
        self.task_clients = frozenset(task_clients or ())
        self.max_streams = max_streams_per_caller
        self._streams: dict[str, int] = {}
        self._lock = threading.Lock()

    def identity(self, context: grpc.ServicerContext) -> Identity:
        """The caller (raises Unauthenticated)."""
        if self.authenticator is not None:
            return self.authenticator.authenticate(bearer(context))
        if self.anonymous:
            return ANONYMOUS
        names = certificate_names(context)
        return Identity(names[0] if names else context.peer())

    def check(self, method: str, context: grpc.ServicerContext) -> Identity:
        identity = self.identity(context)
        if (self.authenticator is None and self.task_clients and method in self.TASK_METHODS
                and not self.task_clients.intersection(certificate_names(context))):
            raise PermissionDenied(f"{method} is only for the platform's controller (certificates named "
                                   f"{', '.join(sorted(self.task_clients))})")
        return identity

    @contextmanager
    def stream_slot(self, identity: Identity) -> Iterator[None]:
        """Holds one of the caller's open-stream slots; QuotaExceeded when all are taken."""
        with self._lock:
            held = self._streams.get(identity.name, 0)
            if held >= self.max_streams:
                raise QuotaExceeded(f"{held} streams already open for {identity.name}; the limit is "
                                    f"{self.max_streams}: close some watches first")
            self._streams[identity.name] = held + 1
        try:
            yield
        finally:
            with self._lock:
                self._streams[identity.name] -= 1
                if not self._streams[identity.name]:
                    del self._streams[identity.name]


class Redactor:
    """Takes server paths and credentials out of what callers are told: the store's location,
    $OCT_HOME, the home folder, and the values of environment variables that hold secrets."""

    def __init__(self, store_uri: str = ""):
        secrets = [v for k, v in os.environ.items() if SECRET_ENV.search(k) and len(v) >= 6]
        paths = [store_uri, str(oct_home()), os.path.expanduser("~")]
        named = [(s, "<secret>") for s in secrets] + [(p, "<server path>") for p in paths if len(p) > 1]
        self._replacements = sorted(named, key=lambda pair: -len(pair[0]))

    def __call__(self, text: str) -> str:
        for value, replacement in self._replacements:
            text = text.replace(value, replacement)
        return text


class _Details(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(self, details: grpc.ClientCallDetails, metadata: list[tuple[str, str]]):
        self.method, self.timeout, self.credentials = details.method, details.timeout, details.credentials
        self.wait_for_ready, self.compression = details.wait_for_ready, details.compression
        self.metadata = metadata


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Client side: sends `authorization: Bearer <token>` with every call (TLS or not)."""

    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> _Details:
        return _Details(details, [*(details.metadata or ()), self._header])

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


__all__ = ["BearerToken", "Guard", "Identity", "PermissionDenied", "QuotaExceeded", "Redactor", "Transport",
           "Unauthenticated", "bearer"]
