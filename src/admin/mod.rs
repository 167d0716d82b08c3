//! The admin listener: hipache-api's endpoints ([`api`]), `GET /metrics` (Prometheus text) and
//! `GET /status` (a JSON health summary), on its own socket, served by the control thread's runtime.
//!
//! Authentication: when `admin.key` is set, every call needs it, as the `api_key` parameter
//! (hipache-api's way) or as `Authorization: Bearer <key>`, compared in constant time. `/metrics` and
//! `/status` need it too unless `admin.protectMetrics` is false. Without a key everything is open,
//! which is why the listener is on the loopback interface unless configured otherwise.
//!
//! This module never runs on a worker thread and never blocks one: it reads the workers' metric slots
//! (atomics) and talks to Redis through the control runtime's own connections.

pub mod api;
pub mod http;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};
use monoio::net::{TcpListener, TcpStream};

use crate::config::{Config, DriverConfig};
use crate::healthcheck::Checker;
use crate::metrics::{Gauge, Metrics};
use api::ApiStore;
use http::{ReadError, Request, Response};

/// Most admin connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;

/// A worker whose heartbeat is older than this is reported as down.
const HEARTBEAT_STALE_SECS: u64 = 2;

/// What the admin handlers need.
pub struct AdminCtx {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// `None` with the file driver: the frontend endpoints answer 501.
    pub store: Option<ApiStore>,
    pub checker: Option<Rc<Checker>>,
    connections: std::cell::Cell<usize>,
}

impl AdminCtx {
    pub fn new(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        store: Option<ApiStore>,
        checker: Option<Rc<Checker>>,
    ) -> AdminCtx {
        AdminCtx {
            config,
            metrics,
            store,
            checker,
            connections: std::cell::Cell::new(0),
        }
    }
}

/// Accepts admin connections forever (the task ends with its runtime).
pub async fn serve(listener: TcpListener, ctx: Rc<AdminCtx>) {
    let mut error_logged = false;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                error_logged = false;
                if ctx.connections.get() >= MAX_CONNECTIONS {
                    debug!("admin: too many connections; closing the one from {peer}");
                    continue;
                }
                let _ = stream.set_nodelay(true);
                ctx.connections.set(ctx.connections.get() + 1);
                let ctx = ctx.clone();
                crate::task::spawn(crate::task::OnPanic::EndTask, async move {
                    serve_connection(stream, &ctx).await;
                    ctx.connections.set(ctx.connections.get().saturating_sub(1));
                });
            }
            Err(e) => {
                if !error_logged {
                    warn!("admin: accept failed: {e}");
                    error_logged = true;
                }
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_connection(mut stream: TcpStream, ctx: &AdminCtx) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let req = match http::read_request(&mut stream, &mut buf).await {
            Ok(r) => r,
            Err(ReadError::Gone) => return,
            Err(ReadError::Answer(resp)) => {
                if http::write_response(&mut stream, resp, false, false).await {
                    http::linger(&mut stream).await;
                }
                return;
            }
        };
        let resp = handle(ctx, &req).await;
        if !http::write_response(&mut stream, resp, req.head_only, req.keep_alive).await
            || !req.keep_alive
        {
            return;
        }
    }
}

/// The endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics,
    Status,
    Frontends,
    Frontend,
    FrontendBackend,
    Flush,
    Index,
}

impl Route {
    fn of(segments: &[String]) -> Option<Route> {
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        match s.as_slice() {
            [] => Some(Route::Index),
            ["metrics"] => Some(Route::Metrics),
            ["status"] => Some(Route::Status),
            ["frontends"] => Some(Route::Frontends),
            ["frontends", name] if !name.is_empty() => Some(Route::Frontend),
            ["frontends", name, "backend"] if !name.is_empty() => Some(Route::FrontendBackend),
            ["flush"] => Some(Route::Flush),
            _ => None,
        }
    }

    fn methods(self) -> &'static [&'static str] {
        match self {
            Route::Metrics | Route::Status | Route::Index => &["GET", "HEAD"],
            Route::Frontends => &["GET", "POST"],
            Route::Frontend => &["GET", "POST", "DELETE"],
            Route::FrontendBackend => &["DELETE"],
            Route::Flush => &["POST"],
        }
    }

    fn needs_store(self) -> bool {
        matches!(
            self,
            Route::Frontends | Route::Frontend | Route::FrontendBackend | Route::Flush
        )
    }
}

