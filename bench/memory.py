"""Benchmark 2: memory. RSS idle (credentials fetched, nothing asked), then after each of several runs of
one million requests over the Unix socket (`h2load -n`, 256 connections), to show whether it grows.

credd runs as under the shipped unit (WatchdogSec=30: NOTIFY_SOCKET and WATCHDOG_USEC, as in benchmark 3),
and "idle" is measured once two watchdog pings have come after the first fetch, so that the work an idle credd
does on every ping (the wall-clock check, the STATUS= line) has run and counts, as does the release of
start-up's pages two seconds after the fetch (ReadOnlyPages).

RSS is VmRSS from /proc/PID/status, split into its anonymous part (heap, stacks: what credd really holds)
and its file part (pages of the binary and libraries mapped in, shared with the page cache).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from common import Credd, h2load, proc_status, start_fake_imds, workdir
from support.notify_harness import NotifyHarness  # on the path common set up

WATCHDOG_USEC = 30_000_000


def _rss(pid: int) -> dict:
    st = proc_status(pid)
    kib = lambda key: int(st.get(key, "0 kB").split()[0])  # noqa: E731
    return {"rss_kib": kib("VmRSS"), "anon_kib": kib("RssAnon"), "file_kib": kib("RssFile"), "hwm_kib": kib("VmHWM")}


def _by_mapping(pid: int, top: int = 6) -> list[tuple[str, int]]:
    """Resident KiB per mapped file (anonymous memory as "[anon]"), largest first."""
    sizes: dict[str, int] = {}
    name = "[anon]"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split()
            if first and "-" in first[0] and not first[0].endswith(":"):
                name = Path(first[5]).name if len(first) > 5 and first[5].startswith("/") else "[anon]"
            elif line.startswith("Rss:"):
                sizes[name] = sizes.get(name, 0) + int(first[1])
    return sorted(sizes.items(), key=lambda kv: -kv[1])[:top]


def drop_from_page_cache(path: Path) -> None:
    """Evicts the file's pages from the page cache (written back first), as after a reboot.

    The same binary measured 12.6-12.7 MB idle right after `cp` wrote it, 11.5-11.9 MB once evicted (two runs
    each), with the same page faults: likely large folios for written pages, a fault mapping a whole folio (not
    verified at the folio level). Without this the figure would depend on the file's history.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run(binary: Path, *, smoke: bool = False, runs: int = 3, requests: int = 1_000_000) -> dict:
    watchdog_usec = WATCHDOG_USEC
    if smoke:
        runs, requests, watchdog_usec = 2, 20_000, 2_000_000
    work = workdir("memory")
    fake = start_fake_imds()
    with NotifyHarness() as notify:
        credd = Credd(binary, work, imds_url=fake.url, audit=True, env=notify.env(watchdog_usec=watchdog_usec))
        try:
            drop_from_page_cache(binary)
            credd.start()
            credd.wait_serving()
            notify.wait_for("READY", "1", timeout=10)
            _wait_pings(notify, 2, timeout=4 * watchdog_usec / 1e6)
            time.sleep(1)
            idle = _rss(credd.pid)
            idle["mappings"] = _by_mapping(credd.pid)
            after = []
            for _ in range(runs):
                result = h2load(credd.unix_path, 256, 0, requests=requests, work=work)
                # The audit lines of a million requests: keep the disk small (the file is opened O_APPEND).
                with open(credd.log_path, "r+b") as f:
                    f.truncate(0)
                time.sleep(1)
                point = _rss(credd.pid)
                point["mappings"] = _by_mapping(credd.pid)
                point["requests"] = result["requests"]
                point["errors"] = result["errors"]
                after.append(point)
            idle_again = None
            if not smoke:
                _wait_pings(notify, 2, timeout=4 * watchdog_usec / 1e6)
                idle_again = _rss(credd.pid)
            return {"idle": idle, "after": after, "requests_per_run": requests, "idle_after_runs": idle_again}
        finally:
            credd.stop()
            fake.stop()


def _wait_pings(notify: NotifyHarness, count: int, timeout: float) -> None:
    """Until `count` more watchdog pings have arrived (one every WATCHDOG_USEC/4)."""
    since = time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        if sum(1 for m in notify.since(since) if m.has("WATCHDOG", "1")) >= count:
            return
        time.sleep(0.1)
