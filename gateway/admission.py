"""Admission control: a bounded number of unary calls in flight per backend and per principal.

A burst larger than a backend can serve at once is answered at the edge, before any work
starts, with RESOURCE_EXHAUSTED and a retry hint — rather than queued until deadlines expire
or passed on until a pool deep inside a service runs dry. Like the rate limiter, the counts
live in each gateway process: with N replicas a backend sees up to N times the bound. Pure:
no gRPC here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call was not admitted: ``scope`` is "backend" or "principal"."""

    scope: str
    limit: int


class Admission:
    """Counts calls in flight; ``enter`` either admits (None) or says which bound is reached."""

    def __init__(self, per_backend: int, per_principal: int) -> None:
        self.per_backend = per_backend
        self.per_principal = per_principal
        self._backends: dict[str, int] = {}
        self._principals: dict[str, int] = {}

    def enter(self, backend: str, principal: str) -> Refusal | None:
        in_backend = self._backends.get(backend, 0)
        if in_backend >= self.per_backend:
            return Refusal("backend", self.per_backend)
        in_principal = self._principals.get(principal, 0)
        if in_principal >= self.per_principal:
            return Refusal("principal", self.per_principal)
        self._backends[backend] = in_backend + 1
        self._principals[principal] = in_principal + 1
        return None

    def leave(self, backend: str, principal: str) -> None:
        """Once per admitted call, when it ends (however it ends)."""
        left = self._backends[backend] - 1
        if left:
            self._backends[backend] = left
        else:
            del self._backends[backend]
        left = self._principals[principal] - 1
        if left:
            self._principals[principal] = left
        else:
            del self._principals[principal]

    def in_flight(self, backend: str) -> int:
        return self._backends.get(backend, 0)
