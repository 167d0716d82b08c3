//! The handshake of a Redis connection: a few commands (AUTH, HELLO, CLIENT SETNAME, SELECT, ROLE,
//! CLIENT TRACKING) written at once and their replies read in order, with the refusals turned into
//! messages that say what to fix. Used by every kind of connection: the workers' read and write
//! connections, the tracking connection and the sentinel queries.
//!
//! Only the exchange; which commands a connection sends is its owner's choice. Leaf of `redis`: it
//! imports nothing but the RESP reader and the endpoint type, so connection, stream and sentinel code
//! can all use it without importing each other.

use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use redis::Value;

use super::resp::RespReader;
use crate::config::RedisEndpoint;

/// `AUTH password`, or `AUTH user password` for a Redis 6 ACL user; none without a password.
pub(crate) fn auth_step(ep: &RedisEndpoint) -> Option<Step> {
    let pw = ep.password.as_ref()?;
    let mut cmd = redis::cmd("AUTH");
    if let Some(user) = &ep.username {
        cmd.arg(user);
    }
    cmd.arg(pw);
    Some(Step::required("AUTH", cmd))
}

/// One command of a connection handshake.
pub(crate) struct Step {
    pub name: &'static str,
    pub cmd: redis::Cmd,
    /// A refusal fails the handshake.
    pub required: bool,
}

impl Step {
    pub(crate) fn required(name: &'static str, cmd: redis::Cmd) -> Step {
        Step {
            name,
            cmd,
            required: true,
        }
    }

    pub(crate) fn optional(name: &'static str, cmd: redis::Cmd) -> Step {
        Step {
            name,
            cmd,
            required: false,
        }
    }
}

/// Sends the handshake commands in one write and reads their replies in order. Returns the replies and
/// any bytes that arrived after them (push messages may follow at once).
pub(crate) async fn exchange<S: monoio::io::AsyncReadRent + monoio::io::AsyncWriteRent>(
    stream: &mut S,
    steps: &[Step],
    timeout: Duration,
) -> Result<(Vec<Value>, Vec<u8>), String> {
    let mut packed = Vec::new();
    for step in steps {
        step.cmd.write_packed_command(&mut packed);
    }
    let (res, _) = stream.write_all(packed).await;
    res.map_err(|e| format!("write failed: {e}"))?;
    let mut reader = RespReader::new(Vec::new());
    let mut replies = Vec::new();
    let deadline = timeout.max(Duration::from_secs(1));
    while replies.len() < steps.len() {
        if let Some(v) = reader.next_value()? {
            replies.push(v);
            continue;
        }
        match monoio::time::timeout(deadline, reader.fill(stream)).await {
            Err(_) => {
                return Err(format!(
                    "no answer to {}",
                    steps.first().map_or("the handshake", |s| s.name)
                ))
            }
            Ok(Ok(0)) => return Err("closed by the server during the handshake".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
        }
    }
    for (step, reply) in steps.iter().zip(&replies) {
        if let Value::ServerError(err) = reply {
            if !step.required {
                continue;
            }
            let what = if step.name == "AUTH" {
                "authentication failed".to_string()
            } else {
                format!("{} refused", step.name)
            };
            let hint = match err.code() {
                "WRONGPASS" => "; check the user name and password in the driver URL",
                "NOPERM" => "; the Redis ACL user lacks this command (README: \"Running Redis for a fleet\" gives the rule a proxy needs)",
                "NOAUTH" => "; Redis wants a password: add it to the driver URL (redis://[user]:password@host)",
                _ => "",
            };
            return Err(format!(
                "{what}: {}{hint}",
                format!("{} {}", err.code(), err.details().unwrap_or("")).trim()
            ));
        }
    }
    Ok((replies, reader.into_rest()))
}
