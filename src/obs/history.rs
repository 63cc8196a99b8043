//! The last minutes of throughput, sampled every [`INTERVAL`] by one thread: requests
//! answered by this node, and records received and sent per replication link. The status
//! page draws its sparklines from it. Bounded: [`KEEP`] samples.

use super::LinkSnap;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub const INTERVAL: Duration = Duration::from_secs(5);
/// Ten minutes of samples.
pub const KEEP: usize = 120;

#[derive(Debug, Clone, Default)]
struct Sample {
    requests: u64,
    links: BTreeMap<(String, String), (u64, u64)>,
}

fn samples() -> &'static Mutex<VecDeque<Sample>> {
    static S: OnceLock<Mutex<VecDeque<Sample>>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(VecDeque::new()))
}

/// Records one sample (the sampler thread calls this every [`INTERVAL`]).
pub fn record(links: &[LinkSnap]) {
    let sample = Sample {
        requests: super::metrics()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        links: links
            .iter()
            .map(|l| {
                (
                    (l.peer.clone(), l.database.clone()),
                    (l.records_received, l.records_sent),
                )
            })
            .collect(),
    };
    let mut s = samples().lock().unwrap_or_else(|p| p.into_inner());
    if s.len() == KEEP {
        s.pop_front();
    }
    s.push_back(sample);
}

/// Starts the sampler: `links` is called every interval until `stop` is dropped or sent to.
pub fn start(links: Box<dyn Fn() -> Vec<LinkSnap> + Send>, stop: crossbeam_channel::Receiver<()>) {
    let spawned = std::thread::Builder::new()
        .name("obs-history".into())
        .spawn(move || {
            let tick = crossbeam_channel::tick(INTERVAL);
            loop {
                crossbeam_channel::select! {
                    recv(tick) -> _ => record(&links()),
                    recv(stop) -> _ => break,
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the throughput sampler: {e}");
    }
}

/// Per-interval rates (per second) of the node's requests, oldest first.
pub fn requests_per_s() -> Vec<f64> {
    let s = samples().lock().unwrap_or_else(|p| p.into_inner());
    s.iter()
        .zip(s.iter().skip(1))
        .map(|(a, b)| b.requests.saturating_sub(a.requests) as f64 / INTERVAL.as_secs_f64())
        .collect()
}

/// Per-interval rates (records per second, received + sent) of one link, oldest first.
pub fn link_records_per_s(peer: &str, db: &str) -> Vec<f64> {
    let key = (peer.to_string(), db.to_string());
    let s = samples().lock().unwrap_or_else(|p| p.into_inner());
    s.iter()
        .zip(s.iter().skip(1))
        .map(|(a, b)| {
            let (ar, asent) = a.links.get(&key).copied().unwrap_or_default();
            let (br, bsent) = b.links.get(&key).copied().unwrap_or_default();
            (br.saturating_sub(ar) + bsent.saturating_sub(asent)) as f64 / INTERVAL.as_secs_f64()
        })
        .collect()
}
