"""credd serve never starts libdispatch's worker pool (issue 8, idle cost).

Once any of libdispatch's root queues is used, its worker-pool monitor wakes the process every second for as
long as it lives. credd runs Swift concurrency on its own executors (one NIO event loop, the main actor on the
main thread) and takes its signals on a thread of its own, so after a credentials fetch, requests on both
listeners, a reload (SIGHUP) and a refresher sleeping, no libdispatch thread may exist. Its threads are named
after the root queues, truncated from the front by the kernel's 15-byte limit ("oot.default-qos",
"-qos.overcommit", "com.apple.root...").
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from support.notify_harness import NotifyHarness

DISPATCH_THREAD = re.compile(r"qos|overcommit|com\.apple|dispatch", re.IGNORECASE)


def _threads(pid: int) -> list[str]:
    names = []
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        try:
            names.append((task / "comm").read_text().strip())
        except FileNotFoundError:  # the thread ended while listing
            pass
    return names


def _exercise(credd, fake_imds) -> None:
    """Everything an ordinary day of `credd serve` does, compressed."""
    credd.wait_serving()
    assert fake_imds.credential_gets >= 1, "credd fetched credentials from the fake IMDS"
    for via in ("unix", "tcp"):
        assert credd.get("/v1/credentials", via=via).status == 200
        assert credd.get("/v1/status", via=via).status == 200
        assert credd.get("/healthz", via=via).status == 200
    # SIGHUP: the reload runs, the sets keep serving.
    credd.signal(signal.SIGHUP)
    credd.wait_for(lambda: "configuration reloaded" in credd.logs(), 10, "credd to log the reload")
    assert credd.get("/v1/credentials", via="unix").status == 200


def _assert_no_dispatch_threads(credd) -> None:
    # Twice: right after the activity (libdispatch's workers would still be alive) and a moment later
    # (its manager thread, which runs the 1 Hz monitor, would be).
    for _ in range(2):
        names = _threads(credd.process.pid)
        dispatch = [n for n in names if DISPATCH_THREAD.search(n)]
        assert not dispatch, (
            f"libdispatch threads {dispatch} in credd serve (all threads: {names}): something used a Dispatch "
            f"queue or the default Swift executors (see Sources/credd/Executors.swift)")
        time.sleep(1.5)
    assert credd.alive()


def test_no_libdispatch_thread_after_fetch_requests_and_reload(start_credd, fake_imds):
    credd = start_credd(imds_endpoint=fake_imds.url)
    _exercise(credd, fake_imds)
    _assert_no_dispatch_threads(credd)
    assert credd.stop() == 0, "graceful exit on SIGTERM"


def test_no_libdispatch_thread_under_systemd_with_a_watchdog(start_credd, fake_imds):
    """As under systemd: NOTIFY_SOCKET and a 2 s watchdog, so the pings (and what rides on them) run too."""
    with NotifyHarness() as notify:
        credd = start_credd(imds_endpoint=fake_imds.url, env=notify.env(watchdog_usec=2_000_000))
        notify.wait_for("READY", "1", timeout=20)
        _exercise(credd, fake_imds)
        time.sleep(1.2)  # past a couple of pings
        assert [m for m in notify.since(0) if m.has("WATCHDOG", "1")], "credd sent watchdog pings"
        _assert_no_dispatch_threads(credd)
        assert credd.stop() == 0, "graceful exit on SIGTERM"
