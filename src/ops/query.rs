//! Read queries over one table: condition matching, index-driven candidate selection, sorting,
//! paging and attribute projection. Runs on HTTP worker threads against the store directly.
//!
//! A condition that an index can answer (equals, ranges, starts_with on a non-key attribute)
//! narrows the candidates to the index range; every candidate is then re-checked against the
//! whole condition tree on the record itself, so index approximations (truncated strings, type
//! ranges) never change results. Anything else falls back to a scan.

use super::parse::{Comparator, Condition, Logic, Sort};
use crate::core::catalog::TableDef;
use crate::core::error::OpError;
use crate::store::keys;
use crate::store::record::StoredRecord;
use crate::store::Store;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::HashSet;
use std::ops::Bound;

fn storage_error(e: impl std::fmt::Display) -> OpError {
    log::error!("read failed: {e}");
    OpError::internal(format!("storage error: {e}"))
}

/// Total order used for sorting: null < bool < number < string < array < object.
pub fn sort_cmp(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    compare(a, b).unwrap_or_else(|| rank(a).cmp(&rank(b)))
}

/// Comparison within a type (None across types: a number is not "less than" a string).
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    }
}

fn equals(a: &Value, b: &Value) -> bool {
    match compare(a, b) {
        Some(o) => o == Ordering::Equal,
        None => a == b,
    }
}

/// Whether one attribute value satisfies a comparator (arrays match if any element does).
fn leaf_matches(v: &Value, cmp: Comparator, target: &Value) -> bool {
    if let Value::Array(items) = v {
        return match cmp {
            Comparator::NotEqual => !items.iter().any(|i| equals(i, target)),
            Comparator::Contains if !target.is_string() => items.iter().any(|i| equals(i, target)),
            _ => items.iter().any(|i| leaf_matches(i, cmp, target)),
        };
    }
    let ord = || compare(v, target);
    match cmp {
        Comparator::Equals => equals(v, target),
        Comparator::NotEqual => !equals(v, target),
        Comparator::Contains => match (v, target) {
            (Value::String(s), Value::String(t)) => s.contains(t.as_str()),
            _ => false,
        },
        Comparator::StartsWith => match (v, target) {
            (Value::String(s), Value::String(t)) => s.starts_with(t.as_str()),
            _ => false,
        },
        Comparator::EndsWith => match (v, target) {
            (Value::String(s), Value::String(t)) => s.ends_with(t.as_str()),
            _ => false,
        },
        Comparator::GreaterThan => ord() == Some(Ordering::Greater),
        Comparator::GreaterThanEqual => matches!(ord(), Some(Ordering::Greater | Ordering::Equal)),
        Comparator::LessThan => ord() == Some(Ordering::Less),
        Comparator::LessThanEqual => matches!(ord(), Some(Ordering::Less | Ordering::Equal)),
        Comparator::Between => match target.as_array().map(Vec::as_slice) {
            Some([lo, hi]) => {
                matches!(compare(v, lo), Some(Ordering::Greater | Ordering::Equal))
                    && matches!(compare(v, hi), Some(Ordering::Less | Ordering::Equal))
            }
            _ => false,
        },
    }
}

pub fn matches(rec: &Map<String, Value>, cond: &Condition) -> bool {
    match cond {
        Condition::Leaf {
            attribute,
            comparator,
            value,
        } => leaf_matches(
            rec.get(attribute).unwrap_or(&Value::Null),
            *comparator,
            value,
        ),
        Condition::Group {
            operator,
            conditions,
        } => matches_all(rec, *operator, conditions),
    }
}

pub fn matches_all(rec: &Map<String, Value>, op: Logic, conds: &[Condition]) -> bool {
    match op {
        Logic::And => conds.iter().all(|c| matches(rec, c)),
        Logic::Or => conds.is_empty() || conds.iter().any(|c| matches(rec, c)),
    }
}

