#!/usr/bin/env bash
# A throw-away single-node Slurm cluster on this machine, for trying the sbatch scripts in slurm/
# and for tests/test_slurm.py. Needs root (it installs Debian packages and runs the daemons).
#
#   slurm/local_cluster.sh start    install slurm-wlm + munge if missing, write the config, start
#                                   munged, slurmctld and slurmd, wait until the node is idle
#   slurm/local_cluster.sh status   daemons, sinfo, squeue
#   slurm/local_cluster.sh stop     cancel the jobs, stop the daemons this script started (by PID)
#   slurm/local_cluster.sh env      print `export SLURM_CONF=...` (eval "$(slurm/local_cluster.sh env)")
#
# Everything lives in $HPCQNN_SLURM_DIR (default /tmp/hpcqnn-slurm): slurm.conf, cgroup.conf,
# controller state, slurmd spool, logs (log/), PID files. The munge key and socket are the
# system's (/etc/munge/munge.key, /run/munge), so any Slurm client on the machine can talk to it.
# Client commands need SLURM_CONF=$HPCQNN_SLURM_DIR/slurm.conf (see `env`).
# Ports: $HPCQNN_SLURM_CTLD_PORT (6817) and $HPCQNN_SLURM_D_PORT (6818).
set -euo pipefail

STATE=${HPCQNN_SLURM_DIR:-/tmp/hpcqnn-slurm}
CONF=$STATE/slurm.conf
LOG=$STATE/log
HOST=$(hostname -s)
CTLD_PORT=${HPCQNN_SLURM_CTLD_PORT:-6817}
D_PORT=${HPCQNN_SLURM_D_PORT:-6818}
MUNGE_KEY=/etc/munge/munge.key
MUNGE_SOCKET=/run/munge/munge.socket.2
export SLURM_CONF=$CONF

say() { echo "local_cluster: $*"; }
die() { echo "local_cluster: error: $*" >&2; exit 1; }

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "not root: cannot install ${missing[*]} (apt-get install slurm-wlm munge)"
    command -v apt-get >/dev/null || die "no apt-get: install Slurm (slurmctld, slurmd, client) and munge yourself"
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    # should the packages' init scripts start daemons of their own, a munged is reused (start_munge
    # finds it answering); a packaged slurmctld/slurmd would hold the ports: stop it first
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >"$STATE/apt.log" 2>&1 \
        || { tail -20 "$STATE/apt.log" >&2; die "apt-get install slurm-wlm munge failed (log: $STATE/apt.log)"; }
    for tool in slurmctld slurmd sbatch munged; do
        command -v "$tool" >/dev/null || die "$tool missing after installing slurm-wlm and munge"
    done
}

write_config() {
    local cpus mem_mb
    cpus=$(nproc)
    # Slurm drains a node whose RealMemory exceeds what slurmd finds: stay a little below it
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.95)}' /proc/meminfo)
    mkdir -p "$STATE/state" "$STATE/spool" "$LOG"
    cat >"$CONF" <<CONF
# Written by slurm/local_cluster.sh: a single-node cluster for trying hpcqnn's sbatch scripts.
ClusterName=hpcqnn-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$D_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued batch job may start again only after the credential lifetime (default 120 s)
AuthInfo=cred_expire=5
# schedule pending (e.g. requeued) jobs every few seconds, not every minute
SchedulerParameters=sched_interval=2,bf_interval=2
MailProg=/bin/true
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=pmi2
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
# seconds between SIGTERM and SIGKILL when a job is cancelled, requeued or preempted
KillWait=20
# finished jobs stay visible to scontrol for at least 5 s (there is no accounting database);
# below 6 s, sbatch --wait keeps polling every 2 s instead of backing off to 32 s
MinJobAge=5
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout=60
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
    # slurmd reads cgroup.conf next to slurm.conf; nothing here uses cgroups
    cat >"$STATE/cgroup.conf" <<CONF
# Written by slurm/local_cluster.sh: no cgroup enforcement (proctrack/linuxproc, task/none)
CgroupPlugin=autodetect
IgnoreSystemd=yes
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
CONF
}

