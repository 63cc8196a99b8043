//! Skerry's configuration: the YAML file (Harper's key names), Harper-style environment
//! overrides, validation into typed settings with defaults, and this node's identity.
//!
//! This module owns:
//! - reading and validating the config file (`Config::load`), with `config.example.yaml`
//!   embedded as the default when no file is given;
//! - the key grammar: durations, sizes, `host:port` listeners (`parse_duration`, `parse_size`,
//!   `Listen`);
//! - deriving this node's name and URL (`node_name`, `node_url`) the way Harper does;
//! - rewriting `replication.routes` in the file for `cluster_set_routes` /
//!   `cluster_delete_routes` (`routes_file`), which is the only write it ever makes.
//!
//! It must never touch the network or the store, spawn threads, or read the process
//! environment itself: the caller passes the environment in, so loading is deterministic and
//! testable. It is strict on purpose: an unknown or ill-typed key is an error naming the full
//! dotted key, because a silently ignored typo in a database's config (say `replication.hostnme`)
//! becomes a node that quietly does not replicate. The one exception is a fixed list of Harper
//! keys Skerry does not use, accepted with a warning so a Harper config file loads as is.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use serde_json::{Map, Value};

pub mod routes_file;
mod values;

#[cfg(test)]
mod tests;

use values::{
    bool_value, count_value, describe, duration_value, hostname_value, listen_value, size_value,
    string_value, url_host, url_value,
};
pub use values::{parse_duration, parse_size, Listen};

/// The default configuration: the documented example file at the repository root. Loading
/// without a file parses this text, so the example can never drift from the real defaults
/// (a test also checks that it equals the built-in `Default`s).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config.example.yaml");

/// A configuration problem, naming the dotted key (`replication.port`) when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path (`operationsApi.network.port`, `replication.routes[1]`); `None` for
    /// whole-file problems such as unreadable files or invalid YAML.
    pub key: Option<String>,
    /// What is wrong, e.g. `expected a port number or "host:port", got true`.
    pub message: String,
}

impl ConfigError {
    fn at(key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: (!key.is_empty()).then(|| key.to_string()),
            message: message.into(),
        }
    }

    fn file(message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "config error at '{k}': {}", self.message),
            None => write!(f, "config error: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Which databases replicate (`replication.databases`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Databases {
    /// `'*'` (Harper's default): every database.
    #[default]
    All,
    /// Only these database names (from a name, a list of names, or `{name: x}` items).
    Only(Vec<String>),
}

/// `operationsApi`: the HTTP operations API.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperationsApi {
    /// `operationsApi.network`.
    pub network: OperationsNetwork,
    /// `operationsApi.tls`: a certificate for HTTPS other than the node's (Harper's key).
    pub tls: Tls,
    /// `operationsApi.metrics`: who may read `GET /metrics`.
    pub metrics: Access,
    /// `operationsApi.statusPage`: who may read `GET /status`.
    pub status_page: Access,
}

/// Who may read a monitoring endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Anyone who can reach the port (the default: the port is loopback-only by default).
    #[default]
    Open,
    /// The operations API's users (Basic or Bearer), any role.
    Authenticated,
    /// Not served (404).
    Off,
}

fn access_value(v: &Value) -> Result<Access, String> {
    match v.as_str() {
        Some("open") => Ok(Access::Open),
        Some("authenticated") => Ok(Access::Authenticated),
        Some("off") => Ok(Access::Off),
        _ => Err(format!(
            "expected open, authenticated or off, got {}",
            describe(v)
        )),
    }
}

/// `operationsApi.network`: listener and HTTP limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationsNetwork {
    /// `port`: where the operations API listens (default `9925` on every interface).
    pub port: Listen,
    /// `maxBodySize`: largest request body in bytes (default 10 MiB).
    pub max_body_size: u64,
    /// `maxConnections`: most concurrent client connections (default 512).
    pub max_connections: usize,
    /// `workers`: accepted for compatibility and unused: each connection is served by its own
    /// thread (at most `maxConnections`).
    pub workers: usize,
    /// `timeout`: read/write timeout of a connection mid-request (default 120 s).
    pub timeout: Duration,
    /// `keepAliveTimeout`: idle keep-alive connections are closed after this (default 30 s).
    pub keep_alive_timeout: Duration,
    /// `headersTimeout`: time a client has to send the request headers (default 60 s).
    pub headers_timeout: Duration,
    /// `securePort`: HTTPS listener for the operations API (the node certificate, or `tls.*`).
    pub secure_port: Option<Listen>,
    /// Whether plain HTTP is served on `port`: false when the file sets `port: null` and a
    /// `securePort` (HTTPS instead of HTTP, Harper 5's default file).
    pub plain_http: bool,
    /// `maxConnectionsPerAddress`: most concurrent connections from one client address
    /// (default 128), so one host cannot hold every connection slot.
    pub max_connections_per_address: usize,
}

impl Default for OperationsNetwork {
    fn default() -> Self {
        OperationsNetwork {
            port: Listen {
                host: Some("127.0.0.1".into()),
                port: 9925,
            },
            max_body_size: 10 << 20,
            max_connections: 512,
            workers: 16,
            timeout: Duration::from_secs(120),
            keep_alive_timeout: Duration::from_secs(30),
            headers_timeout: Duration::from_secs(60),
            secure_port: None,
            plain_http: true,
            max_connections_per_address: 128,
        }
    }
}

