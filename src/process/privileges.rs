//! Privilege drop (docs/compatibility.md §7): a process started as root binds every listener and prepares its access log
//! as root, then switches to `group` and `user` before any worker serves.
//!
//! Rules:
//! - started as root: `user` (default `www-data`) and `group` (default: the user's primary group) are
//!   looked up with `getpwnam_r` / `getgrnam_r` (numeric ids are accepted too); an unknown name is a
//!   start-up error naming the key. `user: "root"` keeps root. The supplementary groups are reduced to
//!   `group`, then `setgid`, then `setuid`; the result is checked (and that root cannot be regained).
//! - not started as root: `user` and `group` are ignored, with an info line.
//!
//! This module runs on the main thread before the workers start; it never runs on a worker and never
//! panics on what it reads from the system databases.

use std::ffi::{CStr, CString};
use std::path::Path;

use log::info;

/// The account a root process switches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: libc::uid_t,
    pub group: String,
    pub gid: libc::gid_t,
}

/// What start-up must do about privileges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Not root: nothing to change (`user`/`group` ignored).
    Unprivileged,
    /// Root and `user: "root"`: keep root.
    KeepRoot,
    /// Root: switch to this identity after binding.
    SwitchTo(Identity),
}

/// The default `user` (docs/compatibility.md §7).
pub const DEFAULT_USER: &str = "www-data";

/// Decides what to do, resolving names as root. Errors are complete sentences for the operator.
pub fn plan(user: Option<&str>, group: Option<&str>) -> Result<Plan, String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        if user.is_some() || group.is_some() {
            info!(
                "not started as root (uid {euid}): \"user\" and \"group\" are ignored, running as uid {euid}"
            );
        }
        return Ok(Plan::Unprivileged);
    }
    let user = user.unwrap_or(DEFAULT_USER);
    if user == "root" || user == "0" {
        return Ok(Plan::KeepRoot);
    }
    let account = lookup_user(user)?.ok_or_else(|| {
        format!(
            "started as root, but the user {user:?} (configuration key \"user\"{}) does not exist: \
             create it (e.g. useradd --system --no-create-home --shell /usr/sbin/nologin {user}), or set \
             \"user\" to an existing account (\"root\" keeps root, not recommended); hipache-tpc will not \
             serve as root by accident",
            if user == DEFAULT_USER { ", default www-data" } else { "" }
        )
    })?;
    if account.uid == 0 {
        return Ok(Plan::KeepRoot);
    }
    let (group_name, gid) = match group {
        None => {
            let name = lookup_group_by_gid(account.gid)?.unwrap_or_else(|| account.gid.to_string());
            (name, account.gid)
        }
        Some(g) => {
            let gid = lookup_group(g)?.ok_or_else(|| {
                format!(
                    "the group {g:?} (configuration key \"group\") does not exist: create it (groupadd \
                     --system {g}) or remove \"group\" to use the primary group of {user:?}"
                )
            })?;
            (g.to_string(), gid)
        }
    };
    Ok(Plan::SwitchTo(Identity {
        user: account.name,
        uid: account.uid,
        group: group_name,
        gid,
    }))
}

