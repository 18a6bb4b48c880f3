"""PostgreSQL persistence of orders, lines, sourcing decisions, quotes and rules versions.

Every function takes the caller's connection, so the service layer decides the transaction
(state change + outbox event commit together)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.orchestrator.domain.model import Point
from services.orchestrator.domain.orders import Address, Line, Order

OPEN_STATUSES = ("sourced", "accepted", "picked", "packed")


def _address_to_json(a: Address) -> str:
    point = [a.point.latitude, a.point.longitude] if a.point else None
    return json.dumps(
        {"line1": a.line1, "postal_code": a.postal_code, "city": a.city, "country": a.country, "point": point}
    )


def _address(raw: str | dict[str, Any]) -> Address:
    d = json.loads(raw) if isinstance(raw, str) else raw
    p = d.get("point")
    return Address(
        d.get("line1", ""),
        d.get("postal_code", ""),
        d.get("city", ""),
        d.get("country", ""),
        Point(p[0], p[1]) if p else None,
    )


def _line(r: asyncpg.Record) -> Line:
    excluded = r["excluded"]
    return Line(
        line_id=r["line_id"],
        sku=r["sku"],
        quantity=r["quantity"],
        unit_price_minor=r["unit_price_minor"],
        currency=r["currency"],
        location_id=r["location_id"],
        status=r["status"],
        reservation_id=r["reservation_id"],
        reason=r["reason"],
        excluded=json.loads(excluded) if isinstance(excluded, str) else dict(excluded),
        sourced_at=r["sourced_at"],
    )


def _order(r: asyncpg.Record, lines: Sequence[Line]) -> Order:
    return Order(
        order_id=r["order_id"],
        channel=r["channel"],
        channel_order_id=r["channel_order_id"],
        customer_id=r["customer_id"],
        method=r["method"],
        address=_address(r["address"]),
        pickup_location_id=r["pickup_location_id"],
        status=r["status"],
        lines=tuple(lines),
        promised_at=r["promised_at"],
        delivery_price_minor=r["delivery_price_minor"],
        currency=r["currency"],
        quote_id=r["quote_id"],
        rules_version=r["rules_version"] or 0,
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        version=r["version"],
    )


_LINES = "SELECT * FROM order_lines WHERE order_id = ANY($1::text[]) ORDER BY order_id, position"


async def _with_lines(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> list[Order]:
    if not rows:
        return []
    by_order: dict[str, list[Line]] = {}
    for r in await conn.fetch(_LINES, [r["order_id"] for r in rows]):
        by_order.setdefault(r["order_id"], []).append(_line(r))
    return [_order(r, by_order.get(r["order_id"], [])) for r in rows]


async def get_order(conn: asyncpg.Connection, order_id: str, *, for_update: bool = False) -> Order | None:
    if for_update:
        row = await conn.fetchrow("SELECT * FROM orders WHERE order_id = $1 FOR UPDATE", order_id)
    else:
        row = await conn.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
    orders = await _with_lines(conn, [row] if row else [])
    return orders[0] if orders else None


async def find_by_channel_id(
    conn: asyncpg.Connection, channel: str, channel_order_id: str
) -> tuple[Order, str] | None:
    row = await conn.fetchrow(
        "SELECT * FROM orders WHERE channel = $1 AND channel_order_id = $2", channel, channel_order_id
    )
    if row is None:
        return None
    orders = await _with_lines(conn, [row])
    return orders[0], row["payload_hash"]


async def list_orders(
    conn: asyncpg.Connection, customer_id: str, limit: int, before: tuple[datetime, str] | None
) -> list[Order]:
    if before is None:
        rows = await conn.fetch(
            "SELECT * FROM orders WHERE customer_id = $1 ORDER BY created_at DESC, order_id DESC LIMIT $2",
            customer_id,
            limit,
        )
    else:
        rows = await conn.fetch(
            "SELECT * FROM orders WHERE customer_id = $1 AND (created_at, order_id) < ($2, $3) "
            "ORDER BY created_at DESC, order_id DESC LIMIT $4",
            customer_id,
            before[0],
            before[1],
            limit,
        )
    return await _with_lines(conn, rows)


async def insert_order(conn: asyncpg.Connection, order: Order, payload_hash: str) -> None:
    await conn.execute(
        "INSERT INTO orders (order_id, channel, channel_order_id, customer_id, method, address,"
        " pickup_location_id, status, promised_at, delivery_price_minor, currency, quote_id, rules_version,"
        " payload_hash, version,"
        " created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6::jsonb,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$16)",
        order.order_id,
        order.channel,
        order.channel_order_id,
        order.customer_id,
        order.method,
        _address_to_json(order.address),
        order.pickup_location_id,
        order.status,
        order.promised_at,
        order.delivery_price_minor,
        order.currency,
        order.quote_id,
        order.rules_version,
        payload_hash,
        order.version,
        order.created_at,
    )
    await conn.executemany(
        "INSERT INTO order_lines (order_id, line_id, position, sku, quantity, unit_price_minor, currency,"
        " location_id, status, reservation_id, reason, excluded, sourced_at, updated_at)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12::jsonb,$13,$13)",
        [
            (
                order.order_id,
                li.line_id,
                i,
                li.sku,
                li.quantity,
                li.unit_price_minor,
                li.currency,
                li.location_id,
                li.status,
                li.reservation_id,
                li.reason,
                json.dumps(li.excluded),
                order.created_at,
            )
            for i, li in enumerate(order.lines)
        ],
    )


async def save_changes(
    conn: asyncpg.Connection, before: Order, after: Order, now: datetime, resourced: Sequence[str] = ()
) -> None:
    """Writes the lines that changed and the order's status and version."""
    old = {li.line_id: li for li in before.lines}
    changed = [li for li in after.lines if old.get(li.line_id) != li]
    if changed:
        await conn.executemany(
            "UPDATE order_lines SET location_id = $3, status = $4, reservation_id = $5, reason = $6,"
            " excluded = $7::jsonb, updated_at = $8,"
            " sourced_at = CASE WHEN $9 THEN $8 ELSE sourced_at END"
            " WHERE order_id = $1 AND line_id = $2",
            [
                (
                    after.order_id,
                    li.line_id,
                    li.location_id,
                    li.status,
                    li.reservation_id,
                    li.reason,
                    json.dumps(li.excluded),
                    now,
                    li.line_id in resourced,
                )
                for li in changed
            ],
        )
    await conn.execute(
        "UPDATE orders SET status = $2, version = $3, updated_at = $4 WHERE order_id = $1",
        after.order_id,
        after.status,
        after.version,
        now,
    )


