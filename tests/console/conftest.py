"""A real Tutti stack (every service, the console, the demo retailer) started the way `make up`
starts it, on ports of its own, and a real browser: Debian's chromium driven by Playwright.

The orchestrator keeps its orders and rules in a schema of its own here, so the rules these
tests publish never change how the rest of the suite's orders are sourced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from tutti.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tutti.tracking.v1 import tracking_pb2_grpc

from runtime.settings import DEFAULT_METRICS_ADDRESSES

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("TUTTI_TEST_CHROMIUM", "/usr/bin/chromium")
PORTS = {"gateway": 62051, "inventory": 62052, "orchestrator": 62053, "returns": 62054, "tracking": 62055}
CONSOLE = "127.0.0.1:62080"
# Screenshots of every page the tests open: docs/console.md shows them.
SHOTS = ROOT / "reports" / "console"

expect.set_options(timeout=30_000)


def _left_behind(home: Path) -> list[int]:
    marker = f"TUTTI_HOME={home}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(FileNotFoundError, PermissionError, ProcessLookupError):
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
    return found


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    home = tmp_path_factory.mktemp("console-stack")
    env = dict(os.environ)
    env.update(
        {
            "TUTTI_HOME": str(home),
            "TUTTI_CONSOLE_ADDR": CONSOLE,
            "TUTTI_CONSOLE_POLL_SECONDS": "0.5",
            "TUTTI_ORCHESTRATOR_SCHEMA": f"console_e2e_{uuid.uuid4().hex[:8]}",
        }
    )
    for name, port in PORTS.items():
        env[f"TUTTI_{name.upper()}_ADDR"] = f"127.0.0.1:{port}"
    for name in DEFAULT_METRICS_ADDRESSES:  # on free ports: a developer's stack keeps the defaults
        env[f"TUTTI_{name.upper()}_METRICS_ADDR"] = "127.0.0.1:0"
    started = subprocess.run(
        [sys.executable, "-m", "tools.stack", "up"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"http://{CONSOLE}" in started.stdout  # the banner says where the console is
        yield env
    finally:
        subprocess.run(
            [sys.executable, "-m", "tools.stack", "down"], cwd=ROOT, env=env, capture_output=True, timeout=120
        )
        for pid in _left_behind(home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            orchestrator_log = home / "logs" / "orchestrator.log"
            SHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(orchestrator_log, SHOTS / "orchestrator.log")
        shutil.rmtree(home, ignore_errors=True)


class Api:
    """The public gateway, as a channel, a store or an admin calls it."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.orders = orchestrator_pb2_grpc.OrderServiceStub(channel)
        self.rules = orchestrator_pb2_grpc.RulesServiceStub(channel)
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
        self.tracking = tracking_pb2_grpc.TrackingServiceStub(channel)

    @staticmethod
    def auth(key: str) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {key}"),)

    async def stock_up(self, store_key: str, location_id: str, sku: str, quantity: int = 5) -> None:
        await self.inventory.ReceiveStock(
            inventory_pb2.ReceiveStockRequest(
                movement_id=f"console-e2e-{uuid.uuid4().hex}",
                location_id=location_id,
                lines=[inventory_pb2.ReservationLine(sku=sku, location_id=location_id, quantity=quantity)],
                reason="console e2e test stock",
            ),
            metadata=self.auth(store_key),
            timeout=10,
        )

    async def collect_order(self, store_id: str, sku: str = "SKU-00002", key: str = "demo-web-key") -> Any:
        reply = await self.orders.PlaceOrder(
            orchestrator_pb2.PlaceOrderRequest(
                channel_order_id=f"web-{uuid.uuid4().hex[:10]}",
                customer_id=f"c-{uuid.uuid4().hex[:8]}",
                method=common_pb2.DELIVERY_METHOD_CLICK_AND_COLLECT,
                pickup_location_id=store_id,
                lines=[
                    orchestrator_pb2.OrderLineInput(
                        line_id="1",
                        sku=sku,
                        quantity=1,
                        unit_price=common_pb2.Money(currency="EUR", amount_minor=1999),
                    )
                ],
            ),
            metadata=self.auth(key),
            timeout=15,
        )
        return reply.order


@pytest.fixture(scope="package")
async def api(stack: dict[str, str]) -> AsyncIterator[Api]:
    async with grpc.aio.insecure_channel(stack["TUTTI_GATEWAY_ADDR"]) as channel:
        yield Api(channel)


@pytest.fixture(scope="package")
async def browser(stack: dict[str, str]) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        await browser.close()


class Console:
    """Opens signed-in browser contexts and checks each page as a person would meet it."""

    url = f"http://{CONSOLE}"

    def __init__(self, browser: Browser) -> None:
        self._browser = browser
        self._contexts: list[BrowserContext] = []

    async def context(self, **options: Any) -> BrowserContext:
        context = await self._browser.new_context(**options)
        self._contexts.append(context)
        return context

    async def signed_in(self, key: str, **options: Any) -> Page:
        page = await (await self.context(**options)).new_page()
        await page.goto(f"{self.url}/login")
        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_test_id("principal")).to_be_visible()
        return page

    async def close(self) -> None:
        for context in self._contexts:
            await context.close()


@pytest.fixture
async def console(browser: Browser) -> AsyncIterator[Console]:
    opened = Console(browser)
    yield opened
    await opened.close()


async def shoot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def serious_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core, served by the console like its other front-end libraries, run in the page."""
    await page.add_script_tag(url="/vendor/axe-core/axe.min.js")
    result = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"][:3]],
        }
        for v in result
        if v["impact"] in ("serious", "critical")
    ]
