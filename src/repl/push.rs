//! The sending side of a link, and the replication listener.
//!
//! A peer dials us once per database to receive; the accepted socket gets its own thread that
//! waits for the peer's subscription (origins and the versions it already has), replays our
//! audit log from there and then tails new commits, waking on the commit notifier the moment the
//! core thread commits. A transaction too large to send stops the stream (the peer reconnects
//! later and hits it again): it is never skipped while later ones advance the peer's cursor.
//!
//! The listener authenticates every socket: on this plain port a peer is who its source address
//! says it is (its name must be a member and resolve to that address, as in Harper's insecure
//! mode), or a super_user by Basic credentials (the `add_node` bootstrap).

use super::conn::{Conn, Incoming};
use super::stats::{next_thread_id, LinkStats};
use super::wire::{self, Frame};
use super::{cluster_ops, LiveThread, ReplCtx};
use crate::core::auth::Principal;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Target size of one transactions frame; many small transactions share a frame, one flush.
const FRAME_TARGET: usize = 256 * 1024;
/// At most this many transactions per frame.
const FRAME_TXNS: usize = 2000;

/// Who is on the other end of an accepted socket.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A member node identified by its address.
    Node(String),
    /// A user who presented super_user credentials.
    User(Principal),
}

#[derive(Debug, Clone)]
enum Accepted {
    Pull {
        peer: String,
        db: String,
        caller: Caller,
    },
    Op {
        caller: Caller,
    },
}

