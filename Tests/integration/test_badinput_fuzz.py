"""Issue 7, fuzzing in CI: builds the libFuzzer targets (Tests/Fuzz, -sanitize=fuzzer,address, own scratch path
.build-fuzz) and runs each one briefly after replaying every committed input (seeds and past crashes).
A long run is `Tests/Fuzz/run.sh --seconds 600` (see Tests/README.md)."""

from __future__ import annotations

import os
import subprocess

import pytest

from support import watch_for_secrets
from support.harness import REPO_ROOT

SECONDS_PER_TARGET = int(os.environ.get("CREDD_FUZZ_SECONDS", "5"))


@pytest.mark.slow
def test_fuzz_targets_build_replay_their_corpus_and_survive_a_short_run(tmp_path):
    if os.environ.get("CREDD_SKIP_FUZZ") == "1":
        pytest.skip("skipped: CREDD_SKIP_FUZZ=1 (the fuzz build takes minutes the first time)")
    proc = subprocess.run(["bash", str(REPO_ROOT / "Tests/Fuzz/run.sh"), "--seconds", str(SECONDS_PER_TARGET)],
                          cwd=REPO_ROOT, capture_output=True, timeout=1800, stdin=subprocess.DEVNULL)
    out = watch_for_secrets(tmp_path / "fuzz.out", "the fuzz run's output")
    out.write_bytes(proc.stdout + proc.stderr)
    text = proc.stdout.decode(errors="replace")
    summary = [line for line in text.splitlines() if line.startswith("fuzz:")]
    assert proc.returncode == 0, "\n".join(summary) + "\n" + proc.stderr.decode(errors="replace")[-3000:]
    for target in ("config", "imds", "login", "sts", "router", "http"):
        assert any(line.startswith(f"fuzz: {target}: ") and "no crash" in line for line in summary), summary
