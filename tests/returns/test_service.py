"""The returns service layer on the real PostgreSQL schema, with in-memory fakes of the other
services' ports (orders, inventory): idempotency, effects decided once, errors, history."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from runtime.postgres import apply_migrations, create_pool
from runtime.settings import CommonSettings
from services.returns.adapters.codec import ReturnView
from services.returns.adapters.postgres import PgReturnsStore
from services.returns.adapters.rules_file import load_rules
from services.returns.bootstrap import MIGRATIONS, SCHEMA
from services.returns.domain import model as m
from services.returns.service import (
    CreateExchange,
    CreateReturn,
    HandOverExchange,
    ReceiveReturn,
    ReturnsService,
    TaskWorker,
)
from tests.support import random_id

pytestmark = pytest.mark.integration


class FakeOrders:
    def __init__(self) -> None:
        self.purchases: dict[str, m.Purchase] = {}

    async def get_purchase(self, order_id: str) -> m.Purchase | None:
        return self.purchases.get(order_id)

    async def order_parties(self, order_id: str) -> tuple[str, tuple[str, ...]] | None:
        purchase = self.purchases.get(order_id)
        return None if purchase is None else (purchase.channel, ())


class FakeInventory:
    def __init__(self) -> None:
        self.applied: dict[str, m.InventoryTask] = {}
        self.locations = {"STORE-A": "store", "STORE-B": "store", "DC-ORLEANS": "distribution_centre"}
        self.carried: set[tuple[str, str]] = set()
        self.down = False
        self.refuse_reserve = False
        # Locations inventory does not know: effects there are refused NOT_FOUND (for good).
        self.unknown: set[str] = set()
        self.skus: dict[str, m.CatalogueEntry] = {}
        self.till_sales: dict[tuple[str, str], m.RecordedTillSale] = {}

    async def location_type(self, location_id: str) -> str | None:
        return self.locations.get(location_id)

    async def sells(self, location_id: str, sku: str) -> bool:
        return (location_id, sku) in self.carried

    async def apply(self, task: m.InventoryTask) -> None:
        if self.down:
            raise Unavailable("inventory down")
        if task.location_id in self.unknown:
            raise NotFound(f"location {task.location_id} not found")
        if task.kind is m.TaskKind.RESERVE and self.refuse_reserve:
            raise FailedPrecondition(f"not enough {task.sku} at {task.location_id}")
        self.applied[task.task_id] = task

    async def catalogue(self, skus: Sequence[str]) -> dict[str, m.CatalogueEntry]:
        return {sku: self.skus[sku] for sku in skus if sku in self.skus}

    async def till_sale(self, terminal_id: str, sale_id: str) -> m.RecordedTillSale | None:
        return self.till_sales.get((terminal_id, sale_id))

    def record_till_sale(self, terminal: str, sale: str, purchase: m.Purchase, **overrides: object) -> None:
        """What inventory keeps of the till's sale behind ``purchase``'s receipt."""
        units: dict[str, int] = {}
        for line in purchase.lines:
            units[line.sku] = units.get(line.sku, 0) + line.quantity
        fields: dict[str, object] = {
            "location_id": purchase.location_id, "is_return": False, "units": units,
            "recorded_at": purchase.purchased_at,
        }
        fields.update(overrides)
        self.till_sales[(terminal, sale)] = m.RecordedTillSale(terminal, sale, **fields)  # type: ignore[arg-type]

    def of(self, kind: m.TaskKind) -> list[m.InventoryTask]:
        return [t for t in self.applied.values() if t.kind is kind]


@pytest.fixture
async def store(settings: CommonSettings) -> AsyncIterator[PgReturnsStore]:
    await apply_migrations(settings.database_url, SCHEMA, [MIGRATIONS])
    pool = await create_pool(settings.database_url, SCHEMA, max_size=4)
    try:
        yield PgReturnsStore(pool)
    finally:
        await pool.close()


@pytest.fixture
def orders() -> FakeOrders:
    return FakeOrders()


@pytest.fixture
def inventory() -> FakeInventory:
    return FakeInventory()


@pytest.fixture
def service(store: PgReturnsStore, orders: FakeOrders, inventory: FakeInventory) -> ReturnsService:
    return ReturnsService(store, orders, inventory, load_rules())


def web_order(orders: FakeOrders, days_ago: int = 2) -> str:
    order_id = random_id("ORD")
    orders.purchases[order_id] = m.Purchase(
        order_id=order_id,
        source=m.PurchaseSource.ORDER,
        channel="web",
        purchased_at=datetime.now(UTC) - timedelta(days=days_ago),
        currency="EUR",
        lines=(m.PurchasedLine("1", "SKU-A", 2, 2500), m.PurchasedLine("2", "SKU-B", 1, 9000)),
    )
    return order_id


def create(
    order_id: str,
    *lines: tuple[str, int],
    method: m.ReturnMethod = m.ReturnMethod.IN_STORE,
    request_id: str | None = None,
    location: str = "STORE-A",
) -> CreateReturn:
    return CreateReturn(
        request_id=request_id or random_id("req"),
        order_id=order_id,
        pos_purchase=None,
        lines=tuple(m.RequestedLine(line, qty, m.Reason.WRONG_SIZE) for line, qty in lines),
        method=method,
        receiving_location_id=location,
        channel="store",
    )


async def test_create_is_idempotent_by_request_id(service: ReturnsService, orders: FakeOrders) -> None:
    order_id = web_order(orders)
    cmd = create(order_id, ("1", 1))
    first, dup1 = await service.create_return(cmd)
    again, dup2 = await service.create_return(cmd)
    assert (dup1, dup2) == (False, True)
    assert again.ret.return_id == first.ret.return_id
    assert [v.ret.return_id for v in await service.list_returns(order_id)] == [first.ret.return_id]
    with pytest.raises(AlreadyExists):
        await service.create_return(create(order_id, ("1", 2), request_id=cmd.request_id))


async def test_quantities_already_returned_are_enforced_across_returns(
    service: ReturnsService, orders: FakeOrders
) -> None:
    order_id = web_order(orders)
    await service.create_return(create(order_id, ("1", 1)))
    await service.create_return(create(order_id, ("1", 1)))
    with pytest.raises(FailedPrecondition, match="2 already returned"):
        await service.create_return(create(order_id, ("1", 1)))


async def test_bad_input(service: ReturnsService, orders: FakeOrders) -> None:
    with pytest.raises(NotFound, match="order"):
        await service.create_return(create("ORD-nope", ("1", 1)))
    order_id = web_order(orders)
    with pytest.raises(NotFound, match="no line '9'"):
        await service.create_return(create(order_id, ("9", 1)))
    with pytest.raises(FailedPrecondition, match="3 requested but 2 bought"):
        await service.create_return(create(order_id, ("1", 3)))
    with pytest.raises(NotFound, match="location STORE-X"):
        await service.create_return(create(order_id, ("1", 1), location="STORE-X"))
    with pytest.raises(InvalidArgument, match="request_id"):
        await service.create_return(create(order_id, ("1", 1), request_id="bad id!"))
    old = web_order(orders, days_ago=45)
    with pytest.raises(FailedPrecondition, match="return window"):
        await service.create_return(create(old, ("1", 1)))


async def test_in_transit_return_is_incoming_supply_until_received(
    service: ReturnsService, orders: FakeOrders, inventory: FakeInventory
) -> None:
    order_id = web_order(orders)
    view, _ = await service.create_return(create(order_id, ("1", 2), method=m.ReturnMethod.CARRIER_LABEL))
    rid = view.ret.return_id
    [incoming] = inventory.of(m.TaskKind.SET_INCOMING)
    assert (incoming.sku, incoming.location_id, incoming.quantity) == ("SKU-A", "STORE-A", 2)
    assert incoming.expected_at == view.ret.expected_at
    inventory.carried.add(("STORE-A", "SKU-A"))
    await service.receive_return(
        ReceiveReturn(rid, "", "STORE-A", (m.ReceivedLine("1", 2, m.Grade.RESELLABLE),))
    )
    [cleared] = inventory.of(m.TaskKind.CLEAR_INCOMING)
    assert cleared.quantity == 0 and cleared.supply_id == incoming.supply_id


async def test_duplicate_receipt_restocks_once(
    service: ReturnsService, orders: FakeOrders, inventory: FakeInventory
) -> None:
    order_id = web_order(orders)
    inventory.carried.add(("STORE-A", "SKU-A"))
    view, _ = await service.create_return(create(order_id, ("1", 2)))
    rid = view.ret.return_id
    receive = ReceiveReturn(rid, "rcpt-1", "STORE-A", (m.ReceivedLine("1", 2, m.Grade.RESELLABLE),))
    _, receipt, dup1 = await service.receive_return(receive)
    after, again, dup2 = await service.receive_return(receive)
    assert (dup1, dup2) == (False, True)
    assert again.refund == receipt.refund and receipt.refund.total_minor == 5000
    assert [(t.location_id, t.quantity) for t in inventory.of(m.TaskKind.RESTOCK)] == [("STORE-A", 2)]
    assert after.ret.status is m.ReturnStatus.RECEIVED
    with pytest.raises(FailedPrecondition, match="only 0 of 2 still expected"):
        await service.receive_return(
            ReceiveReturn(rid, "rcpt-2", "STORE-A", (m.ReceivedLine("1", 1, m.Grade.RESELLABLE),))
        )
    assert len(inventory.of(m.TaskKind.RESTOCK)) == 1


async def test_damaged_goes_to_quarantine_and_history_tells_the_story(
    service: ReturnsService, orders: FakeOrders, inventory: FakeInventory
) -> None:
    order_id = web_order(orders)
    inventory.carried.add(("STORE-B", "SKU-B"))
    view, _ = await service.create_return(create(order_id, ("2", 1), location="STORE-B"))
    view, _, _ = await service.receive_return(
        ReceiveReturn(view.ret.return_id, "", "STORE-B", (m.ReceivedLine("2", 1, m.Grade.DAMAGED),))
    )
    assert inventory.of(m.TaskKind.RESTOCK) == []
    assert [(t.location_id, t.quantity) for t in inventory.of(m.TaskKind.QUARANTINE)] == [("STORE-B", 1)]
    types = [s.type.rsplit(".", 1)[1] for s in view.steps]
    assert types == [
        "ReturnRequested",
        "ReturnReceived",
        "ReturnLineGraded",
        "ReturnQuarantined",
        "RefundIssued",
    ]
    assert all(s.occurred_at.tzinfo is not None for s in view.steps)


async def test_store_not_selling_the_item_sends_it_to_the_dc(
    service: ReturnsService, orders: FakeOrders, inventory: FakeInventory
) -> None:
    order_id = web_order(orders)
    view, _ = await service.create_return(create(order_id, ("1", 1)))
    _, receipt, _ = await service.receive_return(
        ReceiveReturn(view.ret.return_id, "", "STORE-A", (m.ReceivedLine("1", 1, m.Grade.RESELLABLE),))
    )
    assert receipt.items[0].disposition is m.Disposition.SEND_TO_DC
    assert [(t.location_id, t.quantity) for t in inventory.of(m.TaskKind.SET_INCOMING)] == [("DC-ORLEANS", 1)]
    assert inventory.of(m.TaskKind.RESTOCK) == []


async def test_effects_deferred_while_inventory_is_down_are_applied_by_the_worker(
    service: ReturnsService, store: PgReturnsStore, orders: FakeOrders, inventory: FakeInventory
) -> None:
    order_id = web_order(orders)
    inventory.carried.add(("STORE-A", "SKU-A"))
    view, _ = await service.create_return(create(order_id, ("1", 1)))
    inventory.down = True
    await service.receive_return(
        ReceiveReturn(view.ret.return_id, "", "STORE-A", (m.ReceivedLine("1", 1, m.Grade.RESELLABLE),))
    )
    assert inventory.of(m.TaskKind.RESTOCK) == []
    inventory.down = False
    async with store.transaction() as tx:  # make the deferred task due now
        await tx._conn.execute(
            "UPDATE inventory_tasks SET next_attempt_at = now() WHERE return_id = $1", view.ret.return_id
        )
    await TaskWorker(store, inventory).run_once()
    restocked = [t for t in inventory.of(m.TaskKind.RESTOCK) if t.reference == view.ret.return_id]
    assert [t.quantity for t in restocked] == [1]


async def test_exchange_reserves_the_replacement(
    service: ReturnsService, orders: FakeOrders, inventory: FakeInventory
) -> None:
    order_id = web_order(orders)
    cmd = CreateExchange(
        request=create(order_id, ("1", 1)),
        replacement_sku="SKU-A-L",
        fulfilment=m.Fulfilment.COLLECT,
        location_id="STORE-B",
        shipping_address=None,
    )
    view, dup = await service.create_exchange(cmd)
    assert not dup and view.exchange is not None
    [reserve] = inventory.of(m.TaskKind.RESERVE)
    assert (reserve.sku, reserve.location_id, reserve.quantity, reserve.reservation_id) == (
        "SKU-A-L",
        "STORE-B",
        1,
        view.exchange.reservation_id,
    )
    assert reserve.reference == order_id and view.estimated_refund_minor == 0
    again, dup = await service.create_exchange(cmd)
    assert dup and again.exchange == view.exchange
    cancelled = await service.cancel_return(view.ret.return_id, "customer changed plans")
    assert cancelled.ret.status is m.ReturnStatus.CANCELLED and cancelled.exchange.cancelled  # type: ignore[union-attr]
    assert [t.reservation_id for t in inventory.of(m.TaskKind.RELEASE)] == [reserve.reservation_id]


async def test_exchange_without_stock_saves_nothing(
    service: ReturnsService, orders: FakeOrders, inventory: FakeInventory
) -> None:
    order_id = web_order(orders)
    inventory.refuse_reserve = True
    with pytest.raises(FailedPrecondition, match="not enough"):
        await service.create_exchange(
            CreateExchange(
                request=create(order_id, ("1", 1)),
                replacement_sku="SKU-A-L",
                fulfilment=m.Fulfilment.COLLECT,
                location_id="STORE-B",
                shipping_address=None,
            )
        )
    assert await service.list_returns(order_id) == []


def collect_exchange(order_id: str) -> CreateExchange:
    return CreateExchange(
        request=create(order_id, ("1", 1)),
        replacement_sku="SKU-A-L",
        fulfilment=m.Fulfilment.COLLECT,
        location_id="STORE-B",
        shipping_address=None,
    )


async def opened_exchange(service: ReturnsService, orders: FakeOrders) -> tuple[ReturnView, str]:
    """A web order's line exchanged for collection at STORE-B: its view and exchange id."""
    view, _ = await service.create_exchange(collect_exchange(web_order(orders)))
    assert view.exchange is not None
    return view, view.exchange.exchange_id


