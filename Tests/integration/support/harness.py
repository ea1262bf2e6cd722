"""Runs the real credd daemon for integration tests: config, process, HTTP over TCP and the Unix socket,
the CLI, clean environments for real AWS clients, and a moto STS with SigV4 checking on."""

from __future__ import annotations

import datetime as _dt
import hashlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import yaml

from . import redact, register_secret, watch_for_secrets


def find_repo_root(start: Path) -> Path:
    """The directory holding Package.swift above `start`."""
    for d in [start, *start.resolve().parents]:
        if (d / "Package.swift").is_file():
            return d
    raise RuntimeError(f"No Package.swift above {start}: run the integration tests from inside the credd checkout.")


REPO_ROOT = find_repo_root(Path(__file__).resolve().parent)
VENV_BIN = Path(sys.executable).parent
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def credd_binary() -> Path:
    """$CREDD_BIN, else the debug build in this checkout."""
    env = os.environ.get("CREDD_BIN")
    return Path(env) if env else REPO_ROOT / ".build" / "debug" / "credd"


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def short_socket_dir(preferred: Path) -> Path:
    """A directory whose socket paths stay under the 108-byte sun_path limit."""
    if len(str(preferred / "credd.sock")) < 100:
        return preferred
    return Path(tempfile.mkdtemp(prefix="credd-", dir="/tmp"))


class Reply(NamedTuple):
    """One HTTP answer: status, headers (lower-case names), body bytes."""

    status: int
    headers: dict
    body: bytes

    def __repr__(self) -> str:  # the body may hold credentials; pytest shows reprs when an assert fails
        return f"Reply(status={self.status}, content-type={self.headers.get('content-type')!r}, {len(self.body)} bytes)"

    def json(self) -> Any:
        return json.loads(self.body)


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix stream socket."""

    def __init__(self, path: str, timeout: float = 10):
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._unix_path)
        self.sock = s


def http_request(conn: http.client.HTTPConnection, method: str, path: str, headers: dict) -> Reply:
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


class CreddStartError(AssertionError):
    pass


_USE_TOKEN_FILE = object()


def raise_file_limit() -> None:
    """Room for fan-in tests (1000 client connections here, as many accepted ones in credd, which inherits
    the limit). Called once in the test process: no preexec_fn in a process full of threads."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < min(want, 65536):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 65536), hard))


