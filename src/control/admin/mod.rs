//! The admin listener: hipache-api's endpoints ([`api`]), `GET /metrics` (Prometheus text) and
//! `GET /status` (a JSON health summary), on its own socket, served by the control thread's runtime.
//!
//! Authentication: when `admin.key` is set, every call needs it, as the `api_key` parameter
//! (hipache-api's way) or as `Authorization: Bearer <key>`, compared in constant time. `/metrics` and
//! `/status` need it too unless `admin.protectMetrics` is false. Without a key everything is open,
//! which is why the listener is on the loopback interface unless configured otherwise.
//!
//! The web console ([`console`]): `GET /` from a browser (an `Accept` naming `text/html`) and
//! `/console/...` serve static files compiled into the binary, without the key; every data call the
//! page makes goes through the endpoints above with `Authorization: Bearer <key>`. A call that
//! changes state (POST, PUT, DELETE) carrying an `Origin` header that is not this listener's own
//! origin (its `Host`) is refused with 403, so another site open in the operator's browser cannot
//! drive the API. `GET /` without `text/html` keeps the JSON index.
//!
//! This module never runs on a worker thread and never blocks one: it reads the workers' metric slots
//! (atomics) and talks to Redis through the control runtime's own connections.

pub mod acme;
pub mod api;
pub mod certificates;
pub mod console;
pub mod http;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};
use monoio::net::{TcpListener, TcpStream};

use crate::common::metrics::{Counter, Gauge, Hist, Metrics, BUCKETS};
use crate::config::{Config, DriverConfig};
use crate::control::healthcheck::{Checker, UrlState};
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
                crate::common::task::spawn(crate::common::task::OnPanic::EndTask, async move {
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
    FrontendOptions,
    Flush,
    Certificates,
    Certificate,
    Index,
    Console,
    CertificateAcme,
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
            ["frontends", name, "options"] if !name.is_empty() => Some(Route::FrontendOptions),
            ["flush"] => Some(Route::Flush),
            ["certificates"] => Some(Route::Certificates),
            ["certificates", name] if !name.is_empty() => Some(Route::Certificate),
            ["console", ..] => Some(Route::Console),
            ["certificates", name, "acme"] if !name.is_empty() => Some(Route::CertificateAcme),
            _ => None,
        }
    }

    fn methods(self) -> &'static [&'static str] {
        match self {
            Route::Metrics | Route::Status | Route::Index | Route::Console => &["GET", "HEAD"],
            Route::Frontends => &["GET", "POST"],
            Route::Frontend => &["GET", "POST", "DELETE"],
            Route::FrontendBackend => &["DELETE"],
            Route::FrontendOptions => &["GET", "PUT", "DELETE"],
            Route::Flush | Route::CertificateAcme => &["POST"],
            Route::Certificates => &["GET"],
            Route::Certificate => &["GET", "PUT", "DELETE"],
        }
    }

    fn needs_store(self) -> bool {
        matches!(
            self,
            Route::Frontends
                | Route::Frontend
                | Route::FrontendBackend
                | Route::FrontendOptions
                | Route::Flush
                | Route::Certificates
                | Route::Certificate
        )
    }
}

/// A state-changing call with an `Origin` that is not this listener's own: refused (CSRF).
fn cross_origin(req: &Request) -> Option<Response> {
    if !matches!(req.method.as_str(), "POST" | "PUT" | "DELETE" | "PATCH") {
        return None;
    }
    let origin = req.origin.as_deref()?;
    let own = req.host.as_deref().unwrap_or("");
    let host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match host {
        Some(h) if !own.is_empty() && h.eq_ignore_ascii_case(own) => None,
        _ => Some(Response::error(
            403,
            format!(
                "Origin {origin:?} is not this admin listener's own ({own:?}): changes are only accepted from the console served here"
            ),
        )),
    }
}

