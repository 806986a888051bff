"""What every protocol ad shares: kinds, the version check, typed reads and writes of attributes.

Parsers never crash on what other parties publish: a newer protocol version is skipped with
one warning, anything else that is not what version 1 promises is a `ProtocolError` naming
the ad and the attribute. Builders refuse values that would not survive HTCondor's wire form
(line breaks, control characters, integers beyond 64 bits).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import classad2
from pydantic import AfterValidator, Field, ValidationError

from gwms.errors import GwmsError

log = logging.getLogger("gwms.protocol")

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (PROTOCOL_VERSION,)

MY_TYPE = "MyType"
GLIDEIN_MY_TYPE = "GlideinMyType"
VERSION_ATTR = "GwmsProtocolVersion"
NAME = "Name"
AUTHENTICATED_IDENTITY = "AuthenticatedIdentity"

# Attributes a collector adds or overwrites; never part of what a publisher said.
COLLECTOR_ATTRS = frozenset(
    a.lower()
    for a in (
        AUTHENTICATED_IDENTITY,
        "AuthenticationMethod",
        "LastHeardFrom",
        "ClassAdLifetime",
        "UpdateSequenceNumber",
        "UpdatesTotal",
        "UpdatesSequenced",
        "UpdatesLost",
        "UpdatesHistory",
        "MyAddress",
        "TargetType",
        "CurrentTime",
        "DaemonStartTime",
    )
)

INT64_MAX = 2**63 - 1
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class AdKind(StrEnum):
    """The glideinWMS ad kinds (``GlideinMyType``, also used as ``MyType``)."""

    ENTRY = "glidefactory"
    REQUEST = "glideclient"
    CREDENTIALS = "glideclientglobal"
    FACTORY_CLIENT = "glidefactoryclient"
    RESOURCE = "glideresource"


class ProtocolError(GwmsError):
    """An ad of our protocol version is malformed, or a model cannot be put on the wire."""


# -- names and values ---------------------------------------------------------------------------


def _check_name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(
            "must be a name of letters, digits, '_' and '-' (at most 64, starting with a "
            "letter or digit)"
        )
    return value


def _check_line(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if _CONTROL_RE.search(value):
        raise ValueError("must be one line without control characters")
    return value


Name = Annotated[str, AfterValidator(_check_name)]
"""Factory, entry, frontend and group names: they are joined with '@' and '.' into ad names."""

Line = Annotated[str, AfterValidator(_check_line)]
"""Free text that must survive HTCondor's old ClassAd wire syntax (no line breaks)."""

MAX_SEALED_CHARS = 4 * 1024 * 1024


def _check_sealed(value: str) -> str:
    if not value or len(value) > MAX_SEALED_CHARS or _CONTROL_RE.search(value):
        raise ValueError("must be a sealed envelope: one line of at most 4 MiB")
    return value


Sealed = Annotated[str, AfterValidator(_check_sealed)]
"""An envelope from `gwms.credentials.sealed.seal`: opaque here, opened only by the factory."""

KeyId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
# Same rule as `gwms.credentials.model.Credential.id`: ids also appear in ads and file names.
CredentialId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")]


def _unique(ids: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(ids)) != len(ids):
        raise ValueError("must not list a credential id twice")
    return ids


CredentialIds = Annotated[tuple[CredentialId, ...], AfterValidator(_unique)]
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
Seconds = Annotated[int, Field(gt=0, le=INT64_MAX)]

AttrScalar = str | bool | int | float
AttrValue = AttrScalar | list[AttrScalar]


def utc_seconds(moment: datetime) -> datetime:
    """Timestamps travel as whole epoch seconds; keep models equal to what the wire carries."""
    if moment.tzinfo is None:
        raise ValueError("must be a timezone-aware datetime (UTC)")
    return moment.astimezone(UTC).replace(microsecond=0)


Timestamp = Annotated[datetime, AfterValidator(utc_seconds)]


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def check_attr_value(attr: str, value: Any) -> AttrValue:
    """A site attribute value: a one-line string, bool, 64-bit int, float, or a list of those."""
    if isinstance(value, list | tuple):
        return [_check_scalar(attr, item) for item in value]
    return _check_scalar(attr, value)


