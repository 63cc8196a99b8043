#!/usr/bin/env bash
# Durability through the real binary: SIGTERM exits 0 and every write is there after a restart;
# kill -9 right after acknowledged writes loses none of them.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/skerry.sh"
skerry_tmpwork
trap skerry_cleanup EXIT
trap "exit 143" TERM
trap "exit 130" INT

IP="127.62.$(($$ % 250 + 1)).1"

op() {
    skerry_op "$IP" "$1" >/dev/null
    skerry_assert_eq "$SKERRY_STATUS" "${2:-200}" "$1 answered $SKERRY_BODY"
}

count() {
    skerry_op "$IP" '{"operation":"describe_table","database":"dev","table":"dog"}' | skerry_field 'j["record_count"]'
}

# ids_present <from> <to>: fails naming the first id in [from, to] that is missing.
ids_present() {
    local ids
    ids="$(seq -s, "$1" "$2")"
    skerry_op "$IP" '{"operation":"search_by_id","database":"dev","table":"dog","ids":['"$ids"'],"get_attributes":["id","name"]}' >/dev/null
    skerry_assert_eq "$SKERRY_STATUS" 200 "search_by_id after restart: $SKERRY_BODY"
    skerry_field '",".join(str(i) for i in sorted(set(range('"$1"', '"$2"' + 1)) - {r["id"] for r in j}))' <<<"$SKERRY_BODY" >"$SKERRY_WORK/missing"
    skerry_assert_eq "$(cat "$SKERRY_WORK/missing")" "" "acknowledged ids missing after restart"
}

echo "== start $IP"
skerry_start n "$IP"
op '{"operation":"create_database","database":"dev"}'
op '{"operation":"create_table","database":"dev","table":"dog","primary_key":"id"}'

echo "== 100 acknowledged writes, SIGTERM, exit code 0, restart"
for i in $(seq 1 100); do
    op '{"operation":"insert","database":"dev","table":"dog","records":[{"id":'"$i"',"name":"dog-'"$i"'"}]}'
done
skerry_stop n
skerry_assert_eq "$SKERRY_EXIT_CODE" 0 "exit code after SIGTERM"
skerry_restart n
ids_present 1 100
skerry_assert_eq "$(count)" 100 "record_count after a clean restart"

echo "== a batch insert, an update and a delete, then kill -9 at once, restart"
op '{"operation":"insert","database":"dev","table":"dog","records":['"$(for i in $(seq 101 300); do printf '{"id":%d,"name":"dog-%d"},' "$i" "$i"; done | sed 's/,$//')"']}'
op '{"operation":"update","database":"dev","table":"dog","records":[{"id":1,"name":"updated-before-kill"}]}'
op '{"operation":"delete","database":"dev","table":"dog","ids":[2]}'
for i in $(seq 301 350); do
    op '{"operation":"insert","database":"dev","table":"dog","records":[{"id":'"$i"',"name":"dog-'"$i"'"}]}'
done
skerry_kill9 n
skerry_assert_eq "$(cat "$SKERRY_WORK/n/exit_code")" 137 "exit status of the killed node (128 + SIGKILL)"
skerry_restart n
ids_present 3 350
skerry_assert_eq "$(count)" 349 "record_count after kill -9 (350 inserted, 1 deleted)"
skerry_op "$IP" '{"operation":"search_by_id","database":"dev","table":"dog","ids":[1,2],"get_attributes":["id","name"]}' >/dev/null
skerry_assert_eq "$SKERRY_BODY" '[{"id":1,"name":"updated-before-kill"}]' "the update survives and the deleted record stays deleted"

echo "== kill -9 during a stream of writes: every acknowledged one survives"
acked="$SKERRY_WORK/acked"
: >"$acked"
(
    set +e
    for i in $(seq 1001 3000); do
        skerry_op "$IP" '{"operation":"insert","database":"dev","table":"dog","records":[{"id":'"$i"',"name":"stream"}]}' >/dev/null
        [[ "$SKERRY_STATUS" == 200 ]] || break # the node is gone
        echo "$i" >>"$acked"
    done
) &
writer=$!
acked_at_least() { (($(wc -l <"$acked") >= $1)); }
skerry_wait 30 acked_at_least 50
skerry_kill9 n
wait "$writer" || true
n_acked="$(wc -l <"$acked")"
echo "   $n_acked writes acknowledged before the kill"
skerry_assert "some writes were acknowledged before the kill" test "$n_acked" -ge 50
skerry_restart n
ids_present 1001 "$(tail -n 1 "$acked")"

echo "== the store still takes writes, and SIGTERM still exits 0"
op '{"operation":"insert","database":"dev","table":"dog","records":[{"id":5000,"name":"after-all"}]}'
skerry_stop n
echo "PASS restart_and_kill9"
