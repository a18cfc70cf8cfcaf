#!/bin/sh
# Start a one-node SLURM cluster on 127.0.0.1 for expbox's launcher tests.
#
# Usage: scripts/slurm/start.sh [STATE_DIR]
#
# STATE_DIR (default $EXPBOX_SLURM_DIR, else /tmp/expbox-slurm) holds everything: the
# rendered configuration, a private MUNGE key and socket, daemon state, pid files and
# logs. Nothing outside it is written, and no system service is used, so this works
# as root in a container without systemd once `apt-get install slurm-wlm munge` is
# done. Running it again while the cluster is up changes nothing.
#
# On success the last line printed is the environment the tests need:
#   export SLURM_CONF=STATE_DIR/etc/slurm.conf
#
# Settings, read from the environment:
#   EXPBOX_SLURM_CTLD_PORT   slurmctld port (default 16817)
#   EXPBOX_SLURMD_PORT       slurmd port (default 16818)
#   EXPBOX_SLURM_CPUS        CPUs the node claims to have (default 8)
#   EXPBOX_SLURM_PROCTRACK   proctrack plugin (default proctrack/cgroup when the
#                            cgroup freezer can be written, else proctrack/linuxproc)
# The ports are fixed at the first start; later runs reuse the rendered files.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
state=${1:-${EXPBOX_SLURM_DIR:-/tmp/expbox-slurm}}
ctld_port=${EXPBOX_SLURM_CTLD_PORT:-16817}
slurmd_port=${EXPBOX_SLURMD_PORT:-16818}
cpus=${EXPBOX_SLURM_CPUS:-8}
node=expbox-node
host=$(hostname -s)

log() { echo "slurm-start: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (slurmd starts jobs as any user)"
for tool in munged munge slurmctld slurmd scontrol sinfo; do
    command -v "$tool" >/dev/null 2>&1 \
        || [ -x "/usr/sbin/$tool" ] \
        || die "$tool not found; apt-get install slurm-wlm munge"
done
PATH=$PATH:/usr/sbin:/sbin

mkdir -p "$state"
state=$(cd "$state" && pwd)
for sub in munge ctld slurmd run log etc; do
    mkdir -p "$state/$sub"
    chmod 0700 "$state/$sub"
done
# munged refuses a socket directory others can write to, and warns when clients
# cannot reach the socket; etc/ holds nothing secret (the key is in munge/).
chmod 0755 "$state" "$state/etc"
chmod 0711 "$state/munge"

conf=$state/etc/slurm.conf
sock=$state/munge/munge.socket
export SLURM_CONF="$conf"

# alive NAME: the daemon whose pid is in run/NAME.pid runs, and is that daemon (a
# pid file left by a crash may name a pid reused since).
alive() {
    pidfile=$state/run/$1.pid
    [ -s "$pidfile" ] || return 1
    [ "$(cat "/proc/$(cat "$pidfile")/comm" 2>/dev/null)" = "$1" ]
}

# wait_for SECONDS COMMAND...: retry COMMAND until it succeeds or time runs out.
wait_for() {
    limit=$1
    shift
    i=0
    while ! "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -le "$((limit * 5))" ] || return 1
        sleep 0.2
    done
}

pick_proctrack() {
    if [ -n "${EXPBOX_SLURM_PROCTRACK:-}" ]; then
        echo "$EXPBOX_SLURM_PROCTRACK"
        return
    fi
    # proctrack/cgroup puts each job in a freezer cgroup (v1) or its own cgroup
    # (v2). A container may show cgroups read-only; then fall back to linuxproc,
    # which tracks a job's processes through their parent ids.
    probe=
    if [ -d /sys/fs/cgroup/freezer ]; then
        probe=/sys/fs/cgroup/freezer/expbox-probe-$$
    elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        probe=/sys/fs/cgroup/expbox-probe-$$
    fi
    if [ -n "$probe" ] && mkdir "$probe" 2>/dev/null; then
        rmdir "$probe"
        echo proctrack/cgroup
    else
        echo proctrack/linuxproc
    fi
}

cgroup_plugin() {
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        echo cgroup/v2
    else
        echo cgroup/v1
    fi
}

render() {
    sed -e "s|@STATE_DIR@|$state|g" -e "s|@HOST@|$host|g" -e "s|@NODE@|$node|g" \
        -e "s|@CTLD_PORT@|$ctld_port|g" -e "s|@SLURMD_PORT@|$slurmd_port|g" \
        -e "s|@CPUS@|$cpus|g" -e "s|@PROCTRACK@|$(pick_proctrack)|g" \
        -e "s|@CGROUP_PLUGIN@|$(cgroup_plugin)|g" "$1"
}

# 1. Configuration: rendered once, so a second run keeps the ports in use.
if [ ! -s "$conf" ]; then
    render "$here/slurm.conf.in" >"$conf.tmp" && mv "$conf.tmp" "$conf"
    render "$here/cgroup.conf.in" >"$state/etc/cgroup.conf"
    : >"$state/etc/plugstack.conf"
    log "configuration written to $state/etc"
fi

# 2. MUNGE: a private key and socket.
key=$state/munge/munge.key
if [ ! -s "$key" ]; then
    umask 077
    dd if=/dev/urandom of="$key" bs=1024 count=1 2>/dev/null
    umask 022
    chmod 0400 "$key"
fi
if ! alive munged; then
    munged --socket="$sock" --key-file="$key" --pid-file="$state/run/munged.pid" \
        --log-file="$state/log/munged.log" --seed-file="$state/munge/munged.seed" \
        --force
    log "munged started"
fi
wait_for 10 sh -c "munge -n -S '$sock' | unmunge -S '$sock'" \
    || die "munged does not answer on $sock; see $state/log/munged.log"

# 3. The controller.
if ! alive slurmctld; then
    slurmctld -f "$conf"
    log "slurmctld started"
fi
wait_for 30 scontrol ping \
    || die "slurmctld does not answer; see $state/log/slurmctld.log"

# 4. The compute node.
if ! alive slurmd; then
    if slurmd -f "$conf" -N "$node"; then
        log "slurmd started"
    else
        log "slurmd exited at start-up"
    fi
fi
node_up() {
    case $(sinfo -h -n "$node" -o %t) in
        idle* | mix* | alloc*) return 0 ;;
    esac
    # A node left down by an earlier crash comes back once its slurmd is alive.
    scontrol update nodename="$node" state=resume >/dev/null 2>&1
    return 1
}
slurmd_failed() { ! alive slurmd; }
# Give slurmd a moment to fail at start-up (a cgroup it may not create) before
# waiting for the node to report in.
sleep 1
if slurmd_failed || ! wait_for 30 node_up; then
    if grep -q '^ProctrackType=proctrack/cgroup' "$conf" \
        && [ -z "${EXPBOX_SLURM_PROCTRACK:-}" ]; then
        log "slurmd failed with proctrack/cgroup (see $state/log/slurmd.log);" \
            "starting again with proctrack/linuxproc"
        sh "$here/stop.sh" "$state"
        sed -i 's|^ProctrackType=.*|ProctrackType=proctrack/linuxproc|' "$conf"
        exec sh "$0" "$state"
    fi
    die "node $node is not up; see $state/log/slurmd.log"
fi

log "cluster up ($(sed -n 's/^ProctrackType=//p' "$conf")):" \
    "$(sinfo -h -o '%P %D %c %t')"
echo "export SLURM_CONF=$conf"
