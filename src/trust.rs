//! The ownership rules sshd applies to its AuthorizedKeysCommand, applied to the files we
//! trust: a file and every directory above it must belong to root (or to us) and must not
//! be writable by group or others, or someone else could change what we read or run.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Checks `path` and each of its ancestors. `owners` lists the uids allowed to own them
/// (root is always allowed). Returns the first offending path and why.
pub fn check_owned_path(path: &Path, owners: &[u32]) -> Result<(), String> {
    let absolute: PathBuf = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| format!("cannot resolve {}: {e}", path.display()))?.join(path)
    };
    let mut current = Some(absolute.as_path());
    while let Some(p) = current {
        let meta = std::fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.file_type().is_symlink() {
            // Resolve a link once and check the target chain instead; the link itself
            // cannot be changed by anyone who cannot write its directory, checked next.
            let target = std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))?;
            check_owned_path(&target, owners)?;
        } else {
            let uid = meta.uid();
            if uid != 0 && !owners.contains(&uid) {
                return Err(format!("{}: owned by uid {uid}, not by root", p.display()));
            }
            if meta.mode() & 0o022 != 0 {
                return Err(format!(
                    "{}: mode {:04o} is writable by group or others",
                    p.display(),
                    meta.mode() & 0o7777
                ));
            }
        }
        current = p.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn refuses_group_writable_file() {
        let dir = std::env::temp_dir().join(format!("gh-trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
        let err = check_owned_path(&file, &[nix::unistd::geteuid().as_raw()]).unwrap_err();
        // The temp dir itself may already be the offender (/tmp is world-writable).
        assert!(err.contains("writable by group or others"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
