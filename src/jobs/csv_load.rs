//! Bulk loads from CSV (`csv_data_load`, `csv_file_load`, `csv_url_load`): the job's work.
//!
//! Reads the CSV as a stream (the `csv` crate over the request's text, a file, or an HTTP
//! response body), types each cell as Harper does, and hands the rows to the core as ordinary
//! insert/update/upsert writes in bounded batches ([`BATCH_ROWS`] rows or [`BATCH_BYTES`] of
//! JSON, whichever comes first), each its own transaction, a few of them in flight at once
//! (see [`Pipeline`]). Must never hold more than [`IN_FLIGHT`] + 1 batches of rows, write
//! anything after a failed batch, nor write anything but through the core.

use super::{JobCtx, Outcome};
use crate::core::auth::TablePerm;
use crate::core::catalog::invalid_name;
use crate::core::error::{OpError, OpResult};
use crate::core::op::{RecordBatch, WriteKind, WriteOp};
use crate::node::driver::Chain;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// Rows per transaction.
pub const BATCH_ROWS: usize = 1_000;
/// JSON bytes per transaction (wide rows make smaller batches).
pub const BATCH_BYTES: usize = 1 << 20;
/// Batches handed to the core and not yet answered ([`Pipeline`]); with the one being filled,
/// a load holds at most `IN_FLIGHT + 1` batches. Four, like the bench's four insert clients it
/// is compared with: with three, 1,000,000 rows loaded at 0.86x the rate of 1,000-record
/// insert requests of the same rows, with four 0.98x (one run each; runs vary by ~15 %).
pub const IN_FLIGHT: usize = 4;
/// Largest body `csv_url_load` reads.
pub const MAX_URL_BYTES: u64 = 4 << 30;

/// Where the CSV comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `csv_data_load`: the request's `data`.
    Data(String),
    /// `csv_file_load`: a file on the node.
    File(PathBuf),
    /// `csv_url_load`: an http(s) URL.
    Url(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    pub database: String,
    pub table: String,
    pub kind: WriteKind,
    pub source: Source,
}

/// A cell's value as Harper types it: `true`/`TRUE` and `false`/`FALSE` are booleans; a plain
/// decimal number (optional minus, digits, optional fraction, or a fraction alone like `.5`)
/// without a superfluous leading zero is a number (`007` stays text, `0` and `0.5` do not);
/// everything else, the empty cell and JSON included, stays text.
pub fn typed(cell: &str) -> Value {
    match cell {
        "true" | "TRUE" => return Value::Bool(true),
        "false" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    number(cell).unwrap_or_else(|| Value::String(cell.to_string()))
}

fn number(cell: &str) -> Option<Value> {
    let digits = cell.strip_prefix('-').unwrap_or(cell);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ok = match frac {
        None => all_digits(int),
        Some(f) => all_digits(f) && (int.is_empty() || all_digits(int)),
    };
    if !ok || (int.len() > 1 && int.starts_with('0')) {
        return None;
    }
    // JavaScript numbers: integers are exact up to 2^53, everything else is a double.
    const SAFE: i64 = 1 << 53;
    if frac.is_none() {
        if let Ok(i) = cell.parse::<i64>() {
            if (-SAFE..=SAFE).contains(&i) {
                return Some(Value::from(i));
            }
        }
    }
    let f: f64 = cell.parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    if f.fract() == 0.0 && f.abs() <= SAFE as f64 {
        return Some(Value::from(f as i64));
    }
    serde_json::Number::from_f64(f).map(Value::Number)
}

/// Harper's message for a header it refuses.
fn invalid_column(name: &str) -> String {
    format!("Invalid column name '{name}', cancelling load operation")
}

/// Opens the source as a byte stream.
fn open(source: Source) -> Result<Box<dyn Read + Send>, String> {
    match source {
        Source::Data(text) => Ok(Box::new(std::io::Cursor::new(text.into_bytes()))),
        Source::File(path) => std::fs::File::open(&path)
            .map(|f| Box::new(std::io::BufReader::with_capacity(256 * 1024, f)) as Box<_>)
            .map_err(|e| file_error(&path, &e)),
        Source::Url(url) => open_url(&url),
    }
}

/// Harper's text for a file that cannot be opened (`No such file or directory <path>`).
pub fn file_error(path: &std::path::Path, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("No such file or directory {}", path.display()),
        std::io::ErrorKind::PermissionDenied => format!("Permission denied {}", path.display()),
        _ => format!("cannot read {}: {e}", path.display()),
    }
}

