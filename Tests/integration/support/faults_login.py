"""Helpers for the login fault tests: a credd serving one `source: login` set from a fake `aws login`, and a
launcher that runs credd in a private mount namespace (`unshare -m`) with a small tmpfs as its login cache
directory, so a test can fill that disk or make it read-only without touching the host.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Optional

from support.harness import Credd

LOGIN_REFRESH_BEFORE = 11 * 60

_LAUNCHER = """#!/bin/sh
# credd in a private mount namespace whose login cache directory is a small tmpfs (issue 7 fault tests).
set -e
if [ "$1" = serve ]; then
    exec unshare -m --propagation private "$0" in-namespace "$@"
fi
if [ "$1" = in-namespace ]; then
    shift
    cp -a "$CREDD_TEST_CACHE_DIR" "$CREDD_TEST_CACHE_DIR.seed"
    mount -t tmpfs -o "size=$CREDD_TEST_TMPFS_SIZE,mode=0700" credd-test-cache "$CREDD_TEST_CACHE_DIR"
    cp -a "$CREDD_TEST_CACHE_DIR.seed/." "$CREDD_TEST_CACHE_DIR/"
    rm -rf "$CREDD_TEST_CACHE_DIR.seed"
fi
[ "$1" = in-namespace ] && shift
exec "$CREDD_TEST_REAL_BINARY" "$@"
"""


def launcher(directory: Path) -> Path:
    path = directory / "credd-in-mount-namespace.sh"
    path.write_text(_LAUNCHER)
    path.chmod(0o755)
    return path


def login_credd(credd_bin: Path, workdir: Path, signin, *, expires_at: float, tmpfs_size: Optional[str] = None,
                name: str = "credd"):
    """(Credd, LoginFixture): an `aws login` written into the daemon's HOME; credd not started yet. With
    `tmpfs_size`, credd runs in its own mount namespace with the cache directory on a tmpfs of that size."""
    home = workdir / name / "home"
    home.mkdir(parents=True, exist_ok=True)
    fixture = signin.write_login(str(home), profile="default", expires_at=expires_at)
    env = {}
    binary = credd_bin
    if tmpfs_size is not None:
        binary = launcher(workdir)
        env = {"CREDD_TEST_CACHE_DIR": fixture.cache_dir, "CREDD_TEST_TMPFS_SIZE": tmpfs_size,
               "CREDD_TEST_REAL_BINARY": str(credd_bin)}
    credd = Credd(binary, workdir / name, name=name, env=env,
                  credentials={"default": {"source": "login", "profile": "default", "endpoint": signin.url}})
    return credd, fixture


def in_namespace(credd, path: str) -> Path:
    """`path` as credd sees it (through /proc/PID/root, which follows its mount namespace)."""
    return Path(f"/proc/{credd.process.pid}/root") / path.lstrip("/")


def fill_up(directory: Path) -> int:
    """Fills the file system holding `directory`; returns the bytes written."""
    written = 0
    try:
        f = open(directory / ".credd-test-filler", "wb")
    except OSError:
        return 0  # already full: not even a directory entry fits
    try:
        chunk = b"\0" * 1024
        try:
            while True:
                f.write(chunk)
                f.flush()
                written += len(chunk)
        except OSError:
            pass
        # Down to the last byte, so nothing at all fits afterwards.
        try:
            while True:
                f.write(b"\0")
                f.flush()
                written += 1
        except OSError:
            pass
    finally:
        try:
            f.close()
        except OSError:
            pass  # the last buffered bytes did not fit either: full
    return written


def parses_as_login_cache(data: bytes) -> Optional[str]:
    """None if `data` is a complete login cache document, else what is wrong."""
    try:
        doc = json.loads(data)
    except ValueError:
        return "not JSON"
    token = doc.get("accessToken") if isinstance(doc, dict) else None
    if not isinstance(token, dict):
        return "no accessToken"
    for key in ("accessKeyId", "secretAccessKey", "sessionToken", "expiresAt"):
        if not isinstance(token.get(key), str) or not token[key]:
            return f"no accessToken.{key}"
    for key in ("refreshToken", "clientId", "dpopKey"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            return f"no {key}"
    return None


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)
