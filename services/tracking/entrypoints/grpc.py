"""TrackingService servicer: request → service call → response. No SQL, no business rule."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from tutti.common.v1 import common_pb2
from tutti.tracking.v1 import tracking_pb2, tracking_pb2_grpc

from runtime.errors import InvalidArgument
from services.tracking.domain import queries
from services.tracking.domain.model import TOTAL, ChannelReport, OrderFacts, TimelineEntry
from services.tracking.service import TrackingService


def _ts(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


def _from_ts(ts: timestamp_pb2.Timestamp, present: bool, field: str) -> datetime | None:
    if not present:
        return None
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "is not a valid timestamp") from None


def _struct(data: Mapping[str, object]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out


def _channel_enum(name: str | None) -> common_pb2.Channel.ValueType:
    if name and name in common_pb2.Channel.keys():  # noqa: SIM118 (an EnumTypeWrapper)
        return common_pb2.Channel.Value(name)
    return common_pb2.CHANNEL_UNSPECIFIED


def _channel_name(value: common_pb2.Channel.ValueType) -> str | None:
    if value == common_pb2.CHANNEL_UNSPECIFIED:
        return None
    if value not in common_pb2.Channel.values():
        raise InvalidArgument("channel", f"unknown channel {value}")
    return common_pb2.Channel.Name(value)


def entry_message(entry: TimelineEntry) -> tracking_pb2.TimelineEntry:
    return tracking_pb2.TimelineEntry(
        event_id=entry.event_id,
        order_id=entry.order_id,
        step=entry.step,
        type=entry.type,
        occurred_at=_ts(entry.occurred_at),
        source=entry.source,
        sequence=max(entry.sequence, 0),
        details=_struct(entry.details),
        received_at=_ts(entry.received_at),
        explanation=entry.explanation,
        location_ids=list(entry.location_ids),
        return_id=entry.return_id or "",
        position=entry.position,
    )


def summary_message(facts: OrderFacts) -> tracking_pb2.OrderSummary:
    return tracking_pb2.OrderSummary(
        order_id=facts.order_id,
        customer_id=facts.customer_id or "",
        channel=_channel_enum(facts.channel),
        channel_name=facts.channel or "",
        location_ids=list(facts.location_ids),
        status=facts.status or "",
        placed_at=_ts(facts.placed_at),
        last_event_at=_ts(facts.last_event_at),
        entry_count=facts.entry_count,
    )


def _duration(delta: timedelta) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromTimedelta(delta)
    return out


def kpis_message(report: ChannelReport) -> tracking_pb2.ChannelKpis:
    return tracking_pb2.ChannelKpis(
        channel=_channel_enum(report.channel_name if report.channel_name != TOTAL else None),
        channel_name=report.channel_name,
        orders_placed=report.orders_placed,
        orders_cancelled=report.orders_cancelled,
        cancellation_rate=report.cancellation_rate,
        orders_refused=report.orders_refused,
        refusal_rate=report.refusal_rate,
        orders_prepared=report.orders_prepared,
        average_preparation_time=_duration(report.average_preparation),
        orders_on_time=report.orders_on_time,
        orders_late=report.orders_late,
        on_time_rate=report.on_time_rate,
        orders_returned=report.orders_returned,
        average_cost_per_order=[
            common_pb2.Money(currency=cur, amount_minor=amount)
            for cur, amount in report.average_costs().items()
        ],
    )


class TrackingServicer(tracking_pb2_grpc.TrackingServiceServicer):
    def __init__(self, service: TrackingService) -> None:
        self._service = service

    async def GetOrderTimeline(
        self, request: tracking_pb2.GetOrderTimelineRequest, context: grpc.aio.ServicerContext
    ) -> tracking_pb2.GetOrderTimelineResponse:
        facts, entries = await self._service.get_timeline(request.order_id)
        return tracking_pb2.GetOrderTimelineResponse(
            order=summary_message(facts), entries=[entry_message(e) for e in entries]
        )

    async def WatchOrderTimeline(
        self, request: tracking_pb2.WatchOrderTimelineRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tracking_pb2.WatchOrderTimelineResponse]:
        async for entry, existing in self._service.watch_timeline(request.order_id):
            yield tracking_pb2.WatchOrderTimelineResponse(entry=entry_message(entry), existing=existing)

    async def SearchOrders(
        self, request: tracking_pb2.SearchOrdersRequest, context: grpc.aio.ServicerContext
    ) -> tracking_pb2.SearchOrdersResponse:
        query = queries.search_query(
            customer_id=request.customer_id,
            location_id=request.location_id,
            channel=_channel_name(request.channel),
            status=request.status,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        orders, token = await self._service.search_orders(query)
        return tracking_pb2.SearchOrdersResponse(
            orders=[summary_message(o) for o in orders], next_page_token=token
        )

    async def GetKpis(
        self, request: tracking_pb2.GetKpisRequest, context: grpc.aio.ServicerContext
    ) -> tracking_pb2.GetKpisResponse:
        start, end, channels, total = await self._service.get_kpis(
            _from_ts(request.start_time, request.HasField("start_time"), "start_time"),
            _from_ts(request.end_time, request.HasField("end_time"), "end_time"),
            _channel_name(request.channel),
        )
        return tracking_pb2.GetKpisResponse(
            start_time=_ts(start), end_time=_ts(end), channels=_kpis(channels), total=kpis_message(total)
        )


def _kpis(reports: Iterable[ChannelReport]) -> list[tracking_pb2.ChannelKpis]:
    return [kpis_message(r) for r in reports]
