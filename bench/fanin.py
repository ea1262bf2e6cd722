"""Benchmark 4: fan-in at a cold start. The fake IMDS answers the credentials request late (`delay`), so
every request below arrives while credd's first fetch is still in flight.

1. 1000 requests on 1000 connections, opened first and sent at once (threads behind a barrier);
2. 200 boto3 clients created at once (each its own Session; the container provider resolves credentials
   when the client is created).

Each counts the fake's credentials GETs: the upstream fetches. credd's cold_start_wait is set to its maximum
(1 s) so the waiting requests are answered rather than told to retry.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from pathlib import Path

from common import Credd, start_fake_imds, workdir

DELAY = 0.4


def _cold_credd(binary: Path, work: Path, fake_url: str) -> Credd:
    credd = Credd(binary, work, imds_url=fake_url, audit=True, extra={"server": {"cold_start_wait": "1s"}})
    credd.start(wait=False)
    # Ready as soon as the socket answers; /healthz does not wait for credentials.
    credd.wait_ready()
    return credd


def _requests(credd: Credd, n: int) -> dict:
    token = credd.token()
    barrier = threading.Barrier(n)
    statuses: list = [None] * n

    def one(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", credd.tcp_port, timeout=30)
        try:
            conn.connect()
            barrier.wait(30)
            conn.request("GET", "/v1/credentials", headers={"Authorization": token})
            resp = conn.getresponse()
            resp.read()
            statuses[i] = resp.status
        except Exception as e:  # noqa: BLE001 - counted per request
            statuses[i] = type(e).__name__
            try:
                barrier.abort()
            except Exception:  # noqa: BLE001
                pass
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    counts: dict = {}
    for s in statuses:
        counts[str(s)] = counts.get(str(s), 0) + 1
    return {"statuses": counts, "seconds": round(time.monotonic() - t0, 2)}


def _boto3_clients(credd: Credd, n: int, expected_key: str) -> dict:
    import boto3

    os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = f"http://127.0.0.1:{credd.tcp_port}/v1/credentials"
    os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = str(credd.token_file)
    try:
        sessions = [boto3.session.Session(region_name="us-east-1") for _ in range(n)]
        barrier = threading.Barrier(n)
        outcome: list = [None] * n

        def one(i: int) -> None:
            try:
                barrier.wait(60)
                client = sessions[i].client("sts")
                creds = client._request_signer._credentials.get_frozen_credentials()
                outcome[i] = "ok" if creds.access_key == expected_key else "other key"
            except Exception as e:  # noqa: BLE001 - counted per client
                outcome[i] = type(e).__name__

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        counts: dict = {}
        for o in outcome:
            counts[str(o)] = counts.get(str(o), 0) + 1
        return {"clients": counts, "seconds": round(time.monotonic() - t0, 2)}
    finally:
        del os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
        del os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]


def run(binary: Path, *, smoke: bool = False) -> dict:
    n_requests, n_clients = (100, 20) if smoke else (1000, 200)
    work = workdir("fanin")
    out = {}
    fake = start_fake_imds()
    # Only the credentials document is late (not the role list before it): the fetch takes DELAY.
    fake.delay(DELAY, paths=(f"/latest/meta-data/iam/security-credentials/{fake.role}",))
    try:
        credd = _cold_credd(binary, work / "requests", fake.url)
        try:
            result = _requests(credd, n_requests)
            time.sleep(DELAY)
            result["requests"] = n_requests
            result["upstream_fetches"] = fake.credential_gets
            out["requests"] = result
        finally:
            credd.stop()

        fake.reset_counters()
        fake.rotate()
        credd = _cold_credd(binary, work / "boto3", fake.url)
        try:
            result = _boto3_clients(credd, n_clients, fake.credentials.access_key_id)
            result["requested"] = n_clients
            result["upstream_fetches"] = fake.credential_gets
            out["boto3"] = result
        finally:
            credd.stop()
    finally:
        fake.stop()
    out["fake_delay_s"] = DELAY
    return out
