#!/usr/bin/env bash
# Skerry benchmark: the speed and memory figures of issues 2 and 3, measured against their targets
# and beside Harper 4.7.29 (not a timed test; run it on a machine that is otherwise idle if you can).
#
#   scripts/bench.sh                      # everything (~10 min on the 2-core box)
#   BENCH_QUICK=1 scripts/bench.sh        # smoke test with small counts (~2 min)
#   BENCH_PHASES="single startup" scripts/bench.sh
#   BENCH_HARPER=1 scripts/bench.sh       # also run the real Harper's reference bench now (~5 min)
#
# Builds skerry (cargo build --release) and scripts/loadgen, then runs each phase on fresh nodes
# (temporary folders, 127.70.0.1-3, ports 9925/9933) inside a private network namespace with only
# loopback (unshare -n; BENCH_NETNS=0 to run in the host namespace). Nodes are stopped and their
# folders removed on exit. Every node runs the default config (fsync on: storage.writeAsync false).
# Phases (BENCH_PHASES, default "ceiling single rss startup repl catchup sql tls csvload"; the binary size is always measured):
#   ceiling  what this machine can do at most, with the pieces Skerry is built on (scripts/ceiling):
#            fdatasync/s in the data folder, durable raw fjall batches of 1,000 records written as
#            Skerry writes them, fjall point gets, no-op HTTP requests through the vendored tiny_http
#            at $BENCH_CLIENTS keep-alive clients, WebSocket binary messages between two threads.
#            Emitted as ceiling_<what>; the report prints Skerry's figures as % of their ceiling
#            and every Skerry line with a ceiling carries ceiling_pct.
#   single   one node: insert 1 rec/request with $BENCH_CLIENTS clients (target >= 20,000/s, p99 < 10 ms);
#            search_by_id with $BENCH_CLIENTS clients (>= 50,000/s); 1,000 rec/request inserts
#            (>= 150,000 rec/s); Harper's shapes: 1 and 100 rec/request with 4 and with 1 client(s)
#   rss      per MIMALLOC_PURGE_DELAY variant ($BENCH_PURGE_VARIANTS, "unset" = not set): idle RSS after
#            $BENCH_IDLE_S s (< 30 MiB); bulk load of $BENCH_LOAD_RECORDS records, then VmRSS and VmHWM
#            (< 150 MiB); start -> first answered op on that store, median of $BENCH_STARTUP_RUNS (< 1 s);
#            search_by_id on the loaded table (first variant only)
#   startup  start -> first answered op on an empty store: first start (creates the admin user) and
#            restart, median of $BENCH_STARTUP_RUNS each (< 100 ms)
#   repl     3 nodes joined with add_node: lag A->B idle and at $BENCH_LAG_RATES background writes/s
#            (p50 < 2 ms, p99 < 10 ms); writes on all 3 nodes at once for $BENCH_DURATION_S s, rate until
#            all 3 hold every record (>= half the single-node insert figure); idle RSS per node
#   catchup  3-node mesh, C stopped, $BENCH_CATCHUP_RECORDS records written on A and B (half each, so C
#            is behind in two origins), C restarted: records/s from restart to record_count reached
#            (>= 100,000/s) and C's peak RSS (VmHWM) while catching up
#   sql      the `sql` operation beside the NoSQL reads it must keep up with, on a $BENCH_SQL_RECORDS-record
#            table, $BENCH_SQL_CLIENTS clients each: SELECT * ... WHERE id = r against search_by_id, and an
#            indexed range (SELECT * ... WHERE score BETWEEN s AND s, ~0.1 % of the table) against
#            search_by_conditions (targets: each within 20 % of its NoSQL twin); with BENCH_HARPER=1
#            the same load and four requests run on one fresh Harper node in this run, otherwise
#            Harper's figures are the recorded ones (captures/issue13/bench: 100,000 records, 4 clients)
#   tls      HTTPS single-record inserts with $BENCH_CLIENTS clients beside plain HTTP on the same
#            node (target: within 20 %); replication lag and catch-up over wss:// with mutual TLS
#            (target: within 15 % of the plain ws:// figures of the repl and catchup phases)
#   csvload  csv_file_load of a generated $BENCH_CSV_RECORDS-row file (the load generator's record shape)
#            on a fresh node: records/s from the request to the job's COMPLETE (target: >= the
#            1,000-record insert requests, $BENCH_LOAD_CLIENTS clients, measured on another fresh
#            node), and the loading node's peak RSS (VmHWM) and RSS after the load
# Start-up times: a helper (bench_helper.py) takes t0 right before spawning skerry and polls
# describe_all back-to-back (~1 ms apart) until it answers 200.
#
# Every measurement appends one JSON line to $BENCH_OUT with "cpu": wall_s, machine_busy_cpu_s
# (/proc/stat), skerry_cpu_s (utime+stime of the node processes, stopped ones included), loadgen_cpu_s
# (the client's own figure), other_cpu_s = machine - skerry - loadgen, split into other_kernel_cpu_s
# (kernel threads: writeback and journalling of fsyncs, much of it on skerry's behalf) and
# other_processes_cpu_s (everything else: mostly other work on this shared box). The end prints a
# table: figure, target, PASS/MISS, Harper's figure and the Skerry/Harper ratio, then the CPU table.
# Harper's figures are "recorded" (spec/harper-live/BENCH.md run 5) unless BENCH_HARPER=1 runs
# tools/harper-reference/bench.sh now ("measured now"; installs harperdb@4.7.29 with npm into
# $HARPER_HOME, default ~/.cache/harper-reference, if missing) or BENCH_HARPER_JSONL names the output
# of an earlier such run.
#
# Knobs (environment; QUICK values in brackets):
#   BENCH_OUT=target/bench/bench-results.jsonl   BENCH_PHASES   BENCH_QUICK=1
#   BENCH_DURATION_S=10 [3]      seconds per throughput measurement
#   BENCH_CLIENTS=32             clients of the main insert and read measurements
#   BENCH_LOAD_RECORDS=1000000 [100000]  BENCH_LOAD_BATCH=1000  BENCH_LOAD_CLIENTS=4 (also the 1,000-rec inserts)
#   BENCH_IDLE_S=10 [2]          idle time before an idle-RSS reading; BENCH_SETTLE_S=5 [1] after the load
#   BENCH_STARTUP_RUNS=3         BENCH_PURGE_VARIANTS="unset 0"
#   BENCH_LAG_COUNT=300 [100]    BENCH_LAG_RATES="1000 5000"
#   BENCH_REPL_CLIENTS=11        clients per node for the 3-node write measurement (3 x 11 ~ 32)
#   BENCH_CATCHUP_RECORDS=200000 [20000]  BENCH_CATCHUP_BATCH=100  BENCH_CATCHUP_SIGNAL=TERM (or KILL)
#   BENCH_CSV_RECORDS=1000000 [50000]    rows of the csvload phase's file
#   BENCH_SQL_RECORDS=100000 [20000]  BENCH_SQL_CLIENTS=4
#   BENCH_QUIET_MAX_S=0          >0: before each measurement wait (at most that long) for < 15 % CPU busy
#   BENCH_HARPER=1  BENCH_HARPER_JSONL=FILE  HARPER_REF_DIR=../shared/tools/harper-reference
#   BENCH_NETNS=1  BENCH_IP_PREFIX=127.70.0  BENCH_KEEP=1 (keep the temp folder)  BENCH_LOG_LEVEL=warn
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
HELPER="$HERE/bench_helper.py"

