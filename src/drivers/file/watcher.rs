//! The routes-file watcher: one control-plane thread that notices edits of the routes file, parses
//! them, and hands every worker an `Arc` of the new table through that worker's channel.
//!
//! Every [`POLL`] it `stat`s the file (following symlinks, so a swapped symlink counts as an edit). When
//! the device, inode, size, mtime or ctime changed, and for [`SETTLE`] after any such change (a second
//! write within the file system's timestamp granularity changes none of them), it reads the file and
//! compares a hash of the bytes with the content in force: unchanged bytes cost no parse. Changed bytes
//! are parsed; a valid table is sent to every worker, an invalid one is reported with the path, line,
//! column and reason, and the previous table stays in force. Because an in-place rewrite can be read
//! half-written, an error is only reported once the same bytes failed on two polls in a row (the file has
//! settled and is still broken); a valid version is applied at once.
//!
//! This thread never touches a request; it must never panic, and it stops when the shutdown latch is set
//! or when no worker listens any more.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::store::RouteFeed;
use super::table::{RouteTable, RoutesFileError};
use crate::process::shutdown::ShutdownLatch;

/// How often the file is looked at.
pub const POLL: Duration = Duration::from_millis(200);
/// After a change is seen, the file is re-read on every poll for this long, covering file systems with
/// coarse timestamps (1 s on ext3 and HFS+, 2 s on FAT).
pub const SETTLE: Duration = Duration::from_millis(2500);

