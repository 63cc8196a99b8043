//! The membership manager thread: turns `system.hdb_nodes`, the configured routes, the local
//! databases and live-session events into running pull sockets (one thread per peer and
//! database) and tells each which origins to carry. The decisions are [`Topology`]'s; this
//! module only reads inputs and starts/stops threads.

use super::pull::{self, PullCtl};
use super::topology::{Carry, Member, Topology};
use super::{MemberView, MgrEvent, ReplCtx, REMOVED_KEY};
use crate::core::catalog::{HDB_NODES, SYSTEM_DB};
use crate::store::record::StoredRecord;
use crossbeam_channel::{Receiver, Sender};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;

struct PullHandle {
    ctl: Sender<PullCtl>,
    member: Member,
    carry: Carry,
    /// The link policy the session started with: a change restarts the session so it
    /// subscribes (or copies) under the new policy.
    policy: super::policy::LinkPolicy,
}

/// Live rows of `system.hdb_nodes`.
pub fn node_rows(ctx: &ReplCtx) -> Vec<Map<String, Value>> {
    let catalog = ctx.shared.catalog.load();
    let Some(t) = catalog.table(SYSTEM_DB, HDB_NODES) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    match ctx.store.scan_table(t.id, None) {
        Ok(iter) => {
            for item in iter {
                match item {
                    Ok((_, raw)) => {
                        if let Some(json) = StoredRecord::json_slice(&raw) {
                            if let Ok(Value::Object(m)) = serde_json::from_slice(json) {
                                out.push(m);
                            }
                        }
                    }
                    Err(e) => log::error!("cannot read hdb_nodes: {e}"),
                }
            }
        }
        Err(e) => log::error!("cannot read hdb_nodes: {e}"),
    }
    out
}

/// A member from a hdb_nodes row (None if it does not replicate or has no address).
pub fn member_from_row(
    row: &Map<String, Value>,
    default_port: u16,
    default_tls: bool,
) -> Option<Member> {
    let name = row.get("name")?.as_str()?.to_string();
    if row.get("replicates") == Some(&Value::Bool(false))
        && row.get("subscriptions").is_none_or(Value::is_null)
    {
        return None;
    }
    let (host, port, tls) = match row.get("url").and_then(Value::as_str) {
        Some(url) => {
            let (h, p, tls) = super::parse_url_tls(url)?;
            (h, p, tls.unwrap_or(default_tls))
        }
        None => (name.clone(), default_port, default_tls),
    };
    Some(Member {
        name,
        host,
        port,
        tls,
    })
}

/// A member from a `replication.routes` entry; `None` for a route that is malformed or says
/// `replicates: false` without subscriptions (listed, but nothing flows over it).
pub fn member_from_route(route: &Value, default_port: u16, default_tls: bool) -> Option<Member> {
    if let Value::Object(o) = route {
        if o.get("replicates") == Some(&Value::Bool(false))
            && o.get("subscriptions").is_none_or(Value::is_null)
        {
            return None;
        }
    }
    let (host, port) = super::routes::route_key(route, default_port)?;
    let tls = match route {
        Value::String(s) => super::parse_url_tls(s).and_then(|(_, _, t)| t),
        Value::Object(o) => o
            .get("url")
            .and_then(Value::as_str)
            .and_then(super::parse_url_tls)
            .and_then(|(_, _, t)| t),
        _ => None,
    }
    .unwrap_or(default_tls);
    Some(Member {
        name: host.clone(),
        host,
        port,
        tls,
    })
}

