"""Renders the results of bench.py as Markdown and puts it into a README between the results markers."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

BEGIN = "<!-- results:begin (written by bench/run.sh; do not edit by hand) -->"
END = "<!-- results:end -->"

TARGET_RPS_RATIO = 0.8
TARGET_P99_RATIO = 1.25
TARGET_IDLE_RSS_MB = 12
TARGET_LOADED_RSS_MB = 16
TARGET_COLD_FDSTORE_MS = 50


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _mb(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def _pct(point: dict, key: str) -> str:
    return f"{100 * point[key]:.0f}" if point.get(key) is not None else "?"


def _section_error(name: str, result: dict) -> list[str]:
    if "skipped" in result:
        return [f"Skipped: {result['skipped']}.", ""]
    return [f"Did not run: {result['error']}", ""]


def throughput(r: dict) -> list[str]:
    out = [f"Median of {r['repeat']} runs of {r['duration_s']:g} s per point, credd and nginx alternating. "
           "rps: requests per second; p99 in ms; errors: failed requests and non-2xx answers, all runs; "
           "CPU: the busy share of its core for the server and for the load tool (credd, nginx) — a load tool "
           "near 100 % means the point measures the tool's limit, not the server's.", "",
           "| transport | conns | credd rps | nginx rps | credd/nginx | credd p99 | nginx p99 | p99 ratio "
           "| credd audit off rps | audit off/nginx | errors credd/off/nginx | server CPU % credd/nginx "
           "| load tool CPU % credd/nginx |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    if r.get("discarded_runs"):
        out.insert(1, f"{r['discarded_runs']} run(s) where neither the server's core nor the load tool's was busy "
                   "(another process had the CPU) were measured again; a point marked † had no undisturbed run.")
    verdicts = []
    for p in r["points"]:
        c, n, q = p["credd"], p["nginx"], p["credd-audit-off"]
        ratio = c["rps"] / n["rps"] if n["rps"] else 0
        qratio = q["rps"] / n["rps"] if n["rps"] else 0
        p99 = c["p99_ms"] / n["p99_ms"] if n["p99_ms"] else 0
        tool = "wrk, TCP" if p["transport"] == "tcp" else "h2load, Unix"
        if any(p[k].get("contended") for k in ("credd", "credd-audit-off", "nginx")):
            tool += " †"
        out.append(f"| {tool} | {p['connections']} | {c['rps']:,.0f} | {n['rps']:,.0f} | {ratio:.2f} | "
                   f"{c['p99_ms']:.2f} | {n['p99_ms']:.2f} | {p99:.2f} | {q['rps']:,.0f} | {qratio:.2f} | "
                   f"{c['errors']}/{q['errors']}/{n['errors']} | {_pct(c, 'server_cpu')}/{_pct(n, 'server_cpu')} | "
                   f"{_pct(c, 'load_cpu')}/{_pct(n, 'load_cpu')} |")
        if p["connections"] in (16, 256):
            verdicts.append(f"rps ratio ≥ {TARGET_RPS_RATIO} at {p['connections']} over {p['transport']}: "
                            f"{ratio:.2f}, {_mark(ratio >= TARGET_RPS_RATIO)}")
        if p["connections"] == 256:
            verdicts.append(f"p99 ≤ {TARGET_P99_RATIO}× nginx at 256 over {p['transport']}: {p99:.2f}×, "
                            f"{_mark(p99 <= TARGET_P99_RATIO)}")
    errors = sum(p[k]["errors"] for p in r["points"] for k in ("credd", "credd-audit-off", "nginx"))
    verdicts.append(f"zero errors: {errors}, {_mark(errors == 0)}")
    out += ["", "Targets: " + "; ".join(verdicts) + "."]
    a = r.get("audit_check")
    if a:
        out += ["", f"Audit on: a 1 s wrk run answered {a['requests']:,} requests and credd wrote {a['audit_lines']:,} "
                "audit lines (one per request; the few extra are requests in flight when wrk stopped counting)."]
    return out + [""]


def memory(r: dict) -> list[str]:
    out = ["| when | RSS MB | anonymous MB | file-backed MB |", "|---|---:|---:|---:|"]
    i = r["idle"]
    out.append(f"| idle, credentials fetched | {_mb(i['rss_kib'])} | {_mb(i['anon_kib'])} | {_mb(i['file_kib'])} |")
    for n, a in enumerate(r["after"], 1):
        out.append(f"| after run {n} ({a['requests']:,} requests, {a['errors']} errors) | {_mb(a['rss_kib'])} | "
                   f"{_mb(a['anon_kib'])} | {_mb(a['file_kib'])} |")
    if r.get("idle_after_runs"):
        j = r["idle_after_runs"]
        out.append(f"| idle again, after two more watchdog pings | {_mb(j['rss_kib'])} | {_mb(j['anon_kib'])} | {_mb(j['file_kib'])} |")
    for label, point in (("idle", i), ("after the last run", r["after"][-1])):
        if point.get("mappings"):
            out += ["", f"Largest parts of the RSS {label}: "
                    + ", ".join(f"{name} {kib / 1024:.1f} MB" for name, kib in point["mappings"]) + "."]
    first, last = r["after"][0]["rss_kib"], r["after"][-1]["rss_kib"]
    growth = last - first
    loaded = max(a["rss_kib"] for a in r["after"])
    out += ["", f"Targets: idle RSS ≤ {TARGET_IDLE_RSS_MB} MB: {_mb(i['rss_kib'])} MB, "
            f"{_mark(i['rss_kib'] <= TARGET_IDLE_RSS_MB * 1024)}; after {r['requests_per_run']:,} requests "
            f"≤ {TARGET_LOADED_RSS_MB} MB: {_mb(loaded)} MB, {_mark(loaded <= TARGET_LOADED_RSS_MB * 1024)}; "
            f"growth from run 1 to run {len(r['after'])}: {growth / 1024:+.1f} MB, "
            f"{_mark(growth <= 256)} (256 KiB allowed for allocator noise).", ""]
    return out


def idle(r: dict) -> list[str]:
    threads = ", ".join(f"{name.split('/')[0]} {t['voluntary'] + t['involuntary']}"
                        for name, t in sorted(r["threads"].items()) if t["voluntary"] + t["involuntary"])
    expected = r["watchdog_pings"] + r["refreshes"]
    return [f"Window {r['window_s']:g} s, WATCHDOG_USEC={r['watchdog_usec']} (pings every {r['watchdog_usec'] / 4e6:g} s).", "",
            "| context switches (all threads) | watchdog pings | scheduled refreshes | other notifications | CPU ms |",
            "|---:|---:|---:|---|---:|",
            f"| {r['switches']} | {r['watchdog_pings']} | {r['refreshes']} | "
            f"{r['other_notification_count']} ({', '.join(r['other_notifications']) or 'none'}) | {r['cpu_ms']} |", "",
            f"Switches by thread: {threads or 'none'}.", "",
            f"Target: no wake-ups besides watchdog pings and refreshes: {r['switches']} switches for "
            f"{expected} expected wake-ups, {_mark(r['switches'] <= expected + 2)} (a wake-up costs one "
            "switch; two allowed for the timer slack of the measurement).", ""]


def fanin(r: dict) -> list[str]:
    q, b = r["requests"], r["boto3"]
    return [f"The fake IMDS answers credentials {r['fake_delay_s']:g} s late; credd's cold_start_wait is 1 s.", "",
            "| load at a cold start | answers | upstream credential fetches | took s |", "|---|---|---:|---:|",
            f"| {q['requests']} requests at once | {', '.join(f'{k}: {v}' for k, v in sorted(q['statuses'].items()))} | "
            f"{q['upstream_fetches']} | {q['seconds']} |",
            f"| {b['requested']} boto3 clients at once | {', '.join(f'{k}: {v}' for k, v in sorted(b['clients'].items()))} | "
            f"{b['upstream_fetches']} | {b['seconds']} |", "",
            f"Target: exactly one upstream fetch each: {q['upstream_fetches']} and {b['upstream_fetches']}, "
            f"{_mark(q['upstream_fetches'] == 1 and b['upstream_fetches'] == 1)}.", ""]


def coldstart(r: dict) -> list[str]:
    out = [f"{r['repeat']} activations each; from connect() on the activated TCP socket to the whole first answer "
           "(median, min, max), and to the first 200 when a 503 (\"fetching, retry\") is retried at once.", "",
           "| credentials from | first answer median ms | min ms | max ms | first answers | first 200 median ms "
           "| upstream fetches |", "|---|---:|---:|---:|---|---:|---:|"]
    for label, name in (("fd_store", "systemd's fd store (memfd)"), ("upstream", "an upstream fetch (fake IMDS)")):
        x = r[label]
        out.append(f"| {name} | {x['median_ms']} | {x['min_ms']} | {x['max_ms']} | "
                   f"{', '.join(f'{k}: {v}' for k, v in sorted(x['statuses'].items()))} | "
                   f"{x['credentials_median_ms']} | {x['upstream_fetches']} |")
    f = r["fd_store"]
    ok = f["median_ms"] <= TARGET_COLD_FDSTORE_MS and set(f["statuses"]) == {"200"}
    out += ["", f"Target: credentials ≤ {TARGET_COLD_FDSTORE_MS} ms from the fd store: median {f['median_ms']} ms, "
            f"{_mark(ok)}.", ""]
    return out


def client(r: dict) -> list[str]:
    c, i = r["credd"], r["imds"]
    return [f"Median of {r['repeat']}, alternating; the fake IMDS adds {r['added_latency']} to every request.", "",
            "| new boto3 session | resolve credentials ms | create an STS client ms |", "|---|---:|---:|",
            f"| through credd (container provider) | {c['resolve_ms']} | {c['client_ms']} |",
            f"| straight from IMDS (IMDSv2) | {i['resolve_ms']} | {i['client_ms']} |", ""]


SECTIONS = [
    ("throughput", "1. Throughput and latency of GET /v1/credentials", throughput),
    ("memory", "2. Memory", memory),
    ("idle", "3. Idle cost", idle),
    ("fanin", "4. Fan-in at a cold start", fanin),
    ("coldstart", "5. Cold start on an activated socket", coldstart),
    ("client", "6. What a client sees", client),
]


def render(results: dict) -> str:
    m = results["machine"]
    when = _dt.datetime.fromtimestamp(results["finished"], _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [BEGIN, "", f"Run: {when}, {'smoke mode (timings meaningless)' if results['smoke'] else 'full run'}, "
             f"`bench/run.sh{' --smoke' if results['smoke'] else ''}`.", "",
             f"Machine: {m['cpu']}; {m['memory']} RAM; {m['os']}. Tools: {m['tools']}. credd: {results['credd']}.", ""]
    if results.get("load_note"):
        lines += [results["load_note"], ""]
    for key, title, fn in SECTIONS:
        if key not in results:
            continue
        lines.append(f"### {title}")
        lines.append("")
        r = results[key]
        at = r.get("measured_at")
        if at and abs(at - results["finished"]) > 3600:
            lines += [f"Measured {_dt.datetime.fromtimestamp(at, _dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} "
                      "(an earlier run; this run did not repeat it).", ""]
        lines += _section_error(key, r) if ("error" in r or "skipped" in r) else fn(r)
    lines.append(END)
    return "\n".join(lines) + "\n"


def write(readme: Path, results: dict) -> None:
    text = readme.read_text() if readme.exists() else ""
    block = render(results)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block.rstrip("\n") + tail
    else:
        text = (text.rstrip("\n") + "\n\n## Results\n\n" if text else "# credd benchmarks\n\n## Results\n\n") + block
    readme.write_text(text)
