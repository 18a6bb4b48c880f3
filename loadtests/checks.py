"""Pass/fail of a load test: the failure ratio, and the invariants a scenario checks at the end.
Locust exits with the code set here, so `make loadtest` fails when either breaks."""

from __future__ import annotations

import logging
import os

from locust import events
from locust.env import Environment

log = logging.getLogger("loadtests")

MAX_FAILURE_RATIO = float(os.environ.get("TUTTI_LOADTEST_MAX_FAILURE_RATIO", "0.01"))
# Invariant violations found by a scenario's test_stop listener.
VIOLATIONS: list[str] = []


def violation(message: str) -> None:
    log.error("INVARIANT BROKEN: %s", message)
    VIOLATIONS.append(message)


def passed(message: str) -> None:
    log.info("invariant holds: %s", message)


@events.quitting.add_listener
def _exit_code(environment: Environment, **_kwargs: object) -> None:
    total = environment.stats.total
    ratio = total.fail_ratio
    if total.num_requests == 0:
        log.error("no request was made")
        environment.process_exit_code = 1
    elif ratio > MAX_FAILURE_RATIO:
        log.error("failure ratio %.2f%% above the %.2f%% allowed", ratio * 100, MAX_FAILURE_RATIO * 100)
        environment.process_exit_code = 1
    if VIOLATIONS:
        environment.process_exit_code = 3
    if environment.process_exit_code is None:
        log.info(
            "passed: %d requests, failure ratio %.3f%%, %d invariant violations",
            total.num_requests,
            ratio * 100,
            len(VIOLATIONS),
        )
        environment.process_exit_code = 0
