//! What scans found, summed over folders: the report `run` hands to its
//! `ready` channel and `scan_and_settle` returns.
//!
//! A plain tally: it must not import the folder steps that fill it in.

use std::path::PathBuf;
use std::time::Duration;

use super::WatchError;

/// What scans found (summed over folders).
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Folders scanned.
    pub folders: usize,
    /// Wanted files found on disk.
    pub files: usize,
    /// Files journaled for the first time (as settling).
    pub journaled: usize,
    /// Files found whose identity is already `done`: never uploaded again.
    pub already_done: usize,
    /// Unfinished files marked gone (vanished, or changed before upload).
    pub gone: usize,
    /// After-upload actions applied to done files found still in place.
    pub after_upload: usize,
    /// Files queued for upload ([`scan_and_settle`](super::scan_and_settle)).
    pub queued: usize,
    /// Directories that could not be listed (their files are left as they are).
    pub unreadable: usize,
    /// Folders that could not be scanned, each with why (names the path).
    pub unavailable: Vec<WatchError>,
    /// Files that failed before they could be queued ([`scan_and_settle`](super::scan_and_settle)).
    pub failed: Vec<i64>,
    /// Files a foreground run found not ready at their one check: still
    /// being written, or unfinished containers ([`scan_and_settle`](super::scan_and_settle)).
    pub not_ready: Vec<NotReady>,
    pub elapsed: Duration,
}

/// A file not ready at its check, and why (`still being written`,
/// `incomplete: …`).
#[derive(Debug, Clone)]
pub struct NotReady {
    pub id: i64,
    pub path: PathBuf,
    pub why: String,
}

impl ScanReport {
    pub(super) fn add(&mut self, other: ScanReport) {
        self.folders += other.folders;
        self.files += other.files;
        self.journaled += other.journaled;
        self.already_done += other.already_done;
        self.gone += other.gone;
        self.after_upload += other.after_upload;
        self.queued += other.queued;
        self.unreadable += other.unreadable;
        self.unavailable.extend(other.unavailable);
        self.failed.extend(other.failed);
        self.not_ready.extend(other.not_ready);
        self.elapsed = self.elapsed.max(other.elapsed);
    }
}
