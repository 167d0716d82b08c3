//! `POST /certificates/:name/acme` (README "Admin API" and "Automatic HTTPS (ACME)"): an explicit ACME
//! order, handed to the ACME task on this same control thread. Answers 202 once queued; the order
//! itself runs in the background (its outcome is in the log, in `tls:<name>` and in
//! `hipache_acme_orders_total`).
//!
//! Validation only: this module never talks to the CA or to Redis.

use super::http::Response;
use super::AdminCtx;
use crate::control::acme::{self, HandoffError};

/// Queues an order for `raw_name`: any exact host name (also one only a wildcard frontend serves);
/// a wildcard name itself is refused with 400 (HTTP-01 and TLS-ALPN-01 cannot validate it).
pub fn order(ctx: &AdminCtx, raw_name: &str) -> Response {
    if ctx.config.acme.is_none() {
        return Response::error(
            409,
            "ACME is not configured: add an `acme` section with a `directory` to the configuration",
        );
    }
    let name = match acme::orderable_name(raw_name) {
        Ok(n) => n,
        Err(e) => return Response::error(400, e),
    };
    match acme::order_explicitly(&name) {
        Ok(()) => Response::json(
            202,
            &serde_json::json!({
                "name": name,
                "status": "queued",
                "certificate": format!("tls:{name}"),
            }),
        ),
        Err(HandoffError::NotRunning) => Response::error(
            503,
            "the ACME client is not running (it needs the Redis driver; see the log)",
        ),
        Err(HandoffError::Full) => Response::error(
            503,
            format!(
                "{} ACME orders are already waiting; try again later",
                acme::MAX_HANDOFF
            ),
        ),
    }
}

/// `hipache_acme_orders_total` (this process's orders; the ACME task runs on the control thread).
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering;
    let _ = writeln!(
        out,
        "# HELP hipache_acme_orders_total ACME orders made by this instance, by outcome.\n\
         # TYPE hipache_acme_orders_total counter\n\
         hipache_acme_orders_total{{result=\"ok\"}} {}\n\
         hipache_acme_orders_total{{result=\"failed\"}} {}",
        acme::ORDERS_OK.load(Ordering::Relaxed),
        acme::ORDERS_FAILED.load(Ordering::Relaxed)
    );
}
