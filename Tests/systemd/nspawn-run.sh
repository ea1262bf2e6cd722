#!/bin/bash
# Boots a real systemd (the host's own /usr) in a throwaway systemd-nspawn container and runs ci-test.service.
#
# usage: nspawn-run.sh --units DIR [--user-units DIR] [--results DIR] [--bind-ro PATH[:DEST]]... [--timeout SECS]
#                      [--unified]
#
# DIR holds ci-test.service (Type=oneshot, SuccessAction=exit, FailureAction=exit) and whatever units it needs;
# it is bound read-only at /etc/systemd/system (and --user-units at /etc/systemd/user). The exit status is the
# container's, i.e. ci-test.service's. --results DIR is bound read-write at /ci-results for logs.
# --unified boots the container on the unified cgroup hierarchy with BPF, so IPAddressDeny=/IPAddressAllow=
# are enforced (on the host's hybrid hierarchy they would be silently ignored).
# Why this shape (SYSTEMD.md §3): a private mount+pid namespace and a tmpfs /run so nothing outlives a killed run;
# a cgroup of our own because --keep-unit puts the container's cgroups under the caller's.
set -euo pipefail

UNITS= USER_UNITS= RESULTS= TIMEOUT=180 UNIFIED=
BINDS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --units) UNITS=$2; shift 2 ;;
        --user-units) USER_UNITS=$2; shift 2 ;;
        --results) RESULTS=$2; shift 2 ;;
        --bind-ro) BINDS+=("--bind-ro=$2"); shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --unified) UNIFIED=1; shift ;;
        *) echo "nspawn-run.sh: unknown argument '$1'; see the usage line at the top of this script." >&2; exit 2 ;;
    esac
done
if [ -z "$UNITS" ] || [ ! -f "$UNITS/ci-test.service" ]; then
    echo "nspawn-run.sh: --units DIR must name a directory holding ci-test.service." >&2
    exit 2
fi

# The "inner" half runs inside the private namespaces (re-executed below).
if [ "${CREDD_NSPAWN_INNER:-}" = 1 ]; then
    mount -t tmpfs -o mode=0755 tmpfs /run
    ROOT=$(mktemp -d /run/credd-nspawn-root.XXXXXX)
    # --volatile=yes boots ROOT's /usr on a tmpfs root: give it the host's /usr, read-only.
    mkdir "$ROOT/usr"
    mount --bind /usr "$ROOT/usr"
    mount -o remount,bind,ro "$ROOT/usr"
    ARGS=(--quiet -D "$ROOT" --volatile=yes --register=no --keep-unit --link-journal=no
          --private-network --console=read-only
          --bind-ro=/etc/pam.d --bind-ro=/etc/security
          "--bind-ro=$UNITS:/etc/systemd/system")
    [ -n "$USER_UNITS" ] && ARGS+=("--bind-ro=$USER_UNITS:/etc/systemd/user")
    [ -n "$RESULTS" ] && ARGS+=("--bind=$RESULTS:/ci-results")
    if [ -n "$UNIFIED" ]; then
        export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
        ARGS+=(--system-call-filter=bpf)
    fi
    exec systemd-nspawn "${ARGS[@]}" "${BINDS[@]}" --boot -- \
        systemd.firstboot=off systemd.show_status=error systemd.unit=ci-test.service
fi

CG=credd-nspawn-$$
cleanup_cgroup() {
    for h in systemd unified; do
        d=/sys/fs/cgroup/$h/$CG
        [ -d "$d" ] || continue
        echo $$ > /sys/fs/cgroup/$h/cgroup.procs 2>/dev/null || true
        # Leftover sub-cgroups of the container (depth-first) before our own.
        find "$d" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true
        rmdir "$d" 2>/dev/null || echo "nspawn-run.sh: could not remove cgroup $d" >&2
    done
}
trap cleanup_cgroup EXIT
for h in systemd unified; do
    if [ -d /sys/fs/cgroup/$h ]; then
        mkdir -p /sys/fs/cgroup/$h/$CG
        echo $$ > /sys/fs/cgroup/$h/$CG/cgroup.procs
    fi
done

set +e
CREDD_NSPAWN_INNER=1 timeout --kill-after=10 "$TIMEOUT" \
    unshare --mount --propagation private --pid --fork --kill-child --mount-proc \
    "$0" --units "$UNITS" ${USER_UNITS:+--user-units "$USER_UNITS"} ${RESULTS:+--results "$RESULTS"} ${UNIFIED:+--unified} \
    $(for b in "${BINDS[@]}"; do printf -- '--bind-ro %s ' "${b#--bind-ro=}"; done) --timeout "$TIMEOUT"
rc=$?
set -e
if [ $rc = 124 ] || [ $rc = 137 ]; then
    echo "nspawn-run.sh: the container did not finish within ${TIMEOUT}s and was killed." >&2
fi
exit $rc
