//! The HTTP listener: a vendored, hardened tiny_http server and a fixed pool of worker threads.
//!
//! Harper's transport: `POST /` with a JSON operation, Basic or Bearer auth, compact JSON
//! answers with `Content-Type: application/json`, errors as `{"error": "..."}`. `GET /health`
//! answers for load balancers. Limits (body size, connections, timeouts) come from the config.

use super::auth::{authenticate, hash_password, TokenKind, Tokens};
use super::parse::Operation;
use super::read;
use crate::core::auth::{Principal, SUPER_USER_ROLE};
use crate::core::error::{OpError, OpResult};
use crate::core::op::WriteOp;
use crate::core::txn::Actor;
use crate::node::driver::{CoreHandle, Shared};
use crate::store::Store;
use serde_json::{json, Value};
use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// Cluster operations are answered by the replication layer; the HTTP layer only routes them.
pub trait ClusterOps: Send + Sync {
    /// Returns None when `name` is not a cluster operation.
    fn execute(
        &self,
        name: &str,
        body: &serde_json::Map<String, Value>,
        p: &Principal,
    ) -> Option<OpResult>;

    /// The replication links, for metrics and the status page (none without replication).
    fn links(&self) -> Vec<crate::obs::LinkSnap> {
        Vec::new()
    }

    /// Whether replication is up enough for the node to count as ready.
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// Whether this node has peers that could confirm a write (replication is on).
    fn replicates(&self) -> bool {
        false
    }

    /// Waits, on the calling connection thread (never the core's), until `n` (> 0) peers
    /// committed this node's `version` of `db` (`replicatedConfirmation`). Without
    /// replication no peer can ever confirm.
    fn confirm(&self, db: &str, _version: u64, n: u64) -> Result<(), OpError> {
        Err(no_recipients(db, n))
    }

    /// Runs a schema operation that succeeded here on every member that replicates its
    /// database (`replicated: true`) and returns one entry per member, Harper's shape: the
    /// member's answer plus `node`, or `{"status":"failed","reason",node}`. Called on the
    /// connection thread after the core answered. Without replication: no members.
    fn forward(&self, _op: &WriteOp) -> Vec<Value> {
        Vec::new()
    }

    /// Runs a `set_configuration` that succeeded here on every member (`replicated: true`);
    /// the same entries as `forward`.
    fn forward_configuration(&self, _body: &serde_json::Map<String, Value>) -> Vec<Value> {
        Vec::new()
    }
}

/// Harper v5's refusal of a confirmation count no peer set can meet.
pub fn no_recipients(db: &str, n: u64) -> OpError {
    OpError::bad_request(format!(
        "Cannot confirm replication to more nodes ({n}) than this node replicates database \"{db}\" to (0 node(s))"
    ))
}

pub struct Context {
    pub store: Store,
    pub shared: Arc<Shared>,
    pub core: CoreHandle,
    pub tokens: Arc<Tokens>,
    pub max_body: u64,
    pub authorize_local: bool,
    pub cluster: Option<Arc<dyn ClusterOps>>,
    pub certs: Option<Arc<super::certs::CertOps>>,
    pub admin: Option<Arc<super::admin::AdminOps>>,
    pub monitor: Monitor,
    /// Background jobs (bulk loads, exports, clean-ups).
    pub jobs: Option<crate::jobs::Jobs>,
}

/// What the monitoring endpoints need besides the rest of the context.
#[derive(Clone)]
pub struct Monitor {
    pub node_name: String,
    pub started_ms: u64,
    pub metrics: crate::config::Access,
    pub status_page: crate::config::Access,
    pub log_requests: bool,
}

pub struct HttpServer {
    server: Option<tiny_http::Server>,
    state: Arc<ServeState>,
}

/// Shared by the connection threads: whether the node is stopping, and how many requests are
/// being executed (stop waits for them).
#[derive(Default)]
struct ServeState {
    stopping: std::sync::atomic::AtomicBool,
    in_flight: std::sync::atomic::AtomicUsize,
}

