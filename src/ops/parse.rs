//! Request JSON → a validated [`Operation`]. The only place that looks at raw request fields:
//! everything after this works with typed values (ripgrep's LowArgs → HiArgs idea).

use super::fields::Fields;
use crate::core::error::OpError;
use crate::core::op::{RecordBatch, WriteKind, WriteOp};
use serde_json::{Map, Value};

/// Database used when a request names none (Harper's default).
pub const DEFAULT_DB: &str = "data";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    Equals,
    NotEqual,
    Contains,
    StartsWith,
    EndsWith,
    GreaterThan,
    GreaterThanEqual,
    LessThan,
    LessThanEqual,
    Between,
}

impl Comparator {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "equals" | "eq" | "=" | "==" => Comparator::Equals,
            "not_equal" | "ne" | "!=" => Comparator::NotEqual,
            "contains" => Comparator::Contains,
            "starts_with" => Comparator::StartsWith,
            "ends_with" => Comparator::EndsWith,
            "greater_than" | "gt" | ">" => Comparator::GreaterThan,
            "greater_than_equal" | "ge" | "gte" | ">=" => Comparator::GreaterThanEqual,
            "less_than" | "lt" | "<" => Comparator::LessThan,
            "less_than_equal" | "le" | "lte" | "<=" => Comparator::LessThanEqual,
            "between" => Comparator::Between,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logic {
    And,
    Or,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Leaf {
        attribute: String,
        comparator: Comparator,
        value: Value,
    },
    Group {
        operator: Logic,
        conditions: Vec<Condition>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sort {
    pub attribute: String,
    pub descending: bool,
    pub next: Option<Box<Sort>>,
}

/// Which attributes a read returns: `None` in a request means "the stored record as is".
pub type GetAttributes = Option<Vec<String>>;

#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    pub database: String,
    pub table: String,
    pub get_attributes: GetAttributes,
    pub limit: Option<u64>,
    pub offset: u64,
    pub sort: Option<Sort>,
    /// `search_by_value`'s `reverse`: walk the index (or the primary key) backwards; `offset`
    /// counts from that end.
    pub reverse: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Executed by the core thread. `details`: the client asked (`"write_details": true`) for
    /// the extras Harper 4.7 leaves out of a write's answer (`txn_time`, `new_attributes`).
    Write {
        op: WriteOp,
        details: bool,
        /// `replicatedConfirmation`: how many peers must commit the write before it is
        /// answered (record writes only; the HTTP layer also reads `X-Replicate-To`).
        confirm: Option<u64>,
        /// `replicated: true` on a schema operation (`drop_table`, `drop_database`,
        /// `create_table`, `create_attribute`): after it succeeds here, the HTTP layer runs it
        /// on every member that replicates the database (Harper's operation forwarding).
        forward: bool,
    },
    /// add_user/alter_user carry a clear-text password until the worker hashes it.
    AddUser {
        username: String,
        password: String,
        role: String,
        active: bool,
    },
    AlterUser {
        username: String,
        password: Option<String>,
        role: Option<String>,
        active: Option<bool>,
    },
    DescribeAll,
    DescribeDatabase {
        database: String,
    },
    DescribeTable {
        database: String,
        table: String,
    },
    SearchById {
        search: Search,
        ids: Vec<Value>,
    },
    SearchByValue {
        search: Search,
        attribute: String,
        value: Value,
    },
    SearchByConditions {
        search: Search,
        operator: Logic,
        conditions: Vec<Condition>,
    },
    /// Harper's `read_audit_log`: the committed transactions touching one table.
    ReadAuditLog {
        database: String,
        table: String,
        search: AuditSearch,
    },
    ListUsers,
    UserInfo,
    ListRoles,
    CreateAuthenticationTokens {
        username: Option<String>,
        password: Option<String>,
    },
    /// The refresh token from the body; None when the request authenticates with
    /// `Authorization: Bearer <refresh token>` instead (Harper accepts both).
    RefreshOperationToken {
        refresh_token: Option<String>,
    },
    /// Harper's `sql`: one statement, parsed and validated (`crate::sql`); each table it
    /// names is authorised when it runs.
    Sql(crate::sql::parse::Plan),
}

/// How `read_audit_log` selects entries.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditSearch {
    All,
    /// Versions between two epoch-millisecond times (inclusive).
    Timestamp(f64, f64),
    /// Entries made by these users, grouped by user.
    Username(Vec<String>),
    /// Entries writing these primary keys, grouped by key.
    HashValue(Vec<Value>),
}

/// What a principal must hold to run an operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    /// Any authenticated user.
    Authenticated,
    /// Super users only; the string is Harper's internal handler name for the 403 message.
    SuperUser(&'static str),
    /// Schema changes: super users or a `structure_user` role for that database (handler name,
    /// operation name, database).
    Structure(&'static str, &'static str, String),
    /// Creating or dropping a database: super users or `structure_user: true`.
    StructureAll(&'static str),
    /// Table permissions (all of them are needed: upsert needs insert and update).
    Table(String, String, Vec<crate::core::auth::TablePerm>),
}

impl Operation {
    pub fn requirement(&self) -> Requirement {
        use crate::core::auth::TablePerm::*;
        use Requirement::*;
        match self {
            Operation::Write { op: w, .. } => match w {
                // Whole databases need `structure_user: true`, not a per-database grant.
                WriteOp::CreateDatabase { .. } => StructureAll("createSchema"),
                WriteOp::DropDatabase { .. } => StructureAll("dropSchema"),
                WriteOp::CreateTable { database, .. } => {
                    Structure("createTable", "create_table", database.clone())
                }
                WriteOp::DropTable { database, .. } => {
                    Structure("dropTable", "drop_table", database.clone())
                }
                WriteOp::CreateAttribute { database, .. } => {
                    Structure("createAttribute", "create_attribute", database.clone())
                }
                WriteOp::DropAttribute { database, .. } => {
                    Structure("dropAttribute", "drop_attribute", database.clone())
                }
                WriteOp::Records {
                    kind,
                    database,
                    table,
                    ..
                } => Table(
                    database.clone(),
                    table.clone(),
                    match kind {
                        WriteKind::Insert => vec![Insert],
                        WriteKind::Update => vec![Update],
                        // Harper: upsert may create or change a record.
                        WriteKind::Upsert => vec![Insert, Update],
                    },
                ),
                WriteOp::Delete {
                    database, table, ..
                } => Table(database.clone(), table.clone(), vec![Delete]),
                WriteOp::AddUser { .. } => SuperUser("addUser"),
                WriteOp::AlterUser { .. } => SuperUser("alterUser"),
                WriteOp::DropUser { .. } => SuperUser("dropUser"),
                WriteOp::AddRole { .. } => SuperUser("addRole"),
                WriteOp::AlterRole { .. } => SuperUser("alterRole"),
                WriteOp::DropRole { .. } => SuperUser("dropRole"),
                WriteOp::SystemPut { .. }
                | WriteOp::SystemDelete { .. }
                | WriteOp::SetLocal { .. }
                | WriteOp::Membership { .. }
                | WriteOp::Evict { .. } => SuperUser("system"),
                WriteOp::TrimAudit { .. } => SuperUser("deleteAuditLogsBefore"),
            },
            Operation::AddUser { .. } => SuperUser("addUser"),
            Operation::AlterUser { .. } => SuperUser("alterUser"),
            Operation::ListUsers => SuperUser("listUsersExternal"),
            Operation::ReadAuditLog { .. } => SuperUser("readAuditLog"),
            Operation::ListRoles => SuperUser("listRoles"),
            Operation::SearchById { search, .. }
            | Operation::SearchByValue { search, .. }
            | Operation::SearchByConditions { search, .. } => {
                Table(search.database.clone(), search.table.clone(), vec![Read])
            }
            Operation::DescribeAll
            | Operation::DescribeDatabase { .. }
            | Operation::DescribeTable { .. }
            | Operation::UserInfo
            | Operation::CreateAuthenticationTokens { .. }
            | Operation::RefreshOperationToken { .. }
            | Operation::Sql(_) => Authenticated,
        }
    }

    /// The searches answered as a stream of rows.
    pub fn is_search(&self) -> bool {
        matches!(
            self,
            Operation::SearchById { .. }
                | Operation::SearchByValue { .. }
                | Operation::SearchByConditions { .. }
        )
    }

    /// Operations that need no credentials (they carry their own: a user name and password in
    /// the body). Either one given is an attempt to log in: Harper answers a user name without
    /// a password with `invalid credentials`, and only nothing at all with `Must login`.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Operation::CreateAuthenticationTokens { username, password }
                if username.is_some() || password.is_some()
        )
    }
}

