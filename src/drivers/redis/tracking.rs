//! Route-change notifications: a dedicated RESP3 connection per worker with client-side caching in
//! broadcast mode (`CLIENT TRACKING ON BCAST PREFIX <p>frontend: PREFIX <p>frontend-options: PREFIX
//! <p>dead: PREFIX <p>tls: ...`), so Redis pushes
//! the name of every changed key. It works wherever Redis 6+ does, managed services included: no
//! `CONFIG SET`, no keyspace notifications.
//!
//! The connection reports [`TrackingEvent`]s to its worker: `Up` once tracking is on (everything cached
//! before that instant may have missed a change), `Down` when it is lost, `Keys` and `All` for
//! invalidations. It reconnects with backoff. Liveness is checked end to end by a probe: the worker
//! writes a key under a tracked prefix every second and expects its invalidation back; a channel that
//! stops delivering is reported `Down` even if the TCP connection looks alive.
//!
//! This module never touches the cache itself and never blocks; it only reads pushes and calls back.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use redis::{PushKind, Value};

use super::connection::{dial, RedisClient};
use super::handshake::{exchange, Step};
use super::resp::RespReader;
use crate::config::RedisEndpoint;

/// What the tracking connection tells its worker.
#[derive(Debug)]
pub enum TrackingEvent {
    /// Tracking is on; changes made before this instant may not have been notified.
    Up,
    /// Notifications stopped (connection lost, or the probe went unanswered).
    Down,
    /// These keys changed (full names, prefix included).
    Keys(Vec<String>),
    /// Everything may have changed (FLUSHDB, FLUSHALL).
    All,
}

/// Key prefix of the liveness probes, under the driver prefix.
pub const PROBE_PREFIX: &str = "hipache-tpc-probe:";
/// How often a probe is written.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A channel whose probe is not seen back within this time is considered down.
const PROBE_DEADLINE: Duration = Duration::from_secs(3);

const BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Shared between the connection task, the probe task and the worker.
pub struct Tracking {
    up: Cell<bool>,
    /// The probe key this worker writes, full name.
    probe_key: String,
    /// When the probe not yet seen back was written.
    probe_sent: Cell<Option<Instant>>,
    on_event: RefCell<Box<dyn FnMut(TrackingEvent)>>,
    /// Observes the lag of each probe (write to notification), in seconds.
    on_lag: RefCell<Box<dyn FnMut(f64)>>,
    /// The notification socket, so that the probe task can shut a silent channel down.
    fd: Cell<Option<RawFd>>,
}

impl Tracking {
    /// True while notifications flow.
    pub fn is_up(&self) -> bool {
        self.up.get()
    }

    fn emit(&self, event: TrackingEvent) {
        match event {
            TrackingEvent::Up => self.up.set(true),
            TrackingEvent::Down => self.up.set(false),
            _ => {}
        }
        (self.on_event.borrow_mut())(event);
    }
}

/// What one worker's notification channel needs.
pub struct TrackingSetup {
    /// Where lookups go: notifications must come from the same server.
    pub read: RedisEndpoint,
    /// Where the liveness probe is written.
    pub write: RedisClient,
    pub prefix: String,
    /// Names the worker in logs.
    pub label: String,
    /// Names the connections in `CLIENT LIST`.
    pub client_name: String,
    pub timeout: Duration,
}

/// Starts tracking for one worker: the notification connection and the probe writer.
pub fn start(
    setup: TrackingSetup,
    on_event: Box<dyn FnMut(TrackingEvent)>,
    on_lag: Box<dyn FnMut(f64)>,
) -> Rc<Tracking> {
    let TrackingSetup {
        read,
        write,
        prefix,
        label,
        client_name,
        timeout,
    } = setup;
    let tracking = Rc::new(Tracking {
        up: Cell::new(false),
        probe_key: format!("{prefix}{PROBE_PREFIX}{}", client_name),
        probe_sent: Cell::new(None),
        on_event: RefCell::new(on_event),
        on_lag: RefCell::new(on_lag),
        fd: Cell::new(None),
    });
    crate::common::task::spawn(
        crate::common::task::OnPanic::StopThread,
        manage(
            tracking.clone(),
            read,
            prefix,
            label.clone(),
            client_name,
            timeout,
        ),
    );
    crate::common::task::spawn(
        crate::common::task::OnPanic::StopThread,
        probe(tracking.clone(), write, label),
    );
    tracking
}

async fn manage(
    t: Rc<Tracking>,
    ep: RedisEndpoint,
    prefix: String,
    label: String,
    client_name: String,
    timeout: Duration,
) {
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u64;
    loop {
        match subscribe(&ep, &prefix, &client_name, timeout).await {
            Ok((stream, leftover)) => {
                if failures > 0 {
                    info!("{label}: route-change notifications on again after {failures} failed attempts");
                } else {
                    debug!("{label}: route-change notifications on");
                }
                failures = 0;
                backoff = BACKOFF_MIN;
                t.probe_sent.set(None);
                t.fd.set(Some(stream.as_raw_fd()));
                t.emit(TrackingEvent::Up);
                let reason = read_pushes(&t, stream, leftover).await;
                t.fd.set(None);
                t.emit(TrackingEvent::Down);
                warn!("{label}: route-change notifications lost ({reason}); cached routes now expire after lruCache.ttl");
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    warn!("{label}: cannot turn route-change notifications on: {e} (attempt {failures}); cached routes expire after lruCache.ttl");
                }
            }
        }
        monoio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(super::connection::backoff_max(&ep));
    }
}