/// `logging`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    /// `level`: trace|debug|info|warn|error, plus Harper's fatal (= error) and notify (= info);
    /// default `warn`.
    pub level: LevelFilter,
    /// `file`: also write the log to `<root>/skerry.log` (what `read_log` reads); default true.
    pub file: bool,
    /// `root`: the log folder; `None` = `<rootPath>/log`.
    pub root: Option<PathBuf>,
    /// `rotation.enabled` / `rotation.maxSize`: rotate at this size, keeping 4 older files.
    pub rotation_enabled: bool,
    pub rotation_max_size: u64,
    /// `format`: `text` (default) or `json`, one line per event on stderr.
    pub format: LogFormat,
    /// `requests`: log every request (operation, status, time) at info; off by default
    /// (they are logged at debug).
    pub requests: bool,
}

/// `logging.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn log_format_value(v: &Value) -> Result<LogFormat, String> {
    match v.as_str() {
        Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        _ => Err(format!("expected text or json, got {}", describe(v))),
    }
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            level: LevelFilter::Warn,
            file: true,
            root: None,
            rotation_enabled: true,
            rotation_max_size: 10 * 1024 * 1024,
            format: LogFormat::Text,
            requests: false,
        }
    }
}

impl Config {
    /// The folder of the log file.
    pub fn log_dir(&self) -> PathBuf {
        self.logging
            .root
            .clone()
            .unwrap_or_else(|| self.root_path.join("log"))
    }
}

/// `replication`: peer-to-peer replication (off unless a hostname, URL or port is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// `hostname`: this node's name as peers know it (default unset).
    pub hostname: Option<String>,
    /// `url`: the `ws://`/`wss://` URL peers use to reach this node (default unset = derived).
    pub url: Option<String>,
    /// `port`: plain WebSocket listener (Harper's insecure port; 9933 by convention).
    pub port: Option<Listen>,
    /// `securePort`: TLS WebSocket listener.
    pub secure_port: Option<Listen>,
    /// `routes`: peers to connect to at startup, raw items exactly as written (strings such as
    /// `"127.0.0.2"` / `"ws://host:9933"`, or maps such as `{hostname, port}`); empty if null.
    pub routes: Vec<Value>,
    /// `databases`: which databases replicate (default all).
    pub databases: Databases,
    /// `pingInterval`: WebSocket ping interval per peer connection (default 30 s).
    pub ping_interval: Duration,
    /// `pingTimeout`: a connection silent this long is dropped; `None` = 2 × `ping_interval`
    /// (see [`Replication::effective_ping_timeout`]).
    pub ping_timeout: Option<Duration>,
    /// `auditRetention` (Harper: `logging.auditRetention`, also accepted): how long the audit
    /// log (the replication source and tombstones) is kept (default 3 days).
    pub audit_retention: Duration,
    /// `maxFrameSize`: largest replication WebSocket message accepted, in bytes (default 64 MiB).
    pub max_frame_size: u64,
    /// `shard`: this node's shard number (default unset).
    pub shard: Option<i64>,
    /// `enableRootCAs`: whether public certificate authorities (Mozilla's list, built in) are
    /// trusted for replication TLS, besides the members' own CAs (default true, as Harper).
    pub enable_root_cas: bool,
    /// `maxClockSkew`: a peer's transaction versioned further than this in this node's future
    /// is refused (default 1 day): a broken or hostile clock cannot push this node's versions
    /// to the end of time.
    pub max_clock_skew: Duration,
    /// `confirmationTimeout`: how long a write with `replicatedConfirmation: N` waits for N
    /// peers to confirm it before answering 504 (the write stays committed; default 5 s).
    pub confirmation_timeout: Duration,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            hostname: None,
            url: None,
            port: None,
            secure_port: None,
            routes: Vec::new(),
            databases: Databases::All,
            ping_interval: Duration::from_secs(30),
            ping_timeout: None,
            audit_retention: Duration::from_secs(3 * 86_400),
            max_frame_size: 64 << 20,
            shard: None,
            enable_root_cas: true,
            max_clock_skew: Duration::from_secs(86_400),
            confirmation_timeout: Duration::from_secs(5),
        }
    }
}

impl Replication {
    /// `pingTimeout`, or twice `pingInterval` when unset (Harper's rule).
    pub fn effective_ping_timeout(&self) -> Duration {
        self.ping_timeout
            .unwrap_or_else(|| self.ping_interval.saturating_mul(2))
    }
}

/// `tls`: the node's own certificate instead of the one Skerry generates under `rootPath`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// `certificate`: PEM file with the node certificate (and its chain).
    pub certificate: Option<PathBuf>,
    /// `privateKey`: PEM file with its private key.
    pub private_key: Option<PathBuf>,
    /// `certificateAuthority`: PEM file with the CA that signed it (trusted, and given to peers).
    pub certificate_authority: Option<PathBuf>,
}

/// `authentication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    /// `operationTokenTimeout`: lifetime of an operation (JWT) token (default 1 day).
    pub operation_token_timeout: Duration,
    /// `refreshTokenTimeout`: lifetime of a refresh token (default 30 days).
    pub refresh_token_timeout: Duration,
    /// `authorizeLocal`: loopback requests without credentials run as super_user (default false).
    pub authorize_local: bool,
    /// `hashFunction`: Harper's password hash name for new users (`sha256`, `argon2id`, ...),
    /// kept as written; `None` = the auth module's default.
    pub hash_function: Option<String>,
}

impl Default for Authentication {
    fn default() -> Self {
        Authentication {
            operation_token_timeout: Duration::from_secs(86_400),
            refresh_token_timeout: Duration::from_secs(30 * 86_400),
            authorize_local: false,
            hash_function: None,
        }
    }
}

