"""The factory key ring: private files stay private; rotated keys still open during a grace."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gwms.cli import main
from gwms.credentials import keys as keys_module
from gwms.credentials.keys import FactoryKeyring
from gwms.credentials.sealed import SealError, key_id, open_sealed, seal
from gwms.errors import CredentialError

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def ring_dir(tmp_path: Path) -> Path:
    return tmp_path / "factory-keys"


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would leave files world-readable unless they are created 0600."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_private_key_file_is_0600_and_directory_0700_even_with_umask_0(
    ring_dir: Path, open_umask: None
) -> None:
    ring = FactoryKeyring.generate(ring_dir)
    key_file = ring_dir / f"key-{ring.current_key_id}.pem"
    assert _mode(key_file) == 0o600
    assert _mode(ring_dir) == 0o700
    assert b"PRIVATE KEY" in key_file.read_bytes()


def test_rotated_key_file_is_0600_with_umask_0(ring_dir: Path, open_umask: None) -> None:
    ring = FactoryKeyring.generate(ring_dir, now=T0)
    new = ring.rotate(now=T0)
    assert _mode(ring_dir / f"key-{new}.pem") == 0o600


@pytest.mark.parametrize("algorithm", ["x25519", "rsa"])
def test_reloaded_key_ring_opens_what_was_sealed_to_its_published_key(
    ring_dir: Path, algorithm: str
) -> None:
    ring = FactoryKeyring.generate(ring_dir, algorithm, rsa_bits=2048)
    envelope = seal(b"frontend identity", ring.public_key_pem(), context=b"ctx")
    reloaded = FactoryKeyring.load(ring_dir)
    assert reloaded.current_key_id == ring.current_key_id
    assert reloaded.public_key_pem() == ring.public_key_pem()
    assert open_sealed(envelope, reloaded, context=b"ctx") == b"frontend identity"


def test_key_id_is_the_hash_of_the_published_public_key(ring_dir: Path) -> None:
    ring = FactoryKeyring.generate(ring_dir)
    published = serialization.load_pem_public_key(ring.public_key_pem().encode())
    assert ring.current_key_id == key_id(published)  # type: ignore[arg-type]


def test_public_key_pem_never_contains_the_private_key(ring_dir: Path) -> None:
    ring = FactoryKeyring.generate(ring_dir)
    private_pem = (ring_dir / f"key-{ring.current_key_id}.pem").read_text()
    private_body = "".join(private_pem.splitlines()[1:-1])
    assert "PRIVATE" not in ring.public_key_pem()
    assert private_body not in ring.public_key_pem().replace("\n", "")
    assert "PRIVATE" not in repr(ring)


def test_generate_refuses_a_directory_that_already_holds_a_key_ring(ring_dir: Path) -> None:
    first = FactoryKeyring.generate(ring_dir)
    with pytest.raises(CredentialError, match="gwms key rotate"):
        FactoryKeyring.generate(ring_dir)
    assert FactoryKeyring.load(ring_dir).current_key_id == first.current_key_id


def test_old_key_opens_envelopes_during_the_grace_period_but_not_after(ring_dir: Path) -> None:
    ring = FactoryKeyring.generate(ring_dir, now=T0)
    old_id = ring.current_key_id
    old_envelope = seal(b"sealed before rotation", ring.public_key())

    new_id = ring.rotate(timedelta(hours=24), now=T0)
    assert new_id != old_id
    assert ring.current_key_id == new_id

    during = FactoryKeyring.load(ring_dir, now=T0 + timedelta(hours=23))
    assert during.current_key_id == new_id
    assert open_sealed(old_envelope, during) == b"sealed before rotation"

    after = FactoryKeyring.load(ring_dir, now=T0 + timedelta(hours=24, seconds=1))
    with pytest.raises(SealError) as info:
        open_sealed(old_envelope, after)
    assert info.value.reason == "unknown_key"
    assert f"sealed to key {old_id}, which this factory does not hold" in str(info.value)
    assert f"current: {new_id}" in str(info.value)
    assert not (ring_dir / f"key-{old_id}.pem").exists()
    assert [k["id"] for k in json.loads((ring_dir / "keys.json").read_text())["keys"]] == [new_id]


def test_a_loaded_ring_stops_opening_a_retired_key_when_its_clock_passes_the_grace(
    ring_dir: Path,
) -> None:
    ring = FactoryKeyring.generate(ring_dir, now=T0)
    envelope = seal(b"x", ring.public_key())
    ring.rotate(timedelta(hours=1), now=T0)
    long_running = FactoryKeyring.load(ring_dir, now=T0 + timedelta(minutes=59))
    assert open_sealed(envelope, long_running) == b"x"
    long_running._now = T0 + timedelta(hours=2)  # the daemon's clock moved on
    with pytest.raises(SealError, match="does not hold"):
        open_sealed(envelope, long_running)


def test_unknown_key_message_lists_keys_still_in_their_grace(ring_dir: Path) -> None:
    ring = FactoryKeyring.generate(ring_dir, now=T0)
    old_id = ring.current_key_id
    ring.rotate(timedelta(hours=6), now=T0)
    stranger = FactoryKeyring.generate(ring_dir.parent / "other")
    envelope = seal(b"x", stranger.public_key())
    with pytest.raises(SealError) as info:
        open_sealed(envelope, FactoryKeyring.load(ring_dir, now=T0))
    assert f"{old_id} until 2026-11-22T18:00:00Z" in str(info.value)


def test_rotation_keeps_the_algorithm_unless_asked(ring_dir: Path) -> None:
    ring = FactoryKeyring.generate(ring_dir, "rsa", now=T0, rsa_bits=2048)
    ring.rotate(now=T0)
    assert [k.algorithm for k in ring.keys] == ["rsa-oaep", "rsa-oaep"]
    assert ring.public_key().key_size == 2048  # type: ignore[union-attr]
    ring.rotate(algorithm="x25519", now=T0)
    assert ring.keys[0].algorithm == "x25519"
    assert seal(b"p", ring.public_key()).startswith("gwms-seal:1:x25519:")


def test_keys_lists_the_current_key_first_then_retiring_ones(ring_dir: Path) -> None:
    ring = FactoryKeyring.generate(ring_dir, now=T0)
    first = ring.current_key_id
    second = ring.rotate(timedelta(hours=1), now=T0)
    third = ring.rotate(timedelta(hours=2), now=T0 + timedelta(minutes=1))
    listed = FactoryKeyring.load(ring_dir, now=T0 + timedelta(minutes=2)).keys
    assert [k.id for k in listed] == [third, first, second]
    assert listed[0].current
    assert listed[1].retires == T0 + timedelta(hours=1)


def test_crash_while_writing_the_new_key_leaves_the_previous_ring_intact(
    ring_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = FactoryKeyring.generate(ring_dir, now=T0)
    envelope = seal(b"still opens", ring.public_key())
    before = sorted(p.name for p in ring_dir.iterdir())

    def crash(*_args: object) -> None:
        raise OSError("simulated power loss before rename")

    monkeypatch.setattr(keys_module.os, "replace", crash)
    with pytest.raises(OSError, match="power loss"):
        ring.rotate(now=T0)
    monkeypatch.undo()

    assert sorted(p.name for p in ring_dir.iterdir()) == before  # no half or temp file
    reloaded = FactoryKeyring.load(ring_dir, now=T0)
    assert reloaded.current_key_id == ring.current_key_id
    assert open_sealed(envelope, reloaded) == b"still opens"


def test_crash_between_key_file_and_index_leaves_a_loadable_ring(ring_dir: Path) -> None:
    ring = FactoryKeyring.generate(ring_dir, now=T0)
    # What a crash after writing the new key file but before the index looks like:
    orphan = FactoryKeyring.generate(ring_dir.parent / "scratch")
    (ring_dir / f"key-{orphan.current_key_id}.pem").write_bytes(
        (ring_dir.parent / "scratch" / f"key-{orphan.current_key_id}.pem").read_bytes()
    )
    assert FactoryKeyring.load(ring_dir).current_key_id == ring.current_key_id


def test_load_of_a_directory_without_a_ring_says_how_to_create_one(ring_dir: Path) -> None:
    with pytest.raises(CredentialError) as info:
        FactoryKeyring.load(ring_dir)
    assert f"gwms key generate --dir {ring_dir}" in str(info.value)


def test_load_refuses_a_key_file_readable_by_others_and_names_it(ring_dir: Path) -> None:
    ring = FactoryKeyring.generate(ring_dir)
    key_file = ring_dir / f"key-{ring.current_key_id}.pem"
    key_file.chmod(0o644)
    with pytest.raises(CredentialError) as info:
        FactoryKeyring.load(ring_dir)
    assert str(key_file) in str(info.value)
    assert "chmod 600" in str(info.value)


@pytest.mark.parametrize(
    ("damage", "phrase"),
    [
        (lambda d, kid: (d / "keys.json").write_text("{not json"), "keys.json is not valid JSON"),
        (lambda d, kid: (d / "keys.json").write_text('{"format": 2}'), "field format"),
        (lambda d, kid: (d / f"key-{kid}.pem").unlink(), "cannot be opened"),
        (
            lambda d, kid: (d / f"key-{kid}.pem").write_text("garbage"),
            "not an unencrypted PEM private key",
        ),
    ],
)
def test_damaged_key_ring_gives_a_one_line_error_naming_the_file(
    ring_dir: Path, damage: object, phrase: str
) -> None:
    ring = FactoryKeyring.generate(ring_dir)
    damage(ring_dir, ring.current_key_id)  # type: ignore[operator]
    with pytest.raises(CredentialError) as info:
        FactoryKeyring.load(ring_dir)
    message = str(info.value)
    assert phrase in message
    assert str(ring_dir) in message
    assert "\n" not in message


def test_load_refuses_a_key_file_that_does_not_match_its_index_entry(ring_dir: Path) -> None:
    ring = FactoryKeyring.generate(ring_dir)
    other = FactoryKeyring.generate(ring_dir.parent / "other")
    swapped = (ring_dir.parent / "other" / f"key-{other.current_key_id}.pem").read_bytes()
    (ring_dir / f"key-{ring.current_key_id}.pem").write_bytes(swapped)
    with pytest.raises(CredentialError, match="does not hold key"):
        FactoryKeyring.load(ring_dir)


def test_negative_grace_is_refused(ring_dir: Path) -> None:
    ring = FactoryKeyring.generate(ring_dir)
    with pytest.raises(CredentialError, match="negative"):
        ring.rotate(timedelta(hours=-1))


# -- CLI --------------------------------------------------------------------------------------


def test_cli_generate_rotate_show_never_print_the_private_key(
    ring_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["key", "generate", "--dir", str(ring_dir), "--algorithm", "x25519"]) == 0
    first = FactoryKeyring.load(ring_dir).current_key_id
    assert main(["key", "rotate", "--dir", str(ring_dir), "--grace-hours", "2"]) == 0
    second = FactoryKeyring.load(ring_dir).current_key_id
    assert main(["key", "show", "--dir", str(ring_dir)]) == 0
    out = capsys.readouterr().out
    assert f"new current key {second}" in out
    assert f"previous key {first} opens envelopes until" in out
    assert "PRIVATE" not in out
    for key_file in ring_dir.glob("key-*.pem"):
        assert "".join(key_file.read_text().splitlines()[1:-1]) not in out.replace("\n", "")
    assert "retiring, opens until" in out
    assert out.rstrip().endswith("-----END PUBLIC KEY-----")


def test_cli_show_pem_prints_exactly_the_published_key(
    ring_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = FactoryKeyring.generate(ring_dir)
    capsys.readouterr()
    assert main(["key", "show", "--dir", str(ring_dir), "--pem"]) == 0
    assert capsys.readouterr().out == ring.public_key_pem()


def test_cli_show_json_lists_key_ids_and_times(
    ring_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = FactoryKeyring.generate(ring_dir)
    assert main(["key", "show", "--dir", str(ring_dir), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["current"] == ring.current_key_id
    assert doc["keys"][0]["retires"] is None
    assert "PRIVATE" not in json.dumps(doc)


def test_cli_errors_exit_2_with_one_line(
    ring_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["key", "show", "--dir", str(ring_dir)]) == 2
    assert main(["key", "generate", "--dir", str(ring_dir)]) == 0
    assert main(["key", "generate", "--dir", str(ring_dir)]) == 2
    assert main(["key", "rotate", "--dir", str(ring_dir), "--grace-hours", "-1"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(errors) == 3
    assert all(line.startswith("gwms: ") for line in errors)
