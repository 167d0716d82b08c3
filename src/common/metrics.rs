//! Counters, gauges and latency histograms, one slot per worker, rendered in Prometheus text format.
//!
//! Each worker writes only its own slot (a cache-line-aligned block of atomics), with a relaxed load and
//! store: no lock, no read-modify-write instruction, no cache line shared with another writer. A scrape
//! (from the admin listener's thread) reads every slot and sums. Values read during a scrape may be a few
//! increments behind; they are never torn.
//!
//! Hand-written rather than the `prometheus` or `metrics` crates (neither is in the tree): every thread
//! updates their shared atomics, where one writer per slot keeps the cores independent.
//!
//! This module only counts and renders; it does not decide what to count. Adding a metric means adding
//! a variant to [`Counter`], [`Gauge`] or [`Hist`] and its name and help text to the tables below.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The last reason a Redis connection could not be made (authentication refused, say), for the ready
/// line and `/status`. Written only when a connection attempt fails and is logged (the first failure,
/// then one in 30), never on the request path.
static REDIS_PROBLEM: Mutex<String> = Mutex::new(String::new());

/// Records why Redis could not be reached (see [`REDIS_PROBLEM`]).
pub fn note_redis_problem(what: &str) {
    if let Ok(mut p) = REDIS_PROBLEM.lock() {
        p.clear();
        p.push_str(&what[..what.floor_char_boundary(300)]);
    }
}

/// The last recorded Redis problem (empty if none).
pub fn redis_problem() -> String {
    REDIS_PROBLEM.lock().map(|p| p.clone()).unwrap_or_default()
}

/// Monotonic counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    Responses1xx,
    Responses2xx,
    Responses3xx,
    Responses4xx,
    Responses5xx,
    /// Connection-level failures talking to a backend (refused, reset, timed out).
    BackendErrors,
    /// Backend answers that were 501, 502 or 504-599.
    BackendBadStatus,
    /// Passive dead marks made.
    DeadMarks,
    /// Attempts beyond the first (other backend, or fresh connection).
    Retries,
    CacheHits,
    CacheMisses,
    /// Stale routes served because the driver failed.
    CacheStaleServed,
    RedisRoundTrips,
    RedisErrors,
    ClientConnectionsAccepted,
    TlsHandshakes,
    TlsHandshakeErrors,
    WebsocketTunnels,
    /// Cache invalidation messages received from Redis.
    Invalidations,
    /// Cache entries evicted by invalidations.
    CacheEvictions,
    /// Requests rejected as malformed (400/405/417/431/501 on the head).
    RejectedRequests,
    /// HTTP/2 streams served.
    H2Streams,
    /// Lookups not cached because a route changed while they were in flight.
    UncachedRacingLookups,
    /// PROXY protocol headers read (`proxyProtocol` listeners).
    ProxyHeaders,
    /// Connections closed for a missing, malformed, late or untrusted PROXY header.
    ProxyHeaderErrors,
    /// Requests refused by a per-frontend option (README "Per-frontend options").
    RejectedMaintenance,
    RejectedMaxConnections,
    RejectedRate,
    RejectedMaxBody,
    /// `https_redirect` answers.
    Redirects,
    /// Certificates from Redis skipped (unparsable, key mismatch, expired, not covering the name).
    TlsCertificateErrors,
    /// Handshakes whose Redis certificate choice the per-core cache answered.
    TlsCertificateCacheHits,
    /// Handshakes whose Redis certificate choice needed a Redis lookup.
    TlsCertificateCacheMisses,
    /// `acme-tls/1` handshakes refused without a lookup: the core's challenge lookup budget was spent.
    TlsAcmeChallengeSkipped,
    /// Response bodies spliced from the backend's socket to the client's to their end.
    BodiesSpliced,
    /// Spliced response bodies whose client fell behind: the rest went through the read-ahead.
    BodySpliceFallbacks,
    /// Request bodies spliced from the client's socket to the backend's.
    UploadsSpliced,
}

