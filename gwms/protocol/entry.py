"""The entry ad (``glidefactory``): what one factory entry offers, and the key to seal requests to.

Frontends match jobs against it, so everything a match reads is a typed ClassAd value:
numbers are numbers, lists are lists, and the entry's start expression is an expression
(``GLIDEIN_Start``), evaluated like a startd's START with the job as TARGET.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import classad2
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gwms.credentials.sealed import SealError, algorithm_of, key_id, load_public_key
from gwms.protocol.wire import (
    COLLECTOR_ATTRS,
    AdKind,
    AdReader,
    AttrValue,
    Count,
    KeyId,
    Line,
    Name,
    Seconds,
    ad_name,
    check_attr_value,
    known_attrs,
    new_ad,
    normalise_expr,
    put,
    put_expr,
)

FACTORY_NAME = "FactoryName"
ENTRY_NAME = "EntryName"
TRUST_DOMAIN = "GLIDEIN_TrustDomain"
AUTH_METHODS = "GLIDEIN_SupportedAuthenticationMethod"
IMAGE_ID = "GLIDEIN_ImageId"
INSTANCE_TYPES = "GLIDEIN_InstanceTypes"
MAX_RUNNING = "GlideinConfigPerEntryMaxGlideins"
MAX_IDLE = "GlideinConfigPerEntryMaxIdle"
MAX_PER_FRONTEND = "GlideinConfigPerFrontendMaxGlideins"
MAX_LAUNCHES = "GlideinConfigPerCycleMaxLaunches"
MAX_WALLTIME = "GLIDEIN_Max_Walltime"
RETIRE_TIME = "GLIDEIN_Retire_Time"
MAX_IDLE_TIME = "GLIDEIN_Max_Idle"
START = "GLIDEIN_Start"
IN_DOWNTIME = "GLIDEIN_In_Downtime"
PRIVILEGED_OVERLAYS = "GlideinAllowPrivilegedOverlays"
PUB_KEY_ID = "PubKeyID"
PUB_KEY_TYPE = "PubKeyType"
PUB_KEY_VALUE = "PubKeyValue"

_ATTRS = {
    "factory": FACTORY_NAME,
    "entry": ENTRY_NAME,
    "trust_domain": TRUST_DOMAIN,
    "auth_methods": AUTH_METHODS,
    "image_id": IMAGE_ID,
    "instance_types": INSTANCE_TYPES,
    "start": START,
    "in_downtime": IN_DOWNTIME,
    "allow_privileged_overlays": PRIVILEGED_OVERLAYS,
    "key_id": PUB_KEY_ID,
    "key_algorithm": PUB_KEY_TYPE,
    "public_key_pem": PUB_KEY_VALUE,
}
_LIMIT_ATTRS = {
    "max_running": MAX_RUNNING,
    "max_idle": MAX_IDLE,
    "max_per_frontend": MAX_PER_FRONTEND,
    "max_launches_per_cycle": MAX_LAUNCHES,
}
_LIFETIME_ATTRS = {
    "max_seconds": MAX_WALLTIME,
    "retire_seconds": RETIRE_TIME,
    "idle_shutdown_seconds": MAX_IDLE_TIME,
}
KNOWN = known_attrs([*_ATTRS.values(), *_LIMIT_ATTRS.values(), *_LIFETIME_ATTRS.values()])

_Frozen = ConfigDict(frozen=True, extra="forbid")


class EntryLimits(BaseModel):
    """The factory's limits on this entry; a frontend asking for more is cut to these."""

    model_config = _Frozen

    max_running: Count = 100
    max_idle: Count = 10
    max_per_frontend: Count | None = None
    max_launches_per_cycle: Count = 20


class EntryLifetimes(BaseModel):
    """Glidein lifetimes in seconds (glideinWMS: GLIDEIN_Max_Walltime, _Retire_Time, _Max_Idle)."""

    model_config = _Frozen

    max_seconds: Seconds = 86400
    retire_seconds: Seconds = 72000
    idle_shutdown_seconds: Seconds = 1200

    @model_validator(mode="after")
    def _retire_within_max(self) -> EntryLifetimes:
        if self.retire_seconds > self.max_seconds:
            raise ValueError("the retire time must not exceed the maximum lifetime")
        return self