async def test_exchange_handover_fulfils_once_and_blocks_cancel(
    service: ReturnsService, orders: FakeOrders, inventory: FakeInventory
) -> None:
    view, exchange_id = await opened_exchange(service, orders)
    assert view.exchange is not None

    inventory.down = True
    with pytest.raises(Unavailable):
        await service.hand_over_exchange(HandOverExchange(exchange_id, "STORE-B", "scan-1"))
    inventory.down = False
    after_outage = await service.get_return(view.ret.return_id)
    assert after_outage.exchange is not None and after_outage.exchange.handed_over_at is None
    assert [s.type for s in after_outage.steps][-1] == "tutti.returns.v1.ExchangeCreated"

    handed, _, dup = await service.hand_over_exchange(HandOverExchange(exchange_id, "STORE-B", "scan-1"))
    assert not dup and handed.handed_over_at is not None and handed.handover_update_id == "scan-1"
    [fulfil] = inventory.of(m.TaskKind.FULFIL)
    assert (fulfil.task_id, fulfil.reservation_id, fulfil.sku, fulfil.location_id, fulfil.quantity) == (
        f"{exchange_id}:handover",
        view.exchange.reservation_id,
        "SKU-A-L",
        "STORE-B",
        1,
    )
    inventory.applied.clear()
    again, _, dup = await service.hand_over_exchange(HandOverExchange(exchange_id, "STORE-B", "scan-2"))
    assert dup and again == handed and inventory.applied == {}

    current = await service.get_return(view.ret.return_id)
    assert current.exchange == handed
    assert [s.type for s in current.steps].count("tutti.returns.v1.ExchangeHandedOver") == 1
    with pytest.raises(FailedPrecondition, match="handed over"):
        await service.cancel_return(view.ret.return_id, "changed plans")
    assert (await service.get_return(view.ret.return_id)).ret.status is m.ReturnStatus.REQUESTED
    assert inventory.of(m.TaskKind.RELEASE) == []


