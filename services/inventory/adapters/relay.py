"""Outbox relay: moves the movements the Lua scripts appended to the ``inv:outbox`` stream to
Kafka, then deletes them.

One relay at a time (a lease key renewed while relaying) keeps per-key order across
replicas. Entries are only deleted after Kafka acknowledged every record of the batch
(acks=all, idempotent producer); a crash in between re-sends them with the same event ids
(``inv-<stream id>-<index>``), which consumers de-duplicate on. Deleting them also writes, in the
same atomic script (``lua/relayed.lua``), the receipt of each POS sale in the batch: the positive
proof a POS acknowledgement waits for. Nothing is kept in the relay between batches, so a restart
(or another replica taking the lease over) just starts again from the oldest entry.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from datetime import UTC, datetime

from google.protobuf.message import Message
from redis.asyncio import Redis
from tutti.inventory.v1 import events_pb2

from runtime import telemetry
from runtime.kafka import (
    INVENTORY_AVAILABILITY,
    INVENTORY_MOVEMENTS,
    PRODUCER_STATE_LOST,
    RenewableProducer,
    build_envelope,
)
from services.inventory.adapters import codec
from services.inventory.adapters.redis_store import LUA, OUTBOX, store_id

log = logging.getLogger(__name__)

LEASE_KEY = "inv:relay:lease"
# Kafka header naming the store (Redis db) a ledger record comes from: rebuild.catch_up replays
# only its own store's records.
STORE_HEADER = "tutti-inventory-store"
META_TYPES: dict[str, type[Message]] = {
    "tutti.inventory.v1.LocationUpserted": events_pb2.LocationUpserted,
    "tutti.inventory.v1.SkuRegistered": events_pb2.SkuRegistered,
    "tutti.inventory.v1.ChannelPolicySet": events_pb2.ChannelPolicySet,
}


def _ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def records_for_entry(entry_id: str, fields: dict[bytes, bytes]) -> list[tuple[str, str, bytes, str]]:
    """(topic, key, envelope bytes, event type) for one outbox entry.

    An entry re-queued after its original was lost (``lua/pos_ack.lua``) keeps the original's event
    ids (field ``o``), so a consumer that did see the original drops the copy."""
    out: list[tuple[str, str, bytes, str]] = []
    moves = json.loads(fields[b"m"])
    base = fields[b"o"].decode() if b"o" in fields else entry_id
    for i, m in enumerate(moves):
        event_id = f"inv-{base}-{i}"
        when = _ms_to_dt(int(m.get("ts") or 0))
        if "meta" in m:
            payload = META_TYPES[m["meta"]]()
            payload.ParseFromString(base64.b64decode(m["p"]))
            env = build_envelope(
                payload, source="inventory", key=m["key"], event_id=event_id, occurred_at=when
            )
            out.append((INVENTORY_MOVEMENTS.name, m["key"], env.SerializeToString(), env.type))
            continue
        movement = codec.movement_pb(m, event_id)
        env = build_envelope(
            movement,
            source="inventory",
            key=m["s"],
            event_id=event_id,
            occurred_at=when,
            sequence=int(m["seq"]),
        )
        out.append((INVENTORY_MOVEMENTS.name, m["s"], env.SerializeToString(), env.type))
        avail = codec.availability_changed_pb(m)
        key = f"{m['s']}@{m['l']}"
        env2 = build_envelope(
            avail,
            source="inventory",
            key=key,
            event_id=f"{event_id}-a",
            occurred_at=when,
            sequence=int(m["seq"]),
        )
        out.append((INVENTORY_AVAILABILITY.name, key, env2.SerializeToString(), env2.type))
    return out


class OutboxRelay:
    def __init__(
        self,
        redis: Redis,
        producer: RenewableProducer,
        *,
        relayed_channel: str,
        batch: int = 500,
        lease_ms: int = 15_000,
        block_ms: int = 1000,
    ) -> None:
        self._redis = redis
        self._producer = producer
        self._relayed_channel = relayed_channel
        self._batch = batch
        self._lease_ms = lease_ms
        self._block_ms = block_ms
        self._owner = uuid.uuid4().hex
        self._relayed = redis.register_script((LUA / "relayed.lua").read_text())
        self._store: bytes = b""

    async def backlog(self) -> tuple[int, float | None]:
        """Entries waiting in the outbox stream and the age in seconds of the oldest (its id is
        the millisecond Redis appended it)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(OUTBOX)
            pipe.xrange(OUTBOX, count=1)
            waiting, oldest = await pipe.execute()
        if not oldest:
            return int(waiting), None
        entry_id = oldest[0][0]
        appended_ms = int((entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[0])
        return int(waiting), max(0.0, time.time() - appended_ms / 1000)

    async def _hold_lease(self) -> bool:
        if await self._redis.set(LEASE_KEY, self._owner, nx=True, px=self._lease_ms):
            return True
        holder = await self._redis.get(LEASE_KEY)
        if holder is not None and holder.decode() == self._owner:
            await self._redis.pexpire(LEASE_KEY, self._lease_ms)
            return True
        return False

    async def run(self) -> None:
        try:
            while True:
                if not await self._hold_lease():
                    await asyncio.sleep(self._lease_ms / 3000)
                    continue
                try:
                    await self.relay_once(block_ms=self._block_ms)
                except PRODUCER_STATE_LOST as exc:
                    # Entries stay on the stream; the next pass resends them with a new producer.
                    log.warning("Kafka lost the relay producer's state (%r); renewing it", exc)
                    await self._producer.renew()
        finally:
            holder = await self._redis.get(LEASE_KEY)
            if holder is not None and holder.decode() == self._owner:
                await self._redis.delete(LEASE_KEY)

    async def relay_once(self, block_ms: int | None = None) -> int:
        """Relays up to one batch of the oldest entries; returns how many entries were moved."""
        found = await self._redis.xread({OUTBOX: "0-0"}, count=self._batch, block=block_ms)
        if not found:
            return 0
        _, entries = found[0]
        if not self._store:
            self._store = (await store_id(self._redis)).encode()
        futures = []
        for entry_id, fields in entries:
            for topic, key, value, event_type in records_for_entry(entry_id.decode(), fields):
                headers = telemetry.inject_kafka_headers(
                    [("event-type", event_type.encode()), (STORE_HEADER, self._store)]
                )
                futures.append(
                    await self._producer.send(topic, value=value, key=key.encode(), headers=headers)
                )
        await asyncio.gather(*futures)
        args: list[bytes | str] = [OUTBOX]
        for entry_id, fields in entries:
            args += [entry_id, fields.get(b"r", b""), fields.get(b"i", b""), fields.get(b"w", b"")]
        await self._relayed(keys=[], args=args)
        # Tells waiters (POS acks) in every replica that everything up to this id is on Kafka.
        await self._redis.publish(self._relayed_channel, entries[-1][0])
        return len(entries)
