"""Raw connections to credd for the fault and bad-input suites: send exact bytes over TCP or the Unix socket,
read what comes back, and parse the answers with http.client (never by hand).

Every answer parsed here except a credentials answer (error bodies, health, status) is written to a file the
secret scan watches (`record_bodies`), so an error body that carried a secret would fail the run.
"""

from __future__ import annotations

import http.client
import io
import socket
import time
from pathlib import Path
from typing import NamedTuple, Optional

from . import watch_for_secrets

_BODIES: Optional[Path] = None


def record_bodies(path: Path) -> Path:
    """Every answer parsed by this module is appended to `path`, which the secret scan watches."""
    global _BODIES
    _BODIES = watch_for_secrets(path, "answers credd gave to raw requests")
    return _BODIES


def _record(data: bytes) -> None:
    if _BODIES is not None and data:
        with open(_BODIES, "ab") as f:
            f.write(data + b"\n")


class Target(NamedTuple):
    """Where to connect: ("tcp", (host, port)) or ("unix", path); `host` is what a well-behaved client
    sends as Host, `token` the Authorization it needs (None on the Unix socket)."""

    kind: str
    address: object
    host: str
    token: Optional[str]

    def connect(self, timeout: float = 5.0) -> socket.socket:
        if self.kind == "tcp":
            s = socket.create_connection(self.address, timeout=timeout)
        else:
            # With a timeout Python makes the socket non-blocking, and a Unix connect then fails with EAGAIN
            # while the listen backlog is full instead of waiting as a blocking connect does: wait for room
            # here, up to the timeout, like a blocking client would.
            deadline = time.monotonic() + timeout
            while True:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(timeout)
                try:
                    s.connect(str(self.address))
                    break
                except BlockingIOError:
                    s.close()
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.005)
        return s

    def auth_line(self) -> bytes:
        return b"" if self.token is None else b"Authorization: " + self.token.encode() + b"\r\n"

    def request(self, target: str = "/v1/credentials", method: str = "GET", extra: bytes = b"",
                host: Optional[str] = None, version: str = "HTTP/1.1") -> bytes:
        """A well-formed request head (plus `extra` header lines) as bytes."""
        h = self.host if host is None else host
        return (f"{method} {target} {version}\r\nHost: {h}\r\n".encode() + self.auth_line() + extra + b"\r\n")


def targets_of(credd) -> list[Target]:
    """Both listeners of a harness `Credd`: TCP with its token, the Unix socket without."""
    return [Target("tcp", (credd.tcp_host, credd.tcp_port), f"127.0.0.1:{credd.tcp_port}", credd.token()),
            Target("unix", credd.unix_path, "localhost", None)]


def exchange(target: Target, data: bytes, *, wait: float = 2.0, answers: Optional[int] = None,
             chunks: Optional[list] = None, pause: float = 0.0, methods: Optional[list] = None) -> tuple[bytes, bool]:
    """Send `data` (or `chunks` with `pause` between them), then read until credd closes, until `answers`
    complete answers (the last without `Connection: close`) have arrived, or until `wait` s pass without a
    byte. Returns (everything read, whether credd closed the connection)."""
    s = target.connect(timeout=max(wait, 1.0))
    out = bytearray()
    closed = False
    try:
        try:
            for piece in (chunks if chunks is not None else [data]):
                s.sendall(piece)
                if pause:
                    time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # credd may close before the whole input is sent; what it answered is still readable
        s.settimeout(wait)
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not b:
                closed = True
                break
            out += b
            if answers is not None:
                got = parse_answers(bytes(out), methods=methods, record=False)
                if len(got) >= answers and got[-1].headers.get("connection", "").lower() != "close":
                    break
    finally:
        s.close()
    return bytes(out), closed


class Answer(NamedTuple):
    status: int
    headers: dict
    body: bytes

    def __repr__(self) -> str:  # a credentials body never reaches an assertion message
        return f"Answer({self.status}, {len(self.body)} bytes, code={self.code!r})"

    @property
    def code(self) -> Optional[str]:
        import json

        try:
            doc = json.loads(self.body)
        except ValueError:
            return None
        return doc.get("code") if isinstance(doc, dict) else None


class _Unclosable(io.BytesIO):
    """HTTPResponse closes its file after each body; pipelined answers share this one."""

    def close(self) -> None:
        pass


class _Bytes:
    """Just enough of a socket for http.client.HTTPResponse to read from bytes."""

    def __init__(self, data: bytes):
        self._file = _Unclosable(data)

    def makefile(self, *args, **kwargs):
        return self._file


def parse_answers(data: bytes, methods: Optional[list] = None, record: bool = True) -> list[Answer]:
    """Every complete HTTP/1.1 answer in `data`, in order (pipelined answers share one buffer); `methods`
    names the request method of each (HEAD answers have no body), GET by default."""
    answers = []
    source = _Bytes(data)
    while source._file.tell() < len(data):
        method = methods[len(answers)] if methods and len(answers) < len(methods) else "GET"
        r = http.client.HTTPResponse(source, method=method)
        try:
            r.begin()
            body = r.read()
        except (http.client.HTTPException, ValueError):
            break
        if not record:
            answers.append(Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, body))
            continue
        answers.append(Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, body))
        # A credentials answer holds secrets on purpose; every other answer (errors, health) must not.
        head = f"{r.status} {r.getheaders()}".encode()
        _record(head + b" " + (b"<credentials answer>" if b'"SecretAccessKey"' in body else body))
    return answers


def one_answer(target: Target, data: bytes, **kw) -> tuple[Optional[Answer], bool]:
    kw.setdefault("answers", 1)
    raw, closed = exchange(target, data, **kw)
    answers = parse_answers(raw)
    return (answers[0] if answers else None), closed
