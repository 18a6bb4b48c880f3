"""Rebuild the inventory's Redis state from the Kafka ledger.

Redis is the fast state, not the only record: every change is a StockMovementRecorded on
``tutti.inventory.movements.v1`` carrying the counters AFTER the movement, the reservation
line state and the incoming supplies, plus the master data events (SKUs, locations, channel
policies). Replaying the ledger keeps, per SKU x location, the movement with the highest
sequence, per reservation line the latest line state, and per master-data key the latest
event; that is the whole state. Idempotency records of movements, POS sales and partial
releases are restored too, so a client retrying after the loss never counts twice.

    python -m services.inventory.rebuild --redis-url redis://127.0.0.1:16379/0 [--force]

Refuses to write into a non-empty Redis db unless --force (then it overwrites keys it
rebuilds, and leaves others alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from tutti.events.v1 import envelope_pb2
from tutti.inventory.v1 import events_pb2
from tutti.inventory.v1 import inventory_pb2 as pb

from runtime.kafka import INVENTORY_MOVEMENTS, security_options
from runtime.settings import CommonSettings, KafkaSecurity
from services.inventory.adapters import codec
from services.inventory.adapters.redis_store import (
    ARMED,
    OUTBOX,
    RELAYED,
    arming_value,
    location_to_json,
    policy_fields,
    pos_sale_key,
    pos_sale_record,
    sku_to_json,
    store_id,
)
from services.inventory.adapters.relay import STORE_HEADER
from services.inventory.domain import model

log = logging.getLogger(__name__)

MV_RETENTION_MS = 7 * 24 * 3600 * 1000
# A catch-up reads the ledger from this long before the last entry Redis knows was relayed
# (producer clocks and Redis' may differ a little; reading more is harmless).
CATCH_UP_MARGIN_MS = 5 * 60 * 1000
IDEM_TTL_S = 7 * 86400
# Till sales stay readable this long (GetPosSale), as the service keeps them.
POS_SALE_RETENTION_S = 86400 * int(os.environ.get("TUTTI_INVENTORY_POS_SALE_RETENTION_DAYS", "60"))
CLOSED_TTL_S = 7 * 86400


Order = tuple[int, int, int]


def _order(event_id: str) -> tuple[int, int, int]:
    """Global order of a ledger entry from its id ``inv-<ms>-<seq>-<index>`` (the outbox stream id)."""
    _, ms, seq, index = event_id.split("-")[:4]
    return int(ms), int(seq), int(index)


def _kind(m: events_pb2.StockMovementRecorded) -> str:
    return events_pb2.MovementKind.Name(m.kind).removeprefix("MOVEMENT_KIND_")


@dataclass
class LedgerState:
    """The state the ledger describes, built in memory before writing."""

    counters: dict[tuple[str, str], events_pb2.StockMovementRecorded] = field(default_factory=dict)
    incoming: dict[tuple[str, str], list[pb.IncomingSupply]] = field(default_factory=dict)
    physical: dict[tuple[str, str], list[events_pb2.StockMovementRecorded]] = field(default_factory=dict)
    snapshot_as_of: dict[tuple[str, str], int] = field(default_factory=dict)
    incoming_seq: dict[tuple[str, str], int] = field(default_factory=dict)
    lines: dict[str, dict[tuple[str, str], tuple[tuple[int, int, int], events_pb2.StockMovementRecorded]]] = (
        field(default_factory=dict)
    )
    reservations: dict[str, tuple[tuple[int, int, int], events_pb2.StockMovementRecorded]] = field(
        default_factory=dict
    )
    idempotency: dict[str, int] = field(default_factory=dict)
    # "pos:<terminal>:<sale>" → the sale as GetPosSale shows it: location, return?, time, lines.
    pos_sales: dict[str, dict[str, Any]] = field(default_factory=dict)
    skus: dict[str, model.Sku] = field(default_factory=dict)
    locations: dict[str, tuple[tuple[int, int, int], model.Location]] = field(default_factory=dict)
    policies: dict[str, tuple[tuple[int, int, int], model.ChannelPolicy]] = field(default_factory=dict)
    # Highest outbox stream id (ms, seq) seen on the ledger, whatever the SKU filter.
    last_entry: tuple[int, int] = (0, 0)
    # Per SKU x location: the sum of the movements' deltas (on_hand, reserved, quarantined), and
    # the earliest movement read (its counters before it are where the sums start).
    sums: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    first: dict[tuple[str, str], tuple[Order, events_pb2.StockMovementRecorded]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def apply(self, envelope: envelope_pb2.EventEnvelope, skus: Collection[str] | None) -> None:
        if envelope.event_id in self.seen:  # a relay retry put it there twice
            return
        self.seen.add(envelope.event_id)
        order = _order(envelope.event_id)
        self.last_entry = max(self.last_entry, order[:2])
        if envelope.type == "tutti.inventory.v1.StockMovementRecorded":
            m = events_pb2.StockMovementRecorded()
            envelope.payload.Unpack(m)
            if skus is not None and m.sku not in skus:
                return
            self._movement(m, order)
        elif envelope.type == "tutti.inventory.v1.SkuRegistered":
            e = events_pb2.SkuRegistered()
            envelope.payload.Unpack(e)
            if skus is None or e.sku.sku in skus:
                self.skus[e.sku.sku] = model.Sku(e.sku.sku, e.sku.name, e.sku.category, e.sku.returnable)
        elif envelope.type == "tutti.inventory.v1.LocationUpserted":
            e2 = events_pb2.LocationUpserted()
            envelope.payload.Unpack(e2)
            prev = self.locations.get(e2.location_id)
            if prev is None or prev[0] < order:
                self.locations[e2.location_id] = (order, codec.location_from_pb(e2.location))
        elif envelope.type == "tutti.inventory.v1.ChannelPolicySet":
            e3 = events_pb2.ChannelPolicySet()
            envelope.payload.Unpack(e3)
            p = e3.policy
            policy = model.ChannelPolicy(
                codec.channel_name(p.channel), p.buffer_units, frozenset(p.excluded_location_ids)
            )
            prev_p = self.policies.get(policy.channel)
            if prev_p is None or prev_p[0] < order:
                self.policies[policy.channel] = (order, policy)

    def totals(self, key: tuple[str, str]) -> tuple[int, int, int]:
        """On-hand, reserved and quarantined of ``key`` from the movements' deltas. They equal the
        last movement's counters, except on a ledger written before Redis was armed against it
        (rebuild.catch_up), where a movement made on counters that had lost their last second
        recorded counters missing those losses — and reused their sequence numbers."""
        _, m = self.first[key]
        oh, rs, qt = self.sums[key]
        return (
            m.after.on_hand - m.on_hand_delta + oh,
            m.after.reserved - m.reserved_delta + rs,
            m.after.quarantined - m.quarantined_delta + qt,
        )

    def _movement(self, m: events_pb2.StockMovementRecorded, order: tuple[int, int, int]) -> None:
        key = (m.sku, m.location_id)
        kind = _kind(m)
        total = self.sums.setdefault(key, [0, 0, 0])
        total[0] += m.on_hand_delta
        total[1] += m.reserved_delta
        total[2] += m.quarantined_delta
        if key not in self.first or order < self.first[key][0]:
            self.first[key] = (order, m)
        prev = self.counters.get(key)
        if prev is None or prev.sequence < m.sequence:
            self.counters[key] = m
        if (m.incoming_changed or kind == "INCOMING_SUPPLY_SET") and self.incoming_seq.get(
            key, -1
        ) < m.sequence:
            self.incoming_seq[key] = m.sequence
            self.incoming[key] = list(m.incoming)
        if kind == "SNAPSHOT_APPLIED":
            self.snapshot_as_of[key] = max(self.snapshot_as_of.get(key, 0), m.snapshot_as_of.ToMilliseconds())
        elif m.on_hand_delta != 0:
            self.physical.setdefault(key, []).append(m)
        if m.reservation_id:
            per = self.lines.setdefault(m.reservation_id, {})
            line_prev = per.get(key)
            # Lines keep the order they were reserved in (index within the reserving script call).
            first = order if kind == "RESERVED" or line_prev is None else line_prev[0]
            latest = m if line_prev is None or line_prev[1].sequence < m.sequence else line_prev[1]
            per[key] = (first, latest)
            res_prev = self.reservations.get(m.reservation_id)
            if res_prev is None or res_prev[0] < order:
                self.reservations[m.reservation_id] = (order, m)
        if kind in {"POS_SOLD", "POS_RETURNED"} and m.reference.startswith("pos:"):
            sale = self.pos_sales.setdefault(
                m.reference,
                {"loc": m.location_id, "ret": kind == "POS_RETURNED", "at": 0, "lines": {}},
            )
            sale["at"] = max(sale["at"], m.occurred_at.ToMilliseconds())
            if kind == "POS_SOLD":  # what on_hand could not give is the shortfall: sold all the same
                sale["lines"][m.sku] = (-m.on_hand_delta + m.shortfall, False)
            else:
                sale["lines"][m.sku] = (m.on_hand_delta + m.quarantined_delta, m.quarantined_delta > 0)
        idem = _idempotency_key(kind, m.reference)
        if idem:
            self.idempotency[idem] = max(self.idempotency.get(idem, 0), m.occurred_at.ToMilliseconds())


def _idempotency_key(kind: str, reference: str) -> str:
    if not reference:
        return ""
    if reference.startswith("inv:idem:"):
        return reference
    if kind == "SNAPSHOT_APPLIED":
        return f"inv:idem:snap:{reference}"
    if kind in {"POS_SOLD", "POS_RETURNED"}:
        return f"inv:idem:{reference}"
    if kind in {
        "RECEIVED",
        "ADJUSTED",
        "TRANSFERRED_OUT",
        "TRANSFERRED_IN",
        "QUARANTINED",
        "QUARANTINE_RESTOCKED",
        "QUARANTINE_DISPOSED",
    }:
        return f"inv:idem:mv:{reference}"
    return ""


async def read_ledger(
    bootstrap: str,
    *,
    since_ms: int | None = None,
    skus: Collection[str] | None = None,
    topic: str = INVENTORY_MOVEMENTS.name,
    security: KafkaSecurity | None = None,
) -> LedgerState:
    """Reads the ledger from the beginning (or from ``since_ms``) up to its end at call time."""
    state = LedgerState()
    wanted = set(skus) if skus is not None else None
    async for envelope, _ in scan_ledger(bootstrap, topic, since_ms, security=security):
        state.apply(envelope, wanted)
    return state


async def scan_ledger(
    bootstrap: str, topic: str, since_ms: int | None, *, security: KafkaSecurity | None = None
) -> AsyncIterator[tuple[envelope_pb2.EventEnvelope, bytes]]:
    """Inventory's ledger records from the beginning (or from ``since_ms``) up to the end at call
    time, with the store each came from (header, b"" for records older than it)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        **security_options(security),
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        if since_ms is None:
            await consumer.seek_to_beginning(*partitions)
        else:
            found = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
            for tp in partitions:
                if found.get(tp) is None:
                    consumer.seek(tp, end[tp])
                else:
                    consumer.seek(tp, found[tp].offset)
        pending = {tp for tp in partitions if await consumer.position(tp) < end[tp]}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= end[tp]:
                        break
                    envelope = envelope_pb2.EventEnvelope.FromString(record.value)
                    if envelope.event_id.startswith("inv-"):
                        store = next((v for k, v in record.headers or () if k == STORE_HEADER), b"")
                        yield envelope, store
            pending = {tp for tp in pending if await consumer.position(tp) < end[tp]}
    finally:
        await consumer.stop()


