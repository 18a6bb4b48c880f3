"""Return rules as a document business teams edit (YAML on disk, a plain mapping here).

The document decides who may return what and for how long, what a returned item costs the
customer (fees), and where each graded item goes (disposition). ``ReturnRules.from_mapping``
validates it completely at load time and names the offending key, so a typo never reaches a
receipt desk. See ``services/returns/rules/default.yaml`` for the annotated default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.returns.domain.model import Disposition, Grade, Reason, ReturnMethod


class RulesError(ValueError):
    """The rules document is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class DispositionRule:
    """One ``when`` → ``then`` row; every condition given must hold (absent = any)."""

    then: Disposition
    grades: frozenset[Grade] = frozenset()
    categories: frozenset[str] = frozenset()
    reasons: frozenset[Reason] = frozenset()
    # None: any; False: only when the receiving location does not sell the SKU; True: only when it does.
    location_sells_item: bool | None = None
    location_types: frozenset[str] = frozenset()

    def matches(
        self, *, grade: Grade, category: str, reason: Reason, sells_item: bool, location_type: str
    ) -> bool:
        return (
            (not self.grades or grade in self.grades)
            and (not self.categories or category in self.categories)
            and (not self.reasons or reason in self.reasons)
            and (self.location_sells_item is None or self.location_sells_item == sells_item)
            and (not self.location_types or location_type in self.location_types)
        )


@dataclass(frozen=True, slots=True)
class FeeRules:
    # Percentage of the line value kept as a restocking fee, per reason (missing reason: 0).
    restocking_fee_percent: Mapping[Reason, int] = field(default_factory=dict)
    # Reasons that are the retailer's fault: no restocking fee and no label fee.
    free_reasons: frozenset[Reason] = frozenset()
    # Fee for a prepaid carrier label, in minor units, charged once per return.
    label_fee_minor: int = 0
    # Extra percentage kept when an item comes back damaged for a reason that is not free.
    damaged_deduction_percent: int = 0


@dataclass(frozen=True, slots=True)
class ReturnRules:
    version: str
    return_window_days: int
    # Longer (or shorter) windows per purchase channel, e.g. marketplaces with their own terms.
    channel_window_days: Mapping[str, int]
    # Window for reasons that are the retailer's fault (defects: legal guarantee).
    defective_window_days: int
    non_returnable_categories: frozenset[str]
    # Days a return takes to reach the receiving location, per method (incoming supply date).
    transit_days: Mapping[ReturnMethod, int]
    distribution_centre_id: str
    default_disposition: Mapping[Grade, Disposition]
    disposition_rules: tuple[DispositionRule, ...]
    fees: FeeRules

    def window_days(self, channel: str, reason: Reason) -> int:
        base = self.channel_window_days.get(channel, self.return_window_days)
        if reason in self.fees.free_reasons:
            return max(base, self.defective_window_days)
        return base

    def disposition(
        self, *, grade: Grade, category: str, reason: Reason, sells_item: bool, location_type: str
    ) -> tuple[Disposition, int | None]:
        """The disposition for a graded item and the index of the rule that decided (None: default)."""
        for index, rule in enumerate(self.disposition_rules):
            if rule.matches(
                grade=grade,
                category=category,
                reason=reason,
                sells_item=sells_item,
                location_type=location_type,
            ):
                return rule.then, index
        return self.default_disposition[grade], None

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> ReturnRules:
        if not isinstance(doc, Mapping):
            raise RulesError("the rules document must be a mapping")
        known = {
            "version",
            "return_window_days",
            "channel_window_days",
            "defective_window_days",
            "non_returnable_categories",
            "transit_days",
            "distribution_centre_id",
            "dispositions",
            "disposition_rules",
            "fees",
        }
        unknown = set(doc) - known
        if unknown:
            raise RulesError(f"unknown key(s): {', '.join(sorted(unknown))}")
        window = _int(doc, "return_window_days", 30)
        fees_doc = doc.get("fees") or {}
        if not isinstance(fees_doc, Mapping):
            raise RulesError("fees must be a mapping")
        fee_keys = {"restocking_fee_percent", "free_reasons", "label_fee_minor", "damaged_deduction_percent"}
        if set(fees_doc) - fee_keys:
            raise RulesError(f"fees: unknown key(s): {', '.join(sorted(set(fees_doc) - fee_keys))}")
        restocking = {
            _enum(Reason, k, "fees.restocking_fee_percent"): _percent(v, f"fees.restocking_fee_percent.{k}")
            for k, v in _mapping(fees_doc, "restocking_fee_percent", "fees.").items()
        }
        fees = FeeRules(
            restocking_fee_percent=restocking,
            free_reasons=frozenset(
                _enum(Reason, r, "fees.free_reasons") for r in _list(fees_doc, "free_reasons")
            ),
            label_fee_minor=_int(fees_doc, "label_fee_minor", 0, prefix="fees."),
            damaged_deduction_percent=_percent(
                fees_doc.get("damaged_deduction_percent", 0), "fees.damaged_deduction_percent"
            ),
        )
        defaults = {grade: Disposition.QUARANTINE for grade in Grade}
        defaults[Grade.RESELLABLE] = Disposition.RESTOCK
        for k, v in _mapping(doc, "dispositions").items():
            defaults[_enum(Grade, k, "dispositions")] = _enum(Disposition, v, f"dispositions.{k}")
        rules = tuple(_rule(i, r) for i, r in enumerate(_list(doc, "disposition_rules")))
        dc = str(doc.get("distribution_centre_id") or "")
        needs_dc = any(d is Disposition.SEND_TO_DC for d in defaults.values()) or any(
            r.then is Disposition.SEND_TO_DC for r in rules
        )
        if needs_dc and not dc:
            raise RulesError("distribution_centre_id is required when a disposition is send_to_dc")
        transit = {m: 0 for m in ReturnMethod}
        transit.update({ReturnMethod.CARRIER_LABEL: 5, ReturnMethod.DROP_OFF_POINT: 5})
        for k, v in _mapping(doc, "transit_days").items():
            transit[_enum(ReturnMethod, k, "transit_days")] = _nonneg(v, f"transit_days.{k}")
        return cls(
            version=str(doc.get("version", "1")),
            return_window_days=window,
            channel_window_days={
                str(k).lower(): _nonneg(v, f"channel_window_days.{k}")
                for k, v in _mapping(doc, "channel_window_days").items()
            },
            defective_window_days=_int(doc, "defective_window_days", window),
            non_returnable_categories=frozenset(str(c) for c in _list(doc, "non_returnable_categories")),
            transit_days=transit,
            distribution_centre_id=dc,
            default_disposition=defaults,
            disposition_rules=rules,
            fees=fees,
        )


