"""SQLite state of the embedded collector and schedd: ads with expiry, and the job queue.

WAL mode, one connection per thread; every read-modify-write runs in an IMMEDIATE
transaction so concurrent claimers (threads or processes) never take the same job.
Ads and jobs are stored in the JSON wire form of `gwms.classads`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import classad2

from gwms import classads
from gwms.pool.base import (
    ANY_AD_TYPE,
    DEFAULT_AD_LIFETIME,
    ConflictError,
    Constraint,
    JobStatus,
    NotFoundError,
    parse_job_id,
)

SCHEMA_VERSION = 1
OUTPUT_TAIL_MAX = 64 * 1024  # characters of job output kept in GwmsOutputTail
SERVER_JOB_ATTRS = ("ClusterId", "ProcId", "JobStatus", "QDate", "EnteredCurrentStatus", "Owner")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ads (
    my_type TEXT NOT NULL COLLATE NOCASE,
    name TEXT NOT NULL,
    ad TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (my_type, name)
);
CREATE INDEX IF NOT EXISTS ads_expiry ON ads (expires_at);
CREATE TABLE IF NOT EXISTS jobs (
    cluster_id INTEGER NOT NULL,
    proc_id INTEGER NOT NULL,
    status INTEGER NOT NULL,
    qdate INTEGER NOT NULL,
    ad TEXT NOT NULL,
    PRIMARY KEY (cluster_id, proc_id)
);
CREATE INDEX IF NOT EXISTS jobs_fifo ON jobs (status, qdate, cluster_id, proc_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Store:
    """The collector's ads and the schedd's jobs in one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if not self.path.exists():
            # Created 0600 up front: SQLite gives the -wal and -shm files the same mode.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        with self._tx() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- connections and transactions -------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: the write lock is taken before the first read."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this store opened (call once, when the server stops)."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def _now(self) -> int:
        return int(self._clock())

    # -- collector ---------------------------------------------------------------------------

    def advertise(
        self, ads: Sequence[classad2.ClassAd], identity: str, lifetime: int | None = None
    ) -> int:
        """Store or replace each ad by (MyType, Name), stamped with the caller's identity."""
        now = self._now()
        prepared = [
            self._prepare_ad(ad, index, identity, lifetime, now) for index, ad in enumerate(ads)
        ]
        with self._tx() as conn:
            conn.execute("DELETE FROM ads WHERE expires_at <= ?", (now,))
            for my_type, name, ad, expires_at in prepared:
                if "UpdateSequenceNumber" not in ad:
                    row = conn.execute(
                        "SELECT ad FROM ads WHERE my_type = ? AND name = ?", (my_type, name)
                    ).fetchone()
                    previous = json.loads(row[0]).get("UpdateSequenceNumber", -1) if row else -1
                    ad["UpdateSequenceNumber"] = previous + 1 if isinstance(previous, int) else 0
                conn.execute(
                    "INSERT OR REPLACE INTO ads (my_type, name, ad, expires_at) "
                    "VALUES (?, ?, ?, ?)",
                    (my_type, name, json.dumps(classads.ad_to_json(ad)), expires_at),
                )
        return len(prepared)

    @staticmethod
    def _prepare_ad(
        ad: classad2.ClassAd, index: int, identity: str, lifetime: int | None, now: int
    ) -> tuple[str, str, classad2.ClassAd, int]:
        where = f"ad {index}"
        my_type = classads.get_str(ad, "MyType")
        name = classads.get_str(ad, "Name")
        if not my_type or not name:
            raise classads.ClassAdError(
                f"{where}: MyType and Name must be non-empty strings; they key the ad."
            )
        ad_lifetime = ad.get(
            "ClassAdLifetime", lifetime if lifetime is not None else DEFAULT_AD_LIFETIME
        )
        if isinstance(ad_lifetime, bool) or not isinstance(ad_lifetime, int) or ad_lifetime <= 0:
            raise classads.ClassAdError(
                f"{where}: ClassAdLifetime must be a positive integer of seconds."
            )
        stamped = classads.copy_ad(ad)
        stamped["AuthenticatedIdentity"] = identity
        stamped["LastHeardFrom"] = now
        stamped["ClassAdLifetime"] = ad_lifetime
        return my_type, name, stamped, now + ad_lifetime

    def query_ads(
        self,
        ad_type: str | None = ANY_AD_TYPE,
        constraint: Constraint = None,
        projection: Sequence[str] | None = None,
    ) -> list[classad2.ClassAd]:
        """Unexpired ads of `ad_type` ("Any" or None: every type) matching `constraint`."""
        expr = classads.as_expr(constraint, "constraint")
        sql, params = "SELECT ad FROM ads WHERE expires_at > ?", [self._now()]
        if ad_type and ad_type.lower() != ANY_AD_TYPE.lower():
            sql += " AND my_type = ?"
            params.append(ad_type)
        rows = self._conn().execute(sql + " ORDER BY my_type, name", params).fetchall()
        result = []
        for (text,) in rows:
            ad = classads.json_to_ad(json.loads(text))
            if classads.eval_constraint(expr, ad):
                result.append(classads.project(ad, projection))
        return result

    def invalidate(self, ad_type: str | None, constraint: Constraint = None) -> int:
        """Delete the matching ads (expired or not); return how many went."""
        expr = classads.as_expr(constraint, "constraint")
        sql, params = "SELECT rowid, ad FROM ads", []
        if ad_type and ad_type.lower() != ANY_AD_TYPE.lower():
            sql += " WHERE my_type = ?"
            params.append(ad_type)
        with self._tx() as conn:
            doomed = [
                (rowid,)
                for rowid, text in conn.execute(sql, params).fetchall()
                if classads.eval_constraint(expr, classads.json_to_ad(json.loads(text)))
            ]
            conn.executemany("DELETE FROM ads WHERE rowid = ?", doomed)
        return len(doomed)

    def purge_expired(self) -> int:
        """Delete expired ads; queries already hide them, this only reclaims space."""
        with self._tx() as conn:
            return conn.execute("DELETE FROM ads WHERE expires_at <= ?", (self._now(),)).rowcount

    # -- schedd ------------------------------------------------------------------------------

    def submit(self, job_ads: Sequence[classad2.ClassAd], identity: str) -> list[str]:
        """Queue `job_ads` as one new cluster; the server sets ids, status, owner and times."""
        if not job_ads:
            raise classads.ClassAdError("the submit request holds no job ads; send at least one.")
        now = self._now()
        owner = identity.split("@", 1)[0] or identity
        ids = []
        with self._tx() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'next_cluster'").fetchone()
            cluster = row[0] if row else 1
            for proc, job in enumerate(job_ads):
                ad = classads.copy_ad(job)
                ad["MyType"] = "Job"
                if "Requirements" not in ad:
                    ad["Requirements"] = True
                for attr, value in (
                    ("ClusterId", cluster),
                    ("ProcId", proc),
                    ("JobStatus", int(JobStatus.IDLE)),
                    ("QDate", now),
                    ("EnteredCurrentStatus", now),
                    ("Owner", owner),
                    ("User", identity),
                    ("NumJobStarts", 0),
                ):
                    ad[attr] = value
                conn.execute(
                    "INSERT INTO jobs (cluster_id, proc_id, status, qdate, ad) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (cluster, proc, int(JobStatus.IDLE), now, json.dumps(classads.ad_to_json(ad))),
                )
                ids.append(f"{cluster}.{proc}")
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('next_cluster', ?)",
                (cluster + 1,),
            )
        return ids

    def query_jobs(
        self, constraint: Constraint = None, projection: Sequence[str] | None = None
    ) -> list[classad2.ClassAd]:
        """Job ads matching `constraint`, oldest first (QDate, ClusterId, ProcId)."""
        expr = classads.as_expr(constraint, "constraint")
        rows = (
            self._conn()
            .execute("SELECT ad FROM jobs ORDER BY qdate, cluster_id, proc_id")
            .fetchall()
        )
        result = []
        for (text,) in rows:
            ad = classads.json_to_ad(json.loads(text))
            if classads.eval_constraint(expr, ad):
                result.append(classads.project(ad, projection))
        return result

    def remove_jobs(self, constraint: Constraint) -> int:
        """Mark matching idle and running jobs removed; return how many changed."""
        expr = classads.as_expr(constraint, "constraint")
        now = self._now()
        changed = 0
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT cluster_id, proc_id, ad FROM jobs WHERE status IN (?, ?)",
                (int(JobStatus.IDLE), int(JobStatus.RUNNING)),
            ).fetchall()
            for cluster, proc, text in rows:
                ad = classads.json_to_ad(json.loads(text))
                if not classads.eval_constraint(expr, ad):
                    continue
                ad["JobStatus"] = int(JobStatus.REMOVED)
                ad["EnteredCurrentStatus"] = now
                self._save_job(conn, cluster, proc, ad)
                changed += 1
        return changed

    def claim(self, machine_ad: classad2.ClassAd, identity: str) -> classad2.ClassAd | None:
        """Mark the oldest idle job that matches `machine_ad` both ways running, and return it."""
        machine_name = classads.get_str(machine_ad, "Name")
        if not machine_name:
            raise classads.ClassAdError(
                "machine ad: Name must be a non-empty string (the slot name)."
            )
        if "START" not in machine_ad and "Requirements" not in machine_ad:
            raise classads.ClassAdError(
                "machine ad: it has neither START nor Requirements; add START = true for any job."
            )
        machine = classads.copy_ad(machine_ad)
        machine["AuthenticatedIdentity"] = identity
        now = self._now()
        with self._tx() as conn:
            cursor = conn.execute(
                "SELECT cluster_id, proc_id, ad FROM jobs WHERE status = ? "
                "ORDER BY qdate, cluster_id, proc_id",
                (int(JobStatus.IDLE),),
            )
            for cluster, proc, text in cursor:
                job = classads.json_to_ad(json.loads(text))
                if not classads.job_matches_machine(job, machine):
                    continue
                cursor.close()
                starts = job.get("NumJobStarts", 0)
                job["JobStatus"] = int(JobStatus.RUNNING)
                job["EnteredCurrentStatus"] = now
                job["JobCurrentStartDate"] = now
                job["RemoteHost"] = machine_name
                job["NumJobStarts"] = (starts if isinstance(starts, int) else 0) + 1
                job["GwmsClaimedBy"] = identity
                self._save_job(conn, cluster, proc, job)
                return job
        return None

    def complete(
        self, job_id: str, exit_code: int, output_tail: str, identity: str
    ) -> classad2.ClassAd:
        """Record the end of a running job claimed by `identity`: JobStatus 4 and ExitCode."""
        cluster, proc = parse_job_id(job_id)
        now = self._now()
        with self._tx() as conn:
            row = conn.execute(
                "SELECT ad FROM jobs WHERE cluster_id = ? AND proc_id = ?", (cluster, proc)
            ).fetchone()
            if row is None:
                raise NotFoundError(
                    f"job {job_id} is not in the queue; check the id with `gwms jobs list`."
                )
            job = classads.json_to_ad(json.loads(row[0]))
            if job.get("JobStatus") != JobStatus.RUNNING:
                raise ConflictError(
                    f"job {job_id} is not running (JobStatus {job.get('JobStatus')}); "
                    "only a claimed job can complete."
                )
            if classads.get_str(job, "GwmsClaimedBy") != identity:
                raise ConflictError(
                    f"job {job_id} was claimed by another identity; only its claimer completes it."
                )
            job["JobStatus"] = int(JobStatus.COMPLETED)
            job["ExitCode"] = int(exit_code)
            job["CompletionDate"] = now
            job["EnteredCurrentStatus"] = now
            job["GwmsOutputTail"] = output_tail[-OUTPUT_TAIL_MAX:]
            self._save_job(conn, cluster, proc, job)
        return job

    @staticmethod
    def _save_job(conn: sqlite3.Connection, cluster: int, proc: int, ad: classad2.ClassAd) -> None:
        conn.execute(
            "UPDATE jobs SET status = ?, ad = ? WHERE cluster_id = ? AND proc_id = ?",
            (ad["JobStatus"], json.dumps(classads.ad_to_json(ad)), cluster, proc),
        )
