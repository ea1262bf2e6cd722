"""The checks ci-test.service runs inside the systemd-nspawn container (real systemd as PID 1).

Started by Tests/systemd/nspawn-test.sh; runs as root in the container and writes to /ci-results:
check.log (every step and command, redacted), result.json (one entry per step) and journal.txt (the whole
journal, redacted). Exits 0 only when every step passed.

System units: `systemctl start credd.socket` leaves credd.service inactive with the socket and token in
place; a boto3 request to 127.0.0.1:9702 starts credd, which fetches from the fake IMDS on loopback;
`systemctl restart credd.service` then serves with no upstream call (fd store); an invalid config plus
`systemctl reload` keeps it serving; journald holds structured CREDD_* lines and no secret; stop removes
the socket. User units: the same under `systemctl --user` for a test user, with the socket in
$XDG_RUNTIME_DIR and the port 9703.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "Tests" / "integration"))

from support.harness import run_boto3_probe  # noqa: E402

RESULTS = Path(os.environ.get("CREDD_CI_RESULTS", "/ci-results"))
IMDS_PORT = 1338
CONTROL = "http://127.0.0.1:1339"
SYSTEM_CONFIG = Path("/etc/credd/credd.yaml")
SYSTEM_SOCKET = Path("/run/credd/credd.sock")
SYSTEM_TOKEN = Path("/run/credd/token")
USER, UID = "credd-tester", 4242
USER_HOME = Path(f"/home/{USER}")
USER_RUNTIME = Path(f"/run/user/{UID}")
USER_CONFIG = USER_HOME / ".config/credd/credd.yaml"

_log = open(RESULTS / "check.log", "a", buffering=1)
_steps: list[dict] = []


class CheckFailed(AssertionError):
    pass


# ---- output that never carries a secret -------------------------------------------------------------

def scan(text: str) -> tuple[list[str], str]:
    """(labels of test secrets in `text`, `text` redacted), asked of the fake IMDS, which knows them."""
    try:
        request = urllib.request.Request(f"{CONTROL}/redact", data=text.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as reply:
            answer = json.loads(reply.read())
        return answer["labels"], answer["text"]
    except OSError:
        # Before the fake runs there is no secret to hide yet; after, failing closed is safer.
        return [], text if not _fake_started else "<output withheld: the secret scan is unavailable>"


_fake_started = False


def log(text: str) -> None:
    _log.write(scan(text)[1].rstrip() + "\n")


def run(args: list[str], *, user: bool = False, check: bool = True, timeout: float = 60,
        env: dict | None = None) -> subprocess.CompletedProcess:
    if user:
        args = ["runuser", "-u", USER, "--", "env", f"XDG_RUNTIME_DIR={USER_RUNTIME}", *args]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    log(f"$ {' '.join(args)}  -> {proc.returncode}\n{proc.stdout}{proc.stderr}")
    if check and proc.returncode != 0:
        raise CheckFailed(f"`{' '.join(args)}` exited {proc.returncode}: {scan(proc.stderr)[1][-800:]}")
    return proc


def systemctl(*args: str, user: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    return run(["systemctl", *(["--user"] if user else []), "--no-pager", *args], user=user, check=check)


def show(unit: str, prop: str, user: bool = False) -> str:
    return systemctl("show", unit, "-p", prop, "--value", user=user).stdout.strip()


def active_state(unit: str, user: bool = False) -> str:
    return systemctl("is-active", unit, user=user, check=False).stdout.strip()


def wait_until(what: str, predicate, timeout: float = 20.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError, CheckFailed, http.client.HTTPException) as e:
            last = e
        time.sleep(interval)
    raise CheckFailed(f"timed out after {timeout} s waiting for {what}" + (f" (last: {scan(str(last))[1]})" if last else ""))


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def step(name: str):
    def decorate(fn):
        def wrapped(*args, **kwargs):
            start = time.monotonic()
            log(f"=== {name}")
            try:
                detail = fn(*args, **kwargs)
                _steps.append({"name": name, "ok": True, "detail": scan(str(detail or ""))[1],
                               "seconds": round(time.monotonic() - start, 2)})
                log(f"=== {name}: ok {detail or ''}")
                return True
            except Exception as e:  # one failed step is reported, then its part stops
                text = scan(f"{type(e).__name__}: {e}")[1]
                _steps.append({"name": name, "ok": False, "detail": text, "seconds": round(time.monotonic() - start, 2)})
                log(f"=== {name}: FAILED {text}\n{scan(traceback.format_exc())[1]}")
                return False
        return wrapped
    return decorate


# ---- the fake IMDS and clients ----------------------------------------------------------------------

def fake_state() -> dict:
    with urllib.request.urlopen(f"{CONTROL}/state", timeout=5) as reply:
        return json.loads(reply.read())


def probe(port: int, token_file: Path) -> dict:
    """A fresh boto3 process's credentials through AWS_CONTAINER_CREDENTIALS_FULL_URI (digests only)."""
    home = Path("/tmp/boto3-home")
    home.mkdir(exist_ok=True)
    for name in ("config", "credentials"):
        (home / name).touch()
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{port}/v1/credentials",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_CONFIG_FILE": str(home / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
    }
    got = run_boto3_probe(env)
    log(f"boto3 probe on port {port}: {json.dumps({k: got.get(k) for k in ('method', 'access_key', 'error')})}")
    return got