async def test_exchange_handover_errors(
    service: ReturnsService, orders: FakeOrders, inventory: FakeInventory
) -> None:
    view, exchange_id = await opened_exchange(service, orders)
    with pytest.raises(InvalidArgument, match=r"^exchange_id: required"):
        await service.hand_over_exchange(HandOverExchange("", "STORE-B"))
    with pytest.raises(InvalidArgument, match=r"^location_id: 1\.\.128 characters"):
        await service.hand_over_exchange(HandOverExchange(exchange_id, "no spaces allowed"))
    with pytest.raises(NotFound, match="EXC-NOPE"):
        await service.hand_over_exchange(HandOverExchange("EXC-NOPE", "STORE-B"))
    with pytest.raises(FailedPrecondition, match="reserved at STORE-B, not at STORE-A"):
        await service.hand_over_exchange(HandOverExchange(exchange_id, "STORE-A"))
    await service.cancel_return(view.ret.return_id, "changed plans")
    with pytest.raises(FailedPrecondition, match="cancelled"):
        await service.hand_over_exchange(HandOverExchange(exchange_id, "STORE-B"))
    assert inventory.of(m.TaskKind.FULFIL) == []


def till_purchase(
    terminal: str, sale: str, *lines: m.PurchasedLine, sold_at: datetime | None = None
) -> m.Purchase:
    """A receipt from a till at STORE-B, as the store app sends it."""
    return m.Purchase(
        order_id=m.pos_order_id(terminal, sale),
        source=m.PurchaseSource.POS,
        channel="store",
        purchased_at=sold_at or datetime.now(UTC) - timedelta(days=1),
        currency="EUR",
        lines=lines,
        location_id="STORE-B",
    )


