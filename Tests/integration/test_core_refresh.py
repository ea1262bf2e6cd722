"""Issue 2, refresh: outages, spoiled answers, static stability near expiry, recovery, the IMDS session
token's reuse and renewal, and fan-in (1000 requests at a cold start, one IMDS credentials fetch).

These run in real time against the real daemon with `imds.poll_interval: 1s`, so an outage "longer than
the poll interval" takes seconds, not minutes.
"""

from __future__ import annotations

import json
import time

import pytest

from support.fake_imds import ERROR_CODE_MESSAGE
from support.harness import (
    Watcher, client_env, concurrent_gets, credentials_answer, error_answer, matches_issued, observe,
    parse_expiration, run_boto3_probe, sha256,
)

FAST_POLL = {"poll_interval": "1s", "timeout": "1s", "attempts": 2}
# How long credd may take to notice that IMDS is back: its failure backoff may have grown during the fault.
RECOVERY = 45
# How long two failed refreshes may take: credd spaces refreshes (a floor of a few seconds), each attempt
# times out after 1 s, and it backs off after failures.
OUTAGE = 40


def serving(credd, issued) -> bool:
    return observe(credd).key == issued.access_key_id


def status_text(credd) -> str:
    return json.dumps(credd.status_json())


def set_status(credd, name: str = "default") -> dict:
    """One set's entry in `credd status --json` (secret-free by contract)."""
    sets = credd.status_json().get("sets", [])
    return next((s for s in sets if s.get("name") == name), {})


def failures(credd, name: str = "default") -> int:
    return int(set_status(credd, name).get("consecutiveFailures") or 0)


@pytest.fixture
def polling_credd(fake_imds, start_credd):
    """credd polling the fake every second (credd may space refreshes further apart: it has a floor), already
    serving the fake's first credentials."""
    credd = start_credd(imds_endpoint=fake_imds.url, imds=FAST_POLL)
    credd.wait_for(lambda: serving(credd, fake_imds.credentials), 15, "credd to serve the fake's credentials")
    return credd


# ---- outages and spoiled answers ---------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("mode", ["refuse", "close", "hang"])
def test_outage_longer_than_the_poll_interval_keeps_the_last_credentials_then_recovers(
        polling_credd, fake_imds, mode):
    credd, first = polling_credd, fake_imds.credentials
    with Watcher(credd) as watcher:
        fake_imds.outage(True, mode=mode)
        # Down for at least two refresh attempts, so longer than the poll interval whatever credd's spacing.
        credd.wait_for(lambda: failures(credd) >= 2, OUTAGE, "two failed refreshes during the outage")
        got = run_boto3_probe(client_env(credd))
        assert (got.get("error"), got.get("access_key")) == (None, first.access_key_id)
        assert got["secret_sha256"] == sha256(first.secret_access_key)
        down = set_status(credd)

        second = fake_imds.rotate()
        fake_imds.outage(False)
        credd.wait_for(lambda: serving(credd, second), RECOVERY, "credd to pick up the rotated credentials by itself")

    assert watcher.statuses() == {200}, f"answers during the outage: {sorted(map(str, watcher.statuses()))}"
    assert watcher.expired_answers() == []
    assert {o.key for o in watcher.seen} <= {first.access_key_id, second.access_key_id}
    assert down.get("state") == "failing", down.get("state")
    reason = down.get("lastError") or ""
    assert f"127.0.0.1:{fake_imds.port}" in reason, f"status says why refreshing fails: {reason}"
    if mode == "refuse":
        assert "IMDS unreachable at" in reason
    assert failures(credd) == 0 and set_status(credd).get("state") == "fresh"


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["error-code", "invalid-json", "truncated-json", "empty", "missing-fields",
                                   "slow", "tokens-401", "no-role"])
