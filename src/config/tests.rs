//! Loader tests: every key, defaults, environment overrides, strictness, Harper compatibility,
//! node identity.

use super::*;
use serde_json::json;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Loads YAML text as if from /etc/skerry/skerry.yaml (no file needed).
fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load_text(text, Some(Path::new("/etc/skerry")), &env(vars)).map(|l| l.config)
}

fn load_ok(text: &str) -> Config {
    load(text, &[]).unwrap_or_else(|e| panic!("{e}\n--- input:\n{text}"))
}

fn load_err(text: &str, vars: &[(&str, &str)]) -> ConfigError {
    match load(text, vars) {
        Ok(c) => panic!("expected an error, got {c:?}\n--- input:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn embedded_default_is_the_builtin_default() {
    let embedded = load_text(EMBEDDED_DEFAULT, None, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(embedded.ignored.is_empty(), "{:?}", embedded.ignored);
    assert_eq!(embedded.config, Config::default());
    assert_eq!(Config::embedded_default(), Config::default());
    // Without a file, only the data folder differs: a fixed per-user or system folder.
    let no_file = Config::load(None, &[]).unwrap();
    assert_eq!(no_file.root_path, default_data_dir(&[]));
    assert_eq!(
        Config {
            root_path: Config::default().root_path,
            ..no_file
        },
        Config::default()
    );

    let d = Config::default();
    assert_eq!(d.root_path, PathBuf::from("./skerry-data"));
    assert_eq!(d.source, None);
    let n = &d.operations_api.network;
    assert_eq!(
        n.port,
        Listen {
            host: Some("127.0.0.1".into()),
            port: 9925
        }
    );
    assert_eq!(n.max_body_size, 10 * 1024 * 1024);
    assert_eq!(n.max_connections, 512);
    assert_eq!(n.workers, 16);
    assert_eq!(n.timeout, Duration::from_secs(120));
    assert_eq!(n.keep_alive_timeout, Duration::from_secs(30));
    assert_eq!(n.headers_timeout, Duration::from_secs(60));
    assert_eq!(d.logging.level, LevelFilter::Warn);
    let r = &d.replication;
    assert_eq!(
        (
            r.hostname.clone(),
            r.url.clone(),
            r.port.clone(),
            r.secure_port.clone()
        ),
        (None, None, None, None)
    );
    assert!(r.routes.is_empty());
    assert_eq!(r.databases, Databases::All);
    assert_eq!(r.ping_interval, Duration::from_secs(30));
    assert_eq!(r.ping_timeout, None);
    assert_eq!(r.effective_ping_timeout(), Duration::from_secs(60));
    assert_eq!(r.audit_retention, Duration::from_secs(3 * 86_400));
    assert_eq!(r.max_frame_size, 64 * 1024 * 1024);
    assert_eq!(r.shard, None);
    let a = &d.authentication;
    assert_eq!(a.operation_token_timeout, Duration::from_secs(86_400));
    assert_eq!(a.refresh_token_timeout, Duration::from_secs(30 * 86_400));
    assert!(!a.authorize_local);
    assert_eq!(a.hash_function, None);
    let s = &d.storage;
    assert!(!s.write_async);
    assert_eq!(s.cache_size, 32 * 1024 * 1024);
    assert_eq!(s.max_write_buffer_size, 64 * 1024 * 1024);
    assert_eq!(s.group_commit_max_ops, 1024);
    assert!(!d.replication_enabled());
    assert_eq!(d.node_name(), "127.0.0.1");
    assert_eq!(d.node_url(), None);
}

#[test]
fn empty_file_and_empty_sections_give_defaults() {
    let expected = Config {
        root_path: PathBuf::from("/etc/skerry/./skerry-data"),
        ..Config::default()
    };
    for text in [
        "",
        "# nothing\n",
        "---\n",
        "replication:\nstorage: null\noperationsApi:\n  network:\n",
        "rootPath: null\nreplication: {hostname: null, routes: null, databases: null}\n",
    ] {
        assert_eq!(load_ok(text), expected, "{text:?}");
    }
}

#[test]
fn example_documents_every_key() {
    let tree = parse_yaml(EMBEDDED_DEFAULT).unwrap();
    for path in key_paths() {
        let mut node = &tree;
        for seg in path.split('.') {
            node = node
                .get(seg)
                .unwrap_or_else(|| panic!("config.example.yaml lacks '{path}'"));
        }
    }
    // Each key line has a comment line right above it (sections may share one).
    let lines: Vec<&str> = EMBEDDED_DEFAULT.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let is_section = t.ends_with(':');
        if !is_section {
            assert!(
                i > 0 && lines[i - 1].trim_start().starts_with('#'),
                "config.example.yaml line {} has no comment above it: {line}",
                i + 1
            );
        }
    }
}

#[test]
fn every_schema_key_is_read() {
    let loaded = load_text("", None, &[]).unwrap();
    let all: BTreeSet<String> = key_paths().into_iter().collect();
    assert_eq!(loaded.read, all);
}

const FULL: &str = "\
rootPath: data/node1
operationsApi:
  network:
    port: 127.0.0.2:9925
    maxBodySize: 1048576
    maxConnections: 100
    workers: 4
    timeout: 5000
    keepAliveTimeout: 2s
    headersTimeout: 1m
logging:
  level: debug
replication:
  hostname: node1.example
  url: wss://node1.example:443/repl
  port: 127.0.0.2:9933
  securePort: 9934
  routes:
    - 127.0.0.3
    - ws://127.0.0.4:9933
    - hostname: 127.0.0.5
      port: 9933
      replicates: {sends: true, receives: false}
  databases: [dev, {name: prod}]
  pingInterval: 10s
  pingTimeout: 25000
  auditRetention: 12h
  maxFrameSize: 1GB
  shard: 3
authentication:
  operationTokenTimeout: 2h
  refreshTokenTimeout: 7d
  authorizeLocal: true
  hashFunction: argon2id
storage:
  writeAsync: true
  cacheSize: 512K
  maxWriteBufferSize: 8MB
  groupCommitMaxOps: 64
";

#[test]
fn every_key_parsed() {
    let c = load_ok(FULL);
    assert_eq!(c.root_path, PathBuf::from("/etc/skerry/data/node1"));
    let n = &c.operations_api.network;
    assert_eq!(
        n.port,
        Listen {
            host: Some("127.0.0.2".into()),
            port: 9925
        }
    );
    assert_eq!(n.max_body_size, 1_048_576);
    assert_eq!(n.max_connections, 100);
    assert_eq!(n.workers, 4);
    assert_eq!(n.timeout, Duration::from_secs(5));
    assert_eq!(n.keep_alive_timeout, Duration::from_secs(2));
    assert_eq!(n.headers_timeout, Duration::from_secs(60));
    assert_eq!(c.logging.level, LevelFilter::Debug);
    let r = &c.replication;
    assert_eq!(r.hostname.as_deref(), Some("node1.example"));
    assert_eq!(r.url.as_deref(), Some("wss://node1.example:443/repl"));
    assert_eq!(
        r.port,
        Some(Listen {
            host: Some("127.0.0.2".into()),
            port: 9933
        })
    );
    assert_eq!(r.secure_port, Some(Listen::any(9934)));
    assert_eq!(
        serde_json::to_string(&r.routes).unwrap(),
        r#"["127.0.0.3","ws://127.0.0.4:9933",{"hostname":"127.0.0.5","port":9933,"replicates":{"sends":true,"receives":false}}]"#
    );
    assert_eq!(
        r.databases,
        Databases::Only(vec!["dev".into(), "prod".into()])
    );
    assert_eq!(r.ping_interval, Duration::from_secs(10));
    assert_eq!(r.ping_timeout, Some(Duration::from_secs(25)));
    assert_eq!(r.effective_ping_timeout(), Duration::from_secs(25));
    assert_eq!(r.audit_retention, Duration::from_secs(12 * 3600));
    assert_eq!(r.max_frame_size, 1 << 30);
    assert_eq!(r.shard, Some(3));
    let a = &c.authentication;
    assert_eq!(a.operation_token_timeout, Duration::from_secs(7200));
    assert_eq!(a.refresh_token_timeout, Duration::from_secs(7 * 86_400));
    assert!(a.authorize_local);
    assert_eq!(a.hash_function.as_deref(), Some("argon2id"));
    let s = &c.storage;
    assert!(s.write_async);
    assert_eq!(s.cache_size, 512 * 1024);
    assert_eq!(s.max_write_buffer_size, 8 << 20);
    assert_eq!(s.group_commit_max_ops, 64);
    assert_eq!(c.node_name(), "node1.example");
    assert_eq!(
        c.node_url().as_deref(),
        Some("wss://node1.example:443/repl")
    );
    assert!(c.replication_enabled());
}

#[test]
fn load_from_file_sets_source_and_resolves_root() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("skerry.yaml");
    std::fs::write(&path, "rootPath: db\nlogging: {level: info}\n").unwrap();
    let c = Config::load(Some(&path), &[]).unwrap();
    assert_eq!(c.source.as_deref(), Some(path.as_path()));
    assert_eq!(c.root_path, dir.path().join("db"));
    assert_eq!(c.logging.level, LevelFilter::Info);
    // Absolute paths are kept; env overrides are relative to the file too.
    std::fs::write(&path, "rootPath: /var/lib/skerry\n").unwrap();
    assert_eq!(
        Config::load(Some(&path), &[]).unwrap().root_path,
        PathBuf::from("/var/lib/skerry")
    );
    let c = Config::load(Some(&path), &env(&[("ROOTPATH", "other")])).unwrap();
    assert_eq!(c.root_path, dir.path().join("other"));

    let missing = dir.path().join("nope.yaml");
    let e = Config::load(Some(&missing), &[]).unwrap_err();
    assert_eq!(e.key, None);
    assert!(
        e.to_string()
            .starts_with("config error: cannot read config file"),
        "{e}"
    );
    assert!(e.message.contains("nope.yaml"), "{e}");

    std::fs::write(&path, "a: [\n").unwrap();
    let e = Config::load(Some(&path), &[]).unwrap_err();
    assert!(e.message.starts_with("invalid YAML: line"), "{e}");
    assert!(e.message.contains("skerry.yaml"), "{e}");
    std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
    assert!(Config::load(Some(&path), &[])
        .unwrap_err()
        .message
        .contains("not UTF-8"));
}

#[test]
fn env_overrides() {
    let c = load(
        "replication:\n  hostname: from-file\n  url: ws://from-file:1\n",
        &[
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("HTTP_PORT", "127.0.0.2:9926"),
            ("OPERATIONSAPI_NETWORK_SECUREPORT", "null"),
            ("OPERATIONSAPI_NETWORK_PORT", "127.0.0.2:9925"),
            ("replication_hostname", "127.0.0.2"),
            ("Replication_Url", "null"),
            ("REPLICATION_PORT", "9933"),
            ("REPLICATION_ROUTES", r#"["127.0.0.1","127.0.0.3"]"#),
            ("REPLICATION_DATABASES", "*"),
            ("LOGGING_LEVEL", "debug"),
            ("STORAGE_WRITEASYNC", "true"),
            ("AUTHENTICATION_AUTHORIZELOCAL", "TRUE"),
            ("STORAGE_CACHESIZE", "1GB"),
            ("REPLICATION_PINGINTERVAL", "1000"),
            ("REPLICATION_SHARD", "1"),
            ("REPLICATION_SHARD", "2"),
        ],
    )
    .unwrap();
    let n = &c.operations_api.network;
    assert_eq!(n.port.to_string(), "127.0.0.2:9925");
    assert_eq!(c.replication.hostname.as_deref(), Some("127.0.0.2"));
    assert_eq!(c.replication.url, None, "null unsets the file's value");
    assert_eq!(c.replication.port, Some(Listen::any(9933)));
    assert_eq!(
        c.replication.routes,
        vec![json!("127.0.0.1"), json!("127.0.0.3")]
    );
    assert_eq!(c.replication.databases, Databases::All);
    assert_eq!(c.logging.level, LevelFilter::Debug);
    assert!(c.storage.write_async);
    assert!(c.authentication.authorize_local);
    assert_eq!(c.storage.cache_size, 1 << 30);
    assert_eq!(c.replication.ping_interval, Duration::from_secs(1));
    assert_eq!(c.replication.shard, Some(2), "the later variable wins");
    assert_eq!(c.node_url().as_deref(), Some("ws://127.0.0.2:9933"));

    // Without a file too (the embedded default), and into a section the file has as null.
    let c = Config::load(
        None,
        &env(&[("REPLICATION_HOSTNAME", "n1"), ("ROOTPATH", "/data")]),
    )
    .unwrap();
    assert_eq!(c.replication.hostname.as_deref(), Some("n1"));
    assert_eq!(c.root_path, PathBuf::from("/data"));
    let c = load("replication: null\n", &[("REPLICATION_HOSTNAME", "n1")]).unwrap();
    assert_eq!(c.replication.hostname.as_deref(), Some("n1"));
    // The alias key has its own variable.
    let c = load("", &[("LOGGING_AUDITRETENTION", "1d")]).unwrap();
    assert_eq!(c.replication.audit_retention, Duration::from_secs(86_400));
}

#[test]
fn env_errors_name_variable_and_key() {
    let e = load_err("", &[("OPERATIONSAPI_NETWORK_PORT", "true")]);
    assert_eq!(
        e.to_string(),
        "config error at 'operationsApi.network.port': expected a port number or \"host:port\", got true (from environment variable OPERATIONSAPI_NETWORK_PORT)"
    );
    let e = load_err("", &[("replication_routes", "[1]")]);
    assert_eq!(e.key.as_deref(), Some("replication.routes[0]"));
    assert!(
        e.message
            .ends_with("(from environment variable replication_routes)"),
        "{e}"
    );
    let e = load_err("", &[("STORAGE_WRITEASYNC", "yes")]);
    assert_eq!(e.key.as_deref(), Some("storage.writeAsync"));
    assert!(
        e.message.contains("expected true or false, got \"yes\""),
        "{e}"
    );
    assert!(e.message.contains("STORAGE_WRITEASYNC"), "{e}");
    // A file error is not blamed on an unrelated variable.
    let e = load_err("storage: {writeAsync: 1}\n", &[("STORAGE_CACHESIZE", "1M")]);
    assert!(!e.message.contains("environment"), "{e}");
    // A variable cannot be set below a scalar section value.
    let e = load_err("replication: 5\n", &[("REPLICATION_HOSTNAME", "x")]);
    assert_eq!(e.key.as_deref(), Some("replication"));
    assert!(e.message.contains("REPLICATION_HOSTNAME"), "{e}");
}

#[test]
fn unknown_keys_are_errors() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "replication:\n  hostnme: x\n",
            "replication.hostnme",
            "unknown key",
        ),
        ("foo: 1\n", "foo", "unknown key"),
        (
            "operationsApi:\n  network:\n    prot: 1\n",
            "operationsApi.network.prot",
            "unknown key",
        ),
        (
            "operationsApi:\n  port: 9925\n",
            "operationsApi.port",
            "unknown key",
        ),
        (
            "storage:\n  writeasync: true\n",
            "storage.writeasync",
            "unknown key (did you mean 'storage.writeAsync'?)",
        ),
        (
            "Replication:\n  hostname: x\n",
            "Replication",
            "unknown key (did you mean 'replication'?)",
        ),
        (
            "replication:\n  databases: [{name: a, colour: b}]\n",
            "replication.databases[0].colour",
            "unknown key",
        ),
    ];
    for (text, key, message) in cases {
        let e = load_err(text, &[]);
        assert_eq!(e.key.as_deref(), Some(*key), "{text}");
        assert_eq!(e.message, *message, "{text}");
    }
    assert_eq!(
        load_err("replication:\n  hostnme: x\n", &[]).to_string(),
        "config error at 'replication.hostnme': unknown key"
    );
}