const COUNTERS: &[(Counter, &str, &str)] = &[
    (
        Counter::Responses1xx,
        "hipache_responses_total{class=\"1xx\"}",
        "Responses sent to clients, by status class.",
    ),
    (
        Counter::Responses2xx,
        "hipache_responses_total{class=\"2xx\"}",
        "",
    ),
    (
        Counter::Responses3xx,
        "hipache_responses_total{class=\"3xx\"}",
        "",
    ),
    (
        Counter::Responses4xx,
        "hipache_responses_total{class=\"4xx\"}",
        "",
    ),
    (
        Counter::Responses5xx,
        "hipache_responses_total{class=\"5xx\"}",
        "",
    ),
    (
        Counter::BackendErrors,
        "hipache_backend_errors_total",
        "Connection-level failures talking to backends.",
    ),
    (
        Counter::BackendBadStatus,
        "hipache_backend_bad_status_total",
        "Backend answers with status 501, 502 or 504-599.",
    ),
    (
        Counter::DeadMarks,
        "hipache_dead_marks_total",
        "Passive dead marks made.",
    ),
    (
        Counter::Retries,
        "hipache_retries_total",
        "Extra attempts after a failure.",
    ),
    (
        Counter::CacheHits,
        "hipache_route_cache_hits_total",
        "Route lookups answered by the cache.",
    ),
    (
        Counter::CacheMisses,
        "hipache_route_cache_misses_total",
        "Route lookups that went to the driver.",
    ),
    (
        Counter::CacheStaleServed,
        "hipache_route_cache_stale_served_total",
        "Stale routes served while the driver failed.",
    ),
    (
        Counter::RedisRoundTrips,
        "hipache_redis_round_trips_total",
        "Redis queries sent.",
    ),
    (
        Counter::RedisErrors,
        "hipache_redis_errors_total",
        "Redis queries that failed (down, timeout, lost).",
    ),
    (
        Counter::ClientConnectionsAccepted,
        "hipache_client_connections_accepted_total",
        "Client connections accepted.",
    ),
    (
        Counter::TlsHandshakes,
        "hipache_tls_handshakes_total",
        "TLS handshakes completed.",
    ),
    (
        Counter::TlsHandshakeErrors,
        "hipache_tls_handshake_errors_total",
        "TLS handshakes that failed or timed out.",
    ),
    (
        Counter::WebsocketTunnels,
        "hipache_websocket_tunnels_total",
        "WebSocket tunnels opened.",
    ),
    (
        Counter::Invalidations,
        "hipache_cache_invalidations_total",
        "Route-change notifications received.",
    ),
    (
        Counter::CacheEvictions,
        "hipache_cache_evictions_total",
        "Cache entries evicted by route changes.",
    ),
    (
        Counter::RejectedRequests,
        "hipache_rejected_requests_total",
        "Requests refused as malformed or oversized.",
    ),
    (
        Counter::H2Streams,
        "hipache_h2_streams_total",
        "HTTP/2 streams served.",
    ),
    (
        Counter::UncachedRacingLookups,
        "hipache_route_lookups_uncached_total",
        "Lookups not cached because a route changed meanwhile.",
    ),
    (
        Counter::ProxyHeaders,
        "hipache_proxy_protocol_headers_total",
        "PROXY protocol headers read on proxyProtocol listeners.",
    ),
    (
        Counter::ProxyHeaderErrors,
        "hipache_proxy_protocol_errors_total",
        "Connections closed for a missing, malformed, late or untrusted PROXY protocol header.",
    ),
    (
        Counter::RejectedMaintenance,
        "hipache_policy_rejections_total{reason=\"maintenance\"}",
        "Requests refused by a per-frontend option, by option.",
    ),
    (
        Counter::RejectedMaxConnections,
        "hipache_policy_rejections_total{reason=\"max_connections\"}",
        "",
    ),
    (
        Counter::RejectedRate,
        "hipache_policy_rejections_total{reason=\"rate\"}",
        "",
    ),
    (
        Counter::RejectedMaxBody,
        "hipache_policy_rejections_total{reason=\"max_body\"}",
        "",
    ),
    (
        Counter::Redirects,
        "hipache_redirects_total",
        "Requests redirected to HTTPS by https_redirect.",
    ),
    (
        Counter::TlsCertificateErrors,
        "hipache_tls_certificate_errors_total",
        "Certificates from Redis skipped: unparsable, key mismatch, expired or not covering the name.",
    ),
    (
        Counter::TlsCertificateCacheHits,
        "hipache_tls_certificate_cache_hits_total",
        "Certificate choices answered by the per-core certificate cache.",
    ),
    (
        Counter::TlsCertificateCacheMisses,
        "hipache_tls_certificate_cache_misses_total",
        "Certificate choices that needed a Redis lookup.",
    ),
    (
        Counter::TlsAcmeChallengeSkipped,
        "hipache_tls_acme_challenge_lookups_skipped_total",
        "acme-tls/1 handshakes refused without a Redis lookup (the core's challenge lookup budget was spent).",
    ),
    (
        Counter::BodiesSpliced,
        "hipache_response_bodies_spliced_total{end=\"client\"}",
        "Large response bodies of known length spliced between plain sockets: to their end, or until the client fell behind (the rest then went through the read-ahead).",
    ),
    (
        Counter::BodySpliceFallbacks,
        "hipache_response_bodies_spliced_total{end=\"read_ahead\"}",
        "",
    ),
    (
        Counter::UploadsSpliced,
        "hipache_request_bodies_spliced_total",
        "Large request bodies of known length spliced from the client's socket to the backend's.",
    ),
];

