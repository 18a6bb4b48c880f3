"""The console's own rules, fast, through a fake gateway: sign-in, the session cookie,
anti-forgery, who may open which page, and refusals turned into sentences."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from starlette.testclient import TestClient
from tutti.common.v1 import common_pb2

from console.app import create_app
from console.errors import ApiError, explain
from console.gateway import Caller
from console.pages.rules import annotate, line_of
from console.sessions import COOKIE, Sessions
from console.settings import ConsoleSettings

ORIGIN = "http://testserver"
KEYS = {
    "admin-key": Caller("back-office", "admin", 0, ""),
    "web-key": Caller("web-shop", "channel", common_pb2.CHANNEL_WEB, ""),
    "store-key": Caller("store-paris-app", "store", 0, "STORE-PARIS-RIVOLI"),
}


class FakeUser:
    def __init__(self, key: str) -> None:
        self.key = key

    async def caller(self) -> Caller:
        if self.key not in KEYS:
            raise ApiError(grpc.StatusCode.UNAUTHENTICATED, "unknown key")
        return KEYS[self.key]

    async def call(self, service: str, method: str, request: Any) -> Any:
        raise ApiError(grpc.StatusCode.UNAVAILABLE, "Tutti cannot be reached right now.")


class FakeGateway:
    def as_user(self, key: str) -> FakeUser:
        return FakeUser(key)

    async def close(self) -> None:
        return None


def settings(**changes: Any) -> ConsoleSettings:
    base = ConsoleSettings.from_env({"TUTTI_CONSOLE_METRICS_ADDR": "0"})
    return ConsoleSettings(**{**{f: getattr(base, f) for f in base.__dataclass_fields__}, **changes})


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(settings(), FakeGateway()), base_url=ORIGIN) as c:  # type: ignore[arg-type]
        yield c


def sign_in(client: TestClient, key: str, **headers: str) -> Any:
    return client.post(
        "/login", data={"api_key": key}, headers={"origin": ORIGIN, **headers}, follow_redirects=False
    )


def test_sign_in_keeps_the_key_server_side_behind_a_strict_cookie(client: TestClient) -> None:
    answer = sign_in(client, "admin-key")
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "admin-key" not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see the TLS case below


def test_the_cookie_is_secure_when_served_over_tls() -> None:
    app = create_app(settings(secure_cookies=True), FakeGateway())  # type: ignore[arg-type]
    with TestClient(app, base_url="https://testserver") as c:
        answer = c.post(
            "/login",
            data={"api_key": "admin-key"},
            headers={"origin": "https://testserver"},
            follow_redirects=False,
        )
    assert "Secure" in answer.headers["set-cookie"]


def test_an_unknown_key_is_told_in_words(client: TestClient) -> None:
    answer = sign_in(client, "nope")
    assert answer.status_code == 401
    assert "Tutti does not know this key." in answer.text
    assert COOKIE not in answer.headers.get("set-cookie", "")


def test_each_kind_lands_on_its_own_page(client: TestClient) -> None:
    assert sign_in(client, "store-key").headers["location"] == "/store"
    assert sign_in(client, "web-key").headers["location"] == "/orders"


def test_a_page_without_a_session_asks_to_sign_in_and_comes_back(client: TestClient) -> None:
    answer = client.get("/rules", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=/rules"
    answer = client.post(
        "/login",
        data={"api_key": "admin-key", "next": "/rules"},
        headers={"origin": ORIGIN},
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/rules"


def test_next_never_leads_to_another_site(client: TestClient) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        answer = client.post(
            "/login",
            data={"api_key": "admin-key", "next": target},
            headers={"origin": ORIGIN},
            follow_redirects=False,
        )
        assert answer.headers["location"] == "/dashboard"


def test_a_form_posted_from_another_site_is_refused(client: TestClient) -> None:
    answer = client.post("/login", data={"api_key": "admin-key"}, headers={"origin": "https://evil.example"})
    assert answer.status_code == 403
    assert "another site" in answer.text


def test_a_signed_in_form_without_the_session_token_is_refused(client: TestClient) -> None:
    sign_in(client, "admin-key")
    answer = client.post(
        "/stock/safety-stock",
        data={"sku": "S", "location_id": "L", "safety_stock": "1"},
        headers={"origin": ORIGIN},
    )
    assert answer.status_code == 403
    assert "did not come from the console" in answer.text
    answer = client.post(
        "/stock/safety-stock",
        data={"sku": "S", "location_id": "L", "safety_stock": "1", "csrf_token": "forged"},
        headers={"origin": ORIGIN},
    )
    assert answer.status_code == 403


def test_sign_out_forgets_the_session(client: TestClient) -> None:
    sign_in(client, "admin-key")
    sessions: Sessions = client.app.state.sessions  # type: ignore[attr-defined]
    session = sessions.get(client.cookies.get(COOKIE))
    assert session is not None
    answer = client.post(
        "/logout", data={"csrf_token": session.csrf_token}, headers={"origin": ORIGIN}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert sessions.get(session.id) is None
    assert client.get("/dashboard", follow_redirects=False).headers["location"].startswith("/login")


def test_sessions_expire() -> None:
    now = [0.0]
    sessions = Sessions(60, clock=lambda: now[0])
    session = sessions.open("k", KEYS["admin-key"])
    now[0] = 59
    assert sessions.get(session.id) is session
    now[0] = 61
    assert sessions.get(session.id) is None


def test_pages_follow_the_principal(client: TestClient) -> None:
    sign_in(client, "web-key")
    for path in ("/rules", "/dashboard", "/store"):
        answer = client.get(path)
        assert answer.status_code == 403, path
        assert "may not open this page" in answer.text
    menu = client.get("/orders").text
    assert 'href="/rules"' not in menu and 'href="/dashboard"' not in menu


def test_a_gateway_outage_reads_as_a_sentence_not_a_trace(client: TestClient) -> None:
    sign_in(client, "admin-key")
    answer = client.get("/rules")
    assert answer.status_code == 400
    assert "cannot be reached right now" in answer.text
    assert "Traceback" not in answer.text and "UNAVAILABLE" not in answer.text


def test_every_answer_forbids_framing_and_foreign_scripts(client: TestClient) -> None:
    headers = client.get("/login").headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


# --- refusals explained --------------------------------------------------------------------------


def _rpc_error(code: grpc.StatusCode, message: str, *details: Any) -> grpc.aio.AioRpcError:
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    trailing = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details=message)


def test_field_violations_are_kept_per_field() -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="weights.distance", description="must be >= 0, got -1"
            ),
            error_details_pb2.BadRequest.FieldViolation(field="lines[1].sku", description="unknown SKU"),
        ]
    )
    error = explain(_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "2 invalid fields", bad))
    assert error.fields == {"weights.distance": "must be >= 0, got -1", "lines[1].sku": "unknown SKU"}
    assert error.sentence == "Please correct the 2 fields marked below."
    assert error.for_field("lines") == "unknown SKU"


def test_a_rate_limit_says_how_long_to_wait() -> None:
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromSeconds(3)
    error = explain(_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit", retry))
    assert error.sentence == "Too many requests from your key. Wait 3 s and try again."


def test_internal_failures_do_not_leak_their_message() -> None:
    error = explain(_rpc_error(grpc.StatusCode.INTERNAL, "KeyError: 'x' in services/…"))
    assert "KeyError" not in error.sentence
    assert explain(_rpc_error(grpc.StatusCode.NOT_FOUND, "order 'o-1' not found")).sentence == (
        "Not found: Order 'o-1' not found."
    )


# --- rules problems at their lines ---------------------------------------------------------------

DOCUMENT = """schema: tutti.rules/v1
name: Test
eligibility:
  - name: first
    methods: [home_standard]
  - name: second
    max_distance_km: -3
