import grpc
import redis.exceptions
from google.rpc import error_details_pb2

from runtime import errors


def test_domain_errors_keep_their_code_and_message() -> None:
    code, message, details = errors.to_status(errors.NotFound("sku SKU-1 is unknown"))
    assert (code, message, details) == (grpc.StatusCode.NOT_FOUND, "sku SKU-1 is unknown", [])


def test_invalid_argument_names_every_field_in_bad_request_details() -> None:
    exc = errors.InvalidArgument(
        "lines[0].quantity", "must be > 0", errors.FieldViolation("order_id", "is required")
    )
    code, message, details = errors.to_status(exc)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == "lines[0].quantity: must be > 0; order_id: is required"
    bad_request = error_details_pb2.BadRequest()
    assert details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["lines[0].quantity", "order_id"]


def test_resource_exhausted_carries_a_retry_hint() -> None:
    _, _, details = errors.to_status(errors.ResourceExhausted("slow down", retry_after_seconds=1.5))
    info = error_details_pb2.RetryInfo()
    assert details[0].Unpack(info)
    assert info.retry_delay.seconds == 1 and info.retry_delay.nanos == 500_000_000


def test_failed_precondition_lists_short_lines() -> None:
    exc = errors.FailedPrecondition("not enough stock", [("SKU-1@STORE-1", "requested 3, available 1")])
    _, _, details = errors.to_status(exc)
    failure = error_details_pb2.PreconditionFailure()
    assert details[0].Unpack(failure)
    assert failure.violations[0].subject == "SKU-1@STORE-1"


def test_infrastructure_errors_are_unavailable_and_say_nothing_internal() -> None:
    code, message, _ = errors.to_status(redis.exceptions.ConnectionError("Error 111 connecting to 10.0.0.1"))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "10.0.0.1" not in message


def test_anything_else_is_internal_with_a_generic_message() -> None:
    code, message, _ = errors.to_status(KeyError("secret internals"))
    assert code == grpc.StatusCode.INTERNAL
    assert "secret" not in message


def _trailers_size(exc: errors.TuttiError) -> int:
    """Bytes the status takes in trailers: grpc-message (percent-encoded) + details (base64)."""
    import base64
    from urllib.parse import quote

    from grpc_status import rpc_status

    status = rpc_status.to_status(errors.rich_status(*errors.to_status(exc)))
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    return len(quote(status.details)) + len(base64.b64encode(details))


def test_many_field_violations_are_cut_to_fit_in_trailers_with_a_count_of_the_rest() -> None:
    exc = errors.InvalidArgument.of(
        [errors.FieldViolation(f"lines[{i}].sku", "is not a known SKU " + "x" * 500) for i in range(10_000)]
    )
    code, message, details = errors.to_status(exc)
    status = errors.rich_status(code, message, details)
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    shown = bad_request.field_violations
    assert shown[0].field == "lines[0].sku"
    assert len(shown) <= errors.MAX_VIOLATIONS + 1
    assert shown[-1].description == f"and {10_000 - (len(shown) - 1)} more"
    assert all(len(v.description) <= errors.MAX_TEXT_CHARS for v in shown)
    assert message.endswith(f"and {10_000 - errors.MESSAGE_VIOLATIONS} more")
    assert _trailers_size(exc) < 6 * 1024


def test_a_huge_message_is_truncated() -> None:
    status = errors.rich_status(grpc.StatusCode.NOT_FOUND, "é" * 100_000, [])
    assert len(status.message.encode()) <= errors.MAX_STATUS_MESSAGE_BYTES
    assert status.message.endswith("…")
    assert _trailers_size(errors.NotFound("é" * 100_000)) < 6 * 1024


def test_long_precondition_failures_are_cut_too() -> None:
    exc = errors.FailedPrecondition(
        "not enough stock", [(f"SKU-{i}@STORE-1", "requested 3, available 1") for i in range(1_000)]
    )
    status = errors.rich_status(*errors.to_status(exc))
    failure = error_details_pb2.PreconditionFailure()
    assert status.details[0].Unpack(failure)
    assert failure.violations[0].subject == "SKU-0@STORE-1"
    assert failure.violations[-1].description.startswith("and ")
    assert status.ByteSize() < errors.MAX_DETAILS_BYTES + errors.MAX_STATUS_MESSAGE_BYTES + 64


def test_a_few_violations_are_kept_whole() -> None:
    exc = errors.InvalidArgument("a", "is required", errors.FieldViolation("b", "is required"))
    status = errors.rich_status(*errors.to_status(exc))
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("a", "is required"),
        ("b", "is required"),
    ]
