#!/usr/bin/env bash
# The README's curl walk-through, executed for real: every ```sh block between the walkthrough
# markers of README.md runs against a fresh node (http://localhost:9925 replaced by the node's
# address) and its output must equal the block that follows it, with txn_time, timestamps and
# generated UUIDs masked. Then the key facts are asserted once more explicitly.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$REPO/scripts/skerry.sh"
skerry_tmpwork
trap skerry_cleanup EXIT
trap "exit 143" TERM
trap "exit 130" INT

IP="127.60.$(($$ % 250 + 1)).1"
STEPS="$SKERRY_WORK/steps"

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

echo "== extract the walk-through from README.md"
python3 - "$REPO/README.md" "$STEPS" <<'EOF'
import os, re, sys
readme, out = sys.argv[1], sys.argv[2]
text = open(readme).read()
m = re.search(r"<!-- walkthrough:begin.*?-->(.*?)<!-- walkthrough:end -->", text, re.S)
if not m:
    sys.exit("README.md has no <!-- walkthrough:begin --> ... <!-- walkthrough:end --> section")
blocks = re.findall(r"^```(\w*)\n(.*?)^```", m.group(1), re.S | re.M)
os.makedirs(out)
n, i = 0, 0
while i < len(blocks):
    lang, body = blocks[i]
    if lang not in ("sh", "bash"):
        sys.exit("walk-through: a %s block without a command block before it:\n%s" % (lang or "plain", body))
    if "http://localhost:9925" not in body:
        sys.exit("walk-through: a command that does not use http://localhost:9925:\n" + body)
    if i + 1 >= len(blocks) or blocks[i + 1][0] not in ("json", "text"):
        sys.exit("walk-through: no json/text output block after:\n" + body)
    n += 1
    open(os.path.join(out, "%02d.sh" % n), "w").write(body)
    open(os.path.join(out, "%02d.expected" % n), "w").write(blocks[i + 1][1])
    i += 2
if n < 10:
    sys.exit("walk-through: only %d steps found" % n)
print("   %d steps" % n)
EOF

# same <expected file> <actual file>: equal after masking volatile values; prints a diff otherwise.
same() {
    python3 - "$1" "$2" <<'EOF'
import json, re, sys
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
VOLATILE = {"txn_time", "__createdtime__", "__updatedtime__", "last_updated_record", "db_size", "table_size", "db_audit_size"}

def split(text):
    text = text.strip()
    m = re.search(r"\nHTTP (\d{3})$", text)
    status = "200"
    if m:
        status, text = m.group(1), text[: m.start()].strip()
    try:
        return status, mask(json.loads(text))
    except ValueError:
        return status, text

def mask(v):
    if isinstance(v, dict):
        return {k: ("<time>" if k in VOLATILE and isinstance(x, (int, float))
                    else "<digest>" if k == "digest" and isinstance(x, str)  # hashes timestamps too
                    else mask(x)) for k, x in v.items()}
    if isinstance(v, list):
        return [mask(x) for x in v]
    if isinstance(v, str) and UUID.match(v):
        return "<uuid>"
    return v

exp, act = split(open(sys.argv[1]).read()), split(open(sys.argv[2]).read())
if exp != act:
    print("  expected (status %s): %s" % (exp[0], json.dumps(exp[1], sort_keys=True)))
    print("  actual   (status %s): %s" % (act[0], json.dumps(act[1], sort_keys=True)))
    sys.exit(1)
EOF
}

echo "== start a node on $IP (replication off, like the default config)"
skerry_start walk "$IP" 'replication: {}'

echo "== run the steps"
for cmd in "$STEPS"/*.sh; do
    step="$(basename "$cmd" .sh)"
    sed "s#http://localhost:9925#http://$IP:9925#g" "$cmd" >"$STEPS/$step.run"
    bash "$STEPS/$step.run" >"$STEPS/$step.actual" 2>&1 || fail "step $step: the command failed: $(cat "$cmd")"
    if ! same "$STEPS/$step.expected" "$STEPS/$step.actual" >"$STEPS/$step.diff"; then
        echo "step $step of the README walk-through answered differently:" >&2
        cat "$cmd" >&2
        cat "$STEPS/$step.diff" >&2
        fail "README walk-through step $step"
    fi
    printf '   ok %s: %s\n' "$step" "$(grep -o '"operation": *"[a-z_]*"' "$cmd" | head -n 1 || echo "GET /health")"
done

echo "== explicit checks of the walk-through's end state"
skerry_op "$IP" '{"operation":"describe_table","database":"dev","table":"dog"}' >/dev/null
skerry_assert_eq "$SKERRY_STATUS" 200 "describe_table status"
skerry_assert_eq "$(skerry_field 'j["record_count"]' <<<"$SKERRY_BODY")" 2 "record_count: 3 inserted, 1 deleted"

skerry_op "$IP" '{"operation":"search_by_value","database":"dev","table":"dog","attribute":"breed","value":"*","get_attributes":["name"]}' >/dev/null
skerry_assert_eq "$(skerry_field 'sorted(r["name"] for r in j)' <<<"$SKERRY_BODY")" '["Alby", "Harper"]' "search_by_value with * returns every live record"

SKERRY_USER=reader SKERRY_PASS=s3cret skerry_op "$IP" '{"operation":"delete","database":"dev","table":"dog","ids":[1]}' >/dev/null
skerry_assert_eq "$SKERRY_STATUS" 403 "a read-only user deleting: $SKERRY_BODY"
SKERRY_USER=reader SKERRY_PASS=s3cret skerry_op "$IP" '{"operation":"add_user","role":"dog_reader","username":"x","password":"y","active":true}' >/dev/null
skerry_assert_eq "$SKERRY_STATUS" 403 "a non-super_user adding a user: $SKERRY_BODY"
SKERRY_AUTH=none skerry_op "$IP" '{"operation":"search_by_id","database":"dev","table":"dog","ids":[1],"get_attributes":["*"]}' >/dev/null
skerry_assert_eq "$SKERRY_STATUS" 401 "no credentials: $SKERRY_BODY"
skerry_assert_eq "$SKERRY_BODY" '{"error":"Must login"}' "no credentials message"

skerry_op "$IP" '{"operation":"search_by_id","database":"dev","table":"dog","ids":[1],"get_attributes":["age"]}' >/dev/null
skerry_assert_eq "$SKERRY_BODY" '[{"age":6}]' "the reader's failed delete changed nothing; the update is there"

skerry_stop walk
echo "PASS curl_walkthrough"
