"""The orchestrator's use cases: quote, place, follow, cancel and re-source orders; manage the
versioned sourcing rules and simulate them.

Stock lives in the inventory service, reached through the ``Inventory`` port. Orders, their
decisions and their events are written to PostgreSQL in one transaction (the outbox relays the
events to Kafka). Calls to inventory that change stock are idempotent by deterministic ids, so a
retried request never reserves, releases or fulfils twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg
import yaml
from google.protobuf.message import Message
from tutti.orchestrator.v1 import events_pb2

from runtime import retry
from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    TuttiError,
    Unavailable,
)
from runtime.kafka import ORDER_EVENTS, build_envelope
from runtime.postgres import enqueue_event
from services.orchestrator import messages
from services.orchestrator.adapters import postgres as pg
from services.orchestrator.domain import codec
from services.orchestrator.domain.lifecycle import (
    FULFILMENT_EVENTS,
    TERMINAL,
    check_cancellable,
    fulfils_reservation,
    next_line_status,
)
from services.orchestrator.domain.model import CHANNELS, METHODS, PICKUP_METHODS, Candidate, LineRequest
from services.orchestrator.domain.orders import (
    DeliveryOption,
    Line,
    LineInput,
    Order,
    PlaceOrder,
    Quote,
    QuoteDelivery,
    UpdateFulfilment,
)
from services.orchestrator.domain.promise import promise_for
from services.orchestrator.domain.rules import RuleSet, parse_rules
from services.orchestrator.domain.simulation import Replay, SimulationReport, simulate
from services.orchestrator.domain.sourcing import Decision, SourcingRequest, source

log = logging.getLogger(__name__)

SOURCE = "orchestrator"
ORDER_CHANNEL = "tutti_orchestrator_orders"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/-")
_NAMESPACE = uuid.UUID("6f1d2c1e-9a53-4f5e-9d3c-7a0c2f3b8e11")
MAX_LINES = 100


# --- the inventory port ---------------------------------------------------------------------


class StockShortage(Exception):
    """A reservation was refused for lack of stock (someone else got there first)."""


ACCEPT_TIMEOUT = "accept_timeout"


def _work_backoff(attempts: int) -> float:
    """Seconds before re-trying background work after ``attempts`` transient failures."""
    return retry.backoff(attempts, base=5.0, cap=600.0)


class UnknownSku(Exception):
    """Inventory does not know a SKU the caller asked for (``index``: its place in the SKUs asked)."""

    def __init__(self, index: int, sku: str) -> None:
        super().__init__(f"unknown SKU {sku}")
        self.index = index
        self.sku = sku


class ReservationConflict(Exception):
    """The reservation id is already used with other lines (an interrupted earlier attempt)."""


class ReservationSpent(Exception):
    """The reservation id was used by an earlier attempt and its stock given back since."""


@dataclass(frozen=True, slots=True)
class ReserveLine:
    sku: str
    location_id: str
    quantity: int


class Inventory(Protocol):
    async def locations(self) -> list[Candidate]: ...

    async def availability(self, skus: Sequence[str], channel: str) -> dict[str, dict[str, int]]: ...

    async def reserve(
        self, reservation_id: str, order_id: str, channel: str, lines: Sequence[ReserveLine]
    ) -> None: ...

    async def release(
        self, reservation_id: str, lines: Sequence[ReserveLine], request_id: str, reason: str
    ) -> None: ...

    async def fulfil(self, reservation_id: str, lines: Sequence[ReserveLine], request_id: str) -> None: ...

    # Takes units out of available stock at a location; False when they are no longer free.
    async def quarantine(self, movement_id: str, line: ReserveLine, reason: str) -> bool: ...

    async def ping(self) -> None: ...


class ParkedEvents(Protocol):
    """The outbox relay's rows Kafka refused for good (runtime.postgres.OutboxRelay)."""

    async def parked(self, limit: int = 100) -> list[Any]: ...

    async def unpark(self, row_id: int) -> bool: ...


# Task ids of parked outbox rows: "outbox:<row id>".
OUTBOX_TASK = "outbox:"


class OrderCounters(Protocol):
    """Business counters (adapters/metrics.py exports them to Prometheus)."""

    def placed(self, channel: str) -> None: ...

    def refused(self, channel: str, reason: str) -> None: ...

    def reallocated(self, trigger: str, resourced: bool) -> None: ...

    def task_parked(self, kind: str) -> None: ...


class NoCounters:
    def placed(self, channel: str) -> None:
        pass

    def refused(self, channel: str, reason: str) -> None:
        pass

    def reallocated(self, trigger: str, resourced: bool) -> None:
        pass

    def task_parked(self, kind: str) -> None:
        pass


# Why a placement was refused, from the error it raised (a closed list: a metric label).
REFUSAL_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (InvalidArgument, "invalid"),
    (AlreadyExists, "conflict"),
    (NotFound, "not_found"),
    (FailedPrecondition, "unsourceable"),
)


@dataclass(frozen=True, slots=True)
class Config:
    accept_timeout_seconds: float = 900.0
    sweep_interval_seconds: float = 30.0
    quote_ttl_seconds: float = 900.0
    locations_cache_seconds: float = 5.0
    # A PlaceOrder still unrecorded this long after it started reserving died on the way (the
    # advisory lock also tells a live one apart); its stock is given back.
    abandoned_placement_seconds: float = 60.0


Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


def order_id_for(channel: str, channel_order_id: str) -> str:
    """Deterministic: a retried PlaceOrder computes the same order id and reservation id."""
    return "o-" + uuid.uuid5(_NAMESPACE, f"{channel}:{channel_order_id}").hex[:24]


def placement_reservation_ids(order_id: str, generation: int) -> tuple[str, str]:
    """The reservation ids one placement may use: the first, and one to re-source with when
    stock moved under it. A later generation (after the sweeper gave an abandoned attempt's
    stock back) gets ids of its own, so it never lands on a spent one."""
    base = order_id if generation == 1 else f"{order_id}.g{generation}"
    return base, f"{base}.2"


def _placement_lock(order_id: str) -> int:
    return int.from_bytes(hashlib.sha256(order_id.encode()).digest()[:8], "big", signed=True)


def _check_id(value: str, field: str, violations: list[FieldViolation], *, required: bool = True) -> None:
    if not value:
        if required:
            violations.append(FieldViolation(field, "is required"))
        return
    if len(value) > 128 or not set(value) <= _ID_CHARS or not value[0].isalnum():
        violations.append(
            FieldViolation(
                field, "must be 1..128 characters of [A-Za-z0-9._:/-], starting with a letter or digit"
            )
        )


def _check_lines(lines: Sequence[LineInput], violations: list[FieldViolation]) -> None:
    if not lines:
        violations.append(FieldViolation("lines", "at least one line is required"))
    if len(lines) > MAX_LINES:
        violations.append(FieldViolation("lines", f"at most {MAX_LINES} lines"))
    seen_ids: set[str] = set()
    seen_skus: set[str] = set()
    for i, li in enumerate(lines):
        _check_id(li.line_id, f"lines[{i}].line_id", violations)
        _check_id(li.sku, f"lines[{i}].sku", violations)
        if not 1 <= li.quantity <= 10_000:
            violations.append(FieldViolation(f"lines[{i}].quantity", f"must be 1..10000, got {li.quantity}"))
        if li.line_id in seen_ids:
            violations.append(FieldViolation(f"lines[{i}].line_id", f"duplicate line id {li.line_id!r}"))
        if li.sku and li.sku in seen_skus:
            violations.append(
                FieldViolation(
                    f"lines[{i}].sku", f"{li.sku} is on another line; put the whole quantity on one line"
                )
            )
        seen_ids.add(li.line_id)
        seen_skus.add(li.sku)


