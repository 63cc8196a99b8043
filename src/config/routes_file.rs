//! Rewrites `replication.routes` in a config file, for `cluster_set_routes` and
//! `cluster_delete_routes` (Harper persists routes to its YAML file the same way).
//!
//! No YAML crate keeps comments when it writes (research/stack.md §3), and an operator's
//! comments must survive an API call, so this edits lines: it finds the `routes:` value under
//! the top-level `replication:` mapping and replaces only those lines; every other line stays
//! byte-for-byte. Full-line comments found among the old items are kept too (moved above the
//! new items, since the items they described may be gone); an end-of-line comment on the
//! `routes:` line is kept; end-of-line comments on old item lines go with their items.
//!
//! Safety net: before anything is written, the new text is parsed and must equal the old
//! document with exactly `replication.routes` replaced; anything else (an unusual layout the
//! line editor misread) is an error and the file is left untouched. The write is atomic:
//! temp file in the same directory, fsync, rename over the original, fsync the directory.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{Map, Value};

use super::parse_yaml;

/// Serializes read-modify-write cycles within this process: two concurrent route operations
/// must not both read the old file and have the second rename drop the first one's change.
static WRITE_LOCK: Mutex<()> = Mutex::new(());

/// Makes temp file names unique within the process (the pid makes them unique across).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces the `replication.routes` value of the YAML file at `path` with `routes` (written as
/// a block list of flow items; `routes: []` when empty), keeping every other line. Creates the
/// key, or a `replication:` section, when missing. The file must exist and be valid YAML.
/// A symlinked `path` is followed, so the link itself survives.
pub fn write_routes(path: &Path, routes: &[Value]) -> io::Result<()> {
    let _guard = WRITE_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let target = fs::canonicalize(path)?;
    let text = String::from_utf8(fs::read(&target)?)
        .map_err(|_| invalid(&target, "the file is not UTF-8"))?;
    let new_text = rewrite_routes(&text, routes).map_err(|m| invalid(&target, &m))?;
    if new_text == text {
        return Ok(());
    }
    atomic_write(&target, new_text.as_bytes())
}

fn invalid(path: &Path, message: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "cannot update replication.routes in {}: {message}",
            path.display()
        ),
    )
}

/// Writes `data` to `target` so that a crash leaves either the old or the new file, never a
/// mix: temp file beside it, fsync, rename, fsync the directory (so the rename is durable).
fn atomic_write(target: &Path, data: &[u8]) -> io::Result<()> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "config path has no file name")
    })?;
    let tmp = dir.join(format!(
        ".{}.skerry-tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let original = fs::metadata(target).ok();
    // A read-only config is the operator saying "do not change this file": refuse, clearly,
    // rather than replace it (a rename does not need write permission on the file itself).
    if original
        .as_ref()
        .is_some_and(|m| m.permissions().readonly())
    {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the config file is read-only; make it writable (or change replication.routes by hand)",
        ));
    }
    let written = (|| -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        // Keep the original's permissions and owner: a config file may be deliberately
        // private, or owned by another account than the node's (root editing it for a
        // service user). Changing the owner needs privileges; without them the file keeps
        // ours, which is the best a plain user can do.
        if let Some(meta) = &original {
            f.set_permissions(meta.permissions())?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                let _ = std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()));
            }
        }
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, target)
    })();
    if let Err(e) = written {
        // Best effort: the error that matters is `e`; a leftover temp file is only clutter.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&dir)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Directories cannot be opened for fsync on this platform; the rename is still atomic.
    Ok(())
}

/// The new file text: `text` with `replication.routes` set to `routes`, checked by parsing.
pub(crate) fn rewrite_routes(text: &str, routes: &[Value]) -> Result<String, String> {
    let old = parse_yaml(text).map_err(|e| format!("the file is not valid YAML ({e})"))?;
    let mut expected = old;
    set_routes(&mut expected, routes)?;
    let new_text = edit(text, routes)?;
    match parse_yaml(&new_text) {
        Ok(got) if got == expected => Ok(new_text),
        _ => Err("the file's layout could not be edited safely; it was left unchanged (edit replication.routes by hand)".to_string()),
    }
}