def expect_fake_credentials(got: dict) -> None:
    state = fake_state()
    expect("error" not in got, f"boto3 found no credentials at credd: {got.get('error')}")
    expect(got.get("method") == "container-role", f"boto3 used {got.get('method')}, not the container provider")
    expect(got.get("access_key") == state["access_key_id"], "boto3 got another access key than the fake IMDS issued")
    expect(got.get("secret_sha256") == state["secret_sha256"], "boto3 got another secret key than the fake issued")
    expect(got.get("token_sha256") == state["token_sha256"], "boto3 got another session token than the fake issued")


def unix_get(path: Path, request: str) -> int:
    class UnixConnection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(10)
            self.sock.connect(str(path))

    conn = UnixConnection("localhost", timeout=10)
    try:
        conn.request("GET", request)
        reply = conn.getresponse()
        reply.read()
        return reply.status
    finally:
        conn.close()


def journal_entries(*match: str) -> list[dict]:
    out = run(["journalctl", "--no-pager", "-o", "json", *match]).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def unit_matches(user: bool) -> list[str]:
    """journalctl matches for credd's own lines. Not --user-unit: run as root it matches _UID=0 only."""
    return [f"_SYSTEMD_USER_UNIT=credd.service", f"_UID={UID}"] if user else ["-u", "credd.service"]


def config_text(token_file: Path, unix_path: Path, port: int, group: str | None, allow_uids: list[int] | None = None) -> str:
    unix = f'{{path: {unix_path}, mode: "{"0660" if group else "0600"}"' + (f", group: {group}}}" if group else "}")
    access = f"access: {{allow_uids: {allow_uids}}}\n" if allow_uids else ""
    return (f"listen:\n  unix: {unix}\n  tcp: [\"127.0.0.1:{port}\"]\n  token_file: {token_file}\n" + access +
            f"imds:\n  endpoint: \"http://127.0.0.1:{IMDS_PORT}\"\n"
            f"credentials:\n  default: {{source: imds}}\n")


# ---- steps shared by the system and the user units ---------------------------------------------------

