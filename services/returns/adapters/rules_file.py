"""Loads the return rules document (YAML) from disk into ``ReturnRules``."""

from __future__ import annotations

from pathlib import Path

import yaml

from runtime.settings import SettingsError
from services.returns.domain.rules import ReturnRules, RulesError

DEFAULT_RULES_FILE = Path(__file__).resolve().parent.parent / "rules" / "default.yaml"


def load_rules(
    path: Path | str = DEFAULT_RULES_FILE, variable: str = "TUTTI_RETURNS_RULES_FILE"
) -> ReturnRules:
    """Parse and validate; a bad file is a configuration error naming the file and the key."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{variable}: {path} is not valid YAML: {exc}") from None
    try:
        return ReturnRules.from_mapping(doc or {})
    except RulesError as exc:
        raise SettingsError(f"{variable}: {path}: {exc}") from None
