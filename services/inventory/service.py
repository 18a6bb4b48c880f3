"""Inventory use cases: validate a command, run it as one atomic store call, shape the result.

Every mutating use case is idempotent: reservations by reservation id, movements by movement /
snapshot / import id, POS sales by terminal and sale id, partial releases and fulfilments by
request id; absolute settings (safety stock, incoming supply, policies, master data) by nature.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tutti.inventory.v1 import events_pb2

from runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, Unavailable
from services.inventory.adapters import codec
from services.inventory.adapters.redis_store import (
    RedisStore,
    location_to_json,
    policy_fields,
    pos_sale_key,
    pos_sale_record,
    sku_to_json,
)
from services.inventory.adapters.watch import AvailabilityHub
from services.inventory.domain import model
from services.inventory.domain.csv_import import parse_stock_csv

EVENT_LOCATION = "tutti.inventory.v1.LocationUpserted"
EVENT_SKU = "tutti.inventory.v1.SkuRegistered"
EVENT_POLICY = "tutti.inventory.v1.ChannelPolicySet"
# Receipts of reservation entries live this long (lua/relayed.lua).
RECEIPT_TTL_S = 86400
# GetSkus names this many unknown SKUs in its NOT_FOUND message and counts the rest.
NAMED_UNKNOWN_SKUS = 5


def _lines_field(i: int) -> str:
    return f"lines[{i}]"


def _single(_: int) -> str:
    """Single-line commands name fields plainly (``sku``, ``location_id``)."""
    return ""


@dataclass(frozen=True, slots=True)
class PosResult:
    duplicate: bool
    shortfall: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WatchUpdate:
    snapshot: bool
    availability: model.SkuAvailability
    snapshot_complete: bool = False


class StockCounters(Protocol):
    """Business counters (adapters/metrics.py exports them to Prometheus)."""

    def reservation_refused(self, channel: str) -> None: ...

    def pos_recorded(self, is_return: bool) -> None: ...


class NoCounters:
    def reservation_refused(self, channel: str) -> None:
        pass

    def pos_recorded(self, is_return: bool) -> None:
        pass


class InventoryService:
    def __init__(
        self,
        store: RedisStore,
        hub: AvailabilityHub | None = None,
        *,
        pos_ack_after_ledger_s: float = 0.0,
        ack_after_ledger_s: float = 0.0,
        snapshot_max_future_s: float = 300.0,
        pos_sale_retention_s: int = 60 * 86400,
        counters: StockCounters | None = None,
    ) -> None:
        self.counters = counters or NoCounters()
        self.store = store
        self.hub = hub
        # How long a till sale stays readable (GetPosSale) for returns to check receipts against:
        # at least the longest return window.
        self.pos_sale_retention_s = pos_sale_retention_s
        # A snapshot dated further ahead than this (ERP/WMS clock skew) is refused: applied, it
        # would make every real count until then look older and be skipped.
        self.snapshot_max_future_s = snapshot_max_future_s
        # > 0: a POS sale is acknowledged only once the relay's receipt shows its movement is on
        # the Kafka ledger (waiting at most this long, else UNAVAILABLE and the terminal resends),
        # so an acknowledged sale survives even the loss of Redis' last second of writes.
        self.pos_ack_after_ledger_s = pos_ack_after_ledger_s
        # The same for every other command that writes (reservations and their confirmations,
        # releases, fulfilments; stock movements, snapshots, settings; master data): answered only
        # once on the ledger, where a catch-up finds it after a power cut.
        self.ack_after_ledger_s = ack_after_ledger_s
        # Every waiter re-checks when the relay reports a batch: the checks of all waiting answers
        # go in one script call (one Redis connection), and POS checks at most 16 at once.
        self._entry_states = _Coalesced(store.entry_states)
        self._ledger_checks = asyncio.Semaphore(16)

    # --- master data --------------------------------------------------------------------------

    async def upsert_locations(self, locations: Sequence[model.Location]) -> list[model.Location]:
        if not locations:
            raise InvalidArgument("locations", "at least one location is required")
        if len(locations) > model.MAX_LOCATIONS:
            raise InvalidArgument("locations", f"at most {model.MAX_LOCATIONS} per call")
        violations: list[FieldViolation | None] = []
        for i, loc in enumerate(locations):
            if loc.type is None:
                violations.append(FieldViolation(f"locations[{i}].type", "is required"))
            violations += model.validate_location(loc, f"locations[{i}]")
        model.raise_if(violations)
        hset: list[tuple[str, str, str]] = []
        events = []
        for loc in locations:
            hset.append(("inv:locations", loc.location_id, location_to_json(loc)))
            hset.append(("inv:locstate", loc.location_id, "1" if loc.active else "0"))
            payload = events_pb2.LocationUpserted(
                location=codec.location_pb(loc), location_id=loc.location_id
            )
            events.append((EVENT_LOCATION, f"location:{loc.location_id}", payload.SerializeToString()))
        await self._wait_entry_on_ledger(await self.store.write_meta(hset=hset, events=events))
        return list(locations)

    async def list_locations(
        self,
        types: Sequence[model.LocationType] = (),
        capabilities: Sequence[model.Capability] = (),
        active_only: bool = False,
    ) -> list[model.Location]:
        found = await self.store.locations()
        out = [
            loc
            for loc in found.values()
            if (not types or loc.type in types)
            and all(c in loc.capabilities for c in capabilities)
            and (loc.active or not active_only)
        ]
        return sorted(out, key=lambda loc: loc.location_id)

    async def get_location(self, location_id: str) -> model.Location:
        model.require_id("location_id", location_id)
        found = await self.store.locations([location_id])
        if location_id not in found:
            raise NotFound(f"location_id: unknown location {location_id}")
        return found[location_id]

    async def register_skus(self, skus: Sequence[model.Sku]) -> int:
        if not skus:
            raise InvalidArgument("skus", "at least one SKU is required")
        if len(skus) > model.MAX_SKUS:
            raise InvalidArgument("skus", f"at most {model.MAX_SKUS} per call")
        model.raise_if(model.check_id(f"skus[{i}].sku", s.sku) for i, s in enumerate(skus))
        hset = [("inv:skus", s.sku, sku_to_json(s)) for s in skus]
        events = [
            (EVENT_SKU, s.sku, events_pb2.SkuRegistered(sku=codec.sku_pb(s)).SerializeToString())
            for s in skus
        ]
        await self._wait_entry_on_ledger(await self.store.write_meta(hset=hset, events=events))
        return len(skus)

    async def get_skus(
        self, skus: Sequence[str], *, allow_missing: bool = False
    ) -> tuple[list[model.Sku], list[str]]:
        """Catalogue entries in request order, and the unknown SKUs. Without ``allow_missing`` an
        unknown SKU is NOT_FOUND naming the first unknown ``skus[i]`` and counting the rest (the
        whole list: ``allow_missing``)."""
        if not skus:
            raise InvalidArgument("skus", "at least one SKU is required")
        if len(skus) > model.MAX_BATCH_SKUS:
            raise InvalidArgument("skus", f"at most {model.MAX_BATCH_SKUS} SKUs per call, got {len(skus)}")
        model.raise_if(model.check_id(f"skus[{i}]", s) for i, s in enumerate(skus))
        found = await self.store.skus(_unique(skus))
        if allow_missing:
            return [found[s] for s in skus if s in found], [s for s in _unique(skus) if s not in found]
        unknown = [f"skus[{i}]: unknown SKU {s}" for i, s in enumerate(skus) if s not in found]
        if unknown:
            named = unknown[:NAMED_UNKNOWN_SKUS]
            if len(unknown) > len(named):
                named.append(f"and {len(unknown) - len(named)} more unknown SKUs (allow_missing lists them)")
            raise NotFound("; ".join(named))
        return [found[s] for s in skus], []

    async def set_channel_policy(self, policy: model.ChannelPolicy) -> model.ChannelPolicy:
        if not policy.channel:
            raise InvalidArgument("policy.channel", "is required")
        if policy.buffer_units < 0 or policy.buffer_units > model.MAX_QUANTITY:
            raise InvalidArgument("policy.buffer_units", "must be between 0 and 1000000000")
        ids = sorted(policy.excluded_location_ids)
        model.raise_if(model.check_id(f"policy.excluded_location_ids[{i}]", x) for i, x in enumerate(ids))
        known = await self.store.locations(ids)
        for i, x in enumerate(ids):
            if x not in known:
                raise NotFound(f"policy.excluded_location_ids[{i}]: unknown location {x}")
        payload = events_pb2.ChannelPolicySet(policy=codec.policy_pb(policy)).SerializeToString()
        xid = await self.store.write_meta(
            delete=[f"inv:policy:{policy.channel}"],
            hset=policy_fields(policy),
            events=[(EVENT_POLICY, f"channel:{policy.channel}", payload)],
        )
        await self._wait_entry_on_ledger(xid)
        return policy

    async def list_channel_policies(self) -> list[model.ChannelPolicy]:
        return await self.store.policies()

    # --- availability -------------------------------------------------------------------------

    async def batch_get_availability(
        self, skus: Sequence[str], location_ids: Sequence[str], channel: str
    ) -> list[model.SkuAvailability]:
        if not skus:
            raise InvalidArgument("skus", "at least one SKU is required")
        if len(skus) > model.MAX_BATCH_SKUS:
            raise InvalidArgument("skus", f"at most {model.MAX_BATCH_SKUS} SKUs per call, got {len(skus)}")
        model.raise_if(
            [
                *(model.check_id(f"skus[{i}]", s) for i, s in enumerate(skus)),
                *(model.check_id(f"location_ids[{i}]", x) for i, x in enumerate(location_ids)),
            ]
        )
        result = await self.store.read(channel, _unique(location_ids), skus)
        for i, x in enumerate(location_ids):
            if result.location_state.get(x, "missing") == "missing":
                raise NotFound(f"location_ids[{i}]: unknown location {x}")
        out = []
        for i, (sku, known, levels) in enumerate(result.skus):
            if not known:
                raise NotFound(f"skus[{i}]: unknown SKU {sku}")
            active = {loc: state == "1" for loc, state in result.location_state.items()}
            out.append(model.availability_view(sku, levels, result.policy, active))
        return out

    async def get_availability(
        self, sku: str, location_ids: Sequence[str], channel: str
    ) -> model.SkuAvailability:
        model.require_id("sku", sku)
        try:
            (view,) = await self.batch_get_availability([sku], location_ids, channel)
        except NotFound as exc:
            raise NotFound(exc.message.replace("skus[0]", "sku")) from None
        return view

    async def get_stock_levels(self, sku: str, location_ids: Sequence[str]) -> list[model.StockLevel]:
        model.require_id("sku", sku)
        model.raise_if(model.check_id(f"location_ids[{i}]", x) for i, x in enumerate(location_ids))
        result = await self.store.read("", _unique(location_ids), [sku])
        for i, x in enumerate(location_ids):
            if result.location_state.get(x, "missing") == "missing":
                raise NotFound(f"location_ids[{i}]: unknown location {x}")
        _, known, levels = result.skus[0]
        if not known:
            raise NotFound(f"sku: unknown SKU {sku}")
        return levels

    async def watch(
        self, skus: Sequence[str], location_ids: Sequence[str], channel: str
    ) -> AsyncIterator[WatchUpdate]:
        """The current availability of ``skus`` (one message per SKU), then every change.

        Subscribes before reading the snapshot and drops changes the snapshot already shows
        (by per SKU x location sequence), so nothing is missed and nothing goes backwards."""
        if self.hub is None:
            raise Unavailable("watching is not enabled in this process")
        if len(skus) > model.MAX_BATCH_SKUS:
            raise InvalidArgument("skus", f"at most {model.MAX_BATCH_SKUS} SKUs per watch, got {len(skus)}")
        model.raise_if(
            [
                *(model.check_id(f"skus[{i}]", s) for i, s in enumerate(skus)),
                *(model.check_id(f"location_ids[{i}]", x) for i, x in enumerate(location_ids)),
            ]
        )
        wanted_locs = set(location_ids)
        with self.hub.subscribe(skus, location_ids) as sub:
            seen: dict[tuple[str, str], int] = {}
            shown: dict[str, dict[str, model.LocationAvailability]] = {}
            if skus:
                policy, active, views = await self._watched_views(skus, location_ids, channel, seen)
                shown = {v.sku: {a.level.location_id: a for a in v.locations} for v in views}
                for i, view in enumerate(views):
                    yield WatchUpdate(True, view, snapshot_complete=i == len(views) - 1)
            else:
                policy = (await self.store.read(channel, [], [])).policy
                active = {}
                yield WatchUpdate(True, model.SkuAvailability("", channel, ()), snapshot_complete=True)
            async for change in sub.changes():
                if "views" in change:
                    # A location or the channel's policy changed: what every SKU shows may have.
                    # Re-read, and send each watched SKU whose view moved as a snapshot of it
                    # (it replaces what the watcher holds, so a location gone from it goes).
                    if not skus:
                        policy = (await self.store.read(channel, [], [])).policy
                        active = {}
                        continue
                    policy, active, views = await self._watched_views(skus, location_ids, channel, seen)
                    for view in views:
                        fresh = {a.level.location_id: a for a in view.locations}
                        if fresh != shown.get(view.sku):
                            shown[view.sku] = fresh
                            yield WatchUpdate(True, view)
                    continue
                sku, loc, seq = change["s"], change["l"], int(change["seq"])
                if seq <= seen.get((sku, loc), 0):
                    continue
                seen[(sku, loc)] = seq
                if wanted_locs and loc not in wanted_locs:
                    continue
                if loc not in active:
                    found = await self.store.locations([loc])
                    active[loc] = loc in found and found[loc].active
                if not active[loc] or loc in policy.excluded_location_ids:
                    continue
                inc = int(change.get("inc") or 0)
                level = model.StockLevel(
                    sku,
                    loc,
                    model.Counters(
                        int(change["oh"]), int(change["rs"]), int(change["ss"]), int(change["qt"])
                    ),
                    incoming=(model.IncomingSupply("", inc, 0),) if inc else (),
                    sequence=seq,
                )
                entry = model.LocationAvailability(
                    level, model.channel_available(level.counters, policy, loc, True)
                )
                per_sku = shown.setdefault(sku, {})
                per_sku[loc] = entry
                network = sum(a.available for a in per_sku.values())
                yield WatchUpdate(False, _ChangedView(sku, channel, (entry,), network))

    async def _watched_views(
        self,
        skus: Sequence[str],
        location_ids: Sequence[str],
        channel: str,
        seen: dict[tuple[str, str], int],
    ) -> tuple[model.ChannelPolicy, dict[str, bool], list[model.SkuAvailability]]:
        """The channel's policy, the locations' states and each SKU's view, read together; ``seen``
        learns each SKU x location's sequence so older changes are dropped."""
        result = await self.store.read(channel, _unique(location_ids), _unique(skus))
        for i, x in enumerate(location_ids):
            if result.location_state.get(x, "missing") == "missing":
                raise NotFound(f"location_ids[{i}]: unknown location {x}")
        active = {loc: state == "1" for loc, state in result.location_state.items()}
        views = []
        for i, (sku, known, levels) in enumerate(result.skus):
            if not known:
                raise NotFound(f"skus[{i}]: unknown SKU {sku}")
            for level in levels:
                key = (sku, level.location_id)
                seen[key] = max(seen.get(key, 0), level.sequence)
            views.append(model.availability_view(sku, levels, result.policy, active))
        return result.policy, active, views

    # --- reservations -------------------------------------------------------------------------

    async def reserve(
        self,
        reservation_id: str,
        lines: Sequence[model.Line],
        channel: str,
        order_id: str = "",
        hold_ttl_s: int = 0,
    ) -> tuple[model.Reservation, bool]:
        violations = [model.check_id("reservation_id", reservation_id)]
        if order_id:
            violations.append(model.check_id("order_id", order_id))
        if not channel:
            violations.append(FieldViolation("channel", "is required"))
        if not 0 <= hold_ttl_s <= model.MAX_HOLD_SECONDS:
            violations.append(
                FieldViolation("hold_ttl_seconds", f"must be between 0 and {model.MAX_HOLD_SECONDS}")
            )
        model.raise_if(violations)
        model.validate_lines(lines)
        fp = model.fingerprint(
            sorted((x.sku, x.location_id, x.quantity) for x in lines), channel, order_id, hold_ttl_s
        )
        try:
            reservation, dup, xid = await self.store.reserve(
                reservation_id, lines, channel, order_id, hold_ttl_s, fp
            )
        except FailedPrecondition:
            # The reserve script refuses only for stock (not enough available at a location).
            self.counters.reservation_refused(channel)
            raise
        await self._wait_entry_on_ledger(xid)
        return reservation, dup

    async def confirm(self, reservation_id: str, order_id: str = "") -> model.Reservation:
        model.require_id("reservation_id", reservation_id)
        if order_id:
            model.require_id("order_id", order_id)
        reservation, xid = await self.store.confirm(reservation_id, order_id)
        await self._wait_entry_on_ledger(xid)
        return reservation

    async def release(
        self, reservation_id: str, lines: Sequence[model.Line] = (), request_id: str = "", reason: str = ""
    ) -> model.Reservation:
        return await self._release_or_fulfil("release", reservation_id, lines, request_id, reason)

    async def fulfil(
        self, reservation_id: str, lines: Sequence[model.Line] = (), request_id: str = "", reason: str = ""
    ) -> model.Reservation:
        return await self._release_or_fulfil("fulfil", reservation_id, lines, request_id, reason)

    async def _release_or_fulfil(
        self, op: str, reservation_id: str, lines: Sequence[model.Line], request_id: str, reason: str
    ) -> model.Reservation:
        model.require_id("reservation_id", reservation_id)
        model.validate_lines(lines, required=False)
        if request_id:
            model.require_id("request_id", request_id)
        elif lines:
            raise InvalidArgument("request_id", "is required when lines are given (it makes retries safe)")
        reservation, xid = await self.store.release_or_fulfil(
            op, reservation_id, lines, request_id, reason[:200]
        )
        await self._wait_entry_on_ledger(xid)
        return reservation

    async def get_reservation(self, reservation_id: str) -> model.Reservation:
        model.require_id("reservation_id", reservation_id)
        found = await self.store.get_reservation(reservation_id)
        if found is None:
            raise NotFound(f"reservation_id: unknown reservation {reservation_id}")
        return found

    async def sweep_expired(self, limit: int = 200) -> int:
        return await self.store.sweep(limit)

    # --- stock sync ---------------------------------------------------------------------------

    async def apply_snapshot(
        self,
        snapshot_id: str,
        as_of_ms: int,
        lines: Sequence[model.Line],
        source: str = "",
        safety: dict[tuple[str, str], int] | None = None,
        line_field: str = "lines",
        line_name: Callable[[int], str] | None = None,
    ) -> list[tuple[model.Line, bool, model.StockLevel, int]]:
        name = line_name or (lambda i: f"{line_field}[{i}]")
        model.require_id("snapshot_id", snapshot_id)
        if as_of_ms <= 0:
            raise InvalidArgument("as_of", "is required")
        ahead_ms = as_of_ms - int(time.time() * 1000)
        if ahead_ms > self.snapshot_max_future_s * 1000:
            raise InvalidArgument(
                "as_of",
                f"is {ahead_ms / 1000:.0f}s in the future; at most {self.snapshot_max_future_s:g}s of "
                "clock skew is accepted (TUTTI_INVENTORY_SNAPSHOT_MAX_FUTURE_SECONDS)",
            )
        if not lines:
            raise InvalidArgument(line_field, "at least one line is required")
        if len(lines) > model.MAX_SNAPSHOT_LINES:
            raise InvalidArgument(line_field, f"at most {model.MAX_SNAPSHOT_LINES} lines per snapshot")
        violations: list[FieldViolation | None] = []
        seen: set[tuple[str, str]] = set()
        for i, line in enumerate(lines):
            violations += [
                model.check_id(f"{name(i)}.sku", line.sku),
                model.check_id(f"{name(i)}.location_id", line.location_id),
                model.check_quantity(f"{name(i)}.on_hand", line.quantity, allow_zero=True),
            ]
            if (line.sku, line.location_id) in seen:
                violations.append(FieldViolation(name(i), "SKU x location appears more than once"))
            seen.add((line.sku, line.location_id))
        model.raise_if(violations)
        ops: list[dict[str, Any]] = []
        op_lines: list[int] = []  # op index -> line index, to name the line in errors
        for i, line in enumerate(lines):
            op_lines.append(i)
            ops.append(
                {
                    "op": "snap",
                    "k": "SNAPSHOT_APPLIED",
                    "s": line.sku,
                    "l": line.location_id,
                    "abs": line.quantity,
                    "asof": as_of_ms,
                }
            )
            if safety and (line.sku, line.location_id) in safety:
                op_lines.append(i)
                ops.append(
                    {
                        "op": "safety",
                        "k": "SAFETY_STOCK_SET",
                        "s": line.sku,
                        "l": line.location_id,
                        "ss": safety[(line.sku, line.location_id)],
                    }
                )
        fp = model.fingerprint(as_of_ms, [(x.sku, x.location_id, x.quantity) for x in lines], safety)
        result = await self.store.apply(
            ops,
            idem_key=f"inv:idem:snap:{snapshot_id}",
            fp=fp,
            reference=snapshot_id,
            reason=source[:200],
            field_of=lambda op: name(op_lines[op]),
        )
        await self._wait_entry_on_ledger(result.outbox_id)
        out = []
        # A rebuilt idempotency record (see rebuild.py) carries no per-line results.
        op_results = result.ops or [{"applied": False} for _ in ops]
        snap_ops = [op for op, spec in zip(op_results, ops, strict=True) if spec["op"] == "snap"]
        for line, op in zip(lines, snap_ops, strict=True):
            level = result.levels.get((line.sku, line.location_id))
            if level is None:  # a rebuilt idempotency record carries no levels
                level = (await self.get_stock_levels(line.sku, [line.location_id]))[0]
            out.append((line, bool(op.get("applied")), level, int(op.get("sf") or 0)))
        return out

    async def import_csv(self, import_id: str, data: bytes, as_of_ms: int) -> tuple[int, int]:
        model.require_id("import_id", import_id)
        rows = parse_stock_csv(data)
        lines = [model.Line(r.sku, r.location_id, r.on_hand) for r in rows]
        safety = {(r.sku, r.location_id): r.safety_stock for r in rows if r.safety_stock is not None}
        results = await self.apply_snapshot(
            import_id, as_of_ms, lines, "CSV", safety, line_name=lambda i: f"csv:row {rows[i].row}"
        )
        applied = sum(1 for _, ok, _, _ in results if ok)
        return applied, len(results) - applied

    async def _movement(
        self,
        movement_id: str,
        ops: list[dict[str, Any]],
        fp_parts: object,
        reason: str,
        field_of: Callable[[int], str] = _lines_field,
    ) -> tuple[bool, dict[tuple[str, str], model.StockLevel]]:
        fp = model.fingerprint(fp_parts)
        result = await self.store.apply(
            ops,
            idem_key=f"inv:idem:mv:{movement_id}",
            fp=fp,
            reference=movement_id,
            reason=reason[:200],
            field_of=field_of,
        )
        await self._wait_entry_on_ledger(result.outbox_id)
        levels = result.levels
        missing = {(op["s"], op["l"]) for op in ops} - set(levels)
        for sku, loc in missing:  # a rebuilt idempotency record carries no levels
            levels[(sku, loc)] = (await self.get_stock_levels(sku, [loc]))[0]
        return result.duplicate, levels

    async def receive(
        self,
        movement_id: str,
        location_id: str,
        lines: Sequence[model.Line],
        quarantined: bool = False,
        supply_id: str = "",
        reason: str = "",
    ) -> tuple[bool, list[model.StockLevel]]:
        model.raise_if(
            [
                model.check_id("movement_id", movement_id),
                model.check_id("location_id", location_id),
                model.check_id("supply_id", supply_id) if supply_id else None,
            ]
        )
        lines = [model.Line(x.sku, location_id, x.quantity) for x in lines]
        model.validate_lines(lines, maximum=model.MAX_MOVEMENT_LINES)
        ops = [
            {
                "op": "delta",
                "k": "RECEIVED",
                "s": x.sku,
                "l": location_id,
                "doh": 0 if quarantined else x.quantity,
                "dqt": x.quantity if quarantined else 0,
                "mode": "strict",
                "sup": supply_id,
            }
            for x in lines
        ]
        dup, levels = await self._movement(
            movement_id, ops, ("recv", location_id, lines, quarantined, supply_id), reason
        )
        return dup, [levels[(x.sku, location_id)] for x in lines]

    async def adjust(
        self, movement_id: str, sku: str, location_id: str, delta: int, reason: str = ""
    ) -> tuple[bool, model.StockLevel]:
        model.raise_if(
            [
                model.check_id("movement_id", movement_id),
                model.check_id("sku", sku),
                model.check_id("location_id", location_id),
                FieldViolation("delta", "must not be zero") if delta == 0 else None,
                FieldViolation("delta", "is out of range") if abs(delta) > model.MAX_QUANTITY else None,
            ]
        )
        ops = [
            {
                "op": "delta",
                "k": "ADJUSTED",
                "s": sku,
                "l": location_id,
                "doh": delta,
                "dqt": 0,
                "mode": "strict",
            }
        ]
        dup, levels = await self._movement(
            movement_id, ops, ("adj", sku, location_id, delta), reason, _single
        )
        return dup, levels[(sku, location_id)]

    async def transfer(
        self, movement_id: str, sku: str, from_id: str, to_id: str, quantity: int
    ) -> tuple[bool, model.StockLevel, model.StockLevel]:
        model.raise_if(
            [
                model.check_id("movement_id", movement_id),
                model.check_id("sku", sku),
                model.check_id("from_location_id", from_id),
                model.check_id("to_location_id", to_id),
                model.check_quantity("quantity", quantity),
                FieldViolation("to_location_id", "must differ from from_location_id")
                if from_id == to_id
                else None,
            ]
        )
        ops = [
            {
                "op": "delta",
                "k": "TRANSFERRED_OUT",
                "s": sku,
                "l": from_id,
                "doh": -quantity,
                "dqt": 0,
                "mode": "strict",
                "cp": to_id,
            },
            {
                "op": "delta",
                "k": "TRANSFERRED_IN",
                "s": sku,
                "l": to_id,
                "doh": quantity,
                "dqt": 0,
                "mode": "strict",
                "cp": from_id,
            },
        ]
        try:
            dup, levels = await self._movement(
                movement_id, ops, ("xfer", sku, from_id, to_id, quantity), "transfer"
            )
        except NotFound as exc:
            raise NotFound(
                exc.message.replace("lines[0].location_id", "from_location_id")
                .replace("lines[1].location_id", "to_location_id")
                .replace("lines[0].sku", "sku")
            ) from None
        return dup, levels[(sku, from_id)], levels[(sku, to_id)]

    async def quarantine(
        self, movement_id: str, sku: str, location_id: str, quantity: int, reason: str = ""
    ) -> tuple[bool, model.StockLevel]:
        self._check_single(movement_id, sku, location_id, quantity)
        ops = [
            {
                "op": "delta",
                "k": "QUARANTINED",
                "s": sku,
                "l": location_id,
                "doh": -quantity,
                "dqt": quantity,
                "mode": "strict",
            }
        ]
        dup, levels = await self._movement(
            movement_id, ops, ("qt", sku, location_id, quantity), reason, _single
        )
        return dup, levels[(sku, location_id)]

    async def release_quarantine(
        self, movement_id: str, sku: str, location_id: str, quantity: int, restock: bool
    ) -> tuple[bool, model.StockLevel]:
        self._check_single(movement_id, sku, location_id, quantity)
        kind = "QUARANTINE_RESTOCKED" if restock else "QUARANTINE_DISPOSED"
        ops = [
            {
                "op": "delta",
                "k": kind,
                "s": sku,
                "l": location_id,
                "doh": quantity if restock else 0,
                "dqt": -quantity,
                "mode": "strict",
            }
        ]
        dup, levels = await self._movement(
            movement_id, ops, ("uq", sku, location_id, quantity, restock), kind, _single
        )
        return dup, levels[(sku, location_id)]

    @staticmethod
    def _check_single(movement_id: str, sku: str, location_id: str, quantity: int) -> None:
        model.raise_if(
            [
                model.check_id("movement_id", movement_id),
                model.check_id("sku", sku),
                model.check_id("location_id", location_id),
                model.check_quantity("quantity", quantity),
            ]
        )

    async def set_safety_stock(self, lines: Sequence[model.Line]) -> list[model.StockLevel]:
        if not lines:
            raise InvalidArgument("lines", "at least one line is required")
        if len(lines) > model.MAX_SNAPSHOT_LINES:
            raise InvalidArgument("lines", f"at most {model.MAX_SNAPSHOT_LINES} lines")
        violations: list[FieldViolation | None] = []
        for i, x in enumerate(lines):
            violations += [
                model.check_id(f"lines[{i}].sku", x.sku),
                model.check_id(f"lines[{i}].location_id", x.location_id),
                model.check_quantity(f"lines[{i}].safety_stock", x.quantity, allow_zero=True),
            ]
        model.raise_if(violations)
        ops = [
            {"op": "safety", "k": "SAFETY_STOCK_SET", "s": x.sku, "l": x.location_id, "ss": x.quantity}
            for x in lines
        ]
        result = await self.store.apply(ops)
        await self._wait_entry_on_ledger(result.outbox_id)
        return [result.levels[(x.sku, x.location_id)] for x in lines]

    async def set_incoming_supply(
        self, sku: str, location_id: str, supply: model.IncomingSupply
    ) -> model.StockLevel:
        model.raise_if(
            [
                model.check_id("sku", sku),
                model.check_id("location_id", location_id),
                model.check_id("supply.supply_id", supply.supply_id),
                model.check_quantity("supply.quantity", supply.quantity, allow_zero=True),
                FieldViolation("supply.expected_at", "is required")
                if supply.quantity > 0 and supply.expected_at_ms <= 0
                else None,
            ]
        )
        ops = [
            {
                "op": "incoming",
                "k": "INCOMING_SUPPLY_SET",
                "s": sku,
                "l": location_id,
                "sid": supply.supply_id,
                "q": supply.quantity,
                "at": supply.expected_at_ms,
                "src": supply.source[:100],
            }
        ]
        result = await self.store.apply(ops, reference=supply.supply_id, field_of=_single)
        await self._wait_entry_on_ledger(result.outbox_id)
        return result.levels[(sku, location_id)]

    # --- POS ----------------------------------------------------------------------------------

    async def pos_sale(
        self,
        terminal_id: str,
        sale_id: str,
        location_id: str,
        is_return: bool,
        lines: Sequence[tuple[str, int, bool]],
    ) -> PosResult:
        """Records a till sale or return. A sale never fails for lack of stock (the goods are gone):
        on_hand falls to the reserved level at most and the rest is reported as shortfall."""
        model.raise_if(
            [
                model.check_id("terminal_id", terminal_id),
                model.check_id("sale_id", sale_id),
                model.check_id("location_id", location_id),
            ]
        )
        model.validate_lines(
            [model.Line(s, location_id, q) for s, q, _ in lines], maximum=model.MAX_POS_LINES
        )
        ops = []
        for sku, qty, damaged in lines:
            if is_return:
                ops.append(
                    {
                        "op": "delta",
                        "k": "POS_RETURNED",
                        "s": sku,
                        "l": location_id,
                        "doh": 0 if damaged else qty,
                        "dqt": qty if damaged else 0,
                        "mode": "strict",
                    }
                )
            else:
                ops.append(
                    {
                        "op": "delta",
                        "k": "POS_SOLD",
                        "s": sku,
                        "l": location_id,
                        "doh": -qty,
                        "dqt": 0,
                        "mode": "clamp",
                    }
                )
        ref = f"pos:{terminal_id}:{sale_id}"
        fp = model.fingerprint(location_id, is_return, list(lines))
        idem_key, receipt_key = f"inv:idem:{ref}", f"inv:onledger:{ref}"
        record = pos_sale_record(location_id, is_return, lines)
        result = await self.store.apply(
            ops,
            idem_key=idem_key,
            fp=fp,
            reference=ref,
            reason="POS",
            receipt_key=receipt_key,
            record=(pos_sale_key(terminal_id, sale_id), record, self.pos_sale_retention_s),
        )
        if self.pos_ack_after_ledger_s > 0 and self.hub is not None:
            await self._wait_on_ledger(idem_key, receipt_key)
        shortfall = {op["s"]: int(op["sf"]) for op in result.ops if int(op.get("sf") or 0) > 0}
        if not result.duplicate:
            self.counters.pos_recorded(is_return)
        return PosResult(result.duplicate, shortfall)

    async def get_pos_sale(self, terminal_id: str, sale_id: str) -> model.PosSale:
        model.raise_if([model.check_id("terminal_id", terminal_id), model.check_id("sale_id", sale_id)])
        sale = await self.store.pos_sale(terminal_id, sale_id)
        if sale is None:
            raise NotFound(
                f"no till sale {sale_id} of terminal {terminal_id} is on record (never recorded, or "
                f"older than {self.pos_sale_retention_s // 86400} days)"
            )
        return sale

    async def _wait_entry_on_ledger(self, outbox_id: str) -> None:
        """Returns once the relay's receipt proves outbox entry ``outbox_id`` is on the Kafka ledger
        (nothing to wait for without an id: nothing moved, or a record restored from the ledger);
        raises UNAVAILABLE when that takes longer than ``ack_after_ledger_s`` or when the
        entry is lost. The caller retries with the same id: it counts once, and the retry waits too."""
        if not outbox_id or self.ack_after_ledger_s <= 0 or self.hub is None:
            return
        state = "pending"

        async def pending() -> bool:
            nonlocal state
            state = await self._entry_states(outbox_id)
            return state == "pending"

        if not await self.hub.wait_relayed(pending, limit_s=self.ack_after_ledger_s):
            raise Unavailable("recorded but not yet on the ledger; retry with the same id (it counts once)")
        if state == "lost" and _entry_age_s(outbox_id) > RECEIPT_TTL_S:
            return  # a retry after the receipt expired: the entry was relayed long ago
        if state != "on":
            raise Unavailable("recorded, but its ledger entry was lost; retry later")

    async def _wait_on_ledger(self, idem_key: str, receipt_key: str) -> None:
        """Returns once the relay's receipt proves the sale is on the Kafka ledger; raises
        UNAVAILABLE (the terminal resends, the sale counts once) when that takes longer than
        ``pos_ack_after_ledger_s`` or when the sale's outbox entry turns out lost. The absence of
        the entry is never taken as proof: a lost entry (AOF replay, failover, trim) looks the same."""
        assert self.hub is not None
        state = "pending"

        async def pending() -> bool:
            nonlocal state
            async with self._ledger_checks:
                state = await self.store.ledger_state(idem_key, receipt_key)
            return state == "pending"

        if not await self.hub.wait_relayed(pending, limit_s=self.pos_ack_after_ledger_s):
            raise Unavailable("sale recorded but not yet on the ledger; resend it (it counts once)")
        if state == "on":
            return
        if state == "requeued":
            raise Unavailable(
                "the sale's ledger entry was lost and has been queued again; resend it (it counts once)"
            )
        if state == "gone":
            raise Unavailable("the sale's record was lost before reaching the ledger; resend it")
        raise Unavailable("the sale's ledger entry was lost and cannot be re-queued; resend it later")


