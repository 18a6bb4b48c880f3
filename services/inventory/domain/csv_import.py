"""Parsing stock CSV files (onboarding, ERP exports) into snapshot lines; the whole file is
validated before anything is applied, and every error names its row and column."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from runtime.errors import FieldViolation, InvalidArgument
from services.inventory.domain.model import MAX_SNAPSHOT_LINES, check_id, check_quantity

REQUIRED = ("sku", "location_id", "on_hand")


@dataclass(frozen=True, slots=True)
class CsvRow:
    sku: str
    location_id: str
    on_hand: int
    safety_stock: int | None = None
    # Line number in the file (the header is row 1), to name the row in errors.
    row: int = 0


def parse_stock_csv(data: bytes, field_name: str = "csv") -> list[CsvRow]:
    """Rows of a ``sku,location_id,on_hand[,safety_stock]`` CSV (header required, UTF-8)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidArgument(field_name, "must be UTF-8") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [h for h in REQUIRED if h not in header]
    if missing:
        raise InvalidArgument(
            field_name, f"header must contain {', '.join(REQUIRED)}; missing {', '.join(missing)}"
        )
    rows: list[CsvRow] = []
    violations: list[FieldViolation] = []
    seen: set[tuple[str, str]] = set()
    for number, raw in enumerate(reader, start=2):
        record = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        where = f"{field_name}:row {number}"
        sku, loc = record.get("sku", ""), record.get("location_id", "")
        problems = [check_id(f"{where}.sku", sku), check_id(f"{where}.location_id", loc)]
        on_hand = _int(record.get("on_hand", ""), f"{where}.on_hand", violations)
        safety_raw = record.get("safety_stock", "")
        safety = _int(safety_raw, f"{where}.safety_stock", violations) if safety_raw else None
        if on_hand is not None:
            problems.append(check_quantity(f"{where}.on_hand", on_hand, allow_zero=True))
        if safety is not None:
            problems.append(check_quantity(f"{where}.safety_stock", safety, allow_zero=True))
        if (sku, loc) in seen:
            problems.append(FieldViolation(where, f"{sku} at {loc} appears more than once"))
        seen.add((sku, loc))
        violations.extend(p for p in problems if p is not None)
        if on_hand is not None:
            rows.append(CsvRow(sku, loc, on_hand, safety, number))
        if len(violations) >= 20:
            break
    if violations:
        raise InvalidArgument.of(violations)
    if not rows:
        raise InvalidArgument(field_name, "has no data rows")
    if len(rows) > MAX_SNAPSHOT_LINES:
        raise InvalidArgument(field_name, f"at most {MAX_SNAPSHOT_LINES} rows per import, got {len(rows)}")
    return rows


def _int(raw: str, where: str, violations: list[FieldViolation]) -> int | None:
    try:
        return int(raw)
    except ValueError:
        violations.append(FieldViolation(where, f"must be an integer, got {raw!r}"))
        return None
