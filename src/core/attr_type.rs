//! Attribute types: what a local write may put in an attribute declared with a `type` in
//! `create_table`, and the form it is stored in.
//!
//! The rules and error texts are Harper 4.7.29's, captured in
//! `tests/fixtures/harper/create_table_options` (replayed by `tests/attr_types.rs`): `String`,
//! `Int`, `Long`, `Float`, `Boolean` and `Bytes` are checked, `Date` and `BigInt` are converted,
//! `Any` and names Harper does not know take anything, and `null` is always allowed. Two
//! deliberate differences (README, Differences from Harper): a value `Date` cannot read and a
//! `BigInt` that is not a whole number are refused with a 400, where Harper stores `null` for
//! the first (losing the value without a word) and answers 500 for the second.
//!
//! Checked once, at the origin, before anything is written: replicated and copied records
//! arrive already in their stored form and are never checked again (a peer's schema may be
//! ahead of or behind this node's). Must never: allocate for a value it leaves alone.

use serde_json::{Map, Number, Value};

/// A declared attribute type (Harper's names, case-sensitive as in Harper: `string` is a name
/// Harper does not know, so it takes anything there too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttrType {
    String,
    Int,
    Long,
    Float,
    Boolean,
    Date,
    BigInt,
    Bytes,
    /// `Any`, and every name Harper accepts without checking.
    Any,
}

/// JavaScript's largest exact integer (the bounds Harper names for `Long`).
const JS_SAFE: f64 = 9_007_199_254_740_992.0;
/// JavaScript's Date range (ms either side of 1970).
const JS_DATE_MAX_MS: i64 = 8_640_000_000_000_000;

impl AttrType {
    pub(crate) fn from_name(name: &str) -> AttrType {
        match name {
            "String" => AttrType::String,
            "Int" => AttrType::Int,
            "Long" => AttrType::Long,
            "Float" => AttrType::Float,
            "Boolean" => AttrType::Boolean,
            "Date" => AttrType::Date,
            "BigInt" => AttrType::BigInt,
            "Bytes" => AttrType::Bytes,
            _ => AttrType::Any,
        }
    }

    /// Checks `v` for attribute `attr`: `Ok(None)` keeps it as it is, `Ok(Some(x))` stores `x`
    /// instead (a converted `Date`, `BigInt` or `Bytes`, an integral float for `Int`/`Long`),
    /// `Err` is Harper's message.
    pub(crate) fn check(self, attr: &str, v: &Value) -> Result<Option<Value>, String> {
        if v.is_null() {
            return Ok(None);
        }
        let refuse = |what: &str| Err(format!("Value {} in property {attr} {what}", shown(v)));
        match self {
            AttrType::Any => Ok(None),
            AttrType::String => match v {
                Value::String(_) => Ok(None),
                _ => refuse("must be a string"),
            },
            AttrType::Float => match v {
                Value::Number(_) => Ok(None),
                _ => refuse("must be a number"),
            },
            AttrType::Boolean => match v {
                Value::Bool(_) => Ok(None),
                _ => refuse("must be a boolean"),
            },
            AttrType::Int => match whole(v, 2_147_483_648.0, 2_147_483_647.0) {
                Some(x) => Ok(x),
                None => refuse("must be an integer (from -2147483648 to 2147483647)"),
            },
            AttrType::Long => match whole(v, JS_SAFE, JS_SAFE) {
                Some(x) => Ok(x),
                None => refuse("must be an integer (from -9007199254740992 to 9007199254740992)"),
            },
            AttrType::BigInt => match v {
                Value::Number(n) if n.is_i64() || n.is_u64() => Ok(None),
                Value::Number(n) => match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => {
                        Ok(Some(Value::Number((f as i64).into())))
                    }
                    _ => Err(format!(
                        "The number {} cannot be converted to a BigInt because it is not an integer",
                        shown(v)
                    )),
                },
                Value::String(s) => match s.trim().parse::<i64>() {
                    Ok(i) => Ok(Some(Value::Number(i.into()))),
                    Err(_) => refuse("must be an integer"),
                },
                _ => refuse("must be an integer"),
            },
            AttrType::Date => match crate::sql::eval::date_ms(v)
                .filter(|ms| (-JS_DATE_MAX_MS..=JS_DATE_MAX_MS).contains(ms))
            {
                Some(ms) => Ok(Some(Value::String(iso(ms)))),
                None => refuse("must be a date"),
            },
            AttrType::Bytes => match v {
                // Harper keeps text as its UTF-8 bytes and answers them as Node's Buffer JSON.
                Value::String(s) => Ok(Some(buffer_json(s.as_bytes()))),
                Value::Object(o) if is_buffer_json(o) => Ok(None),
                _ => refuse("must be a Buffer or Uint8Array"),
            },
        }
    }
}

