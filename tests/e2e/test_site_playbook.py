"""`ansible-playbook -i inventories/local playbooks/site.yml` brings up the whole stack.

Against a podman container running systemd (the Molecule base image, no network): the
collector, factory and frontend run as systemd services and answer over HTTP, the factory's
entry ad reaches the collector under the factory's identity, and the frontend completes
cycles against it. Skipped when podman, the base image or Ansible is missing (see
docs/ansible.md: tests/molecule/setup-host.sh and make-base-image.sh). About 1.5 minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
IMAGE = os.environ.get("GWMS_MOLECULE_IMAGE", "localhost/gwms-debian12-systemd:latest")

# The deployment takes about 1.5 min on 2 idle cores, more on a loaded machine. Deselected
# from plain pytest: the molecule suite of tests/run-suites.sh (`make test`) runs it.
pytestmark = [
    pytest.mark.molecule,
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(1800),
]


def _require_tools() -> str:
    podman = shutil.which("podman")
    if podman is None:
        pytest.skip("podman is not installed (tests/molecule/setup-host.sh)")
    if not (BIN / "ansible-playbook").exists():
        pytest.skip("ansible is not installed (pip install -r requirements-ansible.txt)")
    image = subprocess.run(
        [podman, "image", "exists", IMAGE], capture_output=True, check=False, timeout=60
    )
    if image.returncode != 0:
        pytest.skip(f"{IMAGE} is missing (tests/molecule/make-base-image.sh)")
    return podman


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    """A Debian 12 container with systemd as PID 1; removed by its id at the end."""
    podman = _require_tools()
    started = subprocess.run(
        [
            podman,
            "run",
            "--detach",
            "--systemd=always",
            "--network=none",
            "--hostname=gwms-site",
            f"--name=gwms-e2e-site-{os.getpid()}",
            IMAGE,
            "/lib/systemd/systemd",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    container_id = started.stdout.strip()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = _exec(container_id, "systemctl", "is-system-running", check=False)
            if state.stdout.strip() in ("running", "degraded"):
                break
            time.sleep(1)
        yield container_id
    finally:
        subprocess.run(
            [podman, "rm", "--force", "--time", "5", container_id],
            capture_output=True,
            check=False,
            timeout=120,
        )


def _exec(container_id: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", "exec", container_id, *argv],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def _http(container_id: str, url: str, token_file: str | None = None, body: dict | None = None):
    """(status, body text) of one HTTP call made inside the container."""
    script = (
        "import json, sys, urllib.request, urllib.error\n"
        "url, token_file, body = sys.argv[1], sys.argv[2], sys.argv[3]\n"
        "headers = {'Content-Type': 'application/json'}\n"
        "if token_file:\n"
        "    headers['Authorization'] = 'Bearer ' + open(token_file).read().strip()\n"
        "data = body.encode() if body else None\n"
        "req = urllib.request.Request(url, data=data, headers=headers)\n"
        "try:\n"
        "    with urllib.request.urlopen(req, timeout=10) as resp:\n"
        "        print(resp.status); print(resp.read().decode())\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print(exc.code); print(exc.read().decode())\n"
    )
    result = _exec(
        container_id,
        "python3",
        "-c",
        script,
        url,
        token_file or "",
        json.dumps(body) if body is not None else "",
        check=False,
    )
    if result.returncode != 0:
        return 0, result.stderr
    status, _, text = result.stdout.partition("\n")
    return int(status), text


def _wait_http(container_id: str, url: str, **kwargs) -> tuple[int, str]:
    deadline = time.monotonic() + 60
    status, text = 0, ""
    while time.monotonic() < deadline:
        status, text = _http(container_id, url, **kwargs)
        if status == 200:
            break
        time.sleep(1)
    return status, text


@pytest.fixture(scope="module")
def deployed(container: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Run site.yml with the local inventory, its one host pointed at the container."""
    extra = tmp_path_factory.mktemp("inventory") / "container.yml"
    build_dir = tmp_path_factory.mktemp("build")
    extra.write_text(
        "all:\n"
        "  hosts:\n"
        "    gwms-local:\n"
        "      ansible_connection: gwms_podman\n"
        f"      ansible_host: {container}\n"
        "      ansible_python_interpreter: /usr/bin/python3\n"
    )
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_FORCE_COLOR"] = "false"
    env["ANSIBLE_NOCOLOR"] = "true"
    # The podman connection with pipelining: one `podman exec` per task (about twice as fast).
    env["ANSIBLE_CONNECTION_PLUGINS"] = str(REPO / "tests" / "molecule" / "connection_plugins")
    env["ANSIBLE_PIPELINING"] = "true"
    result = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(REPO / "inventories" / "local"),
            "-i",
            str(extra),
            str(REPO / "playbooks" / "site.yml"),
            # The container has no network: ship every dependency, install no OS package.
            "-e",
            "gwms_install_offline=true",
            # Our own build output: Molecule runs may be reading the checkout's build/.
            "-e",
            f"gwms_build_dir={build_dir}",
            "-e",
            "gwms_collector_install_packages=false",
            "-e",
            "gwms_factory_install_packages=false",
            "-e",
            "gwms_frontend_install_packages=false",
            # Short cycles so the frontend reports within the test.
            "-e",
            "gwms_factory_cycle=5s",
            "-e",
            "gwms_frontend_cycle=5s",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    return container


