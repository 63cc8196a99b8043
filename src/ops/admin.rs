//! Node administration operations, super_user only: `get_configuration`,
//! `set_configuration`, `system_information`, `read_log`, `restart`.
//!
//! Reads what the node is and has (config file, /proc, the log file) and writes only the
//! config file (atomically, through `config::routes_file::write_keys`). Never returns a
//! credential: configuration values under a secret-looking key are redacted.

use super::http::Context;
use crate::config::{Config, FlatKey};
use crate::core::auth::Principal;
use crate::core::error::{OpError, OpResult};
use crate::util::logfile;
use crossbeam_channel::Sender;
use serde_json::{json, Map, Value};
use std::path::Path;

/// Entries `read_log` answers when no `limit` is given, and the most it answers at all.
const READ_LOG_DEFAULT: usize = 10_000;
const READ_LOG_MAX: usize = 100_000;

/// Keys `set_configuration` applies at once (the rest need a restart).
const LIVE_KEYS: &[&str] = &["logging.level"];

pub struct AdminOps {
    pub cfg: Config,
    pub env: Vec<(String, String)>,
    /// Asks `main` to stop the node and start it again (None when embedded, e.g. in tests).
    pub restart: Option<Sender<()>>,
    pub started_ms: u64,
}

pub fn is_admin_op(name: &str) -> bool {
    matches!(
        name,
        "get_configuration" | "set_configuration" | "system_information" | "read_log" | "restart"
    )
}

fn handler_name(op: &str) -> &'static str {
    match op {
        "get_configuration" => "getConfiguration",
        "set_configuration" => "setConfiguration",
        "system_information" => "systemInformation",
        "read_log" => "readLog",
        _ => "restart",
    }
}

