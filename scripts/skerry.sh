# shellcheck shell=bash
# scripts/skerry.sh -- start, stop and drive local Skerry nodes with curl (source it, don't run it).
#
#   source scripts/skerry.sh; skerry_tmpwork       # node folders go to a fresh $SKERRY_WORK
#   skerry_start n1 127.0.0.1 && skerry_start n2 127.0.0.2
#   skerry_op 127.0.0.1 '{"operation":"add_node","hostname":"127.0.0.2","authorization":{"username":"admin","password":"password"}}'
#   skerry_op 127.0.0.2 '{"operation":"cluster_status"}' | skerry_field '[c["name"] for c in j["connections"]]'
#   skerry_stop_all
#
# Nodes listen only on loopback addresses 127.x.y.z (any other address is refused): operations
# on <ip>:9925, replication on <ip>:9933, node name <ip>. Every node has a folder
# $SKERRY_WORK/<name>/ with config.yaml, data/ (rootPath), log, pid and, once it has stopped,
# exit_code.
#
# Functions (all return non-zero on failure and say why on stderr):
#   skerry_start <name> <ip> [yaml line...]  write config.yaml, start the node, wait for GET /health
#                                       (an existing folder keeps its data: only config.yaml is rewritten).
#                                       Extra lines are appended to the config at top level. If they
#                                       contain their own top-level `replication:` or `logging:`
#                                       section, the helper's default section is left out (write the
#                                       whole section then); e.g. skerry_start n1 127.0.0.1 'replication: {}'
#                                       starts a node without replication. Extra environment
#                                       variables given on the command line (FOO=1 skerry_start ...)
#                                       reach the node (e.g. config overrides like LOGGING_LEVEL=debug).
#   skerry_stop <name>                  SIGTERM, wait for the exit (timeout), print and check the exit
#                                       code: returns 0 only if the node exited 0. Sets SKERRY_EXIT_CODE.
#   skerry_kill9 <name>                 SIGKILL and wait until the process is gone.
#   skerry_restart <name>               stop (if running) and start again with the same config.yaml/data.
#   skerry_stop_all                     stop every running node under $SKERRY_WORK (kill -9 if it hangs).
#   skerry_running <name>               true while the node's process is alive.
#   skerry_op <ip[:port]> '<json>'      POST the operation; prints the body; sets SKERRY_STATUS (HTTP
#                                       status, 000 if no answer) and SKERRY_BODY. In a command
#                                       substitution the variables are lost: use
#                                       `skerry_op ... >/dev/null` then $SKERRY_BODY, or read the
#                                       status with skerry_last_status.
#   skerry_op_ok <ip[:port]> '<json>'   true if the operation answers 2xx (prints nothing); for skerry_wait.
#   skerry_last_status                  prints the status of the last skerry_op (from any subshell).
#   skerry_wait <timeout_s> <command...>  retry the command (every 0.1 s) until it succeeds or time is up.
#   skerry_field '<python expr>'        read JSON on stdin, evaluate the expression with the document
#                                       bound to j (e.g. 'j["inserted_hashes"][0]', 'len(j)'),
#                                       print it (strings raw, everything else as JSON). Needs python3.
#   skerry_bin                          print the path of the skerry binary the helper runs.
#   skerry_log <name> [lines]           print the end of the node's log.
#   skerry_tmpwork                      point SKERRY_WORK at a fresh temporary folder (for tests).
#   skerry_cleanup                      for `trap skerry_cleanup EXIT` in tests: stop every node, print
#                                       the log tails if the script is failing, and remove SKERRY_WORK
#                                       if skerry_tmpwork made it (keep it with SKERRY_KEEP=1).
#   skerry_assert_eq <actual> <expected> <message>   fail (return 1) with both values if they differ.
#   skerry_assert <message> <command...>             fail with the message if the command fails.
#
# Environment:
#   SKERRY_WORK     node folders ($TMPDIR/skerry-work by default)
#   SKERRY_BIN      skerry binary (default: <repo>/target/release/skerry if present, else target/debug/skerry)
#   SKERRY_USER, SKERRY_PASS   super_user created on first start and used by skerry_op (admin/password)
#   SKERRY_AUTH     "basic" (default) or "none" (skerry_op sends no Authorization header), or a full
#                   Authorization header value such as "Bearer <token>"
#   SKERRY_START_TIMEOUT, SKERRY_STOP_TIMEOUT  seconds (30 each)
#   SKERRY_CURL_TIMEOUT  seconds per skerry_op request (30)

