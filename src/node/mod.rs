//! Wiring: opens the store, recovers the core, bootstraps the first user, starts the core
//! thread and the HTTP listener, and stops them in order.
//!
//! Shutdown order matters for the durability contract: stop accepting HTTP requests, let workers
//! finish the request they hold (their writes are committed and answered), drop every sender to
//! the core so it drains its queue, commits and flushes, then return.

pub mod check;
pub mod driver;
mod expiry;

use crate::config::Config;
use crate::core::auth::{AuthState, SUPER_USER_ROLE};
use crate::core::catalog::{Catalog, HDB_ROLE, HDB_USER, SYSTEM_DB};
use crate::core::op::WriteOp;
use crate::core::{Core, Input, Recovered};
use crate::ops::auth::{hash_password, Tokens};
use crate::ops::http::{Context, HttpOptions, HttpServer};
use crate::store::record::StoredRecord;
use crate::store::{Durability, Store, StoreOptions, Write};
use driver::{CoreHandle, Driver, ReplyTo, Shared};
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

pub struct Node {
    http: Option<HttpServer>,
    https: Option<HttpServer>,
    repl: Option<crate::repl::Replicator>,
    stop_core: Option<crossbeam_channel::Sender<()>>,
    core_thread: Option<JoinHandle<()>>,
    core: Option<CoreHandle>,
    jobs: Option<crate::jobs::Jobs>,
    /// Dropped at stop: ends the throughput sampler.
    _history_stop: crossbeam_channel::Sender<()>,
    /// Dropped at stop: ends the expiry sweep.
    _expiry_stop: crossbeam_channel::Sender<()>,
    pub http_addr: SocketAddr,
    pub node_name: String,
}

/// Reads every live record of a system table (start-up only).
fn load_system_table(
    store: &Store,
    catalog: &Catalog,
    table: &str,
) -> Result<Vec<serde_json::Map<String, Value>>, String> {
    let Some(t) = catalog.table(SYSTEM_DB, table) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in store.scan_table(t.id, None).map_err(|e| e.to_string())? {
        let (_, raw) = item.map_err(|e| e.to_string())?;
        if let Some(json) = StoredRecord::json_slice(&raw) {
            if let Ok(Value::Object(m)) = serde_json::from_slice(json) {
                out.push(m);
            }
        }
    }
    Ok(out)
}

fn recover(store: &Store) -> Result<Recovered, String> {
    let r = store.recover().map_err(|e| e.to_string())?;
    let catalog = match &r.catalog_json {
        Some(json) => Some(
            serde_json::from_slice::<Catalog>(json)
                .map(|mut c| {
                    c.reindex();
                    c
                })
                .map_err(|e| format!("the stored catalog is unreadable: {e}"))?,
        ),
        None => None,
    };
    let mut auth = AuthState::default();
    if let Some(c) = &catalog {
        for rec in load_system_table(store, c, HDB_ROLE)? {
            if let Some(id) = rec.get("id").map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            }) {
                auth.apply_role(&id, Some(&rec));
            }
        }
        for rec in load_system_table(store, c, HDB_USER)? {
            if let Some(u) = rec
                .get("username")
                .and_then(Value::as_str)
                .map(str::to_string)
            {
                auth.apply_user(&u, Some(&rec));
            }
        }
    }
    let table_stats = complete_digests(store, r.table_stats, &r.origins)?;
    Ok(Recovered {
        catalog,
        hlc_floor: r.hlc_floor,
        origins: r.origins,
        cursors: r.cursors,
        table_stats,
        auth,
    })
}

