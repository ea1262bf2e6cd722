"""Issue 6, `credd status --watch` (a live table with countdowns until Ctrl-C, on a terminal and through a
pipe; --json as one document per line), the shell completion scripts and the help the man page is made from."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import time

import pytest

from support import redact, watch_for_secrets
from support.operator_cli import caller_env, run_credd

SUBCOMMANDS = ["serve", "get", "status", "config", "token", "doctor", "env", "exec", "completions"]


@pytest.fixture
def credd(fake_imds, start_credd):
    return start_credd(imds_endpoint=fake_imds.url).wait_serving()


def seconds(text: str) -> int:
    """"4m58s" → 298 (StatusTable's countdown format)."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    assert m and text, f"not a countdown: {text!r}"
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return h * 3600 + mi * 60 + s


def watch_output(credd_bin, credd, args, duration: float) -> tuple[str, int]:
    proc = subprocess.Popen([str(credd_bin), "status", "--watch", *args], env=caller_env(credd),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    time.sleep(duration)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    watch_for_secrets(credd.workdir / f"watch{len(args)}.out", "credd status --watch output").write_bytes(out + err)
    return out.decode(), proc.returncode


def test_status_watch_redraws_every_second_until_ctrl_c(credd_bin, credd):
    out, rc = watch_output(credd_bin, credd, [], 3.6)
    assert rc in (-signal.SIGINT, 130), f"Ctrl-C should end the watch (exit {rc})"
    frames = [f for f in out.split("\n\n") if f.startswith("SET ")]
    assert len(frames) >= 3, f"expected a frame a second, got {len(frames)}:\n{redact(out)[:2000]}"
    countdowns = []
    for frame in frames:
        row = next(line for line in frame.splitlines() if line.startswith("default "))
        countdowns.append(seconds(row.split()[-1]))  # NEXT REFRESH: the IMDS poll, under 5 minutes away
    assert countdowns == sorted(countdowns, reverse=True) and countdowns[0] > countdowns[-1], countdowns


def test_status_watch_on_a_terminal_clears_the_screen_for_each_frame(credd_bin, credd):
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(credd_bin), "status", "--watch"], env=caller_env(credd, TERM="xterm"),
                            stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 2.6
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        os.close(master)
    watch_for_secrets(credd.workdir / "watch-tty.out", "credd status --watch on a terminal").write_bytes(seen)
    assert seen.count(b"\x1b[H\x1b[2J") >= 2, redact(seen)[:1000]
    assert b"credd status, every second (Ctrl-C stops)" in seen


def test_status_watch_json_prints_one_document_per_line(credd_bin, credd):
    out, _ = watch_output(credd_bin, credd, ["--json"], 2.4)
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) >= 2
    for line in lines:
        doc = json.loads(line)
        assert doc["version"] == 1 and doc["sets"][0]["name"] == "default"


def test_status_watch_keeps_going_while_credd_is_unreachable(credd_bin, credd):
    credd.stop()
    out, rc = watch_output(credd_bin, credd, [], 2.4)
    assert out.count("credd: cannot reach credd") >= 2, redact(out)[:1000]


# ---- completions and the man page's source -----------------------------------------------------------

def test_bash_completion_script_is_valid_and_knows_the_subcommands(credd_bin, credd):
    proc = run_credd(credd_bin, ["completions", "bash"], caller_env(credd))
    assert proc.returncode == 0
    script = proc.stdout.decode()
    check = subprocess.run(["bash", "-n"], input=proc.stdout, capture_output=True)
    assert check.returncode == 0, check.stderr.decode()
    for sub in SUBCOMMANDS:
        assert sub in script
    # Loaded into a real bash, it completes `credd do` to `doctor`.
    probe = ('source /dev/stdin; COMP_WORDS=(credd do); COMP_CWORD=1; COMP_LINE="credd do"; COMP_POINT=8; '
             '_credd 2>/dev/null || true; fn=$(complete -p credd | sed -E "s/.*-F ([^ ]+).*/\\1/"); '
             '$fn credd do credd; printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", probe], input=proc.stdout, capture_output=True, env={"PATH": os.environ["PATH"]})
    assert "doctor" in done.stdout.decode().split(), done.stderr.decode()[-1000:]


@pytest.mark.parametrize("shell,marker", [("zsh", "#compdef credd"), ("fish", "complete -c 'credd'")])
def test_zsh_and_fish_completion_scripts(credd_bin, credd, shell, marker):
    proc = run_credd(credd_bin, ["completions", shell], caller_env(credd))
    assert proc.returncode == 0
    script = proc.stdout.decode()
    assert marker in script
    assert "doctor" in script and "exec" in script
    if shutil.which(shell):
        check = subprocess.run([shell, "-n"], input=proc.stdout, capture_output=True)
        assert check.returncode == 0, check.stderr.decode()


def test_the_help_the_man_page_is_generated_from(credd_bin, credd):
    """`make install` renders the man page with argument-parser's generate-manual, which reads this dump."""
    proc = run_credd(credd_bin, ["--experimental-dump-help"], caller_env(credd))
    assert proc.returncode == 0
    info = json.loads(proc.stdout)
    names = [c["commandName"] for c in info["command"]["subcommands"]]
    assert names[:len(SUBCOMMANDS)] == SUBCOMMANDS
    doctor = next(c for c in info["command"]["subcommands"] if c["commandName"] == "doctor")
    assert "Exit status 0 when no check failed" in doctor["discussion"]
