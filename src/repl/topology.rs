//! Who this node replicates with, and which origins each pull socket carries: a pure state
//! machine the manager thread drives (tested without sockets).
//!
//! Desired pull sockets = every member (other than this node) × every replicated database,
//! unless this node was removed from the cluster. Each pull socket to peer P carries P's own
//! transactions; when the socket to an origin X is down, X's transactions are requested from
//! the first live peer (by name) instead, and go back to the direct socket when it returns. A
//! stream of one origin is always a contiguous suffix, so moving an origin between sockets can
//! duplicate (harmless, skipped by version) but never skip.
//! Over a link that carries all of a database, a socket also asks for every origin the peer
//! holds that is not a member here (`Carry::relay_except`): with membership not shared (no
//! `system` stream), a star's leaves and a chain's ends only learn of each other's writes so.

use super::policy::LinkPolicy;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Reached over TLS (`wss://`).
    pub tls: bool,
}

/// What one pull socket asks its peer for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carry {
    /// Origins requested by name (the peer's own first, then members relayed while their own
    /// socket is down).
    pub origins: Vec<String>,
    /// Some: also every other origin the peer holds, except these (this node's members, which
    /// arrive by name). None: only `origins` (a link that does not carry all of the database).
    pub relay_except: Option<Vec<String>>,
}

impl Carry {
    /// Whether a received transaction of `origin` was asked for: listed, or relayed and not
    /// excluded (never this node's own origin, `self_name`).
    pub fn asked_for(&self, origin: &str, self_name: &str) -> bool {
        self.origins.iter().any(|o| o == origin)
            || (origin != self_name
                && self
                    .relay_except
                    .as_ref()
                    .is_some_and(|ex| !ex.iter().any(|o| o == origin)))
    }
}

#[derive(Debug, Default, Clone)]
pub struct Topology {
    pub self_name: String,
    pub members: BTreeMap<String, Member>,
    pub databases: BTreeSet<String>,
    /// This node was removed from the cluster: it replicates with nobody.
    pub removed: bool,
    /// Pull sessions that are up, by (peer, database).
    pub alive: BTreeSet<(String, String)>,
    /// Links that are not plain full replication (one-way, explicit subscriptions, off).
    pub policies: BTreeMap<String, LinkPolicy>,
}

impl Topology {
    pub fn new(self_name: &str) -> Self {
        Topology {
            self_name: self_name.to_string(),
            ..Default::default()
        }
    }

    /// The pull sockets that should exist: (peer, database) → member.
    pub fn desired(&self) -> BTreeMap<(String, String), Member> {
        let mut out = BTreeMap::new();
        if self.removed {
            return out;
        }
        for m in self.members.values() {
            if m.name == self.self_name {
                continue;
            }
            let policy = self.policy(&m.name);
            for db in &self.databases {
                if policy.receives_any(db) {
                    out.insert((m.name.clone(), db.clone()), m.clone());
                }
            }
        }
        out
    }

    fn policy(&self, peer: &str) -> LinkPolicy {
        self.policies.get(peer).cloned().unwrap_or_default()
    }

    fn complete_for(&self, peer: &str, db: &str) -> bool {
        self.policies.get(peer).is_none_or(|p| p.complete_for(db))
    }

    fn is_alive(&self, peer: &str, db: &str) -> bool {
        self.alive.contains(&(peer.to_string(), db.to_string()))
    }

    /// What the pull socket to `peer` for `db` carries: the listed origins (below) and, over a
    /// link that carries all of `db`, every other origin the peer holds except those this node
    /// gets from their own node (`relay_except`: members whose socket is up) and members it
    /// does not fully replicate with (never relayed). Membership need not be shared
    /// (`replication.databases` without `system`): a leaf of a star never hears of the other
    /// leaf, yet gets its writes through the hub; a member whose own socket is down comes
    /// from every full link that holds it, not only from the relay `origins` names (which may
    /// not hold it when membership differs between nodes).
    pub fn carry(&self, peer: &str, db: &str) -> Carry {
        // `system` (users, roles, membership) is only ever taken from origins that are members:
        // a member relaying rows of an origin this node does not know is how the takeover of
        // issue 7 came in. Wherever `system` replicates, membership is shared, so naming the
        // members is enough there; open relay is for the other databases (stars, chains).
        let open = db != crate::core::catalog::SYSTEM_DB && self.complete_for(peer, db);
        let relay_except = open.then(|| {
            self.members
                .keys()
                .filter(|m| {
                    *m != peer
                        && *m != &self.self_name
                        && (self.is_alive(m, db) || !self.complete_for(m, db))
                })
                .cloned()
                .collect()
        });
        Carry {
            origins: self.origins(peer, db),
            relay_except,
        }
    }

