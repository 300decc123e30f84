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
# RAY_API_SERVER_ADDRESS (the dashboard / job API, on the head's loopback only), as shell assignments; `wait`
# prints them and what the cluster's nodes offer (GBVNET_CLUSTER_CPUS, GBVNET_CLUSTER_GPUS: Ray's own totals).
# Security as everywhere in cluster/: token authentication (RAY_AUTH_TOKEN_PATH: an owner-only token file), the
# dashboard on 127.0.0.1. Every port of the node is pinned, none left to Ray's defaults, so several clusters
# (several jobs' nodes) share a node safely: the GCS, dashboard, node manager, object manager and agents on free
# ports picked on the node, the workers on a block of ports of their own (GBVNET_WORKER_PORTS=LOW-HIGH; inside a
# Slurm job, a block of 200 in 10002-19999 chosen by the job id, so two jobs on one node use different blocks).
# Resources: inside a Slurm job (SLURM_JOB_ID set), the CPUs and GPUs of the step (SLURM_CPUS_PER_TASK,
# SLURM_GPUS_ON_NODE; no GPUs when the step has none), never what Ray would detect on the whole node; options
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

# The alive nodes of the cluster whose job API is $1, and the CPUs and GPUs they offer: "NODES CPUS GPUS" ("0 0 0"
# while it does not answer). A call of Ray's state API in Python: it costs a third of the CPU time of the same
# query by `ray list nodes` (1.3 core-seconds instead of 3.2), and this script asks every 0.5 to 2 s.
cluster_state() {
    local out
    out=$(python -c '
import sys
from ray.util.state import list_nodes
nodes = list_nodes(address=sys.argv[1], filters=[("state", "=", "ALIVE")])
print(len(nodes), *("%g" % sum(n.resources_total.get(k, 0) for n in nodes) for k in ("CPU", "GPU")))' "$1" \
        2>/dev/null) || true
    echo "${out:-0 0 0}"
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
resources=() worker_ports=${GBVNET_WORKER_PORTS:-}
if [ -n "${SLURM_JOB_ID:-}" ]; then
    resources+=(--num-cpus "${SLURM_CPUS_PER_TASK:?run each node as an srun step with --cpus-per-task}")
    resources+=(--num-gpus "${SLURM_GPUS_ON_NODE:-0}")
    : "${worker_ports:=$((10002 + SLURM_JOB_ID % 49 * 200))-$((10201 + SLURM_JOB_ID % 49 * 200))}"
fi
[ -n "$worker_ports" ] && resources+=(--min-worker-port "${worker_ports%-*}" --max-worker-port "${worker_ports#*-}")

# `ray start --block` in the background (this script forwards TERM / INT to it). Every port is given, not left
# to Ray, so several Ray instances can share the node; ports are picked anew for each attempt.
start_ray() {
    trap 'stopping=1; kill -TERM "$pid" 2>/dev/null' TERM INT
    ray start --block --node-ip-address "$ip" --temp-dir "$temp_dir" \
        --node-manager-port "$(free_port)" --object-manager-port "$(free_port)" \
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
        until read -r nodes _ <<< "$(cluster_state "http://127.0.0.1:$dashboard")"; [ "$nodes" -ge 1 ]; do
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
    # the totals printed come from the same answer that counted the nodes
    until read -r nodes cpus gpus <<< "$(cluster_state "$RAY_API_SERVER_ADDRESS")"; [ "$nodes" -ge "$1" ]; do
        if [ $SECONDS -gt $deadline ]; then
            echo "$0: fewer than $1 nodes alive after 600 s" >&2
            exit 1
        fi
        sleep 2
    done
    cat "$state/head"
    printf 'GBVNET_CLUSTER_CPUS=%s\nGBVNET_CLUSTER_GPUS=%s\n' "$cpus" "$gpus"
    ;;
*)
    usage
    ;;
esac
