"""Issue 6, `credd doctor` against fakes: every check seen passing and failing in its failure modes, with
the message and the fix a person needs; checks that cannot apply are skipped with why; exit 0 only when
nothing failed. The caller's environment is built by hand for each case (as a shell would have it)."""

from __future__ import annotations

import email.utils
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from support import fake_imds as fake_imds_module
from support.fake_signin import FakeSignIn
from support.harness import Credd, free_port
from support.operator_cli import (NOBODY, SkewedUpstream, can_run_as_nobody, caller_env, credd_env_values, open_workdir,
                                  run_credd, run_doctor)


@pytest.fixture
def credd(fake_imds, start_credd):
    return start_credd(imds_endpoint=fake_imds.url).wait_serving()


def pointed_env(credd_bin, credd, name=None, **extra) -> dict:
    """The environment `eval "$(credd env [NAME])"` gives a clean caller, plus `extra`."""
    base = caller_env(credd)
    values = credd_env_values(credd_bin, base, *([name] if name else []))["values"]
    env = dict(base)
    env.update(values)
    env.update(extra)
    return env


# ---- everything passes ------------------------------------------------------------------------------

def test_all_checks_pass_for_a_caller_set_up_by_credd_env(credd_bin, credd):
    run = run_doctor(credd_bin, pointed_env(credd_bin, credd))
    assert run.returncode == 0, run.summary()
    assert run.report["version"] == 1 and run.report["ok"] is True
    for check_id in ("config", "credd.unix", "credd.tcp", "credd.access", "credd.token_file", "env.full_uri",
                     "env.token", "env.conflicts", "env.fetch", "set.default", "imds.reachable", "imds.token",
                     "imds.role", "imds.credentials", "sts.regional", "clock.skew"):
        run.expect(check_id, "pass")
    run.expect("env.fetch", "pass", "an SDK here gets credentials", "expiring in")
    run.expect("imds.role", "pass", "credd-fake-role")
    # No login set: those checks cannot apply, and say so instead of passing.
    for check_id in ("login.session", "login.refresh", "login.cache_writable", "login.clients"):
        assert run.status(check_id) == "skip", run.summary()
    run.expect("login.session", "skip", "no credential set uses aws login")


def test_text_report_marks_each_check_and_prints_the_fix(credd_bin, credd):
    proc = run_credd(credd_bin, ["doctor"], caller_env(credd))
    text = proc.stdout.decode()
    assert proc.returncode == 1
    assert "✓ credd accepts connections on unix:" in text
    assert "✗ AWS_CONTAINER_CREDENTIALS_FULL_URI is not set" in text
    assert "      fix: eval \"$(credd env)\", or run programs with `credd exec -- COMMAND`" in text
    assert "– the aws login session not checked: no credential set uses aws login" in text
    assert text.rstrip().endswith("checks failed.")


# ---- credd itself ----------------------------------------------------------------------------------

def test_credd_not_running(credd_bin, credd):
    env = pointed_env(credd_bin, credd)
    credd.stop()
    run = run_doctor(credd_bin, env)
    assert run.returncode == 1
    run.expect("credd.unix", "fail", "start credd")
    run.expect("credd.tcp", "fail", f"nothing listens on tcp 127.0.0.1:{credd.tcp_port}", "connection refused")
    run.expect("credd.access", "skip", "cannot be reached")
    run.expect("env.fetch", "fail", "cannot reach")
    run.expect("set", "skip", "status cannot be read")


def test_token_file_with_a_trailing_newline(credd_bin, credd):
    env = pointed_env(credd_bin, credd)
    token = credd.token_file.read_bytes()
    credd.token_file.write_bytes(token + b"\n")
    run = run_doctor(credd_bin, env)
    run.expect("credd.token_file", "fail", "ends in a newline", "not a legal header value", "truncate -s -1")
    # botocore refuses such a file, and so does the doctor's SDK-like fetch (credd rejects the token).
    assert run.status("env.fetch") == "fail"


