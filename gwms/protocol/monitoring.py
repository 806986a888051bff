"""Monitoring ads, both ways: what the factory did with a request, and what the frontend saw.

- ``glidefactoryclient`` (factory -> frontend), one per entry x client: glideins by state,
  the request the factory saw, what it is aiming for after its limits, and its last error.
- ``glideresource`` (frontend, for operators), one per entry x group: matching jobs, the
  request made and why it was curbed.

Both are named ``entry@factory@frontend.group``, like the request ad they describe.
"""

from __future__ import annotations

import classad2
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gwms.protocol.wire import (
    AUTHENTICATED_IDENTITY,
    AdKind,
    AdReader,
    Count,
    Line,
    Name,
    Timestamp,
    ad_name,
    client_name,
    new_ad,
    put,
)

_Frozen = ConfigDict(frozen=True, extra="forbid")

# -- glidefactoryclient -------------------------------------------------------------------------

FC_ATTRS = {
    "factory": "ReqFactoryName",
    "entry": "ReqEntryName",
    "frontend": "ReqFrontendName",
    "group": "ReqGroupName",
    "idle": "GlideinMonitorStatusIdle",
    "running": "GlideinMonitorStatusRunning",
    "retiring": "GlideinMonitorStatusRetiring",
    "zombie": "GlideinMonitorStatusZombie",
    "requested_idle": "GlideinMonitorRequestedIdle",
    "requested_max_running": "GlideinMonitorRequestedMaxGlideins",
    "request_issued_at": "GlideinMonitorRequestIssuedAt",
    "effective_idle": "GlideinMonitorEffectiveIdle",
    "effective_max_running": "GlideinMonitorEffectiveMaxGlideins",
    "limits_applied": "GlideinMonitorLimitsApplied",
    "last_error": "GlideinMonitorLastError",
    "last_error_at": "GlideinMonitorLastErrorTime",
    "updated_at": "GlideinMonitorUpdatedAt",
}
FC_CLIENT_NAME = "ReqClientName"


class FactoryClientAd(BaseModel):
    """The factory's view of one client on one entry (glideinWMS ``glidefactoryclient``)."""

    model_config = _Frozen

    factory: Name
    entry: Name
    frontend: Name
    group: Name
    idle: Count = 0  # launched, pilot not yet running jobs
    running: Count = 0
    retiring: Count = 0  # past the retire time or asked to go, still alive
    zombie: Count = 0  # refused to terminate: never counted as capacity
    requested_idle: Count = 0  # what the frontend's request asked for
    requested_max_running: Count = 0
    request_issued_at: Timestamp | None = None  # ReqIssuedAt of the request it saw
    effective_idle: Count = 0  # what the factory aims for after its limits
    effective_max_running: Count = 0
    limits_applied: tuple[Line, ...] = ()  # names of the limits that cut the request
    last_error: Line | None = None
    last_error_at: Timestamp | None = None
    updated_at: Timestamp
    authenticated_identity: str | None = None

    @property
    def client_name(self) -> str:
        return client_name(self.frontend, self.group)

    @property
    def name(self) -> str:
        return ad_name(self.entry, self.factory, self.client_name)

    @property
    def total(self) -> int:
        return self.idle + self.running + self.retiring + self.zombie

    @model_validator(mode="after")
    def _error_and_time_together(self) -> FactoryClientAd:
        if (self.last_error is None) != (self.last_error_at is None):
            raise ValueError("the last error and its time must be given together")
        return self


def one_line(text: str, limit: int = 1000) -> str:
    """An error message fit for an ad: one line, control characters gone, bounded length."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def build_factory_client_ad(monitor: FactoryClientAd) -> classad2.ClassAd:
    """The ``glidefactoryclient`` ClassAd; absent optional values are left out."""
    ad = new_ad(AdKind.FACTORY_CLIENT, monitor.name)
    put(ad, FC_CLIENT_NAME, monitor.client_name)
    for field, attr in FC_ATTRS.items():
        put(ad, attr, getattr(monitor, field))
    return ad


def parse_factory_client_ad(ad: classad2.ClassAd) -> FactoryClientAd | None:
    """The factory's report on one client; None for a newer protocol version."""
    reader = AdReader.open(ad, AdKind.FACTORY_CLIENT)
    if reader is None:
        return None
    fields: dict[str, object] = {}
    for field, attr in FC_ATTRS.items():
        if field in ("factory", "entry", "frontend", "group"):
            fields[field] = reader.string(attr)
        elif field == "limits_applied":
            fields[field] = tuple(reader.strings(attr))  # type: ignore[arg-type]
        elif field == "last_error":
            fields[field] = reader.string(attr, optional=True)
        elif field in ("request_issued_at", "last_error_at"):
            fields[field] = reader.time(attr, optional=True)
        elif field == "updated_at":
            fields[field] = reader.time(attr)
        else:
            fields[field] = reader.integer(attr)
    fields["authenticated_identity"] = reader.string(AUTHENTICATED_IDENTITY, optional=True)
    monitor: FactoryClientAd = reader.model(
        FactoryClientAd, fields, FC_ATTRS, whole=FC_ATTRS["last_error"]
    )
    _check_names(reader, monitor.name, monitor.client_name, FC_CLIENT_NAME)
    return monitor


