//! The one data-plane error: what went wrong while serving a request ([`ErrorKind`]), which side
//! failed ([`Side`]), whether another backend may be tried, whether the backend is marked dead, and what
//! the client is answered (docs/compatibility.md §3 and §6).
//!
//! Every failure site returns a [`ProxyError`] and decides nothing else: the retry loop
//! (`proxy::forward`) acts on [`ErrorKind::retryable`] and [`ErrorKind::marks_backend`], and only
//! `proxy::pipeline::fail_to_proxy` turns an error into the answer, the exchange's log fields and the
//! metrics. So every status code and reason text the proxy sends on its own is in this file.
//!
//! Pure data: no I/O, no state.

use crate::common::metrics::Counter;
use crate::dataplane::http1::head::HeadError;

/// Which side of the proxy a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client's request or connection.
    Client,
    /// Routing: the driver, the frontend's list, the proxy's own limits.
    Proxy,
    /// A backend: its connection or its answer.
    Backend,
}

/// What went wrong. The variant decides the answer; the detail (an `io::Error`, a backend URL) goes to
/// the log where it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    // --- The client's request ---
    /// The head could not be read as HTTP: the parser's status (400/405/417/431/501) and reason.
    BadHead(HeadError),
    MissingHost,
    InvalidHost,
    /// Over 253 bytes, or a label over 63 (`routing::host`).
    HostTooLong,
    MalformedRequestBody,
    /// A body over the frontend's `max_body`, found while reading it.
    BodyTooLarge,
    /// The client went away, or was too slow to read or send: nothing can be answered.
    ClientGone,

    // --- Routing and the proxy's own limits ---
    NoFrontend,
    /// The driver could not answer and nothing was cached.
    RoutesUnavailable,
    /// The frontend's list names no backend.
    NoBackend,
    AcmeChallengeNotFound,
    AcmeChallengeUnavailable,
    /// Every backend is marked dead (or drained by a weight of 0).
    AllBackendsDead,
    /// Every attempt `retryOnError` allows failed.
    RetriesExhausted,
    /// `maxSockets` connections to the backend are busy and as many requests wait.
    BackendSaturated,
    /// The client holds `maxSocketsPerClient` backend connections.
    ClientLimit,

    // --- One attempt at one backend ---
    /// The list entry is not a usable URL (logged when the route was built).
    UnusableEntry,
    ResolveFailed,
    ConnectFailed,
    /// Sending the head or the body in hand failed.
    WriteFailed,
    /// Closed or reset before any response byte.
    ClosedBeforeAnswer,
    /// Closed after part of a response head.
    ClosedMidHead,
    /// Stopped reading a streamed upload and sent no answer.
    ClosedDuringUpload,
    /// No response head within the backend timeout.
    HeadTimeout,
    InvalidResponse,
    /// More than `relay::MAX_INTERIM` 1xx answers.
    TooManyInterim,
    /// `101` to a request that asked for no upgrade.
    UnaskedUpgrade,
    MalformedChunkedResponse,
    /// The exchange broke after part of the answer was sent: the connection closes.
    BrokenMidResponse,
}

/// The reason of the 400 for a host no frontend serves (the only 400 with the "No Application
/// Configured" page).
pub const NO_FRONTEND: &str = "no frontend for this host";

impl ErrorKind {
    /// Which side failed.
    pub fn side(self) -> Side {
        use ErrorKind::*;
        match self {
            BadHead(_) | MissingHost | InvalidHost | HostTooLong | MalformedRequestBody
            | BodyTooLarge | ClientGone => Side::Client,
            NoFrontend
            | RoutesUnavailable
            | NoBackend
            | AcmeChallengeNotFound
            | AcmeChallengeUnavailable
            | AllBackendsDead
            | RetriesExhausted
            | BackendSaturated
            | ClientLimit
            | UnusableEntry => Side::Proxy,
            ResolveFailed
            | ConnectFailed
            | WriteFailed
            | ClosedBeforeAnswer
            | ClosedMidHead
            | ClosedDuringUpload
            | HeadTimeout
            | InvalidResponse
            | TooManyInterim
            | UnaskedUpgrade
            | MalformedChunkedResponse
            | BrokenMidResponse => Side::Backend,
        }
    }

