//! The ACME protocol (RFC 8555) as the control thread speaks it: the directory, nonces (with the
//! `badNonce` retry), the account, orders, authorizations, challenges, finalization and the
//! certificate download (README "Automatic HTTPS (ACME)").
//!
//! Every exchange is one bounded HTTPS request (`acme::https`); every poll is bounded in count and
//! time and honours `Retry-After` within a cap. The CA's answers are hostile input: sizes and counts
//! are checked, a problem document becomes [`AcmeError::Problem`]. Redis is not touched here (the
//! caller publishes challenges and stores results); this module must never run on a worker.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use serde_json::Value;

use super::https::{self, HttpResponse};
use super::jws::AccountKey;

/// Signed requests retried after a `badNonce` answer.
const NONCE_RETRIES: usize = 5;
/// Longest pause between two polls (a larger `Retry-After` is capped to this).
const MAX_POLL_PAUSE: Duration = Duration::from_secs(10);
/// First pause between two polls without `Retry-After`.
const FIRST_POLL_PAUSE: Duration = Duration::from_millis(250);
/// Authorizations accepted in one order (we ask for one name).
const MAX_AUTHZ: usize = 10;

/// Why an ACME exchange failed.
#[derive(Debug, Clone)]
pub enum AcmeError {
    /// The CA answered with a problem document (RFC 7807), e.g. `urn:ietf:params:acme:error:rateLimited`.
    Problem { status: u16, document: String },
    /// No usable answer: connection, TLS, timeout, malformed or oversized answer.
    Transport(String),
    /// The CA's answers do not make sense (a missing field, an order that became invalid).
    Protocol(String),
}

impl fmt::Display for AcmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcmeError::Problem { status, document } => {
                write!(f, "the CA answered {status} with the problem {document}")
            }
            AcmeError::Transport(m) => write!(f, "{m}"),
            AcmeError::Protocol(m) => write!(f, "{m}"),
        }
    }
}

fn protocol(m: impl Into<String>) -> AcmeError {
    AcmeError::Protocol(m.into())
}

/// The directory's endpoints.
#[derive(Debug, Clone)]
struct Directory {
    new_nonce: String,
    new_account: String,
    new_order: String,
}

/// An order in progress.
#[derive(Debug, Clone)]
pub struct Order {
    pub url: String,
    pub status: String,
    pub authorizations: Vec<String>,
    pub finalize: String,
    pub certificate: Option<String>,
}

/// A challenge to publish before telling the CA to validate it.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub url: String,
    pub token: String,
    pub status: String,
}

/// What an authorization needs from us.
#[derive(Debug, Clone)]
pub enum AuthzState {
    /// Already valid (reused by the CA): nothing to do.
    Valid,
    /// Pending, with the challenge of the type we use.
    Pending(Challenge),
}

/// A client bound to one directory and account key.
pub struct AcmeClient {
    tls: Arc<ClientConfig>,
    directory_url: String,
    directory: Option<Directory>,
    nonce: Option<String>,
    key: AccountKey,
    /// The account URL (`kid`), once known.
    kid: Option<String>,
}

fn string_field(v: &Value, name: &str) -> Result<String, AcmeError> {
    match v.get(name).and_then(Value::as_str) {
        Some(s) if s.len() <= 4096 => Ok(s.to_string()),
        _ => Err(protocol(format!(
            "the CA's answer has no usable {name:?} field"
        ))),
    }
}

fn json(resp: &HttpResponse) -> Result<Value, AcmeError> {
    serde_json::from_slice(&resp.body).map_err(|e| {
        protocol(format!(
            "the CA answered {} with something that is not JSON: {e}",
            resp.status
        ))
    })
}

/// The pause a response asks for (`Retry-After` in seconds), capped; else `default`.
pub fn retry_after(resp: &HttpResponse, default: Duration) -> Duration {
    resp.header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(default)
        .min(MAX_POLL_PAUSE)
}

/// The problem document as one log-friendly line.
fn problem_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(2048)]);
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => v.to_string(),
        Err(_) => format!("{text:?}"),
    }
}

impl AcmeClient {
    pub fn new(tls: Arc<ClientConfig>, directory_url: String, key: AccountKey) -> AcmeClient {
        AcmeClient {
            tls,
            directory_url,
            directory: None,
            nonce: None,
            key,
            kid: None,
        }
    }

    pub fn key(&self) -> &AccountKey {
        &self.key
    }