async def test_pos_purchase_returned_in_another_store(
    service: ReturnsService, inventory: FakeInventory
) -> None:
    terminal, sale = random_id("T"), random_id("S")
    purchase = till_purchase(terminal, sale, m.PurchasedLine("1", "SKU-A", 1, 1000, "apparel"))
    inventory.record_till_sale(terminal, sale, purchase)
    cmd = CreateReturn(
        request_id="r1",
        order_id=purchase.order_id,
        pos_purchase=purchase,
        lines=(m.RequestedLine("1", 1, m.Reason.CHANGED_MIND),),
        method=m.ReturnMethod.DROP_OFF_POINT,
        receiving_location_id="STORE-A",
        channel="web",
        pos_sale=(terminal, sale),
    )
    view, _ = await service.create_return(cmd)
    assert view.ret.source is m.PurchaseSource.POS and view.ret.order_id == f"pos:{terminal}:{sale}"
    assert view.estimated_refund_minor == 900


async def test_a_till_purchase_follows_the_catalogue_not_the_receipt(
    service: ReturnsService, inventory: FakeInventory
) -> None:
    """The receipt carries no returnable flag and maybe a stale category: a SKU the catalogue
    marks non-returnable (or files under a non-returnable category) cannot come back."""
    inventory.skus["SKU-FINAL"] = m.CatalogueEntry("SKU-FINAL", "apparel", returnable=False)
    inventory.skus["SKU-FOOD"] = m.CatalogueEntry("SKU-FOOD", "food", returnable=True)
    terminal, sale = random_id("T"), random_id("S")
    purchase = till_purchase(
        terminal,
        sale,
        m.PurchasedLine("1", "SKU-FINAL", 1, 1000, "apparel"),
        m.PurchasedLine("2", "SKU-FOOD", 1, 500, "apparel"),
        m.PurchasedLine("3", "SKU-UNKNOWN", 1, 700, "apparel"),
    )

    inventory.record_till_sale(terminal, sale, purchase)

    def returning(line_id: str, request_id: str) -> CreateReturn:
        return CreateReturn(
            request_id=request_id,
            order_id=purchase.order_id,
            pos_purchase=purchase,
            lines=(m.RequestedLine(line_id, 1, m.Reason.CHANGED_MIND),),
            method=m.ReturnMethod.DROP_OFF_POINT,
            receiving_location_id="STORE-A",
            channel="store",
            pos_sale=(terminal, sale),
        )

    with pytest.raises(FailedPrecondition, match="marked non-returnable"):
        await service.create_return(returning("1", "r-final"))
    with pytest.raises(FailedPrecondition, match="category 'food' is not returnable"):
        await service.create_return(returning("2", "r-food"))
    view, _ = await service.create_return(returning("3", "r-unknown"))  # unknown SKU: the receipt's word
    assert view.ret.lines[0].category == "apparel"


