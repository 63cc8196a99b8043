//! The clustering operations (`add_node`, `remove_node`, `cluster_status`, ...) and the
//! node-to-node operations they send over a one-shot replication socket (`add_node_back`,
//! `remove_node_back`).
//!
//! Membership is data: adding or removing a node writes `system.hdb_nodes` rows through the
//! core, the rows replicate, and every node's manager connects or disconnects accordingly. The
//! only node-local membership state is the "removed" flag a node sets when a peer removes it,
//! which keeps it out (durably) until it is added again.

use super::conn::Conn;
use super::manager::node_rows;
use super::policy::{policy_from_fields, LinkPolicy};
use super::push::Caller;
use super::wire::Frame;
use super::{link_key, parse_url, ReplCtx, REMOVED_KEY};
use crate::core::auth::Principal;
use crate::core::catalog::{CREATED_TIME, UPDATED_TIME};
use crate::core::error::{OpError, OpResult};
use crate::core::op::{MemberChange, WriteOp};
use crate::core::txn::Actor;
use crate::ops::fields::Fields;
use crate::ops::http::ClusterOps;
use base64::Engine;
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Harper's internal handler names, used in its 403 message for non-super users.
fn handler_name(op: &str) -> &'static str {
    match op {
        "add_node" | "set_node" => "addNode",
        "update_node" | "set_node_replication" => "updateNode",
        "remove_node" => "removeNode",
        "cluster_status" => "clusterStatus",
        "configure_cluster" => "configureCluster",
        "cluster_set_routes" => "setRoutes",
        "cluster_get_routes" => "getRoutes",
        "cluster_delete_routes" => "deleteRoutes",
        "add_node_back" => "addNodeBack",
        "remove_node_back" => "removeNodeBack",
        "cluster_verify" => "clusterVerify",
        _ => "cluster",
    }
}

/// Answers cluster operations when replication is not configured on this node.
pub struct ReplicationOff {
    pub node_name: String,
}

impl ClusterOps for ReplicationOff {
    fn execute(&self, name: &str, _body: &Map<String, Value>, p: &Principal) -> Option<OpResult> {
        if !p.is_super_user() {
            return Some(Err(OpError::super_user_only(handler_name(name))));
        }
        Some(match name {
            "cluster_status" => Ok(json!({
                "type": "cluster-status",
                "connections": [],
                "node_name": self.node_name,
                "is_enabled": false,
            })),
            _ => Err(OpError::bad_request(format!(
                "Replication is not enabled on this node: set replication.hostname and replication.port in the config to use '{name}'"
            ))),
        })
    }
}

/// The clustering operations of a node with replication on.
pub struct ClusterApi(pub Arc<ReplCtx>);

impl ClusterOps for ClusterApi {
    fn links(&self) -> Vec<crate::obs::LinkSnap> {
        link_snaps(&self.0)
    }

    fn replicates(&self) -> bool {
        true
    }

    fn confirm(&self, db: &str, version: u64, n: u64) -> Result<(), OpError> {
        let timeout = self.0.cfg.confirmation_timeout;
        self.0
            .confirmations
            .wait(db, version, n, timeout)
            .map_err(|k| {
                // Harper v5's text. The write stays committed here; only the answer fails.
                OpError::new(
                    504,
                    format!(
                        "Timed out after {}ms waiting for replication confirmation from {n} node(s) for database \"{db}\" (received {k})",
                        timeout.as_millis()
                    ),
                )
            })
    }

    fn forward(&self, op: &WriteOp) -> Vec<Value> {
        super::forward::forward(&self.0, op)
    }

    fn forward_configuration(&self, body: &Map<String, Value>) -> Vec<Value> {
        super::forward::forward_configuration(&self.0, body)
    }

    fn ready(&self) -> Result<(), String> {
        if self.0.stopping.load(Ordering::SeqCst) {
            return Err("replication is stopping".into());
        }
        if !self.0.manager_ready.load(Ordering::SeqCst) {
            return Err("replication has not loaded its membership yet".into());
        }
        Ok(())
    }

    fn execute(&self, name: &str, body: &Map<String, Value>, p: &Principal) -> Option<OpResult> {
        if !p.is_super_user() {
            return Some(Err(OpError::super_user_only(handler_name(name))));
        }
        let ctx = &self.0;
        let caller = Caller::User(p.clone());
        let actor = caller.actor();
        Some(match name {
            "add_node" | "set_node" => set_node(ctx, body, false, &actor),
            "update_node" | "set_node_replication" => set_node(ctx, body, true, &actor),
            "configure_cluster" => configure_cluster(ctx, body, &actor),
            "cluster_set_routes" => super::routes::set_routes(ctx, body),
            "cluster_get_routes" => Ok(Value::Array(
                ctx.routes.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            )),
            "cluster_delete_routes" => super::routes::delete_routes(ctx, body),
            "remove_node" => remove_node(ctx, body, &actor),
            "cluster_status" => Ok(cluster_status(ctx)),
            "cluster_verify" => super::verify::cluster_verify(ctx, body, p),
            "add_node_back" => add_node_back(ctx, body, &caller),
            "remove_node_back" => remove_node_back(ctx, body, &caller),
            _ => return None,
        })
    }
}

/// A peer's `Authorization` value from add_node's `authorization` field.
fn authorization_header(v: Option<&Value>) -> Result<Option<String>, OpError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => {
            let u = o.get("username").and_then(Value::as_str).unwrap_or_default();
            let p = o.get("password").and_then(Value::as_str).unwrap_or_default();
            Ok(Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )))
        }
        Some(_) => Err(OpError::bad_request(
            "'authorization' must be an object with username and password, or an Authorization header string",
        )),
    }
}

