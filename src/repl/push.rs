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
use super::copy_send::{CopySendEnv, CopySender, RowsFrame};
use super::link::LinkView;
use super::sender::{self, Action as SenderAction, Input as SenderInput, Sender, SenderEnv};
use super::stats::{next_thread_id, LinkStats};
use super::wire::{self, Frame};
use super::{cluster_ops, LiveThread, ReplCtx};
use crate::core::auth::Principal;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Who is on the other end of an accepted socket.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A member node identified by its address.
    Node(String),
    /// A user who presented super_user credentials.
    User(Principal),
}

impl Caller {
    /// Who the writes made on this caller's behalf are attributed to in the audit log.
    pub fn actor(&self) -> crate::core::txn::Actor {
        match self {
            Caller::Node(n) => crate::core::txn::Actor::Node(n.clone()),
            Caller::User(p) => crate::core::txn::Actor::User(p.username.clone()),
        }
    }
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

/// Handshakes (not yet authenticated sockets) in progress at once, per client address and in
/// total. Beyond them a new socket is closed at once: nobody can hold many threads without
/// first proving who they are, and one address cannot take every slot.
const HANDSHAKES_PER_ADDRESS: usize = 16;
const HANDSHAKES_TOTAL: usize = 256;

#[derive(Default)]
struct Handshakes {
    per_ip: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

/// One handshake slot, released when dropped.
struct HandshakeSlot(Arc<Handshakes>, IpAddr);

impl Handshakes {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<HandshakeSlot> {
        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = m.values().sum();
        let here = m.get(&ip).copied().unwrap_or(0);
        if total >= HANDSHAKES_TOTAL || here >= HANDSHAKES_PER_ADDRESS {
            return None;
        }
        m.insert(ip, here + 1);
        Some(HandshakeSlot(self.clone(), ip))
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut m = self.0.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Accepts sockets on one replication listener: the plain port (`secure` false, peers known by
/// address) or the TLS port (peers known by their certificate).
pub fn listen(ctx: Arc<ReplCtx>, listener: TcpListener, secure: bool) {
    let handshakes = Arc::new(Handshakes::default());
    for stream in listener.incoming() {
        if ctx.is_stopping() {
            break;
        }
        match stream {
            Ok(sock) => {
                let Some(slot) = sock.peer_addr().ok().and_then(|a| handshakes.take(a.ip())) else {
                    log::warn!(
                        "too many replication handshakes in progress (from {:?}); closing a new socket",
                        sock.peer_addr().ok()
                    );
                    continue;
                };
                let ctx = ctx.clone();
                let spawned = std::thread::Builder::new()
                    .name("repl-push".into())
                    .spawn(move || handle(ctx, sock, slot, secure));
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
pub fn name_matches_ip(name: &str, ip: IpAddr) -> bool {
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

/// The one answer to every refused credential: wrong password, unknown user, a valid user who
/// is not a super_user, an expired or forged token all look alike (no oracle for guessing).
fn login_failed() -> (u16, String) {
    (401, "Login failed".into())
}

/// A member node is who its source address says it is on this plain port (Harper's insecure
/// mode): its claimed name must be a member and resolve to the socket's source address.
fn member_identity(
    ctx: &ReplCtx,
    node: &str,
    peer: SocketAddr,
    members: &super::MemberView,
    tls: Option<Option<&crate::tls::info::CertInfo>>,
) -> Result<Caller, (u16, String)> {
    // On the TLS port a node is who its certificate says (chain verified by rustls against
    // the members' CAs): the claimed name must be one of the certificate's names, and the
    // certificate must not be revoked.
    if let Some(cert) = tls {
        let Some(cert) = cert else {
            return Err((
                401,
                "Unauthorized: a client certificate is required (run add_node with credentials to get one)".into(),
            ));
        };
        if ctx.is_revoked(Some(cert)) {
            return Err((403, format!("certificate {} is revoked", cert.serial)));
        }
        if node.is_empty() || !cert.names_include(node) || !members.names.contains(node) {
            return Err((
                401,
                format!(
                    "Unauthorized: no hdb_nodes entry for '{node}' matching the certificate of {:?}",
                    cert.names
                ),
            ));
        }
        if node == ctx.node_name {
            return Err((400, "Should not connect to self".into()));
        }
        return Ok(Caller::Node(node.to_string()));
    }
    if node.is_empty() || !members.names.contains(node) || !name_matches_ip(node, peer.ip()) {
        return Err((
            401,
            format!(
                "Unauthorized: no hdb_nodes entry for '{node}' at {}; run add_node with credentials to register it",
                peer.ip()
            ),
        ));
    }
    if node == ctx.node_name {
        return Err((400, "Should not connect to self".into()));
    }
    Ok(Caller::Node(node.to_string()))
}

/// Decides who an accepted socket belongs to. `tls` is None on the plain port, and on the TLS
/// port the client certificate (if one was presented).
fn authorize(
    ctx: &ReplCtx,
    req: &tungstenite::handshake::server::Request,
    peer: SocketAddr,
    tls: Option<Option<&crate::tls::info::CertInfo>>,
) -> Result<Accepted, (u16, String)> {
    let kind = header(req, "X-Skerry-Kind").unwrap_or("");
    let node = header(req, "X-Skerry-Node").unwrap_or("").to_string();
    let members = ctx.members.load();
    match kind {
        // A replication stream carries every row of a database (users and password hashes in
        // `system`): only a member node, never a user, may open one.
        "pull" => {
            let caller = member_identity(ctx, &node, peer, &members, tls)?;
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
        // One node-to-node operation: a super_user by credentials (the add_node bootstrap),
        // checked exactly like the operations API checks them (Basic against the users, tokens
        // with this node's secret and clock), or a member by identity.
        "op" => {
            let caller = match header(req, "Authorization") {
                Some(h) => {
                    let auth = ctx.shared.auth.load();
                    match crate::ops::auth::authenticate(
                        Some(h),
                        &auth,
                        &ctx.tokens,
                        crate::util::time::now_ms(),
                        Some(peer.ip()),
                    ) {
                        Ok(p) if p.is_super_user() => Caller::User(p),
                        _ => return Err(login_failed()),
                    }
                }
                None => member_identity(ctx, &node, peer, &members, tls)?,
            };
            Ok(Accepted::Op { caller })
        }
        other => Err((400, format!("unknown replication socket kind '{other}'"))),
    }
}

fn handle(ctx: Arc<ReplCtx>, sock: TcpStream, slot: HandshakeSlot, secure: bool) {
    let _live = LiveThread::new(&ctx);
    if ctx.is_stopping() {
        return;
    }
    let mut accepted = None;
    let tls = if secure {
        match ctx.trust.load().server.clone() {
            Some(s) => Some(s),
            None => return,
        }
    } else {
        None
    };
    let conn = Conn::accept(
        sock,
        &ctx.cfg.conn(),
        &ctx.node_name,
        tls,
        |req, peer, cert| {
            let a = authorize(&ctx, req, peer, secure.then_some(cert))?;
            accepted = Some(a);
            Ok(())
        },
    );
    // Authenticated (or refused): the socket no longer counts as a pending handshake.
    drop(slot);
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
    // The peer just reached us, so it is up and knows this node: our own dial toward it need
    // not wait out a back-off grown while it still refused us (a registration on its side).
    ctx.redial(peer);
    let stats = ctx.stats.link(peer, db);
    stats.push.claim(sid, next_thread_id());
    stats.set_peer_cert(conn.peer_cert.as_ref(), false);
    let reason = push_loop(ctx, &mut conn, peer, db, caller, &stats);
    log::info!("replication to {peer} ({db}) ended: {reason}");
    stats.push.release(sid);
    let mut sessions = ctx.push_sessions.lock().unwrap_or_else(|p| p.into_inner());
    if sessions.get(&key).is_some_and(|(s, _)| *s == sid) {
        sessions.remove(&key);
    }
}

impl SenderEnv for LinkView<'_> {
    fn low_watermark(&mut self, origin: &str) -> u64 {
        let Some(db_id) = self.ctx.db_id(self.db) else {
            return 0;
        };
        self.origin_id(origin)
            .and_then(|id| self.ctx.store.low_watermark(db_id, id).ok())
            .unwrap_or(0)
    }

    fn vector(&mut self) -> Result<Option<sender::Vector>, String> {
        let Some(db_id) = self.ctx.db_id(self.db) else {
            return Ok(None);
        };
        self.ctx
            .store
            .cursor_vector(db_id)
            .map(|v| Some(v.into_iter().collect()))
            .map_err(|e| e.to_string())
    }

    fn log_after(
        &mut self,
        origin: &str,
        after: u64,
    ) -> Option<Box<dyn Iterator<Item = Result<sender::LogEntry, String>> + '_>> {
        let db_id = self.ctx.db_id(self.db)?;
        let id = self.origin_id(origin)?;
        Some(Box::new(
            self.ctx
                .store
                .audit_after(db_id, id, after)
                .map(|r| r.map_err(|e| e.to_string())),
        ))
    }
}

impl CopySendEnv for LinkView<'_> {
    fn sends_table(&self, table: &str) -> bool {
        self.ctx.policy(self.peer).sends_table(self.db, table)
    }
}

/// Hands the subscriber's frames to the session's [`Sender`] and performs what it answers.
#[allow(clippy::too_many_arguments)]
fn handle_incoming(
    ctx: &ReplCtx,
    conn: &mut Conn,
    peer: &str,
    db: &str,
    stats: &LinkStats,
    sender: &mut Sender,
    env: &mut LinkView,
    chunk: super::conn::Chunk,
) -> Result<(), String> {
    for incoming in conn.feed(chunk) {
        let input = match incoming {
            Incoming::Frame(Frame::Subscribe {
                origins,
                tables,
                relay,
            }) => {
                // The subscriber's table list says what its policy receives; the sender's own
                // policy is what limits what it sends, read afresh for every frame (the two
                // policies of a link change moments apart, update_node).
                if let Some(t) = &tables {
                    log::debug!("{peer} subscribes to {db} tables {t:?}");
                }
                SenderInput::Subscribe { origins, relay }
            }
            Incoming::Frame(Frame::CopyRequest { table, key }) => {
                SenderInput::CopyRequest { table, key }
            }
            Incoming::Frame(Frame::Ack { applied }) => SenderInput::Ack { applied },
            Incoming::Frame(_) => continue,
            Incoming::Closed(reason) => return Err(reason),
        };
        for action in sender.step(input, std::time::Instant::now(), env) {
            perform(ctx, conn, peer, db, stats, action)?;
        }
    }
    Ok(())
}

/// Performs one of the [`Sender`]'s actions (a full copy is run by the loop itself).
fn perform(
    ctx: &ReplCtx,
    conn: &mut Conn,
    peer: &str,
    db: &str,
    stats: &LinkStats,
    action: SenderAction,
) -> Result<(), String> {
    match action {
        SenderAction::Confirmed { version } => ctx.confirmations.record(db, peer, version),
        SenderAction::Acked { applied } => {
            stats
                .last_commit_confirmed_ms
                .store(crate::util::time::now_ms(), Ordering::Relaxed);
            stats.record_acked(&applied);
        }
        SenderAction::NeedCopy { origins } => conn.send(&Frame::NeedCopy { origins })?,
        SenderAction::Txns { batch } => send_batch(ctx, conn, peer, db, stats, &batch)?,
        SenderAction::Fail { reason } => {
            let _ = conn.send(&Frame::Error {
                reason: reason.clone(),
            });
            conn.close("transaction too large");
            return Err(reason);
        }
        SenderAction::StartCopy { .. } => {}
    }
    Ok(())
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
    let mut sender = Sender::new(peer, db, ctx.cfg.max_frame);
    let mut env = LinkView::new(ctx, peer, db);
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
        let poll = sender.poll(std::time::Instant::now(), &mut env);
        for action in poll.actions {
            let result = match action {
                SenderAction::StartCopy { table, key } => {
                    send_copy(ctx, conn, peer, db, &table, &key, stats)
                }
                other => perform(ctx, conn, peer, db, stats, other),
            };
            if let Err(e) = result {
                return e;
            }
        }
        if poll.again {
            // A link that streams without pause still measures its round trip.
            if tick.try_recv().is_ok() && conn.ping_due(ping_interval) {
                if let Err(e) = conn.ping() {
                    return e;
                }
            }
            if let Some(l) = conn.latency {
                stats
                    .push
                    .latency_us
                    .store((l.as_micros() as u64).max(1), Ordering::Relaxed);
            }
            // Keep streaming, but never let the peer's acks and pings pile up unread.
            while let Ok(chunk) = bytes.try_recv() {
                if let Err(e) =
                    handle_incoming(ctx, conn, peer, db, stats, &mut sender, &mut env, chunk)
                {
                    return e;
                }
            }
            continue;
        }
        crossbeam_channel::select! {
            recv(bytes) -> chunk => {
                if let Err(e) = handle_incoming(ctx, conn, peer, db, stats, &mut sender, &mut env, chunk.unwrap_or(None)) {
                    return e;
                }
            }
            recv(notify) -> _ => {}
            recv(tick) -> _ => {
                if ctx.is_revoked(conn.peer_cert.as_ref()) {
                    conn.close("certificate revoked");
                    return "the peer's certificate was revoked".into();
                }
                if conn.last_rx.elapsed() > ctx.cfg.ping_timeout {
                    conn.close("ping timeout");
                    return format!("no data or pong within {:?}", ctx.cfg.ping_timeout);
                }
                if conn.ping_due(ping_interval) {
                    if let Err(e) = conn.ping() {
                        return e;
                    }
                }
                if let Some(l) = conn.latency {
                    stats.push.latency_us.store((l.as_micros() as u64).max(1), Ordering::Relaxed);
                }
            }
        }
    }
}

/// Sends one `CopyRows` frame and drains what the receiver sent meanwhile.
fn send_rows(conn: &mut Conn, frame: RowsFrame, stats: &LinkStats) -> Result<(), String> {
    let (bytes, n) = frame;
    conn.send_bytes(bytes)?;
    stats.copy_sent.fetch_add(n, Ordering::Relaxed);
    stats.records_sent.fetch_add(n, Ordering::Relaxed);
    stats
        .last_send_ms
        .store(crate::util::time::now_ms(), Ordering::Relaxed);
    // Keep the receiver's acknowledgements and pongs flowing during a long copy.
    let incoming = conn.bytes.clone();
    while let Ok(chunk) = incoming.try_recv() {
        for i in conn.feed(chunk) {
            if let Incoming::Closed(reason) = i {
                return Err(reason);
            }
        }
    }
    Ok(())
}

/// Streams a full copy of `db` from one consistent snapshot: every replicated table's stored
/// entries (tombstones included) with their own version and origin, starting after
/// (`from_table`, `from_key`) when resuming. The receiver merges them by LWW and then streams
/// from the snapshot's version vector, so writes made during the copy are not lost.
fn send_copy(
    ctx: &ReplCtx,
    conn: &mut Conn,
    peer: &str,
    db: &str,
    from_table: &str,
    from_key: &[u8],
    stats: &LinkStats,
) -> Result<(), String> {
    let storage = |e: crate::store::StoreError| format!("cannot read for a full copy: {e}");
    let env = LinkView::new(ctx, peer, db);
    let snap = ctx.store.snapshot();
    let catalog = ctx.shared.catalog.load();
    let vector: Vec<(String, u64)> = match catalog.database(db) {
        Some(d) => CopySender::vouched(
            ctx.store
                .snapshot_cursor_vector(&snap, d.id)
                .map_err(storage)?
                .into_iter()
                .collect(),
            &env,
        ),
        None => Vec::new(),
    };
    log::debug!("full copy of {db}: snapshot vector {vector:?}");
    let databases = if db == crate::core::catalog::SYSTEM_DB {
        catalog.databases.keys().cloned().collect()
    } else {
        Vec::new()
    };
    let names = ctx.store.origin_names().map_err(storage)?;
    let mut copy = CopySender::new(db, from_table, from_key, ctx.cfg.max_frame, names);
    // The progress a copy can promise: the sending tables' records (committed statistics,
    // so a little off while writes continue).
    let total: u64 = catalog
        .database(db)
        .map(|d| {
            d.tables
                .iter()
                .filter(|(name, t)| t.replicate && env.sends_table(name))
                .map(|(_, t)| ctx.store.table_stats(t.id).map_or(0, |s| s.count))
                .sum()
        })
        .unwrap_or(0);
    conn.send(&Frame::CopyStart {
        vector,
        databases,
        total,
    })?;
    stats.copy_total.store(total, Ordering::Relaxed);
    stats
        .copy_started_ms
        .store(crate::util::time::now_ms(), Ordering::Relaxed);
    stats.copying_out.store(true, Ordering::Relaxed);
    stats.copy_sent.store(0, Ordering::Relaxed);
    let result = (|| -> Result<(), String> {
        let Some(d) = catalog.database(db) else {
            return Ok(());
        };
        for (name, t) in &d.tables {
            let Some((schema, after)) = copy.begin_table(name, t, &env) else {
                continue;
            };
            conn.send(&schema)?;
            let rows = ctx
                .store
                .snapshot_scan_table(&snap, t.id, after.as_deref())
                .map_err(storage)?;
            for item in rows {
                let (k, v) = item.map_err(storage)?;
                if let Some(frame) = copy.row(k, v, &env)? {
                    send_rows(conn, frame, stats)?;
                }
            }
            if let Some(frame) = copy.end_table() {
                send_rows(conn, frame, stats)?;
            }
        }
        Ok(())
    })();
    stats.copying_out.store(false, Ordering::Relaxed);
    result?;
    conn.send(&Frame::CopyEnd)
}

/// Sends one frame of the transactions the [`Sender`] chose, in its order.
fn send_batch(
    ctx: &ReplCtx,
    conn: &mut Conn,
    peer: &str,
    db: &str,
    stats: &LinkStats,
    batch: &[(String, sender::LogEntry)],
) -> Result<(), String> {
    let policy = ctx.policy(peer);
    let mut e = wire::start_txns(batch.len());
    for (origin, (version, ops)) in batch {
        // This node's own transactions, limited by this node's policy for the link (the
        // sender's enforcement point); a transaction with nothing left still goes out, empty,
        // so the subscriber's cursor moves past it.
        let filtered = if origin == &ctx.node_name && !policy.is_full() {
            crate::core::txn::filter_ops(ops, |t| policy.sends_table(db, t))
                .map_err(|e| format!("unreadable audit entry: {e}"))?
        } else {
            None
        };
        wire::put_txn(
            &mut e,
            origin,
            *version,
            db,
            filtered.as_deref().unwrap_or(ops),
        );
    }
    stats
        .sending_version
        .store(batch.first().map_or(0, |(_, (v, _))| *v), Ordering::Relaxed);
    let res = conn.send_bytes(e.buf);
    stats.sending_version.store(0, Ordering::Relaxed);
    res?;
    stats
        .last_send_ms
        .store(crate::util::time::now_ms(), Ordering::Relaxed);
    stats
        .records_sent
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_identity_accepts_the_literal_address_only() {
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(name_matches_ip("127.0.0.2", ip));
        assert!(!name_matches_ip("127.0.0.3", ip));
    }
}