impl AdminOps {
    pub fn execute(
        &self,
        ctx: &Context,
        name: &str,
        body: &Map<String, Value>,
        p: &Principal,
    ) -> OpResult {
        if !p.is_super_user() {
            return Err(OpError::super_user_only(handler_name(name)));
        }
        match name {
            "get_configuration" => {
                let mut tree = crate::config::effective_tree(&self.cfg, &self.env);
                redact_secrets(&mut tree);
                Ok(tree)
            }
            "set_configuration" => {
                let replicated = match body.get("replicated") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(OpError::bad_request("'replicated' must be a boolean")),
                };
                let mut answer = self.set_configuration(body)?;
                if replicated {
                    // Harper's `replicated` array: each member's answer plus `node`, or why it
                    // failed (an empty array without replication or members).
                    let mut forwarded = body.clone();
                    forwarded.remove("replicated");
                    let entries = ctx
                        .cluster
                        .as_ref()
                        .map(|c| c.forward_configuration(&forwarded))
                        .unwrap_or_default();
                    if let Some(o) = answer.as_object_mut() {
                        o.insert("replicated".into(), Value::Array(entries));
                    }
                }
                Ok(answer)
            }
            "system_information" => Ok(self.system_information(ctx, body, p)),
            "read_log" => self.read_log(body),
            "restart" => match &self.restart {
                Some(tx) => {
                    // main stops the node (waiting for this answer to go out) and re-executes
                    // the binary with the same arguments.
                    let _ = tx.send(());
                    Ok(json!({"message": "Restarting Skerry. This may take up to 60 seconds."}))
                }
                None => Err(OpError::bad_request(
                    "this node cannot restart itself (it is not running as the skerry binary)",
                )),
            },
            _ => Err(OpError::bad_request(format!("unknown operation '{name}'"))),
        }
    }

    /// Writes the keys of `body` (all but `operation` and `replicated`) to the config file.
    pub(crate) fn set_configuration(&self, body: &Map<String, Value>) -> OpResult {
        let Some(path) = &self.cfg.source else {
            return Err(OpError::bad_request(
                "this node runs on the built-in default configuration (no --config file): there is no file to write; start it with --config FILE",
            ));
        };
        let mut changes = Vec::new();
        let mut unused = Vec::new();
        for (k, v) in body {
            if k == "operation" || k == "replicated" {
                continue;
            }
            match crate::config::resolve_flat_key(k) {
                Some(FlatKey::Used(path)) => changes.push((path, v.clone())),
                Some(FlatKey::Unused(path)) => {
                    unused.push(path.join("."));
                    changes.push((path, v.clone()));
                }
                None => {
                    return Err(OpError::bad_request(format!(
                        "unknown configuration key '{k}' (keys are paths joined by '_', e.g. logging_level, operationsApi_network_port)"
                    )))
                }
            }
        }
        if changes.is_empty() {
            return Err(OpError::bad_request(
                "no configuration key given (e.g. {\"operation\":\"set_configuration\",\"logging_level\":\"info\"})",
            ));
        }
        let next = crate::config::check_changes(path, &self.env, &changes)
            .map_err(|e| OpError::bad_request(format!("config file validation error: {e}")))?;
        crate::config::routes_file::write_keys(path, &changes)
            .map_err(|e| OpError::bad_request(format!("cannot write the config file: {e}")))?;
        let mut applied = Vec::new();
        let mut restart_needed = Vec::new();
        for (key, _) in &changes {
            let dotted = key.join(".");
            if unused.contains(&dotted) {
                continue;
            }
            if LIVE_KEYS.contains(&dotted.as_str()) {
                applied.push(dotted);
            } else {
                restart_needed.push(dotted);
            }
        }
        if applied.iter().any(|k| k == "logging.level") {
            log::set_max_level(next.logging.level);
        }
        log::info!(
            "set_configuration wrote {} to {}",
            changes
                .iter()
                .map(|(k, _)| k.join("."))
                .collect::<Vec<_>>()
                .join(", "),
            path.display()
        );
        let message = if restart_needed.is_empty() {
            "Configuration successfully set.".to_string()
        } else {
            "Configuration successfully set. You must restart Skerry for new config settings to take effect.".to_string()
        };
        Ok(json!({
            "message": message,
            "restart_required": restart_needed,
            "applied": applied,
            "not_used_by_skerry": unused,
        }))
    }

    fn read_log(&self, body: &Map<String, Value>) -> OpResult {
        if !self.cfg.logging.file {
            return Err(OpError::bad_request(
                "this node keeps no log file (logging.file is false)",
            ));
        }
        let count = |k: &str, default: usize, max: usize| -> Result<usize, OpError> {
            match body.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .map(|n| n.min(max))
                    .ok_or_else(|| {
                        OpError::bad_request(format!("'{k}' must be a non-negative integer"))
                    }),
            }
        };
        let date = |k: &str| -> Result<Option<u64>, OpError> {
            match body.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => {
                    let full = if s.len() == 10 {
                        format!("{s}T00:00:00Z")
                    } else {
                        s.clone()
                    };
                    crate::util::time::parse_iso8601(&full)
                        .map(Some)
                        .ok_or_else(|| {
                            OpError::bad_request(format!(
                            "'{k}' must be an ISO 8601 date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)"
                        ))
                        })
                }
                Some(_) => Err(OpError::bad_request(format!("'{k}' must be a string"))),
            }
        };
        const LEVELS: &[&str] = &["notify", "fatal", "error", "warn", "info", "debug", "trace"];
        let level = match body.get("level") {
            None | Some(Value::Null) => None,
            Some(Value::String(l)) if LEVELS.contains(&l.as_str()) => Some(l.clone()),
            Some(_) => {
                return Err(OpError::bad_request(format!(
                    "'level' must be one of {}",
                    LEVELS.join(", ")
                )))
            }
        };
        let descending = match body.get("order") {
            None | Some(Value::Null) => false,
            Some(Value::String(o)) if o == "asc" => false,
            Some(Value::String(o)) if o == "desc" => true,
            Some(_) => return Err(OpError::bad_request("'order' must be 'asc' or 'desc'")),
        };
        let filter = logfile::Filter {
            level,
            from_ms: date("from")?,
            until_ms: date("until")?,
            start: count("start", 0, usize::MAX)?,
            limit: count("limit", READ_LOG_DEFAULT, READ_LOG_MAX)?,
            descending,
        };
        Ok(Value::Array(logfile::read(&self.cfg.log_dir(), &filter)))
    }

    fn system_information(&self, ctx: &Context, body: &Map<String, Value>, p: &Principal) -> Value {
        let wanted: Option<Vec<String>> = body.get("attributes").and_then(|a| {
            a.as_array().map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
        });
        let want = |k: &str| wanted.as_ref().is_none_or(|w| w.iter().any(|x| x == k));
        let mut out = Map::new();
        if want("system") {
            out.insert("system".into(), system());
        }
        if want("time") {
            out.insert("time".into(), time_info());
        }
        if want("cpu") {
            out.insert("cpu".into(), cpu());
        }
        if want("memory") {
            out.insert("memory".into(), memory());
        }
        if want("disk") {
            out.insert("disk".into(), disk(&self.cfg.root_path));
        }
        if want("network") {
            out.insert("network".into(), network());
        }
        if want("harperdb_processes") {
            out.insert(
                "harperdb_processes".into(),
                json!({"core": [process(self.started_ms)], "clustering": []}),
            );
        }
        if want("table_size") || want("metrics") {
            let (sizes, metrics) = tables(ctx);
            if want("table_size") {
                out.insert("table_size".into(), sizes);
            }
            if want("metrics") {
                out.insert("metrics".into(), metrics);
            }
        }
        if want("threads") {
            out.insert("threads".into(), threads());
        }
        if want("replication") {
            if let Some(c) = &ctx.cluster {
                if let Some(Ok(st)) = c.execute("cluster_status", &Map::new(), p) {
                    out.insert("replication".into(), st);
                }
            }
        }
        Value::Object(out)
    }
}