case "${1:-}" in
  -h|--help) sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "bench.sh: unknown argument '$1' (configure with environment variables, see --help)" >&2; exit 2 ;;
esac

Q=${BENCH_QUICK:-0}
q() { if [ "$Q" = 1 ]; then echo "$2"; else echo "$1"; fi; }
BENCH_OUT=${BENCH_OUT:-$REPO/target/bench/bench-results.jsonl}
BENCH_PHASES=${BENCH_PHASES:-ceiling single rss startup repl catchup sql tls csvload}
BENCH_DURATION_S=${BENCH_DURATION_S:-$(q 10 3)}
BENCH_CLIENTS=${BENCH_CLIENTS:-32}
BENCH_LOAD_RECORDS=${BENCH_LOAD_RECORDS:-$(q 1000000 100000)}
BENCH_LOAD_BATCH=${BENCH_LOAD_BATCH:-1000}
BENCH_LOAD_CLIENTS=${BENCH_LOAD_CLIENTS:-4}
BENCH_IDLE_S=${BENCH_IDLE_S:-$(q 10 2)}
BENCH_SETTLE_S=${BENCH_SETTLE_S:-$(q 5 1)}
BENCH_STARTUP_RUNS=${BENCH_STARTUP_RUNS:-3}
BENCH_PURGE_VARIANTS=${BENCH_PURGE_VARIANTS:-unset 0}
BENCH_LAG_COUNT=${BENCH_LAG_COUNT:-$(q 300 100)}
BENCH_LAG_RATES=${BENCH_LAG_RATES:-1000 5000}
BENCH_REPL_CLIENTS=${BENCH_REPL_CLIENTS:-11}
BENCH_CATCHUP_RECORDS=${BENCH_CATCHUP_RECORDS:-$(q 200000 20000)}
BENCH_CATCHUP_BATCH=${BENCH_CATCHUP_BATCH:-100}
BENCH_CATCHUP_SIGNAL=${BENCH_CATCHUP_SIGNAL:-TERM}
BENCH_CSV_RECORDS=${BENCH_CSV_RECORDS:-$(q 1000000 50000)}
BENCH_QUIET_MAX_S=${BENCH_QUIET_MAX_S:-0}
BENCH_SQL_RECORDS=${BENCH_SQL_RECORDS:-$(q 100000 20000)}
BENCH_SQL_CLIENTS=${BENCH_SQL_CLIENTS:-4}
BENCH_HARPER=${BENCH_HARPER:-}
BENCH_HARPER_JSONL=${BENCH_HARPER_JSONL:-}
HARPER_REF_DIR=${HARPER_REF_DIR:-$(cd "$REPO/.." && pwd)/shared/tools/harper-reference}
BENCH_NETNS=${BENCH_NETNS:-1}
BENCH_IP_PREFIX=${BENCH_IP_PREFIX:-127.70.0}
BENCH_LOG_LEVEL=${BENCH_LOG_LEVEL:-warn}
BENCH_USER=admin BENCH_PASS=password
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
SKERRY_BIN=$TARGET_DIR/release/skerry
LOADGEN=$REPO/scripts/loadgen/target/release/loadgen
CEILING=$REPO/scripts/ceiling/target/release/ceiling
case "$BENCH_IP_PREFIX" in 127.*) ;; *) echo "BENCH_IP_PREFIX must be in 127.0.0.0/8" >&2; exit 2 ;; esac

