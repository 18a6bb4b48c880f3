"""black_friday — the realistic peak mix through the gateway.

Mostly shoppers (web, app, marketplace) reading availability (single and batch), asking for
delivery quotes, placing orders and cancelling a few, reading their timelines; store apps moving
orders through fulfilment and taking till returns; POS terminals streaming sales. Orders still
open at the end are cancelled (outside the statistics).
"""

from __future__ import annotations

from locust import between, events
from locust.env import Environment

from loadtests import checks, data
from loadtests.users import SHARED, PosTerminal, Shopper, StoreAssociate


@events.test_stop.add_listener
def cancel_open_orders(environment: Environment, **_kwargs: object) -> None:
    """Orders left open would hold the demo locations' daily capacity on a shared database."""
    if environment.host:
        cancelled = data.cancel_orders(environment.host, SHARED.placed)
        checks.log.info("clean-up: %d of %d orders cancelled", cancelled, len(SHARED.placed))


class BlackFridayShopper(Shopper):
    weight = 16
    wait_time = between(0.5, 2.0)


class BlackFridayStoreApp(StoreAssociate):
    weight = 2
    wait_time = between(0.5, 1.5)


class BlackFridayTill(PosTerminal):
    weight = 2
    wait_time = between(1.0, 3.0)
