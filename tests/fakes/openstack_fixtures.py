"""Pytest fixtures: a fake OpenStack on 127.0.0.1 with a `clouds.yaml` for it in tmp.

Load them with `pytest_plugins = ["tests.fakes.openstack_fixtures"]` in a test module (or
a conftest). The fake runs in a thread of the test process on a free port and is stopped
by its handle when the test ends. `OpenStackCloud` (what the fixtures yield) lives in
`tests.fakes.openstack`, so importing it does not import this plugin module early.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.openstack import FakeOpenStack, OpenStackCloud, write_clouds_yaml


@pytest.fixture
def openstack_cloud(tmp_path: Path) -> Iterator[OpenStackCloud]:
    """A fresh fake OpenStack per test, and its clouds.yaml (0600) in tmp_path."""
    with FakeOpenStack() as fake:
        clouds_yaml = write_clouds_yaml(fake, tmp_path / "clouds.yaml")
        yield OpenStackCloud(fake=fake, clouds_yaml=clouds_yaml)


@pytest.fixture
def openstack_cloud_env(
    openstack_cloud: OpenStackCloud, monkeypatch: pytest.MonkeyPatch
) -> OpenStackCloud:
    """The fake, with OS_CLIENT_CONFIG_FILE set so `openstack.connect(cloud=...)` finds it."""
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(openstack_cloud.clouds_yaml))
    for name in ("OS_CLOUD", "OS_AUTH_URL", "OS_PASSWORD", "OS_USERNAME", "OS_PROJECT_NAME"):
        monkeypatch.delenv(name, raising=False)
    return openstack_cloud
