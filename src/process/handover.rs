//! Zero-downtime reload and upgrade: the running process starts its successor (the executable at the
//! path it was started from, so a replaced binary is picked up, with the same arguments), hands it the
//! very listening sockets it accepts on, and waits for it to be ready before it stops accepting.
//!
//! The protocol, between the old process (parent) and the new one (child):
//! 1. The parent duplicates its listening sockets and starts the child with their descriptors inherited
//!    (`FD_CLOEXEC` cleared between fork and exec only) and named in `HIPACHE_TPC_LISTEN_FDS`
//!    (`ADDRESS=fd,fd;ADDRESS=fd`), plus the write end of a pipe in `HIPACHE_TPC_READY_FD`.
//! 2. The child loads and validates its configuration and certificates like any start-up, adopts the
//!    inherited socket of every address it still listens on (no bind, no "port in use" probe), binds
//!    new addresses, closes the inherited sockets of addresses it dropped, starts its workers, and
//!    once every worker accepts writes `READY <pid>` on the pipe (or `ERROR <why>`; or dies, which the
//!    parent sees as end of file).
//! 3. The parent, on `READY`, stops accepting (pending accepts cancelled, the shared sockets stay open
//!    in the child, so nothing queued is lost or reset) and drains its requests and tunnels within
//!    `drainTimeout`. On anything else, or no answer within [`READY_TIMEOUT`], it stops the child and
//!    goes on serving as if nothing happened.
//!
//! This module holds both halves of the protocol; it does not decide when to reload (`supervisor`) and
//! never runs on a worker thread.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use log::{info, warn};

/// Names the inherited listening sockets.
pub const LISTEN_FDS_ENV: &str = "HIPACHE_TPC_LISTEN_FDS";
/// Names the pipe the child reports readiness on.
pub const READY_FD_ENV: &str = "HIPACHE_TPC_READY_FD";
/// How long a successor may take to become ready before the reload is abandoned.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------------
// Child side
// ---------------------------------------------------------------------------------------------------

/// Listening sockets inherited from the predecessor, by address.
#[derive(Default)]
pub struct Inherited {
    sockets: HashMap<SocketAddr, Vec<std::net::TcpListener>>,
}

impl Inherited {
    /// Whether this process was started by a predecessor with sockets to adopt.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Takes the inherited sockets listening on `addr` (none if the predecessor did not listen there).
    pub fn take(&mut self, addr: SocketAddr) -> Vec<std::net::TcpListener> {
        self.sockets.remove(&addr).unwrap_or_default()
    }

    /// Closes the inherited sockets no configured address took, naming them (a listener removed by the
    /// new configuration).
    pub fn close_leftovers(&mut self) {
        for (addr, sockets) in self.sockets.drain() {
            info!(
                "{addr} is no longer configured: closing the listener inherited from the previous process ({} sockets)",
                sockets.len()
            );
        }
    }
}

/// The write end of the readiness pipe, held by a successor until it is ready (or fails).
pub struct ReadyPipe(std::fs::File);

impl ReadyPipe {
    /// Tells the predecessor this process serves now.
    pub fn ready(mut self) {
        let _ = writeln!(self.0, "READY {}", std::process::id());
    }

    /// Tells the predecessor why this process could not start (it keeps serving).
    pub fn failed(mut self, why: &str) {
        let _ = writeln!(self.0, "ERROR {}", why.replace('\n', " "));
    }
}

