//! The node's log file: one JSON entry per line (`timestamp`, `thread`, `level`, `tags`,
//! `message`, Harper's `read_log` shape) in `<logging.root>/skerry.log`, rotated at
//! `logging.rotation.maxSize` with 4 older files kept, so the folder never grows past five
//! times that size. `read_log` reads it back with Harper's filters.
//!
//! Lines arrive already redacted (the logger in `main` redacts before anything is written).
//! Lines logged before the folder is known (the first lines of a start) wait in a small
//! bounded buffer. Writing never fails the caller: a log that cannot be written is dropped.

use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Older files kept besides the current one.
pub const KEEP: usize = 4;
/// File name of the current log.
pub const FILE: &str = "skerry.log";
/// Lines kept in memory until the file is attached.
const PENDING_MAX: usize = 1000;

struct State {
    dir: Option<PathBuf>,
    file: Option<File>,
    size: u64,
    max: u64,
    rotate: bool,
    pending: Vec<String>,
    disabled: bool,
}

static STATE: OnceLock<Mutex<State>> = OnceLock::new();

fn state() -> &'static Mutex<State> {
    STATE.get_or_init(|| {
        Mutex::new(State {
            dir: None,
            file: None,
            size: 0,
            max: u64::MAX,
            rotate: false,
            pending: Vec::new(),
            disabled: false,
        })
    })
}

/// One entry as a line of JSON.
pub fn entry_line(now_ms: u64, thread: &str, level: &str, tag: &str, message: &str) -> String {
    let mut line = json!({
        "timestamp": crate::util::time::iso8601(now_ms),
        "thread": thread,
        "level": level,
        "tags": [tag],
        "message": message,
    })
    .to_string();
    line.push('\n');
    line
}

/// Appends one entry (or keeps it until [`attach`]).
pub fn write(line: String) {
    let mut s = state().lock().unwrap_or_else(|p| p.into_inner());
    if s.disabled {
        return;
    }
    if s.file.is_none() {
        if s.pending.len() < PENDING_MAX {
            s.pending.push(line);
        }
        return;
    }
    append(&mut s, &line);
}

fn append(s: &mut State, line: &str) {
    if s.rotate && s.size > 0 && s.size + line.len() as u64 > s.max {
        rotate(s);
    }
    if let Some(f) = s.file.as_mut() {
        if f.write_all(line.as_bytes()).is_ok() {
            s.size += line.len() as u64;
        }
    }
}

fn rotate(s: &mut State) {
    let Some(dir) = s.dir.clone() else { return };
    s.file = None;
    for i in (1..KEEP).rev() {
        let _ = std::fs::rename(
            dir.join(format!("{FILE}.{i}")),
            dir.join(format!("{FILE}.{}", i + 1)),
        );
    }
    let _ = std::fs::rename(dir.join(FILE), dir.join(format!("{FILE}.1")));
    s.file = open(&dir).ok();
    s.size = 0;
}

fn open(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(FILE))
}

/// Starts writing to `dir` (created owner-only if missing), with what was logged so far.
pub fn attach(dir: &Path, max_size: u64, rotate: bool) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let file = open(dir)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut s = state().lock().unwrap_or_else(|p| p.into_inner());
    s.dir = Some(dir.to_path_buf());
    s.file = Some(file);
    s.size = size;
    s.max = max_size.max(4096);
    s.rotate = rotate;
    for line in std::mem::take(&mut s.pending) {
        append(&mut s, &line);
    }
    Ok(())
}

/// No log file (`logging.file: false`): drop what was buffered and stop buffering.
pub fn disable() {
    let mut s = state().lock().unwrap_or_else(|p| p.into_inner());
    s.disabled = true;
    s.pending.clear();
}

/// `read_log`'s filters, parsed and checked by the caller.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub level: Option<String>,
    pub from_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub start: usize,
    pub limit: usize,
    pub descending: bool,
}

/// The entries of the log folder matching `f`, oldest first (newest first when descending),
/// after skipping `start`, at most `limit`. Reads the files line by line: memory is bounded
/// by `limit` (plus `start` when descending, which must see the newest lines first).
pub fn read(dir: &Path, f: &Filter) -> Vec<Value> {
    let mut files: Vec<PathBuf> = (1..=KEEP)
        .rev()
        .map(|i| dir.join(format!("{FILE}.{i}")))
        .collect();
    files.push(dir.join(FILE));
    let matches = |v: &Value| {
        if let Some(l) = &f.level {
            if v["level"].as_str() != Some(l.as_str()) {
                return false;
            }
        }
        let ts = v["timestamp"]
            .as_str()
            .and_then(crate::util::time::parse_iso8601);
        match (ts, f.from_ms, f.until_ms) {
            (None, Some(_), _) | (None, _, Some(_)) => false,
            (Some(t), from, until) => {
                from.is_none_or(|from| t >= from) && until.is_none_or(|u| t <= u)
            }
            (None, None, None) => true,
        }
    };
    let lines = files
        .into_iter()
        .filter_map(|p| File::open(p).ok())
        .flat_map(|file| BufReader::new(file).lines().map_while(Result::ok))
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .filter(matches);
    if f.descending {
        // Keep only the newest start + limit entries while reading.
        let keep = f.start.saturating_add(f.limit);
        let mut ring = std::collections::VecDeque::with_capacity(keep.min(1 << 16));
        for v in lines {
            if ring.len() == keep {
                ring.pop_front();
            }
            if keep > 0 {
                ring.push_back(v);
            }
        }
        ring.into_iter().rev().skip(f.start).take(f.limit).collect()
    } else {
        lines.skip(f.start).take(f.limit).collect()
    }
}
