//! `export_local`: the job's work. Runs a search (`search_by_value`, `search_by_conditions`,
//! `search_by_id`, or a `sql` SELECT) and streams its rows to `<path>/<filename>.<format>` as a JSON array or as
//! CSV (json2csv's layout, as Harper writes it).
//!
//! Reads through `ops::read::rows` (lazy, so a whole table is never held in memory) and writes
//! only the one file, owner-only, first under a temporary name renamed into place when
//! complete: a failed or interrupted export never leaves a half-written file under the name
//! asked for. Never writes outside `path`: the file name is a plain name.

use super::{JobCtx, Outcome};
use crate::ops::parse::Operation;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub path: Option<String>,
    pub filename: Option<String>,
    pub format: Option<String>,
    /// The parsed `search_operation` (a search), or why it is not one.
    pub search: Result<Operation, String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Json,
    Csv,
}

/// Checks the request the way Harper does, inside the job: a path, a known format, an
/// existing folder; then a plain file name.
fn target(e: &Export, now_ms: u64) -> Result<(Format, PathBuf), String> {
    let path = e
        .path
        .as_deref()
        .filter(|p| !p.is_empty())
        .ok_or("path is missing.")?;
    let format = match e.format.as_deref() {
        Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        _ => return Err("format invalid. must be one of the following values: json, csv".into()),
    };
    let dir = Path::new(path);
    if !dir.is_dir() {
        return Err(format!("path '{path}' does not exist"));
    }
    let name = match e.filename.as_deref().filter(|f| !f.is_empty()) {
        Some(f) => {
            if f.contains(['/', '\\', '\0']) || f == "." || f == ".." {
                return Err(format!(
                    "filename '{f}' must be a plain file name (no folders)"
                ));
            }
            f.to_string()
        }
        None => now_ms.to_string(),
    };
    let ext = match format {
        Format::Json => "json",
        Format::Csv => "csv",
    };
    Ok((format, dir.join(format!("{name}.{ext}"))))
}

