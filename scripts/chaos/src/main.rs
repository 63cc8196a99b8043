//! Skerry's real-process chaos run (driven by scripts/chaos.sh).
//!
//! Starts 3-5 `skerry` nodes on 127.39.0.x, joins them through a fault-injecting proxy (every
//! replication link goes through it), preloads a table, then runs concurrent clients that
//! write, update and delete on every node while a seeded schedule of faults plays: kill -9 and
//! restart, crash right after acknowledged writes, partitions, delays, half-open and wedged
//! links, concurrent same-key writes, a node away past the audit retention (full copy) whose
//! copy is interrupted again and again, a restart with the node's clock stepped back
//! (SKERRY_TEST_CLOCK_OFFSET_MS). Then it heals everything, waits for convergence and checks
//! G1-G6 (src/check.rs) over every node's final state against the client log.
//!
//! The seed fixes the fault schedule (kinds, targets, durations, order); client timing is
//! left to the machine. Exit status: 0 all guarantees hold, 1 a violation (the offending keys
//! are printed), 2 the harness itself failed (a node would not start, no convergence to check).
//! Must never signal a process it did not spawn.

mod check;
mod client;
mod node;
mod proxy;

use client::{now_ms, Kind, Log, Workload, TABLE};
use node::{Node, Reply, PROXY_PORT};
use proxy::{Mode, Proxy};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// splitmix64: small, seedable, good enough for schedules and workloads.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

struct Args {
    minutes: f64,
    seed: u64,
    nodes: usize,
    clients: usize,
    bin: PathBuf,
    dir: PathBuf,
    out: PathBuf,
    retention_s: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: chaos --bin SKERRY --dir RUN_DIR --out OUT_DIR [--minutes N] [--seed S] [--nodes 3..5] [--clients N] [--retention-s S]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        minutes: 1.5,
        seed: 1,
        nodes: 3,
        clients: 6,
        bin: PathBuf::new(),
        dir: PathBuf::new(),
        out: PathBuf::new(),
        retention_s: 12,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--minutes" => a.minutes = v.parse().unwrap_or_else(|_| usage()),
            "--seed" => a.seed = v.parse().unwrap_or_else(|_| usage()),
            "--nodes" => a.nodes = v.parse().unwrap_or_else(|_| usage()),
            "--clients" => a.clients = v.parse().unwrap_or_else(|_| usage()),
            "--retention-s" => a.retention_s = v.parse().unwrap_or_else(|_| usage()),
            "--bin" => a.bin = v.into(),
            "--dir" => a.dir = v.into(),
            "--out" => a.out = v.into(),
            _ => usage(),
        }
    }
    if !(3..=5).contains(&a.nodes) || a.bin.as_os_str().is_empty() || a.dir.as_os_str().is_empty() {
        usage();
    }
    if a.out.as_os_str().is_empty() {
        a.out = a.dir.join("out");
    }
    a
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Fault {
    /// kill -9, deletes on the others while it is down, restart.
    Kill { node: usize, down_ms: u64 },
    /// Acknowledged writes on the node, kill -9 right after the last acknowledgement.
    CrashAfterAck {
        node: usize,
        writes: usize,
        down_ms: u64,
    },
    /// Every link into and out of the node is down.
    Partition { node: usize, ms: u64 },
    /// Only the links between a and b are down.
    SplitLink { a: usize, b: usize, ms: u64 },
    /// Every link of the node delays each chunk.
    Delay { node: usize, delay_ms: u64, ms: u64 },
    /// src's connection to dst: dst's side reset, src's side open and silent.
    HalfOpen { src: usize, dst: usize, ms: u64 },
    /// Both directions between a and b wedged (sockets open, nothing moves).
    Hold { a: usize, b: usize, ms: u64 },
    /// The same key written on every node at once, `rounds` times.
    Race { key: usize, rounds: usize },
    /// Down past the audit retention (a full copy on return), the copy interrupted
    /// `interrupts` times (kill -9 or cut links, alternately).
    LongOutage { node: usize, interrupts: usize },
    /// kill -9, restart with the node's clock stepped back by `back_ms` (its versions must
    /// still only grow: G6).
    ClockBack { node: usize, back_ms: u64 },
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill9_restart",
            Fault::CrashAfterAck { .. } => "crash_after_ack",
            Fault::Partition { .. } => "partition_node",
            Fault::SplitLink { .. } => "partition_link",
            Fault::Delay { .. } => "delay",
            Fault::HalfOpen { .. } => "half_open",
            Fault::Hold { .. } => "wedged_link",
            Fault::Race { .. } => "same_key_race",
            Fault::LongOutage { .. } => "past_retention_outage",
            Fault::ClockBack { .. } => "clock_back_restart",
        }
    }
}

