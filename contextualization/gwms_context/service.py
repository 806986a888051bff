"""`gwms-bootstrap run`: the whole VM side, from user data to power-off (glidein-bootstrap.service).

detect -> fetch -> decode -> verify -> proxy (0600, pilot-owned) -> VO overlays -> pilot files
(sha256-checked) -> glidein_startup.sh as the pilot user under lifetimes.max_seconds -> logs
shipped (on a timer too) -> power off. Status reports go to the factory at each stage. Any
failure stops there with one log line naming the reason; logs still go to the factory when
it is reachable, and the VM still powers off (unless --no-poweroff or UserData
disable_shutdown). Exit codes: 0 the pilot ran and exited 0, 1 the pilot ran and failed or hit
its limit, 2 the pilot was not started. Stdlib only, Python 3.6.
"""

import argparse
import contextlib
import logging
import os
import re
import signal
import socket
import time
from typing import List, Optional, Tuple  # noqa: F401 (type comments)

from gwms_context import (
    factoryweb,
    log,
    logship,
    overlays,
    pilot,
    pilotfiles,
    power,
    privileges,
    userdata,
    verify,
)
from gwms_context.httpclient import HttpError
from gwms_context.middleware import FetchOptions, MiddlewareError, detect_middleware, get
from gwms_context.middleware import ec2 as ec2_middleware
from gwms_context.middleware import openstack as openstack_middleware

EXIT_PILOT_OK = 0
EXIT_PILOT_FAILED = 1
EXIT_NOT_STARTED = 2

DEFAULT_WORK_DIR = "/var/lib/gwms-glidein"
DEFAULT_PILOT_USER = "glidein"
DEFAULT_LOG_INTERVAL = 300.0
ALLOWED_FACTORIES_ENV = "GWMS_BOOTSTRAP_ALLOWED_FACTORIES"
ALLOW_LEGACY_ENV = "GWMS_BOOTSTRAP_ALLOW_LEGACY"

LOG = log.get_logger("service")
_UPLOAD_NAME = re.compile(r"[^A-Za-z0-9._-]")
# What stops the glidein before the pilot starts: each carries a one-sentence reason.
EXPECTED_FAILURES = (
    MiddlewareError,
    HttpError,
    userdata.UserDataError,
    verify.VerifyError,
    overlays.OverlayError,
    factoryweb.WebError,
    privileges.PrivilegeError,
)


class StartupFailure(Exception):
    """The glidein cannot start; the message is the one line the log and the factory get."""


class Terminated(Exception):
    """systemd (or someone) sent SIGTERM: the VM is shutting down or the service is stopped."""


def _on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the clean-up must run to its end
    raise Terminated("stopped by signal %d" % signum)


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) how far we are; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        LOG.info("cannot notify systemd: %s", exc)


def launch_index(middleware: str, opts: FetchOptions) -> int:
    """This VM's index in its batch (EC2 ami-launch-index, OpenStack launch_index), else 0."""
    try:
        if middleware == ec2_middleware.NAME:
            session = ec2_middleware.Imds(
                opts.http_client(), opts.base_url(ec2_middleware.DEFAULT_URL)
            )
            body = session.get("/latest/meta-data/ami-launch-index")
            return int(body.decode("ascii").strip()) if body else 0
        if middleware == openstack_middleware.NAME:
            return int(openstack_middleware.meta_data(opts).get("launch_index") or 0)
    except (MiddlewareError, HttpError, ValueError) as exc:
        LOG.warning("cannot read the launch index (%s); using 0", exc)
    return 0


class Layout(object):
    """The bootstrap's directories under --work-dir."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.logs = os.path.join(root, "logs")
        self.files = os.path.join(root, "files")
        self.credentials = os.path.join(root, "credentials")
        self.overlays = os.path.join(root, "overlays")
        self.pilot = os.path.join(root, "pilot")
        self.bootstrap_log = os.path.join(self.logs, "bootstrap.log")
        self.summary = os.path.join(self.pilot, "summary.json")

    def upload_sources(self):
        # type: () -> List[Tuple[str, str, Optional[str]]]
        """What goes to the factory: our logs, then the pilot's (read as untrusted)."""
        found = []
        for name in sorted(os.listdir(self.logs)) if os.path.isdir(self.logs) else []:
            found.append((name, os.path.join(self.logs, name), None))
        for name in ("summary.json", "glidein_config"):
            found.append(("pilot-" + name, os.path.join(self.pilot, name), self.pilot))
        pilot_logs = os.path.join(self.pilot, "log")
        if os.path.isdir(pilot_logs) and not os.path.islink(pilot_logs):
            for name in sorted(os.listdir(pilot_logs))[:50]:
                upload = "pilot-log-" + _UPLOAD_NAME.sub("_", name)
                found.append((upload, os.path.join(pilot_logs, name), self.pilot))
        return found


