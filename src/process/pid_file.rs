//! `server.pidFile` / `--pid-file`: the PID of the process that serves, for supervisors and scripts
//! (`kill -USR1 "$(cat pidfile)"`). Written once the process is ready; a reload's successor rewrites it
//! when it is ready, so it always names the process that accepts connections (README "Reload").
//!
//! Control plane only (main thread, start-up and exit). It never fails a start once the checks passed:
//! a write error is logged.

use std::io::Write;
use std::path::Path;

use crate::process::privileges::Identity;

/// Before the switch from root: creates the file if needed and gives it to the user, so that the
/// successor of a reload (which runs as the user) can rewrite it in place.
pub fn prepare(path: &Path, who: &Identity) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|e| format!("cannot create the pid file {}: {e}", path.display()))?;
    // SAFETY: fchown on a descriptor we own; the result is checked.
    if unsafe { libc::fchown(file.as_raw_fd(), who.uid, who.gid) } != 0 {
        return Err(format!(
            "cannot give the pid file {} to {}:{}: {}",
            path.display(),
            who.user,
            who.group,
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Writes this process's PID (rewriting the file in place: its folder may not be writable by the user).
pub fn write(path: &Path) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| format!("cannot write the pid file {}: {e}", path.display()))?;
    writeln!(file, "{}", std::process::id())
        .map_err(|e| format!("cannot write the pid file {}: {e}", path.display()))
}

/// At exit: removes the file if it still holds this PID (after a reload it names the successor);
/// empties it when the folder does not allow removing it.
pub fn remove_if_ours(path: &Path) {
    let ours = std::fs::read_to_string(path)
        .map(|t| t.trim() == std::process::id().to_string())
        .unwrap_or(false);
    if ours && std::fs::remove_file(path).is_err() {
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path);
    }
}
