"""Fixtures shared by the local-VM suites (test_local_provider, test_factory_local).

A module that needs another pilot user (test_bootstrap_run) defines its own `pilot_user`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.test_local_provider import VmHost, pilot_user_for_vms, vm_host


@pytest.fixture(scope="session")
def pilot_user() -> Iterator[str | None]:
    with pilot_user_for_vms() as user:
        yield user


@pytest.fixture
def host() -> Iterator[VmHost]:
    with vm_host() as vms:
        yield vms
