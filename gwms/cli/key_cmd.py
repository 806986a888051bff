"""`gwms key`: create, rotate and inspect the factory key ring that opens sealed credentials."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from gwms.errors import CredentialError

if TYPE_CHECKING:
    from gwms.credentials.keys import KeyInfo

MAX_GRACE_HOURS = 24 * 366


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `key` group and its `generate`, `rotate` and `show` commands."""
    group = subparsers.add_parser(
        "key", help="manage the factory key pair frontends seal to", description=__doc__
    )
    commands = group.add_subparsers(dest="key_command", metavar="COMMAND", required=True)

    generate = commands.add_parser("generate", help="create a new key ring with one key")
    generate.add_argument("--dir", required=True, help="key ring directory (created 0700)")
    generate.add_argument(
        "--algorithm",
        choices=("x25519", "rsa"),
        default="x25519",
        help="x25519 (default) or rsa (3072-bit, RSA-OAEP)",
    )
    generate.set_defaults(handler=_generate)

    rotate = commands.add_parser(
        "rotate", help="make a new current key; the previous one still opens for a grace period"
    )
    rotate.add_argument("--dir", required=True, help="key ring directory")
    rotate.add_argument(
        "--grace-hours",
        type=float,
        default=24.0,
        help="hours the previous key still opens envelopes (default 24)",
    )
    rotate.add_argument(
        "--algorithm", choices=("x25519", "rsa"), help="algorithm of the new key (default: same)"
    )
    rotate.set_defaults(handler=_rotate)

    show = commands.add_parser(
        "show", help="list key ids and ages and print the public key (never the private key)"
    )
    show.add_argument("--dir", required=True, help="key ring directory")
    output = show.add_mutually_exclusive_group()
    output.add_argument("--pem", action="store_true", help="print only the current public key")
    output.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(handler=_show)


def _generate(args: argparse.Namespace) -> int:
    from gwms.credentials.keys import FactoryKeyring

    ring = FactoryKeyring.generate(args.dir, args.algorithm)
    key = ring.keys[0]
    print(f"generated {key.algorithm} key {key.id} in {ring.directory}")
    print(ring.public_key_pem(), end="")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from gwms.credentials.keys import FactoryKeyring

    if not 0 <= args.grace_hours <= MAX_GRACE_HOURS:
        raise CredentialError(
            f"--grace-hours {args.grace_hours} is out of range; give 0 to {MAX_GRACE_HOURS} hours"
        )
    ring = FactoryKeyring.load(args.dir)
    previous = ring.current_key_id
    new = ring.rotate(timedelta(hours=args.grace_hours), algorithm=args.algorithm)
    until = next(k.retires for k in ring.keys if k.id == previous)
    print(f"new current key {new} in {ring.directory}")
    print(f"previous key {previous} opens envelopes until {_iso(until)}")
    print(ring.public_key_pem(), end="")
    return 0


def _show(args: argparse.Namespace) -> int:
    from gwms.credentials.keys import FactoryKeyring

    ring = FactoryKeyring.load(args.dir)
    if args.pem:
        print(ring.public_key_pem(), end="")
        return 0
    now = datetime.now(UTC)
    if args.json:
        doc = {
            "directory": str(ring.directory),
            "current": ring.current_key_id,
            "keys": [_key_json(k) for k in ring.keys],
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(f"key ring {ring.directory}")
    for key in ring.keys:
        status = "current" if key.current else f"retiring, opens until {_iso(key.retires)}"
        age = _age(now - key.created)
        print(f"  {key.id}  {key.algorithm:<8}  created {_iso(key.created)} ({age} ago)  {status}")
    print("public key (publish in the entry ad):")
    print(ring.public_key_pem(), end="")
    return 0


def _key_json(key: KeyInfo) -> dict[str, object]:
    return {
        "id": key.id,
        "algorithm": key.algorithm,
        "created": int(key.created.timestamp()),
        "retires": int(key.retires.timestamp()) if key.retires else None,
        "current": key.current,
        "public_key_pem": key.public_key_pem(),
    }


def _iso(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def _age(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"
