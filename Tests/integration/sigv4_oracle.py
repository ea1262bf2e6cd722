#!/usr/bin/env python3
"""botocore as an oracle for credd's SigV4 signer: signs real AssumeRole requests at a fixed time.

Reads JSON on stdin:
  {"cases": [{"name": str, "access_key_id": str, "secret_access_key": str, "session_token": str | null,
              "region": str, "endpoint_url": str, "timestamp": "2026-01-02T03:04:05Z",
              "params": {"RoleArn": ..., "RoleSessionName": ..., "DurationSeconds": 3600, ...},
              "params_order": ["RoleArn", "RoleSessionName", ...]}]}
and prints JSON: [{"name", "authorization", "x_amz_date", "body", "signed_headers", "host"}], one per case.

Each request is built and signed by a real botocore STS client (its serializer and its SigV4Auth signer,
with `botocore.auth.get_current_datetime` patched to the case's time) and captured in `before-send`, so
nothing is sent. The same request is then signed again with a bare `botocore.auth.SigV4Auth` and the two
Authorization headers must agree. Test credentials only: they are printed nowhere.

As a guard, every socket connect outside loopback is refused for the life of this process.
"""
import datetime
import json
import os
import socket
import sys

# Before botocore is imported: without this botocore signs with awscrt when it is importable.
os.environ["BOTO_DISABLE_CRT"] = "true"
for _key in [k for k in os.environ if k.startswith("AWS_")]:
    del os.environ[_key]
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

_real_connect = socket.socket.connect


def _loopback_only_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and not (host.startswith("127.") or host in ("::1", "localhost")) \
            and self.family in (socket.AF_INET, socket.AF_INET6):
        raise OSError(f"sigv4_oracle refuses to connect to {host}: only loopback is allowed")
    return _real_connect(self, address)


socket.socket.connect = _loopback_only_connect

import botocore.auth  # noqa: E402
import botocore.awsrequest  # noqa: E402
import botocore.config  # noqa: E402
import botocore.credentials  # noqa: E402
import botocore.session  # noqa: E402


class _Captured(Exception):
    def __init__(self, request):
        super().__init__("captured")
        self.request = request


def _header(request, name):
    value = request.headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return value


def sign_case(case):
    fixed = datetime.datetime.strptime(case["timestamp"], "%Y-%m-%dT%H:%M:%SZ")
    botocore.auth.get_current_datetime = lambda remove_tzinfo=True: fixed

    session = botocore.session.get_session()
    config = botocore.config.Config(
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=0.2,
        read_timeout=0.2,
        # If the capture ever failed, the request would go to a dead loopback proxy, not to AWS.
        proxies={"http": "http://127.0.0.1:9", "https": "http://127.0.0.1:9"},
    )
    client = session.create_client(
        "sts",
        region_name=case["region"],
        endpoint_url=case["endpoint_url"],
        aws_access_key_id=case["access_key_id"],
        aws_secret_access_key=case["secret_access_key"],
        aws_session_token=case.get("session_token"),
        config=config,
    )

    def capture(request, **_):
        raise _Captured(request)

    client.meta.events.register("before-send.sts.AssumeRole", capture)
    try:
        # JSON objects have no order: "params_order" gives the order credd sends the fields in, and
        # botocore serialises keyword arguments in the order it gets them.
        order = case.get("params_order") or list(case["params"])
        client.assume_role(**{key: case["params"][key] for key in order})
    except _Captured as captured:
        request = captured.request
    else:
        raise SystemExit(f"case {case['name']}: botocore sent the request instead of handing it to before-send")

    body = request.body.decode("utf-8") if isinstance(request.body, bytes) else request.body
    authorization = _header(request, "Authorization")
    amz_date = _header(request, "X-Amz-Date")

    # The same request signed by a bare SigV4Auth: the client must have used exactly this signer.
    bare = botocore.awsrequest.AWSRequest(
        method="POST", url=request.url, data=body,
        headers={"Content-Type": _header(request, "Content-Type")})
    signing_region = case.get("signing_region") or case["region"]
    credentials = botocore.credentials.Credentials(
        case["access_key_id"], case["secret_access_key"], case.get("session_token"))
    botocore.auth.SigV4Auth(credentials, "sts", signing_region).add_auth(bare)
    bare_authorization = _header(bare, "Authorization")
    if bare_authorization != authorization:
        raise SystemExit(
            f"case {case['name']}: the client's Authorization differs from a bare SigV4Auth's:\n"
            f"  client: {authorization}\n  bare:   {bare_authorization}")

    signed_part = authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0]
    return {
        "name": case["name"],
        "url": request.url,
        "authorization": authorization,
        "x_amz_date": amz_date,
        "body": body,
        "signed_headers": signed_part.split(";"),
        "content_type": _header(request, "Content-Type"),
    }


def main():
    spec = json.load(sys.stdin)
    json.dump([sign_case(case) for case in spec["cases"]], sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