def _write_master_data(pipe: Any, state: LedgerState) -> None:
    """The SKUs, locations and channel policies the ledger holds, as the master-data script writes them."""
    for sku in state.skus.values():
        pipe.hset("inv:skus", sku.sku, sku_to_json(sku))
    for _, loc in state.locations.values():
        pipe.hset("inv:locations", loc.location_id, location_to_json(loc))
        pipe.hset("inv:locstate", loc.location_id, "1" if loc.active else "0")
    for _, policy in state.policies.values():
        pipe.delete(f"inv:policy:{policy.channel}")
        for key, f, v in policy_fields(policy):
            pipe.hset(key, f, v)


async def write_state(redis: Redis, state: LedgerState, *, now_ms: int | None = None) -> dict[str, int]:
    """Writes the rebuilt state; returns counts of what was written."""
    now = now_ms or int(time.time() * 1000)
    pipe = redis.pipeline(transaction=False)
    _write_master_data(pipe, state)
    for (sku, loc), m in state.counters.items():
        incoming = state.incoming.get((sku, loc), [])
        asof = state.snapshot_as_of.get((sku, loc), 0)
        ts = m.occurred_at.ToMilliseconds()
        oh, rs, qt = state.totals((sku, loc))
        if (oh, rs, qt) != (m.after.on_hand, m.after.reserved, m.after.quarantined):
            log.warning(
                "the ledger's last counters differ from the sum of its movements; the sum is kept",
                extra={"sku": sku, "location_id": loc, "sequence": m.sequence},
            )
        pipe.hset(
            f"inv:{{{sku}}}:c:{loc}",
            mapping={
                "oh": oh,
                "rs": rs,
                "ss": m.after.safety_stock,
                "qt": qt,
                "inc": sum(s.quantity for s in incoming),
                "seq": m.sequence,
                "asof": asof,
                "ts": ts,
            },
        )
        pipe.sadd(f"inv:{{{sku}}}:locs", loc)
        in_key = f"inv:{{{sku}}}:in:{loc}"
        pipe.delete(in_key)
        for s in incoming:
            pipe.hset(
                in_key,
                s.supply_id,
                json.dumps({"q": s.quantity, "at": s.expected_at.ToMilliseconds(), "src": s.source}),
            )
        mv_key = f"inv:{{{sku}}}:mv:{loc}"
        pipe.delete(mv_key)
        trimmed = False
        for p in state.physical.get((sku, loc), []):
            at = p.occurred_at.ToMilliseconds()
            if at > asof and at >= ts - MV_RETENTION_MS:
                pipe.zadd(mv_key, {f"{p.sequence}:{p.on_hand_delta}": at})
            elif at > asof:
                trimmed = True
        if trimmed:  # as the scripts do: snapshots older than this would miss movements
            pipe.hset(f"inv:{{{sku}}}:c:{loc}", "mvt", ts - MV_RETENTION_MS)
    live = 0
    for res_id, (_, last) in state.reservations.items():
        lines = sorted(state.lines[res_id].values(), key=lambda x: x[0])
        status = pb.ReservationStatus.Name(last.reservation_status).removeprefix("RESERVATION_STATUS_")
        exp = last.hold_expires_at.ToMilliseconds() if last.HasField("hold_expires_at") else 0
        key = f"inv:res:{res_id}"
        closed = status not in ("HELD", "CONFIRMED")
        ttl = CLOSED_TTL_S - (now - last.occurred_at.ToMilliseconds()) // 1000
        if closed and ttl <= 0:
            continue
        pipe.delete(key)
        pipe.hset(
            key,
            mapping={
                "st": status,
                "ch": codec.channel_name(last.channel),
                "ord": last.order_id,
                "exp": exp,
                "cr": last.reservation_created_at.ToMilliseconds(),
                "fp": "",
                "lines": json.dumps(
                    [
                        {
                            "s": m.sku,
                            "l": m.location_id,
                            "q": m.reservation_line_quantity,
                            "r": m.reservation_line_released,
                            "f": m.reservation_line_fulfilled,
                        }
                        for _, m in lines
                    ]
                ),
            },
        )
        if closed:
            pipe.expire(key, ttl)
        else:
            live += 1
            if status == "HELD" and exp:
                pipe.zadd("inv:holds", {res_id: exp})
    marker = json.dumps({"fp": "", "rebuilt": True})
    for key, at in state.idempotency.items():
        ttl = IDEM_TTL_S - (now - at) // 1000
        if ttl > 0:
            pipe.set(key, marker, ex=ttl)
    for reference, sale in state.pos_sales.items():
        ttl = POS_SALE_RETENTION_S - (now - sale["at"]) // 1000
        if ttl > 0:
            _, terminal_id, sale_id = reference.split(":", 2)
            lines = [(sku, q, d) for sku, (q, d) in sale["lines"].items()]
            record = pos_sale_record(sale["loc"], sale["ret"], lines, sale["at"])
            pipe.set(pos_sale_key(terminal_id, sale_id), json.dumps(record), ex=ttl)
    await pipe.execute()
    await _outbox_after(redis, state.last_entry)
    # The rebuilt state is the ledger's: mutations may run on this Redis process.
    if state.last_entry != (0, 0):
        await redis.set(RELAYED, f"{state.last_entry[0]}-{state.last_entry[1]}", nx=True)
    await redis.set(ARMED, await arming_value(redis))
    return {
        "counters": len(state.counters),
        "reservations_live": live,
        "skus": len(state.skus),
        "locations": len(state.locations),
        "idempotency_records": len(state.idempotency),
        "pos_sales": len(state.pos_sales),
    }


