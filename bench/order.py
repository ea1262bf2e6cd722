"""Writes bench/credd.order: the functions a serving credd runs, for lld's --symbol-ordering-file (Package.swift).

    bench/order.py [--credd PATH] [--out bench/credd.order] [--runs 3]     # needs valgrind; under a minute

Why: a page of code that runs once stays resident, and the kernel maps code in runs of 64 KiB around each
page a process touches. Spread over 25 MB of text, the code credd runs kept ~14 MB of it resident; with
the functions it runs laid out together, ~8 MB (the static Swift stdlib and Foundation archives put most of
their code in one section per object, which the link cannot split, so their hot code stays scattered).

How: credd runs under callgrind (valgrind) the way benchmark 2 runs it: `credd serve` from a config file,
the first fetch from the fake IMDS, then credentials requests on the Unix socket (new and kept-alive
connections) and on TCP with the token, and /healthz. The profile is dumped while credd still serves
(stopping is not part of it), and every function of the credd binary that ran is listed, most instructions
first. Profiles differ from run to run (timing decides some paths), so several are merged; even so, orders
regenerated from one binary measured 18.8 to 20.4 MB idle in benchmark 2 (a profile under 256-connection
bursts was not better): run benchmark 2 after regenerating. Regenerate after changes that move much of the
serving path; a stale order only costs memory (lld ignores names it does not find:
--no-warn-symbol-ordering). The binary profiled need not have been linked with an order.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Credd, h2load, start_fake_imds, workdir  # noqa: E402


class TracedCredd(Credd):
    def __init__(self, *args, out_dir: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.out_dir = out_dir

    def argv(self) -> list[str]:
        return ["valgrind", "--tool=callgrind", "--dump-instr=no", "--compress-strings=no", "--compress-pos=no",
                "--demangle=no", f"--callgrind-out-file={self.out_dir}/callgrind.out.%p", *super().argv()]


def self_costs(paths: list[str], binary: Path) -> dict[str, int]:
    """Self instruction counts per function of `binary`, summed over callgrind dumps."""
    want = os.path.realpath(binary)
    costs: dict[str, int] = {}
    for path in paths:
        ob = fn = None
        skip_next = False
        with open(path, errors="replace") as f:
            for line in f:
                if skip_next:  # the inclusive cost line after calls=
                    skip_next = False
                    continue
                if line.startswith("ob="):
                    ob = os.path.realpath(line[3:].strip())
                elif line.startswith("fn="):
                    fn = line[3:].strip()
                    if ob == want:
                        costs.setdefault(fn, 0)
                elif line.startswith("calls="):
                    skip_next = True
                elif line[:1].isdigit() or line[:1] in "+-*":
                    if fn is not None and ob == want:
                        parts = line.split()
                        if len(parts) >= 2 and parts[1].isdigit():
                            costs[fn] += int(parts[1])
    return costs


def profile(source: Path, dumps: list[str]) -> dict[str, int]:
    """One traced run of `source`: self costs per function of the binary (dump files appended to `dumps`)."""
    work = workdir("order")
    # valgrind gives up on the DWARF of Swift 6 binaries; a copy without it keeps the symbol table (the names).
    binary = work / "credd"
    subprocess.run(["objcopy", "--strip-debug", str(source), str(binary)], check=True)
    fake = start_fake_imds()
    credd = TracedCredd(binary, work, imds_url=fake.url, audit=True, cpu=None, out_dir=work)
    try:
        credd.start(timeout=180)
        credd.wait_serving(timeout=180)
        for _ in range(20):
            credd.get(via="unix")
            credd.get(via="tcp")
        credd.get("/healthz", via="unix")
        credd.get("/healthz", via="tcp")
        h2load(credd.unix_path, 16, 0, requests=2000, work=work, cpu=None)
        time.sleep(1)
        # The dump request waits for credd to run: a request wakes it (one more served answer is in the profile).
        # (valgrind puts its control pipes in credd's TMPDIR.)
        control = subprocess.Popen(["callgrind_control", "--dump=order", str(credd.pid)],
                                   env={**os.environ, "TMPDIR": str(work)}, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while control.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            credd.get("/healthz", via="unix")
        control.wait(5)
        time.sleep(1)
    finally:
        if credd.process is not None and credd.process.poll() is None:
            credd.process.kill()
            credd.process.wait()
        fake.stop()
    dumps.extend(sorted(glob.glob(str(work / "callgrind.out.*"))))
    costs = self_costs(dumps, binary)
    shutil.rmtree(work, ignore_errors=True)
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--credd", default=str(common.REPO / ".build" / "release" / "credd"))
    parser.add_argument("--out", default=str(common.BENCH_DIR / "credd.order"))
    parser.add_argument("--runs", type=int, default=3, help="profiles merged (timing decides some paths)")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        print("order: needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    common.clean_environ()
    costs: dict[str, int] = {}
    ndumps = 0
    for _ in range(args.runs):
        for name, cost in profile(Path(args.credd).resolve(), dumps := []).items():
            costs[name] = costs.get(name, 0) + cost
        ndumps += len(dumps)
    if not costs:
        print(f"order: no profile of {args.credd}", file=sys.stderr)
        return 1
    names = sorted(costs, key=lambda n: (-costs[n], n))
    Path(args.out).write_text("".join(f"{n}\n" for n in names))
    print(f"order: {len(names)} functions from {ndumps} dump(s) of {args.runs} run(s) written to {args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
