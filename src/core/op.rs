//! The validated operations the core executes (everything that changes state).
//!
//! Built by `ops::parse` from request JSON; by the time one reaches the core every field has the
//! right type, names are checked and passwords are already hashed (hashing is slow on purpose and
//! must not stall the single writer thread).

use serde_json::{Map, Value};

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
        records: Vec<Map<String, Value>>,
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
    /// Node-local metadata (never replicated), committed in order with everything else.
    SetLocal {
        key: String,
        value: Option<Vec<u8>>,
    },
}