/// Sends one operation to the peer at `url` over a one-shot replication socket and returns
/// its answer. Over TLS, with credentials (the `add_node` bootstrap) this node presents no
/// certificate and verifies the peer's only if `verify_tls`; without credentials it proves
/// who it is with its certificate.
pub fn call_peer(
    ctx: &ReplCtx,
    url: &str,
    auth: Option<&str>,
    body: &Value,
    timeout: Duration,
    verify_tls: bool,
) -> Result<(u16, Value), String> {
    let (host, port, tls) =
        super::parse_url_tls(url).ok_or_else(|| format!("'{url}' is not a replication URL"))?;
    let tls = if tls.unwrap_or(ctx.cfg.tls_by_default()) {
        Some(ctx.client_tls(Some(&host), verify_tls, auth.is_none())?)
    } else {
        None
    };
    let mut headers = vec![
        ("X-Skerry-Node", ctx.node_name.clone()),
        ("X-Skerry-Kind", "op".to_string()),
    ];
    if let Some(a) = auth {
        headers.push(("Authorization", a.to_string()));
    }
    let mut cfg = ctx.cfg.conn();
    cfg.connect_timeout = timeout;
    let mut conn = Conn::connect(&host, port, ctx.cfg.bind_ip, &headers, &cfg, tls)?;
    conn.send(&Frame::OpRequest {
        json: body.to_string().into_bytes(),
    })?;
    let reply = conn.recv_frame(timeout)?;
    conn.close("done");
    match reply {
        Frame::OpResponse { status, json } => {
            Ok((status, serde_json::from_slice(&json).unwrap_or(Value::Null)))
        }
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// Serves one operation request on an accepted op socket.
pub fn serve_op(ctx: &Arc<ReplCtx>, mut conn: Conn, caller: &Caller) {
    let frame = match conn.recv_frame(Duration::from_secs(30)) {
        Ok(f) => f,
        Err(e) => {
            log::debug!("operation socket: {e}");
            return;
        }
    };
    let Frame::OpRequest { json } = frame else {
        return;
    };
    let result = match serde_json::from_slice::<Value>(&json) {
        Ok(Value::Object(body)) => match body.get("operation").and_then(Value::as_str) {
            Some("add_node_back") => add_node_back(ctx, &body, caller),
            Some("remove_node_back") => remove_node_back(ctx, &body, caller),
            Some(super::verify::OP) => super::verify::serve(ctx, &body),
            Some("set_configuration") => super::forward::serve_configuration(ctx, &body),
            Some(op) if super::forward::OPS.contains(&op) => {
                super::forward::serve(ctx, &body, caller)
            }
            Some(other) => Err(OpError::bad_request(format!(
                "Operation '{other}' not found"
            ))),
            None => Err(OpError::bad_request(
                "Request body must include an 'operation' property.",
            )),
        },
        _ => Err(OpError::bad_request("Invalid JSON.")),
    };
    let (status, body) = match result {
        Ok(v) => (200, v),
        Err(e) => (e.status, e.body),
    };
    let _ = conn.send(&Frame::OpResponse {
        status,
        json: body.to_string().into_bytes(),
    });
    // Wait briefly for the peer to close first so the answer is not cut by our RST.
    let _ = conn.recv_frame(Duration::from_millis(500));
}

fn row_of(ctx: &ReplCtx, name: &str) -> Option<Map<String, Value>> {
    node_rows(ctx)
        .into_iter()
        .find(|r| r.get("name").and_then(Value::as_str) == Some(name))
}

/// The writes of one membership change, committed as ONE core input
/// ([`WriteOp::Membership`]): row patches are merged against the current rows inside the core
/// (Harper's `ensureNode` patch semantics), so two concurrent changes cannot lose each other's
/// fields, and node-local entries commit in the same group as the rows (a crash keeps all of
/// a change or none of it).
#[derive(Default)]
struct Changes(Vec<MemberChange>);

impl Changes {
    /// Patches `name`'s hdb_nodes row with `fields`.
    fn patch_node(&mut self, name: &str, fields: Map<String, Value>) {
        self.0.push(MemberChange::PatchNode {
            name: name.to_string(),
            fields,
            if_new: Map::new(),
            union: Map::new(),
        });
    }

    fn delete_node(&mut self, name: &str) {
        self.0.push(MemberChange::DeleteNode {
            name: name.to_string(),
        });
    }

    fn local(&mut self, key: String, value: Option<Vec<u8>>) {
        self.0.push(MemberChange::Local { key, value });
    }

    /// Commits every change as one core input made by `actor` (receivers check it: see
    /// `core::records::remote_system_op_allowed`).
    fn commit(self, ctx: &ReplCtx, actor: &Actor) -> Result<(), OpError> {
        if self.0.is_empty() {
            return Ok(());
        }
        ctx.core
            .execute(WriteOp::Membership { changes: self.0 }, actor.clone())
            .map(|_| ())
    }
}

fn set_removed(ctx: &ReplCtx, removed: bool, changes: &mut Changes) {
    if ctx.members.load().removed != removed {
        changes.local(REMOVED_KEY.into(), removed.then(|| vec![1]));
    }
}

/// This node's own row: `replicates: true` and its URL (written only when it says otherwise).
fn ensure_self_row(ctx: &ReplCtx, changes: &mut Changes) {
    let Some(url) = &ctx.node_url else {
        return;
    };
    let mut f = Map::new();
    f.insert("url".into(), json!(url));
    f.insert("replicates".into(), json!(true));
    // This node's CA travels in its own row: every member trusts it for this node's
    // certificate (the gossip that lets a node added through one member reach all over TLS).
    if let Some(ca) = ctx
        .tls
        .as_ref()
        .map(|t| t.trust_pem().to_string())
        .filter(|c| !c.is_empty())
    {
        f.insert("ca_info".into(), ca_info(&ca));
        f.insert("ca".into(), json!(ca));
    }
    let mut if_new = Map::new();
    if_new.insert("subscriptions".into(), Value::Null);
    changes.0.push(MemberChange::PatchNode {
        name: ctx.node_name.clone(),
        fields: f,
        if_new,
        union: Map::new(),
    });
}

/// Refuses a `field` that is neither a DNS name nor an IP literal (400, before anything is
/// stored): such a node would be recorded and dialled forever. The value is quoted as JSON so
/// control characters cannot forge log or answer text.
fn check_host(field: &str, host: &str) -> Result<(), OpError> {
    if super::validate::is_host(host) {
        return Ok(());
    }
    let shown: String = host.chars().take(300).collect();
    Err(OpError::bad_request(format!(
        "'{field}' must be a DNS name or an IP address, received {}",
        json!(shown)
    )))
}

/// Validated add_node / update_node fields.
struct NodeSpec {
    hostname: String,
    url: String,
    auth: Option<String>,
    /// `retain_authorization` as given (None: not given).
    retain: Option<bool>,
    /// `verify_tls` (default true): verify the peer's certificate during the bootstrap.
    verify_tls: bool,
    row: Map<String, Value>,
    /// The link policy the request asks for (None: leave / default).
    policy: Option<LinkPolicy>,
}

fn parse_node_spec(ctx: &ReplCtx, body: &Map<String, Value>) -> Result<NodeSpec, OpError> {
    let f = Fields::new(body);
    let hostname = f.opt_str(&["hostname", "node_name", "name"])?;
    let url = f.opt_str(&["url"])?;
    let verify_tls = f
        .opt_bool(&["verify_tls", "rejectUnauthorized"])?
        .unwrap_or(true);
    let retain = f.opt_bool(&["retain_authorization"])?;
    let (hostname, url) = match (hostname, url) {
        (Some(h), Some(u)) if !h.is_empty() => (h, u),
        (Some(h), None) if !h.is_empty() => {
            let url = ctx.cfg.default_url(&h);
            (h, url)
        }
        (_, Some(u)) => {
            let (host, _) = parse_url(&u).ok_or_else(|| {
                OpError::bad_request(format!("'url' is not a valid replication URL: {u}"))
            })?;
            (host, u)
        }
        _ => return Err(OpError::bad_request("'hostname' or 'url' is required")),
    };
    if parse_url(&url).is_none() || !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err(OpError::bad_request(format!(
            "'url' must look like ws://host:port, got '{url}'"
        )));
    }
    // A URL the caller gave is checked as given (one built from the hostname is checked
    // through the hostname, so the error names the field the caller sent).
    if let Some((host, _)) = f.opt_str(&["url"])?.and_then(|u| parse_url(&u)) {
        if !super::validate::is_host(&host) {
            let shown: String = url.chars().take(300).collect();
            return Err(OpError::bad_request(format!(
                "'url' must name a DNS host or an IP address, received {}",
                json!(shown)
            )));
        }
    }
    check_host("hostname", &hostname)?;
    if hostname == ctx.node_name {
        return Err(OpError::bad_request(format!(
            "'{hostname}' is this node; add_node takes another node"
        )));
    }
    let auth = authorization_header(body.get("authorization"))?;
    let mut row = Map::new();
    row.insert("url".into(), json!(url));
    row.insert("replicates".into(), json!(true));
    row.insert("subscriptions".into(), Value::Null);
    if let Some(shard) = body.get("shard").filter(|v| !v.is_null()) {
        if !shard.is_number() {
            return Err(OpError::bad_request("'shard' must be a number"));
        }
        row.insert("shard".into(), shard.clone());
    }
    if let Some(list) = f.opt_array(&["revoked_certificates"])? {
        row.insert("revoked_certificates".into(), Value::Array(list.clone()));
    }
    let mut start_time = None;
    match body.get("start_time") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            start_time = n.as_u64();
        }
        Some(Value::String(s)) => match crate::util::time::parse_iso8601(s) {
            Some(ms) => {
                start_time = Some(ms);
            }
            None => {
                return Err(OpError::bad_request(format!(
                    "'start_time' must be an ISO 8601 UTC timestamp (e.g. 2024-01-01T00:00:00Z) or epoch milliseconds, received \"{s}\""
                )))
            }
        },
        Some(other) => {
            return Err(OpError::bad_request(format!(
                "'start_time' must be an ISO 8601 UTC timestamp (e.g. 2024-01-01T00:00:00Z) or epoch milliseconds, received {other}"
            )))
        }
    }
    let mut policy = policy_from_fields(body, "").map_err(OpError::bad_request)?;
    if let Some(ms) = start_time {
        policy.get_or_insert_with(LinkPolicy::default).start_time = Some(ms);
    }
    Ok(NodeSpec {
        hostname,
        url,
        auth,
        retain,
        verify_tls,
        row,
        policy,
    })
}

