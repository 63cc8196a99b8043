//! The sending side of a full copy as a plain state machine: which tables and rows a peer may
//! be sent (link policies on both), where a resumed copy starts, which origins the snapshot's
//! vector vouches for, and how rows are cut into frames.
//!
//! The session thread (`push::send_copy`) owns the snapshot and the socket: it scans the
//! tables and feeds each stored row to [`CopySender::row`], sending every frame it hands back.
//! Unit tests and the session simulation (`repl::sim`) feed it rows from memory.
//!
//! Must never: send a third-party row over a link that does not carry all of the database, or
//! from an origin this node does not hold completely (a copy must not bypass a link policy any
//! more than relaying may), vouch in the vector for an origin whose rows it does not send, or
//! skip a row silently (a row too large for a frame stops the copy with the reason).

use super::link::LinkFacts;
use super::sender::FRAME_TARGET;
use super::wire::{self, Frame};
use crate::core::catalog::TableDef;
use crate::store::record::StoredRecord;
use crate::store::Slice;
use std::collections::HashMap;

/// What the copy reads of this node's policies, for one database and one peer (besides
/// [`LinkFacts`]).
pub(crate) trait CopySendEnv: LinkFacts {
    /// This node's policy sends `table` of the database to the peer.
    fn sends_table(&self, table: &str) -> bool;
}

/// One encoded `CopyRows` frame and the number of rows in it.
pub(crate) type RowsFrame = (Vec<u8>, u64);

/// One full copy of one database to one peer.
pub(crate) struct CopySender {
    db: String,
    from_table: String,
    from_key: Vec<u8>,
    max_frame: usize,
    budget: usize,
    /// Origin names by the ids stored rows carry.
    names: HashMap<u32, String>,
    table: String,
    rows: Vec<(Slice, Slice)>,
    bytes: usize,
}

impl CopySender {
    /// A copy of `db` resuming after (`from_table`, `from_key`) (empty: from the start).
    pub(crate) fn new(
        db: &str,
        from_table: &str,
        from_key: &[u8],
        max_frame: usize,
        names: HashMap<u32, String>,
    ) -> CopySender {
        CopySender {
            db: db.to_string(),
            from_table: from_table.to_string(),
            from_key: from_key.to_vec(),
            max_frame,
            budget: FRAME_TARGET.min(max_frame / 2),
            names,
            table: String::new(),
            rows: Vec::new(),
            bytes: 0,
        }
    }

    /// The origins of a snapshot's `vector` the copy vouches for: only those this node holds
    /// completely (itself, and origins it fully replicates with), whose rows are the ones sent.
    pub(crate) fn vouched(vector: Vec<(String, u64)>, env: &dyn CopySendEnv) -> Vec<(String, u64)> {
        vector
            .into_iter()
            .filter(|(o, _)| o == env.node_name() || env.origin_complete(o))
            .collect()
    }

    /// Whether a table takes part in this copy (replicated, sent by this link, not before the
    /// table a resumed copy starts at).
    pub(crate) fn sends(&self, name: &str, def: &TableDef, env: &dyn CopySendEnv) -> bool {
        def.replicate
            && (self.from_table.is_empty() || name >= self.from_table.as_str())
            && env.sends_table(name)
    }