log() { echo "[bench $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ outside the namespace: build, install
if [ -z "${IN_SKERRY_BENCH_NETNS:-}" ]; then
  for t in cargo jq python3 curl strip awk; do command -v "$t" >/dev/null || die "needs $t"; done
  log "building skerry (release) and the load generator"
  cargo build --release --manifest-path "$REPO/Cargo.toml" >&2
  cargo build --release --manifest-path "$REPO/scripts/loadgen/Cargo.toml" >&2
  cargo build --release --manifest-path "$REPO/scripts/ceiling/Cargo.toml" >&2
  if [ "$BENCH_HARPER" = 1 ]; then
    HARPER_HOME=${HARPER_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/harper-reference}
    if [ ! -x "$HARPER_HOME/node_modules/.bin/harperdb" ]; then
      log "installing harperdb@4.7.29 into $HARPER_HOME (npm, ~35 s)"
      mkdir -p "$HARPER_HOME"
      (cd "$HARPER_HOME" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install harperdb@4.7.29 >&2) \
        || { log "Harper install failed: using the recorded Harper figures"; BENCH_HARPER=; }
    fi
    export HARPER_HOME
  fi
  export BENCH_HARPER
  # Others may rebuild target/release while this runs: every phase uses these copies.
  BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/skerry-bench.XXXXXX")
  cp "$SKERRY_BIN" "$BENCH_TMP/skerry"; cp "$LOADGEN" "$BENCH_TMP/loadgen"; cp "$CEILING" "$BENCH_TMP/ceiling"
  BENCH_COMMIT=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')
  export BENCH_TMP BENCH_COMMIT
  export BENCH_RUN_ID=${BENCH_RUN_ID:-$(date -u +%Y%m%dT%H%M%SZ)-$$}
  if [ "$BENCH_NETNS" = 1 ]; then
    if unshare -n true 2>/dev/null; then
      exec env IN_SKERRY_BENCH_NETNS=1 unshare -n -- bash -c 'ip link set lo up && exec "$@"' bench-netns "$SELF"
    fi
    log "cannot create a network namespace (unshare -n): running in the host namespace"
  fi
  export IN_SKERRY_BENCH_NETNS=host
fi

# ------------------------------------------------------------------ inside: run the phases
RUN_ID=${BENCH_RUN_ID:-$(date -u +%Y%m%dT%H%M%SZ)-$$}
TMP=${BENCH_TMP:?}
SKERRY_BIN=$TMP/skerry LOADGEN=$TMP/loadgen CEILING=$TMP/ceiling
mkdir -p "$(dirname "$BENCH_OUT")"
BENCH_OUT=$(cd "$(dirname "$BENCH_OUT")" && pwd)/$(basename "$BENCH_OUT")
declare -A NPID=() HPID=() CPU_BASE=() CPU_NODE=()
NODE_ENV=()
PHASE=setup VARIANT=""
START_SEQ=0 CPU_ON=0

cleanup() {
  local i
  for i in "${!NPID[@]}"; do kill -TERM "${NPID[$i]}" 2>/dev/null || true; done
  for i in "${!NPID[@]}"; do
    for _ in $(seq 100); do kill -0 "${NPID[$i]}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "${NPID[$i]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf -- "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip_of() { echo "$BENCH_IP_PREFIX.$1"; }
url_of() { echo "http://$(ip_of "$1"):9925/"; }
# op <node> <json>: POST an operation with curl, prints the body
op() { curl -sS -m 60 -u "$BENCH_USER:$BENCH_PASS" -H 'Content-Type: application/json' -d "$2" "$(url_of "$1")"; }
status_kb() { awk -v k="$2:" '$1==k{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---- CPU accounting: machine busy ticks; per node: ticks since cpu_begin (CPU_BASE by pid), plus
# the ticks of its processes stopped during the measurement (CPU_NODE)
HZ=$(getconf CLK_TCK)
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
# kernel threads (children of kthreadd: kworkers writing back and journalling our fsyncs, ...).
# irq/softirq time is not separable: the kernel charges it to whichever task it interrupted.
kernel_ticks() { { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{s=$0; sub(/^.*\) /, "", s); split(s, f, " "); if (f[2] == 2) t += f[12] + f[13]} END{print t + 0}'; }
pid_ticks() { awk '{s=$0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12]+f[13]}' "/proc/$1/stat" 2>/dev/null || echo 0; }
cpu_begin() {
  local p
  CPU_T0=$(date +%s.%N); CPU_B0=$(busy_ticks); CPU_K0=$(kernel_ticks); CPU_ON=1; CPU_BASE=(); CPU_NODE=()
  for p in "${NPID[@]}"; do CPU_BASE[$p]=$(pid_ticks "$p"); done
}
cpu_note_exit() { # cpu_note_exit <node> <pid> <its total ticks>: a node stopped inside a measurement
  [ "$CPU_ON" = 1 ] || return 0
  CPU_NODE[$1]=$((${CPU_NODE[$1]:-0} + $3 - ${CPU_BASE[$2]:-0}))
}
cpu_end() { # cpu_end <client CPU seconds> -> the "cpu" JSON object
  local t1 b1 k1 sk=0 i p by=""
  t1=$(date +%s.%N); b1=$(busy_ticks); k1=$(kernel_ticks)
  for i in "${!NPID[@]}"; do p=${NPID[$i]}; CPU_NODE[$i]=$((${CPU_NODE[$i]:-0} + $(pid_ticks "$p") - ${CPU_BASE[$p]:-0})); done
  for i in $(printf '%s\n' "${!CPU_NODE[@]}" | sort -n); do
    sk=$((sk + CPU_NODE[$i])); by="$by${by:+,}\"n$i\":$(awk -v t="${CPU_NODE[$i]}" -v hz="$HZ" 'BEGIN{printf "%.2f", t/hz}')"
  done
  CPU_ON=0
  awk -v t0="$CPU_T0" -v t1="$t1" -v b="$((b1 - CPU_B0))" -v k="$((k1 - CPU_K0))" -v s="$sk" -v c="$1" -v hz="$HZ" \
    -v la="$(cut -d' ' -f1-3 /proc/loadavg)" -v by="$by" \
    'BEGIN{printf "{\"wall_s\":%.3f,\"machine_busy_cpu_s\":%.2f,\"skerry_cpu_s\":%.2f,\"loadgen_cpu_s\":%.2f,\"other_cpu_s\":%.2f,\"other_kernel_cpu_s\":%.2f,\"other_processes_cpu_s\":%.2f,\"loadavg_end\":\"%s\",\"skerry_cpu_s_by_node\":{%s}}",
      t1-t0, b/hz, s/hz, c, b/hz-s/hz-c, k/hz, b/hz-s/hz-c-k/hz, la, by}'
}
# Optional: wait (at most BENCH_QUIET_MAX_S) until less than 15 % of all CPUs are busy over 2 s.
wait_quiet() {
  [ "$BENCH_QUIET_MAX_S" -gt 0 ] || return 0
  local t0=$SECONDS b0 b1 n; n=$(nproc)
  while [ $((SECONDS - t0)) -lt "$BENCH_QUIET_MAX_S" ]; do
    b0=$(busy_ticks); sleep 2; b1=$(busy_ticks)
    if [ $(((b1 - b0) * 100 / (2 * HZ * n))) -lt 15 ]; then log "quiet after $((SECONDS - t0)) s"; return 0; fi
  done
  log "still busy after $BENCH_QUIET_MAX_S s, measuring anyway"
}

# emit <name> <json>: add run/phase/variant and append to BENCH_OUT
emit() {
  local line
  line=$(jq -c --arg run "$RUN_ID" --arg name "$1" --arg phase "$PHASE" --arg var "$VARIANT" \
    '{bench:"skerry", run_id:$run, name:$name, phase:$phase} + (if $var == "" then {} else {variant:$var} end) + .' <<<"$2")
  echo "$line" >> "$BENCH_OUT"
  log "$1: $(jq -c 'del(.bench, .run_id, .name, .phase, .url, .db, .cpu)' <<<"$line" | cut -c1-400)"
}

# ---- nodes
node_config() { # node_config <i> <replication 0|1|2>: fresh folder and config (2 = replication
  # over TLS on securePort, and HTTPS for the operations API on :9926)
  local i=$1 d="$TMP/n$1"
  rm -rf -- "$d"; mkdir -p "$d"
  {
    echo "rootPath: $d/data"
    printf 'operationsApi:\n  network:\n    port: "%s:9925"\n' "$(ip_of "$i")"
    if [ "$2" = 2 ]; then printf '    securePort: "%s:9926"\n' "$(ip_of "$i")"; fi
    printf 'logging:\n  level: %s\n' "$BENCH_LOG_LEVEL"
    if [ "$2" = 1 ]; then printf 'replication:\n  hostname: %s\n  port: "%s:9933"\n' "$(ip_of "$i")" "$(ip_of "$i")"; fi
    if [ "$2" = 2 ]; then
      printf 'replication:\n  hostname: %s\n  securePort: "%s:9933"\n  enableRootCAs: false\n' "$(ip_of "$i")" "$(ip_of "$i")"
    fi
  } > "$d/config.yaml"
}
# node_start <i> [--wait-count DB TABLE N] [--timeout-s S]: spawn + wait for the first answer;
# START_JSON = the helper's JSON line (pid, ready_ms, ...). The helper stays as the node's parent.
node_start() {
  local i=$1 d="$TMP/n$1" f; shift
  START_SEQ=$((START_SEQ + 1)); f="$d/start.$START_SEQ.json"
  : > "$f"
  env HDB_ADMIN_USERNAME="$BENCH_USER" HDB_ADMIN_PASSWORD="$BENCH_PASS" "${NODE_ENV[@]}" \
    python3 "$HELPER" start --bin "$SKERRY_BIN" --config "$d/config.yaml" --log "$d/node.log" \
    --url "$(url_of "$i")" --user "$BENCH_USER" --pass "$BENCH_PASS" --exit-file "$d/exit.json" "$@" > "$f" &
  HPID[$i]=$!
  until grep -q '}' "$f"; do
    if ! kill -0 "${HPID[$i]}" 2>/dev/null; then grep -q '}' "$f" && break; die "start helper of n$i died"; fi
    sleep 0.02
  done
  START_JSON=$(head -n1 "$f")
  NPID[$i]=$(jq -r .pid <<<"$START_JSON")
  if jq -e 'has("error")' <<<"$START_JSON" >/dev/null; then
    log "n$i: $(jq -r .error <<<"$START_JSON"); last log lines:"; tail -n 20 "$d/node.log" >&2 || true
    [ "$(jq -r '.ready_ms // empty' <<<"$START_JSON")" != "" ] || die "n$i did not start"
  fi
}
node_stop() { # node_stop <i> [signal]
  local i=$1 sig=${2:-TERM} pid=${NPID[$1]:-} ex="$TMP/n$1/exit.json" cpu
  [ -n "$pid" ] || return 0
  rm -f "$ex"
  kill -"$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "${HPID[$i]}" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then log "n$i ignored SIG$sig for 15 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  wait "${HPID[$i]}" 2>/dev/null || true
  # the helper reaped it: its total CPU (shutdown included) goes to the running measurement
  cpu=$(jq -r '.cpu_s // 0' "$ex" 2>/dev/null || echo 0)
  cpu_note_exit "$i" "$pid" "$(awk -v c="$cpu" -v hz="$HZ" 'BEGIN{printf "%d", c*hz + 0.5}')"
  unset "NPID[$i]" "HPID[$i]"
}
stop_all() { local i; for i in "${!NPID[@]}"; do node_stop "$i"; done; }

# lg <name> <loadgen args...>: one measurement with the load generator; LG = its JSON
lg() {
  local name=$1 out; shift
  wait_quiet
  cpu_begin
  out=$("$LOADGEN" "$@" 2>>"$TMP/loadgen.log") || { tail -n 5 "$TMP/loadgen.log" >&2; die "loadgen $name failed"; }
  LG=$out
  emit "$name" "$(jq -c --argjson cpu "$(cpu_end "$(jq -r .cpu_s <<<"$out")")" '. + {cpu:$cpu}' <<<"$out")"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
json_arr() { local IFS=,; echo "[$*]"; }
# wait_true <timeout s> <command...>: poll every 20 ms
wait_true() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.02; done
}
count_on() { op "$1" "{\"operation\":\"describe_table\",\"database\":\"$2\",\"table\":\"$3\"}" | jq -r '.record_count // 0'; }
# repl_table <db> <table...>: create on n1 and wait until every running node has it, empty. A table
# travels with its first record, so a sentinel (id -1) is written, awaited everywhere, and deleted.
repl_table() {
  local db=$1 t i; shift
  op 1 "{\"operation\":\"create_database\",\"database\":\"$db\"}" >/dev/null
  for t in "$@"; do
    op 1 "{\"operation\":\"create_table\",\"database\":\"$db\",\"table\":\"$t\",\"primary_key\":\"id\"}" >/dev/null
    op 1 "{\"operation\":\"insert\",\"database\":\"$db\",\"table\":\"$t\",\"records\":[{\"id\":-1}]}" >/dev/null
    for i in "${!NPID[@]}"; do
      wait_true 60 eval "[ \"\$(count_on $i $db $t 2>/dev/null)\" = 1 ]" || die "table $db.$t not replicated to n$i"
    done
    op 1 "{\"operation\":\"delete\",\"database\":\"$db\",\"table\":\"$t\",\"ids\":[-1]}" >/dev/null
    for i in "${!NPID[@]}"; do
      wait_true 60 eval "[ \"\$(count_on $i $db $t 2>/dev/null)\" = 0 ]" || die "delete in $db.$t not replicated to n$i"
    done
  done
}

# ---- environment line
CPU_MODEL=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
emit env "$(jq -n --arg date "$(date -u +%FT%TZ)" --arg commit "$BENCH_COMMIT" \
  --arg sha256 "$(sha256sum "$SKERRY_BIN" | cut -c1-16)" \
  --arg rustc "$(rustc --version 2>/dev/null || echo '?')" --arg kernel "$(uname -r)" --arg cpu "$CPU_MODEL" \
  --argjson cpus "$(nproc)" --argjson mem_kb "$(awk '/MemTotal/{print $2}' /proc/meminfo)" \
  --argjson quick "$([ "$Q" = 1 ] && echo true || echo false)" --arg netns "$IN_SKERRY_BENCH_NETNS" \
  --arg phases "$BENCH_PHASES" --argjson duration_s "$BENCH_DURATION_S" --argjson clients "$BENCH_CLIENTS" \
  --argjson load_records "$BENCH_LOAD_RECORDS" --argjson catchup_records "$BENCH_CATCHUP_RECORDS" \
  --arg purge_variants "$BENCH_PURGE_VARIANTS" \
  '{date:$date, commit:$commit, skerry_sha256:$sha256, rustc:$rustc, kernel:$kernel, cpu:$cpu, cpus:$cpus, mem_kb:$mem_kb,
    quick:$quick, netns:$netns, phases:$phases, duration_s:$duration_s, clients:$clients,
    load_records:$load_records, catchup_records:$catchup_records, purge_variants:$purge_variants}')"

cp "$SKERRY_BIN" "$TMP/skerry.stripped"; strip "$TMP/skerry.stripped"
emit binary_size "{\"bytes\":$(stat -c %s "$SKERRY_BIN"),\"stripped_bytes\":$(stat -c %s "$TMP/skerry.stripped"),\"stripped_kb\":$(($(stat -c %s "$TMP/skerry.stripped") / 1024))}"
rm -f "$TMP/skerry.stripped"

has_phase() { [[ " $BENCH_PHASES " == *" $1 "* ]]; }
D=$BENCH_DURATION_S

# ------------------------------------------------------------------ ceiling
# cl <name> <ceiling args...>: one ceiling measurement with its CPU accounting
cl() {
  local name=$1 out; shift
  wait_quiet
  cpu_begin
  out=$("$CEILING" "$@") || die "ceiling $name failed"
  emit "ceiling_$name" "$(jq -c --argjson cpu "$(cpu_end 0)" '. + {cpu:$cpu}' <<<"$out")"
}
if has_phase ceiling; then
  PHASE=ceiling; log "== ceilings: what this machine can do at most"
  mkdir -p "$TMP/ceiling-data"
  cl fsync fsync "$TMP/ceiling-data" "$D"
  # The load generator's records have 7 attributes plus the two timestamps, all indexed except
  # the primary key: 8 index entries per record.
  cl fjall fjall "$TMP/ceiling-data" "$D" 8
  cl gets gets "$TMP/ceiling-data" "$D" 2
  cl http http "$D" "$BENCH_CLIENTS"
  cl ws ws "$D"
  rm -rf -- "$TMP/ceiling-data"
fi

# sync_count <node> <url>: fdatasync calls per group commit during a short single-record run.
# perf's syscall tracepoints count the syncs per thread (the core thread commits; fjall's workers
# sync the tables they write); the node's own group-commit counter (/metrics) counts the commits.
# The node is otherwise idle, so every commit between the two scrapes happens inside perf's window.
commits_of() { curl -s "$1metrics" | awk '$1 == "skerry_group_commit_seconds_count" {print $2}'; }
sync_count() {
  local i=$1 u=$2 st="$TMP/perf-sync.csv" c0 c1 pp
  if ! command -v perf >/dev/null; then log "sync_per_commit: SKIPPED (no perf)"; return 0; fi
  # Creating a table and its attribute indexes syncs fjall's keyspace metadata from the core
  # thread (a few syncs per keyspace): done first, so the window sees only record commits.
  "$LOADGEN" insert --url "$u" --clients 1 --batch 1 --records 64 --table syncs >/dev/null 2>>"$TMP/loadgen.log" \
    || die "loadgen syncs warm-up failed"
  c0=$(commits_of "$u")
  rm -f "$st"
  perf stat --per-thread -x, -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync \
    -p "${NPID[$i]}" -o "$st" -- sleep "$((D + 2))" 2>/dev/null &
  pp=$!
  # perf gives no sign that it is attached (its output is written at the end); it attaches in
  # milliseconds, and a commit it missed would show as fewer than one sync per commit.
  sleep 1
  "$LOADGEN" insert --url "$u" --clients "$BENCH_CLIENTS" --batch 1 --duration-s "$D" --table syncs --id-start 1000 >/dev/null 2>>"$TMP/loadgen.log" \
    || die "loadgen syncs failed"
  c1=$(commits_of "$u")
  if ! wait "$pp" || ! grep -q sys_enter_fdatasync "$st"; then
    log "sync_per_commit: SKIPPED (perf stat failed: $(tail -n 1 "$st" 2>/dev/null))"; return 0
  fi
  emit sync_per_commit "$(awk -F, -v c0="$c0" -v c1="$c1" '
    /^#/ || NF < 4 { next }
    { n = ($2 ~ /^[0-9]+$/) ? $2 : 0; if ($1 ~ /^core-/) core += n; else other += n }
    END { commits = c1 - c0; printf "{\"group_commits\":%d,\"core_syncs\":%d,\"other_syncs\":%d,\"core_syncs_per_commit\":%s}",
          commits, core, other, (commits > 0 ? sprintf("%.3f", core / commits) : "null") }' "$st")"
}

# ------------------------------------------------------------------ single
if has_phase single; then
  PHASE=single; log "== single node: throughput and latency"
  node_config 1 0; node_start 1
  U=$(url_of 1)
  lg insert_c32_b1 insert --url "$U" --clients "$BENCH_CLIENTS" --batch 1 --duration-s "$D" --table c32b1
  sync_count 1 "$U"
  lg read_c32 read --url "$U" --clients "$BENCH_CLIENTS" --ids "$(jq -r .records <<<"$LG")" --duration-s "$D" --table c32b1
  lg insert_b1000 insert --url "$U" --clients "$BENCH_LOAD_CLIENTS" --batch 1000 --duration-s "$D" --table b1000
  lg insert_c4_b1 insert --url "$U" --clients 4 --batch 1 --duration-s "$D" --table c4b1
  lg insert_c4_b100 insert --url "$U" --clients 4 --batch 100 --duration-s "$D" --table c4b100
  lg insert_c1_b1 insert --url "$U" --clients 1 --batch 1 --duration-s "$D" --table c1b1
  lg insert_c1_b100 insert --url "$U" --clients 1 --batch 100 --duration-s "$D" --table c1b100
  emit after_single "{\"rss_kb\":$(status_kb "${NPID[1]}" VmRSS),\"hwm_kb\":$(status_kb "${NPID[1]}" VmHWM),\"data_kb\":$(du -sk "$TMP/n1/data" | cut -f1)}"
  node_stop 1
fi

# startup_series <name> <runs> <fresh 0|1> <i> [extra node_start args]: start, time, stop; emits samples
startup_series() {
  local name=$1 runs=$2 fresh=$3 i=$4 ms=() hcpu=0 rss=0; shift 4
  wait_quiet
  cpu_begin
  for _ in $(seq "$runs"); do
    [ -n "${NPID[$i]:-}" ] && node_stop "$i"
    [ "$fresh" = 1 ] && node_config "$i" 0
    node_start "$i" "$@"
    ms+=("$(jq -r .ready_ms <<<"$START_JSON")")
    hcpu=$(awk -v a="$hcpu" -v b="$(jq -r .helper_cpu_s <<<"$START_JSON")" 'BEGIN{print a+b}')
  done
  local cpu; cpu=$(cpu_end "$hcpu")
  sleep 1; rss=$(status_kb "${NPID[$i]}" VmRSS)
  emit "$name" "{\"samples_ms\":$(json_arr "${ms[@]}"),\"median_ms\":$(median "${ms[@]}"),\"rss_kb_idle\":$rss,\"records\":${RECORDS:-0},\"cpu\":$cpu}"
}

# ------------------------------------------------------------------ rss (+ start-up on a loaded store)
if has_phase rss; then
  PHASE=rss
  first=1
  for VARIANT in $BENCH_PURGE_VARIANTS; do
    log "== memory, MIMALLOC_PURGE_DELAY=$VARIANT"
    if [ "$VARIANT" = unset ]; then NODE_ENV=(); sfx=""; else NODE_ENV=("MIMALLOC_PURGE_DELAY=$VARIANT"); sfx="@purge$VARIANT"; fi
    node_config 1 0; node_start 1
    sleep "$BENCH_IDLE_S"
    emit "idle_rss$sfx" "{\"idle_s\":$BENCH_IDLE_S,\"rss_kb\":$(status_kb "${NPID[1]}" VmRSS),\"hwm_kb\":$(status_kb "${NPID[1]}" VmHWM),\"threads\":$(status_kb "${NPID[1]}" Threads)}"
    lg "load$sfx" load --url "$(url_of 1)" --records "$BENCH_LOAD_RECORDS" --batch "$BENCH_LOAD_BATCH" --clients "$BENCH_LOAD_CLIENTS" --table load
    rss=$(status_kb "${NPID[1]}" VmRSS); hwm=$(status_kb "${NPID[1]}" VmHWM)
    sleep "$BENCH_SETTLE_S"
    emit "rss_after_load$sfx" "{\"records\":$(jq -r .records <<<"$LG"),\"rss_kb\":$rss,\"hwm_kb\":$hwm,\"settle_s\":$BENCH_SETTLE_S,\"rss_settled_kb\":$(status_kb "${NPID[1]}" VmRSS),\"threads\":$(status_kb "${NPID[1]}" Threads),\"data_kb\":$(du -sk "$TMP/n1/data" | cut -f1)}"
    if [ "$first" = 1 ]; then
      lg read_c32_1m read --url "$(url_of 1)" --clients "$BENCH_CLIENTS" --ids "$BENCH_LOAD_RECORDS" --duration-s "$D" --table load
    fi
    RECORDS=$BENCH_LOAD_RECORDS startup_series "startup_loaded$sfx" "$BENCH_STARTUP_RUNS" 0 1
    node_stop 1
    first=0
  done
  VARIANT=""; NODE_ENV=()
fi

# ------------------------------------------------------------------ startup (empty store)
if has_phase startup; then
  PHASE=startup; log "== start-up on an empty store"
  startup_series startup_empty "$BENCH_STARTUP_RUNS" 1 1
  startup_series startup_empty_restart "$BENCH_STARTUP_RUNS" 0 1
  node_stop 1
fi

# ---- 3-node mesh: start, add_node B and C on A, wait until every node sees every node's writes
# (MESH_TLS=1: replication over wss:// with mutual TLS, joined with verify_tls false)
mesh_up() {
  local i mode=1 extra=""
  if [ "${MESH_TLS:-0}" = 1 ]; then mode=2 extra=',"verify_tls":false'; fi
  for i in 1 2 3; do node_config "$i" "$mode"; node_start "$i"; done
  for i in 2 3; do
    op 1 "{\"operation\":\"add_node\",\"hostname\":\"$(ip_of "$i")\"$extra,\"authorization\":{\"username\":\"$BENCH_USER\",\"password\":\"$BENCH_PASS\"}}" >&2; echo >&2
  done
  repl_table mesh probe
  for i in 1 2 3; do op "$i" "{\"operation\":\"insert\",\"database\":\"mesh\",\"table\":\"probe\",\"records\":[{\"id\":$i}]}" >/dev/null; done
  for i in 1 2 3; do
    wait_true 60 eval "[ \"\$(count_on $i mesh probe)\" = 3 ]" || die "n$i did not receive every node's write"
  done
  log "mesh of 3 up"
}

# ------------------------------------------------------------------ repl
if has_phase repl; then
  PHASE=repl; log "== replication: lag and 3-node writes"
  mesh_up
  sleep "$BENCH_IDLE_S"
  r1=$(status_kb "${NPID[1]}" VmRSS) r2=$(status_kb "${NPID[2]}" VmRSS) r3=$(status_kb "${NPID[3]}" VmRSS)
  emit repl_idle_rss "{\"rss_kb\":[$r1,$r2,$r3],\"rss_mib_text\":\"$(awk -v a="$r1" -v b="$r2" -v c="$r3" 'BEGIN{printf "%.1f / %.1f / %.1f MiB", a/1024, b/1024, c/1024}')\"}"
  repl_table lag lag lag_bg
  lg lag_idle lag --from "$(url_of 1)" --to "$(url_of 2)" --db lag --count "$BENCH_LAG_COUNT" --no-setup
  for rate in $BENCH_LAG_RATES; do
    bgc=$((rate / 300)); [ "$bgc" -ge 4 ] || bgc=4
    lg "lag_$rate" lag --from "$(url_of 1)" --to "$(url_of 2)" --db lag --count "$BENCH_LAG_COUNT" --no-setup \
      --rate "$rate" --background-clients "$bgc"
  done
  # writes on all three nodes at once, disjoint ids; then until every node holds every record
  repl_table rt t
  wait_quiet
  cpu_begin
  t0=$(date +%s.%N)
  for i in 1 2 3; do
    "$LOADGEN" insert --url "$(url_of "$i")" --db rt --table t --no-setup --clients "$BENCH_REPL_CLIENTS" --batch 1 \
      --duration-s "$D" --id-start "$((i * 1000000000))" > "$TMP/rt$i.json" 2>>"$TMP/loadgen.log" &
    eval "LGP$i=\$!"
  done
  for p in "$LGP1" "$LGP2" "$LGP3"; do wait "$p" || die "loadgen failed in the 3-node write measurement"; done
  t_ack=$(date +%s.%N)
  total=0 lcpu=0
  for i in 1 2 3; do
    total=$((total + $(jq -r .records "$TMP/rt$i.json")))
    lcpu=$(awk -v a="$lcpu" -v b="$(jq -r .cpu_s "$TMP/rt$i.json")" 'BEGIN{print a+b}')
  done
  conv=()
  for i in 1 2 3; do
    w=$("$LOADGEN" wait-count --url "$(url_of "$i")" --db rt --table t --expect "$total" --timeout-s 300 --interval-ms 10 2>>"$TMP/loadgen.log") || true
    conv+=("$(jq -r .record_count <<<"$w")")
    lcpu=$(awk -v a="$lcpu" -v b="$(jq -r '.cpu_s // 0' <<<"$w")" 'BEGIN{print a+b}')
  done
  t_conv=$(date +%s.%N)
  cpu=$(cpu_end "$lcpu")
  emit repl_throughput "$(jq -n --argjson per "[$(cat "$TMP/rt1.json"),$(cat "$TMP/rt2.json"),$(cat "$TMP/rt3.json")]" \
    --argjson total "$total" --argjson t0 "$t0" --argjson ta "$t_ack" --argjson tc "$t_conv" --argjson counts "$(json_arr "${conv[@]}")" \
    --argjson cpu "$cpu" --argjson clients "$BENCH_REPL_CLIENTS" \
    '{nodes:3, clients_per_node:$clients, records:$total, final_counts:$counts,
      converged: ($counts | all(. == $total)),
      ack_records_per_s: ($total / ([$per[].wall_s] | max) | floor),
      converged_records_per_s: ($total / ($tc - $t0) | floor), converge_after_ack_s: (($tc - $ta) * 1000 | round / 1000),
      per_node: [$per[] | {records_per_s, p50_ms, p99_ms, errors}], cpu:$cpu}')"
  stop_all
fi

# ------------------------------------------------------------------ catchup
# catchup_run <name>: 3-node mesh (MESH_TLS as set), C stopped, records written on A and B, C
# restarted: records/s until C holds them all
catchup_run() {
  local name=$1
  mesh_up
  repl_table catchup items
  node_stop 3 "$BENCH_CATCHUP_SIGNAL"
  N=$BENCH_CATCHUP_RECORDS half=$((BENCH_CATCHUP_RECORDS / 2))
  cpu_begin
  "$LOADGEN" load --url "$(url_of 1)" --db catchup --table items --no-setup --records "$half" --batch "$BENCH_CATCHUP_BATCH" --clients 4 \
    > "$TMP/cl1.json" 2>>"$TMP/loadgen.log" & p1=$!
  "$LOADGEN" load --url "$(url_of 2)" --db catchup --table items --no-setup --records "$((N - half))" --id-start "$half" \
    --batch "$BENCH_CATCHUP_BATCH" --clients 4 > "$TMP/cl2.json" 2>>"$TMP/loadgen.log" & p2=$!
  for p in "$p1" "$p2"; do wait "$p" || die "catch-up load failed"; done
  for i in 1 2; do
    "$LOADGEN" wait-count --url "$(url_of "$i")" --db catchup --table items --expect "$N" --timeout-s 300 > /dev/null 2>>"$TMP/loadgen.log" \
      || die "n$i does not hold all $N records"
  done
  lcpu=$(jq -s 'map(.cpu_s) | add' "$TMP/cl1.json" "$TMP/cl2.json")
  emit "${name}_load" "$(jq -s --argjson cpu "$(cpu_end "$lcpu")" '{records: (map(.records) | add), batch: .[0].batch,
    per_node: [.[] | {records_per_s, p50_ms, p99_ms, errors}], cpu:$cpu}' "$TMP/cl1.json" "$TMP/cl2.json")"
  wait_quiet
  cpu_begin
  node_start 3 --wait-count catchup items "$N" --timeout-s 600
  cpu=$(cpu_end "$(jq -r .helper_cpu_s <<<"$START_JSON")")
  finals=$(json_arr "$(count_on 1 catchup items)" "$(count_on 2 catchup items)" "$(count_on 3 catchup items)")
  emit "$name" "$(jq -c --argjson n "$N" --argjson finals "$finals" --arg sig "$BENCH_CATCHUP_SIGNAL" --argjson cpu "$cpu" \
    '{expect:$n, stopped_with:$sig, origins:2, ready_ms, first_record_ms, count_ms, final_counts:$finals,
      records_per_s: (if .count_ms then ($n / .count_ms * 1000 | floor) else null end),
      records_per_s_after_ready: (if .count_ms then ($n / (.count_ms - .ready_ms) * 1000 | floor) else null end),
      hwm_kb, rss_kb, rss_max_sampled_kb, error, cpu:$cpu}' <<<"$START_JSON")"
  stop_all
}
if has_phase catchup; then
  PHASE=catchup; log "== catch-up of a node that was down"
  catchup_run catchup
