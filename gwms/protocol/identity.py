"""Who is asking: the frontend seals its identity into its ads, the factory checks it.

The collector stamps every ad with the ``AuthenticatedIdentity`` of the connection that
published it, but any frontend can read another's ads and republish them as its own. So a
frontend also puts a sealed claim in each request and credential ad::

    {"format": 1, "identity": ..., "frontend": ..., "group": ..., "request_name": ...,
     "issued_at": ..., "credential_ids": [...]}

sealed to the factory key with a context binding the ad kind, the factory and the ad's
Name. The factory accepts an ad only if the claim opens, agrees with the ad, names the
identity the collector stamped, that identity is the one configured for the frontend, the
claim is fresh, and the frontend may use the entry. Credentials are sealed with a context
that binds factory, frontend identity and credential id, so another frontend cannot replay
them even inside an ad of its own.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import classad2
from pydantic import BaseModel, ConfigDict, ValidationError

from gwms.credentials.model import AnyCredential, Credential, open_credential, seal_credential
from gwms.credentials.sealed import (
    KeyResolver,
    PrivateKey,
    SealError,
    key_id,
    load_public_key,
    open_sealed,
    seal,
)
from gwms.errors import CredentialError, GwmsError
from gwms.protocol.credential_ad import CredentialAd, SealedCredential, parse_credential_ad
from gwms.protocol.entry import EntryAd
from gwms.protocol.request import RemoveExcess, RequestAd, parse_request_ad
from gwms.protocol.wire import (
    PROTOCOL_VERSION,
    AdKind,
    CredentialIds,
    Line,
    Name,
    ProtocolError,
    Timestamp,
    ad_name,
    client_name,
    epoch,
    from_epoch,
    utc_seconds,
)

CLAIM_FORMAT = 1
DEFAULT_MAX_AGE = timedelta(minutes=15)  # frontends republish every cycle (about a minute)
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)  # a claim from the future beyond this is refused

Reason = Literal[
    "malformed",
    "unsupported_version",
    "wrong_factory",
    "unauthenticated",
    "identity_missing",
    "identity_unreadable",
    "identity_tampered",
    "replayed",
    "unknown_identity",
    "stale",
    "entry_not_allowed",
    "credential_unreadable",
    "credential_tampered",
]


class RequestRejected(GwmsError):
    """The factory refuses a request or credential ad; ``reason`` is a stable code for metrics."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


class IdentityClaim(BaseModel):
    """What the frontend seals: who it is, which ad this is for, and when it said so."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    identity: Line
    frontend: Name
    group: Name | None
    request_name: Line
    issued_at: Timestamp
    credential_ids: CredentialIds = ()

    def to_payload(self) -> bytes:
        doc = {
            "format": CLAIM_FORMAT,
            "identity": self.identity,
            "frontend": self.frontend,
            "group": self.group,
            "request_name": self.request_name,
            "issued_at": epoch(self.issued_at),
            "credential_ids": list(self.credential_ids),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_payload(cls, data: bytes) -> IdentityClaim:
        """Parse opened bytes; ValueError when they are not a claim of our format."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError("it is not JSON") from None
        if not isinstance(doc, dict) or doc.pop("format", None) != CLAIM_FORMAT:
            raise ValueError(f"it is not a format {CLAIM_FORMAT} identity claim")
        issued = doc.get("issued_at")
        if isinstance(issued, bool) or not isinstance(issued, int) or issued < 0:
            raise ValueError("its issued_at is not epoch seconds")
        doc["issued_at"] = from_epoch(issued)
        doc["credential_ids"] = tuple(doc.get("credential_ids") or ())
        try:
            return cls(**doc)
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors(include_input=False)[0]["loc"])
            raise ValueError(f"its field {where or '(top level)'} is invalid") from None


def identity_context(kind: AdKind, factory: str, name: str) -> bytes:
    """Binds a sealed identity to one ad kind, one factory and one ad Name."""
    return _context("identity", kind.value, factory, name)


def credential_context(factory: str, identity: str, credential_id: str) -> bytes:
    """Binds a sealed credential to one factory, one frontend identity and one credential id."""
    return _context("credential", AdKind.CREDENTIALS.value, factory, identity, credential_id)


