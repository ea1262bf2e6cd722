#!/bin/bash
# Runs credd's units under a real systemd (PID 1 in systemd-nspawn) and the checks of ci_check.py.
#
# usage: Tests/systemd/nspawn-test.sh [--results DIR] [--parts system,user] [--timeout SECS]
# env:   CREDD_BIN (default .build/debug/credd), PYTHON (default .venv/bin/python: needs boto3, PyYAML)
#
# The container sees: the host's /usr (read-only), this checkout and the Python prefix at their own paths,
# the directory of the credd binary at /opt/credd/bin (the units' @BINDIR@), the rendered system units in
# /etc/systemd/system and the user units in /etc/systemd/user. It boots only ci-test.service (which pulls in
# what it needs) and exits with its status. Needs root with CAP_SYS_ADMIN and systemd-nspawn.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PROJECT=$(cd "$HERE/../.." && pwd)
CREDD_BIN=${CREDD_BIN:-$PROJECT/.build/debug/credd}
PYTHON=${PYTHON:-$PROJECT/.venv/bin/python}
RESULTS= PARTS=system,user TIMEOUT=240
while [ $# -gt 0 ]; do
    case "$1" in
        --results) RESULTS=$2; shift 2 ;;
        --parts) PARTS=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        *) echo "nspawn-test.sh: unknown argument '$1'; see the usage line at the top of this script." >&2; exit 2 ;;
    esac
done
if [ ! -x "$CREDD_BIN" ]; then
    echo "nspawn-test.sh: the credd binary $CREDD_BIN is missing: run swift build, or set CREDD_BIN." >&2
    exit 2
fi
CREDD_BIN=$(readlink -f "$CREDD_BIN")
BINDIR=/opt/credd/bin
WORK=$(mktemp -d /tmp/credd-nspawn.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
RESULTS=${RESULTS:-$WORK/results}
mkdir -p "$RESULTS" "$WORK/units" "$WORK/user-units" "$WORK/bin"
cp "$CREDD_BIN" "$WORK/bin/credd"

for unit in "$PROJECT"/systemd/*.socket "$PROJECT"/systemd/*.service; do
    sed "s|@BINDIR@|$BINDIR|g" "$unit" > "$WORK/units/$(basename "$unit")"
done
for unit in "$PROJECT"/systemd/user/*.socket "$PROJECT"/systemd/user/*.service; do
    sed "s|@BINDIR@|$BINDIR|g" "$unit" > "$WORK/user-units/$(basename "$unit")"
done

cat > "$WORK/units/fake-imds.service" <<UNIT
[Unit]
Description=strict IMDSv2 fake on 127.0.0.1:1338 (control 1339) for credd's checks
[Service]
ExecStart=$PYTHON $PROJECT/Tests/systemd/imds_service.py --port 1338 --control-port 1339
UNIT

# No D-Bus or logind in the container: create the user's runtime directory directly instead of asking
# logind for its size (which is all systemd-user-runtime-dir needs the bus for).
mkdir -p "$WORK/units/user-runtime-dir@.service.d"
cat > "$WORK/units/user-runtime-dir@.service.d/ci.conf" <<'UNIT'
[Service]
ExecStart=
ExecStart=/usr/bin/install -d -m 0700 -o %i -g %i /run/user/%i
ExecStop=
ExecStop=/bin/rm -rf /run/user/%i
UNIT

# nspawn puts a FIFO over /proc/kmsg; a user manager has no inaccessible FIFO node to hide it with, so
# ProtectKernelLogs= fails "at step NAMESPACE" in the container only (not on a real host, where /proc/kmsg
# is a regular file): lift it for the container's user units.
mkdir -p "$WORK/user-units/credd.service.d"
cat > "$WORK/user-units/credd.service.d/nspawn.conf" <<'UNIT'
[Service]
ProtectKernelLogs=no
UNIT

cat > "$WORK/units/ci-test.service" <<UNIT
[Unit]
Description=credd checks under a real systemd
SuccessAction=exit
FailureAction=exit
[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=$((TIMEOUT - 20))s
Environment=CREDD_CI_PARTS=$PARTS CREDD_CI_RESULTS=/ci-results
ExecStart=$PYTHON $PROJECT/Tests/systemd/ci_check.py
UNIT

# Everything the binary and Python load from outside /usr must be visible at the same path.
BINDS=(--bind-ro "$PROJECT" --bind-ro "$WORK/bin:$BINDIR")
PREFIXES=$("$PYTHON" -c 'import sys; print(sys.prefix); print(sys.base_prefix)')
LIBDIRS=$( (ldd "$CREDD_BIN" 2>/dev/null || true) | awk '$3 ~ /^\// {print $3}' | xargs -r -n1 dirname | sort -u)
for dir in $PREFIXES $LIBDIRS; do
    dir=$(readlink -f "$dir")
    case "$dir" in
        /usr|/usr/*|/lib|/lib/*|/lib64|/lib64/*|"$PROJECT"|"$PROJECT"/*) ;;
        *) BINDS+=(--bind-ro "$dir") ;;
    esac
done

set +e
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 "$HERE/nspawn-run.sh" --units "$WORK/units" --user-units "$WORK/user-units" \
    --results "$RESULTS" --timeout "$TIMEOUT" --unified "${BINDS[@]}"
rc=$?
set -e
echo "nspawn-test.sh: ci-test.service exited with $rc; results in $RESULTS" >&2
if [ -f "$RESULTS/result.json" ]; then
    "$PYTHON" -c 'import json,sys
for s in json.load(open(sys.argv[1]))["steps"]:
    print(("ok     " if s["ok"] else "FAILED ") + s["name"] + ("" if s["ok"] else ": " + s["detail"]))' "$RESULTS/result.json"
fi
exit $rc
