//! Bulk and migration imports: `import authorized-keys` and `import tsv`.

use super::{io, Admin, AdminError, KeyOptions};
use crate::store::{KeyImport, NewKey};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;

/// Keys per transaction in a bulk import: large enough that commits do not dominate,
/// small enough that readers and other writers wait at most a few tens of milliseconds.
pub const BATCH: usize = 5_000;

/// Names whose verdict an import keeps, so memory stays bounded on any input.
const MAX_REMEMBERED_NAMES: usize = 100_000;

/// Totals of an import.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    pub imported: u64,
    pub skipped: u64,
}

impl Admin<'_> {
    /// Migrates an existing authorized_keys file: every key line reported imported or
    /// skipped with the reason. Blank and `#` lines are passed over.
    pub fn import_authorized_keys(
        &mut self,
        out: &mut dyn Write,
        user: &str,
        file: &str,
        text: &str,
        options: &KeyOptions,
    ) -> Result<ImportSummary, AdminError> {
        self.store.user(user)?;
        self.check_name("import.authorized-keys", user)?;
        let mut summary = ImportSummary::default();
        for (index, line) in text.split('\n').enumerate() {
            let number = index + 1;
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let result = self.new_key(line, options, "import").and_then(|new| {
                self.store
                    .add_key(&self.actor, user, &new, self.config.keys.max_per_user)
                    .map(|_| new)
                    .map_err(AdminError::from)
            });
            match result {
                Ok(new) => {
                    summary.imported += 1;
                    writeln!(out, "{file}:{number}: imported {} {}", new.key.fingerprint, new.key.algorithm)
                        .map_err(io)?;
                    self.logged(
                        "key.add",
                        &[("user", user), ("fingerprint", &new.key.fingerprint), ("source", "import")],
                    );
                }
                Err(AdminError::Store(
                    e @ (crate::store::StoreError::Unavailable { .. }
                    | crate::store::StoreError::Busy { .. }
                    | crate::store::StoreError::UidsExhausted { .. }
                    | crate::store::StoreError::Corrupt { .. }),
                )) => return Err(AdminError::Store(e)),
                Err(e) => {
                    summary.skipped += 1;
                    writeln!(out, "{file}:{number}: skipped: {e}").map_err(io)?;
                }
            }
        }
        writeln!(out, "imported {}, skipped {}", summary.imported, summary.skipped).map_err(io)?;
        Ok(summary)
    }

    /// Bulk import of `user<TAB>key line` lines, in batched transactions. Refused lines are
    /// reported on `errors` as `FILE:LINE: reason`; a progress line goes to stderr when it
    /// is a terminal.
    pub fn import_tsv(
        &mut self,
        out: &mut dyn Write,
        errors: &mut dyn Write,
        file: &str,
        input: &mut dyn BufRead,
        create_users: bool,
        options: &KeyOptions,
    ) -> Result<ImportSummary, AdminError> {
        let progress = std::io::stderr().is_terminal();
        let started = Instant::now();
        let mut import =
            KeyImport::new(create_users.then_some(self.config.users.default_policy), self.config.keys.max_per_user);
        let mut summary = ImportSummary::default();
        let mut names = HashMap::new();
        let mut batch: Vec<(String, NewKey)> = Vec::with_capacity(BATCH);
        let mut numbers: Vec<u64> = Vec::with_capacity(BATCH);
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            let read = input.read_until(b'\n', &mut line).map_err(|e| AdminError::Refused(format!("{file}: {e}")))?;
            if read > 0 {
                number += 1;
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                match self.tsv_line(&line, options, &mut names) {
                    Ok(Some(item)) => {
                        batch.push(item);
                        numbers.push(number);
                    }
                    Ok(None) => {}
                    Err(reason) => {
                        summary.skipped += 1;
                        writeln!(errors, "{file}:{number}: skipped: {reason}").map_err(io)?;
                    }
                }
            }
            if batch.len() >= BATCH || (read == 0 && !batch.is_empty()) {
                let results = self.store.import_keys(&self.actor, &batch, &mut import)?;
                for (result, n) in results.iter().zip(&numbers) {
                    match result {
                        Ok(()) => summary.imported += 1,
                        Err(e) => {
                            summary.skipped += 1;
                            writeln!(errors, "{file}:{n}: skipped: {e}").map_err(io)?;
                        }
                    }
                }
                batch.clear();
                numbers.clear();
                if progress {
                    let rate = summary.imported as f64 / started.elapsed().as_secs_f64().max(0.001);
                    eprint!("\r{file}: {} imported, {} skipped ({rate:.0} keys/s)", summary.imported, summary.skipped);
                }
            }
            if read == 0 {
                break;
            }
        }
        if progress {
            eprintln!();
        }
        let secs = format!("{:.1}", started.elapsed().as_secs_f64());
        self.logged(
            "import.tsv",
            &[
                ("file", file),
                ("imported", &summary.imported.to_string()),
                ("skipped", &summary.skipped.to_string()),
                ("seconds", &secs),
            ],
        );
        writeln!(out, "imported {}, skipped {} ({secs} s)", summary.imported, summary.skipped).map_err(io)?;
        Ok(summary)
    }

    /// One `USER<TAB>KEY` line; `names` remembers each name's verdict, since checking one
    /// asks the account database.
    fn tsv_line(
        &self,
        line: &[u8],
        options: &KeyOptions,
        names: &mut HashMap<String, Result<(), String>>,
    ) -> Result<Option<(String, NewKey)>, String> {
        let text = std::str::from_utf8(line).map_err(|_| "not valid UTF-8".to_string())?;
        if text.trim().is_empty() || text.trim_start().starts_with('#') {
            return Ok(None);
        }
        let (user, key) = text.split_once('\t').ok_or("expected USER<TAB>KEY")?;
        if !names.contains_key(user) && names.len() < MAX_REMEMBERED_NAMES {
            names.insert(user.to_string(), crate::names::check(self.config, user).map_err(|e| e.to_string()));
        }
        match names.get(user) {
            Some(verdict) => verdict.clone()?,
            None => crate::names::check(self.config, user).map_err(|e| e.to_string())?,
        }
        let new = self.new_key(key, options, "import").map_err(|e| e.to_string())?;
        Ok(Some((user.to_string(), new)))
    }
}
