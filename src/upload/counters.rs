//! The event counters the upload workers bump, one call per event, and read
//! whole by `/metrics`. Relaxed atomics only: nothing here waits or does I/O.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Outcome;
use crate::apivideo::ErrorClass;

/// Event counters since the process started. Relaxed atomics: each counter
/// is independent and only ever grows.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Bytes of chunks the server acknowledged.
    bytes_acked: AtomicU64,
    chunks_acked: AtomicU64,
    errors_retry: AtomicU64,
    errors_token: AtomicU64,
    errors_tls: AtomicU64,
    errors_permanent: AtomicU64,
    /// Attempts that ended `retrying` (a backoff was persisted).
    retries_scheduled: AtomicU64,
    files_done: AtomicU64,
    files_failed: AtomicU64,
    files_gone: AtomicU64,
}

/// The counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub bytes_acked: u64,
    pub chunks_acked: u64,
    pub errors_retry: u64,
    pub errors_token: u64,
    pub errors_tls: u64,
    pub errors_permanent: u64,
    pub retries_scheduled: u64,
    pub files_done: u64,
    pub files_failed: u64,
    pub files_gone: u64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Metrics {
    /// The server acknowledged a chunk of `bytes` bytes.
    pub fn chunk_acked(&self, bytes: u64) {
        bump(&self.chunks_acked, 1);
        bump(&self.bytes_acked, bytes);
    }

    /// An upload request failed; `class` says what the worker does about it.
    pub fn error(&self, class: ErrorClass) {
        bump(
            match class {
                ErrorClass::Retry => &self.errors_retry,
                ErrorClass::Token => &self.errors_token,
                ErrorClass::Tls => &self.errors_tls,
                ErrorClass::Permanent => &self.errors_permanent,
            },
            1,
        );
    }

    /// A retry was scheduled (the file went `retrying`).
    pub(crate) fn retry_scheduled(&self) {
        bump(&self.retries_scheduled, 1);
    }

    pub(crate) fn file_done(&self) {
        bump(&self.files_done, 1);
    }

    pub(crate) fn file_failed(&self) {
        bump(&self.files_failed, 1);
    }

    pub(crate) fn file_gone(&self) {
        bump(&self.files_gone, 1);
    }

    /// Counts how one attempt at a file ended: done, failed, gone, or a
    /// retry scheduled (paused and released files count nowhere).
    pub fn outcome(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Done { .. } => self.file_done(),
            Outcome::Failed => self.file_failed(),
            Outcome::Gone => self.file_gone(),
            Outcome::Retrying { .. } => self.retry_scheduled(),
            Outcome::Paused | Outcome::Released | Outcome::Waiting => {}
        }
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            bytes_acked: get(&self.bytes_acked),
            chunks_acked: get(&self.chunks_acked),
            errors_retry: get(&self.errors_retry),
            errors_token: get(&self.errors_token),
            errors_tls: get(&self.errors_tls),
            errors_permanent: get(&self.errors_permanent),
            retries_scheduled: get(&self.retries_scheduled),
            files_done: get(&self.files_done),
            files_failed: get(&self.files_failed),
            files_gone: get(&self.files_gone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_move_the_right_counters() {
        let m = Metrics::default();
        m.outcome(&Outcome::Done {
            video_id: "vi1".into(),
        });
        m.outcome(&Outcome::Retrying { attempts: 1 });
        m.outcome(&Outcome::Paused);
        m.outcome(&Outcome::Gone);
        m.chunk_acked(10);
        m.chunk_acked(5);
        m.error(ErrorClass::Token);
        let s = m.snapshot();
        assert_eq!((s.files_done, s.retries_scheduled, s.files_gone), (1, 1, 1));
        assert_eq!((s.files_failed, s.chunks_acked, s.bytes_acked), (0, 2, 15));
        assert_eq!((s.errors_token, s.errors_retry), (1, 0));
    }
}