class EntryAd(BaseModel):
    """One factory entry as published (glideinWMS ``glidefactory``), ``Name = entry@factory``."""

    model_config = _Frozen

    factory: Name
    entry: Name
    trust_domain: Line
    auth_methods: tuple[Line, ...] = Field(min_length=1)
    image_id: Line
    instance_types: tuple[Line, ...] = Field(min_length=1)
    limits: EntryLimits = EntryLimits()
    lifetimes: EntryLifetimes = EntryLifetimes()
    attributes: dict[str, AttrValue] = Field(default_factory=dict)
    start: str = "true"
    in_downtime: bool = False
    allow_privileged_overlays: bool = False
    key_id: KeyId
    key_algorithm: Line
    public_key_pem: str = Field(repr=False)
    # Stamped by the collector on ads read back; never written by the builder.
    authenticated_identity: str | None = None

    @property
    def name(self) -> str:
        return ad_name(self.entry, self.factory)

    @field_validator("start")
    @classmethod
    def _start_is_expression(cls, value: str) -> str:
        return normalise_expr(value)

    @field_validator("public_key_pem")
    @classmethod
    def _one_trailing_newline(cls, value: str) -> str:
        return value.strip() + "\n"

    @field_validator("attributes", mode="before")
    @classmethod
    def _site_attributes(cls, value: Any) -> dict[str, AttrValue]:
        if not isinstance(value, Mapping):
            raise ValueError("must map attribute names to values")
        checked = {}
        for attr, item in value.items():
            if not isinstance(attr, str) or not attr.isidentifier() or not attr.isascii():
                raise ValueError(f"{attr!r} is not a ClassAd attribute name")
            if attr.lower() in KNOWN or attr.lower() in COLLECTOR_ATTRS:
                raise ValueError(f"attribute {attr} is set by gwms itself; remove it")
            checked[attr] = check_attr_value(attr, item)
        return checked

    @model_validator(mode="after")
    def _key_matches_id(self) -> EntryAd:
        try:
            key = load_public_key(self.public_key_pem)
        except SealError:
            raise ValueError("the public key is not an X25519 or RSA public key in PEM") from None
        if key_id(key) != self.key_id:
            raise ValueError(f"key id {self.key_id} is not the id of the public key")
        if algorithm_of(key) != self.key_algorithm:
            raise ValueError(f"key type {self.key_algorithm} is not the public key's type")
        return self


def build_entry_ad(entry: EntryAd) -> classad2.ClassAd:
    """The ``glidefactory`` ClassAd for one entry."""
    ad = new_ad(AdKind.ENTRY, entry.name)
    for field, attr in _ATTRS.items():
        value = getattr(entry, field)
        if field == "start":
            put_expr(ad, attr, value)
        elif field == "public_key_pem":
            # Old ClassAd syntax (HTCondor's wire) has no line breaks: glideinWMS writes "\n".
            put(ad, attr, value.strip().replace("\n", "\\n"))
        else:
            put(ad, attr, value)
    for field, attr in _LIMIT_ATTRS.items():
        put(ad, attr, getattr(entry.limits, field))
    for field, attr in _LIFETIME_ATTRS.items():
        put(ad, attr, getattr(entry.lifetimes, field))
    for attr, value in entry.attributes.items():
        put(ad, attr, value)
    return ad


def parse_entry_ad(ad: classad2.ClassAd) -> EntryAd | None:
    """The entry an ad describes; None for a newer protocol version (warned once)."""
    reader = AdReader.open(ad, AdKind.ENTRY)
    if reader is None:
        return None
    limits = reader.model(
        EntryLimits,
        {
            "max_running": reader.integer(MAX_RUNNING),
            "max_idle": reader.integer(MAX_IDLE),
            "max_per_frontend": reader.integer(MAX_PER_FRONTEND, optional=True),
            "max_launches_per_cycle": reader.integer(MAX_LAUNCHES),
        },
        _LIMIT_ATTRS,
    )
    lifetimes = reader.model(
        EntryLifetimes,
        {field: reader.integer(attr) for field, attr in _LIFETIME_ATTRS.items()},
        _LIFETIME_ATTRS,
        whole=RETIRE_TIME,
    )
    fields = {
        "factory": reader.string(FACTORY_NAME),
        "entry": reader.string(ENTRY_NAME),
        "trust_domain": reader.string(TRUST_DOMAIN),
        "auth_methods": reader.strings(AUTH_METHODS),
        "image_id": reader.string(IMAGE_ID),
        "instance_types": reader.strings(INSTANCE_TYPES),
        "limits": limits,
        "lifetimes": lifetimes,
        "attributes": reader.extra_attributes(KNOWN),
        "start": reader.expr(START),
        "in_downtime": reader.flag(IN_DOWNTIME),
        "allow_privileged_overlays": reader.flag(PRIVILEGED_OVERLAYS),
        "key_id": reader.string(PUB_KEY_ID),
        "key_algorithm": reader.string(PUB_KEY_TYPE),
        "public_key_pem": reader.string(PUB_KEY_VALUE).replace("\\n", "\n") + "\n",
        "authenticated_identity": reader.string("AuthenticatedIdentity", optional=True),
    }
    entry: EntryAd = reader.model(EntryAd, fields, _ATTRS, whole=PUB_KEY_ID)
    if entry.name != reader.name:
        raise reader.error("Name", f"is {reader.name!r}, expected {entry.name!r}")
    return entry