    /// Another backend may be tried (when the request can still be re-sent): nothing reached a
    /// backend that answered.
    pub fn retryable(self) -> bool {
        use ErrorKind::*;
        matches!(
            self,
            UnusableEntry | ResolveFailed | ConnectFailed | WriteFailed | ClosedBeforeAnswer
        )
    }

    /// The backend is marked dead (docs/compatibility.md §3): a connection-level failure, or no head
    /// in time. An answer the proxy cannot use (malformed, too many 1xx) does not mark: the backend is
    /// alive, only broken for this request.
    pub fn marks_backend(self) -> bool {
        use ErrorKind::*;
        matches!(
            self,
            ResolveFailed | ConnectFailed | WriteFailed | ClosedBeforeAnswer | HeadTimeout
        )
    }

    /// A pooled connection failing this way may just have been closed by the backend while idle: try
    /// once more on a fresh connection to the same backend, without marking it.
    pub fn stale_connection(self) -> bool {
        matches!(self, ErrorKind::WriteFailed | ErrorKind::ClosedBeforeAnswer)
    }

    /// The status the client gets, or `None` when nothing can be answered (the connection closes).
    pub fn status(self) -> Option<u16> {
        use ErrorKind::*;
        Some(match self {
            BadHead(e) => e.status,
            MissingHost | InvalidHost | HostTooLong | MalformedRequestBody | NoFrontend => 400,
            AcmeChallengeNotFound => 404,
            BodyTooLarge => 413,
            RoutesUnavailable | AcmeChallengeUnavailable | BackendSaturated | ClientLimit => 503,
            HeadTimeout => 504,
            NoBackend
            | AllBackendsDead
            | RetriesExhausted
            | UnusableEntry
            | ResolveFailed
            | ConnectFailed
            | WriteFailed
            | ClosedBeforeAnswer
            | ClosedMidHead
            | ClosedDuringUpload
            | InvalidResponse
            | TooManyInterim
            | UnaskedUpgrade
            | MalformedChunkedResponse => 502,
            ClientGone | BrokenMidResponse => return None,
        })
    }

    /// The reason, for the debug log and `X-Debug-Error` (`server.debug`).
    pub fn reason(self) -> &'static str {
        use ErrorKind::*;
        match self {
            BadHead(e) => e.reason,
            MissingHost => "missing Host header",
            InvalidHost => "invalid Host header",
            HostTooLong => "Host name too long (over 253 bytes, or a label over 63)",
            MalformedRequestBody => "malformed chunked request body",
            BodyTooLarge => "request body over the frontend's max_body",
            ClientGone => "client closed the connection or was too slow",
            NoFrontend => NO_FRONTEND,
            RoutesUnavailable => "routes unavailable (driver unreachable)",
            NoBackend => "frontend has no backend",
            AcmeChallengeNotFound => "no such ACME challenge",
            AcmeChallengeUnavailable => "ACME challenge: Redis unavailable",
            AllBackendsDead => "all backends are marked dead (or drained)",
            RetriesExhausted => "backends failed (retries exhausted)",
            BackendSaturated => "backend connection limit (maxSockets) reached",
            ClientLimit => "client connection limit (maxSocketsPerClient) reached",
            UnusableEntry => "unusable backend entry",
            ResolveFailed => "cannot resolve backend",
            ConnectFailed => "cannot connect to backend",
            WriteFailed => "cannot send the request to backend",
            ClosedBeforeAnswer => "backend closed the connection",
            ClosedMidHead => "backend closed the connection mid-response",
            ClosedDuringUpload => "backend closed the connection during the upload",
            HeadTimeout => "backend timed out",
            InvalidResponse => "invalid response from backend",
            TooManyInterim => "too many interim (1xx) responses from backend",
            UnaskedUpgrade => "backend switched protocols unasked",
            MalformedChunkedResponse => "malformed chunked response from backend",
            BrokenMidResponse => "exchange broke mid-response",
        }
    }

    /// The counter an answered failure of this kind adds to, besides the response's status class.
    /// (Per-attempt backend failures are counted by the retry loop, once per attempt.)
    pub fn counter(self) -> Option<Counter> {
        match self {
            ErrorKind::BadHead(_) => Some(Counter::RejectedRequests),
            ErrorKind::BodyTooLarge => Some(Counter::RejectedMaxBody),
            _ => None,
        }
    }
}

