"""A real factory process refuses requests it cannot trust, says why, and never logs a secret.

One `gwms factory run --once` (at log level INFO, then DEBUG) against a real `gwms
collector serve` and moto reads: a valid request (the control: it must launch), an
unsealed one, one with its identity in clear, a tampered one, one whose sealed identity
was moved from another ad, one sealed by frontend A but advertised with frontend B's
token, and one from an identity the factory does not know. Each refused request is logged
with its reason and launches nothing. Then every captured log line (the factory's stdout
and stderr, every log file) and every ad in the collector is searched for the test's
secrets, in clear and inside base64/gzip blobs (the way a logged UserData hides them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from gwms.pool.embedded.tokens import add_token, write_token_file
from gwms.protocol.wire import AdKind
from gwms_context import userdata as codec
from tests.fakes.moto_server import (
    SECRET_ACCESS_KEY,
    MotoServer,
    moto,  # noqa: F401 - fixture
    moto_server,  # noqa: F401 - fixture
    write_key_pair_file,
)
from tests.integration import factory_harness as h
from tests.integration.pool_fixtures import CollectorProcess, make_collector

pytestmark = pytest.mark.integration

OTHER = h.FrontendRef("vo2-frontend", "vo2-frontend@example.org")
STRANGER = h.FrontendRef("vo3-frontend", "stranger@example.org")
REQUEST = f"{h.ENTRY}@{h.FACTORY}@{h.FRONTEND}"


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    """A collector that knows vo1, vo2, a stranger and the factory by their tokens."""
    server = make_collector(tmp_path / "pool")
    assert server.tokens is not None
    for ref in (OTHER, STRANGER):
        token_file = server.workdir / f"{ref.name}.token"
        write_token_file(token_file, add_token(server.tokens, ref.identity))
        server.token_files[ref.identity] = token_file
    server.start()
    try:
        yield server
    finally:
        server.stop()


def labelled(what: str, values: Sequence[str]) -> dict[str, str]:
    return {f"{what} ({i + 1} of {len(values)})": value for i, value in enumerate(values)}


def factory_keys(state: Path) -> str:
    return "".join(key.read_text() for key in sorted((state / "keys").glob("key-*.pem")))


def flip_one_character(sealed: str) -> str:
    middle = len(sealed) - 20
    return sealed[:middle] + ("A" if sealed[middle] != "A" else "B") + sealed[middle + 1 :]


# At DEBUG too: botocore would log RunInstances' UserData (proxy key, upload token) if the
# daemon let it follow the factory's level.
@pytest.mark.parametrize("log_level", ["INFO", "DEBUG"])
def test_untrusted_requests_are_refused_with_their_reason_and_no_secret_is_ever_logged(
    tmp_path: Path,
    collector: CollectorProcess,
    moto: MotoServer,  # noqa: F811 - fixture
    log_level: str,
) -> None:
    config = h.write_factory_config(
        tmp_path / "factory",
        collector_url=collector.url,
        token_file=collector.token_files[h.FACTORY_ID],
        endpoint_url=moto.url,
        key_file=write_key_pair_file(tmp_path / "aws-credentials"),
        frontends=(h.FrontendRef(h.FRONTEND, h.FRONTEND_ID), OTHER),
        log_level=log_level,
    )
    runs = [h.run_factory(config)]  # publishes the entry ad
    assert runs[0].returncode == 0, runs[0].stderr[-3000:]

    pki = h.make_pki()
    vo1 = h.open_pool(collector.url, collector.token_files[h.FRONTEND_ID])
    vo2 = h.open_pool(collector.url, collector.token_files[OTHER.identity])
    stranger = h.open_pool(collector.url, collector.token_files[STRANGER.identity])

    h.publish_request(vo1, pki, idle=1, max_running=1)  # the control: it must launch
    main_ad, _ = h.request_ads(vo1, pki, idle=1, max_running=1)
    bad = {}
    bad["unsealed"], _ = h.request_ads(vo1, pki, idle=3, max_running=3, group="unsealed")
    del bad["unsealed"]["ReqEncIdentity"]
    bad["inclear"], _ = h.request_ads(vo1, pki, idle=3, max_running=3, group="inclear")
    bad["inclear"]["ReqEncIdentity"] = json.dumps({"format": 1, "identity": h.FRONTEND_ID})
    bad["tampered"], _ = h.request_ads(vo1, pki, idle=3, max_running=3, group="tampered")
    bad["tampered"]["ReqEncIdentity"] = flip_one_character(bad["tampered"]["ReqEncIdentity"])
    bad["moved"], _ = h.request_ads(vo1, pki, idle=3, max_running=3, group="moved")
    bad["moved"]["ReqEncIdentity"] = main_ad["ReqEncIdentity"]
    vo1.advertise(list(bad.values()))
    replay, _ = h.request_ads(vo1, pki, idle=3, max_running=3, group="replay")
    vo2.advertise([replay])  # sealed by vo1, advertised with vo2's token
    h.publish_request(
        stranger, pki, idle=3, max_running=3, frontend=STRANGER.name, identity=STRANGER.identity
    )

    runs.append(h.run_factory(config))
    assert runs[1].returncode == 0, runs[1].stderr[-3000:]
    log = runs[1].stderr
    expected = {
        "unsealed": ("identity_missing", f"{REQUEST}.unsealed"),
        "inclear": ("identity_unreadable", f"{REQUEST}.inclear"),
        "tampered": ("identity_tampered", f"{REQUEST}.tampered"),
        "moved": ("identity_tampered", f"{REQUEST}.moved"),
        "replay": ("replayed", f"{REQUEST}.replay"),
        "stranger": ("unknown_identity", f"{h.ENTRY}@{h.FACTORY}@{STRANGER.name}.main"),
    }
    lines = [line for line in log.splitlines() if "request rejected (" in line]
    for case, (reason, name) in expected.items():
        found = [line for line in lines if f"({reason})" in line and name in line]
        assert found, f"{case}: no 'request rejected ({reason})' line naming {name}:\n{log}"
    assert len(lines) == len(expected), "\n".join(lines)

    ec2 = h.ec2_client(moto.url)
    vms = h.live_vms(ec2)
    assert [vm.client for vm in vms] == [f"{h.FRONTEND}.main"], "a refused request launched"

    # Secrets: the proxy key, the AWS secret, every token, the factory's own keys.
    doc = codec.decode(h.userdata_of(ec2, vms[0].cloud_id))
    state = tmp_path / "factory" / "state"
    upload_secret = (state / "upload-token.key").read_text().strip()
    secrets = {
        **labelled("delegated proxy key", pki.key_lines),
        **labelled("glidein proxy key", h.private_key_lines(doc.x509_proxy)),
        **labelled("upload-token secret", h.secret_forms(upload_secret)),
        **labelled("factory private key", h.private_key_lines(factory_keys(state))),
        **{
            f"collector token of {who}": Path(f).read_text().strip()
            for who, f in collector.token_files.items()
        },
        "AWS secret key": SECRET_ACCESS_KEY,
        "log upload token": doc.log_upload_token,
    }
    assert len(secrets) > 10
    texts = [(f"factory run {i} {name}", text) for i, run in enumerate(runs)
             for name, text in (("stdout", run.stdout), ("stderr", run.stderr))]  # fmt: skip
    texts += [(str(p), p.read_text(errors="replace")) for p in tmp_path.rglob("*.log")]
    ads = h.open_pool(collector.url, collector.token_files[h.FACTORY_ID]).query("Any", "true")
    assert {ad["MyType"] for ad in ads} >= {AdKind.ENTRY.value, AdKind.FACTORY_CLIENT.value}
    texts += [(f"ad {ad.get('Name')}", str(ad)) for ad in ads]
    assert any("collector.log" in where for where, _ in texts)
    assert sum(len(text) for _, text in texts) > 5000, "too little was captured to judge"
    leaks = h.find_secrets(texts, secrets)
    assert not leaks, f"secrets in logs or ads: {leaks}"