/// Replaces values under keys that look like secrets (none of Skerry's keys are, but a
/// Harper file may carry some under ignored sections).
fn redact_secrets(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                let lk = k.to_ascii_lowercase();
                if ["password", "secret", "authorization", "private"]
                    .iter()
                    .any(|s| lk.contains(s))
                    && !val.is_null()
                    && !val.is_object()
                {
                    *val = json!("[redacted]");
                } else {
                    redact_secrets(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `key: value` lines (/proc/meminfo, /proc/self/status) as a map of the first number (kB
/// values stay in kB).
fn kv_numbers(text: &str) -> std::collections::HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let n = v.split_whitespace().next()?.parse().ok()?;
            Some((k.trim().to_string(), n))
        })
        .collect()
}

fn os_release() -> std::collections::HashMap<String, String> {
    read("/etc/os-release")
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.to_string(), v.trim_matches('"').to_string()))
        })
        .collect()
}

fn system() -> Value {
    let os = os_release();
    let hostname = read("/proc/sys/kernel/hostname").trim().to_string();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    };
    json!({
        "platform": std::env::consts::OS,
        "distro": os.get("NAME").cloned().unwrap_or_default(),
        "release": os.get("VERSION_ID").cloned().unwrap_or_default(),
        "codename": os.get("VERSION_CODENAME").cloned().unwrap_or_default(),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "arch": arch,
        "hostname": hostname,
        "fqdn": hostname,
        "skerry_version": env!("CARGO_PKG_VERSION"),
    })
}

fn time_info() -> Value {
    let uptime: f64 = read("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let tz_name = std::env::var("TZ")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| {
            std::fs::read_link("/etc/localtime").ok().and_then(|p| {
                let s = p.display().to_string();
                s.split_once("zoneinfo/").map(|(_, z)| z.to_string())
            })
        })
        .unwrap_or_else(|| "Etc/UTC".to_string());
    json!({
        "current": crate::util::time::now_ms(),
        "uptime": uptime,
        // Skerry keeps and answers every time in UTC.
        "timezone": "UTC+0000",
        "timezoneName": tz_name,
    })
}

