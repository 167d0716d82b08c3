//! The access log (docs/compatibility.md §8): nginx "combined" plus identifier, total and backend seconds, one line per
//! request, written by each worker into its own buffer and appended to the file in whole lines.
//!
//! Each worker opens the file itself (O_APPEND), so lines from different workers never interleave inside
//! a line and no lock is shared. The buffer is flushed when it passes 32 KiB and at least every 200 ms.
//! SIGUSR1 bumps a process-wide generation; each worker reopens the file when it sees the change (log
//! rotation). Writes go to the page cache and take microseconds; they are the only file I/O on a worker.
//!
//! A reopen that fails (a folder the user cannot write, after the file was moved away) logs an error and
//! keeps the open file; a new file made by a reopen gets the old file's mode and owner (as far as the
//! process may set them). A worker started later (after a crash) that cannot open the path writes
//! through the descriptor the main thread opened at start-up (see [`keep_open`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use log::{error, warn};

use crate::common::clock::LogClock;

/// Bumped by the signal thread on SIGUSR1; workers reopen their log file when it changes.
pub static REOPEN_GENERATION: AtomicU64 = AtomicU64::new(0);

const FLUSH_AT: usize = 32 * 1024;

/// The access log as opened by the main thread at start-up (after the switch to the user).
static OPENED_AT_START: OnceLock<File> = OnceLock::new();

/// Called once by the main thread before the workers start: keeps a descriptor of the log, for workers
/// that cannot open the path later.
pub fn keep_open(path: &Path) -> std::io::Result<()> {
    let file = open_append(path)?;
    let _ = OPENED_AT_START.set(file);
    Ok(())
}

/// One request's line, borrowed from the request and response.
pub struct LogFields<'a> {
    pub client: &'a str,
    pub method: &'a [u8],
    pub target: &'a [u8],
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// `None` when the proxy answered itself (logged as `"-"`).
    pub identifier: Option<&'a str>,
    pub total_secs: f64,
    pub backend_secs: f64,
}

/// A worker's access log.
pub struct AccessLog {
    path: Option<PathBuf>,
    file: Option<File>,
    buf: Vec<u8>,
    clock: LogClock,
    generation: u64,
}