/// `storage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// `writeAsync`: false (default) = fsync before acknowledging a write; true = acknowledge
    /// once the write is in the OS (survives a process crash, not a power loss).
    pub write_async: bool,
    /// `cacheSize`: block cache in bytes (default 32 MiB).
    pub cache_size: u64,
    /// `maxWriteBufferSize`: in-memory write buffer (memtable) size in bytes (default 64 MiB).
    pub max_write_buffer_size: u64,
    /// `groupCommitMaxOps`: most writes committed under one fsync (default 1024).
    pub group_commit_max_ops: usize,
    /// `maxAttributesPerTable`: most attributes a dynamic table may grow to (default 10,000).
    pub max_attributes_per_table: usize,
    /// `maxNewAttributesPerRequest`: most attributes one write may add (default 1,000).
    pub max_new_attributes_per_request: usize,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            write_async: false,
            cache_size: 32 << 20,
            max_write_buffer_size: 64 << 20,
            group_commit_max_ops: 1024,
            max_attributes_per_table: 10_000,
            max_new_attributes_per_request: 1_000,
        }
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `rootPath`: data directory; a relative path is resolved against the config file's
    /// directory (left relative, i.e. to the working directory, for the embedded default).
    pub root_path: PathBuf,
    /// The YAML file loaded; `None` when the embedded default was used.
    pub source: Option<PathBuf>,
    /// `operationsApi`.
    pub operations_api: OperationsApi,
    /// `logging`.
    pub logging: Logging,
    /// `replication`.
    pub replication: Replication,
    /// `authentication`.
    pub authentication: Authentication,
    /// `storage`.
    pub storage: Storage,
    /// `tls`.
    pub tls: Tls,
    /// What the load wants said once logging is up (Harper keys ignored, conflicting keys):
    /// `main` logs them at warn level, so they reach stderr with the default settings.
    pub warnings: Vec<String>,
}

impl Default for Config {
    /// The built-in defaults; identical to parsing [`EMBEDDED_DEFAULT`] (tested).
    fn default() -> Self {
        Config {
            root_path: PathBuf::from("./skerry-data"),
            source: None,
            operations_api: OperationsApi::default(),
            logging: Logging::default(),
            replication: Replication::default(),
            authentication: Authentication::default(),
            storage: Storage::default(),
            tls: Tls::default(),
            warnings: Vec::new(),
        }
    }
}

/// One node of the key schema.
enum Node {
    /// A mapping whose keys are checked against these children.
    Section(&'static [(&'static str, Node)]),
    /// A key Skerry reads (and that an environment variable may override).
    Key,
    /// A Harper key Skerry does not use: accepted with its whole value, with a warning.
    Ignored,
}

use Node::{Ignored, Key, Section};

/// Every key Skerry accepts. Keys read by Skerry are `Key`; real Harper keys (4.x/5.x
/// `defaultConfig.yaml` and the configuration docs) that Skerry has no use for are `Ignored`,
/// so a Harper config file loads. Anything else is an error.
const SCHEMA: &[(&str, Node)] = &[
    ("rootPath", Key),
    (
        "operationsApi",
        Section(&[
            (
                "network",
                Section(&[
                    ("port", Key),
                    ("maxBodySize", Key),
                    ("maxConnections", Key),
                    ("workers", Key),
                    ("timeout", Key),
                    ("keepAliveTimeout", Key),
                    ("headersTimeout", Key),
                    ("maxConnectionsPerAddress", Key),
                    ("securePort", Key),
                    ("cors", Ignored),
                    ("corsAccessList", Ignored),
                    ("domainSocket", Ignored),
                    ("mtls", Ignored),
                ]),
            ),
            (
                "tls",
                Section(&[
                    ("certificate", Key),
                    ("privateKey", Key),
                    ("certificateAuthority", Key),
                    ("ciphers", Ignored),
                    ("host", Ignored),
                ]),
            ),
            ("metrics", Key),
            ("statusPage", Key),
            ("sysInfo", Ignored),
        ]),
    ),
    (
        "logging",
        Section(&[
            ("level", Key),
            ("auditRetention", Key),
            ("root", Key),
            (
                "rotation",
                Section(&[
                    ("enabled", Key),
                    ("maxSize", Key),
                    ("compress", Ignored),
                    ("interval", Ignored),
                    ("path", Ignored),
                    ("retain", Ignored),
                ]),
            ),
            ("stdStreams", Ignored),
            ("console", Ignored),
            ("auditLog", Ignored),
            ("auditAuthEvents", Ignored),
            ("file", Key),
            ("format", Key),
            ("requests", Key),
            ("external", Ignored),
        ]),
    ),
    (
        "replication",
        Section(&[
            ("hostname", Key),
            ("url", Key),
            ("port", Key),
            ("securePort", Key),
            ("routes", Key),
            ("databases", Key),
            ("pingInterval", Key),
            ("pingTimeout", Key),
            ("auditRetention", Key),
            ("maxFrameSize", Key),
            ("shard", Key),
            ("maxClockSkew", Key),
            ("enableRootCAs", Key),
            ("confirmationTimeout", Key),
            ("mtls", Ignored),
            ("failOver", Ignored),
            ("replicateTo", Ignored),
            ("blobTimeout", Ignored),
            ("copyTimeout", Ignored),
            ("recordConcurrency", Ignored),
            ("blobConcurrency", Ignored),
        ]),
    ),
    (
        "authentication",
        Section(&[
            ("operationTokenTimeout", Key),
            ("refreshTokenTimeout", Key),
            ("authorizeLocal", Key),
            ("hashFunction", Key),
            ("cacheTTL", Ignored),
            ("enableSessions", Ignored),
            ("logoutRedirect", Ignored),
        ]),
    ),
    (
        "storage",
        Section(&[
            ("writeAsync", Key),
            ("cacheSize", Key),
            ("maxWriteBufferSize", Key),
            ("groupCommitMaxOps", Key),
            ("maxAttributesPerTable", Key),
            ("maxNewAttributesPerRequest", Key),
            ("path", Ignored),
            ("caching", Ignored),
            ("compression", Ignored),
            ("prefetchWrites", Ignored),
            ("noReadAhead", Ignored),
            ("compactOnStart", Ignored),
            ("compactOnStartKeepBackup", Ignored),
            ("maxTransactionQueueTime", Ignored),
            ("blobPaths", Ignored),
        ]),
    ),
    // Whole Harper sections Skerry has no equivalent for.
    ("http", Ignored),
    ("threads", Ignored),
    ("mqtt", Ignored),
    (
        "tls",
        Section(&[
            ("certificate", Key),
            ("privateKey", Key),
            ("certificateAuthority", Key),
            ("ciphers", Ignored),
            ("host", Ignored),
        ]),
    ),
    ("clustering", Ignored),
    ("customFunctions", Ignored),
    ("localStudio", Ignored),
    ("analytics", Ignored),
    ("componentsRoot", Ignored),
    ("applications", Ignored),
    ("node", Ignored),
];

