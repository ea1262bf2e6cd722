"""Benchmark 3: idle cost. credd runs as under systemd with WatchdogSec=30 (WATCHDOG_USEC, NOTIFY_SOCKET from
a datagram socket this script reads, as PID 1 would), serving credentials that need no refresh within the
window. Over the window nothing should wake it but the watchdog pings (every WATCHDOG_USEC/4) and scheduled
refreshes: every thread's context switches (/proc/PID/task/*/status) are counted, and compared with the
notifications that arrived.
"""

from __future__ import annotations

import time
from pathlib import Path

from common import Credd, context_switches, cpu_seconds, start_fake_imds, workdir
from support.notify_harness import NotifyHarness  # on the path common set up

WATCHDOG_USEC = 30_000_000


def run(binary: Path, *, smoke: bool = False, window: float = 60.0, settle: float = 15.0) -> dict:
    if smoke:
        window, settle = 2.0, 0.5
    work = workdir("idle")
    fake = start_fake_imds(lifetime=12 * 3600)
    with NotifyHarness() as notify:
        env = notify.env(watchdog_usec=WATCHDOG_USEC)
        credd = Credd(binary, work, imds_url=fake.url, audit=True, env=env)
        try:
            credd.start()
            credd.wait_serving()
            notify.wait_for("READY", "1", timeout=10)
            # Past start-up: the first fetch's pooled upstream connection closes after its idle timeout.
            time.sleep(settle)
            fetches_before = fake.credential_gets
            t0 = time.monotonic()
            before = context_switches(credd.pid)
            cpu0 = cpu_seconds(credd.pid)
            time.sleep(window)
            after = context_switches(credd.pid)
            cpu1 = cpu_seconds(credd.pid)
            t1 = time.monotonic()
            messages = [m for m in notify.since(t0) if m.time <= t1]
        finally:
            credd.stop()
            fake.stop()
    threads = {}
    for name, (vol, invol) in after.items():
        v0, i0 = before.get(name, (0, 0))
        threads[name] = {"voluntary": vol - v0, "involuntary": invol - i0}
    total = sum(t["voluntary"] + t["involuntary"] for t in threads.values())
    pings = sum(1 for m in messages if m.has("WATCHDOG", "1"))
    others = sorted({k for m in messages for k in m.fields if k != "WATCHDOG"})
    return {
        "window_s": window, "watchdog_usec": WATCHDOG_USEC, "switches": total, "threads": threads,
        "watchdog_pings": pings, "other_notifications": others,
        "other_notification_count": sum(1 for m in messages if not m.has("WATCHDOG", "1")),
        "refreshes": fake.credential_gets - fetches_before, "cpu_ms": round((cpu1 - cpu0) * 1000, 1),
    }