SKERRY_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

_skerry_err() { echo "skerry.sh: $*" >&2; }

_skerry_work() { echo "${SKERRY_WORK:-${TMPDIR:-/tmp}/skerry-work}"; }

_skerry_dir() { echo "$(_skerry_work)/$1"; }

skerry_bin() {
    if [[ -n "${SKERRY_BIN:-}" ]]; then
        echo "$SKERRY_BIN"
    elif [[ -x "$SKERRY_REPO/target/release/skerry" ]]; then
        echo "$SKERRY_REPO/target/release/skerry"
    else
        echo "$SKERRY_REPO/target/debug/skerry"
    fi
}

_skerry_check_ip() {
    if [[ ! "$1" =~ ^127\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]]; then
        _skerry_err "refusing address '$1': only loopback addresses 127.x.y.z are allowed"
        return 1
    fi
}

_skerry_pid() {
    local f
    f="$(_skerry_dir "$1")/pid"
    [[ -s "$f" ]] && cat "$f"
}

skerry_running() {
    local pid
    pid="$(_skerry_pid "$1")" || return 1
    [[ -n "$pid" ]] || return 1
    # The wrapper writes exit_code once the process has ended (kill -0 could also see a zombie).
    [[ ! -e "$(_skerry_dir "$1")/exit_code" ]] && kill -0 "$pid" 2>/dev/null
}

skerry_log() {
    local f
    f="$(_skerry_dir "$1")/log"
    if [[ -f "$f" ]]; then tail -n "${2:-40}" "$f"; fi
}

_skerry_health() {
    curl -fsS -o /dev/null -m 2 "http://$1:9925/health" 2>/dev/null
}

# Starts the node of folder <name> from its existing config.yaml and waits for /health.
_skerry_launch() {
    local name="$1" dir ip bin timeout deadline pid
    dir="$(_skerry_dir "$name")"
    ip="$(cat "$dir/ip")"
    bin="$(skerry_bin)"
    if [[ ! -x "$bin" ]]; then
        _skerry_err "no skerry binary at $bin (run 'cargo build --release' or set SKERRY_BIN)"
        return 1
    fi
    if skerry_running "$name"; then
        _skerry_err "node $name is already running (pid $(_skerry_pid "$name"))"
        return 1
    fi
    if _skerry_health "$ip"; then
        _skerry_err "something already answers on $ip:9925; not starting $name"
        return 1
    fi
    rm -f "$dir/pid" "$dir/exit_code"
    echo "=== start $(date '+%H:%M:%S') ===" >>"$dir/log"
    # A wrapper subshell keeps the node's exit code in exit_code, whoever stops it.
    (
        set +e # the caller's errexit would skip writing exit_code
        HDB_ADMIN_USERNAME="${SKERRY_USER:-admin}" HDB_ADMIN_PASSWORD="${SKERRY_PASS:-password}" \
            "$bin" --config "$dir/config.yaml" </dev/null >>"$dir/log" 2>&1 &
        child=$!
        echo "$child" >"$dir/pid.tmp" && mv "$dir/pid.tmp" "$dir/pid"
        wait "$child"
        echo $? >"$dir/exit_code.tmp" && mv "$dir/exit_code.tmp" "$dir/exit_code"
    ) 2>>"$dir/log" & # bash's own "Killed" notice goes to the log too
    timeout="${SKERRY_START_TIMEOUT:-30}"
    deadline=$((SECONDS + timeout))
    while :; do
        if [[ -e "$dir/exit_code" ]]; then
            _skerry_err "node $name ($ip) exited during start with code $(cat "$dir/exit_code"); log tail:"
            skerry_log "$name" 30 >&2
            return 1
        fi
        if [[ -s "$dir/pid" ]] && _skerry_health "$ip"; then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            pid="$(_skerry_pid "$name")" || true
            _skerry_err "node $name ($ip) did not answer GET /health within ${timeout}s (pid ${pid:-?}); log tail:"
            skerry_log "$name" 30 >&2
            return 1
        fi
        sleep 0.05
    done
}