fi

# ------------------------------------------------------------------ sql
if has_phase sql; then
  PHASE=sql; log "== sql: point and indexed range SELECTs beside search_by_id / search_by_conditions"
  node_config 1 0; node_start 1
  U=$(url_of 1)
  lg sql_load load --url "$U" --records "$BENCH_SQL_RECORDS" --batch "$BENCH_LOAD_BATCH" --clients "$BENCH_LOAD_CLIENTS" --table sqlt
  for kind in point sql-point range sql-range; do
    lg "sql_read_$kind" read --url "$U" --table sqlt --ids "$BENCH_SQL_RECORDS" --clients "$BENCH_SQL_CLIENTS" \
      --duration-s "$D" --query "$kind"
  done
  node_stop 1
  # The same four requests on the real Harper, in this run (BENCH_HARPER=1): one fresh Harper
  # node on 127.0.0.1 (loopback, like every node here), the same table loaded by the same load
  # generator, then stopped and wiped before the next phase.
  if [ "$BENCH_HARPER" = 1 ]; then
    HSQL_DATA=$TMP/harper-sql
    if env HARPER_DATA="$HSQL_DATA" HARPER_FRESH=1 HARPER_JOIN=none "$HARPER_REF_DIR/start-cluster.sh" 1 >&2; then
      HU=http://127.0.0.1:9925/
      lg harper_sql_load load --url "$HU" --records "$BENCH_SQL_RECORDS" --batch "$BENCH_LOAD_BATCH" \
        --clients "$BENCH_LOAD_CLIENTS" --table sqlt
      for kind in point sql-point range sql-range; do
        lg "harper_sql_read_$kind" read --url "$HU" --table sqlt --ids "$BENCH_SQL_RECORDS" \
          --clients "$BENCH_SQL_CLIENTS" --duration-s "$D" --query "$kind"
      done
    else
      log "Harper did not start for the sql phase: its sql figures stay the recorded ones"
    fi
    env HARPER_DATA="$HSQL_DATA" HARPER_WIPE=1 "$HARPER_REF_DIR/stop-cluster.sh" 1 >&2 || true
  fi
