"""`--cloud openstack`: the project's OpenStack fake as the cloud, local VMs behind its servers.

The fake (Keystone v3, Nova, Neutron, Glance over HTTP) lives in the source tree under
`tests/fakes/openstack/`, so this cloud needs a checkout. It runs as a child process
(`python -m tests.fakes.openstack`) that writes the clouds.yaml the factory reads; the
watcher (`clouds.WatchedCloud`) gives each BUILD/ACTIVE server a local VM with the
server's user data and launch index, and deletes the server when its VM powers off.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import gwms
from gwms.demo.clouds import CloudInstance, WatchedCloud
from gwms.demo.configs import OPENSTACK_CLOUD
from gwms.demo.supervisor import wait_until
from gwms.errors import GwmsError

LIVE_NOVA_STATES = ("BUILD", "ACTIVE")


def checkout_root() -> Path:
    """The source tree holding `tests/fakes/openstack`, or a one-sentence error."""
    root = Path(gwms.__file__).resolve().parent.parent
    if not (root / "tests" / "fakes" / "openstack" / "__main__.py").is_file():
        raise GwmsError(
            f"--cloud openstack runs the OpenStack fake from a source checkout, and {root} has"
            " no tests/fakes/openstack; run the demo from a clone of gwms-cloud"
        )
    return root


class OpenStackCloud(WatchedCloud):
    """The OpenStack fake; its servers get local VMs."""

    kind = "openstack"

    def start_api(self) -> None:
        root = checkout_root()
        clouds_yaml = self.layout.openstack_clouds_yaml
        clouds_yaml.unlink(missing_ok=True)  # the fake creates it (0600) with its secrets
        self.supervisor.start(
            "openstack_fake",
            [sys.executable, "-m", "tests.fakes.openstack", "--clouds-yaml", str(clouds_yaml),
             "--port", str(self.layout.cloud_port)],
            env={"PYTHONPATH": str(root)},
            ready_url=f"{self.layout.cloud_url}/",
        )  # fmt: skip
        if not wait_until(clouds_yaml.exists, 10):
            raise GwmsError(f"the OpenStack fake wrote no {clouds_yaml}; see its log")
        from openstack.config import OpenStackConfig
        from openstack.connection import Connection

        config = OpenStackConfig(
            config_files=[str(clouds_yaml)], vendor_files=[], secure_files=[], load_envvars=False
        )
        self._conn = Connection(config=config.get_one(cloud=OPENSTACK_CLOUD))

    def list_instances(self) -> list[CloudInstance]:
        return [
            CloudInstance(
                id=server.id,
                live=server.status in LIVE_NOVA_STATES,
                launch_index=_launch_index(server),
                tags={str(k): str(v) for k, v in (server.metadata or {}).items()},
                instance_type="local",
            )
            for server in self._conn.compute.servers(details=True)
        ]

    def user_data(self, instance_id: str) -> bytes:
        encoded = self._conn.compute.get_server(instance_id).user_data
        return base64.b64decode(encoded) if encoded else b""

    def terminate(self, instance_ids: list[str]) -> None:
        for instance_id in instance_ids:
            self._conn.compute.delete_server(instance_id, ignore_missing=True)


def _launch_index(server: Any) -> int:
    if getattr(server, "launch_index", None) is not None:
        return int(server.launch_index)
    name = str(server.name or "")
    tail = name.rsplit("-", 1)[-1]
    return int(tail) - 1 if tail.isdigit() else 0


__all__ = ["OpenStackCloud", "checkout_root"]