async def test_a_till_receipt_is_checked_against_the_tills_own_record(
    service: ReturnsService, inventory: FakeInventory
) -> None:
    """A receipt is a claim: returns takes back what the recorded sale backs, and nothing else."""
    terminal = random_id("T")
    sold_at = datetime.now(UTC) - timedelta(days=3)

    def receipt(sale: str, *lines: tuple[str, str, int]) -> m.Purchase:
        purchased = (m.PurchasedLine(lid, sku, q, 1000, "apparel") for lid, sku, q in lines)
        return till_purchase(terminal, sale, *purchased, sold_at=sold_at)

    def returning(sale: str, purchase: m.Purchase) -> CreateReturn:
        return CreateReturn(
            request_id=random_id("r"),
            order_id=purchase.order_id,
            pos_purchase=purchase,
            lines=(m.RequestedLine("1", 1, m.Reason.CHANGED_MIND),),
            method=m.ReturnMethod.IN_STORE,
            receiving_location_id="STORE-A",
            channel="store",
            pos_sale=(terminal, sale),
        )

    honest = receipt("S-1", ("1", "SKU-A", 1))
    inventory.record_till_sale(terminal, "S-1", honest)
    with pytest.raises(NotFound, match=r"till sale S-never of terminal .* is not on record"):
        await service.create_return(returning("S-never", receipt("S-never", ("1", "SKU-A", 1))))
    # More units than the till sold, or a SKU it did not sell.
    inflated = receipt("S-1", ("1", "SKU-A", 3))
    with pytest.raises(FailedPrecondition, match="SKU-A: 3 on the receipt but 1 in the recorded sale"):
        await service.create_return(returning("S-1", inflated))
    with pytest.raises(FailedPrecondition, match="SKU-Z: 1 on the receipt but 0"):
        await service.create_return(returning("S-1", receipt("S-1", ("1", "SKU-Z", 1))))
    # Another store's sale, and a till return passed off as a sale.
    inventory.record_till_sale(terminal, "S-2", receipt("S-2", ("1", "SKU-A", 1)), location_id="STORE-A")
    with pytest.raises(FailedPrecondition, match="names store STORE-B but the sale was recorded at STORE-A"):
        await service.create_return(returning("S-2", receipt("S-2", ("1", "SKU-A", 1))))
    inventory.record_till_sale(terminal, "S-3", receipt("S-3", ("1", "SKU-A", 1)), is_return=True)
    with pytest.raises(FailedPrecondition, match="is a till return, not a sale"):
        await service.create_return(returning("S-3", receipt("S-3", ("1", "SKU-A", 1))))
    # A receipt dated after its record does not stretch the window: the record's time counts.
    window = service_rules_window_days()
    late = receipt("S-4", ("1", "SKU-A", 1))
    inventory.record_till_sale(
        terminal, "S-4", late, recorded_at=datetime.now(UTC) - timedelta(days=window + 1)
    )
    with pytest.raises(FailedPrecondition, match="return window"):
        await service.create_return(returning("S-4", late))

    view, _ = await service.create_return(returning("S-1", honest))
    assert view.ret.order_id == f"pos:{terminal}:S-1"


