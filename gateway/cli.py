"""`tutti`: the command-line client of Tutti's public API, for operators and demos.

Every command is one call (or stream) through the gateway, authenticated with an API key.
Readable tables by default; ``--json`` prints the responses as JSON (one object per line for
streams) for scripts. Exit status: 0 on success, 1 when the API refuses the call (the status
and message go to stderr), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from tutti.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tutti.returns.v1 import returns_pb2, returns_pb2_grpc
from tutti.tracking.v1 import tracking_pb2, tracking_pb2_grpc

DEFAULT_GATEWAY = "127.0.0.1:50051"


class Usage(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


# --- output ------------------------------------------------------------------------------------


class Output:
    def __init__(self, as_json: bool, stream: TextIO = sys.stdout) -> None:
        self.as_json = as_json
        self.stream = stream

    def message(self, message: Message, render: Callable[[Message], None]) -> None:
        if self.as_json:
            self.stream.write(json.dumps(to_dict(message)) + "\n")
        else:
            render(message)
        self.stream.flush()

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        cells = [[str(c) for c in headers], *[[_plain(c) for c in row] for row in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        for index, row in enumerate(cells):
            self.line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if index == 0:
                self.line("  ".join("-" * w for w in widths))

    def fields(self, pairs: Iterable[tuple[str, Any]]) -> None:
        pairs = [(k, _plain(v)) for k, v in pairs]
        width = max((len(k) for k, _ in pairs), default=0)
        for key, value in pairs:
            self.line(f"{key.ljust(width)}  {value}")


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _plain(value: Any) -> str:
    if isinstance(value, timestamp_pb2.Timestamp):
        return value.ToDatetime().isoformat(timespec="seconds") + "Z" if value.seconds else "-"
    if isinstance(value, common_pb2.Money):
        return f"{value.amount_minor / 100:.2f} {value.currency}" if value.currency else "-"
    if value is None or value == "":
        return "-"
    return str(value)


def _enum(enum: Any, value: int, prefix: str) -> str:
    try:
        return enum.Name(value).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


def _channel(value: int) -> str:
    return _enum(common_pb2.Channel, value, "CHANNEL_")


# --- arguments -----------------------------------------------------------------------------


def parse_enum(enum: Any, prefix: str, raw: str) -> int:
    name = raw.strip().upper().replace("-", "_")
    if not name.startswith(prefix):
        name = prefix + name
    try:
        value = int(enum.Value(name))
    except ValueError:
        names = enum.keys()  # an EnumTypeWrapper, not a dict
        choices = ", ".join(n.removeprefix(prefix).lower() for n in names if not n.endswith("UNSPECIFIED"))
        raise Usage(f"unknown {prefix.rstrip('_').lower()} {raw!r}; one of: {choices}") from None
    return value


def parse_lines(items: Sequence[str]) -> list[orchestrator_pb2.OrderLineInput]:
    """SKU[:QTY[:PRICE_MINOR:CURRENCY]] → order lines numbered 1, 2, ..."""
    lines = []
    for index, item in enumerate(items, start=1):
        parts = item.split(":")
        try:
            quantity = int(parts[1]) if len(parts) > 1 and parts[1] else 1
        except ValueError:
            raise Usage(f"--line {item!r}: quantity must be an integer (SKU:QTY)") from None
        line = orchestrator_pb2.OrderLineInput(line_id=str(index), sku=parts[0], quantity=quantity)
        if len(parts) >= 4:
            line.unit_price.CopyFrom(common_pb2.Money(currency=parts[3].upper(), amount_minor=int(parts[2])))
        lines.append(line)
    if not lines:
        raise Usage("give at least one --line SKU:QTY")
    return lines


def address_of(args: argparse.Namespace) -> common_pb2.PostalAddress | None:
    if not any((args.postal_code, args.city, args.country, args.lat is not None, args.line1)):
        return None
    address = common_pb2.PostalAddress(
        line1=args.line1 or "",
        postal_code=args.postal_code or "",
        city=args.city or "",
        country=args.country or "",
    )
    if args.lat is not None and args.lon is not None:
        address.point.CopyFrom(common_pb2.GeoPoint(latitude=args.lat, longitude=args.lon))
    return address


def timestamp(raw: str | None) -> timestamp_pb2.Timestamp | None:
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise Usage(f"{raw!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise Usage(f"{raw!r} needs a time zone (e.g. 2025-11-28T09:00:00+01:00)")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


# --- the client ----------------------------------------------------------------------------


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        if args.ca:
            credentials = grpc.ssl_channel_credentials(root_certificates=Path(args.ca).read_bytes())
            self.channel = grpc.secure_channel(args.gateway, credentials)
        else:
            self.channel = grpc.insecure_channel(args.gateway)
        self.metadata = [("authorization", f"Bearer {args.key}")] if args.key else []
        self.timeout = args.timeout
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(self.channel)
        self.orders = orchestrator_pb2_grpc.OrderServiceStub(self.channel)
        self.rules = orchestrator_pb2_grpc.RulesServiceStub(self.channel)
        self.tracking = tracking_pb2_grpc.TrackingServiceStub(self.channel)
        self.returns = returns_pb2_grpc.ReturnsServiceStub(self.channel)

    def call(self, method: Any, request: Message) -> Any:
        return method(request, metadata=self.metadata, timeout=self.timeout)

    def stream(self, method: Any, request: Message) -> Any:
        return method(request, metadata=self.metadata)  # streams run until stopped: no deadline

    def close(self) -> None:
        self.channel.close()


# --- commands ------------------------------------------------------------------------------


def cmd_stock_import(client: Client, out: Output, args: argparse.Namespace) -> None:
    data = Path(args.file).read_bytes()
    # Re-importing the same file is a no-op: the default id is the file's digest.
    import_id = args.import_id or f"csv-{hashlib.sha256(data).hexdigest()[:20]}"
    request = inventory_pb2.ImportStockCsvRequest(import_id=import_id, csv=data)
    as_of = timestamp(args.as_of)
    if as_of is None:
        request.as_of.GetCurrentTime()
    else:
        request.as_of.CopyFrom(as_of)
    reply = client.call(client.inventory.ImportStockCsv, request)
    out.message(
        reply, lambda r: out.fields([("import", import_id), ("applied", r.applied), ("skipped", r.skipped)])
    )


def _render_availability(out: Output, availability: inventory_pb2.SkuAvailability) -> None:
    out.line(
        f"{availability.sku}  channel {_channel(availability.channel)}  "
        f"network available {availability.network_available}"
    )
    out.table(
        ["location", "available", "to promise", "on hand", "reserved", "incoming", "next incoming"],
        [
            (
                loc.location_id,
                loc.available,
                loc.available_to_promise,
                loc.on_hand,
                loc.reserved,
                loc.incoming,
                loc.next_incoming_at,
            )
            for loc in availability.locations
        ],
    )


def cmd_availability_get(client: Client, out: Output, args: argparse.Namespace) -> None:
    request = inventory_pb2.GetAvailabilityRequest(sku=args.sku, location_ids=args.location or [])
    if args.channel:
        request.channel = parse_enum(common_pb2.Channel, "CHANNEL_", args.channel)
    reply = client.call(client.inventory.GetAvailability, request)
    out.message(reply, lambda r: _render_availability(out, r.availability))


def cmd_availability_watch(client: Client, out: Output, args: argparse.Namespace) -> None:
    request = inventory_pb2.WatchAvailabilityRequest(skus=args.skus, location_ids=args.location or [])
    if args.channel:
        request.channel = parse_enum(common_pb2.Channel, "CHANNEL_", args.channel)
    call = client.stream(client.inventory.WatchAvailability, request)

    def render(update: Message) -> None:
        availability = update.availability  # type: ignore[attr-defined]
        kind = "snapshot" if update.snapshot else "update"  # type: ignore[attr-defined]
        for loc in availability.locations:
            out.line(
                f"{kind:<8} {availability.sku:<16} {loc.location_id:<20} available {loc.available:>6}  "
                f"to promise {loc.available_to_promise:>6}"
            )
        if update.snapshot_complete:  # type: ignore[attr-defined]
            out.line("-- snapshot complete; watching for changes (Ctrl-C stops)")

    _follow(call, out, render, args.count)


def _follow(call: Any, out: Output, render: Callable[[Message], None], count: int | None) -> None:
    seen = 0
    try:
        for update in call:
            out.message(update, render)
            seen += 1
            if count is not None and seen >= count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        call.cancel()


def _order_lines(out: Output, order: orchestrator_pb2.Order) -> None:
    out.fields(
        [
            ("order", order.order_id),
            ("status", _enum(orchestrator_pb2.OrderStatus, order.status, "ORDER_STATUS_")),
            ("channel", f"{_channel(order.channel)} ({order.channel_order_id or '-'})"),
            ("customer", order.customer_id),
            ("method", _enum(common_pb2.DeliveryMethod, order.method, "DELIVERY_METHOD_")),
            ("pickup", order.pickup_location_id),
            ("promised", order.promised_at),
            ("delivery price", order.delivery_price),
            ("rules version", order.rules_version),
        ]
    )
    out.line()
    out.table(
        ["line", "sku", "qty", "location", "status", "reason"],
        [
            (
                line.line_id,
                line.sku,
                line.quantity,
                line.location_id,
                _enum(orchestrator_pb2.LineStatus, line.status, "LINE_STATUS_"),
                line.reason,
            )
            for line in order.lines
        ],
    )


def _delivery_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--line",
        action="append",
        default=[],
        metavar="SKU:QTY[:PRICE_MINOR:CUR]",
        help="an order line (repeatable)",
    )
    parser.add_argument("--customer", default="", help="customer id")
    parser.add_argument("--pickup", default="", metavar="LOCATION_ID", help="store for click & collect")
    parser.add_argument("--line1", help="street and number")
    parser.add_argument("--postal-code")
    parser.add_argument("--city")
    parser.add_argument("--country", help="ISO 3166-1 alpha-2, e.g. FR")
    parser.add_argument("--lat", type=float, help="latitude of the delivery address")
    parser.add_argument("--lon", type=float, help="longitude of the delivery address")


def cmd_quote(client: Client, out: Output, args: argparse.Namespace) -> None:
    request = orchestrator_pb2.QuoteDeliveryRequest(
        customer_id=args.customer,
        pickup_location_id=args.pickup,
        lines=parse_lines(args.line),
        methods=[parse_enum(common_pb2.DeliveryMethod, "DELIVERY_METHOD_", m) for m in args.method],
    )
    if (address := address_of(args)) is not None:
        request.address.CopyFrom(address)
    reply = client.call(client.orders.QuoteDelivery, request)

    def render(r: Any) -> None:
        out.fields([("quote", r.quote_id), ("expires", r.expires_at)])
        out.line()
        out.table(
            ["method", "promised", "price", "from", "pickup", "why"],
            [
                (
                    _enum(common_pb2.DeliveryMethod, o.method, "DELIVERY_METHOD_"),
                    o.promised_at,
                    o.price,
                    ",".join(o.location_ids),
                    o.pickup_location_id,
                    o.explanation,
                )
                for o in r.options
            ],
        )
        for missing in r.unavailable:
            out.line(
                f"unavailable: {_enum(common_pb2.DeliveryMethod, missing.method, 'DELIVERY_METHOD_')}: "
                f"{missing.reason}"
            )

    out.message(reply, render)


def cmd_order_place(client: Client, out: Output, args: argparse.Namespace) -> None:
    if not args.customer:
        raise Usage("order place needs --customer")
    request = orchestrator_pb2.PlaceOrderRequest(
        channel_order_id=args.channel_order_id or f"cli-{os.urandom(6).hex()}",
        customer_id=args.customer,
        method=parse_enum(common_pb2.DeliveryMethod, "DELIVERY_METHOD_", args.method),
        pickup_location_id=args.pickup,
        lines=parse_lines(args.line),
        quote_id=args.quote or "",
    )
    if (address := address_of(args)) is not None:
        request.address.CopyFrom(address)
    reply = client.call(client.orders.PlaceOrder, request)
    out.message(
        reply, lambda r: (_order_lines(out, r.order), out.line("(already placed)") if r.duplicate else None)
    )


def cmd_order_get(client: Client, out: Output, args: argparse.Namespace) -> None:
    reply = client.call(client.orders.GetOrder, orchestrator_pb2.GetOrderRequest(order_id=args.order_id))
    out.message(reply, lambda r: _order_lines(out, r.order))


def cmd_order_cancel(client: Client, out: Output, args: argparse.Namespace) -> None:
    request = orchestrator_pb2.CancelOrderRequest(
        order_id=args.order_id, line_ids=args.line or [], reason=args.reason or ""
    )
    reply = client.call(client.orders.CancelOrder, request)
    out.message(reply, lambda r: _order_lines(out, r.order))


def cmd_order_list(client: Client, out: Output, args: argparse.Namespace) -> None:
    request = orchestrator_pb2.ListOrdersRequest(
        customer_id=args.customer, page_size=args.page_size, page_token=args.page_token or ""
    )
    reply = client.call(client.orders.ListOrders, request)

    def render(r: Any) -> None:
        out.table(
            ["order", "status", "channel", "method", "lines", "promised", "created"],
            [
                (
                    o.order_id,
                    _enum(orchestrator_pb2.OrderStatus, o.status, "ORDER_STATUS_"),
                    _channel(o.channel),
                    _enum(common_pb2.DeliveryMethod, o.method, "DELIVERY_METHOD_"),
                    len(o.lines),
                    o.promised_at,
                    o.created_at,
                )
                for o in r.orders
            ],
        )
        if r.next_page_token:
            out.line(f"more: --page-token {r.next_page_token}")

    out.message(reply, render)


def cmd_order_watch(client: Client, out: Output, args: argparse.Namespace) -> None:
    call = client.stream(client.orders.WatchOrder, orchestrator_pb2.WatchOrderRequest(order_id=args.order_id))

    def render(update: Any) -> None:
        order = update.order
        lines = ", ".join(
            f"{line.sku} x{line.quantity}@{line.location_id or '?'} "
            f"{_enum(orchestrator_pb2.LineStatus, line.status, 'LINE_STATUS_')}"
            for line in order.lines
        )
        out.line(
            f"{_plain(order.updated_at)}  {order.order_id}  "
            f"{_enum(orchestrator_pb2.OrderStatus, order.status, 'ORDER_STATUS_')}  {lines}"
        )

    _follow(call, out, render, args.count)


def cmd_timeline(client: Client, out: Output, args: argparse.Namespace) -> None:
    reply = client.call(
        client.tracking.GetOrderTimeline, tracking_pb2.GetOrderTimelineRequest(order_id=args.order_id)
    )

    def render(r: Any) -> None:
        order = r.order
        out.line(
            f"order {order.order_id}  {order.status or '-'}  channel {_channel(order.channel)}  "
            f"customer {order.customer_id or '-'}  {order.entry_count} steps"
        )
        out.line()
        out.table(
            ["when", "step", "source", "locations", "explanation"],
            [(e.occurred_at, e.step, e.source, ",".join(e.location_ids), e.explanation) for e in r.entries],
        )

    out.message(reply, render)


def _percent(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def _duration(value: Any) -> str:
    seconds = value.seconds + value.nanos / 1e9
    if not seconds:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}" if hours else f"{minutes}m{secs:02d}s"


def cmd_kpis(client: Client, out: Output, args: argparse.Namespace) -> None:
    """The dashboard's figures per channel; with --every, refreshed in place until Ctrl-C."""
    request = tracking_pb2.GetKpisRequest(
        start_time=timestamp(args.since),
        end_time=timestamp(args.until),
        channel=parse_enum(common_pb2.Channel, "CHANNEL_", args.channel) if args.channel else 0,
    )

    def render(r: Any) -> None:
        if args.every and out.stream.isatty():
            out.stream.write("\x1b[H\x1b[2J")  # redraw in place, like top
        out.line(f"KPIs {_plain(r.start_time)} → {_plain(r.end_time)}")
        out.line()
        rows = []
        for k in [*r.channels, r.total]:
            rows.append(
                (
                    "all channels" if k.channel_name == "*"
                    else _channel(k.channel) if k.channel
                    else (k.channel_name or "unknown"),
                    k.orders_placed,
                    k.orders_cancelled,
                    _percent(k.refusal_rate),
                    k.orders_prepared,
                    _duration(k.average_preparation_time),
                    _percent(k.on_time_rate) if k.orders_on_time + k.orders_late else "-",
                    k.orders_returned,
                    ", ".join(_plain(m) for m in k.average_cost_per_order) or "-",
                )
            )
        out.table(
            ["channel", "placed", "cancelled", "stock-outs", "prepared", "avg prep", "on time",
             "returned", "cost/order"],
            rows,
        )

    shown = 0
    try:
        while True:
            out.message(client.call(client.tracking.GetKpis, request), render)
            shown += 1
            if not args.every or (args.count is not None and shown >= args.count):
                return
            time.sleep(args.every)
    except KeyboardInterrupt:
        pass


