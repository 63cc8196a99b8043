//! Evaluation of bound SQL expressions over one row (one record per table of the FROM list),
//! and the scalar functions Harper's SQL guide documents (string, math, logical, date).
//!
//! Pure: no store, no catalog, no allocation a row does not already bound. Never panics on
//! input: a function given the wrong types answers null, as Harper's do; only what cannot
//! answer at all (a REGEXP pattern that is invalid or backtracks too long) is an error.

use super::parse::{BinOp, CastTo, ConvertTo, Expr, Func};
use crate::core::error::OpError;
use crate::ops::query::compare;
use serde_json::{Map, Number, Value};
use std::cmp::Ordering;
use std::sync::Arc;

/// One joined row: a record per table slot (None where a LEFT JOIN found nothing).
pub type Row = Vec<Option<Map<String, Value>>>;

/// What an expression is evaluated against.
pub struct Ctx<'a> {
    pub row: &'a [Option<Map<String, Value>>],
    /// Finished aggregate values of the row's group (grouped queries).
    pub aggs: &'a [Value],
    /// The statement's clock (every NOW() of one statement agrees).
    pub now_ms: i64,
}

static NULL: Value = Value::Null;

/// An f64 as JSON: integral values print as integers (1998, not 1998.0), as Harper's do.
pub fn num(x: f64) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
        return Value::from(x as i64);
    }
    Number::from_f64(x)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn as_f64(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// A value as text, the way string functions see it (null as the empty string).
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// SQL truth: only true passes a WHERE; null and false do not.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Null => false,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn cmp_values(op: BinOp, a: &Value, b: &Value) -> Value {
    if a.is_null() || b.is_null() {
        return Value::Null;
    }
    let ord = compare(a, b);
    Value::Bool(match op {
        BinOp::Eq => ord == Some(Ordering::Equal),
        BinOp::Ne => ord != Some(Ordering::Equal),
        BinOp::Lt => ord == Some(Ordering::Less),
        BinOp::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        BinOp::Gt => ord == Some(Ordering::Greater),
        BinOp::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        _ => false,
    })
}

/// Case-insensitive LIKE with `%` (any run) and `_` (one character).
pub fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < t.len() {
        if j < p.len() && (p[j] == '_' || (p[j] != '%' && p[j] == t[i])) {
            i += 1;
            j += 1;
        } else if j < p.len() && p[j] == '%' {
            star = Some((j, i));
            j += 1;
        } else if let Some((sj, si)) = star {
            j = sj + 1;
            i = si + 1;
            star = Some((sj, si + 1));
        } else {
            return false;
        }
    }
    while j < p.len() && p[j] == '%' {
        j += 1;
    }
    j == p.len()
}

pub fn eval(e: &Expr, cx: &Ctx) -> Result<Value, OpError> {
    Ok(match e {
        Expr::Column { name, slot, .. } => cx
            .row
            .get(*slot)
            .and_then(Option::as_ref)
            .and_then(|r| r.get(name))
            .cloned()
            .unwrap_or(Value::Null),
        Expr::Literal(v) => v.clone(),
        Expr::AggRef(i) => cx.aggs.get(*i).cloned().unwrap_or(Value::Null),
        Expr::Agg { .. } => Value::Null,
        Expr::Not(x) => match eval(x, cx)? {
            Value::Null => Value::Null,
            v => Value::Bool(!truthy(&v)),
        },
        Expr::Neg(x) => match as_f64(&eval(x, cx)?) {
            Some(n) => num(-n),
            None => Value::Null,
        },
        Expr::Binary(op, a, b) => binary(*op, a, b, cx)?,
        Expr::IsNull(x, negated) => Value::Bool(eval(x, cx)?.is_null() != *negated),
        Expr::InList {
            expr,
            list,
            negated,
        } => {
            let v = eval(expr, cx)?;
            if v.is_null() {
                return Ok(Value::Null);
            }
            let mut found = false;
            for i in list {
                if compare(&v, &eval(i, cx)?) == Some(Ordering::Equal) {
                    found = true;
                    break;
                }
            }
            Value::Bool(found != *negated)
        }
        Expr::Between {
            expr,
            low,
            high,
            negated,
        } => {
            let v = eval(expr, cx)?;
            let (lo, hi) = (eval(low, cx)?, eval(high, cx)?);
            if v.is_null() || lo.is_null() || hi.is_null() {
                return Ok(Value::Null);
            }
            let inside = matches!(compare(&v, &lo), Some(Ordering::Greater | Ordering::Equal))
                && matches!(compare(&v, &hi), Some(Ordering::Less | Ordering::Equal));
            Value::Bool(inside != *negated)
        }
        Expr::Like {
            expr,
            pattern,
            negated,
        } => {
            let (v, p) = (eval(expr, cx)?, eval(pattern, cx)?);
            match (&v, &p) {
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                _ => Value::Bool(like(&text(&v), &text(&p)) != *negated),
            }
        }
        Expr::Case {
            operand,
            whens,
            otherwise,
        } => {
            let subject = match operand {
                Some(o) => Some(eval(o, cx)?),
                None => None,
            };
            for (w, then) in whens {
                let hit = match &subject {
                    Some(s) => compare(s, &eval(w, cx)?) == Some(Ordering::Equal),
                    None => truthy(&eval(w, cx)?),
                };
                if hit {
                    return eval(then, cx);
                }
            }
            match otherwise {
                Some(o) => eval(o, cx)?,
                None => Value::Null,
            }
        }
        Expr::Cast(x, to) => cast(eval(x, cx)?, to),
        Expr::Convert { expr, to, style } => convert(eval(expr, cx)?, to, *style)?,
        Expr::Regexp {
            expr,
            pattern,
            flags,
            compiled,
        } => {
            let v = eval(expr, cx)?;
            // NULL (or a missing attribute) matches nothing.
            if v.is_null() {
                return Ok(Value::Bool(false));
            }
            // Numbers and booleans are matched by their JavaScript text (2.0 is "2").
            let subject = js_string(&v);
            match compiled {
                Some(rx) => Value::Bool(rx.is_match(&subject)?),
                None => {
                    let p = eval(pattern, cx)?;
                    let f = match flags {
                        Some(f) => eval(f, cx)?,
                        None => Value::Null,
                    };
                    if p.is_null() {
                        return Ok(Value::Bool(false));
                    }
                    let rx = Rx::compile(&text(&p), &text(&f))?;
                    Value::Bool(rx.is_match(&subject)?)
                }
            }
        }
        Expr::Func(f, args) => {
            let mut vals = Vec::with_capacity(args.len());
            for a in args {
                vals.push(eval(a, cx)?);
            }
            call(*f, &vals, cx.now_ms)
        }
    })
}

