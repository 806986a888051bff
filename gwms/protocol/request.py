"""The request ad (``glideclient``): one frontend group asks one factory entry for glideins.

``Name = entry@factory@frontend.group``. The numbers are in clear; who asks is proven by a
sealed identity (``ReqEncIdentity``) that only the factory can open and that must equal the
``AuthenticatedIdentity`` the collector stamps on the ad (see `gwms.protocol.identity`).
"""

from __future__ import annotations

from enum import StrEnum

import classad2
from pydantic import BaseModel, ConfigDict, Field

from gwms.protocol.wire import (
    AUTHENTICATED_IDENTITY,
    AdKind,
    AdReader,
    Count,
    CredentialIds,
    KeyId,
    Name,
    Sealed,
    Timestamp,
    ad_name,
    client_name,
    new_ad,
    put,
)

CLIENT_NAME = "ClientName"
FRONTEND_NAME = "FrontendName"
GROUP_NAME = "GroupName"
REQ_NAME = "ReqName"
REQ_FACTORY = "ReqFactoryName"
REQ_ENTRY = "ReqEntryName"
REQ_IDLE = "ReqIdleGlideins"
REQ_MAX = "ReqMaxGlideins"
REQ_REMOVE_EXCESS = "ReqRemoveExcess"
REQ_ISSUED_AT = "ReqIssuedAt"
REQ_CREDENTIAL_IDS = "ReqCredentialIds"
REQ_PUB_KEY_ID = "ReqPubKeyID"
REQ_ENC_IDENTITY = "ReqEncIdentity"

_ATTRS = {
    "frontend": FRONTEND_NAME,
    "group": GROUP_NAME,
    "factory": REQ_FACTORY,
    "entry": REQ_ENTRY,
    "idle": REQ_IDLE,
    "max_running": REQ_MAX,
    "remove_excess": REQ_REMOVE_EXCESS,
    "issued_at": REQ_ISSUED_AT,
    "credential_ids": REQ_CREDENTIAL_IDS,
    "key_id": REQ_PUB_KEY_ID,
    "sealed_identity": REQ_ENC_IDENTITY,
}


class RemoveExcess(StrEnum):
    """What the factory does with glideins beyond the request (glideinWMS ReqRemoveExcess)."""

    NO = "NO"  # keep them until they retire
    IDLE = "IDLE"  # terminate the ones not yet running
    WAIT = "WAIT"  # terminate idle ones after they stayed idle for a while
    ALL = "ALL"  # terminate idle and running ones


class RequestAd(BaseModel):
    """What one frontend group asks of one entry; the sealed identity stays opaque here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    frontend: Name
    group: Name
    factory: Name
    entry: Name
    idle: Count
    max_running: Count
    remove_excess: RemoveExcess = RemoveExcess.NO
    issued_at: Timestamp
    credential_ids: CredentialIds = ()
    # Both set by the frontend; the factory rejects a request without them (identity.py).
    key_id: KeyId | None = None
    sealed_identity: Sealed | None = Field(None, repr=False)
    authenticated_identity: str | None = None

    @property
    def client_name(self) -> str:
        return client_name(self.frontend, self.group)

    @property
    def request_name(self) -> str:
        """The entry ad's Name this request is for (glideinWMS ReqName)."""
        return ad_name(self.entry, self.factory)

    @property
    def name(self) -> str:
        return ad_name(self.entry, self.factory, self.client_name)


def build_request_ad(request: RequestAd) -> classad2.ClassAd:
    """The ``glideclient`` ClassAd; AuthenticatedIdentity is left to the collector."""
    ad = new_ad(AdKind.REQUEST, request.name)
    put(ad, CLIENT_NAME, request.client_name)
    put(ad, REQ_NAME, request.request_name)
    for field, attr in _ATTRS.items():
        value = getattr(request, field)
        put(ad, attr, value.value if isinstance(value, RemoveExcess) else value)
    return ad


def parse_request_ad(ad: classad2.ClassAd) -> RequestAd | None:
    """The request an ad carries; None for a newer protocol version (warned once)."""
    reader = AdReader.open(ad, AdKind.REQUEST)
    if reader is None:
        return None
    remove_excess = reader.string(REQ_REMOVE_EXCESS)
    if remove_excess not in RemoveExcess.__members__:
        choices = "/".join(RemoveExcess.__members__)
        raise reader.error(REQ_REMOVE_EXCESS, f"is {remove_excess!r}, expected one of {choices}")
    fields = {
        "frontend": reader.string(FRONTEND_NAME),
        "group": reader.string(GROUP_NAME),
        "factory": reader.string(REQ_FACTORY),
        "entry": reader.string(REQ_ENTRY),
        "idle": reader.integer(REQ_IDLE),
        "max_running": reader.integer(REQ_MAX),
        "remove_excess": RemoveExcess(remove_excess),
        "issued_at": reader.time(REQ_ISSUED_AT),
        "credential_ids": tuple(reader.strings(REQ_CREDENTIAL_IDS) or ()),
        "key_id": reader.string(REQ_PUB_KEY_ID, optional=True),
        "sealed_identity": reader.string(REQ_ENC_IDENTITY, optional=True),
        "authenticated_identity": reader.string(AUTHENTICATED_IDENTITY, optional=True),
    }
    request: RequestAd = reader.model(RequestAd, fields, _ATTRS)
    for attr, expected in (
        ("Name", request.name),
        (CLIENT_NAME, request.client_name),
        (REQ_NAME, request.request_name),
    ):
        found = reader.string(attr)
        if found != expected:
            raise reader.error(attr, f"is {found!r}, expected {expected!r}")
    return request
