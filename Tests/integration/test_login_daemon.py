"""Issue 4 against the real daemon: a `source: login` set served from the `aws login` cache and refreshed
through the strict fake Sign-In (which verifies every DPoP proof credd sends with `cryptography`).

Time is driven by short credential lifetimes, not by waiting: the fake issues credentials that last
11 minutes and a few seconds, so credd (which refreshes under 11 minutes) refreshes every few seconds,
while each credential is still a valid ≤ 15-minute Sign-In credential.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support import redact
from support.fake_signin import FakeSignIn, write_cache_file
from support.harness import CreddStartError, client_env, credentials_answer, error_answer

LOGIN_REFRESH_BEFORE = 11 * 60


# ---- helpers -------------------------------------------------------------------------------------------

def start_login_credd(start_credd, tmp_path, fake, *, name="credd", profile="default", set_config=None,
                      env=None, write=True, tamper=None, **login_kwargs):
    """Write an `aws login` into the daemon's HOME, optionally spoil it (`tamper(fixture)`), start credd
    with one set `default` of `source: login`, and return (credd, fixture)."""
    home = tmp_path / name / "home"
    home.mkdir(parents=True, exist_ok=True)
    fixture = fake.write_login(str(home), profile=profile, **login_kwargs) if write else None
    if tamper is not None:
        tamper(fixture)
    config = {"source": "login", "profile": profile, "endpoint": fake.url}
    config.update(set_config or {})
    config = {k: v for k, v in config.items() if v is not None}
    try:
        credd = start_credd(name=name, credentials={"default": config}, env=env)
    except CreddStartError as e:
        if "not available in this build" in str(e):
            pytest.skip("skipped: this credd build does not wire `source: login` yet (SourceFactory refuses it)")
        raise
    return credd, fixture


def served(credd):
    """The AccessKeyId credd serves now, or None."""
    reply = credd.get("/v1/credentials")
    return json.loads(reply.body).get("AccessKeyId") if reply.status == 200 else None


def status_text(credd) -> str:
    return json.dumps(credd.status_json())


def file_bytes(path) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


@pytest.fixture
def signin():
    with FakeSignIn() as fake:
        yield fake


# ---- serving and refreshing ------------------------------------------------------------------------------

def test_credd_serves_the_login_credentials_and_refreshes_them_when_the_cache_changes(
        start_credd, tmp_path, signin):
    signin.expires_in = LOGIN_REFRESH_BEFORE + 6
    credd, fixture = start_login_credd(start_credd, tmp_path, signin, expires_at=time.time() + 900)
    credd.wait_for(lambda: served(credd), 15, "credd to serve the cache's credentials")
    first = credentials_answer(credd.get("/v1/credentials"))
    assert first["AccessKeyId"] == fixture.issued.access_key_id
    assert first["AccountId"] == "123456789012"
    assert signin.token_requests == 0, "15 minutes left: credd reads the file and does not call Sign-In"

    # 15 min left → refresh at 11 min: credd calls Sign-In about 4 minutes later... which a test cannot wait
    # for, so make the file's credentials look older (as the wall clock would) and let the watcher see it.
    doc = fixture.read_cache()
    doc["accessToken"]["expiresAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
    write_cache_file(fixture.cache_file, doc)

    credd.wait_for(lambda: signin.refreshes >= 1 and served(credd) == signin.issued[-1].access_key_id, 30,
                   "credd to refresh through Sign-In and serve the new credentials")
    assert signin.rejections == {}, signin.stats()
    assert signin.refreshes_by_client.get("credd", 0) >= 1, signin.stats()
    cache = fixture.read_cache()
    assert cache["refreshToken"] == signin.newest_refresh_token(fixture.login_session)
    assert cache["accessToken"]["accountId"] == "123456789012"
    for key in ("idToken", "tokenType", "dpopKey", "clientId"):
        assert cache[key] == doc[key], f"{key} kept"
    assert (os.stat(fixture.cache_file).st_mode & 0o777) == 0o600
    assert len(Path(fixture.cache_file).read_text().splitlines()) == 1


BOTO3_LOOP = textwrap.dedent(r"""
    import hashlib, json, sys, time
    import boto3
    session = boto3.Session()
    creds = session.get_credentials()
    seen = []
    end = time.time() + float(sys.argv[1])
    while time.time() < end:
        try:
            f = creds.get_frozen_credentials()
            seen.append({"at": time.time(), "key": f.access_key,
                         "secret_sha256": hashlib.sha256(f.secret_key.encode()).hexdigest(),
                         "token_sha256": hashlib.sha256(f.token.encode()).hexdigest(),
                         "method": creds.method})
        except Exception as e:
            seen.append({"at": time.time(), "error": type(e).__name__})
        time.sleep(0.5)
    print(json.dumps(seen))