/// Prepares the access log while still root: creates the file if it is missing, and gives a new file,
/// or one left by root (Hipache ran as root), to the identity, so that workers (which open it themselves)
/// can append to it after the switch. A file of any other owner is left alone.
pub fn prepare_access_log(path: &Path, who: &Identity) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| format!("cannot open the access log {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot inspect the access log {}: {e}", path.display()))?;
    if meta.uid() == 0 {
        // SAFETY: fchown on a descriptor we own; the result is checked.
        if unsafe { libc::fchown(file.as_raw_fd(), who.uid, who.gid) } != 0 {
            return Err(format!(
                "cannot give the access log {} to {}:{}: {}",
                path.display(),
                who.user,
                who.group,
                std::io::Error::last_os_error()
            ));
        }
        if meta.len() > 0 {
            info!(
                "the access log {} belonged to root: it now belongs to {}:{} (who appends to it)",
                path.display(),
                who.user,
                who.group
            );
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o200 == 0 {
            // SAFETY: fchmod on a descriptor we own; the result is checked.
            if unsafe { libc::fchmod(file.as_raw_fd(), (mode | 0o200) as libc::mode_t) } != 0 {
                return Err(format!(
                    "cannot make the access log {} writable by its owner: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(())
}

/// Checks, after the switch, that the access log can still be appended to (workers open it, and reopen
/// it on SIGUSR1), so that a wrong owner is a clear start-up error rather than a worker failure.
pub fn check_access_log_writable(path: &Path) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map(|_| ())
        .map_err(|e| {
            // SAFETY: geteuid has no preconditions.
            let uid = unsafe { libc::geteuid() };
            format!(
                "the access log {} cannot be appended to as uid {uid}: {e}; make the file and its folder \
                 writable by the configured user (log rotation recreates the file as that user)",
                path.display()
            )
        })
}

/// Switches the whole process (every thread: glibc broadcasts set*id) to `who`, and checks the result.
pub fn switch_to(who: &Identity) -> Result<(), String> {
    let fail = |what: &str| {
        format!(
            "cannot switch to user {} (uid {}) and group {} (gid {}): {what} failed: {}",
            who.user,
            who.uid,
            who.group,
            who.gid,
            std::io::Error::last_os_error()
        )
    };
    let groups = [who.gid];
    // SAFETY: setgroups reads one gid from a live array of length 1.
    if unsafe { libc::setgroups(1, groups.as_ptr()) } != 0 {
        return Err(fail("setgroups"));
    }
    // SAFETY: plain system calls with integer arguments.
    if unsafe { libc::setgid(who.gid) } != 0 {
        return Err(fail("setgid"));
    }
    // SAFETY: as above.
    if unsafe { libc::setuid(who.uid) } != 0 {
        return Err(fail("setuid"));
    }
    // SAFETY: getters without preconditions; setuid(0) must fail now that root is given up.
    let (uid, euid, gid, egid, regained) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
            libc::setuid(0) == 0,
        )
    };
    if uid != who.uid || euid != who.uid || gid != who.gid || egid != who.gid || regained {
        return Err(format!(
            "switching to {}:{} did not take (uid {uid}/{euid}, gid {gid}/{egid}, root regained: {regained})",
            who.user, who.group
        ));
    }
    Ok(())
}

/// A passwd entry.
struct Account {
    name: String,
    uid: libc::uid_t,
    gid: libc::gid_t,
}

/// Scratch size for the `_r` lookups; doubled on ERANGE up to a limit.
const LOOKUP_BUF: usize = 4096;
const LOOKUP_BUF_MAX: usize = 1 << 20;

fn c_name(name: &str, key: &str) -> Result<CString, String> {
    CString::new(name).map_err(|_| format!("\"{key}\" contains a NUL byte"))
}

/// Runs one reentrant NSS lookup (`getpwnam_r` and friends) in a scratch buffer that is doubled on
/// `ERANGE`. `call` makes the C call with the buffer and returns its code and, when an entry was found,
/// what it needs from it (copied out while the buffer is alive). `what` names the lookup in errors.
fn nss_lookup<T>(
    what: &str,
    mut call: impl FnMut(&mut [u8]) -> (libc::c_int, Option<T>),
) -> Result<Option<T>, String> {
    let mut size = LOOKUP_BUF;
    loop {
        let mut buf = vec![0u8; size];
        let (rc, found) = call(&mut buf);
        if rc == libc::ERANGE && size < LOOKUP_BUF_MAX {
            size *= 2;
            continue;
        }
        if rc != 0 {
            return Err(format!(
                "cannot look up {what}: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        return Ok(found);
    }
}

/// A C string inside a lookup buffer, or `fallback` when the pointer is null.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that is alive for the call.
unsafe fn c_string_or(p: *const libc::c_char, fallback: impl FnOnce() -> String) -> String {
    if p.is_null() {
        fallback()
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// A passwd entry found by `getpwnam_r` or `getpwuid_r` into `pwd`, its strings inside the buffer.
fn account_of(pwd: &libc::passwd, fallback_name: impl FnOnce() -> String) -> Account {
    Account {
        // SAFETY: pw_name is null or a NUL-terminated string in the lookup buffer, alive here.
        name: unsafe { c_string_or(pwd.pw_name, fallback_name) },
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    }
}

/// Looks up a user by name (or, failing that, a numeric uid).
fn lookup_user(name: &str) -> Result<Option<Account>, String> {
    let cname = c_name(name, "user")?;
    let found = nss_lookup(&format!("the user {name:?}"), |buf| {
        // SAFETY: zeroed passwd is a valid out-parameter (plain integers and null pointers).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer refers to live memory of the stated size; on success `result` points to
        // `pwd`, whose strings point into `buf`, both alive while read below.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        let found = (rc == 0 && !result.is_null()).then(|| account_of(&pwd, || name.to_string()));
        (rc, found)
    })?;
    match found {
        Some(account) => Ok(Some(account)),
        None => match name.parse::<libc::uid_t>() {
            Ok(uid) => lookup_user_by_uid(uid),
            Err(_) => Ok(None),
        },
    }
}

/// Looks up a user by uid; `None` for a bare uid without a passwd entry (no primary group to default
/// to).
fn lookup_user_by_uid(uid: libc::uid_t) -> Result<Option<Account>, String> {
    nss_lookup(&format!("uid {uid}"), |buf| {
        // SAFETY: as in lookup_user.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: as in lookup_user.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        let found = (rc == 0 && !result.is_null()).then(|| account_of(&pwd, || uid.to_string()));
        (rc, found)
    })
}

/// Looks up a group by name (or a numeric gid, taken as is).
fn lookup_group(name: &str) -> Result<Option<libc::gid_t>, String> {
    let cname = c_name(name, "group")?;
    let found = nss_lookup(&format!("the group {name:?}"), |buf| {
        // SAFETY: zeroed group is a valid out-parameter.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: pointers to live memory of the stated sizes.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        (rc, (rc == 0 && !result.is_null()).then_some(grp.gr_gid))
    })?;
    Ok(found.or_else(|| name.parse::<libc::gid_t>().ok()))
}

/// The name of a group by gid (`None` without a group entry).
fn lookup_group_by_gid(gid: libc::gid_t) -> Result<Option<String>, String> {
    let found = nss_lookup(&format!("gid {gid}"), |buf| {
        // SAFETY: as in lookup_group.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in lookup_group.
        let rc = unsafe {
            libc::getgrgid_r(
                gid,
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        let found = (rc == 0 && !result.is_null() && !grp.gr_name.is_null())
            // SAFETY: a non-null NUL-terminated string in `buf`, alive here.
            .then(|| unsafe { c_string_or(grp.gr_name, String::new) });
        (rc, found)
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_as_root() {
        let root = lookup_user("root").ok().flatten();
        assert_eq!(root.map(|a| a.uid), Some(0));
        assert_eq!(lookup_group("root").ok().flatten(), Some(0));
        assert_eq!(
            lookup_group_by_gid(0).ok().flatten().as_deref(),
            Some("root")
        );
    }

    #[test]
    fn unknown_names_are_none_not_errors() {
        assert!(matches!(lookup_user("no-such-user-hipache-tpc"), Ok(None)));
        assert!(matches!(
            lookup_group("no-such-group-hipache-tpc"),
            Ok(None)
        ));
        assert!(lookup_user("bad\0name").is_err());
    }

    #[test]
    fn numeric_ids_are_accepted() {
        assert_eq!(
            lookup_user("0").ok().flatten().map(|a| a.name),
            Some("root".into())
        );
        assert_eq!(lookup_group("4242").ok().flatten(), Some(4242));
    }
}
