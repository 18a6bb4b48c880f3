"""Builders shared by the orchestrator's unit tests, and the real inventory its integration
tests run against."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.settings import CommonSettings
from services.inventory.bootstrap import build as build_inventory
from services.orchestrator.domain.model import Candidate, LineRequest, Point
from services.orchestrator.domain.rules import RuleSet, parse_rules
from services.orchestrator.domain.sourcing import SourcingRequest
from tests.support import RunningService, running_service

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "services" / "orchestrator" / "rules" / "default.yaml"
# A Wednesday morning: stores open, before the warehouse cutoff.
NOW = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)
PARIS = Point(48.8566, 2.3522)


def rules_doc(**overrides: Any) -> dict[str, Any]:
    doc = yaml.safe_load(DEFAULT_RULES.read_text())
    doc = copy.deepcopy(doc)
    for key, value in overrides.items():
        doc[key] = value
    return doc


def rules(**overrides: Any) -> RuleSet:
    return parse_rules(rules_doc(**overrides))


def near(km_east: float) -> Point:
    """A point about ``km_east`` km east of central Paris."""
    return Point(PARIS.latitude, PARIS.longitude + km_east / 73.0)


def loc(location_id: str, km: float, stock: dict[str, int], *, kind: str = "store", **kw: Any) -> Candidate:
    return Candidate(location_id, kind, near(km), stock=stock, **kw)


def request(
    *lines: tuple[str, int], method: str = "home_standard", channel: str = "web", **kw: Any
) -> SourcingRequest:
    return SourcingRequest(
        channel=channel,
        method=method,
        lines=tuple(LineRequest(f"l{i + 1}", sku, qty) for i, (sku, qty) in enumerate(lines)),
        now=kw.pop("now", NOW),
        destination=kw.pop("destination", PARIS),
        **kw,
    )


INVENTORY_REDIS_DB = 8


@pytest.fixture(scope="module")
async def inventory(settings: CommonSettings) -> AsyncIterator[RunningService]:
    """The REAL inventory service in-process on Redis (its own db index), one per module."""
    base = settings.redis_url.rsplit("/", 1)[0]
    s = dataclasses.replace(settings, redis_url=f"{base}/{INVENTORY_REDIS_DB}")
    async with running_service(s, build_inventory) as svc:
        yield svc
