"""Issue 3, the daemon's side of systemd without systemd: socket activation by name, sd_notify readiness,
watchdog pings, STOPPING=1, reload, and credentials carried across a restart in the fd store.

`systemd-socket-activate` binds a Unix and a TCP socket and execs credd on the first connection with
LISTEN_FDS/LISTEN_FDNAMES=unix:tcp; a NotifyHarness plays PID 1's notification socket (SYSTEMD.md §1–2).
The restart tests pass fds themselves (sockets plus the memfd credd stored), as systemd does on restart.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest
import yaml

from support import redact
from support.harness import Credd, CreddStartError, free_port, short_socket_dir
from support.notify_harness import ALL_SEALS, NotifyHarness, memfd_seals, read_sealed_memfd

READY_DEADLINE = 10.0  # s from the first connection to READY=1 (a debug build, 2 cores)
STATE_PREFIX = "credd-state"

pytestmark = pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                                reason="skipped: systemd-socket-activate is not installed (Debian package systemd)")


def _passed_env(credd: Credd, notify: NotifyHarness, watchdog_usec: Optional[int]) -> dict:
    env = dict(credd.env)
    env.update(notify.env(watchdog_usec=watchdog_usec))
    return env


class ActivatedCredd(Credd):
    """credd behind `systemd-socket-activate`: the sockets are bound before credd runs; the first
    connection execs it in the same pid. Its config names *other* addresses, so serving on the activated
    ones proves the passed sockets were adopted rather than bound from the config."""

    def __init__(self, binary: Path, workdir: Path, notify: NotifyHarness, *, watchdog_usec: Optional[int] = None,
                 **kwargs) -> None:
        super().__init__(binary, workdir, **kwargs)
        self.notify = notify
        self.watchdog_usec = watchdog_usec
        # The addresses systemd-socket-activate listens on; the config keeps its own (never bound).
        self.config_unix_path, self.config_tcp_port = self.unix_path, self.tcp_port
        self.unix_path = short_socket_dir(self.workdir) / "activated.sock"
        self.tcp_port = free_port()
        self.tcp_url = f"http://127.0.0.1:{self.tcp_port}"

    def start(self, wait: bool = True, timeout: float = 30.0) -> "ActivatedCredd":
        # As credd-tcp.socket's ExecStartPre= does: the token exists before the port listens.
        ensured = self.run_cli("token", "ensure")
        assert ensured.returncode == 0, f"credd token ensure failed: {redact(ensured.stderr)}"
        assert self.token_file.exists(), "credd token ensure did not create the token file"
        self._stderr = open(self.stderr_path, "ab")
        self._stdout = open(self.stdout_path, "ab")
        env = _passed_env(self, self.notify, self.watchdog_usec)
        passed = [f"-E{name}" for name in env if name not in ("PATH", "HOME")]
        # WATCHDOG_PID must be credd's pid: the shell's, since it and systemd-socket-activate exec in place.
        script = 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"'
        argv = ["sh", "-c", script, "sh", "systemd-socket-activate",
                "-l", str(self.unix_path), "-l", f"127.0.0.1:{self.tcp_port}", "--fdname=unix:tcp",
                *passed, "-EWATCHDOG_PID", str(self.binary), "serve", "--config", str(self.config_path)]
        self.process = subprocess.Popen(argv, env=env, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                        stdout=self._stdout, stderr=self._stderr, start_new_session=True)
        deadline = time.monotonic() + 10
        while not self.unix_path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise CreddStartError(f"systemd-socket-activate did not listen.\n{self.log_tail()}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 15.0):
        code = super().stop(timeout)
        # systemd-socket-activate leaves the socket file behind.
        try:
            self.unix_path.unlink()
        except FileNotFoundError:
            pass
        return code


@pytest.fixture
def notify():
    with NotifyHarness(keep_fds=True) as harness:
        yield harness


@pytest.fixture
def activated(credd_bin, tmp_path, fake_imds, notify):
    daemons: list[ActivatedCredd] = []

    def start(name: str = "credd", **kwargs) -> ActivatedCredd:
        kwargs.setdefault("imds_endpoint", fake_imds.url)
        d = ActivatedCredd(credd_bin, tmp_path / name, notify, name=name, **kwargs)
        daemons.append(d)
        return d.start()

    yield start
    for d in daemons:
        d.stop()


def _credentials(credd: Credd, via: str = "tcp", path: str = "/v1/credentials") -> dict:
    # 503 means "fetching the first credentials, retry": the SDKs retry it too.
    deadline = time.monotonic() + 10
    reply = credd.get(path, via=via, timeout=READY_DEADLINE)
    while reply.status == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
        reply = credd.get(path, via=via)
    assert reply.status == 200, f"GET {path} over {via}: {reply.status} {redact(reply.body)[:500]}"
    return reply.json()


# ---- socket activation by name ------------------------------------------------------------------------

def test_both_named_sockets_are_adopted_and_the_first_connection_is_served(activated, notify, fake_imds):
    credd = activated()
    first = time.monotonic()
    # This connection is what makes systemd-socket-activate exec credd; it must be answered, not dropped.
    reply = credd.get("/healthz", via="unix", timeout=READY_DEADLINE)
    # Answered at all is what counts here (503 = still fetching the first credentials).
    assert reply.status in (200, 503), f"/healthz over the activated Unix socket: {reply.status}"
    ready = notify.wait_for("READY", "1", timeout=READY_DEADLINE, after=first)
    assert ready.pid == credd.process.pid, "READY=1 came from another process than credd"
    assert ready.time - first < READY_DEADLINE
    got = _credentials(credd, via="tcp")
    assert got["AccessKeyId"] == fake_imds.credentials.access_key_id
    # Nothing was bound from the config: its Unix path does not exist and its port is closed.
    assert not credd.config_unix_path.exists(), "credd bound the Unix socket of its config as well"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", credd.config_tcp_port), timeout=2).close()


def test_the_first_connection_may_come_over_tcp(activated, notify, fake_imds):
    credd = activated()
    first = time.monotonic()
    got = _credentials(credd, via="tcp")
    assert got["AccessKeyId"] == fake_imds.credentials.access_key_id
    notify.wait_for("READY", "1", timeout=READY_DEADLINE, after=first)
    assert credd.get("/healthz", via="unix").status == 200, "/healthz over the Unix socket after credentials"


# ---- readiness, watchdog, stop ---------------------------------------------------------------------------

def test_watchdog_pings_come_well_inside_watchdog_usec(activated, notify):
    watchdog_usec = 2_000_000
    credd = activated(watchdog_usec=watchdog_usec)
    assert credd.get("/healthz", via="unix", timeout=READY_DEADLINE).status in (200, 503)
    ready = notify.wait_for("READY", "1", timeout=READY_DEADLINE)
    time.sleep(3.2)
    pings = [m for m in notify.since(ready.time) if m.has("WATCHDOG", "1")]
    assert len(pings) >= 3, f"only {len(pings)} WATCHDOG=1 pings in 3.2 s with WATCHDOG_USEC={watchdog_usec}"
    assert all(p.pid == credd.process.pid for p in pings), "a watchdog ping came from another process"
    times = [ready.time] + [p.time for p in pings]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # "Well inside": no gap longer than 60 % of the timeout (pinging every half of it, plus scheduling
    # jitter, stays under; SystemdNotifier.watchdogInterval's advice is a quarter).
    assert max(gaps) <= watchdog_usec / 1e6 * 0.6, f"watchdog gaps {[round(g, 2) for g in gaps]} s"


def test_no_watchdog_pings_when_systemd_set_no_watchdog(activated, notify):
    credd = activated()
    assert credd.get("/healthz", via="unix", timeout=READY_DEADLINE).status in (200, 503)
    ready = notify.wait_for("READY", "1", timeout=READY_DEADLINE)
    time.sleep(1.0)
    assert not [m for m in notify.since(ready.time) if m.has("WATCHDOG")]


def test_sigterm_sends_stopping_and_exits_cleanly(activated, notify):
    credd = activated()
    assert credd.get("/healthz", via="unix", timeout=READY_DEADLINE).status in (200, 503)
    notify.wait_for("READY", "1", timeout=READY_DEADLINE)
    sent = time.monotonic()
    credd.process.send_signal(signal.SIGTERM)
    stopping = notify.wait_for("STOPPING", "1", timeout=5, after=sent)
    assert stopping.pid == credd.process.pid
    assert credd.process.wait(15) == 0, f"credd exited with {credd.process.returncode} on SIGTERM"


def test_status_names_each_set_without_secrets(activated, notify, fake_imds):
    credd = activated()
    _credentials(credd, via="tcp")
    status = notify.wait_for("STATUS", timeout=10, predicate=lambda m: "default" in m.fields["STATUS"])
    text = status.fields["STATUS"]
    assert "\n" not in text
    issued = fake_imds.credentials
    for secret in (issued.secret_access_key, issued.token):
        assert secret not in text


# ---- reload --------------------------------------------------------------------------------------------

def test_sighup_applies_a_valid_config_without_dropping_connections(activated, notify, fake_imds):
    credd = activated()
    _credentials(credd, via="tcp")
    notify.wait_for("READY", "1", timeout=READY_DEADLINE)
    # A keep-alive connection opened before the reload must still work after it.
    keep = http.client.HTTPConnection("127.0.0.1", credd.tcp_port, timeout=10)
    headers = {"Authorization": credd.token(), "Host": f"127.0.0.1:{credd.tcp_port}"}
    keep.request("GET", "/healthz", headers=headers)
    assert keep.getresponse().read() is not None

    config = yaml.safe_load(credd.config_path.read_text())
    config["credentials"]["second"] = {"source": "imds"}
    credd.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    sent = time.monotonic()
    credd.process.send_signal(signal.SIGHUP)
    reloading = notify.wait_for("RELOADING", "1", timeout=5, after=sent)
    assert reloading.fields.get("MONOTONIC_USEC", "").isdigit(), "RELOADING=1 without MONOTONIC_USEC="
    notify.wait_for("READY", "1", timeout=10, after=reloading.time)
    assert _credentials(credd, path="/v1/credentials/second")["AccessKeyId"] == fake_imds.credentials.access_key_id
    keep.request("GET", "/healthz", headers=headers)
    response = keep.getresponse()
    response.read()
    assert response.status == 200
    keep.close()


def test_sighup_with_an_invalid_config_keeps_the_old_one(activated, notify, fake_imds):
    credd = activated()
    before = _credentials(credd, via="tcp")
    notify.wait_for("READY", "1", timeout=READY_DEADLINE)
    good = credd.config_path.read_text()
    credd.config_path.write_text(good + "\nthis_key_does_not_exist: true\n")
    sent = time.monotonic()
    credd.process.send_signal(signal.SIGHUP)
    reloading = notify.wait_for("RELOADING", "1", timeout=5, after=sent)
    notify.wait_for("READY", "1", timeout=10, after=reloading.time)
    assert credd.alive(), "credd exited on a reload with an invalid config"
    assert _credentials(credd, via="tcp")["AccessKeyId"] == before["AccessKeyId"]
    credd.wait_for(lambda: "this_key_does_not_exist" in credd.logs(), 5,
                   "a log line naming the invalid config key")


# ---- the fd store ----------------------------------------------------------------------------------------

def _stored_state(notify: NotifyHarness, after: float = 0.0, timeout: float = 10.0):
    """The latest FDSTORE=1 message of credd's state (credd replaces it as credentials change)."""
    def is_state(m):
        return m.fields.get("FDNAME", "").startswith(STATE_PREFIX)
    notify.wait_for("FDSTORE", "1", timeout=timeout, after=after, predicate=is_state)
    time.sleep(0.5)  # let a store that follows the fetch arrive
    message = [m for m in notify.since(after) if m.has("FDSTORE", "1") and is_state(m)][-1]
    assert len(message.fds) == 1, f"FDSTORE=1 carried {len(message.fds)} fds"
    return message


