"""Runs credd's benchmarks and writes the results table into bench/README.md (see bench/README.md).

    python bench/bench.py [--smoke] [--credd PATH] [--only throughput,memory,...] [--out README] [--json FILE]

`--smoke` runs every benchmark for seconds to check that the scripts still work; its timings mean nothing and
it writes to a temporary README unless --out says otherwise. Exit status 0 when every benchmark ran (whatever
the figures), 1 when one could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import report  # noqa: E402

BENCHMARKS = ["throughput", "memory", "idle", "fanin", "coldstart", "client"]


def load_note() -> str:
    """What else ran on the machine while measuring: the figures are only as good as the quiet they had."""
    load1, load5, _ = os.getloadavg()
    return (f"Load average when the run ended: {load1:.2f} (1 min), {load5:.2f} (5 min) on {os.cpu_count()} cores; "
            "throughput figures are only comparable within one run.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long runs that only check the scripts work")
    parser.add_argument("--credd", help="credd binary (default: $CREDD_BIN, else .build/release/credd)")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    parser.add_argument("--out", help="README to write the results into (default: bench/README.md; smoke: a temp file)")
    parser.add_argument("--json", help="write the raw results here (default for a full run: bench/results/latest.json)")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per point (median reported)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per throughput run")
    args = parser.parse_args(argv)

    common.clean_environ()
    common.raise_file_limit()
    isolated = {name for _, name in socket.if_nameindex()} <= {"lo"}
    binary = common.credd_binary(args.credd)
    only = [b.strip() for b in args.only.split(",")] if args.only else BENCHMARKS
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    results: dict = {"smoke": args.smoke, "machine": common.machine(), "credd": common.describe_binary(binary),
                     "isolated_network": isolated, "started": time.time()}
    failed = []
    for name in only:
        print(f"bench: {name} …", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            module = __import__(name)
            kwargs = {"smoke": args.smoke}
            if name == "throughput":
                kwargs.update(repeat=args.repeat, duration=args.duration)
            results[name] = module.run(binary, **kwargs)
            results[name]["measured_at"] = time.time()
            if "skipped" in results[name]:
                print(f"bench: {name} skipped: {results[name]['skipped']}", file=sys.stderr)
        except common.BenchError as e:
            results[name] = {"error": str(e)}
            failed.append(name)
        except Exception as e:  # noqa: BLE001 - one benchmark's failure must not hide the others' results
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            failed.append(name)
        print(f"bench: {name} done in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    results["finished"] = time.time()
    results["load_note"] = load_note()

    if args.out:
        out = Path(args.out)
    elif args.smoke:
        out = Path(tempfile.mkdtemp(prefix="credd-bench-smoke-")) / "README.md"
    else:
        out = common.BENCH_DIR / "README.md"
    raw = Path(args.json) if args.json else (None if args.smoke or args.out else common.BENCH_DIR / "results" / "latest.json")
    if raw and not args.smoke and args.only and raw.exists():
        # A partial run (--only) keeps the other sections of the last run, each with the time it was measured.
        previous = json.loads(raw.read_text())
        if previous.get("credd") == results["credd"] and not previous.get("smoke"):
            for name in BENCHMARKS:
                if name not in only and name in previous:
                    results[name] = previous[name]
    report.write(out, results)
    if raw:
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"bench: results written to {out}", file=sys.stderr)
    if not failed:
        for path in common.WORKDIRS:
            shutil.rmtree(path, ignore_errors=True)
    if failed:
        print(f"bench: could not run: {', '.join(failed)}", file=sys.stderr)
        for name in failed:
            print(f"  {name}: {results[name]['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
