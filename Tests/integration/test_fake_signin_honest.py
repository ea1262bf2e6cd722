"""Proves the fake Sign-In service honest against botocore's own `aws login` provider.

botocore 1.43 (with awscrt) is the reference client: its LoginProvider / LoginCredentialFetcher read a
cache file the fake wrote as `aws login` would, build DPoP proofs with awscrt, call the fake through
AWS_ENDPOINT_URL_SIGNIN, map its errors, and rewrite the cache. If the fake accepts botocore's proofs,
refuses tampered ones, and botocore's rewritten cache is exactly what the fake issued, then a Swift
client the fake accepts speaks what the real service expects (as far as botocore knows it).
"""

import base64
import json
import os
import stat
import sys
import time
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support.fake_signin import (  # noqa: E402
    FakeSignIn, format_expires_at, login_cache_key, parse_expires_at, verify_dpop_proof, ProofError,
)

botocore = pytest.importorskip("botocore")
import botocore.credentials  # noqa: E402
import botocore.exceptions  # noqa: E402
import botocore.session  # noqa: E402

try:
    from awscrt.crypto import EC  # noqa: F401
except ImportError:  # pragma: no cover - the venv has awscrt; say so loudly if it does not
    EC = None


def _require_crt():
    if EC is None or not hasattr(EC, "decode_der_signature_to_padded_pair"):
        pytest.skip("skipped: awscrt ≥ 0.30 is not installed in this venv; botocore cannot refresh aws login tokens")


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """A temporary HOME and no AWS_* variable (AWS_CA_BUNDLE is set on these machines)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return home


@pytest.fixture
def fake():
    with FakeSignIn() as f:
        yield f


def _botocore_session(fake, profile="default"):
    os.environ["AWS_ENDPOINT_URL_SIGNIN"] = fake.url
    return botocore.session.Session(profile=profile)


def _fetcher(session, fixture):
    """botocore's own fetcher for the fixture's login session, as LoginProvider builds it."""
    return botocore.credentials.LoginCredentialFetcher(
        session_name=fixture.login_session,
        token_loader=botocore.utils.LoginTokenLoader(
            botocore.utils.JSONFileCache(botocore.utils.get_login_token_cache_directory())
        ),
        client_creator=session.create_client,
    )


def test_botocore_refresh_is_accepted_and_its_cache_is_what_the_fake_issued(clean_env, fake):
    _require_crt()
    now = time.time()
    fixture = fake.write_login(str(clean_env), region="eu-west-1", expires_at=now + 120)
    before = fixture.read_cache()
    session = _botocore_session(fake)
    creds = session.get_credentials()
    assert creds is not None and creds.method == "login"
    assert fake.token_requests == 0  # loading the provider only reads the file

    frozen = creds.get_frozen_credentials()  # 2 min left: botocore's mandatory refresh

    assert fake.rejections == {}, fake.stats()
    assert fake.proofs_verified == 1 and fake.refreshes == 1
    issued = fake.issued[-1]
    assert frozen.access_key == issued.access_key_id
    assert frozen.secret_key == issued.secret_access_key
    assert frozen.token == issued.session_token
    proof = fake.proofs[-1]
    assert proof["htu"] == fake.url + "/v1/token" and proof["htm"] == "POST"

    after = fixture.read_cache()
    assert after["refreshToken"] == issued.refresh_token == fake.newest_refresh_token(fixture.login_session)
    assert after["accessToken"]["accessKeyId"] == issued.access_key_id
    assert after["accessToken"]["accountId"] == before["accessToken"]["accountId"]
    assert abs(parse_expires_at(after["accessToken"]["expiresAt"]) - (now + fake.expires_in)) < 10
    # botocore keeps fields it does not know, and the key and client id.
    for key in ("idToken", "tokenType", "dpopKey", "clientId"):
        assert after[key] == before[key]
    with open(fixture.cache_file) as f:
        text = f.read()
    assert "\n" not in text.rstrip("\n")
    assert stat.S_IMODE(os.stat(fixture.cache_file).st_mode) == 0o600


def test_botocore_follows_the_rotation_for_many_rounds(clean_env):
    _require_crt()
    # 200 s credentials are under botocore's 5-minute threshold, so every call refreshes.
    with FakeSignIn(expires_in=200, reuse_window=0) as fake:
        fixture = fake.write_login(str(clean_env))
        fetcher = _fetcher(_botocore_session(fake), fixture)
        seen = set()
        for _ in range(8):
            got = fetcher.refresh_credentials()
            seen.add(got["access_key"])
            assert fixture.read_cache()["refreshToken"] == fake.newest_refresh_token(fixture.login_session)
        assert len(seen) == 8
        assert fake.refreshes == 8 and fake.rejections == {}, fake.stats()


def test_botocore_reads_the_file_instead_of_refreshing_when_it_is_fresh(clean_env, fake):
    _require_crt()
    fixture = fake.write_login(str(clean_env))  # 15 minutes left
    got = _fetcher(_botocore_session(fake), fixture).refresh_credentials()
    assert got["access_key"] == fixture.issued.access_key_id
    assert fake.token_requests == 0


@pytest.mark.parametrize(
    "mode, exception",
    [
        ("TOKEN_EXPIRED", "LoginRefreshRequired"),
        ("USER_CREDENTIALS_CHANGED", "LoginRefreshRequired"),
        ("INSUFFICIENT_PERMISSIONS", "LoginInsufficientPermissions"),
    ],
)
def test_the_fakes_access_denied_errors_are_what_botocore_maps(clean_env, fake, mode, exception):
    _require_crt()
    fixture = fake.write_login(str(clean_env), expires_at=time.time() + 60)
    fake.revoke_session(fixture.login_session, mode)
    before = fixture.read_cache()
    with pytest.raises(getattr(botocore.exceptions, exception)):
        _fetcher(_botocore_session(fake), fixture).refresh_credentials()
    assert fixture.read_cache() == before
    assert fake.proofs_verified == 1  # the proof was fine; the session was not


@pytest.mark.parametrize("mode, status", [("INVALID_REQUEST", 400), ("429", 429), ("500", 500)])
def test_the_fakes_other_errors_reach_botocore_as_the_modeled_exceptions(clean_env, fake, mode, status):
    _require_crt()
    fixture = fake.write_login(str(clean_env), expires_at=time.time() + 60)
    fake.fail_always(mode)
    session = _botocore_session(fake)
    client = session.create_client(
        "signin", config=botocore.config.Config(signature_version=botocore.UNSIGNED, retries={"total_max_attempts": 1})
    )
    from botocore.credentials import _build_add_dpop_header_handler, LoginCredentialFetcher

    key = LoginCredentialFetcher._load_private_key(fixture.read_cache())
    client.meta.events.register("before-call.signin.CreateOAuth2Token", _build_add_dpop_header_handler(key))
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        client.create_o_auth2_token(
            tokenInput={"clientId": fixture.read_cache()["clientId"], "refreshToken": "x", "grantType": "refresh_token"}
        )
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    expected = {400: "ValidationException", 429: "TooManyRequestsError", 500: "InternalServerException"}[status]
    assert raised.value.response["Error"]["Code"] == expected


# ----- the fake refuses what the real service would refuse ---------------------------------------


def _botocore_proof(fixture, url, **kw):
    from botocore.credentials import LoginCredentialFetcher, _build_dpop_header

    key = LoginCredentialFetcher._load_private_key(fixture.read_cache())
    return _build_dpop_header(key, url, **kw)


def _post(fake, fixture, proof, refresh_token=None, url=None):
    body = json.dumps({
        "clientId": fixture.read_cache()["clientId"],
        "refreshToken": refresh_token or fixture.read_cache()["refreshToken"],
        "grantType": "refresh_token",
    }).encode()
    req = urllib.request.Request(url or fake.token_url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "DPoP": proof})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_replayed_proof_is_refused(clean_env, fake):
    _require_crt()
    fixture = fake.write_login(str(clean_env))
    proof = _botocore_proof(fixture, fake.token_url)
    assert _post(fake, fixture, proof)[0] == 200
    status, body = _post(fake, fixture, proof, refresh_token=fake.newest_refresh_token(fixture.login_session))
    assert status == 400 and body["error"] == "INVALID_REQUEST"
    assert fake.rejections == {"dpop: jti replayed": 1}


@pytest.mark.parametrize(
    "tamper, reason",
    [
        ("wrong-htu", "htu is"),
        ("old-iat", "iat is"),
        ("future-iat", "iat is"),
        ("der-signature", "not the raw 64-byte"),
        ("flipped-signature", "does not verify"),
        ("other-key", "not the key the refresh token is bound to"),
        ("extra-header", "exactly typ, alg and jwk"),
    ],
)
def test_tampered_proofs_are_refused(clean_env, fake, tamper, reason):
    _require_crt()
    from awscrt.crypto import EC as CrtEC
    from botocore.credentials import _base64_url_encode_no_padding as b64
    from hashlib import sha256

    fixture = fake.write_login(str(clean_env))
    url = fake.token_url
    if tamper == "wrong-htu":
        proof = _botocore_proof(fixture, url.replace("/v1/token", "/v1/other"))
    elif tamper == "old-iat":
        proof = _botocore_proof(fixture, url, ts=int(time.time()) - 120)
    elif tamper == "future-iat":
        proof = _botocore_proof(fixture, url, ts=int(time.time()) + 120)
    elif tamper == "flipped-signature":
        h, p, s = _botocore_proof(fixture, url).split(".")
        raw = bytearray(base64.urlsafe_b64decode(s + "=="))
        raw[5] ^= 1
        proof = f"{h}.{p}.{b64(bytes(raw))}"
    elif tamper in ("der-signature", "extra-header"):
        # What botocore did with awscrt < 0.30 (seed 001): the DER signature as it comes from the key.
        from botocore.credentials import LoginCredentialFetcher

        key = LoginCredentialFetcher._load_private_key(fixture.read_cache())
        h, p, _ = _botocore_proof(fixture, url).split(".")
        if tamper == "extra-header":
            header = json.loads(base64.urlsafe_b64decode(h + "=="))
            header["kid"] = "1"
            h = b64(json.dumps(header, separators=(",", ":")).encode())
        der = key.sign(sha256(f"{h}.{p}".encode()).digest())
        sig = der if tamper == "der-signature" else CrtEC.decode_der_signature_to_padded_pair(der, pad_to=32)
        proof = f"{h}.{p}.{b64(sig)}"
    elif tamper == "other-key":
        other = FakeSignIn().write_login(str(clean_env / "other"))
        proof = _botocore_proof(other, url)
    status, body = _post(fake, fixture, proof)
    assert status == 400 and body["error"] == "INVALID_REQUEST", body
    assert len(fake.rejections) == 1 and reason in next(iter(fake.rejections)), fake.rejections
    assert fake.refreshes == 0


def test_the_fake_clock_drives_the_iat_check_for_botocore(clean_env, fake):
    _require_crt()
    fixture = fake.write_login(str(clean_env), expires_at=time.time() + 60)
    fake.clock.advance(300)  # the service's clock runs 5 minutes ahead of botocore's
    with pytest.raises(botocore.exceptions.ClientError):
        _fetcher(_botocore_session(fake), fixture).refresh_credentials()
    assert any(r.startswith("dpop: iat") for r in fake.rejections), fake.rejections


def test_a_rotated_refresh_token_is_refused_after_the_reuse_window(clean_env):
    _require_crt()
    with FakeSignIn(reuse_window=30) as fake:
        fixture = fake.write_login(str(clean_env))
        first = fixture.issued.refresh_token
        assert _post(fake, fixture, _botocore_proof(fixture, fake.token_url))[0] == 200
        # Within the window the old token is still accepted (as the service's idempotent refresh).
        assert _post(fake, fixture, _botocore_proof(fixture, fake.token_url), refresh_token=first)[0] == 200
        fake.clock.advance(31)
        status, body = _post(fake, fixture, _botocore_proof(fixture, fake.token_url, ts=int(fake.clock())),
                             refresh_token=first)
        assert status == 401 and body["error"] == "TOKEN_EXPIRED"


def test_verify_dpop_proof_accepts_botocores_proof_standalone(clean_env, fake):
    _require_crt()
    fixture = fake.write_login(str(clean_env))
    proof = _botocore_proof(fixture, "https://us-east-1.signin.aws.amazon.com/v1/token")
    payload = verify_dpop_proof(proof, expected_htu="https://us-east-1.signin.aws.amazon.com/v1/token", now=time.time())
    assert payload["htm"] == "POST"
    with pytest.raises(ProofError):
        verify_dpop_proof(proof, expected_htu="https://eu-west-1.signin.aws.amazon.com/v1/token", now=time.time())


def test_write_login_matches_botocores_cache_layout(clean_env, fake):
    fixture = fake.write_login(str(clean_env), profile="dev", region="ap-southeast-2")
    assert os.path.basename(fixture.cache_file) == login_cache_key(fixture.login_session) + ".json"
    assert os.path.dirname(fixture.cache_file) == botocore.utils.get_login_token_cache_directory()
    assert stat.S_IMODE(os.stat(fixture.cache_file).st_mode) == 0o600
    with open(fixture.cache_file) as f:
        assert len(f.read().splitlines()) == 1
    config = botocore.session.Session(profile="dev").get_scoped_config()
    assert config["login_session"] == fixture.login_session and config["region"] == "ap-southeast-2"
    assert fixture.read_cache()["dpopKey"].startswith("-----BEGIN EC PRIVATE KEY-----\n")
    assert format_expires_at(fixture.issued.expires_at) == fixture.read_cache()["accessToken"]["expiresAt"]


def test_botocore_retries_a_throttled_refresh_with_the_same_proof_which_the_fake_refuses(clean_env, fake):
    """A measured botocore behaviour worth knowing: its DPoP header is added once per API call
    (before-call), so its automatic retry of a 429/5xx re-sends the same jti, which a replay check refuses.
    credd builds a new proof for every attempt (see the Swift LoginSource tests)."""
    _require_crt()
    fixture = fake.write_login(str(clean_env), expires_at=time.time() + 60)
    fake.fail_next("500")
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        _fetcher(_botocore_session(fake), fixture).refresh_credentials()
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert fake.failures_injected == {"500": 1}
    assert fake.rejections.get("dpop: jti replayed", 0) >= 1, fake.stats()