def test_fetched_credentials_go_to_the_fd_store_in_a_sealed_memfd(activated, notify, fake_imds):
    credd = activated()
    _credentials(credd, via="tcp")
    message = _stored_state(notify)
    assert message.pid == credd.process.pid
    fd = message.fds[0]
    assert memfd_seals(fd) & ALL_SEALS == ALL_SEALS
    content = read_sealed_memfd(fd)
    json.loads(content)  # the payload is the lead's JSON; it must parse
    # Sealed: nobody holding the fd can change it.
    with pytest.raises(OSError):
        os.pwrite(fd, b"x", 0)


def _spawn_with_fds(credd: Credd, notify: NotifyHarness, passed: list[tuple[str, int]],
                    log_name: str) -> subprocess.Popen:
    """Start `credd serve` as systemd does on (re)start: fds at 3.., LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID."""
    env = dict(credd.env)
    env.update(notify.env())
    env["LISTEN_FDS"] = str(len(passed))
    env["LISTEN_FDNAMES"] = ":".join(name for name, _ in passed)
    sources = [fd for _, fd in passed]

    def place_fds():
        high = [os.dup2(fd, 200 + i) for i, fd in enumerate(sources)]
        for i, fd in enumerate(high):
            os.dup2(fd, 3 + i)
            os.close(fd)

    stderr = open(credd.workdir / log_name, "ab")
    from support import watch_for_secrets
    watch_for_secrets(credd.workdir / log_name, f"credd's log ({log_name})")
    return subprocess.Popen(
        ["sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh",
         str(credd.binary), "serve", "--config", str(credd.config_path)],
        env=env, cwd=credd.workdir, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
        start_new_session=True, preexec_fn=place_fds, close_fds=True,
        pass_fds=tuple(range(3, 3 + len(passed))))


