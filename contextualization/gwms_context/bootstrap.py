"""gwms-bootstrap: the VM-side command run by glidein-bootstrap.service.

Subcommands: `detect` (which middleware delivers user data here) and `fetch` (write the raw
user data to a file). Exit codes: 0 done, 2 error (one line on stderr says why), 3 the cloud
has no user data for this VM, 130 interrupted. Stdlib only, Python 3.6 syntax.
"""

import argparse
import contextlib
import hashlib
import os
import sys
from typing import Callable, List, Optional  # noqa: F401 (type comments)

from gwms_context import __version__, log, service
from gwms_context.httpclient import HttpError
from gwms_context.middleware import (
    MIDDLEWARES,
    FetchOptions,
    MiddlewareError,
    detect_all,
    detect_middleware,
    get,
)
from gwms_context.middleware.base import DEFAULT_DEADLINE, DEFAULT_TIMEOUT

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_NO_USER_DATA = 3
EXIT_INTERRUPTED = 130

LOG = log.get_logger("bootstrap")


class BootstrapError(Exception):
    """A user-facing failure of a subcommand (one sentence)."""


def cmd_detect(args: argparse.Namespace) -> int:
    for name, found in detect_all(args.root).items():
        if found.evidence:
            LOG.info("%s: confidence %d: %s", name, found.confidence, "; ".join(found.evidence))
    print(detect_middleware(args.root, override=args.middleware))
    return EXIT_OK


def cmd_fetch(args: argparse.Namespace) -> int:
    opts = FetchOptions(
        root=args.root,
        metadata_url=args.metadata_url,
        config_drive=args.config_drive,
        timeout=args.timeout,
        deadline=args.deadline,
    )
    name = detect_middleware(args.root, override=args.middleware)
    LOG.info("fetching user data with the %s middleware", name)
    data = get(name).fetch(opts)
    if data is None:
        LOG.warning("no user data: the %s middleware found none for this VM", name)
        return EXIT_NO_USER_DATA
    write_private(args.output, data)
    LOG.info(
        "wrote %d bytes of user data (sha256 %s) to %s",
        len(data),
        hashlib.sha256(data).hexdigest(),
        args.output,
    )
    return EXIT_OK


def write_private(path: str, data: bytes) -> None:
    """Write atomically to a file created 0600 (user data carries credentials); '-' = stdout."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise BootstrapError(
            "cannot write the user data to %s: %s; pass a writable -o FILE"
            % (path, exc.strerror or exc)
        ) from None


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--root", default="/", metavar="DIR", help="look for DMI, disks and files under DIR (tests)"
    )
    common.add_argument(
        "--middleware",
        metavar="NAME",
        help="skip detection and use this middleware: %s" % ", ".join(MIDDLEWARES),
    )
    common.add_argument(
        "-v", "--verbose", action="count", default=0, help="-v: progress, -vv: debug"
    )
    return common


def _add_detect(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "detect", parents=[common], help="print the middleware delivering user data here"
    )
    parser.set_defaults(handler=cmd_detect)


def _add_fetch(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "fetch",
        parents=[common],
        help="write this VM's raw user data to a file (exit 3 when there is none)",
    )
    parser.add_argument(
        "--metadata-url", metavar="URL", help="base URL of the metadata service (tests, proxies)"
    )
    parser.add_argument(
        "--config-drive",
        metavar="DIR",
        help="read the config drive / context CD / seed from this directory instead of a disk",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="seconds per request try (default %(default)s)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE,
        metavar="S",
        help="seconds for the whole fetch, retries included (default %(default)s)",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="where to write it (0600); - = stdout"
    )
    parser.set_defaults(handler=cmd_fetch)


# Each adds one subcommand; the `run` subcommand (verify, overlays, pilot) is added here too.
SUBCOMMANDS = [_add_detect, _add_fetch, service.add_run_parser]  # type: List[Callable]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gwms-bootstrap",
        description="Bring up a glidein on this VM: find and fetch the user data its cloud holds.",
    )
    parser.add_argument("--version", action="version", version="gwms-bootstrap " + __version__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True  # add_subparsers(required=) is Python 3.7+
    common = _common_options()
    for add in SUBCOMMANDS:
        add(subparsers, common)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    log.setup(args.verbose)
    try:
        return int(args.handler(args) or EXIT_OK)
    except (MiddlewareError, HttpError, BootstrapError) as exc:
        LOG.error("%s", exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