def _context(*parts: str) -> bytes:
    # Names and identities hold no NUL, so NUL-joined parts are unambiguous.
    return b"\x00".join(p.encode() for p in (f"gwms-protocol/{PROTOCOL_VERSION}", *parts))


# -- frontend side ------------------------------------------------------------------------------


def make_request(
    entry: EntryAd,
    *,
    frontend: str,
    group: str,
    identity: str,
    idle: int,
    max_running: int,
    now: datetime,
    remove_excess: RemoveExcess = RemoveExcess.NO,
    credential_ids: Sequence[str] = (),
) -> RequestAd:
    """A request to ``entry`` with the frontend's identity sealed to the entry's factory key."""
    issued_at = utc_seconds(now)
    name = ad_name(entry.entry, entry.factory, client_name(frontend, group))
    claim = IdentityClaim(
        identity=identity,
        frontend=frontend,
        group=group,
        request_name=entry.name,
        issued_at=issued_at,
        credential_ids=tuple(credential_ids),
    )
    public_key = load_public_key(entry.public_key_pem)
    envelope = seal(
        claim.to_payload(),
        public_key,
        context=identity_context(AdKind.REQUEST, entry.factory, name),
    )
    return RequestAd(
        frontend=frontend,
        group=group,
        factory=entry.factory,
        entry=entry.entry,
        idle=idle,
        max_running=max_running,
        remove_excess=remove_excess,
        issued_at=issued_at,
        credential_ids=tuple(credential_ids),
        key_id=key_id(public_key),
        sealed_identity=envelope,
    )


def make_credential_ad(
    *,
    factory: str,
    public_key_pem: str,
    frontend: str,
    identity: str,
    credentials: Sequence[Credential],
    now: datetime,
) -> CredentialAd:
    """The frontend's credentials for ``factory``, each sealed to its published key."""
    issued_at = utc_seconds(now)
    public_key = load_public_key(public_key_pem)
    ids = tuple(c.id for c in credentials)
    name = ad_name(frontend, factory)
    claim = IdentityClaim(
        identity=identity,
        frontend=frontend,
        group=None,
        request_name=name,
        issued_at=issued_at,
        credential_ids=ids,
    )
    sealed = tuple(
        SealedCredential(
            id=cred.id,
            envelope=seal_credential(
                cred, public_key, context=credential_context(factory, identity, cred.id)
            ),
        )
        for cred in credentials
    )
    return CredentialAd(
        frontend=frontend,
        factory=factory,
        issued_at=issued_at,
        key_id=key_id(public_key),
        sealed_identity=seal(
            claim.to_payload(),
            public_key,
            context=identity_context(AdKind.CREDENTIALS, factory, name),
        ),
        credentials=sealed,
    )


# -- factory side -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthorisedFrontend:
    """A frontend this factory serves: the identity its ads must carry and the entries it may use.

    ``entries`` are entry names or shell-style globs ("*" for all).
    """

    identity: str
    entries: tuple[str, ...] = ("*",)

    def may_use(self, entry: str) -> bool:
        return any(fnmatch.fnmatchcase(entry, pattern) for pattern in self.entries)


Authorised = Mapping[str, AuthorisedFrontend | str]


@dataclass(frozen=True)
class VerifiedRequest:
    """A request the factory may act on, with the identity that proved it."""

    request: RequestAd
    identity: str

    @property
    def frontend(self) -> str:
        return self.request.frontend

    @property
    def entry(self) -> str:
        return self.request.entry


@dataclass(frozen=True)
class OpenedCredentials:
    """A frontend's credentials, opened; `Credential` models keep secrets out of repr."""

    frontend: str
    identity: str
    issued_at: datetime
    credentials: Mapping[str, AnyCredential] = field(default_factory=dict)


