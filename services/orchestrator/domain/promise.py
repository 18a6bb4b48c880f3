"""Delivery promises: when a location can hand goods over and when the customer gets them,
from pick lead times, dispatch cutoffs, opening hours and transit times in the rules."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.orchestrator.domain.model import Candidate, OpeningWindow
from services.orchestrator.domain.rules import RuleSet

_SEARCH_DAYS = 14


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _windows(hours: tuple[OpeningWindow, ...], start: datetime) -> list[tuple[datetime, datetime]]:
    """Open windows (local, aware) from the day of ``start`` on, in time order."""
    out: list[tuple[datetime, datetime]] = []
    day = start.date()
    for offset in range(_SEARCH_DAYS):
        d = day + timedelta(days=offset)
        for w in sorted((w for w in hours if w.weekday == d.weekday()), key=lambda w: w.opens):
            opens = datetime.combine(d, w.opens, tzinfo=start.tzinfo)
            closes = datetime.combine(d, w.closes, tzinfo=start.tzinfo)
            if closes > start:
                out.append((max(opens, start), closes))
    return out


def is_open(candidate: Candidate, moment: datetime) -> bool:
    if not candidate.opening_hours:
        return True
    local = moment.astimezone(_zone(candidate.timezone))
    return any(
        w.weekday == local.weekday() and w.opens <= local.time() < w.closes for w in candidate.opening_hours
    )


def next_open(candidate: Candidate, moment: datetime) -> datetime | None:
    """The first moment at or after ``moment`` when the location is open; None if never (two weeks)."""
    if not candidate.opening_hours:
        return moment
    local = moment.astimezone(_zone(candidate.timezone))
    windows = _windows(candidate.opening_hours, local)
    return windows[0][0].astimezone(moment.tzinfo) if windows else None


def work_done_at(candidate: Candidate, start: datetime, minutes: int) -> datetime | None:
    """When ``minutes`` of work starting at ``start`` finish, counting only opening hours."""
    if not candidate.opening_hours:
        return start + timedelta(minutes=minutes)
    local = start.astimezone(_zone(candidate.timezone))
    remaining = timedelta(minutes=minutes)
    for opens, closes in _windows(candidate.opening_hours, local):
        if opens + remaining <= closes:
            return (opens + remaining).astimezone(start.tzinfo)
        remaining -= closes - opens
    return None


def ready_at(candidate: Candidate, rules: RuleSet, now: datetime) -> datetime | None:
    """When the location has picked and packed an order placed ``now``; None when it cannot
    within two weeks (closed). Past the dispatch cutoff, picking starts the next day."""
    start = now
    cutoff = rules.promise.cutoff.get(candidate.location_type)
    if cutoff:
        zone = _zone(candidate.timezone)
        local = now.astimezone(zone)
        hh, mm = (int(x) for x in cutoff.split(":"))
        if local.time() >= time(hh, mm):
            start = datetime.combine(local.date() + timedelta(days=1), time(0, 0), tzinfo=zone).astimezone(
                now.tzinfo
            )
    return work_done_at(candidate, start, rules.promise.pick_minutes.get(candidate.location_type, 0))


def delivered_at(
    method: str, source: Candidate, rules: RuleSet, now: datetime, pickup: Candidate | None = None
) -> datetime | None:
    """When the customer gets the goods (at home, or ready to collect in the pickup store)."""
    ready = ready_at(source, rules, now)
    if ready is None:
        return None
    arrival = ready + timedelta(hours=rules.promise.transit_hours.get(method, 0.0))
    if method == "click_and_collect":
        return ready
    if method == "ship_to_store":
        return next_open(pickup, arrival) if pickup is not None else arrival
    return arrival


def express_deadline(rules: RuleSet, now: datetime) -> datetime:
    return now + timedelta(minutes=rules.promise.express_window_minutes)


# Promises shown to customers: a day for carrier deliveries, a quarter of an hour for express
# and collection. Re-sourcing a line a few minutes later keeps the same promise.
_DAY_PROMISE = frozenset({"home_standard", "ship_from_store", "ship_to_store"})


def promise_for(method: str, delivery: datetime | None) -> datetime | None:
    if delivery is None:
        return None
    if method in _DAY_PROMISE:
        return datetime.combine(delivery.date(), time(23, 59), tzinfo=delivery.tzinfo)
    quarter = 15 * 60
    seconds = delivery.minute * 60 + delivery.second + delivery.microsecond / 1e6
    start = delivery.replace(minute=0, second=0, microsecond=0)
    return start + timedelta(seconds=-(-seconds // quarter) * quarter)