# -- glideresource ------------------------------------------------------------------------------

RES_ATTRS = {
    "factory": "FactoryName",
    "entry": "EntryName",
    "frontend": "GlideFrontendName",
    "group": "GlideGroupName",
    "matching_idle": "GlideClientMonitorJobsIdleMatching",
    "effective_idle": "GlideClientMonitorJobsIdleEffective",
    "matching_running": "GlideClientMonitorJobsRunning",
    "running_here": "GlideClientMonitorJobsRunningHere",
    "requested_idle": "GlideClientMonitorGlideinsRequestIdle",
    "requested_max_running": "GlideClientMonitorGlideinsRequestMaxRun",
    "curb_reasons": "GlideClientCurbReasons",
    "updated_at": "GlideClientUpdatedAt",
}
RES_FACTORY_REF = "GlideFactoryName"  # glideinWMS: the entry ad's Name
RES_CLIENT_NAME = "GlideClientName"


class ResourceAd(BaseModel):
    """The frontend's view of one entry for one group (glideinWMS ``glideresource``)."""

    model_config = _Frozen

    factory: Name
    entry: Name
    frontend: Name
    group: Name
    matching_idle: Count = 0  # idle jobs this entry could run
    effective_idle: float = Field(0.0, ge=0)  # each job counted 1/k over the k entries it matches
    matching_running: Count = 0
    running_here: Count = 0  # running on glideins of this entry
    requested_idle: Count = 0
    requested_max_running: Count = 0
    curb_reasons: tuple[Line, ...] = ()  # why the request is below what the jobs need
    updated_at: Timestamp
    authenticated_identity: str | None = None

    @property
    def client_name(self) -> str:
        return client_name(self.frontend, self.group)

    @property
    def name(self) -> str:
        return ad_name(self.entry, self.factory, self.client_name)


def build_resource_ad(resource: ResourceAd) -> classad2.ClassAd:
    """The ``glideresource`` ClassAd."""
    ad = new_ad(AdKind.RESOURCE, resource.name)
    put(ad, RES_FACTORY_REF, ad_name(resource.entry, resource.factory))
    put(ad, RES_CLIENT_NAME, resource.client_name)
    for field, attr in RES_ATTRS.items():
        put(ad, attr, getattr(resource, field))
    return ad


def parse_resource_ad(ad: classad2.ClassAd) -> ResourceAd | None:
    """The frontend's report on one entry; None for a newer protocol version."""
    reader = AdReader.open(ad, AdKind.RESOURCE)
    if reader is None:
        return None
    fields: dict[str, object] = {}
    for field, attr in RES_ATTRS.items():
        if field in ("factory", "entry", "frontend", "group"):
            fields[field] = reader.string(attr)
        elif field == "curb_reasons":
            fields[field] = tuple(reader.strings(attr))  # type: ignore[arg-type]
        elif field == "effective_idle":
            fields[field] = reader.number(attr)
        elif field == "updated_at":
            fields[field] = reader.time(attr)
        else:
            fields[field] = reader.integer(attr)
    fields["authenticated_identity"] = reader.string(AUTHENTICATED_IDENTITY, optional=True)
    resource: ResourceAd = reader.model(ResourceAd, fields, RES_ATTRS)
    _check_names(reader, resource.name, resource.client_name, RES_CLIENT_NAME)
    factory_ref = reader.string(RES_FACTORY_REF)
    if factory_ref != ad_name(resource.entry, resource.factory):
        expected = ad_name(resource.entry, resource.factory)
        raise reader.error(RES_FACTORY_REF, f"is {factory_ref!r}, expected {expected!r}")
    return resource


def _check_names(reader: AdReader, name: str, client: str, client_attr: str) -> None:
    if reader.name != name:
        raise reader.error("Name", f"is {reader.name!r}, expected {name!r}")
    found = reader.string(client_attr)
    if found != client:
        raise reader.error(client_attr, f"is {found!r}, expected {client!r}")
