"""Use cases of the returns service: open a return or an exchange, receive and grade goods,
cancel. Each turns a command into domain calls inside one PostgreSQL transaction (state,
events in the outbox, inventory effects to apply), then applies the inventory effects at once
so returned goods are back on sale within the call; effects that fail are retried by
``TaskWorker`` until inventory acknowledges them (each is idempotent by its task id): a
transient failure with exponential backoff and jitter, while one inventory refuses for good
(NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION…: runtime.retry) is parked with its reason
until an operator retries it (``retry_task``) once the cause is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from runtime import retry
from runtime.errors import AlreadyExists, InvalidArgument, NotFound
from services.returns.adapters import events
from services.returns.adapters.codec import ReturnView
from services.returns.domain import model as m
from services.returns.domain.rules import ReturnRules

log = logging.getLogger(__name__)

IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


# --- ports -----------------------------------------------------------------------------------------


class OrderDirectory(Protocol):
    """What was bought: the orchestrator's orders."""

    async def get_purchase(self, order_id: str) -> m.Purchase | None: ...

    async def order_parties(self, order_id: str) -> tuple[str, tuple[str, ...]] | None:
        """The order's channel and locations (fulfilment, pickup); None when unknown."""


class InventoryPort(Protocol):
    """Inventory effects and the facts disposition rules need."""

    async def location_type(self, location_id: str) -> str | None:
        """ "store", "distribution_centre", "dropship_supplier"; None when the location is unknown."""

    async def sells(self, location_id: str, sku: str) -> bool:
        """Whether the location carries the SKU."""

    async def apply(self, task: m.InventoryTask) -> None:
        """Apply one effect; idempotent by task id. Raises TuttiError for a refusal."""

    async def catalogue(self, skus: Sequence[str]) -> dict[str, m.CatalogueEntry]:
        """The entries of the SKUs the catalogue knows (unknown ones are left out)."""

    async def till_sale(self, terminal_id: str, sale_id: str) -> m.RecordedTillSale | None:
        """The till sale as inventory recorded it; None when it has no record of it."""


class Transaction(Protocol):
    async def lock_order(self, order_id: str) -> None: ...
    async def find_by_request(self, order_id: str, request_id: str) -> tuple[m.Return, str] | None: ...
    async def returns_of_order(self, order_id: str) -> list[m.Return]: ...
    async def get(self, return_id: str, *, for_update: bool = False) -> m.Return | None: ...
    async def insert(self, ret: m.Return, fingerprint: str) -> None: ...
    async def update(self, ret: m.Return) -> None: ...
    async def get_receipt(self, return_id: str, receipt_id: str) -> m.Receipt | None: ...
    async def insert_receipt(self, receipt: m.Receipt) -> None: ...
    async def get_exchange(self, return_id: str) -> tuple[m.Exchange, bytes | None] | None: ...
    async def insert_exchange(self, exchange: m.Exchange, address: bytes | None) -> None: ...
    async def cancel_exchange(self, exchange_id: str) -> None: ...
    async def exchange_return_id(self, exchange_id: str) -> str | None: ...
    async def hand_over_exchange(self, exchange: m.Exchange) -> None: ...
    async def add_tasks(self, tasks: Sequence[m.InventoryTask], *, done: bool = False) -> None: ...
    async def emit(self, event: events.Event) -> None: ...
    async def view(self, return_id: str, rules: ReturnRules) -> ReturnView | None: ...


class ReturnsStore(Protocol):
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Transaction]: ...
    async def pending_tasks(self, limit: int) -> list[m.InventoryTask]: ...
    async def task_done(self, task_id: str) -> None: ...
    async def task_failed(self, task_id: str, error: str, retry_in: timedelta) -> None: ...
    async def task_parked(self, task_id: str, reason: str) -> None: ...
    async def parked_tasks(self, limit: int) -> list[m.ParkedTask]: ...
    async def unpark_task(self, task_id: str) -> tuple[m.TaskState, m.InventoryTask] | None: ...
    async def returns_of_order(self, order_id: str) -> list[str]: ...


