"""Benchmark 6: what a client sees. The time a new boto3 session takes to resolve credentials (the credential
chain run by `Session.get_credentials()`, which fetches at once) and to create a client, through credd
(container provider: AWS_CONTAINER_CREDENTIALS_FULL_URI + token file) versus straight from the fake IMDS
(IMDSv2: token PUT, role list, credentials) answering every request 1 ms late. Median of `repeat` runs,
alternating. The fake runs in its own process (fake_imds.py), credd fetched from it once beforehand.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from common import Credd, StandaloneFakeIMDS, median, workdir

ADDED_LATENCY = "1ms"


def _resolve(env: dict) -> tuple[float, float]:
    """(ms to resolve credentials in a new session, ms to create a new client in another new session)."""
    import boto3

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: v for k, v in env.items() if v is not None})
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
    try:
        t0 = time.perf_counter()
        creds = boto3.session.Session(region_name="us-east-1").get_credentials()
        creds.get_frozen_credentials()
        t1 = time.perf_counter()
        boto3.session.Session(region_name="us-east-1").client("sts")
        t2 = time.perf_counter()
        return (t1 - t0) * 1000, (t2 - t1) * 1000
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(binary: Path, *, smoke: bool = False, repeat: int = 50) -> dict:
    if smoke:
        repeat = 5
    work = workdir("client")
    empty = Path(tempfile.mkdtemp(prefix="aws-", dir=str(work)))
    (empty / "config").write_text("")
    (empty / "credentials").write_text("")
    common_env = {"AWS_CONFIG_FILE": str(empty / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(empty / "credentials")}
    fake = StandaloneFakeIMDS(delay=ADDED_LATENCY)
    credd = Credd(binary, work, imds_url=fake.url, audit=True, cpu=None)
    try:
        credd.start()
        credd.wait_serving()
        via_credd = dict(common_env, AWS_CONTAINER_CREDENTIALS_FULL_URI=f"http://127.0.0.1:{credd.tcp_port}/v1/credentials",
                         AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(credd.token_file), AWS_EC2_METADATA_DISABLED="true",
                         AWS_EC2_METADATA_SERVICE_ENDPOINT=None)
        via_imds = dict(common_env, AWS_CONTAINER_CREDENTIALS_FULL_URI=None, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=None,
                        AWS_EC2_METADATA_DISABLED=None, AWS_EC2_METADATA_SERVICE_ENDPOINT=fake.url)
        _resolve(via_credd)  # warm both paths up: imports, botocore's data loader
        _resolve(via_imds)
        results: dict = {"credd": ([], []), "imds": ([], [])}
        for i in range(repeat):
            for name, env in ((("credd", via_credd), ("imds", via_imds)) if i % 2 == 0 else (("imds", via_imds), ("credd", via_credd))):
                resolve_ms, client_ms = _resolve(env)
                results[name][0].append(resolve_ms)
                results[name][1].append(client_ms)
        return {
            "repeat": repeat, "added_latency": ADDED_LATENCY,
            "credd": {"resolve_ms": round(median(results["credd"][0]), 2), "client_ms": round(median(results["credd"][1]), 2)},
            "imds": {"resolve_ms": round(median(results["imds"][0]), 2), "client_ms": round(median(results["imds"][1]), 2)},
        }
    finally:
        credd.stop()
        fake.stop()
