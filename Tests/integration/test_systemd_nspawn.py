"""Issue 3 under a real systemd: Tests/systemd/nspawn-test.sh boots the host's systemd as PID 1 in a
throwaway systemd-nspawn container and runs Tests/systemd/ci_check.py there (SYSTEMD.md §3): socket
activation through systemctl, a boto3 request activating credd against a fake IMDS on loopback, restart
from the fd store with no upstream call, reload with an invalid config, structured journald lines with no
secret, and the same for the user units under `systemctl --user`. Each step is its own test case here.

It needs root with CAP_SYS_ADMIN, systemd-nspawn (Debian package systemd-container) and unshare; where
they are missing every case reports itself skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import redact
from support.harness import REPO_ROOT

SCRIPT = REPO_ROOT / "Tests" / "systemd" / "nspawn-test.sh"
CAP_SYS_ADMIN = 21


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "skipped: systemd-nspawn needs root (this run is uid %d)" % os.geteuid()
    status = Path("/proc/self/status").read_text()
    effective = int(next(l for l in status.splitlines() if l.startswith("CapEff:")).split()[1], 16)
    if not effective & (1 << CAP_SYS_ADMIN):
        return "skipped: no CAP_SYS_ADMIN, which systemd-nspawn needs"
    for tool, package in (("systemd-nspawn", "systemd-container"), ("unshare", "util-linux"), ("runuser", "util-linux")):
        if shutil.which(tool) is None:
            return f"skipped: {tool} is not installed (Debian package {package})"
    if not os.access("/sys/fs/cgroup", os.W_OK) and not os.access("/sys/fs/cgroup/unified", os.W_OK):
        return "skipped: the cgroup file system is not writable here, so nspawn cannot make the container's cgroup"
    return None


@pytest.fixture(scope="module")
def nspawn_run(credd_bin, tmp_path_factory):
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    results = tmp_path_factory.mktemp("nspawn-results")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"CREDD_BIN": str(credd_bin), "PYTHON": sys.executable})
    proc = subprocess.run([str(SCRIPT), "--results", str(results), "--timeout", "240"], env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    result = results / "result.json"
    steps = json.loads(result.read_text())["steps"] if result.exists() else []
    return {"returncode": proc.returncode, "steps": {s["name"]: s for s in steps},
            "output": redact(proc.stdout + proc.stderr)[-6000:], "results": results}


EXPECTED_STEPS = [
    "the fake IMDS on 127.0.0.1:1338",
    "system: credd user and group from credd.sysusers, /etc/credd/credd.yaml",
    "system: start credd.socket: sockets and token in place, credd.service inactive",
    "system: a boto3 request to 127.0.0.1:9702 activates credd and gets the fake's credentials",
    "system: watchdog and hardening as configured",
    "system: over the Unix socket a uid in access.allow_uids gets credentials, another uid gets 403",
    "system: systemctl restart credd.service serves from the fd store, no upstream call",
    "system: an invalid config plus systemctl reload keeps credd serving",
    "system: journalctl -u credd shows structured lines and no secret",
    "system: systemctl stop credd.socket stops credd and removes the socket",
    "user: a test user with a user manager and its credd config",
    "user: systemctl --user start credd.socket: socket in $XDG_RUNTIME_DIR, token, service inactive",
    "user: a boto3 request to 127.0.0.1:9703 activates the user's credd",
    "user: systemctl --user restart credd.service serves from the fd store",
    "user: an invalid config plus systemctl --user reload keeps credd serving",
    "user: the journal shows structured lines of the user's credd and no secret",
    "user: systemctl --user stop credd.socket removes the socket",
    "whole journal: no test secret anywhere",
]


@pytest.mark.parametrize("name", EXPECTED_STEPS)
def test_under_real_systemd(nspawn_run, name):
    step = nspawn_run["steps"].get(name)
    if step is None:
        failed = [s for s in nspawn_run["steps"].values() if not s["ok"]]
        cause = f"an earlier step failed: {failed[0]['name']}: {failed[0]['detail']}" if failed else \
            f"the container run ended (exit {nspawn_run['returncode']}) before this step:\n{nspawn_run['output']}"
        pytest.fail(f"not run: {cause}\n(logs in {nspawn_run['results']})", pytrace=False)
    assert step["ok"], f"{step['detail']}\n(check.log and journal.txt in {nspawn_run['results']})"


def test_the_container_run_exits_with_the_checks_status(nspawn_run):
    all_ok = bool(nspawn_run["steps"]) and all(s["ok"] for s in nspawn_run["steps"].values())
    assert (nspawn_run["returncode"] == 0) == all_ok, \
        f"nspawn-test.sh exited {nspawn_run['returncode']} while the steps say ok={all_ok}\n{nspawn_run['output']}"
