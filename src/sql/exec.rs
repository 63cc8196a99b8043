//! Runs a [`Plan`] for a principal: names bound to the catalog, permissions checked exactly as
//! the NoSQL operations check them, reads over `ops::query` (index scans, primary-key gets,
//! streamed records), writes sent to the core as the ordinary `WriteOp`s (one transaction each,
//! replicated like any write).
//!
//! Memory: a plain SELECT streams (rows are produced as the HTTP layer sends them); joins look
//! the joined table up per row through its indexes (a scan of it when no index answers), and
//! RIGHT / FULL joins then scan it once more for the rows nothing matched. Only what SQL forces
//! to be held -- rows to sort, groups, DISTINCT sets, the primary keys a RIGHT / FULL join
//! matched, the rows an UPDATE or DELETE changes -- is held, and never more than
//! [`MEMORY_BUDGET`]: beyond it the statement fails with a clear error instead of growing.
//! Never writes the store itself.

use super::eval::{eval, num, text, truthy, unknown_convert_type, Ctx, Row};
use super::parse::{
    Agg, BinOp, ConvertTo, Delete, Expr, Insert, JoinKind, OrderKey, Plan, Select, SelectItem,
    TableRef, Update,
};
use crate::core::auth::{AttrRules, Principal, TablePerm};
use crate::core::catalog::{Catalog, TableDef, HDB_USER, SYSTEM_DB};
use crate::core::error::OpError;
use crate::core::op::{RecordBatch, WriteKind, WriteOp};
use crate::core::txn::Actor;
use crate::node::driver::CoreHandle;
use crate::ops::parse::{Comparator, Condition, Logic, Requirement, Sort};
use crate::ops::query::{self, Page, MAX_CONDITIONS};
use crate::ops::read::{self, Rows};
use crate::store::Store;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Most bytes (estimated as JSON text) one statement may hold to sort, group, de-duplicate,
/// or collect the records an UPDATE or DELETE changes.
pub const MEMORY_BUDGET: usize = 64 << 20;

/// What a statement answers: rows (SELECT, streamed) or a write's message.
pub enum SqlAnswer {
    Rows(Rows),
    Json(Value),
}

fn over_budget() -> OpError {
    OpError::bad_request(format!(
        "This SQL statement needs more than {} MiB to sort, group, de-duplicate or collect its rows (Skerry's SQL memory limit); narrow the WHERE clause, add a LIMIT, or page with search_by_conditions",
        MEMORY_BUDGET >> 20
    ))
}