/// One request being executed, for as long as it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(n: &'a std::sync::atomic::AtomicUsize) -> Self {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[derive(Clone)]
pub struct HttpOptions {
    pub max_connections: usize,
    /// Deadline for a request head (and, separately, its body) and timeout of each read/write.
    pub timeout: Duration,
    /// Bodies up to this size are received before the request is executed.
    pub max_body: usize,
    /// Most concurrent connections from one client address.
    pub max_connections_per_address: usize,
    /// Serve HTTPS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl HttpServer {
    /// Serves the operations API: thread-per-connection (each connection's own thread parses,
    /// authenticates, authorises and executes its requests, handing writes to the core), at
    /// most `max_connections` threads. Profiling showed a request spending a fifth of its CPU
    /// in context switches with a separate worker pool (connection thread → worker → core →
    /// worker); serving on the connection thread removes one hand-off per request.
    pub fn start(
        listener: TcpListener,
        opts: &HttpOptions,
        ctx: Arc<Context>,
    ) -> std::io::Result<HttpServer> {
        let conn = tiny_http::ConnectionOptions {
            read_timeout: Some(opts.timeout),
            write_timeout: Some(opts.timeout),
            nodelay: true,
            max_connections: opts.max_connections,
            // Bodies are read by the handler, after it has authenticated the request from its
            // headers (never before: an anonymous body must cost nothing). The server gives
            // each body one deadline, so a slow client holds only its own connection.
            eager_body_limit: 0,
            max_connections_per_ip: opts.max_connections_per_address,
            tls: opts.tls.clone(),
        };
        let state = Arc::new(ServeState::default());
        let handler_state = state.clone();
        let handler: tiny_http::RequestHandler = Arc::new(move |rq| {
            use std::sync::atomic::Ordering::SeqCst;
            // Counted by a guard: a panicking request must not leave the count up (stop would
            // then wait its full 30 s).
            let _counted = InFlight::enter(&handler_state.in_flight);
            if handler_state.stopping.load(SeqCst) {
                let _ = rq.respond(json_response(
                    503,
                    &json!({"error": "the node is shutting down"}),
                ));
            } else {
                handle(&ctx, rq);
            }
        });
        let server = tiny_http::Server::from_listener_with_handler(listener, conn, handler)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(HttpServer {
            server: Some(server),
            state,
        })
    }

