"""The demo retailer, generated deterministically: a distribution centre near Orléans, twenty
stores in French cities (real coordinates, opening hours, daily capacity), a dropship supplier,
a few thousand SKUs, stock everywhere, channel policies.

`python -m tools.demo load` puts it into a running inventory service; `make run` does that. It
calls inventory's internal mTLS port as ``operator`` (the certificate tools/certs.py issues in
``$TUTTI_INTERNAL_TLS_DIR``, or ``TUTTI_TLS_CERT``/``TUTTI_TLS_KEY``).
Load tests and benchmarks import ``retailer()`` to pick SKUs and locations that exist.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import grpc
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from runtime.grpc_server import client_channel
from runtime.peers import OPERATOR
from runtime.settings import InternalTls

SEED = 20261125
DC_ID = "DC-ORLEANS"
SUPPLIER_ID = "SUP-ROUBAIX"

# (id, city, latitude, longitude, postal code, daily capacity)
STORES: tuple[tuple[str, str, float, float, str, int], ...] = (
    ("STORE-PARIS-RIVOLI", "Paris", 48.8606, 2.3376, "75001", 400),
    ("STORE-PARIS-BERCY", "Paris", 48.8322, 2.3857, "75012", 250),
    ("STORE-MARSEILLE", "Marseille", 43.2965, 5.3698, "13001", 220),
    ("STORE-LYON", "Lyon", 45.7640, 4.8357, "69002", 240),
    ("STORE-TOULOUSE", "Toulouse", 43.6047, 1.4442, "31000", 180),
    ("STORE-NICE", "Nice", 43.7102, 7.2620, "06000", 150),
    ("STORE-NANTES", "Nantes", 47.2184, -1.5536, "44000", 160),
    ("STORE-STRASBOURG", "Strasbourg", 48.5734, 7.7521, "67000", 150),
    ("STORE-MONTPELLIER", "Montpellier", 43.6108, 3.8767, "34000", 140),
    ("STORE-BORDEAUX", "Bordeaux", 44.8378, -0.5792, "33000", 170),
    ("STORE-LILLE", "Lille", 50.6292, 3.0573, "59000", 170),
    ("STORE-RENNES", "Rennes", 48.1173, -1.6778, "35000", 130),
    ("STORE-REIMS", "Reims", 49.2583, 4.0317, "51100", 100),
    ("STORE-LE-HAVRE", "Le Havre", 49.4944, 0.1079, "76600", 90),
    ("STORE-SAINT-ETIENNE", "Saint-Étienne", 45.4397, 4.3872, "42000", 90),
    ("STORE-TOULON", "Toulon", 43.1242, 5.9280, "83000", 90),
    ("STORE-GRENOBLE", "Grenoble", 45.1885, 5.7245, "38000", 120),
    ("STORE-DIJON", "Dijon", 47.3220, 5.0415, "21000", 100),
    ("STORE-ANGERS", "Angers", 47.4784, -0.5632, "49000", 90),
    ("STORE-CLERMONT", "Clermont-Ferrand", 45.7772, 3.0870, "63000", 90),
)

# Small stores that prepare no web orders: kept out of the marketplace view, no ship-from-store.
SMALL_STORES = frozenset({"STORE-LE-HAVRE", "STORE-TOULON", "STORE-ANGERS"})
# Stores in the metropolitan areas that run two-hour express deliveries.
EXPRESS_STORES = frozenset({"STORE-PARIS-RIVOLI", "STORE-PARIS-BERCY", "STORE-LYON", "STORE-MARSEILLE"})

# category → (families, sizes, price range in cents, returnable)
CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[int, int], bool]] = {
    "tshirts": (
        ("Tee Essentiel", "Tee Marinière", "Tee Oversize", "Polo Piqué"),
        ("XS", "S", "M", "L", "XL"),
        (990, 2990),
        True,
    ),
    "jeans": (("Jean Droit", "Jean Slim", "Jean Large"), ("36", "38", "40", "42", "44"), (3990, 8990), True),
    "shoes": (
        ("Basket Cuir", "Bottine", "Sandale", "Running"),
        ("37", "38", "39", "40", "41", "42", "43", "44"),
        (4990, 12990),
        True,
    ),
    "jackets": (("Parka", "Veste Denim", "Doudoune"), ("S", "M", "L", "XL"), (6990, 19990), True),
    "home": (("Plaid Laine", "Coussin Lin", "Vase Grès", "Lampe Laiton"), ("U",), (1990, 8990), True),
    "beauty": (("Crème Visage", "Parfum 50ml", "Huile Sèche"), ("U",), (1490, 6990), False),
    "underwear": (("Boxer Coton", "Chaussettes x3"), ("S", "M", "L"), (990, 2490), False),
}
COLOURS = ("noir", "blanc", "bleu", "rouge", "vert", "écru", "gris", "kaki")
COLLECTIONS = ("Essentiels", "Automne 26", "Hiver 26", "Printemps 27", "Capsule")
WEEK = (1, 2, 3, 4, 5, 6)  # Monday..Saturday; stores close on Sunday


@dataclass(frozen=True, slots=True)
class DemoSku:
    sku: str
    name: str
    category: str
    returnable: bool
    price_cents: int


@dataclass(frozen=True, slots=True)
class DemoRetailer:
    locations: tuple[inventory_pb2.Location, ...]
    skus: tuple[DemoSku, ...]
    stock: tuple[tuple[str, str, int], ...]  # sku, location, on hand
    safety: tuple[tuple[str, str, int], ...]  # sku, location, safety stock
    policies: tuple[inventory_pb2.ChannelPolicy, ...]

    @property
    def store_ids(self) -> list[str]:
        return [loc.location_id for loc in self.locations if loc.type == common_pb2.LOCATION_TYPE_STORE]


def _location(
    location_id: str, name: str, kind: int, lat: float, lon: float, city: str, postal: str, capacity: int,
    capabilities: tuple[int, ...], opening: bool,
) -> inventory_pb2.Location:
    hours = (
        [inventory_pb2.OpeningHours(weekday=d, opens="10:00", closes="19:30") for d in WEEK]
        if opening
        else []
    )
    return inventory_pb2.Location(
        location_id=location_id,
        name=name,
        type=kind,
        point=common_pb2.GeoPoint(latitude=lat, longitude=lon),
        capabilities=list(capabilities),
        opening_hours=hours,
        daily_capacity=capacity,
        active=True,
        address=common_pb2.PostalAddress(
            line1="1 rue du Commerce", postal_code=postal, city=city, country="FR",
            point=common_pb2.GeoPoint(latitude=lat, longitude=lon),
        ),
        time_zone="Europe/Paris",
    )


@cache
def retailer(sku_count: int = 3000, seed: int = SEED) -> DemoRetailer:
    rng = random.Random(seed)
    cap = inventory_pb2
    locations = [
        _location(DC_ID, "Entrepôt Orléans-Saran", common_pb2.LOCATION_TYPE_DISTRIBUTION_CENTRE,
                  47.9500, 1.8800, "Saran", "45770", 5000, (cap.FULFILMENT_CAPABILITY_SHIP,),
                  opening=False),
        _location(SUPPLIER_ID, "Maison du Linge (dropship)", common_pb2.LOCATION_TYPE_DROPSHIP_SUPPLIER,
                  50.6942, 3.1746, "Roubaix", "59100", 800, (cap.FULFILMENT_CAPABILITY_SHIP,),
                  opening=False),
    ]
    for store_id, city, lat, lon, postal, capacity in STORES:
        capabilities = [cap.FULFILMENT_CAPABILITY_CLICK_AND_COLLECT]
        if store_id not in SMALL_STORES:
            capabilities.append(cap.FULFILMENT_CAPABILITY_SHIP_FROM_STORE)
        if store_id in EXPRESS_STORES:
            capabilities.append(cap.FULFILMENT_CAPABILITY_EXPRESS)
        locations.append(_location(store_id, f"Tutti {city}", common_pb2.LOCATION_TYPE_STORE, lat, lon, city,
                                   postal, capacity, tuple(capabilities), opening=True))

    skus: list[DemoSku] = []
    variants = [
        (category, f"{family} {collection}", size, colour)
        for category, (families, sizes, _, _) in CATEGORIES.items()
        for family in families
        for collection in COLLECTIONS
        for size in sizes
        for colour in COLOURS
    ]
    rng.shuffle(variants)
    for index, (category, family, size, colour) in enumerate(sorted(variants[:sku_count])):
        _, _, (low, high), returnable = CATEGORIES[category]
        skus.append(DemoSku(
            sku=f"SKU-{index + 1:05d}",
            name=f"{family} {colour} {size}".strip(),
            category=category,
            returnable=returnable,
            price_cents=rng.randrange(low, high, 100) + 90,
        ))

    stock: list[tuple[str, str, int]] = []
    safety: list[tuple[str, str, int]] = []
    for sku in skus:
        stock.append((sku.sku, DC_ID, rng.choice((0, 20, 40, 80, 150, 300))))
        if sku.category == "home":
            stock.append((sku.sku, SUPPLIER_ID, rng.choice((100, 250, 500))))
        for store_id, *_ in STORES:
            if rng.random() < 0.4:
                units = rng.choice((0, 1, 2, 3, 5, 8, 12))
                stock.append((sku.sku, store_id, units))
                if units >= 3:
                    # Stores keep one unit for walk-in customers (store-flow priority).
                    safety.append((sku.sku, store_id, 1))

    policies = (
        inventory_pb2.ChannelPolicy(channel=common_pb2.CHANNEL_WEB, buffer_units=0),
        inventory_pb2.ChannelPolicy(channel=common_pb2.CHANNEL_APP, buffer_units=0),
        inventory_pb2.ChannelPolicy(
            channel=common_pb2.CHANNEL_MARKETPLACE, buffer_units=2, excluded_location_ids=sorted(SMALL_STORES)
        ),
        inventory_pb2.ChannelPolicy(channel=common_pb2.CHANNEL_STORE, buffer_units=0),
        inventory_pb2.ChannelPolicy(channel=common_pb2.CHANNEL_CALL_CENTRE, buffer_units=0),
    )
    return DemoRetailer(tuple(locations), tuple(skus), tuple(stock), tuple(safety), policies)


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


async def load(
    address: str,
    sku_count: int,
    metadata: tuple[tuple[str, str], ...] = (),
    internal_tls: InternalTls | None = None,
) -> None:
    """Idempotent: snapshots carry fixed ids and an as-of, so loading twice changes nothing."""
    demo = retailer(sku_count)
    tls = internal_tls or InternalTls.from_env(OPERATOR)
    async with client_channel(address, internal_tls=tls) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        await stub.UpsertLocations(inventory_pb2.UpsertLocationsRequest(locations=demo.locations),
                                   metadata=metadata, timeout=30)
        for part in _chunks(list(demo.skus), 1000):
            await stub.RegisterSkus(inventory_pb2.RegisterSkusRequest(skus=[
                inventory_pb2.Sku(sku=s.sku, name=s.name, category=s.category, returnable=s.returnable)
                for s in part
            ]), metadata=metadata, timeout=30)
        as_of = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
        for number, part in enumerate(_chunks(list(demo.stock), 5000)):
            request = inventory_pb2.ApplyStockSnapshotRequest(
                snapshot_id=f"demo-initial-{sku_count}-{number}", source="DEMO",
                lines=[inventory_pb2.SnapshotLine(sku=s, location_id=loc, on_hand=q) for s, loc, q in part],
            )
            request.as_of.FromDatetime(as_of)
            await stub.ApplyStockSnapshot(request, metadata=metadata, timeout=60)
        for part in _chunks(list(demo.safety), 5000):
            await stub.SetSafetyStock(inventory_pb2.SetSafetyStockRequest(lines=[
                inventory_pb2.SafetyStockLine(sku=s, location_id=loc, safety_stock=q) for s, loc, q in part
            ]), metadata=metadata, timeout=60)
        for policy in demo.policies:
            await stub.SetChannelPolicy(inventory_pb2.SetChannelPolicyRequest(policy=policy),
                                        metadata=metadata, timeout=30)
    print(f"demo retailer loaded: {len(demo.locations)} locations, {len(demo.skus)} SKUs, "
          f"{len(demo.stock)} stock lines")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools.demo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    load_cmd = sub.add_parser("load", help="load the demo retailer into a running inventory service")
    load_cmd.add_argument("--inventory", default="127.0.0.1:50052", help="inventory service address")
    load_cmd.add_argument("--skus", type=int, default=3000)
    show = sub.add_parser("show", help="print a summary of the generated data")
    show.add_argument("--skus", type=int, default=3000)
    args = parser.parse_args(argv)
    if args.command == "show":
        demo = retailer(args.skus)
        for loc in demo.locations:
            print(f"{loc.location_id:<22} {loc.name:<30} capacity {loc.daily_capacity}")
        print(f"{len(demo.skus)} SKUs, {len(demo.stock)} stock lines, {len(demo.safety)} safety lines")
        return 0
    try:
        asyncio.run(load(args.inventory, args.skus))
    except grpc.aio.AioRpcError as exc:
        print(f"tools.demo: loading failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