/// add_node / update_node: record the peer, store this side's link policy, and tell the
/// peer (with the mirrored policy) so one call sets up both sides.
fn set_node(ctx: &ReplCtx, body: &Map<String, Value>, update: bool, actor: &Actor) -> OpResult {
    if update
        && Fields::new(body)
            .opt_str(&["hostname", "node_name", "name"])?
            .is_none()
    {
        return Err(OpError::bad_request("'hostname' is required"));
    }
    let mut spec = parse_node_spec(ctx, body)?;
    let Some(my_url) = ctx.node_url.clone() else {
        return Err(OpError::bad_request(
            "replication url is missing from the config (set replication.hostname and replication.port)",
        ));
    };
    // update_node merges subscriptions by (database, table) into the link's current policy,
    // and undoes them when asked: `replicates: true` means full replication again, and
    // `subscriptions: null` or `[]` drops the explicit subscriptions.
    let reset_subs = update
        && (body.get("replicates") == Some(&Value::Bool(true))
            || matches!(body.get("subscriptions"), Some(Value::Null))
            || body
                .get("subscriptions")
                .and_then(Value::as_array)
                .is_some_and(|a| a.is_empty()));
    let policy = match (update, spec.policy.take()) {
        (true, new) if new.is_some() || reset_subs => {
            let mut current = ctx.policy(&spec.hostname);
            if reset_subs {
                current.subscriptions = None;
            }
            if let Some(new) = new {
                current.sends = new.sends;
                current.receives = new.receives;
                if let Some(subs) = new.subscriptions.filter(|s| !s.is_empty()) {
                    current.merge_subscriptions(subs);
                }
                if new.start_time.is_some() {
                    current.start_time = new.start_time;
                }
            }
            Some(current)
        }
        (_, p) => p,
    };
    // Revoked certificates accumulate on update: the union with what the row lists is taken
    // inside the core, against the row as it is when the change commits.
    let mut union = Map::new();
    if update {
        if let Some(list) = spec.row.remove("revoked_certificates") {
            union.insert("revoked_certificates".into(), list);
        }
    }
    // This side's policy first, so what this node sends and accepts is already the new policy
    // when the peer (which stores the mirror before answering) starts using its side.
    if let Some(p) = &policy {
        let mut first = Changes::default();
        store_policy(ctx, &spec.hostname, p, &mut first);
        first.commit(ctx, &Actor::None)?;
        ctx.reload_sync();
    }
    let tls = super::parse_url_tls(&spec.url)
        .and_then(|(_, _, t)| t)
        .unwrap_or(ctx.cfg.tls_by_default());
    let mut back = json!({
        "operation": "add_node_back",
        "hostname": ctx.node_name,
        "url": my_url,
    });
    if let Some(p) = &policy {
        back["policy"] = serde_json::to_value(p.mirrored()).unwrap_or(Value::Null);
    }
    // Over TLS: a certificate signing request for this node's name, and the CA the peer
    // should trust for this node (Harper's add_node flow).
    if tls {
        let Some(node_tls) = &ctx.tls else {
            return Err(OpError::internal(
                "Unable to find a certificate to use for replication",
            ));
        };
        back["csr"] = json!(node_tls.csr().map_err(OpError::internal)?);
        back["ca"] = json!(node_tls.trust_pem());
    }
    let remote_error = match call_peer(
        ctx,
        &spec.url,
        spec.auth.as_deref(),
        &back,
        Duration::from_secs(10),
        spec.verify_tls,
    ) {
        Ok((200, answer)) if tls => match take_signed_certificate(ctx, &spec.hostname, &answer) {
            Ok(ca) => {
                if let Some(ca) = ca {
                    spec.row.insert("ca_info".into(), ca_info(&ca));
                    spec.row.insert("ca".into(), json!(ca));
                }
                None
            }
            Err(e) => Some(format!("Error returned from {}: {e}", spec.url)),
        },
        Ok((200, _)) => None,
        Ok((_, body)) => Some(format!(
            "Error returned from {}: {}",
            spec.url,
            body.get("error")
                .and_then(Value::as_str)
                .unwrap_or("refused")
        )),
        Err(e) => Some(format!("Error returned from {}: {e}", spec.url)),
    };
    // Retained credentials are node-local (never in the replicated row, never logged); turning
    // retention off (or an add_node without it) forgets them.
    let mut changes = Changes::default();
    match (spec.retain, &spec.auth) {
        (Some(true), Some(a)) => store_retained_auth(ctx, &spec.hostname, Some(a), &mut changes),
        (Some(false), _) | (None, _) if !update || spec.retain == Some(false) => {
            store_retained_auth(ctx, &spec.hostname, None, &mut changes)
        }
        _ => {}
    }
    // Adding a peer from here means this node is (again) in a cluster.
    set_removed(ctx, false, &mut changes);
    changes.0.push(MemberChange::PatchNode {
        name: spec.hostname.clone(),
        fields: spec.row,
        if_new: Map::new(),
        union,
    });
    ensure_self_row(ctx, &mut changes);
    changes.commit(ctx, actor)?;
    ctx.reload_sync();
    ctx.redial(&spec.hostname);
    let mut msg = if update {
        format!("Successfully updated '{}'", spec.hostname)
    } else {
        format!("Successfully added '{}' to cluster", spec.hostname)
    };
    if let Some(e) = remote_error {
        msg.push_str(&format!(
            " but there was an error updating target node: {e}"
        ));
    }
    Ok(json!({ "message": msg }))
}

