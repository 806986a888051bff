"""The credentials a frontend hands a factory: one typed model per kind, sealed on the wire.

Every credential has an ``id`` (how request ads name it), a ``trust_domain`` (it may only
be used on entries of the same trust domain) and its secret material as ``SecretStr``,
so ``repr()``, ``str()``, logs and validation errors never show it. Only
`Credential.to_sealed_payload` reveals the secrets, and its bytes go straight into `seal`.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from cryptography import x509
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from gwms.credentials.sealed import KeyResolver, PrivateKey, PublicKey, open_sealed, seal
from gwms.errors import CredentialError

PAYLOAD_FORMAT = 1
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$"


class CredentialType(StrEnum):
    X509_PROXY = "x509_proxy"
    AWS_KEY_PAIR = "aws_key_pair"
    AWS_ROLE = "aws_role"
    OPENSTACK_APP_CREDENTIAL = "openstack_app_credential"
    IDTOKEN = "idtoken"


class Credential(BaseModel):
    """Common fields and lifetime logic; use the per-type subclasses."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    LABEL: ClassVar[str] = "credential"

    id: str = Field(pattern=_ID_PATTERN)
    trust_domain: str = Field(min_length=1, max_length=256, pattern=r"^\S+$")

    def expires_at(self) -> datetime | None:
        """When the credential stops working; None if it has no expiry of its own."""
        return None

    def time_left(self, now: datetime | None = None) -> timedelta | None:
        """Remaining lifetime (negative once expired); None if it does not expire."""
        expires = self.expires_at()
        if expires is None:
            return None
        return expires - (now or datetime.now(UTC))

    def usable(self, min_lifetime: timedelta, now: datetime | None = None) -> tuple[bool, str]:
        """Whether it lives at least ``min_lifetime`` more, and a reason an operator can read."""
        left = self.time_left(now)
        name = f"{self.LABEL} {self.id}"
        if left is None:
            return True, f"{name} does not expire"
        if left <= timedelta(0):
            return False, f"{name} expired {_human(-left)} ago"
        if left < min_lifetime:
            return False, f"{name} expires in {_human(left)} < {_human(min_lifetime)} minimum"
        return True, f"{name} expires in {_human(left)} >= {_human(min_lifetime)} minimum"

    def to_sealed_payload(self) -> bytes:
        """The bytes to seal: JSON with the secrets revealed. Never log or store them."""
        fields = {
            name: value.get_secret_value() if isinstance(value, SecretStr) else value
            for name, value in self.model_dump(mode="python").items()
        }
        doc = {"format": PAYLOAD_FORMAT, "credential": fields}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_sealed_payload(cls, data: bytes) -> AnyCredential:
        """Parse opened bytes back into the right credential type (discriminated on ``type``)."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CredentialError(
                "sealed credential payload is not JSON; the frontend must re-seal the credential"
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != PAYLOAD_FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else None
            raise CredentialError(
                f"sealed credential payload has format {found!r}, this gwms reads format "
                f"{PAYLOAD_FORMAT}; upgrade gwms or have the frontend re-seal the credential"
            )
        return parse_credential(doc.get("credential"), where="sealed credential payload")


class X509ProxyCredential(Credential):
    """An X.509 proxy (PEM chain, usually with its private key) delegated by the frontend."""

    LABEL: ClassVar[str] = "proxy"

    type: Literal[CredentialType.X509_PROXY] = CredentialType.X509_PROXY
    pem: SecretStr
    _not_after: datetime = PrivateAttr()

    @field_validator("pem")
    @classmethod
    def _has_certificates(cls, value: SecretStr) -> SecretStr:
        _certificates(value)
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._not_after = min(c.not_valid_after_utc for c in _certificates(self.pem))

    def expires_at(self) -> datetime:
        """The earliest notAfter in the chain: the proxy dies with its shortest-lived link."""
        return self._not_after


class AwsKeyPairCredential(Credential):
    """An AWS access key id and secret access key."""

    LABEL: ClassVar[str] = "AWS key pair"

    type: Literal[CredentialType.AWS_KEY_PAIR] = CredentialType.AWS_KEY_PAIR
    access_key_id: str = Field(pattern=r"^[A-Z0-9]{16,128}$")
    secret_access_key: SecretStr = Field(min_length=16, max_length=256)


class AwsRoleCredential(Credential):
    """An IAM role the factory assumes (STS AssumeRole) on the frontend's behalf."""

    LABEL: ClassVar[str] = "AWS role"

    type: Literal[CredentialType.AWS_ROLE] = CredentialType.AWS_ROLE
    role_arn: str = Field(
        max_length=600, pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+$"
    )
    external_id: SecretStr | None = Field(default=None, min_length=2, max_length=1224)
    session_duration_seconds: int = Field(default=3600, ge=900, le=43200)


