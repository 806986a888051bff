"""The demo's clouds: local instances as they are, or a cloud API with local VMs behind it.

`local`: the factory's `local` cloud boots the VMs itself (`gwms.localvm.runner`); the demo
only watches their directories and terminates what is left at the end.

`ec2` (`moto_server`) and `openstack` (the project's fake, `openstack_cloud`): APIs with no
machines, so a watcher (`WatchedCloud`) plays the hypervisor: every instance the API
reports live gets a local VM booted with that instance's user data and launch index; an
instance terminated through the API has its VM terminated; a VM that powers itself off
has its instance terminated through the API (EC2's InstanceInitiatedShutdownBehavior=
terminate). So the factory's boto3/openstacksdk code and the VM side both run for real.
"""

from __future__ import annotations

import base64
import contextlib
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from gwms.demo.configs import AWS_KEY_ID, AWS_REGION, AWS_SECRET, DemoLayout, pilot_user, vm_python
from gwms.demo.supervisor import Supervisor, pid_alive, wait_until
from gwms.errors import GwmsError
from gwms.localvm.runner import (
    TERMINATED,
    LocalVmError,
    LocalVmInfo,
    boot_local_vm,
    list_local_vms,
    terminate_local_vm,
)

LIVE_EC2_STATES = ("pending", "running")
TERMINATE_WAIT = 20.0


@dataclass
class VmReport:
    """What became of the VMs: counts, and every process id they ever had."""

    directory: Path
    launched: int = 0
    terminated: int = 0
    leaked: int = 0
    leaked_ids: list[str] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)  # watcher errors (the outcome decides)


class DemoCloud(Protocol):
    def start(self) -> None: ...
    def step(self) -> None: ...
    def alive(self) -> int: ...
    def cleanup(self) -> VmReport: ...


class VmWatch:
    """The local VMs under one directory: pids seen, how many are alive, and the final stop."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pids: set[int] = set()

    def scan(self) -> list[LocalVmInfo]:
        vms = list_local_vms(self.directory)
        for vm in vms:
            self.pids.update(int(p) for p in vm.pids.values() if p)
        return vms

    def alive(self) -> int:
        return sum(1 for vm in self.scan() if vm.state != TERMINATED and _running(vm))

    def stop_all(self) -> VmReport:
        """Terminate every VM still up, wait for them, and report what is left."""
        for vm in self.scan():
            if vm.state != TERMINATED:
                with contextlib.suppress(LocalVmError):
                    terminate_local_vm(self.directory, vm.instance_id, wait=TERMINATE_WAIT)
        # A VM records `terminated` just before its process exits: give it that moment.
        wait_until(lambda: not any(_running(vm) for vm in self.scan()), TERMINATE_WAIT)
        vms = self.scan()
        report = VmReport(self.directory, launched=len(vms), pids=set(self.pids))
        for vm in vms:
            vm_pid = vm.pids.get("vm")
            if vm.state == TERMINATED and not (vm_pid and pid_alive(int(vm_pid))):
                report.terminated += 1
            elif vm_pid and pid_alive(int(vm_pid)):
                report.leaked += 1
                report.leaked_ids.append(vm.instance_id)
            else:
                report.terminated += 1  # its process is gone: nothing runs any more
        return report


def _running(vm: LocalVmInfo) -> bool:
    pid = vm.pids.get("vm")
    return bool(pid) and pid_alive(int(pid))  # type: ignore[arg-type]


class LocalCloud:
    """The factory's own `local` cloud: nothing to start, VMs to watch and clean up."""

    def __init__(self, layout: DemoLayout) -> None:
        self.vms = VmWatch(layout.vm_dir)

    def start(self) -> None:
        return None

    def step(self) -> None:
        self.vms.scan()

    def alive(self) -> int:
        return self.vms.alive()

    def cleanup(self) -> VmReport:
        return self.vms.stop_all()


@dataclass(frozen=True)
class CloudInstance:
    """One instance as the cloud API lists it, in the few words the watcher needs."""

    id: str
    live: bool  # pending/running (EC2), BUILD/ACTIVE (Nova)
    launch_index: int
    tags: dict[str, str]
    instance_type: str


