"""Discover the public services from the generated code and route each to its backend.

Every ``*_pb2`` module under ``tutti.<backend>.v1`` is imported (which also puts its descriptors
in the default pool, so reflection can describe them); each service found is routed to the
backend named by its package. A backend adding an RPC or a service needs no gateway change.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from gateway import scope
from gateway.policy import Rule, rule_for

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    path: str  # "/tutti.inventory.v1.InventoryService/GetAvailability", as on the wire
    backend: str  # "inventory"
    descriptor: MethodDescriptor
    request_type: type[Message]
    response_type: type[Message]
    rule: Rule

    @property
    def name(self) -> str:
        return self.path[1:]

    @property
    def client_streaming(self) -> bool:
        return bool(self.descriptor.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)

    @property
    def request_has_channel(self) -> bool:
        return scope.has_scoped_fields(self.descriptor.input_type)[0]


def discover_services(backends: Iterable[str]) -> dict[str, list[ServiceDescriptor]]:
    """backend name → services declared in its generated package (empty when it has none yet)."""
    found: dict[str, list[ServiceDescriptor]] = {}
    for backend in backends:
        services: list[ServiceDescriptor] = []
        try:
            package = importlib.import_module(f"tutti.{backend}.v1")
        except ModuleNotFoundError:
            found[backend] = services
            continue
        for module_info in pkgutil.iter_modules(package.__path__):
            if not module_info.name.endswith("_pb2"):
                continue
            module = importlib.import_module(f"{package.__name__}.{module_info.name}")
            services.extend(module.DESCRIPTOR.services_by_name.values())
        found[backend] = sorted(services, key=lambda s: s.full_name)
    return found


def build_routes(
    services: dict[str, list[ServiceDescriptor]], policies: dict[str, Rule] | None = None
) -> dict[str, Route]:
    routes: dict[str, Route] = {}
    for backend, descriptors in services.items():
        for service in descriptors:
            for method in service.methods:
                name = f"{service.full_name}/{method.name}"
                rule = rule_for(name, policies)
                missing = [p for p in rule.required if not scope.field_exists(method.input_type, p)]
                if missing:
                    log.warning(
                        "policy of %s requires fields its request lacks: %s", name, ", ".join(missing)
                    )
                    rule = dataclasses.replace(
                        rule, required=tuple(p for p in rule.required if p not in missing)
                    )
                routes[f"/{name}"] = Route(
                    path=f"/{name}",
                    backend=backend,
                    descriptor=method,
                    request_type=message_factory.GetMessageClass(method.input_type),
                    response_type=message_factory.GetMessageClass(method.output_type),
                    rule=rule,
                )
    return routes