class OpenStackAppCredential(Credential):
    """A Keystone v3 application credential."""

    LABEL: ClassVar[str] = "OpenStack application credential"

    type: Literal[CredentialType.OPENSTACK_APP_CREDENTIAL] = CredentialType.OPENSTACK_APP_CREDENTIAL
    auth_url: str
    app_credential_id: str = Field(min_length=1, max_length=255, pattern=r"^\S+$")
    app_credential_secret: SecretStr = Field(min_length=1, max_length=4096)
    region: str | None = None
    project: str | None = None

    @field_validator("auth_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL of the Keystone v3 endpoint")
        return value


class IdTokenCredential(Credential):
    """An HTCondor IDTOKEN (a JWT); ``exp`` is read from its payload, not verified here."""

    LABEL: ClassVar[str] = "idtoken"

    type: Literal[CredentialType.IDTOKEN] = CredentialType.IDTOKEN
    token: SecretStr
    _claims: dict[str, Any] = PrivateAttr()

    @field_validator("token")
    @classmethod
    def _is_jwt(cls, value: SecretStr) -> SecretStr:
        _jwt_claims(value)
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._claims = _jwt_claims(self.token)

    @property
    def exp(self) -> int | None:
        """The token's ``exp`` claim (epoch seconds), or None for a non-expiring token."""
        exp = self._claims.get("exp")
        return int(exp) if exp is not None else None

    def expires_at(self) -> datetime | None:
        exp = self.exp
        return datetime.fromtimestamp(exp, UTC) if exp is not None else None


AnyCredential = Annotated[
    X509ProxyCredential
    | AwsKeyPairCredential
    | AwsRoleCredential
    | OpenStackAppCredential
    | IdTokenCredential,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[AnyCredential] = TypeAdapter(AnyCredential)


def parse_credential(data: Any, *, where: str = "credential") -> AnyCredential:
    """Validate a mapping into its credential type; errors name the field, never the value."""
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        loc = list(first["loc"])
        if len(loc) > 1 and loc[0] in set(CredentialType):  # drop the union's tag
            loc = loc[1:]
        field = ".".join(str(p) for p in loc) or "(top level)"
        raise CredentialError(
            f"{where}: field {field}: {first['msg']}; fix the credential and seal it again"
        ) from None


def seal_credential(
    cred: Credential, public_key: PublicKey | str | bytes, context: bytes = b""
) -> str:
    """Seal a credential to the factory key; ``context`` binds e.g. factory name and ad type."""
    return seal(cred.to_sealed_payload(), public_key, context=context)


def open_credential(
    envelope: str, keyring_or_private_key: KeyResolver | PrivateKey, context: bytes = b""
) -> AnyCredential:
    """Open an envelope made by `seal_credential` with the same ``context``."""
    return Credential.from_sealed_payload(
        open_sealed(envelope, keyring_or_private_key, context=context)
    )


def matches_trust_domain(cred: Credential, entry_trust_domain: str) -> bool:
    """A credential may be used on an entry only if their trust domains are equal."""
    return cred.trust_domain == entry_trust_domain


def require_trust_domain(cred: Credential, entry_trust_domain: str, entry: str) -> None:
    """Raise a clear error when a credential is offered to an entry of another trust domain."""
    if not matches_trust_domain(cred, entry_trust_domain):
        raise CredentialError(
            f"{cred.LABEL} {cred.id} is for trust domain {cred.trust_domain!r} but entry "
            f"{entry} is in {entry_trust_domain!r}; give the frontend group a credential "
            "for that trust domain"
        )


def _certificates(pem: SecretStr) -> list[x509.Certificate]:
    text = pem.get_secret_value()
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError("holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        certs = x509.load_pem_x509_certificates(text.encode("ascii", "replace"))
    except ValueError:
        raise ValueError("holds a PEM certificate block that does not parse") from None
    return certs


def _jwt_claims(token: SecretStr) -> dict[str, Any]:
    parts = token.get_secret_value().strip().split(".")
    if len(parts) != 3:
        raise ValueError("is not a JWT (three base64url parts separated by dots)")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        raise ValueError("has a JWT payload that is not base64url JSON") from None
    if not isinstance(claims, dict):
        raise ValueError("has a JWT payload that is not a JSON object")
    exp = claims.get("exp")
    if exp is not None and (isinstance(exp, bool) or not isinstance(exp, int | float)):
        raise ValueError("has an 'exp' claim that is not a number of seconds")
    if exp is not None and not 0 <= exp < 253402300800:  # up to year 9999
        raise ValueError("has an 'exp' claim outside 1970..9999")
    return claims


def _human(delta: timedelta) -> str:
    """Durations for reasons, rounded down: '45 s', '3 min', '1 h 30 min', '12 h', '3 d'."""
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes and hours < 10 else f"{hours} h"
    return f"{hours // 24} d"
