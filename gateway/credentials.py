"""Who is calling: API keys mapped to principals, loaded once from a credentials file.

The file (YAML or JSON) lists one entry per channel, store, terminal, back-office user or
integration. Keys are stored as their SHA-256 hex digest (``key_sha256``), so the file can be
read by operators without leaking credentials; a plaintext ``key`` is accepted for local
development and tests. Pure: no gRPC here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from tutti.common.v1 import common_pb2

from runtime.settings import SettingsError

DEFAULT_RATE_PER_SECOND = 50.0
DEFAULT_BURST = 100


class Kind(StrEnum):
    CHANNEL = "channel"  # a sales channel: web shop, app, marketplace connector, call centre
    STORE = "store"  # a store app (picking, click & collect, fulfilment updates) for one location
    TERMINAL = "terminal"  # a POS terminal of one location
    ADMIN = "admin"  # back-office: rules, stock sync, locations; may call everything
    SERVICE = "service"  # a trusted integration (ERP, WMS): stock sync, fulfilment of any location


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    kind: Kind
    # Channel enum value (tutti.common.v1.Channel) for channel principals, else 0.
    channel: int = 0
    # The location a store app or terminal belongs to, else "".
    location_id: str = ""
    rate_per_second: float = DEFAULT_RATE_PER_SECOND
    burst: int = DEFAULT_BURST

    @property
    def channel_name(self) -> str:
        return common_pb2.Channel.Name(self.channel) if self.channel else ""

    def describe(self) -> str:
        if self.kind is Kind.CHANNEL:
            return f"{self.id} (channel {self.channel_name})"
        if self.kind in (Kind.STORE, Kind.TERMINAL):
            return f"{self.id} ({self.kind} of {self.location_id})"
        return f"{self.id} ({self.kind})"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_channel(raw: str) -> int:
    """'web', 'WEB' or 'CHANNEL_WEB' → the Channel enum value."""
    name = raw.strip().upper()
    if not name.startswith("CHANNEL_"):
        name = f"CHANNEL_{name}"
    try:
        value = common_pb2.Channel.Value(name)
    except ValueError:
        raise ValueError(f"unknown channel {raw!r}") from None
    if value == 0:
        raise ValueError("channel must not be CHANNEL_UNSPECIFIED")
    return value


class CredentialStore:
    """Looks an API key up by its SHA-256 digest."""

    def __init__(self, entries: Iterable[tuple[str, Principal]]) -> None:
        self._by_digest: dict[str, Principal] = {}
        for digest, principal in entries:
            if digest in self._by_digest:
                raise ValueError(
                    f"credential of {principal.id!r} duplicates the key of {self._by_digest[digest].id!r}"
                )
            self._by_digest[digest] = principal

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, key: str) -> Principal | None:
        return self._by_digest.get(hash_key(key))

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any], source: str = "credentials") -> CredentialStore:
        defaults = document.get("defaults") or {}
        entries = document.get("credentials")
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{source}: 'credentials' must be a non-empty list")
        parsed: list[tuple[str, Principal]] = []
        ids: set[str] = set()
        for index, entry in enumerate(entries):
            where = f"{source}: credentials[{index}]"
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where} must be a mapping")
            principal_id = str(entry.get("id") or "")
            if not principal_id:
                raise ValueError(f"{where}.id is required")
            if principal_id in ids:
                raise ValueError(f"{where}.id {principal_id!r} is used twice")
            ids.add(principal_id)
            try:
                kind = Kind(str(entry.get("kind", "")))
            except ValueError:
                raise ValueError(f"{where}.kind must be one of {', '.join(k.value for k in Kind)}") from None
            if "key_sha256" in entry:
                digest = str(entry["key_sha256"]).lower()
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise ValueError(f"{where}.key_sha256 must be 64 hex digits")
            elif entry.get("key"):
                digest = hash_key(str(entry["key"]))
            else:
                raise ValueError(f"{where} needs key_sha256 (or key, for development)")
            channel = 0
            if kind is Kind.CHANNEL:
                try:
                    channel = parse_channel(str(entry.get("channel", "")))
                except ValueError as exc:
                    raise ValueError(f"{where}.channel: {exc}") from None
            location_id = str(entry.get("location_id") or "")
            if kind in (Kind.STORE, Kind.TERMINAL) and not location_id:
                raise ValueError(f"{where}.location_id is required for a {kind}")
            rate = float(
                entry.get("rate_per_second", defaults.get("rate_per_second", DEFAULT_RATE_PER_SECOND))
            )
            burst = int(entry.get("burst", defaults.get("burst", DEFAULT_BURST)))
            if rate <= 0 or burst < 1:
                raise ValueError(f"{where}: rate_per_second must be > 0 and burst >= 1")
            parsed.append(
                (
                    digest,
                    Principal(principal_id, kind, channel, location_id, rate_per_second=rate, burst=burst),
                )
            )
        return cls(parsed)

    @classmethod
    def load(cls, path: Path, variable: str = "TUTTI_GATEWAY_CREDENTIALS") -> CredentialStore:
        """Read the file; any problem is a SettingsError naming the variable and the entry."""
        try:
            text = path.read_text()
        except OSError as exc:
            raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror}") from None
        try:
            document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            if not isinstance(document, Mapping):
                raise ValueError(f"{path}: expected a mapping at the top level")
            return cls.from_mapping(document, str(path))
        except (ValueError, yaml.YAMLError) as exc:
            raise SettingsError(f"{variable}: {exc}") from None
