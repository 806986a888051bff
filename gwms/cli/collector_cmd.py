"""`gwms collector`: run the embedded collector + schedd, issue its tokens, look at its ads."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from gwms.errors import GwmsError

ENV_URL = "GWMS_COLLECTOR_URL"
ENV_TOKEN = "GWMS_TOKEN_FILE"  # noqa: S105 - a variable name, not a secret
ENV_CA = "GWMS_CA_FILE"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `gwms collector serve|add-token|query`."""
    parser = subparsers.add_parser(
        "collector",
        help="run the embedded collector + schedd and manage its tokens",
        description="The embedded collector + schedd: ads and a job queue in SQLite, over HTTP.",
    )
    sub = parser.add_subparsers(dest="collector_command", metavar="ACTION", required=True)

    serve = sub.add_parser("serve", help="serve the collector/schedd HTTP API until SIGTERM")
    serve.add_argument("--db", required=True, type=Path, help="SQLite file (created if absent)")
    serve.add_argument("--listen", required=True, help="HOST:PORT, e.g. 127.0.0.1:9618")
    serve.add_argument(
        "--tokens",
        type=Path,
        help="YAML identity -> sha256(token) file; without it every client is anonymous",
    )
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate chain (with --tls-key)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    serve.add_argument("--threads", type=int, default=4, help="worker threads (default 4)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    serve.set_defaults(handler=_serve)

    add = sub.add_parser("add-token", help="issue a token for an identity (printed once)")
    add.add_argument("--tokens", required=True, type=Path, help="tokens file to update (0600)")
    add.add_argument("--identity", required=True, help="e.g. vo1-frontend@example.org")
    add.add_argument("--replace", action="store_true", help="replace the identity's token")
    add.add_argument(
        "--token-out", type=Path, help="write the token to this file (0600) instead of printing it"
    )
    add.set_defaults(handler=_add_token)

    query = sub.add_parser("query", help="print the ads in a collector (like condor_status)")
    query.add_argument("--type", default="Any", help="MyType to list (default: Any)")
    query.add_argument("--constraint", default="true", help="ClassAd constraint")
    query.add_argument("--attr", action="append", help="attribute to show (repeatable)")
    query.add_argument("--json", action="store_true", help="print the JSON wire form")
    add_client_options(query)
    query.set_defaults(handler=_query)


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """--collector/--token-file/--ca-file, defaulting to the GWMS_* environment variables."""
    parser.add_argument("--collector", help=f"collector URL (default: ${ENV_URL})")
    parser.add_argument(
        "--token-file", type=Path, help=f"bearer token file (default: ${ENV_TOKEN})"
    )
    parser.add_argument("--ca-file", type=Path, help=f"CA bundle for https (default: ${ENV_CA})")


def pool_config_from_args(args: argparse.Namespace) -> dict[str, str | None]:
    """The embedded pool config the client options (or their env variables) describe."""
    url = args.collector or os.environ.get(ENV_URL)
    if not url:
        raise GwmsError(f"no collector URL: pass --collector URL or set {ENV_URL}.")
    token = args.token_file or os.environ.get(ENV_TOKEN)
    ca_file = args.ca_file or os.environ.get(ENV_CA)
    return {
        "backend": "embedded",
        "url": url,
        "token_file": str(token) if token else None,
        "ca_file": str(ca_file) if ca_file else None,
    }


def _serve(args: argparse.Namespace) -> int:
    from gwms.pool.embedded.server import serve

    if (args.tls_cert is None) != (args.tls_key is None):
        raise GwmsError("--tls-cert and --tls-key go together; pass both or neither.")
    if args.threads < 1:
        raise GwmsError("--threads must be at least 1.")
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    serve(args.db, args.listen, args.tokens, tls, args.threads)
    return 0


def _add_token(args: argparse.Namespace) -> int:
    from gwms.pool.embedded.tokens import add_token, write_token_file

    token = add_token(args.tokens, args.identity, replace=args.replace)
    if args.token_out:
        write_token_file(args.token_out, token)
        print(f"token for {args.identity} written to {args.token_out}", file=sys.stderr)
    else:
        print(token)
        print(f"token for {args.identity}: shown once, store it now", file=sys.stderr)
    return 0


def _query(args: argparse.Namespace) -> int:
    from gwms import classads
    from gwms.pool import open_collector

    collector = open_collector(pool_config_from_args(args))
    ads = collector.query(args.type, args.constraint, args.attr)
    if args.json:
        print(json.dumps([classads.ad_to_json(ad) for ad in ads], indent=2))
    else:
        print(classads.format_old_ads(ads), end="")
    return 0
