#!/usr/bin/env bash
# Start one node of a GBV-Net Ray cluster in the foreground, or wait for a cluster's nodes. One source for
# cluster/slurm/gbvnet.sbatch (one `srun ... start-node.sh` per node) and tests/test_cluster_jobs.py (two nodes
# on one machine), so the test runs exactly these start-up commands.
#
#   start-node.sh head   STATE_DIR [ray start options...]   # writes STATE_DIR/head once the head answers
#   start-node.sh worker STATE_DIR [ray start options...]   # waits for STATE_DIR/head, then joins
#   start-node.sh wait   STATE_DIR N                        # until N nodes are alive; prints the head's settings
#
# STATE_DIR is a folder every node sees (the shared filesystem); STATE_DIR/head holds RAY_ADDRESS (the GCS) and
# RAY_API_SERVER_ADDRESS (the dashboard / job API, on the head's loopback only), as shell assignments.
# Security as everywhere in cluster/: token authentication (RAY_AUTH_TOKEN_PATH: an owner-only token file), the
# dashboard on 127.0.0.1. Ports are free ones picked on each node, so several clusters share a node safely.
# Resources: CPUs from SLURM_CPUS_PER_TASK and GPUs from SLURM_GPUS_ON_NODE (Slurm's allocation) when set; options
# given after STATE_DIR are appended (and win). Environment: GBVNET_NODE_IP (default: the address Ray picks itself),
# GBVNET_RAY_TEMP_DIR (default /tmp/gbvray-$SLURM_JOB_ID-<role>: one per job and node kind).
set -euo pipefail

usage() { echo "usage: $0 head|worker STATE_DIR [ray start options...] | wait STATE_DIR N" >&2; exit 2; }
[ $# -ge 2 ] || usage
role=$1 state=$2
shift 2

export RAY_AUTH_MODE=token
: "${RAY_AUTH_TOKEN_PATH:?set RAY_AUTH_TOKEN_PATH to the cluster token file}"
if [ "$(stat -c %a "$RAY_AUTH_TOKEN_PATH")" != 600 ]; then
    echo "$0: $RAY_AUTH_TOKEN_PATH must be owner-only (chmod 600)" >&2
    exit 2
fi

free_port() { python -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }

# Alive nodes of the cluster whose job API is $1 (0 while it does not answer).
alive_nodes() {
    local n
    n=$(ray list nodes --address "$1" --filter state=ALIVE --format json 2>/dev/null \
        | python -c 'import json, sys; print(len(json.load(sys.stdin)))' 2>/dev/null) || true
    echo "${n:-0}"
}

wait_for_head() {
    for _ in $(seq 1800); do  # 15 min: the head may need all its start-up attempts
        [ -s "$state/head" ] && return 0
        sleep 0.5
    done
    echo "$0: no head in $state/head after 900 s" >&2
    exit 1
}

ip=${GBVNET_NODE_IP:-$(python -c 'import ray.util; print(ray.util.get_node_ip_address())')}
temp_dir=${GBVNET_RAY_TEMP_DIR:-/tmp/gbvray-${SLURM_JOB_ID:-$$}-$role}
resources=()
[ -n "${SLURM_CPUS_PER_TASK:-}" ] && resources+=(--num-cpus "$SLURM_CPUS_PER_TASK")
[ -n "${SLURM_GPUS_ON_NODE:-}" ] && resources+=(--num-gpus "$SLURM_GPUS_ON_NODE")

# `ray start --block` in the background (this script forwards TERM / INT to it). Every agent port is given, not
# left to Ray, so several Ray instances can share the node; ports are picked anew for each attempt.
start_ray() {
    trap 'stopping=1; kill -TERM "$pid" 2>/dev/null' TERM INT
    ray start --block --node-ip-address "$ip" --temp-dir "$temp_dir" \
        --dashboard-agent-listen-port "$(free_port)" --dashboard-agent-grpc-port "$(free_port)" \
        --metrics-export-port "$(free_port)" --runtime-env-agent-port "$(free_port)" \
        --disable-usage-stats "${resources[@]}" "$@" &
    pid=$!
}
pid='' stopping=''


# The raylet gives its agents 15 s to start and aborts otherwise (a busy node, a slow shared filesystem): a node
# that fails within its first 3 minutes is started again, up to 3 times in all.
finish_or_retry() {
    local started=$1 attempt=$2 status=0
    wait "$pid" || status=$?
    while kill -0 "$pid" 2>/dev/null; do  # wait was interrupted by TERM / INT: stop the node, then leave
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" || status=$?
    done
    if [ -n "$stopping" ] || [ "$status" -eq 0 ] || [ $((SECONDS - started)) -gt 180 ] || [ "$attempt" -eq 3 ]; then
        exit "$status"
    fi
    echo "$0: $role failed during start-up (attempt $attempt, status $status); starting it again" >&2
}

case $role in
head)
    for attempt in 1 2 3; do
        rm -f "$state/head"
        started=$SECONDS port=$(free_port) dashboard=$(free_port)
        start_ray --head --port "$port" --dashboard-host 127.0.0.1 --dashboard-port "$dashboard" \
            --ray-client-server-port "$(free_port)" "$@"
        # ready: the head node (its raylet) is alive in the cluster's state
        until [ "$(alive_nodes "http://127.0.0.1:$dashboard")" -ge 1 ]; do
            [ -z "$stopping" ] && kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            printf 'RAY_ADDRESS=%s\nRAY_API_SERVER_ADDRESS=%s\n' "$ip:$port" "http://127.0.0.1:$dashboard" \
                > "$state/head.tmp"
            mv "$state/head.tmp" "$state/head"
        fi
        finish_or_retry "$started" "$attempt"
    done
    ;;
worker)
    for attempt in 1 2 3; do
        wait_for_head  # (again after a failed attempt: the head may have been started again meanwhile)
        # shellcheck source=/dev/null
        . "$state/head"
        export RAY_API_SERVER_ADDRESS
        started=$SECONDS
        start_ray --address "$RAY_ADDRESS" "$@"
        finish_or_retry "$started" "$attempt"
    done
    ;;
wait)
    [ $# -eq 1 ] || usage
    wait_for_head
    # shellcheck source=/dev/null
    . "$state/head"
    deadline=$((SECONDS + 600))
    until [ "$(alive_nodes "$RAY_API_SERVER_ADDRESS")" -ge "$1" ]; do
        if [ $SECONDS -gt $deadline ]; then
            echo "$0: fewer than $1 nodes alive after 600 s" >&2
            exit 1
        fi
        sleep 2
    done
    cat "$state/head"
    ;;
*)
    usage
    ;;
esac
