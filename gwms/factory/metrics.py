"""Prometheus metrics of the factory, in a registry of their own (served at /metrics).

One `FactoryMetrics` per factory process: the daemon updates it through the small helper
methods below each cycle, and the web service counts uploads into it and renders it.
A dedicated registry keeps process-global collectors (and other instances in tests) out.
Label values come from configuration or authenticated requests only, never from raw URLs,
so a caller cannot blow up the number of series.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Reasons an upload is refused; a fixed set so the label stays bounded.
REJECT_REASONS = (
    "bad_name",
    "unauthorized",
    "forbidden",
    "too_large",
    "bad_body",
    "internal",
)


class FactoryMetrics:
    """The factory's metric families and the helpers that update them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.entries = Gauge(
            "gwms_factory_entries", "Configured entries, by enabled flag", ["enabled"], registry=r
        )
        self.glideins = Gauge(
            "gwms_factory_glideins",
            "Glideins (VMs) the factory tracks, by entry and state",
            ["entry", "state"],
            registry=r,
        )
        self.cloud_calls = Counter(
            "gwms_factory_cloud_calls",
            "Cloud API calls, by cloud, API and outcome (ok, throttled, error)",
            ["cloud", "api", "outcome"],
            registry=r,
        )
        self.errors = Counter(
            "gwms_factory_errors", "Errors the factory met, by kind", ["kind"], registry=r
        )
        self.uploads_accepted = Counter(
            "gwms_factory_uploads_accepted",
            "Uploads stored, by entry and kind (log, status)",
            ["entry", "kind"],
            registry=r,
        )
        self.uploads_rejected = Counter(
            "gwms_factory_uploads_rejected",
            "Uploads refused, by reason",
            ["reason"],
            registry=r,
        )
        self.upload_bytes = Counter(
            "gwms_factory_upload_bytes",
            "Bytes of accepted uploads as received on the wire, by entry",
            ["entry"],
            registry=r,
        )
        self.files_served = Counter(
            "gwms_factory_web_files_served",
            "Pilot files served (manifest names only), by name",
            ["name"],
            registry=r,
        )
        for reason in REJECT_REASONS:
            self.uploads_rejected.labels(reason)  # export zeros, so rate() works from the start

    def set_entries(self, enabled: int, disabled: int) -> None:
        """Record how many entries are configured (call after each configuration load)."""
        self.entries.labels("true").set(enabled)
        self.entries.labels("false").set(disabled)

    def set_glideins(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Replace the glidein gauge with this cycle's counts keyed by (entry, state).

        Series absent from `counts` are dropped, so a drained entry does not linger.
        """
        self.glideins.clear()
        for (entry, state), count in counts.items():
            self.glideins.labels(entry, state).set(count)

    def cloud_call(self, cloud: str, api: str, outcome: str) -> None:
        """Count one cloud API call (outcome: ok, throttled or error)."""
        self.cloud_calls.labels(cloud, api, outcome).inc()

    def error(self, kind: str) -> None:
        """Count one error of `kind` (a fixed identifier such as web_file_changed)."""
        self.errors.labels(kind).inc()

    def upload_accepted(self, entry: str, kind: str, wire_bytes: int) -> None:
        """Count an accepted log or status upload of `wire_bytes` bytes."""
        self.uploads_accepted.labels(entry, kind).inc()
        self.upload_bytes.labels(entry).inc(wire_bytes)

    def upload_rejected(self, reason: str) -> None:
        """Count a refused upload; `reason` is one of REJECT_REASONS."""
        if reason not in REJECT_REASONS:
            raise ValueError(f"unknown upload reject reason {reason!r}")
        self.uploads_rejected.labels(reason).inc()

    def file_served(self, name: str) -> None:
        """Count a pilot file download (`name` is a manifest entry)."""
        self.files_served.labels(name).inc()

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "REJECT_REASONS", "FactoryMetrics"]