pub fn listen(ctx: Arc<ReplCtx>, listener: TcpListener) {
    for stream in listener.incoming() {
        if ctx.is_stopping() {
            break;
        }
        match stream {
            Ok(sock) => {
                let ctx = ctx.clone();
                let spawned = std::thread::Builder::new()
                    .name("repl-push".into())
                    .spawn(move || handle(ctx, sock));
                if let Err(e) = spawned {
                    log::error!("cannot start a replication thread: {e}");
                }
            }
            Err(e) => {
                // EMFILE and friends: keep accepting once resources return.
                log::warn!("replication accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// True when `name` is `ip` or resolves to it.
fn name_matches_ip(name: &str, ip: IpAddr) -> bool {
    if let Ok(parsed) = name.parse::<IpAddr>() {
        return parsed == ip;
    }
    (name, 0)
        .to_socket_addrs()
        .map(|mut addrs| addrs.any(|a| a.ip() == ip))
        .unwrap_or(false)
}

fn header<'a>(req: &'a tungstenite::handshake::server::Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn authorize(
    ctx: &ReplCtx,
    req: &tungstenite::handshake::server::Request,
    peer: SocketAddr,
) -> Result<Accepted, (u16, String)> {
    let kind = header(req, "X-Skerry-Kind").unwrap_or("");
    let node = header(req, "X-Skerry-Node").unwrap_or("").to_string();
    let members = ctx.members.load();
    let user = match header(req, "Authorization") {
        Some(h) => {
            let auth = ctx.shared.auth.load();
            let p = crate::ops::auth::authenticate(Some(h), &auth, &dummy_tokens(), 0)
                .map_err(|e| (401, e.message().to_string()))?;
            if !p.is_super_user() {
                return Err((403, "replication requires a super_user".into()));
            }
            Some(p)
        }
        None => None,
    };
    let caller = match user {
        Some(p) => Caller::User(p),
        None => {
            if node.is_empty()
                || !members.names.contains(&node)
                || !name_matches_ip(&node, peer.ip())
            {
                return Err((
                    401,
                    format!(
                        "Unauthorized: no hdb_nodes entry for '{node}' at {}; run add_node with credentials to register it",
                        peer.ip()
                    ),
                ));
            }
            Caller::Node(node.clone())
        }
    };
    match kind {
        "pull" => {
            if node.is_empty() || node == ctx.node_name {
                return Err((400, "Should not connect to self".into()));
            }
            if members.removed {
                return Err((403, "this node was removed from the cluster".into()));
            }
            let db = header(req, "X-Skerry-Database").unwrap_or("").to_string();
            if db.is_empty() || !ctx.cfg.replicates_db(&db) {
                return Err((
                    403,
                    format!("database '{db}' is not replicated by this node"),
                ));
            }
            Ok(Accepted::Pull {
                peer: node,
                db,
                caller,
            })
        }
        "op" => Ok(Accepted::Op { caller }),
        other => Err((400, format!("unknown replication socket kind '{other}'"))),
    }
}

/// Bearer tokens are not accepted on replication sockets (node-local secrets).
fn dummy_tokens() -> crate::ops::auth::Tokens {
    crate::ops::auth::Tokens::new(b"", Duration::ZERO, Duration::ZERO)
}

fn handle(ctx: Arc<ReplCtx>, sock: TcpStream) {
    let _live = LiveThread::new(&ctx);
    if ctx.is_stopping() {
        return;
    }
    let mut accepted = None;
    let conn = Conn::accept(sock, &ctx.cfg.conn(), |req, peer| {
        let a = authorize(&ctx, req, peer)?;
        accepted = Some(a);
        Ok(())
    });
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            log::debug!("replication handshake refused: {e}");
            return;
        }
    };
    match accepted {
        Some(Accepted::Pull { peer, db, caller }) => push_session(&ctx, conn, &peer, &db, &caller),
        Some(Accepted::Op { caller }) => cluster_ops::serve_op(&ctx, conn, &caller),
        None => {}
    }
}

fn push_session(ctx: &Arc<ReplCtx>, mut conn: Conn, peer: &str, db: &str, caller: &Caller) {
    let sid = ctx.session_id();
    let key = (peer.to_string(), db.to_string());
    if let Ok(killer) = conn.killer() {
        let old = ctx
            .push_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), (sid, killer));
        // At most one live session per (peer, database, direction): the newer one wins.
        if let Some((_, old)) = old {
            let _ = old.shutdown(std::net::Shutdown::Both);
        }
    }
    let stats = ctx.stats.link(peer, db);
    stats.push.claim(sid, next_thread_id());
    let reason = push_loop(ctx, &mut conn, peer, db, caller, &stats);
    log::info!("replication to {peer} ({db}) ended: {reason}");
    stats.push.release(sid);
    let mut sessions = ctx.push_sessions.lock().unwrap_or_else(|p| p.into_inner());
    if sessions.get(&key).is_some_and(|(s, _)| *s == sid) {
        sessions.remove(&key);
    }
}

/// What a subscriber asked for: origin → highest version it has (or we already sent).
type Subscription = BTreeMap<String, u64>;

fn apply_subscribe(subs: &mut Subscription, peer: &str, origins: Vec<(String, u64)>) {
    let mut next = Subscription::new();
    for (origin, version) in origins {
        if origin == peer {
            // Never send a node its own writes back.
            continue;
        }
        let sent = subs.get(&origin).copied().unwrap_or(0);
        next.insert(origin, version.max(sent));
    }
    *subs = next;
}

fn push_loop(
    ctx: &ReplCtx,
    conn: &mut Conn,
    peer: &str,
    db: &str,
    caller: &Caller,
    stats: &LinkStats,
) -> String {
    let notify = ctx.notifier.subscribe(db);
    let bytes = conn.bytes.clone();
    let ping_interval = ctx.cfg.ping_interval;
    let tick = crossbeam_channel::tick(
        (ping_interval / 4).clamp(Duration::from_millis(20), Duration::from_secs(1)),
    );
    let mut subs = Subscription::new();
    let mut subscribed = false;
    let mut ids: HashMap<String, u32> = HashMap::new();
    loop {
        if ctx.is_stopping() {
            conn.close("node stopping");
            return "node stopping".into();
        }
        if let Caller::Node(name) = caller {
            let members = ctx.members.load();
            if members.removed || !members.names.contains(name) {
                conn.close("no longer a member");
                return "peer is no longer a member".into();
            }
        }
        let sent = if subscribed {
            match send_batch(ctx, conn, db, &mut subs, &mut ids, stats) {
                Ok(sent) => sent,
                Err(e) => return e,
            }
        } else {
            false
        };
        let mut handle =
            |chunk, subs: &mut Subscription, subscribed: &mut bool| -> Result<(), String> {
                for incoming in conn.feed(chunk) {
                    match incoming {
                        Incoming::Frame(Frame::Subscribe { origins }) => {
                            apply_subscribe(subs, peer, origins);
                            *subscribed = true;
                        }
                        Incoming::Frame(Frame::Ack { .. }) => {
                            stats
                                .last_commit_confirmed_ms
                                .store(crate::util::time::now_ms(), Ordering::Relaxed);
                        }
                        Incoming::Frame(_) => {}
                        Incoming::Closed(reason) => return Err(reason),
                    }
                }
                Ok(())
            };
        if sent {
            // Keep streaming, but never let the peer's acks and pings pile up unread.
            while let Ok(chunk) = bytes.try_recv() {
                if let Err(e) = handle(chunk, &mut subs, &mut subscribed) {
                    return e;
                }
            }
            continue;
        }
        crossbeam_channel::select! {
            recv(bytes) -> chunk => {
                if let Err(e) = handle(chunk.unwrap_or(None), &mut subs, &mut subscribed) {
                    return e;
                }
            }
            recv(notify) -> _ => {}
            recv(tick) -> _ => {
                if conn.last_rx.elapsed() > ctx.cfg.ping_timeout {
                    conn.close("ping timeout");
                    return format!("no data or pong within {:?}", ctx.cfg.ping_timeout);
                }
                if conn.last_tx.elapsed() >= ping_interval {
                    if let Err(e) = conn.ping() {
                        return e;
                    }
                }
                if let Some(l) = conn.latency {
                    stats.push.latency_us.store(l.as_micros() as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Sends one frame of transactions the subscriber has not seen; false when there is nothing.
fn send_batch(
    ctx: &ReplCtx,
    conn: &mut Conn,
    db: &str,
    subs: &mut Subscription,
    ids: &mut HashMap<String, u32>,
    stats: &LinkStats,
) -> Result<bool, String> {
    let Some(db_id) = ctx.db_id(db) else {
        return Ok(false);
    };
    if subs.keys().any(|o| !ids.contains_key(o)) {
        if let Ok(names) = ctx.store.origin_names() {
            *ids = names.into_iter().map(|(id, name)| (name, id)).collect();
        }
    }
    let budget = FRAME_TARGET.min(ctx.cfg.max_frame / 2);
    let mut batch: Vec<(String, u64, fjall::Slice)> = Vec::new();
    let mut bytes = 0usize;
    'origins: for (origin, after) in subs.iter() {
        let Some(&origin_id) = ids.get(origin) else {
            continue;
        };
        for item in ctx.store.audit_after(db_id, origin_id, *after) {
            let (version, ops) = item.map_err(|e| format!("cannot read the audit log: {e}"))?;
            let size = ops.len() + origin.len() + db.len() + 32;
            if size + 64 > ctx.cfg.max_frame {
                let reason = format!(
                    "transaction {version} of {origin} is {size} bytes, over replication.maxFrameSize ({}); the stream stops here until the limit is raised",
                    ctx.cfg.max_frame
                );
                log::error!("{reason}");
                let _ = conn.send(&Frame::Error {
                    reason: reason.clone(),
                });
                conn.close("transaction too large");
                return Err(reason);
            }
            if !batch.is_empty() && (bytes + size > budget || batch.len() >= FRAME_TXNS) {
                break 'origins;
            }
            bytes += size;
            batch.push((origin.clone(), version, ops));
        }
    }
    if batch.is_empty() {
        return Ok(false);
    }
    let mut e = wire::start_txns(batch.len());
    for (origin, version, ops) in &batch {
        wire::put_txn(&mut e, origin, *version, db, ops);
    }
    stats.sending_version.store(batch[0].1, Ordering::Relaxed);
    let res = conn.send_bytes(e.buf);
    stats.sending_version.store(0, Ordering::Relaxed);
    res?;
    stats
        .last_send_ms
        .store(crate::util::time::now_ms(), Ordering::Relaxed);
    stats
        .records_sent
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    for (origin, version, _) in batch {
        if let Some(v) = subs.get_mut(&origin) {
            *v = (*v).max(version);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_never_includes_the_subscriber_and_never_rewinds() {
        let mut subs = Subscription::new();
        apply_subscribe(&mut subs, "b", vec![("b".into(), 5), ("c".into(), 7)]);
        assert_eq!(subs.keys().collect::<Vec<_>>(), ["c"]);
        subs.insert("c".into(), 20); // we sent up to 20 since
        apply_subscribe(&mut subs, "b", vec![("c".into(), 10), ("d".into(), 1)]);
        assert_eq!(subs["c"], 20);
        assert_eq!(subs["d"], 1);
        apply_subscribe(&mut subs, "b", vec![("d".into(), 1)]);
        assert!(!subs.contains_key("c"));
    }

    #[test]
    fn ip_identity_accepts_the_literal_address_only() {
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(name_matches_ip("127.0.0.2", ip));
        assert!(!name_matches_ip("127.0.0.3", ip));
    }
}