/// Stores the certificate the peer's CA signed for this node; returns the CA the peer uses
/// (to trust for it).
fn take_signed_certificate(
    ctx: &ReplCtx,
    peer: &str,
    answer: &Value,
) -> Result<Option<String>, String> {
    let Some(cert) = answer.get("certificate").and_then(Value::as_str) else {
        return Err(format!(
            "Unexpected certificate signature response from node {peer} response: {answer}"
        ));
    };
    if let Some(tls) = &ctx.tls {
        tls.store_peer_signed(peer, cert)?;
    }
    // A peer with an operator certificate and no configured CA has no CA to give (its
    // issuer is trusted some other way: an added authority, or the public roots).
    let ca = ["usingCA", "signingCA"]
        .iter()
        .filter_map(|k| answer.get(*k).and_then(Value::as_str))
        .find(|s| !s.trim().is_empty())
        .map(str::to_string);
    if let Some(ca) = &ca {
        check_ca(ca).map_err(|e| format!("the peer's CA: {e}"))?;
    }
    Ok(ca)
}

/// Harper's `ca_info` of a CA PEM: the details of its first certificate.
/// A CA a peer hands over must be PEM *and* X.509 inside: PEM markers around base64 garbage
/// used to be stored (and replicated to every member) as a CA that trusts nothing, with
/// `ca_info: null`, instead of being refused.
fn check_ca(pem: &str) -> Result<(), String> {
    for der in crate::tls::certs_from_pem(pem)? {
        crate::tls::info::CertInfo::from_der(&der)?;
    }
    Ok(())
}

