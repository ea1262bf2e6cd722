"""Under systemd with a watchdog, credd's refreshers sleep until their refresh is due and never wake just to look
at the wall clock (issue 8, idle cost). A jump of the wall clock that the kernel does not report (libfaketime
fakes the clock inside credd only) must then be noticed on a watchdog ping, which compares the wall clock with
the monotonic one. (A real clock set is reported at once by a timerfd; without a watchdog the refreshers still
compare every 30 s: test_faults_process.py covers that.)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from support.harness import Credd, observe
from support.notify_harness import NotifyHarness

FAKETIME_LIB = next((p for p in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1") if Path(p).exists()), None)


def test_with_a_watchdog_a_forward_jump_past_the_expiry_is_noticed_on_a_ping(fake_imds, credd_bin, tmp_path):
    if FAKETIME_LIB is None:
        pytest.skip("skipped: libfaketime is not installed (apt-get install faketime)")
    offset = tmp_path / "faketime-offset"
    offset.write_text("+0")
    with NotifyHarness() as notify:
        # WATCHDOG_USEC 4 s: a ping every second. The refreshers' own 30 s comparison is off with a watchdog.
        env = {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME_TIMESTAMP_FILE": str(offset), "FAKETIME_NO_CACHE": "1",
               "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_SHARED": "credd-test-none credd-test-none",
               **notify.env(watchdog_usec=4_000_000)}
        credd = Credd(credd_bin, tmp_path / "c", imds_endpoint=fake_imds.url,
                      imds={"timeout": "500ms", "attempts": 1}, env=env)
        try:
            credd.start().wait_serving()
            before = observe(credd)
            assert before.status == 200
            fake_imds.clock.advance(6 * 3600 + 600)  # the fake jumps too: its new credentials are valid on that clock
            fake_imds.expire_all_tokens()
            fresh = fake_imds.issue()
            offset.write_text("+22200")  # +6 h 10 min: the 6-hour credentials look expired to credd
            # Well under the refreshers' 30 s: only a ping can have noticed (they would not wake for hours).
            credd.wait_for(lambda: observe(credd).key == fresh.access_key_id, 20,
                           "credd to notice the jump on a watchdog ping and fetch again")
            assert credd.alive()
        finally:
            credd.stop()