def test_missing_token_file(credd_bin, credd):
    env = pointed_env(credd_bin, credd)
    credd.token_file.unlink()
    run = run_doctor(credd_bin, env)
    run.expect("credd.token_file", "fail", "does not exist", "credd token ensure")


def test_unknown_set(credd_bin, credd):
    run = run_doctor(credd_bin, caller_env(credd), "--set", "nope")
    assert run.returncode == 1
    run.expect("config", "fail", "no credential set named \"nope\"", "default")


def test_unusable_config_is_reported_not_crashed(credd_bin, credd):
    credd.config_path.write_text("listen: [this is not a mapping\n")
    run = run_doctor(credd_bin, caller_env(credd))
    assert run.returncode == 1
    run.expect("config", "fail", "credd config check")


# ---- the unprivileged caller -------------------------------------------------------------------------

@pytest.fixture
def nobody_ok(credd_bin):
    why = can_run_as_nobody(credd_bin)
    if why:
        pytest.skip(f"skipped: {why}")


def start_open_credd(credd_bin, fake, workdir: Path, *, mode: str) -> Credd:
    """A daemon in a directory every user may traverse, its socket with `mode` (owner and group root)."""
    d = Credd(credd_bin, workdir / "credd", imds_endpoint=fake.url,
              listen={"unix": {"path": str(workdir / "credd" / "credd.sock"), "mode": mode}})
    return d.start()


def test_caller_uid_not_allowed_and_token_file_unreadable(credd_bin, fake_imds, nobody_ok):
    workdir = open_workdir()
    d = start_open_credd(credd_bin, fake_imds, workdir, mode="0666")
    try:
        d.wait_serving()
        env = caller_env(d, home=workdir)
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = d.credentials_url()
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = str(d.token_file)
        run = run_doctor(credd_bin, env, as_user=NOBODY)
        run.expect("credd.unix", "pass")
        run.expect("credd.access", "fail", "uid 65534 may not read set \"default\"", "allow_uids")
        run.expect("credd.token_file", "fail", "uid 65534 cannot read token file", "Permission denied", "listen.unix.group")
        # The same daemon, asked by root: allowed.
        run_doctor(credd_bin, env).expect("credd.access", "pass", "uid 0 may read")
    finally:
        d.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_socket_mode_keeps_the_caller_out(credd_bin, fake_imds, nobody_ok):
    workdir = open_workdir()
    d = start_open_credd(credd_bin, fake_imds, workdir, mode="0660")
    try:
        run = run_doctor(credd_bin, caller_env(d, home=workdir), as_user=NOBODY)
        run.expect("credd.unix", "fail", "uid 65534 may not connect", "listen.unix.group")
        run.expect("credd.access", "skip")
    finally:
        d.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# ---- the caller's environment ---------------------------------------------------------------------

def test_environment_not_pointed_at_credd(credd_bin, credd):
    run = run_doctor(credd_bin, caller_env(credd))
    assert run.returncode == 1
    run.expect("env.full_uri", "fail", "is not set", 'eval "$(credd env)"', "credd exec")
    run.expect("env.token", "fail", "neither", f"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={credd.token_file}")
    run.expect("env.fetch", "skip")


def test_uri_pointing_elsewhere(credd_bin, credd):
    wrong_port = free_port()
    run = run_doctor(credd_bin, pointed_env(
        credd_bin, credd, AWS_CONTAINER_CREDENTIALS_FULL_URI=f"http://127.0.0.1:{wrong_port}/v1/credentials"))
    run.expect("env.full_uri", "fail", f"points at port {wrong_port}", f"credd listens on 127.0.0.1:{credd.tcp_port}")
    run.expect("env.fetch", "fail", "cannot reach")
    run = run_doctor(credd_bin, pointed_env(credd_bin, credd, AWS_CONTAINER_CREDENTIALS_FULL_URI=credd.credentials_url("nope")))
    run.expect("env.full_uri", "fail", 'names set "nope"')
    run.expect("env.fetch", "fail", "HTTP 404")


def test_both_token_variables_set(credd_bin, credd):
    run = run_doctor(credd_bin, pointed_env(credd_bin, credd, AWS_CONTAINER_AUTHORIZATION_TOKEN=credd.token()))
    run.expect("env.token", "fail", "SDKs disagree which wins", "unset AWS_CONTAINER_AUTHORIZATION_TOKEN")


