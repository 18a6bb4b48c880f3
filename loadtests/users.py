"""The people and machines of a retail peak, as abstract Locust users; each scenario file
subclasses the ones it runs and gives them weights and pacing.

* ``Shopper`` — a web, app or marketplace customer: availability reads (single and batch),
  delivery quotes, orders (a few cancelled), timeline reads of their own orders.
* ``StoreAssociate`` — a store app: moves the orders sourced to its store through
  accepted → picked → packed → shipped (or ready → collected), and takes till returns.
* ``PosTerminal`` — a till streaming its sales over one long-lived StreamPosSales stream; each
  acknowledgement is reported as a request timed from the moment the sale was sent.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import gevent
import gevent.queue
import grpc
from google.protobuf import timestamp_pb2
from locust import task
from locust.env import Environment
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from tutti.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tutti.returns.v1 import returns_pb2, returns_pb2_grpc
from tutti.tracking.v1 import tracking_pb2, tracking_pb2_grpc

from bench.stack import key_for, terminal_id
from loadtests import data
from loadtests.grpc_user import GrpcUser, report

FP = grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND
ABORTED = grpc.StatusCode.ABORTED


@dataclass
class Shared:
    """What users of one run hand each other (one Locust process: plain structures suffice)."""

    # Orders placed, per serving location: (order_id, method, line ids), for store associates.
    to_fulfil: dict[str, deque[tuple[str, int, tuple[str, ...]]]] = field(
        default_factory=lambda: defaultdict(lambda: deque(maxlen=500))
    )
    # Till purchases per store: (terminal_id, sale_id, sku, sold_at), for till returns.
    receipts: dict[str, deque[tuple[str, str, str, timestamp_pb2.Timestamp]]] = field(
        default_factory=lambda: defaultdict(lambda: deque(maxlen=500))
    )
    terminal_numbers: count[int] = field(default_factory=count)
    # Store apps are numbered apart, so the n-th store app works where the n-th till sells.
    associate_numbers: count[int] = field(default_factory=count)
    # Every order placed: (channel, order id), cancelled at the end if still open.
    placed: list[tuple[str, str]] = field(default_factory=list)
    # Every till of the run, for the end-of-test checks.
    terminals: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


SHARED = Shared()


def now_ts() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


class Shopper(GrpcUser):
    abstract = True
    expected = {
        # Out of stock, nothing deliverable: correct answers at a peak.
        "PlaceOrder": frozenset({FP}),
        "QuoteDelivery": frozenset({FP}),
        # The timeline of an order placed a moment ago may not be recorded yet.
        "GetOrderTimeline": frozenset({NOT_FOUND}),
        # Already shipped: too late to cancel.
        "CancelOrder": frozenset({FP}),
    }
    channel_weights = {"web": 6, "app": 3, "marketplace": 1}

    def on_start(self) -> None:
        self.rng = random.Random()
        self.channel_name = self.rng.choices(list(self.channel_weights), list(self.channel_weights.values()))[
            0
        ]
        self.channel_value = data.CHANNELS[self.channel_name]
        self.api_key = data.channel_key(self.channel_name)
        self.inventory = self.stub(inventory_pb2_grpc.InventoryServiceStub)
        self.orders = self.stub(orchestrator_pb2_grpc.OrderServiceStub)
        self.tracking = self.stub(tracking_pb2_grpc.TrackingServiceStub)
        self.customer_id = data.new_id("CUST")
        self.my_orders: deque[str] = deque(maxlen=20)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, metadata=self.metadata, timeout=10)
        except grpc.RpcError:
            return None  # reported by the interceptor (as a failure or an expected answer)

    def _lines(self, n: int) -> list[orchestrator_pb2.OrderLineInput]:
        # SKUs in stock at the DC or somewhere, so most orders can be sourced.
        pool = data.stocked_by_location()[data.demo().locations[0].location_id]
        picks = self.rng.sample(pool, k=min(n, len(pool)))
        return [
            orchestrator_pb2.OrderLineInput(
                line_id=str(i + 1), sku=sku, quantity=1, unit_price=data.money(data.price_of()[sku])
            )
            for i, (sku, _) in enumerate(picks)
        ]

    @task(40)
    def availability(self) -> None:
        sku = self.rng.choice(data.skus()).sku
        self._call(
            self.inventory.GetAvailability,
            inventory_pb2.GetAvailabilityRequest(sku=sku, channel=self.channel_value),
        )

    @task(12)
    def batch_availability(self) -> None:
        picks = [s.sku for s in self.rng.sample(data.skus(), k=self.rng.choice((10, 24, 48)))]
        self._call(
            self.inventory.BatchGetAvailability,
            inventory_pb2.BatchGetAvailabilityRequest(skus=picks, channel=self.channel_value),
        )

    @task(10)
    def quote(self) -> None:
        self._call(
            self.orders.QuoteDelivery,
            orchestrator_pb2.QuoteDeliveryRequest(
                channel=self.channel_value,
                customer_id=self.customer_id,
                address=data.customer_address(self.rng),
                lines=self._lines(self.rng.choice((1, 1, 2, 3))),
            ),
        )

    @task(8)
    def place_order(self) -> None:
        collect = self.rng.random() < 0.3
        store = self.rng.choice(data.stores())
        request = orchestrator_pb2.PlaceOrderRequest(
            channel=self.channel_value,
            channel_order_id=data.new_id("BF"),
            customer_id=self.customer_id,
            method=common_pb2.DELIVERY_METHOD_CLICK_AND_COLLECT
            if collect
            else common_pb2.DELIVERY_METHOD_HOME_STANDARD,
            address=data.customer_address(self.rng),
            pickup_location_id=store if collect else "",
            lines=self._lines(self.rng.choice((1, 1, 1, 2, 3))),
        )
        reply = self._call(self.orders.PlaceOrder, request)
        if reply is None:
            return
        order = reply.order
        self.my_orders.append(order.order_id)
        SHARED.placed.append((self.channel_name, order.order_id))
        by_location: dict[str, list[str]] = defaultdict(list)
        for line in order.lines:
            by_location[line.location_id].append(line.line_id)
        for location, line_ids in by_location.items():
            SHARED.to_fulfil[location].append((order.order_id, order.method, tuple(line_ids)))

    @task(2)
    def cancel_order(self) -> None:
        if self.my_orders:
            order_id = self.my_orders.pop()
            self._call(
                self.orders.CancelOrder,
                orchestrator_pb2.CancelOrderRequest(order_id=order_id, reason="changed my mind"),
            )

    @task(5)
    def timeline(self) -> None:
        if self.my_orders:
            self._call(
                self.tracking.GetOrderTimeline,
                tracking_pb2.GetOrderTimelineRequest(order_id=self.rng.choice(self.my_orders)),
            )


class StoreAssociate(GrpcUser):
    abstract = True
    expected = {
        # The customer cancelled meanwhile, or the order moved on.
        "UpdateFulfilment": frozenset({FP, NOT_FOUND}),
        # The till purchase is outside the return window or not returnable.
        "CreateReturn": frozenset({FP}),
    }
    FLOW_HOME = (
        orchestrator_pb2.FULFILMENT_EVENT_ACCEPTED,
        orchestrator_pb2.FULFILMENT_EVENT_PICKED,
        orchestrator_pb2.FULFILMENT_EVENT_PACKED,
        orchestrator_pb2.FULFILMENT_EVENT_SHIPPED,
    )

    def on_start(self) -> None:
        self.rng = random.Random()
        stores = data.stores()
        with SHARED.lock:
            self.store = stores[next(SHARED.associate_numbers) % len(stores)]
        self.api_key = data.store_app_key(self.store)
        self.orders = self.stub(orchestrator_pb2_grpc.OrderServiceStub)
        self.returns = self.stub(returns_pb2_grpc.ReturnsServiceStub)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, metadata=self.metadata, timeout=10)
        except grpc.RpcError:
            return None

    @task(5)
    def fulfil(self) -> None:
        queue = SHARED.to_fulfil.get(self.store)
        if not queue:
            return
        order_id, _method, line_ids = queue.popleft()
        for event in self.FLOW_HOME:
            reply = self._call(
                self.orders.UpdateFulfilment,
                orchestrator_pb2.UpdateFulfilmentRequest(
                    order_id=order_id,
                    location_id=self.store,
                    event=event,
                    line_ids=list(line_ids),
                    update_id=data.new_id("UPD"),
                ),
            )
            if reply is None:
                return
            gevent.sleep(self.rng.uniform(0.05, 0.3))

    @task(1)
    def till_return(self) -> None:
        receipts = SHARED.receipts.get(self.store)
        if not receipts:
            return
        terminal_id, sale_id, sku, sold_at = receipts.popleft()
        self._call(
            self.returns.CreateReturn,
            returns_pb2.CreateReturnRequest(
                request_id=data.new_id("RET"),
                pos_receipt=returns_pb2.PosReceipt(
                    terminal_id=terminal_id,
                    sale_id=sale_id,
                    location_id=self.store,
                    sold_at=sold_at,
                    lines=[
                        returns_pb2.PosReceiptLine(
                            line_id="1",
                            sku=sku,
                            quantity=1,
                            unit_price=data.money(data.price_of().get(sku, 1990)),
                        )
                    ],
                ),
                lines=[
                    returns_pb2.ReturnLineRequest(
                        line_id="1", quantity=1, reason=returns_pb2.RETURN_REASON_WRONG_SIZE
                    )
                ],
                method=returns_pb2.RETURN_METHOD_IN_STORE,
                receiving_location_id=self.store,
                channel=common_pb2.CHANNEL_STORE,
            ),
        )


class PosTerminal(GrpcUser):
    """One till, one stream. Sales are sent without waiting; acks are matched by sale id."""

    abstract = True
    # SKUs this terminal sells; None means the demo SKUs stocked at its store.
    rush_skus: tuple[str, ...] | None = None

    def on_start(self) -> None:
        self.rng = random.Random()
        stores = data.stores()
        with SHARED.lock:
            number = next(SHARED.terminal_numbers)
        self.store = stores[number % len(stores)]
        self.terminal_id = terminal_id(self.store, number // len(stores))
        self.api_key = key_for(self.terminal_id)
        # Unique per user (users may share a terminal) and per run: inventory remembers sale
        # ids across runs.
        self.sale_prefix = f"{self.terminal_id}-{data.RUN}-u{number}"
        self.sales = count(1)
        self.pending: dict[str, tuple[float, str, int]] = {}
        self.acked_units: dict[str, int] = defaultdict(int)
        self._stream_open = False
        self._queue: gevent.queue.Queue[Any] = gevent.queue.Queue()
        self._stub = self.raw_stub(inventory_pb2_grpc.InventoryServiceStub)
        self._stock = data.stocked_by_location().get(self.store, ())
        SHARED.terminals.append(self)

    def _open(self) -> None:
        self._queue = gevent.queue.Queue()
        queue = self._queue

        def requests() -> Any:
            while True:
                item = queue.get()
                if item is None:
                    return
                yield item

        responses = self._stub.StreamPosSales(requests(), metadata=self.metadata)
        self._stream_open = True
        gevent.spawn(self._read, responses)

    def _read(self, responses: Any) -> None:
        env: Environment = self.environment
        try:
            for ack in responses:
                started, sku, qty = self.pending.pop(ack.sale_id, (time.perf_counter(), "", 0))
                if ack.status == inventory_pb2.POS_ACK_STATUS_ACCEPTED:
                    if not ack.duplicate:
                        self.acked_units[sku] += qty
                        with SHARED.lock:
                            SHARED.receipts[self.store].append((self.terminal_id, ack.sale_id, sku, now_ts()))
                    report(env, "StreamPosSales sale", started, length=ack.ByteSize())
                else:
                    report(
                        env, "StreamPosSales sale", started, exception=RuntimeError(f"rejected: {ack.error}")
                    )
        except grpc.RpcError as exc:
            report(env, "StreamPosSales stream", time.perf_counter(), exception=exc)
            gevent.sleep(1.0)  # a till retries its connection with a pause, not in a tight loop
        finally:
            self._stream_open = False

    def pick_sku(self) -> str:
        if self.rush_skus:
            return self.rng.choice(self.rush_skus)
        if self._stock:
            return self.rng.choice(self._stock)[0]
        return self.rng.choice(data.skus()).sku

    @task
    def sell(self) -> None:
        if not self._stream_open:
            self._open()
        sku = self.pick_sku()
        sale_id = f"{self.sale_prefix}-{next(self.sales)}"
        request = inventory_pb2.StreamPosSalesRequest(
            terminal_id=self.terminal_id,
            sale_id=sale_id,
            location_id=self.store,
            kind=inventory_pb2.POS_SALE_KIND_SALE,
            lines=[inventory_pb2.PosLine(sku=sku, quantity=1)],
            occurred_at=now_ts(),
        )
        self.pending[sale_id] = (time.perf_counter(), sku, 1)
        self._queue.put(request)

    def on_stop(self) -> None:
        # Let in-flight sales be acknowledged, then close the stream cleanly.
        deadline = time.monotonic() + 5
        while self.pending and self._stream_open and time.monotonic() < deadline:
            gevent.sleep(0.05)
        self._queue.put(None)
        gevent.sleep(0.1)
        super().on_stop()