/// Tables whose statistics were written before digests existed (or by an older binary after a
/// downgrade) get their digest computed once here, by one scan each, and persisted before the
/// core starts: the write path then keeps every digest current, so readers never see an
/// unknown one. The scan also recounts live records, which it has read anyway.
fn complete_digests(
    store: &Store,
    mut stats: std::collections::HashMap<u32, crate::store::TableStats>,
    origins: &[(String, u32)],
) -> Result<std::collections::HashMap<u32, crate::store::TableStats>, String> {
    let names: std::collections::HashMap<u32, String> =
        origins.iter().map(|(n, id)| (*id, n.clone())).collect();
    let mut writes = Vec::new();
    for (table, s) in stats.iter_mut() {
        if s.digest.is_some() {
            continue;
        }
        let (d, count) = store
            .scan_digest(*table, &names)
            .map_err(|e| e.to_string())?;
        s.digest = Some(d);
        s.count = count;
        writes.push(Write::TableStats {
            table: *table,
            stats: *s,
        });
    }
    if !writes.is_empty() {
        log::info!(
            "computed the digests of {} tables written before digests existed",
            writes.len()
        );
        store
            .commit(&writes, Durability::Sync)
            .map_err(|e| e.to_string())?;
    }
    Ok(stats)
}

/// This node's token-signing secret, created on first start (node-local, never replicated).
fn token_secret(store: &Store) -> Result<Vec<u8>, String> {
    if let Some(s) = store.local("token_secret").map_err(|e| e.to_string())? {
        return Ok(s);
    }
    let mut secret = vec![0u8; 32];
    crate::util::random_bytes(&mut secret);
    store
        .commit(
            &[Write::Local {
                key: "token_secret".into(),
                value: Some(secret.clone()),
            }],
            Durability::Sync,
        )
        .map_err(|e| e.to_string())?;
    Ok(secret)
}

/// Creates the super_user role and the first user on an empty store.
fn bootstrap_users(driver: &mut Driver, env: &[(String, String)]) -> Result<(), String> {
    if !driver.core.auth().users.is_empty() {
        return Ok(());
    }
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let username = get("HDB_ADMIN_USERNAME")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "admin".into());
    let (password, generated) = match get("HDB_ADMIN_PASSWORD").filter(|s| !s.is_empty()) {
        Some(p) => (p, false),
        None => (crate::util::random_password(24), true),
    };
    let run = |driver: &mut Driver, op: WriteOp| -> Result<(), String> {
        let (tx, rx) = crate::util::oneshot::channel();
        driver.run_one(Input::Write {
            op,
            // The first user creates itself: receivers that know it as a super_user accept it.
            actor: crate::core::txn::Actor::User(username.clone()),
            reply: ReplyTo::Op(tx),
        });
        match rx.recv() {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no reply from the core".into()),
        }
    };
    if !driver.core.auth().roles.contains_key(SUPER_USER_ROLE) {
        run(
            driver,
            WriteOp::AddRole {
                role: SUPER_USER_ROLE.into(),
                id: Some(SUPER_USER_ROLE.into()),
                permission: json!({"super_user": true}),
            },
        )?;
    }
    run(
        driver,
        WriteOp::AddUser {
            username: username.clone(),
            password_hash: hash_password(&password).map_err(|e| e.to_string())?,
            role: SUPER_USER_ROLE.into(),
            active: true,
        },
    )?;
    if generated {
        // Shown once, on the terminal that started the node; stored only as a hash.
        eprintln!(
            "skerry: created super_user '{username}' with generated password: {password}\n\
             skerry: this password is shown once and stored only as a hash; set \
             HDB_ADMIN_USERNAME/HDB_ADMIN_PASSWORD on first start to choose your own."
        );
    } else {
        log::info!("created super_user '{username}'");
    }
    Ok(())
}

impl Node {
    /// Starts a node. `env` is the process environment (for the first user's credentials).
    pub fn start(cfg: &Config, env: &[(String, String)]) -> Result<Node, String> {
        Self::start_with(cfg, env, None)
    }