def _check_scalar(attr: str, value: Any) -> AttrScalar:
    if isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise ValueError(f"attribute {attr}: {value} does not fit a 64-bit ClassAd integer")
        return value
    if isinstance(value, str):
        if _CONTROL_RE.search(value):
            raise ValueError(f"attribute {attr}: text must be one line without control characters")
        return value
    raise ValueError(
        f"attribute {attr}: {type(value).__name__} is not text, a number, true/false or a list"
    )


def ad_name(*parts: str) -> str:
    """Ad names join their parts with '@' (glideinWMS: ``entry@factory``)."""
    return "@".join(parts)


def client_name(frontend: str, group: str) -> str:
    """glideinWMS's client name of a frontend group: ``frontend.group``."""
    return f"{frontend}.{group}"


# -- writing ------------------------------------------------------------------------------------


def new_ad(kind: AdKind, name: str) -> classad2.ClassAd:
    """An ad with the attributes every protocol ad carries."""
    ad = classad2.ClassAd()
    ad[MY_TYPE] = kind.value
    ad[GLIDEIN_MY_TYPE] = kind.value
    ad[VERSION_ATTR] = PROTOCOL_VERSION
    ad[NAME] = name
    return ad


def put(ad: classad2.ClassAd, attr: str, value: Any) -> None:
    """Set a literal value; None leaves the attribute out (the parser reads it as absent)."""
    if value is None:
        return
    if isinstance(value, datetime):
        value = epoch(value)
    elif isinstance(value, tuple):
        value = list(value)
    ad[attr] = value


def put_expr(ad: classad2.ClassAd, attr: str, text: str) -> None:
    ad[attr] = classad2.ExprTree(text)


