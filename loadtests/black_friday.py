"""black_friday — the realistic peak mix through the gateway.

Mostly shoppers (web, app, marketplace) reading availability (single and batch), asking for
delivery quotes, placing orders and cancelling a few, reading their timelines; store apps moving
orders through fulfilment and taking till returns; POS terminals streaming sales.
"""

from __future__ import annotations

from locust import between

from loadtests import checks  # noqa: F401 - installs the pass/fail listener
from loadtests.users import PosTerminal, Shopper, StoreAssociate


class BlackFridayShopper(Shopper):
    weight = 16
    wait_time = between(0.5, 2.0)


class BlackFridayStoreApp(StoreAssociate):
    weight = 2
    wait_time = between(0.5, 1.5)


class BlackFridayTill(PosTerminal):
    weight = 2
    wait_time = between(1.0, 3.0)