async def _outbox_after(redis: Redis, last: tuple[int, int]) -> None:
    """Moves the outbox's last id past every id already on the ledger: event ids are
    ``inv-<outbox id>-<index>`` and consumers drop ids they have seen, so a rebuilt db whose clock
    is behind the old one must not hand out ids the ledger already holds. (A placeholder entry
    with no movements is added at that id and deleted; the relay would relay nothing for it.)"""
    if last == (0, 0):
        return
    current = (0, 0)
    try:
        info = await redis.xinfo_stream(OUTBOX)
        raw = info.get("last-generated-id") or info.get(b"last-generated-id") or b"0-0"
        ms, seq = (raw.decode() if isinstance(raw, bytes) else str(raw)).split("-")
        current = (int(ms), int(seq))
    except ResponseError:  # no outbox stream yet
        pass
    if current >= last:
        return
    entry = f"{last[0]}-{last[1]}"
    await redis.xadd(OUTBOX, {"m": "[]"}, id=entry)
    await redis.xdel(OUTBOX, entry)


async def catch_up(
    redis: Redis,
    bootstrap: str,
    *,
    closed_ttl_s: int = CLOSED_TTL_S,
    topic: str = INVENTORY_MOVEMENTS.name,
    security: KafkaSecurity | None = None,
) -> dict[str, int]:
    """Brings a Redis that may have lost its last writes (a power cut loses up to AOF everysec's
    last second; a failover, a replica's lag) back to the ledger, then arms it (lua/common.lua:
    mutations are refused until then, so nothing is computed from stale counters and sequence
    numbers never repeat).

    Reads this store's ledger records from a little before the last entry Redis knows was relayed
    (``inv:ledger:relayed``) to the end, and replays what Redis lacks: per SKU x location every
    movement whose sequence is above Redis' (its deltas on the counters, its supplies, snapshot
    time and physical movement), the reservation lines and records they carry, the idempotency
    records and till sales they make, and the master data relayed after that entry. A Redis that
    never relayed anything (new, or wiped: see ``rebuild``) has nothing to compare and is armed."""
    armed = await arming_value(redis)
    me = (await store_id(redis)).encode()
    marker = await redis.get(RELAYED)
    counts = {"movements": 0, "reservations": 0, "master_data": 0, "mismatched_counters": 0}
    if marker is not None:
        ms, seq = marker.decode().split("-")
        since = (int(ms), int(seq))
        start_ms = since[0] - CATCH_UP_MARGIN_MS
        ledger = scan_ledger(bootstrap, topic, start_ms, security=security)
        records = [env async for env, store in ledger if store == me]
        counts = await _replay(redis, records, since, closed_ttl_s)
    await redis.set(ARMED, armed)
    return counts


