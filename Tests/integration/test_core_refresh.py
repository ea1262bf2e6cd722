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
    Watcher, client_env, concurrent_gets, credentials_answer, error_answer, matches_issued, observe, run_boto3_probe, sha256,
)

FAST_POLL = {"poll_interval": "1s", "timeout": "1s", "attempts": 2}
# How long credd may take to notice that IMDS is back: its failure backoff may have grown during the fault.
RECOVERY = 45


def serving(credd, issued) -> bool:
    return observe(credd).key == issued.access_key_id


def status_text(credd) -> str:
    return json.dumps(credd.status_json())


@pytest.fixture
def polling_credd(fake_imds, start_credd):
    """credd polling the fake every second, already serving the fake's first credentials."""
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
        time.sleep(4)  # four poll intervals, each failing
        got = run_boto3_probe(client_env(credd))
        assert (got.get("error"), got.get("access_key")) == (None, first.access_key_id)
        assert got["secret_sha256"] == sha256(first.secret_access_key)
        down_status = status_text(credd)

        second = fake_imds.rotate()
        fake_imds.outage(False)
        credd.wait_for(lambda: serving(credd, second), RECOVERY, "credd to pick up the rotated credentials by itself")

    assert watcher.statuses() == {200}, f"answers during the outage: {sorted(map(str, watcher.statuses()))}"
    assert watcher.expired_answers() == []
    assert {o.key for o in watcher.seen} <= {first.access_key_id, second.access_key_id}
    assert f"127.0.0.1:{fake_imds.port}" in down_status or "unreachable" in down_status.lower(), \
        "status says why refreshing fails"


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
        time.sleep(4)
    assert watcher.statuses() == {200} and {o.key for o in watcher.seen} == {first.access_key_id}
    assert watcher.expired_answers() == []
    total = sum(fake_imds.counts.values())
    assert total < 80, f"{total} IMDS requests in 4 s: retries are not bounded"
    if fault == "error-code":
        assert ERROR_CODE_MESSAGE in status_text(credd), "the document's Message is the error credd reports"

    fake_imds.delay(0)
    fake_imds.fail_tokens(False)
    fake_imds.rename_role("credd-fake-role")
    fake_imds.garbage(None)
    second = fake_imds.rotate()
    credd.wait_for(lambda: serving(credd, second), RECOVERY, "credd to recover after the fault")


# ---- near expiry: static stability, never an Expiration in the past ----------------------------------------

def _static_stability_scenario(fake_imds, start_credd, outage: bool):
    issued = fake_imds.issue(lifetime=10)
    credd = start_credd(imds_endpoint=fake_imds.url, imds=FAST_POLL)
    credd.wait_for(lambda: serving(credd, issued), 15, "credd to serve the short-lived credentials")
    with Watcher(credd) as watcher:
        if outage:
            fake_imds.outage(True)
        # Past the credentials' own expiry: IMDS is down, or still hands out the now expired document.
        time.sleep(max(0.0, issued.expiration - time.time()) + 4)
        reply = credd.get("/v1/credentials")
        after = status_text(credd)
        fake_imds.outage(False)
        fresh = fake_imds.rotate(lifetime=6 * 3600)
        credd.wait_for(lambda: serving(credd, fresh), RECOVERY, "credd to serve new credentials once IMDS has them")

    assert watcher.expired_answers() == [], "credd served an Expiration in the past"
    # credd's documented behaviour for the IMDS source (PROTOCOLS §2, issue 2): keep serving the last
    # credentials with an extended Expiration, and say so in status.
    answer = credentials_answer(reply)
    assert answer["AccessKeyId"] == issued.access_key_id
    served_expiry = observe(credd).expiration
    assert served_expiry and served_expiry > time.time() + 5 * 60, "fresh 6 h credentials are served as issued"
    low = after.lower()
    assert "static" in low or "extend" in low, "status says the expiry was extended (static stability)"
    return watcher


@pytest.mark.slow
def test_static_stability_when_imds_is_down_at_expiry(fake_imds, start_credd):
    watcher = _static_stability_scenario(fake_imds, start_credd, outage=True)
    assert watcher.statuses() == {200}


@pytest.mark.slow
def test_static_stability_when_imds_returns_expired_credentials(fake_imds, start_credd):
    watcher = _static_stability_scenario(fake_imds, start_credd, outage=False)
    assert watcher.statuses() == {200}


# ---- the IMDS session token and role discovery -------------------------------------------------------------

@pytest.mark.slow
def test_imds_token_is_reused_across_polls_and_renewed_on_401(polling_credd, fake_imds):
    credd = polling_credd
    credd.wait_for(lambda: fake_imds.credential_gets >= 4, 15, "four polls of the credentials document")
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


@pytest.mark.parametrize("token_status", [404, 405])
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
    # Each IMDS answer takes 0.4 s, so the requests arrive while the first fetch is still in flight.
    fake_imds.delay(0.4)
    credd = start_credd(imds_endpoint=fake_imds.url, imds={"timeout": "2s", "poll_interval": "10m"})
    results = concurrent_gets(credd, 1000)

    key = fake_imds.credentials.access_key_id
    failures = [r for r in results if r != (200, key)]
    assert not failures, f"{len(failures)} of 1000 requests failed, e.g. {sorted(set(map(str, failures)))[:5]}"
    assert fake_imds.credential_gets == 1
    assert fake_imds.token_puts == 1