class Bootstrap(object):
    """One run of the service; `execute()` never raises but for KeyboardInterrupt."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.layout = Layout(os.path.abspath(args.work_dir))
        self.userdata = None
        self.index = 0
        self.glidein_id = "unknown"
        self.shipper = None  # type: Optional[logship.LogShipper]

    def report(self, stage: str, message: str = "", exit_code: Optional[int] = None) -> None:
        sd_notify("STATUS=%s %s" % (stage, message))
        if self.shipper is not None:
            self.shipper.report(stage, message, exit_code)

    def execute(self) -> int:
        code = EXIT_NOT_STARTED
        try:
            code = self._run()
        except EXPECTED_FAILURES as exc:
            self._fail(str(exc))
        except StartupFailure as exc:
            self._fail(str(exc))
        except Terminated as exc:
            LOG.error("glidein %s: %s; the pilot was stopped", self.glidein_id, exc)
            self.report("terminated", str(exc))
            self._ship()
            return EXIT_PILOT_FAILED  # the system is going down already: no power-off of ours
        except (OSError, ValueError) as exc:
            self._fail("unexpected %s: %s" % (type(exc).__name__, exc))
        except Exception as exc:  # noqa: BLE001 (one line for the operator, then power off)
            LOG.debug("traceback", exc_info=True)
            self._fail(
                "internal error %s: %s; report it to the image maintainers"
                % (type(exc).__name__, exc)
            )
        self._finish()
        return code

    def _fail(self, reason: str) -> None:
        LOG.error("glidein %s not started: %s", self.glidein_id, reason)
        self.report("failed", reason)

    def _run(self) -> int:
        args = self.args
        layout = self.layout
        for directory in (layout.root, layout.logs, layout.files, layout.overlays):
            privileges.make_dir(directory, mode=0o755)
        pilot_user = privileges.pilot_identity(args.pilot_user)
        privileges.make_dir(layout.credentials, pilot_user, 0o700)
        privileges.make_dir(layout.pilot, pilot_user, 0o755)

        raw, middleware, opts = self._fetch()
        self.index = launch_index(middleware, opts)
        decoded = userdata.decode(raw)
        verify.check_factory(decoded, allowed_factories(args))
        self.userdata = decoded
        self.glidein_id = "%s.%d" % (decoded.glidein_id, self.index)
        LOG.info(
            "glidein %s: factory %s, entry %s, client %s%s",
            self.glidein_id,
            decoded.factory,
            decoded.entry,
            decoded.client,
            " (legacy user data)" if decoded.legacy else "",
        )
        self.shipper = logship.LogShipper(
            log_url=decoded.log_upload_url,
            token=decoded.log_upload_token,
            launch_index=self.index,
            glidein_id=self.glidein_id,
            sources=layout.upload_sources,
            timeout=args.upload_timeout,
            deadline=args.upload_timeout * 3,
        )
        if not self.shipper.enabled:
            LOG.warning("no log_upload in the user data: logs stay on this VM")
        self.report("fetched", "user data from %s" % middleware)

        allow_legacy = args.allow_legacy or os.environ.get(ALLOW_LEGACY_ENV, "") in (
            "1",
            "yes",
            "true",
        )
        proxy_end = verify.verify(decoded, skew=args.skew, allow_legacy=allow_legacy)
        self.report("verified", "proxy valid until %d" % proxy_end)

        proxy = privileges.write_secret(
            os.path.join(layout.credentials, "x509_proxy"),
            decoded.x509_proxy.encode("utf-8"),
            pilot_user,
        )
        idtoken = None
        if decoded.idtoken:
            idtoken = privileges.write_secret(
                os.path.join(layout.credentials, "idtoken"),
                decoded.idtoken.encode("utf-8"),
                pilot_user,
            )

        env = pilot.pilot_env(pilot_user, self.glidein_id, proxy, layout.pilot)
        env.update(GLIDEIN_FACTORY=decoded.factory or "", GLIDEIN_ENTRY=decoded.entry or "",
                   GLIDEIN_CLIENT=decoded.client or "", GLIDEIN_WORK_DIR=layout.pilot)  # fmt: skip
        if decoded.overlays:
            overlays.run_all(
                decoded.overlays,
                bool(decoded.allow_privileged_overlays),
                overlays_dir=layout.overlays,
                logs_dir=layout.logs,
                pilot=pilot_user,
                env=env,
                timeout=args.overlay_timeout,
                on_tick=self._tick,
                tick=args.log_interval,
            )
            self.report("overlays", "%d overlays done" % len(decoded.overlays))

        if decoded.legacy:
            pilotfiles.fetch_legacy(
                decoded.web_base, layout.files, args.web_timeout, args.web_deadline
            )
            manifest = None
        else:
            manifest = pilotfiles.fetch_all(
                decoded.web_base, decoded.files, layout.files, args.web_timeout, args.web_deadline
            )
        self.report("files", "pilot files fetched and checked")

        pilot_tmp = os.path.join(layout.pilot, "tmp")
        privileges.make_dir(pilot_tmp, pilot_user, 0o700)
        the_plan = pilot.plan(
            decoded,
            pilot_user,
            glidein_id=self.glidein_id,
            files_dir=layout.files,
            manifest=manifest,
            work_dir=layout.pilot,
            proxy=proxy,
            idtoken=idtoken,
            summary=layout.summary,
        )
        outcome = pilot.run(
            the_plan, pilot_user, layout.logs, on_start=self._pilot_started, on_tick=self._tick,
            tick=args.log_interval, grace=args.kill_grace,
        )  # fmt: skip
        what = "pilot ended: %s after %.1f s" % (outcome.describe(), outcome.duration)
        if outcome.timed_out or outcome.returncode != 0:
            LOG.error("glidein %s %s", self.glidein_id, what)
        else:
            LOG.warning("glidein %s %s", self.glidein_id, what)
        self.report("pilot_exited", what, outcome.returncode)
        return (
            EXIT_PILOT_OK
            if outcome.returncode == 0 and not outcome.timed_out
            else EXIT_PILOT_FAILED
        )

    def _fetch(self):
        args = self.args
        opts = FetchOptions(
            root=args.root,
            metadata_url=args.metadata_url,
            config_drive=args.config_drive,
            timeout=args.timeout,
            deadline=args.deadline,
        )
        name = detect_middleware(args.root, override=args.middleware)
        raw = get(name).fetch(opts)
        if raw is None:
            raise StartupFailure(
                "the %s middleware found no user data for this VM; launch it with the "
                "factory's user data" % name
            )
        return raw, name, opts

    def _pilot_started(self, pid: int) -> None:
        elapsed = time.monotonic() - self.started
        LOG.warning(
            "glidein %s: pilot started (pid %d) %.3f s after the bootstrap",
            self.glidein_id,
            pid,
            elapsed,
        )
        sd_notify("READY=1\nSTATUS=pilot running (pid %d)" % pid)
        self.report("pilot_started", "pid %d after %.3f s" % (pid, elapsed))

    def _tick(self) -> None:
        if self.shipper is not None:
            self.shipper.ship()

    def _ship(self) -> None:
        if self.shipper is not None and self.shipper.enabled:
            sent = self.shipper.ship(force=True)
            LOG.info("uploaded %d log files", sent)
            if sent:
                self.shipper.ship()  # the bootstrap log again, now with that line

    def _finish(self) -> None:
        self._ship()
        if self.args.no_poweroff:
            LOG.warning("not powering off: --no-poweroff")
        elif self.userdata is not None and self.userdata.disable_shutdown:
            LOG.warning("not powering off: the user data sets disable_shutdown")
        else:
            self.report("shutdown", "powering off")
            power.power_off(self.args.poweroff_command)
        sd_notify("STOPPING=1")


def _file_logging(path: str) -> Optional[logging.Handler]:
    """Also log to the bootstrap log file (INFO and up), which is shipped to the factory."""
    root = logging.getLogger(log.ROOT_LOGGER)
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        LOG.error("cannot write the bootstrap log %s: %s", path, exc.strerror or exc)
        return None
    handler.setFormatter(log.LineFormatter())
    previous = root.level or logging.WARNING
    for existing in root.handlers:
        if existing.level == logging.NOTSET:
            existing.setLevel(previous)
    root.setLevel(min(previous, logging.INFO))
    handler.setLevel(logging.INFO)
    root.addHandler(handler)
    return handler


def run_main(args: argparse.Namespace) -> int:
    """Handler of `gwms-bootstrap run`."""
    handler = _file_logging(os.path.join(os.path.abspath(args.work_dir), "logs", "bootstrap.log"))
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return Bootstrap(args).execute()
    finally:
        if handler is not None:
            logging.getLogger(log.ROOT_LOGGER).removeHandler(handler)
            handler.close()


def allowed_factories(args: argparse.Namespace) -> List[str]:
    """The factory allow-list from --allowed-factories, else the environment; empty: any."""
    text = args.allowed_factories or os.environ.get(ALLOWED_FACTORIES_ENV, "")
    return [name.strip() for name in text.split(",") if name.strip()]


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds, got %s" % text)
    return value


def add_run_parser(subparsers, common_parent: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `run` subcommand to gwms-bootstrap's parser."""
    parser = subparsers.add_parser(
        "run",
        parents=[common_parent],
        help="fetch and verify the user data, run overlays and the pilot, ship logs, power off",
    )
    add = parser.add_argument
    add("--metadata-url", metavar="URL", help="base URL of the metadata service (tests, proxies)")
    add("--config-drive", metavar="DIR", help="read the config drive / context CD from DIR")
    add(
        "--timeout",
        type=_positive,
        default=2.0,
        metavar="S",
        help="seconds per metadata try (default %(default)s)",
    )
    add(
        "--deadline",
        type=_positive,
        default=30.0,
        metavar="S",
        help="seconds for the metadata fetch (default %(default)s)",
    )
    add(
        "--work-dir",
        default=DEFAULT_WORK_DIR,
        metavar="DIR",
        help="where files, logs and the pilot live (default %(default)s)",
    )
    add(
        "--pilot-user",
        default=DEFAULT_PILOT_USER,
        metavar="NAME",
        help="unprivileged user of the pilot and overlays (default %(default)s)",
    )
    add(
        "--poweroff-command",
        metavar="CMD",
        help="command that powers the VM off (default: systemctl poweroff, else shutdown -h now)",
    )
    add("--no-poweroff", action="store_true", help="leave the VM running at the end (debugging)")
    add(
        "--log-interval",
        type=_positive,
        default=DEFAULT_LOG_INTERVAL,
        metavar="S",
        help="seconds between log uploads while the pilot runs (default %(default)s)",
    )
    add(
        "--allowed-factories",
        metavar="NAMES",
        help="comma-separated factory names whose user data this image accepts; default any"
        " (also %s)" % ALLOWED_FACTORIES_ENV,
    )
    add(
        "--allow-legacy",
        action="store_true",
        help="accept legacy glideinWMS user data (also %s=1)" % ALLOW_LEGACY_ENV,
    )
    add(
        "--skew",
        type=int,
        default=verify.DEFAULT_SKEW,
        metavar="S",
        help="allowed clock skew for issued_at and the proxy (default %(default)s)",
    )
    add(
        "--overlay-timeout",
        type=_positive,
        default=overlays.DEFAULT_TIMEOUT,
        metavar="S",
        help="time limit of each overlay (default %(default)s)",
    )
    add(
        "--web-timeout",
        type=_positive,
        default=factoryweb.DEFAULT_TIMEOUT,
        metavar="S",
        help="seconds per try to the factory web (default %(default)s)",
    )
    add(
        "--web-deadline",
        type=_positive,
        default=factoryweb.DEFAULT_DEADLINE,
        metavar="S",
        help="seconds to fetch each pilot file, retries included (default %(default)s)",
    )
    add(
        "--upload-timeout",
        type=_positive,
        default=5.0,
        metavar="S",
        help="seconds per log upload try (default %(default)s)",
    )
    add(
        "--kill-grace",
        type=_positive,
        default=10.0,
        metavar="S",
        help="seconds between SIGTERM and SIGKILL at the pilot's limit (default %(default)s)",
    )
    parser.set_defaults(handler=run_main)
    return parser
