"""Support for credd's integration tests: the fakes, the daemon harness, and the registry of test secrets.

Every secret a fake issues (secret keys, session tokens, IMDS tokens, credd's auth token, refresh tokens,
DPoP keys...) goes through `register_secret`. Files that must never hold one (credd's logs, status output,
anything a test captures) go through `watch_for_secrets`. conftest.py scans the watched files after every
test and at the end of the session, and scans pytest's captured output of every test; a hit fails the run
and names where the secret was found and what kind it was, never the secret itself.
"""

from __future__ import annotations

import threading
import urllib.parse
from pathlib import Path
from typing import Iterable, Optional

# Shorter values would match by chance; no real secret is this short.
MIN_SECRET_LENGTH = 8
# A run of this many characters of a secret counts as a leak too (pytest shortens long strings to their head
# and tail in assertion messages; a log line may print a prefix). Random base64 does not occur by chance.
FRAGMENT_LENGTH = 12


class SecretRegistry:
    """The test secrets of one pytest session and the places they must never appear. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = {}  # form -> label
        self._watched: dict[Path, str] = {}  # file -> what it is
        self._reported: set[tuple[str, str]] = set()
        self._fragments: dict[str, str] = {}  # every FRAGMENT_LENGTH-long run of every secret -> label
        self._scanned: dict[Path, tuple[int, int]] = {}  # file -> (size, mtime_ns) at its last clean scan

    @staticmethod
    def _forms(value: str) -> set[str]:
        # As written raw, JSON-escaped the way Foundation escapes '/', and percent-encoded in a URL or form.
        forms = {value, value.replace("/", "\\/"), urllib.parse.quote(value, safe="")}
        # A PEM key: each of its base64 lines alone is a leak too.
        if "-----BEGIN" in value:
            forms |= {line for line in value.splitlines() if len(line) >= 32 and "-----" not in line}
        return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}

    def register(self, value: Optional[str], label: str = "test secret") -> None:
        if not value or len(value) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            for form in self._forms(value):
                self._secrets.setdefault(form, label)
                if len(form) >= 2 * FRAGMENT_LENGTH:
                    for i in range(len(form) - FRAGMENT_LENGTH + 1):
                        self._fragments.setdefault(form[i:i + FRAGMENT_LENGTH], label)
            self._scanned.clear()

    def watch(self, path, what: Optional[str] = None) -> Path:
        path = Path(path)
        with self._lock:
            self._watched.setdefault(path, what or path.name)
        return path

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._secrets)

    def _spans(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, label) of every stretch of `text` made of secret fragments, merged."""
        with self._lock:
            fragments = self._fragments
            spans: list[list] = []
            n = FRAGMENT_LENGTH
            for i in range(len(text) - n + 1):
                label = fragments.get(text[i:i + n])
                if label is None:
                    continue
                if spans and i <= spans[-1][1]:
                    spans[-1][1] = i + n
                else:
                    spans.append([i, i + n, label])
        return [tuple(s) for s in spans]

    def find(self, text) -> list[str]:
        """The labels of the secrets that occur in `text` (str or bytes), whole or as a long fragment."""
        if not text:
            return []
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        with self._lock:
            items = list(self._secrets.items())
        found = {label for form, label in items if form in text}
        found |= {label for _, _, label in self._spans(text)}
        return sorted(found)

    def redact(self, text) -> str:
        """`text` with every registered secret (and every long fragment of one) replaced by
        <redacted LABEL>, safe to print."""
        if text is None:
            return ""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        with self._lock:
            items = sorted(self._secrets.items(), key=lambda kv: -len(kv[0]))
        for form, label in items:
            if form in text:
                text = text.replace(form, f"<redacted {label}>")
        for start, end, label in reversed(self._spans(text)):
            text = text[:start] + f"<redacted {label}>" + text[end:]
        return text

    def scan_watched(self, only_new: bool = True) -> list[str]:
        """One line per (watched file, secret kind) found, each reported once when `only_new`."""
        with self._lock:
            watched = list(self._watched.items())
        findings = []
        for path, what in watched:
            try:
                st = path.stat()
                if only_new and self._scanned.get(path) == (st.st_size, st.st_mtime_ns):
                    continue  # unchanged since a scan with the same secrets
                data = path.read_bytes()
            except OSError:
                continue
            labels = self.find(data)
            if not labels:
                with self._lock:
                    self._scanned[path] = (st.st_size, st.st_mtime_ns)
            for label in labels:
                key = (str(path), label)
                with self._lock:
                    if only_new and key in self._reported:
                        continue
                    self._reported.add(key)
                findings.append(f"{label} found in {what} ({path})")
        return findings


SECRETS = SecretRegistry()


def register_secret(value: Optional[str], label: str = "test secret") -> None:
    """Declare a value that must never appear in logs, status output or test output."""
    SECRETS.register(value, label)


def register_secrets(values: Iterable[Optional[str]], label: str = "test secret") -> None:
    for v in values:
        SECRETS.register(v, label)


def watch_for_secrets(path, what: Optional[str] = None) -> Path:
    """Declare a file that must never hold a registered secret (a log, a status dump...)."""
    return SECRETS.watch(path, what)


def redact(text) -> str:
    return SECRETS.redact(text)
