"""The htcondor role's rendered configuration, read by HTCondor's real parser.

The role runs for real (ansible-playbook, local connection, only its configuration tasks)
into a temporary config dir; `htcondor2.param` from the htcondor wheel then reads that tree
through CONDOR_CONFIG in a fresh process, the way every HTCondor daemon and tool would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = shutil.which(
    "ansible-playbook", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
)

if ANSIBLE_PLAYBOOK is None:
    pytest.skip(
        "ansible-playbook is not installed; pip install -r requirements-ansible.txt",
        allow_module_level=True,
    )
if os.geteuid() != 0:
    pytest.skip("the htcondor role writes root-owned files; run as root", allow_module_level=True)

PARAMS = [
    "DAEMON_LIST", "COLLECTOR_HOST", "COLLECTOR_NAME", "TRUST_DOMAIN",
    "SEC_DEFAULT_AUTHENTICATION", "SEC_DEFAULT_AUTHENTICATION_METHODS",
    "SEC_CLIENT_AUTHENTICATION_METHODS", "SEC_DEFAULT_ENCRYPTION", "AUTH_SSL_SERVER_CERTFILE",
    "ALLOW_WRITE", "SLOT_TYPE_1_PARTITIONABLE", "EXECUTE", "START", "NEGOTIATOR_INTERVAL",
    "MAX_JOBS_RUNNING", "SEC_TOKEN_DIRECTORY", "SEC_PASSWORD_DIRECTORY",
]  # fmt: skip

# One ansible-playbook run renders every case (one play each, sharing the start-up and
# the facts); "submit" is an execute host re-rendered as a submit host.
CASES: dict[str, list[dict[str, object]]] = {
    "execute": [
        {
            "htcondor_roles": ["execute"],
            "htcondor_central_manager": "cm.example.org",
            "htcondor_trust_domain": "pool.example.org",
            "htcondor_idtokens": {"pool": "header.payload.signature"},
        }
    ],
    "broken": [
        {
            "htcondor_roles": ["execute"],
            "htcondor_config_snippets": {"broken": "THIS LINE HAS NO EQUALS SIGN"},
        }
    ],
    "central_manager": [
        {
            "htcondor_roles": ["central_manager"],
            "htcondor_central_manager": "cm.example.org",
            "htcondor_collector_name": "Example Pool",
            "htcondor_signing_keys": {"POOL": "not-a-real-key"},
        }
    ],
    "submit": [
        {"htcondor_roles": ["execute"]},
        {
            "htcondor_roles": ["submit"],
            "htcondor_auth_methods": ["SSL"],
            "htcondor_config_overrides": {"NEGOTIATOR_INTERVAL": 45, "MAX_JOBS_RUNNING": None},
        },
    ],
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the role's configuration tasks for every case; return the dir of case dirs."""
    base = tmp_path_factory.mktemp("htcondor-role")
    plays = []
    for case, runs in CASES.items():
        for variables in runs:
            plays.append(
                {
                    "name": f"Render the htcondor configuration: {case}",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": not plays,
                    "gather_subset": ["min"],
                    "vars": {
                        "htcondor_install_packages": False,
                        "htcondor_start_services": False,
                        "htcondor_config_dir": str(base / case / "condor"),
                        "htcondor_execute_dir": str(base / case / "execute"),
                        **variables,
                    },
                    "roles": ["htcondor"],
                }
            )
    playbook = base / "render.yml"
    playbook.write_text(json.dumps(plays, indent=1))  # JSON is YAML
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_LOCAL_TEMP": str(base / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    run = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", "localhost,", str(playbook), "--tags", "htcondor_configure"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return base


def read_config(config_dir: Path) -> subprocess.CompletedProcess[str]:
    """Read the tree with htcondor2.param in a fresh process (the parser reads at import)."""
    # param.get returns typed values (int, bool); compare them as the config text says.
    script = (
        "import json, htcondor2\n"
        "def text(v):\n"
        "    return None if v is None else str(v).lower() if isinstance(v, bool) else str(v)\n"
        f"print(json.dumps({{k: text(htcondor2.param.get(k)) for k in {PARAMS!r}}}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("_CONDOR_")}
    env["CONDOR_CONFIG"] = str(config_dir / "condor_config")
    return subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def params(config_dir: Path) -> dict[str, str | None]:
    run = read_config(config_dir)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout)


def test_execute_host_is_a_startd_with_one_partitionable_slot_and_idtokens(rendered: Path) -> None:
    config = rendered / "execute" / "condor"
    p = params(config)
    daemons = p["DAEMON_LIST"].replace(",", " ").split()
    assert "STARTD" in daemons
    assert not {"SCHEDD", "COLLECTOR", "NEGOTIATOR"} & set(daemons)
    assert p["COLLECTOR_HOST"] == "cm.example.org:9618"
    assert p["TRUST_DOMAIN"] == "pool.example.org"
    assert p["SEC_DEFAULT_AUTHENTICATION"] == "REQUIRED"
    assert p["SEC_DEFAULT_AUTHENTICATION_METHODS"] == "FS, IDTOKENS, SSL"
    assert p["SEC_DEFAULT_ENCRYPTION"] == "REQUIRED"
    assert p["ALLOW_WRITE"] == "condor@pool.example.org"
    assert p["SLOT_TYPE_1_PARTITIONABLE"] == "true"
    assert p["EXECUTE"] == str(rendered / "execute" / "execute")
    assert p["SEC_TOKEN_DIRECTORY"] == str(config / "tokens.d")
    token = config / "tokens.d" / "pool"
    assert token.read_text() == "header.payload.signature\n"
    assert token.stat().st_mode & 0o777 == 0o600
    assert (config / "tokens.d").stat().st_mode & 0o777 == 0o700


def test_a_broken_snippet_is_refused_by_the_parser(rendered: Path) -> None:
    run = read_config(rendered / "broken" / "condor")
    assert run.returncode != 0
    assert "50-gwms-broken.conf" in run.stdout + run.stderr


def test_central_manager_runs_collector_and_negotiator(rendered: Path) -> None:
    config = rendered / "central_manager" / "condor"
    p = params(config)
    daemons = p["DAEMON_LIST"].replace(",", " ").split()
    assert {"COLLECTOR", "NEGOTIATOR"} <= set(daemons)
    assert not {"STARTD", "SCHEDD"} & set(daemons)
    assert p["COLLECTOR_NAME"] == "Example Pool"
    assert p["NEGOTIATOR_INTERVAL"] == "60"
    key = config / "passwords.d" / "POOL"
    assert key.stat().st_mode & 0o777 == 0o600


def test_switching_to_submit_drops_the_execute_snippet_and_overrides_win(rendered: Path) -> None:
    config = rendered / "submit" / "condor"
    assert not (config / "config.d" / "20-gwms-role-execute.conf").exists()
    p = params(config)
    daemons = p["DAEMON_LIST"].replace(",", " ").split()
    assert "SCHEDD" in daemons
    assert "STARTD" not in daemons
    assert p["SEC_DEFAULT_AUTHENTICATION_METHODS"] == "SSL"
    assert p["AUTH_SSL_SERVER_CERTFILE"] == "/etc/condor/host.crt"
    assert p["NEGOTIATOR_INTERVAL"] == "45"
    # A null override writes `KEY =`: HTCondor falls back to its built-in default,
    # whatever the role's submit snippet said.
    assert "MAX_JOBS_RUNNING =\n" in (config / "config.d" / "99-gwms-overrides.conf").read_text()
    assert p["MAX_JOBS_RUNNING"] != "10000"
