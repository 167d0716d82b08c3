//! One pipelined Redis connection shared by all tasks of a worker.
//!
//! Callers append packed commands to an output buffer and wait on a oneshot; a writer task flushes the
//! buffer (so concurrent lookups of one worker leave in one `write`), a reader task parses replies in
//! order and hands each caller its share. A manager task connects, sends AUTH and SELECT, and reconnects
//! with backoff when the connection fails. While the connection is down, queries fail at once (callers
//! answer 503 or use a stale cache entry); nothing queues forever.
//!
//! This type must never be shared across threads (it is `!Send`), and must never block.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use local_sync::oneshot;
use log::{debug, info, warn};
use monoio::io::{AsyncWriteRentExt, Splitable};
use redis::Value;

use super::handshake::{auth_step, exchange, Step};
use super::resp::RespReader;
pub(crate) use super::stream::dial;
use super::stream::RedisStream;
use crate::common::local_sync::Notify;
use crate::config::RedisEndpoint;

/// Why a query got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisError {
    /// Not connected (connecting, or Redis unreachable).
    Down,
    /// No reply within the query timeout.
    Timeout,
    /// The connection failed while the query was in flight.
    ConnectionLost,
    /// The server answered with something we cannot use.
    Protocol(String),
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisError::Down => write!(f, "Redis is unreachable"),
            RedisError::Timeout => write!(f, "Redis did not answer in time"),
            RedisError::ConnectionLost => write!(f, "the Redis connection was lost"),
            RedisError::Protocol(m) => write!(f, "unexpected Redis reply: {m}"),
        }
    }
}

type Reply = Result<Vec<Value>, RedisError>;

struct Pending {
    expect: usize,
    values: Vec<Value>,
    sent_at: Instant,
    tx: oneshot::Sender<Reply>,
}

struct State {
    up: bool,
    out: Vec<u8>,
    queue: VecDeque<Pending>,
    /// Bumped whenever a connection ends; tasks of an older connection stop.
    generation: u64,
    /// Raw fd of the live connection, to shut it down from a watchdog.
    fd: Option<i32>,
    /// Why the last connection attempt failed (cleared once connected): for `/status`.
    last_error: Option<String>,
    /// The server of the live connection (or of the last one), for `/status`.
    peer: Option<String>,
}

struct Shared {
    endpoint: RedisEndpoint,
    label: String,
    timeout: Duration,
    client_name: String,
    state: RefCell<State>,
    writer_wake: Notify,
}

/// Handle to a worker's Redis connection. Cloning is cheap (an `Rc`).
#[derive(Clone)]
pub struct RedisClient {
    shared: Rc<Shared>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The longest pause between two connection attempts. Through the sentinels it is short: an attempt
/// asks them first (they answer while the old master is gone), and a route written to the new master
/// must be served within about 2 s of its promotion.
pub(crate) fn backoff_max(ep: &RedisEndpoint) -> Duration {
    match ep.transport {
        crate::config::driver_url::Transport::Sentinel(_) => Duration::from_millis(250),
        _ => BACKOFF_MAX,
    }
}

impl RedisClient {
    /// Creates the client and spawns its connection manager on the current runtime.
    ///
    /// `label` names it in logs (e.g. `worker 0 routes`); `timeout` bounds every query.
    pub fn start(
        endpoint: RedisEndpoint,
        label: String,
        client_name: String,
        timeout: Duration,
    ) -> RedisClient {
        let shared = Rc::new(Shared {
            endpoint,
            label,
            timeout,
            client_name,
            state: RefCell::new(State {
                up: false,
                out: Vec::with_capacity(4096),
                queue: VecDeque::new(),
                generation: 0,
                fd: None,
                last_error: None,
                peer: None,
            }),
            writer_wake: Notify::new(),
        });
        crate::common::task::spawn(
            crate::common::task::OnPanic::StopThread,
            manage(shared.clone()),
        );
        RedisClient { shared }
    }

    /// True while a connection is established.
    pub fn is_up(&self) -> bool {
        self.shared.state.borrow().up
    }

