//! Operation errors in Harper's shape: an HTTP status and a JSON body, usually
//! `{"error": "<message>"}`.

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct OpError {
    pub status: u16,
    pub body: Value,
}

impl OpError {
    pub fn new(status: u16, msg: impl Into<String>) -> Self {
        OpError {
            status,
            body: json!({ "error": msg.into() }),
        }
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, msg)
    }
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(401, msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(404, msg)
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(409, msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(500, msg)
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(503, msg)
    }

    /// Harper's 403 permission response. `unauthorized_access` holds strings for
    /// super_user-only operations and objects for missing table permissions.
    pub fn forbidden(unauthorized_access: Vec<Value>, invalid_schema_items: Vec<Value>) -> Self {
        OpError {
            status: 403,
            body: json!({
                "error": "This operation is not authorized due to role restrictions and/or invalid database items",
                "unauthorized_access": unauthorized_access,
                "invalid_schema_items": invalid_schema_items,
            }),
        }
    }

    /// 403 for a super_user-only operation; `handler` is Harper's internal function name
    /// (`clusterStatus`, `addNode`, ...), which is what Harper puts in the message.
    pub fn super_user_only(handler: &str) -> Self {
        Self::forbidden(
            vec![Value::String(format!(
                "Operation '{handler}' is restricted to 'super_user' roles"
            ))],
            vec![],
        )
    }

    pub fn message(&self) -> &str {
        self.body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("error")
    }

    pub fn database_not_found(db: &str) -> Self {
        Self::not_found(format!("database '{db}' does not exist"))
    }

    pub fn table_not_found(db: &str, table: &str) -> Self {
        Self::not_found(format!("Table '{db}.{table}' does not exist"))
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message())
    }
}

pub type OpResult = Result<Value, OpError>;
