"""Checks on decoded UserData before anything runs: the pilot never starts on bad input.

The decoder already enforced the schema (version, types, sha256 syntax, retire <= max). Here
come the checks that need a clock or a policy: `issued_at` not in the future beyond the clock
skew, the glidein not stale, lifetimes within bounds, the pilot files complete, the proxy chain
present and valid for long enough, and legacy documents only when the image allows them.

Certificate validity is read with a minimal DER walker (stdlib only): `ssl._ssl._test_decode_cert`
is private and needs a file, and `openssl` may be missing from a minimal image. We read only
the TBSCertificate's Validity, so nothing else in the certificate can trip us. Stdlib, 3.6.
"""

import base64
import binascii
import calendar
import re
import time
from typing import List, Optional, Tuple  # noqa: F401 (type comments)

DEFAULT_SKEW = 300
# A glidein lives at most a month; anything longer is a factory bug or a forged document.
MAX_LIFETIME = 30 * 24 * 3600
# The proxy must outlive the start-up, or the pilot would fail minutes later for no clear reason.
MIN_PROXY_SECONDS = 300
STARTUP_SCRIPT = "glidein_startup.sh"

_PEM_CERT = re.compile(
    r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----"
)


class VerifyError(Exception):
    """The UserData is unusable here; the message says what, where and what to do."""


def check_factory(decoded, allowed):
    """Refuse user data from a factory this image does not accept (an empty list accepts any).

    The check comes before anything in the document is used: an unaccepted factory's log
    URL, overlays and `disable_shutdown` are never acted on.
    """
    if not allowed:
        return
    factory = decoded.factory
    if factory not in allowed:
        raise VerifyError(
            "the user data comes from factory %r, which this image does not accept (allowed: %s);"
            " launch it from an allowed factory or change the image's allow-list"
            % (factory, ", ".join(sorted(allowed)))
        )


class CertificateTimes(object):
    """notBefore / notAfter of one certificate, in epoch seconds (UTC)."""

    __slots__ = ("not_after", "not_before")

    def __init__(self, not_before: int, not_after: int) -> None:
        self.not_before = not_before
        self.not_after = not_after


def _tlv(data: bytes, pos: int) -> Tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at `pos`."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _der_time(tag: int, text: bytes) -> int:
    value = text.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ, years 1950-2049 (RFC 5280)
        match = re.match(r"\A(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z\Z", value)
        if not match:
            raise ValueError("bad UTCTime")
        year = int(match.group(1))
        year += 1900 if year >= 50 else 2000
    elif tag == 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        match = re.match(r"\A(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z\Z", value)
        if not match:
            raise ValueError("bad GeneralizedTime")
        year = int(match.group(1))
    else:
        raise ValueError("not a time")
    fields = [int(group) for group in match.groups()[1:]]
    return calendar.timegm((year, fields[0], fields[1], fields[2], fields[3], fields[4], 0, 0, 0))


def certificate_times(der: bytes) -> CertificateTimes:
    """Validity of a DER certificate: Certificate -> TBSCertificate -> Validity."""
    tag, start, _ = _tlv(der, 0)
    if tag != 0x30:
        raise ValueError("not a certificate")
    tag, pos, tbs_end = _tlv(der, start)
    if tag != 0x30:
        raise ValueError("no TBSCertificate")
    tag, _, end = _tlv(der, pos)
    if tag == 0xA0:  # [0] EXPLICIT version
        pos = end
    for _field in ("serialNumber", "signature", "issuer"):
        _, _, pos = _tlv(der, pos)
    tag, pos, validity_end = _tlv(der, pos)
    if tag != 0x30 or validity_end > tbs_end:
        raise ValueError("no Validity")
    tag, begin, end = _tlv(der, pos)
    not_before = _der_time(tag, der[begin:end])
    tag, begin, end = _tlv(der, end)
    not_after = _der_time(tag, der[begin:end])
    return CertificateTimes(not_before, not_after)


def pem_certificate_times(pem: str) -> List[CertificateTimes]:
    """Validity of every certificate in a PEM chain; a block that does not parse is an error."""
    result = []
    for index, match in enumerate(_PEM_CERT.finditer(pem)):
        try:
            der = base64.b64decode("".join(match.group(1).split()), validate=True)
            result.append(certificate_times(der))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise VerifyError(
                "user data: credentials.x509_proxy: certificate %d of the chain is not valid "
                "DER; check the proxy the factory delegated" % (index + 1)
            ) from None
    return result


def _when(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def check_proxy(pem: Optional[str], now: float, skew: int = DEFAULT_SKEW) -> int:
    """The chain's end (earliest notAfter); VerifyError when expired, too short or not yet valid."""
    if not pem:
        raise VerifyError(
            "user data: credentials.x509_proxy is missing; the factory must delegate a pilot proxy"
        )
    times = pem_certificate_times(pem)
    if not times:
        raise VerifyError(
            "user data: credentials.x509_proxy holds no PEM certificate; check the factory's "
            "delegated proxy"
        )
    end = min(item.not_after for item in times)
    start = max(item.not_before for item in times)
    if end <= now:
        raise VerifyError(
            "user data: credentials.x509_proxy expired at %s (now %s); the frontend must "
            "delegate a fresh proxy" % (_when(end), _when(int(now)))
        )
    if end - now < MIN_PROXY_SECONDS:
        raise VerifyError(
            "user data: credentials.x509_proxy expires at %s, in %d s, less than the %d s a "
            "pilot needs; the frontend must delegate a longer proxy"
            % (_when(end), int(end - now), MIN_PROXY_SECONDS)
        )
    if start > now + skew:
        raise VerifyError(
            "user data: credentials.x509_proxy is not valid before %s (now %s); check this "
            "VM's clock (NTP)" % (_when(start), _when(int(now)))
        )
    return end


def verify(userdata, now: Optional[float] = None, skew: int = DEFAULT_SKEW, allow_legacy=False):
    # type: (object, Optional[float], int, bool) -> int
    """Check a decoded GlideinUserData; return the proxy's end time. VerifyError says why not."""
    now = time.time() if now is None else now
    if userdata.legacy:
        if not allow_legacy:
            raise VerifyError(
                "user data is in the legacy glideinWMS form, which this image does not accept; "
                "set GWMS_BOOTSTRAP_ALLOW_LEGACY=1 in /etc/gwms/bootstrap.env to allow it"
            )
    else:
        _check_v1(userdata, now, skew)
    max_seconds = userdata.max_seconds
    if not isinstance(max_seconds, int) or not 0 < max_seconds <= MAX_LIFETIME:
        raise VerifyError(
            "user data: lifetimes.max_seconds is %r, outside 1..%d; check the entry's max "
            "lifetime at the factory" % (max_seconds, MAX_LIFETIME)
        )
    return check_proxy(userdata.x509_proxy, now, skew)


def _check_v1(userdata, now: float, skew: int) -> None:
    issued = userdata.issued_at
    if issued > now + skew:
        raise VerifyError(
            "user data: issued_at %s is %d s in the future (allowed clock skew %d s); check "
            "this VM's clock (NTP) or the factory's" % (_when(issued), int(issued - now), skew)
        )
    if issued + userdata.max_seconds <= now:
        raise VerifyError(
            "user data: the glidein issued at %s had a %d s max lifetime, over before this VM "
            "started; the factory should not launch stale glideins"
            % (_when(issued), userdata.max_seconds)
        )
    if STARTUP_SCRIPT not in (userdata.files or {}):
        raise VerifyError(
            "user data: files has no %s entry, so there is no pilot to start; check the "
            "factory's web area" % STARTUP_SCRIPT
        )
