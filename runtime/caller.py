"""Who called, as the gateway tells a backend: the ``tutti-caller-*`` metadata it sets on every
call it forwards (a caller's own ``tutti-caller-*`` keys are dropped by the gateway). It is
believed only from a peer whose internal mTLS certificate says ``gateway`` (``Caller.of``); from
any other peer (another service, a forger) the headers are dropped. A call that did not come
through the gateway has then an empty ``Caller.kind``, and a backend treats it as trusted, like
the gateway's ``service`` principals: the peer got in only because runtime.peers lets its
certificate call that method."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from runtime import peers, tls

PREFIX = "tutti-caller-"


@dataclass(frozen=True, slots=True)
class Caller:
    id: str = ""
    # "channel", "store", "terminal", "service", "admin"; "" when not called through the gateway.
    kind: str = ""
    # The channel principal's channel as the gateway names it ("CHANNEL_WEB"), else "".
    channel: str = ""
    # The store's or terminal's location, else "".
    location_id: str = ""

    @classmethod
    def of(cls, context: grpc.aio.ServicerContext) -> Caller:
        """The caller the gateway vouches for, when the authenticated peer is the gateway;
        else nobody (the ``tutti-caller-*`` headers of any other peer are ignored)."""
        if tls.peer_identity(context) != peers.GATEWAY:
            return cls()
        return cls.from_metadata(context.invocation_metadata())

    @classmethod
    def from_metadata(cls, metadata: Iterable[Any] | None) -> Caller:
        found: dict[str, str] = {}
        for item in metadata or ():
            key, value = item[0], item[1]
            if isinstance(key, str) and key.startswith(PREFIX):
                found[key[len(PREFIX) :]] = value if isinstance(value, str) else value.decode()
        return cls(
            id=found.get("id", ""),
            kind=found.get("kind", ""),
            channel=found.get("channel", ""),
            location_id=found.get("location-id", ""),
        )