/// Parses YAML text into a JSON value tree. Duplicate keys are an error (YAML says so, and a
/// second `port:` silently winning is exactly the kind of mistake a config check should catch);
/// booleans are YAML 1.2 only (`yes`/`on` stay strings), as in Harper's YAML library.
pub(crate) fn parse_yaml(text: &str) -> Result<Value, String> {
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| {
        // The error renders a source snippet over several lines; the first line already has
        // "line L column C: what", which is what belongs in a one-line log message.
        let full = e.to_string();
        let first = full.lines().next().unwrap_or_default();
        first.strip_prefix("error: ").unwrap_or(first).to_string()
    })
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Checks `value` against `schema`, collecting the values of `Key`s by dotted path and the
/// paths of ignored Harper keys that carry a value.
fn walk<'a>(
    schema: &'static [(&'static str, Node)],
    value: &'a Value,
    prefix: &str,
    leaves: &mut HashMap<String, &'a Value>,
    ignored: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let map = match value {
        // `section:` with nothing under it, or an explicit null: every key unset.
        Value::Null => return Ok(()),
        Value::Object(m) => m,
        other => {
            let message = format!("expected a mapping of keys, got {}", describe(other));
            return Err(if prefix.is_empty() {
                ConfigError::file(format!(
                    "the configuration must be a YAML mapping, got {}",
                    describe(other)
                ))
            } else {
                ConfigError::at(prefix, message)
            });
        }
    };
    for (k, v) in map {
        let path = join(prefix, k);
        match schema.iter().find(|(name, _)| name == k) {
            Some((_, Section(children))) => walk(children, v, &path, leaves, ignored)?,
            Some((_, Key)) => {
                leaves.insert(path, v);
            }
            // A null Harper key (`securePort: null` is all over Harper configs) sets nothing,
            // so it is not worth a warning.
            Some((_, Ignored)) => {
                if !v.is_null() {
                    ignored.push(path);
                }
            }
            None => {
                let hint = schema
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(k))
                    .map(|(name, _)| format!(" (did you mean '{}'?)", join(prefix, name)))
                    .unwrap_or_default();
                return Err(ConfigError::at(&path, format!("unknown key{hint}")));
            }
        }
    }
    Ok(())
}

/// Dotted paths of every `Key` in the schema, in schema order.
fn key_paths() -> Vec<String> {
    fn collect(schema: &'static [(&'static str, Node)], prefix: &str, out: &mut Vec<String>) {
        for (name, node) in schema {
            match node {
                Section(children) => collect(children, &join(prefix, name), out),
                Key => out.push(join(prefix, name)),
                Ignored => {}
            }
        }
    }
    let mut out = Vec::new();
    collect(SCHEMA, "", &mut out);
    out
}

/// Harper's environment variable name for a key: path segments joined by `_`, uppercased.
fn env_name(path: &str) -> String {
    path.replace('.', "_").to_ascii_uppercase()
}

