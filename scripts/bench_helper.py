#!/usr/bin/env python3
"""Helper of scripts/bench.sh (std-only Python 3). Not meant to be run by hand.

  bench_helper.py start --bin B --config C --log L --url URL [--user U --pass P]
                        [--wait-count DB TABLE N] [--timeout-s S] [--exit-file F]
      Spawns B --config C (stdout/stderr appended to L; environment inherited), takes t0
      just before the spawn, polls describe_all back-to-back (new connection each try, ~1 ms
      apart) until it answers 200, then optionally polls describe_table DB.TABLE until
      record_count >= N (every 10 ms, keep-alive, sampling the child's VmRSS). Prints ONE JSON
      line (pid, ready_ms, count_ms, ...) and flushes it, then stays as the child's parent until
      it exits (so the node is reaped; SIGTERM/SIGINT are forwarded), then writes the node's exit
      status and total CPU seconds (wait4 rusage) to F. Exit status 3 if the
      node never answered or died, 2 if the count was not reached.

  bench_helper.py report --out FILE --run RUN_ID
      Prints the human-readable tables of one run (figures vs targets vs Harper, CPU noise)
      from the JSON lines bench.sh appended to FILE.
"""
import base64
import http.client
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time


# ----------------------------------------------------------------------------- start

def _status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _own_cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return round(r.ru_utime + r.ru_stime, 3)


