"""Trained personas over the controller's real gRPC API on 127.0.0.1 (TLS and bearer tokens
from tests/fixtures/security.py), with the owner rules of runs: only a run's owner (or an
admin) publishes it; another owner neither sees an unshared persona nor takes its name;
shared personas are visible to all; bad and unknown names are clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from character.controller.runs import RunRecord

from character_services.api.character.v1 import controller_pb2, controller_pb2_grpc
from character_services.common.server import ServeOptions, Server
from character_services.controller.server import build
from tests.fixtures.security import Credentials
from tests.unit.serving.helpers import trained_run


@pytest.fixture(scope="module")
def controller(secure_env: Credentials, tmp_path_factory: pytest.TempPathFactory,
               torch_one_thread: None) -> Iterator[tuple[Server, dict[str, RunRecord]]]:
    """A controller (inline executor) over a store holding a finished run of alice's and two of bob's."""
    from character.store import LocalStore

    root = tmp_path_factory.mktemp("personas-grpc")
    store = LocalStore(root / "store")
    runs = {"alice": trained_run(store, root, seed=21, owner="alice"),
            "bob": trained_run(store, root, seed=22, owner="bob"),
            "bob-2": trained_run(store, root, seed=23, owner="bob")}
    options = ServeOptions(store=store.uri, port=0, executor="inline", tls_dir=str(secure_env.tls_dir),
                           tokens_file=str(secure_env.tokens_file))
    server = build(options).start()
    yield server, runs
    server.stop(0)


def stub(server: Server, credentials: Credentials, user: str | None) -> Any:
    return controller_pb2_grpc.ControllerServiceStub(credentials.channel(server.address, user))


def code_of(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value.code(), caught.value.details()  # type: ignore[no-any-return]


def names(ctl: Any) -> list[str]:
    return [f"{p.name}:{p.tag}" for p in ctl.ListTrainedPersonas(controller_pb2.ListTrainedPersonasRequest(),
                                                                  timeout=30).personas]


@pytest.mark.attack("another owner reads, lists or takes the name of an unshared persona")
def test_another_owner_cannot_see_or_take_an_unshared_persona(
        controller: tuple[Server, dict[str, RunRecord]], credentials: Credentials) -> None:
    server, runs = controller
    alice, bob, root = (stub(server, credentials, u) for u in ("alice", "bob", "root"))
    published = alice.PublishPersona(controller_pb2.PublishPersonaRequest(
        run_id=runs["alice"].run_id, name="alices"), timeout=60).persona
    assert (published.name, published.tag, published.owner, published.run_id) == \
        ("alices", "latest", "alice", runs["alice"].run_id)
    assert published.model.key == runs["alice"].stages["merge"].artifacts["model"].key
    assert set(published.adapters) == {"dpo", "sft"}
    got = alice.GetTrainedPersona(controller_pb2.GetTrainedPersonaRequest(ref="alices:latest"), timeout=30).persona
    assert got == published
    assert code_of(bob.GetTrainedPersona, controller_pb2.GetTrainedPersonaRequest(ref="alices"))[0] == \
        grpc.StatusCode.PERMISSION_DENIED
    assert "alices:latest" not in names(bob)
    assert "alices:latest" in names(root)
    taken = code_of(bob.PublishPersona, controller_pb2.PublishPersonaRequest(run_id=runs["bob"].run_id,
                                                                               name="alices"))
    assert taken[0] == grpc.StatusCode.PERMISSION_DENIED
    assert alice.GetTrainedPersona(controller_pb2.GetTrainedPersonaRequest(ref="alices"),
                                   timeout=30).persona.run_id == runs["alice"].run_id


@pytest.mark.attack("publishing another owner's run")
def test_only_the_runs_owner_publishes_it(controller: tuple[Server, dict[str, RunRecord]],
                                          credentials: Credentials) -> None:
    server, runs = controller
    alice = stub(server, credentials, "alice")
    code, _ = code_of(alice.PublishPersona, controller_pb2.PublishPersonaRequest(run_id=runs["bob"].run_id,
                                                                                 name="stolen"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "stolen:latest" not in names(stub(server, credentials, "root"))


@pytest.mark.attack("listing personas without a token")
def test_no_token_is_unauthenticated(controller: tuple[Server, dict[str, RunRecord]],
                                     credentials: Credentials) -> None:
    server, _ = controller
    anonymous = stub(server, credentials, None)
    assert code_of(anonymous.ListTrainedPersonas, controller_pb2.ListTrainedPersonasRequest())[0] == \
        grpc.StatusCode.UNAUTHENTICATED


def test_shared_personas_are_visible_to_everyone_and_tags_move(controller: tuple[Server, dict[str, RunRecord]],
                                                               credentials: Credentials) -> None:
    server, runs = controller
    bob, alice = stub(server, credentials, "bob"), stub(server, credentials, "alice")
    first = bob.PublishPersona(controller_pb2.PublishPersonaRequest(run_id=runs["bob"].run_id, name="bobs",
                                                                    shared=True), timeout=60).persona
    second = bob.PublishPersona(controller_pb2.PublishPersonaRequest(run_id=runs["bob-2"].run_id, name="bobs",
                                                                     shared=True), timeout=60).persona
    assert "bobs:latest" in names(alice)
    now = alice.GetTrainedPersona(controller_pb2.GetTrainedPersonaRequest(ref="bobs"), timeout=30).persona
    assert now.record_id == second.record_id and now.run_id == runs["bob-2"].run_id
    old = alice.GetTrainedPersona(controller_pb2.GetTrainedPersonaRequest(ref=f"bobs@{first.record_id}"),
                                  timeout=30).persona
    assert old.run_id == runs["bob"].run_id


def test_bad_and_unknown_names_are_clear_errors(controller: tuple[Server, dict[str, RunRecord]],
                                                credentials: Credentials) -> None:
    server, runs = controller
    root = stub(server, credentials, "root")
    code, details = code_of(root.PublishPersona, controller_pb2.PublishPersonaRequest(
        run_id=runs["alice"].run_id, name="Bad Name"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "name" in details
    code, details = code_of(root.GetTrainedPersona, controller_pb2.GetTrainedPersonaRequest(ref="nobody"))
    assert code == grpc.StatusCode.NOT_FOUND and "published personas:" in details
    assert runs["alice"].spec["store"] not in details  # no server paths to callers
