//! The cheap way to a SELECT's plan: a shortcut that plans the plainest SELECTs without
//! sqlparser, and a small bounded cache of the plans of recent SELECT texts.
//!
//! Owns nothing but those plans. Must never yield a plan other than `parse::parse` would for
//! the same text: the shortcut declines whatever it is not certain of, debug builds compare
//! every shortcut plan with the full parse, and errors are always the full parser's.

use super::parse::{parse, BinOp, Expr, Plan, Select, SelectItem, TableRef};
use crate::core::error::OpError;
use serde_json::Value;

/// SELECT plans kept by [`parse_cached`], least recently used out first.
const PLAN_CACHE_ENTRIES: usize = 256;
/// Longest text whose plan is kept: with [`PLAN_CACHE_ENTRIES`] this bounds the cache to about
/// a megabyte of text plus plans no larger than their text's expressions.
const PLAN_CACHE_TEXT: usize = 4096;

struct PlanCache {
    plans: std::collections::HashMap<String, (Plan, u64)>,
    tick: u64,
}

static PLAN_CACHE: std::sync::LazyLock<std::sync::Mutex<PlanCache>> =
    std::sync::LazyLock::new(|| {
        std::sync::Mutex::new(PlanCache {
            plans: std::collections::HashMap::new(),
            tick: 0,
        })
    });

/// [`parse`], remembering the plans of recent SELECTs by their exact text: sqlparser's
/// tokenizer and parser cost more CPU than a point read itself, and clients repeat the same
/// statements. A plan depends on nothing but its text (no catalog, no clock: NOW() is
/// evaluated by the executor), so a kept plan answers exactly as a fresh parse would. Errors
/// and writes are never kept (an INSERT's plan holds its rows).
pub fn parse_cached(sql: &str) -> Result<Plan, OpError> {
    let cacheable = sql.len() <= PLAN_CACHE_TEXT;
    if cacheable {
        if let Ok(mut c) = PLAN_CACHE.lock() {
            c.tick += 1;
            let tick = c.tick;
            if let Some((plan, used)) = c.plans.get_mut(sql) {
                *used = tick;
                return Ok(plan.clone());
            }
        }
    }
    if let Some(plan) = simple_select(sql) {
        // Debug builds (every test) prove the shortcut equal to the full parse.
        debug_assert_eq!(Ok(&plan), parse(sql).as_ref(), "{sql}");
        return Ok(plan);
    }
    let plan = parse(sql)?;
    if cacheable && matches!(plan, Plan::Select(_)) {
        if let Ok(mut c) = PLAN_CACHE.lock() {
            if c.plans.len() >= PLAN_CACHE_ENTRIES {
                // A scan of 256 entries on a miss is cheaper than keeping an order list.
                let oldest = c
                    .plans
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    c.plans.remove(&k);
                }
            }
            let tick = c.tick;
            c.plans.insert(sql.to_string(), (plan.clone(), tick));
        }
    }
    Ok(plan)
}

#[derive(Debug, PartialEq)]
enum Tok<'a> {
    /// An unquoted word (keyword or name) or a backtick-quoted name.
    Word(&'a str, bool),
    Int(i64),
    Str(&'a str),
    Sym(&'static str),
}

/// Tokens of the plainest SQL, or None at anything else (the full parser then decides).
fn simple_tokens(sql: &str) -> Option<Vec<Tok<'_>>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                out.push(Tok::Word(&sql[start..i], false));
            }
            b'0'..=b'9' => {
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let digits = &sql[start..i];
                let next_is_word = i < b.len() && (word(b[i]) || b[i] == b'.');
                if next_is_word || digits.len() > 15 || (digits.len() > 1 && c == b'0') {
                    return None;
                }
                out.push(Tok::Int(digits.parse().ok()?));
            }
            b'`' | b'\'' => {
                i += 1;
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                if i == start + 1 || b.get(i) != Some(&c) {
                    return None;
                }
                let inner = &sql[start + 1..i];
                i += 1;
                out.push(if c == b'`' {
                    Tok::Word(inner, true)
                } else {
                    Tok::Str(inner)
                });
            }
            b'*' | b',' | b'.' | b'=' => {
                i += 1;
                out.push(Tok::Sym(match c {
                    b'*' => "*",
                    b',' => ",",
                    b'.' => ".",
                    _ => "=",
                }));
            }
            b'<' | b'>' => {
                i += 1;
                let eq = b.get(i) == Some(&b'=');
                if eq {
                    i += 1;
                }
                if matches!(b.get(i), Some(b'<' | b'>' | b'=')) {
                    return None;
                }
                out.push(Tok::Sym(match (c, eq) {
                    (b'<', false) => "<",
                    (b'<', true) => "<=",
                    (_, false) => ">",
                    _ => ">=",
                }));
            }
            _ => return None,
        }
        if out.len() > 64 {
            return None;
        }
    }
    Some(out)
}

