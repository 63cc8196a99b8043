//! `skerry`: start a node from a YAML config (`skerry --config FILE`).

use skerry::config::Config;
use std::path::PathBuf;

const USAGE: &str = "\
skerry - a small, fast, Harper-compatible database node

USAGE:
    skerry [--config FILE]

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
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
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
    init_logging(cfg.logging.level);
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
    let node = match skerry::node::Node::start(&cfg, &env) {
        Ok(n) => n,
        Err(e) => fail(&e),
    };
    for sig in signals.forever() {
        // SIGHUP (a closed terminal, `systemctl reload`) must not kill a database: the config
        // is read at start only, so say so and carry on.
        if sig == signal_hook::consts::SIGHUP {
            log::warn!(
                "SIGHUP received: ignored (the config is read at start; restart to apply changes)"
            );
            continue;
        }
        log::info!("signal {sig} received, stopping");
        break;
    }
    node.stop();
}

fn init_logging(level: log::LevelFilter) {
    let mut b = env_logger::Builder::new();
    b.filter_level(level);
    // fjall and lsm-tree log at info on every open; keep them to warnings unless asked.
    b.filter_module("fjall", log::LevelFilter::Warn);
    b.filter_module("lsm_tree", log::LevelFilter::Warn);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    let inner = b.build();
    log::set_max_level(inner.filter());
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
