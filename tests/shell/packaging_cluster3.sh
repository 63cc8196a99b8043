#!/usr/bin/env bash
# packaging/cluster3.sh (the docker-compose example without Docker) starts three nodes,
# joins them into a mesh with two add_node calls, and a write on node 3 reaches node 1;
# `skerry health` answers for a running node and fails for a stopped one.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/skerry.sh"
skerry_tmpwork
DIR="$SKERRY_WORK/cluster3"
NET="127.62.$(($$ % 250 + 1))"
export SKERRY_NET="$NET" ADMIN_PASSWORD=pw-cluster3
SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/packaging/cluster3.sh"
cleanup() { "$SCRIPT" stop "$DIR" >/dev/null 2>&1 || true; skerry_cleanup; }
trap cleanup EXIT

"$SCRIPT" start "$DIR"
op() { curl -fsS -u "admin:$ADMIN_PASSWORD" -H 'Content-Type: application/json' -d "$2" "http://$1:9925/"; }
op "$NET.3" '{"operation":"create_table","database":"dev","table":"dog","primary_key":"id"}' >/dev/null
op "$NET.3" '{"operation":"insert","database":"dev","table":"dog","records":[{"id":1,"name":"Penny"}]}' >/dev/null
deadline=$((SECONDS + 30))
until op "$NET.1" '{"operation":"search_by_id","database":"dev","table":"dog","ids":[1],"get_attributes":["name"]}' 2>/dev/null | grep -q Penny; do
    ((SECONDS < deadline)) || { echo "FAIL: node 3's write never reached node 1" >&2; exit 1; }
    sleep 0.2
done
"$SKERRY_BIN" health --config "$DIR/n2/config.yaml"
"$SCRIPT" stop "$DIR"
if "$SKERRY_BIN" health --config "$DIR/n2/config.yaml"; then
    echo "FAIL: skerry health succeeded for a stopped node" >&2
    exit 1
fi
echo "ok"