async fn handle(ctx: &AdminCtx, req: &Request) -> Response {
    if let Some(r) = cross_origin(req) {
        return r;
    }
    let route = Route::of(&req.segments);
    let is_get = matches!(req.method.as_str(), "GET" | "HEAD");
    // The console's static files carry no data: they load without the key.
    let console_page = match route {
        Some(Route::Console) => true,
        Some(Route::Index) => is_get && req.accepts_html,
        _ => false,
    };
    if console_page && is_get {
        return console::serve(&req.segments);
    }
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
            (Route::Frontends, "GET") if is_paged(req) => {
                let annotate = |name: &str, url: &str| annotate(ctx, name, url);
                store
                    .list_page(req, ctx.config.server.dead_backend_ttl, &annotate)
                    .await
            }
            (Route::Frontends, "GET") => store.list().await,
            (Route::Frontends, _) => store.create(req).await,
            (Route::Frontend, "GET") => store.backends(name).await,
            (Route::Frontend, "POST") => store.append(name, req).await,
            (Route::Frontend, _) => store.delete(name).await,
            (Route::FrontendBackend, _) => store.remove_backend(name, req).await,
            (Route::FrontendOptions, "GET") => store.options(name).await,
            (Route::FrontendOptions, "PUT") => store.put_options(name, req).await,
            (Route::FrontendOptions, _) => store.delete_options(name).await,
            (Route::Certificates, _)
                if req.param("cursor").is_some() || req.param("count").is_some() =>
            {
                store.certificates_page(req).await
            }
            (Route::Certificates, _) => store.certificates().await,
            (Route::Certificate, "GET") => store.certificate(name).await,
            (Route::Certificate, "PUT") => store.put_certificate(name, req).await,
            (Route::Certificate, _) => store.delete_certificate(name).await,
            _ => store.flush().await,
        };
    }
    match route {
        Route::CertificateAcme => {
            acme::order(ctx, req.segments.get(1).map(String::as_str).unwrap_or(""))
        }
        Route::Metrics if req.param("format") == Some("json") => metrics_json(ctx),
        Route::Metrics => metrics(ctx),
        Route::Status => status(ctx),
        _ => index(),
    }
}

/// The paged form of `GET /frontends` is asked for with any of its parameters.
fn is_paged(req: &Request) -> bool {
    ["cursor", "count", "match"]
        .iter()
        .any(|p| req.param(p).is_some())
}

/// What the health checker of this process knows about backend `url` of frontend `name`.
fn annotate(ctx: &AdminCtx, name: &str, url: &str) -> serde_json::Value {
    let Some(c) = &ctx.checker else {
        return serde_json::Value::Null;
    };
    match c.url_state(url, name) {
        Some(UrlState::Checked {
            dead,
            last_check,
            since,
            marks_host,
        }) => serde_json::json!({
            "state": match dead {
                Some(true) => "dead",
                Some(false) => "alive",
                None => "pending",
            },
            "lastCheck": last_check,
            "since": since,
            "marksThisFrontend": marks_host,
        }),
        Some(UrlState::Watched) => serde_json::json!({ "state": "watched" }),
        None => serde_json::Value::Null,
    }
}

/// `GET /metrics?format=json`: what the console charts, per worker where it matters. Read from the
/// same relaxed slots as the text form (nothing more is counted on the workers).
fn metrics_json(ctx: &AdminCtx) -> Response {
    let m = &ctx.metrics;
    let classes = [
        ("1xx", Counter::Responses1xx),
        ("2xx", Counter::Responses2xx),
        ("3xx", Counter::Responses3xx),
        ("4xx", Counter::Responses4xx),
        ("5xx", Counter::Responses5xx),
    ];
    let now = crate::common::clock::unix_now();
    let mut latency = [0u64; 17];
    let workers: Vec<serde_json::Value> = (0..m.workers())
        .map(|i| {
            let s = m.slot(i);
            for (total, n) in latency.iter_mut().zip(s.hist_buckets(Hist::Total)) {
                *total += n;
            }
            let hb = s.heartbeat.load(std::sync::atomic::Ordering::Relaxed);
            serde_json::json!({
                "worker": i,
                "up": hb != 0 && now.saturating_sub(hb) <= HEARTBEAT_STALE_SECS,
                "responses": classes.iter().map(|(_, c)| s.counter(*c)).sum::<u64>(),
                "connections": s.gauge(Gauge::ClientConnections),
                "backendConnections": s.gauge(Gauge::BackendConnections),
            })
        })
        .collect();
    let responses: serde_json::Map<String, serde_json::Value> = classes
        .iter()
        .map(|(k, c)| (k.to_string(), m.total(*c).into()))
        .collect();
    Response::json(
        200,
        &serde_json::json!({
            "uptimeSeconds": m.uptime().as_secs(),
            "time": now,
            "responses": responses,
            "backendErrors": m.total(Counter::BackendErrors),
            "deadMarks": m.total(Counter::DeadMarks),
            "latency": { "bounds": BUCKETS, "counts": latency },
            "workers": workers,
        }),
    )
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
                "DELETE /frontends/:name/backend", "POST /flush", "GET /metrics", "GET /status",
                "POST /certificates/:name/acme",
                "GET /certificates", "GET /certificates/:name", "PUT /certificates/:name",
                "DELETE /certificates/:name"
            ],
        }),
    )
}

fn metrics(ctx: &AdminCtx) -> Response {
    let mut text = ctx.metrics.render();
    if let Some(c) = &ctx.checker {
        render_checker(&mut text, c);
    }
    acme::render_metrics(&mut text);
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
    let now = crate::common::clock::unix_now();
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
                let why = crate::common::metrics::redis_problem();
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
            let node = |c: Option<&crate::drivers::redis::RedisClient>| {
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
                "failoversSeen": crate::drivers::redis::sentinel::failovers_seen(),
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
        assert_eq!(r(&["console", "console.js"]), Some(Route::Console));
    }
}
