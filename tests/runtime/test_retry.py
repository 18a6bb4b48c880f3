"""runtime.retry: which failures background work retries, and when."""

from __future__ import annotations

import pytest

from runtime import errors, retry


@pytest.mark.parametrize(
    ("exc", "permanent"),
    [
        (errors.NotFound("location DC-X not found"), True),
        (errors.InvalidArgument("sku", "required"), True),
        (errors.FailedPrecondition("not enough stock"), True),
        (errors.Unavailable("inventory down"), False),
        (errors.ResourceExhausted("busy", retry_after_seconds=0.2), False),
        (ConnectionResetError(), False),
    ],
)
def test_refusals_are_permanent_outages_and_overload_are_transient(exc: Exception, permanent: bool) -> None:
    assert retry.is_permanent(exc) is permanent


def test_backoff_doubles_up_to_the_cap_with_equal_jitter() -> None:
    low, high = (lambda: 0.0), (lambda: 1.0)
    assert [retry.backoff(n, base=1.0, cap=300.0, rand=high) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert [retry.backoff(n, base=1.0, cap=300.0, rand=low) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert retry.backoff(50, base=1.0, cap=300.0, rand=high) == 300.0
    assert retry.backoff(50, base=1.0, cap=300.0, rand=low) == 150.0


def test_reason_names_the_code_and_the_message() -> None:
    assert retry.reason(errors.NotFound("location DC-X not found")) == "NOT_FOUND: location DC-X not found"
