#!/usr/bin/env bash
# The command line and the config: --help, --version, unknown and ill-typed keys (in the file and
# from the environment) stop the node with a message naming the key, a relative rootPath is
# resolved against the config file, and OPERATIONSAPI_NETWORK_PORT moves the listener.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$REPO/scripts/skerry.sh"
skerry_tmpwork
BIN="$(skerry_bin)"
W="$SKERRY_WORK"
NET="127.63.$(($$ % 250 + 1))"
node_pid=""
cleanup() {
    local rc=$?
    if [[ -n "$node_pid" ]] && kill -0 "$node_pid" 2>/dev/null; then
        kill -KILL "$node_pid" 2>/dev/null || true
    fi
    (exit "$rc")
    skerry_cleanup
}
trap cleanup EXIT
trap "exit 143" TERM
trap "exit 130" INT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# run_skerry <outfile> [env...] -- [args...]: runs the binary (20 s at most) with admin
# credentials, output in <outfile>; prints the exit code.
run_skerry() {
    local out="$1" envs=()
    shift
    while (($#)) && [[ "$1" != -- ]]; do
        envs+=("$1")
        shift
    done
    shift
    local rc=0
    env HDB_ADMIN_USERNAME=admin HDB_ADMIN_PASSWORD=password "${envs[@]}" \
        timeout 20 "$BIN" "$@" </dev/null >"$out" 2>&1 || rc=$?
    echo "$rc"
}

# config <file> <yaml lines...>: a config binding $NET.1:9925 with its data under $W/data.
config() {
    local f="$1"
    shift
    {
        echo "rootPath: $W/data"
        printf '%s\n' "$@"
    } >"$f"
}

# must_refuse <what> <key> <config file> [env...]: the node exits non-zero at once, names the
# key, and creates no data folder.
must_refuse() {
    local what="$1" key="$2" file="$3" rc
    shift 3
    rm -rf "$W/data"
    rc="$(run_skerry "$W/out" "$@" -- --config "$file")"
    [[ "$rc" != 0 ]] || fail "$what: skerry exited 0 (expected an error); output: $(cat "$W/out")"
    [[ "$rc" != 124 ]] || fail "$what: skerry kept running instead of refusing the config; output: $(cat "$W/out")"
    grep -qF "'$key'" "$W/out" || fail "$what: the message does not name '$key': $(cat "$W/out")"
    [[ ! -e "$W/data" ]] || fail "$what: the node created its data folder although the config is invalid"
    echo "   ok ($what, exit $rc): $(head -n 1 "$W/out")"
}

echo "== --help and --version"
rc="$(run_skerry "$W/out" -- --help)"
[[ "$rc" == 0 ]] || fail "--help exited $rc"
grep -q -- "--config" "$W/out" || fail "--help does not mention --config: $(cat "$W/out")"
rc="$(run_skerry "$W/out" -- -h)"
[[ "$rc" == 0 ]] || fail "-h exited $rc"
version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n 1)"
rc="$(run_skerry "$W/out" -- --version)"
[[ "$rc" == 0 ]] || fail "--version exited $rc"
skerry_assert_eq "$(cat "$W/out")" "skerry $version" "--version output"
rc="$(run_skerry "$W/out" -- --no-such-flag)"
[[ "$rc" != 0 ]] || fail "an unknown argument was accepted"
grep -q -- "--no-such-flag" "$W/out" || fail "unknown argument message does not name it: $(cat "$W/out")"
rc="$(run_skerry "$W/out" -- --config "$W/does-not-exist.yaml")"
[[ "$rc" != 0 ]] || fail "a missing config file was accepted"
grep -q "does-not-exist.yaml" "$W/out" || fail "missing config file message does not name it: $(cat "$W/out")"

PORT_LINES=("operationsApi:" "  network:" "    port: \"$NET.1:9925\"" "replication: {}")

echo "== unknown keys"
config "$W/c.yaml" "${PORT_LINES[@]}" "bogusKey: 1"
must_refuse "unknown top-level key" bogusKey "$W/c.yaml"
config "$W/c.yaml" "operationsApi:" "  network:" "    port: \"$NET.1:9925\"" "    prot: 9926"
must_refuse "unknown nested key" operationsApi.network.prot "$W/c.yaml"
config "$W/c.yaml" "${PORT_LINES[@]}" "storage:" "  writeAsnyc: true"
must_refuse "misspelt storage key" storage.writeAsnyc "$W/c.yaml"

echo "== ill-typed keys"
config "$W/c.yaml" "${PORT_LINES[@]}" "storage:" "  writeAsync: maybe"
must_refuse "boolean key with a string" storage.writeAsync "$W/c.yaml"
config "$W/c.yaml" "operationsApi:" "  network:" "    port: \"not a port\""
must_refuse "port that is not a port" operationsApi.network.port "$W/c.yaml"
config "$W/c.yaml" "${PORT_LINES[@]}" "logging:" "  level: loud"
must_refuse "unknown log level" logging.level "$W/c.yaml"
config "$W/c.yaml" "operationsApi:" "  network:" "    port: \"$NET.1:9925\"" "    maxBodySize: [1, 2]"
must_refuse "size given as a list" operationsApi.network.maxBodySize "$W/c.yaml"

echo "== security Skerry cannot give stops the start; other Harper keys warn on stderr"
config "$W/c.yaml" "operationsApi:" "  network:" "    port: \"$NET.1:9925\"" "    mtls: true"
must_refuse "client certificates for the operations API" operationsApi.network.mtls "$W/c.yaml"
config "$W/c.yaml" "${PORT_LINES[@]}" "http:" "  port: 9926"
rm -rf "$W/data"
env HDB_ADMIN_USERNAME=admin HDB_ADMIN_PASSWORD=password "$BIN" --config "$W/c.yaml" </dev/null >"$W/out" 2>&1 &
node_pid=$!
# The node starts and says, at the default log level (warn), what it ignores.
warned() { grep -q "ignoring Harper key 'http'" "$W/out"; }
skerry_wait 20 warned || fail "no warning about the ignored key 'http' on stderr: $(cat "$W/out")"
kill -0 "$node_pid" || fail "a config with an ignored Harper key did not start: $(cat "$W/out")"
kill -TERM "$node_pid"; wait "$node_pid" || true; node_pid=""
echo "   ok (ignored key warned about): $(grep -m1 "ignoring Harper key" "$W/out")"

echo "== ill-typed environment override"
config "$W/c.yaml" "${PORT_LINES[@]}"
must_refuse "OPERATIONSAPI_NETWORK_PORT=nope" operationsApi.network.port "$W/c.yaml" OPERATIONSAPI_NETWORK_PORT=nope
grep -q OPERATIONSAPI_NETWORK_PORT "$W/out" || fail "the message does not name the environment variable: $(cat "$W/out")"

echo "== OPERATIONSAPI_NETWORK_PORT moves the listener; a relative rootPath is beside the config"
mkdir -p "$W/conf"
{
    echo "rootPath: ./reldata"
    printf '%s\n' "${PORT_LINES[@]}"
} >"$W/conf/config.yaml"
(
    cd / # the working directory must not matter
    exec env HDB_ADMIN_USERNAME=admin HDB_ADMIN_PASSWORD=password OPERATIONSAPI_NETWORK_PORT="$NET.2:9925" \
        "$BIN" --config "$W/conf/config.yaml" </dev/null >"$W/node.log" 2>&1
) &
node_pid=$!
up() { curl -fsS -m 2 -o /dev/null "http://$1:9925/health" 2>/dev/null; }
skerry_wait 30 up "$NET.2" || fail "no answer on $NET.2:9925 (the environment's address): $(tail -n 20 "$W/node.log")"
if up "$NET.1"; then fail "the node also answers on $NET.1:9925, the file's address"; fi
skerry_op "$NET.2" '{"operation":"create_database","database":"moved"}' >/dev/null
skerry_assert_eq "$SKERRY_STATUS" 200 "create_database on the moved listener: $SKERRY_BODY"
[[ -d "$W/conf/reldata" ]] || fail "rootPath ./reldata was not created beside the config file ($W/conf)"
[[ ! -e /reldata ]] || fail "rootPath ./reldata was resolved against the working directory"
kill -TERM "$node_pid"
rc=0
wait "$node_pid" || rc=$?
node_pid=""
skerry_assert_eq "$rc" 0 "exit code after SIGTERM"

echo "PASS config_errors"