fn binary(op: BinOp, a: &Expr, b: &Expr, cx: &Ctx) -> Result<Value, OpError> {
    Ok(match op {
        BinOp::And => {
            let l = eval(a, cx)?;
            if !l.is_null() && !truthy(&l) {
                return Ok(Value::Bool(false));
            }
            let r = eval(b, cx)?;
            if !r.is_null() && !truthy(&r) {
                return Ok(Value::Bool(false));
            }
            if l.is_null() || r.is_null() {
                Value::Null
            } else {
                Value::Bool(true)
            }
        }
        BinOp::Or => {
            let l = eval(a, cx)?;
            if truthy(&l) {
                return Ok(Value::Bool(true));
            }
            let r = eval(b, cx)?;
            if truthy(&r) {
                return Ok(Value::Bool(true));
            }
            if l.is_null() || r.is_null() {
                Value::Null
            } else {
                Value::Bool(false)
            }
        }
        BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            cmp_values(op, &eval(a, cx)?, &eval(b, cx)?)
        }
        BinOp::Concat => {
            let (l, r) = (eval(a, cx)?, eval(b, cx)?);
            if l.is_null() || r.is_null() {
                return Ok(Value::Null);
            }
            Value::String(text(&l) + &text(&r))
        }
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => {
            let (l, r) = (eval(a, cx)?, eval(b, cx)?);
            if op == BinOp::Add && (l.is_string() || r.is_string()) {
                if l.is_null() || r.is_null() {
                    return Ok(Value::Null);
                }
                return Ok(Value::String(text(&l) + &text(&r)));
            }
            let (Some(x), Some(y)) = (as_f64(&l), as_f64(&r)) else {
                return Ok(Value::Null);
            };
            num(match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
                _ => x % y,
            })
        }
    })
}

fn cast(v: Value, to: &CastTo) -> Value {
    if v.is_null() {
        return v;
    }
    match to {
        CastTo::String => Value::String(text(&v)),
        CastTo::Integer => match &v {
            Value::Number(n) => n.as_f64().map(|x| num(x.trunc())).unwrap_or(Value::Null),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .map(|x| num(x.trunc()))
                .unwrap_or(Value::Null),
            Value::Bool(b) => Value::from(*b as i64),
            _ => Value::Null,
        },
        CastTo::Number => match &v {
            Value::Number(_) => v,
            Value::String(s) => s.trim().parse::<f64>().map(num).unwrap_or(Value::Null),
            Value::Bool(b) => Value::from(*b as i64),
            _ => Value::Null,
        },
        CastTo::Boolean => Value::Bool(truthy(&v)),
    }
}

/// Longest REGEXP pattern accepted, in bytes.
const MAX_PATTERN: usize = 4096;
/// Most bytes one compiled pattern (and its lazy DFA cache) may take.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Backtracking steps one match may take (fancy-regex's own default, kept explicit): a
/// catastrophic pattern fails with a clear error instead of holding a thread.
const BACKTRACK_LIMIT: usize = 1_000_000;

/// A compiled REGEXP / REGEXP_LIKE pattern with JavaScript RegExp's flags. Plans compare and
/// print it by its text, so a cached plan keeps the compiled expression.
#[derive(Clone)]
pub struct Rx {
    source: String,
    flags: String,
    re: Arc<fancy_regex::Regex>,
}

impl PartialEq for Rx {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.flags == other.flags
    }
}

impl std::fmt::Debug for Rx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}/{}", self.source, self.flags)
    }
}

impl Rx {
    /// Compiles `pattern` with JavaScript flags: i, m and s map to their meaning; g, y, u and
    /// d change nothing for a yes/no match here; any other is refused.
    pub fn compile(pattern: &str, flags: &str) -> Result<Rx, OpError> {
        if pattern.len() > MAX_PATTERN {
            return Err(OpError::bad_request(format!(
                "REGEXP pattern is longer than {MAX_PATTERN} bytes"
            )));
        }
        let mut b = fancy_regex::RegexBuilder::new(pattern);
        for c in flags.chars() {
            match c {
                'i' => {
                    b.case_insensitive(true);
                }
                'm' => {
                    b.multi_line(true);
                }
                's' => {
                    b.dot_matches_new_line(true);
                }
                'g' | 'y' | 'u' | 'd' => {}
                other => {
                    return Err(OpError::bad_request(format!(
                        "REGEXP_LIKE flag '{other}' is not supported (i, m and s are; g, y, u and d are ignored)"
                    )))
                }
            }
        }
        b.backtrack_limit(BACKTRACK_LIMIT)
            .delegate_size_limit(REGEX_SIZE_LIMIT)
            .delegate_dfa_size_limit(REGEX_SIZE_LIMIT);
        let re = b.build().map_err(|e| {
            OpError::bad_request(format!("invalid regular expression '{pattern}': {e}"))
        })?;
        Ok(Rx {
            source: pattern.to_string(),
            flags: flags.to_string(),
            re: Arc::new(re),
        })
    }

    pub fn is_match(&self, subject: &str) -> Result<bool, OpError> {
        self.re.is_match(subject).map_err(|e| {
            OpError::bad_request(format!(
                "the regular expression '{}' could not be matched: {e} (at most {BACKTRACK_LIMIT} backtracking steps per value); simplify the pattern",
                self.source
            ))
        })
    }
}