/// The seeded schedule: every scenario once (in a seeded order), then seeded picks until the
/// run's duration is covered (by the faults' nominal lengths plus the gaps).
fn schedule(seed: u64, n: usize, minutes: f64, retention_s: u64) -> Vec<(u64, Fault)> {
    let mut rng = Rng::new(seed);
    let budget_ms = (minutes * 60_000.0) as u64;
    let mut out = Vec::new();
    let mut used = 0u64;
    let pick_pair = |rng: &mut Rng| {
        let a = rng.below(n as u64) as usize;
        let b = (a + 1 + rng.below(n as u64 - 1) as usize) % n;
        (a, b)
    };
    let make = |kind: u64, rng: &mut Rng| -> Fault {
        let node = rng.below(n as u64) as usize;
        match kind {
            0 => Fault::Kill {
                node,
                down_ms: rng.range(1_000, 6_000),
            },
            1 => Fault::CrashAfterAck {
                node,
                writes: rng.range(3, 20) as usize,
                down_ms: rng.range(500, 3_000),
            },
            2 => Fault::Partition {
                node,
                ms: rng.range(2_000, 8_000),
            },
            3 => {
                let (a, b) = pick_pair(rng);
                Fault::SplitLink {
                    a,
                    b,
                    ms: rng.range(2_000, 8_000),
                }
            }
            4 => Fault::Delay {
                node,
                delay_ms: rng.range(20, 300),
                ms: rng.range(3_000, 8_000),
            },
            5 => {
                let (src, dst) = pick_pair(rng);
                Fault::HalfOpen {
                    src,
                    dst,
                    ms: rng.range(2_000, 8_000),
                }
            }
            6 => {
                let (a, b) = pick_pair(rng);
                Fault::Hold {
                    a,
                    b,
                    ms: rng.range(2_000, 6_000),
                }
            }
            7 => Fault::Race {
                key: rng.below(1_000) as usize,
                rounds: rng.range(3, 8) as usize,
            },
            9 => Fault::ClockBack {
                node,
                back_ms: rng.range(5_000, 120_000),
            },
            _ => Fault::LongOutage {
                node,
                interrupts: rng.range(2, 4) as usize,
            },
        }
    };
    let nominal = |f: &Fault| -> u64 {
        match f {
            Fault::Kill { down_ms, .. } => *down_ms + 1_000,
            Fault::CrashAfterAck { down_ms, .. } => *down_ms + 1_500,
            Fault::Partition { ms, .. }
            | Fault::SplitLink { ms, .. }
            | Fault::Delay { ms, .. }
            | Fault::HalfOpen { ms, .. }
            | Fault::Hold { ms, .. } => *ms,
            Fault::Race { rounds, .. } => *rounds as u64 * 100,
            Fault::ClockBack { .. } => 2_000,
            Fault::LongOutage { interrupts, .. } => {
                (retention_s + 6) * 1_000 + *interrupts as u64 * 4_000
            }
        }
    };
    // Every scenario once, in a seeded order (Fisher-Yates).
    let mut kinds: Vec<u64> = (0..10).collect();
    for i in (1..kinds.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        kinds.swap(i, j);
    }
    let mut first = kinds.into_iter();
    while used < budget_ms || out.len() < 10 {
        let kind = match first.next() {
            Some(k) => k,
            // Later: the long outage is rare (it is long), the others equally likely.
            None => {
                let r = rng.below(100);
                if r < 4 {
                    8
                } else if r < 10 {
                    9
                } else {
                    r % 8
                }
            }
        };
        let f = make(kind, &mut rng);
        let gap = rng.range(500, 3_000);
        used += gap + nominal(&f);
        out.push((gap, f));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

struct Run {
    nodes: Vec<Mutex<Node>>,
    addrs: Vec<String>,
    names: Vec<String>,
    proxy: Proxy,
    log: Log,
    faults: Mutex<BTreeMap<&'static str, u64>>,
    kills: AtomicU64,
    copy_interrupts: AtomicU64,
    retention_s: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn say(msg: &str) {
    eprintln!("[chaos {}] {msg}", clock());
}

fn clock() -> String {
    let s = now_ms() / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

impl Run {
    fn op(&self, i: usize, body: Value) -> Reply {
        node::post(&self.addrs[i], &body, Duration::from_secs(30))
    }

    fn ok(&self, i: usize, body: Value) -> Result<Value, String> {
        match self.op(i, body.clone()) {
            Reply::Answer(200, v) => Ok(v),
            r => Err(format!("node {i}: {body} -> {r}")),
        }
    }

    fn kill(&self, i: usize) {
        lock(&self.nodes[i]).kill9();
        self.kills.fetch_add(1, Ordering::SeqCst);
    }

    fn start(&self, i: usize) -> Result<(), String> {
        lock(&self.nodes[i]).start()
    }

    fn count(&self, kind: &'static str) {
        *lock(&self.faults).entry(kind).or_insert(0) += 1;
    }

    /// Deletes `k` random general keys through the live nodes other than `down`.
    fn deletes_elsewhere(&self, down: usize, k: usize, rng: &mut Rng, wl: &Workload) {
        for j in 0..k {
            let via = (down + 1 + j % (self.addrs.len() - 1)) % self.addrs.len();
            let key = wl.pick_key(rng);
            client::write(
                &self.log,
                "nemesis",
                via,
                &self.addrs[via],
                Kind::Delete,
                &key,
                None,
            );
        }
    }

    /// Acknowledged writes on `node`, then kill -9 at once. Returns how many were acked.
    fn crash_after_ack(&self, node: usize, writes: usize, rng: &mut Rng, tag: &str) -> usize {
        let acked = self.write_some(node, writes, rng, tag);
        self.kill(node);
        acked
    }

    /// `writes` upserts of random keys on `node`; how many were acknowledged.
    fn write_some(&self, node: usize, writes: usize, rng: &mut Rng, tag: &str) -> usize {
        let mut acked = 0;
        for w in 0..writes {
            let key = format!("k-{}", rng.below(300));
            let token = format!("{tag}-{w}");
            let r = client::write(
                &self.log,
                tag,
                node,
                &self.addrs[node],
                Kind::Upsert,
                &key,
                Some(&token),
            );
            if r.acked_effective().is_some() {
                acked += 1;
            }
        }
        acked
    }

    fn copy_receiving(&self, node: usize) -> bool {
        let Ok(st) = self.ok(node, json!({"operation":"cluster_status"})) else {
            return false;
        };
        st["connections"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["database_sockets"].as_array().is_some_and(|ss| {
                    ss.iter()
                        .any(|s| s["database"] == "dev" && s["copy"]["direction"] == "receiving")
                })
            })
        })
    }

    fn play(&self, f: &Fault, rng: &mut Rng, wl: &Workload, idx: usize) -> Result<(), String> {
        self.count(f.kind());
        let sleep = |ms: u64| std::thread::sleep(Duration::from_millis(ms));
        match *f {
            Fault::ClockBack { node, back_ms } => {
                // Cut off first: its first versions after the restart come from its own clock
                // and what it persisted, not from newer versions its peers would stream to it
                // at once (with them, a node that forgot its clock floor still looked fine).
                self.proxy.isolate(node, Mode::Down);
                self.kill(node);
                {
                    let mut nd = lock(&self.nodes[node]);
                    nd.clock_offset_ms -= back_ms as i64;
                }
                self.start(node)?;
                self.write_some(node, 10, rng, &format!("clock{idx}"));
                self.proxy.isolate(node, Mode::Up);
            }
            Fault::Kill { node, down_ms } => {
                self.kill(node);
                // Deletes while it is down (it must not bring them back).
                self.deletes_elsewhere(node, 5, rng, wl);
                sleep(down_ms);
                self.start(node)?;
            }
            Fault::CrashAfterAck {
                node,
                writes,
                down_ms,
            } => {
                self.crash_after_ack(node, writes, rng, &format!("crash{idx}"));
                sleep(down_ms);
                self.start(node)?;
            }
            Fault::Partition { node, ms } => {
                self.proxy.isolate(node, Mode::Down);
                sleep(ms);
                self.proxy.isolate(node, Mode::Up);
            }
            Fault::SplitLink { a, b, ms } => {
                self.proxy.set(a, b, Mode::Down);
                self.proxy.set(b, a, Mode::Down);
                sleep(ms);
                self.proxy.set(a, b, Mode::Up);
                self.proxy.set(b, a, Mode::Up);
            }
            Fault::Delay { node, delay_ms, ms } => {
                self.proxy.isolate(node, Mode::Delay(delay_ms));
                sleep(ms);
                self.proxy.isolate(node, Mode::Up);
            }
            Fault::HalfOpen { src, dst, ms } => {
                self.proxy.set(src, dst, Mode::HalfOpen);
                sleep(ms);
                self.proxy.set(src, dst, Mode::Up);
            }
            Fault::Hold { a, b, ms } => {
                self.proxy.set(a, b, Mode::Hold);
                self.proxy.set(b, a, Mode::Hold);
                sleep(ms);
                self.proxy.set(a, b, Mode::Up);
                self.proxy.set(b, a, Mode::Up);
            }
            Fault::Race { key, rounds } => {
                let key = client::hot_key(key % wl.hot_keys);
                for r in 0..rounds {
                    let barrier = std::sync::Barrier::new(self.addrs.len());
                    std::thread::scope(|s| {
                        for (i, addr) in self.addrs.iter().enumerate() {
                            let (barrier, key) = (&barrier, &key);
                            s.spawn(move || {
                                let name = format!("race{idx}-n{i}");
                                let token = format!("{name}-{r}");
                                barrier.wait();
                                client::write(
                                    &self.log,
                                    &name,
                                    i,
                                    addr,
                                    Kind::Upsert,
                                    key,
                                    Some(&token),
                                );
                            });
                        }
                    });
                }
            }
            Fault::LongOutage { node, interrupts } => {
                // Crash right after acknowledged writes: they must survive the full copy
                // ("keeps rows only it had, never a replace").
                self.crash_after_ack(node, 5, rng, &format!("outage{idx}"));
                self.deletes_elsewhere(node, 5, rng, wl);
                // Past the horizon: the others prune what it would need to catch up.
                sleep((self.retention_s + 6) * 1_000);
                self.start(node)?;
                for i in 0..interrupts {
                    let t0 = Instant::now();
                    let mut seen = false;
                    while t0.elapsed() < Duration::from_secs(15) {
                        if self.copy_receiving(node) {
                            seen = true;
                            break;
                        }
                        sleep(100);
                    }
                    if !seen {
                        say(&format!(
                            "  node {node}: no full copy in progress to interrupt ({i} interrupted)"
                        ));
                        break;
                    }
                    self.copy_interrupts.fetch_add(1, Ordering::SeqCst);
                    if i % 2 == 0 {
                        say(&format!("  node {node}: full copy in progress, kill -9"));
                        self.kill(node);
                        sleep(500);
                        self.start(node)?;
                    } else {
                        say(&format!(
                            "  node {node}: full copy in progress, cutting its links"
                        ));
                        self.proxy.isolate(node, Mode::Down);
                        sleep(1_500);
                        self.proxy.isolate(node, Mode::Up);
                    }
                }
            }
        }
        Ok(())
    }

    /// Every node lists every other one connected on system and dev.
    fn mesh_up(&self) -> bool {
        (0..self.addrs.len()).all(|i| {
            let Ok(st) = self.ok(i, json!({"operation":"cluster_status"})) else {
                return false;
            };
            (0..self.addrs.len()).filter(|j| *j != i).all(|j| {
                st["connections"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["name"] == self.names[j]
                            && ["system", "dev"].iter().all(|db| {
                                c["database_sockets"].as_array().is_some_and(|ss| {
                                    ss.iter()
                                        .any(|s| s["database"] == *db && s["connected"] == true)
                                })
                            })
                    })
                })
            })
        })
    }

    fn digest(&self, i: usize) -> String {
        self.ok(
            i,
            json!({"operation":"describe_table","database":"dev","table":TABLE}),
        )
        .map(|v| v["digest"].as_str().unwrap_or("?").to_string())
        .unwrap_or_else(|e| format!("error: {e}"))
    }

    /// (match, differing keys) of cluster_verify on node i.
    fn verify(&self, i: usize) -> (bool, Vec<String>) {
        match self.ok(i, json!({"operation":"cluster_verify","database":"dev"})) {
            Ok(v) => {
                let mut keys = Vec::new();
                for p in v["peers"].as_array().into_iter().flatten() {
                    for t in p["tables"].as_array().into_iter().flatten() {
                        for k in t["differing_keys"].as_array().into_iter().flatten() {
                            keys.push(format!("{}:{}", p["name"], k["id"]));
                        }
                    }
                    if let Some(e) = p.get("error") {
                        keys.push(format!("{}: error {e}", p["name"]));
                    }
                }
                (v["match"] == true, keys)
            }
            Err(e) => (false, vec![e]),
        }
    }

    fn dump(&self, i: usize) -> Result<check::State, String> {
        let v = self.ok(
            i,
            json!({"operation":"search_by_value","database":"dev","table":TABLE,
                "attribute":"id","value":"*","get_attributes":["*"]}),
        )?;
        let arr = v
            .as_array()
            .ok_or_else(|| format!("node {i}: search_by_value answered {v}"))?;
        Ok(arr
            .iter()
            .map(|r| (r["id"].as_str().unwrap_or("?").to_string(), r.clone()))
            .collect())
    }
}

