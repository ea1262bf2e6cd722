"""Issue 7, faults around `aws login`: Sign-In throttling, errors and hangs while serving; the cache directory
full or read-only during a write (a 64 KiB tmpfs in credd's own mount namespace); SIGKILL in the middle of
cache writes, many times. The user's login cache is never lost or left half-written.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support.fake_signin import FakeSignIn, write_cache_file
from support.faults_login import (
    LOGIN_REFRESH_BEFORE, fill_up, in_namespace, login_credd, mode_of, parses_as_login_cache,
)
from support.harness import Watcher, observe

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="skipped: mounting a tmpfs in a private mount namespace needs root")
needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("nsenter") is None,
                                   reason="skipped: unshare/nsenter (util-linux) are not installed")


@pytest.fixture
def signin():
    with FakeSignIn() as fake:
        yield fake


def served_key(credd):
    r = credd.get("/v1/credentials")
    return json.loads(r.body).get("AccessKeyId") if r.status == 200 else None


def make_due(path: Path, seconds_left: float = 120) -> bytes:
    """Rewrite the cache so its credentials look `seconds_left` from expiry (credd's watcher notices)."""
    doc = json.loads(path.read_bytes())
    doc["accessToken"]["expiresAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds_left))
    write_cache_file(str(path), doc)
    return path.read_bytes()


# ---- Sign-In failing while credd serves ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["429", "500", "503", "hang", "garbage"])
def test_sign_in_failing_while_serving_keeps_the_valid_credentials_without_making_clients_wait(
        credd_bin, tmp_path, signin, mode):
    credd, fixture = login_credd(credd_bin, tmp_path, signin, expires_at=time.time() + 900)
    try:
        credd.start()
        credd.wait_for(lambda: served_key(credd) == fixture.issued.access_key_id, 15, "credd to serve the cache")
        signin.fail_always(mode)
        before = make_due(Path(fixture.cache_file))  # 2 minutes left: credd must refresh now
        credd.wait_for(lambda: signin.failures_injected[mode] >= 1, 15, f"credd to meet Sign-In's {mode}")
        worst = 0.0
        with Watcher(credd, interval=0.1) as watch:
            for _ in range(20):
                t = time.perf_counter()
                credd.get("/v1/credentials", via="unix")
                worst = max(worst, time.perf_counter() - t)
                time.sleep(0.1)
        assert {o.status for o in watch.seen} == {200}
        assert {o.key for o in watch.seen} == {fixture.issued.access_key_id}
        assert worst < 0.1, f"a client waited {worst * 1000:.0f} ms while Sign-In answered {mode}"
        assert Path(fixture.cache_file).read_bytes() == before, "a failed refresh leaves the cache alone"
        requests = signin.token_requests
        time.sleep(3)
        assert signin.token_requests - requests <= 3, "Sign-In is retried with backoff, not in a loop"
        signin.clear_failures()
        signin.release_hangs()
        credd.wait_for(lambda: served_key(credd) == signin.issued[-1].access_key_id != fixture.issued.access_key_id,
                       40, "credd to refresh once Sign-In recovers")
        assert parses_as_login_cache(Path(fixture.cache_file).read_bytes()) is None
        assert signin.rejections == {}, signin.stats()
    finally:
        signin.release_hangs()
        credd.stop()


@pytest.mark.parametrize("mode", ["500", "revoked"])
def test_starting_while_sign_in_fails_serves_the_cached_credentials_until_they_expire(credd_bin, tmp_path, signin, mode):
    """credd starts with a cache whose credentials have 5 minutes left (inside the refresh window) while
    Sign-In fails: it serves them (they are valid) instead of answering 503, and takes the refreshed ones
    once Sign-In answers again (or, for a refused session, once `aws login` writes a new one)."""
    credd, fixture = login_credd(credd_bin, tmp_path, signin, expires_at=time.time() + 300)
    if mode == "revoked":
        signin.revoke_session(fixture.login_session, "TOKEN_EXPIRED")
    else:
        signin.fail_always(mode)
    before = Path(fixture.cache_file).read_bytes()
    try:
        credd.start()
        credd.wait_for(lambda: served_key(credd) == fixture.issued.access_key_id, 20,
                       "credd to serve the cached credentials while Sign-In fails")
        assert signin.token_requests >= 1, "credd tried to refresh first"
        status = credd.status_json()
        text = json.dumps(status)
        assert ("LoginRequired" if mode == "revoked" else "SignIn") in text, text[:2000]
        assert Path(fixture.cache_file).read_bytes() == before, "nothing overwritten"
        if mode == "revoked":
            again = signin.write_login(str(credd.home), profile="default", login_session=fixture.login_session)
            new_key = again.issued.access_key_id
        else:
            signin.clear_failures()
            new_key = None
        credd.wait_for(lambda: (k := served_key(credd)) not in (None, fixture.issued.access_key_id)
                       and (new_key is None or k == new_key), 40, "credd to serve refreshed credentials")
    finally:
        credd.stop()


# ---- the cache directory full or read-only during a write --------------------------------------------------

@needs_root
@needs_unshare
@pytest.mark.parametrize("fault", ["disk full", "read-only"])
def test_cache_write_failing_keeps_the_old_file_intact_and_serves_the_new_credentials(
        credd_bin, tmp_path, signin, fault):
    credd, fixture = login_credd(credd_bin, tmp_path, signin, expires_at=time.time() + 900, tmpfs_size="64k")
    try:
        credd.start()
        credd.wait_for(lambda: served_key(credd) == fixture.issued.access_key_id, 15, "credd to serve the cache")
        cache = in_namespace(credd, fixture.cache_file)
        cache_dir = in_namespace(credd, fixture.cache_dir)
        assert subprocess.run(["findmnt", "-N", str(credd.process.pid), "-n", "-o", "FSTYPE", fixture.cache_dir],
                              capture_output=True, text=True).stdout.strip() == "tmpfs", "the cache is on credd's tmpfs"
        assert not Path(fixture.cache_dir, ".credd-test-filler").exists(), "the host's directory is not the tmpfs"

        signin.fail_always("500")  # hold the refresh until the disk is spoiled
        before = make_due(cache)
        if fault == "disk full":
            fill_up(cache_dir)
            st = os.statvfs(cache_dir)
            assert st.f_bavail == 0, "the tmpfs is full"
        else:
            # A remount fails while credd holds its lock file open for a refresh attempt: try between attempts.
            def remounted():
                return subprocess.run(["nsenter", "-t", str(credd.process.pid), "-m", "mount", "-o", "remount,ro",
                                       fixture.cache_dir], capture_output=True).returncode == 0
            credd.wait_for(remounted, 20, "the cache directory to be remounted read-only", interval=0.05)
        signin.clear_failures()

        if fault == "read-only":
            # credd cannot take its lock file, so it does not refresh at all (a refresh it could not write
            # would strand the rotated refresh token): it keeps serving the still-valid credentials and says
            # what to fix; the file is untouched.
            credd.wait_for(lambda: "LoginCacheUnwritable" in json.dumps(credd.status_json()), 20,
                           "status to say the cache directory is not writable")
            assert served_key(credd) == fixture.issued.access_key_id
            assert signin.refreshes == 0
            assert cache.read_bytes() == before
            message = json.dumps(credd.status_json())
            assert "write access" in message and fixture.cache_dir in message
            return
        credd.wait_for(lambda: signin.refreshes >= 1, 30, "credd to refresh through Sign-In")
        new_key = signin.issued[-1].access_key_id
        credd.wait_for(lambda: served_key(credd) == new_key, 10, "credd to serve the refreshed credentials anyway")
        assert cache.read_bytes() == before, "the old cache file is intact, byte for byte"
        assert parses_as_login_cache(cache.read_bytes()) is None
        assert [n for n in os.listdir(cache_dir) if n.endswith(".tmp")] == [], "no temporary file left behind"
        assert "could not write the refreshed aws login cache" in credd.logs()
        # The refresh token in the old file is still accepted (the service's reuse window), so the session
        # survives once the disk is fixed.
        old_refresh = json.loads(before)["refreshToken"]
        assert signin.refresh_token_usable(old_refresh)
    finally:
        credd.stop()


# ---- SIGKILL in the middle of cache writes ------------------------------------------------------------------

@needs_root
def test_sigkill_during_cache_writes_never_leaves_a_broken_file(credd_bin, tmp_path):
    """25 times: credd starts with an expired cache (so it refreshes and rewrites the file at once) and is
    SIGKILLed at a random moment of that; the file always parses and its refresh token still works."""
    rng = random.Random(7)
    with FakeSignIn() as signin:
        credd, fixture = login_credd(credd_bin, tmp_path, signin, expires_at=time.time() - 60)
        cache = Path(fixture.cache_file)
        writes = 0
        last = cache.read_bytes()
        try:
            for i in range(25):
                doc = json.loads(cache.read_bytes())
                doc["accessToken"]["expiresAt"] = "2000-01-01T00:00:00Z"
                write_cache_file(str(cache), doc)
                last = cache.read_bytes()
                credd.start(wait=False)
                time.sleep(rng.uniform(0.05, 0.6))
                credd.process.send_signal(signal.SIGKILL)
                credd.process.wait(10)
                credd._close_files()
                data = cache.read_bytes()
                problem = parses_as_login_cache(data)
                assert problem is None, f"after SIGKILL #{i + 1} the cache file is broken: {problem}"
                assert mode_of(cache) == 0o600
                writes += data != last
                token = json.loads(data)["refreshToken"]
                assert signin.refresh_token_usable(token), f"after SIGKILL #{i + 1} the file's refresh token is refused"
        finally:
            credd.stop()
        leftovers = [n for n in os.listdir(fixture.cache_dir) if n.endswith(".tmp")]
        assert len(leftovers) <= 25, leftovers  # a kill between create and rename may leave one; never a broken cache
        assert writes >= 5, f"only {writes} of 25 runs got as far as rewriting the cache; the kills came too early"
        assert signin.rejections == {}, signin.stats()
