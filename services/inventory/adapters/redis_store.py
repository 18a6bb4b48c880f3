"""The Redis store: every mutation is one Lua script call (atomic: counters, reservation,
ledger outbox entry and the pub/sub change notice are written together), reads are one call.
Key layout and the scripts' conventions are documented in adapters/lua/common.lua."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from services.inventory.domain import model

LUA = Path(__file__).parent / "lua"
SCRIPTS = ("reserve", "confirm", "release", "sweep", "apply", "meta", "read", "pos_ack", "ack_state", "armed")
OUTBOX = "inv:outbox"
# run_id of the Redis process whose state was checked against the ledger (see lua/common.lua).
ARMED = "inv:ledger:armed"
# Highest outbox id the relay put on Kafka, and this store's id sent with every ledger record.
RELAYED = "inv:ledger:relayed"
STORE_ID = "inv:ledger:store"


def _list(value: Any) -> list[Any]:
    # cjson encodes an empty Lua table as {}.
    return value if isinstance(value, list) else []


def level_from(sku: str, loc: str, v: dict[str, Any]) -> model.StockLevel:
    return model.StockLevel(
        sku=sku,
        location_id=loc,
        counters=model.Counters(int(v["oh"]), int(v["rs"]), int(v["ss"]), int(v["qt"])),
        incoming=tuple(
            model.IncomingSupply(s["id"], int(s["q"]), int(s.get("at") or 0), str(s.get("src") or ""))
            for s in _list(v.get("sup"))
        ),
        sequence=int(v["seq"]),
        snapshot_as_of_ms=int(v.get("asof") or 0),
    )


def reservation_from(r: dict[str, Any]) -> model.Reservation:
    return model.Reservation(
        reservation_id=r["id"],
        status=model.ReservationStatus(r["st"]),
        lines=tuple(
            model.ReservedLine(line["s"], line["l"], int(line["q"]), int(line["r"]), int(line["f"]))
            for line in _list(r["lines"])
        ),
        channel=r.get("ch") or "",
        order_id=r.get("ord") or "",
        expires_at_ms=int(r.get("exp") or 0),
        created_at_ms=int(r.get("cr") or 0),
    )


FieldOf = Callable[[int], str]


def _lines_field(i: int) -> str:
    return f"lines[{i}]"


def _rename(field: str, field_of: FieldOf) -> str:
    """``lines[3].sku`` from a script -> the caller's name for op 3 (``csv:row 5.sku``, ``sku``...)."""
    match = _LINE_FIELD.match(field)
    if not match:
        return field
    prefix, rest = field_of(int(match.group(1))), match.group(2)
    return prefix + rest if prefix else rest.lstrip(".")


_LINE_FIELD = re.compile(r"^lines\[(\d+)\](.*)$")


def _raise(e: dict[str, Any], field_of: FieldOf = _lines_field) -> None:
    code, msg = e["code"], e["msg"]
    field = _rename(e.get("field") or "", field_of)
    if code == "NOT_FOUND":
        raise NotFound(f"{field}: {msg}" if field else msg)
    if code == "INVALID_ARGUMENT":
        raise InvalidArgument(field or "lines", msg)
    if code == "ALREADY_EXISTS":
        raise AlreadyExists(msg)
    if code == "UNAVAILABLE":
        raise Unavailable(msg)
    if code == "FAILED_PRECONDITION":
        violations = []
        for s in _list(e.get("short")):
            what = s.get("what") or "available"
            subject = field_of(int(s["i"])) or f"{s['s']} at {s['l']}"
            detail = f"{s['s']} at {s['l']}: requested {s.get('want', '?')}, {what} {s.get('have', '?')}"
            violations.append((subject, detail))
        if violations:
            names = ", ".join(f"{subj} ({desc})" for subj, desc in violations)
            raise FailedPrecondition(f"{msg}: {names}", violations)
        raise FailedPrecondition(msg)
    raise RuntimeError(f"unexpected script error {code}: {msg}")


def _decode(raw: bytes | str, field_of: FieldOf = _lines_field) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(raw)
    if "e" in out:
        _raise(out["e"], field_of)
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class ReadResult:
    policy: model.ChannelPolicy
    location_state: dict[str, str]  # "1" active, "0" inactive, "missing"
    skus: list[tuple[str, bool, list[model.StockLevel]]]