/// One CSV cell as json2csv writes it: text quoted (quotes doubled), numbers and booleans
/// bare, null or absent empty, objects and arrays as quoted JSON.
fn csv_cell(out: &mut Vec<u8>, v: Option<&Value>) {
    let quoted = |out: &mut Vec<u8>, s: &str| {
        out.push(b'"');
        out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    };
    match v {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => quoted(out, s),
        Some(Value::Number(n)) => out.extend_from_slice(n.to_string().as_bytes()),
        Some(Value::Bool(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Some(other) => quoted(out, &other.to_string()),
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("cannot write {}: {e}", path.display())
}

/// Runs the export; the job's result names the file.
pub fn run(ctx: &JobCtx, e: Export) -> Result<Outcome, String> {
    let (format, file) = target(&e, crate::util::time::now_ms())?;
    let op = e.search?;
    let rows = || {
        let catalog = ctx.catalog();
        let auth = ctx.auth();
        match &op {
            // A SELECT streams its rows like a search (the plan is cheap to copy; CSV runs it
            // twice: once for the columns, once for the rows).
            Operation::Sql(plan) => {
                crate::sql::exec::select_rows(plan.clone(), &ctx.principal, ctx.store(), &catalog)
            }
            op => crate::ops::read::rows(op, &ctx.principal, ctx.store(), &catalog, &auth),
        }
        .map_err(|e| e.message().to_string())
    };
    // CSV needs its columns first: every attribute any row has, in order of appearance
    // (json2csv's default). A first pass collects them (at most the table's attributes).
    let columns: Vec<String> = if format == Format::Csv {
        let mut seen = Map::new();
        for row in rows()? {
            let row = row.map_err(|e| e.message().to_string())?;
            if let Value::Object(o) = row {
                for k in o.keys() {
                    if !seen.contains_key(k) {
                        seen.insert(k.clone(), Value::Null);
                    }
                }
            }
            ctx.check_stop()?;
        }
        seen.into_iter().map(|(k, _)| k).collect()
    } else {
        Vec::new()
    };
    let tmp = file.with_file_name(format!(
        ".{}.{}.tmp",
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ctx.id
    ));
    let result = write_file(ctx, &tmp, format, &columns, rows()?);
    if let Err(err) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    std::fs::rename(&tmp, &file).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", file.display())
    })?;
    let kind = match format {
        Format::Json => "JSON",
        Format::Csv => "CSV",
    };
    Ok(Outcome {
        message: format!("Successfully completed job: {}", ctx.id),
        result: Some(json!({
            "message": format!("Successfully exported {kind} locally."),
            "path": file.display().to_string(),
        })),
    })
}

fn write_file(
    ctx: &JobCtx,
    tmp: &Path,
    format: Format,
    columns: &[String],
    rows: crate::ops::read::Rows,
) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io_err(tmp))?;
    let mut w = std::io::BufWriter::with_capacity(256 * 1024, f);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut n = 0usize;
    match format {
        Format::Json => buf.push(b'['),
        Format::Csv => {
            for (i, c) in columns.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                csv_cell(&mut buf, Some(&Value::String(c.clone())));
            }
        }
    }
    for row in rows {
        let row = row.map_err(|e| e.message().to_string())?;
        match format {
            Format::Json => {
                if n > 0 {
                    buf.push(b',');
                }
                serde_json::to_writer(&mut buf, &row).map_err(|e| e.to_string())?;
            }
            Format::Csv => {
                buf.push(b'\n');
                for (i, c) in columns.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    csv_cell(&mut buf, row.get(c));
                }
            }
        }
        n += 1;
        if buf.len() >= 64 * 1024 {
            w.write_all(&buf).map_err(io_err(tmp))?;
            buf.clear();
            ctx.check_stop()?;
        }
    }
    if format == Format::Json {
        buf.push(b']');
    }
    w.write_all(&buf).map_err(io_err(tmp))?;
    let f = w.into_inner().map_err(|e| io_err(tmp)(e.into_error()))?;
    f.sync_all().map_err(io_err(tmp))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(path: Option<&str>, format: Option<&str>, filename: Option<&str>) -> Export {
        Export {
            path: path.map(str::to_string),
            filename: filename.map(str::to_string),
            format: format.map(str::to_string),
            search: Err("unused".into()),
        }
    }

    #[test]
    fn requests_are_checked_in_harpers_order_with_its_messages() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(
            target(&export(None, Some("json"), None), 1).unwrap_err(),
            "path is missing."
        );
        assert_eq!(
            target(&export(Some("/nonexistent-x"), Some("xml"), None), 1).unwrap_err(),
            "format invalid. must be one of the following values: json, csv"
        );
        assert_eq!(
            target(&export(Some("/nonexistent-x"), Some("csv"), None), 1).unwrap_err(),
            "path '/nonexistent-x' does not exist"
        );
        let (_, f) = target(&export(Some(d), Some("csv"), None), 1796298325682).unwrap();
        assert_eq!(f, dir.path().join("1796298325682.csv"));
        let (_, f) = target(&export(Some(d), Some("json"), Some("dogs")), 1).unwrap();
        assert_eq!(f, dir.path().join("dogs.json"));
        assert!(target(&export(Some(d), Some("json"), Some("../x")), 1).is_err());
    }

    #[test]
    fn csv_cells_follow_json2csv() {
        let mut out = Vec::new();
        for v in [
            Some(json!(201)),
            Some(json!("Af\"ter")),
            Some(json!(1796298279317.0188)),
            None,
            Some(Value::Null),
            Some(json!(true)),
            Some(json!({"a":1})),
        ] {
            csv_cell(&mut out, v.as_ref());
            out.push(b',');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "201,\"Af\"\"ter\",1796298279317.0188,,,true,\"{\"\"a\"\":1}\","
        );
    }
}
