//! The files of a foreground run (`upload`, `run --once`) and when one of
//! them leaves it.

use std::sync::Mutex;

use tracing::warn;

use super::FOREGROUND_ATTEMPTS;

/// The files of a foreground run (`upload`, `run --once`). A file that fails
/// [`FOREGROUND_ATTEMPTS`] times in a row in this run leaves the batch, staying
/// `retrying` in the journal for the next run, so the command always ends.
#[derive(Debug)]
///
/// The journal knows the batch ([`crate::journal::Scope::Batch`]): the
/// workers' claims name it, never its ids, so a claim costs the same
/// whatever the batch's size.
#[derive(Default)]
pub struct Batch {
    /// Failures in a row of each file, in this run.
    failures: Mutex<std::collections::HashMap<i64, u32>>,
}

impl Batch {
    /// Counts a failure of `id` in this run. `journal_attempts` (failures
    /// since the file's last progress, across runs) caps the count, so
    /// progress starts it over: only consecutive failures end a file's run.
    /// Returns whether it ends it (the file then leaves the batch).
    pub(super) fn failed_once(&self, id: i64, journal_attempts: u32) -> bool {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(id).or_default();
        *n = (*n + 1).min(journal_attempts);
        if *n >= FOREGROUND_ATTEMPTS {
            warn!(
                id,
                attempts = *n,
                "giving up on this file for this run; it stays queued for the next"
            );
            return true;
        }
        false
    }
}