impl AccessLog {
    /// Opens `path` for appending (creating it); `None` disables logging.
    pub fn open(path: Option<&Path>) -> std::io::Result<AccessLog> {
        let file = match path {
            Some(p) => match open_append(p) {
                Ok(f) => Some(f),
                Err(e) => match OPENED_AT_START.get().map(File::try_clone) {
                    Some(Ok(f)) => {
                        error!(
                            "cannot open the access log {}: {e}; writing to the file opened at start-up",
                            p.display()
                        );
                        Some(f)
                    }
                    _ => return Err(e),
                },
            },
            None => None,
        };
        Ok(AccessLog {
            path: path.map(Path::to_path_buf),
            file,
            buf: Vec::with_capacity(if path.is_some() { FLUSH_AT + 1024 } else { 0 }),
            clock: LogClock::new(),
            generation: REOPEN_GENERATION.load(Ordering::Relaxed),
        })
    }

    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Appends one line (and flushes if the buffer is full).
    pub fn log(&mut self, f: &LogFields<'_>) {
        if self.path.is_none() {
            return;
        }
        let b = &mut self.buf;
        b.extend_from_slice(f.client.as_bytes());
        b.extend_from_slice(b" - - [");
        b.extend_from_slice(self.clock.now());
        b.extend_from_slice(b"] \"");
        escape_into(b, f.method);
        b.push(b' ');
        escape_into(b, f.target);
        b.push(b' ');
        b.extend_from_slice(f.protocol.as_bytes());
        b.extend_from_slice(b"\" ");
        push_u64(b, u64::from(f.status));
        b.push(b' ');
        push_u64(b, f.bytes);
        b.extend_from_slice(b" \"");
        escape_into(b, f.referer.unwrap_or(b""));
        b.extend_from_slice(b"\" \"");
        escape_into(b, f.user_agent.unwrap_or(b""));
        b.extend_from_slice(b"\" \"");
        escape_into(b, f.identifier.unwrap_or("-").as_bytes());
        b.extend_from_slice(b"\" ");
        push_secs(b, f.total_secs);
        b.push(b' ');
        push_secs(b, f.backend_secs);
        b.push(b'\n');
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Writes buffered lines; reopens the file first if SIGUSR1 asked for it.
    pub fn flush(&mut self) {
        let generation = REOPEN_GENERATION.load(Ordering::Relaxed);
        if generation != self.generation {
            self.generation = generation;
            if let Some(path) = &self.path {
                // An existing file (made by logrotate's `create`, say) is taken as it is; one this
                // process creates gets the old file's mode and owner.
                let reopened = match OpenOptions::new().append(true).open(path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => open_append(path)
                        .inspect(|f| {
                            if let Some(old) = &self.file {
                                keep_mode_and_owner(old, f);
                            }
                        }),
                    other => other,
                };
                match reopened {
                    Ok(f) => self.file = Some(f),
                    Err(e) => error!(
                        "cannot reopen the access log {}: {e}; still writing to the file opened before",
                        path.display()
                    ),
                }
            }
        }
        if self.buf.is_empty() {
            return;
        }
        if let Some(file) = &mut self.file {
            if let Err(e) = file.write_all(&self.buf) {
                warn!(
                    "access log write failed ({e}); {} bytes dropped",
                    self.buf.len()
                );
            }
        }
        self.buf.clear();
    }
}

/// A file created by a reopen gets the previous file's mode and owner. Best effort: a process that gave
/// up root can only set its own uid, so then only the mode and a group it has are kept.
fn keep_mode_and_owner(old: &File, new: &File) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let (Ok(before), Ok(after)) = (old.metadata(), new.metadata()) else {
        return;
    };
    if (before.dev(), before.ino()) == (after.dev(), after.ino()) {
        return;
    }
    if (before.uid(), before.gid()) != (after.uid(), after.gid()) {
        // SAFETY: fchown on a descriptor we own; a refusal (EPERM) is harmless.
        unsafe { libc::fchown(new.as_raw_fd(), before.uid(), before.gid()) };
    }
    if before.mode() & 0o7777 != after.mode() & 0o7777 {
        // SAFETY: fchmod on a descriptor we own; a refusal is harmless.
        unsafe { libc::fchmod(new.as_raw_fd(), (before.mode() & 0o7777) as libc::mode_t) };
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Copies `s`, escaping `"`, `\` and non-printable bytes as `\xHH` (as nginx does).
fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    for &c in s {
        if c == b'"' || c == b'\\' || !(0x20..0x7f).contains(&c) {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.extend_from_slice(&[b'\\', b'x', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
        } else {
            out.push(c);
        }
    }
}

pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Seconds with three decimals, e.g. `0.004`.
fn push_secs(out: &mut Vec<u8>, secs: f64) {
    let millis = (secs.max(0.0) * 1000.0).round() as u64;
    push_u64(out, millis / 1000);
    out.push(b'.');
    let frac = millis % 1000;
    out.extend_from_slice(&[
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let dir = std::env::temp_dir().join(format!("hipache-tpc-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let mut log = AccessLog::open(Some(&path)).unwrap();
        log.log(&LogFields {
            client: "127.0.0.1",
            method: b"GET",
            target: b"/x?\"q\"",
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 561,
            referer: None,
            user_agent: Some(b"curl/8"),
            identifier: Some("mysite"),
            total_secs: 0.0042,
            backend_secs: 1.5,
        });
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let (prefix, rest) = text.split_once(" - - [").unwrap();
        assert_eq!(prefix, "127.0.0.1");
        let rest = &rest[rest.find(']').unwrap() + 1..];
        assert_eq!(
            rest,
            " \"GET /x?\\x22q\\x22 HTTP/1.1\" 200 561 \"\" \"curl/8\" \"mysite\" 0.004 1.500\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
