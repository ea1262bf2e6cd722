"""Issue 6, `credd env` and `credd exec`: the export lines a real sh evaluates, and a command run with the two
variables set and the conflicting ones removed, keeping credd's process id so that exit statuses and
signals pass through unchanged."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from support import redact
from support.harness import _BOTO3_PROBE
from support.operator_cli import caller_env, credd_env_values, run_credd

CONFLICTING = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "exec-test-static-secret-not-used",
    "AWS_SESSION_TOKEN": "exec-test-session-token-not-used",
    "AWS_PROFILE": "static",
    "AWS_DEFAULT_PROFILE": "static",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN": "exec-test-inline-token",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "/nonexistent/token",
    "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/x",
}

PRINT_ENV = "import json, os; print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('AWS_')}))"


@pytest.fixture
def credd(fake_imds, start_credd):
    return start_credd(imds_endpoint=fake_imds.url, credentials={
        "default": {"source": "imds"},
        "dev": {"source": "imds"},
        "deploy": {"source": "imds", "access": {"token_file": "/tmp/credd-exec-test-deploy.token"}},
    }).wait_serving()


# ---- credd env ------------------------------------------------------------------------------------------

def test_env_prints_lines_that_sh_evaluates(credd_bin, credd):
    out = credd_env_values(credd_bin, caller_env(credd))
    assert out["values"] == {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{credd.tcp_port}/v1/credentials",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(credd.token_file),
    }
    assert "unset" not in out["script"], "nothing conflicting was set, so nothing is unset"


def test_env_for_named_sets_and_their_own_token_files(credd_bin, credd):
    dev = credd_env_values(credd_bin, caller_env(credd), "dev")["values"]
    assert dev["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == credd.credentials_url("dev")
    assert dev["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] == str(credd.token_file)
    deploy = credd_env_values(credd_bin, caller_env(credd), "deploy")["values"]
    assert deploy["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] == "/tmp/credd-exec-test-deploy.token"


def test_env_unsets_the_variables_that_would_win(credd_bin, credd):
    out = credd_env_values(credd_bin, caller_env(credd, **CONFLICTING))
    values = out["values"]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_CONTAINER_AUTHORIZATION_TOKEN"):
        assert name not in values, f"{name} survived eval \"$(credd env)\""
    assert values["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == credd.credentials_url()
    unset_line = [line for line in out["script"].splitlines() if line.startswith("unset ")]
    assert unset_line and set(unset_line[0].split()[1:]) == set(CONFLICTING), out["script"]


def test_env_for_fish(credd_bin, credd):
    proc = run_credd(credd_bin, ["env", "--shell", "fish"], caller_env(credd, AWS_PROFILE="static"))
    assert proc.returncode == 0
    lines = proc.stdout.decode().splitlines()
    assert f"set -gx AWS_CONTAINER_CREDENTIALS_FULL_URI 'http://127.0.0.1:{credd.tcp_port}/v1/credentials';" in lines
    assert f"set -gx AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE '{credd.token_file}';" in lines
    assert "set -e AWS_PROFILE;" in lines


def test_env_refuses_an_unknown_set_or_a_config_without_tcp(credd_bin, credd, start_credd, fake_imds):
    proc = run_credd(credd_bin, ["env", "nope"], caller_env(credd))
    assert proc.returncode == 64
    assert b'no credential set named "nope"' in proc.stderr and b"default, dev, deploy" in proc.stderr
    unix_only = start_credd(name="unixonly", imds_endpoint=fake_imds.url, tcp=False)
    proc = run_credd(credd_bin, ["env"], caller_env(unix_only))
    assert proc.returncode == 78
    assert b"no TCP listener" in proc.stderr


# ---- credd exec -----------------------------------------------------------------------------------------

def test_exec_sets_the_two_variables_and_removes_the_conflicting_ones(credd_bin, credd):
    proc = run_credd(credd_bin, ["exec", "--set", "dev", "--", sys.executable, "-c", PRINT_ENV],
                     caller_env(credd, AWS_REGION="eu-west-1", **CONFLICTING))
    assert proc.returncode == 0, redact(proc.stderr)
    seen = json.loads(proc.stdout)
    assert seen == {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": credd.credentials_url("dev"),
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(credd.token_file),
        "AWS_REGION": "eu-west-1",  # unrelated variables pass through
    }


def test_exec_without_the_double_dash(credd_bin, credd):
    proc = run_credd(credd_bin, ["exec", sys.executable, "-c", PRINT_ENV], caller_env(credd))
    assert proc.returncode == 0, redact(proc.stderr)
    assert json.loads(proc.stdout)["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == credd.credentials_url()


@pytest.mark.parametrize("status", [0, 1, 7, 255])
def test_exec_passes_the_exit_status_through(credd_bin, credd, status):
    proc = run_credd(credd_bin, ["exec", "--", "sh", "-c", f"exit {status}"], caller_env(credd))
    assert proc.returncode == status


def test_exec_replaces_itself_so_the_command_gets_credds_pid_and_its_signals(credd_bin, credd):
    script = ("import os, signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
              "print(os.getpid(), flush=True)\n"
              "time.sleep(30)\n")
    proc = subprocess.Popen([str(credd_bin), "exec", "--", sys.executable, "-c", script], env=caller_env(credd),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        pid = int(proc.stdout.readline())
        assert pid == proc.pid, "credd exec must execve the command, not run it as a child"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 42, "the command's own SIGTERM handler decides the exit status"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP, signal.SIGTERM])
def test_exec_command_killed_by_a_signal_dies_by_that_signal(credd_bin, credd, sig):
    proc = subprocess.Popen([str(credd_bin), "exec", "--", "sh", "-c", "echo $$; exec sleep 30"], env=caller_env(credd),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert int(proc.stdout.readline()) == proc.pid
        proc.send_signal(sig)
        assert proc.wait(10) == -sig, f"expected death by {sig.name}, got {proc.returncode}"
    finally:
        proc.kill()
        proc.wait()


def test_exec_of_a_missing_command(credd_bin, credd):
    proc = run_credd(credd_bin, ["exec", "--", "no-such-command-for-credd"], caller_env(credd))
    assert proc.returncode == 127
    assert b"command not found" in proc.stderr
    proc = run_credd(credd_bin, ["exec"], caller_env(credd))
    assert proc.returncode == 64


def test_exec_gives_boto3_credds_credentials_although_static_keys_were_set(credd_bin, credd, fake_imds):
    """The real client: with AWS_ACCESS_KEY_ID in the environment boto3 would use it; under credd exec it asks credd."""
    home = credd.workdir / "boto-home"
    (home / ".aws").mkdir(parents=True, exist_ok=True)
    (home / ".aws" / "config").write_text("[default]\nregion = us-east-1\n")
    (home / ".aws" / "credentials").write_text("")
    env = caller_env(credd, home=home, AWS_EC2_METADATA_DISABLED="true", **CONFLICTING)
    proc = run_credd(credd_bin, ["exec", "--", sys.executable, "-c", _BOTO3_PROBE], env)
    assert proc.returncode == 0, redact(proc.stderr)[-2000:]
    seen = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert seen.get("method") == "container-role", seen
    assert seen.get("access_key") == fake_imds.credentials.access_key_id
