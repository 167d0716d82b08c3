//! A client of the admin listener (raw sockets, like every test client), and a proxy started with one.

use serde_json::{json, Value};

use super::client::{Conn, Response};
use super::proxy::merge;
use super::{free_port, Proxy, RedisServer};

/// The admin listener of a test proxy.
pub struct Admin {
    pub port: u16,
}

/// An admin answer: status, JSON body (or `Value::Null` when not JSON), the raw response.
pub struct Answer {
    pub status: u16,
    pub json: Value,
    pub response: Response,
}

impl Answer {
    /// The `error` field of an error answer.
    pub fn error(&self) -> String {
        self.json["error"].as_str().unwrap_or_default().to_string()
    }
}

impl Admin {
    /// Sends `method path` with extra headers and a body (form-encoded unless a Content-Type header
    /// says otherwise).
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut hdrs: Vec<(&str, &str)> = headers.to_vec();
        if !body.is_empty()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            hdrs.push(("Content-Type", "application/x-www-form-urlencoded"));
        }
        let response =
            Conn::open(self.port).request(method, "127.0.0.1", path, &hdrs, body.as_bytes());
        Answer {
            status: response.status,
            json: serde_json::from_slice(&response.body).unwrap_or(Value::Null),
            response,
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.call("GET", path, &[], "")
    }

    pub fn post(&self, path: &str, form: &str) -> Answer {
        self.call("POST", path, &[], form)
    }

    pub fn delete(&self, path: &str) -> Answer {
        self.call("DELETE", path, &[], "")
    }
}

/// A proxy routed by `redis` with an admin listener on a free port (`admin` settings merged in).
pub fn start_with_admin(redis: &RedisServer, admin: Value, extra: Value) -> (Proxy, Admin) {
    start_url_with_admin(&redis.url(0), admin, extra)
}

pub fn start_url_with_admin(redis_url: &str, admin: Value, extra: Value) -> (Proxy, Admin) {
    let port = free_port();
    let mut config = json!({ "admin": { "port": port } });
    merge(&mut config, json!({ "admin": admin }));
    merge(&mut config, extra);
    let proxy = Proxy::start_url(redis_url, config);
    (proxy, Admin { port })
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