/// CONVERT's style numbers (AlaSQL's table): the date format each prints, and whether the
/// month name is in lower case.
pub const CONVERT_STYLES: &[(u16, &str, bool)] = &[
    (1, "MM/DD/YY", false),
    (2, "YY.MM.DD", false),
    (3, "DD/MM/YY", false),
    (4, "DD.MM.YY", false),
    (5, "DD-MM-YY", false),
    (6, "DD MMM YY", true),
    (7, "MMM DD,YY", false),
    (8, "HH:mm:ss", false),
    (10, "MM-DD-YY", false),
    (11, "YY/MM/DD", false),
    (12, "YYMMDD", false),
    (101, "MM/DD/YYYY", false),
    (102, "YYYY.MM.DD", false),
    (103, "DD/MM/YYYY", false),
    (104, "DD.MM.YYYY", false),
    (105, "DD-MM-YYYY", false),
    (106, "DD MMM YYYY", true),
    (107, "MMM DD,YYYY", false),
    (108, "HH:mm:ss", false),
    (110, "MM-DD-YYYY", false),
    (111, "YYYY/MM/DD", false),
    (112, "YYYYMMDD", false),
];

pub fn convert_style(style: u16) -> Option<(&'static str, bool)> {
    CONVERT_STYLES
        .iter()
        .find(|(n, ..)| *n == style)
        .map(|(_, f, lower)| (*f, *lower))
}

/// JavaScript's ToNumber (`+x`): null is 0, text is read as a JS number literal (blank is 0,
/// anything else NaN).
pub fn js_number(v: &Value) -> f64 {
    match v {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => js_parse_number(s),
        Value::Array(a) => match a.as_slice() {
            [] => 0.0,
            [one] => js_parse_number(&js_string(one)),
            _ => f64::NAN,
        },
        Value::Object(_) => f64::NAN,
    }
}

fn js_parse_number(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        return 0.0;
    }
    match t {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    for (prefix, radix) in [
        ("0x", 16),
        ("0X", 16),
        ("0o", 8),
        ("0O", 8),
        ("0b", 2),
        ("0B", 2),
    ] {
        if let Some(digits) = t.strip_prefix(prefix) {
            return u64::from_str_radix(digits, radix)
                .map(|n| n as f64)
                .unwrap_or(f64::NAN);
        }
    }
    // Rust also reads "inf" and "nan", JavaScript does not.
    if !t
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

/// JavaScript's `x | 0`: ToNumber, then truncated to a signed 32-bit integer (NaN is 0).
pub fn js_int32(x: f64) -> i64 {
    if !x.is_finite() {
        return 0;
    }
    let m = x.trunc().rem_euclid(4_294_967_296.0);
    let m = if m >= 2_147_483_648.0 {
        m - 4_294_967_296.0
    } else {
        m
    };
    m as i64
}

/// JavaScript's String(x) for a JSON value.
pub fn js_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() && x.fract() == 0.0 && x.abs() < 1e21 => {
                format!("{}", x as i128)
            }
            _ => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                if x.is_null() {
                    String::new()
                } else {
                    js_string(x)
                }
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".into(),
    }
}

/// A date for CONVERT as AlaSQL reads one: text holding eight digits in a row is YYYYMMDD
/// from its start, `YYYY.MM.DD HH:MM:SS` is its own DATETIME output, anything else as DATE
/// reads it (ISO 8601, or epoch milliseconds).
fn convert_date(v: &Value) -> Option<i64> {
    if let Value::String(s) = v {
        let b = s.as_bytes();
        if b.windows(8).any(|w| w.iter().all(u8::is_ascii_digit)) {
            let part = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
            let (y, m, d) = (part(0..4)?, part(4..6)?, part(6..8)?);
            if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
                return None;
            }
            return Some(days_from_civil(y, m, d) * DAY_MS);
        }
        let dotted = b.len() >= 19
            && b[4] == b'.'
            && b[7] == b'.'
            && b[10] == b' '
            && [0..4, 5..7, 8..10, 11..13, 14..16, 17..19]
                .iter()
                .all(|r| b[r.clone()].iter().all(u8::is_ascii_digit));
        if dotted {
            return date_ms(&Value::String(s.replacen('.', "-", 2)));
        }
    }
    date_ms(v)
}

/// `CONVERT(type, v[, style])` with AlaSQL's semantics: a style first formats the value as a
/// date (then converted to the type), INT is `x | 0`, MONEY keeps two decimals, BOOLEAN is
/// JavaScript truth. NULL stays NULL for the text, number and date types (AlaSQL prints
/// "null" or "undefined"); INT, MONEY and BOOLEAN of NULL are 0, 0 and false as in Harper.
fn convert(v: Value, to: &ConvertTo, style: Option<u16>) -> Result<Value, OpError> {
    if let ConvertTo::Unknown(t) = to {
        return Err(unknown_convert_type(t));
    }
    let t = if style.is_some() || matches!(to, ConvertTo::Date | ConvertTo::DateTime) {
        if v.is_null() {
            return Ok(Value::Null);
        }
        match convert_date(&v) {
            Some(t) => Some(t),
            None => return Ok(Value::Null),
        }
    } else {
        None
    };
    let v = match (style.and_then(convert_style), t) {
        (Some((fmt, lower)), Some(t)) => {
            let s = format_date(t, fmt);
            Value::String(if lower { s.to_lowercase() } else { s })
        }
        _ => v,
    };
    let t = t.unwrap_or(0);
    Ok(match to {
        ConvertTo::Date => Value::String(format_date(t, "YY.MM.DD")),
        ConvertTo::DateTime => Value::String(format_date(t, "YYYY.MM.DD HH:mm:ss.SSS")),
        ConvertTo::Int => Value::from(js_int32(js_number(&v))),
        ConvertTo::Money => {
            let m = js_number(&v);
            num(js_int32(m) as f64 + ((m * 100.0) % 100.0) / 100.0)
        }
        ConvertTo::Boolean => Value::Bool(truthy(&v)),
        ConvertTo::Text(n) | ConvertTo::Char(n) if v.is_null() => {
            let _ = n;
            Value::Null
        }
        ConvertTo::Text(n) => {
            let s = js_string(&v);
            Value::String(match n {
                Some(n) => s.chars().take(*n).collect(),
                None => s,
            })
        }
        ConvertTo::Char(n) => {
            let s = js_string(&v);
            Value::String(match n {
                Some(n) => s.chars().chain(std::iter::repeat(' ')).take(*n).collect(),
                None => s,
            })
        }
        ConvertTo::Number(size, scale) => {
            if v.is_null() {
                return Ok(Value::Null);
            }
            let mut m = js_number(&v);
            if let Some(p) = size {
                if !(1..=100).contains(p) {
                    return Err(OpError::bad_request(format!(
                        "CONVERT's precision must be 1 to 100, not {p}"
                    )));
                }
                if m.is_finite() {
                    m = format!("{:.*e}", (*p - 1) as usize, m).parse().unwrap_or(m);
                }
            }
            if let Some(s) = scale {
                if *s > 100 {
                    return Err(OpError::bad_request(format!(
                        "CONVERT's scale must be 0 to 100, not {s}"
                    )));
                }
                if m.is_finite() {
                    m = format!("{:.*}", *s as usize, m).parse().unwrap_or(m);
                }
            }
            num(m)
        }
        ConvertTo::Unknown(t) => return Err(unknown_convert_type(t)),
    })
}