fn wait(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn main() {
    let a = parse_args();
    std::process::exit(match run(&a) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("chaos: harness error: {e}");
            2
        }
    });
}

fn run(a: &Args) -> Result<bool, String> {
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let n = a.nodes;
    let ips: Vec<String> = (1..=n).map(|i| format!("127.39.0.{i}")).collect();
    let sched = schedule(a.seed, n, a.minutes, a.retention_s);
    say(&format!(
        "seed {} | {n} nodes on 127.39.0.1-{n} | {} clients | {} min of faults | audit retention {}s",
        a.seed, a.clients, a.minutes, a.retention_s
    ));
    say("fault schedule (reproducible from the seed):");
    for (i, (gap, f)) in sched.iter().enumerate() {
        say(&format!("  #{i:<3} after {gap:>4} ms: {f:?}"));
    }

    let proxy = Proxy::start(&ips, PROXY_PORT)?;
    let nodes: Vec<Mutex<Node>> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| Mutex::new(Node::new(i, ip, &a.dir, &a.bin, a.retention_s)))
        .collect();
    let run = Arc::new(Run {
        addrs: ips.iter().map(|ip| format!("{ip}:9925")).collect(),
        names: ips.clone(),
        nodes,
        proxy,
        log: Log::create(&a.out.join("ops.jsonl"))?,
        faults: Mutex::new(BTreeMap::new()),
        kills: AtomicU64::new(0),
        copy_interrupts: AtomicU64::new(0),
        retention_s: a.retention_s,
    });
    let result = drive(a, &run, &sched);
    run.proxy.stop();
    for nd in &run.nodes {
        lock(nd).kill9();
    }
    run.log.flush();
    result
}

