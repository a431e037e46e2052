#!/usr/bin/env bash
# cluster.sh: run the 3-node local JetStream cluster of deploy/nats/nats-{1,2,3}.conf.
#
# For trying R3 streams on one machine and for integration tests (kill a node, watch
# concierge carry on). Not for production: see deploy/nats/README.md for that.
#
# Usage:
#   cluster.sh start            start the nodes that are not running, wait until ready
#   cluster.sh stop             stop all nodes (SIGTERM); data and logs are kept
#   cluster.sh stop-node N      stop node N (1..3) and wait until it has exited
#   cluster.sh start-node N     start node N and wait until it is ready
#   cluster.sh status           one line per node; exit 0 only if all three are up
#   cluster.sh url [N]          print the client URL of node N (default 1)
#   cluster.sh dir              print the cluster directory
#   cluster.sh destroy          stop all nodes, delete their data and logs (and the
#                               directory itself if this script created it)
#
# "Ready" means: the process is alive, its client port accepts connections, and its log
# (the part written since this start) shows a JetStream metadata leader, i.e. the node
# has joined a cluster with a quorum. A node started while the two others are down has no
# quorum and is reported as not ready when the wait times out.
#
# Environment:
#   CLUSTER_DIR          where node data (nats-N/), logs (nats-N.log) and pid files live.
#                        Default: the directory recorded in the state file, else a new
#                        `mktemp -d` directory (recorded in the state file by `start`).
#   NATS_CLUSTER_STATE   the state file (default ${TMPDIR:-/tmp}/concierge-nats-cluster.<uid>)
#   NATS_CLUSTER_WAIT    seconds to wait for readiness / exit (default 30)
#   NATS_SERVER          the nats-server binary (default: from PATH, else /usr/sbin/nats-server)
# Do not name variables CONCIERGE_*: concierge reads every CONCIERGE_<SECTION>_<KEY> as a
# config key and refuses unknown ones, so they would break a concierge run in the same shell.
#
# Ports are fixed by the config files (clients 14222-14224, routes 16222-16224), so one
# such cluster runs per machine at a time.
#
# Example (integration test):
#   deploy/nats/cluster.sh start
#   NATS_URL=$(deploy/nats/cluster.sh url 1) concierge run ...
#   deploy/nats/cluster.sh stop-node 2 ; ... ; deploy/nats/cluster.sh start-node 2
#   deploy/nats/cluster.sh destroy

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${NATS_CLUSTER_STATE:-${TMPDIR:-/tmp}/concierge-nats-cluster.$(id -u)}
WAIT=${NATS_CLUSTER_WAIT:-30}
NODES=(1 2 3)

die() { echo "cluster.sh: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*"; }

nats_server() {
    if [[ -n ${NATS_SERVER:-} ]]; then echo "$NATS_SERVER"; return; fi
    command -v nats-server 2>/dev/null && return
    [[ -x /usr/sbin/nats-server ]] && { echo /usr/sbin/nats-server; return; }
    die "nats-server not found: install it (Debian: apt-get install nats-server) or set NATS_SERVER"
}

client_port() { echo $((14221 + $1)); }
route_port() { echo $((16221 + $1)); }

check_node() {
    [[ $1 =~ ^[123]$ ]] || die "node must be 1, 2 or 3 (got '${1:-}')"
}

# The state file holds two lines, CLUSTER_DIR=... and CREATED=0|1. It is parsed, never sourced.
read_state() {
    local key value
    STATE_DIR="" STATE_CREATED=0
    [[ -f $STATE ]] || return 0
    while IFS='=' read -r key value; do
        case $key in
            CLUSTER_DIR) STATE_DIR=$value ;;
            CREATED) STATE_CREATED=$value ;;
        esac
    done <"$STATE"
}

write_state() {
    printf 'CLUSTER_DIR=%s\nCREATED=%s\n' "$1" "$2" >"$STATE.tmp"
    mv "$STATE.tmp" "$STATE"
}

# Sets DIR for commands that need an existing cluster directory.
use_dir() {
    read_state
    DIR=${CLUSTER_DIR:-$STATE_DIR}
    [[ -n $DIR ]] || die "no cluster directory: set CLUSTER_DIR or run 'cluster.sh start' first"
    [[ -d $DIR ]] || die "cluster directory $DIR does not exist"
}

# Sets DIR for `start`/`start-node`, creating and recording it when needed.
make_dir() {
    read_state
    if [[ -n ${CLUSTER_DIR:-} ]]; then
        DIR=$CLUSTER_DIR
        mkdir -p "$DIR"
        DIR=$(cd "$DIR" && pwd)
        local created=0
        [[ $DIR == "$STATE_DIR" ]] && created=$STATE_CREATED
        write_state "$DIR" "$created"
    elif [[ -n $STATE_DIR && -d $STATE_DIR ]]; then
        DIR=$STATE_DIR
    else
        DIR=$(mktemp -d "${TMPDIR:-/tmp}/concierge-nats.XXXXXX")
        write_state "$DIR" 1
        say "cluster directory $DIR (recorded in $STATE)"
    fi
}

