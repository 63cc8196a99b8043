//! Observability: the process's metrics (operations, latencies, group commits, fsyncs)
//! kept in prometheus-client objects, a point-in-time [`Snapshot`] of what the node holds
//! (tables, connections, replication links) gathered at scrape time, the Prometheus text
//! rendering of both (`GET /metrics`), the throughput history behind the status page's
//! sparklines, and the status page itself (`GET /status`).
//!
//! Owns no node state: it counts what callers report and renders what they hand it. Never
//! renders a credential (labels are operation, database, table and peer names only) and
//! bounds every label set a client could grow (operation names are interned up to a cap).

pub mod history;
pub mod status;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

type Labels = Vec<(String, String)>;

/// Distinct operation names counted; others are counted as `other` (a client with valid
/// credentials must not grow the label set without bound).
const MAX_OP_NAMES: usize = 128;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// Process-wide metrics, updated where things happen.
pub struct Metrics {
    ops: Family<Labels, Counter>,
    op_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    commit_ops: Histogram,
    commit_seconds: Histogram,
    op_names: Mutex<HashSet<String>>,
    /// Every answered request (the status page's sparkline of the node's own load).
    pub requests: std::sync::atomic::AtomicU64,
}

pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        ops: Family::default(),
        op_seconds: Family::new_with_constructor(latency_histogram),
        commit_ops: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
        commit_seconds: latency_histogram(),
        op_names: Mutex::new(HashSet::new()),
        requests: std::sync::atomic::AtomicU64::new(0),
    })
}

impl Metrics {
    /// One answered request: its operation (`unauthenticated`, `invalid` when there is none),
    /// HTTP status and duration.
    pub fn operation(&self, name: &str, status: u16, seconds: f64) {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = self.intern(name);
        self.ops
            .get_or_create(&vec![
                ("operation".to_string(), name.clone()),
                ("status".to_string(), status.to_string()),
            ])
            .inc();
        self.op_seconds
            .get_or_create(&vec![("operation".to_string(), name)])
            .observe(seconds);
    }

    fn intern(&self, name: &str) -> String {
        let plausible = !name.is_empty()
            && name.len() <= 48
            && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !plausible {
            return "other".to_string();
        }
        let mut names = self.op_names.lock().unwrap_or_else(|p| p.into_inner());
        if names.contains(name) {
            return name.to_string();
        }
        if names.len() < MAX_OP_NAMES {
            names.insert(name.to_string());
            return name.to_string();
        }
        "other".to_string()
    }

    /// One group commit: how many inputs it carried and how long the write and sync took.
    pub fn commit(&self, inputs: usize, seconds: f64) {
        self.commit_ops.observe(inputs as f64);
        self.commit_seconds.observe(seconds);
    }
}

/// One table as the snapshot sees it.
#[derive(Debug, Clone)]
pub struct TableSnap {
    pub database: String,
    pub table: String,
    pub records: u64,
    pub bytes: u64,
}

/// One replication link (peer, database) as the snapshot sees it.
#[derive(Debug, Clone, Default)]
pub struct LinkSnap {
    pub peer: String,
    pub database: String,
    pub receiving: bool,
    pub sending: bool,
    pub records_received: u64,
    pub records_sent: u64,
    /// How far the peer is behind this node, over every origin this node sends it.
    pub lag_ms: u64,
    pub lag_records: u64,
    pub last_error: Option<(u64, String)>,
    /// A full copy in progress: records so far, and the total when known.
    pub copy_in: Option<(u64, u64)>,
    pub copy_out: Option<(u64, u64)>,
    /// Days until the peer's certificate expires (TLS links).
    pub cert_days_left: Option<i64>,
}

/// What the node holds right now, gathered by the HTTP layer for one scrape or page.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub node: String,
    pub core_alive: bool,
    pub rss_bytes: u64,
    pub connections: u64,
    pub tables: Vec<TableSnap>,
    pub links: Vec<LinkSnap>,
}

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

