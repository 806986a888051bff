"""`gwms proxy`: make, derive and inspect RFC 3820 X.509 proxies (like grid-proxy-init/-info)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gwms.errors import CredentialError

if TYPE_CHECKING:
    from gwms.credentials.proxy import Proxy


def default_proxy_path() -> str:
    """Where grid tools look for the user's proxy: $X509_USER_PROXY, else /tmp/x509up_u<uid>."""
    return os.environ.get("X509_USER_PROXY") or f"/tmp/x509up_u{os.getuid()}"  # noqa: S108


def _default_user_file(env: str, name: str) -> str:
    return os.environ.get(env) or str(Path.home() / ".globus" / name)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `proxy` group and its `init`, `derive` and `info` commands."""
    group = subparsers.add_parser(
        "proxy", help="make, derive and inspect X.509 proxies", description=__doc__
    )
    commands = group.add_subparsers(dest="proxy_command", metavar="COMMAND", required=True)

    init = commands.add_parser(
        "init", help="make a proxy from a user certificate and key (like grid-proxy-init)"
    )
    init.add_argument(
        "--cert",
        default=_default_user_file("X509_USER_CERT", "usercert.pem"),
        help="user certificate PEM (default: $X509_USER_CERT or ~/.globus/usercert.pem)",
    )
    init.add_argument(
        "--key",
        default=_default_user_file("X509_USER_KEY", "userkey.pem"),
        help="user private key PEM (default: $X509_USER_KEY or ~/.globus/userkey.pem)",
    )
    init.add_argument(
        "--passphrase-file",
        help="read the key's pass phrase from this file (else it is asked on the terminal)",
    )
    _add_common(init)
    init.add_argument(
        "-o",
        "--out",
        default=default_proxy_path(),
        help="proxy file to write, 0600 (default: $X509_USER_PROXY or /tmp/x509up_u<uid>)",
    )
    init.set_defaults(handler=_init)

    derive = commands.add_parser(
        "derive", help="make a shorter-lived (or limited) proxy from an existing proxy"
    )
    derive.add_argument(
        "--from",
        dest="source",
        default=default_proxy_path(),
        help="the issuing proxy file (default: $X509_USER_PROXY or /tmp/x509up_u<uid>)",
    )
    _add_common(derive)
    derive.add_argument("-o", "--out", required=True, help="proxy file to write, 0600")
    derive.set_defaults(handler=_derive)

    info = commands.add_parser("info", help="show a proxy's identity, type, time left and chain")
    info.add_argument(
        "file",
        nargs="?",
        default=default_proxy_path(),
        help="proxy file (default: $X509_USER_PROXY or /tmp/x509up_u<uid>)",
    )
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=_info)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hours",
        type=float,
        default=12.0,
        help="lifetime in hours (default 12), cut to the issuer's",
    )
    parser.add_argument(
        "--limited", action="store_true", help="make a limited proxy (cannot start jobs)"
    )
    parser.add_argument("--bits", type=int, default=2048, help="proxy key size (default 2048)")
    parser.add_argument(
        "--path-length", type=int, help="how many further proxies may be derived (default: any)"
    )


def _passphrase(args: argparse.Namespace) -> str | None:
    if args.passphrase_file:
        try:
            return Path(args.passphrase_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise CredentialError(
                f"cannot read the pass phrase file {args.passphrase_file}: "
                f"{exc.strerror or exc}; check the path"
            ) from exc
    return None


def _init(args: argparse.Namespace) -> int:
    from gwms.credentials.proxy import create_proxy, load_cert_and_key

    passphrase = _passphrase(args)
    try:
        cred = load_cert_and_key(args.cert, args.key, passphrase)
    except CredentialError as exc:
        if passphrase is not None or "is encrypted" not in str(exc) or not sys.stdin.isatty():
            raise
        cred = load_cert_and_key(args.cert, args.key, getpass.getpass("Enter GRID pass phrase: "))
    proxy = create_proxy(
        cred.cert,
        cred.key,
        cred.chain,
        args.hours,
        args.limited,
        args.bits,
        path_length=args.path_length,
        source=args.cert,
    )
    return _finish(proxy, args)


def _derive(args: argparse.Namespace) -> int:
    from gwms.credentials.proxy import derive_proxy, load_proxy

    issuer = load_proxy(args.source)
    proxy = derive_proxy(issuer, args.hours, args.limited, args.bits, path_length=args.path_length)
    if proxy.limited and not args.limited:
        print(
            f"gwms: warning: {args.source} is a limited proxy, so the new proxy is limited too",
            file=sys.stderr,
        )
    return _finish(proxy, args)


def _finish(proxy: Proxy, args: argparse.Namespace) -> int:
    from gwms.credentials.proxy import format_time_left, inspect_proxy, write_proxy

    info = inspect_proxy(proxy)
    if proxy.clamped:
        print(
            f"gwms: warning: the proxy lifetime was cut to {format_time_left(info.time_left)} "
            f"(asked {args.hours:g} h), the time left on its issuer",
            file=sys.stderr,
        )
    path = write_proxy(proxy, args.out)
    print(f"wrote {info.type} for {info.identity} to {path}")
    print(
        f"valid until {info.not_after:%Y-%m-%d %H:%M:%S} UTC ({format_time_left(info.time_left)})"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from gwms.credentials.proxy import format_time_left, inspect_proxy, load_proxy

    # An expired proxy is still worth describing (grid-proxy-info does); other defects are errors.
    info = inspect_proxy(load_proxy(args.file, check_validity=False))
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    left = format_time_left(info.time_left) + ("  (expired)" if info.expired else "")
    rows = [
        ("subject", info.subject),
        ("issuer", info.issuer),
        ("identity", info.identity),
        ("type", info.type),
        ("strength", f"{info.strength} bits"),
        ("path", info.source),
        ("timeleft", left),
        ("pathlen", "any" if info.path_length is None else str(info.path_length)),
    ]
    for label, value in rows:
        print(f"{label:<9}: {value}")
    for index, subject in enumerate(info.chain, start=1):
        print(f"{'chain':<9}: {index} {subject}")
    return 0