const N_COUNTERS: usize = 37;

/// Values that go up and down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Gauge {
    ClientConnections,
    BackendConnections,
    OpenTunnels,
    CacheEntries,
    /// 1 when the worker's Redis connection is up.
    RedisUp,
    /// 1 when the worker receives route-change notifications.
    NotificationsUp,
    /// Sentinel failovers (`+switch-master`) this worker has followed.
    RedisFailovers,
    /// Names (with or without a certificate) in the per-core certificate cache.
    TlsCertificateCacheEntries,
    /// Large body buffers lent to exchanges (`dataplane::buffers::LargeBufPool`).
    LargeBodyBuffers,
}

const GAUGES: &[(Gauge, &str, &str)] = &[
    (
        Gauge::ClientConnections,
        "hipache_client_connections",
        "Open client connections.",
    ),
    (
        Gauge::BackendConnections,
        "hipache_backend_connections",
        "Open backend connections (idle and busy).",
    ),
    (
        Gauge::OpenTunnels,
        "hipache_websocket_tunnels_open",
        "Open WebSocket tunnels.",
    ),
    (
        Gauge::CacheEntries,
        "hipache_route_cache_entries",
        "Hosts in the route caches.",
    ),
    (
        Gauge::RedisUp,
        "hipache_redis_up",
        "Workers whose Redis connection is up.",
    ),
    (
        Gauge::NotificationsUp,
        "hipache_route_notifications_up",
        "Workers receiving route-change notifications.",
    ),
    (
        Gauge::RedisFailovers,
        "hipache_redis_failovers_seen",
        "Sentinel failovers (+switch-master) followed, summed over workers (each follows the sentinels itself).",
    ),
    (
        Gauge::TlsCertificateCacheEntries,
        "hipache_tls_certificate_cache_entries",
        "Names in the per-core certificate caches (certificates and remembered misses).",
    ),
    (
        Gauge::LargeBodyBuffers,
        "hipache_large_body_buffers",
        "Large (256 KiB) body buffers held by exchanges now, at most 64 per worker.",
    ),
];

const N_GAUGES: usize = 9;

/// Latency histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Hist {
    /// From the request head to the end of the response.
    Total,
    /// From the backend attempt to the end of the response.
    Backend,
    /// Age of the cached route used by a request.
    RouteAge,
    /// From a Redis write to its change notification (measured with a probe key).
    InvalidationLag,
}