/// Parses an environment value as YAML, like Harper: `9925` is a number, `null` unsets,
/// `["a","b"]` is a list. A value that is not valid YAML on its own (`*` is an alias marker)
/// is taken as the plain string, which is what the user meant.
fn env_value(raw: &str) -> Value {
    parse_yaml(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// Sets `path` in the tree, creating (or replacing null) intermediate mappings.
fn set_path(
    tree: &mut Value,
    prefix: &str,
    path: &[&str],
    value: Value,
) -> Result<(), ConfigError> {
    if tree.is_null() {
        *tree = Value::Object(Map::new());
    }
    let Value::Object(map) = tree else {
        let message = format!("expected a mapping of keys, got {}", describe(tree));
        return Err(if prefix.is_empty() {
            ConfigError::file(format!(
                "the configuration must be a YAML mapping, got {}",
                describe(tree)
            ))
        } else {
            ConfigError::at(prefix, message)
        });
    };
    match path {
        [] => Ok(()),
        [last] => {
            map.insert((*last).to_string(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let child = map.entry((*first).to_string()).or_insert(Value::Null);
            set_path(child, &join(prefix, first), rest, value)
        }
    }
}

/// Applies Harper-style environment overrides to the parsed tree. Returns `(key, variable)`
/// for every override applied, so later errors can name the variable.
fn apply_env(
    tree: &mut Value,
    env: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut by_key: HashMap<String, (String, String)> = HashMap::new();
    let names: HashMap<String, String> =
        key_paths().into_iter().map(|p| (env_name(&p), p)).collect();
    for (var, raw) in env {
        // Later entries win, as they would in a process environment built by `env FOO=1 FOO=2`.
        if let Some(path) = names.get(&var.to_ascii_uppercase()) {
            by_key.insert(path.clone(), (var.clone(), raw.clone()));
        }
    }
    let mut applied = Vec::new();
    for path in key_paths() {
        if let Some((var, raw)) = by_key.remove(&path) {
            let segments: Vec<&str> = path.split('.').collect();
            log::debug!("config: {var} overrides '{path}'");
            set_path(tree, "", &segments, env_value(&raw)).map_err(|e| from_env(e, &var))?;
            applied.push((path, var));
        }
    }
    Ok(applied)
}

fn from_env(mut e: ConfigError, var: &str) -> ConfigError {
    e.message = format!("{} (from environment variable {var})", e.message);
    e
}

/// The parsed key values, with a record of which keys the builder asked for (a test checks
/// that every schema key is actually read).
struct Leaves<'a> {
    values: HashMap<String, &'a Value>,
    read: RefCell<BTreeSet<String>>,
}

impl<'a> Leaves<'a> {
    /// The value of a key, `None` when absent or null (null means "unset").
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.read.borrow_mut().insert(key.to_string());
        self.values.get(key).copied().filter(|v| !v.is_null())
    }

    fn opt<T>(
        &self,
        key: &str,
        parse: impl Fn(&Value) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse(v).map(Some).map_err(|m| ConfigError::at(key, m)),
        }
    }

    fn or<T>(
        &self,
        key: &str,
        default: T,
        parse: impl Fn(&Value) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        Ok(self.opt(key, parse)?.unwrap_or(default))
    }
}

fn level_value(v: &Value) -> Result<LevelFilter, String> {
    let expected = || {
        format!(
            "expected one of trace, debug, info, warn, error, fatal, notify; got {}",
            describe(v)
        )
    };
    let s = v.as_str().ok_or_else(expected)?;
    Ok(match s.to_ascii_lowercase().as_str() {
        "trace" => LevelFilter::Trace,
        "debug" => LevelFilter::Debug,
        "info" => LevelFilter::Info,
        "warn" => LevelFilter::Warn,
        "error" => LevelFilter::Error,
        // Harper's extra levels: fatal is an error that stops the process, notify is an
        // always-shown notice; the closest `log` levels keep them visible at the same filter.
        "fatal" => LevelFilter::Error,
        "notify" => LevelFilter::Info,
        _ => return Err(expected()),
    })
}

fn shard_value(v: &Value) -> Result<i64, String> {
    v.as_i64()
        .ok_or_else(|| format!("expected a whole number, got {}", describe(v)))
}

fn hash_function_value(v: &Value) -> Result<String, String> {
    string_value(v).map_err(|_| {
        format!(
            "expected a hash function name such as sha256 or argon2id, got {}",
            describe(v)
        )
    })
}

/// `replication.routes`: a list of strings or mappings, kept raw (the replication module
/// interprets them, Harper's grammar in spec §2.8).
fn routes_at(key: &str, v: Option<&Value>) -> Result<Vec<Value>, ConfigError> {
    let items = match v {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ConfigError::at(
                key,
                format!("expected a list of routes, got {}", describe(other)),
            ))
        }
    };
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) if !s.trim().is_empty() => {}
            Value::Object(_) => {}
            other => {
                return Err(ConfigError::at(
                    &format!("{key}[{i}]"),
                    format!(
                        "expected a route (\"host\", \"ws://host:port\" or {{hostname: host, port: 9933}}), got {}",
                        describe(other)
                    ),
                ))
            }
        }
    }
    Ok(items.clone())
}

/// `replication.databases`: `'*'`, a name, or a list of names / `{name: x}` maps. Harper's
/// per-database `sharded` and `replicateTo` are accepted and ignored.
fn databases_at(
    key: &str,
    v: Option<&Value>,
    ignored: &mut Vec<String>,
) -> Result<Databases, ConfigError> {
    let expected = "expected '*', a database name, or a list of names or {name: x} items";
    let name_of = |k: &str, v: &Value| -> Result<String, ConfigError> {
        string_value(v).map_err(|_| {
            ConfigError::at(k, format!("expected a database name, got {}", describe(v)))
        })
    };
    let items = match v {
        None => return Ok(Databases::All),
        Some(Value::String(s)) if s.trim() == "*" => return Ok(Databases::All),
        Some(s @ Value::String(_)) => return Ok(Databases::Only(vec![name_of(key, s)?])),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ConfigError::at(
                key,
                format!("{expected}, got {}", describe(other)),
            ))
        }
    };
    let mut names = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_key = format!("{key}[{i}]");
        match item {
            Value::String(s) if s.trim() == "*" => return Ok(Databases::All),
            Value::String(_) => names.push(name_of(&item_key, item)?),
            Value::Object(map) => {
                let mut name = None;
                for (k, v) in map {
                    let sub = format!("{item_key}.{k}");
                    match k.as_str() {
                        "name" => name = Some(name_of(&sub, v)?),
                        "sharded" | "replicateTo" => ignored.push(sub),
                        _ => return Err(ConfigError::at(&sub, "unknown key")),
                    }
                }
                names.push(name.ok_or_else(|| ConfigError::at(&item_key, "missing 'name'"))?);
            }
            other => {
                return Err(ConfigError::at(
                    &item_key,
                    format!("{expected}, got {}", describe(other)),
                ))
            }
        }
    }
    Ok(Databases::Only(names))
}