def service_rules_window_days() -> int:
    return load_rules().window_days("store", m.Reason.CHANGED_MIND)


async def pending_of(store: PgReturnsStore, return_id: str) -> list[tuple[str, int, float, bool, str]]:
    """(kind, attempts, seconds until the next attempt, parked, last error) of the return's tasks
    not done."""
    async with store.transaction() as tx:
        rows = await tx._conn.fetch(
            "SELECT kind, attempts, extract(epoch FROM next_attempt_at - now()) AS due_in, "
            "parked_at IS NOT NULL AS parked, last_error FROM inventory_tasks "
            "WHERE return_id = $1 AND done_at IS NULL ORDER BY created_at",
            return_id,
        )
    return [(r["kind"], r["attempts"], float(r["due_in"]), r["parked"], r["last_error"]) for r in rows]


async def make_due(store: PgReturnsStore, return_id: str) -> None:
    async with store.transaction() as tx:
        await tx._conn.execute(
            "UPDATE inventory_tasks SET next_attempt_at = now() WHERE return_id = $1", return_id
        )


async def test_an_effect_refused_for_good_is_parked_listed_and_applied_once_retried_after_the_fix(
    service: ReturnsService, store: PgReturnsStore, orders: FakeOrders, inventory: FakeInventory
) -> None:
    order_id = web_order(orders)
    inventory.unknown.add("DC-ORLEANS")  # the rules' DC is not (yet) known to inventory
    view, _ = await service.create_return(create(order_id, ("1", 1)))
    await service.receive_return(
        ReceiveReturn(view.ret.return_id, "", "STORE-A", (m.ReceivedLine("1", 1, m.Grade.RESELLABLE),))
    )
    [(kind, attempts, _, parked, error)] = await pending_of(store, view.ret.return_id)
    assert (kind, attempts, parked) == ("set_incoming", 1, True)
    assert error.startswith("NOT_FOUND: location DC-ORLEANS")

    # Not retried by the worker, however long it runs.
    await make_due(store, view.ret.return_id)
    await TaskWorker(store, inventory).run_once()
    assert [row[1] for row in await pending_of(store, view.ret.return_id)] == [1]
    listed = [p for p in await service.parked_tasks() if p.return_id == view.ret.return_id]
    assert [(p.task.kind, p.task.location_id, p.attempts) for p in listed] == [
        (m.TaskKind.SET_INCOMING, "DC-ORLEANS", 1)
    ]
    task_id = listed[0].task.task_id

    # Still refused: parked again, counted as one more attempt.
    state, reason = await service.retry_task(task_id)
    assert state is m.TaskState.PARKED and reason.startswith("NOT_FOUND: location DC-ORLEANS")
    inventory.unknown.clear()  # the location is created in inventory
    assert await service.retry_task(task_id) == (m.TaskState.DONE, "")
    assert await service.retry_task(task_id) == (m.TaskState.DONE, "")  # idempotent
    assert [t.location_id for t in inventory.of(m.TaskKind.SET_INCOMING)] == ["DC-ORLEANS"]
    assert await pending_of(store, view.ret.return_id) == []
    assert task_id not in {p.task.task_id for p in await service.parked_tasks()}
    with pytest.raises(NotFound):
        await service.retry_task(random_id("no-such-task"))


