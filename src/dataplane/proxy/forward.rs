//! Phase 3, forward: send the request to a backend, with retries, and hand the answer to the relay
//! (docs/compatibility.md §3).
//!
//! 1. *Body in hand* (`proxy::upload`): up to `server.requestBufferSize` of the body is read before a
//!    backend connection is taken.
//! 2. *Attempts.* Each [`Attempt`] chooses a live backend (phase 2, `proxy::choose` / `proxy::balance`),
//!    takes a pooled connection or connects, sends the head (and the body in hand), streams the rest of a
//!    large body, and waits for the response head. It ends in the answer ([`Relayed`]) or an
//!    [`ErrorKind`]; [`Retries`] decides what follows a failure from the kind alone: a pooled connection
//!    found closed is retried once on a fresh one without counting; a connection-level failure before
//!    any response byte marks the backend dead and tries another, up to `server.retryOnError` more
//!    times, while the request can still be re-sent; anything else is final.
//! 3. *Relay* (`proxy::relay`): the answer goes to the client.
//!
//! Nothing here writes error pages: a final failure goes back to the pipeline as a [`ProxyError`], which
//! `proxy::pipeline::fail_to_proxy` answers.

use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, warn};

use crate::common::metrics::Counter;
use crate::dataplane::core::Core;
use crate::dataplane::http1::head::ResponseHead;
use crate::dataplane::proxy::choose::choose_backend;
use crate::dataplane::proxy::error::{ErrorKind, ProxyError};
use crate::dataplane::proxy::headers::{write_request_head, ClientSide};
use crate::dataplane::proxy::relay::{
    answer_upgrade, read_response_head, relay_interim, relay_response, Answering, Relayed,
    COALESCE_LIMIT, MAX_INTERIM,
};
use crate::dataplane::proxy::upload::{
    prepare_body, send_request, stream_request_body, RequestBody,
};
use crate::dataplane::routing::Route;
use crate::dataplane::session::{ClientConn, ClientStream, Exchange};
use crate::dataplane::upstream::pool::AcquireError;

/// Forwards the request in `c` to one of `route`'s backends.
pub async fn forward<S: ClientStream>(
    w: &Core,
    c: &mut ClientConn<S>,
    route: &Rc<Route>,
    ex: &mut Exchange,
) -> Result<Relayed, ProxyError> {
    let s = &w.config.server;
    let body = prepare_body(w, c, route.options.max_body).await?;
    let body_start = c.head.len;
    c.pos = body_start + body.in_hand;

    // The head (and a small body) for the backend, built once and re-sent as is on retries.
    c.out.clear();
    // README, "Behind a load balancer": with `server.trustedProxies`, only clients inside it keep
    // their X-Forwarded-* headers; `trustForwardedHeaders: true` still trusts everyone.
    let listed = s
        .trusted_proxies
        .as_deref()
        .map(|t| crate::dataplane::net::cidr::any_contains(t, c.peer_addr));
    let client = ClientSide {
        peer_ip: &c.peer_ip,
        proto: c.listener.proto,
        local_port: &c.listener.port,
        trust_forwarded: s.trust_forwarded_headers || listed == Some(true),
        keep_client_xff: s.trust_forwarded_headers || listed != Some(false),
        allow_underscores: s.allow_underscores_in_headers,
    };
    write_request_head(&mut c.out, &c.buf, &c.head, &client, s.http_keep_alive);
    let body_in_out = body.in_hand <= COALESCE_LIMIT;
    if body_in_out {
        c.out
            .extend_from_slice(&c.buf[body_start..body_start + body.in_hand]);
    }

    // The connection's response head is lent out for the exchange and returned after it.
    let resp = std::mem::replace(&mut c.resp, ResponseHead::empty());
    let mut x = Forward {
        w,
        c,
        route,
        ex,
        body,
        body_in_out,
        relay: w.body_bufs.get(),
        resp,
        backend_timeout: route.options.backend_timeout.or(s.backend_timeout),
    };
    let result = x.attempts().await;
    let Forward { c, relay, resp, .. } = x;
    c.resp = resp;
    w.body_bufs.put(relay);
    result
}

/// One exchange being forwarded: the request in hand and the buffers the attempts share.
struct Forward<'a, S> {
    w: &'a Core,
    c: &'a mut ClientConn<S>,
    route: &'a Rc<Route>,
    ex: &'a mut Exchange,
    body: RequestBody,
    /// The body in hand is in `c.out`, behind the head.
    body_in_out: bool,
    /// The backend's response (or, while an upload streams, request bytes).
    relay: Vec<u8>,
    resp: ResponseHead,
    /// `backend_timeout` of the frontend's options, else the server's (README "Per-frontend options").
    backend_timeout: Option<Duration>,
}

/// One try at one backend.
#[derive(Clone, Copy)]
struct Attempt {
    /// The backend's index in the route's list.
    index: usize,
    /// Only a new connection will do (the pooled one just failed).
    fresh_only: bool,
}

/// A failed attempt, as [`Retries`] judges it.
struct Failure {
    kind: ErrorKind,
    index: usize,
    /// The attempt used a pooled connection (which the backend may have closed while it idled).
    reused: bool,
}

