#!/usr/bin/env bash
# Builds credd's libFuzzer targets and runs them (issue 7).
#
#   Tests/Fuzz/run.sh                 # CI: build, replay the committed corpus, fuzz each target 10 s
#   Tests/Fuzz/run.sh --seconds 600   # a long run: 10 minutes per target
#   Tests/Fuzz/run.sh --seconds 3600 --targets "http config" --jobs 2
#   Tests/Fuzz/run.sh --replay-only   # build and replay the committed corpus, no fuzzing
#
# Targets (CREDD_FUZZ_TARGET): config (credd.yaml), imds (IMDS JSON), login (aws login cache JSON and the AWS
# config file), sts (STS XML), router (router, Host check, access check), http (raw bytes through the
# listener's real pipeline). The binary is .build-fuzz/debug/credd-fuzz, built from Tests/Fuzz/Package.swift
# with -sanitize=fuzzer,address in its own scratch path (the main .build is untouched).
#
# Seeds and every input that ever crashed live in Tests/Fuzz/corpus/TARGET/ (committed). New interesting
# inputs found by a run go to .tmp/fuzz/corpus/TARGET (not committed); a crash is written to
# .tmp/fuzz/artifacts/ and fails the run: copy it into Tests/Fuzz/corpus/TARGET/ and add a Swift Testing
# regression test (Tests/CreddCoreTests/FuzzRegression*Tests.swift) before fixing the bug.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

seconds=10
targets="config imds login sts router http"
jobs=1
replay_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --targets) targets=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --replay-only) replay_only=1; shift ;;
        *) echo "run.sh: unknown argument $1 (see the comment at the top of Tests/Fuzz/run.sh)" >&2; exit 64 ;;
    esac
done

if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"; fi
mkdir -p "$ROOT/.tmp"
export TMPDIR="$ROOT/.tmp"

started=$(date +%s)
echo "fuzz: building credd-fuzz (-sanitize=fuzzer,address) in .build-fuzz"
swift build --package-path Tests/Fuzz --scratch-path "$ROOT/.build-fuzz" -c debug \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -enable-testing \
    --product credd-fuzz 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Write|Linking|Wrapping)' || true
bin="$ROOT/.build-fuzz/debug/credd-fuzz"
[ -x "$bin" ] || { echo "fuzz: the build did not produce $bin" >&2; exit 1; }
echo "fuzz: built in $(( $(date +%s) - started )) s"

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:symbolize=1"
export LSAN_OPTIONS="suppressions=$ROOT/Tests/Fuzz/lsan.supp:print_suppressions=0"
mkdir -p "$ROOT/.tmp/fuzz/artifacts"
failed=0
passed=0
for target in $targets; do
    seeds="$ROOT/Tests/Fuzz/corpus/$target"
    work="$ROOT/.tmp/fuzz/corpus/$target"
    mkdir -p "$seeds" "$work"
    # Every committed input (seeds and past crashes) must run clean.
    if ls "$seeds"/* >/dev/null 2>&1; then
        if ! CREDD_FUZZ_TARGET=$target "$bin" -runs=0 "$seeds"/* > "$ROOT/.tmp/fuzz/$target.replay.log" 2>&1; then
            echo "fuzz: $target: a committed input fails; see .tmp/fuzz/$target.replay.log"
            tail -40 "$ROOT/.tmp/fuzz/$target.replay.log"
            failed=$((failed + 1))
            continue
        fi
    fi
    if [ "$replay_only" = 1 ]; then passed=$((passed + 1)); echo "fuzz: $target: corpus replayed clean"; continue; fi
    log="$ROOT/.tmp/fuzz/$target.log"
    if CREDD_FUZZ_TARGET=$target "$bin" "$work" "$seeds" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
        -rss_limit_mb=2048 $( [ "$jobs" -gt 1 ] && echo "-jobs=$jobs -workers=$jobs" ) -print_final_stats=1 \
        -artifact_prefix="$ROOT/.tmp/fuzz/artifacts/$target-" > "$log" 2>&1; then
        runs=$( (cat "$log" "$ROOT"/fuzz-*.log 2>/dev/null || true) | awk '/stat::number_of_executed_units/ {s+=$2} END {print s+0}')
        echo "fuzz: $target: ${seconds} s, $runs inputs, no crash"
        passed=$((passed + 1))
    else
        echo "fuzz: $target: CRASH or leak; input in .tmp/fuzz/artifacts/, log .tmp/fuzz/$target.log"
        grep -E "ERROR|SUMMARY|Test unit written" "$log" | head -10
        failed=$((failed + 1))
    fi
    rm -f "$ROOT"/fuzz-*.log
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
