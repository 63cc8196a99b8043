//! `skerry`: start a node from a YAML config (`skerry --config FILE`).

use skerry::config::Config;
use std::path::PathBuf;

const USAGE: &str = "\
skerry - a small, fast, Harper-compatible database node

USAGE:
    skerry [--config FILE]                  run a node
    skerry check [--config FILE]            verify a stopped node's store (read-only)
    skerry restore BACKUP [--config FILE]   restore a get_backup file into an empty rootPath
    skerry health [--config FILE]           exit 0 if the node of that config answers /health

OPTIONS:
    -c, --config FILE   YAML configuration (Harper key names). Without it the built-in
                        default (config.example.yaml) is used.
    -h, --help          Print this help.
    -V, --version       Print the version.

Environment variables override configuration keys, Harper style
(ROOTPATH, OPERATIONSAPI_NETWORK_PORT, REPLICATION_HOSTNAME, ...).
On the first start HDB_ADMIN_USERNAME / HDB_ADMIN_PASSWORD name the first super_user;
without them a password is generated and printed once.
SIGTERM or SIGINT stops the node gracefully; SIGHUP is ignored.

Without --config the data lives in /var/lib/skerry when run as root, else in
$XDG_DATA_HOME/skerry (~/.local/share/skerry); ROOTPATH=... chooses another folder.
The operations API then listens on 127.0.0.1:9925 only.";

fn main() {
    owner_only_files();
    return_freed_memory_promptly();
    let mut config_path: Option<PathBuf> = None;
    let mut command: Option<String> = None;
    let mut operand: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "check" | "restore" | "health" if command.is_none() => command = Some(a.clone()),
            _ if command.as_deref() == Some("restore")
                && operand.is_none()
                && !a.starts_with('-') =>
            {
                operand = Some(PathBuf::from(&a))
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            "-V" | "--version" => {
                println!("skerry {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            "-c" | "--config" => match args.next() {
                Some(p) => config_path = Some(PathBuf::from(p)),
                None => fail("--config needs a file name"),
            },
            other => match other.strip_prefix("--config=") {
                Some(p) => config_path = Some(PathBuf::from(p)),
                None => fail(&format!("unknown argument '{other}' (see --help)")),
            },
        }
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let cfg = match Config::load(config_path.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => fail(&e.to_string()),
    };
    match command.as_deref() {
        Some("check") => check(&cfg),
        Some("health") => health(&cfg),
        Some("restore") => match operand {
            Some(file) => restore(&cfg, &file),
            None => fail("restore needs the backup file: skerry restore BACKUP --config FILE"),
        },
        _ => {}
    }
    init_logging(&cfg);
    for w in &cfg.warnings {
        log::warn!("{w}");
    }

    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => fail(&format!("cannot install signal handlers: {e}")),
    };
    let (restart_tx, restart_rx) = crossbeam_channel::bounded::<()>(1);
    let node = match skerry::node::Node::start_with(&cfg, &env, Some(restart_tx)) {
        Ok(n) => n,
        Err(e) => fail(&e),
    };
    sd_notify("READY=1");
    let (sig_tx, sig_rx) = crossbeam_channel::unbounded::<i32>();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig_tx.send(sig).is_err() {
                break;
            }
        }
    });
    let restart = loop {
        crossbeam_channel::select! {
            recv(sig_rx) -> sig => match sig {
                Ok(signal_hook::consts::SIGHUP) => log::warn!(
                    "SIGHUP received: ignored (the config is read at start; restart to apply changes)"
                ),
                Ok(sig) => {
                    log::info!("signal {sig} received, stopping");
                    break false;
                }
                Err(_) => break false,
            },
            recv(restart_rx) -> _ => {
                log::warn!("restart requested: stopping, then starting again");
                break true;
            }
        }
    };
    // A graceful stop: in-flight requests (the restart's own answer among them) finish first.
    sd_notify(if restart { "RELOADING=1" } else { "STOPPING=1" });
    node.stop();
    if restart {
        re_exec();
    }
}