fn family<'a>(
    enc: &mut DescriptorEncoder<'a>,
    name: &str,
    help: &str,
    ty: MetricType,
    rows: Vec<(Labels, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in rows {
        let e = m.encode_family(&labels)?;
        match ty {
            MetricType::Counter => ConstCounter::new(v).encode(e)?,
            _ => ConstGauge::new(v).encode(e)?,
        }
    }
    Ok(())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let node: Labels = vec![("node".into(), s.node.clone())];
        family(
            &mut enc,
            "skerry_up",
            "1 while the core thread turns",
            MetricType::Gauge,
            vec![(node.clone(), if s.core_alive { 1.0 } else { 0.0 })],
        )?;
        family(
            &mut enc,
            "skerry_resident_memory_bytes",
            "resident set size of the process",
            MetricType::Gauge,
            vec![(node.clone(), s.rss_bytes as f64)],
        )?;
        family(
            &mut enc,
            "skerry_http_connections",
            "open connections to the operations API",
            MetricType::Gauge,
            vec![(node, s.connections as f64)],
        )?;
        let table = |t: &TableSnap| -> Labels {
            vec![
                ("database".into(), t.database.clone()),
                ("table".into(), t.table.clone()),
            ]
        };
        family(
            &mut enc,
            "skerry_table_records",
            "records in a table",
            MetricType::Gauge,
            s.tables
                .iter()
                .map(|t| (table(t), t.records as f64))
                .collect(),
        )?;
        family(
            &mut enc,
            "skerry_table_bytes",
            "bytes a table takes in the store",
            MetricType::Gauge,
            s.tables
                .iter()
                .map(|t| (table(t), t.bytes as f64))
                .collect(),
        )?;
        let link = |l: &LinkSnap| -> Labels {
            vec![
                ("peer".into(), l.peer.clone()),
                ("database".into(), l.database.clone()),
            ]
        };
        let dir = |l: &LinkSnap, d: &str| -> Labels {
            let mut v = link(l);
            v.push(("direction".into(), d.into()));
            v
        };
        let mut connected = Vec::new();
        for l in &s.links {
            connected.push((dir(l, "receiving"), f64::from(u8::from(l.receiving))));
            connected.push((dir(l, "sending"), f64::from(u8::from(l.sending))));
        }
        family(
            &mut enc,
            "skerry_replication_connected",
            "1 while the socket of this direction is live",
            MetricType::Gauge,
            connected,
        )?;
        family(&mut enc, "skerry_replication_lag_seconds",
            "how far the peer is behind what this node sends it (newest unacknowledged transaction age)",
            MetricType::Gauge, s.links.iter().map(|l| (link(l), l.lag_ms as f64 / 1000.0)).collect())?;
        family(&mut enc, "skerry_replication_lag_records",
            "transactions this node holds that the peer has not acknowledged (counted up to 100000)",
            MetricType::Gauge, s.links.iter().map(|l| (link(l), l.lag_records as f64)).collect())?;
        family(
            &mut enc,
            "skerry_replication_records_received",
            "records received from the peer",
            MetricType::Counter,
            s.links
                .iter()
                .map(|l| (link(l), l.records_received as f64))
                .collect(),
        )?;
        family(
            &mut enc,
            "skerry_replication_records_sent",
            "records sent to the peer",
            MetricType::Counter,
            s.links
                .iter()
                .map(|l| (link(l), l.records_sent as f64))
                .collect(),
        )?;
        family(
            &mut enc,
            "skerry_replication_last_error_timestamp_seconds",
            "when the link last failed (see cluster_status for why)",
            MetricType::Gauge,
            s.links
                .iter()
                .filter_map(|l| {
                    l.last_error
                        .as_ref()
                        .map(|(ms, _)| (link(l), *ms as f64 / 1000.0))
                })
                .collect(),
        )?;
        let mut copy = Vec::new();
        let mut copy_total = Vec::new();
        for l in &s.links {
            for (d, c) in [("receiving", l.copy_in), ("sending", l.copy_out)] {
                if let Some((done, total)) = c {
                    copy.push((dir(l, d), done as f64));
                    copy_total.push((dir(l, d), total as f64));
                }
            }
        }
        family(
            &mut enc,
            "skerry_replication_copy_records",
            "records of a full copy in progress so far",
            MetricType::Gauge,
            copy,
        )?;
        family(
            &mut enc,
            "skerry_replication_copy_total_records",
            "records the full copy in progress holds (0 = unknown)",
            MetricType::Gauge,
            copy_total,
        )?;
        family(
            &mut enc,
            "skerry_peer_certificate_days_left",
            "days until the peer's certificate expires",
            MetricType::Gauge,
            s.links
                .iter()
                .filter_map(|l| l.cert_days_left.map(|d| (link(l), d as f64)))
                .collect(),
        )?;
        Ok(())
    }
}

/// The Prometheus text exposition of the process metrics and `snap`.
pub fn render(snap: Snapshot) -> String {
    let m = metrics();
    let mut r = Registry::default();
    r.register(
        "skerry_operations",
        "answered requests by operation and HTTP status",
        m.ops.clone(),
    );
    r.register(
        "skerry_operation_duration_seconds",
        "time from the request's arrival to its answer",
        m.op_seconds.clone(),
    );
    r.register(
        "skerry_group_commit_inputs",
        "inputs (writes, replicated batches) per group commit",
        m.commit_ops.clone(),
    );
    r.register(
        "skerry_group_commit_seconds",
        "time to write and sync one group commit",
        m.commit_seconds.clone(),
    );
    r.register_collector(Box::new(SnapshotCollector(snap)));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &r) {
        log::warn!("cannot render metrics: {e}");
    }
    out
}
