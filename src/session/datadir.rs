//! The user's data folder, made at first login by the root side: race-free (relative to
//! an open folder, never following a link, skeleton files only into a folder we just made),
//! modes set explicitly instead of trusting the umask, quota where configured. A folder is
//! handed over whole or not at all: if filling it fails (a full disk), it is removed and
//! the next login tries again.

use crate::config::Config;
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode};
use nix::unistd::{fchown, Gid, Uid};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What session setup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Made now, skeleton and all.
    Created(PathBuf),
    Existed(PathBuf),
}

fn open_dir(dirfd: impl AsFd, name: &Path) -> Result<OwnedFd, Errno> {
    openat(dirfd, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
}

/// Opens `path` from `/` down, refusing a link anywhere in it.
fn open_dir_path(path: &Path) -> Result<OwnedFd, String> {
    let mut fd = open_dir(nix::fcntl::AT_FDCWD, Path::new("/")).map_err(|e| format!("/: {e}"))?;
    for component in path.components().skip(1) {
        let name = Path::new(component.as_os_str());
        fd = open_dir(&fd, name).map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => format!("{}: a symbolic link or not a folder", path.display()),
            e => format!("{}: {e}", path.display()),
        })?;
    }
    Ok(fd)
}

/// Makes `<data_dir>` for `user` (uid, gid) unless it exists. The folder above it must be
/// root's and not writable by others, or a user could swap what we are about to create.
pub fn ensure(config: &Config, user: &str, uid: u32, gid: u32) -> Result<Outcome, String> {
    if !config.valid_user_name(user) || user == "." || user == ".." {
        return Err(format!("`{}` is not a valid user name", user.escape_debug()));
    }
    let path = config.data_dir_of(user);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("{}: not a folder path", path.display()));
    };
    let parent_fd = open_dir_path(parent)?;
    let parent_stat = fstat(&parent_fd).map_err(|e| format!("{}: {e}", parent.display()))?;
    if parent_stat.st_uid != 0 || parent_stat.st_mode & 0o022 != 0 {
        return Err(format!("{}: must be root's and not writable by group or others", parent.display()));
    }
    let name = Path::new(name);
    match mkdirat(&parent_fd, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => {}
        Err(Errno::EEXIST) => {
            // Someone's folder is there already: it must be a real folder of this user's.
            let fd = open_dir(&parent_fd, name).map_err(|e| match e {
                Errno::ELOOP | Errno::ENOTDIR => {
                    format!("{}: a symbolic link or not a folder; refusing it", path.display())
                }
                e => format!("{}: {e}", path.display()),
            })?;
            let st = fstat(&fd).map_err(|e| format!("{}: {e}", path.display()))?;
            if st.st_uid != uid {
                return Err(format!("{}: belongs to uid {}, not to {user} (uid {uid})", path.display(), st.st_uid));
            }
            return Ok(Outcome::Existed(path));
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    // Ours alone (root's, 0700) until the end: fill it, then hand it over. A folder that
    // could not be filled (a full disk, an unreadable skeleton) is removed again, so that
    // no half-made folder is ever handed over and the next login tries again.
    let filled = open_dir(&parent_fd, name).map_err(|e| format!("{}: {e}", path.display())).and_then(|fd| {
        if let Some(skeleton) = &config.users.skeleton {
            copy_skeleton(skeleton, &fd, uid, gid).map_err(|e| format!("skeleton {}: {e}", skeleton.display()))?;
        }
        fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .and_then(|()| fchmod(&fd, Mode::from_bits_truncate(config.users.data_mode)))
            .map_err(|e| format!("{}: {e}", path.display()))
    });
    match filled {
        Ok(()) => Ok(Outcome::Created(path)),
        Err(e) => {
            // The parent is root's and not writable by others (checked above), so the
            // name still holds the folder we made.
            let undone = match std::fs::remove_dir_all(&path) {
                Ok(()) => "removed again; the next login tries again".to_string(),
                Err(r) => format!("could not be removed ({r}); remove it by hand"),
            };
            Err(format!("{e}; the new folder {} was {undone}", path.display()))
        }
    }
}

/// Copies the skeleton's regular files (top level) into the new folder.
fn copy_skeleton(skeleton: &Path, into: &OwnedFd, uid: u32, gid: u32) -> Result<(), String> {
    let entries = std::fs::read_dir(skeleton).map_err(|e| e.to_string())?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let meta = std::fs::symlink_metadata(entry.path()).map_err(|e| e.to_string())?;
        if !meta.file_type().is_file() {
            continue;
        }
        let content = std::fs::read(entry.path()).map_err(|e| e.to_string())?;
        let name = entry.file_name();
        let fd = openat(
            into,
            Path::new(&name),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| format!("{}: {e}", name.to_string_lossy()))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(&content).map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o755;
        fchmod(&file, Mode::from_bits_truncate(mode)).map_err(|e| e.to_string())?;
        fchown(&file, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The mount point of the filesystem that holds `path`: the highest folder above it on
/// the same device. setquota(8) takes a mount point or a device, never a folder inside.
pub fn filesystem_of(path: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let device = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).map_err(|e| format!("{}: {e}", p.display()));
    let path = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let dev = device(&path)?;
    let mut mount = path.clone();
    while let Some(parent) = mount.parent() {
        if device(parent)? != dev {
            break;
        }
        mount = parent.to_path_buf();
    }
    Ok(mount)
}

/// Why a quota could not be set, in words that say which case it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaError {
    /// setquota(8) is not installed.
    NoTools(String),
    /// The filesystem has no user quotas (not mounted with `usrquota`, no quota file).
    NotEnabled { filesystem: PathBuf, detail: String },
    /// Anything else setquota said.
    Failed { filesystem: PathBuf, detail: String },
    /// The folder's filesystem could not be found.
    NoFilesystem(String),
}

impl std::fmt::Display for QuotaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaError::NoTools(e) => {
                write!(f, "setquota cannot be run ({e}): install the quota package, or unset users.quota")
            }
            QuotaError::NotEnabled { filesystem, detail } => write!(
                f,
                "{} has no user quotas ({detail}): mount it with usrquota and run quotacheck, or unset users.quota",
                filesystem.display()
            ),
            QuotaError::Failed { filesystem, detail } => {
                write!(f, "setquota on {} failed: {detail}", filesystem.display())
            }
            QuotaError::NoFilesystem(e) => write!(f, "the data folder's filesystem: {e}"),
        }
    }
}

