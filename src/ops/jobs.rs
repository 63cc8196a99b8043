//! The job operations at the edge: `csv_data_load`, `csv_file_load`, `csv_url_load`,
//! `export_local`, `delete_records_before` (`delete_files_before`), `delete_audit_logs_before`,
//! `get_job`, `search_jobs_by_start_date`.
//!
//! Parses and checks each request the way Harper does (what Harper refuses at once is refused
//! here with its 400/403 text and starts no job; what Harper checks inside the job is checked
//! inside the job), then hands the work to `jobs`. Must never run a job's work on the request
//! thread, nor let a user who is not a super_user read node files or fetch URLs through a load.

use super::fields::Fields;
use super::parse::{Operation, Requirement, DEFAULT_DB};
use crate::core::auth::{Principal, TablePerm};
use crate::core::error::{OpError, OpResult};
use crate::core::op::WriteKind;
use crate::jobs::csv_load::{self, Load, Source};
use crate::jobs::export::{self, Export};
use crate::jobs::{cleanup, Jobs};
use serde_json::{Map, Value};
use std::path::PathBuf;

pub fn is_job_op(name: &str) -> bool {
    matches!(
        name,
        "csv_data_load"
            | "csv_file_load"
            | "csv_url_load"
            | "export_local"
            | "delete_records_before"
            | "delete_files_before"
            | "delete_audit_logs_before"
            | "get_job"
            | "search_jobs_by_start_date"
    )
}

fn database(f: &Fields) -> Result<String, OpError> {
    Ok(f.opt_str(&["database", "schema"])?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_DB.to_string()))
}

/// Dates as Harper's jobs take them: ISO 8601 with or without a time or a zone (UTC when
/// none is given), e.g. `2026-12-03`, `2026-12-03T11:40:51.050Z`.
pub fn parse_date(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(ms) = crate::util::time::parse_iso8601(s) {
        return Some(ms);
    }
    let candidate = match s.len() {
        10 => format!("{s}T00:00:00Z"),
        16 => format!("{s}:00Z"),
        _ => format!("{s}Z"),
    };
    crate::util::time::parse_iso8601(&candidate)
}

/// A point in time given as epoch milliseconds (a number or numeric text) or an ISO date.
fn instant(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .or_else(|| parse_date(s).map(|ms| ms as f64)),
        _ => None,
    }
}

/// A required point-in-time field (`date`, `timestamp`), with the error naming what it takes.
fn required_instant(f: &Fields, key: &str, takes: &str) -> Result<f64, OpError> {
    match f.get(&[key]) {
        None => Err(OpError::bad_request(format!("'{key}' is required"))),
        Some(v) => {
            instant(v).ok_or_else(|| OpError::bad_request(format!("'{key}' must be {takes}")))
        }
    }
}

/// Harper's action field: absent means insert.
fn action(body: &Map<String, Value>) -> Result<WriteKind, OpError> {
    match body.get("action") {
        None | Some(Value::Null) => Ok(WriteKind::Insert),
        Some(Value::String(s)) if s == "insert" => Ok(WriteKind::Insert),
        Some(Value::String(s)) if s == "update" => Ok(WriteKind::Update),
        Some(Value::String(s)) if s == "upsert" => Ok(WriteKind::Upsert),
        _ => Err(OpError::bad_request(
            "Action is required and must be either insert, update, or upsert",
        )),
    }
}

fn table_perms(kind: WriteKind) -> Vec<TablePerm> {
    match kind {
        WriteKind::Insert => vec![TablePerm::Insert],
        WriteKind::Update => vec![TablePerm::Update],
        WriteKind::Upsert => vec![TablePerm::Insert, TablePerm::Update],
    }
}