/// The document value the edit must produce.
fn set_routes(doc: &mut Value, routes: &[Value]) -> Result<(), String> {
    if doc.is_null() {
        *doc = Value::Object(Map::new());
    }
    let Value::Object(root) = doc else {
        return Err("the file is not a YAML mapping".to_string());
    };
    let repl = root.entry("replication".to_string()).or_insert(Value::Null);
    if repl.is_null() {
        *repl = Value::Object(Map::new());
    }
    let Value::Object(repl) = repl else {
        return Err("'replication' is not a mapping".to_string());
    };
    repl.insert("routes".to_string(), Value::Array(routes.to_vec()));
    Ok(())
}

/// A line split into its content and its line terminator (`\n`, `\r\n` or none at EOF).
#[derive(Clone, Copy)]
struct Line<'a> {
    body: &'a str,
    eol: &'a str,
}

fn split_lines(text: &str) -> Vec<Line<'_>> {
    text.split_inclusive('\n')
        .map(|raw| {
            let body = raw
                .strip_suffix('\n')
                .map(|b| b.strip_suffix('\r').unwrap_or(b))
                .unwrap_or(raw);
            Line {
                body,
                eol: &raw[body.len()..],
            }
        })
        .collect()
}

fn indent_of(s: &str) -> usize {
    s.len() - s.trim_start_matches(' ').len()
}

fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

fn is_comment(s: &str) -> bool {
    s.trim_start().starts_with('#')
}

/// For a line `<indent spaces>key:<rest>` (key plain or quoted), returns `rest`.
fn key_rest<'a>(body: &'a str, indent: usize, key: &str) -> Option<&'a str> {
    if indent_of(body) != indent {
        return None;
    }
    let s = &body[indent..];
    [key.to_string(), format!("\"{key}\""), format!("'{key}'")]
        .iter()
        .find_map(|k| {
            let after = s.strip_prefix(k.as_str())?.trim_start_matches(' ');
            let rest = after.strip_prefix(':')?;
            (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some(rest)
        })
}

/// Splits the text after `key:` into the value (trimmed) and the trailing comment including
/// the whitespace before it (`""` if none). Quotes are respected: `'a #b'` has no comment.
fn split_comment(rest: &str) -> (&str, &str) {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '#' && prev_space => {
                let value = rest[..i].trim();
                let value_end = rest[..i].trim_end().len();
                return (value, &rest[value_end..]);
            }
            None if c == '"' || c == '\'' => quote = Some(c),
            None => {}
        }
        prev_space = c == ' ' || c == '\t';
    }
    (rest.trim(), "")
}

/// Net count of opening minus closing flow brackets in `s`, outside quotes and comments.
fn bracket_depth(s: &str) -> i64 {
    let (value, _) = split_comment(s);
    let mut depth = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in value.chars() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                '"' | '\'' => quote = Some(c),
                _ => {}
            },
        }
    }
    depth
}

fn is_null_scalar(v: &str) -> bool {
    matches!(v, "" | "~" | "null" | "Null" | "NULL")
}