@dataclasses.dataclass(frozen=True, slots=True)
class ApplyResult:
    duplicate: bool
    ops: list[dict[str, Any]]
    levels: dict[tuple[str, str], model.StockLevel]
    # Id of the outbox entry holding the movements ("" when nothing moved or unknown).
    outbox_id: str = ""


class RedisStore:
    def __init__(
        self,
        redis: Redis,
        *,
        idempotency_ttl_s: int = 7 * 86400,
        closed_ttl_s: int = 7 * 86400,
        control: Redis | None = None,
    ) -> None:
        """``control``: a client of the same db for the ledger checks (is Redis armed, are answers'
        entries on the ledger), so they never wait for, or take, a connection of the busy pool."""
        self.redis = redis
        self.idempotency_ttl_s = idempotency_ttl_s
        self.closed_ttl_s = closed_ttl_s
        db = int(redis.connection_pool.connection_kwargs.get("db") or 0)
        # Pub/sub is server-wide: channels carry the db index so deployments sharing a server stay apart.
        self.avail_channel = f"inv:avail:{db}"
        self.relayed_channel = f"inv:relayed:{db}"
        prelude = (
            (LUA / "common.lua")
            .read_text()
            .replace("local AVAIL_CHANNEL = 'inv:avail'", f"local AVAIL_CHANNEL = '{self.avail_channel}'")
        )
        self._scripts = {
            name: redis.register_script(prelude + "\n" + (LUA / f"{name}.lua").read_text())
            for name in SCRIPTS
        }
        self._control = {
            name: (control or redis).register_script(prelude + "\n" + (LUA / f"{name}.lua").read_text())
            for name in ("ack_state", "armed")
        }

    async def _call(self, name: str, args: Sequence[Any]) -> Any:
        return await self._scripts[name](keys=[], args=list(args))

    # --- master data --------------------------------------------------------------------------

    async def write_meta(
        self,
        *,
        delete: Sequence[str] = (),
        hset: Sequence[tuple[str, str, str]] = (),
        events: Sequence[tuple[str, str, bytes]] = (),
    ) -> str:
        """Returns the id of the outbox entry holding the events ("" when none)."""
        spec = {
            "del": list(delete),
            "hset": [list(h) for h in hset],
            "events": [[t, k, base64.b64encode(p).decode()] for t, k, p in events],
        }
        return _text(await self._call("meta", [json.dumps(spec)]))

    async def locations(self, ids: Sequence[str] | None = None) -> dict[str, model.Location]:
        if ids is None:
            raw = await self.redis.hgetall("inv:locations")
        else:
            values = await self.redis.hmget("inv:locations", list(ids)) if ids else []
            raw = {i: v for i, v in zip(ids, values, strict=True) if v is not None}
        return {(k.decode() if isinstance(k, bytes) else k): location_from_json(v) for k, v in raw.items()}

    async def skus(self, ids: Sequence[str]) -> dict[str, model.Sku]:
        """The catalogue entries of ``ids`` that are registered (one HMGET)."""
        values = await self.redis.hmget("inv:skus", list(ids)) if ids else []
        return {i: sku_from_json(v) for i, v in zip(ids, values, strict=True) if v is not None}

    async def policies(self) -> list[model.ChannelPolicy]:
        out = []
        async for key in self.redis.scan_iter(match="inv:policy:*", count=100):
            name = key.decode().removeprefix("inv:policy:")
            out.append(policy_from_hash(name, await self.redis.hgetall(key)))
        return sorted(out, key=lambda p: p.channel)

    # --- reads --------------------------------------------------------------------------------

    async def read(self, channel: str, location_ids: Sequence[str], skus: Sequence[str]) -> ReadResult:
        raw = await self._call("read", [channel, len(location_ids), *location_ids, *skus])
        out = json.loads(raw)
        policy = model.ChannelPolicy(
            channel=channel,
            buffer_units=int(out["policy"]["buffer"]),
            excluded_location_ids=frozenset(_list(out["policy"]["x"])),
        )
        locstate = out["loc"] if isinstance(out["loc"], dict) else {}
        entries = [
            (e["s"], bool(e["known"]), [level_from(e["s"], lv["l"], lv) for lv in _list(e["levels"])])
            for e in out["skus"]
        ]
        return ReadResult(policy, locstate, entries)

    async def get_reservation(self, reservation_id: str) -> model.Reservation | None:
        raw = await self.redis.hgetall(f"inv:res:{reservation_id}")
        if not raw:
            return None
        r = {k.decode(): v.decode() for k, v in raw.items()}
        r["id"] = reservation_id
        r["lines"] = json.loads(r["lines"])
        return reservation_from(r)

    # --- reservations -------------------------------------------------------------------------

    async def reserve(
        self,
        reservation_id: str,
        lines: Sequence[model.Line],
        channel: str,
        order_id: str,
        hold_ttl_s: int,
        fp: str,
    ) -> tuple[model.Reservation, bool, str]:
        """The reservation, whether it existed already, and the id of the outbox entry holding its
        movements ("" when unknown: restored from the ledger, or made before entries were kept)."""
        args: list[Any] = [reservation_id, channel, order_id, hold_ttl_s, fp, len(lines)]
        for line in lines:
            args += [line.sku, line.location_id, line.quantity]
        out = _decode(await self._call("reserve", args))
        return reservation_from(out["r"]), bool(out["dup"]), str(out.get("xid") or "")

    async def confirm(self, reservation_id: str, order_id: str) -> tuple[model.Reservation, str]:
        out = _decode(await self._call("confirm", [reservation_id, order_id]))
        return reservation_from(out["r"]), str(out.get("xid") or "")

    async def release_or_fulfil(
        self, op: str, reservation_id: str, lines: Sequence[model.Line], request_id: str, reason: str
    ) -> tuple[model.Reservation, str]:
        idem = f"inv:idem:{op}:{reservation_id}:{request_id}" if request_id else ""
        args: list[Any] = [
            op,
            reservation_id,
            idem,
            self.idempotency_ttl_s,
            self.closed_ttl_s,
            reason,
            len(lines),
        ]
        for line in lines:
            args += [line.sku, line.location_id, line.quantity]
        out = _decode(await self._call("release", args))
        if "r" not in out:  # a rebuilt idempotency record: answer with the current state
            found = await self.get_reservation(reservation_id)
            if found is None:
                raise NotFound(f"reservation_id: unknown reservation {reservation_id}")
            return found, ""
        return reservation_from(out["r"]), str(out.get("xid") or "")

    async def sweep(self, limit: int = 200) -> int:
        return int(await self._call("sweep", [limit, self.closed_ttl_s]))

    # --- stock movements ----------------------------------------------------------------------

    async def apply(
        self,
        ops: Sequence[dict[str, Any]],
        *,
        idem_key: str = "",
        fp: str = "",
        reference: str = "",
        reason: str = "",
        field_of: FieldOf = _lines_field,
        receipt_key: str = "",
        record: tuple[str, dict[str, Any], int] | None = None,
    ) -> ApplyResult:
        """``receipt_key`` (with ``idem_key``): the relay writes it once the movements are on Kafka
        (see :meth:`ledger_state`). ``record`` (key, JSON-able value, TTL s) is written with the
        movements, atomically, and only when they apply (not on a duplicate)."""
        record_args: list[Any] = (
            [record[0], json.dumps(record[1]), record[2]] if record is not None else ["", "", 0]
        )
        raw = await self._call(
            "apply",
            [
                idem_key, self.idempotency_ttl_s, fp, reference, reason, json.dumps(list(ops)), receipt_key,
                *record_args,
            ],
        )
        out = _decode(raw, field_of)
        levels = {}
        for key, v in (out.get("levels") or {}).items():
            sku, _, loc = key.rpartition("@")
            levels[(sku, loc)] = level_from(sku, loc, v)
        return ApplyResult(bool(out.get("dup")), _list(out.get("ops")), levels, str(out.get("xid") or ""))

    async def ledger_state(self, idem_key: str, receipt_key: str) -> str:
        """Where the movements of a command applied with ``receipt_key`` stand: ``on`` (the relay's
        receipt says they are on Kafka), ``pending`` (still in the outbox), ``requeued`` (the outbox
        entry was lost and has just been appended again), ``lost`` (lost, nothing to re-queue it
        from) or ``gone`` (the command's record itself is lost: it is not recorded). Only ``on``
        is proof; an entry's absence from the outbox is not (see lua/pos_ack.lua)."""
        raw = await self._call("pos_ack", [idem_key, receipt_key])
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def entry_states(self, outbox_ids: Sequence[str]) -> list[str]:
        """Where each outbox entry (written with a receipt flag: every command but POS sales)
        stands: ``on`` (the relay's receipt), ``pending`` (in the outbox) or ``lost`` (see
        lua/ack_state.lua). One call for all of them."""
        return [_text(v) for v in await self._control["ack_state"](keys=[], args=list(outbox_ids))]

    async def armed(self) -> tuple[str, str]:
        """(current Redis ``run_id:lastsave``, the value last armed): mutations run only when the
        run_ids are equal (see lua/common.lua)."""
        current, armed = await self._control["armed"](keys=[], args=[])
        return _text(current), _text(armed)

    async def arm(self, value: str) -> None:
        """Lets mutations run on the Redis process of ``value`` (``run_id:lastsave``, its state
        matches the ledger)."""
        await self.redis.set(ARMED, value)

    async def pos_sale(self, terminal_id: str, sale_id: str) -> model.PosSale | None:
        raw = await self.redis.get(pos_sale_key(terminal_id, sale_id))
        if raw is None:
            return None
        d = json.loads(raw)
        return model.PosSale(
            terminal_id=terminal_id,
            sale_id=sale_id,
            location_id=d["loc"],
            is_return=bool(d["ret"]),
            lines=tuple((str(s), int(q), bool(dmg)) for s, q, dmg in d["lines"]),
            recorded_at_ms=int(d["at"]),
        )

    async def ping(self) -> None:
        await self.redis.ping()


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def store_id(redis: Redis) -> str:
    """This store's id (created once): ledger records carry it so a catch-up after a Redis restart
    replays only its own movements when several stores share a ledger topic (test dbs do)."""
    await redis.set(STORE_ID, uuid.uuid4().hex, nx=True)
    return _text(await redis.get(STORE_ID) or b"")


