"""Which credential goes to which entry, and the exact reason for each one passed over."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from gwms.config.frontend import Credential as CredentialConfig
from gwms.credentials.proxy import create_proxy, write_proxy
from gwms.credentials.sealed import algorithm_of, key_id
from gwms.credentials.testca import make_ca, make_user_cert
from gwms.frontend.credentials import choose_credential, load_credential, load_credentials
from gwms.frontend.logging import KeyValueFormatter, get_logger, redact
from gwms.protocol import EntryAd

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def user() -> tuple[Any, Any]:
    """A CA-signed user certificate valid from 6 h ago for 2 days (issues the test proxies)."""
    ca_cert, ca_key = make_ca("frontend credentials test CA")
    return make_user_cert(ca_cert, ca_key, "vo1 pilot", 48, not_before=NOW - timedelta(hours=6))


@pytest.fixture(scope="module")
def public_key_pem() -> str:
    key = x25519.X25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def entry(public_key_pem: str, *, trust_domain: str = "grid", methods=("x509_proxy",)) -> EntryAd:
    from gwms.credentials.sealed import load_public_key

    key = load_public_key(public_key_pem)
    return EntryAd(
        factory="gf",
        entry="ce1",
        trust_domain=trust_domain,
        auth_methods=tuple(methods),
        image_id="ami-1",
        instance_types=("m5.large",),
        key_id=key_id(key),
        key_algorithm=algorithm_of(key),
        public_key_pem=public_key_pem,
    )


def proxy_file(user: tuple[Any, Any], path: Path, hours: float, started: datetime) -> Path:
    cert, key = user
    return write_proxy(create_proxy(cert, key, hours=hours, now=started, key_size=2048), path)


def config(path: Path, *, cid: str = "vo1_pilot", ctype: str = "x509_proxy", **more: Any):
    return CredentialConfig(id=cid, type=ctype, path=str(path), **more)


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def jwt(claims: dict[str, Any]) -> str:
    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.c2ln"


def test_a_valid_proxy_of_the_entry_trust_domain_and_type_is_chosen(
    user, public_key_pem, tmp_path
) -> None:
    path = proxy_file(user, tmp_path / "proxy.pem", 12, NOW)
    loaded = load_credential(config(path, min_lifetime=7200))

    choice = choose_credential(entry(public_key_pem), [loaded], NOW)

    assert choice.usable
    assert choice.credential_ids == ("vo1_pilot",)
    assert choice.curb_reasons() == ()
    assert choice.detail == "proxy vo1_pilot expires in 12 h >= 2 h minimum"


def test_an_expired_proxy_is_not_used_and_the_reason_says_how_long_ago(
    user, public_key_pem, tmp_path
) -> None:
    path = proxy_file(user, tmp_path / "proxy.pem", 1, NOW - timedelta(hours=4))
    loaded = load_credential(config(path))
    assert loaded.credential is not None
    expired_at = loaded.credential.expires_at()

    choice = choose_credential(entry(public_key_pem), [loaded], expired_at + timedelta(hours=3))

    assert not choice.usable
    assert choice.rejected == ("proxy vo1_pilot expired 3 h ago",)
    assert choice.curb_reasons() == ("no usable credential: proxy vo1_pilot expired 3 h ago",)


def test_a_soon_expiring_proxy_is_not_used_and_the_reason_gives_time_left_and_minimum(
    user, public_key_pem, tmp_path
) -> None:
    path = proxy_file(user, tmp_path / "proxy.pem", 1, NOW)
    loaded = load_credential(config(path, min_lifetime="2h"))
    assert loaded.credential is not None
    now = loaded.credential.expires_at() - timedelta(minutes=3, seconds=10)

    choice = choose_credential(entry(public_key_pem), [loaded], now)

    assert choice.rejected == ("proxy vo1_pilot expires in 3 min < 2 h minimum",)
    assert choice.curb_reasons() == (
        "no usable credential: proxy vo1_pilot expires in 3 min < 2 h minimum",
    )


def test_a_credential_of_another_trust_domain_is_not_used_and_both_domains_are_named(
    user, public_key_pem, tmp_path
) -> None:
    path = proxy_file(user, tmp_path / "proxy.pem", 12, NOW)
    loaded = load_credential(config(path, trust_domain="osg"))

    choice = choose_credential(entry(public_key_pem, trust_domain="grid"), [loaded], NOW)

    assert choice.rejected == (
        "proxy vo1_pilot is for trust domain 'osg' but entry ce1@gf is in 'grid'",
    )


def test_a_credential_whose_type_the_entry_does_not_accept_is_not_used(
    user, public_key_pem, tmp_path
) -> None:
    path = proxy_file(user, tmp_path / "proxy.pem", 12, NOW)
    loaded = load_credential(config(path))
    picky = entry(public_key_pem, methods=("idtoken", "aws_key_pair"))

    choice = choose_credential(picky, [loaded], NOW)

    assert choice.rejected == (
        "proxy vo1_pilot is of type x509_proxy, which entry ce1@gf does not accept"
        " (it accepts idtoken, aws_key_pair)",
    )


def test_the_first_usable_credential_wins_and_the_ones_passed_over_keep_their_reasons(
    user, public_key_pem, tmp_path
) -> None:
    short = proxy_file(user, tmp_path / "short.pem", 1, NOW)
    token = secret_file(tmp_path / "pilot.jwt", jwt({"exp": int(NOW.timestamp()) + 86400}))
    loaded = load_credentials(
        [
            config(short, cid="short_proxy", min_lifetime="6h"),
            config(token, cid="pilot-token", ctype="idtoken"),
            config(tmp_path / "never-read.pem", cid="spare"),
        ]
    )
    both = entry(public_key_pem, methods=("x509_proxy", "idtoken"))

    choice = choose_credential(both, loaded, NOW)

    assert choice.credential_ids == ("pilot-token",)
    assert choice.rejected == ("proxy short_proxy expires in 1 h < 6 h minimum",)
    assert choice.detail == "idtoken pilot-token expires in 24 h >= 2 h minimum"


def test_an_idtoken_travels_beside_the_proxy_when_the_entry_accepts_both(
    user, public_key_pem, tmp_path
) -> None:
    proxy = proxy_file(user, tmp_path / "proxy.pem", 12, NOW)
    other = proxy_file(user, tmp_path / "other.pem", 12, NOW)
    token = secret_file(tmp_path / "pilot.jwt", jwt({"exp": int(NOW.timestamp()) + 86400}))
    loaded = load_credentials(
        [
            config(proxy, cid="vo1_pilot"),
            config(other, cid="second_proxy"),
            config(token, cid="pilot-token", ctype="idtoken"),
        ]
    )

    choice = choose_credential(
        entry(public_key_pem, methods=("x509_proxy", "idtoken")), loaded, NOW
    )

    # One of each type, first usable in configuration order: the pilot needs both.
    assert choice.credential_ids == ("vo1_pilot", "pilot-token")


def test_a_missing_file_is_reported_with_its_path_and_what_to_do(public_key_pem, tmp_path) -> None:
    missing = tmp_path / "nope.pem"

    choice = choose_credential(entry(public_key_pem), [load_credential(config(missing))], NOW)

    assert choice.rejected == (
        f"proxy vo1_pilot cannot be used: proxy vo1_pilot (credentials[].path {missing}) cannot"
        " be opened (No such file or directory); create the file or fix the path",
    )


def test_a_secret_file_readable_by_others_is_refused_with_the_chmod_to_run(
    public_key_pem, tmp_path
) -> None:
    token = secret_file(tmp_path / "pilot.jwt", jwt({}), mode=0o644)

    loaded = load_credential(config(token, cid="pilot-token", ctype="idtoken"))

    assert loaded.credential is None
    assert loaded.error == (
        f"idtoken pilot-token (credentials[].path {token}) is readable by group or others"
        f" (mode 0644); run chmod 600 {token}"
    )


def test_an_idtoken_without_exp_never_expires(public_key_pem, tmp_path) -> None:
    token = secret_file(tmp_path / "pilot.jwt", jwt({"sub": "vo1"}) + "\n")
    loaded = load_credential(config(token, cid="pilot-token", ctype="idtoken"))

    choice = choose_credential(entry(public_key_pem, methods=("idtoken",)), [loaded], NOW)

    assert choice.usable
    assert choice.detail == "idtoken pilot-token does not expire"


def test_an_aws_key_pair_is_read_from_a_yaml_mapping(tmp_path) -> None:
    path = secret_file(
        tmp_path / "aws.yaml",
        "access_key_id: AKIAABCDEFGHIJKLMNOP\nsecret_access_key: wJalrXUtnFEMIK7MDENGbPxRfiCY\n",
    )

    loaded = load_credential(config(path, cid="aws", ctype="aws_key_pair", trust_domain="ec2"))

    assert loaded.credential is not None
    assert loaded.credential.access_key_id == "AKIAABCDEFGHIJKLMNOP"
    assert loaded.credential.trust_domain == "ec2"
    assert "wJalr" not in repr(loaded)


def test_a_broken_yaml_credential_error_names_the_line_but_never_the_secret(tmp_path) -> None:
    path = secret_file(tmp_path / "aws.yaml", "access_key_id: A\nsecret_access_key: [sEcReT\n")

    loaded = load_credential(config(path, cid="aws", ctype="aws_key_pair"))

    assert loaded.error is not None
    assert "sEcReT" not in loaded.error
    assert loaded.error.startswith(f"AWS key pair aws ({path}) is not valid YAML (line ")


def test_log_lines_carry_bound_fields_and_mask_secrets() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    logger = logging.getLogger("gwms.test_frontend_credentials")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log = get_logger(logger.name, frontend="vo1").bind(group="main", entry="ce1@gf")
        log.info("token %s and %s", jwt({"sub": "x"}), "gwms-seal:1:x25519:0011:QUJD")
    finally:
        logger.removeHandler(handler)

    line = stream.getvalue().strip()
    assert " INFO frontend=vo1 group=main entry=ce1@gf: token [JWT] and [sealed]" in line


def test_redaction_masks_pem_bodies_but_keeps_a_bare_marker_in_an_error_message() -> None:
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"

    assert redact(f"file holds {key} and more") == "file holds [PEM] and more"
    assert redact("no PEM certificate (-----BEGIN CERTIFICATE-----)") == (
        "no PEM certificate (-----BEGIN CERTIFICATE-----)"
    )