    /// While down: why the last connection attempt failed (`authentication failed: WRONGPASS …`).
    pub fn last_error(&self) -> Option<String> {
        let st = self.shared.state.borrow();
        if st.up {
            None
        } else {
            st.last_error.clone()
        }
    }

    /// The server of the live connection (`ip:port` or a socket path), if any.
    pub fn connected_to(&self) -> Option<String> {
        let st = self.shared.state.borrow();
        if st.up {
            st.peer.clone()
        } else {
            None
        }
    }

    /// The server this client connects to, password censored.
    pub fn endpoint_display(&self) -> String {
        self.shared.endpoint.display()
    }

    /// Sends already-packed commands and waits for `expect` replies (each may be a `ServerError`).
    pub async fn query(&self, packed: &[u8], expect: usize) -> Reply {
        let rx = {
            let mut st = self.shared.state.borrow_mut();
            if !st.up {
                return Err(RedisError::Down);
            }
            // Watchdog: a server that stopped answering (hung, SIGSTOPped, network black hole) is treated as
            // down, so that callers fail fast and the manager reconnects.
            if let Some(front) = st.queue.front() {
                if front.sent_at.elapsed() > self.shared.timeout * 3 {
                    warn!(
                        "{}: no reply for {:?}; dropping the connection",
                        self.shared.label,
                        front.sent_at.elapsed()
                    );
                    if let Some(fd) = st.fd.take() {
                        // SAFETY: shutting down a socket we own; the reader task then sees EOF and cleans up.
                        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                    }
                    st.up = false;
                    return Err(RedisError::Down);
                }
            }
            let (tx, rx) = oneshot::channel();
            st.out.extend_from_slice(packed);
            st.queue.push_back(Pending {
                expect,
                values: Vec::with_capacity(expect),
                sent_at: Instant::now(),
                tx,
            });
            rx
        };
        self.shared.writer_wake.notify_all();
        match monoio::time::timeout(self.shared.timeout, rx).await {
            Ok(Ok(reply)) => reply,
            // The sender was dropped unused: the connection went away.
            Ok(Err(_)) => Err(RedisError::ConnectionLost),
            Err(_) => Err(RedisError::Timeout),
        }
    }
}

/// Connects, serves, and reconnects with exponential backoff, forever (the task ends with its runtime).
async fn manage(shared: Rc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    let mut failures: u64 = 0;
    loop {
        match connect(&shared).await {
            Ok(stream) => {
                if failures > 0 {
                    info!(
                        "{}: connected to {} after {} failed attempts",
                        shared.label,
                        shared.endpoint.display(),
                        failures
                    );
                } else {
                    debug!(
                        "{}: connected to {}",
                        shared.label,
                        shared.endpoint.display()
                    );
                }
                failures = 0;
                backoff = BACKOFF_MIN;
                {
                    let mut st = shared.state.borrow_mut();
                    st.last_error = None;
                    st.peer = Some(stream.peer().to_string());
                }
                let reason = serve(&shared, stream).await;
                warn!(
                    "{}: connection to {} lost: {}; reconnecting",
                    shared.label,
                    shared.endpoint.display(),
                    reason
                );
            }
            Err(e) => {
                failures += 1;
                shared.state.borrow_mut().last_error = Some(e.clone());
                // First failure, then once in a while: enough to diagnose, not a flood.
                if failures == 1 || failures.is_multiple_of(30) {
                    crate::common::metrics::note_redis_problem(&format!(
                        "cannot connect to {}: {e}",
                        shared.endpoint.display()
                    ));
                    warn!(
                        "{}: cannot connect to {}: {} (attempt {}; retrying every {:?} at most)",
                        shared.label,
                        shared.endpoint.display(),
                        e,
                        failures,
                        BACKOFF_MAX
                    );
                }
            }
        }
        monoio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(backoff_max(&shared.endpoint));
    }
}

async fn connect(shared: &Shared) -> Result<RedisStream, String> {
    open(&shared.endpoint, &shared.client_name, shared.timeout).await
}

/// Connects to `ep` and runs the handshake (AUTH, SELECT, CLIENT SETNAME `client_name`), each step
/// bounded by `timeout` (at least a second). Shared with the pub/sub subscriber.
pub(crate) async fn open(
    ep: &RedisEndpoint,
    client_name: &str,
    timeout: Duration,
) -> Result<RedisStream, String> {
    let mut stream = dial(ep, timeout).await?;
    let mut commands = Vec::new();
    if let Some(auth) = auth_step(ep) {
        commands.push(auth);
    }
    if ep.database != 0 {
        commands.push(Step::required(
            "SELECT",
            redis::cmd("SELECT").arg(ep.database).clone(),
        ));
    }
    // Very old servers refuse CLIENT SETNAME; that is harmless.
    commands.push(Step::optional(
        "CLIENT SETNAME",
        redis::cmd("CLIENT").arg("SETNAME").arg(client_name).clone(),
    ));
    exchange(&mut stream, &commands, timeout).await?;
    Ok(stream)
}

/// Runs one established connection until it fails; returns why.
async fn serve(shared: &Rc<Shared>, stream: RedisStream) -> String {
    let fd = stream.as_raw_fd();
    let generation = {
        let mut st = shared.state.borrow_mut();
        st.up = true;
        st.fd = Some(fd);
        st.out.clear();
        st.generation
    };
    let (mut reader, writer) = stream.into_split();
    crate::common::task::spawn(
        crate::common::task::OnPanic::StopThread,
        write_loop(shared.clone(), writer, generation, fd),
    );
    let reason = read_loop(shared, &mut reader).await;
    // Tear down: fail everything in flight, stop the writer.
    let failed: Vec<Pending> = {
        let mut st = shared.state.borrow_mut();
        st.up = false;
        st.fd = None;
        st.generation += 1;
        st.out.clear();
        st.queue.drain(..).collect()
    };
    for p in failed {
        // A caller that gave up (timed out) no longer listens: nothing to tell it.
        let _ = p.tx.send(Err(RedisError::ConnectionLost));
    }
    shared.writer_wake.notify_all();
    reason
}

async fn write_loop(
    shared: Rc<Shared>,
    mut writer: monoio::io::OwnedWriteHalf<RedisStream>,
    generation: u64,
    fd: i32,
) {
    let mut spare: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let notified = shared.writer_wake.notified();
        {
            let mut st = shared.state.borrow_mut();
            if st.generation != generation {
                return;
            }
            if !st.out.is_empty() {
                std::mem::swap(&mut st.out, &mut spare);
            }
        }
        if spare.is_empty() {
            notified.await;
            continue;
        }
        let (res, buf) = writer.write_all(spare).await;
        spare = buf;
        spare.clear();
        if res.is_err() {
            // Make the reader notice, so that the connection is torn down in one place.
            // SAFETY: shutting down our own socket.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            return;
        }
    }
}

async fn read_loop(
    shared: &Rc<Shared>,
    reader: &mut monoio::io::OwnedReadHalf<RedisStream>,
) -> String {
    let mut replies = RespReader::new(Vec::new());
    loop {
        match replies.fill(reader).await {
            Ok(0) => return "closed by the server".into(),
            Ok(_) => {}
            Err(e) => return e.to_string(),
        }
        loop {
            match replies.next_value() {
                Ok(Some(value)) => {
                    if let Err(reason) = deliver(shared, value) {
                        return reason;
                    }
                }
                Ok(None) => break,
                Err(reason) => return reason,
            }
        }
    }
}

fn deliver(shared: &Shared, value: Value) -> Result<(), String> {
    let mut st = shared.state.borrow_mut();
    let Some(front) = st.queue.front_mut() else {
        return Err("reply with no request waiting for it".into());
    };
    front.values.push(value);
    if front.values.len() >= front.expect {
        if let Some(done) = st.queue.pop_front() {
            drop(st);
            let _ = done.tx.send(Ok(done.values));
        }
    }
    Ok(())
}
