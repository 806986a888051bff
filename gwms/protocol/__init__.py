"""The ad protocol between frontends and factories: typed, versioned builders and parsers.

One pair of pure functions per ad kind turns a model into a `classad2.ClassAd` and back;
`identity` seals who is asking (frontend side) and checks it (factory side). The attribute
table of every ad is in docs/protocol.md.
"""

from gwms.protocol.credential_ad import (
    CredentialAd,
    SealedCredential,
    build_credential_ad,
    parse_credential_ad,
)
from gwms.protocol.entry import EntryAd, EntryLifetimes, EntryLimits, build_entry_ad, parse_entry_ad
from gwms.protocol.identity import (
    AuthorisedFrontend,
    IdentityClaim,
    OpenedCredentials,
    RequestRejected,
    VerifiedRequest,
    make_credential_ad,
    make_request,
    open_credential_ad,
    verify_request,
)
from gwms.protocol.monitoring import (
    FactoryClientAd,
    ResourceAd,
    build_factory_client_ad,
    build_resource_ad,
    parse_factory_client_ad,
    parse_resource_ad,
)
from gwms.protocol.request import RemoveExcess, RequestAd, build_request_ad, parse_request_ad
from gwms.protocol.wire import PROTOCOL_VERSION, AdKind, ProtocolError

__all__ = [
    "PROTOCOL_VERSION",
    "AdKind",
    "AuthorisedFrontend",
    "CredentialAd",
    "EntryAd",
    "EntryLifetimes",
    "EntryLimits",
    "FactoryClientAd",
    "IdentityClaim",
    "OpenedCredentials",
    "ProtocolError",
    "RemoveExcess",
    "RequestAd",
    "RequestRejected",
    "ResourceAd",
    "SealedCredential",
    "VerifiedRequest",
    "build_credential_ad",
    "build_entry_ad",
    "build_factory_client_ad",
    "build_request_ad",
    "build_resource_ad",
    "make_credential_ad",
    "make_request",
    "open_credential_ad",
    "parse_credential_ad",
    "parse_entry_ad",
    "parse_factory_client_ad",
    "parse_request_ad",
    "parse_resource_ad",
    "verify_request",
]
