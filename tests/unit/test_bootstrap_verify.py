"""The bootstrap's checks on decoded UserData: clocks, lifetimes, proxy validity, legacy policy."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gwms.credentials.testca import make_ca, make_user_cert
from gwms_context import userdata
from gwms_context.verify import (
    MIN_PROXY_SECONDS,
    VerifyError,
    check_proxy,
    pem_certificate_times,
    verify,
)
from tests.fakes.factory_web import FactoryWeb, expired_cert_pem, glidein_document, proxy_pem


class OfflineWeb(FactoryWeb):
    """Only its URLs go into the documents; it is never started."""

    url = "http://127.0.0.1:1"  # type: ignore[assignment]


WEB = OfflineWeb(token="t", files={"glidein_startup.sh": b"#!/bin/sh\n"})


def decoded(**overrides: object) -> userdata.GlideinUserData:
    return userdata.decode(userdata.encode(glidein_document(WEB, **overrides)))


def cert_pem(not_before: datetime, hours: float) -> str:
    ca_cert, ca_key = make_ca("verify test CA")
    cert, _ = make_user_cert(ca_cert, ca_key, "verify test", hours=hours, not_before=not_before)
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_certificate_times_match_cryptography_and_openssl() -> None:
    pem = proxy_pem()
    times = pem_certificate_times(pem)
    certs = x509.load_pem_x509_certificates(pem.encode())
    assert [(t.not_before, t.not_after) for t in times] == [
        (int(c.not_valid_before_utc.timestamp()), int(c.not_valid_after_utc.timestamp()))
        for c in certs
    ]
    enddate = subprocess.run(
        ["openssl", "x509", "-noout", "-enddate", "-dateopt", "iso_8601"],
        input=pem,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    when = datetime.strptime(enddate.removeprefix("notAfter="), "%Y-%m-%d %H:%M:%SZ")
    assert times[0].not_after == int(when.replace(tzinfo=UTC).timestamp())


def test_generalized_time_after_2049_is_read() -> None:
    start = datetime(2049, 12, 31, 12, 0, tzinfo=UTC)
    [times] = pem_certificate_times(cert_pem(start, hours=48))
    assert times.not_after == int(datetime(2050, 1, 2, 12, 0, tzinfo=UTC).timestamp())


def test_the_proxy_end_is_the_earliest_not_after_of_the_chain() -> None:
    end = check_proxy(proxy_pem(), time.time())
    assert end == min(t.not_after for t in pem_certificate_times(proxy_pem()))


def test_an_expired_proxy_is_refused_with_its_end_time() -> None:
    with pytest.raises(VerifyError, match=r"credentials.x509_proxy expired at \d{4}-"):
        check_proxy(expired_cert_pem(), time.time())


def test_a_proxy_about_to_expire_is_refused() -> None:
    now = time.time()
    end = check_proxy(proxy_pem(), now)
    with pytest.raises(VerifyError, match="less than the 300 s a pilot needs"):
        check_proxy(proxy_pem(), end - MIN_PROXY_SECONDS + 10)


def test_a_proxy_not_yet_valid_is_refused_beyond_the_clock_skew() -> None:
    pem = cert_pem(datetime.now(UTC) + timedelta(hours=1), hours=24)
    with pytest.raises(VerifyError, match=r"not valid before .*check this VM's clock"):
        check_proxy(pem, time.time(), skew=300)
    assert check_proxy(pem, time.time(), skew=7200)


def test_a_certificate_that_is_not_der_is_refused() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    with pytest.raises(VerifyError, match="certificate 1 of the chain is not valid DER"):
        check_proxy(pem, time.time())


def test_a_valid_document_passes_and_returns_the_proxy_end() -> None:
    assert verify(decoded()) > time.time() + 3600


def test_issued_in_the_future_beyond_the_skew_is_refused() -> None:
    document = decoded(issued_at=int(time.time()) + 3600)
    with pytest.raises(VerifyError, match=r"issued_at .* is 3\d\d\d s in the future"):
        verify(document)
    assert verify(document, skew=4000)


def test_a_glidein_whose_lifetime_ended_before_boot_is_refused() -> None:
    document = decoded(issued_at=int(time.time()) - 7200)
    with pytest.raises(VerifyError, match="over before this VM started"):
        verify(document)


def test_a_lifetime_over_a_month_is_refused() -> None:
    document = decoded(lifetimes={"max_seconds": 90 * 86400, "retire_seconds": 3600})
    with pytest.raises(VerifyError, match=r"lifetimes\.max_seconds is 7776000, outside"):
        verify(document)


def test_a_document_without_the_startup_script_is_refused() -> None:
    with pytest.raises(VerifyError, match=r"files has no glidein_startup\.sh entry"):
        verify(decoded(files={"other.sh": "a" * 64}))


def test_legacy_user_data_needs_the_image_to_allow_it() -> None:
    legacy = userdata.GlideinUserData(
        {
            "lifetimes": {"max_seconds": 3600, "retire_seconds": 3600},
            "credentials": {"x509_proxy": proxy_pem()},
        },
        legacy=True,
    )
    with pytest.raises(VerifyError, match="GWMS_BOOTSTRAP_ALLOW_LEGACY=1"):
        verify(legacy)
    assert verify(legacy, allow_legacy=True) > time.time()
