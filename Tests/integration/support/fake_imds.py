"""A strict IMDSv2 fake: the EC2 instance metadata service as credd and the SDKs see it (PROTOCOLS §2).

Use it from tests as an object (``FakeIMDS(...).start()``, controlled through thread-safe methods), or
standalone for demos and benchmarks::

    python3 fake_imds.py --port 0 --role web --lifetime 6h

which prints the endpoint URL on its first line and serves until SIGINT/SIGTERM (SIGUSR1 toggles an
outage, SIGUSR2 rotates the credentials).

Behaviour, as the real service answers:

* ``PUT /latest/api/token`` needs ``X-aws-ec2-metadata-token-ttl-seconds`` between 1 and 21600 (else 400)
  and is refused with 403 when it carries ``X-Forwarded-For``. Tokens expire after their TTL, measured on
  the fake's clock (``fake.clock.advance(...)`` moves it without sleeping).
* Every GET needs a valid ``X-aws-ec2-metadata-token`` (401 otherwise) unless the fake runs with
  ``allow_v1=True``; a token that is present but invalid or expired is 401 even then.
* ``GET /latest/meta-data/iam/security-credentials/`` lists the role, ``…/<role>`` is the credentials
  document (404 for another role name), ``GET /latest/dynamic/instance-identity/document`` has ``accountId``.

Nothing the fake logs or records carries a secret: the request log notes whether a token was valid, never
its value. Every secret it creates (secret keys, session tokens, IMDS tokens) is handed to ``secret_sink``
as ``secret_sink(value, label)`` so a test suite can scan its output for leaks.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import http.server
import json
import secrets as _secrets
import signal
import socket
import string
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

TOKEN_PATH = "/latest/api/token"
ROLE_LIST_PATH = "/latest/meta-data/iam/security-credentials/"
IDENTITY_PATH = "/latest/dynamic/instance-identity/document"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TTL = 21600

OUTAGE_MODES = ("refuse", "close", "hang")
GARBAGE_MODES = ("invalid-json", "truncated-json", "error-code", "empty", "missing-fields")

# The message EC2 puts into a credentials document when the role cannot be assumed by the instance.
ERROR_CODE_MESSAGE = "EC2 cannot assume the role credd-fake-role: the role does not trust ec2.amazonaws.com."


def _rfc3339(epoch: float) -> str:
    """The timestamp shape IMDS uses (botocore parses exactly "%Y-%m-%dT%H:%M:%SZ")."""
    return _dt.datetime.fromtimestamp(int(epoch), tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(text: str) -> float:
    """"300ms", "5s", "5m", "6h" or plain seconds, as credd's config reads them."""
    text = str(text).strip()
    for suffix, factor in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * factor
    return float(text)


class FakeClock:
    """Wall-clock time plus an offset that tests advance, so token TTLs can pass without sleeping."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    @property
    def offset(self) -> float:
        with self._lock:
            return self._offset


@dataclass(frozen=True)
class RoleCredentials:
    """One credentials document's worth of role credentials. Its repr never shows the secrets."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    token: str = field(repr=False)
    expiration: float  # epoch seconds
    last_updated: float

    @property
    def expiration_text(self) -> str:
        return _rfc3339(self.expiration)

    def document(self) -> dict:
        return {
            "Code": "Success",
            "LastUpdated": _rfc3339(self.last_updated),
            "Type": "AWS-HMAC",
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Token": self.token,
            "Expiration": self.expiration_text,
        }


def _random_chars(alphabet: str, n: int) -> str:
    return "".join(_secrets.choice(alphabet) for _ in range(n))


def generate_credentials(now: float, lifetime: float) -> RoleCredentials:
    """Credentials shaped like EC2's: ASIA key id, 40-character secret with '/' and '+', long token."""
    key_id = "ASIA" + _random_chars(string.ascii_uppercase + "234567", 16)
    secret = _random_chars(string.ascii_letters + string.digits + "/+", 40)
    # Real session tokens are long base64 blobs that start with "IQoJb3JpZ2luX2Vj"; keep the shape, not the content.
    token = "IQoJb3JpZ2luX2Vj" + base64.b64encode(_secrets.token_bytes(240)).decode()
    return RoleCredentials(key_id, secret, token, now + lifetime, now)


