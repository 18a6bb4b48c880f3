"""The ReturnsService servicer: request → command → service → response. No SQL, no rules."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from tutti.common.v1 import common_pb2
from tutti.returns.v1 import returns_pb2 as pb
from tutti.returns.v1 import returns_pb2_grpc

from runtime.caller import Caller
from runtime.errors import FieldViolation, InvalidArgument, PermissionDenied
from services.returns.adapters import codec
from services.returns.domain import model as m
from services.returns.service import (
    CreateExchange,
    CreateReturn,
    HandOverExchange,
    ReceiveReturn,
    ReturnsService,
)

MAX_LINES = 200
# Principals acting for a store: what they take back is taken in the store.
STORE_KINDS = ("store", "terminal")


def _caller(context: grpc.aio.ServicerContext) -> Caller:
    return Caller.of(context)


def _channel(requested: int, caller: Caller) -> str:
    """The channel a return is opened on: a store's is CHANNEL_STORE (filled in when unset,
    another one refused); anyone else's is the request's (the gateway already checked a
    channel principal's own)."""
    if caller.kind in STORE_KINDS:
        if requested not in (common_pb2.CHANNEL_UNSPECIFIED, common_pb2.CHANNEL_STORE):
            raise PermissionDenied(
                f"channel: {caller.id} is a store; the returns it takes are on CHANNEL_STORE, "
                f"not {common_pb2.Channel.Name(requested)}"
            )
        return codec.channel_name(common_pb2.CHANNEL_STORE)
    return codec.channel_name(requested)


def _shown(rma: pb.Return, caller: Caller) -> pb.Return:
    """The return as this caller may see it: a channel other than the one the goods were bought
    on does not see the customer of that purchase (another channel's customer)."""
    if caller.kind == "channel" and common_pb2.Channel.Name(rma.purchase_channel) != caller.channel:
        rma.customer_id = ""
    return rma


def _requested(lines: Sequence[pb.ReturnLineRequest], field: str) -> tuple[m.RequestedLine, ...]:
    violations = [
        FieldViolation(f"{field}[{i}].reason", "required")
        for i, line in enumerate(lines)
        if line.reason not in codec.REASON_OF
    ]
    if violations:
        raise InvalidArgument.of(violations)
    return tuple(
        m.RequestedLine(line.line_id, line.quantity, codec.REASON_OF[line.reason], line.note)
        for line in lines
    )


def _pos_purchase(receipt: pb.PosReceipt) -> m.Purchase:
    for name in ("terminal_id", "sale_id", "location_id"):
        if not getattr(receipt, name):
            raise InvalidArgument(f"pos_receipt.{name}", "required")
    if not receipt.HasField("sold_at"):
        raise InvalidArgument("pos_receipt.sold_at", "required")
    if not receipt.lines or len(receipt.lines) > MAX_LINES:
        raise InvalidArgument("pos_receipt.lines", f"1..{MAX_LINES} lines are required")
    currencies = {line.unit_price.currency for line in receipt.lines}
    if len(currencies) != 1 or "" in currencies:
        raise InvalidArgument("pos_receipt.lines.unit_price", "every line needs a price in one currency")
    for i, line in enumerate(receipt.lines):
        if not line.line_id or not line.sku or line.quantity <= 0:
            raise InvalidArgument(
                f"pos_receipt.lines[{i}]", "line_id, sku and a positive quantity are required"
            )
    return m.Purchase(
        order_id=m.pos_order_id(receipt.terminal_id, receipt.sale_id),
        source=m.PurchaseSource.POS,
        channel="store",
        purchased_at=codec.from_timestamp(receipt.sold_at),
        currency=currencies.pop(),
        customer_id=receipt.customer_id,
        location_id=receipt.location_id,
        lines=tuple(
            m.PurchasedLine(
                line.line_id, line.sku, line.quantity, line.unit_price.amount_minor, line.category
            )
            for line in receipt.lines
        ),
    )


def _create_command(
    request: pb.CreateReturnRequest | pb.CreateExchangeRequest,
    lines: tuple[m.RequestedLine, ...],
    caller: Caller,
) -> CreateReturn:
    purchase = request.WhichOneof("purchase")
    if purchase is None:
        raise InvalidArgument("order_id", "an order_id or a pos_receipt is required")
    pos = _pos_purchase(request.pos_receipt) if purchase == "pos_receipt" else None
    if request.method not in codec.METHOD_OF:
        raise InvalidArgument("method", "required: IN_STORE, CARRIER_LABEL or DROP_OFF_POINT")
    if len(lines) > MAX_LINES:
        raise InvalidArgument("lines", f"at most {MAX_LINES} lines")
    return CreateReturn(
        request_id=request.request_id,
        order_id=pos.order_id if pos else request.order_id,
        pos_purchase=pos,
        lines=lines,
        method=codec.METHOD_OF[request.method],
        receiving_location_id=request.receiving_location_id,
        channel=_channel(request.channel, caller),
        pos_sale=(request.pos_receipt.terminal_id, request.pos_receipt.sale_id) if pos else None,
    )


class ReturnsServicer(returns_pb2_grpc.ReturnsServiceServicer):
    def __init__(self, service: ReturnsService) -> None:
        self._service = service

    async def CreateReturn(
        self, request: pb.CreateReturnRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateReturnResponse:
        caller = _caller(context)
        command = _create_command(request, _requested(request.lines, "lines"), caller)
        view, duplicate = await self._service.create_return(command)
        return pb.CreateReturnResponse(rma=_shown(codec.return_pb(view), caller), duplicate=duplicate)

    async def GetReturn(
        self, request: pb.GetReturnRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetReturnResponse:
        view = await self._service.get_return(request.return_id)
        return pb.GetReturnResponse(rma=_shown(codec.return_pb(view), _caller(context)))

    async def ListReturns(
        self, request: pb.ListReturnsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListReturnsResponse:
        views = await self._service.list_returns(request.order_id)
        caller = _caller(context)
        return pb.ListReturnsResponse(returns=[_shown(codec.return_pb(v), caller) for v in views])

    async def ReceiveReturn(
        self, request: pb.ReceiveReturnRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReceiveReturnResponse:
        if len(request.lines) > MAX_LINES:
            raise InvalidArgument("lines", f"at most {MAX_LINES} lines")
        violations = [
            FieldViolation(f"lines[{i}].grade", "required")
            for i, line in enumerate(request.lines)
            if line.grade not in codec.GRADE_OF
        ]
        if violations:
            raise InvalidArgument.of(violations)
        command = ReceiveReturn(
            return_id=request.return_id,
            receipt_id=request.receipt_id,
            location_id=request.location_id,
            lines=tuple(
                m.ReceivedLine(line.line_id, line.quantity, codec.GRADE_OF[line.grade], line.note)
                for line in request.lines
            ),
        )
        view, receipt, duplicate = await self._service.receive_return(command)
        return pb.ReceiveReturnResponse(
            rma=_shown(codec.return_pb(view), _caller(context)),
            receipt=codec.receipt_pb(receipt),
            duplicate=duplicate,
        )

    async def CancelReturn(
        self, request: pb.CancelReturnRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelReturnResponse:
        view = await self._service.cancel_return(request.return_id, request.reason)
        return pb.CancelReturnResponse(rma=_shown(codec.return_pb(view), _caller(context)))

    async def CreateExchange(
        self, request: pb.CreateExchangeRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateExchangeResponse:
        caller = _caller(context)
        if not request.HasField("line"):
            raise InvalidArgument("line", "required")
        if request.fulfilment not in codec.FULFILMENT_OF:
            raise InvalidArgument("fulfilment", "required: SHIP or COLLECT")
        command = CreateExchange(
            request=_create_command(request, _requested([request.line], "line"), caller),
            replacement_sku=request.replacement_sku,
            fulfilment=codec.FULFILMENT_OF[request.fulfilment],
            location_id=request.location_id,
            shipping_address=request.shipping_address.SerializeToString()
            if request.HasField("shipping_address")
            else None,
        )
        view, duplicate = await self._service.create_exchange(command)
        assert view.exchange is not None
        return pb.CreateExchangeResponse(
            exchange=codec.exchange_pb(view.exchange, view.exchange_address),
            rma=_shown(codec.return_pb(view), caller),
            duplicate=duplicate,
        )

    async def HandOverExchange(
        self, request: pb.HandOverExchangeRequest, context: grpc.aio.ServicerContext
    ) -> pb.HandOverExchangeResponse:
        command = HandOverExchange(
            exchange_id=request.exchange_id, location_id=request.location_id, update_id=request.update_id
        )
        exchange, address, duplicate = await self._service.hand_over_exchange(command)
        return pb.HandOverExchangeResponse(exchange=codec.exchange_pb(exchange, address), duplicate=duplicate)

    async def GetOrderParties(
        self, request: pb.GetOrderPartiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderPartiesResponse:
        channel, locations = await self._service.order_parties(request.order_id)
        return pb.GetOrderPartiesResponse(
            order_id=request.order_id,
            channel=codec.CHANNELS.get(channel, common_pb2.CHANNEL_UNSPECIFIED),
            location_ids=locations,
        )

    async def ListParkedTasks(
        self, request: pb.ListParkedTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListParkedTasksResponse:
        limit = request.limit or 100
        parked = await self._service.parked_tasks(limit)
        events = await self._service.parked_events(limit)
        tasks = [codec.parked_task_message(p) for p in parked]
        tasks += [codec.parked_event_message(e) for e in events]
        return pb.ListParkedTasksResponse(tasks=tasks)

    async def RetryParkedTask(
        self, request: pb.RetryParkedTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.RetryParkedTaskResponse:
        state, reason = await self._service.retry_task(request.task_id)
        return pb.RetryParkedTaskResponse(
            task_id=request.task_id, state=codec.TASK_STATES[state], reason=reason
        )
