"""Which cloud transport delivers this VM's user data, and the registry of those transports.

Order of decision in `detect_middleware`: an explicit override (``--middleware``), then
``gwms.middleware=NAME`` on the kernel command line, then cloud-init's stored copy when
cloud-init is active on this boot, then exactly one confident detector. Anything else
(none, or several confident) is an error naming the candidates and their evidence.
"""

from collections import OrderedDict
from typing import Optional

from gwms_context.middleware import cloudinit, ec2, gce, nocloud, opennebula, openstack
from gwms_context.middleware.base import (
    Detection,
    FetchOptions,
    MiddlewareError,
    read_text,
)

MIDDLEWARES = OrderedDict(
    (module.NAME, module) for module in (ec2, openstack, opennebula, gce, nocloud, cloudinit)
)
CMDLINE_KEY = "gwms.middleware"

__all__ = [
    "MIDDLEWARES",
    "Detection",
    "FetchOptions",
    "MiddlewareError",
    "cmdline_override",
    "detect_all",
    "detect_middleware",
    "get",
]


def get(name: str, source: str = "--middleware"):
    """The module of a middleware name; an unknown name is an error listing the known ones."""
    module = MIDDLEWARES.get(name.strip().lower())
    if module is None:
        raise MiddlewareError(
            "unknown middleware %r (from %s); choose one of: %s"
            % (name, source, ", ".join(MIDDLEWARES))
        )
    return module


def cmdline_override(root: str = "/", cmdline: Optional[str] = None) -> Optional[str]:
    """The value of ``gwms.middleware=`` on the kernel command line (the last one wins)."""
    if cmdline is None:
        cmdline = read_text(root, "proc/cmdline")
    value = None
    for word in cmdline.split():
        key, sep, rest = word.partition("=")
        if sep and key == CMDLINE_KEY:
            value = rest.strip("'\"")
    return value


def detect_all(root: str = "/") -> "OrderedDict[str, Detection]":
    """Every detector's answer, in registry order (cheap: local files only)."""
    return OrderedDict((name, module.detect(root)) for name, module in MIDDLEWARES.items())


def detect_middleware(
    root: str = "/", override: Optional[str] = None, cmdline: Optional[str] = None
) -> str:
    """Name of the middleware to fetch user data with, or MiddlewareError saying why not."""
    if override:
        return get(override).NAME
    from_cmdline = cmdline_override(root, cmdline)
    if from_cmdline:
        return get(from_cmdline, "%s= on the kernel command line" % CMDLINE_KEY).NAME
    results = detect_all(root)
    if results[cloudinit.NAME]:
        return cloudinit.NAME
    confident = [name for name, found in results.items() if found]
    if len(confident) == 1:
        return confident[0]
    hint = "pass --middleware NAME or put %s=NAME on the kernel command line" % CMDLINE_KEY
    if confident:
        raise MiddlewareError(
            "cannot tell the middleware apart: %s all match (%s); %s"
            % (", ".join(confident), _evidence(results, confident), hint)
        )
    weak = [name for name, found in results.items() if found.confidence and not found]
    seen = " (weak hints: %s)" % _evidence(results, weak) if weak else ""
    raise MiddlewareError(
        "no middleware detected under %s: no known DMI strings, config drive, context CD, "
        "seed disk or cloud-init data%s; %s" % (root, seen, hint)
    )


def _evidence(results: "OrderedDict[str, Detection]", names: list) -> str:
    return "; ".join("%s: %s" % (name, ", ".join(results[name].evidence)) for name in names)