@dataclass
class _Token:
    expires_at: float


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address, handler, fake: "FakeIMDS", family: int):
        self.address_family = family
        self.fake = fake
        super().__init__(address, handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real service
    server_version = "EC2ws"
    sys_version = ""

    # The request log is the fake's own; the default one writes to stderr.
    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        pass

    def setup(self):
        super().setup()
        self.server.fake._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, False)

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > 0:
            self.rfile.read(int(length))

    def _handle(self) -> None:
        self._discard_body()
        fake: FakeIMDS = self.server.fake
        status, content_type, body, extra = fake._answer(self.command, self.path, self.headers, self)
        if status is None:  # the fake decided to drop the connection without an answer
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class FakeIMDS:
    """A strict IMDSv2 on loopback with a control API; every method is safe to call from any thread."""

    def __init__(
        self,
        *,
        role: Optional[str] = "credd-fake-role",
        lifetime: float = 6 * 3600,
        allow_v1: bool = False,
        account_id: str = "123456789012",
        region: str = "eu-west-1",
        instance_id: str = "i-0123456789abcdef0",
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Optional[FakeClock] = None,
        secret_sink: Optional[Callable[[str, str], None]] = None,
    ) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"FakeIMDS serves on loopback only, not on {host!r}.")
        self.clock = clock or FakeClock()
        self.account_id = account_id
        self.region = region
        self.instance_id = instance_id
        self._host = "127.0.0.1" if host == "localhost" else host
        self._family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        self._port = port
        self._lock = threading.RLock()
        self._secret_sink = secret_sink
        self._role = role
        self._allow_v1 = allow_v1
        self._lifetime = lifetime
        self._tokens: dict[str, _Token] = {}
        self._outage: Optional[str] = None
        self._outage_released = threading.Event()
        self._outage_released.set()
        self._delay = 0.0
        self._delay_paths: Optional[tuple[str, ...]] = None
        self._garbage: Optional[str] = None
        self._fail_tokens = False
        self._token_error: Optional[int] = None
        self._counts: Counter = Counter()
        self._dropped = 0
        self._log: list[dict] = []
        self._connections: set = set()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._credentials = self._issue(lifetime)

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "FakeIMDS":
        with self._lock:
            self._listen()
        return self

    def stop(self) -> None:
        with self._lock:
            self._outage_released.set()
            self._close_listener()
            self._drop_connections()

    def __enter__(self) -> "FakeIMDS":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if self._family == socket.AF_INET6 else self._host
        return f"http://{host}:{self._port}"

    def _listen(self) -> None:
        server = _Server((self._host, self._port), _Handler, self, self._family)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=f"fake-imds-{self._port}", daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def _drop_connections(self) -> None:
        for conn in list(self._connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _track(self, conn, alive: bool) -> None:
        with self._lock:
            if alive:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # ---- credentials -----------------------------------------------------------------------------

    def _sink(self, value: str, label: str) -> None:
        if self._secret_sink is not None:
            self._secret_sink(value, label)

    def _issue(self, lifetime: float) -> RoleCredentials:
        creds = generate_credentials(self.clock.now(), lifetime)
        self._sink(creds.secret_access_key, "IMDS secret access key")
        self._sink(creds.token, "IMDS session token")
        return creds

    @property
    def credentials(self) -> RoleCredentials:
        """The credentials the fake serves now."""
        with self._lock:
            return self._credentials

    def set_credentials(
        self,
        access_key_id: str,
        secret_access_key: str,
        token: str,
        expiration,
    ) -> RoleCredentials:
        """Serve these credentials (from moto, say). `expiration`: epoch seconds, datetime or RFC 3339 text."""
        if isinstance(expiration, str):
            expiration = _dt.datetime.fromisoformat(expiration.replace("Z", "+00:00"))
        if isinstance(expiration, _dt.datetime):
            if expiration.tzinfo is None:
                expiration = expiration.replace(tzinfo=_dt.timezone.utc)
            expiration = expiration.timestamp()
        creds = RoleCredentials(access_key_id, secret_access_key, token, float(expiration), self.clock.now())
        self._sink(secret_access_key, "IMDS secret access key")
        self._sink(token, "IMDS session token")
        with self._lock:
            self._credentials = creds
        return creds

    def issue(self, lifetime: Optional[float] = None) -> RoleCredentials:
        """Generate and serve new credentials that last `lifetime` seconds (default: the fake's lifetime)."""
        creds = self._issue(self._lifetime if lifetime is None else lifetime)
        with self._lock:
            self._credentials = creds
        return creds

    def rotate(self, lifetime: Optional[float] = None) -> RoleCredentials:
        """EC2's hourly rotation: new key, secret and token."""
        return self.issue(lifetime)

    # ---- faults ----------------------------------------------------------------------------------

    def outage(self, down: bool, mode: str = "refuse") -> None:
        """Take the service down or bring it back.

        refuse: the listener closes (connection refused) and open connections are cut;
        close: connections are accepted and closed without an answer;
        hang: requests are read and never answered until the outage ends (clients time out).
        """
        if down and mode not in OUTAGE_MODES:
            raise ValueError(f"unknown outage mode {mode!r}; use one of {OUTAGE_MODES}")
        with self._lock:
            if down:
                if self._outage == "refuse" and mode != "refuse":
                    self._listen()
                self._outage = mode
                if mode == "hang":
                    self._outage_released.clear()
                else:
                    self._outage_released.set()
                if mode == "refuse":
                    if self._server is not None:
                        self._close_listener()
                    self._drop_connections()
            else:
                was = self._outage
                self._outage = None
                self._outage_released.set()
                if was == "refuse":
                    self._listen()

    @property
    def is_down(self) -> bool:
        with self._lock:
            return self._outage is not None

    def delay(self, seconds: float, paths: Optional[tuple[str, ...]] = None) -> None:
        """Answer every request (or only those whose path starts with one of `paths`) `seconds` late."""
        with self._lock:
            self._delay = float(seconds)
            self._delay_paths = tuple(paths) if paths else None

    @property
    def added_latency(self) -> float:
        with self._lock:
            return self._delay

    @added_latency.setter
    def added_latency(self, seconds: float) -> None:
        self.delay(seconds)

    def garbage(self, mode: Optional[str]) -> None:
        """Spoil the credentials document: invalid-json, truncated-json, error-code (Code != Success with a
        Message), empty (200 with no body), missing-fields (no Token/Expiration); None restores it."""
        if mode is not None and mode not in GARBAGE_MODES:
            raise ValueError(f"unknown garbage mode {mode!r}; use one of {GARBAGE_MODES}")
        with self._lock:
            self._garbage = mode

    def fail_tokens(self, fail: bool = True) -> None:
        """Answer 401 to every GET however valid its token (PUTs still hand out tokens)."""
        with self._lock:
            self._fail_tokens = fail

    def token_error(self, status: Optional[int]) -> None:
        """Answer every token PUT with this status (403: IMDS access disabled; 404/405: no IMDSv2)."""
        with self._lock:
            self._token_error = status

    def rename_role(self, new: Optional[str]) -> None:
        """Attach a role by another name (None: no role attached, the list answers 404)."""
        with self._lock:
            self._role = new

    @property
    def role(self) -> Optional[str]:
        with self._lock:
            return self._role

    def allow_v1(self, allow: bool) -> None:
        with self._lock:
            self._allow_v1 = allow

    def expire_all_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    # ---- what happened ---------------------------------------------------------------------------

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return self._counts[(method.upper(), path)]

    @property
    def counts(self) -> dict:
        """Requests by (method, path)."""
        with self._lock:
            return dict(self._counts)

    @property
    def token_puts(self) -> int:
        return self.count("PUT", TOKEN_PATH)

    @property
    def role_list_gets(self) -> int:
        with self._lock:
            return sum(n for (m, p), n in self._counts.items()
                       if m == "GET" and p.rstrip("/") == ROLE_LIST_PATH.rstrip("/"))

    @property
    def credential_gets(self) -> int:
        """GETs of a credentials document, for any role name, whatever the answer."""
        with self._lock:
            return sum(n for (m, p), n in self._counts.items()
                       if m == "GET" and p.startswith(ROLE_LIST_PATH) and len(p) > len(ROLE_LIST_PATH))

    @property
    def identity_gets(self) -> int:
        return self.count("GET", IDENTITY_PATH)

    @property
    def dropped(self) -> int:
        """Requests read during a `close` or `hang` outage and never answered."""
        with self._lock:
            return self._dropped

    @property
    def request_log(self) -> list[dict]:
        """One entry per request: time, method, path, status, token state. Never a secret."""
        with self._lock:
            return [dict(e) for e in self._log]

    def reset_counters(self) -> None:
        with self._lock:
            self._counts.clear()
            self._log.clear()
            self._dropped = 0

    # ---- the service -----------------------------------------------------------------------------

    def _token_state(self, headers) -> str:
        value = headers.get(TOKEN_HEADER)
        if value is None:
            return "none"
        token = self._tokens.get(value)
        if token is None:
            return "invalid"
        if self.clock.now() >= token.expires_at:
            return "expired"
        return "valid"

    def _answer(self, method: str, raw_path: str, headers, handler):
        path = raw_path.split("?", 1)[0]
        with self._lock:
            self._counts[(method, path)] += 1
            entry = {"time": self.clock.now(), "method": method, "path": path,
                     "xff": headers.get("X-Forwarded-For") is not None,
                     "ttl": headers.get(TTL_HEADER), "token": self._token_state(headers)}
            self._log.append(entry)
            outage = self._outage
            delay = self._delay
            delay_paths = self._delay_paths
        if outage in ("close", "refuse"):
            with self._lock:
                self._dropped += 1
                entry["status"] = None
            return None, "", b"", {}
        if outage == "hang":
            self._outage_released.wait()
            with self._lock:
                self._dropped += 1
                entry["status"] = None
            return None, "", b"", {}
        if delay > 0 and (delay_paths is None or any(path.startswith(p) for p in delay_paths)):
            time.sleep(delay)
        with self._lock:
            status, content_type, body, extra = self._route(method, path, headers)
            entry["status"] = status
        return status, content_type, body, extra

    def _route(self, method: str, path: str, headers):
        text = "text/plain"
        if path == TOKEN_PATH:
            if method != "PUT":
                return 405, text, b"", {}
            if headers.get("X-Forwarded-For") is not None:
                return 403, text, b"", {}
            if self._token_error is not None:
                return self._token_error, text, b"", {}
            ttl = headers.get(TTL_HEADER)
            if ttl is None or not ttl.strip().isdigit() or not 1 <= int(ttl) <= MAX_TTL:
                return 400, text, b"", {}
            value = "AQAEA" + base64.urlsafe_b64encode(_secrets.token_bytes(39)).decode().rstrip("=")
            self._tokens[value] = _Token(self.clock.now() + int(ttl))
            self._sink(value, "IMDS API token")
            return 200, text, value.encode(), {TTL_HEADER: str(int(ttl))}

        if method not in ("GET", "HEAD"):
            return 405, text, b"", {}
        state = self._token_state(headers)
        if state != "valid" and not (state == "none" and self._allow_v1):
            return 401, text, b"", {}
        if self._fail_tokens and state != "none":
            return 401, text, b"", {}

        if path.rstrip("/") == ROLE_LIST_PATH.rstrip("/"):
            if self._role is None:
                return 404, text, b"", {}
            return 200, text, self._role.encode(), {}
        if path.startswith(ROLE_LIST_PATH):
            name = path[len(ROLE_LIST_PATH):]
            if self._role is None or name != self._role:
                return 404, text, b"", {}
            return 200, text, self._credentials_body(), {}
        if path == IDENTITY_PATH:
            now = self.clock.now()
            doc = {
                "accountId": self.account_id,
                "architecture": "x86_64",
                "availabilityZone": self.region + "a",
                "imageId": "ami-0123456789abcdef0",
                "instanceId": self.instance_id,
                "instanceType": "t3.micro",
                "pendingTime": _rfc3339(now - 86400),
                "privateIp": "10.0.0.12",
                "region": self.region,
                "version": "2017-09-30",
            }
            return 200, text, json.dumps(doc, indent=2).encode(), {}
        if path == "/latest/meta-data/placement/region":
            return 200, text, self.region.encode(), {}
        if path == "/latest/meta-data/instance-id":
            return 200, text, self.instance_id.encode(), {}
        return 404, text, b"", {}

    def _credentials_body(self) -> bytes:
        doc = self._credentials.document()
        mode = self._garbage
        if mode is None:
            return json.dumps(doc, indent=2).encode()
        if mode == "invalid-json":
            return b"<html><body>Service Unavailable</body></html>"
        if mode == "truncated-json":
            full = json.dumps({k: doc[k] for k in ("Code", "LastUpdated", "Type", "AccessKeyId")}, indent=2)
            return full[: len(full) // 2].encode()
        if mode == "error-code":
            return json.dumps({"Code": "AssumeRoleUnauthorizedAccess", "Message": ERROR_CODE_MESSAGE,
                               "LastUpdated": doc["LastUpdated"]}, indent=2).encode()
        if mode == "empty":
            return b""
        if mode == "missing-fields":
            return json.dumps({k: doc[k] for k in ("Code", "LastUpdated", "Type", "AccessKeyId")}).encode()
        raise AssertionError(mode)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="A strict IMDSv2 fake on loopback (for demos and benchmarks).")
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default) or ::1")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one")
    parser.add_argument("--role", default="credd-fake-role", help="the attached role's name")
    parser.add_argument("--lifetime", default="6h", help="lifetime of issued credentials (e.g. 6h, 30m, 90s)")
    parser.add_argument("--rotate-every", default=None, help="rotate the credentials this often (e.g. 1h)")
    parser.add_argument("--allow-v1", action="store_true", help="answer GETs without a session token")
    parser.add_argument("--account-id", default="123456789012")
    parser.add_argument("--region", default="eu-west-1")
    parser.add_argument("--delay", default="0", help="answer every request this late (e.g. 200ms)")
    args = parser.parse_args(argv)

    fake = FakeIMDS(role=args.role, lifetime=parse_duration(args.lifetime), allow_v1=args.allow_v1,
                    account_id=args.account_id, region=args.region, host=args.host, port=args.port)
    fake.delay(parse_duration(args.delay))
    fake.start()
    print(fake.url, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: fake.outage(not fake.is_down))
    signal.signal(signal.SIGUSR2, lambda *_: fake.rotate())
    every = parse_duration(args.rotate_every) if args.rotate_every else None
    while not stop.wait(every if every else 3600):
        if every:
            fake.rotate()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
