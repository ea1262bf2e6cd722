"""credd serve releases the pages of code and read-only data that start-up and refreshes used (issue 8, memory).

After start-up, each refresh and each reload, credd drops its mappings of the clean pages of its binary and
libraries (Sources/CreddServer/ReadOnlyPages.swift); the next use maps them again from the page cache. What
must hold: it happens at those moments, it releases pages, it never releases a page whose contents exist only
in credd (a relocated one: credd would crash or answer garbage), and credd answers correctly throughout,
while refreshes and releases run between requests.
"""

from __future__ import annotations

import re
import signal
import threading

from support.harness import observe

RELEASED = re.compile(r"credd\.pages=(\d+).*released the mappings of read-only pages")


def releases(credd) -> list[int]:
    return [int(m.group(1)) for m in RELEASED.finditer(credd.logs())]


def readonly_file_rss_kib(pid: int) -> int:
    """Resident KiB of the process's private, read-only file mappings (what the release drops)."""
    total, counted = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if fields and "-" in fields[0] and not fields[0].endswith(":"):
                perms = fields[1]
                counted = perms[1] == "-" and perms[3] == "p" and len(fields) > 5 and fields[5].startswith("/")
            elif counted and line.startswith("Rss:"):
                total += int(fields[1])
    return total


def test_pages_are_released_after_start_refreshes_and_reload_and_answers_stay_right(start_credd, fake_imds):
    credd = start_credd(imds_endpoint=fake_imds.url, imds={"poll_interval": "1s", "timeout": "1s", "attempts": 2})
    first = fake_imds.credentials
    credd.wait_for(lambda: observe(credd).key == first.access_key_id, 15, "credd to serve the fake's credentials")
    credd.wait_for(lambda: releases(credd), 30, "credd to release read-only pages after start-up")
    assert releases(credd)[0] > 0, "the release after start-up found no page to release"
    print(f"after start-up: {readonly_file_rss_kib(credd.process.pid)} KiB of read-only file pages resident")

    # Requests on both transports for the rest of the test, while refreshes and releases run between them.
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            for via in ("unix", "tcp"):
                reply = credd.get("/v1/credentials", via=via)
                answers.append((reply.status, reply.json().get("AccessKeyId", "") if reply.status == 200 else ""))

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        before = len(releases(credd))
        second = fake_imds.rotate()
        credd.wait_for(lambda: observe(credd).key == second.access_key_id, 30, "credd to pick up the rotated credentials")
        credd.wait_for(lambda: len(releases(credd)) > before, 30, "a release after the refresh")

        before = len(releases(credd))
        credd.signal(signal.SIGHUP)
        credd.wait_for(lambda: "configuration reloaded" in credd.logs(), 10, "credd to log the reload")
        credd.wait_for(lambda: len(releases(credd)) > before, 30, "a release after the reload")
    finally:
        stop.set()
        asker.join(30)

    assert answers, "no request was answered"
    assert {status for status, _ in answers} == {200}, f"statuses while releasing: {sorted({s for s, _ in answers})}"
    assert {key for _, key in answers} <= {first.access_key_id, second.access_key_id}
    assert all(n > 0 for n in releases(credd))
    print("\n".join(l for l in credd.logs().splitlines() if "released the mappings" in l))
    assert credd.alive()
    assert credd.stop() == 0, "graceful exit on SIGTERM"