def test_the_three_daemons_run_as_enabled_systemd_services(deployed: str) -> None:
    for unit in ("gwms-collector", "gwms-factory", "gwms-frontend"):
        assert _exec(deployed, "systemctl", "is-active", unit, check=False).stdout.strip() == (
            "active"
        ), _exec(deployed, "journalctl", "-u", unit, "--no-pager", "-n", "30", check=False).stdout
        assert _exec(deployed, "systemctl", "is-enabled", unit).stdout.strip() == "enabled"


def test_collector_api_answers(deployed: str) -> None:
    status, text = _wait_http(deployed, "http://127.0.0.1:9618/healthz")
    assert status == 200
    assert json.loads(text) == {"status": "ok"}
    status, _ = _http(
        deployed, "http://127.0.0.1:9618/v1/ads/query", body={"type": "Any", "constraint": "true"}
    )
    assert status == 401  # tokens are on: anonymous clients are refused


def test_factory_web_answers_health_and_metrics(deployed: str) -> None:
    status, _ = _wait_http(deployed, "http://127.0.0.1:8319/healthz")
    assert status == 200
    status, text = _http(deployed, "http://127.0.0.1:8319/metrics")
    assert status == 200
    assert "gwms_factory_entries" in text
    status, text = _http(deployed, "http://127.0.0.1:8319/web/manifest.json")
    assert status == 200
    assert "glidein_startup.sh" in json.loads(text)


def test_factory_entry_reaches_the_collector_under_its_identity(deployed: str) -> None:
    deadline = time.monotonic() + 60
    ads: list[dict] = []
    while time.monotonic() < deadline and not ads:
        status, text = _http(
            deployed,
            "http://127.0.0.1:9618/v1/ads/query",
            token_file="/etc/gwms/frontend/collector.token",
            body={"type": "glidefactory", "constraint": "true"},
        )
        assert status == 200, text
        ads = json.loads(text)["ads"]
        time.sleep(1)
    assert ads, "no entry ad published"
    assert ads[0]["AuthenticatedIdentity"] == "gfactory-local@localhost"


def test_frontend_completes_cycles_against_the_collector(deployed: str) -> None:
    deadline = time.monotonic() + 60
    log = ""
    while time.monotonic() < deadline:
        log = _exec(deployed, "cat", "/var/log/gwms/frontend.log", check=False).stdout
        if "cycle done" in log and "from 1/1 collectors" in log:
            break
        time.sleep(1)
    assert "from 1/1 collectors" in log, log[-3000:]


def test_secret_files_are_private_to_their_daemon(deployed: str) -> None:
    listing = _exec(
        deployed,
        "stat",
        "-c",
        "%n %a %U",
        "/etc/gwms/factory/collector.token",
        "/etc/gwms/frontend/collector.token",
        "/etc/gwms/collector/tokens.yaml",
    ).stdout.split("\n")
    assert listing[:3] == [
        "/etc/gwms/factory/collector.token 600 gwms-factory",
        "/etc/gwms/frontend/collector.token 600 gwms-frontend",
        "/etc/gwms/collector/tokens.yaml 600 gwms-collector",
    ]
