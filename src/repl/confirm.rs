//! Confirm-on-commit (`replicatedConfirmation: N`, `X-Replicate-To: …;confirm=N`): which peers
//! have committed this node's own writes, per database, and the wait of a connection thread
//! until N of them have committed a given version.
//!
//! Owns the highest version of this node's origin each peer acknowledged per database (the
//! push threads record it when the peer's Ack frame arrives; a peer acks only after its core
//! committed and published the batch, so a confirmed write is readable on that peer) and the
//! condvar waiting connection threads sleep on. Must never be waited on by the core thread or
//! a socket thread: only an HTTP connection thread waits, after the core already answered
//! with the committed version; a timeout leaves the write committed locally.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Confirmations {
    /// (database, peer) → highest version of this node's origin the peer committed. Bounded by
    /// members × databases (peers are authenticated members; databases are the catalog's).
    acks: Mutex<HashMap<(String, String), u64>>,
    changed: Condvar,
}

impl Confirmations {
    /// `peer` committed this node's writes of `db` up to `version` (an Ack frame arrived).
    pub fn record(&self, db: &str, peer: &str, version: u64) {
        let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let key = (db.to_string(), peer.to_string());
        let slot = acks.entry(key).or_insert(0);
        if version > *slot {
            *slot = version;
            drop(acks);
            self.changed.notify_all();
        }
    }

    /// How many distinct peers committed `db` at or past `version`.
    pub fn confirmed(&self, db: &str, version: u64) -> usize {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        count(&acks, db, version)
    }

    /// Waits until `n` distinct peers committed `db` at or past `version`, or `timeout` passed.
    /// Err carries how many had confirmed by then. Only connection threads call this.
    pub fn wait(&self, db: &str, version: u64, n: u64, timeout: Duration) -> Result<(), usize> {
        let deadline = Instant::now() + timeout;
        let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let k = count(&acks, db, version);
            if k as u64 >= n {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(k);
            }
            // Spurious wake-ups and acks of other writes just recount.
            acks = self
                .changed
                .wait_timeout(acks, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn count(acks: &HashMap<(String, String), u64>, db: &str, version: u64) -> usize {
    acks.iter()
        .filter(|((d, _), v)| d == db && **v >= version)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_ack_below_the_write_version_does_not_confirm_it() {
        let c = Confirmations::default();
        c.record("data", "b", 99);
        assert_eq!(c.confirmed("data", 100), 0);
        c.record("data", "b", 100);
        assert_eq!(c.confirmed("data", 100), 1);
    }

    #[test]
    fn repeated_acks_of_one_peer_count_once() {
        // Harper 4.x counted confirmations, not peers: two acks from one peer satisfied N=2.
        let c = Confirmations::default();
        c.record("data", "b", 100);
        c.record("data", "b", 101);
        c.record("data", "b", 102);
        assert_eq!(c.confirmed("data", 100), 1);
        assert_eq!(c.wait("data", 100, 2, Duration::ZERO), Err(1));
    }

    #[test]
    fn an_ack_for_another_database_does_not_confirm() {
        let c = Confirmations::default();
        c.record("other", "b", 500);
        assert_eq!(c.confirmed("data", 100), 0);
    }

    #[test]
    fn an_older_ack_never_lowers_what_a_peer_confirmed() {
        let c = Confirmations::default();
        c.record("data", "b", 200);
        c.record("data", "b", 150);
        assert_eq!(c.confirmed("data", 200), 1);
    }

    #[test]
    fn zero_confirmations_never_wait() {
        let c = Confirmations::default();
        let t = Instant::now();
        assert_eq!(c.wait("data", 100, 0, Duration::from_secs(5)), Ok(()));
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_waiter_wakes_when_the_last_needed_ack_arrives() {
        let c = Arc::new(Confirmations::default());
        c.record("data", "b", 100);
        let c2 = c.clone();
        let acker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            c2.record("data", "c", 99); // too old: must not release the waiter
            std::thread::sleep(Duration::from_millis(50));
            c2.record("data", "c", 100);
        });
        let t = Instant::now();
        assert_eq!(c.wait("data", 100, 2, Duration::from_secs(10)), Ok(()));
        assert!(t.elapsed() >= Duration::from_millis(90), "released early");
        assert!(t.elapsed() < Duration::from_secs(5), "not woken by the ack");
        acker.join().unwrap();
    }

    #[test]
    fn a_wait_short_of_peers_times_out_with_the_count() {
        let c = Confirmations::default();
        c.record("data", "b", 100);
        let t = Instant::now();
        assert_eq!(c.wait("data", 100, 2, Duration::from_millis(200)), Err(1));
        assert!(t.elapsed() >= Duration::from_millis(200));
    }
}