const HISTS: &[(Hist, &str, &str)] = &[
    (
        Hist::Total,
        "hipache_request_duration_seconds",
        "Time from request head to the end of the response.",
    ),
    (
        Hist::Backend,
        "hipache_backend_duration_seconds",
        "Time spent on the backend exchange.",
    ),
    (
        Hist::RouteAge,
        "hipache_route_age_seconds",
        "Age of the cached route used by a request.",
    ),
    (
        Hist::InvalidationLag,
        "hipache_invalidation_lag_seconds",
        "From a Redis write to its change notification (probe).",
    ),
];

const N_HISTS: usize = 4;

/// Bucket upper bounds, in seconds.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    /// One per bucket, plus +Inf.
    buckets: [AtomicU64; 17],
    sum_micros: AtomicU64,
}

/// One worker's metrics. Aligned so that two workers' slots never share a cache line.
#[repr(align(128))]
pub struct WorkerSlot {
    counters: [AtomicU64; N_COUNTERS],
    gauges: [AtomicI64; N_GAUGES],
    hists: [Histogram; N_HISTS],
    /// Unix seconds of the worker's last housekeeping tick (liveness for /status).
    pub heartbeat: AtomicU64,
}

impl Default for WorkerSlot {
    // By hand: `Default` is derived for arrays of at most 32 elements.
    fn default() -> Self {
        WorkerSlot {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            gauges: std::array::from_fn(|_| AtomicI64::new(0)),
            hists: std::array::from_fn(|_| Histogram::default()),
            heartbeat: AtomicU64::new(0),
        }
    }
}

#[inline]
fn bump(a: &AtomicU64, n: u64) {
    // Single writer: a plain load and store, no locked instruction.
    a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl WorkerSlot {
    #[inline]
    pub fn inc(&self, c: Counter) {
        bump(&self.counters[c as usize], 1);
    }

    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        bump(&self.counters[c as usize], n);
    }

    #[inline]
    pub fn set(&self, g: Gauge, v: i64) {
        self.gauges[g as usize].store(v, Ordering::Relaxed);
    }

    #[inline]
    pub fn gauge_add(&self, g: Gauge, delta: i64) {
        let a = &self.gauges[g as usize];
        a.store(a.load(Ordering::Relaxed) + delta, Ordering::Relaxed);
    }

    /// Counts a response by status class.
    #[inline]
    pub fn response(&self, status: u16) {
        let c = match status {
            100..=199 => Counter::Responses1xx,
            200..=299 => Counter::Responses2xx,
            300..=399 => Counter::Responses3xx,
            400..=499 => Counter::Responses4xx,
            _ => Counter::Responses5xx,
        };
        self.inc(c);
    }

    #[inline]
    pub fn observe(&self, h: Hist, secs: f64) {
        let hist = &self.hists[h as usize];
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        bump(&hist.buckets[i], 1);
        bump(&hist.sum_micros, (secs.max(0.0) * 1e6) as u64);
    }

    pub fn counter(&self, c: Counter) -> u64 {
        self.counters[c as usize].load(Ordering::Relaxed)
    }

    /// A histogram's per-bucket counts (not cumulative; the last one is +Inf), for the admin
    /// console's JSON form of /metrics.
    pub fn hist_buckets(&self, h: Hist) -> [u64; 17] {
        let hist = &self.hists[h as usize];
        std::array::from_fn(|i| hist.buckets[i].load(Ordering::Relaxed))
    }

    pub fn gauge(&self, g: Gauge) -> i64 {
        self.gauges[g as usize].load(Ordering::Relaxed)
    }
}

/// All workers' slots. Shared (`Arc`) between the workers and the admin listener.
pub struct Metrics {
    slots: Box<[WorkerSlot]>,
    started: Instant,
}

