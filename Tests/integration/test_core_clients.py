"""Issue 2 with real clients: boto3 and the AWS CLI through the container-credentials endpoint, curl and
credd's own CLI through the Unix socket, all fed by the strict IMDSv2 fake (PROTOCOLS §1-2)."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from support import redact
from support.harness import (
    Credd, client_env, credentials_answer, error_answer, matches_issued, parse_expiration, run_boto3_probe, sha256,
    utcnow, which,
)

CREDENTIAL_KEYS = {"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "AccountId"}


@pytest.fixture
def credd(fake_imds, start_credd):
    """credd serving the fake's role as the set `default`."""
    credd = start_credd(imds_endpoint=fake_imds.url, imds={"timeout": "1s", "attempts": 3, "poll_interval": "5m"})
    return credd.wait_serving()


def test_answer_has_exactly_the_container_credentials_shape(credd, fake_imds):
    reply = credd.get("/v1/credentials")
    answer = credentials_answer(reply)

    assert reply.headers.get("content-type", "").startswith("application/json")
    assert set(answer) == CREDENTIAL_KEYS
    issued = fake_imds.credentials
    assert matches_issued(answer, issued)
    assert parse_expiration(answer["Expiration"]) == parse_expiration(issued.expiration_text)
    assert answer["AccountId"] == fake_imds.account_id, "AccountId comes from the instance identity document"


def test_boto3_gets_exactly_the_credentials_the_fake_issued(credd, fake_imds):
    got = run_boto3_probe(client_env(credd), create_client=True)

    issued = fake_imds.credentials
    assert got.get("error") is None
    assert got["method"] == "container-role"
    assert got["access_key"] == issued.access_key_id
    assert got["secret_sha256"] == sha256(issued.secret_access_key)
    assert got["token_sha256"] == sha256(issued.token)
    assert got["account_id"] == fake_imds.account_id


def test_aws_cli_calls_moto_sts_signed_with_what_credd_served(fake_imds, start_credd, moto_sts):
    """SigV4 checking is on in moto: the call succeeds only if credd served moto's credentials intact."""
    issued = moto_sts.serve_from(fake_imds)
    credd = start_credd(imds_endpoint=fake_imds.url).wait_serving()
    aws = which("aws")
    assert aws, "the AWS CLI is not installed in the venv"

    proc = subprocess.run([aws, "sts", "get-caller-identity", "--endpoint-url", moto_sts.url, "--output", "json"],
                          env=client_env(credd), capture_output=True, timeout=120, stdin=subprocess.DEVNULL)

    assert proc.returncode == 0, f"aws sts get-caller-identity failed: {redact(proc.stderr)[-2000:]}"
    identity = json.loads(proc.stdout)
    assert identity["Account"] == moto_sts.account_id
    assert f":assumed-role/{moto_sts.role_name}/" in identity["Arn"]
    assert fake_imds.credentials.access_key_id == issued["AccessKeyId"]


def test_aws_cli_fails_with_a_wrong_token(fake_imds, start_credd, moto_sts, tmp_path):
    moto_sts.serve_from(fake_imds)
    credd = start_credd(imds_endpoint=fake_imds.url).wait_serving()
    wrong = tmp_path / "wrong.token"
    wrong.write_text("wrong-token-" + "A" * 32)

    proc = subprocess.run([which("aws"), "sts", "get-caller-identity", "--endpoint-url", moto_sts.url],
                          env=client_env(credd, token_file=wrong), capture_output=True, timeout=120,
                          stdin=subprocess.DEVNULL)

    assert proc.returncode != 0
    assert b"credential" in proc.stderr.lower()


def test_missing_token_is_401_and_boto3_raises(credd):
    reply = credd.get("/v1/credentials", token=None)
    assert reply.status == 401
    error_answer(reply)

    env = client_env(credd)
    del env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]
    got = run_boto3_probe(env, create_client=True)
    assert got.get("error") == "CredentialRetrievalError"


def test_wrong_token_is_403_and_boto3_raises(credd, tmp_path):
    for wrong in ("not-the-token", "Bearer " + credd.token(), credd.token() + "x", credd.token()[:-1]):
        reply = credd.get("/v1/credentials", token=wrong)
        assert reply.status == 403, f"token variant of length {len(wrong)} got {reply.status}"
        error_answer(reply)

    wrong_file = tmp_path / "wrong.token"
    wrong_file.write_text("W" * 43)
    got = run_boto3_probe(client_env(credd, token_file=wrong_file), create_client=True)
    assert got.get("error") == "CredentialRetrievalError"


