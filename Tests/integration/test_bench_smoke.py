"""bench/run.sh --smoke: every benchmark script still runs end to end against the real daemon and nginx.

Timings never fail this test (smoke runs last a second on a shared machine); what it checks is that each
benchmark ran, measured what it claims (both servers answered, the counters were read) and that the
results table was written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from support.harness import REPO_ROOT

BENCHMARKS = ["throughput", "memory", "idle", "fanin", "coldstart", "client"]
TOOLS = {"wrk": "wrk", "h2load": "nghttp2-client", "nginx": "nginx-light", "taskset": "util-linux"}


@pytest.mark.slow
def test_bench_smoke_runs_every_benchmark_and_writes_the_table(credd_bin, tmp_path):
    missing = [f"{tool} (apt package {package})" for tool, package in TOOLS.items() if not shutil.which(tool)]
    if missing:
        pytest.skip(f"skipped: the benchmarks need {', '.join(missing)}")
    readme = tmp_path / "README.md"
    raw = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if k != "CREDD_BIN"}
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "bench" / "run.sh"), "--smoke", "--credd", str(credd_bin),
         "--out", str(readme), "--json", str(raw)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"bench/run.sh --smoke failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"

    results = json.loads(raw.read_text())
    assert results["smoke"] is True
    for name in BENCHMARKS:
        assert name in results, f"{name} did not run"
        assert "error" not in results[name], f"{name}: {results[name].get('error')}"

    points = results["throughput"]["points"]
    assert {(p["transport"], p["connections"]) for p in points} >= {("tcp", 16), ("unix", 16)}
    for p in points:
        for server in ("credd", "credd-audit-off", "nginx"):
            assert p[server]["requests"] > 0, f"{server} answered nothing over {p['transport']}"
            assert p[server]["p99_ms"] is not None, f"no p99 for {server} over {p['transport']}"
    audit = results["throughput"]["audit_check"]
    assert audit["audit_lines"] >= audit["requests"] > 0, "fewer audit lines than answered requests"

    memory = results["memory"]
    assert memory["idle"]["rss_kib"] > 0 and all(a["requests"] == memory["requests_per_run"] for a in memory["after"])
    assert results["idle"]["threads"], "no thread's context switches were read"

    # Not timings: one upstream fetch for any fan-in is what credd promises.
    assert results["fanin"]["requests"]["upstream_fetches"] == 1
    assert results["fanin"]["boto3"]["upstream_fetches"] == 1
    assert results["fanin"]["boto3"]["clients"] == {"ok": results["fanin"]["boto3"]["requested"]}
    assert results["coldstart"]["fd_store"]["upstream_fetches"] == 0, "a restart with an fd store went upstream"
    assert results["coldstart"]["fd_store"]["statuses"] == {"200": results["coldstart"]["repeat"]}
    assert results["client"]["credd"]["resolve_ms"] > 0 and results["client"]["imds"]["resolve_ms"] > 0

    text = readme.read_text()
    assert "<!-- results:begin" in text and "<!-- results:end -->" in text
    for heading in ("1. Throughput", "2. Memory", "3. Idle cost", "4. Fan-in", "5. Cold start", "6. What a client sees"):
        assert f"### {heading}" in text, f"the table has no section {heading}"