fn database(f: &Fields) -> Result<String, OpError> {
    Ok(f.opt_str(&["database", "schema"])?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_DB.to_string()))
}

fn table(f: &Fields) -> Result<String, OpError> {
    f.req_str(&["table"])
}

/// The records of a write: the batch the body parser kept as text, or (requests built as
/// trees, tests) a `records` value.
fn records(batch: Option<RecordBatch>, v: Option<Value>) -> Result<RecordBatch, OpError> {
    if let Some(b) = batch {
        return Ok(b);
    }
    let items = match v {
        None | Some(Value::Null) => return Err(OpError::bad_request("'records' is required")),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(OpError::bad_request("'records' must be an array")),
    };
    items
        .into_iter()
        .map(|r| match r {
            Value::Object(o) => Ok(o),
            _ => Err(OpError::bad_request(
                "'records' must be an array of objects",
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(RecordBatch::from_maps)
}

/// Harper answers a missing/ill-typed `get_attributes` on search_by_id with a 500; kept for
/// compatibility with scripts that check the status.
fn get_attributes(f: &Fields, required: bool) -> Result<GetAttributes, OpError> {
    match f.get(&["get_attributes"]) {
        None if required => Err(OpError::internal("'get_attributes' is required")),
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    OpError::internal("'get_attributes' must be an array of strings")
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(OpError::internal("'get_attributes' must be an array")),
    }
}

fn sort(v: &Value) -> Result<Sort, OpError> {
    let obj = v
        .as_object()
        .ok_or_else(|| OpError::bad_request("'sort' must be an object"))?;
    let f = Fields::new(obj);
    Ok(Sort {
        attribute: f
            .req_str(&["attribute"])
            .map_err(|_| OpError::bad_request("'sort.attribute' is required"))?,
        descending: f.opt_bool(&["descending"])?.unwrap_or(false),
        next: match f.get(&["next"]) {
            Some(n) => Some(Box::new(sort(n)?)),
            None => None,
        },
    })
}

/// Harper validates `limit` and `offset` with Joi (`number().integer().min(n)`): a numeric
/// string counts as its number, and a bad value is a 500 with Joi's wording (captured:
/// `limit: -1` -> 500 `'limit' must be greater than or equal to 1`, `limit: "2"` works).
fn search_int(f: &Fields, name: &str, min: u64) -> Result<Option<u64>, OpError> {
    let bad = |what: String| Err(OpError::internal(format!("'{name}' must be {what}")));
    let n = match f.get(&[name]) {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|_| !s.trim().is_empty()),
        Some(_) => None,
    };
    let Some(n) = n.filter(|n| n.is_finite()) else {
        return bad("a number".into());
    };
    if n.fract() != 0.0 {
        return bad("an integer".into());
    }
    // Joi refuses integers a double cannot hold exactly.
    if n.abs() > 9_007_199_254_740_991.0 {
        return bad("a safe number".into());
    }
    if n < min as f64 {
        return bad(format!("greater than or equal to {min}"));
    }
    Ok(Some(n as u64))
}

fn search(f: &Fields, get_attributes_required: bool) -> Result<Search, OpError> {
    Ok(Search {
        database: database(f)?,
        table: table(f)?,
        get_attributes: get_attributes(f, get_attributes_required)?,
        limit: search_int(f, "limit", 1)?,
        offset: search_int(f, "offset", 0)?.unwrap_or(0),
        sort: match f.get(&["sort"]) {
            Some(s) => Some(sort(s)?),
            None => None,
        },
        reverse: false,
    })
}

fn logic(f: &Fields) -> Result<Logic, OpError> {
    match f.opt_str(&["operator"])?.as_deref() {
        None | Some("and") | Some("AND") => Ok(Logic::And),
        Some("or") | Some("OR") => Ok(Logic::Or),
        Some(other) => Err(OpError::bad_request(format!(
            "'operator' must be one of [and, or], got '{other}'"
        ))),
    }
}

/// Conditions nest at most this deep; deeper input is refused rather than recursed into.
const MAX_CONDITION_DEPTH: usize = 16;

fn conditions(items: &[Value], depth: usize) -> Result<Vec<Condition>, OpError> {
    if depth > MAX_CONDITION_DEPTH {
        return Err(OpError::bad_request("conditions are nested too deeply"));
    }
    items
        .iter()
        .map(|c| {
            let obj = c
                .as_object()
                .ok_or_else(|| OpError::bad_request("each condition must be an object"))?;
            let f = Fields::new(obj);
            if let Some(inner) = f.opt_array(&["conditions"])? {
                return Ok(Condition::Group {
                    operator: logic(&f)?,
                    conditions: conditions(inner, depth + 1)?,
                });
            }
            let attribute = f.req_str(&["attribute", "search_attribute"])?;
            let cmp = f.req_str(&["comparator", "search_type"])?;
            let comparator = Comparator::parse(&cmp).ok_or_else(|| {
                OpError::bad_request(format!("'{cmp}' is not a valid comparator"))
            })?;
            let value = f
                .get(&["value", "search_value"])
                .cloned()
                .ok_or_else(|| OpError::bad_request("'value' is required"))?;
            if comparator == Comparator::Between
                && !matches!(&value, Value::Array(a) if a.len() == 2)
            {
                return Err(OpError::bad_request(
                    "'value' of a between condition must be an array of two values",
                ));
            }
            Ok(Condition::Leaf {
                attribute,
                comparator,
                value,
            })
        })
        .collect()
}

fn count_leaves(conds: &[Condition]) -> usize {
    conds
        .iter()
        .map(|c| match c {
            Condition::Leaf { .. } => 1,
            Condition::Group { conditions, .. } => count_leaves(conditions),
        })
        .sum()
}

/// `create_table` options Harper accepts that Skerry does not implement, with the value that
/// would need them: refused with a clear 400 rather than accepted and silently ignored (the
/// defaults, the opposite values, are accepted). README, Differences from Harper.
const UNSUPPORTED_TABLE_OPTIONS: [(&str, bool, &str); 3] = [
    ("audit", false, "every table keeps its audit log: replication reads it"),
    ("sealed", true, "a record's properties are stored whether or not the schema names them"),
    (
        "replicate",
        false,
        "every table of a replicated database replicates; choose databases with replication.databases",
    ),
];
const UNSUPPORTED_ATTRIBUTE_OPTIONS: [(&str, bool, &str); 2] = [
    ("indexed", false, "every attribute is indexed"),
    ("nullable", false, "null is allowed in every attribute"),
];

fn attributes(f: &Fields) -> Result<Vec<(String, Option<String>)>, OpError> {
    for (option, unsupported, why) in UNSUPPORTED_TABLE_OPTIONS {
        if f.get(&[option]) == Some(&Value::Bool(unsupported)) {
            return Err(OpError::bad_request(format!(
                "'{option}: {unsupported}' is not supported by Skerry ({why})"
            )));
        }
    }
    let Some(items) = f.opt_array(&["attributes"])? else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .map(|a| match a {
            Value::String(s) => Ok((s.clone(), None)),
            Value::Object(o) => {
                let af = Fields::new(o);
                let name = af.req_str(&["name", "attribute"])?;
                for (option, unsupported, why) in UNSUPPORTED_ATTRIBUTE_OPTIONS {
                    if af.get(&[option]) == Some(&Value::Bool(unsupported)) {
                        return Err(OpError::bad_request(format!(
                            "attribute '{name}': '{option}: {unsupported}' is not supported by Skerry ({why})"
                        )));
                    }
                }
                Ok((name, af.opt_str(&["type"])?))
            }
            _ => Err(OpError::bad_request(
                "'attributes' must be an array of objects",
            )),
        })
        .collect()
}

fn write(op: WriteOp) -> Operation {
    Operation::Write {
        op,
        details: false,
        confirm: None,
        forward: false,
    }
}

/// Parses a request object given as a tree (tests, internal callers).
pub fn parse_value(body: Map<String, Value>) -> Result<Operation, OpError> {
    parse(super::body::Body {
        fields: body,
        records: None,
    })
}

/// Parses one request (see `ops::body`: records arrive as text, the rest as a tree).
pub fn parse(body: super::body::Body) -> Result<Operation, OpError> {
    let super::body::Body {
        fields: mut body,
        records: batch,
    } = body;
    let records_field = body.remove("records");
    let body = &body;
    let name = match body.get("operation") {
        None | Some(Value::Null) => {
            return Err(OpError::bad_request(
                "Request body must include an 'operation' property.",
            ))
        }
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(OpError::bad_request(format!(
                "Operation '{other}' not found"
            )))
        }
    };
    let f = Fields::new(body);
    let op = match name {
        "create_database" | "create_schema" => write(WriteOp::CreateDatabase {
            database: f.req_str(&["database", "schema"])?,
        }),
        "drop_database" | "drop_schema" => write(WriteOp::DropDatabase {
            database: f.req_str(&["database", "schema"])?,
            replicated: f.opt_bool(&["replicated"])?.unwrap_or(false),
        }),
        "create_table" => {
            let attrs = attributes(&f)?;
            let pk = match f.opt_str(&["primary_key", "hash_attribute"])? {
                Some(pk) if !pk.is_empty() => pk,
                _ => match f
                    .get(&["attributes"])
                    .and_then(Value::as_array)
                    .and_then(|a| {
                        a.iter().find(|x| {
                            x.get("is_primary_key").and_then(Value::as_bool) == Some(true)
                                || x.get("isPrimaryKey").and_then(Value::as_bool) == Some(true)
                        })
                    })
                    .and_then(|x| x.get("name").or_else(|| x.get("attribute")))
                    .and_then(Value::as_str)
                {
                    Some(pk) => pk.to_string(),
                    None => return Err(OpError::bad_request("'primary_key' is required")),
                },
            };
            // Harper's `expiration` (seconds until a record expires after its last update).
            let expiration = match f.get(&["expiration"]) {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_u64().filter(|s| (1..=u64::from(u32::MAX)).contains(s)) {
                    Some(s) => Some(s),
                    None => {
                        return Err(OpError::bad_request(format!(
                        "'expiration' must be a whole number of seconds from 1 to {}, received {v}",
                        u32::MAX
                    )))
                    }
                },
            };
            write(WriteOp::CreateTable {
                database: database(&f)?,
                table: table(&f)?,
                primary_key: pk,
                schema_defined: !attrs.is_empty(),
                attributes: attrs,
                expiration,
            })
        }
        "drop_table" => write(WriteOp::DropTable {
            database: database(&f)?,
            table: table(&f)?,
            replicated: f.opt_bool(&["replicated"])?.unwrap_or(false),
        }),
        "create_attribute" => write(WriteOp::CreateAttribute {
            database: database(&f)?,
            table: table(&f)?,
            attribute: f.req_str(&["attribute"])?,
        }),
        "drop_attribute" => write(WriteOp::DropAttribute {
            database: database(&f)?,
            table: table(&f)?,
            attribute: f.req_str(&["attribute"])?,
        }),
        "describe_all" => Operation::DescribeAll,
        "describe_database" | "describe_schema" => Operation::DescribeDatabase {
            database: database(&f)?,
        },
        "describe_table" => Operation::DescribeTable {
            database: database(&f)?,
            table: table(&f)?,
        },
        "insert" | "update" | "upsert" => write(WriteOp::Records {
            kind: match name {
                "insert" => WriteKind::Insert,
                "update" => WriteKind::Update,
                _ => WriteKind::Upsert,
            },
            database: database(&f)?,
            table: table(&f)?,
            records: records(batch, records_field)?,
        }),
        "delete" => write(WriteOp::Delete {
            database: database(&f)?,
            table: table(&f)?,
            ids: f.req_array(&["ids", "hash_values"])?.clone(),
        }),
        "search_by_id" | "search_by_hash" => {
            let ids = match f.get(&["ids", "hash_values"]) {
                Some(Value::Array(a)) => a.clone(),
                Some(_) => return Err(OpError::internal("'hash_values' must be an array")),
                None => return Err(OpError::bad_request("'ids' is required")),
            };
            Operation::SearchById {
                search: search(&f, true)?,
                ids,
            }
        }
        "search_by_value" => Operation::SearchByValue {
            search: Search {
                reverse: f.opt_bool(&["reverse"])?.unwrap_or(false),
                ..search(&f, false)?
            },
            attribute: f.req_str(&["attribute", "search_attribute"])?,
            value: f
                .get(&["value", "search_value"])
                .cloned()
                .ok_or_else(|| OpError::bad_request("'value' is required"))?,
        },
        "search_by_conditions" => {
            let conditions = conditions(f.req_array(&["conditions"])?, 0)?;
            let max = super::query::MAX_CONDITIONS;
            if count_leaves(&conditions) > max {
                return Err(OpError::bad_request(format!(
                    "a search may have at most {max} conditions"
                )));
            }
            Operation::SearchByConditions {
                search: search(&f, false)?,
                operator: logic(&f)?,
                conditions,
            }
        }
        "add_user" => Operation::AddUser {
            username: f.req_str(&["username"])?,
            password: f.req_str(&["password"])?,
            role: f.req_str(&["role"])?,
            active: f.opt_bool(&["active"])?.unwrap_or(true),
        },
        "alter_user" => {
            let password = f.opt_str(&["password"])?;
            if password.as_deref() == Some("") {
                return Err(OpError::bad_request("password cannot be an empty string"));
            }
            let role = f.opt_str(&["role"])?;
            if role.as_deref() == Some("") {
                return Err(OpError::bad_request(
                    "If role is specified, it cannot be empty.",
                ));
            }
            let active = match f.get(&["active"]) {
                None => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => return Err(OpError::bad_request("active must be true or false")),
            };
            if password.is_none() && role.is_none() && active.is_none() {
                return Err(OpError::bad_request(
                    "nothing to update, must supply active, role or password to update",
                ));
            }
            Operation::AlterUser {
                username: f.req_str(&["username"])?,
                password,
                role,
                active,
            }
        }
        "drop_user" => write(WriteOp::DropUser {
            username: f.req_str(&["username"])?,
        }),
        "list_users" => Operation::ListUsers,
        "read_audit_log" => {
            // Harper 4.7 takes only `schema` here (`database` alone is its 500 "database is
            // required"); both are accepted, as everywhere else. Its checks are 500s.
            let database = f
                .opt_str(&["schema", "database"])?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| OpError::internal("database is required"))?;
            let table = f
                .opt_str(&["table"])?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| OpError::internal("table is required"))?;
            let values = f.opt_array(&["search_values"])?;
            let search = match f.opt_str(&["search_type"])?.as_deref() {
                None => AuditSearch::All,
                Some("timestamp") => {
                    let v = values.cloned().unwrap_or_default();
                    let at = |i: usize, default: f64| {
                        v.get(i).and_then(Value::as_f64).unwrap_or(default)
                    };
                    AuditSearch::Timestamp(at(0, 0.0), at(1, f64::MAX))
                }
                Some("username") => AuditSearch::Username(
                    values
                        .map(|v| {
                            v.iter()
                                .map(|u| match u {
                                    Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
                Some("hash_value") => AuditSearch::HashValue(values.cloned().unwrap_or_default()),
                Some(other) => {
                    return Err(OpError::internal(format!("Invalid searchType '{other}'")))
                }
            };
            Operation::ReadAuditLog {
                database,
                table,
                search,
            }
        }
        "user_info" => Operation::UserInfo,
        "add_role" => write(WriteOp::AddRole {
            role: f.req_str(&["role"])?,
            id: f.opt_str_or_number(&["id"])?,
            permission: Value::Object(
                f.opt_object(&["permission"])?
                    .cloned()
                    .ok_or_else(|| OpError::bad_request("'permission' is required"))?,
            ),
        }),
        "alter_role" => write(WriteOp::AlterRole {
            id: f
                .opt_str_or_number(&["id"])?
                .ok_or_else(|| OpError::bad_request("'id' is required"))?,
            role: f.opt_str(&["role"])?,
            permission: f.opt_object(&["permission"])?.cloned().map(Value::Object),
        }),
        "drop_role" => write(WriteOp::DropRole {
            id: f
                .opt_str_or_number(&["id"])?
                .ok_or_else(|| OpError::bad_request("'id' is required"))?,
        }),
        "list_roles" => Operation::ListRoles,
        // Empty strings count as absent (Harper: `""`/`""` is "Must login").
        "create_authentication_tokens" => Operation::CreateAuthenticationTokens {
            username: f.opt_str(&["username"])?.filter(|s| !s.is_empty()),
            password: f.opt_str(&["password"])?.filter(|s| !s.is_empty()),
        },
        "refresh_operation_token" => Operation::RefreshOperationToken {
            refresh_token: f.opt_str(&["refresh_token"])?.filter(|s| !s.is_empty()),
        },
        "sql" => Operation::Sql(match f.get(&["sql"]) {
            None | Some(Value::Null) => return Err(crate::sql::parse::missing()),
            Some(Value::String(s)) => crate::sql::fast::parse_cached(s)?,
            Some(_) => return Err(crate::sql::parse::not_text()),
        }),
        other => {
            return Err(OpError::bad_request(format!(
                "Operation '{other}' not found"
            )))
        }
    };
    let mut op = op;
    if let Operation::Write {
        op: w,
        details,
        confirm,
        forward,
    } = &mut op
    {
        if matches!(
            w,
            WriteOp::DropTable { .. }
                | WriteOp::DropDatabase { .. }
                | WriteOp::CreateTable { .. }
                | WriteOp::CreateAttribute { .. }
        ) {
            *forward = f.opt_bool(&["replicated"])?.unwrap_or(false);
        }
        *details = f.opt_bool(&["write_details"])?.unwrap_or(false);
        // Harper's field is an integer count of peers; anything else is refused, not ignored
        // (a typo must not silently turn a confirmed write into an unconfirmed one).
        *confirm = f.opt_u64(&["replicatedConfirmation"])?;
    }
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Result<Operation, OpError> {
        parse_value(v.as_object().unwrap().clone())
    }

    fn err(v: Value) -> (u16, String) {
        let e = p(v).unwrap_err();
        (e.status, e.message().to_string())
    }

    #[test]
    fn legacy_aliases_map_to_the_same_operation() {
        let a = p(json!({"operation":"search_by_hash","schema":"dev","table":"dog","hash_values":[1],"get_attributes":["*"]})).unwrap();
        let b = p(json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[1],"get_attributes":["*"]})).unwrap();
        assert_eq!(a, b);
        let c = p(json!({"operation":"create_schema","schema":"dev"})).unwrap();
        assert_eq!(
            c,
            Operation::Write {
                op: WriteOp::CreateDatabase {
                    database: "dev".into()
                },
                details: false,
                confirm: None,
                forward: false,
            }
        );
        let d =
            p(json!({"operation":"create_table","schema":"dev","table":"t","hash_attribute":"id"}))
                .unwrap();
        assert!(
            matches!(d, Operation::Write { op: WriteOp::CreateTable { primary_key, .. }, .. } if primary_key == "id")
        );
    }

    #[test]
    fn default_database_is_data() {
        let op = p(json!({"operation":"describe_table","table":"t"})).unwrap();
        assert_eq!(
            op,
            Operation::DescribeTable {
                database: "data".into(),
                table: "t".into()
            }
        );
    }

    /// (request, status, message): Harper's texts for bad requests.
    #[test]
    fn validation_errors_table() {
        let cases = [
            (
                json!({"database":"dev"}),
                400,
                "Request body must include an 'operation' property.",
            ),
            (
                json!({"operation":"no_such_operation"}),
                400,
                "Operation 'no_such_operation' not found",
            ),
            (
                json!({"operation":"create_table","database":"dev","table":"cat"}),
                400,
                "'primary_key' is required",
            ),
            (
                json!({"operation":"insert","table":"t","records":{"id":1}}),
                400,
                "'records' must be an array",
            ),
            (
                json!({"operation":"insert","table":"t","records":[1]}),
                400,
                "'records' must be an array of objects",
            ),
            (
                json!({"operation":"insert","records":[]}),
                400,
                "'table' is required",
            ),
            (
                json!({"operation":"insert","table":5,"records":[]}),
                400,
                "'table' must be a string",
            ),
            (
                json!({"operation":"search_by_id","table":"t","ids":[1]}),
                500,
                "'get_attributes' is required",
            ),
            (
                json!({"operation":"search_by_id","table":"t","ids":1,"get_attributes":["*"]}),
                500,
                "'hash_values' must be an array",
            ),
            (
                json!({"operation":"search_by_id","table":"t","ids":[1],"get_attributes":"*"}),
                500,
                "'get_attributes' must be an array",
            ),
            (
                json!({"operation":"search_by_conditions","table":"t","conditions":[{"attribute":"a","comparator":"like","value":1}]}),
                400,
                "'like' is not a valid comparator",
            ),
            (
                json!({"operation":"alter_user","username":"u"}),
                400,
                "nothing to update, must supply active, role or password to update",
            ),
            (
                json!({"operation":"add_user","username":"u","role":"r"}),
                400,
                "'password' is required",
            ),
            (
                json!({"operation":"drop_table","database":"dev","replicated":"yes","table":"t"}),
                400,
                "'replicated' must be a boolean",
            ),
            (
                json!({"operation":"insert","table":"t","records":[],"write_details":1}),
                400,
                "'write_details' must be a boolean",
            ),
            // Harper's Joi checks of paging: 500s.
            (
                json!({"operation":"search_by_value","table":"t","attribute":"a","value":"*","limit":-1}),
                500,
                "'limit' must be greater than or equal to 1",
            ),
            (
                json!({"operation":"search_by_value","table":"t","attribute":"a","value":"*","offset":"x"}),
                500,
                "'offset' must be a number",
            ),
            (
                json!({"operation":"search_by_conditions","table":"t","conditions":[],"limit":2.5}),
                500,
                "'limit' must be an integer",
            ),
        ];
        for (req, status, msg) in cases {
            assert_eq!(err(req.clone()), (status, msg.to_string()), "{req}");
        }
    }

    #[test]
    fn paging_accepts_numeric_strings_and_reverse_is_search_by_value_only() {
        let Operation::SearchByValue { search, .. } = p(json!({"operation":"search_by_value",
            "table":"t","attribute":"a","value":"*","limit":"2","offset":"1","reverse":true}))
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (search.limit, search.offset, search.reverse),
            (Some(2), 1, true)
        );
        let Operation::SearchByConditions { search, .. } =
            p(json!({"operation":"search_by_conditions",
            "table":"t","conditions":[],"reverse":true}))
            .unwrap()
        else {
            panic!()
        };
        assert!(!search.reverse);
    }

    #[test]
    fn nested_conditions_parse_and_too_deep_nesting_is_refused() {
        let op = p(json!({"operation":"search_by_conditions","table":"t","operator":"or","conditions":[
            {"search_attribute":"age","search_type":"greater_than_equal","search_value":3},
            {"operator":"and","conditions":[{"attribute":"a","comparator":"between","value":[1,2]}]}
        ]})).unwrap();
        let Operation::SearchByConditions {
            operator,
            conditions,
            ..
        } = op
        else {
            panic!()
        };
        assert_eq!(operator, Logic::Or);
        assert!(matches!(
            &conditions[1],
            Condition::Group {
                operator: Logic::And,
                ..
            }
        ));
        let mut deep = json!({"attribute":"a","comparator":"equals","value":1});
        for _ in 0..20 {
            deep = json!({"operator":"and","conditions":[deep]});
        }
        let (status, _) =
            err(json!({"operation":"search_by_conditions","table":"t","conditions":[deep]}));
        assert_eq!(status, 400);
    }

    #[test]
    fn requirements_name_harpers_handlers() {
        let op = p(json!({"operation":"list_users"})).unwrap();
        assert_eq!(
            op.requirement(),
            Requirement::SuperUser("listUsersExternal")
        );
        let op =
            p(json!({"operation":"insert","database":"dev","table":"dog","records":[]})).unwrap();
        assert!(matches!(
            op.requirement(),
            Requirement::Table(_, _, p) if p == vec![crate::core::auth::TablePerm::Insert]
        ));
        let op =
            p(json!({"operation":"upsert","database":"dev","table":"dog","records":[]})).unwrap();
        assert!(matches!(op.requirement(), Requirement::Table(_, _, p) if p.len() == 2));
    }
}

/// Property tests of the request parser against hostile bodies (issue 9, "hardened input"):
/// the bytes of a POST body go through `ops::body::parse` and [`parse`] exactly as the HTTP
/// layer sends them. Whatever arrives, the answer is an `Operation` or an `OpError` in
/// Harper's shape (`{"error": "<non-empty text>"}` with a 400, 413 or 500), never a panic or
/// an allocation far larger than the body.
#[cfg(test)]
mod prop_tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Every field name the parser reads, so generated objects hit real code paths.
    const FIELDS: &[&str] = &[
        "operation",
        "database",
        "schema",
        "table",
        "primary_key",
        "hash_attribute",
        "attributes",
        "attribute",
        "name",
        "type",
        "is_primary_key",
        "records",
        "ids",
        "hash_values",
        "get_attributes",
        "limit",
        "offset",
        "sort",
        "descending",
        "next",
        "reverse",
        "value",
        "search_value",
        "search_attribute",
        "search_type",
        "search_values",
        "conditions",
        "comparator",
        "operator",
        "username",
        "password",
        "role",
        "active",
        "id",
        "permission",
        "refresh_token",
        "replicated",
        "write_details",
        "replicatedConfirmation",
    ];

    const OPERATIONS: &[&str] = &[
        "create_database",
        "create_schema",
        "drop_database",
        "drop_schema",
        "create_table",
        "drop_table",
        "create_attribute",
        "drop_attribute",
        "describe_all",
        "describe_database",
        "describe_schema",
        "describe_table",
        "insert",
        "update",
        "upsert",
        "delete",
        "search_by_id",
        "search_by_hash",
        "search_by_value",
        "search_by_conditions",
        "add_user",
        "alter_user",
        "drop_user",
        "list_users",
        "read_audit_log",
        "user_info",
        "add_role",
        "alter_role",
        "drop_role",
        "list_roles",
        "create_authentication_tokens",
        "refresh_operation_token",
        "no_such_operation",
    ];

    /// Real request shapes (from the captures and the tests above), the seeds of mutation.
    fn shapes() -> Vec<Value> {
        vec![
            json!({"operation":"create_database","database":"dev"}),
            json!({"operation":"drop_database","database":"dev","replicated":true}),
            json!({"operation":"create_table","database":"dev","table":"dog","primary_key":"id"}),
            json!({"operation":"create_table","table":"dog","attributes":[{"name":"id","type":"ID","is_primary_key":true},{"name":"age","type":"Int"},"x"]}),
            json!({"operation":"drop_table","schema":"dev","table":"dog"}),
            json!({"operation":"create_attribute","database":"dev","table":"dog","attribute":"a"}),
            json!({"operation":"drop_attribute","database":"dev","table":"dog","attribute":"a"}),
            json!({"operation":"describe_all"}),
            json!({"operation":"describe_database","database":"dev"}),
            json!({"operation":"describe_table","database":"dev","table":"dog"}),
            json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1,"name":"a"},{"id":"x"}],"write_details":true}),
            json!({"operation":"upsert","table":"dog","records":[{"id":1.5,"n":[1,{"a":null}]}]}),
            json!({"operation":"update","schema":"dev","table":"dog","records":[{"id":1}]}),
            json!({"operation":"delete","database":"dev","table":"dog","ids":[1,"a",null]}),
            json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[1],"get_attributes":["*"]}),
            json!({"operation":"search_by_hash","schema":"dev","table":"dog","hash_values":[1],"get_attributes":["id"],"limit":"2","offset":0}),
            json!({"operation":"search_by_value","database":"dev","table":"dog","search_attribute":"name","search_value":"a*","reverse":true,"limit":10,"sort":{"attribute":"age","descending":true,"next":{"attribute":"id"}}}),
            json!({"operation":"search_by_conditions","database":"dev","table":"dog","operator":"or","limit":5,"conditions":[
                {"attribute":"age","comparator":"between","value":[1,5]},
                {"search_attribute":"name","search_type":"starts_with","search_value":"a"},
                {"operator":"and","conditions":[{"attribute":"id","comparator":"equals","value":1}]}
            ]}),
            json!({"operation":"add_user","username":"u","password":"p","role":"super_user","active":true}),
            json!({"operation":"alter_user","username":"u","password":"q","active":false}),
            json!({"operation":"drop_user","username":"u"}),
            json!({"operation":"list_users"}),
            json!({"operation":"read_audit_log","database":"dev","table":"dog","search_type":"timestamp","search_values":[1,2]}),
            json!({"operation":"read_audit_log","database":"dev","table":"dog","search_type":"hash_value","search_values":[1]}),
            json!({"operation":"user_info"}),
            json!({"operation":"add_role","role":"r","id":"r","permission":{"super_user":false,"dev":{"tables":{"dog":{"read":true}}}}}),
            json!({"operation":"alter_role","id":7,"role":"r","permission":{}}),
            json!({"operation":"drop_role","id":"r"}),
            json!({"operation":"list_roles"}),
            json!({"operation":"create_authentication_tokens","username":"u","password":"p"}),
            json!({"operation":"refresh_operation_token","refresh_token":"t"}),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(FIELDS).prop_map(str::to_string),
            1 => "[a-z_]{0,8}",
        ]
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            prop::sample::select(OPERATIONS).prop_map(Value::from),
            prop::sample::select(FIELDS).prop_map(Value::from),
            "-?[0-9]{0,20}(\\.[0-9]{0,4})?(e-?[0-9]{1,3})?".prop_map(Value::from),
            prop::sample::select(
                &[
                    "*",
                    "",
                    " ",
                    "and",
                    "OR",
                    "between",
                    "equals",
                    "timestamp",
                    "hash_value",
                    "super_user"
                ][..]
            )
            .prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_leaf().prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// A real shape with fields removed, retyped, replaced and added.
    fn mutated_shape() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(shapes()),
            prop::collection::vec((key(), proptest::option::of(json_value())), 0..5),
        )
            .prop_map(|(mut v, edits)| {
                if let Value::Object(o) = &mut v {
                    for (k, new) in edits {
                        match new {
                            Some(x) => {
                                o.insert(k, x);
                            }
                            None => {
                                o.remove(&k);
                            }
                        }
                    }
                }
                v
            })
    }

    /// Parses `bytes` as a POST body, as the HTTP layer does, and checks the property.
    fn check(bytes: Vec<u8>) -> Result<(), TestCaseError> {
        let len = bytes.len();
        let (parsed, peak) = crate::util::alloc_probe::peak_allocation(|| {
            crate::ops::body::parse(bytes, 1 << 20).and_then(parse)
        });
        // No single allocation far beyond the body (the body limit bounds every request).
        prop_assert!(
            peak <= 64 * 1024 + 64 * len,
            "a {len} byte body allocated {peak} bytes at once"
        );
        match parsed {
            Ok(op) => {
                // What the HTTP layer asks of every parsed operation must hold too.
                let _ = op.requirement();
                let _ = op.is_search();
                let _ = op.is_unauthenticated();
                if let Operation::Write {
                    op: WriteOp::Records { records, .. },
                    ..
                } = &op
                {
                    for i in 0..records.len() {
                        let _ = records.parse(i);
                    }
                }
            }
            Err(e) => {
                prop_assert!(
                    matches!(e.status, 400 | 413 | 500),
                    "status {} for {}",
                    e.status,
                    e.body
                );
                let msg = e.body.get("error").and_then(Value::as_str);
                prop_assert!(msg.is_some_and(|m| !m.is_empty()), "body {}", e.body);
            }
        }
        Ok(())
    }

    /// The seeds are valid requests: mutation starts from the parser's success paths.
    #[test]
    fn every_seed_shape_parses() {
        for v in shapes() {
            let bytes = serde_json::to_vec(&v).unwrap_or_default();
            let r = crate::ops::body::parse(bytes, 1 << 20).and_then(parse);
            assert!(r.is_ok(), "{v} -> {:?}", r.err());
        }
    }

    /// `cases` unless `PROPTEST_CASES` asks for another count (longer runs by hand).
    fn config(cases: u32) -> ProptestConfig {
        let mut c = ProptestConfig::default();
        if std::env::var_os("PROPTEST_CASES").is_none() {
            c.cases = cases;
        }
        // Failing seeds are kept under tests/ (re-run first on every run), not in a
        // top-level proptest-regressions/ folder.
        c.failure_persistence = Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/proptest-regressions/parse.txt",
            ),
        ));
        c
    }

    proptest! {
        #![proptest_config(config(1000))]

        #[test]
        fn prop_real_shapes_with_mutated_fields_never_panic(v in mutated_shape()) {
            check(serde_json::to_vec(&v).unwrap_or_default())?;
        }

        #[test]
        fn prop_arbitrary_json_never_panics(v in json_value()) {
            check(serde_json::to_vec(&v).unwrap_or_default())?;
        }

        #[test]
        fn prop_arbitrary_objects_never_panic(
            op in prop::sample::select(OPERATIONS),
            kv in prop::collection::vec((key(), json_value()), 0..8),
        ) {
            let mut o: Map<String, Value> = kv.into_iter().collect();
            o.insert("operation".into(), Value::from(op));
            check(serde_json::to_vec(&o).unwrap_or_default())?;
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            check(bytes)?;
        }

        #[test]
        fn prop_mutated_body_text_never_panics(
            v in mutated_shape(),
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
            for (i, b, how) in edits {
                let at = i % (bytes.len() + 1);
                match how {
                    0 if at < bytes.len() => bytes[at] = b,
                    1 => bytes.insert(at, b),
                    _ => bytes.truncate(at),
                }
            }
            check(bytes)?;
        }
    }
}
