"""Benchmark 5: cold start on an activated socket. This script plays systemd's part for credd.socket: it
holds credd's listening Unix socket and TCP port, and when the first connection arrives (a GET
/v1/credentials over TCP with the token, queued by the kernel) it execs credd with the sockets and the fd
store entries as LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID. The time is from that connect() to the answer.
(`systemd-socket-activate` does the same for sockets but cannot pass a memfd through: it puts every
inherited fd into epoll, which refuses a memfd.)

* fd store: credd gets back, as LISTEN_FDS entry `credd-state`, the sealed memfd an earlier credd stored
  with FDSTORE=1 (taken from the notification socket this script plays PID 1 with): no upstream call.
* upstream: no fd store; credd fetches from the fake IMDS (IMDSv2: token, role, credentials) first.
"""

from __future__ import annotations

import fcntl
import http.client
import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional

from common import BenchError, Credd, http_get, median, start_fake_imds, workdir
from support.notify_harness import NotifyHarness  # on the path common set up

STATE = "credd-state"


def _stored_state(credd: Credd, notify: NotifyHarness) -> int:
    """Run credd once to have it store its credentials; returns the memfd systemd would keep."""
    credd.start()
    credd.wait_serving()
    notify.wait_for("FDSTORE", "1", timeout=10, predicate=lambda m: m.fields.get("FDNAME") == STATE)
    time.sleep(0.3)  # a store that follows at once replaces the first
    stored = [m for m in notify.messages if m.has("FDSTORE", "1") and m.fields.get("FDNAME") == STATE][-1]
    if len(stored.fds) != 1:
        raise BenchError(f"FDSTORE=1 carried {len(stored.fds)} fds, expected 1")
    credd.stop()
    return os.dup(stored.fds[0])


def _activated_request(credd: Credd, notify_env: dict, memfd: Optional[int]) -> tuple[float, object, Optional[float]]:
    """One activation: (seconds from the client's connect() to the whole first answer, its HTTP status,
    seconds to the first 200 when retrying at once after a 503)."""
    unix_path = credd.work / "activated.sock"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(unix_path))
    unix.listen(128)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(128)
    port = tcp.getsockname()[1]
    passed = ([(STATE, memfd)] if memfd is not None else []) + [("unix", unix.fileno()), ("tcp", tcp.fileno())]
    # systemd's protocol: the fds at 3, 4, …, LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID = the service's pid.
    # Copies above every fd in use (F_DUPFD takes the lowest free one ≥ 1000, never replaces one), which the
    # child's shell moves to 3, 4, … and closes.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 1000) for _, fd in passed]
    moves = " ".join(f"{3 + i}<&{fd} {fd}<&-" for i, fd in enumerate(high))
    script = f'exec {moves}; LISTEN_PID=$$ WATCHDOG_PID=$$; export LISTEN_PID WATCHDOG_PID; exec "$@"'
    env = dict(credd.env)
    env.update(notify_env)
    env["LISTEN_FDS"] = str(len(passed))
    env["LISTEN_FDNAMES"] = ":".join(name for name, _ in passed)
    token = credd.token()
    answer: dict = {}

    def client() -> None:
        # The first connection: queued by the kernel on the listening socket before credd exists.
        answer["t0"] = time.monotonic()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            answer["status"] = http_get(conn, "/v1/credentials", {"Authorization": token})[0]
            answer["t1"] = time.monotonic()
            # A 503 says "fetching, retry": retry at once (SDKs wait a second) to see when credentials come.
            status = answer["status"]
            while status == 503 and time.monotonic() - answer["t0"] < 10:
                time.sleep(0.002)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                status = http_get(conn, "/v1/credentials", {"Authorization": token})[0]
            if status == 200:
                answer["t200"] = time.monotonic()
        except (OSError, http.client.HTTPException) as e:
            answer["status"] = type(e).__name__
            answer.setdefault("t1", time.monotonic())

    log = open(credd.work / "activated.log", "ab")
    thread = threading.Thread(target=client, daemon=True)
    process = None
    try:
        thread.start()
        # As systemd on a socket unit: start the service when a listening socket becomes readable.
        if not select.select([unix, tcp], [], [], 10)[0]:
            raise BenchError("the first connection never arrived on the activated socket")
        process = subprocess.Popen(["bash", "-c", script, "bash", *credd.argv()], env=env, cwd=credd.work,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                   pass_fds=tuple(high))
        thread.join(15)
        if "t1" not in answer:
            raise BenchError(f"the first connection got no answer within 15 s; see {credd.work / 'activated.log'}")
        t200 = answer.get("t200")
        return answer["t1"] - answer["t0"], answer["status"], (t200 - answer["t0"]) if t200 else None
    finally:
        for fd in high:
            os.close(fd)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        unix.close()
        tcp.close()
        unix_path.unlink(missing_ok=True)


def run(binary: Path, *, smoke: bool = False, repeat: int = 10) -> dict:
    if smoke:
        repeat = 2
    work = workdir("coldstart")
    fake = start_fake_imds()
    out: dict = {"repeat": repeat}
    try:
        with NotifyHarness(keep_fds=True) as notify:
            credd = Credd(binary, work, imds_url=fake.url, audit=True, env=notify.env(), cpu=None)
            memfd = _stored_state(credd, notify)
            try:
                for label, fd in (("fd_store", memfd), ("upstream", None)):
                    times, served, statuses = [], [], {}
                    fetches = fake.credential_gets
                    for _ in range(repeat):
                        elapsed, status, to_credentials = _activated_request(credd, notify.env(), fd)
                        times.append(elapsed * 1000)
                        if to_credentials is not None:
                            served.append(to_credentials * 1000)
                        statuses[str(status)] = statuses.get(str(status), 0) + 1
                    out[label] = {"median_ms": round(median(times), 1), "max_ms": round(max(times), 1),
                                  "min_ms": round(min(times), 1), "statuses": statuses,
                                  "credentials_median_ms": round(median(served), 1) if served else None,
                                  "upstream_fetches": fake.credential_gets - fetches}
            finally:
                os.close(memfd)
    finally:
        fake.stop()
    return out