def test_token_file_variable_pointing_at_another_token(credd_bin, credd):
    other = credd.workdir / "other.token"
    other.write_text("not-credds-token-0123456789")
    run = run_doctor(credd_bin, pointed_env(credd_bin, credd, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(other)))
    run.expect("env.token", "fail", "does not hold credd's token", str(credd.token_file))
    run.expect("env.fetch", "fail", "HTTP 403", "WrongToken")


@pytest.mark.parametrize("setup,fragment", [
    ({"env": {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY": "doctor-test-not-a-secret"}},
     "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are set"),
    ({"env": {"AWS_PROFILE": "static"}, "credentials": "[static]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = x\n"},
     "profile static has static keys in"),
    ({"config": "[default]\ncredential_process = /usr/local/bin/vault-aws-creds\n"},
     "credential_process = /usr/local/bin/vault-aws-creds"),
    ({"env": {"AWS_PROFILE": "missing"}}, "ProfileNotFound"),
    ({"env": {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x"}}, "169.254.170.2"),
])
def test_variables_and_profiles_that_win_over_credd(credd_bin, credd, tmp_path, setup, fragment):
    home = tmp_path / "caller"
    (home / ".aws").mkdir(parents=True)
    if "config" in setup:
        (home / ".aws" / "config").write_text(setup["config"])
    if "credentials" in setup:
        (home / ".aws" / "credentials").write_text(setup["credentials"])
    env = pointed_env(credd_bin, credd, **setup.get("env", {}))
    env["HOME"] = str(home)
    run = run_doctor(credd_bin, env)
    assert run.returncode == 1
    run.expect("env.conflicts", "fail", fragment, "credd exec")


def test_credential_process_that_runs_credd_is_fine(credd_bin, credd, tmp_path):
    home = tmp_path / "caller"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "config").write_text("[default]\ncredential_process = credd get --format process\n")
    env = pointed_env(credd_bin, credd)
    env["HOME"] = str(home)
    run_doctor(credd_bin, env).expect("env.conflicts", "pass", "through credential_process")


# ---- IMDS ----------------------------------------------------------------------------------------

def test_imds_unreachable(credd_bin, start_credd):
    dead = f"http://127.0.0.1:{free_port()}"
    d = start_credd(imds_endpoint=dead, imds={"attempts": 1, "timeout": "200ms"})
    d.wait_for(lambda: d.status_json()["sets"][0]["state"] == "failing", 20, "the IMDS set to fail")
    run = run_doctor(credd_bin, pointed_env(credd_bin, d))
    run.expect("imds.reachable", "fail", f"IMDS at {dead} refused the connection", "imds.endpoint")
    run.expect("imds.token", "skip", "IMDS is unreachable")
    run.expect("imds.credentials", "skip")
    run.expect("set.default", "fail", "IMDSUnreachable")


def test_token_put_that_hangs_after_connecting_is_the_hop_limit(credd_bin, credd, fake_imds):
    env = pointed_env(credd_bin, credd)
    fake_imds.outage(True, "hang")  # the connection is accepted, the answer never comes: what a hop limit of 1 looks like
    try:
        run = run_doctor(credd_bin, env)
    finally:
        fake_imds.outage(False)
    run.expect("imds.reachable", "pass")
    run.expect("imds.token", "fail", "timed out although the TCP connection was made", "response hop limit",
               "--http-put-response-hop-limit 2")
    run.expect("imds.role", "skip")


def test_token_put_refused(credd_bin, credd, fake_imds):
    env = pointed_env(credd_bin, credd)
    fake_imds.token_error(403)
    run = run_doctor(credd_bin, env)
    run.expect("imds.token", "fail", "refused the IMDSv2 token PUT (403)", "--http-endpoint enabled")


def test_no_role_attached(credd_bin, credd, fake_imds):
    env = pointed_env(credd_bin, credd)
    fake_imds.rename_role(None)
    run = run_doctor(credd_bin, env)
    run.expect("imds.token", "pass")
    run.expect("imds.role", "fail", "no IAM role is attached", "associate-iam-instance-profile")
    run.expect("imds.credentials", "skip", "no role")


def test_role_that_ec2_cannot_assume(credd_bin, credd, fake_imds):
    env = pointed_env(credd_bin, credd)
    fake_imds.garbage("error-code")
    run = run_doctor(credd_bin, env)
    run.expect("imds.role", "pass")
    run.expect("imds.credentials", "fail", "AssumeRoleUnauthorizedAccess")


def test_clock_skew_against_the_imds_date_header(credd_bin, credd, monkeypatch):
    env = pointed_env(credd_bin, credd)
    skewed = email.utils.formatdate(time.time() + 600, usegmt=True)
    monkeypatch.setattr(fake_imds_module._Handler, "date_time_string", lambda self, timestamp=None: skewed)
    run = run_doctor(credd_bin, env)
    check = run.expect("clock.skew", "fail", "behind IMDS at", "RequestTimeTooSkewed", "timedatectl set-ntp true")
    assert re.search(r"clock is (9m5\ds|10m0\ds) behind", check["message"]), check["message"]


# ---- aws login -------------------------------------------------------------------------------------

@pytest.fixture
def signin():
    with FakeSignIn() as fake:
        yield fake


def start_login_credd(start_credd, tmp_path, signin, *, write=True, tamper=None, **kwargs):
    """A daemon whose set `default` serves the aws login session of profile `work` (the caller's own
    active profile, `default`, has no login_session)."""
    home = tmp_path / "credd" / "home"
    home.mkdir(parents=True, exist_ok=True)
    fixture = signin.write_login(str(home), profile="work", **kwargs) if write else None
    if tamper:
        tamper(fixture)
    d = start_credd(credentials={"default": {"source": "login", "profile": "work", "endpoint": signin.url}})
    return d, fixture


def test_login_session_checks_pass(credd_bin, start_credd, tmp_path, signin):
    d, _ = start_login_credd(start_credd, tmp_path, signin)
    d.wait_serving()
    env = pointed_env(credd_bin, d)
    env["HOME"] = str(d.home)
    run = run_doctor(credd_bin, env)
    run.expect("login.session", "pass", "profile work has an aws login session")
    run.expect("login.refresh", "pass", "refresh token", "DPoP key")
    run.expect("login.cache_writable", "pass", "writable")
    run.expect("login.clients", "pass", "need no awscrt")
    for check_id in ("imds.reachable", "imds.token", "imds.role", "imds.credentials"):
        run.expect(check_id, "skip", "no credential set uses IMDS")
    assert run.returncode == 0, run.summary()


def test_login_session_missing(credd_bin, start_credd, tmp_path, signin):
    d, _ = start_login_credd(start_credd, tmp_path, signin, write=False)
    env = pointed_env(credd_bin, d)
    env["HOME"] = str(d.home)
    run = run_doctor(credd_bin, env)
    run.expect("login.session", "fail", "aws login --profile work")
    run.expect("login.refresh", "skip", "no usable aws login session")
    run.expect("login.cache_writable", "skip")


def test_login_cache_without_a_usable_dpop_key(credd_bin, start_credd, tmp_path, signin):
    def spoil(fixture):
        import json
        doc = json.loads(Path(fixture.cache_file).read_text())
        doc["dpopKey"] = "-----BEGIN EC PRIVATE KEY-----\nbm90IGEga2V5\n-----END EC PRIVATE KEY-----\n"
        Path(fixture.cache_file).write_text(json.dumps(doc))

    d, _ = start_login_credd(start_credd, tmp_path, signin, tamper=spoil)
    env = pointed_env(credd_bin, d)
    env["HOME"] = str(d.home)
    run = run_doctor(credd_bin, env)
    run.expect("login.session", "fail", "dpopKey", "aws login --profile work")


def test_login_refresh_rejected_by_sign_in(credd_bin, start_credd, tmp_path, signin):
    # Credentials about to expire make credd refresh at once; the session was revoked before it starts.
    d, _ = start_login_credd(start_credd, tmp_path, signin, expires_in=5,
                             tamper=lambda fixture: signin.revoke_session(fixture.login_session))
    env = pointed_env(credd_bin, d)
    env["HOME"] = str(d.home)
    d.wait_for(lambda: d.status_json()["sets"][0]["state"] == "action-required", 30, "the login set to need action")
    run = run_doctor(credd_bin, env)
    run.expect("login.session", "pass")
    run.expect("login.refresh", "fail", "cannot refresh the session of profile work")


def test_login_cache_not_writable(credd_bin, signin, nobody_ok):
    workdir = open_workdir()
    d = Credd(credd_bin, workdir / "credd", credentials={"default": {"source": "login", "profile": "work", "endpoint": signin.url}})
    try:
        fixture = signin.write_login(str(d.home), profile="work")
        for path in (d.home / ".aws", d.home / ".aws" / "login", Path(fixture.cache_dir)):
            os.chmod(path, 0o755)
        os.chmod(fixture.cache_file, 0o644)
        os.chmod(fixture.config_file, 0o644)
        d.start()
        run = run_doctor(credd_bin, caller_env(d, home=d.home), as_user=NOBODY)
        run.expect("login.session", "pass")
        run.expect("login.cache_writable", "fail", "is not writable", "rotated refresh token")
    finally:
        d.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_seed_001_a_profile_with_login_session_needs_awscrt_without_credd(credd_bin, credd, tmp_path):
    home = tmp_path / "caller"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "config").write_text("[default]\nlogin_session = arn:aws:iam::123456789012:user/dev\nregion = us-east-1\n")
    env = pointed_env(credd_bin, credd)
    env["HOME"] = str(home)
    run = run_doctor(credd_bin, env)
    run.expect("login.clients", "fail", "awscrt ≥ 0.30", "15 minutes")
    run.expect("env.conflicts", "fail", "login_session")


# ---- STS ---------------------------------------------------------------------------------------------

def test_seed_002_legacy_sts_endpoints_in_the_environment(credd_bin, credd):
    run = run_doctor(credd_bin, pointed_env(credd_bin, credd, AWS_STS_REGIONAL_ENDPOINTS="legacy"))
    run.expect("sts.regional", "fail", "AWS_STS_REGIONAL_ENDPOINTS=legacy", "version 1 session tokens", "AuthFailure",
               "regional")


def test_seed_002_legacy_sts_endpoints_in_the_aws_config(credd_bin, credd, tmp_path):
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = me-south-1\nsts_regional_endpoints = legacy\n")
    run = run_doctor(credd_bin, pointed_env(credd_bin, credd, AWS_CONFIG_FILE=str(config)))
    run.expect("sts.regional", "fail", f"sts_regional_endpoints = legacy in profile default of {config}", "AuthFailure")


def test_clock_checked_against_sts_for_assume_role_sets(credd_bin, start_credd, fake_imds):
    sts = SkewedUpstream(offset=-900)  # STS's clock 15 minutes behind ours
    try:
        d = start_credd(imds_endpoint=fake_imds.url, credentials={
            "default": {"source": "imds"},
            "deploy": {"source": "assume-role", "from": "default", "role_arn": "arn:aws:iam::123456789012:role/deploy",
                       "region": "us-east-1", "endpoint": sts.url},
        })
        run = run_doctor(credd_bin, pointed_env(credd_bin, d, name="deploy"), "--set", "deploy")
    finally:
        sts.stop()
    assert run.report["set"] == "deploy"
    check = run.expect("clock.skew", "fail", f"ahead of STS at {sts.url}", "SignatureDoesNotMatch")
    assert re.search(r"clock is (14m5\ds|15m0\ds) ahead", check["message"]), check["message"]
    run.expect("env.full_uri", "pass", 'credd\'s set "deploy"')
    # --set deploy covers deploy and the set it is made from (IMDS), not the other sets' states.
    assert {c["id"] for c in run.report["checks"] if c["id"].startswith("set.")} == {"set.deploy"}
    run.expect("imds.token", "pass")
