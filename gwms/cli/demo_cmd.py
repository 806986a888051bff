"""`gwms demo`: show on one machine what gwms-cloud does, with nothing but this checkout.

Until the end-to-end stack exists this runs the credential and UserData path for real:
a test CA and user, a user proxy, the per-glidein proxy the factory would derive, the
UserData the factory would hand to the cloud, and what the VM decodes from it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

from gwms.credentials import proxy as proxies
from gwms.credentials.testca import write_test_pki
from gwms_context import userdata

DEMO_ENTRY = "local_demo_entry"
DEMO_MAX_SECONDS = 4 * 3600


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the local demo",
        description="Run the local demo: make a test CA and proxy, derive a per-glidein proxy, "
        "encode the UserData a factory would send to a cloud, and decode it as the VM would.",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="where to write the demo's files (default: a new temporary directory)",
    )
    parser.set_defaults(handler=run_demo)


def _step(number: int, text: str) -> None:
    print(f"[{number}] {text}")


def run_demo(args: argparse.Namespace) -> int:
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="gwms-demo-"))
    run_dir.mkdir(parents=True, exist_ok=True)

    pki = write_test_pki(run_dir / "pki", user_cn="Demo Pilot Operator")
    _step(1, f"test CA and user certificate in {pki.directory}")

    user = proxies.load_cert_and_key(pki.user_cert, pki.user_key)
    user_proxy = proxies.create_proxy(user.cert, user.key, user.chain, hours=24)
    proxies.write_proxy(user_proxy, run_dir / "user-proxy.pem")
    _step(2, f"user proxy: {proxies.inspect_proxy(user_proxy).identity}, 24 h")

    margin_hours = 1
    glidein_proxy = proxies.derive_proxy(
        user_proxy, hours=DEMO_MAX_SECONDS / 3600 + margin_hours, limited=True
    )
    info = proxies.inspect_proxy(glidein_proxy)
    left = proxies.format_time_left(info.time_left)
    _step(3, f"per-glidein proxy (factory side): {info.type}, {left} left")

    startup = b"#!/bin/sh\necho 'glidein_startup.sh would start the pilot here'\n"
    document = {
        "version": userdata.FORMAT_VERSION,
        "factory": "gfactory-demo",
        "entry": DEMO_ENTRY,
        "client": "demo-frontend.main",
        "glidein_id": "gl-demo-000001",
        "issued_at": int(time.time()),
        "web_base": "http://127.0.0.1:8319/web",
        "files": {"glidein_startup.sh": hashlib.sha256(startup).hexdigest()},
        "pilot_args": ["-collector", "127.0.0.1:9618", "-entry", DEMO_ENTRY],
        "lifetimes": {"max_seconds": DEMO_MAX_SECONDS, "retire_seconds": DEMO_MAX_SECONDS - 600},
        "log_upload": {
            "url": f"http://127.0.0.1:8319/logs/{DEMO_ENTRY}/demo-frontend.main/gl-demo-000001",
            "token": "demo-upload-token",
        },
        "credentials": {"x509_proxy": glidein_proxy.to_pem().decode("ascii")},
    }
    raw = userdata.encode(document, limit="ec2")
    (run_dir / "userdata.bin").write_bytes(raw)
    headroom = userdata.PROVIDER_LIMITS["ec2"][0] - len(raw)
    _step(4, f"UserData: {len(raw)} bytes raw, {headroom} bytes under the EC2 limit")

    decoded = userdata.decode(raw)
    _step(5, "what the VM decodes (secrets redacted):")
    print(json.dumps(decoded.redacted(), indent=2, sort_keys=True))
    print(f"\ndemo files are in {run_dir}")
    return 0
