"""The embedded collector's SQLite store and its token file, without HTTP."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import classad2
import pytest

from gwms import classads
from gwms.classads import ClassAdError
from gwms.errors import ConfigError
from gwms.pool.base import ConflictError, JobStatus, NotFoundError
from gwms.pool.embedded.store import Store
from gwms.pool.embedded.tokens import TokenAuth, add_token, hash_token, load_tokens

FRONTEND = "vo1-frontend@example.org"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Store:
    return Store(tmp_path / "pool.sqlite", clock=clock)


def _ad(my_type: str, name: str, **attrs: object) -> classad2.ClassAd:
    return classads.json_to_ad({"MyType": my_type, "Name": name, **attrs})


def _job(**attrs: object) -> classad2.ClassAd:
    return classads.json_to_ad({"Cmd": "/bin/true", **attrs})


def _machine(name: str = "slot1@vm1", **attrs: object) -> classad2.ClassAd:
    return classads.json_to_ad({"Name": name, "Memory": 2048, "START": True, **attrs})


def test_the_database_file_is_created_private(tmp_path: Path) -> None:
    Store(tmp_path / "pool.sqlite")
    assert stat.S_IMODE((tmp_path / "pool.sqlite").stat().st_mode) == 0o600


def test_ads_are_keyed_by_type_and_name_and_readvertising_replaces(store: Store) -> None:
    store.advertise([_ad("glidefactory", "a", V=1), _ad("glideclient", "a", V=2)], FRONTEND)
    store.advertise([_ad("GLIDEFACTORY", "a", V=3)], FRONTEND)
    assert [ad["V"] for ad in store.query_ads("glidefactory")] == [3]
    assert sorted(ad["V"] for ad in store.query_ads("Any")) == [2, 3]


def test_the_stored_identity_is_the_callers_whatever_the_ad_claims(store: Store) -> None:
    store.advertise([_ad("glideclient", "r", AuthenticatedIdentity="victim@example.org")], FRONTEND)
    (ad,) = store.query_ads("glideclient")
    assert ad["AuthenticatedIdentity"] == FRONTEND


def test_ads_expire_after_their_lifetime_default_900_seconds(store: Store, clock: Clock) -> None:
    store.advertise([_ad("t", "default"), _ad("t", "own", ClassAdLifetime=60)], FRONTEND)
    store.advertise([_ad("t", "argument")], FRONTEND, lifetime=300)
    clock.now += 61
    assert sorted(ad["Name"] for ad in store.query_ads("t")) == ["argument", "default"]
    clock.now += 240
    assert [ad["Name"] for ad in store.query_ads("t")] == ["default"]
    clock.now += 600
    assert store.query_ads("t") == []
    assert store.purge_expired() == 3


def test_update_sequence_number_counts_up_unless_the_client_sends_one(store: Store) -> None:
    for _ in range(3):
        store.advertise([_ad("t", "counted")], FRONTEND)
    store.advertise([_ad("t", "sent", UpdateSequenceNumber=41)], FRONTEND)
    numbers = {ad["Name"]: ad["UpdateSequenceNumber"] for ad in store.query_ads("t")}
    assert numbers == {"counted": 2, "sent": 41}


def test_query_applies_constraint_and_projection(store: Store) -> None:
    store.advertise([_ad("t", "a", Slots=1, Big="x"), _ad("t", "b", Slots=5, Big="y")], FRONTEND)
    (ad,) = store.query_ads("t", "Slots > 2", ["Name", "Slots"])
    assert dict(ad) == {"Name": "b", "Slots": 5}


def test_invalidate_removes_only_matching_ads_of_the_type(store: Store) -> None:
    store.advertise([_ad("t", "a", C="x"), _ad("t", "b", C="y"), _ad("u", "a", C="x")], FRONTEND)
    assert store.invalidate("t", 'C == "x"') == 1
    assert sorted((ad["MyType"], ad["Name"]) for ad in store.query_ads()) == [
        ("t", "b"),
        ("u", "a"),
    ]


@pytest.mark.parametrize(
    ("ad", "message"),
    [
        (classads.json_to_ad({"Name": "n"}), "MyType"),
        (classads.json_to_ad({"MyType": "t", "Name": {"expr": 'strcat("a", "b")'}}), "Name"),
        (
            classads.json_to_ad({"MyType": "t", "Name": "n", "ClassAdLifetime": 0}),
            "ClassAdLifetime",
        ),
    ],
)
def test_ads_without_a_usable_key_or_lifetime_are_refused(
    store: Store, ad: classad2.ClassAd, message: str
) -> None:
    with pytest.raises(ClassAdError, match=message):
        store.advertise([ad], FRONTEND)
    assert store.query_ads() == []


def test_ads_jobs_and_expiry_survive_reopening_the_file(tmp_path: Path, clock: Clock) -> None:
    first = Store(tmp_path / "pool.sqlite", clock=clock)
    first.advertise([_ad("t", "a", ClassAdLifetime=100)], FRONTEND)
    ids = first.submit([_job()], FRONTEND)
    first.close()
    again = Store(tmp_path / "pool.sqlite", clock=clock)
    assert [ad["Name"] for ad in again.query_ads("t")] == ["a"]
    assert again.submit([_job()], FRONTEND) == ["2.0"]  # cluster ids are never reused
    assert [f"{j['ClusterId']}.{j['ProcId']}" for j in again.query_jobs()] == [ids[0], "2.0"]
    clock.now += 101
    assert again.query_ads("t") == []


def test_submit_sets_the_attributes_the_schedd_owns_over_client_values(
    store: Store, clock: Clock
) -> None:
    forged = _job(Owner="root", JobStatus=2, ClusterId=99, QDate=1)
    ids = store.submit([forged, _job(Requirements={"expr": "TARGET.Memory > 1"})], FRONTEND)
    assert ids == ["1.0", "1.1"]
    first, second = store.query_jobs()
    assert first["Owner"] == "vo1-frontend"
    assert first["User"] == FRONTEND
    assert first["JobStatus"] == JobStatus.IDLE
    assert first["ClusterId"] == 1
    assert first["QDate"] == first["EnteredCurrentStatus"] == int(clock.now)
    assert first["Requirements"] is True  # default: any machine
    assert second.lookup("Requirements") == classad2.ExprTree("TARGET.Memory > 1")


def test_remove_changes_idle_and_running_jobs_but_not_finished_ones(store: Store) -> None:
    store.submit([_job(N=n) for n in range(3)], FRONTEND)
    running = store.claim(_machine(START={"expr": "TARGET.N == 1"}), FRONTEND)
    assert running is not None
    store.complete("1.1", 0, "", FRONTEND)
    assert store.remove_jobs("true") == 2
    assert [j["JobStatus"] for j in store.query_jobs()] == [3, 4, 3]
    assert store.remove_jobs("true") == 0


def test_claim_takes_the_oldest_idle_job_that_matches_both_ways(store: Store, clock: Clock) -> None:
    store.submit(
        [
            _job(
                Cmd="/bin/too-big",
                RequestMemory=9000,
                Requirements={"expr": "TARGET.Memory >= MY.RequestMemory"},
            )
        ],
        FRONTEND,
    )
    clock.now += 1
    store.submit([_job(Cmd="/bin/refused", Owner="x", Banned=True)], FRONTEND)
    clock.now += 1
    store.submit([_job(Cmd="/bin/older")], FRONTEND)
    clock.now += 1
    store.submit([_job(Cmd="/bin/newer")], FRONTEND)
    machine = _machine(START={"expr": "TARGET.Banned =!= true"})
    first = store.claim(machine, "pilot@example.org")
    assert first is not None
    assert first["Cmd"] == "/bin/older"
    assert first["JobStatus"] == JobStatus.RUNNING
    assert first["RemoteHost"] == "slot1@vm1"
    assert first["NumJobStarts"] == 1
    assert first["EnteredCurrentStatus"] == int(clock.now)
    assert store.claim(machine, "pilot@example.org")["Cmd"] == "/bin/newer"
    assert store.claim(machine, "pilot@example.org") is None


def test_claim_lets_the_job_see_who_the_machine_is(store: Store) -> None:
    store.submit(
        [_job(Requirements={"expr": 'TARGET.AuthenticatedIdentity == "pilot@site"'})], FRONTEND
    )
    forged = _machine(AuthenticatedIdentity="pilot@site")
    assert store.claim(forged, "someone-else@site") is None
    assert store.claim(_machine(), "pilot@site") is not None


def test_a_machine_ad_needs_a_name_and_a_start_or_requirements(store: Store) -> None:
    with pytest.raises(ClassAdError, match="Name"):
        store.claim(classads.json_to_ad({"START": True}), FRONTEND)
    with pytest.raises(ClassAdError, match="START"):
        store.claim(classads.json_to_ad({"Name": "slot1"}), FRONTEND)


def test_concurrent_claimers_on_separate_connections_never_share_a_job(tmp_path: Path) -> None:
    Store(tmp_path / "pool.sqlite").submit([_job() for _ in range(40)], FRONTEND)
    results: list[list[str]] = []

    def claimer(name: str) -> None:
        own = Store(tmp_path / "pool.sqlite")  # like another server process on the same file
        got = []
        while (job := own.claim(_machine(name), FRONTEND)) is not None:
            got.append(f"{job['ClusterId']}.{job['ProcId']}")
        results.append(got)
        own.close()

    threads = [threading.Thread(target=claimer, args=(f"slot{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    claimed = [job_id for got in results for job_id in got]
    assert sorted(claimed) == sorted(f"1.{n}" for n in range(40))


def test_complete_records_exit_code_and_output_tail_for_the_claimer_only(store: Store) -> None:
    store.submit([_job()], FRONTEND)
    store.claim(_machine(), "pilot@site")
    with pytest.raises(ConflictError, match="claimer"):
        store.complete("1.0", 0, "", "intruder@site")
    done = store.complete("1.0", 7, "x" * 100_000, "pilot@site")
    assert done["JobStatus"] == JobStatus.COMPLETED
    assert done["ExitCode"] == 7
    assert len(done["GwmsOutputTail"]) == 64 * 1024
    with pytest.raises(ConflictError, match="not running"):
        store.complete("1.0", 0, "", "pilot@site")
    with pytest.raises(NotFoundError):
        store.complete("9.0", 0, "", "pilot@site")


def test_a_bad_constraint_is_refused_before_touching_the_queue(store: Store) -> None:
    store.submit([_job()], FRONTEND)
    with pytest.raises(ClassAdError, match="constraint"):
        store.remove_jobs("JobStatus ==")
    assert [j["JobStatus"] for j in store.query_jobs()] == [JobStatus.IDLE]


# -- tokens file ------------------------------------------------------------------------------


def test_add_token_stores_only_the_hash_in_a_private_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    token = add_token(tokens, FRONTEND)
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    assert token not in tokens.read_text()
    assert load_tokens(tokens) == {FRONTEND: hash_token(token)}


def test_token_auth_maps_tokens_to_identities_and_sees_new_ones(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    frontend = add_token(tokens, FRONTEND)
    auth = TokenAuth(tokens)
    assert auth.identify(frontend) == FRONTEND
    assert auth.identify(frontend + "x") is None
    assert auth.identify("") is None
    factory = add_token(tokens, "factory@example.org")
    assert auth.identify(factory) == "factory@example.org"


def test_reissuing_a_token_needs_replace_and_revokes_the_old_one(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    old = add_token(tokens, FRONTEND)
    with pytest.raises(ConfigError, match="--replace"):
        add_token(tokens, FRONTEND)
    new = add_token(tokens, FRONTEND, replace=True)
    auth = TokenAuth(tokens)
    assert auth.identify(old) is None
    assert auth.identify(new) == FRONTEND


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "mapping"),
        ("who@x: nothex\n", "sha256"),
        ("'bad id': " + "0" * 64, "identity"),
    ],
)
def test_a_broken_tokens_file_is_a_config_error_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_tokens(tokens)
    assert str(tokens) in str(info.value)
