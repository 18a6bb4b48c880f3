"""The console in a real browser, against the real stack: what a business user, a store
associate and an operator see and do, each with their own key."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from playwright.async_api import Locator, Page, expect
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2
from tutti.orchestrator.v1 import orchestrator_pb2
from tutti.tracking.v1 import tracking_pb2

from tests.console.conftest import Api, Console, serious_violations, shoot

pytestmark = pytest.mark.e2e

PARIS, LYON = "STORE-PARIS-RIVOLI", "STORE-LYON"
PARIS_KEY, LYON_KEY = "demo-store-paris-key", "demo-store-lyon-key"
# A SKU the demo catalogue lets customers return (SKU-00002 is marked non-returnable).
RETURNABLE = "SKU-00098"


def lane(page: Page, name: str, order_id: str) -> Locator:
    """The order's ticket in one lane of the store's queue."""
    return page.locator(f'[data-lane="{name}"] [data-order="{order_id}"]')


async def no_serious_violations(page: Page) -> None:
    found = await serious_violations(page)
    assert not found, found


async def test_a_business_user_corrects_simulates_and_publishes_a_rules_draft(
    api: Api, console: Console
) -> None:
    page = await console.signed_in("demo-admin-key")
    await page.get_by_role("link", name="Rules").click()
    await expect(page.get_by_role("heading", name="Sourcing rules")).to_be_visible()
    live_before = int(re.findall(r"\d+", await page.get_by_test_id("live-version").inner_text())[0])
    editor = page.get_by_label("Rules document (YAML)")
    document = await editor.input_value()
    assert "distance: 3" in document

    # A mistake: shown at the line of the field it concerns.
    await editor.fill(document.replace("distance: 3", "distance: -1", 1))
    await page.get_by_role("button", name="Check").click()
    problem = page.locator('[data-field="weights.distance"]')
    await expect(problem).to_contain_text("must be >= 0")
    await expect(page.get_by_test_id("annotated").locator("li.has-problem code")).to_contain_text(
        "distance: -1"
    )
    await shoot(page, "rules-mistake")

    # Fixed: valid; simulated on past orders against the live version.
    await editor.fill(document.replace("distance: 3", "distance: 5", 1))
    await page.get_by_role("button", name="Check").click()
    await expect(page.get_by_text("The draft is valid.")).to_be_visible()
    await page.get_by_role("button", name="Simulate on past orders").click()
    await expect(page.get_by_test_id("simulation")).to_contain_text(f"against live version {live_before}")
    await expect(page.get_by_test_id("changed-orders")).to_have_text(re.compile(r"^\d+$"))
    await shoot(page, "rules-simulation")

    # Saved (a double click saves one draft: the form's request id), then published after a
    # confirmation that says what changes.
    await page.get_by_label("What changes and why").fill("distance counts more (console e2e)")
    save = page.get_by_role("button", name="Save draft")
    await save.dblclick()
    saved = page.get_by_test_id("draft-version")
    await expect(saved).to_be_visible()
    draft = int(re.findall(r"\d+", await saved.inner_text())[0])
    assert draft > live_before
    await no_serious_violations(page)
    await page.get_by_role("button", name=f"Publish version {draft}…").click()
    confirm = page.get_by_role("dialog")
    await expect(confirm).to_contain_text(f"will replace live version {live_before}")
    await shoot(page, "rules-confirm")
    await confirm.get_by_role("button", name=f"Publish version {draft}").click()
    await expect(page.get_by_test_id("live-version")).to_have_text(f"version {draft}")
    await expect(page.get_by_text(f"Version {draft} is published")).to_be_visible()
    versions = await api.rules.ListRuleVersions(
        orchestrator_pb2.ListRuleVersionsRequest(page_size=5), metadata=api.auth("demo-admin-key"), timeout=10
    )
    assert [v.version for v in versions.versions].count(draft) == 1
    assert not any(v.version == draft + 1 for v in versions.versions)  # the double click saved one draft

    # A new order is sourced by the new version, and its decision says so.
    await api.stock_up(PARIS_KEY, PARIS, "SKU-00002")
    order = await api.collect_order(PARIS)
    await page.goto(f"{console.url}/orders/{order.order_id}")
    await expect(page.get_by_test_id("rules-version")).to_have_text(str(draft))
    await expect(page.get_by_test_id("decision").first).to_contain_text(f"rules v{draft}")
    await page.get_by_text("Every candidate").first.click()
    await expect(page.locator("tr.won").first).to_contain_text(PARIS)
    await shoot(page, "order-decision")
    await no_serious_violations(page)


async def test_a_store_accepts_and_readies_an_order_while_its_page_follows_live(
    api: Api, console: Console
) -> None:
    await api.stock_up(PARIS_KEY, PARIS, "SKU-00002")
    store = await console.signed_in(PARIS_KEY, viewport={"width": 820, "height": 1180})  # a store tablet
    await expect(store.get_by_role("heading", name=f"Store {PARIS}")).to_be_visible()
    order = await api.collect_order(PARIS)

    watcher = await console.signed_in("demo-admin-key")
    await watcher.goto(f"{console.url}/orders/{order.order_id}")
    status = watcher.get_by_test_id("order-status")
    await expect(status).to_have_text("sourced")

    # The new order arrives in the store's queue without a reload, with a notice.
    ticket = lane(store, "accept", order.order_id)
    await expect(ticket).to_be_visible()
    await expect(store.get_by_test_id("arrival")).to_contain_text(order.order_id)
    await expect(ticket.locator(".deadline")).to_contain_text("Accept within")
    await shoot(store, "store-queue")
    await no_serious_violations(store)
    assert await store.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    await ticket.get_by_role("button", name="Accept").click()
    await expect(lane(store, "pick", order.order_id)).to_be_visible()
    await expect(status).to_have_text("accepted")
    await expect(watcher.get_by_test_id("timeline").locator('[data-step="accepted"]').first).to_be_visible()

    await lane(store, "pick", order.order_id).get_by_role("button", name="Ready for pickup").click()
    await expect(lane(store, "ready", order.order_id)).to_be_visible()
    await expect(status).to_have_text("ready for pickup")
    await expect(watcher.get_by_test_id("timeline").locator('[data-step="ready"]').first).to_be_visible()
    await shoot(watcher, "order-live")

    await lane(store, "ready", order.order_id).get_by_role("button", name="Collected").click()
    await expect(status).to_have_text("collected")


async def test_the_dashboard_counts_an_order_placed_through_the_gateway(api: Api, console: Console) -> None:
    page = await console.signed_in("demo-admin-key")
    await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    total = page.locator('tfoot [data-kpi="orders_placed"]')
    before = int(await total.inner_text())
    await api.stock_up(PARIS_KEY, PARIS, "SKU-00002")
    await api.collect_order(PARIS)
    await expect(total).to_have_text(str(before + 1))
    await shoot(page, "dashboard")
    await no_serious_violations(page)

    # The figures are GetKpis' for the same window.
    now = datetime.now(UTC)
    start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    start.FromDatetime(now - timedelta(hours=24))
    end.FromDatetime(now)
    kpis = await api.tracking.GetKpis(
        tracking_pb2.GetKpisRequest(start_time=start, end_time=end),
        metadata=api.auth("demo-admin-key"),
        timeout=10,
    )
    assert kpis.total.orders_placed == before + 1
    web = page.locator('[data-channel="CHANNEL_WEB"] [data-kpi="orders_placed"]')
    expected = next(c.orders_placed for c in kpis.channels if c.channel_name == "CHANNEL_WEB")
    await expect(web).to_have_text(str(expected))


async def test_stock_moves_live_and_admin_sets_safety_stock(api: Api, console: Console) -> None:
    page = await console.signed_in("demo-admin-key")
    await page.get_by_role("link", name="Stock").click()
    await page.get_by_label("SKU").fill("SKU-00002")
    await page.get_by_role("button", name="Show").click()
    on_hand = page.locator(f'[data-location="{PARIS}"] [data-counter="on_hand"]')
    before = int(await on_hand.inner_text())
    await api.stock_up(PARIS_KEY, PARIS, "SKU-00002", quantity=3)
    await expect(on_hand).to_have_text(str(before + 3))
    await page.get_by_label(f"Safety stock at {PARIS}").fill("2")
    await page.locator(f'[data-location="{PARIS}"]').get_by_role("button", name="Set").click()
    await expect(page.get_by_text(f"Safety stock of SKU-00002 at {PARIS} set to 2.")).to_be_visible()
    reserved = int(await page.locator(f'[data-location="{PARIS}"] [data-counter="reserved"]').inner_text())
    atp = page.locator(f'[data-location="{PARIS}"] [data-counter="atp"]')
    await expect(atp).to_have_text(str(max(0, before + 3 - reserved - 2)))
    await shoot(page, "stock")
    await no_serious_violations(page)


async def test_a_channel_key_cannot_reach_admin_pages_and_a_store_sees_only_its_own(
    api: Api, console: Console
) -> None:
    web = await console.signed_in("demo-web-key")
    await expect(web.get_by_role("link", name="Rules")).to_have_count(0)
    for path in ("/rules", "/dashboard", "/store"):
        answer = await web.goto(f"{console.url}{path}")
        assert answer is not None and answer.status == 403
        await expect(web.get_by_text("may not open this page")).to_be_visible()
    await shoot(web, "refused")

    await api.stock_up(LYON_KEY, LYON, "SKU-00002")
    lyon_order = await api.collect_order(LYON)
    paris = await console.signed_in(PARIS_KEY)
    await expect(paris.get_by_test_id("queue")).to_be_visible()
    await expect(paris.locator(f'[data-order="{lyon_order.order_id}"]')).to_have_count(0)
    answer = await paris.goto(f"{console.url}/orders/{lyon_order.order_id}")
    assert answer is not None and answer.status == 400
    await expect(paris.get_by_text("Not found")).to_be_visible()


async def test_a_store_receives_a_return_at_the_counter_and_sees_where_it_goes(
    api: Api, console: Console
) -> None:
    await api.stock_up(PARIS_KEY, PARIS, RETURNABLE)
    order = await api.collect_order(PARIS, sku=RETURNABLE)
    store = await console.signed_in(PARIS_KEY)
    for action in ("accept", "ready", "collected"):  # what the queue's buttons do
        ticket = store.locator(f'[data-order="{order.order_id}"]').first
        await expect(ticket).to_be_visible()
        name = {"accept": "Accept", "ready": "Ready for pickup", "collected": "Collected"}[action]
        await ticket.get_by_role("button", name=name).click()
        if action != "collected":
            await expect(
                store.locator(f'[data-order="{order.order_id}"]').get_by_role("button", name=name)
            ).to_have_count(0)
    await store.get_by_role("link", name="Returns counter").click()
    await store.get_by_label("Order id").fill(order.order_id)
    await store.get_by_role("button", name="Find the order").click()
    await store.get_by_label("Units of line 1 returned").fill("1")
    await store.get_by_label("Reason for line 1").select_option(label="changed mind")
    await store.get_by_label("Condition of line 1").select_option(label="resellable")
    await store.get_by_role("button", name="Receive the return").click()
    done = store.get_by_test_id("return-done")
    await expect(done).to_contain_text("restock")
    await shoot(store, "returns-counter")
    await no_serious_violations(store)


async def test_sign_in_works_from_the_keyboard_and_mistakes_read_as_sentences(console: Console) -> None:
    context = await console.context()
    page = await context.new_page()
    await page.goto(f"{console.url}/login")
    # The key field has the focus on arrival: type, Enter.
    await page.keyboard.type("not-a-key")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("alert")).to_have_text("Tutti does not know this key.")
    await shoot(page, "login")
    await no_serious_violations(page)


async def test_an_order_line_is_cancelled_with_a_reason_and_the_page_follows(
    api: Api, console: Console
) -> None:
    await api.stock_up(PARIS_KEY, PARIS, "SKU-00002")
    order = await api.collect_order(PARIS)
    page = await console.signed_in("demo-web-key")  # the channel that placed it
    await page.get_by_label("Search by").select_option(label="Channel order id")
    await page.get_by_label("Id").fill(order.channel_order_id)
    await page.get_by_role("button", name="Find").click()
    await expect(page.get_by_role("heading", name=f"Order {order.order_id}")).to_be_visible()
    cancel = page.get_by_role("button", name="Cancel line")
    await cancel.click()  # no reason: refused in words, nothing cancelled
    await expect(page.get_by_test_id("order-status")).to_have_text("sourced")
    await page.get_by_label("Reason to cancel line 1").fill("customer changed their mind")
    # The channel reads why its order went where it did.
    await expect(page.get_by_test_id("decision").first).to_contain_text(PARIS)
    await cancel.click()
    await expect(page.get_by_test_id("order-status")).to_have_text("cancelled")
    await expect(page.get_by_test_id("timeline").locator('[data-step="cancelled"]').first).to_be_visible()
    await shoot(page, "order-cancelled")


async def test_a_store_rejects_an_order_with_a_reason_and_it_leaves_its_queue(
    api: Api, console: Console
) -> None:
    await api.stock_up(PARIS_KEY, PARIS, "SKU-00002")
    order = await api.collect_order(PARIS)
    store = await console.signed_in(PARIS_KEY)
    ticket = lane(store, "accept", order.order_id)
    await ticket.get_by_label(f"Why can the store not serve {order.order_id}?").fill("not found on the shelf")
    await ticket.get_by_role("button", name="Reject").click()
    await expect(lane(store, "accept", order.order_id)).to_have_count(0)
    reply = await api.orders.GetOrder(
        orchestrator_pb2.GetOrderRequest(order_id=order.order_id),
        metadata=api.auth("demo-admin-key"),
        timeout=10,
    )
    assert all(
        line.location_id != PARIS or line.status == orchestrator_pb2.LINE_STATUS_CANCELLED
        for line in reply.order.lines
    )
    # A handover of an exchange the store does not know reads as a sentence.
    await store.get_by_label("Exchange id").fill("EXC-UNKNOWN")
    await store.get_by_role("button", name="Hand over the replacement").click()
    await expect(store.locator("#exchange-result")).to_contain_text("Not found")


async def test_admin_sets_a_channel_buffer_and_rolls_rules_back(api: Api, console: Console) -> None:
    page = await console.signed_in("demo-admin-key")
    await page.goto(f"{console.url}/stock")
    await page.get_by_label("Buffer units for app").fill("1")
    await page.get_by_label("Locations excluded from app, comma separated").fill("STORE-TOULON")
    await page.get_by_role("row", name="app").get_by_role("button", name="Save").click()
    await expect(page.locator("#policy-saved")).to_contain_text("app channel now holds back 1 unit(s)")
    policies = await api.inventory.ListChannelPolicies(
        inventory_pb2.ListChannelPoliciesRequest(), metadata=api.auth("demo-admin-key"), timeout=10
    )
    (app,) = [p for p in policies.policies if p.channel == common_pb2.CHANNEL_APP]
    assert app.buffer_units == 1 and list(app.excluded_location_ids) == ["STORE-TOULON"]
    await page.get_by_label("Buffer units for app").fill("0")
    await page.get_by_label("Locations excluded from app, comma separated").fill("")
    await page.get_by_role("row", name="app").get_by_role("button", name="Save").click()
    await expect(page.locator("#policy-saved")).to_contain_text("app channel now holds back 0 unit(s)")

    # Roll back to the version live before: confirmed, then live again. (A version is published
    # through the API first, so there is one to go back to whatever ran before.)
    admin = api.auth("demo-admin-key")
    current = await api.rules.GetRules(orchestrator_pb2.GetRulesRequest(), metadata=admin, timeout=10)
    draft = await api.rules.CreateDraftRules(
        orchestrator_pb2.CreateDraftRulesRequest(
            document=current.version.document, author="e2e", comment="same rules, new version"
        ),
        metadata=admin,
        timeout=10,
    )
    await api.rules.PublishRules(
        orchestrator_pb2.PublishRulesRequest(version=draft.version.version), metadata=admin, timeout=10
    )
    await page.goto(f"{console.url}/rules")
    live = int(re.findall(r"\d+", await page.get_by_test_id("live-version").inner_text())[0])
    assert live == draft.version.version
    retired = page.get_by_role("button", name="Roll back to…")
    row = retired.first.locator("xpath=ancestor::tr")
    target = int(await row.get_attribute("data-version") or 0)
    await retired.first.click()
    confirm = page.get_by_role("dialog")
    await expect(confirm).to_contain_text(f"will replace live version {live}")
    await confirm.get_by_role("button", name=f"Make version {target} live again").click()
    await expect(page.get_by_test_id("live-version")).to_have_text(f"version {target}")
    await shoot(page, "rules")


async def test_the_gateway_says_whose_key_it_is_and_finds_a_channel_order_by_its_own_id(api: Api) -> None:
    from tutti.gateway.v1 import gateway_pb2, gateway_pb2_grpc

    identity = gateway_pb2_grpc.IdentityServiceStub(api.channel)
    store = await identity.GetCaller(gateway_pb2.GetCallerRequest(), metadata=api.auth(PARIS_KEY), timeout=10)
    assert (store.principal_id, store.kind, store.location_id) == (
        "store-paris-app",
        gateway_pb2.PRINCIPAL_KIND_STORE,
        PARIS,
    )
    web = await identity.GetCaller(
        gateway_pb2.GetCallerRequest(), metadata=api.auth("demo-web-key"), timeout=10
    )
    assert (web.kind, web.channel) == (gateway_pb2.PRINCIPAL_KIND_CHANNEL, common_pb2.CHANNEL_WEB)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.GetCaller(gateway_pb2.GetCallerRequest(), metadata=api.auth("nope"), timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED

    await api.stock_up(PARIS_KEY, PARIS, "SKU-00002")
    order = await api.collect_order(PARIS)
    by_id = orchestrator_pb2.ListOrdersRequest(channel_order_id=order.channel_order_id)
    mine = await api.orders.ListOrders(by_id, metadata=api.auth("demo-web-key"), timeout=10)
    assert [o.order_id for o in mine.orders] == [order.order_id]
    # Another channel's key fills in its own channel: the web order is not its to find.
    other = await api.orders.ListOrders(by_id, metadata=api.auth("demo-app-key"), timeout=10)
    assert not other.orders
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await api.orders.ListOrders(by_id, metadata=api.auth("demo-admin-key"), timeout=10)
    assert missing.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "channel" in (
        missing.value.details() or ""
    )
    line = (
        await api.orders.GetOrder(
            orchestrator_pb2.GetOrderRequest(order_id=order.order_id),
            metadata=api.auth("demo-web-key"),
            timeout=10,
        )
    ).order.lines[0]
    assert line.status == orchestrator_pb2.LINE_STATUS_SOURCED and line.HasField("accept_by")