class _Restarted:
    """Listening sockets held by the test (as systemd holds them across restarts) and a credd config."""

    def __init__(self, credd_bin: Path, workdir: Path, fake_imds) -> None:
        self.credd = Credd(credd_bin, workdir, imds_endpoint=fake_imds.url)
        ensured = self.credd.run_cli("token", "ensure")
        assert ensured.returncode == 0, redact(ensured.stderr)
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.credd.unix_path = short_socket_dir(self.credd.workdir) / "held.sock"
        self.unix.bind(str(self.credd.unix_path))
        self.unix.listen(64)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(64)
        self.credd.tcp_port = self.tcp.getsockname()[1]
        self.credd.tcp_url = f"http://127.0.0.1:{self.credd.tcp_port}"
        self.processes: list[subprocess.Popen] = []

    def run(self, notify: NotifyHarness, extra: list[tuple[str, int]] = ()) -> subprocess.Popen:
        passed = [("unix", self.unix.fileno()), ("tcp", self.tcp.fileno()), *extra]
        process = _spawn_with_fds(self.credd, notify, passed, f"run{len(self.processes) + 1}.log")
        self.processes.append(process)
        self.credd.process = process
        return process

    def stop(self, process: subprocess.Popen) -> None:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0

    def log(self, index: int) -> str:
        return (self.credd.workdir / f"run{index}.log").read_text(errors="replace")

    def close(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.unix.close()
        self.tcp.close()
        self.credd.unix_path.unlink(missing_ok=True)


@pytest.fixture
def restarted(credd_bin, tmp_path, fake_imds):
    held = _Restarted(credd_bin, tmp_path / "restart", fake_imds)
    yield held
    held.close()


def test_a_restart_serves_the_stored_credentials_without_going_upstream(restarted, notify, fake_imds):
    first = restarted.run(notify)
    got = _credentials(restarted.credd)
    stored = _stored_state(notify)
    restarted.stop(first)
    gets = fake_imds.credential_gets

    second = restarted.run(notify, extra=[(stored.fields["FDNAME"], stored.fds[0])])
    again = _credentials(restarted.credd)
    assert again["AccessKeyId"] == got["AccessKeyId"]
    assert again["Expiration"] == got["Expiration"]
    assert fake_imds.credential_gets == gets, "the restarted credd went back to IMDS instead of the fd store"
    assert second.poll() is None


@pytest.mark.parametrize("content, sealed", [(b"this is not JSON", True), (b"{}", False)],
                         ids=["malformed", "unsealed"])
def test_a_bad_stored_state_is_ignored_with_a_warning(restarted, notify, fake_imds, content, sealed):
    if sealed:
        fd = _sealed_memfd(content)
    else:
        fd = os.memfd_create(STATE_PREFIX, os.MFD_ALLOW_SEALING)
        os.write(fd, content)
    try:
        gets = fake_imds.credential_gets
        restarted.run(notify, extra=[(STATE_PREFIX, fd)])
        got = _credentials(restarted.credd)
        assert got["AccessKeyId"] == fake_imds.credentials.access_key_id
        assert fake_imds.credential_gets > gets, "credd served without fetching, from a bad stored state"
        assert "warning" in restarted.log(1).lower() or "state" in restarted.log(1).lower(), \
            "no warning about the ignored stored state"
    finally:
        os.close(fd)


def _expire_everything(document) -> int:
    """Set every expiry in a stored state (any key containing "expir") to the past; returns how many.
    The payload is the daemon's own JSON: this walks it rather than assuming its exact shape."""
    count = 0
    items = document.items() if isinstance(document, dict) else enumerate(document) if isinstance(document, list) else []
    for key, value in list(items):
        if isinstance(key, str) and "expir" in key.lower() and isinstance(value, (str, int, float)):
            document[key] = "2000-01-01T00:00:00Z" if isinstance(value, str) else 946684800
            count += 1
        elif isinstance(value, (dict, list)):
            count += _expire_everything(value)
    return count


def _sealed_memfd(content: bytes) -> int:
    import fcntl
    fd = os.memfd_create(STATE_PREFIX, os.MFD_ALLOW_SEALING)
    os.write(fd, content)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, ALL_SEALS)
    return fd


def test_expired_stored_credentials_are_dropped_on_adoption(restarted, notify, fake_imds):
    first = restarted.run(notify)
    _credentials(restarted.credd)
    stored = _stored_state(notify)
    restarted.stop(first)
    document = json.loads(read_sealed_memfd(stored.fds[0]))
    assert _expire_everything(document) > 0, "the stored state holds no expiry field to age (no credentials stored?)"
    fd = _sealed_memfd(json.dumps(document).encode())
    try:
        fake_imds.rotate()
        gets = fake_imds.credential_gets
        restarted.run(notify, extra=[(STATE_PREFIX, fd)])
        got = _credentials(restarted.credd)
        assert got["AccessKeyId"] == fake_imds.credentials.access_key_id, "credd served expired stored credentials"
        assert fake_imds.credential_gets > gets
    finally:
        os.close(fd)