def test_curl_over_the_unix_socket_needs_no_token(credd, fake_imds):
    curl = which("curl")
    if curl is None:
        pytest.skip("skipped: curl is not installed (.ci/setup installs it)")
    proc = subprocess.run([curl, "-sS", "--max-time", "10", "--unix-socket", str(credd.unix_path),
                           "-w", "\n%{http_code}", "http://localhost/v1/credentials"],
                          capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    body, _, code = proc.stdout.rpartition(b"\n")
    assert (proc.returncode, code) == (0, b"200"), f"curl: {redact(proc.stderr)} {redact(body)[:300]}"
    answer = json.loads(body)
    assert matches_issued(answer, fake_imds.credentials)


def test_named_set_and_unknown_set(fake_imds, start_credd):
    credd = start_credd(imds_endpoint=fake_imds.url,
                        credentials={"default": {"source": "imds"}, "instance": {"source": "imds"}})
    credd.wait_serving().wait_serving("instance")
    assert matches_issued(credentials_answer(credd.get("/v1/credentials/instance")), fake_imds.credentials)
    got = run_boto3_probe(client_env(credd, "instance"))
    assert got.get("access_key") == fake_imds.credentials.access_key_id

    reply = credd.get("/v1/credentials/no-such-set")
    assert reply.status == 404
    assert "no-such-set" in error_answer(reply)["message"]


def test_keep_alive_and_uncompressed_answer(credd):
    import http.client

    conn = http.client.HTTPConnection(credd.tcp_host, credd.tcp_port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/v1/credentials", headers={"Authorization": credd.token(),
                                                           "Accept-Encoding": "gzip"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200 and resp.getheader("Content-Encoding") in (None, "identity")
            json.loads(body)
    finally:
        conn.close()


def test_healthz_is_200_with_valid_credentials_and_holds_no_secret(credd):
    from support import SECRETS

    reply = credd.get("/healthz", token=None)
    assert reply.status == 200
    assert SECRETS.find(reply.body) == []
    status = credd.get("/v1/status")
    assert status.status == 200 and SECRETS.find(status.body) == []
    json.loads(status.body)


# ---- credd's own CLI ---------------------------------------------------------------------------------------

def test_credd_get_json_over_the_unix_socket(credd, fake_imds):
    proc = credd.run_cli("get", "--format", "json", output_holds_secrets=True)
    assert proc.returncode == 0, redact(proc.stderr)
    assert matches_issued(json.loads(proc.stdout), fake_imds.credentials)


def test_credd_get_env_format(credd, fake_imds):
    proc = credd.run_cli("get", "--format", "env", output_holds_secrets=True)
    assert proc.returncode == 0, redact(proc.stderr)
    text = proc.stdout.decode()
    assert "AWS_ACCESS_KEY_ID" in text and fake_imds.credentials.access_key_id in text
    assert "AWS_SECRET_ACCESS_KEY" in text and "AWS_SESSION_TOKEN" in text


def test_credential_process_works_for_boto3(credd, fake_imds):
    proc = credd.run_cli("get", "--format", "process", output_holds_secrets=True)
    assert proc.returncode == 0, redact(proc.stderr)
    doc = json.loads(proc.stdout)
    assert doc.get("Version") == 1
    issued = fake_imds.credentials
    assert (doc.get("AccessKeyId"), doc.get("SecretAccessKey") == issued.secret_access_key,
            doc.get("SessionToken") == issued.token) == (issued.access_key_id, True, True)
    assert parse_expiration(doc["Expiration"]) > utcnow()

    env = client_env(credd)
    for name in ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"):
        del env[name]
    env["CREDD_CONFIG"] = str(credd.config_path)
    with open(env["AWS_CONFIG_FILE"], "w") as f:
        f.write(f"[default]\ncredential_process = {credd.binary} get --format process\n")
    got = run_boto3_probe(env)
    assert got.get("method") == "custom-process" and got.get("access_key") == issued.access_key_id
    assert got["secret_sha256"] == sha256(issued.secret_access_key)


def test_credd_status_says_what_each_set_does_without_secrets(credd):
    status = credd.status_json()
    text = json.dumps(status)
    assert "default" in text and "imds" in text
    plain = credd.run_cli("status")
    assert plain.returncode == 0, redact(plain.stderr)
    assert b"default" in plain.stdout


@pytest.mark.parametrize("args", [[], ["serve"], ["get"], ["status"], ["config", "check"], ["token", "ensure"]])
def test_every_command_has_help(credd_bin, args):
    proc = subprocess.run([str(credd_bin), *args, "--help"], capture_output=True, timeout=30,
                          stdin=subprocess.DEVNULL, env={"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent"})
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"USAGE" in proc.stdout.upper() or b"USAGE" in proc.stderr.upper()


def test_config_check_names_the_key_file_and_line(fake_imds, tmp_path, credd_bin):
    good = Credd(credd_bin, tmp_path / "good", imds_endpoint=fake_imds.url)
    proc = good.run_cli("config", "check", "--config", str(good.config_path))
    assert proc.returncode == 0, redact(proc.stderr)

    bad = tmp_path / "bad.yaml"
    bad.write_text("listen:\n  tcp: [\"127.0.0.1:9\"]\n  tcpp: 1\ncredentials:\n  default: {source: imds}\n")
    proc = subprocess.run([str(credd_bin), "config", "check", "--config", str(bad)], capture_output=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode != 0
    assert "tcpp" in out and str(bad) in out and re.search(r"\b3\b", out), out