async def touch_lines(
    conn: asyncpg.Connection, order_id: str, line_ids: Sequence[str], now: datetime, reason: str
) -> None:
    """Restart the acceptance clock of lines left where they are (nowhere better to go)."""
    await conn.execute(
        "UPDATE order_lines SET sourced_at = $3, reason = $4"
        " WHERE order_id = $1 AND line_id = ANY($2::text[])",
        order_id,
        list(line_ids),
        now,
        reason,
    )


async def open_orders_today(
    conn: asyncpg.Connection, since: datetime, location_ids: Sequence[str]
) -> dict[str, int]:
    """Orders with open lines sourced to each of ``location_ids`` since ``since`` (store workload)."""
    if not location_ids:
        return {}
    rows = await conn.fetch(
        "SELECT location_id, count(DISTINCT order_id) AS n FROM order_lines"
        " WHERE location_id = ANY($3::text[]) AND status = ANY($1::text[]) AND sourced_at >= $2"
        " GROUP BY location_id",
        list(OPEN_STATUSES),
        since,
        list(location_ids),
    )
    return {r["location_id"]: r["n"] for r in rows}


async def awaiting_acceptance(
    conn: asyncpg.Connection, sourced_before: datetime, limit: int
) -> list[tuple[str, str]]:
    # Skipping re-sourcing that failed and waits for its next attempt, or is parked.
    rows = await conn.fetch(
        "SELECT DISTINCT l.order_id, l.location_id FROM order_lines l WHERE l.status = 'sourced'"
        " AND l.sourced_at < $1 AND NOT EXISTS (SELECT 1 FROM background_failures f"
        " WHERE f.kind = 'accept_timeout' AND f.key = l.order_id || '@' || l.location_id"
        " AND (f.parked_at IS NOT NULL OR f.next_attempt_at > now())) LIMIT $2",
        sourced_before,
        limit,
    )
    return [(r["order_id"], r["location_id"]) for r in rows]


# --- background work that failed -------------------------------------------------------------


def work_key(order_id: str, location_id: str) -> str:
    return f"{order_id}@{location_id}"


