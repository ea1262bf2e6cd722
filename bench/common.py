"""Shared pieces of credd's benchmarks: the processes (credd, nginx, the fake IMDS), the load tools, /proc readers.

Everything listens on loopback only. No secret is ever printed: tokens reach wrk through a Lua script that
reads the token file, and credentials answers are only compared, never shown.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "Tests" / "integration"))

from support import fake_imds as _fake_imds  # noqa: E402  (after the path change)
from support.fake_imds import FakeIMDS  # noqa: E402

# The fake answers with two writes (headers, then body); with Nagle's algorithm on its side and delayed ACKs
# on the client's, every answer after a connection's first waits ~40 ms for an ACK. EC2's IMDS does not:
# the benchmarks run the fake with TCP_NODELAY (http.server's own switch), so it costs what it should.
NO_NAGLE = "disable_nagle_algorithm"
setattr(_fake_imds._Handler, NO_NAGLE, True)

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SERVER_CPU = 0
LOAD_CPU = 1


class BenchError(RuntimeError):
    """A benchmark could not run (a tool failed, a server did not start): says what and what to do."""


def clean_environ() -> None:
    """No AWS_* setting or proxy of this machine may reach a client created here."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del os.environ[name]
    os.environ["NO_PROXY"] = "127.0.0.1,localhost,::1"


def raise_file_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard if hard != resource.RLIM_INFINITY else 65536, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKDIRS: list[Path] = []


def workdir(prefix: str) -> Path:
    """A fresh directory under /tmp: short enough for Unix socket paths (108 bytes). bench.py removes them
    after a run in which every benchmark ran, and keeps them (with the daemons' logs) otherwise."""
    path = Path(tempfile.mkdtemp(prefix=f"credd-bench-{prefix}-", dir="/tmp"))
    WORKDIRS.append(path)
    return path


def cpus() -> int:
    return len(os.sched_getaffinity(0))


def pinned(cpu: Optional[int], argv: list[str]) -> list[str]:
    """argv run on one core (taskset), when the machine has more than one."""
    if cpu is None or cpus() < 2 or not shutil.which("taskset"):
        return argv
    return ["taskset", "-c", str(cpu), *argv]


def need(tool: str, package: str) -> str:
    path = shutil.which(tool, path=SYSTEM_PATH)
    if not path:
        raise BenchError(f"{tool} is not installed: apt-get install {package}")
    return path


# ---- /proc ---------------------------------------------------------------------------------------------

def proc_status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def rss_kib(pid: int) -> int:
    return int(proc_status(pid)["VmRSS"].split()[0])


