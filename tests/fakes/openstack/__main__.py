"""Run the fake alone: `python -m tests.fakes.openstack --clouds-yaml PATH [--port N]`.

For trying Packer or Ansible by hand; it serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path

from tests.fakes.openstack import FakeOpenStack, write_clouds_yaml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.openstack", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--clouds-yaml", type=Path, required=True, help="clouds.yaml to create")
    parser.add_argument("--boot-delay", type=float, default=0.0, help="seconds in BUILD")
    args = parser.parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with FakeOpenStack(port=args.port, boot_delay=args.boot_delay) as fake:
        write_clouds_yaml(fake, args.clouds_yaml)
        print(f"fake OpenStack at {fake.url}; clouds.yaml: {args.clouds_yaml}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
