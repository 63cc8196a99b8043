//! Replication: peer-to-peer WebSocket streams of committed transactions.
//!
//! Owns the replication listener, one OS thread per socket (each with a small byte-pump thread),
//! the membership manager and the clustering operations. Never writes to the store: received
//! transactions go to the core thread, which applies them by LWW together with their audit
//! entry and cursor in one batch. Senders read the audit log directly (reads are concurrent).
//! See repl/DESIGN.md for the protocol and the reasoning.

pub mod cluster_ops;
pub mod conn;
pub mod manager;
pub mod policy;
pub mod pull;
pub mod push;
pub mod routes;
pub mod stats;
pub mod topology;
pub mod validate;
pub mod wire;

use crate::config::{Config, Databases, Listen};
use crate::node::driver::{CoreHandle, Shared};
use crate::store::Store;
use crate::util::Published;
use conn::ConnConfig;
use crossbeam_channel::{Receiver, Sender};
use serde_json::Value;
use stats::Stats;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Node-local flag: this node was removed from its cluster (remove_node from a peer).
pub const REMOVED_KEY: &str = "cluster_removed";

/// Node-local key of this node's policy for the link with `peer`.
pub fn link_key(peer: &str) -> String {
    format!("link:{peer}")
}

/// Default replication port when a URL or route names none.
pub const DEFAULT_PORT: u16 = 9933;

/// Settings the replication threads need, from the config.
#[derive(Debug, Clone)]
pub struct ReplConfig {
    pub listen: Listen,
    pub databases: Databases,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub max_frame: usize,
    /// Peer transactions versioned further than this in the future are refused.
    pub max_clock_skew: Duration,
    /// Source address for outgoing sockets (the listener's address when it binds one).
    pub bind_ip: Option<IpAddr>,
    pub config_path: Option<std::path::PathBuf>,
}

impl ReplConfig {
    pub fn from_config(cfg: &Config) -> Option<ReplConfig> {
        let listen = cfg.replication.port.clone()?;
        let bind_ip = listen.host.as_deref().and_then(|h| h.parse().ok());
        Some(ReplConfig {
            listen,
            databases: cfg.replication.databases.clone(),
            ping_interval: cfg.replication.ping_interval,
            ping_timeout: cfg.replication.effective_ping_timeout(),
            max_frame: usize::try_from(cfg.replication.max_frame_size).unwrap_or(64 << 20),
            max_clock_skew: cfg.replication.max_clock_skew,
            bind_ip,
            config_path: cfg.source.clone(),
        })
    }

    /// The highest version a peer may send right now.
    pub fn version_ceiling(&self) -> u64 {
        validate::version_ceiling(
            crate::util::time::now_ms(),
            u64::try_from(self.max_clock_skew.as_millis()).unwrap_or(u64::MAX),
        )
    }

    pub fn replicates_db(&self, db: &str) -> bool {
        match &self.databases {
            Databases::All => true,
            Databases::Only(list) => list.iter().any(|d| d == db),
        }
    }

    pub fn conn(&self) -> ConnConfig {
        ConnConfig {
            max_frame: self.max_frame,
            write_timeout: self.ping_timeout.max(Duration::from_secs(5)),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Membership as the accepting side needs it: whom to let in.
#[derive(Debug, Default, Clone)]
pub struct MemberView {
    pub names: BTreeSet<String>,
    pub removed: bool,
}

/// Events for the manager thread.
#[derive(Debug)]
pub enum MgrEvent {
    /// Membership, databases, routes or the removed flag may have changed: re-read them.
    Reload,
    /// Reload, then answer once the new membership is published (operations that change
    /// membership answer only after `cluster_status` shows the change).
    ReloadAndAck(Sender<()>),
    /// A pull session is live (`sid` tells a replaced session's late "down" from the live one).
    SessionUp {
        peer: String,
        db: String,
        sid: u64,
    },
    SessionDown {
        peer: String,
        db: String,
        sid: u64,
    },
    Stop,
}

/// Wakes the sender threads of a database after a commit. Each sender registers a bounded(1)
/// channel; a full channel already means "there is news", so a notification never blocks the
/// core thread and never queues more than one wake-up.
#[derive(Default)]
pub struct Notifier {
    subs: Mutex<Vec<(String, Sender<()>)>>,
}

impl Notifier {
    pub fn subscribe(&self, db: &str) -> Receiver<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((db.to_string(), tx));
        rx
    }

    pub fn notify(&self, dbs: &BTreeSet<String>) {
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|(db, tx)| {
            if !dbs.contains(db) {
                return true;
            }
            !matches!(
                tx.try_send(()),
                Err(crossbeam_channel::TrySendError::Disconnected(_))
            )
        });
    }
}

/// Everything the replication threads share.
pub struct ReplCtx {
    pub node_name: String,
    pub node_url: Option<String>,
    pub cfg: ReplConfig,
    /// Routes from the config (`replication.routes`), kept current by the routes operations.
    pub routes: Mutex<Vec<Value>>,
    pub store: Store,
    pub shared: Arc<Shared>,
    pub core: CoreHandle,
    /// This node's token signer (the same as the operations API's): Bearer tokens on the
    /// replication port are checked with the real secret and clock.
    pub tokens: Arc<crate::ops::auth::Tokens>,
    pub stats: Stats,
    pub notifier: Notifier,
    pub mgr: Sender<MgrEvent>,
    pub members: Published<MemberView>,
    /// This node's policy for each link that is not plain full replication.
    pub policies: Published<HashMap<String, policy::LinkPolicy>>,
    /// Live sending sessions by (peer, database): a newer session supersedes an older one.
    pub push_sessions: Mutex<HashMap<(String, String), (u64, TcpStream)>>,
    pub next_session: AtomicU64,
    pub stopping: AtomicBool,
    pub live_threads: AtomicU64,
    /// Databases being fully copied on this node, and from which peer: one copy of a database at
    /// a time (several peers could serve it; one is enough).
    pub copying: Mutex<HashMap<String, String>>,
}

impl ReplCtx {
    pub fn session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn reload(&self) {
        let _ = self.mgr.send(MgrEvent::Reload);
    }

