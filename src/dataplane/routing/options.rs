//! Per-frontend options (README "Per-frontend options"): the `frontend-options:<key>` hash of the
//! frontend key that matched, parsed once per lookup into an immutable [`FrontendOptions`] stored with
//! the route in the worker's cache.
//!
//! Everything in the hash is hostile until bounded: at most [`MAX_FIELDS`] fields are looked at, a
//! value over [`MAX_VALUE_BYTES`] is malformed, `weights` has at most one entry per backend. An unknown
//! field or a malformed value is ignored, with one warning per worker and per version of the hash
//! (naming key and field), never an error: the frontend keeps being served with the other fields.
//!
//! [`check_field`] is the same validation, as an error naming the field, for the admin API and the
//! routes file. Nothing here does I/O or decides anything at request time (that is `proxy::policy` and
//! `proxy::balance`).

use std::time::Duration;

/// Fields looked at in one hash (more are ignored, with a warning).
pub const MAX_FIELDS: usize = 32;
/// Longest value accepted (longer ones are malformed).
pub const MAX_VALUE_BYTES: usize = 256;
/// Largest weight of one backend.
pub const MAX_WEIGHT: u32 = 1000;
/// Largest `backend_timeout`, seconds.
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// Every field the hash may hold.
pub const FIELDS: &[&str] = &[
    "https_redirect",
    "hsts",
    "balance",
    "weights",
    "sticky",
    "maintenance",
    "max_connections",
    "rate",
    "backend_timeout",
    "max_body",
];

/// How a backend is chosen among the live ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    /// Uniformly at random (weighted when `weights` is set): Hipache's behaviour.
    #[default]
    Random,
    /// In turn, per worker.
    RoundRobin,
    /// Fewest requests in flight from this worker (relative to the weight).
    LeastConn,
    /// Rendezvous hash of the client address over the backend URLs.
    IpHash,
}

/// The parsed options of one frontend. `Default` = no hash (Hipache's behaviour).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FrontendOptions {
    pub https_redirect: bool,
    /// `Strict-Transport-Security: max-age=<n>` on HTTPS answers that lack one.
    pub hsts: Option<u64>,
    pub balance: Balance,
    /// One weight per backend (missing entries are 1); `None` = all 1.
    pub weights: Option<Box<[u32]>>,
    pub sticky: bool,
    pub maintenance: bool,
    /// Concurrent requests per instance (divided across workers at request time).
    pub max_connections: Option<u32>,
    /// Requests per second per client address (token bucket per worker).
    pub rate: Option<u32>,
    pub backend_timeout: Option<Duration>,
    pub max_body: Option<u64>,
}

impl FrontendOptions {
    /// True when every field is at its default (the common case: nothing to do per request).
    pub fn is_default(&self) -> bool {
        *self == FrontendOptions::default()
    }

    /// The weight of backend `index` (1 without `weights`).
    #[inline]
    pub fn weight(&self, index: usize) -> u32 {
        match &self.weights {
            None => 1,
            Some(w) => w.get(index).copied().unwrap_or(1),
        }
    }

    /// Parses the fields of a hash (as HGETALL returns them, or the routes file holds them) for a
    /// frontend with `backends` backends. Problems are returned as `(field, why)` for the caller to log.
    pub fn parse(fields: &[(String, String)], backends: usize) -> (FrontendOptions, Vec<String>) {
        let mut o = FrontendOptions::default();
        let mut problems = Vec::new();
        if fields.len() > MAX_FIELDS {
            problems.push(format!(
                "{} fields, only the first {MAX_FIELDS} are read",
                fields.len()
            ));
        }
        for (name, value) in fields.iter().take(MAX_FIELDS) {
            if let Err(why) = apply(&mut o, name, value, backends) {
                problems.push(why);
            }
        }
        (o, problems)
    }
}

/// Validates one field as the admin API and the routes file do (without a backend count: `weights`
/// is checked for form only). `Err` names the field and says what is wrong.
pub fn check_field(name: &str, value: &str) -> Result<(), String> {
    let mut o = FrontendOptions::default();
    apply(&mut o, name, value, usize::MAX)
}

fn flag(name: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" | "" => Ok(false),
        _ => Err(format!("field {name:?}: {v:?} is not 1 or 0")),
    }
}

fn number(name: &str, v: &str, min: u64, max: u64) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "field {name:?}: {v:?} is not a whole number from {min} to {max}"
        )),
    }
}