#[test]
fn ill_typed_values_are_errors() {
    let cases: &[(&str, &str, &str)] = &[
        ("rootPath: 5", "rootPath", "expected a string, got 5"),
        ("rootPath: ''", "rootPath", "expected a non-empty string"),
        (
            "operationsApi: 9925",
            "operationsApi",
            "expected a mapping of keys, got 9925",
        ),
        (
            "operationsApi: {network: [1]}",
            "operationsApi.network",
            "got a list",
        ),
        (
            "operationsApi: {network: {port: true}}",
            "operationsApi.network.port",
            "expected a port number or \"host:port\", got true",
        ),
        (
            "operationsApi: {network: {port: 99999}}",
            "operationsApi.network.port",
            "out of range",
        ),
        (
            "operationsApi: {network: {port: 'a b:1'}}",
            "operationsApi.network.port",
            "got \"a b:1\"",
        ),
        (
            "operationsApi: {network: {maxBodySize: 10XB}}",
            "operationsApi.network.maxBodySize",
            "expected a size",
        ),
        (
            "operationsApi: {network: {maxBodySize: 0}}",
            "operationsApi.network.maxBodySize",
            "greater than zero",
        ),
        (
            "operationsApi: {network: {maxConnections: -1}}",
            "operationsApi.network.maxConnections",
            "expected a positive whole number, got -1",
        ),
        (
            "operationsApi: {network: {workers: 0}}",
            "operationsApi.network.workers",
            "greater than zero",
        ),
        (
            "operationsApi: {network: {workers: 2.5}}",
            "operationsApi.network.workers",
            "got 2.5",
        ),
        (
            "operationsApi: {network: {timeout: soon}}",
            "operationsApi.network.timeout",
            "expected a duration",
        ),
        (
            "operationsApi: {network: {keepAliveTimeout: 0}}",
            "operationsApi.network.keepAliveTimeout",
            "greater than zero",
        ),
        (
            "operationsApi: {network: {headersTimeout: [1]}}",
            "operationsApi.network.headersTimeout",
            "got a list",
        ),
        (
            "logging: {level: verbose}",
            "logging.level",
            "expected one of trace, debug, info, warn, error, fatal, notify; got \"verbose\"",
        ),
        ("logging: {level: 3}", "logging.level", "got 3"),
        (
            "logging: {auditRetention: -1}",
            "logging.auditRetention",
            "got -1",
        ),
        (
            "replication: {hostname: 12}",
            "replication.hostname",
            "expected a host name, got 12",
        ),
        (
            "replication: {hostname: 'ws://x:1'}",
            "replication.hostname",
            "replication.url",
        ),
        (
            "replication: {url: 'node1:9933'}",
            "replication.url",
            "expected a ws:// or wss:// URL",
        ),
        (
            "replication: {url: 'https://x'}",
            "replication.url",
            "expected a ws:// or wss:// URL",
        ),
        (
            "replication: {port: {a: 1}}",
            "replication.port",
            "got a mapping",
        ),
        (
            "replication: {securePort: 'x:y'}",
            "replication.securePort",
            "got \"x:y\"",
        ),
        (
            "replication: {routes: 127.0.0.2}",
            "replication.routes",
            "expected a list of routes, got \"127.0.0.2\"",
        ),
        (
            "replication: {routes: [a, 5]}",
            "replication.routes[1]",
            "got 5",
        ),
        (
            "replication: {routes: [a, null]}",
            "replication.routes[1]",
            "got null",
        ),
        (
            "replication: {routes: [[a]]}",
            "replication.routes[0]",
            "got a list",
        ),
        (
            "replication: {databases: 5}",
            "replication.databases",
            "expected '*', a database name",
        ),
        (
            "replication: {databases: [a, 1]}",
            "replication.databases[1]",
            "expected '*'",
        ),
        (
            "replication: {databases: [{sharded: true}]}",
            "replication.databases[0]",
            "missing 'name'",
        ),
        (
            "replication: {databases: [{name: 2}]}",
            "replication.databases[0].name",
            "expected a database name, got 2",
        ),
        (
            "replication: {pingInterval: 0}",
            "replication.pingInterval",
            "greater than zero",
        ),
        (
            "replication: {pingTimeout: forever}",
            "replication.pingTimeout",
            "expected a duration",
        ),
        (
            "replication: {auditRetention: true}",
            "replication.auditRetention",
            "got true",
        ),
        (
            "replication: {maxFrameSize: -5}",
            "replication.maxFrameSize",
            "got -5",
        ),
        (
            "replication: {shard: one}",
            "replication.shard",
            "expected a whole number, got \"one\"",
        ),
        ("replication: {shard: 1.5}", "replication.shard", "got 1.5"),
        (
            "authentication: {operationTokenTimeout: 1y}",
            "authentication.operationTokenTimeout",
            "expected a duration",
        ),
        (
            "authentication: {refreshTokenTimeout: false}",
            "authentication.refreshTokenTimeout",
            "got false",
        ),
        (
            "authentication: {authorizeLocal: 'true'}",
            "authentication.authorizeLocal",
            "expected true or false, got \"true\"",
        ),
        (
            "authentication: {authorizeLocal: yes}",
            "authentication.authorizeLocal",
            "got \"yes\"",
        ),
        (
            "authentication: {hashFunction: [sha256]}",
            "authentication.hashFunction",
            "expected a hash function name",
        ),
        (
            "storage: {writeAsync: 1}",
            "storage.writeAsync",
            "expected true or false, got 1",
        ),
        (
            "storage: {cacheSize: lots}",
            "storage.cacheSize",
            "expected a size",
        ),
        (
            "storage: {maxWriteBufferSize: 1.5}",
            "storage.maxWriteBufferSize",
            "got 1.5",
        ),
        (
            "storage: {groupCommitMaxOps: 0}",
            "storage.groupCommitMaxOps",
            "greater than zero",
        ),
    ];
    for (text, key, message) in cases {
        let e = load_err(text, &[]);
        assert_eq!(e.key.as_deref(), Some(*key), "{text}: {e}");
        assert!(e.message.contains(message), "{text}: {e}");
        assert!(
            e.to_string()
                .starts_with(&format!("config error at '{key}': ")),
            "{e}"
        );
    }
}