async def work_failed(
    conn: asyncpg.Connection,
    kind: str,
    order_id: str,
    location_id: str,
    error: str,
    delay: Callable[[int], float] | None,
) -> int:
    """Record a failure: retried after ``delay(attempts)`` seconds, or parked when ``delay`` is
    None. Returns the attempts so far."""
    row = await conn.fetchrow(
        "INSERT INTO background_failures AS f (kind, key, order_id, location_id, attempts, last_error)"
        " VALUES ($1, $2, $3, $4, 1, $5) ON CONFLICT (kind, key) DO UPDATE"
        " SET attempts = f.attempts + 1, last_error = EXCLUDED.last_error RETURNING attempts",
        kind,
        work_key(order_id, location_id),
        order_id,
        location_id,
        error[:500],
    )
    attempts = int(row["attempts"])
    if delay is None:
        await conn.execute(
            "UPDATE background_failures SET parked_at = now() WHERE kind = $1 AND key = $2",
            kind,
            work_key(order_id, location_id),
        )
    else:
        await conn.execute(
            "UPDATE background_failures SET next_attempt_at = now() + make_interval(secs => $3)"
            " WHERE kind = $1 AND key = $2",
            kind,
            work_key(order_id, location_id),
            delay(attempts),
        )
    return attempts


async def work_succeeded(conn: asyncpg.Connection, kind: str, order_id: str, location_id: str) -> None:
    await conn.execute(
        "DELETE FROM background_failures WHERE kind = $1 AND key = $2", kind, work_key(order_id, location_id)
    )


async def parked_work(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM background_failures WHERE parked_at IS NOT NULL"
        " ORDER BY parked_at, kind, key LIMIT $1",
        limit,
    )