/// `host:port` of an http(s) URL, for Node-style connection errors.
fn authority(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let has_port = match host.rfind(']') {
        Some(close) => host[close..].contains(':'),
        None => host.contains(':'),
    };
    if has_port {
        host.to_string()
    } else {
        let port = if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        };
        format!("{host}:{port}")
    }
}

fn not_found(url: &str) -> String {
    let a = authority(url);
    let host = a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h);
    format!("getaddrinfo ENOTFOUND {host}")
}

/// Harper's (Node's) wording for a URL that cannot be fetched.
fn url_error(url: &str, e: ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("connect ECONNREFUSED {}", authority(url))
        }
        ureq::Error::HostNotFound => not_found(url),
        // The resolver's own failure arrives as an I/O error.
        ureq::Error::Io(io) if io.to_string().contains("failed to lookup address") => {
            not_found(url)
        }
        ureq::Error::Timeout(t) => format!("CSV Load failed from URL: {url}, timed out ({t})"),
        other => format!("CSV Load failed from URL: {url}, {other}"),
    }
}

fn open_url(url: &str) -> Result<Box<dyn Read + Send>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_recv_body(Some(Duration::from_secs(3_600)))
        .max_redirects(5)
        .build()
        .into();
    let resp = agent.get(url).call().map_err(|e| url_error(url, e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!(
            "CSV Load failed from URL: {url}, status code: {}, message: {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ));
    }
    Ok(Box::new(
        resp.into_body()
            .into_with_config()
            .limit(MAX_URL_BYTES)
            .reader(),
    ))
}

/// Rows collected as JSON text for the next transaction.
struct Batch {
    rows: Vec<Map<String, Value>>,
    /// Bytes of cell and name text in `rows` (the bound; the parsed rows cost a small multiple).
    bytes: usize,
}

impl Batch {
    fn new() -> Self {
        Batch {
            rows: Vec::with_capacity(BATCH_ROWS),
            bytes: 0,
        }
    }

    fn full(&self) -> bool {
        self.rows.len() >= BATCH_ROWS || self.bytes >= BATCH_BYTES
    }

    /// Appends one row as an object of typed cells: `keys` are the header names (a row shorter
    /// than the header lacks the missing cells; cells past the header are not loaded).
    fn push(&mut self, keys: &[String], row: &csv::StringRecord) {
        let mut rec = Map::with_capacity(keys.len().min(row.len()));
        for (key, cell) in keys.iter().zip(row.iter()) {
            self.bytes += key.len() + cell.len();
            rec.insert(key.clone(), typed(cell));
        }
        self.rows.push(rec);
    }

    /// The rows so far, handed to the core parsed: the core would only parse JSON text back.
    fn take(&mut self) -> RecordBatch {
        self.bytes = 0;
        RecordBatch::parsed(std::mem::replace(
            &mut self.rows,
            Vec::with_capacity(BATCH_ROWS),
        ))
    }
}

/// How many records of a write the core reports as written.
fn written(kind: WriteKind, answer: &Value) -> usize {
    let key = match kind {
        WriteKind::Insert => "inserted_hashes",
        WriteKind::Update => "update_hashes",
        WriteKind::Upsert => "upserted_hashes",
    };
    answer
        .get(key)
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

fn perms(kind: WriteKind) -> Vec<TablePerm> {
    match kind {
        WriteKind::Insert => vec![TablePerm::Insert],
        WriteKind::Update => vec![TablePerm::Update],
        WriteKind::Upsert => vec![TablePerm::Insert, TablePerm::Update],
    }
}

/// What a load has done so far, for the messages.
struct Progress {
    loaded: usize,
    parsed: usize,
}

impl Progress {
    /// An error after some batches committed says how far the load got.
    fn error(&self, why: impl std::fmt::Display) -> String {
        if self.loaded > 0 {
            format!(
                "{why} (the first {} of {} records read were loaded before the error)",
                self.loaded, self.parsed
            )
        } else {
            why.to_string()
        }
    }
}

/// The batches handed to the core and not yet answered, oldest first, at most [`IN_FLIGHT`]:
/// while one commits (its fsync) the next is parsed and queued, and the core may commit
/// several in one group. They form one [`Chain`]: the core refuses the batches queued after
/// a failed one unapplied, so a load stops at its first failed batch exactly as if it waited
/// for each.
struct Pipeline<'a, 'j> {
    ctx: &'a JobCtx<'j>,
    kind: WriteKind,
    chain: Chain,
    queued: VecDeque<crate::util::oneshot::Receiver<OpResult>>,
}

impl<'a, 'j> Pipeline<'a, 'j> {
    fn new(ctx: &'a JobCtx<'j>, kind: WriteKind) -> Self {
        Pipeline {
            ctx,
            kind,
            chain: Chain::default(),
            queued: VecDeque::with_capacity(IN_FLIGHT),
        }
    }

    /// Queues a batch; waits for the oldest when [`IN_FLIGHT`] are queued.
    fn submit(&mut self, op: WriteOp, progress: &mut Progress) -> Result<(), String> {
        let rx = self.ctx.core().submit(op, self.ctx.actor(), &self.chain);
        self.queued.push_back(rx);
        if self.queued.len() >= IN_FLIGHT {
            self.settle_oldest(progress)?;
        }
        Ok(())
    }

    /// Waits for every queued batch: the first failure is the load's error, and what the
    /// batches before it wrote is counted.
    fn finish(&mut self, progress: &mut Progress) -> Result<(), String> {
        while !self.queued.is_empty() {
            self.settle_oldest(progress)?;
        }
        Ok(())
    }

    fn settle_oldest(&mut self, progress: &mut Progress) -> Result<(), String> {
        let Some(rx) = self.queued.pop_front() else {
            return Ok(());
        };
        match answer(&rx) {
            Ok(a) => {
                progress.loaded += written(self.kind, &a);
                Ok(())
            }
            Err(e) => {
                // The batches queued after it are refused unapplied (the chain is broken);
                // wait for them so none is still queued when the job ends.
                while let Some(rx) = self.queued.pop_front() {
                    if let Ok(a) = answer(&rx) {
                        progress.loaded += written(self.kind, &a);
                    }
                }
                Err(progress.error(e.message()))
            }
        }
    }
}

fn answer(rx: &crate::util::oneshot::Receiver<OpResult>) -> OpResult {
    rx.recv()
        .unwrap_or_else(|_| Err(OpError::unavailable("the node is shutting down")))
}

/// Runs a load: Harper's `successfully loaded N of M records` (N = records the write counted,
/// e.g. an insert skips existing ids), `No records parsed from csv file.` when there are none.
pub fn run(ctx: &JobCtx, load: Load) -> Result<Outcome, String> {
    let reader = open(load.source)?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(reader);
    let headers = rdr
        .headers()
        .map_err(|e| format!("cannot read the CSV header: {e}"))?
        .clone();
    let header_present = !(headers.is_empty() || headers.len() == 1 && headers[0].is_empty());
    if header_present {
        for h in headers.iter() {
            if invalid_name("Attribute", h).is_some() {
                return Err(invalid_column(h));
            }
        }
    }
    let keys: Vec<String> = headers.iter().map(str::to_string).collect();
    let mut batch = Batch::new();
    let mut progress = Progress {
        loaded: 0,
        parsed: 0,
    };
    let mut extra_cells = 0usize;
    let mut row = csv::StringRecord::new();
    let perms = perms(load.kind);
    let mut pipeline = Pipeline::new(ctx, load.kind);
    loop {
        let more = match rdr.read_record(&mut row) {
            Ok(more) => more,
            Err(e) => {
                pipeline.finish(&mut progress)?;
                return Err(progress.error(format!("cannot read the CSV: {e}")));
            }
        };
        if more {
            // A blank line is no record.
            if row.len() == 1 && row[0].is_empty() {
                continue;
            }
            if row.len() > keys.len() {
                extra_cells += 1;
            }
            batch.push(&keys, &row);
            progress.parsed += 1;
        }
        if batch.rows.is_empty() || (more && !batch.full()) {
            if more {
                continue;
            }
            break;
        }
        if let Err(e) = ctx.check_stop() {
            pipeline.finish(&mut progress)?;
            return Err(progress.error(e));
        }
        let op = WriteOp::Records {
            kind: load.kind,
            database: load.database.clone(),
            table: load.table.clone(),
            records: batch.take(),
        };
        // The user's permissions as they are now (a role may change during a long load).
        if !ctx.principal.is_super_user() {
            let catalog = ctx.catalog();
            let allowed = crate::ops::read::authorize(
                &ctx.principal,
                &crate::ops::parse::Requirement::Table(
                    load.database.clone(),
                    load.table.clone(),
                    perms.clone(),
                ),
                &catalog,
            )
            .and_then(|()| {
                crate::ops::read::check_written_attributes(&ctx.principal, &catalog, &op)
            });
            if let Err(e) = allowed {
                pipeline.finish(&mut progress)?;
                return Err(progress.error(e.message()));
            }
        }
        pipeline.submit(op, &mut progress)?;
        if !more {
            break;
        }
    }
    pipeline.finish(&mut progress)?;
    if extra_cells > 0 {
        log::warn!(
            "job {}: {extra_cells} CSV rows had more cells than the header names; the extra cells were not loaded",
            ctx.id
        );
    }
    if progress.parsed == 0 {
        return Ok(Outcome::message("No records parsed from csv file."));
    }
    Ok(Outcome::message(format!(
        "successfully loaded {} of {} records",
        progress.loaded, progress.parsed
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Harper 4.7.29's typing, from b_csv_types_search_after.
    #[test]
    fn cells_are_typed_like_harper() {
        let cases = [
            ("3", json!(3)),
            ("x", json!("x")),
            ("true", json!(true)),
            ("TRUE", json!(true)),
            ("false", json!(false)),
            ("False", json!("False")),
            ("", json!("")),
            ("007", json!("007")),
            ("0", json!(0)),
            ("1.50", json!(1.5)),
            (".5", json!(0.5)),
            ("-3", json!(-3)),
            ("0x10", json!("0x10")),
            ("1e3", json!("1e3")),
            ("42", json!(42)),
            ("{\"a\":1}", json!("{\"a\":1}")),
            ("[1,2]", json!("[1,2]")),
            ("0080", json!("0080")),
            ("abc", json!("abc")),
            ("x, y", json!("x, y")),
            ("-", json!("-")),
            (".", json!(".")),
            ("1.", json!("1.")),
            (" 4", json!(" 4")),
        ];
        for (cell, want) in cases {
            assert_eq!(typed(cell), want, "{cell:?}");
        }
        // Beyond 2^53 a number is a double, as in JavaScript (Harper answers 12345678901234567000).
        assert_eq!(
            typed("12345678901234567890").as_f64(),
            Some(12_345_678_901_234_567_000.0)
        );
        assert!(typed("12345678901234567890").is_f64());
        assert_eq!(typed("9007199254740992"), json!(9_007_199_254_740_992i64));
    }

    #[test]
    fn rows_become_json_objects_and_short_rows_lack_the_missing_cells() {
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(&b"\xEF\xBB\xBFid,name\n90,a,extra\n91\n\n92,\"q, \"\"r\"\"\"\n"[..]);
        let keys: Vec<String> = rdr.headers().unwrap().iter().map(str::to_string).collect();
        assert_eq!(
            keys,
            ["id", "name"],
            "a UTF-8 BOM is not part of the first name"
        );
        let mut b = Batch::new();
        let mut row = csv::StringRecord::new();
        while rdr.read_record(&mut row).unwrap() {
            if row.len() == 1 && row[0].is_empty() {
                continue;
            }
            b.push(&keys, &row);
        }
        let batch = b.take();
        let rows: Vec<Value> = (0..batch.len())
            .map(|i| Value::Object(batch.parse(i).unwrap()))
            .collect();
        assert_eq!(
            rows,
            [
                json!({"id":90,"name":"a"}),
                json!({"id":91}),
                json!({"id":92,"name":"q, \"r\""})
            ]
        );
    }

    #[test]
    fn connection_errors_name_host_and_port_like_node() {
        assert_eq!(
            authority("http://127.0.0.1:8001/dogs.csv"),
            "127.0.0.1:8001"
        );
        assert_eq!(authority("https://example.test/a"), "example.test:443");
        assert_eq!(authority("http://u:p@h/x?y"), "h:80");
        assert_eq!(authority("http://[::1]:81/"), "[::1]:81");
        assert_eq!(authority("http://[::1]/"), "[::1]:80");
    }
}
