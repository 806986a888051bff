"""The fake cloud's state (one project's servers, images, networks, ...) behind one lock.

Everything the HTTP handlers and the test hooks read or change lives here, so that one
`threading.RLock` makes every request atomic. Time-driven transitions (BUILD -> ACTIVE,
deleting -> gone) are applied lazily by `advance()`, called under the lock before any read.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import itertools
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

UndeletableMode = Literal["stays", "error"]


def iso(moment: datetime, *, micro: bool = False) -> str:
    """Timestamps as OpenStack writes them: UTC with a trailing Z."""
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ"
    return moment.astimezone(UTC).strftime(fmt)


def now_utc() -> datetime:
    return datetime.now(UTC)


def same_secret(given: object, expected: str) -> bool:
    """Constant-time comparison that tolerates a missing or non-string value."""
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class Credentials:
    """The one user, project and application credential the fake accepts (secrets not in repr)."""

    username: str = "gwms"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16), repr=False)
    user_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    project_name: str = "gwms"
    project_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    domain_name: str = "Default"
    domain_id: str = "default"
    app_cred_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    app_cred_name: str = "gwms-factory"
    app_cred_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)

    def domain_matches(self, ref: object) -> bool:
        """A `{"id": ...}` or `{"name": ...}` domain reference names our one domain."""
        if not isinstance(ref, dict):
            return False
        if "id" in ref:
            return ref["id"] == self.domain_id
        return ref.get("name") == self.domain_name


@dataclass
class Token:
    value: str = field(repr=False)
    expires_at: datetime
    issued_at: datetime
    methods: list[str]
    scoped: bool
    app_cred: bool
    audit_id: str = field(default_factory=lambda: secrets.token_urlsafe(16))


@dataclass
class Server:
    """A Nova server; `status`/`vm_state` move with time through `CloudState.advance()`."""

    id: str
    seq: int
    name: str
    image_id: str
    flavor_id: str
    created_at: datetime
    ready_at: float  # time.monotonic() at which BUILD becomes ACTIVE
    user_data: str | None = field(default=None, repr=False)  # base64, exactly as sent
    metadata: dict[str, str] = field(default_factory=dict)
    key_name: str | None = None
    port_ids: list[str] = field(default_factory=list)
    launch_index: int = 0
    reservation_id: str = ""
    availability_zone: str = "nova"
    security_groups: list[str] = field(default_factory=lambda: ["default"])
    config_drive: str = ""
    description: str | None = None
    status: str = "BUILD"
    vm_state: str = "building"
    task_state: str | None = "spawning"
    power_state: int = 0
    launched_at: datetime | None = None
    updated_at: datetime | None = None
    gone_at: float | None = None  # time.monotonic() at which a deleted server disappears
    fault: dict[str, Any] | None = None


class CloudState:
    """One project's resources; hold `lock` for anything that reads or writes them."""

    def __init__(self, credentials: Credentials) -> None:
        self.lock = threading.RLock()
        self.credentials = credentials
        self.token_ttl = 3600.0
        self.boot_delay = 0.0
        self.delete_delay = 0.0
        self.max_limit = 1000  # Nova's osapi_max_limit: the page size when no limit is given
        self.quota: dict[str, int] = {"instances": 100, "cores": 400, "ram": 1_024_000}
        self.tokens: dict[str, Token] = {}
        self.flavors: dict[str, dict[str, Any]] = {}
        self.images: dict[str, dict[str, Any]] = {}
        self.image_data: dict[str, bytes] = {}
        self.networks: dict[str, dict[str, Any]] = {}
        self.subnets: dict[str, dict[str, Any]] = {}
        self.ports: dict[str, dict[str, Any]] = {}
        self.security_groups: dict[str, dict[str, Any]] = {}
        self.floating_ips: dict[str, dict[str, Any]] = {}
        self.keypairs: dict[str, dict[str, Any]] = {}
        self.servers: dict[str, Server] = {}
        self.undeletable: dict[str, UndeletableMode] = {}
        self._building: set[str] = set()
        self._deleting: set[str] = set()
        self._seq = itertools.count(1)
        self._next_host: dict[str, int] = {}
        self._seed()

    # -- tokens ------------------------------------------------------------------------

    def issue_token(self, methods: list[str], *, scoped: bool, app_cred: bool) -> Token:
        with self.lock:
            issued = now_utc()
            token = Token(
                value="gAAAAA" + secrets.token_urlsafe(48),
                issued_at=issued,
                expires_at=issued + timedelta(seconds=self.token_ttl),
                methods=methods,
                scoped=scoped,
                app_cred=app_cred,
            )
            self.tokens[token.value] = token
            return token

    def valid_token(self, value: str | None) -> Token | None:
        with self.lock:
            token = self.tokens.get(value or "")
            if token is None or token.expires_at <= now_utc():
                return None
            return token

    # -- time --------------------------------------------------------------------------

    def advance(self) -> None:
        """Apply the transitions whose time has come (call with the lock held, or take it)."""
        with self.lock:
            clock = time.monotonic()
            for server_id in [s for s in self._building if self.servers[s].ready_at <= clock]:
                self._building.discard(server_id)
                server = self.servers[server_id]
                server.status, server.vm_state, server.task_state = "ACTIVE", "active", None
                server.power_state = 1
                server.launched_at = server.updated_at = now_utc()
            for server_id in list(self._deleting):
                server = self.servers[server_id]
                if server.gone_at is not None and server.gone_at <= clock:
                    self._forget(server_id)

    # -- servers -----------------------------------------------------------------------

    def add_server(self, server: Server) -> None:
        with self.lock:
            self.servers[server.id] = server
            if server.status == "BUILD":
                self._building.add(server.id)

    def next_seq(self) -> int:
        with self.lock:
            return next(self._seq)

    def delete_server(self, server_id: str) -> None:
        """Nova's DELETE: the server goes (after `delete_delay`) unless marked undeletable."""
        with self.lock:
            server = self.servers[server_id]
            mode = self.undeletable.get(server_id)
            if mode == "stays":
                return
            if mode == "error":
                self._building.discard(server_id)
                server.status, server.vm_state, server.task_state = "ERROR", "error", None
                server.updated_at = now_utc()
                server.fault = {
                    "code": 500,
                    "message": "Failed to terminate the instance (the fake refuses).",
                    "created": iso(now_utc()),
                }
                return
            server.task_state = "deleting"
            server.gone_at = time.monotonic() + self.delete_delay
            self._deleting.add(server_id)
            self.advance()

    def _forget(self, server_id: str) -> None:
        server = self.servers.pop(server_id)
        self._building.discard(server_id)
        self._deleting.discard(server_id)
        for port_id in server.port_ids:
            self.ports.pop(port_id, None)
            for fip in self.floating_ips.values():
                if fip["port_id"] == port_id:  # Neutron disassociates on port delete
                    fip.update(port_id=None, fixed_ip_address=None, status="DOWN")

    def usage(self) -> dict[str, int]:
        """What the live servers use, for quotas and `limits`."""
        with self.lock:
            live = [s for s in self.servers.values() if s.gone_at is None]
            flavors = [self.flavors[s.flavor_id] for s in live if s.flavor_id in self.flavors]
            return {
                "instances": len(live),
                "cores": sum(f["vcpus"] for f in flavors),
                "ram": sum(f["ram"] for f in flavors),
            }

    # -- ports -------------------------------------------------------------------------

    def create_port(self, network_id: str, device_id: str) -> dict[str, Any]:
        """A port on `network_id` with the next free address of its first subnet."""
        with self.lock:
            network = self.networks[network_id]
            fixed_ips = []
            for subnet_id in network["subnets"][:1]:
                fixed_ips.append({"subnet_id": subnet_id, "ip_address": self._allocate(subnet_id)})
            port_id = str(uuid.uuid4())
            mac = "fa:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
            stamp = iso(now_utc())
            port = {
                "id": port_id,
                "name": "",
                "network_id": network_id,
                "device_id": device_id,
                "device_owner": "compute:nova",
                "mac_address": mac,
                "fixed_ips": fixed_ips,
                "status": "ACTIVE",
                "admin_state_up": True,
                "security_groups": [self.default_security_group_id()],
                "binding:vnic_type": "normal",
                "port_security_enabled": True,
                "tenant_id": self.credentials.project_id,
                "project_id": self.credentials.project_id,
                "description": "",
                "tags": [],
                "created_at": stamp,
                "updated_at": stamp,
                "revision_number": 1,
            }
            self.ports[port_id] = port
            return port

    def _allocate(self, subnet_id: str) -> str:
        """The next free address of a subnet (from .10 up; addresses are never reused)."""
        host = self._next_host.get(subnet_id, 10)
        self._next_host[subnet_id] = host + 1
        return str(ipaddress.ip_network(self.subnets[subnet_id]["cidr"])[host])

    def create_floating_ip(self, network_id: str, port_id: str | None) -> dict[str, Any]:
        """A floating IP from an external network, associated with `port_id` when given."""
        with self.lock:
            network = self.networks[network_id]
            stamp = iso(now_utc())
            fip_id = str(uuid.uuid4())
            fip = {
                "id": fip_id,
                "floating_network_id": network_id,
                "floating_ip_address": self._allocate(network["subnets"][0]),
                "port_id": None,
                "fixed_ip_address": None,
                "router_id": None,
                "status": "DOWN",
                "description": "",
                "dns_domain": "",
                "dns_name": "",
                "port_details": None,
                "tenant_id": self.credentials.project_id,
                "project_id": self.credentials.project_id,
                "tags": [],
                "created_at": stamp,
                "updated_at": stamp,
                "revision_number": 1,
            }
            self.floating_ips[fip_id] = fip
            self.associate_floating_ip(fip_id, port_id)
            return fip

    def associate_floating_ip(self, fip_id: str, port_id: str | None) -> None:
        with self.lock:
            fip = self.floating_ips[fip_id]
            port = self.ports.get(port_id or "")
            fixed = port["fixed_ips"][0]["ip_address"] if port and port["fixed_ips"] else None
            fip.update(
                port_id=port_id if port else None,
                fixed_ip_address=fixed,
                status="ACTIVE" if port else "DOWN",
                updated_at=iso(now_utc()),
            )

    def default_security_group_id(self) -> str:
        return next(g["id"] for g in self.security_groups.values() if g["name"] == "default")

    # -- seed data ---------------------------------------------------------------------

    def _seed(self) -> None:
        """What a fresh devstack-like project has: flavors, one image, two networks."""
        for flavor_id, name, vcpus, ram, disk in (
            ("1", "m1.tiny", 1, 512, 1),
            ("2", "m1.small", 1, 2048, 20),
            ("3", "m1.medium", 2, 4096, 40),
            ("4", "m1.large", 4, 8192, 80),
            ("5", "m1.xlarge", 8, 16384, 160),
        ):
            self.flavors[flavor_id] = {
                "id": flavor_id,
                "name": name,
                "vcpus": vcpus,
                "ram": ram,
                "disk": disk,
                "swap": 0,
                "ephemeral": 0,
                "is_public": True,
                "rxtx_factor": 1.0,
                "description": None,
                "extra_specs": {},
            }
        self.add_image(
            name="debian-12-gwms",
            status="active",
            data=b"\0" * 1024,
            properties={"os_distro": "debian", "os_version": "12"},
        )
        project = self.credentials.project_id
        stamp = iso(now_utc())
        group_id = str(uuid.uuid4())
        self.security_groups[group_id] = {
            "id": group_id,
            "name": "default",
            "description": "Default security group",
            "tenant_id": project,
            "project_id": project,
            "stateful": True,
            "tags": [],
            "created_at": stamp,
            "updated_at": stamp,
            "revision_number": 1,
            "security_group_rules": [
                {
                    "id": str(uuid.uuid4()),
                    "security_group_id": group_id,
                    "direction": direction,
                    "ethertype": "IPv4",
                    "protocol": None,
                    "port_range_min": None,
                    "port_range_max": None,
                    "remote_ip_prefix": None,
                    "remote_group_id": group_id if direction == "ingress" else None,
                    "tenant_id": project,
                    "project_id": project,
                }
                for direction in ("ingress", "egress")
            ],
        }
        self.add_network("private", "10.0.0.0/24", external=False)
        self.add_network("public", "172.24.4.0/24", external=True)

    def add_network(self, name: str, cidr: str, *, external: bool) -> dict[str, Any]:
        """A network with one IPv4 subnet (test hook and seed)."""
        with self.lock:
            project = self.credentials.project_id
            stamp = iso(now_utc())
            network_id, subnet_id = str(uuid.uuid4()), str(uuid.uuid4())
            net = ipaddress.ip_network(cidr)
            self.subnets[subnet_id] = {
                "id": subnet_id,
                "name": f"{name}-subnet",
                "network_id": network_id,
                "cidr": cidr,
                "ip_version": 4,
                "gateway_ip": str(net[1]),
                "allocation_pools": [{"start": str(net[2]), "end": str(net[-2])}],
                "enable_dhcp": True,
                "dns_nameservers": [],
                "host_routes": [],
                "tenant_id": project,
                "project_id": project,
                "description": "",
                "tags": [],
                "created_at": stamp,
                "updated_at": stamp,
                "revision_number": 1,
            }
            network = {
                "id": network_id,
                "name": name,
                "status": "ACTIVE",
                "subnets": [subnet_id],
                "admin_state_up": True,
                "shared": False,
                "router:external": external,
                "is_default": False,
                "mtu": 1450,
                "port_security_enabled": True,
                "availability_zones": ["nova"],
                "availability_zone_hints": [],
                "ipv4_address_scope": None,
                "ipv6_address_scope": None,
                "tenant_id": project,
                "project_id": project,
                "description": "",
                "tags": [],
                "created_at": stamp,
                "updated_at": stamp,
                "revision_number": 1,
            }
            self.networks[network_id] = network
            return network

    def add_image(
        self,
        *,
        name: str,
        status: str = "queued",
        data: bytes | None = None,
        properties: dict[str, Any] | None = None,
        disk_format: str | None = "qcow2",
        container_format: str | None = "bare",
        visibility: str = "shared",
        image_id: str | None = None,
    ) -> dict[str, Any]:
        """A Glance image record (test hook, Glance create and Nova createImage)."""
        with self.lock:
            image_id = image_id or str(uuid.uuid4())
            stamp = iso(now_utc())
            image: dict[str, Any] = {
                "id": image_id,
                "name": name,
                "status": status,
                "visibility": visibility,
                "protected": False,
                "os_hidden": False,
                "container_format": container_format,
                "disk_format": disk_format,
                "min_disk": 0,
                "min_ram": 0,
                "size": None,
                "virtual_size": None,
                "checksum": None,
                "os_hash_algo": None,
                "os_hash_value": None,
                "owner": self.credentials.project_id,
                "tags": [],
                "created_at": stamp,
                "updated_at": stamp,
                "self": f"/v2/images/{image_id}",
                "file": f"/v2/images/{image_id}/file",
                "schema": "/v2/schemas/image",
                **(properties or {}),
            }
            self.images[image_id] = image
            if data is not None:
                self.store_image_data(image_id, data)
            return image

    def store_image_data(self, image_id: str, data: bytes) -> None:
        with self.lock:
            image = self.images[image_id]
            self.image_data[image_id] = data
            image.update(
                status="active",
                size=len(data),
                checksum=hashlib.md5(data, usedforsecurity=False).hexdigest(),
                os_hash_algo="sha512",
                os_hash_value=hashlib.sha512(data).hexdigest(),
                updated_at=iso(now_utc()),
            )