class Credd:
    """One credd daemon started from a config this helper writes.

    The daemon listens on a Unix socket in `workdir` (or a short directory when that path is too long) and
    on one free loopback TCP port; its stderr goes to a file that the secret scan watches.
    """

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        *,
        imds_endpoint: Optional[str] = None,
        imds: Optional[dict] = None,
        credentials: Optional[dict] = None,
        listen: Optional[dict] = None,
        access: Optional[dict] = None,
        extra_config: Optional[dict] = None,
        tcp: bool = True,
        tcp_host: str = "127.0.0.1",
        env: Optional[dict] = None,
        name: str = "credd",
    ) -> None:
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.home = self.workdir / "home"
        self.home.mkdir(exist_ok=True)
        sock_dir = short_socket_dir(self.workdir)
        self.unix_path = sock_dir / f"{name}.sock"
        self.token_file = self.workdir / f"{name}.token"
        self.config_path = self.workdir / f"{name}.yaml"
        self.stderr_path = watch_for_secrets(self.workdir / f"{name}.stderr.log", f"{name}'s log (stderr)")
        self.stdout_path = watch_for_secrets(self.workdir / f"{name}.stdout.log", f"{name}'s stdout")
        self.tcp_port = free_port(tcp_host) if tcp else None
        self.tcp_host = tcp_host
        host = f"[{tcp_host}]" if ":" in tcp_host else tcp_host
        self.tcp_url = f"http://{host}:{self.tcp_port}" if tcp else None
        self.process: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None
        self._cli_runs = 0

        listen_cfg: dict = {
            "unix": {"path": str(self.unix_path), "mode": "0660"},
            "tcp": [f"{host}:{self.tcp_port}"] if tcp else [],
            "token_file": str(self.token_file),
        }
        listen_cfg.update(listen or {})
        imds_cfg: dict = {}
        if imds_endpoint is not None:
            imds_cfg["endpoint"] = imds_endpoint
        imds_cfg.update(imds or {})
        self.config: dict = {"listen": listen_cfg}
        if access:
            self.config["access"] = access
        if imds_cfg:
            self.config["imds"] = imds_cfg
        self.config["credentials"] = credentials if credentials is not None else {"default": {"source": "imds"}}
        # Debug logging: the more credd says, the more the secret scan checks.
        self.config["log"] = {"level": "debug"}
        for key, value in (extra_config or {}).items():
            self.config[key] = value
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

        self.env = {
            "PATH": SYSTEM_PATH,
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "TMPDIR": str(self.workdir),
            "XDG_RUNTIME_DIR": str(self.workdir),
            "XDG_CONFIG_HOME": str(self.workdir / "xdg-config"),
        }
        self.env.update(env or {})

    # ---- process ---------------------------------------------------------------------------------

    def start(self, wait: bool = True, timeout: float = 30.0) -> "Credd":
        if not self.binary.exists():
            raise CreddStartError(f"The credd binary {self.binary} does not exist: build it (swift build) or set CREDD_BIN.")
        self._stderr = open(self.stderr_path, "ab")
        self._stdout = open(self.stdout_path, "ab")
        self.process = subprocess.Popen(
            [str(self.binary), "serve", "--config", str(self.config_path)],
            env=self.env, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=self._stderr,
            start_new_session=True,
        )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the Unix socket accepts and GET /healthz answers (any status)."""
        deadline = time.monotonic() + timeout
        last = "nothing tried yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CreddStartError(
                    f"credd exited with status {self.process.returncode} before it was ready.\n"
                    f"config:\n{self.config_path.read_text()}\nlog tail:\n{self.log_tail()}")
            try:
                self.get("/healthz", via="unix", timeout=2)
                break
            except (OSError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.05)
        else:
            raise CreddStartError(
                f"credd did not answer GET /healthz on {self.unix_path} within {timeout:.0f} s (last: {last}).\n"
                f"log tail:\n{self.log_tail()}")
        if self.tcp_url and self.token_file.exists():
            register_secret(self.token_file.read_text(), "credd auth token")
        elif self.tcp_url:
            raise CreddStartError(f"credd is ready but did not create its token file {self.token_file}.")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.process.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """SIGTERM, wait, and return the exit status (SIGKILL after `timeout`, returning None)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                self.returncode = None
                self._close_files()
                return None
        self.returncode = self.process.returncode
        self._close_files()
        return self.returncode

    def _close_files(self) -> None:
        for f in (getattr(self, "_stderr", None), getattr(self, "_stdout", None)):
            if f and not f.closed:
                f.close()

    def logs(self) -> str:
        """credd's stderr so far. It may hold a leaked secret: print only `redact(logs)`."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return redact("\n".join(self.logs().splitlines()[-lines:]))

    def token(self) -> str:
        return self.token_file.read_text()

    # ---- HTTP ------------------------------------------------------------------------------------

    def get(self, path: str, token=_USE_TOKEN_FILE, via: str = "tcp", headers: Optional[dict] = None,
            method: str = "GET", host: Optional[str] = None, timeout: float = 10) -> Reply:
        """One request. Over TCP the token file's content is sent as Authorization unless `token` says
        otherwise (None: no header). `host` overrides the Host header (default: the address and port)."""
        hdrs: dict = {}
        if via == "tcp":
            if self.tcp_url is None:
                raise ValueError("this credd has no TCP listener")
            conn = http.client.HTTPConnection(self.tcp_host, self.tcp_port, timeout=timeout)
            hdrs["Host"] = host if host is not None else self.tcp_url.split("//", 1)[1]
            if token is _USE_TOKEN_FILE:
                token = self.token()
        elif via == "unix":
            conn = UnixHTTPConnection(str(self.unix_path), timeout=timeout)
            hdrs["Host"] = host if host is not None else "localhost"
            if token is _USE_TOKEN_FILE:
                token = None
        else:
            raise ValueError(f"via must be 'tcp' or 'unix', not {via!r}")
        if token is not None:
            hdrs["Authorization"] = token
        hdrs.update(headers or {})
        return http_request(conn, method, path, hdrs)

    def wait_serving(self, name: Optional[str] = None, timeout: float = 20) -> "Credd":
        """Until the set (default: `default`) answers 200 on the Unix socket: past the cold start."""
        path = "/v1/credentials" + (f"/{name}" if name else "")
        self.wait_for(lambda: self.get(path, via="unix").status == 200, timeout, f"credd to serve {path}")
        return self

    def credentials_url(self, name: Optional[str] = None) -> str:
        return f"{self.tcp_url}/v1/credentials" + (f"/{name}" if name else "")

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2):
        """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` s."""
        deadline = time.monotonic() + timeout
        last_error = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
                last_error = e
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                             + (f" (last error: {redact(str(last_error))})" if last_error else "")
                             + f"\ncredd log tail:\n{self.log_tail()}")

    # ---- CLI -------------------------------------------------------------------------------------

    def cli_env(self, extra: Optional[dict] = None) -> dict:
        env = dict(self.env)
        env["CREDD_CONFIG"] = str(self.config_path)
        env.update(extra or {})
        return env

    def run_cli(self, *args: str, output_holds_secrets: bool = False, timeout: float = 30,
                env: Optional[dict] = None) -> subprocess.CompletedProcess:
        """Run `credd ARGS` with CREDD_CONFIG pointing at this daemon's config. Its output is kept in a
        file that the secret scan watches, unless the command prints credentials on purpose (`credd get`)."""
        self._cli_runs += 1
        proc = subprocess.run([str(self.binary), *args], env=self.cli_env(env), cwd=self.workdir,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        stem = self.workdir / f"{self.name}.cli{self._cli_runs}"
        if not output_holds_secrets:
            out = watch_for_secrets(stem.with_suffix(".stdout"), f"output of credd {' '.join(args)}")
            out.write_bytes(proc.stdout)
        err = watch_for_secrets(stem.with_suffix(".stderr"), f"stderr of credd {' '.join(args)}")
        err.write_bytes(proc.stderr)
        return proc

    def status_json(self) -> Any:
        """`credd status --json`, parsed."""
        proc = self.run_cli("status", "--json")
        self.last_status_exit = proc.returncode
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(
                f"`credd status --json` printed no JSON (exit {proc.returncode}).\n"
                f"stdout: {redact(proc.stdout)[:2000]}\nstderr: {redact(proc.stderr)[:2000]}")


# ---- clients -----------------------------------------------------------------------------------------

def client_env(credd: Credd, name: Optional[str] = None, *, token_file: Optional[Path] = None,
               region: str = "us-east-1") -> dict:
    """A clean environment for boto3 / AWS CLI subprocesses that can find credentials only at credd."""
    home = credd.workdir / "client-home"
    home.mkdir(exist_ok=True)
    config = home / "aws-config"
    shared = home / "aws-credentials"
    for f in (config, shared):
        if not f.exists():
            f.write_text("")
    return {
        "PATH": f"{VENV_BIN}:{SYSTEM_PATH}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": credd.credentials_url(name),
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file or credd.token_file),
        "AWS_DEFAULT_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(shared),
    }


def sha256(value: Optional[str]) -> Optional[str]:
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()


# A real boto3 in its own process. It prints what it got without a secret in it: the key id, the secret
# and the token as SHA-256 digests (compared for equality only), the provider, or the exception's type.
_BOTO3_PROBE = r"""
import hashlib, json, sys
import boto3, botocore
out = {}
try:
    session = boto3.Session()
    creds = session.get_credentials()
    if creds is None:
        out["error"] = "NoCredentials"
    else:
        frozen = creds.get_frozen_credentials()
        out["method"] = creds.method
        out["access_key"] = frozen.access_key
        out["secret_sha256"] = hashlib.sha256(frozen.secret_key.encode()).hexdigest()
        out["token_sha256"] = hashlib.sha256((frozen.token or "").encode()).hexdigest()
        out["account_id"] = getattr(frozen, "account_id", None)
        if sys.argv[1:] == ["client"]:
            boto3.client("sts")
except Exception as e:
    out["error"] = type(e).__name__
print(json.dumps(out))
"""


def run_boto3_probe(env: dict, *, create_client: bool = False, timeout: float = 60) -> dict:
    """Ask a fresh boto3 process for its credentials under `env`; returns the probe's JSON."""
    args = [sys.executable, "-c", _BOTO3_PROBE] + (["client"] if create_client else [])
    proc = subprocess.run(args, env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    text = proc.stdout.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not text:
        raise AssertionError(f"boto3 probe failed (exit {proc.returncode}): {redact(proc.stderr)[-2000:]}")
    return json.loads(text[-1])


# ---- moto STS with SigV4 checking on -----------------------------------------------------------------

class MotoSTS:
    """moto's server on loopback, with an IAM user (admin) and a role whose credentials a fake IMDS can serve.

    After `start()` moto verifies every SigV4 signature (PROTOCOLS §5): credentials that moto did not
    issue, or a wrong secret, are refused.
    """

    ADMIN_POLICY = json.dumps({"Version": "2012-10-17",
                               "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})

    def __init__(self, role_name: str = "credd-test-role", region: str = "us-east-1") -> None:
        self.role_name = role_name
        self.region = region
        self.account_id = "123456789012"
        self._server = None
        self.url = ""
        self.role_arn = ""
        self._admin: dict = {}

    def start(self) -> "MotoSTS":
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        self._reset_auth("inf")  # set up IAM without signatures, then switch checking on
        iam = self._client("iam", "AKIAIOSFODNN7SETUP00", "setup-secret-not-checked-yet")
        iam.create_user(UserName="credd-test-admin")
        iam.put_user_policy(UserName="credd-test-admin", PolicyName="admin", PolicyDocument=self.ADMIN_POLICY)
        key = iam.create_access_key(UserName="credd-test-admin")["AccessKey"]
        self._admin = {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
        register_secret(self._admin["secret"], "moto IAM user secret key")
        # moto checks the trust policy: its statements must name AWS principals (it fails on Service-only ones).
        admin_arn = f"arn:aws:iam::{self.account_id}:user/credd-test-admin"
        trust = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"AWS": [admin_arn, f"arn:aws:iam::{self.account_id}:root"],
                           "Service": "ec2.amazonaws.com"}}]})
        role = iam.create_role(RoleName=self.role_name, AssumeRolePolicyDocument=trust)["Role"]
        self.role_arn = role["Arn"]
        iam.put_role_policy(RoleName=self.role_name, PolicyName="admin", PolicyDocument=self.ADMIN_POLICY)
        self._reset_auth("0")
        self._prove_signatures_are_checked()
        return self

    def stop(self) -> None:
        if self._server is not None:
            try:
                self._reset_auth("inf")
            except OSError:
                pass
            self._server.stop()
            self._server = None

    def _reset_auth(self, count: str) -> None:
        # A raw body: with urllib's default form Content-Type, Flask hands moto an empty request.data.
        req = urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=count.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.status != 200:
                raise RuntimeError(f"moto reset-auth answered {r.status}")

    def _client(self, service: str, key_id: str, secret: str, token: Optional[str] = None):
        import boto3

        return boto3.session.Session().client(
            service, endpoint_url=self.url, region_name=self.region, aws_access_key_id=key_id,
            aws_secret_access_key=secret, aws_session_token=token)

    def client(self, service: str):
        """A client signed with the admin user's keys."""
        return self._client(service, self._admin["id"], self._admin["secret"])

    def _prove_signatures_are_checked(self) -> None:
        import botocore.exceptions

        wrong = self._client("sts", self._admin["id"], "not-the-secret-" + "x" * 25)
        try:
            wrong.get_caller_identity()
        except botocore.exceptions.ClientError as e:
            if e.response["Error"]["Code"] != "SignatureDoesNotMatch":
                raise RuntimeError(f"moto refused a bad signature with {e.response['Error']['Code']}, "
                                   "expected SignatureDoesNotMatch")
        else:
            raise RuntimeError("moto accepted a request signed with a wrong secret: SigV4 checking is off.")

    def issue_role_credentials(self, duration: int = 3600, session_name: str = "i-0123456789abcdef0") -> dict:
        """AssumeRole as the admin user: credentials moto accepts, for a fake IMDS to serve.
        Returns {AccessKeyId, SecretAccessKey, SessionToken, Expiration (datetime)}."""
        creds = self.client("sts").assume_role(RoleArn=self.role_arn, RoleSessionName=session_name,
                                               DurationSeconds=duration)["Credentials"]
        register_secret(creds["SecretAccessKey"], "moto role secret key")
        register_secret(creds["SessionToken"], "moto role session token")
        return creds

    def serve_from(self, fake, duration: int = 3600) -> dict:
        """Make `fake` (a FakeIMDS) serve freshly issued moto role credentials."""
        c = self.issue_role_credentials(duration)
        fake.set_credentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"], c["Expiration"])
        return c


def parse_expiration(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def which(name: str) -> Optional[str]:
    return shutil.which(name, path=f"{VENV_BIN}:{SYSTEM_PATH}")


# ---- assertions that never print a secret ------------------------------------------------------------------

_SECRET_FIELDS = {"SecretAccessKey", "Token", "SessionToken", "secret_key", "token", "secretAccessKey",
                  "sessionToken", "refreshToken"}


class Redacted(dict):
    """A credentials answer whose repr (what pytest shows when an assert fails) hides the secret fields."""

    def __repr__(self):
        return repr({k: ("<secret>" if k in _SECRET_FIELDS else v) for k, v in self.items()})


def credentials_answer(reply: Reply) -> Redacted:
    """The JSON of a 200 credentials answer, or an AssertionError saying what came instead."""
    if reply.status != 200:
        raise AssertionError(f"expected 200 with credentials, got {reply.status}: {redact(reply.body)[:500]}")
    try:
        return Redacted(json.loads(reply.body))
    except ValueError:
        raise AssertionError(f"credentials answer is not JSON: {redact(reply.body)[:500]}")


def error_answer(reply: Reply) -> dict:
    """The {"code", "message"} JSON of an error answer."""
    try:
        doc = json.loads(reply.body)
    except ValueError:
        raise AssertionError(f"error answer {reply.status} is not JSON: {redact(reply.body)[:500]}")
    if not (isinstance(doc, dict) and isinstance(doc.get("code"), str) and isinstance(doc.get("message"), str)):
        raise AssertionError(f"error answer {reply.status} is not {{code, message}}: {redact(reply.body)[:500]}")
    return doc


def matches_issued(answer: dict, issued) -> bool:
    """Equality only, so a mismatch prints no secret: `issued` is a fake's RoleCredentials."""
    return (answer.get("AccessKeyId") == issued.access_key_id
            and answer.get("SecretAccessKey") == issued.secret_access_key
            and answer.get("Token") == issued.token)


def concurrent_gets(credd: Credd, n: int, path: str = "/v1/credentials", timeout: float = 60) -> list:
    """`n` requests on `n` connections, opened first and then sent at once. Returns (status, AccessKeyId
    or None) per request, or (exception name, None) when one failed."""
    import threading

    token = credd.token()
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def one(i: int) -> None:
        conn = http.client.HTTPConnection(credd.tcp_host, credd.tcp_port, timeout=timeout)
        try:
            conn.connect()
            barrier.wait(timeout)
            reply = http_request(conn, "GET", path, {"Host": f"127.0.0.1:{credd.tcp_port}", "Authorization": token})
            key = None
            if reply.status == 200:
                key = json.loads(reply.body).get("AccessKeyId")
            results[i] = (reply.status, key)
        except Exception as e:  # noqa: BLE001 - reported per request
            results[i] = (type(e).__name__, None)
            try:
                barrier.abort()
            except Exception:  # noqa: BLE001
                pass
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 10)
    return results


def in_isolated_network() -> bool:
    """True inside a network namespace whose only interface is lo (as `make test` runs the suite)."""
    # socket.if_nameindex() asks the kernel about this process's namespace (/sys may show another one's).
    return {name for _, name in socket.if_nameindex()} <= {"lo"}


class Observation(NamedTuple):
    at: float  # epoch seconds when the answer arrived
    status: Any  # HTTP status, or the exception's name
    key: Optional[str]
    expiration: Optional[float]  # epoch seconds
    retry_after: Optional[str]


class Watcher:
    """Polls credd's credentials route from a thread and records what every answer said (never a secret):
    the evidence for "clients kept getting credentials" and "never an Expiration in the past"."""

    def __init__(self, credd: Credd, path: str = "/v1/credentials", interval: float = 0.25) -> None:
        import threading

        self.credd, self.path, self.interval = credd, path, interval
        self.seen: list[Observation] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Watcher":
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.append(observe(self.credd, self.path))
            self._stop.wait(self.interval)

    def expired_answers(self) -> list[Observation]:
        """200 answers whose Expiration had already passed when they arrived."""
        return [o for o in self.seen if o.status == 200 and (o.expiration is None or o.expiration <= o.at)]

    def statuses(self) -> set:
        return {o.status for o in self.seen}


def observe(credd: Credd, path: str = "/v1/credentials") -> Observation:
    try:
        reply = credd.get(path, timeout=15)
    except (OSError, http.client.HTTPException) as e:
        return Observation(time.time(), type(e).__name__, None, None, None)
    at = time.time()
    key = expiration = None
    if reply.status == 200:
        try:
            doc = json.loads(reply.body)
            key = doc.get("AccessKeyId")
            expiration = parse_expiration(doc["Expiration"]).timestamp()
        except (ValueError, KeyError):
            return Observation(at, "200 with a bad body", None, None, None)
    return Observation(at, reply.status, key, expiration, reply.headers.get("retry-after"))
