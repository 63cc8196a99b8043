//! The receiving side of a full copy as a plain state machine: which frames are valid, which
//! rows and tables this node takes (link policies), what the core merges, the resume state
//! committed with every batch, and the version vector streaming resumes from afterwards.
//!
//! Driven like the core: [`CopyReceiver::step`] takes one decoded frame and answers with
//! [`CopyAction`]s that the session thread (`pull::receive_copy`) performs in order (core
//! inputs it waits on, an ack to the sender). Policies and limits come through [`CopyEnv`].
//! Unit tests and the session simulation (`repl::sim`) drive it without sockets.
//!
//! Must never: skip a row it was sent without a policy reason, move a cursor past what the
//! copied rows convey (a third-party origin a policy kept out keeps its cursor), or resume an
//! interrupted copy from a vector higher than the rows before the resume key came from.

use super::link::LinkFacts;
use super::wire::Frame;
use crate::core::{CopyRow, CopyTable};
use std::collections::HashMap;

/// What the copy reads of this node's configuration, for one database and one peer (besides
/// [`LinkFacts`]).
pub(crate) trait CopyEnv: LinkFacts {
    /// This node's policy takes `table` of the database from the peer.
    fn receives_table(&self, table: &str) -> bool;
    /// This node replicates database `db` at all.
    fn replicates_db(&self, db: &str) -> bool;
}

/// Persisted progress of a full copy of one database (node-local), so an interrupted copy
/// resumes where it stopped instead of starting again.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CopyState {
    pub peer: String,
    /// The version vector of the snapshot the copy started from: the anchor streaming resumes
    /// from afterwards, even if later attempts copy from newer snapshots (rows before the
    /// resume key came from this one).
    pub vector: Vec<(String, u64)>,
    pub table: String,
    /// Hex of the last committed primary key.
    pub key: String,
}

/// The node-local key a database's copy state is kept under.
pub(crate) fn state_key(db: &str) -> String {
    format!("copy:{db}")
}

/// What the session thread must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CopyAction {
    /// The copy's size as the sender announced it (statistics).
    Started { total: u64 },
    /// Create these databases if missing (core `EnsureDatabases`), and wait for the commit.
    EnsureDatabases(Vec<String>),
    /// Merge these rows (core `CopyRows`, with the resume state), and wait for the commit.
    /// An empty `rows` creates the table.
    Rows {
        table: CopyTable,
        rows: Vec<CopyRow>,
        state: (String, Vec<u8>),
    },
    /// Tell the sender this batch is in (bytes back keep its liveness check happy).
    Ack,
    /// The copy is complete: move the cursors to `vector` (core `CopyDone`).
    Done { vector: Vec<(String, u64)> },
}

/// Why a copy stops before its end.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CopyError {
    /// The peer sent something that fails validation: disconnect.
    Invalid(String),
    /// The copy cannot go on (the peer stopped it, frames out of order).
    Ended(String),
}

/// One full copy of one database from one peer.
pub(crate) struct CopyReceiver {
    peer: String,
    db: String,
    state: Option<CopyState>,
    schema: Option<CopyTable>,
    done: bool,
}

impl CopyReceiver {
    /// A copy that resumes after `previous` (None: from the start), and the request to send.
    pub(crate) fn start(
        peer: &str,
        db: &str,
        previous: Option<CopyState>,
    ) -> (CopyReceiver, Frame) {
        let (table, key) = previous
            .as_ref()
            .map(|s| (s.table.clone(), unhex(&s.key)))
            .unwrap_or_default();
        let r = CopyReceiver {
            peer: peer.to_string(),
            db: db.to_string(),
            state: previous,
            schema: None,
            done: false,
        };
        (r, Frame::CopyRequest { table, key })
    }

    /// Whether the copy reached its end (`CopyEnd`).
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Whether a copied row of `origin` may be taken from the peer: the peer's own rows (its
    /// link policy already limited the tables), and third-party rows only over a link that
    /// carries all of the database, from an origin this node replicates all of it with: a
    /// copy must not bypass an explicit link any more than relaying may.
    fn accepts(&self, env: &dyn CopyEnv, origin: &str) -> bool {
        origin == self.peer
            || origin == env.node_name()
            || (env.link_complete() && env.origin_complete(origin))
    }