fn ca_info(pem: &str) -> Value {
    crate::tls::certs_from_pem(pem)
        .ok()
        .and_then(|c| crate::tls::info::CertInfo::from_der(c.first()?).ok())
        .map(|i| {
            let date = |s: i64| crate::util::time::http_date(u64::try_from(s).unwrap_or(0) * 1000);
            json!({"issuer": i.issuer, "subject": i.subject, "subjectAltName": i.names.join(", "),
                "serialNumber": i.serial, "validFrom": date(i.not_before), "validTo": date(i.not_after)})
        })
        .unwrap_or(Value::Null)
}

/// configure_cluster: the listed connections become the cluster. Listed nodes are added or
/// updated (policies included); members not listed are removed. Every connection is validated
/// before anything changes; a connection that then fails (peer unreachable, refused) is
/// reported in the answer with the reason.
fn configure_cluster(ctx: &ReplCtx, body: &Map<String, Value>, actor: &Actor) -> OpResult {
    let connections = match body.get("connections") {
        None | Some(Value::Null) => return Err(OpError::bad_request("'connections' is required")),
        Some(Value::Array(c)) => c.clone(),
        Some(_) => return Err(OpError::bad_request("'connections' must be an array")),
    };
    let mut specs = Vec::new();
    for (i, c) in connections.iter().enumerate() {
        let Value::Object(o) = c else {
            return Err(OpError::bad_request(format!(
                "'connections[{i}]' must be an object"
            )));
        };
        let spec = parse_node_spec(ctx, o)
            .map_err(|e| OpError::bad_request(format!("connections[{i}]: {}", e.message())))?;
        specs.push((o.clone(), spec.hostname));
    }
    let mut results = Vec::new();
    let mut failed = 0;
    for (o, hostname) in &specs {
        match set_node(ctx, o, false, actor) {
            Ok(v) => {
                let msg = v
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if msg.contains("but there was an error") {
                    failed += 1;
                }
                results.push(json!({"hostname": hostname, "response": msg}));
            }
            Err(e) => {
                failed += 1;
                results.push(json!({"hostname": hostname, "error": e.message()}));
            }
        }
    }
    let listed: Vec<&String> = specs.iter().map(|(_, h)| h).collect();
    let mut removed = Vec::new();
    for row in node_rows(ctx) {
        let Some(name) = row.get("name").and_then(Value::as_str).map(str::to_string) else {
            continue;
        };
        if name == ctx.node_name || listed.contains(&&name) {
            continue;
        }
        let mut req = Map::new();
        req.insert("hostname".into(), json!(name));
        match remove_node(ctx, &req, actor) {
            Ok(_) => removed.push(json!(name)),
            Err(e) => {
                failed += 1;
                results.push(json!({"hostname": name, "error": format!("could not remove: {}", e.message())}));
            }
        }
    }
    let message = if failed == 0 {
        "Cluster successfully configured.".to_string()
    } else {
        format!(
            "Cluster configured, but {failed} connection(s) reported errors: see 'connections'."
        )
    };
    Ok(json!({"message": message, "connections": results, "removed": removed}))
}

/// Node-local key of the credentials retained for a peer (`retain_authorization: true`).
pub fn retained_auth_key(peer: &str) -> String {
    format!("auth:{peer}")
}

/// The credentials retained for a peer, if any.
pub fn retained_auth(ctx: &ReplCtx, peer: &str) -> Option<String> {
    ctx.store
        .local(&retained_auth_key(peer))
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok())
}

fn store_retained_auth(ctx: &ReplCtx, peer: &str, auth: Option<&str>, changes: &mut Changes) {
    if auth.is_none() && retained_auth(ctx, peer).is_none() {
        return;
    }
    changes.local(retained_auth_key(peer), auth.map(|a| a.as_bytes().to_vec()));
}

/// Node-local key: the link with `peer` widened, so this node's next session of `db` with it
/// starts with a full copy (see `LinkPolicy::widens`).
pub fn widened_key(peer: &str, db: &str) -> String {
    format!("widened:{peer}:{db}")
}

/// Stores this node's policy for a link (node-local; full replication removes the entry). A
/// policy that receives more than the old one marks every replicated database for a copy
/// from the peer, before the new policy takes effect.
fn store_policy(ctx: &ReplCtx, peer: &str, p: &LinkPolicy, changes: &mut Changes) {
    if p.widens(&ctx.policy(peer)) {
        let catalog = ctx.shared.catalog.load();
        for db in catalog
            .databases
            .keys()
            .filter(|d| ctx.cfg.replicates_db(d) && d.as_str() != crate::core::catalog::SYSTEM_DB)
        {
            log::info!("the link with {peer} widened: {db} will be copied from it");
            changes.local(widened_key(peer, db), Some(vec![1]));
        }
    }
    changes.local(
        link_key(peer),
        (!p.is_default()).then(|| serde_json::to_vec(p).unwrap_or_default()),
    );
}

