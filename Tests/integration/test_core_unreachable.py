"""Issue 2, "done when": credd with no IMDS reachable starts, answers 503 with "IMDS unreachable at …", and
`credd status` says why; with no config at all it does the same for the default endpoint (169.254.169.254),
which these tests reach only from inside a network namespace that has nothing but `lo`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from support import redact, watch_for_secrets
from support.harness import (
    SYSTEM_PATH, UnixHTTPConnection, client_env, error_answer, free_port, http_request, in_isolated_network,
    run_boto3_probe,
)


def test_configured_imds_unreachable_is_503_naming_the_endpoint(start_credd):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    credd = start_credd(imds_endpoint=endpoint, imds={"timeout": "1s", "attempts": 2})

    def settled():
        r = credd.get("/v1/credentials")
        return r if r.status != 503 or b"unreachable" in r.body else None

    reply = credd.wait_for(settled, 20, "the first fetch to fail")
    assert reply.status == 503
    message = error_answer(reply)["message"]
    assert "IMDS unreachable at" in message and endpoint.split("//")[1] in message, message
    assert reply.headers.get("retry-after", "").isdigit(), "503 says when to come back"

    health = credd.get("/healthz", token=None)
    assert health.status == 503 and b"IMDS unreachable at" in health.body

    status = credd.status_json()
    assert "IMDS unreachable at" in json.dumps(status)
    plain = credd.run_cli("status")
    assert b"IMDS unreachable at" in plain.stdout + plain.stderr

    got = run_boto3_probe(client_env(credd), create_client=True)
    assert got.get("error") == "CredentialRetrievalError", "boto3.client() raises instead of holding no credentials"


def test_environment_endpoint_is_used_when_the_config_has_none(fake_imds, start_credd):
    """`AWS_EC2_METADATA_SERVICE_ENDPOINT` is the second choice. If credd ignored it, it would try
    169.254.169.254: only run where that cannot leave the machine."""
    if not in_isolated_network():
        pytest.skip("skipped: needs a network namespace with only lo (make test runs the suite in one)")
    credd = start_credd(env={"AWS_EC2_METADATA_SERVICE_ENDPOINT": fake_imds.url}).wait_serving()
    reply = credd.get("/v1/credentials")
    assert reply.status == 200 and json.loads(reply.body)["AccessKeyId"] == fake_imds.credentials.access_key_id


def test_no_config_and_no_imds_starts_and_says_why(credd_bin, tmp_path):
    """`credd serve` with no config file on a machine without IMDS, in its own network namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("skipped: unshare (util-linux) is not installed")
    if os.geteuid() == 0 and Path("/etc/credd/credd.yaml").exists():
        pytest.skip("skipped: /etc/credd/credd.yaml exists on this machine and would be read as root")
    runtime = Path(tempfile.mkdtemp(prefix="credd-rt-", dir="/tmp"))
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": SYSTEM_PATH, "HOME": str(home), "LANG": "C.UTF-8", "RUNTIME_DIRECTORY": str(runtime),
           "XDG_RUNTIME_DIR": str(runtime), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    log = watch_for_secrets(tmp_path / "credd.stderr.log", "credd's log (no config)")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"skipped: cannot make a network namespace here ({probe.stderr.decode().strip()})")

    with open(log, "wb") as err:
        proc = subprocess.Popen(["unshare", "-n", "sh", "-c", 'ip link set lo up 2>/dev/null; exec "$0" serve',
                                 str(credd_bin)], env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                start_new_session=True)
    try:
        sock = _wait_for_socket(proc, runtime, log)
        # The first fetch takes a few seconds to fail (1 s timeouts, bounded retries): until then credd says
        # it is fetching.
        deadline = time.monotonic() + 30
        while True:
            reply = http_request(UnixHTTPConnection(str(sock)), "GET", "/v1/credentials", {"Host": "localhost"})
            if reply.status != 503 or b"unreachable" in reply.body or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert reply.status == 503
        message = error_answer(reply)["message"]
        assert "IMDS unreachable at" in message and "169.254.169.254" in message, message

        status = subprocess.run([str(credd_bin), "status"], env=env, capture_output=True, timeout=30,
                                stdin=subprocess.DEVNULL)
        out = watch_for_secrets(tmp_path / "status.out", "credd status (no config)")
        out.write_bytes(status.stdout + status.stderr)
        assert b"IMDS unreachable at" in status.stdout + status.stderr, redact(status.stdout + status.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(runtime, ignore_errors=True)


def _wait_for_socket(proc, runtime: Path, log: Path, timeout: float = 30) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"credd exited with {proc.returncode}: {redact(log.read_bytes())[-2000:]}")
        socks = [p for p in runtime.rglob("*") if p.is_socket()]
        if socks:
            return socks[0]
        time.sleep(0.1)
    raise AssertionError(f"credd made no socket under $RUNTIME_DIRECTORY={runtime} within {timeout} s: "
                         f"{redact(log.read_bytes())[-2000:]}")
