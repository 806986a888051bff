"""The credential ad (``glideclientglobal``): a frontend's sealed credentials for one factory.

``Name = frontend@factory``. Each credential is its own envelope, sealed to the factory key
with a context that binds factory, frontend identity and credential id, so it cannot be
replayed by another frontend, moved to another factory or relabelled as another id. Request
ads name the ids they want used (``ReqCredentialIds``).
"""

from __future__ import annotations

import classad2
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gwms.protocol.wire import (
    AUTHENTICATED_IDENTITY,
    AdKind,
    AdReader,
    CredentialId,
    KeyId,
    Name,
    Sealed,
    Timestamp,
    ad_name,
    new_ad,
    put,
)

FRONTEND_NAME = "FrontendName"
REQ_FACTORY = "ReqFactoryName"
REQ_ISSUED_AT = "ReqIssuedAt"
REQ_PUB_KEY_ID = "ReqPubKeyID"
REQ_ENC_IDENTITY = "ReqEncIdentity"
NUMBER_OF_CREDENTIALS = "NumberOfCredentials"
SEALED_CREDENTIALS = "SealedCredentials"
CRED_ID = "Id"
CRED_ENVELOPE = "Envelope"

_ATTRS = {
    "frontend": FRONTEND_NAME,
    "factory": REQ_FACTORY,
    "issued_at": REQ_ISSUED_AT,
    "key_id": REQ_PUB_KEY_ID,
    "sealed_identity": REQ_ENC_IDENTITY,
    "credentials": SEALED_CREDENTIALS,
}


class SealedCredential(BaseModel):
    """One credential as it travels: its id in clear, the credential itself sealed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: CredentialId
    envelope: Sealed = Field(repr=False)


class CredentialAd(BaseModel):
    """A frontend's credentials for one factory; opened only by `identity.open_credential_ad`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    frontend: Name
    factory: Name
    issued_at: Timestamp
    # Both set by the frontend; the factory rejects an ad without them (identity.py).
    key_id: KeyId | None = None
    sealed_identity: Sealed | None = Field(None, repr=False)
    credentials: tuple[SealedCredential, ...]
    authenticated_identity: str | None = None

    @property
    def name(self) -> str:
        return ad_name(self.frontend, self.factory)

    @property
    def credential_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.credentials)

    @field_validator("credentials")
    @classmethod
    def _unique_ids(cls, value: tuple[SealedCredential, ...]) -> tuple[SealedCredential, ...]:
        ids = [c.id for c in value]
        if len(set(ids)) != len(ids):
            raise ValueError("must not list a credential id twice")
        return value


def build_credential_ad(cred_ad: CredentialAd) -> classad2.ClassAd:
    """The ``glideclientglobal`` ClassAd; credentials are a list of ``[Id; Envelope]`` ads."""
    ad = new_ad(AdKind.CREDENTIALS, cred_ad.name)
    for field, attr in _ATTRS.items():
        if field != "credentials":
            put(ad, attr, getattr(cred_ad, field))
    put(ad, NUMBER_OF_CREDENTIALS, len(cred_ad.credentials))
    ad[SEALED_CREDENTIALS] = [
        classad2.ClassAd({CRED_ID: c.id, CRED_ENVELOPE: c.envelope}) for c in cred_ad.credentials
    ]
    return ad


def parse_credential_ad(ad: classad2.ClassAd) -> CredentialAd | None:
    """The (still sealed) credentials an ad carries; None for a newer protocol version."""
    reader = AdReader.open(ad, AdKind.CREDENTIALS)
    if reader is None:
        return None
    credentials = []
    for index, item in enumerate(reader.ads(SEALED_CREDENTIALS)):
        cid, envelope = item.get(CRED_ID), item.get(CRED_ENVELOPE)
        if not isinstance(cid, str) or not isinstance(envelope, str):
            raise reader.error(
                f"{SEALED_CREDENTIALS}[{index}]",
                f"needs string {CRED_ID} and {CRED_ENVELOPE} attributes",
            )
        credentials.append(
            reader.model(
                SealedCredential,
                {"id": cid, "envelope": envelope},
                {
                    "id": f"{SEALED_CREDENTIALS}[{index}].{CRED_ID}",
                    "envelope": f"{SEALED_CREDENTIALS}[{index}].{CRED_ENVELOPE}",
                },
            )
        )
    count = reader.integer(NUMBER_OF_CREDENTIALS)
    if count != len(credentials):
        raise reader.error(
            NUMBER_OF_CREDENTIALS, f"is {count} but {SEALED_CREDENTIALS} holds {len(credentials)}"
        )
    fields = {
        "frontend": reader.string(FRONTEND_NAME),
        "factory": reader.string(REQ_FACTORY),
        "issued_at": reader.time(REQ_ISSUED_AT),
        "key_id": reader.string(REQ_PUB_KEY_ID, optional=True),
        "sealed_identity": reader.string(REQ_ENC_IDENTITY, optional=True),
        "credentials": tuple(credentials),
        "authenticated_identity": reader.string(AUTHENTICATED_IDENTITY, optional=True),
    }
    parsed: CredentialAd = reader.model(CredentialAd, fields, _ATTRS)
    if parsed.name != reader.name:
        raise reader.error("Name", f"is {reader.name!r}, expected {parsed.name!r}")
    return parsed
