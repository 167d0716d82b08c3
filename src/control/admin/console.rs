//! The web console's static files (HTML, CSS, JavaScript in `console/`), compiled into the binary
//! with `include_str!`: no CDN, no build step, nothing read from disk at run time.
//!
//! It only serves these fixed bytes, with a strict `Content-Security-Policy` (scripts, styles and
//! connections from this origin only, no inline script or style, no framing). It holds no data and
//! needs no key: the page asks the API for everything with the key the operator enters, sent as
//! `Authorization: Bearer` (kept in the tab's `sessionStorage`, never in a URL or a cookie). It must
//! not grow templating or per-request state: what the console shows comes from the API.

use super::http::Response;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_CSS: &str = include_str!("console/console.css");
const CONSOLE_JS: &str = include_str!("console/console.js");

/// Sent with every console file.
pub const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /` (from a browser), `/console`, `/console/index.html`, `/console/console.css`,
/// `/console/console.js`.
pub fn serve(segments: &[String]) -> Response {
    let file = match segments {
        [] => Some(("text/html; charset=utf-8", INDEX_HTML)),
        [c] if c == "console" => Some(("text/html; charset=utf-8", INDEX_HTML)),
        [c, f] if c == "console" => match f.as_str() {
            "index.html" => Some(("text/html; charset=utf-8", INDEX_HTML)),
            "console.css" => Some(("text/css; charset=utf-8", CONSOLE_CSS)),
            "console.js" => Some(("text/javascript; charset=utf-8", CONSOLE_JS)),
            _ => None,
        },
        _ => None,
    };
    match file {
        Some((content_type, body)) => Response {
            status: 200,
            content_type,
            body: body.as_bytes().to_vec(),
            headers: vec![
                ("Content-Security-Policy", CSP.to_string()),
                ("Referrer-Policy", "no-referrer".to_string()),
            ],
        },
        None => Response::error(404, "No such console file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_policy() {
        let s = |p: &[&str]| p.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let r = serve(&s(&[]));
        assert_eq!(r.status, 200);
        assert!(r.content_type.starts_with("text/html"));
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| *k == "Content-Security-Policy" && v == CSP));
        assert_eq!(
            serve(&s(&["console", "console.js"])).content_type,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(serve(&s(&["console", "nope.js"])).status, 404);
        assert_eq!(serve(&s(&["console", "a", "b"])).status, 404);
        // No inline script, style or event handler in the page (the policy would block them).
        for bad in [
            "<script>",
            "style=",
            " onclick",
            " onload",
            " onsubmit",
            "<style",
        ] {
            assert!(!INDEX_HTML.contains(bad), "index.html contains {bad:?}");
        }
    }
}
