"""Which credential the frontend sends to each entry, and why the others were not sent.

Credential files are read every cycle (operators renew proxies in place). A credential is
offered to an entry only if it loaded, its trust domain is the entry's, the entry accepts
its type, and it lives at least its configured ``min_lifetime`` more. Every credential
passed over leaves one exact reason ("proxy vo1_pilot expires in 3 min < 2 h minimum"),
so an entry without a credential is never reported as a mere "no match".
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from gwms.config.frontend import Credential as CredentialConfig
from gwms.credentials.model import (
    AnyCredential,
    AwsKeyPairCredential,
    AwsRoleCredential,
    CredentialType,
    IdTokenCredential,
    OpenStackAppCredential,
    X509ProxyCredential,
    parse_credential,
)
from gwms.errors import CredentialError
from gwms.protocol.entry import EntryAd

MAX_FILE_BYTES = 1024 * 1024
NO_CREDENTIAL = "no usable credential"

_LABELS = {
    CredentialType.X509_PROXY: X509ProxyCredential.LABEL,
    CredentialType.IDTOKEN: IdTokenCredential.LABEL,
    CredentialType.AWS_KEY_PAIR: AwsKeyPairCredential.LABEL,
    CredentialType.AWS_ROLE: AwsRoleCredential.LABEL,
    CredentialType.OPENSTACK_APP_CREDENTIAL: OpenStackAppCredential.LABEL,
}
# Types whose file is a YAML mapping of the model's fields (id, type, trust domain come
# from the frontend configuration).
_MAPPING_TYPES = {
    CredentialType.AWS_KEY_PAIR,
    CredentialType.AWS_ROLE,
    CredentialType.OPENSTACK_APP_CREDENTIAL,
}
_FROM_CONFIG = ("id", "type", "trust_domain")


def label(config: CredentialConfig) -> str:
    """How reasons name a credential: "proxy vo1_pilot", "idtoken pilot-token"."""
    return f"{_LABELS[CredentialType(config.type)]} {config.id}"


@dataclass(frozen=True)
class LoadedCredential:
    """One configured credential as read this cycle: the model, or why it could not be read."""

    config: CredentialConfig
    credential: AnyCredential | None = None
    error: str | None = None

    @property
    def id(self) -> str:
        return self.config.id

    def __repr__(self) -> str:
        state = "loaded" if self.credential is not None else f"error={self.error!r}"
        return f"LoadedCredential({label(self.config)}, {state})"


@dataclass(frozen=True)
class CredentialChoice:
    """The credential chosen for one entry, and one reason per configured one passed over."""

    entry: str
    credential: AnyCredential | None
    rejected: tuple[str, ...] = ()
    detail: str = ""  # for the log: why the chosen one is fine ("... expires in 11 h")
    # The first usable credential of each other type the entry accepts: an IDTOKEN for the
    # pilot's collector beside the proxy, a cloud key pair beside both.
    companions: tuple[AnyCredential, ...] = ()

    @property
    def usable(self) -> bool:
        return self.credential is not None

    @property
    def credentials(self) -> tuple[AnyCredential, ...]:
        return () if self.credential is None else (self.credential, *self.companions)

    @property
    def credential_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.credentials)

    def curb_reasons(self) -> tuple[str, ...]:
        """What the monitoring ad says when no credential could be used (else nothing)."""
        if self.credential is not None:
            return ()
        if not self.rejected:
            return (f"{NO_CREDENTIAL}: no credential is configured for this group",)
        return tuple(f"{NO_CREDENTIAL}: {reason}" for reason in self.rejected)


def load_credential(config: CredentialConfig) -> LoadedCredential:
    """Read one credential file; problems become the credential's error, never an exception."""
    try:
        return LoadedCredential(config, credential=_parse(config, _read_secret(config)))
    except CredentialError as exc:
        return LoadedCredential(config, error=str(exc))


def load_credentials(configs: Sequence[CredentialConfig]) -> list[LoadedCredential]:
    """Read every configured credential, in configuration order."""
    return [load_credential(c) for c in configs]


def choose_credential(
    entry: EntryAd, candidates: Sequence[LoadedCredential], now: datetime | None = None
) -> CredentialChoice:
    """The first candidate (configuration order) usable on ``entry``, with reasons for the rest."""
    now = now or datetime.now(UTC)
    rejected: list[str] = []
    chosen: dict[str, AnyCredential] = {}  # credential type -> first usable, config order
    detail = ""
    for loaded in candidates:
        usable, reason = check_credential(entry, loaded, now)
        if not usable:
            if not chosen:
                rejected.append(reason)
            continue
        assert loaded.credential is not None
        if not chosen:
            detail = reason
        chosen.setdefault(loaded.credential.type.value, loaded.credential)
    if not chosen:
        return CredentialChoice(entry.name, None, tuple(rejected))
    first, *others = chosen.values()
    return CredentialChoice(entry.name, first, tuple(rejected), detail, tuple(others))


def check_credential(entry: EntryAd, loaded: LoadedCredential, now: datetime) -> tuple[bool, str]:
    """Whether ``loaded`` may go to ``entry``, and the reason, most structural problem first."""
    name = label(loaded.config)
    cred = loaded.credential
    if cred is None:
        return False, f"{name} cannot be used: {loaded.error}"
    if cred.trust_domain != entry.trust_domain:
        return False, (
            f"{name} is for trust domain {cred.trust_domain!r} but entry {entry.name} is in "
            f"{entry.trust_domain!r}"
        )
    if cred.type.value not in entry.auth_methods:
        return False, (
            f"{name} is of type {cred.type.value}, which entry {entry.name} does not accept "
            f"(it accepts {', '.join(entry.auth_methods)})"
        )
    minimum = timedelta(seconds=loaded.config.min_lifetime)
    return cred.usable(minimum, now)


# -- reading files ------------------------------------------------------------------------------


def _read_secret(config: CredentialConfig) -> str:
    """The file's text, refusing files others can read (secrets are 0600) and huge files."""
    path = Path(config.path)
    where = f"{label(config)} (credentials[].path {path})"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise CredentialError(
            f"{where} cannot be opened ({exc.strerror}); create the file or fix the path"
        ) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CredentialError(f"{where} is not a regular file; point path at the secret file")
        if info.st_mode & 0o077:
            raise CredentialError(
                f"{where} is readable by group or others (mode {stat.S_IMODE(info.st_mode):04o});"
                f" run chmod 600 {path}"
            )
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise CredentialError(f"{where} is larger than 1 MiB; it is not a credential file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialError(f"{where} is not UTF-8 text; store the credential as text") from None


def _parse(config: CredentialConfig, text: str) -> AnyCredential:
    kind = CredentialType(config.type)
    where = f"{label(config)} ({config.path})"
    fields: dict[str, Any] = {
        "type": kind.value,
        "id": config.id,
        "trust_domain": config.trust_domain,
    }
    if kind is CredentialType.X509_PROXY:
        fields["pem"] = text
    elif kind is CredentialType.IDTOKEN:
        fields["token"] = text.strip()
    elif kind in _MAPPING_TYPES:
        fields = {**_yaml_mapping(text, where), **fields}
    return parse_credential(fields, where=where)


def _yaml_mapping(text: str, where: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        # The YAML message may quote the secret: say where, never what.
        raise CredentialError(f"{where} is not valid YAML{line}; fix the file") from None
    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise CredentialError(
            f"{where} must be a YAML mapping of the credential's fields (e.g. access_key_id:"
            " and secret_access_key:); fix the file"
        )
    return {k: v for k, v in doc.items() if k not in _FROM_CONFIG}
