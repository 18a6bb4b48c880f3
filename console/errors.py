"""The API's refusals as people read them: one sentence, and the fields it concerns.

The gateway answers with a gRPC status, a message and, for bad input, a google.rpc.BadRequest
naming each field. A page shows the sentence at the top of the form and each field's
description next to that field; never a status code alone, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

_SENTENCES = {
    grpc.StatusCode.UNAUTHENTICATED: "Your key is no longer accepted by Tutti. Sign in again.",
    grpc.StatusCode.PERMISSION_DENIED: "You are not allowed to do this with the key you signed in with.",
    grpc.StatusCode.UNAVAILABLE: "Tutti cannot be reached right now. Nothing was changed; try again soon.",
    grpc.StatusCode.DEADLINE_EXCEEDED: "Tutti took too long to answer. Check the result before trying again.",
    grpc.StatusCode.CANCELLED: "The request was interrupted. Check the result before trying again.",
}


@dataclass(frozen=True)
class ApiError(Exception):
    """A refusal of the API, explained."""

    code: grpc.StatusCode
    sentence: str
    fields: dict[str, str] = field(default_factory=dict)
    retry_after_seconds: float | None = None

    def __str__(self) -> str:
        return self.sentence

    @property
    def signed_out(self) -> bool:
        return self.code is grpc.StatusCode.UNAUTHENTICATED

    def for_field(self, name: str) -> str:
        """The description of ``name`` or of any field under it (``lines[0].sku`` for ``lines``)."""
        found = [
            text
            for path, text in self.fields.items()
            if path == name or path.startswith((f"{name}.", f"{name}["))
        ]
        return "; ".join(found)


def explain(error: grpc.aio.AioRpcError | grpc.RpcError) -> ApiError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else "") or ""
    fields: dict[str, str] = {}
    retry_after = None
    status = None
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # details that do not match the status: keep the plain message
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            for violation in bad.field_violations:
                fields[violation.field] = (
                    f"{fields[violation.field]}; {violation.description}"
                    if violation.field in fields
                    else violation.description
                )
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry_after = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return ApiError(code, _sentence(code, message, fields, retry_after), fields, retry_after)


def _sentence(code: grpc.StatusCode, message: str, fields: dict[str, str], retry_after: float | None) -> str:
    if code in _SENTENCES:
        return _SENTENCES[code]
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        if retry_after is not None:
            return f"Too many requests from your key. Wait {max(1, round(retry_after))} s and try again."
        return f"Tutti refused the request as too large or too many: {_clean(message)}"
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        if fields:
            count = len(fields)
            return f"Please correct the {'field' if count == 1 else f'{count} fields'} marked below."
        return f"Please correct the request: {_clean(message)}"
    if code is grpc.StatusCode.NOT_FOUND:
        return f"Not found: {_clean(message)}"
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.ABORTED):
        return f"Not possible now: {_clean(message)}"
    # INTERNAL, UNKNOWN and the rest: the service failed; say so without its internals.
    return "Tutti could not complete the request. Try again, or ask an operator to look at the logs."


def _clean(message: str) -> str:
    text = message.strip().rstrip(".")
    return (text[:1].upper() + text[1:] + ".") if text else "no reason given."
