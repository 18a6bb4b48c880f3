"""What decoding and checking every request costs the gateway per call (A/B, one process).

A: before — a method whose policy row needed nothing was forwarded as received (no work); one
   that scopes by channel was decoded and validated (scope.validate).
B: now — every request is decoded, checked for unknown enum numbers and out-of-range timestamps
   (runtime.validation) and validated (scope.validate); the bytes received are forwarded.

    .venv/bin/python -m bench.decode_cost
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

from google.protobuf.message import Message
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as ipb
from tutti.orchestrator.v1 import orchestrator_pb2 as opb

from gateway import scope
from runtime import validation


def _place_order() -> opb.PlaceOrderRequest:
    return opb.PlaceOrderRequest(
        channel=common_pb2.CHANNEL_WEB,
        channel_order_id="web-1",
        customer_id="c-42",
        method=common_pb2.DELIVERY_METHOD_CLICK_AND_COLLECT,
        pickup_location_id="STORE-PARIS-RIVOLI",
        lines=[opb.OrderLineInput(line_id=str(i), sku=f"SKU-{i:05}", quantity=2) for i in range(5)],
    )


def _snapshot(lines: int) -> ipb.ApplyStockSnapshotRequest:
    request = ipb.ApplyStockSnapshotRequest(
        snapshot_id="erp-1",
        source="erp",
        lines=[ipb.SnapshotLine(sku=f"SKU-{i:05}", location_id="STORE-1", on_hand=i) for i in range(lines)],
    )
    request.as_of.GetCurrentTime()
    return request


CASES: dict[str, Message] = {
    "GetAvailability": ipb.GetAvailabilityRequest(
        sku="SKU-00001", channel=common_pb2.CHANNEL_WEB, location_ids=["STORE-PARIS-RIVOLI"]
    ),
    "PlaceOrder, 5 lines": _place_order(),
    "ApplyStockSnapshot, 1,000 lines": _snapshot(1_000),
    "ApplyStockSnapshot, 10,000 lines": _snapshot(10_000),
}


def _per_call(function: Callable[[], object], size: int) -> float:
    number = 20_000 if size < 1_000 else 200 if size < 100_000 else 20
    return min(timeit.repeat(function, number=number, repeat=7)) / number


def _measure(cls: type[Message], raw: bytes) -> tuple[float, float, float]:
    def forward() -> bytes:
        return raw

    def scoped() -> bytes:
        decoded = cls.FromString(raw)
        scope.validate(decoded, ())
        return raw

    def every() -> bytes:
        decoded = cls.FromString(raw)
        validation.check(decoded)
        scope.validate(decoded, ())
        return raw

    a, s, b = (_per_call(f, len(raw)) * 1e6 for f in (forward, scoped, every))
    return a, s, b


def main() -> None:
    print(f"{'request':34} {'bytes':>8}  {'A none':>9}  {'A scoped':>9}  {'B every':>9}  (µs per call)")
    for name, message in CASES.items():
        raw = message.SerializeToString()
        a, s, b = _measure(type(message), raw)
        print(f"{name:34} {len(raw):>8}  {a:>9.2f}  {s:>9.2f}  {b:>9.2f}")


if __name__ == "__main__":
    main()
