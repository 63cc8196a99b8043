//! Per-link statistics that socket threads publish and `cluster_status` reads.
//!
//! One [`LinkStats`] per (peer, database), shared by the socket we pull on and the socket we
//! push on (Harper keeps one slot set per database and peer too). Every value is measured by the
//! thread that owns the socket: connected flags follow live sessions and bytes actually moving,
//! latency is a ping round trip, times are when things really happened.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

static NEXT_THREAD_ID: AtomicU32 = AtomicU32::new(1);

/// A small integer naming a socket thread in `cluster_status` (`thread_id`).
pub fn next_thread_id() -> u32 {
    NEXT_THREAD_ID.fetch_add(1, Ordering::Relaxed)
}

/// One direction of a link: the session that currently owns it.
#[derive(Default)]
pub struct Side {
    pub connected: AtomicBool,
    pub thread_id: AtomicU32,
    /// Session number of the owner; a superseded session must not touch the flags of its
    /// replacement (Harper's watchdogSupersededInstanceFire failure).
    pub session: AtomicU64,
    pub latency_us: AtomicU64,
}

impl Side {
    pub fn claim(&self, session: u64, thread_id: u32) {
        self.session.store(session, Ordering::SeqCst);
        self.thread_id.store(thread_id, Ordering::Relaxed);
        // A new session measures its own round trip (its first ping goes out within a tick).
        self.latency_us.store(0, Ordering::Relaxed);
        self.connected.store(true, Ordering::SeqCst);
    }

    /// Marks the side disconnected if `session` still owns it.
    pub fn release(&self, session: u64) {
        if self.session.load(Ordering::SeqCst) == session {
            self.connected.store(false, Ordering::SeqCst);
        }
    }
}

#[derive(Default)]
pub struct LinkStats {
    pub pull: Side,
    pub push: Side,
    /// Wall-clock ms of the last acknowledgement of our stream by the peer.
    pub last_commit_confirmed_ms: AtomicU64,
    /// Highest origin version received from this peer.
    pub last_received_version: AtomicU64,
    /// Wall-clock ms when transactions last arrived.
    pub last_received_local_ms: AtomicU64,
    /// Wall-clock ms when we last sent transactions.
    pub last_send_ms: AtomicU64,
    /// Version of the transaction batch being sent right now (0 = idle).
    pub sending_version: AtomicU64,
    pub records_received: AtomicU64,
    pub records_sent: AtomicU64,
    /// A full copy is being sent to the peer / received from it: rows so far (0 = none).
    pub copy_sent: AtomicU64,
    pub copy_received: AtomicU64,
    pub copying_out: AtomicBool,
    pub copying_in: AtomicBool,
    /// Records the copy in progress holds (0 = unknown), and when it started.
    pub copy_total: AtomicU64,
    pub copy_started_ms: AtomicU64,
    /// What the peer acknowledged on the stream this node sends: origin → version (capped in
    /// size by the number of origins, which `validate` bounds).
    pub acked: Mutex<BTreeMap<String, u64>>,
    /// Origins whose transactions we receive over this link (the peer plus relayed ones).
    pub nodes: Mutex<Vec<String>>,
    /// Why the link is down, with the wall-clock ms it happened.
    pub last_error: Mutex<Option<(u64, String)>>,
    /// The certificate the peer serves when this node dials it, and the one it presents when
    /// it dials this node (they differ when this node's CA signed one for it in add_node).
    pub peer_cert: Mutex<Option<crate::tls::info::CertInfo>>,
    pub peer_client_cert: Mutex<Option<crate::tls::info::CertInfo>>,
}

impl LinkStats {
    pub fn set_error(&self, msg: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((crate::util::time::now_ms(), msg));
    }

    pub fn set_peer_cert(&self, cert: Option<&crate::tls::info::CertInfo>, dialled: bool) {
        if let Some(c) = cert {
            let slot = if dialled {
                &self.peer_cert
            } else {
                &self.peer_client_cert
            };
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        }
    }

    pub fn record_acked(&self, applied: &[(String, u64)]) {
        let mut a = self.acked.lock().unwrap_or_else(|p| p.into_inner());
        for (origin, v) in applied {
            if a.len() < 4096 || a.contains_key(origin) {
                let slot = a.entry(origin.clone()).or_insert(0);
                *slot = (*slot).max(*v);
            }
        }
    }

    /// Progress of the full copy in progress, if any: (direction, records so far, total or
    /// 0, estimated ms left or None).
    pub fn copy_progress(&self, now_ms: u64) -> Option<(&'static str, u64, u64, Option<u64>)> {
        let (dir, done) = if self.copying_out.load(Ordering::Relaxed) {
            ("sending", self.copy_sent.load(Ordering::Relaxed))
        } else if self.copying_in.load(Ordering::Relaxed) {
            ("receiving", self.copy_received.load(Ordering::Relaxed))
        } else {
            return None;
        };
        let total = self.copy_total.load(Ordering::Relaxed);
        let elapsed = now_ms.saturating_sub(self.copy_started_ms.load(Ordering::Relaxed));
        let eta = (total > done && done > 0 && elapsed > 0)
            .then(|| (total - done).saturating_mul(elapsed) / done);
        Some((dir, done, total, eta))
    }

    pub fn max_received(&self, version: u64) {
        self.last_received_version
            .fetch_max(version, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Stats {
    links: Mutex<BTreeMap<(String, String), Arc<LinkStats>>>,
}

impl Stats {
    /// Every (peer, database) slot.
    pub fn all(&self) -> Vec<((String, String), Arc<LinkStats>)> {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The stats slot of (peer, database), created on first use.
    pub fn link(&self, peer: &str, db: &str) -> Arc<LinkStats> {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((peer.to_string(), db.to_string()))
            .or_default()
            .clone()
    }
}