/// The line-level edit. Returns the whole new text; `rewrite_routes` verifies it.
fn edit(text: &str, routes: &[Value]) -> Result<String, String> {
    let lines = split_lines(text);
    // New lines use the file's own convention, so a CRLF file stays CRLF.
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(text.len() + 64 * routes.len() + 32);

    let Some(r) = lines
        .iter()
        .position(|l| key_rest(l.body, 0, "replication").is_some())
    else {
        // No section: append one.
        out.push_str(text);
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(eol);
        }
        out.push_str("replication:");
        out.push_str(eol);
        push_routes(&mut out, 2, 4, "", &[], routes, eol);
        return Ok(out);
    };

    let header_rest = key_rest(lines[r].body, 0, "replication").unwrap_or_default();
    let (header_value, header_comment) = split_comment(header_rest);
    if !is_null_scalar(header_value) {
        return Err("'replication' is not written as an indented block of keys".to_string());
    }

    // The section runs until the next line that starts at column 0 (comments aside).
    let end = (r + 1..lines.len())
        .find(|&j| {
            let b = lines[j].body;
            !is_blank(b) && !is_comment(b) && indent_of(b) == 0
        })
        .unwrap_or(lines.len());
    let child_indent = (r + 1..end)
        .map(|j| lines[j].body)
        .find(|b| !is_blank(b) && !is_comment(b))
        .map(indent_of);

    let routes_line = child_indent.and_then(|ci| {
        (r + 1..end).find(|&j| {
            !is_comment(lines[j].body) && key_rest(lines[j].body, ci, "routes").is_some()
        })
    });

    let push_lines = |out: &mut String, range: std::ops::Range<usize>| {
        for l in &lines[range] {
            out.push_str(l.body);
            out.push_str(l.eol);
        }
    };

    match (routes_line, child_indent) {
        (Some(k), Some(ci)) => {
            let rest = key_rest(lines[k].body, ci, "routes").unwrap_or_default();
            let (value, comment) = split_comment(rest);
            let mut last = k;
            let mut item_indent = None;
            if value.is_empty() {
                // Block value: deeper lines, or `- ` items at the key's own indentation.
                // Trailing blank/comment lines are left alone: they may belong to what follows.
                for (j, line) in lines.iter().enumerate().take(end).skip(k + 1) {
                    let b = line.body;
                    if is_blank(b) || is_comment(b) {
                        continue;
                    }
                    let ind = indent_of(b);
                    let dash = b[ind..].starts_with("- ") || &b[ind..] == "-";
                    if ind > ci || (ind == ci && dash) {
                        if dash && item_indent.is_none() {
                            item_indent = Some(ind);
                        }
                        last = j;
                    } else {
                        break;
                    }
                }
            } else if value.starts_with('[') || value.starts_with('{') {
                // A flow value may continue over several lines until its brackets close.
                let mut depth = bracket_depth(rest);
                let mut j = k + 1;
                while depth > 0 && j < end {
                    depth += bracket_depth(lines[j].body);
                    last = j;
                    j += 1;
                }
            }
            let kept: Vec<Line<'_>> = lines[k + 1..=last]
                .iter()
                .copied()
                .filter(|l| is_comment(l.body))
                .collect();
            push_lines(&mut out, 0..r);
            push_header(&mut out, lines[r], header_value, header_comment, eol);
            push_lines(&mut out, r + 1..k);
            push_routes(
                &mut out,
                ci,
                item_indent.unwrap_or(ci + 2),
                comment,
                &kept,
                routes,
                eol,
            );
            push_lines(&mut out, last + 1..lines.len());
        }
        _ => {
            // No `routes:` yet: add it after the section's last line of content (indented
            // comments count; column-0 comments probably introduce the next section).
            let ci = child_indent.unwrap_or(2);
            let at = (r + 1..end)
                .rev()
                .find(|&j| {
                    let b = lines[j].body;
                    !is_blank(b) && (!is_comment(b) || indent_of(b) > 0)
                })
                .map_or(r + 1, |j| j + 1);
            push_lines(&mut out, 0..r);
            push_header(&mut out, lines[r], header_value, header_comment, eol);
            push_lines(&mut out, r + 1..at);
            if !out.ends_with('\n') {
                out.push_str(eol);
            }
            push_routes(&mut out, ci, ci + 2, "", &[], routes, eol);
            push_lines(&mut out, at..lines.len());
        }
    }
    Ok(out)
}

/// The `replication:` line, unchanged unless it said `replication: null` (then the value goes,
/// since the section now has a key under it).
fn push_header(out: &mut String, line: Line<'_>, value: &str, comment: &str, eol: &str) {
    if value.is_empty() {
        out.push_str(line.body);
        out.push_str(if line.eol.is_empty() { eol } else { line.eol });
    } else {
        out.push_str("replication:");
        out.push_str(comment);
        out.push_str(eol);
    }
}