# --- commands --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateReturn:
    request_id: str
    order_id: str
    # Set for a till purchase (its order id is pos_order_id(terminal, sale)).
    pos_purchase: m.Purchase | None
    lines: tuple[m.RequestedLine, ...]
    method: m.ReturnMethod
    receiving_location_id: str
    channel: str
    # (terminal_id, sale_id) of a till purchase: the record its receipt is checked against.
    pos_sale: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ReceiveReturn:
    return_id: str
    receipt_id: str
    location_id: str
    lines: tuple[m.ReceivedLine, ...]


@dataclass(frozen=True, slots=True)
class CreateExchange:
    request: CreateReturn
    replacement_sku: str
    fulfilment: m.Fulfilment
    location_id: str
    shipping_address: bytes | None


@dataclass(frozen=True, slots=True)
class HandOverExchange:
    exchange_id: str
    location_id: str
    update_id: str = ""


def check_identifier(field: str, value: str) -> None:
    if not value:
        raise InvalidArgument(field, "required")
    if not IDENTIFIER.match(value):
        raise InvalidArgument(field, "1..128 characters of [A-Za-z0-9._:/-] starting with a letter or digit")


def _fingerprint(cmd: CreateReturn, extra: str = "") -> str:
    doc = [
        cmd.order_id,
        [[x.line_id, x.quantity, x.reason.value] for x in cmd.lines],
        cmd.method.value,
        cmd.receiving_location_id,
        extra,
    ]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


class ParkedEvents(Protocol):
    """The outbox relay's rows Kafka refused for good (runtime.postgres.OutboxRelay)."""

    async def parked(self, limit: int = 100) -> list[Any]: ...

    async def unpark(self, row_id: int) -> bool: ...


# Task ids of parked outbox rows: "outbox:<row id>".
OUTBOX_TASK = "outbox:"


class ReturnCounters(Protocol):
    """Business counters (adapters/metrics.py exports them to Prometheus)."""

    def created(self, channel: str, kind: str) -> None: ...

    def received(self, location_type: str) -> None: ...

    def task_parked(self, kind: str) -> None: ...


class NoCounters:
    def created(self, channel: str, kind: str) -> None:
        pass

    def received(self, location_type: str) -> None:
        pass

    def task_parked(self, kind: str) -> None:
        pass


# Backoff of inventory effects that failed transiently: 1 s, 2 s, 4 s… at most 5 minutes.
RETRY_BASE = timedelta(seconds=1)
RETRY_CAP = timedelta(minutes=5)


async def settle(
    store: ReturnsStore,
    inventory: InventoryPort,
    task: m.InventoryTask,
    counters: ReturnCounters,
    *,
    base: timedelta = RETRY_BASE,
) -> tuple[m.TaskState, str]:
    """Apply one effect and record how it went: done; refused for good → parked with its
    reason (counted, not retried); any other failure → retried after a backoff with jitter.
    Returns the task's state and, unless done, why."""
    try:
        await inventory.apply(task)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded: parked or retried
        if retry.is_permanent(exc):
            log.error(
                "inventory effect %s refused; parked until retried by an operator: %s",
                task.task_id,
                retry.reason(exc),
            )
            await store.task_parked(task.task_id, retry.reason(exc))
            counters.task_parked(task.kind.value)
            return m.TaskState.PARKED, retry.reason(exc)
        delay = retry.backoff(task.attempts + 1, base=base.total_seconds(), cap=RETRY_CAP.total_seconds())
        log.warning("inventory effect %s failed; retry in %.1fs: %r", task.task_id, delay, exc)
        await store.task_failed(task.task_id, retry.reason(exc), timedelta(seconds=delay))
        return m.TaskState.PENDING, retry.reason(exc)
    await store.task_done(task.task_id)
    return m.TaskState.DONE, ""


