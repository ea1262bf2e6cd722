"""Widens the suite-wide secret scan to every HTTP answer a test reads through the harness: error bodies,
/healthz, /v1/status and /metrics go to a session-wide file the scan watches (a credentials answer holds
secrets on purpose and is left out).

`install()` wraps `support.harness.http_request` for the whole pytest session; test_secrets_scan.py calls it
when it is collected (before any test runs). conftest.py could call it too, to cover partial runs.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from . import harness, watch_for_secrets

_installed = False
_lock = threading.Lock()
ANSWERS = Path(tempfile.mkdtemp(prefix="credd-answers-")) / "http-answers.log"


def _is_credentials_answer(reply) -> bool:
    return reply.status == 200 and b'"SecretAccessKey"' in reply.body


def install() -> Path:
    """Idempotent. Returns the watched file."""
    global _installed
    with _lock:
        if _installed:
            return ANSWERS
        watch_for_secrets(ANSWERS, "HTTP answers credd gave through the harness (errors, health, status, metrics)")
        original = harness.http_request

        def recording_http_request(conn, method, path, headers):
            reply = original(conn, method, path, headers)
            if not _is_credentials_answer(reply):
                with _lock, open(ANSWERS, "ab") as f:
                    f.write(f"{method} {path} -> {reply.status} {sorted(reply.headers.items())}\n".encode())
                    f.write(reply.body + b"\n")
            return reply

        recording_http_request.__wrapped__ = original
        harness.http_request = recording_http_request
        _installed = True
    return ANSWERS
