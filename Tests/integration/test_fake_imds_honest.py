"""Proves the strict IMDSv2 fake honest against a real client: botocore 1.43's own IMDS code.

botocore's InstanceMetadataFetcher / InstanceMetadataProvider are what every boto3 process on EC2 runs.
If they get exactly the credentials the fake issued, through the token flow, and meet each of the fake's
faults the way botocore's source says they should (retry, fall back, give up, extend), then the fake
behaves like IMDS as far as the SDKs know it, and credd tested against it is tested against that.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import botocore.credentials
import botocore.session
import botocore.utils
import pytest

from support import SECRETS
from support.fake_imds import (
    ERROR_CODE_MESSAGE, IDENTITY_PATH, ROLE_LIST_PATH, TOKEN_HEADER, TOKEN_PATH, TTL_HEADER,
)

FAKE_SCRIPT = Path(__file__).parent / "support" / "fake_imds.py"


def fetcher(fake, attempts=1, timeout=1.0, **config):
    return botocore.utils.InstanceMetadataFetcher(
        timeout=timeout, num_attempts=attempts, base_url=fake.url, env={}, config=config)


class Fetched(dict):
    """What botocore returned; its repr (shown when an assert fails) hides the secret key and token."""

    def __repr__(self):
        return repr({k: ("<secret>" if k in ("secret_key", "token") else v) for k, v in self.items()})


def fetch(fake, attempts=1, timeout=1.0, **config) -> Fetched:
    return Fetched(fetcher(fake, attempts, timeout, **config).retrieve_iam_role_credentials())


def same_credentials(got: dict, creds) -> bool:
    """Equality only: a mismatch must not print either secret."""
    return (got.get("access_key") == creds.access_key_id and got.get("secret_key") == creds.secret_access_key
            and got.get("token") == creds.token and got.get("expiry_time") == creds.expiration_text)


def raw(fake, method, path, headers=None):
    """One request to the fake with urllib; returns (status, body)."""
    req = urllib.request.Request(fake.url + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def token(fake, ttl="21600"):
    status, body = raw(fake, "PUT", TOKEN_PATH, {TTL_HEADER: ttl})
    assert status == 200
    return body.decode()


# ---- botocore gets exactly what the fake issued --------------------------------------------------------

def test_botocore_fetcher_gets_the_issued_credentials_through_the_token_flow(fake_imds):
    got = fetch(fake_imds)

    assert same_credentials(got, fake_imds.credentials)
    assert got["role_name"] == "credd-fake-role"
    assert (fake_imds.token_puts, fake_imds.role_list_gets, fake_imds.credential_gets) == (1, 1, 1)
    gets = [e for e in fake_imds.request_log if e["method"] == "GET"]
    assert [e["token"] for e in gets] == ["valid", "valid"], "botocore sent its session token on every GET"
    put = fake_imds.request_log[0]
    assert (put["method"], put["ttl"], put["status"]) == ("PUT", "21600", 200)


@pytest.mark.parametrize("how", ["environment", "config file"])
def test_botocore_session_chain_finds_the_fake_as_its_imds(fake_imds, tmp_path, monkeypatch, how):
    """The whole default chain (as boto3.Session() runs it), pointed at the fake the documented ways."""
    config = tmp_path / "config"
    config.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
    if how == "environment":
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", fake_imds.url)
    else:
        config.write_text(f"[default]\nec2_metadata_service_endpoint = {fake_imds.url}\n")

    creds = botocore.session.Session().get_credentials()

    assert creds is not None and creds.method == "iam-role"
    frozen = creds.get_frozen_credentials()
    issued = fake_imds.credentials
    assert (frozen.access_key, frozen.secret_key == issued.secret_access_key, frozen.token == issued.token) == (
        issued.access_key_id, True, True)
    assert fake_imds.credential_gets == 1


def test_ipv6_endpoint_works_like_ipv4(make_fake_imds):
    if not socket.has_ipv6:
        pytest.skip("skipped: this Python has no IPv6")
    try:
        fake = make_fake_imds(host="::1")
    except OSError as e:
        pytest.skip(f"skipped: ::1 is not available here ({e})")
    assert fake.url.startswith("http://[::1]:")
    assert same_credentials(fetch(fake), fake.credentials)


def test_rotation_and_a_renamed_role_are_picked_up(fake_imds):
    f = fetcher(fake_imds)
    first = fake_imds.credentials
    assert same_credentials(Fetched(f.retrieve_iam_role_credentials()), first)

    second = fake_imds.rotate()
    assert second.access_key_id != first.access_key_id
    assert same_credentials(Fetched(f.retrieve_iam_role_credentials()), second)

    fake_imds.rename_role("web")
    got = Fetched(f.retrieve_iam_role_credentials())
    assert got["role_name"] == "web" and same_credentials(got, second)
    t = token(fake_imds)
    assert raw(fake_imds, "GET", ROLE_LIST_PATH + "credd-fake-role", {TOKEN_HEADER: t})[0] == 404


def test_botocore_extends_credentials_close_to_expiry_static_stability(fake_imds):
    """botocore's own static stability: a document expiring within 12-20 min is pushed out (PROTOCOLS §2).
    It also shows the fake's Expiration has exactly the shape botocore parses."""
    issued = fake_imds.issue(lifetime=120)
    got = fetch(fake_imds)
    assert got["access_key"] == issued.access_key_id
    extended = dt.datetime.strptime(got["expiry_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    ahead = (extended - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert 11 * 60 <= ahead <= 21 * 60, f"expected botocore to extend to 12-20 min ahead, got {ahead:.0f} s"


# ---- tokens: TTL, expiry, 401, X-Forwarded-For -------------------------------------------------------------

@pytest.mark.parametrize("ttl,status", [
    (None, 400), ("0", 400), ("21601", 400), ("-5", 400), ("abc", 400), ("", 400), ("1.5", 400),
    ("1", 200), ("21600", 200),
])
def test_token_ttl_header_is_checked(fake_imds, ttl, status):
    headers = {} if ttl is None else {TTL_HEADER: ttl}
    got, body = raw(fake_imds, "PUT", TOKEN_PATH, headers)
    assert got == status
    assert (len(body) > 20) == (status == 200)


def test_token_request_with_x_forwarded_for_is_refused(fake_imds):
    assert raw(fake_imds, "PUT", TOKEN_PATH, {TTL_HEADER: "60", "X-Forwarded-For": "10.0.0.1"})[0] == 403
    assert raw(fake_imds, "GET", TOKEN_PATH)[0] == 405


def test_token_expires_after_its_ttl_on_the_fake_clock(fake_imds):
    t = token(fake_imds, ttl="60")
    assert raw(fake_imds, "GET", ROLE_LIST_PATH, {TOKEN_HEADER: t})[0] == 200
    fake_imds.clock.advance(59)
    assert raw(fake_imds, "GET", ROLE_LIST_PATH, {TOKEN_HEADER: t})[0] == 200
    fake_imds.clock.advance(1)
    assert raw(fake_imds, "GET", ROLE_LIST_PATH, {TOKEN_HEADER: t})[0] == 401
    assert fake_imds.request_log[-1]["token"] == "expired"


def test_gets_without_a_valid_token_are_401_unless_v1_is_allowed(fake_imds):
    assert raw(fake_imds, "GET", ROLE_LIST_PATH)[0] == 401
    assert raw(fake_imds, "GET", ROLE_LIST_PATH, {TOKEN_HEADER: "AQAEAnot-a-token"})[0] == 401
    fake_imds.allow_v1(True)
    assert raw(fake_imds, "GET", ROLE_LIST_PATH) == (200, b"credd-fake-role")
    # A token that is present but wrong stays 401 even then.
    assert raw(fake_imds, "GET", ROLE_LIST_PATH, {TOKEN_HEADER: "AQAEAnot-a-token"})[0] == 401


def test_botocore_gives_up_after_its_attempts_on_401_and_recovers_with_a_new_token(fake_imds):
    """botocore does not renew a token inside one fetch: it repeats the GET with the same token, gives up,
    and the next fetch starts with a new token PUT."""
    f = fetcher(fake_imds, attempts=3)
    fake_imds.fail_tokens(True)
    assert Fetched(f.retrieve_iam_role_credentials()) == {}
    assert (fake_imds.token_puts, fake_imds.role_list_gets, fake_imds.credential_gets) == (1, 3, 0)
    assert all(e["status"] == 401 for e in fake_imds.request_log if e["method"] == "GET")

    fake_imds.fail_tokens(False)
    fake_imds.expire_all_tokens()
    assert same_credentials(Fetched(f.retrieve_iam_role_credentials()), fake_imds.credentials)
    assert fake_imds.token_puts == 2


def test_an_expired_token_gets_401_and_a_new_token_works(fake_imds):
    f = fetcher(fake_imds)
    old = token(fake_imds)
    fake_imds.clock.advance(21600)
    assert raw(fake_imds, "GET", ROLE_LIST_PATH, {TOKEN_HEADER: old})[0] == 401
    assert same_credentials(Fetched(f.retrieve_iam_role_credentials()), fake_imds.credentials)


@pytest.mark.parametrize("status", [403, 404, 405])
def test_botocore_falls_back_to_v1_when_the_token_put_is_refused(fake_imds, status):
    fake_imds.token_error(status)
    assert fetch(fake_imds) == {}, "strict fake: no IMDSv1"
    assert [e["token"] for e in fake_imds.request_log if e["method"] == "GET"] == ["none"]

    fake_imds.allow_v1(True)
    assert same_credentials(fetch(fake_imds), fake_imds.credentials)


def test_botocore_stops_on_a_400_token_answer(fake_imds):
    fake_imds.token_error(400)
    fake_imds.allow_v1(True)
    assert fetch(fake_imds) == {}
    assert fake_imds.role_list_gets == 0, "BadIMDSRequestError: no fallback to v1"


# ---- faults: garbage, slowness, outages ---------------------------------------------------------------------

@pytest.mark.parametrize("mode,gets", [
    ("invalid-json", 3), ("truncated-json", 3), ("empty", 3),  # botocore retries these
    ("error-code", 1), ("missing-fields", 1),  # a JSON answer without credentials: no retry, no credentials
])
def test_botocore_meets_a_spoiled_credentials_document(fake_imds, mode, gets):
    fake_imds.garbage(mode)
    assert fetch(fake_imds, attempts=3) == {}
    assert fake_imds.credential_gets == gets
    fake_imds.garbage(None)
    assert same_credentials(fetch(fake_imds), fake_imds.credentials)


def test_error_code_document_carries_the_message(fake_imds):
    fake_imds.garbage("error-code")
    t = token(fake_imds)
    status, body = raw(fake_imds, "GET", ROLE_LIST_PATH + "credd-fake-role", {TOKEN_HEADER: t})
    doc = json.loads(body)
    assert status == 200 and doc["Code"] != "Success" and doc["Message"] == ERROR_CODE_MESSAGE


def test_slow_answers_time_botocore_out(fake_imds):
    fake_imds.delay(0.6, paths=(ROLE_LIST_PATH,))
    assert fake_imds.added_latency == 0.6
    start = time.monotonic()
    assert fetch(fake_imds, attempts=2, timeout=0.25) == {}
    assert time.monotonic() - start < 3
    assert fake_imds.role_list_gets == 2 and fake_imds.credential_gets == 0

    fake_imds.delay(0.1)
    assert same_credentials(fetch(fake_imds, timeout=1), fake_imds.credentials)


@pytest.mark.parametrize("mode", ["refuse", "close", "hang"])
def test_outage_and_return(fake_imds, mode):
    fake_imds.outage(True, mode=mode)
    assert fake_imds.is_down
    start = time.monotonic()
    assert fetch(fake_imds, attempts=2, timeout=0.3) == {}
    assert time.monotonic() - start < 5
    if mode == "refuse":
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", fake_imds.port), timeout=1).close()
    else:
        assert fake_imds.dropped >= 1 or mode == "hang"

    fake_imds.outage(False)
    assert same_credentials(fetch(fake_imds), fake_imds.credentials)


def test_outage_cuts_open_keep_alive_connections(fake_imds):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", fake_imds.port, timeout=2)
    conn.request("PUT", TOKEN_PATH, headers={TTL_HEADER: "60"})
    assert conn.getresponse().read()
    fake_imds.outage(True)
    with pytest.raises((OSError, http.client.HTTPException)):
        conn.request("GET", ROLE_LIST_PATH)
        conn.getresponse().read()
    conn.close()


# ---- the rest of the service, the counters, and the log ------------------------------------------------

def test_identity_document_has_the_account_id(fake_imds):
    t = token(fake_imds)
    status, body = raw(fake_imds, "GET", IDENTITY_PATH, {TOKEN_HEADER: t})
    doc = json.loads(body)
    assert status == 200
    assert (doc["accountId"], doc["region"], doc["instanceId"]) == ("123456789012", "eu-west-1", "i-0123456789abcdef0")
    assert fake_imds.identity_gets == 1
    assert raw(fake_imds, "GET", IDENTITY_PATH)[0] == 401


def test_no_role_attached_is_404(fake_imds):
    fake_imds.rename_role(None)
    t = token(fake_imds)
    assert raw(fake_imds, "GET", ROLE_LIST_PATH, {TOKEN_HEADER: t})[0] == 404
    assert fetch(fake_imds) == {}


def test_request_log_and_counters_hold_no_secret(fake_imds):
    fetch(fake_imds)
    assert fake_imds.count("PUT", TOKEN_PATH) == 1
    assert SECRETS.find(json.dumps(fake_imds.request_log)) == []
    assert SECRETS.find(repr(fake_imds.credentials)) == []
    assert SECRETS.find(str(fake_imds.counts)) == []
    fake_imds.reset_counters()
    assert fake_imds.counts == {} and fake_imds.request_log == []


def test_every_secret_the_fake_issues_is_registered(fake_imds):
    t = token(fake_imds)
    c = fake_imds.credentials
    assert SECRETS.find(c.secret_access_key) and SECRETS.find(c.token) and SECRETS.find(t)
    assert SECRETS.find(c.secret_access_key.replace("/", "\\/"))  # as Foundation's JSON writes it


def test_standalone_fake_prints_its_url_and_serves(tmp_path):
    proc = subprocess.Popen([sys.executable, str(FAKE_SCRIPT), "--port", "0", "--role", "web", "--lifetime", "1h"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        f = botocore.utils.InstanceMetadataFetcher(timeout=2, num_attempts=1, base_url=url, env={})
        got = Fetched(f.retrieve_iam_role_credentials())
        SECRETS.register(got.get("secret_key"), "standalone fake's secret key")
        SECRETS.register(got.get("token"), "standalone fake's session token")
        assert got["role_name"] == "web" and got["access_key"].startswith("ASIA")
        expires = dt.datetime.strptime(got["expiry_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        assert 50 * 60 < (expires - dt.datetime.now(dt.timezone.utc)).total_seconds() <= 3600
        proc.send_signal(signal.SIGUSR2)  # rotate
        deadline = time.monotonic() + 5
        while Fetched(f.retrieve_iam_role_credentials())["access_key"] == got["access_key"]:
            assert time.monotonic() < deadline, "SIGUSR2 did not rotate the credentials"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        proc.stdout.close()
        proc.stderr.close()
