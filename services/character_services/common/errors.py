"""Errors across the wire: library errors become gRPC status codes on the server, and
status codes become library errors again on the client, so callers handle one family.

    InvalidInput      <-> INVALID_ARGUMENT   (what to fix is in the message)
    NotFound          <-> NOT_FOUND          (unknown run or task id)
    StoreUnavailable,
    ShuttingDown,
    ServiceUnavailable <-> UNAVAILABLE       (try again later)
    Unauthenticated   <-> UNAUTHENTICATED    (no or unknown credentials)
    PermissionDenied  <-> PERMISSION_DENIED  (known caller, not allowed)
    QuotaExceeded     <-> RESOURCE_EXHAUSTED (too much at once: wait for work to finish)
    HandlerTimeout     -> DEADLINE_EXCEEDED  (read back as ServiceUnavailable)
    Conflict          <-> ABORTED            (a concurrent writer changed the record: try again)
    other CharacterError -> FAILED_PRECONDITION
    anything else     -> INTERNAL            (a bug; logged with its traceback)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from character.controller.stage_tasks import ShuttingDown
from character.errors import CharacterError, InvalidInput, NotFound, StoreUnavailable
from character.security.auth import PermissionDenied, QuotaExceeded, Unauthenticated
from character.store.base import Conflict

if TYPE_CHECKING:
    import grpc


class ServiceUnavailable(CharacterError):
    """A service could not be reached (down, restarting, or too slow); retrying may help."""


class HandlerTimeout(CharacterError):
    """A handler ran past its deadline (the caller's, capped by the service); its thread is left
    to finish on its own, the caller is answered now."""


def status_code(err: BaseException) -> grpc.StatusCode:
    import grpc

    if isinstance(err, InvalidInput):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(err, NotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(err, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(err, PermissionDenied):
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(err, QuotaExceeded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(err, HandlerTimeout):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(err, Conflict):
        return grpc.StatusCode.ABORTED
    if isinstance(err, StoreUnavailable | ShuttingDown | ServiceUnavailable):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(err, CharacterError):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


def from_rpc_error(err: grpc.RpcError, what: str) -> CharacterError:
    """The library error for a failed call; `what` names the callee (e.g. "generation at host:port")."""
    import grpc

    code = err.code() if isinstance(err, grpc.Call) else None
    details = (err.details() if isinstance(err, grpc.Call) else None) or str(err)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInput(details, where=what)
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFound(f"{what}: {details}")
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(f"{what}: {details}")
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(f"{what}: {details}")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return QuotaExceeded(f"{what}: {details}")
    if code is grpc.StatusCode.ABORTED:
        return Conflict(f"{what}: {details}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return ServiceUnavailable(f"{what} is unavailable ({code.name if code else 'no answer'}): {details}")
    name = code.name if code is not None else "error"
    return CharacterError(f"{what} answered {name}: {details}")