/// What a successor inherits, read from (and removed from) the environment at start-up. Call it before
/// any thread starts.
pub fn take_from_env() -> Result<(Inherited, Option<ReadyPipe>), String> {
    let listen = std::env::var(LISTEN_FDS_ENV).ok();
    let ready = std::env::var(READY_FD_ENV).ok();
    std::env::remove_var(LISTEN_FDS_ENV);
    std::env::remove_var(READY_FD_ENV);
    let mut seen = HashSet::new();
    let ready = match ready {
        None => None,
        Some(text) => {
            let fd =
                parse_fd(&text, &mut seen).map_err(|e| format!("{READY_FD_ENV}={text:?}: {e}"))?;
            // SAFETY: `fd` is open (checked by parse_fd), was named by our predecessor for us, and is
            // taken once (the `seen` set).
            Some(ReadyPipe(std::fs::File::from(unsafe {
                OwnedFd::from_raw_fd(fd)
            })))
        }
    };
    let mut inherited = Inherited::default();
    if let Some(text) = listen {
        for item in text.split(';').filter(|s| !s.is_empty()) {
            let (addr, fds) = item
                .split_once('=')
                .ok_or_else(|| format!("{LISTEN_FDS_ENV}: {item:?} is not ADDRESS=fd,..."))?;
            let addr: SocketAddr = addr
                .parse()
                .map_err(|e| format!("{LISTEN_FDS_ENV}: bad address {addr:?}: {e}"))?;
            for fd in fds.split(',') {
                let fd = parse_fd(fd, &mut seen).map_err(|e| format!("{LISTEN_FDS_ENV}: {e}"))?;
                // SAFETY: open (checked), handed to us by the predecessor, taken once.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                let listener = adopt(owned, addr)?;
                inherited.sockets.entry(addr).or_default().push(listener);
            }
        }
    }
    Ok((inherited, ready))
}

/// Parses a descriptor number and checks it is open and not taken twice; sets `FD_CLOEXEC` again so that
/// it leaks into no other program.
fn parse_fd(text: &str, seen: &mut HashSet<RawFd>) -> Result<RawFd, String> {
    let fd: RawFd = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a descriptor number"))?;
    if fd < 3 || !seen.insert(fd) {
        return Err(format!(
            "descriptor {fd} is not usable (stdio or named twice)"
        ));
    }
    // SAFETY: F_GETFD/F_SETFD on an integer descriptor; failure means it is not open.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return Err(format!("descriptor {fd} is not open"));
        }
        libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
    }
    Ok(fd)
}

/// Checks that an inherited descriptor is a listening TCP socket on `addr`.
fn adopt(fd: OwnedFd, addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let socket = socket2::Socket::from(fd);
    let local = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| format!("inherited descriptor for {addr} is not an inet socket"))?;
    if local != addr {
        return Err(format!(
            "inherited descriptor for {addr} listens on {local} instead"
        ));
    }
    if !socket.is_listener().unwrap_or(false) {
        return Err(format!("inherited descriptor for {addr} is not listening"));
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("inherited socket {addr}: {e}"))?;
    Ok(socket.into())
}

// ---------------------------------------------------------------------------------------------------
// Parent side
// ---------------------------------------------------------------------------------------------------

/// How to start a successor: the program, its arguments, and the sockets to hand over.
pub struct SuccessorPlan {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    /// Duplicates of every listening socket, by address (owned here, closed once the child has them).
    pub sockets: Vec<(SocketAddr, Vec<OwnedFd>)>,
}

/// A successor that reported ready.
pub struct Successor {
    pub pid: u32,
}