def cmd_start(argv):
    a = {"user": "admin", "pass": "password", "timeout-s": "60"}
    wait = None
    i = 0
    while i < len(argv):
        k = argv[i][2:]
        if k == "wait-count":
            wait = (argv[i + 1], argv[i + 2], int(argv[i + 3]))
            i += 4
        else:
            a[k] = argv[i + 1]
            i += 2
    url = a["url"]
    assert url.startswith("http://127."), "loopback (127.x.y.z) URLs only"
    hostport = url[len("http://"):].rstrip("/")
    host, port = hostport.rsplit(":", 1)
    port = int(port)
    timeout = float(a["timeout-s"])
    auth = "Basic " + base64.b64encode(f"{a['user']}:{a['pass']}".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": auth}
    log = open(a["log"], "ab")
    out = {"pid": None}

    t0 = time.monotonic()
    child = subprocess.Popen([a["bin"], "--config", a["config"]], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=log, start_new_session=True)
    out["pid"] = child.pid

    def forward(sig, _frame):
        try:
            child.send_signal(sig)
        except OSError:
            pass
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)

    def finish(code):
        out["helper_cpu_s"] = _own_cpu_s()
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
        if code != 0 and child.poll() is None and out.get("ready_ms") is None:
            child.kill()
        # reap the node ourselves to get its total CPU (including shutdown) for bench.sh's accounting
        while True:
            try:
                _, st, ru = os.wait4(child.pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                st, ru = 0, None
                break
        if a.get("exit-file"):
            with open(a["exit-file"], "w") as f:
                f.write(json.dumps({"status": os.waitstatus_to_exitcode(st),
                                    "cpu_s": round(ru.ru_utime + ru.ru_stime, 3) if ru else None}) + "\n")
        rc = os.waitstatus_to_exitcode(st)
        sys.exit(code if code != 0 else (rc if rc >= 0 else 0))

    body = b'{"operation":"describe_all"}'
    tries = 0
    while True:
        tries += 1
        c = http.client.HTTPConnection(host, port, timeout=5)
        try:
            c.request("POST", "/", body=body, headers=headers)
            r = c.getresponse()
            r.read()
            if r.status == 200:
                out["ready_ms"] = round((time.monotonic() - t0) * 1000, 3)
                break
        except (OSError, http.client.HTTPException):
            pass
        finally:
            c.close()
        if child.poll() is not None:
            out["error"] = f"node exited with status {child.returncode} before answering"
            finish(3)
        if time.monotonic() - t0 > timeout:
            out["error"] = f"no answer within {timeout} s"
            finish(3)
        time.sleep(0.001)
    out["ready_polls"] = tries
    out["rss_kb_at_ready"] = _status_kb(child.pid, "VmRSS")

    if wait:
        db, table, n = wait
        q = json.dumps({"operation": "describe_table", "database": db, "table": table}).encode()
        c = http.client.HTTPConnection(host, port, timeout=10)
        count, polls, rss_max, code = 0, 0, 0, 2
        first_seen = None
        while time.monotonic() - t0 < timeout:
            polls += 1
            try:
                c.request("POST", "/", body=q, headers=headers)
                r = c.getresponse()
                data = r.read()
                if r.status == 200:
                    count = json.loads(data).get("record_count", count)
            except (OSError, http.client.HTTPException, ValueError):
                c.close()
                c = http.client.HTTPConnection(host, port, timeout=10)
            rss = _status_kb(child.pid, "VmRSS") or 0
            rss_max = max(rss_max, rss)
            if count > 0 and first_seen is None:
                first_seen = round((time.monotonic() - t0) * 1000, 3)
            if count >= n:
                code = 0
                break
            if child.poll() is not None:
                out["error"] = f"node exited with status {child.returncode} while catching up"
                break
            time.sleep(0.01)
        c.close()
        out.update({"count_ms": round((time.monotonic() - t0) * 1000, 3) if code == 0 else None,
                    "first_record_ms": first_seen, "record_count": count, "expect": n,
                    "count_polls": polls, "rss_max_sampled_kb": rss_max,
                    "rss_kb": _status_kb(child.pid, "VmRSS"), "hwm_kb": _status_kb(child.pid, "VmHWM")})
        if code != 0:
            out.setdefault("error", f"record_count {count} < {n} after {timeout} s")
        finish(code)
    finish(0)


# ----------------------------------------------------------------------------- report

# Harper 4.7.29 reference figures recorded on this machine: spec/harper-live/BENCH.md, run 5 (quiet).
HARPER_RECORDED = {
    "insert_c4_b1": 789, "insert_c4_b1_p50": 4.2, "insert_c4_b1_p99": 15.2,
    "insert_c4_b100": 4963, "insert_c1_b1": 472, "insert_c1_b100": 4428,
    "idle_rss": 284.0, "idle_hwm": 321.0,
    "startup_empty": 3.4 * 1000, "startup_restart": 3.1 * 1000,  # first start after install; median of 3 restarts
    "lag_idle_p50": 3.5, "lag_idle_p99": 13.5, "lag_ack_p50": 3.9,
    "catchup": 10000 / 2.38,
    "repl_ack_c4_b1_1to2": 538,
}
# Harper 4.7.29's figures of the sql phase's four requests, recorded while capturing issue 13
# (captures/issue13/bench: 100,000-record table, 4 clients, 5 s each; the reference bench does not
# run them, so they complete a measured Harper run too).
HARPER_SQL_RECORDED = {
    "sql_point_nosql": 677.399, "sql_point_sql": 191.808,
    "sql_range_nosql": 114.164, "sql_range_sql": 0.878,
}


def harper_from_jsonl(path):
    """Figures of a measured Harper run (tools/harper-reference/bench.sh output), same keys."""
    h = {}
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        b, cmd = d.get("bench"), d.get("cmd")
        if b == "startup_cold":
            h["startup_empty"] = d["start_to_first_op_s"] * 1000
        elif b == "startup_warm":
            h["startup_restart"] = statistics.median(d["start_to_first_op_s"]) * 1000
        elif b == "idle_rss":
            h["idle_rss"], h["idle_hwm"] = d["rss_kb"] / 1024, d["hwm_kb"] / 1024
        elif b == "cpu":
            h.setdefault("_cpu", []).append(d)
        elif cmd in ("writes", "load") and d.get("db") == "bench":
            key = {"w1": "insert_c4_b1", "w100": "insert_c4_b100", "w1c1": "insert_c1_b1",
                   "w100c1": "insert_c1_b100", "rw1": "repl_ack_c4_b1_1to2"}.get(d.get("table"))
            if key:
                h[key] = d["records_per_s"]
                if key == "insert_c4_b1":
                    h["insert_c4_b1_p50"], h["insert_c4_b1_p99"] = d["latency_ms"]["p50"], d["latency_ms"]["p99"]
        elif cmd == "lag":
            h["lag_idle_p50"], h["lag_idle_p99"] = d["lag_ms"]["p50"], d["lag_ms"]["p99"]
            h["lag_ack_p50"] = d["insert_ack_ms"]["p50"]
        elif cmd == "catchup" and d.get("all_records_s"):
            h["catchup"] = d["expect"] / d["all_records_s"]
    return h


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    a = abs(v)
    s = f"{v:,.0f}" if a >= 100 else (f"{v:.1f}" if a >= 10 else f"{v:.2f}")
    return s + (" " + unit if unit else "")


# Skerry figure (name, field) -> how its ceiling is computed from the ceiling_* lines of the
# same run (None when the ceiling phase did not run). A write at c clients can at most group
# c requests per fdatasync, so the fsync ceiling of that shape is fsyncs/s x c.
def _ceiling(m, name):
    def c(n, f):
        return (m.get("ceiling_" + n) or {}).get(f)
    http, fs, fj = c("http", "requests_per_s"), c("fsync", "fsyncs_per_s"), c("fjall", "records_per_s")

    def lowest(*xs):
        xs = [x for x in xs if x]
        return min(xs) if xs else None
    clients = (m.get(name) or {}).get("clients") or 1
    table = {
        "insert_c32_b1": ("records_per_s", lowest(http, fs and fs * clients)),
        "insert_c4_b1": ("records_per_s", lowest(http, fs and fs * clients)),
        "insert_c1_b1": ("records_per_s", lowest(http, fs and fs * clients)),
        "insert_b1000": ("records_per_s", fj),
        "insert_c4_b100": ("records_per_s", fj),
        "insert_c1_b100": ("records_per_s", fj),
        "read_c32": ("reads_per_s", http),
        "read_c32_1m": ("reads_per_s", http),
        "catchup": ("records_per_s", fj),
        "insert_https_c32_b1": ("records_per_s", lowest(http, fs and fs * clients)),
        "insert_b1000_csvref": ("records_per_s", fj),
        "csvload": ("records_per_s", fj),
    }
    if name.startswith("load"):
        return ("records_per_s", fj)
    return table.get(name)


def ceiling_pct(m, name):
    spec = _ceiling(m, name)
    if not spec or not spec[1]:
        return None
    v = (m.get(name) or {}).get(spec[0])
    return None if v is None else round(100.0 * v / spec[1], 1)


def cmd_annotate(argv):
    """Adds ceiling_pct to every line of the run whose figure has a ceiling (rewrites the file)."""
    a = dict(zip([x[2:] for x in argv[0::2]], argv[1::2]))
    with open(a["out"]) as f:
        raw = f.read().splitlines()
    parsed = []
    for line in raw:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            parsed.append(None)
    m = {d["name"]: d for d in parsed if d and d.get("run_id") == a["run"]}
    out = []
    for line, d in zip(raw, parsed):
        if d and d.get("run_id") == a["run"]:
            pct = ceiling_pct(m, d.get("name", ""))
            if pct is not None:
                d["ceiling_pct"] = pct
                line = json.dumps(d, separators=(",", ":"))
        out.append(line)
    with open(a["out"], "w") as f:
        f.write("\n".join(out) + "\n")


def cmd_report(argv):
    a = dict(zip([x[2:] for x in argv[0::2]], argv[1::2]))
    run = a["run"]
    lines = []
    for line in open(a["out"]):
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if d.get("run_id") == run:
            lines.append(d)
    m = {}  # name -> last line of that name (per variant)
    for d in lines:
        m[d["name"]] = d
    env = m.get("env", {})
    harper_src = m.get("harper", {}).get("source", "recorded")
    if harper_src == "recorded":
        H, hlabel = HARPER_RECORDED, "recorded (BENCH.md run 5)"
    else:
        H, hlabel = harper_from_jsonl(harper_src), m["harper"].get("kind", "measured")
    H = {**HARPER_SQL_RECORDED, **H}
    # The sql phase measured Harper's four requests in this run (BENCH_HARPER=1): those win.
    sql_now = False
    for twin, kinds in (("point", ("point", "sql-point")), ("range", ("range", "sql-range"))):
        for key, kind in zip((f"sql_{twin}_nosql", f"sql_{twin}_sql"), kinds):
            v = (m.get(f"harper_sql_read_{kind}") or {}).get("reads_per_s")
            if v is not None:
                H[key], sql_now = v, True

    rows = []  # (label, value, target text, PASS/MISS, Harper value, ratio)

    def get(name, *path):
        d = m.get(name)
        for p in path:
            if d is None:
                return None
            d = d.get(p) if isinstance(d, dict) else None
        return d

    def row(label, v, unit, op=None, tgt=None, hkey=None, tgt_text=None, hnote="", ratio=True, ceil=None):
        """One figure; rows without a Skerry value (phase not run) are left out. `ceil` names the
        measurement whose ceiling_pct is shown beside the value."""
        if v is None:
            return
        pct = ceiling_pct(m, ceil) if ceil else None
        if pct is not None:
            label = f"{label} [{pct:.0f}% of ceiling]"
        ok = None
        if tgt is not None:
            ok = (v >= tgt) if op == ">=" else (v < tgt)
        tt = tgt_text or (f"{op} {fmt(tgt, unit)}" if tgt is not None else "")
        hv = H.get(hkey) if hkey else None
        rt = ""
        if hv and v and ratio:
            r = v / hv
            rt = f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"
        rows.append((label, fmt(v, unit) if not isinstance(v, str) else v, tt,
                     {True: "PASS", False: "MISS", None: ""}[ok], (fmt(hv, unit) + hnote) if hv else "", rt))

    def samples(name):
        v = get(name, "samples_ms")
        return " [" + ", ".join(fmt(x) for x in v) + "]" if v else ""
    mib = lambda kb: None if kb is None else kb / 1024  # noqa: E731
    row("ceiling: fdatasync/s (64-byte appends, data folder)", get("ceiling_fsync", "fsyncs_per_s"), "/s")
    row("ceiling: raw fjall, durable 1,000-record batches, 8 indexes", get("ceiling_fjall", "records_per_s"), "rec/s")
    row("ceiling: fjall point gets, 2 threads", get("ceiling_gets", "gets_per_s"), "gets/s")
    row(f"ceiling: no-op HTTP via tiny_http, {get('ceiling_http', 'clients')} clients", get("ceiling_http", "requests_per_s"), "req/s")
    row("ceiling: WebSocket 16 KiB binary messages", get("ceiling_ws", "mib_per_s"), "MiB/s")
    row("stripped release binary", mib(get("binary_size", "stripped_kb")), "MiB", "<", 10)
    row(f"insert 1 rec/req, {get('insert_c32_b1', 'clients')} clients", get("insert_c32_b1", "records_per_s"), "rec/s", ">=", 20000, ceil="insert_c32_b1")
    row("  p99 latency", get("insert_c32_b1", "p99_ms"), "ms", "<", 10)
    if "sync_per_commit" in m:
        spc = get("sync_per_commit", "core_syncs_per_commit")
        ok = None if spc is None else abs(spc - 1) <= 0.01
        rows.append(("  fdatasync per group commit (perf, core thread)",
                     "-" if spc is None else f"{spc:.3f} ({fmt(get('sync_per_commit', 'core_syncs'))} / {fmt(get('sync_per_commit', 'group_commits'))})",
                     "= 1", {True: "PASS", False: "MISS", None: ""}[ok], "", ""))
    row("insert 1,000 rec/req, %s clients" % (get("insert_b1000", "clients") or "?"),
        get("insert_b1000", "records_per_s"), "rec/s", ">=", 150000, ceil="insert_b1000")
    row(f"search_by_id, {get('read_c32', 'clients')} clients", get("read_c32", "reads_per_s"), "reads/s", ">=", 50000, ceil="read_c32")
    row("  p99 latency", get("read_c32", "p99_ms"), "ms")
    row(f"search_by_id, 32 clients, {fmt(get('read_c32_1m', 'ids'))}-record table", get("read_c32_1m", "reads_per_s"),
        "reads/s", ">=", 50000)
    row("insert 1 rec/req, 4 clients (Harper's)", get("insert_c4_b1", "records_per_s"), "rec/s", hkey="insert_c4_b1", ceil="insert_c4_b1")
    if "insert_c4_b1" in m:
        rows.append(("  p50 / p99 latency", f"{fmt(get('insert_c4_b1', 'p50_ms'))} / {fmt(get('insert_c4_b1', 'p99_ms'))} ms",
                     "", "", f"{fmt(H.get('insert_c4_b1_p50'))} / {fmt(H.get('insert_c4_b1_p99'))} ms"
                     if H.get("insert_c4_b1_p50") else "", ""))
    row("insert 100 rec/req, 4 clients (Harper's)", get("insert_c4_b100", "records_per_s"), "rec/s", hkey="insert_c4_b100", ceil="insert_c4_b100")
    row("insert 1 rec/req, 1 client (Harper's)", get("insert_c1_b1", "records_per_s"), "rec/s", hkey="insert_c1_b1", ceil="insert_c1_b1")
    row("insert 100 rec/req, 1 client (Harper's)", get("insert_c1_b100", "records_per_s"), "rec/s", hkey="insert_c1_b100", ceil="insert_c1_b100")
    variants = [d["variant"] for d in lines if d.get("name", "").startswith("idle_rss") and "variant" in d]
    seen = []
    for var in variants:
        if var in seen:
            continue
        seen.append(var)
        sfx = "" if var == "unset" else f"@purge{var}"
        tag = "MIMALLOC_PURGE_DELAY " + ("unset" if var == "unset" else f"={var}")
        row(f"idle RSS ({tag})", mib(get("idle_rss" + sfx, "rss_kb")), "MiB", "<", 30, hkey="idle_rss")
        row("  idle VmHWM", mib(get("idle_rss" + sfx, "hwm_kb")), "MiB", hkey="idle_hwm")
        row(f"RSS after loading {fmt(get('load' + sfx, 'records'))} ({tag})", mib(get("rss_after_load" + sfx, "rss_kb")),
            "MiB", "<", 150)
        row("  VmHWM (peak) during load", mib(get("rss_after_load" + sfx, "hwm_kb")), "MiB", "<", 150)
        row("  VmRSS %s s later" % (get("rss_after_load" + sfx, "settle_s") or "?"),
            mib(get("rss_after_load" + sfx, "rss_settled_kb")), "MiB", "<", 150)
        row("  bulk load rate (load mode)", get("load" + sfx, "records_per_s"), "rec/s")
        row("  VmRSS after restart on the loaded store", mib(get("startup_loaded" + sfx, "rss_kb_idle")), "MiB")
        if sfx:
            row("  start -> first op on the loaded store" + samples("startup_loaded" + sfx),
                get("startup_loaded" + sfx, "median_ms"), "ms", "<", 1000)
    row("start -> first op, empty store, first start" + samples("startup_empty"), get("startup_empty", "median_ms"),
        "ms", "<", 100, hkey="startup_empty")
    row("start -> first op, empty store, restart" + samples("startup_empty_restart"),
        get("startup_empty_restart", "median_ms"), "ms", "<", 100, hkey="startup_restart")
    row(f"start -> first op, {fmt(get('startup_loaded', 'records'))} records" + samples("startup_loaded"),
        get("startup_loaded", "median_ms"), "ms", "<", 1000, hkey="startup_restart",
        hnote=" (empty store)", ratio=False)
    for nm in dict.fromkeys(d["name"] for d in lines if d.get("name", "").startswith("lag_") and "_tls" not in d["name"]):
        rate = get(nm, "bg_target_rate")
        lab = f"{rate:,.0f} w/s" if rate else "idle"
        bg = get(nm, "bg_achieved_rate")
        extra = f" (bg {fmt(bg)}/s)" if bg else ""
        if get(nm, "timeouts"):
            extra += f" ({get(nm, 'timeouts')} of {get(nm, 'count')} samples timed out)"
        row(f"replication lag A->B p50, {lab}{extra}", get(nm, "lag_p50_ms"), "ms", "<", 2,
            hkey="lag_idle_p50" if nm == "lag_idle" else None)
        row("  p99", get(nm, "lag_p99_ms"), "ms", "<", 10, hkey="lag_idle_p99" if nm == "lag_idle" else None)
        row("  insert ack p50 on A", get(nm, "ack_p50_ms"), "ms", hkey="lag_ack_p50" if nm == "lag_idle" else None)
    single = get("insert_c32_b1", "records_per_s")
    half = single / 2 if single else None
    row("replicated writes on 3 nodes, converged", get("repl_throughput", "converged_records_per_s"), "rec/s",
        ">=", half, tgt_text=(f">= {fmt(half, 'rec/s')} (half of single)" if half else ">= half of single (n/a)"),
        hkey="repl_ack_c4_b1_1to2", hnote=" (*)", ratio=False)
    row("  acknowledged (sum of 3 nodes)", get("repl_throughput", "ack_records_per_s"), "rec/s")
    row(f"catch-up after downtime, {fmt(get('catchup', 'expect'))} records", get("catchup", "records_per_s"),
        "rec/s", ">=", 100000, hkey="catchup", hnote=" (**)", ceil="catchup")
    row("  from first answer to caught up", get("catchup", "records_per_s_after_ready"), "rec/s")
    row("  peak RSS (VmHWM) of the catching-up node", mib(get("catchup", "hwm_kb")), "MiB")
    row("  idle RSS of each clustered node", get("repl_idle_rss", "rss_mib_text"), "")

    # sql: each SQL read beside its NoSQL twin of the same run (target: within 20 %), and Harper's
    # recorded figures of the same four requests (4 clients, 100,000 records; see bench.sh)
    for kind, twin, label in (("sql-point", "point", "SELECT * WHERE id = r"),
                              ("sql-range", "range", "SELECT * WHERE score BETWEEN s AND s")):
        base = get(f"sql_read_{twin}", "reads_per_s")
        tname = "search_by_id" if twin == "point" else "search_by_conditions (between)"
        row(f"{tname}, {get(f'sql_read_{twin}', 'clients')} clients, {fmt(get(f'sql_read_{twin}', 'ids'))} records",
            base, "reads/s", hkey=f"sql_{twin}_nosql", hnote=" (***)")
        row(f"  sql {label}", get(f"sql_read_{kind}", "reads_per_s"), "reads/s", ">=",
            base * 0.8 if base else None, tgt_text=f">= 80% of {fmt(base, 'reads/s')}" if base else "",
            hkey=f"sql_{twin}_sql", hnote=" (***)")
        lat = get(f"sql_read_{kind}")  # None when the phase did not run: no row then
        row("    p50 / p99 latency", lat and f"{fmt(lat.get('p50_ms'))} / {fmt(lat.get('p99_ms'))} ms", "")

    # TLS: each figure beside its plain counterpart of the same run (targets: HTTPS within 20 %
    # of HTTP, wss:// lag and catch-up within 15 % of ws://)
    http = get("insert_http_c32_b1", "records_per_s")
    row("HTTPS insert 1 rec/req, %s clients" % (get("insert_https_c32_b1", "clients") or "?"),
        get("insert_https_c32_b1", "records_per_s"), "rec/s", ">=", http * 0.8 if http else None,
        tgt_text=f">= 80% of HTTP's {fmt(http, 'rec/s')}" if http else "")
    row("  plain HTTP on the same node", http, "rec/s")
    for nm in dict.fromkeys(d["name"] for d in lines if d.get("name", "").startswith("lag_tls")):
        plain = nm.replace("lag_tls", "lag")
        rate = get(nm, "bg_target_rate")
        lab = f"{rate:,.0f} w/s" if rate else "idle"
        p99 = get(plain, "lag_p99_ms")
        row(f"lag over wss:// p50, {lab}", get(nm, "lag_p50_ms"), "ms")
        row("  p99", get(nm, "lag_p99_ms"), "ms", "<", p99 * 1.15 if p99 else None,
            tgt_text=f"< 115% of ws:// {fmt(p99, 'ms')}" if p99 else "")
    cu = get("catchup", "records_per_s")
    row(f"catch-up over wss://, {fmt(get('catchup_tls', 'expect'))} records", get("catchup_tls", "records_per_s"),
        "rec/s", ">=", cu * 0.85 if cu else None, tgt_text=f">= 85% of ws:// {fmt(cu, 'rec/s')}" if cu else "")

    csv_ref = get("csvload", "insert_b1000_records_per_s")
    row(f"csv_file_load, {fmt(get('csvload', 'records'))} rows", get("csvload", "records_per_s"), "rec/s",
        ">=", csv_ref, tgt_text=">= 1,000 rec/request inserts" if csv_ref else "", ceil="csvload")
    row("  1,000 rec/request inserts, %s clients (fresh node)" % (get("insert_b1000_csvref", "clients") or "?"),
        csv_ref, "rec/s", ceil="insert_b1000_csvref")
    row("  csv_file_load / 1,000 rec/request inserts", get("csvload", "vs_insert_b1000"), "x")
    row("  peak RSS (VmHWM) of the loading node", mib(get("csvload", "hwm_kb")), "MiB")
    row("  RSS after the load", mib(get("csvload", "rss_after_kb")), "MiB")

    hdr = ("figure", "Skerry", "target", "", f"Harper 4.7.29 [{hlabel}]", "Skerry/Harper")
    w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(6)]
    print(f"\nSkerry benchmark, run {run}  ({env.get('date', '')}, commit {env.get('commit', '?')}, "
          f"{env.get('cpus', '?')} CPUs{', QUICK' if env.get('quick') else ''})")
    sep = "  ".join("-" * x for x in w)
    print("  ".join(str(h).ljust(w[i]) for i, h in enumerate(hdr)))
    print(sep)
    for r in rows:
        print("  ".join(str(c).rjust(w[i]) if i in (1,) else str(c).ljust(w[i]) for i, c in enumerate(r)).rstrip())
    print(sep)
    misses = sum(1 for r in rows if r[3] == "MISS")
    passes = sum(1 for r in rows if r[3] == "PASS")
    print(f"{passes} PASS, {misses} MISS.  Start-up figures are medians of the [samples].  Ratios: throughput = Skerry/Harper (higher is better for Skerry); "
          "latency, RSS and times = Skerry/Harper (lower is better).")
    print("(*) Harper: 1 rec/req, 4 clients, writes on n1 only while replicating to n2 (not like for like).  "
          "(**) Harper: a fresh node copying 10,000 records after add_node.  " +
          ("(***) Harper: measured now, one fresh Harper node, same table and clients." if sql_now else
           "(***) Harper: recorded while capturing issue 13 (100,000 records, 4 clients, 5 s each), not run now."))

    # CPU accounting
    cl = [d for d in lines if isinstance(d.get("cpu"), dict)]
    if cl:
        print("\nCPU accounting (CPU-seconds over each measurement; other = machine busy - skerry - load generator,"
              " split into kernel = kernel threads (fsync writeback, ...) and procs = the rest)")
        h2 = ("measurement", "wall s", "machine", "skerry", "loadgen", "other", "kernel", "procs", "other/wall",
              "procs/wall", "skerry/wall", "skerry us/op", "skerry CPU s by node")
        tab = []
        for d in cl:
            c = d["cpu"]
            wall = c.get("wall_s") or 0
            per = lambda x: f"{x / wall:.2f}" if wall > 0 else "-"  # noqa: E731
            # operations the node(s) did; lag runs are left out (B's polling dominates)
            ops = {"read": d.get("reads"), "insert": d.get("records"), "load": d.get("records")}.get(d.get("mode"))
            if d["name"] in ("repl_throughput", "catchup_load", "catchup_tls_load"):
                ops = d.get("records")
            elif d["name"] in ("catchup", "catchup_tls"):
                ops = d.get("expect")
            by = c.get("skerry_cpu_s_by_node") or {}
            tab.append((d["name"], f"{wall:.2f}", f"{c['machine_busy_cpu_s']:.2f}", f"{c['skerry_cpu_s']:.2f}",
                        f"{c['loadgen_cpu_s']:.2f}", f"{c['other_cpu_s']:.2f}",
                        f"{c['other_kernel_cpu_s']:.2f}" if "other_kernel_cpu_s" in c else "-",
                        f"{c['other_processes_cpu_s']:.2f}" if "other_processes_cpu_s" in c else "-",
                        per(c["other_cpu_s"]), per(c["other_processes_cpu_s"]) if "other_processes_cpu_s" in c else "-",
                        per(c["skerry_cpu_s"]),
                        f"{c['skerry_cpu_s'] / ops * 1e6:.1f}" if ops else "-",
                        " ".join(f"{k} {v:.2f}" for k, v in by.items()) if len(by) > 1 else ""))
        w2 = [max(len(r[i]) for r in tab + [h2]) for i in range(len(h2))]
        last = len(h2) - 1
        print("  ".join(h.rjust(w2[i]) if 0 < i < last else h.ljust(w2[i]) for i, h in enumerate(h2)).rstrip())
        for r in tab:
            print("  ".join(c.rjust(w2[i]) if 0 < i < last else c.ljust(w2[i]) for i, c in enumerate(r)).rstrip())
        tot_wall = sum(d["cpu"]["wall_s"] for d in cl)
        tot_other = sum(d["cpu"]["other_cpu_s"] for d in cl)
        tot_procs = sum(d["cpu"].get("other_processes_cpu_s", 0) for d in cl)
        print(f"total: {tot_wall:.1f} s measured, other CPU {tot_other:.1f} s "
              f"({tot_other / max(tot_wall, 1e-9):.2f} CPU on average out of {env.get('cpus', '?')}), of which other "
              f"processes {tot_procs:.1f} s ({tot_procs / max(tot_wall, 1e-9):.2f} CPU); procs/wall well above 0.1 "
              "means the figure was measured on a busy machine.")
        print("Short or paced runs (lag_*) can show negative 'other': /proc/stat samples busy time at timer ticks and "
              "misses bursts that wake right after one, while per-process CPU is exact.")
    if harper_src != "recorded" and H.get("_cpu"):
        print("\nHarper CPU accounting (measured now):")
        for c in H["_cpu"]:
            print(f"  phase {c['phase']}: wall {c['wall_s']} s, machine {c['machine_busy_cpu_s']} s, "
                  f"harper {c['harper_cpu_s']} s, client {c['client_cpu_s']} s, other {c['other_cpu_s']} s")


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return
    {"start": cmd_start, "report": cmd_report, "annotate": cmd_annotate}[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