async def test_an_effect_failing_transiently_is_retried_with_growing_jittered_backoff(
    service: ReturnsService, store: PgReturnsStore, orders: FakeOrders, inventory: FakeInventory
) -> None:
    order_id = web_order(orders)
    inventory.carried.add(("STORE-A", "SKU-A"))
    view, _ = await service.create_return(create(order_id, ("1", 1)))
    inventory.down = True
    await service.receive_return(
        ReceiveReturn(view.ret.return_id, "", "STORE-A", (m.ReceivedLine("1", 1, m.Grade.RESELLABLE),))
    )
    [(_, attempts, due_in, parked, error)] = await pending_of(store, view.ret.return_id)
    assert (attempts, parked, error) == (1, False, "UNAVAILABLE: inventory down")
    assert 0.4 <= due_in <= 1.0  # first retry: between half of and 1 s
    for attempt, ceiling in ((2, 2.0), (3, 4.0)):
        await make_due(store, view.ret.return_id)
        await TaskWorker(store, inventory).run_once()
        [(_, attempts, due_in, parked, _)] = await pending_of(store, view.ret.return_id)
        assert (attempts, parked) == (attempt, False)
        assert ceiling / 2 - 0.1 <= due_in <= ceiling, (attempt, due_in)
    inventory.down = False
    await make_due(store, view.ret.return_id)
    assert await TaskWorker(store, inventory).run_once() == 1
    assert await pending_of(store, view.ret.return_id) == []


