"""Ansible over podman: the collection's connection against ours with pipelining.

Molecule scenarios and the site-playbook test spend most of their time in the connection:
containers.podman.podman makes four `podman exec` calls per task (mkdir, chmod, run, rm);
gwms_podman (tests/molecule/connection_plugins/) pipes the module on stdin, one call.
Both run the same playbook (stat, copy, slurp, assert: TASKS module runs) against the same
systemd container, alternating, ROUNDS times; the table gives seconds per module run and
the ratio, measured in the same run because the machine is noisy.

Baseline: containers.podman.podman (the ratio is baseline / gwms_podman).
Needs root, podman and the Molecule base image (tests/molecule/make-base-image.sh).

Run: .venv/bin/python bench/podman_connection.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IMAGE = os.environ.get("GWMS_MOLECULE_IMAGE", "localhost/gwms-debian12-systemd:latest")
PLUGINS = REPO / "tests" / "molecule" / "connection_plugins"
STATS, COPIES = 20, 5
TASKS = STATS + COPIES + 2  # + slurp + assert
PLAYBOOK = f"""\
- name: Connection benchmark
  hosts: all
  gather_facts: false
  tasks:
    - name: Stat
      ansible.builtin.stat:
        path: /etc/hostname
      loop: "{{{{ range({STATS}) | list }}}}"
    - name: Copy
      ansible.builtin.copy:
        content: "x{{{{ item }}}}"
        dest: "/tmp/bench{{{{ item }}}}"
        mode: "0644"
      loop: "{{{{ range({COPIES}) | list }}}}"
    - name: Slurp
      ansible.builtin.slurp:
        src: /tmp/bench1
      register: slurped
    - name: Check
      ansible.builtin.assert:
        that: (slurped.content | b64decode) == 'x1'
"""
CONNECTIONS = {
    "containers.podman.podman": {},
    "gwms_podman": {"ANSIBLE_CONNECTION_PLUGINS": str(PLUGINS), "ANSIBLE_PIPELINING": "true"},
}


def run_playbook(container: str, connection: str, playbook: Path) -> float:
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", **CONNECTIONS[connection]}
    started = time.monotonic()
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", f"{container},", "-c", connection,
         "-e", "ansible_python_interpreter=/usr/bin/python3", str(playbook)],
        env=env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{connection}: ansible-playbook failed:\n{done.stdout[-3000:]}{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each connection")
    args = parser.parse_args()
    podman = shutil.which("podman")
    if podman is None or not (BIN / "ansible-playbook").exists():
        sys.exit("needs podman (tests/molecule/setup-host.sh) and ansible in this venv")
    started = subprocess.run(
        [podman, "run", "--detach", "--network=none", "--systemd=always", IMAGE,
         "/lib/systemd/systemd"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    if started.returncode != 0:
        sys.exit(f"cannot start {IMAGE} (tests/molecule/make-base-image.sh): {started.stderr}")
    container = started.stdout.strip()
    seconds: dict[str, list[float]] = {name: [] for name in CONNECTIONS}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            playbook = Path(tmp) / "bench.yml"
            playbook.write_text(PLAYBOOK)
            for _ in range(args.rounds):
                for name in CONNECTIONS:
                    seconds[name].append(run_playbook(container, name, playbook))
    finally:
        subprocess.run(
            [podman, "rm", "--force", "--time", "0", container],
            capture_output=True, check=False, timeout=120,
        )  # fmt: skip

    baseline = statistics.median(seconds["containers.podman.podman"])
    print(f"{TASKS} module runs per playbook, {args.rounds} rounds, median of rounds")
    print(f"{'connection':28} {'playbook s':>10} {'s/module':>9} {'ratio':>6}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:28} {median:10.2f} {median / TASKS:9.3f} {baseline / median:6.2f}")


if __name__ == "__main__":
    main()