async def arming_value(redis: Redis) -> str:
    """``run_id:lastsave`` of the Redis process behind ``redis`` (see lua/common.lua)."""
    return _text(await redis.eval(_ARMING_VALUE, 0))


_ARMING_VALUE = (
    "return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') .. ':' .. redis.call('LASTSAVE')"
)


def pos_sale_key(terminal_id: str, sale_id: str) -> str:
    return f"inv:possale:{terminal_id}:{sale_id}"


def pos_sale_record(
    location_id: str, is_return: bool, lines: Sequence[tuple[str, int, bool]], at_ms: int | None = None
) -> dict[str, Any]:
    """The stored form of a till sale (``at`` is added by the script that records it, in
    Redis time; a rebuild gives the ledger's)."""
    record: dict[str, Any] = {"loc": location_id, "ret": is_return, "lines": [list(line) for line in lines]}
    if at_ms is not None:
        record["at"] = at_ms
    return record


# --- master data stored as JSON -----------------------------------------------------------------


def location_to_json(loc: model.Location) -> str:
    return json.dumps(dataclasses.asdict(loc))


def location_from_json(raw: bytes | str) -> model.Location:
    d = json.loads(raw)
    return model.Location(
        location_id=d["location_id"],
        name=d["name"],
        type=model.LocationType(d["type"]),
        latitude=d["latitude"],
        longitude=d["longitude"],
        capabilities=tuple(model.Capability(c) for c in d["capabilities"]),
        opening_hours=tuple(model.OpeningHours(**h) for h in d["opening_hours"]),
        daily_capacity=d["daily_capacity"],
        active=d["active"],
        address=model.Address(**d["address"]),
        time_zone=d.get("time_zone", ""),
    )


def sku_to_json(s: model.Sku) -> str:
    return json.dumps(dataclasses.asdict(s))


def sku_from_json(raw: bytes | str) -> model.Sku:
    d = json.loads(raw)
    return model.Sku(
        sku=d["sku"],
        name=d.get("name", ""),
        category=d.get("category", ""),
        returnable=bool(d.get("returnable", True)),
    )


def policy_from_hash(channel: str, raw: dict[bytes, bytes]) -> model.ChannelPolicy:
    buffer = 0
    excluded = set()
    for k, v in raw.items():
        key = k.decode()
        if key == "buffer":
            buffer = int(v)
        elif key.startswith("x:"):
            excluded.add(key[2:])
    return model.ChannelPolicy(channel, buffer, frozenset(excluded))


def policy_fields(p: model.ChannelPolicy) -> list[tuple[str, str, str]]:
    key = f"inv:policy:{p.channel}"
    return [
        (key, "buffer", str(p.buffer_units)),
        *[(key, f"x:{loc}", "1") for loc in sorted(p.excluded_location_ids)],
    ]


__all__ = ["FieldViolation", "ReadResult", "RedisStore"]
