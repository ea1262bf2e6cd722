#!/usr/bin/env bash
# Runs credd's benchmarks side by side with their references and rewrites the results in bench/README.md.
#
#   bench/run.sh [--smoke] [--credd PATH] [--only throughput,memory,idle,fanin,coldstart,client] [--out FILE] [--json FILE]
#
# Without --credd (or $CREDD_BIN) it builds credd in release with the Swift stdlib linked in, as shipped.
# As root it re-runs itself in a network namespace holding only loopback, so nothing can reach a real IMDS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

smoke=0
credd="${CREDD_BIN:-}"
args=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1 ;;
        --credd) credd="$2"; shift ;;
        --credd=*) credd="${1#--credd=}" ;;
    esac
    shift
done

python=.venv/bin/python
[ -x "$python" ] || python=python3

missing=()
for tool in wrk h2load nginx taskset; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bench: missing ${missing[*]}: apt-get install wrk nghttp2-client nginx-light util-linux" >&2
    exit 2
fi

if [ -z "$credd" ]; then
    if [ "$smoke" = 1 ] && [ -x .build/release/credd ]; then
        credd=.build/release/credd
    elif [ "$smoke" = 1 ] && [ -x .build/debug/credd ]; then
        credd=.build/debug/credd
    else
        swift=$(command -v swift || echo /opt/swift/usr/bin/swift)
        mkdir -p .tmp
        echo "bench: building credd in release (the first build of the dependencies takes minutes)" >&2
        # The flags of `make release`: no run-time exclusivity checks; function sections, which the link
        # orders by bench/credd.order (Package.swift).
        TMPDIR="$PWD/.tmp" "$swift" build -c release --static-swift-stdlib -Xswiftc -enforce-exclusivity=unchecked \
            -Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections --product credd >&2
        credd=.build/release/credd
    fi
fi

# socket.if_nameindex() asks the kernel about this process's namespace (/sys may show another one's).
isolated() { "$python" -c 'import socket, sys; sys.exit(0 if {n for _, n in socket.if_nameindex()} <= {"lo"} else 1)'; }

run() { exec "$python" bench/bench.py --credd "$credd" "${args[@]}"; }

if ! isolated && [ "$(id -u)" = 0 ] && [ -z "${CREDD_BENCH_IN_NETNS:-}" ] && unshare -n true 2>/dev/null; then
    export CREDD_BENCH_IN_NETNS=1 CREDD_BIN="$credd"
    exec unshare -n bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "${args[@]}"
fi
if ! isolated; then
    echo "bench: note: not in a loopback-only network namespace; every endpoint used is on 127.0.0.1 anyway" >&2
fi
run