    pub fn set_account_url(&mut self, url: String) {
        self.kid = Some(url);
    }

    async fn directory(&mut self) -> Result<Directory, AcmeError> {
        if let Some(d) = &self.directory {
            return Ok(d.clone());
        }
        let resp = https::request(&self.tls, "GET", &self.directory_url, None)
            .await
            .map_err(AcmeError::Transport)?;
        if resp.status != 200 {
            return Err(AcmeError::Problem {
                status: resp.status,
                document: problem_text(&resp.body),
            });
        }
        let v = json(&resp)?;
        let d = Directory {
            new_nonce: string_field(&v, "newNonce")?,
            new_account: string_field(&v, "newAccount")?,
            new_order: string_field(&v, "newOrder")?,
        };
        self.directory = Some(d.clone());
        Ok(d)
    }

    async fn fresh_nonce(&mut self) -> Result<String, AcmeError> {
        if let Some(n) = self.nonce.take() {
            return Ok(n);
        }
        let url = self.directory().await?.new_nonce;
        let resp = https::request(&self.tls, "HEAD", &url, None)
            .await
            .map_err(AcmeError::Transport)?;
        match resp.header("replay-nonce") {
            Some(n) if !n.is_empty() && n.len() <= 256 => Ok(n.to_string()),
            _ => Err(protocol(format!(
                "newNonce answered {} without a Replay-Nonce",
                resp.status
            ))),
        }
    }