def sockets_listen_and_service_waits(user: bool, socket_path: Path, token: Path, owner: int, group: int,
                                     socket_mode: int, token_mode: int):
    systemctl("start", "credd.socket", user=user)
    for unit in ("credd.socket", "credd-tcp.socket"):
        expect(active_state(unit, user) == "active", f"{unit} is {active_state(unit, user)}, not active")
    time.sleep(0.5)
    expect(active_state("credd.service", user) == "inactive",
           f"credd.service is {active_state('credd.service', user)} before any connection")
    st = socket_path.stat()
    expect(oct(st.st_mode & 0o777) == oct(socket_mode), f"{socket_path} has mode {oct(st.st_mode & 0o777)}")
    expect((st.st_uid, st.st_gid) == (owner, group), f"{socket_path} is owned by {st.st_uid}:{st.st_gid}")
    expect(token.exists(), f"the token file {token} does not exist although the sockets listen")
    tk = token.stat()
    expect(oct(tk.st_mode & 0o777) == oct(token_mode), f"{token} has mode {oct(tk.st_mode & 0o777)}")
    expect((tk.st_uid, tk.st_gid) == (owner, group), f"{token} is owned by {tk.st_uid}:{tk.st_gid}")
    return f"socket {oct(socket_mode)}, token {oct(token_mode)}, credd.service inactive"


def first_request_activates(user: bool, port: int, token: Path, socket_path: Path):
    before = fake_state()["credential_gets"]
    expect_fake_credentials(probe(port, token))
    wait_until("credd.service active", lambda: active_state("credd.service", user) == "active", 10)
    expect(fake_state()["credential_gets"] > before, "credd served without asking the fake IMDS")
    expect(unix_get(socket_path, "/healthz") == 200, "GET /healthz over the Unix socket failed")
    return f"pid {show('credd.service', 'MainPID', user)}"


def restart_serves_from_fd_store(user: bool, port: int, token: Path):
    stored = wait_until("an fd in credd's fd store",
                        lambda: int(show("credd.service", "NFileDescriptorStore", user) or 0) >= 1, 10)
    old_pid = show("credd.service", "MainPID", user)
    gets = fake_state()["credential_gets"]
    systemctl("restart", "credd.service", user=user)
    expect(active_state("credd.service", user) == "active", "credd.service is not active after restart")
    expect(show("credd.service", "MainPID", user) != old_pid, "credd.service kept its pid across a restart")
    expect_fake_credentials(probe(port, token))
    expect(fake_state()["credential_gets"] == gets,
           "after `systemctl restart credd` the credentials were fetched from IMDS again, not the fd store")
    return f"fd store held {stored}; no upstream call after restart"


def invalid_reload_keeps_serving(user: bool, port: int, token: Path, config: Path):
    good = config.read_text()
    config.write_text(good + "bogus_key_for_reload_check: true\n")
    pid = show("credd.service", "MainPID", user)
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - 1))
    try:
        systemctl("reload", "credd.service", user=user)
        expect(active_state("credd.service", user) == "active", "credd.service is not active after the reload")
        expect(show("credd.service", "MainPID", user) == pid, "credd restarted instead of reloading")
        expect_fake_credentials(probe(port, token))
        unit_match = [*unit_matches(user), "--since", since]
        wait_until("a journal line naming the invalid key",
                   lambda: any("bogus_key_for_reload_check" in json.dumps(e) for e in journal_entries(*unit_match)), 5)
    finally:
        config.write_text(good)
    systemctl("reload", "credd.service", user=user)
    expect(active_state("credd.service", user) == "active", "credd.service is not active after reloading a good config")
    return "invalid config logged, old config kept"


def journal_is_structured(user: bool):
    entries = journal_entries(*unit_matches(user))
    own = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "credd"]
    structured = [e for e in own if any(k.startswith("CREDD_") for k in e)]
    expect(structured, f"no journal entry with CREDD_* fields among {len(entries)} of credd.service")
    expect(any("CREDD_SET" in e for e in structured), "no journal entry with CREDD_SET (the audit line)")
    expect(all("PRIORITY" in e for e in structured), "a structured entry without PRIORITY")
    labels, _ = scan("\n".join(json.dumps(e) for e in entries))
    expect(not labels, f"test secrets in credd's journal: {labels}")
    fields = sorted({k for e in structured for k in e if k.startswith("CREDD_")})
    return f"{len(structured)} structured entries; fields {fields}"