#[test]
fn whole_file_errors() {
    for (text, message) in [
        ("a: [\n", "invalid YAML: line 1"),
        (
            "replication:\n  port: 1\n  port: 2\n",
            "duplicate mapping key",
        ),
        (
            "- a\n- b\n",
            "the configuration must be a YAML mapping, got a list",
        ),
        (
            "just a string\n",
            "the configuration must be a YAML mapping, got \"just a string\"",
        ),
    ] {
        let e = load_err(text, &[]);
        assert_eq!(e.key, None, "{text}");
        assert!(e.message.contains(message), "{text}: {e}");
    }
}

#[test]
fn harper_ignored_keys_are_accepted() {
    let text = "\
http: {port: 9926, securePort: null}
threads: {count: 2}
mqtt: {network: {port: null, securePort: null}}
tls: {certificate: null}
clustering: {enabled: false, hubServer: {cluster: {network: {routes: null}}}}
customFunctions: {enabled: false}
localStudio: {enabled: false}
analytics: {aggregatePeriod: 60}
componentsRoot: null
operationsApi:
  network: {cors: true, corsAccessList: ['*'], domainSocket: hdb/operations-server, securePort: null}
  tls: {certificate: null}
logging: {root: /x/log, rotation: {enabled: false}, stdStreams: false, console: true, auditLog: true, file: true}
storage: {path: null, caching: true, compression: true, prefetchWrites: true, noReadAhead: true, compactOnStart: false}
replication: {enableRootCAs: true, mtls: {certificateVerification: false}, failOver: true, databases: [{name: dev, sharded: true}]}
authentication: {cacheTTL: 30000, enableSessions: true}
";
    let loaded = load_text(text, None, &[]).unwrap_or_else(|e| panic!("{e}"));
    let expected = [
        "http",
        "threads",
        "mqtt",
        "clustering",
        "customFunctions",
        "localStudio",
        "analytics",
        "operationsApi.network.cors",
        "operationsApi.network.corsAccessList",
        "operationsApi.network.domainSocket",
        "logging.stdStreams",
        "logging.console",
        "logging.auditLog",
        "storage.caching",
        "storage.compression",
        "storage.prefetchWrites",
        "storage.noReadAhead",
        "storage.compactOnStart",
        "replication.mtls",
        "replication.failOver",
        "authentication.cacheTTL",
        "authentication.enableSessions",
        // Found while reading the value, after the key walk.
        "replication.databases[0].sharded",
    ];
    // Null-valued Harper keys (componentsRoot, securePort, storage.path) set nothing: no warning.
    assert_eq!(loaded.ignored, expected);
    assert_eq!(
        loaded.config.replication.databases,
        Databases::Only(vec!["dev".into()])
    );
    // Ignored keys are not environment-overridable (a stray HTTP_PORT must not break a load).
    assert!(key_paths().iter().all(|k| !k.starts_with("http")));
}

