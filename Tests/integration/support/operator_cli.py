"""Helpers for the operator-tool tests (issue 6): run `credd doctor`, `credd env` and `credd exec` as a caller
would, with a clean environment; read the doctor's JSON report; run as an unprivileged user; scrape /metrics."""

from __future__ import annotations

import email.utils
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

from . import redact, watch_for_secrets
from .harness import SYSTEM_PATH, VENV_BIN, Credd

NOBODY = (65534, 65534)

_runs = 0


def caller_env(credd: Credd, *, home: Optional[Path] = None, **variables: str) -> dict:
    """A caller's environment: PATH, HOME (a caller home without AWS files unless `home` is given), LANG,
    CREDD_CONFIG pointing at the daemon's config, and exactly the AWS_* variables given."""
    if home is None:
        home = credd.workdir / "caller-home"
        home.mkdir(exist_ok=True)
    env = {"PATH": f"{VENV_BIN}:{SYSTEM_PATH}", "HOME": str(home), "LANG": "C.UTF-8", "CREDD_CONFIG": str(credd.config_path)}
    env.update(variables)
    return env


def run_credd(binary: Path, args: list, env: dict, *, as_user: Optional[tuple] = None, timeout: float = 60,
              workdir: Optional[Path] = None, output_holds_secrets: bool = False) -> subprocess.CompletedProcess:
    """Run the credd CLI; its output lands in files that the secret scan watches (unless it prints
    credentials on purpose). `as_user` = (uid, gid) runs it through setpriv with no supplementary groups."""
    global _runs
    _runs += 1
    prefix = []
    if as_user is not None:
        prefix = ["setpriv", f"--reuid={as_user[0]}", f"--regid={as_user[1]}", "--clear-groups", "--"]
    proc = subprocess.run(prefix + [str(binary), *args], env=env, capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=str(workdir) if workdir else "/")
    stem = Path(tempfile.gettempdir()) / f"credd-operator-run{os.getpid()}-{_runs}"
    if workdir is not None:
        stem = workdir / f"operator-run{_runs}"
    if not output_holds_secrets:
        watch_for_secrets(stem.with_suffix(".stdout"), f"stdout of credd {' '.join(args)}").write_bytes(proc.stdout)
    watch_for_secrets(stem.with_suffix(".stderr"), f"stderr of credd {' '.join(args)}").write_bytes(proc.stderr)
    return proc


class DoctorRun:
    """One `credd doctor --json` run: exit status and the parsed report (schema version 1)."""

    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.returncode = proc.returncode
        self.stderr = proc.stderr.decode(errors="replace")
        try:
            self.report: dict = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"credd doctor --json printed no JSON (exit {proc.returncode}):\n"
                                 f"{redact(proc.stdout)[:3000]}\nstderr: {redact(self.stderr)[:2000]}")

    def checks(self, check_id: str) -> list[dict]:
        return [c for c in self.report["checks"] if c["id"] == check_id]

    def check(self, check_id: str) -> dict:
        found = self.checks(check_id)
        if not found:
            raise AssertionError(f"no check {check_id!r} in the report; ids: {sorted({c['id'] for c in self.report['checks']})}")
        return found[0]

    def status(self, check_id: str) -> str:
        return self.check(check_id)["status"]

    def failed(self) -> list[str]:
        return [c["id"] for c in self.report["checks"] if c["status"] == "fail"]

    def summary(self) -> str:
        """Every check on one line each, for assertion messages (the report holds no secrets)."""
        return "\n".join(f"  {c['status']:4} {c['id']}: {c['message']}" + (f"  [fix: {c['fix']}]" if c.get("fix") else "")
                         for c in self.report["checks"])

    def expect(self, check_id: str, status: str, *fragments: str) -> dict:
        """Assert that check `check_id` has `status` and that its message or fix contains each fragment."""
        c = self.check(check_id)
        assert c["status"] == status, f"{check_id} is {c['status']}, expected {status}:\n{self.summary()}"
        text = c["message"] + " " + (c.get("fix") or "")
        for fragment in fragments:
            assert fragment in text, f"{check_id}: {fragment!r} not in {text!r}"
        if status == "fail":
            assert c.get("fix"), f"{check_id} failed without a fix"
        return c


def run_doctor(binary: Path, env: dict, *args: str, as_user: Optional[tuple] = None,
               workdir: Optional[Path] = None) -> DoctorRun:
    return DoctorRun(run_credd(binary, ["doctor", "--json", *args], env, as_user=as_user, workdir=workdir))


def credd_env_values(binary: Path, env: dict, *args: str) -> dict:
    """`credd env ARGS` evaluated by a real sh: the variables it sets, and which it unset."""
    out = run_credd(binary, ["env", *args], env)
    assert out.returncode == 0, f"credd env failed ({out.returncode}): {redact(out.stderr)}"
    script = out.stdout.decode()
    probe = ('eval "$1"; for v in AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE '
             'AWS_ACCESS_KEY_ID AWS_PROFILE AWS_CONTAINER_AUTHORIZATION_TOKEN; do '
             'if eval "[ -n \\"\\${$v+x}\\" ]"; then eval "printf \'%s=%s\\n\' $v \\"\\$$v\\""; fi; done')
    proc = subprocess.run(["sh", "-c", probe, "sh", script], env=env, capture_output=True, timeout=10)
    assert proc.returncode == 0, f"sh could not evaluate the output of credd env: {redact(proc.stderr)}\n{script}"
    values = dict(line.split("=", 1) for line in proc.stdout.decode().splitlines() if "=" in line)
    return {"script": script, "values": values}


def open_workdir() -> Path:
    """A directory every user may traverse (pytest's tmp_path is 0700), for daemons an unprivileged caller uses."""
    d = Path(tempfile.mkdtemp(prefix="credd-op-", dir="/tmp"))
    os.chmod(d, 0o755)
    return d


def can_run_as_nobody(binary: Path) -> Optional[str]:
    """None when `setpriv` can run the binary as nobody here; otherwise why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "the tests do not run as root, so they cannot switch to another user"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    proc = subprocess.run(["setpriv", f"--reuid={NOBODY[0]}", f"--regid={NOBODY[1]}", "--clear-groups", "--",
                           str(binary), "--help"], capture_output=True, timeout=30)
    if proc.returncode != 0:
        return f"the credd binary cannot be run as nobody from {binary} (a directory on its path is not traversable)"
    return None


def scrape(credd: Credd, via: str = "unix") -> Any:
    """GET /metrics and parse it with prometheus_client's text parser: {(name, frozenset(labels)): value}
    for every sample, plus the families by name."""
    from prometheus_client.parser import text_string_to_metric_families

    reply = credd.get("/metrics", via=via)
    assert reply.status == 200, f"/metrics answered {reply.status}: {redact(reply.body)[:500]}"
    assert reply.headers.get("content-type", "").startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(reply.body.decode())}
    samples = {}
    for f in families.values():
        for s in f.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return families, samples


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


class SkewedUpstream:
    """An upstream on loopback that answers every request 403 with an AWS-style XML error and a `Date`
    header `offset` seconds off the real time: enough for the doctor's clock check, and for a set to fail."""

    def __init__(self, offset: float) -> None:

        body = (b'<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>'
                b'<Message>denied by the test upstream</Message></Error></ErrorResponse>')

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def date_time_string(self, timestamp=None):
                return email.utils.formatdate(time.time() + offset, usegmt=True)

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(403)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _answer

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
