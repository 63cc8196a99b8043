//! The G1-G5 checker: every node's final state (after healing) against the client log.
//!
//! Owns the verdicts only; it reads the log and the final records and never talks to a node
//! (G1's digest and `cluster_verify` comparison is gathered by main and passed in). Versions
//! are Skerry's (`txn_time` of the answer, `__updatedtime__` of the record), so "later" means
//! a higher version, the rule last-writer-wins promises, not a later wall-clock time.

use crate::client::{value, Kind, OpRec};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The final records of one node, by key.
pub type State = BTreeMap<String, Value>;

#[derive(Default)]
pub struct Verdict {
    pub name: &'static str,
    pub what: &'static str,
    pub checked: usize,
    /// (key, why)
    pub violations: Vec<(String, String)>,
}

impl Verdict {
    fn new(name: &'static str, what: &'static str) -> Verdict {
        Verdict {
            name,
            what,
            ..Verdict::default()
        }
    }

    fn fail(&mut self, key: &str, why: String) {
        self.violations.push((key.to_string(), why));
    }

    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn keys(&self) -> BTreeSet<&str> {
        self.violations.iter().map(|(k, _)| k.as_str()).collect()
    }
}

fn version_of(rec: &Value) -> f64 {
    rec["__updatedtime__"].as_f64().unwrap_or(f64::NAN)
}

fn token_of(rec: &Value) -> &str {
    rec["w"].as_str().unwrap_or("")
}

fn short(rec: Option<&Value>) -> String {
    match rec {
        None => "absent".into(),
        Some(r) => format!("{}@{}", token_of(r), version_of(r)),
    }
}

/// G1 from the final dumps: every node holds exactly the same records. `digests` and
/// `verify` are the describe_table digests and the cluster_verify differing keys per node.
pub fn g1(
    states: &[State],
    names: &[String],
    digests: &[String],
    verify: &[(bool, Vec<String>)],
) -> Verdict {
    let mut v = Verdict::new("G1", "convergence: every node holds identical data");
    let keys: BTreeSet<&String> = states.iter().flat_map(|s| s.keys()).collect();
    v.checked = keys.len();
    for k in keys {
        let first = states[0].get(k);
        if states.iter().any(|s| s.get(k) != first) {
            let per: Vec<String> = states
                .iter()
                .zip(names)
                .map(|(s, n)| format!("{n}={}", short(s.get(k))))
                .collect();
            v.fail(k, format!("nodes differ: {}", per.join(", ")));
        }
    }
    if digests.iter().any(|d| d != &digests[0]) {
        let per: Vec<String> = digests
            .iter()
            .zip(names)
            .map(|(d, n)| format!("{n}={d}"))
            .collect();
        v.fail(
            "(digest)",
            format!("describe_table digests differ: {}", per.join(", ")),
        );
    }
    for ((matched, keys), n) in verify.iter().zip(names) {
        if !matched {
            v.fail(
                "(cluster_verify)",
                format!("cluster_verify on {n} reports a mismatch, differing keys: {keys:?}"),
            );
        }
    }
    v
}

struct KeyOps<'a> {
    ops: Vec<&'a OpRec>,
    /// The highest version of an acknowledged delete of the key (-inf if none), skipped or not.
    max_delete: f64,
    /// Some delete of the key may or may not have been applied.
    unknown_delete: bool,
}

fn by_key(ops: &[OpRec]) -> BTreeMap<&str, KeyOps<'_>> {
    let mut m: BTreeMap<&str, KeyOps> = BTreeMap::new();
    for o in ops {
        let k = m.entry(o.key.as_str()).or_insert_with(|| KeyOps {
            ops: Vec::new(),
            max_delete: f64::NEG_INFINITY,
            unknown_delete: false,
        });
        if o.kind == Kind::Delete {
            k.unknown_delete |= o.unknown();
            if let Some(t) = o.applied_version() {
                k.max_delete = k.max_delete.max(t);
            }
        }
        k.ops.push(o);
    }
    m
}