/// Node 2 of the live Harper cluster (spec/harper-live/README.md "Resulting YAML"), expanded
/// with the rest of Harper 4.7's default file.
const HARPER_NODE2: &str = "\
# HarperDB configuration file. Refer to https://harperdb.io/docs/reference/configuration-file/
---
http:
  compressionThreshold: 1200
  cors: false
  corsAccessList:
    - null
  keepAliveTimeout: 30000
  port: 127.0.0.2:9926
  securePort: null
  mtls: false
  timeout: 120000
threads:
  count: 2
  debug: false
authentication:
  authorizeLocal: true
  cacheTTL: 30000
  enableSessions: true
  operationTokenTimeout: 1d
  refreshTokenTimeout: 30d
analytics:
  aggregatePeriod: 60
clustering:
  enabled: false
  hubServer:
    cluster:
      name: harperdb
      network:
        port: 9932
        routes:
  nodeName: null
componentsRoot: /tmp/n2/hdb/components
localStudio:
  enabled: false
logging:
  auditAuthEvents:
    logFailed: false
    logSuccessful: false
  auditLog: true
  auditRetention: 3d
  file: true
  level: warn
  root: /tmp/n2/hdb/log
  rotation:
    enabled: false
    compress: false
    interval: null
    maxSize: null
    path: null
  stdStreams: false
