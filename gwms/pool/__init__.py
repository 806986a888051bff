"""The pool: where ads are published (collector) and jobs wait (schedd), behind one factory.

`open_collector(config)` / `open_schedd(config)` pick the backend: `embedded` (our
SQLite + HTTP stand-in, `gwms collector serve`) or `htcondor` (real daemons).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from gwms.errors import ConfigError
from gwms.pool.base import (
    ANY_AD_TYPE,
    DEFAULT_AD_LIFETIME,
    Collector,
    ConflictError,
    JobStatus,
    NotFoundError,
    PoolError,
    Schedd,
)

__all__ = [
    "ANY_AD_TYPE",
    "DEFAULT_AD_LIFETIME",
    "Collector",
    "ConflictError",
    "JobStatus",
    "NotFoundError",
    "PoolConfig",
    "PoolError",
    "Schedd",
    "open_collector",
    "open_schedd",
    "pool_config",
]

BACKENDS = ("embedded", "htcondor")


@dataclass(frozen=True)
class PoolConfig:
    """Where the pool is: `url` (+ token/CA files) for embedded, `address` for htcondor."""

    backend: str = "embedded"
    url: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    address: str | None = None
    schedd_name: str | None = None
    timeout: float = 30.0


def pool_config(config: PoolConfig | Mapping[str, Any], where: str = "pool") -> PoolConfig:
    """Validate a mapping (from YAML) into a PoolConfig, naming the bad field."""
    if isinstance(config, PoolConfig):
        result = config
    else:
        known = {f.name for f in fields(PoolConfig)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(
                f"{where}.{unknown[0]}: unknown field; expected one of {sorted(known)}."
            )
        result = PoolConfig(**dict(config))
    if result.backend not in BACKENDS:
        raise ConfigError(f"{where}.backend: {result.backend!r} is not one of {list(BACKENDS)}.")
    if result.backend == "embedded" and not result.url:
        raise ConfigError(
            f"{where}.url: the embedded backend needs the collector URL (http://host:port)."
        )
    return result


def open_collector(config: PoolConfig | Mapping[str, Any]) -> Collector:
    """A Collector for `config` (embedded: HTTP client; htcondor: htcondor2.Collector)."""
    cfg = pool_config(config)
    if cfg.backend == "htcondor":
        from gwms.pool.htcondor_backend import HTCondorCollector

        return HTCondorCollector(cfg.address)
    from gwms.pool.embedded.client import EmbeddedCollector

    assert cfg.url is not None
    return EmbeddedCollector(cfg.url, cfg.token_file, cfg.ca_file, cfg.timeout)


def open_schedd(config: PoolConfig | Mapping[str, Any]) -> Schedd:
    """A Schedd for `config` (embedded: HTTP client; htcondor: htcondor2.Schedd)."""
    cfg = pool_config(config)
    if cfg.backend == "htcondor":
        from gwms.pool.htcondor_backend import HTCondorSchedd

        return HTCondorSchedd(cfg.address, cfg.schedd_name)
    from gwms.pool.embedded.client import EmbeddedSchedd

    assert cfg.url is not None
    return EmbeddedSchedd(cfg.url, cfg.token_file, cfg.ca_file, cfg.timeout)