munge_ok() { command -v munge >/dev/null && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_ok; then
        say "munged already answers on $MUNGE_SOCKET"
        return 0
    fi
    if [[ ! -s $MUNGE_KEY ]]; then
        say "creating the munge key $MUNGE_KEY"
        mkdir -p "$(dirname "$MUNGE_KEY")"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom bs=1 count=1024 of="$MUNGE_KEY" status=none
        fi
    fi
    local user=root
    id munge >/dev/null 2>&1 && user=munge
    chown "$user:$user" "$MUNGE_KEY" && chmod 400 "$MUNGE_KEY"
    chown "$user:$user" /etc/munge && chmod 700 /etc/munge
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown "$user:$user" /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    if [[ $user == munge ]]; then
        runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    else
        munged --force --pid-file=/run/munge/munged.pid
    fi
    cp /run/munge/munged.pid "$STATE/munged.pid"
    for _ in $(seq 50); do munge_ok && return 0; sleep 0.1; done
    die "munged does not answer (see /var/log/munge/munged.log)"
}

node_state() { sinfo -h -N -n "$HOST" -o %t 2>/dev/null | head -1; }

# when slurmd last registered with the controller (epoch seconds; 0 if unknown)
slurmd_registered() {
    local when
    when=$(scontrol show node "$HOST" -o 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)
    date -d "$when" +%s 2>/dev/null || echo 0
}

start() {
    mkdir -p "$STATE"
    install_packages
    if alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid" && [[ $(node_state) == idle* || $(node_state) == mix* || $(node_state) == alloc* ]]; then
        say "already running (SLURM_CONF=$CONF)"
        return 0
    fi
    stop_daemons quiet
    write_config
    start_munge
    slurmctld -f "$CONF" || die "slurmctld failed to start: $(tail -5 "$LOG/slurmctld.log" 2>/dev/null)"
    local since
    since=$(date +%s)
    slurmd -f "$CONF" -N "$HOST" || die "slurmd failed to start: $(tail -5 "$LOG/slurmd.log" 2>/dev/null)"
    local state=
    for _ in $(seq 150); do
        state=$(node_state)
        # the saved node state may say idle before this slurmd has registered
        if [[ $state == idle* ]] && (( $(slurmd_registered) >= since - 1 )); then
            say "node $HOST idle ($(nproc) CPUs); export SLURM_CONF=$CONF"
            return 0
        fi
        if [[ $state == drain* || $state == down* ]] && ! alive "$STATE/slurmd.pid"; then
            break
        fi
        sleep 0.2
    done
    echo "local_cluster: node $HOST is '${state:-unknown}' after 30 s" >&2
    scontrol show node "$HOST" 2>&1 | grep -i -E 'state|reason' >&2 || true
    echo "--- slurmctld.log" >&2; tail -15 "$LOG/slurmctld.log" >&2 2>/dev/null || true
    echo "--- slurmd.log" >&2; tail -15 "$LOG/slurmd.log" >&2 2>/dev/null || true
    exit 1
}

stop_daemons() {
    local name pidfile pid
    for name in slurmd slurmctld munged; do
        pidfile=$STATE/$name.pid
        [[ -s $pidfile ]] || continue
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
            [[ ${1:-} == quiet ]] || say "stopped $name ($pid)"
        fi
        rm -f "$pidfile"
    done
}

stop() {
    if alive "$STATE/slurmctld.pid"; then
        local jobs=()
        mapfile -t jobs < <(squeue -h -o %A 2>/dev/null || true)
        if [[ ${#jobs[@]} -gt 0 ]]; then
            say "cancelling jobs: ${jobs[*]}"
            scancel "${jobs[@]}" 2>/dev/null || true
            for _ in $(seq 60); do [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break; sleep 0.5; done
        fi
    fi
    stop_daemons
}

status() {
    local name rc=0
    for name in munged slurmctld slurmd; do
        if alive "$STATE/$name.pid"; then
            echo "$name: running (pid $(cat "$STATE/$name.pid"))"
        else
            echo "$name: not running (from $STATE)"
            [[ $name == munged ]] && munge_ok && echo "  (a munged started elsewhere answers)"
            [[ $name == munged ]] || rc=1
        fi
    done
    if [[ $rc -eq 0 ]]; then
        sinfo
        squeue
    fi
    return $rc
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 {start|stop|status|env}" >&2; exit 2 ;;
esac