def test_spoiled_imds_answers_keep_the_last_credentials(polling_credd, fake_imds, fault):
    credd, first = polling_credd, fake_imds.credentials
    if fault == "slow":
        fake_imds.delay(1.5)  # above credd's 1 s timeout
    elif fault == "tokens-401":
        fake_imds.fail_tokens(True)
    elif fault == "no-role":
        fake_imds.rename_role(None)
    else:
        fake_imds.garbage(fault)
    fake_imds.reset_counters()

    with Watcher(credd) as watcher:
        credd.wait_for(lambda: failures(credd) >= 2, OUTAGE, f"two failed refreshes with IMDS answering {fault}")
        elapsed = time.monotonic() - watcher.started
        reason = set_status(credd).get("lastError") or ""
    assert watcher.statuses() == {200} and {o.key for o in watcher.seen} == {first.access_key_id}
    assert watcher.expired_answers() == []
    total = sum(fake_imds.counts.values())
    assert total < 20 * max(elapsed, 1), f"{total} IMDS requests in {elapsed:.0f} s: retries are not bounded"
    assert reason, "status names the last error"
    if fault == "error-code":
        assert ERROR_CODE_MESSAGE in reason, f"the document's Message is the error credd reports: {reason}"

    fake_imds.delay(0)
    fake_imds.fail_tokens(False)
    fake_imds.rename_role("credd-fake-role")
    fake_imds.garbage(None)
    second = fake_imds.rotate()
    credd.wait_for(lambda: serving(credd, second), RECOVERY, "credd to recover after the fault")


# ---- near expiry: static stability, never an Expiration in the past ----------------------------------------
#
# credd's documented behaviour for the IMDS source (PROTOCOLS §2, issue 2): when IMDS cannot refresh, or
# hands out credentials that are already expired, credd keeps serving the last credentials with an extended
# Expiration (as the SDKs do), says so in status, and never serves an Expiration in the past.

SHORT_LIFE = 150  # seconds: servable now (credd refuses credentials about to expire), near expiry all the same


@pytest.mark.slow
def test_static_stability_when_imds_is_down_near_expiry(fake_imds, start_credd):
    issued = fake_imds.issue(lifetime=SHORT_LIFE)
    credd = start_credd(imds_endpoint=fake_imds.url, imds=FAST_POLL)
    credd.wait_for(lambda: serving(credd, issued), 15, "credd to serve the short-lived credentials")
    with Watcher(credd) as watcher:
        fake_imds.outage(True)
        credd.wait_for(lambda: failures(credd) >= 1, OUTAGE, "a failed refresh")
        answer = credentials_answer(credd.get("/v1/credentials"))
        during = set_status(credd)
        fake_imds.outage(False)
        fresh = fake_imds.rotate(lifetime=6 * 3600)
        credd.wait_for(lambda: serving(credd, fresh), RECOVERY, "credd to serve new credentials once IMDS has them")

    _assert_extended(answer, issued, during)
    assert watcher.statuses() == {200} and watcher.expired_answers() == []
    assert set_status(credd).get("state") == "fresh"
    assert observe(credd).expiration == pytest.approx(fresh.expiration, abs=1), "new credentials served as issued"


@pytest.mark.slow
def test_static_stability_when_imds_returns_expired_credentials(fake_imds, start_credd):
    issued = fake_imds.issue(lifetime=SHORT_LIFE)
    credd = start_credd(imds_endpoint=fake_imds.url, imds=FAST_POLL)
    credd.wait_for(lambda: serving(credd, issued), 15, "credd to serve the short-lived credentials")
    with Watcher(credd) as watcher:
        # IMDS keeps answering 200, but with a document that expired a minute ago.
        fake_imds.set_credentials(issued.access_key_id, issued.secret_access_key, issued.token, time.time() - 60)
        fake_imds.reset_counters()
        credd.wait_for(lambda: fake_imds.credential_gets >= 2, OUTAGE, "two refreshes that got expired credentials")
        answer = credentials_answer(credd.get("/v1/credentials"))
        during = set_status(credd)
        fresh = fake_imds.rotate(lifetime=6 * 3600)
        credd.wait_for(lambda: serving(credd, fresh), RECOVERY, "credd to serve new credentials once IMDS has them")

    assert watcher.expired_answers() == [], "credd served an Expiration in the past"
    assert watcher.statuses() == {200}, f"answers: {sorted(map(str, watcher.statuses()))}"
    _assert_extended(answer, issued, during)


def _assert_extended(answer, issued, status: dict) -> None:
    served = parse_expiration(answer["Expiration"]).timestamp()
    assert answer["AccessKeyId"] == issued.access_key_id, "the last credentials are kept"
    assert served > issued.expiration + 5 * 60, "served Expiration pushed out (SDKs push by 10-20 min)"
    assert status.get("state") == "static-stability", f"status says so: state={status.get('state')}"
    assert parse_expiration(status["servedExpiration"]).timestamp() == pytest.approx(served, abs=1)
    assert parse_expiration(status["expiration"]).timestamp() == pytest.approx(issued.expiration, abs=1)


# ---- the IMDS session token and role discovery -------------------------------------------------------------

