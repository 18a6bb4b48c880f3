"""gRPC servicers: request -> command -> service -> response. No SQL and no business rule here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import grpc
from tutti.orchestrator.v1 import orchestrator_pb2 as pb
from tutti.orchestrator.v1 import orchestrator_pb2_grpc

from runtime.errors import InvalidArgument
from services.orchestrator import messages
from services.orchestrator.adapters.enums import channel_name, method_name, to_name, to_value
from services.orchestrator.domain.orders import Order, PlaceOrder, QuoteDelivery, UpdateFulfilment
from services.orchestrator.domain.simulation import Outcome
from services.orchestrator.service import OrderService, RulesBook


class OrderServicer(orchestrator_pb2_grpc.OrderServiceServicer):
    def __init__(self, service: OrderService) -> None:
        self._service = service

    def _order(self, order: Order) -> pb.Order:
        return messages.order_to_proto(order, self._service.accept_timeout)

    async def QuoteDelivery(
        self, request: pb.QuoteDeliveryRequest, context: grpc.aio.ServicerContext
    ) -> pb.QuoteDeliveryResponse:
        quote = await self._service.quote(
            QuoteDelivery(
                channel=channel_name(request.channel),
                customer_id=request.customer_id,
                address=messages.address_from_proto(request.address),
                pickup_location_id=request.pickup_location_id or None,
                lines=messages.lines_from_proto(request.lines),
                methods=tuple(m for m in (method_name(v) for v in request.methods) if m),
            )
        )
        return pb.QuoteDeliveryResponse(
            quote_id=quote.quote_id,
            expires_at=messages.ts(quote.expires_at),
            options=[
                pb.DeliveryOption(
                    method=messages.method_value(o.method),
                    location_ids=o.location_ids,
                    promised_at=messages.ts(o.promised_at),
                    price=messages.money(o.price_minor, o.currency),
                    pickup_location_id=o.pickup_location_id or "",
                    explanation=o.explanation,
                )
                for o in quote.options
            ],
            unavailable=[
                pb.UnavailableMethod(method=messages.method_value(m), reason=r) for m, r in quote.unavailable
            ],
        )

    async def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.PlaceOrderResponse:
        order, duplicate = await self._service.place(
            PlaceOrder(
                channel=channel_name(request.channel),
                channel_order_id=request.channel_order_id,
                customer_id=request.customer_id,
                method=method_name(request.method),
                address=messages.address_from_proto(request.address),
                pickup_location_id=request.pickup_location_id or None,
                lines=messages.lines_from_proto(request.lines),
                quote_id=request.quote_id or None,
            )
        )
        return pb.PlaceOrderResponse(order=self._order(order), duplicate=duplicate)

    async def GetOrder(
        self, request: pb.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderResponse:
        return pb.GetOrderResponse(order=self._order(await self._service.get(request.order_id)))

    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOrdersResponse:
        orders, token = await self._service.list(
            request.customer_id,
            request.page_size,
            request.page_token,
            channel=channel_name(request.channel) if request.channel else "",
            channel_order_id=request.channel_order_id,
        )
        return pb.ListOrdersResponse(
            orders=[self._order(o) for o in orders], next_page_token=token
        )

    async def CancelOrder(
        self, request: pb.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelOrderResponse:
        order = await self._service.cancel(request.order_id, list(request.line_ids), request.reason)
        return pb.CancelOrderResponse(order=self._order(order))

    async def UpdateFulfilment(
        self, request: pb.UpdateFulfilmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateFulfilmentResponse:
        result = await self._service.update_fulfilment(
            UpdateFulfilment(
                order_id=request.order_id,
                location_id=request.location_id,
                event=to_name(pb.FulfilmentEvent, request.event, "FULFILMENT_EVENT_"),
                line_ids=tuple(request.line_ids),
                reason=request.reason,
                update_id=request.update_id,
            )
        )
        return pb.UpdateFulfilmentResponse(
            order=self._order(result.order),
            reallocated_line_ids=result.reallocated,
            cancelled_line_ids=result.cancelled,
        )

    async def ReportLocationOffline(
        self, request: pb.ReportLocationOfflineRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportLocationOfflineResponse:
        moved, failed = await self._service.location_offline(request.location_id, request.reason)
        return pb.ReportLocationOfflineResponse(reallocated_order_ids=moved, failed_order_ids=failed)

    async def WatchOrder(
        self, request: pb.WatchOrderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchOrderResponse]:
        async for order in self._service.watch(request.order_id):
            yield pb.WatchOrderResponse(order=self._order(order))

    async def GetSourcingDecision(
        self, request: pb.GetSourcingDecisionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSourcingDecisionResponse:
        order, rows = await self._service.decisions(request.order_id)
        return pb.GetSourcingDecisionResponse(
            decisions=[messages.decision_to_proto(r, order.currency) for r in rows]
        )

    async def ListParkedTasks(
        self, request: pb.ListParkedTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListParkedTasksResponse:
        limit = request.limit or 100
        rows = await self._service.parked_tasks(limit)
        events = await self._service.parked_events(limit)
        return pb.ListParkedTasksResponse(
            tasks=[
                pb.ParkedTask(
                    task_id=f"outbox:{e['id']}",
                    kind="relay",
                    order_id=e["key"],
                    reason=f"{e['topic']}: {e['parked_reason']}",
                    attempts=1,
                    first_failed_at=messages.ts(e["parked_at"]),
                    parked_at=messages.ts(e["parked_at"]),
                )
                for e in events
            ]
            + [
                pb.ParkedTask(
                    task_id=f"{r['kind']}:{r['key']}",
                    kind=r["kind"],
                    order_id=r["order_id"],
                    location_id=r["location_id"],
                    reason=r["last_error"],
                    attempts=r["attempts"],
                    first_failed_at=messages.ts(r["first_failed_at"]),
                    parked_at=messages.ts(r["parked_at"]),
                )
                for r in rows
            ]
        )

    async def RetryParkedTask(
        self, request: pb.RetryParkedTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.RetryParkedTaskResponse:
        state, reason = await self._service.retry_task(request.task_id)
        return pb.RetryParkedTaskResponse(
            task_id=request.task_id,
            state=to_value(pb.TaskState, state, "TASK_STATE_"),
            reason=reason,
        )


def _version(row: asyncpg.Record) -> pb.RuleVersion:
    return pb.RuleVersion(
        version=row["version"],
        status=to_value(pb.RuleVersionStatus, row["status"], "RULE_VERSION_STATUS_"),
        name=row["name"],
        document=row["document"],
        author=row["author"],
        comment=row["comment"],
        created_at=messages.ts(row["created_at"]),
        published_at=messages.ts(row["published_at"]),
    )


def _outcome(o: Outcome, currency: str) -> pb.SimulationOutcome:
    return pb.SimulationOutcome(
        orders=o.orders,
        sourced=o.sourced,
        unsourced=o.unsourced,
        split_orders=o.split_orders,
        shipments=o.shipments,
        shipping_cost=messages.money(o.shipping_cost_minor, currency),
        distance_km=round(o.distance_km, 3),
        late=o.late,
        fallbacks=o.fallbacks,
    )


def _summary(live: Outcome, draft: Outcome, changed: int, currency: str) -> list[str]:
    def delta(a: float, b: float, unit: str = "", digits: int = 0) -> str:
        d = b - a
        return f"{'+' if d >= 0 else ''}{d:.{digits}f}{unit} ({a:.{digits}f} -> {b:.{digits}f})"

    return [
        f"{changed} of {live.orders} orders sourced differently",
        f"split orders: {delta(live.split_orders, draft.split_orders)}",
        f"shipments: {delta(live.shipments, draft.shipments)}",
        "shipping cost: "
        + delta(live.shipping_cost_minor / 100, draft.shipping_cost_minor / 100, " " + currency, 2),
        f"distance: {delta(live.distance_km, draft.distance_km, ' km', 1)}",
        f"late promises: {delta(live.late, draft.late)}",
        f"orders that cannot be sourced: {delta(live.unsourced, draft.unsourced)}",
    ]


class RulesServicer(orchestrator_pb2_grpc.RulesServiceServicer):
    def __init__(self, rules: RulesBook) -> None:
        self._rules = rules

    async def CreateDraftRules(
        self, request: pb.CreateDraftRulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateDraftRulesResponse:
        row, parsed = await self._rules.create_draft(
            request.document, request.author, request.comment, request.request_id
        )
        return pb.CreateDraftRulesResponse(version=_version(row), warnings=list(parsed.warnings))

    async def ValidateRules(
        self, request: pb.ValidateRulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateRulesResponse:
        violations, warnings = await self._rules.validate(request.document, request.version)
        return pb.ValidateRulesResponse(
            valid=not violations,
            violations=[pb.FieldViolation(field=v.field, description=v.description) for v in violations],
            warnings=warnings,
        )

    async def SimulateRules(
        self, request: pb.SimulateRulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.SimulateRulesResponse:
        live_version, draft_version, report, currency = await self._rules.simulate(
            request.version, request.document, request.order_count
        )
        return pb.SimulateRulesResponse(
            live_version=live_version,
            draft_version=draft_version,
            live=_outcome(report.live, currency),
            draft=_outcome(report.draft, currency),
            changed_orders=report.changed,
            load=[
                pb.LocationLoad(location_id=k, live_lines=a, draft_lines=b)
                for k, (a, b) in report.load_delta().items()
            ],
            examples=[
                pb.ChangedOrder(order_id=e.order_id, live=e.live, draft=e.draft) for e in report.examples
            ],
            summary=_summary(report.live, report.draft, report.changed, currency),
        )

    async def PublishRules(
        self, request: pb.PublishRulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishRulesResponse:
        return pb.PublishRulesResponse(version=_version(await self._rules.publish(request.version)))

    async def RollbackRules(
        self, request: pb.RollbackRulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.RollbackRulesResponse:
        return pb.RollbackRulesResponse(version=_version(await self._rules.rollback(request.version)))

    async def GetRules(
        self, request: pb.GetRulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRulesResponse:
        return pb.GetRulesResponse(version=_version(await self._rules.get(request.version)))

    async def ListRuleVersions(
        self, request: pb.ListRuleVersionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRuleVersionsResponse:
        size = request.page_size or 50
        if not 1 <= size <= 200:
            raise InvalidArgument("page_size", f"must be 1..200, got {size}")
        rows = await self._rules.list(size, request.before_version)
        return pb.ListRuleVersionsResponse(versions=[_version(r) for r in rows])
