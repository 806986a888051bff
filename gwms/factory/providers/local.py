"""Local instances: the `Provider` whose VMs are process trees on this host (trials, tests, demo).

A launch boots `count` local VMs (`gwms.localvm.runner`) sharing the batch's UserData,
with launch indexes 0..count-1 and the gwms:* tags in each VM's state.json. Like EC2 with
MinCount=1, a host short of room (`max_instances` live VMs, counted under a lock across
every factory sharing `base_dir`) gets what fits, and nothing fitting is an error. Listing
scans `base_dir` (O(VMs) on a local disk); terminated VMs stay listed for an hour, then
their directories are reaped. Terminate is SIGTERM to each VM's process group. Calls take
tokens from the cloud's `api` bucket and are counted like any cloud's.

Two knobs come from constructor keywords, else the cloud's configuration, else the
factory's environment: `pilot_user` (GWMS_LOCALVM_PILOT_USER; when the factory runs as
root the bootstrap drops to it, default `glidein`) and `python` (GWMS_LOCALVM_PYTHON; the
interpreter that runs the bootstrap, which the pilot user must be able to execute).
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from gwms.config.factory import LocalCloud
from gwms.factory.providers.base import (
    TAG_BATCH,
    TAG_CLIENT,
    TAG_ENTRY,
    TAG_FACTORY,
    Instance,
    InstanceState,
    LaunchRequest,
    ProviderError,
    TerminateResult,
)
from gwms.factory.providers.metered import MeteredProvider
from gwms.factory.ratelimit import RateLimiter
from gwms.factory.retry import Retrier
from gwms.localvm import runner
from gwms.localvm.runner import LocalVmError, LocalVmInfo

log = logging.getLogger(__name__)
T = TypeVar("T")

USERDATA_LIMIT = 16_384  # local instances take what EC2 takes (raw bytes)
PILOT_USER_ENV = "GWMS_LOCALVM_PILOT_USER"
PYTHON_ENV = "GWMS_LOCALVM_PYTHON"

STATES = {
    runner.PENDING: InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    runner.SHUTTING_DOWN: InstanceState.TERMINATING,
    runner.TERMINATED: InstanceState.TERMINATED,
    runner.ERROR: InstanceState.ERROR,
}


def _never(_exc: BaseException) -> bool:
    return False  # a local failure (disk full, permissions) does not heal by retrying


class LocalProvider(MeteredProvider):
    """The `Provider` for a `local` cloud: VMs are `gwms.localvm` process trees here."""

    def __init__(
        self,
        cloud: LocalCloud,
        *,
        factory: str,
        credential: object | None = None,
        limiter: RateLimiter | None = None,
        retrier: Retrier | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        max_wait: float = 30.0,
        pilot_user: str | None = None,
        python: str | None = None,
        env: Mapping[str, str] | None = None,
        bootstrap_args: Sequence[str] = (),
        grace: float = 10.0,
        reap_after: float = runner.REAP_AFTER,
    ) -> None:
        """`credential` is ignored (local VMs need none); the rest see the module doc."""
        super().__init__(
            cloud,
            factory=factory,
            retryable=_never,
            limiter=limiter,
            retrier=retrier,
            clock=clock,
            sleep=sleep,
            rand=rand,
            page_size=0,
            max_wait=max_wait,
            all_or_nothing=False,
        )
        if cloud.base_dir is None:
            raise ProviderError(
                f"local cloud {cloud.name} has no base_dir; set it, or load the cloud from a"
                " factory configuration (default <state_dir>/local-instances)"
            )
        self.base_dir = Path(cloud.base_dir)
        self.max_instances = cloud.max_instances
        self.pilot_user = (
            pilot_user or cloud.pilot_user or os.environ.get(PILOT_USER_ENV) or None
        )
        configured_python = str(cloud.python) if cloud.python else None
        self.python = python or configured_python or os.environ.get(PYTHON_ENV) or sys.executable
        self.env = dict(env or {})
        self.bootstrap_args = list(bootstrap_args)
        self.grace = grace
        self.reap_after = reap_after

    # --- one call: tokens, counting, errors ---

    def _log_retry(self, api: str, attempt: int, exc: BaseException, wait: float) -> None:
        log.warning("cloud %s: local %s failed (%s); retry %d in %.2f s",
                    self.name, api, exc, attempt, wait)  # fmt: skip

    def _call(self, api: str, fn: Callable[[], T]) -> T:
        deadline = self._deadline()

        def attempt() -> T:
            self.limiter.acquire({"api": 1}, deadline)
            self._count(api)
            return fn()

        try:
            return self.retrier.call(attempt, api=api, deadline=deadline)
        except LocalVmError as exc:
            raise ProviderError(f"cloud {self.name}: {exc}") from exc
        except OSError as exc:
            raise ProviderError(
                f"local {api} on cloud {self.name} failed: {exc.strerror or exc} ({exc.filename});"
                f" check that {self.base_dir} is a writable local directory"
            ) from exc

    # --- the Provider interface ---

    def launch(self, request: LaunchRequest) -> list[Instance]:
        """Boot up to `count` VMs (fewer when the host is near max_instances)."""
        if request.count < 1:
            raise ProviderError(
                f"batch {request.batch_id}: count must be >= 1, got {request.count}"
            )
        if len(request.userdata) > USERDATA_LIMIT:
            raise ProviderError(
                f"batch {request.batch_id}: UserData is {len(request.userdata)} bytes, local"
                f" instances take at most {USERDATA_LIMIT}; drop overlays or pilot arguments"
            )
        return self._call("launch", lambda: self._boot(request))

    def _boot(self, request: LaunchRequest) -> list[Instance]:
        tags = {
            **dict(request.tags),
            TAG_FACTORY: self.factory,
            TAG_ENTRY: request.entry,
            TAG_CLIENT: request.client,
            TAG_BATCH: request.batch_id,
        }
        booted: list[Instance] = []
        with runner.host_lock(self.base_dir):
            live = sum(v.state != runner.TERMINATED for v in runner.list_local_vms(self.base_dir))
            room = self.max_instances - live
            if room < 1:
                raise ProviderError(
                    f"cloud {self.name}: this host already runs {live} local instances"
                    f" (max_instances {self.max_instances}); wait for some to end or raise it"
                )
            count = min(request.count, room)
            if count < request.count:
                log.warning("cloud %s: batch %s gets %d of %d VMs (max_instances %d)",
                            self.name, request.batch_id, count, request.count,
                            self.max_instances)  # fmt: skip
            for index in range(count):
                try:
                    handle = runner.boot_local_vm(
                        self.base_dir,
                        instance_id=runner.new_instance_id(),
                        user_data=request.userdata,
                        launch_index=index,
                        tags=tags,
                        instance_type=request.instance_type,
                        python=self.python,
                        pilot_user=self.pilot_user,
                        env=self.env,
                        bootstrap_args=self.bootstrap_args,
                        grace=self.grace,
                    )
                except (LocalVmError, OSError) as exc:
                    if not booted:
                        raise
                    log.error("cloud %s: batch %s stopped at %d of %d VMs: %s",
                              self.name, request.batch_id, index, count, exc)  # fmt: skip
                    break
                booted.append(
                    Instance(
                        cloud_id=handle.instance_id,
                        batch_id=request.batch_id,
                        launch_index=index,
                        state=InstanceState.PENDING,
                        entry=request.entry,
                        client=request.client,
                        launched_at=datetime.now(UTC),
                        instance_type=request.instance_type,
                        address="127.0.0.1",
                    )
                )
        return booted

    def list(self, factory: str, entry: str | None = None) -> list[Instance]:
        """Every live VM this factory tagged (optionally one entry); reaps old dead ones."""

        def scan() -> list[LocalVmInfo]:
            runner.reap_local_vms(self.base_dir, older_than=self.reap_after)
            return runner.list_local_vms(self.base_dir)

        return [
            self._instance(vm)
            for vm in self._call("list", scan)
            if vm.state != runner.TERMINATED
            and vm.tags.get(TAG_FACTORY) == factory
            and (entry is None or vm.tags.get(TAG_ENTRY) == entry)
        ]

    def find_batch(self, factory: str, batch_id: str) -> list[Instance]:
        """Every VM of the batch in any state (terminated ones too, until reaped)."""
        found = [
            self._instance(vm)
            for vm in self._call("find_batch", lambda: runner.list_local_vms(self.base_dir))
            if vm.tags.get(TAG_FACTORY) == factory and vm.tags.get(TAG_BATCH) == batch_id
        ]
        return sorted(found, key=lambda i: i.launch_index)

    def terminate(self, cloud_ids: Sequence[str]) -> TerminateResult:
        """SIGTERM each VM's process group; unknown or finished ids count as accepted."""

        def kill_all() -> TerminateResult:
            accepted: list[str] = []
            failed: dict[str, str] = {}
            for cloud_id in cloud_ids:
                try:
                    runner.terminate_local_vm(self.base_dir, cloud_id)
                    accepted.append(cloud_id)
                except (LocalVmError, OSError) as exc:
                    failed[cloud_id] = str(exc)
            return TerminateResult(tuple(accepted), failed)

        return self._call("terminate", kill_all)

    def _instance(self, vm: LocalVmInfo) -> Instance:
        created = datetime.fromtimestamp(vm.created, UTC) if vm.created else None
        return Instance(
            cloud_id=vm.instance_id,
            batch_id=vm.tags.get(TAG_BATCH, vm.batch),
            launch_index=vm.launch_index,
            state=STATES.get(vm.state, InstanceState.ERROR),
            entry=vm.tags.get(TAG_ENTRY, ""),
            client=vm.tags.get(TAG_CLIENT, ""),
            launched_at=created,
            instance_type=vm.instance_type,
            address="127.0.0.1",
        )


__all__ = ["LocalProvider"]