mqtt:
  network:
    port: null
    securePort: null
    mtls: false
  webSocket: true
  requireAuthentication: true
operationsApi:
  network:
    cors: true
    corsAccessList:
      - '*'
    domainSocket: /tmp/n2/hdb/operations-server
    port: 127.0.0.2:9925
    securePort: null
replication:
  securePort: null
  enableRootCAs: true
  hostname: 127.0.0.2
  databases: '*' # Database name or list of database names to replicate, * defaults to all databases
  routes: null
  port: 127.0.0.2:9933
rootPath: /tmp/n2/hdb
storage:
  writeAsync: false
  caching: true
  compression: true
  noReadAhead: true
  path: null
  prefetchWrites: true
tls:
  certificate: /tmp/n2/hdb/keys/certificate.pem
  certificateAuthority: /tmp/n2/hdb/keys/ca.pem
  privateKey: /tmp/n2/hdb/keys/privateKey.pem
";

#[test]
fn real_harper_config_loads() {
    let c = load_ok(HARPER_NODE2);
    assert_eq!(c.root_path, PathBuf::from("/tmp/n2/hdb"));
    assert_eq!(c.operations_api.network.port.to_string(), "127.0.0.2:9925");
    assert_eq!(c.replication.hostname.as_deref(), Some("127.0.0.2"));
    assert_eq!(
        c.replication
            .port
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("127.0.0.2:9933")
    );
    assert_eq!(c.replication.secure_port, None);
    assert!(c.replication.routes.is_empty());
    assert_eq!(c.replication.databases, Databases::All);
    assert_eq!(
        c.replication.audit_retention,
        Duration::from_secs(3 * 86_400)
    );
    assert!(c.authentication.authorize_local);
    assert_eq!(c.logging.level, LevelFilter::Warn);
    assert_eq!(c.node_name(), "127.0.0.2");
    assert_eq!(c.node_url().as_deref(), Some("ws://127.0.0.2:9933"));
    assert!(c.replication_enabled());

    // The Harper 5 default file loads as well (node, applications, securePort defaults).
    let v5 = "authentication: {authorizeLocal: false, cacheTTL: 30000, enableSessions: true, operationTokenTimeout: 1d, refreshTokenTimeout: 30d}\nanalytics: {aggregatePeriod: 60, replicate: false}\napplications: {lockdown: freeze-after-load}\nlogging: {rotation: {enabled: true, maxSize: 64M}}\noperationsApi: {network: {port: null, securePort: 9925}}\nnode: {hostname: null}\n";
    let c = load_ok(v5);
    // `port: null` beside a securePort: HTTPS instead of HTTP.
    assert!(!c.operations_api.network.plain_http);
    assert_eq!(
        c.operations_api.network.secure_port,
        Some(Listen::any(9925))
    );
}

