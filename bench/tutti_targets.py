"""Tutti's own figures, on a private stack of real processes (bench/stack.py):

* L1 POS sale → visible availability: a WatchAvailability stream and a StreamPosSales stream
  through the gateway; each sale is timed from its send to the watch message showing it.
* L2 event → timeline: orders placed at a gentle pace; tracking's own timestamps give the time
  from the OrderPlaced event (occurred_at) to its timeline entry (received_at).
* T1 GetAvailability, T2 ReserveStock, T3 PlaceOrder through the gateway, with ghz, the same
  load as the baselines.
* O1 oversell under contention: many concurrent reservations racing for a few units.
* S1/S2 scale-out: one vs two inventory processes sharing a port (SO_REUSEPORT).
* py-spy profiles of the processes behind a target that misses its goal.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from tutti.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from tutti.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tutti.tracking.v1 import tracking_pb2, tracking_pb2_grpc

from bench import report, stack
from bench.ghz import Load, Result, run_ghz
from bench.procs import BENCH_DIR, children, run_uvloop
from bench.redis_baseline import percentile
from runtime.grpc_server import client_channel
from runtime.peers import OPERATOR
from runtime.settings import InternalTls
from tools.stack import operator_tls

DC = "DC-ORLEANS"
POS_STORE = "STORE-PARIS-RIVOLI"
BENCH_SKUS = 100
BENCH_CUSTOMERS = 50
PARIS = {
    "line1": "10 rue de Rivoli",
    "postal_code": "75004",
    "city": "Paris",
    "country": "FR",
    "point": {"latitude": 48.8556, "longitude": 2.3601},
}
PROFILES = BENCH_DIR / "profiles"


def auth(principal: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {stack.key_for(principal)}"),)


def meta(principal: str) -> dict[str, str]:
    return dict(auth(principal))


# --- set-up -----------------------------------------------------------------------------------


def dc_for(run: str) -> str:
    """The run's own distribution centre: orders of the bench never use up the daily
    capacity of the demo locations (shared by everyone's orchestrator on this database)."""
    return f"BENCH-DC-{run}"


def stock_bench_skus(
    gateway: str, run: str, count: int = BENCH_SKUS, units: int = 10**9
) -> tuple[list[str], str]:
    """SKUs of this run with plenty of stock at the run's own DC (no daily capacity), so
    throughput runs never sell out; and one SKU stocked at the POS store only, for L1."""
    from tools.demo import retailer

    skus = [f"BENCH-{run}-{i}" for i in range(count)]
    pos_sku = f"BENCH-{run}-POS"
    dc = inventory_pb2.Location()
    dc.CopyFrom(next(loc for loc in retailer().locations if loc.location_id == DC))
    dc.location_id, dc.name, dc.daily_capacity = dc_for(run), f"Bench DC {run}", 0
    with grpc.insecure_channel(gateway) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        stub.UpsertLocations(
            inventory_pb2.UpsertLocationsRequest(locations=[dc]), metadata=auth("admin"), timeout=30
        )
        stub.RegisterSkus(
            inventory_pb2.RegisterSkusRequest(
                skus=[
                    inventory_pb2.Sku(sku=s, name=f"Bench item {s}", category="tshirts", returnable=True)
                    for s in [*skus, pos_sku]
                ]
            ),
            metadata=auth("admin"),
            timeout=30,
        )
        for location, stocked in ((dc.location_id, skus), (POS_STORE, [pos_sku])):
            stub.ReceiveStock(
                inventory_pb2.ReceiveStockRequest(
                    movement_id=f"{run}-{location}",
                    location_id=location,
                    lines=[inventory_pb2.ReservationLine(sku=s, quantity=units) for s in stocked],
                    condition=inventory_pb2.STOCK_CONDITION_SELLABLE,
                    reason="bench",
                ),
                metadata=auth("admin"),
                timeout=30,
            )
    return skus, pos_sku


def cancel_bench_orders(orchestrator: str, customers: Sequence[str]) -> int:
    """Cancel what the bench ordered (directly on the orchestrator): open orders would keep
    its background loops busy and sit in the shared database as work to do."""

    async def cancel_all() -> int:
        cancelled = 0
        # The orchestrator's internal port: mTLS, as the local operator (tools/certs.py).
        operator = InternalTls.from_env(OPERATOR)
        async with client_channel(orchestrator, internal_tls=operator) as channel:
            stub = orchestrator_pb2_grpc.OrderServiceStub(channel)
            limit = asyncio.Semaphore(16)

            async def cancel(order_id: str) -> None:
                nonlocal cancelled
                async with limit:
                    try:
                        await stub.CancelOrder(
                            orchestrator_pb2.CancelOrderRequest(order_id=order_id, reason="bench clean-up"),
                            timeout=30,
                        )
                        cancelled += 1
                    except grpc.aio.AioRpcError:
                        pass  # already finished or cancelled

            async def customer_orders(customer: str) -> None:
                token = ""
                while True:
                    page = await stub.ListOrders(
                        orchestrator_pb2.ListOrdersRequest(
                            customer_id=customer, page_size=200, page_token=token
                        ),
                        timeout=30,
                    )
                    await asyncio.gather(*(cancel(o.order_id) for o in page.orders if o.status != 10))
                    token = page.next_page_token
                    if not token:
                        return

            await asyncio.gather(*(customer_orders(c) for c in customers))
        return cancelled

    return run_uvloop(cancel_all())


# --- L1: POS sale → visible availability ----------------------------------------------------------


def _ts_now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


async def pos_to_watch(gateway: str, sku: str, sales: int) -> dict[str, Any]:
    terminal = f"pos-{POS_STORE}"
    latencies: list[float] = []
    acks: list[float] = []
    missed = 0
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        watch = stub.WatchAvailability(
            inventory_pb2.WatchAvailabilityRequest(
                skus=[sku],
                location_ids=[POS_STORE],
                channel=1,  # CHANNEL_WEB
            ),
            metadata=auth("web"),
        )
        seen: asyncio.Queue[tuple[float, int]] = asyncio.Queue()
        ready = asyncio.Event()

        async def read_watch() -> None:
            async for update in watch:
                for loc in update.availability.locations:
                    if loc.location_id == POS_STORE:
                        await seen.put((time.perf_counter(), loc.on_hand))
                if update.snapshot_complete:
                    ready.set()

        reader = asyncio.create_task(read_watch())
        await asyncio.wait_for(ready.wait(), 10)
        on_hand = None
        while not seen.empty():
            _, on_hand = seen.get_nowait()
        queue: asyncio.Queue[inventory_pb2.StreamPosSalesRequest | None] = asyncio.Queue()

        async def requests() -> Any:
            while (item := await queue.get()) is not None:
                yield item

        pos = stub.StreamPosSales(requests(), metadata=auth(terminal))
        for n in range(sales):
            started = time.perf_counter()
            await queue.put(
                inventory_pb2.StreamPosSalesRequest(
                    terminal_id=terminal,
                    sale_id=f"{sku}-{n}",
                    location_id=POS_STORE,
                    kind=inventory_pb2.POS_SALE_KIND_SALE,
                    lines=[inventory_pb2.PosLine(sku=sku, quantity=1)],
                    occurred_at=_ts_now(),
                )
            )
            ack = await asyncio.wait_for(pos.read(), 5)
            acks.append(time.perf_counter() - started)
            if ack.status != inventory_pb2.POS_ACK_STATUS_ACCEPTED:
                raise RuntimeError(f"POS sale rejected: {ack.error}")
            expected = None if on_hand is None else on_hand - 1
            try:
                while True:
                    at, value = await asyncio.wait_for(seen.get(), 2)
                    if expected is None or value <= expected:
                        latencies.append(at - started)
                        on_hand = value
                        break
            except TimeoutError:
                missed += 1
            await asyncio.sleep(0.01)
        await queue.put(None)
        watch.cancel()
        reader.cancel()
    return _latency(
        "L1",
        "POS sale → availability visible on a channel watch",
        latencies,
        missed=missed,
        extra={
            "ack_p50_ms": percentile(sorted(acks), 50) * 1e3,
            "ack_p99_ms": percentile(sorted(acks), 99) * 1e3,
        },
    )


def _latency(
    name: str,
    label: str,
    seconds: Sequence[float],
    *,
    missed: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    values = sorted(seconds)
    return {
        "name": name,
        "label": label,
        "samples": len(values),
        "missed": missed,
        "p50_ms": percentile(values, 50) * 1e3,
        "p90_ms": percentile(values, 90) * 1e3,
        "p99_ms": percentile(values, 99) * 1e3,
        "max_ms": (values[-1] * 1e3) if values else 0.0,
        **(extra or {}),
    }


# --- L2: event → timeline ---------------------------------------------------------------------


def _place(stub: Any, sku: str, metadata: Any) -> str:
    request = orchestrator_pb2.PlaceOrderRequest(
        channel=1,
        channel_order_id=f"L2-{uuid.uuid4().hex[:12]}",
        customer_id=f"{sku.rsplit('-', 1)[0]}-L2",
        method=1,  # DELIVERY_METHOD_HOME_STANDARD
        lines=[orchestrator_pb2.OrderLineInput(line_id="1", sku=sku, quantity=1)],
    )
    request.address.line1, request.address.postal_code = PARIS["line1"], PARIS["postal_code"]
    request.address.city, request.address.country = PARIS["city"], PARIS["country"]
    request.address.point.latitude, request.address.point.longitude = 48.8556, 2.3601
    return str(stub.PlaceOrder(request, metadata=metadata, timeout=10).order.order_id)


def event_to_timeline(gateway: str, skus: Sequence[str], orders: int, pace_s: float = 0.03) -> dict[str, Any]:
    placed: list[str] = []
    with grpc.insecure_channel(gateway) as channel:
        orders_stub = orchestrator_pb2_grpc.OrderServiceStub(channel)
        tracking = tracking_pb2_grpc.TrackingServiceStub(channel)
        for n in range(orders):
            placed.append(_place(orders_stub, skus[n % len(skus)], auth("web")))
            time.sleep(pace_s)
        deadline = time.monotonic() + 30
        latencies: list[float] = []
        steps: Counter[str] = Counter()
        pending = list(placed)
        while pending and time.monotonic() < deadline:
            still = []
            for order_id in pending:
                try:
                    reply = tracking.GetOrderTimeline(
                        tracking_pb2.GetOrderTimelineRequest(order_id=order_id),
                        metadata=auth("web"),
                        timeout=5,
                    )
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                        still.append(order_id)
                        continue
                    raise
                entry = next((e for e in reply.entries if e.step == "placed"), None)
                if entry is None:
                    still.append(order_id)
                    continue
                steps.update(e.step for e in reply.entries)
                latencies.append(
                    entry.received_at.ToNanoseconds() / 1e9 - entry.occurred_at.ToNanoseconds() / 1e9
                )
            pending = still
            if pending:
                time.sleep(0.2)
    return _latency(
        "L2",
        "OrderPlaced event → order timeline entry (tracking)",
        latencies,
        missed=len(pending),
        extra={"steps_seen": dict(steps)},
    )


# --- ghz targets ------------------------------------------------------------------------------


def _sku_template(run: str) -> str:
    return f"BENCH-{run}-{{{{randomInt 0 {BENCH_SKUS}}}}}"


def ghz_targets(
    gateway: str, run: str, load: Load, protoset: Path
) -> dict[str, tuple[str, str, Any, dict[str, str]]]:
    """name → (label, call, data, metadata)."""
    order = {
        "channel": "CHANNEL_WEB",
        "channel_order_id": "{{newUUID}}",
        "customer_id": f"BENCH-{run}-C{{{{randomInt 0 {BENCH_CUSTOMERS}}}}}",
        "method": "DELIVERY_METHOD_HOME_STANDARD",
        "address": PARIS,
        "lines": [
            {
                "line_id": "1",
                "sku": _sku_template(run),
                "quantity": 1,
                "unit_price": {"currency": "EUR", "amount_minor": 1990},
            }
        ],
    }
    return {
        "T1": (
            "T1 GetAvailability via gateway (demo SKU, all locations)",
            "tutti.inventory.v1.InventoryService.GetAvailability",
            {"sku": "SKU-{{printf `%05d` (randomInt 1 3001)}}", "channel": "CHANNEL_WEB"},
            meta("web"),
        ),
        "T2": (
            "T2 ReserveStock via gateway (1 line, cart hold)",
            "tutti.inventory.v1.InventoryService.ReserveStock",
            {
                "reservation_id": "{{newUUID}}",
                "channel": "CHANNEL_WEB",
                "hold_ttl_seconds": 3600,
                "lines": [{"sku": _sku_template(run), "location_id": dc_for(run), "quantity": 1}],
            },
            meta("admin"),
        ),
        "T3": (
            "T3 PlaceOrder end to end via gateway (1 line, home delivery)",
            "tutti.orchestrator.v1.OrderService.PlaceOrder",
            order,
            meta("web"),
        ),
    }


def oversell(
    gateway: str, run: str, load: Load, protoset: Path, units: int = 200, attempts: int = 2000
) -> dict[str, Any]:
    """Many concurrent reservations race for ``units`` units: exactly that many may succeed."""
    sku = f"BENCH-{run}-SCARCE"
    with grpc.insecure_channel(gateway) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        stub.RegisterSkus(
            inventory_pb2.RegisterSkusRequest(
                skus=[inventory_pb2.Sku(sku=sku, name="Scarce bench item", category="shoes", returnable=True)]
            ),
            metadata=auth("admin"),
            timeout=30,
        )
        stub.ReceiveStock(
            inventory_pb2.ReceiveStockRequest(
                movement_id=f"{sku}-in",
                location_id=dc_for(run),
                lines=[inventory_pb2.ReservationLine(sku=sku, quantity=units)],
                condition=inventory_pb2.STOCK_CONDITION_SELLABLE,
                reason="bench oversell check",
            ),
            metadata=auth("admin"),
            timeout=30,
        )
        from bench.ghz import ghz_binary

        argv = [
            ghz_binary(),
            "--insecure",
            f"--protoset={protoset}",
            "--call=tutti.inventory.v1.InventoryService.ReserveStock",
            "--data="
            + json.dumps(
                {
                    "reservation_id": "{{newUUID}}",
                    "channel": "CHANNEL_WEB",
                    "lines": [{"sku": sku, "location_id": dc_for(run), "quantity": 1}],
                }
            ),
            f"--metadata={json.dumps(meta('admin'))}",
            f"--concurrency={load.concurrency}",
            f"--connections={load.connections}",
            f"--total={attempts}",
            "--format=json",
            gateway,
        ]
        out = json.loads(subprocess.run(argv, capture_output=True, text=True, check=False).stdout)  # noqa: S603
        levels = stub.GetStockLevels(
            inventory_pb2.GetStockLevelsRequest(sku=sku, location_ids=[dc_for(run)]),
            metadata=auth("admin"),
            timeout=30,
        ).levels
    counters = levels[0].counters
    statuses = out.get("statusCodeDistribution", {})
    ok = int(statuses.get("OK", 0))
    return {
        "units": units,
        "attempts": attempts,
        "succeeded": ok,
        "statuses": statuses,
        "on_hand": counters.on_hand,
        "reserved": counters.reserved,
        "available": counters.available_to_promise,
        "oversold": max(0, ok - units, counters.reserved - counters.on_hand),
        "exact": ok == units == counters.reserved and counters.available_to_promise == 0,
    }


# --- profiles ---------------------------------------------------------------------------------


def py_spy(pids: Mapping[str, int], seconds: float, tag: str) -> list[subprocess.Popen[bytes]]:
    PROFILES.mkdir(parents=True, exist_ok=True)
    procs = []
    for name, pid in pids.items():
        out = PROFILES / f"{tag}-{name}.txt"
        procs.append(
            subprocess.Popen(  # noqa: S603
                [
                    str(Path(__import__("sys").executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return procs


# Frames where py-spy parks time spent in native code: the event loop (uvloop and grpc's C core
# called from it) and grpc's completion-queue poller thread.
NATIVE = {
    "Runner.run": "native: event loop (uvloop + grpc C core)",
    "Thread.run": "native: grpc poller thread",
}
# Inclusive share of these packages (by the first component of a frame's file path).
PACKAGES = {
    "grpc": "grpc (Python layer)",
    "trace": "OpenTelemetry tracing",
    "_decorator.py": "OpenTelemetry tracing",
    "attributes": "OpenTelemetry tracing",
    "redis": "redis-py",
    "asyncpg": "asyncpg",
    "aiokafka": "aiokafka",
    "json": "json",
    "logging": "logging",
    "google": "protobuf",
}


def summarise_profile(
    path: Path, top: int = 10
) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """From py-spy's collapsed stacks ("f1 (file:line);...;fn (file:line) count"): the self time
    of the top functions, and the inclusive share of the libraries that matter here."""
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack_text, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = stack_text.split(";")
        fn, _, where = frames[-1].partition(" (")
        file = where.rstrip(")").rsplit("/", 1)[-1].split(":")[0]
        own[NATIVE.get(fn, f"{fn} ({file})")] += count
        seen = {
            PACKAGES[f.partition(" (")[2].split("/")[0].split(":")[0]]
            for f in frames
            if f.partition(" (")[2].split("/")[0].split(":")[0] in PACKAGES
        }
        for package in seen:
            packages[package] += count
    if not total:
        return 0, [], []
    return (
        total,
        [(fn, c / total) for fn, c in own.most_common(top)],
        [(pkg, c / total) for pkg, c in packages.most_common()],
    )


def profile_target(
    name: str, spec: tuple[str, str, Any, dict[str, str]], running: stack.Stack, load: Load, protoset: Path
) -> list[dict[str, Any]]:
    label, call, data, metadata = spec
    pids = {"gateway": running.pids("gateway")[0], "inventory": running.pids("inventory")[0]}
    if name == "T3":
        pids["orchestrator"] = running.pids("orchestrator")[0]
    seconds = 8
    spies = py_spy(pids, seconds, name)
    run_ghz(
        f"{name}-profiled",
        label,
        running.gateway,
        call,
        data,
        load,
        protoset=protoset,
        metadata=metadata,
        warmup=False,
        duration_s=seconds,
    )
    for spy in spies:
        spy.wait(timeout=60)
    out = []
    for process in pids:
        path = PROFILES / f"{name}-{process}.txt"
        if path.exists():
            samples, top, libraries = summarise_profile(path)
            out.append(
                {
                    "target": label,
                    "process": process,
                    "samples": samples,
                    "top": top,
                    "libraries": libraries,
                    "file": str(path),
                }
            )
    return out


# --- scale-out --------------------------------------------------------------------------------


def scale_out(load: Load, protoset: Path) -> tuple[list[Result], dict[str, Any]]:
    results = []
    data = {"sku": "SKU-{{printf `%05d` (randomInt 1 3001)}}", "channel": "CHANNEL_WEB"}
    wide = Load(
        concurrency=load.concurrency,
        connections=max(8, load.connections),
        duration_s=load.duration_s,
        warmup_s=load.warmup_s,
        cpus=load.cpus,
    )
    for replicas in (1, 2):
        with children() as group:
            running = stack.start(
                group,
                services=("inventory",),
                gateway=False,
                inventory_replicas=replicas,
                tag=f"scale{replicas}",
            )
            results.append(
                run_ghz(
                    f"S{replicas}",
                    f"S{replicas} GetAvailability direct, {replicas} inventory process(es)",
                    running.addresses["inventory"],
                    "tutti.inventory.v1.InventoryService.GetAvailability",
                    data,
                    wide,
                    protoset=protoset,
                    internal_tls=operator_tls(),  # straight to inventory: its port speaks mTLS only
                )
            )
            results[-1].kind = "scale"
    s1, s2 = results
    gain = s2.rps / s1.rps if s1.rps else 0.0
    summary = (
        f"Two inventory processes bound to the same port (SO_REUSEPORT, `grpc.so_reuseport=1` in "
        f"runtime SERVER_OPTIONS) served **{s2.rps:,.0f}** availability reads/s against **{s1.rps:,.0f}** "
        f"for one (x{gain:.2f}; p99 {s2.p99_ms:.1f} ms vs {s1.p99_ms:.1f} ms), ghz spreading "
        f"{wide.connections} connections over them."
    )
    return results, {"summary": summary, "gain": gain, "connections": wide.connections}


# --- the stage --------------------------------------------------------------------------------


def run(data: dict[str, Any], stages: Sequence[str], load: Load, protoset: Path, *, profile: str) -> None:
    results: list[Any] = data["results"]
    if "tutti" in stages:
        with children() as group:
            print(
                "· Tutti: starting a private stack (real processes) and loading the demo retailer", flush=True
            )
            # What the figures need; returns is not on any measured path.
            needed = [s for s in ("inventory", "orchestrator", "tracking") if s in stack.available_services()]
            running = stack.start(group, services=needed, tag="bench")
            _tutti(data, running, load, protoset, profile=profile)
    if "scaleout" in stages:
        print("· scale-out: one vs two inventory processes on one port", flush=True)
        scale_results, data["scaleout"] = scale_out(load, protoset)
        results.extend(scale_results)


def _tutti(data: dict[str, Any], running: stack.Stack, load: Load, protoset: Path, *, profile: str) -> None:
    run_id = uuid.uuid4().hex[:6]
    skus, pos_sku = stock_bench_skus(running.gateway, run_id)
    print("  L1 POS sale → channel watch", flush=True)
    data["latencies"].append(run_uvloop(pos_to_watch(running.gateway, pos_sku, sales=300)))
    has_orders = {"orchestrator", "tracking"} <= set(running.processes)
    if has_orders:
        print("  L2 event → timeline", flush=True)
        data["latencies"].append(event_to_timeline(running.gateway, skus, orders=200))
    else:
        data.setdefault("skipped", []).append("L2 and T3: orchestrator or tracking cannot run yet")
    specs = ghz_targets(running.gateway, run_id, load, protoset)
    if "orchestrator" not in running.processes:
        del specs["T3"]
    for name, (label, call, payload, metadata) in specs.items():
        print(f"  {label}", flush=True)
        result = run_ghz(
            name, label, running.gateway, call, payload, load, protoset=protoset, metadata=metadata
        )
        result.kind = "tutti"
        data["results"].append(result)
    print("  O1 oversell under contention", flush=True)
    data["oversell"] = oversell(running.gateway, run_id, load, protoset)
    try:
        _profiles(data, specs, running, load, protoset, profile)
    finally:
        if "orchestrator" in running.processes:
            customers = [f"BENCH-{run_id}-C{n}" for n in range(BENCH_CUSTOMERS)] + [f"BENCH-{run_id}-L2"]
            print("  cancelling the bench's orders", flush=True)
            data["cancelled_orders"] = cancel_bench_orders(running.addresses["orchestrator"], customers)


def _profiles(
    data: dict[str, Any],
    specs: dict[str, Any],
    running: stack.Stack,
    load: Load,
    protoset: Path,
    profile: str,
) -> None:
    if profile == "never":
        return
    rows = [r if isinstance(r, dict) else r.as_dict() for r in data["results"]]
    verdicts = {t["result"]: t["met"] for t in report.evaluate({**data, "results": rows})}
    data["profiles"] = []
    for name, spec in specs.items():
        if profile == "always" or verdicts.get(name) is False:
            print(f"  profiling {name} with py-spy", flush=True)
            data["profiles"] += profile_target(name, spec, running, load, protoset)