# The pid of node N if it is running (and really is a nats-server), else nothing.
node_pid() {
    local pidfile="$DIR/nats-$1.pid" pid
    [[ -f $pidfile ]] || return 0
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    # Guard against a recycled pid: only ever signal a nats-server.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q nats-server || return 0
    echo "$pid"
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

log_size() {
    if [[ -f $1 ]]; then stat -c %s "$1"; else echo 0; fi
}

# Does node N's log, from byte offset OFF on, show a JetStream metadata leader?
# (The leader logs "Self is new JetStream cluster metadata leader", the others
# "JetStream cluster new metadata leader: nats-1/concierge".)
has_leader_since() {
    local log="$DIR/nats-$1.log"
    [[ -f $log ]] && tail -c +"$(($2 + 1))" "$log" | grep -q "metadata leader"
}

start_node() {
    local n=$1 bin pid off port
    bin=$(nats_server)
    if [[ -n $(node_pid "$n") ]]; then
        say "node $n already running (pid $(node_pid "$n"))"
        return 0
    fi
    for port in "$(client_port "$n")" "$(route_port "$n")"; do
        port_open "$port" && die "port $port is already in use (another nats-server? check 'ss -ltnp')"
    done
    mkdir -p "$DIR/nats-$n"
    off=$(log_size "$DIR/nats-$n.log")
    echo "$off" >"$DIR/nats-$n.logoffset"
    # setsid: the server outlives this script and its terminal/process group.
    env "NATS_STORE_$n=$DIR/nats-$n" setsid "$bin" -c "$HERE/nats-$n.conf" \
        -l "$DIR/nats-$n.log" -P "$DIR/nats-$n.pid" \
        </dev/null >>"$DIR/nats-$n.out" 2>&1 &
    pid=$!
    echo "$pid" >"$DIR/nats-$n.pid"
    say "node $n started (pid $pid, client port $(client_port "$n"), store $DIR/nats-$n)"
}

# Wait until node N is ready (see the header); fail with its log tail otherwise.
wait_ready() {
    local n=$1 off deadline
    off=$(cat "$DIR/nats-$n.logoffset" 2>/dev/null || echo 0)
    deadline=$((SECONDS + WAIT))
    while ((SECONDS < deadline)); do
        if [[ -z $(node_pid "$n") ]]; then
            echo "cluster.sh: node $n exited during start-up:" >&2
            tail -n 5 "$DIR/nats-$n.out" "$DIR/nats-$n.log" >&2 2>/dev/null || true
            return 1
        fi
        if port_open "$(client_port "$n")" && has_leader_since "$n" "$off"; then
            say "node $n ready: $(tail -c +"$((off + 1))" "$DIR/nats-$n.log" | grep "metadata leader" | tail -n 1 | sed 's/^.*\] //')"
            return 0
        fi
        sleep 0.2
    done
    echo "cluster.sh: node $n not ready after ${WAIT}s (no quorum? are the other nodes up?):" >&2
    tail -n 5 "$DIR/nats-$n.log" >&2 2>/dev/null || true
    return 1
}

stop_node() {
    local n=$1 pid deadline
    pid=$(node_pid "$n")
    if [[ -z $pid ]]; then
        say "node $n not running"
        rm -f "$DIR/nats-$n.pid"
        return 0
    fi
    kill -TERM "$pid"
    deadline=$((SECONDS + WAIT))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "cluster.sh: node $n (pid $pid) ignored SIGTERM for ${WAIT}s: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/nats-$n.pid"
    say "node $n stopped (pid $pid)"
}

status() {
    local n pid up=0 leader
    echo "cluster directory: $DIR"
    for n in "${NODES[@]}"; do
        pid=$(node_pid "$n")
        leader=$(grep -h "metadata leader" "$DIR/nats-$n.log" 2>/dev/null | tail -n 1 | sed 's/^.*\] //' || true)
        if [[ -n $pid ]] && port_open "$(client_port "$n")"; then
            up=$((up + 1))
            echo "node $n: up   pid $pid  nats://127.0.0.1:$(client_port "$n")  last seen: ${leader:-no metadata leader yet}"
        elif [[ -n $pid ]]; then
            echo "node $n: starting (pid $pid, port $(client_port "$n") not open yet)"
        else
            echo "node $n: down"
        fi
    done
    echo "$up/3 nodes up"
    ((up == 3))
}

cmd=${1:-}
case $cmd in
    start)
        make_dir
        for n in "${NODES[@]}"; do start_node "$n"; done
        for n in "${NODES[@]}"; do wait_ready "$n"; done
        say "cluster ready; NATS_URL=nats://127.0.0.1:$(client_port 1)"
        ;;
    start-node)
        check_node "${2:-}"
        make_dir
        start_node "$2"
        wait_ready "$2"
        ;;
    stop-node)
        check_node "${2:-}"
        use_dir
        stop_node "$2"
        ;;
    stop)
        use_dir
        for n in "${NODES[@]}"; do stop_node "$n"; done
        say "data and logs kept in $DIR ('cluster.sh destroy' removes them)"
        ;;
    status)
        use_dir
        status
        ;;
    url)
        n=${2:-1}
        check_node "$n"
        echo "nats://127.0.0.1:$(client_port "$n")"
        ;;
    dir)
        use_dir
        echo "$DIR"
        ;;
    destroy)
        use_dir
        for n in "${NODES[@]}"; do stop_node "$n"; done
        for n in "${NODES[@]}"; do
            rm -rf "${DIR:?}/nats-$n"
            rm -f "$DIR/nats-$n".{log,out,pid,logoffset}
        done
        read_state
        if [[ $DIR == "$STATE_DIR" && $STATE_CREATED == 1 ]]; then
            rmdir "$DIR" 2>/dev/null || say "kept $DIR (it holds other files)"
        fi
        [[ $DIR == "$STATE_DIR" ]] && rm -f "$STATE"
        say "destroyed"
        ;;
    *)
        sed -n '2,/^$/p' "$0" | sed -n 's/^# \{0,1\}//p' >&2
        exit 2
        ;;
esac
