"""Human output for `check-config`: counted nouns and the configuration with defaults filled in."""

from __future__ import annotations

import yaml
from pydantic import BaseModel


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`1 entry`, `3 entries`."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def effective_yaml(config: BaseModel) -> str:
    """The validated configuration as YAML, defaults included (paths only, no secrets in it)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=False)
