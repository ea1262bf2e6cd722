"""Plays PID 1's side of sd_notify for tests (SYSTEMD.md §2): a datagram socket for NOTIFY_SOCKET.

    with NotifyHarness(tmp_path) as notify:
        env.update(notify.env(watchdog_usec=2_000_000))
        ...start the daemon...
        notify.wait_for("READY", "1", timeout=10)

Every datagram is kept as a `Notification`: the time it arrived (time.monotonic()), the sender's pid from
SCM_CREDENTIALS (the socket has SO_PASSCRED, as systemd's has), the assignments it carried and any file
descriptors that came with it (SCM_RIGHTS: FDSTORE=1 sends the fds to store). Received fds are kept open
for the test to inspect (`read_sealed_memfd`) when `keep_fds` is true, closed at once otherwise; `close()`
closes whatever is left.
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

# Memfd seals credd sets on its fd-store entries (Linux's F_SEAL_*).
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 0x1, 0x2, 0x4, 0x8
ALL_SEALS = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE
MAX_FDS = 32


@dataclass
class Notification:
    """One sd_notify datagram."""

    time: float  # time.monotonic() when it was read
    pid: Optional[int]  # from SCM_CREDENTIALS
    uid: Optional[int]
    raw: str
    fields: dict[str, str]
    fds: list[int] = field(default_factory=list)

    def has(self, key: str, value: Optional[str] = None) -> bool:
        return key in self.fields and (value is None or self.fields[key] == value)


def parse_assignments(text: str) -> dict[str, str]:
    """sd_notify's payload: newline-separated VAR=VALUE assignments (the last one wins)."""
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        if "=" in line:
            key, _, value = line.partition("=")
            fields[key] = value
    return fields


class NotifyHarness:
    """An AF_UNIX/SOCK_DGRAM notification socket with a reader thread recording what arrives."""

    def __init__(self, directory: Optional[Path] = None, *, keep_fds: bool = False) -> None:
        # sun_path is 108 bytes: keep the path short whatever the test's tmp_path is.
        self._dir = Path(tempfile.mkdtemp(prefix="credd-notify-", dir="/tmp"))
        self.path = str(self._dir / "notify.sock")
        self.keep_fds = keep_fds
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.bind(self.path)
        self._sock.settimeout(0.1)
        self._lock = threading.Condition()
        self._messages: list[Notification] = []
        self._closing = False
        self._thread = threading.Thread(target=self._read_loop, name="notify-harness", daemon=True)
        self._thread.start()

    # ---- environment for the daemon -------------------------------------------------------------

    def env(self, *, watchdog_usec: Optional[int] = None, watchdog_pid: Optional[int] = None) -> dict[str, str]:
        """NOTIFY_SOCKET (and WATCHDOG_USEC / WATCHDOG_PID when given) for the daemon's environment."""
        env = {"NOTIFY_SOCKET": self.path}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        if watchdog_pid is not None:
            env["WATCHDOG_PID"] = str(watchdog_pid)
        return env

    # ---- reading --------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        ancillary = socket.CMSG_SPACE(struct.calcsize("3i")) + socket.CMSG_SPACE(MAX_FDS * 4)
        while not self._closing:
            try:
                data, ancdata, _flags, _addr = self._sock.recvmsg(65536, ancillary, socket.MSG_CMSG_CLOEXEC)
            except socket.timeout:
                continue
            except OSError:
                if self._closing:
                    return
                raise
            now = time.monotonic()
            pid = uid = None
            fds: list[int] = []
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid, uid, _gid = struct.unpack("3i", payload[: struct.calcsize("3i")])
                elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received = array.array("i")
                    received.frombytes(payload[: len(payload) - (len(payload) % received.itemsize)])
                    fds.extend(received)
            if not self.keep_fds:
                for fd in fds:
                    os.close(fd)
                fds = []
            text = data.decode("utf-8", "replace")
            message = Notification(now, pid, uid, text, parse_assignments(text), fds)
            with self._lock:
                self._messages.append(message)
                self._lock.notify_all()

    @property
    def messages(self) -> list[Notification]:
        with self._lock:
            return list(self._messages)

    def since(self, start: float) -> list[Notification]:
        """The messages that arrived at or after monotonic time `start`."""
        return [m for m in self.messages if m.time >= start]

    def wait_for(self, key: str, value: Optional[str] = None, *, timeout: float, after: float = 0.0,
                 predicate: Optional[Callable[[Notification], bool]] = None) -> Notification:
        """The first message (arriving at or after monotonic time `after`) with KEY (=VALUE), within `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for m in self._messages:
                    if m.time >= after and m.has(key, value) and (predicate is None or predicate(m)):
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [" | ".join(f"{k}={v if k != 'STATUS' else '…'}" for k, v in m.fields.items())
                            for m in self._messages if m.time >= after]
                    want = f"{key}={value}" if value is not None else key
                    raise AssertionError(f"no {want} from the daemon within {timeout} s; got: {seen[-20:]}")
                self._lock.wait(remaining)

    def close(self) -> None:
        self._closing = True
        self._thread.join(2)
        self._sock.close()
        for m in self.messages:
            for fd in m.fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            m.fds = []
        try:
            os.unlink(self.path)
            os.rmdir(self._dir)
        except OSError:
            pass

    def __enter__(self) -> "NotifyHarness":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def memfd_seals(fd: int) -> int:
    """The seals of a memfd (F_GET_SEALS); raises OSError for anything else."""
    return fcntl.fcntl(fd, fcntl.F_GET_SEALS)


def read_sealed_memfd(fd: int, limit: int = 1 << 20) -> bytes:
    """The content of a memfd that must carry all four seals (credd's fd-store entries)."""
    seals = memfd_seals(fd)
    if seals & ALL_SEALS != ALL_SEALS:
        raise AssertionError(f"the stored fd has seals {seals:#x}, not write+grow+shrink+seal ({ALL_SEALS:#x})")
    size = os.fstat(fd).st_size
    if size > limit:
        raise AssertionError(f"the stored fd holds {size} bytes, more than {limit}")
    return os.pread(fd, size, 0)
