//! The watch stage: finds new files in the watch folders, journals them as
//! `settling`, and queues each once it has stopped changing.
//!
//! ```text
//!  inotify | poll ──hints──▶ folder task ──add / resettle / ready / gone──▶ journal
//!                               ▲    │                                         │
//!  reconcile scan (start, ──────┘    └── settle clocks          work.notify ──▶ upload workers
//!  overflow, timer)
//! ```
//!
//! Events are hints: the directory plus the journal are the truth. Each
//! folder runs in its own task (a missing folder does not stop the others)
//! which scans the tree against the journal at start, after lost events and
//! on a jittered timer. See [`run`] and [`scan_and_settle`]; what is done
//! with an uploaded file is `after_upload`'s (the catch-up scan calls it).
//!
//! - `filter`: the name rules (built-in ignore list, include, exclude).
//! - `scan`: the tree walk and its diff against the journal.
//! - `settle`: the readiness clocks of settling files; `container`: whether
//!   a settled MP4/MOV or MXF file is a finished container.
//! - `notifier`: inotify or polling, and their limits.
//! - `folder`: one folder's task and steps (reconcile, hints, settle checks,
//!   root checks).
//! - `stage`: the entry points [`run`] and [`scan_and_settle`], and their
//!   [`WatchOptions`]; `follow`: [`run`] again whenever a reload changes the
//!   folder list.
//! - `error`: [`WatchError`]; `report`: [`ScanReport`], [`NotReady`].
//!
//! This file keeps only the helpers other stages call about a folder or a
//! row; it must not grow stage logic of its own.

mod container;
mod error;
mod filter;
mod folder;
mod follow;
mod identify;
mod notifier;
mod report;
mod scan;
mod settle;
mod stage;

pub use crate::after_upload::{sidecar_path, AfterUploadOutcome, SIDECAR_SUFFIX};
pub use crate::config::journal_root;
pub use error::WatchError;
pub(crate) use filter::QueueRules;
pub use follow::follow;
pub use report::{NotReady, ScanReport};
pub use stage::{run, scan_and_settle, WatchOptions};

use crate::config::WatchSettings;
use crate::journal::FileRow;

pub(crate) use crate::display::show_path as show;

/// Applies the folder's `after_upload` to a file whose upload is `done`
/// (see [`crate::after_upload::apply`]), with the watch stage's
/// error.
pub fn after_upload(
    watch: &WatchSettings,
    row: &FileRow,
    video_json: Option<&str>,
    sha256: Option<&str>,
    sidecar: bool,
) -> Result<AfterUploadOutcome, WatchError> {
    crate::after_upload::apply(watch, row, video_json, sha256, sidecar).map_err(WatchError::from)
}

/// Whether the file of a `gone` row is back as it was journaled (same size
/// and mtime at its path, and the same content sample if it had one), for
/// `ingestd retry`. Blocking. The error says what differs.
pub(crate) fn file_is_back(row: &FileRow) -> Result<(), String> {
    let path = row.path();
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", show(&path)))?;
    crate::after_upload::same_file(row, &meta, true)
}

/// Checks that a folder can be watched: its patterns compile and its path
/// is a readable directory (for `check-config` and start-up messages).
pub(crate) fn check_folder(watch: &WatchSettings) -> Result<(), WatchError> {
    filter::Filter::new(&watch.include, &watch.exclude)?;
    folder::check_root(&watch.root()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    #[test]
    fn journal_roots_are_normalised() {
        assert_eq!(
            journal_root(Path::new("/srv/in/")),
            PathBuf::from("/srv/in")
        );
        assert_eq!(
            journal_root(Path::new("/srv/./in/../in2")),
            PathBuf::from("/srv/in2")
        );
        assert!(journal_root(Path::new("rel")).is_absolute());
    }

    #[test]
    fn unavailable_errors_name_the_path() {
        let err = check_folder(&WatchSettings::new("/nonexistent/ingestd-watch")).unwrap_err();
        assert!(matches!(err, WatchError::Missing { .. }));
        assert!(
            err.to_string().contains("/nonexistent/ingestd-watch"),
            "{err}"
        );
    }
}
