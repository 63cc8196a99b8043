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
SIGTERM or SIGINT stops the node gracefully.";

fn main() {
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

    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(s) => s,
        Err(e) => fail(&format!("cannot install signal handlers: {e}")),
    };
    let node = match skerry::node::Node::start(&cfg, &env) {
        Ok(n) => n,
        Err(e) => fail(&e),
    };
    if let Some(sig) = signals.forever().next() {
        log::info!("signal {sig} received, stopping");
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
    b.init();
}

fn fail(msg: &str) -> ! {
    eprintln!("skerry: {msg}");
    std::process::exit(2);
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
