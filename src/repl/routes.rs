//! `replication.routes`: validation, comparison by value, and the routes operations
//! (`cluster_set_routes`, `cluster_get_routes`, `cluster_delete_routes`).
//!
//! Routes are peers this node dials at start. Unlike Harper, a route set here is dialled at
//! once and a deleted one dropped at once (no restart), and two routes are the same route when
//! they name the same host and port, whatever their form (`"h"`, `"ws://h:9933"`,
//! `{hostname: h, port: 9933}`). Harper's comparison treats any two objects with the same port
//! and no `host` as equal; that is not copied. The list is persisted in the config file's
//! `replication.routes` (atomic rewrite, every other line and comment kept).

use super::policy::{parse_replicates, parse_subscriptions};
use super::{parse_url, ReplCtx};
use crate::core::error::{OpError, OpResult};
use serde_json::{json, Map, Value};

/// The identity of a route: host and port.
pub fn route_key(route: &Value, default_port: u16) -> Option<(String, u16)> {
    match route {
        Value::String(s) => {
            let (host, port) = parse_url(s)?;
            let explicit =
                s.contains("://") || s.rsplit_once(':').is_some_and(|(h, _)| !h.contains(':'));
            Some((host, if explicit { port } else { default_port }))
        }
        Value::Object(o) => {
            let host = o
                .get("hostname")
                .or_else(|| o.get("host"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    o.get("url")
                        .and_then(Value::as_str)
                        .and_then(parse_url)
                        .map(|(h, _)| h)
                })?;
            let port = o
                .get("port")
                .and_then(|p| {
                    p.as_u64()
                        .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
                })
                .and_then(|p| u16::try_from(p).ok())
                .or_else(|| {
                    o.get("url")
                        .and_then(Value::as_str)
                        .and_then(parse_url)
                        .map(|(_, p)| p)
                })
                .unwrap_or(default_port);
            Some((host, port))
        }
        _ => None,
    }
}

/// Validates one route; errors name the field (`'routes[1].port' must be a number`).
pub fn validate_route(route: &Value, field: &str) -> Result<(), String> {
    match route {
        Value::String(s) => {
            if s.trim().is_empty() || parse_url(s).is_none() {
                return Err(format!(
                    "'{field}' must be a host name, host:port or ws(s)://host:port, got '{s}'"
                ));
            }
            Ok(())
        }
        Value::Object(o) => {
            let host = o.get("hostname").or_else(|| o.get("host"));
            match host {
                Some(Value::String(h)) if !h.is_empty() => {}
                Some(Value::String(_)) | None | Some(Value::Null) => {
                    if o.get("url")
                        .and_then(Value::as_str)
                        .and_then(parse_url)
                        .is_none()
                    {
                        return Err(format!("'{field}.hostname' is required"));
                    }
                }
                Some(_) => return Err(format!("'{field}.hostname' must be a string")),
            }
            if let Some(p) = o.get("port").filter(|p| !p.is_null()) {
                let ok = p
                    .as_u64()
                    .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
                    .is_some_and(|p| p <= u64::from(u16::MAX));
                if !ok {
                    return Err(format!("'{field}.port' must be a port number"));
                }
            }
            if let Some(v) = o.get("replicates").filter(|v| !v.is_null()) {
                parse_replicates(v, &format!("{field}.replicates"))?;
            }
            if let Some(v) = o.get("subscriptions").filter(|v| !v.is_null()) {
                parse_subscriptions(v, &format!("{field}.subscriptions"))?;
            }
            if let Some(v) = o.get("shard").filter(|v| !v.is_null()) {
                if !v.is_number() {
                    return Err(format!("'{field}.shard' must be a number"));
                }
            }
            if let Some(v) = o.get("startTime").filter(|v| !v.is_null()) {
                let ok = v.is_u64()
                    || v.as_str()
                        .and_then(crate::util::time::parse_iso8601)
                        .is_some();
                if !ok {
                    return Err(format!(
                        "'{field}.startTime' must be an ISO 8601 UTC timestamp or epoch milliseconds"
                    ));
                }
            }
            if let Some(v) = o.get("revokedCertificates").filter(|v| !v.is_null()) {
                if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                    return Err(format!(
                        "'{field}.revokedCertificates' must be an array of strings"
                    ));
                }
            }
            Ok(())
        }
        _ => Err(format!("'{field}' must be a string or an object")),
    }
}

/// The validated `routes` field of a request.
fn request_routes(body: &Map<String, Value>) -> Result<Vec<Value>, OpError> {
    let routes = match body.get("routes") {
        None | Some(Value::Null) => return Err(OpError::bad_request("'routes' is required")),
        Some(Value::Array(r)) => r.clone(),
        Some(_) => return Err(OpError::bad_request("'routes' must be one of [array]")),
    };
    for (i, r) in routes.iter().enumerate() {
        validate_route(r, &format!("routes[{i}]")).map_err(OpError::bad_request)?;
    }
    Ok(routes)
}

/// One change of the routes: `edit` gets the current routes and changes them; the result is
/// persisted in the config file (if the node was started with one) and applied now (the
/// manager dials new routes and drops deleted ones). The routes stay locked from the read to
/// the write, so two concurrent changes cannot lose one another (each was a read, then a
/// write of a copy, before).
fn edit<R>(ctx: &ReplCtx, edit: impl FnOnce(&mut Vec<Value>) -> R) -> Result<R, OpError> {
    let (answer, changed) = {
        let mut routes = ctx.routes.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = routes.clone();
        let answer = edit(&mut next);
        let changed = next != *routes;
        if changed {
            if let Some(path) = &ctx.cfg.config_path {
                crate::config::routes_file::write_routes(path, &next).map_err(|e| {
                    OpError::internal(format!(
                        "cannot write replication.routes to {}: {e}",
                        path.display()
                    ))
                })?;
            } else {
                log::warn!(
                    "routes changed on a node started without a config file: they last until restart"
                );
            }
            *routes = next;
        }
        (answer, changed)
    };
    // After the lock is released: the manager takes it to reload.
    if changed {
        ctx.reload_sync();
    }
    Ok(answer)
}

