#!/usr/bin/env bash
# A 3-node Skerry cluster on this machine's loopback addresses, joined into a full mesh: the
# docker-compose example without Docker.
#
#   packaging/cluster3.sh start [DIR]     # nodes on 127.0.77.1-3, data and logs under DIR
#   packaging/cluster3.sh stop [DIR]
#
# SKERRY_BIN names the binary (default: skerry on PATH); SKERRY_NET the first three octets
# (default 127.0.77); ADMIN_PASSWORD the admin password of the three nodes (default change-me).
set -euo pipefail
cmd="${1:-start}"
DIR="${2:-${TMPDIR:-/tmp}/skerry-cluster3}"
BIN="${SKERRY_BIN:-skerry}"
NET="${SKERRY_NET:-127.0.77}"
PASS="${ADMIN_PASSWORD:-change-me}"

op() { # op <ip> <json>: prints the answer, fails on a non-2xx status
    curl -fsS -u "admin:$PASS" -H 'Content-Type: application/json' -d "$2" "http://$1:9925/"
}

wait_for() { # wait_for <seconds> <command...>: polls every 0.2 s
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

case "$cmd" in
start)
    mkdir -p "$DIR"
    for i in 1 2 3; do
        ip="$NET.$i"
        mkdir -p "$DIR/n$i"
        cat >"$DIR/n$i/config.yaml" <<YAML
rootPath: $DIR/n$i/data
operationsApi:
  network:
    port: "$ip:9925"
replication:
  hostname: $ip
  port: "$ip:9933"
logging:
  level: info
YAML
        HDB_ADMIN_USERNAME=admin HDB_ADMIN_PASSWORD="$PASS" \
            "$BIN" --config "$DIR/n$i/config.yaml" >>"$DIR/n$i/node.log" 2>&1 &
        echo $! >"$DIR/n$i/pid"
    done
    for i in 1 2 3; do
        wait_for 30 "$BIN" health --config "$DIR/n$i/config.yaml" || {
            echo "node $NET.$i did not start; see $DIR/n$i/node.log" >&2
            exit 1
        }
    done
    # Two add_node calls on node 1; gossip through hdb_nodes links node 2 and node 3.
    for i in 2 3; do
        op "$NET.1" '{"operation":"add_node","hostname":"'"$NET.$i"'","authorization":{"username":"admin","password":"'"$PASS"'"}}'
        echo
    done
    connected() { # every node sees both others connected on every database
        local i
        for i in 1 2 3; do
            op "$NET.$i" '{"operation":"cluster_status"}' | python3 -c '
import json, sys
j = json.load(sys.stdin)
conns = j["connections"]
ok = len(conns) == 2 and all(s["connected"] for c in conns for s in c["database_sockets"])
sys.exit(0 if ok else 1)' || return 1
        done
    }
    wait_for 60 connected || {
        echo "the mesh did not form; cluster_status of node 1:" >&2
        op "$NET.1" '{"operation":"cluster_status"}' >&2
        exit 1
    }
    echo "3-node mesh up: http://$NET.1:9925/status  (stop: $0 stop $DIR)"
    ;;
stop)
    for i in 1 2 3; do
        [[ -f "$DIR/n$i/pid" ]] && kill -TERM "$(cat "$DIR/n$i/pid")" 2>/dev/null || true
    done
    for i in 1 2 3; do
        [[ -f "$DIR/n$i/pid" ]] || continue
        pid="$(cat "$DIR/n$i/pid")"
        wait_for 30 bash -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
        rm -f "$DIR/n$i/pid"
    done
    echo "stopped"
    ;;
*)
    echo "usage: $0 start|stop [DIR]" >&2
    exit 2
    ;;
esac