fn unknown_column(q: Option<&str>, name: &str) -> OpError {
    match q {
        Some(q) => OpError::internal(format!("unknown column {q}.{name}")),
        None => OpError::internal(format!("unknown column {name}")),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A constant expression's value (INSERT ... VALUES).
pub fn constant(e: &Expr) -> Result<Value, OpError> {
    let mut bad = false;
    e.walk(&mut |x| bad |= matches!(x, Expr::Column { .. } | Expr::Agg { .. }));
    if bad {
        return Err(OpError::bad_request(
            "VALUES may hold only constants (no columns or aggregates)",
        ));
    }
    eval(
        e,
        &Ctx {
            row: &[],
            aggs: &[],
            now_ms: now_ms(),
        },
    )
}

/// Approximate bytes a value holds (its JSON text), for the memory budget.
fn size_of(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 8,
        Value::Number(_) => 16,
        Value::String(s) => s.len() + 24,
        Value::Array(a) => 24 + a.iter().map(size_of).sum::<usize>(),
        Value::Object(o) => {
            48 + o
                .iter()
                .map(|(k, v)| k.len() + 24 + size_of(v))
                .sum::<usize>()
        }
    }
}

fn row_size(r: &Row) -> usize {
    r.iter()
        .map(|m| {
            m.as_ref().map_or(8, |m| {
                48 + m
                    .iter()
                    .map(|(k, v)| k.len() + 24 + size_of(v))
                    .sum::<usize>()
            })
        })
        .sum()
}

/// One table of the statement, resolved and authorised.
#[derive(Clone)]
struct Source {
    alias: String,
    def: TableDef,
    rules: Option<AttrRules>,
    /// system.hdb_user: password hashes never leave the node, not even through SQL.
    secrets: bool,
}

impl Source {
    fn has_column(&self, name: &str) -> bool {
        name == self.def.primary_key
            || name == crate::core::catalog::CREATED_TIME
            || name == "__updatedtime__"
            || self.def.attribute(name).is_some()
    }

    fn clean(&self, mut rec: Map<String, Value>) -> Map<String, Value> {
        if self.secrets {
            for k in ["password", "hash", "refresh_token", "hash_function"] {
                rec.remove(k);
            }
        }
        rec
    }

    /// The attributes `*` means for this table and role, with their values in `rec`.
    fn star(&self, rec: Option<&Map<String, Value>>) -> Map<String, Value> {
        if let Some(rules) = &self.rules {
            let mut out = Map::new();
            for a in rules.readable(&self.def.primary_key) {
                let v = rec.and_then(|r| r.get(&a)).cloned().unwrap_or(Value::Null);
                out.insert(a, v);
            }
            return out;
        }
        let star = ["*".to_string()];
        let rec = rec.cloned().unwrap_or_default();
        match query::project(self.clean(rec), Some(&star), &self.def) {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

fn open_table(
    t: &TableRef,
    p: &Principal,
    catalog: &Catalog,
    perms: Vec<TablePerm>,
) -> Result<Source, OpError> {
    read::authorize(
        p,
        &Requirement::Table(t.database.clone(), t.table.clone(), perms),
        catalog,
    )?;
    if catalog.database(&t.database).is_none() {
        return Err(OpError::database_not_found(&t.database));
    }
    let def = catalog
        .table(&t.database, &t.table)
        .ok_or_else(|| OpError::table_not_found(&t.database, &t.table))?
        .clone();
    Ok(Source {
        alias: t.alias.clone(),
        rules: p
            .role
            .as_ref()
            .and_then(|r| r.attribute_rules(&t.database, &t.table)),
        secrets: t.database == SYSTEM_DB && t.table == HDB_USER,
        def,
    })
}

/// Binds column names to table slots, reporting Harper's errors for unknown and ambiguous
/// columns, and records which attributes of each table the statement uses.
struct Binder<'a> {
    sources: &'a [Source],
    used: Vec<Vec<String>>,
}

impl<'a> Binder<'a> {
    fn new(sources: &'a [Source]) -> Self {
        Binder {
            sources,
            used: vec![Vec::new(); sources.len()],
        }
    }

    fn resolve(&mut self, q: Option<&str>, name: &str) -> Result<usize, OpError> {
        let slot = match q {
            Some(q) => {
                let slot = self
                    .sources
                    .iter()
                    .position(|s| s.alias == q)
                    .or_else(|| self.sources.iter().position(|s| s.def.name == q))
                    .ok_or_else(|| unknown_column(Some(q), name))?;
                let s = &self.sources[slot];
                if !s.has_column(name) && s.def.database != SYSTEM_DB {
                    return Err(unknown_column(Some(q), name));
                }
                slot
            }
            None => {
                let hits: Vec<usize> = (0..self.sources.len())
                    .filter(|i| self.sources[*i].has_column(name))
                    .collect();
                match hits.as_slice() {
                    [one] => *one,
                    [] => self
                        .sources
                        .iter()
                        .position(|s| s.def.database == SYSTEM_DB)
                        .ok_or_else(|| unknown_column(None, name))?,
                    _ => {
                        return Err(OpError::internal(format!(
                            "ambiguous column reference {name}"
                        )))
                    }
                }
            }
        };
        if !self.used[slot].iter().any(|n| n == name) {
            self.used[slot].push(name.to_string());
        }
        Ok(slot)
    }

    fn bind(&mut self, e: &mut Expr) -> Result<(), OpError> {
        let mut err = None;
        e.walk_mut(&mut |x| {
            if let Expr::Column {
                qualifier,
                name,
                slot,
            } = x
            {
                if err.is_none() {
                    match self.resolve(qualifier.as_deref(), name) {
                        Ok(s) => *slot = s,
                        Err(e) => err = Some(e),
                    }
                }
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        // A CONVERT to no known type, now that its columns are known to exist (Harper names
        // an unknown column first).
        let mut bad = None;
        e.walk(&mut |x| {
            if let Expr::Convert {
                to: ConvertTo::Unknown(t),
                ..
            } = x
            {
                bad.get_or_insert_with(|| unknown_convert_type(t));
            }
        });
        bad.map_or(Ok(()), Err)
    }

    /// Harper's 403 for attributes the role may not use, per table.
    fn check(&self, perm: TablePerm) -> Result<(), OpError> {
        for (s, used) in self.sources.iter().zip(&self.used) {
            if let Some(rules) = &s.rules {
                read::check_attributes(rules, &s.def, used.iter().map(String::as_str), perm)?;
            }
        }
        Ok(())
    }
}

/// The AND-ed parts of a condition.
fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::Binary(BinOp::And, a, b) => {
            let mut v = conjuncts(a);
            v.extend(conjuncts(b));
            v
        }
        other => vec![other],
    }
}

/// Slots an expression reads, and whether it holds an aggregate.
fn slots_of(e: &Expr) -> (HashSet<usize>, bool) {
    let mut slots = HashSet::new();
    let mut agg = false;
    e.walk(&mut |x| match x {
        Expr::Column { slot, .. } => {
            slots.insert(*slot);
        }
        Expr::Agg { .. } | Expr::AggRef(_) => agg = true,
        _ => {}
    });
    (slots, agg)
}

/// Whether `e` can be computed before table `slot` is read (only earlier tables, constants).
fn known_before(e: &Expr, slot: usize) -> bool {
    let (slots, agg) = slots_of(e);
    !agg && slots.iter().all(|s| *s < slot)
}

fn scalar(v: &Value) -> bool {
    matches!(v, Value::Number(_) | Value::String(_) | Value::Bool(_))
}

/// A condition `ops::query` can answer (through an index where one exists) that every row
/// satisfying `e` satisfies, for table `slot`; values from earlier tables come from `cx`.
fn to_condition(e: &Expr, slot: usize, cx: &Ctx) -> Option<Condition> {
    let col = |x: &Expr| match x {
        Expr::Column { name, slot: s, .. } if *s == slot => Some(name.clone()),
        _ => None,
    };
    match e {
        Expr::Binary(op, a, b)
            if matches!(
                op,
                BinOp::Eq | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
            ) =>
        {
            let (attribute, other, flipped) = match (col(a), col(b)) {
                (Some(n), _) if known_before(b, slot) => (n, b, false),
                (_, Some(n)) if known_before(a, slot) => (n, a, true),
                _ => return None,
            };
            let value = eval(other, cx).ok()?;
            if !scalar(&value) {
                return None;
            }
            let comparator = match (op, flipped) {
                (BinOp::Eq, _) => Comparator::Equals,
                (BinOp::Lt, false) | (BinOp::Gt, true) => Comparator::LessThan,
                (BinOp::Le, false) | (BinOp::Ge, true) => Comparator::LessThanEqual,
                (BinOp::Gt, false) | (BinOp::Lt, true) => Comparator::GreaterThan,
                _ => Comparator::GreaterThanEqual,
            };
            Some(Condition::Leaf {
                attribute,
                comparator,
                value,
            })
        }
        Expr::Between {
            expr,
            low,
            high,
            negated: false,
        } => {
            let attribute = col(expr)?;
            if !known_before(low, slot) || !known_before(high, slot) {
                return None;
            }
            let (lo, hi) = (eval(low, cx).ok()?, eval(high, cx).ok()?);
            if !scalar(&lo) || !scalar(&hi) {
                return None;
            }
            Some(Condition::Leaf {
                attribute,
                comparator: Comparator::Between,
                value: json!([lo, hi]),
            })
        }
        Expr::InList {
            expr,
            list,
            negated: false,
        } if list.len() <= MAX_CONDITIONS => {
            let attribute = col(expr)?;
            let mut conditions = Vec::with_capacity(list.len());
            for item in list {
                if !known_before(item, slot) {
                    return None;
                }
                let value = eval(item, cx).ok()?;
                if !scalar(&value) {
                    return None;
                }
                conditions.push(Condition::Leaf {
                    attribute: attribute.clone(),
                    comparator: Comparator::Equals,
                    value,
                });
            }
            Some(Condition::Group {
                operator: Logic::Or,
                conditions,
            })
        }
        Expr::Binary(op @ (BinOp::And | BinOp::Or), a, b) => Some(Condition::Group {
            operator: if *op == BinOp::And {
                Logic::And
            } else {
                Logic::Or
            },
            conditions: vec![to_condition(a, slot, cx)?, to_condition(b, slot, cx)?],
        }),
        _ => None,
    }
}

fn leaves(c: &[Condition]) -> usize {
    c.iter()
        .map(|c| match c {
            Condition::Leaf { .. } => 1,
            Condition::Group { conditions, .. } => leaves(conditions),
        })
        .sum()
}

/// The conditions of the conjuncts `ops::query` can answer for `slot`, and whether they
/// are all of them (then the query's own matching is the whole filter).
fn pushdown(parts: &[&Expr], slot: usize, cx: &Ctx) -> (Vec<Condition>, bool) {
    let mut conds = Vec::new();
    let mut exact = true;
    for p in parts {
        match to_condition(p, slot, cx) {
            Some(c) if leaves(&conds) + leaves(std::slice::from_ref(&c)) <= MAX_CONDITIONS => {
                conds.push(c)
            }
            _ => exact = false,
        }
    }
    (conds, exact)
}

type RowIter = Box<dyn Iterator<Item = Result<Row, OpError>> + Send>;

fn no_page() -> Page<'static> {
    Page {
        limit: None,
        offset: 0,
        sort: None,
        reverse: false,
    }
}

/// One joined table: looked up per incoming row with the conditions that row's values make.
struct JoinStage {
    slot: usize,
    kind: JoinKind,
    source: Source,
    on: Expr,
    /// ON conjuncts (and, for inner joins, WHERE conjuncts) that may narrow the lookup.
    narrowing: Vec<Expr>,
}

impl JoinStage {
    /// RIGHT and FULL joins also answer the joined table's rows no input row matched.
    fn keeps_unmatched_right(&self) -> bool {
        matches!(self.kind, JoinKind::Right | JoinKind::Full)
    }

    fn keeps_unmatched_left(&self) -> bool {
        matches!(self.kind, JoinKind::Left | JoinKind::Full)
    }
}

/// A join streamed in the input's order: per input row the joined table's matching records
/// (looked up through its indexes where the ON clause allows), then -- RIGHT and FULL -- one
/// scan of the joined table for the records no input row matched, in its primary-key order
/// (Harper's order too: the joined rows first, the unmatched right rows last). The only state
/// held is the set of matched primary keys, charged to [`MEMORY_BUDGET`].
struct JoinIter {
    input: RowIter,
    stage: Arc<JoinStage>,
    store: Store,
    now: i64,
    current: Option<(Row, query::Records, bool)>,
    /// RIGHT / FULL: the primary keys (as JSON text) of joined records some row matched.
    matched: HashSet<String>,
    matched_bytes: usize,
    /// RIGHT / FULL, once the input has ended: the scan for unmatched records.
    rest: Option<query::Records>,
}

impl JoinIter {
    fn new(input: RowIter, stage: Arc<JoinStage>, store: Store, now: i64) -> Self {
        JoinIter {
            input,
            stage,
            store,
            now,
            current: None,
            matched: HashSet::new(),
            matched_bytes: 0,
            rest: None,
        }
    }

    fn key_of(&self, rec: &Map<String, Value>) -> String {
        rec.get(&self.stage.source.def.primary_key)
            .map(Value::to_string)
            .unwrap_or_default()
    }

    /// The next record of the closing scan no input row matched, as a row with nulls before it.
    fn next_unmatched(&mut self) -> Option<Result<Row, OpError>> {
        loop {
            let rec = match self.rest.as_mut()?.next()? {
                Ok(rec) => rec,
                Err(e) => return Some(Err(e)),
            };
            if self.matched.contains(&self.key_of(&rec)) {
                continue;
            }
            let mut row: Row = vec![None; self.stage.slot];
            row.push(Some(self.stage.source.clean(rec)));
            return Some(Ok(row));
        }
    }
}

impl Iterator for JoinIter {
    type Item = Result<Row, OpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_some() {
            return self.next_unmatched();
        }
        loop {
            if let Some((left, right, matched)) = &mut self.current {
                match right.next() {
                    Some(Ok(rec)) => {
                        let key = self.stage.keeps_unmatched_right().then(|| {
                            rec.get(&self.stage.source.def.primary_key)
                                .map(Value::to_string)
                                .unwrap_or_default()
                        });
                        let mut row = left.clone();
                        row.push(Some(self.stage.source.clean(rec)));
                        let cx = Ctx {
                            row: &row,
                            aggs: &[],
                            now_ms: self.now,
                        };
                        match eval(&self.stage.on, &cx) {
                            Ok(v) if truthy(&v) => {}
                            Ok(_) => continue,
                            Err(e) => return Some(Err(e)),
                        }
                        *matched = true;
                        if let Some(key) = key {
                            if !self.matched.contains(&key) {
                                self.matched_bytes += key.len() + 32;
                                if self.matched_bytes > MEMORY_BUDGET {
                                    return Some(Err(over_budget()));
                                }
                                self.matched.insert(key);
                            }
                        }
                        return Some(Ok(row));
                    }
                    Some(Err(e)) => return Some(Err(e)),
                    None => {
                        if let Some((mut left, _, matched)) = self.current.take() {
                            if !matched && self.stage.keeps_unmatched_left() {
                                left.push(None);
                                return Some(Ok(left));
                            }
                        }
                        continue;
                    }
                }
            }
            let left = match self.input.next() {
                Some(Ok(r)) => r,
                Some(Err(e)) => return Some(Err(e)),
                None if self.stage.keeps_unmatched_right() => {
                    match query::search(
                        &self.store,
                        &self.stage.source.def,
                        Logic::And,
                        &[],
                        &no_page(),
                    ) {
                        Ok(r) => self.rest = Some(r),
                        Err(e) => return Some(Err(e)),
                    }
                    return self.next_unmatched();
                }
                None => return None,
            };
            let cx = Ctx {
                row: &left,
                aggs: &[],
                now_ms: self.now,
            };
            let parts: Vec<&Expr> = self.stage.narrowing.iter().collect();
            let (conds, _) = pushdown(&parts, self.stage.slot, &cx);
            match query::search(
                &self.store,
                &self.stage.source.def,
                Logic::And,
                &conds,
                &no_page(),
            ) {
                Ok(r) => self.current = Some((left, r, false)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// An output column: `*` of one table, or an expression.
enum Out {
    Star(usize),
    Expr(Expr, String),
}

struct Shaper {
    out: Vec<Out>,
    sources: Vec<Source>,
    order: Vec<OrderKey>,
    now: i64,
}

impl Shaper {
    /// A streamed row without ORDER BY keys. `SELECT *` from one table the role reads whole
    /// takes the record itself (what `shape` would copy three times to the same answer).
    fn shape_owned(&self, row: Row) -> Result<Value, OpError> {
        if let ([Out::Star(0)], [src]) = (self.out.as_slice(), self.sources.as_slice()) {
            if src.rules.is_none() {
                let rec = row.into_iter().next().flatten().unwrap_or_default();
                let star = ["*".to_string()];
                return Ok(query::project(src.clean(rec), Some(&star), &src.def));
            }
        }
        Ok(Value::Object(self.shape(&row, &[])?.1))
    }

    fn shape(
        &self,
        row: &Row,
        aggs: &[Value],
    ) -> Result<(Vec<Value>, Map<String, Value>), OpError> {
        let cx = Ctx {
            row,
            aggs,
            now_ms: self.now,
        };
        let joined = self.sources.len() > 1;
        let mut out = Map::new();
        for o in &self.out {
            match o {
                Out::Star(slot) => {
                    let rec = row.get(*slot).and_then(Option::as_ref);
                    for (k, v) in self.sources[*slot].star(rec) {
                        // Joined tables' equal names get a suffix, as Harper's `id1`.
                        let mut key = k.clone();
                        let mut n = 1;
                        while joined && out.contains_key(&key) {
                            key = format!("{k}{n}");
                            n += 1;
                        }
                        out.insert(key, v);
                    }
                }
                Out::Expr(e, name) => {
                    out.insert(name.clone(), eval(e, &cx)?);
                }
            }
        }
        let keys = self
            .order
            .iter()
            .map(|k| eval(&k.expr, &cx))
            .collect::<Result<_, _>>()?;
        Ok((keys, out))
    }
}

fn order_cmp(a: &[Value], b: &[Value], order: &[OrderKey]) -> std::cmp::Ordering {
    for ((x, y), k) in a.iter().zip(b).zip(order) {
        let o = query::sort_cmp(x, y);
        let o = if k.descending { o.reverse() } else { o };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

/// DISTINCT, ORDER BY, OFFSET and LIMIT over shaped rows, within the memory budget.
fn finish(
    rows: impl Iterator<Item = Result<(Vec<Value>, Map<String, Value>), OpError>>,
    distinct: bool,
    order: &[OrderKey],
    offset: u64,
    limit: Option<u64>,
    budget: usize,
) -> Result<Vec<Value>, OpError> {
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    let limit = limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let keep = limit.map(|l| offset.saturating_add(l));
    let mut seen: HashSet<String> = HashSet::new();
    let mut held: Vec<(Vec<Value>, Map<String, Value>, usize)> = Vec::new();
    let mut bytes = 0usize;
    for r in rows {
        let (keys, out) = r?;
        let size = 48
            + keys.iter().map(size_of).sum::<usize>()
            + out
                .iter()
                .map(|(k, v)| k.len() + 24 + size_of(v))
                .sum::<usize>();
        if distinct {
            let key = serde_json::to_string(&out).unwrap_or_default();
            if seen.contains(&key) {
                continue;
            }
            bytes += key.len() + 32;
            seen.insert(key);
        }
        bytes += size;
        held.push((keys, out, size));
        if order.is_empty() {
            if keep.is_some_and(|k| held.len() >= k) {
                break;
            }
        } else if let Some(k) = keep {
            // Top-k: sort and cut whenever twice the needed rows are held.
            if held.len() >= k.saturating_mul(2).max(64) {
                held.sort_by(|a, b| order_cmp(&a.0, &b.0, order));
                for r in held.drain(k.min(held.len())..) {
                    bytes = bytes.saturating_sub(r.2);
                }
            }
        }
        if bytes > budget {
            return Err(over_budget());
        }
    }
    if !order.is_empty() {
        held.sort_by(|a, b| order_cmp(&a.0, &b.0, order));
    }
    let paged = held.into_iter().skip(offset).map(|r| Value::Object(r.1));
    Ok(match limit {
        Some(l) => paged.take(l).collect(),
        None => paged.collect(),
    })
}

struct AggSpec {
    agg: Agg,
    arg: Option<Expr>,
    distinct: bool,
}

enum Acc {
    Count(u64),
    Sum(f64),
    Avg(f64, u64),
    Min(Option<Value>),
    Max(Option<Value>),
    /// GROUP_CONCAT's text so far (None until a non-null value: then the answer is null).
    Concat(Option<String>),
}

struct Accum {
    acc: Acc,
    seen: Option<HashSet<String>>,
}

impl Accum {
    fn new(s: &AggSpec) -> Self {
        Accum {
            acc: match s.agg {
                Agg::Count => Acc::Count(0),
                Agg::Sum => Acc::Sum(0.0),
                Agg::Avg => Acc::Avg(0.0, 0),
                Agg::Min => Acc::Min(None),
                Agg::Max => Acc::Max(None),
                Agg::GroupConcat => Acc::Concat(None),
            },
            seen: s.distinct.then(HashSet::new),
        }
    }

    /// Adds one row's value; returns the bytes newly held (DISTINCT sets).
    fn add(&mut self, v: Option<Value>) -> usize {
        let Some(v) = v else {
            // COUNT(*)
            if let Acc::Count(n) = &mut self.acc {
                *n += 1;
            }
            return 0;
        };
        if v.is_null() {
            return 0;
        }
        let mut grew = 0;
        if let Some(seen) = &mut self.seen {
            let key = v.to_string();
            if seen.contains(&key) {
                return 0;
            }
            grew = key.len() + 32;
            seen.insert(key);
        }
        match &mut self.acc {
            Acc::Count(n) => *n += 1,
            Acc::Sum(s) => {
                if let Some(x) = v.as_f64() {
                    *s += x
                }
            }
            Acc::Avg(s, n) => {
                if let Some(x) = v.as_f64() {
                    *s += x;
                    *n += 1;
                }
            }
            Acc::Min(m) => {
                if m.as_ref()
                    .is_none_or(|cur| query::sort_cmp(&v, cur).is_lt())
                {
                    *m = Some(v);
                }
            }
            Acc::Max(m) => {
                if m.as_ref()
                    .is_none_or(|cur| query::sort_cmp(&v, cur).is_gt())
                {
                    *m = Some(v);
                }
            }
            Acc::Concat(c) => {
                let t = text(&v);
                grew += t.len() + 1;
                match c {
                    Some(c) => {
                        c.push(',');
                        c.push_str(&t);
                    }
                    None => *c = Some(t),
                }
            }
        }
        grew
    }

    fn value(&self) -> Value {
        match &self.acc {
            Acc::Count(n) => Value::from(*n),
            // Harper: SUM over no rows is 0.
            Acc::Sum(s) => num(*s),
            Acc::Avg(_, 0) => Value::Null,
            Acc::Avg(s, n) => num(*s / *n as f64),
            Acc::Min(m) | Acc::Max(m) => m.clone().unwrap_or(Value::Null),
            Acc::Concat(c) => c.clone().map(Value::String).unwrap_or(Value::Null),
        }
    }
}

/// Replaces aggregates by references to their slot in `specs` (equal ones share a slot).
fn extract_aggs(e: &mut Expr, specs: &mut Vec<AggSpec>) {
    e.walk_mut(&mut |x| {
        if let Expr::Agg { agg, arg, distinct } = x {
            let arg = arg.as_deref().cloned();
            let i = specs
                .iter()
                .position(|s| s.agg == *agg && s.arg == arg && s.distinct == *distinct)
                .unwrap_or_else(|| {
                    specs.push(AggSpec {
                        agg: *agg,
                        arg: arg.clone(),
                        distinct: *distinct,
                    });
                    specs.len() - 1
                });
            *x = Expr::AggRef(i);
        }
    });
}

/// Replaces a bare name that is an output alias by the aliased expression (ORDER BY, HAVING,
/// GROUP BY may name output columns).
fn substitute_aliases(e: &mut Expr, items: &[SelectItem]) {
    e.walk_mut(&mut |x| {
        if let Expr::Column {
            qualifier: None,
            name,
            ..
        } = x
        {
            let found = items.iter().find_map(|i| match i {
                SelectItem::Expr { expr, name: n } if n == name => Some(expr),
                _ => None,
            });
            if let Some(expr) = found {
                let same =
                    matches!(expr, Expr::Column { qualifier: None, name: n, .. } if n == name);
                if !same {
                    *x = expr.clone();
                }
            }
        }
    });
}

/// Runs a statement for `p`.
pub fn run(
    plan: Plan,
    p: &Principal,
    store: &Store,
    catalog: &Catalog,
    core: &CoreHandle,
) -> Result<SqlAnswer, OpError> {
    match plan {
        Plan::Select(s) => select(*s, p, store, catalog).map(SqlAnswer::Rows),
        Plan::Insert(i) => insert(i, p, catalog, core).map(SqlAnswer::Json),
        Plan::Update(u) => update(u, p, store, catalog, core).map(SqlAnswer::Json),
        Plan::Delete(d) => delete(d, p, store, catalog, core).map(SqlAnswer::Json),
    }
}

/// The rows of a SELECT plan (`export_local`'s `sql` search); any other statement is refused.
pub fn select_rows(
    plan: Plan,
    p: &Principal,
    store: &Store,
    catalog: &Catalog,
) -> Result<Rows, OpError> {
    match plan {
        Plan::Select(s) => select(*s, p, store, catalog),
        _ => Err(OpError::bad_request(
            "search_operation sql must be a SELECT statement",
        )),
    }
}

fn select(mut s: Select, p: &Principal, store: &Store, catalog: &Catalog) -> Result<Rows, OpError> {
    let now = now_ms();
    let mut sources = Vec::new();
    if let Some(t) = &s.from {
        sources.push(open_table(t, p, catalog, vec![TablePerm::Read])?);
    }
    for j in &s.joins {
        sources.push(open_table(&j.table, p, catalog, vec![TablePerm::Read])?);
    }
    // ORDER BY may name output columns (aliases) or positions; HAVING and GROUP BY aliases.
    let items_copy = s.items.clone();
    for k in &mut s.order_by {
        if let Expr::Literal(Value::Number(n)) = &k.expr {
            let pos = n.as_u64().unwrap_or(0) as usize;
            match items_copy.get(pos.wrapping_sub(1)) {
                Some(SelectItem::Expr { expr, .. }) => k.expr = expr.clone(),
                _ => {
                    return Err(OpError::bad_request(format!(
                        "ORDER BY position {n} is not an expression of the select list"
                    )))
                }
            }
        }
        substitute_aliases(&mut k.expr, &items_copy);
    }
    if let Some(h) = &mut s.having {
        substitute_aliases(h, &items_copy);
    }
    for g in &mut s.group_by {
        substitute_aliases(g, &items_copy);
    }

    let mut b = Binder::new(&sources);
    let mut out = Vec::new();
    for item in &mut s.items {
        match item {
            SelectItem::Star => {
                if sources.is_empty() {
                    return Err(OpError::bad_request("SELECT * needs a FROM clause"));
                }
                out.extend((0..sources.len()).map(Out::Star));
            }
            SelectItem::QualifiedStar(q) => {
                let slot = sources
                    .iter()
                    .position(|src| &src.alias == q)
                    .or_else(|| sources.iter().position(|src| &src.def.name == q))
                    .ok_or_else(|| unknown_column(Some(q), "*"))?;
                out.push(Out::Star(slot));
            }
            SelectItem::Expr { expr, name } => {
                b.bind(expr)?;
                out.push(Out::Expr(expr.clone(), name.clone()));
            }
        }
    }
    if let Some(f) = &mut s.filter {
        b.bind(f)?;
        if f.has_aggregate() {
            return Err(OpError::bad_request("aggregates are not allowed in WHERE"));
        }
    }
    for j in &mut s.joins {
        b.bind(&mut j.on)?;
        if j.on.has_aggregate() {
            return Err(OpError::bad_request("aggregates are not allowed in ON"));
        }
    }
    for g in &mut s.group_by {
        b.bind(g)?;
    }
    if let Some(h) = &mut s.having {
        b.bind(h)?;
    }
    for k in &mut s.order_by {
        b.bind(&mut k.expr)?;
    }
    b.check(TablePerm::Read)?;

    // Aggregates.
    let mut specs = Vec::new();
    for o in &mut out {
        if let Out::Expr(e, _) = o {
            extract_aggs(e, &mut specs);
        }
    }
    if let Some(h) = &mut s.having {
        extract_aggs(h, &mut specs);
    }
    for k in &mut s.order_by {
        extract_aggs(&mut k.expr, &mut specs);
    }
    let grouped = !specs.is_empty() || !s.group_by.is_empty() || s.having.is_some();
    // Harper refuses COUNT(*) on a table whose role lists attribute permissions.
    if specs.iter().any(|a| a.arg.is_none()) {
        if let Some(src) = sources.first() {
            if let Some(rules) = &src.rules {
                read::check_attributes(rules, &src.def, ["*"], TablePerm::Read)?;
            }
        }
    }

    let shaper = Shaper {
        out,
        sources: sources.clone(),
        order: s.order_by.clone(),
        now,
    };

    // No FROM: one row of constants.
    if sources.is_empty() {
        let row: Row = Vec::new();
        let aggs: Vec<Value> = specs.iter().map(|sp| Accum::new(sp).value()).collect();
        let (_, o) = shaper.shape(&row, &aggs)?;
        return Ok(Box::new(std::iter::once(Ok(Value::Object(o)))));
    }

    let empty: Row = Vec::new();
    let const_cx = Ctx {
        row: &empty,
        aggs: &[],
        now_ms: now,
    };
    let where_parts: Vec<&Expr> = s.filter.as_ref().map(conjuncts).unwrap_or_default();
    let base_parts: Vec<&Expr> = where_parts
        .iter()
        .copied()
        .filter(|e| {
            let (slots, agg) = slots_of(e);
            !agg && slots.iter().all(|s| *s == 0)
        })
        .collect();
    let (base_conds, base_exact) = pushdown(&base_parts, 0, &const_cx);
    let exact = base_exact && base_parts.len() == where_parts.len() && s.joins.is_empty();

    // A single table whose whole WHERE the query layer answers can also page and sort there.
    let sort_chain: Option<Sort> = if exact && !grouped && !s.distinct {
        let mut chain: Option<Sort> = None;
        let mut ok = true;
        for k in s.order_by.iter().rev() {
            match &k.expr {
                Expr::Column { name, slot: 0, .. } => {
                    chain = Some(Sort {
                        attribute: name.clone(),
                        descending: k.descending,
                        next: chain.map(Box::new),
                    })
                }
                _ => ok = false,
            }
        }
        if ok {
            chain
        } else {
            None
        }
    } else {
        None
    };
    let pushed_page =
        exact && !grouped && !s.distinct && (s.order_by.is_empty() || sort_chain.is_some());
    let page = if pushed_page {
        Page {
            limit: s.limit,
            offset: s.offset,
            sort: sort_chain.as_ref(),
            reverse: false,
        }
    } else {
        no_page()
    };
    let base = sources[0].clone();
    let recs = query::search(store, &base.def, Logic::And, &base_conds, &page)?;
    let mut rows: RowIter = Box::new(recs.map(move |r| r.map(|m| vec![Some(base.clean(m))])));

    for (i, j) in s.joins.iter().enumerate() {
        let slot = i + 1;
        let mut narrowing: Vec<Expr> = conjuncts(&j.on).into_iter().cloned().collect();
        if j.kind == JoinKind::Inner {
            narrowing.extend(
                where_parts
                    .iter()
                    .filter(|e| {
                        let (slots, agg) = slots_of(e);
                        !agg && slots.contains(&slot) && slots.iter().all(|x| *x <= slot)
                    })
                    .map(|e| (*e).clone()),
            );
        }
        let stage = Arc::new(JoinStage {
            slot,
            kind: j.kind,
            source: sources[slot].clone(),
            on: j.on.clone(),
            narrowing,
        });
        rows = Box::new(JoinIter::new(rows, stage, store.clone(), now));
    }
    if !exact {
        if let Some(f) = s.filter.clone() {
            rows = keep_where(rows, f, now);
        }
    }

    if grouped {
        let n_sources = sources.len();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut groups: Vec<(Row, Vec<Accum>, bool)> = Vec::new();
        if s.group_by.is_empty() {
            groups.push((
                vec![None; n_sources],
                specs.iter().map(Accum::new).collect(),
                false,
            ));
        }
        let mut bytes = 0usize;
        for r in rows {
            let row = r?;
            let cx = Ctx {
                row: &row,
                aggs: &[],
                now_ms: now,
            };
            let g = if s.group_by.is_empty() {
                0
            } else {
                let key: Vec<Value> = s
                    .group_by
                    .iter()
                    .map(|g| eval(g, &cx))
                    .collect::<Result<_, _>>()?;
                let key = serde_json::to_string(&key).unwrap_or_default();
                match index.get(&key) {
                    Some(g) => *g,
                    None => {
                        bytes += key.len() + 64 + row_size(&row);
                        index.insert(key, groups.len());
                        groups.push((
                            vec![None; n_sources],
                            specs.iter().map(Accum::new).collect(),
                            false,
                        ));
                        groups.len() - 1
                    }
                }
            };
            let group = &mut groups[g];
            for (acc, spec) in group.1.iter_mut().zip(&specs) {
                let v = match &spec.arg {
                    Some(a) => Some(eval(a, &cx)?),
                    None => None,
                };
                bytes += acc.add(v);
            }
            if !group.2 {
                if s.group_by.is_empty() {
                    bytes += row_size(&row);
                }
                group.0 = row;
                group.2 = true;
            }
            if bytes > MEMORY_BUDGET {
                return Err(over_budget());
            }
        }
        let having = s.having.clone();
        let shaped = groups.into_iter().filter_map(|(row, accs, _)| {
            let aggs: Vec<Value> = accs.iter().map(Accum::value).collect();
            if let Some(h) = &having {
                let cx = Ctx {
                    row: &row,
                    aggs: &aggs,
                    now_ms: now,
                };
                match eval(h, &cx) {
                    Ok(v) if truthy(&v) => {}
                    Ok(_) => return None,
                    Err(e) => return Some(Err(e)),
                }
            }
            Some(shaper.shape(&row, &aggs))
        });
        let out = finish(
            shaped,
            s.distinct,
            &s.order_by,
            s.offset,
            s.limit,
            MEMORY_BUDGET,
        )?;
        return Ok(Box::new(out.into_iter().map(Ok)));
    }

    if pushed_page || (s.order_by.is_empty() && !s.distinct) {
        // Streamed: nothing is held beyond the row being sent.
        let (offset, limit) = if pushed_page {
            (0, None)
        } else {
            (s.offset, s.limit)
        };
        let shaper = Arc::new(shaper);
        let mapped = rows.map(move |r| r.and_then(|row| shaper.shape_owned(row)));
        let skipped = mapped.skip(usize::try_from(offset).unwrap_or(usize::MAX));
        return Ok(match limit {
            Some(l) => Box::new(skipped.take(usize::try_from(l).unwrap_or(usize::MAX))),
            None => Box::new(skipped),
        });
    }
    let shaped = rows.map(|r| r.and_then(|row| shaper.shape(&row, &[])));
    let out = finish(
        shaped,
        s.distinct,
        &s.order_by,
        s.offset,
        s.limit,
        MEMORY_BUDGET,
    )?;
    Ok(Box::new(out.into_iter().map(Ok)))
}

/// Removes what SQL write answers do not carry (Harper's SQL answers have neither).
fn write_answer(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("txn_time");
        m.remove("new_attributes");
    }
    v
}

fn actor(p: &Principal) -> Actor {
    Actor::User(p.username.clone())
}

fn insert(
    i: Insert,
    p: &Principal,
    catalog: &Catalog,
    core: &CoreHandle,
) -> Result<Value, OpError> {
    let (db, t) = (&i.table.database, &i.table.table);
    if db == SYSTEM_DB {
        return Err(OpError::forbidden(
            vec![
                json!({"schema": db, "table": t, "required_table_permissions": ["insert"], "required_attribute_permissions": []}),
            ],
            vec![],
        ));
    }
    // Harper answers an INSERT into a missing table with a 400 (a SELECT gets a 404).
    let src = open_table(&i.table, p, catalog, vec![TablePerm::Insert]).map_err(|e| {
        if e.status == 404 {
            OpError::bad_request(e.message().to_string())
        } else {
            e
        }
    })?;
    if let Some(rules) = &src.rules {
        read::check_attributes(
            rules,
            &src.def,
            i.columns.iter().map(String::as_str),
            TablePerm::Insert,
        )?;
    }
    let records: Vec<Map<String, Value>> = i
        .rows
        .into_iter()
        .map(|row| i.columns.iter().cloned().zip(row).collect())
        .collect();
    core.execute(
        WriteOp::Records {
            kind: WriteKind::Insert,
            database: db.clone(),
            table: t.clone(),
            records: RecordBatch::from_maps(records),
        },
        actor(p),
    )
    .map(write_answer)
}

/// The records of one table a WHERE selects, streamed (UPDATE and DELETE).
fn matching(src: &Source, filter: Option<Expr>, store: &Store) -> Result<RowIter, OpError> {
    let now = now_ms();
    let empty: Row = Vec::new();
    let cx = Ctx {
        row: &empty,
        aggs: &[],
        now_ms: now,
    };
    let parts: Vec<&Expr> = filter.as_ref().map(conjuncts).unwrap_or_default();
    let (conds, exact) = pushdown(&parts, 0, &cx);
    let recs = query::search(store, &src.def, Logic::And, &conds, &no_page())?;
    let rows: RowIter = Box::new(recs.map(|r| r.map(|m| vec![Some(m)])));
    Ok(match filter {
        Some(f) if !exact => keep_where(rows, f, now),
        _ => rows,
    })
}

/// The rows for which `filter` holds (the WHERE conditions the indexes did not answer
/// exactly); errors pass through to the consumer.
fn keep_where(rows: RowIter, filter: Expr, now: i64) -> RowIter {
    Box::new(rows.filter_map(move |r| match r {
        Ok(row) => {
            let cx = Ctx {
                row: &row,
                aggs: &[],
                now_ms: now,
            };
            match eval(&filter, &cx) {
                Ok(v) if truthy(&v) => Some(Ok(row)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        }
        Err(e) => Some(Err(e)),
    }))
}

fn bind_write(
    src: &Source,
    filter: &mut Option<Expr>,
    exprs: &mut [&mut Expr],
) -> Result<(), OpError> {
    let sources = std::slice::from_ref(src);
    let mut b = Binder::new(sources);
    if let Some(f) = filter {
        b.bind(f)?;
        if f.has_aggregate() {
            return Err(OpError::bad_request("aggregates are not allowed in WHERE"));
        }
    }
    for e in exprs.iter_mut() {
        b.bind(e)?;
        if e.has_aggregate() {
            return Err(OpError::bad_request("aggregates are not allowed in SET"));
        }
    }
    b.check(TablePerm::Read)
}

fn update(
    mut u: Update,
    p: &Principal,
    store: &Store,
    catalog: &Catalog,
    core: &CoreHandle,
) -> Result<Value, OpError> {
    let src = open_table(&u.table, p, catalog, vec![TablePerm::Update])?;
    {
        let mut exprs: Vec<&mut Expr> = u.set.iter_mut().map(|(_, e)| e).collect();
        bind_write(&src, &mut u.filter, &mut exprs)?;
    }
    if let Some(rules) = &src.rules {
        read::check_attributes(
            rules,
            &src.def,
            u.set.iter().map(|(c, _)| c.as_str()),
            TablePerm::Update,
        )?;
    }
    let pk = src.def.primary_key.clone();
    let now = now_ms();
    let mut records = Vec::new();
    let mut bytes = 0usize;
    for r in matching(&src, u.filter.clone(), store)? {
        let row = r?;
        let cx = Ctx {
            row: &row,
            aggs: &[],
            now_ms: now,
        };
        let mut rec = Map::new();
        let id = row
            .first()
            .and_then(Option::as_ref)
            .and_then(|m| m.get(&pk))
            .cloned()
            .unwrap_or(Value::Null);
        rec.insert(pk.clone(), id);
        for (col, e) in &u.set {
            rec.insert(col.clone(), eval(e, &cx)?);
        }
        bytes += 48
            + rec
                .iter()
                .map(|(k, v)| k.len() + 24 + size_of(v))
                .sum::<usize>();
        if bytes > MEMORY_BUDGET {
            return Err(over_budget());
        }
        records.push(rec);
    }
    if records.is_empty() {
        return Ok(
            json!({"message": "updated 0 of 0 records", "update_hashes": [], "skipped_hashes": []}),
        );
    }
    core.execute(
        WriteOp::Records {
            kind: WriteKind::Update,
            database: src.def.database.clone(),
            table: src.def.name.clone(),
            records: RecordBatch::from_maps(records),
        },
        actor(p),
    )
    .map(write_answer)
}

fn delete(
    mut d: Delete,
    p: &Principal,
    store: &Store,
    catalog: &Catalog,
    core: &CoreHandle,
) -> Result<Value, OpError> {
    let src = open_table(&d.table, p, catalog, vec![TablePerm::Delete])?;
    bind_write(&src, &mut d.filter, &mut [])?;
    let pk = src.def.primary_key.clone();
    let mut ids = Vec::new();
    let mut bytes = 0usize;
    for r in matching(&src, d.filter.clone(), store)? {
        let row = r?;
        if let Some(id) = row
            .first()
            .and_then(Option::as_ref)
            .and_then(|m| m.get(&pk))
        {
            bytes += 24 + size_of(id);
            if bytes > MEMORY_BUDGET {
                return Err(over_budget());
            }
            ids.push(id.clone());
        }
    }
    if ids.is_empty() {
        return Ok(
            json!({"message": "0 of 0 records successfully deleted", "deleted_hashes": [], "skipped_hashes": []}),
        );
    }
    core.execute(
        WriteOp::Delete {
            database: src.def.database.clone(),
            table: src.def.name.clone(),
            ids,
        },
        actor(p),
    )
    .map(write_answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::parse::{parse, Plan};

    /// The WHERE of `SELECT * FROM a.t WHERE ...`, bound to one table.
    fn filter(sql_where: &str) -> Expr {
        let Ok(Plan::Select(s)) = parse(&format!("SELECT * FROM a.t WHERE {sql_where}")) else {
            panic!("{sql_where}")
        };
        s.filter.unwrap()
    }

    fn cx() -> Ctx<'static> {
        Ctx {
            row: &[],
            aggs: &[],
            now_ms: 0,
        }
    }

    #[test]
    fn where_clauses_become_index_conditions_only_when_exact() {
        let f = filter("id = 3 AND score BETWEEN 1 AND 2");
        let (conds, exact) = pushdown(&conjuncts(&f), 0, &cx());
        assert!(exact);
        assert_eq!(
            conds,
            vec![
                Condition::Leaf {
                    attribute: "id".into(),
                    comparator: Comparator::Equals,
                    value: json!(3)
                },
                Condition::Leaf {
                    attribute: "score".into(),
                    comparator: Comparator::Between,
                    value: json!([1, 2])
                },
            ]
        );
        // `5 < age` is `age > 5`; IN is an OR of equalities (primary-key gets for the key).
        let f = filter("5 < age AND id IN (1, 2)");
        let (conds, exact) = pushdown(&conjuncts(&f), 0, &cx());
        assert!(exact);
        assert!(matches!(
            &conds[0],
            Condition::Leaf {
                comparator: Comparator::GreaterThan,
                ..
            }
        ));
        assert!(
            matches!(&conds[1], Condition::Group { operator: Logic::Or, conditions } if conditions.len() == 2)
        );
        // != (null semantics differ), LIKE (case-insensitive) and column-to-column comparisons
        // stay with the evaluator; the rest still narrows.
        let f = filter("name != 'x' AND name LIKE 'a%' AND qty > id AND age >= 1");
        let (conds, exact) = pushdown(&conjuncts(&f), 0, &cx());
        assert!(!exact);
        assert_eq!(conds.len(), 1);
        // NULL never narrows (nothing equals it).
        let (conds, exact) = pushdown(&conjuncts(&filter("age = NULL")), 0, &cx());
        assert!(conds.is_empty() && !exact);
    }

    #[test]
    fn sorting_and_distinct_stop_at_the_memory_budget() {
        let rows = (0..10_000).map(|i| {
            let mut m = Map::new();
            m.insert("v".into(), json!(format!("value number {i}")));
            Ok((vec![json!(i)], m))
        });
        let order = vec![OrderKey {
            expr: Expr::Literal(Value::Null),
            descending: true,
        }];
        let e = finish(rows.clone(), false, &order, 0, None, 100_000).unwrap_err();
        assert!(e.message().contains("SQL memory limit"), "{}", e.message());
        // With a LIMIT only the best rows are held: the same input fits.
        let top = finish(rows, false, &order, 0, Some(2), 100_000).unwrap();
        assert_eq!(top[0]["v"], "value number 9999");
        assert_eq!(top.len(), 2);
    }

    #[test]
    fn group_concat_joins_the_non_null_values_with_commas() {
        let spec = |distinct| AggSpec {
            agg: Agg::GroupConcat,
            arg: None,
            distinct,
        };
        let cases: &[(bool, &[Value], Value)] = &[
            (
                false,
                &[json!("a"), json!(null), json!(2), json!("a")],
                json!("a,2,a"),
            ),
            (
                true,
                &[json!("a"), json!(null), json!(2), json!("a")],
                json!("a,2"),
            ),
            (false, &[json!(1.5), json!(true)], json!("1.5,true")),
            // Only nulls (or no rows): null, as Harper's guide says.
            (false, &[json!(null)], json!(null)),
            (false, &[], json!(null)),
        ];
        for (distinct, values, want) in cases {
            let mut acc = Accum::new(&spec(*distinct));
            for v in values.iter() {
                acc.add(Some(v.clone()));
            }
            assert_eq!(&acc.value(), want, "{values:?} distinct={distinct}");
        }
    }
}
