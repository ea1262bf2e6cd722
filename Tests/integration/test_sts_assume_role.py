"""Issue 5: credential sets from STS AssumeRole, chained on the IMDS set, against moto's STS with SigV4
checking on: boto3 and the AWS CLI through credd see the assumed role; AccessDenied, throttling, an
unreachable STS and a failing source keep the last valid credentials until they near expiry, then 503 with
a clear status; per-set access on the Unix socket (uid) and over TCP (per-set token).

moto is reached either directly or through `STSSwitch`, a loopback pass-through whose answers a test can
spoil (throttle, deny, hang up) and whose Expiration it can shorten, so "near expiry" takes seconds.
"""

from __future__ import annotations

import base64
import datetime as _dt
import http.client
import http.server
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

import pytest

from support import redact, register_secret
from support.harness import (
    Credd, Watcher, client_env, credentials_answer, error_answer, free_port, observe, parse_expiration, which,
)

ACCOUNT = "123456789012"
ADMIN_POLICY = json.dumps({"Version": "2012-10-17",
                           "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
# moto compares trust-policy principals literally (an account's root does not cover its roles' sessions), so
# the roles trust any principal; what a caller may do is then decided by its own policies, as in IAM.
TRUST_ANYONE = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
# credd's RefreshPolicy answers 503 once less than this is left (minimumServedLifetime).
MINIMUM_SERVED_LIFETIME = 60


# ---- moto with IAM roles for the chain ---------------------------------------------------------------

class STSWorld:
    """moto's server on loopback with SigV4 checking on, and three roles that trust anyone:
    `source` (what the fake IMDS serves; may do anything), `deploy` (the role credd assumes) and
    `powerless` (no permissions at all: it may not assume `deploy`)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        self._reset_auth("inf")
        iam = self._client("iam", "AKIASETUPSETUPSETUP0", "setup-secret-not-checked-yet")
        iam.create_user(UserName="credd-sts-admin")
        iam.put_user_policy(UserName="credd-sts-admin", PolicyName="admin", PolicyDocument=ADMIN_POLICY)
        key = iam.create_access_key(UserName="credd-sts-admin")["AccessKey"]
        self._admin = (key["AccessKeyId"], key["SecretAccessKey"])
        register_secret(key["SecretAccessKey"], "moto IAM user secret key")
        self.arns = {}
        for name, policy in (("source", ADMIN_POLICY), ("deploy", ADMIN_POLICY), ("powerless", None)):
            role = iam.create_role(RoleName=f"credd-{name}-role", AssumeRolePolicyDocument=TRUST_ANYONE)["Role"]
            if policy:
                iam.put_role_policy(RoleName=role["RoleName"], PolicyName="admin", PolicyDocument=policy)
            self.arns[name] = role["Arn"]
        self._reset_auth("0")

    def stop(self) -> None:
        try:
            self._reset_auth("inf")
        except OSError:
            pass
        self._server.stop()

    def _reset_auth(self, count: str) -> None:
        # text/plain: with urllib's default form content type moto reads an empty body and fails with 500.
        req = urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=count.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200, f"moto reset-auth answered {r.status}"

    def _client(self, service: str, key_id: str, secret: str, token: Optional[str] = None):
        import boto3

        return boto3.session.Session().client(
            service, endpoint_url=self.url, region_name="us-east-1", aws_access_key_id=key_id,
            aws_secret_access_key=secret, aws_session_token=token)

    def issue(self, role: str = "source", session: str = "i-0123456789abcdef0", duration: int = 3600) -> dict:
        """Role credentials moto accepts, issued to the admin user."""
        creds = self._client("sts", *self._admin).assume_role(
            RoleArn=self.arns[role], RoleSessionName=session, DurationSeconds=duration)["Credentials"]
        register_secret(creds["SecretAccessKey"], "moto role secret key")
        register_secret(creds["SessionToken"], "moto role session token")
        return creds

    def serve_from(self, fake, role: str = "source") -> dict:
        """Make the fake IMDS serve fresh moto credentials of `role`."""
        c = self.issue(role)
        fake.set_credentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"], c["Expiration"])
        return c


@pytest.fixture(scope="module")
def world():
    w = STSWorld()
    yield w
    w.stop()


# ---- a pass-through to moto whose answers a test can spoil ------------------------------------------

def _error_xml(code: str, message: str) -> bytes:
    return (f'<ErrorResponse xmlns="{STS_NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
            f'<Message>{message}</Message></Error><RequestId>0b1c9a7e-0000-4000-8000-000000000005</RequestId>'
            '</ErrorResponse>').encode()


class STSSwitch:
    """Forwards every request to moto unchanged (the Host header too, so moto checks the signature credd
    made for this address). Modes: forward; throttle (400 Throttling); deny (403 AccessDenied);
    unavailable (503 ServiceUnavailable); hangup (close the connection without an answer).
    `lifetime`: rewrite the Expiration of successful AssumeRole answers to now + lifetime seconds.
    Records the form fields of every AssumeRole request (values of secrets never: STS bodies carry none)."""

    def __init__(self, target: str) -> None:
        self.target = urllib.parse.urlsplit(target)
        self.mode = "forward"
        self.lifetime: Optional[float] = None
        self.calls: list[dict] = []
        self._lock = threading.Lock()
        switch = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fields = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()}
                with switch._lock:
                    switch.calls.append({"at": time.time(), "fields": fields, "mode": switch.mode,
                                         "signed_headers": re.findall(r"SignedHeaders=([^,]+)",
                                                                      self.headers.get("Authorization", ""))})
                    mode, lifetime = switch.mode, switch.lifetime
                if mode == "hangup":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if mode == "throttle":
                    return self._answer(400, _error_xml("Throttling", "Rate exceeded"))
                if mode == "deny":
                    return self._answer(403, _error_xml(
                        "AccessDenied", "User: arn:aws:sts::123456789012:assumed-role/credd-source-role/i-0123456789abcdef0 "
                                        "is not authorized to perform: sts:AssumeRole on resource: " + fields.get("RoleArn", "")))
                if mode == "unavailable":
                    return self._answer(503, _error_xml("ServiceUnavailable", "Service is unable to handle request."))
                conn = http.client.HTTPConnection(switch.target.hostname, switch.target.port, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                conn.request("POST", self.path, body=body, headers=headers)
                reply = conn.getresponse()
                answer = reply.read()
                status = reply.status
                conn.close()
                if status == 200 and lifetime is not None and fields.get("Action") == "AssumeRole":
                    answer = _shorten_expiration(answer, lifetime)
                self._answer(status, answer)

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def set(self, mode: str, lifetime: Optional[float] = None) -> None:
        with self._lock:
            self.mode = mode
            self.lifetime = lifetime

    def assume_role_calls(self) -> list[dict]:
        with self._lock:
            return [c for c in self.calls if c["fields"].get("Action") == "AssumeRole"]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _shorten_expiration(answer: bytes, lifetime: float) -> bytes:
    """The AssumeRole answer with Credentials/Expiration set to now + lifetime (XML parsed, not edited)."""
    ET.register_namespace("", STS_NS)
    root = ET.fromstring(answer.strip())
    for node in root.iter():
        if node.tag.split("}")[-1] == "Expiration":
            node.text = _dt.datetime.fromtimestamp(time.time() + lifetime, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


@pytest.fixture
def switch(world):
    s = STSSwitch(world.url)
    yield s
    s.stop()


# ---- credd with a chained set ------------------------------------------------------------------------

def deploy_set(world: STSWorld, endpoint: str, **extra) -> dict:
    cfg = {"source": "assume-role", "from": "default", "role_arn": world.arns["deploy"], "region": "eu-west-1",
           "endpoint": endpoint}
    cfg.update(extra)
    return cfg


def start_chain(start_credd, fake_imds, world, endpoint: str, wait: bool = True, poll: str = "5m",
                **deploy_extra) -> Credd:
    credd = start_credd(imds_endpoint=fake_imds.url, imds={"timeout": "1s", "attempts": 2, "poll_interval": poll},
                        credentials={"default": {"source": "imds"},
                                     "deploy": deploy_set(world, endpoint, **deploy_extra)})
    credd.wait_serving()
    if wait:
        credd.wait_serving("deploy")
    return credd


def set_status(credd: Credd, name: str) -> dict:
    doc = credd.status_json()
    for s in doc.get("sets", []):
        if s.get("name") == name:
            return s
    raise AssertionError(f"credd status has no set {name}: {redact(json.dumps(doc))[:2000]}")


_CALLER_IDENTITY = r"""
import json, sys
import boto3
sts = boto3.client("sts", endpoint_url=sys.argv[1])
doc = sts.get_caller_identity()
print(json.dumps({"Arn": doc["Arn"], "Account": doc["Account"]}))
"""


def caller_identity_via_boto3(env: dict, endpoint: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CALLER_IDENTITY, endpoint], env=env, capture_output=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"boto3 get_caller_identity failed: {redact(proc.stderr)[-2000:]}"
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


# ---- the chain works -----------------------------------------------------------------------------------

def test_boto3_through_credd_is_the_assumed_role(fake_imds, start_credd, world):
    source = world.serve_from(fake_imds)
    credd = start_chain(start_credd, fake_imds, world, world.url)

    identity = caller_identity_via_boto3(client_env(credd, "deploy"), world.url)

    assert identity["Account"] == ACCOUNT
    assert identity["Arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/credd-deploy-role/"), identity["Arn"]
    # The default set still serves the instance role itself.
    base = caller_identity_via_boto3(client_env(credd), world.url)
    assert base["Arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/credd-source-role/"), base["Arn"]

    answer = credentials_answer(credd.get("/v1/credentials/deploy"))
    assert answer["AccessKeyId"] != source["AccessKeyId"]
    assert answer["AccountId"] == ACCOUNT, "the account id comes from the assumed-role ARN"
    lifetime = parse_expiration(answer["Expiration"]).timestamp() - time.time()
    assert 3000 < lifetime <= 3600, f"one-hour role credentials by default, got {lifetime:.0f} s"


def test_aws_cli_through_credd_is_the_assumed_role(fake_imds, start_credd, world):
    world.serve_from(fake_imds)
    credd = start_chain(start_credd, fake_imds, world, world.url)
    aws = which("aws")
    assert aws, "the AWS CLI is not installed in the venv"

    proc = subprocess.run([aws, "sts", "get-caller-identity", "--endpoint-url", world.url, "--output", "json"],
                          env=client_env(credd, "deploy"), capture_output=True, timeout=120, stdin=subprocess.DEVNULL)

    assert proc.returncode == 0, f"aws sts get-caller-identity failed: {redact(proc.stderr)[-2000:]}"
    assert ":assumed-role/credd-deploy-role/" in json.loads(proc.stdout)["Arn"]


def test_assuming_a_role_with_instance_profile_credentials_is_capped_at_one_hour(fake_imds, start_credd, world):
    """EC2 instance-profile credentials are a role session: AssumeRole with them is role chaining, which STS
    refuses above 1 h ("exceeds the 1 hour session limit for roles assumed by role chaining")."""
    world.serve_from(fake_imds)
    credd = start_credd(imds_endpoint=fake_imds.url,
                        credentials={"default": {"source": "imds"}, "deploy": deploy_set(world, world.url, duration="4h")})
    credd.wait_serving("deploy")
    answer = credentials_answer(credd.get("/v1/credentials/deploy"))
    lifetime = parse_expiration(answer["Expiration"]).timestamp() - time.time()
    assert lifetime <= 3600, f"role chaining from IMDS credentials is capped at 1 h, got {lifetime:.0f} s"
    assert "capped" in credd.logs().lower() or "chaining" in credd.logs().lower(), "the cap is logged as a warning"


def test_a_chain_of_two_assume_role_sets(fake_imds, start_credd, world):
    """deploy ← hop ← default: the second hop signs with role credentials, so its duration is capped at 1 h."""
    world.serve_from(fake_imds)
    credd = start_credd(
        imds_endpoint=fake_imds.url,
        credentials={"default": {"source": "imds"},
                     "hop": deploy_set(world, world.url),
                     "deploy": {**deploy_set(world, world.url), "from": "hop", "duration": "4h"}})
    credd.wait_serving("deploy")

    identity = caller_identity_via_boto3(client_env(credd, "deploy"), world.url)
    assert ":assumed-role/credd-deploy-role/" in identity["Arn"]
    answer = credentials_answer(credd.get("/v1/credentials/deploy"))
    lifetime = parse_expiration(answer["Expiration"]).timestamp() - time.time()
    # moto grants whatever is asked, so the lifetime shows what credd asked for.
    assert lifetime <= 3600, f"role chaining is capped at 1 h, got {lifetime:.0f} s"
    assert "capped" in credd.logs().lower() or "chaining" in credd.logs().lower(), "the cap is logged as a warning"
    chain = set_status(credd, "deploy")["chain"]
    assert [c.split(" ")[0] for c in chain] == ["deploy", "hop", "default"], chain


def test_what_credd_sends_to_sts(fake_imds, start_credd, world, switch):
    """Regional signing scope, the session token signed, the default session name, optional parameters."""
    world.serve_from(fake_imds)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"}]}
    credd = start_chain(start_credd, fake_imds, world, switch.url, external_id="ext-123",
                        policy=json.dumps(policy), source_identity="credd-test", duration="2h")
    calls = switch.assume_role_calls()
    assert calls, "credd made no AssumeRole call through the switch"
    fields = calls[0]["fields"]
    assert fields["Version"] == "2011-06-15"
    assert fields["RoleArn"] == world.arns["deploy"]
    assert re.fullmatch(r"[\w+=,.@-]{2,64}", fields["RoleSessionName"]), fields["RoleSessionName"]
    assert fields["RoleSessionName"].startswith("credd-"), "the default session name says who made it"
    assert fields["ExternalId"] == "ext-123"
    assert json.loads(fields["Policy"]) == policy
    assert fields["SourceIdentity"] == "credd-test"
    assert calls[0]["signed_headers"] == ["content-type;host;x-amz-date;x-amz-security-token"]
    # IMDS credentials: 2 h is sent as asked unless credd treats instance-role credentials as role credentials.
    assert fields["DurationSeconds"] in ("7200", "3600")


def test_status_shows_the_chain_without_secrets(fake_imds, start_credd, world):
    world.serve_from(fake_imds)
    credd = start_chain(start_credd, fake_imds, world, world.url)
    deploy = set_status(credd, "deploy")
    assert deploy["source"] == "assume-role"
    assert [c.split(" ")[0] for c in deploy["chain"]] == ["deploy", "default"], deploy["chain"]
    assert world.arns["deploy"] in deploy["summary"]
    assert deploy.get("accountId") == ACCOUNT
    table = credd.run_cli("status")
    assert table.returncode == 0, redact(table.stderr)
    assert b"deploy" in table.stdout and b"default" in table.stdout


# ---- failures --------------------------------------------------------------------------------------------

def test_access_denied_is_503_with_a_status_naming_role_and_caller(fake_imds, start_credd, world):
    world.serve_from(fake_imds, role="powerless")
    credd = start_chain(start_credd, fake_imds, world, world.url, wait=False)

    reply = credd.wait_for(lambda: (r := credd.get("/v1/credentials/deploy")).status == 503 and r, 30,
                           "the deploy set to answer 503")
    error_answer(reply)
    status = set_status(credd, "deploy")
    assert status["lastErrorCode"] == "AccessDenied", status
    assert world.arns["deploy"] in status["lastError"]
    assert "assumed-role/credd-powerless-role/" in status["lastError"], "the caller is named"
    # The source set is not affected.
    assert credd.get("/v1/credentials").status == 200


@pytest.mark.parametrize("mode,code", [("throttle", "STSThrottled"), ("unavailable", "STSUnavailable"),
                                        ("hangup", "STSUnreachable")])
def test_transient_sts_failures_are_retried_and_recover(fake_imds, start_credd, world, switch, mode, code):
    world.serve_from(fake_imds)
    switch.set(mode)
    credd = start_chain(start_credd, fake_imds, world, switch.url, wait=False)

    credd.wait_for(lambda: credd.get("/v1/credentials/deploy").status == 503, 30, "the deploy set to answer 503")
    credd.wait_for(lambda: set_status(credd, "deploy").get("lastErrorCode") == code, 30, f"status to say {code}")
    credd.wait_for(lambda: len(switch.assume_role_calls()) >= 2, 30, "credd to retry")
    switch.set("forward")
    credd.wait_serving("deploy", timeout=90)


def test_sts_unreachable_is_503_naming_the_endpoint(fake_imds, start_credd, world):
    world.serve_from(fake_imds)
    closed = f"http://127.0.0.1:{free_port()}"
    credd = start_chain(start_credd, fake_imds, world, closed, wait=False)

    reply = credd.wait_for(lambda: (r := credd.get("/v1/credentials/deploy")).status == 503 and r, 30,
                           "the deploy set to answer 503")
    error_answer(reply)
    status = credd.wait_for(lambda: (s := set_status(credd, "deploy")).get("lastErrorCode") == "STSUnreachable" and s,
                            30, "status to say STSUnreachable")
    assert closed in status["lastError"]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["sts-hangup", "sts-throttle", "sts-denies", "source-rejected"])
def test_last_credentials_are_served_until_near_expiry_then_503(fake_imds, start_credd, world, switch, fault):
    """The switch shortens the role credentials to 100 s. After the fault credd keeps serving the last ones
    while more than a minute is left, never serves an expired Expiration, then answers 503 with a status
    that says what failed."""
    world.serve_from(fake_imds)
    lifetime = 100
    switch.set("forward", lifetime=lifetime)
    credd = start_chain(start_credd, fake_imds, world, switch.url, poll="1s")
    path = "/v1/credentials/deploy"

    with Watcher(credd, path=path) as watcher:
        before = observe(credd, path)
        assert before.status == 200
        if fault == "sts-hangup":
            switch.set("hangup")
        elif fault == "sts-throttle":
            switch.set("throttle")
        elif fault == "sts-denies":
            switch.set("deny")
        elif fault == "source-rejected":
            fake_imds.rotate()  # credentials moto never issued: STS answers InvalidClientTokenId
            credd.wait_for(lambda: credd.get("/v1/credentials").status == 200
                           and observe(credd).key == fake_imds.credentials.access_key_id, 30,
                           "the source set to pick up the rotated credentials")
        last = observe(credd, path)
        assert last.status == 200 and last.key
        # Still served while more than the minimum lifetime is left...
        time.sleep(5)
        assert observe(credd, path).status == 200, "the last valid credentials are still served"
        # ...and 503 once they near expiry.
        deadline = last.expiration - MINIMUM_SERVED_LIFETIME + 15
        credd.wait_for(lambda: credd.get(path).status == 503, max(10.0, deadline - time.time()),
                       "credd to stop serving credentials that near expiry")
        reply = credd.get(path)

    assert watcher.expired_answers() == [], "credd served an Expiration in the past"
    served = {o.key for o in watcher.seen if o.status == 200}
    assert served, "credentials were served during the fault"
    assert reply.status == 503
    err = error_answer(reply)
    assert err["message"], "the 503 says why"
    status = set_status(credd, "deploy")
    assert status.get("lastError"), f"status says what failed: {status}"
    expected = {"sts-hangup": "STSUnreachable", "sts-throttle": "STSThrottled", "sts-denies": "AccessDenied",
                "source-rejected": "InvalidClientTokenId"}[fault]
    assert status.get("lastErrorCode") == expected, status


def test_an_imds_outage_does_not_stop_the_dependent_set(fake_imds, start_credd, world, switch):
    """The source set keeps its last credentials through an IMDS outage, so the role set keeps renewing
    its (here 100 s) credentials with them and keeps serving."""
    world.serve_from(fake_imds)
    switch.set("forward", lifetime=100)
    credd = start_chain(start_credd, fake_imds, world, switch.url, poll="1s")
    path = "/v1/credentials/deploy"
    with Watcher(credd, path=path) as watcher:
        fake_imds.outage(True)
        calls = len(switch.assume_role_calls())
        credd.wait_for(lambda: len(switch.assume_role_calls()) > calls, 30, "credd to renew the role credentials")
        fake_imds.outage(False)
    assert watcher.statuses() == {200}, sorted(map(str, watcher.statuses()))
    assert watcher.expired_answers() == []


# ---- per-set access --------------------------------------------------------------------------------------

def _token() -> str:
    value = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    register_secret(value, "per-set token")
    return value


def test_per_set_token_over_tcp(fake_imds, start_credd, world, tmp_path):
    world.serve_from(fake_imds)
    deploy_token = tmp_path / "deploy.token"
    deploy_token.write_text(_token())
    deploy_token.chmod(0o600)
    credd = start_chain(start_credd, fake_imds, world, world.url,
                        access={"allow_uids": [os.geteuid()], "token_file": str(deploy_token)})

    assert credd.get("/v1/credentials/deploy", token=credd.token()).status == 403, "the main token is not the set's"
    assert credd.get("/v1/credentials/deploy", token="wrong-" + "A" * 40).status == 403
    assert credd.get("/v1/credentials/deploy", token=None).status in (401, 403)
    assert credd.get("/v1/credentials/deploy", token=deploy_token.read_text()).status == 200
    assert credd.get("/v1/credentials", token=deploy_token.read_text()).status == 403, "the set's token opens only the set"
    identity = caller_identity_via_boto3(client_env(credd, "deploy", token_file=deploy_token), world.url)
    assert ":assumed-role/credd-deploy-role/" in identity["Arn"]


_UNIX_GET = r"""
import http.client, json, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(sys.argv[1])
c = C("localhost")
c.request("GET", sys.argv[2], headers={"Host": "localhost"})
r = c.getresponse()
r.read()
print(r.status)
"""


def _unix_status_as(uid: int, gid: int, socket_path: Path, path: str) -> int:
    def drop():
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

    # The system python: an unprivileged uid may not reach the venv's interpreter under /root.
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    proc = subprocess.run([python, "-c", _UNIX_GET, str(socket_path), path], preexec_fn=drop,
                          capture_output=True, timeout=30, stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, f"the Unix-socket client failed: {redact(proc.stderr)[-1000:]}"
    return int(proc.stdout.decode().strip())


def test_uid_not_allowed_for_a_set_gets_403_on_the_unix_socket(fake_imds, world, credd_bin, tmp_path):
    world.serve_from(fake_imds)
    if os.geteuid() == 0:
        caller, group = 65534, 65534  # nobody: root itself is always allowed
    else:
        caller, group = os.geteuid(), os.getegid()
    allowed = 4242 if caller != 4242 else 4243
    sock_dir = Path(tempfile.mkdtemp(prefix="credd-sts-", dir="/tmp"))
    sock_dir.chmod(0o755)
    sock = sock_dir / "credd.sock"
    credd = Credd(credd_bin, tmp_path / "c", imds_endpoint=fake_imds.url,
                  listen={"unix": {"path": str(sock), "mode": "0666"}},
                  access={"allow_uids": [caller, os.geteuid()]},
                  credentials={"default": {"source": "imds"},
                               "deploy": deploy_set(world, world.url, access={"allow_uids": [allowed]}),
                               "open": deploy_set(world, world.url)})
    credd.unix_path = sock
    try:
        credd.start().wait_serving("deploy")
        assert _unix_status_as(caller, group, sock, "/v1/credentials/deploy") == 403
        assert _unix_status_as(caller, group, sock, "/v1/credentials") == 200, "the caller may read the default set"
        assert _unix_status_as(caller, group, sock, "/v1/credentials/open") == 200, "sets without rules follow access:"
        if os.geteuid() == 0:
            assert credd.get("/v1/credentials/deploy", via="unix").status == 200, "root may read every set"
    finally:
        credd.stop()
