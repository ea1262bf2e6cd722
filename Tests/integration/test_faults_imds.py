"""Issue 7, faults upstream: IMDS down at start, down for a long time while serving, hanging, spoiled answers,
401 on every token and a renamed role. Each test names what a client sees. Time is compressed with short
timeouts, short credential lifetimes and the fake's clock; nothing waits for real minutes.
"""

from __future__ import annotations

import json
import statistics
import threading
import time

import pytest

from support.faults_net import one_answer, record_bodies, targets_of
from support.harness import Watcher, error_answer, observe, parse_expiration

FAST = {"timeout": "300ms", "attempts": 1, "poll_interval": "1s"}


def set_status(credd, name: str = "default") -> dict:
    return next((s for s in credd.status_json().get("sets", []) if s.get("name") == name), {})


def token_put_times(fake) -> list[float]:
    return [e["time"] for e in fake.request_log if e["method"] == "PUT" and e["path"] == "/latest/api/token"]


# ---- IMDS down at start --------------------------------------------------------------------------------

def test_imds_down_at_start_is_503_with_the_reason_then_recovers_by_itself_with_growing_spacing(
        fake_imds, start_credd, tmp_path):
    record_bodies(tmp_path / "raw-answers.log")
    fake_imds.outage(True, mode="close")  # connections accepted and cut: every attempt is counted
    credd = start_credd(imds_endpoint=fake_imds.url, imds=FAST)

    reply = credd.wait_for(lambda: (r := credd.get("/v1/credentials")).status == 503 and b"IMDSUnreachable" in r.body and r,
                           10, "a 503 naming IMDS")
    answer = error_answer(reply)
    assert answer["code"] == "IMDSUnreachable"
    assert "IMDS unreachable at" in answer["message"] and fake_imds.url.split("//")[1] in answer["message"]
    assert reply.headers.get("retry-after") == "1"
    for t in targets_of(credd):  # the same answer on the Unix socket
        a, _ = one_answer(t, t.request())
        assert (a.status, a.code) == (503, "IMDSUnreachable")

    # Let it fail a few times: attempts at about 0, 1, 3, 7 s (1 s doubling, ≤ 10 % jitter earlier).
    time.sleep(8.5)
    times = token_put_times(fake_imds)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(gaps) >= 3, f"attempts at {times}"
    for previous, gap in zip(gaps, gaps[1:]):
        assert gap >= 1.6 * previous, f"retry spacing does not grow: {[round(g, 2) for g in gaps]}"
    assert max(gaps) <= 60 + 1, gaps
    status = set_status(credd)
    assert status["state"] == "failing" and status["consecutiveFailures"] == len(times)
    next_in = parse_expiration(status["nextRefresh"]).timestamp() - time.time()
    assert 0 < next_in <= 60, f"the next attempt is {next_in:.0f} s away (capped at 60 s)"

    fake_imds.outage(False)
    credd.wait_for(lambda: credd.get("/v1/credentials").status == 200, 20,
                   "credd to recover by itself when IMDS comes back")
    assert set_status(credd)["state"] == "fresh"


# ---- IMDS down for hours while serving (static stability) -------------------------------------------------

