//! Start-up checks shared by `--dry` and a real start, so that both say the same thing in the same
//! words (README "Command line", "Migrating from Hipache"): the account to switch to, the access log
//! and its folder as seen by that account, the pid file, and (for `--dry`) the listening addresses.
//!
//! Nothing here binds, creates, changes or opens for writing: the real start does that after these
//! checks passed (`privileges::prepare_access_log`, `listeners`). Runs on the main thread only, before
//! any worker exists.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::{self, Config};
use crate::process::privileges::{self, Plan};

/// What the checks found: the privilege plan, and warnings that do not stop the start.
pub struct Checked {
    pub plan: Plan,
    pub warnings: Vec<String>,
}

/// The account, the access log and the pid file. An `Err` is what would stop a real start.
pub fn check(config: &Config) -> Result<Checked, String> {
    let plan = privileges::plan(config.user.as_deref(), config.group.as_deref())?;
    let mut warnings = Vec::new();
    if let Some(path) = &config.server.access_log {
        access_log(path, &plan, &mut warnings)?;
    }
    if let Some(path) = &config.server.pid_file {
        pid_file(path)?;
    }
    Ok(Checked { plan, warnings })
}

/// Who will append to the access log after start-up: (name, uid, gid); `None` for root.
fn serving_account(plan: &Plan) -> Option<(String, libc::uid_t, libc::gid_t)> {
    match plan {
        Plan::KeepRoot => None,
        Plan::SwitchTo(who) => Some((format!("user {}", who.user), who.uid, who.gid)),
        Plan::Unprivileged => {
            // SAFETY: getters without preconditions.
            let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
            Some((format!("uid {uid}"), uid, gid))
        }
    }
}

/// Whether `uid`/`gid` (with no other group: the switch reduces the supplementary groups to `group`)
/// may write to a file with this owner and mode. ACLs are not looked at.
fn writable_by(meta: &std::fs::Metadata, uid: libc::uid_t, gid: libc::gid_t) -> bool {
    let mode = meta.mode();
    if uid == 0 {
        true
    } else if meta.uid() == uid {
        mode & 0o200 != 0
    } else if meta.gid() == gid {
        mode & 0o020 != 0
    } else {
        mode & 0o002 != 0
    }
}

/// The access log: started as root, the file is created (or, left by Hipache as root's, taken over)
/// for the user before the switch, so only a file owned by a third account can stop the start; a
/// folder the user cannot write is a warning naming the consequence.
fn access_log(path: &Path, plan: &Plan, warnings: &mut Vec<String>) -> Result<(), String> {
    let Some((who, uid, gid)) = serving_account(plan) else {
        return Ok(());
    };
    let as_root = matches!(plan, Plan::SwitchTo(_));
    let dir = config::log_dir(path);
    let dir_writable = std::fs::metadata(&dir)
        .map(|m| writable_by(&m, uid, gid))
        .unwrap_or(false);
    match std::fs::metadata(path) {
        Ok(meta) => {
            // A root-owned file is given to the user before the switch (see prepare_access_log).
            let owner_after = if as_root && meta.uid() == 0 {
                uid
            } else {
                meta.uid()
            };
            let mode = meta.mode();
            let ok = if owner_after == uid {
                mode & 0o200 != 0 || as_root
            } else {
                writable_by(&meta, uid, gid)
            };
            if !ok {
                return Err(format!(
                    "the access log {} (owner uid {}, mode {:o}) cannot be appended to as {who}: give it to that account (chown), or remove it so that it is created for it",
                    path.display(),
                    meta.uid(),
                    mode & 0o7777
                ));
            }
        }
        Err(_) if as_root => {}
        Err(_) if !dir_writable => {
            return Err(format!(
                "cannot create the access log {}: its folder {} is not writable by {who} (create the file for that account, or make the folder writable by it)",
                path.display(),
                dir.display()
            ))
        }
        Err(_) => {}
    }
    if !dir_writable {
        warnings.push(folder_warning(&dir, &who));
    }
    Ok(())
}

/// The warning for an access-log folder the serving account cannot write.
pub fn folder_warning(dir: &Path, who: &str) -> String {
    format!(
        "the access-log folder {} is not writable by {who}: the log is written, but rotation must use logrotate's `create` (or `copytruncate`); a reopen (SIGUSR1) after the file was moved away fails, logs an error and keeps writing to the open file",
        dir.display()
    )
}

/// The pid file's folder must exist (the file is written as root before the switch, and given to the
/// user so that a reload's successor can rewrite it).
fn pid_file(path: &Path) -> Result<(), String> {
    let dir = config::log_dir(path);
    if !dir.is_dir() {
        return Err(format!(
            "the pid file {}: its folder {} does not exist (key `server.pidFile` or --pid-file)",
            path.display(),
            dir.display()
        ));
    }
    if path.is_dir() {
        return Err(format!(
            "the pid file {} is a folder (key `server.pidFile` or --pid-file)",
            path.display()
        ));
    }
    Ok(())
}

/// Every listening address of the configuration, as `listeners::bind_all` would take them.
pub fn addresses(config: &Config) -> Vec<(SocketAddr, bool)> {
    let mut out: Vec<(SocketAddr, bool)> = config.http.iter().map(|a| (*a, false)).collect();
    if let Some(h) = &config.https {
        out.extend(h.listeners.iter().map(|l| (l.addr, false)));
    }
    if let Some(a) = &config.admin {
        out.push((a.addr, true));
    }
    out
}

/// `--dry`: probes every address as a start would. A port held by a running hipache-tpc is a note
/// (a reload adopts its sockets), anything else that would stop a start is an error.
pub fn ports(config: &Config) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    for (addr, admin) in addresses(config) {
        if let Err(e) = crate::process::listeners::ensure_free(addr) {
            if let Some(pid) = holder_is_hipache(addr) {
                notes.push(format!(
                    "{addr} is held by hipache-tpc (pid {pid}): a reload of that process (SIGHUP) adopts it; a second start would be refused"
                ));
                continue;
            }
            return Err(if admin {
                format!("admin listener (`admin.address`, `admin.port`): {e}")
            } else {
                e
            });
        }
    }
    Ok(notes)
}

/// The pid of a `hipache-tpc` process listening on `addr`, found through /proc (best effort: `None`
/// when /proc is not readable or the holder is another program).
fn holder_is_hipache(addr: SocketAddr) -> Option<u32> {
    let table = if addr.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).ok()?;
    let port = format!(":{:04X}", addr.port());
    let inodes: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is column 1, st column 3 (0A = LISTEN), inode column 9.
            (cols.len() > 9 && cols[1].ends_with(&port) && cols[3] == "0A")
                .then(|| format!("socket:[{}]", cols[9]))
        })
        .take(64)
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten().take(1 << 16) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim_end() != "hipache-tpc" {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| Path::new(i) == target) {
                    return Some(pid);
                }
            }
        }
    }
    None
}
