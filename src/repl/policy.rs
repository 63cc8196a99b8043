//! What flows over the link with one peer: full replication (the default), one direction only
//! (`replicates: {sends, receives}`), or explicit per-table subscriptions (`subscriptions:
//! [{database, table, subscribe, publish}]`, Harper's legacy form). A policy is this node's own
//! view of one link and is node-local: `add_node`/`update_node` store it here and send the
//! mirrored policy to the peer (subscribe ⇄ publish), never in the replicated `hdb_nodes` rows,
//! where a pairwise setting would leak to every other node (Harper's failure, harper-spec §8).
//!
//! It is enforced at three points: what this node asks a peer for (`receives_table`), what it
//! sends a peer (`sends_table`), and what it accepts from a peer (`receives_table` again, on
//! arrival). The `system` database always flows both ways unless the link is off entirely:
//! membership and users must reach every member.

use crate::core::catalog::SYSTEM_DB;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSub {
    pub database: String,
    pub table: String,
    /// This node receives the peer's writes of the table.
    pub subscribe: bool,
    /// This node sends its writes of the table to the peer.
    pub publish: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPolicy {
    pub sends: bool,
    pub receives: bool,
    /// Explicit subscriptions replace full replication of user databases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<Vec<TableSub>>,
    /// `start_time` of add_node (epoch ms): with no data from the peer yet, its user-database
    /// transactions are streamed from this time instead of copied whole. Node-local like the
    /// rest of the policy (in the replicated hdb_nodes rows a newer row of the other side
    /// overwrote it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
}

impl Default for LinkPolicy {
    fn default() -> Self {
        LinkPolicy {
            sends: true,
            receives: true,
            subscriptions: None,
            start_time: None,
        }
    }
}

impl LinkPolicy {
    /// Full two-way replication of everything: the only kind of link that may relay other
    /// origins or carry them in a full copy. A link with a start_time is not full: this node
    /// holds the peer's transactions only from that time, so it cannot vouch for the rest.
    pub fn is_full(&self) -> bool {
        self.sends && self.receives && self.subscriptions.is_none() && self.start_time.is_none()
    }

    /// Whether this link carries everything of `db` both ways, so this node holds the peer's
    /// complete log of `db` and may relay or copy third-party origins of `db` over it. User
    /// databases: only a full link. `system` (users, roles, membership) flows whole over every
    /// link that is not off, whatever its subscriptions or start_time; without this a member
    /// that joined over an explicit link never learnt of members whose `hdb_nodes` row was
    /// last written by a third node, and the mesh stayed incomplete.
    pub fn complete_for(&self, db: &str) -> bool {
        if db == SYSTEM_DB {
            !self.is_off()
        } else {
            self.is_full()
        }
    }

    /// Whether there is anything to store (a default policy is not stored).
    pub fn is_default(&self) -> bool {
        self.is_full()
    }

    pub fn is_off(&self) -> bool {
        !self.sends && !self.receives
    }

    pub fn receives_table(&self, db: &str, table: &str) -> bool {
        self.allows_table(db, table, self.receives, |s| s.subscribe)
    }

    pub fn sends_table(&self, db: &str, table: &str) -> bool {
        self.allows_table(db, table, self.sends, |s| s.publish)
    }

    /// One direction of the link for one table: `direction` is that direction's switch,
    /// `listed` whether a subscription entry opens it. `system` always flows on a live link
    /// (users, roles and membership must reach every member).
    fn allows_table(
        &self,
        db: &str,
        table: &str,
        direction: bool,
        listed: impl Fn(&TableSub) -> bool,
    ) -> bool {
        if self.is_off() {
            return false;
        }
        if db == SYSTEM_DB {
            return true;
        }
        match &self.subscriptions {
            Some(subs) => {
                direction
                    && subs
                        .iter()
                        .any(|s| s.database == db && s.table == table && listed(s))
            }
            None => direction,
        }
    }

    /// Whether this policy receives something from the peer that `old` did not: a table newly
    /// subscribed, the receiving direction switched on, explicit subscriptions dropped for full
    /// replication, or a start time removed or moved earlier. The peer's writes to the newly
    /// covered tables were skipped while the old policy held (their cursor moved on), so a
    /// widened link needs a full copy from the peer to bring them.
    pub fn widens(&self, old: &LinkPolicy) -> bool {
        if !self.receives || self.is_off() {
            return false;
        }
        if !old.receives || old.is_off() {
            return true;
        }
        let start_earlier = match (old.start_time, self.start_time) {
            (Some(_), None) => true,
            (Some(o), Some(n)) => n < o,
            _ => false,
        };
        if start_earlier {
            return true;
        }
        match (&old.subscriptions, &self.subscriptions) {
            (Some(_), None) => true,
            (Some(o), Some(n)) => n.iter().filter(|s| s.subscribe).any(|s| {
                !o.iter()
                    .any(|x| x.subscribe && x.database == s.database && x.table == s.table)
            }),
            _ => false,
        }
    }

    /// Whether anything of `db` comes from the peer (a pull socket is worth opening).
    pub fn receives_any(&self, db: &str) -> bool {
        if self.is_off() {
            return false;
        }
        if db == SYSTEM_DB {
            return true;
        }
        match &self.subscriptions {
            Some(subs) => self.receives && subs.iter().any(|s| s.database == db && s.subscribe),
            None => self.receives,
        }
    }

    /// Whether anything of `db` goes to the peer (it should have a pull socket to us).
    pub fn sends_any(&self, db: &str) -> bool {
        self.mirrored().receives_any(db)
    }

    /// Tables of `db` to ask the peer for; None = all.
    pub fn receive_filter(&self, db: &str) -> Option<Vec<String>> {
        if db == SYSTEM_DB {
            return None;
        }
        self.subscriptions.as_ref().map(|subs| {
            subs.iter()
                .filter(|s| s.database == db && s.subscribe)
                .map(|s| s.table.clone())
                .collect()
        })
    }

    /// The policy as the peer sees the same link.
    pub fn mirrored(&self) -> LinkPolicy {
        LinkPolicy {
            sends: self.receives,
            receives: self.sends,
            subscriptions: self.subscriptions.as_ref().map(|subs| {
                subs.iter()
                    .map(|s| TableSub {
                        database: s.database.clone(),
                        table: s.table.clone(),
                        subscribe: s.publish,
                        publish: s.subscribe,
                    })
                    .collect()
            }),
            start_time: self.start_time,
        }
    }

    /// Merges subscriptions by (database, table): matching entries are replaced, new ones
    /// appended (Harper's update_node).
    pub fn merge_subscriptions(&mut self, new: Vec<TableSub>) {
        let subs = self.subscriptions.get_or_insert_with(Vec::new);
        for n in new {
            match subs
                .iter_mut()
                .find(|s| s.database == n.database && s.table == n.table)
            {
                Some(s) => *s = n,
                None => subs.push(n),
            }
        }
    }

    /// `replicates` as cluster_status shows it.
    pub fn replicates_value(&self) -> Value {
        if self.subscriptions.is_some() {
            // Harper: explicit subscriptions mean "not full replication".
            json!(false)
        } else if self.sends && self.receives {
            json!(true)
        } else if self.is_off() {
            json!(false)
        } else {
            json!({"sends": self.sends, "receives": self.receives})
        }
    }

    pub fn subscriptions_value(&self) -> Value {
        match &self.subscriptions {
            None => Value::Null,
            Some(subs) => serde_json::to_value(subs).unwrap_or(Value::Null),
        }
    }
}

/// Parses `subscriptions` (array of `{database|schema, table, subscribe, publish}`); errors name
/// the field (`'subscriptions[1].publish' must be a boolean`).
pub fn parse_subscriptions(v: &Value, field: &str) -> Result<Vec<TableSub>, String> {
    let Value::Array(items) = v else {
        return Err(format!("'{field}' must be an array"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |k: &str| format!("{field}[{i}].{k}");
            let Value::Object(o) = item else {
                return Err(format!("'{field}[{i}]' must be an object"));
            };
            let s = |keys: &[&str], name: &str| -> Result<String, String> {
                match keys.iter().find_map(|k| o.get(*k)) {
                    Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                    Some(Value::String(_)) | None | Some(Value::Null) => {
                        Err(format!("'{}' is required", at(name)))
                    }
                    Some(_) => Err(format!("'{}' must be a string", at(name))),
                }
            };
            let b = |k: &str| -> Result<bool, String> {
                match o.get(k) {
                    Some(Value::Bool(b)) => Ok(*b),
                    None | Some(Value::Null) => Err(format!("'{}' is required", at(k))),
                    Some(_) => Err(format!("'{}' must be a boolean", at(k))),
                }
            };
            Ok(TableSub {
                database: s(&["database", "schema"], "database")?,
                table: s(&["table"], "table")?,
                subscribe: b("subscribe")?,
                publish: b("publish")?,
            })
        })
        .collect()
}

/// Parses `replicates`: `true`, `false` or `{sends, receives}`.
pub fn parse_replicates(v: &Value, field: &str) -> Result<(bool, bool), String> {
    match v {
        Value::Bool(b) => Ok((*b, *b)),
        Value::Object(o) => {
            let get = |k: &str| match o.get(k) {
                None | Some(Value::Null) => Ok(true),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(format!("'{field}.{k}' must be a boolean")),
            };
            Ok((get("sends")?, get("receives")?))
        }
        _ => Err(format!(
            "'{field}' must be a boolean or an object with sends and receives"
        )),
    }
}

/// The policy a route entry or an add_node request describes (None when it says nothing).
pub fn policy_from_fields(
    o: &Map<String, Value>,
    prefix: &str,
) -> Result<Option<LinkPolicy>, String> {
    let field = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    let mut p = LinkPolicy::default();
    let mut said = false;
    if let Some(v) = o.get("replicates").filter(|v| !v.is_null()) {
        let (sends, receives) = parse_replicates(v, &field("replicates"))?;
        p.sends = sends;
        p.receives = receives;
        said = true;
    }
    if let Some(v) = o.get("subscriptions").filter(|v| !v.is_null()) {
        p.subscriptions = Some(parse_subscriptions(v, &field("subscriptions"))?);
        said = true;
    }
    Ok(said.then_some(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(list: &[(&str, &str, bool, bool)]) -> LinkPolicy {
        LinkPolicy {
            subscriptions: Some(
                list.iter()
                    .map(|(d, t, s, p)| TableSub {
                        database: d.to_string(),
                        table: t.to_string(),
                        subscribe: *s,
                        publish: *p,
                    })
                    .collect(),
            ),
            ..LinkPolicy::default()
        }
    }

    #[test]
    fn widening_is_any_newly_received_data() {
        let dog = subs(&[("dev", "dog", true, true)]);
        let dog_cat = subs(&[("dev", "dog", true, true), ("dev", "cat", true, false)]);
        let publish_only = subs(&[("dev", "dog", false, true)]);
        let full = LinkPolicy::default();
        let one_way_out = LinkPolicy {
            receives: false,
            ..LinkPolicy::default()
        };
        let since = |t| LinkPolicy {
            start_time: Some(t),
            ..LinkPolicy::default()
        };
        let cases = [
            ("subscriptions dropped", &full, &dog, true),
            ("table added", &dog_cat, &dog, true),
            ("publish-only to full", &full, &publish_only, true),
            ("receiving switched on", &full, &one_way_out, true),
            ("start time removed", &full, &since(100), true),
            ("start time earlier", &since(50), &since(100), true),
            ("table removed", &dog, &dog_cat, false),
            ("no change", &full, &full, false),
            ("now one-way out", &one_way_out, &full, false),
            ("start time later", &since(200), &since(100), false),
        ];
        for (case, new, old, want) in cases {
            assert_eq!(new.widens(old), want, "{case}");
        }
    }

    /// (policy, database, table, receives, sends)
    #[test]
    fn policy_table() {
        let one_way = LinkPolicy {
            sends: true,
            receives: false,
            ..LinkPolicy::default()
        };
        let off = LinkPolicy {
            sends: false,
            receives: false,
            ..LinkPolicy::default()
        };
        let cases = [
            (LinkPolicy::default(), "dev", "dog", true, true),
            (one_way.clone(), "dev", "dog", false, true),
            (one_way.clone(), "system", "hdb_nodes", true, true),
            (off.clone(), "system", "hdb_nodes", false, false),
            (
                subs(&[("dev", "dog", true, false)]),
                "dev",
                "dog",
                true,
                false,
            ),
            (
                subs(&[("dev", "dog", true, false)]),
                "dev",
                "cat",
                false,
                false,
            ),
            (
                subs(&[("dev", "dog", false, true)]),
                "dev",
                "dog",
                false,
                true,
            ),
            (
                subs(&[("dev", "dog", false, true)]),
                "system",
                "hdb_user",
                true,
                true,
            ),
        ];
        for (p, db, t, r, s) in cases {
            assert_eq!(
                (p.receives_table(db, t), p.sends_table(db, t)),
                (r, s),
                "{p:?} {db}.{t}"
            );
        }
        assert!(LinkPolicy::default().is_full());
        assert!(!one_way.is_full());
        assert!(!subs(&[]).is_full());
    }

    #[test]
    fn mirror_swaps_directions_and_merge_replaces_by_table() {
        let p = subs(&[("dev", "dog", true, false)]);
        let m = p.mirrored();
        assert!(m.sends_table("dev", "dog") && !m.receives_table("dev", "dog"));
        let mut q = p.clone();
        q.merge_subscriptions(vec![
            TableSub {
                database: "dev".into(),
                table: "dog".into(),
                subscribe: true,
                publish: true,
            },
            TableSub {
                database: "dev".into(),
                table: "cat".into(),
                subscribe: true,
                publish: false,
            },
        ]);
        let s = q.subscriptions.unwrap();
        assert_eq!(s.len(), 2);
        assert!(s[0].publish);
    }

    #[test]
    fn validation_names_the_field() {
        let bad =
            serde_json::json!([{"database":"dev","table":"dog","subscribe":"yes","publish":true}]);
        assert_eq!(
            parse_subscriptions(&bad, "subscriptions").unwrap_err(),
            "'subscriptions[0].subscribe' must be a boolean"
        );
        let missing = serde_json::json!([{"table":"dog","subscribe":true,"publish":true}]);
        assert_eq!(
            parse_subscriptions(&missing, "connections[2].subscriptions").unwrap_err(),
            "'connections[2].subscriptions[0].database' is required"
        );
        let legacy =
            serde_json::json!([{"schema":"dev","table":"dog","subscribe":true,"publish":false}]);
        assert_eq!(
            parse_subscriptions(&legacy, "s").unwrap()[0].database,
            "dev"
        );
        assert!(parse_replicates(&serde_json::json!({"sends": 1}), "replicates").is_err());
        assert_eq!(
            parse_replicates(&serde_json::json!({"sends": false}), "r").unwrap(),
            (false, true)
        );
    }
}