/// The smallest byte string greater than every string with this prefix.
fn prefix_end(p: &[u8]) -> Option<Vec<u8>> {
    let mut v = p.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xFF {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

fn excluded_end(p: Vec<u8>) -> Bound<Vec<u8>> {
    prefix_end(&p).map_or(Bound::Unbounded, Bound::Excluded)
}

/// First byte of each value type in the key encoding, to keep a range within one type.
fn type_range(v: &Value) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut e = Vec::new();
    if !keys::encode_scalar(v, &mut e) {
        return None;
    }
    let tag = e[0];
    Some((vec![tag], vec![tag + 1]))
}

/// The index range that contains every value satisfying a leaf condition, if there is one.
type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

fn index_range(cmp: Comparator, value: &Value) -> Option<KeyRange> {
    let enc = |v: &Value| {
        let mut e = Vec::new();
        keys::encode_index_value(v, &mut e).then_some(e)
    };
    Some(match cmp {
        Comparator::Equals => {
            let e = enc(value)?;
            (Bound::Included(e.clone()), excluded_end(e))
        }
        Comparator::StartsWith => {
            // Index entries keep only the first MAX_INDEXED_STRING bytes of a string, so a
            // longer prefix narrows no further (and would exceed the store's key limit): scan
            // by its indexed part; every candidate is re-checked against the record.
            let s = value.as_str()?;
            let mut end = s.len().min(keys::MAX_INDEXED_STRING);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            let mut p = Vec::new();
            keys::encode_str_prefix(&s[..end], &mut p);
            (Bound::Included(p.clone()), excluded_end(p))
        }
        Comparator::GreaterThan | Comparator::GreaterThanEqual => {
            let (_, type_hi) = type_range(value)?;
            (Bound::Included(enc(value)?), Bound::Excluded(type_hi))
        }
        Comparator::LessThan | Comparator::LessThanEqual => {
            // Inclusive upper end covers equal values (strings may be truncated in the index).
            let (type_lo, _) = type_range(value)?;
            let e = enc(value)?;
            (Bound::Included(type_lo), excluded_end(e))
        }
        Comparator::Between => {
            let [lo, hi] = value.as_array()?.as_slice() else {
                return None;
            };
            (Bound::Included(enc(lo)?), excluded_end(enc(hi)?))
        }
        Comparator::NotEqual | Comparator::Contains | Comparator::EndsWith => return None,
    })
}

/// Most conditions (leaves, across nested groups) one search may have: each indexable branch
/// of an `or` is its own index scan, so an unbounded number would let one request scan the
/// table once per branch.
pub const MAX_CONDITIONS: usize = 256;

/// Records (or record keys) a search reads, lazily, so that paging stops the work early and a
/// large answer is never built whole.
pub type Records = Box<dyn Iterator<Item = Result<Map<String, Value>, OpError>> + Send>;
type Keys = Box<dyn Iterator<Item = Result<Vec<u8>, OpError>> + Send>;

/// The index scan of one leaf condition, as primary keys, or None when no index answers it.
fn leaf_keys(
    store: &Store,
    table: &TableDef,
    attribute: &str,
    cmp: Comparator,
    value: &Value,
    reverse: bool,
) -> Result<Option<Keys>, OpError> {
    if attribute == table.primary_key {
        if cmp == Comparator::Equals {
            let keys: Vec<Result<Vec<u8>, OpError>> =
                keys::encode_pk(value).into_iter().map(Ok).collect();
            return Ok(Some(Box::new(keys.into_iter())));
        }
        return Ok(None);
    }
    let Some(attr) = table.attribute(attribute).filter(|a| a.indexed) else {
        return Ok(None);
    };
    let Some((lo, hi)) = index_range(cmp, value) else {
        return Ok(None);
    };
    let iter = store
        .scan_index(table.id, attr.id, lo, hi, reverse)
        .map_err(storage_error)?;
    Ok(Some(Box::new(iter.filter_map(|item| match item {
        Ok(key) => keys::scalar_len(&key).map(|n| Ok(key[n..].to_vec())),
        Err(e) => Some(Err(storage_error(e))),
    }))))
}

/// Whether an index can answer a condition (without scanning anything).
fn indexable(table: &TableDef, cond: &Condition) -> bool {
    match cond {
        Condition::Leaf {
            attribute,
            comparator,
            value,
        } => {
            if attribute == &table.primary_key {
                return *comparator == Comparator::Equals;
            }
            table.attribute(attribute).is_some_and(|a| a.indexed)
                && index_range(*comparator, value).is_some()
        }
        Condition::Group {
            operator,
            conditions,
        } => match operator {
            Logic::And => conditions.iter().any(|c| indexable(table, c)),
            Logic::Or => !conditions.is_empty() && conditions.iter().all(|c| indexable(table, c)),
        },
    }
}

/// Candidate keys for a condition list, lazily, or None for "scan the table". Duplicates are
/// possible (array values, overlapping `or` branches); the caller skips keys it has seen.
/// `reverse` walks each index backwards (only `search_by_value` asks, with one condition).
fn candidate_keys(
    store: &Store,
    table: &TableDef,
    op: Logic,
    conds: &[Condition],
    reverse: bool,
) -> Result<Option<Keys>, OpError> {
    match op {
        Logic::And => {
            // Prefer an equality, else the first condition an index can answer.
            let mut order: Vec<&Condition> = conds.iter().collect();
            order.sort_by_key(|c| {
                !matches!(
                    c,
                    Condition::Leaf {
                        comparator: Comparator::Equals,
                        ..
                    }
                )
            });
            match order.into_iter().find(|c| indexable(table, c)) {
                Some(c) => condition_keys(store, table, c, reverse),
                None => Ok(None),
            }
        }
        Logic::Or => {
            if conds.is_empty() || !conds.iter().all(|c| indexable(table, c)) {
                return Ok(None);
            }
            // Each branch's scan starts only when the previous one is exhausted: a search
            // that stops at `limit` never opens the later branches.
            let store = store.clone();
            let table = table.clone();
            let branches = conds.to_vec();
            let iter = branches.into_iter().flat_map(move |c| {
                match condition_keys(&store, &table, &c, reverse) {
                    Ok(Some(keys)) => keys,
                    Ok(None) => Box::new(std::iter::empty()) as Keys,
                    Err(e) => Box::new(std::iter::once(Err(e))) as Keys,
                }
            });
            Ok(Some(Box::new(iter)))
        }
    }
}

fn condition_keys(
    store: &Store,
    table: &TableDef,
    cond: &Condition,
    reverse: bool,
) -> Result<Option<Keys>, OpError> {
    match cond {
        Condition::Leaf {
            attribute,
            comparator,
            value,
        } => leaf_keys(store, table, attribute, *comparator, value, reverse),
        Condition::Group {
            operator,
            conditions,
        } => candidate_keys(store, table, *operator, conditions, reverse),
    }
}

fn parse_record(json: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(json) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// Paging and ordering of a search.
pub struct Page<'a> {
    pub limit: Option<u64>,
    pub offset: u64,
    pub sort: Option<&'a Sort>,
    /// Read the index or table backwards (before `offset` and `limit` apply).
    pub reverse: bool,
}

fn sort_cmp_by(a: &Map<String, Value>, b: &Map<String, Value>, sort: &Sort) -> Ordering {
    let mut s = Some(sort);
    while let Some(cur) = s {
        let null = Value::Null;
        let o = sort_cmp(
            a.get(&cur.attribute).unwrap_or(&null),
            b.get(&cur.attribute).unwrap_or(&null),
        );
        let o = if cur.descending { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
        s = cur.next.as_deref();
    }
    Ordering::Equal
}

fn sort_records(records: &mut [Map<String, Value>], sort: &Sort) {
    records.sort_by(|a, b| sort_cmp_by(a, b, sort));
}

/// Every record of `table` matching `conds` (combined with `op`), in index or key order
/// (backwards with `reverse`), read lazily from an index when one can narrow the candidates,
/// else from a scan of the table.
fn matching(
    store: &Store,
    table: &TableDef,
    op: Logic,
    conds: &[Condition],
    reverse: bool,
) -> Result<Records, OpError> {
    let conds_owned = conds.to_vec();
    // An expired record is never returned, swept yet or not.
    let now_ms = crate::util::time::now_ms();
    let def = table.clone();
    let live = move |rec: &Map<String, Value>| !def.expired(rec, now_ms);
    match candidate_keys(store, table, op, conds, reverse)? {
        Some(keys) => {
            let store = store.clone();
            let table_id = table.id;
            let mut seen: HashSet<Vec<u8>> = HashSet::new();
            Ok(Box::new(keys.filter_map(move |k| {
                let pk = match k {
                    Ok(pk) => pk,
                    Err(e) => return Some(Err(e)),
                };
                if !seen.insert(pk.clone()) {
                    return None;
                }
                let raw = match store.get_raw(table_id, &pk) {
                    Ok(Some(raw)) => raw,
                    Ok(None) => return None,
                    Err(e) => return Some(Err(storage_error(e))),
                };
                let rec = StoredRecord::json_slice(&raw).and_then(parse_record)?;
                (live(&rec) && matches_all(&rec, op, &conds_owned)).then_some(Ok(rec))
            })))
        }
        None => {
            let scan: Box<dyn Iterator<Item = _> + Send> = if reverse {
                Box::new(store.scan_table_desc(table.id).map_err(storage_error)?)
            } else {
                Box::new(store.scan_table(table.id, None).map_err(storage_error)?)
            };
            Ok(Box::new(scan.filter_map(move |item| {
                let (_, raw) = match item {
                    Ok(kv) => kv,
                    Err(e) => return Some(Err(storage_error(e))),
                };
                let rec = StoredRecord::json_slice(&raw).and_then(parse_record)?;
                (live(&rec) && matches_all(&rec, op, &conds_owned)).then_some(Ok(rec))
            })))
        }
    }
}

/// Records of `table` matching `conds` (combined with `op`), ordered and paged, as a lazy
/// stream. Without a sort, matching stops after `offset + limit` records. With a sort and a
/// limit only the best `offset + limit` are kept while reading; with a sort and no limit every
/// match must be held (that is what sorting needs).
pub fn search(
    store: &Store,
    table: &TableDef,
    op: Logic,
    conds: &[Condition],
    page: &Page,
) -> Result<Records, OpError> {
    let all = matching(store, table, op, conds, page.reverse)?;
    let offset = usize::try_from(page.offset).unwrap_or(usize::MAX);
    let limit = page.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let Some(sort) = page.sort else {
        let paged = all.skip(offset);
        return Ok(match limit {
            Some(l) => Box::new(paged.take(l)),
            None => Box::new(paged),
        });
    };
    let keep = limit.map(|l| offset.saturating_add(l));
    let mut best: Vec<Map<String, Value>> = Vec::new();
    for rec in all {
        best.push(rec?);
        // Bounded: sort and cut whenever twice the needed records are held.
        if let Some(k) = keep {
            if best.len() >= k.saturating_mul(2).max(64) {
                sort_records(&mut best, sort);
                best.truncate(k);
            }
        }
    }
    sort_records(&mut best, sort);
    let paged = best.into_iter().skip(offset).map(Ok);
    Ok(match limit {
        Some(l) => Box::new(paged.take(l)),
        None => Box::new(paged),
    })
}

/// Harper's `get_attributes`: `None` returns the record as stored; `["*"]` every attribute of
/// a dynamic table in catalog order (null where a record lacks one), and the record as stored
/// on a schema-defined one (Harper's captured answers, `create_table_options/read_all`); a
/// list those attributes.
pub fn project(rec: Map<String, Value>, get: Option<&[String]>, table: &TableDef) -> Value {
    let Some(attrs) = get else {
        return Value::Object(rec);
    };
    if table.schema_defined && attrs.iter().any(|a| a == "*") {
        return Value::Object(rec);
    }
    let mut out = Map::new();
    if attrs.iter().any(|a| a == "*") {
        for a in &table.attributes {
            out.insert(
                a.name.clone(),
                rec.get(&a.name).cloned().unwrap_or(Value::Null),
            );
        }
        // Properties stored on a schema-defined table without being declared still come back.
        for (k, v) in rec {
            if !out.contains_key(&k) {
                out.insert(k, v);
            }
        }
    } else {
        for a in attrs {
            out.insert(a.clone(), rec.get(a).cloned().unwrap_or(Value::Null));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn leaf(a: &str, c: Comparator, v: Value) -> Condition {
        Condition::Leaf {
            attribute: a.into(),
            comparator: c,
            value: v,
        }
    }

    #[test]
    fn comparator_table() {
        use Comparator::*;
        let r = json!({"age": 4, "name": "Harper", "tags": ["a","b"], "n": null});
        let r = r.as_object().unwrap();
        let cases = [
            (leaf("age", Equals, json!(4)), true),
            (leaf("age", Equals, json!(4.0)), true),
            (leaf("age", Equals, json!("4")), false),
            (leaf("age", NotEqual, json!(5)), true),
            (leaf("age", GreaterThan, json!(3)), true),
            (leaf("age", GreaterThan, json!(4)), false),
            (leaf("age", GreaterThanEqual, json!(4)), true),
            (leaf("age", LessThan, json!(4)), false),
            (leaf("age", LessThanEqual, json!(4)), true),
            (leaf("age", GreaterThan, json!("3")), false),
            (leaf("age", Between, json!([4, 9])), true),
            (leaf("age", Between, json!([5, 9])), false),
            (leaf("name", StartsWith, json!("Har")), true),
            (leaf("name", EndsWith, json!("per")), true),
            (leaf("name", Contains, json!("rp")), true),
            (leaf("name", Contains, json!("x")), false),
            (leaf("tags", Equals, json!("b")), true),
            (leaf("tags", Contains, json!("a")), true),
            (leaf("tags", NotEqual, json!("a")), false),
            (leaf("missing", Equals, json!(null)), true),
            (leaf("n", Equals, json!(null)), true),
            (leaf("missing", GreaterThan, json!(1)), false),
        ];
        for (c, want) in cases {
            assert_eq!(matches(r, &c), want, "{c:?}");
        }
    }

    #[test]
    fn groups_combine_with_and_or() {
        use Comparator::*;
        let r = json!({"a": 1, "b": 2});
        let r = r.as_object().unwrap();
        let g = Condition::Group {
            operator: Logic::Or,
            conditions: vec![leaf("a", Equals, json!(9)), leaf("b", Equals, json!(2))],
        };
        assert!(matches(r, &g));
        assert!(!matches_all(
            r,
            Logic::And,
            &[g.clone(), leaf("a", Equals, json!(2))]
        ));
    }

    #[test]
    fn index_ranges_contain_all_matching_encodings() {
        use Comparator::*;
        let enc = |v: Value| {
            let mut e = Vec::new();
            keys::encode_index_value(&v, &mut e);
            e
        };
        let inside = |b: &KeyRange, k: &[u8]| {
            let lo = match &b.0 {
                Bound::Included(x) => k >= x.as_slice(),
                Bound::Excluded(x) => k > x.as_slice(),
                Bound::Unbounded => true,
            };
            let hi = match &b.1 {
                Bound::Included(x) => k <= x.as_slice(),
                Bound::Excluded(x) => k < x.as_slice(),
                Bound::Unbounded => true,
            };
            lo && hi
        };
        // An index key is value ‖ pk: values matching must be inside, with any pk suffix.
        let with_pk = |mut v: Vec<u8>| {
            v.extend_from_slice(&enc(json!("pk")));
            v
        };
        let r = index_range(GreaterThanEqual, &json!(3)).unwrap();
        assert!(inside(&r, &with_pk(enc(json!(3)))));
        assert!(inside(&r, &with_pk(enc(json!(1e9)))));
        assert!(!inside(&r, &with_pk(enc(json!(2)))));
        assert!(!inside(&r, &with_pk(enc(json!("3")))));
        let r = index_range(StartsWith, &json!("P")).unwrap();
        assert!(inside(&r, &with_pk(enc(json!("Penny")))));
        assert!(!inside(&r, &with_pk(enc(json!("Q")))));
        let r = index_range(Equals, &json!("Mutt")).unwrap();
        assert!(inside(&r, &with_pk(enc(json!("Mutt")))));
        assert!(!inside(&r, &with_pk(enc(json!("Mutts")))));
        let r = index_range(LessThanEqual, &json!(5)).unwrap();
        assert!(inside(&r, &with_pk(enc(json!(5)))));
        assert!(inside(&r, &with_pk(enc(json!(-5)))));
        assert!(!inside(&r, &with_pk(enc(json!(null)))));
        let r = index_range(Between, &json!([2, 4])).unwrap();
        assert!(inside(&r, &with_pk(enc(json!(4)))));
        assert!(!inside(&r, &with_pk(enc(json!(4.5)))));
        assert!(index_range(NotEqual, &json!(1)).is_none());
    }

    #[test]
    fn sort_orders_by_type_then_value_with_tie_breaks() {
        let mut recs: Vec<Map<String, Value>> = [
            json!({"a":2,"b":1}),
            json!({"a":1,"b":2}),
            json!({"a":2,"b":0}),
            json!({"b":9}),
        ]
        .into_iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
        let s = Sort {
            attribute: "a".into(),
            descending: false,
            next: Some(Box::new(Sort {
                attribute: "b".into(),
                descending: true,
                next: None,
            })),
        };
        sort_records(&mut recs, &s);
        let got: Vec<Value> = recs.iter().map(|r| json!([r.get("a"), r["b"]])).collect();
        assert_eq!(
            got,
            vec![
                json!([null, 9]),
                json!([1, 2]),
                json!([2, 1]),
                json!([2, 0])
            ]
        );
    }
}