def _rule(index: int, raw: Any) -> DispositionRule:
    where = f"disposition_rules[{index}]"
    if not isinstance(raw, Mapping) or set(raw) - {"when", "then"} or "then" not in raw:
        raise RulesError(f"{where} must be a mapping with 'when' and 'then'")
    when = raw.get("when") or {}
    if not isinstance(when, Mapping):
        raise RulesError(f"{where}.when must be a mapping")
    allowed = {"grade", "category", "reason", "location_sells_item", "location_type"}
    if set(when) - allowed:
        raise RulesError(f"{where}.when: unknown condition(s): {', '.join(sorted(set(when) - allowed))}")

    def many(key: str) -> list[str]:
        value = when.get(key)
        if value is None:
            return []
        return [str(v) for v in (value if isinstance(value, list) else [value])]

    sells = when.get("location_sells_item")
    if sells is not None and not isinstance(sells, bool):
        raise RulesError(f"{where}.when.location_sells_item must be true or false")
    return DispositionRule(
        then=_enum(Disposition, raw["then"], f"{where}.then"),
        grades=frozenset(_enum(Grade, g, f"{where}.when.grade") for g in many("grade")),
        categories=frozenset(many("category")),
        reasons=frozenset(_enum(Reason, r, f"{where}.when.reason") for r in many("reason")),
        location_sells_item=sells,
        location_types=frozenset(v.lower() for v in many("location_type")),
    )


def _enum(kind: Any, value: Any, where: str) -> Any:
    try:
        return kind(str(value).lower())
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        raise RulesError(f"{where}: {value!r} is not one of {choices}") from None


def _mapping(doc: Mapping[str, Any], key: str, prefix: str = "") -> Mapping[str, Any]:
    value = doc.get(key) or {}
    if not isinstance(value, Mapping):
        raise RulesError(f"{prefix}{key} must be a mapping")
    return value


def _list(doc: Mapping[str, Any], key: str) -> list[Any]:
    value = doc.get(key) or []
    if not isinstance(value, list):
        raise RulesError(f"{key} must be a list")
    return value


def _int(doc: Mapping[str, Any], key: str, default: int, prefix: str = "") -> int:
    return _nonneg(doc.get(key, default), f"{prefix}{key}")


def _nonneg(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RulesError(f"{where} must be a non-negative integer, got {value!r}")
    return value


def _percent(value: Any, where: str) -> int:
    number = _nonneg(value, where)
    if number > 100:
        raise RulesError(f"{where} must be between 0 and 100, got {number}")
    return number
