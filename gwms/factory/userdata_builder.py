"""Build one batch's UserData: derive its short-lived proxy, sign its upload token, encode.

Everything here happens before the batch is journaled or the cloud is called, so a proxy
that cannot be derived or UserData over the provider's limit fails the launch with no VM
and no journal row (DESIGN.md §4, §5). The per-batch proxy lives for the entry's maximum
lifetime plus `proxy_margin`, cut to what the delegated proxy has left.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gwms.config.factory import Entry
from gwms.credentials.model import IdTokenCredential, X509ProxyCredential
from gwms.credentials.proxy import Proxy, derive_proxy, load_proxy
from gwms.errors import CredentialError, GwmsError
from gwms.factory import upload_tokens
from gwms.factory.journal import epoch
from gwms.factory.web import log_upload_url, pilot_files_url
from gwms_context import userdata as codec

# UserData limit by cloud type; local instances take EC2's, the strictest, so a trial
# run catches what EC2 would refuse.
USERDATA_LIMITS: dict[str, str] = {"ec2": "ec2", "openstack": "openstack", "local": "ec2"}


class LaunchRefused(GwmsError):
    """A batch cannot be launched (credentials, UserData size); nothing was created."""


@dataclass(frozen=True)
class BatchUserData:
    """The encoded UserData of one batch and what its proxy turned out to be."""

    userdata: bytes = field(repr=False)
    proxy_not_after: datetime
    proxy_clamped: bool


def per_batch_proxy(delegated: X509ProxyCredential, entry: Entry, now: datetime) -> Proxy:
    """A new proxy for one batch, derived from the frontend's delegated proxy."""
    try:
        parent = load_proxy(delegated.pem.get_secret_value().encode(), now=now)
        hours = (entry.lifetimes.max + entry.proxy_margin) / 3600
        return derive_proxy(parent, hours, limited=parent.limited, now=now)
    except CredentialError as exc:
        raise LaunchRefused(
            f"entry {entry.name}: cannot derive a glidein proxy from credential {delegated.id}"
            f" ({exc}); the frontend must delegate a valid proxy"
        ) from None


def pilot_args(entry: Entry) -> list[str]:
    """What the pilot is told by the entry: idle shutdown and the entry's attributes, which
    `glidein_startup.sh` puts in glidein_config and on the Machine ad; then the operator's
    own `pilot_args`, last, so they win."""
    args: list[str] = []
    if entry.lifetimes.idle_shutdown:
        args += ["-idle", str(entry.lifetimes.idle_shutdown)]
    for name, value in entry.attributes.items():
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        args += [f"-param_{name}", shown]
    return [*args, *entry.pilot_args]


def build_batch_userdata(
    *,
    factory: str,
    entry: Entry,
    cloud_type: str,
    client: str,
    batch_id: str,
    web_base: str,
    files: Mapping[str, str],
    upload_secret: bytes,
    proxy: X509ProxyCredential,
    idtoken: IdTokenCredential | None,
    now: datetime,
) -> BatchUserData:
    """Derive the batch proxy and encode the UserData v1 document; LaunchRefused if unusable."""
    glidein_proxy = per_batch_proxy(proxy, entry, now)
    life = entry.lifetimes
    upload_expires = now + timedelta(seconds=life.max + entry.proxy_margin)
    document = {
        "version": codec.FORMAT_VERSION,
        "factory": factory,
        "entry": entry.name,
        "client": client,
        "glidein_id": batch_id,
        "issued_at": epoch(now),
        "web_base": pilot_files_url(web_base),
        "files": dict(files),
        "pilot_args": pilot_args(entry),
        "lifetimes": {"max_seconds": life.max, "retire_seconds": life.retire},
        "log_upload": {
            "url": log_upload_url(web_base, entry.name, client, batch_id),
            "token": upload_tokens.issue(
                upload_secret, entry.name, client, batch_id, upload_expires
            ),
        },
        "overlays": [],
        "allow_privileged_overlays": entry.allow_privileged_overlays,
        "credentials": {
            "x509_proxy": glidein_proxy.to_pem().decode("ascii"),
            "idtoken": idtoken.token.get_secret_value() if idtoken is not None else None,
        },
    }
    try:
        raw = codec.encode(document, limit=USERDATA_LIMITS.get(cloud_type))
    except codec.UserDataError as exc:
        raise LaunchRefused(f"entry {entry.name}, batch {batch_id}: {exc}") from None
    return BatchUserData(
        userdata=raw,
        proxy_not_after=glidein_proxy.cert.not_valid_after_utc,
        proxy_clamped=glidein_proxy.clamped,
    )


__all__ = [
    "USERDATA_LIMITS",
    "BatchUserData",
    "LaunchRefused",
    "build_batch_userdata",
    "per_batch_proxy",
]