    /// [`Node::start`], with a channel on which the `restart` operation asks the caller to
    /// stop the node and start the binary again.
    pub fn start_with(
        cfg: &Config,
        env: &[(String, String)],
        restart: Option<crossbeam_channel::Sender<()>>,
    ) -> Result<Node, String> {
        let started_ms = crate::util::time::now_ms();
        // Every listener is bound before anything is created: a port in use must stop the
        // start before the store, the first user or any key exists (a failed first start used
        // to create the admin with a generated password and then die, locking it out).
        let net = &cfg.operations_api.network;
        let bind = |l: &crate::config::Listen, key: &str| {
            TcpListener::bind(l.bind_addr()).map_err(|e| {
                format!("cannot listen on {l}: {e} (change {key} in the config, or stop what uses the port)")
            })
        };
        let listener = if net.plain_http {
            Some(bind(&net.port, "operationsApi.network.port")?)
        } else {
            None
        };
        let secure_listener = net
            .secure_port
            .as_ref()
            .map(|l| bind(l, "operationsApi.network.securePort"))
            .transpose()?;
        let repl_listeners = crate::repl::Listeners {
            plain: cfg
                .replication
                .port
                .as_ref()
                .map(|l| bind(l, "replication.port"))
                .transpose()?,
            secure: cfg
                .replication
                .secure_port
                .as_ref()
                .map(|l| bind(l, "replication.securePort"))
                .transpose()?,
        };
        let store = Store::open(
            &cfg.root_path,
            &StoreOptions {
                cache_size: cfg.storage.cache_size,
                max_write_buffer_size: cfg.storage.max_write_buffer_size,
            },
        )
        .map_err(|e| {
            format!(
                "cannot open the store under {}: {e}",
                cfg.root_path.display()
            )
        })?;
        // The log file starts once the store (and so rootPath) is ours: a start that fails
        // earlier creates nothing.
        if cfg.logging.file {
            let dir = cfg.log_dir();
            if let Err(e) = crate::util::logfile::attach(
                &dir,
                cfg.logging.rotation_max_size,
                cfg.logging.rotation_enabled,
            ) {
                log::warn!("cannot write the log file in {}: {e}", dir.display());
            }
        } else {
            crate::util::logfile::disable();
        }
        let node_name = cfg.node_name();
        let recovered = recover(&store)?;
        let secret = token_secret(&store)?;
        let mut core = Core::new(&node_name, recovered);
        core.set_retention(cfg.replication.audit_retention.as_millis() as u64);
        core.set_limits(crate::core::Limits {
            max_attributes_per_table: cfg.storage.max_attributes_per_table,
            max_new_attributes_per_request: cfg.storage.max_new_attributes_per_request,
        });
        let shared = Arc::new(Shared::new(core.catalog().clone(), core.auth().clone()));
        let (tx, rx) = crossbeam_channel::bounded(4096);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        // The replication context exists only once the core runs; the commit hook finds it here.
        let repl_slot: Arc<std::sync::OnceLock<Arc<crate::repl::ReplCtx>>> = Arc::default();
        let hook_slot = repl_slot.clone();
        let mut driver = Driver {
            core,
            store: store.clone(),
            rx,
            stop: stop_rx,
            durability: if cfg.storage.write_async {
                Durability::Buffer
            } else {
                Durability::Sync
            },
            max_group: cfg.storage.group_commit_max_ops.max(1),
            shared: shared.clone(),
            on_commit: Box::new(move |info| {
                if let Some(ctx) = hook_slot.get() {
                    ctx.notifier.notify(info.dbs);
                    if info.membership_changed || info.catalog_changed {
                        ctx.reload();
                    }
                }
            }),
        };
        // Persist a fresh catalog (and anything recovered) before serving.
        driver.flush();
        bootstrap_users(&mut driver, env)?;
        let core_thread = std::thread::Builder::new()
            .name("core".into())
            .spawn(move || {
                // A panic in the core means its state can no longer be trusted: stop the whole
                // node, loudly, rather than stay up answering 503 to every write while `/health`
                // says all is well. What was acknowledged is on disk; restart recovers.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver.run()));
                if ran.is_err() {
                    log::error!("the core thread panicked; stopping the node");
                    eprintln!("skerry: FATAL: the core thread panicked; stopping the node");
                    std::process::exit(70);
                }
            })
            .map_err(|e| e.to_string())?;
        let handle = CoreHandle::new(tx);
        // Jobs cut short by the last stop or crash are marked so before anything new starts.
        let jobs = crate::jobs::Jobs::new(store.clone(), handle.clone(), shared.clone());
        jobs.recover_interrupted()
            .map_err(|e| format!("cannot read the job records: {e}"))?;
        let tokens = Arc::new(Tokens::new(
            &secret,
            cfg.authentication.operation_token_timeout,
            cfg.authentication.refresh_token_timeout,
        ));

        // The node's TLS identity: created (under rootPath/keys) when replication or HTTPS is on.
        let repl_cfg = crate::repl::ReplConfig::from_config(cfg);
        let node_tls = if repl_cfg.is_some() || cfg.operations_api.network.secure_port.is_some() {
            let settings = crate::tls::TlsSettings {
                certificate: cfg.tls.certificate.clone(),
                private_key: cfg.tls.private_key.clone(),
                certificate_authority: cfg.tls.certificate_authority.clone(),
                enable_root_cas: cfg.replication.enable_root_cas,
            };
            Some(Arc::new(
                crate::tls::NodeTls::load_or_create(&cfg.root_path, &node_name, &settings)
                    .map_err(|e| format!("TLS: {e}"))?,
            ))
        } else {
            None
        };
        let (repl, cluster): (
            Option<crate::repl::Replicator>,
            Arc<dyn crate::ops::http::ClusterOps>,
        ) = match repl_cfg {
            Some(rc) => {
                let r = crate::repl::Replicator::start(
                    cfg,
                    rc,
                    crate::repl::ReplParts {
                        store: store.clone(),
                        shared: shared.clone(),
                        core: handle.clone(),
                        tokens: tokens.clone(),
                        tls: node_tls.clone(),
                        listeners: repl_listeners,
                    },
                )?;
                let _ = repl_slot.set(r.ctx.clone());
                let api = Arc::new(crate::repl::cluster_ops::ClusterApi(r.ctx.clone()));
                (Some(r), api)
            }
            None => (
                None,
                Arc::new(crate::repl::cluster_ops::ReplicationOff {
                    node_name: node_name.clone(),
                }),
            ),
        };

        // The status page's throughput history.
        let (expiry_stop, expiry_rx) = crossbeam_channel::bounded::<()>(1);
        expiry::start(store.clone(), shared.clone(), handle.clone(), expiry_rx);
        let (history_stop, history_rx) = crossbeam_channel::bounded::<()>(1);
        {
            let cluster = cluster.clone();
            crate::obs::history::start(Box::new(move || cluster.links()), history_rx);
        }
        let http_addr = match listener.as_ref().or(secure_listener.as_ref()) {
            Some(l) => l.local_addr().map_err(|e| e.to_string())?,
            None => return Err("operationsApi.network.port is null and no securePort is set: the operations API would not listen anywhere".into()),
        };
        let admin = Arc::new(crate::ops::admin::AdminOps {
            cfg: cfg.clone(),
            env: env.to_vec(),
            restart,
            started_ms,
        });
        if let Some(r) = &repl {
            // A member's forwarded `set_configuration` runs exactly as a local one.
            let admin = admin.clone();
            let _ = r
                .ctx
                .set_configuration
                .set(Box::new(move |body| admin.set_configuration(body)));
        }
        let ctx = Arc::new(Context {
            store,
            shared,
            core: handle.clone(),
            tokens,
            max_body: net.max_body_size,
            authorize_local: cfg.authentication.authorize_local,
            cluster: Some(cluster.clone()),
            certs: Some(Arc::new(crate::ops::certs::CertOps {
                tls: node_tls.clone(),
                on_trust_change: repl.as_ref().map(|r| {
                    let ctx = r.ctx.clone();
                    Box::new(move || ctx.reload_sync()) as Box<dyn Fn() + Send + Sync>
                }),
            })),
            monitor: crate::ops::http::Monitor {
                node_name: node_name.clone(),
                started_ms,
                metrics: cfg.operations_api.metrics,
                status_page: cfg.operations_api.status_page,
                log_requests: cfg.logging.requests,
            },
            admin: Some(admin),
            jobs: Some(jobs.clone()),
        });
        let opts = HttpOptions {
            max_connections: net.max_connections,
            timeout: net
                .timeout
                .min(net.keep_alive_timeout)
                .min(net.headers_timeout),
            max_body: usize::try_from(net.max_body_size).unwrap_or(usize::MAX),
            max_connections_per_address: net.max_connections_per_address.max(1),
            tls: None,
        };
        // HTTPS beside the plain port, with the node certificate (or the configured one).
        let https = match (secure_listener, &node_tls, &net.secure_port) {
            (Some(listener), Some(t), Some(l)) => {
                let mut o = opts.clone();
                let own = &cfg.operations_api.tls;
                let own = match (&own.certificate, &own.private_key) {
                    (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                    _ => None,
                };
                o.tls = Some(t.https_config(own).map_err(|e| format!("HTTPS: {e}"))?);
                log::info!("node '{node_name}' serving HTTPS on {l}");
                Some(
                    HttpServer::start(listener, &o, ctx.clone())
                        .map_err(|e| format!("cannot start the HTTPS server: {e}"))?,
                )
            }
            _ => None,
        };
        let http = match listener {
            Some(l) => {
                log::info!("node '{node_name}' serving the operations API on {http_addr}");
                Some(
                    HttpServer::start(l, &opts, ctx)
                        .map_err(|e| format!("cannot start the HTTP server: {e}"))?,
                )
            }
            None => None,
        };
        Ok(Node {
            https,
            http,
            repl,
            stop_core: Some(stop_tx),
            core_thread: Some(core_thread),
            core: Some(handle),
            jobs: Some(jobs),
            _history_stop: history_stop,
            _expiry_stop: expiry_stop,
            http_addr,
            node_name,
        })
    }

    /// Graceful stop: no new requests, in-flight writes finish and are answered, the store is
    /// flushed.
    pub fn stop(mut self) {
        if let Some(h) = self.https.take() {
            h.stop();
        }
        if let Some(h) = self.http.take() {
            h.stop();
        }
        if let Some(r) = self.repl.take() {
            r.stop();
        }
        // Running jobs stop at their next batch boundary and record how far they got.
        if let Some(j) = self.jobs.take() {
            j.stop(std::time::Duration::from_secs(10));
        }
        self.core.take();
        self.stop_core.take();
        if let Some(t) = self.core_thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::StoredRecord;
    use crate::store::TableStats;

    /// A store written before digests existed (24-byte statistics): start-up computes each
    /// table's digest from its records and persists it, instead of showing zero or nothing.
    #[test]
    fn statistics_without_a_digest_get_the_digest_of_their_records_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let json = br#"{"id":"k"}"#.to_vec();
        let pk = crate::store::keys::encode_pk(&json!("k")).unwrap();
        store
            .commit(
                &[
                    Write::Origin {
                        name: "n1".into(),
                        id: 3,
                    },
                    Write::Record {
                        table: 7,
                        pk: pk.clone(),
                        record: StoredRecord {
                            version: 42,
                            origin: 3,
                            json: Some(json.clone()),
                        },
                    },
                    Write::Record {
                        table: 7,
                        pk: b"gone".to_vec(),
                        record: StoredRecord {
                            version: 43,
                            origin: 3,
                            json: None,
                        },
                    },
                    Write::TableStats {
                        table: 7,
                        stats: TableStats {
                            count: 1,
                            last_version: 43,
                            bytes: json.len() as u64,
                            digest: None,
                        },
                    },
                ],
                Durability::Sync,
            )
            .unwrap();
        let want = crate::store::digest::record_hash(&pk, 42, "n1", &json);
        let rec = recover(&store).unwrap();
        assert_eq!(rec.table_stats[&7].digest, Some(want));
        assert_eq!(rec.table_stats[&7].count, 1);
        assert_eq!(
            store.table_stats(7).unwrap().digest,
            Some(want),
            "persisted"
        );
    }
}