    fn state_json(&self) -> Vec<u8> {
        self.state
            .as_ref()
            .map(|s| serde_json::to_vec(s).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Takes one frame of the copy.
    pub(crate) fn step(
        &mut self,
        frame: Frame,
        env: &dyn CopyEnv,
    ) -> Result<Vec<CopyAction>, CopyError> {
        let mut out = Vec::new();
        match frame {
            Frame::CopyStart {
                mut vector,
                mut databases,
                total,
            } => {
                out.push(CopyAction::Started { total });
                super::validate::vector(&vector, env.version_ceiling())
                    .and_then(|()| {
                        databases.iter().try_for_each(|d| {
                            crate::core::catalog::invalid_name("Database", d).map_or(Ok(()), Err)
                        })
                    })
                    .map_err(CopyError::Invalid)?;
                databases.retain(|d| env.replicates_db(d));
                if !databases.is_empty() {
                    out.push(CopyAction::EnsureDatabases(databases));
                }
                // A copy conveys an origin's transactions only through rows: for a
                // third-party origin the link policies may have kept some out (see
                // `accepts`), and then its cursor must not move.
                vector.retain(|(o, _)| {
                    *o == self.peer || (env.link_complete() && env.origin_complete(o))
                });
                self.state = Some(match self.state.take() {
                    None => CopyState {
                        peer: self.peer.clone(),
                        vector,
                        table: String::new(),
                        key: String::new(),
                    },
                    // Resuming: rows before the resume key came from an older snapshot (maybe
                    // another peer's). The anchor is, per origin, the smaller version of both
                    // snapshots: every transaction above it is streamed again afterwards
                    // (duplicates are skipped), none is skipped.
                    Some(mut old) => {
                        let new: HashMap<String, u64> = vector.into_iter().collect();
                        old.vector = old
                            .vector
                            .into_iter()
                            .filter_map(|(o, v)| new.get(&o).map(|n| (o, v.min(*n))))
                            .collect();
                        old.peer = self.peer.clone();
                        old
                    }
                });
            }
            Frame::CopyTable {
                table,
                pk_attr,
                schema_defined,
                attributes,
                expiration,
            } => {
                super::validate::copy_table(&self.db, &table, &pk_attr, &attributes)
                    .map_err(CopyError::Invalid)?;
                let sc = CopyTable {
                    name: table,
                    pk_attr,
                    attributes,
                    schema_defined,
                    expiration,
                };
                // Create the table now: an empty table sends no rows, and its creation lies
                // below the vector streaming resumes from.
                if env.receives_table(&sc.name) {
                    out.push(CopyAction::Rows {
                        table: sc.clone(),
                        rows: Vec::new(),
                        state: (state_key(&self.db), self.state_json()),
                    });
                }
                self.schema = Some(sc);
            }
            Frame::CopyRows { table, rows } => {
                super::validate::copy_rows(&rows, env.version_ceiling())
                    .map_err(CopyError::Invalid)?;
                let (Some(st), Some(sc)) = (self.state.as_mut(), self.schema.clone()) else {
                    return Err(CopyError::Ended("copy rows before their table".into()));
                };
                if sc.name != table || rows.is_empty() || !env.receives_table(&table) {
                    return Ok(out);
                }
                st.table = table;
                st.key = rows
                    .last()
                    .map(|r| crate::util::hex(&r.pk))
                    .unwrap_or_default();
                let rows: Vec<CopyRow> = rows
                    .into_iter()
                    .filter(|r| self.accepts(env, &r.origin))
                    .collect();
                out.push(CopyAction::Rows {
                    table: sc,
                    rows,
                    state: (state_key(&self.db), self.state_json()),
                });
                out.push(CopyAction::Ack);
            }
            Frame::CopyEnd => {
                let vector = self.state.take().map(|s| s.vector).unwrap_or_default();
                log::debug!(
                    "full copy of {} from {} ends at vector {vector:?}",
                    self.db,
                    self.peer
                );
                self.done = true;
                out.push(CopyAction::Done { vector });
            }
            Frame::Error { reason } => {
                return Err(CopyError::Ended(format!("peer stopped the copy: {reason}")))
            }
            _ => {}
        }
        Ok(out)
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Env {
        link_complete: bool,
        refused_table: Option<&'static str>,
    }

    impl LinkFacts for Env {
        fn node_name(&self) -> &str {
            "me"
        }
        fn link_complete(&self) -> bool {
            self.link_complete
        }
        fn origin_complete(&self, origin: &str) -> bool {
            origin != "partial"
        }
        fn version_ceiling(&self) -> u64 {
            1_000
        }
    }

    impl CopyEnv for Env {
        fn receives_table(&self, table: &str) -> bool {
            self.refused_table != Some(table)
        }
        fn replicates_db(&self, db: &str) -> bool {
            db != "private"
        }
    }

    fn env() -> Env {
        Env {
            link_complete: true,
            refused_table: None,
        }
    }

    fn start(vector: &[(&str, u64)]) -> Frame {
        Frame::CopyStart {
            vector: vector.iter().map(|(o, v)| (o.to_string(), *v)).collect(),
            databases: vec!["dev".into(), "private".into()],
            total: 3,
        }
    }

    fn table(name: &str) -> Frame {
        Frame::CopyTable {
            table: name.into(),
            pk_attr: "id".into(),
            schema_defined: false,
            attributes: Vec::new(),
            expiration: None,
        }
    }

    fn rows(name: &str, rows: &[(u8, &str)]) -> Frame {
        Frame::CopyRows {
            table: name.into(),
            rows: rows
                .iter()
                .map(|(pk, o)| CopyRow {
                    pk: crate::store::keys::encode_pk(&serde_json::json!(*pk)).unwrap_or_default(),
                    version: 5,
                    origin: o.to_string(),
                    json: None,
                })
                .collect(),
        }
    }

    fn merged(actions: &[CopyAction]) -> Vec<(String, Vec<String>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                CopyAction::Rows { table, rows, .. } => Some((
                    table.name.clone(),
                    rows.iter().map(|r| r.origin.clone()).collect(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_copy_merges_its_rows_and_moves_cursors_only_for_origins_its_rows_convey() {
        let (mut c, req) = CopyReceiver::start("p", "dev", None);
        assert_eq!(
            req,
            Frame::CopyRequest {
                table: String::new(),
                key: Vec::new()
            }
        );
        let a = c
            .step(start(&[("p", 9), ("q", 8), ("partial", 7)]), &env())
            .unwrap();
        assert_eq!(a[1], CopyAction::EnsureDatabases(vec!["dev".into()]));
        let a = c.step(table("dog"), &env()).unwrap();
        assert_eq!(merged(&a), vec![("dog".to_string(), Vec::new())]);
        let a = c
            .step(
                rows("dog", &[(1, "p"), (2, "q"), (3, "partial"), (4, "me")]),
                &env(),
            )
            .unwrap();
        assert_eq!(
            merged(&a),
            vec![("dog".to_string(), vec!["p".into(), "q".into(), "me".into()])]
        );
        assert_eq!(a.last(), Some(&CopyAction::Ack));
        let a = c.step(Frame::CopyEnd, &env()).unwrap();
        assert_eq!(
            a,
            vec![CopyAction::Done {
                vector: vec![("p".into(), 9), ("q".into(), 8)]
            }]
        );
        assert!(c.is_done());
    }

    #[test]
    fn over_a_partial_link_only_the_peers_own_rows_and_cursor_are_taken() {
        let e = Env {
            link_complete: false,
            refused_table: Some("secret"),
        };
        let (mut c, _) = CopyReceiver::start("p", "dev", None);
        c.step(start(&[("p", 9), ("q", 8)]), &e).unwrap();
        assert!(merged(&c.step(table("secret"), &e).unwrap()).is_empty());
        assert!(merged(&c.step(rows("secret", &[(1, "p")]), &e).unwrap()).is_empty());
        c.step(table("dog"), &e).unwrap();
        let a = c.step(rows("dog", &[(1, "p"), (2, "q")]), &e).unwrap();
        assert_eq!(merged(&a), vec![("dog".to_string(), vec!["p".into()])]);
        assert_eq!(
            c.step(Frame::CopyEnd, &e).unwrap(),
            vec![CopyAction::Done {
                vector: vec![("p".into(), 9)]
            }]
        );
    }

    #[test]
    fn a_resumed_copy_asks_after_its_key_and_keeps_the_lower_vector_of_both_snapshots() {
        let (mut c, _) = CopyReceiver::start("p", "dev", None);
        c.step(start(&[("p", 9), ("q", 8)]), &env()).unwrap();
        c.step(table("dog"), &env()).unwrap();
        let a = c.step(rows("dog", &[(1, "p"), (7, "q")]), &env()).unwrap();
        let Some(CopyAction::Rows { state, .. }) = a.first() else {
            panic!("{a:?}")
        };
        assert_eq!(state.0, "copy:dev");
        // Cut here; the committed state resumes the copy, from another peer's newer snapshot.
        let saved: CopyState = serde_json::from_slice(&state.1).unwrap();
        let (mut c, req) = CopyReceiver::start("r", "dev", Some(saved));
        assert_eq!(
            req,
            Frame::CopyRequest {
                table: "dog".into(),
                key: crate::store::keys::encode_pk(&serde_json::json!(7)).unwrap_or_default()
            }
        );
        c.step(start(&[("p", 20), ("q", 3), ("r", 11)]), &env())
            .unwrap();
        assert_eq!(
            c.step(Frame::CopyEnd, &env()).unwrap(),
            vec![CopyAction::Done {
                vector: vec![("p".into(), 9), ("q".into(), 3)]
            }]
        );
    }

    #[test]
    fn invalid_or_out_of_order_frames_stop_the_copy() {
        let (mut c, _) = CopyReceiver::start("p", "dev", None);
        assert!(matches!(
            c.step(start(&[("p", 5_000)]), &env()),
            Err(CopyError::Invalid(_))
        ));
        let (mut c, _) = CopyReceiver::start("p", "dev", None);
        c.step(start(&[("p", 9)]), &env()).unwrap();
        assert!(matches!(
            c.step(rows("dog", &[(1, "p")]), &env()),
            Err(CopyError::Ended(_))
        ));
        assert!(matches!(
            c.step(Frame::Error { reason: "x".into() }, &env()),
            Err(CopyError::Ended(_))
        ));
    }
}