    /// Reloads and waits (bounded) until the manager has applied it.
    pub fn reload_sync(&self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.mgr.send(MgrEvent::ReloadAndAck(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// This node's policy for the link with `peer` (full replication unless configured).
    pub fn policy(&self, peer: &str) -> policy::LinkPolicy {
        self.policies.load().get(peer).cloned().unwrap_or_default()
    }

    /// The local id of a database, if it exists here.
    pub fn db_id(&self, db: &str) -> Option<u32> {
        self.shared.catalog.load().database(db).map(|d| d.id)
    }
}

/// Counts a thread as live for the duration of a scope (shutdown waits for zero).
pub struct LiveThread(Arc<ReplCtx>);

impl LiveThread {
    pub fn new(ctx: &Arc<ReplCtx>) -> Self {
        ctx.live_threads.fetch_add(1, Ordering::SeqCst);
        LiveThread(ctx.clone())
    }
}

impl Drop for LiveThread {
    fn drop(&mut self) {
        self.0.live_threads.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Parses a node URL or route string: `ws://host:port`, `wss://host:port`, `host:port`, `host`.
pub fn parse_url(s: &str) -> Option<(String, u16)> {
    let rest = s
        .strip_prefix("ws://")
        .or_else(|| s.strip_prefix("wss://"))
        .unwrap_or(s);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return None;
    }
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => DEFAULT_PORT,
        };
        return Some((host.to_string(), port));
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host.to_string(), port.parse().ok()?)),
        _ => Some((rest.to_string(), DEFAULT_PORT)),
    }
}

pub struct Replicator {
    pub ctx: Arc<ReplCtx>,
    listener: Option<JoinHandle<()>>,
    manager: Option<JoinHandle<()>>,
    listen_addr: std::net::SocketAddr,
}

impl Replicator {
    /// Binds the replication port and starts the listener and manager threads.
    pub fn start(
        cfg: &Config,
        rc: ReplConfig,
        store: Store,
        shared: Arc<Shared>,
        core: CoreHandle,
        tokens: Arc<crate::ops::auth::Tokens>,
    ) -> Result<Replicator, String> {
        let listener = TcpListener::bind(rc.listen.bind_addr())
            .map_err(|e| format!("cannot listen for replication on {}: {e}", rc.listen))?;
        let listen_addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (mgr_tx, mgr_rx) = crossbeam_channel::unbounded();
        let ctx = Arc::new(ReplCtx {
            node_name: cfg.node_name(),
            node_url: cfg.node_url(),
            cfg: rc,
            routes: Mutex::new(cfg.replication.routes.clone()),
            store,
            shared,
            core,
            tokens,
            stats: Stats::default(),
            notifier: Notifier::default(),
            mgr: mgr_tx,
            members: Published::new(Arc::new(MemberView::default())),
            policies: Published::new(Arc::new(HashMap::new())),
            push_sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            live_threads: AtomicU64::new(0),
            copying: Mutex::new(HashMap::new()),
        });
        let manager = {
            let ctx = ctx.clone();
            std::thread::Builder::new()
                .name("repl-manager".into())
                .spawn(move || manager::run(ctx, mgr_rx))
                .map_err(|e| e.to_string())?
        };
        let listener_thread = {
            let ctx = ctx.clone();
            std::thread::Builder::new()
                .name("repl-listener".into())
                .spawn(move || push::listen(ctx, listener))
                .map_err(|e| e.to_string())?
        };
        ctx.reload();
        log::info!(
            "replication for node '{}' listening on {listen_addr}",
            ctx.node_name
        );
        Ok(Replicator {
            ctx,
            listener: Some(listener_thread),
            manager: Some(manager),
            listen_addr,
        })
    }

    /// Stops every replication thread (sessions end, nothing half-applied: the core commits
    /// whole transactions only).
    pub fn stop(mut self) {
        self.ctx.stopping.store(true, Ordering::SeqCst);
        let _ = self.ctx.mgr.send(MgrEvent::Stop);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.listen_addr, Duration::from_millis(200));
        for (_, (_, sock)) in self
            .ctx
            .push_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
        if let Some(m) = self.manager.take() {
            let _ = m.join();
        }
        if let Some(l) = self.listener.take() {
            let _ = l.join();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.ctx.live_threads.load(Ordering::SeqCst) > 0
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_and_routes_parse() {
        let cases = [
            ("ws://127.0.0.2:9933", Some(("127.0.0.2", 9933))),
            ("wss://server-two:9925", Some(("server-two", 9925))),
            ("127.0.0.3", Some(("127.0.0.3", DEFAULT_PORT))),
            ("host:1234", Some(("host", 1234))),
            ("ws://[::1]:9933", Some(("::1", 9933))),
            ("ws://host:notaport", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_url(s), want.map(|(h, p)| (h.to_string(), p)), "{s}");
        }
    }
}
