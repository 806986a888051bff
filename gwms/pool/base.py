"""The two interfaces the factory and frontend use to reach a pool: Collector and Schedd.

Backends (`embedded`, `htcondor`) implement them; callers never import a backend directly.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import classad2

from gwms.errors import GwmsError

DEFAULT_AD_LIFETIME = 900  # seconds; what an HTCondor collector assumes without ClassAdLifetime
ANY_AD_TYPE = "Any"


class PoolError(GwmsError):
    """The collector or schedd refused a request or could not be reached."""


class NotFoundError(PoolError):
    """The job or ad named in a request does not exist."""


class ConflictError(PoolError):
    """The request does not fit the current state (e.g. completing a job that is not running)."""


class JobStatus(enum.IntEnum):
    """HTCondor's JobStatus codes, the subset the embedded schedd uses."""

    IDLE = 1
    RUNNING = 2
    REMOVED = 3
    COMPLETED = 4


Constraint = str | classad2.ExprTree | None


@runtime_checkable
class Collector(Protocol):
    """Ads keyed by (MyType, Name), each expiring after its ClassAdLifetime."""

    def advertise(self, ads: Sequence[classad2.ClassAd], lifetime: int | None = None) -> int:
        """Store or replace `ads`; `lifetime` applies to ads without ClassAdLifetime."""
        ...

    def query(
        self,
        ad_type: str = ANY_AD_TYPE,
        constraint: Constraint = "true",
        projection: Sequence[str] | None = None,
    ) -> list[classad2.ClassAd]:
        """Unexpired ads of MyType `ad_type` ("Any": all) for which `constraint` is true."""
        ...

    def invalidate(self, ad_type: str, constraint: Constraint = "true") -> int:
        """Drop the matching ads; return how many were dropped."""
        ...


@runtime_checkable
class Schedd(Protocol):
    """A job queue; job ids are "ClusterId.ProcId" strings."""

    def submit(self, job_ads: Sequence[classad2.ClassAd]) -> list[str]:
        """Queue `job_ads` as one cluster, idle; return their ids in order."""
        ...

    def query(
        self, constraint: Constraint = "true", projection: Sequence[str] | None = None
    ) -> list[classad2.ClassAd]:
        """Job ads for which `constraint` is true, oldest first."""
        ...

    def remove(self, constraint: Constraint) -> int:
        """Mark matching idle or running jobs removed (JobStatus 3); return how many."""
        ...

    def claim(self, machine_ad: classad2.ClassAd) -> classad2.ClassAd | None:
        """Atomically take the oldest idle job that matches `machine_ad` both ways, or None."""
        ...

    def complete(self, job_id: str, exit_code: int, output_tail: str = "") -> classad2.ClassAd:
        """Record that a claimed job ended with `exit_code`; return its final ad."""
        ...


def parse_job_id(job_id: str) -> tuple[int, int]:
    """Split "12.3" into (12, 3), with an error naming the bad id."""
    cluster, sep, proc = str(job_id).partition(".")
    if not sep or not cluster.isdigit() or not proc.isdigit():
        raise PoolError(f"job id {job_id!r} is not of the form CLUSTER.PROC (e.g. 12.0).")
    return int(cluster), int(proc)
