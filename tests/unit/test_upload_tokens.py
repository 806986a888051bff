"""Per-batch upload tokens: only the batch they were issued for, only until they expire."""

from __future__ import annotations

import base64
import os
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gwms.errors import CredentialError
from gwms.factory import upload_tokens
from gwms.factory.upload_tokens import TokenCheck, check, issue, load_secret, verify

SECRET = bytes(range(32))
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(hours=26)
BATCH = ("ec2_us_east_1", "vo1-frontend.main", "gl-20261122-000001-ab12cd")


@pytest.fixture
def token() -> str:
    return issue(SECRET, *BATCH, LATER)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would leave files world-readable unless they are created 0600."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_a_token_verifies_for_its_own_batch_before_expiry(token: str) -> None:
    assert verify(SECRET, token, *BATCH, T0)
    assert check(SECRET, token, *BATCH, LATER - timedelta(seconds=1)) is TokenCheck.VALID


def test_a_token_is_expired_from_its_expiry_second_on(token: str) -> None:
    assert check(SECRET, token, *BATCH, LATER) is TokenCheck.EXPIRED
    assert not verify(SECRET, token, *BATCH, LATER.timestamp() + 3600)


def test_epoch_seconds_and_datetimes_are_interchangeable() -> None:
    token = issue(SECRET, *BATCH, int(LATER.timestamp()))
    assert token == issue(SECRET, *BATCH, LATER)
    assert verify(SECRET, token, *BATCH, T0.timestamp())


@pytest.mark.parametrize(
    "claims",
    [
        ("ec2_us_west_2", BATCH[1], BATCH[2]),
        (BATCH[0], "vo2-frontend.main", BATCH[2]),
        (BATCH[0], BATCH[1], "gl-20261122-000002-ffffff"),
    ],
    ids=["other-entry", "other-client", "other-batch"],
)
def test_a_token_for_another_entry_client_or_batch_is_told_apart(
    token: str, claims: tuple[str, str, str]
) -> None:
    assert check(SECRET, token, *claims, T0) is TokenCheck.OTHER_BATCH


def test_a_token_signed_with_another_secret_is_rejected(token: str) -> None:
    assert check(bytes(32), token, *BATCH, T0) is TokenCheck.BAD_SIGNATURE


def test_changing_any_claim_in_the_token_breaks_its_signature(token: str) -> None:
    prefix, body, mac = token.split(".")
    claims = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    forged_claims = claims.replace(b"gl-20261122-000001", b"gl-20261122-000009")
    forged_body = base64.urlsafe_b64encode(forged_claims).rstrip(b"=").decode()
    forged = f"{prefix}.{forged_body}.{mac}"
    assert check(SECRET, forged, BATCH[0], BATCH[1], "gl-20261122-000009-ab12cd", T0) is (
        TokenCheck.BAD_SIGNATURE
    )


def test_pushing_the_expiry_later_breaks_the_signature(token: str) -> None:
    prefix, body, mac = token.split(".")
    claims = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    later = claims.replace(str(int(LATER.timestamp())), str(int(LATER.timestamp()) + 10**6))
    forged = f"{prefix}.{base64.urlsafe_b64encode(later.encode()).rstrip(b'=').decode()}.{mac}"
    assert check(SECRET, forged, *BATCH, LATER + timedelta(days=1)) is TokenCheck.BAD_SIGNATURE


@pytest.mark.parametrize(
    "garbage",
    ["", "gwu1", "gwu1..", "gwu2.e30.AAAA", "gwu1.e30.!!!!", "Bearer x", "x" * 5000, "gwu1.é.é"],
)
def test_malformed_tokens_are_rejected_without_errors(garbage: str) -> None:
    assert check(SECRET, garbage, *BATCH, T0) in (TokenCheck.MALFORMED, TokenCheck.BAD_SIGNATURE)


@given(st.text(max_size=300))
def test_no_random_string_is_ever_a_valid_token(text: str) -> None:
    assert not verify(SECRET, text, *BATCH, T0)


def test_a_short_secret_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        issue(b"short", *BATCH, LATER)


def test_naive_datetimes_are_refused_rather_than_guessed() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        issue(SECRET, *BATCH, datetime(2026, 11, 23, 12, 0))  # naive on purpose


def test_the_secret_file_is_created_0600_on_first_use_and_reused(
    tmp_path: Path, open_umask: None
) -> None:
    state = tmp_path / "state"
    first = load_secret(state)
    path = state / upload_tokens.SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == upload_tokens.SECRET_BYTES
    assert load_secret(state) == first
    assert not [p for p in state.iterdir() if p.name.startswith(".")], "temp file left behind"


def test_tokens_survive_a_restart_because_the_secret_is_persisted(tmp_path: Path) -> None:
    token = issue(load_secret(tmp_path), *BATCH, LATER)
    assert verify(load_secret(tmp_path), token, *BATCH, T0)


def test_concurrent_first_use_agrees_on_one_secret(tmp_path: Path) -> None:
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(load_secret(tmp_path))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert len(set(results)) == 1


def test_a_world_readable_secret_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    load_secret(tmp_path)
    path = tmp_path / upload_tokens.SECRET_FILE
    path.chmod(0o644)
    with pytest.raises(CredentialError, match=r"upload-token.key.*chmod 600"):
        load_secret(tmp_path)


def test_a_corrupt_secret_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / upload_tokens.SECRET_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not base64 at all!\n")
    os.close(fd)
    with pytest.raises(CredentialError, match="delete it to make a new one"):
        load_secret(tmp_path)
