"""What the factory and frontend daemons share: clean stop on signals, pool references."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, log: Any = None) -> Iterator[None]:
    """SIGTERM/SIGINT set `stop`: the cycle in progress finishes its writes, then the loop ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    logger = log or logging.getLogger("gwms")

    def handler(signum: int, _frame: Any) -> None:
        logger.info("%s received: stopping after this cycle", signal.Signals(signum).name)
        stop.set()

    saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)


# Cloud SDKs log request headers and bodies at DEBUG: STS session tokens, and RunInstances
# bodies whose UserData holds the glidein proxy's private key and the upload token.
CHATTY_LIBRARIES = ("botocore", "boto3", "urllib3", "keystoneauth", "keystoneauth1", "openstack")


def quiet_cloud_libraries() -> None:
    """Keep the cloud SDKs' loggers at INFO or above, whatever the daemon's log level is."""
    floor = max(logging.INFO, logging.getLogger().getEffectiveLevel())
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(floor)


def pool_mapping(ref: Any) -> dict[str, Any]:
    """A collector or schedd reference from a config file, as `gwms.pool` opens it."""
    if ref.backend == "embedded":
        mapping = {"backend": "embedded", "url": str(ref.url), "token_file": str(ref.token_file)}
    else:
        mapping = {"backend": "htcondor", "address": str(ref.address)}
    return mapping
