#!/usr/bin/env bash
# A throw-away Slurm cluster on this machine, for trying the sbatch scripts in slurm/ and for
# tests/test_slurm.py (one node) and tests/test_multinode.py (several). Needs root (it installs
# Debian packages, runs the daemons and, for several nodes, makes network namespaces).
#
#   slurm/local_cluster.sh start [--nodes N]
#       install slurm-wlm + munge if missing, write the config, start munged, slurmctld and the
#       nodes' slurmd, wait until every node is idle. N = 1 (default): one node, this host itself
#       (slurmd at 127.0.0.1). N >= 2: N nodes node1..nodeN, each a Linux network namespace with
#       its own hostname (UTS namespace), its own /etc/hosts (all nodes' names), its own address
#       $HPCQNN_SLURM_SUBNET.(10+k) on a bridge this script makes (the host, where slurmctld
#       runs, is $HPCQNN_SLURM_SUBNET.1 there) and its own slurmd (`slurmd -N nodeK`). The
#       namespaces get no other route: their traffic stays on the bridge. A second start
#       while a cluster runs from $HPCQNN_SLURM_DIR is an error (what a crashed one left is
#       removed first).
#   slurm/local_cluster.sh status     daemons (and nodes), sinfo, squeue; exit 1 if one is down
#   slurm/local_cluster.sh stop       cancel the jobs, stop every process this script started (by
#                                     PID; for namespace nodes every process inside them), remove
#                                     the namespaces, links, mounts and files it made
#   slurm/local_cluster.sh env        print `export SLURM_CONF=...` (eval "$(slurm/local_cluster.sh env)")
#   slurm/local_cluster.sh nodes      one line per node: NAME ADDRESS NETNS ("-" for the host node)
#   slurm/local_cluster.sh exec NODE COMMAND...   run COMMAND on NODE (its network, hostname and
#                                     /etc/hosts); $HPCQNN_SLURM_DIR/rsh is the same as a launcher
#                                     for MPICH's mpiexec (-launcher rsh -launcher-exec ...)
#   slurm/local_cluster.sh kill-node NODE    a node failure: SIGKILL every process of NODE
#                                     (its slurmd, job steps, MPI ranks); its namespace stays
#   slurm/local_cluster.sh start-node NODE   start NODE's slurmd again, wait until it is idle
#
# Everything lives in $HPCQNN_SLURM_DIR (default /tmp/hpcqnn-slurm): slurm.conf, cgroup.conf,
# controller state, slurmd spool and logs (per node under nodes/NAME/), PID files, the record
# of what was made (created). The munge key and socket are the system's (/etc/munge/munge.key,
# /run/munge), shared with the namespaces through the filesystem, so any Slurm client on the
# machine can talk to the cluster. Client commands need SLURM_CONF=$HPCQNN_SLURM_DIR/slurm.conf
# (see `env`). Ports: $HPCQNN_SLURM_CTLD_PORT (6817) and $HPCQNN_SLURM_D_PORT (6818).
# Namespace nodes: $HPCQNN_SLURM_SUBNET (default 10.213.7: 10.213.7.0/24) names the bridge
# (hqnn7br), the host ends of the veth pairs (hqnn7vK) and the namespaces (hqnn7-nodeK); a
# second multi-node cluster next to a running one needs another subnet, directory and ports.
# $HPCQNN_SLURM_START_TIMEOUT (60 s) bounds the wait for the nodes; a start that fails (or is
# interrupted) removes whatever it made.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
STATE=${HPCQNN_SLURM_DIR:-/tmp/hpcqnn-slurm}
CONF=$STATE/slurm.conf
LOG=$STATE/log
CREATED=$STATE/created   # what this cluster made, one "KIND NAME" per line, removed in reverse
CLUSTER=$STATE/cluster.env
HOST=$(hostname -s)
CTLD_PORT=${HPCQNN_SLURM_CTLD_PORT:-6817}
D_PORT=${HPCQNN_SLURM_D_PORT:-6818}
REQUESTED_SUBNET=${HPCQNN_SLURM_SUBNET:-10.213.7}
SUBNET=$REQUESTED_SUBNET  # a running cluster's is in $CLUSTER (load_cluster)
START_TIMEOUT=${HPCQNN_SLURM_START_TIMEOUT:-60}
NODE_MIN_MB=1024   # a namespace node's share of the memory must hold slurmd and a few ranks
MAX_NET_NODES=200  # addresses .11 to .210 of the /24
MUNGE_KEY=/etc/munge/munge.key
MUNGE_SOCKET=/run/munge/munge.socket.2
export SLURM_CONF=$CONF

