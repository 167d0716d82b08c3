//! The file driver as one worker sees it: the worker's current [`RouteTable`], the channel newer tables
//! arrive on from the watcher thread, and the worker's in-memory dead marks.
//!
//! Everything here runs on the worker thread and never blocks: a look-up reads the table through the
//! worker's own `Arc` (no lock, no I/O), and new tables are picked up with a non-blocking `try_recv`
//! from a background task of the worker, never from a request.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;

use super::dead::DeadMarks;
use super::table::RouteTable;
use crate::dataplane::routing::{Lookup, Route};

/// What a worker is handed at start-up: the table in force and where newer ones will arrive.
pub struct RouteFeed {
    pub initial: Arc<RouteTable>,
    pub updates: Receiver<Arc<RouteTable>>,
}

/// The file driver of one worker.
pub struct FileRoutes {
    pub path: PathBuf,
    table: RefCell<Arc<RouteTable>>,
    updates: Receiver<Arc<RouteTable>>,
    dead: RefCell<DeadMarks>,
}

impl FileRoutes {
    pub fn new(path: PathBuf, feed: RouteFeed, dead_ttl: Duration) -> Self {
        FileRoutes {
            path,
            table: RefCell::new(feed.initial),
            updates: feed.updates,
            dead: RefCell::new(DeadMarks::new(dead_ttl)),
        }
    }

    /// The route for a normalised host: the first candidate with a list, and the host's dead marks.
    pub fn lookup(&self, host: &str) -> Lookup {
        let table = self.table.borrow();
        let Some((key, list)) = table.find(host) else {
            return Lookup::NoFrontend;
        };
        let mut dead = self.dead.borrow_mut();
        let indexes = if dead.is_empty() {
            &[][..]
        } else {
            dead.indexes(host, list, Instant::now())
        };
        Lookup::Found(Rc::new(Route::with_options(
            key,
            list,
            indexes,
            table.options(key),
        )))
    }

    /// Records a passive failure of backend `index` (whose entry is `url`) for `host`, in this worker's
    /// memory for `deadBackendTTL`. A request routed by the previous table may report an index that no
    /// longer holds `url`: such a mark is dropped.
    pub fn mark_dead(&self, host: &str, url: &str, index: usize) {
        let table = self.table.borrow();
        let Some((key, list)) = table.find(host) else {
            return;
        };
        let entry = index.checked_add(1).and_then(|i| list.get(i));
        if entry.map(String::as_str) != Some(url) {
            debug!("dead mark for {host} ({url}) dropped: the routes file changed meanwhile");
            return;
        }
        self.dead
            .borrow_mut()
            .mark(host, list, index, Instant::now());
        debug!("backend {url} of {host} (frontend {key}) marked dead in this worker's memory");
    }

    /// Installs the newest table the watcher sent, if any. True when the table changed (the caller must
    /// then forget cached routes).
    pub fn install_update(&self) -> bool {
        // Several may have queued up since the last look: only the newest matters. An empty or
        // disconnected channel (watcher stopped at shutdown) ends the loop.
        let mut newest = None;
        while let Ok(table) = self.updates.try_recv() {
            newest = Some(table);
        }
        match newest {
            Some(table) => {
                *self.table.borrow_mut() = table;
                true
            }
            None => false,
        }
    }

    /// Forgets expired dead marks.
    pub fn sweep_dead(&self, now: Instant) {
        self.dead.borrow_mut().sweep(now);
    }

    /// Number of frontends in the table in force.
    pub fn frontends(&self) -> usize {
        self.table.borrow().len()
    }
}
