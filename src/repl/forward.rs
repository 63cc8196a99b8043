//! Operation forwarding (`replicated: true` on `drop_table`, `drop_database`, `create_table`,
//! `create_attribute`, and `set_configuration`): after the operation succeeded on this node, it
//! runs on every member that replicates its database (every member for `set_configuration`), over one-shot `op` sockets, and the answer lists each
//! member's result (Harper's `replicated` array, harper-spec §6.11).
//!
//! The members run it with `replicated: false` (never forwarded again, so no loop). Creations
//! and a replicated drop also travel in this node's audit log, so a member that is down now
//! still gets them when it comes back; forwarding makes the change happen everywhere now and
//! tells the caller where it did. Because the log may get there first, a member whose schema
//! already is what the operation asks for answers the operation's normal success.
//!
//! Must never: run on the core thread (it waits on the network), forward an operation it
//! received from a peer, or accept anything but these five operations from a peer.

use super::push::Caller;
use super::ReplCtx;
use crate::core::error::{OpError, OpResult};
use crate::core::op::WriteOp;
use crate::ops::parse::Operation;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// The operations a member runs for a peer (`serve`).
pub const OPS: [&str; 4] = [
    "drop_table",
    "drop_database",
    "create_table",
    "create_attribute",
];

/// How long one member may take to answer (connect included).
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// The database an operation changes.
fn database(op: &WriteOp) -> Option<&str> {
    match op {
        WriteOp::DropTable { database, .. }
        | WriteOp::DropDatabase { database, .. }
        | WriteOp::CreateTable { database, .. }
        | WriteOp::CreateAttribute { database, .. } => Some(database),
        _ => None,
    }
}

/// The request a member runs: the operation as a client would send it, `replicated: false`.
fn request(op: &WriteOp) -> Option<Value> {
    Some(match op {
        WriteOp::DropTable {
            database, table, ..
        } => json!({"operation":"drop_table","database":database,"table":table}),
        WriteOp::DropDatabase { database, .. } => {
            json!({"operation":"drop_database","database":database})
        }
        WriteOp::CreateTable {
            database,
            table,
            primary_key,
            attributes,
            schema_defined,
            expiration,
        } => {
            let mut o = json!({"operation":"create_table","database":database,"table":table,
                "primary_key":primary_key});
            if *schema_defined {
                o["attributes"] = attributes
                    .iter()
                    .map(|(name, ty)| match ty {
                        Some(t) => json!({"name": name, "type": t}),
                        None => json!({ "name": name }),
                    })
                    .collect();
            }
            if let Some(e) = expiration {
                o["expiration"] = json!(e);
            }
            o
        }
        WriteOp::CreateAttribute {
            database,
            table,
            attribute,
        } => json!({"operation":"create_attribute","database":database,"table":table,
            "attribute":attribute}),
        _ => return None,
    })
}

/// Runs `op` on every member that replicates its database, in parallel; one entry per member
/// (by name): its answer plus `node`, or `{"status":"failed","reason",node}`.
pub fn forward(ctx: &ReplCtx, op: &WriteOp) -> Vec<Value> {
    let (Some(db), Some(body)) = (database(op), request(op)) else {
        return Vec::new();
    };
    if !ctx.cfg.replicates_db(db) {
        return Vec::new();
    }
    send_to_members(ctx, body, Some(db))
}

/// Runs a `set_configuration` that succeeded here on every member (the configuration is the
/// node's, not a database's): the same `replicated` entries as [`forward`].
pub fn forward_configuration(ctx: &ReplCtx, body: &Map<String, Value>) -> Vec<Value> {
    send_to_members(ctx, Value::Object(body.clone()), None)
}

/// Sends `body` (with `replicated: false`) to every member, or with `db` every member this
/// node's policy links on it, in parallel.
fn send_to_members(ctx: &ReplCtx, mut body: Value, db: Option<&str>) -> Vec<Value> {
    body["replicated"] = json!(false);
    let members = ctx.members.load();
    if members.removed {
        return Vec::new();
    }
    let targets: Vec<(String, String)> = members
        .names
        .iter()
        .filter(|n| **n != ctx.node_name)
        .filter(|n| {
            db.is_none_or(|db| {
                let p = ctx.policy(n);
                p.receives_any(db) || p.sends_any(db)
            })
        })
        .filter_map(|n| members.urls.get(n).map(|u| (n.clone(), u.clone())))
        .collect();
    std::thread::scope(|s| {
        let calls: Vec<_> = targets
            .iter()
            .map(|(name, url)| {
                let body = &body;
                let h = s.spawn(move || {
                    super::cluster_ops::call_peer(ctx, url, None, body, PEER_TIMEOUT, true)
                });
                (name, h)
            })
            .collect();
        calls
            .into_iter()
            .map(|(name, h)| {
                let result = h
                    .join()
                    .unwrap_or_else(|_| Err("the forwarding thread failed".into()));
                entry(name, result)
            })
            .collect()
    })
}