fi

# ------------------------------------------------------------------ tls
if has_phase tls; then
  PHASE=tls; log "== TLS: HTTPS inserts beside HTTP, replication lag and catch-up over wss://"
  node_config 1 2; node_start 1
  export LOADGEN_CAFILE="$TMP/n1/data/keys/ca.pem"
  lg insert_http_c32_b1 insert --url "$(url_of 1)" --clients "$BENCH_CLIENTS" --batch 1 --duration-s "$D" --table http
  lg insert_https_c32_b1 insert --url "https://$(ip_of 1):9926/" --clients "$BENCH_CLIENTS" --batch 1 --duration-s "$D" --table https
  node_stop 1
  MESH_TLS=1 mesh_up
  repl_table lag lag lag_bg
  lg lag_tls_idle lag --from "$(url_of 1)" --to "$(url_of 2)" --db lag --count "$BENCH_LAG_COUNT" --no-setup
  for rate in $BENCH_LAG_RATES; do
    bgc=$((rate / 300)); [ "$bgc" -ge 4 ] || bgc=4
    lg "lag_tls_$rate" lag --from "$(url_of 1)" --to "$(url_of 2)" --db lag --count "$BENCH_LAG_COUNT" --no-setup \
      --rate "$rate" --background-clients "$bgc"
  done
  stop_all
  MESH_TLS=1 catchup_run catchup_tls