say() { echo "local_cluster: $*"; }
die() { echo "local_cluster: error: $*" >&2; exit 1; }
usage() {
    echo "usage: $0 {start [--nodes N]|stop|status|env|nodes|exec NODE COMMAND...|kill-node NODE|start-node NODE}" >&2
    exit 2
}

# process PID runs (a zombie, killed but not yet reaped, does not)
pid_running() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $state != Z ]]
}
# the process in PIDFILE runs
alive() { [[ -s $1 ]] && pid_running "$(cat "$1")"; }

# -- the cluster's shape: NODES (1 = this host) and, for namespace nodes, SUBNET ----------------

NODES=1
load_cluster() {
    NODES=1
    if [[ -s $CLUSTER ]]; then
        # shellcheck disable=SC1090
        source "$CLUSTER"
    fi
}

net_id() { echo "${SUBNET##*.}"; }
bridge_name() { echo "hqnn$(net_id)br"; }
node_name() { echo "node$1"; }
node_netns() { echo "hqnn$(net_id)-node$1"; }
node_veth() { echo "hqnn$(net_id)v$1"; }
node_addr() { echo "$SUBNET.$((10 + $1))"; }
node_uts() { echo "$STATE/uts/$(node_name "$1")"; }
node_dir() { echo "$STATE/nodes/$(node_name "$1")"; }
node_names() {
    if (( NODES == 1 )); then echo "$HOST"; return; fi
    local k
    for ((k = 1; k <= NODES; k++)); do node_name "$k"; done
}
# the index k of node NAME (namespace clusters only)
node_index() {
    local name=$1 k
    for ((k = 1; k <= NODES; k++)); do
        [[ $(node_name "$k") == "$name" ]] && { echo "$k"; return 0; }
    done
    return 1
}
slurmd_pidfile() {
    if (( NODES == 1 )); then echo "$STATE/slurmd.pid"; else echo "$(node_dir "$1")/slurmd.pid"; fi
}

record() { echo "$1 $2" >>"$CREATED"; }

# -- input checks -------------------------------------------------------------------------------

mem_total_mb() { awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo; }