class WatchedCloud:
    """A cloud API with no machines behind it, and the watcher thread that plays hypervisor.

    Every live instance gets a local VM (its user data, its launch index); an instance the
    API no longer shows as live has its VM terminated; a VM that powered itself off has its
    instance terminated through the API, as a shutdown behaviour of "terminate" does.
    """

    kind = "cloud"

    def __init__(self, layout: DemoLayout, supervisor: Supervisor) -> None:
        self.layout = layout
        self.supervisor = supervisor
        self.vms = VmWatch(layout.vm_dir)
        self.booted: set[str] = set()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.errors: list[str] = []
        self.ready = False
        self._lock = threading.Lock()

    # --- what each cloud API provides ---

    def start_api(self) -> None:
        raise NotImplementedError

    def list_instances(self) -> list[CloudInstance]:
        raise NotImplementedError

    def user_data(self, instance_id: str) -> bytes:
        raise NotImplementedError

    def terminate(self, instance_ids: list[str]) -> None:
        raise NotImplementedError

    # --- the watcher ---

    def start(self) -> None:
        self.start_api()
        self.ready = True
        self.thread = threading.Thread(target=self._loop, name=f"{self.kind}-watcher", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop_event.wait(0.5):
            try:
                self.step()
            except Exception as exc:  # keep watching; the summary shows it
                self.errors.append(one_line(exc))

    def step(self) -> None:
        if not self.ready:
            return
        with self._lock:
            vms = {vm.instance_id: vm for vm in self.vms.scan()}
            for instance in self.list_instances():
                vm = vms.get(instance.id)
                if instance.live and instance.id not in self.booted:
                    self._boot(instance)
                elif instance.live and vm is not None and vm.state == TERMINATED:
                    self.terminate([instance.id])  # the glidein powered its VM off
                elif not instance.live and vm is not None and vm.state != TERMINATED:
                    terminate_local_vm(self.vms.directory, instance.id)

    def _boot(self, instance: CloudInstance) -> None:
        self.booted.add(instance.id)
        boot_local_vm(
            self.vms.directory,
            instance_id=instance.id,
            user_data=self.user_data(instance.id),
            launch_index=instance.launch_index,
            tags=instance.tags,
            instance_type=instance.instance_type,
            pilot_user=pilot_user(),
            python=vm_python(),
        )

    def alive(self) -> int:
        return self.vms.alive()

    def cleanup(self) -> VmReport:
        """Stop watching; terminate every live instance and every VM; count what survived."""
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        if self.ready:
            try:
                live = [i.id for i in self.list_instances() if i.live]
                if live:
                    self.terminate(live)
            except Exception as exc:  # the VMs are still stopped below
                self.errors.append(one_line(exc))
        report = self.vms.stop_all()
        if self.ready:
            try:
                instances = wait_for_settled(self)
                still = [i.id for i in instances if i.live]
                report.launched = max(report.launched, len(instances))
                report.terminated = report.launched - len(still)
                report.leaked += len(still)
                report.leaked_ids += still
            except Exception as exc:
                report.leaked_ids.append("unknown")
                report.leaked += 1  # cannot prove nothing is left: count it against the run
                report.warnings.append(
                    f"{self.kind}: cannot list the instances at the end: {one_line(exc)}"
                )
        for error in dict.fromkeys(self.errors):  # each distinct watcher error once
            report.warnings.append(f"{self.kind} watcher: {error}")
        return report


def wait_for_settled(cloud: WatchedCloud, timeout: float = 10.0) -> list[CloudInstance]:
    """The instances once none is live any more (or as they are after `timeout`)."""
    found: list[CloudInstance] = []

    def settled() -> bool:
        nonlocal found
        found = cloud.list_instances()
        return not any(i.live for i in found)

    wait_until(settled, timeout, step=0.5)
    return found


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


class Ec2Cloud(WatchedCloud):
    """moto_server as EC2 (its instances get local VMs)."""

    kind = "ec2"

    def start_api(self) -> None:
        self.supervisor.start(
            "moto_server",
            moto_argv(self.layout.cloud_port),
            ready_url=f"{self.layout.cloud_url}/moto-api/data.json",
        )
        import boto3

        self._client = boto3.client(
            "ec2",
            endpoint_url=self.layout.cloud_url,
            region_name=AWS_REGION,
            aws_access_key_id=AWS_KEY_ID,
            aws_secret_access_key=AWS_SECRET,
        )

    def list_instances(self) -> list[CloudInstance]:
        found = []
        for page in self._client.get_paginator("describe_instances").paginate():
            for reservation in page["Reservations"]:
                for item in reservation["Instances"]:
                    found.append(
                        CloudInstance(
                            id=item["InstanceId"],
                            live=item["State"]["Name"] in LIVE_EC2_STATES,
                            launch_index=int(item.get("AmiLaunchIndex", 0)),
                            tags={t["Key"]: t["Value"] for t in item.get("Tags", [])},
                            instance_type=item.get("InstanceType", "local"),
                        )
                    )
        return found

    def user_data(self, instance_id: str) -> bytes:
        answer = self._client.describe_instance_attribute(
            InstanceId=instance_id, Attribute="userData"
        )
        encoded = answer.get("UserData", {}).get("Value", "")
        return base64.b64decode(encoded) if encoded else b""

    def terminate(self, instance_ids: list[str]) -> None:
        self._client.terminate_instances(InstanceIds=instance_ids)


def moto_argv(port: int) -> list[str]:
    """`moto_server` from this interpreter's environment (the `demo` extra installs it)."""
    executable = Path(sys.executable).parent / "moto_server"
    if not executable.exists():
        raise GwmsError(
            f"--cloud ec2 needs moto_server, which is not installed next to {sys.executable};"
            " install it with: pip install 'moto[server]'"
        )
    return [str(executable), "-H", "127.0.0.1", "-p", str(port)]


def make_cloud(layout: DemoLayout, supervisor: Supervisor) -> DemoCloud:
    if layout.cloud == "local":
        return LocalCloud(layout)
    if layout.cloud == "ec2":
        return Ec2Cloud(layout, supervisor)
    if layout.cloud == "openstack":
        from gwms.demo.openstack_cloud import OpenStackCloud

        return OpenStackCloud(layout, supervisor)
    raise ValueError(f"cloud {layout.cloud} is not available in the demo yet")


__all__ = [
    "CloudInstance",
    "DemoCloud",
    "Ec2Cloud",
    "LocalCloud",
    "VmReport",
    "VmWatch",
    "WatchedCloud",
    "make_cloud",
]