def _reserve_lines(lines: Iterable[Line]) -> list[ReserveLine]:
    return [ReserveLine(li.sku, li.location_id, li.quantity) for li in lines]


def _by_reservation(lines: Iterable[Line]) -> dict[str, list[Line]]:
    out: dict[str, list[Line]] = {}
    for li in lines:
        out.setdefault(li.reservation_id, []).append(li)
    return out


def _start_of_day(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


class _Events:
    """Collects the events of one change, written to the outbox in the change's transaction."""

    def __init__(self, order_id: str, sequence: int) -> None:
        self.order_id = order_id
        self.sequence = sequence
        self.payloads: list[Message] = []

    def add(self, payload: Message) -> None:
        self.payloads.append(payload)

    def status(self, before: Order | None, after: Order) -> None:
        previous = before.status if before is not None else "placed"
        if previous != after.status:
            self.add(
                events_pb2.OrderStatusChanged(
                    order_id=after.order_id,
                    previous_status=messages.order_status_value(previous),
                    status=messages.order_status_value(after.status),
                    location_ids=after.open_location_ids(),
                    customer_id=after.customer_id,
                    channel=messages.channel_value(after.channel),
                )
            )

    async def write(self, conn: asyncpg.Connection, now: datetime) -> None:
        for position, payload in enumerate(self.payloads):
            envelope = build_envelope(
                payload, source=SOURCE, key=self.order_id, occurred_at=now, sequence=self.sequence,
                position=position,
            )
            await enqueue_event(conn, ORDER_EVENTS, envelope)
        await conn.execute("SELECT pg_notify($1, $2)", ORDER_CHANNEL, self.order_id)


# --- rules ----------------------------------------------------------------------------------


def decode_document(text: str, field: str = "document") -> Any:
    if not text.strip():
        raise InvalidArgument(field, "is empty; give the rules as YAML or JSON")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidArgument(field, f"is not valid YAML or JSON{where}: {problem}") from None


def parse_document(text: str) -> RuleSet:
    return parse_rules(decode_document(text))


class RulesBook:
    """Versions of the sourcing rules: drafts, the live version, publications and rollbacks.

    With ``locations`` (the ids inventory knows), publishing rules that name a location by id
    that inventory does not know is refused, INVALID_ARGUMENT naming the field."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        default_document: str,
        clock: Clock = utc_now,
        locations: Callable[[], Awaitable[set[str]]] | None = None,
    ) -> None:
        self._pool = pool
        self._default = default_document
        self._clock = clock
        self._parsed: dict[int, RuleSet] = {}
        self._locations = locations

    async def unknown_locations(self, rules: RuleSet) -> list[FieldViolation]:
        """The fields naming a location inventory does not know (none when not checked)."""
        named = rules.named_locations()
        if self._locations is None or not named:
            return []
        known = await self._locations()
        return [
            FieldViolation(path, f"{location_id!r} is not a location inventory knows")
            for path, location_id in named
            if location_id not in known
        ]

    async def check_live_locations(self) -> list[FieldViolation]:
        """At start: the live rules' fields naming a location inventory does not know, each
        logged as a warning (sourcing simply never meets such a location: an exclusion or a
        priority for it has no effect)."""
        async with self._pool.acquire() as conn:
            version, rules = await self.live(conn)
        unknown = await self.unknown_locations(rules)
        for violation in unknown:
            log.warning(
                "live sourcing rules (version %d): %s: %s", version, violation.field, violation.description
            )
        return unknown

    async def ensure_live(self) -> None:
        """Publish the shipped default rules when no version is live yet (first start)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE rule_versions IN SHARE ROW EXCLUSIVE MODE")
            if await pg.live_version_number(conn) is not None:
                return
            rules = parse_document(self._default)
            row, _ = await pg.insert_rule_version(
                conn, name=rules.name, document=self._default, author="tutti", comment="shipped default rules"
            )
            await pg.make_live(conn, row["version"], "bootstrap", self._clock())

    async def live(self, conn: asyncpg.Connection) -> tuple[int, RuleSet]:
        version = await pg.live_version_number(conn)
        if version is None:
            raise FailedPrecondition("no sourcing rules are live; publish a rules version")
        return version, await self._rules_of(conn, version)

    async def _rules_of(self, conn: asyncpg.Connection, version: int) -> RuleSet:
        if version not in self._parsed:
            row = await pg.get_rule_version(conn, version)
            if row is None:
                raise NotFound(f"rules version {version} not found")
            self._parsed[version] = parse_document(row["document"])
        return self._parsed[version]

    async def create_draft(
        self, document: str, author: str, comment: str, request_id: str = ""
    ) -> tuple[asyncpg.Record, RuleSet]:
        if request_id:
            violations: list[FieldViolation] = []
            _check_id(request_id, "request_id", violations)
            if violations:
                raise InvalidArgument.of(violations)
        rules = parse_document(document)
        async with self._pool.acquire() as conn:
            row, earlier = await pg.insert_rule_version(
                conn, name=rules.name, document=document, author=author, comment=comment,
                request_id=request_id,
            )
        if earlier and row["document"] != document:
            raise AlreadyExists(
                f"request_id {request_id!r} already stored rules version {row['version']}"
                " with another document"
            )
        self._parsed.setdefault(row["version"], rules)
        return row, rules

    async def validate(self, document: str, version: int) -> tuple[list[FieldViolation], list[str]]:
        if not document:
            if not version:
                raise InvalidArgument("document", "give a document or a stored version to validate")
            row = await self.get(version)
            document = row["document"]
        try:
            rules = parse_document(document)
        except InvalidArgument as exc:
            return exc.violations, []
        return [], list(rules.warnings)

    async def get(self, version: int) -> asyncpg.Record:
        async with self._pool.acquire() as conn:
            if version:
                row = await pg.get_rule_version(conn, version)
                if row is None:
                    raise NotFound(f"rules version {version} not found")
                return row
            row = await pg.live_rule_version(conn)
            if row is None:
                raise NotFound("no rules version is live")
            return row

    async def list(self, limit: int, before: int) -> list[asyncpg.Record]:
        async with self._pool.acquire() as conn:
            return await pg.list_rule_versions(conn, limit, before or None)

    async def publish(self, version: int) -> asyncpg.Record:
        if version <= 0:
            raise InvalidArgument("version", "is required")
        # Locations named by id must exist in inventory (asked before taking the lock).
        async with self._pool.acquire() as conn:
            draft = await pg.get_rule_version(conn, version)
        if draft is not None and draft["status"] == "draft":
            unknown = await self.unknown_locations(parse_document(draft["document"]))
            if unknown:
                raise InvalidArgument.of(unknown)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE rule_versions IN SHARE ROW EXCLUSIVE MODE")
            row = await pg.get_rule_version(conn, version)
            if row is None:
                raise NotFound(f"rules version {version} not found")
            if row["status"] == "live":
                return row
            if row["status"] == "retired":
                raise FailedPrecondition(
                    f"rules version {version} was live before; use RollbackRules to go back to it"
                )
            parse_document(row["document"])  # a stored draft is valid, but never publish without checking
            return await pg.make_live(conn, version, "publish", self._clock())

    async def rollback(self, version: int) -> asyncpg.Record:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE rule_versions IN SHARE ROW EXCLUSIVE MODE")
            live = await pg.live_version_number(conn)
            if version:
                row = await pg.get_rule_version(conn, version)
                if row is None:
                    raise NotFound(f"rules version {version} not found")
                if row["status"] == "live":
                    return row
                if row["status"] != "retired":
                    raise FailedPrecondition(f"rules version {version} was never live; publish it instead")
                target = version
            else:
                previous = [v for v in await pg.publication_history(conn) if v != live]
                if not previous:
                    raise FailedPrecondition("no earlier live version to roll back to")
                target = previous[0]
            return await pg.make_live(conn, target, "rollback", self._clock())

    async def simulate(
        self, version: int, document: str, order_count: int
    ) -> tuple[int, int, SimulationReport, str]:
        if not version and not document:
            raise InvalidArgument("version", "give a stored version or a document to simulate")
        count = order_count or 500
        if not 1 <= count <= 10_000:
            raise InvalidArgument("order_count", f"must be 1..10000, got {count}")
        async with self._pool.acquire() as conn:
            live_version, live = await self.live(conn)
            draft = await self._rules_of(conn, version) if version else parse_document(document)
            rows = await pg.recent_placements(conn, count)
        replays = [
            Replay(
                order_id=r["order_id"],
                request=codec.request_from_dict(json.loads(r["request"])),
                candidates=tuple(codec.candidate_from_dict(c) for c in json.loads(r["candidates"])),
                promised_at=r["promised_at"],
            )
            for r in rows
        ]
        # Pure CPU work: keep the event loop responsive for large replays.
        report = await asyncio.to_thread(simulate, replays, live, draft)
        return live_version, version, report, live.costs.currency


# --- watching -------------------------------------------------------------------------------


class OrderWatchHub:
    """One LISTEN connection fanning order-change notifications out to watchers."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._subscribers: dict[str, set[asyncio.Queue[None]]] = {}

    async def _ensure(self) -> None:
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await self._pool.acquire()
                await self._conn.add_listener(ORDER_CHANNEL, self._notified)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        for queue in self._subscribers.get(payload, ()):
            queue.put_nowait(None)

    @contextlib.asynccontextmanager
    async def subscribe(self, order_id: str) -> AsyncIterator[asyncio.Queue[None]]:
        with contextlib.suppress(Exception):
            await self._ensure()  # without notifications watchers still poll
        queue: asyncio.Queue[None] = asyncio.Queue()
        self._subscribers.setdefault(order_id, set()).add(queue)
        try:
            yield queue
        finally:
            subscribers = self._subscribers.get(order_id, set())
            subscribers.discard(queue)
            if not subscribers:
                self._subscribers.pop(order_id, None)

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.remove_listener(ORDER_CHANNEL, self._notified)
            await self._pool.release(self._conn)
            self._conn = None


# --- orders ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FulfilmentResult:
    order: Order
    reallocated: tuple[str, ...] = ()
    cancelled: tuple[str, ...] = ()


@dataclass(slots=True)
class _Sourced:
    version: int
    rules: RuleSet
    request: SourcingRequest
    candidates: list[Candidate]
    decision: Decision
    reservation_id: str


class OrderService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        inventory: Inventory,
        rules: RulesBook,
        config: Config,
        clock: Clock = utc_now,
        counters: OrderCounters | None = None,
        outbox: ParkedEvents | None = None,
    ) -> None:
        self._counters = counters or NoCounters()
        self._outbox = outbox
        self._pool = pool
        self._inventory = inventory
        self._rules = rules
        self._config = config
        self._clock = clock
        self.watchers = OrderWatchHub(pool)
        self._locations: tuple[float, list[Candidate]] | None = None

    # -- inputs of sourcing --

    async def _all_locations(self) -> list[Candidate]:
        cached = self._locations
        if cached is not None and time.monotonic() - cached[0] < self._config.locations_cache_seconds:
            return cached[1]
        locations = await self._inventory.locations()
        self._locations = (time.monotonic(), locations)
        return locations

    async def _candidates(
        self,
        conn: asyncpg.Connection,
        channel: str,
        skus: Sequence[str],
        pickup_location_id: str | None,
        now: datetime,
    ) -> tuple[list[Candidate], Candidate | None]:
        try:
            locations, stock = await asyncio.gather(
                self._all_locations(), self._inventory.availability(skus, channel)
            )
        except UnknownSku as exc:
            # Name the field of the caller's request (lines[i].sku), not inventory's skus[i]:
            # the SKUs are asked in the order of the lines.
            subject = f"lines[{exc.index}].sku" if 0 <= exc.index < len(skus) else "lines"
            raise FailedPrecondition(
                f"{subject}: unknown SKU {exc.sku}", [(subject, f"unknown SKU {exc.sku}")], type_="SKU"
            ) from None
        known = {loc.location_id for loc in locations}
        if any(location_id not in known for location_id in stock) or (
            pickup_location_id and pickup_location_id not in known
        ):
            self._locations = None  # a location newer than the cache
            locations = await self._all_locations()
        open_orders = await pg.open_orders_today(
            conn, _start_of_day(now), [*stock, *([pickup_location_id] if pickup_location_id else [])]
        )
        pickup: Candidate | None = None
        out: list[Candidate] = []
        for loc in locations:
            if loc.location_id == pickup_location_id:
                pickup = loc
            elif loc.location_id not in stock:
                continue  # no stock of these SKUs here: not a candidate worth listing
            out.append(
                dataclasses.replace(
                    loc, stock=stock.get(loc.location_id, {}), open_orders=open_orders.get(loc.location_id, 0)
                )
            )
        if pickup_location_id and pickup is None:
            raise NotFound(f"pickup location {pickup_location_id} not found")
        return out, pickup

    async def _source(
        self,
        conn: asyncpg.Connection,
        *,
        order_id: str,
        channel: str,
        method: str,
        lines: Sequence[LineRequest],
        destination: Any,
        pickup_location_id: str | None,
        promised_by: datetime | None,
        excluded: dict[str, str],
        reservation_ids: Sequence[str],
        now: datetime,
        before_reserving: Callable[[], Awaitable[None]] | None = None,
    ) -> _Sourced:
        """Source and reserve, all or nothing. A reservation refused for a concurrency reason is
        retried once against fresh availability; an orphan reservation of an interrupted
        attempt is released, and a spent one (given back since) skipped, for the next id."""
        version, rules = await self._rules.live(conn)
        last_error = ""
        for reservation_id in reservation_ids:
            candidates, pickup = await self._candidates(
                conn, channel, [li.sku for li in lines], pickup_location_id, now
            )
            if method in PICKUP_METHODS and pickup is not None:
                destination = pickup.point
            request = SourcingRequest(
                channel, method, tuple(lines), now, destination, pickup_location_id, promised_by, excluded
            )
            decision = source(request, candidates, rules)
            sourced = _Sourced(version, rules, request, candidates, decision, reservation_id)
            if not decision.sourced:
                return sourced
            reserve = [
                ReserveLine(li.sku, decision.location_of(li.line_id) or "", li.quantity) for li in lines
            ]
            if before_reserving is not None:
                await before_reserving()
            try:
                await self._inventory.reserve(reservation_id, order_id, channel, reserve)
                return sourced
            except StockShortage as exc:
                last_error = str(exc)
                log.info(
                    "reservation %s refused (%s); re-sourcing against fresh availability", reservation_id, exc
                )
                self._locations = None
            except ReservationConflict:
                await self._inventory.release(reservation_id, [], "", "orphan of an interrupted attempt")
            except ReservationSpent as exc:
                last_error = str(exc)
                log.info("%s; trying the next reservation id", exc)
        raise FailedPrecondition(
            f"stock changed while sourcing the order and it could not be reserved: {last_error}"
        )

    # -- queries --

    async def get(self, order_id: str) -> Order:
        if not order_id:
            raise InvalidArgument("order_id", "is required")
        async with self._pool.acquire() as conn:
            order = await pg.get_order(conn, order_id)
        if order is None:
            raise NotFound(f"order {order_id} not found")
        return order

    @property
    def accept_timeout(self) -> timedelta:
        return timedelta(seconds=self._config.accept_timeout_seconds)

    async def list(
        self,
        customer_id: str,
        page_size: int,
        page_token: str,
        *,
        channel: str = "",
        channel_order_id: str = "",
    ) -> tuple[list[Order], str]:
        if channel_order_id:
            # The order a channel placed under its own id: at most one.
            if not channel:
                raise InvalidArgument("channel", "is required with channel_order_id")
            async with self._pool.acquire() as conn:
                found = await pg.find_by_channel_id(conn, channel, channel_order_id)
            if found is None or (customer_id and found[0].customer_id != customer_id):
                return [], ""
            return [found[0]], ""
        if not customer_id:
            raise InvalidArgument("customer_id", "is required (or channel_order_id with channel)")
        size = page_size or 50
        if not 1 <= size <= 200:
            raise InvalidArgument("page_size", f"must be 1..200, got {size}")
        before = None
        if page_token:
            try:
                stamp, order_id = page_token.split("|", 1)
                before = (datetime.fromisoformat(stamp), order_id)
            except ValueError:
                raise InvalidArgument("page_token", "is not a token from a previous response") from None
        async with self._pool.acquire() as conn:
            orders = await pg.list_orders(conn, customer_id, size + 1, before)
        token = ""
        if len(orders) > size:
            orders = orders[:size]
            token = f"{orders[-1].created_at.isoformat()}|{orders[-1].order_id}"
        return orders, token

    async def decisions(self, order_id: str) -> tuple[Order, list[asyncpg.Record]]:
        order = await self.get(order_id)
        async with self._pool.acquire() as conn:
            return order, await pg.decisions_of(conn, order_id)

    async def watch(self, order_id: str) -> AsyncIterator[Order]:
        async with self.watchers.subscribe(order_id) as changes:
            order = await self.get(order_id)
            yield order
            last = order.version
            while order.status not in TERMINAL:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changes.get(), timeout=5.0)
                order = await self.get(order_id)
                if order.version != last:
                    last = order.version
                    yield order

    # -- quote --

    async def quote(self, cmd: QuoteDelivery) -> Quote:
        violations: list[FieldViolation] = []
        if cmd.channel not in CHANNELS:
            violations.append(FieldViolation("channel", "is required"))
        _check_lines(cmd.lines, violations)
        _check_id(cmd.pickup_location_id or "", "pickup_location_id", violations, required=False)
        if violations:
            raise InvalidArgument.of(violations)
        now = self._clock()
        methods = cmd.methods or METHODS
        lines = tuple(LineRequest(li.line_id, li.sku, li.quantity) for li in cmd.lines)
        async with self._pool.acquire() as conn:
            version, rules = await self._rules.live(conn)
            candidates, pickup = await self._candidates(
                conn, cmd.channel, [li.sku for li in lines], cmd.pickup_location_id, now
            )
            options: list[DeliveryOption] = []
            unavailable: list[tuple[str, str]] = []
            for method in methods:
                if method in PICKUP_METHODS and pickup is None:
                    unavailable.append((method, "needs a pickup store (pickup_location_id)"))
                    continue
                destination = (
                    pickup.point if method in PICKUP_METHODS and pickup is not None else cmd.address.point
                )
                request = SourcingRequest(
                    cmd.channel, method, lines, now, destination, cmd.pickup_location_id
                )
                decision = source(request, candidates, rules)
                if not decision.sourced or decision.promised_at is None:
                    unavailable.append((method, decision.explanation))
                    continue
                options.append(
                    DeliveryOption(
                        method=method,
                        location_ids=tuple(s.location_id for s in decision.shipments),
                        promised_at=promise_for(method, decision.promised_at),
                        price_minor=rules.costs.price_minor.get(method, 0),
                        currency=rules.costs.currency,
                        pickup_location_id=cmd.pickup_location_id if method in PICKUP_METHODS else None,
                        explanation=decision.explanation,
                    )
                )
            options.sort(key=lambda o: (o.promised_at, o.price_minor))
            quote = Quote(
                "q-" + uuid.uuid4().hex,
                now + timedelta(seconds=self._config.quote_ttl_seconds),
                tuple(options),
                tuple(unavailable),
            )
            await pg.insert_quote(
                conn,
                quote.quote_id,
                cmd.channel,
                {
                    "lines": sorted([li.sku, li.quantity] for li in lines),
                    "pickup": cmd.pickup_location_id,
                    "rules_version": version,
                },
                [
                    {
                        "method": o.method,
                        "promised_at": o.promised_at.isoformat(),
                        "price_minor": o.price_minor,
                        "currency": o.currency,
                        "location_ids": list(o.location_ids),
                    }
                    for o in options
                ],
                now,
                quote.expires_at,
            )
        return quote

    async def _kept_quote(
        self, conn: asyncpg.Connection, cmd: PlaceOrder, now: datetime
    ) -> tuple[datetime, int]:
        assert cmd.quote_id
        row = await pg.get_quote(conn, cmd.quote_id)
        if row is None:
            raise NotFound(f"quote {cmd.quote_id} not found")
        if row["expires_at"] <= now:
            raise FailedPrecondition(
                f"quote {cmd.quote_id} expired at {row['expires_at']:%Y-%m-%d %H:%M:%S} UTC; "
                "ask for a new quote"
            )
        request = json.loads(row["request"])
        if row["channel"] != cmd.channel:
            raise FailedPrecondition(f"quote {cmd.quote_id} was made for {row['channel']}, not {cmd.channel}")
        if sorted([li.sku, li.quantity] for li in cmd.lines) != request["lines"]:
            raise FailedPrecondition(f"the order's lines differ from quote {cmd.quote_id}")
        if cmd.method in PICKUP_METHODS and request.get("pickup") != cmd.pickup_location_id:
            raise FailedPrecondition(f"quote {cmd.quote_id} was made for pickup at {request.get('pickup')}")
        option = next((o for o in json.loads(row["options"]) if o["method"] == cmd.method), None)
        if option is None:
            raise FailedPrecondition(f"quote {cmd.quote_id} offered no {cmd.method} option")
        return datetime.fromisoformat(option["promised_at"]), int(option["price_minor"])

    # -- place --

    def _validate_place(self, cmd: PlaceOrder) -> None:
        violations: list[FieldViolation] = []
        if cmd.channel not in CHANNELS:
            violations.append(FieldViolation("channel", "is required"))
        if cmd.method not in METHODS:
            violations.append(FieldViolation("method", "is required"))
        _check_id(cmd.channel_order_id, "channel_order_id", violations)
        _check_id(cmd.customer_id, "customer_id", violations)
        _check_lines(cmd.lines, violations)
        _check_id(cmd.pickup_location_id or "", "pickup_location_id", violations, required=False)
        if cmd.method in PICKUP_METHODS and not cmd.pickup_location_id:
            violations.append(FieldViolation("pickup_location_id", f"is required for {cmd.method}"))
        if (
            cmd.method in METHODS
            and cmd.method not in PICKUP_METHODS
            and not (cmd.address.point or cmd.address.line1)
        ):
            violations.append(FieldViolation("address", f"is required for {cmd.method}"))
        if cmd.address.point is not None and not (
            -90 <= cmd.address.point.latitude <= 90 and -180 <= cmd.address.point.longitude <= 180
        ):
            violations.append(
                FieldViolation("address.point", "latitude must be -90..90 and longitude -180..180")
            )
        if violations:
            raise InvalidArgument.of(violations)

    async def place(self, cmd: PlaceOrder) -> tuple[Order, bool]:
        try:
            order, replayed = await self._place(cmd)
        except Exception as exc:
            reason = next((why for kind, why in REFUSAL_REASONS if isinstance(exc, kind)), None)
            if reason is not None:
                if reason == "unsourceable" and cmd.quote_id and "quoted promise" in str(exc):
                    reason = "quote_not_kept"
                self._counters.refused(cmd.channel, reason)
            raise
        if not replayed:
            self._counters.placed(cmd.channel)
        return order, replayed

    async def _place(self, cmd: PlaceOrder) -> tuple[Order, bool]:
        self._validate_place(cmd)
        payload_hash = hashlib.sha256(
            json.dumps(dataclasses.asdict(cmd), sort_keys=True, default=str).encode()
        ).hexdigest()
        order_id = order_id_for(cmd.channel, cmd.channel_order_id)
        lock = _placement_lock(order_id)
        async with self._pool.acquire() as conn:
            # Serialise concurrent retries of one order: only one of them sources and reserves.
            await conn.execute("SELECT pg_advisory_lock($1)", lock)
            try:
                return await self._place_locked(conn, cmd, order_id, payload_hash)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", lock)

    async def _place_locked(
        self, conn: asyncpg.Connection, cmd: PlaceOrder, order_id: str, payload_hash: str
    ) -> tuple[Order, bool]:
        found = await pg.find_by_channel_id(conn, cmd.channel, cmd.channel_order_id)
        if found is not None:
            existing, existing_hash = found
            if existing_hash != payload_hash:
                raise AlreadyExists(
                    f"{cmd.channel} order {cmd.channel_order_id} was already placed with other "
                    f"content (order {existing.order_id})"
                )
            return existing, True
        now = self._clock()
        promised_by: datetime | None = None
        price: int | None = None
        if cmd.quote_id:
            promised_by, price = await self._kept_quote(conn, cmd, now)
        lines = [LineRequest(li.line_id, li.sku, li.quantity) for li in cmd.lines]
        generation = await pg.placement_generation(conn, order_id)
        begun = False

        async def begin() -> None:
            # Committed before anything is reserved: if this process dies before the order is
            # recorded, the row is how the sweeper finds the stock it held. Only then: an order
            # refused from availability alone (sold out) writes nothing.
            nonlocal begun
            if not begun:
                await pg.begin_placement(conn, order_id, generation, now)
                begun = True

        try:
            s = await self._source(
                conn,
                order_id=order_id,
                channel=cmd.channel,
                method=cmd.method,
                lines=lines,
                destination=cmd.address.point,
                pickup_location_id=cmd.pickup_location_id,
                promised_by=promised_by,
                excluded={},
                reservation_ids=placement_reservation_ids(order_id, generation),
                now=now,
                before_reserving=begin,
            )
        except (FailedPrecondition, NotFound, InvalidArgument):
            # Refused: nothing is held (a conflicting orphan was released on the way).
            if begun:
                await pg.end_placement(conn, order_id)
            raise
        if not s.decision.sourced:
            if begun:
                await pg.end_placement(conn, order_id)
            prefix = "the quoted promise can no longer be kept: " if cmd.quote_id else ""
            raise FailedPrecondition(
                prefix + s.decision.explanation,
                [(f"order {cmd.channel_order_id}", f) for f in s.decision.failures],
            )
        try:
            async with conn.transaction():
                await pg.end_placement(conn, order_id)
                order = Order(
                    order_id=order_id,
                    channel=cmd.channel,
                    channel_order_id=cmd.channel_order_id,
                    customer_id=cmd.customer_id,
                    method=cmd.method,
                    address=cmd.address,
                    pickup_location_id=cmd.pickup_location_id,
                    status="sourced",
                    lines=tuple(
                        Line(
                            li.line_id,
                            li.sku,
                            li.quantity,
                            li.unit_price_minor,
                            li.currency,
                            s.decision.location_of(li.line_id) or "",
                            "sourced",
                            s.reservation_id,
                            sourced_at=now,
                        )
                        for li in cmd.lines
                    ),
                    promised_at=promised_by or promise_for(cmd.method, s.decision.promised_at),
                    delivery_price_minor=price
                    if price is not None
                    else s.rules.costs.price_minor.get(cmd.method, 0),
                    currency=s.rules.costs.currency,
                    quote_id=cmd.quote_id,
                    rules_version=s.version,
                    created_at=now,
                    updated_at=now,
                    version=1,
                )
                await pg.insert_order(conn, order, payload_hash)
                decision_id = f"{order_id}.d1"
                await self._record_decision(conn, decision_id, order_id, "order_placed", "", s, now)
                events = _Events(order_id, order.version)
                proto = messages.order_to_proto(order)
                events.add(
                    events_pb2.OrderPlaced(
                        order_id=order_id,
                        customer_id=cmd.customer_id,
                        channel=proto.channel,
                        channel_order_id=cmd.channel_order_id,
                        method=proto.method,
                        lines=proto.lines,
                        pickup_location_id=cmd.pickup_location_id or "",
                        promised_at=proto.promised_at,
                        quote_id=cmd.quote_id or "",
                        placed_at=proto.created_at,
                    )
                )
                events.add(self._sourced_event(order_id, decision_id, "order_placed", "", s, now))
                events.status(None, order)
                await events.write(conn, now)
        except BaseException:
            await self._release_quietly(s.reservation_id, [], "", "order not recorded")
            raise
        return order, False

    async def _record_decision(
        self,
        conn: asyncpg.Connection,
        decision_id: str,
        order_id: str,
        trigger: str,
        reason: str,
        s: _Sourced,
        now: datetime,
    ) -> None:
        await pg.insert_decision(
            conn,
            decision_id=decision_id,
            order_id=order_id,
            trigger=trigger,
            reason=reason,
            rules_version=s.version,
            line_ids=[li.line_id for li in s.request.lines],
            sourced=s.decision.sourced,
            request=codec.request_to_dict(s.request),
            candidates=[codec.candidate_to_dict(c) for c in s.candidates],
            decision=codec.decision_to_dict(s.decision),
            promised_at=s.decision.promised_at,
            decided_at=now,
        )

    def _sourced_event(
        self, order_id: str, decision_id: str, trigger: str, reason: str, s: _Sourced, now: datetime
    ) -> events_pb2.OrderSourced:
        row = {
            "decision_id": decision_id,
            "order_id": order_id,
            "trigger": trigger,
            "rules_version": s.version,
            "decision": codec.decision_to_dict(s.decision),
            "decided_at": now,
            "line_ids": [li.line_id for li in s.request.lines],
            "reason": reason,
        }
        return events_pb2.OrderSourced(
            order_id=order_id,
            decision=messages.decision_to_proto(row, s.rules.costs.currency),
            location_ids=sorted({sh.location_id for sh in s.decision.shipments}),
        )

    async def _quarantine_rejected(
        self, order_id: str, lines: Sequence[Line], location_id: str, reason: str, n: int
    ) -> None:
        """Units a store could not serve (not found on the shelf) must not be promised again from
        that store: they go to quarantine there until the store finds them (ReleaseQuarantine) or
        a stock snapshot says otherwise. Best effort: units already taken by another order in the
        meantime stay where they are, and the rejection goes on."""
        by_sku: dict[str, int] = {}
        for li in lines:
            by_sku[li.sku] = by_sku.get(li.sku, 0) + li.quantity
        for sku, quantity in sorted(by_sku.items()):
            movement_id = "reject-" + _digest(order_id, str(n), sku)
            line = ReserveLine(sku, location_id, quantity)
            try:
                if not await self._inventory.quarantine(movement_id, line, f"order {order_id}: {reason}"):
                    log.warning(
                        "rejected units of %s at %s were taken meanwhile; not quarantined", sku, location_id
                    )
            except Unavailable:
                log.warning(
                    "could not quarantine rejected units of %s at %s", sku, location_id, exc_info=True
                )

    async def _release_quietly(
        self, reservation_id: str, lines: Sequence[ReserveLine], request_id: str, reason: str
    ) -> None:
        try:
            await asyncio.shield(self._inventory.release(reservation_id, lines, request_id, reason))
        except Exception:
            log.exception(
                "could not release reservation %s after a failure; inventory keeps it", reservation_id
            )

    # -- cancel --

    async def cancel(self, order_id: str, line_ids: Sequence[str], reason: str) -> Order:
        if not order_id:
            raise InvalidArgument("order_id", "is required")
        reason = reason or "cancelled"
        async with self._pool.acquire() as conn, conn.transaction():
            order = await pg.get_order(conn, order_id, for_update=True)
            if order is None:
                raise NotFound(f"order {order_id} not found")
            if line_ids:
                for i, line_id in enumerate(line_ids):
                    if order.line(line_id) is None:
                        raise NotFound(f"order {order_id} has no line {line_id} (line_ids[{i}])")
                chosen = [li for li in order.lines if li.line_id in set(line_ids)]
                targets = [li for li in chosen if check_cancellable(li.line_id, li.status, order.method)]
            else:
                targets = [li for li in order.lines if li.status not in TERMINAL and li.status != "shipped"]
                if not targets and any(li.status != "cancelled" for li in order.lines):
                    raise FailedPrecondition(
                        f"order {order_id} is {order.status}; nothing left to cancel (start a return)"
                    )
                for li in targets:
                    check_cancellable(li.line_id, li.status, order.method)
            if not targets:
                return order  # already cancelled: a retry
            now = self._clock()
            ids = sorted(li.line_id for li in targets)
            for reservation_id, lines in _by_reservation(targets).items():
                await self._inventory.release(
                    reservation_id, _reserve_lines(lines), "cancel-" + _digest(order_id, *ids), reason
                )
            after = order.with_lines(
                tuple(
                    dataclasses.replace(li, status="cancelled", reason=reason) if li in targets else li
                    for li in order.lines
                )
            )
            after = dataclasses.replace(after, version=order.version + 1, updated_at=now)
            await pg.save_changes(conn, order, after, now)
            events = _Events(order_id, after.version)
            events.add(
                events_pb2.OrderLinesCancelled(
                    order_id=order_id,
                    line_ids=ids,
                    reason=reason,
                    location_ids=sorted({li.location_id for li in targets}),
                    whole_order=after.status == "cancelled",
                )
            )
            events.status(order, after)
            await events.write(conn, now)
        return after

    # -- fulfilment --

    async def update_fulfilment(self, cmd: UpdateFulfilment) -> FulfilmentResult:
        violations: list[FieldViolation] = []
        if not cmd.order_id:
            violations.append(FieldViolation("order_id", "is required"))
        _check_id(cmd.location_id, "location_id", violations)
        if cmd.event not in FULFILMENT_EVENTS:
            violations.append(FieldViolation("event", "is required"))
        if cmd.event == "rejected" and not cmd.reason.strip():
            violations.append(
                FieldViolation("reason", "is required for a rejection (for example 'not found on the shelf')")
            )
        _check_id(cmd.update_id, "update_id", violations)
        if violations:
            raise InvalidArgument.of(violations)
        async with self._pool.acquire() as conn, conn.transaction():
            order = await pg.get_order(conn, cmd.order_id, for_update=True)
            if order is None:
                raise NotFound(f"order {cmd.order_id} not found")
            if cmd.update_id and not await pg.claim_update(conn, cmd.order_id, cmd.update_id):
                return FulfilmentResult(order)
            lines = self._lines_at(order, cmd.location_id, cmd.line_ids, cmd.event)
            now = self._clock()
            if cmd.event == "rejected":
                for li in lines:
                    next_line_status(li.line_id, li.status, "rejected", order.method)
                return await self._reallocate(
                    conn,
                    order,
                    lines,
                    cmd.location_id,
                    "rejected",
                    f"rejected by {cmd.location_id}: {cmd.reason.strip()}",
                    now,
                    fulfilment=cmd,
                )
            moved: dict[str, str] = {}
            for li in lines:
                target = next_line_status(li.line_id, li.status, cmd.event, order.method)
                if target is not None:
                    moved[li.line_id] = target
            if not moved:
                return FulfilmentResult(order)  # every line already there: a retry
            changed = [li for li in lines if li.line_id in moved]
            if fulfils_reservation(cmd.event, order.method):
                ids = sorted(moved)
                for reservation_id, group in _by_reservation(changed).items():
                    await self._inventory.fulfil(
                        reservation_id, _reserve_lines(group), f"{cmd.event}-" + _digest(order.order_id, *ids)
                    )
            after = order.with_lines(
                tuple(
                    dataclasses.replace(li, status=moved[li.line_id]) if li.line_id in moved else li
                    for li in order.lines
                )
            )
            after = dataclasses.replace(after, version=order.version + 1, updated_at=now)
            await pg.save_changes(conn, order, after, now)
            events = _Events(order.order_id, after.version)
            events.add(
                events_pb2.OrderFulfilmentUpdated(
                    order_id=order.order_id,
                    location_id=cmd.location_id,
                    event=messages.event_value(cmd.event),
                    line_ids=sorted(moved),
                    reason=cmd.reason,
                )
            )
            events.status(order, after)
            await events.write(conn, now)
            return FulfilmentResult(after)

    def _lines_at(self, order: Order, location_id: str, line_ids: Sequence[str], event: str) -> list[Line]:
        if line_ids:
            out = []
            for i, line_id in enumerate(line_ids):
                line = order.line(line_id)
                if line is None:
                    raise NotFound(f"order {order.order_id} has no line {line_id} (line_ids[{i}])")
                if line.location_id != location_id and not (
                    event in ("ready_for_pickup", "collected") and order.pickup_location_id == location_id
                ):
                    raise FailedPrecondition(
                        f"line {line_id} is served by {line.location_id}, not {location_id}"
                    )
                out.append(line)
            return out
        at = location_id
        out = [
            li
            for li in order.lines
            if li.status not in TERMINAL
            and (
                li.location_id == at
                or (event in ("ready_for_pickup", "collected") and order.pickup_location_id == at)
            )
        ]
        if not out:
            raise FailedPrecondition(f"order {order.order_id} has no open lines at {location_id}")
        return out

    # -- reallocation --

    async def _reallocate(
        self,
        conn: asyncpg.Connection,
        order: Order,
        lines: Sequence[Line],
        from_location: str,
        trigger: str,
        reason: str,
        now: datetime,
        *,
        fulfilment: UpdateFulfilment | None = None,
        cancel_if_unsourced: bool = True,
    ) -> FulfilmentResult:
        """Re-source ``lines`` away from ``from_location`` (inside the caller's transaction, the
        order row locked): reserve the new locations, then release the old reservation; lines
        that cannot go anywhere are cancelled (or left in place for a slow store)."""
        excluded: dict[str, str] = {}
        for li in lines:
            excluded.update(li.excluded)
        excluded[from_location] = reason
        n = await pg.count_decisions(conn, order.order_id) + 1
        decision_id = f"{order.order_id}.d{n}"
        requests = [LineRequest(li.line_id, li.sku, li.quantity) for li in lines]
        common: dict[str, Any] = {
            "order_id": order.order_id,
            "channel": order.channel,
            "method": order.method,
            "lines": requests,
            "destination": order.address.point,
            "pickup_location_id": order.pickup_location_id,
            "excluded": excluded,
            "reservation_ids": (f"{order.order_id}.r{n}", f"{order.order_id}.r{n}b"),
            "now": now,
        }
        # Keep the promise where possible; otherwise any location that can serve.
        s = await self._source(conn, promised_by=order.promised_at, **common)
        if not s.decision.sourced and order.promised_at is not None:
            s = await self._source(conn, promised_by=None, **common)
        events = _Events(order.order_id, order.version + 1)
        if fulfilment is not None:
            events.add(
                events_pb2.OrderFulfilmentUpdated(
                    order_id=order.order_id,
                    location_id=fulfilment.location_id,
                    event=messages.event_value(fulfilment.event),
                    line_ids=sorted(li.line_id for li in lines),
                    reason=fulfilment.reason,
                )
            )
        ids = sorted(li.line_id for li in lines)
        await self._record_decision(conn, decision_id, order.order_id, trigger, reason, s, now)
        if not s.decision.sourced and not cancel_if_unsourced:
            await pg.touch_lines(
                conn,
                order.order_id,
                ids,
                now,
                f"{reason}; no other location can serve it, left at {from_location}",
            )
            return FulfilmentResult(order)
        try:
            for reservation_id, group in _by_reservation(lines).items():
                await self._inventory.release(
                    reservation_id,
                    _reserve_lines(group),
                    f"{trigger}-" + _digest(order.order_id, str(n), *ids),
                    reason,
                )
        except BaseException:
            if s.decision.sourced:
                await self._release_quietly(s.reservation_id, [], "", "reallocation not recorded")
            raise
        if trigger == "rejected":
            await self._quarantine_rejected(order.order_id, lines, from_location, reason, n)
        if s.decision.sourced:
            new_lines = tuple(
                dataclasses.replace(
                    li,
                    location_id=s.decision.location_of(li.line_id) or li.location_id,
                    status="sourced",
                    reservation_id=s.reservation_id,
                    reason=reason,
                    excluded=excluded,
                    sourced_at=now,  # its new location's accept deadline runs from now
                )
                if li.line_id in ids
                else li
                for li in order.lines
            )
            promise_kept = order.promised_at is None or (
                s.decision.promised_at is not None and s.decision.promised_at <= order.promised_at
            )
            events.add(
                events_pb2.OrderLinesReallocated(
                    order_id=order.order_id,
                    line_ids=ids,
                    from_location_id=from_location,
                    location_ids=sorted({sh.location_id for sh in s.decision.shipments}),
                    trigger=messages.trigger_value(trigger),
                    reason=reason,
                    promise_kept=promise_kept,
                    decision_id=decision_id,
                )
            )
            events.add(self._sourced_event(order.order_id, decision_id, trigger, reason, s, now))
            result_ids: tuple[tuple[str, ...], tuple[str, ...]] = (tuple(ids), ())
        else:
            why = f"{reason}; could not be re-sourced: {s.decision.explanation}"
            new_lines = tuple(
                dataclasses.replace(li, status="cancelled", reason=why) if li.line_id in ids else li
                for li in order.lines
            )
            result_ids = ((), tuple(ids))
        after = dataclasses.replace(order.with_lines(new_lines), version=order.version + 1, updated_at=now)
        if not s.decision.sourced:
            events.add(
                events_pb2.OrderLinesCancelled(
                    order_id=order.order_id,
                    line_ids=ids,
                    reason=f"{reason}; could not be re-sourced: {s.decision.explanation}",
                    location_ids=[from_location],
                    whole_order=after.status == "cancelled",
                )
            )
        await pg.save_changes(conn, order, after, now, resourced=ids if s.decision.sourced else ())
        events.status(order, after)
        await events.write(conn, now)
        self._counters.reallocated(trigger, s.decision.sourced)
        return FulfilmentResult(after, *result_ids)

    async def location_offline(self, location_id: str, reason: str) -> tuple[list[str], list[str]]:
        violations: list[FieldViolation] = []
        _check_id(location_id, "location_id", violations)
        if violations:
            raise InvalidArgument.of(violations)
        why = f"{location_id} went offline" + (f": {reason}" if reason else "")
        async with self._pool.acquire() as conn:
            order_ids = await pg.orders_open_at(conn, location_id, ("sourced", "accepted"))
        moved, failed = [], []
        for order_id in order_ids:
            result = await self._reallocate_at(order_id, location_id, "location_offline", why)
            if result is None:
                continue
            (failed if result.cancelled else moved).append(order_id)
        return moved, failed

    async def location_deactivated(self, location_id: str) -> tuple[list[str], list[str]]:
        """Inventory says the location is inactive: re-source its open lines if it still is."""
        self._locations = None
        current = next((loc for loc in await self._all_locations() if loc.location_id == location_id), None)
        if current is not None and current.active:
            return [], []
        return await self.location_offline(location_id, "deactivated in inventory")

    async def _reallocate_at(
        self,
        order_id: str,
        location_id: str,
        trigger: str,
        reason: str,
        *,
        statuses: tuple[str, ...] = ("sourced", "accepted"),
        cancel_if_unsourced: bool = True,
    ) -> FulfilmentResult | None:
        async with self._pool.acquire() as conn, conn.transaction():
            order = await pg.get_order(conn, order_id, for_update=True)
            if order is None:
                return None
            lines = [li for li in order.lines if li.location_id == location_id and li.status in statuses]
            if not lines:
                return None
            return await self._reallocate(
                conn,
                order,
                lines,
                location_id,
                trigger,
                reason,
                self._clock(),
                cancel_if_unsourced=cancel_if_unsourced,
            )

    async def reallocate_overdue(self) -> int:
        """Re-source lines their location has not accepted within the deadline. A failure is
        recorded per (order, location): transient → retried after a backoff with jitter;
        permanent (inventory refused: unknown SKU…) → parked until RetryParkedTask."""
        timeout = self._config.accept_timeout_seconds
        now = self._clock()
        async with self._pool.acquire() as conn:
            overdue = await pg.awaiting_acceptance(conn, now - timedelta(seconds=timeout), 100)
            await pg.delete_expired_quotes(conn, now - timedelta(days=1))
        done = 0
        for order_id, location_id in overdue:
            try:
                result = await self._resource_overdue(order_id, location_id)
            except Exception as exc:  # noqa: BLE001 - every failure is recorded: parked or retried later
                await self._work_failed(ACCEPT_TIMEOUT, order_id, location_id, exc)
                continue
            done += 1 if result is not None and result.reallocated else 0
        return done

    async def _resource_overdue(self, order_id: str, location_id: str) -> FulfilmentResult | None:
        reason = f"{location_id} did not accept within {self._config.accept_timeout_seconds:g} s"
        result = await self._reallocate_at(
            order_id, location_id, ACCEPT_TIMEOUT, reason, statuses=("sourced",), cancel_if_unsourced=False
        )
        async with self._pool.acquire() as conn:
            await pg.work_succeeded(conn, ACCEPT_TIMEOUT, order_id, location_id)
        return result

    async def _work_failed(self, kind: str, order_id: str, location_id: str, exc: Exception) -> str:
        """Record a failed piece of background work; returns "parked" or "pending"."""
        permanent = isinstance(exc, UnknownSku) or retry.is_permanent(exc)
        why = f"NOT_FOUND: {exc}" if isinstance(exc, UnknownSku) else retry.reason(exc)
        async with self._pool.acquire() as conn:
            attempts = await pg.work_failed(
                conn, kind, order_id, location_id, why, None if permanent else _work_backoff
            )
        if permanent:
            self._counters.task_parked(kind)
            log.error(
                "%s of order %s at %s refused; parked until retried by an operator: %s",
                kind, order_id, location_id, why,
            )
            return "parked"
        what = f"{kind} of order {order_id} failed (attempt {attempts}); retried later"
        if isinstance(exc, TuttiError):
            log.warning("%s: %s", what, why)
        else:  # not a refusal nor a known outage: possibly a bug, keep the traceback
            log.error("%s", what, exc_info=exc)
        return "pending"

    async def parked_tasks(self, limit: int = 100) -> list[asyncpg.Record]:
        """Background work refused for good, oldest first."""
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit", "1..1000")
        async with self._pool.acquire() as conn:
            return await pg.parked_work(conn, limit)

    async def parked_events(self, limit: int = 100) -> list[Any]:
        """Events Kafka refused for good (outbox rows parked by the relay), oldest first."""
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit", "1..1000")
        return [] if self._outbox is None else await self._outbox.parked(limit)

    async def retry_task(self, task_id: str) -> tuple[str, str]:
        """Retry a parked piece of work now: ("done" | "parked" | "pending", why not done).
        Idempotent: work no longer failing (done since) answers done."""
        kind, _, key = task_id.partition(":")
        if not task_id:
            raise InvalidArgument("task_id", "required")
        if task_id.startswith(OUTBOX_TASK) and self._outbox is not None:
            if not key.isdigit():
                raise NotFound(f"task {task_id!r} not found")
            # Back in the relay's queue; gone from the outbox: it was sent.
            waiting = await self._outbox.unpark(int(key))
            return ("pending", "relayed on the next pass") if waiting else ("done", "")
        if kind != ACCEPT_TIMEOUT or "@" not in key:
            raise NotFound(f"task {task_id!r} not found")
        async with self._pool.acquire() as conn:
            row = await pg.failed_work(conn, kind, key)
        order_id, _, location_id = key.rpartition("@")
        if row is None:
            async with self._pool.acquire() as conn:
                if await pg.get_order(conn, order_id) is None:
                    raise NotFound(f"task {task_id!r} not found")
            return "done", ""
        try:
            await self._resource_overdue(order_id, location_id)
        except Exception as exc:  # noqa: BLE001 - recorded: parked again or retried later
            state = await self._work_failed(kind, order_id, location_id, exc)
            async with self._pool.acquire() as conn:
                again = await pg.failed_work(conn, kind, key)
            return state, again["last_error"] if again is not None else ""
        return "done", ""

    async def release_abandoned_placements(self) -> int:
        """Gives back the stock of PlaceOrder calls that reserved and then died before recording
        the order (process killed, node lost, inventory unreachable for the release). Without
        this, a channel that never retries would leave those units held for ever."""
        grace = self._config.abandoned_placement_seconds
        now = self._clock()
        released = 0
        async with self._pool.acquire() as conn:
            abandoned = await pg.abandoned_placements(conn, now - timedelta(seconds=grace), 100)
            for order_id, generation in abandoned:
                lock = _placement_lock(order_id)
                # Held by a PlaceOrder of this order that is still running, here or on a replica.
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock):
                    continue
                try:
                    # The order's transaction deletes its row, so this should never hold; if it
                    # did, releasing would take the stock from under a live order.
                    if await pg.order_exists(conn, order_id):
                        await pg.end_placement(conn, order_id)
                        continue
                    for reservation_id in placement_reservation_ids(order_id, generation):
                        await self._inventory.release(
                            reservation_id, [], "", "placement interrupted before the order was recorded"
                        )
                    await pg.placement_released(conn, order_id, generation, now)
                    released += 1
                    log.warning(
                        "released the stock of an abandoned placement",
                        extra={"order_id": order_id, "generation": generation},
                    )
                except Exception:
                    log.exception("releasing abandoned placement %s failed; retried next sweep", order_id)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", lock)
        return released

    async def sweep_forever(self) -> None:
        # A failed pass (a database blip) ends the loop; the runtime's supervisor logs it and
        # starts it again with backoff.
        while True:
            moved = await self.reallocate_overdue()
            if moved:
                log.info("re-sourced orders not accepted in time", extra={"orders": moved})
            await self.release_abandoned_placements()
            await asyncio.sleep(self._config.sweep_interval_seconds)