/// AUTH, HELLO 3, CLIENT TRACKING in broadcast mode on the driver's prefixes.
async fn subscribe(
    ep: &RedisEndpoint,
    prefix: &str,
    client_name: &str,
    timeout: Duration,
) -> Result<(super::stream::RedisStream, Vec<u8>), String> {
    let mut stream = dial(ep, timeout).await?;
    let mut steps = Vec::new();
    if let Some(auth) = super::handshake::auth_step(ep) {
        steps.push(auth);
    }
    steps.push(Step::required(
        "HELLO 3 (Redis 6 or later is needed for notifications)",
        redis::cmd("HELLO").arg(3).clone(),
    ));
    steps.push(Step::optional(
        "CLIENT SETNAME",
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("{client_name}-tracking"))
            .clone(),
    ));
    steps.push(Step::required(
        "CLIENT TRACKING",
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(format!("{prefix}frontend:"))
            .arg("PREFIX")
            .arg(format!("{prefix}frontend-options:"))
            .arg("PREFIX")
            .arg(format!("{prefix}dead:"))
            .arg("PREFIX")
            .arg(format!("{prefix}tls:"))
            .arg("PREFIX")
            .arg(format!("{prefix}acme:alpn:"))
            .arg("PREFIX")
            .arg(format!("{prefix}{PROBE_PREFIX}"))
            .clone(),
    ));
    let (_, leftover) = exchange(&mut stream, &steps, timeout).await?;
    Ok((stream, leftover))
}

/// Reads push messages until the connection fails; returns why.
async fn read_pushes(
    t: &Tracking,
    mut stream: super::stream::RedisStream,
    received: Vec<u8>,
) -> String {
    let mut pushes = RespReader::new(received);
    loop {
        loop {
            match pushes.next_value() {
                Ok(Some(value)) => handle(t, value),
                Ok(None) => break,
                Err(reason) => return reason,
            }
        }
        match pushes.fill(&mut stream).await {
            Ok(0) if stalled(t) => return "no notification of the liveness probe".into(),
            Ok(0) => return "closed by the server".into(),
            Ok(_) => {}
            Err(e) => return e.to_string(),
        }
    }
}

fn stalled(t: &Tracking) -> bool {
    t.probe_sent
        .get()
        .is_some_and(|sent| sent.elapsed() > PROBE_DEADLINE)
}

fn handle(t: &Tracking, value: Value) {
    let Value::Push { kind, data } = value else {
        return;
    };
    if kind != PushKind::Invalidate {
        return;
    }
    match data.into_iter().next() {
        Some(Value::Array(keys)) => {
            let mut names = Vec::with_capacity(keys.len());
            for key in keys {
                let name = match key {
                    Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                    Value::SimpleString(s) => s,
                    _ => continue,
                };
                if name == t.probe_key {
                    if let Some(sent) = t.probe_sent.take() {
                        (t.on_lag.borrow_mut())(sent.elapsed().as_secs_f64());
                    }
                    continue;
                }
                if name.contains(PROBE_PREFIX) {
                    continue; // another worker's probe
                }
                names.push(name);
            }
            if !names.is_empty() {
                t.emit(TrackingEvent::Keys(names));
            }
        }
        // `invalidate nil`: the whole keyspace was flushed.
        _ => t.emit(TrackingEvent::All),
    }
}

/// Writes the probe key every second while tracking is up.
async fn probe(t: Rc<Tracking>, write: RedisClient, label: String) {
    let mut warned = false;
    loop {
        monoio::time::sleep(PROBE_EVERY).await;
        if !t.is_up() {
            continue;
        }
        if t.probe_sent.get().is_some() {
            if stalled(&t) {
                // The channel stopped delivering: shut its socket so the reader reconnects (and the
                // worker falls back to the short TTL meanwhile).
                if let Some(fd) = t.fd.take() {
                    // SAFETY: shutting down a socket owned by the tracking task, which then sees EOF.
                    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                }
            }
            continue;
        }
        let mut packed = Vec::new();
        redis::cmd("SET")
            .arg(&t.probe_key)
            .arg(crate::common::clock::unix_now())
            .arg("EX")
            .arg(10)
            .write_packed_command(&mut packed);
        t.probe_sent.set(Some(Instant::now()));
        match write.query(&packed, 1).await {
            Ok(replies) => {
                if let Some(Value::ServerError(e)) = replies.first() {
                    t.probe_sent.set(None);
                    if !warned {
                        warn!(
                            "{label}: cannot write the notification probe {} ({} {}); liveness of notifications is not checked",
                            t.probe_key,
                            e.code(),
                            e.details().unwrap_or("")
                        );
                        warned = true;
                    }
                }
            }
            Err(e) => {
                t.probe_sent.set(None);
                debug!("{label}: notification probe not written: {e}");
            }
        }
    }
}
