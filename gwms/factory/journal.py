"""The factory's state journal: every batch and glidein it launched, in SQLite, crash-safe.

Restart safety (DESIGN.md §5) rests on one rule: a batch id and its client token are
written *and committed* (WAL, synchronous=FULL) before the cloud call that creates it. So
after a crash at any point, a batch is either absent (never launched), `launching` (the
call may or may not have happened: settle it by tag lookup, never by retrying blindly), or
`launched` with its glideins recorded. Nothing here holds a secret.

Lifecycle of a glidein: requested (its batch is journaled `launching`, no row yet) ->
launching (the cloud lists it pending) -> running -> retiring (past its retire time) ->
terminating (terminate accepted) -> gone; `zombie` when the cloud refused to terminate it
N times (retried with backoff, never counted as capacity). Times are epoch seconds (UTC).
"""

from __future__ import annotations

import enum
import os
import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gwms.errors import GwmsError

SCHEMA_VERSION = 1
JOURNAL_FILE = "journal.sqlite"


class JournalError(GwmsError):
    """The journal cannot be opened or is from an incompatible version."""


class BatchState(enum.StrEnum):
    """Where one launch call stands."""

    LAUNCHING = "launching"  # committed before the call; outcome unknown until settled
    LAUNCHED = "launched"  # the call returned (or a tag lookup found the instances)
    FAILED = "failed"  # the call failed, or provably did not happen: nothing to clean up


class GlideinState(enum.StrEnum):
    """Where one VM stands, as the factory tracks it."""

    LAUNCHING = "launching"  # the cloud has it, not yet running (glideinWMS "idle")
    RUNNING = "running"
    RETIRING = "retiring"  # past its retire time: no new jobs, still alive
    TERMINATING = "terminating"  # terminate accepted, the cloud still lists it
    ZOMBIE = "zombie"  # the cloud refused to terminate it, retried with backoff
    GONE = "gone"


LIVE_STATES = frozenset(s for s in GlideinState if s is not GlideinState.GONE)


@dataclass(frozen=True)
class BatchRecord:
    """One launch: `count` VMs of one entry for one client sharing one UserData."""

    batch_id: str
    entry: str
    client: str
    frontend: str
    cloud: str
    provider_key: str
    count: int
    client_token: str
    state: BatchState
    created_at: int
    updated_at: int
    error: str | None = None


@dataclass(frozen=True)
class GlideinRecord:
    """One VM of a batch, `<batch id>.<launch index>`."""

    glidein_id: str
    batch_id: str
    launch_index: int
    cloud_id: str
    entry: str
    client: str
    frontend: str
    cloud: str
    provider_key: str
    state: GlideinState
    launched_at: int
    updated_at: int
    terminate_attempts: int = 0
    next_terminate_at: int | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class NewGlidein:
    """A VM the cloud reported for a journaled batch (launch answer, tag lookup, adoption)."""

    batch_id: str
    launch_index: int
    cloud_id: str
    state: GlideinState
    launched_at: int


@dataclass(frozen=True)
class GlideinUpdate:
    """A change to one glidein row; None fields stay as they are."""

    glidein_id: str
    state: GlideinState | None = None
    terminate_attempts: int | None = None
    next_terminate_at: int | None = None
    last_error: str | None = None
    clear_next_terminate: bool = False


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL UNIQUE,
    entry TEXT NOT NULL,
    client TEXT NOT NULL,
    frontend TEXT NOT NULL,
    cloud TEXT NOT NULL,
    provider_key TEXT NOT NULL,
    count INTEGER NOT NULL,
    client_token TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS batches_state ON batches(state);