    /// Starts a table: its schema frame, and the key to scan after (None: from its start).
    /// None when the table is not sent.
    pub(crate) fn begin_table(
        &mut self,
        name: &str,
        def: &TableDef,
        env: &dyn CopySendEnv,
    ) -> Option<(Frame, Option<Vec<u8>>)> {
        if !self.sends(name, def, env) {
            return None;
        }
        self.table = name.to_string();
        self.rows.clear();
        self.bytes = 0;
        let schema = Frame::CopyTable {
            table: name.to_string(),
            pk_attr: def.primary_key.clone(),
            schema_defined: def.schema_defined,
            expiration: def.expiration,
            attributes: def
                .attributes
                .iter()
                .filter(|a| a.name != def.primary_key || a.r#type.is_some())
                .map(|a| (a.name.clone(), a.r#type.clone()))
                .collect(),
        };
        let after =
            (name == self.from_table && !self.from_key.is_empty()).then(|| self.from_key.clone());
        Some((schema, after))
    }

    /// One stored row of the current table (key, stored entry): the frame of the rows before it
    /// when it does not fit with them, or an error when it fits in no frame at all.
    pub(crate) fn row(
        &mut self,
        key: Slice,
        value: Slice,
        env: &dyn CopySendEnv,
    ) -> Result<Option<RowsFrame>, String> {
        let size = key.len() + value.len() + 32;
        if size + 256 > self.max_frame {
            return Err(format!(
                "a record of {}.{} is {size} bytes, over replication.maxFrameSize",
                self.db, self.table
            ));
        }
        // Third-party rows go only over a full link, from origins this node fully replicates
        // with: a copy never bypasses an explicit link (sender side).
        let origin_ok = match StoredRecord::header(&value).and_then(|(_, o, _)| self.names.get(&o))
        {
            Some(o) => o == env.node_name() || (env.link_complete() && env.origin_complete(o)),
            None => true,
        };
        if !origin_ok {
            return Ok(None);
        }
        let full = if !self.rows.is_empty() && self.bytes + size > self.budget {
            self.flush()
        } else {
            None
        };
        self.bytes += size;
        self.rows.push((key, value));
        Ok(full)
    }

    /// The current table's last frame, if any rows are left.
    pub(crate) fn end_table(&mut self) -> Option<RowsFrame> {
        self.flush()
    }

    fn flush(&mut self) -> Option<RowsFrame> {
        if self.rows.is_empty() {
            return None;
        }
        let mut e = wire::start_copy_rows(&self.table, self.rows.len());
        for (k, v) in &self.rows {
            let (version, origin, deleted) = StoredRecord::header(v).unwrap_or((0, 0, true));
            let origin = self
                .names
                .get(&origin)
                .map(String::as_str)
                .unwrap_or_default();
            let json = if deleted {
                None
            } else {
                StoredRecord::json_slice(v)
            };
            wire::put_copy_row_parts(&mut e, k, version, origin, json);
        }
        let n = self.rows.len() as u64;
        self.rows.clear();
        self.bytes = 0;
        Some((e.buf, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::catalog::Catalog;

    struct Env {
        link_complete: bool,
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
            u64::MAX
        }
    }

    impl CopySendEnv for Env {
        fn sends_table(&self, table: &str) -> bool {
            table != "secret"
        }
    }

    fn table() -> TableDef {
        let mut c = Catalog::default();
        c.create_table(
            "dev",
            "dog",
            "id",
            &[("id".into(), Some("Int".into()))],
            true,
        );
        c.table("dev", "dog")
            .cloned()
            .unwrap_or_else(|| panic!("no table"))
    }

    fn stored(origin: u32, version: u64) -> Slice {
        Slice::from(
            StoredRecord {
                version,
                origin,
                json: Some(b"{\"id\":1}".to_vec()),
            }
            .encode(),
        )
    }

    fn names() -> HashMap<u32, String> {
        HashMap::from([(0, "me".into()), (1, "p".into()), (2, "partial".into())])
    }

    fn origins(frame: &RowsFrame) -> Vec<String> {
        match Frame::decode(&frame.0) {
            Ok(Frame::CopyRows { rows, .. }) => rows.into_iter().map(|r| r.origin).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rows_of_origins_a_link_does_not_carry_are_not_sent_and_not_vouched_for() {
        let e = Env {
            link_complete: true,
        };
        let mut c = CopySender::new("dev", "", &[], 1 << 20, names());
        let (schema, after) = c
            .begin_table("dog", &table(), &e)
            .unwrap_or_else(|| panic!());
        assert!(matches!(schema, Frame::CopyTable { ref attributes, .. } if attributes.len() == 1));
        assert_eq!(after, None);
        for (k, o) in [(1u8, 0), (2, 1), (3, 2)] {
            assert_eq!(c.row(Slice::from(vec![k]), stored(o, 5), &e), Ok(None));
        }
        assert_eq!(
            origins(&c.end_table().unwrap_or_else(|| panic!())),
            ["me", "p"]
        );
        let v = vec![("me".into(), 9), ("p".into(), 8), ("partial".into(), 7)];
        assert_eq!(
            CopySender::vouched(v, &e),
            vec![("me".into(), 9), ("p".into(), 8)]
        );
        // Over a partial link only this node's own rows go.
        let e = Env {
            link_complete: false,
        };
        let mut c = CopySender::new("dev", "", &[], 1 << 20, names());
        c.begin_table("dog", &table(), &e);
        c.row(Slice::from(vec![1]), stored(1, 5), &e).ok();
        c.row(Slice::from(vec![2]), stored(0, 5), &e).ok();
        assert_eq!(origins(&c.end_table().unwrap_or_else(|| panic!())), ["me"]);
    }

    #[test]
    fn a_resumed_copy_starts_at_its_table_and_key_and_skips_tables_not_sent() {
        let e = Env {
            link_complete: true,
        };
        let mut c = CopySender::new("dev", "dog", &[7], 1 << 20, names());
        let t = table();
        assert!(
            c.begin_table("cat", &t, &e).is_none(),
            "before the resume table"
        );
        assert!(
            c.begin_table("secret", &t, &e).is_none(),
            "a table the link does not send"
        );
        assert_eq!(
            c.begin_table("dog", &t, &e).map(|(_, a)| a),
            Some(Some(vec![7]))
        );
        assert_eq!(c.begin_table("eel", &t, &e).map(|(_, a)| a), Some(None));
    }

    #[test]
    fn frames_are_cut_by_size_and_a_row_too_large_for_any_frame_stops_the_copy() {
        let e = Env {
            link_complete: true,
        };
        let mut c = CopySender::new("dev", "", &[], 1_000, names());
        c.begin_table("dog", &table(), &e);
        let mut frames = 0;
        for k in 0..100u8 {
            if c.row(Slice::from(vec![k]), stored(0, 5), &e)
                .ok()
                .flatten()
                .is_some()
            {
                frames += 1;
            }
        }
        assert!(frames > 5, "{frames}");
        let big = Slice::from(vec![0u8; 900]);
        assert!(c.row(big, stored(0, 5), &e).is_err());
    }
}