/// The checked attributes of a table (empty for an untyped one: nothing allocated).
pub(crate) fn table_types(def: &crate::core::catalog::TableDef) -> Vec<(String, AttrType)> {
    // Types come only from `create_table`'s `attributes`, which makes a table schema-defined:
    // a dynamic table (which may grow thousands of attributes) is never scanned per write.
    if !def.schema_defined {
        return Vec::new();
    }
    def.attributes
        .iter()
        .filter_map(|a| {
            let ty = AttrType::from_name(a.r#type.as_deref()?);
            (ty != AttrType::Any).then(|| (a.name.clone(), ty))
        })
        .collect()
}

/// Checks (and converts in place) every typed attribute of one record.
pub(crate) fn check_record(
    types: &[(String, AttrType)],
    rec: &mut Map<String, Value>,
) -> Result<(), String> {
    for (name, ty) in types {
        if let Some(v) = rec.get_mut(name.as_str()) {
            if let Some(x) = ty.check(name, v)? {
                *v = x;
            }
        }
    }
    Ok(())
}

/// A whole number within `-neg..=pos`; integral floats become integers (JavaScript does not
/// tell 1 from 1.0).
fn whole(v: &Value, neg: f64, pos: f64) -> Option<Option<Value>> {
    let Value::Number(n) = v else { return None };
    if let Some(i) = n.as_i64() {
        return (i as f64 >= -neg && i as f64 <= pos).then_some(None);
    }
    if let Some(u) = n.as_u64() {
        return (u as f64 <= pos).then_some(None);
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f >= -neg && f <= pos).then(|| Some(Value::Number(Number::from(f as i64))))
}

/// The value as Harper's message shows it (JSON, numbers as JavaScript prints them).
fn shown(v: &Value) -> String {
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => crate::sql::eval::js_string(v),
        _ => v.to_string(),
    }
}

fn iso(ms: i64) -> String {
    crate::sql::eval::format_date(ms, "YYYY-MM-DD[T]HH:mm:ss.SSS[Z]")
}

fn buffer_json(bytes: &[u8]) -> Value {
    let mut o = Map::new();
    o.insert("type".into(), Value::String("Buffer".into()));
    o.insert(
        "data".into(),
        Value::Array(bytes.iter().map(|b| Value::Number((*b).into())).collect()),
    );
    Value::Object(o)
}