def stop_removes_socket(user: bool, socket_path: Path):
    systemctl("stop", "credd.socket", user=user)
    wait_until("credd.service to stop with its socket", lambda: active_state("credd.service", user) != "active", 15)
    expect(active_state("credd-tcp.socket", user) != "active", "credd-tcp.socket still listens after stopping credd.socket")
    expect(not socket_path.exists(), f"{socket_path} is left behind (RemoveOnStop=yes)")
    return "stopped, socket removed"


# ---- system units -------------------------------------------------------------------------------------

def system_part() -> None:
    import grp

    @step("system: credd user and group from credd.sysusers, /etc/credd/credd.yaml")
    def setup():
        run(["systemd-sysusers", str(PROJECT / "systemd" / "credd.sysusers")])
        SYSTEM_CONFIG.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONFIG.write_text(config_text(SYSTEM_TOKEN, SYSTEM_SOCKET, 9702, "credd", allow_uids=[0, ALLOWED_UID]))
        return f"group credd = {grp.getgrnam('credd').gr_gid}"

    if not setup():
        return
    gid = grp.getgrnam("credd").gr_gid
    checks = [
        step("system: start credd.socket: sockets and token in place, credd.service inactive")(
            lambda: sockets_listen_and_service_waits(False, SYSTEM_SOCKET, SYSTEM_TOKEN, 0, gid, 0o660, 0o640)),
        step("system: a boto3 request to 127.0.0.1:9702 activates credd and gets the fake's credentials")(
            lambda: first_request_activates(False, 9702, SYSTEM_TOKEN, SYSTEM_SOCKET)),
        step("system: watchdog and hardening as configured")(lambda: system_properties()),
        step("system: over the Unix socket a uid in access.allow_uids gets credentials, another uid gets 403")(
            lambda: unix_callers_by_uid(SYSTEM_SOCKET, gid)),
        step("system: systemctl restart credd.service serves from the fd store, no upstream call")(
            lambda: restart_serves_from_fd_store(False, 9702, SYSTEM_TOKEN)),
        step("system: an invalid config plus systemctl reload keeps credd serving")(
            lambda: invalid_reload_keeps_serving(False, 9702, SYSTEM_TOKEN, SYSTEM_CONFIG)),
        step("system: journalctl -u credd shows structured lines and no secret")(lambda: journal_is_structured(False)),
        step("system: systemctl stop credd.socket stops credd and removes the socket")(
            lambda: stop_removes_socket(False, SYSTEM_SOCKET)),
    ]
    run_checks(checks, critical=2)


def run_checks(checks, critical: int) -> None:
    """Run the checks in order; the first `critical` ones are preconditions of the rest (stop on failure),
    the later ones are independent enough to report each (a failed restart check still lets reload run)."""
    for index, check in enumerate(checks):
        if not check() and index < critical:
            break


ALLOWED_UID = 4242
OTHER_UID = 4343


def unix_status_as(uid: int, gid: int, socket_path: Path) -> str:
    """GET /v1/credentials over the Unix socket as another uid (in the socket's group)."""
    out = run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "curl", "-s", "-o", "/dev/null",
               "-w", "%{http_code}", "--unix-socket", str(socket_path), "http://localhost/v1/credentials"], check=False)
    return out.stdout.strip()


def unix_callers_by_uid(socket_path: Path, gid: int):
    # The kernel's SO_PEERCRED uid must reach credd unchanged: with PrivateUsers= every other uid would be
    # mapped to nobody and allow_uids could never match.
    allowed = unix_status_as(ALLOWED_UID, gid, socket_path)
    other = unix_status_as(OTHER_UID, gid, socket_path)
    expect(allowed == "200", f"uid {ALLOWED_UID} (in allow_uids) got {allowed}")
    expect(other == "403", f"uid {OTHER_UID} (not allowed) got {other}")
    return f"uid {ALLOWED_UID}: {allowed}, uid {OTHER_UID}: {other}"