/// The configured routes that lead to `host` (and `port`, when given): the routes that make
/// it a member even without a hdb_nodes row.
pub fn routes_to(ctx: &ReplCtx, host: &str, port: Option<u16>) -> Vec<Value> {
    let default_port = ctx.cfg.default_port();
    ctx.routes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|r| {
            route_key(r, default_port)
                .is_some_and(|(h, p)| h == host && port.is_none_or(|want| want == p))
        })
        .cloned()
        .collect()
}

/// Deletes `gone` (routes as [`routes_to`] returned them) from the routes and the config
/// file, as `cluster_delete_routes` would (remove_node of a peer known by a route).
pub fn remove_routes(ctx: &ReplCtx, gone: &[Value]) -> Result<(), OpError> {
    if gone.is_empty() {
        return Ok(());
    }
    edit(ctx, |routes| routes.retain(|r| !gone.contains(r)))
}

pub fn set_routes(ctx: &ReplCtx, body: &Map<String, Value>) -> OpResult {
    let requested = request_routes(body)?;
    let port = ctx.cfg.default_port();
    let (set, skipped) = edit(ctx, |routes| {
        let (mut set, mut skipped) = (Vec::new(), Vec::new());
        for r in requested {
            let key = route_key(&r, port);
            if routes.iter().any(|e| route_key(e, port) == key) {
                skipped.push(r);
            } else {
                routes.push(r.clone());
                set.push(r);
            }
        }
        (set, skipped)
    })?;
    Ok(json!({"message": "cluster routes successfully set", "set": set, "skipped": skipped}))
}

pub fn delete_routes(ctx: &ReplCtx, body: &Map<String, Value>) -> OpResult {
    let requested = request_routes(body)?;
    let port = ctx.cfg.default_port();
    let keys: Vec<_> = requested.iter().map(|r| route_key(r, port)).collect();
    let deleted = edit(ctx, |routes| {
        let (deleted, kept): (Vec<Value>, Vec<Value>) = std::mem::take(routes)
            .into_iter()
            .partition(|e| keys.contains(&route_key(e, port)));
        *routes = kept;
        deleted
    })?;
    // `skipped`: the requested routes that matched nothing (what the documentation describes;
    // Harper 4.7 lists the routes it kept there instead).
    let skipped: Vec<Value> = requested
        .into_iter()
        .filter(|r| {
            !deleted
                .iter()
                .any(|d| route_key(d, port) == route_key(r, port))
        })
        .collect();
    Ok(
        json!({"message": "cluster routes successfully deleted", "deleted": deleted, "skipped": skipped}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_compare_by_host_and_port_whatever_their_form() {
        let same = [
            json!("127.0.0.3"),
            json!("127.0.0.3:9933"),
            json!("ws://127.0.0.3:9933"),
            json!({"hostname": "127.0.0.3", "port": 9933}),
            json!({"host": "127.0.0.3"}),
            json!({"hostname": "127.0.0.3", "port": "9933"}),
        ];
        for a in &same {
            for b in &same {
                assert_eq!(route_key(a, 9933), route_key(b, 9933), "{a} vs {b}");
            }
        }
        // Harper's quirk: objects with the same port and different hostnames are NOT equal.
        assert_ne!(
            route_key(&json!({"hostname": "a", "port": 1}), 9933),
            route_key(&json!({"hostname": "b", "port": 1}), 9933)
        );
        assert_ne!(
            route_key(&json!("h:1"), 9933),
            route_key(&json!("h:2"), 9933)
        );
    }

    /// (route, error or None)
    #[test]
    fn route_validation_table() {
        let cases = [
            (json!("127.0.0.2"), None),
            (
                json!({"hostname": "h", "port": 9933, "replicates": {"sends": true, "receives": false}}),
                None,
            ),
            (
                json!(""),
                Some("'routes[0]' must be a host name, host:port or ws(s)://host:port, got ''"),
            ),
            (json!(5), Some("'routes[0]' must be a string or an object")),
            (json!({"port": 1}), Some("'routes[0].hostname' is required")),
            (
                json!({"hostname": 1}),
                Some("'routes[0].hostname' must be a string"),
            ),
            (
                json!({"hostname": "h", "port": "x"}),
                Some("'routes[0].port' must be a port number"),
            ),
            (
                json!({"hostname": "h", "port": 70000}),
                Some("'routes[0].port' must be a port number"),
            ),
            (
                json!({"hostname": "h", "replicates": "yes"}),
                Some(
                    "'routes[0].replicates' must be a boolean or an object with sends and receives",
                ),
            ),
            (
                json!({"hostname": "h", "shard": "1"}),
                Some("'routes[0].shard' must be a number"),
            ),
            (
                json!({"hostname": "h", "startTime": "yesterday"}),
                Some(
                    "'routes[0].startTime' must be an ISO 8601 UTC timestamp or epoch milliseconds",
                ),
            ),
            (
                json!({"hostname": "h", "subscriptions": [{"database": "d"}]}),
                Some("'routes[0].subscriptions[0].table' is required"),
            ),
        ];
        for (route, want) in cases {
            assert_eq!(
                validate_route(&route, "routes[0]").err().as_deref(),
                want,
                "{route}"
            );
        }
    }
}