fn apply(o: &mut FrontendOptions, name: &str, value: &str, backends: usize) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "field {name:?}: value of {} bytes, over {MAX_VALUE_BYTES}",
            value.len()
        ));
    }
    let v = value.trim();
    match name {
        "https_redirect" => o.https_redirect = flag(name, v)?,
        "maintenance" => o.maintenance = flag(name, v)?,
        "hsts" => o.hsts = Some(number(name, v, 0, 1 << 31)?),
        "balance" => {
            o.balance = match v.to_ascii_lowercase().as_str() {
                "random" => Balance::Random,
                "roundrobin" => Balance::RoundRobin,
                "leastconn" => Balance::LeastConn,
                "iphash" => Balance::IpHash,
                _ => {
                    return Err(format!(
                        "field \"balance\": {v:?} is not random, roundrobin, leastconn or iphash"
                    ))
                }
            }
        }
        "sticky" => {
            o.sticky = match v.to_ascii_lowercase().as_str() {
                "cookie" => true,
                "" | "0" | "none" | "off" => false,
                _ => return Err(format!("field \"sticky\": {v:?} is not \"cookie\"")),
            }
        }
        "weights" => {
            let mut weights = Vec::new();
            for part in v.split(',') {
                if weights.len() >= backends.min(super::MAX_FRONTEND_ENTRIES) {
                    return Err(format!(
                        "field \"weights\": more weights than the {} backends",
                        backends.min(super::MAX_FRONTEND_ENTRIES)
                    ));
                }
                weights.push(number(name, part.trim(), 0, u64::from(MAX_WEIGHT))? as u32);
            }
            o.weights = Some(weights.into());
        }
        "max_connections" => o.max_connections = Some(number(name, v, 1, 1 << 31)? as u32),
        "rate" => o.rate = Some(number(name, v, 1, 1 << 31)? as u32),
        "max_body" => o.max_body = Some(number(name, v, 0, u64::MAX >> 1)?),
        "backend_timeout" => match v.parse::<f64>() {
            Ok(s) if s > 0.0 && s <= MAX_TIMEOUT_SECS => {
                o.backend_timeout = Some(Duration::from_secs_f64(s))
            }
            _ => {
                return Err(format!(
                    "field \"backend_timeout\": {v:?} is not a number of seconds above 0, at most {MAX_TIMEOUT_SECS}"
                ))
            }
        },
        _ => {
            let shown: String = name.chars().take(64).collect();
            return Err(format!(
                "unknown field {shown:?} (known: {})",
                FIELDS.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn every_field_parses() {
        let (o, problems) = FrontendOptions::parse(
            &f(&[
                ("https_redirect", "1"),
                ("hsts", "31536000"),
                ("balance", "roundrobin"),
                ("weights", "3, 1"),
                ("sticky", "cookie"),
                ("maintenance", "0"),
                ("max_connections", "10"),
                ("rate", "5"),
                ("backend_timeout", "1.5"),
                ("max_body", "1024"),
            ]),
            2,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(o.https_redirect && o.sticky && !o.maintenance);
        assert_eq!(o.hsts, Some(31_536_000));
        assert_eq!(o.balance, Balance::RoundRobin);
        assert_eq!(o.weight(0), 3);
        assert_eq!(o.weight(1), 1);
        assert_eq!(o.weight(7), 1);
        assert_eq!(o.max_connections, Some(10));
        assert_eq!(o.rate, Some(5));
        assert_eq!(o.backend_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(o.max_body, Some(1024));
        assert!(FrontendOptions::default().is_default());
    }

    #[test]
    fn bad_values_are_ignored_and_named() {
        let (o, problems) = FrontendOptions::parse(
            &f(&[
                ("balance", "fastest"),
                ("weights", "1,2,3"),
                ("rate", "-1"),
                ("colour", "blue"),
                ("hsts", &"9".repeat(300)),
                ("maintenance", "1"),
            ]),
            2,
        );
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].contains("balance"));
        assert!(problems[1].contains("weights"));
        assert!(problems[3].contains("colour"));
        assert!(problems[4].contains("over 256"));
        assert_eq!(o.balance, Balance::Random);
        assert_eq!(o.weights, None);
        assert!(o.maintenance, "the good field still applies");
        let many: Vec<(String, String)> = (0..1000)
            .map(|i| (format!("x{i}"), "1".to_string()))
            .collect();
        let (_, problems) = FrontendOptions::parse(&many, 1);
        assert_eq!(problems.len(), MAX_FIELDS + 1);
        assert!(check_field("weights", "1,2,3,4").is_ok());
        assert!(check_field("weights", "1,x")
            .unwrap_err()
            .contains("weights"));
        assert!(check_field("nope", "1").unwrap_err().contains("nope"));
    }
}