fn push_routes(
    out: &mut String,
    indent: usize,
    item_indent: usize,
    comment: &str,
    kept: &[Line<'_>],
    routes: &[Value],
    eol: &str,
) {
    out.push_str(&" ".repeat(indent));
    out.push_str("routes:");
    if routes.is_empty() {
        out.push_str(" []");
    }
    out.push_str(comment);
    out.push_str(eol);
    for l in kept {
        out.push_str(l.body);
        out.push_str(eol);
    }
    for route in routes {
        out.push_str(&" ".repeat(item_indent));
        out.push_str("- ");
        out.push_str(&render(route, true));
        out.push_str(eol);
    }
}

/// Renders a value as YAML flow text. `top` = a whole list item in block context, where URLs
/// (`ws://host:9933`) can stay unquoted as Harper writes them; inside `{}`/`[]` anything with
/// a ':' is quoted, which every YAML parser reads the same way.
fn render(v: &Value, top: bool) -> String {
    match v {
        Value::String(s) => render_str(s, top),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(|i| render(i, false)).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", render_str(k, false), render(v, false)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        // Numbers, bools and null print the same in JSON and YAML.
        other => other.to_string(),
    }
}

fn render_str(s: &str, top: bool) -> String {
    let safe_char =
        |c: char| c.is_ascii_alphanumeric() || "._-".contains(c) || (top && ":/".contains(c));
    let plain = s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars().all(safe_char)
        && !s.ends_with(':')
        // Plain only if it reads back as this same string (not a number, bool or null).
        && {
            let probe = if top { format!("- {s}") } else { format!("- [{s}]") };
            let want = if top {
                Value::Array(vec![Value::String(s.to_string())])
            } else {
                Value::Array(vec![Value::Array(vec![Value::String(s.to_string())])])
            };
            parse_yaml(&probe).is_ok_and(|v| v == want)
        };
    if plain {
        s.to_string()
    } else {
        // A JSON string is a valid YAML double-quoted scalar with the same escapes.
        Value::String(s.to_string()).to_string()
    }
}

/// Sets each dotted key (`logging.level`) of the YAML file at `path` to its value, for
/// `set_configuration`, keeping every other line (comments included). Missing sections and
/// keys are added at the end of their parent section. Atomic, checked like the routes edit:
/// the new text must parse to the old document with exactly these keys changed.
pub fn write_keys(path: &Path, changes: &[(Vec<String>, Value)]) -> io::Result<()> {
    let _guard = WRITE_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let target = fs::canonicalize(path)?;
    let text = String::from_utf8(fs::read(&target)?).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not UTF-8", target.display()),
        )
    })?;
    let mut new_text = text.clone();
    for (key, value) in changes {
        new_text = rewrite_key(&new_text, key, value).map_err(|m| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "cannot update {} in {}: {m}",
                    key.join("."),
                    target.display()
                ),
            )
        })?;
    }
    if new_text == text {
        return Ok(());
    }
    atomic_write(&target, new_text.as_bytes())
}

/// The new text with `key` set to `value`, verified by parsing.
pub(crate) fn rewrite_key(text: &str, key: &[String], value: &Value) -> Result<String, String> {
    let old = parse_yaml(text).map_err(|e| format!("the file is not valid YAML ({e})"))?;
    let mut expected = old;
    let segments: Vec<&str> = key.iter().map(String::as_str).collect();
    super::set_path(&mut expected, "", &segments, value.clone()).map_err(|e| e.message)?;
    let new_text = edit_key(text, &segments, value)?;
    match parse_yaml(&new_text) {
        Ok(got) if got == expected => Ok(new_text),
        _ => Err(
            "the file's layout could not be edited safely; it was left unchanged (edit it by hand)"
                .to_string(),
        ),
    }
}