/// Applies `users.quota` with setquota(8) on the filesystem holding `path`; returns that
/// filesystem's mount point.
pub fn apply_quota(quota: &str, user: &str, path: &Path) -> Result<PathBuf, QuotaError> {
    let filesystem = filesystem_of(path).map_err(QuotaError::NoFilesystem)?;
    let output = std::process::Command::new("/usr/sbin/setquota")
        .args(["-u", user, "0", quota, "0", "0"])
        .arg(&filesystem)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| QuotaError::NoTools(e.to_string()))?;
    if output.status.success() {
        return Ok(filesystem);
    }
    let err = String::from_utf8_lossy(&output.stderr);
    // setquota names itself at the start of its messages; the log says who we are.
    let detail = err.lines().next().unwrap_or("no message").trim().trim_start_matches("setquota: ").to_string();
    if detail.contains("no quota enabled") || detail.contains("Cannot find") || detail.contains("not found") {
        Err(QuotaError::NotEnabled { filesystem, detail })
    } else {
        Err(QuotaError::Failed { filesystem, detail })
    }
}

/// sshd's rule for `ChrootDirectory`, which the jail is: the folder and every folder above
/// it owned by root and writable by no one else. Checked before the jail is laid out, so
/// the refusal is ours, logged, rather than sshd's later one that the user never sees.
pub fn check_jail_root(root: &Path) -> Result<(), String> {
    crate::trust::check_owned_path(root, &[]).map_err(|e| {
        format!(
            "jail.root {}: {e}; sshd's ChrootDirectory needs every folder of the path owned by root and writable \
             by root alone",
            root.display()
        )
    })
}

/// Whether `user` (primary group `gid`) is a member of `jail.group`. An account database
/// that cannot be asked counts as a member: a jail is the narrower side to err on.
pub fn is_jailed(config: &Config, user: &str, gid: u32) -> bool {
    let Some(group) = &config.jail.group else {
        return false;
    };
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) if g.gid.as_raw() == gid || g.mem.iter().any(|m| m == user) => true,
        // Memberships that are not in the group's own entry (systemd user records'
        // membership files, a directory's) are found by asking for the user's groups.
        Ok(Some(g)) => match std::ffi::CString::new(user) {
            Ok(name) => nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid))
                .map_or(true, |groups| groups.contains(&g.gid)),
            Err(_) => true,
        },
        Ok(None) => false,
        Err(_) => true,
    }
}

/// A jailed user's chroot: `<jail.root>/<user>` root's and not writable by others (sshd's
/// rule for ChrootDirectory), with the user's writable `data` folder inside.
pub fn ensure_jail(config: &Config, user: &str, uid: u32, gid: u32) -> Result<PathBuf, String> {
    check_jail_root(&config.jail.root)?;
    let root_fd = open_dir_path(&config.jail.root)?;
    let name = Path::new(user);
    match mkdirat(&root_fd, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(format!("{}: {e}", config.jail.root.join(user).display())),
    }
    let jail = open_dir(&root_fd, name).map_err(|e| format!("{}: {e}", config.jail.root.join(user).display()))?;
    fchown(&jail, Some(Uid::from_raw(0)), Some(Gid::from_raw(0))).map_err(|e| e.to_string())?;
    fchmod(&jail, Mode::from_bits_truncate(0o755)).map_err(|e| e.to_string())?;
    match mkdirat(&jail, Path::new("data"), Mode::from_bits_truncate(0o700)) {
        Ok(()) => {
            let data = open_dir(&jail, Path::new("data")).map_err(|e| e.to_string())?;
            fchown(&data, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|e| e.to_string())?;
            fchmod(&data, Mode::from_bits_truncate(config.users.data_mode)).map_err(|e| e.to_string())?;
        }
        Err(Errno::EEXIST) => {
            let data = open_dir(&jail, Path::new("data")).map_err(|e| format!("jail data folder: {e}"))?;
            if fstat(&data).map_err(|e| e.to_string())?.st_uid != uid {
                return Err(format!("{}/data does not belong to {user}", config.jail.root.join(user).display()));
            }
        }
        Err(e) => return Err(e.to_string()),
    }
    Ok(config.jail.root.join(user))
}