/// How much of the request body the failed exchange consumed: decides whether the connection can
/// carry another request after the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLeft {
    /// The body was not looked at: the answer skips it if it is all in the buffer, else closes.
    Untouched,
    /// The whole body was read.
    Consumed,
    /// Part of it is still on the wire: close after the answer.
    Unconsumed,
}

/// A failure on the request path, as `fail_to_proxy` answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub body: BodyLeft,
}

impl ProxyError {
    /// A failure after the forward phase took the body in hand (`complete`: all of it).
    pub fn after_body(kind: ErrorKind, complete: bool) -> Self {
        ProxyError {
            kind,
            body: if complete {
                BodyLeft::Consumed
            } else {
                BodyLeft::Unconsumed
            },
        }
    }
}

impl From<ErrorKind> for ProxyError {
    /// A failure before the body was looked at.
    fn from(kind: ErrorKind) -> Self {
        ProxyError {
            kind,
            body: BodyLeft::Untouched,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[ErrorKind] = &[
        ErrorKind::MissingHost,
        ErrorKind::InvalidHost,
        ErrorKind::HostTooLong,
        ErrorKind::MalformedRequestBody,
        ErrorKind::BodyTooLarge,
        ErrorKind::ClientGone,
        ErrorKind::NoFrontend,
        ErrorKind::RoutesUnavailable,
        ErrorKind::NoBackend,
        ErrorKind::AcmeChallengeNotFound,
        ErrorKind::AcmeChallengeUnavailable,
        ErrorKind::AllBackendsDead,
        ErrorKind::RetriesExhausted,
        ErrorKind::BackendSaturated,
        ErrorKind::ClientLimit,
        ErrorKind::UnusableEntry,
        ErrorKind::ResolveFailed,
        ErrorKind::ConnectFailed,
        ErrorKind::WriteFailed,
        ErrorKind::ClosedBeforeAnswer,
        ErrorKind::ClosedMidHead,
        ErrorKind::ClosedDuringUpload,
        ErrorKind::HeadTimeout,
        ErrorKind::InvalidResponse,
        ErrorKind::TooManyInterim,
        ErrorKind::UnaskedUpgrade,
        ErrorKind::MalformedChunkedResponse,
        ErrorKind::BrokenMidResponse,
    ];

    #[test]
    fn retryable_failures_are_backend_or_entry_failures_and_answerable() {
        for &k in ALL {
            if k.retryable() {
                assert_ne!(k.side(), Side::Client, "{k:?}");
                assert_eq!(k.status(), Some(502), "{k:?}");
            }
            if k.stale_connection() {
                assert!(k.retryable() && k.marks_backend(), "{k:?}");
            }
            if k.marks_backend() {
                assert_eq!(k.side(), Side::Backend, "{k:?}");
            }
        }
    }

    #[test]
    fn only_broken_exchanges_have_no_answer() {
        for &k in ALL {
            let unanswerable = matches!(k, ErrorKind::ClientGone | ErrorKind::BrokenMidResponse);
            assert_eq!(k.status().is_none(), unanswerable, "{k:?}");
            assert!(!k.reason().is_empty());
        }
        let head = HeadError {
            status: 431,
            reason: "x",
        };
        assert_eq!(ErrorKind::BadHead(head).status(), Some(431));
        assert_eq!(
            ErrorKind::BadHead(head).counter(),
            Some(Counter::RejectedRequests)
        );
    }

    #[test]
    fn body_state_follows_the_forward_phase() {
        assert_eq!(
            ProxyError::from(ErrorKind::NoFrontend).body,
            BodyLeft::Untouched
        );
        assert_eq!(
            ProxyError::after_body(ErrorKind::HeadTimeout, true).body,
            BodyLeft::Consumed
        );
        assert_eq!(
            ProxyError::after_body(ErrorKind::HeadTimeout, false).body,
            BodyLeft::Unconsumed
        );
    }
}