@pytest.mark.slow
def test_imds_down_long_past_the_expiry_keeps_serving_with_an_extended_expiry(fake_imds, start_credd):
    """Credentials that expire 75 s after issue (the fake's clock runs 6 h behind: they were issued long ago);
    IMDS then goes away for good. Clients keep getting 200 with an Expiration always in the future and past the
    real one, the status says static stability, IMDS is not hammered; when it returns, fresh credentials."""
    fake_imds.clock.advance(-6 * 3600)
    fake_imds.issue(lifetime=6 * 3600 + 75)
    issued = fake_imds.credentials
    credd = start_credd(imds_endpoint=fake_imds.url, imds=FAST)
    credd.wait_for(lambda: observe(credd).key == issued.access_key_id, 10, "credd to serve the old credentials")

    fake_imds.outage(True, mode="refuse")
    with Watcher(credd, interval=0.2) as watch:
        time.sleep(12)
    assert {o.status for o in watch.seen} == {200}, sorted({str(o.status) for o in watch.seen})
    assert watch.expired_answers() == []
    assert max(o.expiration for o in watch.seen) > issued.expiration + 15 * 60, "the served expiry is extended"
    status = set_status(credd)
    assert status["state"] == "static-stability"
    assert status["lastErrorCode"] == "IMDSUnreachable"
    assert status["consecutiveFailures"] <= 6, "backoff: a handful of attempts in 12 s, not a loop"

    # The fake's clock jumps 6 h ahead (its tokens, issued on the old clock, are now expired: IMDS answers
    # 401, as after an IMDS restart) and it comes back with fresh credentials.

    fake_imds.clock.advance(6 * 3600)
    fresh = fake_imds.issue(lifetime=6 * 3600)
    fake_imds.outage(False)
    credd.wait_for(lambda: observe(credd).key == fresh.access_key_id, 30, "credd to pick up the fresh credentials")
    assert set_status(credd)["state"] == "fresh"


# ---- IMDS hanging ----------------------------------------------------------------------------------------

