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
