"""Issue 4, sharing the `aws login` cache with botocore: interop in both directions and the refresh race.

botocore (with awscrt) is the other writer of the cache on a developer's machine: its LoginProvider
re-reads the file before refreshing and writes with an atomic rename but takes no lock. These tests run
it against the same strict fake Sign-In as credd:

* a file credd rewrote is loaded and refreshed by botocore's own LoginProvider (a separate process);
* a file botocore refreshed is adopted by credd without a Sign-In call;
* credd and a botocore refresher refresh the same cache for many rounds: the file always parses and the
  newest refresh token is never lost (strictly so when the refresher honours credd's lock).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from support import redact
from support.fake_signin import FakeSignIn
from support.harness import CreddStartError, SYSTEM_PATH, VENV_BIN

try:
    from awscrt.crypto import EC
    HAVE_CRT = hasattr(EC, "decode_der_signature_to_padded_pair")
except ImportError:  # pragma: no cover
    HAVE_CRT = False

needs_crt = pytest.mark.skipif(not HAVE_CRT, reason="skipped: botocore needs awscrt ≥ 0.30 to refresh aws login")


def start_login_credd(start_credd, tmp_path, fake, home, name="credd"):
    try:
        return start_credd(name=name, credentials={"default": {"source": "login", "endpoint": fake.url}})
    except CreddStartError as e:
        if "not available in this build" in str(e):
            pytest.skip("skipped: this credd build does not wire `source: login` yet (SourceFactory refuses it)")
        raise


def home_for(tmp_path, name="credd") -> Path:
    home = tmp_path / name / "home"
    home.mkdir(parents=True, exist_ok=True)
    return home


def served(credd):
    reply = credd.get("/v1/credentials")
    return json.loads(reply.body).get("AccessKeyId") if reply.status == 200 else None


# botocore's own credential chain in a fresh process: HOME's ~/.aws/config names the login session, and
# the LoginProvider refreshes through AWS_ENDPOINT_URL_SIGNIN when the file's credentials are near expiry.
# It prints no secret: the key id, digests of the secret and token, the provider.
BOTOCORE_LOGIN_PROBE = textwrap.dedent(r"""
    import hashlib, json
    import botocore.session
    out = {}
    try:
        creds = botocore.session.Session().get_credentials()
        out["method"] = creds.method
        f = creds.get_frozen_credentials()
        out.update(access_key=f.access_key, account_id=f.account_id,
                   secret_sha256=hashlib.sha256(f.secret_key.encode()).hexdigest(),
                   token_sha256=hashlib.sha256(f.token.encode()).hexdigest())
    except Exception as e:
        out["error"] = type(e).__name__
    print(json.dumps(out))
""")


def run_botocore_login(home: Path, fake: FakeSignIn) -> dict:
    env = {"PATH": f"{VENV_BIN}:{SYSTEM_PATH}", "HOME": str(home), "LANG": "C.UTF-8",
           "AWS_ENDPOINT_URL_SIGNIN": fake.url, "AWS_EC2_METADATA_DISABLED": "true"}
    proc = subprocess.run([sys.executable, "-c", BOTOCORE_LOGIN_PROBE], env=env, capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, redact(proc.stderr)[-2000:]
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@needs_crt
def test_a_cache_credd_rewrote_is_loaded_and_refreshed_by_botocores_login_provider(start_credd, tmp_path):
    # 240 s credentials: under botocore's 5-minute threshold, so botocore refreshes what credd wrote.
    with FakeSignIn(expires_in=240) as fake:
        home = home_for(tmp_path)
        fixture = fake.write_login(str(home), expires_at=time.time() - 60)
        credd = start_login_credd(start_credd, tmp_path, fake, home)
        credd.wait_for(lambda: fake.refreshes_by_client.get("credd", 0) >= 1 and served(credd), 20,
                       "credd to refresh the stale cache")
        credd.stop()
        by_credd = fixture.read_cache()
        assert fake.issued_for(by_credd["accessToken"]["accessKeyId"]) is not None, "the file holds credd's refresh"
        assert fake.refresh_token_usable(by_credd["refreshToken"])

        got = run_botocore_login(home, fake)
        assert got.get("error") is None and got["method"] == "login", got
        assert fake.refreshes_by_client.get("botocore", 0) == 1, fake.stats()
        issued = fake.issued_for(got["access_key"])
        assert issued is not None and got["secret_sha256"] == sha(issued.secret_access_key)
        assert issued.serial == fake.issued[-1].serial, "botocore refreshed with the token credd wrote"
        assert got["account_id"] == "123456789012"
        after = fixture.read_cache()
        assert after["refreshToken"] == fake.newest_refresh_token(fixture.login_session)
        for key in ("dpopKey", "clientId", "idToken", "tokenType"):
            assert after[key] == by_credd[key]
        assert fake.rejections == {}, fake.stats()


@needs_crt
def test_a_cache_botocore_refreshed_is_adopted_by_credd_without_calling_sign_in(start_credd, tmp_path):
    with FakeSignIn() as fake:
        home = home_for(tmp_path)
        fixture = fake.write_login(str(home), expires_at=time.time() + 120)
        got = run_botocore_login(home, fake)  # 2 min left: botocore refreshes (15 minutes now)
        assert got.get("error") is None and fake.refreshes_by_client.get("botocore") == 1, got
        written = Path(fixture.cache_file).read_bytes()

        credd = start_login_credd(start_credd, tmp_path, fake, home)
        credd.wait_for(lambda: served(credd) == got["access_key"], 15, "credd to serve botocore's refresh")
        time.sleep(2)
        assert fake.refreshes_by_client.get("credd", 0) == 0
        assert Path(fixture.cache_file).read_bytes() == written, "credd rewrote a fresh file"


class CacheReader(threading.Thread):
    """Parses the cache file as fast as it can, as an SDK process would; records every failure."""

    def __init__(self, path: str, fake: FakeSignIn, check_usable: bool):
        super().__init__(daemon=True)
        self.path, self.fake, self.check_usable = path, fake, check_usable
        self.reads = 0
        self.failures: list[str] = []
        self.unusable_tokens = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                with open(self.path) as f:
                    doc = json.load(f)
                doc["accessToken"]["accessKeyId"]
                # (Only with a reuse window: with none, the token in the file is superseded for the instant
                # between Sign-In's answer and the write, which is not a loss.)
                if self.check_usable and not self.fake.refresh_token_usable(doc["refreshToken"]):
                    self.unusable_tokens += 1
                self.reads += 1
            except (OSError, ValueError, KeyError) as e:
                self.failures.append(type(e).__name__)
            time.sleep(0.002)


def botocore_fetcher(fake: FakeSignIn, cache_dir: str, login_session: str):
    """botocore's LoginCredentialFetcher for the session, its Sign-In client pointed at the fake."""
    import botocore.credentials
    import botocore.session
    import botocore.utils

    session = botocore.session.Session()

    def client_creator(service, **kwargs):
        return session.create_client(service, endpoint_url=fake.url, region_name="us-east-1", **kwargs)

    return botocore.credentials.LoginCredentialFetcher(
        session_name=login_session,
        token_loader=botocore.utils.LoginTokenLoader(botocore.utils.JSONFileCache(cache_dir)),
        client_creator=client_creator,
    )