/// Starts the successor and waits until it is ready. On failure the child is stopped (and reaped in the
/// background) and the error says why; the caller keeps serving.
pub fn start_successor(plan: SuccessorPlan, timeout: Duration) -> Result<Successor, String> {
    let (read_end, write_end) = pipe()?;
    let mut spec = String::new();
    let mut inherit: Vec<RawFd> = vec![write_end.as_raw_fd()];
    for (addr, fds) in &plan.sockets {
        if !spec.is_empty() {
            spec.push(';');
        }
        spec.push_str(&addr.to_string());
        spec.push('=');
        let numbers: Vec<String> = fds.iter().map(|fd| fd.as_raw_fd().to_string()).collect();
        spec.push_str(&numbers.join(","));
        inherit.extend(fds.iter().map(AsRawFd::as_raw_fd));
    }
    let mut command = Command::new(&plan.exe);
    command
        .args(&plan.args)
        .env(LISTEN_FDS_ENV, &spec)
        .env(READY_FD_ENV, write_end.as_raw_fd().to_string())
        .stdin(Stdio::null());
    let max_fd = descriptor_limit();
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe system
    // calls (close_range, fcntl) without allocating: first every descriptor above stdio is marked
    // close-on-exec (client sockets accepted by io_uring are not, and a copy of one in the successor
    // would keep that connection open after this process closed it), then the ones to hand over, open
    // in the parent (owned by `plan` and `write_end`, alive across spawn), are cleared.
    unsafe {
        command.pre_exec(move || {
            let marked = libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) == 0;
            if !marked {
                for fd in 3..max_fd {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                        libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                    }
                }
            }
            for &fd in &inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", plan.exe.display()))?;
    // Only the child holds the write end now: its exit is an end of file here.
    drop(write_end);
    drop(plan.sockets);
    let pid = child.id();
    info!(
        "reload: started {} as pid {pid} with the listening sockets ({spec}); waiting for it to be ready",
        plan.exe.display()
    );
    match wait_report(read_end, timeout) {
        Report::Ready => Ok(Successor { pid }),
        Report::Failed(why) => {
            reap_in_background(child, false);
            Err(format!(
                "the new process (pid {pid}) refused to start: {why}"
            ))
        }
        Report::Died => {
            let status = wait_briefly(&mut child);
            reap_in_background(child, false);
            Err(format!(
                "the new process (pid {pid}) exited before it was ready ({status}); its own error is logged above"
            ))
        }
        Report::TimedOut => {
            reap_in_background(child, true);
            Err(format!(
                "the new process (pid {pid}) was not ready within {} s; stopped it",
                timeout.as_secs()
            ))
        }
    }
}

enum Report {
    Ready,
    Failed(String),
    Died,
    TimedOut,
}

fn wait_report(read_end: OwnedFd, timeout: Duration) -> Report {
    let deadline = Instant::now() + timeout;
    let mut file = std::fs::File::from(read_end);
    let mut got = Vec::new();
    loop {
        if let Some(line) = got
            .split(|&b| b == b'\n')
            .next()
            .filter(|_| got.contains(&b'\n'))
        {
            let line = String::from_utf8_lossy(line).into_owned();
            return match line.split_once(' ') {
                Some(("READY", _)) => Report::Ready,
                Some(("ERROR", why)) => Report::Failed(why.to_string()),
                _ => Report::Failed(format!("unexpected report {line:?}")),
            };
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Report::TimedOut;
        }
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: polls one valid descriptor described by a live pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Report::Died;
        }
        if n == 0 {
            continue;
        }
        let mut buf = [0u8; 512];
        match file.read(&mut buf) {
            Ok(0) => {
                if got.is_empty() {
                    return Report::Died;
                }
                got.push(b'\n');
            }
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Report::Died,
        }
    }
}

fn wait_briefly(child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    "still running".into()
}

/// Stops (if asked, with SIGTERM: it may have accepted connections, which it then finishes) and reaps a
/// failed successor without blocking the caller.
fn reap_in_background(mut child: Child, terminate: bool) {
    if terminate {
        // SAFETY: kill with a pid we spawned and have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let spawned = std::thread::Builder::new()
        .name("hipache-reap".into())
        .spawn(move || {
            let _ = child.wait();
        });
    if let Err(e) = spawned {
        warn!("cannot start a thread to reap the failed successor: {e}");
    }
}

/// The highest descriptor number to sweep when `close_range` is unavailable (kernels before 5.11).
fn descriptor_limit() -> RawFd {
    // SAFETY: zeroed rlimit is valid; getrlimit writes into it.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid resource and out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 65_536;
    }
    limit.rlim_cur.min(1 << 20) as RawFd
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into a live array of two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!(
            "cannot create the readiness pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The path this process should re-execute on reload: `argv[0]` made absolute against the start-up
/// folder (or looked up in `PATH`), so that a binary replaced at that path is picked up. Not
/// `/proc/self/exe`, which keeps pointing at the old, possibly deleted, file.
pub fn own_executable() -> PathBuf {
    let argv0 = std::env::args_os().next().map(PathBuf::from);
    if let Some(p) = argv0 {
        if p.components().count() > 1 || p.is_absolute() {
            if p.is_absolute() {
                return p;
            }
            if let Ok(cwd) = std::env::current_dir() {
                return cwd.join(p);
            }
        } else if let Some(found) = search_path(&p) {
            return found;
        }
    }
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

fn search_path(name: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .and_then(|p| {
            if p.is_absolute() {
                Some(p)
            } else {
                std::env::current_dir().ok().map(|cwd| cwd.join(p))
            }
        })
}