#[test]
fn databases_forms() {
    let cases: &[(&str, Databases)] = &[
        ("'*'", Databases::All),
        ("null", Databases::All),
        ("dev", Databases::Only(vec!["dev".into()])),
        (
            "[dev, data]",
            Databases::Only(vec!["dev".into(), "data".into()]),
        ),
        (
            "[{name: dev}, data]",
            Databases::Only(vec!["dev".into(), "data".into()]),
        ),
        ("[dev, '*']", Databases::All),
        ("[]", Databases::Only(vec![])),
    ];
    for (yaml, want) in cases {
        let c = load_ok(&format!("replication:\n  databases: {yaml}\n"));
        assert_eq!(&c.replication.databases, want, "{yaml}");
    }
}

#[test]
fn log_levels() {
    let cases = [
        ("trace", LevelFilter::Trace),
        ("debug", LevelFilter::Debug),
        ("info", LevelFilter::Info),
        ("warn", LevelFilter::Warn),
        ("error", LevelFilter::Error),
        ("fatal", LevelFilter::Error),
        ("notify", LevelFilter::Info),
        ("WARN", LevelFilter::Warn),
    ];
    for (name, want) in cases {
        assert_eq!(
            load_ok(&format!("logging: {{level: {name}}}"))
                .logging
                .level,
            want,
            "{name}"
        );
    }
}

