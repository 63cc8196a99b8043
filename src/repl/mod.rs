//! Replication: peer-to-peer WebSocket streams of committed transactions.
//!
//! Owns the replication listener, one OS thread per socket (each with a small byte-pump thread),
//! the membership manager and the clustering operations. Never writes to the store: received
//! transactions go to the core thread, which applies them by LWW together with their audit
//! entry and cursor in one batch. Senders read the audit log directly (reads are concurrent).
//! See repl/DESIGN.md for the protocol and the reasoning.

pub mod cluster_ops;
pub mod confirm;
pub mod conn;
pub(crate) mod copy_recv;
pub(crate) mod copy_send;
pub mod forward;
pub(crate) mod link;
pub mod manager;
pub mod policy;
pub mod pull;
pub mod push;
pub(crate) mod receiver;
pub mod routes;
pub(crate) mod sender;
#[cfg(test)]
mod sim;
pub mod stats;
pub mod topology;
pub mod validate;
pub mod verify;
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
    /// The plain (`ws://`) listener, and the TLS (`wss://`) one; at least one is set.
    pub listen: Option<Listen>,
    pub secure_listen: Option<Listen>,
    pub databases: Databases,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub max_frame: usize,
    /// Peer transactions versioned further than this in the future are refused.
    pub max_clock_skew: Duration,
    /// How long a write waits for `replicatedConfirmation` peers before answering 504.
    pub confirmation_timeout: Duration,
    /// Source address for outgoing sockets (the listener's address when it binds one).
    pub bind_ip: Option<IpAddr>,
    pub config_path: Option<std::path::PathBuf>,
}

impl ReplConfig {
    pub fn from_config(cfg: &Config) -> Option<ReplConfig> {
        let listen = cfg.replication.port.clone();
        let secure_listen = cfg.replication.secure_port.clone();
        let bind_ip = listen
            .as_ref()
            .or(secure_listen.as_ref())?
            .host
            .as_deref()
            .and_then(|h| h.parse().ok());
        Some(ReplConfig {
            listen,
            secure_listen,
            databases: cfg.replication.databases.clone(),
            ping_interval: cfg.replication.ping_interval,
            ping_timeout: cfg.replication.effective_ping_timeout(),
            max_frame: usize::try_from(cfg.replication.max_frame_size).unwrap_or(64 << 20),
            max_clock_skew: cfg.replication.max_clock_skew,
            confirmation_timeout: cfg.replication.confirmation_timeout,
            bind_ip,
            config_path: cfg.source.clone(),
        })
    }

    /// The default URL of a peer named `host` (Harper's order: the plain port, else the TLS
    /// one, with this node's port numbers).
    pub fn default_url(&self, host: &str) -> String {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        match (&self.listen, &self.secure_listen) {
            (Some(l), _) => format!("ws://{host}:{}", l.port),
            (None, Some(l)) => format!("wss://{host}:{}", l.port),
            (None, None) => format!("ws://{host}:{DEFAULT_PORT}"),
        }
    }

    /// The port a peer named without one is reached on (this node's own, plain first).
    pub fn default_port(&self) -> u16 {
        self.listen
            .as_ref()
            .or(self.secure_listen.as_ref())
            .map_or(DEFAULT_PORT, |l| l.port)
    }