async fn handle(ctx: &AdminCtx, req: &Request) -> Response {
    let route = Route::of(&req.segments);
    let open = matches!(route, Some(Route::Metrics | Route::Status))
        && ctx
            .config
            .admin
            .as_ref()
            .is_some_and(|a| !a.protect_metrics);
    if !open {
        if let Err(r) = authorize(ctx, req) {
            return r;
        }
    }
    let Some(route) = route else {
        return Response::error(404, format!("No such endpoint: {}", req.path));
    };
    let method = req.method.as_str();
    if !route.methods().contains(&method) {
        return Response::error(
            405,
            format!(
                "Method {method} is not allowed on {}; use {}",
                req.path,
                route.methods().join(" or ")
            ),
        )
        .with_header("Allow", route.methods().join(", "));
    }
    if route.needs_store() {
        let Some(store) = &ctx.store else {
            return Response::error(
                501,
                "The admin API edits routes in Redis, and this proxy uses the file driver: edit the routes file instead (it is reloaded on change)",
            );
        };
        let name = req.segments.get(1).map(String::as_str).unwrap_or("");
        return match (route, method) {
            (Route::Frontends, "GET") => store.list().await,
            (Route::Frontends, _) => store.create(req).await,
            (Route::Frontend, "GET") => store.backends(name).await,
            (Route::Frontend, "POST") => store.append(name, req).await,
            (Route::Frontend, _) => store.delete(name).await,
            (Route::FrontendBackend, _) => store.remove_backend(name, req).await,
            _ => store.flush().await,
        };
    }
    match route {
        Route::Metrics => metrics(ctx),
        Route::Status => status(ctx),
        _ => index(),
    }
}

/// Constant-time equality (the time depends on the lengths only).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

fn authorize(ctx: &AdminCtx, req: &Request) -> Result<(), Response> {
    let Some(key) = ctx.config.admin.as_ref().and_then(|a| a.key.as_deref()) else {
        return Ok(());
    };
    let offered: Vec<&str> = req
        .param("api_key")
        .into_iter()
        .chain(req.bearer.as_deref())
        .filter(|k| !k.is_empty())
        .collect();
    let unauthorized = |m: &str| {
        Response::error(401, m).with_header("WWW-Authenticate", "Bearer realm=\"hipache-tpc\"")
    };
    if offered.is_empty() {
        return Err(unauthorized("Missing 'api_key' parameter"));
    }
    // Every offered key is compared, so the time does not tell which one was wrong.
    let mut ok = false;
    for k in offered {
        ok |= constant_time_eq(k.as_bytes(), key.as_bytes());
    }
    if ok {
        Ok(())
    } else {
        Err(unauthorized("Invalid api key"))
    }
}

fn index() -> Response {
    Response::json(
        200,
        &serde_json::json!({
            "service": "hipache-tpc admin",
            "version": env!("CARGO_PKG_VERSION"),
            "endpoints": [
                "GET /frontends", "GET /frontends/:name", "POST /frontends",
                "POST /frontends/:name", "DELETE /frontends/:name",
                "DELETE /frontends/:name/backend", "POST /flush", "GET /metrics", "GET /status"
            ],
        }),
    )
}

fn metrics(ctx: &AdminCtx) -> Response {
    let mut text = ctx.metrics.render();
    if let Some(c) = &ctx.checker {
        render_checker(&mut text, c);
    }
    Response {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        body: text.into_bytes(),
        headers: Vec::new(),
    }
}