class ReturnsService:
    def __init__(
        self,
        store: ReturnsStore,
        orders: OrderDirectory,
        inventory: InventoryPort,
        rules: ReturnRules,
        clock: type[datetime] = datetime,
        *,
        check_till_receipts: bool = True,
        counters: ReturnCounters | None = None,
        outbox: ParkedEvents | None = None,
    ) -> None:
        self._counters = counters or NoCounters()
        self._outbox = outbox
        self._store = store
        self._orders = orders
        self._inventory = inventory
        self._rules = rules
        self._clock = clock
        # A receipt is a claim; the till's own record in inventory is the proof. Off only for
        # retailers whose tills do not stream their sales to Tutti.
        self._check_till_receipts = check_till_receipts

    def _now(self) -> datetime:
        return self._clock.now(UTC)

    # --- queries ---------------------------------------------------------------------------

    async def get_return(self, return_id: str) -> ReturnView:
        if not return_id:
            raise InvalidArgument("return_id", "required")
        async with self._store.transaction() as tx:
            view = await tx.view(return_id, self._rules)
        if view is None:
            raise NotFound(f"return {return_id} not found")
        return view

    async def list_returns(self, order_id: str) -> list[ReturnView]:
        if not order_id:
            raise InvalidArgument("order_id", "required")
        ids = await self._store.returns_of_order(order_id)
        views = []
        async with self._store.transaction() as tx:
            for return_id in ids:
                view = await tx.view(return_id, self._rules)
                if view is not None:
                    views.append(view)
        return views

    async def order_parties(self, order_id: str) -> tuple[str, tuple[str, ...]]:
        """Whom the order and its returns concern: its channel ("store" for a till purchase)
        and its locations with every location a return of it is (or was) received or expected
        at. NotFound when neither the orchestrator nor returns knows the order."""
        if not order_id:
            raise InvalidArgument("order_id", "required")
        views = await self.list_returns(order_id)
        locations: set[str] = set()
        for view in views:
            locations.add(view.ret.receiving_location_id)
            locations.update(step.location_id for step in view.steps)
            if view.exchange is not None:
                locations.add(view.exchange.location_id)
        if order_id.startswith(m.POS_ORDER_PREFIX):
            if not views:
                raise NotFound(f"order {order_id} not found")
            channel = views[0].ret.purchase_channel
        else:
            known = await self._orders.order_parties(order_id)
            if known is None:
                raise NotFound(f"order {order_id} not found")
            channel, order_locations = known
            locations.update(order_locations)
        return channel, tuple(sorted(loc for loc in locations if loc))

    # --- create ----------------------------------------------------------------------------

    async def _validate_create(self, cmd: CreateReturn) -> None:
        check_identifier("request_id", cmd.request_id)
        if not cmd.order_id:
            raise InvalidArgument("order_id", "an order id or a POS receipt is required")
        check_identifier("receiving_location_id", cmd.receiving_location_id)
        for i, line in enumerate(cmd.lines):
            check_identifier(f"lines[{i}].line_id", line.line_id)
        m.validate_requested_lines(cmd.lines)

    async def _purchase(self, cmd: CreateReturn) -> m.Purchase:
        if cmd.pos_purchase is not None:
            purchase = cmd.pos_purchase
            if self._check_till_receipts:
                purchase = await self._recorded(purchase, cmd.pos_sale)
            return await self._with_catalogue(purchase)
        purchase = await self._orders.get_purchase(cmd.order_id)
        if purchase is None:
            raise NotFound(f"order {cmd.order_id} not found")
        return purchase

    async def _recorded(self, purchase: m.Purchase, ids: tuple[str, str] | None) -> m.Purchase:
        if ids is None:
            raise InvalidArgument("pos_receipt", "terminal_id and sale_id are required")
        sale = await self._inventory.till_sale(*ids)
        if sale is None:
            raise NotFound(
                f"till sale {ids[1]} of terminal {ids[0]} is not on record in inventory (never "
                "streamed by the till, or older than its retention)"
            )
        return m.check_receipt(purchase, sale)

    async def _with_catalogue(self, purchase: m.Purchase) -> m.Purchase:
        """A till receipt says what was sold, not whether it may come back: the catalogue decides
        that, as it does for orders. A SKU it does not know keeps the receipt's category."""
        entries = await self._inventory.catalogue(list(dict.fromkeys(li.sku for li in purchase.lines)))
        lines = tuple(
            replace(li, category=entry.category or li.category, returnable=entry.returnable)
            if (entry := entries.get(li.sku)) is not None
            else li
            for li in purchase.lines
        )
        return replace(purchase, lines=lines)

    async def _known_location(self, field: str, location_id: str) -> str:
        location_type = await self._inventory.location_type(location_id)
        if location_type is None:
            raise NotFound(f"{field}: location {location_id} is not known to inventory")
        return location_type

    async def _existing(self, tx: Transaction, cmd: CreateReturn, fingerprint: str) -> ReturnView | None:
        found = await tx.find_by_request(cmd.order_id, cmd.request_id)
        if found is None:
            return None
        ret, stored = found
        if stored != fingerprint:
            raise AlreadyExists(
                f"request_id {cmd.request_id} was already used for return {ret.return_id} "
                "of this order with other content"
            )
        return await tx.view(ret.return_id, self._rules)

    async def create_return(self, cmd: CreateReturn) -> tuple[ReturnView, bool]:
        view, replayed = await self._create_return(cmd)
        if not replayed:
            self._counters.created(cmd.channel, "return")
        return view, replayed

    async def _create_return(self, cmd: CreateReturn) -> tuple[ReturnView, bool]:
        await self._validate_create(cmd)
        fingerprint = _fingerprint(cmd)
        async with self._store.transaction() as tx:
            existing = await self._existing(tx, cmd, fingerprint)
        if existing is not None:
            return existing, True
        purchase = await self._purchase(cmd)
        await self._known_location("receiving_location_id", cmd.receiving_location_id)
        async with self._store.transaction() as tx:
            await tx.lock_order(cmd.order_id)
            existing = await self._existing(tx, cmd, fingerprint)
            if existing is not None:
                return existing, True
            ret = self._open(cmd, purchase, m.returned_quantities(await tx.returns_of_order(cmd.order_id)))
            await tx.insert(ret, fingerprint)
            tasks = m.incoming_tasks(ret)
            await tx.add_tasks(tasks)
            await tx.emit(events.return_requested(ret, m.estimate_refund(ret, self._rules)))
            view = await tx.view(ret.return_id, self._rules)
        await self.apply_tasks(tasks)
        assert view is not None
        return view, False

    def _open(self, cmd: CreateReturn, purchase: m.Purchase, already: dict[str, int]) -> m.Return:
        return m.open_return(
            purchase=purchase,
            request_id=cmd.request_id,
            requested=cmd.lines,
            already_returned=already,
            rules=self._rules,
            method=cmd.method,
            receiving_location_id=cmd.receiving_location_id,
            initiated_channel=cmd.channel,
            now=self._now(),
        )

    # --- exchange --------------------------------------------------------------------------

    async def create_exchange(self, cmd: CreateExchange) -> tuple[ReturnView, bool]:
        view, replayed = await self._create_exchange(cmd)
        if not replayed:
            self._counters.created(cmd.request.channel, "exchange")
        return view, replayed

    async def _create_exchange(self, cmd: CreateExchange) -> tuple[ReturnView, bool]:
        await self._validate_create(cmd.request)
        if not cmd.replacement_sku:
            raise InvalidArgument("replacement_sku", "required")
        check_identifier("location_id", cmd.location_id)
        if cmd.fulfilment is m.Fulfilment.SHIP and not cmd.shipping_address:
            raise InvalidArgument("shipping_address", "required to ship the replacement")
        fingerprint = _fingerprint(cmd.request, f"{cmd.replacement_sku}|{cmd.fulfilment}|{cmd.location_id}")
        async with self._store.transaction() as tx:
            existing = await self._existing(tx, cmd.request, fingerprint)
        if existing is not None:
            return existing, True
        purchase = await self._purchase(cmd.request)
        await self._known_location("receiving_location_id", cmd.request.receiving_location_id)
        await self._known_location("location_id", cmd.location_id)
        async with self._store.transaction() as tx:
            await tx.lock_order(cmd.request.order_id)
            existing = await self._existing(tx, cmd.request, fingerprint)
            if existing is not None:
                return existing, True
            ret = self._open(
                cmd.request, purchase, m.returned_quantities(await tx.returns_of_order(cmd.request.order_id))
            )
            exchange = m.open_exchange(
                ret,
                replacement_sku=cmd.replacement_sku,
                fulfilment=cmd.fulfilment,
                location_id=cmd.location_id,
                now=self._now(),
            )
            ret = replace(ret, exchange_id=exchange.exchange_id)
            reserve = m.reserve_task(exchange)
            # Reserved before commit: no stock, no exchange (FAILED_PRECONDITION, nothing saved).
            # A crash after the reservation is healed by the retry: same request, same reservation id.
            await self._inventory.apply(reserve)
            await tx.insert(ret, fingerprint)
            await tx.insert_exchange(exchange, cmd.shipping_address)
            tasks = m.incoming_tasks(ret)
            await tx.add_tasks(tasks)
            await tx.add_tasks([reserve], done=True)
            exchanged = frozenset({exchange.original_line_id})
            await tx.emit(
                events.return_requested(
                    ret, m.estimate_refund(ret, self._rules, exchanged_line_ids=exchanged)
                )
            )
            await tx.emit(events.exchange_created(exchange, cmd.shipping_address))
            view = await tx.view(ret.return_id, self._rules)
        await self.apply_tasks(tasks)
        assert view is not None
        return view, False

    async def hand_over_exchange(self, cmd: HandOverExchange) -> tuple[m.Exchange, bytes | None, bool]:
        """The replacement handed over (collected, or given to the carrier): its reservation is
        fulfilled in inventory, handed_over_at recorded and ExchangeHandedOver emitted.

        Like the reservation in create_exchange, inventory is called *before* the commit, under
        the return's row lock (which CancelReturn takes too): inventory unreachable →
        UNAVAILABLE and nothing recorded. The fulfilment's request id is derived from the
        exchange, so a retry after a crash between the call and the commit fulfils nothing
        twice (inventory answers the first fulfilment) and records the handover then."""
        check_identifier("exchange_id", cmd.exchange_id)
        check_identifier("location_id", cmd.location_id)
        if cmd.update_id:
            check_identifier("update_id", cmd.update_id)
        async with self._store.transaction() as tx:
            return_id = await tx.exchange_return_id(cmd.exchange_id)
            if return_id is None:
                raise NotFound(f"exchange {cmd.exchange_id} not found")
            await tx.get(return_id, for_update=True)
            found = await tx.get_exchange(return_id)
            assert found is not None
            exchange, address = found
            m.check_handover(exchange, cmd.location_id)
            if exchange.handed_over_at is not None:
                return exchange, address, True
            fulfil = m.fulfil_task(exchange)
            await self._inventory.apply(fulfil)
            handed = m.hand_over(exchange, update_id=cmd.update_id, now=self._now())
            await tx.hand_over_exchange(handed)
            await tx.add_tasks([fulfil], done=True)
            await tx.emit(events.exchange_handed_over(handed))
        return handed, address, False

    # --- receive ---------------------------------------------------------------------------

    async def receive_return(self, cmd: ReceiveReturn) -> tuple[ReturnView, m.Receipt, bool]:
        check_identifier("return_id", cmd.return_id)
        receipt_id = cmd.receipt_id or cmd.return_id
        check_identifier("receipt_id", receipt_id)
        check_identifier("location_id", cmd.location_id)
        if not cmd.lines:
            raise InvalidArgument("lines", "at least one received line is required")
        async with self._store.transaction() as tx:
            ret = await tx.get(cmd.return_id)
            if ret is None:
                raise NotFound(f"return {cmd.return_id} not found")
            previous = await tx.get_receipt(cmd.return_id, receipt_id)
            if previous is not None:
                view = await tx.view(cmd.return_id, self._rules)
        if previous is not None:
            assert view is not None
            return view, previous, True
        location_type = await self._known_location("location_id", cmd.location_id)
        sells = {line.sku: await self._inventory.sells(cmd.location_id, line.sku) for line in ret.lines}
        async with self._store.transaction() as tx:
            ret = await tx.get(cmd.return_id, for_update=True)
            assert ret is not None
            previous = await tx.get_receipt(cmd.return_id, receipt_id)
            if previous is not None:
                view = await tx.view(cmd.return_id, self._rules)
                assert view is not None
                return view, previous, True
            items = m.grade_receipt(
                ret,
                cmd.lines,
                location_id=cmd.location_id,
                location_type=location_type,
                sells_item=lambda sku: sells.get(sku, False),
                rules=self._rules,
            )
            found = await tx.get_exchange(ret.return_id)
            exchanged = frozenset({found[0].original_line_id}) if found else frozenset()
            refund = m.compute_refund(ret, items, self._rules, exchanged_line_ids=exchanged)
            now = self._now()
            updated = m.apply_receipt(ret, items, refund)
            receipt = m.Receipt(
                receipt_id=receipt_id,
                return_id=ret.return_id,
                location_id=cmd.location_id,
                received_at=now,
                items=items,
                refund=refund,
            )
            dc_expected = now + timedelta(days=self._rules.transit_days[m.ReturnMethod.CARRIER_LABEL])
            tasks = [
                *m.clear_incoming_tasks(updated, [i.line_id for i in items], receipt_id),
                *m.disposition_tasks(updated, receipt_id, items, dc_expected_at=dc_expected),
            ]
            await tx.update(updated)
            await tx.insert_receipt(receipt)
            await tx.add_tasks(tasks)
            for event in events.receipt_events(updated, receipt):
                await tx.emit(event)
            view = await tx.view(ret.return_id, self._rules)
        await self.apply_tasks(tasks)
        assert view is not None
        self._counters.received(location_type)
        return view, receipt, False

    # --- cancel ----------------------------------------------------------------------------

    async def cancel_return(self, return_id: str, reason: str) -> ReturnView:
        check_identifier("return_id", return_id)
        tasks: list[m.InventoryTask] = []
        async with self._store.transaction() as tx:
            ret = await tx.get(return_id, for_update=True)
            if ret is None:
                raise NotFound(f"return {return_id} not found")
            if ret.status is not m.ReturnStatus.CANCELLED:
                found = await tx.get_exchange(return_id)
                if found is not None:
                    m.check_cancellable(found[0])
                cancelled = m.cancel(ret)
                tasks = m.clear_incoming_tasks(cancelled, [line.line_id for line in ret.lines], "cancel")
                await tx.update(cancelled)
                await tx.emit(events.return_cancelled(cancelled, reason))
                if found is not None and not found[0].cancelled:
                    tasks.append(m.release_task(found[0]))
                    await tx.cancel_exchange(found[0].exchange_id)
                    await tx.emit(events.exchange_cancelled(found[0]))
                await tx.add_tasks(tasks)
            view = await tx.view(return_id, self._rules)
        await self.apply_tasks(tasks)
        assert view is not None
        return view

    # --- inventory effects -----------------------------------------------------------------

    async def apply_tasks(self, tasks: Sequence[m.InventoryTask]) -> None:
        """Apply effects now; a transient failure is left to the worker (the task stays
        pending), a permanent one parks the task."""
        for task in tasks:
            await settle(self._store, self._inventory, task, self._counters)

    # --- operations: tasks refused for good --------------------------------------------------

    async def check_rules_locations(self, *, retry_seconds: float = 5.0) -> list[str]:
        """At start: the locations the rules name (the DC of send_to_dc) that inventory does
        not know, each logged as a warning. Effects sent there are refused NOT_FOUND and parked
        (listed by ListParkedTasks) until the location exists or the rules change. Waits for
        inventory to answer (it may start after this service)."""
        named = [("distribution_centre_id", self._rules.distribution_centre_id)]
        unknown: list[str] = []
        for field, location_id in named:
            while True:
                try:
                    known = await self._inventory.location_type(location_id) is not None
                    break
                except Exception as exc:  # noqa: BLE001 - inventory not reachable yet: ask again
                    log.info("cannot check the rules' %s yet: %r", field, exc)
                    await asyncio.sleep(retry_seconds)
            if not known:
                log.warning(
                    "the return rules' %s %r is not a location inventory knows: returns sent there "
                    "will be parked (tutti tasks list) until it exists or the rules change",
                    field,
                    location_id,
                )
                unknown.append(field)
        return unknown

    async def parked_tasks(self, limit: int = 100) -> list[m.ParkedTask]:
        """Inventory effects parked after a permanent refusal, oldest first."""
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit", "1..1000")
        return await self._store.parked_tasks(limit)

    async def parked_events(self, limit: int = 100) -> list[Any]:
        """Events Kafka refused for good (outbox rows parked by the relay), oldest first."""
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit", "1..1000")
        return [] if self._outbox is None else await self._outbox.parked(limit)

    async def retry_task(self, task_id: str) -> tuple[m.TaskState, str]:
        """Retry a parked task now (once its cause is fixed): its state afterwards — DONE,
        PENDING (failed transiently: the worker goes on) or PARKED again (still refused) — and
        why it is not done. Idempotent: a task already done stays done, a pending one is tried
        now."""
        if not task_id:
            raise InvalidArgument("task_id", "required")
        if task_id.startswith(OUTBOX_TASK) and self._outbox is not None:
            row_id = task_id.removeprefix(OUTBOX_TASK)
            if not row_id.isdigit():
                raise NotFound(f"task {task_id!r} not found")
            # Back in the relay's queue; gone from the outbox: it was sent.
            waiting = await self._outbox.unpark(int(row_id))
            return (m.TaskState.PENDING, "relayed on the next pass") if waiting else (m.TaskState.DONE, "")
        found = await self._store.unpark_task(task_id)
        if found is None:
            raise NotFound(f"task {task_id!r} not found")
        state, task = found
        if state is m.TaskState.DONE:
            return state, ""
        return await settle(self._store, self._inventory, task, self._counters)


class TaskWorker:
    """Retries inventory effects that could not be applied inline: transient failures with
    exponential backoff and jitter per task, permanent refusals parked (see ``settle``)."""

    def __init__(
        self,
        store: ReturnsStore,
        inventory: InventoryPort,
        *,
        poll_seconds: float = 1.0,
        grace: timedelta = timedelta(seconds=2),
        counters: ReturnCounters | None = None,
        retry_base: timedelta = RETRY_BASE,
    ) -> None:
        self._store = store
        self._inventory = inventory
        self._poll = poll_seconds
        self._grace = grace
        self._counters = counters or NoCounters()
        self._base = retry_base

    async def run(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self._poll)

    async def run_once(self) -> int:
        applied = 0
        for task in await self._store.pending_tasks(100):
            state, _ = await settle(self._store, self._inventory, task, self._counters, base=self._base)
            applied += state is m.TaskState.DONE
        return applied