pub fn unknown_convert_type(t: &str) -> OpError {
    OpError::bad_request(format!(
        "CONVERT to {t} is not supported (INT, STRING, VARCHAR(n), CHAR(n), NUMBER, FLOAT, DECIMAL(p,s), MONEY, BOOLEAN, DATE, DATETIME are)"
    ))
}

fn arg(args: &[Value], i: usize) -> &Value {
    args.get(i).unwrap_or(&NULL)
}

fn call(f: Func, args: &[Value], now_ms: i64) -> Value {
    let s = |i: usize| text(arg(args, i));
    let n = |i: usize| as_f64(arg(args, i));
    let null_in = |k: usize| args.iter().take(k).any(Value::is_null);
    match f {
        Func::Concat => Value::String(args.iter().map(text).collect()),
        Func::ConcatWs => {
            let sep = s(0);
            let parts: Vec<String> = args[1..]
                .iter()
                .filter(|v| !v.is_null())
                .map(text)
                .collect();
            Value::String(parts.join(&sep))
        }
        Func::Instr => {
            if null_in(2) {
                return Value::Null;
            }
            let (h, needle) = (s(0), s(1));
            match h.find(&needle) {
                Some(byte) => Value::from(h[..byte].chars().count() as i64 + 1),
                None => Value::from(0),
            }
        }
        Func::Len => match arg(args, 0) {
            Value::Null => Value::Null,
            v => Value::from(text(v).chars().count() as i64),
        },
        Func::Lower => string_map(arg(args, 0), |t| t.to_lowercase()),
        Func::Upper => string_map(arg(args, 0), |t| t.to_uppercase()),
        Func::Trim => string_map(arg(args, 0), |t| t.trim().to_string()),
        Func::Replace => {
            if null_in(3) {
                return Value::Null;
            }
            let from = s(1);
            if from.is_empty() {
                return Value::String(s(0));
            }
            Value::String(s(0).replace(&from, &s(2)))
        }
        Func::Substring => {
            if null_in(args.len()) {
                return Value::Null;
            }
            let chars: Vec<char> = s(0).chars().collect();
            // 1-based start; a start of 0 behaves like 1, a negative one counts from the end.
            let start = n(1).unwrap_or(1.0) as i64;
            let from = if start < 0 {
                (chars.len() as i64 + start).max(0) as usize
            } else {
                (start.max(1) - 1) as usize
            };
            let len = match args.get(2) {
                Some(_) => n(2).unwrap_or(0.0).max(0.0) as usize,
                None => usize::MAX,
            };
            Value::String(chars.iter().skip(from).take(len).collect())
        }
        Func::Abs => math1(n(0), f64::abs),
        Func::Ceil => math1(n(0), f64::ceil),
        Func::Floor => math1(n(0), f64::floor),
        Func::Sqrt => math1(n(0), f64::sqrt),
        Func::Exp => math1(n(0), f64::exp),
        Func::Round => {
            let Some(x) = n(0) else {
                return Value::Null;
            };
            let d = n(1).unwrap_or(0.0).clamp(-15.0, 15.0) as i32;
            let m = 10f64.powi(d);
            // Half away from zero on the decimal value (2.345 -> 2.35), as JavaScript's
            // toFixed-based rounding in Harper does for positive numbers.
            let scaled = (x * m * 1e9).round() / 1e9;
            num(scaled.round() / m)
        }
        Func::Random => num(random_unit()),
        Func::IfNull => {
            if arg(args, 0).is_null() {
                arg(args, 1).clone()
            } else {
                arg(args, 0).clone()
            }
        }
        Func::NullIf => {
            if compare(arg(args, 0), arg(args, 1)) == Some(Ordering::Equal) {
                Value::Null
            } else {
                arg(args, 0).clone()
            }
        }
        Func::Coalesce => args
            .iter()
            .find(|v| !v.is_null())
            .cloned()
            .unwrap_or(Value::Null),
        Func::If => {
            if truthy(arg(args, 0)) {
                arg(args, 1).clone()
            } else {
                arg(args, 2).clone()
            }
        }
        Func::CurrentDate => Value::String(format_date(now_ms, "YYYY-MM-DD")),
        Func::CurrentTime => Value::String(format_date(now_ms, "HH:mm:ss.SSS")),
        Func::Now => Value::from(now_ms),
        Func::Extract => {
            let Some(t) = date_ms(arg(args, 0)) else {
                return Value::Null;
            };
            let token = match s(1).to_ascii_lowercase().trim_end_matches('s') {
                "year" | "y" => "YYYY",
                "month" | "m" => "MM",
                "day" | "date" | "d" => "DD",
                "hour" | "h" => "HH",
                "minute" => "mm",
                "second" => "ss",
                "millisecond" => "SSS",
                _ => return Value::Null,
            };
            Value::String(format_date(t, token))
        }
        Func::DateAdd | Func::DateSub => {
            let (Some(t), Some(k)) = (date_ms(arg(args, 0)), n(1)) else {
                return Value::Null;
            };
            let k = if f == Func::DateSub { -k } else { k };
            match add_interval(t, k, &s(2)) {
                Some(ms) => Value::from(ms),
                None => Value::Null,
            }
        }
        Func::DateDiff => {
            let (Some(a), Some(b)) = (date_ms(arg(args, 0)), date_ms(arg(args, 1))) else {
                return Value::Null;
            };
            let unit = if args.len() > 2 { s(2) } else { String::new() };
            diff(a, b, &unit).map(num).unwrap_or(Value::Null)
        }
        Func::DateFormat => match date_ms(arg(args, 0)) {
            Some(t) => Value::String(format_date(t, &s(1))),
            None => Value::Null,
        },
        Func::Date => match if args.is_empty() {
            Some(now_ms)
        } else {
            date_ms(arg(args, 0))
        } {
            Some(t) => Value::String(format_date(t, "YYYY-MM-DDTHH:mm:ss.SSSZZ")),
            None => Value::Null,
        },
        Func::Year
        | Func::Month
        | Func::Day
        | Func::DayOfWeek
        | Func::Hour
        | Func::Minute
        | Func::Second => {
            // AlaSQL's `new Date(d).getFullYear()` and siblings: numbers, in UTC (Harper's
            // clock); an unreadable date is NaN there, null here (JSON has no NaN).
            let Some(t) = date_ms(arg(args, 0)) else {
                return Value::Null;
            };
            let (y, mo, d, h, mi, sec, _, wd) = parts(t);
            Value::from(match f {
                Func::Year => y,
                Func::Month => mo,
                Func::Day => d,
                Func::DayOfWeek => wd, // 0 = Sunday, as Harper's guide says
                Func::Hour => h,
                Func::Minute => mi,
                _ => sec,
            })
        }
        Func::OffsetUtc => {
            let Some(t) = date_ms(arg(args, 0)) else {
                return Value::Null;
            };
            let off = offset_minutes(arg(args, 1));
            Value::String(format_date_at(t, off, "YYYY-MM-DDTHH:mm:ss.SSSZZ"))
        }
    }
}

