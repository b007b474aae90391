//! A private PAM service for tests: the module under test and a service file of its own
//! under /etc/pam.d, removed on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use super::common::unique;

pub fn module() -> PathBuf {
    let so = Path::new(env!("CARGO_BIN_EXE_gatehouse")).with_file_name("libpam_gatehouse.so");
    assert!(so.exists(), "{} is missing: run `cargo build --workspace` first (scripts/test does)", so.display());
    so
}

/// A PAM service file under /etc/pam.d, removed on drop.
pub struct PamService {
    pub name: String,
    pub path: PathBuf,
}

impl PamService {
    pub fn new(lines: &str) -> PamService {
        let name = unique("gh-pam-");
        let path = Path::new("/etc/pam.d").join(&name);
        std::fs::write(&path, lines).unwrap();
        PamService { name, path }
    }

    pub fn rewrite(&self, lines: &str) {
        std::fs::write(&self.path, lines).unwrap();
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