/// Runs one job operation; `body` is the whole request (owned: `csv_data_load`'s data moves
/// into the job instead of being copied).
pub fn execute(
    ctx: &super::http::Context,
    jobs: &Jobs,
    name: &str,
    mut body: Map<String, Value>,
    p: &Principal,
) -> OpResult {
    match name {
        "csv_data_load" | "csv_file_load" | "csv_url_load" => csv(ctx, jobs, name, body, p),
        "export_local" => {
            if !p.is_super_user() {
                return Err(OpError::super_user_only("export_local"));
            }
            let search = match body.remove("search_operation") {
                None | Some(Value::Null) => Err("search_operation is missing.".to_string()),
                Some(Value::Object(o)) => match super::parse::parse_value(o) {
                    Ok(op) if op.is_search() => Ok(op),
                    // A SELECT: its rows are exported like a search's (checked again in the
                    // job: only SELECT statements have rows).
                    Ok(op @ Operation::Sql(crate::sql::parse::Plan::Select(_))) => Ok(op),
                    Ok(Operation::Sql(_)) => {
                        Err("search_operation sql must be a SELECT statement".to_string())
                    }
                    Ok(_) => Err("search_operation must be search_by_value, search_by_conditions, search_by_id or sql".to_string()),
                    Err(e) => Err(e.message().to_string()),
                },
                Some(_) => Err("'search_operation' must be an object".to_string()),
            };
            let f = Fields::new(&body);
            let e = Export {
                path: f.opt_str(&["path"])?,
                filename: f.opt_str(&["filename"])?,
                format: f.opt_str(&["format"])?,
                search,
            };
            jobs.start(
                "export_local",
                p.clone(),
                Box::new(move |c| export::run(c, e)),
            )
        }
        "delete_records_before" | "delete_files_before" => {
            if !p.is_super_user() {
                return Err(OpError::super_user_only("deleteRecordsBefore"));
            }
            let f = Fields::new(&body);
            let date = required_instant(&f, "date", "an ISO 8601 date or epoch milliseconds")?;
            let db = database(&f)?;
            let table = f.req_str(&["table"])?;
            jobs.start(
                name,
                p.clone(),
                Box::new(move |c| cleanup::delete_records_before(c, &db, &table, date)),
            )
        }
        "delete_audit_logs_before" => {
            if !p.is_super_user() {
                return Err(OpError::super_user_only("deleteAuditLogsBefore"));
            }
            let f = Fields::new(&body);
            let ts = required_instant(&f, "timestamp", "epoch milliseconds or an ISO 8601 date")?;
            let db = database(&f)?;
            let table = f.req_str(&["table"])?;
            jobs.start(
                name,
                p.clone(),
                Box::new(move |c| cleanup::delete_audit_logs_before(c, &db, &table, ts)),
            )
        }
        "get_job" => {
            let id = match body.get("id") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()).filter(|s| !s.is_empty()),
                Some(_) => return Err(OpError::bad_request("'id' must be a string")),
            };
            let id = id.ok_or_else(|| OpError::bad_request("'id' is required"))?;
            jobs.get(&id, p)
        }
        "search_jobs_by_start_date" => {
            if !p.is_super_user() {
                return Err(OpError::super_user_only("handleGetJobsByStartDate"));
            }
            let date = |key: &str, label: &str| {
                body.get(key)
                    .and_then(Value::as_str)
                    .and_then(parse_date)
                    .ok_or_else(|| {
                        OpError::internal(format!(
                            "There was an error searching jobs by date: Error: Invalid '{label}' date, must be in ISO-8601 format (YYYY-MM-DD)."
                        ))
                    })
            };
            let from = date("from_date", "from")?;
            let to = date("to_date", "to")?;
            jobs.search_by_start(from, to)
        }
        other => Err(OpError::bad_request(format!(
            "Operation '{other}' not found"
        ))),
    }
}

