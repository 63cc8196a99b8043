#!/usr/bin/env bash
# Two nodes: add_node with credentials, a write on each node is read on the other,
# cluster_status shows both directions connected, remove_node stops replication. Also: a table
# created (and left empty) before add_node must reach the new member.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/skerry.sh"
skerry_tmpwork
trap skerry_cleanup EXIT
trap "exit 143" TERM
trap "exit 130" INT

NET="127.61.$(($$ % 250 + 1))"
A="$NET.1"
B="$NET.2"

# op <ip> <json> <expected status>: runs the operation, fails unless the status matches.
op() {
    skerry_op "$1" "$2" >/dev/null
    skerry_assert_eq "$SKERRY_STATUS" "$3" "$2 on $1 answered $SKERRY_BODY"
}

# name_on <ip> <id>: prints the name of dev.dog record <id> on that node (empty if absent).
name_on() {
    skerry_op "$1" '{"operation":"search_by_id","database":"dev","table":"dog","ids":['"$2"'],"get_attributes":["name"]}' |
        skerry_field '(j[0]["name"] if j else "") if isinstance(j, list) else ""'
}

has_name() { [[ "$(name_on "$1" "$2")" == "$3" ]]; }

# Status of every database socket of <ip> towards <peer>: "db=connected ..." sorted.
sockets() {
    skerry_op "$1" '{"operation":"cluster_status"}' | skerry_field \
        '" ".join(sorted("%s=%s" % (s["database"], s["connected"]) for c in j["connections"] if c["name"] == "'"$2"'" for s in c["database_sockets"]))'
}

both_connected() {
    local s
    s="$(sockets "$1" "$2")"
    [[ "$s" == *"dev=True"* && "$s" == *"system=True"* && "$s" != *"=False"* ]]
}

echo "== start $A and $B"
skerry_start a "$A"
skerry_start b "$B"

# Checks that fail here are reported at the end, so that the rest (remove_node) still runs.
deferred=()

echo "== before joining: database dev with an empty table dev.early on A"
op "$A" '{"operation":"create_database","database":"dev"}' 200
op "$A" '{"operation":"create_table","database":"dev","table":"early","primary_key":"id"}' 200

echo "== add_node with a wrong password: Harper's 200 with the peer's refusal in the message"
op "$A" '{"operation":"add_node","hostname":"'"$B"'","authorization":{"username":"admin","password":"wrong"}}' 200
msg="$(skerry_field 'j["message"]' <<<"$SKERRY_BODY")"
skerry_assert "add_node with a wrong password should report B's refusal, got: $msg" \
    grep -q "there was an error updating target node.*Login failed" <<<"$msg"

echo "== add_node B on A with the right credentials"
op "$A" '{"operation":"add_node","hostname":"'"$B"'","authorization":{"username":"admin","password":"password"}}' 200
skerry_assert_eq "$(skerry_field 'j["message"]' <<<"$SKERRY_BODY")" "Successfully added '$B' to cluster" "add_node message"

echo "== a table created on A after the join reaches B"
op "$A" '{"operation":"create_table","database":"dev","table":"dog","primary_key":"id"}' 200
skerry_wait 20 skerry_op_ok "$B" '{"operation":"describe_table","database":"dev","table":"dog"}' ||
    { echo "FAIL: dev.dog (created on A after add_node) never appeared on B" >&2; exit 1; }

echo "== write on A, read on B"
op "$A" '{"operation":"insert","database":"dev","table":"dog","records":[{"id":1,"name":"from-a"}]}' 200
skerry_wait 20 has_name "$B" 1 from-a || { echo "FAIL: record 1 written on A never reached B" >&2; exit 1; }

echo "== write on B, read on A"
op "$B" '{"operation":"insert","database":"dev","table":"dog","records":[{"id":2,"name":"from-b"}]}' 200
skerry_wait 20 has_name "$A" 2 from-b || { echo "FAIL: record 2 written on B never reached A" >&2; exit 1; }

echo "== update on B, delete on A"
op "$B" '{"operation":"update","database":"dev","table":"dog","records":[{"id":1,"name":"renamed-on-b"}]}' 200
skerry_wait 20 has_name "$A" 1 renamed-on-b || { echo "FAIL: update on B never reached A" >&2; exit 1; }
op "$A" '{"operation":"delete","database":"dev","table":"dog","ids":[2]}' 200
skerry_wait 20 has_name "$B" 2 "" || { echo "FAIL: delete on A never reached B" >&2; exit 1; }

echo "== cluster_status: connected both ways, on both nodes"
skerry_wait 20 both_connected "$A" "$B" || { echo "FAIL: A does not show B connected: $(sockets "$A" "$B")" >&2; exit 1; }
skerry_wait 20 both_connected "$B" "$A" || { echo "FAIL: B does not show A connected: $(sockets "$B" "$A")" >&2; exit 1; }
skerry_op "$A" '{"operation":"cluster_status"}' >/dev/null
skerry_assert_eq "$(skerry_field 'j["node_name"], j["is_enabled"]' <<<"$SKERRY_BODY")" "[\"$A\", true]" "A's cluster_status node_name/is_enabled"

echo "== the empty table created before add_node reached B too"
if ! skerry_wait 10 skerry_op_ok "$B" '{"operation":"describe_table","database":"dev","table":"early"}'; then
    deferred+=("dev.early, created (empty) on A before add_node, never appeared on B: B has $(skerry_op "$B" '{"operation":"describe_database","database":"dev"}' | skerry_field 'sorted(j)')")
    echo "   FAILED (reported at the end): ${deferred[-1]}" >&2
fi

echo "== remove_node B on A"
op "$A" '{"operation":"remove_node","hostname":"'"$B"'"}' 200
skerry_assert_eq "$(skerry_field 'j["message"]' <<<"$SKERRY_BODY")" "Successfully removed '$B' from cluster" "remove_node message"
no_peer() { [[ "$(skerry_op "$A" '{"operation":"cluster_status"}' | skerry_field 'len(j["connections"])')" == 0 ]]; }
skerry_wait 20 no_peer || { echo "FAIL: A still lists B after remove_node" >&2; exit 1; }

echo "== after remove_node, writes no longer replicate"
op "$B" '{"operation":"insert","database":"dev","table":"dog","records":[{"id":3,"name":"after-remove"}]}' 200
sleep 2
skerry_assert_eq "$(name_on "$A" 3)" "" "a write on B after remove_node reached A"

echo "== both nodes stop cleanly"
skerry_stop a
skerry_stop b
if ((${#deferred[@]})); then
    for m in "${deferred[@]}"; do echo "FAIL: $m" >&2; done
    exit 1
fi
echo "PASS two_node_replication"