async def _replay(
    redis: Redis, records: list[envelope_pb2.EventEnvelope], since: tuple[int, int], closed_ttl_s: int
) -> dict[str, int]:
    now = int(time.time() * 1000)
    in_outbox = {
        (i.decode() if isinstance(i, bytes) else str(i)) for i, _ in await redis.xrange(OUTBOX, "-", "+")
    }
    seen: set[str] = set()
    moves: dict[tuple[str, str], dict[int, tuple[Order, events_pb2.StockMovementRecorded]]] = {}
    meta = LedgerState()
    last = since
    for envelope in records:
        if envelope.event_id in seen:  # a relay retry put it there twice
            continue
        seen.add(envelope.event_id)
        order = _order(envelope.event_id)
        last = max(last, order[:2])
        if envelope.type == "tutti.inventory.v1.StockMovementRecorded":
            m = events_pb2.StockMovementRecorded()
            envelope.payload.Unpack(m)
            moves.setdefault((m.sku, m.location_id), {}).setdefault(m.sequence, (order, m))
        elif order[:2] > since and f"{order[0]}-{order[1]}" not in in_outbox:
            meta.apply(envelope, None)  # master data Redis lacks (absolute: the latest wins)
    state = LedgerState()
    pipe = redis.pipeline(transaction=False)
    replayed = mismatched = 0
    for (sku, loc), by_seq in moves.items():
        key = f"inv:{{{sku}}}:c:{loc}"
        cur = {k.decode(): int(v) for k, v in (await redis.hgetall(key)).items()}
        todo = [by_seq[q] for q in sorted(by_seq) if q > cur.get("seq", 0)]
        if not todo:
            continue
        c = {f: cur.get(f, 0) for f in ("oh", "rs", "ss", "qt", "inc", "seq", "asof", "ts")}
        for order, m in todo:
            kind = _kind(m)
            at = m.occurred_at.ToMilliseconds()
            c["oh"] += m.on_hand_delta
            c["rs"] += m.reserved_delta
            c["qt"] += m.quarantined_delta
            c["ss"] = m.after.safety_stock
            c["seq"], c["ts"] = m.sequence, at
            if (c["oh"], c["rs"], c["qt"]) != (m.after.on_hand, m.after.reserved, m.after.quarantined):
                mismatched += 1
                log.warning(
                    "ledger movement's counters differ from Redis' plus its deltas",
                    extra={"sku": sku, "location_id": loc, "sequence": m.sequence},
                )
            if m.incoming_changed or kind == "INCOMING_SUPPLY_SET":
                in_key = f"inv:{{{sku}}}:in:{loc}"
                pipe.delete(in_key)
                for sup in m.incoming:
                    value = {"q": sup.quantity, "at": sup.expected_at.ToMilliseconds(), "src": sup.source}
                    pipe.hset(in_key, sup.supply_id, json.dumps(value))
                c["inc"] = sum(sup.quantity for sup in m.incoming)
            mv_key = f"inv:{{{sku}}}:mv:{loc}"
            if kind == "SNAPSHOT_APPLIED":
                c["asof"] = m.snapshot_as_of.ToMilliseconds()
                pipe.zremrangebyscore(mv_key, "-inf", c["asof"])
            elif m.on_hand_delta != 0:
                pipe.zadd(mv_key, {f"{m.sequence}:{m.on_hand_delta}": at})
            state._movement(m, order)  # reservation lines, idempotency records, till sales
            replayed += 1
        pipe.hset(key, mapping=c)
        pipe.sadd(f"inv:{{{sku}}}:locs", loc)
    _write_master_data(pipe, meta)
    for res_id, (_, latest) in state.reservations.items():
        await _merge_reservation(redis, pipe, res_id, state, latest, now, closed_ttl_s)
    marker = json.dumps({"fp": "", "rebuilt": True})
    for idem, at in state.idempotency.items():
        ttl = IDEM_TTL_S - (now - at) // 1000
        if ttl > 0:
            pipe.set(idem, marker, ex=ttl, nx=True)
    for reference, sale in state.pos_sales.items():
        ttl = POS_SALE_RETENTION_S - (now - sale["at"]) // 1000
        if ttl > 0:
            _, terminal_id, sale_id = reference.split(":", 2)
            lines = [(sku, q, d) for sku, (q, d) in sale["lines"].items()]
            record = pos_sale_record(sale["loc"], sale["ret"], lines, sale["at"])
            pipe.set(pos_sale_key(terminal_id, sale_id), json.dumps(record), ex=ttl, nx=True)
    await pipe.execute()
    # New entries (event ids) and so new movements come after everything on the ledger.
    await _outbox_after(redis, last)
    master = len(meta.skus) + len(meta.locations) + len(meta.policies)
    return {
        "movements": replayed,
        "reservations": len(state.reservations),
        "master_data": master,
        "mismatched_counters": mismatched,
    }