def verify_request(
    ad: classad2.ClassAd | RequestAd,
    keyring: KeyResolver | PrivateKey,
    factory_name: str,
    authorised_frontends: Authorised,
    now: datetime,
    *,
    max_age: timedelta = DEFAULT_MAX_AGE,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> VerifiedRequest:
    """Accept a request ad only if its sender proved who it is; else raise RequestRejected."""
    request = ad if isinstance(ad, RequestAd) else _parse(ad, AdKind.REQUEST, parse_request_ad)
    where = f"request {request.name!r}"
    checked = _Checked(
        where,
        factory_name,
        authorised=authorised_frontends,
        now=now,
        max_age=max_age,
        clock_skew=clock_skew,
    )
    identity, allowed = checked.identity(
        kind=AdKind.REQUEST,
        name=request.name,
        factory=request.factory,
        sealed=request.sealed_identity,
        authenticated=request.authenticated_identity,
        keyring=keyring,
        expected={
            "frontend": request.frontend,
            "group": request.group,
            "request_name": request.request_name,
            "issued_at": request.issued_at,
            "credential_ids": request.credential_ids,
        },
    )
    if not allowed.may_use(request.entry):
        raise RequestRejected(
            "entry_not_allowed",
            f"{where}: frontend {request.frontend} may not use entry {request.entry} "
            f"(allowed: {', '.join(allowed.entries) or 'none'}); add the entry to its "
            f"entries at factory {factory_name} or stop requesting it",
        )
    return VerifiedRequest(request=request, identity=identity)


def open_credential_ad(
    ad: classad2.ClassAd | CredentialAd,
    keyring: KeyResolver | PrivateKey,
    factory_name: str,
    authorised_frontends: Authorised,
    now: datetime,
    *,
    max_age: timedelta = DEFAULT_MAX_AGE,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> OpenedCredentials:
    """Check a credential ad like a request, then open every credential; all or none."""
    cred_ad = (
        ad if isinstance(ad, CredentialAd) else _parse(ad, AdKind.CREDENTIALS, parse_credential_ad)
    )
    where = f"credential ad {cred_ad.name!r}"
    checked = _Checked(
        where,
        factory_name,
        authorised=authorised_frontends,
        now=now,
        max_age=max_age,
        clock_skew=clock_skew,
    )
    identity, _ = checked.identity(
        kind=AdKind.CREDENTIALS,
        name=cred_ad.name,
        factory=cred_ad.factory,
        sealed=cred_ad.sealed_identity,
        authenticated=cred_ad.authenticated_identity,
        keyring=keyring,
        expected={
            "frontend": cred_ad.frontend,
            "group": None,
            "request_name": cred_ad.name,
            "issued_at": cred_ad.issued_at,
            "credential_ids": cred_ad.credential_ids,
        },
    )
    opened: dict[str, AnyCredential] = {}
    for sealed in cred_ad.credentials:
        context = credential_context(factory_name, identity, sealed.id)
        try:
            cred = open_credential(sealed.envelope, keyring, context)
        except SealError as exc:
            if exc.reason == "authentication":
                raise RequestRejected(
                    "credential_tampered",
                    f"{where}: credential {sealed.id} does not open for identity {identity}: "
                    "it was altered, or sealed by another frontend or for another factory "
                    "(replayed); the frontend must seal its own credentials again",
                ) from None
            raise _credential_unreadable(where, sealed.id, exc) from None
        except CredentialError as exc:
            raise _credential_unreadable(where, sealed.id, exc) from None
        if cred.id != sealed.id:
            raise RequestRejected(
                "credential_tampered",
                f"{where}: the envelope listed as credential {sealed.id} holds credential "
                f"{cred.id}; the frontend must seal each credential under its own id",
            )
        opened[sealed.id] = cred
    return OpenedCredentials(
        frontend=cred_ad.frontend,
        identity=identity,
        issued_at=cred_ad.issued_at,
        credentials=opened,
    )


def _credential_unreadable(where: str, cid: str, exc: Exception) -> RequestRejected:
    return RequestRejected(
        "credential_unreadable", f"{where}: credential {cid} cannot be opened: {exc}"
    )


def _parse(ad: classad2.ClassAd, kind: AdKind, parser: Any) -> Any:
    try:
        parsed = parser(ad)
    except ProtocolError as exc:
        raise RequestRejected("malformed", str(exc)) from None
    if parsed is None:
        raise RequestRejected(
            "unsupported_version",
            f"{kind.value} ad {ad.get('Name')!r} uses a newer gwms protocol version than "
            f"{PROTOCOL_VERSION}; upgrade gwms on this factory to serve it",
        )
    return parsed


class _Checked:
    """The identity checks shared by request and credential ads, in the order they apply."""

    def __init__(
        self,
        where: str,
        factory_name: str,
        *,
        authorised: Authorised,
        now: datetime,
        max_age: timedelta,
        clock_skew: timedelta,
    ) -> None:
        self.where = where
        self.factory_name = factory_name
        self.authorised = authorised
        self.now = now
        self.max_age = max_age
        self.clock_skew = clock_skew

    def identity(
        self,
        *,
        kind: AdKind,
        name: str,
        factory: str,
        sealed: str | None,
        authenticated: str | None,
        keyring: KeyResolver | PrivateKey,
        expected: dict[str, Any],
    ) -> tuple[str, AuthorisedFrontend]:
        """The proven identity and what the factory allows it; RequestRejected otherwise."""
        where = self.where
        if factory != self.factory_name:
            raise RequestRejected(
                "wrong_factory",
                f"{where} is for factory {factory}, not {self.factory_name}; "
                "query only ads with ReqFactoryName equal to this factory's name",
            )
        if not authenticated:
            raise RequestRejected(
                "unauthenticated",
                f"{where} has no AuthenticatedIdentity: the collector did not authenticate its "
                "publisher; require authentication for advertising at the collector",
            )
        if sealed is None:
            raise RequestRejected(
                "identity_missing",
                f"{where} (published by {authenticated}) carries no sealed identity "
                "(ReqEncIdentity); the frontend must seal it to this factory's key",
            )
        claim = self._open(kind, name, sealed, keyring, authenticated)
        for key, value in expected.items():
            if getattr(claim, key) != value:
                raise RequestRejected(
                    "identity_tampered",
                    f"{where}: its sealed identity says {key} {_show(getattr(claim, key))} but "
                    f"the ad says {_show(value)}: the ad was altered after sealing; the "
                    "frontend must publish it again",
                )
        if claim.identity != authenticated:
            raise RequestRejected(
                "replayed",
                f"{where} was published by {authenticated} but sealed by {claim.identity}: "
                "replayed from another frontend; ignore it and check who publishes it",
            )
        allowed = self.authorised.get(claim.frontend)
        if isinstance(allowed, str):
            allowed = AuthorisedFrontend(identity=allowed)
        if allowed is None or allowed.identity != authenticated:
            configured = (
                f"frontend {claim.frontend} is configured with identity {allowed.identity}"
                if allowed is not None
                else f"no frontend {claim.frontend} is configured"
            )
            raise RequestRejected(
                "unknown_identity",
                f"{where}: identity {authenticated} is not configured at factory "
                f"{self.factory_name} ({configured}); add it to the factory's frontends "
                "if it should be served",
            )
        self._fresh(claim.issued_at)
        return authenticated, allowed

    def _open(
        self,
        kind: AdKind,
        name: str,
        sealed: str,
        keyring: KeyResolver | PrivateKey,
        authenticated: str,
    ) -> IdentityClaim:
        where = self.where
        try:
            payload = open_sealed(
                sealed, keyring, context=identity_context(kind, self.factory_name, name)
            )
        except SealError as exc:
            if exc.reason == "authentication":
                raise RequestRejected(
                    "identity_tampered",
                    f"{where} (published by {authenticated}): its sealed identity fails "
                    "authentication: it was altered or copied from another ad or factory; "
                    "the frontend must seal it again for this ad",
                ) from None
            raise RequestRejected(
                "identity_unreadable",
                f"{where} (published by {authenticated}): its sealed identity cannot be "
                f"opened: {exc}",
            ) from None
        try:
            return IdentityClaim.from_payload(payload)
        except ValueError as exc:
            raise RequestRejected(
                "identity_unreadable",
                f"{where} (published by {authenticated}): its sealed identity opens but "
                f"{exc}; upgrade gwms on the frontend or the factory so they agree",
            ) from None

    def _fresh(self, issued_at: datetime) -> None:
        age = self.now - issued_at
        if age > self.max_age:
            raise RequestRejected(
                "stale",
                f"{self.where} was issued {_duration(age)} ago, more than the "
                f"{_duration(self.max_age)} accepted; the frontend has stopped refreshing it "
                "(check that it is running and its clock)",
            )
        if -age > self.clock_skew:
            raise RequestRejected(
                "stale",
                f"{self.where} was issued {_duration(-age)} in the future, more than the "
                f"{_duration(self.clock_skew)} clock skew accepted; synchronise the clocks "
                "(NTP) of frontend and factory",
            )


def _show(value: Any) -> str:
    if isinstance(value, datetime):
        return str(epoch(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    return repr(value)


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