/// G2-G5 on one node's final state. Violations name the node.
pub fn per_node(ops: &[OpRec], state: &State, node: &str, out: &mut [Verdict; 4]) {
    let keys = by_key(ops);
    let tokens: BTreeMap<&str, &OpRec> = ops
        .iter()
        .filter_map(|o| o.token.as_deref().map(|t| (t, o)))
        .collect();
    let [g2, g3, g4, _g5] = out;
    for (key, ko) in &keys {
        let rec = state.get(*key);
        for o in &ko.ops {
            let Some(t_a) = o.applied_version() else {
                continue;
            };
            if o.kind.is_write() {
                g2.checked += 1;
                match rec {
                    Some(r) => {
                        let t_f = version_of(r);
                        if t_f.is_nan() || t_f < t_a {
                            g2.fail(
                                key,
                                format!(
                                    "{node}: acked {} {}@{t_a} lost: holds {}",
                                    o.kind.name(),
                                    o.token.as_deref().unwrap_or("?"),
                                    short(rec)
                                ),
                            );
                        }
                    }
                    None => {
                        // Absent is fine only if some delete may have come after it: an
                        // acknowledged one at a version at least as high, or one whose fate
                        // is unknown.
                        if !(ko.unknown_delete || ko.max_delete >= t_a) {
                            g2.fail(
                                key,
                                format!(
                                    "{node}: acked {} {}@{t_a} lost: the key is absent and no later delete exists",
                                    o.kind.name(),
                                    o.token.as_deref().unwrap_or("?")
                                ),
                            );
                        }
                    }
                }
            } else {
                g3.checked += 1;
                if let Some(r) = rec {
                    let t_f = version_of(r);
                    if t_f.is_nan() || t_f < t_a {
                        g3.fail(
                            key,
                            format!(
                                "{node}: acked delete @{t_a} by {} resurrected: holds {}",
                                o.client,
                                short(rec)
                            ),
                        );
                    }
                }
            }
        }
    }
    for (key, rec) in state {
        g4.checked += 1;
        let tok = token_of(rec);
        let Some(o) = tokens.get(tok) else {
            g4.fail(
                key,
                format!("{node}: phantom value: token {tok:?} was never written"),
            );
            continue;
        };
        if o.key != *key {
            g4.fail(
                key,
                format!("{node}: token {tok} was written to key {}, not here", o.key),
            );
            continue;
        }
        if o.acked_effective().is_none() && !o.unknown() {
            g4.fail(
                key,
                format!(
                    "{node}: value {tok} comes from a write that was {:?}",
                    o.outcome
                ),
            );
            continue;
        }
        let mut fields = rec.clone();
        if let Some(m) = fields.as_object_mut() {
            m.remove("__createdtime__");
            m.remove("__updatedtime__");
        }
        if fields != value(key, tok) {
            g4.fail(key, format!("{node}: torn value for token {tok}: {fields}"));
            continue;
        }
        if let Some(t_a) = o.acked_effective() {
            if version_of(rec) != t_a {
                g4.fail(
                    key,
                    format!(
                        "{node}: {tok} was acknowledged at version {t_a} but is stored at {}",
                        version_of(rec)
                    ),
                );
            }
        }
    }
}

/// G5: for keys written concurrently (acknowledged writes on different nodes whose request
/// intervals overlap), every node holds the same winner, and it is the highest version.
pub fn g5(ops: &[OpRec], states: &[State], names: &[String]) -> (Verdict, usize) {
    let mut v = Verdict::new(
        "G5",
        "one deterministic winner on every node for concurrent writes",
    );
    let keys = by_key(ops);
    let mut contended = 0;
    for (key, ko) in &keys {
        let acked: Vec<&&OpRec> = ko
            .ops
            .iter()
            .filter(|o| o.applied_version().is_some())
            .collect();
        // Sweep the acknowledged writes by start time: a pair overlaps when the later one
        // starts before the earlier one ends.
        let mut writes: Vec<&OpRec> = acked
            .iter()
            .filter(|o| o.kind.is_write())
            .map(|o| **o)
            .collect();
        writes.sort_by_key(|o| o.start_ms);
        let concurrent = writes.iter().enumerate().any(|(i, a)| {
            writes[i + 1..]
                .iter()
                .take_while(|b| b.start_ms <= a.end_ms)
                .any(|b| a.node != b.node)
        });
        if !concurrent {
            continue;
        }
        contended += 1;
        v.checked += 1;
        let first = states[0].get(*key);
        if states.iter().any(|s| s.get(*key) != first) {
            let per: Vec<String> = states
                .iter()
                .zip(names)
                .map(|(s, n)| format!("{n}={}", short(s.get(*key))))
                .collect();
            v.fail(key, format!("different winners: {}", per.join(", ")));
            continue;
        }
        // The winner is at least as new as every acknowledged operation of the key.
        let max = acked
            .iter()
            .filter_map(|o| o.applied_version())
            .fold(f64::NEG_INFINITY, f64::max);
        if let Some(r) = first {
            if version_of(r) < max {
                v.fail(
                    key,
                    format!(
                        "winner {} is older than an acked operation @{max}",
                        short(first)
                    ),
                );
            }
        }
    }
    (v, contended)
}