@pytest.mark.slow
def test_imds_token_is_reused_across_polls_and_renewed_on_401(polling_credd, fake_imds):
    credd = polling_credd
    credd.wait_for(lambda: fake_imds.credential_gets >= 3, OUTAGE, "three polls of the credentials document")
    assert fake_imds.token_puts == 1, "one session token (TTL 21600) serves every poll"
    put = next(e for e in fake_imds.request_log if e["method"] == "PUT")
    assert put["ttl"] == "21600"

    fake_imds.expire_all_tokens()
    fake_imds.reset_counters()
    second = fake_imds.rotate()
    credd.wait_for(lambda: serving(credd, second), 15, "credd to renew its token and fetch again")
    log = fake_imds.request_log
    assert fake_imds.token_puts == 1, "exactly one new token after the old one expired"
    refused = next(i for i, e in enumerate(log) if e["status"] == 401)
    renewed = next(i for i, e in enumerate(log) if e["method"] == "PUT" and e["status"] == 200)
    fetched = max(i for i, e in enumerate(log) if e["method"] == "GET" and e["status"] == 200)
    assert refused < renewed < fetched, "401, then a new token, then the document"


def test_configured_role_needs_no_discovery(fake_imds, start_credd):
    credd = start_credd(imds_endpoint=fake_imds.url, imds={"role": "credd-fake-role"}).wait_serving()
    assert matches_issued(credentials_answer(credd.get("/v1/credentials")), fake_imds.credentials)
    assert fake_imds.role_list_gets == 0


def test_configured_role_that_does_not_exist_is_503_naming_it(fake_imds, start_credd):
    credd = start_credd(imds_endpoint=fake_imds.url, imds={"role": "not-attached", "attempts": 1})
    reply = credd.wait_for(lambda: (r := credd.get("/v1/credentials")).status != 200 and r, 15, "an answer")
    assert reply.status == 503
    assert "not-attached" in error_answer(reply)["message"]


@pytest.mark.parametrize("token_status", [403, 404, 405])
def test_imds_v1_only_when_allowed(fake_imds, start_credd, token_status):
    fake_imds.token_error(token_status)
    fake_imds.allow_v1(True)
    strict = start_credd(name="strict", imds_endpoint=fake_imds.url, imds={"attempts": 1})
    strict.wait_for(lambda: fake_imds.token_puts >= 1, 15, "credd to ask for an IMDS token")
    time.sleep(1)
    reply = strict.get("/v1/credentials")
    assert reply.status == 503
    error_answer(reply)
    assert all(e["token"] != "none" for e in fake_imds.request_log if e["method"] == "GET"), \
        "credd fell back to IMDSv1 without imds.allow_v1"

    lenient = start_credd(name="lenient", imds_endpoint=fake_imds.url, imds={"allow_v1": True}).wait_serving()
    assert matches_issued(credentials_answer(lenient.get("/v1/credentials")), fake_imds.credentials)


def test_ipv6_endpoint(make_fake_imds, start_credd):
    try:
        fake = make_fake_imds(host="::1")
    except OSError as e:
        pytest.skip(f"skipped: ::1 is not available here ({e})")
    credd = start_credd(imds_endpoint=fake.url, imds={"endpoint_mode": "ipv6"}).wait_serving()
    assert matches_issued(credentials_answer(credd.get("/v1/credentials")), fake.credentials)


# ---- fan-in ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_1000_concurrent_requests_at_a_cold_start_cause_one_credentials_fetch(fake_imds, start_credd):
    # Each IMDS answer takes 0.4 s, so the requests arrive while the first fetch is still in flight. They may
    # wait for it or be told to come back (503 with Retry-After); either way IMDS sees one fetch.
    fake_imds.delay(0.4)
    credd = start_credd(imds_endpoint=fake_imds.url, imds={"timeout": "2s", "poll_interval": "10m"})
    key = fake_imds.credentials.access_key_id

    first_wave = concurrent_gets(credd, 1000)
    unexpected = [r for r in first_wave if r not in ((200, key), (503, None))]
    assert not unexpected, f"{len(unexpected)} of 1000: {sorted(set(map(str, unexpected)))[:5]}"
    credd.wait_serving()
    second_wave = concurrent_gets(credd, 1000)
    failed = [r for r in second_wave if r != (200, key)]
    assert not failed, f"{len(failed)} of 1000 failed once credentials were held: {sorted(set(map(str, failed)))[:5]}"

    assert fake_imds.credential_gets == 1, f"{fake_imds.credential_gets} credentials fetches for 2000 requests"
    assert fake_imds.token_puts == 1

