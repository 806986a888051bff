"""The factory on a `local` cloud: real local VMs, the real web service, metrics, status reports.

`gwms factory run --once` against a real `gwms collector serve` launches real local VMs;
`gwms factory run` (continuous) serves the web service on its configured address and
stops cleanly on SIGTERM; in-process, a glidein whose pilot reported its end is
terminated by the next cycles, and the cloud calls show in the Prometheus metrics.
"""

from __future__ import annotations

import gc
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from gwms import cli
from gwms.config import load_factory_config
from gwms.credentials.keys import FactoryKeyring
from gwms.factory.daemon import FINISH_GRACE, FactoryDaemon, ProviderPool
from gwms.factory.journal import BatchState, GlideinState, Journal
from gwms.factory.providers.local import PILOT_USER_ENV, LocalProvider
from gwms.factory.web import latest_status, serve
from gwms.factory.webarea import WebArea, install_web_area
from gwms.localvm import runner
from gwms.pool.embedded.store import Store
from gwms_context import userdata as codec
from tests.integration.pool_fixtures import CollectorProcess, free_port, make_collector
from tests.integration.test_factory_daemon import (
    FACTORY,
    FACTORY_ID,
    FRONTEND,
    FRONTEND_ID,
    AsIdentity,
    make_pki,
    publish_request,
)
from tests.integration.test_local_provider import (
    BOOTSTRAP_ARGS,
    TEST_PILOT,
    VmHost,
    alive,
    wait_for,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLIENT = f"{FRONTEND}.main"


def write_config(tmp: Path, base_dir: Path, *, collector: CollectorProcess | None = None,
                 port: int | None = None, pilot_args: tuple[str, ...] = ()) -> Path:  # fmt: skip
    port = port or free_port()
    url = collector.url if collector else "http://127.0.0.1:9"
    token = collector.token_files[FACTORY_ID] if collector else tmp / "unused.token"
    path = tmp / "factory.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: {FACTORY}
        collector: {{backend: embedded, url: "{url}", token_file: "{token}"}}
        state_dir: {tmp / "state"}
        cycle: 1
        web: {{listen: "127.0.0.1:{port}"}}
        frontends:
          - {{name: {FRONTEND}, identity: "{FRONTEND_ID}", max_glideins: 10}}
        clouds:
          - {{name: here, type: local, base_dir: "{base_dir}", max_instances: 4}}
        entries:
          - name: local_entry
            cloud: here
            image: local
            instance_types: [local]
            limits: {{max_running: 2, max_idle: 2, max_launches_per_cycle: 2}}
            lifetimes: {{max: 2h, retire: 1h30m, idle_shutdown: 10m}}
            pilot_args: {list(pilot_args)}
        """)
    )
    return path


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    server = make_collector(tmp_path / "pool")
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_factory_run_once_launches_real_local_vms_for_a_verified_request(
    tmp_path: Path,
    host: VmHost,
    collector: CollectorProcess,
    pilot_user: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gwms.pool import open_collector

    if pilot_user:
        monkeypatch.setenv(PILOT_USER_ENV, pilot_user)
    config = write_config(tmp_path, host.base, collector=collector)
    assert cli.main(["factory", "run", "--config", str(config), "--once"]) == 0
    frontend = open_collector(
        {"backend": "embedded", "url": collector.url,
         "token_file": str(collector.token_files[FRONTEND_ID])}
    )  # fmt: skip
    publish_request(frontend, make_pki(datetime.now(UTC)), idle=2, max_running=2,
                    now=datetime.now(UTC))  # fmt: skip

    assert cli.main(["factory", "run", "--config", str(config), "--once"]) == 0

    with Journal.in_state_dir(tmp_path / "state") as journal:
        [batch] = journal.batches(BatchState.LAUNCHED)
        glideins = journal.glideins()
    vms = runner.list_local_vms(host.base)
    host.remember()
    assert batch.count == 2
    assert sorted(g.cloud_id for g in glideins) == sorted(vm.instance_id for vm in vms)
    assert sorted(vm.launch_index for vm in vms) == [0, 1]
    for vm in vms:
        assert vm.tags["gwms:batch"] == batch.batch_id
        assert vm.tags["gwms:client"] == CLIENT
        assert vm.state in (runner.PENDING, "running")
        document = codec.decode((vm.dir / "user-data").read_bytes())
        assert document.glidein_id == batch.batch_id
    assert all(alive(int(vm.pids["vm"])) for vm in vms if vm.pids.get("vm"))

    for vm in vms:
        runner.terminate_local_vm(host.base, vm.instance_id, wait=20)
    assert [vm.state for vm in runner.list_local_vms(host.base)] == [runner.TERMINATED] * 2


@pytest.mark.slow
def test_factory_run_serves_the_web_service_and_stops_it_cleanly_on_sigterm(
    tmp_path: Path, host: VmHost, collector: CollectorProcess
) -> None:
    port = free_port()
    config = write_config(tmp_path, host.base, collector=collector, port=port)
    log = (tmp_path / "factory.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gwms", "factory", "run", "--config", str(config)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"

        def metrics() -> str | None:
            try:
                body = requests.get(f"{url}/metrics", timeout=2).text
            except requests.RequestException:
                return None
            return body if "gwms_factory_entries" in body else None

        body = wait_for("the factory's /metrics", metrics)
        assert 'gwms_factory_entries{enabled="true"} 1.0' in body
        assert requests.get(f"{url}/healthz", timeout=2).ok
        manifest = requests.get(f"{url}/web/manifest.json", timeout=2)
        assert "glidein_startup.sh" in manifest.text

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_a_glidein_whose_pilot_ended_is_terminated_and_calls_show_in_metrics(
    tmp_path: Path, host: VmHost, pilot_user: str | None
) -> None:
    # The factory's web area, with the test pilot as glidein_startup.sh.
    config = load_factory_config(write_config(tmp_path, host.base, pilot_args=("-sleep", "0")))
    pilots = tmp_path / "pilots"
    pilots.mkdir()
    (pilots / "glidein_startup.sh").write_bytes(TEST_PILOT)
    install_web_area(Path(str(config.web.web_dir)), [pilots])
    offset = [timedelta(0)]
    store = Store(tmp_path / "pool.sqlite")
    pool = ProviderPool(
        config,
        build=lambda cloud, **kw: LocalProvider(
            cloud, factory=kw["factory"], pilot_user=pilot_user, grace=4,
            bootstrap_args=[*BOOTSTRAP_ARGS, "--no-poweroff"],  # the VM stays up, empty
        ),
    )  # fmt: skip
    with Journal.in_state_dir(tmp_path / "state") as journal:
        daemon = FactoryDaemon(
            config,
            collector=AsIdentity(store, FACTORY_ID),
            keyring=FactoryKeyring.generate(Path(str(config.keys.dir))),
            journal=journal,
            providers=pool,
            clock=lambda: datetime.now(UTC) + offset[0],
        )
        web = serve(
            WebArea(Path(str(config.web.web_dir))), Path(str(config.web.upload_dir)),
            daemon.upload_secret, listen=config.web.listen, max_upload_size=10_000_000,
            metrics=daemon.metrics,
        )  # fmt: skip
        try:
            daemon.cycle()
            publish_request(AsIdentity(store, FRONTEND_ID), make_pki(datetime.now(UTC)),
                            idle=1, max_running=1, now=datetime.now(UTC))  # fmt: skip
            [batch] = daemon.cycle().launched
            glidein = f"{batch}.0"
            [vm_dir] = [vm.dir for vm in runner.list_local_vms(host.base)]
            web_base = codec.decode((vm_dir / "user-data").read_bytes()).web_base
            assert requests.get(f"{web_base}/glidein_startup.sh", timeout=5).ok, web_base
            upload_dir = Path(str(config.web.upload_dir))
            wait_for(
                "the pilot's exit report",
                lambda: (
                    (latest_status(upload_dir, "local_entry", CLIENT, glidein) or {}).get("stage")
                    == "pilot_exited"
                ),
            )
            host.remember()

            early = daemon.cycle()  # the VM may still ship its logs: not yet
            assert early.finished == 0
            assert journal.glidein(glidein).state is GlideinState.RUNNING
            offset[0] = timedelta(seconds=FINISH_GRACE + 5)
            late = daemon.cycle()

            assert late.finished == 1
            assert journal.glidein(glidein).state is GlideinState.TERMINATING
            vm = runner.read_vm(host.base / journal.glidein(glidein).cloud_id)
            assert vm is not None
            wait_for("the VM to end", lambda: not alive(int(vm.pids["vm"])), 15)
            metrics = requests.get(f"{web.url}/metrics", timeout=5).text
            assert 'gwms_factory_cloud_calls_total{api="launch",cloud="here",outcome="ok"}' in (
                metrics
            )
            assert 'api="terminate",cloud="here",outcome="ok"' in metrics
            assert 'gwms_factory_glideins{entry="local_entry",state="terminating"} 1.0' in metrics
        finally:
            web.stop()
            # Dropped now, not when pytest drops a failure's traceback: waitress closes its
            # descriptors again when collected, and by then they may be another server's.
            del web
            gc.collect()