/// G6: versions never go backwards on a node: a write acknowledged by a node before another
/// write was sent to that node (real-time order, by the driver's clock, which the nodes' test
/// clock offsets do not touch) has the lower version, across kill -9 restarts and restarts with
/// the clock stepped back. Sweep per node: requests by start time, the highest version among
/// those already answered before each start.
pub fn g6(ops: &[OpRec], nodes: usize) -> Verdict {
    let mut v = Verdict::new("G6", "versions never go backwards on a node");
    for node in 0..nodes {
        let mut acked: Vec<(&OpRec, f64)> = ops
            .iter()
            .filter(|o| o.node == node)
            .filter_map(|o| o.applied_version().map(|ver| (o, ver)))
            .collect();
        v.checked += acked.len();
        let mut by_end = acked.clone();
        by_end.sort_by_key(|(o, _)| o.end_ms);
        acked.sort_by_key(|(o, _)| o.start_ms);
        let (mut i, mut max): (usize, Option<(f64, &OpRec)>) = (0, None);
        for (o, ver) in &acked {
            while i < by_end.len() && by_end[i].0.end_ms < o.start_ms {
                if max.is_none_or(|(m, _)| by_end[i].1 > m) {
                    max = Some((by_end[i].1, by_end[i].0));
                }
                i += 1;
            }
            if let Some((m, before)) = max {
                if *ver < m {
                    v.fail(
                        &o.key,
                        format!(
                            "n{node} gave version {ver} to a write sent at {} ms, after it had acknowledged {} ({}) at {m}",
                            o.start_ms, before.key, before.client
                        ),
                    );
                }
            }
        }
    }
    v
}

pub fn new_verdicts() -> [Verdict; 4] {
    [
        Verdict::new("G2", "no acknowledged write lost"),
        Verdict::new("G3", "no resurrection of an acknowledged delete"),
        Verdict::new("G4", "no torn or phantom values"),
        Verdict::new("G5", "(unused slot)"),
    ]
}

#[cfg(test)]
mod tests {
    //! The checker on hand-made histories: each guarantee must fail on the history that breaks
    //! it (scripts/chaos.sh runs these before every chaos run).
    use super::*;
    use crate::client::Outcome;

    fn op(client: &str, kind: Kind, key: &str, node: usize, token: Option<&str>, t: f64) -> OpRec {
        OpRec {
            client: client.into(),
            kind,
            key: key.into(),
            node,
            token: token.map(str::to_string),
            start_ms: t as u64,
            end_ms: t as u64 + 5,
            outcome: Outcome::Acked {
                effective: true,
                version: Some(t),
            },
        }
    }

    fn rec(key: &str, token: &str, t: f64) -> Value {
        let mut v = value(key, token);
        v["__createdtime__"] = t.into();
        v["__updatedtime__"] = t.into();
        v
    }

    fn state(recs: &[Value]) -> State {
        recs.iter()
            .map(|r| (r["id"].as_str().unwrap().to_string(), r.clone()))
            .collect()
    }

    #[test]
    fn g6_fails_when_a_node_gives_a_later_write_a_lower_version() {
        // Acked at 1,000 with version 1000.0; a write sent later (2,000) got 900.0: the node's
        // clock went back and its versions with it.
        let ok = [
            op("a", Kind::Upsert, "k1", 0, Some("t1"), 1000.0),
            op("a", Kind::Upsert, "k2", 0, Some("t2"), 2000.0),
        ];
        assert!(g6(&ok, 1).ok());
        let mut back = ok.clone();
        back[1].outcome = Outcome::Acked {
            effective: true,
            version: Some(900.0),
        };
        let v = g6(&back, 1);
        assert!(!v.ok());
        assert_eq!(v.keys().into_iter().collect::<Vec<_>>(), vec!["k2"]);
        // Overlapping requests may commit in either order: not a violation.
        let mut overlap = back.clone();
        overlap[1].start_ms = 1002;
        assert!(g6(&overlap, 1).ok());
        // Another node's versions are its own.
        let mut other = back.clone();
        other[1].node = 1;
        assert!(g6(&other, 2).ok());
    }