/// The three CSV loads: what Harper refuses at once (action, table, data/file), then the job.
fn csv(
    ctx: &super::http::Context,
    jobs: &Jobs,
    name: &str,
    mut body: Map<String, Value>,
    p: &Principal,
) -> OpResult {
    let kind = action(&body)?;
    // A load from a node file or a URL reads what the node can reach: only a super_user may.
    if name != "csv_data_load" && !p.is_super_user() {
        return Err(OpError::super_user_only(if name == "csv_file_load" {
            "csvFileLoad"
        } else {
            "csvURLLoad"
        }));
    }
    let f = Fields::new(&body);
    let db = database(&f)?;
    let table = f.req_str(&["table"])?;
    let catalog = ctx.shared.catalog.load();
    // A user who is not a super_user gets Harper's 403s (unknown tables look forbidden, so
    // they do not leak); everyone is refused the system tables.
    super::read::authorize(
        p,
        &Requirement::Table(db.clone(), table.clone(), table_perms(kind)),
        &catalog,
    )?;
    if catalog.database(&db).is_none() {
        return Err(OpError::bad_request(format!(
            "database '{db}' does not exist"
        )));
    }
    if catalog.table(&db, &table).is_none() {
        return Err(OpError::bad_request(format!(
            "Table '{db}.{table}' does not exist"
        )));
    }
    drop(catalog);
    let source = match name {
        "csv_data_load" => match body.remove("data") {
            None | Some(Value::Null) => return Err(OpError::bad_request("Data  is required")),
            Some(Value::String(s)) => Source::Data(s),
            Some(_) => return Err(OpError::bad_request("'data' must be a string")),
        },
        "csv_file_load" => {
            let path = PathBuf::from(Fields::new(&body).req_str(&["file_path"])?);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => {
                    return Err(OpError::bad_request(format!(
                        "{} is a folder, not a CSV file",
                        path.display()
                    )))
                }
                Ok(_) => {}
                Err(e) => return Err(OpError::bad_request(csv_load::file_error(&path, &e))),
            }
            if let Err(e) = std::fs::File::open(&path) {
                return Err(OpError::bad_request(csv_load::file_error(&path, &e)));
            }
            Source::File(path)
        }
        _ => {
            let url = Fields::new(&body).req_str(&["csv_url"])?;
            let lower = url.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                return Err(OpError::bad_request(
                    "'csv_url' must be an http:// or https:// URL",
                ));
            }
            Source::Url(url)
        }
    };
    let load = Load {
        database: db,
        table,
        kind,
        source,
    };
    jobs.start(name, p.clone(), Box::new(move |c| csv_load::run(c, load)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_are_read_like_harpers_jobs() {
        assert_eq!(
            parse_date("2026-12-03T11:41:54.254Z"),
            Some(1_796_298_114_254)
        );
        assert_eq!(parse_date("2000-01-01"), Some(946_684_800_000));
        assert_eq!(parse_date("2000-01-01T00:00"), Some(946_684_800_000));
        assert_eq!(parse_date("2000-01-01T00:00:00.5"), Some(946_684_800_500));
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_date(""), None);
        assert_eq!(instant(&json!(1796298277737u64)), Some(1_796_298_277_737.0));
        assert_eq!(instant(&json!("1796298277737")), Some(1_796_298_277_737.0));
        assert_eq!(
            instant(&json!("2026-12-03T11:44:39.112Z")),
            Some(1_796_298_279_112.0)
        );
        assert_eq!(instant(&json!(true)), None);
    }

    #[test]
    fn action_defaults_to_insert_and_refuses_the_rest_with_harpers_text() {
        let body = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(action(&body(json!({}))).unwrap(), WriteKind::Insert);
        assert_eq!(
            action(&body(json!({"action":"upsert"}))).unwrap(),
            WriteKind::Upsert
        );
        let e = action(&body(json!({"action":"merge"}))).unwrap_err();
        assert_eq!(
            (e.status, e.message()),
            (
                400,
                "Action is required and must be either insert, update, or upsert"
            )
        );
    }
}