def context_switches(pid: int) -> dict[str, tuple[int, int]]:
    """Per thread (name and tid): (voluntary, involuntary) context switches so far."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            st = proc_status_task(pid, tid)
        except FileNotFoundError:
            continue
        out[f"{st['Name']}/{tid}"] = (int(st["voluntary_ctxt_switches"]), int(st["nonvoluntary_ctxt_switches"]))
    return out


def proc_status_task(pid: int, tid: str) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# ---- HTTP over TCP and the Unix socket ------------------------------------------------------------------

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10):
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._unix_path)
        self.sock = s


def http_get(conn: http.client.HTTPConnection, path: str, headers: dict) -> tuple[int, dict, bytes]:
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# ---- the fake IMDS --------------------------------------------------------------------------------------

def start_fake_imds(delay: float = 0.0, lifetime: float = 6 * 3600) -> FakeIMDS:
    """The strict IMDSv2 fake of the integration tests, in this process (its counters are readable)."""
    fake = FakeIMDS(lifetime=lifetime)
    fake.delay(delay)
    return fake.start()


class StandaloneFakeIMDS:
    """The fake IMDS in its own process (`fake_imds.py --port 0`), so a client measured in this process does
    not share its interpreter with the server it talks to."""

    def __init__(self, delay: str = "0") -> None:
        support = REPO / "Tests" / "integration" / "support"
        run = (f"import sys; sys.path.insert(0, {str(support)!r}); import fake_imds; "
               f"fake_imds._Handler.{NO_NAGLE} = True; sys.exit(fake_imds.main(sys.argv[1:]))")
        self.process = subprocess.Popen(
            [sys.executable, "-c", run, "--port", "0", "--delay", delay],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
            start_new_session=True)
        line = self.process.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            self.stop()
            raise BenchError(f"fake_imds.py did not print its URL (got {line!r}).")
        self.url = line

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# ---- credd ----------------------------------------------------------------------------------------------

def credd_binary(explicit: Optional[str] = None) -> Path:
    for candidate in (explicit, os.environ.get("CREDD_BIN"), REPO / ".build" / "release" / "credd"):
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    raise BenchError("no credd binary: build one (bench/run.sh builds it, or `make release`) or pass --credd PATH.")


def describe_binary(binary: Path) -> str:
    size = binary.stat().st_size / 1e6
    kind = "release" if "/release/" in str(binary.resolve()) else ("debug" if "/debug/" in str(binary.resolve()) else "given")
    try:
        libs = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=10).stdout
        static = "libswiftCore" not in libs
    except (OSError, subprocess.TimeoutExpired):
        static = False
    return f"{kind} build, {'static' if static else 'dynamic'} Swift stdlib, {size:.1f} MB"


class Credd:
    """One `credd serve` from a config written here: a Unix socket and a loopback TCP port in `work`."""

    def __init__(self, binary: Path, work: Path, *, imds_url: Optional[str], audit: bool = True,
                 cpu: Optional[int] = SERVER_CPU, env: Optional[dict] = None, extra: Optional[dict] = None,
                 tcp: bool = True, name: str = "credd") -> None:
        self.binary, self.work, self.cpu, self.name = binary, work, cpu, name
        work.mkdir(parents=True, exist_ok=True)
        self.unix_path = work / f"{name}.sock"
        self.token_file = work / f"{name}.token"
        self.config_path = work / f"{name}.yaml"
        self.log_path = work / f"{name}.log"
        self.tcp_port = free_port() if tcp else None
        config: dict = {
            "listen": {"unix": {"path": str(self.unix_path), "mode": "0660"},
                       "tcp": [f"127.0.0.1:{self.tcp_port}"] if tcp else [],
                       "token_file": str(self.token_file)},
            "credentials": {"default": {"source": "imds"}},
            "log": {"level": "info", "audit": audit},
        }
        if imds_url:
            config["imds"] = {"endpoint": imds_url}
        for key, value in (extra or {}).items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key].update(value)
            else:
                config[key] = value
        # JSON is YAML: no YAML writer needed.
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")
        self.env = {"PATH": SYSTEM_PATH, "HOME": str(work), "LANG": "C.UTF-8", "TMPDIR": str(work),
                    "XDG_RUNTIME_DIR": str(work), "XDG_CONFIG_HOME": str(work / "xdg")}
        self.env.update(env or {})
        self.process: Optional[subprocess.Popen] = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def argv(self) -> list[str]:
        return [str(self.binary), "serve", "--config", str(self.config_path)]

    def start(self, wait: bool = True, timeout: float = 30) -> "Credd":
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(pinned(self.cpu, self.argv()), env=self.env, cwd=self.work,
                                        stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                        start_new_session=True)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"credd exited with status {self.process.returncode}; see {self.log_path}")
            try:
                self.get("/healthz", via="unix", timeout=2)
                return
            except (OSError, http.client.HTTPException):
                time.sleep(0.02)
        raise BenchError(f"credd did not answer /healthz within {timeout} s; see {self.log_path}")

    def token(self) -> str:
        return self.token_file.read_text()

    def get(self, path: str = "/v1/credentials", via: str = "tcp", timeout: float = 10) -> tuple[int, dict, bytes]:
        if via == "tcp":
            conn = http.client.HTTPConnection("127.0.0.1", self.tcp_port, timeout=timeout)
            headers = {"Authorization": self.token()}
        else:
            conn = UnixHTTPConnection(str(self.unix_path), timeout=timeout)
            headers = {}
        return http_get(conn, path, headers)

    def wait_serving(self, timeout: float = 20) -> bytes:
        """Until /v1/credentials answers 200 on the Unix socket; returns the body."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status, _, body = self.get(via="unix")
                if status == 200:
                    return body
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        raise BenchError(f"credd did not serve credentials within {timeout} s; see {self.log_path}")

    def stop(self) -> Optional[int]:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