fn cpu() -> Value {
    let info = read("/proc/cpuinfo");
    let field = |name: &str| {
        info.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load: Vec<f64> = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .filter_map(|s| s.parse().ok())
        .collect();
    json!({
        "manufacturer": field("vendor_id"),
        "brand": field("model name"),
        "cores": cores,
        "processors": info.lines().filter(|l| l.starts_with("processor")).count(),
        "load_average": load,
    })
}

fn memory() -> Value {
    let m = kv_numbers(&read("/proc/meminfo"));
    let s = kv_numbers(&read("/proc/self/status"));
    let kb = |map: &std::collections::HashMap<String, u64>, k: &str| {
        map.get(k).copied().unwrap_or(0) * 1024
    };
    let total = kb(&m, "MemTotal");
    let free = kb(&m, "MemFree");
    json!({
        "total": total,
        "free": free,
        "used": total.saturating_sub(free),
        "active": kb(&m, "Active"),
        "available": kb(&m, "MemAvailable"),
        "reclaimable": kb(&m, "SReclaimable"),
        "swaptotal": kb(&m, "SwapTotal"),
        "swapused": kb(&m, "SwapTotal").saturating_sub(kb(&m, "SwapFree")),
        "swapfree": kb(&m, "SwapFree"),
        "writeback": kb(&m, "Writeback"),
        "dirty": kb(&m, "Dirty"),
        "rss": kb(&s, "VmRSS"),
        "rss_peak": kb(&s, "VmHWM"),
    })
}

/// Bytes under `dir` (files only, symlinks not followed), walking at most `budget` entries.
fn dir_size(dir: &Path, budget: &mut u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for e in entries.filter_map(Result::ok) {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        match e.file_type() {
            Ok(t) if t.is_dir() => total += dir_size(&e.path(), budget),
            Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
            _ => {}
        }
    }
    total
}

fn disk(root: &Path) -> Value {
    let mut budget = 100_000;
    json!({
        "rootPath": root.display().to_string(),
        "rootPath_bytes": dir_size(root, &mut budget),
    })
}

fn network() -> Value {
    let stats: Vec<Value> = read("/proc/net/dev")
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let n: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (n.len() >= 16).then(|| {
                json!({
                    "iface": name.trim(),
                    "rx_bytes": n[0], "rx_dropped": n[3], "rx_errors": n[2],
                    "tx_bytes": n[8], "tx_dropped": n[11], "tx_errors": n[10],
                })
            })
        })
        .collect();
    let interfaces: Vec<Value> = stats.iter().map(|s| json!({"iface": s["iface"]})).collect();
    json!({
        "default_interface": null,
        "latency": {},
        "interfaces": interfaces,
        "stats": stats,
        "connections": [],
    })
}

fn process(started_ms: u64) -> Value {
    let s = kv_numbers(&read("/proc/self/status"));
    let cmdline: Vec<String> = read("/proc/self/cmdline")
        .split('\0')
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    json!({
        "pid": std::process::id(),
        "parentPid": s.get("PPid").copied().unwrap_or(0),
        "name": "skerry",
        "memRss": s.get("VmRSS").copied().unwrap_or(0),
        "memVsz": s.get("VmSize").copied().unwrap_or(0),
        "started": crate::util::time::iso8601(started_ms),
        "command": cmdline.first().cloned().unwrap_or_default(),
        "params": cmdline.get(1..).map(|a| a.join(" ")).unwrap_or_default(),
        "threads": s.get("Threads").copied().unwrap_or(0),
    })
}

fn threads() -> Value {
    let mut out: Vec<(u64, String)> = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let tid: u64 = e.file_name().to_str()?.parse().ok()?;
                    let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
                    Some((tid, name.trim().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    Value::Array(
        out.into_iter()
            .map(|(tid, name)| json!({"threadId": tid, "name": name}))
            .collect(),
    )
}

fn tables(ctx: &Context) -> (Value, Value) {
    let catalog = ctx.shared.catalog.load();
    let mut sizes = Vec::new();
    let mut metrics = Map::new();
    for (db, d) in &catalog.databases {
        let mut tables = Map::new();
        for (name, t) in &d.tables {
            let stats = ctx.store.table_stats(t.id).unwrap_or_default();
            let (data, index) = ctx.store.table_disk_size(t.id).unwrap_or((0, 0));
            let size = (data + index).max(stats.bytes);
            sizes.push(json!({
                "schema": db, "table": name,
                "table_size": size, "record_count": stats.count,
            }));
            tables.insert(
                name.clone(),
                json!({"entryCount": stats.count, "bytes": size}),
            );
        }
        metrics.insert(db.clone(), json!({"tables": tables}));
    }
    (Value::Array(sizes), Value::Object(metrics))
}
