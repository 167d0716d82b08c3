//! `/certificates` on the admin API (README "Admin API", "Certificates in Redis"): list the
//! certificates in Redis (`tls:*`, SCAN, bounded) and in the listeners' files, whole or a page at a
//! time (`?cursor=&count=`: the Redis SCAN walked in bounded steps, then the file certificates), read
//! one, write one after checking it (parses, key matches, covers the name, not expired: 400 naming
//! the reason otherwise), delete one.
//!
//! Runs on the admin (control-plane) thread; it only talks to Redis and builds answers, never touches
//! a worker's cache (workers learn of changes through their notifications).

use std::collections::BTreeMap;

use redis::Value;

use super::api::{glob_escape, ApiStore, MAX_PAGE};
use super::http::{Request, Response};
use crate::tls::redis_certs::{check_pem, date_of};
use crate::tls::x509_lite;

/// Most names one `GET /certificates` lists (the answer says when it stopped there).
pub const MAX_LISTED: usize = 10_000;
/// Keys read per pipelined batch while listing.
const BATCH: usize = 100;
/// Names per page of `GET /certificates?cursor=` when `count` is not given.
const DEFAULT_PAGE: usize = 100;

/// Where a page of `GET /certificates` starts: the Redis SCAN at a cursor, or the file
/// certificates (sorted by name) at an index. Written `r<scan cursor>` and `f<index>` in the
/// answer's `next` (opaque to clients).
#[derive(Debug, PartialEq)]
enum PageCursor {
    Redis(String),
    Files(usize),
}

impl PageCursor {
    /// `None` or `""` or `"0"`: the start.
    fn parse(raw: Option<&str>) -> Option<PageCursor> {
        let raw = raw.unwrap_or("").trim();
        if raw.is_empty() || raw == "0" {
            return Some(PageCursor::Redis("0".into()));
        }
        let digits = |d: &str, max: usize| {
            !d.is_empty() && d.len() <= max && d.bytes().all(|b| b.is_ascii_digit())
        };
        if let Some(d) = raw.strip_prefix('r').filter(|d| digits(d, 20)) {
            return Some(PageCursor::Redis(d.to_string()));
        }
        let d = raw.strip_prefix('f').filter(|d| digits(d, 9))?;
        d.parse().ok().map(PageCursor::Files)
    }

    fn render(&self) -> String {
        match self {
            PageCursor::Redis(c) => format!("r{c}"),
            PageCursor::Files(i) => format!("f{i}"),
        }
    }
}

/// A certificate name in a URL: a host name or a one-label wildcard, lowercased.
fn cert_name(raw: &str) -> Result<String, Response> {
    let name = raw.trim_end_matches('.').to_ascii_lowercase();
    let host = name.strip_prefix("*.").unwrap_or(&name);
    if crate::tls::redis_certs::normalize(host).as_deref() != Some(host) || host.contains('*') {
        return Err(Response::error(
            400,
            format!(
                "Invalid certificate name {raw:?}: a host name (www.a.com) or a wildcard (*.a.com)"
            ),
        ));
    }
    Ok(name)
}

/// What the list shows of one certificate.
fn describe(name: &str, leaf_der: Option<&[u8]>, source: &str) -> serde_json::Value {
    let not_after = leaf_der.and_then(x509_lite::not_after);
    serde_json::json!({
        "name": name,
        "notAfter": not_after.map(date_of),
        "notAfterUnix": not_after,
        "issuer": leaf_der.and_then(x509_lite::issuer_name),
        "source": source,
    })
}

fn leaf_of(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .next()?
        .ok()
        .map(|c| c.as_ref().to_vec())
}

fn bulk(v: Option<&Value>) -> Option<&[u8]> {
    match v {
        Some(Value::BulkString(b)) => Some(b),
        _ => None,
    }
}

impl ApiStore {
    fn tls_key(&self, name: &str) -> String {
        format!("{}tls:{name}", self.prefix)
    }

