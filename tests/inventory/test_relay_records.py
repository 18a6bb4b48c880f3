"""Unit tests of how outbox entries become Kafka records: topics, keys, stable event ids and
the counters after the movement (what the rebuild relies on)."""

from __future__ import annotations

import base64
import json

from tutti.events.v1 import envelope_pb2
from tutti.inventory.v1 import events_pb2
from tutti.inventory.v1 import inventory_pb2 as pb

from runtime.kafka import INVENTORY_AVAILABILITY, INVENTORY_MOVEMENTS
from services.inventory.adapters.relay import records_for_entry


def entry(*moves: dict) -> dict[bytes, bytes]:
    return {b"m": json.dumps(list(moves)).encode()}


def test_a_movement_goes_to_the_ledger_and_the_compacted_topic_with_stable_ids():
    move = {
        "k": "RESERVED",
        "s": "SKU-1",
        "l": "DC-1",
        "doh": 0,
        "drs": 2,
        "dqt": 0,
        "oh": 10,
        "rs": 2,
        "ss": 1,
        "qt": 0,
        "inc": 5,
        "seq": 7,
        "ts": 1_700_000_000_000,
        "ref": "R-1",
        "res": "R-1",
        "ord": "O-1",
        "ch": "WEB",
        "rst": "HELD",
        "lq": 2,
        "lr": 0,
        "lf": 0,
        "lo": 2,
        "exp": 1_700_000_600_000,
        "cr": 1_700_000_000_000,
    }
    records = records_for_entry("1700000000000-3", entry(move))
    assert [(topic, key) for topic, key, _, _ in records] == [
        (INVENTORY_MOVEMENTS.name, "SKU-1"),
        (INVENTORY_AVAILABILITY.name, "SKU-1@DC-1"),
    ]
    ledger = envelope_pb2.EventEnvelope.FromString(records[0][2])
    assert (
        ledger.event_id == "inv-1700000000000-3-0" and ledger.sequence == 7 and ledger.source == "inventory"
    )
    m = events_pb2.StockMovementRecorded()
    ledger.payload.Unpack(m)
    assert m.kind == events_pb2.MOVEMENT_KIND_RESERVED
    assert (m.after.on_hand, m.after.reserved, m.after.safety_stock, m.after.available_to_promise) == (
        10,
        2,
        1,
        7,
    )
    assert (m.reservation_id, m.order_id, m.reservation_status) == ("R-1", "O-1", pb.RESERVATION_STATUS_HELD)
    assert m.hold_expires_at.ToMilliseconds() == 1_700_000_600_000
    avail = envelope_pb2.EventEnvelope.FromString(records[1][2])
    assert avail.event_id == "inv-1700000000000-3-0-a"
    changed = events_pb2.AvailabilityChanged()
    avail.payload.Unpack(changed)
    assert (changed.incoming, changed.counters.available_to_promise) == (5, 7)
    # Relaying the same entry again yields the same ids: consumers de-duplicate.
    again = records_for_entry("1700000000000-3", entry(move))
    assert [envelope_pb2.EventEnvelope.FromString(r[2]).event_id for r in again] == [
        "inv-1700000000000-3-0",
        "inv-1700000000000-3-0-a",
    ]


def test_master_data_rides_on_the_ledger():
    payload = events_pb2.SkuRegistered(sku=pb.Sku(sku="SKU-9", name="Boot")).SerializeToString()
    meta = {
        "meta": "tutti.inventory.v1.SkuRegistered",
        "key": "SKU-9",
        "p": base64.b64encode(payload).decode(),
        "ts": 1_700_000_000_000,
    }
    ((topic, key, value, event_type),) = records_for_entry("1-0", entry(meta))
    assert (topic, key, event_type) == (INVENTORY_MOVEMENTS.name, "SKU-9", "tutti.inventory.v1.SkuRegistered")
    env = envelope_pb2.EventEnvelope.FromString(value)
    got = events_pb2.SkuRegistered()
    env.payload.Unpack(got)
    assert got.sku.name == "Boot"
