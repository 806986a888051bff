"""Everything the demo stack needs on disk: tokens, a test CA and proxy, factory and frontend YAML.

The files are what an operator would write by hand (`docs/examples/`), with short cycles so
a run takes a minute, and every secret in a 0600 file that the configuration names by path.
Both YAML files are checked with `gwms.config` before any daemon starts.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gwms.config import load_factory_config, load_frontend_config
from gwms.credentials import proxy as proxies
from gwms.credentials.testca import write_test_pki
from gwms.errors import GwmsError
from gwms.pool.embedded.tokens import add_token, write_token_file

FACTORY = "gfactory-demo"
FRONTEND = "demo-frontend"
GROUP = "main"
HOST = "127.0.0.1"
IDENTITIES = {
    "factory": f"{FACTORY}@{HOST}",
    "frontend": f"{FRONTEND}@{HOST}",
    "user": f"demo-user@{HOST}",
    "glidein": f"glidein@{HOST}",
}
CYCLE_SECONDS = 2
IDLE_SHUTDOWN_SECONDS = 8
# Two entries with different memory: small jobs match both, big jobs only "large".
ENTRIES = {"small": 2000, "large": 4000}
CLOUD_TYPES = ("local", "ec2", "openstack")
AWS_REGION = "us-east-1"
# moto accepts any key pair; it never leaves 127.0.0.1.
AWS_KEY_ID = "AKIAGWMSDEMOKEY00001"
AWS_SECRET = "gwms-demo-secret-access-key-not-real"  # noqa: S105 (moto takes any key)
DEMO_AMI = "ami-12c6146b"  # one of moto's built-in images
OPENSTACK_CLOUD = "gwms-fake"  # the password cloud in the fake's clouds.yaml
OPENSTACK_IMAGE = "debian-12-gwms"  # the fake's seed image
INSTANCE_TYPES = {"local": "small", "ec2": "t3.micro", "openstack": "m1.small"}


def pilot_user() -> str | None:
    """As root the bootstrap drops privileges for the pilot: to `nobody` in the demo."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("nobody").pw_name
    except KeyError:
        return None


def vm_python() -> str:
    """The "image's" Python for VMs: one the pilot user can run (any user, when root)."""
    if pilot_user() is None:
        return sys.executable
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if _others_can_run(Path(candidate)):
            return candidate
    return sys.executable


def _others_can_run(path: Path) -> bool:
    try:
        real = path.resolve(strict=True)
        return all(p.stat().st_mode & stat.S_IXOTH for p in (real, *real.parents))
    except OSError:
        return False