fi

# ------------------------------------------------------------------ csvload
if has_phase csvload; then
  PHASE=csvload; log "== bulk load from a CSV file: csv_file_load of $BENCH_CSV_RECORDS rows"
  CSV=$TMP/csvload.csv
  # The load generator's record (scripts/loadgen write_record), as CSV.
  awk -v n="$BENCH_CSV_RECORDS" 'BEGIN{
    split("Denver Boulder Austin Seattle Portland Chicago Boston Phoenix", city, " ")
    note = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmo"
    print "id,name,email,city,score,active,note"
    for (i = 0; i < n; i++)
      printf "%d,user-%06d,user%d@example.test,%s,%d,%s,\"%s\"\n", i, i, i, city[i % 8 + 1],
        (i * 2654435761) % 1000, (i % 3 == 0) ? "true" : "false", note
  }' > "$CSV"
  # Reference: the same number of records in 1,000-record insert requests on a fresh node (its
  # own, so they do not raise the loading node's VmHWM). The same amount, not a few seconds'
  # worth: a long load pays for the compactions a short one leaves behind.
  node_config 1 0; node_start 1
  lg insert_b1000_csvref insert --url "$(url_of 1)" --clients "$BENCH_LOAD_CLIENTS" --batch 1000 --records "$BENCH_CSV_RECORDS" --table ref
  REF=$(jq -r .records_per_s <<<"$LG")
  node_stop 1
  node_config 1 0; node_start 1
  op 1 '{"operation":"create_database","database":"csv"}' >/dev/null
  op 1 '{"operation":"create_table","database":"csv","table":"rows","primary_key":"id"}' >/dev/null
  rss0=$(status_kb "${NPID[1]}" VmRSS)
  wait_quiet
  cpu_begin
  t0=$(date +%s.%N)
  job=$(op 1 "{\"operation\":\"csv_file_load\",\"database\":\"csv\",\"table\":\"rows\",\"file_path\":\"$CSV\"}" | jq -r .job_id)
  [ -n "$job" ] && [ "$job" != null ] || die "csv_file_load did not start a job"
  # Polled every 2 s: on a 2-core box a 50 ms loop of curl + jq + awk cost 12-15 CPU-s over a
  # 35 s load (other_processes_cpu_s), and twice a second still ~1 CPU-s, all taken from the
  # node being measured (the reference inserts have no poller). The rate is the job's own
  # start-to-end time (job_ms), so the interval does not blur it; the peak RSS is the
  # kernel's VmHWM, the samples only show the shape.
  rss_max=0
  while :; do
    rec=$(op 1 "{\"operation\":\"get_job\",\"id\":\"$job\"}")
    r=$(status_kb "${NPID[1]}" VmRSS); [ "$r" -gt "$rss_max" ] && rss_max=$r
    [ "$(jq -r '.[0].status' <<<"$rec")" = IN_PROGRESS ] || break
    sleep 2
  done
  t1=$(date +%s.%N)
  cpu=$(cpu_end 0)
  [ "$(jq -r '.[0].status' <<<"$rec")" = COMPLETE ] || die "csv_file_load ended: $rec"
  emit csvload "$(jq -c --argjson n "$BENCH_CSV_RECORDS" --argjson t0 "$t0" --argjson t1 "$t1" --argjson ref "$REF" \
    --argjson count "$(count_on 1 csv rows)" --argjson bytes "$(stat -c %s "$CSV")" \
    --argjson hwm "$(status_kb "${NPID[1]}" VmHWM)" --argjson rss "$(status_kb "${NPID[1]}" VmRSS)" \
    --argjson rss0 "$rss0" --argjson rssmax "$rss_max" --argjson cpu "$cpu" \
    '.[0] as $j | {records:$n, record_count:$count, file_bytes:$bytes, job_message:$j.message,
      job_ms:($j.end_datetime - $j.start_datetime), wall_s:((($t1 - $t0) * 1000 | round) / 1000),
      records_per_s:($n / ($j.end_datetime - $j.start_datetime) * 1000 | floor), insert_b1000_records_per_s:$ref,
      vs_insert_b1000:((($n / ($j.end_datetime - $j.start_datetime) * 1000) / $ref * 100 | round) / 100),
      rss_before_kb:$rss0, hwm_kb:$hwm, rss_max_sampled_kb:$rssmax, rss_after_kb:$rss, cpu:$cpu}' <<<"$rec")"
  [ "$(count_on 1 csv rows)" = "$BENCH_CSV_RECORDS" ] || die "the table holds $(count_on 1 csv rows) of $BENCH_CSV_RECORDS rows"
  node_stop 1
  rm -f -- "$CSV"