/// The health checker's own metrics (it runs on this thread, so they are plain cells).
fn render_checker(out: &mut String, c: &Checker) {
    use std::fmt::Write as _;
    let (checked, dead, watched) = c.counts();
    let s = &c.stats;
    let _ = writeln!(
        out,
        "# HELP hipache_healthcheck_backends Backend URLs this instance's health checker checks, by last verdict.\n\
         # TYPE hipache_healthcheck_backends gauge\n\
         hipache_healthcheck_backends{{state=\"alive\"}} {}\n\
         hipache_healthcheck_backends{{state=\"dead\"}} {dead}\n\
         # HELP hipache_healthcheck_watched Backend URLs checked by another checker (watched for a takeover).\n\
         # TYPE hipache_healthcheck_watched gauge\n\
         hipache_healthcheck_watched {watched}",
        checked - dead
    );
    let counters = [
        (
            "hipache_healthcheck_messages_total",
            "Messages received on the dead channel.",
            s.messages.get(),
        ),
        (
            "hipache_healthcheck_probes_total",
            "Active checks made.",
            s.probes.get(),
        ),
        (
            "hipache_healthcheck_probe_failures_total",
            "Active checks that found the backend dead.",
            s.probe_failures.get(),
        ),
        (
            "hipache_healthcheck_dead_marks_total",
            "Dead marks written (SADD) by the checker.",
            s.dead_marks.get(),
        ),
        (
            "hipache_healthcheck_alive_marks_total",
            "Alive marks written (SREM) by the checker.",
            s.alive_marks.get(),
        ),
        (
            "hipache_healthcheck_lock_takeovers_total",
            "Locks taken over from checkers that stopped refreshing them.",
            s.takeovers.get(),
        ),
        (
            "hipache_healthcheck_redis_errors_total",
            "Checker Redis operations that failed.",
            s.redis_errors.get(),
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
}

fn status(ctx: &AdminCtx) -> Response {
    let m = &ctx.metrics;
    let now = crate::clock::unix_now();
    let workers = m.workers();
    let up = (0..workers)
        .filter(|i| {
            let hb = m
                .slot(*i)
                .heartbeat
                .load(std::sync::atomic::Ordering::Relaxed);
            hb != 0 && now.saturating_sub(hb) <= HEARTBEAT_STALE_SECS
        })
        .count();
    let mut problems: Vec<String> = Vec::new();
    if up < workers {
        problems.push(format!(
            "{} of {workers} workers are not responding",
            workers - up
        ));
    }
    let redis = match &ctx.config.driver {
        DriverConfig::Redis { .. } => {
            let connected = m.gauge_total(Gauge::RedisUp).max(0) as usize;
            if connected < workers {
                let why = crate::metrics::redis_problem();
                problems.push(format!(
                    "{} of {workers} workers have no Redis connection{}",
                    workers - connected,
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({why})")
                    }
                ));
            }
            let admin = ctx.store.as_ref().is_some_and(|s| s.read.is_up());
            // The control thread's own connections hit what the workers hit (a wrong password, an
            // ACL user without a command, a TLS problem): name it.
            if let Some(store) = &ctx.store {
                for (role, client) in [("read", &store.read), ("write", &store.write)] {
                    if let Some(e) = client.last_error() {
                        problems.push(format!(
                            "Redis ({role}, {}): {e}",
                            client.endpoint_display()
                        ));
                    }
                }
            }
            let notified = m.gauge_total(Gauge::NotificationsUp).max(0) as usize;
            if ctx.config.server.route_notifications && connected > 0 && notified < workers {
                problems.push(format!(
                    "route-change notifications are off on {} of {workers} workers (CLIENT TRACKING refused, or its connection down: the log says why); routes expire after lruCache.ttl",
                    workers - notified
                ));
            }
            let node = |c: Option<&crate::redis::RedisClient>| {
                c.map(|c| {
                    serde_json::json!({
                        "endpoint": c.endpoint_display(),
                        "connectedTo": c.connected_to(),
                    })
                })
            };
            serde_json::json!({
                "reachable": connected > 0 || admin,
                "workersConnected": connected,
                "adminConnected": admin,
                "read": node(ctx.store.as_ref().map(|s| &s.read)),
                "write": node(ctx.store.as_ref().map(|s| &s.write)),
                // Followed by this (control) thread; each worker counts its own in /metrics.
                "failoversSeen": crate::redis::sentinel::failovers_seen(),
            })
        }
        DriverConfig::File { .. } => serde_json::Value::Null,
    };
    let healthcheck = match &ctx.checker {
        Some(c) => {
            let (checked, dead, watched) = c.counts();
            if !c.subscribed() {
                problems.push("the health checker is not subscribed to the dead channel".into());
            }
            serde_json::json!({
                "enabled": true,
                "owner": c.owner_id(),
                "subscribed": c.subscribed(),
                "checking": checked,
                "dead": dead,
                "watching": watched,
            })
        }
        None => serde_json::json!({ "enabled": false }),
    };
    let ok = problems.is_empty();
    Response::json(
        if ok { 200 } else { 503 },
        &serde_json::json!({
            "status": if ok { "ok" } else { "degraded" },
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptimeSeconds": m.uptime().as_secs(),
            "workers": { "configured": workers, "up": up },
            "driver": match &ctx.config.driver {
                DriverConfig::Redis { .. } => "redis",
                DriverConfig::File { .. } => "file",
            },
            "redis": redis,
            "healthcheck": healthcheck,
            "problems": problems,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn routes() {
        let r = |p: &[&str]| Route::of(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(r(&["frontends"]), Some(Route::Frontends));
        assert_eq!(r(&["frontends", "*.a.com"]), Some(Route::Frontend));
        assert_eq!(
            r(&["frontends", "a.com", "backend"]),
            Some(Route::FrontendBackend)
        );
        assert_eq!(r(&["frontends", ""]), None);
        assert_eq!(r(&["nope"]), None);
        assert_eq!(r(&[]), Some(Route::Index));
    }
}