    /// GET /certificates
    pub async fn certificates(&self) -> Response {
        let pattern = format!("{}tls:*", glob_escape(&self.prefix));
        let keys = match self.scan(&self.read, &pattern).await {
            Ok(k) => k,
            Err(r) => return r,
        };
        let truncated = keys.len() > MAX_LISTED;
        let strip = self.tls_key("");
        let names: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&strip))
            .take(MAX_LISTED)
            .collect();
        let mut out = match self.describe_redis(&names).await {
            Ok(o) => o,
            Err(r) => return r,
        };
        for (name, key) in crate::tls::file_certificates() {
            let leaf = key.cert.first().map(|c| c.as_ref().to_vec());
            out.entry((name.clone(), "file"))
                .or_insert_with(|| describe(&name, leaf.as_deref(), "file"));
        }
        let list: Vec<serde_json::Value> = out.into_values().collect();
        let mut r = Response::json(200, &serde_json::json!(list));
        if truncated {
            r = r.with_header(
                "X-Truncated",
                format!("first {MAX_LISTED} names; page with ?cursor=0&count=500"),
            );
        }
        r
    }

    /// `GET /certificates?cursor=<c>&count=<n>`: one page, `{"certificates": [...], "next": c|null}`:
    /// the Redis SCAN first (sorted within a page; a key may show up twice when Redis rehashes during
    /// the walk, as with SCAN), then the file certificates sorted by name.
    pub async fn certificates_page(&self, req: &Request) -> Response {
        let Some(cursor) = PageCursor::parse(req.param("cursor")) else {
            return Response::error(
                400,
                "Invalid 'cursor': give back the 'next' of the previous page (or 0 to start)",
            );
        };
        let count = match req.param("count").map(str::trim) {
            None | Some("") => DEFAULT_PAGE,
            Some(c) => match c.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    return Response::error(
                        400,
                        format!("Invalid 'count': a number from 1 to {MAX_PAGE}"),
                    )
                }
            },
        };
        let mut list: Vec<serde_json::Value> = Vec::new();
        let mut next = None;
        let mut files_from = None;
        match cursor {
            PageCursor::Redis(start) => {
                let pattern = format!("{}tls:*", glob_escape(&self.prefix));
                let strip = self.tls_key("");
                // SCAN's COUNT is a hint: ask for what the page still has room for, so that a
                // page holds at most a few more than `count`.
                let room = |found: usize| count.saturating_sub(found).max(1);
                let (at, names) = match self.scan_names(&start, &pattern, &strip, count, room).await
                {
                    Ok(r) => r,
                    Err(r) => return r,
                };
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                match self.describe_redis(&names).await {
                    Ok(out) => list.extend(out.into_values()),
                    Err(r) => return r,
                }
                if at == "0" {
                    files_from = Some(0);
                } else {
                    next = Some(PageCursor::Redis(at));
                }
            }
            PageCursor::Files(i) => files_from = Some(i),
        }
        if let Some(from) = files_from {
            let mut files = crate::tls::file_certificates();
            files.sort_by(|a, b| a.0.cmp(&b.0));
            let room = count.saturating_sub(list.len());
            let end = from.saturating_add(room).min(files.len());
            for (name, key) in files.get(from..end).unwrap_or_default() {
                let leaf = key.cert.first().map(|c| c.as_ref().to_vec());
                list.push(describe(name, leaf.as_deref(), "file"));
            }
            if end.max(from) < files.len() {
                next = Some(PageCursor::Files(end.max(from)));
            }
        }
        Response::json(
            200,
            &serde_json::json!({
                "certificates": list,
                "next": next.map(|c| c.render()),
            }),
        )
    }

    /// What the list shows of each `tls:<name>` (names deleted meanwhile, or not certificate
    /// hashes, are left out), by (name, source).
    async fn describe_redis(
        &self,
        names: &[&str],
    ) -> Result<BTreeMap<(String, &'static str), serde_json::Value>, Response> {
        let mut out: BTreeMap<(String, &'static str), serde_json::Value> = BTreeMap::new();
        for batch in names.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for n in batch {
                pipe.cmd("HMGET")
                    .arg(self.tls_key(n))
                    .arg("certificate")
                    .arg("acme");
            }
            let replies = match self
                .read
                .query(&pipe.get_packed_pipeline(), batch.len())
                .await
            {
                Ok(r) => r,
                Err(e) => return Err(Response::error(503, format!("{e}; try again"))),
            };
            for (n, v) in batch.iter().zip(replies) {
                let Value::Array(fields) = v else { continue };
                let Some(pem) = bulk(fields.first()) else {
                    continue; // deleted meanwhile, or not a certificate hash
                };
                let source = if bulk(fields.get(1)) == Some(b"1") {
                    "acme"
                } else {
                    "redis"
                };
                let leaf = leaf_of(pem);
                out.insert(
                    ((*n).to_string(), source),
                    describe(n, leaf.as_deref(), source),
                );
            }
        }
        Ok(out)
    }

    /// GET /certificates/:name
    pub async fn certificate(&self, raw: &str) -> Response {
        let name = match cert_name(raw) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let packed = redis::cmd("HMGET")
            .arg(self.tls_key(&name))
            .arg("certificate")
            .arg("acme")
            .get_packed_command();
        let v = match self.read.query(&packed, 1).await {
            Ok(mut r) => r.pop().unwrap_or(Value::Nil),
            Err(e) => return Response::error(503, format!("{e}; try again")),
        };
        if let Value::Array(fields) = &v {
            if let Some(pem) = bulk(fields.first()) {
                let source = if bulk(fields.get(1)) == Some(b"1") {
                    "acme"
                } else {
                    "redis"
                };
                let mut d = describe(&name, leaf_of(pem).as_deref(), source);
                d["certificate"] =
                    serde_json::Value::String(String::from_utf8_lossy(pem).into_owned());
                return Response::json(200, &d);
            }
        }
        if let Some((_, key)) = crate::tls::file_certificates()
            .into_iter()
            .find(|(n, _)| *n == name)
        {
            let leaf = key.cert.first().map(|c| c.as_ref().to_vec());
            return Response::json(200, &describe(&name, leaf.as_deref(), "file"));
        }
        Response::error(
            404,
            format!("No certificate {name} in Redis or in the files"),
        )
    }

    /// PUT /certificates/:name with `certificate` and `key` (JSON or form).
    pub async fn put_certificate(&self, raw: &str, req: &Request) -> Response {
        let name = match cert_name(raw) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let (Some(cert), Some(key)) = (req.param("certificate"), req.param("key")) else {
            return Response::error(
                400,
                "Send {\"certificate\": PEM chain (leaf first), \"key\": PEM private key}",
            );
        };
        let checked = match check_pem(
            cert.as_bytes(),
            key.as_bytes(),
            &name,
            crate::common::clock::unix_now() as i64,
        ) {
            Ok(c) => c,
            Err(why) => {
                return Response::error(400, format!("Certificate for {name} refused: {why}"))
            }
        };
        // A replaced hash loses the ACME fields: it is the operator's certificate now.
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("DEL").arg(self.tls_key(&name));
        pipe.cmd("HSET")
            .arg(self.tls_key(&name))
            .arg("certificate")
            .arg(cert)
            .arg("key")
            .arg(key);
        // MULTI, DEL, HSET, EXEC: four replies.
        match self.write.query(&pipe.get_packed_pipeline(), 4).await {
            Ok(replies) => {
                if let Some(Value::ServerError(e)) =
                    replies.iter().find(|v| matches!(v, Value::ServerError(_)))
                {
                    return Response::error(
                        500,
                        format!("Redis: {} {}", e.code(), e.details().unwrap_or("")),
                    );
                }
            }
            Err(e) => return Response::error(503, format!("{e}; try again")),
        }
        Response::json(
            200,
            &serde_json::json!({
                "name": name,
                "notAfter": date_of(checked.not_after),
                "issuer": checked.issuer,
                "names": checked.names,
                "source": "redis",
            }),
        )
    }

    /// DELETE /certificates/:name
    pub async fn delete_certificate(&self, raw: &str) -> Response {
        let name = match cert_name(raw) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let packed = redis::cmd("DEL")
            .arg(self.tls_key(&name))
            .get_packed_command();
        match self.write.query(&packed, 1).await {
            Ok(r) if matches!(r.first(), Some(Value::Int(1))) => {
                Response::message(&format!("Certificate {name} deleted"))
            }
            Ok(_) => Response::error(404, format!("No certificate {name} in Redis")),
            Err(e) => Response::error(503, format!("{e}; try again")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PageCursor;

    #[test]
    fn page_cursors() {
        let start = Some(PageCursor::Redis("0".into()));
        assert_eq!(PageCursor::parse(None), start);
        assert_eq!(PageCursor::parse(Some("")), start);
        assert_eq!(PageCursor::parse(Some("0")), start);
        for c in [PageCursor::Redis("1792".into()), PageCursor::Files(3)] {
            assert_eq!(PageCursor::parse(Some(&c.render())), Some(c));
        }
        for bad in [
            "r",
            "f",
            "x1",
            "r-1",
            "f1e3",
            "1792",
            &format!("r{}", "9".repeat(21)),
        ] {
            assert_eq!(PageCursor::parse(Some(bad)), None, "{bad}");
        }
    }
}