skerry_start() {
    if (($# < 2)); then
        _skerry_err "usage: skerry_start <name> <ip> [yaml line...]"
        return 1
    fi
    local name="$1" ip="$2" dir line own_repl=0 own_logging=0
    shift 2
    _skerry_check_ip "$ip" || return 1
    dir="$(_skerry_dir "$name")"
    if skerry_running "$name"; then
        _skerry_err "node $name is already running (pid $(_skerry_pid "$name"))"
        return 1
    fi
    mkdir -p "$dir" || return 1
    for line in "$@"; do
        [[ "$line" =~ (^|$'\n')replication: ]] && own_repl=1
        [[ "$line" =~ (^|$'\n')logging: ]] && own_logging=1
    done
    {
        echo "# written by scripts/skerry.sh skerry_start"
        echo "rootPath: $dir/data"
        echo "operationsApi:"
        echo "  network:"
        echo "    port: \"$ip:9925\""
        if ((!own_logging)); then
            echo "logging:"
            echo "  level: info"
        fi
        if ((!own_repl)); then
            echo "replication:"
            echo "  hostname: $ip"
            echo "  port: \"$ip:9933\""
            echo "  pingInterval: 1s"
        fi
        for line in "$@"; do
            echo "$line"
        done
    } >"$dir/config.yaml"
    echo "$ip" >"$dir/ip"
    _skerry_launch "$name"
}

# Waits for the wrapper to record the exit code; $2 = timeout in seconds.
_skerry_wait_exit() {
    local dir deadline
    dir="$(_skerry_dir "$1")"
    deadline=$((SECONDS + $2))
    while [[ ! -e "$dir/exit_code" ]]; do
        ((SECONDS >= deadline)) && return 1
        sleep 0.05
    done
}

skerry_stop() {
    local name="$1" pid timeout
    SKERRY_EXIT_CODE=""
    if ! skerry_running "$name"; then
        _skerry_err "node $name is not running"
        return 1
    fi
    pid="$(_skerry_pid "$name")" || true
    timeout="${SKERRY_STOP_TIMEOUT:-30}"
    kill -TERM "$pid" 2>/dev/null || true
    if ! _skerry_wait_exit "$name" "$timeout"; then
        _skerry_err "node $name (pid $pid) did not exit within ${timeout}s of SIGTERM; killing it. Log tail:"
        skerry_log "$name" 30 >&2
        kill -KILL "$pid" 2>/dev/null || true
        _skerry_wait_exit "$name" 10 || true
        SKERRY_EXIT_CODE="timeout"
        return 1
    fi
    SKERRY_EXIT_CODE="$(cat "$(_skerry_dir "$name")/exit_code")"
    echo "skerry_stop $name: exited with code $SKERRY_EXIT_CODE" >&2
    if [[ "$SKERRY_EXIT_CODE" != 0 ]]; then
        _skerry_err "node $name exited with code $SKERRY_EXIT_CODE after SIGTERM (expected 0); log tail:"
        skerry_log "$name" 30 >&2
        return 1
    fi
}

skerry_kill9() {
    local name="$1" pid
    if ! skerry_running "$name"; then
        _skerry_err "node $name is not running"
        return 1
    fi
    pid="$(_skerry_pid "$name")" || true
    kill -KILL "$pid" 2>/dev/null || true
    if ! _skerry_wait_exit "$name" 10; then
        _skerry_err "node $name (pid $pid) still there 10s after SIGKILL"
        return 1
    fi
}

skerry_restart() {
    local name="$1"
    if [[ ! -f "$(_skerry_dir "$name")/config.yaml" ]]; then
        _skerry_err "no node named $name under $(_skerry_work)"
        return 1
    fi
    if skerry_running "$name"; then
        skerry_stop "$name" || return 1
    fi
    _skerry_launch "$name"
}

skerry_stop_all() {
    local d name rc=0
    for d in "$(_skerry_work)"/*/; do
        [[ -f "$d/pid" ]] || continue
        name="$(basename "$d")"
        if skerry_running "$name"; then
            SKERRY_STOP_TIMEOUT="${SKERRY_STOP_TIMEOUT:-15}" skerry_stop "$name" || rc=1
        fi
    done
    return "$rc"
}

skerry_op() {
    if (($# != 2)); then
        _skerry_err "usage: skerry_op <ip[:port]> '<json>'"
        return 1
    fi
    local addr="$1" json="$2" out auth=()
    [[ "$addr" == *:* ]] || addr="$addr:9925"
    _skerry_check_ip "${addr%:*}" || return 1
    case "${SKERRY_AUTH:-basic}" in
        basic) auth=(-u "${SKERRY_USER:-admin}:${SKERRY_PASS:-password}") ;;
        none) auth=() ;;
        *) auth=(-H "Authorization: $SKERRY_AUTH") ;;
    esac
    # The status goes on a last line of its own; the body is everything before it.
    out="$(curl -sS -m "${SKERRY_CURL_TIMEOUT:-30}" "${auth[@]}" -H 'Content-Type: application/json' \
        --data-binary "$json" -w '\n%{http_code}' "http://$addr/" 2>/dev/null)"
    SKERRY_STATUS="${out##*$'\n'}"
    SKERRY_BODY="${out%$'\n'*}"
    [[ "$out" == *$'\n'* ]] || SKERRY_BODY=""
    [[ -n "$SKERRY_STATUS" ]] || SKERRY_STATUS=000
    echo "$SKERRY_STATUS" >"$(_skerry_work)/.last_status" 2>/dev/null || true
    printf '%s\n' "$SKERRY_BODY"
}

skerry_op_ok() {
    skerry_op "$@" >/dev/null && [[ "$SKERRY_STATUS" == 2?? ]]
}

skerry_last_status() {
    cat "$(_skerry_work)/.last_status" 2>/dev/null || echo 000
}

skerry_wait() {
    if (($# < 2)); then
        _skerry_err "usage: skerry_wait <timeout_s> <command...>"
        return 1
    fi
    local timeout="$1" deadline
    shift
    deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            _skerry_err "timed out after ${timeout}s waiting for: $*"
            return 1
        fi
        sleep 0.1
    done
}

skerry_field() {
    if (($# != 1)); then
        _skerry_err "usage: ... | skerry_field '<python expression on j>'"
        return 1
    fi
    python3 -c '
import json, sys
expr = sys.argv[1]
text = sys.stdin.read()
try:
    j = json.loads(text)
except ValueError as e:
    sys.exit("skerry_field: input is not JSON (%s): %.200s" % (e, text))
try:
    v = eval(expr, {"j": j, "json": json})
except Exception as e:
    sys.exit("skerry_field: %s failed: %r on %.300s" % (expr, e, text))
print(v if isinstance(v, str) else json.dumps(v))
' "$1"
}

skerry_assert_eq() {
    if [[ "$1" != "$2" ]]; then
        echo "ASSERTION FAILED: $3" >&2
        echo "  expected: $2" >&2
        echo "  actual:   $1" >&2
        return 1
    fi
}

skerry_assert() {
    local msg="$1"
    shift
    if ! "$@"; then
        echo "ASSERTION FAILED: $msg" >&2
        echo "  command: $*" >&2
        return 1
    fi
}

skerry_tmpwork() {
    SKERRY_WORK="$(mktemp -d "${TMPDIR:-/tmp}/skerry-work.XXXXXX")" || return 1
    export SKERRY_WORK
    touch "$SKERRY_WORK/.skerry-tmpwork"
}

skerry_cleanup() {
    local rc=$? d
    set +e
    if ((rc != 0)) && [[ -d "$(_skerry_work)" ]]; then
        for d in "$(_skerry_work)"/*/; do
            [[ -f "$d/log" ]] || continue
            echo "----- log tail of node $(basename "$d") -----" >&2
            tail -n 25 "$d/log" >&2
        done
    fi
    skerry_stop_all 2>/dev/null
    if [[ -f "$(_skerry_work)/.skerry-tmpwork" && -z "${SKERRY_KEEP:-}" ]]; then
        rm -rf "$(_skerry_work)"
    elif ((rc != 0)); then
        echo "node folders kept in $(_skerry_work)" >&2
    fi
    return "$rc"
}
