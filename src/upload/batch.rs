//! The files of a foreground run (`upload`, `run --once`) and when one of
//! them leaves it.

use std::sync::Mutex;

use tracing::warn;

use super::FOREGROUND_ATTEMPTS;

/// The files of a foreground run (`upload`, `run --once`). A file that fails
/// [`FOREGROUND_ATTEMPTS`] times in a row in this run leaves the batch, staying
/// `retrying` in the journal for the next run, so the command always ends.
#[derive(Debug)]
pub struct Batch {
    ids: Mutex<Vec<i64>>,
    failures: Mutex<std::collections::HashMap<i64, u32>>,
}

impl Batch {
    pub fn new(ids: Vec<i64>) -> Batch {
        Batch {
            ids: Mutex::new(ids),
            failures: Mutex::new(Default::default()),
        }
    }

    pub(super) fn ids(&self) -> Vec<i64> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `id` waits for its folder: it stays queued for the next run.
    pub(super) fn leave(&self, id: i64) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|x| *x != id);
    }

    /// Counts a failure of `id` in this run. `journal_attempts` (failures
    /// since the file's last progress, across runs) caps the count, so
    /// progress starts it over: only consecutive failures end a file's run.
    pub(super) fn failed_once(&self, id: i64, journal_attempts: u32) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(id).or_default();
        *n = (*n + 1).min(journal_attempts);
        if *n >= FOREGROUND_ATTEMPTS {
            warn!(
                id,
                attempts = *n,
                "giving up on this file for this run; it stays queued for the next"
            );
            self.ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|x| *x != id);
        }
    }
}