fi

# ------------------------------------------------------------------ Harper
PHASE=harper
HSRC=recorded HKIND=recorded
# Harper's reference bench covers the write, start-up, RSS and replication phases: skipped when
# none of them ran (the sql phase measures its own Harper figures).
if [ "$BENCH_HARPER" = 1 ] && { has_phase single || has_phase rss || has_phase startup || has_phase repl || has_phase catchup; }; then
  HJ=${BENCH_OUT%.jsonl}.harper-$RUN_ID.jsonl
  log "== Harper 4.7.29 reference bench ($HARPER_REF_DIR/bench.sh -> $HJ)"
  hargs=(BENCH_OUT="$HJ" BENCH_PHASES="A B C" BENCH_QUIET_MAX_S="$BENCH_QUIET_MAX_S")
  [ "$Q" = 1 ] && hargs+=(BENCH_RECORDS=2000 BENCH_LAG_COUNT=100 BENCH_CATCHUP_RECORDS=2000 BENCH_IDLE_S=5)
  [ "$IN_SKERRY_BENCH_NETNS" = 1 ] && hargs+=(IN_HARPER_NETNS=1)   # already loopback-only
  if env -u BENCH_RECORDS -u BENCH_CLIENTS -u BENCH_LAG_COUNT -u BENCH_CATCHUP_RECORDS -u BENCH_IDLE_S \
      "${hargs[@]}" "$HARPER_REF_DIR/bench.sh" >&2; then
    HSRC=$HJ HKIND="measured now"
  else
    log "Harper's bench failed: using the recorded Harper figures"
  fi
elif [ -n "$BENCH_HARPER_JSONL" ]; then
  HSRC=$(cd "$(dirname "$BENCH_HARPER_JSONL")" && pwd)/$(basename "$BENCH_HARPER_JSONL")
  HKIND="measured earlier ($(basename "$HSRC"))"
fi
emit harper "$(jq -n --arg s "$HSRC" --arg k "$HKIND" '{source:$s, kind:$k}')"

REPORT=${BENCH_OUT%.jsonl}-$RUN_ID.txt
python3 "$HELPER" annotate --out "$BENCH_OUT" --run "$RUN_ID"
python3 "$HELPER" report --out "$BENCH_OUT" --run "$RUN_ID" | tee "$REPORT"
log "results: $BENCH_OUT (run_id $RUN_ID), table: $REPORT"
