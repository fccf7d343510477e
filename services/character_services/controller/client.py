"""The controller's client, as `oct submit/status/watch/cancel/list` use it."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from character.errors import InvalidInput
from character.security.auth import client_token

from character_services.api.character.v1 import controller_pb2, controller_pb2_grpc
from character_services.common.errors import ServiceUnavailable, from_rpc_error
from character_services.common.security import BearerToken, Transport

RPC_TIMEOUT_S = 60.0


class ControllerClient:
    def __init__(self, address: str):
        self.address = address
        try:
            channel = Transport.resolve(client=True).channel(address)
        except InvalidInput as err:  # no CA here to check a controller against: none can be reached
            raise ServiceUnavailable(f"controller at {address}: {err}") from None
        token = client_token()  # $OCT_TOKEN, else the one `oct up` saved under $OCT_HOME
        self._channel = grpc.intercept_channel(channel, BearerToken(token)) if token else channel
        self._stub = controller_pb2_grpc.ControllerServiceStub(self._channel)

    def _error(self, err: grpc.RpcError) -> Exception:
        found = from_rpc_error(err, f"controller at {self.address}")
        if isinstance(found, ServiceUnavailable):
            return ServiceUnavailable(f"{found}. Start the services with `oct up`, or point --controller "
                                      "(or $OCT_CONTROLLER_ADDRESS) at a running controller")
        return found

    def submit(self, spec_yaml: str) -> tuple[controller_pb2.Run, bool]:
        try:
            response = self._stub.SubmitRun(controller_pb2.SubmitRunRequest(spec_yaml=spec_yaml),
                                            timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as err:
            raise self._error(err) from None
        return response.run, response.created

    def get(self, run_id: str) -> controller_pb2.Run:
        try:
            return self._stub.GetRun(controller_pb2.GetRunRequest(run_id=run_id), timeout=RPC_TIMEOUT_S).run
        except grpc.RpcError as err:
            raise self._error(err) from None

    def cancel(self, run_id: str) -> controller_pb2.Run:
        try:
            request = controller_pb2.CancelRunRequest(run_id=run_id)
            return self._stub.CancelRun(request, timeout=RPC_TIMEOUT_S).run
        except grpc.RpcError as err:
            raise self._error(err) from None

    def list(self) -> list[controller_pb2.Run]:
        try:
            return list(self._stub.ListRuns(controller_pb2.ListRunsRequest(), timeout=RPC_TIMEOUT_S).runs)
        except grpc.RpcError as err:
            raise self._error(err) from None

    def watch(self, run_id: str) -> Iterator[controller_pb2.RunEvent]:
        """The run's events until it ends."""
        stream = self._stub.WatchRun(controller_pb2.WatchRunRequest(run_id=run_id))
        try:
            for response in stream:
                yield response.event
        except grpc.RpcError as err:
            raise self._error(err) from None
        finally:
            stream.cancel()

    def close(self) -> None:
        self._channel.close()