def system_properties():
    expect(show("credd.service", "WatchdogUSec") == "30s", f"WatchdogUSec is {show('credd.service', 'WatchdogUSec')}")
    expect(show("credd.service", "NotifyAccess") == "main", "NotifyAccess is not main")
    import pwd
    pid = show("credd.service", "MainPID")
    status = Path(f"/proc/{pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    expect(uid == pwd.getpwnam("credd").pw_uid, f"credd runs as uid {uid}, not as the user credd")
    limits = Path(f"/proc/{pid}/limits").read_text()
    core = [line for line in limits.splitlines() if line.startswith("Max core file size")]
    expect(core and core[0].split()[4] == "0", f"core dumps are not off: {core}")
    return f"runs as credd; {core[0] if core else ''}"


# ---- user units ---------------------------------------------------------------------------------------

def user_part() -> None:
    @step("user: a test user with a user manager and its credd config")
    def setup():
        # PrivateTmp= in a user manager creates its directories as the user, in /tmp and /var/tmp: the
        # container's fresh root may lack a world-writable /var/tmp (a real system has one).
        for tmp in ("/tmp", "/var/tmp"):
            run(["install", "-d", "-m", "1777", tmp])
        # The mount point a user manager's sandboxed services are set up on: the system manager creates it
        # with its first sandboxed service (long done on a booted host); a user manager cannot.
        run(["install", "-d", "-m", "0755", "/run/systemd/unit-root"])
        run(["systemd-sysusers", "--inline", f'u {USER} {UID} "credd test user" {USER_HOME} /bin/sh'])
        USER_CONFIG.parent.mkdir(parents=True, exist_ok=True)
        USER_CONFIG.write_text(config_text(USER_RUNTIME / "credd/token", USER_RUNTIME / "credd/credd.sock", 9703, None))
        run(["chown", "-R", f"{USER}:{USER}", str(USER_HOME)])
        systemctl("start", f"user@{UID}.service")
        wait_until("the user manager", lambda: active_state(f"user@{UID}.service") == "active", 20)
        return f"user@{UID}.service active"

    if not setup():
        return
    sock, token = USER_RUNTIME / "credd/credd.sock", USER_RUNTIME / "credd/token"
    checks = [
        step("user: systemctl --user start credd.socket: socket in $XDG_RUNTIME_DIR, token, service inactive")(
            lambda: sockets_listen_and_service_waits(True, sock, token, UID, UID, 0o600, 0o600)),
        step("user: a boto3 request to 127.0.0.1:9703 activates the user's credd")(
            lambda: first_request_activates(True, 9703, token, sock)),
        step("user: systemctl --user restart credd.service serves from the fd store")(
            lambda: restart_serves_from_fd_store(True, 9703, token)),
        step("user: an invalid config plus systemctl --user reload keeps credd serving")(
            lambda: invalid_reload_keeps_serving(True, 9703, token, USER_CONFIG)),
        step("user: the journal shows structured lines of the user's credd and no secret")(
            lambda: journal_is_structured(True)),
        step("user: systemctl --user stop credd.socket removes the socket")(lambda: stop_removes_socket(True, sock)),
    ]
    run_checks(checks, critical=2)


def main() -> int:
    parts = os.environ.get("CREDD_CI_PARTS", "system,user").split(",")

    @step("the fake IMDS on 127.0.0.1:1338")
    def start_fake():
        global _fake_started
        systemctl("start", "fake-imds.service")
        _fake_started = True
        wait_until("the fake IMDS", fake_state, 20)

    if not start_fake():
        (RESULTS / "result.json").write_text(json.dumps({"steps": _steps}, indent=2))
        return 1
    if "system" in parts:
        system_part()
    if "user" in parts:
        user_part()

    @step("whole journal: no test secret anywhere")
    def whole_journal():
        text = run(["journalctl", "--no-pager", "-o", "verbose"]).stdout
        labels, redacted = scan(text)
        (RESULTS / "journal.txt").write_text(redacted)
        expect(not labels, f"test secrets in the journal: {labels}")
        return f"{len(text.splitlines())} lines"

    if _fake_started:
        whole_journal()
    (RESULTS / "result.json").write_text(json.dumps({"steps": _steps}, indent=2))
    return 0 if _steps and all(s["ok"] for s in _steps) else 1


if __name__ == "__main__":
    sys.exit(main())