/// The peer side of add_node: record the node that added us (and ourselves).
fn add_node_back(ctx: &ReplCtx, body: &Map<String, Value>, caller: &Caller) -> OpResult {
    let f = Fields::new(body);
    let hostname = f.req_str(&["hostname"])?;
    check_host("hostname", &hostname)?;
    let url = f
        .opt_str(&["url"])?
        .unwrap_or_else(|| ctx.cfg.default_url(&hostname));
    if let Caller::Node(n) = caller {
        if n != &hostname {
            return Err(OpError::new(
                403,
                format!("node '{n}' may not register '{hostname}'"),
            ));
        }
    }
    let mut row = Map::new();
    row.insert("url".into(), json!(url));
    row.insert("replicates".into(), json!(true));
    row.insert("subscriptions".into(), Value::Null);
    // The requester's CA (trusted for it from now on) and its certificate request, signed
    // here only for the requester's own name.
    let mut answer = Map::new();
    if let Some(ca) = f.opt_str(&["ca", "cert_auth"])? {
        check_ca(&ca)
            .map_err(|e| OpError::bad_request(format!("'ca' is not a certificate: {e}")))?;
        row.insert("ca_info".into(), ca_info(&ca));
        row.insert("ca".into(), json!(ca));
    }
    if let Some(csr) = f.opt_str(&["csr"])? {
        let Some(tls) = &ctx.tls else {
            return Err(OpError::bad_request(
                "this node has no certificate authority to sign with",
            ));
        };
        let cert = tls
            .sign_csr(&csr, &hostname)
            .map_err(OpError::bad_request)?;
        answer.insert("certificate".into(), json!(cert));
        answer.insert("signingCA".into(), json!(tls.ca_pem()));
        answer.insert("usingCA".into(), json!(tls.trust_pem()));
    }
    let policy = match body.get("policy").filter(|v| !v.is_null()) {
        Some(v) => Some(
            serde_json::from_value::<LinkPolicy>(v.clone())
                .map_err(|e| OpError::bad_request(format!("'policy' is invalid: {e}")))?,
        ),
        None => None,
    };
    // One core input: a crash cannot keep the peer's row without this node's own, or the
    // policy without the row.
    let mut changes = Changes::default();
    set_removed(ctx, false, &mut changes);
    if let Some(p) = &policy {
        store_policy(ctx, &hostname, p, &mut changes);
    }
    changes.patch_node(&hostname, row);
    ensure_self_row(ctx, &mut changes);
    changes.commit(ctx, &caller.actor())?;
    ctx.reload_sync();
    ctx.redial(&hostname);
    answer.insert(
        "message".into(),
        json!(format!("Successfully added '{hostname}' to cluster")),
    );
    answer.insert("nodeName".into(), json!(ctx.node_name));
    Ok(Value::Object(answer))
}

fn remove_node(ctx: &ReplCtx, body: &Map<String, Value>, actor: &Actor) -> OpResult {
    let f = Fields::new(body);
    let (hostname, port) = match f.opt_str(&["hostname", "name", "node_name"])? {
        Some(h) if !h.is_empty() => (h, None),
        _ => match f.opt_str(&["url"])?.and_then(|u| parse_url(&u)) {
            Some((h, p)) => (h, Some(p)),
            None => return Err(OpError::bad_request("'hostname' is required")),
        },
    };
    if hostname == ctx.node_name {
        return Err(OpError::bad_request(format!(
            "'{hostname}' is this node; run remove_node on another member to remove it"
        )));
    }
    // A peer is a member through its hdb_nodes row, a configured route, or both: every one of
    // them goes, or the peer stays a member (and connected) through what is left.
    let row = row_of(ctx, &hostname);
    let routes = super::routes::routes_to(ctx, &hostname, port);
    if row.is_none() && routes.is_empty() {
        return Err(OpError::bad_request(format!("{hostname} does not exist")));
    }
    if let Some(row) = &row {
        // Tell the node it is out (best effort: it may be down; the replicated tombstone of
        // its row makes every other member drop it either way). A peer known only by a route
        // is not told: it may belong to another cluster, which it should not leave for this
        // node's change of routes.
        let url = row.get("url").and_then(Value::as_str).unwrap_or_default();
        if parse_url(url).is_some() {
            let back = json!({"operation": "remove_node_back", "name": hostname});
            let auth = retained_auth(ctx, &hostname);
            if let Err(e) = call_peer(
                ctx,
                url,
                auth.as_deref(),
                &back,
                Duration::from_secs(3),
                true,
            ) {
                log::info!("could not tell {hostname} it was removed: {e}");
            }
        }
    }
    let mut changes = Changes::default();
    if row.is_some() {
        changes.delete_node(&hostname);
    }
    changes.local(link_key(&hostname), None);
    store_retained_auth(ctx, &hostname, None, &mut changes);
    changes.commit(ctx, actor)?;
    // Persists the routes and reloads: the manager stops the receiving threads and cuts the
    // sending sessions of a peer that is no longer a member.
    super::routes::remove_routes(ctx, &routes)?;
    // The link's statistics stay: a socket thread of this peer may still be winding down and
    // keeps publishing into them; replacing them orphaned that thread's figures.
    ctx.reload_sync();
    let message = match (row.is_some(), routes.is_empty()) {
        // Harper's answer when only the hdb_nodes row was there.
        (true, true) => format!("Successfully removed '{hostname}' from cluster"),
        (true, false) => format!(
            "Successfully removed '{hostname}' from cluster: removed its hdb_nodes record and its route in replication.routes"
        ),
        (false, _) => format!(
            "Successfully removed '{hostname}' from cluster: removed its route in replication.routes (it had no hdb_nodes record)"
        ),
    };
    Ok(json!({ "message": message }))
}

/// The peer side of remove_node: this node leaves the cluster until it is added again.
fn remove_node_back(ctx: &ReplCtx, body: &Map<String, Value>, caller: &Caller) -> OpResult {
    let name = Fields::new(body)
        .opt_str(&["name", "hostname"])?
        .unwrap_or_else(|| ctx.node_name.clone());
    if name != ctx.node_name {
        return Err(OpError::bad_request(format!(
            "remove_node_back may only remove this node, not '{name}'"
        )));
    }
    log::warn!(
        "removed from the cluster by {caller:?}; replication stops until this node is added again"
    );
    let mut changes = Changes::default();
    set_removed(ctx, true, &mut changes);
    changes.commit(ctx, &Actor::None)?;
    ctx.reload_sync();
    Ok(json!({ "message": format!("Successfully removed '{name}' from cluster") }))
}

fn http_date_or_none(ms: u64) -> Option<Value> {
    (ms > 0).then(|| json!(crate::util::time::http_date(ms)))
}