@needs_crt
@pytest.mark.slow
@pytest.mark.parametrize("refresher_locks", [True, False], ids=["refresher-takes-credds-lock", "botocore-unlocked"])
def test_credd_and_a_botocore_refresher_race_on_one_cache(start_credd, tmp_path, refresher_locks):
    # 240 s credentials: both credd (under 11 min) and botocore (under 5 min) refresh at every chance.
    # With the lock, a superseded refresh token is refused at once (reuse window 0): any refresh from a
    # stale read would fail, so the run proves credd re-reads under the lock. Without it (botocore as it
    # ships), the service's reuse window absorbs botocore's unlocked writes.
    with FakeSignIn(expires_in=240, reuse_window=0 if refresher_locks else 300) as fake:
        home = home_for(tmp_path)
        fixture = fake.write_login(str(home), expires_at=time.time() + 60)
        credd = start_login_credd(start_credd, tmp_path, fake, home)
        credd.wait_for(lambda: fake.refreshes_by_client.get("credd", 0) >= 1, 20, "credd's first refresh")

        reader = CacheReader(fixture.cache_file, fake, check_usable=not refresher_locks)
        reader.start()
        fetcher = botocore_fetcher(fake, fixture.cache_dir, fixture.login_session)
        lock_path = fixture.cache_file + ".lock"
        errors: list[str] = []
        lost: list[int] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if refresher_locks:
                    with open(lock_path, "a+") as lock:
                        fcntl.flock(lock, fcntl.LOCK_EX)
                        fetcher.refresh_credentials()
                        newest = fake.refresh_token_serial(fake.newest_refresh_token(fixture.login_session))
                        mine = fake.refresh_token_serial(fixture.read_cache()["refreshToken"])
                        if mine != newest:
                            lost.append(newest - (mine or 0))
                else:
                    fetcher.refresh_credentials()
            except Exception as e:  # noqa: BLE001 - counted and reported by type
                errors.append(type(e).__name__)
            time.sleep(0.3)
        # Let credd refresh once more after the last botocore write, then compare with the newest token.
        credd_before = fake.refreshes_by_client.get("credd", 0)
        credd.wait_for(lambda: fake.refreshes_by_client.get("credd", 0) > credd_before, 30,
                       "credd to refresh after the race")
        time.sleep(0.5)
        reader.stop.set()
        reader.join(5)

        stats = fake.stats()
        assert errors == [], f"botocore's refresher failed: {sorted(set(errors))}; {stats}"
        assert lost == [], "a refresh token newer than the file's was lost"
        assert reader.failures == [], f"the cache file did not parse {len(reader.failures)} times"
        assert reader.reads > 100
        assert reader.unusable_tokens == 0, "the file held a refresh token the service no longer accepts"
        assert fake.rejections == {}, stats
        assert stats["refreshes_by_client"].get("credd", 0) >= 3, stats
        assert stats["refreshes_by_client"].get("botocore", 0) >= 10, stats
        # credd keeps refreshing every few seconds (240 s credentials): between Sign-In's answer and credd's write
        # the newest token is briefly only in flight, so compare at a moment when the file has caught up. A token
        # really lost never catches up (and credd's next refresh from an older one would be rejected, see above).
        def file_has_newest() -> bool:
            return fake.refresh_token_serial(fixture.read_cache()["refreshToken"]) == \
                fake.refresh_token_serial(fake.newest_refresh_token(fixture.login_session))
        deadline = time.monotonic() + 15
        while not file_has_newest() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert file_has_newest(), "the newest token was lost"
        assert "LoginRequired" not in json.dumps(credd.status_json())
        assert served(credd) is not None