fn reload(ctx: &ReplCtx, topo: &mut Topology) {
    let port = ctx.cfg.default_port();
    let tls = ctx.cfg.tls_by_default();
    let mut members = BTreeMap::new();
    for route in ctx.routes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        if let Some(m) = member_from_route(route, port, tls) {
            members.insert(m.name.clone(), m);
        }
    }
    let rows = node_rows(ctx);
    reload_trust(ctx, &rows);
    // Rows win over routes for the same name: they carry the peer's own URL.
    for row in rows {
        if let Some(m) = member_from_row(&row, port, tls) {
            members.insert(m.name.clone(), m);
        }
    }
    // Policies: a route's own fields, overridden by what add_node/update_node stored here.
    let mut policies = BTreeMap::new();
    for route in ctx.routes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        if let (Some(m), Value::Object(o)) = (member_from_route(route, port, tls), route) {
            match super::policy::policy_from_fields(o, "route") {
                Ok(Some(p)) => {
                    policies.insert(m.name, p);
                }
                Ok(None) => {}
                Err(e) => log::warn!("ignoring the policy of route {route}: {e}"),
            }
        }
    }
    for name in members.keys() {
        if let Ok(Some(raw)) = ctx.store.local(&super::link_key(name)) {
            match serde_json::from_slice::<super::policy::LinkPolicy>(&raw) {
                Ok(p) => {
                    policies.insert(name.clone(), p);
                }
                Err(e) => log::warn!("unreadable link policy for {name}: {e}"),
            }
        }
    }
    policies.retain(|_, p: &mut super::policy::LinkPolicy| !p.is_default());
    ctx.policies
        .store(Arc::new(policies.clone().into_iter().collect()));
    topo.policies = policies;
    topo.members = members;
    topo.databases = ctx.replicated_databases();
    topo.removed = matches!(ctx.store.local(REMOVED_KEY), Ok(Some(v)) if v == [1]);
    ctx.members.store(Arc::new(MemberView {
        names: topo.members.keys().cloned().collect(),
        urls: topo
            .members
            .iter()
            .map(|(n, m)| {
                let host = if m.host.contains(':') {
                    format!("[{}]", m.host)
                } else {
                    m.host.clone()
                };
                let scheme = if m.tls { "wss" } else { "ws" };
                (n.clone(), format!("{scheme}://{host}:{}", m.port))
            })
            .collect(),
        removed: topo.removed,
    }));
}

/// Rebuilds what TLS trusts from the membership rows: every member's CA (`ca`) and every
/// revoked serial (`revoked_certificates`). The server configuration is rebuilt only when the
/// CAs changed; sessions notice revocations on their next tick (within a second).
fn reload_trust(ctx: &ReplCtx, rows: &[Map<String, Value>]) {
    let mut cas = Vec::new();
    let mut revoked = std::collections::HashSet::new();
    for row in rows {
        if let Some(pem) = row.get("ca").and_then(Value::as_str) {
            match crate::tls::certs_from_pem(pem) {
                Ok(c) => cas.extend(c),
                Err(e) => log::warn!(
                    "ignoring the CA of {:?}: {e}",
                    row.get("name").and_then(Value::as_str)
                ),
            }
        }
        if let Some(list) = row.get("revoked_certificates").and_then(Value::as_array) {
            for serial in list.iter().filter_map(Value::as_str) {
                revoked.insert(crate::tls::info::normalize_serial(serial));
            }
        }
    }
    // Authorities the operator added (add_certificate) are trusted like members' CAs.
    if let Some(t) = &ctx.tls {
        cas.extend(t.added().authorities());
    }
    let current = ctx.trust.load();
    if current.member_cas == cas && current.revoked == revoked {
        return;
    }
    let server = match &ctx.tls {
        Some(t) if current.member_cas != cas => match t.server_config(&cas) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot rebuild the TLS configuration: {e}");
                current.server.clone()
            }
        },
        _ => current.server.clone(),
    };
    ctx.trust.store(Arc::new(super::TrustState {
        member_cas: cas,
        server,
        revoked,
    }));
}