async def _merge_reservation(
    redis: Redis,
    pipe: Any,
    res_id: str,
    state: LedgerState,
    latest: events_pb2.StockMovementRecorded,
    now: int,
    closed_ttl_s: int,
) -> None:
    """Writes reservation ``res_id`` as Redis has it with the lines and state the replayed
    movements give (the record itself is restored when it was lost with them)."""
    key = f"inv:res:{res_id}"
    raw = {k.decode(): v.decode() for k, v in (await redis.hgetall(key)).items()}
    lines: list[dict[str, Any]] = json.loads(raw["lines"]) if "lines" in raw else []
    for _, m in sorted(state.lines[res_id].values(), key=lambda x: x[0]):
        line = {
            "s": m.sku,
            "l": m.location_id,
            "q": m.reservation_line_quantity,
            "r": m.reservation_line_released,
            "f": m.reservation_line_fulfilled,
        }
        found = next((i for i, x in enumerate(lines) if (x["s"], x["l"]) == (m.sku, m.location_id)), None)
        if found is None:
            lines.append(line)
        else:
            lines[found] = line
    status = pb.ReservationStatus.Name(latest.reservation_status).removeprefix("RESERVATION_STATUS_")
    exp = latest.hold_expires_at.ToMilliseconds() if latest.HasField("hold_expires_at") else 0
    pipe.hset(
        key,
        mapping={
            "st": status,
            "ch": codec.channel_name(latest.channel),
            "ord": latest.order_id,
            "exp": exp,
            "cr": latest.reservation_created_at.ToMilliseconds(),
            "fp": raw.get("fp", ""),
            "lines": json.dumps(lines),
        },
    )
    if status in ("HELD", "CONFIRMED"):
        pipe.persist(key)
        if status == "HELD" and exp:
            pipe.zadd("inv:holds", {res_id: exp})
        else:
            pipe.zrem("inv:holds", res_id)
    else:
        pipe.zrem("inv:holds", res_id)
        pipe.expire(key, max(1, closed_ttl_s - (now - latest.occurred_at.ToMilliseconds()) // 1000))


async def rebuild(
    bootstrap: str,
    redis: Redis,
    *,
    since_ms: int | None = None,
    skus: Collection[str] | None = None,
    security: KafkaSecurity | None = None,
) -> dict[str, int]:
    state = await read_ledger(bootstrap, since_ms=since_ms, skus=skus, security=security)
    return await write_state(redis, state)


async def dump_state(
    redis: Redis, skus: Collection[str], location_ids: Collection[str] = ()
) -> dict[str, Any]:
    """A comparable picture of the state of ``skus`` (and master data of ``location_ids``)."""
    out: dict[str, Any] = {
        "counters": {},
        "incoming": {},
        "movements": {},
        "reservations": {},
        "holds": {},
        "skus": {},
        "locations": {},
    }
    wanted = set(skus)
    for sku in sorted(wanted):
        raw_sku = await redis.hget("inv:skus", sku)
        out["skus"][sku] = raw_sku.decode() if raw_sku else None
        for loc_b in sorted(await redis.smembers(f"inv:{{{sku}}}:locs")):
            loc = loc_b.decode()
            c = await redis.hgetall(f"inv:{{{sku}}}:c:{loc}")
            out["counters"][f"{sku}@{loc}"] = {k.decode(): int(v) for k, v in c.items()}
            inc = await redis.hgetall(f"inv:{{{sku}}}:in:{loc}")
            out["incoming"][f"{sku}@{loc}"] = {k.decode(): json.loads(v) for k, v in inc.items()}
            mv = await redis.zrange(f"inv:{{{sku}}}:mv:{loc}", 0, -1, withscores=True)
            out["movements"][f"{sku}@{loc}"] = [(k.decode(), int(s)) for k, s in mv]
    async for key in redis.scan_iter(match="inv:res:*", count=1000):
        raw = await redis.hgetall(key)
        res = {k.decode(): v.decode() for k, v in raw.items()}
        if not res:
            continue
        lines = json.loads(res["lines"])
        if not any(line["s"] in wanted for line in lines):
            continue
        res_id = key.decode().removeprefix("inv:res:")
        res.pop("fp", None)
        res.pop("xid", None)  # the reserving outbox entry: Redis-local
        res["lines"] = lines
        out["reservations"][res_id] = res
        score = await redis.zscore("inv:holds", res_id)
        out["holds"][res_id] = int(score) if score is not None else None
    for loc in sorted(location_ids):
        raw_loc = await redis.hget("inv:locations", loc)
        state = await redis.hget("inv:locstate", loc)
        out["locations"][loc] = (raw_loc.decode() if raw_loc else None, state.decode() if state else None)
    return out


async def _main(args: argparse.Namespace) -> int:
    settings = CommonSettings.from_env("inventory")
    redis = Redis.from_url(
        args.redis_url or settings.redis_url,
        **({"ssl_ca_certs": settings.redis_ca_file} if settings.redis_ca_file else {}),
    )
    try:
        if await redis.dbsize() and not args.force:
            print(
                "tutti-inventory-rebuild: the target Redis db is not empty; use --force to write into it",
                file=sys.stderr,
            )
            return 2
        counts = await rebuild(
            args.kafka_bootstrap or settings.kafka_bootstrap,
            redis,
            skus=set(args.sku) if args.sku else None,
            security=settings.kafka_security,
        )
    finally:
        await redis.aclose()
    print(json.dumps(counts))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.inventory.rebuild",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--redis-url", help="target Redis (default TUTTI_REDIS_URL)")
    parser.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers (default TUTTI_KAFKA_BOOTSTRAP)")
    parser.add_argument("--sku", action="append", help="rebuild only these SKUs (repeatable)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty Redis db")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
