"""The provider interface the factory drives, and the records it exchanges with clouds.

One launch is one cloud call for `count` instances that share one UserData (a "batch",
like an HTCondor cluster): the UserData's `glidein_id` is the batch id and each VM's
glidein is `<batch id>.<launch index>` (EC2 `ami-launch-index`, Nova `launch_index`).
Every instance is tagged at creation with the factory, entry, client and batch id, so
a launch whose outcome is unknown is found by tag (`find_batch`), never retried blindly.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from gwms.errors import GwmsError

# Tag/metadata keys set on every instance at creation (EC2 tags, Nova server metadata).
TAG_FACTORY = "gwms:factory"
TAG_ENTRY = "gwms:entry"
TAG_CLIENT = "gwms:client"
TAG_BATCH = "gwms:batch"


class InstanceState(enum.StrEnum):
    """Cloud states folded into what the factory needs to decide."""

    PENDING = "pending"
    RUNNING = "running"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    ERROR = "error"


class ProviderError(GwmsError):
    """A cloud call failed for good (after the provider's own retries)."""


class ThrottledError(ProviderError):
    """The cloud said slow down (HTTP 429/503, EC2 RequestLimitExceeded): back off, retry later."""


@dataclass(frozen=True)
class LaunchRequest:
    """One batch: `count` instances of one entry sharing `userdata`."""

    batch_id: str
    count: int
    entry: str
    client: str
    image: str
    instance_type: str
    userdata: bytes = field(repr=False)
    client_token: str  # idempotency token, journaled before the call
    tags: Mapping[str, str] = field(default_factory=dict)  # extra tags beyond the gwms:* ones
    options: Mapping[str, object] = field(default_factory=dict)  # key_name, network, spot, ...


@dataclass(frozen=True)
class Instance:
    """One VM as the cloud lists it."""

    cloud_id: str
    batch_id: str
    launch_index: int
    state: InstanceState
    entry: str
    client: str
    launched_at: datetime | None = None
    instance_type: str | None = None
    address: str | None = None

    @property
    def glidein_id(self) -> str:
        return f"{self.batch_id}.{self.launch_index}"


@dataclass(frozen=True)
class TerminateResult:
    """What a terminate call achieved: ids now terminating, and ids that refused, with why."""

    accepted: tuple[str, ...]
    failed: Mapping[str, str] = field(default_factory=dict)


class Provider(Protocol):
    """What the factory needs from a cloud. Implementations honour the endpoint's rate limits."""

    name: str

    def launch(self, request: LaunchRequest) -> list[Instance]:
        """Start `request.count` instances in one call (or as few calls as the cloud allows)."""
        ...

    def list(self, factory: str, entry: str | None = None) -> list[Instance]:
        """Every live instance this factory tagged (optionally one entry), paginated, O(pages)."""
        ...

    def find_batch(self, factory: str, batch_id: str) -> list[Instance]:
        """The instances of one batch, found by tag: how an unknown launch outcome is settled."""
        ...

    def terminate(self, cloud_ids: Sequence[str]) -> TerminateResult:
        """Ask the cloud to terminate these instances (batched where the cloud allows)."""
        ...
