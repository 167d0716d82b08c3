//! A Redis pub/sub subscription on its own connection: SUBSCRIBE to a fixed set of channels, hand the
//! messages to one consumer task in order, and reconnect with backoff (re-sending AUTH and SUBSCRIBE)
//! whenever the connection fails.
//!
//! Used by the active health checker (the `dead` channel); meant to be reused by anything that follows
//! a channel (e.g. route-cache invalidation). A consumer learns about reconnections through
//! [`SubEvent::Subscribed`]: messages published while the connection was down are lost, so a consumer
//! that caches must treat that event as "anything may have changed".
//!
//! Runs on one monoio runtime (`!Send`) and never blocks it. It only reads messages: it never sends
//! commands other than the handshake, SUBSCRIBE and PING (a subscribed connection cannot run others).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use log::{debug, info, warn};
use monoio::io::{AsyncWriteRentExt, Splitable};
use redis::Value;

use super::connection::open;
use super::resp::RespReader;
use crate::common::local_sync::Notify;
use crate::config::RedisEndpoint;

/// What the consumer receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubEvent {
    /// A message published on one of the channels.
    Message { channel: String, payload: Vec<u8> },
    /// Every channel is subscribed, after a start or a reconnection.
    Subscribed,
}

/// Events queued for a consumer that is behind; older messages are dropped beyond this.
const MAX_QUEUED: usize = 10_000;
/// A PING goes out after this long without traffic; no byte for twice as long means the connection
/// is dead (a Redis that hangs, or a network black hole).
const PING_EVERY: Duration = Duration::from_secs(15);
const BACKOFF_MIN: Duration = Duration::from_millis(50);

struct State {
    queue: VecDeque<SubEvent>,
    connected: bool,
    dropped: u64,
}

struct Shared {
    endpoint: RedisEndpoint,
    label: String,
    client_name: String,
    channels: Vec<String>,
    timeout: Duration,
    state: RefCell<State>,
    wake: Notify,
}

/// Handle to a subscription (cheap to clone).
#[derive(Clone)]
pub struct Subscriber {
    shared: Rc<Shared>,
}

impl Subscriber {
    /// Starts the connection task on the current runtime. `label` names it in logs; `timeout` bounds
    /// the connection handshake.
    pub fn start(
        endpoint: RedisEndpoint,
        label: String,
        client_name: String,
        channels: Vec<String>,
        timeout: Duration,
    ) -> Subscriber {
        let shared = Rc::new(Shared {
            endpoint,
            label,
            client_name,
            channels,
            timeout,
            state: RefCell::new(State {
                queue: VecDeque::new(),
                connected: false,
                dropped: 0,
            }),
            wake: Notify::new(),
        });
        crate::common::task::spawn(
            crate::common::task::OnPanic::StopThread,
            manage(shared.clone()),
        );
        Subscriber { shared }
    }

    /// True while subscribed.
    pub fn is_connected(&self) -> bool {
        self.shared.state.borrow().connected
    }

    /// Messages dropped because the consumer fell more than 10 000 behind.
    pub fn dropped(&self) -> u64 {
        self.shared.state.borrow().dropped
    }

    /// The next event, in order.
    pub async fn next(&self) -> SubEvent {
        loop {
            let notified = self.shared.wake.notified();
            if let Some(ev) = self.shared.state.borrow_mut().queue.pop_front() {
                return ev;
            }
            notified.await;
        }
    }
}

fn push(shared: &Shared, ev: SubEvent) {
    let mut st = shared.state.borrow_mut();
    if st.queue.len() >= MAX_QUEUED {
        st.queue.pop_front();
        st.dropped += 1;
        if st.dropped == 1 || st.dropped.is_multiple_of(1000) {
            warn!(
                "{}: consumer behind, {} messages dropped",
                shared.label, st.dropped
            );
        }
    }
    st.queue.push_back(ev);
    drop(st);
    shared.wake.notify_all();
}

/// Connects, subscribes, reads; reconnects with exponential backoff, forever (ends with its runtime).
async fn manage(shared: Rc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    let mut failures: u64 = 0;
    loop {
        match open(&shared.endpoint, &shared.client_name, shared.timeout).await {
            Ok(stream) => {
                if failures > 0 {
                    info!(
                        "{}: connected to {} after {failures} failed attempts",
                        shared.label,
                        shared.endpoint.display()
                    );
                }
                failures = 0;
                backoff = BACKOFF_MIN;
                let reason = serve(&shared, stream).await;
                shared.state.borrow_mut().connected = false;
                warn!(
                    "{}: subscription to {} lost: {reason}; reconnecting",
                    shared.label,
                    shared.endpoint.display()
                );
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    warn!(
                        "{}: cannot connect to {}: {e} (attempt {failures})",
                        shared.label,
                        shared.endpoint.display()
                    );
                }
            }
        }
        monoio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(super::connection::backoff_max(&shared.endpoint));
    }
}