/// One member's entry of the `replicated` array.
fn entry(node: &str, result: Result<(u16, Value), String>) -> Value {
    let failed = |reason: String| json!({"status": "failed", "reason": reason, "node": node});
    match result {
        Ok((200, Value::Object(mut o))) => {
            o.insert("node".into(), json!(node));
            Value::Object(o)
        }
        Ok((status, body)) => failed(
            body.get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("status {status}: {body}")),
        ),
        Err(e) => failed(e),
    }
}

/// The member side of a forwarded `set_configuration`: this node's own, never forwarded again.
pub fn serve_configuration(ctx: &ReplCtx, body: &Map<String, Value>) -> OpResult {
    let mut body = body.clone();
    body.remove("replicated");
    match ctx.set_configuration.get() {
        Some(set) => set(&body),
        None => Err(OpError::bad_request(
            "this node cannot change its configuration for a peer",
        )),
    }
}

/// The member side: runs a forwarded schema operation as the calling node (or super_user).
pub fn serve(ctx: &ReplCtx, body: &Map<String, Value>, caller: &Caller) -> OpResult {
    const ONLY: &str =
        "only drop_table, drop_database, create_table and create_attribute are forwarded";
    let mut body = body.clone();
    // Never forwarded again from here, whatever the request says (the parsed `forward` flag
    // is not looked at: the core runs the operation directly).
    body.insert("replicated".into(), json!(false));
    let mut op = match crate::ops::parse::parse_value(body)? {
        Operation::Write { op, .. } if request(&op).is_some() => op,
        _ => return Err(OpError::bad_request(ONLY)),
    };
    // A drop is logged and remembered here too (the core's `replicated`): a node that missed
    // it learns it from any member, and this node ignores records made before it that arrive
    // later.
    if let WriteOp::DropTable { replicated, .. } | WriteOp::DropDatabase { replicated, .. } =
        &mut op
    {
        *replicated = true;
    }
    if let Some(done) = already_done(ctx, &op) {
        return Ok(done);
    }
    // The origin's log entry may be applied between that check and this execution: an error
    // that only says "already so" is the operation's success too.
    ctx.core
        .execute(op.clone(), caller.actor())
        .or_else(|e| already_done(ctx, &op).ok_or(e))
}

/// The operation's success answer when this node's schema already is what it asks for (its
/// effect arrived first through the origin's audit log).
fn already_done(ctx: &ReplCtx, op: &WriteOp) -> Option<Value> {
    let catalog = ctx.shared.catalog.load();
    let message = match op {
        WriteOp::DropTable {
            database, table, ..
        } if catalog.table(database, table).is_none() && database != "system" => {
            format!("successfully deleted table '{database}.{table}'")
        }
        WriteOp::DropDatabase { database, .. }
            if catalog.database(database).is_none() && database != "system" =>
        {
            format!("successfully deleted '{database}'")
        }
        WriteOp::CreateTable {
            database, table, ..
        } if catalog.table(database, table).is_some() => {
            format!("table '{database}.{table}' successfully created.")
        }
        WriteOp::CreateAttribute {
            database,
            table,
            attribute,
        } if catalog
            .table(database, table)
            .is_some_and(|t| t.has_attribute(attribute)) =>
        {
            format!("attribute '{database}.{table}.{attribute}' successfully created.")
        }
        _ => return None,
    };
    Some(json!({ "message": message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_answer_gains_its_node_and_a_failure_says_why() {
        assert_eq!(
            entry("b", Ok((200, json!({"message":"ok"})))),
            json!({"message":"ok","node":"b"})
        );
        assert_eq!(
            entry(
                "b",
                Ok((404, json!({"error":"Table 'd.t' does not exist"})))
            ),
            json!({"status":"failed","reason":"Table 'd.t' does not exist","node":"b"})
        );
        assert_eq!(
            entry("c", Err("connection refused".into())),
            json!({"status":"failed","reason":"connection refused","node":"c"})
        );
    }

    #[test]
    fn the_forwarded_request_is_the_operation_a_client_would_send() {
        let op = WriteOp::CreateTable {
            database: "d".into(),
            table: "t".into(),
            primary_key: "id".into(),
            attributes: vec![("id".into(), Some("ID".into())), ("n".into(), None)],
            schema_defined: true,
            expiration: Some(5),
        };
        let body = request(&op).unwrap();
        let parsed = crate::ops::parse::parse_value(body.as_object().unwrap().clone()).unwrap();
        let Operation::Write { op: back, .. } = parsed else {
            panic!("{body}")
        };
        assert_eq!(back, op);
    }
}
