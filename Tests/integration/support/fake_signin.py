"""A strict fake of the AWS Sign-In token service (``POST /v1/token``), for tests only.

It implements the refresh half of ``CreateOAuth2Token`` as PROTOCOLS.md §3 describes it and as
botocore's ``LoginCredentialFetcher`` calls it, and it is deliberately strict about the DPoP proof:

* the ``DPoP`` header must be a compact JWS whose header is exactly ``typ=dpop+jwt``, ``alg=ES256``
  and a public P-256 ``jwk``, signed with ECDSA P-256/SHA-256 as the raw 64-byte r||s, verified here
  with Python ``cryptography``;
* the ``jwk`` must be the key the refresh token is bound to (the key of the ``aws login`` that
  started the session), compared by RFC 7638 thumbprint;
* ``htm`` must be ``POST``, ``htu`` exactly the URL the client used (scheme, the ``Host`` it sent,
  path), ``iat`` an integer within ±60 s of the fake's (injectable) clock, ``jti`` a UUID4 never seen
  before (replays are refused).

Refresh tokens rotate on every refresh; a superseded token is still accepted for ``reuse_window``
seconds (the service accepts a refresh token again within its validity window), and every token of a
login session dies with the session (12 h by default). Each refresh issues new credentials that last
``expires_in`` seconds (at most 900, as the service).

Failures are injected with ``fail_next(mode, times)`` or ``fail_always(mode)``; sessions can be
revoked (``revoke_session``) so every later refresh fails the way a changed password does.
``write_login(home, ...)`` writes a login cache file and an ``~/.aws/config`` profile exactly as
``aws login`` leaves them. Run standalone with ``python fake_signin.py --help``.

No secret the fake issues is ever printed: only counters, reasons and key suffixes.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import http.server
import json
import os
import secrets
import string
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

try:  # inside the integration suite: every secret the fake issues joins the leak scan
    from . import register_secret
except ImportError:  # run standalone (python fake_signin.py)
    def register_secret(value, label="test secret"):
        pass

CLIENT_ID = "arn:aws:signin:::devtools/same-device"
MAX_EXPIRES_IN = 900
IAT_SKEW_SECONDS = 60
SESSION_LIFETIME_SECONDS = 12 * 3600
TOKEN_PATH = "/v1/token"

# Every failure the fake can be told to produce.
FAILURE_MODES = (
    "TOKEN_EXPIRED",             # 401 AccessDeniedException
    "USER_CREDENTIALS_CHANGED",  # 403 AccessDeniedException
    "INSUFFICIENT_PERMISSIONS",  # 403 AccessDeniedException
    "INVALID_REQUEST",           # 400 ValidationException
    "429",                       # 429 TooManyRequestsError
    "500",                       # 500 InternalServerException
    "503",                       # 503 without a modeled body (a load balancer's answer)
    "garbage",                   # 200 with a body that is not JSON
    "incomplete",                # 200 with JSON that lacks the credentials
    "close",                     # the connection is closed without an answer
    "hang",                      # no answer until release_hangs() or stop()
    "slow",                      # whatever the answer is, `slow_seconds` late
)

_B64URL_ALPHABET = set(string.ascii_letters + string.digits + "-_")


class Clock:
    """Wall-clock time plus an offset that tests move; the fake reads time only through this."""

    def __init__(self, offset: float = 0.0):
        self._offset = offset
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    def set_offset(self, seconds: float) -> None:
        with self._lock:
            self._offset = seconds


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode_strict(text: str, what: str) -> bytes:
    """Decodes base64url without padding, refusing padding and any other alphabet."""
    if not isinstance(text, str) or not text or any(c not in _B64URL_ALPHABET for c in text):
        raise ProofError(f"{what} is not unpadded base64url")
    if len(text) % 4 == 1:
        raise ProofError(f"{what} has an impossible base64url length")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwk_thumbprint(x_b64: str, y_b64: str) -> str:
    """RFC 7638 thumbprint of a P-256 public JWK (members in lexicographic order, no spaces)."""
    canonical = json.dumps({"crv": "P-256", "kty": "EC", "x": x_b64, "y": y_b64}, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode()).digest())


def public_jwk(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> dict:
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    numbers = pub.public_numbers()
    return {
        "kty": "EC",
        "x": b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": b64url_encode(numbers.y.to_bytes(32, "big")),
        "crv": "P-256",
    }


def login_cache_key(login_session: str) -> str:
    """The cache file's base name: lowercase hex SHA-256 of the login_session (botocore's rule)."""
    return hashlib.sha256(login_session.encode("utf-8")).hexdigest()


def format_expires_at(unix_seconds: float) -> str:
    return datetime.fromtimestamp(int(unix_seconds), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_expires_at(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


class ProofError(Exception):
    """A DPoP proof the fake refuses; the message names the check that failed (never a secret)."""


def verify_dpop_proof(proof: str, *, expected_htu: str, now: float, expected_jkt: Optional[str] = None) -> dict:
    """Verifies one DPoP proof as the fake does and returns its payload.

    Usable on its own: integration tests verify credd's proofs with it independently of the server.
    Checks the structure, the header (exactly typ/alg/jwk, a public P-256 key), the ES256 signature as
    raw r||s, `htm`, `htu`, `iat` within ±60 s of `now`, the `jti` shape and, when given, that the key's
    thumbprint is `expected_jkt`. Replay of `jti` is the caller's business (the server keeps the set).
    """
    if not isinstance(proof, str) or proof.count(".") != 2:
        raise ProofError("the DPoP proof is not a compact JWS (three dot-separated parts)")
    header_b64, payload_b64, sig_b64 = proof.split(".")
    try:
        header = json.loads(b64url_decode_strict(header_b64, "the JWS header"))
        payload = json.loads(b64url_decode_strict(payload_b64, "the JWS payload"))
    except ValueError as e:
        raise ProofError(f"the JWS header or payload is not JSON ({type(e).__name__})") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise ProofError("the JWS header and payload must be JSON objects")
    if set(header) != {"typ", "alg", "jwk"}:
        raise ProofError(f"the JWS header must hold exactly typ, alg and jwk, not {sorted(header)}")
    if header["typ"] != "dpop+jwt":
        raise ProofError("the JWS header typ is not dpop+jwt")
    if header["alg"] != "ES256":
        raise ProofError("the JWS header alg is not ES256")
    jwk = header["jwk"]
    if not isinstance(jwk, dict) or set(jwk) != {"kty", "x", "y", "crv"}:
        raise ProofError("the jwk must hold exactly kty, x, y and crv (a public key only)")
    if jwk["kty"] != "EC" or jwk["crv"] != "P-256":
        raise ProofError("the jwk is not an EC P-256 key")
    x = b64url_decode_strict(jwk["x"], "jwk.x")
    y = b64url_decode_strict(jwk["y"], "jwk.y")
    if len(x) != 32 or len(y) != 32:
        raise ProofError("jwk x and y must be 32 bytes each")
    try:
        public_key = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
        ).public_key()
    except ValueError:
        raise ProofError("the jwk point is not on P-256") from None
    if expected_jkt is not None and jwk_thumbprint(jwk["x"], jwk["y"]) != expected_jkt:
        raise ProofError("the proof's key is not the key the refresh token is bound to")
    signature = b64url_decode_strict(sig_b64, "the JWS signature")
    if len(signature) != 64:
        raise ProofError(f"the signature is {len(signature)} bytes, not the raw 64-byte r||s (DER is refused)")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), f"{header_b64}.{payload_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ProofError("the ES256 signature does not verify") from None
    if set(payload) != {"htm", "htu", "iat", "jti"}:
        raise ProofError(f"the payload must hold exactly htm, htu, iat and jti, not {sorted(payload)}")
    if payload["htm"] != "POST":
        raise ProofError(f"htm is {payload['htm']!r}, not 'POST'")
    if payload["htu"] != expected_htu:
        raise ProofError(f"htu is {payload['htu']!r}, but the request went to {expected_htu!r}")
    iat = payload["iat"]
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise ProofError("iat is not an integer number of seconds")
    if abs(iat - now) > IAT_SKEW_SECONDS:
        raise ProofError(f"iat is {iat - now:+.0f} s away from the service's clock (allowed ±{IAT_SKEW_SECONDS} s)")
    jti = payload["jti"]
    try:
        parsed = uuid.UUID(jti)
    except (ValueError, TypeError, AttributeError):
        raise ProofError("jti is not a UUID") from None
    if parsed.version != 4 or str(parsed) != jti:
        raise ProofError("jti is not a lowercase UUID version 4")
    return payload


@dataclass
class _Session:
    login_session: str
    jkt: str
    client_id: str
    account_id: str
    expires_at: float
    revoked: Optional[str] = None  # the AccessDenied error every refresh gets once revoked


@dataclass
class _RefreshToken:
    session: _Session
    issued_at: float
    serial: int
    superseded_at: Optional[float] = None


@dataclass
class Issued:
    """What one refresh (or the initial login) issued; tests compare served credentials against it."""

    access_key_id: str
    secret_access_key: str
    session_token: str
    refresh_token: str
    account_id: str
    expires_at: float
    serial: int
    login_session: str


@dataclass
class LoginFixture:
    """What `write_login` produced: paths and the identifiers a test needs (secrets stay in `issued`)."""

    home: str
    profile: str
    login_session: str
    region: str
    config_file: str
    cache_dir: str
    cache_file: str
    issued: Issued
    private_key_pem: str = field(repr=False)

    def read_cache(self) -> dict:
        with open(self.cache_file) as f:
            return json.load(f)


class FakeSignIn:
    """The fake service; start() binds 127.0.0.1 on an ephemeral port. Use as a context manager."""

    def __init__(
        self,
        *,
        clock: Optional[Callable[[], float]] = None,
        expires_in: int = MAX_EXPIRES_IN,
        reuse_window: float = 300.0,
        session_lifetime: float = SESSION_LIFETIME_SECONDS,
        slow_seconds: float = 3.0,
        host: str = "127.0.0.1",
    ):
        self.clock = clock if clock is not None else Clock()
        self.expires_in = expires_in
        self.reuse_window = reuse_window
        self.session_lifetime = session_lifetime
        self.slow_seconds = slow_seconds
        self._host = host
        self._lock = threading.RLock()
        self._sessions: dict[str, _Session] = {}
        self._tokens: dict[str, _RefreshToken] = {}
        self._newest: dict[str, str] = {}      # login_session → newest refresh token
        self._serial = 0
        self._seen_jti: dict[str, float] = {}
        self._fail_queue: collections.deque[str] = collections.deque()
        self._fail_always: Optional[str] = None
        self._release = threading.Event()
        self.issued: list[Issued] = []
        self.proofs: list[dict] = []           # payloads of verified proofs, in order
        self.requests = 0                      # every request to any path
        self.token_requests = 0                # POST /v1/token
        self.refreshes = 0                     # successful refreshes
        self.proofs_verified = 0
        self.rejections: collections.Counter[str] = collections.Counter()
        self.failures_injected: collections.Counter[str] = collections.Counter()
        self.last_request_headers: dict[str, str] = {}
        # Successful refreshes by client ("botocore", "credd", ...), from the User-Agent header.
        self.refreshes_by_client: collections.Counter[str] = collections.Counter()
        self._server: Optional[http.server.ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ----- lifecycle -------------------------------------------------------------------------

    def start(self, port: int = 0) -> "FakeSignIn":
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self._server = http.server.ThreadingHTTPServer((self._host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-signin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeSignIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the fake Sign-In service is not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The endpoint to put in AWS_ENDPOINT_URL_SIGNIN (no path)."""
        return f"http://{self._host}:{self.port}"

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    # ----- controls --------------------------------------------------------------------------

    def fail_next(self, mode: str, times: int = 1) -> None:
        """The next `times` token requests fail as `mode` (after their proof is verified)."""
        if mode not in FAILURE_MODES:
            raise ValueError(f"unknown failure mode {mode!r}; known: {', '.join(FAILURE_MODES)}")
        with self._lock:
            self._fail_queue.extend([mode] * times)

    def fail_always(self, mode: Optional[str]) -> None:
        """Every token request fails as `mode` until called with None."""
        if mode is not None and mode not in FAILURE_MODES:
            raise ValueError(f"unknown failure mode {mode!r}; known: {', '.join(FAILURE_MODES)}")
        with self._lock:
            self._fail_always = mode

    def clear_failures(self) -> None:
        with self._lock:
            self._fail_queue.clear()
            self._fail_always = None

    def release_hangs(self) -> None:
        """Lets every request held by the `hang` mode go (they are then closed without an answer)."""
        self._release.set()
        self._release = threading.Event()

    def revoke_session(self, login_session: str, reason: str = "USER_CREDENTIALS_CHANGED") -> None:
        """Every later refresh of this login session fails with `reason` (TOKEN_EXPIRED,
        USER_CREDENTIALS_CHANGED or INSUFFICIENT_PERMISSIONS), as after a password change."""
        if reason not in ("TOKEN_EXPIRED", "USER_CREDENTIALS_CHANGED", "INSUFFICIENT_PERMISSIONS"):
            raise ValueError(f"{reason!r} is not an AccessDenied reason")
        with self._lock:
            self._sessions[login_session].revoked = reason

    def newest_refresh_token(self, login_session: str) -> str:
        with self._lock:
            return self._newest[login_session]

    def refresh_token_serial(self, refresh_token: str) -> Optional[int]:
        """The order in which a refresh token was issued (higher is newer), or None if unknown."""
        with self._lock:
            t = self._tokens.get(refresh_token)
            return t.serial if t else None

    def refresh_token_usable(self, refresh_token: str) -> bool:
        """Whether a refresh with this token would be accepted now (ignoring injected failures)."""
        with self._lock:
            return self._token_problem(refresh_token, self.clock()) is None

    def issued_for(self, access_key_id: str) -> Optional[Issued]:
        with self._lock:
            for i in self.issued:
                if i.access_key_id == access_key_id:
                    return i
        return None

    def stats(self) -> dict:
        """Counters only; safe to print."""
        with self._lock:
            return {
                "requests": self.requests,
                "token_requests": self.token_requests,
                "refreshes": self.refreshes,
                "proofs_verified": self.proofs_verified,
                "rejections": dict(self.rejections),
                "failures_injected": dict(self.failures_injected),
                "refreshes_by_client": dict(self.refreshes_by_client),
            }

    # ----- the login an `aws login` would have done ------------------------------------------

    def new_session(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        *,
        login_session: Optional[str] = None,
        account_id: str = "123456789012",
        client_id: str = CLIENT_ID,
        expires_in: Optional[int] = None,
    ) -> Issued:
        """Starts a login session bound to `private_key` and issues its first credentials and refresh
        token, as the authorization-code redemption of `aws login` does."""
        now = self.clock()
        if login_session is None:
            login_session = f"arn:aws:iam::{account_id}:user/dev-{secrets.token_hex(4)}"
        jwk = public_jwk(private_key)
        with self._lock:
            session = _Session(
                login_session=login_session,
                jkt=jwk_thumbprint(jwk["x"], jwk["y"]),
                client_id=client_id,
                account_id=account_id,
                expires_at=now + self.session_lifetime,
            )
            self._sessions[login_session] = session
            return self._issue(session, now, expires_in)

    def write_login(
        self,
        home: str,
        *,
        profile: str = "default",
        region: str = "us-east-1",
        login_session: Optional[str] = None,
        account_id: str = "123456789012",
        expires_in: Optional[int] = None,
        expires_at: Optional[float] = None,
        config_file: Optional[str] = None,
        cache_dir: Optional[str] = None,
        extra_fields: Optional[dict] = None,
        extra_profile_lines: tuple[str, ...] = (),
    ) -> LoginFixture:
        """Writes what `aws login --profile PROFILE` leaves behind into a temporary HOME: a profile
        with `login_session` and `region` in ~/.aws/config (or `config_file`), and the cache file
        ~/.aws/login/cache/<sha256(login_session)>.json (or under `cache_dir`): one line of JSON,
        mode 0600, holding a fresh P-256 key in SEC1 PEM. `expires_at` overrides the written expiry
        (to make the credentials look older than they are)."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode("ascii")
        register_secret(pem, "DPoP private key")
        issued = self.new_session(private_key, login_session=login_session, account_id=account_id, expires_in=expires_in)
        if expires_at is not None:
            issued.expires_at = expires_at
        config_file = config_file or os.path.join(home, ".aws", "config")
        cache_dir = cache_dir or os.path.join(home, ".aws", "login", "cache")
        os.makedirs(os.path.dirname(config_file), mode=0o700, exist_ok=True)
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        section = "default" if profile == "default" else f"profile {profile}"
        lines = [f"[{section}]", f"login_session = {issued.login_session}", f"region = {region}", *extra_profile_lines]
        _replace_config_section(config_file, section, lines)
        document = {
            "accessToken": {
                "accessKeyId": issued.access_key_id,
                "secretAccessKey": issued.secret_access_key,
                "sessionToken": issued.session_token,
                "accountId": issued.account_id,
                "expiresAt": format_expires_at(issued.expires_at),
            },
            "tokenType": "aws_sigv4",
            "refreshToken": issued.refresh_token,
            "idToken": _fake_id_token(issued.login_session),
            "clientId": CLIENT_ID,
            "dpopKey": pem,
        }
        if extra_fields:
            document.update(extra_fields)
        cache_file = os.path.join(cache_dir, login_cache_key(issued.login_session) + ".json")
        write_cache_file(cache_file, document)
        return LoginFixture(
            home=home, profile=profile, login_session=issued.login_session, region=region,
            config_file=config_file, cache_dir=cache_dir, cache_file=cache_file, issued=issued,
            private_key_pem=pem,
        )

    # ----- the service -----------------------------------------------------------------------

    def _issue(self, session: _Session, now: float, expires_in: Optional[int]) -> Issued:
        lifetime = self.expires_in if expires_in is None else expires_in
        if not 0 < lifetime <= MAX_EXPIRES_IN:
            raise ValueError(f"expires_in must be 1…{MAX_EXPIRES_IN} s, as the service's, not {lifetime}")
        self._serial += 1
        refresh_token = "fake-rt-" + secrets.token_urlsafe(48)
        self._tokens[refresh_token] = _RefreshToken(session=session, issued_at=now, serial=self._serial)
        previous = self._newest.get(session.login_session)
        if previous is not None and self._tokens[previous].superseded_at is None:
            self._tokens[previous].superseded_at = now
        self._newest[session.login_session] = refresh_token
        issued = Issued(
            access_key_id="ASIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
            secret_access_key=secrets.token_urlsafe(30)[:40],
            session_token="FQoGZXIvYXdzE" + secrets.token_urlsafe(120),
            refresh_token=refresh_token,
            account_id=session.account_id,
            expires_at=now + lifetime,
            serial=self._serial,
            login_session=session.login_session,
        )
        register_secret(issued.secret_access_key, "Sign-In secret key")
        register_secret(issued.session_token, "Sign-In session token")
        register_secret(issued.refresh_token, "Sign-In refresh token")
        self.issued.append(issued)
        return issued

    def _token_problem(self, refresh_token: str, now: float) -> Optional[tuple[str, str]]:
        """None when the token may be used now, else (error, message)."""
        token = self._tokens.get(refresh_token)
        if token is None:
            return ("TOKEN_EXPIRED", "The refresh token is not valid. Run aws login again.")
        if token.session.revoked:
            return (token.session.revoked, "The session is no longer valid.")
        if now >= token.session.expires_at:
            return ("TOKEN_EXPIRED", "The login session has expired. Run aws login again.")
        if token.superseded_at is not None and now - token.superseded_at > self.reuse_window:
            return ("TOKEN_EXPIRED", "The refresh token has been rotated and is no longer valid.")
        return None

    def handle_token_request(self, method: str, path: str, headers, body: bytes, scheme: str = "http"):
        """Returns (status, headers, body bytes), a failure action ("close" / "hang"), or ("slow", answer)
        when the answer is to be sent `slow_seconds` late."""
        slow: list[bool] = []
        result = self._handle_token_request(method, path, headers, body, scheme, slow)
        return ("slow", result) if slow and isinstance(result, tuple) else result

    def _handle_token_request(self, method, path, headers, body, scheme, slow):
        with self._lock:
            self.token_requests += 1
        if method != "POST":
            return _error(405, "ValidationException", "INVALID_REQUEST", "Only POST is allowed.")
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return self._reject("content-type", 400, "Content-Type must be application/json.")
        proofs = headers.get_all("DPoP") or []
        if len(proofs) != 1:
            return self._reject("dpop-header-count", 400, "Exactly one DPoP header is required.")
        try:
            request = json.loads(body)
        except ValueError:
            return self._reject("body-not-json", 400, "The request body is not JSON.")
        if not isinstance(request, dict):
            return self._reject("body-not-object", 400, "The request body is not a JSON object.")
        if request.get("grantType") != "refresh_token":
            return self._reject("grant-type", 400, "grantType must be refresh_token.")
        refresh_token = request.get("refreshToken")
        client_id = request.get("clientId")
        if not isinstance(refresh_token, str) or not isinstance(client_id, str):
            return self._reject("body-fields", 400, "clientId and refreshToken are required strings.")
        extra = set(request) - {"clientId", "refreshToken", "grantType"}
        if extra:
            return self._reject("body-unknown-fields", 400, f"Unexpected fields {sorted(extra)}.")
        host = headers.get("Host")
        if not host:
            return self._reject("no-host", 400, "The Host header is required.")
        expected_htu = f"{scheme}://{host}{path}"
        now = self.clock()
        with self._lock:
            token = self._tokens.get(refresh_token)
            jkt = token.session.jkt if token else None
            try:
                payload = verify_dpop_proof(proofs[0], expected_htu=expected_htu, now=now, expected_jkt=jkt)
            except ProofError as e:
                return self._reject("dpop: " + str(e), 400, f"Invalid DPoP proof: {e}")
            jti = payload["jti"]
            self._seen_jti = {j: t for j, t in self._seen_jti.items() if now - t < 10 * IAT_SKEW_SECONDS}
            if jti in self._seen_jti:
                return self._reject("dpop: jti replayed", 400, "Invalid DPoP proof: the jti was already used.")
            self._seen_jti[jti] = now
            self.proofs_verified += 1
            self.proofs.append(payload)
            mode = self._fail_queue.popleft() if self._fail_queue else self._fail_always
            if mode is not None:
                self.failures_injected[mode] += 1
                failure = _failure(mode)
                if failure is not None:
                    return failure
                if mode != "slow":
                    return mode  # "close" / "hang"
                slow.append(True)
            if token is not None and client_id != token.session.client_id:
                return self._reject("client-id", 400, "clientId does not match the refresh token.")
            problem = self._token_problem(refresh_token, now)
            if problem is not None:
                error, message = problem
                self.rejections["token: " + error] += 1
                status = 401 if error == "TOKEN_EXPIRED" else 403
                return _error(status, "AccessDeniedException", error, message)
            issued = self._issue(token.session, now, None)
            self.refreshes += 1
            self.refreshes_by_client[_client_kind(headers.get("User-Agent"))] += 1
        answer = {
            "accessToken": {
                "accessKeyId": issued.access_key_id,
                "secretAccessKey": issued.secret_access_key,
                "sessionToken": issued.session_token,
            },
            "tokenType": "aws_sigv4",
            "expiresIn": int(issued.expires_at - now),
            "refreshToken": issued.refresh_token,
        }
        return (200, {"Content-Type": "application/json"}, json.dumps(answer).encode())

    def _reject(self, reason: str, status: int, message: str):
        with self._lock:
            self.rejections[reason] += 1
        return _error(status, "ValidationException", "INVALID_REQUEST", message)


def _client_kind(user_agent: Optional[str]) -> str:
    agent = (user_agent or "").lower()
    if "botocore" in agent or "boto3" in agent or "aws-cli" in agent:
        return "botocore"
    if "credd" in agent:
        return "credd"
    return "other"


def _error(status: int, error_type: str, error: str, message: str):
    body = json.dumps({"error": error, "message": message}).encode()
    return (status, {"Content-Type": "application/json", "x-amzn-ErrorType": error_type}, body)


def _failure(mode: str):
    if mode == "TOKEN_EXPIRED":
        return _error(401, "AccessDeniedException", mode, "The refresh token has expired. Run aws login again.")
    if mode in ("USER_CREDENTIALS_CHANGED", "INSUFFICIENT_PERMISSIONS"):
        return _error(403, "AccessDeniedException", mode, f"Access denied: {mode}.")
    if mode == "INVALID_REQUEST":
        return _error(400, "ValidationException", mode, "The request is invalid.")
    if mode == "429":
        return _error(429, "TooManyRequestsError", "INVALID_REQUEST", "Too many requests.")
    if mode == "500":
        return _error(500, "InternalServerException", "server_error", "Internal server error.")
    if mode == "503":
        return (503, {"Content-Type": "text/html"}, b"<html><body>Service Unavailable</body></html>")
    if mode == "garbage":
        return (200, {"Content-Type": "application/json"}, b"{\"accessToken\": not json")
    if mode == "incomplete":
        return (200, {"Content-Type": "application/json"}, json.dumps({"tokenType": "aws_sigv4"}).encode())
    return None


def _replace_config_section(config_file: str, section: str, lines: list[str]) -> None:
    """Writes `lines` as the `[section]` of the AWS config file, replacing that section if it exists (a
    second `aws login` for the same profile rewrites its settings)."""
    kept: list[str] = []
    try:
        with open(config_file) as f:
            skipping = False
            for line in f.read().splitlines():
                stripped = line.strip()
                if stripped.startswith("[") and stripped.endswith("]"):
                    skipping = stripped[1:-1].strip() == section
                if not skipping:
                    kept.append(line)
    except FileNotFoundError:
        pass
    while kept and not kept[-1].strip():
        kept.pop()
    text = "\n".join(kept + ([""] if kept else []) + lines) + "\n"
    with open(config_file, "w") as f:
        f.write(text)


def _fake_id_token(login_session: str) -> str:
    header = b64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64url_encode(json.dumps({"sub": login_session, "iss": "https://signin.fake.invalid"}).encode())
    return f"{header}.{payload}."


def write_cache_file(path: str, document: dict) -> None:
    """Writes a cache file as botocore and `aws login` do: one line of JSON, mode 0600, atomically."""
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(document))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _Handler(http.server.BaseHTTPRequestHandler):
    fake: FakeSignIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # the request line is harmless, but keep test output quiet
        pass

    def _serve(self):
        fake = self.fake
        with fake._lock:
            fake.requests += 1
            fake.last_request_headers = {k: v for k, v in self.headers.items() if k.lower() != "dpop"}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path != TOKEN_PATH:
            status, headers, payload = _error(404, "ResourceNotFoundException", "INVALID_REQUEST", "No such path.")
        else:
            result = fake.handle_token_request(self.command, self.path, self.headers, body)
            if result == "close":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if result == "hang":
                fake._release.wait()
                self.close_connection = True
                return
            if isinstance(result, tuple) and result[0] == "slow":
                time.sleep(fake.slow_seconds)
                result = result[1]
            status, headers, payload = result
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = _serve
    do_GET = _serve
    do_PUT = _serve


def _control(fake: FakeSignIn, command: dict) -> dict:
    """One command of the standalone control protocol (one JSON object per line on stdin, one answer per
    line on stdout). Answers carry identifiers and counters, never a secret."""
    cmd = command.get("cmd")
    if cmd == "write_login":
        expires_at = None
        if command.get("expires_in_seconds") is not None:
            expires_at = fake.clock() + float(command["expires_in_seconds"])
        fixture = fake.write_login(
            command["home"], profile=command.get("profile", "default"), region=command.get("region", "us-east-1"),
            account_id=command.get("account_id", "123456789012"), expires_at=expires_at,
            config_file=command.get("config_file"), cache_dir=command.get("cache_dir"),
            extra_fields=command.get("extra_fields"),
        )
        return {"cache_file": fixture.cache_file, "config_file": fixture.config_file,
                "login_session": fixture.login_session, "access_key_id": fixture.issued.access_key_id}
    if cmd == "fail_next":
        fake.fail_next(command["mode"], int(command.get("times", 1)))
        return {"ok": True}
    if cmd == "fail_always":
        fake.fail_always(command.get("mode"))
        return {"ok": True}
    if cmd == "revoke":
        fake.revoke_session(command["login_session"], command.get("reason", "USER_CREDENTIALS_CHANGED"))
        return {"ok": True}
    if cmd == "advance":
        fake.clock.advance(float(command["seconds"]))
        return {"ok": True}
    if cmd == "set_expires_in":
        fake.expires_in = int(command["seconds"])
        return {"ok": True}
    if cmd == "set_slow_seconds":
        fake.slow_seconds = float(command["seconds"])
        return {"ok": True}
    if cmd == "stats":
        return fake.stats()
    if cmd == "check_cache":
        return check_cache_file(fake, command["path"])
    if cmd == "verify_proof":
        try:
            payload = verify_dpop_proof(command["proof"], expected_htu=command["htu"], now=fake.clock())
        except ProofError as e:
            return {"ok": False, "reason": str(e)}
        return {"ok": True, "payload": payload}
    raise ValueError(f"unknown command {cmd!r}")


def check_cache_file(fake: FakeSignIn, path: str) -> dict:
    """What a test needs to know about a cache file, without a secret: does it parse, is its refresh token
    the newest the fake issued, are its credentials ones the fake issued (and which serial)."""
    try:
        with open(path) as f:
            text = f.read()
        document = json.loads(text)
    except (OSError, ValueError) as e:
        return {"parses": False, "error": type(e).__name__}
    access = document.get("accessToken") or {}
    issued = fake.issued_for(access.get("accessKeyId", ""))
    token = document.get("refreshToken", "")
    with fake._lock:
        session = fake._tokens[token].session.login_session if token in fake._tokens else None
    return {
        "parses": True,
        "one_line": "\n" not in text.rstrip("\n"),
        "mode": oct(os.stat(path).st_mode & 0o777),
        "refresh_token_serial": fake.refresh_token_serial(token),
        "newest_serial": fake.refresh_token_serial(fake.newest_refresh_token(session)) if session else None,
        "refresh_token_usable": fake.refresh_token_usable(token),
        "credentials_issued": issued is not None
        and issued.secret_access_key == access.get("secretAccessKey")
        and issued.session_token == access.get("sessionToken"),
        "credentials_serial": issued.serial if issued else None,
        "expires_at": access.get("expiresAt"),
        "account_id": access.get("accountId"),
        "keys": sorted(document),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="A strict fake AWS Sign-In token service on loopback.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--expires-in", type=int, default=MAX_EXPIRES_IN, help="credential lifetime, ≤ 900 s")
    parser.add_argument("--reuse-window", type=float, default=300.0, help="seconds a rotated refresh token stays valid")
    parser.add_argument("--write-login", metavar="HOME", help="write an aws-login profile and cache file into HOME")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--fail", action="append", default=[], choices=FAILURE_MODES, help="fail the next request so (repeatable)")
    parser.add_argument("--control", action="store_true",
                        help="read JSON commands from stdin, one per line, answer each on stdout; exit at EOF")
    args = parser.parse_args(argv)
    fake = FakeSignIn(expires_in=args.expires_in, reuse_window=args.reuse_window).start(args.port)
    for mode in args.fail:
        fake.fail_next(mode)
    info = {"url": fake.url}
    if args.write_login:
        fixture = fake.write_login(args.write_login, profile=args.profile, region=args.region)
        info.update(cache_file=fixture.cache_file, config_file=fixture.config_file, login_session=fixture.login_session)
    print(json.dumps(info), flush=True)
    try:
        if args.control:
            for line in sys.stdin:
                if not line.strip():
                    continue
                try:
                    answer = _control(fake, json.loads(line))
                except Exception as e:  # noqa: BLE001 - reported to the driver, which fails its test
                    answer = {"error": f"{type(e).__name__}: {e}"}
                print(json.dumps(answer), flush=True)
        else:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        print(json.dumps(fake.stats()), file=sys.stderr, flush=True)
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