/// OFFSET_UTC's offset in minutes, as moment's `utcOffset(x)` reads it (Harper's guide): a
/// number is minutes unless it lies strictly between -16 and 16, then hours; a string is
/// `+HH:mm` / `-HHmm`; anything else leaves the time in UTC.
fn offset_minutes(v: &Value) -> i64 {
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let m = if x.abs() < 16.0 { x * 60.0 } else { x };
            if m.is_finite() && m.abs() < 1e9 {
                m.round() as i64
            } else {
                0
            }
        }
        Value::String(s) => {
            let s = s.trim();
            let sign = match s.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return 0,
            };
            let z: String = s[1..].chars().filter(|c| *c != ':').collect();
            if z.len() != 4 || !z.bytes().all(|c| c.is_ascii_digit()) {
                return 0;
            }
            let (h, m) = (z[..2].parse::<i64>(), z[2..].parse::<i64>());
            match (h, m) {
                (Ok(h), Ok(m)) => sign * (h * 60 + m),
                _ => 0,
            }
        }
        _ => 0,
    }
}

fn string_map(v: &Value, f: impl Fn(&str) -> String) -> Value {
    match v {
        Value::Null => Value::Null,
        other => Value::String(f(&text(other))),
    }
}

fn math1(x: Option<f64>, f: impl Fn(f64) -> f64) -> Value {
    x.map(|x| num(f(x))).unwrap_or(Value::Null)
}

/// A uniform number in [0, 1) from the OS's randomness (ring is already a dependency).
fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.0;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

// ---- dates (UTC, as Harper's SQL date functions) ----

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let next = if m == 12 {
        days_from_civil(y + 1, 1, 1)
    } else {
        days_from_civil(y, m + 1, 1)
    };
    next - days_from_civil(y, m, 1)
}

const DAY_MS: i64 = 86_400_000;

/// Parts of an epoch-millisecond time: (year, month, day, hour, minute, second, ms, weekday).
fn parts(t: i64) -> (i64, i64, i64, i64, i64, i64, i64, i64) {
    let days = t.div_euclid(DAY_MS);
    let rem = t.rem_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let weekday = (days + 4).rem_euclid(7); // 1970-01-01 was a Thursday
    (
        y,
        m,
        d,
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
        weekday,
    )
}

/// A date value as epoch milliseconds: a number is taken as milliseconds, a string as ISO 8601
/// (date, optional time, optional zone; UTC when it has none).
pub fn date_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_f64().map(|x| x as i64),
        Value::String(s) => parse_iso(s.trim()),
        _ => None,
    }
}