def check_run_dir(run_dir: Path) -> None:
    """As root, pilots run as another user, who must be able to reach the VMs' directories."""
    user = pilot_user()
    if user is None:
        return
    for parent in run_dir.resolve().parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise GwmsError(
                f"run directory {run_dir} is below {parent}, which the pilot user {user} cannot"
                " traverse (as root the demo runs pilots as that user); pass a --run-dir under"
                " /tmp or another directory others can traverse"
            )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def write_private(path: Path, text: str) -> Path:
    """Create `path` 0600 (never chmod-ed after writing) with `text`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


@dataclass
class DemoLayout:
    """Paths and ports of one demo run (all under `run_dir`)."""

    run_dir: Path
    cloud: str
    collector_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    cloud_port: int = field(default_factory=free_port)

    @property
    def collector_url(self) -> str:
        return f"http://{HOST}:{self.collector_port}"

    @property
    def web_url(self) -> str:
        return f"http://{HOST}:{self.web_port}"

    @property
    def cloud_url(self) -> str:
        return f"http://{HOST}:{self.cloud_port}"

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    @property
    def secrets(self) -> Path:
        return self.run_dir / "secrets"

    @property
    def collector_db(self) -> Path:
        return self.run_dir / "collector" / "pool.sqlite"

    @property
    def tokens_file(self) -> Path:
        return self.run_dir / "collector" / "tokens.yaml"

    def token_file(self, who: str) -> Path:
        if who == "glidein":  # read by the pilot, which may run as another user (see prepare)
            return self.run_dir / "pilot-token" / "glidein.token"
        return self.secrets / f"{who}.token"

    @property
    def user_proxy(self) -> Path:
        return self.secrets / "user-proxy.pem"

    @property
    def aws_credentials(self) -> Path:
        return self.secrets / "aws-credentials"

    @property
    def openstack_clouds_yaml(self) -> Path:
        """Written by the OpenStack fake when it starts (it holds the fake's passwords)."""
        return self.secrets / "clouds.yaml"

    @property
    def factory_state(self) -> Path:
        return self.run_dir / "factory"

    @property
    def factory_config(self) -> Path:
        return self.run_dir / "factory.yaml"

    @property
    def frontend_config(self) -> Path:
        return self.run_dir / "frontend.yaml"

    @property
    def vm_dir(self) -> Path:
        """Local VMs: the local cloud's base_dir, or the ones standing in for ec2 instances."""
        return self.run_dir / "vms"

    @property
    def journal(self) -> Path:
        return self.factory_state / "journal.sqlite"

    @property
    def upload_dir(self) -> Path:
        return self.factory_state / "uploads"


def prepare(layout: DemoLayout, *, max_vms: int) -> None:
    """Write tokens, PKI, proxy, cloud credentials and both configurations; validate them."""
    for directory in (layout.run_dir, layout.logs, layout.collector_db.parent):
        directory.mkdir(parents=True, exist_ok=True)
    check_run_dir(layout.run_dir)
    # The pilot user must traverse the run directory to reach its VM's work dir (as on a
    # real VM, secrets stay in 0700 directories below it).
    layout.run_dir.chmod(0o755)
    layout.secrets.mkdir(mode=0o700, exist_ok=True)
    layout.factory_state.mkdir(mode=0o700, exist_ok=True)
    layout.token_file("glidein").parent.mkdir(mode=0o711, exist_ok=True)
    for who, identity in IDENTITIES.items():
        write_token_file(layout.token_file(who), add_token(layout.tokens_file, identity))
    user = pilot_user()
    if user is not None:  # the pilot, not root, reads its token: it owns the 0600 file
        entry = pwd.getpwnam(user)
        os.chown(layout.token_file("glidein"), entry.pw_uid, entry.pw_gid)
    pki = write_test_pki(layout.run_dir / "pki", user_cn="Demo Pilot Operator")
    user = proxies.load_cert_and_key(pki.user_cert, pki.user_key)
    proxies.write_proxy(
        proxies.create_proxy(user.cert, user.key, user.chain, hours=24), layout.user_proxy
    )
    if layout.cloud == "ec2":
        write_private(
            layout.aws_credentials,
            f"[default]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}\n",
        )
    layout.factory_config.write_text(factory_yaml(layout, max_vms=max_vms))
    layout.frontend_config.write_text(frontend_yaml(layout, max_vms=max_vms))
    load_factory_config(layout.factory_config)
    load_frontend_config(layout.frontend_config)


def _cloud_yaml(layout: DemoLayout, max_vms: int) -> tuple[str, str]:
    """The factory's `clouds` item for the chosen cloud, and the image its entries use."""
    if layout.cloud == "local":
        user = pilot_user()
        as_root = f"    pilot_user: {user}\n    python: {json.dumps(vm_python())}\n" if user else ""
        return (
            "  - name: demo-cloud\n    type: local\n"
            f"    max_instances: {max_vms}\n"
            f"    base_dir: {json.dumps(str(layout.vm_dir))}\n{as_root}",
            "local-image",
        )
    if layout.cloud == "ec2":
        return (
            f"  - name: demo-cloud\n    type: ec2\n    region: {AWS_REGION}\n"
            f"    endpoint_url: {layout.cloud_url}\n"
            "    credentials:\n      type: key_pair\n"
            f"      file: {json.dumps(str(layout.aws_credentials))}\n"
            "    retries: {attempts: 3, initial_backoff: 1s, max_backoff: 4s}\n",
            DEMO_AMI,
        )
    if layout.cloud == "openstack":
        return (
            "  - name: demo-cloud\n    type: openstack\n    region: RegionOne\n"
            f"    credentials:\n      type: clouds_yaml\n      cloud: {OPENSTACK_CLOUD}\n"
            f"      file: {json.dumps(str(layout.openstack_clouds_yaml))}\n"
            "    retries: {attempts: 3, initial_backoff: 1s, max_backoff: 4s}\n",
            OPENSTACK_IMAGE,
        )
    raise ValueError(f"cloud {layout.cloud} has no demo configuration")


def factory_yaml(layout: DemoLayout, *, max_vms: int) -> str:
    cloud, image = _cloud_yaml(layout, max_vms)
    instance_type = INSTANCE_TYPES[layout.cloud]
    per_entry = max(1, max_vms // len(ENTRIES))
    entries = ""
    for name, memory in ENTRIES.items():
        # The pilot learns the pool's address and its collector token from pilot_args: the
        # frontend sends one credential per request (the proxy), so no IDTOKEN reaches the
        # UserData, and the token file is readable because local VMs share this host. The
        # idle shutdown and the attributes reach the pilot from the entry itself.
        pilot_args = [
            "-collector", layout.collector_url,
            "-idtoken", str(layout.token_file("glidein")),
        ]  # fmt: skip
        entries += (
            f"  - name: {name}\n"
            "    cloud: demo-cloud\n"
            f"    image: {image}\n"
            f"    instance_types: [{instance_type}]\n"
            "    auth_methods: [x509_proxy]\n"
            f"    limits: {{max_running: {per_entry}, max_idle: {per_entry},"
            f" max_launches_per_cycle: {per_entry}}}\n"
            f"    lifetimes: {{max: 10m, retire: 5m, idle_shutdown: {IDLE_SHUTDOWN_SECONDS}s}}\n"
            "    proxy_margin: 1h\n"
            f"    pilot_args: {json.dumps(pilot_args)}\n"
            f"    attributes: {{GLIDEIN_MaxMemMBs: {memory}, GLIDEIN_Site: Demo_{name}}}\n"
        )
    return (
        "# gwms demo: generated factory configuration (see docs/quickstart.md)\n"
        f"name: {FACTORY}\n"
        "collector:\n"
        "  backend: embedded\n"
        f"  url: {layout.collector_url}\n"
        f"  token_file: {json.dumps(str(layout.token_file('factory')))}\n"
        f"state_dir: {json.dumps(str(layout.factory_state))}\n"
        f"cycle: {CYCLE_SECONDS}s\n"
        "log_level: INFO\n"
        f"web: {{listen: '{HOST}:{layout.web_port}', base_url: {layout.web_url}}}\n"
        "frontends:\n"
        f"  - {{name: {FRONTEND}, identity: '{IDENTITIES['frontend']}',"
        f" max_glideins: {max_vms}}}\n"
        f"clouds:\n{cloud}"
        f"entries:\n{entries}"
    )


def frontend_yaml(layout: DemoLayout, *, max_vms: int) -> str:
    token = json.dumps(str(layout.token_file("frontend")))
    pool = f"{{backend: embedded, url: {layout.collector_url}, token_file: {token}}}"
    user = IDENTITIES["user"].split("@")[0]
    return (
        "# gwms demo: generated frontend configuration (see docs/quickstart.md)\n"
        f"name: {FRONTEND}\n"
        f"factories: [{{name: {FACTORY}, identity: '{IDENTITIES['factory']}'}}]\n"
        f"collectors: [{pool}]\n"
        f"schedds: [{pool}]\n"
        f"cycle: {CYCLE_SECONDS}s\n"
        "log_level: INFO\n"
        f"limits: {{max_running: {max_vms}, max_idle: {max_vms}}}\n"
        "groups:\n"
        f"  - name: {GROUP}\n"
        f"    job_constraint: 'Owner == \"{user}\"'\n"
        "    match: 'MY.RequestMemory <= TARGET.GLIDEIN_MaxMemMBs'\n"
        f"    entries: ['{FACTORY}/*']\n"
        f"    limits: {{max_running: {max_vms}, max_idle: {max_vms},"
        f" per_entry: {{max_running: {max_vms}, max_idle: {max_vms}}}}}\n"
        "    ramp_up: {max_new_per_cycle: 10}\n"
        "credentials:\n"
        "  - id: demo-proxy\n"
        "    type: x509_proxy\n"
        f"    path: {json.dumps(str(layout.user_proxy))}\n"
        "    min_lifetime: 1h\n"
    )


__all__ = [
    "CLOUD_TYPES",
    "ENTRIES",
    "FACTORY",
    "FRONTEND",
    "GROUP",
    "IDENTITIES",
    "DemoLayout",
    "factory_yaml",
    "frontend_yaml",
    "prepare",
]