/// What `stat` says about the file: any difference means it may have changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Fingerprint {
    fn of(m: &std::fs::Metadata) -> Self {
        Fingerprint {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The routes file as first read at start-up.
pub struct InitialRoutes {
    pub table: Arc<RouteTable>,
    state: FileState,
}

/// Reads and parses the routes file at start-up. An error here is fatal (the caller exits 1).
pub fn load_initial(path: &Path) -> Result<InitialRoutes, RoutesFileError> {
    let unreadable = |e: std::io::Error| RoutesFileError {
        path: path.to_path_buf(),
        position: None,
        message: format!("cannot read it: {e}"),
    };
    let fingerprint = std::fs::metadata(path).map(|m| Fingerprint::of(&m)).ok();
    let bytes = std::fs::read(path).map_err(unreadable)?;
    let table = RouteTable::parse(path, &bytes)?;
    for w in table.warnings() {
        warn!("routes file {}: {w}", path.display());
    }
    Ok(InitialRoutes {
        table: Arc::new(table),
        state: FileState {
            path: path.to_path_buf(),
            fingerprint,
            applied: content_hash(&bytes),
            settle_until: Instant::now() + SETTLE,
            failed_once: None,
            reported: None,
            unreadable_reported: false,
        },
    })
}

/// The workers' subscriptions to new tables: each worker (and each replacement of a worker that
/// crashed) gets its own channel and the table in force. Locked only when a worker subscribes and when a
/// new table is fanned out, never on a request.
#[derive(Clone)]
pub struct Subscriptions {
    inner: Arc<Mutex<SubscriptionList>>,
}

struct SubscriptionList {
    current: Arc<RouteTable>,
    senders: Vec<Sender<Arc<RouteTable>>>,
}

impl Subscriptions {
    /// A feed for one worker: the table in force, and the channel newer ones arrive on.
    pub fn subscribe(&self) -> RouteFeed {
        let (tx, rx) = mpsc::channel();
        let mut list = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        list.senders.push(tx);
        RouteFeed {
            initial: list.current.clone(),
            updates: rx,
        }
    }

    /// Sends the table to every worker still running (a dead worker's channel is dropped).
    fn fan_out(&self, table: Arc<RouteTable>) {
        let mut list = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        list.senders.retain(|tx| tx.send(table.clone()).is_ok());
        list.current = table;
    }
}

/// Starts the watcher thread; returns the subscriptions workers take their feeds from, and the
/// thread's handle. The thread ends when the latch is set.
pub fn spawn(
    initial: InitialRoutes,
    latch: Arc<ShutdownLatch>,
) -> std::io::Result<(Subscriptions, JoinHandle<()>)> {
    let subscriptions = Subscriptions {
        inner: Arc::new(Mutex::new(SubscriptionList {
            current: initial.table.clone(),
            senders: Vec::new(),
        })),
    };
    let mut state = initial.state;
    let fan = subscriptions.clone();
    let handle = std::thread::Builder::new()
        .name("hipache-routes".into())
        .spawn(move || {
            // Supervised like a worker: a panic (say, in a parser on odd content) restarts the loop
            // with back-off; the routes in force stay with the workers meanwhile.
            crate::process::restart::supervise_thread("the routes-file watcher", &latch, || {
                while !latch.is_triggered() {
                    std::thread::sleep(POLL);
                    if let Some(table) = state.poll(Instant::now()) {
                        fan.fan_out(Arc::new(table));
                    }
                }
                crate::process::restart::Ended::Done
            });
        })?;
    Ok((subscriptions, handle))
}

/// What the watcher knows about the file between polls.
struct FileState {
    path: PathBuf,
    /// As of the last poll; `None` when the file could not be looked at.
    fingerprint: Option<Fingerprint>,
    /// Hash of the content in force.
    applied: u64,
    /// Re-read on every poll until then, even if the fingerprint did not change.
    settle_until: Instant,
    /// Hash of content that failed to parse once (reported if it fails again).
    failed_once: Option<u64>,
    /// Hash of the content whose error was reported (not reported again).
    reported: Option<u64>,
    unreadable_reported: bool,
}

impl FileState {
    /// One look at the file: a new valid table when its content changed and parses.
    fn poll(&mut self, now: Instant) -> Option<RouteTable> {
        let bytes = match self.read_if_changed(now) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(e) => {
                if !self.unreadable_reported {
                    error!(
                        "routes file {}: cannot read it: {e}; the previous routes stay in force",
                        self.path.display()
                    );
                    self.unreadable_reported = true;
                }
                self.fingerprint = None;
                return None;
            }
        };
        if self.unreadable_reported {
            info!("routes file {}: readable again", self.path.display());
            self.unreadable_reported = false;
        }
        let hash = content_hash(&bytes);
        if hash == self.applied {
            self.failed_once = None;
            return None;
        }
        match RouteTable::parse(&self.path, &bytes) {
            Ok(table) => {
                self.applied = hash;
                self.failed_once = None;
                self.reported = None;
                info!(
                    "routes file {}: reloaded, {} frontends",
                    self.path.display(),
                    table.len()
                );
                for w in table.warnings() {
                    warn!("routes file {}: {w}", self.path.display());
                }
                Some(table)
            }
            Err(e) => {
                if self.reported == Some(hash) {
                    return None;
                }
                if self.failed_once == Some(hash) {
                    error!("{e}; the previous routes stay in force");
                    self.reported = Some(hash);
                } else {
                    // Maybe caught mid-write: look again next poll before reporting.
                    self.failed_once = Some(hash);
                    self.settle_until = self.settle_until.max(now + POLL * 2);
                }
                None
            }
        }
    }

    /// The file's bytes when it may have changed since the last poll, `None` when it surely did not.
    fn read_if_changed(&mut self, now: Instant) -> std::io::Result<Option<Vec<u8>>> {
        let fingerprint = Fingerprint::of(&std::fs::metadata(&self.path)?);
        if self.fingerprint != Some(fingerprint) {
            self.fingerprint = Some(fingerprint);
            self.settle_until = now + SETTLE;
        } else if now >= self.settle_until {
            return Ok(None);
        }
        std::fs::read(&self.path).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn temp_dir(tag: &str) -> Dir {
        let d =
            std::env::temp_dir().join(format!("hipache-tpc-watcher-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    #[test]
    fn same_size_rewrites_within_one_timestamp_tick_are_seen() {
        let dir = temp_dir("tick");
        let path = dir.0.join("routes.json");
        std::fs::write(&path, r#"{"a.com": ["a", "http://h:1111"]}"#).unwrap();
        let mut state = load_initial(&path).unwrap().state;
        let t0 = Instant::now();
        assert!(state.poll(t0).is_none(), "unchanged content: nothing sent");
        // Same size, possibly the same mtime: the settle window re-reads it.
        std::fs::write(&path, r#"{"a.com": ["a", "http://h:2222"]}"#).unwrap();
        let table = state.poll(t0 + POLL).expect("the change is seen");
        assert_eq!(table.get("a.com").unwrap()[1], "http://h:2222");
        assert!(state.poll(t0 + POLL * 2).is_none(), "applied once");
        // Long after the last change, an unchanged file is not even read.
        assert!(state.read_if_changed(t0 + SETTLE * 3).unwrap().is_none());
    }

    #[test]
    fn broken_content_is_reported_once_settled_and_a_fix_applies() {
        let dir = temp_dir("broken");
        let path = dir.0.join("routes.json");
        std::fs::write(&path, r#"{"a.com": ["a", "http://h:1"]}"#).unwrap();
        let mut state = load_initial(&path).unwrap().state;
        let t0 = Instant::now();
        std::fs::write(&path, "{\n\"a.com\": [\"a\" \"http://h:2\"]}").unwrap();
        assert!(state.poll(t0).is_none());
        assert_eq!(state.reported, None, "first failure: maybe mid-write");
        assert!(state.poll(t0 + POLL).is_none());
        assert!(
            state.reported.is_some(),
            "second failure of the same bytes: reported"
        );
        std::fs::write(&path, r#"{"a.com": ["a", "http://h:3"]}"#).unwrap();
        let table = state.poll(t0 + POLL * 2).expect("the fix applies");
        assert_eq!(table.get("a.com").unwrap()[1], "http://h:3");
        assert_eq!(state.reported, None);
    }

    #[test]
    fn a_missing_file_keeps_the_routes_and_recovers() {
        let dir = temp_dir("missing");
        let path = dir.0.join("routes.json");
        std::fs::write(&path, r#"{"a.com": ["a", "http://h:1"]}"#).unwrap();
        let mut state = load_initial(&path).unwrap().state;
        let t0 = Instant::now();
        std::fs::remove_file(&path).unwrap();
        assert!(state.poll(t0).is_none());
        assert!(state.unreadable_reported);
        std::fs::write(&path, r#"{"b.com": ["b", "http://h:1"]}"#).unwrap();
        assert!(state.poll(t0 + POLL).is_some());
        assert!(!state.unreadable_reported);
    }
}
