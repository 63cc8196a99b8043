//! The HTTP listener: a vendored, hardened tiny_http server and a fixed pool of worker threads.
//!
//! Harper's transport: `POST /` with a JSON operation, Basic or Bearer auth, compact JSON
//! answers with `Content-Type: application/json`, errors as `{"error": "..."}`. `GET /health`
//! answers for load balancers. Limits (body size, connections, timeouts) come from the config.

use super::auth::{authenticate, hash_password, TokenKind, Tokens};
use super::parse::{self, Operation};
use super::read;
use crate::core::auth::{Principal, SUPER_USER_ROLE};
use crate::core::error::{OpError, OpResult};
use crate::core::op::WriteOp;
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
}

pub struct Context {
    pub store: Store,
    pub shared: Arc<Shared>,
    pub core: CoreHandle,
    pub tokens: Tokens,
    pub max_body: u64,
    pub authorize_local: bool,
    pub cluster: Option<Arc<dyn ClusterOps>>,
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

pub struct HttpOptions {
    pub max_connections: usize,
    /// Deadline for a request head (and, separately, its body) and timeout of each read/write.
    pub timeout: Duration,
    /// Bodies up to this size are received before the request is executed.
    pub max_body: usize,
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
            // Every acceptable body is received before the request is executed, within a
            // deadline: slow or silent clients hold only their own connection's thread.
            eager_body_limit: opts.max_body,
        };
        let state = Arc::new(ServeState::default());
        let handler_state = state.clone();
        let handler: tiny_http::RequestHandler = Arc::new(move |rq| {
            use std::sync::atomic::Ordering::SeqCst;
            handler_state.in_flight.fetch_add(1, SeqCst);
            if handler_state.stopping.load(SeqCst) {
                let _ = rq.respond(json_response(
                    503,
                    &json!({"error": "the node is shutting down"}),
                ));
            } else {
                handle(&ctx, rq);
            }
            handler_state.in_flight.fetch_sub(1, SeqCst);
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

fn content_type(v: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(&b"Content-Type"[..], v.as_bytes()).unwrap_or_else(|_| {
        tiny_http::Header::from_bytes(&b"X-Skerry"[..], &b"1"[..]).expect("static header")
    })
}

fn server_header() -> tiny_http::Header {
    tiny_http::Header::from_bytes(&b"Server"[..], &b"Skerry"[..]).expect("static header")
}

fn handle(ctx: &Context, mut rq: tiny_http::Request) {
    let (status, body) = match process(ctx, &mut rq) {
        Ok(v) => (200, v),
        Err(e) => (e.status, e.body),
    };
    let resp = match body {
        Value::String(text) if status == 200 && rq.url() != "/" => {
            tiny_http::Response::from_data(text.into_bytes())
                .with_status_code(200)
                .with_header(content_type("text/plain; charset=utf-8"))
                .with_header(server_header())
        }
        other => json_response(status, &other),
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

fn process(ctx: &Context, rq: &mut tiny_http::Request) -> OpResult {
    let path = rq.url().split('?').next().unwrap_or("/").to_string();
    match (rq.method(), path.as_str()) {
        (tiny_http::Method::Get, "/health") => {
            return Ok(Value::String("Skerry is running.".into()))
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
    let body = read_body(ctx, rq)?;
    let obj = parse_json(&body)?;
    let loopback = rq.remote_addr().is_some_and(|a| a.ip().is_loopback());
    let auth_header = header(rq, "authorization").map(str::to_string);
    let name = obj.get("operation").and_then(Value::as_str).unwrap_or("");

    // Cluster operations are parsed by the replication layer (they need its state).
    if let Some(cluster) = &ctx.cluster {
        if is_cluster_op(name) {
            let p = principal(ctx, auth_header.as_deref(), loopback)?;
            if let Some(r) = cluster.execute(name, &obj, &p) {
                return r;
            }
        }
    }

    let op = parse::parse(obj)?;
    if op.is_unauthenticated() {
        return execute_unauthenticated(ctx, op);
    }
    let p = principal(ctx, auth_header.as_deref(), loopback)?;
    let catalog = ctx.shared.catalog.load();
    read::authorize(&p, &op.requirement(), &catalog)?;
    execute(ctx, op, &p)
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
    )
}

fn principal(
    ctx: &Context,
    auth_header: Option<&str>,
    loopback: bool,
) -> Result<Principal, OpError> {
    let auth = ctx.shared.auth.load();
    if ctx.authorize_local && loopback && auth_header.is_none() {
        let role = auth.roles.get(SUPER_USER_ROLE).cloned();
        return Ok(Principal {
            username: "local".into(),
            role,
        });
    }
    authenticate(auth_header, &auth, &ctx.tokens, crate::util::time::now_ms())
}

fn read_body(ctx: &Context, rq: &mut tiny_http::Request) -> Result<Vec<u8>, OpError> {
    let too_large = || {
        OpError::new(
            413,
            format!(
                "Request body is larger than the limit of {} bytes",
                ctx.max_body
            ),
        )
    };
    if rq.body_length().is_some_and(|n| n as u64 > ctx.max_body) {
        // Answer without reading: the vendored server closes the connection instead of
        // draining a huge body.
        return Err(too_large());
    }
    let mut body = Vec::new();
    rq.as_reader()
        .take(ctx.max_body + 1)
        .read_to_end(&mut body)
        .map_err(|e| OpError::bad_request(format!("cannot read the request body: {e}")))?;
    if body.len() as u64 > ctx.max_body {
        return Err(too_large());
    }
    Ok(body)
}

fn parse_json(body: &[u8]) -> Result<serde_json::Map<String, Value>, OpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(OpError::bad_request(
            "Body cannot be empty when content-type is set to 'application/json'",
        ));
    }
    // serde_json refuses nesting deeper than 128 levels and invalid UTF-8 with an error, so a
    // hostile body can neither overflow the stack nor smuggle bytes into stored strings.
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(OpError::bad_request("Invalid JSON.")),
        Err(e) => Err(OpError::bad_request(format!("Invalid JSON: {e}"))),
    }
}

fn execute_unauthenticated(ctx: &Context, op: Operation) -> OpResult {
    let now = crate::util::time::now_ms();
    match op {
        Operation::CreateAuthenticationTokens {
            username: Some(u),
            password: Some(pw),
        } => {
            let auth = ctx.shared.auth.load();
            if super::auth::check_credentials(&auth, &u, &pw).is_none() {
                return Err(OpError::unauthorized("invalid credentials"));
            }
            if auth.users.get(&u).is_some_and(|user| !user.active) {
                return Err(OpError::unauthorized(
                    "Cannot complete request: User is inactive",
                ));
            }
            Ok(json!({
                "operation_token": ctx.tokens.issue(&u, TokenKind::Operation, now),
                "refresh_token": ctx.tokens.issue(&u, TokenKind::Refresh, now),
            }))
        }
        Operation::RefreshOperationToken { refresh_token } => {
            let user = ctx.tokens.verify(&refresh_token, TokenKind::Refresh, now)?;
            let auth = ctx.shared.auth.load();
            match auth.users.get(&user) {
                Some(u) if u.active => Ok(json!({
                    "operation_token": ctx.tokens.issue(&user, TokenKind::Operation, now),
                })),
                _ => Err(OpError::unauthorized("invalid token")),
            }
        }
        _ => Err(OpError::internal("not an unauthenticated operation")),
    }
}

fn execute(ctx: &Context, op: Operation, p: &Principal) -> OpResult {
    match op {
        Operation::Write(w) => ctx.core.execute(w),
        Operation::AddUser {
            username,
            password,
            role,
            active,
        } => ctx.core.execute(WriteOp::AddUser {
            username,
            password_hash: hash_password(&password)?,
            role,
            active,
        }),
        Operation::AlterUser {
            username,
            password,
            role,
            active,
        } => ctx.core.execute(WriteOp::AlterUser {
            username,
            password_hash: password.as_deref().map(hash_password).transpose()?,
            role,
            active,
        }),
        Operation::CreateAuthenticationTokens { .. } => {
            // No credentials in the body: tokens for the caller authenticated by header.
            let now = crate::util::time::now_ms();
            Ok(json!({
                "operation_token": ctx.tokens.issue(&p.username, TokenKind::Operation, now),
                "refresh_token": ctx.tokens.issue(&p.username, TokenKind::Refresh, now),
            }))
        }
        read_op => {
            let catalog = ctx.shared.catalog.load();
            let auth = ctx.shared.auth.load();
            read::execute(&read_op, p, &ctx.store, &catalog, &auth)
        }
    }
}