    /// Stops accepting connections, answers new requests on open ones with 503, and waits
    /// (bounded) until the requests being executed have been answered.
    pub fn stop(mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.state.stopping.store(true, SeqCst);
        drop(self.server.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.state.in_flight.load(SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn json_response(status: u16, body: &Value) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    tiny_http::Response::from_data(bytes)
        .with_status_code(status)
        .with_header(content_type("application/json"))
        .with_header(server_header())
}

fn json_bytes_response(status: u16, bytes: Vec<u8>) -> tiny_http::ResponseBox {
    tiny_http::Response::from_data(bytes)
        .with_status_code(status)
        .with_header(content_type("application/json"))
        .with_header(server_header())
        .boxed()
}

/// The JSON array of a search's rows, serialised as they are read. The first
/// `BUFFERED_ROWS_BYTES` are produced before anything is sent, so an error found early still
/// gets a proper error answer; an error later can only cut the connection (the client sees a
/// truncated body, never a wrong one).
struct RowStream {
    rows: read::Rows,
    buf: Vec<u8>,
    pos: usize,
    first: bool,
    done: bool,
}

impl RowStream {
    fn start(rows: read::Rows) -> Result<RowStream, OpError> {
        let mut s = RowStream {
            rows,
            buf: vec![b'['],
            pos: 0,
            first: true,
            done: false,
        };
        while !s.done && s.buf.len() < BUFFERED_ROWS_BYTES {
            s.next_row()?;
        }
        Ok(s)
    }

    /// Appends the next row (or the closing bracket) to the buffer.
    fn next_row(&mut self) -> Result<(), OpError> {
        match self.rows.next() {
            Some(Ok(v)) => {
                if !self.first {
                    self.buf.push(b',');
                }
                self.first = false;
                serde_json::to_writer(&mut self.buf, &v)
                    .map_err(|e| OpError::internal(e.to_string()))?;
            }
            Some(Err(e)) => return Err(e),
            None => {
                self.buf.push(b']');
                self.done = true;
            }
        }
        Ok(())
    }
}

impl Read for RowStream {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.buf.clear();
            self.pos = 0;
            while !self.done && self.buf.len() < 64 * 1024 {
                if let Err(e) = self.next_row() {
                    log::error!("search failed while streaming its answer: {e}");
                    return Err(std::io::Error::other(e.to_string()));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn content_type(v: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(&b"Content-Type"[..], v.as_bytes()).unwrap_or_else(|_| {
        tiny_http::Header::from_bytes(&b"X-Skerry"[..], &b"1"[..]).expect("static header")
    })
}

fn server_header() -> tiny_http::Header {
    tiny_http::Header::from_bytes(&b"Server"[..], &b"Skerry"[..]).expect("static header")
}

/// Rows answered in one piece (with a Content-Length) when they fit in this; larger answers are
/// streamed (chunked), so a full-table search never holds the table in memory.
const BUFFERED_ROWS_BYTES: usize = 256 * 1024;

fn handle(ctx: &Context, mut rq: tiny_http::Request) {
    let started = std::time::Instant::now();
    let mut op = String::new();
    let result = process(ctx, &mut rq, &mut op);
    let status = match &result {
        Ok(_) => 200,
        Err(e) => e.status,
    };
    crate::obs::metrics().operation(
        if op.is_empty() { "invalid" } else { &op },
        status,
        started.elapsed().as_secs_f64(),
    );
    // The request log: at info when `logging.requests` is on, else at debug. The operation
    // name is the client's text only after it passed the metrics' interning rules.
    let level = if ctx.monitor.log_requests {
        log::Level::Info
    } else {
        log::Level::Debug
    };
    if log::log_enabled!(level) {
        let shown: String = op.chars().take(48).collect();
        log::log!(
            level,
            "{} {} {shown:?} from {:?}: {status} in {:.1} ms",
            rq.method(),
            rq.url().chars().take(128).collect::<String>(),
            rq.remote_addr().map(|a| a.ip()),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    let (status, body) = match result {
        Ok(Answer::Json(v)) => (200, v),
        Ok(Answer::Text(content, text)) => {
            let resp = tiny_http::Response::from_data(text.into_bytes())
                .with_status_code(200)
                .with_header(content_type(content))
                .with_header(server_header());
            if let Err(e) = rq.respond(resp) {
                log::debug!("could not send a response: {e}");
            }
            return;
        }
        Ok(Answer::Download(content, filename, reader)) => {
            let resp = tiny_http::Response::new(
                tiny_http::StatusCode(200),
                vec![
                    content_type(content),
                    server_header(),
                    tiny_http::Header::from_bytes(
                        &b"Content-Disposition"[..],
                        format!("attachment; filename=\"{filename}\"").as_bytes(),
                    )
                    .expect("file names are plain"),
                ],
                reader,
                None,
                None,
            );
            if let Err(e) = rq.respond(resp) {
                log::warn!("a download was cut short: {e}");
            }
            return;
        }
        Ok(Answer::Rows(rows)) => {
            let resp = match RowStream::start(rows) {
                Ok(stream) if stream.done => json_bytes_response(200, stream.buf),
                Ok(stream) => tiny_http::Response::new(
                    tiny_http::StatusCode(200),
                    vec![content_type("application/json"), server_header()],
                    Box::new(stream) as Box<dyn Read + Send>,
                    None,
                    None,
                )
                .boxed(),
                Err(e) => json_response(e.status, &e.body).boxed(),
            };
            if let Err(e) = rq.respond(resp) {
                log::debug!("could not send a response: {e}");
            }
            return;
        }
        Err(e) => (e.status, e.body),
    };
    let resp = match body {
        Value::String(text) if status == 200 && rq.url() != "/" => {
            tiny_http::Response::from_data(text.into_bytes())
                .with_status_code(200)
                .with_header(content_type("text/plain; charset=utf-8"))
                .with_header(server_header())
        }
        other => {
            let r = json_response(status, &other);
            // A browser opening the status page (or a scraper) is asked for credentials.
            if status == 401 && (op == "status" || op == "metrics") {
                r.with_header(
                    tiny_http::Header::from_bytes("WWW-Authenticate", "Basic realm=\"skerry\"")
                        .expect("static header"),
                )
            } else {
                r
            }
        }
    };
    if let Err(e) = rq.respond(resp) {
        log::debug!("could not send a response: {e}");
    }
}

fn header<'a>(rq: &'a tiny_http::Request, name: &str) -> Option<&'a str> {
    rq.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// How the sender of a request proved who it is, from the headers alone.
enum Caller {
    /// Credentials (Basic), an operation token, or `authorizeLocal`.
    Principal(Principal, Via),
    /// `Authorization: Bearer <refresh token>`: good for `refresh_operation_token` only.
    RefreshBearer(Principal),
    /// No `Authorization` header: only `create_authentication_tokens` with a user name and
    /// password in a small body can succeed.
    Anonymous,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Password,
    Token,
    Local,
}

/// `/health` fails when the core loop has not turned for this long (it ticks every second).
const CORE_STALE_MS: u64 = 10_000;

/// Largest body read from a request without credentials (its only use is
/// `create_authentication_tokens` with a user name and password).
const ANONYMOUS_BODY_LIMIT: u64 = 16 * 1024;

/// A successful answer: one JSON value, or the rows of a search (streamed when large).
enum Answer {
    Json(Value),
    Rows(read::Rows),
    /// A non-JSON document (metrics text, the status page).
    Text(&'static str, String),
    /// A streamed file download (content type, file name).
    Download(&'static str, String, Box<dyn Read + Send>),
}

fn process(ctx: &Context, rq: &mut tiny_http::Request, op: &mut String) -> Result<Answer, OpError> {
    let path = rq.url().split('?').next().unwrap_or("/").to_string();
    match (rq.method(), path.as_str()) {
        (tiny_http::Method::Get | tiny_http::Method::Head, "/metrics") => {
            op.push_str("metrics");
            monitor_access(ctx, rq, ctx.monitor.metrics)?;
            return Ok(Answer::Text(
                "text/plain; version=0.0.4; charset=utf-8",
                crate::obs::render(snapshot(ctx)),
            ));
        }
        (tiny_http::Method::Get | tiny_http::Method::Head, "/status") => {
            op.push_str("status");
            monitor_access(ctx, rq, ctx.monitor.status_page)?;
            return Ok(Answer::Text(
                "text/html; charset=utf-8",
                crate::obs::status::render(&snapshot(ctx), ctx.monitor.started_ms),
            ));
        }
        (tiny_http::Method::Get | tiny_http::Method::Head, "/ready") => {
            op.push_str("ready");
            return ready(ctx).map(Answer::Json);
        }
        (tiny_http::Method::Get | tiny_http::Method::Head, "/health") => {
            op.push_str("health");
            // Liveness means the core turns: it ticks every second.
            if !ctx.shared.core_alive(CORE_STALE_MS) {
                return Err(OpError::unavailable(
                    "Skerry is not healthy: the core thread has not run for over 10 s",
                ));
            }
            return Ok(Answer::Json(Value::String("Skerry is running.".into())));
        }
        (tiny_http::Method::Post, "/") => {}
        (tiny_http::Method::Get, "/") => {
            return Err(OpError::new(
                405,
                "Send operations with POST / and a JSON body",
            ))
        }
        _ => return Err(OpError::not_found("Not found")),
    }
    // Who is asking is settled from the headers before one byte of the body is read: missing
    // or wrong credentials cost the node a header parse, never a body.
    let caller = caller(ctx, rq).inspect_err(|_| op.push_str("unauthenticated"))?;
    let body_limit = match caller {
        Caller::Anonymous => ANONYMOUS_BODY_LIMIT.min(ctx.max_body),
        _ => ctx.max_body,
    };
    let body = match read_body(rq, body_limit) {
        Ok(b) => b,
        Err(_) if matches!(caller, Caller::Anonymous) => {
            return Err(OpError::unauthorized("Must login"))
        }
        Err(e) => return Err(e),
    };
    let body = super::body::parse(body, usize::try_from(ctx.max_body).unwrap_or(usize::MAX))?;
    let name = body
        .fields
        .get("operation")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    op.push_str(&name);

    let p = match caller {
        Caller::Principal(p, via) => (p, via),
        Caller::RefreshBearer(p) => {
            return match super::parse::parse(body)? {
                Operation::RefreshOperationToken {
                    refresh_token: None,
                } => Ok(json!({
                    "operation_token": issue(ctx, &p.username, TokenKind::Operation)?,
                })),
                Operation::RefreshOperationToken {
                    refresh_token: Some(t),
                } => refresh(ctx, &t),
                _ => Err(OpError::unauthorized("invalid token")),
            }
            .map(Answer::Json)
        }
        Caller::Anonymous => {
            return match super::parse::parse(body) {
                Ok(op) if op.is_unauthenticated() => execute_unauthenticated(ctx, op, rq),
                _ => Err(OpError::unauthorized("Must login")),
            }
            .map(Answer::Json)
        }
    };
    let (p, via) = p;

    // Cluster operations are parsed by the replication layer (they need its state).
    if let Some(cluster) = &ctx.cluster {
        if is_cluster_op(&name) {
            if let Some(r) = cluster.execute(&name, &body.fields, &p) {
                return r.map(Answer::Json);
            }
        }
    }

    if name == "get_backup" {
        if !p.is_super_user() {
            return Err(OpError::super_user_only("getBackup"));
        }
        return backup(ctx, &body.fields);
    }
    if let Some(admin) = &ctx.admin {
        if super::admin::is_admin_op(&name) {
            return admin
                .execute(ctx, &name, &body.fields, &p)
                .map(Answer::Json);
        }
    }
    if let Some(jobs) = &ctx.jobs {
        if super::jobs::is_job_op(&name) {
            return super::jobs::execute(ctx, jobs, &name, body.fields, &p).map(Answer::Json);
        }
    }
    if let Some(certs) = &ctx.certs {
        if super::certs::is_cert_op(&name) {
            return certs.execute(&name, &body.fields, &p).map(Answer::Json);
        }
    }

    let mut op = super::parse::parse(body)?;
    if let Operation::Write {
        confirm: confirm @ None,
        ..
    } = &mut op
    {
        // The body's `replicatedConfirmation` wins over the header form.
        if let Some(h) = header(rq, "x-replicate-to") {
            *confirm = replicate_to_confirm(h)?;
        }
    }
    if op.is_unauthenticated() {
        // Credentials in the body win over the header (Harper).
        return execute_unauthenticated(ctx, op, rq).map(Answer::Json);
    }
    if let Operation::CreateAuthenticationTokens { .. } = op {
        // Only credentials mint a token pair: a token must not renew itself forever.
        if via == Via::Token {
            return Err(OpError::unauthorized(
                "create_authentication_tokens needs credentials (Basic authentication, or username and password in the body), not a token",
            ));
        }
    }
    let catalog = ctx.shared.catalog.load();
    read::authorize(&p, &op.requirement(), &catalog)?;
    if let Operation::Write { op: w, .. } = &op {
        read::check_written_attributes(&p, &catalog, w)?;
    }
    if let Operation::Sql(plan) = op {
        use crate::sql::exec::{run, SqlAnswer};
        return match run(plan, &p, &ctx.store, &catalog, &ctx.core)? {
            SqlAnswer::Rows(rows) => Ok(Answer::Rows(rows)),
            SqlAnswer::Json(v) => Ok(Answer::Json(v)),
        };
    }
    if op.is_search() {
        let auth = ctx.shared.auth.load();
        return read::rows(&op, &p, &ctx.store, &catalog, &auth).map(Answer::Rows);
    }
    execute(ctx, op, &p).map(Answer::Json)
}

/// The caller as the headers say. `authorizeLocal` only applies to requests a web page cannot
/// forge: a JSON content type (which a cross-site form or `fetch` without CORS cannot send) and
/// no `Origin` header.
/// `get_backup`: streams a consistent backup of the whole node (a database alone could not
/// be restored without the catalog and users it depends on). The backup runs in its own
/// thread and waits while the client reads (a bounded channel), so a slow download holds
/// a few chunks, not the store.
fn backup(ctx: &Context, body: &serde_json::Map<String, Value>) -> Result<Answer, OpError> {
    if let Some(db) = body.get("database").or_else(|| body.get("schema")) {
        let db = db
            .as_str()
            .ok_or_else(|| OpError::bad_request("'database' must be a string"))?;
        if ctx.shared.catalog.load().database(db).is_none() {
            return Err(OpError::not_found(format!(
                "database '{db}' does not exist"
            )));
        }
    }
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(8);
    let store = ctx.store.clone();
    std::thread::Builder::new()
        .name("backup".into())
        .spawn(move || {
            let mut w = std::io::BufWriter::with_capacity(256 << 10, ChannelWriter(tx));
            match store.backup(&mut w) {
                Ok(s) => log::info!("backup streamed: {} entries, {} bytes", s.entries, s.bytes),
                Err(e) => log::warn!("backup stopped: {e}"),
            }
        })
        .map_err(|e| OpError::internal(format!("cannot start the backup: {e}")))?;
    let file = format!(
        "skerry-{}-{}.skerrybak",
        ctx.monitor.node_name.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
            "_"
        ),
        crate::util::time::now_ms()
    );
    Ok(Answer::Download(
        "application/octet-stream",
        file,
        Box::new(ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        }),
    ))
}

struct ChannelWriter(crossbeam_channel::Sender<Vec<u8>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(b.to_vec())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))?;
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct ChannelReader {
    rx: crossbeam_channel::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                // The backup thread finished (or failed: the file then lacks its trailer,
                // and a restore refuses it).
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Applies a monitoring endpoint's access setting: off is a 404; authenticated needs any
/// valid user (a browser is asked for Basic credentials).
fn monitor_access(
    ctx: &Context,
    rq: &tiny_http::Request,
    access: crate::config::Access,
) -> Result<(), OpError> {
    match access {
        crate::config::Access::Open => Ok(()),
        crate::config::Access::Off => Err(OpError::not_found("Not found")),
        crate::config::Access::Authenticated => match caller(ctx, rq)? {
            Caller::Principal(..) => Ok(()),
            _ => Err(OpError::unauthorized("Must login")),
        },
    }
}

/// Readiness: 200 only while the core turns and, when replication is configured, its
/// manager is running (for load balancers and orchestrators; `/health` is liveness).
fn ready(ctx: &Context) -> Result<Value, OpError> {
    let core = ctx.shared.core_alive(CORE_STALE_MS);
    let replication = ctx.cluster.as_ref().map_or(Ok(()), |c| c.ready());
    let body = json!({
        "ready": core && replication.is_ok(),
        "core": core,
        "replication": match &replication {
            Ok(()) => Value::Bool(true),
            Err(e) => Value::String(e.clone()),
        },
    });
    if core && replication.is_ok() {
        Ok(body)
    } else {
        let mut e = OpError::unavailable("not ready");
        e.body = body;
        Err(e)
    }
}

/// What the node holds now, for `/metrics` and `/status`.
fn snapshot(ctx: &Context) -> crate::obs::Snapshot {
    let catalog = ctx.shared.catalog.load();
    let mut tables = Vec::new();
    for (db, d) in &catalog.databases {
        for (name, t) in &d.tables {
            let stats = ctx.store.table_stats(t.id).unwrap_or_default();
            let (data, index) = ctx.store.table_disk_size(t.id).unwrap_or((0, 0));
            tables.push(crate::obs::TableSnap {
                database: db.clone(),
                table: name.clone(),
                records: stats.count,
                bytes: (data + index).max(stats.bytes),
            });
        }
    }
    let rss_kb: u64 = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    crate::obs::Snapshot {
        node: ctx.monitor.node_name.clone(),
        core_alive: ctx.shared.core_alive(CORE_STALE_MS),
        rss_bytes: rss_kb * 1024,
        connections: tiny_http::live_connections() as u64,
        tables,
        links: ctx.cluster.as_ref().map(|c| c.links()).unwrap_or_default(),
    }
}

fn caller(ctx: &Context, rq: &tiny_http::Request) -> Result<Caller, OpError> {
    let ip = rq.remote_addr().map(|a| a.ip());
    let auth = ctx.shared.auth.load();
    let now = crate::util::time::now_ms();
    let header_value = header(rq, "authorization")
        .map(str::trim)
        .filter(|h| !h.is_empty());
    let Some(h) = header_value else {
        if ctx.authorize_local && ip.is_some_and(|i| i.is_loopback()) {
            let json = header(rq, "content-type").is_some_and(|c| {
                c.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
            });
            if !json || header(rq, "origin").is_some() {
                return Err(OpError::new(
                    403,
                    "authentication.authorizeLocal only serves requests with Content-Type: application/json and no Origin header; send credentials otherwise",
                ));
            }
            let role = auth.roles.get(SUPER_USER_ROLE).cloned();
            return Ok(Caller::Principal(
                Principal {
                    username: "local".into(),
                    role,
                },
                Via::Local,
            ));
        }
        return Ok(Caller::Anonymous);
    };
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        let token = rest.trim();
        return match ctx.tokens.verify(token, TokenKind::Operation, now, &auth) {
            Ok(p) => Ok(Caller::Principal(p, Via::Token)),
            Err(e) => match ctx.tokens.verify(token, TokenKind::Refresh, now, &auth) {
                Ok(p) => Ok(Caller::RefreshBearer(p)),
                Err(_) => Err(e),
            },
        };
    }
    authenticate(Some(h), &auth, &ctx.tokens, now, ip).map(|p| Caller::Principal(p, Via::Password))
}

fn issue(ctx: &Context, username: &str, kind: TokenKind) -> Result<String, OpError> {
    let auth = ctx.shared.auth.load();
    let user = auth
        .users
        .get(username)
        .ok_or_else(|| OpError::unauthorized("invalid token"))?;
    Ok(ctx.tokens.issue(user, kind, crate::util::time::now_ms()))
}

fn refresh(ctx: &Context, refresh_token: &str) -> OpResult {
    let auth = ctx.shared.auth.load();
    let p = ctx.tokens.verify(
        refresh_token,
        TokenKind::Refresh,
        crate::util::time::now_ms(),
        &auth,
    )?;
    Ok(json!({ "operation_token": issue(ctx, &p.username, TokenKind::Operation)? }))
}

/// Names of the clustering operations (answered by `repl`).
pub fn is_cluster_op(name: &str) -> bool {
    matches!(
        name,
        "add_node"
            | "set_node"
            | "update_node"
            | "set_node_replication"
            | "remove_node"
            | "cluster_status"
            | "configure_cluster"
            | "cluster_set_routes"
            | "cluster_get_routes"
            | "cluster_delete_routes"
            | "add_node_back"
            | "remove_node_back"
            | "cluster_verify"
    )
}

/// Reads the body (after authentication), refusing more than `limit` bytes: a declared
/// length over it is answered without reading; the vendored server gives the whole body one
/// deadline, so a trickling client cannot hold the connection either.
fn read_body(rq: &mut tiny_http::Request, limit: u64) -> Result<Vec<u8>, OpError> {
    let too_large = || {
        OpError::new(
            413,
            format!("Request body is larger than the limit of {limit} bytes"),
        )
    };
    if rq.body_length().is_some_and(|n| n as u64 > limit) {
        // Answer without reading: the vendored server closes the connection instead of
        // draining a huge body.
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(rq.body_length().unwrap_or(0).min(1 << 20));
    rq.as_reader()
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| OpError::bad_request(format!("cannot read the request body: {e}")))?;
    if body.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(body)
}

/// `create_authentication_tokens` with a user name and password in the body.
fn execute_unauthenticated(ctx: &Context, op: Operation, rq: &tiny_http::Request) -> OpResult {
    let Operation::CreateAuthenticationTokens { username, password } = op else {
        return Err(OpError::unauthorized("Must login"));
    };
    // Half a pair of credentials is a failed login (Harper: `invalid credentials`).
    let (Some(u), Some(pw)) = (username, password) else {
        return Err(OpError::unauthorized("invalid credentials"));
    };
    let auth = ctx.shared.auth.load();
    let ip = rq.remote_addr().map(|a| a.ip());
    if super::auth::check_credentials(&auth, &u, &pw, ip).is_none() {
        return Err(OpError::unauthorized("invalid credentials"));
    }
    match auth.users.get(&u) {
        Some(user) if user.active => {
            let now = crate::util::time::now_ms();
            Ok(json!({
                "operation_token": ctx.tokens.issue(user, TokenKind::Operation, now),
                "refresh_token": ctx.tokens.issue(user, TokenKind::Refresh, now),
            }))
        }
        _ => Err(OpError::unauthorized("invalid credentials")),
    }
}

/// Harper 4.7's write answers carry exactly `message` and the hashes (captured: no `txn_time`,
/// no `new_attributes`, even when a write adds attributes). The core always reports both
/// (they cost nothing to compute); they reach the client only when it asked with
/// `"write_details": true`.
/// The version of the transaction a record write's answer reports, if it wrote anything
/// (`txn_time` is the version in milliseconds with the counter as an exact binary fraction).
fn written_version(answer: &Value) -> Option<u64> {
    let wrote = [
        "inserted_hashes",
        "update_hashes",
        "upserted_hashes",
        "deleted_hashes",
    ]
    .iter()
    .any(|k| answer[k].as_array().is_some_and(|a| !a.is_empty()));
    let t = answer["txn_time"].as_f64()?;
    wrote.then(|| crate::core::hlc::from_ms_f64(t))
}

/// The confirmation count of Harper's `X-Replicate-To: <replicateTo>;confirm=<n>` header.
/// The leading `replicateTo` part (record residency) is ignored: every peer gets every
/// record here. None when the header asks for no confirmation.
fn replicate_to_confirm(h: &str) -> Result<Option<u64>, OpError> {
    let mut confirm = None;
    for part in h.split(';').skip(1) {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("confirm") {
            confirm = Some(v.trim().parse::<u64>().map_err(|_| {
                OpError::bad_request("X-Replicate-To: 'confirm' must be a non-negative integer")
            })?);
        }
    }
    Ok(confirm)
}

fn write_answer(mut answer: Value, details: bool) -> Value {
    if !details {
        if let Some(o) = answer.as_object_mut() {
            o.remove("txn_time");
            o.remove("new_attributes");
        }
    }
    answer
}

fn execute(ctx: &Context, op: Operation, p: &Principal) -> OpResult {
    let actor = Actor::User(p.username.clone());
    match op {
        Operation::Write {
            op,
            details,
            confirm,
            forward,
        } => {
            let forward = forward.then(|| op.clone());
            let wait = match (&op, confirm) {
                (WriteOp::Records { database, .. } | WriteOp::Delete { database, .. }, Some(n))
                    if n > 0 =>
                {
                    Some((database.clone(), n))
                }
                _ => None,
            };
            if let Some((db, n)) = &wait {
                // Refused before anything is written, as Harper v5 does.
                if !ctx.cluster.as_ref().is_some_and(|c| c.replicates()) {
                    return Err(no_recipients(db, *n));
                }
            }
            let answer = ctx.core.execute(op, actor)?;
            // The core has committed and moved on; only this connection thread waits. A
            // request that wrote nothing has no transaction for peers to confirm.
            if let (Some((db, n)), Some(version)) = (wait, written_version(&answer)) {
                if let Some(c) = &ctx.cluster {
                    c.confirm(&db, version, n)?;
                }
            }
            let mut answer = write_answer(answer, details);
            if let Some(op) = forward {
                // Harper adds the members' answers to its own (`replicated`), even when none.
                let replicated = ctx.cluster.as_ref().map(|c| c.forward(&op));
                if let Some(o) = answer.as_object_mut() {
                    o.insert(
                        "replicated".into(),
                        Value::Array(replicated.unwrap_or_default()),
                    );
                }
            }
            Ok(answer)
        }
        Operation::AddUser {
            username,
            password,
            role,
            active,
        } => ctx.core.execute(
            WriteOp::AddUser {
                username,
                password_hash: hash_password(&password)?,
                role,
                active,
            },
            actor,
        ),
        Operation::AlterUser {
            username,
            password,
            role,
            active,
        } => ctx.core.execute(
            WriteOp::AlterUser {
                username,
                password_hash: password.as_deref().map(hash_password).transpose()?,
                role,
                active,
            },
            actor,
        ),
        Operation::CreateAuthenticationTokens { .. } => {
            // No credentials in the body: tokens for the caller authenticated by password.
            Ok(json!({
                "operation_token": issue(ctx, &p.username, TokenKind::Operation)?,
                "refresh_token": issue(ctx, &p.username, TokenKind::Refresh)?,
            }))
        }
        Operation::RefreshOperationToken { refresh_token } => match refresh_token {
            Some(t) => refresh(ctx, &t),
            None => Err(OpError::bad_request("'refresh_token' is required")),
        },
        read_op => {
            let catalog = ctx.shared.catalog.load();
            let auth = ctx.shared.auth.load();
            read::execute(&read_op, p, &ctx.store, &catalog, &auth)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confirm_count_of_x_replicate_to_is_read_and_checked() {
        assert_eq!(replicate_to_confirm("2;confirm=1").unwrap(), Some(1));
        assert_eq!(replicate_to_confirm("2 ; Confirm = 3").unwrap(), Some(3));
        assert_eq!(replicate_to_confirm("n1,n2;confirm=0").unwrap(), Some(0));
        // No confirm part: nothing to wait for.
        assert_eq!(replicate_to_confirm("2").unwrap(), None);
        assert_eq!(replicate_to_confirm("confirm=2").unwrap(), None);
        for bad in ["2;confirm=x", "2;confirm=-1", "2;confirm=", "2;confirm=1.5"] {
            let e = replicate_to_confirm(bad).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
        }
    }

    #[test]
    fn only_a_write_that_wrote_something_has_a_version_to_confirm() {
        let t = crate::core::hlc::to_ms_f64(crate::core::hlc::from_ms(1_000) + 5);
        let wrote = json!({"message":"upserted 1 of 1 records","upserted_hashes":[1],"txn_time":t});
        assert_eq!(
            written_version(&wrote),
            Some(crate::core::hlc::from_ms(1_000) + 5)
        );
        let skipped = json!({"message":"inserted 0 of 1 records","inserted_hashes":[],"skipped_hashes":[1],"txn_time":t});
        assert_eq!(written_version(&skipped), None);
        let deleted = json!({"deleted_hashes":["a"],"skipped_hashes":[],"txn_time":t});
        assert!(written_version(&deleted).is_some());
    }
}
