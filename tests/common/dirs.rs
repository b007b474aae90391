//! Private test folders and unique names, shared by every harness (the web package's
//! tests include this file too).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short tag for names of users, groups and folders made by this process.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// A folder removed on drop. As root it lives under /run (root-owned parents, as sshd and
/// our own trust checks demand); otherwise under cargo's target tmp dir.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let base = if is_root() {
            PathBuf::from("/run/gatehouse-tests")
        } else {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gatehouse-tests")
        };
        std::fs::create_dir_all(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = base.join(unique(name));
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        TestDir { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