#[test]
fn audit_retention_alias() {
    let r = |text: &str| load_ok(text).replication.audit_retention;
    assert_eq!(
        r("logging: {auditRetention: 1d}"),
        Duration::from_secs(86_400)
    );
    assert_eq!(
        r("replication: {auditRetention: 2h}"),
        Duration::from_secs(7200)
    );
    assert_eq!(
        r("logging: {auditRetention: 1d}\nreplication: {auditRetention: 2h}"),
        Duration::from_secs(7200)
    );
    assert_eq!(
        r("logging: {auditRetention: 86400000}"),
        Duration::from_secs(86_400)
    );
}

#[test]
fn node_identity() {
    // (yaml, node_name, node_url, replication_enabled)
    let cases: &[(&str, &str, Option<&str>, bool)] = &[
        ("", "127.0.0.1", None, false),
        (
            "operationsApi: {network: {port: 9925}}",
            "127.0.0.1",
            None,
            false,
        ),
        (
            "operationsApi: {network: {port: 127.0.0.5:9925}}",
            "127.0.0.5",
            None,
            false,
        ),
        (
            "operationsApi: {network: {port: 127.0.0.5:9925}}\nreplication: {port: 9933}",
            "127.0.0.5",
            Some("ws://127.0.0.5:9933"),
            true,
        ),
        ("replication: {hostname: n1}", "n1", None, true),
        (
            "replication: {hostname: n1, port: 127.0.0.1:9933}",
            "n1",
            Some("ws://n1:9933"),
            true,
        ),
        (
            "replication: {hostname: n1, securePort: 9934}",
            "n1",
            Some("wss://n1:9934"),
            true,
        ),
        (
            "replication: {hostname: n1, port: 9933, securePort: 9934}",
            "n1",
            Some("ws://n1:9933"),
            true,
        ),
        (
            "replication: {url: 'wss://n2.example:443'}",
            "n2.example",
            Some("wss://n2.example:443"),
            true,
        ),
        (
            "replication: {hostname: n1, url: 'ws://n2:1'}",
            "n1",
            Some("ws://n2:1"),
            true,
        ),
        (
            "replication: {securePort: 9933}",
            "127.0.0.1",
            Some("wss://127.0.0.1:9933"),
            true,
        ),
        (
            "replication: {hostname: '::1', port: 9933}",
            "::1",
            Some("ws://[::1]:9933"),
            true,
        ),
        (
            "operationsApi: {network: {port: '[::1]:9925'}}\nreplication: {port: 9933}",
            "::1",
            Some("ws://[::1]:9933"),
            true,
        ),
    ];
    for (yaml, name, url, enabled) in cases {
        let c = load_ok(yaml);
        assert_eq!(c.node_name(), *name, "{yaml}");
        assert_eq!(c.node_url().as_deref(), *url, "{yaml}");
        assert_eq!(c.replication_enabled(), *enabled, "{yaml}");
    }
}

#[test]
fn error_display() {
    let e = ConfigError {
        key: Some("operationsApi.network.port".into()),
        message: "expected a port number or \"host:port\", got true".into(),
    };
    assert_eq!(
        e.to_string(),
        "config error at 'operationsApi.network.port': expected a port number or \"host:port\", got true"
    );
    let e = ConfigError {
        key: None,
        message: "x".into(),
    };
    assert_eq!(e.to_string(), "config error: x");
    let _: &dyn std::error::Error = &e;
}