weights:
  distance: -1
  lead_time: 2
"""


def test_a_problem_is_placed_at_the_line_of_its_field() -> None:
    assert line_of(DOCUMENT, "weights.distance") == 9
    assert line_of(DOCUMENT, "eligibility[1].max_distance_km") == 7
    assert line_of(DOCUMENT, "eligibility[1]") == 6
    # A field the document does not write: its nearest written parent.
    assert line_of(DOCUMENT, "weights.workload") == 8
    assert line_of("a: 1\nb: [", "a") == 2  # a YAML syntax error: where the parser stopped


def test_annotate_puts_every_problem_somewhere() -> None:
    lines = annotate(DOCUMENT, {"weights.distance": "must be >= 0", "document": "is not valid"})
    assert lines[0] == {"number": 0, "text": "", "problems": [("document", "is not valid")]}
    flagged = [line for line in lines if line["problems"] and line["number"]]
    assert [(line["number"], line["text"]) for line in flagged] == [(9, "  distance: -1")]


def test_the_console_measures_its_requests_and_sessions() -> None:
    app = create_app(settings(metrics_address="127.0.0.1:0"), FakeGateway())  # type: ignore[arg-type]
    with TestClient(app, base_url=ORIGIN) as c:
        sign_in(c, "admin-key")
        c.get("/login")
        registry = app.state.metrics.metrics.registry
        assert registry.get_sample_value("tutti_console_sessions") == 1
        assert (
            registry.get_sample_value(
                "http_server_duration_seconds_count",
                {"http_page": "login", "http_method": "GET", "http_status_code": "200"},
            )
            == 1
        )
        assert (
            registry.get_sample_value(
                "http_server_duration_seconds_count",
                {"http_page": "login", "http_method": "POST", "http_status_code": "303"},
            )
            == 1
        )
