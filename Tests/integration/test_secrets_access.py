"""Issue 7, secrets and access: a uid that is not allowed gets 403 on the Unix socket (a real client running
as nobody), token files with loose modes are refused, non-loopback TCP binds are refused, credd makes itself
non-dumpable and the units set LimitCORE=0, so secrets never reach another user or a core file.
(Rebinding Host and any Origin get 403 on both listeners: test_badinput_http.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from support import watch_for_secrets
from support.harness import REPO_ROOT, Credd, free_port

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="skipped: switching to another uid (setpriv) needs root")
needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="skipped: setpriv (util-linux) is not installed")


@pytest.fixture
def open_dir():
    """A directory every user can traverse (pytest's tmp dirs are 0700), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="credd-it-open-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def curl_as(uid: int, socket_path: Path, path: str, out: Path) -> tuple[int, dict]:
    """GET over the Unix socket from a curl running as `uid` (no supplementary groups)."""
    proc = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--",
         "curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket", str(socket_path), f"http://localhost{path}"],
        capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    body, _, code = proc.stdout.decode(errors="replace").rpartition("\n")
    if code != "200":  # a refusal must hold no secret; a 200 is credentials on purpose
        watch_for_secrets(out, f"curl as uid {uid}").write_bytes(proc.stdout + proc.stderr)
    return int(code or 0), (json.loads(body) if body.startswith("{") else {})


@needs_root
@needs_setpriv
def test_a_uid_that_is_not_allowed_gets_403_on_the_unix_socket(fake_imds, credd_bin, tmp_path, open_dir):
    sock = open_dir / "credd.sock"
    credd = Credd(credd_bin, tmp_path / "c", imds_endpoint=fake_imds.url,
                  listen={"unix": {"path": str(sock), "mode": "0666"}}, access={"allow_uids": [0]},
                  credentials={"default": {"source": "imds"}, "other": {"source": "imds", "access": {"allow_uids": [NOBODY]}}})
    credd.unix_path = sock  # the harness waits on (and talks to) this path
    try:
        credd.start().wait_serving()
        status, doc = curl_as(NOBODY, sock, "/v1/credentials", tmp_path / "nobody-default.out")
        assert (status, doc.get("code")) == (403, "CallerNotAllowed"), (status, doc)
        assert f"uid {NOBODY}" in doc["message"] and "allow_uids" in doc["message"]
        status, doc = curl_as(NOBODY, sock, "/v1/status", tmp_path / "nobody-status.out")
        assert status == 403, "status is not for strangers either"
        # The same uid is let in where the config says so (per-set access), and root everywhere.
        status, _ = curl_as(NOBODY, sock, "/v1/credentials/other", tmp_path / "nobody-other.out")
        assert status == 200
        assert credd.get("/v1/credentials", via="unix").status == 200
        assert f"credd.uid={NOBODY}" in credd.logs() and "credd.status=403" in credd.logs(), "the refusal is audited"
    finally:
        credd.stop()


@needs_root
@needs_setpriv
def test_credd_makes_itself_non_dumpable(fake_imds, credd_bin, open_dir):
    """Run as nobody: a dumpable process's /proc/PID files belong to its uid; a non-dumpable one's to root
    (the kernel's sign of PR_SET_DUMPABLE 0). No core file, no ptrace or /proc/PID/mem by the same user."""
    binary = open_dir / "credd"
    shutil.copy(credd_bin, binary)
    binary.chmod(0o755)
    launcher = open_dir / "as-nobody.sh"
    launcher.write_text(f'#!/bin/sh\nexec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups -- {binary} "$@"\n')
    launcher.chmod(0o755)
    work = open_dir / "work"
    credd = Credd(launcher, work, imds_endpoint=fake_imds.url)
    for p in [work, *work.rglob("*")]:
        os.chown(p, NOBODY, NOBODY)
    try:
        credd.start().wait_serving()
        pid = credd.process.pid
        uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
        assert uids.split()[1] == str(NOBODY), f"credd runs as nobody: {uids}"
        assert os.stat(f"/proc/{pid}/status").st_uid == 0, "credd is dumpable: its /proc files belong to its own uid"
        assert os.stat(f"/proc/{pid}/mem").st_uid == 0
        token = Path(credd.token_file)
        assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.stat().st_uid == NOBODY
    finally:
        credd.stop()


@pytest.mark.parametrize("unit", ["credd.service", "user/credd.service"])
def test_units_forbid_core_files(unit):
    text = (REPO_ROOT / "systemd" / unit).read_text()
    settings = [line.strip() for line in text.splitlines() if line.strip().startswith("LimitCORE=")]
    assert settings == ["LimitCORE=0"], f"{unit}: {settings}"


# ---- token file modes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, accepted", [(0o600, True), (0o640, True), (0o400, True), (0o644, False),
                                             (0o604, False), (0o666, False), (0o601, False)])
def test_token_file_modes_are_checked(fake_imds, credd_bin, tmp_path, mode, accepted):
    credd = Credd(credd_bin, tmp_path / "c", imds_endpoint=fake_imds.url)
    token = "mode-test-token-" + "A" * 27
    from support import register_secret

    register_secret(token, "credd auth token")
    credd.token_file.write_text(token)
    credd.token_file.chmod(mode)
    credd.start(wait=False)
    try:
        if accepted:
            credd.wait_ready()
            assert credd.get("/v1/credentials", token=token).status in (200, 503)
        else:
            assert credd.process.wait(15) == 78
            logs = credd.logs()
            assert "open to every user" in logs and oct(mode)[2:] in logs and "chmod 0600" in logs
            assert token not in logs
    finally:
        credd.stop()


def test_token_files_credd_creates_are_private(fake_imds, start_credd, tmp_path):
    deploy_token = tmp_path / "tokens" / "deploy.token"
    credd = start_credd(imds_endpoint=fake_imds.url, credentials={
        "default": {"source": "imds"}, "deploy": {"source": "imds", "access": {"token_file": str(deploy_token)}}})
    for f in (credd.token_file, deploy_token):
        st = f.stat()
        assert stat.S_IMODE(st.st_mode) == 0o600, f"{f}: {oct(st.st_mode)}"
        assert len(f.read_bytes()) == 43 and not f.read_bytes().endswith(b"\n")
    assert stat.S_IMODE(deploy_token.parent.stat().st_mode) & 0o077 == 0


# ---- non-loopback TCP binds ----------------------------------------------------------------------------------

@pytest.mark.parametrize("address", ["0.0.0.0:{port}", "[::]:{port}", "10.0.0.1:{port}", "[fe80::1]:{port}",
                                     "[::ffff:127.0.0.1]:{port}", "127.0.0.1.nip.io:{port}", "localhost.:{port}",
                                     "169.254.170.2:{port}"])
def test_non_loopback_tcp_listen_addresses_are_refused(credd_bin, tmp_path, address):
    bad = address.format(port=free_port())
    cfg = tmp_path / "credd.yaml"
    cfg.write_text(f"listen:\n  tcp: [\"{bad}\"]\n  token_file: {tmp_path}/token\n")
    proc = subprocess.run([str(credd_bin), "config", "check", "--config", str(cfg)], capture_output=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    out = watch_for_secrets(tmp_path / "check.out", "credd config check output")
    out.write_bytes(proc.stdout + proc.stderr)
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert b"loopback" in proc.stderr