/// Replaces this process with a fresh start of the same binary (the one now at the path it
/// was started from, so a restart after an upgrade runs the new version), same arguments and
/// environment, same pid (a service manager sees no exit). Every descriptor Rust opened is
/// close-on-exec, so the listeners and the store lock are released.
fn re_exec() -> ! {
    use std::os::unix::process::CommandExt;
    let exe = std::fs::read_link("/proc/self/exe")
        .ok()
        .map(|p| {
            let s = p.to_string_lossy().to_string();
            PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s))
        })
        .or_else(|| std::env::args_os().next().map(PathBuf::from));
    let Some(exe) = exe else {
        fail("restart: cannot find this binary");
    };
    let err = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .exec();
    fail(&format!("restart: cannot execute {}: {err}", exe.display()));
}

/// `skerry health`: GET /health on the configured operations port (loopback when it listens
/// on every interface); for container health checks and scripts. Exit 0 when healthy.
fn health(cfg: &Config) -> ! {
    use std::io::{Read, Write};
    let l = &cfg.operations_api.network.port;
    let host = match l.host.as_deref() {
        None | Some("0.0.0.0") => "127.0.0.1".to_string(),
        Some("::") => "::1".to_string(),
        Some(h) => h.to_string(),
    };
    let addr = if host.contains(':') {
        format!("[{host}]:{}", l.port)
    } else {
        format!("{host}:{}", l.port)
    };
    let result = (|| -> std::io::Result<String> {
        let sa = std::net::ToSocketAddrs::to_socket_addrs(&addr)?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let mut s = std::net::TcpStream::connect_timeout(&sa, std::time::Duration::from_secs(3))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: skerry\r\nConnection: close\r\n\r\n")?;
        let mut buf = Vec::new();
        s.take(4096).read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    })();
    match result {
        Ok(r) if r.starts_with("HTTP/1.1 200") => {
            println!("healthy: {addr}");
            std::process::exit(0)
        }
        Ok(r) => {
            println!("unhealthy: {addr}: {}", r.lines().next().unwrap_or(""));
            std::process::exit(1)
        }
        Err(e) => {
            println!("unhealthy: {addr}: {e}");
            std::process::exit(1)
        }
    }
}

/// Tells systemd (Type=notify) how the service is doing, when it started us with a
/// NOTIFY_SOCKET; a no-op otherwise.
fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path))
    };
    if let Err(e) = sent {
        log::warn!("cannot notify systemd ({state}): {e}");
    }
}

/// `skerry check`: prints what it verified and every problem; exit 0 when clean, 1 otherwise.
fn check(cfg: &Config) -> ! {
    let r = match skerry::node::check::check(cfg) {
        Ok(r) => r,
        Err(e) => fail(&format!("check: {e}")),
    };
    println!(
        "checked {} tables: {} records, {} index entries, {} audit entries in {}",
        r.tables,
        r.records,
        r.index_entries,
        r.audit_entries,
        cfg.root_path.display()
    );
    for p in &r.problems {
        println!("problem: {p}");
    }
    if r.more_problems > 0 {
        println!("... and {} more problems", r.more_problems);
    }
    if r.is_clean() {
        println!("no problems found");
        std::process::exit(0);
    }
    std::process::exit(1);
}

/// `skerry restore BACKUP`: restores into the config's (empty) rootPath.
fn restore(cfg: &Config, file: &std::path::Path) -> ! {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) => fail(&format!("cannot open {}: {e}", file.display())),
    };
    let mut input = std::io::BufReader::with_capacity(1 << 20, f);
    let opts = skerry::store::StoreOptions {
        cache_size: cfg.storage.cache_size,
        max_write_buffer_size: cfg.storage.max_write_buffer_size,
    };
    match skerry::store::backup::restore(&cfg.root_path, &opts, &mut input) {
        Ok(s) => {
            println!(
                "restored {} entries ({} bytes) into {}; start the node with the same --config",
                s.entries,
                s.bytes,
                cfg.root_path.display()
            );
            std::process::exit(0);
        }
        Err(e) => fail(&format!("restore: {e}")),
    }
}