""")


def test_a_boto3_process_keeps_working_across_several_refreshes(start_credd, tmp_path, signin):
    # Every credential lasts 11 min + 6 s: credd refreshes every ~6 s; a boto3 process that lives through
    # several of them (it cannot wait 15 minutes per refresh, so the lifetimes are short instead).
    signin.expires_in = LOGIN_REFRESH_BEFORE + 6
    credd, fixture = start_login_credd(start_credd, tmp_path, signin)
    credd.wait_for(lambda: served(credd), 15, "credd to serve")
    proc = subprocess.run([sys.executable, "-c", BOTO3_LOOP, "25"], env=client_env(credd), capture_output=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, redact(proc.stderr)[-2000:]
    seen = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    errors = [s for s in seen if "error" in s]
    assert errors == [], f"boto3 failed {len(errors)} times: {sorted({e['error'] for e in errors})}"
    keys = []
    for s in seen:
        issued = signin.issued_for(s["key"])
        assert issued is not None, "boto3 got a key the fake never issued"
        assert s["secret_sha256"] == hashlib.sha256(issued.secret_access_key.encode()).hexdigest()
        assert s["token_sha256"] == hashlib.sha256(issued.session_token.encode()).hexdigest()
        assert issued.expires_at > s["at"], "boto3 was handed expired credentials"
        if not keys or keys[-1] != s["key"]:
            keys.append(s["key"])
    assert len(set(keys)) >= 3, f"boto3 saw {len(set(keys))} credential generations in 25 s (expected ≥ 3)"
    assert signin.rejections == {}, signin.stats()


def test_throttling_and_server_errors_are_retried_with_fresh_proofs(start_credd, tmp_path, signin):
    signin.fail_next("429")
    signin.fail_next("500")
    credd, fixture = start_login_credd(start_credd, tmp_path, signin, expires_at=time.time() - 60)
    credd.wait_for(lambda: served(credd) == signin.issued[-1].access_key_id != fixture.issued.access_key_id,
                   30, "credd to get through the 429 and the 500")
    assert signin.failures_injected == {"429": 1, "500": 1}
    assert signin.rejections == {}, "no proof was replayed on retry"


# ---- login required -------------------------------------------------------------------------------------

@pytest.mark.parametrize("reason, code", [
    ("TOKEN_EXPIRED", "LoginRequired"),
    ("USER_CREDENTIALS_CHANGED", "LoginRequired"),
    ("INSUFFICIENT_PERMISSIONS", "LoginInsufficientPermissions"),
])
def test_a_refused_session_answers_503_says_what_to_run_does_not_loop_and_a_new_login_clears_it(
        start_credd, tmp_path, signin, reason, code):
    def revoke(fixture):
        signin.revoke_session(fixture.login_session, reason)

    credd, fixture = start_login_credd(start_credd, tmp_path, signin, profile="dev",
                                       expires_at=time.time() - 60, tamper=revoke)
    before = file_bytes(fixture.cache_file)

    def refused():
        reply = credd.get("/v1/credentials")
        return reply.status == 503 and error_answer(reply)

    answer = credd.wait_for(refused, 20, "credd to answer 503 for the refused session")
    assert answer["code"] == code
    assert "aws login --profile dev" in answer["message"]
    if code == "LoginRequired":
        assert "login required: run `aws login --profile dev`" in answer["message"], answer["message"]
    status = status_text(credd)
    assert code in status and "aws login --profile dev" in status
    assert file_bytes(fixture.cache_file) == before, "nothing overwritten"

    requests = signin.token_requests
    time.sleep(6)
    assert signin.token_requests - requests <= 1, "credd retries a refused session in a loop"
    mentions = sum(1 for line in credd.logs().splitlines() if "aws login --profile dev" in line)
    assert 1 <= mentions <= 2, f"the refusal is logged {mentions} times (expected once)"

    # `aws login --profile dev` again: same identity, new key and refresh token; the watcher notices.
    again = signin.write_login(str(credd.home), profile="dev", login_session=fixture.login_session)
    credd.wait_for(lambda: served(credd) == again.issued.access_key_id, 10,
                   "credd to serve the new login's credentials (inotify on the cache)")
    assert code not in status_text(credd)


# ---- bad input ------------------------------------------------------------------------------------------

def _p384_pem() -> str:
    key = ec.generate_private_key(ec.SECP384R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def _rewrite(fixture, change):
    doc = fixture.read_cache()
    change(doc)
    Path(fixture.cache_file).write_text(json.dumps(doc))


BAD_INPUTS = {
    "missing": (lambda f: os.unlink(f.cache_file), "LoginRequired", ["no aws login cache file"]),
    "empty": (lambda f: Path(f.cache_file).write_bytes(b""), "LoginCacheInvalid", ["empty"]),
    "corrupt": (lambda f: Path(f.cache_file).write_bytes(b"\x00garbage{"), "LoginCacheInvalid", ["not valid JSON"]),
    "half-written": (lambda f: Path(f.cache_file).write_bytes(Path(f.cache_file).read_bytes()[:200]),
                     "LoginCacheInvalid", ["not valid JSON"]),
    "wrong key type": (lambda f: _rewrite(f, lambda d: d.update(dpopKey=_p384_pem())), "LoginCacheInvalid",
                       ["dpopKey", "P-256"]),
    "missing refreshToken": (lambda f: _rewrite(f, lambda d: d.pop("refreshToken")), "LoginCacheInvalid",
                             ["refreshToken is missing"]),
    "missing expiresAt": (lambda f: _rewrite(f, lambda d: d["accessToken"].pop("expiresAt")), "LoginCacheInvalid",
                          ["accessToken.expiresAt is missing"]),
    "unreadable (a directory)": (lambda f: (os.unlink(f.cache_file), os.mkdir(f.cache_file)), "LoginCacheUnreadable",
                                 ["cannot be read"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_cache_input_gives_503_a_clear_status_and_nothing_overwritten(start_credd, tmp_path, signin, case):
    tamper, code, fragments = BAD_INPUTS[case]
    credd, fixture = start_login_credd(start_credd, tmp_path, signin, tamper=tamper)
    before = file_bytes(fixture.cache_file)

    # While the first read is still running credd answers 503 CredentialsUnavailable ("fetching"): wait for the verdict.
    reply = credd.wait_for(lambda: (r := credd.get("/v1/credentials")).status == 503
                           and error_answer(r)["code"] != "CredentialsUnavailable" and r, 20,
                           "credd to answer 503 for the bad cache file")
    answer = error_answer(reply)
    assert answer["code"] == code, answer
    assert fixture.cache_file in answer["message"], answer
    for fragment in fragments:
        assert fragment in answer["message"], answer
    assert code in status_text(credd)
    time.sleep(1)
    assert file_bytes(fixture.cache_file) == before, "a bad cache file was overwritten"
    assert signin.token_requests == 0
    leftovers = [n for n in os.listdir(fixture.cache_dir) if n.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.skipif(os.geteuid() == 0, reason="skipped: running as root, which reads any directory whatever its mode")
def test_an_unreadable_cache_directory_gives_503_naming_the_access_to_give(start_credd, tmp_path, signin):
    credd, fixture = start_login_credd(start_credd, tmp_path, signin,
                                       tamper=lambda f: os.chmod(f.cache_dir, 0o000))
    try:
        reply = credd.wait_for(lambda: (r := credd.get("/v1/credentials")).status == 503 and r, 20, "a 503")
        answer = error_answer(reply)
        assert answer["code"] == "LoginCacheUnreadable" and "Permission denied" in answer["message"]
    finally:
        os.chmod(fixture.cache_dir, 0o700)


def test_the_sign_in_endpoint_from_the_environment_is_used_when_the_config_names_none(
        start_credd, tmp_path, signin):
    credd, fixture = start_login_credd(start_credd, tmp_path, signin, set_config={"endpoint": None},
                                       env={"AWS_ENDPOINT_URL_SIGNIN": signin.url}, expires_at=time.time() - 60)
    credd.wait_for(lambda: signin.refreshes == 1 and served(credd) == signin.issued[-1].access_key_id, 20,
                   "credd to refresh through AWS_ENDPOINT_URL_SIGNIN")