fn cluster_status(ctx: &Arc<ReplCtx>) -> Value {
    let members = ctx.members.load();
    let rows = node_rows(ctx);
    let mut dbs: Vec<String> = ctx.replicated_databases().into_iter().collect();
    // Harper lists the system socket first.
    dbs.sort_by_key(|d| (d != "system", d.clone()));
    // Whether this node's table digests equal each peer's, per database (cached, refreshed
    // in the background; never waits on a slow peer for more than a second).
    let pairs: Vec<(String, String)> = if members.removed {
        Vec::new()
    } else {
        members
            .names
            .iter()
            .filter(|n| **n != ctx.node_name)
            .flat_map(|n| dbs.iter().map(move |d| (n.clone(), d.clone())))
            .collect()
    };
    let matches = super::verify::status_matches(ctx, &pairs);
    let mut connections = Vec::new();
    for name in members.names.iter().filter(|n| **n != ctx.node_name) {
        let mut conn = rows
            .iter()
            .find(|r| r.get("name").and_then(Value::as_str) == Some(name.as_str()))
            .cloned()
            .unwrap_or_else(|| {
                let mut m = Map::new();
                m.insert("name".into(), json!(name));
                m.insert("url".into(), json!(ctx.cfg.default_url(name)));
                m.insert("replicates".into(), json!(true));
                m.insert("subscriptions".into(), Value::Null);
                m
            });
        for k in [
            "ca",
            "ca_info",
            "node_name",
            CREATED_TIME,
            UPDATED_TIME,
            "authorization",
        ] {
            conn.remove(k);
        }
        // What flows over this link is this node's own policy, not the replicated row.
        let policy = ctx.policy(name);
        conn.insert("replicates".into(), policy.replicates_value());
        conn.insert("subscriptions".into(), policy.subscriptions_value());
        // The certificates the peer proved itself with on TLS links (the one it serves, and
        // the one it dials this node with when that differs), with their expiry.
        let now = crate::util::time::now_ms();
        let mut served = None;
        let mut dialled = None;
        for db in &dbs {
            let l = ctx.stats.link(name, db);
            served = served.or_else(|| {
                l.peer_cert
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            });
            dialled = dialled.or_else(|| {
                l.peer_client_cert
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            });
        }
        if let Some(c) = served.as_ref().or(dialled.as_ref()) {
            conn.insert("certificate".into(), c.to_json(now));
        }
        if let (Some(s), Some(d)) = (&served, &dialled) {
            if s.serial != d.serial {
                conn.insert("client_certificate".into(), d.to_json(now));
            }
        }
        let sockets: Vec<Value> = if members.removed {
            Vec::new()
        } else {
            dbs.iter()
                .map(|db| {
                    let mut s = socket_status(ctx, name, db, &policy);
                    s["digest_match"] = matches
                        .get(&(name.clone(), db.clone()))
                        .cloned()
                        .unwrap_or(Value::Null);
                    s
                })
                .collect()
        };
        conn.insert("database_sockets".into(), Value::Array(sockets));
        connections.push(Value::Object(conn));
    }
    let mut out = json!({
        "type": "cluster-status",
        "connections": connections,
        "node_name": ctx.node_name,
        "is_enabled": !members.removed,
    });
    if let Some(url) = &ctx.node_url {
        out["url"] = json!(url);
    }
    out
}

/// How far a peer is behind this node for one origin of one database.
pub struct OriginLag {
    pub origin: String,
    /// Age of the newest transaction the peer has not acknowledged, relative to what this
    /// node holds (0 = caught up).
    pub behind_ms: u64,
    /// Records in the transactions it has not acknowledged (counted over at most
    /// `LAG_SCAN` transactions; `capped` when there are more).
    pub records: u64,
    pub capped: bool,
}

/// Transactions scanned per origin to count a lag in records.
const LAG_SCAN: usize = 10_000;

/// The peer's lag on `db`, for every origin it has acknowledged on the stream this node
/// sends it: this node's version vector against the peer's acknowledgements.
pub fn lag_of(ctx: &ReplCtx, peer: &str, db: &str) -> Vec<OriginLag> {
    let acked = ctx
        .stats
        .link(peer, db)
        .acked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if acked.is_empty() {
        return Vec::new();
    }
    let Some(db_id) = ctx.shared.catalog.load().database(db).map(|d| d.id) else {
        return Vec::new();
    };
    let (Ok(local), Ok(names)) = (ctx.store.cursor_vector(db_id), ctx.store.origin_names()) else {
        return Vec::new();
    };
    let ids: std::collections::HashMap<&str, u32> =
        names.iter().map(|(id, n)| (n.as_str(), *id)).collect();
    let mut out = Vec::new();
    for (origin, have) in &local {
        let Some(&theirs) = acked.get(origin) else {
            continue;
        };
        if *have <= theirs {
            out.push(OriginLag {
                origin: origin.clone(),
                behind_ms: 0,
                records: 0,
                capped: false,
            });
            continue;
        }
        let behind_ms =
            crate::core::hlc::ms_of(*have).saturating_sub(crate::core::hlc::ms_of(theirs));
        let (mut records, mut capped) = (0u64, false);
        if let Some(&id) = ids.get(origin.as_str()) {
            for (i, entry) in ctx.store.audit_after(db_id, id, theirs).enumerate() {
                if i == LAG_SCAN {
                    capped = true;
                    break;
                }
                match entry {
                    Ok((_, ops)) => {
                        records += crate::core::txn::decode_ops(&ops).map_or(0, |o| o.len() as u64)
                    }
                    Err(_) => break,
                }
            }
        }
        out.push(OriginLag {
            origin: origin.clone(),
            behind_ms,
            records,
            capped,
        });
    }
    out.sort_by(|a, b| a.origin.cmp(&b.origin));
    out
}