/// Line-level edit for one key: walks the sections by indentation; replaces the key's value
/// lines, or appends what is missing at the end of the deepest existing section.
fn edit_key(text: &str, key: &[&str], value: &Value) -> Result<String, String> {
    let lines = split_lines(text);
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let content = |j: usize| {
        let b = lines[j].body;
        !is_blank(b) && !is_comment(b)
    };
    // The region of the current mapping: lines [start, end) at indentation `indent`.
    let (mut start, mut end) = (0usize, lines.len());
    let mut parent_indent: Option<usize> = None;
    for (depth, seg) in key.iter().enumerate() {
        let child = (start..end)
            .find(|&j| content(j))
            .map(|j| indent_of(lines[j].body));
        let ci = match (child, parent_indent) {
            (Some(c), _) => c,
            (None, Some(p)) => p + 2,
            (None, None) => 0,
        };
        let found =
            (start..end).find(|&j| content(j) && key_rest(lines[j].body, ci, seg).is_some());
        let last = depth + 1 == key.len();
        match found {
            Some(k) if !last => {
                let rest = key_rest(lines[k].body, ci, seg).unwrap_or_default();
                let (v, _) = split_comment(rest);
                if !is_null_scalar(v) {
                    return Err(format!(
                        "'{seg}' is not written as an indented block of keys"
                    ));
                }
                let sub_end = (k + 1..end)
                    .find(|&j| content(j) && indent_of(lines[j].body) <= ci)
                    .unwrap_or(end);
                if !v.is_empty() {
                    // `key: null` / `key: ~`: replace the scalar with the block.
                    let mut out = String::new();
                    push_range(&mut out, &lines, 0..k);
                    push_missing(&mut out, ci, &key[depth..], value, eol);
                    push_range(&mut out, &lines, sub_end..lines.len());
                    return Ok(out);
                }
                parent_indent = Some(ci);
                start = k + 1;
                end = sub_end;
            }
            Some(k) => {
                let rest = key_rest(lines[k].body, ci, seg).unwrap_or_default();
                let (v, comment) = split_comment(rest);
                // The value's extent: the line itself, plus deeper lines (a block value) or the
                // lines a multi-line flow value spans.
                let mut last_line = k;
                if v.is_empty() {
                    for (j, line) in lines.iter().enumerate().take(end).skip(k + 1) {
                        if !content(j) {
                            continue;
                        }
                        let b = line.body;
                        let ind = indent_of(b);
                        let dash = b[ind..].starts_with("- ") || &b[ind..] == "-";
                        if ind > ci || (ind == ci && dash) {
                            last_line = j;
                        } else {
                            break;
                        }
                    }
                } else if v.starts_with('[') || v.starts_with('{') {
                    let mut d = bracket_depth(rest);
                    let mut j = k + 1;
                    while d > 0 && j < end {
                        d += bracket_depth(lines[j].body);
                        last_line = j;
                        j += 1;
                    }
                }
                let mut out = String::new();
                push_range(&mut out, &lines, 0..k);
                out.push_str(&" ".repeat(ci));
                out.push_str(seg);
                out.push_str(": ");
                out.push_str(&render(value, true));
                out.push_str(comment);
                out.push_str(if lines[last_line].eol.is_empty() {
                    eol
                } else {
                    lines[last_line].eol
                });
                push_range(&mut out, &lines, last_line + 1..lines.len());
                return Ok(out);
            }
            None => {
                // Append after the region's last line of content.
                let at = (start..end)
                    .rev()
                    .find(|&j| content(j))
                    .map_or(start, |j| j + 1);
                let mut out = String::new();
                push_range(&mut out, &lines, 0..at);
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push_str(eol);
                }
                push_missing(&mut out, ci, &key[depth..], value, eol);
                push_range(&mut out, &lines, at..lines.len());
                return Ok(out);
            }
        }
    }
    Err("empty key".to_string())
}

