"""Sourcing rules: a declarative document (YAML or JSON) that business teams read and change.

``parse_rules`` turns the document (already decoded into plain dicts and lists) into a typed
``RuleSet`` or reports every problem at once, each with the path of the offending field
(``weights.distnce``, ``eligibility[2].location_types[0]``). ``docs/rules.md`` describes the
format; ``services/orchestrator/rules/default.yaml`` is the shipped default.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runtime.errors import FieldViolation, InvalidArgument
from services.orchestrator.domain.model import CHANNELS, LOCATION_TYPES, METHODS, PICKUP_METHODS

SCHEMA = "tutti.rules/v1"
CRITERIA: tuple[str, ...] = (
    "distance",
    "shipping_cost",
    "lead_time",
    "stock_depth",
    "workload",
    "store_priority",
)
LATE_POLICIES: tuple[str, ...] = ("exclude", "penalise")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class Eligibility:
    """Which locations may serve orders of some channels with some delivery methods."""

    name: str
    channels: tuple[str, ...]
    methods: tuple[str, ...]
    location_types: tuple[str, ...]
    max_distance_km: float | None = None
    exclude_locations: tuple[str, ...] = ()
    # Click & collect: only the store the customer chose may serve the order.
    pickup_location_only: bool = False

    def matches(self, channel: str, method: str) -> bool:
        return channel in self.channels and method in self.methods


@dataclass(frozen=True, slots=True)
class Fallback:
    """A relaxation tried, in order and cumulatively, when the rules cannot source an order."""

    name: str
    max_splits: int | None = None
    ignore_safety_stock: bool = False
    ignore_capacity: bool = False
    allow_late: bool = False
    extra_location_types: tuple[str, ...] = ()
    max_distance_km: float | None = None


@dataclass(frozen=True, slots=True)
class Promise:
    pick_minutes: Mapping[str, int]
    transit_hours: Mapping[str, float]
    cutoff: Mapping[str, str]
    pickup_hold_days: int = 7
    express_window_minutes: int = 120
    late_policy: str = "exclude"


@dataclass(frozen=True, slots=True)
class Costs:
    currency: str
    price_minor: Mapping[str, int]
    per_shipment_minor: Mapping[str, int]
    per_km_minor: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class RuleSet:
    name: str
    description: str
    eligibility: tuple[Eligibility, ...]
    weights: Mapping[str, float]
    safety_stock_types: Mapping[str, int]
    safety_stock_locations: Mapping[str, int]
    priority_default: float
    priority_types: Mapping[str, float]
    priority_locations: Mapping[str, float]
    respect_capacity: bool
    max_splits: int
    keep_together: bool
    fallbacks: tuple[Fallback, ...]
    promise: Promise
    costs: Costs
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def named_locations(self) -> list[tuple[str, str]]:
        """(field path, location id) of every location the document names by id."""
        named = [
            (f"eligibility[{i}].exclude_locations[{j}]", location_id)
            for i, rule in enumerate(self.eligibility)
            for j, location_id in enumerate(rule.exclude_locations)
        ]
        named += [(f"safety_stock.locations.{loc}", loc) for loc in self.safety_stock_locations]
        named += [(f"store_priority.locations.{loc}", loc) for loc in self.priority_locations]
        return named

    def eligibility_for(self, channel: str, method: str) -> Eligibility | None:
        return next((e for e in self.eligibility if e.matches(channel, method)), None)

    def safety_stock(self, location_id: str, location_type: str) -> int:
        if location_id in self.safety_stock_locations:
            return self.safety_stock_locations[location_id]
        return self.safety_stock_types.get(location_type, 0)

    def priority(self, location_id: str, location_type: str) -> float:
        if location_id in self.priority_locations:
            return self.priority_locations[location_id]
        return self.priority_types.get(location_type, self.priority_default)


class _Reader:
    """Collects violations while reading a loosely typed document."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def bad(self, path: str, why: str) -> None:
        self.violations.append(FieldViolation(path, why))

    def mapping(self, value: Any, path: str, allowed: Sequence[str] | None = None) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.bad(path, f"must be a mapping, got {_kind(value)}")
            return {}
        for key in value:
            if not isinstance(key, str):
                self.bad(path, f"keys must be text, got {key!r}")
            elif allowed is not None and key not in allowed:
                self.bad(_join(path, key), f"unknown field; expected one of {', '.join(allowed)}")
        return value

    def text(self, value: Any, path: str, *, default: str | None = None) -> str:
        if value is None and default is not None:
            return default
        if not isinstance(value, str) or not value.strip():
            self.bad(path, "must be non-empty text")
            return default or ""
        return value

    def number(
        self,
        value: Any,
        path: str,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        default: float | None = None,
    ) -> float:
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.bad(path, f"must be a number, got {_kind(value)}")
            return default or 0.0
        if minimum is not None and value < minimum:
            self.bad(path, f"must be >= {minimum:g}, got {value:g}")
        if maximum is not None and value > maximum:
            self.bad(path, f"must be <= {maximum:g}, got {value:g}")
        return float(value)

    def integer(
        self, value: Any, path: str, *, minimum: int | None = None, default: int | None = None
    ) -> int:
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.bad(path, f"must be a whole number, got {_kind(value)}")
            return default or 0
        if minimum is not None and value < minimum:
            self.bad(path, f"must be >= {minimum}, got {value}")
        return value

    def boolean(self, value: Any, path: str, *, default: bool = False) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.bad(path, f"must be true or false, got {_kind(value)}")
            return default
        return value

    def choices(
        self,
        value: Any,
        path: str,
        allowed: Sequence[str],
        *,
        default: Sequence[str] | None = None,
        allow_empty: bool = False,
    ) -> tuple[str, ...]:
        if value is None and default is not None:
            return tuple(default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.bad(path, f"must be a list, got {_kind(value)}")
            return ()
        if not value and not allow_empty:
            self.bad(path, "must not be empty")
        out: list[str] = []
        for i, item in enumerate(value):
            if item not in allowed:
                self.bad(f"{path}[{i}]", f"unknown value {item!r}; expected one of {', '.join(allowed)}")
            else:
                out.append(item)
        return tuple(out)

    def ids(self, value: Any, path: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.bad(path, "must be a list of location ids")
            return ()
        return tuple(value)

    def keyed_numbers(
        self,
        value: Any,
        path: str,
        keys: Sequence[str] | None,
        *,
        minimum: float = 0.0,
        maximum: float | None = None,
        integer: bool = False,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in self.mapping(value, path, keys).items():
            if keys is not None and key not in keys:
                continue
            if integer:
                out[key] = self.integer(item, _join(path, key), minimum=int(minimum))
            else:
                out[key] = self.number(item, _join(path, key), minimum=minimum, maximum=maximum)
        return out


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_TOP = (
    "schema",
    "name",
    "description",
    "eligibility",
    "weights",
    "safety_stock",
    "store_priority",
    "capacity",
    "split",
    "fallbacks",
    "promise",
    "costs",
)


def parse_rules(document: Any) -> RuleSet:
    """The typed rule set, or InvalidArgument listing every violation with its path."""
    r = _Reader()
    doc = r.mapping(document, "", _TOP)
    if not isinstance(document, Mapping):
        raise InvalidArgument.of(r.violations or [FieldViolation("document", "must be a mapping")])
    schema = doc.get("schema", SCHEMA)
    if schema != SCHEMA:
        r.bad("schema", f"unsupported schema {schema!r}; expected {SCHEMA!r}")
    name = r.text(doc.get("name"), "name")
    description = doc.get("description") or ""
    if not isinstance(description, str):
        r.bad("description", "must be text")
        description = ""

    eligibility = _eligibility(r, doc.get("eligibility"))
    weights = r.keyed_numbers(doc.get("weights"), "weights", CRITERIA)
    if "weights" not in doc:
        r.bad("weights", "is required: give each criterion a weight (0 ignores it)")
    elif weights and not any(w > 0 for w in weights.values()):
        r.bad("weights", "at least one criterion needs a weight above 0")
    weights = {c: float(weights.get(c, 0.0)) for c in CRITERIA}

    safety = r.mapping(doc.get("safety_stock"), "safety_stock", ("units", "locations"))
    safety_types = r.keyed_numbers(safety.get("units"), "safety_stock.units", LOCATION_TYPES, integer=True)
    safety_locations = r.keyed_numbers(safety.get("locations"), "safety_stock.locations", None, integer=True)

    prio = r.mapping(doc.get("store_priority"), "store_priority", ("default", "location_types", "locations"))
    prio_default = r.number(prio.get("default"), "store_priority.default", minimum=0, maximum=1, default=0.0)
    prio_types = r.keyed_numbers(
        prio.get("location_types"), "store_priority.location_types", LOCATION_TYPES, maximum=1.0
    )
    prio_locations = r.keyed_numbers(prio.get("locations"), "store_priority.locations", None, maximum=1.0)

    capacity = r.mapping(doc.get("capacity"), "capacity", ("respect_daily_capacity",))
    respect_capacity = r.boolean(
        capacity.get("respect_daily_capacity"), "capacity.respect_daily_capacity", default=True
    )

    split = r.mapping(doc.get("split"), "split", ("max_splits", "keep_together"))
    max_splits = r.integer(split.get("max_splits"), "split.max_splits", minimum=1, default=1)
    keep_together = r.boolean(split.get("keep_together"), "split.keep_together")
    if keep_together and max_splits > 1:
        r.bad(
            "split.keep_together",
            f"contradicts split.max_splits={max_splits}; keep_together means one shipment",
        )

    fallbacks = _fallbacks(r, doc.get("fallbacks"))
    promise = _promise(r, doc.get("promise"))
    costs = _costs(r, doc.get("costs"))

    if r.violations:
        raise InvalidArgument.of(r.violations)
    ruleset = RuleSet(
        name=name,
        description=description.strip(),
        eligibility=eligibility,
        weights=weights,
        safety_stock_types=safety_types,
        safety_stock_locations=safety_locations,
        priority_default=prio_default,
        priority_types=prio_types,
        priority_locations=prio_locations,
        respect_capacity=respect_capacity,
        max_splits=1 if keep_together else max_splits,
        keep_together=keep_together,
        fallbacks=fallbacks,
        promise=promise,
        costs=costs,
    )
    return dataclasses.replace(ruleset, warnings=tuple(_warnings(ruleset)))


def _eligibility(r: _Reader, value: Any) -> tuple[Eligibility, ...]:
    if value is None:
        r.bad("eligibility", "is required: say which locations may serve which channels and delivery methods")
        return ()
    if not isinstance(value, list) or not value:
        r.bad("eligibility", "must be a non-empty list of rules")
        return ()
    out: list[Eligibility] = []
    allowed = (
        "name",
        "channels",
        "methods",
        "location_types",
        "max_distance_km",
        "exclude_locations",
        "pickup_location_only",
    )
    for i, raw in enumerate(value):
        path = f"eligibility[{i}]"
        item = r.mapping(raw, path, allowed)
        methods = r.choices(item.get("methods"), f"{path}.methods", METHODS)
        pickup_only = r.boolean(item.get("pickup_location_only"), f"{path}.pickup_location_only")
        if pickup_only and any(m not in PICKUP_METHODS for m in methods):
            r.bad(f"{path}.pickup_location_only", "only applies to click_and_collect and ship_to_store")
        types_default = ("store",) if pickup_only else None
        types = r.choices(
            item.get("location_types"), f"{path}.location_types", LOCATION_TYPES, default=types_default
        )
        max_km = item.get("max_distance_km")
        out.append(
            Eligibility(
                name=str(item.get("name") or f"rule {i + 1}"),
                channels=r.choices(item.get("channels"), f"{path}.channels", CHANNELS, default=CHANNELS),
                methods=methods,
                location_types=types,
                max_distance_km=None
                if max_km is None
                else r.number(max_km, f"{path}.max_distance_km", minimum=0),
                exclude_locations=r.ids(item.get("exclude_locations"), f"{path}.exclude_locations"),
                pickup_location_only=pickup_only,
            )
        )
    return tuple(out)


def _fallbacks(r: _Reader, value: Any) -> tuple[Fallback, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        r.bad("fallbacks", "must be a list")
        return ()
    allowed = (
        "name",
        "max_splits",
        "ignore_safety_stock",
        "ignore_capacity",
        "allow_late",
        "extra_location_types",
        "max_distance_km",
    )
    out: list[Fallback] = []
    for i, raw in enumerate(value):
        path = f"fallbacks[{i}]"
        item = r.mapping(raw, path, allowed)
        splits = item.get("max_splits")
        km = item.get("max_distance_km")
        fallback = Fallback(
            name=r.text(item.get("name"), f"{path}.name"),
            max_splits=None if splits is None else r.integer(splits, f"{path}.max_splits", minimum=1),
            ignore_safety_stock=r.boolean(item.get("ignore_safety_stock"), f"{path}.ignore_safety_stock"),
            ignore_capacity=r.boolean(item.get("ignore_capacity"), f"{path}.ignore_capacity"),
            allow_late=r.boolean(item.get("allow_late"), f"{path}.allow_late"),
            extra_location_types=r.choices(
                item.get("extra_location_types"),
                f"{path}.extra_location_types",
                LOCATION_TYPES,
                default=(),
                allow_empty=True,
            ),
            max_distance_km=None if km is None else r.number(km, f"{path}.max_distance_km", minimum=0),
        )
        if fallback == Fallback(name=fallback.name):
            r.bad(
                path,
                "relaxes nothing; set max_splits, ignore_safety_stock, ignore_capacity, allow_late, "
                "extra_location_types or max_distance_km",
            )
        out.append(fallback)
    return tuple(out)


def _promise(r: _Reader, value: Any) -> Promise:
    allowed = (
        "pick_minutes",
        "transit_hours",
        "cutoff",
        "pickup_hold_days",
        "express_window_minutes",
        "late_policy",
    )
    item = r.mapping(value, "promise", allowed)
    if value is None:
        r.bad("promise", "is required: pick_minutes per location type and transit_hours per delivery method")
    pick = r.keyed_numbers(item.get("pick_minutes"), "promise.pick_minutes", LOCATION_TYPES, integer=True)
    for t in LOCATION_TYPES:
        if value is not None and t not in pick:
            r.bad(f"promise.pick_minutes.{t}", "is required")
    transit = r.keyed_numbers(item.get("transit_hours"), "promise.transit_hours", METHODS)
    for m in METHODS:
        if value is not None and m not in transit:
            r.bad(
                f"promise.transit_hours.{m}", "is required (0 when the customer collects where it is picked)"
            )
    cutoff: dict[str, str] = {}
    for key, raw in r.mapping(item.get("cutoff"), "promise.cutoff", LOCATION_TYPES).items():
        if not isinstance(raw, str) or not _HHMM.match(raw):
            r.bad(f"promise.cutoff.{key}", f"must be a time of day HH:MM, got {raw!r}")
        else:
            cutoff[key] = raw
    late = item.get("late_policy", "exclude")
    if late not in LATE_POLICIES:
        r.bad("promise.late_policy", f"unknown value {late!r}; expected one of {', '.join(LATE_POLICIES)}")
    return Promise(
        pick_minutes=pick,
        transit_hours=transit,
        cutoff=cutoff,
        pickup_hold_days=r.integer(
            item.get("pickup_hold_days"), "promise.pickup_hold_days", minimum=1, default=7
        ),
        express_window_minutes=r.integer(
            item.get("express_window_minutes"), "promise.express_window_minutes", minimum=15, default=120
        ),
        late_policy=late if late in LATE_POLICIES else "exclude",
    )


def _costs(r: _Reader, value: Any) -> Costs:
    item = r.mapping(value, "costs", ("currency", "price_minor", "per_shipment_minor", "per_km_minor"))
    if value is None:
        r.bad(
            "costs",
            "is required: currency, price_minor per delivery method, per_shipment_minor per location type",
        )
    currency = r.text(item.get("currency"), "costs.currency", default="EUR")
    if not re.fullmatch(r"[A-Z]{3}", currency):
        r.bad("costs.currency", f"must be an ISO 4217 code like EUR, got {currency!r}")
    return Costs(
        currency=currency,
        price_minor=r.keyed_numbers(item.get("price_minor"), "costs.price_minor", METHODS, integer=True),
        per_shipment_minor=r.keyed_numbers(
            item.get("per_shipment_minor"), "costs.per_shipment_minor", LOCATION_TYPES, integer=True
        ),
        per_km_minor=r.keyed_numbers(item.get("per_km_minor"), "costs.per_km_minor", METHODS, integer=True),
    )


def _warnings(rules: RuleSet) -> list[str]:
    """Legal but probably unintended: shown by ValidateRules, never blocking."""
    out = []
    for method in METHODS:
        uncovered = [c for c in CHANNELS if rules.eligibility_for(c, method) is None]
        if uncovered:
            out.append(
                f"no eligibility rule covers {method} for {', '.join(uncovered)}: such orders are refused"
            )
    for i, rule in enumerate(rules.eligibility):
        if all(rules.eligibility_for(c, m) is not rule for c in rule.channels for m in rule.methods):
            out.append(
                f"eligibility[{i}] ({rule.name}) is never used: "
                "earlier rules match all its channels and methods"
            )
    for method in METHODS:
        if method not in rules.costs.price_minor:
            out.append(f"costs.price_minor has no price for {method}; quotes show it as free")
    return out