fn drive(a: &Args, run: &Arc<Run>, sched: &[(u64, Fault)]) -> Result<bool, String> {
    let n = run.addrs.len();
    // ---- set-up: nodes, mesh, table, preload
    for i in 0..n {
        run.start(i)?;
    }
    for (j, ip) in run.names.iter().enumerate().skip(1) {
        let r = run.ok(
            0,
            json!({"operation":"add_node","hostname":ip,"url":format!("ws://{ip}:{PROXY_PORT}"),
                "authorization":{"username":node::USER,"password":node::PASS}}),
        )?;
        say(&format!("add_node {j}: {r}"));
    }
    run.ok(
        0,
        json!({"operation":"create_table","database":"dev","table":TABLE,"primary_key":"id"}),
    )?;
    if !wait(Duration::from_secs(60), || run.mesh_up()) {
        return Err("the mesh did not come up within 60 s".into());
    }
    let wl = Workload {
        hot_keys: 6,
        keys: 300,
        preload: 4_000,
    };
    for b in 0..wl.preload / 500 {
        let recs: Vec<Value> = (b * 500..(b + 1) * 500)
            .map(|i| client::value(&client::pre_key(i), &format!("pre-{i}")))
            .collect();
        let start_ms = now_ms();
        let v = run.ok(
            0,
            json!({"operation":"upsert","database":"dev","table":TABLE,"records":recs,"write_details":true}),
        )?;
        let end_ms = now_ms();
        for i in b * 500..(b + 1) * 500 {
            run.log.push(client::OpRec {
                client: "preload".into(),
                kind: Kind::Upsert,
                key: client::pre_key(i),
                node: 0,
                token: Some(format!("pre-{i}")),
                start_ms,
                end_ms,
                outcome: client::Outcome::Acked {
                    effective: true,
                    version: v["txn_time"].as_f64(),
                },
            });
        }
    }
    if !wait(Duration::from_secs(60), || {
        (0..n).all(|i| run.digest(i) == run.digest(0))
    }) {
        return Err("the preload did not reach every node within 60 s".into());
    }
    say(&format!(
        "mesh up, {} records preloaded everywhere",
        wl.preload
    ));

    // ---- chaos: clients and the fault schedule
    let stop = Arc::new(AtomicBool::new(false));
    let t_chaos = Instant::now();
    let mut clients = Vec::new();
    for c in 0..a.clients {
        let (run, stop) = (run.clone(), stop.clone());
        let (seed, hot, keys, pre) = (a.seed, wl.hot_keys, wl.keys, wl.preload);
        clients.push(std::thread::spawn(move || {
            let wl = Workload {
                hot_keys: hot,
                keys,
                preload: pre,
            };
            client::client_loop(c, seed, &run.addrs, &wl, &run.log, &stop);
        }));
    }
    let mut rng = Rng::new(a.seed.wrapping_mul(31).wrapping_add(7));
    let mut harness_error = None;
    for (i, (gap, f)) in sched.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(*gap));
        say(&format!("fault #{i}: {f:?}"));
        if let Err(e) = run.play(f, &mut rng, &wl, i) {
            harness_error = Some(e);
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.join();
    }
    let chaos_s = t_chaos.elapsed().as_secs_f64();
    if let Some(e) = harness_error {
        return Err(e);
    }

    // ---- heal and converge
    say("healing: every link up, every node running");
    run.proxy.heal_all();
    for i in 0..n {
        run.start(i)?;
    }
    let t_heal = Instant::now();
    if !wait(Duration::from_secs(120), || run.mesh_up()) {
        say("WARNING: the mesh is not fully connected after 120 s");
    }
    let mut last = (Vec::new(), Vec::new());
    let converged = wait(Duration::from_secs(180), || {
        let d: Vec<String> = (0..n).map(|i| run.digest(i)).collect();
        let v: Vec<(bool, Vec<String>)> = (0..n).map(|i| run.verify(i)).collect();
        let ok = d.iter().all(|x| x == &d[0]) && v.iter().all(|x| x.0);
        last = (d, v);
        ok
    });
    let converge_s = t_heal.elapsed().as_secs_f64();
    say(&format!(
        "{} after {converge_s:.1} s",
        if converged {
            "converged (digests equal, cluster_verify matches)"
        } else {
            "NOT converged"
        }
    ));

    // ---- check
    let mut states = Vec::new();
    for i in 0..n {
        states.push(run.dump(i)?);
    }
    run.log.flush();
    let ops = run.log.all();
    let g1 = check::g1(&states, &run.names, &last.0, &last.1);
    let mut per = check::new_verdicts();
    for (s, name) in states.iter().zip(&run.names) {
        check::per_node(&ops, s, name, &mut per);
    }
    let (g5, contended) = check::g5(&ops, &states, &run.names);
    let g6 = check::g6(&ops, run.names.len());
    let [g2, g3, g4, _] = per;
    let verdicts = [g1, g2, g3, g4, g5, g6];

    // ---- summary
    let acked = ops
        .iter()
        .filter(|o| matches!(o.outcome, client::Outcome::Acked { .. }))
        .count();
    let effective = ops.iter().filter(|o| o.applied_version().is_some()).count();
    let by_kind = |k: Kind| {
        ops.iter()
            .filter(|o| o.kind == k && o.applied_version().is_some())
            .count()
    };
    let unknown = ops.iter().filter(|o| o.unknown()).count();
    let not_sent = ops
        .iter()
        .filter(|o| o.outcome == client::Outcome::NotSent)
        .count();
    let mut logs = String::new();
    for nd in &run.nodes {
        logs.push_str(&std::fs::read_to_string(lock(nd).log_path()).unwrap_or_default());
    }
    let need_copy = logs.matches("no longer has").count();
    let copies_done = logs
        .lines()
        .filter(|l| l.contains("full copy of dev from") && l.contains(" done ("))
        .count();
    let mut s = String::new();
    let mut line = |t: String| {
        println!("{t}");
        s.push_str(&t);
        s.push('\n');
    };
    line("==================== chaos summary ====================".into());
    line(format!(
        "seed {} | nodes {n} | clients {} | chaos phase {chaos_s:.0} s | convergence {converge_s:.1} s",
        a.seed, a.clients
    ));
    line(format!(
        "operations: {} sent, {acked} acknowledged ({effective} changed the table: {} insert, {} upsert, {} update, {} delete incl. tombstones of missing keys), {unknown} indeterminate, {not_sent} refused (node down)",
        ops.len(),
        by_kind(Kind::Insert),
        by_kind(Kind::Upsert),
        by_kind(Kind::Update),
        by_kind(Kind::Delete),
    ));
    let faults = lock(&run.faults).clone();
    let total: u64 = faults.values().sum();
    line(format!(
        "faults injected: {total} ({})",
        faults
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    line(format!(
        "kill -9: {} | full copies interrupted: {} | NeedCopy (past retention) seen: {need_copy} | full copies finished: {copies_done} | clocks stepped back: {} (node offsets ms: {})",
        run.kills.load(Ordering::SeqCst),
        run.copy_interrupts.load(Ordering::SeqCst),
        faults.get("clock_back_restart").copied().unwrap_or(0),
        run.nodes
            .iter()
            .map(|nd| lock(nd).clock_offset_ms.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    line(format!(
        "final state: {} records on each node; {contended} keys written concurrently on different nodes",
        states[0].len()
    ));
    let mut all_ok = true;
    for v in &verdicts {
        if v.ok() {
            line(format!(
                "{} PASS  {} ({} checked)",
                v.name, v.what, v.checked
            ));
        } else {
            all_ok = false;
            let keys: Vec<&str> = v.keys().into_iter().collect();
            line(format!(
                "{} FAIL  {} ({} violations; keys: {})",
                v.name,
                v.what,
                v.violations.len(),
                keys.iter().take(30).copied().collect::<Vec<_>>().join(" ")
            ));
            for (k, why) in v.violations.iter().take(15) {
                line(format!("      {k}: {why}"));
            }
        }
    }
    line(format!("VERDICT: {}", if all_ok { "PASS" } else { "FAIL" }));
    let _ = std::fs::write(a.out.join("summary.txt"), s);
    Ok(all_ok)
}
