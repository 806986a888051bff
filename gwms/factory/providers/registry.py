"""Build the `Provider` for a configured cloud, and the launch options an entry implies.

Provider modules are imported only when a cloud of their type is configured, so a factory
with only EC2 clouds never imports openstacksdk. A new cloud type is a new module with a
class taking `(cloud, *, factory=..., credential=...)`, and one line in `PROVIDERS`.
"""

from __future__ import annotations

import importlib
from typing import Any

from gwms.config.factory import Ec2Cloud, Entry, LocalCloud, OpenStackCloud
from gwms.credentials.model import Credential
from gwms.factory.providers.base import Provider, ProviderError

# cloud type -> "module:class"
PROVIDERS = {
    "ec2": "gwms.factory.providers.ec2:Ec2Provider",
    "openstack": "gwms.factory.providers.openstack:OpenStackProvider",
    "local": "gwms.factory.providers.local:LocalProvider",
}


def build_provider(
    cloud: Ec2Cloud | OpenStackCloud | LocalCloud,
    *,
    factory: str,
    credential: Credential | None = None,
    **overrides: Any,
) -> Provider:
    """The provider for `cloud`, acting for `factory`.

    `credential` is the frontend's cloud credential, required when the cloud's credentials
    are `from_frontend`; `overrides` go to the provider's constructor (clock, sleep, ...).
    """
    target = PROVIDERS.get(cloud.type)
    if target is None:
        raise ProviderError(
            f"cloud {cloud.name} has type {cloud.type}, which no provider serves;"
            f" use one of {', '.join(sorted(PROVIDERS))}"
        )
    module_name, class_name = target.split(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ProviderError(
            f"cloud {cloud.name}: the {cloud.type} provider cannot be loaded ({exc});"
            " install gwms-cloud with its cloud dependencies"
        ) from exc
    kwargs: dict[str, Any] = {"factory": factory, **overrides}
    if getattr(cloud, "all_or_nothing", False):
        kwargs.setdefault("all_or_nothing", True)
    if credential is not None:
        kwargs["credential"] = credential
    return cls(cloud, **kwargs)


def entry_options(entry: Entry) -> dict[str, object]:
    """The `LaunchRequest.options` an entry implies: SSH key, network, groups, zone, spot."""
    options: dict[str, object] = {}
    if entry.key_name:
        options["key_name"] = entry.key_name
    if entry.network:
        options["network"] = entry.network
    if entry.security_groups:
        options["security_groups"] = list(entry.security_groups)
    if entry.availability_zone:
        options["availability_zone"] = entry.availability_zone
    if entry.spot is not None:
        options["spot"] = {"max_price": entry.spot.max_price}
    return options


__all__ = ["PROVIDERS", "build_provider", "entry_options"]
