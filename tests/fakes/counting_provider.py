"""An in-process cloud double implementing `Provider`, counting every call it receives.

State lives in a `FakeCloud` (shared by every provider built for the same cloud name, so
a "restarted" factory sees the VMs an earlier one launched). Listings are paginated like
EC2's DescribeInstances (`page_size` VMs per call), so a test or the benchmark can check
that the factory's cloud calls grow with pages, not VMs. Faults are switches on the
cloud: refuse terminating given ids, or lose the answer of a launch that did happen.

Test-only registration: `register()` points the `local` cloud type of the provider
registry at this class (`gwms.factory.providers.registry.PROVIDERS`), in-process.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar

from gwms.factory.providers.base import (
    Instance,
    InstanceState,
    LaunchRequest,
    ProviderError,
    TerminateResult,
)

LIVE = (InstanceState.PENDING, InstanceState.RUNNING, InstanceState.TERMINATING)


@dataclass
class FakeVm:
    instance: Instance
    factory: str
    userdata: bytes = field(repr=False, default=b"")


@dataclass
class FakeCloud:
    """The cloud's state and the calls it saw."""

    name: str
    page_size: int = 1000
    vms: dict[str, FakeVm] = field(default_factory=dict)
    launches: list[LaunchRequest] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    refuse_terminate: set[str] = field(default_factory=set)
    lose_next_launch_answer: bool = False  # the VMs are made, then the call "times out"
    fail_next_launch: bool = False  # the call fails before anything is made
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self) -> str:
        return f"i-{next(self._ids):017x}"

    def live(self, factory: str | None = None) -> list[Instance]:
        return [
            vm.instance
            for vm in self.vms.values()
            if vm.instance.state in LIVE and (factory is None or vm.factory == factory)
        ]

    def advance(self) -> None:
        """One tick of the cloud: pending VMs run, terminating ones end."""
        for vm in self.vms.values():
            if vm.instance.state is InstanceState.PENDING:
                vm.instance = replace(vm.instance, state=InstanceState.RUNNING)
            elif vm.instance.state is InstanceState.TERMINATING:
                vm.instance = replace(vm.instance, state=InstanceState.TERMINATED)

    def add(self, instance: Instance, factory: str, userdata: bytes = b"") -> None:
        self.vms[instance.cloud_id] = FakeVm(instance, factory, userdata)


class CountingProvider:
    """`Provider` over a `FakeCloud`; construct like any registry provider."""

    clouds: ClassVar[dict[str, FakeCloud]] = {}

    def __init__(
        self,
        cloud: Any = None,
        *,
        factory: str,
        credential: Any = None,
        fake: FakeCloud | None = None,
        wallclock: Any = None,
    ) -> None:
        name = fake.name if fake is not None else cloud.name
        self.name = name
        self.factory = factory
        self.fake = fake or self.clouds.setdefault(name, FakeCloud(name))
        self._now = wallclock or (lambda: datetime.now(UTC))

    @classmethod
    def reset(cls) -> None:
        cls.clouds.clear()

    def launch(self, request: LaunchRequest) -> list[Instance]:
        cloud = self.fake
        cloud.calls["launch"] += 1
        if cloud.fail_next_launch:
            cloud.fail_next_launch = False
            raise ProviderError(f"cloud {self.name}: launch refused (injected)")
        cloud.launches.append(request)
        made = []
        for index in range(request.count):
            inst = Instance(
                cloud_id=cloud.new_id(),
                batch_id=request.batch_id,
                launch_index=index,
                state=InstanceState.PENDING,
                entry=request.entry,
                client=request.client,
                launched_at=self._now(),
                instance_type=request.instance_type,
            )
            cloud.add(inst, self.factory, request.userdata)
            made.append(inst)
        if cloud.lose_next_launch_answer:
            cloud.lose_next_launch_answer = False
            raise ProviderError(f"cloud {self.name}: launch answer lost (injected)")
        return made

    def list(self, factory: str, entry: str | None = None) -> list[Instance]:
        live = [i for i in self.fake.live(factory) if entry is None or i.entry == entry]
        pages = max(1, -(-len(live) // self.fake.page_size))
        self.fake.calls["list"] += 1
        self.fake.calls["list_pages"] += pages
        return live

    def find_batch(self, factory: str, batch_id: str) -> list[Instance]:
        self.fake.calls["find_batch"] += 1
        found = [
            vm.instance
            for vm in self.fake.vms.values()
            if vm.factory == factory and vm.instance.batch_id == batch_id
        ]
        return sorted(found, key=lambda i: i.launch_index)

    def terminate(self, cloud_ids: Sequence[str]) -> TerminateResult:
        self.fake.calls["terminate"] += 1
        self.fake.calls["terminate_ids"] += len(cloud_ids)
        accepted, failed = [], {}
        for cid in cloud_ids:
            vm = self.fake.vms.get(cid)
            if cid in self.fake.refuse_terminate:
                failed[cid] = "IncorrectInstanceState (injected)"
            elif vm is None:
                failed[cid] = "InvalidInstanceID.NotFound"
            else:
                if vm.instance.state is not InstanceState.TERMINATED:
                    vm.instance = replace(vm.instance, state=InstanceState.TERMINATING)
                accepted.append(cid)
        return TerminateResult(accepted=tuple(accepted), failed=failed)


def register() -> None:
    """Serve the `local` cloud type with this double (tests only, in-process)."""
    from gwms.factory.providers import registry

    registry.PROVIDERS["local"] = f"{__name__}:CountingProvider"