    fn verdicts(ops: &[OpRec], s: &State) -> [Verdict; 4] {
        let mut v = new_verdicts();
        per_node(ops, s, "n0", &mut v);
        v
    }

    #[test]
    fn a_history_that_keeps_every_guarantee_passes() {
        let ops = vec![
            op("c0", Kind::Upsert, "a", 0, Some("c0-1"), 100.0),
            op("c1", Kind::Upsert, "a", 1, Some("c1-1"), 101.0),
            op("c0", Kind::Upsert, "b", 0, Some("c0-2"), 102.0),
            op("c1", Kind::Delete, "b", 1, None, 103.0),
        ];
        let s = state(&[rec("a", "c1-1", 101.0)]);
        let v = verdicts(&ops, &s);
        assert!(v.iter().all(Verdict::ok), "{:?}", v[0].violations);
        let (g5, contended) = g5(&ops, &[s.clone(), s], &["n0".into(), "n1".into()]);
        assert!(g5.ok());
        assert_eq!(contended, 1);
    }

    #[test]
    fn a_lost_acknowledged_write_fails_g2() {
        let ops = vec![
            op("c0", Kind::Upsert, "a", 0, Some("c0-1"), 100.0),
            op("c1", Kind::Upsert, "a", 1, Some("c1-1"), 101.0),
            op("c0", Kind::Upsert, "b", 0, Some("c0-2"), 102.0),
        ];
        // a went back to the older write, b vanished without a delete.
        let v = verdicts(&ops, &state(&[rec("a", "c0-1", 100.0)]));
        assert_eq!(v[0].keys().into_iter().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn a_resurrected_delete_fails_g3() {
        let ops = vec![
            op("c0", Kind::Upsert, "a", 0, Some("c0-1"), 100.0),
            op("c1", Kind::Delete, "a", 1, None, 101.0),
        ];
        let v = verdicts(&ops, &state(&[rec("a", "c0-1", 100.0)]));
        assert_eq!(v[1].keys().into_iter().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn a_skipped_delete_still_supersedes_an_older_write_and_must_not_be_undone() {
        // A delete of a key missing on its node writes a tombstone all the same (skipped in
        // the answer): a newer one supersedes an older acknowledged write elsewhere, and the
        // older write must not come back over it.
        let mut del = op("c1", Kind::Delete, "a", 1, None, 101.0);
        del.outcome = Outcome::Acked {
            effective: false,
            version: Some(101.0),
        };
        let ops = vec![op("c0", Kind::Upsert, "a", 0, Some("c0-1"), 100.0), del];
        let v = verdicts(&ops, &state(&[]));
        assert!(v[0].ok() && v[1].ok(), "{:?}", v[0].violations);
        let v = verdicts(&ops, &state(&[rec("a", "c0-1", 100.0)]));
        assert_eq!(v[1].keys().into_iter().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn torn_and_phantom_values_fail_g4() {
        let ops = vec![
            op("c0", Kind::Upsert, "a", 0, Some("c0-1"), 100.0),
            op("c0", Kind::Upsert, "b", 0, Some("c0-2"), 101.0),
        ];
        let mut torn = rec("a", "c0-1", 100.0);
        torn["pad"] = "c0-2c0-2".into();
        let phantom = rec("c", "nobody-1", 102.0);
        let v = verdicts(&ops, &state(&[torn, rec("b", "c0-2", 101.0), phantom]));
        assert_eq!(v[2].keys().into_iter().collect::<Vec<_>>(), ["a", "c"]);
    }

    #[test]
    fn different_winners_fail_g1_and_g5() {
        let ops = vec![
            op("c0", Kind::Upsert, "a", 0, Some("c0-1"), 100.0),
            op("c1", Kind::Upsert, "a", 1, Some("c1-1"), 100.0),
        ];
        let s0 = state(&[rec("a", "c0-1", 100.0)]);
        let s1 = state(&[rec("a", "c1-1", 100.0)]);
        let names = ["n0".to_string(), "n1".to_string()];
        let g1 = g1(
            &[s0.clone(), s1.clone()],
            &names,
            &["x".into(), "x".into()],
            &[(true, vec![]), (true, vec![])],
        );
        assert_eq!(g1.keys().into_iter().collect::<Vec<_>>(), ["a"]);
        let (g5, _) = g5(&ops, &[s0, s1], &names);
        assert_eq!(g5.keys().into_iter().collect::<Vec<_>>(), ["a"]);
    }
}