/// Builds the typed configuration from the checked key values.
fn build(
    l: &Leaves<'_>,
    base_dir: Option<&Path>,
    ignored: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    let d = Config::default();

    let root_path = match l.opt("rootPath", string_value)? {
        None => d.root_path,
        Some(s) => PathBuf::from(s),
    };
    // Relative to the file, not the working directory: a service manager's working directory
    // is arbitrary, the file's location is not.
    let root_path = match base_dir {
        Some(dir) if root_path.is_relative() => dir.join(root_path),
        _ => root_path,
    };

    let dn = d.operations_api.network;
    let network = OperationsNetwork {
        port: l.or("operationsApi.network.port", dn.port, listen_value)?,
        max_body_size: l.or(
            "operationsApi.network.maxBodySize",
            dn.max_body_size,
            size_value,
        )?,
        max_connections: l.or(
            "operationsApi.network.maxConnections",
            dn.max_connections,
            count_value,
        )?,
        workers: l.or("operationsApi.network.workers", dn.workers, count_value)?,
        timeout: l.or("operationsApi.network.timeout", dn.timeout, duration_value)?,
        keep_alive_timeout: l.or(
            "operationsApi.network.keepAliveTimeout",
            dn.keep_alive_timeout,
            duration_value,
        )?,
        headers_timeout: l.or(
            "operationsApi.network.headersTimeout",
            dn.headers_timeout,
            duration_value,
        )?,
        secure_port: l.opt("operationsApi.network.securePort", listen_value)?,
        plain_http: !(l
            .values
            .get("operationsApi.network.port")
            .is_some_and(|v| v.is_null())
            && l.get("operationsApi.network.securePort").is_some()),
        max_connections_per_address: l.or(
            "operationsApi.network.maxConnectionsPerAddress",
            dn.max_connections_per_address,
            count_value,
        )?,
    };

    let dl = &d.logging;
    let log_root = l.opt("logging.root", string_value)?.map(PathBuf::from);
    let logging = Logging {
        level: l.or("logging.level", dl.level, level_value)?,
        file: l.or("logging.file", dl.file, bool_value)?,
        root: match (log_root, base_dir) {
            (Some(p), Some(dir)) if p.is_relative() => Some(dir.join(p)),
            (p, _) => p,
        },
        rotation_enabled: l.or("logging.rotation.enabled", dl.rotation_enabled, bool_value)?,
        rotation_max_size: l.or("logging.rotation.maxSize", dl.rotation_max_size, size_value)?,
        format: l.or("logging.format", dl.format, log_format_value)?,
        requests: l.or("logging.requests", dl.requests, bool_value)?,
    };

    let dr = d.replication;
    let retention = l.opt("replication.auditRetention", duration_value)?;
    let harper_retention = l.opt("logging.auditRetention", duration_value)?;
    let mut warnings = Vec::new();
    if let (Some(a), Some(b)) = (retention, harper_retention) {
        if a != b {
            warnings.push(format!(
                "both replication.auditRetention ({a:?}) and logging.auditRetention ({b:?}) are set; using replication.auditRetention"
            ));
        }
    }
    let replication = Replication {
        hostname: l.opt("replication.hostname", hostname_value)?,
        url: l.opt("replication.url", url_value)?,
        port: l.opt("replication.port", listen_value)?,
        secure_port: l.opt("replication.securePort", listen_value)?,
        routes: routes_at("replication.routes", l.get("replication.routes"))?,
        databases: databases_at(
            "replication.databases",
            l.get("replication.databases"),
            ignored,
        )?,
        ping_interval: l.or("replication.pingInterval", dr.ping_interval, duration_value)?,
        ping_timeout: l.opt("replication.pingTimeout", duration_value)?,
        audit_retention: retention.or(harper_retention).unwrap_or(dr.audit_retention),
        max_frame_size: l.or("replication.maxFrameSize", dr.max_frame_size, size_value)?,
        shard: l.opt("replication.shard", shard_value)?,
        enable_root_cas: l.or("replication.enableRootCAs", dr.enable_root_cas, bool_value)?,
        max_clock_skew: l.or(
            "replication.maxClockSkew",
            dr.max_clock_skew,
            duration_value,
        )?,
        confirmation_timeout: l.or(
            "replication.confirmationTimeout",
            dr.confirmation_timeout,
            duration_value,
        )?,
    };

    let da = d.authentication;
    let authentication = Authentication {
        operation_token_timeout: l.or(
            "authentication.operationTokenTimeout",
            da.operation_token_timeout,
            duration_value,
        )?,
        refresh_token_timeout: l.or(
            "authentication.refreshTokenTimeout",
            da.refresh_token_timeout,
            duration_value,
        )?,
        authorize_local: l.or(
            "authentication.authorizeLocal",
            da.authorize_local,
            bool_value,
        )?,
        hash_function: l.opt("authentication.hashFunction", hash_function_value)?,
    };

    let ds = d.storage;
    let storage = Storage {
        write_async: l.or("storage.writeAsync", ds.write_async, bool_value)?,
        cache_size: l.or("storage.cacheSize", ds.cache_size, size_value)?,
        max_write_buffer_size: l.or(
            "storage.maxWriteBufferSize",
            ds.max_write_buffer_size,
            size_value,
        )?,
        group_commit_max_ops: l.or(
            "storage.groupCommitMaxOps",
            ds.group_commit_max_ops,
            count_value,
        )?,
        max_attributes_per_table: l.or(
            "storage.maxAttributesPerTable",
            ds.max_attributes_per_table,
            count_value,
        )?,
        max_new_attributes_per_request: l.or(
            "storage.maxNewAttributesPerRequest",
            ds.max_new_attributes_per_request,
            count_value,
        )?,
    };

    let file = |key: &str| -> Result<Option<PathBuf>, ConfigError> {
        Ok(l.opt(key, string_value)?.map(|s| {
            let p = PathBuf::from(s);
            match base_dir {
                Some(dir) if p.is_relative() => dir.join(p),
                _ => p,
            }
        }))
    };
    let tls = Tls {
        certificate: file("tls.certificate")?,
        private_key: file("tls.privateKey")?,
        certificate_authority: file("tls.certificateAuthority")?,
    };
    let ops_tls = Tls {
        certificate: file("operationsApi.tls.certificate")?,
        private_key: file("operationsApi.tls.privateKey")?,
        certificate_authority: file("operationsApi.tls.certificateAuthority")?,
    };
    for (key, t) in [("tls", &tls), ("operationsApi.tls", &ops_tls)] {
        if t.certificate.is_some() != t.private_key.is_some() {
            return Err(ConfigError::at(
                key,
                format!("{key}.certificate and {key}.privateKey go together: set both, or neither (Skerry then makes its own)"),
            ));
        }
    }
    // Security Skerry cannot give is an error, never a silent downgrade.
    if let Some(k) = ignored
        .iter()
        .find(|k| k.as_str() == "operationsApi.network.mtls")
    {
        return Err(ConfigError::at(
            k,
            "client certificates for the operations API are not supported; remove the key (use credentials or tokens, over operationsApi.network.securePort)",
        ));
    }

    Ok(Config {
        tls,
        warnings,
        root_path,
        source: None,
        operations_api: OperationsApi {
            network,
            tls: ops_tls,
            metrics: l.or("operationsApi.metrics", Access::Open, access_value)?,
            status_page: l.or("operationsApi.statusPage", Access::Open, access_value)?,
        },
        logging,
        replication,
        authentication,
        storage,
    })
}

