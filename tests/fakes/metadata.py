"""Metadata services of clouds we cannot run here, served on 127.0.0.1, with fault injection.

- `FaultyImds`: the product's `ImdsServer` plus faults (401s that force a token refresh,
  delays, garbage bodies, 5xx, refused token requests).
- `FakeOpenStackMetadata`: Nova's /openstack/latest/{meta_data.json,user_data}.
- `FakeGceMetadata`: GCE's /computeMetadata/v1/instance/attributes/*, which requires the
  `Metadata-Flavor: Google` request header and sends it back (unless told to be an impostor).

Every server records the requests it saw (method, path, headers) so tests can check the
protocol on the wire, e.g. that a token travelled with every GET.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gwms.localvm.imds import TOKEN_PATH, ImdsServer, LoopbackServer, Reply, Request


@dataclass
class Fault:
    """One misbehaviour for requests matching method/path (None = any), `times` times (-1 = always).

    `delay` seconds pass first; then `status` and/or `body` replace the normal answer
    (with only a delay, the normal answer follows).
    """

    method: str | None = None
    path: str | None = None
    status: int | None = None
    body: bytes | None = None
    delay: float = 0.0
    times: int = 1
    headers: tuple[tuple[str, str], ...] = ()

    def matches(self, request: Request) -> bool:
        return (self.method is None or self.method == request.method) and (
            self.path is None or self.path == request.path
        )


@dataclass(frozen=True)
class Seen:
    """A request as the server saw it (headers case-insensitive, as parsed by http.server)."""

    method: str
    path: str
    headers: Mapping[str, str]


class FaultInjection:
    """Mixin for `LoopbackServer` subclasses: record requests, apply queued faults first."""

    def _init_faults(self) -> None:
        self._faults: list[Fault] = []
        self._fault_lock = threading.Lock()
        self.seen: list[Seen] = []

    def inject(self, fault: Fault) -> Fault:
        with self._fault_lock:
            self._faults.append(fault)
        return fault

    def requests_to(self, path: str, method: str = "GET") -> list[Seen]:
        with self._fault_lock:
            return [s for s in self.seen if s.path == path and s.method == method]

    def _take_fault(self, request: Request) -> Fault | None:
        with self._fault_lock:
            self.seen.append(Seen(request.method, request.path, request.headers))
            for fault in self._faults:
                if fault.times != 0 and fault.matches(request):
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None

    def _faulty(self, request: Request) -> Reply | None:
        """The fault's reply, or None to answer normally."""
        fault = self._take_fault(request)
        if fault is None:
            return None
        if fault.delay:
            self.stopping.wait(fault.delay)  # type: ignore[attr-defined]
        if fault.status is None and fault.body is None:
            return None
        normal = self._normal(request)
        return Reply(
            normal.status if fault.status is None else fault.status,
            normal.body if fault.body is None else fault.body,
            headers=fault.headers or normal.headers,
        )

    def _normal(self, request: Request) -> Reply:
        raise NotImplementedError


class FaultyImds(FaultInjection, ImdsServer):
    """`ImdsServer` with faults; see `refuse_tokens`, `expire_tokens_after_next_put`."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._init_faults()

    def refuse_tokens(self, status: int) -> None:
        """Answer every token PUT with `status`, like an EC2 clone without IMDSv2."""
        self.inject(Fault(method="PUT", path=TOKEN_PATH, status=status, body=b"", times=-1))

    def handle(self, request: Request) -> Reply:
        return self._faulty(request) or self._normal(request)

    def _normal(self, request: Request) -> Reply:
        return ImdsServer.handle(self, request)


class FakeOpenStackMetadata(FaultInjection, LoopbackServer):
    """Nova's metadata service for one instance: meta_data.json and user_data (404 when None)."""

    def __init__(self, *, uuid: str, user_data: bytes | None = None, name: str = "glidein") -> None:
        super().__init__()
        self._init_faults()
        self.meta = {"uuid": uuid, "name": name, "availability_zone": "nova", "meta": {}}
        self.user_data = user_data

    def handle(self, request: Request) -> Reply:
        return self._faulty(request) or self._normal(request)

    def _normal(self, request: Request) -> Reply:
        if request.method != "GET":
            return Reply(405, b"")
        if request.path == "/openstack/latest/meta_data.json":
            return Reply(200, json.dumps(self.meta).encode(), content_type="application/json")
        if request.path == "/openstack/latest/user_data" and self.user_data is not None:
            return Reply(200, self.user_data, content_type="application/octet-stream")
        if request.path in ("/openstack", "/openstack/"):
            return Reply(200, b"2012-08-10\n2013-04-04\nlatest")
        return Reply(404, b"404 Not Found\n", content_type="text/html")


class FakeGceMetadata(FaultInjection, LoopbackServer):
    """GCE's metadata server: instance attributes, Metadata-Flavor enforced both ways."""

    def __init__(
        self, attributes: Mapping[str, bytes] | None = None, impostor: bool = False
    ) -> None:
        super().__init__()
        self._init_faults()
        self.attributes = dict(attributes or {})
        self.impostor = impostor

    def handle(self, request: Request) -> Reply:
        reply = self._faulty(request) or self._normal(request)
        if self.impostor or any(name == "Metadata-Flavor" for name, _ in reply.headers):
            return reply
        return Reply(reply.status, reply.body, (*reply.headers, ("Metadata-Flavor", "Google")))

    def _normal(self, request: Request) -> Reply:
        if request.headers.get("Metadata-Flavor") != "Google":
            return Reply(403, b"Missing Metadata-Flavor:Google header.\n")
        prefix = "/computeMetadata/v1/instance/attributes/"
        key = request.path[len(prefix) :] if request.path.startswith(prefix) else None
        if request.method == "GET" and key in self.attributes:
            return Reply(200, self.attributes[key], content_type="application/text")
        return Reply(404, b"Not Found\n", content_type="text/html")


def make_vm_root(
    root: Path,
    *,
    dmi: Mapping[str, str] | None = None,
    labels: tuple[str, ...] = (),
    files: Mapping[str, bytes | str] | None = None,
    cmdline: str | None = None,
) -> Path:
    """A fake VM filesystem as the detectors see it: DMI strings, disk labels, files.

    Labels are udev-style symlinks (`dev/disk/by-label/LABEL -> ../../srN`), dangling like
    on a VM whose device node the test does not create.
    """
    dmi_dir = root / "sys/class/dmi/id"
    dmi_dir.mkdir(parents=True, exist_ok=True)
    for key, value in (dmi or {}).items():
        (dmi_dir / key).write_text(value + "\n")
    if labels:
        by_label = root / "dev/disk/by-label"
        by_label.mkdir(parents=True, exist_ok=True)
        for number, label in enumerate(labels):
            (by_label / label).symlink_to(f"../../sr{number}")
    for relative, content in (files or {}).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
    if cmdline is not None:
        (root / "proc").mkdir(exist_ok=True)
        (root / "proc/cmdline").write_text(cmdline + "\n")
    return root
