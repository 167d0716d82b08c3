//! The proxy's own answers (docs/compatibility.md §6): status lines, bodies from `server.staticDir` (re-read at most once
//! a second per worker, so pages can be edited live) or built-in pages.
//!
//! Only builds bytes; sending them is the connection's job. File reads here are small and rare (once a
//! second per status code at most), the only file reads on a worker besides none.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

const RELOAD_EVERY: Duration = Duration::from_secs(1);

const PAGE_400: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>No Application Configured</title></head>\n<body><h1>No Application Configured</h1>\n<p>This domain is not associated with an application.</p></body></html>\n";
const PAGE_MALFORMED: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>400 Bad Request</title></head>\n<body><h1>Bad Request</h1>\n<p>The request was malformed: the proxy could not read it as HTTP.</p></body></html>\n";
const PAGE_5XX: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Application Not Responding</title></head>\n<body><h1>Application Not Responding</h1>\n<p>Please try again in a few moments.</p></body></html>\n";

/// The cache slot (and file name) of the page for malformed requests.
const MALFORMED: u16 = 0;

/// The reason phrase for a status code: the `http` crate's registered phrase, "Error" for a code it
/// does not know.
pub fn reason_phrase(status: u16) -> &'static str {
    if status == 413 {
        // RFC 9110's name, as the proxy always said; the `http` crate keeps RFC 7231's "Payload Too Large".
        return "Content Too Large";
    }
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

fn builtin_page(status: u16) -> String {
    match status {
        MALFORMED => PAGE_MALFORMED.to_string(),
        400 => PAGE_400.to_string(),
        500..=599 => PAGE_5XX.to_string(),
        _ => {
            let reason = reason_phrase(status);
            format!(
                "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{status} {reason}</title></head>\n<body><h1>{status} {reason}</h1></body></html>\n"
            )
        }
    }
}

struct CachedPage {
    body: Rc<[u8]>,
    loaded: Instant,
}

/// Error page bodies of one worker.
pub struct ErrorPages {
    dir: Option<PathBuf>,
    cache: RefCell<HashMap<u16, CachedPage>>,
}

impl ErrorPages {
    pub fn new(dir: Option<PathBuf>) -> Self {
        ErrorPages {
            dir,
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// The body for `status`: `error_<status>.html`, else `error_default.html`, else built in.
    pub fn body(&self, status: u16) -> Rc<[u8]> {
        if let Some(page) = self.cache.borrow().get(&status) {
            if page.loaded.elapsed() < RELOAD_EVERY {
                return page.body.clone();
            }
        }
        let body: Rc<[u8]> = self.load(status).into();
        self.cache.borrow_mut().insert(
            status,
            CachedPage {
                body: body.clone(),
                loaded: Instant::now(),
            },
        );
        body
    }

    /// The body of a 400 for a request that is not valid HTTP (a malformed head, bad framing): not
    /// Hipache's "No Application Configured", which is for unknown hosts. `error_malformed.html`,
    /// else `error_default.html`, else built in.
    pub fn malformed(&self) -> Rc<[u8]> {
        self.body(MALFORMED)
    }

    fn load(&self, status: u16) -> Vec<u8> {
        if let Some(dir) = &self.dir {
            let own = if status == MALFORMED {
                "error_malformed.html".to_string()
            } else {
                format!("error_{status}.html")
            };
            for name in [own, "error_default.html".to_string()] {
                if let Ok(bytes) = std::fs::read(dir.join(name)) {
                    return bytes;
                }
            }
        }
        builtin_page(status).into_bytes()
    }
}
