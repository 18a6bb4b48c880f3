"""Locust scenarios against the Tutti gateway (gRPC users on gevent): ``black_friday``,
``flash_sale``, ``pos_rush``. Run with `make loadtest SCENARIO=… USERS=… DURATION=…`."""