pub fn run(ctx: Arc<ReplCtx>, rx: Receiver<MgrEvent>) {
    let mut topo = Topology::new(&ctx.node_name);
    let mut pulls: BTreeMap<(String, String), PullHandle> = BTreeMap::new();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut live: std::collections::HashMap<(String, String), u64> = Default::default();
    'outer: while let Ok(first) = rx.recv() {
        let mut events = vec![first];
        events.extend(rx.try_iter());
        let mut do_reload = false;
        let mut acks = Vec::new();
        let mut redial = std::collections::BTreeSet::new();
        for ev in events {
            match ev {
                MgrEvent::Reload => do_reload = true,
                MgrEvent::ReloadAndAck(tx) => {
                    do_reload = true;
                    acks.push(tx);
                }
                MgrEvent::SessionUp { peer, db, sid } => {
                    live.insert((peer.clone(), db.clone()), sid);
                    topo.alive.insert((peer, db));
                }
                MgrEvent::SessionDown { peer, db, sid } => {
                    // A replaced session ends after its successor started: only the session
                    // that is live for this link may take it down.
                    let key = (peer, db);
                    if live.get(&key) == Some(&sid) {
                        live.remove(&key);
                        topo.alive.remove(&key);
                    }
                }
                MgrEvent::Redial { peer } => {
                    redial.insert(peer);
                }
                MgrEvent::Stop => break 'outer,
            }
        }
        if do_reload {
            reload(&ctx, &mut topo);
            // Sending sessions of peers that are no longer members (or all of them, once this
            // node is removed) are cut now rather than at their next wake-up.
            let mut sessions = ctx.push_sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.retain(|(peer, _), (_, sock)| {
                let keep = !topo.removed && topo.members.contains_key(peer);
                if !keep {
                    let _ = sock.shutdown(std::net::Shutdown::Both);
                }
                keep
            });
        }
        let desired = topo.desired();
        pulls.retain(|key, h| {
            let keep = desired.get(key) == Some(&h.member)
                && topo.policies.get(&key.0).cloned().unwrap_or_default() == h.policy;
            if !keep {
                let _ = h.ctl.send(PullCtl::Stop);
                topo.alive.remove(key);
                live.remove(key);
            }
            keep
        });
        for (key, member) in &desired {
            if pulls.contains_key(key) {
                continue;
            }
            let (tx, crx) = crossbeam_channel::unbounded();
            let carry = topo.carry(&key.0, &key.1);
            match pull::spawn(
                ctx.clone(),
                member.clone(),
                key.1.clone(),
                carry.clone(),
                crx,
            ) {
                Ok(t) => {
                    threads.push(t);
                    pulls.insert(
                        key.clone(),
                        PullHandle {
                            ctl: tx,
                            member: member.clone(),
                            carry,
                            policy: topo.policies.get(&key.0).cloned().unwrap_or_default(),
                        },
                    );
                }
                Err(e) => log::error!("cannot start a replication thread: {e}"),
            }
        }
        for (key, h) in pulls.iter_mut() {
            let carry = topo.carry(&key.0, &key.1);
            if carry != h.carry {
                h.carry = carry.clone();
                let _ = h.ctl.send(PullCtl::SetOrigins(carry));
            }
        }
        // After the spawns: a thread started just now dials at once anyway.
        for ((peer, _), h) in pulls.iter() {
            if redial.contains(peer) {
                let _ = h.ctl.send(PullCtl::Redial);
            }
        }
        threads.retain(|t| !t.is_finished());
        if do_reload {
            ctx.manager_ready
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        for a in acks {
            let _ = a.send(());
        }
    }
    ctx.manager_ready
        .store(false, std::sync::atomic::Ordering::SeqCst);
    for h in pulls.values() {
        let _ = h.ctl.send(PullCtl::Stop);
    }
    for t in threads {
        let _ = t.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_and_routes_become_members() {
        let row = json!({"name":"127.0.0.2","url":"ws://127.0.0.2:9933","replicates":true});
        let m = member_from_row(row.as_object().unwrap(), 9933, false).unwrap();
        assert_eq!(
            (m.name.as_str(), m.host.as_str(), m.port),
            ("127.0.0.2", "127.0.0.2", 9933)
        );
        let off = json!({"name":"x","url":"ws://x:1","replicates":false});
        assert!(member_from_row(off.as_object().unwrap(), 9933, false).is_none());
        let cases = [
            (json!("127.0.0.3"), Some(("127.0.0.3", 7000))),
            (json!("ws://h:9940"), Some(("h", 9940))),
            (json!({"hostname":"h2","port":9950}), Some(("h2", 9950))),
            (json!({"host":"h3"}), Some(("h3", 7000))),
            (json!({"hostname":"h4","port":"9960"}), Some(("h4", 9960))),
            (json!(5), None),
        ];
        for (route, want) in cases {
            let got = member_from_route(&route, 7000, false).map(|m| (m.host, m.port));
            assert_eq!(got, want.map(|(h, p)| (h.to_string(), p)), "{route}");
        }
    }
}