/// What follows a failed attempt.
enum Retry {
    /// The same backend, on a fresh connection, not counted as a retry of its own.
    Fresh(Attempt),
    /// Another backend, chosen afresh.
    Another,
    /// Answer the client with this failure.
    GiveUp,
}

/// The retry budget of one exchange (docs/compatibility.md §3).
struct Retries {
    /// Backends tried so far (fresh-connection retries excluded).
    tries: usize,
    /// `1 + server.retryOnError`.
    max_tries: usize,
    fresh_retry_used: bool,
    /// Body bytes beyond the buffer were read from the client: the request cannot be re-sent.
    streamed: bool,
}

impl Retries {
    fn new(retry_on_error: u32) -> Self {
        Retries {
            tries: 0,
            max_tries: 1 + retry_on_error as usize,
            fresh_retry_used: false,
            streamed: false,
        }
    }

    /// Counts one more backend to try; `false` once the budget is spent.
    fn take_try(&mut self) -> bool {
        self.tries += 1;
        self.tries <= self.max_tries
    }

    /// Judges a failure (the caller marks the backend when the kind says so and this is not a fresh
    /// retry).
    fn after(&mut self, f: &Failure) -> Retry {
        if f.kind.stale_connection() && f.reused && !self.fresh_retry_used && !self.streamed {
            self.fresh_retry_used = true;
            return Retry::Fresh(Attempt {
                index: f.index,
                fresh_only: true,
            });
        }
        if f.kind.retryable() && !self.streamed {
            Retry::Another
        } else {
            Retry::GiveUp
        }
    }
}