/// What Harper answers a `Bytes` value as (so a record read back can be written again).
fn is_buffer_json(o: &Map<String, Value>) -> bool {
    o.len() == 2
        && o.get("type").and_then(Value::as_str) == Some("Buffer")
        && o.get("data").and_then(Value::as_array).is_some_and(|d| {
            d.iter()
                .all(|b| b.as_u64().is_some_and(|b| b <= u64::from(u8::MAX)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// (type, value, Ok(stored value, `None` = unchanged) or Err(message)), from Harper's
    /// captured answers where Harper has one.
    #[test]
    fn typed_values_are_checked_and_converted_as_harper_does() {
        type Case = (&'static str, Value, Result<Option<Value>, &'static str>);
        let cases: Vec<Case> = vec![
            ("String", json!("ok"), Ok(None)),
            ("String", json!(5), Err("Value 5 in property p must be a string")),
            ("String", json!(true), Err("Value true in property p must be a string")),
            ("String", json!({"a": 1}), Err("Value {\"a\":1} in property p must be a string")),
            ("String", json!([1]), Err("Value [1] in property p must be a string")),
            ("String", json!(null), Ok(None)),
            ("Int", json!(7), Ok(None)),
            ("Int", json!(2.0), Ok(Some(json!(2)))),
            ("Int", json!(1.5), Err("Value 1.5 in property p must be an integer (from -2147483648 to 2147483647)")),
            ("Int", json!("1"), Err("Value \"1\" in property p must be an integer (from -2147483648 to 2147483647)")),
            ("Int", json!(2147483648_u64), Err("Value 2147483648 in property p must be an integer (from -2147483648 to 2147483647)")),
            ("Int", json!(-2147483649_i64), Err("Value -2147483649 in property p must be an integer (from -2147483648 to 2147483647)")),
            ("Int", json!(-2147483648_i64), Ok(None)),
            ("Int", json!(true), Err("Value true in property p must be an integer (from -2147483648 to 2147483647)")),
            ("Long", json!(12345678901_u64), Ok(None)),
            ("Long", json!(9007199254740992_u64), Ok(None)),
            ("Long", json!(1.5), Err("Value 1.5 in property p must be an integer (from -9007199254740992 to 9007199254740992)")),
            ("Long", json!("1"), Err("Value \"1\" in property p must be an integer (from -9007199254740992 to 9007199254740992)")),
            ("Float", json!(1), Ok(None)),
            ("Float", json!(2.5), Ok(None)),
            ("Float", json!("x"), Err("Value \"x\" in property p must be a number")),
            ("Float", json!(true), Err("Value true in property p must be a number")),
            ("Boolean", json!(false), Ok(None)),
            ("Boolean", json!(1), Err("Value 1 in property p must be a boolean")),
            ("Boolean", json!("true"), Err("Value \"true\" in property p must be a boolean")),
            ("Date", json!("2024-01-01"), Ok(Some(json!("2024-01-01T00:00:00.000Z")))),
            ("Date", json!(1700000000000_u64), Ok(Some(json!("2023-11-14T22:13:20.000Z")))),
            ("Date", json!(1.5), Ok(Some(json!("1970-01-01T00:00:00.001Z")))),
            ("Date", json!(-86400000), Ok(Some(json!("1969-12-31T00:00:00.000Z")))),
            ("Date", json!("not a date"), Err("Value \"not a date\" in property p must be a date")),
            ("BigInt", json!(1), Ok(None)),
            ("BigInt", json!("12"), Ok(Some(json!(12)))),
            ("BigInt", json!(1.5), Err("The number 1.5 cannot be converted to a BigInt because it is not an integer")),
            ("BigInt", json!("abc"), Err("Value \"abc\" in property p must be an integer")),
            ("Bytes", json!("abc"), Ok(Some(json!({"type": "Buffer", "data": [97, 98, 99]})))),
            ("Bytes", json!({"type": "Buffer", "data": [1, 255]}), Ok(None)),
            ("Bytes", json!(1), Err("Value 1 in property p must be a Buffer or Uint8Array")),
            ("Any", json!({"k": 1}), Ok(None)),
            ("Weird", json!(1), Ok(None)),
            ("string", json!(1), Ok(None)),
        ];
        for (ty, v, want) in cases {
            let got = AttrType::from_name(ty).check("p", &v);
            assert_eq!(got, want.map_err(str::to_string), "{ty} {v}");
        }
    }

    #[test]
    fn a_record_is_converted_in_place_and_untyped_attributes_are_left_alone() {
        let mut rec = json!({"id": 1, "d": "2024-01-01", "x": "anything"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let types = [
            ("d".to_string(), AttrType::Date),
            ("i".to_string(), AttrType::Int),
        ];
        assert_eq!(check_record(&types, &mut rec), Ok(()));
        assert_eq!(rec["d"], json!("2024-01-01T00:00:00.000Z"));
        assert_eq!(rec["x"], json!("anything"));
    }
}