/// What a load produced besides the config: the Harper keys it ignored (logged by `load`) and
/// the keys it read (for the schema-coverage test).
struct Loaded {
    config: Config,
    ignored: Vec<String>,
    #[cfg_attr(not(test), allow(dead_code))]
    read: BTreeSet<String>,
}

/// Parses, overrides and validates `text`; `base_dir` anchors a relative `rootPath`.
fn load_text(
    text: &str,
    base_dir: Option<&Path>,
    env: &[(String, String)],
) -> Result<Loaded, ConfigError> {
    let tree = parse_yaml(text).map_err(|e| ConfigError::file(format!("invalid YAML: {e}")))?;
    load_tree(tree, base_dir, env)
}

fn load_tree(
    mut tree: Value,
    base_dir: Option<&Path>,
    env: &[(String, String)],
) -> Result<Loaded, ConfigError> {
    let overridden = apply_env(&mut tree, env)?;
    let name_var = |e: ConfigError| -> ConfigError {
        let var = e.key.as_deref().and_then(|k| {
            overridden.iter().find_map(|(path, var)| {
                let hit = k == path
                    || k.strip_prefix(path.as_str())
                        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['));
                hit.then_some(var)
            })
        });
        match var {
            Some(var) => from_env(e, var),
            None => e,
        }
    };
    let mut values = HashMap::new();
    let mut ignored = Vec::new();
    walk(SCHEMA, &tree, "", &mut values, &mut ignored).map_err(name_var)?;
    let leaves = Leaves {
        values,
        read: RefCell::new(BTreeSet::new()),
    };
    let config = build(&leaves, base_dir, &mut ignored).map_err(name_var)?;
    Ok(Loaded {
        config,
        ignored,
        read: leaves.read.into_inner(),
    })
}

/// What a `set_configuration` key (Harper's flat form: `logging_level`,
/// `operationsApi_network_port`) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlatKey {
    /// A key Skerry reads, as its path.
    Used(Vec<String>),
    /// A Harper key Skerry accepts and does not use.
    Unused(Vec<String>),
}

/// Resolves a flat key against the schema (segments matched case-insensitively, as Harper
/// does); `None` for a key no config has.
pub fn resolve_flat_key(flat: &str) -> Option<FlatKey> {
    let segs: Vec<&str> = flat.split('_').collect();
    let mut schema = SCHEMA;
    let mut path = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        let (name, node) = schema.iter().find(|(n, _)| n.eq_ignore_ascii_case(seg))?;
        path.push((*name).to_string());
        let last = i + 1 == segs.len();
        match node {
            Section(children) if !last => schema = children,
            Section(_) => return None,
            Key => return last.then_some(FlatKey::Used(path)),
            Ignored => {
                path.extend(segs[i + 1..].iter().map(|s| (*s).to_string()));
                return Some(FlatKey::Unused(path));
            }
        }
    }
    None
}

