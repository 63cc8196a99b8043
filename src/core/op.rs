//! The validated operations the core executes (everything that changes state).
//!
//! Built by `ops::parse` from request JSON; by the time one reaches the core every field has the
//! right type, names are checked and passwords are already hashed (hashing is slow on purpose and
//! must not stall the single writer thread).

use serde_json::{Map, Value};

/// The records of one write request, kept as the JSON text they arrived in (one buffer and the
/// byte range of each record) instead of as parsed trees: a parsed record costs many times its
/// text (an entry, a key and a value allocation per attribute), and the request body would
/// otherwise be held twice. The core parses one record at a time when it applies them.
///
/// A writer that builds its records as values anyway (a CSV load types every cell) hands them
/// over parsed instead ([`RecordBatch::parsed`]): printing them as JSON only for the core to
/// parse them back cost the core thread, the bottleneck of a bulk load, a parse per record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordBatch(Records);

#[derive(Debug, Clone, PartialEq)]
enum Records {
    Text {
        text: Vec<u8>,
        spans: Vec<(u32, u32)>,
    },
    Parsed(Vec<Map<String, Value>>),
}

impl Default for RecordBatch {
    fn default() -> Self {
        RecordBatch(Records::Text {
            text: Vec::new(),
            spans: Vec::new(),
        })
    }
}

impl RecordBatch {
    /// Takes `text` and the byte ranges of the records in it. Every range must hold one JSON
    /// object (the HTTP layer checks this when it builds the batch).
    pub fn from_spans(text: Vec<u8>, spans: Vec<(u32, u32)>) -> Self {
        RecordBatch(Records::Text { text, spans })
    }

    /// A batch of already parsed records, kept as JSON text (tests, internal writers).
    pub fn from_maps(records: Vec<Map<String, Value>>) -> Self {
        let mut text = Vec::new();
        let mut spans = Vec::with_capacity(records.len());
        for r in records {
            let start = text.len() as u32;
            // A map of JSON values always serialises.
            let _ = serde_json::to_writer(&mut text, &r);
            spans.push((start, text.len() as u32));
        }
        RecordBatch(Records::Text { text, spans })
    }

    /// A batch of parsed records handed to the core as they are (bounded by the writer: a
    /// CSV load's batches are bounded in rows and bytes).
    pub fn parsed(records: Vec<Map<String, Value>>) -> Self {
        RecordBatch(Records::Parsed(records))
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Records::Text { spans, .. } => spans.len(),
            Records::Parsed(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of JSON text held (0 for parsed records: they are held parsed whatever happens).
    pub fn text_len(&self) -> usize {
        match &self.0 {
            Records::Text { text, .. } => text.len(),
            Records::Parsed(_) => 0,
        }
    }

    /// The JSON text of record `i` (empty for parsed records).
    pub fn raw(&self, i: usize) -> &[u8] {
        match &self.0 {
            Records::Text { text, spans } => match spans.get(i) {
                Some(&(a, b)) => text.get(a as usize..b as usize).unwrap_or_default(),
                None => &[],
            },
            Records::Parsed(_) => &[],
        }
    }

    /// Parses (or, for parsed records, copies) record `i`.
    pub fn parse(&self, i: usize) -> Result<Map<String, Value>, String> {
        match &self.0 {
            Records::Text { .. } => serde_json::from_slice(self.raw(i)).map_err(|e| e.to_string()),
            Records::Parsed(r) => r.get(i).cloned().ok_or_else(|| format!("no record {i}")),
        }
    }

    /// The parsed records, moved out, if the batch holds them parsed (the batch is left
    /// empty); None for JSON text.
    pub fn take_parsed(&mut self) -> Option<Vec<Map<String, Value>>> {
        match &mut self.0 {
            Records::Parsed(r) => Some(std::mem::take(r)),
            Records::Text { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Insert,
    Update,
    Upsert,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    CreateDatabase {
        database: String,
    },
    DropDatabase {
        database: String,
        replicated: bool,
    },
    CreateTable {
        database: String,
        table: String,
        primary_key: String,
        attributes: Vec<(String, Option<String>)>,
        schema_defined: bool,
        /// Harper's `expiration` option, seconds.
        expiration: Option<u64>,
    },
    /// The expiry sweep: removes these records of `table` on this node only (no audit entry,
    /// not replicated), each only if it is still expired when the core gets to it.
    Evict {
        database: String,
        table: String,
        pks: Vec<Vec<u8>>,
    },
    DropTable {
        database: String,
        table: String,
        replicated: bool,
    },
    CreateAttribute {
        database: String,
        table: String,
        attribute: String,
    },
    DropAttribute {
        database: String,
        table: String,
        attribute: String,
    },
    Records {
        kind: WriteKind,
        database: String,
        table: String,
        records: RecordBatch,
    },
    Delete {
        database: String,
        table: String,
        ids: Vec<Value>,
    },
    AddUser {
        username: String,
        password_hash: String,
        role: String,
        active: bool,
    },
    AlterUser {
        username: String,
        password_hash: Option<String>,
        role: Option<String>,
        active: Option<bool>,
    },
    DropUser {
        username: String,
    },
    AddRole {
        role: String,
        id: Option<String>,
        permission: Value,
    },
    AlterRole {
        id: String,
        role: Option<String>,
        permission: Option<Value>,
    },
    DropRole {
        id: String,
    },
    /// A write to a system table made by the node itself (membership rows, bootstrap).
    SystemPut {
        table: String,
        record: Map<String, Value>,
    },
    SystemDelete {
        table: String,
        key: Value,
    },
    /// One membership change (`add_node`, `add_node_back`, `remove_node`, ...): every row
    /// patch and node-local entry it makes, merged against the current rows inside the core
    /// and committed in one group commit, so two concurrent changes cannot lose each other's
    /// fields and a crash cannot keep half of one.
    Membership {
        changes: Vec<MemberChange>,
    },
    /// Node-local metadata (never replicated), committed in order with everything else.
    SetLocal {
        key: String,
        value: Option<Vec<u8>>,
    },
    /// Removes or rewrites entries of one database's audit log (`delete_audit_logs_before`).
    /// Each removed or rewritten entry raises its origin's low watermark, so a peer whose
    /// cursor is below it gets a full copy instead of a stream with a hole.
    TrimAudit {
        database: String,
        edits: Vec<AuditEdit>,
    },
}

/// One step of a [`WriteOp::Membership`] change.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberChange {
    /// Merges `fields` over the node's current `hdb_nodes` row (creating it with `if_new`
    /// added when there is none), and each array of `union` into the row's array of that
    /// name (values not already there appended); nothing is written when the row already
    /// says all that.
    PatchNode {
        name: String,
        fields: Map<String, Value>,
        if_new: Map<String, Value>,
        union: Map<String, Value>,
    },
    /// Deletes the node's `hdb_nodes` row (a tombstone that replicates), if it has one.
    DeleteNode { name: String },
    /// Sets (Some) or clears (None) a node-local entry.
    Local { key: String, value: Option<Vec<u8>> },
}

/// One audit entry to change: by node-local origin id and version; `ops` is the entry's new
/// encoded op list, or None to remove it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEdit {
    pub origin: u32,
    pub version: u64,
    pub ops: Option<Vec<u8>>,
}
