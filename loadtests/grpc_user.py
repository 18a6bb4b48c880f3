"""A Locust user speaking gRPC to the gateway, with every call reported to Locust.

gevent: grpc is switched to gevent-friendly polling before any channel exists, and users use
the SYNC stubs (as locust's examples/grpc does). Unary calls are timed by a client interceptor
that fires Locust's ``request`` event; streaming scenarios time each message themselves with
``report``. A status listed in a user's ``expected`` for a method (a sold-out answer in a flash
sale) is a correct outcome, reported as a success under its own name ("PlaceOrder
[FAILED_PRECONDITION]") so the report shows how many there were.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User
from locust.env import Environment
from locust.exception import LocustError

grpc_gevent.init_gevent()

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
]


def short_name(method: str) -> str:
    """'/tutti.inventory.v1.InventoryService/GetAvailability' → 'GetAvailability'."""
    return method.rsplit("/", 1)[-1]


def report(
    environment: Environment,
    name: str,
    started: float,
    *,
    exception: BaseException | None = None,
    length: int = 0,
    request_type: str = "grpc",
) -> None:
    """Fire one Locust request event timed from ``started`` (time.perf_counter())."""
    environment.events.request.fire(
        request_type=request_type,
        name=name,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=length,
        response=None,
        context=None,
        exception=exception,
    )


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, environment: Environment, expected: Mapping[str, frozenset[grpc.StatusCode]]) -> None:
        self._env = environment
        self._expected = expected

    def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        name = short_name(client_call_details.method)
        started = time.perf_counter()
        call = continuation(client_call_details, request)
        exception: BaseException | None = None
        length = 0
        try:
            length = call.result().ByteSize()
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code is not None and code in self._expected.get(name, frozenset()):
                name = f"{name} [{code.name}]"
            else:
                exception = exc
        report(self._env, name, started, exception=exception, length=length)
        return call


class GrpcUser(User):
    """Base of every Tutti user: one channel to the gateway, an API key, interceptor-timed stubs."""

    abstract = True
    # The API key this user presents (`authorization: Bearer <key>`).
    api_key: str = ""
    # Per method short name, the statuses that are a correct answer rather than a failure.
    expected: Mapping[str, frozenset[grpc.StatusCode]] = {}

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        if not self.host:
            raise LocustError("set --host to the gateway address (host:port)")
        self._raw_channel = grpc.insecure_channel(self.host, options=CHANNEL_OPTIONS)
        self.channel = grpc.intercept_channel(
            self._raw_channel, LocustInterceptor(environment, self.expected)
        )

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)

    def stub(self, stub_class: type[Any]) -> Any:
        """An interceptor-timed stub (unary calls are reported automatically)."""
        return stub_class(self.channel)

    def raw_stub(self, stub_class: type[Any]) -> Any:
        """A stub without the interceptor, for streams the user times itself."""
        return stub_class(self._raw_channel)

    def on_stop(self) -> None:
        self._raw_channel.close()