fn init_logging(cfg: &Config) {
    let level = cfg.logging.level;
    let node = cfg.node_name();
    let json = cfg.logging.format == skerry::config::LogFormat::Json;
    let mut b = env_logger::Builder::new();
    // One line per event, each naming the node (several nodes' logs often end up in one place).
    b.format(move |f, record| {
        use std::io::Write;
        let ts = skerry::util::time::iso8601(skerry::util::time::now_ms());
        if json {
            let line = serde_json::json!({
                "timestamp": ts,
                "level": record.level().as_str().to_ascii_lowercase(),
                "node": node,
                "target": record.target(),
                "message": record.args().to_string(),
            });
            writeln!(f, "{line}")
        } else {
            let msg = record.args().to_string().replace('\n', "\\n");
            writeln!(
                f,
                "{ts} {:<5} {node} {}: {msg}",
                record.level(),
                record.target()
            )
        }
    });
    // The logger passes everything; `log::set_max_level` is the filter, so set_configuration
    // can change the level of a running node (up as well as down).
    b.filter_level(log::LevelFilter::Trace);
    // fjall and lsm-tree log at info on every open; keep them to warnings unless asked.
    b.filter_module("fjall", log::LevelFilter::Warn);
    b.filter_module("lsm_tree", log::LevelFilter::Warn);
    let rust_log = std::env::var("RUST_LOG").ok();
    if let Some(spec) = &rust_log {
        b.parse_filters(spec);
    }
    let inner = b.build();
    log::set_max_level(if rust_log.is_some() {
        inner.filter()
    } else {
        level
    });
    if log::set_boxed_logger(Box::new(Redacting(inner))).is_err() {
        eprintln!("skerry: a logger was already installed");
    }
}

/// Passes every log line through `util::redact` first: dependencies log handshake headers at
/// trace level, and a credential must never reach a log, whatever the level.
struct Redacting(env_logger::Logger);

impl log::Log for Redacting {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !self.0.matches(record) {
            return;
        }
        let text = record.args().to_string();
        let clean = skerry::util::redact::redact(&text);
        let level = record.level().as_str().to_ascii_lowercase();
        let thread = std::thread::current();
        skerry::util::logfile::write(skerry::util::logfile::entry_line(
            skerry::util::time::now_ms(),
            thread.name().unwrap_or("http"),
            &level,
            record.target(),
            &clean,
        ));
        self.0.log(
            &log::Record::builder()
                .args(format_args!("{clean}"))
                .metadata(record.metadata().clone())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.0.flush();
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("skerry: {msg}");
    std::process::exit(2);
}

/// Every file and folder this process creates is owner-only (0600 / 0700): the data folder
/// holds password hashes, the token secret and retained peer credentials.
fn owner_only_files() {
    // SAFETY: umask(2) only sets the process's file mode creation mask; it cannot fail and
    // touches no memory.
    #[allow(unsafe_code)]
    unsafe {
        libc::umask(0o077);
    }
}

/// mimalloc: with glibc's malloc, allocation was ~45% of the CPU of a bulk insert and RSS after
/// loading 1M records was 250 MB; mimalloc is faster and, with prompt purging, far smaller.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Index of `mi_option_purge_delay` in the bundled mimalloc (v3) option enum.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc keeps freed pages around for a second (the bundled v3's default purge delay)
/// before returning them to the OS. Under a write load, memtables and request buffers are freed constantly, so pages
/// never get old enough: RSS after loading 1,000,000 records measured ~200 MB with the default
/// and ~90 MB with purging at once, for ~17% less bulk-insert throughput (scripts/bench.sh).
/// Small boxes are what Skerry is for, so memory wins; `MIMALLOC_PURGE_DELAY` in the
/// environment (mimalloc's own variable) still decides when set.
fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mi_option_get/mi_option_set read and write one integer option of the allocator;
    // the value at the index is checked first (purge_delay's default: 1000 ms in the bundled
    // v3, 10 ms in v2), so a different bundled mimalloc cannot make this set another option.
    #[allow(unsafe_code)]
    unsafe {
        if matches!(
            libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
            10 | 1000
        ) {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
}
