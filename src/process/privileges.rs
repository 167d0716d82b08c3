//! Privilege drop (docs/compatibility.md §7): a process started as root binds every listener and prepares its access log
//! as root, then switches to `group` and `user` before any worker serves.
//!
//! Rules:
//! - started as root: `user` (default `www-data`) and `group` (default: the user's primary group) are
//!   looked up in the system databases (nix's `User`/`Group`, `getpwnam_r` / `getgrnam_r` underneath;
//!   numeric ids are accepted too); an unknown name is a
//!   start-up error naming the key. `user: "root"` keeps root. The supplementary groups are reduced to
//!   `group`, then `setgid`, then `setuid`; the result is checked (and that root cannot be regained).
//! - not started as root: `user` and `group` are ignored, with an info line.
//!
//! This module runs on the main thread before the workers start; it never runs on a worker and never
//! panics on what it reads from the system databases.

use std::path::Path;

use log::info;
use nix::unistd::{Gid, Group, Uid, User};

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
    let euid = nix::unistd::geteuid().as_raw();
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
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
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
        std::os::unix::fs::fchown(&file, Some(who.uid), Some(who.gid)).map_err(|e| {
            format!(
                "cannot give the access log {} to {}:{}: {e}",
                path.display(),
                who.user,
                who.group
            )
        })?;
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
            file.set_permissions(std::fs::Permissions::from_mode(mode | 0o200))
                .map_err(|e| {
                    format!(
                        "cannot make the access log {} writable by its owner: {e}",
                        path.display()
                    )
                })?;
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
            let uid = nix::unistd::geteuid();
            format!(
                "the access log {} cannot be appended to as uid {uid}: {e}; make the file and its folder \
                 writable by the configured user (log rotation recreates the file as that user)",
                path.display()
            )
        })
}

/// Switches the whole process (every thread: glibc broadcasts set*id) to `who`, and checks the result.
pub fn switch_to(who: &Identity) -> Result<(), String> {
    use nix::unistd::{getegid, geteuid, getgid, getuid, setgid, setgroups, setuid};
    let fail = |what: &str, e: nix::errno::Errno| {
        format!(
            "cannot switch to user {} (uid {}) and group {} (gid {}): {what} failed: {}",
            who.user,
            who.uid,
            who.group,
            who.gid,
            std::io::Error::from(e)
        )
    };
    let (uid, gid) = (Uid::from_raw(who.uid), Gid::from_raw(who.gid));
    setgroups(&[gid]).map_err(|e| fail("setgroups", e))?;
    setgid(gid).map_err(|e| fail("setgid", e))?;
    setuid(uid).map_err(|e| fail("setuid", e))?;
    // setuid(0) must fail now that root is given up.
    let (ruid, euid, rgid, egid) = (getuid(), geteuid(), getgid(), getegid());
    let regained = setuid(Uid::from_raw(0)).is_ok();
    if ruid != uid || euid != uid || rgid != gid || egid != gid || regained {
        return Err(format!(
            "switching to {}:{} did not take (uid {ruid}/{euid}, gid {rgid}/{egid}, root regained: {regained})",
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

impl Account {
    /// The entry nix found; `fallback` names it if the entry has no name.
    fn of(u: User, fallback: impl FnOnce() -> String) -> Account {
        Account {
            name: if u.name.is_empty() {
                fallback()
            } else {
                u.name
            },
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }
    }
}

/// nix's lookups take a `&str` and answer "no such entry" for a name with a NUL byte; the operator
/// is told instead.
fn check_name(name: &str, key: &str) -> Result<(), String> {
    if name.contains('\0') {
        return Err(format!("\"{key}\" contains a NUL byte"));
    }
    Ok(())
}

/// A failed lookup (not "no such entry": an NSS or I/O error), for the operator.
fn lookup_error(what: &str, e: nix::errno::Errno) -> String {
    format!("cannot look up {what}: {}", std::io::Error::from(e))
}

/// Looks up a user by name (or, failing that, a numeric uid).
fn lookup_user(name: &str) -> Result<Option<Account>, String> {
    check_name(name, "user")?;
    match User::from_name(name).map_err(|e| lookup_error(&format!("the user {name:?}"), e))? {
        Some(user) => Ok(Some(Account::of(user, || name.to_string()))),
        None => match name.parse::<libc::uid_t>() {
            Ok(uid) => lookup_user_by_uid(uid),
            Err(_) => Ok(None),
        },
    }
}

/// Looks up a user by uid; `None` for a bare uid without a passwd entry (no primary group to default
/// to).
fn lookup_user_by_uid(uid: libc::uid_t) -> Result<Option<Account>, String> {
    let user =
        User::from_uid(Uid::from_raw(uid)).map_err(|e| lookup_error(&format!("uid {uid}"), e))?;
    Ok(user.map(|u| Account::of(u, || uid.to_string())))
}

/// Looks up a group by name (or a numeric gid, taken as is).
fn lookup_group(name: &str) -> Result<Option<libc::gid_t>, String> {
    check_name(name, "group")?;
    let found =
        Group::from_name(name).map_err(|e| lookup_error(&format!("the group {name:?}"), e))?;
    Ok(found
        .map(|g| g.gid.as_raw())
        .or_else(|| name.parse::<libc::gid_t>().ok()))
}

/// The name of a group by gid (`None` without a group entry).
fn lookup_group_by_gid(gid: libc::gid_t) -> Result<Option<String>, String> {
    let found =
        Group::from_gid(Gid::from_raw(gid)).map_err(|e| lookup_error(&format!("gid {gid}"), e))?;
    Ok(found.map(|g| g.name))
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