impl Metrics {
    pub fn new(workers: usize) -> Arc<Metrics> {
        Arc::new(Metrics {
            slots: (0..workers).map(|_| WorkerSlot::default()).collect(),
            started: Instant::now(),
        })
    }

    pub fn slot(&self, worker: usize) -> &WorkerSlot {
        &self.slots[worker.min(self.slots.len() - 1)]
    }

    pub fn workers(&self) -> usize {
        self.slots.len()
    }

    /// Time since the slots were created (process start-up).
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// A counter summed over workers.
    pub fn total(&self, c: Counter) -> u64 {
        self.slots.iter().map(|s| s.counter(c)).sum()
    }

    /// A gauge summed over workers.
    pub fn gauge_total(&self, g: Gauge) -> i64 {
        self.slots.iter().map(|s| s.gauge(g)).sum()
    }

    /// Prometheus text exposition format 0.0.4: totals, plus per-worker response counters.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let mut last_family = "";
        for (c, name, help) in COUNTERS {
            let family = name.split('{').next().unwrap_or(name);
            if family != last_family {
                let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} counter");
                last_family = family;
            }
            let _ = writeln!(out, "{name} {}", self.total(*c));
        }
        let _ = writeln!(out, "# HELP hipache_worker_responses_total Responses sent, by worker.\n# TYPE hipache_worker_responses_total counter");
        for (i, s) in self.slots.iter().enumerate() {
            let n: u64 = [
                Counter::Responses1xx,
                Counter::Responses2xx,
                Counter::Responses3xx,
                Counter::Responses4xx,
                Counter::Responses5xx,
            ]
            .iter()
            .map(|c| s.counter(*c))
            .sum();
            let _ = writeln!(out, "hipache_worker_responses_total{{worker=\"{i}\"}} {n}");
        }
        for (g, name, help) in GAUGES {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                self.gauge_total(*g)
            );
        }
        for (h, name, help) in HISTS {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            let mut cumulative = 0u64;
            let mut count_by_bucket = [0u64; 17];
            let mut sum_micros = 0u64;
            for s in self.slots.iter() {
                let hist = &s.hists[*h as usize];
                for (i, b) in hist.buckets.iter().enumerate() {
                    count_by_bucket[i] += b.load(Ordering::Relaxed);
                }
                sum_micros += hist.sum_micros.load(Ordering::Relaxed);
            }
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += count_by_bucket[i];
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
            }
            cumulative += count_by_bucket[BUCKETS.len()];
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
            let _ = writeln!(out, "{name}_sum {}", sum_micros as f64 / 1e6);
            let _ = writeln!(out, "{name}_count {cumulative}");
        }
        let _ = writeln!(
            out,
            "# HELP hipache_uptime_seconds Seconds since start.\n# TYPE hipache_uptime_seconds gauge\nhipache_uptime_seconds {}",
            self.started.elapsed().as_secs()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_cover_every_variant_in_order() {
        assert_eq!(COUNTERS.len(), N_COUNTERS);
        for (i, (c, _, _)) in COUNTERS.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        assert_eq!(GAUGES.len(), N_GAUGES);
        for (i, (g, _, _)) in GAUGES.iter().enumerate() {
            assert_eq!(*g as usize, i);
        }
        assert_eq!(HISTS.len(), N_HISTS);
    }

    #[test]
    fn sums_over_workers_and_renders() {
        let m = Metrics::new(2);
        m.slot(0).response(200);
        m.slot(1).response(204);
        m.slot(1).response(502);
        m.slot(0).observe(Hist::Total, 0.003);
        m.slot(1).set(Gauge::ClientConnections, 3);
        let text = m.render();
        assert!(
            text.contains("hipache_responses_total{class=\"2xx\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("hipache_responses_total{class=\"5xx\"} 1\n"));
        assert!(text.contains("hipache_worker_responses_total{worker=\"1\"} 2\n"));
        assert!(text.contains("hipache_request_duration_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("hipache_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("hipache_client_connections 3\n"));
        assert_eq!(std::mem::align_of::<WorkerSlot>(), 128);
    }
}