async def test_rules_naming_a_location_inventory_does_not_know_are_reported_at_start(
    service: ReturnsService, inventory: FakeInventory, caplog: pytest.LogCaptureFixture
) -> None:
    assert await service.check_rules_locations() == []
    del inventory.locations["DC-ORLEANS"]
    assert await service.check_rules_locations() == ["distribution_centre_id"]
    assert "distribution_centre_id 'DC-ORLEANS' is not a location inventory knows" in caplog.text


class FakeOutbox:
    def __init__(self) -> None:
        self.rows = {7: {"id": 7, "topic": "t", "key": "o-1", "parked_reason": "MessageSizeTooLargeError()"}}
        self.parked_ids = {7}

    async def parked(self, limit: int = 100) -> list[dict[str, object]]:
        return [self.rows[i] for i in sorted(self.parked_ids)][:limit]

    async def unpark(self, row_id: int) -> bool:
        self.parked_ids.discard(row_id)
        return row_id in self.rows


async def test_events_kafka_refused_are_listed_and_go_back_to_the_relay_on_retry(
    store: PgReturnsStore, orders: FakeOrders, inventory: FakeInventory
) -> None:
    outbox = FakeOutbox()
    service = ReturnsService(store, orders, inventory, load_rules(), outbox=outbox)
    assert [row["id"] for row in await service.parked_events()] == [7]
    assert await service.retry_task("outbox:7") == (m.TaskState.PENDING, "relayed on the next pass")
    assert await service.parked_events() == []
    del outbox.rows[7]  # relayed: gone from the outbox
    assert await service.retry_task("outbox:7") == (m.TaskState.DONE, "")
    with pytest.raises(NotFound):
        await service.retry_task("outbox:seven")