/// Every current member's links, for metrics and the status page.
pub fn link_snaps(ctx: &ReplCtx) -> Vec<crate::obs::LinkSnap> {
    let members = ctx.members.load();
    let now = crate::util::time::now_ms();
    let mut out = Vec::new();
    for ((peer, db), s) in ctx.stats.all() {
        if !members.names.contains(&peer) || peer == ctx.node_name {
            continue;
        }
        let lags = lag_of(ctx, &peer, &db);
        let progress = s.copy_progress(now);
        let cert = s
            .peer_cert
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.days_left(now));
        out.push(crate::obs::LinkSnap {
            receiving: s.pull.connected.load(Ordering::SeqCst),
            sending: s.push.connected.load(Ordering::SeqCst),
            records_received: s.records_received.load(Ordering::Relaxed),
            records_sent: s.records_sent.load(Ordering::Relaxed),
            lag_ms: lags.iter().map(|l| l.behind_ms).max().unwrap_or(0),
            lag_records: lags.iter().map(|l| l.records).sum(),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            copy_in: progress.filter(|p| p.0 == "receiving").map(|p| (p.1, p.2)),
            copy_out: progress.filter(|p| p.0 == "sending").map(|p| (p.1, p.2)),
            cert_days_left: cert,
            peer,
            database: db,
        });
    }
    out
}

fn socket_status(ctx: &ReplCtx, peer: &str, db: &str, policy: &LinkPolicy) -> Value {
    let s = ctx.stats.link(peer, db);
    let pull_up = s.pull.connected.load(Ordering::SeqCst);
    let push_up = s.push.connected.load(Ordering::SeqCst);
    // The round trip of the live directions only: a figure left by an ended session is stale.
    let latency_us = [
        (pull_up, s.pull.latency_us.load(Ordering::Relaxed)),
        (push_up, s.push.latency_us.load(Ordering::Relaxed)),
    ]
    .into_iter()
    .filter(|(up, l)| *up && *l > 0)
    .map(|(_, l)| l)
    .min();
    let mut o = Map::new();
    o.insert("database".into(), json!(db));
    // Every direction this link's policy uses must be live (a publish-only link has no socket
    // to receive on, so only the sending one counts).
    let (want_pull, want_push) = (policy.receives_any(db), policy.sends_any(db));
    let connected = (want_pull || want_push) && (pull_up || !want_pull) && (push_up || !want_push);
    o.insert("connected".into(), json!(connected));
    o.insert("receiving".into(), json!(pull_up));
    o.insert("sending".into(), json!(push_up));
    o.insert(
        "latency".into(),
        latency_us.map_or(Value::Null, |us| json!(us as f64 / 1000.0)),
    );
    o.insert(
        "thread_id".into(),
        json!(s.pull.thread_id.load(Ordering::Relaxed)),
    );
    o.insert(
        "nodes".into(),
        json!(s.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone()),
    );
    let dates = [
        (
            "lastCommitConfirmed",
            s.last_commit_confirmed_ms.load(Ordering::Relaxed),
        ),
        (
            "lastReceivedRemoteTime",
            crate::core::hlc::ms_of(s.last_received_version.load(Ordering::Relaxed)),
        ),
        (
            "lastReceivedLocalTime",
            s.last_received_local_ms.load(Ordering::Relaxed),
        ),
        ("lastSendTime", s.last_send_ms.load(Ordering::Relaxed)),
    ];
    for (k, ms) in dates {
        if let Some(v) = http_date_or_none(ms) {
            o.insert(k.into(), v);
        }
    }
    let received = s.last_received_version.load(Ordering::Relaxed);
    o.insert(
        "lastReceivedVersion".into(),
        json!(crate::core::hlc::to_ms_f64(received)),
    );
    let copying_out = s.copying_out.load(Ordering::Relaxed);
    if copying_out {
        // Harper's marker for a bulk copy in progress.
        o.insert("sendingMessage".into(), json!("Copying"));
    }
    if let Some((direction, done, total, eta)) = s.copy_progress(crate::util::time::now_ms()) {
        let mut c = json!({"direction": direction, "records": done});
        if total > 0 {
            c["total"] = json!(total);
            c["percent"] = json!(((done as f64 * 1000.0 / total as f64).round() / 10.0).min(100.0));
        }
        if let Some(ms) = eta {
            c["eta_seconds"] = json!((ms as f64 / 100.0).round() / 10.0);
        }
        o.insert("copy".into(), c);
    }
    let lags = lag_of(ctx, peer, db);
    if !lags.is_empty() {
        o.insert(
            "lagSeconds".into(),
            json!(lags.iter().map(|l| l.behind_ms).max().unwrap_or(0) as f64 / 1000.0),
        );
        o.insert(
            "lagRecords".into(),
            json!(lags.iter().map(|l| l.records).sum::<u64>()),
        );
        o.insert(
            "lag".into(),
            Value::Array(
                lags.iter()
                    .map(|l| {
                        let mut v = json!({"origin": l.origin, "seconds": l.behind_ms as f64 / 1000.0, "records": l.records});
                        if l.capped {
                            v["records_at_least"] = json!(true);
                        }
                        v
                    })
                    .collect(),
            ),
        );
    }
    let sending = s.sending_version.load(Ordering::Relaxed);
    if sending > 0 && !copying_out {
        if let Some(v) = http_date_or_none(crate::core::hlc::ms_of(sending)) {
            o.insert("sendingMessage".into(), v);
        }
    }
    o.insert(
        "recordsReceived".into(),
        json!(s.records_received.load(Ordering::Relaxed)),
    );
    o.insert(
        "recordsSent".into(),
        json!(s.records_sent.load(Ordering::Relaxed)),
    );
    if !connected {
        if let Some((at, e)) = s
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            o.insert(
                "lastConnectionError".into(),
                json!({"message": e, "time": crate::util::time::http_date(at)}),
            );
        }
    }
    Value::Object(o)
}