def normalise_expr(text: str) -> str:
    """Parse a ClassAd expression and return its canonical text (what the wire will carry)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("must be a ClassAd expression (e.g. 'TARGET.RequestMemory <= 2048')")
    try:
        return str(classad2.ExprTree(text))
    except Exception:
        raise ValueError(
            f"{text[:80]!r} is not a ClassAd expression; check parentheses, quotes and operators"
        ) from None


# -- reading ------------------------------------------------------------------------------------

_warned: set[tuple[str, str, int]] = set()
_warned_lock = threading.Lock()


def _warn_newer_once(kind: AdKind, name: str, version: int) -> None:
    key = (kind.value, name, version)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(
        "ignoring %s ad %r: it speaks gwms protocol version %d and this gwms speaks %s; "
        "upgrade gwms here to use it",
        kind.value,
        name,
        version,
        ", ".join(str(v) for v in SUPPORTED_VERSIONS),
    )


class AdReader:
    """Typed access to one ad's attributes; every problem is a ProtocolError naming ad and attr."""

    def __init__(self, ad: classad2.ClassAd, kind: AdKind, name: str) -> None:
        self.ad = ad
        self.kind = kind
        self.name = name

    @classmethod
    def open(cls, ad: classad2.ClassAd, kind: AdKind) -> AdReader | None:
        """Check kind and version; None (after one warning) for an ad of a newer version."""
        if not isinstance(ad, classad2.ClassAd):
            raise ProtocolError(
                f"expected a {kind.value} ClassAd, got {type(ad).__name__}; pass the ad as "
                "returned by the collector query"
            )
        name = ad.get(NAME)
        if not isinstance(name, str) or not name:
            raise ProtocolError(
                f"{kind.value} ad without a string {NAME} attribute; the publisher must set {NAME}"
            )
        reader = cls(ad, kind, name)
        for attr in (MY_TYPE, GLIDEIN_MY_TYPE):
            found = ad.get(attr)
            if found != kind.value:
                raise reader.error(attr, f"is {found!r}, expected {kind.value!r}")
        version = ad.get(VERSION_ATTR)
        if isinstance(version, bool) or not isinstance(version, int):
            raise reader.error(
                VERSION_ATTR,
                f"is {_shown(version)}, expected an integer; it is not a gwms-cloud ad, "
                f"query with {VERSION_ATTR} =!= undefined",
            )
        if version > PROTOCOL_VERSION:
            _warn_newer_once(kind, name, version)
            return None
        if version not in SUPPORTED_VERSIONS:
            raise reader.error(VERSION_ATTR, f"is {version}, which no gwms version ever spoke")
        return reader

    def error(self, attr: str, problem: str) -> ProtocolError:
        return ProtocolError(
            f"{self.kind.value} ad {self.name!r}: attribute {attr} {problem}; "
            "the party that published it must fix or upgrade its gwms"
        )

    def _raw(self, attr: str, optional: bool) -> Any:
        value = self.ad.get(attr)
        if value is None or value is classad2.Value.Undefined:
            if optional:
                return None
            raise self.error(attr, "is missing")
        return value

    def string(self, attr: str, *, optional: bool = False) -> Any:
        value = self._raw(attr, optional)
        if value is not None and not isinstance(value, str):
            raise self.error(attr, f"is {_shown(value)}, expected a string")
        return value

    def integer(self, attr: str, *, optional: bool = False) -> Any:
        value = self._raw(attr, optional)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.error(attr, f"is {_shown(value)}, expected an integer")
        return value

    def number(self, attr: str, *, optional: bool = False) -> Any:
        value = self._raw(attr, optional)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise self.error(attr, f"is {_shown(value)}, expected a number")
        return None if value is None else float(value)

    def flag(self, attr: str, *, optional: bool = False) -> Any:
        value = self._raw(attr, optional)
        if value is not None and not isinstance(value, bool):
            raise self.error(attr, f"is {_shown(value)}, expected true or false")
        return value

    def time(self, attr: str, *, optional: bool = False) -> datetime | None:
        value = self.integer(attr, optional=optional)
        if value is None:
            return None
        if not 0 <= value < 253402300800:  # up to year 9999
            raise self.error(attr, f"is {value}, expected epoch seconds between 1970 and 9999")
        return from_epoch(value)

    def strings(self, attr: str, *, optional: bool = False) -> list[str] | None:
        value = self._raw(attr, optional)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(attr, f"is {_shown(value)}, expected a list of strings")
        return value

    def ads(self, attr: str) -> list[classad2.ClassAd]:
        value = self._raw(attr, False)
        if not isinstance(value, list) or not all(isinstance(v, classad2.ClassAd) for v in value):
            raise self.error(attr, f"is {_shown(value)}, expected a list of ClassAds")
        return value

    def expr(self, attr: str) -> str:
        """An expression attribute, as canonical text (literals are expressions too)."""
        self._raw(attr, False)
        return str(self.ad.lookup(attr))

    def extra_attributes(self, known: frozenset[str]) -> dict[str, AttrValue]:
        """Literal attributes that are neither the protocol's nor the collector's."""
        extra: dict[str, AttrValue] = {}
        for attr in self.ad.keys():  # noqa: SIM118  (ClassAd has no __iter__ over keys)
            if attr.lower() in known or attr.lower() in COLLECTOR_ATTRS:
                continue
            value = self.ad.get(attr)
            if _is_scalar(value) or (isinstance(value, list) and all(_is_scalar(v) for v in value)):
                extra[attr] = value
        return extra

    def model(
        self,
        cls: type[Any],
        fields: Mapping[str, Any],
        attrs: Mapping[str, str],
        whole: str = NAME,
    ) -> Any:
        """Validate into ``cls``; a failing field is reported under its wire attribute name.

        ``whole`` names the attribute blamed for checks across fields.
        """
        try:
            return cls(**fields)
        except ValidationError as exc:
            first = exc.errors(include_input=False)[0]
            loc = [str(p) for p in first["loc"]]
            attr = attrs.get(loc[0], loc[-1]) if loc else whole
            message = first["msg"].removeprefix("Value error, ")
            raise self.error(attr, f"is invalid: {message[:1].lower()}{message[1:]}") from None


def known_attrs(names: Sequence[str]) -> frozenset[str]:
    base = (MY_TYPE, GLIDEIN_MY_TYPE, VERSION_ATTR, NAME)
    return frozenset(n.lower() for n in (*base, *names))


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool | int | float)


def _shown(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, classad2.Value):
        return value.name.lower()
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
