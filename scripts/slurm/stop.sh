#!/bin/sh
# Stop the cluster that start.sh started in STATE_DIR.
#
# Usage: scripts/slurm/stop.sh [--purge] [STATE_DIR]
#
# Cancels its jobs, stops slurmd, slurmctld and munged by their pid files (never by
# name), and with --purge removes STATE_DIR. Stopping a cluster that is not running
# is not an error.
set -u

purge=no
if [ "${1:-}" = --purge ]; then
    purge=yes
    shift
fi
state=${1:-${EXPBOX_SLURM_DIR:-/tmp/expbox-slurm}}
PATH=$PATH:/usr/sbin:/sbin

log() { echo "slurm-stop: $*" >&2; }

[ -d "$state" ] || { log "nothing at $state"; exit 0; }
export SLURM_CONF="$state/etc/slurm.conf"

# stop_pid NAME: TERM the daemon in run/NAME.pid, then KILL it after ten seconds.
stop_pid() {
    pidfile=$state/run/$1.pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    # Only the daemon itself: a pid left by a crash may have been reused since.
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && kill -TERM "$pid"; then
        i=0
        while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do
            sleep 0.2
            i=$((i + 1))
        done
        kill -KILL "$pid" 2>/dev/null && log "$1 did not stop in time; killed"
        log "$1 stopped"
    fi
    rm -f "$pidfile"
}

if [ -s "$state/run/slurmctld.pid" ]; then
    jobs=$(squeue -h -o %A 2>/dev/null)
    if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null
        sleep 1
    fi
fi
stop_pid slurmd
stop_pid slurmctld
stop_pid munged

if [ "$purge" = yes ]; then
    rm -rf "$state"
    log "removed $state"
fi