async def failed_work(conn: asyncpg.Connection, kind: str, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM background_failures WHERE kind = $1 AND key = $2", kind, key)


async def orders_open_at(conn: asyncpg.Connection, location_id: str, statuses: Sequence[str]) -> list[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT order_id FROM order_lines WHERE location_id = $1 AND status = ANY($2::text[])"
        " ORDER BY order_id",
        location_id,
        list(statuses),
    )
    return [r["order_id"] for r in rows]


async def claim_update(conn: asyncpg.Connection, order_id: str, update_id: str) -> bool:
    row = await conn.fetchrow(
        "INSERT INTO fulfilment_updates (order_id, update_id) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING RETURNING 1",
        order_id,
        update_id,
    )
    return row is not None


# --- sourcing decisions ---------------------------------------------------------------------


async def insert_decision(
    conn: asyncpg.Connection,
    *,
    decision_id: str,
    order_id: str,
    trigger: str,
    reason: str,
    rules_version: int,
    line_ids: Sequence[str],
    sourced: bool,
    request: dict[str, Any],
    candidates: list[dict[str, Any]],
    decision: dict[str, Any],
    promised_at: datetime | None,
    decided_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO sourcing_decisions (decision_id, order_id, trigger, reason, rules_version, line_ids,"
        " sourced,"
        " request, candidates, decision, promised_at, decided_at)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8::jsonb,$9::jsonb,$10::jsonb,$11,$12)",
        decision_id,
        order_id,
        trigger,
        reason,
        rules_version,
        list(line_ids),
        sourced,
        json.dumps(request),
        json.dumps(candidates),
        json.dumps(decision),
        promised_at,
        decided_at,
    )


async def decisions_of(conn: asyncpg.Connection, order_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT * FROM sourcing_decisions WHERE order_id = $1 ORDER BY decided_at, decision_id", order_id
        )
    )


async def count_decisions(conn: asyncpg.Connection, order_id: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM sourcing_decisions WHERE order_id = $1", order_id))


async def recent_placements(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """The stored inputs of the last ``limit`` orders' initial sourcing, newest first."""
    return list(
        await conn.fetch(
            "SELECT d.order_id, d.request, d.candidates, o.promised_at FROM sourcing_decisions d"
            " JOIN orders o USING (order_id) WHERE d.trigger = 'order_placed'"
            " ORDER BY d.decided_at DESC LIMIT $1",
            limit,
        )
    )


# --- quotes ---------------------------------------------------------------------------------


async def insert_quote(
    conn: asyncpg.Connection,
    quote_id: str,
    channel: str,
    request: dict[str, Any],
    options: list[dict[str, Any]],
    created_at: datetime,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO quotes (quote_id, channel, request, options, created_at, expires_at)"
        " VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6)",
        quote_id,
        channel,
        json.dumps(request),
        json.dumps(options),
        created_at,
        expires_at,
    )


async def get_quote(conn: asyncpg.Connection, quote_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM quotes WHERE quote_id = $1", quote_id)


async def delete_expired_quotes(conn: asyncpg.Connection, before: datetime) -> int:
    result = await conn.execute("DELETE FROM quotes WHERE expires_at < $1", before)
    return int(result.split()[-1])


# --- rules versions -------------------------------------------------------------------------


async def insert_rule_version(
    conn: asyncpg.Connection, *, name: str, document: str, author: str, comment: str, request_id: str = ""
) -> tuple[asyncpg.Record, bool]:
    """Stores a draft; with a request id, a second call returns the first one's row. Returns the
    row and whether it was stored by an earlier call.

    Version numbers have no gaps: drafts are numbered one after the other under a lock that
    serialises their writers (reads go on), and a retried request finds its row before any
    number is taken — a sequence would burn one per conflicting or rolled-back insert."""
    async with conn.transaction():
        await conn.execute("LOCK TABLE rule_versions IN SHARE ROW EXCLUSIVE MODE")
        if request_id:
            earlier = await conn.fetchrow("SELECT * FROM rule_versions WHERE request_id = $1", request_id)
            if earlier is not None:
                return earlier, True
        row = await conn.fetchrow(
            "INSERT INTO rule_versions (version, status, name, document, author, comment, request_id)"
            " SELECT COALESCE(MAX(version), 0) + 1, 'draft', $1, $2, $3, $4, NULLIF($5, '')"
            " FROM rule_versions RETURNING *",
            name,
            document,
            author,
            comment,
            request_id,
        )
    assert row is not None
    return row, False


async def get_rule_version(conn: asyncpg.Connection, version: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM rule_versions WHERE version = $1", version)


async def live_rule_version(conn: asyncpg.Connection) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM rule_versions WHERE status = 'live'")


async def live_version_number(conn: asyncpg.Connection) -> int | None:
    value = await conn.fetchval("SELECT version FROM rule_versions WHERE status = 'live'")
    return int(value) if value is not None else None


async def make_live(conn: asyncpg.Connection, version: int, action: str, now: datetime) -> asyncpg.Record:
    await conn.execute(
        "UPDATE rule_versions SET status = 'retired' WHERE status = 'live' AND version <> $1", version
    )
    row = await conn.fetchrow(
        "UPDATE rule_versions SET status = 'live', published_at = $2 WHERE version = $1 RETURNING *",
        version,
        now,
    )
    await conn.execute(
        "INSERT INTO rule_publications (version, action, published_at) VALUES ($1, $2, $3)",
        version,
        action,
        now,
    )
    assert row is not None
    return row


async def publication_history(conn: asyncpg.Connection) -> list[int]:
    """Versions made live, most recent first."""
    return [r["version"] for r in await conn.fetch("SELECT version FROM rule_publications ORDER BY id DESC")]


async def list_rule_versions(
    conn: asyncpg.Connection, limit: int, before: int | None
) -> list[asyncpg.Record]:
    if before:
        return list(
            await conn.fetch(
                "SELECT * FROM rule_versions WHERE version < $1 ORDER BY version DESC LIMIT $2", before, limit
            )
        )
    return list(await conn.fetch("SELECT * FROM rule_versions ORDER BY version DESC LIMIT $1", limit))


# --- placements between reservation and commit ---


async def placement_generation(conn: asyncpg.Connection, order_id: str) -> int:
    """The generation of reservation ids a new placement of ``order_id`` uses: the next one once
    the sweeper has given an earlier attempt's stock back, else the current one (a retry of a
    placement still open reuses its ids, and so its reservation)."""
    row = await conn.fetchrow("SELECT generation, released_at FROM placements WHERE order_id = $1", order_id)
    if row is None:
        return 1
    return row["generation"] + (1 if row["released_at"] is not None else 0)


async def begin_placement(conn: asyncpg.Connection, order_id: str, generation: int, now: datetime) -> None:
    """Records that ``order_id`` is about to reserve stock under ``generation``'s ids."""
    await conn.execute(
        "INSERT INTO placements (order_id, generation, started_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (order_id) DO UPDATE SET started_at = EXCLUDED.started_at,"
        "   generation = EXCLUDED.generation, released_at = NULL",
        order_id,
        generation,
        now,
    )


async def end_placement(conn: asyncpg.Connection, order_id: str) -> None:
    await conn.execute("DELETE FROM placements WHERE order_id = $1", order_id)


async def abandoned_placements(
    conn: asyncpg.Connection, started_before: datetime, limit: int
) -> list[tuple[str, int]]:
    rows = await conn.fetch(
        "SELECT order_id, generation FROM placements WHERE released_at IS NULL AND started_at < $1"
        " ORDER BY started_at LIMIT $2",
        started_before,
        limit,
    )
    return [(r["order_id"], r["generation"]) for r in rows]


async def placement_released(conn: asyncpg.Connection, order_id: str, generation: int, now: datetime) -> None:
    await conn.execute(
        "UPDATE placements SET released_at = $3 WHERE order_id = $1 AND generation = $2",
        order_id,
        generation,
        now,
    )


async def order_exists(conn: asyncpg.Connection, order_id: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM orders WHERE order_id = $1)", order_id))