def _latencies(credd, seconds: float, threads: int = 4) -> list[tuple[float, object]]:
    out: list = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(via):
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                status = credd.get("/v1/credentials", via=via, timeout=5).status
            except OSError as e:
                status = type(e).__name__
            with lock:
                out.append((time.perf_counter() - t, status))

    workers = [threading.Thread(target=run, args=("tcp" if i % 2 else "unix",)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return out


def test_imds_hanging_while_serving_never_makes_a_client_wait(fake_imds, start_credd):
    credd = start_credd(imds_endpoint=fake_imds.url, imds={"timeout": "1s", "attempts": 2, "poll_interval": "1s"})
    credd.wait_serving()
    fake_imds.outage(True, mode="hang")
    asked = sum(fake_imds.counts.values())
    try:
        seen = _latencies(credd, 7)
        went = sum(fake_imds.counts.values()) - asked
    finally:
        fake_imds.outage(False)
    assert went >= 1, "credd did go to the hanging IMDS meanwhile (it polls at least every 5 s)"
    statuses = {s for _, s in seen}
    assert statuses == {200}, statuses
    worst = max(t for t, _ in seen)
    assert worst < 0.100, f"a client waited {worst * 1000:.0f} ms while IMDS hung (p50 {statistics.median(t for t, _ in seen) * 1000:.1f} ms, {len(seen)} requests)"


def test_imds_hanging_at_start_answers_503_within_100_ms(fake_imds, start_credd):
    """While the first fetch hangs, each request waits at most server.cold_start_wait (90 ms) for it, then 503.
    The client's own overhead on this shared 2-core machine is measured alongside (a 404 on the same daemon,
    answered at once) and allowed on top."""
    fake_imds.outage(True, mode="hang")
    try:
        credd = start_credd(imds_endpoint=fake_imds.url, imds={"timeout": "3s", "attempts": 1})
        seen, baseline = [], []
        for _ in range(12):
            for path, into in (("/v1/credentials", seen), ("/v1/credentials/nope", baseline)):
                t = time.perf_counter()
                status = credd.get(path, via="unix").status
                into.append((time.perf_counter() - t, status))
    finally:
        fake_imds.outage(False)
    assert {s for _, s in seen} == {503} and {s for _, s in baseline} == {404}
    overhead = max(t for t, _ in baseline)
    worst = max(t for t, _ in seen)
    assert statistics.median(t for t, _ in seen) < 0.100
    assert worst < 0.100 + overhead, f"a client waited {worst * 1000:.0f} ms (client overhead {overhead * 1000:.0f} ms)"
    reply = credd.get("/v1/credentials")
    assert error_answer(reply)["code"] in ("CredentialsUnavailable", "IMDSUnreachable")


# ---- spoiled answers at start ------------------------------------------------------------------------

@pytest.mark.parametrize("mode, code, words", [
    ("invalid-json", "IMDSBadResponse", "not valid JSON"),
    ("truncated-json", "IMDSBadResponse", "not valid JSON"),
    ("empty", "IMDSBadResponse", "not valid JSON"),
    ("missing-fields", "IMDSBadResponse", "without SecretAccessKey, Token, Expiration"),
    ("error-code", "IMDSCredentialsError", "AssumeRoleUnauthorizedAccess"),
])
def test_spoiled_credentials_document_at_start_is_503_saying_what_is_wrong_then_recovers(
        fake_imds, start_credd, mode, code, words):
    fake_imds.garbage(mode)
    credd = start_credd(imds_endpoint=fake_imds.url, imds=FAST)
    reply = credd.wait_for(lambda: (r := credd.get("/v1/credentials")).status == 503 and code.encode() in r.body and r,
                           10, f"a 503 {code}")
    message = error_answer(reply)["message"]
    assert words in message, message
    assert code in json.dumps(credd.status_json())
    fake_imds.garbage(None)
    credd.wait_for(lambda: observe(credd).key == fake_imds.credentials.access_key_id, 20, "recovery")


# ---- 401 on every token -----------------------------------------------------------------------------------

def test_401_on_every_token_is_503_and_token_requests_stay_bounded(fake_imds, start_credd):
    fake_imds.fail_tokens(True)
    credd = start_credd(imds_endpoint=fake_imds.url, imds={"timeout": "300ms", "attempts": 3})
    reply = credd.wait_for(lambda: (r := credd.get("/v1/credentials")).status == 503 and b"IMDSUnauthorized" in r.body and r,
                           10, "a 503 IMDSUnauthorized")
    assert "rejected the session token (401)" in error_answer(reply)["message"]
    puts_before = fake_imds.token_puts
    time.sleep(5)
    puts = fake_imds.token_puts - puts_before
    assert puts <= 3 * 4, f"{puts} token PUTs in 5 s: credd renews the token once per 401, with backoff"
    fake_imds.fail_tokens(False)
    credd.wait_for(lambda: observe(credd).key == fake_imds.credentials.access_key_id, 30, "recovery")


def test_401_on_every_token_while_serving_keeps_the_last_credentials(fake_imds, start_credd):
    credd = start_credd(imds_endpoint=fake_imds.url, imds=FAST)
    credd.wait_serving()
    key = observe(credd).key
    fake_imds.fail_tokens(True)
    with Watcher(credd, interval=0.2) as watch:
        credd.wait_for(lambda: set_status(credd).get("lastErrorCode") == "IMDSUnauthorized", 15,
                       "a refresh to meet the 401s")
    assert {o.status for o in watch.seen} == {200} and {o.key for o in watch.seen} == {key}


# ---- the role renamed ------------------------------------------------------------------------------------

def test_role_renamed_while_serving_is_followed_without_a_client_noticing(fake_imds, start_credd):
    credd = start_credd(imds_endpoint=fake_imds.url, imds=FAST)
    credd.wait_serving()
    fake_imds.rename_role("credd-renamed-role")
    renamed = fake_imds.rotate()
    with Watcher(credd, interval=0.2) as watch:
        credd.wait_for(lambda: observe(credd).key == renamed.access_key_id, 20, "credd to find the renamed role")
    assert {o.status for o in watch.seen} == {200}, "the old credentials were served until the new ones came"
    assert fake_imds.role_list_gets >= 2, "the role was discovered again"


def test_role_removed_while_serving_keeps_the_last_credentials_and_says_so(fake_imds, start_credd):
    credd = start_credd(imds_endpoint=fake_imds.url, imds=FAST)
    credd.wait_serving()
    fake_imds.rename_role(None)
    credd.wait_for(lambda: set_status(credd).get("lastErrorCode") in ("IMDSRoleNotFound", "IMDSNoRole"), 15,
                   "status to name the missing role")
    assert credd.get("/v1/credentials").status == 200
