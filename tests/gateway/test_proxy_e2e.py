"""End to end through the gateway, as a channel, store app or terminal would call it: a real
gateway (runtime.grpc_server.serve) in front of a real test backend."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from tutti.common.v1 import common_pb2

from tests.gateway.backend import SERVICE, FakeBackend
from tests.gateway.backend import message as backend_message
from tests.gateway.conftest import KEYS
from tests.support import random_id, wait_for

pytestmark = pytest.mark.e2e


async def status_of(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no rich status in the trailing metadata")


async def place(as_: Any, who: str = "web", **fields: Any) -> str:
    order_id = random_id("order")
    await as_(who).place_order(order_id=order_id, **fields)
    return order_id


# --- authentication --------------------------------------------------------------------------


async def test_a_call_without_credentials_is_unauthenticated(as_: Any) -> None:
    error = await status_of(as_(None).echo(text="hi"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in error.details()


async def test_an_unknown_key_is_unauthenticated(as_: Any) -> None:
    error = await status_of(as_("not-a-key").echo(text="hi"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "unknown API key"


# --- authorization by kind -------------------------------------------------------------------


async def test_a_kind_not_in_the_policy_is_denied(as_: Any) -> None:
    error = await status_of(as_("terminal-a").place_order(order_id=random_id("order")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "terminal-a" in error.details() and "PlaceOrder" in error.details()


async def test_a_method_without_policy_is_admin_only(as_: Any) -> None:
    error = await status_of(as_("web").secret(text="x"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    reply = await as_("admin").secret(text="x")
    assert reply.text == "x"


# --- channel scoping -------------------------------------------------------------------------


async def test_a_channel_cannot_act_for_another_channel(as_: Any, backend: tuple[FakeBackend, str]) -> None:
    order_id = random_id("order")
    error = await status_of(as_("web").place_order(order_id=order_id, channel=common_pb2.CHANNEL_APP))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "CHANNEL_WEB only, not CHANNEL_APP" in error.details()
    assert f"PlaceOrder:{order_id}" not in backend[0].calls


async def test_an_unset_channel_is_taken_from_the_credential(as_: Any) -> None:
    reply = await as_("web").place_order(order_id=random_id("order"))
    assert reply.order.channel == common_pb2.CHANNEL_WEB


async def test_another_channels_order_is_not_found(as_: Any) -> None:
    order_id = await place(as_, "web")
    assert (await as_("web").get_order(order_id=order_id)).order.order_id == order_id
    error = await status_of(as_("app").get_order(order_id=order_id))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert order_id in error.details()


async def test_cancelling_another_channels_order_is_not_found_and_never_reaches_the_backend(
    as_: Any, backend: tuple[FakeBackend, str]
) -> None:
    order_id = await place(as_, "web")
    error = await status_of(as_("app").cancel_order(order_id=order_id))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert backend[0].calls.count(f"GetOrder:{order_id}") == 1  # the ownership lookup only
    await as_("web").cancel_order(order_id=order_id)


async def test_watching_another_channels_order_is_not_found(as_: Any) -> None:
    order_id = await place(as_, "web")
    call = as_("app").watch_order(order_id=order_id)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_ownership_is_asked_of_each_lookup_in_turn(as_: Any, backend: tuple[FakeBackend, str]) -> None:
    """The first lookup does not know the order (NOT_FOUND): the next one decides."""
    test_backend = backend[0]
    order_id = random_id("elsewhere")
    test_backend.elsewhere[order_id] = backend_message("Order")(
        order_id=order_id, channel=common_pb2.CHANNEL_WEB
    )
    call = as_("web").watch_order(order_id=order_id)
    assert (await call.read()).order.order_id == order_id
    call.cancel()
    assert test_backend.calls[-3:-1] == [f"GetOrder:{order_id}", f"FindOrder:{order_id}"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await as_("app").watch_order(order_id=order_id).read()
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await as_("web").watch_order(order_id=random_id("nowhere")).read()
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_store_sees_orders_of_its_location_only(as_: Any) -> None:
    order_id = await place(as_, "web", location_ids=["loc-a"])
    assert (await as_("store-a").get_order(order_id=order_id)).order.order_id == order_id
    error = await status_of(as_("store-b").get_order(order_id=order_id))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_a_list_only_shows_the_callers_orders(as_: Any) -> None:
    web_order = await place(as_, "web", location_ids=["loc-a"])
    app_order = await place(as_, "app", location_ids=["loc-b"])
    web_sees = {o.order_id for o in (await as_("web").list_orders()).orders}
    assert web_order in web_sees and app_order not in web_sees
    store_sees = {o.order_id for o in (await as_("store-b").list_orders()).orders}
    assert app_order in store_sees and web_order not in store_sees


async def test_admin_sees_every_order(as_: Any) -> None:
    order_id = await place(as_, "app")
    assert (await as_("admin").get_order(order_id=order_id)).order.channel == common_pb2.CHANNEL_APP


# --- location scoping on client streams ------------------------------------------------------


async def test_a_terminal_streams_sales_of_its_own_location(as_: Any) -> None:
    reply = await as_("terminal-a").record_sales([{"location_id": "loc-a", "sku": "A"}, {"sku": "B"}])
    assert reply.count == 2
    assert list(reply.location_ids) == ["loc-a", "loc-a"]  # the unset one filled in


async def test_a_sale_for_another_location_ends_the_stream_with_permission_denied(as_: Any) -> None:
    error = await status_of(
        as_("terminal-a").record_sales(
            [{"location_id": "loc-a", "sku": "A"}, {"location_id": "loc-b", "sku": "B"}]
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "loc-b" in error.details()


async def test_bidirectional_sales_stream_is_scoped_too(as_: Any) -> None:
    replies = [
        r async for r in as_("store-a").stream_sales([{"sku": "A"}, {"location_id": "loc-a", "sku": "B"}])
    ]
    assert [r.count for r in replies] == [1, 2]
    call = as_("store-a").stream_sales([{"sku": "A"}, {"location_id": "loc-b", "sku": "B"}])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


# --- rate limits -----------------------------------------------------------------------------


async def test_over_the_rate_limit_is_resource_exhausted_with_a_retry_hint(as_: Any) -> None:
    client = as_("limited")
    for _ in range(2):
        await client.echo(text="ok")
    call = client.echo(text="too many")
    error = await status_of(call)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rich_status(error)
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert info.retry_delay.seconds + info.retry_delay.nanos / 1e9 > 0
    trailing = dict(error.trailing_metadata() or ())
    assert int(trailing["retry-after"]) >= 1
    # Other callers are not affected.
    await as_("web").echo(text="still fine")


# --- edge validation -------------------------------------------------------------------------


async def test_a_missing_required_id_is_invalid_argument_before_the_backend(
    as_: Any, backend: tuple[FakeBackend, str]
) -> None:
    calls = len(backend[0].calls)
    call = as_("web").get_order(order_id="")
    error = await status_of(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "order_id" in error.details()
    bad = error_details_pb2.BadRequest()
    assert rich_status(error).details[0].Unpack(bad)
    assert bad.field_violations[0].field == "order_id"
    assert len(backend[0].calls) == calls


async def test_garbage_bytes_are_invalid_argument(channel: grpc.aio.Channel) -> None:
    call = channel.unary_unary(f"/{SERVICE}/GetOrder")(
        b"\xff\xff\xff", metadata=[("authorization", "Bearer key-web")]
    )
    error = await status_of(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("who", ["admin", "web"])
async def test_every_request_is_decoded_whoever_calls_even_without_required_fields(
    channel: grpc.aio.Channel, backend: tuple[FakeBackend, str], who: str
) -> None:
    # Echo's row lists no required field; an admin's call is not scoped: decoded all the same.
    calls = len(backend[0].calls)
    call = channel.unary_unary(f"/{SERVICE}/Echo")(
        b"\x0a\x05ab", metadata=[("authorization", f"Bearer {KEYS[who]}")], timeout=10
    )
    error = await status_of(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "request: is not a valid tutti.gatewaytest.v1.EchoRequest"
    assert len(backend[0].calls) == calls


async def test_an_unknown_enum_number_is_named_not_called_missing(
    channel: grpc.aio.Channel, backend: tuple[FakeBackend, str]
) -> None:
    calls = len(backend[0].calls)
    request = backend_message("PlaceOrderRequest")(order_id=random_id("order"), channel=99)
    call = channel.unary_unary(f"/{SERVICE}/PlaceOrder")(
        request.SerializeToString(), metadata=[("authorization", f"Bearer {KEYS['admin']}")], timeout=10
    )
    error = await status_of(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = error_details_pb2.BadRequest()
    assert rich_status(error).details[0].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("channel", "99 is not a known tutti.common.v1.Channel value")
    ]
    assert len(backend[0].calls) == calls


async def test_a_message_over_4_mib_is_resource_exhausted_and_one_under_goes_through(as_: Any) -> None:
    reply = await as_("admin").echo(text="x" * (3 * 1024 * 1024))
    assert len(reply.text) == 3 * 1024 * 1024
    error = await status_of(as_("admin").echo(text="x" * (4 * 1024 * 1024 + 1)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details().startswith("SERVER: Received message larger than max (")
    assert error.details().endswith(f" vs. {4 * 1024 * 1024})")


# --- proxy mechanics -------------------------------------------------------------------------


async def test_the_callers_deadline_reaches_the_backend(as_: Any) -> None:
    reply = await as_("web").echo(text="deadline", timeout=7)
    assert 0 < reply.time_remaining < 8  # grpc rounds deadlines up a little
    reply = await as_("web").echo(text="no deadline", timeout=None)
    assert 8 < reply.time_remaining < 31  # the gateway's default for unary calls


async def test_an_expired_deadline_is_deadline_exceeded(as_: Any) -> None:
    error = await status_of(as_("web").echo(text="slow", sleep_ms=3000, timeout=0.3))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_metadata_is_forwarded_but_not_the_key_nor_a_spoofed_identity(as_: Any) -> None:
    reply = await as_("web").echo(
        text="md",
        metadata=[("x-request-id", "r-42"), ("tutti-caller-id", "admin"), ("tutti-caller-kind", "admin")],
    )
    received = list(reply.metadata)
    assert "x-request-id=r-42" in received
    assert "tutti-caller-id=web" in received and "tutti-caller-id=admin" not in received
    assert "tutti-caller-channel=CHANNEL_WEB" in received
    assert not any(item.startswith("authorization=") for item in received)


async def test_backend_statuses_come_back_unchanged(as_: Any) -> None:
    error = await status_of(
        as_("web").echo(text="nope", fail_code=grpc.StatusCode.FAILED_PRECONDITION.value[0])
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "backend says no to nope"


async def test_cancelling_a_watch_cancels_the_backend_stream(
    as_: Any, backend: tuple[FakeBackend, str]
) -> None:
    test_backend = backend[0]
    order_id = await place(as_, "web")
    test_backend.watch_cancelled.clear()
    call = as_("web").watch_order(order_id=order_id)
    first = await call.read()
    assert first.order.order_id == order_id
    call.cancel()
    await wait_for(test_backend.watch_cancelled.is_set, message="backend stream cancelled")


async def test_calls_run_concurrently(as_: Any) -> None:
    replies = await asyncio.gather(*(as_("web").echo(text=str(i)) for i in range(20)))
    assert sorted(r.text for r in replies) == sorted(str(i) for i in range(20))


async def test_trace_context_travels_to_the_backend(as_: Any) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    reply = await as_("web").echo(
        text="trace", metadata=[("traceparent", f"00-{trace_id}-b7ad6b7169203331-01")]
    )
    received = [item for item in reply.metadata if item.startswith("traceparent=")]
    assert len(received) == 1 and trace_id in received[0]


# --- client streams refused before they are read ---------------------------------------------


@pytest.mark.parametrize("key", [None, "not-a-key"])
async def test_a_client_stream_with_a_bad_key_is_unauthenticated_for_a_python_client(
    as_: Any, key: str | None
) -> None:
    sales = [{"location_id": "loc-a", "sku": f"S{i}"} for i in range(50)]
    call = as_(key).stream_sales(sales)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value.details()
    error = await status_of(as_(key).record_sales(sales))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()


async def test_every_refusal_of_a_client_stream_reaches_a_python_client_precisely(as_: Any) -> None:
    """Refused before the stream is read (kind, rate limit) or in the middle of it (a foreign
    location, an ill-formed sale): the gateway reads the stream to its end before answering, so
    the client sees the status sent, not INTERNAL "Internal error from Core"."""
    sales = [{"location_id": "loc-a", "sku": f"S{i}"} for i in range(200)]
    refusals = {
        "web": (grpc.StatusCode.PERMISSION_DENIED,),  # a channel may not record sales
        "limited": (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED),
        "store-b": (grpc.StatusCode.PERMISSION_DENIED,),  # loc-a is not its location
    }
    for who, expected in refusals.items():
        for _ in range(3):
            call = as_(who).stream_sales(sales)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in call:
                    pass
            assert info.value.code() in expected, (who, info.value.code(), info.value.details())
            error = await status_of(as_(who).record_sales(sales))
            assert error.code() in expected, (who, error.code(), error.details())