def _rules_document(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise Usage(f"cannot read {path}: {exc.strerror}") from None


def cmd_rules_validate(client: Client, out: Output, args: argparse.Namespace) -> None:
    reply = client.call(
        client.rules.ValidateRules, orchestrator_pb2.ValidateRulesRequest(document=_rules_document(args.file))
    )

    def render(r: Any) -> None:
        out.line("valid" if r.valid else "INVALID")
        for violation in r.violations:
            out.line(f"  error   {violation.field}: {violation.description}")
        for warning in r.warnings:
            out.line(f"  warning {warning}")

    out.message(reply, render)
    if not reply.valid:
        raise SystemExit(1)


def cmd_rules_simulate(client: Client, out: Output, args: argparse.Namespace) -> None:
    request = orchestrator_pb2.SimulateRulesRequest(
        document=_rules_document(args.file), order_count=args.orders
    )
    reply = client.call(client.rules.SimulateRules, request)

    def render(r: Any) -> None:
        names = [
            "orders",
            "sourced",
            "unsourced",
            "split_orders",
            "shipments",
            "shipping_cost",
            "distance_km",
            "late",
            "fallbacks",
        ]
        out.table(
            ["", f"live (v{r.live_version})", "draft"],
            [(n.replace("_", " "), _metric(getattr(r.live, n)), _metric(getattr(r.draft, n))) for n in names],
        )
        out.line(f"\n{r.changed_orders} orders sourced differently")
        for line in r.summary:
            out.line(f"  {line}")

    out.message(reply, render)


def _metric(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else _plain(value)


def cmd_tasks_list(client: Client, out: Output, args: argparse.Namespace) -> None:
    """Parked tasks of every service that owns background tasks (returns, orchestrator)."""
    returns = _parked_of(
        "returns",
        client,
        client.returns.ListParkedTasks,
        returns_pb2.ListParkedTasksRequest(limit=args.limit),
        returns_pb2.ListParkedTasksResponse(),
    )
    orders = _parked_of(
        "orchestrator",
        client,
        client.orders.ListParkedTasks,
        orchestrator_pb2.ListParkedTasksRequest(limit=args.limit),
        orchestrator_pb2.ListParkedTasksResponse(),
    )
    if out.as_json:
        for t in returns.tasks:
            out.line(json.dumps({"service": "returns", **to_dict(t)}))
        for t in orders.tasks:
            out.line(json.dumps({"service": "orchestrator", **to_dict(t)}))
        return
    rows = [
        ("returns", t.task_id, t.kind, f"{t.return_id} {t.quantity} x {t.sku}", *_where(t))
        for t in returns.tasks
    ]
    rows += [("orchestrator", t.task_id, t.kind, t.order_id, *_where(t)) for t in orders.tasks]
    if not rows:
        out.line("no parked tasks")
        return
    out.table(["service", "task", "kind", "what", "location", "attempts", "parked at", "reason"], rows)


def _parked_of(service: str, client: Client, method: Any, request: Message, empty: Message) -> Any:
    """One service's parked tasks; a service that cannot answer is named on stderr and the
    others are still listed (a refusal of the caller, such as PERMISSION_DENIED, stops)."""
    try:
        return client.call(method, request)
    except grpc.RpcError as error:
        code = error.code()  # type: ignore[attr-defined]
        if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
            raise
        print(f"tutti: {service} did not answer ({code.name}); its tasks are not shown", file=sys.stderr)
        return empty


def _where(t: Any) -> tuple[Any, ...]:
    return (t.location_id, t.attempts, t.parked_at, t.reason)


def cmd_tasks_retry(client: Client, out: Output, args: argparse.Namespace) -> None:
    """Ask the service owning the task: the orchestrator's ids start with its kinds; an
    event's ("outbox:<id>") with --service (each service has its own outbox)."""
    if args.task_id.startswith("accept_timeout:") or args.service == "orchestrator":
        reply = client.call(
            client.orders.RetryParkedTask, orchestrator_pb2.RetryParkedTaskRequest(task_id=args.task_id)
        )
        state = _enum(orchestrator_pb2.TaskState, reply.state, "TASK_STATE_")
    else:
        request = returns_pb2.RetryParkedTaskRequest(task_id=args.task_id)
        reply = client.call(client.returns.RetryParkedTask, request)
        state = _enum(returns_pb2.TaskState, reply.state, "TASK_STATE_")
    out.message(
        reply, lambda r: out.fields([("task", r.task_id), ("state", state), ("reason", r.reason or "-")])
    )


def cmd_rules_publish(client: Client, out: Output, args: argparse.Namespace) -> None:
    draft = client.call(
        client.rules.CreateDraftRules,
        orchestrator_pb2.CreateDraftRulesRequest(
            document=_rules_document(args.file),
            author=args.author or os.environ.get("USER", "tutti-cli"),
            comment=args.comment or "",
            # Each run stores its own draft; a script that retries a run passes the same id.
            request_id=args.request_id or f"cli-{uuid.uuid4().hex}",
        ),
    )
    reply = client.call(
        client.rules.PublishRules, orchestrator_pb2.PublishRulesRequest(version=draft.version.version)
    )

    def render(r: Any) -> None:
        for warning in draft.warnings:
            out.line(f"warning: {warning}")
        out.fields(
            [
                ("published version", r.version.version),
                ("name", r.version.name),
                (
                    "status",
                    _enum(orchestrator_pb2.RuleVersionStatus, r.version.status, "RULE_VERSION_STATUS_"),
                ),
                ("published at", r.version.published_at),
            ]
        )

    out.message(reply, render)


# --- parser and entrypoint ----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tutti",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--gateway",
        default=os.environ.get("TUTTI_GATEWAY", DEFAULT_GATEWAY),
        help="gateway address host:port (env TUTTI_GATEWAY; default %(default)s)",
    )
    parser.add_argument(
        "--key", default=os.environ.get("TUTTI_API_KEY", ""), help="API key (env TUTTI_API_KEY)"
    )
    parser.add_argument(
        "--ca",
        default=os.environ.get("TUTTI_GATEWAY_CA", ""),
        help="PEM CA certificate: connect with TLS (env TUTTI_GATEWAY_CA)",
    )
    parser.add_argument("--timeout", type=float, default=15.0, help="deadline of each call in seconds")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per line for streams)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stock = commands.add_parser("stock", help="stock sync").add_subparsers(dest="action", required=True)
    p = stock.add_parser(
        "import", help="import counted stock from a CSV (sku,location_id,on_hand[,safety_stock])"
    )
    p.add_argument("file")
    p.add_argument("--import-id", help="idempotency key (default: derived from the file's content)")
    p.add_argument("--as-of", help="when the stock was counted, ISO 8601 with zone (default: now)")
    p.set_defaults(run=cmd_stock_import)

    availability = commands.add_parser("availability", help="stock available to sell").add_subparsers(
        dest="action", required=True
    )
    p = availability.add_parser("get", help="availability of one SKU per location")
    p.add_argument("sku")
    p.add_argument("--location", action="append", help="only this location (repeatable)")
    p.add_argument("--channel", help="channel whose buffers apply (channel keys: their own)")
    p.set_defaults(run=cmd_availability_get)
    p = availability.add_parser("watch", help="follow availability changes of SKUs")
    p.add_argument("skus", nargs="+", metavar="SKU")
    p.add_argument("--location", action="append", help="only this location (repeatable)")
    p.add_argument("--channel", help="channel whose buffers apply")
    p.add_argument("--count", type=int, help="stop after this many messages")
    p.set_defaults(run=cmd_availability_watch)

    p = commands.add_parser("quote", help="delivery options and promises for a basket")
    _delivery_arguments(p)
    p.add_argument("--method", action="append", default=[], help="only these delivery methods (repeatable)")
    p.set_defaults(run=cmd_quote)

    order = commands.add_parser("order", help="orders").add_subparsers(dest="action", required=True)
    p = order.add_parser("place", help="place an order")
    _delivery_arguments(p)
    p.add_argument(
        "--method",
        default="home_standard",
        help="delivery method: home_standard, home_express, click_and_collect, ship_from_store, "
        "ship_to_store (default %(default)s)",
    )
    p.add_argument(
        "--channel-order-id", help="the channel's own order id; the idempotency key (default: random)"
    )
    p.add_argument("--quote", help="quote id from `tutti quote` to keep its promise")
    p.set_defaults(run=cmd_order_place)
    p = order.add_parser("get", help="show an order")
    p.add_argument("order_id")
    p.set_defaults(run=cmd_order_get)
    p = order.add_parser("cancel", help="cancel an order (or some lines)")
    p.add_argument("order_id")
    p.add_argument("--line", action="append", help="only this line id (repeatable)")
    p.add_argument("--reason")
    p.set_defaults(run=cmd_order_cancel)
    p = order.add_parser("list", help="a customer's orders")
    p.add_argument("--customer", required=True)
    p.add_argument("--page-size", type=int, default=20)
    p.add_argument("--page-token")
    p.set_defaults(run=cmd_order_list)
    p = order.add_parser("watch", help="follow an order's changes")
    p.add_argument("order_id")
    p.add_argument("--count", type=int, help="stop after this many messages")
    p.set_defaults(run=cmd_order_watch)

    p = commands.add_parser("timeline", help="the timestamped trail of an order")
    p.add_argument("order_id")
    p.set_defaults(run=cmd_timeline)

    p = commands.add_parser(
        "kpis", help="live figures per channel: orders, stock-outs, preparation, on time, cost (admin key)"
    )
    p.add_argument("--channel", help="only this channel (web, app, marketplace, store, call-centre)")
    p.add_argument("--since", help="start of the window, ISO 8601 with a zone (default: 24 h ago)")
    p.add_argument("--until", help="end of the window, ISO 8601 with a zone (default: now)")
    p.add_argument("--every", type=float, help="refresh every this many seconds until Ctrl-C")
    p.add_argument("--count", type=int, help="with --every: stop after this many refreshes")
    p.set_defaults(run=cmd_kpis)

    rules = commands.add_parser("rules", help="sourcing rules (admin key)").add_subparsers(
        dest="action", required=True
    )
    p = rules.add_parser("validate", help="check a rules document")
    p.add_argument("file")
    p.set_defaults(run=cmd_rules_validate)
    p = rules.add_parser("simulate", help="replay recent orders with a rules document, compared with live")
    p.add_argument("file")
    p.add_argument("--orders", type=int, default=500, help="how many recent orders to replay")
    p.set_defaults(run=cmd_rules_simulate)
    p = rules.add_parser("publish", help="store a rules document as a new version and make it live")
    p.add_argument("file")
    p.add_argument("--comment")
    p.add_argument("--author")
    p.add_argument("--request-id", help="idempotency key: a retry with the same id publishes the same draft")
    p.set_defaults(run=cmd_rules_publish)

    tasks = commands.add_parser(
        "tasks", help="background tasks refused for good, parked until retried (admin key)"
    ).add_subparsers(dest="action", required=True)
    p = tasks.add_parser("list", help="parked tasks, oldest first, with the reason")
    p.add_argument("--limit", type=int, default=100, help="at most this many (1..1000)")
    p.set_defaults(run=cmd_tasks_list)
    p = tasks.add_parser("retry", help="retry a parked task now, once its cause is fixed")
    p.add_argument("task_id")
    p.add_argument(
        "--service",
        choices=("returns", "orchestrator"),
        default="returns",
        help="whose task: needed for parked events (outbox:<id>), which both services have",
    )
    p.set_defaults(run=cmd_tasks_retry)
    return parser


def describe_error(error: grpc.RpcError) -> Iterator[str]:
    code = error.code()  # type: ignore[attr-defined]
    message = error.details() or ""  # type: ignore[attr-defined]
    yield f"error: {code.name}: {message}"
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key != "grpc-status-details-bin":
            continue
        for detail in status_pb2.Status.FromString(value).details:
            bad = error_details_pb2.BadRequest()
            retry = error_details_pb2.RetryInfo()
            failure = error_details_pb2.PreconditionFailure()
            if detail.Unpack(bad):
                for violation in bad.field_violations:
                    line = violation.description
                    if violation.field:
                        line = f"{violation.field}: {line}"
                    if line not in message:
                        yield f"  {line}"
            elif detail.Unpack(retry):
                delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
                yield f"  retry after {delay:.1f}s"
            elif detail.Unpack(failure):
                for item in failure.violations:
                    yield f"  {item.subject}: {item.description}" if item.subject else f"  {item.description}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(args.json)
    client = Client(args)
    try:
        args.run(client, out, args)
    except Usage as exc:
        print(f"tutti: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as error:
        for line in describe_error(error):
            print(line, file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Piped into `head` and the reader has gone: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"tutti: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