/// Keywords sqlparser reads as plain names wherever the shortcut puts a name (pinned by
/// `the_simple_select_shortcut_plans_exactly_as_sqlparser`): common attribute names.
const PLAIN_KEYWORDS: [&str; 5] = ["DATA", "ID", "NAME", "STATUS", "TYPE"];

/// `SELECT * | col, ... FROM db.table [WHERE col <op> literal | col BETWEEN lit AND lit]`,
/// the shape of most point and range reads, planned without sqlparser (whose tokenizer and
/// parser cost more CPU than the read itself). The plan is exactly the one [`parse`] builds:
/// anything the shortcut is not certain of (keywords used as names, quoting other than
/// backticks, other literals, aliases, more clauses) returns None and goes the full way.
fn simple_select(sql: &str) -> Option<Plan> {
    let toks = simple_tokens(sql)?;
    let mut t = toks.iter().peekable();
    let kw = |tok: Option<&Tok>, k: &str| matches!(tok, Some(Tok::Word(w, false)) if w.eq_ignore_ascii_case(k));
    // A name: backtick-quoted, or an unquoted word that is no keyword at all.
    let name = |tok: Option<&Tok>| -> Option<String> {
        match tok {
            Some(Tok::Word(w, true)) => Some(w.to_string()),
            Some(Tok::Word(w, false)) => {
                let upper = w.to_ascii_uppercase();
                let keyword = sqlparser::keywords::ALL_KEYWORDS
                    .binary_search(&upper.as_str())
                    .is_ok();
                (!keyword || PLAIN_KEYWORDS.contains(&upper.as_str())).then(|| w.to_string())
            }
            _ => None,
        }
    };
    let lit = |tok: Option<&Tok>| -> Option<Value> {
        match tok {
            Some(Tok::Int(n)) => Some(Value::from(*n)),
            Some(Tok::Str(s)) => Some(Value::String(s.to_string())),
            _ => None,
        }
    };
    let column = |name: String| Expr::Column {
        qualifier: None,
        name,
        slot: 0,
    };
    if !kw(t.next(), "SELECT") {
        return None;
    }
    let mut items = Vec::new();
    if t.peek() == Some(&&Tok::Sym("*")) {
        t.next();
        items.push(SelectItem::Star);
    } else {
        loop {
            let n = name(t.next())?;
            items.push(SelectItem::Expr {
                expr: column(n.clone()),
                name: n,
            });
            if t.peek() != Some(&&Tok::Sym(",")) {
                break;
            }
            t.next();
        }
    }
    if !kw(t.next(), "FROM") {
        return None;
    }
    let database = name(t.next())?;
    if t.next() != Some(&Tok::Sym(".")) {
        return None;
    }
    let table = name(t.next())?;
    let filter = match t.next() {
        None => None,
        Some(w) if kw(Some(w), "WHERE") => {
            let col = column(name(t.next())?);
            let e = match t.next()? {
                Tok::Sym(op) => {
                    let op = match *op {
                        "=" => BinOp::Eq,
                        "<" => BinOp::Lt,
                        "<=" => BinOp::Le,
                        ">" => BinOp::Gt,
                        ">=" => BinOp::Ge,
                        _ => return None,
                    };
                    let v = lit(t.next())?;
                    Expr::Binary(op, Box::new(col), Box::new(Expr::Literal(v)))
                }
                w if kw(Some(w), "BETWEEN") => {
                    let low = lit(t.next())?;
                    if !kw(t.next(), "AND") {
                        return None;
                    }
                    let high = lit(t.next())?;
                    Expr::Between {
                        expr: Box::new(col),
                        low: Box::new(Expr::Literal(low)),
                        high: Box::new(Expr::Literal(high)),
                        negated: false,
                    }
                }
                _ => return None,
            };
            if t.next().is_some() {
                return None;
            }
            Some(e)
        }
        Some(_) => return None,
    };
    Some(Plan::Select(Box::new(Select {
        from: Some(TableRef {
            alias: table.clone(),
            database,
            table,
        }),
        joins: Vec::new(),
        items,
        filter,
        group_by: Vec::new(),
        having: None,
        order_by: Vec::new(),
        limit: None,
        offset: 0,
        distinct: false,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_plans_equal_fresh_ones_and_the_cache_stays_bounded() {
        let sqls: Vec<String> = (0..PLAN_CACHE_ENTRIES + 40)
            .map(|i| format!("SELECT name, NOW() AS t FROM a.b WHERE id = {i} LIMIT 3"))
            .collect();
        for _ in 0..2 {
            for sql in &sqls {
                assert_eq!(parse_cached(sql).unwrap(), parse(sql).unwrap(), "{sql}");
            }
        }
        assert!(PLAN_CACHE.lock().unwrap().plans.len() <= PLAN_CACHE_ENTRIES);
        // Errors and writes are answered, never kept.
        for sql in ["SELECT * FROM", "INSERT INTO a.b (id) VALUES (1)"] {
            assert_eq!(parse_cached(sql), parse(sql));
            assert!(!PLAN_CACHE.lock().unwrap().plans.contains_key(sql));
        }
        let long = format!("SELECT '{}'", "x".repeat(PLAN_CACHE_TEXT));
        assert_eq!(parse_cached(&long).unwrap(), parse(&long).unwrap());
        assert!(!PLAN_CACHE.lock().unwrap().plans.contains_key(&long));
    }

    #[test]
    fn the_simple_select_shortcut_plans_exactly_as_sqlparser() {
        // (text, whether the shortcut takes it): taken ones must equal the full parse;
        // the others must be left to it.
        let cases = [
            ("SELECT * FROM `bench`.`t` WHERE id = 17", true),
            ("SELECT * FROM bench.t WHERE id = 0", true),
            ("select * from bench.t where id=17", true),
            ("SELECT * FROM bench.t", true),
            (
                "SELECT id, score FROM bench.t WHERE score BETWEEN 3 AND 9",
                true,
            ),
            (
                "SELECT * FROM `bench`.`t` WHERE score BETWEEN 998 AND 998",
                true,
            ),
            ("SELECT * FROM bench.t WHERE id >= 5", true),
            ("SELECT * FROM bench.t WHERE id < 5", true),
            ("SELECT * FROM bench.t WHERE name = 'Alice'", true),
            (
                "  SELECT `id` FROM bench.t\n WHERE id <= 123456789012345 ",
                true,
            ),
            ("SELECT * FROM bench.t WHERE id = 007", false),
            ("SELECT * FROM bench.t WHERE id = 1.5", false),
            ("SELECT * FROM bench.t WHERE id = -1", false),
            ("SELECT * FROM bench.t WHERE id = 1234567890123456", false),
            ("SELECT * FROM bench.t WHERE id = 'it''s'", false),
            ("SELECT * FROM bench.t WHERE id = \"x\"", false),
            ("SELECT * FROM bench.t WHERE id = 1;", false),
            ("SELECT * FROM bench.t WHERE id = 1 AND x = 2", false),
            ("SELECT * FROM bench.t WHERE id <> 1", false),
            ("SELECT * FROM bench.t WHERE id = 1 LIMIT 1", false),
            ("SELECT * FROM 2024.notes WHERE id = 1", false),
            ("SELECT * FROM bench.t t WHERE id = 1", false),
            (
                "SELECT id, name, status, type, data FROM bench.t WHERE name = 'x'",
                true,
            ),
            ("SELECT * FROM id.name WHERE status = 1", true),
            (
                "SELECT * FROM type.data WHERE type BETWEEN 'a' AND 'b'",
                true,
            ),
            ("SELECT * FROM bench.t WHERE data > 2", true),
            ("SELECT user FROM bench.t", false), // USER is CURRENT_USER to sqlparser
            ("SELECT * FROM bench.t WHERE value = 1", false),
            ("SELECT * FROM bench.order", false),
            ("SELECT * FROM bench.t WHERE", false),
            ("SELECT * FROM t WHERE id = 1", false),
            ("SELECT id, FROM bench.t", false),
            ("SELECT * FROM bench.t WHERE id BETWEEN 1 OR 2", false),
            ("SELECT * FROM bench.t WHERE id = é", false),
        ];
        for (sql, taken) in cases {
            match simple_select(sql) {
                Some(plan) => {
                    assert!(taken, "{sql}: taken by the shortcut");
                    assert_eq!(Ok(plan), parse(sql), "{sql}");
                }
                None => assert!(!taken, "{sql}: not taken by the shortcut"),
            }
            // Either way the cached entry point answers as the full parse.
            assert_eq!(parse_cached(sql), parse(sql), "{sql}");
        }
    }
}
