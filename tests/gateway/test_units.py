"""Unit tests of the gateway's pure parts: credentials, token buckets, policies, scoping."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2

from gateway import scope
from gateway.credentials import CredentialStore, Kind, Principal, hash_key
from gateway.policy import ADMIN_ONLY, POLICIES, Rule, rule_for
from gateway.ratelimit import RateLimiter
from gateway.routes import build_routes, discover_services
from gateway.settings import BACKENDS, DEMO_CREDENTIALS, GatewaySettings
from runtime.errors import InvalidArgument, PermissionDenied
from runtime.settings import SettingsError

WEB = Principal("web", Kind.CHANNEL, channel=common_pb2.CHANNEL_WEB)
STORE_A = Principal("store-a", Kind.STORE, location_id="loc-a")
TERMINAL_A = Principal("till-1", Kind.TERMINAL, location_id="loc-a")


# --- credentials ---------------------------------------------------------------------------


def test_keys_are_looked_up_by_digest() -> None:
    store = CredentialStore.from_mapping(
        {
            "credentials": [
                {"id": "web", "kind": "channel", "channel": "web", "key_sha256": hash_key("s3cret")}
            ]
        }
    )
    principal = store.authenticate("s3cret")
    assert principal is not None and principal.channel == common_pb2.CHANNEL_WEB
    assert store.authenticate("other") is None


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ({"id": "x", "kind": "channel", "key": "k"}, "channel"),
        ({"id": "x", "kind": "channel", "channel": "nowhere", "key": "k"}, "unknown channel"),
        ({"id": "x", "kind": "store", "key": "k"}, "location_id is required"),
        ({"id": "x", "kind": "robot", "key": "k"}, "kind must be one of"),
        ({"id": "x", "kind": "admin"}, "needs key_sha256"),
        ({"id": "x", "kind": "admin", "key_sha256": "abc"}, "64 hex digits"),
        ({"id": "x", "kind": "admin", "key": "k", "burst": 0}, "burst"),
    ],
)
def test_a_bad_entry_is_refused_naming_it(entry: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        CredentialStore.from_mapping({"credentials": [entry]})


def test_two_entries_with_one_key_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicates the key"):
        CredentialStore.from_mapping(
            {
                "credentials": [
                    {"id": "a", "kind": "admin", "key": "k"},
                    {"id": "b", "kind": "admin", "key": "k"},
                ]
            }
        )


def test_an_unreadable_credentials_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="TUTTI_GATEWAY_CREDENTIALS"):
        CredentialStore.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("credentials: 3\n")
    with pytest.raises(SettingsError, match=r"TUTTI_GATEWAY_CREDENTIALS.*non-empty list"):
        CredentialStore.load(bad)


def test_the_demo_credentials_load_and_are_the_default() -> None:
    settings = GatewaySettings.from_env({})
    assert settings.credentials_path == DEMO_CREDENTIALS and settings.using_demo_credentials
    store = CredentialStore.load(DEMO_CREDENTIALS)
    admin = store.authenticate("demo-admin-key")
    assert admin is not None and admin.kind is Kind.ADMIN


def test_the_largest_message_is_4_mib_unless_configured() -> None:
    assert GatewaySettings.from_env({}).max_message_bytes == 4 * 1024 * 1024
    settings = GatewaySettings.from_env({"TUTTI_GATEWAY_MAX_MESSAGE_BYTES": "1048576"})
    assert settings.max_message_bytes == 1024 * 1024
    with pytest.raises(SettingsError, match="TUTTI_GATEWAY_MAX_MESSAGE_BYTES must be an integer"):
        GatewaySettings.from_env({"TUTTI_GATEWAY_MAX_MESSAGE_BYTES": "4MB"})
    with pytest.raises(SettingsError, match="TUTTI_GATEWAY_MAX_MESSAGE_BYTES must be <="):
        GatewaySettings.from_env({"TUTTI_GATEWAY_MAX_MESSAGE_BYTES": str(2**40)})


def test_tls_needs_both_variables() -> None:
    with pytest.raises(SettingsError, match="TUTTI_GATEWAY_TLS_KEY"):
        GatewaySettings.from_env({"TUTTI_GATEWAY_TLS_CERT": "/x/cert.pem"})


# --- rate limits ---------------------------------------------------------------------------


def test_a_bucket_grants_the_burst_then_refills_at_the_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.acquire("p", 2.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("p", 2.0, 3)
    assert wait == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.acquire("p", 2.0, 3) == 0.0
    assert limiter.acquire("other", 2.0, 3) == 0.0  # buckets are per principal


# --- policies ------------------------------------------------------------------------------


def test_a_method_without_a_row_is_admin_only() -> None:
    assert rule_for("tutti.inventory.v1.InventoryService/ReserveStock") is ADMIN_ONLY
    assert rule_for("tutti.orchestrator.v1.RulesService/PublishRules") is ADMIN_ONLY
    assert ADMIN_ONLY.allows(Kind.ADMIN) and not ADMIN_ONLY.allows(Kind.SERVICE)


def test_the_catalogue_is_readable_by_every_principal_and_not_scoped() -> None:
    rule = rule_for("tutti.inventory.v1.InventoryService/GetSkus")
    assert all(rule.allows(k) for k in (Kind.CHANNEL, Kind.STORE, Kind.TERMINAL, Kind.SERVICE, Kind.ADMIN))
    assert not rule.scope_channel and not rule.scope_location and rule.required == ("skus",)
    # Writing it stays with trusted integrations.
    assert not rule_for("tutti.inventory.v1.InventoryService/RegisterSkus").allows(Kind.CHANNEL)


def test_every_policy_row_names_a_real_method_and_real_fields() -> None:
    """Rows of a backend whose protos exist must match them (rows of backends not written yet
    are skipped)."""
    services = discover_services(BACKENDS)
    known = {f"{s.full_name}/{m.name}": m for ss in services.values() for s in ss for m in s.methods}
    present = {name.rsplit(".", 1)[0] for name in known}  # "tutti.inventory.v1.InventoryService/X" → pkg
    for name, rule in POLICIES.items():
        package = name.split("/")[0].rsplit(".", 1)[0]
        if not any(p.startswith(package) for p in present) or name.endswith("/*"):
            continue
        assert name in known, f"policy row {name} names no method"
        for path in rule.required:
            assert scope.field_exists(known[name].input_type, path), f"{name} requires unknown field {path}"
        for lookup in (rule.lookup,) if isinstance(rule.lookup, str) else rule.lookup or ():
            assert lookup in known, f"{name} looks orders up with unknown {lookup}"


def test_routes_cover_every_discovered_method() -> None:
    services = discover_services(BACKENDS)
    routes = build_routes(services)
    expected = sum(len(s.methods) for ss in services.values() for s in ss)
    assert len(routes) == expected
    for service_list in services.values():
        for service in service_list:
            descriptor_pool.Default().FindServiceByName(service.full_name)  # reflection can find it


# --- scoping -------------------------------------------------------------------------------

CHANNEL_RULE = Rule(frozenset({Kind.CHANNEL}), scope_channel=True)
LOCATION_RULE = Rule(frozenset({Kind.STORE, Kind.TERMINAL}), scope_location=True)


def test_an_unset_channel_is_filled_in_and_a_foreign_one_refused() -> None:
    request = inventory_pb2.GetAvailabilityRequest(sku="A")
    assert scope.scope_request(request, WEB, CHANNEL_RULE) is True
    assert request.channel == common_pb2.CHANNEL_WEB
    foreign = inventory_pb2.GetAvailabilityRequest(sku="A", channel=common_pb2.CHANNEL_MARKETPLACE)
    with pytest.raises(PermissionDenied, match="CHANNEL_WEB only, not CHANNEL_MARKETPLACE"):
        scope.scope_request(foreign, WEB, CHANNEL_RULE)


def test_location_scope_applies_to_nested_lines() -> None:
    request = inventory_pb2.ReceiveStockRequest(
        movement_id="m", lines=[inventory_pb2.ReservationLine(sku="A", quantity=1)]
    )
    assert scope.scope_request(request, STORE_A, LOCATION_RULE) is True
    assert request.location_id == "loc-a" and request.lines[0].location_id == "loc-a"
    request.lines.add(sku="B", location_id="loc-b", quantity=1)
    with pytest.raises(PermissionDenied, match=r"lines\[1\].location_id.*loc-b"):
        scope.scope_request(request, STORE_A, LOCATION_RULE)


def test_a_terminal_only_speaks_for_itself() -> None:
    sale = inventory_pb2.StreamPosSalesRequest(sale_id="s1")
    scope.scope_request(sale, TERMINAL_A, LOCATION_RULE)
    assert (sale.terminal_id, sale.location_id) == ("till-1", "loc-a")
    other = inventory_pb2.StreamPosSalesRequest(sale_id="s2", terminal_id="till-9", location_id="loc-a")
    with pytest.raises(PermissionDenied, match="till-9"):
        scope.scope_request(other, TERMINAL_A, LOCATION_RULE)


def test_a_request_naming_no_location_is_refused_for_a_store() -> None:
    with pytest.raises(PermissionDenied, match="names no location"):
        scope.scope_request(inventory_pb2.GetAvailabilityRequest(sku="A"), STORE_A, LOCATION_RULE)


def test_other_kinds_are_not_scoped() -> None:
    admin = Principal("root", Kind.ADMIN)
    request = inventory_pb2.GetAvailabilityRequest(sku="A", channel=common_pb2.CHANNEL_APP)
    assert scope.scope_request(request, admin, CHANNEL_RULE) is False


def test_visibility_of_an_order_follows_its_channel_and_locations() -> None:
    reservation = inventory_pb2.Reservation(
        channel=common_pb2.CHANNEL_WEB, lines=[inventory_pb2.ReservedLine(sku="A", location_id="loc-a")]
    )
    assert scope.visible_to(reservation, WEB)
    assert not scope.visible_to(reservation, Principal("app", Kind.CHANNEL, channel=common_pb2.CHANNEL_APP))
    assert scope.visible_to(reservation, STORE_A)
    assert not scope.visible_to(reservation, Principal("b", Kind.STORE, location_id="loc-b"))


def test_validation_names_missing_fields_and_absurd_ids() -> None:
    with pytest.raises(InvalidArgument) as info:
        scope.validate(inventory_pb2.ImportStockCsvRequest(), ("import_id", "csv"))
    assert [v.field for v in info.value.violations] == ["import_id", "csv"]
    with pytest.raises(InvalidArgument, match="location_id: must be at most"):
        scope.validate(inventory_pb2.GetLocationRequest(location_id="x" * 300), ())
    scope.validate(inventory_pb2.GetAvailabilityRequest(sku="A"), ("sku",))


def test_the_gateway_package_imports_without_side_effects() -> None:
    importlib.import_module("gateway.bootstrap")


# --- decoding every request ------------------------------------------------------------------


async def test_the_gateway_forwards_the_bytes_it_received_unless_scoping_filled_something_in() -> None:
    from gateway.proxy import Gateway
    from runtime.grpc_server import client_channel

    routes = build_routes(discover_services(BACKENDS))
    channels = {backend: client_channel("127.0.0.1:9") for backend in BACKENDS}
    credentials = CredentialStore.from_mapping({"credentials": [{"id": "a", "kind": "admin", "key": "k"}]})
    gateway = Gateway(routes, credentials, RateLimiter(), channels, 30)
    route = routes["/tutti.inventory.v1.InventoryService/GetAvailability"]
    # An unknown field (number 99) too: the bytes are forwarded as they came, not re-encoded.
    request = inventory_pb2.GetAvailabilityRequest(sku="SKU-1", channel=common_pb2.CHANNEL_WEB)
    raw = request.SerializeToString() + b"\x98\x06\x01"
    forwarded, decoded = gateway._prepare(route, WEB, raw)
    assert forwarded is raw and decoded.sku == "SKU-1"
    forwarded, _ = gateway._prepare(route, Principal("root", Kind.ADMIN), raw)
    assert forwarded is raw
    # A channel that did not say which channel: filled in, so re-encoded.
    raw = inventory_pb2.GetAvailabilityRequest(sku="SKU-1").SerializeToString()
    forwarded, decoded = gateway._prepare(route, WEB, raw)
    assert forwarded != raw and decoded.channel == common_pb2.CHANNEL_WEB
    for channel in channels.values():
        await channel.close()


def test_admission_bounds_calls_in_flight_per_backend_and_per_principal_and_frees_on_leave() -> None:
    from gateway.admission import Admission, Refusal

    admission = Admission(per_backend=3, per_principal=2)
    assert admission.enter("inventory", "web") is None
    assert admission.enter("inventory", "web") is None
    assert admission.enter("inventory", "web") == Refusal("principal", 2)
    assert admission.enter("inventory", "app") is None
    assert admission.enter("inventory", "pos") == Refusal("backend", 3)
    assert admission.enter("orchestrator", "pos") is None  # another backend has its own bound
    admission.leave("inventory", "web")
    assert admission.enter("inventory", "web") is None
    for principal in ("web", "web", "app"):
        admission.leave("inventory", principal)
    admission.leave("orchestrator", "pos")
    assert admission.in_flight("inventory") == 0
