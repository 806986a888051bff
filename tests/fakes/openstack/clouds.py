"""Write a `clouds.yaml` (0600: it holds the fake's secrets) that points at a running fake."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from openstack.config import OpenStackConfig
from openstack.connection import Connection

from tests.fakes.openstack.server import FakeOpenStack

PASSWORD_CLOUD = "gwms-fake"
APP_CRED_CLOUD = "gwms-fake-appcred"


def clouds_config(fake: FakeOpenStack) -> dict[str, Any]:
    """Two clouds on the same fake: one with a password, one with an application credential."""
    creds = fake.credentials
    common = {"region_name": "RegionOne", "interface": "public", "identity_api_version": 3}
    return {
        "clouds": {
            PASSWORD_CLOUD: {
                "auth_type": "password",
                "auth": {
                    "auth_url": fake.auth_url,
                    "username": creds.username,
                    "password": creds.password,
                    "project_name": creds.project_name,
                    "user_domain_name": creds.domain_name,
                    "project_domain_name": creds.domain_name,
                },
                **common,
            },
            APP_CRED_CLOUD: {
                "auth_type": "v3applicationcredential",
                "auth": {
                    "auth_url": fake.auth_url,
                    "application_credential_id": creds.app_cred_id,
                    "application_credential_secret": creds.app_cred_secret,
                },
                **common,
            },
        }
    }


def write_clouds_yaml(fake: FakeOpenStack, path: Path) -> Path:
    """Create `path` with mode 0600 (never chmod-ed after the secrets are in it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        yaml.safe_dump(clouds_config(fake), stream, sort_keys=False)
    return path


@dataclass
class OpenStackCloud:
    """A running fake and how to reach it: `clouds.yaml` path, cloud names, `connect()`."""

    fake: FakeOpenStack
    clouds_yaml: Path
    cloud: str = PASSWORD_CLOUD
    app_cred_cloud: str = APP_CRED_CLOUD

    def connect(self, cloud: str | None = None, **overrides: Any) -> Connection:
        """An openstacksdk connection from this clouds.yaml only (no env, no ~/.config)."""
        config = OpenStackConfig(
            config_files=[str(self.clouds_yaml)],
            vendor_files=[],
            secure_files=[],
            load_envvars=False,
        )
        return Connection(config=config.get_one(cloud=cloud or self.cloud, **overrides))