# ---- nginx, the reference -------------------------------------------------------------------------------

class Nginx:
    """nginx with one worker, access_log off, answering `body` with `return 200` on TCP and a Unix socket."""

    def __init__(self, work: Path, body: bytes, cpu: Optional[int] = SERVER_CPU) -> None:
        need("nginx", "nginx-light")
        self.work, self.cpu = work, cpu
        work.mkdir(parents=True, exist_ok=True)
        (work / "tmp").mkdir(exist_ok=True)
        self.tcp_port = free_port()
        self.unix_path = work / "nginx.sock"
        text = body.decode()
        if "$" in text:
            raise BenchError("the answer holds '$', which nginx would read as a variable; cannot mirror it.")
        quoted = text.replace("\\", "\\\\").replace("'", "\\'")
        import grp
        import pwd
        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        t = work / "tmp"
        self.conf = work / "nginx.conf"
        self.conf.write_text(f"""
worker_processes 1;
daemon off;
master_process on;
{"user " + user + " " + group + ";" if os.getuid() == 0 else ""}
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 8192; use epoll; }}
http {{
    access_log off;
    client_body_temp_path {t}/body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{self.tcp_port} backlog=4096;
        listen unix:{self.unix_path} backlog=4096;
        location = /v1/credentials {{
            default_type application/json;
            add_header Cache-Control no-store;
            return 200 '{quoted}';
        }}
    }}
}}
""")
        self.process: Optional[subprocess.Popen] = None
        self.body = body

    def start(self) -> "Nginx":
        self._log = open(self.work / "nginx.out", "ab")
        self.process = subprocess.Popen(pinned(self.cpu, ["nginx", "-p", str(self.work), "-c", str(self.conf)]),
                                        stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                        start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"nginx exited with {self.process.returncode}: {(self.work / 'error.log').read_text()[-800:]}")
            try:
                status, _, body = http_get(http.client.HTTPConnection("127.0.0.1", self.tcp_port, timeout=2),
                                           "/v1/credentials", {})
                _, _, body2 = http_get(UnixHTTPConnection(str(self.unix_path), 2), "/v1/credentials", {})
                if status == 200 and body == self.body and body2 == self.body:
                    return self
                raise BenchError("nginx does not answer the same bytes as credd; cannot compare.")
            except (OSError, http.client.HTTPException):
                time.sleep(0.05)
        raise BenchError("nginx did not start within 10 s.")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            self._log.close()
        self.unix_path.unlink(missing_ok=True)


# ---- load tools -----------------------------------------------------------------------------------------

WRK_SCRIPT = BENCH_DIR / "wrk_token.lua"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise BenchError(f"cannot read the latency {text!r} from wrk's output")
    return float(m.group(1)) * _UNITS[m.group(2)]


class ChildCPU:
    """CPU seconds used by the child processes that finished inside the `with` block (the load tool), and
    the wall time: their ratio says whether the load tool, rather than the server, was the limit."""

    def __enter__(self) -> "ChildCPU":
        import resource

        u = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._cpu0, self._t0 = u.ru_utime + u.ru_stime, time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        import resource

        u = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu, self.wall = u.ru_utime + u.ru_stime - self._cpu0, time.monotonic() - self._t0