    /// A signed POST (payload `None`: POST-as-GET), retried on `badNonce`. Answers of 4xx/5xx become
    /// [`AcmeError::Problem`].
    async fn post(
        &mut self,
        url: &str,
        payload: Option<&Value>,
    ) -> Result<HttpResponse, AcmeError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let nonce = self.fresh_nonce().await?;
            let body = self
                .key
                .sign(url, &nonce, self.kid.as_deref(), payload)
                .map_err(protocol)?;
            let resp = https::request(&self.tls, "POST", url, Some(&body))
                .await
                .map_err(AcmeError::Transport)?;
            if let Some(n) = resp.header("replay-nonce") {
                if !n.is_empty() && n.len() <= 256 {
                    self.nonce = Some(n.to_string());
                }
            }
            if resp.status < 400 {
                return Ok(resp);
            }
            let bad_nonce = serde_json::from_slice::<Value>(&resp.body)
                .ok()
                .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string))
                .is_some_and(|t| t == "urn:ietf:params:acme:error:badNonce");
            if bad_nonce && tries < NONCE_RETRIES {
                continue;
            }
            return Err(AcmeError::Problem {
                status: resp.status,
                document: problem_text(&resp.body),
            });
        }
    }

    /// Creates (or finds, for this key) the account; returns its URL.
    pub async fn register(&mut self, email: Option<&str>) -> Result<String, AcmeError> {
        let url = self.directory().await?.new_account;
        let mut payload = serde_json::json!({ "termsOfServiceAgreed": true });
        if let Some(m) = email {
            payload["contact"] = serde_json::json!([format!("mailto:{m}")]);
        }
        self.kid = None;
        let resp = self.post(&url, Some(&payload)).await?;
        let kid = resp
            .header("location")
            .filter(|l| l.starts_with("https://") && l.len() <= 2048)
            .ok_or_else(|| protocol("newAccount answered without a usable Location"))?
            .to_string();
        self.kid = Some(kid.clone());
        Ok(kid)
    }

    fn parse_order(url: String, v: &Value) -> Result<Order, AcmeError> {
        let authorizations: Vec<String> = v
            .get("authorizations")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if authorizations.len() > MAX_AUTHZ {
            return Err(protocol("the order has too many authorizations"));
        }
        Ok(Order {
            url,
            status: string_field(v, "status")?,
            authorizations,
            finalize: string_field(v, "finalize")?,
            certificate: v
                .get("certificate")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// A new order for one DNS name.
    pub async fn new_order(&mut self, name: &str) -> Result<Order, AcmeError> {
        let url = self.directory().await?.new_order;
        let payload = serde_json::json!({
            "identifiers": [{ "type": "dns", "value": name }],
        });
        let resp = self.post(&url, Some(&payload)).await?;
        let order_url = resp
            .header("location")
            .ok_or_else(|| protocol("newOrder answered without a Location"))?
            .to_string();
        Self::parse_order(order_url, &json(&resp)?)
    }

    /// The state of an authorization and its challenge of type `kind`.
    pub async fn authorization(&mut self, url: &str, kind: &str) -> Result<AuthzState, AcmeError> {
        let resp = self.post(url, None).await?;
        let v = json(&resp)?;
        let status = string_field(&v, "status")?;
        if status == "valid" {
            return Ok(AuthzState::Valid);
        }
        if status != "pending" {
            return Err(protocol(format!(
                "authorization {url} is {status}: {}",
                v.get("challenges").cloned().unwrap_or(Value::Null)
            )));
        }
        let challenges = v
            .get("challenges")
            .and_then(Value::as_array)
            .ok_or_else(|| protocol("authorization without challenges"))?;
        let c = challenges
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
            .ok_or_else(|| protocol(format!("the CA offers no {kind} challenge")))?;
        let token = string_field(c, "token")?;
        if token.is_empty()
            || token.len() > 128
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(protocol(format!("the CA sent an unusable token {token:?}")));
        }
        Ok(AuthzState::Pending(Challenge {
            url: string_field(c, "url")?,
            token,
            status: string_field(c, "status")?,
        }))
    }

    /// Tells the CA the challenge is ready to be validated.
    pub async fn respond(&mut self, challenge_url: &str) -> Result<(), AcmeError> {
        self.post(challenge_url, Some(&serde_json::json!({})))
            .await
            .map(|_| ())
    }

    /// Polls an authorization until it is valid (Ok), invalid (Err with the CA's reason) or `deadline`.
    pub async fn wait_authorization(
        &mut self,
        url: &str,
        deadline: Instant,
    ) -> Result<(), AcmeError> {
        let mut pause = FIRST_POLL_PAUSE;
        loop {
            let resp = self.post(url, None).await?;
            let v = json(&resp)?;
            let status = string_field(&v, "status")?;
            match status.as_str() {
                "valid" => return Ok(()),
                "pending" | "processing" => {}
                _ => {
                    let errors: Vec<Value> = v
                        .get("challenges")
                        .and_then(Value::as_array)
                        .map(|cs| cs.iter().filter_map(|c| c.get("error").cloned()).collect())
                        .unwrap_or_default();
                    return Err(AcmeError::Problem {
                        status: resp.status,
                        document: format!("authorization {status}: {}", Value::Array(errors)),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(protocol(format!(
                    "authorization still {status} at the deadline"
                )));
            }
            monoio::time::sleep(retry_after(&resp, pause)).await;
            pause = (pause * 2).min(MAX_POLL_PAUSE);
        }
    }

    /// Polls the order until its status is one of `wanted` (or invalid, or the deadline).
    pub async fn wait_order(
        &mut self,
        order: &Order,
        wanted: &[&str],
        deadline: Instant,
    ) -> Result<Order, AcmeError> {
        let mut pause = FIRST_POLL_PAUSE;
        loop {
            let resp = self.post(&order.url, None).await?;
            let v = json(&resp)?;
            let current = Self::parse_order(order.url.clone(), &v)?;
            if wanted.contains(&current.status.as_str()) {
                return Ok(current);
            }
            if current.status == "invalid" {
                return Err(AcmeError::Problem {
                    status: resp.status,
                    document: format!(
                        "order invalid: {}",
                        v.get("error").cloned().unwrap_or(Value::Null)
                    ),
                });
            }
            if Instant::now() >= deadline {
                return Err(protocol(format!(
                    "order still {} at the deadline",
                    current.status
                )));
            }
            monoio::time::sleep(retry_after(&resp, pause)).await;
            pause = (pause * 2).min(MAX_POLL_PAUSE);
        }
    }

    /// Sends the CSR (DER).
    pub async fn finalize(&mut self, order: &Order, csr_der: &[u8]) -> Result<Order, AcmeError> {
        let payload = serde_json::json!({ "csr": super::jws::b64(csr_der) });
        let resp = self.post(&order.finalize, Some(&payload)).await?;
        Self::parse_order(order.url.clone(), &json(&resp)?)
    }

    /// The issued chain (PEM, leaf first).
    pub async fn download(&mut self, url: &str) -> Result<String, AcmeError> {
        let resp = self.post(url, None).await?;
        let text = String::from_utf8(resp.body)
            .map_err(|_| protocol("the certificate is not text (PEM expected)"))?;
        if !text.contains("-----BEGIN CERTIFICATE-----") {
            return Err(protocol(
                "the CA's certificate answer holds no PEM certificate",
            ));
        }
        Ok(text)
    }
}