fn push_range(out: &mut String, lines: &[Line<'_>], range: std::ops::Range<usize>) {
    for l in &lines[range] {
        out.push_str(l.body);
        out.push_str(l.eol);
    }
}

/// Writes `a:\n  b:\n    c: value` for the missing segments.
fn push_missing(out: &mut String, indent: usize, segs: &[&str], value: &Value, eol: &str) {
    for (i, seg) in segs.iter().enumerate() {
        out.push_str(&" ".repeat(indent + 2 * i));
        out.push_str(seg);
        out.push(':');
        if i + 1 == segs.len() {
            out.push(' ');
            out.push_str(&render(value, true));
        }
        out.push_str(eol);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;
    use serde_json::json;

    fn rewrite(text: &str, routes: &[Value]) -> String {
        rewrite_routes(text, routes).unwrap_or_else(|e| panic!("{e}\n--- input:\n{text}"))
    }

    fn two_routes() -> Vec<Value> {
        vec![
            json!("127.0.0.2"),
            json!({"hostname": "127.0.0.3", "port": 9933}),
        ]
    }

    /// Harper's own file (captured live): `routes: null` with comments on other lines.
    const HARPER: &str = "replication:\n  securePort: null\n  enableRootCAs: true\n  hostname: 127.0.0.1\n  databases: '*' # Database name or list of database names to replicate, * defaults to all databases\n  routes: null\n  port: 127.0.0.1:9933\n";

    #[test]
    fn routes_null_replaced_other_lines_kept() {
        let out = rewrite(HARPER, &two_routes());
        assert_eq!(
            out,
            "replication:\n  securePort: null\n  enableRootCAs: true\n  hostname: 127.0.0.1\n  databases: '*' # Database name or list of database names to replicate, * defaults to all databases\n  routes:\n    - 127.0.0.2\n    - {hostname: 127.0.0.3, port: 9933}\n  port: 127.0.0.1:9933\n"
        );
        // And back to empty.
        let empty = rewrite(&out, &[]);
        assert_eq!(empty, HARPER.replace("routes: null", "routes: []"));
    }

    #[test]
    fn routes_absent_under_replication_is_inserted() {
        let text = "rootPath: /x\nreplication:\n  hostname: a\n  # a comment\n\n# next section\nlogging:\n  level: info\n";
        assert_eq!(
            rewrite(text, &[json!("b")]),
            "rootPath: /x\nreplication:\n  hostname: a\n  # a comment\n  routes:\n    - b\n\n# next section\nlogging:\n  level: info\n"
        );
        // A section with 4-space indentation keeps it.
        let text = "replication:\n    hostname: a\n";
        assert_eq!(
            rewrite(text, &[json!("b")]),
            "replication:\n    hostname: a\n    routes:\n      - b\n"
        );
    }

    #[test]
    fn replication_absent_or_null_or_empty() {
        assert_eq!(
            rewrite("rootPath: /x # data\n", &[json!("b")]),
            "rootPath: /x # data\nreplication:\n  routes:\n    - b\n"
        );
        // No trailing newline, and an empty file.
        assert_eq!(
            rewrite("rootPath: /x", &[]),
            "rootPath: /x\nreplication:\n  routes: []\n"
        );
        assert_eq!(
            rewrite("", &[json!("b")]),
            "replication:\n  routes:\n    - b\n"
        );
        assert_eq!(
            rewrite("replication: null # off\nstorage: {}\n", &[json!("b")]),
            "replication: # off\n  routes:\n    - b\nstorage: {}\n"
        );
        assert_eq!(
            rewrite("replication:\nstorage: {}\n", &[json!("b")]),
            "replication:\n  routes:\n    - b\nstorage: {}\n"
        );
    }

    #[test]
    fn empty_and_inline_flow_lists() {
        let text = "replication:\n  routes: [] # peers\n  port: 9933\n";
        assert_eq!(
            rewrite(text, &[json!("a")]),
            "replication:\n  routes: # peers\n    - a\n  port: 9933\n"
        );
        let text = "replication:\n  routes: [a, 'b c', {hostname: d}]   # peers\n  port: 9933\n";
        assert_eq!(
            rewrite(text, &[]),
            "replication:\n  routes: []   # peers\n  port: 9933\n"
        );
        // A flow list over several lines, with a comment inside.
        let text = "replication:\n  routes: [\n    a,\n    # old\n    b\n  ]\n  port: 9933\n";
        assert_eq!(
            rewrite(text, &[json!("c")]),
            "replication:\n  routes:\n    # old\n    - c\n  port: 9933\n"
        );
    }

    #[test]
    fn block_lists_with_map_items_and_comments() {
        let text = "\
# top comment
replication:
  hostname: 127.0.0.1
  routes:
    # the hub
    - 127.0.0.2   # first
    - hostname: 127.0.0.3
      port: 9933

      replicates:
        sends: true
    # - 127.0.0.9 (disabled)
    - ws://127.0.0.4:9933
  # trailing comment about port
  port: 127.0.0.1:9933
other: 1
";
        assert_eq!(
            rewrite(text, &[json!("x"), json!({"host": "y", "port": 1})]),
            "\
# top comment
replication:
  hostname: 127.0.0.1
  routes:
    # the hub
    # - 127.0.0.9 (disabled)
    - x
    - {host: y, port: 1}
  # trailing comment about port
  port: 127.0.0.1:9933
other: 1
"
        );
        // Items at the key's own indentation (valid YAML) keep that style; the list is last.
        let text = "replication:\n  routes:\n  - a\n  - hostname: b\n    port: 1\n";
        assert_eq!(
            rewrite(text, &[json!("c")]),
            "replication:\n  routes:\n  - c\n"
        );
    }

    #[test]
    fn odd_layouts() {
        let cases: &[(&str, &str)] = &[
            // Quoted key, comment on the key line, column-0 comment among the items.
            (
                "replication:\n  \"routes\":   # peers\n# col0\n    - a\n  port: 1\n",
                "replication:\n  routes:   # peers\n# col0\n    - z\n  port: 1\n",
            ),
            // A nested `routes` (under an ignored Harper key) is not the one.
            (
                "replication:\n  mtls:\n    routes: keep\n  hostname: a\n",
                "replication:\n  mtls:\n    routes: keep\n  hostname: a\n  routes:\n    - z\n",
            ),
            // Document markers, and the section in the middle of the file.
            (
                "---\nreplication:\n  routes: ~\nlogging:\n  level: info\n...\n",
                "---\nreplication:\n  routes:\n    - z\nlogging:\n  level: info\n...\n",
            ),
            // Last line without a newline.
            (
                "replication:\n  routes:\n    - a",
                "replication:\n  routes:\n    - z\n",
            ),
            // A comment after the last item stays below the list.
            (
                "replication:\n  routes:\n    - a\n    # - b (off)\n  port: 1\n",
                "replication:\n  routes:\n    - z\n    # - b (off)\n  port: 1\n",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(rewrite(input, &[json!("z")]), *want, "{input:?}");
            // Writing the result again is a no-op.
            assert_eq!(rewrite(want, &[json!("z")]), *want, "{want:?}");
        }
    }

    #[test]
    fn crlf_files_stay_crlf() {
        let text = HARPER.replace('\n', "\r\n");
        let out = rewrite(&text, &two_routes());
        assert_eq!(out, rewrite(HARPER, &two_routes()).replace('\n', "\r\n"));
        let text = "a: 1\r\nreplication:\r\n  hostname: x\r\n";
        assert_eq!(
            rewrite(text, &[json!("b")]),
            "a: 1\r\nreplication:\r\n  hostname: x\r\n  routes:\r\n    - b\r\n"
        );
    }

    #[test]
    fn rendering() {
        let cases: &[(Value, &str)] = &[
            (json!("127.0.0.2"), "127.0.0.2"),
            (json!("ws://127.0.0.2:9933"), "ws://127.0.0.2:9933"),
            (json!("host-1.example.com"), "host-1.example.com"),
            (json!("true"), "\"true\""),
            (json!("null"), "\"null\""),
            (json!("9933"), "\"9933\""),
            (json!("1.5"), "\"1.5\""),
            (json!(""), "\"\""),
            (json!("a b"), "\"a b\""),
            (json!("#x"), "\"#x\""),
            (json!("a: b"), "\"a: b\""),
            (json!("end:"), "\"end:\""),
            (json!("*"), "\"*\""),
            (json!("it's \"q\"\n"), "\"it's \\\"q\\\"\\n\""),
            (json!(9933), "9933"),
            (json!(-1), "-1"),
            (json!(true), "true"),
            (json!(null), "null"),
            (
                json!({"url": "ws://h:1", "n": 1, "r": {"sends": true}, "s": []}),
                "{url: \"ws://h:1\", n: 1, r: {sends: true}, s: []}",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(render(v, true), *want, "{v}");
        }
    }

    #[test]
    fn round_trip_through_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("skerry.yaml");
        fs::write(&path, HARPER).unwrap();
        let routes = vec![
            json!("127.0.0.2"),
            json!("ws://127.0.0.2:9933"),
            json!("wss://user@host:9933/path?x=1"),
            json!("a: b # not a comment"),
            json!("true"),
            json!("123"),
            json!("naïve ünïcode ✓"),
            json!({"hostname": "127.0.0.3", "port": 9933}),
            json!({"host": "h", "port": "9930", "url": "ws://h//x:1"}),
            json!({
                "hostname": "n4",
                "replicates": {"sends": true, "receives": false},
                "subscriptions": [{"database": "dev", "table": "dog", "subscribe": true, "publish": false}],
                "startTime": "2026-01-01T00:00:00.000Z",
                "revokedCertificates": ["01AB", 7],
                "shard": -2,
                "weight": 0.25,
                "zed": null,
                "alpha": 1
            }),
        ];
        for set in [routes.clone(), vec![], routes[..3].to_vec(), routes.clone()] {
            write_routes(&path, &set).unwrap();
            let cfg = Config::load(Some(&path), &[]).unwrap();
            // Compare as text too: key order must be preserved, not just map equality.
            assert_eq!(
                serde_json::to_string(&cfg.replication.routes).unwrap(),
                serde_json::to_string(&set).unwrap()
            );
            assert_eq!(cfg.replication.hostname.as_deref(), Some("127.0.0.1"));
            let text = fs::read_to_string(&path).unwrap();
            assert!(text.contains("  databases: '*' # Database name"), "{text}");
        }
        // Writing the same routes again changes nothing.
        let before = fs::read_to_string(&path).unwrap();
        write_routes(&path, &routes).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), before);
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("skerry.yaml")]);
    }

    #[test]
    fn refuses_what_it_cannot_edit_and_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        for text in [
            "replication: {hostname: a}\n",
            "replication: [1]\n",
            "replication:\n  routes: [unclosed\n",
            "- a list\n",
        ] {
            fs::write(&path, text).unwrap();
            let err = write_routes(&path, &[json!("x")]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{text}");
            assert!(err.to_string().contains("replication.routes"), "{err}");
            assert_eq!(fs::read_to_string(&path).unwrap(), text);
        }
        let missing = dir.path().join("missing.yaml");
        assert_eq!(
            write_routes(&missing, &[]).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    /// Rewriting keeps the file's owner (a config owned by another account than the node's,
    /// e.g. root's file for a service user). Changing an owner needs root, so only then.
    #[cfg(unix)]
    #[test]
    fn keeps_the_owner_when_it_may() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("owned.yaml");
        fs::write(&path, HARPER).unwrap();
        if std::os::unix::fs::chown(&path, Some(4242), Some(4243)).is_err() {
            return; // not root: cannot set up a foreign owner
        }
        write_routes(&path, &[json!("z")]).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4243));
        assert!(fs::read_to_string(&path).unwrap().contains("    - z\n"));
    }

    #[cfg(unix)]
    #[test]
    fn a_read_only_config_is_refused_and_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.yaml");
        fs::write(&path, HARPER).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
        let err = write_routes(&path, &[json!("z")]).unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), HARPER);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o444
        );
    }

    #[cfg(unix)]
    #[test]
    fn keeps_permissions_and_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.yaml");
        let link = dir.path().join("link.yaml");
        fs::write(&real, HARPER).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_routes(&link, &[json!("z")]).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(fs::read_to_string(&real).unwrap().contains("    - z\n"));
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;
    use serde_json::json;

    fn set(text: &str, key: &str, v: Value) -> String {
        let k: Vec<String> = key.split('.').map(str::to_string).collect();
        rewrite_key(text, &k, &v).unwrap_or_else(|e| panic!("{key} in {text:?}: {e}"))
    }

    /// (file, key, value, expected file): comments and other lines survive byte for byte.
    #[test]
    fn set_configuration_edits_only_the_key_it_sets() {
        let cases: &[(&str, &str, Value, &str)] = &[
            (
                "# top\nlogging:\n  level: warn # quiet\n  auditRetention: 3d\n",
                "logging.level",
                json!("info"),
                "# top\nlogging:\n  level: info # quiet\n  auditRetention: 3d\n",
            ),
            (
                "logging:\n  level: warn\nrootPath: /x\n",
                "logging.auditRetention",
                json!("1d"),
                "logging:\n  level: warn\n  auditRetention: 1d\nrootPath: /x\n",
            ),
            (
                "rootPath: /x\n",
                "operationsApi.network.port",
                json!("127.0.0.1:9999"),
                "rootPath: /x\noperationsApi:\n  network:\n    port: 127.0.0.1:9999\n",
            ),
            (
                "operationsApi:\n    network:\n        port: 9925\n        maxBodySize: 1M\n",
                "operationsApi.network.port",
                json!(9999),
                "operationsApi:\n    network:\n        port: 9999\n        maxBodySize: 1M\n",
            ),
            (
                "logging: null\nrootPath: /x\n",
                "logging.level",
                json!("debug"),
                "logging:\n  level: debug\nrootPath: /x\n",
            ),
            (
                "replication:\n  databases:\n    - a\n    - b\n  port: 9933\r\n",
                "replication.databases",
                json!("*"),
                "replication:\n  databases: \"*\"\n  port: 9933\r\n",
            ),
        ];
        for (text, key, v, want) in cases {
            assert_eq!(&set(text, key, v.clone()), want, "{key}");
        }
    }

    #[test]
    fn a_layout_the_editor_cannot_follow_is_refused_not_mangled() {
        let k = vec!["logging".to_string(), "level".to_string()];
        assert!(rewrite_key("logging: {level: warn}\n", &k, &json!("info")).is_err());
    }
}