def wrk(url: str, connections: int, duration: float, token_file: Optional[Path], cpu: Optional[int] = LOAD_CPU) -> dict:
    """wrk with one thread; the token (if any) is read by wrk_token.lua from $CREDD_BENCH_TOKEN_FILE."""
    need("wrk", "wrk")
    env = dict(os.environ)
    env.pop("CREDD_BENCH_TOKEN_FILE", None)
    if token_file:
        env["CREDD_BENCH_TOKEN_FILE"] = str(token_file)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "--timeout", "5s",
            "-s", str(WRK_SCRIPT), url]
    with ChildCPU() as used:
        out = subprocess.run(pinned(cpu, argv), env=env, capture_output=True, text=True, timeout=duration + 60)
    text = out.stdout
    if out.returncode != 0 or "Requests/sec" not in text:
        raise BenchError(f"wrk failed (exit {out.returncode}): {out.stderr.strip()[-500:]}")
    result = {"tool": "wrk", "connections": connections, "load_cpu": used.cpu / max(used.wall, 1e-6)}
    result["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    result["requests"] = int(re.search(r"(\d+) requests in", text).group(1))
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", text, re.M)
        result[f"p{pct}_ms"] = _ms(m.group(1)) if m else None
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m.group(1))
    result["errors"] = errors
    return result


def h2load(unix_path: Path, connections: int, duration: float, cpu: Optional[int] = LOAD_CPU,
           requests: Optional[int] = None, work: Optional[Path] = None) -> dict:
    """`h2load --h1 -B unix:PATH` with one thread. Latency percentiles come from its per-request log file."""
    need("h2load", "nghttp2-client")
    log = Path(tempfile.mkstemp(prefix="h2load-", suffix=".log", dir=str(work) if work else None)[1])
    argv = ["h2load", "--h1", "-t1", f"-c{connections}", "-B", f"unix:{unix_path}"]
    if requests is not None:
        argv += [f"-n{requests}"]
    else:
        argv += [f"-D{max(1, round(duration))}", "--warm-up-time=1"]
    argv += ["--log-file", str(log), "http://localhost/v1/credentials"]
    try:
        with ChildCPU() as used:
            out = subprocess.run(pinned(cpu, argv), capture_output=True, text=True,
                                 timeout=(duration if requests is None else 600) + 60)
        text = out.stdout
        m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
        if out.returncode != 0 or not m:
            raise BenchError(f"h2load failed (exit {out.returncode}): {(out.stderr or text).strip()[-500:]}")
        result = {"tool": "h2load", "connections": connections, "rps": float(m.group(3)),
                  "load_cpu": used.cpu / max(used.wall, 1e-6)}
        r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored, (\d+) timeout", text)
        s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
        done, failed, errored, timeouts = int(r.group(3)), int(r.group(5)), int(r.group(6)), int(r.group(7))
        result["requests"] = done
        result["errors"] = failed + errored + timeouts + (int(s.group(3)) + int(s.group(4)) if s else 0)
        latencies = []
        with open(log) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    latencies.append(int(parts[2]) / 1000.0)
        latencies.sort()
        for pct in (50, 90, 99):
            result[f"p{pct}_ms"] = percentile(latencies, pct) if latencies else None
        return result
    finally:
        log.unlink(missing_ok=True)


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * pct / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---- the machine ----------------------------------------------------------------------------------------

def machine() -> dict:
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hypervisor = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        m = re.search(r"Hypervisor vendor:\s+(\S+)", lscpu)
        hypervisor = f", {m.group(1)} guest" if m else ""
    except (OSError, subprocess.TimeoutExpired):
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    distro = "Linux"
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass

    def version(argv: list[str], pattern: str) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            m = re.search(pattern, p.stdout + p.stderr)
            return m.group(1) if m else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "not installed"

    return {
        "cpu": f"{model}, {os.cpu_count()} cores{hypervisor}",
        "memory": f"{mem_gb:.0f} GiB",
        "os": f"{distro}, kernel {platform.release()}",
        "tools": ", ".join([
            "wrk " + version(["wrk", "--version"], r"wrk (\S+)"),
            "h2load " + version(["h2load", "--version"], r"nghttp2/(\S+)"),
            "nginx " + version(["nginx", "-v"], r"nginx/(\S+)"),
            "Python " + platform.python_version(),
        ]),
    }
