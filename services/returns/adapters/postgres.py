"""PostgreSQL store of the returns schema: returns, lines, receipts, exchanges, steps, pending
inventory effects, and events written to the outbox in the same transaction as the state."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg

from runtime.kafka import RETURN_EVENTS, build_envelope
from runtime.postgres import enqueue_event
from services.returns.adapters import codec
from services.returns.adapters.events import Event
from services.returns.domain import model as m
from services.returns.domain.rules import ReturnRules

SOURCE = "returns"


def _lock_key(order_id: str) -> int:
    return int.from_bytes(
        hashlib.sha256(f"returns:order:{order_id}".encode()).digest()[:8], "big", signed=True
    )


def _return_from(row: asyncpg.Record, lines: Sequence[asyncpg.Record]) -> m.Return:
    return m.Return(
        return_id=row["return_id"],
        request_id=row["request_id"],
        order_id=row["order_id"],
        source=m.PurchaseSource(row["source"]),
        purchase_channel=row["purchase_channel"],
        initiated_channel=row["initiated_channel"],
        method=m.ReturnMethod(row["method"]),
        status=m.ReturnStatus(row["status"]),
        receiving_location_id=row["receiving_location_id"],
        created_at=row["created_at"],
        expected_at=row["expected_at"],
        currency=row["currency"],
        customer_id=row["customer_id"],
        exchange_id=row["exchange_id"],
        label_fee_charged=row["label_fee_charged"],
        lines=tuple(
            m.ReturnLine(
                line_id=x["line_id"],
                sku=x["sku"],
                category=x["category"],
                quantity=x["quantity"],
                reason=m.Reason(x["reason"]),
                unit_price_minor=x["unit_price_minor"],
                note=x["note"],
                received_quantity=x["received_quantity"],
                refunded_minor=x["refunded_minor"],
            )
            for x in lines
        ),
    )


class PgTransaction:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def lock_order(self, order_id: str) -> None:
        await self._conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(order_id))

    async def _load(self, rows: Sequence[asyncpg.Record]) -> list[m.Return]:
        if not rows:
            return []
        ids = [r["return_id"] for r in rows]
        lines = await self._conn.fetch(
            "SELECT * FROM return_lines WHERE return_id = ANY($1::text[]) ORDER BY return_id, position", ids
        )
        by_return: dict[str, list[asyncpg.Record]] = {}
        for line in lines:
            by_return.setdefault(line["return_id"], []).append(line)
        return [_return_from(r, by_return.get(r["return_id"], [])) for r in rows]

    async def find_by_request(self, order_id: str, request_id: str) -> tuple[m.Return, str] | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM returns WHERE order_id = $1 AND request_id = $2", order_id, request_id
        )
        if row is None:
            return None
        return (await self._load([row]))[0], row["fingerprint"]

    async def returns_of_order(self, order_id: str) -> list[m.Return]:
        rows = await self._conn.fetch(
            "SELECT * FROM returns WHERE order_id = $1 ORDER BY created_at, return_id", order_id
        )
        return await self._load(rows)

    async def get(self, return_id: str, *, for_update: bool = False) -> m.Return | None:
        lock = " FOR UPDATE" if for_update else ""
        row = await self._conn.fetchrow(f"SELECT * FROM returns WHERE return_id = $1{lock}", return_id)  # noqa: S608
        return None if row is None else (await self._load([row]))[0]

    async def insert(self, ret: m.Return, fingerprint: str) -> None:
        await self._conn.execute(
            """INSERT INTO returns (return_id, order_id, request_id, fingerprint, source, purchase_channel,
                 initiated_channel, method, status, receiving_location_id, created_at, expected_at, currency,
                 customer_id, exchange_id, label_fee_charged)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)""",
            ret.return_id,
            ret.order_id,
            ret.request_id,
            fingerprint,
            ret.source.value,
            ret.purchase_channel,
            ret.initiated_channel,
            ret.method.value,
            ret.status.value,
            ret.receiving_location_id,
            ret.created_at,
            ret.expected_at,
            ret.currency,
            ret.customer_id,
            ret.exchange_id,
            ret.label_fee_charged,
        )
        await self._conn.executemany(
            """INSERT INTO return_lines (return_id, line_id, position, sku, category, quantity, reason,
                 unit_price_minor, note, received_quantity, refunded_minor)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)""",
            [
                (
                    ret.return_id,
                    x.line_id,
                    i,
                    x.sku,
                    x.category,
                    x.quantity,
                    x.reason.value,
                    x.unit_price_minor,
                    x.note,
                    x.received_quantity,
                    x.refunded_minor,
                )
                for i, x in enumerate(ret.lines)
            ],
        )

    async def update(self, ret: m.Return) -> None:
        await self._conn.execute(
            "UPDATE returns SET status = $2, label_fee_charged = $3, exchange_id = $4, updated_at = now() "
            "WHERE return_id = $1",
            ret.return_id,
            ret.status.value,
            ret.label_fee_charged,
            ret.exchange_id,
        )
        await self._conn.executemany(
            "UPDATE return_lines SET received_quantity = $3, refunded_minor = $4 "
            "WHERE return_id = $1 AND line_id = $2",
            [(ret.return_id, x.line_id, x.received_quantity, x.refunded_minor) for x in ret.lines],
        )

    async def get_receipt(self, return_id: str, receipt_id: str) -> m.Receipt | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM receipts WHERE return_id = $1 AND receipt_id = $2", return_id, receipt_id
        )
        if row is None:
            return None
        return m.Receipt(
            receipt_id=row["receipt_id"],
            return_id=row["return_id"],
            location_id=row["location_id"],
            received_at=row["received_at"],
            items=codec.items_from_json(json.loads(row["items"])),
            refund=codec.refund_from_json(json.loads(row["refund"])),
        )

    async def insert_receipt(self, receipt: m.Receipt) -> None:
        await self._conn.execute(
            "INSERT INTO receipts (return_id, receipt_id, location_id, received_at, items, refund) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            receipt.return_id,
            receipt.receipt_id,
            receipt.location_id,
            receipt.received_at,
            json.dumps(codec.items_to_json(receipt.items)),
            json.dumps(codec.refund_to_json(receipt.refund)),
        )

    async def get_exchange(self, return_id: str) -> tuple[m.Exchange, bytes | None] | None:
        row = await self._conn.fetchrow("SELECT * FROM exchanges WHERE return_id = $1", return_id)
        if row is None:
            return None
        exchange = m.Exchange(
            exchange_id=row["exchange_id"],
            return_id=row["return_id"],
            order_id=row["order_id"],
            original_line_id=row["original_line_id"],
            original_sku=row["original_sku"],
            replacement_sku=row["replacement_sku"],
            quantity=row["quantity"],
            fulfilment=m.Fulfilment(row["fulfilment"]),
            location_id=row["location_id"],
            reservation_id=row["reservation_id"],
            created_at=row["created_at"],
            cancelled=row["cancelled"],
            handed_over_at=row["handed_over_at"],
            handover_update_id=row["handover_update_id"],
        )
        return exchange, row["shipping_address"]

    async def exchange_return_id(self, exchange_id: str) -> str | None:
        return await self._conn.fetchval(
            "SELECT return_id FROM exchanges WHERE exchange_id = $1", exchange_id
        )

    async def hand_over_exchange(self, exchange: m.Exchange) -> None:
        await self._conn.execute(
            "UPDATE exchanges SET handed_over_at = $2, handover_update_id = $3 WHERE exchange_id = $1",
            exchange.exchange_id,
            exchange.handed_over_at,
            exchange.handover_update_id,
        )

    async def insert_exchange(self, exchange: m.Exchange, address: bytes | None) -> None:
        await self._conn.execute(
            """INSERT INTO exchanges (exchange_id, return_id, order_id, original_line_id, original_sku,
                 replacement_sku, quantity, fulfilment, location_id, reservation_id, shipping_address,
                 created_at)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)""",
            exchange.exchange_id,
            exchange.return_id,
            exchange.order_id,
            exchange.original_line_id,
            exchange.original_sku,
            exchange.replacement_sku,
            exchange.quantity,
            exchange.fulfilment.value,
            exchange.location_id,
            exchange.reservation_id,
            address,
            exchange.created_at,
        )

    async def cancel_exchange(self, exchange_id: str) -> None:
        await self._conn.execute("UPDATE exchanges SET cancelled = true WHERE exchange_id = $1", exchange_id)

    async def add_tasks(self, tasks: Sequence[m.InventoryTask], *, done: bool = False) -> None:
        # Pending tasks are applied inline right after commit; the worker only picks up those
        # still pending a moment later.
        await self._conn.executemany(
            """INSERT INTO inventory_tasks (task_id, return_id, kind, sku, location_id, quantity, expected_at,
                 reservation_id, reference, supply_id, done_at, next_attempt_at)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10, CASE WHEN $11 THEN now() END,
                       now() + interval '2 seconds')
               ON CONFLICT (task_id) DO NOTHING""",
            [
                (
                    t.task_id,
                    t.reference,
                    t.kind.value,
                    t.sku,
                    t.location_id,
                    t.quantity,
                    t.expected_at,
                    t.reservation_id,
                    t.reference,
                    t.supply_id,
                    done,
                )
                for t in tasks
            ],
        )

    async def emit(self, event: Event) -> None:
        # Steps of one receipt share a timestamp: the per-return sequence keeps their order
        # on the timeline (tracking orders by occurred_at, then sequence).
        sequence = await self._conn.fetchval(
            "SELECT count(*) + 1 FROM return_steps WHERE return_id = $1", event.return_id
        )
        envelope = build_envelope(
            event.payload,
            source=SOURCE,
            key=event.order_id,
            occurred_at=event.occurred_at,
            sequence=sequence,
        )
        await enqueue_event(self._conn, RETURN_EVENTS, envelope)
        await self._conn.execute(
            "INSERT INTO return_steps (return_id, type, occurred_at, location_id, summary) "
            "VALUES ($1,$2,$3,$4,$5)",
            event.return_id,
            event.type,
            event.occurred_at,
            event.location_id,
            event.summary,
        )

    async def view(self, return_id: str, rules: ReturnRules) -> codec.ReturnView | None:
        ret = await self.get(return_id)
        if ret is None:
            return None
        found = await self.get_exchange(return_id)
        steps = await self._conn.fetch(
            "SELECT type, occurred_at, location_id, summary FROM return_steps "
            "WHERE return_id = $1 ORDER BY id",
            return_id,
        )
        exchanged = frozenset({found[0].original_line_id}) if found else frozenset()
        estimate = m.estimate_refund(ret, rules, exchanged_line_ids=exchanged).total_minor
        return codec.ReturnView(
            ret=ret,
            exchange=found[0] if found else None,
            exchange_address=found[1] if found else None,
            steps=tuple(
                codec.Step(s["type"], s["occurred_at"], s["location_id"], s["summary"]) for s in steps
            ),
            estimated_refund_minor=estimate,
        )


class PgReturnsStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgTransaction]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield PgTransaction(conn)

    async def returns_of_order(self, order_id: str) -> list[str]:
        rows = await self._pool.fetch(
            "SELECT return_id FROM returns WHERE order_id = $1 ORDER BY created_at, return_id", order_id
        )
        return [r["return_id"] for r in rows]

    async def pending_tasks(self, limit: int) -> list[m.InventoryTask]:
        # Incoming-supply tasks set absolute quantities: an older one still pending must not
        # overwrite a newer one, so it is retired instead of retried.
        await self._pool.execute(
            "UPDATE inventory_tasks t SET done_at = now(), last_error = 'superseded' "
            "WHERE t.done_at IS NULL AND t.supply_id <> '' AND EXISTS (SELECT 1 FROM inventory_tasks n "
            "WHERE n.supply_id = t.supply_id AND n.location_id = t.location_id "
            "AND n.created_at > t.created_at)"
        )
        rows = await self._pool.fetch(
            "SELECT * FROM inventory_tasks WHERE done_at IS NULL AND parked_at IS NULL "
            "AND next_attempt_at <= now() ORDER BY created_at, task_id LIMIT $1",
            limit,
        )
        return [_task(r) for r in rows]

    async def parked_tasks(self, limit: int) -> list[m.ParkedTask]:
        rows = await self._pool.fetch(
            "SELECT * FROM inventory_tasks WHERE done_at IS NULL AND parked_at IS NOT NULL "
            "ORDER BY parked_at, task_id LIMIT $1",
            limit,
        )
        return [
            m.ParkedTask(
                task=_task(r),
                return_id=r["return_id"],
                reason=r["last_error"],
                attempts=r["attempts"],
                created_at=r["created_at"],
                parked_at=r["parked_at"],
            )
            for r in rows
        ]

    async def task_parked(self, task_id: str, reason: str) -> None:
        await self._pool.execute(
            "UPDATE inventory_tasks SET attempts = attempts + 1, last_error = $2, parked_at = now() "
            "WHERE task_id = $1 AND done_at IS NULL",
            task_id,
            reason[:500],
        )

    async def unpark_task(self, task_id: str) -> tuple[m.TaskState, m.InventoryTask] | None:
        """Take a parked task out of the parking (due at once); a task not parked is left as
        it is. Its state before, and the task; None when unknown."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT * FROM inventory_tasks WHERE task_id = $1 FOR UPDATE", task_id)
            if row is None:
                return None
            if row["done_at"] is not None:
                return m.TaskState.DONE, _task(row)
            if row["parked_at"] is None:
                return m.TaskState.PENDING, _task(row)
            await conn.execute(
                "UPDATE inventory_tasks SET parked_at = NULL, next_attempt_at = now() WHERE task_id = $1",
                task_id,
            )
            return m.TaskState.PARKED, _task(row)

    async def task_done(self, task_id: str) -> None:
        await self._pool.execute(
            "UPDATE inventory_tasks SET done_at = now() WHERE task_id = $1 AND done_at IS NULL", task_id
        )

    async def task_failed(self, task_id: str, error: str, retry_in: timedelta) -> None:
        await self._pool.execute(
            "UPDATE inventory_tasks SET attempts = attempts + 1, last_error = $2, "
            "next_attempt_at = now() + $3::interval WHERE task_id = $1 AND done_at IS NULL",
            task_id,
            error[:500],
            retry_in,
        )

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")


def _task(r: Any) -> m.InventoryTask:
    return m.InventoryTask(
        task_id=r["task_id"],
        kind=m.TaskKind(r["kind"]),
        sku=r["sku"],
        location_id=r["location_id"],
        quantity=r["quantity"],
        expected_at=r["expected_at"],
        reservation_id=r["reservation_id"],
        reference=r["reference"],
        supply_id=r["supply_id"],
        attempts=r["attempts"],
    )