@dataclass(frozen=True, slots=True)
class _ChangedView(model.SkuAvailability):
    """A change: the changed location only, with the network total over the watched locations."""

    total: int = 0

    @property
    def network_available(self) -> int:
        return self.total


class _Coalesced:
    """Answers ``check(key)`` for many concurrent callers with as few calls of ``many(keys)`` as
    possible: keys asked while a call is running go together into the next one."""

    def __init__(self, many: Callable[[Sequence[str]], Awaitable[list[str]]]) -> None:
        self._many = many
        self._asked: dict[str, asyncio.Future[str]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, key: str) -> str:
        future = self._asked.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._asked[key] = future
            if self._task is None:
                self._task = asyncio.create_task(self._run())
        return await asyncio.shield(future)

    async def _run(self) -> None:
        try:
            while self._asked:
                asked, self._asked = self._asked, {}
                try:
                    answers = await self._many(list(asked))
                except Exception as exc:  # noqa: BLE001 - handed to every caller of this batch
                    for future in asked.values():
                        if not future.done():
                            future.set_exception(exc)
                            future.exception()  # retrieved here; the callers re-raise it
                    continue
                for future, answer in zip(asked.values(), answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            self._task = None


def _entry_age_s(outbox_id: str) -> float:
    """Age of an outbox entry from its id (``<ms>-<seq>``, the Redis time it was appended)."""
    return time.time() - int(outbox_id.split("-")[0]) / 1000


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))
