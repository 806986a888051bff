"""The factory journal: committed before the cloud call, durable, read by a restarted factory."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from gwms.factory.journal import (
    BatchState,
    GlideinState,
    GlideinUpdate,
    Journal,
    JournalError,
    NewGlidein,
)

NOW = 1_795_000_000


def new_batch(journal: Journal, count: int = 2):
    return journal.new_batch(
        batch_id=journal.next_batch_id(NOW), entry="e1", client="fe.main", frontend="fe",
        cloud="c1", provider_key="c1", count=count, now=NOW,
    )  # fmt: skip


def test_a_new_batch_is_committed_before_the_call_and_seen_by_another_process(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    batch = new_batch(journal)
    # A second connection (a restarted factory) sees it without any further write.
    other = sqlite3.connect(tmp_path / "j.sqlite")
    row = other.execute(
        "SELECT state, client_token FROM batches WHERE batch_id = ?", (batch.batch_id,)
    ).fetchone()
    assert row == ("launching", batch.client_token)
    assert len(batch.client_token) == 32


def test_the_journal_file_is_private_and_uses_wal_with_full_sync(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state" / "j.sqlite")
    assert stat.S_IMODE((tmp_path / "state" / "j.sqlite").stat().st_mode) == 0o600
    assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_batch_ids_are_unique_and_fit_the_web_service_names(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    ids = {new_batch(journal).batch_id for _ in range(5)}
    assert len(ids) == 5
    assert all(i.startswith("gl-") and len(i) < 64 for i in ids)


def test_recording_a_launch_adds_its_glideins_and_marks_the_batch_launched(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    batch = new_batch(journal)
    journal.record_launch(
        batch.batch_id,
        [NewGlidein(batch.batch_id, i, f"i-{i}", GlideinState.LAUNCHING, NOW) for i in range(2)],
        NOW + 1,
    )
    assert journal.batch(batch.batch_id).state is BatchState.LAUNCHED
    records = sorted(journal.glideins(), key=lambda g: g.launch_index)
    assert [r.glidein_id for r in records] == [f"{batch.batch_id}.0", f"{batch.batch_id}.1"]
    assert records[0].entry == "e1"
    assert records[0].provider_key == "c1"
    assert journal.batches(BatchState.LAUNCHING) == []


def test_updates_keep_unset_fields_and_gone_glideins_leave_the_live_view(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    batch = new_batch(journal, count=1)
    gid = f"{batch.batch_id}.0"
    journal.record_launch(
        batch.batch_id, [NewGlidein(batch.batch_id, 0, "i-0", GlideinState.RUNNING, NOW)], NOW
    )
    journal.update(
        [GlideinUpdate(gid, state=GlideinState.ZOMBIE, terminate_attempts=3,
                       next_terminate_at=NOW + 60, last_error="refused")],
        NOW,
    )  # fmt: skip
    journal.update([GlideinUpdate(gid, terminate_attempts=4)], NOW + 1)
    record = journal.glidein(gid)
    assert record.state is GlideinState.ZOMBIE
    assert (record.terminate_attempts, record.next_terminate_at) == (4, NOW + 60)
    assert record.last_error == "refused"
    journal.update([GlideinUpdate(gid, state=GlideinState.GONE)], NOW + 2)
    assert journal.glideins() == []
    assert journal.prune(before=NOW + 3) == 1
    assert journal.batch(batch.batch_id) is None


def test_a_failed_batch_keeps_its_error_and_is_no_longer_launching(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    batch = new_batch(journal)
    journal.fail_batch(batch.batch_id, "nothing found by tag", NOW)
    assert journal.batch(batch.batch_id).state is BatchState.FAILED
    assert journal.batch(batch.batch_id).error == "nothing found by tag"


def test_a_journal_from_another_schema_version_is_refused_with_what_to_do(tmp_path: Path) -> None:
    Journal(tmp_path / "j.sqlite").close()
    db = sqlite3.connect(tmp_path / "j.sqlite")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    db.commit()
    with pytest.raises(JournalError, match="schema 99"):
        Journal(tmp_path / "j.sqlite")