/// Checks that the config file at `path`, with `changes` applied and this process's
/// environment overrides, is a valid configuration. Writes nothing.
pub fn check_changes(
    path: &Path,
    env: &[(String, String)],
    changes: &[(Vec<String>, Value)],
) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::file(format!("cannot read {}: {e}", path.display())))?;
    let mut tree =
        parse_yaml(&text).map_err(|e| ConfigError::file(format!("invalid YAML: {e}")))?;
    for (key, value) in changes {
        let segs: Vec<&str> = key.iter().map(String::as_str).collect();
        set_path(&mut tree, "", &segs, value.clone())?;
    }
    load_tree(tree, path.parent(), env).map(|l| l.config)
}

/// The configuration as `get_configuration` shows it: every key with its default, overlaid
/// with what the file says now and the environment overrides, `rootPath` as resolved.
pub fn effective_tree(cfg: &Config, env: &[(String, String)]) -> Value {
    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    match a.get_mut(&k) {
                        Some(slot) => merge(slot, v),
                        None => {
                            a.insert(k, v);
                        }
                    }
                }
            }
            (slot, v) => *slot = v,
        }
    }
    let mut tree = parse_yaml(EMBEDDED_DEFAULT).unwrap_or(Value::Null);
    let file = cfg
        .source
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| parse_yaml(&t).ok());
    if let Some(f) = file {
        merge(&mut tree, f);
    }
    let _ = apply_env(&mut tree, env);
    if let Value::Object(m) = &mut tree {
        m.insert(
            "rootPath".into(),
            Value::String(cfg.root_path.display().to_string()),
        );
    }
    tree
}

/// Where the data lives without a config file: `/var/lib/skerry` for root, else
/// `$XDG_DATA_HOME/skerry` or `~/.local/share/skerry`, else `./skerry-data`.
pub fn default_data_dir(env: &[(String, String)]) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    // The owner of /proc/self is this process's effective user (no unsafe libc call needed).
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return PathBuf::from("/var/lib/skerry");
    }
    if let Some(x) = get("XDG_DATA_HOME") {
        return PathBuf::from(x).join("skerry");
    }
    match get("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/skerry"),
        None => PathBuf::from("./skerry-data"),
    }
}

impl Config {
    /// The configuration of [`EMBEDDED_DEFAULT`] with no environment overrides.
    pub fn embedded_default() -> Config {
        match load_text(EMBEDDED_DEFAULT, None, &[]) {
            Ok(loaded) => loaded.config,
            // Cannot happen with the shipped file (a test parses it); falling back to the
            // identical built-in values beats a panic if someone breaks the example.
            Err(e) => {
                log::error!(
                    "embedded default configuration is invalid ({e}); using built-in defaults"
                );
                Config::default()
            }
        }
    }

    /// Loads the YAML file at `path` (or [`EMBEDDED_DEFAULT`] when `None`), applies environment
    /// overrides from `env` (pass `std::env::vars_os()` converted lossily, or a fixed list in
    /// tests), and validates every key. Ignored Harper keys are logged at `warn`.
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let loaded = match path {
            None => {
                let mut loaded = load_text(EMBEDDED_DEFAULT, None, env)?;
                // No config file: the data goes to a fixed per-user or system folder, never
                // to whatever the working directory happens to be (a service started by a
                // service manager would write `/skerry-data`).
                let env_root = env
                    .iter()
                    .any(|(k, v)| k.eq_ignore_ascii_case("ROOTPATH") && v != "null");
                if !env_root {
                    loaded.config.root_path = default_data_dir(env);
                }
                loaded
            }
            Some(p) => {
                let bytes = std::fs::read(p).map_err(|e| {
                    ConfigError::file(format!("cannot read config file {}: {e}", p.display()))
                })?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    ConfigError::file(format!("config file {} is not UTF-8", p.display()))
                })?;
                // Every error names the file: an operator with several configs must know which.
                let mut loaded = load_text(&text, p.parent(), env).map_err(|mut e| {
                    e.message = format!("{} (in {})", e.message, p.display());
                    e
                })?;
                loaded.config.source = Some(p.to_path_buf());
                loaded
            }
        };
        let mut config = loaded.config;
        for key in &loaded.ignored {
            config
                .warnings
                .push(format!("ignoring Harper key '{key}' (not used by Skerry)"));
        }
        Ok(config)
    }

    /// This node's name, in Harper's order (spec §6.1, certificates aside):
    /// `replication.hostname`, the host of `replication.url`, the host of
    /// `operationsApi.network.port` when it has one, else `127.0.0.1`.
    pub fn node_name(&self) -> String {
        let r = &self.replication;
        r.hostname
            .clone()
            .or_else(|| r.url.as_deref().and_then(url_host))
            .or_else(|| self.operations_api.network.port.host.clone())
            .unwrap_or_else(|| "127.0.0.1".to_string())
    }

    /// The URL peers use to reach this node: `replication.url`, else
    /// `ws://<node_name>:<replication.port>`, else `wss://<node_name>:<replication.securePort>`,
    /// else `None` (replication is not listening).
    pub fn node_url(&self) -> Option<String> {
        let r = &self.replication;
        if let Some(url) = &r.url {
            return Some(url.clone());
        }
        let name = self.node_name();
        let host = if name.contains(':') {
            format!("[{name}]")
        } else {
            name
        };
        if let Some(p) = &r.port {
            Some(format!("ws://{host}:{}", p.port))
        } else {
            r.secure_port
                .as_ref()
                .map(|p| format!("wss://{host}:{}", p.port))
        }
    }

    /// Whether this node replicates: Harper's rule (a `replication.hostname` or
    /// `replication.url` is set) or a replication port is configured.
    pub fn replication_enabled(&self) -> bool {
        let r = &self.replication;
        r.hostname.is_some() || r.url.is_some() || r.port.is_some() || r.secure_port.is_some()
    }
}