check_nodes() {
    local n=$1 total usable most
    if ! [[ $n =~ ^[0-9]+$ ]] || (( 10#$n < 1 )); then
        die "--nodes must be a positive integer (1: this host is the node; 2 or more: network-namespace nodes), got '$n'"
    fi
    n=$((10#$n))
    (( n == 1 )) && return 0
    total=$(mem_total_mb)
    usable=$((total * 9 / 10))
    most=$((usable / NODE_MIN_MB))
    (( most > MAX_NET_NODES )) && most=$MAX_NET_NODES
    if (( n > most )); then
        die "--nodes $n: this machine holds at most $most nodes (each namespace node gets an equal share of 90 % of the ${total} MiB of memory and needs at least $NODE_MIN_MB MiB; the /24 subnet has room for $MAX_NET_NODES)"
    fi
}

ip_int() {
    local a b c d
    IFS=. read -r a b c d <<<"$1"
    echo $(((a << 24) | (b << 16) | (c << 8) | d))
}

check_network() {
    local o1 o2 o3 rest
    IFS=. read -r o1 o2 o3 rest <<<"$SUBNET"
    if [[ -n $rest || ! $o1$o2$o3 =~ ^[0-9]+$ ]] || (( o1 > 255 || o2 > 255 || o3 > 255 )) \
        || ! (( o1 == 10 || (o1 == 172 && o2 >= 16 && o2 <= 31) || (o1 == 192 && o2 == 168) )); then
        die "HPCQNN_SLURM_SUBNET must be the first three numbers of a private /24 (10.x.y, 172.16-31.y or 192.168.y), got '$SUBNET'"
    fi
    command -v ip >/dev/null || die "namespace nodes need iproute2 (ip)"
    if ! command -v nsenter >/dev/null || ! command -v unshare >/dev/null; then
        die "namespace nodes need nsenter and unshare (util-linux)"
    fi
    ip netns list >/dev/null 2>&1 || die "namespace nodes need 'ip netns' (network namespaces), which failed here"
    # the /24 must not overlap any address or route of this machine
    local ours lo hi prefix what net len first last
    ours=$(ip_int "$SUBNET.0")
    lo=$ours hi=$((ours + 255))
    while read -r prefix what; do
        [[ $prefix == */* ]] || prefix=$prefix/32
        net=${prefix%/*} len=${prefix#*/}
        [[ $net =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || continue
        (( len == 0 )) && continue  # a default route
        first=$(( $(ip_int "$net") & ~((1 << (32 - len)) - 1) & 0xffffffff ))
        last=$((first + (1 << (32 - len)) - 1))
        if (( first <= hi && last >= lo )); then
            die "HPCQNN_SLURM_SUBNET $SUBNET.0/24 overlaps $prefix ($what) of this machine; choose another, e.g. HPCQNN_SLURM_SUBNET=10.213.$(( (o3 + 1) % 256 ))"
        fi
    done < <(ip -4 -o addr show | awk '{print $4, "address of " $2}'
             ip -4 route show table all | awk '$1 !~ /^(default|local|broadcast|unreachable|blackhole|prohibit|throw|multicast)$/ {print $1, "route: " $0}')
    local k name
    if ip link show "$(bridge_name)" >/dev/null 2>&1; then
        die "a link named $(bridge_name) exists already (another cluster on subnet $SUBNET?); stop it or choose another HPCQNN_SLURM_SUBNET"
    fi
    for ((k = 1; k <= NODES; k++)); do
        name=$(node_netns "$k")
        if ip netns list | awk '{print $1}' | grep -qx "$name"; then
            die "network namespace $name exists already (another cluster on subnet $SUBNET?); stop it or choose another HPCQNN_SLURM_SUBNET"
        fi
        if ip link show "$(node_veth "$k")" >/dev/null 2>&1; then
            die "a link named $(node_veth "$k") exists already; remove it or choose another HPCQNN_SLURM_SUBNET"
        fi
    done
}

check_ports() {
    local port what
    for port in "$CTLD_PORT" "$D_PORT"; do
        if ! [[ $port =~ ^[0-9]+$ ]] || (( port < 1 || port > 65535 )); then
            die "HPCQNN_SLURM_CTLD_PORT and HPCQNN_SLURM_D_PORT must be TCP ports (1-65535), got '$port'"
        fi
    done
    (( CTLD_PORT != D_PORT )) || die "HPCQNN_SLURM_CTLD_PORT and HPCQNN_SLURM_D_PORT must differ (both $CTLD_PORT)"
    command -v ss >/dev/null || return 0
    # slurmctld listens here; with one node slurmd too (namespace nodes' slurmd listen in their namespaces)
    local ports=("$CTLD_PORT")
    (( NODES == 1 )) && ports+=("$D_PORT")
    for port in "${ports[@]}"; do
        what=$(ss -Hltnp "sport = :$port" 2>/dev/null | head -1)
        if [[ -n $what ]]; then
            die "TCP port $port is in use ($(grep -o 'users:.*' <<<"$what" || echo "$what")): another Slurm cluster? stop it, or set HPCQNN_SLURM_CTLD_PORT / HPCQNN_SLURM_D_PORT"
        fi
    done
}

# -- packages, configuration, munge -------------------------------------------------------------

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
    local cpus mem_mb ctld_addr kill_wait slurmd_timeout k
    cpus=$(nproc)
    # Slurm drains a node whose RealMemory exceeds what slurmd finds: stay a little below it.
    # Namespace nodes all find this machine's memory; each is given an equal share.
    mem_mb=$(( $(mem_total_mb) * 95 / 100 / NODES ))
    mkdir -p "$STATE/state" "$LOG"
    if (( NODES == 1 )); then
        ctld_addr=127.0.0.1 kill_wait=20 slurmd_timeout=60
        mkdir -p "$STATE/spool"
    else
        ctld_addr=$SUBNET.1 kill_wait=10 slurmd_timeout=10
        # slurmd makes its spool directory
        for ((k = 1; k <= NODES; k++)); do mkdir -p "$(node_dir "$k")"; done
    fi
    {
        cat <<CONF
# Written by slurm/local_cluster.sh: a $NODES-node cluster on one machine for trying hpcqnn's sbatch scripts.
ClusterName=hpcqnn-local
SlurmctldHost=$HOST($ctld_addr)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$D_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Job ids of their own (not 1, 2, ... again in every fresh cluster): MPICH names a node's shared
# memory after JOBID.STEP, and a job killed on this machine leaves it in /dev/shm
FirstJobId=$(( $(date +%s) % 60000000 + 1 ))
# A requeued batch job may start again only after the credential lifetime (default 120 s)
AuthInfo=cred_expire=5
# schedule pending (e.g. requeued) jobs every few seconds, not every minute
SchedulerParameters=sched_interval=2,bf_interval=2
MailProg=/bin/true
StateSaveLocation=$STATE/state
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmctldLogFile=$LOG/slurmctld.log
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
KillWait=$kill_wait
# finished jobs stay visible to scontrol for at least 5 s (there is no accounting database);
# below 6 s, sbatch --wait keeps polling every 2 s instead of backing off to 32 s
MinJobAge=5
InactiveLimit=0
SlurmctldTimeout=60
# a node whose slurmd does not answer for this long is DOWN; its jobs are requeued
SlurmdTimeout=$slurmd_timeout
CONF
        if (( NODES == 1 )); then
            cat <<CONF
SlurmdSpoolDir=$STATE/spool
SlurmdPidFile=$STATE/slurmd.pid
SlurmdLogFile=$LOG/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
        else
            cat <<CONF
# one slurmd per network namespace: %n is its node name
SlurmdSpoolDir=$STATE/nodes/%n/spool
SlurmdPidFile=$STATE/nodes/%n/slurmd.pid
SlurmdLogFile=$STATE/nodes/%n/slurmd.log
# a slurmd that died stays unreachable: fail its messages quickly
MessageTimeout=5
CONF
            for ((k = 1; k <= NODES; k++)); do
                echo "NodeName=$(node_name "$k") NodeAddr=$(node_addr "$k") CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
            done
            echo "PartitionName=debug Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES"
        fi
    } >"$CONF"
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

# -- the namespace nodes' network ---------------------------------------------------------------

# The bridge (with the host's address .1), and per node: a network namespace, a veth pair (eth0
# inside), the address .(10+k)/24, a persistent UTS namespace with the node's hostname, and the
# node's hosts file (bind-mounted over /etc/hosts in a private mount namespace by on_node).
make_network() {
    local br k ns name
    br=$(bridge_name)
    # bridged frames skip the host's iptables (a FORWARD policy of DROP must not cut the nodes off)
    ip link add "$br" type bridge nf_call_iptables 0 2>/dev/null || ip link add "$br" type bridge
    record link "$br"
    ip addr add "$SUBNET.1/24" dev "$br"
    ip link set "$br" up
    mkdir -p "$STATE/uts"
    for ((k = 1; k <= NODES; k++)); do
        ns=$(node_netns "$k") name=$(node_name "$k")
        ip netns add "$ns"
        record netns "$ns"
        ip link add "$(node_veth "$k")" type veth peer name eth0 netns "$ns"
        record link "$(node_veth "$k")"
        ip link set "$(node_veth "$k")" master "$br" up
        ip -n "$ns" addr add "$(node_addr "$k")/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        touch "$(node_uts "$k")"
        record uts "$(node_uts "$k")"
        unshare --uts="$(node_uts "$k")" hostname "$name"
        mkdir -p "$(node_dir "$k")"
        write_hosts >"$(node_dir "$k")/hosts"
    done
    cat >"$STATE/rsh" <<RSH
#!/bin/sh
# MPICH hydra's launcher for the nodes of the cluster in $STATE (no ssh):
#   mpiexec -launcher rsh -launcher-exec $STATE/rsh -hosts node1:2,node2:2 -n 4 COMMAND
# hydra runs: rsh [options] HOST PROXY-COMMAND
while [ \$# -gt 0 ]; do case \$1 in -*) shift ;; *) break ;; esac; done
host=\$1; shift
exec env HPCQNN_SLURM_DIR='$STATE' '$SELF' exec "\$host" /bin/sh -c "\$*"
RSH
    chmod +x "$STATE/rsh"
}

# every node's name, and this host's name as the address the nodes reach it at (the bridge)
write_hosts() {
    local k
    echo "# Written by slurm/local_cluster.sh for the nodes of $STATE"
    echo "127.0.0.1 localhost"
    echo "$SUBNET.1 $HOST"
    for ((k = 1; k <= NODES; k++)); do echo "$(node_addr "$k") $(node_name "$k")"; done
    echo "# this machine's /etc/hosts:"
    grep -v -w -e localhost -e "$HOST" /etc/hosts || true
}

# runs COMMAND on node k: in its network and UTS namespaces and a mount namespace of its own
# whose /etc/hosts is the node's (the rest of the filesystem, /sys and its cgroups included, is
# this machine's: `ip netns exec` would remount /sys without the cgroups slurmd needs); execs
on_node() {
    local k=$1
    shift
    # shellcheck disable=SC2016
    exec nsenter --net="/run/netns/$(node_netns "$k")" --uts="$(node_uts "$k")" -- \
        unshare --mount --propagation slave -- \
        /bin/sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$(node_dir "$k")/hosts" "$@"
}

# PIDs of every process in node k's network namespace
node_pids() { ip netns pids "$(node_netns "$1")" 2>/dev/null || true; }

# -- daemons ------------------------------------------------------------------------------------

node_state() { sinfo -h -N -n "$1" -o %t 2>/dev/null | head -1; }

# when NODE's slurmd last registered with the controller (epoch seconds; 0 if unknown)
slurmd_registered() {
    local when
    when=$(scontrol show node "$1" -o 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)
    date -d "$when" +%s 2>/dev/null || echo 0
}

start_slurmd() {  # node index (0 for the host node)
    local k=$1
    if (( NODES == 1 )); then
        slurmd -f "$CONF" -N "$HOST" || die "slurmd failed to start: $(tail -5 "$LOG/slurmd.log" 2>/dev/null)"
    else
        local name
        name=$(node_name "$k")
        ( on_node "$k" slurmd -f "$CONF" -N "$name" ) \
            || die "slurmd of $name failed to start: $(tail -5 "$(node_dir "$k")/slurmd.log" 2>/dev/null)"
    fi
}

# waits until every node in NAMES is idle and registered since SINCE; reports and fails otherwise
wait_idle() {
    local since=$1
    shift
    local deadline=$((SECONDS + START_TIMEOUT)) name state pending
    while true; do
        pending=()
        for name in "$@"; do
            state=$(node_state "$name")
            # the saved node state may say idle before this slurmd has registered
            if ! [[ $state == idle* ]] || (( $(slurmd_registered "$name") < since - 1 )); then
                pending+=("$name=${state:-unknown}")
            fi
        done
        [[ ${#pending[@]} -eq 0 ]] && return 0
        (( SECONDS >= deadline )) && break
        sleep 0.2
    done
    echo "local_cluster: after ${START_TIMEOUT} s (HPCQNN_SLURM_START_TIMEOUT) not idle: ${pending[*]}" >&2
    for name in "$@"; do
        scontrol show node "$name" 2>&1 | grep -i -E 'NodeName|state|reason' >&2 || true
    done
    echo "--- slurmctld.log" >&2; tail -15 "$LOG/slurmctld.log" >&2 2>/dev/null || true
    return 1
}

# -- start --------------------------------------------------------------------------------------

# what runs (or was left behind) in $STATE: "running", "leftovers" or ""
cluster_state() {
    load_cluster
    if alive "$STATE/slurmctld.pid"; then echo running; return; fi
    local name
    for name in $(node_names); do
        if alive "$(slurmd_pidfile "$(node_index "$name" || echo 0)")"; then echo running; return; fi
    done
    [[ -s $CREATED || -s $STATE/munged.pid ]] && echo leftovers
    return 0
}

start() {
    local nodes=1
    while [[ $# -gt 0 ]]; do
        case $1 in
            --nodes) [[ $# -ge 2 ]] || die "--nodes needs a value (a positive integer)"; nodes=$2; shift 2 ;;
            --nodes=*) nodes=${1#--nodes=}; shift ;;
            *) die "start: unknown argument '$1' (expected: start [--nodes N])" ;;
        esac
    done
    check_nodes "$nodes"
    nodes=$((10#$nodes))
    [[ $START_TIMEOUT =~ ^[0-9]+$ ]] || die "HPCQNN_SLURM_START_TIMEOUT must be whole seconds, got '$START_TIMEOUT'"
    [[ $(id -u) -eq 0 ]] || die "not root: the cluster's daemons (and namespace nodes) need root"
    mkdir -p "$STATE"
    load_cluster  # the running cluster's shape, for the message
    case $(cluster_state) in
        running)
            die "a cluster is already running from $STATE ($NODES node(s): $(node_names | paste -sd, -)); stop it first ($0 stop), or start a second one with its own HPCQNN_SLURM_DIR, ports and subnet" ;;
        leftovers)
            say "removing what a previous cluster in $STATE left behind"
            teardown quiet ;;
    esac
    NODES=$nodes SUBNET=$REQUESTED_SUBNET  # not the recorded shape of a cluster that was there
    check_ports
    (( NODES == 1 )) || check_network
    install_packages
    # from here on, a failure (or Ctrl-C, or SIGTERM) removes whatever this start made
    trap 'rc=$?; if (( rc != 0 )); then echo "local_cluster: start failed: removing what it made" >&2; teardown quiet; fi' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    : >"$CREATED"
    printf 'NODES=%s\nSUBNET=%s\n' "$NODES" "$SUBNET" >"$CLUSTER"
    write_config
    start_munge
    (( NODES == 1 )) || make_network
    slurmctld -f "$CONF" || die "slurmctld failed to start: $(tail -5 "$LOG/slurmctld.log" 2>/dev/null)"
    local since names k
    since=$(date +%s)
    if (( NODES == 1 )); then
        start_slurmd 0
    else
        for ((k = 1; k <= NODES; k++)); do start_slurmd "$k"; done
    fi
    mapfile -t names < <(node_names)
    wait_idle "$since" "${names[@]}" || exit 1
    trap - EXIT INT TERM
    if (( NODES == 1 )); then
        say "node $HOST idle ($(nproc) CPUs); export SLURM_CONF=$CONF"
    else
        say "$NODES nodes idle: $(for ((k = 1; k <= NODES; k++)); do printf '%s ' "$(node_name "$k")=$(node_addr "$k")"; done)($(nproc) CPUs each; controller $SUBNET.1:$CTLD_PORT); export SLURM_CONF=$CONF"
    fi
}

# -- stop ---------------------------------------------------------------------------------------

stop_pid() {  # PIDFILE NAME QUIET: TERM, then KILL after 5 s
    local pidfile=$1 name=$2 quiet=${3:-} pid
    [[ -s $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if pid_running "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do pid_running "$pid" || break; sleep 0.1; done
        pid_running "$pid" && kill -KILL "$pid" 2>/dev/null
        [[ $quiet == quiet ]] || say "stopped $name ($pid)"
    fi
    rm -f "$pidfile"
}

# other Slurm daemons on this machine (another cluster's): they may need the munged we started
other_slurm_daemons() {
    local pid ours=" "
    while read -r pid; do ours+="$pid "; done < <(cat "$STATE/slurmctld.pid" "$STATE/slurmd.pid" "$STATE"/nodes/*/slurmd.pid 2>/dev/null)
    for pid in $(pgrep -x slurmctld; pgrep -x slurmd); do
        [[ $ours == *" $pid "* ]] || ! pid_running "$pid" || return 0
    done
    return 1
}

teardown() {
    local quiet=${1:-} k name pids kind what
    load_cluster
    if alive "$STATE/slurmctld.pid"; then
        local jobs=()
        mapfile -t jobs < <(squeue -h -o %A 2>/dev/null || true)
        if [[ ${#jobs[@]} -gt 0 ]]; then
            [[ $quiet == quiet ]] || say "cancelling jobs: ${jobs[*]}"
            scancel "${jobs[@]}" 2>/dev/null || true
            for _ in $(seq 60); do [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break; sleep 0.5; done
        fi
    fi
    if (( NODES == 1 )); then
        stop_pid "$STATE/slurmd.pid" slurmd "$quiet"
    else
        for ((k = 1; k <= NODES; k++)); do
            stop_pid "$(slurmd_pidfile "$k")" "slurmd of $(node_name "$k")" "$quiet"
        done
        # whatever else runs inside the nodes (job steps the cancel did not end): by PID
        for ((k = 1; k <= NODES; k++)); do
            mapfile -t pids < <(node_pids "$k")
            [[ ${#pids[@]} -gt 0 ]] || continue
            kill -TERM "${pids[@]}" 2>/dev/null || true
            for _ in $(seq 30); do [[ -z $(node_pids "$k") ]] && break; sleep 0.1; done
            mapfile -t pids < <(node_pids "$k")
            if [[ ${#pids[@]} -gt 0 ]]; then kill -KILL "${pids[@]}" 2>/dev/null || true; fi
            [[ $quiet == quiet ]] || say "stopped the processes left in $(node_name "$k")"
        done
    fi
    stop_pid "$STATE/slurmctld.pid" slurmctld "$quiet"
    if [[ -s $STATE/munged.pid ]] && other_slurm_daemons; then
        [[ $quiet == quiet ]] || say "leaving munged running: other Slurm daemons on this machine use it"
        rm -f "$STATE/munged.pid"
    fi
    stop_pid "$STATE/munged.pid" munged "$quiet"
    # what start made, newest first
    if [[ -s $CREATED ]]; then
        while read -r kind what; do
            case $kind in
                netns) ip netns pids "$what" >/dev/null 2>&1 && { ip netns pids "$what" | xargs -r kill -KILL 2>/dev/null || true; }
                       ip netns del "$what" 2>/dev/null || true ;;
                link) ip link del "$what" 2>/dev/null || true ;;
                uts) umount "$what" 2>/dev/null || true; rm -f "$what" ;;
            esac
            [[ $quiet == quiet ]] || say "removed $kind $what"
        done < <(tac "$CREATED")
    fi
    rm -f "$CREATED" "$CLUSTER" "$STATE/rsh"
}

stop() {
    case $(cluster_state) in
        "") say "nothing running from $STATE" ;;
        *) teardown ;;
    esac
}

# -- status, nodes, exec, node failure ----------------------------------------------------------

status() {
    local rc=0 k
    load_cluster
    if alive "$STATE/munged.pid"; then
        echo "munged: running (pid $(cat "$STATE/munged.pid"))"
    else
        echo "munged: not running (from $STATE)"
        munge_ok && echo "  (a munged started elsewhere answers)"
    fi
    if alive "$STATE/slurmctld.pid"; then
        echo "slurmctld: running (pid $(cat "$STATE/slurmctld.pid"))"
    else
        echo "slurmctld: not running (from $STATE)"
        rc=1
    fi
    if (( NODES == 1 )); then
        if alive "$STATE/slurmd.pid"; then
            echo "slurmd: running (pid $(cat "$STATE/slurmd.pid"))"
        else
            echo "slurmd: not running (from $STATE)"
            rc=1
        fi
    else
        for ((k = 1; k <= NODES; k++)); do
            if alive "$(slurmd_pidfile "$k")"; then
                echo "slurmd $(node_name "$k") ($(node_addr "$k"), netns $(node_netns "$k")): running (pid $(cat "$(slurmd_pidfile "$k")"))"
            else
                echo "slurmd $(node_name "$k") ($(node_addr "$k"), netns $(node_netns "$k")): not running"
                rc=1
            fi
        done
    fi
    if alive "$STATE/slurmctld.pid"; then
        sinfo
        squeue
    fi
    return $rc
}

nodes() {
    load_cluster
    [[ -s $CLUSTER ]] || die "no cluster in $STATE (start one: $0 start [--nodes N])"
    local k
    if (( NODES == 1 )); then
        echo "$HOST 127.0.0.1 -"
    else
        for ((k = 1; k <= NODES; k++)); do echo "$(node_name "$k") $(node_addr "$k") $(node_netns "$k")"; done
    fi
}

# node index of NAME in a running namespace cluster, or a clear error
namespace_node() {
    local name=${1:-}
    load_cluster
    [[ -s $CLUSTER ]] || die "no cluster in $STATE (start one: $0 start --nodes N)"
    [[ -n $name ]] || die "name a node: $(node_names | paste -sd' ' -)"
    if (( NODES == 1 )); then
        die "the cluster in $STATE has one node, this host ($HOST): it has no namespace to enter or kill"
    fi
    node_index "$name" || die "no node '$name' in the cluster of $STATE (nodes: $(node_names | paste -sd' ' -))"
}

exec_on() {
    local k
    k=$(namespace_node "${1:-}")
    shift
    [[ $# -gt 0 ]] || die "exec: give a command to run on $(node_name "$k")"
    on_node "$k" "$@"
}

kill_node() {
    local k pids
    k=$(namespace_node "${1:-}")
    mapfile -t pids < <(node_pids "$k")
    if [[ ${#pids[@]} -eq 0 ]]; then
        say "$(node_name "$k") runs no process"
        return 0
    fi
    kill -KILL "${pids[@]}" 2>/dev/null || true
    rm -f "$(slurmd_pidfile "$k")"
    say "killed $(node_name "$k"): ${#pids[@]} processes (${pids[*]})"
}

start_node() {
    local k since
    k=$(namespace_node "${1:-}")
    alive "$STATE/slurmctld.pid" || die "slurmctld is not running (from $STATE)"
    if alive "$(slurmd_pidfile "$k")"; then
        die "the slurmd of $(node_name "$k") runs already (pid $(cat "$(slurmd_pidfile "$k")"))"
    fi
    since=$(date +%s)
    start_slurmd "$k"
    wait_idle "$since" "$(node_name "$k")" || exit 1
    say "$(node_name "$k") idle again"
}

[[ ${1:-} == start ]] || load_cluster
case ${1:-} in
    start) shift; start "$@" ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    nodes) nodes ;;
    exec) shift; exec_on "$@" ;;
    kill-node) kill_node "${2:-}" ;;
    start-node) start_node "${2:-}" ;;
    *) usage ;;
esac