impl<S: ClientStream> Forward<'_, S> {
    /// Tries backends until one answers or the failure is final.
    async fn attempts(&mut self) -> Result<Relayed, ProxyError> {
        let w = self.w;
        let mut retries = Retries::new(w.config.server.retry_on_error);
        let mut fresh: Option<Attempt> = None;
        loop {
            let attempt = match fresh.take() {
                Some(a) => {
                    w.m().inc(Counter::Retries);
                    a
                }
                None => {
                    let more = retries.take_try();
                    if retries.tries > 1 {
                        w.m().inc(Counter::Retries);
                    }
                    if !more {
                        return Err(self.fail(ErrorKind::RetriesExhausted));
                    }
                    let index = self.choose().ok_or(self.fail(ErrorKind::AllBackendsDead))?;
                    Attempt {
                        index,
                        fresh_only: false,
                    }
                }
            };
            // Counted for `balance leastconn` until this attempt ends.
            let _in_flight =
                crate::dataplane::proxy::balance::InFlight::enter(self.route, attempt.index);
            let (kind, reused) = match self.attempt(attempt, &mut retries).await {
                Ok(relayed) => return Ok(relayed),
                Err(e) => e,
            };
            let failure = Failure {
                kind,
                index: attempt.index,
                reused,
            };
            let next = retries.after(&failure);
            if kind.marks_backend() && !matches!(next, Retry::Fresh(_)) {
                self.backend_failed(attempt.index);
            }
            match next {
                Retry::Fresh(a) => fresh = Some(a),
                Retry::Another => {}
                Retry::GiveUp => return Err(self.fail(kind)),
            }
        }
    }

    /// One attempt at one backend: the answer relayed, or how it failed and whether the connection
    /// was a pooled one.
    async fn attempt(
        &mut self,
        a: Attempt,
        retries: &mut Retries,
    ) -> Result<Relayed, (ErrorKind, bool)> {
        let (w, route) = (self.w, self.route);
        let s = &w.config.server;
        let backend = &route.backends[a.index];
        let target = match &backend.target {
            Ok(t) => t,
            Err(why) => {
                // Logged once per version of the list when the route was built (routing::route).
                debug!(
                    "frontend {}: unusable backend entry: {why}",
                    route.frontend_key
                );
                return Err((ErrorKind::UnusableEntry, false));
            }
        };
        let addr = match w.pools.address_of(target).await {
            Ok(addr) => addr,
            Err(e) => {
                warn!(
                    "frontend {}: cannot resolve backend {}: {e}",
                    route.frontend_key, backend.url
                );
                return Err((ErrorKind::ResolveFailed, false));
            }
        };
        let started = Instant::now();
        self.relay.clear();
        let mut conn = match w
            .pools
            .acquire(addr, a.fresh_only, Some(self.c.peer_addr))
            .await
        {
            Ok(conn) => conn,
            Err(AcquireError::Saturated) => return Err((ErrorKind::BackendSaturated, false)),
            Err(AcquireError::ClientLimit) => return Err((ErrorKind::ClientLimit, false)),
            Err(e) => {
                // Nothing was sent: always safe to try again.
                debug!("backend {} of {}: {e}", backend.url, self.c.host);
                return Err((ErrorKind::ConnectFailed, false));
            }
        };
        let reused = conn.reused;

        // Send the head and the body in hand (still in the client buffer: a failure here can be retried).
        let sent = send_request(
            self.c,
            conn.stream(),
            &self.body,
            self.body_in_out,
            self.backend_timeout,
        );
        if let Err(e) = sent.await {
            debug!(
                "backend {} of {}: write failed: {e}",
                backend.url, self.c.host
            );
            return Err((ErrorKind::WriteFailed, reused));
        }
        // Stream the rest of a large body. From here on the request cannot be re-sent.
        if !self.body.complete {
            retries.streamed = true;
            let result = stream_request_body(
                w,
                self.c,
                conn.stream(),
                &mut self.body,
                &mut self.relay,
                route.options.max_body,
            )
            .await;
            // The relay buffer held request bytes; the response starts afresh.
            self.relay.clear();
            match result {
                Ok(()) => {}
                Err(ErrorKind::ClosedDuringUpload) => {
                    // The backend stopped reading: it may have answered early (e.g. 413); relay that if so.
                    let early = read_response_head(
                        conn.stream(),
                        &mut self.relay,
                        &mut self.resp,
                        Some(Duration::from_secs(1)),
                        s.max_header_size,
                        self.c.head.is_head_method,
                    );
                    if early.await.is_ok() {
                        let answering = Answering {
                            route,
                            index: a.index,
                            conn,
                            started,
                        };
                        let _ = relay_response(
                            w,
                            self.c,
                            self.ex,
                            answering,
                            &mut self.relay,
                            &mut self.resp,
                            true,
                        )
                        .await;
                        return Ok(Relayed::Done { keep_client: false });
                    }
                    return Err((ErrorKind::ClosedDuringUpload, reused));
                }
                Err(kind) => return Err((kind, reused)),
            }
        }
        // Wait for the response head, passing interim (1xx) answers on (a bounded number of them).
        let mut interim = 0usize;
        loop {
            let head = read_response_head(
                conn.stream(),
                &mut self.relay,
                &mut self.resp,
                self.backend_timeout,
                s.max_header_size,
                self.c.head.is_head_method,
            );
            match head.await {
                Ok(()) if (100..200).contains(&self.resp.status) && self.resp.status != 101 => {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        warn!(
                            "backend {} of {} sent more than {MAX_INTERIM} interim responses",
                            backend.url, self.c.host
                        );
                        return Err((ErrorKind::TooManyInterim, reused));
                    }
                    relay_interim(self.c, &mut self.relay, &self.resp)
                        .await
                        .map_err(|k| (k, reused))?;
                }
                Ok(()) => break,
                Err((kind, why)) => {
                    match kind {
                        ErrorKind::HeadTimeout => warn!(
                            "backend {} of {} sent no response head within {:?}",
                            backend.url,
                            self.c.host,
                            self.backend_timeout.unwrap_or_default()
                        ),
                        ErrorKind::InvalidResponse => {
                            warn!("backend {} of {}: {why}", backend.url, self.c.host)
                        }
                        _ => debug!(
                            "backend {} of {}: {}",
                            backend.url,
                            self.c.host,
                            kind.reason()
                        ),
                    }
                    return Err((kind, reused));
                }
            }
        }
        let answering = Answering {
            route,
            index: a.index,
            conn,
            started,
        };
        if self.resp.status == 101 {
            if !self.c.head.websocket {
                return Err((ErrorKind::UnaskedUpgrade, reused));
            }
            return answer_upgrade(w, self.c, self.ex, answering, &self.relay, &self.resp)
                .await
                .map_err(|k| (k, reused));
        }
        // Status-based marks (docs/compatibility.md §3): 501, 502, 504-599; the answer itself is relayed unchanged.
        if s.dead_backend_on_500 && matches!(self.resp.status, 501 | 502 | 504..=599) {
            w.m().inc(Counter::BackendBadStatus);
            w.mark_dead(route, &self.c.host, a.index);
        }
        relay_response(
            w,
            self.c,
            self.ex,
            answering,
            &mut self.relay,
            &mut self.resp,
            false,
        )
        .await
        .map_err(|k| (k, reused))
    }

    /// Phase 2, choose: a live backend for the next attempt (`None`: every one is dead or drained).
    fn choose(&self) -> Option<usize> {
        let (w, route, c) = (self.w, self.route, &*self.c);
        if route.options.is_default() {
            return choose_backend(route, &w.rng);
        }
        let facts = crate::dataplane::proxy::balance::Facts {
            client: crate::dataplane::proxy::policy::client_addr(
                c,
                w.config.server.trust_forwarded_headers,
            ),
            sticky: crate::dataplane::proxy::policy::sticky_cookie(&c.head, &c.buf),
        };
        crate::dataplane::proxy::balance::choose(route, &w.rng, &facts)
    }

    /// A connection-level failure: counted, and the backend marked dead (docs/compatibility.md §3).
    fn backend_failed(&self, index: usize) {
        self.w.m().inc(Counter::BackendErrors);
        self.w.mark_dead(self.route, &self.c.host, index);
    }

    /// A final failure, with what it leaves of the request body.
    fn fail(&self, kind: ErrorKind) -> ProxyError {
        ProxyError::after_body(kind, self.body.complete)
    }
}