CREATE TABLE IF NOT EXISTS glideins (
    glidein_id TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL REFERENCES batches(batch_id),
    launch_index INTEGER NOT NULL,
    cloud_id TEXT NOT NULL,
    state TEXT NOT NULL,
    launched_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    terminate_attempts INTEGER NOT NULL DEFAULT 0,
    next_terminate_at INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS glideins_state ON glideins(state);
CREATE INDEX IF NOT EXISTS glideins_batch ON glideins(batch_id);
"""

_BATCH_COLUMNS = (
    "batch_id, entry, client, frontend, cloud, provider_key, count, client_token, state,"
    " created_at, updated_at, error"
)
_GLIDEIN_SELECT = (
    "SELECT g.glidein_id, g.batch_id, g.launch_index, g.cloud_id, b.entry, b.client,"
    " b.frontend, b.cloud, b.provider_key, g.state, g.launched_at, g.updated_at,"
    " g.terminate_attempts, g.next_terminate_at, g.last_error"
    " FROM glideins g JOIN batches b ON b.batch_id = g.batch_id"
)


def epoch(moment: datetime) -> int:
    """Whole seconds since the epoch of a timezone-aware datetime."""
    return int(moment.astimezone(UTC).timestamp())


class Journal:
    """The journal of one factory; one writer (the daemon) at a time."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(
                f"cannot open the factory journal {self.path} ({exc}); check that state_dir"
                " is writable by the factory user"
            ) from exc
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)
        self._check_version()

    @classmethod
    def in_state_dir(cls, state_dir: str | os.PathLike[str]) -> Journal:
        return cls(Path(state_dir) / JOURNAL_FILE)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(row[0]) != SCHEMA_VERSION:
            raise JournalError(
                f"the factory journal {self.path} has schema {row[0]}, this gwms reads"
                f" {SCHEMA_VERSION}; run the gwms version that wrote it, or move the file away"
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- batches -----------------------------------------------------------------------

    def next_batch_id(self, now: int) -> str:
        """A fresh batch id `gl-<date>-<seq>-<random>`, for the UserData built before journaling."""
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")
        seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM batches").fetchone()[0]
        return f"gl-{stamp}-{seq:06d}-{secrets.token_hex(3)}"

    def new_batch(
        self,
        *,
        batch_id: str,
        entry: str,
        client: str,
        frontend: str,
        cloud: str,
        provider_key: str,
        count: int,
        now: int,
    ) -> BatchRecord:
        """Commit a batch id and a new client token as `launching`: call this before the cloud."""
        token = secrets.token_hex(16)
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO batches({_BATCH_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
                (batch_id, entry, client, frontend, cloud, provider_key, count, token,
                 BatchState.LAUNCHING.value, now, now, None),
            )  # fmt: skip
        return BatchRecord(
            batch_id, entry, client, frontend, cloud, provider_key, count, token,
            BatchState.LAUNCHING, now, now,
        )  # fmt: skip

    def record_launch(self, batch_id: str, glideins: Sequence[NewGlidein], now: int) -> None:
        """The batch's VMs are known: insert them and mark the batch launched, atomically."""
        with self._transaction() as db:
            self._insert_glideins(db, glideins, now)
            db.execute(
                "UPDATE batches SET state = ?, updated_at = ?, error = NULL WHERE batch_id = ?",
                (BatchState.LAUNCHED.value, now, batch_id),
            )

    def fail_batch(self, batch_id: str, error: str, now: int) -> None:
        """The call failed or provably did not happen: nothing of this batch exists."""
        with self._transaction() as db:
            db.execute(
                "UPDATE batches SET state = ?, updated_at = ?, error = ? WHERE batch_id = ?",
                (BatchState.FAILED.value, now, error[:1000], batch_id),
            )

    def batch(self, batch_id: str) -> BatchRecord | None:
        row = self._db.execute(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE batch_id = ?",  # noqa: S608 - constant
            (batch_id,),
        ).fetchone()
        return _batch(row) if row else None

    def batches(self, state: BatchState | None = None) -> list[BatchRecord]:
        """Batches (in one state), oldest first."""
        sql = f"SELECT {_BATCH_COLUMNS} FROM batches"  # noqa: S608 - constant columns
        args: tuple[str, ...] = ()
        if state is not None:
            sql += " WHERE state = ?"
            args = (state.value,)
        return [_batch(row) for row in self._db.execute(sql + " ORDER BY seq", args)]

    def batch_index(self) -> dict[str, BatchRecord]:
        """Every batch by id: which tagged instances are ours."""
        return {b.batch_id: b for b in self.batches()}

    # --- glideins ----------------------------------------------------------------------

    def adopt(self, glideins: Sequence[NewGlidein], now: int) -> None:
        """Record VMs of journaled batches the cloud lists but the journal lacks."""
        with self._transaction() as db:
            self._insert_glideins(db, glideins, now)
            for batch_id in {g.batch_id for g in glideins}:
                db.execute(
                    "UPDATE batches SET state = ?, updated_at = ? WHERE batch_id = ?"
                    " AND state != ?",
                    (BatchState.LAUNCHED.value, now, batch_id, BatchState.LAUNCHED.value),
                )

    @staticmethod
    def _insert_glideins(db: sqlite3.Connection, glideins: Iterable[NewGlidein], now: int) -> None:
        db.executemany(
            "INSERT INTO glideins(glidein_id, batch_id, launch_index, cloud_id, state,"
            " launched_at, updated_at) VALUES (?,?,?,?,?,?,?)"
            " ON CONFLICT(glidein_id) DO UPDATE SET cloud_id = excluded.cloud_id,"
            " state = excluded.state, updated_at = excluded.updated_at",
            [
                (f"{g.batch_id}.{g.launch_index}", g.batch_id, g.launch_index, g.cloud_id,
                 g.state.value, g.launched_at, now)
                for g in glideins
            ],
        )  # fmt: skip

    def glideins(self, states: Iterable[GlideinState] = LIVE_STATES) -> list[GlideinRecord]:
        """Glideins in `states` (default: every live one)."""
        wanted = sorted(s.value for s in states)
        marks = ",".join("?" * len(wanted))
        rows = self._db.execute(f"{_GLIDEIN_SELECT} WHERE g.state IN ({marks})", wanted)
        return [_glidein(row) for row in rows]

    def glidein(self, glidein_id: str) -> GlideinRecord | None:
        row = self._db.execute(f"{_GLIDEIN_SELECT} WHERE g.glidein_id = ?", (glidein_id,))
        found = row.fetchone()
        return _glidein(found) if found else None

    def update(self, updates: Sequence[GlideinUpdate], now: int) -> None:
        """Apply state changes in one transaction."""
        if not updates:
            return
        with self._transaction() as db:
            db.executemany(
                "UPDATE glideins SET state = COALESCE(?, state),"
                " terminate_attempts = COALESCE(?, terminate_attempts),"
                " next_terminate_at = CASE WHEN ? THEN NULL"
                "   ELSE COALESCE(?, next_terminate_at) END,"
                " last_error = COALESCE(?, last_error), updated_at = ? WHERE glidein_id = ?",
                [
                    (u.state.value if u.state else None, u.terminate_attempts,
                     int(u.clear_next_terminate), u.next_terminate_at, u.last_error, now,
                     u.glidein_id)
                    for u in updates
                ],
            )  # fmt: skip

    def prune(self, before: int) -> int:
        """Forget glideins gone before `before`, and batches left with no glidein; returns rows."""
        with self._transaction() as db:
            gone = db.execute(
                "DELETE FROM glideins WHERE state = ? AND updated_at < ?",
                (GlideinState.GONE.value, before),
            ).rowcount
            db.execute(
                "DELETE FROM batches WHERE state != ? AND updated_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM glideins g WHERE g.batch_id = batches.batch_id)",
                (BatchState.LAUNCHING.value, before),
            )
        return int(gone)


def _batch(row: tuple) -> BatchRecord:  # type: ignore[type-arg]
    return BatchRecord(*row[:8], BatchState(row[8]), *row[9:])  # type: ignore[arg-type]


def _glidein(row: tuple) -> GlideinRecord:  # type: ignore[type-arg]
    return GlideinRecord(*row[:9], GlideinState(row[9]), *row[10:])  # type: ignore[arg-type]


__all__ = [
    "JOURNAL_FILE",
    "LIVE_STATES",
    "BatchRecord",
    "BatchState",
    "GlideinRecord",
    "GlideinState",
    "GlideinUpdate",
    "Journal",
    "JournalError",
    "NewGlidein",
    "epoch",
]