/// Subscribes on an established connection and reads until it fails; returns why.
async fn serve(shared: &Rc<Shared>, stream: super::stream::RedisStream) -> String {
    let fd = stream.as_raw_fd();
    let (mut reader, mut writer) = stream.into_split();
    let mut subscribe = redis::cmd("SUBSCRIBE");
    for c in &shared.channels {
        subscribe.arg(c);
    }
    let (res, _) = writer.write_all(subscribe.get_packed_command()).await;
    if let Err(e) = res {
        return format!("SUBSCRIBE not sent: {e}");
    }
    // The pinger lives as long as this connection: it stops when the reader drops `alive`.
    let alive = Rc::new(());
    let traffic = Rc::new(std::cell::Cell::new(std::time::Instant::now()));
    crate::common::task::spawn(
        crate::common::task::OnPanic::StopThread,
        ping_loop(Rc::downgrade(&alive), traffic.clone(), writer),
    );
    let reason = read_frames(shared, &mut reader, &traffic).await;
    // The pinger may still hold the write half: shut the socket down so the server sees the close at
    // once. `reader` is alive here, so `fd` is still this connection's.
    // SAFETY: shutting down a socket this connection owns.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    drop(alive);
    reason
}

async fn read_frames(
    shared: &Rc<Shared>,
    reader: &mut monoio::io::OwnedReadHalf<super::stream::RedisStream>,
    traffic: &std::cell::Cell<std::time::Instant>,
) -> String {
    let mut frames = RespReader::new(Vec::new());
    let mut confirmed = 0usize;
    loop {
        // After a timeout the connection is dropped, so a read lost to cancellation does not matter.
        match monoio::time::timeout(PING_EVERY * 2, frames.fill(reader)).await {
            Err(_) => return format!("no traffic for {:?}", PING_EVERY * 2),
            Ok(Ok(0)) => return "closed by the server".into(),
            Ok(Ok(_)) => traffic.set(std::time::Instant::now()),
            Ok(Err(e)) => return e.to_string(),
        }
        loop {
            let value = match frames.next_value() {
                Ok(Some(v)) => v,
                Ok(None) => break,
                Err(reason) => return reason,
            };
            match classify(value) {
                Frame::Confirmed => {
                    confirmed += 1;
                    if confirmed == shared.channels.len() {
                        shared.state.borrow_mut().connected = true;
                        debug!(
                            "{}: subscribed to {}",
                            shared.label,
                            shared.channels.join(", ")
                        );
                        push(shared, SubEvent::Subscribed);
                    }
                }
                Frame::Message(channel, payload) => {
                    push(shared, SubEvent::Message { channel, payload })
                }
                Frame::Other => {}
                Frame::Error(e) => return format!("refused: {e}"),
            }
        }
    }
}

async fn ping_loop(
    alive: std::rc::Weak<()>,
    traffic: Rc<std::cell::Cell<std::time::Instant>>,
    mut writer: monoio::io::OwnedWriteHalf<super::stream::RedisStream>,
) {
    let ping = redis::cmd("PING").get_packed_command();
    loop {
        monoio::time::sleep(PING_EVERY).await;
        if alive.upgrade().is_none() {
            return;
        }
        if traffic.get().elapsed() < PING_EVERY {
            continue;
        }
        let (res, _) = writer.write_all(ping.clone()).await;
        if res.is_err() {
            return;
        }
    }
}

enum Frame {
    Confirmed,
    Message(String, Vec<u8>),
    Other,
    Error(String),
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// RESP2 pub/sub frames are arrays (`subscribe`, `message`, `pong`); RESP3 ones are pushes.
fn classify(v: Value) -> Frame {
    let items = match v {
        Value::Array(items) => items,
        Value::Push { kind, data } => {
            let mut items = vec![Value::BulkString(kind.to_string().into_bytes())];
            items.extend(data);
            items
        }
        Value::ServerError(e) => {
            return Frame::Error(format!("{} {}", e.code(), e.details().unwrap_or("")))
        }
        _ => return Frame::Other,
    };
    let kind = items.first().and_then(text).unwrap_or_default();
    match (kind.to_ascii_lowercase().as_str(), items.len()) {
        ("subscribe", 3) => Frame::Confirmed,
        ("message", 3) => {
            let channel = items.get(1).and_then(text).unwrap_or_default();
            let payload = match items.into_iter().nth(2) {
                Some(Value::BulkString(b)) => b,
                Some(Value::SimpleString(s)) => s.into_bytes(),
                _ => Vec::new(),
            };
            Frame::Message(channel, payload)
        }
        _ => Frame::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_classified() {
        let parse = |b: &[u8]| classify(redis::parse_redis_value(b).unwrap());
        assert!(matches!(
            parse(b"*3\r\n$9\r\nsubscribe\r\n$4\r\ndead\r\n:1\r\n"),
            Frame::Confirmed
        ));
        match parse(b"*3\r\n$7\r\nmessage\r\n$4\r\ndead\r\n$5\r\na;b;c\r\n") {
            Frame::Message(c, p) => {
                assert_eq!(c, "dead");
                assert_eq!(p, b"a;b;c");
            }
            _ => panic!("not a message"),
        }
        assert!(matches!(
            parse(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
            Frame::Other
        ));
        assert!(matches!(parse(b"-ERR nope\r\n"), Frame::Error(_)));
    }
}