    /// Whether a route or URL without a scheme means TLS: only when this node itself has no
    /// plain port (then its peers are expected to speak TLS too).
    pub fn tls_by_default(&self) -> bool {
        self.listen.is_none() && self.secure_listen.is_some()
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

/// What TLS trusts and refuses right now, rebuilt by the manager from `hdb_nodes` (each
/// member's `ca` and `revoked_certificates`).
pub struct TrustState {
    /// The members' CA certificates.
    pub member_cas: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The server side of the TLS listener (None when this node has no TLS identity).
    pub server: Option<Arc<rustls::ServerConfig>>,
    /// Revoked certificate serials (normalised, see `tls::info::normalize_serial`).
    pub revoked: std::collections::HashSet<String>,
}

/// Membership as the accepting side needs it: whom to let in.
#[derive(Debug, Default, Clone)]
pub struct MemberView {
    pub names: BTreeSet<String>,
    /// The URL each member is dialled at (node-to-node operations such as `verify_digests`).
    pub urls: HashMap<String, String>,
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
    /// `peer` was just registered, or just dialled this node: its receiving threads that are
    /// waiting out a reconnect back-off dial it now (registration is answered within a second,
    /// not after a back-off grown while the peer still refused us).
    Redial {
        peer: String,
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
    /// This node's certificates (replication TLS).
    pub tls: Option<Arc<crate::tls::NodeTls>>,
    pub trust: Published<TrustState>,
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
    /// The manager finished its first membership load (and is still running): `/ready`.
    pub manager_ready: AtomicBool,
    pub live_threads: AtomicU64,
    /// Databases being fully copied on this node, and from which peer: one copy of a database at
    /// a time (several peers could serve it; one is enough).
    pub copying: Mutex<HashMap<String, String>>,
    /// Which peers committed this node's writes, for `replicatedConfirmation` waits.
    pub confirmations: confirm::Confirmations,
    /// Peers' table digests, for `cluster_status`'s `digest_match`.
    pub digests: verify::DigestCache,
    /// Runs `set_configuration` on this node for a member that forwards it (`replicated:
    /// true`); set by the node once its operations API exists (unset: refused).
    pub set_configuration: std::sync::OnceLock<SetConfiguration>,
}

/// This node's `set_configuration`, as the operations API runs it.
pub type SetConfiguration = Box<
    dyn Fn(&serde_json::Map<String, serde_json::Value>) -> crate::core::error::OpResult
        + Send
        + Sync,
>;

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

    /// Asks the manager to cut short any reconnect back-off toward `peer` (see
    /// [`MgrEvent::Redial`]).
    pub fn redial(&self, peer: &str) {
        let _ = self.mgr.send(MgrEvent::Redial {
            peer: peer.to_string(),
        });
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// This node's policy for the link with `peer` (full replication unless configured).
    /// The databases this node replicates: its own that `replication.databases` allows, and
    /// every database that setting names even if this node does not have it yet. With
    /// `databases: [data]` nothing else (no `system` stream) would ever tell this node that a
    /// peer has `data`, so it pulls `data` from every peer and the full copy or the stream
    /// creates the database, its tables and attributes here.
    pub fn replicated_databases(&self) -> BTreeSet<String> {
        let mut dbs: BTreeSet<String> = self
            .shared
            .catalog
            .load()
            .databases
            .keys()
            .filter(|db| self.cfg.replicates_db(db))
            .cloned()
            .collect();
        if let Databases::Only(list) = &self.cfg.databases {
            dbs.extend(list.iter().cloned());
        }
        dbs
    }

    pub fn policy(&self, peer: &str) -> policy::LinkPolicy {
        self.policies.load().get(peer).cloned().unwrap_or_default()
    }

    /// Whether a certificate was revoked (by any member's `revoked_certificates`).
    pub fn is_revoked(&self, cert: Option<&crate::tls::info::CertInfo>) -> bool {
        cert.is_some_and(|c| self.trust.load().revoked.contains(&c.serial))
    }

    /// The TLS client configuration to dial `peer` with (this node's certificate, the peer's
    /// chain verified against the trusted CAs).
    pub fn client_tls(
        &self,
        peer: Option<&str>,
        verify: bool,
        client_auth: bool,
    ) -> Result<Arc<rustls::ClientConfig>, String> {
        let tls = self
            .tls
            .as_ref()
            .ok_or("this node has no TLS certificate (set replication.securePort)")?;
        tls.client_config(peer, &self.trust.load().member_cas, verify, client_auth)
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
    parse_url_tls(s).map(|(h, p, _)| (h, p))
}

/// Like [`parse_url`], and whether the URL says TLS (`Some(true)` for `wss://`, `Some(false)`
/// for `ws://`, None without a scheme).
pub fn parse_url_tls(s: &str) -> Option<(String, u16, Option<bool>)> {
    let tls = if s.starts_with("wss://") {
        Some(true)
    } else if s.starts_with("ws://") {
        Some(false)
    } else {
        None
    };
    let (h, p) = parse_host_port(s)?;
    Some((h, p, tls))
}

fn parse_host_port(s: &str) -> Option<(String, u16)> {
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

/// What replication runs on: the node's store, published state, core, token signer and TLS
/// identity, and its listeners.
pub struct ReplParts {
    pub store: Store,
    pub shared: Arc<Shared>,
    pub core: CoreHandle,
    pub tokens: Arc<crate::ops::auth::Tokens>,
    pub tls: Option<Arc<crate::tls::NodeTls>>,
    pub listeners: Listeners,
}

/// The replication listeners, bound by the caller before anything else starts.
pub struct Listeners {
    pub plain: Option<TcpListener>,
    pub secure: Option<TcpListener>,
}

pub struct Replicator {
    pub ctx: Arc<ReplCtx>,
    listeners: Vec<JoinHandle<()>>,
    manager: Option<JoinHandle<()>>,
    listen_addrs: Vec<std::net::SocketAddr>,
}

impl Replicator {
    /// Binds the replication port(s) and starts the listener and manager threads.
    pub fn start(cfg: &Config, rc: ReplConfig, parts: ReplParts) -> Result<Replicator, String> {
        let ReplParts {
            store,
            shared,
            core,
            tokens,
            tls,
            listeners: Listeners { plain, secure },
        } = parts;
        if secure.is_some() && tls.is_none() {
            return Err("replication.securePort needs this node's certificate".into());
        }
        let mut listen_addrs = Vec::new();
        for l in plain.iter().chain(secure.iter()) {
            listen_addrs.push(l.local_addr().map_err(|e| e.to_string())?);
        }
        let server = match &tls {
            Some(t) => Some(t.server_config(&[])?),
            None => None,
        };
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
            tls,
            trust: Published::new(Arc::new(TrustState {
                member_cas: Vec::new(),
                server,
                revoked: Default::default(),
            })),
            stats: Stats::default(),
            notifier: Notifier::default(),
            mgr: mgr_tx,
            members: Published::new(Arc::new(MemberView::default())),
            policies: Published::new(Arc::new(HashMap::new())),
            push_sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            manager_ready: AtomicBool::new(false),
            confirmations: confirm::Confirmations::default(),
            live_threads: AtomicU64::new(0),
            copying: Mutex::new(HashMap::new()),
            digests: verify::DigestCache::default(),
            set_configuration: std::sync::OnceLock::new(),
        });
        let manager = {
            let ctx = ctx.clone();
            std::thread::Builder::new()
                .name("repl-manager".into())
                .spawn(move || manager::run(ctx, mgr_rx))
                .map_err(|e| e.to_string())?
        };
        // Membership and trust are published before the first socket is accepted: a member
        // dialing in during start-up must not be refused because the manager had not read
        // `hdb_nodes` and the routes yet.
        ctx.reload_sync();
        let mut listeners = Vec::new();
        for (listener, secure) in plain
            .into_iter()
            .map(|l| (l, false))
            .chain(secure.into_iter().map(|l| (l, true)))
        {
            let ctx = ctx.clone();
            listeners.push(
                std::thread::Builder::new()
                    .name("repl-listener".into())
                    .spawn(move || push::listen(ctx, listener, secure))
                    .map_err(|e| e.to_string())?,
            );
        }
        log::info!(
            "replication for node '{}' listening on {listen_addrs:?}",
            ctx.node_name
        );
        Ok(Replicator {
            ctx,
            listeners,
            manager: Some(manager),
            listen_addrs,
        })
    }

    /// Stops every replication thread (sessions end, nothing half-applied: the core commits
    /// whole transactions only).
    pub fn stop(mut self) {
        self.ctx.stopping.store(true, Ordering::SeqCst);
        let _ = self.ctx.mgr.send(MgrEvent::Stop);
        // Wake the blocking accepts.
        for a in &self.listen_addrs {
            let _ = TcpStream::connect_timeout(a, Duration::from_millis(200));
        }
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
        for l in self.listeners.drain(..) {
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