    /// Origins the pull socket to `peer` for `db` should request. Only links that carry all of
    /// `db` relay, and only origins this node replicates all of `db` with are relayed: explicit
    /// subscriptions and one-way links are never bypassed through a third node (for `system`,
    /// every link that is not off carries all of it; see `LinkPolicy::complete_for`).
    pub fn origins(&self, peer: &str, db: &str) -> Vec<String> {
        let mut out = vec![peer.to_string()];
        let relay = self
            .members
            .keys()
            .filter(|m| *m != &self.self_name && self.complete_for(m, db))
            .find(|m| self.is_alive(m, db));
        if relay.map(String::as_str) == Some(peer) {
            for m in self.members.keys() {
                if m != peer
                    && m != &self.self_name
                    && self.complete_for(m, db)
                    && !self.is_alive(m, db)
                {
                    out.push(m.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(self_name: &str, members: &[&str]) -> Topology {
        let mut t = Topology::new(self_name);
        for m in members {
            t.members.insert(
                m.to_string(),
                Member {
                    name: m.to_string(),
                    host: m.to_string(),
                    port: 9933,
                    tls: false,
                },
            );
        }
        t.databases.insert("system".into());
        t.databases.insert("dev".into());
        t
    }

    #[test]
    fn full_mesh_pulls_every_peer_for_every_database_but_not_itself() {
        let t = topo("a", &["a", "b", "c"]);
        let d: Vec<_> = t.desired().into_keys().collect();
        assert_eq!(d.len(), 4);
        assert!(!d.iter().any(|(p, _)| p == "a"));
    }

    #[test]
    fn explicit_links_are_neither_relays_nor_relayed() {
        let mut t = topo("a", &["a", "b", "c", "d"]);
        t.alive.insert(("b".into(), "dev".into()));
        t.policies.insert(
            "c".into(),
            LinkPolicy {
                sends: true,
                receives: false,
                ..LinkPolicy::default()
            },
        );
        // c is down-ish (not alive) but explicit: never relayed through b.
        assert_eq!(t.origins("b", "dev"), ["b", "d"]);
        // A one-way link that receives nothing has no pull socket for user databases.
        assert!(!t
            .desired()
            .contains_key(&("c".to_string(), "dev".to_string())));
        assert!(t
            .desired()
            .contains_key(&("c".to_string(), "system".to_string())));
    }

    #[test]
    fn system_is_relayed_over_and_for_explicit_links_that_are_not_off() {
        // The failure this pins: a node that joined over a subscription link never learnt of
        // members whose hdb_nodes row was last written by a third node.
        let mut t = topo("b", &["a", "b", "c", "d"]);
        t.alive.insert(("a".into(), "system".into()));
        t.alive.insert(("a".into(), "dev".into()));
        let subscriptions_only = LinkPolicy {
            subscriptions: Some(vec![]),
            ..LinkPolicy::default()
        };
        t.policies.insert("a".into(), subscriptions_only.clone());
        t.policies.insert("c".into(), subscriptions_only);
        t.policies.insert(
            "d".into(),
            LinkPolicy {
                sends: false,
                receives: false,
                ..LinkPolicy::default()
            },
        );
        // User data: the explicit link relays nothing.
        assert_eq!(t.origins("a", "dev"), ["a"]);
        // system: relayed through a (c is not alive), but never for the link that is off.
        assert_eq!(t.origins("a", "system"), ["a", "c"]);
    }

    #[test]
    fn full_links_also_ask_for_origins_that_are_not_members() {
        // The failure this pins: a leaf of a star (membership not shared) asked the hub only
        // for the hub's own writes, so the other leaf's never arrived.
        let mut t = topo("a", &["a", "b", "c", "d"]);
        t.alive.insert(("b".into(), "dev".into()));
        t.alive.insert(("d".into(), "dev".into()));
        let c = t.carry("b", "dev");
        assert_eq!(c.origins, ["b", "c"]);
        assert_eq!(c.relay_except, Some(vec!["d".to_string()]));
        assert!(
            c.asked_for("x", "a"),
            "an origin no member knows is relayed"
        );
        assert!(c.asked_for("c", "a"), "listed while c's own socket is down");
        assert!(!c.asked_for("d", "a"), "d comes over its own socket");
        assert!(!c.asked_for("a", "a"), "never this node's own writes");
        // `system` never takes an origin that is not a member, whoever relays it (issue 7:
        // forged users arrived under an unknown origin through a member).
        let sys = t.carry("b", "system");
        assert_eq!(sys.relay_except, None);
        assert!(
            !sys.asked_for("x", "a"),
            "an unknown origin's system rows were taken"
        );
        // Not the first live peer: c still comes from d, which may be the only one holding
        // it when b does not know c.
        let from_d = t.carry("d", "dev");
        assert_eq!(from_d.origins, ["d"]);
        assert!(from_d.asked_for("c", "a"));
        t.alive.insert(("c".into(), "dev".into()));
        assert!(
            !t.carry("b", "dev").asked_for("c", "a"),
            "c comes over its own socket"
        );
        // An explicit link relays nothing, and its peer is never relayed by a full link.
        t.policies.insert(
            "b".into(),
            LinkPolicy {
                subscriptions: Some(vec![]),
                ..LinkPolicy::default()
            },
        );
        assert_eq!(t.carry("b", "dev").relay_except, None);
        assert!(!t.carry("b", "dev").asked_for("x", "a"));
        t.alive.remove(&("b".to_string(), "dev".to_string()));
        assert!(!t.carry("d", "dev").asked_for("b", "a"));
    }

    #[test]
    fn removed_node_pulls_nothing() {
        let mut t = topo("a", &["a", "b"]);
        t.removed = true;
        assert!(t.desired().is_empty());
    }

    /// (alive pull sockets for "dev", peer asked about, expected origins)
    #[test]
    fn relay_table() {
        let cases: &[(&[&str], &str, &[&str])] = &[
            (&["b", "c"], "b", &["b"]),
            (&["b", "c"], "c", &["c"]),
            (&["b"], "b", &["b", "c"]),
            (&["c"], "c", &["c", "b"]),
            (&["c"], "b", &["b"]),
            (&[], "b", &["b"]),
        ];
        for (alive, peer, want) in cases {
            let mut t = topo("a", &["a", "b", "c"]);
            for p in alive.iter() {
                t.alive.insert((p.to_string(), "dev".into()));
            }
            assert_eq!(
                t.origins(peer, "dev"),
                want.to_vec(),
                "alive {alive:?} peer {peer}"
            );
        }
    }
}