fn parse_iso(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |from: usize, n: usize| -> Option<i64> {
        let part = s.get(from..from + n)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let y = digits(0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let (mo, d) = (digits(5, 2)?, digits(8, 2)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    let mut t = days_from_civil(y, mo, d) * DAY_MS;
    let mut i = 10;
    if matches!(b.get(10), Some(b'T' | b' ')) {
        let (h, mi) = (digits(11, 2)?, digits(14, 2)?);
        if b.get(13) != Some(&b':') || h > 23 || mi > 59 {
            return None;
        }
        t += h * 3_600_000 + mi * 60_000;
        i = 16;
        if b.get(16) == Some(&b':') {
            let sec = digits(17, 2)?;
            if sec > 59 {
                return None;
            }
            t += sec * 1000;
            i = 19;
            if b.get(19) == Some(&b'.') {
                let mut j = 20;
                let mut frac = String::new();
                while let Some(c) = b.get(j).filter(|c| c.is_ascii_digit()) {
                    frac.push(*c as char);
                    j += 1;
                }
                if frac.is_empty() {
                    return None;
                }
                frac.truncate(3);
                while frac.len() < 3 {
                    frac.push('0');
                }
                t += frac.parse::<i64>().ok()?;
                i = j;
            }
        }
    }
    match &s[i..] {
        "" | "Z" | "z" => Some(t),
        zone => {
            let sign = match zone.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let z: String = zone[1..].chars().filter(|c| *c != ':').collect();
            if z.len() != 4 || !z.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let off = z[..2].parse::<i64>().ok()? * 60 + z[2..].parse::<i64>().ok()?;
            Some(t - sign * off * 60_000)
        }
    }
}

fn unit_ms(unit: &str) -> Option<f64> {
    Some(match unit {
        "ms" | "millisecond" | "milliseconds" => 1.0,
        "s" | "second" | "seconds" => 1000.0,
        "m" | "minute" | "minutes" => 60_000.0,
        "h" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => DAY_MS as f64,
        "w" | "week" | "weeks" => 7.0 * DAY_MS as f64,
        _ => return None,
    })
}

fn months_of(unit: &str) -> Option<i64> {
    Some(match unit {
        "M" | "month" | "months" => 1,
        "Q" | "quarter" | "quarters" => 3,
        "y" | "year" | "years" => 12,
        _ => return None,
    })
}

fn add_months(t: i64, k: i64) -> i64 {
    let (y, m, d, ..) = parts(t);
    let total = y * 12 + (m - 1) + k;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * DAY_MS + t.rem_euclid(DAY_MS)
}

fn add_interval(t: i64, k: f64, unit: &str) -> Option<i64> {
    let unit = unit.trim();
    if let Some(mult) = months_of(unit) {
        return Some(add_months(t, k.trunc() as i64 * mult));
    }
    let u = unit_ms(&unit.to_ascii_lowercase()).or_else(|| unit_ms(unit))?;
    Some(t + (k * u).round() as i64)
}

/// Months between two times as moment.js counts them (whole months plus the fraction of the
/// month the remainder spans).
fn month_diff(a: i64, b: i64) -> f64 {
    let (ya, ma, ..) = parts(a);
    let (yb, mb, ..) = parts(b);
    let whole = (yb - ya) * 12 + (mb - ma);
    let anchor = add_months(a, whole);
    let adjust = if b - anchor < 0 {
        let anchor2 = add_months(a, whole - 1);
        (b - anchor) as f64 / (anchor - anchor2) as f64
    } else {
        let anchor2 = add_months(a, whole + 1);
        (b - anchor) as f64 / (anchor2 - anchor) as f64
    };
    -(whole as f64 + adjust)
}

fn diff(a: i64, b: i64, unit: &str) -> Option<f64> {
    let unit = unit.trim();
    if unit.is_empty() {
        return Some((a - b) as f64);
    }
    if let Some(mult) = months_of(unit) {
        return Some(month_diff(a, b) / mult as f64);
    }
    let u = unit_ms(&unit.to_ascii_lowercase()).or_else(|| unit_ms(unit))?;
    Some((a - b) as f64 / u)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// moment.js-style formatting (UTC) of the common tokens; `[text]` is literal.
pub fn format_date(t: i64, fmt: &str) -> String {
    format_date_at(t, 0, fmt)
}

/// [`format_date`] in the zone `off` minutes from UTC (the wall clock there, and `ZZ` / `Z`
/// print the offset).
fn format_date_at(t: i64, off: i64, fmt: &str) -> String {
    let (y, mo, d, h, mi, s, ms, wd) = parts(t + off * 60_000);
    let zone = |colon: bool| {
        let a = off.abs();
        let sign = if off < 0 { '-' } else { '+' };
        if colon {
            format!("{sign}{:02}:{:02}", a / 60, a % 60)
        } else {
            format!("{sign}{:02}{:02}", a / 60, a % 60)
        }
    };
    const TOKENS: [&str; 24] = [
        "YYYY", "YY", "MMMM", "MMM", "MM", "M", "DD", "D", "dddd", "ddd", "HH", "H", "hh", "h",
        "mm", "m", "ss", "s", "SSS", "A", "a", "ZZ", "Z", "x",
    ];
    let mut out = String::new();
    let mut rest = fmt;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            match after.find(']') {
                Some(end) => {
                    out.push_str(&after[..end]);
                    rest = &after[end + 1..];
                }
                None => {
                    out.push_str(after);
                    rest = "";
                }
            }
            continue;
        }
        let Some(tok) = TOKENS.iter().find(|t| rest.starts_with(**t)) else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        };
        let h12 = if h % 12 == 0 { 12 } else { h % 12 };
        let piece = match *tok {
            "YYYY" => format!("{y:04}"),
            "YY" => format!("{:02}", y.rem_euclid(100)),
            "MMMM" => MONTHS[(mo - 1) as usize].to_string(),
            "MMM" => MONTHS[(mo - 1) as usize][..3].to_string(),
            "MM" => format!("{mo:02}"),
            "M" => mo.to_string(),
            "DD" => format!("{d:02}"),
            "D" => d.to_string(),
            "dddd" => DAYS[wd as usize].to_string(),
            "ddd" => DAYS[wd as usize][..3].to_string(),
            "HH" => format!("{h:02}"),
            "H" => h.to_string(),
            "hh" => format!("{h12:02}"),
            "h" => h12.to_string(),
            "mm" => format!("{mi:02}"),
            "m" => mi.to_string(),
            "ss" => format!("{s:02}"),
            "s" => s.to_string(),
            "SSS" => format!("{ms:03}"),
            "A" => (if h < 12 { "AM" } else { "PM" }).to_string(),
            "a" => (if h < 12 { "am" } else { "pm" }).to_string(),
            "ZZ" => zone(false),
            "Z" => zone(true),
            _ => t.to_string(),
        };
        out.push_str(&piece);
        rest = &rest[tok.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn like_is_case_insensitive_with_both_wildcards() {
        assert!(like("Alice", "a%"));
        assert!(like("Alice", "%A%"));
        assert!(like("Bob", "_ob"));
        assert!(!like("Bob", "_b"));
        assert!(like("Eve", "%e"));
        assert!(like("", "%"));
        assert!(!like("abc", "abcd"));
    }

    #[test]
    fn dates_match_harpers_captured_answers() {
        let t = date_ms(&json!("2024-01-05T10:00:00.000Z")).unwrap();
        assert_eq!(t, 1_704_448_800_000);
        assert_eq!(format_date(t, "YYYY-MM-DD HH:mm"), "2024-01-05 10:00");
        assert_eq!(
            format_date(t, "YYYY-MM-DDTHH:mm:ss.SSSZZ"),
            "2024-01-05T10:00:00.000+0000"
        );
        // DATE() and GET_SERVER_TIME() (the same call) are now, in DATE's format.
        assert_eq!(
            call(Func::Date, &[], t),
            json!("2024-01-05T10:00:00.000+0000")
        );
        assert_eq!(add_interval(t, 1.0, "days"), Some(1_704_535_200_000));
        assert_eq!(add_interval(t, -2.0, "hours"), Some(1_704_441_600_000));
        let later = date_ms(&json!("2024-01-10T00:00:00.000Z")).unwrap();
        assert_eq!(diff(later, t, "days"), Some(4.583333333333333));
        assert_eq!(diff(later, t, ""), Some(396_000_000.0));
        assert_eq!(
            add_months(date_ms(&json!("2024-01-31")).unwrap(), 1),
            date_ms(&json!("2024-02-29")).unwrap()
        );
        assert_eq!(date_ms(&json!("2024-01-05T12:00:00+02:00")), Some(t));
        assert_eq!(date_ms(&json!("2024-02-30")), None);
    }

    #[test]
    fn numbers_print_as_harpers() {
        assert_eq!(num(1998.0), json!(1998));
        assert_eq!(num(0.5), json!(0.5));
        assert_eq!(num(f64::NAN), json!(null));
        assert_eq!(call(Func::Round, &[json!(2.345), json!(2)], 0), json!(2.35));
        assert_eq!(call(Func::Round, &[json!(9.99)], 0), json!(10));
        assert_eq!(
            call(Func::Instr, &[json!("Alice"), json!("c")], 0),
            json!(4)
        );
        assert_eq!(
            call(Func::Substring, &[json!("Alice"), json!(1), json!(3)], 0),
            json!("Ali")
        );
    }

    #[test]
    fn date_parts_read_numbers_and_strings_in_utc() {
        let t = json!("2024-01-05T10:20:30.123Z");
        let ms = json!(1_704_450_030_123i64); // the same instant as epoch milliseconds
        let cases: &[(Func, Value, Value)] = &[
            (Func::Year, t.clone(), json!(2024)),
            (Func::Month, t.clone(), json!(1)),
            (Func::Day, t.clone(), json!(5)),
            (Func::DayOfWeek, t.clone(), json!(5)), // a Friday; 0 is Sunday
            (Func::Hour, t.clone(), json!(10)),
            (Func::Minute, t.clone(), json!(20)),
            (Func::Second, t.clone(), json!(30)),
            (Func::Year, ms.clone(), json!(2024)),
            (Func::Day, ms.clone(), json!(5)),
            (Func::Hour, ms.clone(), json!(10)),
            (Func::Second, ms, json!(30)),
            (Func::DayOfWeek, json!(0), json!(4)), // 1970-01-01, a Thursday
            (Func::DayOfWeek, json!("2024-03-03"), json!(0)),
            (Func::Month, json!("2024-12-31T23:59:59+00:00"), json!(12)),
            // A zone moves the instant: 01:30 at +02:00 is the previous day in UTC.
            (Func::Day, json!("2024-03-02T01:30:00+02:00"), json!(1)),
            (Func::Hour, json!("2024-03-02T01:30:00+02:00"), json!(23)),
            (Func::Year, json!(-86_400_000), json!(1969)),
            (Func::Year, json!("not a date"), json!(null)),
            (Func::Month, json!(null), json!(null)),
            (Func::Day, json!(true), json!(null)),
        ];
        for (f, input, want) in cases {
            assert_eq!(
                &call(*f, std::slice::from_ref(input), 0),
                want,
                "{f:?}({input})"
            );
        }
    }

    #[test]
    fn offset_utc_formats_the_wall_clock_at_the_offset() {
        let t = json!("2024-01-05T10:00:00.000Z");
        let cases: &[(Value, Value, &str)] = &[
            // Between -16 and 16 the offset is hours, otherwise minutes (moment's utcOffset).
            (t.clone(), json!(2), "2024-01-05T12:00:00.000+0200"),
            (t.clone(), json!(-5), "2024-01-05T05:00:00.000-0500"),
            (t.clone(), json!(90), "2024-01-05T11:30:00.000+0130"),
            (t.clone(), json!(-600), "2024-01-05T00:00:00.000-1000"),
            (t.clone(), json!(5.5), "2024-01-05T15:30:00.000+0530"),
            (t.clone(), json!(0), "2024-01-05T10:00:00.000+0000"),
            (t.clone(), json!("+08:00"), "2024-01-05T18:00:00.000+0800"),
            (t.clone(), json!("-0330"), "2024-01-05T06:30:00.000-0330"),
            (t.clone(), json!("junk"), "2024-01-05T10:00:00.000+0000"),
            (
                json!(1_704_448_800_000i64),
                json!(14),
                "2024-01-06T00:00:00.000+1400",
            ),
        ];
        for (date, off, want) in cases {
            assert_eq!(
                call(Func::OffsetUtc, &[date.clone(), off.clone()], 0),
                json!(want),
                "OFFSET_UTC({date}, {off})"
            );
        }
        assert_eq!(
            call(Func::OffsetUtc, &[json!("nope"), json!(1)], 0),
            json!(null)
        );
    }

    #[test]
    fn regexp_flags_map_to_javascripts_and_hostile_patterns_end_promptly() {
        let m = |p: &str, f: &str, t: &str| Rx::compile(p, f).unwrap().is_match(t).unwrap();
        assert!(!m("a", "", "Alice"));
        assert!(m("a", "i", "Alice"));
        assert!(m("^(?=A)", "", "Alice"));
        assert!(m("(.)\\1", "", "Bobby"));
        assert!(!m("^b$", "", "a\nb"));
        assert!(m("^b$", "m", "a\nb"));
        assert!(!m("a.b", "", "a\nb"));
        assert!(m("a.b", "s", "a\nb"));
        assert!(m("A", "giuyd", "xA"));
        for bad in ["x", "I", "ix"] {
            let e = Rx::compile("a", bad).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message().contains("flag"), "{}", e.message());
        }
        // Catastrophic backtracking on a long value: the plain form runs on the regex crate's
        // linear engine (an answer), the lookbehind form on fancy-regex's backtracker, which
        // stops at its limit (an error naming the pattern, not a hung thread).
        let long = format!("{}!", "a".repeat(5000));
        let start = std::time::Instant::now();
        assert!(!m("(a+)+$", "", &long));
        let rx = Rx::compile("(a+)+(?<=b)", "").unwrap();
        let e = rx.is_match(&long).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message().contains("'(a+)+(?<=b)'"), "{}", e.message());
        assert!(e.message().contains("backtracking"), "{}", e.message());
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn convert_follows_alasql() {
        let c = |v: Value, to: ConvertTo, style: Option<u16>| convert(v, &to, style).unwrap();
        // INT is `x | 0`: ToNumber, truncation, 32 bits.
        for (v, want) in [
            (json!(9.99), 9),
            (json!(-9.99), -9),
            (json!("42abc"), 0),
            (json!(" 42 "), 42),
            (json!("0x1A"), 26),
            (json!(""), 0),
            (json!(null), 0),
            (json!(true), 1),
            (json!("inf"), 0),
            (json!(2_147_483_648i64), -2_147_483_648),
            (json!(4_294_967_297i64), 1),
            (json!([7]), 7),
        ] {
            assert_eq!(c(v.clone(), ConvertTo::Int, None), json!(want), "{v}");
        }
        // MONEY's (m|0) + ((m*100) % 100) / 100, in the same doubles as JavaScript.
        for (v, want) in [
            (9.99, json!(9.99)),
            (24.5, json!(24.5)),
            (999.0, json!(999)),
        ] {
            assert_eq!(c(json!(v), ConvertTo::Money, None), want, "{v}");
        }
        assert_eq!(c(json!(9.99), ConvertTo::Text(None), None), json!("9.99"));
        assert_eq!(c(json!(1.0), ConvertTo::Text(None), None), json!("1"));
        assert_eq!(
            c(json!("Widget"), ConvertTo::Text(Some(3)), None),
            json!("Wid")
        );
        assert_eq!(
            c(json!("ab"), ConvertTo::Char(Some(4)), None),
            json!("ab  ")
        );
        assert_eq!(c(json!(null), ConvertTo::Text(None), None), json!(null));
        assert_eq!(
            c(json!("12.5"), ConvertTo::Number(None, None), None),
            json!(12.5)
        );
        assert_eq!(
            c(json!(12.34567), ConvertTo::Number(Some(10), Some(2)), None),
            json!(12.35)
        );
        assert_eq!(c(json!(0), ConvertTo::Boolean, None), json!(false));
        assert_eq!(c(json!("0"), ConvertTo::Boolean, None), json!(true));
        assert_eq!(c(json!(null), ConvertTo::Boolean, None), json!(false));
        let d = json!("2023-01-15");
        assert_eq!(c(d.clone(), ConvertTo::Date, None), json!("23.01.15"));
        assert_eq!(
            c(d.clone(), ConvertTo::DateTime, None),
            json!("2023.01.15 00:00:00.000")
        );
        assert_eq!(
            c(json!("20230115"), ConvertTo::Date, None),
            json!("23.01.15")
        );
        assert_eq!(
            c(json!("2023.01.15 10:20:30"), ConvertTo::DateTime, None),
            json!("2023.01.15 10:20:30.000")
        );
        assert_eq!(c(json!("no date"), ConvertTo::Date, None), json!(null));
        // Every style of the table, on one instant.
        let t = json!("2024-03-05T14:07:09.000Z");
        let want = [
            (1, "03/05/24"),
            (2, "24.03.05"),
            (3, "05/03/24"),
            (4, "05.03.24"),
            (5, "05-03-24"),
            (6, "05 mar 24"),
            (7, "Mar 05,24"),
            (8, "14:07:09"),
            (10, "03-05-24"),
            (11, "24/03/05"),
            (12, "240305"),
            (101, "03/05/2024"),
            (102, "2024.03.05"),
            (103, "05/03/2024"),
            (104, "05.03.2024"),
            (105, "05-03-2024"),
            (106, "05 mar 2024"),
            (107, "Mar 05,2024"),
            (108, "14:07:09"),
            (110, "03-05-2024"),
            (111, "2024/03/05"),
            (112, "20240305"),
        ];
        assert_eq!(want.len(), CONVERT_STYLES.len());
        for (style, text) in want {
            assert_eq!(
                c(t.clone(), ConvertTo::Text(None), Some(style)),
                json!(text),
                "style {style}"
            );
        }
        // A style formats first, the type converts what it printed (AlaSQL's order).
        assert_eq!(c(t.clone(), ConvertTo::Int, Some(112)), json!(20240305));
        let e = convert(json!(1), &ConvertTo::Unknown("JSONB".into()), None).unwrap_err();
        assert!(e.message().starts_with("CONVERT to JSONB is not supported"));
    }

    #[test]
    fn regexp_matches_a_values_javascript_text_and_null_never() {
        let row = |v: Value| {
            let mut m = Map::new();
            m.insert("x".into(), v);
            vec![Some(m)]
        };
        let Ok(super::super::parse::Plan::Select(s)) =
            super::super::parse::parse("SELECT x REGEXP '^2$' AS m FROM a.b")
        else {
            panic!()
        };
        let super::super::parse::SelectItem::Expr { expr, .. } = &s.items[0] else {
            panic!()
        };
        for (v, want) in [
            (json!(2.0), true),
            (json!(2), true),
            (json!("2"), true),
            (json!(2.5), false),
            (json!(null), false),
        ] {
            let r = row(v.clone());
            let cx = Ctx {
                row: &r,
                aggs: &[],
                now_ms: 0,
            };
            assert_eq!(eval(expr, &cx).unwrap(), json!(want), "{v}");
        }
    }
}
